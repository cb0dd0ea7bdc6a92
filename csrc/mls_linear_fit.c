/* mls_linear_fit.c: fitting of the linear family (declared in mls_linear.h).
 *
 * Least squares (LinearRegression, Ridge), as scikit-learn does it:
 *   - fit_intercept: centre X and Y on their (weighted) means, solve for
 *     coef without intercept, then intercept = mean(Y) - coef @ mean(X);
 *   - sample weights: rows scaled by sqrt(w);
 *   - alpha == 0: minimum-norm least squares by LAPACK dgelsd (SVD), with
 *     singular values below LSTSQ_RCOND * max(n, d) * s_max treated as zero
 *     (numpy.linalg.lstsq's default), so exactly collinear columns give the
 *     minimum-norm coefficients. scikit-learn >= 1.9 passes cond = 1e-6
 *     (LinearRegression(tol=1e-6)) instead: results differ only for X of
 *     condition number between 1e6 and ~1e13, which it truncates;
 *   - alpha > 0, d <= n: Cholesky solve of (Xc'WXc + alpha I) coef' = Xc'WYc,
 *     the Gram matrix accumulated block by block (no copy of X);
 *   - alpha > 0, d > n: the dual (kernel) system (XwXw' + alpha I) A = Yw,
 *     coef = A'Xw, as scikit-learn's cholesky solver does.
 *
 * Logistic regression: L-BFGS (mls_optim.h) on the objective scaled as
 * scikit-learn's LinearModelLoss scales it, which has the same minimiser as
 * the one in mls_linear.h:
 *   F(W, b) = sum_i w_i loss_i / S + ||W||_F^2 / (2 C S),   S = sum_i w_i.
 * Starting from zero, L-BFGS (m = 10, a More-Thuente line search, at most
 * 50 evaluations per line search) runs the algorithm scipy's L-BFGS-B runs
 * for scikit-learn's solver='lbfgs' (independently implemented, so its steps
 * are close to L-BFGS-B's rather than guaranteed identical), and both agree
 * closely at any tol, not only at the optimum (their paths part mainly on
 * ill-conditioned problems).
 * Convergence: max |grad F| <= tol, exactly as scikit-learn passes tol to
 * L-BFGS-B as gtol (tol is absolute, on the scaled objective above).
 * Where L-BFGS-B would also stop because F stopped decreasing by more than a
 * relative 64 * DBL_EPSILON (its ftol in scikit-learn), this goes on while
 * the gradient is above tol, with a line search on the directional
 * derivative (mls_optim.h, "polish"), so a tight tol (1e-8, 1e-10) gets
 * coefficients orders of magnitude closer to the optimum than L-BFGS-B's.
 * It also stops after max_iter iterations (not an error: *n_iter says so), or
 * when no step decreases F any more; the latter is an ERR_NUMERIC only while
 * max |grad F| is still above 1e-3 of its value at the start (no progress
 * at all: typically features of absurd scale).
 * Binary: z = x.w + b, loss = log(1 + e^z) - y z, computed as
 * log1p(e^-|z|) + max(z, 0) - y z. Multinomial: loss = logsumexp(z) - z_y,
 * with the maximum subtracted first. The softmax is unchanged when the same
 * number is added to every intercept; the fitted intercepts are centred to
 * sum to zero (scikit-learn's do too, up to rounding, as its iterates keep
 * the sum at zero).
 */
#include "mls_linear.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mls_array.h"
#include "mls_blas.h"
#include "mls_optim.h"

/* dgelsd cut-off, relative to max(n, d) * s_max (numpy.linalg.lstsq). */
#define LSTSQ_RCOND DBL_EPSILON
/* Rows per block when streaming X: enough for BLAS-3 efficiency, bounded
 * scratch memory (about BLOCK_TARGET_ELEMS doubles). */
#define BLOCK_MIN_ROWS 256
#define BLOCK_MAX_ROWS 8192
#define BLOCK_TARGET_ELEMS ((int64_t)1 << 20)
/* scikit-learn: maxls = 50, ftol = 64 * eps, L-BFGS-B's default m = 10. */
#define LOGISTIC_MAX_LINESEARCH 50
#define LOGISTIC_HISTORY 10
/* A stop without progress: max |g| still above this fraction of its start. */
#define LOGISTIC_STUCK_RATIO 1e-3

/* ---- shared helpers ----------------------------------------------------- */

