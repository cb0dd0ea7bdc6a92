/* mls_topk_quant.c: the int8 copy of an item matrix and stage 1 of the
 * two-stage exact top-k scan (contract and bound in mls_topk_quant.h).
 *
 * Why: one query reads the whole float32 item matrix (25.6 MB for 100k x
 * 64), which is the floor of a full scan; stage 1 reads a quarter of those
 * bytes and stage 2 rescores the few items the bound cannot rule out.
 *
 * Integer dot products: qh (int8, |qh| <= 63) . codes (int8, |c| <= 127),
 * the codes stored plus 128 so that vpmaddubsw (unsigned x signed bytes)
 * takes them: sum qh * (c + 128) - 128 * sum qh, in int32, exact whatever
 * the order (stride * 255 * 63 < 2^31). The AVX2 kernel does four items at a
 * time: vpmaddubsw pairs into int16 (2 * 255 * 63 < 2^15, no saturation),
 * vpmaddwd by ones into int32, and one tree of horizontal adds per four
 * items; it prefetches the rows TQ_PREFETCH items ahead.
 */
#include "mls_topk_quant.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define TQ_HAVE_X86 1
#include <immintrin.h>
#endif

#define TQ_BLOCK 1024
#define TQ_CHUNK 16
#define TQ_QMAX 63 /* the query's int8 range: u8 x s8 pairs stay inside int16 */
#define TQ_PREFETCH 32 /* items */

static int64_t tq_qmax(int64_t stride)
{
    int64_t qmax = (int64_t)INT32_MAX / (255 * stride);
    return qmax > TQ_QMAX ? TQ_QMAX : qmax;
}

/* The float at or above x (x >= 0, finite). */
static float round_up(double x)
{
    float f = (float)x;
    if ((double)f < x) f = nextafterf(f, INFINITY);
    return f;
}

void mls_topk_quant_free(mls_topk_quant *q)
{
    if (q == NULL) return;
    free(q->codes);
    free(q->meta);
    free(q);
}

mls_topk_quant *mls_topk_quant_build(const float *items, int64_t n_items, int64_t dim)
{
    if (n_items < 1 || dim < 1 || dim > (int64_t)1 << 20) return NULL;
    const int64_t stride = (dim + 31) / 32 * 32;
    if (tq_qmax(stride) < TQ_QMAX) return NULL; /* int32 sums could overflow */
    if ((uint64_t)n_items > SIZE_MAX / 64 / (uint64_t)stride) return NULL;
    mls_topk_quant *q = calloc(1, sizeof(*q));
    if (q == NULL) return NULL;
    q->n_items = n_items;
    q->dim = dim;
    q->stride = stride;
    size_t code_bytes = (size_t)n_items * (size_t)stride; /* a multiple of 16 */
    q->codes = aligned_alloc(64, (code_bytes + 63) / 64 * 64);
    q->meta = malloc((size_t)n_items * sizeof(*q->meta));
    if (q->codes == NULL || q->meta == NULL) {
        mls_topk_quant_free(q);
        return NULL;
    }
    /* the float rounding of the exact score: at most r * ||q|| * norm_i */
    const double r_round = (2.0 * (double)dim + 16.0) * FLT_EPSILON * (1.0 + 1e-6);
    double max_norm = 0;
    for (int64_t i = 0; i < n_items; i++) {
        const float *v = items + i * dim;
        uint8_t *c = q->codes + i * stride;
        float maxabs = 0;
        for (int64_t j = 0; j < dim; j++) {
            float a = fabsf(v[j]);
            maxabs = a > maxabs ? a : maxabs;
        }
        const float scale = maxabs / 127.0f;
        const double inv = scale > 0 ? 1.0 / (double)scale : 0.0; /* finite: scale >= 2^-149 */
        for (int64_t j = 0; j < dim; j++) {
            /* any integer code is correct (the error is measured below); round to nearest */
            double r = (double)v[j] * inv; /* |r| <= 127 and a little */
            int code = (int)(r + (r >= 0 ? 0.5 : -0.5));
            code = code > 127 ? 127 : code < -127 ? -127 : code;
            c[j] = (uint8_t)(code + 128);
        }
        for (int64_t j = dim; j < stride; j++) c[j] = 128; /* code 0 */
        double e2[4] = {0}, vn2[4] = {0}, vh2[4] = {0};
        for (int64_t j = 0; j < dim; j++) {
            double x = v[j], approx = (double)scale * (double)((int)c[j] - 128);
            e2[j & 3] += (x - approx) * (x - approx);
            vn2[j & 3] += x * x;
            vh2[j & 3] += approx * approx;
        }
        double e = sqrt((e2[0] + e2[1]) + (e2[2] + e2[3]));
        double vn = (vn2[0] + vn2[1]) + (vn2[2] + vn2[3]);
        double vh = (vh2[0] + vh2[1]) + (vh2[2] + vh2[3]);
        double norm = sqrt(vn > vh ? vn : vh) * (1.0 + 1e-12);
        q->meta[i].scale = scale;
        q->meta[i].weight = round_up((e + r_round * norm) * (1.0 + 1e-12));
        q->meta[i].norm = round_up(norm);
        if (norm > max_norm) max_norm = norm;
    }
    q->max_norm = max_norm;
#ifdef TQ_HAVE_X86
    __builtin_cpu_init();
    q->avx2 = __builtin_cpu_supports("avx2");
#endif
    return q;
}

