// One load run for bench/dcb_grpc_run.sh: CONC concurrent single-event appends through
// grpc-js for SECONDS against `annal serve`, printing one JSON line. Modes:
//   streams   KurrentDB's Streams.Append (client-streaming), each lane its own stream
//   dcb       annal.dcb.v1.Dcb/Append to $dcb, tagged with the lane, no condition
//   dcb-cond  the same on condition "nothing tagged with my lane after the position of my
//             last append": a decision whose boundary is its own (no conflicts), so the
//             figure is the condition's cost, checked by the group commit's leader
// Usage: node dcb_grpc_load.js PROTO_DIR PORT MODE SECONDS CONC
"use strict";
const crypto = require("node:crypto");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const [protoDir, port, mode, seconds, conc] = process.argv.slice(2);
const def = loader.loadSync(["dcb.proto", "streams.proto"], {
  includeDirs: [protoDir], keepCase: true, enums: String, longs: String, defaults: true, oneofs: true,
});
const root = grpc.loadPackageDefinition(def);
const addr = `127.0.0.1:${port}`;
const creds = grpc.credentials.createInsecure();
const dcb = new root.annal.dcb.v1.Dcb(addr, creds);
const streams = new root.event_store.client.streams.Streams(addr, creds);
const run = crypto.randomUUID().slice(0, 8);
const data = Buffer.from(JSON.stringify({ at: 1, note: "bench" }));

function streamsAppend(stream) {
  return new Promise((res, rej) => {
    const call = streams.Append((err, r) => (err ? rej(err) : res(r)));
    call.write({ options: { stream_identifier: { stream_name: Buffer.from(stream) }, any: {} } });
    call.write({
      proposed_message: { id: { string: crypto.randomUUID() }, metadata: { type: "Bench", "content-type": "application/json" }, data },
    });
    call.end();
  });
}
const dcbAppend = (req) => new Promise((res, rej) => dcb.Append(req, (err, r) => (err ? rej(err) : res(r))));

async function lane(k, until, counts) {
  const tag = `lane:${run}-${k}`;
  const query = { items: [{ types: ["Bench"], tags: [tag] }] };
  let after; // the position of this lane's last append
  while (Date.now() < until) {
    if (mode === "streams") {
      await streamsAppend(`dcb-bench-${run}-${k}`);
    } else {
      const req = { events: [{ id: crypto.randomUUID(), type: "Bench", data, tags: [tag] }] };
      if (mode === "dcb-cond") req.condition = after === undefined ? { query } : { query, after };
      const r = await dcbAppend(req);
      if (r.result !== "success") throw new Error(`lane ${k}: ${JSON.stringify(r)}`);
      after = r.success.first_position;
    }
    counts[k]++;
  }
}

async function main() {
  const n = Number(conc);
  const counts = new Array(n).fill(0);
  const until = Date.now() + Number(seconds) * 1000;
  const t0 = process.hrtime.bigint();
  await Promise.all(counts.map((_, k) => lane(k, until, counts)));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const calls = counts.reduce((a, b) => a + b, 0);
  console.log(JSON.stringify({ mode, clients: n, calls, seconds: s, appends_per_s: calls / s }));
}
main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
