// annal's DCB service (src/server/proto/dcb.proto) through grpc-js on stubs generated at run
// time: conditional appends (the unique username of dcb.events, a released name re-used,
// expected revisions with conditions, idempotent resends, bad input), reads and
// subscriptions by query; the ACLs of a secure server (a DCB read never returns an event
// its caller may not read); and the race of 8 processes for the last 10 seats of a course.
// Usage: node dcb.js basic PORT PROTO_DIR
//        node dcb.js secure PORT PROTO_DIR CA_FILE
//        node dcb.js race PORT PROTO_DIR ROUNDS
//        node dcb.js racer PORT PROTO_DIR COURSE CAPACITY NAME   (one racing process)
// Prints "ok - NAME" per check.
"use strict";
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const fs = require("node:fs");
const { spawn } = require("node:child_process");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const [mode, port, protoDir, arg4, arg5, arg6] = process.argv.slice(2);
const def = loader.loadSync(["dcb.proto", "serverfeatures.proto", "users.proto"], {
  includeDirs: [protoDir],
  keepCase: true,
  enums: String,
  longs: String,
  defaults: true,
  oneofs: true,
});
const root = grpc.loadPackageDefinition(def);
const addr = `127.0.0.1:${port}`;
const creds = mode === "secure" ? grpc.credentials.createSsl(fs.readFileSync(arg4)) : grpc.credentials.createInsecure();
const dcb = new root.annal.dcb.v1.Dcb(addr, creds);
const tag = crypto.randomUUID().slice(0, 8);
const ok = (name) => console.log(`ok - ${name}`);

function md(who) {
  const m = new grpc.Metadata();
  if (who) m.add("authorization", "Basic " + Buffer.from(`${who.username}:${who.password}`).toString("base64"));
  return m;
}
const appendRaw = (req, who) =>
  new Promise((res, rej) => dcb.Append(req, md(who), (err, r) => (err ? rej(err) : res(r))));
function read(req, who) {
  return new Promise((res, rej) => {
    const out = [];
    const call = dcb.Read(req, md(who));
    call.on("data", (m) => out.push(...m.events));
    call.on("error", rej);
    call.on("end", () => res(out));
  });
}
const ev = (type, tags, data = {}) => ({
  id: crypto.randomUUID(),
  type,
  data: Buffer.from(JSON.stringify(data)),
  tags,
});
const q = (...items) => ({ items });
const cond = (query, after) => (after === undefined ? { query } : { query, after: String(after) });
async function failsWith(code, promise, what) {
  try {
    await promise;
  } catch (err) {
    assert.equal(err.code, code, `${what}: ${err.message}`);
    return err;
  }
  throw new Error(`${what}: succeeded, should fail with code ${code}`);
}

// A subscription by query: collects events; resolves caughtUp() once history is sent.
function subscribe(req, who) {
  const s = { events: [], caught: false };
  let wake = null;
  s.call = dcb.Subscribe(req, md(who));
  s.checkpoints = [];
  s.call.on("data", (m) => {
    if (m.content === "event") s.events.push(m.event);
    if (m.content === "checkpoint") s.checkpoints.push(Number(m.checkpoint.after));
    if (m.content === "caught_up") s.caught = true;
    if (wake) wake();
  });
  s.call.on("error", (e) => {
    if (e.code !== grpc.status.CANCELLED) s.error = e;
    if (wake) wake();
  });
  s.until = async (pred, ms = 5000) => {
    const end = Date.now() + ms;
    while (!pred(s)) {
      if (s.error) throw s.error;
      if (Date.now() > end) throw new Error(`subscription: timed out; got ${JSON.stringify(s.events.map((e) => e.type))}`);
      await new Promise((r) => {
        wake = r;
        setTimeout(r, 50);
      });
    }
  };
  return s;
}

