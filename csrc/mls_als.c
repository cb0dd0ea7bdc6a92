/* mls_als.c: implicit-feedback ALS, the per-row conjugate-gradient solver
 * (see mls_als.h for the equations).
 *
 * Per row u with n_u entries, one solve costs (cg_steps + 1) products
 * (Y^T Y + reg I) v (f^2 multiply-adds each) and as many passes over the
 * row's n_u factor rows (a dot and an axpy each, 2 f). The vector work is
 * written once as a macro over a few primitives (dot, axpy, scale-add) and
 * instantiated for plain C, AVX2+FMA and AVX-512F; the CPU picks one on the
 * first call. Sums are float32, as the reference implementation's.
 */
#include "mls_als.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mls_blas.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define ALS_HAVE_X86 1
#include <immintrin.h>
#endif

#define ALS_INLINE static inline __attribute__((always_inline))
/* Rows per grab from the shared counter: rows differ in length (a few
 * heavy users), so work is shared out dynamically, in chunks big enough
 * that the atomic increment costs nothing. */
#define ALS_CHUNK_ROWS 32
/* CG stops early once the residual is this small (as the reference). */
#define ALS_CG_EPS 1e-20f

/* ---- checks ---------------------------------------------------------------- */

mls_status mls_als_check_csr(const mls_als_csr *m, const char *what, mls_error *err)
{
    const int64_t nnz = m->nnz;
    if (m->n_rows < 0 || m->n_cols < 0 || nnz < 0)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE,
                             "%s has a negative size: %lld rows, %lld columns, %lld entries", what,
                             (long long)m->n_rows, (long long)m->n_cols, (long long)nnz);
    if (m->n_cols > INT32_MAX)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE,
                             "%s has %lld columns; at most %d are supported", what,
                             (long long)m->n_cols, INT32_MAX);
    if (m->indptr[0] != 0)
        return mls_error_set(err, MLS_STATUS_ERR_VALUE,
                             "%s: indptr must start at 0, starts at %lld", what,
                             (long long)m->indptr[0]);
    for (int64_t u = 0; u < m->n_rows; u++)
        if (m->indptr[u + 1] < m->indptr[u])
            return mls_error_set(err, MLS_STATUS_ERR_VALUE,
                                 "%s: indptr decreases at row %lld (%lld, then %lld)", what,
                                 (long long)u, (long long)m->indptr[u],
                                 (long long)m->indptr[u + 1]);
    if (m->indptr[m->n_rows] != nnz)
        return mls_error_set(err, MLS_STATUS_ERR_VALUE,
                             "%s: indptr ends at %lld but there are %lld entries", what,
                             (long long)m->indptr[m->n_rows], (long long)nnz);
    for (int64_t u = 0; u < m->n_rows; u++) {
        for (int64_t k = m->indptr[u]; k < m->indptr[u + 1]; k++) {
            int32_t i = m->indices[k];
            float r = m->values[k];
            if (i < 0 || i >= m->n_cols)
                return mls_error_set(err, MLS_STATUS_ERR_VALUE,
                                     "%s: column index %ld in row %lld is out of range [0, %lld)",
                                     what, (long)i, (long long)u, (long long)m->n_cols);
            if (!isfinite(r))
                return mls_error_set(err, MLS_STATUS_ERR_VALUE,
                                     "%s has a non-finite value (%g) at row %lld, column %ld; "
                                     "expected finite interaction strengths >= 0",
                                     what, (double)r, (long long)u, (long)i);
            if (r < 0)
                return mls_error_set(err, MLS_STATUS_ERR_VALUE,
                                     "%s has a negative value (%g) at row %lld, column %ld; "
                                     "expected interaction strengths >= 0 (confidence is "
                                     "1 + alpha * value)",
                                     what, (double)r, (long long)u, (long)i);
        }
    }
    return MLS_STATUS_OK;
}

