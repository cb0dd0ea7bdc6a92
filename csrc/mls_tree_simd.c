/* mls_tree_simd.c: the tree walk with AVX2 / AVX-512 gathers (layout and
 * contract in mls_tree_simd.h).
 *
 * A separate file because these kernels are compiled per function for ISAs
 * that setup.py does not enable (it builds without -march, so the library
 * runs on any x86-64); each kernel carries its own target attribute and
 * mls_tree.c picks one at load time with __builtin_cpu_supports. Off x86 the
 * file compiles to stubs and the scalar walker in mls_tree.c does the work.
 *
 * One step of V walks gathers the current nodes' threshold, feature and
 * left child (AVX-512 gathers cost about a load per element, so two 4-byte
 * fields come as one 8-byte element), then the features' values, and
 * compares:
 *     next = left + (x > t || (isnan(x) && nan_right))    (x >= t for `<`)
 * the same rule, with the same ordered compares, as the scalar walker, so
 * results are bit-identical. Walks go in groups, several vectors in flight,
 * so one vector's gathers overlap another's. Few rows: each row walks 64
 * trees at a time, and with AVX-512 a row of up to 64 float32 (32 float64)
 * features sits in four registers, so a feature's value is a permute, not a
 * gather. Many rows: 32 rows walk one tree, whose top nodes stay in cache.
 * Lanes past the last tree or row repeat the last one and are not added.
 * After the walk each lane reads its leaf's row from the node it stopped on
 * (a cache line just visited). Leaves are added per row in tree order, as
 * the scalar walker does; a one-output model keeps its sum in a register.
 */
#include "mls_tree_simd.h"

#include <stddef.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define MLS_TREE_HAVE_X86 1
#include <immintrin.h>
#endif

#define GROUP 32     /* walks in flight per group: rows of one tree */
#define ROW_GROUP MLS_TREE_SIMD_ROW_GROUP

#ifdef MLS_TREE_HAVE_X86

int mls_tree_simd_isa(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
        return MLS_TREE_ISA_AVX512;
    if (__builtin_cpu_supports("avx2")) return MLS_TREE_ISA_AVX2;
    return MLS_TREE_ISA_NONE;
}

#define TGT512 __attribute__((target("avx512f,avx512vl,avx2")))
#define TGT256 __attribute__((target("avx2")))
#define INLINE static inline __attribute__((always_inline))

/* ---- one step, per ISA and threshold type ---------------------------------- */

/* AVX-512 gathers cost about one load per element, so the node's first 8
 * bytes (threshold and fd for float32; fd and next2 for float64) come in as
 * one 64-bit element per lane and are split with permutes. */
INLINE TGT512 __m512i step_512_f32(const char *nodes, const void *x, __m512i pos, __m512i xoff,
                                   int lt)
{
    const __m512i sign = _mm512_set1_epi32(INT32_MIN);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i q0 = _mm512_i32gather_epi64(_mm512_castsi512_si256(pos), nodes, 8);
    const __m512i q1 = _mm512_i32gather_epi64(_mm512_extracti64x4_epi64(pos, 1), nodes, 8);
    const __m512 thr = _mm512_castsi512_ps(_mm512_permutex2var_epi32(q0, even, q1));
    const __m512i fd = _mm512_permutex2var_epi32(q0, odd, q1);
    const __m512i nx = _mm512_i32gather_epi32(pos, nodes + 8, 8);
    const __m512i f = _mm512_add_epi32(_mm512_andnot_si512(sign, fd), xoff);
    const __m512 v = _mm512_i32gather_ps(f, x, 4);
    /* one compare per predicate: it must be a compile-time constant (clang insists) */
    __mmask16 right = (lt ? _mm512_cmp_ps_mask(v, thr, _CMP_GE_OQ)
        : _mm512_cmp_ps_mask(v, thr, _CMP_GT_OQ));
    right |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) & _mm512_test_epi32_mask(fd, sign);
    return _mm512_mask_add_epi32(nx, right, nx, _mm512_set1_epi32(2));
}

