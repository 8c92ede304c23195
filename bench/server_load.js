// The Node.js peer of bench/server_load.c for bench/server_run.sh: the same workloads
// through the official client users run (@eventstore/db-client over grpc-js), one client
// (one connection) with CONC calls in flight, printing one JSON line like the C one.
// Usage: node server_load.js URL append|batch|read-stream|read-all SECONDS CONC [EVENTS]
//   append       CONC concurrent appendToStream of 1 event, each its own streams
//   batch        appendToStream of 100 events, one at a time (the client sends these
//                through BatchAppend when the server offers it)
//   read-stream  readStream(stream-hot) to the end, passes for SECONDS
//   read-all     readAll of EVENTS events from the start, passes for SECONDS
"use strict";
const es = require("@eventstore/db-client");
const [url, workload, seconds, concArg, eventsArg] = process.argv.slice(2);
const conc = Number(concArg || 1);
const events = Number(eventsArg || 200000);
const c = es.EventStoreDBClient.connectionString(url);
const run = Math.random().toString(16).slice(2, 10);
const note = "x".repeat(120);
const ev = (i) => es.jsonEvent({ type: "OrderPlaced", data: { order: `o-${i}`, amount: i % 100000, currency: "EUR", note } });

async function timed(body) {
  const until = Date.now() + Number(seconds) * 1000;
  const t0 = process.hrtime.bigint();
  const r = await body(until);
  if (!r.seconds) r.seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return r;
}

async function append(until) {
  let calls = 0;
  await Promise.all(
    Array.from({ length: conc }, async (_, k) => {
      for (let i = 0; Date.now() < until; i++) {
        await c.appendToStream(`nload-${run}-${k}-${i % 16}`, [ev(i)]);
        calls++;
      }
    })
  );
  return { calls, events: calls };
}

async function batch(until) {
  let calls = 0;
  for (let i = 0; Date.now() < until; i++) {
    await c.appendToStream(`nload-${run}-b${i % 100}`, Array.from({ length: 100 }, (_, k) => ev(k)));
    calls++;
  }
  return { calls, events: calls * 100 };
}

async function read(until, all) {
  const t0 = Date.now();
  const pass = async () => {
    let n = 0;
    const it = all ? c.readAll({ maxCount: events }) : c.readStream("stream-hot", { maxCount: Number.MAX_SAFE_INTEGER });
    for await (const e of it) if (e.event) n++;
    return n;
  };
  await pass(); // warm-up, not timed, as in the C generator
  until += Date.now() - t0;
  let calls = 0, n = 0;
  const t1 = process.hrtime.bigint();
  do {
    n += await pass();
    calls++;
  } while (Date.now() < until);
  return { calls, events: n, seconds: Number(process.hrtime.bigint() - t1) / 1e9 };
}

async function main() {
  const fns = { append, batch, "read-stream": (u) => read(u, false), "read-all": (u) => read(u, true) };
  if (!fns[workload]) throw new Error(`unknown workload ${workload}`);
  const r = await timed(fns[workload]);
  console.log(JSON.stringify({ workload, clients: conc, calls: r.calls, events: r.events, seconds: r.seconds,
    events_per_s: r.events / r.seconds, calls_per_s: r.calls / r.seconds, errors: 0 }));
  await c.dispose();
}
main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