mls_status mls_als_transpose(const mls_als_csr *m, int64_t *t_indptr, int32_t *t_indices,
                             float *t_values, mls_error *err)
{
    const int64_t nnz = m->nnz;
    memset(t_indptr, 0, sizeof(int64_t) * (size_t)(m->n_cols + 1));
    for (int64_t k = 0; k < nnz; k++) t_indptr[m->indices[k] + 1]++;
    for (int64_t i = 0; i < m->n_cols; i++) t_indptr[i + 1] += t_indptr[i];
    /* next free slot per output row, borrowed from a copy of the starts */
    int64_t *next = malloc(sizeof(int64_t) * (size_t)(m->n_cols > 0 ? m->n_cols : 1));
    if (next == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM,
                             "out of memory transposing a matrix with %lld columns",
                             (long long)m->n_cols);
    memcpy(next, t_indptr, sizeof(int64_t) * (size_t)m->n_cols);
    for (int64_t u = 0; u < m->n_rows; u++) {
        for (int64_t k = m->indptr[u]; k < m->indptr[u + 1]; k++) {
            int64_t slot = next[m->indices[k]]++;
            t_indices[slot] = (int32_t)u;
            t_values[slot] = m->values[k];
        }
    }
    free(next);
    return MLS_STATUS_OK;
}

/* ---- vector primitives per ISA --------------------------------------------- */

/* Plain C: four independent partial sums so the loop pipelines. */
ALS_INLINE float als_c_dot(const float *a, const float *b, int64_t n)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++) s0 += a[i] * b[i];
    return (s0 + s2) + (s1 + s3);
}

ALS_INLINE void als_c_axpy(float t, const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] += t * x[i];
}

/* y = x + t * y */
ALS_INLINE void als_c_xpby(const float *x, float t, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = x[i] + t * y[i];
}

#ifdef ALS_HAVE_X86
#define ALS_AVX2 __attribute__((target("avx2,fma")))

ALS_INLINE ALS_AVX2 float als_avx2_hsum(__m256 a)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

