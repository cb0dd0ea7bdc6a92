/* mls_topk_quant.h: the compact int8 copy of a float32 item matrix and the
 * two-stage exact top-k scan over it (part of the recommender family,
 * used by mls_topk.c for a few queries at a time).
 *
 * The copy, built at load from the item factors (never stored in .mls):
 *   codes[i]  uint8 (stride,), stride = d rounded up to 32: 128 + the code
 *             round(v_i / scale_i) in [-127, 127], scale_i = max|v_i| / 127,
 *             code 0 past d
 *   weight[i] >= err_i + r norm_i  (float, rounded up), where
 *             err_i  = ||v_i - scale_i * codes[i]||
 *   norm[i]   >= norm_i = max(||v_i||, ||scale_i * codes[i]||)  (rounded up)
 * Memory: n_items * (stride + 12) bytes (30% of the float32 matrix at d = 64).
 *
 * Stage 1 scores every item on the codes with the query quantised to int8
 * (q ~ qscale * qh, |qh| <= qmax = 63; exact integer dot products), and bounds
 * the float32 score s_i that the exact scan would compute:
 *   |s_i - a_i| <= ||q|| err_i + (||q - q_hat|| + r ||q||) norm_i + t
 *              <= ||q|| weight_i + ||q - q_hat|| norm_i + t
 * where a_i is the approximate score, r = (2d + 16) FLT_EPSILON covers the
 * float32 rounding of the exact dot product and t underflow. The k-th best
 * lower bound a_i - b_i over the allowed items is a score that at least k
 * items reach, so every item of the exact top-k has a_i + b_i >= it: those
 * are the candidates, and stage 2 rescores them exactly in float32.
 */
#ifndef MLS_TOPK_QUANT_H
#define MLS_TOPK_QUANT_H

#include <stdint.h>

#include "mls_status.h"

typedef struct mls_topk_quant {
    int64_t n_items, dim, stride;
    uint8_t *codes; /* (n_items, stride), code + 128 */
    struct {
        float scale, weight, norm;
    } *meta; /* (n_items,): one cache stream beside the codes */
    double max_norm;
    int avx2;       /* the AVX2 kernel runs on this CPU */
} mls_topk_quant;

/* Builds the copy of `items` (n_items, dim) float32, finite. Returns NULL
 * when out of memory or when the dimension is too large for int32 integer
 * dot products (then the caller keeps the full scan). */
mls_topk_quant *mls_topk_quant_build(const float *items, int64_t n_items, int64_t dim);
void mls_topk_quant_free(mls_topk_quant *q);

/* A query prepared for stage 1. */
typedef struct mls_topk_quant_query {
    int8_t *qh;     /* (stride,) the quantised query, zeros past d */
    int32_t qsum;   /* the sum of qh */
    double qscale;  /* q ~ qscale * qh */
    double a, b, t; /* bound_i = a * weight_i + b * norm_i + t */
} mls_topk_quant_query;

/* Prepares `q` (dim,) float32; qh must hold stride values. Returns 0 when the
 * two-stage scan cannot bound this query (not finite, or scores that could
 * overflow float32): then the caller runs the full scan. */
int mls_topk_quant_prepare(const mls_topk_quant *quant, const float *q,
                           mls_topk_quant_query *qq);

/* One item's candidacy after stage 1. */
typedef struct mls_topk_cand {
    int64_t item;
    double upper;
} mls_topk_cand;

/* Stage 1 state of one query over one range of positions. */
typedef struct mls_topk_stage1 {
    double *lower;  /* (k,) min-heap of the k best lower bounds */
    int64_t n_lower;
    mls_topk_cand *cands;
    int64_t n_cands, cap;
    int overflow;   /* too many candidates: the caller runs the full scan */
} mls_topk_stage1;

/* Stage 1 over positions [p0, p1): item = candidates ? candidates[p] : p.
 * excl/n_excl: the query's sorted exclusions. inv_norm (or NULL): the
 * cosine factor of each item, by item index, as the full scan uses it.
 * s->lower (k), s->cands (cap) are caller-allocated; s->n_* start at 0.
 * Returns MLS_STATUS_ERR_NOMEM if its scratch cannot be allocated. */
mls_status mls_topk_quant_stage1(const mls_topk_quant *quant, const mls_topk_quant_query *qq,
                                 int64_t p0, int64_t p1, const int64_t *candidates,
                                 const int64_t *excl, int64_t n_excl, const float *inv_norm,
                                 int64_t k, mls_topk_stage1 *s);

/* The k-th best lower bound over several stage-1 states (-inf when they
 * hold fewer than k together). */
double mls_topk_quant_threshold(const mls_topk_stage1 *states, int n_states, int64_t k);

#endif /* MLS_TOPK_QUANT_H */
