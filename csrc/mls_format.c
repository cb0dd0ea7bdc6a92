/* mls_format.c: write, validate and map .mls files (layout in mls_format.h).
 *
 * Checksums. Both use mls_checksum64 below.
 *   header checksum (header offset 56), a chain over three byte ranges:
 *     h = mls_checksum64(header with bytes 56..63 zeroed, 128, 0)
 *     h = mls_checksum64(metadata, metadata length, h)
 *     h = mls_checksum64(section table, count * 128, h)
 *   section checksum (entry offset 120), by major version:
 *     1.x: mls_checksum64(data, length, 0), one sequential pass;
 *     2.x: the data is cut into chunks of MLS_FORMAT_CHUNK bytes (4 MiB; the
 *          last one shorter), h_j = mls_checksum64(chunk j, its length, j),
 *          and the checksum is mls_checksum64(h_0 .. h_{m-1} as little-
 *          endian u64, 8 m, length). Data of at most one chunk keeps the
 *          1.x value, mls_checksum64(data, length, 0).
 *   The chunks make verification parallel: a large section is hashed by up
 *   to MLS_FORMAT_VERIFY_THREADS_MAX threads (capped by the CPUs this process
 *   may run on), each taking a contiguous run of chunks. Detection is as for
 *   one pass: a change confined to one word changes that chunk's h_j
 *   (mls_checksum64 is a bijection of each word for fixed others), which is
 *   one word of the list, which changes the result; a truncation changes the
 *   length, checked against the table before any hashing.
 *
 * Reader rules beyond the layout, so that no byte of a file goes unchecked:
 * every byte not inside the header, the metadata, the table or a section
 * (alignment padding) must be zero, and flags and reserved bytes must be
 * zero. A file with a newer minor version may use those bytes for additive
 * features, so for it these two rules are relaxed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include "mls_format.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#ifdef __linux__
#include <sys/random.h>
#endif
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MLS_FORMAT_HEADER_SIZE 128
#define MLS_FORMAT_ENTRY_SIZE 128

/* Header field offsets. */
enum {
    MLS_H_MAGIC = 0,
    MLS_H_MAJOR = 8,
    MLS_H_MINOR = 10,
    MLS_H_KIND = 12,
    MLS_H_FILE_SIZE = 16,
    MLS_H_META_OFFSET = 24,
    MLS_H_META_LENGTH = 32,
    MLS_H_TABLE_OFFSET = 40,
    MLS_H_COUNT = 48,
    MLS_H_FLAGS = 52,
    MLS_H_CHECKSUM = 56,
    MLS_H_RESERVED = 64,
};

/* Section table entry field offsets. */
enum {
    MLS_E_NAME = 0,
    MLS_E_DTYPE = 64,
    MLS_E_NDIM = 68,
    MLS_E_SHAPE = 72,
    MLS_E_OFFSET = 104,
    MLS_E_LENGTH = 112,
    MLS_E_CHECKSUM = 120,
};

/* PNG-style: the high byte catches 7-bit transfers, \r\n and \n catch
 * newline conversion, \x1a stops `type` on Windows. */
static const unsigned char mls_format_magic[8] = {0x89, 'M', 'L', 'S', '\r', '\n', 0x1a, '\n'};

struct mls_file {
    const unsigned char *base;
    size_t len;
    int mapped; /* 1: base is our mmap; 0: the caller's buffer */
    uint32_t kind;
    uint16_t major, minor;
    const char *metadata;
    size_t metadata_len;
    size_t n_sections;
    mls_section *sections;
};

/* ---- little-endian fields (byte assembly: no alignment or host-order
 * assumptions; compilers turn these into single loads on LE hosts) ---- */

static uint16_t mls_rd16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t mls_rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static uint64_t mls_rd64(const unsigned char *p)
{
    return (uint64_t)mls_rd32(p) | ((uint64_t)mls_rd32(p + 4) << 32);
}

