/* mls_gemm_small.c: X @ W^T for a few rows (contract in mls_gemm_small.h).
 *
 * Register tiles of R rows x J outputs (R <= 4; J = 4 with AVX-512, 2 with
 * AVX2, whose 16 registers hold 8 accumulators, J weight vectors and one
 * row vector). A tile keeps one vector accumulator per (row, output) and
 * walks f in steps of one vector: J weight loads and R row loads feed R*J
 * fused multiply-adds. The last d % V features come in through a masked
 * load (zeros past the end, so nothing past a row is read).
 *
 * Blocking. A call takes X in super-blocks of up to 32 rows. Their rows are
 * first copied, 512 bytes of features at a time, into one contiguous,
 * 64-byte aligned buffer (xp): rows of a model with 2048 float64 features
 * lie 16 KB apart, so a few dozen of them at the same offset fall into the
 * same L1 sets and evict each other (GEMM packs for the same reason). Then,
 * for each group of 8 outputs and each 512-byte feature block, every tile
 * of the super-block runs over that block: the block of X (32 rows, 16 KB)
 * and of W (8 rows, 4 KB) stay in L1, and the tiles' partial sums wait
 * between feature blocks in acc_s (one vector per row and output, 16 KB).
 * Each weight is read from memory once per super-block, so once per call
 * up to 32 rows; GEMM first packs all of W (16 MB for 2048 x 1024 float64).
 * Measured on the 2048 x 1024 float64 model (2-core Xeon, AVX-512, 1
 * thread), 16 rows: 3.1 ms without the copy and the blocking, 2.3 ms with
 * them; GEMM 3.8 ms.
 *
 * Summation order, the same for every element whatever the tile shape:
 * lane l of the accumulator sums x[f] * w[f] for f = l, l + V, l + 2V, ...
 * in increasing f (fused with AVX2/AVX-512, multiply then add in C), then
 * the V lanes are added in one fixed tree. Tiles only group elements;
 * they never change an element's arithmetic, so results do not depend on
 * the batch size or a row's position in it (tests/test_linear_small_batch.py).
 *
 * The kernel is compiled three times, as mls_vmath.c is: plain C (SSE2 on
 * x86-64, the build has no -march), AVX2 + FMA and AVX-512F + FMA, each
 * with a target attribute; the CPU (or MLSERVE_GEMM_SMALL) picks one on
 * first use. Single-threaded by design (see the header).
 */
#include "mls_gemm_small.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define GS_HAVE_X86 1
#include <immintrin.h>
#endif

#define GS_INLINE static inline __attribute__((always_inline))
#define GS_ROWS 4 /* rows per register tile */
/* Cache blocking (see the top of the file): rows per super-block, outputs
 * per group, bytes of features per block (a multiple of every vector size). */
#define GS_SUPER_ROWS 32
#define GS_SUPER_COLS 8
#define GS_BLOCK_BYTES 512
#define GS_MAX_BYTES ((int64_t)(PTRDIFF_MAX / 2)) /* bound on the size of xp */

/* ---- the kernel body, once per variant ------------------------------------
 *
 * NAME: function prefix; T: element type; VEC: vector type of V lanes;
 * ATTR: target attribute; JMAX: outputs per tile. The variant supplies
 * NAME##_zero(), NAME##_load(p), NAME##_loadn(p, n) (n < V lanes, zeros
 * after), NAME##_fma(a, b, c) = a * b + c and NAME##_hsum(v). */
