// annal serve over TLS through an official Node.js client, unchanged.
// Usage: node tls_clients.js kurrent|eventstore PORT CA_FILE [wrong-ca]
// Appends two events and reads them back (the kurrent client reads over its Rust stack);
// with wrong-ca, the append must fail with a certificate error. Exits non-zero on failure.
"use strict";
const assert = require("node:assert/strict");
const crypto = require("node:crypto");

const [flavour, port, ca, mode] = process.argv.slice(2);
const lib =
  flavour === "kurrent" ? require("@kurrent/kurrentdb-client") : require("@eventstore/db-client");
const Client = lib.KurrentDBClient || lib.EventStoreDBClient;
const scheme = flavour === "kurrent" ? "kurrentdb" : "esdb";
const client = Client.connectionString(
  `${scheme}://admin:changeit@127.0.0.1:${port}?tls=true&tlsCAFile=${encodeURIComponent(ca)}`
);
const stream = `tls_${flavour}-${crypto.randomUUID().slice(0, 8)}`;

async function main() {
  const events = [0, 1].map((n) => lib.jsonEvent({ type: "Tls", data: { n } }));
  if (mode === "wrong-ca") {
    try {
      await client.appendToStream(stream, events);
    } catch (err) {
      console.log(`refused: ${err.message}`);
      return;
    }
    assert.fail("appended over TLS with an untrusted server certificate");
  }
  const r = await client.appendToStream(stream, events);
  assert.equal(r.nextExpectedRevision, 1n);
  const read = [];
  for await (const e of client.readStream(stream)) read.push(e.event.data.n);
  assert.deepEqual(read, [0, 1]);
  console.log(`ok - ${flavour}: appended and read ${stream} over TLS`);
}

main()
  .then(() => client.dispose().then(() => process.exit(0)))
  .catch((err) => {
    console.error(`FAIL ${flavour}: ${err.stack || err}`);
    process.exit(1);
  });
