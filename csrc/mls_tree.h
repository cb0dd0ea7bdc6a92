/* mls_tree.h: tree ensembles (decision trees, random forests, gradient
 * boosting from scikit-learn, XGBoost and LightGBM) in one representation.
 *
 * Sections of a "tree_ensemble" model (names are part of the .mls format).
 * n_trees >= 1 trees, n_nodes nodes in all, node i of tree t is global node
 * tree_offsets[t] + i; "local" indices count from the tree's first node.
 *
 *   "config"         int64 (8,): n_features, n_outputs, n_classes (0 for a
 *                    regressor), aggregate (0 sum, 1 mean), link (0 identity,
 *                    1 logistic, 2 softmax, 3 exp), compare (0 `x <= t` goes
 *                    left, 1 `x < t` goes left), input dtype (mls_dtype:
 *                    float32 or float64), engine (0: the fast walker,
 *                    with SIMD when the CPU has AVX2; tests set 1 for the
 *                    reference walker, 2 for the fast walker without SIMD,
 *                    3 for it with at most AVX2)
 *   "tree_offsets"   int64 (n_trees + 1,): 0, strictly increasing, n_nodes
 *   "tree_output"    int32 (n_trees,): first output column the tree adds to
 *   "node_feature"   int32 (n_nodes,): split feature, or -1 for a leaf
 *   "node_threshold" float32|float64 (n_nodes,): numeric threshold (not NaN);
 *                    for a categorical split, the index of its category set;
 *                    ignored for a leaf. float32 thresholds mean features are
 *                    cast to float32 before comparing (scikit-learn trees,
 *                    XGBoost); float64 thresholds compare in float64.
 *   "node_child"     int32 (n_nodes,): split: local index of the left child;
 *                    the right child is the next node. It must point forward
 *                    (local index < left, left + 1 < tree size), so every
 *                    walk ends. Leaf: row of leaf_values.
 *   "node_flags"     uint8 (n_nodes,): bit 0 missing (NaN) goes left;
 *                    bit 1 categorical split; bit 2 |x| <= 1e-35f is missing
 *                    too (LightGBM zero_as_missing); bit 3 a category out of
 *                    range goes left; bit 4 strict categories: a negative
 *                    or fractional x is out of range (otherwise x is
 *                    truncated toward 0 first, as LightGBM does).
 *   "leaf_values"    float64 (n_leaves, leaf_width): a leaf adds its row to
 *                    outputs tree_output[t] .. tree_output[t] + leaf_width - 1
 *   "base_score"     float64 (n_outputs,): added to the raw score
 *   "cat_offsets"    int64 (n_sets + 1,), "cat_bits" uint8 (n_bytes,):
 *                    optional; set s is bytes cat_offsets[s] .. [s + 1] of
 *                    cat_bits, category c (x truncated toward 0) goes left
 *                    when bit c % 8 of byte c / 8 is set. NaN follows bit 0,
 *                    negative or too large categories follow bit 3.
 *   "classes"        optional, classifiers: int64|float64 (n_classes,) labels
 *                    that predict returns; without it predict returns int64
 *                    class indices.
 *
 * Scores: raw[j] = base[j] + sum of leaves (aggregate sum, added in tree
 * order), or base[j] + (sum of leaves) / (trees adding to j) (mean).
 * decision_function returns raw, predict_proba link(raw) for classifiers
 * (logistic with 1 output gives [1 - p, p]; identity means raw already holds
 * probabilities, as in forests), predict the argmax class, or link(raw) for
 * regressors.
 */
#ifndef MLS_TREE_H
#define MLS_TREE_H

#include "mls_model.h"

extern const mls_model_vtable mls_tree_ensemble_vtable;

#endif /* MLS_TREE_H */
