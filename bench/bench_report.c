/*
 * bench_report.c -- read the JSON lines written by annal_bench / annal_extras and print
 * the table of medians (Markdown) with ratios and the targets, met or missed.
 *
 *   annal_bench_report [FILE]   (default: standard input)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXV 64

typedef struct cell {
    char system[32], workload[32];
    double eps[MAXV], p50[MAXV], p99[MAXV];
    double events, threads;
    int n;
} cell;

typedef struct extra {
    char workload[32];
    char line[4096];
} extra;

static cell cells[256];
static int ncells;
static extra extras[256];
static int nextras;
static char systems[16][32];
static int nsystems;
static char workloads[32][32];
static int nworkloads;

static int get_str(const char *line, const char *key, char *out, size_t cap)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(line, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    size_t i = 0;
    while (*p && *p != '"' && i + 1 < cap)
        out[i++] = *p++;
    out[i] = '\0';
    return 0;
}

static int get_num(const char *line, const char *key, double *out)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p)
        return -1;
    *out = strtod(p + strlen(pat), NULL);
    return 0;
}

static void add_name(char list[][32], int *n, int max, const char *name)
{
    for (int i = 0; i < *n; i++)
        if (strcmp(list[i], name) == 0)
            return;
    if (*n < max)
        snprintf(list[(*n)++], 32, "%s", name);
}

static cell *find_cell(const char *sys, const char *wl, int create)
{
    for (int i = 0; i < ncells; i++)
        if (strcmp(cells[i].system, sys) == 0 && strcmp(cells[i].workload, wl) == 0)
            return &cells[i];
    if (!create || ncells == 256)
        return NULL;
    cell *c = &cells[ncells++];
    memset(c, 0, sizeof *c);
    snprintf(c->system, sizeof c->system, "%s", sys);
    snprintf(c->workload, sizeof c->workload, "%s", wl);
    return c;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    if (n == 0)
        return NAN;
    double t[MAXV];
    memcpy(t, v, (size_t)n * sizeof *t);
    qsort(t, (size_t)n, sizeof *t, cmpd);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

static double med_eps(const char *sys, const char *wl)
{
    cell *c = find_cell(sys, wl, 0);
    return c ? median(c->eps, c->n) : NAN;
}

static const char *fmt_rate(double v, char *b, size_t cap)
{
    if (isnan(v))
        snprintf(b, cap, "-");
    else if (v >= 1e6)
        snprintf(b, cap, "%.2fM", v / 1e6);
    else if (v >= 1e4)
        snprintf(b, cap, "%.1fk", v / 1e3);
    else
        snprintf(b, cap, "%.0f", v);
    return b;
}

static const char *fmt_ratio(double a, double b, char *buf, size_t cap)
{
    if (isnan(a) || isnan(b) || b == 0)
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%.2f", a / b);
    return buf;
}

/* Target text and verdict for a workload. */
static void target(const char *wl, char *text, size_t tcap, char *verdict, size_t vcap)
{
    double a = med_eps("annal", wl);
    double raw = med_eps("raw", wl), sq = med_eps("sqlite", wl), pg16 = med_eps("postgres-16", wl);
    int known = 1, met = 0;
    text[0] = '\0';
    if (strcmp(wl, "append-b1") == 0 || strcmp(wl, "append-b100") == 0 ||
        strcmp(wl, "append-b1000") == 0) {
        double need = strcmp(wl, "append-b1") == 0 ? 0.9 : strcmp(wl, "append-b100") == 0 ? 0.8 : 0.7;
        snprintf(text, tcap, "annal/raw >= %.2f", need);
        known = !isnan(a) && !isnan(raw);
        met = known && a / raw >= need;
    } else if (strcmp(wl, "append-c64") == 0) {
        snprintf(text, tcap, ">= 100k/s and >= 8x postgres-16");
        known = !isnan(a) && !isnan(pg16);
        met = known && a >= 100000 && a / pg16 >= 8;
        if (!isnan(a) && isnan(pg16) && a < 100000) {
            known = 1;
            met = 0;
        }
    } else if (strcmp(wl, "read-stream") == 0) {
        snprintf(text, tcap, ">= 5M/s and >= 2x sqlite");
        known = !isnan(a) && !isnan(sq);
        met = known && a >= 5e6 && a / sq >= 2;
    } else if (strcmp(wl, "read-all") == 0) {
        snprintf(text, tcap, ">= 10M/s and >= 4x sqlite");
        known = !isnan(a) && !isnan(sq);
        met = known && a >= 1e7 && a / sq >= 4;
    } else {
        known = 0;
        snprintf(text, tcap, "-");
    }
    snprintf(verdict, vcap, "%s", !text[0] || strcmp(text, "-") == 0 ? "-" :
                                  !known ? "n/a" : met ? "MET" : "MISSED");
}

