/* conv.c: Conv (im2col + SGEMM; 1x1 as a plain SGEMM; depthwise as a direct
 * loop) and Gemm (SGEMM/SGEMV over a constant (K, M) weight), each with its
 * bias and fused activation. */
#include <string.h>

#include "../mls_blas.h"
#include "graph_internal.h"

#define GR_MAX_KERNEL 1024
#define GR_MAX_PAD 65536
#define GR_MAX_SCRATCH ((int64_t)1 << 30)

/* Conv attributes: group, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr */
typedef struct conv_geo {
    int64_t C, H, W, M, G, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, OH, OW;
} conv_geo;

static void geo_of(const gr_graph *g, const gr_node *nd, conv_geo *c)
{
    const gr_tensor *x = gr_in(g, nd, 0), *w = gr_in(g, nd, 1);
    const int two = x->ndim == 3;
    c->C = x->dims[0];
    c->H = two ? x->dims[1] : 1;
    c->W = two ? x->dims[2] : x->dims[1];
    c->M = w->dims[0];
    c->G = nd->ia[0];
    c->kh = nd->ia[1], c->kw = nd->ia[2], c->sh = nd->ia[3], c->sw = nd->ia[4];
    c->dh = nd->ia[5], c->dw = nd->ia[6];
    c->pt = nd->ia[7], c->pl = nd->ia[8], c->pb = nd->ia[9], c->pr = nd->ia[10];
    c->OH = (c->H + c->pt + c->pb - c->dh * (c->kh - 1) - 1) / c->sh + 1;
    c->OW = (c->W + c->pl + c->pr - c->dw * (c->kw - 1) - 1) / c->sw + 1;
}

mls_status gr_infer_conv(gr_graph *g, gr_node *nd, int64_t idx, gr_tensor *o, int64_t *scratch,
                         mls_error *err)
{
    if (nd->op != GR_CONV) return gr_node_error(err, nd, idx, "not built in this version");
    if (nd->n_in < 2 || nd->n_in > 3 || nd->n_ia != 11)
        return gr_node_error(err, nd, idx, "needs 2-3 inputs and 11 attributes");
    const gr_tensor *x = gr_in(g, nd, 0), *w = gr_in(g, nd, 1);
    if (x->kind == 1 || (x->ndim != 2 && x->ndim != 3))
        return gr_node_error(err, nd, idx, "input must be a batched (C, W) or (C, H, W) tensor");
    if (w->kind != 1 || w->ndim != x->ndim + 1)
        return gr_node_error(err, nd, idx, "weights must be a constant of rank %d", x->ndim + 1);
    for (int i = 0; i < 11; i++) {
        const int64_t lim = i == 0 ? (int64_t)1 << 20 : i < 7 ? GR_MAX_KERNEL : GR_MAX_PAD;
        if (nd->ia[i] < (i < 7 ? 1 : 0) || nd->ia[i] > lim)
            return gr_node_error(err, nd, idx, "attribute %d is %lld, out of range", i,
                                 (long long)nd->ia[i]);
    }
    conv_geo c;
    geo_of(g, nd, &c);
    const int two = x->ndim == 3;
    if (!two && (c.kh != 1 || c.sh != 1 || c.dh != 1 || c.pt != 0 || c.pb != 0))
        return gr_node_error(err, nd, idx, "a 1-D convolution has no height attributes");
    if (c.C % c.G != 0 || c.M % c.G != 0 || w->dims[1] != c.C / c.G ||
        (two ? w->dims[2] != c.kh || w->dims[3] != c.kw : w->dims[2] != c.kw))
        return gr_node_error(err, nd, idx,
                             "weights of shape (%lld, %lld, ...) do not fit %lld channels, "
                             "group %lld, kernel %lldx%lld",
                             (long long)w->dims[0], (long long)w->dims[1], (long long)c.C,
                             (long long)c.G, (long long)c.kh, (long long)c.kw);
    if (c.H + c.pt + c.pb < c.dh * (c.kh - 1) + 1 || c.W + c.pl + c.pr < c.dw * (c.kw - 1) + 1)
        return gr_node_error(err, nd, idx, "the kernel is larger than the padded input");
    if (nd->n_in == 3) {
        const gr_tensor *b = gr_in(g, nd, 2);
        if (b->kind != 1 || b->size != c.M)
            return gr_node_error(err, nd, idx, "bias must be a constant of %lld values",
                                 (long long)c.M);
    }
    int64_t p, k, s;
    if (!mls_size_mul(c.OH, c.OW, &p) || !mls_size_mul(c.M, p, &s) || s > GR_MAX_PER_SAMPLE ||
        !mls_size_mul(c.C / c.G * c.kh, c.kw, &k) || !mls_size_mul(k, p, &s) ||
        s > GR_MAX_SCRATCH || !mls_blas_fits_int(p) || !mls_blas_fits_int(k))
        return gr_node_error(err, nd, idx, "output or im2col buffer too large");
    const int pointwise = c.kh == 1 && c.kw == 1 && c.sh == 1 && c.sw == 1 && c.pt == 0 &&
                          c.pl == 0 && c.pb == 0 && c.pr == 0;
    const int depthwise = c.G == c.C && c.G == c.M;
    nd->col_size = depthwise ? 0 : s;
    nd->out_size = c.M * p;
    if (!depthwise && (nd->col_size + nd->out_size > GR_MAX_SCRATCH))
        return gr_node_error(err, nd, idx, "im2col buffer too large");
    *scratch = pointwise || depthwise ? 0 : s;
    o->ndim = x->ndim;
    o->dims[0] = c.M;
    if (two) {
        o->dims[1] = c.OH;
        o->dims[2] = c.OW;
    } else {
        o->dims[1] = c.OW;
    }
    return MLS_STATUS_OK;
}

