/* mls_tree.c: prediction for tree ensembles (layout in mls_tree.h).
 *
 * Two walkers share the validated sections:
 *
 * - the reference walker follows the stored arrays node by node with every
 *   rule spelled out (NaN, zero-as-missing, categorical sets); it is the
 *   plainly correct one, used for models with categorical or zero-missing
 *   splits and, through config[7] = 1, by the tests that check the fast one;
 * - the fast walker runs numeric-only models. init packs each node into 12
 *   or 16 bytes (threshold, feature with the "NaN goes right" bit, global
 *   index of the left child) and turns every leaf into a node that points
 *   to itself behind a NaN threshold. A walk then needs no leaf test: it
 *   takes exactly depth(tree) branch-free steps
 *       next = left + (x > t || (isnan(x) && nan_right))
 *   and 8 walks (8 rows of one tree, or 8 trees of one row) advance in
 *   lockstep, so their memory loads overlap instead of waiting on each
 *   other. Rows go in blocks, so a tree's top nodes stay in cache across a
 *   block; large batches split their blocks across threads (pthreads,
 *   mlserve.set_num_threads);
 * - on x86 CPUs with AVX2 or AVX-512 the fast walker's steps run in the
 *   SIMD kernels of mls_tree_simd.c instead (same rule, same compares,
 *   bit-identical sums) on 16-byte nodes built by init_simd_nodes, 16 or 8
 *   walks per vector. Chosen once at load; config[7] = 2 or 3 lets the tests
 *   run the scalar or the AVX2 path on any CPU.
 *
 * Leaves are added in tree order for every row, so sums match the source
 * libraries' own order of additions.
 */
#include "mls_tree.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mls_blas.h" /* mls_blas_get_num_threads: the caller's thread budget */
#include "mls_tree_simd.h"

enum {
    CFG_N_FEATURES = 0,
    CFG_N_OUTPUTS,
    CFG_N_CLASSES,
    CFG_AGGREGATE,
    CFG_LINK,
    CFG_COMPARE,
    CFG_DTYPE,
    CFG_ENGINE,
    CFG_SIZE_
};

enum { AGG_SUM = 0, AGG_MEAN = 1 };
enum { LINK_IDENTITY = 0, LINK_LOGISTIC = 1, LINK_SOFTMAX = 2, LINK_EXP = 3 };
enum { CMP_LE = 0, CMP_LT = 1 };
/* config[7]: which walker runs. Files from converters hold 0; the tests set
 * 1, 2 or 3 to check the fast walkers against the reference one and each
 * other (3: the AVX2 kernels on a CPU that also has AVX-512). */
enum { ENGINE_FAST = 0, ENGINE_REFERENCE = 1, ENGINE_SCALAR = 2, ENGINE_AVX2 = 3 };

#define FLAG_DEFAULT_LEFT 0x01u
#define FLAG_CATEGORICAL 0x02u
#define FLAG_ZERO_MISSING 0x04u
#define FLAG_CAT_OOR_LEFT 0x08u
#define FLAG_CAT_STRICT 0x10u
#define FLAG_KNOWN_ 0x1fu

/* LightGBM's kZeroThreshold (a float literal widened to double). */
#define ZERO_THRESHOLD ((double)1e-35f)

#ifndef LANES
#define LANES 8
#endif
#ifndef BLOCK_ROWS
#define BLOCK_ROWS 256
#endif
/* Branch-free steps per thread below which a batch stays on one thread. */
#define THREAD_MIN_STEPS 200000

typedef struct node32 {
    float thr;
    uint32_t fd; /* feature | (NaN goes right) << 31 */
    int32_t next;
} node32;

typedef struct node64 {
    double thr;
    uint32_t fd;
    int32_t next;
} node64;

typedef struct tree_state {
    int64_t n_features, n_outputs, n_classes, n_trees, n_nodes, n_leaves, leaf_width;
    int aggregate, link, compare, thr_f32, reference, engine;
    const int64_t *offsets;
    const int32_t *tree_output;
    const int32_t *feature;
    const void *threshold;
    const int32_t *child;
    const uint8_t *flags;
    const double *leaf_values;
    const double *base;
    const int64_t *cat_offsets; /* NULL without categorical sets */
    int64_t n_sets;
    const uint8_t *cat_bits;
    const mls_section *classes;
    double *count;    /* (n_outputs,) trees adding to each output (mean) */
    int32_t *depth;   /* (n_trees,) longest root-to-leaf path */
    int32_t *min_depth; /* (n_trees,) shortest root-to-leaf path */
    void *fast_nodes; /* node32 or node64 (n_nodes,), NULL for reference */
    int64_t total_depth;
    mls_tree_simd simd; /* simd.isa != NONE: the SIMD walker runs instead */
    void *simd_nodes;   /* its packed nodes (mls_tree_simd.h) */
    int32_t *root2;     /* (n_trees,) its roots */
    int32_t *order_buf; /* NULL or (4, n_trees): simd.order and its arrays */
} tree_state;

/* ---- validation ----------------------------------------------------------- */

static const mls_section *need(const mls_model *m, const char *name, mls_dtype dtype,
                               int64_t len, mls_error *err)
{
    const mls_section *s = mls_model_find_section(m, name);
    if (s == NULL) {
        mls_error_set(err, MLS_STATUS_ERR_FORMAT, "a tree_ensemble model needs section '%s'",
                      name);
        return NULL;
    }
    if (s->dtype != dtype || s->ndim != 1 || (len >= 0 && s->shape[0] != len)) {
        if (len >= 0)
            mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                          "section '%s' must be %s of shape (%lld,), got %s with %d "
                          "dimensions (first %lld)",
                          name, mls_dtype_name(dtype), (long long)len, mls_dtype_name(s->dtype),
                          (int)s->ndim, (long long)(s->ndim ? s->shape[0] : 0));
        else
            mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                          "section '%s' must be 1-D %s, got %s with %d dimensions", name,
                          mls_dtype_name(dtype), mls_dtype_name(s->dtype), (int)s->ndim);
        return NULL;
    }
    return s;
}

/* A corrupt-section error (the message says which section and why). */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static mls_status bad(mls_error *err, const char *fmt, ...)
{
    char message[MLS_ERROR_MESSAGE_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "%s", message);
}

