// Bad input against `annal serve`: the server must answer each with the right status and
// keep serving. grpc-js with raw bytes (no serialisation), node:http2 for broken framing,
// net for non-HTTP/2 bytes. Usage: node abuse.js PROTO_DIR PORT SERVER_PID
"use strict";
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const fs = require("node:fs");
const http2 = require("node:http2");
const net = require("node:net");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protobuf = require("protobufjs");

const [protoDir, port, pid] = process.argv.slice(2);
const addr = `127.0.0.1:${port}`;
const creds = grpc.credentials.createInsecure();
const raw = new grpc.Client(addr, creds, { "grpc.max_send_message_length": 64 << 20 });
const id = (x) => x;
const S = "/event_store.client.streams.Streams/";
const root = new protobuf.Root();
root.resolvePath = (_o, t) => path.join(protoDir, t);
root.loadSync(["streams.proto", "serverfeatures.proto"], { keepCase: true });
const T = (n) => root.lookupType(n);
const enc = (type, obj) => Buffer.from(T(type).encode(T(type).fromObject(obj)).finish());
const sid = (s) => ({ stream_name: Buffer.from(s) });

const unary = (method, bytes) =>
  new Promise((resolve) => raw.makeUnaryRequest(method, id, id, bytes, (err, r) => resolve([err, r])));
// A server-streaming call; resolves with [status, messages].
const serverStream = (method, bytes) =>
  new Promise((resolve) => {
    const got = [];
    const call = raw.makeServerStreamRequest(method, id, id, bytes);
    call.on("data", (m) => got.push(m));
    call.on("error", () => {});
    call.on("status", (s) => resolve([s, got]));
  });
// A client-streaming call of the given messages; resolves with [error, response].
const clientStream = (method, msgs) =>
  new Promise((resolve) => {
    const call = raw.makeClientStreamRequest(method, id, id, (err, r) => resolve([err, r]));
    for (const m of msgs) call.write(m);
    call.end();
  });
const bidi = (method, msgs) =>
  new Promise((resolve) => {
    const got = [];
    const call = raw.makeBidiStreamRequest(method, id, id);
    call.on("data", (m) => got.push(m));
    call.on("error", () => {});
    call.on("status", (s) => resolve([s, got]));
    for (const m of msgs) call.write(m);
    call.end();
  });
async function alive() {
  const [err, r] = await unary("/event_store.client.server_features.ServerFeatures/GetSupportedMethods", Buffer.alloc(0));
  assert.equal(err, null, "the server still answers");
  assert.ok(T("event_store.client.server_features.SupportedMethods").decode(r).methods.length > 0);
}
// The server's call threads (named annal-call; gRPC's pools and the store's own threads
// come and go on their own): a call left behind would show here.
const threads = () => fs.readdirSync(`/proc/${pid}/task`)
  .filter((t) => { try { return fs.readFileSync(`/proc/${pid}/task/${t}/comm`, "utf8").trim() === "annal-call"; } catch { return false; } })
  .length;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function threadsBackTo(base, what) {
  for (let i = 0; i < 100 && threads() > base; i++) await sleep(100);
  assert.ok(threads() <= base, `${what}: ${threads()} threads, ${base} before`);
}

const checks = [];
const check = (n, fn) => checks.push([n, fn]);
const garbage = [Buffer.from([0xff, 0xff, 0xff]), Buffer.from([0x0a, 0x05, 0x01]), crypto.randomBytes(64),
  Buffer.from([0x08]), Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])];

check("garbage protobuf on every method: INVALID_ARGUMENT", async () => {
  for (const g of garbage) {
    let [s] = await serverStream(`${S}Read`, g);
    assert.equal(s.code, grpc.status.INVALID_ARGUMENT, "Read");
    let [err] = await clientStream(`${S}Append`, [g]);
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT, "Append");
    [err] = await unary(`${S}Delete`, g);
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT, "Delete");
    [err] = await unary(`${S}Tombstone`, g);
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT, "Tombstone");
    [s] = await bidi(`${S}BatchAppend`, [g]);
    assert.equal(s.code, grpc.status.INVALID_ARGUMENT, "BatchAppend");
  }
  await alive();
});

check("wrong wire types for known fields: INVALID_ARGUMENT", async () => {
  // ReadReq.options (a message, field 1) sent as a varint; options.stream (field 1) as a
  // fixed64; AppendReq options whose stream_identifier is a varint.
  for (const b of [Buffer.from([0x08, 0x01]), Buffer.from([0x0a, 0x09, 0x09, 1, 2, 3, 4, 5, 6, 7, 8])]) {
    const [s] = await serverStream(`${S}Read`, b);
    assert.equal(s.code, grpc.status.INVALID_ARGUMENT);
  }
  const [err] = await clientStream(`${S}Append`, [Buffer.from([0x0a, 0x02, 0x08, 0x05])]);
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  await alive();
});