/* malloc of count doubles (zeroed if `zero`), ERR_NOMEM on overflow/failure. */
static double *alloc_doubles(int64_t count, int zero, const char *what, mls_status *st,
                             mls_error *err)
{
    int64_t bytes;
    if (count < 1) count = 1;
    if (!mls_size_mul(count, (int64_t)sizeof(double), &bytes) || (uint64_t)bytes > SIZE_MAX) {
        *st = mls_error_set(err, MLS_STATUS_ERR_NOMEM, "%s: %lld values are too many to allocate",
                            what, (long long)count);
        return NULL;
    }
    double *p = zero ? calloc((size_t)count, sizeof(double)) : malloc((size_t)bytes);
    if (p == NULL)
        *st = mls_error_set(err, MLS_STATUS_ERR_NOMEM,
                            "could not allocate %lld bytes for %s", (long long)bytes, what);
    return p;
}

static int64_t block_rows_for(int64_t n, int64_t width)
{
    int64_t rows = BLOCK_TARGET_ELEMS / (width > 0 ? width : 1);
    if (rows < BLOCK_MIN_ROWS) rows = BLOCK_MIN_ROWS;
    if (rows > BLOCK_MAX_ROWS) rows = BLOCK_MAX_ROWS;
    return rows < n ? rows : n;
}

/* First NaN/inf of a (rows, cols) row-major matrix -> ERR_VALUE naming it. */
static mls_status check_finite(const char *name, const double *A, int64_t rows, int64_t cols,
                               mls_error *err)
{
    for (int64_t i = 0; i < rows; i++) {
        const double *row = A + i * cols;
        double acc = 0.0;
        for (int64_t j = 0; j < cols; j++) acc += row[j] * 0.0;
        if (acc == 0.0) continue;
        for (int64_t j = 0; j < cols; j++) {
            if (isfinite(row[j])) continue;
            const char *what = isnan(row[j]) ? "NaN" : "infinity";
            if (cols == 1)
                return mls_error_set(err, MLS_STATUS_ERR_VALUE,
                                     "%s contains %s at row %lld; fitting needs finite values",
                                     name, what, (long long)i);
            return mls_error_set(err, MLS_STATUS_ERR_VALUE,
                                 "%s contains %s at row %lld, column %lld; fitting needs "
                                 "finite values",
                                 name, what, (long long)i, (long long)j);
        }
    }
    return MLS_STATUS_OK;
}

/* Weights must be finite, >= 0 and not all zero; *sum gets their sum
 * (n without weights). */
static mls_status check_weights(const double *w, int64_t n, double *sum, mls_error *err)
{
    if (w == NULL) {
        *sum = (double)n;
        return MLS_STATUS_OK;
    }
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(w[i]) || w[i] < 0.0)
            return mls_error_set(err, MLS_STATUS_ERR_VALUE,
                                 "sample_weight[%lld] = %g; sample weights must be finite "
                                 "and >= 0",
                                 (long long)i, w[i]);
        s += w[i];
    }
    if (!(s > 0.0))
        return mls_error_set(err, MLS_STATUS_ERR_VALUE,
                             "sample_weight sums to zero; at least one sample needs a "
                             "positive weight");
    if (!isfinite(s))
        return mls_error_set(err, MLS_STATUS_ERR_VALUE,
                             "sample_weight sums to infinity; rescale the weights");
    *sum = s;
    return MLS_STATUS_OK;
}

static int all_finite(const double *a, int64_t count)
{
    double acc = 0.0;
    for (int64_t i = 0; i < count; i++) acc += a[i] * 0.0;
    return acc == 0.0;
}

static mls_status overflow_error(const char *what, mls_error *err)
{
    return mls_error_set(err, MLS_STATUS_ERR_NUMERIC,
                         "%s overflows double precision: the values of X or y are too "
                         "large; rescale them",
                         what);
}

static mls_status check_blas_size(const char *what, int64_t v, mls_error *err)
{
    if (mls_blas_fits_int(v)) return MLS_STATUS_OK;
    return mls_error_set(err, MLS_STATUS_ERR_SHAPE,
                         "%s = %lld is too large for this build's 32-bit BLAS/LAPACK "
                         "(at most %d)",
                         what, (long long)v, INT_MAX);
}

/* ---- least squares -------------------------------------------------------- */