static double threshold_at(const tree_state *st, int64_t g)
{
    return st->thr_f32 ? (double)((const float *)st->threshold)[g]
                       : ((const double *)st->threshold)[g];
}

static mls_status init_config(mls_model *m, tree_state *st, mls_error *err)
{
    const mls_section *cfg = need(m, "config", MLS_DTYPE_INT64, CFG_SIZE_, err);
    if (cfg == NULL) return MLS_STATUS_ERR_FORMAT;
    const int64_t *c = cfg->data;
    st->n_features = c[CFG_N_FEATURES];
    st->n_outputs = c[CFG_N_OUTPUTS];
    st->n_classes = c[CFG_N_CLASSES];
    if (st->n_features < 1 || st->n_features > INT32_MAX)
        return bad(err, "config: n_features must be in [1, 2^31), got %lld", (long long)st->n_features);
    if (st->n_outputs < 1 || st->n_outputs > (1 << 20))
        return bad(err, "config: n_outputs must be in [1, 2^20], got %lld", (long long)st->n_outputs);
    if (st->n_classes != 0 && (st->n_classes < 2 || st->n_classes > (1 << 20)))
        return bad(err, "config: n_classes must be 0 (regressor) or in [2, 2^20], got %lld", (long long)st->n_classes);
    if (c[CFG_AGGREGATE] != AGG_SUM && c[CFG_AGGREGATE] != AGG_MEAN)
        return bad(err, "config: aggregate must be 0 (sum) or 1 (mean), got %lld", (long long)c[CFG_AGGREGATE]);
    if (c[CFG_LINK] < LINK_IDENTITY || c[CFG_LINK] > LINK_EXP)
        return bad(err, "config: link must be 0..3 (identity, logistic, softmax, exp), got %lld", (long long)c[CFG_LINK]);
    if (c[CFG_COMPARE] != CMP_LE && c[CFG_COMPARE] != CMP_LT)
        return bad(err, "config: compare must be 0 (<=) or 1 (<), got %lld", (long long)c[CFG_COMPARE]);
    if (c[CFG_DTYPE] != MLS_DTYPE_FLOAT32 && c[CFG_DTYPE] != MLS_DTYPE_FLOAT64)
        return bad(err, "config: input dtype must be %lld (float32) or %lld (float64), got %lld", (long long)MLS_DTYPE_FLOAT32, (long long)MLS_DTYPE_FLOAT64, (long long)c[CFG_DTYPE]);
    if (c[CFG_ENGINE] < ENGINE_FAST || c[CFG_ENGINE] > ENGINE_AVX2)
        return bad(err, "config: engine must be 0 (fast), 1 (reference), 2 (fast, no SIMD) or 3 (fast, at most AVX2), got %lld", (long long)c[CFG_ENGINE]);
    st->aggregate = (int)c[CFG_AGGREGATE];
    st->link = (int)c[CFG_LINK];
    st->compare = (int)c[CFG_COMPARE];
    st->reference = c[CFG_ENGINE] == ENGINE_REFERENCE;
    st->engine = (int)c[CFG_ENGINE];
    m->dtype = (mls_dtype)c[CFG_DTYPE];
    m->n_features = st->n_features;
    int64_t K = st->n_outputs, C = st->n_classes;
    if (C > 0) {
        int ok = (st->link == LINK_LOGISTIC && K == 1 && C == 2) ||
                 (st->link == LINK_SOFTMAX && K == C) || (st->link == LINK_IDENTITY && K == C);
        if (!ok)
            return bad(err,
                       "config: a classifier with %lld classes needs link logistic with 1 "
                       "output (2 classes), or softmax or identity with one output per "
                       "class; got link %lld with %lld outputs", (long long)C, (long long)st->link, (long long)K);
    } else if (st->link == LINK_SOFTMAX) {
        return bad(err, "config: a regressor cannot use the softmax link");
    }
    return MLS_STATUS_OK;
}

