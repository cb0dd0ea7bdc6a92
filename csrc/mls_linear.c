/* mls_linear.c: prediction for linear regressors (LinearRegression, Ridge)
 * and logistic regression. Fitting lives in mls_linear_fit.c.
 *
 * Scores are X @ coef^T + intercept. Small problems use plain loops (a BLAS
 * call costs more than a 20-feature dot product); larger ones one GEMM per
 * block of rows, so a batch shares each pass over the weights.
 */
#include "mls_linear.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mls_blas.h"
#include "mls_gemm_small.h"
#include "mls_vmath.h"

typedef struct linear_state {
    const void *coef;      /* (k, d) row-major */
    const void *intercept; /* (k,) */
    int64_t k;             /* rows of coef: outputs, or 1 (binary) / n_classes */
    int coef_is_1d;        /* regressor fitted on 1-D y: predict returns (n,) */
    /* logistic only */
    int64_t n_classes;
    const mls_section *classes; /* optional numeric labels */
} linear_state;

/* Below this many multiply-adds per block, loops beat a BLAS call. */
#define LINEAR_LOOP_MAX_WORK 8192
/* Rows per block for classifier post-processing (bounded scratch memory). */
#define LINEAR_BLOCK_ROWS 1024

/* ---- validation shared by both kinds ---------------------------------- */

static mls_status check_finite_section(const mls_section *s, mls_error *err)
{
    mls_tensor t = {s->data, s->dtype, 1, mls_section_size(s), mls_section_size(s)};
    if (!mls_tensor_all_finite(&t))
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section '%s' contains NaN or infinity", s->name);
    return MLS_STATUS_OK;
}

static mls_status init_coef_intercept(mls_model *m, linear_state *st, int allow_1d,
                                      mls_error *err)
{
    const mls_section *coef = mls_model_find_section(m, "coef");
    const mls_section *intercept = mls_model_find_section(m, "intercept");
    if (coef == NULL || intercept == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "a %s model needs sections 'coef' and 'intercept'", m->vt->name);
    if (coef->dtype != MLS_DTYPE_FLOAT64 && coef->dtype != MLS_DTYPE_FLOAT32)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section 'coef' must be float32 or float64, got %s",
                             mls_dtype_name(coef->dtype));
    if (intercept->dtype != coef->dtype)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section 'intercept' must have the dtype of 'coef' (%s), got %s",
                             mls_dtype_name(coef->dtype), mls_dtype_name(intercept->dtype));
    int64_t k, d;
    if (coef->ndim == 1 && allow_1d) {
        k = 1;
        d = coef->shape[0];
        st->coef_is_1d = 1;
    } else if (coef->ndim == 2) {
        k = coef->shape[0];
        d = coef->shape[1];
    } else {
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section 'coef' must be %s, got %d dimensions",
                             allow_1d ? "1-D or 2-D" : "2-D", (int)coef->ndim);
    }
    if (k < 1 || d < 1 || !mls_blas_fits_int(k) || !mls_blas_fits_int(d))
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section 'coef' has an unusable shape (%lld, %lld)",
                             (long long)k, (long long)d);
    if (intercept->ndim != 1 || intercept->shape[0] != k)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section 'intercept' must have shape (%lld,) to match 'coef'",
                             (long long)k);
    if (m->file == NULL) {
        /* Caller-built weights are checked once here. A file's weights were
         * checked when it was created and are covered by its checksums, so a
         * load does not scan them again (that scan would dominate the load). */
        mls_status s = check_finite_section(coef, err);
        if (s == MLS_STATUS_OK) s = check_finite_section(intercept, err);
        if (s != MLS_STATUS_OK) return s;
    }
    st->coef = coef->data;
    st->intercept = intercept->data;
    st->k = k;
    m->dtype = coef->dtype;
    m->n_features = d;
    return MLS_STATUS_OK;
}

static void release_linear_state(mls_model *m)
{
    free(m->state);
    m->state = NULL;
}

