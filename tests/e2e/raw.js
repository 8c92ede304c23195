// RPCs and errors the Node.js clients hide, called with grpc-js on stubs generated at run
// time from annal's own .proto files (src/server/proto).
// Usage: node raw.js PROTO_DIR PORT. Prints "ok - NAME" per check.
"use strict";
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const [protoDir, port] = process.argv.slice(2);
const def = loader.loadSync(["streams.proto", "serverfeatures.proto", "gossip.proto"], {
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
    "event_store.client.gossip.gossip/read",
    "event_store.client.server_features.serverfeatures/getsupportedmethods",
    "event_store.client.streams.streams/append",
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
  const err = await new Promise((resolve) => {
    const call = streams.BatchAppend();
    call.on("error", resolve);
    call.on("data", () => {});
    call.end();
  });
  assert.equal(err.code, grpc.status.UNIMPLEMENTED);
});

check("Append without options first is INVALID_ARGUMENT", async () => {
  const [err] = await append([event("T", 1)]);
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
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

(async () => {
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
