/* mls_topk.c: the recommender family: exact top-k by inner product.
 *
 * One call scores a batch of queries against the items block by block:
 *   for each block of items (ITEM_BLOCK rows, gathered first when the
 *   candidates are a subset), for each block of queries (QUERY_BLOCK rows):
 *     scratch = Q_block @ V_block^T      (one sgemm/dgemm, sgemv for 1 query)
 *     per query, a bounded min-heap of the k best so far takes each score
 *     that beats its current worst
 * so the full (queries x items) score matrix never exists: the item block
 * (256 KiB at d = 64, float32) and the scratch stay in cache while every
 * query block passes over them. Exclusions are checked (binary search in
 * the query's sorted CSR row) only for a score that would enter the heap,
 * which is rare after the first blocks, so they cost almost nothing.
 *
 * Ties: equal scores go by lower item index. Items are visited in
 * increasing index order, so a later equal score never displaces an
 * earlier one; the heap's order (score, then index) makes that explicit.
 *
 * Threads: the caller's budget is mls_blas_get_num_threads(). A batch with
 * enough queries is split by queries over that many threads of ours; a
 * small batch over many items (one HTTP request) is split by items, each
 * thread keeping its own top-k, and the partial lists are merged. Those
 * workers do not call BLAS: this OpenBLAS (pthreads build) has no
 * per-thread thread count, and threaded GEMMs from several threads at once
 * would oversubscribe the cores (and serialise on its level-3 lock). They
 * score with mls_gemm_small's single-threaded kernels, so T workers run
 * exactly T threads. One thread (a budget of 1, or too little work to
 * split) calls BLAS, which then threads by the same setting. Measured on a
 * loaded 2-core machine: one job with 2-thread BLAS GEMMs per block was up
 * to 30x slower than 2 workers, as each of its ~160 calls waited for a
 * descheduled BLAS thread; the workers start once per call.
 */
#include "mls_topk.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mls_blas.h"
#include "mls_gemm_small.h"
#include "mls_topk_quant.h"

#define QUERY_BLOCK 128
#define ITEM_BLOCK 1024
#define FEW_QUERIES 4
#define FEW_QUERIES_ITEM_BLOCK 8192
#define MAX_THREADS 64
/* multiply-adds per thread below which a thread costs more than it saves */
#define THREAD_MIN_WORK (1 << 21)
/* the two-stage scan (mls_topk_quant.h): at most this many queries, over at
 * least this many candidate items, with k at most 1/32 of them */
#define QUANT_MAX_QUERIES 4
#define QUANT_MIN_ITEMS 1024
#define QUANT_K_FRACTION 32

typedef struct topk_state {
    const mls_section *users, *items, *norms;
    int64_t n_users, n_items, dim;
    mls_topk_quant *quant; /* float32 models of >= QUANT_MIN_ITEMS items, or NULL */
} topk_state;

/* ---- validation (init) --------------------------------------------------- */

static mls_status check_ids(const mls_model *m, const char *who, int64_t n, mls_error *err)
{
    char name[MLS_SECTION_NAME_MAX];
    snprintf(name, sizeof(name), "%s_ids", who);
    const mls_section *ids = mls_model_find_section(m, name);
    snprintf(name, sizeof(name), "%s_id_offsets", who);
    const mls_section *offsets = mls_model_find_section(m, name);
    snprintf(name, sizeof(name), "%s_id_bytes", who);
    const mls_section *bytes = mls_model_find_section(m, name);
    if (ids != NULL && (offsets != NULL || bytes != NULL))
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "recommender has both integer and string %s ids", who);
    if (ids != NULL) {
        if (ids->dtype != MLS_DTYPE_INT64 || ids->ndim != 1 || ids->shape[0] != n)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "section '%s_ids' must be int64 of shape (%lld,) (one id per "
                                 "%s), got %s with %d dimensions and %lld values",
                                 who, (long long)n, who, mls_dtype_name(ids->dtype), ids->ndim,
                                 (long long)(ids->ndim >= 1 ? ids->shape[0] : 0));
        return MLS_STATUS_OK;
    }
    if (offsets == NULL && bytes == NULL) return MLS_STATUS_OK;
    if (offsets == NULL || bytes == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "recommender string %s ids need both '%s_id_offsets' and "
                             "'%s_id_bytes'",
                             who, who, who);
    if (offsets->dtype != MLS_DTYPE_INT64 || offsets->ndim != 1 || offsets->shape[0] != n + 1)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section '%s_id_offsets' must be int64 of shape (%lld,) (one more "
                             "than the %s count), got %lld values",
                             who, (long long)(n + 1), who,
                             (long long)(offsets->ndim >= 1 ? offsets->shape[0] : 0));
    if (bytes->dtype != MLS_DTYPE_UINT8 || bytes->ndim != 1)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section '%s_id_bytes' must be a 1-D uint8 array", who);
    const int64_t *off = offsets->data;
    if (off[0] != 0 || off[n] != bytes->shape[0])
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section '%s_id_offsets' must run from 0 to %lld (the length of "
                             "'%s_id_bytes'), got %lld to %lld",
                             who, (long long)bytes->shape[0], who, (long long)off[0],
                             (long long)off[n]);
    for (int64_t i = 0; i < n; i++)
        if (off[i + 1] < off[i])
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "section '%s_id_offsets' decreases at %lld", who,
                                 (long long)i);
    return MLS_STATUS_OK;
}

