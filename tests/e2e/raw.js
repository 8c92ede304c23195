// RPCs and errors the Node.js clients hide, called with grpc-js on stubs generated at run
// time from annal's own .proto files (src/server/proto).
// Usage: node raw.js PROTO_DIR PORT. Prints "ok - NAME" per check.
"use strict";
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const [protoDir, port] = process.argv.slice(2);
const def = loader.loadSync(["streams.proto", "serverfeatures.proto", "gossip.proto",
  "operations.proto", "monitoring.proto"], {
  includeDirs: [protoDir],
  keepCase: true,
  enums: String,
  longs: String,
  defaults: true,
  oneofs: true,
});
const pkg = grpc.loadPackageDefinition(def).event_store.client;
const addr = `127.0.0.1:${port}`;
const creds = grpc.credentials.createInsecure();
const opts = { "grpc.max_send_message_length": 20 << 20 };
const features = new pkg.server_features.ServerFeatures(addr, creds);
const gossip = new pkg.gossip.Gossip(addr, creds);
const streams = new pkg.streams.Streams(addr, creds, opts);
const operations = new pkg.operations.Operations(addr, creds);
const monitoring = new pkg.monitoring.Monitoring(addr, creds);
const unary = (c, m, req) =>
  new Promise((res, rej) => c[m](req, (err, r) => (err ? rej(err) : res(r))));
const sid = (s) => ({ stream_name: Buffer.from(s) });

// A client-streaming Append of the given requests; resolves with [error, response].
function append(reqs) {
  return new Promise((resolve) => {
    const call = streams.Append((err, resp) => resolve([err, resp]));
    for (const r of reqs) call.write(r);
    call.end();
  });
}
const event = (type, bytes) => ({
  proposed_message: {
    id: { string: crypto.randomUUID() },
    metadata: { type, "content-type": "application/octet-stream" },
    data: Buffer.alloc(bytes, 7),
  },
});

const checks = [];
const check = (n, fn) => checks.push([n, fn]);

check("GetSupportedMethods lists exactly what is served", async () => {
  const r = await unary(features, "GetSupportedMethods", {});
  assert.match(r.event_store_server_version, /^\d+\.\d+\.\d+/);
  const got = r.methods.map((m) => `${m.service_name}/${m.method_name}`).sort();
  assert.deepEqual(got, [
    // annal's own DCB service (issue 24, dcb.proto)
    "annal.dcb.v1.dcb/append",
    "annal.dcb.v1.dcb/read",
    "annal.dcb.v1.dcb/subscribe",
    "event_store.client.gossip.gossip/read",
    "event_store.client.monitoring.monitoring/stats",
    "event_store.client.operations.operations/shutdown",
    "event_store.client.operations.operations/startscavenge",
    "event_store.client.operations.operations/stopscavenge",
    "event_store.client.projections.projections/disable",
    "event_store.client.projections.projections/enable",
    "event_store.client.projections.projections/state",
    "event_store.client.projections.projections/statistics",
    "event_store.client.server_features.serverfeatures/getsupportedmethods",
    "event_store.client.streams.streams/append",
    "event_store.client.streams.streams/batchappend",
    "event_store.client.streams.streams/delete",
    "event_store.client.streams.streams/read",
    "event_store.client.streams.streams/tombstone",
    // security (issue 17): the Users service
    "event_store.client.users.users/changepassword",
    "event_store.client.users.users/create",
    "event_store.client.users.users/delete",
    "event_store.client.users.users/details",
    "event_store.client.users.users/disable",
    "event_store.client.users.users/enable",
    "event_store.client.users.users/resetpassword",
    "event_store.client.users.users/update",
    // issue 19: KurrentDB's v2 appends (v2.c)
    "kurrentdb.protocol.v2.streams.streamsservice/appendrecords",
    "kurrentdb.protocol.v2.streams.streamsservice/appendsession",
  ]);
});

check("Gossip.Read: one alive leader at the listen address", async () => {
  const r = await unary(gossip, "Read", {});
  assert.equal(r.members.length, 1);
  const m = r.members[0];
  assert.equal(m.is_alive, true);
  assert.equal(m.state, "Leader");
  assert.equal(m.http_end_point.address, "127.0.0.1");
  assert.equal(m.http_end_point.port, Number(port));
});

check("an unimplemented method is UNIMPLEMENTED", async () => {
  const generic = new grpc.Client(addr, creds);
  const err = await new Promise((resolve) =>
    generic.makeUnaryRequest("/event_store.client.users.Users/Details", (x) => x, (x) => x,
      Buffer.alloc(0), (e) => resolve(e)));
  assert.equal(err.code, grpc.status.UNIMPLEMENTED);
});