/* ow range [lo, hi) for which iw = ow * sw + off lies in [0, W) */
static inline void valid_range(int64_t off, int64_t s, int64_t W, int64_t OW, int64_t *lo,
                               int64_t *hi)
{
    int64_t a = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t b = W - 1 - off < 0 ? 0 : (W - 1 - off) / s + 1;
    if (b > OW) b = OW;
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

int64_t gr_conv_batch(const gr_node *nd, int64_t N)
{
    /* small outputs gain from one large SGEMM; large ones are efficient per sample */
    if (N < 2 || nd->col_size == 0) return 1;
    const int64_t per = nd->col_size + nd->out_size;
    int64_t nb = GR_BATCH_SCRATCH / per;
    if (nb > N) nb = N;
    return nb < 2 ? 1 : nb;
}

int64_t gr_conv_scratch(const gr_node *nd, int64_t N)
{
    const int64_t nb = gr_conv_batch(nd, N);
    return nb > 1 ? nb * (nd->col_size + nd->out_size) : nd->col_size;
}

/* im2col of one sample's group into rows of stride ld (ld >= P) */
static void im2col(const conv_geo *c, const float *x, int64_t Cg, float *col, int64_t ld)
{
    const int64_t P = ld;
    for (int64_t ch = 0; ch < Cg; ch++) {
        const float *xc = x + ch * c->H * c->W;
        for (int64_t ki = 0; ki < c->kh; ki++)
            for (int64_t kj = 0; kj < c->kw; kj++) {
                float *dst = col + ((ch * c->kh + ki) * c->kw + kj) * P;
                const int64_t offw = kj * c->dw - c->pl;
                int64_t lo, hi;
                valid_range(offw, c->sw, c->W, c->OW, &lo, &hi);
                for (int64_t oh = 0; oh < c->OH; oh++) {
                    float *d = dst + oh * c->OW;
                    const int64_t ih = oh * c->sh - c->pt + ki * c->dh;
                    if (ih < 0 || ih >= c->H) {
                        memset(d, 0, (size_t)c->OW * sizeof(float));
                        continue;
                    }
                    const float *xr = xc + ih * c->W + offw;
                    for (int64_t ow = 0; ow < lo; ow++) d[ow] = 0;
                    if (c->sw == 1)
                        memcpy(d + lo, xr + lo, (size_t)(hi - lo) * sizeof(float));
                    else
                        for (int64_t ow = lo; ow < hi; ow++) d[ow] = xr[ow * c->sw];
                    for (int64_t ow = hi; ow < c->OW; ow++) d[ow] = 0;
                }
            }
    }
}

static void depthwise(const conv_geo *c, const float *x, const float *w, float *y)
{
    for (int64_t ch = 0; ch < c->C; ch++) {
        const float *xc = x + ch * c->H * c->W, *wc = w + ch * c->kh * c->kw;
        float *yc = y + ch * c->OH * c->OW;
        for (int64_t oh = 0; oh < c->OH; oh++) {
            float *yr = yc + oh * c->OW;
            for (int64_t ki = 0; ki < c->kh; ki++) {
                const int64_t ih = oh * c->sh - c->pt + ki * c->dh;
                if (ih < 0 || ih >= c->H) continue;
                for (int64_t kj = 0; kj < c->kw; kj++) {
                    const float wv = wc[ki * c->kw + kj];
                    const int64_t offw = kj * c->dw - c->pl;
                    int64_t lo, hi;
                    valid_range(offw, c->sw, c->W, c->OW, &lo, &hi);
                    const float *xr = xc + ih * c->W + offw;
                    if (c->sw == 1)
                        for (int64_t ow = lo; ow < hi; ow++) yr[ow] += wv * xr[ow];
                    else
                        for (int64_t ow = lo; ow < hi; ow++) yr[ow] += wv * xr[ow * c->sw];
                }
            }
        }
    }
}

static void conv_batched(const conv_geo *c, const gr_node *nd, int64_t N, int64_t nb,
                         const float *x, const float *w, const float *bias, float *y,
                         float *scratch)
{
    const int64_t P = c->OH * c->OW, Cg = c->C / c->G, Mg = c->M / c->G, K = Cg * c->kh * c->kw;
    const int64_t in_size = c->C * c->H * c->W, out_size = c->M * P;
    float *col = scratch, *tmp = scratch + nb * nd->col_size;
    for (int64_t n0 = 0; n0 < N; n0 += nb) {
        const int64_t cnt = N - n0 < nb ? N - n0 : nb, ld = cnt * P;
        for (int64_t gi = 0; gi < c->G; gi++) {
            for (int64_t s = 0; s < cnt; s++)
                im2col(c, x + (n0 + s) * in_size + gi * Cg * c->H * c->W, Cg, col + s * P, ld);
            mls_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)Mg, (int)ld, (int)K,
                            1.0f, w + gi * Mg * K, (int)K, col, (int)ld, 0.0f, tmp, (int)ld);
            for (int64_t s = 0; s < cnt; s++)
                for (int64_t m = 0; m < Mg; m++) {
                    const float b = bias ? bias[gi * Mg + m] : 0.0f;
                    const float *src = tmp + m * ld + s * P;
                    float *dst = y + (n0 + s) * out_size + (gi * Mg + m) * P;
                    if (nd->act == 1) /* Relu in the same pass */
                        for (int64_t p = 0; p < P; p++) {
                            const float v = src[p] + b;
                            dst[p] = v > 0 ? v : 0.0f;
                        }
                    else
                        for (int64_t p = 0; p < P; p++) dst[p] = src[p] + b;
                }
        }
    }
}