static mls_status check_matrix(const mls_section *s, const char *name, mls_error *err)
{
    if (s == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "recommender has no '%s' section",
                             name);
    if ((s->dtype != MLS_DTYPE_FLOAT32 && s->dtype != MLS_DTYPE_FLOAT64) || s->ndim != 2)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section '%s' must be a 2-D float32 or float64 array, got %s "
                             "with %d dimensions",
                             name, mls_dtype_name(s->dtype), s->ndim);
    mls_tensor t = {s->data, s->dtype, s->shape[0], s->shape[1], s->shape[1]};
    if (t.rows > 0 && t.cols > 0 && !mls_tensor_all_finite(&t))
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section '%s' holds NaN or infinity; factors must be finite", name);
    return MLS_STATUS_OK;
}

static mls_status topk_init(mls_model *m, mls_error *err)
{
    const mls_section *users = mls_model_find_section(m, "user_factors");
    const mls_section *items = mls_model_find_section(m, "item_factors");
    const mls_section *norms = mls_model_find_section(m, "item_norms");
    mls_status st = check_matrix(users, "user_factors", err);
    if (st != MLS_STATUS_OK) return st;
    st = check_matrix(items, "item_factors", err);
    if (st != MLS_STATUS_OK) return st;
    if (items->dtype != users->dtype || items->shape[1] != users->shape[1])
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "item_factors (%s, %lld columns) and user_factors (%s, %lld "
                             "columns) must have the same dtype and factor dimension",
                             mls_dtype_name(items->dtype), (long long)items->shape[1],
                             mls_dtype_name(users->dtype), (long long)users->shape[1]);
    int64_t n_items = items->shape[0], dim = items->shape[1];
    if (n_items < 1 || dim < 1)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "recommender needs at least 1 item and 1 factor, got item_factors "
                             "of shape (%lld, %lld)",
                             (long long)n_items, (long long)dim);
    if (!mls_blas_fits_int(dim) || !mls_blas_fits_int(n_items))
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "recommender factors of shape (%lld, %lld) are too large for BLAS",
                             (long long)n_items, (long long)dim);
    if (norms == NULL || norms->dtype != items->dtype || norms->ndim != 1 ||
        norms->shape[0] != n_items)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section 'item_norms' must be %s of shape (%lld,) (one norm per "
                             "item)",
                             mls_dtype_name(items->dtype), (long long)n_items);
    for (int64_t i = 0; i < n_items; i++) {
        double v = items->dtype == MLS_DTYPE_FLOAT32 ? ((const float *)norms->data)[i]
                                                     : ((const double *)norms->data)[i];
        if (!(v >= 0) || !isfinite(v))
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "section 'item_norms' has %g at item %lld; norms must be "
                                 "finite and >= 0",
                                 v, (long long)i);
    }
    st = check_ids(m, "user", users->shape[0], err);
    if (st != MLS_STATUS_OK) return st;
    st = check_ids(m, "item", n_items, err);
    if (st != MLS_STATUS_OK) return st;
    topk_state *state = calloc(1, sizeof(*state));
    if (state == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory loading a recommender");
    *state = (topk_state){users, items, norms, users->shape[0], n_items, dim, NULL};
    /* built here, not stored in the file: n_items * (d + 12) bytes per process;
     * without it (out of memory, d too large) every query takes the full scan */
    if (items->dtype == MLS_DTYPE_FLOAT32 && n_items >= QUANT_MIN_ITEMS)
        state->quant = mls_topk_quant_build(items->data, n_items, dim);
    m->state = state;
    m->dtype = items->dtype;
    m->n_features = dim;
    return MLS_STATUS_OK;
}

static void topk_release(mls_model *m)
{
    if (m->state) mls_topk_quant_free(((topk_state *)m->state)->quant);
    free(m->state);
    m->state = NULL;
}

static mls_status topk_output_spec(const mls_model *m, mls_method method,
                                   mls_output_spec *spec, mls_error *err)
{
    return mls_error_set(err, MLS_STATUS_ERR_UNSUPPORTED,
                         "a recommender has no predict; use recommend or similar_items");
}