/* ---- scores: out[i*ldo + j] = X[i] . coef[j] + intercept[j] ------------ */

/* A single row goes through GEMV, which streams the weights once; GEMM
 * would first pack the whole weight matrix. From 2 rows GEMM wins over GEMV
 * per row (measured on a 500 MB model: GEMV per row re-reads the weights for
 * every row). */
#define LINEAR_GEMV_MAX_ROWS 1
/* From 2 rows up to these, mls_gemm_small for a model whose weights dwarf
 * the batch: it reads the weights once per call where GEMM first packs all
 * of them, but it copies the rows and reduces every output with a
 * horizontal sum, so it needs k >= LINEAR_SMALL_OUTPUTS_PER_ROW * rows
 * and d >= LINEAR_SMALL_MIN_FEATURES. Single-threaded: it runs on the
 * calling thread only, like BLAS in serving (1 thread per call).
 *
 * Measured (benchmarks/bench_linear.py --small-batch; Ridge 2048 features x
 * 1024 outputs, 1 thread, 2-core KVM Xeon with AVX-512; time of the kernel
 * / time of GEMM, and in brackets mlserve/numpy in one process for the kernel
 * vs GEMM):
 *   rows        2     4     8    16    24    32    48    64    96   128
 *   float64  0.41  0.43  0.53  0.60  0.80  0.91  0.87  0.90  0.97  0.94
 *           (0.37/0.95 at 2 rows ... 0.79/0.96 at 32, 1.02/1.00 at 48 and 64,
 *            1.17/1.00 at 96)
 *   float32  0.29  0.31  0.34  0.38  0.44  0.48  0.75  0.77  0.92  0.96
 *           (0.55/0.85 at 32, 0.81/0.88 at 64, 0.93/0.92 at 96, 1.01/0.93 at 128)
 * so the kernel stops winning near 48 rows for float64 and 96 for float32;
 * the cutoffs keep a margin (the same run with these cutoffs: 0.75 at 32
 * rows float64, 0.91 at 64 rows float32). Other shapes, kernel / GEMM at 2,
 * 16, 32 rows, float64: d = 128, k = 8192: 0.39, 0.91, 1.05; d = 32,
 * k = 16384: 0.48, 1.00, 1.17; d = 8, k = 65536: 0.76, 1.21, 1.38;
 * d = 20000, k = 8: 2.45, 1.37, 1.86; d = 100000, k = 3: 1.85 at 2 rows,
 * 2.37 at 32 (float32 alike or worse): hence the bounds on d and k.
 * If the kernel cannot allocate its copy of the rows, GEMM does the block. */
#define LINEAR_SMALL_MAX_ROWS_F64 32
#define LINEAR_SMALL_MAX_ROWS_F32 64
#define LINEAR_SMALL_MIN_FEATURES 128
#define LINEAR_SMALL_OUTPUTS_PER_ROW 16