check("Read answers only after the client's half-close (a status sent earlier makes gRPC core reset the stream, which the Rust-based client reports as UnavailableError)", async () => {
  const m = pkg.streams.Streams.service.Read;
  const generic = new grpc.Client(addr, creds);
  const call = generic.makeBidiStreamRequest(m.path, m.requestSerialize, m.responseDeserialize);
  const seen = [];
  call.on("data", (r) => seen.push(r.content || Object.keys(r).find((k) => r[k] != null)));
  const done = new Promise((resolve, reject) => {
    call.on("status", (st) => resolve(st));
    call.on("error", reject);
  });
  call.write({ options: { stream: { stream_identifier: sid(`halfclose-${crypto.randomUUID()}`),
    start: {} }, read_direction: "Forwards", count: "10", no_filter: {}, uuid_option: { string: {} } } });
  await new Promise((r) => setTimeout(r, 400));
  assert.deepEqual(seen, [], "the server answered before the request side closed");
  call.end();
  const st = await done;
  assert.equal(st.code, grpc.status.OK);
  assert.deepEqual(seen, ["stream_not_found"]);
  generic.close();
});

check("a second request on Read is INVALID_ARGUMENT, not answered as the first", async () => {
  const m = pkg.streams.Streams.service.Read;
  const generic = new grpc.Client(addr, creds);
  const call = generic.makeBidiStreamRequest(m.path, m.requestSerialize, m.responseDeserialize);
  const seen = [];
  call.on("data", (r) => seen.push(r));
  const st = await new Promise((resolve) => {
    call.on("status", resolve);
    call.on("error", () => {});
    const req = { options: { stream: { stream_identifier: sid(`twice-${crypto.randomUUID()}`),
      start: {} }, read_direction: "Forwards", count: "10", no_filter: {}, uuid_option: { string: {} } } };
    call.write(req);
    call.write(req);
    call.end();
  });
  assert.equal(st.code, grpc.status.INVALID_ARGUMENT);
  assert.deepEqual(seen, []);
  generic.close();
});

check("Append without options first is INVALID_ARGUMENT", async () => {
  const [err] = await append([event("T", 1)]);
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
});

check("Append with the options twice is INVALID_ARGUMENT (and the server lives)", async () => {
  const o = { options: { stream_identifier: sid(`twice-${crypto.randomUUID()}`), any: {} } };
  const [err] = await append([o, o]);
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  const r = await unary(features, "GetSupportedMethods", {});
  assert.ok(r.methods.length > 0);
});

check("an append over 16 MiB: maximum-append-size-exceeded", async () => {
  const s = `big-${crypto.randomUUID()}`;
  const [err] = await append([{ options: { stream_identifier: sid(s), any: {} } },
    event("T", 9 << 20), event("T", 9 << 20)]);
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  assert.equal(err.metadata.get("exception")[0], "maximum-append-size-exceeded");
  assert.equal(err.metadata.get("maximum-append-size")[0], String(16 << 20));
  const [err2, ok] = await append([{ options: { stream_identifier: sid(s), no_stream: {} } },
    event("T", 15 << 20)]);
  assert.equal(err2, null);
  assert.equal(ok.success.current_revision, "0");
});

check("Delete with a wrong expected revision: the trailers", async () => {
  const s = `del-${crypto.randomUUID()}`;
  await append([{ options: { stream_identifier: sid(s), any: {} } }, event("T", 1)]);
  const err = await unary(streams, "Delete", { options: { stream_identifier: sid(s), revision: "7" } })
    .then(() => null, (e) => e);
  assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
  assert.equal(err.metadata.get("exception")[0], "wrong-expected-version");
  assert.equal(err.metadata.get("stream-name")[0], s);
  assert.equal(err.metadata.get("expected-version")[0], "7");
  assert.equal(err.metadata.get("actual-version")[0], "0");
});

check("a filtered $all read counts the events it returns", async () => {
  const p = `flt${crypto.randomUUID().slice(0, 8)}`;
  for (const s of [`${p}-a`, `x${p}`, `${p}-b`, `${p}-c`])
    await append([{ options: { stream_identifier: sid(s), any: {} } }, event("T", 1)]);
  const got = await new Promise((resolve, reject) => {
    const out = [];
    const call = streams.Read({
      options: {
        all: { start: {} },
        read_direction: "Forwards",
        count: "2",
        filter: { stream_identifier: { prefix: [p] }, count: {}, checkpointIntervalMultiplier: 1 },
        uuid_option: { string: {} },
      },
    });
    call.on("data", (r) => out.push(r.event.event.stream_identifier.stream_name.toString()));
    call.on("end", () => resolve(out));
    call.on("error", reject);
  });
  assert.deepEqual(got, [`${p}-a`, `${p}-b`]);
});