static mls_status topk_predict(const mls_model *m, mls_method method, const mls_tensor *X,
                               void *out, mls_error *err)
{
    return topk_output_spec(m, method, NULL, err);
}

const mls_model_vtable mls_recommender_vtable = {
    .kind = MLS_KIND_RECOMMENDER,
    .name = "recommender",
    .init = topk_init,
    .output_spec = topk_output_spec,
    .predict = topk_predict,
    .release_state = topk_release,
};

mls_status mls_topk_shape(const mls_model *m, int64_t *n_users, int64_t *n_items,
                          int64_t *dim, mls_error *err)
{
    if (m->vt != &mls_recommender_vtable)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "expected a recommender model, got a %s", m->vt->name);
    const topk_state *st = m->state;
    *n_users = st->n_users;
    *n_items = st->n_items;
    *dim = st->dim;
    return MLS_STATUS_OK;
}

/* ---- the bounded heap ------------------------------------------------------ */

/* Root = the worst kept entry: lowest score, and of equal scores the
 * highest index. */
static inline int worse(double sa, int64_t ia, double sb, int64_t ib)
{
    return sa < sb || (sa == sb && ia > ib);
}

static void heap_sift_down(double *hs, int64_t *hi, int64_t n, int64_t pos)
{
    double s = hs[pos];
    int64_t id = hi[pos];
    for (;;) {
        int64_t child = 2 * pos + 1;
        if (child >= n) break;
        if (child + 1 < n && worse(hs[child + 1], hi[child + 1], hs[child], hi[child])) child++;
        if (!worse(hs[child], hi[child], s, id)) break;
        hs[pos] = hs[child];
        hi[pos] = hi[child];
        pos = child;
    }
    hs[pos] = s;
    hi[pos] = id;
}

static void heap_push(double *hs, int64_t *hi, int64_t *n, int64_t k, double s, int64_t id)
{
    if (*n < k) {
        int64_t pos = (*n)++;
        while (pos > 0) {
            int64_t parent = (pos - 1) / 2;
            if (!worse(s, id, hs[parent], hi[parent])) break;
            hs[pos] = hs[parent];
            hi[pos] = hi[parent];
            pos = parent;
        }
        hs[pos] = s;
        hi[pos] = id;
    } else {
        hs[0] = s;
        hi[0] = id;
        heap_sift_down(hs, hi, k, 0);
    }
}

static int is_excluded(const int64_t *row, int64_t len, int64_t item)
{
    int64_t lo = 0, hi = len;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (row[mid] < item)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < len && row[lo] == item;
}

/* One query's heap takes a block of scores (items item_of(j), j < nb).
 * Once the heap is full almost every score loses to its worst, so scores
 * go in chunks of SELECT_CHUNK: a branch-free "any >= threshold" over the
 * chunk (vectorised by the compiler) skips the chunk in one test. The
 * threshold only rises, so testing against its value at the chunk start
 * never skips a score that would have entered. (The threshold is a score
 * of this dtype, so casting it back is exact.) */
#define SELECT_CHUNK 16
#define DEFINE_SELECT(NAME, real)                                                           \
    static void NAME(const real *scores, int64_t nb, const int64_t *item_index,            \
                     int64_t item_base, const real *inv_norm, const int64_t *excl,         \
                     int64_t n_excl, double *hs, int64_t *hi, int64_t *count, int64_t k)   \
    {                                                                                       \
        double threshold = *count < k ? -INFINITY : hs[0];                                 \
        for (int64_t j0 = 0; j0 < nb; j0 += SELECT_CHUNK) {                                 \
            int64_t j1 = nb - j0 < SELECT_CHUNK ? nb : j0 + SELECT_CHUNK;                   \
            if (inv_norm == NULL && j1 - j0 == SELECT_CHUNK) {                              \
                const real t = (real)threshold;                                             \
                int any = 0;                                                                \
                for (int i = 0; i < SELECT_CHUNK; i++) any |= scores[j0 + i] >= t;          \
                if (!any) continue;                                                         \
            }                                                                               \
            for (int64_t j = j0; j < j1; j++) {                                             \
                double s =                                                                  \
                    inv_norm ? (double)(scores[j] * inv_norm[j]) : (double)scores[j];      \
                if (!(s >= threshold)) continue; /* also skips NaN */                      \
                int64_t item = item_index ? item_index[j] : item_base + j;                 \
                if (*count == k && !worse(hs[0], hi[0], s, item)) continue;                \
                if (n_excl && is_excluded(excl, n_excl, item)) continue;                   \
                heap_push(hs, hi, count, k, s, item);                                      \
                threshold = *count < k ? -INFINITY : hs[0];                                \
            }                                                                               \
        }                                                                                   \
    }