#define GS_DEFINE_KERNEL(NAME, T, VEC, V, ATTR, JMAX)                                       \
    /* Rows x[0..R) against outputs w[0..J) over features [f0, f1) (whole vectors);    \
     * R and J are constants after inlining, so acc lives in registers. The sums      \
     * start at zero (first) or from acc_s; at the last block the masked tail is      \
     * added and the sums reduced into out, otherwise they go back to acc_s. */       \
    GS_INLINE ATTR void NAME##_tile(const int R, const int J, int64_t f0, int64_t f1,      \
                                    int64_t d, int first, int last, const T *x,            \
                                    int64_t ldx, const T *w, VEC *acc_s, T *out,           \
                                    int64_t ldo)                                           \
    {                                                                                     \
        VEC acc[GS_ROWS][JMAX];                                                           \
        VEC wv[JMAX];                                                                     \
        for (int r = 0; r < R; r++)                                                       \
            for (int j = 0; j < J; j++)                                                   \
                acc[r][j] = first ? NAME##_zero() : acc_s[r * GS_SUPER_COLS + j];         \
        for (int64_t f = f0; f < f1; f += (V)) {                                          \
            for (int j = 0; j < J; j++) wv[j] = NAME##_load(w + j * d + f);               \
            for (int r = 0; r < R; r++) {                                                 \
                const VEC xv = NAME##_load(x + r * ldx + (f - f0));                              \
                for (int j = 0; j < J; j++) acc[r][j] = NAME##_fma(xv, wv[j], acc[r][j]); \
            }                                                                             \
        }                                                                                 \
        if (!last) {                                                                      \
            for (int r = 0; r < R; r++)                                                   \
                for (int j = 0; j < J; j++) acc_s[r * GS_SUPER_COLS + j] = acc[r][j];     \
            return;                                                                       \
        }                                                                                 \
        if (f1 < d) {                                                                     \
            const int n = (int)(d - f1);                                                  \
            for (int j = 0; j < J; j++) wv[j] = NAME##_loadn(w + j * d + f1, n);          \
            for (int r = 0; r < R; r++) {                                                 \
                const VEC xv = NAME##_loadn(x + r * ldx + (f1 - f0), n);                         \
                for (int j = 0; j < J; j++) acc[r][j] = NAME##_fma(xv, wv[j], acc[r][j]); \
            }                                                                             \
        }                                                                                 \
        for (int r = 0; r < R; r++)                                                       \
            for (int j = 0; j < J; j++) out[r * ldo + j] = NAME##_hsum(acc[r][j]);        \
    }                                                                                     \
                                                                                          \
    /* `rows` rows against outputs w[0..J): tiles of 4 rows, then the rest */           \
    GS_INLINE ATTR void NAME##_rows(const int J, int64_t rows, int64_t f0, int64_t f1,     \
                                    int64_t d, int first, int last, const T *X,            \
                                    int64_t ldx, const T *w, VEC *acc_s, T *out,           \
                                    int64_t ldo)                                           \
    {                                                                                     \
        int64_t i = 0;                                                                    \
        for (; i + GS_ROWS <= rows; i += GS_ROWS)                                         \
            NAME##_tile(GS_ROWS, J, f0, f1, d, first, last, X + i * ldx, ldx, w,          \
                        acc_s + i * GS_SUPER_COLS, out + i * ldo, ldo);                   \
        const T *x = X + i * ldx;                                                         \
        VEC *a = acc_s + i * GS_SUPER_COLS;                                               \
        T *o = out + i * ldo;                                                             \
        switch (rows - i) {                                                               \
        case 3: NAME##_tile(3, J, f0, f1, d, first, last, x, ldx, w, a, o, ldo); break;   \
        case 2: NAME##_tile(2, J, f0, f1, d, first, last, x, ldx, w, a, o, ldo); break;   \
        case 1: NAME##_tile(1, J, f0, f1, d, first, last, x, ldx, w, a, o, ldo); break;   \
        default: break;                                                                   \
        }                                                                                 \
    }                                                                                     \
                                                                                          \
    /* rows x cols (<= GS_SUPER_ROWS x GS_SUPER_COLS) over features [f0, f1) */          \
    ATTR static void NAME##_block(int64_t rows, int64_t cols, int64_t f0, int64_t f1,      \
                                  int64_t d, int first, int last, const T *X,              \
                                  int64_t ldx, const T *W, VEC *acc_s, T *out,             \
                                  int64_t ldo)                                             \
    {                                                                                     \
        int64_t j = 0;                                                                    \
        for (; j + (JMAX) <= cols; j += (JMAX))                                           \
            NAME##_rows(JMAX, rows, f0, f1, d, first, last, X, ldx, W + j * d, acc_s + j, \
                        out + j, ldo);                                                    \
        /* the last cols % JMAX outputs as one narrower tile, so X is read once */       \
        const T *w = W + j * d;                                                           \
        VEC *a = acc_s + j;                                                               \
        T *o = out + j;                                                                   \
        switch (cols - j) {                                                               \
        case 3:                                                                           \
            NAME##_rows((JMAX) > 3 ? 3 : 1, rows, f0, f1, d, first, last, X, ldx, w, a, o, \
                        ldo);                                                             \
            break;                                                                        \
        case 2:                                                                           \
            NAME##_rows((JMAX) > 2 ? 2 : 1, rows, f0, f1, d, first, last, X, ldx, w, a, o, \
                        ldo);                                                             \
            break;                                                                        \
        case 1: NAME##_rows(1, rows, f0, f1, d, first, last, X, ldx, w, a, o, ldo); break; \
        default: break;                                                                   \
        }                                                                                 \
    }                                                                                     \
                                                                                          \
    /* Returns 0, or -1 when the copy of X cannot be allocated. */                     \
    ATTR static int NAME(int64_t rows, int64_t k, int64_t d, const T *X, int64_t ldx,      \
                         const T *W, T *out, int64_t ldo)                                 \
    {                                                                                     \
        VEC acc_s[GS_SUPER_ROWS * GS_SUPER_COLS];                                         \
        const int64_t fstep = GS_BLOCK_BYTES / (int64_t)sizeof(T);                        \
        const int64_t dv = d - d % (V);                                                   \
        const int64_t nblocks = dv > 0 ? (dv + fstep - 1) / fstep : 1;                    \
        /* X's rows of a super-block, block by block: xp[(b * SR + r) * pstride + f] */ \
        const int64_t pstride = fstep + (V); /* the last block also holds the tail */   \
        if (nblocks > GS_MAX_BYTES / (GS_SUPER_ROWS * pstride * (int64_t)sizeof(T)))      \
            return -1;                                                                    \
        size_t bytes = (size_t)(nblocks * GS_SUPER_ROWS * pstride) * sizeof(T);           \
        bytes = (bytes + 63) / 64 * 64;                                                   \
        T *xp = aligned_alloc(64, bytes);                                                 \
        if (xp == NULL) return -1;                                                        \
        for (int64_t i = 0; i < rows; i += GS_SUPER_ROWS) {                               \
            const int64_t nr = rows - i < GS_SUPER_ROWS ? rows - i : GS_SUPER_ROWS;       \
            for (int64_t r = 0; r < nr; r++)                                              \
                for (int64_t b = 0; b < nblocks; b++) {                                   \
                    const int64_t f0 = b * fstep;                                         \
                    const int64_t len = b == nblocks - 1 ? d - f0 : fstep;                \
                    memcpy(xp + (b * GS_SUPER_ROWS + r) * pstride, X + (i + r) * ldx + f0, \
                           (size_t)len * sizeof(T));                                      \
                }                                                                         \
            for (int64_t j = 0; j < k; j += GS_SUPER_COLS) {                              \
                const int64_t nc = k - j < GS_SUPER_COLS ? k - j : GS_SUPER_COLS;         \
                for (int64_t b = 0; b < nblocks; b++) {                                   \
                    const int64_t f0 = b * fstep;                                         \
                    const int64_t f1 = b == nblocks - 1 ? dv : f0 + fstep;                \
                    NAME##_block(nr, nc, f0, f1, d, b == 0, b == nblocks - 1,             \
                                 xp + b * GS_SUPER_ROWS * pstride, pstride, W + j * d,    \
                                 acc_s, out + i * ldo + j, ldo);                          \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
        free(xp);                                                                         \
        return 0;                                                                         \
    }

/* ---- plain C: a "vector" of GS_C_LANES scalars ----------------------------- */

#define GS_C_LANES 4

#define GS_DEFINE_C_VECTOR(NAME, T)                                                   \
    typedef struct NAME##_vec {                                                       \
        T v[GS_C_LANES];                                                              \
    } NAME##_vec;                                                                     \
    GS_INLINE NAME##_vec NAME##_zero(void)                                            \
    {                                                                                 \
        NAME##_vec r;                                                                 \
        for (int l = 0; l < GS_C_LANES; l++) r.v[l] = 0;                              \
        return r;                                                                     \
    }                                                                                 \
    GS_INLINE NAME##_vec NAME##_load(const T *p)                                      \
    {                                                                                 \
        NAME##_vec r;                                                                 \
        for (int l = 0; l < GS_C_LANES; l++) r.v[l] = p[l];                           \
        return r;                                                                     \
    }                                                                                 \
    GS_INLINE NAME##_vec NAME##_loadn(const T *p, int n)                              \
    {                                                                                 \
        NAME##_vec r;                                                                 \
        for (int l = 0; l < GS_C_LANES; l++) r.v[l] = l < n ? p[l] : 0;               \
        return r;                                                                     \
    }                                                                                 \
    /* multiply, then add: ISO C mode keeps GCC from fusing the two */               \
    GS_INLINE NAME##_vec NAME##_fma(NAME##_vec a, NAME##_vec b, NAME##_vec c)         \
    {                                                                                 \
        for (int l = 0; l < GS_C_LANES; l++) c.v[l] = c.v[l] + a.v[l] * b.v[l];       \
        return c;                                                                     \
    }                                                                                 \
    GS_INLINE T NAME##_hsum(NAME##_vec a)                                             \
    {                                                                                 \
        return (a.v[0] + a.v[2]) + (a.v[1] + a.v[3]);                                 \
    }

GS_DEFINE_C_VECTOR(gs_c_f64, double)
GS_DEFINE_C_VECTOR(gs_c_f32, float)
GS_DEFINE_KERNEL(gs_c_f64, double, gs_c_f64_vec, GS_C_LANES, , 2)
GS_DEFINE_KERNEL(gs_c_f32, float, gs_c_f32_vec, GS_C_LANES, , 2)

/* ---- AVX2 + FMA ------------------------------------------------------------ */

#ifdef GS_HAVE_X86
#define GS_AVX2 __attribute__((target("avx2,fma")))

GS_INLINE GS_AVX2 __m256d gs_avx2_f64_zero(void) { return _mm256_setzero_pd(); }
GS_INLINE GS_AVX2 __m256d gs_avx2_f64_load(const double *p) { return _mm256_loadu_pd(p); }
GS_INLINE GS_AVX2 __m256d gs_avx2_f64_loadn(const double *p, int n)
{
    const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
    return _mm256_maskload_pd(p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), lane));
}
GS_INLINE GS_AVX2 __m256d gs_avx2_f64_fma(__m256d a, __m256d b, __m256d c)
{
    return _mm256_fmadd_pd(a, b, c);
}
GS_INLINE GS_AVX2 double gs_avx2_f64_hsum(__m256d a)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

