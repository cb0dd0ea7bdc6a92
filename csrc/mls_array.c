#include "mls_array.h"

#include <math.h>
#include <string.h>

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

#define DEFINE_ROW_FINITE(SUFFIX, T, U)                                      \
    static int row_finite_##SUFFIX(const T *row, int64_t n)                   \
    {                                                                        \
        U acc = 0;                                                           \
        for (int64_t j = 0; j < n; j++) {                                    \
            T z = row[j] * (T)0;                                             \
            U bits;                                                          \
            memcpy(&bits, &z, sizeof bits);                                  \
            acc |= bits;                                                     \
        }                                                                    \
        return (acc & EXPONENT_MASK_##SUFFIX) != EXPONENT_MASK_##SUFFIX;     \
    }

#define EXPONENT_MASK_f64 UINT64_C(0x7ff0000000000000)
#define EXPONENT_MASK_f32 UINT32_C(0x7f800000)
DEFINE_ROW_FINITE(f64, double, uint64_t)
DEFINE_ROW_FINITE(f32, float, uint32_t)

int mls_tensor_all_finite(const mls_tensor *X)
{
    /* contiguous rows: one long run */
    int64_t rows = X->rows, cols = X->cols, stride = X->row_stride;
    if (stride == cols) {
        cols *= rows;
        rows = 1;
    }
    for (int64_t i = 0; i < rows; i++) {
        if (X->dtype == MLS_DTYPE_FLOAT64) {
            if (!row_finite_f64((const double *)X->data + i * stride, cols)) return 0;
        } else if (X->dtype == MLS_DTYPE_FLOAT32) {
            if (!row_finite_f32((const float *)X->data + i * stride, cols)) return 0;
        }
    }
    return 1;
}

#define FIND_NON_FINITE(T, SUFFIX)                                                   \
    do {                                                                             \
        for (int64_t i = 0; i < X->rows; i++) {                                      \
            const T *row = (const T *)X->data + i * X->row_stride;                   \
            if (row_finite_##SUFFIX(row, X->cols)) continue;                         \
            for (int64_t j = 0; j < X->cols; j++) {                                  \
                if (!isfinite(row[j]))                                               \
                    return mls_error_set(                                            \
                        err, MLS_STATUS_ERR_VALUE,                                   \
                        "input contains %s at row %lld, column %lld; this model "    \
                        "does not accept NaN or infinity",                           \
                        isnan(row[j]) ? "NaN" : "infinity",                          \
                        (long long)(first_row + i), (long long)j);                   \
            }                                                                        \
        }                                                                            \
    } while (0)

mls_status mls_tensor_check_finite(const mls_tensor *X, int64_t first_row, mls_error *err)
{
    if (X->dtype == MLS_DTYPE_FLOAT64)
        FIND_NON_FINITE(double, f64);
    else if (X->dtype == MLS_DTYPE_FLOAT32)
        FIND_NON_FINITE(float, f32);
    return MLS_STATUS_OK;
}
