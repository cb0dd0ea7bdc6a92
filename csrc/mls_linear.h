/* mls_linear.h: linear and logistic models: the family tables (predict) and
 * the fitting routines. Pure C, float64 training data, row-major.
 *
 * Sections of a linear model (names are part of the .mls format):
 *   "coef"       float32|float64 (n_features,) or (n_outputs, n_features)
 *   "intercept"  same dtype as coef, (n_outputs,) (n_outputs = 1 for 1-D coef)
 *   "classes"    logistic only, optional: int64|float64 (n_classes,) numeric
 *                labels that predict returns; without it predict returns
 *                int64 class indices (the caller maps non-numeric labels).
 * Logistic: coef has 1 row for 2 classes (sigmoid), else n_classes rows
 * (softmax). The compute dtype of the model is the dtype of coef.
 */
#ifndef MLS_LINEAR_H
#define MLS_LINEAR_H

#include <stdint.h>

#include "mls_model.h"
#include "mls_status.h"
#include "mls_progress.h"

extern const mls_model_vtable mls_linear_regressor_vtable;
extern const mls_model_vtable mls_logistic_regression_vtable;

/* When scores go through mls_gemm_small (for tests and benchmarks): a batch
 * of n rows, 2 <= n <= max_rows(dtype) (0 when MLSERVE_GEMM_SMALL=off,
 * and for dtypes other than float32/float64), for a model with
 * d >= min_features features and k >= outputs_per_row * n outputs. */
int64_t mls_linear_small_batch_max_rows(mls_dtype dtype);
int64_t mls_linear_small_batch_min_features(void);
int64_t mls_linear_small_batch_outputs_per_row(void);

/* Least squares with optional L2 penalty, minimising
 *   sum_i w_i * ||y_i - coef x_i - intercept||^2 + alpha * ||coef||_F^2
 * X: (n, d) row-major; Y: (n, k) row-major; sample_weight: (n,) or NULL.
 * alpha == 0: minimum-norm solution (LAPACK dgelsd; collinear columns fine);
 * alpha > 0: Cholesky solve of the normal equations (or of the dual system
 * when d > n). The intercept is not penalised (data centred first).
 * Outputs: coef (k, d) row-major, intercept (k,) (zeros without intercept). */
mls_status mls_linear_fit_least_squares(const double *X, int64_t n, int64_t d,
                                        const double *Y, int64_t k,
                                        const double *sample_weight, double alpha,
                                        int fit_intercept, double *coef,
                                        double *intercept, mls_error *err);

/* L2-regularised logistic regression by L-BFGS, minimising
 *   C * sum_i w_i * loss_i + 0.5 * ||coef||_F^2   (intercept not penalised)
 * y: (n,) class indices in [0, n_classes). n_classes == 2: one coefficient
 * row (sigmoid, as scikit-learn); n_classes > 2: n_classes rows (softmax).
 * Stops when max |gradient| <= tol, the gradient being that of the same
 * objective scaled by 1 / (C * sum_i w_i) (scikit-learn's gtol; see
 * mls_linear_fit.c), or after max_iter iterations (*n_iter reports how many ran; hitting the limit
 * is not an error, the caller decides whether to warn).
 * progress (may be NULL) hears (iteration, max_iter) after every L-BFGS
 * iteration; a stop returns ERR_ARGUMENT (mls_progress.h).
 * Outputs: coef (rows, d), intercept (rows,). */
mls_status mls_logistic_fit(const double *X, int64_t n, int64_t d, const int64_t *y,
                            int64_t n_classes, const double *sample_weight, double C,
                            int fit_intercept, int max_iter, double tol,
                            const mls_progress *progress, double *coef, double *intercept,
                            int *n_iter, mls_error *err);

#endif /* MLS_LINEAR_H */
