/* shape_ops.c: ops that move values without arithmetic: Reshape (a copy
 * under a new shape), Concat, Transpose, Pad (constant, reflect, edge) and
 * Slice, on the per-sample axes (the batch stays first). */
#include <math.h>
#include <string.h>

#include "graph_internal.h"

static double f64(int64_t bits)
{
    double v;
    memcpy(&v, &bits, sizeof(v));
    return v;
}

mls_status gr_infer_shape_op(gr_graph *g, gr_node *nd, int64_t idx, gr_tensor *o,
                             mls_error *err)
{
    const gr_tensor *x = gr_in(g, nd, 0);
    if (x->kind == 1) return gr_node_error(err, nd, idx, "input must be a batched tensor");
    const int R = x->ndim;
    *o = *x;
    o->kind = 2;
    switch (nd->op) {
    case GR_RESHAPE: {
        const gr_tensor *t = &g->t[nd->out];
        if (nd->n_in != 1 || t->size != x->size)
            return gr_node_error(err, nd, idx, "%lld values cannot become %lld",
                                 (long long)x->size, (long long)t->size);
        o->ndim = t->ndim;
        memcpy(o->dims, t->dims, sizeof(o->dims));
        return MLS_STATUS_OK;
    }
    case GR_CONCAT: {
        if (nd->n_ia != 1 || nd->ia[0] < 0 || nd->ia[0] >= R)
            return gr_node_error(err, nd, idx, "axis must be inside the sample's %d axes", R);
        const int ax = (int)nd->ia[0];
        int64_t total = 0;
        for (int i = 0; i < nd->n_in; i++) {
            const gr_tensor *t = gr_in(g, nd, i);
            int ok = t->kind != 1 && t->ndim == R;
            for (int d = 0; ok && d < R; d++) ok = d == ax || t->dims[d] == x->dims[d];
            if (!ok)
                return gr_node_error(err, nd, idx, "input %d does not match input 0 outside "
                                     "axis %d", i, ax);
            total += t->dims[ax]; /* <= 4096 inputs x 2^31: no overflow */
        }
        int64_t out_size;
        if (!mls_size_mul(total, x->size / x->dims[ax], &out_size) ||
            out_size > GR_MAX_PER_SAMPLE)
            return gr_node_error(err, nd, idx, "output too large");
        o->dims[ax] = total;
        return MLS_STATUS_OK;
    }
    case GR_TRANSPOSE: {
        if (nd->n_in != 1 || nd->n_ia != R)
            return gr_node_error(err, nd, idx, "perm must have %d entries", R);
        int seen[GR_MAX_RANK] = {0};
        for (int d = 0; d < R; d++) {
            if (nd->ia[d] < 0 || nd->ia[d] >= R || seen[nd->ia[d]])
                return gr_node_error(err, nd, idx, "perm is not a permutation");
            seen[nd->ia[d]] = 1;
            o->dims[d] = x->dims[nd->ia[d]];
        }
        return MLS_STATUS_OK;
    }
    case GR_PAD: {
        if (nd->n_in != 1 || nd->n_ia != 2 + 2 * R || nd->ia[0] < 0 || nd->ia[0] > 2 ||
            !isfinite(f64(nd->ia[1])) || fabs(f64(nd->ia[1])) > 3e38)
            return gr_node_error(err, nd, idx, "needs mode, value and %d pads", 2 * R);
        int64_t size = 1;
        for (int d = 0; d < R; d++) {
            const int64_t b = nd->ia[2 + d], e = nd->ia[2 + R + d];
            if (b < 0 || e < 0 || b > 65536 || e > 65536 ||
                (nd->ia[0] == 1 && (b >= x->dims[d] || e >= x->dims[d])))
                return gr_node_error(err, nd, idx, "pads of axis %d (%lld, %lld) out of range", d,
                                     (long long)b, (long long)e);
            o->dims[d] = x->dims[d] + b + e;
            if (!mls_size_mul(size, o->dims[d], &size) || size > GR_MAX_PER_SAMPLE)
                return gr_node_error(err, nd, idx, "output too large");
        }
        return MLS_STATUS_OK;
    }
    case GR_SLICE: {
        const gr_tensor *t = &g->t[nd->out];
        if (nd->n_in != 1 || nd->n_ia != 2 * R || t->ndim != R)
            return gr_node_error(err, nd, idx, "needs %d starts and steps", R);
        for (int d = 0; d < R; d++) {
            const int64_t s = nd->ia[d], st = nd->ia[R + d], od = t->dims[d];
            const int64_t last = s + (od - 1) * st;
            if (st == 0 || st > x->dims[d] || st < -x->dims[d] || s < 0 || s >= x->dims[d] ||
                last < 0 || last >= x->dims[d])
                return gr_node_error(err, nd, idx, "axis %d: start %lld step %lld for %lld "
                                     "values leaves the input", d, (long long)s, (long long)st,
                                     (long long)od);
            o->dims[d] = od;
        }
        return MLS_STATUS_OK;
    }
    default:
        return gr_node_error(err, nd, idx, "not a shape op");
    }
}