INLINE TGT512 __m256i step_512_f64(const char *nodes, const void *x, __m256i pos, __m256i xoff,
                                   int lt)
{
    const __m256i sign = _mm256_set1_epi32(INT32_MIN);
    const __m512d thr = _mm512_i32gather_pd(pos, nodes, 8);
    const __m512i q = _mm512_i32gather_epi64(pos, nodes + 8, 8); /* fd | next2 << 32 */
    const __m256i fd = _mm512_cvtepi64_epi32(q);
    const __m256i nx = _mm512_cvtepi64_epi32(_mm512_srli_epi64(q, 32));
    const __m256i f = _mm256_add_epi32(_mm256_andnot_si256(sign, fd), xoff);
    const __m512d v = _mm512_i32gather_pd(f, x, 8);
    __mmask8 right = (lt ? _mm512_cmp_pd_mask(v, thr, _CMP_GE_OQ)
        : _mm512_cmp_pd_mask(v, thr, _CMP_GT_OQ));
    right |= _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q) & _mm256_test_epi32_mask(fd, sign);
    return _mm256_mask_add_epi32(nx, right, nx, _mm256_set1_epi32(2));
}

INLINE TGT256 __m256i step_256_f32(const char *nodes, const void *x, __m256i pos, __m256i xoff,
                                   int lt)
{
    const __m256i sign = _mm256_set1_epi32(INT32_MIN);
    const __m256 thr = _mm256_i32gather_ps((const float *)nodes, pos, 8);
    const __m256i fd = _mm256_i32gather_epi32((const int *)(nodes + 4), pos, 8);
    const __m256i nx = _mm256_i32gather_epi32((const int *)(nodes + 8), pos, 8);
    const __m256i f = _mm256_add_epi32(_mm256_andnot_si256(sign, fd), xoff);
    const __m256 v = _mm256_i32gather_ps((const float *)x, f, 4);
    __m256 right = (lt ? _mm256_cmp_ps(v, thr, _CMP_GE_OQ)
        : _mm256_cmp_ps(v, thr, _CMP_GT_OQ));
    const __m256 nan = _mm256_and_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q), _mm256_castsi256_ps(fd));
    right = _mm256_or_ps(right, nan); /* sign bit set: go right */
    const __m256i two = _mm256_and_si256(_mm256_srai_epi32(_mm256_castps_si256(right), 31),
                                         _mm256_set1_epi32(2));
    return _mm256_add_epi32(nx, two);
}

INLINE TGT256 __m128i step_256_f64(const char *nodes, const void *x, __m128i pos, __m128i xoff,
                                   int lt)
{
    const __m128i sign = _mm_set1_epi32(INT32_MIN);
    const __m256d thr = _mm256_i32gather_pd((const double *)nodes, pos, 8);
    const __m128i fd = _mm_i32gather_epi32((const int *)(nodes + 8), pos, 8);
    const __m128i nx = _mm_i32gather_epi32((const int *)(nodes + 12), pos, 8);
    const __m128i f = _mm_add_epi32(_mm_andnot_si128(sign, fd), xoff);
    const __m256d v = _mm256_i32gather_pd((const double *)x, f, 8);
    /* 64-bit lane masks; the upper halves, narrowed to 32-bit lanes, are
     * all ones where the walk goes right (sign-extended fd: NaN goes right) */
    const __m256i nan = _mm256_and_si256(_mm256_castpd_si256(_mm256_cmp_pd(v, v, _CMP_UNORD_Q)),
                                         _mm256_cvtepi32_epi64(fd));
    const __m256i r = _mm256_or_si256(
        _mm256_castpd_si256((lt ? _mm256_cmp_pd(v, thr, _CMP_GE_OQ)
        : _mm256_cmp_pd(v, thr, _CMP_GT_OQ))), nan);
    const __m128i r32 = _mm256_castsi256_si128(
        _mm256_permutevar8x32_epi32(r, _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7)));
    const __m128i two = _mm_and_si128(r32, _mm_set1_epi32(2));
    return _mm_add_epi32(nx, two);
}

/* Leaf rows of the nodes at pos (leaves only): float32 nodes keep it in
 * their fourth word, float64 nodes in the low bits of their NaN threshold. */
