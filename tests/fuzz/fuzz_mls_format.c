/* libFuzzer target for the .mls reader (csrc/mls_format.c).
 *
 * Build and run (from the repository root; clang with libFuzzer):
 *   clang -std=c11 -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
 *       -fno-sanitize-recover=undefined -Icsrc tests/fuzz/fuzz_mls_format.c \
 *       csrc/mls_format.c csrc/mls_status.c csrc/mls_array.c -o /tmp/fuzz_mls_format
 *   mkdir -p /tmp/mls_corpus    # optionally seed it with a few small .mls files
 *   /tmp/fuzz_mls_format -max_total_time=120 -max_len=65536 /tmp/mls_corpus
 *
 * Each input is parsed as given, then again with its header checksum (and
 * the section checksums) recomputed, so that mutations reach the checks
 * behind the checksum instead of all stopping at "header checksum mismatch".
 * A crash, a sanitizer report or a broken invariant (abort) is a finding.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mls_format.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#define FUZZ_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define FUZZ_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#endif
#endif
#ifndef FUZZ_POISON
#define FUZZ_POISON(p, n) ((void)(p), (void)(n))
#define FUZZ_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#include "fuzz_reseal.h"

/* What a successful parse promises: every pointer lies in the buffer,
 * data is aligned and its size matches shape and dtype. */
static void fuzz_check(const mls_file *f, const unsigned char *buf, size_t len)
{
    size_t ml = 0;
    const char *m = mls_file_metadata(f, &ml);
    if (ml > 0 && ((const unsigned char *)m < buf || ml > len ||
                   (const unsigned char *)m - buf > (ptrdiff_t)(len - ml)))
        abort();
    size_t n = mls_file_section_count(f);
    for (size_t i = 0; i < n; i++) {
        const mls_section *s = mls_file_section(f, i);
        const unsigned char *d = s->data;
        if (s->nbytes > len || d < buf || (size_t)(d - buf) > len - s->nbytes) abort();
        if ((uintptr_t)d % MLS_FORMAT_ALIGN != 0) abort();
        int64_t count = mls_section_size(s);
        if (count < 0 || (uint64_t)count * mls_dtype_size(s->dtype) != s->nbytes) abort();
        if (strlen(s->name) == 0 || mls_file_find_section(f, s->name) != s) abort();
        volatile unsigned char sink = 0;
        for (uint64_t k = 0; k < s->nbytes; k++) sink ^= d[k];
        (void)sink;
    }
    if (mls_file_section(f, n) != NULL) abort();
}

static void fuzz_parse(const unsigned char *buf, size_t len)
{
    for (int verify = 0; verify < 2; verify++) {
        mls_file *f = NULL;
        mls_error err = {0};
        mls_status st = mls_format_parse(buf, len, verify, &f, &err);
        if (st == MLS_STATUS_OK) {
            fuzz_check(f, buf, len);
            mls_file_close(f);
        } else if (f != NULL || err.message[0] == '\0') {
            abort(); /* failures must leave no file and say why */
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The reader wants a 64-byte aligned buffer, as a mapping is; the
     * rounding slack after the input is poisoned so ASan sees overreads. */
    size_t cap = size / 64 * 64 + 64;
    unsigned char *buf = aligned_alloc(MLS_FORMAT_ALIGN, cap);
    if (buf == NULL) return 0;
    if (size > 0) memcpy(buf, data, size);
    FUZZ_POISON(buf + size, cap - size);
    fuzz_parse(buf, size);
    fuzz_reseal(buf, size);
    fuzz_parse(buf, size);
    FUZZ_UNPOISON(buf + size, cap - size);
    free(buf);
    return 0;
}
