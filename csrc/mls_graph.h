/* mls_graph.h: neural networks as a validated chain of layers (MLS_KIND_GRAPH).
 *
 * Step 1 of issue 13 lands the dense part of the graph runtime: a sequential
 * plan of Dense (SGEMM + bias), elementwise activations and (Log)Softmax,
 * float32, one row per sample. Sections: "layers" int64 (n_layers, 4) =
 * (op, in_dim, out_dim, 0) and, for Dense layer i, "w<i>" float32
 * (in_dim, out_dim) and "b<i>" float32 (out_dim,). */
#ifndef MLS_GRAPH_H
#define MLS_GRAPH_H

#include "mls_model.h"

/* Values are stored in .mls files: never renumber. */
typedef enum mls_graph_op {
    MLS_GRAPH_OP_DENSE = 1,
    MLS_GRAPH_OP_RELU = 2,
    MLS_GRAPH_OP_SIGMOID = 3,
    MLS_GRAPH_OP_TANH = 4,
    MLS_GRAPH_OP_SOFTMAX = 5,
    MLS_GRAPH_OP_LOGSOFTMAX = 6,
    MLS_GRAPH_OP_IDENTITY = 7,
    MLS_GRAPH_OP_LEAKYRELU = 8, /* column 3: alpha, the bits of a float64 */
    MLS_GRAPH_OP_EXP = 9,
    MLS_GRAPH_OP_COUNT_
} mls_graph_op;

#define MLS_GRAPH_MAX_LAYERS 4096
#define MLS_GRAPH_MAX_DIM (1 << 24)

extern const mls_model_vtable mls_graph_vtable;

#endif /* MLS_GRAPH_H */