GS_INLINE GS_AVX2 __m256 gs_avx2_f32_zero(void) { return _mm256_setzero_ps(); }
GS_INLINE GS_AVX2 __m256 gs_avx2_f32_load(const float *p) { return _mm256_loadu_ps(p); }
GS_INLINE GS_AVX2 __m256 gs_avx2_f32_loadn(const float *p, int n)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane));
}
GS_INLINE GS_AVX2 __m256 gs_avx2_f32_fma(__m256 a, __m256 b, __m256 c)
{
    return _mm256_fmadd_ps(a, b, c);
}
GS_INLINE GS_AVX2 float gs_avx2_f32_hsum(__m256 a)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

GS_DEFINE_KERNEL(gs_avx2_f64, double, __m256d, 4, GS_AVX2, 2)
GS_DEFINE_KERNEL(gs_avx2_f32, float, __m256, 8, GS_AVX2, 2)

/* ---- AVX-512F + FMA -------------------------------------------------------- */

#define GS_AVX512 __attribute__((target("avx512f,avx2,fma")))

GS_INLINE GS_AVX512 __m512d gs_avx512_f64_zero(void) { return _mm512_setzero_pd(); }
GS_INLINE GS_AVX512 __m512d gs_avx512_f64_load(const double *p) { return _mm512_loadu_pd(p); }
GS_INLINE GS_AVX512 __m512d gs_avx512_f64_loadn(const double *p, int n)
{
    return _mm512_maskz_loadu_pd((__mmask8)((1u << n) - 1u), p);
}
GS_INLINE GS_AVX512 __m512d gs_avx512_f64_fma(__m512d a, __m512d b, __m512d c)
{
    return _mm512_fmadd_pd(a, b, c);
}
GS_INLINE GS_AVX512 double gs_avx512_f64_hsum(__m512d a)
{
    __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd(a, 1));
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