DEFINE_SELECT(select_f32, float)
DEFINE_SELECT(select_f64, double)

/* ---- one worker: queries [q0, q1) x candidate positions [c0, c1) -------- */

typedef struct topk_job {
    const mls_model *m;
    const mls_topk_request *req;
    int64_t q0, q1, c0, c1;
    int64_t *out_indices; /* rows q0..q1 of (n_queries, k), or a private buffer */
    double *out_scores;   /* same layout, double */
    int small_gemm; /* score with mls_gemm_small (worker threads), not BLAS */
    mls_status status;
} topk_job;

static void gemm_block(mls_dtype dtype, const void *Q, int64_t ldq, int64_t nq, const void *V,
                       int64_t nb, int64_t d, void *C)
{
    if (dtype == MLS_DTYPE_FLOAT32) {
        if (nq == 1)
            mls_cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)nb, (int)d, 1.0f, V, (int)d, Q, 1,
                            0.0f, C, 1);
        else
            mls_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nb, (int)d,
                            1.0f, Q, (int)ldq, V, (int)d, 0.0f, C, (int)nb);
    } else {
        if (nq == 1)
            mls_cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)nb, (int)d, 1.0, V, (int)d, Q, 1,
                            0.0, C, 1);
        else
            mls_cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nb, (int)d,
                            1.0, Q, (int)ldq, V, (int)d, 0.0, C, (int)nb);
    }
}

static void run_job(topk_job *job)
{
    const mls_topk_request *req = job->req;
    const topk_state *st = job->m->state;
    const mls_dtype dtype = job->m->dtype;
    const size_t es = mls_dtype_size(dtype);
    const int64_t d = st->dim, k = req->k;
    const int64_t nq_total = job->q1 - job->q0;

    /* a few queries: longer item blocks, fewer BLAS calls (the scratch stays
     * small: rows x block) */
    const int64_t item_block = nq_total <= FEW_QUERIES ? FEW_QUERIES_ITEM_BLOCK : ITEM_BLOCK;
    const int64_t rows = nq_total < QUERY_BLOCK ? (nq_total ? nq_total : 1) : QUERY_BLOCK;
    int64_t *counts = calloc((size_t)(nq_total ? nq_total : 1), sizeof(int64_t));
    void *scratch = malloc((size_t)rows * (size_t)item_block * es);
    void *gathered = req->candidates ? malloc((size_t)item_block * (size_t)d * es) : NULL;
    void *inv = req->cosine ? malloc((size_t)item_block * es) : NULL;
    if (counts == NULL || scratch == NULL || (req->candidates && gathered == NULL) ||
        (req->cosine && inv == NULL)) {
        job->status = MLS_STATUS_ERR_NOMEM;
        goto done;
    }
    const char *items = st->items->data;
    const char *norms = st->norms->data;
    for (int64_t c = job->c0; c < job->c1; c += item_block) {
        int64_t nb = job->c1 - c < item_block ? job->c1 - c : item_block;
        const int64_t *item_index = req->candidates ? req->candidates + c : NULL;
        const void *V;
        if (item_index) {
            for (int64_t j = 0; j < nb; j++)
                memcpy((char *)gathered + (size_t)(j * d) * es,
                       items + (size_t)(item_index[j] * d) * es, (size_t)d * es);
            V = gathered;
        } else {
            V = items + (size_t)(c * d) * es;
        }
        if (inv) {
            for (int64_t j = 0; j < nb; j++) {
                int64_t item = item_index ? item_index[j] : c + j;
                if (dtype == MLS_DTYPE_FLOAT32) {
                    float n = ((const float *)norms)[item];
                    ((float *)inv)[j] = n > 0 ? 1.0f / n : 0.0f;
                } else {
                    double n = ((const double *)norms)[item];
                    ((double *)inv)[j] = n > 0 ? 1.0 / n : 0.0;
                }
            }
        }
        for (int64_t q = job->q0; q < job->q1; q += QUERY_BLOCK) {
            int64_t nq = job->q1 - q < QUERY_BLOCK ? job->q1 - q : QUERY_BLOCK;
            const char *Q = (const char *)req->queries + (size_t)(q * req->row_stride) * es;
            mls_status gs = MLS_STATUS_OK;
            if (!job->small_gemm)
                gemm_block(dtype, Q, req->row_stride, nq, V, nb, d, scratch);
            else if (dtype == MLS_DTYPE_FLOAT32)
                gs = mls_gemm_small_f32(nq, nb, d, (const float *)Q, req->row_stride, V, scratch,
                                        nb, NULL);
            else
                gs = mls_gemm_small_f64(nq, nb, d, (const double *)Q, req->row_stride, V,
                                        scratch, nb, NULL);
            if (gs != MLS_STATUS_OK) {
                job->status = gs;
                goto done;
            }
            for (int64_t r = 0; r < nq; r++) {
                int64_t qi = q + r, local = qi - job->q0;
                const int64_t *excl = NULL;
                int64_t n_excl = 0;
                if (req->exclude_indptr) {
                    excl = req->exclude_indices + req->exclude_indptr[qi];
                    n_excl = req->exclude_indptr[qi + 1] - req->exclude_indptr[qi];
                }
                double *hs = job->out_scores + local * k;
                int64_t *hi = job->out_indices + local * k;
                if (dtype == MLS_DTYPE_FLOAT32)
                    select_f32((const float *)scratch + r * nb, nb, item_index, c, inv, excl,
                               n_excl, hs, hi, &counts[local], k);
                else
                    select_f64((const double *)scratch + r * nb, nb, item_index, c, inv, excl,
                               n_excl, hs, hi, &counts[local], k);
            }
        }
    }
    /* heaps -> best first: pop the worst to the end; pad what is missing */
    for (int64_t local = 0; local < nq_total; local++) {
        double *hs = job->out_scores + local * k;
        int64_t *hi = job->out_indices + local * k;
        int64_t n = counts[local];
        for (int64_t j = n; j < k; j++) {
            hs[j] = -INFINITY;
            hi[j] = -1;
        }
        while (n > 1) {
            double s = hs[0];
            int64_t id = hi[0];
            n--;
            hs[0] = hs[n];
            hi[0] = hi[n];
            heap_sift_down(hs, hi, n, 0);
            hs[n] = s;
            hi[n] = id;
        }
    }
    job->status = MLS_STATUS_OK;
done:
    free(counts);
    free(scratch);
    free(gathered);
    free(inv);
}

