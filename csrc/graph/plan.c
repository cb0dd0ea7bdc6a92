/* plan.c: the DAG graph's loader (validation, shape inference, arena plan)
 * and its executor. See graph_internal.h for the sections and the arena. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph_internal.h"

const char *gr_op_name(int op)
{
    switch (op) {
    case GR_CONV: return "Conv";
    case GR_CONVTRANSPOSE: return "ConvTranspose";
    case GR_GEMM: return "Gemm";
    case GR_RELU: return "Relu";
    case GR_LEAKYRELU: return "LeakyRelu";
    case GR_SIGMOID: return "Sigmoid";
    case GR_TANH: return "Tanh";
    case GR_EXP: return "Exp";
    case GR_ERF: return "Erf";
    case GR_GELU: return "Gelu";
    case GR_CLIP: return "Clip";
    case GR_IDENTITY: return "Identity";
    case GR_NEG: return "Neg";
    case GR_ABS: return "Abs";
    case GR_SQRT: return "Sqrt";
    case GR_ELU: return "Elu";
    case GR_SOFTPLUS: return "Softplus";
    case GR_SELU: return "Selu";
    case GR_RESHAPE: return "Reshape";
    case GR_HARDSIGMOID: return "HardSigmoid";
    case GR_HARDSWISH: return "HardSwish";
    case GR_RECIPROCAL: return "Reciprocal";
    case GR_LOG: return "Log";
    case GR_ADD: return "Add";
    case GR_SUB: return "Sub";
    case GR_MUL: return "Mul";
    case GR_DIV: return "Div";
    case GR_POW: return "Pow";
    case GR_MAX: return "Max";
    case GR_MIN: return "Min";
    case GR_PRELU: return "PRelu";
    case GR_CHANNEL_AFFINE: return "BatchNormalization";
    case GR_SOFTMAX: return "Softmax";
    case GR_LOGSOFTMAX: return "LogSoftmax";
    case GR_MAXPOOL: return "MaxPool";
    case GR_AVGPOOL: return "AveragePool";
    case GR_GLOBALAVGPOOL: return "GlobalAveragePool";
    case GR_GLOBALMAXPOOL: return "GlobalMaxPool";
    case GR_CONCAT: return "Concat";
    case GR_TRANSPOSE: return "Transpose";
    case GR_PAD: return "Pad";
    case GR_LRN: return "LRN";
    case GR_REDUCEMEAN: return "ReduceMean";
    case GR_REDUCESUM: return "ReduceSum";
    case GR_REDUCEMAX: return "ReduceMax";
    case GR_LAYERNORM: return "LayerNormalization";
    case GR_SLICE: return "Slice";
    default: return NULL;
    }
}

mls_status gr_node_error(mls_error *err, const gr_node *nd, int64_t idx, const char *fmt, ...)
{
    char detail[MLS_ERROR_MESSAGE_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    const char *name = gr_op_name(nd->op);
    return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "graph node %lld (%s): %s", (long long)idx,
                         name ? name : "?", detail);
}

static const int64_t *find_i64(const mls_model *m, const char *name, int ndim, int64_t cols,
                               int64_t *rows, mls_error *err)
{
    const mls_section *s = mls_model_find_section(m, name);
    if (s == NULL) {
        mls_error_set(err, MLS_STATUS_ERR_FORMAT, "a graph model needs a section '%s'", name);
        return NULL;
    }
    if (s->dtype != MLS_DTYPE_INT64 || s->ndim != ndim || (ndim == 2 && s->shape[1] != cols) ||
        s->shape[0] < 1 || s->shape[0] > 64 * (int64_t)GR_MAX_NODES) {
        mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                      "section '%s' must be int64 of %d dimensions%s", name, ndim,
                      ndim == 2 ? " with 10 columns" : "");
        return NULL;
    }
    const int64_t elems = s->shape[0] * (ndim == 2 ? cols : 1);
    if (s->nbytes < (uint64_t)elems * sizeof(int64_t)) {
        mls_error_set(err, MLS_STATUS_ERR_FORMAT, "section '%s' is too short", name);
        return NULL;
    }
    *rows = s->shape[0];
    return s->data;
}

static int64_t f64_bits_ok(int64_t bits, float *out)
{
    double v;
    memcpy(&v, &bits, sizeof(v));
    if (!isfinite(v) || fabs(v) > 3e38) return 0;
    *out = (float)v;
    return 1;
}

static mls_status load_tensors(mls_model *m, gr_graph *g, mls_error *err)
{
    int64_t T;
    const int64_t *rows = find_i64(m, "tensors", 2, 10, &T, err);
    if (rows == NULL) return err->status;
    if (T > GR_MAX_TENSORS)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "a graph has at most %d tensors, got %lld",
                             GR_MAX_TENSORS, (long long)T);
    g->t = calloc((size_t)T, sizeof(gr_tensor));
    if (g->t == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    g->n_tensors = T;
    for (int64_t i = 0; i < T; i++) {
        const int64_t *r = rows + 10 * i;
        gr_tensor *t = &g->t[i];
        t->kind = (int)r[0];
        t->last_use = -1;
        const int64_t max_rank = t->kind == 1 ? GR_MAX_RANK : GR_MAX_RANK - 1;
        if (r[0] < 0 || r[0] > 2 || r[1] < 0 || r[1] > max_rank)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "graph tensor %lld has kind %lld and rank %lld; kinds 0-2 and "
                                 "ranks 0-%lld are allowed",
                                 (long long)i, (long long)r[0], (long long)r[1],
                                 (long long)max_rank);
        t->ndim = (int)r[1];
        int64_t size = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (r[2 + d] < 1 || !mls_size_mul(size, r[2 + d], &size) || size > GR_MAX_PER_SAMPLE)
                return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                     "graph tensor %lld has a dimension %lld of %lld; sizes 1 "
                                     "to 2^31 elements are allowed",
                                     (long long)i, (long long)d, (long long)r[2 + d]);
            t->dims[d] = r[2 + d];
        }
        t->size = size;
        if (t->kind == 1) {
            char name[MLS_SECTION_NAME_MAX];
            snprintf(name, sizeof(name), "c%lld", (long long)i);
            const mls_section *s = mls_model_find_section(m, name);
            if (s == NULL || s->dtype != MLS_DTYPE_FLOAT32 || mls_section_size(s) != size ||
                s->nbytes < (uint64_t)size * sizeof(float))
                return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                     "constant tensor %lld needs a float32 section '%s' of %lld "
                                     "values",
                                     (long long)i, name, (long long)size);
            const float *v = s->data;
            for (int64_t j = 0; j < size; j++)
                if (!isfinite(v[j]))
                    return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                         "section '%s' contains NaN or infinity", name);
            t->data = v;
        }
    }
    return MLS_STATUS_OK;
}

static mls_status infer(gr_graph *g, gr_node *nd, int64_t idx, gr_tensor *o, int64_t *scratch,
                        mls_error *err)
{
    const int op = nd->op;
    if (op == GR_CONV || op == GR_CONVTRANSPOSE) return gr_infer_conv(g, nd, idx, o, scratch, err);
    if (op == GR_GEMM) return gr_infer_gemm(g, nd, idx, o, err);
    if ((op >= GR_MAXPOOL && op <= GR_GLOBALMAXPOOL) || op == GR_LRN)
        return gr_infer_pool(g, nd, idx, o, err);
    if (op == GR_CONCAT || op == GR_TRANSPOSE || op == GR_PAD || op == GR_SLICE ||
        op == GR_RESHAPE)
        return gr_infer_shape_op(g, nd, idx, o, err);
    return gr_infer_elementwise(g, nd, idx, o, err);
}

static mls_status load_nodes(mls_model *m, gr_graph *g, mls_error *err)
{
    int64_t K, n_inputs, n_attrs;
    const int64_t *rows = find_i64(m, "nodes", 2, 10, &K, err);
    if (rows == NULL) return err->status;
    const int64_t *ins = find_i64(m, "node_inputs", 1, 1, &n_inputs, err);
    if (ins == NULL) return err->status;
    const int64_t *attrs = find_i64(m, "node_attrs", 1, 1, &n_attrs, err);
    if (attrs == NULL) return err->status;
    if (K > GR_MAX_NODES)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "a graph has at most %d nodes, got %lld",
                             GR_MAX_NODES, (long long)K);
    g->nodes = calloc((size_t)K, sizeof(gr_node));
    if (g->nodes == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    g->n_nodes = K;
    char *produced = calloc((size_t)g->n_tensors, 1);
    if (produced == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    mls_status st = MLS_STATUS_OK;
    for (int64_t i = 0; i < K && st == MLS_STATUS_OK; i++) {
        const int64_t *r = rows + 10 * i;
        gr_node *nd = &g->nodes[i];
        nd->op = (int)(r[0] > 0 && r[0] < 1000 ? r[0] : 0);
        if (gr_op_name(nd->op) == NULL) {
            st = mls_error_set(err, MLS_STATUS_ERR_FORMAT, "graph node %lld has unknown op %lld",
                               (long long)i, (long long)r[0]);
            break;
        }
        if (r[1] < 0 || r[1] >= g->n_tensors || g->t[r[1]].kind != 2 || produced[r[1]]) {
            st = gr_node_error(err, nd, i, "output tensor %lld is not a fresh intermediate",
                               (long long)r[1]);
            break;
        }
        nd->out = (int)r[1];
        if (r[3] < 1 || r[3] > 4096 || r[2] < 0 || r[2] > n_inputs - r[3] || r[5] < 0 ||
            r[5] > GR_MAX_ATTRS || r[4] < 0 || r[4] > n_attrs - r[5]) {
            st = gr_node_error(err, nd, i, "input or attribute ranges out of bounds");
            break;
        }
        nd->n_in = (int)r[3];
        nd->in = ins + r[2];
        nd->n_ia = (int)r[5];
        memcpy(nd->ia, attrs + r[4], (size_t)nd->n_ia * sizeof(int64_t));
        for (int j = 0; j < nd->n_in; j++) {
            const int64_t id = nd->in[j];
            if (id < 0 || id >= g->n_tensors || (g->t[id].kind == 2 && !produced[id])) {
                st = gr_node_error(err, nd, i, "input %d reads tensor %lld, which is not computed "
                                   "before it", j, (long long)id);
                break;
            }
            if (g->t[id].kind == 0 && id != g->input) {
                st = gr_node_error(err, nd, i, "input %d reads an unknown graph input", j);
                break;
            }
            g->t[id].last_use = i;
        }
        if (st != MLS_STATUS_OK) break;
        nd->act = (int)r[6];
        if (r[6] < 0 || r[6] > 3 || !f64_bits_ok(r[7], &nd->act_a) ||
            !f64_bits_ok(r[8], &nd->act_b)) {
            st = gr_node_error(err, nd, i, "bad fused activation");
            break;
        }
        gr_tensor o;
        memset(&o, 0, sizeof(o));
        o.kind = 2;
        int64_t scratch = 0;
        st = infer(g, nd, i, &o, &scratch, err);
        if (st != MLS_STATUS_OK) break;
        gr_tensor *t = &g->t[nd->out];
        int same = o.ndim == t->ndim;
        for (int d = 0; same && d < o.ndim; d++) same = o.dims[d] == t->dims[d];
        if (!same) {
            st = gr_node_error(err, nd, i, "its output has %d-D per-sample shape (%lld, %lld, "
                               "...) but the file says %d-D (%lld, %lld, ...)",
                               o.ndim, (long long)o.dims[0], (long long)o.dims[1], t->ndim,
                               (long long)t->dims[0], (long long)t->dims[1]);
            break;
        }
        if (scratch > g->scratch) g->scratch = scratch;
        produced[nd->out] = 1;
    }
    if (st == MLS_STATUS_OK) {
        for (int j = 0; j < g->n_out; j++)
            if (!produced[g->outs[j]]) {
                st = mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                   "graph output %d (tensor %d) is not computed by any node", j,
                                   g->outs[j]);
                break;
            }
    }
    free(produced);
    return st;
}

/* First-fit offsets over per-sample sizes, freeing a slot after its last reader. */
static mls_status plan_arena(gr_graph *g, mls_error *err)
{
    typedef struct blk { int64_t off, size; int tensor; } blk;
    blk *live = malloc(((size_t)g->n_nodes + 1) * sizeof(blk));
    if (live == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    int64_t n_live = 0, top = 0;
    for (int j = 0; j < g->n_out; j++) g->t[g->outs[j]].last_use = g->n_nodes;
    for (int64_t i = 0; i < g->n_nodes; i++) {
        gr_tensor *t = &g->t[g->nodes[i].out];
        const gr_node *nd = &g->nodes[i];
        if (nd->op == GR_RESHAPE && g->t[nd->in[0]].kind == 2 && g->t[nd->in[0]].last_use == i) {
            /* a Reshape of a tensor that dies here takes over its slot: no copy */
            int64_t k = 0;
            while (k < n_live && live[k].tensor != nd->in[0]) k++;
            if (k < n_live) {
                live[k].tensor = nd->out;
                t->off = live[k].off;
                continue;
            }
        }
        /* live is sorted by offset: take the first gap that fits */
        int64_t pos = 0, at = 0;
        for (; pos < n_live; pos++) {
            if (live[pos].off - at >= t->size) break;
            at = live[pos].off + live[pos].size;
        }
        memmove(live + pos + 1, live + pos, (size_t)(n_live - pos) * sizeof(blk));
        live[pos] = (blk){at, t->size, g->nodes[i].out};
        n_live++;
        t->off = at;
        if (at + t->size > top) top = at + t->size;
        /* free the slots whose last reader is this node (or that nobody reads) */
        int64_t w = 0;
        for (int64_t k = 0; k < n_live; k++) {
            const gr_tensor *lt = &g->t[live[k].tensor];
            if (lt->last_use > i) live[w++] = live[k];
        }
        n_live = w;
    }
    free(live);
    g->arena_per_sample = top;
    return MLS_STATUS_OK;
}

mls_status mls_graph_dag_init(mls_model *m, gr_graph **out, mls_error *err)
{
    gr_graph *g = calloc(1, sizeof(*g));
    if (g == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    g->tag = 2;
    *out = g;
    if (pthread_mutex_init(&g->lock, NULL) != 0)
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "cannot create a mutex");
    g->lock_ok = 1;
    mls_status st = load_tensors(m, g, err);
    if (st != MLS_STATUS_OK) return st;
    int64_t n_io;
    const int64_t *io = find_i64(m, "io", 1, 1, &n_io, err);
    if (io == NULL) return err->status;
    if (n_io < 3 || io[0] < 0 || io[0] >= g->n_tensors || g->t[io[0]].kind != 0 || io[1] < 1 ||
        io[1] != n_io - 2)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section 'io' must name the input tensor and 1 or more outputs");
    g->input = (int)io[0];
    g->n_out = (int)io[1];
    g->outs = calloc((size_t)g->n_out, sizeof(int));
    if (g->outs == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    for (int j = 0; j < g->n_out; j++) {
        const int64_t id = io[2 + j];
        if (id < 0 || id >= g->n_tensors || g->t[id].kind != 2)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "graph output %d must be an intermediate tensor", j);
        g->outs[j] = (int)id;
        g->out_cols += g->t[id].size;
        if (g->out_cols > GR_MAX_PER_SAMPLE)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "graph outputs are too large");
    }
    if ((st = load_nodes(m, g, err)) != MLS_STATUS_OK) return st;
    if ((st = plan_arena(g, err)) != MLS_STATUS_OK) return st;
    m->dtype = MLS_DTYPE_FLOAT32;
    m->n_features = g->t[g->input].size;
    return MLS_STATUS_OK;
}