check("bad values: a revision past int64, an empty or NUL name, a filter on one stream", async () => {
  const o = (x) => enc("event_store.client.streams.AppendReq", { options: x });
  for (const opts of [{ stream_identifier: sid("s"), revision: "18446744073709551615" },
    { stream_identifier: sid(""), any: {} }, { stream_identifier: { stream_name: Buffer.from("a\0b") }, any: {} }]) {
    const [err] = await clientStream(`${S}Append`, [o(opts)]);
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT, JSON.stringify(opts));
  }
  const [s] = await serverStream(`${S}Read`, enc("event_store.client.streams.ReadReq", { options: {
    stream: { stream_identifier: sid("s"), start: {} }, count: 1,
    filter: { stream_identifier: { regex: "x" }, max: 1 } } }));
  assert.equal(s.code, grpc.status.INVALID_ARGUMENT);
  const [s2] = await serverStream(`${S}Read`, enc("event_store.client.streams.ReadReq", { options: {
    all: { start: {} }, count: 1, filter: { stream_identifier: { regex: "(" }, max: 1 } } }));
  assert.equal(s2.code, grpc.status.INVALID_ARGUMENT, "an invalid regex");
  await alive();
});

check("an oversized message (18 MiB) is RESOURCE_EXHAUSTED", async () => {
  const [err] = await clientStream(`${S}Append`, [Buffer.alloc(18 << 20, 1)]);
  assert.equal(err.code, grpc.status.RESOURCE_EXHAUSTED);
  await alive();
});

check("unknown methods and services: UNIMPLEMENTED", async () => {
  for (const m of [`${S}Nope`, "/no.such.Service/Read", "/", "/event_store.client.users.Users/Details"]) {
    const [err] = await unary(m, Buffer.alloc(0));
    assert.equal(err.code, grpc.status.UNIMPLEMENTED, m);
  }
  await alive();
});

check("half-closed calls: no request is INVALID_ARGUMENT, options alone append nothing", async () => {
  let [s] = await serverStream(`${S}Read`, null).catch(() => [{ code: -1 }]);
  const [err] = await clientStream(`${S}Read`, []);
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT, "Read with no request");
  const name = `half-${crypto.randomUUID()}`;
  const [err2, r] = await clientStream(`${S}Append`,
    [enc("event_store.client.streams.AppendReq", { options: { stream_identifier: sid(name), no_stream: {} } })]);
  assert.equal(err2, null);
  assert.ok(T("event_store.client.streams.AppendResp").decode(r).success.no_stream, "nothing written");
  [s] = await bidi(`${S}BatchAppend`, []);
  assert.equal(s.code, grpc.status.OK);
  await alive();
});

check("broken gRPC framing and non-HTTP/2 bytes", async () => {
  // A length prefix promising more than is sent, then end of stream.
  const c = http2.connect(`http://${addr}`);
  const st = await new Promise((resolve) => {
    const req = c.request({ ":method": "POST", ":path": `${S}Read`, "content-type": "application/grpc", te: "trailers" });
    let status = null;
    req.on("trailers", (t) => (status = t["grpc-status"]));
    req.on("response", (h) => { if (h["grpc-status"]) status = h["grpc-status"]; });
    req.on("close", () => resolve(status));
    req.on("error", () => resolve(status));
    req.end(Buffer.from([0, 0, 0, 0, 100, 1, 2, 3]));
  });
  c.close();
  assert.ok(st !== null && st !== "0", `a status that is not OK (${st})`);
  // Compressed flag with no encoding.
  const c2 = http2.connect(`http://${addr}`);
  const st2 = await new Promise((resolve) => {
    const req = c2.request({ ":method": "POST", ":path": `${S}Read`, "content-type": "application/grpc", te: "trailers" });
    let status = null;
    req.on("trailers", (t) => (status = t["grpc-status"]));
    req.on("response", (h) => { if (h["grpc-status"]) status = h["grpc-status"]; });
    req.on("close", () => resolve(status));
    req.on("error", () => resolve(status));
    req.end(Buffer.from([1, 0, 0, 0, 2, 8, 1]));
  });
  c2.close();
  assert.ok(st2 !== null && st2 !== "0", `a status that is not OK (${st2})`);
  for (const bytes of [Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), crypto.randomBytes(4096)]) {
    await new Promise((resolve) => {
      const s = net.connect(Number(port), "127.0.0.1", () => s.write(bytes));
      s.on("data", () => {});
      s.on("error", resolve);
      s.on("close", resolve);
      setTimeout(() => { s.destroy(); resolve(); }, 3000);
    });
  }
  await alive();
});