static mls_status init_sections(mls_model *m, tree_state *st, mls_error *err)
{
    const mls_section *off = need(m, "tree_offsets", MLS_DTYPE_INT64, -1, err);
    if (off == NULL) return MLS_STATUS_ERR_FORMAT;
    st->n_trees = off->shape[0] - 1;
    if (st->n_trees < 1) return bad(err, "section 'tree_offsets' must hold at least 2 values");
    st->offsets = off->data;
    const mls_section *feat = need(m, "node_feature", MLS_DTYPE_INT32, -1, err);
    if (feat == NULL) return MLS_STATUS_ERR_FORMAT;
    st->n_nodes = feat->shape[0];
    if (st->n_nodes < 1 || st->n_nodes >= INT32_MAX)
        return bad(err, "section 'node_feature' must hold between 1 and 2^31 - 2 nodes, got %lld", (long long)st->n_nodes);
    const mls_section *out = need(m, "tree_output", MLS_DTYPE_INT32, st->n_trees, err);
    const mls_section *child = out ? need(m, "node_child", MLS_DTYPE_INT32, st->n_nodes, err) : NULL;
    const mls_section *flags = child ? need(m, "node_flags", MLS_DTYPE_UINT8, st->n_nodes, err) : NULL;
    const mls_section *base = flags ? need(m, "base_score", MLS_DTYPE_FLOAT64, st->n_outputs, err) : NULL;
    if (base == NULL) return MLS_STATUS_ERR_FORMAT;
    const mls_section *thr = mls_model_find_section(m, "node_threshold");
    if (thr == NULL || thr->ndim != 1 || thr->shape[0] != st->n_nodes ||
        (thr->dtype != MLS_DTYPE_FLOAT32 && thr->dtype != MLS_DTYPE_FLOAT64))
        return bad(err, "section 'node_threshold' must be float32 or float64 of shape (%lld,)", (long long)st->n_nodes);
    const mls_section *leaves = mls_model_find_section(m, "leaf_values");
    if (leaves == NULL || leaves->dtype != MLS_DTYPE_FLOAT64 || leaves->ndim != 2 ||
        leaves->shape[0] < 1 || leaves->shape[1] < 1 || leaves->shape[1] > st->n_outputs)
        return bad(err,
                   "section 'leaf_values' must be float64 of shape (n_leaves >= 1, width) with "
                   "1 <= width <= %lld outputs", (long long)st->n_outputs);
    st->tree_output = out->data;
    st->feature = feat->data;
    st->child = child->data;
    st->flags = flags->data;
    st->base = base->data;
    st->threshold = thr->data;
    st->thr_f32 = thr->dtype == MLS_DTYPE_FLOAT32;
    st->leaf_values = leaves->data;
    st->n_leaves = leaves->shape[0];
    st->leaf_width = leaves->shape[1];
    for (int64_t i = 0; i < st->n_outputs; i++)
        if (!isfinite(st->base[i]))
            return bad(err, "section 'base_score' holds NaN or infinity at %lld", (long long)i);
    for (int64_t i = 0; i < st->n_leaves * st->leaf_width; i++)
        if (!isfinite(st->leaf_values[i]))
            return bad(err, "section 'leaf_values' holds NaN or infinity at leaf %lld", (long long)(i / st->leaf_width));

    const mls_section *cat_off = mls_model_find_section(m, "cat_offsets");
    const mls_section *cat_bits = mls_model_find_section(m, "cat_bits");
    if ((cat_off == NULL) != (cat_bits == NULL))
        return bad(err, "sections 'cat_offsets' and 'cat_bits' go together");
    if (cat_off != NULL) {
        if (need(m, "cat_offsets", MLS_DTYPE_INT64, -1, err) == NULL ||
            need(m, "cat_bits", MLS_DTYPE_UINT8, -1, err) == NULL)
            return MLS_STATUS_ERR_FORMAT;
        st->cat_offsets = cat_off->data;
        st->n_sets = cat_off->shape[0] - 1;
        st->cat_bits = cat_bits->data;
        if (st->n_sets < 1 || st->cat_offsets[0] != 0 ||
            st->cat_offsets[st->n_sets] != cat_bits->shape[0])
            return bad(err,
                       "section 'cat_offsets' must start at 0 and end at the %lld bytes of "
                       "'cat_bits'", (long long)cat_bits->shape[0]);
        for (int64_t s = 0; s < st->n_sets; s++)
            if (st->cat_offsets[s + 1] < st->cat_offsets[s])
                return bad(err, "section 'cat_offsets' decreases at %lld", (long long)s);
    }
    const mls_section *classes = mls_model_find_section(m, "classes");
    if (classes != NULL) {
        if (st->n_classes == 0 || classes->ndim != 1 || classes->shape[0] != st->n_classes ||
            (classes->dtype != MLS_DTYPE_INT64 && classes->dtype != MLS_DTYPE_FLOAT64))
            return bad(err,
                       "section 'classes' must be int64 or float64 of shape (%lld,) and only "
                       "in a classifier", (long long)st->n_classes);
        st->classes = classes;
    }
    return MLS_STATUS_OK;
}

/* Every index a walk can follow is checked here: trees, children (forward
 * only, so a walk ends), features, leaves, output columns, category sets. */
static mls_status init_nodes(tree_state *st, mls_error *err)
{
    const int64_t *off = st->offsets;
    if (off[0] != 0 || off[st->n_trees] != st->n_nodes)
        return bad(err, "section 'tree_offsets' must start at 0 and end at %lld nodes, got %lld", (long long)st->n_nodes, (long long)off[st->n_trees]);
    st->depth = calloc((size_t)st->n_trees, sizeof(int32_t));
    st->min_depth = calloc((size_t)st->n_trees, sizeof(int32_t));
    st->count = calloc((size_t)st->n_outputs, sizeof(double));
    int32_t *node_depth = malloc((size_t)st->n_nodes * sizeof(int32_t));
    if (st->depth == NULL || st->min_depth == NULL || st->count == NULL || node_depth == NULL) {
        free(node_depth);
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory validating a tree model");
    }
    mls_status status = MLS_STATUS_OK;
    int special = 0;
    for (int64_t t = 0; t < st->n_trees && status == MLS_STATUS_OK; t++) {
        int64_t begin = off[t], end = off[t + 1];
        if (end <= begin || end > st->n_nodes) {
            status = bad(err, "section 'tree_offsets': tree %lld has node range [%lld, ...) that is "
                              "empty, decreasing or past the nodes", (long long)t, (long long)begin);
            break;
        }
        int64_t col = st->tree_output[t];
        if (col < 0 || col + st->leaf_width > st->n_outputs) {
            status = bad(err, "section 'tree_output': tree %lld adds to output %lld, out of range "
                              "for %lld outputs", (long long)t, (long long)col, (long long)st->n_outputs);
            break;
        }
        st->count[col] += 1;
        int64_t size = end - begin;
        int32_t max_depth = 0, min_depth = INT32_MAX;
        for (int64_t i = 0; i < size; i++) node_depth[begin + i] = 0;
        for (int64_t i = 0; i < size; i++) {
            int64_t g = begin + i;
            int32_t f = st->feature[g];
            int64_t c = st->child[g];
            unsigned fl = st->flags[g];
            if (fl & ~FLAG_KNOWN_) {
                status = bad(err, "node %lld has unknown flags 0x%llx", (long long)g, (long long)fl);
                break;
            }
            if (f < 0) {
                if (f != -1 || c < 0 || c >= st->n_leaves) {
                    status = bad(err, "leaf node %lld points to leaf row %lld of %lld", (long long)g, (long long)c, (long long)st->n_leaves);
                    break;
                }
                if (node_depth[g] > max_depth) max_depth = node_depth[g];
                if (node_depth[g] < min_depth) min_depth = node_depth[g];
                continue;
            }
            if (f >= st->n_features) {
                status = bad(err, "node %lld splits on feature %lld; the model has %lld features", (long long)g, (long long)f, (long long)st->n_features);
                break;
            }
            if (c <= i || c + 1 >= size) {
                status = bad(err, "node %lld (tree %lld) has left child %lld: children must come "
                                  "after their parent, inside the tree", (long long)g, (long long)t, (long long)c);
                break;
            }
            double thr = threshold_at(st, g);
            if (fl & FLAG_CATEGORICAL) {
                if (st->cat_offsets == NULL || !(thr >= 0) || thr >= (double)st->n_sets ||
                    thr != floor(thr)) {
                    status = bad(err, "categorical node %lld names category set %lld of %lld", (long long)g, (long long)(thr >= 0 && thr < 1e18 ? thr : -1), (long long)st->n_sets);
                    break;
                }
                special = 1;
            } else if (isnan(thr)) {
                status = bad(err, "node %lld has a NaN threshold", (long long)g);
                break;
            }
            if (fl & FLAG_ZERO_MISSING) special = 1;
            int32_t d = node_depth[g] + 1;
            if (node_depth[begin + c] < d) node_depth[begin + c] = d;
            if (node_depth[begin + c + 1] < d) node_depth[begin + c + 1] = d;
        }
        st->depth[t] = max_depth;
        st->min_depth[t] = min_depth == INT32_MAX ? 0 : min_depth;
        st->total_depth += max_depth;
    }
    free(node_depth);
    if (status != MLS_STATUS_OK) return status;
    if (st->aggregate == AGG_MEAN)
        for (int64_t j = 0; j < st->n_outputs; j++)
            if (st->count[j] == 0 && st->leaf_width == 1)
                return bad(err, "output %lld receives no tree, so its mean is undefined", (long long)j);
    if (st->leaf_width > 1) /* each tree adds to all its columns */
        for (int64_t t = 0; t < st->n_trees; t++)
            for (int64_t k = 1; k < st->leaf_width; k++) st->count[st->tree_output[t] + k] += 1;
    if (st->aggregate == AGG_MEAN)
        for (int64_t j = 0; j < st->n_outputs; j++)
            if (st->count[j] == 0)
                return bad(err, "output %lld receives no tree, so its mean is undefined", (long long)j);
    if (special) st->reference = 1;
    return MLS_STATUS_OK;
}

