/* mls_kmeans.c: k-means: nearest-center predict, distances (transform) and
 * the fit (k-means++ seeding, Lloyd iterations as scikit-learn runs them).
 *
 * Distances of a block of rows to all centers come from one GEMM,
 * ||x||^2 + ||c||^2 - 2 x.c (the Lloyd step of scikit-learn, so the same
 * explicit init gives the same labels); a single row or a tiny model uses
 * plain loops, which beat a BLAS call below a few thousand multiply-adds.
 * The fit splits the rows of each Lloyd pass over n_threads POSIX threads
 * (each with its own sums, reduced after the pass): the linear family has
 * no thread convention of its own beyond BLAS's, and GEMMs of 256 rows are
 * too small for BLAS to split.
 *
 * The bodies for float32 and float64 are in mls_kmeans_typed.h, included
 * twice below.
 */
#include "mls_kmeans.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "mls_blas.h"

/* Rows per GEMM block (scikit-learn's chunk size: the block and its
 * distances stay in L2). */
#define KMEANS_BLOCK_ROWS 256
/* Below this many multiply-adds per block, loops beat a BLAS call. */
#define KMEANS_LOOP_MAX_WORK 4096
/* In the fit, centers x features below which the assignment is loops. */
#define KMEANS_FIT_LOOP_MAX_WORK 64
#define KMEANS_PP_BLOCK_ROWS 4096
#define KMEANS_MAX_THREADS 64
/* Up to this many clusters the fit uses Hamerly's bounds, above it plain
 * Lloyd with GEMM (see mls_kmeans_typed.h). */
#define KMEANS_HAMERLY_MAX_K 64

typedef struct kmeans_state {
    const void *centers;   /* (k, d) row-major, m->dtype */
    void *center_norms;    /* (k,) squared norms, m->dtype, owned */
    int64_t k;
} kmeans_state;

/* ---- random numbers: xoshiro256** seeded by splitmix64 ---------------------- */

