/* elementwise.c: unary activations, numpy-broadcasting binary ops, the
 * per-channel affine of an unfolded BatchNormalization, (Log)Softmax,
 * reductions over a block of axes and LayerNormalization. */
#include <math.h>
#include <string.h>

#include "graph_internal.h"

static double f64(int64_t bits)
{
    double v;
    memcpy(&v, &bits, sizeof(v));
    return v;
}

static int finite_attrs(const gr_node *nd, int n)
{
    if (nd->n_ia != n) return 0;
    for (int i = 0; i < n; i++)
        if (!isfinite(f64(nd->ia[i])) || fabs(f64(nd->ia[i])) > 1e30) return 0;
    return 1;
}

/* full (batch-first) shape of an operand right-aligned to R dims; batch as -1 */
static void full_shape(const gr_tensor *t, int R, int64_t N, int64_t *dims)
{
    const int rank = t->kind == 1 ? t->ndim : t->ndim + 1;
    for (int d = 0; d < R; d++) dims[d] = 1;
    if (t->kind == 1) {
        for (int d = 0; d < t->ndim; d++) dims[R - rank + d] = t->dims[d];
    } else {
        dims[R - rank] = N;
        for (int d = 0; d < t->ndim; d++) dims[R - rank + 1 + d] = t->dims[d];
    }
}

static mls_status infer_binary(gr_graph *g, gr_node *nd, int64_t idx, gr_tensor *o,
                               mls_error *err)
{
    if (nd->n_in != 2) return gr_node_error(err, nd, idx, "needs 2 inputs");
    const gr_tensor *a = gr_in(g, nd, 0), *b = gr_in(g, nd, 1);
    if (a->kind == 1 && b->kind == 1)
        return gr_node_error(err, nd, idx, "two constants (fold them at conversion)");
    const int ra = a->kind == 1 ? a->ndim : a->ndim + 1, rb = b->kind == 1 ? b->ndim : b->ndim + 1;
    const int R = ra > rb ? ra : rb;
    if (R > GR_MAX_RANK) return gr_node_error(err, nd, idx, "rank above 8");
    if ((a->kind != 1 && ra != R) || (b->kind != 1 && rb != R))
        return gr_node_error(err, nd, idx,
                             "a constant of higher rank than the batched input (the batch "
                             "must stay the first axis)");
    int64_t da[GR_MAX_RANK], db[GR_MAX_RANK];
    full_shape(a, R, -1, da);
    full_shape(b, R, -1, db);
    o->ndim = R - 1;
    for (int d = 1; d < R; d++) {
        if (da[d] != db[d] && da[d] != 1 && db[d] != 1)
            return gr_node_error(err, nd, idx,
                                 "shapes do not broadcast: dimension %d is %lld and %lld", d,
                                 (long long)da[d], (long long)db[d]);
        o->dims[d - 1] = da[d] == 1 ? db[d] : da[d];
    }
    if ((da[0] != -1 && da[0] != 1) || (db[0] != -1 && db[0] != 1))
        return gr_node_error(err, nd, idx, "a constant's first dimension must be 1 (the batch)");
    return MLS_STATUS_OK;
}

static int64_t axes_prod(const gr_tensor *t, int a, int b)
{
    int64_t p = 1;
    for (int d = a; d < b; d++) p *= t->dims[d];
    return p;
}

