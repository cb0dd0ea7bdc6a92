/* mls_graph.c: the neural network family (see mls_graph.h).
 *
 * init checks every layer against its neighbours and its weight sections
 * (names, dtypes, shapes, finiteness) before predict may run, so a crafted
 * file cannot make predict read out of bounds. predict runs the chain over
 * two ping-pong buffers of n x max_dim floats (one allocation per call) and
 * writes the last layer into the caller's output. */
#include "mls_graph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mls_blas.h"
#include "graph/graph_internal.h"

typedef struct graph_layer {
    int op;
    int64_t in_dim, out_dim;
    const float *w; /* (in_dim, out_dim), Dense only */
    const float *b; /* (out_dim,), Dense only */
    float alpha;    /* LeakyRelu only */
} graph_layer;

typedef struct graph_state {
    int tag; /* 1: the chain of step 1; a DAG (graph/graph_internal.h) has tag 2 */
    int64_t n_layers;
    int64_t max_dim;
    graph_layer *layers;
} graph_state;

static int is_dag(const mls_model *m) { return m->state != NULL && *(const int *)m->state == 2; }

static void graph_release(mls_model *m)
{
    if (is_dag(m)) {
        mls_graph_dag_free(m->state);
        m->state = NULL;
        return;
    }
    graph_state *st = m->state;
    if (st != NULL) free(st->layers);
    free(st);
    m->state = NULL;
}

static int all_finite_f32(const float *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

static mls_status find_f32(const mls_model *m, const char *name, int ndim, const int64_t *shape,
                           const float **data, mls_error *err)
{
    const mls_section *s = mls_model_find_section(m, name);
    if (s == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "a graph model needs a section '%s'",
                             name);
    if (s->dtype != MLS_DTYPE_FLOAT32 || s->ndim != ndim)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section '%s' must be %d-D float32, got %d-D %s", name, ndim,
                             (int)s->ndim, mls_dtype_name(s->dtype));
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (s->shape[d] != shape[d])
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "section '%s' has dimension %d of size %lld, expected %lld",
                                 name, d, (long long)s->shape[d], (long long)shape[d]);
        n *= shape[d];
    }
    if (s->nbytes < (uint64_t)n * sizeof(float))
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "section '%s' is too short", name);
    if (!all_finite_f32(s->data, n))
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "section '%s' contains NaN or infinity",
                             name);
    *data = s->data;
    return MLS_STATUS_OK;
}

static mls_status graph_init(mls_model *m, mls_error *err)
{
    if (mls_model_find_section(m, "nodes") != NULL) {
        gr_graph *g = NULL;
        mls_status s = mls_graph_dag_init(m, &g, err);
        m->state = g;
        return s;
    }
    graph_state *st = calloc(1, sizeof(*st));
    if (st == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    st->tag = 1;
    m->state = st;
    const mls_section *ls = mls_model_find_section(m, "layers");
    if (ls == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "a graph model needs a section 'layers'");
    if (ls->dtype != MLS_DTYPE_INT64 || ls->ndim != 2 || ls->shape[1] != 4)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section 'layers' must be int64 of shape (n_layers, 4)");
    const int64_t L = ls->shape[0];
    if (L < 1 || L > MLS_GRAPH_MAX_LAYERS)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "section 'layers' has %lld layers; 1 to %d are allowed",
                             (long long)L, MLS_GRAPH_MAX_LAYERS);
    if (ls->nbytes < (uint64_t)L * 4 * sizeof(int64_t))
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "section 'layers' is too short");
    st->layers = calloc((size_t)L, sizeof(graph_layer));
    if (st->layers == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    const int64_t *rows = ls->data;
    int64_t max_dim = 0;
    for (int64_t i = 0; i < L; i++) {
        const int64_t op = rows[4 * i], in = rows[4 * i + 1], out = rows[4 * i + 2];
        graph_layer *g = &st->layers[i];
        if (op < MLS_GRAPH_OP_DENSE || op >= MLS_GRAPH_OP_COUNT_)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "layer %lld has unknown op %lld",
                                 (long long)i, (long long)op);
        if (in < 1 || out < 1 || in > MLS_GRAPH_MAX_DIM || out > MLS_GRAPH_MAX_DIM)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "layer %lld has sizes %lld -> %lld; 1 to %d are allowed",
                                 (long long)i, (long long)in, (long long)out, MLS_GRAPH_MAX_DIM);
        if (i > 0 && in != st->layers[i - 1].out_dim)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "layer %lld takes %lld values but layer %lld gives %lld",
                                 (long long)i, (long long)in, (long long)(i - 1),
                                 (long long)st->layers[i - 1].out_dim);
        if (op != MLS_GRAPH_OP_DENSE && in != out)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "elementwise layer %lld must keep its size, got %lld -> %lld",
                                 (long long)i, (long long)in, (long long)out);
        if (op == MLS_GRAPH_OP_LEAKYRELU) {
            double alpha;
            memcpy(&alpha, &rows[4 * i + 3], sizeof(alpha));
            if (!isfinite(alpha) || fabs(alpha) > 1e30)
                return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                     "layer %lld (LeakyRelu) has a non-finite alpha",
                                     (long long)i);
            g->alpha = (float)alpha;
        }
        g->op = (int)op;
        g->in_dim = in;
        g->out_dim = out;
        if (op == MLS_GRAPH_OP_DENSE) {
            char name[MLS_SECTION_NAME_MAX];
            int64_t wshape[2] = {in, out};
            mls_status s;
            snprintf(name, sizeof(name), "w%lld", (long long)i);
            if ((s = find_f32(m, name, 2, wshape, &g->w, err)) != MLS_STATUS_OK) return s;
            snprintf(name, sizeof(name), "b%lld", (long long)i);
            if ((s = find_f32(m, name, 1, &out, &g->b, err)) != MLS_STATUS_OK) return s;
        }
        if (in > max_dim) max_dim = in;
        if (out > max_dim) max_dim = out;
    }
    st->n_layers = L;
    st->max_dim = max_dim;
    m->dtype = MLS_DTYPE_FLOAT32;
    m->n_features = st->layers[0].in_dim;
    return MLS_STATUS_OK;
}