static void *run_job_thread(void *arg)
{
    run_job(arg);
    return NULL;
}

/* ---- the entry point ----------------------------------------------------- */

static mls_status check_request(const topk_state *st, const mls_topk_request *req,
                                mls_error *err)
{
    if (req->n_queries < 0)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT, "%lld queries",
                             (long long)req->n_queries);
    if (req->n_queries > 0 && (req->row_stride < st->dim || !mls_blas_fits_int(req->row_stride)))
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "query row stride %lld is not in [%lld, INT_MAX]",
                             (long long)req->row_stride, (long long)st->dim);
    int64_t n_cand = req->candidates ? req->n_candidates : st->n_items;
    if (req->candidates) {
        if (req->n_candidates < 1)
            return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                                 "the candidate items are empty; give at least 1");
        for (int64_t j = 0; j < req->n_candidates; j++) {
            int64_t item = req->candidates[j];
            if (item < 0 || item >= st->n_items)
                return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                                     "candidate item index %lld is out of range [0, %lld)",
                                     (long long)item, (long long)st->n_items);
            if (j > 0 && item <= req->candidates[j - 1])
                return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                                     "candidate item indices must be strictly increasing "
                                     "(sorted, no repeats); position %lld has %lld after %lld",
                                     (long long)j, (long long)item,
                                     (long long)req->candidates[j - 1]);
        }
    }
    if (req->k < 1 || req->k > n_cand)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "k must be between 1 and the %lld %s, got %lld", (long long)n_cand,
                             req->candidates ? "candidate items" : "items", (long long)req->k);
    if (req->exclude_indptr) {
        const int64_t *p = req->exclude_indptr;
        if (p[0] != 0 || p[req->n_queries] != req->n_excluded)
            return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                                 "exclusion indptr must run from 0 to %lld (the number of "
                                 "excluded indices), got %lld to %lld",
                                 (long long)req->n_excluded, (long long)p[0],
                                 (long long)p[req->n_queries]);
        /* every row's bounds first: none may point outside the indices */
        for (int64_t q = 0; q < req->n_queries; q++)
            if (p[q + 1] < p[q])
                return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                                     "exclusion indptr decreases at row %lld", (long long)q);
        for (int64_t q = 0; q < req->n_queries; q++) {
            for (int64_t j = p[q]; j < p[q + 1]; j++) {
                int64_t item = req->exclude_indices[j];
                if (item < 0 || item >= st->n_items)
                    return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                                         "excluded item index %lld (row %lld) is out of range "
                                         "[0, %lld)",
                                         (long long)item, (long long)q, (long long)st->n_items);
                if (j > p[q] && item < req->exclude_indices[j - 1])
                    return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                                         "excluded item indices of row %lld are not sorted",
                                         (long long)q);
            }
        }
    }
    return MLS_STATUS_OK;
}

/* Rows of a (n, k) double buffer back into the output dtype. */
static void store_scores(mls_dtype dtype, const double *src, int64_t n, void *dst)
{
    if (dtype == MLS_DTYPE_FLOAT32)
        for (int64_t i = 0; i < n; i++) ((float *)dst)[i] = (float)src[i];
    else
        memcpy(dst, src, (size_t)n * sizeof(double));
}