void gr_run_conv(const gr_graph *g, const gr_node *nd, int64_t N, const float **x, float *y,
                 float *scratch)
{
    conv_geo c;
    geo_of(g, nd, &c);
    const float *w = x[1], *bias = nd->n_in == 3 ? x[2] : NULL;
    const int64_t P = c.OH * c.OW, Cg = c.C / c.G, Mg = c.M / c.G, K = Cg * c.kh * c.kw;
    const int64_t in_size = c.C * c.H * c.W, out_size = c.M * P;
    const int pointwise = c.kh == 1 && c.kw == 1 && c.sh == 1 && c.sw == 1 && c.pt == 0 &&
                          c.pl == 0 && c.pb == 0 && c.pr == 0;
    const int dw = c.G == c.C && c.G == c.M;
    const int64_t nb = gr_conv_batch(nd, N);
    if (nb > 1) {
        conv_batched(&c, nd, N, nb, x[0], w, bias, y, scratch);
        if (nd->act != 1) gr_apply_act(nd, y, N * out_size);
        return;
    }
    for (int64_t n = 0; n < N; n++) {
        const float *xn = x[0] + n * in_size;
        float *yn = y + n * out_size;
        for (int64_t m = 0; m < c.M; m++) {
            const float v = bias ? bias[m] : 0.0f;
            float *ym = yn + m * P;
            for (int64_t p = 0; p < P; p++) ym[p] = v;
        }
        if (dw) {
            depthwise(&c, xn, w, yn);
        } else {
            for (int64_t gi = 0; gi < c.G; gi++) {
                const float *xg = xn + gi * Cg * c.H * c.W;
                const float *col = xg;
                if (!pointwise) {
                    im2col(&c, xg, Cg, scratch, P);
                    col = scratch;
                }
                if (P == 1)
                    mls_cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)Mg, (int)K, 1.0f,
                                    w + gi * Mg * K, (int)K, col, 1, 1.0f, yn + gi * Mg, 1);
                else
                    mls_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)Mg, (int)P,
                                    (int)K, 1.0f, w + gi * Mg * K, (int)K, col, (int)P, 1.0f,
                                    yn + gi * Mg * P, (int)P);
            }
        }
    }
    gr_apply_act(nd, y, N * out_size);
}

