/* mls_kmeans_typed.h: the float32 and float64 bodies of mls_kmeans.c.
 *
 * Included twice by mls_kmeans.c (only), with KM_T the element type,
 * KM_SUF its suffix and KM_GEMM the matching cblas GEMM, so each kernel is
 * written once and compiled for both dtypes, as the scikit-learn kernels it
 * mirrors are (fused types). Not a header of its own: no include guard.
 */
#define KM_CAT2(a, b) a##_##b
#define KM_CAT(a, b) KM_CAT2(a, b)
#define KM(name) KM_CAT(name, KM_SUF)

/* ---- distances ------------------------------------------------------------ */

static void KM(row_norms)(const KM_T *X, int64_t n, int64_t d, int64_t ld, KM_T *out)
{
    for (int64_t i = 0; i < n; i++) {
        const KM_T *x = X + i * ld;
        KM_T acc = 0;
        for (int64_t f = 0; f < d; f++) acc += x[f] * x[f];
        out[i] = acc;
    }
}

/* Eight partial sums, so the compiler vectorises the loop (one sum would be
 * a chain of dependent adds: IEEE order forbids reassociating it). */
#define KM_LANES 8

static KM_T KM(sq_dist)(const KM_T *a, const KM_T *b, int64_t d)
{
    KM_T acc[KM_LANES] = {0};
    int64_t f = 0;
    for (; f + KM_LANES <= d; f += KM_LANES)
        for (int l = 0; l < KM_LANES; l++) {
            const KM_T diff = a[f + l] - b[f + l];
            acc[l] += diff * diff;
        }
    for (; f < d; f++) {
        const KM_T diff = a[f] - b[f];
        acc[0] += diff * diff;
    }
    KM_T total = 0;
    for (int l = 0; l < KM_LANES; l++) total += acc[l];
    return total;
}

/* scratch[i * k + j] = x_i . c_j for `rows` rows (rows, k, d, ldx fit in an int:
 * checked by the callers). */
static void KM(dots)(const KM_T *X, int64_t rows, int64_t d, int64_t ldx, const KM_T *C,
                     int64_t k, KM_T *scratch)
{
    KM_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)k, (int)d, 1, X,
            (int)ldx, C, (int)d, 0, scratch, (int)k);
}

/* Nearest center of each of `rows` rows. With GEMM (scratch of rows * k):
 * argmin_j ||c_j||^2 - 2 x.c_j, as scikit-learn's Lloyd step; else the exact
 * squared distances. The lowest index wins a tie. */
static void KM(assign)(const KM_T *X, int64_t rows, int64_t d, int64_t ldx, const KM_T *C,
                       const KM_T *cnorm, int64_t k, KM_T *scratch, int use_gemm,
                       int64_t *labels)
{
    if (use_gemm) {
        KM(dots)(X, rows, d, ldx, C, k, scratch);
        for (int64_t i = 0; i < rows; i++) {
            const KM_T *s = scratch + i * k;
            KM_T best = cnorm[0] - 2 * s[0];
            int64_t arg = 0;
            for (int64_t j = 1; j < k; j++) {
                const KM_T v = cnorm[j] - 2 * s[j];
                if (v < best) {
                    best = v;
                    arg = j;
                }
            }
            labels[i] = arg;
        }
        return;
    }
    for (int64_t i = 0; i < rows; i++) {
        const KM_T *x = X + i * ldx;
        KM_T best = KM(sq_dist)(x, C, d);
        int64_t arg = 0;
        for (int64_t j = 1; j < k; j++) {
            const KM_T v = KM(sq_dist)(x, C + j * d, d);
            if (v < best) {
                best = v;
                arg = j;
            }
        }
        labels[i] = arg;
    }
}

/* out[i * k + j] = ||x_i - c_j|| for `rows` rows. */
static void KM(distances)(const KM_T *X, int64_t rows, int64_t d, int64_t ldx, const KM_T *C,
                          const KM_T *cnorm, int64_t k, int use_gemm, KM_T *out)
{
    if (use_gemm) {
        KM(dots)(X, rows, d, ldx, C, k, out);
        for (int64_t i = 0; i < rows; i++) {
            const KM_T *x = X + i * ldx;
            KM_T xn = 0;
            for (int64_t f = 0; f < d; f++) xn += x[f] * x[f];
            KM_T *o = out + i * k;
            for (int64_t j = 0; j < k; j++) {
                const KM_T v = xn + cnorm[j] - 2 * o[j];
                o[j] = v > 0 ? (KM_T)sqrt((double)v) : 0; /* rounding can go below 0 */
            }
        }
        return;
    }
    for (int64_t i = 0; i < rows; i++) {
        const KM_T *x = X + i * ldx;
        for (int64_t j = 0; j < k; j++)
            out[i * k + j] = (KM_T)sqrt((double)KM(sq_dist)(x, C + j * d, d));
    }
}

/* ---- predict / transform --------------------------------------------------- */