typedef struct ls_problem {
    const double *X, *Y, *w;
    int64_t n, d, k;
    const double *xmean, *ymean; /* zeros without intercept */
} ls_problem;

static double sqrt_weight(const ls_problem *p, int64_t i)
{
    return p->w != NULL ? sqrt(p->w[i]) : 1.0;
}

/* Rows [i0, i0 + rows) of sqrt(w) * (X - xmean), row-major into Xb (rows, d),
 * and of sqrt(w) * (Y - ymean) into Yb (rows, k). */
static void ls_fill_rows(const ls_problem *p, int64_t i0, int64_t rows, double *Xb, double *Yb)
{
    for (int64_t r = 0; r < rows; r++) {
        int64_t i = i0 + r;
        double s = sqrt_weight(p, i);
        const double *x = p->X + i * p->d;
        const double *y = p->Y + i * p->k;
        double *xo = Xb + r * p->d, *yo = Yb + r * p->k;
        for (int64_t j = 0; j < p->d; j++) xo[j] = (x[j] - p->xmean[j]) * s;
        for (int64_t c = 0; c < p->k; c++) yo[c] = (y[c] - p->ymean[c]) * s;
    }
}

/* alpha == 0: coef = pinv(Xw) Yw by dgelsd. */
static mls_status ls_solve_gelsd(const ls_problem *p, double *coef, mls_error *err)
{
    const int64_t n = p->n, d = p->d, k = p->k;
    const int64_t ldb = n > d ? n : d, minnd = n < d ? n : d;
    mls_status st = MLS_STATUS_OK;
    if ((st = check_blas_size("rows (n_samples)", n, err)) != MLS_STATUS_OK ||
        (st = check_blas_size("columns (n_features)", d, err)) != MLS_STATUS_OK ||
        (st = check_blas_size("targets", k, err)) != MLS_STATUS_OK)
        return st;
    int64_t a_len, b_len;
    if (!mls_size_mul(n, d, &a_len) || !mls_size_mul(ldb, k, &b_len))
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "least squares problem too large");

    double *A = NULL, *B = NULL, *S = NULL, *work = NULL, *sw = NULL;
    int *iwork = NULL;
    A = alloc_doubles(a_len, 0, "the least squares matrix", &st, err);
    if (A == NULL) goto done;
    B = alloc_doubles(b_len, 1, "the least squares right-hand side", &st, err);
    if (B == NULL) goto done;
    S = alloc_doubles(minnd, 0, "singular values", &st, err);
    if (S == NULL) goto done;
    sw = alloc_doubles(n, 0, "square roots of the weights", &st, err);
    if (sw == NULL) goto done;

    /* Column-major A (n, d) and B (ldb, k), filled in blocks of rows so
     * that both the reads and the strided writes stay in cache. */
    for (int64_t i = 0; i < n; i++) sw[i] = sqrt_weight(p, i);
    for (int64_t i0 = 0; i0 < n; i0 += 64) {
        int64_t i1 = i0 + 64 < n ? i0 + 64 : n;
        for (int64_t j = 0; j < d; j++) {
            double *col = A + j * n;
            for (int64_t i = i0; i < i1; i++) col[i] = (p->X[i * d + j] - p->xmean[j]) * sw[i];
        }
        for (int64_t c = 0; c < k; c++) {
            double *col = B + c * ldb;
            for (int64_t i = i0; i < i1; i++) col[i] = (p->Y[i * k + c] - p->ymean[c]) * sw[i];
        }
    }

    int m_ = (int)n, n_ = (int)d, nrhs = (int)k, lda = (int)n, ldb_ = (int)ldb;
    int rank = 0, info = 0, lwork = -1;
    double rcond = LSTSQ_RCOND * (double)(n > d ? n : d);
    double work_query = 0.0;
    int iwork_query = 0;
    mls_lapack_dgelsd(&m_, &n_, &nrhs, A, &lda, B, &ldb_, S, &rcond, &rank, &work_query,
                      &lwork, &iwork_query, &info);
    if (info != 0) {
        st = mls_error_set(err, MLS_STATUS_ERR_NUMERIC,
                           "LAPACK dgelsd workspace query failed (info=%d)", info);
        goto done;
    }
    /* LIWORK >= 3 minnd nlvl + 11 minnd, nlvl = max(0, log2(minnd / 26) + 1)
     * (dgelsd documentation), in case the query under-reports it. */
    int64_t nlvl = 0;
    if (minnd > 0) {
        nlvl = (int64_t)(log2((double)minnd / 26.0)) + 1;
        if (nlvl < 0) nlvl = 0;
    }
    int64_t liwork = 3 * minnd * nlvl + 11 * minnd;
    if (liwork < iwork_query) liwork = iwork_query;
    if (liwork < 1) liwork = 1;
    int64_t lwork64 = (int64_t)ceil(work_query);
    if (lwork64 < 1) lwork64 = 1;
    if (!mls_blas_fits_int(lwork64) || !mls_blas_fits_int(liwork)) {
        st = mls_error_set(err, MLS_STATUS_ERR_SHAPE,
                           "least squares with %lld rows and %lld features needs a LAPACK "
                           "workspace of %lld values, more than 32-bit LAPACK allows",
                           (long long)n, (long long)d, (long long)lwork64);
        goto done;
    }
    work = alloc_doubles(lwork64, 0, "the LAPACK workspace", &st, err);
    if (work == NULL) goto done;
    iwork = malloc((size_t)liwork * sizeof(int));
    if (iwork == NULL) {
        st = mls_error_set(err, MLS_STATUS_ERR_NOMEM,
                           "could not allocate %lld bytes of LAPACK integer workspace",
                           (long long)liwork * (long long)sizeof(int));
        goto done;
    }
    lwork = (int)lwork64;
    mls_lapack_dgelsd(&m_, &n_, &nrhs, A, &lda, B, &ldb_, S, &rcond, &rank, work, &lwork,
                      iwork, &info);
    if (info > 0) {
        st = mls_error_set(err, MLS_STATUS_ERR_NUMERIC,
                           "least squares: the SVD did not converge (LAPACK dgelsd info=%d)",
                           info);
        goto done;
    }
    if (info < 0) {
        st = mls_error_set(err, MLS_STATUS_ERR_NUMERIC,
                           "least squares: LAPACK dgelsd rejected argument %d", -info);
        goto done;
    }
    for (int64_t c = 0; c < k; c++)
        for (int64_t j = 0; j < d; j++) coef[c * d + j] = B[c * ldb + j];