static void mls_wr16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void mls_wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void mls_wr64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* ---- mls_checksum64 ----
 *
 * Eight independent 64-bit lanes; each step a lane takes two 8-byte words,
 * a from the first and b from the second half of a 128-byte stripe:
 *     lane = rotl(lane + a * M1 + rotl(b * M3, 40), 31) * M2
 * Every word is multiplied before it enters and the lane is multiplied
 * after, so a few flipped bits become a high-weight change that later
 * words cannot cancel; for fixed other inputs a step is a bijection of
 * each word and of the lane, so a change confined to one word always
 * changes the result. The rotations matter: a product's top bits are its
 * weakly mixed ones, and 40 and 31 keep a's and b's apart (no cancelling
 * each other) and move both low before the lane multiply spreads them
 * (32, for one, lets b's top bit come back to the top: 2-bit collisions). Eight lanes keep the multiplier busy: the loop is
 * bound by multiply throughput (1.5 per word), not latency. The tail is
 * zero-padded to one more stripe; the length, mixed into the final value,
 * tells padded inputs apart. Constants are odd (bijective multiplies):
 * 2^64/phi and the fractional parts of sqrt(3) and sqrt(5). */

#define MLS_CK_M1 UINT64_C(0x9E3779B97F4A7C15)
#define MLS_CK_M2 UINT64_C(0xBB67AE8584CAA73B)
#define MLS_CK_M3 UINT64_C(0x3C6EF372FE94F82B)
#define MLS_CK_LANES 8
#define MLS_CK_STRIPE 128
/* Prefetch distance: measured best at 4 KiB for data streaming from RAM;
 * hardware prefetch alone left ~30% of the bandwidth unused. */
#define MLS_CK_PREFETCH 4096

static inline uint64_t mls_ck_rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t mls_ck_word(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline void mls_ck_stripe(uint64_t lane[MLS_CK_LANES], const unsigned char *p)
{
    for (int i = 0; i < MLS_CK_LANES; i++) {
        uint64_t a = mls_ck_word(p + 8 * i) * MLS_CK_M1;
        uint64_t b = mls_ck_rotl(mls_ck_word(p + 64 + 8 * i) * MLS_CK_M3, 40);
        lane[i] = mls_ck_rotl(lane[i] + a + b, 31) * MLS_CK_M2;
    }
}

uint64_t mls_checksum64(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = (const unsigned char *)data;
    uint64_t lane[MLS_CK_LANES];
    for (int i = 0; i < MLS_CK_LANES; i++)
        lane[i] = seed + MLS_CK_M3 * (uint64_t)(i + 1);

    size_t stripes = len / MLS_CK_STRIPE;
    size_t ahead = MLS_CK_PREFETCH / MLS_CK_STRIPE;
    size_t k = 0;
    for (; k + ahead < stripes; k++, p += MLS_CK_STRIPE) {
        __builtin_prefetch(p + MLS_CK_PREFETCH);
        __builtin_prefetch(p + MLS_CK_PREFETCH + 64);
        mls_ck_stripe(lane, p);
    }
    for (; k < stripes; k++, p += MLS_CK_STRIPE) mls_ck_stripe(lane, p);

    size_t rest = len % MLS_CK_STRIPE;
    if (rest != 0) {
        unsigned char last[MLS_CK_STRIPE] = {0};
        memcpy(last, p, rest);
        mls_ck_stripe(lane, last);
    }

    /* Each line is a bijection of h for fixed lanes and of each lane for
     * fixed h, so no lane's state is lost in the fold. */
    uint64_t h = seed ^ ((uint64_t)len * MLS_CK_M3);
    for (int i = 0; i < MLS_CK_LANES; i++) h = mls_ck_rotl(h ^ lane[i], 27) * MLS_CK_M1;
    h ^= h >> 33;
    h *= MLS_CK_M2;
    h ^= h >> 29;
    h *= MLS_CK_M3;
    h ^= h >> 32;
    return h;
}

static uint64_t mls_format_header_checksum(const unsigned char *header, const unsigned char *meta,
                                           size_t meta_len, const unsigned char *table,
                                           size_t table_len)
{
    unsigned char copy[MLS_FORMAT_HEADER_SIZE];
    memcpy(copy, header, sizeof copy);
    memset(copy + MLS_H_CHECKSUM, 0, 8);
    uint64_t h = mls_checksum64(copy, sizeof copy, 0);
    h = mls_checksum64(meta, meta_len, h);
    return mls_checksum64(table, table_len, h);
}

/* ---- section checksums (format 2.x: chunked, hashed in parallel) ---- */

#define MLS_FORMAT_CHUNK ((size_t)4 << 20)
#define MLS_FORMAT_VERIFY_THREADS_MAX 4
/* Below this many bytes one thread hashes alone: starting a thread costs
 * ~50 us, hashing 32 MiB ~5 ms. */
#define MLS_FORMAT_THREAD_MIN_BYTES ((size_t)32 << 20)

typedef struct mls_format_chunk_job {
    const unsigned char *data;
    size_t len;             /* of the whole section */
    size_t first, count;    /* chunks [first, first + count) */
    unsigned char *hashes;  /* 8 bytes per chunk, little-endian */
} mls_format_chunk_job;

static void mls_format_hash_chunks(const mls_format_chunk_job *job)
{
    for (size_t j = job->first; j < job->first + job->count; j++) {
        size_t off = j * MLS_FORMAT_CHUNK;
        size_t n = job->len - off < MLS_FORMAT_CHUNK ? job->len - off : MLS_FORMAT_CHUNK;
        mls_wr64(job->hashes + 8 * j, mls_checksum64(job->data + off, n, (uint64_t)j));
    }
}

static void *mls_format_hash_chunks_thread(void *arg)
{
    mls_format_hash_chunks(arg);
    return NULL;
}

/* CPUs this process may run on (1 if unknown). */
static int mls_format_cpu_count(void)
{
#ifdef __linux__
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        return n > 0 ? n : 1;
    }
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* The 2.x checksum of one section's data (layout at the top of this file)
 * into *out. Only fails for lack of memory for the chunk list (8 bytes per
 * 4 MiB). A thread that cannot be started leaves its chunks to the caller. */
static mls_status mls_format_section_checksum(const void *data, size_t len, uint64_t *out,
                                              mls_error *err)
{
    if (len <= MLS_FORMAT_CHUNK) {
        *out = mls_checksum64(data, len, 0);
        return MLS_STATUS_OK;
    }
    size_t chunks = len / MLS_FORMAT_CHUNK + (len % MLS_FORMAT_CHUNK != 0);
    unsigned char *hashes = malloc(chunks * 8);
    if (hashes == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM,
                             "out of memory for the checksums of %zu chunks", chunks);
    size_t threads = 1;
    if (len >= MLS_FORMAT_THREAD_MIN_BYTES) {
        threads = (size_t)mls_format_cpu_count();
        if (threads > MLS_FORMAT_VERIFY_THREADS_MAX) threads = MLS_FORMAT_VERIFY_THREADS_MAX;
        if (threads > chunks) threads = chunks;
    }
    mls_format_chunk_job jobs[MLS_FORMAT_VERIFY_THREADS_MAX];
    pthread_t tids[MLS_FORMAT_VERIFY_THREADS_MAX];
    int started[MLS_FORMAT_VERIFY_THREADS_MAX] = {0};
    for (size_t t = 0; t < threads; t++) {
        /* contiguous runs of chunks, sizes differing by at most one */
        size_t first = chunks * t / threads, end = chunks * (t + 1) / threads;
        jobs[t] = (mls_format_chunk_job){(const unsigned char *)data, len, first, end - first,
                                         hashes};
    }
    for (size_t t = 1; t < threads; t++)
        started[t] = pthread_create(&tids[t], NULL, mls_format_hash_chunks_thread, &jobs[t]) == 0;
    mls_format_hash_chunks(&jobs[0]);
    for (size_t t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(tids[t], NULL);
        else
            mls_format_hash_chunks(&jobs[t]);
    }
    *out = mls_checksum64(hashes, chunks * 8, (uint64_t)len);
    free(hashes);
    return MLS_STATUS_OK;
}

/* ---- shared checks ---- */

int64_t mls_section_size(const mls_section *s)
{
    if (s == NULL || s->ndim < 0 || s->ndim > MLS_SECTION_MAX_NDIM) return -1;
    int64_t n = 1;
    for (int d = 0; d < s->ndim; d++)
        if (!mls_size_mul(n, s->shape[d], &n)) return -1;
    return n;
}

/* NULL when `name` (at most `cap` bytes, NUL-terminated within them) is a
 * valid section name, else what is wrong with it. */
static const char *mls_format_name_problem(const char *name, size_t cap, unsigned char *bad)
{
    const char *nul = memchr(name, '\0', cap);
    if (nul == NULL) return "is not NUL-terminated within 64 bytes";
    if (nul == name) return "is empty";
    for (const char *c = name; c < nul; c++) {
        unsigned char u = (unsigned char)*c;
        int ok = (u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') || (u >= '0' && u <= '9') ||
                 u == '_' || u == '.';
        if (!ok) {
            *bad = u;
            return "contains an illegal byte";
        }
    }
    return NULL;
}

/* Offset of the first byte that breaks UTF-8 (NUL counts: JSON text never
 * holds a raw NUL, and C consumers would cut the text there), or n. */
static size_t mls_format_utf8_end(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c >= 0x01 && c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;      /* overlong */
            else if (c == 0xED) hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;      /* overlong */
            else if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
        } else {
            return i;
        }
        if (n - i <= need) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += need + 1;
    }
    return n;
}

static int mls_format_cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorts `names` and returns the first duplicate, or NULL. */
static const char *mls_format_find_duplicate(const char **names, size_t n)
{
    if (n < 2) return NULL;
    qsort(names, n, sizeof *names, mls_format_cmp_names);
    for (size_t i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) return names[i];
    return NULL;
}

static const char *mls_format_strerror(int errnum, char *buf, size_t cap)
{
    /* strerror is not thread-safe; the two strerror_r flavours differ. */
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    return strerror_r(errnum, buf, cap);
#else
    if (strerror_r(errnum, buf, cap) != 0) snprintf(buf, cap, "error %d", errnum);
    return buf;
#endif
}

/* ---- validation (shared by open and parse) ---- */

/* A byte range of the file, for the overlap and padding checks. */
typedef struct mls_format_region {
    uint64_t begin, end;
    long index; /* -3 header, -2 metadata, -1 table, >= 0 section */
} mls_format_region;

static int mls_format_cmp_regions(const void *a, const void *b)
{
    const mls_format_region *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static void mls_format_region_name(const mls_file *f, long index, char *buf, size_t cap)
{
    if (index == -3) snprintf(buf, cap, "the header");
    else if (index == -2) snprintf(buf, cap, "the metadata");
    else if (index == -1) snprintf(buf, cap, "the section table");
    else snprintf(buf, cap, "section '%s'", f->sections[index].name);
}

static int mls_format_all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0) return 0;
    return 1;
}