/* The fast walker's packed nodes; leaves loop onto themselves. */
static mls_status init_fast_nodes(tree_state *st, mls_error *err)
{
    size_t esize = st->thr_f32 ? sizeof(node32) : sizeof(node64);
    st->fast_nodes = malloc((size_t)st->n_nodes * esize);
    if (st->fast_nodes == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory for %lld tree nodes",
                             (long long)st->n_nodes);
    for (int64_t t = 0; t < st->n_trees; t++) {
        int64_t begin = st->offsets[t];
        for (int64_t g = begin; g < st->offsets[t + 1]; g++) {
            int leaf = st->feature[g] < 0;
            uint32_t fd = leaf ? 0u
                               : (uint32_t)st->feature[g] |
                                     ((st->flags[g] & FLAG_DEFAULT_LEFT) ? 0u : 0x80000000u);
            int32_t next = (int32_t)(leaf ? g : begin + st->child[g]);
            if (st->thr_f32) {
                node32 *n = (node32 *)st->fast_nodes + g;
                n->thr = leaf ? NAN : ((const float *)st->threshold)[g];
                n->fd = fd;
                n->next = next;
            } else {
                node64 *n = (node64 *)st->fast_nodes + g;
                n->thr = leaf ? NAN : ((const double *)st->threshold)[g];
                n->fd = fd;
                n->next = next;
            }
        }
    }
    return MLS_STATUS_OK;
}

static int cmp_int64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Steps a row walk takes at most, ROW_GROUP trees at a time in `order`. */
static int64_t group_steps(const tree_state *st, const int32_t *order)
{
    int64_t steps = 0;
    for (int64_t c0 = 0; c0 < st->n_trees; c0 += MLS_TREE_SIMD_CHUNK) {
        int64_t ce = st->n_trees - c0 < MLS_TREE_SIMD_CHUNK ? st->n_trees : c0 + MLS_TREE_SIMD_CHUNK;
        for (int64_t t0 = c0; t0 < ce; t0 += MLS_TREE_SIMD_ROW_GROUP) {
            int32_t d = 0;
            for (int64_t t = t0; t < ce && t < t0 + MLS_TREE_SIMD_ROW_GROUP; t++)
                if (st->depth[order[t]] > d) d = st->depth[order[t]];
            steps += d;
        }
    }
    return steps;
}

/* Trees of unequal depths: the row kernels walk each chunk of trees sorted
 * by depth (then index), if that saves at least 10% of their steps. */
static mls_status init_simd_order(tree_state *st, mls_error *err)
{
    const int64_t T = st->n_trees;
    int64_t *keys = malloc((size_t)T * sizeof(int64_t));
    st->order_buf = malloc((size_t)T * 4 * sizeof(int32_t));
    if (keys == NULL || st->order_buf == NULL) {
        free(keys);
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory for %lld trees",
                             (long long)T);
    }
    int32_t *order = st->order_buf;
    for (int64_t t = 0; t < T; t++) order[t] = (int32_t)t;
    const int64_t before = group_steps(st, order);
    for (int64_t c0 = 0; c0 < T; c0 += MLS_TREE_SIMD_CHUNK) {
        int64_t ce = T - c0 < MLS_TREE_SIMD_CHUNK ? T : c0 + MLS_TREE_SIMD_CHUNK;
        for (int64_t t = c0; t < ce; t++) keys[t] = ((int64_t)st->depth[t] << 32) | t;
        qsort(keys + c0, (size_t)(ce - c0), sizeof(int64_t), cmp_int64);
        for (int64_t t = c0; t < ce; t++) order[t] = (int32_t)(keys[t] & 0xffffffff);
    }
    free(keys);
    if (group_steps(st, order) * 10 > before * 9) { /* not worth a second order */
        free(st->order_buf);
        st->order_buf = NULL;
        return MLS_STATUS_OK;
    }
    int32_t *root2 = order + T, *depth = order + 2 * T, *min_depth = order + 3 * T;
    for (int64_t t = 0; t < T; t++) {
        root2[t] = st->root2[order[t]];
        depth[t] = st->depth[order[t]];
        min_depth[t] = st->min_depth[order[t]];
    }
    st->simd.order = order;
    st->simd.order_root2 = root2;
    st->simd.order_depth = depth;
    st->simd.order_min_depth = min_depth;
    return MLS_STATUS_OK;
}

/* The SIMD walker's packed nodes (layout in mls_tree_simd.h), built from the
 * sections init_nodes validated: children and features are in range, so
 * every gather index stays inside nodes (< n_nodes) and the row
 * (< n_features). pos2 = 2 * index must fit in int32. */