/* Every item scored in float: the blocked GEMM + heaps above, on a checked
 * request. */
static mls_status full_scan(const mls_model *m, const mls_topk_request *req,
                            int64_t *out_indices, void *out_scores, mls_error *err)
{
    const topk_state *st = m->state;
    const int64_t n_items = st->n_items, dim = st->dim;
    mls_status status;
    const int64_t k = req->k, nq = req->n_queries;
    const int64_t n_cand = req->candidates ? req->n_candidates : n_items;
    int64_t total;
    if (!mls_size_mul(nq, k, &total) || total > INT64_MAX / 16)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT, "%lld queries x k = %lld is too large",
                             (long long)nq, (long long)k);

    int64_t threads = mls_blas_get_num_threads();
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    double work = (double)nq * (double)n_cand * (double)dim;
    if (threads > work / THREAD_MIN_WORK) threads = (int64_t)(work / THREAD_MIN_WORK);
    if (threads < 1) threads = 1;
    /* split by queries when each thread gets a full query block, else by items */
    int by_items = threads > 1 && nq < threads * QUERY_BLOCK;
    if (by_items && threads > (n_cand + ITEM_BLOCK - 1) / ITEM_BLOCK)
        threads = (n_cand + ITEM_BLOCK - 1) / ITEM_BLOCK;
    if (threads < 2) by_items = 0, threads = threads < 1 ? 1 : threads;

    size_t per_job = (size_t)total; /* entries a by-items job keeps */
    double *scores = malloc((by_items ? (size_t)threads : 1) * per_job * sizeof(double));
    int64_t *indices =
        by_items ? malloc((size_t)threads * per_job * sizeof(int64_t)) : out_indices;
    if (scores == NULL || indices == NULL) {
        free(scores);
        if (by_items) free(indices);
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM,
                             "out of memory for top-%lld of %lld queries", (long long)k,
                             (long long)nq);
    }
    topk_job jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    int64_t qblocks = (nq + QUERY_BLOCK - 1) / QUERY_BLOCK;
    int64_t cblocks = (n_cand + ITEM_BLOCK - 1) / ITEM_BLOCK;
    for (int64_t t = 0; t < threads; t++) {
        topk_job *job = &jobs[t];
        *job = (topk_job){m, req, 0, nq, 0, n_cand, NULL, NULL, threads > 1,
                          MLS_STATUS_OK};
        if (by_items) {
            job->c0 = cblocks * t / threads * ITEM_BLOCK;
            job->c1 = cblocks * (t + 1) / threads * ITEM_BLOCK;
            if (job->c1 > n_cand) job->c1 = n_cand;
            job->out_indices = indices + (size_t)t * per_job;
            job->out_scores = scores + (size_t)t * per_job;
        } else {
            job->q0 = qblocks * t / threads * QUERY_BLOCK;
            job->q1 = qblocks * (t + 1) / threads * QUERY_BLOCK;
            if (job->q0 > nq) job->q0 = nq;
            if (job->q1 > nq) job->q1 = nq;
            job->out_indices = out_indices + job->q0 * k;
            job->out_scores = scores + job->q0 * k;
        }
    }
    for (int64_t t = 1; t < threads; t++)
        started[t] = pthread_create(&tids[t], NULL, run_job_thread, &jobs[t]) == 0;
    run_job(&jobs[0]);
    for (int64_t t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(tids[t], NULL);
        else
            run_job(&jobs[t]); /* could not start a thread: do its share here */
    }
    status = MLS_STATUS_OK;
    for (int64_t t = 0; t < threads; t++)
        if (jobs[t].status != MLS_STATUS_OK) status = jobs[t].status;
    if (status == MLS_STATUS_OK && by_items) {
        /* merge: each job's list is sorted best first; take the k best of all.
         * Candidate ranges are disjoint and ascending, so equal scores keep
         * lower indices first when earlier jobs win ties. */
        for (int64_t q = 0; q < nq; q++) {
            int64_t pos[MAX_THREADS] = {0};
            for (int64_t j = 0; j < k; j++) {
                int64_t best = -1;
                for (int64_t t = 0; t < threads; t++) {
                    if (pos[t] >= k) continue;
                    int64_t id = indices[(size_t)t * per_job + q * k + pos[t]];
                    if (id < 0) continue;
                    double s = scores[(size_t)t * per_job + q * k + pos[t]];
                    if (best < 0) {
                        best = t;
                        continue;
                    }
                    double bs = scores[(size_t)best * per_job + q * k + pos[best]];
                    int64_t bid = indices[(size_t)best * per_job + q * k + pos[best]];
                    if (worse(bs, bid, s, id)) best = t;
                }
                double s_out = -INFINITY;
                if (best < 0) {
                    out_indices[q * k + j] = -1;
                } else {
                    size_t at = (size_t)best * per_job + q * k + pos[best]++;
                    out_indices[q * k + j] = indices[at];
                    s_out = scores[at];
                }
                if (m->dtype == MLS_DTYPE_FLOAT32)
                    ((float *)out_scores)[q * k + j] = (float)s_out;
                else
                    ((double *)out_scores)[q * k + j] = s_out;
            }
        }
    } else if (status == MLS_STATUS_OK) {
        store_scores(m->dtype, scores, total, out_scores);
    }
    free(scores);
    if (by_items) free(indices);
    if (status != MLS_STATUS_OK)
        return mls_error_set(err, status, "out of memory for top-k scratch");
    return MLS_STATUS_OK;
}

