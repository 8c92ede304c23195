#!/usr/bin/env bash
# Mutation testing: does the suite notice a plausible bug? Each mutant below is one source
# edit (a text that must occur exactly once in its file, and what replaces it). The script
# copies the tree to a scratch directory (build-mutate/, kept between runs so that each
# mutant rebuilds one file), then for each mutant: apply it, build, run the tests that
# should catch it, restore the file. A mutant is "killed" when a test fails (or times out),
# "survived" when all pass, "stale" when its text no longer matches the source (edit the
# list), "broken" when it does not compile. Exit status 0 only if every mutant was killed.
#
# Usage: scripts/mutate.sh [--list] [--only REGEX] [--all-tests] [--timeout S] [--scratch DIR]
#   --list       print the mutants (name, file, what a user would lose) and exit
#   --only RE    run only the mutants whose name matches the (Python) regex RE
#   --all-tests  run the whole ctest suite against each mutant, not its listed tests first
#   --subset-only  call a mutant that passes its listed tests a survivor (skip the whole
#                suite, which otherwise runs before any mutant is called a survivor)
#   --timeout S  per-test timeout (default 300 s); a hang counts as killed
#
# Add a mutant whenever a bug is fixed or a test is found missing: name, file, what (what a
# user would lose), from/to (a unique text and its replacement; "\n" is a newline), tests
# (a ctest -R regex of the tests expected to kill it, run first; empty = all).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PYEOF'
import argparse, os, re, shutil, subprocess, sys, time

