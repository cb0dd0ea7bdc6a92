#include "mls_array.h"

#include <math.h>

size_t mls_dtype_size(mls_dtype dtype)
{
    switch (dtype) {
    case MLS_DTYPE_FLOAT32: return 4;
    case MLS_DTYPE_FLOAT64: return 8;
    case MLS_DTYPE_INT32: return 4;
    case MLS_DTYPE_INT64: return 8;
    case MLS_DTYPE_UINT8: return 1;
    default: return 0;
    }
}

const char *mls_dtype_name(mls_dtype dtype)
{
    switch (dtype) {
    case MLS_DTYPE_FLOAT32: return "float32";
    case MLS_DTYPE_FLOAT64: return "float64";
    case MLS_DTYPE_INT32: return "int32";
    case MLS_DTYPE_INT64: return "int64";
    case MLS_DTYPE_UINT8: return "uint8";
    default: return "invalid";
    }
}

int mls_size_mul(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0) return 0;
    if (a != 0 && b > INT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

#define CHECK_FINITE_ROWS(T)                                                   \
    do {                                                                       \
        const T *base = (const T *)X->data;                                    \
        for (int64_t i = 0; i < X->rows; i++) {                                \
            const T *row = base + i * X->row_stride;                           \
            /* sum first: one branch per row in the common, all-finite case */ \
            T acc = 0;                                                         \
            for (int64_t j = 0; j < X->cols; j++) acc += row[j] * (T)0;        \
            if (isfinite(acc)) continue;                                       \
            for (int64_t j = 0; j < X->cols; j++) {                            \
                if (!isfinite(row[j]))                                         \
                    return mls_error_set(                                      \
                        err, MLS_STATUS_ERR_VALUE,                             \
                        "input contains %s at row %lld, column %lld; this "    \
                        "model does not accept NaN or infinity",               \
                        isnan(row[j]) ? "NaN" : "infinity", (long long)i,      \
                        (long long)j);                                         \
            }                                                                  \
        }                                                                      \
    } while (0)

mls_status mls_tensor_check_finite(const mls_tensor *X, mls_error *err)
{
    if (X->dtype == MLS_DTYPE_FLOAT64) {
        CHECK_FINITE_ROWS(double);
    } else if (X->dtype == MLS_DTYPE_FLOAT32) {
        CHECK_FINITE_ROWS(float);
    }
    return MLS_STATUS_OK;
}
