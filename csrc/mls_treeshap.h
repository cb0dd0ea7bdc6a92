/* mls_treeshap.h: path-dependent TreeSHAP (Lundberg et al. 2018, the
 * polynomial EXTEND/UNWIND recursion) over the tree_ensemble arrays
 * (mls_tree.h) plus "node_cover" float64 (n_nodes,): training cover per node.
 *
 * out: caller-owned float64 (n_rows, n_outputs, n_features + 1); the last
 * column is the bias (expected value). Contributions plus bias sum to the raw
 * score (margin). Categorical splits are refused (MLS_STATUS_ERR_UNSUPPORTED).
 * Every index is checked before use.
 */
#ifndef MLS_TREESHAP_H
#define MLS_TREESHAP_H

#include <stdint.h>
#include "mls_status.h"

typedef struct {
    int64_t n_features, n_outputs, n_trees, n_nodes, n_leaves, leaf_width;
    int compare;        /* 0: x <= t goes left, 1: x < t */
    int threshold_f32;  /* features cast to float32 before comparing */
    int aggregate_mean; /* 1: a tree's share is divided by the trees of its output */
    const int64_t *tree_offsets; /* n_trees + 1 */
    const int32_t *tree_output, *node_feature, *node_child;
    const double *node_threshold, *node_cover, *leaf_values, *base_score;
    const uint8_t *node_flags;
} mls_treeshap_model;

mls_status mls_treeshap(const mls_treeshap_model *m, const double *X, int64_t n_rows,
                        double *out, int n_threads, mls_error *err);

#endif /* MLS_TREESHAP_H */