static mls_status KM(predict)(const kmeans_state *st, mls_method method, const mls_tensor *X,
                              void *out, mls_error *err)
{
    const KM_T *C = st->centers;
    const KM_T *cnorm = st->center_norms;
    const int64_t k = st->k, d = X->cols, ld = X->row_stride;
    const int64_t block = X->rows < KMEANS_BLOCK_ROWS ? X->rows : KMEANS_BLOCK_ROWS;
    /* one GEMM per block of rows pays from a few rows; one row or a tiny model
     * is cheaper in loops (no BLAS call, no scratch) */
    const int use_gemm = block * k * d > KMEANS_LOOP_MAX_WORK && mls_blas_fits_int(ld);
    KM_T *scratch = NULL;
    if (use_gemm && method == MLS_METHOD_PREDICT) {
        scratch = malloc((size_t)(block * k) * sizeof(KM_T));
        if (scratch == NULL)
            return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory for distances");
    }
    mls_status s = MLS_STATUS_OK;
    for (int64_t r0 = 0; r0 < X->rows; r0 += block) {
        const int64_t n = X->rows - r0 < block ? X->rows - r0 : block;
        const KM_T *x0 = (const KM_T *)X->data + r0 * ld;
        mls_tensor rows = {x0, X->dtype, n, d, ld};
        s = mls_tensor_check_finite(&rows, r0, err);
        if (s != MLS_STATUS_OK) break;
        if (method == MLS_METHOD_PREDICT)
            KM(assign)(x0, n, d, ld, C, cnorm, k, scratch, use_gemm, (int64_t *)out + r0);
        else /* float32 distances by differences: the expansion cancels (1e-5 off) */
            KM(distances)(x0, n, d, ld, C, cnorm, k, use_gemm && sizeof(KM_T) == 8,
                          (KM_T *)out + r0 * k);
    }
    free(scratch);
    return s;
}

/* ---- fit -------------------------------------------------------------------- */

/* One thread's share of a Lloyd pass: rows [r0, r1) assigned to the nearest
 * of `centers`; with sums, their weighted sums per center are accumulated
 * (in double, so float32 data loses nothing in the means). */
typedef struct KM(lloyd_job) {
    const KM_T *X;
    const double *w;
    int64_t r0, r1, d, k;
    const KM_T *centers, *cnorm;
    int64_t *labels;
    KM_T *scratch;     /* KMEANS_BLOCK_ROWS * k */
    double *sums;      /* k * d, or NULL: assignment only */
    double *weights;   /* k */
    int64_t *block_labels; /* KMEANS_BLOCK_ROWS */
    int64_t changed;   /* labels that differ from the previous pass */
} KM(lloyd_job);

static void *KM(lloyd_run)(void *arg)
{
    KM(lloyd_job) *job = arg;
    const int64_t d = job->d, k = job->k;
    const int use_gemm = k * d > KMEANS_FIT_LOOP_MAX_WORK;
    if (job->sums != NULL) {
        memset(job->sums, 0, (size_t)(k * d) * sizeof(double));
        memset(job->weights, 0, (size_t)k * sizeof(double));
    }
    job->changed = 0;
    for (int64_t r0 = job->r0; r0 < job->r1; r0 += KMEANS_BLOCK_ROWS) {
        const int64_t n = job->r1 - r0 < KMEANS_BLOCK_ROWS ? job->r1 - r0 : KMEANS_BLOCK_ROWS;
        const KM_T *x0 = job->X + r0 * d;
        KM(assign)(x0, n, d, d, job->centers, job->cnorm, k, job->scratch, use_gemm,
                   job->block_labels);
        for (int64_t i = 0; i < n; i++) {
            const int64_t label = job->block_labels[i];
            if (job->labels[r0 + i] != label) job->changed++;
            job->labels[r0 + i] = label;
            if (job->sums == NULL) continue;
            const double wi = job->w ? job->w[r0 + i] : 1.0;
            double *sum = job->sums + label * d;
            const KM_T *x = x0 + i * d;
            for (int64_t f = 0; f < d; f++) sum[f] += wi * (double)x[f];
            job->weights[label] += wi;
        }
    }
    return NULL;
}

/* One pass over all rows on up to n_threads threads; thread 0 is the caller.
 * A thread that cannot be started leaves its job to the caller. Returns the
 * number of changed labels; the sums end up in jobs[0]. */
static int64_t KM(lloyd_pass)(KM(lloyd_job) *jobs, int n_jobs, int with_sums)
{
    pthread_t tids[KMEANS_MAX_THREADS];
    int started[KMEANS_MAX_THREADS] = {0};
    for (int t = 1; t < n_jobs; t++)
        started[t] = pthread_create(&tids[t], NULL, KM(lloyd_run), &jobs[t]) == 0;
    KM(lloyd_run)(&jobs[0]);
    for (int t = 1; t < n_jobs; t++) {
        if (started[t])
            pthread_join(tids[t], NULL);
        else
            KM(lloyd_run)(&jobs[t]);
    }
    int64_t changed = jobs[0].changed;
    const int64_t kd = jobs[0].k * jobs[0].d;
    for (int t = 1; t < n_jobs; t++) {
        changed += jobs[t].changed;
        if (!with_sums) continue;
        for (int64_t i = 0; i < kd; i++) jobs[0].sums[i] += jobs[t].sums[i];
        for (int64_t j = 0; j < jobs[0].k; j++) jobs[0].weights[j] += jobs[t].weights[j];
    }
    return changed;
}

/* Clusters left without weight take the points farthest from their own
 * centers, farthest first, as scikit-learn's _relocate_empty_clusters_dense:
 * the point leaves its cluster's sums and becomes the empty cluster's. */
