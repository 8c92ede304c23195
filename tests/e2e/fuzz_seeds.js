// Writes the seed corpora of the server's request fuzz targets (fuzz/corpus/srv_*) from
// requests like those the clients send. Usage: node fuzz_seeds.js PROTO_DIR CORPUS_DIR
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const protobuf = require("protobufjs");

const [protoDir, out] = process.argv.slice(2);
const root = new protobuf.Root();
root.resolvePath = (_origin, target) => path.join(protoDir, target);
root.loadSync(["streams.proto", "operations.proto", "monitoring.proto", "projections.proto"],
  { keepCase: true });
const T = (n) => root.lookupType(n.includes(".") ? n : `event_store.client.streams.${n}`);
const sid = (s) => ({ stream_name: Buffer.from(s) });
const uuid = { string: "4b2c1c0e-5a54-4b8e-9d2f-1f1b8f0d2a11" };
const structured = { structured: { most_significant_bits: "123456789", least_significant_bits: "-42" } };
function write(dir, name, type, obj) {
  fs.mkdirSync(path.join(out, dir), { recursive: true });
  const t = T(type);
  fs.writeFileSync(path.join(out, dir, `${name}.bin`), t.encode(t.fromObject(obj)).finish());
}
const filt = (f) => ({ ...f, max: 32, checkpointIntervalMultiplier: 3 });
const read = (name, options) => write("srv_read", name, "ReadReq", { options });
read("stream-fwd", { stream: { stream_identifier: sid("orders-1"), start: {} }, read_direction: 0, count: 10, no_filter: {}, uuid_option: { string: {} } });
read("stream-back-end", { stream: { stream_identifier: sid("orders-1"), end: {} }, read_direction: 1, count: 2, no_filter: {}, uuid_option: { structured: {} } });
read("stream-rev", { stream: { stream_identifier: sid("o"), revision: 5 }, count: 1, no_filter: {} });
read("all-pos", { all: { position: { commit_position: 7, prepare_position: 7 } }, read_direction: 1, count: 5, no_filter: {} });
read("all-prefix", { all: { start: {} }, count: 2, filter: filt({ stream_identifier: { prefix: ["a-", "b.c(", "x|y"] } }) });
read("all-regex", { all: { end: {} }, subscription: {}, filter: filt({ event_type: { regex: "^T[0-9]+$" } }) });
read("sub-stream", { stream: { stream_identifier: sid("s"), revision: 3 }, subscription: {}, no_filter: {} });
read("sub-all-pos", { all: { position: { commit_position: 1, prepare_position: 1 } }, subscription: {}, filter: filt({ stream_identifier: { prefix: ["p"] } }) });
const proposed = (type) => ({ id: uuid, metadata: { type, "content-type": "application/json" }, data: Buffer.from('{"a":1}'), custom_metadata: Buffer.from("{}") });
write("srv_append", "options-any", "AppendReq", { options: { stream_identifier: sid("orders-1"), any: {} } });
write("srv_append", "options-rev", "AppendReq", { options: { stream_identifier: sid("$$orders-1"), revision: 4 } });
write("srv_append", "event", "AppendReq", { proposed_message: proposed("Placed") });
write("srv_append", "event-structured", "AppendReq", { proposed_message: { ...proposed("X"), id: structured } });
const batch = (name, o) => write("srv_batch", name, "BatchAppendReq", o);
batch("first", { correlation_id: uuid, options: { stream_identifier: sid("orders-1"), no_stream: {}, deadline_21_10_0: { seconds: 1900000000, nanos: 5 } }, proposed_messages: [proposed("A"), proposed("B")], is_final: false });
batch("final", { correlation_id: uuid, proposed_messages: [proposed("C")], is_final: true });
batch("duration", { correlation_id: structured, options: { stream_identifier: sid("s"), stream_position: 9, deadline: { seconds: 10, nanos: 0 } }, proposed_messages: [], is_final: true });
batch("exists", { correlation_id: uuid, options: { stream_identifier: sid("s"), stream_exists: {} }, proposed_messages: [proposed("")], is_final: true });
write("srv_delete", "delete", "DeleteReq", { options: { stream_identifier: sid("orders-1"), revision: 3 } });
write("srv_delete", "tombstone", "TombstoneReq", { options: { stream_identifier: sid("orders-1"), no_stream: {} } });
write("srv_delete", "exists", "DeleteReq", { options: { stream_identifier: sid("x"), stream_exists: {} } });
const misc = (name, type, o) => write("srv_misc", name, type, o);
misc("start-scavenge", "event_store.client.operations.StartScavengeReq", { options: { thread_count: 2, start_from_chunk: 0 } });
misc("stop-scavenge", "event_store.client.operations.StopScavengeReq", { options: { scavenge_id: "4b2c1c0e-5a54-4b8e-9d2f-1f1b8f0d2a11" } });
misc("stats", "event_store.client.monitoring.StatsReq", { use_metadata: true, refresh_time_period_in_ms: 1000 });
misc("statistics-name", "event_store.client.projections.StatisticsReq", { options: { name: "$by_category" } });
misc("statistics-all", "event_store.client.projections.StatisticsReq", { options: { all: {} } });
misc("enable", "event_store.client.projections.EnableReq", { options: { name: "$streams" } });
misc("state", "event_store.client.projections.StateReq", { options: { name: "$by_event_type", partition: "p" } });