GS_INLINE GS_AVX512 __m512 gs_avx512_f32_zero(void) { return _mm512_setzero_ps(); }
GS_INLINE GS_AVX512 __m512 gs_avx512_f32_load(const float *p) { return _mm512_loadu_ps(p); }
GS_INLINE GS_AVX512 __m512 gs_avx512_f32_loadn(const float *p, int n)
{
    return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
}
GS_INLINE GS_AVX512 __m512 gs_avx512_f32_fma(__m512 a, __m512 b, __m512 c)
{
    return _mm512_fmadd_ps(a, b, c);
}
GS_INLINE GS_AVX512 float gs_avx512_f32_hsum(__m512 a)
{
    /* the upper 256 bits through the float64 view: extractf32x8 needs AVX512DQ */
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a), hi);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

GS_DEFINE_KERNEL(gs_avx512_f64, double, __m512d, 8, GS_AVX512, 4)
GS_DEFINE_KERNEL(gs_avx512_f32, float, __m512, 16, GS_AVX512, 4)
#endif /* GS_HAVE_X86 */

/* ---- dispatch -------------------------------------------------------------- */

static mls_gemm_small_isa gs_cpu_best(void)
{
#ifdef GS_HAVE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"))
        return MLS_GEMM_SMALL_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return MLS_GEMM_SMALL_AVX2;
#endif
    return MLS_GEMM_SMALL_C;
}

