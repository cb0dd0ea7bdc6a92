/* pool.c: MaxPool, AveragePool (count_include_pad, ceil_mode), the global
 * pools and LRN, on (C, H, W) or (C, W) samples. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "graph_internal.h"

#define GR_MAX_KERNEL 1024
#define GR_MAX_PAD 65536

static double f64(int64_t bits)
{
    double v;
    memcpy(&v, &bits, sizeof(v));
    return v;
}

/* MaxPool/AveragePool attributes: kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, ceil_mode,
 * count_include_pad */
typedef struct pool_geo {
    int64_t C, H, W, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, OH, OW;
    int ceil_mode, include_pad;
} pool_geo;

static int64_t out_dim(int64_t in, int64_t pa, int64_t pb, int64_t k, int64_t s, int64_t d,
                       int ceil_mode)
{
    const int64_t span = in + pa + pb - d * (k - 1) - 1;
    int64_t o = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
    if (ceil_mode && (o - 1) * s >= in + pa) o--;
    return o;
}

static void geo_of(const gr_graph *g, const gr_node *nd, pool_geo *p)
{
    const gr_tensor *x = gr_in(g, nd, 0);
    const int two = x->ndim == 3;
    p->C = x->dims[0];
    p->H = two ? x->dims[1] : 1;
    p->W = two ? x->dims[2] : x->dims[1];
    const int64_t *a = nd->ia;
    p->kh = a[0], p->kw = a[1], p->sh = a[2], p->sw = a[3], p->dh = a[4], p->dw = a[5];
    p->pt = a[6], p->pl = a[7], p->pb = a[8], p->pr = a[9];
    p->ceil_mode = (int)a[10];
    p->include_pad = (int)a[11];
    p->OH = out_dim(p->H, p->pt, p->pb, p->kh, p->sh, p->dh, p->ceil_mode);
    p->OW = out_dim(p->W, p->pl, p->pr, p->kw, p->sw, p->dw, p->ceil_mode);
}

mls_status gr_infer_pool(gr_graph *g, gr_node *nd, int64_t idx, gr_tensor *o, mls_error *err)
{
    if (nd->n_in != 1) return gr_node_error(err, nd, idx, "needs 1 input");
    const gr_tensor *x = gr_in(g, nd, 0);
    if (x->kind == 1 || (x->ndim != 2 && x->ndim != 3))
        return gr_node_error(err, nd, idx, "input must be a batched (C, W) or (C, H, W) tensor");
    *o = *x;
    o->kind = 2;
    if (nd->op == GR_GLOBALAVGPOOL || nd->op == GR_GLOBALMAXPOOL) {
        for (int d = 1; d < o->ndim; d++) o->dims[d] = 1;
        return MLS_STATUS_OK;
    }
    if (nd->op == GR_LRN) {
        if (nd->n_ia != 4 || nd->ia[0] < 1 || nd->ia[0] > 4096)
            return gr_node_error(err, nd, idx, "needs a size of 1 to 4096");
        for (int i = 1; i < 4; i++)
            if (!isfinite(f64(nd->ia[i])) || fabs(f64(nd->ia[i])) > 1e30)
                return gr_node_error(err, nd, idx, "alpha, beta and bias must be finite");
        return MLS_STATUS_OK;
    }
    if (nd->n_ia != 12) return gr_node_error(err, nd, idx, "needs 12 attributes");
    for (int i = 0; i < 12; i++) {
        const int64_t lo = i < 6 ? 1 : 0, hi = i < 6 ? GR_MAX_KERNEL : i < 10 ? GR_MAX_PAD : 1;
        if (nd->ia[i] < lo || nd->ia[i] > hi)
            return gr_node_error(err, nd, idx, "attribute %d is %lld, out of range", i,
                                 (long long)nd->ia[i]);
    }
    pool_geo p;
    geo_of(g, nd, &p);
    if (x->ndim == 2 && (p.kh != 1 || p.sh != 1 || p.dh != 1 || p.pt != 0 || p.pb != 0))
        return gr_node_error(err, nd, idx, "a 1-D pool has no height attributes");
    if (p.pt >= p.kh * p.dh || p.pb >= p.kh * p.dh || p.pl >= p.kw * p.dw ||
        p.pr >= p.kw * p.dw)
        return gr_node_error(err, nd, idx, "pads must be smaller than the kernel");
    if (p.H + p.pt + p.pb < p.dh * (p.kh - 1) + 1 || p.W + p.pl + p.pr < p.dw * (p.kw - 1) + 1 ||
        p.OH < 1 || p.OW < 1)
        return gr_node_error(err, nd, idx, "the kernel is larger than the padded input");
    if (x->ndim == 3) {
        o->dims[1] = p.OH;
        o->dims[2] = p.OW;
    } else {
        o->dims[1] = p.OW;
    }
    return MLS_STATUS_OK;
}