static void strides_of(const int64_t *dims, int R, int64_t *st)
{
    int64_t s = 1;
    for (int d = R - 1; d >= 0; d--) {
        st[d] = s;
        s *= dims[d];
    }
}

static int64_t reflect_or_edge(int64_t i, int64_t n, int mode)
{
    if (mode == 2) return i < 0 ? 0 : (i >= n ? n - 1 : i);
    if (n == 1) return 0;
    while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
    return i;
}

void gr_run_shape_op(const gr_graph *g, const gr_node *nd, int64_t N, const float **x, float *y)
{
    const gr_tensor *xt = gr_in(g, nd, 0), *ot = &g->t[nd->out];
    const int R = xt->ndim;
    if (nd->op == GR_RESHAPE) {
        if (y != x[0]) memcpy(y, x[0], (size_t)(N * xt->size) * sizeof(float));
        return;
    }
    if (nd->op == GR_CONCAT) {
        const int ax = (int)nd->ia[0];
        int64_t outer = 1, inner = 1;
        for (int d = 0; d < ax; d++) outer *= xt->dims[d];
        for (int d = ax + 1; d < R; d++) inner *= xt->dims[d];
        const int64_t orow = ot->dims[ax] * inner;
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < outer; o++) {
                float *dst = y + n * ot->size + o * orow;
                for (int i = 0; i < nd->n_in; i++) {
                    const gr_tensor *t = gr_in(g, nd, i);
                    const int64_t row = t->dims[ax] * inner;
                    memcpy(dst, x[i] + n * t->size + o * row, (size_t)row * sizeof(float));
                    dst += row;
                }
            }
        return;
    }
    if (R == 0) {
        memcpy(y, x[0], (size_t)N * sizeof(float));
        return;
    }
    /* generic: for each output row (all axes but the last), the source offset per axis */
    int64_t xs[GR_MAX_RANK], src_st[GR_MAX_RANK], start[GR_MAX_RANK];
    strides_of(xt->dims, R, xs);
    for (int d = 0; d < R; d++) {
        if (nd->op == GR_TRANSPOSE) {
            src_st[d] = xs[nd->ia[d]];
            start[d] = 0;
        } else if (nd->op == GR_SLICE) {
            src_st[d] = xs[d] * nd->ia[R + d];
            start[d] = nd->ia[d];
        } else {
            src_st[d] = xs[d];
            start[d] = -nd->ia[2 + d]; /* Pad: source index = out index - begin */
        }
    }
    const int64_t len = ot->dims[R - 1];
    int64_t outer = ot->size / len;
    const int mode = nd->op == GR_PAD ? (int)nd->ia[0] : -1;
    const float value = nd->op == GR_PAD ? (float)f64(nd->ia[1]) : 0.0f;
    int64_t base = 0;
    if (nd->op == GR_SLICE)
        for (int d = 0; d < R; d++) base += start[d] * xs[d];
    for (int64_t n = 0; n < N; n++) {
        const float *xn = x[0] + n * xt->size;
        float *yn = y + n * ot->size;
        int64_t idx[GR_MAX_RANK] = {0};
        for (int64_t o = 0; o < outer; o++) {
            float *dst = yn + o * len;
            if (mode < 0) {
                int64_t off = base;
                for (int d = 0; d < R - 1; d++) off += idx[d] * src_st[d];
                const float *src = xn + off;
                const int64_t s = src_st[R - 1];
                if (s == 1)
                    memcpy(dst, src, (size_t)len * sizeof(float));
                else
                    for (int64_t i = 0; i < len; i++) dst[i] = src[i * s];
            } else {
                int outside = 0;
                int64_t off = 0;
                for (int d = 0; d < R - 1; d++) {
                    int64_t si = idx[d] + start[d];
                    if (si < 0 || si >= xt->dims[d]) {
                        if (mode == 0) { outside = 1; break; }
                        si = reflect_or_edge(si, xt->dims[d], mode);
                    }
                    off += si * xs[d];
                }
                if (outside) {
                    for (int64_t i = 0; i < len; i++) dst[i] = value;
                } else {
                    const float *src = xn + off;
                    const int64_t W = xt->dims[R - 1];
                    for (int64_t i = 0; i < len; i++) {
                        int64_t si = i + start[R - 1];
                        if (si < 0 || si >= W) {
                            if (mode == 0) { dst[i] = value; continue; }
                            si = reflect_or_edge(si, W, mode);
                        }
                        dst[i] = src[si];
                    }
                }
            }
            for (int d = R - 2; d >= 0; d--) {
                if (++idx[d] < ot->dims[d]) break;
                idx[d] = 0;
            }
        }
    }
}
