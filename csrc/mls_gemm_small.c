/* mls_gemm_small.c: X @ W^T for a few rows (contract in mls_gemm_small.h).
 *
 * Register tiles of R rows x J outputs (R <= 4; J = 4 with AVX-512, 2 with
 * AVX2, whose 16 registers hold 8 accumulators, J weight vectors and one
 * row vector). A tile keeps one vector accumulator per (row, output) and
 * walks f in steps of one vector: J weight loads and R row loads feed R*J
 * fused multiply-adds. The last d % V features come in through a masked
 * load (zeros past the end, so nothing past a row is read).
 *
 * Loop order: outputs outside, rows inside. The J weight rows of a tile
 * (J * d elements, 64 KB for d = 2048 float64) come from memory once and
 * stay in L2 while every block of 4 rows passes over them; the rows of X
 * (rows * d elements) stay in L2 for the whole call. So W is read from
 * memory once per call, which is the point: GEMM packs all of W first.
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

/* ---- the kernel body, once per variant ------------------------------------
 *
 * NAME: function prefix; T: element type; VEC: vector type of V lanes;
 * ATTR: target attribute; JMAX: outputs per tile. The variant supplies
 * NAME##_zero(), NAME##_load(p), NAME##_loadn(p, n) (n < V lanes, zeros
 * after), NAME##_fma(a, b, c) = a * b + c and NAME##_hsum(v). */
#define GS_DEFINE_KERNEL(NAME, T, VEC, V, ATTR, JMAX)                                       \
    /* out[r*ldo + j] = x_r . w_j for r < R, j < J (R and J are constants after      \
     * inlining, so acc lives in registers). */                                         \
    GS_INLINE ATTR void NAME##_tile(const int R, const int J, int64_t d, const T *x,       \
                                    int64_t ldx, const T *w, T *out, int64_t ldo)          \
    {                                                                                     \
        VEC acc[GS_ROWS][JMAX];                                                           \
        VEC wv[JMAX];                                                                     \
        for (int r = 0; r < R; r++)                                                       \
            for (int j = 0; j < J; j++) acc[r][j] = NAME##_zero();                        \
        const int64_t dv = d - d % (V);                                                   \
        for (int64_t f = 0; f < dv; f += (V)) {                                           \
            for (int j = 0; j < J; j++) wv[j] = NAME##_load(w + j * d + f);               \
            for (int r = 0; r < R; r++) {                                                 \
                const VEC xv = NAME##_load(x + r * ldx + f);                              \
                for (int j = 0; j < J; j++) acc[r][j] = NAME##_fma(xv, wv[j], acc[r][j]); \
            }                                                                             \
        }                                                                                 \
        if (dv < d) {                                                                     \
            const int n = (int)(d - dv);                                                  \
            for (int j = 0; j < J; j++) wv[j] = NAME##_loadn(w + j * d + dv, n);          \
            for (int r = 0; r < R; r++) {                                                 \
                const VEC xv = NAME##_loadn(x + r * ldx + dv, n);                         \
                for (int j = 0; j < J; j++) acc[r][j] = NAME##_fma(xv, wv[j], acc[r][j]); \
            }                                                                             \
        }                                                                                 \
        for (int r = 0; r < R; r++)                                                       \
            for (int j = 0; j < J; j++) out[r * ldo + j] = NAME##_hsum(acc[r][j]);        \
    }                                                                                     \
                                                                                          \
    /* all rows against outputs [j, j + J): blocks of 4 rows, then the rest */          \
    GS_INLINE ATTR void NAME##_outputs(const int J, int64_t rows, int64_t d, const T *X,   \
                                       int64_t ldx, const T *w, T *out, int64_t ldo)       \
    {                                                                                     \
        int64_t i = 0;                                                                    \
        for (; i + GS_ROWS <= rows; i += GS_ROWS)                                         \
            NAME##_tile(GS_ROWS, J, d, X + i * ldx, ldx, w, out + i * ldo, ldo);          \
        switch (rows - i) {                                                               \
        case 3: NAME##_tile(3, J, d, X + i * ldx, ldx, w, out + i * ldo, ldo); break;     \
        case 2: NAME##_tile(2, J, d, X + i * ldx, ldx, w, out + i * ldo, ldo); break;     \
        case 1: NAME##_tile(1, J, d, X + i * ldx, ldx, w, out + i * ldo, ldo); break;     \
        default: break;                                                                   \
        }                                                                                 \
    }                                                                                     \
                                                                                          \
    ATTR static void NAME(int64_t rows, int64_t k, int64_t d, const T *X, int64_t ldx,     \
                          const T *W, T *out, int64_t ldo)                                \
    {                                                                                     \
        int64_t j = 0;                                                                    \
        for (; j + (JMAX) <= k; j += (JMAX))                                              \
            NAME##_outputs(JMAX, rows, d, X, ldx, W + j * d, out + j, ldo);               \
        for (; j < k; j++) NAME##_outputs(1, rows, d, X, ldx, W + j * d, out + j, ldo);   \
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

static mls_gemm_small_isa gs_resolve(void)
{
    const mls_gemm_small_isa best = gs_cpu_best();
    const char *env = getenv("MLSERVE_GEMM_SMALL");
    mls_gemm_small_isa want = best;
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

mls_status mls_gemm_small_f64(int64_t rows, int64_t k, int64_t d, const double *X, int64_t ldx,
                              const double *W, double *out, int64_t ldo, mls_error *err)
{
    mls_status s = gs_check(rows, k, d, ldx, ldo, sizeof *X, err);
    if (s != MLS_STATUS_OK || rows == 0 || k == 0) return s;
    switch (mls_gemm_small_isa_get()) {
#ifdef GS_HAVE_X86
    case MLS_GEMM_SMALL_AVX512: gs_avx512_f64(rows, k, d, X, ldx, W, out, ldo); break;
    case MLS_GEMM_SMALL_AVX2: gs_avx2_f64(rows, k, d, X, ldx, W, out, ldo); break;
#endif
    default: gs_c_f64(rows, k, d, X, ldx, W, out, ldo); break;
    }
    return MLS_STATUS_OK;
}

mls_status mls_gemm_small_f32(int64_t rows, int64_t k, int64_t d, const float *X, int64_t ldx,
                              const float *W, float *out, int64_t ldo, mls_error *err)
{
    mls_status s = gs_check(rows, k, d, ldx, ldo, sizeof *X, err);
    if (s != MLS_STATUS_OK || rows == 0 || k == 0) return s;
    switch (mls_gemm_small_isa_get()) {
#ifdef GS_HAVE_X86
    case MLS_GEMM_SMALL_AVX512: gs_avx512_f32(rows, k, d, X, ldx, W, out, ldo); break;
    case MLS_GEMM_SMALL_AVX2: gs_avx2_f32(rows, k, d, X, ldx, W, out, ldo); break;
#endif
    default: gs_c_f32(rows, k, d, X, ldx, W, out, ldo); break;
    }
    return MLS_STATUS_OK;
}