typedef struct kmeans_rng {
    uint64_t s[4];
} kmeans_rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void kmeans_rng_seed(kmeans_rng *rng, uint64_t seed)
{
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* Uniform in [0, 1), 53 random bits. */
static double kmeans_rng_uniform(kmeans_rng *rng)
{
    uint64_t *s = rng->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return (double)(result >> 11) * 0x1.0p-53;
}

/* First i with cum[i] >= v (numpy's searchsorted, side "left"), clipped to
 * n - 1; cum is non-decreasing. */
static int64_t kmeans_search(const double *cum, int64_t n, double v)
{
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (cum[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n ? lo : n - 1;
}

/* ---- the typed kernels ------------------------------------------------------ */

#define KM_T double
#define KM_SUF f64
#define KM_GEMM mls_cblas_dgemm
#include "mls_kmeans_typed.h"
#undef KM_T
#undef KM_SUF
#undef KM_GEMM

#define KM_T float
#define KM_SUF f32
#define KM_GEMM mls_cblas_sgemm
#include "mls_kmeans_typed.h"
#undef KM_T
#undef KM_SUF
#undef KM_GEMM

/* ---- the family table --------------------------------------------------------- */

static void kmeans_release(mls_model *m)
{
    kmeans_state *st = m->state;
    if (st != NULL) free(st->center_norms);
    free(st);
    m->state = NULL;
}

static mls_status kmeans_init(mls_model *m, mls_error *err)
{
    kmeans_state *st = calloc(1, sizeof(*st));
    if (st == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    m->state = st;
    const mls_section *c = mls_model_find_section(m, "cluster_centers");
    if (c == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "a kmeans model needs a section 'cluster_centers'");
    if (c->dtype != MLS_DTYPE_FLOAT64 && c->dtype != MLS_DTYPE_FLOAT32)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section 'cluster_centers' must be float32 or float64, got %s",
                             mls_dtype_name(c->dtype));
    if (c->ndim != 2)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section 'cluster_centers' must be 2-D (n_clusters, n_features), "
                             "got %d dimensions",
                             (int)c->ndim);
    const int64_t k = c->shape[0], d = c->shape[1];
    if (k < 1 || d < 1 || !mls_blas_fits_int(k) || !mls_blas_fits_int(d))
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section 'cluster_centers' has an unusable shape (%lld, %lld); "
                             "at least 1 cluster and 1 feature are required",
                             (long long)k, (long long)d);
    /* k x d values: small, so a loaded file's centers are checked too */
    mls_tensor t = {c->data, c->dtype, k, d, d};
    if (!mls_tensor_all_finite(&t))
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section 'cluster_centers' contains NaN or infinity");
    const size_t esize = mls_dtype_size(c->dtype);
    st->center_norms = malloc((size_t)k * esize);
    if (st->center_norms == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    if (c->dtype == MLS_DTYPE_FLOAT64)
        row_norms_f64(c->data, k, d, d, st->center_norms);
    else
        row_norms_f32(c->data, k, d, d, st->center_norms);
    st->centers = c->data;
    st->k = k;
    m->dtype = c->dtype;
    m->n_features = d;
    return MLS_STATUS_OK;
}

static mls_status kmeans_output_spec(const mls_model *m, mls_method method,
                                     mls_output_spec *spec, mls_error *err)
{
    const kmeans_state *st = m->state;
    switch (method) {
    case MLS_METHOD_PREDICT:
        spec->ndim = 1;
        spec->cols = 1;
        spec->dtype = MLS_DTYPE_INT64;
        return MLS_STATUS_OK;
    case MLS_METHOD_TRANSFORM:
        spec->ndim = 2;
        spec->cols = st->k;
        spec->dtype = m->dtype;
        return MLS_STATUS_OK;
    default:
        return mls_error_set(err, MLS_STATUS_ERR_UNSUPPORTED,
                             "a kmeans model has predict and transform only "
                             "(no predict_proba or decision_function)");
    }
}

static mls_status kmeans_predict(const mls_model *m, mls_method method, const mls_tensor *X,
                                 void *out, mls_error *err)
{
    if (m->dtype == MLS_DTYPE_FLOAT64) return predict_f64(m->state, method, X, out, err);
    return predict_f32(m->state, method, X, out, err);
}

const mls_model_vtable mls_kmeans_vtable = {
    .kind = MLS_KIND_KMEANS,
    .name = "kmeans",
    .init = kmeans_init,
    .output_spec = kmeans_output_spec,
    .predict = kmeans_predict,
    .release_state = kmeans_release,
};

/* ---- fit ------------------------------------------------------------------------ */

mls_status mls_kmeans_fit(const mls_tensor *X, const double *sample_weight,
                          const mls_kmeans_fit_params *p, void *centers, int64_t *labels,
                          double *inertia, int64_t *n_iter, mls_error *err)
{
    if (X->dtype != MLS_DTYPE_FLOAT64 && X->dtype != MLS_DTYPE_FLOAT32)
        return mls_error_set(err, MLS_STATUS_ERR_TYPE, "k-means fits float32 or float64, got %s",
                             mls_dtype_name(X->dtype));
    if (X->rows < 1 || X->cols < 1 || X->row_stride < X->cols)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE,
                             "k-means needs at least 1 row and 1 feature, got (%lld, %lld)",
                             (long long)X->rows, (long long)X->cols);
    if (p->n_clusters < 1 || p->n_clusters > X->rows)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "n_samples=%lld should be >= n_clusters=%lld", (long long)X->rows,
                             (long long)p->n_clusters);
    if (p->max_iter < 1 || p->n_init < 1 || !(p->tol >= 0))
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "max_iter and n_init must be >= 1 and tol >= 0, got %lld, %lld, %g",
                             (long long)p->max_iter, (long long)p->n_init, p->tol);
    int64_t kd, nd, trials = p->n_local_trials > 0 ? p->n_local_trials : 64;
    if (!mls_size_mul(p->n_clusters, X->cols, &kd) || !mls_size_mul(X->rows, X->cols, &nd) ||
        !mls_blas_fits_int(X->cols) || !mls_blas_fits_int(p->n_clusters) ||
        !mls_blas_fits_int(trials) || trials > 1024 || kd > INT64_MAX / 16 ||
        nd > INT64_MAX / 16)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE,
                             "k-means problem of %lld x %lld with %lld clusters is too large",
                             (long long)X->rows, (long long)X->cols, (long long)p->n_clusters);
    if (X->dtype == MLS_DTYPE_FLOAT64)
        return fit_f64(X, sample_weight, p, centers, labels, inertia, n_iter, err);
    return fit_f32(X, sample_weight, p, centers, labels, inertia, n_iter, err);
}