/* ---- the two-stage scan (mls_topk_quant.h) -------------------------------- */

typedef struct quant_job {
    const mls_topk_quant *quant;
    const mls_topk_quant_query *qq;
    int64_t p0, p1;
    const int64_t *candidates, *excl;
    int64_t n_excl, k;
    const float *inv_norm;
    mls_topk_stage1 s;
    mls_status status;
} quant_job;

static void *quant_job_run(void *arg)
{
    quant_job *j = arg;
    j->status = mls_topk_quant_stage1(j->quant, j->qq, j->p0, j->p1, j->candidates, j->excl,
                                      j->n_excl, j->inv_norm, j->k, &j->s);
    return NULL;
}

/* float32 dot product in 8 partial sums (any order is within the bound) */
static float dot_f32(const float *a, const float *b, int64_t d)
{
    float acc[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= d; j += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[j + l] * b[j + l];
    for (; j < d; j++) acc[0] += a[j] * b[j];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* One query, two stages. *done = 0 (and nothing written) when this query
 * needs the full scan: a query the bound cannot cover, or too many
 * candidates (scores too close together for the int8 copy to separate). */
static mls_status quant_query(const topk_state *st, const mls_topk_request *req, int64_t qi,
                              const float *inv_norm, int64_t threads, int64_t *out_idx,
                              float *out_scores, int64_t *rescored, int *done)
{
    const mls_topk_quant *quant = st->quant;
    const int64_t k = req->k, d = st->dim;
    const int64_t n_cand = req->candidates ? req->n_candidates : st->n_items;
    const float *q = (const float *)req->queries + qi * req->row_stride;
    *done = 0;
    int8_t *qh = aligned_alloc(64, (size_t)(quant->stride + 63) / 64 * 64);
    if (qh == NULL) return MLS_STATUS_ERR_NOMEM;
    mls_topk_quant_query qq = {qh, 0, 0, 0, 0, 0};
    if (!mls_topk_quant_prepare(quant, q, &qq)) {
        free(qh);
        return MLS_STATUS_OK;
    }
    const int64_t cap = 16 * k > 4096 ? 16 * k : 4096;
    quant_job jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    double *lower = malloc((size_t)threads * (size_t)k * sizeof(double));
    mls_topk_cand *cands = malloc((size_t)threads * (size_t)cap * sizeof(mls_topk_cand));
    double *hs = malloc((size_t)k * sizeof(double));
    int64_t *hi = malloc((size_t)k * sizeof(int64_t));
    mls_status status = MLS_STATUS_OK;
    if (lower == NULL || cands == NULL || hs == NULL || hi == NULL) {
        status = MLS_STATUS_ERR_NOMEM;
        goto out;
    }
    const int64_t *excl = NULL;
    int64_t n_excl = 0;
    if (req->exclude_indptr) {
        excl = req->exclude_indices + req->exclude_indptr[qi];
        n_excl = req->exclude_indptr[qi + 1] - req->exclude_indptr[qi];
    }
    for (int64_t t = 0; t < threads; t++) {
        int64_t p0 = n_cand * t / threads / 16 * 16, p1 = n_cand * (t + 1) / threads / 16 * 16;
        if (t == threads - 1) p1 = n_cand;
        jobs[t] = (quant_job){quant, &qq, p0, p1, req->candidates, excl, n_excl, k, inv_norm,
                              {lower + t * k, 0, cands + t * cap, 0, cap, 0}, MLS_STATUS_OK};
    }
    for (int64_t t = 1; t < threads; t++)
        started[t] = pthread_create(&tids[t], NULL, quant_job_run, &jobs[t]) == 0;
    quant_job_run(&jobs[0]);
    for (int64_t t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(tids[t], NULL);
        else
            quant_job_run(&jobs[t]);
    }
    mls_topk_stage1 states[MAX_THREADS];
    for (int64_t t = 0; t < threads; t++) {
        if (jobs[t].status != MLS_STATUS_OK) status = jobs[t].status;
        if (jobs[t].s.overflow) goto out; /* full scan */
        states[t] = jobs[t].s;
    }
    if (status != MLS_STATUS_OK) goto out;
    /* stage 2: rescore in float what the k-th best lower bound leaves */
    const double threshold = mls_topk_quant_threshold(states, (int)threads, k);
    const float *items = st->items->data;
    int64_t count = 0, n_rescored = 0;
    for (int64_t t = 0; t < threads; t++) {
        for (int64_t j = 0; j < states[t].n_cands; j++) {
            const mls_topk_cand c = states[t].cands[j];
            if (!(c.upper >= threshold)) continue;
            n_rescored++;
            float dot = dot_f32(q, items + c.item * d, d);
            double s = inv_norm ? (double)(dot * inv_norm[c.item]) : (double)dot;
            if (count == k && !worse(hs[0], hi[0], s, c.item)) continue;
            heap_push(hs, hi, &count, k, s, c.item);
        }
    }
    for (int64_t j = count; j < k; j++) {
        out_scores[j] = -INFINITY;
        out_idx[j] = -1;
    }
    for (int64_t n = count; n > 0; n--) { /* pop the worst to the end */
        out_scores[n - 1] = (float)hs[0];
        out_idx[n - 1] = hi[0];
        hs[0] = hs[n - 1];
        hi[0] = hi[n - 1];
        heap_sift_down(hs, hi, n - 1, 0);
    }
    if (rescored) *rescored = n_rescored;
    *done = 1;
out:
    free(qh);
    free(lower);
    free(cands);
    free(hs);
    free(hi);
    return status;
}

mls_status mls_topk_run(const mls_model *m, const mls_topk_request *req,
                        int64_t *out_indices, void *out_scores, mls_error *err)
{
    int64_t n_users = 0, n_items = 0, dim = 0;
    mls_status status = mls_topk_shape(m, &n_users, &n_items, &dim, err);
    if (status != MLS_STATUS_OK) return status;
    const topk_state *st = m->state;
    status = check_request(st, req, err);
    if (status != MLS_STATUS_OK) return status;
    const int64_t nq = req->n_queries, k = req->k;
    if (req->rescored)
        for (int64_t q = 0; q < nq; q++) req->rescored[q] = -1;
    if (nq == 0) return MLS_STATUS_OK;
    const int64_t n_cand = req->candidates ? req->n_candidates : n_items;
    if (req->scan == MLS_TOPK_SCAN_FULL || st->quant == NULL || nq > QUANT_MAX_QUERIES ||
        n_cand < QUANT_MIN_ITEMS || k > n_cand / QUANT_K_FRACTION)
        return full_scan(m, req, out_indices, out_scores, err);

    float *inv_norm = NULL;
    if (req->cosine) { /* by item index, as the full scan computes it */
        inv_norm = malloc((size_t)n_items * sizeof(float));
        if (inv_norm == NULL)
            return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory for top-k scratch");
        const float *norms = st->norms->data;
        for (int64_t i = 0; i < n_items; i++) inv_norm[i] = norms[i] > 0 ? 1.0f / norms[i] : 0.0f;
    }
    int64_t threads = mls_blas_get_num_threads();
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    double work = (double)n_cand * (double)dim;
    if (threads > work / THREAD_MIN_WORK) threads = (int64_t)(work / THREAD_MIN_WORK);
    if (threads < 1) threads = 1;
    for (int64_t q = 0; q < nq && status == MLS_STATUS_OK; q++) {
        int done = 0;
        status = quant_query(st, req, q, inv_norm, threads, out_indices + q * k,
                             (float *)out_scores + q * k, req->rescored ? req->rescored + q : NULL,
                             &done);
        if (status != MLS_STATUS_OK || done) continue;
        /* this query alone through the full scan */
        int64_t indptr[2] = {0, 0};
        mls_topk_request one = *req;
        one.queries = (const float *)req->queries + q * req->row_stride;
        one.n_queries = 1;
        one.rescored = NULL;
        if (req->exclude_indptr) {
            indptr[1] = req->exclude_indptr[q + 1] - req->exclude_indptr[q];
            one.exclude_indptr = indptr;
            one.exclude_indices = req->exclude_indices + req->exclude_indptr[q];
            one.n_excluded = indptr[1];
        }
        status = full_scan(m, &one, out_indices + q * k, (float *)out_scores + q * k, err);
        if (status != MLS_STATUS_OK) {
            free(inv_norm);
            return status;
        }
    }
    free(inv_norm);
    if (status != MLS_STATUS_OK)
        return mls_error_set(err, status, "out of memory for top-k scratch");
    return MLS_STATUS_OK;
}
