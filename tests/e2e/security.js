// annal serve's security through the official Node.js clients over TLS (grpc-js sends no
// credentials on insecure channels): users (the Users service, on grpc-js stubs from
// annal's own users.proto), authentication (Basic, a wrong password, a disabled user, a
// client certificate), stream ACLs and their changes, system streams, `$settings`
// defaults, `$all` reads and subscriptions filtered per event.
// Usage: node security.js PORT CA_FILE USER_CERT_DIR PROTO_DIR. Prints "ok - NAME" per check.
"use strict";
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");
const es = require("@eventstore/db-client");
const ku = require("@kurrent/kurrentdb-client");

const [port, caFile, certDir, protoDir] = process.argv.slice(2);
const tls = `tls=true&tlsCAFile=${encodeURIComponent(caFile)}`;
const client = es.EventStoreDBClient.connectionString(`esdb://127.0.0.1:${port}?${tls}`);
const kclient = ku.KurrentDBClient.connectionString(`kurrentdb://127.0.0.1:${port}?${tls}`);
const tag = crypto.randomUUID().slice(0, 8);
const ADMIN = { username: "admin", password: "changeit" };
const ALICE = { username: "alice", password: "alice-Secret-1" };
const BOB = { username: "bob", password: "bob-Secret-2" };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ev = (type, data) => es.jsonEvent({ type, data });

function ok(name) {
  console.log(`ok - ${name}`);
}

// The Users service on stubs generated from src/server/proto/users.proto.
const def = loader.loadSync(["users.proto"], { includeDirs: [protoDir], keepCase: true, longs: String, defaults: true });
const usersPkg = grpc.loadPackageDefinition(def).event_store.client.users;
const users = new usersPkg.Users(`127.0.0.1:${port}`, grpc.credentials.createSsl(fs.readFileSync(caFile)));
function md(who) {
  const m = new grpc.Metadata();
  if (who) m.add("authorization", "Basic " + Buffer.from(`${who.username}:${who.password}`).toString("base64"));
  return m;
}
const unary = (method, req, who) =>
  new Promise((res, rej) => users[method](req, md(who), (err, r) => (err ? rej(err) : res(r))));
function details(who, login_name = "") {
  return new Promise((res, rej) => {
    const out = [];
    const call = users.Details({ options: { login_name } }, md(who));
    call.on("data", (d) => out.push(d.user_details));
    call.on("error", rej);
    call.on("end", () => res(out));
  });
}
function trailer(err, key) {
  const v = err.metadata && err.metadata.get(key);
  return v && v.length ? v[0].toString() : undefined;
}

// Expect promise to fail as access denied (PERMISSION_DENIED / access-denied) or, with
// unauthenticated, UNAUTHENTICATED; both raise the clients' AccessDeniedError.
async function denied(what, promise, unauthenticated = false) {
  try {
    await promise;
  } catch (err) {
    const code = err.code ?? err.cause?.code;
    if (err.type === "access-denied" || code === 7 || code === 16 || /access denied|permission|unauthenticated|credentials/i.test(err.message)) {
      if (unauthenticated && err.type === "access-denied" && err.cause) assert.equal(err.cause.code, 16, `${what}: ${err.message}`);
      return err;
    }
    throw new Error(`${what}: failed, but not as access denied: ${err.stack || err}`);
  }
  throw new Error(`${what}: allowed, but should be denied`);
}

async function readAll(stream, credentials, c = client) {
  const out = [];
  for await (const e of c.readStream(stream, { credentials })) out.push(e.event);
  return out;
}

