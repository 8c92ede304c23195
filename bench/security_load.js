// One load run for bench/security_run.sh: CONC clients of one official Node.js client
// (@eventstore/db-client over grpc-js) calling for SECONDS, printing one JSON line.
// Usage: node security_load.js URL append|read SECONDS CONC USER PASSWORD
"use strict";
const es = require("@eventstore/db-client");
const [url, workload, seconds, conc, user, password] = process.argv.slice(2);
const c = es.EventStoreDBClient.connectionString(url);
const credentials = user ? { username: user, password } : undefined;
const ev = () => es.jsonEvent({ type: "Bench", data: { at: Date.now() } });

async function main() {
  const n = Number(conc);
  // Each client its own stream; reads read 10 events of it.
  for (let k = 0; k < n; k++) await c.appendToStream(`sec-bench-${k}`, Array.from({ length: 10 }, ev), { credentials });
  const until = Date.now() + Number(seconds) * 1000;
  let calls = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: n }, async (_, k) => {
      const stream = `sec-bench-${k}`;
      while (Date.now() < until) {
        if (workload === "append") await c.appendToStream(stream, [ev()], { credentials });
        else for await (const e of c.readStream(stream, { maxCount: 10, credentials })) void e;
        calls++;
      }
    })
  );
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(JSON.stringify({ workload, clients: n, calls, seconds: s, calls_per_s: calls / s }));
  await c.dispose();
}
main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