/* Checks that regions do not overlap and that bytes between them are zero. */
static mls_status mls_format_check_regions(mls_file *f, uint64_t meta_off, uint64_t meta_len,
                                           uint64_t table_off, uint64_t table_len, int strict,
                                           mls_error *err)
{
    size_t n = 0, cap = f->n_sections + 3;
    mls_format_region *r = malloc(cap * sizeof *r);
    if (r == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory checking %zu sections",
                             f->n_sections);
    r[n++] = (mls_format_region){0, MLS_FORMAT_HEADER_SIZE, -3};
    if (meta_len > 0) r[n++] = (mls_format_region){meta_off, meta_off + meta_len, -2};
    if (table_len > 0) r[n++] = (mls_format_region){table_off, table_off + table_len, -1};
    for (size_t i = 0; i < f->n_sections; i++) {
        uint64_t off = (uint64_t)((const unsigned char *)f->sections[i].data - f->base);
        if (f->sections[i].nbytes > 0)
            r[n++] = (mls_format_region){off, off + f->sections[i].nbytes, (long)i};
    }
    qsort(r, n, sizeof *r, mls_format_cmp_regions);

    mls_status st = MLS_STATUS_OK;
    uint64_t cursor = 0;
    size_t prev = 0; /* the region that ends at cursor */
    for (size_t i = 0; i < n && st == MLS_STATUS_OK; i++) {
        if (r[i].begin < cursor) {
            /* name a section first: it is the likelier culprit */
            const mls_format_region *x = &r[i], *y = &r[prev];
            if (x->index < 0 && y->index >= 0) x = &r[prev], y = &r[i];
            char a[96], b[96];
            mls_format_region_name(f, x->index, a, sizeof a);
            mls_format_region_name(f, y->index, b, sizeof b);
            st = mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                               "%s (bytes %llu..%llu) overlaps %s (bytes %llu..%llu): file is "
                               "corrupt",
                               a, (unsigned long long)x->begin, (unsigned long long)x->end, b,
                               (unsigned long long)y->begin, (unsigned long long)y->end);
        } else if (strict && !mls_format_all_zero(f->base + cursor, r[i].begin - cursor)) {
            st = mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                               "padding bytes %llu..%llu are not zero: file is corrupt",
                               (unsigned long long)cursor, (unsigned long long)r[i].begin);
        } else {
            cursor = r[i].end;
            prev = i;
        }
    }
    if (st == MLS_STATUS_OK && strict && !mls_format_all_zero(f->base + cursor, f->len - cursor))
        st = mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                           "padding bytes %llu..%zu are not zero: file is corrupt",
                           (unsigned long long)cursor, f->len);
    free(r);
    return st;
}