#define DEFINE_SCORES(SUFFIX, T, GEMM, GEMV, SMALL, SMALL_MAX_ROWS)                       \
    static void scores_##SUFFIX(const linear_state *st, const T *X, int64_t rows,        \
                                int64_t d, int64_t ldx, T *out, int64_t ldo,             \
                                int add_intercept)                                       \
    {                                                                                    \
        const T *coef = (const T *)st->coef;                                             \
        const T *b = (const T *)st->intercept;                                           \
        const int64_t k = st->k;                                                         \
        if (rows * k * d <= LINEAR_LOOP_MAX_WORK) {                                      \
            for (int64_t i = 0; i < rows; i++) {                                         \
                const T *x = X + i * ldx;                                                \
                for (int64_t j = 0; j < k; j++) {                                        \
                    const T *w = coef + j * d;                                           \
                    T acc = 0;                                                           \
                    for (int64_t f = 0; f < d; f++) acc += x[f] * w[f];                  \
                    out[i * ldo + j] = add_intercept ? acc + b[j] : acc;                 \
                }                                                                        \
            }                                                                            \
            return;                                                                      \
        }                                                                                \
        /* BLAS sizes are ints: k, d and the strides were checked at init and by       \
         * the caller; rows are split into int-sized chunks. beta = 0, then the        \
         * intercept is added in one pass over the output. */                           \
        for (int64_t r0 = 0; r0 < rows; r0 += INT_MAX) {                                \
            int64_t n = rows - r0 < INT_MAX ? rows - r0 : INT_MAX;                       \
            if (k == 1) { /* one output: GEMV streams X once */                          \
                GEMV(CblasRowMajor, CblasNoTrans, (int)n, (int)d, 1, X + r0 * ldx,       \
                     (int)ldx, coef, 1, 0, out + r0 * ldo, (int)ldo);                   \
            } else if (n <= LINEAR_GEMV_MAX_ROWS) { /* one row: stream coef once */ \
                for (int64_t i = 0; i < n; i++)                                          \
                    GEMV(CblasRowMajor, CblasNoTrans, (int)k, (int)d, 1, coef, (int)d,   \
                         X + (r0 + i) * ldx, 1, 0, out + (r0 + i) * ldo, 1);            \
            } else if (n <= (SMALL_MAX_ROWS) && d >= LINEAR_SMALL_MIN_FEATURES &&        \
                       k >= LINEAR_SMALL_OUTPUTS_PER_ROW * n &&                          \
                       mls_gemm_small_isa_get() != MLS_GEMM_SMALL_OFF &&                 \
                       SMALL(n, k, d, X + r0 * ldx, ldx, coef, out + r0 * ldo, ldo,      \
                             NULL) == MLS_STATUS_OK) {                                   \
                /* a few rows: weights streamed once, no packing */                     \
            } else {                                                                     \
                GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)k, (int)d, 1, \
                     X + r0 * ldx, (int)ldx, coef, (int)d, 0, out + r0 * ldo, (int)ldo); \
            }                                                                            \
        }                                                                                \
        if (!add_intercept) return;                                                      \
        if (k == 1) {                                                                    \
            const T b0 = b[0];                                                           \
            for (int64_t i = 0; i < rows; i++) out[i * ldo] += b0;                       \
        } else {                                                                         \
            for (int64_t i = 0; i < rows; i++)                                           \
                for (int64_t j = 0; j < k; j++) out[i * ldo + j] += b[j];                \
        }                                                                                \
    }

DEFINE_SCORES(f64, double, mls_cblas_dgemm, mls_cblas_dgemv, mls_gemm_small_f64,
              LINEAR_SMALL_MAX_ROWS_F64)
DEFINE_SCORES(f32, float, mls_cblas_sgemm, mls_cblas_sgemv, mls_gemm_small_f32,
              LINEAR_SMALL_MAX_ROWS_F32)

int64_t mls_linear_small_batch_min_features(void) { return LINEAR_SMALL_MIN_FEATURES; }
int64_t mls_linear_small_batch_outputs_per_row(void) { return LINEAR_SMALL_OUTPUTS_PER_ROW; }

int64_t mls_linear_small_batch_max_rows(mls_dtype dtype)
{
    if (mls_gemm_small_isa_get() == MLS_GEMM_SMALL_OFF) return 0;
    if (dtype == MLS_DTYPE_FLOAT64) return LINEAR_SMALL_MAX_ROWS_F64;
    if (dtype == MLS_DTYPE_FLOAT32) return LINEAR_SMALL_MAX_ROWS_F32;
    return 0;
}

/* Scores for rows [r0, r0 + rows) of X into out (leading dimension ldo; for
 * k == 1, element i at out[i * ldo]), without any NaN check. Without
 * add_intercept, out holds X . coef only and the caller adds the intercept
 * (in T, so the sum rounds as it would here). */
