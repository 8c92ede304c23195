// KurrentDB's v2 append protocol against `annal serve`, through the official
// @kurrent/kurrentdb-client unchanged: multiStreamAppend (StreamsService/AppendSession)
// and appendRecords (StreamsService/AppendRecords), their errors as the client decodes
// them from grpc-status-details-bin, and the results read back through the v1 Read.
// Insecure, also raw calls on grpc-js stubs made from annal's own v2streams.proto: what the
// client cannot send (property values other than strings, no record id, bad requests).
// Usage: node v2.js PROTO_DIR PORT                 (insecure server)
//        node v2.js PROTO_DIR PORT secure CA_FILE  (TLS; admin/changeit, ops/ops-Secret-9)
// Prints "ok - NAME" per check; exits non-zero at the first failure.
"use strict";
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");
const lib = require("@kurrent/kurrentdb-client");

const [protoDir, port, mode, caFile] = process.argv.slice(2);
const secure = mode === "secure";
const tls = secure ? `tls=true&tlsCAFile=${encodeURIComponent(caFile)}` : "tls=false";
const connect = (who) =>
  lib.KurrentDBClient.connectionString(`kurrentdb://${who ? who + "@" : ""}127.0.0.1:${port}?${tls}`);
const client = connect(secure ? "admin:changeit" : "");
const run = crypto.randomUUID().slice(0, 8);
const name = (s) => `v2${s}-${run}`;
const MAX = 16 << 20; // annal serve's max_append_bytes (its default)