mls_status gr_infer_elementwise(gr_graph *g, gr_node *nd, int64_t idx, gr_tensor *o,
                                mls_error *err)
{
    const int op = nd->op;
    if (op >= GR_ADD && op < GR_BINARY_END_) return infer_binary(g, nd, idx, o, err);
    const gr_tensor *x = gr_in(g, nd, 0);
    if (x->kind == 1) return gr_node_error(err, nd, idx, "input must be a batched tensor");
    *o = *x;
    o->kind = 2;
    if (op >= GR_RELU && op < GR_UNARY_END_) {
        if (nd->n_in != 1) return gr_node_error(err, nd, idx, "needs 1 input");
        int n_f = 0;
        if (op == GR_LEAKYRELU || op == GR_ELU) n_f = 1;
        if (op == GR_CLIP || op == GR_SELU || op == GR_HARDSIGMOID) n_f = 2;
        if (op == GR_GELU) {
            if (nd->n_ia != 1 || nd->ia[0] < 0 || nd->ia[0] > 1)
                return gr_node_error(err, nd, idx, "approximate must be 0 (none) or 1 (tanh)");
        } else if (!finite_attrs(nd, n_f)) {
            return gr_node_error(err, nd, idx, "needs %d finite attributes", n_f);
        }
        return MLS_STATUS_OK;
    }
    if (op == GR_CHANNEL_AFFINE) {
        if (nd->n_in != 3 || x->ndim < 1) return gr_node_error(err, nd, idx, "needs 3 inputs");
        const gr_tensor *s = gr_in(g, nd, 1), *b = gr_in(g, nd, 2);
        if (s->kind != 1 || b->kind != 1 || s->size != x->dims[0] || b->size != x->dims[0])
            return gr_node_error(err, nd, idx, "scale and shift must be constants of %lld values",
                                 (long long)x->dims[0]);
        return MLS_STATUS_OK;
    }
    if (op == GR_SOFTMAX || op == GR_LOGSOFTMAX) {
        if (nd->n_in != 1 || nd->n_ia != 2 || nd->ia[0] < 0 || nd->ia[0] >= nd->ia[1] ||
            nd->ia[1] > x->ndim)
            return gr_node_error(err, nd, idx, "needs an axis block inside the sample's %d axes",
                                 x->ndim);
        return MLS_STATUS_OK;
    }
    if (op == GR_REDUCEMEAN || op == GR_REDUCESUM || op == GR_REDUCEMAX) {
        if (nd->n_in != 1 || nd->n_ia != 3 || nd->ia[0] < 0 || nd->ia[0] > 1 ||
            nd->ia[1] < 0 || nd->ia[1] >= nd->ia[2] || nd->ia[2] > x->ndim)
            return gr_node_error(err, nd, idx, "needs keepdims and an axis block inside the "
                                 "sample's %d axes", x->ndim);
        const int a = (int)nd->ia[1], b = (int)nd->ia[2];
        if (nd->ia[0]) {
            for (int d = a; d < b; d++) o->dims[d] = 1;
        } else {
            for (int d = b; d < x->ndim; d++) o->dims[d - (b - a)] = x->dims[d];
            o->ndim = x->ndim - (b - a);
        }
        return MLS_STATUS_OK;
    }
    if (op == GR_LAYERNORM) {
        if (nd->n_in < 2 || nd->n_in > 3 || nd->n_ia != 2 || nd->ia[0] < 0 ||
            nd->ia[0] >= x->ndim || !(f64(nd->ia[1]) > 0) || !(f64(nd->ia[1]) < 1))
            return gr_node_error(err, nd, idx, "needs an axis inside the sample and 0 < eps < 1");
        const int64_t inner = axes_prod(x, (int)nd->ia[0], x->ndim);
        for (int i = 1; i < nd->n_in; i++) {
            const gr_tensor *s = gr_in(g, nd, i);
            if (s->kind != 1 || s->size != inner)
                return gr_node_error(err, nd, idx, "scale and bias must be constants of %lld "
                                     "values", (long long)inner);
        }
        return MLS_STATUS_OK;
    }
    return gr_node_error(err, nd, idx, "not an elementwise op");
}

static inline float gelu(float v, int approx)
{
    if (approx) {
        const float k = 0.7978845608028654f;
        return 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
    return (float)(0.5 * v * (1.0 + erf(v * 0.7071067811865476)));
}

static void run_unary(const gr_node *nd, const float *x, float *y, int64_t n)
{
    const float a = nd->n_ia > 0 ? (float)f64(nd->ia[0]) : 0;
    const float b = nd->n_ia > 1 ? (float)f64(nd->ia[1]) : 0;
    switch (nd->op) {
    case GR_RELU: for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0.0f; break;
    case GR_LEAKYRELU: for (int64_t i = 0; i < n; i++) y[i] = x[i] >= 0 ? x[i] : a * x[i]; break;
    case GR_SIGMOID: for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i])); break;
    case GR_TANH: for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]); break;
    case GR_EXP: for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]); break;
    case GR_ERF: for (int64_t i = 0; i < n; i++) y[i] = erff(x[i]); break;
    case GR_GELU: {
        const int approx = (int)nd->ia[0];
        for (int64_t i = 0; i < n; i++) y[i] = gelu(x[i], approx);
        break;
    }
    case GR_CLIP:
        for (int64_t i = 0; i < n; i++) {
            const float v = x[i] < a ? a : x[i];
            y[i] = v > b ? b : v;
        }
        break;
    case GR_NEG: for (int64_t i = 0; i < n; i++) y[i] = -x[i]; break;
    case GR_ABS: for (int64_t i = 0; i < n; i++) y[i] = fabsf(x[i]); break;
    case GR_SQRT: for (int64_t i = 0; i < n; i++) y[i] = sqrtf(x[i]); break;
    case GR_ELU:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] >= 0 ? x[i] : a * (expf(x[i]) - 1.0f);
        break;
    case GR_SOFTPLUS:
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] > 20 ? x[i] : log1pf(expf(x[i]));
        break;
    case GR_SELU:
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] > 0 ? b * x[i] : b * (a * expf(x[i]) - a);
        break;
    case GR_HARDSIGMOID:
        for (int64_t i = 0; i < n; i++) {
            const float v = a * x[i] + b;
            y[i] = v < 0 ? 0 : (v > 1 ? 1 : v);
        }
        break;
    case GR_HARDSWISH:
        for (int64_t i = 0; i < n; i++) {
            const float v = x[i] / 6.0f + 0.5f;
            y[i] = x[i] * (v < 0 ? 0 : (v > 1 ? 1 : v));
        }
        break;
    case GR_RECIPROCAL: for (int64_t i = 0; i < n; i++) y[i] = 1.0f / x[i]; break;
    case GR_LOG: for (int64_t i = 0; i < n; i++) y[i] = logf(x[i]); break;
    default: memcpy(y, x, (size_t)n * sizeof(float)); break;
    }
}