static void compute_scores(const mls_model *m, const mls_tensor *X, int64_t r0, int64_t rows,
                           void *out, int64_t ldo, int add_intercept)
{
    const linear_state *st = m->state;
    const size_t esize = mls_dtype_size(m->dtype);
    const char *x0 = (const char *)X->data + (size_t)(r0 * X->row_stride) * esize;
    if (m->dtype == MLS_DTYPE_FLOAT64)
        scores_f64(st, (const double *)x0, rows, X->cols, X->row_stride, out, ldo,
                   add_intercept);
    else
        scores_f32(st, (const float *)x0, rows, X->cols, X->row_stride, out, ldo,
                   add_intercept);
}

/* Called when a score of rows [r0, r0 + rows) is not finite: an error
 * naming the first NaN or infinity in those input rows, or OK when the
 * input is finite (an overflowing score is a legitimate +-inf). */
static mls_status check_input_rows(const mls_model *m, const mls_tensor *X, int64_t r0,
                                   int64_t rows, mls_error *err)
{
    const size_t esize = mls_dtype_size(m->dtype);
    const char *x0 = (const char *)X->data + (size_t)(r0 * X->row_stride) * esize;
    mls_tensor block = {x0, X->dtype, rows, X->cols, X->row_stride};
    return mls_tensor_check_finite(&block, r0, err);
}

/* Scores, then the NaN policy. NaN and infinity in the input always reach
 * the scores (x * w and x + ... keep them; inf * 0 is NaN), so the input is
 * only rescanned, to name the position, when a score is not finite: the
 * policy costs a pass over k outputs, not d inputs. */
static mls_status linear_scores(const mls_model *m, const mls_tensor *X, int64_t r0,
                                int64_t rows, void *out, int64_t ldo, mls_error *err)
{
    compute_scores(m, X, r0, rows, out, ldo, 1);
    mls_tensor scores = {out, m->dtype, rows, ((const linear_state *)m->state)->k, ldo};
    if (mls_tensor_all_finite(&scores)) return MLS_STATUS_OK;
    return check_input_rows(m, X, r0, rows, err);
}

static mls_status check_strides(const mls_tensor *X, int64_t ldo, mls_error *err)
{
    if (!mls_blas_fits_int(X->row_stride) || !mls_blas_fits_int(ldo))
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE,
                             "rows of %lld elements are too long for BLAS",
                             (long long)X->row_stride);
    return MLS_STATUS_OK;
}

/* ---- linear regressor ---------------------------------------------------- */

static mls_status regressor_init(mls_model *m, mls_error *err)
{
    linear_state *st = calloc(1, sizeof(*st));
    if (st == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    m->state = st;
    return init_coef_intercept(m, st, 1, err);
}

static mls_status regressor_output_spec(const mls_model *m, mls_method method,
                                        mls_output_spec *spec, mls_error *err)
{
    const linear_state *st = m->state;
    if (method != MLS_METHOD_PREDICT)
        return mls_error_set(err, MLS_STATUS_ERR_UNSUPPORTED,
                             "a linear regressor has no predict_proba or decision_function");
    spec->ndim = st->coef_is_1d ? 1 : 2;
    spec->cols = st->k;
    spec->dtype = m->dtype;
    return MLS_STATUS_OK;
}

static mls_status regressor_predict(const mls_model *m, mls_method method,
                                    const mls_tensor *X, void *out, mls_error *err)
{
    const linear_state *st = m->state;
    mls_status s = check_strides(X, st->k, err);
    if (s != MLS_STATUS_OK) return s;
    return linear_scores(m, X, 0, X->rows, out, st->k, err);
}

const mls_model_vtable mls_linear_regressor_vtable = {
    .kind = MLS_KIND_LINEAR_REGRESSOR,
    .name = "linear_regressor",
    .init = regressor_init,
    .output_spec = regressor_output_spec,
    .predict = regressor_predict,
    .release_state = release_linear_state,
};

/* ---- logistic regression ------------------------------------------------- */

static mls_status logistic_init(mls_model *m, mls_error *err)
{
    linear_state *st = calloc(1, sizeof(*st));
    if (st == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    m->state = st;
    mls_status s = init_coef_intercept(m, st, 0, err);
    if (s != MLS_STATUS_OK) return s;
    if (st->k == 2)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "a logistic model has 1 coefficient row (binary) or one per "
                             "class (3 or more), got 2");
    st->n_classes = st->k == 1 ? 2 : st->k;
    const mls_section *classes = mls_model_find_section(m, "classes");
    if (classes != NULL) {
        if (classes->ndim != 1 || classes->shape[0] != st->n_classes ||
            (classes->dtype != MLS_DTYPE_INT64 && classes->dtype != MLS_DTYPE_FLOAT64))
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "section 'classes' must be int64 or float64 of shape "
                                 "(%lld,)",
                                 (long long)st->n_classes);
        st->classes = classes;
    }
    return MLS_STATUS_OK;
}

