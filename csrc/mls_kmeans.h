/* mls_kmeans.h: k-means clustering: the family table (predict = nearest
 * center, transform = distances to every center) and the fit (k-means++
 * seeding, Lloyd iterations). Pure C, float32 or float64, row-major.
 *
 * Sections of a k-means model (names are part of the .mls format):
 *   "cluster_centers"  float32|float64 (n_clusters, n_features), finite,
 *                      n_clusters >= 1. The model computes in its dtype.
 * predict:   int64 (n,) index of the nearest center (the lowest index on a tie)
 * transform: (n, n_clusters) Euclidean distances, in the model's dtype.
 */
#ifndef MLS_KMEANS_H
#define MLS_KMEANS_H

#include <stdint.h>

#include "mls_array.h"
#include "mls_model.h"
#include "mls_status.h"

extern const mls_model_vtable mls_kmeans_vtable;

/* Called after every Lloyd iteration of every init (from the thread that
 * called mls_kmeans_fit) with the init's number (from 0), the iteration
 * (from 1) and the squared center shift of that iteration. A non-zero return
 * stops the fit, which then returns MLS_STATUS_ERR_ARGUMENT. */
typedef int (*mls_kmeans_progress_fn)(void *ctx, int64_t init, int64_t iteration,
                                      double center_shift);

typedef struct mls_kmeans_fit_params {
    int64_t n_clusters;  /* >= 1, <= rows of X */
    int64_t max_iter;    /* >= 1 */
    double tol;          /* absolute bound on the summed squared center shift */
    int64_t n_init;      /* >= 1; the init of the lowest inertia is kept */
    uint64_t seed;       /* k-means++ draws (xoshiro256** seeded by splitmix64) */
    const void *init;    /* (n_clusters, cols) centers of X's dtype, or NULL for k-means++ */
    int64_t n_local_trials; /* k-means++ candidates per center; <= 0: 2 + floor(ln k) */
    int n_threads;       /* worker threads for the Lloyd passes, >= 1 */
    mls_kmeans_progress_fn progress; /* may be NULL */
    void *progress_ctx;
} mls_kmeans_fit_params;

/* Fits k-means to X (float32 or float64, finite; checked by the caller),
 * with optional sample weights (n,) (finite, >= 0, not all zero).
 * Outputs (caller-allocated): centers (n_clusters, cols) of X's dtype,
 * labels (n,), *inertia (weighted sum of squared distances to the labels'
 * centers), *n_iter (Lloyd iterations of the kept init). */
mls_status mls_kmeans_fit(const mls_tensor *X, const double *sample_weight,
                          const mls_kmeans_fit_params *params, void *centers,
                          int64_t *labels, double *inertia, int64_t *n_iter, mls_error *err);

#endif /* MLS_KMEANS_H */