static mls_status init_simd_nodes(tree_state *st, int isa, mls_error *err)
{
    if (st->n_nodes >= ((int64_t)1 << 30)) return MLS_STATUS_OK; /* scalar walker */
    st->simd_nodes = calloc((size_t)st->n_nodes, 16);
    st->root2 = malloc((size_t)st->n_trees * sizeof(int32_t));
    if (st->simd_nodes == NULL || st->root2 == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory for %lld tree nodes",
                             (long long)st->n_nodes);
    for (int64_t t = 0; t < st->n_trees; t++) {
        int64_t begin = st->offsets[t];
        st->root2[t] = (int32_t)(2 * begin);
        for (int64_t g = begin; g < st->offsets[t + 1]; g++) {
            int leaf = st->feature[g] < 0;
            uint32_t fd = leaf ? 0u
                               : (uint32_t)st->feature[g] |
                                     ((st->flags[g] & FLAG_DEFAULT_LEFT) ? 0u : 0x80000000u);
            int32_t next2 = (int32_t)(2 * (leaf ? g : begin + st->child[g]));
            int32_t row = leaf ? st->child[g] : 0; /* in [0, n_leaves): init_nodes */
            char *n = (char *)st->simd_nodes + 16 * g;
            if (st->thr_f32) {
                float thr = leaf ? NAN : ((const float *)st->threshold)[g];
                memcpy(n, &thr, 4);
                memcpy(n + 4, &fd, 4);
                memcpy(n + 8, &next2, 4);
                memcpy(n + 12, &row, 4);
            } else {
                double thr = ((const double *)st->threshold)[g];
                uint64_t nan_row = UINT64_C(0x7ff8000000000000) | (uint32_t)row;
                if (leaf)
                    memcpy(n, &nan_row, 8);
                else
                    memcpy(n, &thr, 8);
                memcpy(n + 8, &fd, 4);
                memcpy(n + 12, &next2, 4);
            }
        }
    }
    st->simd = (mls_tree_simd){
        .nodes = st->simd_nodes,
        .root2 = st->root2,
        .depth = st->depth,
        .min_depth = st->min_depth,
        .tree_output = st->tree_output,
        .leaf_values = st->leaf_values,
        .n_trees = st->n_trees,
        .n_outputs = st->n_outputs,
        .leaf_width = st->leaf_width,
        .n_features = st->n_features,
        .thr_f32 = st->thr_f32,
        .lt = st->compare == CMP_LT,
        .isa = isa,
    };
    return init_simd_order(st, err);
}

static void tree_release(mls_model *m)
{
    tree_state *st = m->state;
    if (st != NULL) {
        free(st->count);
        free(st->depth);
        free(st->min_depth);
        free(st->fast_nodes);
        free(st->simd_nodes);
        free(st->root2);
        free(st->order_buf);
        free(st);
    }
    m->state = NULL;
}