int mls_topk_quant_prepare(const mls_topk_quant *quant, const float *q, mls_topk_quant_query *qq)
{
    const int64_t d = quant->dim, stride = quant->stride;
    double maxabs = 0, n2 = 0;
    for (int64_t j = 0; j < d; j++) {
        double x = q[j];
        if (!isfinite(x)) return 0;
        n2 += x * x;
        maxabs = fmax(maxabs, fabs(x));
    }
    double qnorm = sqrt(n2);
    /* every partial sum of a score stays below FLT_MAX / 16: no overflow */
    if (!(qnorm * quant->max_norm <= FLT_MAX / 16)) return 0;
    const double qmax = (double)tq_qmax(stride);
    double qscale = maxabs > 0 ? maxabs / qmax : 0;
    memset(qq->qh, 0, (size_t)stride);
    int32_t sum = 0;
    double e2 = 0;
    for (int64_t j = 0; j < d && qscale > 0; j++) {
        double h = nearbyint((double)q[j] / qscale);
        h = h > qmax ? qmax : h < -qmax ? -qmax : h;
        qq->qh[j] = (int8_t)h;
        sum += (int32_t)h;
        double e = (double)q[j] - qscale * h;
        e2 += e * e;
    }
    qq->qsum = sum;
    qq->b = sqrt(e2) * (1.0 + 1e-6);
    qq->qscale = qscale;
    qq->a = qnorm * (1.0 + 1e-6);
    qq->t = ((double)d + 1.0) * FLT_MIN;
    return 1;
}

/* ---- integer dot products ------------------------------------------------- */

/* codes are stored plus 128 (uint8): sum qh * (u - 128) */
static void dots_c(const int8_t *qh, int32_t qsum, const uint8_t *codes, int64_t stride,
                   const int64_t *index, int64_t base, int64_t n, int32_t *out)
{
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *c = codes + (index ? index[i] : base + i) * stride;
        int32_t acc = 0;
        for (int64_t j = 0; j < stride; j++) acc += (int32_t)qh[j] * (int32_t)c[j];
        out[i] = acc - 128 * qsum;
    }
}

#ifdef TQ_HAVE_X86
/* vpmaddubsw: u8 codes x s8 query, pairs summed in int16 (|.| <= 2 * 255 * 63 <
 * 2^15, no saturation); vpmaddwd by ones widens to int32. */
__attribute__((target("avx2"))) static void dots_avx2(const int8_t *qh, int32_t qsum,
                                                      const uint8_t *codes, int64_t stride,
                                                      const int64_t *index, int64_t base,
                                                      int64_t n, int32_t *out)
{
    const __m256i ones = _mm256_set1_epi16(1);
    const __m128i offset = _mm_set1_epi32(128 * qsum);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint8_t *c[4];
        for (int r = 0; r < 4; r++) c[r] = codes + (index ? index[i + r] : base + i + r) * stride;
        if (i + TQ_PREFETCH + 4 <= n) /* the rows TQ_PREFETCH items ahead */
            for (int r = 0; r < 4; r++) {
                const char *ahead =
                    (const char *)codes +
                    (index ? index[i + TQ_PREFETCH + r] : base + i + TQ_PREFETCH + r) * stride;
                for (int64_t off = 0; off < stride; off += 64)
                    _mm_prefetch(ahead + off, _MM_HINT_T0);
            }
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t j = 0; j < stride; j += 32) {
            __m256i qv = _mm256_loadu_si256((const __m256i *)(qh + j));
#define TQ_TERM(r)                                                                           \
    _mm256_madd_epi16(                                                                       \
        _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(c[r] + j)), qv), ones)
            a0 = _mm256_add_epi32(a0, TQ_TERM(0));
            a1 = _mm256_add_epi32(a1, TQ_TERM(1));
            a2 = _mm256_add_epi32(a2, TQ_TERM(2));
            a3 = _mm256_add_epi32(a3, TQ_TERM(3));
#undef TQ_TERM
        }
        __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        _mm_storeu_si128((__m128i *)(out + i), _mm_sub_epi32(s, offset));
    }
    if (i < n)
        dots_c(qh, qsum, codes, stride, index ? index + i : NULL, base + i, n - i, out + i);
}
#endif

/* ---- stage 1 --------------------------------------------------------------- */

static void lower_push(double *h, int64_t *n, int64_t k, double v)
{
    int64_t pos;
    if (*n < k) {
        pos = (*n)++;
        while (pos > 0) {
            int64_t parent = (pos - 1) / 2;
            if (h[parent] <= v) break;
            h[pos] = h[parent];
            pos = parent;
        }
        h[pos] = v;
        return;
    }
    pos = 0; /* replace the root (the smallest) and sift down */
    for (;;) {
        int64_t child = 2 * pos + 1;
        if (child >= k) break;
        if (child + 1 < k && h[child + 1] < h[child]) child++;
        if (h[child] >= v) break;
        h[pos] = h[child];
        pos = child;
    }
    h[pos] = v;
}