ALS_INLINE ALS_AVX2 float als_avx2_dot(const float *a, const float *b, int64_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = als_avx2_hsum(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

ALS_INLINE ALS_AVX2 void als_avx2_axpy(float t, const float *x, float *y, int64_t n)
{
    __m256 vt = _mm256_set1_ps(t);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(vt, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += t * x[i];
}

ALS_INLINE ALS_AVX2 void als_avx2_xpby(const float *x, float t, float *y, int64_t n)
{
    __m256 vt = _mm256_set1_ps(t);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(vt, _mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
    for (; i < n; i++) y[i] = x[i] + t * y[i];
}

#define ALS_AVX512 __attribute__((target("avx512f,avx2,fma")))

ALS_INLINE ALS_AVX512 float als_avx512_dot(const float *a, const float *b, int64_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        __mmask16 mask = (__mmask16)((1u << (n - i)) - 1u);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, a + i), _mm512_maskz_loadu_ps(mask, b + i),
                             s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

ALS_INLINE ALS_AVX512 void als_avx512_axpy(float t, const float *x, float *y, int64_t n)
{
    __m512 vt = _mm512_set1_ps(t);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(vt, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 mask = (__mmask16)((1u << (n - i)) - 1u);
        __m512 r = _mm512_fmadd_ps(vt, _mm512_maskz_loadu_ps(mask, x + i),
                                   _mm512_maskz_loadu_ps(mask, y + i));
        _mm512_mask_storeu_ps(y + i, mask, r);
    }
}

ALS_INLINE ALS_AVX512 void als_avx512_xpby(const float *x, float t, float *y, int64_t n)
{
    __m512 vt = _mm512_set1_ps(t);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(vt, _mm512_loadu_ps(y + i), _mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 mask = (__mmask16)((1u << (n - i)) - 1u);
        __m512 r = _mm512_fmadd_ps(vt, _mm512_maskz_loadu_ps(mask, y + i),
                                   _mm512_maskz_loadu_ps(mask, x + i));
        _mm512_mask_storeu_ps(y + i, mask, r);
    }
}
#endif /* ALS_HAVE_X86 */

/* ---- the per-row CG solve, one instance per ISA ------------------------------ */

/* What every row's solve reads. gram = Y^T Y + reg I (f x f, full). */
typedef struct als_problem {
    const mls_als_csr *m;
    float *factors;
    const float *other;
    const float *gram;
    int64_t f;
    float alpha;
    int cg_steps;
    atomic_llong next_row;
} als_problem;

/* Rows [begin, end) with scratch r, p, ap (f floats each).
 *   r = b - A x, with A x = gram x + sum_i alpha r_ui (y_i . x) y_i
 *   then cg_steps steps of CG on A, warm-started at x. */
#define ALS_DEFINE_SOLVE_ROWS(NAME, ATTR, DOT, AXPY, XPBY)                                     \
    static ATTR void NAME(const als_problem *pb, int64_t begin, int64_t end, float *r, float *p, \
                          float *ap)                                                           \
    {                                                                                          \
        const int64_t f = pb->f;                                                               \
        const float alpha = pb->alpha;                                                         \
        const int64_t *indptr = pb->m->indptr;                                                 \
        const int32_t *indices = pb->m->indices;                                               \
        const float *values = pb->m->values;                                                   \
        for (int64_t u = begin; u < end; u++) {                                                \
            float *x = pb->factors + u * f;                                                    \
            const int64_t lo = indptr[u], hi = indptr[u + 1];                                  \
            if (lo == hi) {                                                                    \
                memset(x, 0, sizeof(float) * (size_t)f);                                       \
                continue;                                                                      \
            }                                                                                  \
            memset(r, 0, sizeof(float) * (size_t)f);                                           \
            for (int64_t j = 0; j < f; j++) AXPY(-x[j], pb->gram + j * f, r, f);               \
            for (int64_t k = lo; k < hi; k++) {                                                \
                const float v = values[k];                                                     \
                if (v == 0) continue; /* r == 0: no preference, confidence 1 */                \
                const float *y = pb->other + (int64_t)indices[k] * f;                          \
                const float c1 = alpha * v; /* confidence - 1 */                               \
                AXPY((1.0f + c1) - c1 * DOT(y, x, f), y, r, f);                                \
            }                                                                                  \
            memcpy(p, r, sizeof(float) * (size_t)f);                                           \
            float rsold = DOT(r, r, f);                                                        \
            if (rsold < ALS_CG_EPS) continue;                                                  \
            for (int step = 0; step < pb->cg_steps; step++) {                                  \
                memset(ap, 0, sizeof(float) * (size_t)f);                                      \
                for (int64_t j = 0; j < f; j++) AXPY(p[j], pb->gram + j * f, ap, f);           \
                for (int64_t k = lo; k < hi; k++) {                                            \
                    const float v = values[k];                                                 \
                    if (v == 0) continue;                                                      \
                    const float *y = pb->other + (int64_t)indices[k] * f;                      \
                    AXPY(alpha * v * DOT(y, p, f), y, ap, f);                                  \
                }                                                                              \
                const float pap = DOT(p, ap, f);                                               \
                if (!(pap > 0)) break; /* p is 0 to float precision: converged */             \
                const float step_len = rsold / pap;                                            \
                AXPY(step_len, p, x, f);                                                       \
                AXPY(-step_len, ap, r, f);                                                     \
                const float rsnew = DOT(r, r, f);                                              \
                if (rsnew < ALS_CG_EPS) break;                                                 \
                XPBY(r, rsnew / rsold, p, f);                                                  \
                rsold = rsnew;                                                                 \
            }                                                                                  \
        }                                                                                      \
    }

ALS_DEFINE_SOLVE_ROWS(als_solve_rows_c, , als_c_dot, als_c_axpy, als_c_xpby)
#ifdef ALS_HAVE_X86
ALS_DEFINE_SOLVE_ROWS(als_solve_rows_avx2, ALS_AVX2, als_avx2_dot, als_avx2_axpy, als_avx2_xpby)
ALS_DEFINE_SOLVE_ROWS(als_solve_rows_avx512, ALS_AVX512, als_avx512_dot, als_avx512_axpy,
                      als_avx512_xpby)
#endif

typedef void (*als_solve_rows_fn)(const als_problem *, int64_t, int64_t, float *, float *,
                                  float *);

typedef enum als_kernel { ALS_KERNEL_C, ALS_KERNEL_AVX2, ALS_KERNEL_AVX512 } als_kernel;

static als_kernel als_kernel_get(void)
{
#ifdef ALS_HAVE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"))
        return ALS_KERNEL_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ALS_KERNEL_AVX2;
#endif
    return ALS_KERNEL_C;
}

static als_solve_rows_fn als_solve_rows_for(als_kernel kernel)
{
    switch (kernel) {
#ifdef ALS_HAVE_X86
    case ALS_KERNEL_AVX512: return als_solve_rows_avx512;
    case ALS_KERNEL_AVX2: return als_solve_rows_avx2;
#endif
    default: return als_solve_rows_c;
    }
}

const char *mls_als_kernel_name(void)
{
    switch (als_kernel_get()) {
    case ALS_KERNEL_AVX512: return "avx512";
    case ALS_KERNEL_AVX2: return "avx2";
    default: return "c";
    }
}

/* ---- threads ----------------------------------------------------------------- */

int mls_als_thread_count(int requested)
{
    int n = requested;
    if (n <= 0) {
        n = 1;
#ifdef __linux__
        cpu_set_t set;
        if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
            n = CPU_COUNT(&set);
#else
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        if (online > 0) n = (int)online;
#endif
    }
    return n > MLS_ALS_MAX_THREADS ? MLS_ALS_MAX_THREADS : n;
}

typedef struct als_worker {
    als_problem *pb;
    als_solve_rows_fn solve_rows;
    float *scratch; /* 3 f floats */
} als_worker;

static void als_worker_run(als_worker *w)
{
    als_problem *pb = w->pb;
    const int64_t n = pb->m->n_rows, f = pb->f;
    for (;;) {
        int64_t begin = (int64_t)atomic_fetch_add_explicit(&pb->next_row, ALS_CHUNK_ROWS,
                                                           memory_order_relaxed);
        if (begin >= n) break;
        int64_t end = begin + ALS_CHUNK_ROWS < n ? begin + ALS_CHUNK_ROWS : n;
        w->solve_rows(pb, begin, end, w->scratch, w->scratch + f, w->scratch + 2 * f);
    }
}

static void *als_worker_thread(void *arg)
{
    als_worker_run(arg);
    return NULL;
}

/* ---- the Gram matrix --------------------------------------------------------- */

/* gram = Y^T Y (n x f, row-major) + reg I, full f x f, float32 through
 * BLAS ssyrk (in chunks of rows that fit BLAS's int sizes). Sizes checked
 * by the callers. */
static void als_gram(const float *Y, int64_t n, int64_t f, double regularization, float *gram)
{
    const int64_t chunk = INT_MAX / (f > 0 ? f : 1);
    memset(gram, 0, sizeof(float) * (size_t)(f * f));
    for (int64_t start = 0; start < n; start += chunk) {
        int64_t rows = n - start < chunk ? n - start : chunk;
        mls_cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)f, (int)rows, 1.0f,
                        Y + start * f, (int)f, 1.0f, gram, (int)f);
    }
    for (int64_t i = 0; i < f; i++) {
        gram[i * f + i] += (float)regularization;
        for (int64_t j = 0; j < i; j++) gram[i * f + j] = gram[j * f + i];
    }
}

static mls_status als_check_params(int64_t f, double alpha, double regularization,
                                   mls_error *err)
{
    if (f < 1 || f > MLS_ALS_MAX_FACTORS)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "factors must be between 1 and %d, got %lld", MLS_ALS_MAX_FACTORS,
                             (long long)f);
    if (!isfinite(alpha) || alpha < 0)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "alpha must be a finite number >= 0, got %g", alpha);
    if (!isfinite(regularization) || regularization < 0)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "regularization must be a finite number >= 0, got %g",
                             regularization);
    return MLS_STATUS_OK;
}