async function basic() {
  const features = new root.event_store.client.server_features.ServerFeatures(addr, creds);
  const fm = await new Promise((res, rej) => features.GetSupportedMethods({}, (e, r) => (e ? rej(e) : res(r))));
  const listed = fm.methods.filter((m) => m.service_name === "annal.dcb.v1.dcb").map((m) => m.method_name).sort();
  assert.deepEqual(listed, ["append", "read", "subscribe"]);
  ok("GetSupportedMethods lists the DCB service");

  // Unique username: claim only if nothing about the name came after what was read.
  const name = `username:alice-${tag}`;
  const uq = q({ types: ["UsernameClaimed", "UsernameReleased"], tags: [name] });
  const lastAbout = async () => (await read({ query: uq, backwards: true, limit: 1 })).map((e) => e.position)[0];
  assert.equal(await lastAbout(), undefined);
  const first = await appendRaw({ events: [ev("UsernameClaimed", [name])], condition: cond(uq) });
  assert.equal(first.result, "success", JSON.stringify(first));
  assert.equal(first.success.stream, "$dcb");
  const second = await appendRaw({ events: [ev("UsernameClaimed", [name])], condition: cond(uq) });
  assert.equal(second.result, "condition_failed", JSON.stringify(second));
  assert.equal(second.condition_failed.position, first.success.first_position, "the matching event's position");
  ok("a second claim of a username fails with the position of the first");
  const p1 = await lastAbout();
  assert.equal(p1, first.success.first_position);
  const rel = await appendRaw({ events: [ev("UsernameReleased", [name])], condition: cond(uq, p1) });
  assert.equal(rel.result, "success");
  const stale = await appendRaw({ events: [ev("UsernameClaimed", [name])], condition: cond(uq, p1) });
  assert.equal(stale.result, "condition_failed");
  assert.equal(stale.condition_failed.position, rel.success.first_position);
  const again = await appendRaw({ events: [ev("UsernameClaimed", [name])], condition: cond(uq, await lastAbout()) });
  assert.equal(again.result, "success", JSON.stringify(again));
  ok("a released username is claimed again; a claim on a stale read is refused");

  // Idempotence: a resend of the same ids returns the first result (no second event).
  const once = ev("InvoiceNumbered", [`invoice:${tag}`]);
  const iq = q({ types: ["InvoiceNumbered"], tags: [`invoice:${tag}`] });
  const a1 = await appendRaw({ events: [once], condition: cond(iq) });
  const a2 = await appendRaw({ events: [once], condition: cond(iq) });
  assert.equal(a1.result, "success");
  assert.equal(a2.result, "success");
  assert.equal(a2.success.idempotent, true);
  assert.equal(a2.success.first_position, a1.success.first_position);
  assert.equal((await read({ query: iq })).length, 1);
  ok("a resend with the same event ids is idempotent");

  // A named stream with an expected revision and a condition: both must hold.
  const stream = `course-${tag}`;
  const cq = q({ types: ["SeatBooked"], tags: [`course:${tag}`] });
  const b1 = await appendRaw({ stream, expected_state: "NO_STREAM", events: [ev("SeatBooked", [`course:${tag}`, "student:s1"])], condition: cond(cq) });
  assert.equal(b1.result, "success", JSON.stringify(b1));
  assert.equal(b1.success.stream, stream);
  assert.equal(b1.success.revision, "0");
  const wrong = await appendRaw({ stream, expected_revision: "5", events: [ev("SeatBooked", [`course:${tag}`])] });
  assert.equal(wrong.result, "wrong_expected_revision");
  assert.equal(wrong.wrong_expected_revision.actual_revision, "0");
  const both = await appendRaw({ stream, expected_revision: "5", events: [ev("SeatBooked", [`course:${tag}`])], condition: cond(cq) });
  assert.equal(both.result, "condition_failed");
  assert.equal(both.condition_failed.position, b1.success.first_position);
  assert.equal(both.condition_failed.wrong_expected_revision.actual_revision, "0");
  ok("expected revisions and conditions together; both failures reported");

  // Bad input.
  await failsWith(grpc.status.INVALID_ARGUMENT, appendRaw({ events: [ev("X", Array.from({ length: 33 }, (_, i) => `t${i}`))] }), "33 tags");
  await failsWith(grpc.status.INVALID_ARGUMENT, appendRaw({ events: [ev("X", ["a", "a"])] }), "a repeated tag");
  await failsWith(grpc.status.INVALID_ARGUMENT, appendRaw({ events: [{ ...ev("X", []), id: "nope" }] }), "a bad id");
  await failsWith(grpc.status.INVALID_ARGUMENT, appendRaw({ stream: "$users", events: [ev("X", [])] }), "a system stream");
  await failsWith(grpc.status.INVALID_ARGUMENT, read({ query: q({ types: Array.from({ length: 65 }, (_, i) => `T${i}`) }) }), "65 types");
  ok("too many tags, repeated tags, bad ids, system streams, oversized queries are INVALID_ARGUMENT");

  // Reads: tags all-of, types any-of, items OR'd, after, limit, backwards.
  const seats = await read({ query: q({ tags: [`course:${tag}`, "student:s1"] }) });
  assert.equal(seats.length, 1);
  assert.deepEqual(seats[0].tags, [`course:${tag}`, "student:s1"]);
  assert.equal(seats[0].stream, stream);
  assert.deepEqual(JSON.parse(seats[0].data.toString()), {});
  const mixed = await read({ query: q({ tags: [name] }, { tags: [`invoice:${tag}`] }) });
  assert.deepEqual(mixed.map((e) => e.type), ["UsernameClaimed", "UsernameReleased", "UsernameClaimed", "InvoiceNumbered"]);
  const positions = mixed.map((e) => Number(e.position));
  assert.deepEqual(positions, [...positions].sort((a, b) => a - b));
  const after = await read({ query: q({ tags: [name] }, { tags: [`invoice:${tag}`] }), after: String(positions[1]), limit: 1 });
  assert.deepEqual(after.map((e) => Number(e.position)), [positions[2]]);
  const back = await read({ query: q({ tags: [name] }), backwards: true, after: String(positions[0]) });
  assert.deepEqual(back.map((e) => Number(e.position)), [positions[2], positions[1]]);
  ok("reads by query: tags all-of, items OR'd, after, limit, backwards");

  // Reads come in batches (of 128 events, or 1 MiB): many events, in order, each once.
  const many = `many:${tag}`;
  const batch = Array.from({ length: 300 }, (_, i) => ev("Many", [many], { i }));
  batch.push(...Array.from({ length: 3 }, (_, i) => ({ ...ev("Big", [many]), data: Buffer.alloc(700 << 10, 65 + i) })));
  assert.equal((await appendRaw({ events: batch })).result, "success");
  const msgs = await new Promise((res, rej) => {
    const out = [];
    const call = dcb.Read({ query: q({ tags: [many] }) });
    call.on("data", (m) => out.push(m.events));
    call.on("error", rej);
    call.on("end", () => res(out));
  });
  const got = msgs.flat();
  assert.equal(got.length, 303);
  assert.deepEqual(got.slice(0, 300).map((e) => JSON.parse(e.data.toString()).i), [...Array(300).keys()]);
  assert.deepEqual(got.slice(300).map((e) => e.data.length), [700 << 10, 700 << 10, 700 << 10]);
  assert.equal(got[302].data[0], 67);
  assert.ok(msgs.length >= 5 && msgs.every((m) => m.length <= 128), `batches: ${msgs.map((m) => m.length)}`);
  const limited = await read({ query: q({ tags: [many] }), limit: 200 });
  assert.deepEqual(limited.map((e) => e.position), got.slice(0, 200).map((e) => e.position));
  const tail = await read({ query: q({ tags: [many] }), backwards: true, after: got[149].position });
  assert.deepEqual(tail.map((e) => e.position), got.slice(150).map((e) => e.position).reverse());
  ok("reads in batches: 303 events (3 of 700 KiB) in order, limit and backwards across batches");

  // Subscribe: history, caught up, then only the matching live events.
  const sq = q({ types: ["SeatBooked"], tags: [`course:${tag}`] });
  const sub = subscribe({ query: sq });
  await sub.until((s) => s.caught);
  assert.equal(sub.events.length, 1);
  await appendRaw({ events: [ev("SeatBooked", [`course:other-${tag}`])] });
  await appendRaw({ events: [ev("SeatCancelled", [`course:${tag}`])] });
  const live = await appendRaw({ events: [ev("SeatBooked", [`course:${tag}`, "student:s2"])] });
  await sub.until((s) => s.events.length === 2);
  assert.equal(sub.events[1].position, live.success.first_position);
  assert.deepEqual(sub.events[1].tags, [`course:${tag}`, "student:s2"]);
  const from = subscribe({ query: sq, after: b1.success.first_position });
  await from.until((s) => s.caught && s.events.length === 1);
  assert.equal(from.events[0].position, live.success.first_position);
  sub.call.cancel();
  from.call.cancel();
  ok("subscriptions by query: history, caught up, live matching events only, from a position");

  // Checkpoints: a subscription whose query matches none of 1,100 events still learns
  // where to resume from, without any event. (Caught up from history: the store does not
  // yet produce checkpoints over live events a query skips; see dcb-api.md.)
  const filler = await appendRaw({ events: Array.from({ length: 1100 }, () => ev("Filler", [`filler:${tag}`])) });
  const lastPos = Number(filler.success.first_position) + 1099;
  const none = subscribe({ query: q({ tags: [`none:${tag}`] }), after: String(Number(filler.success.first_position) - 1) });
  await none.until((s) => s.caught && s.checkpoints.some((p) => p >= lastPos)).catch((e) => {
    throw new Error(`${e.message}; checkpoints ${none.checkpoints}, last ${lastPos}`);
  });
  assert.equal(none.events.length, 0);
  assert.ok(none.checkpoints.every((p) => p <= lastPos), `checkpoints ${none.checkpoints}`);
  none.call.cancel();
  ok("a subscription by query gets checkpoints over events it does not match");
}