/* Gemm attributes: trans_b (0: B is (K, M); 1: B is (M, K)) */
mls_status gr_infer_gemm(gr_graph *g, gr_node *nd, int64_t idx, gr_tensor *o, mls_error *err)
{
    if (nd->n_in < 2 || nd->n_in > 3 || nd->n_ia != 1 || nd->ia[0] < 0 || nd->ia[0] > 1)
        return gr_node_error(err, nd, idx, "needs 2-3 inputs and a trans_b attribute");
    const gr_tensor *a = gr_in(g, nd, 0), *w = gr_in(g, nd, 1);
    if (a->kind == 1 || a->ndim < 1)
        return gr_node_error(err, nd, idx, "input A must be a batched tensor of rank >= 2");
    const int tb = (int)nd->ia[0];
    if (w->kind != 1 || w->ndim != 2 || w->dims[tb] != a->dims[a->ndim - 1])
        return gr_node_error(err, nd, idx,
                             "B must be a 2-D constant taking K = %lld (the input's last "
                             "dimension)",
                             (long long)a->dims[a->ndim - 1]);
    const int64_t K = w->dims[tb], M = w->dims[1 - tb];
    if (nd->n_in == 3) {
        const gr_tensor *b = gr_in(g, nd, 2);
        if (b->kind != 1 || b->size != M)
            return gr_node_error(err, nd, idx, "bias must be a constant of %lld values",
                                 (long long)M);
    }
    int64_t s;
    if (!mls_size_mul(a->size / K, M, &s) || s > GR_MAX_PER_SAMPLE || !mls_blas_fits_int(M) ||
        !mls_blas_fits_int(K))
        return gr_node_error(err, nd, idx, "output too large");
    *o = *a;
    o->kind = 2;
    o->dims[o->ndim - 1] = M;
    return MLS_STATUS_OK;
}

void gr_run_gemm(const gr_graph *g, const gr_node *nd, int64_t N, const float **x, float *y)
{
    const gr_tensor *a = gr_in(g, nd, 0), *w = gr_in(g, nd, 1);
    const int tb = (int)nd->ia[0];
    const int64_t K = w->dims[tb], M = w->dims[1 - tb], rows = N * (a->size / K);
    const float *bias = nd->n_in == 3 ? x[2] : NULL;
    for (int64_t r = 0; r < rows; r++) {
        if (bias)
            memcpy(y + r * M, bias, (size_t)M * sizeof(float));
        else
            memset(y + r * M, 0, (size_t)M * sizeof(float));
    }
    if (rows == 1) {
        if (tb)
            mls_cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)M, (int)K, 1.0f, x[1], (int)K,
                            x[0], 1, 1.0f, y, 1);
        else
            mls_cblas_sgemv(CblasRowMajor, CblasTrans, (int)K, (int)M, 1.0f, x[1], (int)M, x[0],
                            1, 1.0f, y, 1);
    } else {
        /* rows may exceed an int: chunk */
        for (int64_t r0 = 0; r0 < rows; r0 += 1 << 30) {
            const int64_t nr = rows - r0 < (1 << 30) ? rows - r0 : (1 << 30);
            mls_cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)nr,
                            (int)M, (int)K, 1.0f, x[0] + r0 * K, (int)K, x[1],
                            (int)(tb ? K : M), 1.0f, y + r0 * M, (int)M);
        }
    }
    gr_apply_act(nd, y, rows * M);
}
