/* libFuzzer target for the JSON parser and number formatter (csrc/mls_json.c).
 *
 * Build and run (from the repository root; clang with libFuzzer):
 *   clang -std=c11 -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
 *       -fno-sanitize-recover=undefined -Icsrc tests/fuzz/fuzz_json.c \
 *       csrc/mls_json.c csrc/mls_status.c -lm -o /tmp/fuzz_json
 *   mkdir -p /tmp/json_corpus
 *   /tmp/fuzz_json -max_total_time=180 -max_len=4096 /tmp/json_corpus
 *
 * Each input is parsed three ways (float64, float32, max_depth 3); a parsed
 * tape is then checked end to end (every node in bounds, strings valid
 * UTF-8, NDARRAY shapes matching their packed data, every number literal
 * converting to its packed value). The input's first bytes are also read as
 * a double and a float, formatted, and parsed back: the text must be the
 * same value (for the float: read with strtof, see fuzz_roundtrip). A crash, a sanitizer report or an abort is a finding.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mls_json.h"

#define FUZZ_CHECK(cond)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "fuzz_json: check failed at line %d: %s\n", __LINE__, #cond);     \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

static int fuzz_utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000)) return 0;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += k + 1;
    }
    return 1;
}

/* Walks the value at nodes[*i] and advances *i past it. */
static void fuzz_walk(const mls_json_doc *d, const char *in, size_t len, size_t *i, int depth)
{
    FUZZ_CHECK(*i < d->n_nodes);
    FUZZ_CHECK(depth < 100000);
    const mls_json_node *n = &d->nodes[(*i)++];
    switch (n->kind) {
    case MLS_JSON_NULL:
    case MLS_JSON_FALSE:
    case MLS_JSON_TRUE: break;
    case MLS_JSON_NUMBER: {
        FUZZ_CHECK((size_t)n->off + n->len <= len && n->len > 0);
        double v;
        int ok = mls_json_number_to_double(in + n->off, n->len, &v);
        FUZZ_CHECK(ok >= 0);
        FUZZ_CHECK(ok == 1 || (n->flags & MLS_JSON_F_INT)); /* float literals never overflow */
        if (n->flags & MLS_JSON_F_PACKED) {
            FUZZ_CHECK(n->aux < d->n_numbers);
            if ((n->flags & MLS_JSON_F_INT) && v == 0) v = 0.0;
            if (d->float32) {
                float p = ((const float *)d->numbers)[n->aux], q = (float)v;
                FUZZ_CHECK(memcmp(&p, &q, sizeof p) == 0);
            } else {
                double p = ((const double *)d->numbers)[n->aux];
                FUZZ_CHECK(memcmp(&p, &v, sizeof p) == 0);
            }
        }
        break;
    }
    case MLS_JSON_STRING: {
        const char *s;
        if (n->flags & MLS_JSON_F_ESCAPED) {
            FUZZ_CHECK((size_t)n->off + n->len <= d->n_strbuf);
            s = d->strbuf + n->off;
        } else {
            FUZZ_CHECK((size_t)n->off + n->len <= len);
            s = in + n->off;
        }
        FUZZ_CHECK(fuzz_utf8_valid((const unsigned char *)s, n->len));
        if (n->flags & MLS_JSON_F_ASCII)
            for (uint32_t k = 0; k < n->len; k++) FUZZ_CHECK((unsigned char)s[k] < 0x80);
        break;
    }
    case MLS_JSON_OBJECT:
        for (uint32_t k = 0; k < n->len; k++) {
            FUZZ_CHECK(*i < d->n_nodes && d->nodes[*i].kind == MLS_JSON_STRING);
            fuzz_walk(d, in, len, i, depth + 1);
            fuzz_walk(d, in, len, i, depth + 1);
        }
        break;
    case MLS_JSON_LIST:
        for (uint32_t k = 0; k < n->len; k++) fuzz_walk(d, in, len, i, depth + 1);
        break;
    case MLS_JSON_NDARRAY: {
        FUZZ_CHECK(n->ndim >= 1 && n->ndim <= MLS_JSON_MAX_NDIM);
        FUZZ_CHECK((size_t)n->aux + n->ndim <= d->n_shapes);
        uint64_t size = 1;
        for (int k = 0; k < n->ndim; k++) {
            FUZZ_CHECK(d->shapes[n->aux + k] >= 0);
            size *= (uint64_t)d->shapes[n->aux + k];
        }
        FUZZ_CHECK(d->shapes[n->aux] == (int64_t)n->len);
        if (n->flags & MLS_JSON_F_BOOL) {
            FUZZ_CHECK(n->off + size <= d->n_bools);
            for (uint64_t k = 0; k < size; k++) FUZZ_CHECK(d->bools[n->off + k] <= 1);
        } else {
            FUZZ_CHECK(n->off + size <= d->n_numbers);
            for (uint64_t k = 0; k < size; k++) {
                double v = d->float32 ? ((const float *)d->numbers)[n->off + k]
                                      : ((const double *)d->numbers)[n->off + k];
                FUZZ_CHECK(isfinite(v));
            }
        }
        break;
    }
    default: FUZZ_CHECK(0);
    }
}

