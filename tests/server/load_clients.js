// Concurrent appenders for the shutdown tests, on @eventstore/db-client (grpc-js).
// Usage: node load_clients.js PORT WORKERS MODE STOPFILE
//   MODE sigterm: append until the first failure, then stop (the server is going away).
//   MODE kill:    append until STOPFILE exists; a failed append is kept and resent later
//                 with the same event id until it is acknowledged (the server deduplicates).
// Prints "ack ID STREAM" for every acknowledged append and "fail ID CODE" for every failed
// attempt, then "done N" with the number of acknowledged appends.
"use strict";
const fs = require("node:fs");
const crypto = require("node:crypto");
const lib = require("@eventstore/db-client");

const [port, workers, mode, stopFile] = process.argv.slice(2);
const client = lib.EventStoreDBClient.connectionString(`esdb://127.0.0.1:${port}?tls=false`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const out = (line) => process.stdout.write(line + "\n");
let acked = 0;

async function worker(w) {
  const stream = `load-${w}`;
  const pending = []; // ids not yet acknowledged, resent first
  let n = 0;
  const deadline = Date.now() + 60000;
  for (;;) {
    const stopping = mode === "kill" && fs.existsSync(stopFile);
    if (stopping && pending.length === 0) return;
    if (Date.now() > deadline) throw new Error(`worker ${w}: ${pending.length} never acknowledged`);
    const id = pending.length ? pending[0] : crypto.randomUUID();
    const ev = lib.jsonEvent({ id, type: "Load", data: { w, n: n++ } });
    try {
      await client.appendToStream(stream, ev, { deadline: 5000 });
      if (pending.length && pending[0] === id) pending.shift();
      acked++;
      out(`ack ${id} ${stream}`);
    } catch (err) {
      out(`fail ${id} ${err.type || err.code || err.name}`);
      if (mode === "sigterm") return;
      if (!pending.length || pending[0] !== id) pending.push(id);
      await sleep(100);
    }
  }
}

Promise.all(Array.from({ length: Number(workers) }, (_, w) => worker(w)))
  .then(async () => {
    out(`done ${acked}`);
    await client.dispose().catch(() => {});
    process.exit(0);
  })
  .catch((err) => {
    console.error(`FAIL ${err.stack || err}`);
    process.exit(1);
  });
