// Operations.StopScavenge stops a scavenge that is running (annal_compact_cb's callback):
// StartScavenge, then StopScavenge by its id at once; the scavenge ends "stopped" with
// fewer segments done than it had (Monitoring.Stats), not "done".
// Usage: node scavenge.js PROTO_DIR PORT. Prints "ok - NAME" per check.
"use strict";
const assert = require("node:assert/strict");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const [protoDir, port] = process.argv.slice(2);
const def = loader.loadSync(["operations.proto", "monitoring.proto"], {
  includeDirs: [protoDir], keepCase: true, enums: String, longs: String, defaults: true, oneofs: true,
});
const pkg = grpc.loadPackageDefinition(def).event_store.client;
const addr = `127.0.0.1:${port}`;
const creds = grpc.credentials.createInsecure();
const operations = new pkg.operations.Operations(addr, creds);
const monitoring = new pkg.monitoring.Monitoring(addr, creds);
const unary = (c, m, req) =>
  new Promise((res, rej) => c[m](req, (err, r) => (err ? rej(err) : res(r))));
const stats = () => new Promise((resolve, reject) => {
  const out = [];
  const call = monitoring.Stats({ use_metadata: false, refresh_time_period_in_ms: "0" });
  call.on("data", (r) => out.push(r.stats));
  call.on("end", () => resolve(out[0]));
  call.on("error", reject);
});

(async () => {
  try {
    const start = await unary(operations, "StartScavenge", { options: { thread_count: 1, start_from_chunk: 0 } });
    assert.equal(start.scavenge_result, "Started");
    const t0 = Date.now();
    const stop = await unary(operations, "StopScavenge", { options: { scavenge_id: start.scavenge_id } });
    assert.equal(stop.scavenge_result, "Stopped");
    assert.equal(stop.scavenge_id, start.scavenge_id);
    let st;
    for (let i = 0; i < 300; i++) {
      st = await stats();
      if (st["annal-scavenge-state"] !== "running") break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const ms = Date.now() - t0;
    assert.equal(st["annal-scavenge-id"], start.scavenge_id);
    assert.equal(st["annal-scavenge-state"], "stopped", `state after StopScavenge: ${JSON.stringify(st)}`);
    const done = Number(st["annal-scavenge-segmentsDone"]), total = Number(st["annal-scavenge-segmentsTotal"]);
    assert.ok(total >= 1 && done < total, `segments ${done} of ${total}`);
    console.log(`ok - scavenge: stopped ${ms} ms after StopScavenge, ${done} of ${total} segments done`);
    process.exit(0);
  } catch (err) {
    console.log(`not ok - scavenge\n${err && err.stack ? err.stack : err}`);
    process.exit(1);
  }
})();