static mls_status KM(relocate_empty)(const KM_T *X, const double *w, int64_t n, int64_t d,
                                     int64_t k, const KM_T *centers, const int64_t *labels,
                                     double *sums, double *weights, mls_error *err)
{
    int64_t n_empty = 0;
    for (int64_t j = 0; j < k; j++) n_empty += weights[j] == 0;
    if (n_empty == 0) return MLS_STATUS_OK;
    double *dist = malloc((size_t)n * sizeof(double));
    if (dist == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory relocating clusters");
    for (int64_t i = 0; i < n; i++)
        dist[i] = (double)KM(sq_dist)(X + i * d, centers + labels[i] * d, d);
    int64_t j = 0;
    for (int64_t e = 0; e < n_empty && e < n; e++) {
        while (weights[j] != 0) j++; /* the next empty cluster, in index order */
        int64_t far = 0;
        for (int64_t i = 1; i < n; i++)
            if (dist[i] > dist[far]) far = i;
        dist[far] = -1; /* taken */
        const double wi = w ? w[far] : 1.0;
        const int64_t old = labels[far];
        const KM_T *x = X + far * d;
        for (int64_t f = 0; f < d; f++) {
            sums[old * d + f] -= (double)x[f] * wi;
            sums[j * d + f] = (double)x[f] * wi;
        }
        weights[j] = wi;
        weights[old] -= wi;
        if (weights[j] == 0) j++; /* a zero-weight point leaves its cluster empty */
    }
    free(dist);
    return MLS_STATUS_OK;
}

/* Weighted sum of squared distances of each row to its label's center. */
static double KM(inertia)(const KM_T *X, const double *w, int64_t n, int64_t d,
                          const KM_T *centers, const int64_t *labels)
{
    double total = 0;
    for (int64_t i = 0; i < n; i++) {
        const double dist = (double)KM(sq_dist)(X + i * d, centers + labels[i] * d, d);
        total += w ? w[i] * dist : dist;
    }
    return total;
}

/* Greedy k-means++ (Arthur & Vassilvitskii; scikit-learn's _kmeans_plusplus):
 * the first center drawn with probability proportional to the weight, each
 * next one the best of n_trials candidates drawn proportionally to w * D^2
 * (the one that lowers the potential most). Candidate distances go
 * through one GEMM per block of rows; the kept candidate's are computed again
 * the same way, so memory stays O(n). */
static mls_status KM(plusplus)(const KM_T *X, const double *w, int64_t n, int64_t d,
                               int64_t k, int64_t n_trials, const KM_T *xnorm, kmeans_rng *rng,
                               KM_T *centers, mls_error *err)
{
    double *closest = malloc((size_t)n * sizeof(double));
    double *cum = malloc((size_t)n * sizeof(double));
    double *pots = malloc((size_t)n_trials * sizeof(double));
    int64_t *cand = malloc((size_t)n_trials * sizeof(int64_t));
    KM_T *cand_x = malloc((size_t)(n_trials * d) * sizeof(KM_T));
    KM_T *cand_norm = malloc((size_t)n_trials * sizeof(KM_T));
    KM_T *scratch = malloc((size_t)(KMEANS_PP_BLOCK_ROWS * n_trials) * sizeof(KM_T));
    /* every candidate's min(D^2, d^2) per row (n x trials, as scikit-learn keeps), so
     * one pass over X per center suffices; without the memory, two passes */
    double *kept = malloc((size_t)(n * n_trials) * sizeof(double));
    mls_status s = MLS_STATUS_OK;
    if (!closest || !cum || !pots || !cand || !cand_x || !cand_norm || !scratch) {
        s = mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory seeding k-means++");
        goto done;
    }
    /* first center: weighted draw */
    double acc = 0;
    for (int64_t i = 0; i < n; i++) cum[i] = acc += w ? w[i] : 1.0;
    int64_t first = kmeans_search(cum, n, kmeans_rng_uniform(rng) * acc);
    memcpy(centers, X + first * d, (size_t)d * sizeof(KM_T));
    KM_T c_norm = xnorm[first];
    for (int64_t i = 0; i < n; i++) closest[i] = 0;
    for (int64_t r0 = 0; r0 < n; r0 += KMEANS_PP_BLOCK_ROWS) {
        const int64_t rows = n - r0 < KMEANS_PP_BLOCK_ROWS ? n - r0 : KMEANS_PP_BLOCK_ROWS;
        KM(dots)(X + r0 * d, rows, d, d, centers, 1, scratch);
        for (int64_t i = 0; i < rows; i++) {
            const double v = (double)(xnorm[r0 + i] + c_norm - 2 * scratch[i]);
            closest[r0 + i] = v > 0 ? v : 0;
        }
    }
    for (int64_t c = 1; c < k; c++) {
        acc = 0;
        for (int64_t i = 0; i < n; i++) cum[i] = acc += (w ? w[i] : 1.0) * closest[i];
        for (int64_t t = 0; t < n_trials; t++) {
            cand[t] = kmeans_search(cum, n, kmeans_rng_uniform(rng) * acc);
            memcpy(cand_x + t * d, X + cand[t] * d, (size_t)d * sizeof(KM_T));
            cand_norm[t] = xnorm[cand[t]];
            pots[t] = 0;
        }
        for (int64_t r0 = 0; r0 < n; r0 += KMEANS_PP_BLOCK_ROWS) {
            const int64_t rows = n - r0 < KMEANS_PP_BLOCK_ROWS ? n - r0 : KMEANS_PP_BLOCK_ROWS;
            KM(dots)(X + r0 * d, rows, d, d, cand_x, n_trials, scratch);
            for (int64_t i = 0; i < rows; i++) {
                const double wi = w ? w[r0 + i] : 1.0;
                for (int64_t t = 0; t < n_trials; t++) {
                    double v = (double)(xnorm[r0 + i] + cand_norm[t] -
                                        2 * scratch[i * n_trials + t]);
                    v = v > 0 ? v : 0;
                    v = v < closest[r0 + i] ? v : closest[r0 + i];
                    if (kept != NULL) kept[(r0 + i) * n_trials + t] = v;
                    pots[t] += wi * v;
                }
            }
        }
        int64_t best = 0;
        for (int64_t t = 1; t < n_trials; t++)
            if (pots[t] < pots[best]) best = t;
        KM_T *center = centers + c * d;
        memcpy(center, cand_x + best * d, (size_t)d * sizeof(KM_T));
        c_norm = cand_norm[best];
        if (kept != NULL) { /* the kept candidate's distances, from the same pass */
            for (int64_t i = 0; i < n; i++) closest[i] = kept[i * n_trials + best];
            continue;
        }
        for (int64_t r0 = 0; r0 < n; r0 += KMEANS_PP_BLOCK_ROWS) {
            const int64_t rows = n - r0 < KMEANS_PP_BLOCK_ROWS ? n - r0 : KMEANS_PP_BLOCK_ROWS;
            KM(dots)(X + r0 * d, rows, d, d, center, 1, scratch);
            for (int64_t i = 0; i < rows; i++) {
                double v = (double)(xnorm[r0 + i] + c_norm - 2 * scratch[i]);
                v = v > 0 ? v : 0;
                if (v < closest[r0 + i]) closest[r0 + i] = v;
            }
        }
    }
done:
    free(closest);
    free(cum);
    free(pots);
    free(cand);
    free(cand_x);
    free(cand_norm);
    free(scratch);
    free(kept);
    return s;
}

/* Lloyd from `centers` (updated in place) until the labels stop changing,
 * the squared center shift falls to tol, or max_iter; then labels that match
 * the final centers and their inertia (scikit-learn's _kmeans_single_lloyd). */
static mls_status KM(lloyd)(const KM_T *X, const double *w, int64_t n, int64_t d, int64_t k,
                            const mls_kmeans_fit_params *p, int64_t init_no, KM_T *centers,
                            int64_t *labels, double *inertia, int64_t *n_iter, mls_error *err)
{
    int n_jobs = p->n_threads < 1 ? 1 : p->n_threads;
    if (n_jobs > KMEANS_MAX_THREADS) n_jobs = KMEANS_MAX_THREADS;
    const int64_t per_job_min = 4 * KMEANS_BLOCK_ROWS; /* a thread per few blocks at least */
    if (n_jobs > 1 && n / n_jobs < per_job_min)
        n_jobs = (int)(n / per_job_min > 1 ? n / per_job_min : 1);
    KM(lloyd_job) jobs[KMEANS_MAX_THREADS];
    memset(jobs, 0, sizeof(jobs));
    KM_T *cnorm = malloc((size_t)k * sizeof(KM_T));
    mls_status s = MLS_STATUS_OK;
    if (cnorm == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    for (int t = 0; t < n_jobs; t++) {
        KM(lloyd_job) *job = &jobs[t];
        job->X = X;
        job->w = w;
        /* rows split in whole blocks */
        const int64_t blocks = (n + KMEANS_BLOCK_ROWS - 1) / KMEANS_BLOCK_ROWS;
        job->r0 = blocks * t / n_jobs * KMEANS_BLOCK_ROWS;
        job->r1 = blocks * (t + 1) / n_jobs * KMEANS_BLOCK_ROWS;
        if (job->r1 > n) job->r1 = n;
        job->d = d;
        job->k = k;
        job->centers = centers;
        job->cnorm = cnorm;
        job->labels = labels;
        job->scratch = malloc((size_t)(KMEANS_BLOCK_ROWS * k) * sizeof(KM_T));
        job->sums = malloc((size_t)(k * d) * sizeof(double));
        job->weights = malloc((size_t)k * sizeof(double));
        job->block_labels = malloc(KMEANS_BLOCK_ROWS * sizeof(int64_t));
        if (!job->scratch || !job->sums || !job->weights || !job->block_labels)
            s = mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory for k-means");
    }
    KM_T *old = malloc((size_t)(k * d) * sizeof(KM_T));
    if (old == NULL) s = mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory for k-means");
    if (s != MLS_STATUS_OK) goto done;
    for (int64_t i = 0; i < n; i++) labels[i] = -1;
    int strict = 0;
    int64_t it = 0;
    while (it < p->max_iter) {
        KM(row_norms)(centers, k, d, d, cnorm);
        const int64_t changed = KM(lloyd_pass)(jobs, n_jobs, 1);
        it++;
        double *sums = jobs[0].sums, *weights = jobs[0].weights;
        s = KM(relocate_empty)(X, w, n, d, k, centers, labels, sums, weights, err);
        if (s != MLS_STATUS_OK) goto done;
        memcpy(old, centers, (size_t)(k * d) * sizeof(KM_T));
        double shift = 0;
        for (int64_t j = 0; j < k; j++) {
            const double alpha = weights[j] > 0 ? 1.0 / weights[j] : 1.0;
            for (int64_t f = 0; f < d; f++) {
                const KM_T v = (KM_T)(sums[j * d + f] * alpha);
                const double diff = (double)v - (double)old[j * d + f];
                shift += diff * diff;
                centers[j * d + f] = v;
            }
        }
        if (p->progress != NULL && p->progress(p->progress_ctx, init_no, it, shift) != 0) {
            s = mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                              "the fit was stopped by its progress callback");
            goto done;
        }
        if (changed == 0 && it > 1) { /* labels as in the previous pass: converged */
            strict = 1;
            break;
        }
        if (shift <= p->tol) break;
    }
    /* labels for the final centers (after a strict convergence the update
     * recomputed the same means from the same labels) */
    if (!strict) {
        KM(row_norms)(centers, k, d, d, cnorm);
        KM(lloyd_pass)(jobs, n_jobs, 0);
    }
    *inertia = KM(inertia)(X, w, n, d, centers, labels);
    *n_iter = it;
done:
    for (int t = 0; t < n_jobs; t++) {
        free(jobs[t].scratch);
        free(jobs[t].sums);
        free(jobs[t].weights);
        free(jobs[t].block_labels);
    }
    free(old);
    free(cnorm);
    return s;
}

/* ---- Hamerly's bounds ------------------------------------------------------------ */

/* Squared distance accumulated in double: the bounds below must not be
 * looser than the rounding of what they bound, in float32 too. */
static double KM(sq_dist_d)(const KM_T *a, const KM_T *b, int64_t d)
{
    double acc[KM_LANES] = {0};
    int64_t f = 0;
    for (; f + KM_LANES <= d; f += KM_LANES)
        for (int l = 0; l < KM_LANES; l++) {
            const double diff = (double)a[f + l] - (double)b[f + l];
            acc[l] += diff * diff;
        }
    for (; f < d; f++) {
        const double diff = (double)a[f] - (double)b[f];
        acc[0] += diff * diff;
    }
    double total = 0;
    for (int l = 0; l < KM_LANES; l++) total += acc[l];
    return total;
}

/* One thread's rows for one Hamerly iteration (Hamerly 2010, "Making k-means
 * even faster"). Each row keeps an upper bound on the distance to its center
 * and a lower bound on the distance to every other center; after the
 * centers move by p, u += p[a] and l -= max p. A row whose u is at most
 * max(l, s[a]) (s: half the distance from its center to the nearest other)
 * keeps its center without computing a distance; else u is made exact, and
 * only if the test still fails are all k distances computed. A full pass
 * (the first, and after a relocation) computes every distance and fresh
 * sums; a bounded pass accumulates only the moves, into delta sums. */
typedef struct KM(hamerly_job) {
    const KM_T *X;
    const double *w;
    int64_t r0, r1, d, k;
    const KM_T *centers;
    const double *p, *s;  /* movement of each center, half distance to the nearest other */
    double p_max, p_second; /* largest movement and the largest of the others */
    int64_t p_arg;
    int64_t *labels;
    double *upper, *lower;
    double *sums, *weights; /* per thread: fresh (full pass) or deltas */
    int full, with_sums;
    int64_t changed;
    /* full passes: GEMM blocks, as KM(assign) */
    const KM_T *xnorm, *cnorm;
    double cnorm_max;
    KM_T *scratch; /* KMEANS_BLOCK_ROWS * k */
    KM_T *gather;  /* KMEANS_BLOCK_ROWS * d: the rows of a block that need every distance */
    int64_t *gather_rows;
} KM(hamerly_job);

/* The nearest center of row i by the GEMM expansion (dots: x_i . c_j), and
 * its bounds: the upper exact, the lower from the expansion less its
 * rounding error (a looser bound only costs a skipped skip). */
static int64_t KM(hamerly_bounds)(KM(hamerly_job) *job, int64_t i, const KM_T *dots)
{
    const int64_t d = job->d, k = job->k;
    const double eps = sizeof(KM_T) == 4 ? 1.2e-7 : 2.3e-16;
    KM_T best = job->cnorm[0] - 2 * dots[0];
    double second = INFINITY;
    int64_t arg = 0;
    for (int64_t j = 1; j < k; j++) {
        const KM_T v = job->cnorm[j] - 2 * dots[j];
        if (v < best) {
            second = best;
            best = v;
            arg = j;
        } else if (v < second) {
            second = v;
        }
    }
    const double xn = (double)job->xnorm[i];
    const double lower2 = second + xn - 8 * eps * (xn + job->cnorm_max + fabs(second));
    job->upper[i] = sqrt(KM(sq_dist_d)(job->X + i * d, job->centers + arg * d, d));
    job->lower[i] = k > 1 ? (lower2 > 0 ? sqrt(lower2) : 0) : INFINITY;
    return arg;
}

/* A full pass over rows [r0, r0 + n): labels by the GEMM expansion (the
 * argmin scikit-learn's Lloyd step takes), the upper bound exact, the lower
 * bound from the expansion less its rounding error (a looser bound only
 * costs a skipped skip). */
static void KM(hamerly_full_block)(KM(hamerly_job) *job, int64_t r0, int64_t n)
{
    const int64_t d = job->d, k = job->k;
    KM(dots)(job->X + r0 * d, n, d, d, job->centers, k, job->scratch);
    for (int64_t i = 0; i < n; i++) {
        const int64_t row = r0 + i;
        const KM_T *x = job->X + row * d;
        const int64_t arg = KM(hamerly_bounds)(job, row, job->scratch + i * k);
        const int64_t a = job->labels[row];
        if (a != arg) job->changed++;
        job->labels[row] = arg;
        if (!job->with_sums) continue;
        const double wi = job->w ? job->w[row] : 1.0;
        double *sum = job->sums + arg * d;
        for (int64_t f = 0; f < d; f++) sum[f] += wi * (double)x[f];
        job->weights[arg] += wi;
    }
}

static void *KM(hamerly_run)(void *arg)
{
    KM(hamerly_job) *job = arg;
    const int64_t d = job->d, k = job->k;
    const KM_T *C = job->centers;
    if (job->with_sums) {
        memset(job->sums, 0, (size_t)(k * d) * sizeof(double));
        memset(job->weights, 0, (size_t)k * sizeof(double));
    }
    job->changed = 0;
    if (job->full) {
        for (int64_t r0 = job->r0; r0 < job->r1; r0 += KMEANS_BLOCK_ROWS)
            KM(hamerly_full_block)(job, r0, job->r1 - r0 < KMEANS_BLOCK_ROWS ? job->r1 - r0
                                                                         : KMEANS_BLOCK_ROWS);
        return NULL;
    }
    for (int64_t b0 = job->r0; b0 < job->r1; b0 += KMEANS_BLOCK_ROWS) {
        const int64_t b1 = job->r1 - b0 < KMEANS_BLOCK_ROWS ? job->r1 : b0 + KMEANS_BLOCK_ROWS;
        int64_t n_fail = 0;
        for (int64_t i = b0; i < b1; i++) {
            const int64_t a = job->labels[i];
            double u = job->upper[i] + job->p[a];
            const double l = job->lower[i] - (a == job->p_arg ? job->p_second : job->p_max);
            const double m = l > job->s[a] ? l : job->s[a];
            job->lower[i] = l;
            if (u > m) {
                u = sqrt(KM(sq_dist_d)(job->X + i * d, C + a * d, d));
                if (u > m) { /* every distance needed: gathered for one GEMM */
                    memcpy(job->gather + n_fail * d, job->X + i * d, (size_t)d * sizeof(KM_T));
                    job->gather_rows[n_fail++] = i;
                }
            }
            job->upper[i] = u;
        }
        if (n_fail == 0) continue;
        KM(dots)(job->gather, n_fail, d, d, C, k, job->scratch);
        for (int64_t q = 0; q < n_fail; q++) {
            const int64_t i = job->gather_rows[q];
            const int64_t a = job->labels[i];
            const int64_t arg = KM(hamerly_bounds)(job, i, job->scratch + q * k);
            if (a == arg) continue;
            job->changed++;
            job->labels[i] = arg;
            if (!job->with_sums) continue;
            const KM_T *x = job->X + i * d;
            const double wi = job->w ? job->w[i] : 1.0;
            double *from = job->sums + a * d, *to = job->sums + arg * d;
            for (int64_t f = 0; f < d; f++) {
                from[f] -= wi * (double)x[f];
                to[f] += wi * (double)x[f];
            }
            job->weights[a] -= wi;
            job->weights[arg] += wi;
        }
    }
    return NULL;
}

static int64_t KM(hamerly_pass)(KM(hamerly_job) *jobs, int n_jobs)
{
    pthread_t tids[KMEANS_MAX_THREADS];
    int started[KMEANS_MAX_THREADS] = {0};
    for (int t = 1; t < n_jobs; t++)
        started[t] = pthread_create(&tids[t], NULL, KM(hamerly_run), &jobs[t]) == 0;
    KM(hamerly_run)(&jobs[0]);
    int64_t changed = jobs[0].changed;
    for (int t = 1; t < n_jobs; t++) {
        if (started[t])
            pthread_join(tids[t], NULL);
        else
            KM(hamerly_run)(&jobs[t]);
        changed += jobs[t].changed;
    }
    return changed;
}

/* Movement p of each center from old to new, s = half the distance of each
 * new center to its nearest other, and the two largest movements. */
static void KM(hamerly_moves)(const KM_T *old, const KM_T *centers, int64_t k, int64_t d,
                              double *p, double *s, KM(hamerly_job) *jobs, int n_jobs)
{
    double p_max = 0, p_second = 0;
    int64_t p_arg = 0;
    for (int64_t j = 0; j < k; j++) {
        p[j] = sqrt(KM(sq_dist_d)(old + j * d, centers + j * d, d));
        if (p[j] > p_max) {
            p_second = p_max;
            p_max = p[j];
            p_arg = j;
        } else if (p[j] > p_second) {
            p_second = p[j];
        }
    }
    for (int64_t j = 0; j < k; j++) {
        double nearest = INFINITY;
        for (int64_t o = 0; o < k; o++) {
            if (o == j) continue;
            const double v = KM(sq_dist_d)(centers + j * d, centers + o * d, d);
            if (v < nearest) nearest = v;
        }
        s[j] = 0.5 * sqrt(nearest);
    }
    for (int t = 0; t < n_jobs; t++) {
        jobs[t].p_max = p_max;
        jobs[t].p_second = p_second;
        jobs[t].p_arg = p_arg;
    }
}

static void KM(hamerly_center_norms)(const KM_T *centers, int64_t k, int64_t d, KM_T *cnorm,
                                     KM(hamerly_job) *jobs, int n_jobs)
{
    KM(row_norms)(centers, k, d, d, cnorm);
    double cmax = 0;
    for (int64_t j = 0; j < k; j++)
        if ((double)cnorm[j] > cmax) cmax = (double)cnorm[j];
    for (int t = 0; t < n_jobs; t++) jobs[t].cnorm_max = cmax;
}

/* Lloyd's iterations with Hamerly's bounds: the same labels and centers as
 * KM(lloyd) (exact distances instead of the GEMM expansion), in a fraction
 * of the distance computations once the centers settle. Same stopping
 * rules and outputs as KM(lloyd). */
static mls_status KM(hamerly)(const KM_T *X, const KM_T *xnorm, const double *w, int64_t n,
                              int64_t d, int64_t k, const mls_kmeans_fit_params *p,
                              int64_t init_no, KM_T *centers,
                              int64_t *labels, double *inertia, int64_t *n_iter, mls_error *err)
{
    int n_jobs = p->n_threads < 1 ? 1 : p->n_threads;
    if (n_jobs > KMEANS_MAX_THREADS) n_jobs = KMEANS_MAX_THREADS;
    const int64_t per_job_min = 4 * KMEANS_BLOCK_ROWS;
    if (n_jobs > 1 && n / n_jobs < per_job_min)
        n_jobs = (int)(n / per_job_min > 1 ? n / per_job_min : 1);
    KM(hamerly_job) jobs[KMEANS_MAX_THREADS];
    memset(jobs, 0, sizeof(jobs));
    double *upper = malloc((size_t)n * sizeof(double));
    double *lower = malloc((size_t)n * sizeof(double));
    double *sums = malloc((size_t)(k * d) * sizeof(double));
    double *weights = malloc((size_t)k * sizeof(double));
    double *moves = malloc((size_t)(2 * k) * sizeof(double));
    KM_T *old = malloc((size_t)(k * d) * sizeof(KM_T));
    KM_T *cnorm = malloc((size_t)k * sizeof(KM_T));
    int64_t *counts = malloc((size_t)k * sizeof(int64_t));
    mls_status s = MLS_STATUS_OK;
    if (!upper || !lower || !sums || !weights || !moves || !old || !cnorm || !counts)
        s = mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory for k-means");
    for (int t = 0; t < n_jobs && s == MLS_STATUS_OK; t++) {
        KM(hamerly_job) *job = &jobs[t];
        job->X = X;
        job->w = w;
        job->r0 = n * t / n_jobs;
        job->r1 = n * (t + 1) / n_jobs;
        job->d = d;
        job->k = k;
        job->centers = centers;
        job->p = moves;
        job->s = moves + k;
        job->labels = labels;
        job->upper = upper;
        job->lower = lower;
        job->sums = malloc((size_t)(k * d) * sizeof(double));
        job->weights = malloc((size_t)k * sizeof(double));
        job->xnorm = xnorm;
        job->cnorm = cnorm;
        job->scratch = malloc((size_t)(KMEANS_BLOCK_ROWS * k) * sizeof(KM_T));
        job->gather = malloc((size_t)(KMEANS_BLOCK_ROWS * d) * sizeof(KM_T));
        job->gather_rows = malloc(KMEANS_BLOCK_ROWS * sizeof(int64_t));
        if (!job->sums || !job->weights || !job->scratch || !job->gather || !job->gather_rows)
            s = mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory for k-means");
    }
    if (s != MLS_STATUS_OK) goto done;
    for (int64_t i = 0; i < n; i++) labels[i] = -1;
    int strict = 0, full = 1;
    int64_t it = 0;
    while (it < p->max_iter) {
        KM(hamerly_center_norms)(centers, k, d, cnorm, jobs, n_jobs);
        for (int t = 0; t < n_jobs; t++) {
            jobs[t].full = full;
            jobs[t].with_sums = 1;
        }
        const int64_t changed = KM(hamerly_pass)(jobs, n_jobs);
        it++;
        if (full) {
            memset(sums, 0, (size_t)(k * d) * sizeof(double));
            memset(weights, 0, (size_t)k * sizeof(double));
        }
        for (int t = 0; t < n_jobs; t++) {
            for (int64_t i = 0; i < k * d; i++) sums[i] += jobs[t].sums[i];
            for (int64_t j = 0; j < k; j++) weights[j] += jobs[t].weights[j];
        }
        /* the weights again from the labels (one pass over n labels): deltas of
         * non-integer weights drift, and a cluster whose rows all left must be
         * exactly empty, its sums exactly 0 */
        memset(counts, 0, (size_t)k * sizeof(int64_t));
        if (w != NULL) memset(weights, 0, (size_t)k * sizeof(double));
        for (int64_t i = 0; i < n; i++) {
            counts[labels[i]]++;
            if (w != NULL) weights[labels[i]] += w[i];
        }
        full = 0;
        for (int64_t j = 0; j < k; j++) {
            if (counts[j] == 0) {
                memset(sums + j * d, 0, (size_t)d * sizeof(double));
                weights[j] = 0;
            }
            full |= weights[j] == 0;
        }
        if (full) { /* the relocation moves sums but not labels: the next pass starts afresh */
            s = KM(relocate_empty)(X, w, n, d, k, centers, labels, sums, weights, err);
            if (s != MLS_STATUS_OK) goto done;
        }
        memcpy(old, centers, (size_t)(k * d) * sizeof(KM_T));
        double shift = 0;
        for (int64_t j = 0; j < k; j++) {
            const double alpha = weights[j] > 0 ? 1.0 / weights[j] : 1.0;
            for (int64_t f = 0; f < d; f++) {
                const KM_T v = (KM_T)(sums[j * d + f] * alpha);
                const double diff = (double)v - (double)old[j * d + f];
                shift += diff * diff;
                centers[j * d + f] = v;
            }
        }
        KM(hamerly_moves)(old, centers, k, d, moves, moves + k, jobs, n_jobs);
        if (p->progress != NULL && p->progress(p->progress_ctx, init_no, it, shift) != 0) {
            s = mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                              "the fit was stopped by its progress callback");
            goto done;
        }
        if (changed == 0 && it > 1) {
            strict = 1;
            break;
        }
        if (shift <= p->tol) break;
    }
    if (!strict) { /* labels for the final centers: the bounds know how far they moved */
        KM(hamerly_center_norms)(centers, k, d, cnorm, jobs, n_jobs);
        for (int t = 0; t < n_jobs; t++) {
            jobs[t].full = full;
            jobs[t].with_sums = 0;
        }
        KM(hamerly_pass)(jobs, n_jobs);
    }
    *inertia = KM(inertia)(X, w, n, d, centers, labels);
    *n_iter = it;
done:
    for (int t = 0; t < n_jobs; t++) {
        free(jobs[t].sums);
        free(jobs[t].weights);
        free(jobs[t].scratch);
        free(jobs[t].gather);
        free(jobs[t].gather_rows);
    }
    free(cnorm);
    free(counts);
    free(upper);
    free(lower);
    free(sums);
    free(weights);
    free(moves);
    free(old);
    return s;
}