static void pool2d(const pool_geo *p, int is_max, const float *x, float *y)
{
    for (int64_t c = 0; c < p->C; c++) {
        const float *xc = x + c * p->H * p->W;
        float *yc = y + c * p->OH * p->OW;
        for (int64_t oh = 0; oh < p->OH; oh++) {
            const int64_t h0 = oh * p->sh - p->pt;
            const int rows_in = h0 >= 0 && h0 + (p->kh - 1) * p->dh < p->H;
            for (int64_t ow = 0; ow < p->OW; ow++) {
                const int64_t w0 = ow * p->sw - p->pl;
                float *out = yc + oh * p->OW + ow;
                if (rows_in && w0 >= 0 && w0 + (p->kw - 1) * p->dw < p->W) {
                    /* the window lies inside the input: no checks */
                    const float *base = xc + h0 * p->W + w0;
                    if (is_max && p->kh == 2 && p->kw == 2 && p->dh == 1 && p->dw == 1) {
                        const float a = base[0] > base[1] ? base[0] : base[1];
                        const float b = base[p->W] > base[p->W + 1] ? base[p->W] : base[p->W + 1];
                        *out = a > b ? a : b;
                    } else if (is_max && p->kh == 3 && p->kw == 3 && p->dh == 1 && p->dw == 1) {
                        float best = base[0];
                        for (int ki = 0; ki < 3; ki++)
                            for (int kj = 0; kj < 3; kj++) {
                                const float v = base[ki * p->W + kj];
                                best = v > best ? v : best;
                            }
                        *out = best;
                    } else if (is_max) {
                        float best = base[0];
                        for (int64_t ki = 0; ki < p->kh; ki++) {
                            const float *r = base + ki * p->dh * p->W;
                            for (int64_t kj = 0; kj < p->kw; kj++) {
                                const float v = r[kj * p->dw];
                                best = v > best ? v : best;
                            }
                        }
                        *out = best;
                    } else {
                        float sum = 0;
                        for (int64_t ki = 0; ki < p->kh; ki++) {
                            const float *r = base + ki * p->dh * p->W;
                            for (int64_t kj = 0; kj < p->kw; kj++) sum += r[kj * p->dw];
                        }
                        *out = sum / (float)(p->kh * p->kw);
                    }
                    continue;
                }
                float best = -FLT_MAX;
                double sum = 0;
                int64_t cnt = 0, cnt_pad = 0;
                for (int64_t ki = 0; ki < p->kh; ki++) {
                    const int64_t ih = h0 + ki * p->dh;
                    for (int64_t kj = 0; kj < p->kw; kj++) {
                        const int64_t iw = w0 + kj * p->dw;
                        /* count_include_pad counts the window clipped to the padded input */
                        if (ih < p->H + p->pb && iw < p->W + p->pr) cnt_pad++;
                        if (ih < 0 || ih >= p->H || iw < 0 || iw >= p->W) continue;
                        const float v = xc[ih * p->W + iw];
                        if (v > best) best = v;
                        sum += v;
                        cnt++;
                    }
                }
                if (is_max) {
                    *out = best;
                } else {
                    const int64_t div = p->include_pad ? cnt_pad : cnt;
                    *out = div > 0 ? (float)(sum / (double)div) : 0.0f;
                }
            }
        }
    }
}

void gr_run_pool(const gr_graph *g, const gr_node *nd, int64_t N, const float **x, float *y)
{
    const gr_tensor *xt = gr_in(g, nd, 0);
    const int64_t C = xt->dims[0], hw = xt->size / C;
    if (nd->op == GR_GLOBALAVGPOOL || nd->op == GR_GLOBALMAXPOOL) {
        for (int64_t r = 0; r < N * C; r++) {
            const float *v = x[0] + r * hw;
            if (nd->op == GR_GLOBALAVGPOOL) {
                double s = 0;
                for (int64_t i = 0; i < hw; i++) s += v[i];
                y[r] = (float)(s / (double)hw);
            } else {
                float b = v[0];
                for (int64_t i = 1; i < hw; i++) b = v[i] > b ? v[i] : b;
                y[r] = b;
            }
        }
        return;
    }
    if (nd->op == GR_LRN) {
        const int64_t size = nd->ia[0];
        const double alpha = f64(nd->ia[1]), beta = f64(nd->ia[2]), bias = f64(nd->ia[3]);
        const int64_t lo = (size - 1) / 2, hi = size - 1 - lo;
        for (int64_t n = 0; n < N; n++) {
            const float *xn = x[0] + n * xt->size;
            float *yn = y + n * xt->size;
            for (int64_t c = 0; c < C; c++) {
                const int64_t c0 = c - lo < 0 ? 0 : c - lo, c1 = c + hi >= C ? C - 1 : c + hi;
                for (int64_t i = 0; i < hw; i++) {
                    double s = 0;
                    for (int64_t k = c0; k <= c1; k++) {
                        const double v = xn[k * hw + i];
                        s += v * v;
                    }
                    yn[c * hw + i] =
                        (float)(xn[c * hw + i] / pow(bias + alpha / (double)size * s, beta));
                }
            }
        }
        return;
    }
    pool_geo p;
    geo_of(g, nd, &p);
    const int64_t in_size = xt->size, out_size = p.C * p.OH * p.OW;
    for (int64_t n = 0; n < N; n++)
        pool2d(&p, nd->op == GR_MAXPOOL, x[0] + n * in_size, y + n * out_size);
}