mls_status mls_als_gram(const float *Y, int64_t n, int64_t f, double regularization,
                        float *gram, mls_error *err)
{
    mls_status st = als_check_params(f, 0.0, regularization, err);
    if (st != MLS_STATUS_OK) return st;
    if (n < 0)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "the factor matrix has %lld rows",
                             (long long)n);
    als_gram(Y, n, f, regularization, gram);
    return MLS_STATUS_OK;
}

mls_status mls_als_solve(const mls_als_csr *m, float *factors, const float *other, int64_t f,
                         double alpha, double regularization, int cg_steps, int n_threads,
                         mls_error *err)
{
    mls_status st = als_check_params(f, alpha, regularization, err);
    if (st != MLS_STATUS_OK) return st;
    if (cg_steps < 1)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT, "cg_steps must be >= 1, got %d",
                             cg_steps);
    if (n_threads < 0)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT, "n_threads must be >= 0, got %d",
                             n_threads);
    int64_t size;
    if (m->n_rows < 0 || m->n_cols < 0 || !mls_blas_fits_int(f) ||
        __builtin_mul_overflow(m->n_rows > m->n_cols ? m->n_rows : m->n_cols, f, &size))
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "factor matrices of %lld and %lld rows "
                             "x %lld factors are too large", (long long)m->n_rows,
                             (long long)m->n_cols, (long long)f);
    st = mls_als_check_csr(m, "user_items", err);
    if (st != MLS_STATUS_OK) return st;
    if (m->n_rows == 0) return MLS_STATUS_OK;

    int threads = mls_als_thread_count(n_threads);
    int64_t chunks = (m->n_rows + ALS_CHUNK_ROWS - 1) / ALS_CHUNK_ROWS;
    if (threads > chunks) threads = (int)chunks;
    float *gram = malloc(sizeof(float) * (size_t)(f * f));
    /* each thread's r, p, Ap on cache lines of its own (no false sharing) */
    const int64_t stride = (3 * f + 15) / 16 * 16 + 16;
    float *scratch = malloc(sizeof(float) * (size_t)stride * (size_t)threads);
    als_worker *workers = malloc(sizeof(als_worker) * (size_t)threads);
    pthread_t *tids = malloc(sizeof(pthread_t) * (size_t)threads);
    int *started = calloc((size_t)threads, sizeof(int));
    if (gram == NULL || scratch == NULL || workers == NULL || tids == NULL || started == NULL) {
        free(gram);
        free(scratch);
        free(workers);
        free(tids);
        free(started);
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM,
                             "out of memory for the ALS solver's scratch (%lld factors, %d "
                             "threads)",
                             (long long)f, threads);
    }
    als_gram(other, m->n_cols, f, regularization, gram);
    als_problem pb = {.m = m, .factors = factors, .other = other, .gram = gram, .f = f,
                      .alpha = (float)alpha, .cg_steps = cg_steps};
    atomic_init(&pb.next_row, 0);
    als_solve_rows_fn solve_rows = als_solve_rows_for(als_kernel_get());
    for (int t = 0; t < threads; t++)
        workers[t] = (als_worker){&pb, solve_rows, scratch + (size_t)stride * (size_t)t};
    /* the caller's thread is worker 0; a thread that cannot start leaves
     * its share to the others (the counter hands out whatever is left) */
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&tids[t], NULL, als_worker_thread, &workers[t]) == 0;
    als_worker_run(&workers[0]);
    for (int t = 1; t < threads; t++)
        if (started[t]) pthread_join(tids[t], NULL);
    free(gram);
    free(scratch);
    free(workers);
    free(tids);
    free(started);
    return MLS_STATUS_OK;
}