done:
    free(A);
    free(B);
    free(S);
    free(sw);
    free(work);
    free(iwork);
    return st;
}

static mls_status ls_potrf_failed(int info, int64_t size, double alpha, mls_error *err)
{
    if (info > 0)
        return mls_error_set(err, MLS_STATUS_ERR_NUMERIC,
                             "ridge: the %lldx%lld system is not positive definite "
                             "(Cholesky failed at pivot %d); alpha = %g is too small for "
                             "this data",
                             (long long)size, (long long)size, info, alpha);
    return mls_error_set(err, MLS_STATUS_ERR_NUMERIC,
                         "ridge: LAPACK dposv rejected argument %d", -info);
}

/* alpha > 0, d <= n: (Xw'Xw + alpha I) coef' = Xw'Yw, Gram by blocks. */
static mls_status ls_solve_ridge_primal(const ls_problem *p, double alpha, double *coef,
                                        mls_error *err)
{
    const int64_t n = p->n, d = p->d, k = p->k;
    mls_status st = MLS_STATUS_OK;
    if ((st = check_blas_size("columns (n_features)", d, err)) != MLS_STATUS_OK ||
        (st = check_blas_size("targets", k, err)) != MLS_STATUS_OK)
        return st;
    const int64_t rows_b = block_rows_for(n, d > k ? d : k);
    int64_t g_len, xb_len, yb_len;
    if (!mls_size_mul(d, d, &g_len) || !mls_size_mul(rows_b, d, &xb_len) ||
        !mls_size_mul(rows_b, k, &yb_len))
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "ridge problem too large");
    double *G = NULL, *Xb = NULL, *Yb = NULL;
    G = alloc_doubles(g_len, 1, "the ridge Gram matrix", &st, err);
    if (G == NULL) goto done;
    Xb = alloc_doubles(xb_len, 0, "a block of rows", &st, err);
    if (Xb == NULL) goto done;
    Yb = alloc_doubles(yb_len, 0, "a block of targets", &st, err);
    if (Yb == NULL) goto done;

    /* coef, read as column-major (d, k), is the right-hand side Xw'Yw. */
    memset(coef, 0, (size_t)(k * d) * sizeof(double));
    for (int64_t i0 = 0; i0 < n; i0 += rows_b) {
        int64_t rows = n - i0 < rows_b ? n - i0 : rows_b;
        ls_fill_rows(p, i0, rows, Xb, Yb);
        /* Upper triangle of the row-major Gram = lower of the column-major. */
        mls_cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)rows, 1.0, Xb,
                        (int)d, 1.0, G, (int)d);
        mls_cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)d, (int)rows,
                        1.0, Yb, (int)k, Xb, (int)d, 1.0, coef, (int)d);
    }
    if (!all_finite(G, d * d) || !all_finite(coef, k * d)) {
        st = overflow_error("ridge: X'WX", err);
        goto done;
    }
    for (int64_t j = 0; j < d; j++) G[j * d + j] += alpha;
    int dn = (int)d, nrhs = (int)k, info = 0;
    mls_lapack_dposv("L", &dn, &nrhs, G, &dn, coef, &dn, &info, 1);
    if (info != 0) st = ls_potrf_failed(info, d, alpha, err);