static mls_status tree_init(mls_model *m, mls_error *err)
{
    tree_state *st = calloc(1, sizeof(*st));
    if (st == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory");
    m->state = st;
    mls_status s = init_config(m, st, err);
    if (s == MLS_STATUS_OK) s = init_sections(m, st, err);
    if (s == MLS_STATUS_OK) s = init_nodes(st, err);
    int isa = st->reference || st->engine == ENGINE_SCALAR ? MLS_TREE_ISA_NONE : mls_tree_simd_isa();
    if (st->engine == ENGINE_AVX2 && isa > MLS_TREE_ISA_AVX2) isa = MLS_TREE_ISA_AVX2;
    if (s == MLS_STATUS_OK && isa != MLS_TREE_ISA_NONE) s = init_simd_nodes(st, isa, err);
    if (s == MLS_STATUS_OK && !st->reference && st->simd.isa == MLS_TREE_ISA_NONE)
        s = init_fast_nodes(st, err);
    return s;
}

static mls_status tree_output_spec(const mls_model *m, mls_method method, mls_output_spec *spec,
                                   mls_error *err)
{
    const tree_state *st = m->state;
    switch (method) {
    case MLS_METHOD_PREDICT:
        if (st->n_classes > 0) {
            spec->ndim = 1;
            spec->cols = 1;
            spec->dtype = st->classes ? st->classes->dtype : MLS_DTYPE_INT64;
        } else {
            spec->ndim = st->n_outputs == 1 ? 1 : 2;
            spec->cols = st->n_outputs;
            spec->dtype = m->dtype;
        }
        return MLS_STATUS_OK;
    case MLS_METHOD_PREDICT_PROBA:
        if (st->n_classes == 0)
            return mls_error_set(err, MLS_STATUS_ERR_UNSUPPORTED,
                                 "a tree ensemble regressor has no predict_proba");
        spec->ndim = 2;
        spec->cols = st->n_classes;
        spec->dtype = m->dtype;
        return MLS_STATUS_OK;
    case MLS_METHOD_DECISION_FUNCTION:
        spec->ndim = st->n_outputs == 1 ? 1 : 2;
        spec->cols = st->n_outputs;
        spec->dtype = m->dtype;
        return MLS_STATUS_OK;
    default:
        return mls_error_set(err, MLS_STATUS_ERR_UNSUPPORTED, "unknown method %d", (int)method);
    }
}

/* ---- the reference walker -------------------------------------------------- */

static int ref_category_left(const tree_state *st, int64_t g, double v, unsigned fl)
{
    if (isnan(v)) return (fl & FLAG_DEFAULT_LEFT) != 0;
    int oor_left = (fl & FLAG_CAT_OOR_LEFT) != 0;
    if ((fl & FLAG_CAT_STRICT) && (v < 0 || v != floor(v))) return oor_left;
    if (!(v > -1.0) || !(v < 2147483648.0)) return oor_left; /* truncates below 0 or overflows */
    int64_t c = (int64_t)v; /* toward zero, as C's (int) cast in LightGBM */
    int64_t set = (int64_t)threshold_at(st, g);
    int64_t lo = st->cat_offsets[set], nbytes = st->cat_offsets[set + 1] - lo;
    if (c >= nbytes * 8) return oor_left;
    return (st->cat_bits[lo + c / 8] >> (c % 8)) & 1;
}

/* Leaf row that tree t gives the row x (doubles, the input widened). */
static int64_t ref_walk(const tree_state *st, int64_t t, const double *x)
{
    const int64_t begin = st->offsets[t];
    int64_t i = 0;
    for (;;) { /* i grows at every step and stays inside the tree (init) */
        const int64_t g = begin + i;
        const int32_t f = st->feature[g];
        if (f < 0) return st->child[g];
        double v = st->thr_f32 ? (double)(float)x[f] : x[f];
        unsigned fl = st->flags[g];
        int left;
        if (fl & FLAG_CATEGORICAL) {
            left = ref_category_left(st, g, v, fl);
        } else if (isnan(v) ||
                   ((fl & FLAG_ZERO_MISSING) && v >= -ZERO_THRESHOLD && v <= ZERO_THRESHOLD)) {
            left = (fl & FLAG_DEFAULT_LEFT) != 0;
        } else {
            double thr = threshold_at(st, g);
            left = st->compare == CMP_LT ? v < thr : v <= thr;
        }
        i = st->child[g] + (left ? 0 : 1);
    }
}

/* acc (rows x K) += leaves, rows of the block given as doubles. */
static void ref_block(const tree_state *st, const double *xd, int64_t rows, double *acc)
{
    const int64_t K = st->n_outputs, W = st->leaf_width, d = st->n_features;
    for (int64_t r = 0; r < rows; r++) {
        double *a = acc + r * K;
        for (int64_t t = 0; t < st->n_trees; t++) {
            const double *v = st->leaf_values + ref_walk(st, t, xd + r * d) * W;
            double *o = a + st->tree_output[t];
            for (int64_t k = 0; k < W; k++) o[k] += v[k];
        }
    }
}

/* ---- the fast walker -------------------------------------------------------- */

#define RIGHT_LE(x, t) ((x) > (t))
#define RIGHT_LT(x, t) ((x) >= (t))

#define STEP(NODES, POS, ROW, RIGHT)                                            \
    do {                                                                        \
        const __typeof__(*(NODES)) *nd_ = (NODES) + (POS);                      \
        const uint32_t fd_ = nd_->fd;                                           \
        const __typeof__(nd_->thr) x_ = (ROW)[fd_ & 0x7fffffffu];               \
        (POS) = nd_->next + (RIGHT(x_, nd_->thr) | ((x_ != x_) & (int)(fd_ >> 31))); \
    } while (0)

/* Rows without NaN skip the missing-value term (leaf thresholds are NaN,
 * so a leaf still stays put: every comparison with NaN is false). */
#define STEP_NONAN(NODES, POS, ROW, RIGHT)                                      \
    do {                                                                        \
        const __typeof__(*(NODES)) *nd_ = (NODES) + (POS);                      \
        const __typeof__(nd_->thr) x_ = (ROW)[nd_->fd & 0x7fffffffu];           \
        (POS) = nd_->next + RIGHT(x_, nd_->thr);                                \
    } while (0)

static inline void add_leaf(const tree_state *st, int32_t pos, double *o)
{
    const int64_t W = st->leaf_width;
    const double *v = st->leaf_values + (int64_t)st->child[pos] * W;
    if (W == 1) {
        o[0] += v[0];
    } else {
        for (int64_t k = 0; k < W; k++) o[k] += v[k];
    }
}

/* rows: pointers to the block's rows (already of the threshold's type).
 * Many rows: 8 rows walk each tree together. Few rows: 8 trees walk each
 * row together. Either way each row's leaves are added in tree order. */
#define DEFINE_FAST_BLOCK(SUFFIX, T, NODE_T, RIGHT, STEP)                                         \
    static void fast_block_##SUFFIX(const tree_state *st, const T *const *rows, int64_t n,   \
                                    double *acc)                                             \
    {                                                                                        \
        const NODE_T *nodes = (const NODE_T *)st->fast_nodes;                                \
        const int64_t K = st->n_outputs, n_trees = st->n_trees;                              \
        if (n >= LANES) {                                                                    \
            for (int64_t t = 0; t < n_trees; t++) {                                          \
                const int32_t root = (int32_t)st->offsets[t];                                \
                const int32_t depth = st->depth[t], min_depth = st->min_depth[t];            \
                double *acc_t = acc + st->tree_output[t];                                    \
                int64_t r = 0;                                                               \
                for (; r + LANES <= n; r += LANES) {                                         \
                    int32_t p[LANES];                                                        \
                    const T *const *rw = rows + r;                                           \
                    _Pragma("GCC unroll 16") for (int l = 0; l < LANES; l++) p[l] = root;    \
                    int32_t d = 0;                                                           \
                    for (; d < min_depth; d++) {                                             \
                        _Pragma("GCC unroll 16") for (int l = 0; l < LANES; l++)             \
                            STEP(nodes, p[l], rw[l], RIGHT);                                 \
                    }                                                                        \
                    for (; d < depth; d++) { /* stop once every lane sits on a leaf */       \
                        int32_t moved = 0;                                                   \
                        _Pragma("GCC unroll 16") for (int l = 0; l < LANES; l++) {           \
                            const int32_t old = p[l];                                        \
                            STEP(nodes, p[l], rw[l], RIGHT);                                 \
                            moved |= old ^ p[l];                                             \
                        }                                                                    \
                        if (!moved) break;                                                   \
                    }                                                                        \
                    for (int l = 0; l < LANES; l++) add_leaf(st, p[l], acc_t + (r + l) * K); \
                }                                                                            \
                for (; r < n; r++) {                                                         \
                    int32_t p = root;                                                        \
                    for (int32_t d = 0; d < depth; d++) STEP(nodes, p, rows[r], RIGHT);      \
                    add_leaf(st, p, acc_t + r * K);                                          \
                }                                                                            \
            }                                                                                \
            return;                                                                          \
        }                                                                                    \
        for (int64_t r = 0; r < n; r++) {                                                    \
            const T *row = rows[r];                                                          \
            double *a = acc + r * K;                                                         \
            int64_t t = 0;                                                                   \
            for (; t + LANES <= n_trees; t += LANES) {                                       \
                int32_t p[LANES];                                                            \
                int32_t depth = 0, min_depth = INT32_MAX;                                    \
                for (int l = 0; l < LANES; l++) {                                            \
                    p[l] = (int32_t)st->offsets[t + l];                                      \
                    if (st->depth[t + l] > depth) depth = st->depth[t + l];                  \
                    if (st->min_depth[t + l] < min_depth) min_depth = st->min_depth[t + l];  \
                }                                                                            \
                int32_t d = 0;                                                               \
                for (; d < min_depth; d++) {                                                 \
                    _Pragma("GCC unroll 16") for (int l = 0; l < LANES; l++)                 \
                        STEP(nodes, p[l], row, RIGHT);                                       \
                }                                                                            \
                for (; d < depth; d++) {                                                     \
                    int32_t moved = 0;                                                       \
                    _Pragma("GCC unroll 16") for (int l = 0; l < LANES; l++) {               \
                        const int32_t old = p[l];                                            \
                        STEP(nodes, p[l], row, RIGHT);                                       \
                        moved |= old ^ p[l];                                                 \
                    }                                                                        \
                    if (!moved) break;                                                       \
                }                                                                            \
                for (int l = 0; l < LANES; l++) add_leaf(st, p[l], a + st->tree_output[t + l]); \
            }                                                                                \
            for (; t < n_trees; t++) {                                                       \
                int32_t p = (int32_t)st->offsets[t];                                         \
                for (int32_t d = 0; d < st->depth[t]; d++) STEP(nodes, p, row, RIGHT);       \
                add_leaf(st, p, a + st->tree_output[t]);                                     \
            }                                                                                \
        }                                                                                    \
    }