/* ---- fold-in: the exact solve for new rows ------------------------------------- */

mls_status mls_als_fold_in(const mls_als_csr *m, const float *other, int64_t f,
                           const float *gram, double alpha, float *out, mls_error *err)
{
    mls_status st = als_check_params(f, alpha, 0.0, err);
    if (st != MLS_STATUS_OK) return st;
    st = mls_als_check_csr(m, "the new users' items", err);
    if (st != MLS_STATUS_OK) return st;
    if (m->n_rows == 0) return MLS_STATUS_OK;
    double *a = malloc(sizeof(double) * (size_t)(f * f));
    double *b = malloc(sizeof(double) * (size_t)f);
    if (a == NULL || b == NULL) {
        free(a);
        free(b);
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM,
                             "out of memory for a %lld x %lld fold-in system", (long long)f,
                             (long long)f);
    }
    const int n = (int)f, one = 1;
    st = MLS_STATUS_OK;
    for (int64_t u = 0; u < m->n_rows && st == MLS_STATUS_OK; u++) {
        float *x = out + u * f;
        for (int64_t j = 0; j < f * f; j++) a[j] = gram[j];
        memset(b, 0, sizeof(double) * (size_t)f);
        int64_t entries = 0;
        for (int64_t k = m->indptr[u]; k < m->indptr[u + 1]; k++) {
            const double v = m->values[k];
            if (v == 0) continue;
            const float *y = other + (int64_t)m->indices[k] * f;
            const double c1 = alpha * v;
            entries++;
            for (int64_t j = 0; j < f; j++) {
                b[j] += (1.0 + c1) * y[j];
                const double cy = c1 * y[j];
                /* the upper triangle in row-major is LAPACK's lower (column-major) */
                for (int64_t l = j; l < f; l++) a[j * f + l] += cy * y[l];
            }
        }
        if (entries == 0) {
            memset(x, 0, sizeof(float) * (size_t)f);
            continue;
        }
        int info = 0;
        mls_lapack_dposv("L", &n, &one, a, &n, b, &n, &info, 1);
        if (info != 0) {
            st = mls_error_set(err, MLS_STATUS_ERR_NUMERIC,
                               "the fold-in system of new user %lld is not positive definite "
                               "(LAPACK dposv info %d); use regularization > 0",
                               (long long)u, info);
            break;
        }
        for (int64_t j = 0; j < f; j++) x[j] = (float)b[j];
    }
    free(a);
    free(b);
    return st;
}