done:
    free(G);
    free(Xb);
    free(Yb);
    return st;
}

/* alpha > 0, d > n: (XwXw' + alpha I) A = Yw, coef = A'Xw. */
static mls_status ls_solve_ridge_dual(const ls_problem *p, double alpha, double *coef,
                                      mls_error *err)
{
    const int64_t n = p->n, d = p->d, k = p->k;
    mls_status st = MLS_STATUS_OK;
    if ((st = check_blas_size("rows (n_samples)", n, err)) != MLS_STATUS_OK ||
        (st = check_blas_size("columns (n_features)", d, err)) != MLS_STATUS_OK ||
        (st = check_blas_size("targets", k, err)) != MLS_STATUS_OK)
        return st;
    int64_t x_len, kk_len, y_len;
    if (!mls_size_mul(n, d, &x_len) || !mls_size_mul(n, n, &kk_len) ||
        !mls_size_mul(n, k, &y_len))
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "ridge problem too large");
    double *Xw = NULL, *Yw = NULL, *K = NULL, *A = NULL;
    Xw = alloc_doubles(x_len, 0, "the weighted, centred X", &st, err);
    if (Xw == NULL) goto done;
    Yw = alloc_doubles(y_len, 0, "the weighted, centred y", &st, err);
    if (Yw == NULL) goto done;
    /* Zeroed: dsyrk writes one triangle only and all_finite reads both. */
    K = alloc_doubles(kk_len, 1, "the ridge kernel matrix", &st, err);
    if (K == NULL) goto done;
    A = alloc_doubles(y_len, 0, "the dual coefficients", &st, err);
    if (A == NULL) goto done;

    ls_fill_rows(p, 0, n, Xw, Yw);
    mls_cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)n, (int)d, 1.0, Xw, (int)d,
                    0.0, K, (int)n);
    if (!all_finite(K, n * n)) {
        st = overflow_error("ridge: XWX'", err);
        goto done;
    }
    for (int64_t i = 0; i < n; i++) K[i * n + i] += alpha;
    /* A column-major (n, k) = row-major (k, n) = Yw'. */
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < k; c++) A[c * n + i] = Yw[i * k + c];
    int nn = (int)n, nrhs = (int)k, info = 0;
    mls_lapack_dposv("L", &nn, &nrhs, K, &nn, A, &nn, &info, 1);
    if (info != 0) {
        st = ls_potrf_failed(info, n, alpha, err);
        goto done;
    }
    mls_cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)k, (int)d, (int)n, 1.0, A,
                    (int)n, Xw, (int)d, 0.0, coef, (int)d);

done:
    free(Xw);
    free(Yw);
    free(K);
    free(A);
    return st;
}

