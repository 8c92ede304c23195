/* bench_common.c -- helpers shared by the benchmark driver, the peers and extras. */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        die("out of memory (%zu x %zu bytes)", n, size);
    return p;
}

char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

int mkdir_p(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return -1;
            buf[i] = c;
        }
    }
    return 0;
}

int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int touch_file(const char *path)
{
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    if (fd < 0)
        return -1;
    fsync(fd);
    close(fd);
    return 0;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p) != 0 && errno != ENOENT ? -1 : 0;
}

int rm_rf(const char *path)
{
    if (!file_exists(path))
        return 0;
    return nftw(path, rm_one, 64, FTW_DEPTH | FTW_PHYS);
}

static uint64_t du_total;
static int du_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)p;
    (void)flag;
    (void)ftw;
    du_total += (uint64_t)st->st_blocks * 512u;
    return 0;
}

uint64_t du_bytes(const char *path)
{
    du_total = 0;
    nftw(path, du_one, 64, FTW_PHYS);
    return du_total;
}

/* ---- PRNG: splitmix64 ---- */
uint64_t rng_next(bench_rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t rng_below(bench_rng *r, uint64_t n)
{
    /* Lemire's multiply-shift; the tiny bias is irrelevant here. */
    return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

/* ---- Event generation ---- */
static const char *const TYPES[] = {
    "OrderPlaced",    "OrderLineAdded", "PaymentAuthorized", "OrderShipped",
    "OrderDelivered", "OrderCancelled", "AddressChanged",    "InvoiceIssued",
};

const char *gen_type(bench_rng *r)
{
    return TYPES[rng_below(r, sizeof TYPES / sizeof TYPES[0])];
}

void gen_uuid(bench_rng *r, uint8_t id[16])
{
    uint64_t a = rng_next(r), b = rng_next(r);
    memcpy(id, &a, 8);
    memcpy(id + 8, &b, 8);
    id[6] = (uint8_t)((id[6] & 0x0f) | 0x40); /* version 4 */
    id[8] = (uint8_t)((id[8] & 0x3f) | 0x80); /* variant */
}

uint32_t gen_payload(bench_rng *r, char *data)
{
    static const char *const CUR[] = {"EUR", "USD", "GBP", "CHF"};
    char head[200];
    int n = snprintf(head, sizeof head,
                     "{\"order_id\":\"ord-%08x\",\"customer_id\":\"cus-%06u\",\"sku\":\"SKU-%05u\","
                     "\"quantity\":%u,\"unit_price\":%u.%02u,\"currency\":\"%s\","
                     "\"warehouse\":\"wh-%02u\",\"note\":\"",
                     (unsigned)rng_next(r), (unsigned)rng_below(r, 1000000),
                     (unsigned)rng_below(r, 100000), (unsigned)(1 + rng_below(r, 20)),
                     (unsigned)rng_below(r, 1000), (unsigned)rng_below(r, 100),
                     CUR[rng_below(r, 4)], (unsigned)rng_below(r, 100));
    /* Total length 190..210: pad the note with random lowercase words. */
    int total = 190 + (int)rng_below(r, 21);
    int pad = total - n - 2;
    if (pad < 0)
        pad = 0;
    memcpy(data, head, (size_t)n);
    for (int i = 0; i < pad; i++) {
        uint64_t x = rng_below(r, 32);
        data[n + i] = x < 26 ? (char)('a' + x) : ' ';
    }
    data[n + pad] = '"';
    data[n + pad + 1] = '}';
    return (uint32_t)(n + pad + 2);
}

/* ---- Read sink ---- */
void sink_init(bench_sink *s, int by_revision)
{
    memset(s, 0, sizeof *s);
    s->by_revision = by_revision;
    s->last_key = -1;
}

__attribute__((noinline)) void sink_event(bench_sink *s, const char *stream, size_t stream_len,
                                          const char *type, size_t type_len, const void *data,
                                          size_t data_len, const uint8_t id[16],
                                          uint64_t revision, uint64_t position)
{
    s->count++;
    s->bytes += data_len;
    const unsigned char *d = data;
    uint64_t c = (uint64_t)stream_len * 31u + type_len;
    if (data_len)
        c += (uint64_t)d[0] + (uint64_t)d[data_len - 1] * 7u;
    if (stream_len)
        c += (unsigned char)stream[stream_len - 1];
    if (type_len)
        c += (unsigned char)type[0];
    c += id[0] ^ id[15];
    s->check = s->check * 1099511628211ull + c;
    if (s->by_revision) {
        if ((int64_t)revision != s->last_key + 1)
            s->errors++;
        s->last_key = (int64_t)revision;
    } else {
        if ((int64_t)position <= s->last_key)
            s->errors++;
        s->last_key = (int64_t)position;
    }
}

/* ---- Statistics ---- */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double percentile(double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    /* nearest-rank */
    size_t k = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return v[k - 1];
}