static mls_status graph_output_spec(const mls_model *m, mls_method method,
                                    mls_output_spec *spec, mls_error *err)
{
    const graph_state *st = m->state;
    if (method != MLS_METHOD_PREDICT)
        return mls_error_set(err, MLS_STATUS_ERR_UNSUPPORTED,
                             "a graph model has predict only (its output tensor)");
    spec->ndim = 2;
    spec->cols = is_dag(m) ? ((const gr_graph *)m->state)->out_cols
                           : st->layers[st->n_layers - 1].out_dim;
    spec->dtype = MLS_DTYPE_FLOAT32;
    return MLS_STATUS_OK;
}

static void run_dense(const graph_layer *g, const float *x, int64_t n, float *y)
{
    const int64_t k = g->in_dim, o = g->out_dim;
    for (int64_t r = 0; r < n; r++) memcpy(y + r * o, g->b, (size_t)o * sizeof(float));
    if (n == 1) {
        mls_cblas_sgemv(CblasRowMajor, CblasTrans, (int)k, (int)o, 1.0f, g->w, (int)o, x, 1,
                        1.0f, y, 1);
    } else {
        mls_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)o, (int)k, 1.0f,
                        x, (int)k, g->w, (int)o, 1.0f, y, (int)o);
    }
}

static void run_softmax(const float *x, int64_t n, int64_t d, float *y, int log_)
{
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
        float mx = xr[0];
        for (int64_t j = 1; j < d; j++)
            if (xr[j] > mx) mx = xr[j];
        double sum = 0;
        for (int64_t j = 0; j < d; j++) sum += exp((double)(xr[j] - mx));
        const double lse = log(sum);
        for (int64_t j = 0; j < d; j++) {
            const double z = (double)(xr[j] - mx);
            yr[j] = (float)(log_ ? z - lse : exp(z - lse));
        }
    }
}

static void run_elementwise(const graph_layer *g, const float *x, int64_t count, float *y)
{
    switch (g->op) {
    case MLS_GRAPH_OP_LEAKYRELU:
        for (int64_t i = 0; i < count; i++) y[i] = x[i] >= 0 ? x[i] : g->alpha * x[i];
        break;
    case MLS_GRAPH_OP_EXP:
        for (int64_t i = 0; i < count; i++) y[i] = expf(x[i]);
        break;
    case MLS_GRAPH_OP_RELU:
        for (int64_t i = 0; i < count; i++) y[i] = x[i] > 0 ? x[i] : 0.0f;
        break;
    case MLS_GRAPH_OP_SIGMOID:
        for (int64_t i = 0; i < count; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
        break;
    case MLS_GRAPH_OP_TANH:
        for (int64_t i = 0; i < count; i++) y[i] = tanhf(x[i]);
        break;
    default: /* identity */
        if (y != x) memmove(y, x, (size_t)count * sizeof(float));
        break;
    }
}

static mls_status graph_predict(const mls_model *m, mls_method method, const mls_tensor *X,
                                void *out, mls_error *err)
{
    (void)method;
    if (is_dag(m)) return mls_graph_dag_predict(m->state, X, out, err);
    const graph_state *st = m->state;
    const int64_t n = X->rows;
    int64_t cells;
    if (!mls_size_mul(n, st->max_dim, &cells) || cells > INT64_MAX / 8 ||
        !mls_blas_fits_int(n))
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "batch of %lld rows is too large",
                             (long long)n);
    if (!mls_tensor_all_finite(X))
        return mls_error_set(err, MLS_STATUS_ERR_VALUE,
                             "input contains NaN or infinity; a graph model needs finite values");
    float *buf = malloc((size_t)cells * 2 * sizeof(float));
    if (buf == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    /* the input in place when its rows are packed, else packed into buf */
    const int64_t d0 = st->layers[0].in_dim;
    const float *cur = X->data;
    float *nxt = buf, *other = buf + cells;
    if (X->row_stride != d0) {
        for (int64_t r = 0; r < n; r++)
            memcpy(other + r * d0, (const float *)X->data + r * X->row_stride,
                   (size_t)d0 * sizeof(float));
        cur = other;
    }
    for (int64_t i = 0; i < st->n_layers; i++) {
        const graph_layer *g = &st->layers[i];
        float *dst = i == st->n_layers - 1 ? out : nxt;
        if (g->op == MLS_GRAPH_OP_DENSE)
            run_dense(g, cur, n, dst);
        else if (g->op == MLS_GRAPH_OP_SOFTMAX || g->op == MLS_GRAPH_OP_LOGSOFTMAX)
            run_softmax(cur, n, g->in_dim, dst, g->op == MLS_GRAPH_OP_LOGSOFTMAX);
        else
            run_elementwise(g, cur, n * g->in_dim, dst);
        cur = dst;
        nxt = dst == buf ? buf + cells : buf;
    }
    free(buf);
    return MLS_STATUS_OK;
}

const mls_model_vtable mls_graph_vtable = {
    .kind = MLS_KIND_GRAPH,
    .name = "graph",
    .init = graph_init,
    .output_spec = graph_output_spec,
    .predict = graph_predict,
    .release_state = graph_release,
};