mls_status mls_linear_fit_least_squares(const double *X, int64_t n, int64_t d,
                                        const double *Y, int64_t k,
                                        const double *sample_weight, double alpha,
                                        int fit_intercept, double *coef,
                                        double *intercept, mls_error *err)
{
    if (X == NULL || Y == NULL || coef == NULL || intercept == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "least squares fit: X, y, coef and intercept must not be NULL");
    if (n < 1 || d < 1 || k < 1)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE,
                             "least squares fit needs at least 1 sample, 1 feature and 1 "
                             "target, got %lld samples, %lld features, %lld targets",
                             (long long)n, (long long)d, (long long)k);
    if (!isfinite(alpha) || alpha < 0.0)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "alpha must be finite and >= 0, got %g", alpha);
    int64_t nd, nk, kd;
    if (!mls_size_mul(n, d, &nd) || !mls_size_mul(n, k, &nk) || !mls_size_mul(k, d, &kd))
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE,
                             "least squares fit: %lld x %lld is too large", (long long)n,
                             (long long)d);
    mls_status st;
    double sum_w;
    if ((st = check_finite("X", X, n, d, err)) != MLS_STATUS_OK) return st;
    if ((st = check_finite("y", Y, n, k, err)) != MLS_STATUS_OK) return st;
    if ((st = check_weights(sample_weight, n, &sum_w, err)) != MLS_STATUS_OK) return st;

    double *means = alloc_doubles(d + k, 1, "the column means", &st, err);
    if (means == NULL) return st;
    double *xmean = means, *ymean = means + d;
    if (fit_intercept) {
        for (int64_t i = 0; i < n; i++) {
            double wi = sample_weight != NULL ? sample_weight[i] : 1.0;
            if (wi == 0.0) continue;
            const double *x = X + i * d, *y = Y + i * k;
            for (int64_t j = 0; j < d; j++) xmean[j] += wi * x[j];
            for (int64_t c = 0; c < k; c++) ymean[c] += wi * y[c];
        }
        for (int64_t j = 0; j < d + k; j++) means[j] /= sum_w;
    }

    ls_problem p = {X, Y, sample_weight, n, d, k, xmean, ymean};
    if (alpha == 0.0)
        st = ls_solve_gelsd(&p, coef, err);
    else if (d > n)
        st = ls_solve_ridge_dual(&p, alpha, coef, err);
    else
        st = ls_solve_ridge_primal(&p, alpha, coef, err);

    if (st == MLS_STATUS_OK) {
        for (int64_t c = 0; c < k; c++) {
            double b = 0.0;
            if (fit_intercept) {
                b = ymean[c];
                for (int64_t j = 0; j < d; j++) b -= coef[c * d + j] * xmean[j];
            }
            intercept[c] = b;
        }
        if (!all_finite(coef, k * d) || !all_finite(intercept, k))
            st = overflow_error(alpha == 0.0 ? "least squares: the solution"
                                             : "ridge: the solution",
                                err);
    }
    free(means);
    return st;
}

/* ---- logistic regression -------------------------------------------------- */

typedef struct logistic_ctx {
    const double *X;
    const int64_t *y;
    const double *w; /* NULL: all ones */
    int64_t n, d;
    int64_t rows; /* rows of W: 1 (binary) or n_classes */
    int fit_intercept;
    double inv_sum_w; /* 1 / S */
    double l2;        /* 1 / (C S) */
    int64_t block_rows;
    double *Z; /* (block_rows, rows) scores, then pointwise gradients */
} logistic_ctx;

/* Binary: F and grad F; x = [w (d), b]. */
static void logistic_binary_eval(const logistic_ctx *c, const double *x, double *f, double *g)
{
    const int64_t n = c->n, d = c->d;
    const double *W = x;
    const double b = c->fit_intercept ? x[d] : 0.0;
    double *gW = g, gb = 0.0, loss = 0.0;
    memset(gW, 0, (size_t)d * sizeof(double));
    for (int64_t i0 = 0; i0 < n; i0 += c->block_rows) {
        const int64_t rows = n - i0 < c->block_rows ? n - i0 : c->block_rows;
        const double *Xb = c->X + i0 * d;
        double *z = c->Z;
        mls_cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)rows, (int)d, 1.0, Xb, (int)d, W, 1,
                        0.0, z, 1);
        double block_loss = 0.0, block_gb = 0.0;
        for (int64_t r = 0; r < rows; r++) {
            const double zi = z[r] + b;
            const int yi = c->y[i0 + r] == 1;
            const double wi = c->w != NULL ? c->w[i0 + r] : 1.0;
            /* e = exp(-|z|); loss = log1p(e) + max(z, 0) - y z;
             * dloss/dz = sigmoid(z) - y, in a form that keeps its digits. */
            const double e = exp(-fabs(zi));
            double li = log1p(e) + (zi > 0.0 ? zi : 0.0) - (yi ? zi : 0.0);
            double gi = zi >= 0.0 ? (yi ? -e : 1.0) / (1.0 + e) : (yi ? -1.0 : e) / (1.0 + e);
            block_loss += wi * li;
            z[r] = wi * gi;
            block_gb += z[r];
        }
        loss += block_loss;
        gb += block_gb;
        mls_cblas_dgemv(CblasRowMajor, CblasTrans, (int)rows, (int)d, 1.0, Xb, (int)d, z, 1, 1.0,
                        gW, 1);
    }
    double norm2 = 0.0;
    for (int64_t j = 0; j < d; j++) {
        norm2 += W[j] * W[j];
        gW[j] = gW[j] * c->inv_sum_w + c->l2 * W[j];
    }
    if (c->fit_intercept) g[d] = gb * c->inv_sum_w;
    *f = loss * c->inv_sum_w + 0.5 * c->l2 * norm2;
}