// ---- Security: users alice (no groups) and the admin.
async function secure() {
  const ADMIN = { username: "admin", password: "changeit" };
  const ALICE = { username: "alice", password: "alice-Secret-1" };
  const users = new root.event_store.client.users.Users(addr, creds);
  await new Promise((res, rej) =>
    users.Create({ options: { login_name: "alice", password: ALICE.password, full_name: "Alice", groups: [] } }, md(ADMIN), (e, r) => (e ? rej(e) : res(r))));
  const k = `k:${tag}`;
  const secret = `secret-${tag}`, pub = `public-${tag}`;
  // The secret stream's ACL: admins only ($r, $w), through annal's own metadata event.
  const acl = { $acl: { $r: "$admins", $w: "$admins" } };
  const streams = new (grpc.loadPackageDefinition(loader.loadSync(["streams.proto"], { includeDirs: [protoDir], keepCase: true, longs: String, defaults: true, oneofs: true })).event_store.client.streams.Streams)(addr, creds);
  await new Promise((res, rej) => {
    const call = streams.Append(md(ADMIN), (e, r) => (e ? rej(e) : res(r)));
    call.write({ options: { stream_identifier: { stream_name: Buffer.from(`$$${secret}`) }, any: {} } });
    call.write({ proposed_message: { id: { string: crypto.randomUUID() }, metadata: { type: "$metadata", "content-type": "application/json" }, data: Buffer.from(JSON.stringify(acl)) } });
    call.end();
  });
  const s = await appendRaw({ stream: secret, events: [ev("Secret", [k])] }, ADMIN);
  assert.equal(s.result, "success");
  await appendRaw({ stream: pub, events: [ev("Public", [k])] }, ADMIN);
  const mine = await appendRaw({ events: [ev("Mine", [k])], condition: cond(q({ types: ["Mine"], tags: [k] })) }, ALICE);
  assert.equal(mine.result, "success", "alice may append to $dcb");
  ok("a user appends to $dcb (a user stream for ACLs); the admin to a stream only admins may read");

  const seen = await read({ query: q({ tags: [k] }) }, ALICE);
  assert.deepEqual(seen.map((e) => e.type), ["Public", "Mine"], "alice does not read the secret event");
  const all = await read({ query: q({ tags: [k] }) }, ADMIN);
  assert.deepEqual(all.map((e) => e.type), ["Secret", "Public", "Mine"]);
  ok("a DCB read returns only the events the caller may read");

  const sub = subscribe({ query: q({ tags: [k] }) }, ALICE);
  await sub.until((x) => x.caught);
  await appendRaw({ stream: secret, events: [ev("Secret2", [k])] }, ADMIN);
  await appendRaw({ stream: pub, events: [ev("Public2", [k])] }, ADMIN);
  await sub.until((x) => x.events.length === 3);
  assert.deepEqual(sub.events.map((e) => e.type), ["Public", "Mine", "Public2"]);
  sub.call.cancel();
  ok("a DCB subscription skips the events the caller may not read, history and live");

  await failsWith(grpc.status.PERMISSION_DENIED, appendRaw({ stream: secret, events: [ev("X", [k])] }, ALICE), "alice appends to the secret stream");
  await failsWith(grpc.status.UNAUTHENTICATED, read({ query: q({ tags: [k] }) }), "anonymous read");
  await failsWith(grpc.status.UNAUTHENTICATED, appendRaw({ events: [ev("X", [k])] }), "anonymous append");
  assert.equal((await read({ query: q({ tags: [k] }) }, ADMIN)).length, 5, "nothing was written by the refused appends");
  ok("appends need $w on their stream; anonymous calls are refused");
}