static mls_status logistic_output_spec(const mls_model *m, mls_method method,
                                       mls_output_spec *spec, mls_error *err)
{
    const linear_state *st = m->state;
    switch (method) {
    case MLS_METHOD_PREDICT:
        spec->ndim = 1;
        spec->cols = 1;
        spec->dtype = st->classes ? st->classes->dtype : MLS_DTYPE_INT64;
        return MLS_STATUS_OK;
    case MLS_METHOD_PREDICT_PROBA:
        spec->ndim = 2;
        spec->cols = st->n_classes;
        spec->dtype = m->dtype;
        return MLS_STATUS_OK;
    case MLS_METHOD_DECISION_FUNCTION:
        spec->ndim = st->k == 1 ? 1 : 2;
        spec->cols = st->k;
        spec->dtype = m->dtype;
        return MLS_STATUS_OK;
    default:
        return mls_error_set(err, MLS_STATUS_ERR_UNSUPPORTED, "unknown method %d", (int)method);
    }
}

/* Writes the label of class `idx` for row i of a predict output. */
static void store_label(const linear_state *st, void *out, int64_t i, int64_t idx)
{
    if (st->classes == NULL) {
        ((int64_t *)out)[i] = idx;
    } else if (st->classes->dtype == MLS_DTYPE_INT64) {
        ((int64_t *)out)[i] = ((const int64_t *)st->classes->data)[idx];
    } else {
        ((double *)out)[i] = ((const double *)st->classes->data)[idx];
    }
}

/* Labels from scores (rows x k, leading dimension ld): the arg max, or
 * z > 0 for a binary model. */
#define DEFINE_LOGISTIC_LABELS(SUFFIX, T)                                               \
    static void logistic_labels_##SUFFIX(const linear_state *st, const T *scores,       \
                                         int64_t ld, int64_t rows, int64_t row0,         \
                                         void *out)                                     \
    {                                                                                   \
        const int64_t k = st->k;                                                        \
        for (int64_t i = 0; i < rows; i++) {                                            \
            const T *z = scores + i * ld;                                               \
            int64_t best = 0;                                                           \
            if (k == 1) {                                                               \
                best = z[0] > 0;                                                        \
            } else {                                                                    \
                for (int64_t j = 1; j < k; j++)                                         \
                    if (z[j] > z[best]) best = j;                                       \
            }                                                                           \
            store_label(st, out, row0 + i, best);                                       \
        }                                                                               \
    }

DEFINE_LOGISTIC_LABELS(f64, double)
DEFINE_LOGISTIC_LABELS(f32, float)

/* Values per exp block: the binary path's scratch lives on the stack. */
#define LOGISTIC_EXP_BLOCK 512