// The events of a read, opened by open(). Reads go through the client's Rust bridge, which
// on a loaded machine now and then fails one with UnavailableError whatever the server (seen
// against main's server too, with no v2 call anywhere): a read is retried, as the clients
// advise for unavailable; appends never are.
async function collect(open) {
  for (let attempt = 1; ; attempt++) {
    try {
      const out = [];
      for await (const e of open()) out.push(e.event);
      return out;
    } catch (err) {
      if (err.type !== "unavailable" || attempt === 3) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function rejects(promise, type) {
  try {
    await promise;
  } catch (err) {
    assert.equal(err.type, type, `expected ${type}, got ${err.type}: ${err.message}`);
    return err;
  }
  assert.fail(`expected ${type}, got success`);
}

async function revisions(stream) {
  try {
    return (await collect(() => client.readStream(stream))).map((e) => e.revision);
  } catch (err) {
    if (err.type === "stream-not-found") return [];
    throw err;
  }
}

const ev = (type, data, metadata, id) => lib.jsonEvent({ id, type, data, metadata });
const checks = [];
const check = (n, fn) => checks.push([n, fn]);

check("multiStreamAppend: three streams, each with its expected revision, one commit", async () => {
  const a = name("acct-a"), b = name("acct-b"), c = name("audit");
  await client.appendToStream(a, [ev("Opened", { balance: 100 })]);
  await client.appendToStream(b, [ev("Opened", { balance: 0 }), ev("Frozen", {})]);
  const r = await client.multiStreamAppend([
    { streamName: a, expectedState: 0n, events: [ev("Debited", { amount: 30 }, { by: "teller", note: "" })] },
    { streamName: b, expectedState: lib.STREAM_EXISTS, events: [ev("Credited", { amount: 30 }, { by: "teller" })] },
    { streamName: c, expectedState: lib.NO_STREAM, events: [ev("Moved", { n: 1 }), ev("Moved", { n: 2 })] },
  ]);
  assert.deepEqual(
    r.responses.map((x) => [x.streamName, x.revision]),
    [[a, 1n], [b, 2n], [c, 1n]]
  );
  // The set is one batch: consecutive positions in the request's order, the last reported.
  const got = [...(await collect(() => client.readStream(a))).slice(1), ...(await collect(() => client.readStream(b))).slice(2),
    ...(await collect(() => client.readStream(c)))];
  const pos = got.map((e) => e.position.commit);
  for (let i = 1; i < pos.length; i++) assert.equal(pos[i], pos[i - 1] + 1n, `positions ${pos}`);
  assert.equal(r.position, pos[pos.length - 1]);
  // Read back through v1: type, data, and the properties with the schema as metadata.
  assert.equal(got[0].type, "Debited");
  assert.deepEqual(got[0].data, { amount: 30 });
  assert.equal(got[0].isJson, true);
  assert.deepEqual(got[0].metadata, { by: "teller", note: "", "$schema.name": "Debited", "$schema.format": "Json" });
  assert.deepEqual(got[2].metadata, { "$schema.name": "Moved", "$schema.format": "Json" });
  assert.deepEqual(got.slice(2).map((e) => e.data), [{ n: 1 }, { n: 2 }]);
});

check("multiStreamAppend: a binary record keeps its bytes and says Bytes", async () => {
  const s = name("bin");
  const bytes = Buffer.from([0, 1, 2, 250, 255]);
  const id = crypto.randomUUID();
  await client.multiStreamAppend([
    { streamName: s, expectedState: lib.ANY, events: [lib.binaryEvent({ id, type: "Blob", data: bytes, metadata: { k: "v" } })] },
  ]);
  const [e] = await collect(() => client.readStream(s));
  assert.equal(e.id, id);
  assert.equal(e.type, "Blob");
  assert.deepEqual(Buffer.from(e.data), bytes);
  assert.deepEqual(e.metadata, { k: "v", "$schema.name": "Blob", "$schema.format": "Bytes" });
});

check("multiStreamAppend: a conflict on one stream of ten writes nothing and names it", async () => {
  const streams = Array.from({ length: 10 }, (_, i) => name(`ten${i}`));
  for (const s of streams) await client.appendToStream(s, [ev("Seeded", {})]);
  await client.appendToStream(streams[6], [ev("Moved", {})]); // now at revision 1
  const err = await rejects(
    client.multiStreamAppend(streams.map((s) => ({ streamName: s, expectedState: 0n, events: [ev("Next", {})] }))),
    "wrong-expected-version"
  );
  assert.equal(err.streamName, streams[6]);
  assert.equal(err.expectedState, 0n);
  assert.equal(err.actualState, 1n);
  for (const [i, s] of streams.entries()) assert.deepEqual(await revisions(s), i === 6 ? [0n, 1n] : [0n], s);
  // no_stream against an existing stream: its actual revision; against none it is no_stream.
  const e2 = await rejects(
    client.multiStreamAppend([
      { streamName: name("fresh"), expectedState: lib.NO_STREAM, events: [ev("X", {})] },
      { streamName: streams[0], expectedState: lib.NO_STREAM, events: [ev("X", {})] },
    ]),
    "wrong-expected-version"
  );
  assert.equal(e2.streamName, streams[0]);
  assert.equal(e2.actualState, 0n);
  assert.equal(e2.expectedState, "no_stream");
  const e3 = await rejects(
    client.multiStreamAppend([{ streamName: name("none"), expectedState: 4n, events: [ev("X", {})] }]),
    "wrong-expected-version"
  );
  assert.equal(e3.actualState, "no_stream");
  assert.deepEqual(await revisions(name("fresh")), []);
});

check("multiStreamAppend: a resend with the same ids returns the first result", async () => {
  const a = name("re-a"), b = name("re-b");
  const req = () => [
    { streamName: a, expectedState: lib.NO_STREAM, events: [ev("A1", {}, undefined, ids[0]), ev("A2", {}, undefined, ids[1])] },
    { streamName: b, expectedState: lib.NO_STREAM, events: [ev("B1", {}, undefined, ids[2])] },
  ];
  const ids = [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()];
  const first = await client.multiStreamAppend(req());
  await client.appendToStream(name("other"), [ev("Between", {})]); // the resend is not the last append
  const again = await client.multiStreamAppend(req());
  assert.deepEqual(again, first);
  assert.deepEqual(await revisions(a), [0n, 1n]);
  assert.deepEqual(await revisions(b), [0n]);
  // The same ids in another set are refused, not appended twice.
  await assert.rejects(
    client.multiStreamAppend([{ streamName: name("re-c"), expectedState: lib.ANY, events: [ev("C", {}, undefined, ids[2])] }])
  );
  assert.deepEqual(await revisions(name("re-c")), []);
});

check("multiStreamAppend: a tombstoned stream fails the set as stream-tombstoned", async () => {
  const dead = name("dead"), live = name("live");
  await client.appendToStream(dead, [ev("Born", {})]);
  await client.tombstoneStream(dead);
  const err = await rejects(
    client.multiStreamAppend([
      { streamName: live, expectedState: lib.ANY, events: [ev("X", {})] },
      { streamName: dead, expectedState: lib.ANY, events: [ev("X", {})] },
    ]),
    "stream-tombstoned"
  );
  assert.equal(err.stream, dead);
  assert.deepEqual(await revisions(live), []);
});

check("multiStreamAppend: a record over the size limit, and a set over it", async () => {
  const s = name("big"), t = name("big2");
  const id = crypto.randomUUID();
  const err = await rejects(
    client.multiStreamAppend([
      { streamName: t, expectedState: lib.ANY, events: [ev("Small", {})] },
      { streamName: s, expectedState: lib.ANY, events: [lib.binaryEvent({ id, type: "Big", data: Buffer.alloc(MAX + 1) })] },
    ]),
    "append-record-size-exceeded"
  );
  assert.equal(err.stream, s);
  assert.equal(err.recordId, id);
  assert.equal(err.maxSize, MAX);
  assert.ok(err.size > MAX, `size ${err.size}`);
  const half = () => lib.binaryEvent({ type: "Half", data: Buffer.alloc(MAX / 2 + 16) });
  await rejects(
    client.multiStreamAppend([
      { streamName: s, expectedState: lib.ANY, events: [half()] },
      { streamName: t, expectedState: lib.ANY, events: [half()] },
    ]),
    "transaction-max-size-exceeded"
  );
  assert.deepEqual(await revisions(s), []);
  assert.deepEqual(await revisions(t), []);
});

check("appendRecords: interleaved records keep their order; one revision per stream", async () => {
  const a = name("ia"), b = name("ib");
  const rec = (streamName, n) => ({ streamName, record: ev("Step", { n }, { who: `w${n}` }) });
  const r = await client.appendRecords([rec(a, 1), rec(b, 2), rec(a, 3), rec(b, 4), rec(a, 5)]);
  const revs = Object.fromEntries(r.responses.map((x) => [x.streamName, x.revision]));
  assert.deepEqual(revs, { [a]: 2n, [b]: 1n });
  assert.equal(r.responses.length, 2);
  const ea = await collect(() => client.readStream(a)), eb = await collect(() => client.readStream(b));
  assert.deepEqual(ea.map((e) => e.data.n), [1, 3, 5]);
  assert.deepEqual(eb.map((e) => e.data.n), [2, 4]);
  assert.deepEqual(ea[1].metadata, { who: "w3", "$schema.name": "Step", "$schema.format": "Json" });
  // In $all: the request's order in consecutive positions.
  const first = ea[0].position.commit;
  const all = [];
  all.push(...(await collect(() => client.readAll({ fromPosition: { commit: first, prepare: first }, maxCount: 5 }))));
  assert.deepEqual(all.map((e) => e.data.n), [1, 2, 3, 4, 5]);
  assert.equal(r.position, all[4].position.commit);
});

check("appendRecords: consistency checks on streams written and not written", async () => {
  const w = name("cw"), k1 = name("ck1"), k2 = name("ck2");
  await client.appendToStream(k1, [ev("S", {}), ev("S", {}), ev("S", {})]);
  const ok = await client.appendRecords(
    [{ streamName: w, record: ev("W", {}) }],
    [
      { type: lib.STREAM_STATE, streamName: k1, expectedState: 2n },
      { type: lib.STREAM_STATE, streamName: k2, expectedState: lib.NO_STREAM },
      { type: lib.STREAM_STATE, streamName: w, expectedState: lib.NO_STREAM },
    ]
  );
  assert.deepEqual(ok.responses.map((x) => x.streamName), [w]);
  const err = await rejects(
    client.appendRecords(
      [{ streamName: w, record: ev("W", {}) }],
      [
        { type: lib.STREAM_STATE, streamName: k1, expectedState: 2n },
        { type: lib.STREAM_STATE, streamName: k2, expectedState: lib.STREAM_EXISTS },
        { type: lib.STREAM_STATE, streamName: k1, expectedState: 7n },
      ]
    ),
    "append-consistency-violation"
  );
  assert.deepEqual(
    err.violations.map((v) => [v.checkIndex, v.streamName, v.expectedState, v.actualState]),
    [[1, k2, "stream_exists", "no_stream"], [2, k1, 7n, 2n]]
  );
  assert.deepEqual(await revisions(w), [0n]);
  // A soft-deleted stream: -10 against stream_exists, its last revision against one (as
  // KurrentDB reports them); no_stream holds.
  const soft = name("soft");
  await client.appendToStream(soft, [ev("S", {}), ev("S", {}), ev("S", {})]);
  await client.deleteStream(soft);
  const e1 = await rejects(
    client.appendRecords(
      [{ streamName: w, record: ev("W", {}) }],
      [
        { type: lib.STREAM_STATE, streamName: soft, expectedState: lib.STREAM_EXISTS },
        { type: lib.STREAM_STATE, streamName: soft, expectedState: 5n },
        { type: lib.STREAM_STATE, streamName: soft, expectedState: lib.NO_STREAM },
      ]
    ),
    "append-consistency-violation"
  );
  assert.deepEqual(e1.violations.map((v) => [v.checkIndex, v.actualState]), [[0, -10n], [1, 2n]]);
  // Writing to a tombstoned stream is a violation too (KurrentDB's actual state -100).
  await client.tombstoneStream(k1);
  // Reported once per stream, however many runs of records it has, with index -1 (it is
  // none of the request's checks).
  const e2 = await rejects(
    client.appendRecords([
      { streamName: k1, record: ev("W", {}) },
      { streamName: w, record: ev("W", {}) },
      { streamName: k1, record: ev("W", {}) },
    ]),
    "append-consistency-violation"
  );
  assert.deepEqual(e2.violations.map((v) => [v.checkIndex, v.streamName, v.actualState]), [[-1, k1, -100n]]);
  assert.deepEqual(await revisions(w), [0n]);
});

check("appendRecords: a resend returns the first result; a big record is refused", async () => {
  const s = name("rr");
  const records = [{ streamName: s, record: ev("R", { a: 1 }) }, { streamName: s, record: ev("R", { a: 2 }) }];
  const first = await client.appendRecords(records);
  const again = await client.appendRecords(records);
  assert.deepEqual(again, first);
  assert.deepEqual(await revisions(s), [0n, 1n]);
  const err = await rejects(
    client.appendRecords([{ streamName: s, record: lib.binaryEvent({ type: "Big", data: Buffer.alloc(MAX + 1) }) }]),
    "append-record-size-exceeded"
  );
  assert.equal(err.stream, s);
});

if (!secure) {
  const def = loader.loadSync(["v2streams.proto"], {
    includeDirs: [protoDir], keepCase: true, enums: String, longs: String, defaults: true, oneofs: true,
  });
  const v2 = grpc.loadPackageDefinition(def).kurrentdb.protocol.v2.streams;
  const raw = new v2.StreamsService(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const records = (req) => new Promise((res) => raw.AppendRecords(req, (err, r) => res([err, r])));
  const session = (reqs) =>
    new Promise((res) => {
      const call = raw.AppendSession((err, r) => res([err, r]));
      for (const q of reqs) call.write(q);
      call.end();
    });
  const schema = (name) => ({ name, format: "SCHEMA_FORMAT_JSON" });
  const rec = (stream, extra = {}) => ({ stream, schema: schema("T"), data: Buffer.from("{}"), ...extra });

  check("raw: property values of every kind become JSON; no record id: the server makes one", async () => {
    const s = name("raw");
    // (google.protobuf.Value: proto-loader uses protobufjs's own copy, with camelCase names)
  const str = (x) => ({ stringValue: x });
    const properties = {
      n: { numberValue: 42 }, f: { numberValue: 1.5 }, b: { boolValue: true }, z: { nullValue: "NULL_VALUE" },
      t: str("text"),
      o: { structValue: { fields: { x: { listValue: { values: [{ numberValue: 1 }, str("a")] } } } } },
    };
    const [err, r] = await records({
      records: [rec(s, { properties, schema: { name: "T", format: "SCHEMA_FORMAT_PROTOBUF", id: "v7" } })],
    });
    assert.equal(err, null, err && err.message);
    assert.deepEqual(r.revisions.map((x) => [x.stream, x.revision]), [[s, "0"]]);
    const [e] = await collect(() => client.readStream(s));
    assert.deepEqual(e.metadata, {
      n: 42, f: 1.5, b: true, z: null, t: "text", o: { x: [1, "a"] },
      "$schema.name": "T", "$schema.format": "Protobuf", "$schema.id": "v7",
    });
    assert.match(e.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-/); // a UUIDv7 of annal's
    assert.equal(String(e.position.commit), r.position);
  });

  check("raw: one stream twice in a session: the second request expects what the first left", async () => {
    const s = name("twice");
    const [err, r] = await session([
      { stream: s, records: [rec(s)], expected_revision: "-1" },
      { stream: s, records: [rec(s), rec(s)], expected_revision: "0" },
      { stream: name("untouched"), records: [] }, // no records: only a check (any)
    ]);
    assert.equal(err, null, err && err.message);
    assert.deepEqual(r.output.map((o) => [o.stream_revision, o.position]), [["0", r.position - 2 + ""], ["2", r.position], ["-1", undefined]]);
    assert.deepEqual(await revisions(s), [0n, 1n, 2n]);
  });

  check("raw: bad requests are INVALID_ARGUMENT (or FAILED_PRECONDITION), nothing written", async () => {
    const s = name("bad");
    let deep = { stringValue: "x" };
    for (let i = 0; i < 40; i++) deep = { listValue: { values: [deep] } };
    const bad = [
      ["no records", { records: [] }],
      ["no stream", { records: [rec("")] }],
      ["a $ stream", { records: [rec("$x")] }],
      ["no schema name", { records: [rec(s, { schema: schema("") })] }],
      ["a record id that is no UUID", { records: [rec(s, { record_id: "nope" })] }],
      ["a value nested 40 deep", { records: [rec(s, { properties: { d: deep } })] }],
      ["a check's expected state -3", { records: [rec(s)], checks: [{ stream_state: { stream: s, expected_state: "-3" } }] }],
      ["a check without its stream state", { records: [rec(s)], checks: [{}] }],
    ];
    for (const [what, req] of bad) {
      const [err] = await records(req);
      assert.ok(err, `${what}: accepted`);
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT, `${what}: ${err.message}`);
    }
    const [e1] = await session([{ stream: s, records: [rec(s)], expected_revision: "-3" }]);
    assert.equal(e1.code, grpc.status.INVALID_ARGUMENT, e1.message);
    const [e2] = await session([]);
    assert.equal(e2.code, grpc.status.FAILED_PRECONDITION, e2.message);
    // What a session keeps is bounded by its bytes, not only its records' (here: names).
    const huge = "n".repeat(12 << 20);
    const [e3] = await session([1, 2, 3].map(() => ({ stream: huge, records: [] })));
    assert.equal(e3.code, grpc.status.ABORTED, e3.message);
    assert.deepEqual(await revisions(s), []);
  });
}

if (secure) {
  const ops = connect("ops:ops-Secret-9");
  const anon = connect("");
  check("secure: admin appends; ops is refused where the ACL says $admins only; anonymous too", async () => {
    const locked = name("locked"), open = name("open");
    await client.setStreamMetadata(locked, { acl: { readRoles: ["$admins"], writeRoles: ["$admins"] } });
    const r = await client.multiStreamAppend([
      { streamName: locked, expectedState: lib.ANY, events: [ev("A", {})] },
      { streamName: open, expectedState: lib.ANY, events: [ev("A", {})] },
    ]);
    assert.equal(r.responses.length, 2);
    await rejects(
      ops.multiStreamAppend([
        { streamName: open, expectedState: lib.ANY, events: [ev("B", {})] },
        { streamName: locked, expectedState: lib.ANY, events: [ev("B", {})] },
      ]),
      "access-denied"
    );
    await rejects(ops.appendRecords([{ streamName: open, record: ev("B", {}) }, { streamName: locked, record: ev("B", {}) }]), "access-denied");
    // A check tells a stream's state: it needs the right to read it.
    await rejects(
      ops.appendRecords([{ streamName: open, record: ev("B", {}) }], [{ type: lib.STREAM_STATE, streamName: locked, expectedState: lib.ANY }]),
      "access-denied"
    );
    await rejects(anon.multiStreamAppend([{ streamName: open, expectedState: lib.ANY, events: [ev("C", {})] }]), "access-denied");
    assert.deepEqual(await revisions(open), [0n]);
    const r2 = await ops.appendRecords([{ streamName: open, record: ev("D", {}) }]);
    assert.deepEqual(r2.responses.map((x) => x.revision), [1n]);
  });
}

(async () => {
  for (const [n, fn] of checks) {
    try {
      await fn();
      console.log(`ok - ${n}`);
    } catch (err) {
      console.error(`not ok - ${n}\n${err.stack || err}`);
      process.exit(1);
    }
  }
  process.exit(0);
})();
