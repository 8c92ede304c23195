// End-to-end checks of `annal serve` through an official Node.js client, unchanged.
// Usage: node clients.js kurrent|eventstore PORT
// Prints "ok - NAME" per check; exits non-zero at the first failure.
"use strict";
const assert = require("node:assert/strict");
const crypto = require("node:crypto");

const flavour = process.argv[2];
const port = process.argv[3];
const lib =
  flavour === "kurrent" ? require("@kurrent/kurrentdb-client") : require("@eventstore/db-client");
const Client = lib.KurrentDBClient || lib.EventStoreDBClient;
const scheme = flavour === "kurrent" ? "kurrentdb" : "esdb";
const client = Client.connectionString(`${scheme}://127.0.0.1:${port}?tls=false`);
// 1.x names the append option streamState, 6.x expectedRevision.
const expect = (v) => (flavour === "kurrent" ? { streamState: v } : { expectedRevision: v });
const run = crypto.randomUUID().slice(0, 8);
const name = (s) => `${flavour}_${s}-${run}`;

async function collect(iter) {
  const out = [];
  for await (const e of iter) out.push(e);
  return out;
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

const checks = [];
const check = (n, fn) => checks.push([n, fn]);

const orders = name("order");
const ids = [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()];

check("append three events to a new stream", async () => {
  const events = ids.map((id, i) =>
    lib.jsonEvent({ id, type: i ? "Shipped" : "Placed", data: { n: i }, metadata: { by: "e2e" } })
  );
  const r = await client.appendToStream(orders, events, expect(lib.NO_STREAM));
  assert.equal(r.success, true);
  assert.equal(r.nextExpectedRevision, 2n);
  assert.ok(r.position && typeof r.position.commit === "bigint");
});

check("read the stream forwards", async () => {
  const evs = await collect(client.readStream(orders));
  assert.deepEqual(evs.map((e) => e.event.revision), [0n, 1n, 2n]);
  assert.deepEqual(evs.map((e) => e.event.id), ids);
  assert.deepEqual(evs.map((e) => e.event.data), [{ n: 0 }, { n: 1 }, { n: 2 }]);
  assert.deepEqual(evs[0].event.metadata, { by: "e2e" });
  assert.equal(evs[0].event.type, "Placed");
  assert.equal(evs[0].event.streamId, orders);
  assert.equal(evs[0].event.isJson, true);
  const age = Date.now() - evs[0].event.created.getTime();
  assert.ok(age >= -5000 && age < 600000, `created is now, off by ${age} ms`);
});

check("read the stream backwards, two from the end", async () => {
  const evs = await collect(
    client.readStream(orders, { direction: lib.BACKWARDS, fromRevision: lib.END, maxCount: 2 })
  );
  assert.deepEqual(evs.map((e) => e.event.revision), [2n, 1n]);
});

check("read the stream from a revision", async () => {
  const evs = await collect(client.readStream(orders, { fromRevision: 1n }));
  assert.deepEqual(evs.map((e) => e.event.revision), [1n, 2n]);
});

check("append with a wrong expected revision", async () => {
  const err = await rejects(
    client.appendToStream(orders, lib.jsonEvent({ type: "X", data: {} }), expect(0n)),
    "wrong-expected-version"
  );
  assert.equal(err.actualState ?? err.actualVersion, 2n); // 1.x and 6.x names
});

check("append with the right expected revision", async () => {
  const r = await client.appendToStream(orders, lib.jsonEvent({ type: "Paid", data: {} }), expect(2n));
  assert.equal(r.nextExpectedRevision, 3n);
});

check("read $all forwards and backwards", async () => {
  const fwd = (await collect(client.readAll())).filter((e) => e.event.streamId === orders);
  assert.deepEqual(fwd.map((e) => e.event.revision), [0n, 1n, 2n, 3n]);
  const back = await collect(client.readAll({ direction: lib.BACKWARDS, fromPosition: lib.END, maxCount: 1 }));
  assert.equal(back.length, 1);
  assert.equal(back[0].event.streamId, orders);
  assert.equal(back[0].event.type, "Paid");
  const from = await collect(client.readAll({ fromPosition: fwd[1].event.position, maxCount: 2 }));
  assert.deepEqual(from.map((e) => e.event.id), [ids[1], ids[2]]);
});

check("binary data and metadata come back as bytes", async () => {
  const s = name("bin");
  const data = Uint8Array.from([0, 1, 2, 255]);
  await client.appendToStream(s, lib.binaryEvent({ type: "Blob", data }));
  const [e] = await collect(client.readStream(s));
  assert.equal(e.event.isJson, false);
  assert.deepEqual(Buffer.from(e.event.data), Buffer.from(data));
});

check("a missing stream reads as stream-not-found", async () => {
  await rejects(collect(client.readStream(name("missing"))), "stream-not-found");
});

check("delete a stream", async () => {
  const s = name("del");
  await client.appendToStream(s, lib.jsonEvent({ type: "A", data: {} }));
  await rejects(client.deleteStream(s, { expectedRevision: 5n }), "wrong-expected-version");
  await client.deleteStream(s);
  await rejects(collect(client.readStream(s)), "stream-not-found");
});

check("tombstone a stream", async () => {
  const s = name("tomb");
  await client.appendToStream(s, lib.jsonEvent({ type: "A", data: {} }));
  await client.tombstoneStream(s);
  await rejects(collect(client.readStream(s)), "stream-deleted");
  await rejects(client.appendToStream(s, lib.jsonEvent({ type: "B", data: {} })), "stream-deleted");
});

check("stream metadata: set, get, and max count applied to reads", async () => {
  const s = name("meta");
  await client.appendToStream(s, [1, 2, 3].map((n) => lib.jsonEvent({ type: "T", data: { n } })));
  await client.setStreamMetadata(s, { maxCount: 2, custom: "kept" });
  const got = await client.getStreamMetadata(s);
  assert.equal(got.metadata.maxCount, 2);
  assert.equal(got.metadata.custom, "kept");
  assert.equal(typeof got.metastreamRevision, "bigint"); // 6.x reports a position here
  const evs = await collect(client.readStream(s));
  assert.deepEqual(evs.map((e) => e.event.data.n), [2, 3]);
});

// Appends go through BatchAppend (the server lists it): many at once share one call.
check("64 concurrent appends, one of them racing for a new stream", async () => {
  const race = name("race");
  const rs = await Promise.allSettled(
    Array.from({ length: 64 }, (_, i) =>
      client.appendToStream(i % 2 ? name(`c${i}`) : race, lib.jsonEvent({ type: "C", data: { i } }),
        expect(i % 2 ? lib.ANY : lib.NO_STREAM)))
  );
  const ok = rs.filter((r) => r.status === "fulfilled").length;
  const wrong = rs.filter((r) => r.status === "rejected" && r.reason.type === "wrong-expected-version");
  assert.equal(ok, 33, "32 own streams and one winner of the race");
  assert.equal(wrong.length, 31);
  assert.equal((await collect(client.readStream(race))).length, 1);
});

check("an append over the client's 3 MiB batch size arrives whole (several requests)", async () => {
  const s = name("chunked");
  const events = Array.from({ length: 5 }, (_, i) =>
    lib.binaryEvent({ type: "Big", data: Buffer.alloc(1 << 20, i) }));
  const r = await client.appendToStream(s, events, expect(lib.NO_STREAM));
  assert.equal(r.nextExpectedRevision, 4n);
  const evs = await collect(client.readStream(s));
  assert.deepEqual(evs.map((e) => e.event.data[0]), [0, 1, 2, 3, 4]);
});

check("an append over 16 MiB: maximum-append-size-exceeded", async () => {
  const s = name("toobig");
  const events = Array.from({ length: 17 }, () =>
    lib.binaryEvent({ type: "Big", data: Buffer.alloc(1 << 20, 1) }));
  await rejects(client.appendToStream(s, events), "maximum-append-size-exceeded");
  await rejects(collect(client.readStream(s)), "stream-not-found");
});

// $ce-/$et- read as KurrentDB's link streams; resolveLinkTos gives the event and its link.
const cat = `lnk${run.replace(/-/g, "")}${flavour}`;
check("$ce- and $et- read as link streams, resolved on request", async () => {
  const type = `Lt${cat}`;
  await client.appendToStream(`${cat}-a`, [1, 2].map((n) => lib.jsonEvent({ type, data: { n } })));
  await client.appendToStream(`${cat}-b`, lib.jsonEvent({ type: "Other", data: { n: 3 } }));
  const links = await collect(client.readStream(`$ce-${cat}`));
  assert.deepEqual(links.map((e) => e.event.type), ["$>", "$>", "$>"]);
  assert.deepEqual(links.map((e) => e.event.revision), [0n, 1n, 2n]);
  assert.deepEqual(links.map((e) => e.event.streamId), [`$ce-${cat}`, `$ce-${cat}`, `$ce-${cat}`]);
  assert.deepEqual(links.map((e) => Buffer.from(e.event.data).toString()), [`0@${cat}-a`, `1@${cat}-a`, `0@${cat}-b`]);
  const res = await collect(client.readStream(`$ce-${cat}`, { resolveLinkTos: true }));
  assert.deepEqual(res.map((e) => e.event.data.n), [1, 2, 3]);
  assert.deepEqual(res.map((e) => e.event.streamId), [`${cat}-a`, `${cat}-a`, `${cat}-b`]);
  assert.deepEqual(res.map((e) => e.link.revision), [0n, 1n, 2n]);
  assert.equal(res[2].link.type, "$>");
  const back = await collect(client.readStream(`$ce-${cat}`, { direction: lib.BACKWARDS, fromRevision: lib.END, maxCount: 2 }));
  assert.deepEqual(back.map((e) => e.event.revision), [2n, 1n]);
  const from1 = await collect(client.readStream(`$ce-${cat}`, { fromRevision: 1n, resolveLinkTos: true }));
  assert.deepEqual(from1.map((e) => e.event.data.n), [2, 3]);
  const et = await collect(client.readStream(`$et-${type}`, { resolveLinkTos: true }));
  assert.deepEqual(et.map((e) => [e.event.data.n, e.link.revision]), [[1, 0n], [2, 1n]]);
  await rejects(collect(client.readStream(`$ce-none${cat}`)), "stream-not-found");
});

check("a link appended by the client resolves too", async () => {
  const s = name("mylinks");
  await client.appendToStream(s, lib.binaryEvent({ type: "$>", data: Buffer.from(`1@${cat}-a`) }));
  const [plain] = await collect(client.readStream(s));
  assert.equal(plain.event.type, "$>");
  const [r] = await collect(client.readStream(s, { resolveLinkTos: true }));
  assert.equal(r.event.streamId, `${cat}-a`);
  assert.equal(r.event.data.n, 2);
  assert.equal(r.link.streamId, s);
});

// Resolves with the first n events a subscription delivers (or rejects after 15 s).
function take(sub, n) {
  return new Promise((resolve, reject) => {
    const got = [];
    const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${n} events`)), 15000);
    sub.on("data", (e) => {
      got.push(e);
      if (got.length === n) {
        clearTimeout(timer);
        resolve(got.slice(0, n)); // more may follow before the caller runs
      }
    });
    sub.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

check("subscribe to a stream: history, then live", async () => {
  const s = name("sub");
  await client.appendToStream(s, [1, 2].map((n) => lib.jsonEvent({ type: "T", data: { n } })));
  const sub = client.subscribeToStream(s, { fromRevision: lib.START });
  const got = take(sub, 4);
  await new Promise((r) => setTimeout(r, 300));
  await client.appendToStream(s, [3, 4].map((n) => lib.jsonEvent({ type: "T", data: { n } })));
  const evs = await got;
  assert.deepEqual(evs.map((e) => e.event.data.n), [1, 2, 3, 4]);
  await sub.unsubscribe();
});

check("subscribe to $all with a stream-name prefix filter", async () => {
  const prefix = name("filt");
  const sub = client.subscribeToAll({
    fromPosition: lib.START,
    filter: lib.streamNameFilter({ prefixes: [prefix] }),
  });
  const got = take(sub, 2);
  await client.appendToStream(name("other"), lib.jsonEvent({ type: "T", data: {} }));
  await client.appendToStream(`${prefix}-a`, lib.jsonEvent({ type: "T", data: { k: "a" } }));
  await client.appendToStream(`${prefix}-b`, lib.jsonEvent({ type: "T", data: { k: "b" } }));
  const evs = await got;
  assert.deepEqual(evs.map((e) => e.event.streamId), [`${prefix}-a`, `${prefix}-b`]);
  await sub.unsubscribe();
});

check("subscribe to $all from the end with an event-type regex", async () => {
  const type = `Typed${run}`;
  const sub = client.subscribeToAll({
    fromPosition: lib.END,
    filter: lib.eventTypeFilter({ regex: `^${type}$` }),
  });
  const got = take(sub, 1);
  await new Promise((r) => setTimeout(r, 300));
  await client.appendToStream(name("t"), lib.jsonEvent({ type: "Other", data: {} }));
  await client.appendToStream(name("t"), lib.jsonEvent({ type, data: { z: 1 } }));
  const [e] = await got;
  assert.equal(e.event.type, type);
  await sub.unsubscribe();
});

check("a subscription to $ce- from a link number, resolved", async () => {
  const sub = client.subscribeToStream(`$ce-${cat}`, { fromRevision: 0n, resolveLinkTos: true });
  const got = take(sub, 3);
  await new Promise((r) => setTimeout(r, 300));
  await client.appendToStream(`${cat}-c`, [4, 5].map((n) => lib.jsonEvent({ type: "T", data: { n } })));
  const evs = await got;
  // After link 0: history from link 1, then the new events live.
  assert.deepEqual(evs.map((e) => [e.event.data.n, e.link.revision]), [[2, 1n], [3, 2n], [4, 3n]]);
  await sub.unsubscribe();
});

check("the system projections enable and report running", async () => {
  for (const p of ["$by_category", "$by_event_type", "$stream_by_category", "$streams"]) {
    await client.enableProjection(p);
    const st = await client.getProjectionStatus(p);
    assert.equal(st.name, p);
    assert.equal(st.projectionStatus, "Running");
    assert.deepEqual(await client.getProjectionState(p), {});
  }
  await assert.rejects(client.getProjectionStatus(`nope-${run}`));
  await assert.rejects(client.enableProjection(`nope-${run}`));
});

// "hold": append, subscribe to $all and stay until the server ends the subscription (at its
// stop), then report how it ended: clients retry on UNAVAILABLE.
async function hold() {
  // An append first leaves the client's BatchAppend call open: the stop must end it too.
  await client.appendToStream(name("hold"), lib.jsonEvent({ type: "H", data: {} }));
  const sub = client.subscribeToAll({ fromPosition: lib.END });
  sub.on("confirmation", () => console.log("subscribed"));
  sub.on("data", () => {});
  const err = await new Promise((resolve) => {
    sub.on("error", resolve);
    sub.on("end", () => resolve(null));
  });
  console.log(`ended: ${err ? err.type || err.code : "end"}`);
  // Stay connected (the test ends us): the server must not wait for this process to go.
  setTimeout(() => process.exit(0), 30000);
}

(async () => {
  if (process.argv[4] === "hold") return hold();
  for (const [n, fn] of checks) {
    try {
      await fn();
      console.log(`ok - ${flavour}: ${n}`);
    } catch (err) {
      console.log(`not ok - ${flavour}: ${n}\n${err && err.stack ? err.stack : err}`);
      await client.dispose().catch(() => {});
      process.exit(1);
    }
  }
  await client.dispose();
  process.exit(0);
})();