MUTANTS = r"""
name: seg-torn-any
file: src/log/segment.c
what: at open, a bad header in any segment (not only the last) is unlinked as a torn tail
from: rc == ANNAL_ECORRUPT && i == cnt - 1 && !readonly
to:   rc == ANNAL_ECORRUPT && !readonly
tests: recovery|api|segment|cli_verify|powerloss

name: cursor-contiguity
file: src/log/segment.c
what: the cursor no longer checks that the next segment starts where the last one ended
from: info, check);\n        if (rc == ANNAL_END) {\n            annal__seg *next = annal__log_seg(c->log, c->seg->no + 1);\n            if (!next) return ANNAL_END;\n            if (next->first_pos != c->pos) return ANNAL_ECORRUPT;
to:   info, check);\n        if (rc == ANNAL_END) {\n            annal__seg *next = annal__log_seg(c->log, c->seg->no + 1);\n            if (!next) return ANNAL_END;
tests: segment|recovery|api|compact|cli_verify|record

name: compact-last-erasable
file: src/store/compact.c
what: compaction may erase a stream's last event (which carries its revision)
from: if (ev->revision + 1 == sr->count && !(sr->flags & ANNAL__SR_DELETED)) return 0;
to:   /* mutant */
tests: compact|meta|cli_lifecycle

name: compact-no-fdatasync
file: src/store/compact.c
what: the compacted generation is not fdatasync'd before it replaces the old one
from: if (r == 0) r = db->io->sync(db->io->ctx, w.fd);
to:   /* mutant */
tests: compact|powerloss

name: maxage-ms
file: src/store/handle.c
what: $maxAge read as milliseconds instead of seconds
from: : (int64_t)sr->max_age * 1000000000;
to:   : (int64_t)sr->max_age * 1000000;
tests: meta|compact|cli_lifecycle

name: recovery-revision-gaps
file: src/store/recovery.c
what: recovery accepts revision gaps in a log that was never compacted
from: (ev.revision > sr.count && !db->log_compacted)
to:   (ev.revision > sr.count && 0)
tests: recovery|settle|api|cli_verify|cli_index_damage

name: handler-retry-one-fewer
file: src/write/handler.c
what: a conflicting command is retried one time fewer than configured
from: res->attempts > h->max_retries
to:   res->attempts >= h->max_retries
tests: handler

name: projection-checkpoint-after-commit
file: src/project/engine.c
what: a projection's checkpoint is written after its read model's commit, not in it
from: rc = state_write(p);\n    if (rc == ANNAL_OK) rc = annal__pj_target_commit(p->t);
to:   rc = annal__pj_target_commit(p->t);\n    if (rc == ANNAL_OK) rc = state_write(p);
tests: project|projection

name: record-crc
file: src/log/record.c
what: a record's CRC is not checked when decoding
from: if (check && annal__crc32c(0, p + 4, len - 4) != crc) return ANNAL_ECORRUPT;
to:   (void)crc;
tests: record|recovery|api|cli_verify

name: seg-header-crc
file: src/log/record.c
what: a segment header's CRC is not checked
from: if (annal__get32(p + 60) != annal__crc32c(0, p, 60)) return ANNAL_ECORRUPT;
to:   /* mutant */
tests: record|recovery|api|cli_verify

name: id-run-lookup
file: src/index/ids.c
what: id lookups skip every merged run (its Bloom filter test inverted): duplicates accepted
from: if (r->count == 0 || !bloom_may(
to:   if (r->count == 0 || bloom_may(
tests: ids|api|recovery

name: index-head-position
file: src/store/recovery.c
what: an index head naming another event as the last acknowledged one is trusted
note: a head whose locations fit this log but whose position does not (head_test)
from: if (ev.position != h->next_pos - 1) return hole_ends(db, s, off + info.len, ev.position + 1, h);
to:   /* mutant */
tests: head|index|recovery|api|cli_index_damage|fuzz_index

name: index-head-damaged
file: src/store/recovery.c
what: a damaged last acknowledged record is cut as if the index head were merely stale
note: a bit flip in the last acknowledged batch would be cut away as a lost tail (head_test)
from: return annal__rec_blank_at(s->map + off) ? HEAD_STALE : HEAD_DAMAGED;
to:   return HEAD_STALE;
tests: head|recovery|index|api|cli_verify|cli_index_damage

name: expected-revision
file: src/store/append.c
what: an append expecting revision N is accepted when the stream is further on
from: (req->expected == ANNAL_EXPECT_STREAM_EXISTS && !gone) || req->expected == cur;
to:   (req->expected == ANNAL_EXPECT_STREAM_EXISTS && !gone) || req->expected <= cur;
tests: api|model|handler|cli_test

name: resend-ignores-expected
file: src/store/append.c
what: an idempotent resend matches an earlier append that its expected revision does not place
from: int all = same_stream && place_ok && r0 + req->n <= sr->count;
to:   int all = same_stream && r0 + req->n <= sr->count;
tests: ids_store|api|model

name: resend-first-id-only
file: src/store/append.c
what: a resend is taken as the earlier append when only its first event id matches
from: ev.revision == r0 + i && memcmp(ev.id.bytes, req->ev[i].id.bytes, 16) == 0;
to:   ev.revision == r0 + i;
tests: ids_store|api|model

name: group-flush-no-fdatasync
file: src/store/append.c
what: a group of appends is acknowledged without its fdatasync
from: int64_t t0 = annal__now_ns();\n        r = db->io->sync(db->io->ctx, db->wseg->fd);
to:   int64_t t0 = annal__now_ns();\n        r = 0;
tests: api|powerloss|block

name: soft-delete-reads
file: src/store/entries.c
what: a soft-deleted stream's last event stays readable (its "$tb" one short)
from: json_object_set_new(doc, "$tb", json_integer((json_int_t)tb))
to:   json_object_set_new(doc, "$tb", json_integer((json_int_t)tb - 1))
tests: meta|api|cli_lifecycle

name: maxcount-off-by-one
file: src/store/handle.c
what: $maxCount keeps one event too many
from: first = sr->count - sr->max_count;
to:   first = sr->count - sr->max_count - 1;
tests: meta|compact|cli_lifecycle

name: truncate-before
file: src/store/handle.c
what: $tb (truncate before) is ignored by reads
from: uint64_t first = sr->tb == ANNAL__UNSET ? 0 : sr->tb;
to:   uint64_t first = 0;
tests: meta|compact|cli_lifecycle

name: recovery-cut-batch
file: src/store/recovery.c
what: recovery indexes the whole records of a batch cut short instead of cutting it
from: if (rc == ANNAL_END) return ANNAL_ECORRUPT; /* batch cut short */
to:   if (rc == ANNAL_END) { *n = i; return ANNAL_OK; }
tests: recovery|powerloss|kill|api

name: recovery-tail-damage
file: src/store/recovery.c
what: damage followed by a later flush is cut away as if it were a torn tail
from: if (c.seg != last || (!db->readonly && later_flush_after(last, c.off, c.pos))) {
to:   if (c.seg != last) {
tests: recovery|cli_verify|powerloss

name: recovery-tail-not-zeroed
file: src/store/recovery.c
what: a torn tail is left in place (not zeroed) after recovery
from: int r = zero_tail(db, last, c.off, last->cap);
to:   int r = 0;
tests: recovery|powerloss|kill

name: snapshot-id-check
file: src/write/handler.c
what: a snapshot is used although the log's event at its revision has another id
from: if (ev->revision != (uint64_t)l->revision || memcmp(&ev->id, &l->id, sizeof l->id)) {
to:   if (ev->revision != (uint64_t)l->revision) {
tests: handler

name: projection-batch-position
file: src/project/engine.c
what: a full batch moves the projection's position to the store's head, skipping events
from: if (seen < p->batch && stop_pos == UINT64_MAX && info.events > p->position) {
to:   if (stop_pos == UINT64_MAX && info.events > p->position) {
tests: project|projection
"""


def parse(text):
    out, cur = [], {}
    for line in text.splitlines() + [""]:
        if not line.strip():
            if cur:
                out.append(cur)
            cur = {}
            continue
        k, _, v = line.partition(":")
        k, v = k.strip(), v.strip().replace("\\n", "\n")
        cur[k] = cur[k] + " " + v if k in cur else v  # a repeated key continues a line
    for m in out:
        for k in ("name", "file", "what", "from", "to"):
            if k not in m:
                sys.exit("mutate: mutant %r lacks %s" % (m.get("name"), k))
    return out