static int wl_rank(const char *w)
{
    static const char *const order[] = {"append-b1",   "append-b100", "append-b1000",
                                        "append-c64",  "append-c16",  "read-stream",
                                        "read-all"};
    for (int i = 0; i < 7; i++)
        if (strcmp(order[i], w) == 0)
            return i;
    return 100;
}

static int sys_rank(const char *s)
{
    static const char *const order[] = {"annal",  "raw",      "raw-prealloc",
                                        "sqlite", "postgres", "postgres-16"};
    for (int i = 0; i < 6; i++)
        if (strcmp(order[i], s) == 0)
            return i;
    return 100;
}

static int cmp_wl(const void *a, const void *b)
{
    int x = wl_rank(a), y = wl_rank(b);
    return x != y ? x - y : strcmp(a, b);
}

static int cmp_sys(const void *a, const void *b)
{
    int x = sys_rank(a), y = sys_rank(b);
    return x != y ? x - y : strcmp(a, b);
}

static int is_extra(const char *wl)
{
    return strncmp(wl, "extras-", 7) == 0;
}

int main(int argc, char **argv)
{
    FILE *f = argc > 1 ? fopen(argv[1], "r") : stdin;
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        char sys[32], wl[32];
        if (line[0] != '{' || get_str(line, "system", sys, sizeof sys) ||
            get_str(line, "workload", wl, sizeof wl))
            continue;
        if (is_extra(wl)) {
            if (nextras < 256) {
                snprintf(extras[nextras].workload, 32, "%s", wl);
                snprintf(extras[nextras].line, sizeof extras[nextras].line, "%s", line);
                nextras++;
            }
            continue;
        }
        double eps, p50 = NAN, p99 = NAN, ev = 0, th = 1;
        if (get_num(line, "events_per_s", &eps))
            continue;
        get_num(line, "p50_ms", &p50);
        get_num(line, "p99_ms", &p99);
        get_num(line, "events", &ev);
        get_num(line, "threads", &th);
        cell *c = find_cell(sys, wl, 1);
        if (!c || c->n == MAXV)
            continue;
        c->eps[c->n] = eps;
        c->p50[c->n] = p50;
        c->p99[c->n] = p99;
        c->events = ev;
        c->threads = th;
        c->n++;
        add_name(systems, &nsystems, 16, sys);
        add_name(workloads, &nworkloads, 32, wl);
    }
    qsort(systems, (size_t)nsystems, sizeof systems[0], cmp_sys);
    qsort(workloads, (size_t)nworkloads, sizeof workloads[0], cmp_wl);

    char b1[64], b2[64], b3[64];
    if (nworkloads) {
        printf("### Throughput, events/s (median of runs)\n\n| workload | events |");
        for (int s = 0; s < nsystems; s++)
            printf(" %s |", systems[s]);
        printf(" annal/raw | annal/raw-prealloc | annal/sqlite | annal/postgres | target | verdict |\n|---|---:|");
        for (int s = 0; s < nsystems; s++)
            printf("---:|");
        printf("---:|---:|---:|---:|---|---|\n");
        for (int w = 0; w < nworkloads; w++) {
            const char *wl = workloads[w];
            double ev = 0;
            cell *first = NULL;
            for (int s = 0; s < nsystems && !first; s++)
                first = find_cell(systems[s], wl, 0);
            ev = first ? first->events : 0;
            printf("| %s | %.0f |", wl, ev);
            for (int s = 0; s < nsystems; s++) {
                cell *c = find_cell(systems[s], wl, 0);
                if (!c) {
                    printf(" - |");
                    continue;
                }
                printf(" %s", fmt_rate(median(c->eps, c->n), b1, sizeof b1));
                if (c->events != ev)
                    printf(" (%.0f ev)", c->events);
                if ((int)c->threads > 1 && strcmp(wl, "append-c64") == 0 && c->threads != 64)
                    printf(" (%d thr)", (int)c->threads);
                if (c->n < 3)
                    printf(" (n=%d)", c->n);
                printf(" |");
            }
            double a = med_eps("annal", wl);
            const char *pgname = strcmp(wl, "append-c64") == 0 ? "postgres-16" : "postgres";
            char tt[96], vv[16];
            target(wl, tt, sizeof tt, vv, sizeof vv);
            char b4[64];
            printf(" %s | %s | %s | %s%s | %s | %s |\n", fmt_ratio(a, med_eps("raw", wl), b1, sizeof b1),
                   fmt_ratio(a, med_eps("raw-prealloc", wl), b4, sizeof b4),
                   fmt_ratio(a, med_eps("sqlite", wl), b2, sizeof b2),
                   fmt_ratio(a, med_eps(pgname, wl), b3, sizeof b3),
                   strcmp(pgname, "postgres") && !isnan(a) ? " (vs pg-16)" : "", tt, vv);
        }
        printf("\n### Latency p50 / p99, ms (median of runs; appends: per append call; reads: per "
               "full pass)\n\n| workload |");
        for (int s = 0; s < nsystems; s++)
            printf(" %s |", systems[s]);
        printf("\n|---|");
        for (int s = 0; s < nsystems; s++)
            printf("---:|");
        printf("\n");
        for (int w = 0; w < nworkloads; w++) {
            printf("| %s |", workloads[w]);
            for (int s = 0; s < nsystems; s++) {
                cell *c = find_cell(systems[s], workloads[w], 0);
                if (!c)
                    printf(" - |");
                else
                    printf(" %.3f / %.3f |", median(c->p50, c->n), median(c->p99, c->n));
            }
            printf("\n");
        }
        int minn = 1000, maxn = 0;
        for (int i = 0; i < ncells; i++) {
            if (cells[i].n < minn)
                minn = cells[i].n;
            if (cells[i].n > maxn)
                maxn = cells[i].n;
        }
        printf("\nRuns per figure: %d..%d.\n", minn, maxn);
    }

    if (nextras) {
        printf("\n### annal extras\n\n| measure | value | target | verdict |\n|---|---:|---|---|\n");
        double opens[MAXV], rebuilds[MAXV];
        int no = 0, nr = 0;
        double events = 0, bpe = NAN, disk = NAN, hwm = 0;
        for (int i = 0; i < nextras; i++) {
            const char *l = extras[i].line;
            const char *w = extras[i].workload;
            double v;
            if (strcmp(w, "extras-open") == 0 && !get_num(l, "seconds", &v) && no < MAXV)
                opens[no++] = v;
            else if (strcmp(w, "extras-rebuild") == 0 && !get_num(l, "events_per_s", &v) &&
                     nr < MAXV)
                rebuilds[nr++] = v;
            else if (strcmp(w, "extras-load") == 0 && !get_num(l, "events_per_s", &v))
                printf("| NOSYNC load, appends of 100 events (whole store) | %s events/s | - | - |\n",
                       fmt_rate(v, b1, sizeof b1));
            else if (strcmp(w, "extras-disk") == 0) {
                get_num(l, "bytes_per_event", &bpe);
                get_num(l, "disk_bytes", &disk);
                get_num(l, "events", &events);
            } else if (strcmp(w, "extras-rss") == 0) {
                double e = 0, rss = 0, h = 0, anon = 0;
                get_num(l, "events", &e);
                get_num(l, "vmrss_kb", &rss);
                get_num(l, "vmhwm_kb", &h);
                get_num(l, "rssanon_kb", &anon);
                if (h > hwm)
                    hwm = h;
                printf("| VmRSS / VmHWM (of which RssAnon) after %.0fM events | %.1f / %.1f MiB "
                       "(%.1f MiB) | - | - |\n",
                       e / 1e6, rss / 1024, h / 1024, anon / 1024);
            }
        }
        if (no) {
            double m = median(opens, no);
            printf("| open+close of the %.0fM-event store (median of %d) | %.3f s | < 1 s | %s |\n",
                   events / 1e6, no, m, m < 1 ? "MET" : "MISSED");
        }
        if (nr) {
            double m = median(rebuilds, nr);
            printf("| annal_rebuild_index (median of %d) | %s events/s | >= 1M/s | %s |\n", nr,
                   fmt_rate(m, b1, sizeof b1), m >= 1e6 ? "MET" : "MISSED");
        }
        if (!isnan(bpe))
            printf("| disk bytes per event (du / events) | %.1f B (%.2f GiB total) | - | - |\n",
                   bpe, disk / (1024.0 * 1024 * 1024));
    }
    if (f != stdin)
        fclose(f);
    return 0;
}