/* Binary probabilities: X . coef sits in column 1 of `out` (2 columns);
 * blocks of rows add the intercept (no separate pass over the column), then
 * p1 = 1 / (1 + exp(-z)) as scikit-learn, p0 = 1 - p1.
 * exp runs over the whole block (mls_vmath_exp_f64, vectorised); large |z|
 * gives exp(-z) = 0 or +inf and so p1 = 1 or 0, never NaN. float32 models
 * compute in double and round once. The scores of the block are checked
 * for NaN/inf here (one pass over a contiguous copy) rather than in
 * linear_scores, whose strided check would cost a call per row. */
#define DEFINE_LOGISTIC_BINARY(SUFFIX, T)                                               \
    static mls_status logistic_binary_##SUFFIX(const mls_model *m, const mls_tensor *X, \
                                               T *out, mls_error *err)                  \
    {                                                                                   \
        double e[LOGISTIC_EXP_BLOCK];                                                   \
        const T b0 = *(const T *)((const linear_state *)m->state)->intercept;           \
        for (int64_t r0 = 0; r0 < X->rows; r0 += LOGISTIC_EXP_BLOCK) {                  \
            const int64_t n =                                                           \
                X->rows - r0 < LOGISTIC_EXP_BLOCK ? X->rows - r0 : LOGISTIC_EXP_BLOCK;  \
            T *o = out + 2 * r0;                                                        \
            for (int64_t i = 0; i < n; i++) e[i] = -(double)(T)(o[2 * i + 1] + b0);     \
            mls_tensor block = {e, MLS_DTYPE_FLOAT64, 1, n, n};                         \
            if (!mls_tensor_all_finite(&block)) {                                       \
                mls_status s = check_input_rows(m, X, r0, n, err);                      \
                if (s != MLS_STATUS_OK) return s;                                       \
            }                                                                           \
            mls_vmath_exp_f64(e, e, n);                                                 \
            for (int64_t i = 0; i < n; i++) {                                           \
                const double p1 = 1.0 / (1.0 + e[i]);                                   \
                o[2 * i] = (T)(1.0 - p1);                                               \
                o[2 * i + 1] = (T)p1;                                                   \
            }                                                                           \
        }                                                                               \
        return MLS_STATUS_OK;                                                           \
    }

DEFINE_LOGISTIC_BINARY(f64, double)
DEFINE_LOGISTIC_BINARY(f32, float)

/* Softmax of each row of `out` (rows x k, scores in place), shifted by the
 * row's max for stability. Rows go through a double scratch of `cap`
 * values: the shifted scores of as many rows as fit, one exp over all of
 * them, then each row divided by its sum. A row whose max is +inf (a
 * score that overflowed) shares its probability among its +inf entries;
 * a row of -inf only is uniform: never NaN. */
#define DEFINE_LOGISTIC_SOFTMAX(SUFFIX, T)                                              \
    static void logistic_softmax_##SUFFIX(const linear_state *st, T *out, int64_t rows, \
                                          double *w, int64_t cap)                       \
    {                                                                                   \
        const int64_t k = st->k;                                                        \
        const int64_t per = cap / k; /* rows per pass, >= 1 (cap >= k) */               \
        for (int64_t r0 = 0; r0 < rows; r0 += per) {                                    \
            const int64_t n = rows - r0 < per ? rows - r0 : per;                        \
            T *o = out + r0 * k;                                                        \
            for (int64_t i = 0; i < n; i++) {                                           \
                const T *z = o + i * k;                                                 \
                double *wi = w + i * k;                                                 \
                double zmax = z[0];                                                     \
                for (int64_t j = 1; j < k; j++)                                         \
                    if (z[j] > zmax) zmax = z[j];                                       \
                if (zmax > -INFINITY && zmax < INFINITY) {                              \
                    for (int64_t j = 0; j < k; j++) wi[j] = (double)z[j] - zmax;        \
                } else { /* +inf entries share 1; all -inf: uniform */                  \
                    for (int64_t j = 0; j < k; j++)                                     \
                        wi[j] = (double)z[j] == zmax ? 0.0 : -INFINITY;                 \
                }                                                                       \
            }                                                                           \
            mls_vmath_exp_f64(w, w, n * k);                                             \
            for (int64_t i = 0; i < n; i++) {                                           \
                const double *wi = w + i * k;                                           \
                T *oi = o + i * k;                                                      \
                double sum = 0;                                                         \
                for (int64_t j = 0; j < k; j++) sum += wi[j];                           \
                for (int64_t j = 0; j < k; j++) oi[j] = (T)(wi[j] / sum);               \
            }                                                                           \
        }                                                                               \
    }