// ---- BatchAppend: one bidirectional call, appends multiplexed by correlation id.
const protobuf = require("protobufjs");
const root = new protobuf.Root();
root.resolvePath = (_origin, target) => require("node:path").join(protoDir, target);
root.loadSync(["shared.proto"], { keepCase: true });
const detailType = (name) => root.lookupType(name);

// Opens a BatchAppend call; returns {send, responses(n), end()}.
function batchCall() {
  const call = streams.BatchAppend();
  const got = [];
  const waiters = [];
  let status = null;
  const wake = () => waiters.splice(0).forEach((w) => w());
  call.on("data", (r) => { got.push(r); wake(); });
  call.on("error", (e) => { status = e; wake(); });
  call.on("status", (s) => { status = status || s; wake(); });
  call.on("end", wake);
  return {
    send: (r) => call.write(r),
    async take(n, ms = 10000) {
      const until = Date.now() + ms;
      while (got.length < n && !status && Date.now() < until)
        await new Promise((r) => { waiters.push(r); setTimeout(r, 200); });
      assert.ok(got.length >= n, `${got.length} of ${n} responses (${status && status.details})`);
      return got.splice(0, n);
    },
    async end() {
      call.end();
      const until = Date.now() + 10000;
      while (!status && Date.now() < until) await new Promise((r) => { waiters.push(r); setTimeout(r, 200); });
      return status;
    },
    cancel: () => call.cancel(),
  };
}
const corr = () => ({ string: crypto.randomUUID() });
const proposed = (type, bytes) => ({
  id: { string: crypto.randomUUID() },
  metadata: { type, "content-type": "application/octet-stream" },
  data: Buffer.alloc(bytes, 3),
});
const future = () => ({ seconds: String(Math.floor(Date.now() / 1000) + 60), nanos: 0 });
async function readStream(s) {
  return new Promise((resolve, reject) => {
    let out = [];
    const call = streams.Read({ options: { stream: { stream_identifier: sid(s), start: {} },
      read_direction: "Forwards", count: "1000", no_filter: {}, uuid_option: { string: {} } } });
    call.on("data", (r) => {
      if (r.event) out.push(r.event.event);
      if (r.stream_not_found) out = null;
    });
    call.on("end", () => resolve(out));
    call.on("error", reject);
  });
}
const unpackDetail = (err) => {
  const name = err.details.type_url.split("/").pop();
  return [name, detailType(name).decode(err.details.value)];
};

check("BatchAppend: two batches interleaved on one call, each in two requests", async () => {
  const b = batchCall();
  const [s1, s2] = [`ba1-${crypto.randomUUID()}`, `ba2-${crypto.randomUUID()}`];
  const [c1, c2] = [corr(), corr()];
  b.send({ correlation_id: c1, options: { stream_identifier: sid(s1), no_stream: {}, deadline_21_10_0: future() },
    proposed_messages: [proposed("A", 10)], is_final: false });
  b.send({ correlation_id: c2, options: { stream_identifier: sid(s2), any: {} },
    proposed_messages: [proposed("B", 10), proposed("B", 10)], is_final: false });
  b.send({ correlation_id: c1, proposed_messages: [proposed("A", 10), proposed("A", 10)], is_final: true });
  b.send({ correlation_id: c2, proposed_messages: [proposed("B", 10)], is_final: true });
  const rs = await b.take(2);
  const by = Object.fromEntries(rs.map((r) => [r.correlation_id.string, r]));
  assert.equal(by[c1.string].success.current_revision, "2");
  assert.equal(by[c1.string].stream_identifier.stream_name.toString(), s1);
  assert.ok(by[c1.string].no_stream, "the expected position is echoed");
  assert.equal(by[c2.string].success.current_revision, "2");
  assert.ok(Number(by[c2.string].success.position.commit_position) >= 0);
  const st = await b.end();
  assert.equal(st.code, grpc.status.OK);
  assert.deepEqual((await readStream(s1)).map((e) => e.metadata.type), ["A", "A", "A"]);
  assert.equal((await readStream(s2)).length, 3);
});