/* Without AVX2 the default is off: the plain C build lost to OpenBLAS GEMM
 * from 4 rows (float64) and at every size (float32) on the benchmark model,
 * so it only runs when asked for (tests, or a CPU where it measures faster). */
static mls_gemm_small_isa gs_resolve(void)
{
    const mls_gemm_small_isa best = gs_cpu_best();
    const char *env = getenv("MLSERVE_GEMM_SMALL");
    mls_gemm_small_isa want = best == MLS_GEMM_SMALL_C ? MLS_GEMM_SMALL_OFF : best;
    if (env != NULL) {
        if (strcmp(env, "off") == 0)
            want = MLS_GEMM_SMALL_OFF;
        else if (strcmp(env, "c") == 0)
            want = MLS_GEMM_SMALL_C;
        else if (strcmp(env, "avx2") == 0)
            want = MLS_GEMM_SMALL_AVX2;
        else if (strcmp(env, "avx512") == 0)
            want = MLS_GEMM_SMALL_AVX512;
    }
    return want < best ? want : best;
}

/* The one piece of process-wide state: the variant, resolved once (the CPU
 * and the environment do not change). Threads that race on the first call
 * resolve the same value. */
static atomic_int gs_isa = -1;

mls_gemm_small_isa mls_gemm_small_isa_get(void)
{
    int isa = atomic_load_explicit(&gs_isa, memory_order_relaxed);
    if (isa < 0) {
        isa = (int)gs_resolve();
        atomic_store_explicit(&gs_isa, isa, memory_order_relaxed);
    }
    return (mls_gemm_small_isa)isa;
}

