/* mls_topk.h: the recommender family (MLS_KIND_RECOMMENDER): exact top-k by
 * inner product (or cosine) of query vectors against an item matrix.
 *
 * Sections of a recommender (names are part of the .mls format):
 *   "user_factors"     float32|float64 (n_users, d), n_users >= 0, finite
 *   "item_factors"     same dtype, (n_items, d), n_items >= 1, d >= 1, finite
 *   "item_norms"       same dtype, (n_items,): the L2 norm of each item row,
 *                      finite and >= 0 (for cosine, without a pass over
 *                      the items per call)
 *   ids, optional, for users ("user_") and items ("item_") alike, either
 *     "<who>_ids"         int64 (n,)                       integer ids, or
 *     "<who>_id_offsets"  int64 (n + 1,), 0 = first <= ... <= last = len(bytes)
 *     "<who>_id_bytes"    uint8 (len,)                     UTF-8 string ids
 *   (the ids are looked up in Python; C only checks the counts and offsets)
 *
 * The family has no predict (output_spec answers MLS_STATUS_ERR_UNSUPPORTED);
 * its entry point is mls_topk_run. The model dtype is the factors' dtype.
 */
#ifndef MLS_TOPK_H
#define MLS_TOPK_H

#include <stdint.h>

#include "mls_model.h"
#include "mls_status.h"

extern const mls_model_vtable mls_recommender_vtable;

/* One top-k call. Queries are rows of the model dtype with d columns.
 *
 * exclude_indptr/exclude_indices: CSR rows, one per query (or NULL): items
 *   never returned for that query; each row sorted ascending, indices in
 *   [0, n_items). Duplicates are fine.
 * candidates: strictly increasing item indices in [0, n_items) that are
 *   the only items scored (or NULL for all items).
 * cosine: score = dot(q, v) / ||v|| (the caller normalises q), 0 for an
 *   item of norm 0.
 *
 * Order: best score first; equal scores by lower item index. Items whose
 * score is NaN are never returned. A query with fewer than k items left
 * (exclusions) gets index -1 and score -inf in the remaining places.
 */
typedef struct mls_topk_request {
    const void *queries;
    int64_t n_queries;
    int64_t row_stride; /* elements between query rows, >= d */
    int64_t k;          /* 1 <= k <= number of candidates */
    const int64_t *exclude_indptr;  /* (n_queries + 1,) or NULL */
    const int64_t *exclude_indices; /* (n_excluded,) */
    int64_t n_excluded;             /* length of exclude_indices */
    const int64_t *candidates;      /* (n_candidates,) or NULL */
    int64_t n_candidates;
    int cosine;
    int scan;          /* MLS_TOPK_SCAN_AUTO (0) or MLS_TOPK_SCAN_FULL */
    int64_t *rescored; /* (n_queries,) or NULL: items the two-stage scan
                          rescored exactly per query, -1 for a full scan */
} mls_topk_request;

/* req->scan: AUTO takes the two-stage scan over the int8 copy of the items
 * (mls_topk_quant.h) for a few queries when the model has one; FULL always
 * scores every item in float (the two give the same top-k). */
#define MLS_TOPK_SCAN_AUTO 0
#define MLS_TOPK_SCAN_FULL 1

/* Checks every size and index of `req` against the model, then writes
 * out_indices (n_queries, k) int64 and out_scores (n_queries, k) of the
 * model dtype, both caller-allocated. Threads: up to
 * mls_blas_get_num_threads() of its own for batches worth it, each calling
 * BLAS single-threaded (so BLAS threads and these never add up). */
mls_status mls_topk_run(const mls_model *m, const mls_topk_request *req,
                        int64_t *out_indices, void *out_scores, mls_error *err);

/* n_users, n_items, d of a recommender model; MLS_STATUS_ERR_ARGUMENT if
 * `m` is another kind. */
mls_status mls_topk_shape(const mls_model *m, int64_t *n_users, int64_t *n_items,
                          int64_t *dim, mls_error *err);

#endif /* MLS_TOPK_H */