/* Multinomial: F and grad F; x = [W (K, d) row-major, b (K)]. */
static void logistic_multinomial_eval(const logistic_ctx *c, const double *x, double *f,
                                      double *g)
{
    const int64_t n = c->n, d = c->d, K = c->rows;
    const double *W = x;
    const double *b = c->fit_intercept ? x + K * d : NULL;
    double *gW = g, *gb = c->fit_intercept ? g + K * d : NULL;
    double loss = 0.0;
    memset(g, 0, (size_t)(K * d + (c->fit_intercept ? K : 0)) * sizeof(double));
    for (int64_t i0 = 0; i0 < n; i0 += c->block_rows) {
        const int64_t rows = n - i0 < c->block_rows ? n - i0 : c->block_rows;
        const double *Xb = c->X + i0 * d;
        double *Z = c->Z;
        mls_cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)K, (int)d, 1.0,
                        Xb, (int)d, W, (int)d, 0.0, Z, (int)K);
        double block_loss = 0.0;
        for (int64_t r = 0; r < rows; r++) {
            double *z = Z + r * K;
            const int64_t yi = c->y[i0 + r];
            const double wi = c->w != NULL ? c->w[i0 + r] : 1.0;
            double zmax = -INFINITY;
            for (int64_t j = 0; j < K; j++) {
                if (b != NULL) z[j] += b[j];
                if (z[j] > zmax) zmax = z[j];
            }
            const double zy = z[yi];
            double s = 0.0;
            for (int64_t j = 0; j < K; j++) {
                z[j] = exp(z[j] - zmax);
                s += z[j];
            }
            /* loss = logsumexp(z) - z_y; dloss/dz_j = softmax_j - [j == y] */
            block_loss += wi * (log(s) + zmax - zy);
            const double scale = wi / s;
            for (int64_t j = 0; j < K; j++) z[j] *= scale;
            z[yi] -= wi;
            if (gb != NULL)
                for (int64_t j = 0; j < K; j++) gb[j] += z[j];
        }
        loss += block_loss;
        mls_cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)d, (int)rows, 1.0,
                        Z, (int)K, Xb, (int)d, 1.0, gW, (int)d);
    }
    double norm2 = 0.0;
    for (int64_t j = 0; j < K * d; j++) {
        norm2 += W[j] * W[j];
        gW[j] = gW[j] * c->inv_sum_w + c->l2 * W[j];
    }
    if (gb != NULL)
        for (int64_t j = 0; j < K; j++) gb[j] *= c->inv_sum_w;
    *f = loss * c->inv_sum_w + 0.5 * c->l2 * norm2;
}

static mls_status logistic_fun(void *ctx, const double *x, int64_t nvar, double *f, double *g,
                               mls_error *err)
{
    (void)nvar;
    (void)err;
    const logistic_ctx *c = ctx;
    if (c->rows == 1)
        logistic_binary_eval(c, x, f, g);
    else
        logistic_multinomial_eval(c, x, f, g);
    return MLS_STATUS_OK;
}

