// TLS certificates reloaded on SIGHUP without dropping connections.
// Usage: node security_reload.js PORT SERVER_PID OLD_CA NEW_CA CERT KEY NEW_CERT NEW_KEY BAD_KEY
// A subscription opened under the old certificate keeps receiving after the reload; new
// connections get the new certificate (a client trusting only the new CA connects, one
// trusting only the old CA is refused); a reload with a key that does not match keeps the
// certificate in use.
"use strict";
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const fs = require("node:fs");
const es = require("@eventstore/db-client");

const [port, pid, oldCa, newCa, cert, key, newCert, newKey, badKey] = process.argv.slice(2);
const conn = (ca) =>
  es.EventStoreDBClient.connectionString(`esdb://admin:changeit@127.0.0.1:${port}?tls=true&tlsCAFile=${encodeURIComponent(ca)}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const stream = `reload-${crypto.randomUUID().slice(0, 8)}`;
const ev = (n) => es.jsonEvent({ type: "Reload", data: { n } });

async function main() {
  const before = conn(oldCa);
  const got = [];
  const sub = before.subscribeToStream(stream);
  sub.on("data", (e) => got.push(e.event.data.n));
  sub.on("error", (err) => console.error(`subscription error: ${err.message}`));
  await sleep(300);
  await before.appendToStream(stream, [ev(1)]);
  for (let i = 0; i < 50 && got.length < 1; i++) await sleep(100);
  assert.deepEqual(got, [1]);

  fs.copyFileSync(newCert, cert);
  fs.copyFileSync(newKey, key);
  process.kill(Number(pid), "SIGHUP");
  await sleep(500);
  const after = conn(newCa);
  await after.appendToStream(stream, [ev(2)]);
  for (let i = 0; i < 50 && got.length < 2; i++) await sleep(100);
  assert.deepEqual(got, [1, 2], "the subscription opened before the reload still receives");
  console.log("ok - reload: new connections get the new certificate; open ones stay up");

  const stale = conn(oldCa);
  await assert.rejects(stale.appendToStream(stream, [ev(9)]), (err) => /certificate|self.signed|unknown ca|handshake/i.test(err.message));
  await stale.dispose();
  console.log("ok - reload: a client trusting only the old CA is refused by new connections");

  fs.copyFileSync(badKey, key);
  process.kill(Number(pid), "SIGHUP");
  await sleep(500);
  const again = conn(newCa);
  await again.appendToStream(stream, [ev(3)]);
  await again.dispose();
  console.log("ok - reload with a mismatched key: the certificate in use stays");
  await sub.unsubscribe();
  await before.dispose();
  await after.dispose();
}

main()
  .then(() => process.exit(0))
  .catch((err) => {
    console.error(`FAIL: ${err.stack || err}`);
    process.exit(1);
  });