DEFINE_LOGISTIC_SOFTMAX(f64, double)
DEFINE_LOGISTIC_SOFTMAX(f32, float)

static mls_status logistic_predict(const mls_model *m, mls_method method,
                                   const mls_tensor *X, void *out, mls_error *err)
{
    const linear_state *st = m->state;
    const int is64 = m->dtype == MLS_DTYPE_FLOAT64;
    mls_status s = check_strides(X, 2 * st->k, err);
    if (s != MLS_STATUS_OK) return s;
    if (method == MLS_METHOD_DECISION_FUNCTION)
        return linear_scores(m, X, 0, X->rows, out, st->k, err);
    if (method == MLS_METHOD_PREDICT_PROBA) {
        /* one BLAS call for the whole batch, straight into the output, then
         * probabilities in place */
        if (st->k == 1) { /* binary: scores to column 1 (stride 2) */
            const size_t esize = mls_dtype_size(m->dtype);
            compute_scores(m, X, 0, X->rows, (char *)out + esize, 2, 0);
            if (is64) return logistic_binary_f64(m, X, out, err);
            return logistic_binary_f32(m, X, out, err);
        }
        s = linear_scores(m, X, 0, X->rows, out, st->k, err);
        if (s != MLS_STATUS_OK) return s;
        /* scratch for the softmax: a few rows, at least one whole row */
        double stack_w[LOGISTIC_EXP_BLOCK];
        double *w = stack_w;
        int64_t cap = LOGISTIC_EXP_BLOCK;
        if (st->k > cap) {
            cap = st->k;
            w = malloc((size_t)cap * sizeof *w);
            if (w == NULL)
                return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory for scores");
        }
        if (is64)
            logistic_softmax_f64(st, out, X->rows, w, cap);
        else
            logistic_softmax_f32(st, out, X->rows, w, cap);
        if (w != stack_w) free(w);
        return MLS_STATUS_OK;
    }
    /* labels: score blocks of rows into bounded scratch */
    const size_t esize = mls_dtype_size(m->dtype);
    const int64_t block = X->rows < LINEAR_BLOCK_ROWS ? X->rows : LINEAR_BLOCK_ROWS;
    double stack_scores[256]; /* no allocation on the single-row path */
    void *scratch = stack_scores;
    if ((size_t)(block * st->k) * esize > sizeof(stack_scores)) {
        scratch = malloc((size_t)(block * st->k) * esize);
        if (scratch == NULL)
            return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory for scores");
    }
    for (int64_t r0 = 0; r0 < X->rows && s == MLS_STATUS_OK; r0 += block) {
        int64_t n = X->rows - r0 < block ? X->rows - r0 : block;
        s = linear_scores(m, X, r0, n, scratch, st->k, err);
        if (s != MLS_STATUS_OK) break;
        if (is64)
            logistic_labels_f64(st, scratch, st->k, n, r0, out);
        else
            logistic_labels_f32(st, scratch, st->k, n, r0, out);
    }
    if (scratch != stack_scores) free(scratch);
    return s;
}

const mls_model_vtable mls_logistic_regression_vtable = {
    .kind = MLS_KIND_LOGISTIC_REGRESSION,
    .name = "logistic_regression",
    .init = logistic_init,
    .output_spec = logistic_output_spec,
    .predict = logistic_predict,
    .release_state = release_linear_state,
};