mls_status mls_logistic_fit(const double *X, int64_t n, int64_t d, const int64_t *y,
                            int64_t n_classes, const double *sample_weight, double C,
                            int fit_intercept, int max_iter, double tol,
                            const mls_progress *progress, double *coef, double *intercept,
                            int *n_iter, mls_error *err)
{
    if (X == NULL || y == NULL || coef == NULL || intercept == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "logistic fit: X, y, coef and intercept must not be NULL");
    if (n < 1 || d < 1)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE,
                             "logistic regression needs at least 1 sample and 1 feature, got "
                             "%lld samples, %lld features",
                             (long long)n, (long long)d);
    if (n_classes < 2)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "logistic regression needs at least 2 classes, got %lld",
                             (long long)n_classes);
    if (!isfinite(C) || C <= 0.0)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "C must be finite and > 0, got %g", C);
    if (!isfinite(tol) || tol < 0.0)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "tol must be finite and >= 0, got %g", tol);
    if (max_iter < 0)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "max_iter must be >= 0, got %d", max_iter);
    const int64_t rows = n_classes == 2 ? 1 : n_classes;
    mls_status st;
    if ((st = check_blas_size("columns (n_features)", d, err)) != MLS_STATUS_OK ||
        (st = check_blas_size("classes", rows, err)) != MLS_STATUS_OK)
        return st;
    int64_t nd, nvar;
    if (!mls_size_mul(n, d, &nd) || !mls_size_mul(rows, d + 1, &nvar))
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE,
                             "logistic fit: %lld x %lld is too large", (long long)n,
                             (long long)d);
    if (!fit_intercept) nvar -= rows;
    for (int64_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= n_classes)
            return mls_error_set(err, MLS_STATUS_ERR_VALUE,
                                 "y[%lld] = %lld is not a class index in [0, %lld)",
                                 (long long)i, (long long)y[i], (long long)n_classes);
    double sum_w;
    if ((st = check_finite("X", X, n, d, err)) != MLS_STATUS_OK) return st;
    if ((st = check_weights(sample_weight, n, &sum_w, err)) != MLS_STATUS_OK) return st;

    logistic_ctx ctx = {X, y, sample_weight, n, d, rows, fit_intercept != 0, 1.0 / sum_w,
                        1.0 / (C * sum_w), block_rows_for(n, rows), NULL};
    int64_t z_len;
    if (!mls_size_mul(ctx.block_rows, rows, &z_len))
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "logistic fit: too many classes");
    double *x = alloc_doubles(nvar, 1, "the logistic coefficients", &st, err);
    if (x == NULL) return st;
    ctx.Z = alloc_doubles(z_len, 0, "a block of scores", &st, err);
    if (ctx.Z == NULL) {
        free(x);
        return st;
    }

    mls_lbfgs_options opts;
    mls_lbfgs_options_default(&opts);
    opts.m = LOGISTIC_HISTORY;
    opts.max_iter = max_iter;
    opts.max_linesearch = LOGISTIC_MAX_LINESEARCH;
    /* Only max_iter bounds the work, so n_iter < max_iter means the solver
     * stopped for a reason of its own. */
    opts.max_eval = (int64_t)(max_iter + 1) * 2 * (LOGISTIC_MAX_LINESEARCH + 1);
    opts.gtol = tol;
    opts.ftol = 64 * DBL_EPSILON;
    if (progress != NULL) opts.progress = *progress;
    mls_lbfgs_result res;
    st = mls_lbfgs_minimize(logistic_fun, &ctx, x, nvar, &opts, &res, err);
    if (st == MLS_STATUS_OK &&
        (res.stop == MLS_LBFGS_STOP_LINESEARCH || res.stop == MLS_LBFGS_STOP_STALLED) &&
        res.grad_max > tol && res.grad_max > LOGISTIC_STUCK_RATIO * res.grad_max_start)
        /* Stopping short of tol is normal once rounding dominates, but not
         * while the gradient is still of the size it had at the start. */
        st = mls_error_set(err, MLS_STATUS_ERR_NUMERIC,
                           "logistic regression: L-BFGS could not decrease the objective "
                           "after %d iterations (largest gradient component %g, %g at "
                           "the start); the features are probably badly scaled: "
                           "standardise them",
                           res.n_iter, res.grad_max, res.grad_max_start);
    if (st == MLS_STATUS_OK) {
        memcpy(coef, x, (size_t)(rows * d) * sizeof(double));
        if (fit_intercept) {
            double mean = 0.0;
            if (rows > 1) {
                for (int64_t j = 0; j < rows; j++) mean += x[rows * d + j];
                mean /= (double)rows;
            }
            for (int64_t j = 0; j < rows; j++) intercept[j] = x[rows * d + j] - mean;
        } else {
            for (int64_t j = 0; j < rows; j++) intercept[j] = 0.0;
        }
        if (n_iter != NULL) *n_iter = res.n_iter;
    }
    free(ctx.Z);
    free(x);
    return st;
}
