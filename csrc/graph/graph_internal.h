/* graph_internal.h: the DAG graph runtime shared by the files of csrc/graph/.
 *
 * Sections of a DAG graph model (all written by mlserve/convert/_onnx.py,
 * all validated by mls_graph_dag_init before predict may run):
 *   "tensors"     int64 (T, 10): kind, ndim, dims[8]
 *                 kind 0: the graph input (batched; dims per sample)
 *                 kind 1: a constant, full shape, data in section "c<id>" float32
 *                 kind 2: an intermediate (batched; dims per sample), produced by one node
 *   "nodes"       int64 (K, 10): op, out, in_off, n_in, attr_off, n_attr, act, act_a, act_b, 0
 *                 (act: 0 none, 1 Relu, 2 Clip(a, b), 3 LeakyRelu(a); a, b float64 bits)
 *   "node_inputs" int64 (>= 1,): tensor ids, node i reads [in_off, in_off + n_in)
 *   "node_attrs"  int64 (>= 1,): per-op attributes (layouts in graph_parse_attrs), floats
 *                 as float64 bits
 *   "io"          int64 (2 + n_out,): input id, n_out, output ids
 * Batched tensors hold N samples, sample-major (row-major with N first). The
 * nodes are in topological order (a node reads only the input, constants and
 * outputs of earlier nodes). Shapes are inferred here from the input shape
 * and checked against the stored ones, so every op's size arithmetic below
 * works on validated numbers.
 *
 * Arena: every intermediate's size is N x (its per-sample size), so one
 * first-fit plan over per-sample sizes (from liveness: a tensor's slot is
 * free after its last reader) gives offsets that scale with N. A call needs
 * N x arena_per_sample + scratch floats (scratch: im2col of one sample, or of
 * a bounded group of samples, see gr_conv_batch).
 * Arenas are pooled per model: predict takes one whose capacity fits (or
 * allocates one rounded up to a power-of-two batch bucket) and returns it,
 * so steady-state calls do not allocate. */
#ifndef MLS_GRAPH_INTERNAL_H
#define MLS_GRAPH_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "../mls_model.h"

#define GR_MAX_RANK 8 /* full rank, batch included */
#define GR_MAX_TENSORS 100000
#define GR_MAX_NODES 100000
#define GR_MAX_ATTRS 40
#define GR_MAX_PER_SAMPLE ((int64_t)1 << 31)
#define GR_POOL 8

/* Op codes stored in .mls files: never renumber. */
enum {
    GR_CONV = 20,
    GR_GEMM = 21,
    GR_RELU = 30, GR_LEAKYRELU, GR_SIGMOID, GR_TANH, GR_EXP, GR_ERF, GR_GELU, GR_CLIP,
    GR_IDENTITY, GR_NEG, GR_ABS, GR_SQRT, GR_ELU, GR_SOFTPLUS, GR_SELU, GR_RESHAPE,
    GR_HARDSIGMOID, GR_HARDSWISH, GR_RECIPROCAL, GR_LOG, GR_UNARY_END_,
    GR_ADD = 50, GR_SUB, GR_MUL, GR_DIV, GR_POW, GR_MAX, GR_MIN, GR_PRELU, GR_BINARY_END_,
    GR_CHANNEL_AFFINE = 60,
    GR_SOFTMAX = 61,
    GR_LOGSOFTMAX = 62,
    GR_MAXPOOL = 70,
    GR_AVGPOOL = 71,
    GR_GLOBALAVGPOOL = 72,
    GR_GLOBALMAXPOOL = 73,
    GR_CONCAT = 80,
    GR_TRANSPOSE = 81,
    GR_PAD = 82,
    GR_LRN = 83,
    GR_REDUCEMEAN = 84,
    GR_REDUCESUM = 85,
    GR_REDUCEMAX = 86,
    GR_LAYERNORM = 87,
    GR_SLICE = 88,
    GR_CONVTRANSPOSE = 89,
};

