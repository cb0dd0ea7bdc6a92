/* mls_tree_simd.h: SIMD node walks for numeric tree ensembles (internal to
 * the tree family: mls_tree.c builds the arrays below at load time from its
 * validated sections and calls these kernels; nothing else includes this).
 *
 * Packed node, 16 bytes, indexed in 8-byte units ("pos2" = 2 * global node
 * index), so one gather index reaches every field with scale 8:
 *   float32 thresholds: float thr; uint32 fd; int32 next2; int32 leaf
 *   float64 thresholds: double thr; uint32 fd; int32 next2
 * fd = feature | (NaN goes right) << 31; next2 = 2 * global index of the left
 * child (the right child is next2 + 2). A leaf is thr = NaN, fd = 0, next2 =
 * its own pos2, so a walk may step past it and stay put; its row of
 * leaf_values is `leaf` (float32; 0 for splits), or the low 32 bits of its
 * NaN threshold (float64: quiet NaN 0x7ff8000000000000 | row; comparisons
 * ignore the payload).
 */
#ifndef MLS_TREE_SIMD_H
#define MLS_TREE_SIMD_H

#include <stdint.h>

enum { MLS_TREE_ISA_NONE = 0, MLS_TREE_ISA_AVX2 = 1, MLS_TREE_ISA_AVX512 = 2 };

#define MLS_TREE_SIMD_ROW_GROUP 64 /* trees of one row walked together */
#define MLS_TREE_SIMD_CHUNK 1024   /* trees reordered within chunks this long */

typedef struct mls_tree_simd {
    const void *nodes;          /* packed nodes (n_nodes,) */
    const int32_t *root2;       /* (n_trees,) pos2 of each root */
    const int32_t *depth;       /* (n_trees,) longest root-to-leaf path */
    const int32_t *min_depth;   /* (n_trees,) shortest */
    const int32_t *tree_output; /* (n_trees,) */
    const double *leaf_values;  /* (n_leaves, leaf_width) */
    int64_t n_trees, n_outputs, leaf_width, n_features;
    /* NULL, or the order the row kernels walk trees in: a permutation of
     * each chunk of MLS_TREE_SIMD_CHUNK trees (by depth, so a group of
     * ROW_GROUP walks does not wait for one deep tree), and root2, depth,
     * min_depth in that order */
    const int32_t *order, *order_root2, *order_depth, *order_min_depth;
    int thr_f32; /* thresholds (and rows) are float32, else float64 */
    int lt;      /* compare: 1 `x < t` goes left, 0 `x <= t` */
    int isa;     /* MLS_TREE_ISA_* chosen at load */
} mls_tree_simd;

/* The best ISA this CPU runs (MLS_TREE_ISA_NONE off x86 or without AVX2). */
int mls_tree_simd_isa(void);

/* acc (n x n_outputs, row-major) += each row's leaves, added in tree order.
 * Rows r = 0..n-1 start at x + r * stride elements (float or double as
 * thr_f32). The caller guarantees (n - 1) * stride + n_features <= 2^31 - 1
 * (gather offsets are int32). */
void mls_tree_simd_block(const mls_tree_simd *m, const void *x, int64_t stride, int64_t n,
                         double *acc);

#endif /* MLS_TREE_SIMD_H */