// ---- The race: 8 processes book the last 10 seats of a course, round after round.
const CAPACITY = 30;
// One racing process. With DCB_ACK_LOG=1 it prints each acknowledged booking at once
// ({"ack": position, "student": ...}) and stops quietly when the server goes away (the
// kill -9 check of dcb_server_test.sh); its last line is always {won, lost}.
async function racer(course, capacity, who) {
  const cq = q({ types: ["SeatBooked"], tags: [`course:${course}`] });
  const log = process.env.DCB_ACK_LOG === "1";
  let won = 0, lost = 0, gone = false;
  for (let i = 0; ; i++) {
    try {
      const booked = await read({ query: cq });
      if (booked.length >= capacity) break; // the decision: the course is full
      const after = booked.length ? booked[booked.length - 1].position : undefined;
      const student = `student:${who}-${i}`;
      const r = await appendRaw({ events: [ev("SeatBooked", [`course:${course}`, student])], condition: cond(cq, after) });
      if (r.result === "success") {
        won++;
        if (log) fs.writeSync(1, JSON.stringify({ ack: r.success.first_position, student }) + "\n");
      } else if (r.result === "condition_failed") lost++;
      else throw new Error(JSON.stringify(r));
    } catch (err) {
      if (!log || err.code === undefined) throw err;
      gone = true; // the server was killed: what was acknowledged is on record above
      break;
    }
  }
  fs.writeSync(1, JSON.stringify({ won, lost, gone }) + "\n");
}