typedef struct gr_tensor {
    int kind;
    int ndim;                  /* per-sample rank for batched, full rank for constants */
    int64_t dims[GR_MAX_RANK];
    int64_t size;              /* per-sample elements (batched) or all elements (constant) */
    const float *data;         /* constants */
    int64_t off;               /* intermediates: per-sample offset into the arena */
    int64_t last_use;          /* index of the last node reading it */
} gr_tensor;

typedef struct gr_node {
    int op;
    int out;
    int n_in;
    const int64_t *in;
    int act;
    float act_a, act_b;
    int n_ia;
    int64_t ia[GR_MAX_ATTRS]; /* parsed integer attributes */
    int64_t col_size;         /* Conv: im2col floats of one sample (K x P), else 0 */
    int64_t out_size;         /* Conv: output floats of one sample */
} gr_node;

/* Conv over several samples at once: im2col of nb samples side by side, one SGEMM,
 * then a scatter into NCHW. nb is bounded so the scratch stays under GR_BATCH_SCRATCH
 * floats; gr_conv_batch gives nb for a node and N (1: one sample at a time). */
#define GR_BATCH_SCRATCH ((int64_t)1 << 20)
int64_t gr_conv_batch(const gr_node *nd, int64_t N);
int64_t gr_conv_scratch(const gr_node *nd, int64_t N);

typedef struct gr_arena {
    float *buf;
    int64_t cap; /* floats */
} gr_arena;

typedef struct gr_graph {
    int tag; /* 2: DAG (mls_graph.c tells it from the chain state) */
    int64_t n_tensors, n_nodes;
    gr_tensor *t;
    gr_node *nodes;
    int input, n_out;
    int *outs;
    int64_t out_cols;
    int64_t arena_per_sample; /* floats */
    int64_t scratch;          /* floats, independent of N */
    pthread_mutex_t lock;
    int lock_ok;
    gr_arena pool[GR_POOL];
} gr_graph;

/* plan.c */
mls_status mls_graph_dag_init(mls_model *m, gr_graph **out, mls_error *err);
mls_status mls_graph_dag_predict(gr_graph *g, const mls_tensor *X, float *out, mls_error *err);
void mls_graph_dag_free(gr_graph *g);

/* Shape inference + per-op validation: fills dims of node->out, returns scratch need. */
mls_status gr_infer_conv(gr_graph *g, gr_node *nd, int64_t idx, gr_tensor *o, int64_t *scratch,
                         mls_error *err);
mls_status gr_infer_gemm(gr_graph *g, gr_node *nd, int64_t idx, gr_tensor *o, mls_error *err);
mls_status gr_infer_pool(gr_graph *g, gr_node *nd, int64_t idx, gr_tensor *o, mls_error *err);
mls_status gr_infer_elementwise(gr_graph *g, gr_node *nd, int64_t idx, gr_tensor *o,
                                mls_error *err);
mls_status gr_infer_shape_op(gr_graph *g, gr_node *nd, int64_t idx, gr_tensor *o,
                             mls_error *err);

/* Runs: x[i] are the input pointers (batched: N samples), y the output. */
void gr_run_conv(const gr_graph *g, const gr_node *nd, int64_t N, const float **x, float *y,
                 float *scratch);
void gr_run_gemm(const gr_graph *g, const gr_node *nd, int64_t N, const float **x, float *y);
void gr_run_pool(const gr_graph *g, const gr_node *nd, int64_t N, const float **x, float *y);
void gr_run_elementwise(const gr_graph *g, const gr_node *nd, int64_t N, const float **x,
                        float *y);
void gr_run_shape_op(const gr_graph *g, const gr_node *nd, int64_t N, const float **x, float *y);
void gr_apply_act(const gr_node *nd, float *y, int64_t n);

const char *gr_op_name(int op);
mls_status gr_node_error(mls_error *err, const gr_node *nd, int64_t idx, const char *fmt, ...);

static inline const gr_tensor *gr_in(const gr_graph *g, const gr_node *nd, int i)
{
    return &g->t[nd->in[i]];
}

#endif /* MLS_GRAPH_INTERNAL_H */