static inline float bin(int op, float a, float b)
{
    switch (op) {
    case GR_ADD: return a + b;
    case GR_SUB: return a - b;
    case GR_MUL: return a * b;
    case GR_DIV: return a / b;
    case GR_POW: return powf(a, b);
    case GR_MAX: return a > b ? a : b;
    case GR_MIN: return a < b ? a : b;
    default: return a > 0 ? a : a * b; /* PRelu */
    }
}

#define BIN_LOOP(EXPR)                                                                       \
    do {                                                                                     \
        if (sa == 1 && sb == 1)                                                              \
            for (int64_t i = 0; i < len; i++) { const float u = pa[i], v = pb[i]; py[i] = EXPR; } \
        else if (sa == 1)                                                                    \
            for (int64_t i = 0; i < len; i++) { const float u = pa[i], v = pb[0]; py[i] = EXPR; } \
        else if (sb == 1 || len == 1)                                                        \
            for (int64_t i = 0; i < len; i++) { const float u = pa[i * sa], v = pb[i * sb]; py[i] = EXPR; } \
        else                                                                                 \
            for (int64_t i = 0; i < len; i++) { const float u = pa[0], v = pb[i]; py[i] = EXPR; } \
    } while (0)

static void run_binary(const gr_graph *g, const gr_node *nd, int64_t N, const float **x, float *y)
{
    const gr_tensor *a = gr_in(g, nd, 0), *b = gr_in(g, nd, 1);
    const int ra = a->kind == 1 ? a->ndim : a->ndim + 1, rb = b->kind == 1 ? b->ndim : b->ndim + 1;
    int R = ra > rb ? ra : rb;
    int64_t da[GR_MAX_RANK], db[GR_MAX_RANK], dy[GR_MAX_RANK];
    full_shape(a, R, N, da);
    full_shape(b, R, N, db);
    for (int d = 0; d < R; d++) dy[d] = da[d] == 1 ? db[d] : da[d];
    /* merge adjacent axes whose broadcast pattern agrees, then drop size-1 axes */
    int64_t ma[GR_MAX_RANK], mb[GR_MAX_RANK], my[GR_MAX_RANK];
    int r = 0;
    for (int d = 0; d < R; d++) {
        if (dy[d] == 1) continue;
        const int ba = da[d] == 1, bb = db[d] == 1;
        if (r > 0 && (ma[r - 1] == 1) == ba && (mb[r - 1] == 1) == bb) {
            my[r - 1] *= dy[d];
            ma[r - 1] *= da[d];
            mb[r - 1] *= db[d];
        } else {
            my[r] = dy[d], ma[r] = da[d], mb[r] = db[d];
            r++;
        }
    }
    if (r == 0) {
        my[0] = ma[0] = mb[0] = 1;
        r = 1;
    }
    int64_t sa_[GR_MAX_RANK], sb_[GR_MAX_RANK];
    int64_t s1 = 1, s2 = 1;
    for (int d = r - 1; d >= 0; d--) {
        sa_[d] = ma[d] == 1 ? 0 : s1;
        sb_[d] = mb[d] == 1 ? 0 : s2;
        s1 *= ma[d];
        s2 *= mb[d];
    }
    const int64_t len = my[r - 1], sa = sa_[r - 1], sb = sb_[r - 1];
    int64_t outer = 1;
    for (int d = 0; d < r - 1; d++) outer *= my[d];
    int64_t idx[GR_MAX_RANK] = {0};
    int64_t offa = 0, offb = 0;
    const int op = nd->op;
    for (int64_t o = 0; o < outer; o++) {
        const float *pa = x[0] + offa, *pb = x[1] + offb;
        float *py = y + o * len;
        /* sa, sb in {0, 1}; the loop variants let the compiler vectorise */
        switch (op) {
        case GR_ADD: BIN_LOOP(u + v); break;
        case GR_SUB: BIN_LOOP(u - v); break;
        case GR_MUL: BIN_LOOP(u * v); break;
        case GR_DIV: BIN_LOOP(u / v); break;
        default: BIN_LOOP(bin(op, u, v)); break;
        }
        for (int d = r - 2; d >= 0; d--) {
            idx[d]++;
            offa += sa_[d];
            offb += sb_[d];
            if (idx[d] < my[d]) break;
            offa -= sa_[d] * my[d];
            offb -= sb_[d] * my[d];
            idx[d] = 0;
        }
    }
}

