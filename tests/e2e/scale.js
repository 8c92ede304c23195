// Scale and slow subscribers against `annal serve`: 1,000 concurrent subscriptions that
// each get the next event, a 16 MiB event through both clients' paths, and (with
// ANNAL_LONG=1) a subscription idle for 90 s that still gets the next event.
// Usage: node scale.js PROTO_DIR PORT
"use strict";
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");
const lib = require("@eventstore/db-client");

const [protoDir, port] = process.argv.slice(2);
const def = loader.loadSync(["streams.proto"], { includeDirs: [protoDir], keepCase: true,
  enums: String, longs: String, defaults: true, oneofs: true });
const pkg = grpc.loadPackageDefinition(def).event_store.client;
const addr = `127.0.0.1:${port}`;
const sid = (s) => ({ stream_name: Buffer.from(s) });
const client = lib.EventStoreDBClient.connectionString(`esdb://${addr}?tls=false`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Subscribe to stream from its end over channel ch; resolves {got, cancel} once confirmed.
function subscribe(ch, stream) {
  return new Promise((resolve, reject) => {
    const call = ch.Read({ options: { stream: { stream_identifier: sid(stream), end: {} },
      read_direction: "Forwards", subscription: {}, no_filter: {}, uuid_option: { string: {} } } });
    const got = [];
    call.on("data", (r) => {
      if (r.confirmation) resolve({ got, cancel: () => call.cancel() });
      if (r.event) got.push(r.event.event);
    });
    call.on("error", (e) => { if (e.code !== grpc.status.CANCELLED) reject(e); });
  });
}

const checks = [];
const check = (n, fn) => checks.push([n, fn]);

check("1,000 concurrent subscriptions each get the next event", async () => {
  const s = `many-${crypto.randomUUID()}`;
  // Ten connections of 100 streams each, as many clients would.
  const chans = Array.from({ length: 10 }, (_, i) =>
    new pkg.streams.Streams(addr, grpc.credentials.createInsecure(), { "grpc.channel_id": i }));
  const t0 = Date.now();
  const subs = await Promise.all(Array.from({ length: 1000 }, (_, i) => subscribe(chans[i % 10], s)));
  const opened = Date.now() - t0;
  await client.appendToStream(s, lib.jsonEvent({ type: "Ping", data: { n: 1 } }));
  const until = Date.now() + 30000;
  while (subs.some((x) => x.got.length < 1) && Date.now() < until) await sleep(100);
  const missing = subs.filter((x) => x.got.length < 1).length;
  assert.equal(missing, 0, `${missing} subscriptions did not get the event`);
  assert.ok(subs.every((x) => x.got[0].metadata.type === "Ping" && x.got.length === 1));
  console.log(`# 1,000 subscriptions opened in ${opened} ms, all delivered in ${Date.now() - t0 - opened} ms`);
  subs.forEach((x) => x.cancel());
  chans.forEach((c) => c.close());
});

check("a 16 MiB event: appended, read back and delivered live", async () => {
  const s = `big16-${crypto.randomUUID()}`;
  const sub = await subscribe(new pkg.streams.Streams(addr, grpc.credentials.createInsecure(),
    { "grpc.max_receive_message_length": 20 << 20 }), s);
  const data = crypto.randomBytes((16 << 20) - 64);
  await client.appendToStream(s, lib.binaryEvent({ type: "Big", data }));
  const [e] = await (async () => { const out = []; for await (const x of client.readStream(s)) out.push(x); return out; })();
  assert.ok(Buffer.from(e.event.data).equals(data), "read back whole");
  const until = Date.now() + 20000;
  while (sub.got.length < 1 && Date.now() < until) await sleep(100);
  assert.ok(sub.got.length === 1 && Buffer.from(sub.got[0].data).equals(data), "delivered whole");
  sub.cancel();
});

if (process.env.ANNAL_LONG === "1")
  check("a subscription idle for 90 s still gets the next event", async () => {
    const s = `idle-${crypto.randomUUID()}`;
    const idle = lib.EventStoreDBClient.connectionString(`esdb://${addr}?tls=false`);
    const sub = idle.subscribeToStream(s, { fromRevision: lib.END });
    const got = [];
    sub.on("data", (e) => got.push(e));
    let failed = null;
    sub.on("error", (e) => (failed = e));
    await new Promise((r) => sub.once("confirmation", r));
    await sleep(90000);
    assert.equal(failed, null, `the idle subscription ended: ${failed}`);
    await client.appendToStream(s, lib.jsonEvent({ type: "Late", data: {} }));
    const until = Date.now() + 10000;
    while (got.length < 1 && Date.now() < until) await sleep(100);
    assert.equal(got.length, 1);
    assert.equal(got[0].event.type, "Late");
    await sub.unsubscribe();
    await idle.dispose();
  });

(async () => {
  for (const [n, fn] of checks) {
    try {
      await fn();
      console.log(`ok - scale: ${n}`);
    } catch (err) {
      console.log(`not ok - scale: ${n}\n${err && err.stack ? err.stack : err}`);
      process.exit(1);
    }
  }
  await client.dispose();
  process.exit(0);
})();
