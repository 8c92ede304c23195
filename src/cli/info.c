/*
 * info.c -- `annal info`: the size of the store at a glance (events, streams, segments,
 * bytes, time of the last event), for people or as one JSON object.
 * The figures come from annal_db_info_get; nothing is counted by scanning.
 */
#include <ftw.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static const char usage[] =
    "usage: annal [--data DIR] info [--all] [--json]\n"
    "\n"
    "Show the number of events and streams, the log segments and bytes used, and the\n"
    "time of the last event. Events and streams are the users': the store's own system\n"
    "streams ($$<stream> metadata) and their events are left out unless --all.\n"
    "\n"
    "Options:\n"
    "  --all    count system streams and events too (and show how many)\n"
    "  --json   one JSON object: dir, events, streams, system_events, system_streams,\n"
    "           segments, log_bytes, index_bytes, disk_bytes, allocated_bytes,\n"
    "           apparent_bytes, last_event (null when empty)\n"
    "\n"
    "Sizes: 'allocated' is what the store's files take on disk (du); 'apparent' is\n"
    "the sum of their sizes as ls -l shows them. The index file is sparse: its size\n"
    "includes room reserved to grow into without remapping (hundreds of MB even for\n"
    "a few events), which takes no disk. The log segment is preallocated ahead of the\n"
    "appends (a few MB), so that an append's flush has no file size to update.\n"
    "\n"
    "Exit codes: 0 ok, 1 usage, 2 no store, 5 store error.\n";

/* Totals over the store's directory tree, counted as du does (directories included). */
static uint64_t tree_allocated, tree_apparent;

static int add_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)path, (void)flag, (void)ftw;
    tree_allocated += (uint64_t)st->st_blocks * 512u; /* st_blocks is in 512-byte units */
    tree_apparent += (uint64_t)st->st_size;
    return 0;
}

/* 0, or -1 if the tree could not be walked (then both figures are left out). */
static int tree_sizes(const char *dir) {
    tree_allocated = tree_apparent = 0;
    return nftw(dir, add_entry, 16, FTW_PHYS) == 0 ? 0 : -1;
}

/* 1536 -> "1.5 KiB": a size people can read beside the exact figure. */
static void human(uint64_t n, char *out, size_t len) {
    static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) v /= 1024, u++;
    if (u == 0)
        snprintf(out, len, "%llu bytes", (unsigned long long)n);
    else
        snprintf(out, len, "%.1f %s", v, units[u]);
}

int cli_cmd_info(cli_global *g, int argc, char **argv) {
    int json, all;
    int done = cli_args_json_all(g, "info", usage, argc, argv, &json, &all);
    if (done >= 0) return done;

    annal_db *db;
    int rc = cli_open(g, "info", ANNAL_OPEN_READONLY, NULL, &db);
    if (rc) return rc;
    annal_db_info info;
    memset(&info, 0, sizeof info);
    annal_err e = annal_db_info_get(db, &info);
    if (e != ANNAL_OK) {
        rc = cli_fail("info", db, e, "cannot read the store's counters");
        annal_db_close(db);
        return rc;
    }
    annal_db_close(db);
    int have_tree = tree_sizes(g->data_dir) == 0;
    if (!all) { /* the users' streams and events only */
        info.events -= info.system_events < info.events ? info.system_events : info.events;
        info.streams -= info.system_streams < info.streams ? info.system_streams : info.streams;
    }

    char last[CLI_TIME_LEN];
    if (json) {
        cli_buf b = {0};
        cli_buf_adds(&b, "{\"dir\":");
        cli_json_add_string(&b, g->data_dir, strlen(g->data_dir));
        cli_buf_addf(&b,
                     ",\"events\":%llu,\"streams\":%llu,\"system_events\":%llu,"
                     "\"system_streams\":%llu,\"segments\":%llu,\"log_bytes\":%llu,"
                     "\"index_bytes\":%llu,\"disk_bytes\":%llu",
                     (unsigned long long)info.events, (unsigned long long)info.streams,
                     (unsigned long long)info.system_events,
                     (unsigned long long)info.system_streams, (unsigned long long)info.segments,
                     (unsigned long long)info.log_bytes, (unsigned long long)info.index_bytes,
                     (unsigned long long)info.disk_bytes);
        if (have_tree)
            cli_buf_addf(&b, ",\"allocated_bytes\":%llu,\"apparent_bytes\":%llu",
                         (unsigned long long)tree_allocated, (unsigned long long)tree_apparent);
        cli_buf_adds(&b, ",\"last_event\":");
        if (info.events) {
            cli_time_rfc3339(info.last_ns, last);
            cli_buf_addf(&b, "\"%s\"}\n", last);
        } else {
            cli_buf_adds(&b, "null}\n");
        }
        fwrite(b.p, 1, b.len, stdout);
        cli_buf_free(&b);
    } else {
        if (info.events)
            cli_time_rfc3339(info.last_ns, last);
        else
            snprintf(last, sizeof last, "-");
        char sys_ev[48] = "", sys_st[48] = "";
        if (all) {
            snprintf(sys_ev, sizeof sys_ev, " (%llu in system streams)",
                     (unsigned long long)info.system_events);
            snprintf(sys_st, sizeof sys_st, " (%llu system)",
                     (unsigned long long)info.system_streams);
        }
        printf("store        %s\n"
               "events       %llu%s\n"
               "streams      %llu%s\n"
               "segments     %llu\n"
               "log bytes    %llu\n"
               "index bytes  %llu\n"
               "disk bytes   %llu\n"
               "last event   %s\n",
               g->data_dir, (unsigned long long)info.events, sys_ev,
               (unsigned long long)info.streams, sys_st, (unsigned long long)info.segments,
               (unsigned long long)info.log_bytes, (unsigned long long)info.index_bytes,
               (unsigned long long)info.disk_bytes, last);
        if (have_tree) {
            char ha[32], hp[32];
            human(tree_allocated, ha, sizeof ha);
            human(tree_apparent, hp, sizeof hp);
            printf("allocated    %llu (%s on disk, as du shows)\n"
                   "apparent     %llu (%s, the sum of sizes ls -l shows: the index file is\n"
                   "             sparse, with room to grow that takes no disk; see "
                   "'annal info --help')\n",
                   (unsigned long long)tree_allocated, ha, (unsigned long long)tree_apparent, hp);
        }
    }
    return cli_finish_output("info", stdout, "standard output", CLI_EXIT_OK);
}