void gr_run_elementwise(const gr_graph *g, const gr_node *nd, int64_t N, const float **x,
                        float *y)
{
    const gr_tensor *xt = gr_in(g, nd, 0);
    const int op = nd->op;
    if (op >= GR_ADD && op < GR_BINARY_END_) {
        run_binary(g, nd, N, x, y);
    } else if (op >= GR_RELU && op < GR_UNARY_END_) {
        run_unary(nd, x[0], y, N * xt->size);
    } else if (op == GR_CHANNEL_AFFINE) {
        const int64_t C = xt->dims[0], inner = xt->size / C;
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++) {
                const float s = x[1][c], b = x[2][c];
                const float *xi = x[0] + (n * C + c) * inner;
                float *yi = y + (n * C + c) * inner;
                for (int64_t i = 0; i < inner; i++) yi[i] = xi[i] * s + b;
            }
    } else if (op == GR_SOFTMAX || op == GR_LOGSOFTMAX) {
        const int a = (int)nd->ia[0], b = (int)nd->ia[1];
        const int64_t mid = axes_prod(xt, a, b), inner = axes_prod(xt, b, xt->ndim);
        const int64_t outer = N * axes_prod(xt, 0, a);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t in = 0; in < inner; in++) {
                const float *xr = x[0] + o * mid * inner + in;
                float *yr = y + o * mid * inner + in;
                float mx = xr[0];
                for (int64_t j = 1; j < mid; j++) mx = xr[j * inner] > mx ? xr[j * inner] : mx;
                double sum = 0;
                for (int64_t j = 0; j < mid; j++) sum += exp((double)(xr[j * inner] - mx));
                const double lse = log(sum);
                for (int64_t j = 0; j < mid; j++) {
                    const double z = (double)(xr[j * inner] - mx);
                    yr[j * inner] = (float)(op == GR_LOGSOFTMAX ? z - lse : exp(z - lse));
                }
            }
    } else if (op == GR_REDUCEMEAN || op == GR_REDUCESUM || op == GR_REDUCEMAX) {
        const int a = (int)nd->ia[1], b = (int)nd->ia[2];
        const int64_t mid = axes_prod(xt, a, b), inner = axes_prod(xt, b, xt->ndim);
        const int64_t outer = N * axes_prod(xt, 0, a);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t in = 0; in < inner; in++) {
                const float *xr = x[0] + o * mid * inner + in;
                double s = 0;
                float mx = xr[0];
                for (int64_t j = 0; j < mid; j++) {
                    s += xr[j * inner];
                    mx = xr[j * inner] > mx ? xr[j * inner] : mx;
                }
                y[o * inner + in] = op == GR_REDUCEMAX ? mx
                                    : op == GR_REDUCESUM ? (float)s
                                                         : (float)(s / (double)mid);
            }
    } else if (op == GR_LAYERNORM) {
        const int64_t inner = axes_prod(xt, (int)nd->ia[0], xt->ndim);
        const int64_t outer = N * xt->size / inner;
        const double eps = f64(nd->ia[1]);
        const float *sc = x[1], *bi = nd->n_in == 3 ? x[2] : NULL;
        for (int64_t o = 0; o < outer; o++) {
            const float *xr = x[0] + o * inner;
            float *yr = y + o * inner;
            double mean = 0, var = 0;
            for (int64_t i = 0; i < inner; i++) mean += xr[i];
            mean /= (double)inner;
            for (int64_t i = 0; i < inner; i++) var += (xr[i] - mean) * (xr[i] - mean);
            const double inv = 1.0 / sqrt(var / (double)inner + eps);
            for (int64_t i = 0; i < inner; i++)
                yr[i] = (float)((xr[i] - mean) * inv) * sc[i] + (bi ? bi[i] : 0.0f);
        }
    }
    gr_apply_act(nd, y, N * g->t[nd->out].size);
}