DEFINE_FAST_BLOCK(f32_le, float, node32, RIGHT_LE, STEP)
DEFINE_FAST_BLOCK(f32_lt, float, node32, RIGHT_LT, STEP)
DEFINE_FAST_BLOCK(f64_le, double, node64, RIGHT_LE, STEP)
DEFINE_FAST_BLOCK(f64_lt, double, node64, RIGHT_LT, STEP)
DEFINE_FAST_BLOCK(f32_le_nonan, float, node32, RIGHT_LE, STEP_NONAN)
DEFINE_FAST_BLOCK(f32_lt_nonan, float, node32, RIGHT_LT, STEP_NONAN)
DEFINE_FAST_BLOCK(f64_le_nonan, double, node64, RIGHT_LE, STEP_NONAN)
DEFINE_FAST_BLOCK(f64_lt_nonan, double, node64, RIGHT_LT, STEP_NONAN)

/* ---- scores -> outputs ------------------------------------------------------ */

static inline void store_value(void *out, mls_dtype dtype, int64_t i, double v)
{
    if (dtype == MLS_DTYPE_FLOAT64)
        ((double *)out)[i] = v;
    else
        ((float *)out)[i] = (float)v;
}

static inline double sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }

/* raw: the block's scores after base and aggregate (n x K), overwritten. */
static void finish_block(const mls_model *m, const tree_state *st, mls_method method,
                         double *raw, int64_t n, int64_t row0, void *out)
{
    const int64_t K = st->n_outputs, C = st->n_classes;
    const mls_dtype dt = m->dtype;
    for (int64_t r = 0; r < n; r++) {
        double *z = raw + r * K;
        const int64_t i = row0 + r;
        if (method == MLS_METHOD_DECISION_FUNCTION) {
            for (int64_t j = 0; j < K; j++) store_value(out, dt, i * K + j, z[j]);
            continue;
        }
        if (C == 0) { /* regressor: link(raw) */
            for (int64_t j = 0; j < K; j++) {
                double v = z[j];
                if (st->link == LINK_LOGISTIC) v = sigmoid(v);
                else if (st->link == LINK_EXP) v = exp(v);
                store_value(out, dt, i * K + j, v);
            }
            continue;
        }
        /* classifier: probabilities into z (binary: z[0] = p1) */
        if (st->link == LINK_LOGISTIC) {
            z[0] = sigmoid(z[0]);
        } else if (st->link == LINK_SOFTMAX) {
            double zmax = z[0];
            for (int64_t j = 1; j < K; j++)
                if (z[j] > zmax) zmax = z[j];
            double sum = 0;
            for (int64_t j = 0; j < K; j++) {
                z[j] = exp(z[j] - zmax);
                sum += z[j];
            }
            for (int64_t j = 0; j < K; j++) z[j] /= sum;
        }
        if (method == MLS_METHOD_PREDICT_PROBA) {
            if (st->link == LINK_LOGISTIC) {
                store_value(out, dt, i * 2, 1.0 - z[0]);
                store_value(out, dt, i * 2 + 1, z[0]);
            } else {
                for (int64_t j = 0; j < K; j++) store_value(out, dt, i * K + j, z[j]);
            }
            continue;
        }
        int64_t best = 0;
        if (st->link == LINK_LOGISTIC) {
            best = z[0] > 1.0 - z[0];
        } else {
            for (int64_t j = 1; j < K; j++)
                if (z[j] > z[best]) best = j;
        }
        if (st->classes == NULL)
            ((int64_t *)out)[i] = best;
        else if (st->classes->dtype == MLS_DTYPE_INT64)
            ((int64_t *)out)[i] = ((const int64_t *)st->classes->data)[best];
        else
            ((double *)out)[i] = ((const double *)st->classes->data)[best];
    }
}

/* ---- driver: blocks of rows, optionally across threads -------------------- */

typedef struct tree_job {
    const mls_model *m;
    mls_method method;
    const mls_tensor *X;
    void *out;
    int64_t row_begin, row_end;
    mls_status status;
} tree_job;

