// One load run for bench/v2_run.sh: CONC concurrent callers of one @kurrent/kurrentdb-client
// appending for SECONDS, printing one JSON line (events/s). Workloads, 100 events a call:
//   single-b100    appendToStream of 100 events to one stream (BatchAppend)
//   multi-10x10    multiStreamAppend of 10 streams x 10 events (AppendSession)
//   records-10x10  appendRecords of 100 records over 10 streams (AppendRecords)
// Usage: node v2_load.js URL WORKLOAD SECONDS CONC
"use strict";
const lib = require("@kurrent/kurrentdb-client");
const [url, workload, seconds, conc] = process.argv.slice(2);
const c = lib.KurrentDBClient.connectionString(url);
const data = { pad: "x".repeat(180) }; // ~200-byte events, as bench/multi_bench.c
const ev = () => lib.jsonEvent({ type: "Bench", data });
const tag = Math.random().toString(36).slice(2, 8);

function call(k) {
  const s = (j) => `v2b-${tag}-${k}-${j}`;
  if (workload === "single-b100")
    return c.appendToStream(s(0), Array.from({ length: 100 }, ev));
  if (workload === "multi-10x10")
    return c.multiStreamAppend(Array.from({ length: 10 }, (_, j) => ({
      streamName: s(j), expectedState: lib.ANY, events: Array.from({ length: 10 }, ev),
    })));
  return c.appendRecords(Array.from({ length: 100 }, (_, j) => ({ streamName: s(Math.floor(j / 10)), record: ev() })));
}

async function main() {
  const n = Number(conc);
  await call(0); // connect and learn the server's methods first
  const until = Date.now() + Number(seconds) * 1000;
  let calls = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: n }, async (_, k) => {
    while (Date.now() < until) {
      await call(k);
      calls++;
    }
  }));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(JSON.stringify({ workload, clients: n, calls, seconds: s, events_per_s: (100 * calls) / s }));
  await c.dispose();
}
main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