async function main() {
  const pub = `public_${tag}`, secret = `secret_${tag}`, shared = `shared_${tag}`;

  // --- admin and anonymous
  await client.appendToStream(pub, [ev("Pub", { n: 0 })], { credentials: ADMIN });
  assert.equal((await readAll(pub, ADMIN)).length, 1);
  ok("admin (its password from the environment) appends and reads");
  // Without credentials the clients append through BatchAppend: denied in-band per batch.
  // (kclient: with both clients loaded in one process, the es client's BatchAppend
  // messages no longer serialize, the two share google-protobuf's global classes.)
  await denied("anonymous append", kclient.appendToStream(pub, [ku.jsonEvent({ type: "Pub", data: {} })]), true);
  await denied("anonymous read", readAll(pub, undefined), true);
  ok("anonymous calls refused (UNAUTHENTICATED)");

  // --- users
  await unary("Create", { options: { login_name: "alice", password: ALICE.password, full_name: "Alice A", groups: ["readers"] } }, ADMIN);
  await unary("Create", { options: { login_name: "bob", password: BOB.password, full_name: "Bob B", groups: [] } }, ADMIN);
  await assert.rejects(unary("Create", { options: { login_name: "bob", password: "x", full_name: "", groups: [] } }, ADMIN), (err) => {
    assert.equal(trailer(err, "exception"), "user-conflict");
    assert.equal(trailer(err, "login-name"), "bob");
    return true;
  });
  await assert.rejects(details(ADMIN, "nobody"), (err) => trailer(err, "exception") === "user-not-found" && trailer(err, "login-name") === "nobody");
  const all = await details(ADMIN);
  const names = all.map((u) => u.login_name);
  for (const n of ["admin", "ops", "alice", "bob"]) assert.ok(names.includes(n), `details lists ${n}: ${names}`);
  const a = all.find((u) => u.login_name === "alice");
  assert.deepEqual([a.full_name, a.groups, a.disabled], ["Alice A", ["readers"], false]);
  assert.ok(BigInt(a.last_updated.ticks_since_epoch) > 0n);
  assert.ok(!JSON.stringify(all).includes("argon2"), "no hash in details");
  ok("Users: Create, user-conflict, user-not-found, Details (no hashes)");
  await denied("bob creates a user", unary("Create", { options: { login_name: "eve", password: "e", full_name: "", groups: [] } }, BOB));
  await denied("bob lists users", details(BOB));
  assert.equal((await details(BOB, "bob"))[0].login_name, "bob");
  ok("Users: only admins manage users; a user sees itself");

  // --- a wrong password, then the lock-out
  // Right after a failure the right password is refused too (locked out for 250 ms, then
  // doubling). A loaded machine may delay the second call past the lock-out: then try
  // again (each failure doubles it), and only a quick second call must be refused.
  let lockedOut = false, failures = 0;
  for (; failures < 5 && !lockedOut; failures++) {
    await denied("wrong password", client.appendToStream(pub, [ev("Pub", {})], { credentials: { username: "bob", password: "wrong" } }), true);
    const t0 = Date.now();
    const refusal = await readAll(pub, BOB).then(() => null, (err) => err);
    if (refusal) {
      assert.match(refusal.message, /too many failed logins/, "refused while locked out");
      lockedOut = true;
    } else {
      assert.ok(Date.now() - t0 > 150, "the right password right after a failure was accepted");
    }
  }
  assert.ok(lockedOut, "never locked out");
  await sleep(300 * 2 ** (failures - 1)); // past the lock-out: 250 ms doubled per failure
  assert.equal((await readAll(pub, BOB)).length, 1);
  ok("wrong password refused; the user is locked out for a while, then logs in");

  // --- stream ACLs
  await client.appendToStream(secret, [ev("Secret", { n: 0 })], { credentials: ADMIN });
  await client.setStreamMetadata(secret, { acl: { readRoles: ["alice"], writeRoles: "alice", deleteRoles: "alice", metaReadRoles: "alice", metaWriteRoles: "alice" } }, { credentials: ADMIN });
  await denied("bob reads", readAll(secret, BOB));
  await denied("bob reads (kurrent client, Rust reader)", readAll(secret, BOB, kclient));
  await denied("bob appends", client.appendToStream(secret, [ev("Secret", {})], { credentials: BOB }));
  await denied("bob reads metadata", client.getStreamMetadata(secret, { credentials: BOB }));
  await denied("bob writes metadata", client.setStreamMetadata(secret, { maxCount: 1 }, { credentials: BOB }));
  await denied("bob deletes", client.deleteStream(secret, { credentials: BOB }));
  await denied("bob tombstones", client.tombstoneStream(secret, { credentials: BOB }));
  await denied("bob subscribes", new Promise((res, rej) => {
    const sub = client.subscribeToStream(secret, { credentials: BOB });
    sub.on("error", rej);
    sub.on("data", () => res());
  }));
  ok("ACL: read, append, metadata read/write, delete, tombstone, subscribe denied without the right");
  await client.appendToStream(secret, [ev("Secret", { n: 1 })], { credentials: ALICE });
  assert.equal((await readAll(secret, ALICE)).length, 2);
  assert.equal((await readAll(secret, ALICE, kclient)).length, 2);
  assert.deepEqual((await client.getStreamMetadata(secret, { credentials: ALICE })).metadata.acl.readRoles, ["alice"]);
  ok("ACL: allowed with the right (by user name)");

  // ACL by role, and a change that takes effect on the next call
  await client.appendToStream(shared, [ev("Shared", {})], { credentials: ADMIN });
  await client.setStreamMetadata(shared, { acl: { readRoles: ["readers"], writeRoles: ["$admins"] } }, { credentials: ADMIN });
  assert.equal((await readAll(shared, ALICE)).length, 1);
  await denied("bob reads shared", readAll(shared, BOB));
  await denied("alice writes shared", client.appendToStream(shared, [ev("Shared", {})], { credentials: ALICE }));
  await client.setStreamMetadata(shared, { acl: { readRoles: ["readers", "bob"], writeRoles: "$all" } }, { credentials: ADMIN });
  assert.equal((await readAll(shared, BOB)).length, 1);
  await client.appendToStream(shared, [ev("Shared", {})], { credentials: ALICE });
  ok("ACL: roles; a changed ACL applies on the next call");

  // --- system streams and $settings
  await denied("bob reads $users", readAll("$users", BOB));
  await denied("bob writes $settings", client.appendToStream("$settings", [ev("update-default-acl", {})], { credentials: BOB }));
  assert.ok((await readAll("$users", ADMIN)).length >= 4);
  ok("system streams: admins only by default");
  await client.appendToStream("$settings", [ev("update-default-acl", { $userStreamAcl: { $r: "$admins", $w: "$admins" }, $systemStreamAcl: { $r: ["$admins", "bob"] } })], { credentials: ADMIN });
  await denied("bob reads a stream without ACL under $settings", readAll(pub, BOB));
  await denied("bob appends under $settings", client.appendToStream(pub, [ev("Pub", {})], { credentials: BOB }));
  assert.ok((await readAll("$users", BOB)).length >= 4);
  assert.equal((await readAll(shared, BOB)).length, 2); // its own $acl wins
  await client.appendToStream("$settings", [ev("update-default-acl", { $userStreamAcl: { $r: "$all", $w: "$all", $d: "$all", $mr: "$all", $mw: "$all" } })], { credentials: ADMIN });
  assert.equal((await readAll(pub, BOB)).length, 1);
  await denied("bob reads $users again", readAll("$users", BOB));
  ok("$settings: $userStreamAcl and $systemStreamAcl defaults, changes apply on the next call");

  // --- $all reads and subscriptions filtered per event
  const seen = [];
  for await (const e of client.readAll({ credentials: BOB })) seen.push(e.event.streamId);
  assert.ok(seen.includes(pub), "bob sees public events in $all");
  assert.ok(!seen.includes(secret), "bob sees no secret event in $all");
  // System streams are for admins; `$$<stream>` (metadata) goes with the stream's $mr.
  const sys = seen.filter((s) => s.startsWith("$") && s !== `$$${shared}` && s !== `$$${pub}`);
  assert.deepEqual(sys, [], "bob sees no system event in $all");
  assert.ok(!seen.includes(`$$${secret}`), "bob sees no metadata of the secret stream");
  const aseen = [];
  for await (const e of client.readAll({ credentials: ALICE })) aseen.push(e.event.streamId);
  assert.ok(aseen.includes(secret) && aseen.includes(pub));
  ok("$all reads: each event filtered by its stream's ACL");
  const got = [];
  const sub = client.subscribeToAll({ fromPosition: es.END, credentials: BOB });
  const done = new Promise((res, rej) => {
    sub.on("data", (e) => {
      if (!e.event) return;
      got.push(e.event.streamId);
      if (e.event.streamId === pub) res();
    });
    sub.on("error", rej);
  });
  await sleep(500);
  await client.appendToStream(secret, [ev("Secret", { live: true })], { credentials: ADMIN });
  await client.appendToStream(pub, [ev("Pub", { live: true })], { credentials: ADMIN });
  await Promise.race([done, sleep(10000).then(() => { throw new Error(`no live event: ${got}`); })]);
  await sub.unsubscribe();
  assert.deepEqual(got, [pub], `bob's $all subscription delivered ${got}`);
  ok("$all subscription never delivers an event its user may not read");

  // --- a stream subscription ends when its user loses the right to read
  const revoked = new Promise((res, rej) => {
    const s = client.subscribeToStream(shared, { fromRevision: es.END, credentials: BOB });
    s.on("data", (e) => rej(new Error(`delivered after the ACL change: ${JSON.stringify(e.event && e.event.data)}`)));
    s.on("error", (err) => res(err));
  });
  await sleep(500);
  await client.setStreamMetadata(shared, { acl: { readRoles: ["readers"], writeRoles: "$all" } }, { credentials: ADMIN });
  await client.appendToStream(shared, [ev("Shared", { after: true })], { credentials: ADMIN });
  const revokedErr = await Promise.race([revoked, sleep(10000).then(() => null)]);
  assert.ok(revokedErr && revokedErr.type === "access-denied", `subscription after revocation: ${revokedErr && revokedErr.message}`);
  ok("a stream subscription ends (access denied) when its user loses the right to read");

  // --- disabled users and the credential cache
  assert.equal((await readAll(pub, BOB)).length, 2); // cached now
  await unary("Disable", { options: { login_name: "bob" } }, ADMIN);
  await denied("disabled bob", readAll(pub, BOB), true);
  await sleep(700);
  await unary("Enable", { options: { login_name: "bob" } }, ADMIN);
  await sleep(1200);
  assert.equal((await readAll(pub, BOB)).length, 2);
  ok("a disabled user is refused at once (cache dropped), enabled again works");

  // --- passwords
  await unary("ChangePassword", { options: { login_name: "alice", current_password: ALICE.password, new_password: "alice-New-3" } }, ALICE);
  await denied("old password", readAll(pub, ALICE), true);
  await sleep(700);
  const ALICE2 = { username: "alice", password: "alice-New-3" };
  assert.equal((await readAll(pub, ALICE2)).length, 2);
  await denied("bob changes alice's password", unary("ChangePassword", { options: { login_name: "alice", current_password: "alice-New-3", new_password: "x" } }, BOB));
  await unary("ResetPassword", { options: { login_name: "alice", new_password: ALICE.password } }, ADMIN);
  assert.equal((await readAll(pub, ALICE)).length, 2);
  await unary("Update", { options: { login_name: "bob", password: "", full_name: "Robert", groups: ["readers"] } }, ADMIN);
  assert.deepEqual((await details(ADMIN, "bob"))[0].groups, ["readers"]);
  ok("ChangePassword (own, with the current one), ResetPassword, Update");

  // --- mutual TLS: the certificate's CN is the user
  const certClient = es.EventStoreDBClient.connectionString(
    `esdb://127.0.0.1:${port}?${tls}&userCertFile=${encodeURIComponent(path.join(certDir, "user-alice.crt"))}&userKeyFile=${encodeURIComponent(path.join(certDir, "user-alice.key"))}`
  );
  assert.equal((await readAll(secret, undefined, certClient)).length, 3);
  await denied("alice by certificate reads $users", readAll("$users", undefined, certClient));
  const nobodyClient = es.EventStoreDBClient.connectionString(
    `esdb://127.0.0.1:${port}?${tls}&userCertFile=${encodeURIComponent(path.join(certDir, "user-mallory.crt"))}&userKeyFile=${encodeURIComponent(path.join(certDir, "user-mallory.key"))}`
  );
  await denied("certificate of an unknown user", readAll(pub, undefined, nobodyClient), true);
  await certClient.dispose();
  await nobodyClient.dispose();
  ok("client certificates: the CN acts as that user; unknown users refused");

  // --- operations (scavenge, shutdown) are for $ops and $admins: checked before the method
  const raw = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createSsl(fs.readFileSync(caFile)));
  const call = (p, who) =>
    new Promise((res) => raw.makeUnaryRequest(p, (x) => x, (x) => x, Buffer.alloc(0), md(who), (err) => res(err ? err.code : 0)));
  const OPS = { username: "ops", password: "ops-Secret-9" };
  const shutdown = "/event_store.client.operations.Operations/Shutdown";
  assert.equal(await call(shutdown, ALICE), grpc.status.PERMISSION_DENIED);
  // (StopScavenge, harmless, where the Operations service exists: past the check either way.)
  const stop = "/event_store.client.operations.Operations/StopScavenge";
  assert.equal(await call(stop, ALICE), grpc.status.PERMISSION_DENIED);
  const opsCode = await call(stop, OPS);
  assert.ok(![grpc.status.PERMISSION_DENIED, grpc.status.UNAUTHENTICATED].includes(opsCode), `ops: ${opsCode}`);
  raw.close();
  assert.equal((await readAll(pub, OPS)).length, 2);
  ok("operations: refused to a user, let through for ops (password from KURRENTDB_DEFAULT_OPS_PASSWORD)");

  // --- deleted users
  await unary("Delete", { options: { login_name: "bob" } }, ADMIN);
  await denied("deleted bob", readAll(pub, BOB), true);
  await sleep(700); // the failed login locks the address out for a moment
  await assert.rejects(details(ADMIN, "bob"), (err) => trailer(err, "exception") === "user-not-found");
  ok("a deleted user is refused and not found");
}

main()
  .then(async () => {
    await client.dispose();
    await kclient.dispose();
    users.close();
    process.exit(0);
  })
  .catch((err) => {
    console.error(`FAIL: ${err.stack || err}`);
    process.exit(1);
  });