const char *mls_gemm_small_isa_name(mls_gemm_small_isa isa)
{
    switch (isa) {
    case MLS_GEMM_SMALL_OFF: return "off";
    case MLS_GEMM_SMALL_C: return "c";
    case MLS_GEMM_SMALL_AVX2: return "avx2";
    case MLS_GEMM_SMALL_AVX512: return "avx512";
    }
    return "unknown";
}

/* Every index the kernel forms, (rows - 1) * ldx + d, (rows - 1) * ldo + k
 * and k * d, must fit in int64_t and in a pointer offset of elements of
 * `esize` bytes. */
static mls_status gs_check(int64_t rows, int64_t k, int64_t d, int64_t ldx, int64_t ldo,
                           size_t esize, mls_error *err)
{
    if (rows < 0 || k < 0 || d < 0 || ldx < d || ldo < k)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE,
                             "gemm_small: bad sizes rows=%lld k=%lld d=%lld ldx=%lld ldo=%lld",
                             (long long)rows, (long long)k, (long long)d, (long long)ldx,
                             (long long)ldo);
    const int64_t lim = (int64_t)((size_t)PTRDIFF_MAX / esize);
    if ((rows > 1 && (ldx > (lim - d) / (rows - 1) || ldo > (lim - k) / (rows - 1))) ||
        (d > 0 && k > lim / d))
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE,
                             "gemm_small: sizes rows=%lld k=%lld d=%lld ldx=%lld ldo=%lld "
                             "overflow an index",
                             (long long)rows, (long long)k, (long long)d, (long long)ldx,
                             (long long)ldo);
    return MLS_STATUS_OK;
}

/* The public entry points: check the sizes, run the chosen variant. */
#ifdef GS_HAVE_X86
#define GS_X86_CASES(SUFFIX)                                                                \
    case MLS_GEMM_SMALL_AVX512: rc = gs_avx512_##SUFFIX(rows, k, d, X, ldx, W, out, ldo); break; \
    case MLS_GEMM_SMALL_AVX2: rc = gs_avx2_##SUFFIX(rows, k, d, X, ldx, W, out, ldo); break;
#else
#define GS_X86_CASES(SUFFIX)
#endif

#define GS_DEFINE_ENTRY(SUFFIX, T)                                                          \
    mls_status mls_gemm_small_##SUFFIX(int64_t rows, int64_t k, int64_t d, const T *X,      \
                                       int64_t ldx, const T *W, T *out, int64_t ldo,        \
                                       mls_error *err)                                      \
    {                                                                                       \
        mls_status s = gs_check(rows, k, d, ldx, ldo, sizeof *X, err);                      \
        if (s != MLS_STATUS_OK || rows == 0 || k == 0) return s;                            \
        int rc;                                                                             \
        switch (mls_gemm_small_isa_get()) {                                                 \
            GS_X86_CASES(SUFFIX)                                                            \
        default: rc = gs_c_##SUFFIX(rows, k, d, X, ldx, W, out, ldo); break;                \
        }                                                                                   \
        if (rc != 0)                                                                        \
            return mls_error_set(err, MLS_STATUS_ERR_NOMEM,                                 \
                                 "gemm_small: out of memory for a copy of X");              \
        return MLS_STATUS_OK;                                                               \
    }

GS_DEFINE_ENTRY(f64, double)
GS_DEFINE_ENTRY(f32, float)