function runRacer(course, name) {
  return new Promise((res, rej) => {
    const p = spawn(process.execPath, [__filename, "racer", port, protoDir, course, String(CAPACITY), name], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    p.on("exit", (code) => (code === 0 ? res(JSON.parse(out.trim().split("\n").pop())) : rej(new Error(`racer ${name} exited ${code}`))));
  });
}

async function race(rounds) {
  let totalLost = 0;
  for (let r = 0; r < rounds; r++) {
    const course = `c${r}-${tag}`;
    // All but the last 10 seats are taken already.
    const pre = Array.from({ length: CAPACITY - 10 }, (_, i) => ev("SeatBooked", [`course:${course}`, `student:pre${i}`]));
    assert.equal((await appendRaw({ events: pre })).result, "success");
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => runRacer(course, `p${i}`)));
    const won = results.reduce((n, x) => n + x.won, 0);
    totalLost += results.reduce((n, x) => n + x.lost, 0);
    const booked = await read({ query: q({ types: ["SeatBooked"], tags: [`course:${course}`] }) });
    assert.equal(won, 10, `round ${r}: ${won} bookings succeeded, want exactly the 10 free seats`);
    assert.equal(booked.length, CAPACITY, `round ${r}: ${booked.length} seats booked, capacity ${CAPACITY}`);
  }
  ok(`race: ${rounds} rounds of 8 processes for the last 10 seats: exactly 10 won each round (${totalLost} refused by the condition)`);
}

async function main() {
  if (mode === "basic") await basic();
  else if (mode === "secure") await secure();
  else if (mode === "race") await race(Number(arg4));
  else if (mode === "racer") await racer(arg4, Number(arg5), arg6);
  else throw new Error(`unknown mode ${mode}`);
  dcb.close();
}
main().then(
  () => process.exit(0),
  (e) => {
    console.error(e.stack || e);
    process.exit(1);
  },
);