static void run_rows(tree_job *job)
{
    const mls_model *m = job->m;
    const tree_state *st = m->state;
    const mls_tensor *X = job->X;
    const int64_t K = st->n_outputs, d = st->n_features;
    const int in64 = X->dtype == MLS_DTYPE_FLOAT64;
    /* the fast walker reads rows of the threshold type; the reference doubles */
    const int want64 = st->reference ? 1 : !st->thr_f32;
    const int copy = in64 != want64;
    const size_t esize = want64 ? sizeof(double) : sizeof(float);
    double acc_stack[BLOCK_ROWS * 4];
    const void *ptr_stack[BLOCK_ROWS];
    double *acc = acc_stack;
    void *conv = NULL;
    if (BLOCK_ROWS * K > (int64_t)(sizeof(acc_stack) / sizeof(double))) {
        acc = malloc((size_t)(BLOCK_ROWS * K) * sizeof(double));
        if (acc == NULL) goto nomem;
    }
    /* converted rows: on the stack for small batches (no allocation on the
     * single-row path), else one block's worth */
    double conv_stack[512];
    const int64_t cap = job->row_end - job->row_begin < BLOCK_ROWS ? job->row_end - job->row_begin
                                                                  : BLOCK_ROWS;
    if (copy || st->reference) {
        if ((size_t)(cap * d) * esize <= sizeof(conv_stack)) {
            conv = conv_stack;
        } else {
            conv = malloc((size_t)(cap * d) * esize);
            if (conv == NULL) goto nomem;
        }
    }
    for (int64_t r0 = job->row_begin; r0 < job->row_end; r0 += BLOCK_ROWS) {
        const int64_t n = job->row_end - r0 < BLOCK_ROWS ? job->row_end - r0 : BLOCK_ROWS;
        for (int64_t r = 0; r < n; r++) {
            const char *src = (const char *)X->data +
                              (size_t)((r0 + r) * X->row_stride) * (in64 ? 8 : 4);
            if (!copy && !st->reference) {
                ptr_stack[r] = src;
                continue;
            }
            if (want64) {
                double *dst = (double *)conv + r * d;
                if (in64)
                    memcpy(dst, src, (size_t)d * sizeof(double));
                else
                    for (int64_t j = 0; j < d; j++) dst[j] = ((const float *)src)[j];
                ptr_stack[r] = dst;
            } else {
                float *dst = (float *)conv + r * d;
                for (int64_t j = 0; j < d; j++) dst[j] = (float)((const double *)src)[j];
                ptr_stack[r] = dst;
            }
        }
        for (int64_t r = 0; r < n; r++)
            for (int64_t j = 0; j < K; j++) acc[r * K + j] = st->aggregate == AGG_SUM ? st->base[j] : 0.0;
        if (st->reference) {
            ref_block(st, conv, n, acc);
        } else if (st->simd.isa != MLS_TREE_ISA_NONE) {
            /* rows are equally spaced; the kernel's int32 gather offsets
             * reach (rows - 1) * stride + n_features: fewer rows per call
             * for very long rows (one row always fits) */
            const int64_t stride = copy ? d : X->row_stride;
            int64_t step = (INT32_MAX - d) / stride;
            if (step > n) step = n;
            if (step < 1) step = 1;
            for (int64_t r = 0; r < n; r += step)
                mls_tree_simd_block(&st->simd, ptr_stack[r], stride, n - r < step ? n - r : step,
                                    acc + r * K);
        } else if (st->thr_f32) {
            const float *const *rows = (const float *const *)ptr_stack;
            int has_nan = 0;
            for (int64_t r = 0; r < n && !has_nan; r++)
                for (int64_t j = 0; j < d; j++) has_nan |= rows[r][j] != rows[r][j];
            if (st->compare == CMP_LE)
                (has_nan ? fast_block_f32_le : fast_block_f32_le_nonan)(st, rows, n, acc);
            else
                (has_nan ? fast_block_f32_lt : fast_block_f32_lt_nonan)(st, rows, n, acc);
        } else {
            const double *const *rows = (const double *const *)ptr_stack;
            int has_nan = 0;
            for (int64_t r = 0; r < n && !has_nan; r++)
                for (int64_t j = 0; j < d; j++) has_nan |= rows[r][j] != rows[r][j];
            if (st->compare == CMP_LE)
                (has_nan ? fast_block_f64_le : fast_block_f64_le_nonan)(st, rows, n, acc);
            else
                (has_nan ? fast_block_f64_lt : fast_block_f64_lt_nonan)(st, rows, n, acc);
        }
        if (st->aggregate == AGG_MEAN)
            for (int64_t r = 0; r < n; r++)
                for (int64_t j = 0; j < K; j++)
                    acc[r * K + j] = acc[r * K + j] / st->count[j] + st->base[j];
        finish_block(m, st, job->method, acc, n, r0, job->out);
    }
    job->status = MLS_STATUS_OK;
    goto done;
nomem:
    job->status = MLS_STATUS_ERR_NOMEM;
done:
    if (acc != acc_stack) free(acc);
    if (conv != conv_stack) free(conv);
}

static void *run_rows_thread(void *arg)
{
    run_rows(arg);
    return NULL;
}

#define MAX_THREADS 64

static mls_status tree_predict(const mls_model *m, mls_method method, const mls_tensor *X,
                               void *out, mls_error *err)
{
    const tree_state *st = m->state;
    int64_t threads = mls_blas_get_num_threads();
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    /* enough work per thread to pay for starting it */
    int64_t steps = X->rows * (st->total_depth + st->n_trees);
    if (threads > steps / THREAD_MIN_STEPS) threads = steps / THREAD_MIN_STEPS;
    if (threads > (X->rows + BLOCK_ROWS - 1) / BLOCK_ROWS)
        threads = (X->rows + BLOCK_ROWS - 1) / BLOCK_ROWS;
    if (threads < 1) threads = 1;
    tree_job jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    int64_t blocks = (X->rows + BLOCK_ROWS - 1) / BLOCK_ROWS;
    for (int64_t i = 0; i < threads; i++) {
        jobs[i] = (tree_job){m, method, X, out, 0, 0, MLS_STATUS_OK};
        jobs[i].row_begin = (blocks * i / threads) * BLOCK_ROWS;
        jobs[i].row_end = (blocks * (i + 1) / threads) * BLOCK_ROWS;
        if (jobs[i].row_end > X->rows) jobs[i].row_end = X->rows;
    }
    for (int64_t i = 1; i < threads; i++)
        started[i] = pthread_create(&tids[i], NULL, run_rows_thread, &jobs[i]) == 0;
    run_rows(&jobs[0]);
    for (int64_t i = 1; i < threads; i++) {
        if (started[i])
            pthread_join(tids[i], NULL);
        else
            run_rows(&jobs[i]); /* could not start a thread: do its share here */
    }
    for (int64_t i = 0; i < threads; i++)
        if (jobs[i].status != MLS_STATUS_OK)
            return mls_error_set(err, jobs[i].status, "out of memory for prediction scratch");
    return MLS_STATUS_OK;
}

const mls_model_vtable mls_tree_ensemble_vtable = {
    .kind = MLS_KIND_TREE_ENSEMBLE,
    .name = "tree_ensemble",
    .init = tree_init,
    .output_spec = tree_output_spec,
    .predict = tree_predict,
    .release_state = tree_release,
};