static mls_status KM(fit)(const mls_tensor *Xt, const double *w,
                          const mls_kmeans_fit_params *p, KM_T *centers_out, int64_t *labels_out,
                          double *inertia_out, int64_t *n_iter_out, mls_error *err)
{
    const int64_t n = Xt->rows, d = Xt->cols, k = p->n_clusters;
    const int64_t n_trials =
        p->n_local_trials > 0 ? p->n_local_trials : 2 + (int64_t)log((double)k);
    /* centred copy: the GEMM expansion of distances loses less to rounding
     * near the origin (scikit-learn centres for the same reason) */
    KM_T *X = malloc((size_t)(n * d) * sizeof(KM_T));
    double *mean = calloc((size_t)d, sizeof(double));
    KM_T *xnorm = malloc((size_t)n * sizeof(KM_T));
    KM_T *centers = malloc((size_t)(k * d) * sizeof(KM_T));
    int64_t *labels = malloc((size_t)n * sizeof(int64_t));
    mls_status s = MLS_STATUS_OK;
    if (!X || !mean || !xnorm || !centers || !labels) {
        s = mls_error_set(err, MLS_STATUS_ERR_NOMEM,
                          "out of memory for a k-means fit of %lld x %lld", (long long)n,
                          (long long)d);
        goto done;
    }
    const KM_T *src = Xt->data;
    for (int64_t i = 0; i < n; i++)
        for (int64_t f = 0; f < d; f++) mean[f] += (double)src[i * Xt->row_stride + f];
    for (int64_t f = 0; f < d; f++) mean[f] /= (double)n;
    for (int64_t i = 0; i < n; i++)
        for (int64_t f = 0; f < d; f++)
            X[i * d + f] = (KM_T)(src[i * Xt->row_stride + f] - (KM_T)mean[f]);
    KM(row_norms)(X, n, d, d, xnorm);
    kmeans_rng rng;
    kmeans_rng_seed(&rng, p->seed);
    double best = INFINITY;
    for (int64_t r = 0; r < p->n_init; r++) {
        if (p->init != NULL) {
            const KM_T *init = p->init;
            for (int64_t j = 0; j < k; j++)
                for (int64_t f = 0; f < d; f++)
                    centers[j * d + f] = (KM_T)(init[j * d + f] - (KM_T)mean[f]);
        } else {
            s = KM(plusplus)(X, w, n, d, k, n_trials, xnorm, &rng, centers, err);
            if (s != MLS_STATUS_OK) goto done;
        }
        double inertia = 0;
        int64_t n_iter = 0;
        /* Hamerly's bounds pay for few clusters (one bound per row); with many,
         * the GEMM of every pass wins */
        if (k <= KMEANS_HAMERLY_MAX_K)
            s = KM(hamerly)(X, xnorm, w, n, d, k, p, r, centers, labels, &inertia, &n_iter,
                            err);
        else
            s = KM(lloyd)(X, w, n, d, k, p, r, centers, labels, &inertia, &n_iter, err);
        if (s != MLS_STATUS_OK) goto done;
        if (r == 0 || inertia < best) {
            best = inertia;
            for (int64_t j = 0; j < k; j++)
                for (int64_t f = 0; f < d; f++)
                    centers_out[j * d + f] = (KM_T)(centers[j * d + f] + (KM_T)mean[f]);
            memcpy(labels_out, labels, (size_t)n * sizeof(int64_t));
            *inertia_out = inertia;
            *n_iter_out = n_iter;
        }
    }
done:
    free(X);
    free(mean);
    free(xnorm);
    free(centers);
    free(labels);
    return s;
}

#undef KM
#undef KM_CAT
#undef KM_CAT2
#undef KM_LANES