void mls_graph_dag_free(gr_graph *g)
{
    if (g == NULL) return;
    for (int i = 0; i < GR_POOL; i++) free(g->pool[i].buf);
    if (g->lock_ok) pthread_mutex_destroy(&g->lock);
    free(g->t);
    free(g->nodes);
    free(g->outs);
    free(g);
}

static float *arena_take(gr_graph *g, int64_t need, int64_t bucket, int64_t *cap)
{
    float *buf = NULL;
    pthread_mutex_lock(&g->lock);
    int best = -1;
    for (int i = 0; i < GR_POOL; i++)
        if (g->pool[i].buf != NULL && g->pool[i].cap >= need &&
            (best < 0 || g->pool[i].cap < g->pool[best].cap))
            best = i;
    if (best >= 0) {
        buf = g->pool[best].buf;
        *cap = g->pool[best].cap;
        g->pool[best].buf = NULL;
    }
    pthread_mutex_unlock(&g->lock);
    if (buf != NULL) return buf;
    *cap = bucket;
    return malloc((size_t)bucket * sizeof(float));
}

static void arena_give(gr_graph *g, float *buf, int64_t cap)
{
    pthread_mutex_lock(&g->lock);
    int slot = -1;
    for (int i = 0; i < GR_POOL; i++)
        if (g->pool[i].buf == NULL) { slot = i; break; }
    if (slot < 0) /* full: replace the smallest if this one is larger */
        for (int i = 0; i < GR_POOL; i++)
            if (g->pool[i].cap < cap && (slot < 0 || g->pool[i].cap < g->pool[slot].cap)) slot = i;
    float *drop = buf;
    if (slot >= 0) {
        drop = g->pool[slot].buf;
        g->pool[slot].buf = buf;
        g->pool[slot].cap = cap;
    }
    pthread_mutex_unlock(&g->lock);
    free(drop);
}