/* Decodes and checks table entry i into f->sections[i]. */
static mls_status mls_format_read_entry(mls_file *f, size_t i, const unsigned char *e,
                                        mls_error *err)
{
    mls_section *s = &f->sections[i];
    unsigned char bad = 0;
    const char *problem = mls_format_name_problem((const char *)e + MLS_E_NAME,
                                                  MLS_SECTION_NAME_MAX, &bad);
    if (problem != NULL) {
        if (bad != 0)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "section %zu: name %s (0x%02x; allowed: A-Z a-z 0-9 _ .): "
                                 "file is corrupt",
                                 i, problem, bad);
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "section %zu: name %s: file is corrupt",
                             i, problem);
    }
    size_t name_len = strlen((const char *)e + MLS_E_NAME);
    memcpy(s->name, e + MLS_E_NAME, name_len + 1);
    if (!mls_format_all_zero(e + name_len, MLS_SECTION_NAME_MAX - name_len))
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section '%s': bytes after the name are not zero: file is corrupt",
                             s->name);

    uint32_t dtype = mls_rd32(e + MLS_E_DTYPE);
    /* range check before the enum conversion */
    size_t item = dtype < (uint32_t)MLS_DTYPE_COUNT_ ? mls_dtype_size((mls_dtype)dtype) : 0;
    if (item == 0)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section '%s': unknown dtype code %u (this build knows 1..%d)",
                             s->name, dtype, (int)MLS_DTYPE_COUNT_ - 1);
    s->dtype = (mls_dtype)dtype;

    uint32_t ndim = mls_rd32(e + MLS_E_NDIM);
    if (ndim > MLS_SECTION_MAX_NDIM)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section '%s': ndim is %u, at most %d is allowed", s->name, ndim,
                             MLS_SECTION_MAX_NDIM);
    s->ndim = (int32_t)ndim;

    int64_t count = 1;
    for (uint32_t d = 0; d < MLS_SECTION_MAX_NDIM; d++) {
        uint64_t dim = mls_rd64(e + MLS_E_SHAPE + 8 * d);
        if (d >= ndim) {
            if (dim != 0)
                return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                     "section '%s': unused dimension %u is %llu, expected 0: "
                                     "file is corrupt",
                                     s->name, d, (unsigned long long)dim);
            s->shape[d] = 0;
            continue;
        }
        if (dim > (uint64_t)INT64_MAX || !mls_size_mul(count, (int64_t)dim, &count))
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "section '%s': shape is too large (dimension %u is %llu)",
                                 s->name, d, (unsigned long long)dim);
        s->shape[d] = (int64_t)dim;
    }
    int64_t need;
    if (!mls_size_mul(count, (int64_t)item, &need))
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section '%s': shape is too large (%lld %s elements)", s->name,
                             (long long)count, mls_dtype_name(s->dtype));

    uint64_t off = mls_rd64(e + MLS_E_OFFSET);
    uint64_t length = mls_rd64(e + MLS_E_LENGTH);
    if (length != (uint64_t)need)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section '%s': data is %llu bytes, but %lld %s elements need %lld",
                             s->name, (unsigned long long)length, (long long)count,
                             mls_dtype_name(s->dtype), (long long)need);
    if (off % MLS_FORMAT_ALIGN != 0)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section '%s': data offset %llu is not a multiple of %d", s->name,
                             (unsigned long long)off, MLS_FORMAT_ALIGN);
    if (off > f->len || length > f->len - off)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section '%s': data (%llu bytes at offset %llu) runs past the end "
                             "of the file (%zu bytes)",
                             s->name, (unsigned long long)length, (unsigned long long)off, f->len);
    s->data = f->base + off;
    s->nbytes = length;
    return MLS_STATUS_OK;
}

