/* libFuzzer target for every model family's loader and predict (csrc/mls_model.c
 * and the family files it dispatches to): what a crafted .mls can reach after
 * the container checks of fuzz_mls_format.c pass.
 *
 * Built and run by tests/test_fuzz_decoders.py (seeded with one small file of
 * every kind); to run by hand, from the repository root (clang with libFuzzer):
 *   clang -std=c11 -g -O1 -D_GNU_SOURCE -DMLS_BLAS_SCIPY_PREFIX=1 \
 *       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *       -Icsrc -I$(python -c "import scipy_openblas32 as s; print(s.get_include_dir())") \
 *       tests/fuzz/fuzz_mls_models.c csrc/mls_?*.c csrc/graph/?*.c \
 *       -L$(python -c "import scipy_openblas32 as s; print(s.get_lib_dir())") -lscipy_openblas -lm \
 *       -Wl,-rpath,$(python -c "import scipy_openblas32 as s; print(s.get_lib_dir())") -o /tmp/fuzz_mls_models
 *
 * Each input is loaded as given and again with its checksums recomputed, so
 * mutations get past the checksums to the families' own validation. A file
 * that loads is then asked for every method's output on a few zero rows: a
 * crash, a sanitizer report or an error without a message is a finding.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mls_format.h"
#include "mls_model.h"

#define FUZZ_ROWS 3
#define FUZZ_MAX_CELLS (1 << 20) /* a crafted model may claim huge widths: skip those */

#include "fuzz_reseal.h"

static void fuzz_predict(const mls_model *m)
{
    if (m->n_features < 1 || m->n_features > FUZZ_MAX_CELLS / FUZZ_ROWS) return;
    size_t width = mls_dtype_size(m->dtype);
    if (width == 0) abort(); /* a loaded model must name an element type */
    void *x = calloc((size_t)(FUZZ_ROWS * m->n_features), width);
    if (x == NULL) return;
    mls_tensor X = {x, m->dtype, FUZZ_ROWS, m->n_features, m->n_features};
    for (int method = 0; method < MLS_METHOD_COUNT_; method++) {
        mls_output_spec spec = {0};
        mls_error err = {0};
        if (mls_model_output_spec(m, (mls_method)method, &spec, &err) != MLS_STATUS_OK) {
            if (err.message[0] == '\0') abort();
            continue;
        }
        int64_t cols = spec.ndim == 1 ? 1 : spec.cols;
        if (cols < 1 || cols > FUZZ_MAX_CELLS / FUZZ_ROWS) continue;
        size_t out_width = mls_dtype_size(spec.dtype);
        if (out_width == 0) abort();
        void *out = malloc((size_t)(FUZZ_ROWS * cols) * out_width);
        if (out == NULL) continue;
        mls_error perr = {0};
        if (mls_model_predict(m, (mls_method)method, &X, out, &perr) != MLS_STATUS_OK &&
            perr.message[0] == '\0')
            abort(); /* failures say why */
        free(out);
    }
    free(x);
}

static void fuzz_load(const unsigned char *buf, size_t len)
{
    mls_file *f = NULL;
    mls_error err = {0};
    if (mls_format_parse(buf, len, 1, &f, &err) != MLS_STATUS_OK) return;
    mls_model *m = NULL;
    mls_error merr = {0};
    if (mls_model_from_file(f, &m, &merr) != MLS_STATUS_OK) {
        if (m != NULL || merr.message[0] == '\0') abort(); /* no model, and a reason */
        mls_file_close(f); /* ownership passes on success only */
        return;
    }
    fuzz_predict(m);
    mls_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t cap = size / 64 * 64 + 64; /* the reader wants a 64-byte aligned buffer */
    unsigned char *buf = aligned_alloc(MLS_FORMAT_ALIGN, cap);
    if (buf == NULL) return 0;
    if (size > 0) memcpy(buf, data, size);
    fuzz_load(buf, size);
    fuzz_reseal(buf, size);
    fuzz_load(buf, size);
    free(buf);
    return 0;
}