static void fuzz_parse(const char *in, size_t len, int float32, int64_t max_depth)
{
    mls_json_options opt = {float32, max_depth};
    mls_json_doc doc;
    mls_error err;
    memset(&err, 0, sizeof err);
    mls_status st = mls_json_parse(in, len, &opt, &doc, &err);
    if (st != MLS_STATUS_OK) {
        FUZZ_CHECK(st == MLS_STATUS_ERR_VALUE || st == MLS_STATUS_ERR_NOMEM);
        FUZZ_CHECK(err.message[0] != '\0');
        FUZZ_CHECK(doc.nodes == NULL && doc.numbers == NULL);
        return;
    }
    size_t i = 0;
    fuzz_walk(&doc, in, len, &i, 0);
    FUZZ_CHECK(i == doc.n_nodes); /* exactly one value, nothing left over */
    mls_json_doc_free(&doc);
}

static void fuzz_roundtrip(const uint8_t *data, size_t size)
{
    char text[MLS_JSON_FLOAT_MAX_CHARS + 1];
    if (size >= 8) {
        double x, y;
        memcpy(&x, data, 8);
        if (isfinite(x)) {
            size_t n = mls_json_format_f64(x, text);
            FUZZ_CHECK(n > 0 && n <= MLS_JSON_FLOAT_MAX_CHARS);
            text[n] = '\0';
            FUZZ_CHECK(mls_json_number_to_double(text, n, &y) == 1);
            FUZZ_CHECK(memcmp(&x, &y, 8) == 0);
            FUZZ_CHECK(strtod(text, NULL) == x);
            /* every byte of the output parses as one JSON number */
            mls_json_options opt = {0, 4};
            mls_json_doc doc;
            FUZZ_CHECK(mls_json_parse(text, n, &opt, &doc, NULL) == MLS_STATUS_OK);
            mls_json_doc_free(&doc);
        }
    }
    if (size >= 4) {
        float x;
        double y;
        memcpy(&x, data, 4);
        if (isfinite(x)) {
            size_t n = mls_json_format_f32(x, text);
            FUZZ_CHECK(n > 0 && n <= MLS_JSON_FLOAT_MAX_CHARS);
            text[n] = '\0';
            FUZZ_CHECK(mls_json_number_to_double(text, n, &y) == 1);
            /* the text rounds to x when read straight into a float. Read
             * through a double first (as json_decode(float32=True) and
             * numpy do), a handful of floats come back as a neighbour:
             * 7.038531e-26 is nearest to the double that is exactly half-way
             * between two floats (double rounding), so no check on y here. */
            FUZZ_CHECK(strtof(text, NULL) == x);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a private copy, so reads past the end are caught by ASan */
    char *in = (char *)malloc(size ? size : 1);
    if (in == NULL) return 0;
    memcpy(in, data, size);
    fuzz_parse(in, size, 0, 64);
    fuzz_parse(in, size, 1, 64);
    fuzz_parse(in, size, 0, 3);
    free(in);
    fuzz_roundtrip(data, size);
    return 0;
}