INLINE TGT512 __m512i leaf_512_f32(const char *nodes, __m512i pos)
{
    return _mm512_i32gather_epi32(pos, nodes + 12, 8);
}
INLINE TGT512 __m256i leaf_512_f64(const char *nodes, __m256i pos)
{
    return _mm512_cvtepi64_epi32(_mm512_i32gather_epi64(pos, nodes, 8));
}
INLINE TGT256 __m256i leaf_256_f32(const char *nodes, __m256i pos)
{
    return _mm256_i32gather_epi32((const int *)(nodes + 12), pos, 8);
}
INLINE TGT256 __m128i leaf_256_f64(const char *nodes, __m128i pos)
{
    return _mm_i32gather_epi32((const int *)nodes, pos, 8); /* low half, little-endian */
}

/* ---- vector helpers per ISA ------------------------------------------------- */

#define LOAD_512(p) _mm512_loadu_si512((const void *)(p))
#define STORE_512(p, v) _mm512_storeu_si512((void *)(p), (v))
#define NEQ_512(a, b) (_mm512_cmpneq_epi32_mask((a), (b)) != 0)
#define LOAD_256(p) _mm256_loadu_si256((const __m256i *)(p))
#define STORE_256(p, v) _mm256_storeu_si256((__m256i *)(p), (v))
#define NEQ_256(a, b) (_mm256_movemask_epi8(_mm256_cmpeq_epi32((a), (b))) != -1)
#define LOAD_128(p) _mm_loadu_si128((const __m128i *)(p))
#define STORE_128(p, v) _mm_storeu_si128((__m128i *)(p), (v))
#define NEQ_128(a, b) (_mm_movemask_epi8(_mm_cmpeq_epi32((a), (b))) != 0xffff)

/* Walk NG walks from PINIT (an expression in g: vector g of the start
 * positions; OINIT: of the row offsets) for up to `depth` steps (every walk
 * ends within its tree's depth; all have moved for min_depth steps), then
 * store the leaf rows where they stopped in pos2. Every walk is on a leaf
 * then: after depth steps, or once no walk moved (a split always moves
 * forward). The starts are not loaded from arrays just written lane by lane:
 * such loads stall on store forwarding. */
#define WALK_GROUP(NG, IVEC, V, STORE, NEQ, STEP, LEAF, PINIT, OINIT, pos2, min_depth, depth) \
    do {                                                                                     \
        IVEC p_[(NG) / (V)], o_[(NG) / (V)];                                                 \
        _Pragma("GCC unroll 8") for (int g = 0; g < (NG) / (V); g++) {                       \
            p_[g] = (PINIT);                                                                   \
            o_[g] = (OINIT);                                                                   \
        }                                                                                    \
        int32_t d_ = 0;                                                                      \
        for (; d_ < (min_depth); d_++) {                                                     \
            _Pragma("GCC unroll 8") for (int g = 0; g < (NG) / (V); g++)                    \
                p_[g] = STEP(nodes, xb, p_[g], o_[g], lt);                                   \
        }                                                                                    \
        for (; d_ < (depth); d_++) { /* stop once every walk sits on a leaf */               \
            int moved_ = 0;                                                                  \
            _Pragma("GCC unroll 8") for (int g = 0; g < (NG) / (V); g++) {                  \
                IVEC q_ = STEP(nodes, xb, p_[g], o_[g], lt);                                 \
                moved_ |= NEQ(q_, p_[g]);                                                    \
                p_[g] = q_;                                                                  \
            }                                                                                \
            if (!moved_) break;                                                              \
        }                                                                                    \
        _Pragma("GCC unroll 8") for (int g = 0; g < (NG) / (V); g++)                        \
            STORE((pos2) + g * (V), LEAF(nodes, p_[g]));                                     \
    } while (0)

/* Many rows: GROUP rows walk tree t together, for every tree in order.
 * (Start vectors from lane-by-lane arrays here measured faster than from
 * broadcasts and a precomputed offset table, for float64 by 1.5x.) */
