/* mls_array.h: element types and the 2-D tensor view every family reads.
 *
 * The binding hands the core C-contiguous rows of the model's dtype
 * (zero-copy when the caller's array already is; one conversion otherwise),
 * so a family only ever sees this one layout.
 */
#ifndef MLS_ARRAY_H
#define MLS_ARRAY_H

#include <stddef.h>
#include <stdint.h>

#include "mls_status.h"

/* Values are part of the .mls format: never renumber. */
typedef enum mls_dtype {
    MLS_DTYPE_INVALID = 0,
    MLS_DTYPE_FLOAT32 = 1,
    MLS_DTYPE_FLOAT64 = 2,
    MLS_DTYPE_INT32 = 3,
    MLS_DTYPE_INT64 = 4,
    MLS_DTYPE_UINT8 = 5,
    MLS_DTYPE_COUNT_
} mls_dtype;

/* Size in bytes of one element, 0 for an unknown dtype. */
size_t mls_dtype_size(mls_dtype dtype);
/* "float32", "float64", ...; "invalid" for an unknown dtype. */
const char *mls_dtype_name(mls_dtype dtype);

/* A read-only batch of rows: element (i, j) is at data[i * row_stride + j]
 * (strides in elements, row_stride >= cols). */
typedef struct mls_tensor {
    const void *data;
    mls_dtype dtype;
    int64_t rows;
    int64_t cols;
    int64_t row_stride;
} mls_tensor;

/* 1 when every element of X (float32/float64) is finite. Branch-free and
 * vectorisable: the bits of x * 0 are +-0 for finite x and a NaN otherwise,
 * so OR-ing them exposes any NaN/inf in the exponent field. */
int mls_tensor_all_finite(const mls_tensor *X);

/* Checks that every element of X is finite; on the first NaN/inf returns
 * MLS_STATUS_ERR_VALUE naming its row (counted from first_row, so a block
 * of a larger batch reports the batch's row) and column. */
mls_status mls_tensor_check_finite(const mls_tensor *X, int64_t first_row, mls_error *err);

/* a * b for sizes, failing on overflow or negative operands. */
int mls_size_mul(int64_t a, int64_t b, int64_t *out);

#endif /* MLS_ARRAY_H */