static mls_status mls_format_validate(mls_file *f, int verify_data, mls_error *err)
{
    const unsigned char *b = f->base;
    size_t len = f->len;

    if (len == 0)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "file is empty: a .mls file starts with a %d-byte header",
                             MLS_FORMAT_HEADER_SIZE);
    if (memcmp(b, mls_format_magic, len < 8 ? len : 8) != 0)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "not an .mls file (bad magic)");
    if (len < MLS_FORMAT_HEADER_SIZE)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "file is truncated: %zu bytes, a .mls header needs %d", len,
                             MLS_FORMAT_HEADER_SIZE);

    /* The version comes before everything else: a newer major may lay out
     * the rest of the header differently. */
    f->major = mls_rd16(b + MLS_H_MAJOR);
    f->minor = mls_rd16(b + MLS_H_MINOR);
    if (f->major > MLS_FORMAT_MAJOR)
        return mls_error_set(err, MLS_STATUS_ERR_VERSION,
                             "file is .mls format version %u.%u, this build reads up to %d.x "
                             "(upgrade mlserve to load it)",
                             f->major, f->minor, MLS_FORMAT_MAJOR);
    if (f->major == 0)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "file claims .mls format version 0.%u, which never existed: file "
                             "is corrupt",
                             f->minor);
    /* Newer minor versions only add; they may use flags and padding. */
    int strict = f->major < MLS_FORMAT_MAJOR || f->minor <= MLS_FORMAT_MINOR;

    uint64_t size = mls_rd64(b + MLS_H_FILE_SIZE);
    if (size > len)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "file is truncated: %zu bytes, its header says %llu", len,
                             (unsigned long long)size);
    if (size < len)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "file has %zu bytes, its header says %llu (bytes appended or size "
                             "field corrupt)",
                             len, (unsigned long long)size);

    uint64_t meta_off = mls_rd64(b + MLS_H_META_OFFSET);
    uint64_t meta_len = mls_rd64(b + MLS_H_META_LENGTH);
    if (meta_len > MLS_FORMAT_MAX_METADATA)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "metadata is %llu bytes, the limit is %u: file is corrupt",
                             (unsigned long long)meta_len, MLS_FORMAT_MAX_METADATA);
    if (meta_off < MLS_FORMAT_HEADER_SIZE || meta_off > len || meta_len > len - meta_off)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "metadata (%llu bytes at offset %llu) lies outside the file body "
                             "(bytes %d..%zu): file is corrupt",
                             (unsigned long long)meta_len, (unsigned long long)meta_off,
                             MLS_FORMAT_HEADER_SIZE, len);

    uint64_t table_off = mls_rd64(b + MLS_H_TABLE_OFFSET);
    uint32_t count = mls_rd32(b + MLS_H_COUNT);
    if (count > MLS_FORMAT_MAX_SECTIONS)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section count %u exceeds the limit of %d: file is corrupt", count,
                             MLS_FORMAT_MAX_SECTIONS);
    /* Count against the bytes that remain, before anything is allocated. */
    if (table_off < MLS_FORMAT_HEADER_SIZE || table_off > len ||
        count > (len - table_off) / MLS_FORMAT_ENTRY_SIZE)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section table (%u entries of %d bytes at offset %llu) lies outside "
                             "the file body (bytes %d..%zu): file is corrupt",
                             count, MLS_FORMAT_ENTRY_SIZE, (unsigned long long)table_off,
                             MLS_FORMAT_HEADER_SIZE, len);
    uint64_t table_len = (uint64_t)count * MLS_FORMAT_ENTRY_SIZE;
    if (meta_len > 0 && table_len > 0 && meta_off < table_off + table_len &&
        table_off < meta_off + meta_len)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "metadata (bytes %llu..%llu) overlaps the section table (bytes "
                             "%llu..%llu): file is corrupt",
                             (unsigned long long)meta_off, (unsigned long long)(meta_off + meta_len),
                             (unsigned long long)table_off,
                             (unsigned long long)(table_off + table_len));

    uint64_t want = mls_rd64(b + MLS_H_CHECKSUM);
    uint64_t got = mls_format_header_checksum(b, b + meta_off, meta_len, b + table_off, table_len);
    if (want != got)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "header checksum mismatch: file is corrupt");

    /* The checksum matched: what follows catches a buggy or hostile writer. */
    if (strict && mls_rd32(b + MLS_H_FLAGS) != 0)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "header flags are 0x%08x, this version defines none: file is corrupt",
                             mls_rd32(b + MLS_H_FLAGS));
    if (strict && !mls_format_all_zero(b + MLS_H_RESERVED,
                                       MLS_FORMAT_HEADER_SIZE - MLS_H_RESERVED))
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "reserved header bytes are not zero: file is corrupt");
    size_t bad = mls_format_utf8_end(b + meta_off, meta_len);
    if (bad != meta_len)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "metadata is not valid UTF-8 text (byte 0x%02x at offset %zu)",
                             b[meta_off + bad], bad);

    f->kind = mls_rd32(b + MLS_H_KIND);
    f->metadata = (const char *)b + meta_off;
    f->metadata_len = meta_len;
    if (count > 0) {
        f->sections = calloc(count, sizeof *f->sections);
        if (f->sections == NULL)
            return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory reading %u sections",
                                 count);
    }
    f->n_sections = count;
    for (size_t i = 0; i < count; i++) {
        mls_status st = mls_format_read_entry(
            f, i, b + table_off + i * MLS_FORMAT_ENTRY_SIZE, err);
        if (st != MLS_STATUS_OK) return st;
    }

    if (count > 1) {
        const char **names = malloc(count * sizeof *names);
        if (names == NULL)
            return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory reading %u sections",
                                 count);
        for (size_t i = 0; i < count; i++) names[i] = f->sections[i].name;
        const char *dup = mls_format_find_duplicate(names, count);
        mls_status st = MLS_STATUS_OK;
        if (dup != NULL)
            st = mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                               "section name '%s' appears twice: file is corrupt", dup);
        free(names);
        if (st != MLS_STATUS_OK) return st;
    }

    mls_status st = mls_format_check_regions(f, meta_off, meta_len, table_off, table_len, strict,
                                             err);
    if (st != MLS_STATUS_OK) return st;

    if (verify_data) {
        for (size_t i = 0; i < count; i++) {
            const mls_section *s = &f->sections[i];
            const unsigned char *e = b + table_off + i * MLS_FORMAT_ENTRY_SIZE;
            uint64_t got_data;
            if (f->major == 1) {
                got_data = mls_checksum64(s->data, s->nbytes, 0);
            } else {
                mls_status cst = mls_format_section_checksum(s->data, s->nbytes, &got_data, err);
                if (cst != MLS_STATUS_OK) return cst;
            }
            if (got_data != mls_rd64(e + MLS_E_CHECKSUM))
                return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                     "checksum mismatch in section '%s': file is corrupt",
                                     s->name);
        }
    }
    return MLS_STATUS_OK;
}

/* ---- reader ---- */

void mls_file_close(mls_file *f)
{
    if (f == NULL) return;
    if (f->mapped && f->len > 0) munmap((void *)f->base, f->len);
    free(f->sections);
    free(f);
}