check("BatchAppend: a wrong expected position is an in-band WrongExpectedVersion", async () => {
  const b = batchCall();
  const s = `baw-${crypto.randomUUID()}`;
  const c = corr();
  b.send({ correlation_id: c, options: { stream_identifier: sid(s), any: {} },
    proposed_messages: [proposed("A", 1)], is_final: true });
  await b.take(1);
  b.send({ correlation_id: corr(), options: { stream_identifier: sid(s), stream_position: "5" },
    proposed_messages: [proposed("A", 1)], is_final: true });
  const [r] = await b.take(1);
  assert.equal(r.result, "error");
  assert.equal(r.error.code, 9); // FAILED_PRECONDITION
  const [type, w] = unpackDetail(r.error);
  assert.equal(type, "event_store.client.WrongExpectedVersion");
  assert.equal(String(w.current_stream_revision), "0");
  assert.equal(String(w.expected_stream_position), "5");
  assert.equal((await b.end()).code, grpc.status.OK);
  assert.equal((await readStream(s)).length, 1);
});

check("BatchAppend: a past deadline is Timeout, a tombstoned stream StreamDeleted, no options BadRequest; the call goes on", async () => {
  const b = batchCall();
  const s = `bad-${crypto.randomUUID()}`;
  b.send({ correlation_id: corr(), options: { stream_identifier: sid(s), any: {},
    deadline_21_10_0: { seconds: "1000", nanos: 0 } }, proposed_messages: [proposed("A", 1)], is_final: true });
  let [r] = await b.take(1);
  assert.equal(r.error.code, 4);
  assert.equal(unpackDetail(r.error)[0], "event_store.client.Timeout");
  b.send({ correlation_id: corr(), proposed_messages: [proposed("A", 1)], is_final: true });
  [r] = await b.take(1);
  assert.equal(r.error.code, 3);
  assert.equal(unpackDetail(r.error)[0], "event_store.client.BadRequest");
  const t = `tomb-${crypto.randomUUID()}`;
  await append([{ options: { stream_identifier: sid(t), any: {} } }, event("T", 1)]);
  await unary(streams, "Tombstone", { options: { stream_identifier: sid(t), any: {} } });
  b.send({ correlation_id: corr(), options: { stream_identifier: sid(t), any: {} },
    proposed_messages: [proposed("A", 1)], is_final: true });
  [r] = await b.take(1);
  const [type, d] = unpackDetail(r.error);
  assert.equal(type, "event_store.client.StreamDeleted");
  assert.equal(d.stream_identifier.stream_name.toString(), t);
  b.send({ correlation_id: corr(), options: { stream_identifier: sid(s), no_stream: {} },
    proposed_messages: [proposed("A", 1)], is_final: true });
  [r] = await b.take(1);
  assert.equal(r.success.current_revision, "0");
  assert.equal((await b.end()).code, grpc.status.OK);
  assert.equal((await readStream(s)).length, 1, "the timed-out batch wrote nothing");
});

check("BatchAppend: over 16 MiB is MaximumAppendSizeExceeded; an unfinished batch writes nothing", async () => {
  const b = batchCall();
  const s = `babig-${crypto.randomUUID()}`;
  const c = corr();
  b.send({ correlation_id: c, options: { stream_identifier: sid(s), any: {} },
    proposed_messages: [proposed("A", 9 << 20)], is_final: false });
  b.send({ correlation_id: c, proposed_messages: [proposed("A", 9 << 20)], is_final: false });
  const [r] = await b.take(1);
  assert.equal(r.correlation_id.string, c.string);
  const [type, d] = unpackDetail(r.error);
  assert.equal(type, "event_store.client.MaximumAppendSizeExceeded");
  assert.equal(d.maxAppendSize, 16 << 20);
  b.send({ correlation_id: c, proposed_messages: [proposed("A", 1)], is_final: true });
  const u = `baopen-${crypto.randomUUID()}`;
  b.send({ correlation_id: corr(), options: { stream_identifier: sid(u), any: {} },
    proposed_messages: [proposed("A", 1)], is_final: false });
  assert.equal((await b.end()).code, grpc.status.OK);
  assert.equal(await readStream(s), null, "nothing of the failed batch");
  assert.equal(await readStream(u), null, "nothing of the unfinished batch");
});

