/* mls_json.h: a strict RFC 8259 JSON parser and a shortest-round-trip number
 * formatter, in plain C (no Python.h), for the request/response codecs.
 *
 * Decoding is two phases. mls_json_parse (phase 1, no GIL needed) checks the
 * whole document and writes a compact tape: one mls_json_node per value in
 * document order, where an object of n members is followed by 2n entries
 * (key, value, ...) and a list of n elements by its n elements' entries.
 * Every number whose parent is an array is also packed, in document order,
 * into one float64 (or float32) buffer, and every boolean whose parent is an
 * array into a byte buffer. When an array closes and turns out rectangular
 * with leaves all numbers (or all booleans), its subtree collapses into one
 * MLS_JSON_NDARRAY node: its shape is in doc->shapes and its elements are
 * the contiguous, C-ordered run of the packed buffer starting at node->off.
 * The binding (phase 2, _codec.c) then builds Python objects from the tape.
 *
 * Numbers are converted with correct rounding (bit-identical to Python's
 * float()): Clinger's fast path, then the Eisel-Lemire algorithm, then
 * strtod for the rare inputs neither can decide. Formatting gives the
 * shortest decimal that reads back to the same value (Schubfach), laid out
 * like Python's repr(float).
 */
#ifndef MLS_JSON_H
#define MLS_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "mls_status.h"

/* Largest document mls_json_parse accepts (offsets on the tape are 32-bit). */
#define MLS_JSON_MAX_BYTES ((size_t)UINT32_MAX)
/* Deepest rectangular array that becomes one NDARRAY node; deeper ones
 * become lists of NDARRAY nodes (NumPy's own limit is 64). */
#define MLS_JSON_MAX_NDIM 32
/* Longest output of mls_json_format_f64 / _f32 (no terminating NUL). */
#define MLS_JSON_FLOAT_MAX_CHARS 24

typedef enum mls_json_kind {
    MLS_JSON_NULL = 0,
    MLS_JSON_FALSE,
    MLS_JSON_TRUE,
    MLS_JSON_NUMBER,  /* literal text at in[off .. off+len)                  */
    MLS_JSON_STRING,  /* UTF-8 bytes at in[off..] or doc->strbuf[off..], len */
    MLS_JSON_OBJECT,  /* len members follow: key node, value subtree, ...    */
    MLS_JSON_LIST,    /* len element subtrees follow                         */
    MLS_JSON_NDARRAY  /* ndim, shape at doc->shapes[aux..], data at off      */
} mls_json_kind;

/* node flags */
#define MLS_JSON_F_INT 0x01     /* NUMBER: integer literal (no '.', no exponent) */
#define MLS_JSON_F_PACKED 0x02  /* NUMBER: also in the packed buffer at aux      */
#define MLS_JSON_F_ASCII 0x04   /* STRING: every byte < 0x80                     */
#define MLS_JSON_F_ESCAPED 0x08 /* STRING: decoded bytes live in doc->strbuf     */
#define MLS_JSON_F_BOOL 0x10    /* NDARRAY: elements in doc->bools, not numbers  */

typedef struct mls_json_node {
    uint8_t kind;  /* mls_json_kind */
    uint8_t flags; /* MLS_JSON_F_* */
    uint16_t ndim; /* NDARRAY only */
    uint32_t len;  /* literal/string bytes, member or element count */
    uint32_t off;  /* input offset, strbuf offset, or first packed element */
    uint32_t aux;  /* packed index (NUMBER) or first shape entry (NDARRAY) */
} mls_json_node;

typedef struct mls_json_options {
    int float32;     /* pack numbers as float32 instead of float64 */
    int64_t max_depth; /* most nested arrays/objects allowed (>= 1) */
} mls_json_options;

/* Phase 1 result. Zero-initialise, pass to mls_json_parse, release with
 * mls_json_doc_free. The buffers are plain malloc memory: a caller may take
 * `numbers` or `bools` (set the pointer to NULL) and free() them later. */
typedef struct mls_json_doc {
    mls_json_node *nodes;
    size_t n_nodes, cap_nodes;
    void *numbers; /* double or float (see float32), n_numbers elements */
    size_t n_numbers, cap_numbers;
    uint8_t *bools; /* 0/1 bytes */
    size_t n_bools, cap_bools;
    int64_t *shapes;
    size_t n_shapes, cap_shapes;
    char *strbuf; /* decoded strings that had escapes */
    size_t n_strbuf, cap_strbuf;
    int float32;
} mls_json_doc;

/* Parses and validates the JSON text in[0..len) (UTF-8; a leading UTF-8 BOM
 * is skipped). The input must stay unchanged until the doc is no longer
 * used: nodes refer to it. On error returns MLS_STATUS_ERR_VALUE with
 * "invalid JSON at line L, column C: <problem>", "number out of range at
 * line L, column C" or a nesting message; MLS_STATUS_ERR_NOMEM if an
 * allocation fails. Needs no Python: safe to call without the GIL. */
mls_status mls_json_parse(const char *in, size_t len, const mls_json_options *opt,
                          mls_json_doc *doc, mls_error *err);

void mls_json_doc_free(mls_json_doc *doc);

/* Correctly rounded value of a literal the parser accepted (JSON number
 * grammar, nothing else). Returns 1, or 0 if the value overflows (|x| >
 * DBL_MAX after rounding; *out is then +-inf), or -1 if the rare slow path
 * (more than 19 significant digits, ambiguous or subnormal results) could
 * not allocate its copy of a long literal. */
int mls_json_number_to_double(const char *s, size_t len, double *out);

/* Shortest decimal that reads back as x, in Python's repr layout ("0.1",
 * "1e-07", "1e+16", "100.0", "-0.0"). x must be finite. Writes at most
 * MLS_JSON_FLOAT_MAX_CHARS bytes (no NUL) and returns the count. */
size_t mls_json_format_f64(double x, char *out);
/* Same for a float32: the shortest decimal that reads back as x in float32
 * (like repr(numpy.float32(x))). */
size_t mls_json_format_f32(float x, char *out);

/* Element types of mls_json_write_array. */
typedef enum mls_json_elem {
    MLS_JSON_ELEM_F64 = 0,
    MLS_JSON_ELEM_F32,
    MLS_JSON_ELEM_I8,
    MLS_JSON_ELEM_I16,
    MLS_JSON_ELEM_I32,
    MLS_JSON_ELEM_I64,
    MLS_JSON_ELEM_U8,
    MLS_JSON_ELEM_U16,
    MLS_JSON_ELEM_U32,
    MLS_JSON_ELEM_U64,
    MLS_JSON_ELEM_BOOL
} mls_json_elem;

/* Bytes that mls_json_write_array may write for this array (an upper bound);
 * returns 0 with *out_bytes unset if the bound does not fit in int64. */
int mls_json_array_bound(mls_json_elem elem, int ndim, const int64_t *shape, int64_t *out_bytes);

/* Writes the C-contiguous array as nested JSON arrays, with json.dumps'
 * default separators (", "), into out (capacity cap, at least the bound
 * above). ndim == 0 writes the one scalar. NaN or infinity gives
 * MLS_STATUS_ERR_VALUE "cannot encode NaN or infinity in JSON". */
mls_status mls_json_write_array(const void *data, mls_json_elem elem, int ndim,
                                const int64_t *shape, char *out, size_t cap, size_t *written,
                                mls_error *err);

#endif /* MLS_JSON_H */