mls_status mls_format_parse(const void *buf, size_t len, int verify_data, mls_file **out,
                            mls_error *err)
{
    if (out == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT, "mls_format_parse: out is NULL");
    *out = NULL;
    if (buf == NULL && len > 0)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "mls_format_parse: buffer is NULL but length is %zu", len);
    /* Sections must come out 64-byte aligned, as from a mapping: models
     * read them as float/double arrays in place. */
    if ((uintptr_t)buf % MLS_FORMAT_ALIGN != 0)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "mls_format_parse: buffer address is not %d-byte aligned "
                             "(address %% %d == %u); copy it into an aligned buffer",
                             MLS_FORMAT_ALIGN, MLS_FORMAT_ALIGN,
                             (unsigned)((uintptr_t)buf % MLS_FORMAT_ALIGN));
    mls_file *f = calloc(1, sizeof *f);
    if (f == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    f->base = buf;
    f->len = len;
    mls_status st = mls_format_validate(f, verify_data, err);
    if (st != MLS_STATUS_OK) {
        mls_file_close(f);
        return st;
    }
    *out = f;
    return MLS_STATUS_OK;
}

mls_status mls_format_open(const char *path, int verify_data, mls_file **out, mls_error *err)
{
    char ebuf[128];
    if (out == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT, "mls_format_open: out is NULL");
    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT, "mls_format_open: path is empty");

    /* O_NONBLOCK: opening a FIFO must not hang; it is rejected below. */
    int fd;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return mls_error_set_os(err, errno, "cannot open '%s': %s", path,
                             mls_format_strerror(errno, ebuf, sizeof ebuf));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return mls_error_set_os(err, e, "cannot stat '%s': %s", path,
                             mls_format_strerror(e, ebuf, sizeof ebuf));
    }
    if (S_ISDIR(sb.st_mode)) {
        close(fd);
        return mls_error_set_os(err, EISDIR, "cannot load '%s': %s", path,
                             mls_format_strerror(EISDIR, ebuf, sizeof ebuf));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return mls_error_set(err, MLS_STATUS_ERR_IO, "cannot load '%s': not a regular file",
                             path);
    }
    if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return mls_error_set(err, MLS_STATUS_ERR_IO, "cannot load '%s': too large to map", path);
    }

    mls_file *f = calloc(1, sizeof *f);
    if (f == NULL) {
        close(fd);
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    }
    f->len = (size_t)sb.st_size;
    if (f->len > 0) {
        int flags = MAP_PRIVATE;
#ifdef MAP_POPULATE
        /* Verification reads every page: fill the page table in one call
         * instead of taking a fault per page. */
        if (verify_data) flags |= MAP_POPULATE;
#endif
        void *m = mmap(NULL, f->len, PROT_READ, flags, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            free(f);
            return mls_error_set_os(err, e, "cannot map '%s': %s", path,
                                 mls_format_strerror(e, ebuf, sizeof ebuf));
        }
        f->base = m;
        f->mapped = 1;
    }
    close(fd); /* the mapping keeps the file alive */

    mls_error local = {0};
    mls_status st = mls_format_validate(f, verify_data, &local);
    if (st != MLS_STATUS_OK) {
        mls_file_close(f);
        return mls_error_set(err, st, "cannot load '%s': %s", path, local.message);
    }
    *out = f;
    return MLS_STATUS_OK;
}

uint32_t mls_file_kind(const mls_file *f)
{
    return f != NULL ? f->kind : 0;
}

void mls_file_version(const mls_file *f, uint16_t *major, uint16_t *minor)
{
    if (major != NULL) *major = f != NULL ? f->major : 0;
    if (minor != NULL) *minor = f != NULL ? f->minor : 0;
}

const char *mls_file_metadata(const mls_file *f, size_t *len)
{
    if (len != NULL) *len = f != NULL ? f->metadata_len : 0;
    return f != NULL ? f->metadata : NULL;
}

size_t mls_file_section_count(const mls_file *f)
{
    return f != NULL ? f->n_sections : 0;
}

const mls_section *mls_file_section(const mls_file *f, size_t i)
{
    return f != NULL && i < f->n_sections ? &f->sections[i] : NULL;
}

const mls_section *mls_file_find_section(const mls_file *f, const char *name)
{
    if (f == NULL || name == NULL) return NULL;
    for (size_t i = 0; i < f->n_sections; i++)
        if (strcmp(f->sections[i].name, name) == 0) return &f->sections[i];
    return NULL;
}

const void *mls_file_bytes(const mls_file *f, size_t *len)
{
    if (len != NULL) *len = f != NULL ? f->len : 0;
    return f != NULL ? f->base : NULL;
}

/* ---- writer ---- */

static uint64_t mls_format_align_up(uint64_t x)
{
    return (x + (MLS_FORMAT_ALIGN - 1)) & ~(uint64_t)(MLS_FORMAT_ALIGN - 1);
}