// ---- Operations and Monitoring
const statsOnce = async () => {
  const got = await new Promise((resolve, reject) => {
    const out = [];
    const call = monitoring.Stats({ use_metadata: false, refresh_time_period_in_ms: "0" });
    call.on("data", (r) => out.push(r.stats));
    call.on("end", () => resolve(out));
    call.on("error", reject);
  });
  assert.equal(got.length, 1, "one response when no refresh period is asked");
  return got[0];
};
const headPosition = () => new Promise((resolve, reject) => {
  let pos = -1;
  const call = streams.Read({ options: { all: { end: {} }, read_direction: "Backwards", count: "1",
    no_filter: {}, uuid_option: { string: {} } } });
  call.on("data", (r) => { if (r.event) pos = Number(r.event.event.commit_position); });
  call.on("end", () => resolve(pos));
  call.on("error", reject);
});

check("Monitoring.Stats once: counts agree with $all, flushes and groups were timed", async () => {
  await append([{ options: { stream_identifier: sid(`st-${crypto.randomUUID()}`), any: {} } }, event("T", 1)]);
  const st = await statsOnce();
  assert.equal(Number(st["annal-events"]), (await headPosition()) + 1);
  assert.ok(Number(st["annal-groups"]) >= 1);
  assert.ok(Number(st["annal-flushes"]) >= 1);
  assert.ok(Number(st["es-writer-meanFlushDelayMs"]) > 0);
  assert.ok(Number(st["es-writer-maxFlushDelayMs"]) >= Number(st["es-writer-lastFlushDelayMs"]));
  assert.ok(Number(st["annal-group-meanAppends"]) >= 1);
  assert.match(st["proc-id"], /^[1-9][0-9]*$/);
  assert.ok(Number(st["proc-mem"]) > 0 && Number(st["proc-threadsCount"]) > 0);
  assert.ok(Number(st["annal-calls"]) >= 1, "this call counts");
});

check("Monitoring.Stats every 200 ms follows appends until cancelled", async () => {
  const seen = [];
  const call = monitoring.Stats({ use_metadata: false, refresh_time_period_in_ms: "200" });
  await new Promise((resolve, reject) => {
    call.on("data", async (r) => {
      seen.push(Number(r.stats["annal-events"]));
      if (seen.length === 1)
        await append([{ options: { stream_identifier: sid(`st2-${crypto.randomUUID()}`), any: {} } },
          event("T", 1), event("T", 1)]);
      if (seen.length === 4) resolve();
    });
    call.on("error", (e) => (e.code === grpc.status.CANCELLED ? resolve() : reject(e)));
  });
  call.cancel();
  assert.equal(seen[3], seen[0] + 2, `events seen: ${seen}`);
});

check("Operations: StartScavenge runs annal_compact once at a time; StopScavenge by id", async () => {
  const rs = await Promise.all([1, 2, 3].map(() => unary(operations, "StartScavenge",
    { options: { thread_count: 1, start_from_chunk: 0 } })));
  const started = rs.filter((r) => r.scavenge_result === "Started").map((r) => r.scavenge_id);
  assert.ok(started.length >= 1);
  assert.equal(new Set(started).size, started.length, "each start a new id");
  for (const r of rs) {
    assert.match(r.scavenge_id, /^[0-9a-f-]{36}$/);
    if (r.scavenge_result === "InProgress") assert.ok(started.includes(r.scavenge_id), "InProgress names the running one");
  }
  let st;
  for (let i = 0; i < 100; i++) {
    st = await statsOnce();
    if (st["annal-scavenge-state"] !== "running") break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(st["annal-scavenge-state"], "done");
  const last = st["annal-scavenge-id"];
  assert.ok(started.includes(last), "the latest scavenge is one that started");
  const stop = await unary(operations, "StopScavenge", { options: { scavenge_id: last } });
  assert.equal(stop.scavenge_result, "Stopped");
  assert.equal(stop.scavenge_id, last);
  const err = await unary(operations, "StopScavenge", { options: { scavenge_id: crypto.randomUUID() } })
    .then(() => null, (e) => e);
  assert.equal(err.code, grpc.status.NOT_FOUND);
  assert.equal(err.metadata.get("exception")[0], "scavenge-not-found");
});

(async () => {
  if (process.argv[4] === "shutdown") {
    await unary(operations, "Shutdown", {});
    console.log("shutdown asked");
    process.exit(0);
  }
  for (const [n, fn] of checks) {
    try {
      await fn();
      console.log(`ok - raw: ${n}`);
    } catch (err) {
      console.log(`not ok - raw: ${n}\n${err && err.stack ? err.stack : err}`);
      process.exit(1);
    }
  }
  process.exit(0);
})();