static int excluded(const int64_t *row, int64_t len, int64_t item)
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

/* Drops the candidates that the current threshold rules out. */
static void prune(mls_topk_stage1 *s, double threshold)
{
    int64_t kept = 0;
    for (int64_t j = 0; j < s->n_cands; j++)
        if (s->cands[j].upper >= threshold) s->cands[kept++] = s->cands[j];
    s->n_cands = kept;
}

mls_status mls_topk_quant_stage1(const mls_topk_quant *quant, const mls_topk_quant_query *qq,
                                 int64_t p0, int64_t p1, const int64_t *candidates,
                                 const int64_t *excl, int64_t n_excl, const float *inv_norm,
                                 int64_t k, mls_topk_stage1 *s)
{
    int32_t *acc = malloc(TQ_BLOCK * sizeof(int32_t));
    double *lower = malloc(TQ_BLOCK * sizeof(double));
    double *upper = malloc(TQ_BLOCK * sizeof(double));
    if (acc == NULL || lower == NULL || upper == NULL) {
        free(acc);
        free(lower);
        free(upper);
        return MLS_STATUS_ERR_NOMEM;
    }
    const double a = qq->a, b = qq->b, t = qq->t, qscale = qq->qscale;
    const double two_eps = 2.0 * FLT_EPSILON;
    for (int64_t p = p0; p < p1 && !s->overflow; p += TQ_BLOCK) {
        const int64_t nb = p1 - p < TQ_BLOCK ? p1 - p : TQ_BLOCK;
        const int64_t *index = candidates ? candidates + p : NULL;
#ifdef TQ_HAVE_X86
        if (quant->avx2)
            dots_avx2(qq->qh, qq->qsum, quant->codes, quant->stride, index, p, nb, acc);
        else
#endif
            dots_c(qq->qh, qq->qsum, quant->codes, quant->stride, index, p, nb, acc);
        for (int64_t j = 0; j < nb; j++) {
            const int64_t item = index ? index[j] : p + j;
            double approx = (double)acc[j] * qscale * (double)quant->meta[item].scale;
            double bound =
                a * (double)quant->meta[item].weight + b * (double)quant->meta[item].norm + t;
            if (inv_norm) {
                /* the full scan's cosine score is float(dot * inv): one more rounding */
                double f = (double)inv_norm[item];
                bound = (bound + two_eps * (fabs(approx) + bound)) * f;
                approx *= f;
            }
            lower[j] = approx - bound;
            upper[j] = approx + bound;
        }
        double threshold = s->n_lower < k ? -INFINITY : s->lower[0];
        for (int64_t j0 = 0; j0 < nb; j0 += TQ_CHUNK) {
            const int64_t j1 = nb - j0 < TQ_CHUNK ? nb : j0 + TQ_CHUNK;
            if (j1 - j0 == TQ_CHUNK) {
                int any = 0;
                for (int i = 0; i < TQ_CHUNK; i++) any |= upper[j0 + i] >= threshold;
                if (!any) continue;
            }
            for (int64_t j = j0; j < j1; j++) {
                if (!(upper[j] >= threshold)) continue;
                const int64_t item = index ? index[j] : p + j;
                if (n_excl && excluded(excl, n_excl, item)) continue;
                if (s->n_cands == s->cap) {
                    prune(s, threshold);
                    if (s->n_cands > s->cap / 2) {
                        s->overflow = 1;
                        break;
                    }
                }
                s->cands[s->n_cands++] = (mls_topk_cand){item, upper[j]};
                if (s->n_lower < k || lower[j] > s->lower[0])
                    lower_push(s->lower, &s->n_lower, k, lower[j]);
                threshold = s->n_lower < k ? -INFINITY : s->lower[0];
            }
            if (s->overflow) break;
        }
    }
    free(acc);
    free(lower);
    free(upper);
    return MLS_STATUS_OK;
}

static int cmp_desc(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? 1 : a > b ? -1 : 0;
}

double mls_topk_quant_threshold(const mls_topk_stage1 *states, int n_states, int64_t k)
{
    if (n_states == 1) return states[0].n_lower < k ? -INFINITY : states[0].lower[0];
    int64_t total = 0;
    for (int t = 0; t < n_states; t++) total += states[t].n_lower;
    if (total < k) return -INFINITY;
    double *all = malloc((size_t)total * sizeof(double));
    if (all == NULL) { /* a lower threshold is still correct: the smallest heap root */
        double th = INFINITY;
        for (int t = 0; t < n_states; t++)
            if (states[t].n_lower > 0 && states[t].lower[0] < th) th = states[t].lower[0];
        return th == INFINITY ? -INFINITY : th;
    }
    int64_t n = 0;
    for (int t = 0; t < n_states; t++)
        for (int64_t j = 0; j < states[t].n_lower; j++) all[n++] = states[t].lower[j];
    qsort(all, (size_t)n, sizeof(double), cmp_desc);
    double th = all[k - 1];
    free(all);
    return th;
}