static mls_status mls_format_check_inputs(const char *metadata, size_t metadata_len,
                                          const mls_section *sections, size_t n_sections,
                                          mls_error *err)
{
    if (metadata == NULL && metadata_len > 0)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "metadata is NULL but its length is %zu", metadata_len);
    if (metadata_len > MLS_FORMAT_MAX_METADATA)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "metadata is %zu bytes, the limit is %u", metadata_len,
                             MLS_FORMAT_MAX_METADATA);
    size_t bad = mls_format_utf8_end((const unsigned char *)metadata, metadata_len);
    if (bad != metadata_len)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "metadata is not valid UTF-8 text (byte 0x%02x at offset %zu)",
                             (unsigned char)metadata[bad], bad);
    if (n_sections > MLS_FORMAT_MAX_SECTIONS)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "%zu sections given, the limit is %d", n_sections,
                             MLS_FORMAT_MAX_SECTIONS);
    if (sections == NULL && n_sections > 0)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "sections is NULL but n_sections is %zu", n_sections);

    for (size_t i = 0; i < n_sections; i++) {
        const mls_section *s = &sections[i];
        unsigned char badc = 0;
        const char *problem = mls_format_name_problem(s->name, MLS_SECTION_NAME_MAX, &badc);
        if (problem != NULL) {
            if (badc != 0)
                return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                                     "section %zu: name %s (0x%02x; allowed: A-Z a-z 0-9 _ .)",
                                     i, problem, badc);
            return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT, "section %zu: name %s", i,
                                 problem);
        }
        size_t item = mls_dtype_size(s->dtype);
        if (item == 0)
            return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                                 "section '%s': unknown dtype code %d", s->name, (int)s->dtype);
        if (s->ndim < 0 || s->ndim > MLS_SECTION_MAX_NDIM)
            return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                                 "section '%s': ndim is %d, expected 0..%d", s->name,
                                 (int)s->ndim, MLS_SECTION_MAX_NDIM);
        for (int d = 0; d < s->ndim; d++)
            if (s->shape[d] < 0)
                return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                                     "section '%s': dimension %d is negative (%lld)", s->name, d,
                                     (long long)s->shape[d]);
        int64_t count = mls_section_size(s), need;
        if (count < 0 || !mls_size_mul(count, (int64_t)item, &need))
            return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                                 "section '%s': shape is too large", s->name);
        if (s->nbytes != (uint64_t)need)
            return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                                 "section '%s': nbytes is %llu, but %lld %s elements need %lld",
                                 s->name, (unsigned long long)s->nbytes, (long long)count,
                                 mls_dtype_name(s->dtype), (long long)need);
        if (s->data == NULL && s->nbytes > 0)
            return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT, "section '%s': data is NULL",
                                 s->name);
    }

    if (n_sections > 1) {
        const char **names = malloc(n_sections * sizeof *names);
        if (names == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < n_sections; i++) names[i] = sections[i].name;
        const char *dup = mls_format_find_duplicate(names, n_sections);
        mls_status st = MLS_STATUS_OK;
        if (dup != NULL)
            st = mls_error_set(err, MLS_STATUS_ERR_ARGUMENT, "section name '%s' appears twice",
                               dup);
        free(names);
        return st;
    }
    return MLS_STATUS_OK;
}

/* write() until done: retries EINTR and short writes; -1 with errno set. */
static int mls_format_write_all(int fd, const void *buf, uint64_t n)
{
    const unsigned char *p = buf;
    while (n > 0) {
        size_t chunk = n > (UINT64_C(1) << 30) ? (size_t)1 << 30 : (size_t)n;
        ssize_t w = write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        p += w;
        n -= (uint64_t)w;
    }
    return 0;
}

static int mls_format_fsync(int fd)
{
    int rc;
    do {
        rc = fsync(fd);
    } while (rc != 0 && errno == EINTR);
    return rc;
}

/* A per-call random suffix for the temporary name: no shared counter. */
static uint64_t mls_format_nonce(unsigned attempt)
{
    uint64_t r = 0;
#ifdef __linux__
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r) return r;
#endif
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t mix[3] = {(uint64_t)ts.tv_sec, (uint64_t)ts.tv_nsec, (uint64_t)(uintptr_t)&r};
    return mls_checksum64(mix, sizeof mix, attempt);
}

/* Writes head (header + metadata + table) then each section's data, padded
 * with zeros to its offset. Returns 0 or -1 with errno set. */
static int mls_format_write_body(int fd, const unsigned char *head, uint64_t head_len,
                                 const mls_section *sections, size_t n_sections,
                                 const uint64_t *offsets)
{
    static const unsigned char zeros[MLS_FORMAT_ALIGN] = {0};
    if (mls_format_write_all(fd, head, head_len) != 0) return -1;
    uint64_t pos = head_len;
    for (size_t i = 0; i < n_sections; i++) {
        if (sections[i].nbytes == 0) continue;
        if (offsets[i] > pos && mls_format_write_all(fd, zeros, offsets[i] - pos) != 0)
            return -1;
        if (mls_format_write_all(fd, sections[i].data, sections[i].nbytes) != 0) return -1;
        pos = offsets[i] + sections[i].nbytes;
    }
    return 0;
}

