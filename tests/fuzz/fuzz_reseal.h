/* The .mls fuzz targets' shared step: reseal a mutated file's checksums.
 * Included by fuzz_mls_format.c and fuzz_mls_models.c (one translation unit each). */
#ifndef FUZZ_RESEAL_H
#define FUZZ_RESEAL_H

#include <stdint.h>
#include <string.h>

#include "mls_format.h"

static uint64_t fuzz_rd64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void fuzz_wr64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Recomputes the checksums where the ranges they cover are in bounds (the chain
 * documented at the top of csrc/mls_format.c), so a mutation reaches the validation
 * behind the checksums instead of stopping at them. */
static void fuzz_reseal(unsigned char *b, size_t len)
{
    if (len < 128) return;
    uint64_t mo = fuzz_rd64(b + 24), ml = fuzz_rd64(b + 32), to = fuzz_rd64(b + 40);
    uint64_t n = (uint64_t)(b[48] | (b[49] << 8) | (b[50] << 16)) | ((uint64_t)b[51] << 24);
    if (mo > len || ml > len - mo || to > len || n > (len - to) / 128) return;
    for (uint64_t i = 0; i < n; i++) {
        unsigned char *e = b + to + i * 128;
        uint64_t off = fuzz_rd64(e + 104), sl = fuzz_rd64(e + 112);
        if (off <= len && sl <= len - off) fuzz_wr64(e + 120, mls_checksum64(b + off, sl, 0));
    }
    unsigned char h[128];
    memcpy(h, b, 128);
    memset(h + 56, 0, 8);
    uint64_t c = mls_checksum64(h, 128, 0);
    c = mls_checksum64(b + mo, ml, c);
    c = mls_checksum64(b + to, n * 128, c);
    fuzz_wr64(b + 56, c);
}

#endif