mls_status mls_graph_dag_predict(gr_graph *g, const mls_tensor *X, float *out, mls_error *err)
{
    const int64_t N = X->rows, in_size = g->t[g->input].size;
    int64_t bn = 1;
    while (bn < N && bn < ((int64_t)1 << 40)) bn *= 2;
    int64_t sc = g->scratch, sc_bucket = g->scratch;
    for (int64_t i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == GR_CONV) {
            const int64_t s1 = gr_conv_scratch(&g->nodes[i], N);
            const int64_t s2 = gr_conv_scratch(&g->nodes[i], bn);
            sc = s1 > sc ? s1 : sc;
            sc_bucket = s2 > sc_bucket ? s2 : sc_bucket;
        }
    int64_t a, a_bucket;
    const int packed = X->row_stride == in_size;
    const int64_t per = g->arena_per_sample + (packed ? 0 : in_size);
    if (!mls_size_mul(N, per, &a) || !mls_size_mul(bn, per, &a_bucket) ||
        a_bucket > INT64_MAX / 8 - sc_bucket || N > INT32_MAX)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "batch of %lld rows is too large",
                             (long long)N);
    if (!mls_tensor_all_finite(X))
        return mls_error_set(err, MLS_STATUS_ERR_VALUE,
                             "input contains NaN or infinity; a graph model needs finite values");
    int64_t cap;
    float *arena = arena_take(g, a + sc, a_bucket + sc_bucket, &cap);
    if (arena == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    float *scratch = arena + N * g->arena_per_sample;
    const float *xin = X->data;
    if (!packed) {
        float *dst = scratch + sc;
        for (int64_t r = 0; r < N; r++)
            memcpy(dst + r * in_size, (const float *)X->data + r * X->row_stride,
                   (size_t)in_size * sizeof(float));
        xin = dst;
    }
    const float *ptrs[4096];
    for (int64_t i = 0; i < g->n_nodes; i++) {
        const gr_node *nd = &g->nodes[i];
        for (int j = 0; j < nd->n_in; j++) {
            const gr_tensor *t = &g->t[nd->in[j]];
            ptrs[j] = t->kind == 1 ? t->data : t->kind == 0 ? xin : arena + N * t->off;
        }
        float *y = arena + N * g->t[nd->out].off;
        const int op = nd->op;
        if (op == GR_CONV || op == GR_CONVTRANSPOSE)
            gr_run_conv(g, nd, N, ptrs, y, scratch);
        else if (op == GR_GEMM)
            gr_run_gemm(g, nd, N, ptrs, y);
        else if ((op >= GR_MAXPOOL && op <= GR_GLOBALMAXPOOL) || op == GR_LRN)
            gr_run_pool(g, nd, N, ptrs, y);
        else if (op == GR_CONCAT || op == GR_TRANSPOSE || op == GR_PAD || op == GR_SLICE ||
                 op == GR_RESHAPE)
            gr_run_shape_op(g, nd, N, ptrs, y);
        else
            gr_run_elementwise(g, nd, N, ptrs, y);
    }
    for (int64_t r = 0; r < N; r++) {
        float *dst = out + r * g->out_cols;
        for (int j = 0; j < g->n_out; j++) {
            const gr_tensor *t = &g->t[g->outs[j]];
            memcpy(dst, arena + N * t->off + r * t->size, (size_t)t->size * sizeof(float));
            dst += t->size;
        }
    }
    arena_give(g, arena, cap);
    return MLS_STATUS_OK;
}

void gr_apply_act(const gr_node *nd, float *y, int64_t n)
{
    switch (nd->act) {
    case 1:
        for (int64_t i = 0; i < n; i++) y[i] = y[i] > 0 ? y[i] : 0.0f;
        break;
    case 2: {
        const float lo = nd->act_a, hi = nd->act_b;
        for (int64_t i = 0; i < n; i++) {
            const float v = y[i] < lo ? lo : y[i];
            y[i] = v > hi ? hi : v; /* min > max gives max, as ONNX says */
        }
        break;
    }
    case 3: {
        const float a = nd->act_a;
        for (int64_t i = 0; i < n; i++) y[i] = y[i] >= 0 ? y[i] : a * y[i];
        break;
    }
    default:
        break;
    }
}