check("3,000 connections opened and dropped (some mid-preface, some mid-call)", async () => {
  const base = threads();
  for (let round = 0; round < 30; round++) {
    await Promise.all(Array.from({ length: 100 }, (_, i) => new Promise((resolve) => {
      if (i % 3 === 0) {
        const s = net.connect(Number(port), "127.0.0.1", () => { s.write("PRI * HTTP/2.0\r\n"); s.destroy(); resolve(); });
        s.on("error", resolve);
      } else {
        const c = http2.connect(`http://${addr}`);
        c.on("error", () => {});
        c.on("connect", () => {
          if (i % 3 === 1) { c.destroy(); return resolve(); }
          const req = c.request({ ":method": "POST", ":path": `${S}Read`, "content-type": "application/grpc", te: "trailers" });
          req.on("error", () => {});
          req.write(Buffer.from([0, 0, 0, 0, 50]));
          setTimeout(() => { c.destroy(); resolve(); }, 5);
        });
        setTimeout(() => { c.destroy(); resolve(); }, 5000);
      }
    })));
  }
  await alive();
  await threadsBackTo(base, "threads after the connections went");
});

check("clients vanishing mid-stream: reads, subscriptions, appends, batches", async () => {
  const base = threads();
  const name = `vanish-${crypto.randomUUID()}`;
  const ev = (n) => enc("event_store.client.streams.AppendReq", { proposed_message: {
    id: { string: crypto.randomUUID() }, metadata: { type: "T" }, data: Buffer.alloc(n, 1) } });
  const opts = enc("event_store.client.streams.AppendReq", { options: { stream_identifier: sid(name), any: {} } });
  const [e0] = await clientStream(`${S}Append`, [opts, ...Array.from({ length: 200 }, () => ev(64 << 10))]);
  assert.equal(e0, null);
  const readReq = (sub) => enc("event_store.client.streams.ReadReq", { options: {
    stream: { stream_identifier: sid(name), start: {} }, ...(sub ? { subscription: {} } : { count: 1000 }),
    no_filter: {}, uuid_option: { string: {} } } });
  for (let i = 0; i < 20; i++) {
    // A read of 12 MiB dropped after its first message, a subscription dropped live.
    for (const sub of [false, true]) {
      const call = raw.makeServerStreamRequest(`${S}Read`, id, id, readReq(sub));
      call.on("error", () => {});
      await new Promise((r) => call.once("data", r));
      call.cancel();
    }
    // An append and a batch whose connection drops before they end (a grpc-js cancel
    // would half-close first, which commits the request): nothing of them is written.
    const frame = (m) => Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), m]).fill(0, 0, 1)
      .map((x, j) => (j >= 1 && j <= 4 ? (m.length >>> (8 * (4 - j))) & 0xff : x));
    const session = http2.connect(`http://${addr}`);
    session.on("error", () => {});
    for (const [method, msgs] of [[`${S}Append`, [enc("event_store.client.streams.AppendReq",
      { options: { stream_identifier: sid(`${name}-gone`), any: {} } }), ev(10)]],
    [`${S}BatchAppend`, [enc("event_store.client.streams.BatchAppendReq", { correlation_id: { string: crypto.randomUUID() },
      options: { stream_identifier: sid(`${name}-gone`), any: {} }, proposed_messages: [], is_final: false })]]]) {
      const req = session.request({ ":method": "POST", ":path": method, "content-type": "application/grpc", te: "trailers" });
      req.on("error", () => {});
      for (const m of msgs) req.write(frame(m));
    }
    await sleep(20);
    session.destroy();
  }
  await alive();
  const [s, got] = await serverStream(`${S}Read`, enc("event_store.client.streams.ReadReq", { options: {
    stream: { stream_identifier: sid(`${name}-gone`), start: {} }, count: 10, no_filter: {} } }));
  assert.equal(s.code, grpc.status.OK);
  const first = T("event_store.client.streams.ReadResp").decode(got[0]);
  assert.ok(first.stream_not_found, `nothing of a vanished append: ${got.length + " events"}`);
  await threadsBackTo(base, "threads after the vanished calls");
});

(async () => {
  for (const [n, fn] of checks) {
    try {
      await fn();
      console.log(`ok - abuse: ${n}`);
    } catch (err) {
      console.log(`not ok - abuse: ${n}\n${err && err.stack ? err.stack : err}`);
      process.exit(1);
    }
  }
  process.exit(0);
})();