mls_status mls_format_write(const char *path, uint32_t kind, const char *metadata,
                            size_t metadata_len, const mls_section *sections, size_t n_sections,
                            mls_error *err)
{
    char ebuf[128];
    if (path == NULL || path[0] == '\0')
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT, "path is empty");
    const char *slash = strrchr(path, '/');
    const char *base = slash != NULL ? slash + 1 : path;
    if (base[0] == '\0')
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "path '%s' ends in '/': give a file name", path);
    mls_status st = mls_format_check_inputs(metadata, metadata_len, sections, n_sections, err);
    if (st != MLS_STATUS_OK) return st;

    /* Layout: header, metadata, table (64-aligned), then each section on a
     * 64-byte boundary; the file ends where the last data ends. */
    uint64_t meta_off = MLS_FORMAT_HEADER_SIZE;
    uint64_t table_off = mls_format_align_up(meta_off + metadata_len);
    uint64_t head_len = table_off + (uint64_t)n_sections * MLS_FORMAT_ENTRY_SIZE;
    uint64_t *offsets = calloc(n_sections > 0 ? n_sections : 1, sizeof *offsets);
    unsigned char *head = calloc(1, (size_t)head_len);
    if (offsets == NULL || head == NULL) {
        free(offsets);
        free(head);
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory writing '%s'", path);
    }
    uint64_t pos = head_len;
    for (size_t i = 0; i < n_sections; i++) {
        uint64_t off = mls_format_align_up(pos);
        if (sections[i].nbytes > UINT64_MAX - MLS_FORMAT_ALIGN - off) {
            free(offsets);
            free(head);
            return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                                 "sections are too large in total for one file");
        }
        offsets[i] = off;
        pos = off + sections[i].nbytes;
    }
    uint64_t total = pos;

    memcpy(head + MLS_H_MAGIC, mls_format_magic, sizeof mls_format_magic);
    mls_wr16(head + MLS_H_MAJOR, MLS_FORMAT_MAJOR);
    mls_wr16(head + MLS_H_MINOR, MLS_FORMAT_MINOR);
    mls_wr32(head + MLS_H_KIND, kind);
    mls_wr64(head + MLS_H_FILE_SIZE, total);
    mls_wr64(head + MLS_H_META_OFFSET, meta_off);
    mls_wr64(head + MLS_H_META_LENGTH, metadata_len);
    mls_wr64(head + MLS_H_TABLE_OFFSET, table_off);
    mls_wr32(head + MLS_H_COUNT, (uint32_t)n_sections);
    if (metadata_len > 0) memcpy(head + meta_off, metadata, metadata_len);
    for (size_t i = 0; i < n_sections; i++) {
        const mls_section *s = &sections[i];
        unsigned char *e = head + table_off + i * MLS_FORMAT_ENTRY_SIZE;
        memcpy(e + MLS_E_NAME, s->name, strlen(s->name)); /* rest stays zero */
        mls_wr32(e + MLS_E_DTYPE, (uint32_t)s->dtype);
        mls_wr32(e + MLS_E_NDIM, (uint32_t)s->ndim);
        for (int d = 0; d < s->ndim; d++) mls_wr64(e + MLS_E_SHAPE + 8 * d, (uint64_t)s->shape[d]);
        mls_wr64(e + MLS_E_OFFSET, offsets[i]);
        mls_wr64(e + MLS_E_LENGTH, s->nbytes);
        uint64_t sum;
        st = mls_format_section_checksum(s->data, s->nbytes, &sum, err);
        if (st != MLS_STATUS_OK) {
            free(offsets);
            free(head);
            return st;
        }
        mls_wr64(e + MLS_E_CHECKSUM, sum);
    }
    mls_wr64(head + MLS_H_CHECKSUM,
             mls_format_header_checksum(head, head + meta_off, metadata_len, head + table_off,
                                        (size_t)n_sections * MLS_FORMAT_ENTRY_SIZE));

    /* Temporary file next to the target (same filesystem, so rename is
     * atomic), hidden, unique by pid and a random nonce, created with O_EXCL
     * so an existing file is never reused. */
    size_t dir_len = slash != NULL ? (size_t)(slash - path) + 1 : 0; /* with the '/' */
    size_t tmp_cap = dir_len + strlen(base) + 64;
    char *tmp = malloc(tmp_cap);
    if (tmp == NULL) {
        free(offsets);
        free(head);
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory writing '%s'", path);
    }
    int fd = -1, e = 0;
    for (unsigned attempt = 0; attempt < 16; attempt++) {
        /* %.200s: stay under NAME_MAX with the suffix. */
        snprintf(tmp, tmp_cap, "%.*s.%.200s.tmp.%ld.%016llx", (int)dir_len, path, base,
                 (long)getpid(), (unsigned long long)mls_format_nonce(attempt));
        do {
            fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        } while (fd < 0 && errno == EINTR);
        if (fd >= 0 || errno != EEXIST) break;
    }
    if (fd < 0) {
        e = errno;
        st = mls_error_set_os(err, e,
                           "cannot save '%s': cannot create a temporary file in its directory "
                           "('%s'): %s",
                           path, tmp, mls_format_strerror(e, ebuf, sizeof ebuf));
        goto done;
    }

    const char *step = NULL;
    if (mls_format_write_body(fd, head, head_len, sections, n_sections, offsets) != 0)
        step = "write";
    else if (mls_format_fsync(fd) != 0)
        step = "sync";
    if (step != NULL) {
        e = errno;
        close(fd);
        unlink(tmp);
        st = mls_error_set_os(err, e, "cannot save '%s': %s of '%s' failed: %s", path,
                           step, tmp, mls_format_strerror(e, ebuf, sizeof ebuf));
        goto done;
    }
    /* Linux closes the descriptor even when close reports an error, so no
     * retry; an error here can mean data was lost, so it fails the save. */
    if (close(fd) != 0 && errno != EINTR) {
        e = errno;
        unlink(tmp);
        st = mls_error_set_os(err, e, "cannot save '%s': close of '%s' failed: %s",
                           path, tmp, mls_format_strerror(e, ebuf, sizeof ebuf));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        st = mls_error_set_os(err, e, "cannot save '%s': rename from '%s' failed: %s",
                           path, tmp, mls_format_strerror(e, ebuf, sizeof ebuf));
        goto done;
    }

    /* Make the rename itself durable. */
    {
        if (dir_len == 0) snprintf(tmp, tmp_cap, ".");
        else snprintf(tmp, tmp_cap, "%.*s", dir_len > 1 ? (int)dir_len - 1 : 1, path);
        int dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || (mls_format_fsync(dfd) != 0 && errno != EINVAL && errno != EROFS)) {
            e = errno;
            st = mls_error_set_os(err, e,
                               "saved '%s' but could not sync its directory '%s': %s", path, tmp,
                               mls_format_strerror(e, ebuf, sizeof ebuf));
        }
        if (dfd >= 0) close(dfd);
    }

done:
    free(tmp);
    free(offsets);
    free(head);
    return st;
}