ap = argparse.ArgumentParser(prog="scripts/mutate.sh")
ap.add_argument("--list", action="store_true")
ap.add_argument("--only", default=None)
ap.add_argument("--all-tests", action="store_true")
ap.add_argument("--subset-only", action="store_true")
ap.add_argument("--timeout", type=int, default=300)
ap.add_argument("--scratch", default="build-mutate")
ap.add_argument("--jobs", type=int, default=2)
a = ap.parse_args()

muts = parse(MUTANTS)
if a.only:
    muts = [m for m in muts if re.search(a.only, m["name"])]
    if not muts:
        sys.exit("mutate: no mutant matches %r" % a.only)


def count_in(path, text):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().count(text)
    except OSError:
        return 0


# A pattern that no longer matches exactly once is stale: reported, never counted killed.
stale = [m for m in muts if count_in(m["file"], m["from"]) != 1]
if a.list:
    for m in muts:
        print("%-34s %-22s %s%s" % (m["name"], m["file"], m["what"],
                                    "  [STALE]" if m in stale else ""))
    sys.exit(1 if stale else 0)

# The scratch tree: the worktree's files (committed or not, ignored ones excepted), copied
# only where they differ so the scratch build stays incremental.
scratch = os.path.abspath(a.scratch)
tree, build = os.path.join(scratch, "tree"), os.path.join(scratch, "build")
files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], check=True,
                       capture_output=True).stdout.decode().split("\0")
for f in filter(None, files):
    if not os.path.isfile(f) or f.startswith(a.scratch.rstrip("/") + "/"):
        continue
    dst = os.path.join(tree, f)
    with open(f, "rb") as s:
        data = s.read()
    if os.path.exists(dst):
        with open(dst, "rb") as d:
            if d.read() == data:
                continue
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(f, dst)


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def build_tree():
    return run(["nice", "-n", "10", "cmake", "--build", build, "-j%d" % a.jobs]).returncode == 0


# Warnings stay warnings: a mutant may leave a variable unused.
print("mutate: building the scratch tree in %s" % scratch, flush=True)
r = run(["cmake", "-S", tree, "-B", build, "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
         "-DANNAL_WERROR=OFF", "-DANNAL_BUILD_BENCH=OFF"])
if r.returncode != 0 or not build_tree():
    sys.stdout.write(r.stdout.decode(errors="replace")[-4000:])
    sys.exit("mutate: the unmutated tree does not build")


def run_tests(regex):
    """('killed', by whom) / ('survived', how many passed) / ('broken', why)."""
    cmd = ["ctest", "-j%d" % a.jobs, "--timeout", str(a.timeout), "--stop-on-failure"]
    if regex:
        cmd += ["-R", regex]
    cmd += ["-E", "^install_test$"]
    env = dict(os.environ)  # each mutant gets the quick suite, even under --long
    env.pop("ANNAL_LONG", None)
    env.pop("ANNAL_MODEL_OPS", None)
    out = run(cmd, cwd=build, env=env).stdout.decode(errors="replace")
    failed = re.findall(r"^\s*\d+ - (\S+) \(", out, re.M)
    ran = re.search(r"tests passed, (\d+) tests failed out of (\d+)", out)
    if "No tests were found" in out or not ran:
        return "broken", "no test ran (check its tests regex)"
    if failed or ran.group(1) != "0":
        return "killed", "by " + ", ".join(failed or ["?"])
    return "survived", "%s tests passed%s" % (ran.group(2), "" if regex else " (all)")


results = []
for m in muts:
    if m in stale:
        n = count_in(m["file"], m["from"])
        results.append((m, "stale", "pattern found %d times (must be once)" % n))
        print("%-34s STALE (pattern found %d times)" % (m["name"], n), flush=True)
        continue
    path = os.path.join(tree, m["file"])
    with open(path, encoding="utf-8") as f:
        orig = f.read()
    t0 = time.time()
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(orig.replace(m["from"], m["to"], 1))
        if not build_tree():
            verdict, detail = "broken", "does not compile"
        else:
            # Its own tests first (fast); if they all pass, the whole suite, so that a
            # new test anywhere counts before the mutant is called a survivor.
            verdict, detail = run_tests(None if a.all_tests else m.get("tests"))
            if verdict == "survived" and m.get("tests") and not a.all_tests and not a.subset_only:
                verdict, detail = run_tests(None)
    finally:
        with open(path, "w", encoding="utf-8") as f:
            f.write(orig)
    results.append((m, verdict, detail))
    print("%-34s %-8s %s (%.0fs)" % (m["name"], verdict.upper(), detail, time.time() - t0),
          flush=True)

build_tree()  # leave the scratch build unmutated
killed = sum(1 for _, v, _ in results if v == "killed")
print("\nmutate: %d of %d mutants killed" % (killed, len(results)))
for m, v, d in results:
    if v != "killed":
        print("  %-8s %s (%s): %s -- %s" % (v, m["name"], m["file"], m["what"], d))
sys.exit(0 if killed == len(results) else 1)
PYEOF