#define DEFINE_BATCH(NAME, TGT, IVEC, V, LOAD, STORE, NEQ, STEP, LEAF)                      \
    INLINE TGT void NAME##_impl(const mls_tree_simd *m, const void *x, int64_t stride,       \
                                int64_t n, double *acc, const int lt)                        \
    {                                                                                        \
        const char *nodes = (const char *)m->nodes;                                          \
        const int64_t K = m->n_outputs, W = m->leaf_width;                                   \
        const double *lv = m->leaf_values;                                                   \
        const void *xb = x;                                                                  \
        int32_t pos2[GROUP], xoff[GROUP];                                                    \
        for (int64_t t = 0; t < m->n_trees; t++) {                                           \
            double *acc_t = acc + m->tree_output[t];                                         \
            const int32_t root = m->root2[t];                                                \
            for (int64_t r = 0; r < n; r += GROUP) {                                         \
                const int64_t nv = n - r < GROUP ? n - r : GROUP;                            \
                for (int l = 0; l < GROUP; l++) {                                            \
                    pos2[l] = root;                                                          \
                    xoff[l] = (int32_t)((r + (l < nv ? l : nv - 1)) * stride);               \
                }                                                                            \
                WALK_GROUP(GROUP, IVEC, V, STORE, NEQ, STEP, LEAF, LOAD(pos2 + g * (V)),     \
                           LOAD(xoff + g * (V)), pos2, m->min_depth[t], m->depth[t]);        \
                if (W == 1) {                                                                \
                    for (int64_t l = 0; l < nv; l++) acc_t[(r + l) * K] += lv[pos2[l]];      \
                } else {                                                                     \
                    for (int64_t l = 0; l < nv; l++) {                                       \
                        const double *v_ = lv + (int64_t)pos2[l] * W;                        \
                        for (int64_t k = 0; k < W; k++) acc_t[(r + l) * K + k] += v_[k];     \
                    }                                                                        \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
    static TGT void NAME(const mls_tree_simd *m, const void *x, int64_t stride, int64_t n,   \
                         double *acc)                                                        \
    {                                                                                        \
        if (m->lt)                                                                           \
            NAME##_impl(m, x, stride, n, acc, 1);                                            \
        else                                                                                 \
            NAME##_impl(m, x, stride, n, acc, 0);                                            \
    }

/* a[...] += the leaves of trees t0 .. t0 + cnt - 1 (rows in lr), in tree order */
#define ADD_LEAVES(lr, t0, cnt)                                                              \
    do {                                                                                     \
        if (K == 1) { /* one sum: keep it in a register, not in memory */                    \
            double s_ = a[0];                                                                \
            for (int64_t l = 0; l < (cnt); l++) s_ += lv[(lr)[l]];                           \
            a[0] = s_;                                                                       \
        } else {                                                                             \
            for (int64_t l = 0; l < (cnt); l++) {                                            \
                const double *v_ = lv + (int64_t)(lr)[l] * W;                                \
                double *o_ = a + m->tree_output[(t0) + l];                                   \
                if (W == 1)                                                                  \
                    o_[0] += v_[0];                                                          \
                else                                                                         \
                    for (int64_t k = 0; k < W; k++) o_[k] += v_[k];                          \
            }                                                                                \
        }                                                                                    \
    } while (0)

/* Walk ROW_GROUP trees of one row: walk-order positions t0 .. t0 + nv - 1
 * of the arrays roots_, depth_, min_depth_; leaf rows to pos2. */
#define WALK_TREES(IVEC, V, LOAD, STORE, NEQ, STEP, LEAF, roots_, depth_, min_depth_, t0, nv)                                     \
    do {                                                                                     \
        int32_t depth = 0, min_depth = INT32_MAX;                                            \
        for (int64_t l = 0; l < (nv); l++) {                                                 \
            if ((depth_)[(t0) + l] > depth) depth = (depth_)[(t0) + l];                      \
            if ((min_depth_)[(t0) + l] < min_depth) min_depth = (min_depth_)[(t0) + l];      \
        }                                                                                    \
        const int32_t *roots = (roots_) + (t0);                                              \
        if ((nv) < ROW_GROUP) { /* the last trees: repeat the last one */                    \
            for (int l = 0; l < ROW_GROUP; l++) tail[l] = roots[l < (nv) ? l : (nv) - 1];    \
            roots = tail;                                                                    \
        }                                                                                    \
        WALK_GROUP(ROW_GROUP, IVEC, V, STORE, NEQ, STEP, LEAF, LOAD(roots + g * (V)), zero,  \
                   pos2, min_depth, depth);                                                  \
    } while (0)

/* Few rows: each row walks ROW_GROUP trees at a time. SETUP(xb) runs once per
 * row (the register kernels load the row into registers there). Trees of
 * unequal depths (m->order) are walked in groups of similar depth, chunk by
 * chunk, and their leaves added in tree order after each chunk. */
#define DEFINE_ROWS(NAME, TGT, IVEC, V, LOAD, STORE, SET1, NEQ, STEP, LEAF, SETUP, ESIZE)     \
    INLINE TGT void NAME##_impl(const mls_tree_simd *m, const void *x, int64_t stride,       \
                                int64_t n, double *acc, const int lt)                        \
    {                                                                                        \
        const char *nodes = (const char *)m->nodes;                                          \
        const int64_t K = m->n_outputs, W = m->leaf_width, T = m->n_trees;                   \
        const double *lv = m->leaf_values;                                                   \
        int32_t pos2[ROW_GROUP], tail[ROW_GROUP], chunk[MLS_TREE_SIMD_CHUNK];                \
        const IVEC zero = SET1(0);                                                           \
        for (int64_t r = 0; r < n; r++) {                                                    \
            const void *xb = (const char *)x + (size_t)(r * stride) * (ESIZE);               \
            SETUP(xb);                                                                       \
            double *a = acc + r * K;                                                         \
            if (m->order == NULL) {                                                          \
                for (int64_t t0 = 0; t0 < T; t0 += ROW_GROUP) {                              \
                    const int64_t nv = T - t0 < ROW_GROUP ? T - t0 : ROW_GROUP;              \
                    WALK_TREES(IVEC, V, LOAD, STORE, NEQ, STEP, LEAF, m->root2, m->depth,      \
                               m->min_depth, t0, nv);                    \
                    ADD_LEAVES(pos2, t0, nv);                                                \
                }                                                                            \
                continue;                                                                    \
            }                                                                                \
            for (int64_t c0 = 0; c0 < T; c0 += MLS_TREE_SIMD_CHUNK) {                        \
                const int64_t ce = T - c0 < MLS_TREE_SIMD_CHUNK ? T : c0 + MLS_TREE_SIMD_CHUNK; \
                for (int64_t t0 = c0; t0 < ce; t0 += ROW_GROUP) {                            \
                    const int64_t nv = ce - t0 < ROW_GROUP ? ce - t0 : ROW_GROUP;            \
                    WALK_TREES(IVEC, V, LOAD, STORE, NEQ, STEP, LEAF, m->order_root2,      \
                               m->order_depth, m->order_min_depth, t0, nv);  \
                    for (int64_t l = 0; l < nv; l++) chunk[m->order[t0 + l] - c0] = pos2[l]; \
                }                                                                            \
                ADD_LEAVES(chunk, c0, ce - c0);                                              \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
    static TGT void NAME(const mls_tree_simd *m, const void *x, int64_t stride, int64_t n,   \
                         double *acc)                                                        \
    {                                                                                        \
        if (m->lt)                                                                           \
            NAME##_impl(m, x, stride, n, acc, 1);                                            \
        else                                                                                 \
            NAME##_impl(m, x, stride, n, acc, 0);                                            \
    }

#define NO_SETUP(xb) (void)0

/* One row in four registers (64 float32 or 32 float64 features): a feature
 * value is a permute instead of a gather. Registers past the row hold 0 and
 * are never selected (features are < n_features, checked at load). */
#define SETUP_REG_F32(xb)                                                                    \
    __m512 xr0, xr1, xr2, xr3;                                                               \
    do {                                                                                     \
        const float *xf_ = (const float *)(xb);                                              \
        const int64_t d_ = m->n_features;                                                    \
        xr0 = _mm512_maskz_loadu_ps(mask16(d_), xf_);                                        \
        xr1 = _mm512_maskz_loadu_ps(mask16(d_ - 16), xf_ + 16);                              \
        xr2 = _mm512_maskz_loadu_ps(mask16(d_ - 32), xf_ + 32);                              \
        xr3 = _mm512_maskz_loadu_ps(mask16(d_ - 48), xf_ + 48);                              \
    } while (0)
#define SETUP_REG_F64(xb)                                                                    \
    __m512d xr0, xr1, xr2, xr3;                                                              \
    do {                                                                                     \
        const double *xd_ = (const double *)(xb);                                            \
        const int64_t d_ = m->n_features;                                                    \
        xr0 = _mm512_maskz_loadu_pd((__mmask8)mask16(d_), xd_);                              \
        xr1 = _mm512_maskz_loadu_pd((__mmask8)mask16(d_ - 8), xd_ + 8);                      \
        xr2 = _mm512_maskz_loadu_pd((__mmask8)mask16(d_ - 16), xd_ + 16);                    \
        xr3 = _mm512_maskz_loadu_pd((__mmask8)mask16(d_ - 24), xd_ + 24);                    \
    } while (0)
#define STEP_REG_F32(nodes, xb, p, o, lt) ((void)(o), step_512_f32_reg(nodes, xr0, xr1, xr2, xr3, p, lt))
#define STEP_REG_F64(nodes, xb, p, o, lt) ((void)(o), step_512_f64_reg(nodes, xr0, xr1, xr2, xr3, p, lt))

/* Lanes 0 .. k-1 of 16 (k <= 0: none, k >= 16: all). */
INLINE TGT512 __mmask16 mask16(int64_t k)
{
    return k <= 0 ? 0 : k >= 16 ? 0xffff : (__mmask16)((1u << k) - 1);
}

INLINE TGT512 __m512i step_512_f32_reg(const char *nodes, __m512 r0, __m512 r1, __m512 r2,
                                       __m512 r3, __m512i pos, int lt)
{
    const __m512i sign = _mm512_set1_epi32(INT32_MIN);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i q0 = _mm512_i32gather_epi64(_mm512_castsi512_si256(pos), nodes, 8);
    const __m512i q1 = _mm512_i32gather_epi64(_mm512_extracti64x4_epi64(pos, 1), nodes, 8);
    const __m512 thr = _mm512_castsi512_ps(_mm512_permutex2var_epi32(q0, even, q1));
    const __m512i fd = _mm512_permutex2var_epi32(q0, odd, q1);
    const __m512i nx = _mm512_i32gather_epi32(pos, nodes + 8, 8);
    const __m512 lo = _mm512_permutex2var_ps(r0, fd, r1); /* uses bits 0-4 of fd */
    const __m512 hi = _mm512_permutex2var_ps(r2, fd, r3);
    const __m512 v = _mm512_mask_blend_ps(_mm512_test_epi32_mask(fd, _mm512_set1_epi32(32)), lo, hi);
    __mmask16 right = (lt ? _mm512_cmp_ps_mask(v, thr, _CMP_GE_OQ)
        : _mm512_cmp_ps_mask(v, thr, _CMP_GT_OQ));
    right |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) & _mm512_test_epi32_mask(fd, sign);
    return _mm512_mask_add_epi32(nx, right, nx, _mm512_set1_epi32(2));
}

INLINE TGT512 __m256i step_512_f64_reg(const char *nodes, __m512d r0, __m512d r1, __m512d r2,
                                       __m512d r3, __m256i pos, int lt)
{
    const __m256i sign = _mm256_set1_epi32(INT32_MIN);
    const __m512d thr = _mm512_i32gather_pd(pos, nodes, 8);
    const __m512i q = _mm512_i32gather_epi64(pos, nodes + 8, 8); /* fd | next2 << 32 */
    const __m512i f = _mm512_and_si512(q, _mm512_set1_epi64(0x7fffffff));
    const __m256i fd = _mm512_cvtepi64_epi32(q);
    const __m256i nx = _mm512_cvtepi64_epi32(_mm512_srli_epi64(q, 32));
    const __m512d lo = _mm512_permutex2var_pd(r0, f, r1); /* uses bits 0-3 of f */
    const __m512d hi = _mm512_permutex2var_pd(r2, f, r3);
    const __m512d v = _mm512_mask_blend_pd(_mm512_test_epi64_mask(f, _mm512_set1_epi64(16)), lo, hi);
    __mmask8 right = (lt ? _mm512_cmp_pd_mask(v, thr, _CMP_GE_OQ)
        : _mm512_cmp_pd_mask(v, thr, _CMP_GT_OQ));
    right |= _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q) & _mm256_test_epi32_mask(fd, sign);
    return _mm256_mask_add_epi32(nx, right, nx, _mm256_set1_epi32(2));
}

DEFINE_BATCH(batch_512_f32, TGT512, __m512i, 16, LOAD_512, STORE_512, NEQ_512, step_512_f32, leaf_512_f32)
DEFINE_BATCH(batch_512_f64, TGT512, __m256i, 8, LOAD_256, STORE_256, NEQ_256, step_512_f64, leaf_512_f64)
DEFINE_BATCH(batch_256_f32, TGT256, __m256i, 8, LOAD_256, STORE_256, NEQ_256, step_256_f32, leaf_256_f32)
DEFINE_BATCH(batch_256_f64, TGT256, __m128i, 4, LOAD_128, STORE_128, NEQ_128, step_256_f64, leaf_256_f64)
DEFINE_ROWS(rows_512_f32, TGT512, __m512i, 16, LOAD_512, STORE_512, _mm512_set1_epi32, NEQ_512, step_512_f32, leaf_512_f32,
            NO_SETUP, 4)
DEFINE_ROWS(rows_512_f64, TGT512, __m256i, 8, LOAD_256, STORE_256, _mm256_set1_epi32, NEQ_256, step_512_f64, leaf_512_f64,
            NO_SETUP, 8)
DEFINE_ROWS(rows_512_f32_reg, TGT512, __m512i, 16, LOAD_512, STORE_512, _mm512_set1_epi32, NEQ_512, STEP_REG_F32, leaf_512_f32,
            SETUP_REG_F32, 4)
DEFINE_ROWS(rows_512_f64_reg, TGT512, __m256i, 8, LOAD_256, STORE_256, _mm256_set1_epi32, NEQ_256, STEP_REG_F64, leaf_512_f64,
            SETUP_REG_F64, 8)
DEFINE_ROWS(rows_256_f32, TGT256, __m256i, 8, LOAD_256, STORE_256, _mm256_set1_epi32, NEQ_256, step_256_f32, leaf_256_f32,
            NO_SETUP, 4)
DEFINE_ROWS(rows_256_f64, TGT256, __m128i, 4, LOAD_128, STORE_128, _mm_set1_epi32, NEQ_128, step_256_f64, leaf_256_f64,
            NO_SETUP, 8)

/* Rows of one tree together once they fill half a group; below that each
 * row walks the trees (one row: no tree is reused anyway). */
#define BATCH_MIN_ROWS (GROUP / 2)

void mls_tree_simd_block(const mls_tree_simd *m, const void *x, int64_t stride, int64_t n,
                         double *acc)
{
    const int batch = n >= BATCH_MIN_ROWS, f32 = m->thr_f32;
    if (m->isa == MLS_TREE_ISA_AVX512) {
        if (batch)
            (f32 ? batch_512_f32 : batch_512_f64)(m, x, stride, n, acc);
        else if (m->n_features <= (f32 ? 64 : 32))
            (f32 ? rows_512_f32_reg : rows_512_f64_reg)(m, x, stride, n, acc);
        else
            (f32 ? rows_512_f32 : rows_512_f64)(m, x, stride, n, acc);
    } else {
        if (batch)
            (f32 ? batch_256_f32 : batch_256_f64)(m, x, stride, n, acc);
        else
            (f32 ? rows_256_f32 : rows_256_f64)(m, x, stride, n, acc);
    }
}

#else /* not x86: the scalar walker runs */

int mls_tree_simd_isa(void) { return MLS_TREE_ISA_NONE; }

void mls_tree_simd_block(const mls_tree_simd *m, const void *x, int64_t stride, int64_t n,
                         double *acc)
{
    (void)m, (void)x, (void)stride, (void)n, (void)acc;
}

#endif
