#include <immintrin.h>
#include "td_internal.h"
#include "td_feature_math.h"

/* td_avx2.c - x86-64 AVX2 + FMA kernels. Built alone with -mavx2 -mfma; td_scalar.c is the specification of
 * every entry. Cosine forms f32 products, sums at most 4 of them per lane in f32 (one 32-float block; 8 in
 * a 64-float block when the row norms are given), then widens the block sums to f64. int8 x int8 is exact
 * in int32. Tails are handled without reading past any array: scalar loops, masked loads, or byte copies. */
#include <string.h>

/* ---------------------------------------------------------------------------------------------------- */
/* Helpers                                                                                              */
/* ---------------------------------------------------------------------------------------------------- */

static inline float hsum_f32x8_avx2(__m256 v_f32x8) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v_f32x8), _mm256_extractf128_ps(v_f32x8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The sum of the 8 lanes, in every lane. */
static inline __m256 hsum_bcast_f32x8_avx2(__m256 v_f32x8) {
    v_f32x8 = _mm256_add_ps(v_f32x8, _mm256_permute2f128_ps(v_f32x8, v_f32x8, 1));
    v_f32x8 = _mm256_add_ps(v_f32x8, _mm256_shuffle_ps(v_f32x8, v_f32x8, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm256_add_ps(v_f32x8, _mm256_shuffle_ps(v_f32x8, v_f32x8, _MM_SHUFFLE(2, 3, 0, 1)));
}

static inline double hsum_f64x4_avx2(__m256d v_f64x4) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v_f64x4), _mm256_extractf128_pd(v_f64x4, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
}

static inline int32_t hsum_i32x8_avx2(__m256i v_i32x8) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v_i32x8), _mm256_extracti128_si256(v_i32x8, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* All bits set in lanes 0 .. n-1 (n <= 8). */
static inline __m256i lane_mask_i32x8_avx2(size_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* p[0 .. min(n, 8)) with zeros in the other lanes; masked lanes touch no memory. */
static inline __m256 loadn_f32x8_avx2(const float *p, size_t n) {
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lane_mask_i32x8_avx2(n));
}

static inline void storen_f32x8_avx2(float *p, size_t n, __m256 v_f32x8) {
    if (n >= 8)
        _mm256_storeu_ps(p, v_f32x8);
    else
        _mm256_maskstore_ps(p, lane_mask_i32x8_avx2(n), v_f32x8);
}

/* 8 int8 as f32. */
static inline __m256 load_i8_f32x8_avx2(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* p[0 .. min(n, 8)) as f32, zeros in the other lanes; reads only those n bytes, one by one (a memcpy of n
 * bytes was a library call, about 6 ns a column: 2.4 us for a hidden 7, input 385 int8 W x). */
static inline __m256 loadn_i8_f32x8_avx2(const int8_t *p, size_t n) {
    uint64_t bytes = 0;
    if (n >= 8) return load_i8_f32x8_avx2(p);
    for (size_t k = 0; k < n; ++k) bytes |= (uint64_t)(uint8_t)p[k] << 8 * k;
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128((long long)bytes)));
}

/* Lane-wise sum of 4 f32 products over a 32-float block: lane l gets a[l + 8k] * b[l + 8k], k = 0..3. */
static inline __m256 block_dot_f32x8_avx2(const float *a, const float *b) {
    __m256 sum_f32x8 = _mm256_mul_ps(_mm256_loadu_ps(a), _mm256_loadu_ps(b));
    sum_f32x8 = _mm256_fmadd_ps(_mm256_loadu_ps(a + 8), _mm256_loadu_ps(b + 8), sum_f32x8);
    sum_f32x8 = _mm256_fmadd_ps(_mm256_loadu_ps(a + 16), _mm256_loadu_ps(b + 16), sum_f32x8);
    return _mm256_fmadd_ps(_mm256_loadu_ps(a + 24), _mm256_loadu_ps(b + 24), sum_f32x8);
}

/* Widens the two halves of an f32 block sum to f64 and adds them to lo and hi. */
static inline void widen_add_f64x4_avx2(__m256d *lo_f64x4, __m256d *hi_f64x4, __m256 sum_f32x8) {
    *lo_f64x4 = _mm256_add_pd(*lo_f64x4, _mm256_cvtps_pd(_mm256_castps256_ps128(sum_f32x8)));
    *hi_f64x4 = _mm256_add_pd(*hi_f64x4, _mm256_cvtps_pd(_mm256_extractf128_ps(sum_f32x8, 1)));
}

/* exp(x) for x <= 0 (or NaN), x clamped to >= TD_SIGMOID_EXP_MIN (-87) so that 2^n below stays a normal
 * float. Cephes expf: n = round(x log2(e)), r = x - n ln2 with ln2 in two parts, exp(r) = 1 + r + r^2 P(r)
 * with P of degree 5 (Estrin's scheme: a shorter dependency chain than Horner's), then n is added to the
 * exponent bits. About 1 ulp. NaN stays NaN: max returns its second operand when one is NaN. */
static inline __m256 exp_neg_f32x8_avx2(__m256 x_f32x8) {
    const __m256 round_f32x8 = _mm256_set1_ps(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    __m256 t_f32x8, n_f32x8, r_f32x8, r2_f32x8, p01_f32x8, p23_f32x8, p45_f32x8, p_f32x8, y_f32x8;
    __m256i e_i32x8;
    x_f32x8 = _mm256_max_ps(_mm256_set1_ps(TD_SIGMOID_EXP_MIN), x_f32x8);
    t_f32x8 = _mm256_fmadd_ps(x_f32x8, _mm256_set1_ps(1.44269504088896341f), round_f32x8);
    n_f32x8 = _mm256_sub_ps(t_f32x8, round_f32x8); /* round(x log2(e)), exactly */
    r_f32x8 = _mm256_fnmadd_ps(n_f32x8, _mm256_set1_ps(0.693359375f), x_f32x8);
    r_f32x8 = _mm256_fnmadd_ps(n_f32x8, _mm256_set1_ps(-2.12194440e-4f), r_f32x8);
    r2_f32x8 = _mm256_mul_ps(r_f32x8, r_f32x8);
    p01_f32x8 = _mm256_fmadd_ps(_mm256_set1_ps(1.6666665459e-1f), r_f32x8, _mm256_set1_ps(5.0000001201e-1f));
    p23_f32x8 = _mm256_fmadd_ps(_mm256_set1_ps(8.3334519073e-3f), r_f32x8, _mm256_set1_ps(4.1665795894e-2f));
    p45_f32x8 = _mm256_fmadd_ps(_mm256_set1_ps(1.9875691500e-4f), r_f32x8, _mm256_set1_ps(1.3981999507e-3f));
    p_f32x8 = _mm256_fmadd_ps(_mm256_fmadd_ps(p45_f32x8, r2_f32x8, p23_f32x8), r2_f32x8, p01_f32x8);
    y_f32x8 = _mm256_fmadd_ps(p_f32x8, r2_f32x8, _mm256_add_ps(r_f32x8, _mm256_set1_ps(1.0f)));
    /* n in [-126, 0] and y in [0.7, 1.42]: the biased exponent of the result stays in [1, 127]. cvtps of
     * NaN gives 0x80000000, which shifts to 0 and leaves a NaN y a NaN. */
    e_i32x8 = _mm256_slli_epi32(_mm256_cvtps_epi32(n_f32x8), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(y_f32x8), e_i32x8));
}

/* td_sigmoid_f32_ on 8 lanes: (x >= 0 ? 1 : e) / (1 + e), e = exp(max(-|x|, -87)) (the floor is exp's). */
static inline __m256 sigmoid_f32x8_avx2(__m256 x_f32x8) {
    const __m256 one_f32x8 = _mm256_set1_ps(1.0f);
    __m256 e_f32x8 = exp_neg_f32x8_avx2(_mm256_or_ps(x_f32x8, _mm256_set1_ps(-0.0f)));
    __m256 num_f32x8 = _mm256_blendv_ps(one_f32x8, e_f32x8, x_f32x8); /* e where the sign bit of x is set */
    return _mm256_div_ps(num_f32x8, _mm256_add_ps(one_f32x8, e_f32x8));
}

/* sign(x) (1 - e) / (1 + e) with e = exp(-2|x|): no overflow, +-1 for large |x|, absolute error ~1e-7. */
static inline __m256 tanh_f32x8_avx2(__m256 x_f32x8) {
    const __m256 one_f32x8 = _mm256_set1_ps(1.0f), sign_f32x8 = _mm256_set1_ps(-0.0f);
    __m256 neg_abs_f32x8 = _mm256_or_ps(x_f32x8, sign_f32x8); /* -|x| */
    __m256 e_f32x8 = exp_neg_f32x8_avx2(_mm256_add_ps(neg_abs_f32x8, neg_abs_f32x8));
    __m256 t_f32x8 = _mm256_div_ps(_mm256_sub_ps(one_f32x8, e_f32x8), _mm256_add_ps(one_f32x8, e_f32x8));
    return _mm256_or_ps(t_f32x8, _mm256_and_ps(x_f32x8, sign_f32x8));
}

/* ---------------------------------------------------------------------------------------------------- */
/* Dot products and cosine                                                                              */
/* ---------------------------------------------------------------------------------------------------- */

void td_dot3_f32_avx2(const float *a, const float *b, size_t n, double out[3]) {
    __m256d ab_lo_f64x4 = _mm256_setzero_pd(), ab_hi_f64x4 = _mm256_setzero_pd();
    __m256d aa_lo_f64x4 = _mm256_setzero_pd(), aa_hi_f64x4 = _mm256_setzero_pd();
    __m256d bb_lo_f64x4 = _mm256_setzero_pd(), bb_hi_f64x4 = _mm256_setzero_pd();
    double ab, aa, bb;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        widen_add_f64x4_avx2(&ab_lo_f64x4, &ab_hi_f64x4, block_dot_f32x8_avx2(a + i, b + i));
        widen_add_f64x4_avx2(&aa_lo_f64x4, &aa_hi_f64x4, block_dot_f32x8_avx2(a + i, a + i));
        widen_add_f64x4_avx2(&bb_lo_f64x4, &bb_hi_f64x4, block_dot_f32x8_avx2(b + i, b + i));
    }
    for (; i + 8 <= n; i += 8) { /* one product per lane */
        __m256 a_f32x8 = _mm256_loadu_ps(a + i), b_f32x8 = _mm256_loadu_ps(b + i);
        widen_add_f64x4_avx2(&ab_lo_f64x4, &ab_hi_f64x4, _mm256_mul_ps(a_f32x8, b_f32x8));
        widen_add_f64x4_avx2(&aa_lo_f64x4, &aa_hi_f64x4, _mm256_mul_ps(a_f32x8, a_f32x8));
        widen_add_f64x4_avx2(&bb_lo_f64x4, &bb_hi_f64x4, _mm256_mul_ps(b_f32x8, b_f32x8));
    }
    ab = hsum_f64x4_avx2(_mm256_add_pd(ab_lo_f64x4, ab_hi_f64x4));
    aa = hsum_f64x4_avx2(_mm256_add_pd(aa_lo_f64x4, aa_hi_f64x4));
    bb = hsum_f64x4_avx2(_mm256_add_pd(bb_lo_f64x4, bb_hi_f64x4));
    for (; i < n; ++i) {
        double x = (double)a[i], y = (double)b[i];
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    out[0] = ab;
    out[1] = aa;
    out[2] = bb;
}

double td_sumsq_f32_avx2(const float *a, size_t n) {
    __m256d s0_lo_f64x4 = _mm256_setzero_pd(), s0_hi_f64x4 = _mm256_setzero_pd();
    __m256d s1_lo_f64x4 = _mm256_setzero_pd(), s1_hi_f64x4 = _mm256_setzero_pd();
    double s;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) { /* two blocks, two accumulator pairs */
        widen_add_f64x4_avx2(&s0_lo_f64x4, &s0_hi_f64x4, block_dot_f32x8_avx2(a + i, a + i));
        widen_add_f64x4_avx2(&s1_lo_f64x4, &s1_hi_f64x4, block_dot_f32x8_avx2(a + i + 32, a + i + 32));
    }
    if (i + 32 <= n) {
        widen_add_f64x4_avx2(&s0_lo_f64x4, &s0_hi_f64x4, block_dot_f32x8_avx2(a + i, a + i));
        i += 32;
    }
    for (; i + 8 <= n; i += 8) {
        __m256 a_f32x8 = _mm256_loadu_ps(a + i);
        widen_add_f64x4_avx2(&s1_lo_f64x4, &s1_hi_f64x4, _mm256_mul_ps(a_f32x8, a_f32x8));
    }
    s0_lo_f64x4 = _mm256_add_pd(s0_lo_f64x4, s0_hi_f64x4);
    s = hsum_f64x4_avx2(_mm256_add_pd(s0_lo_f64x4, _mm256_add_pd(s1_lo_f64x4, s1_hi_f64x4)));
    for (; i < n; ++i) s += (double)a[i] * (double)a[i];
    return s;
}

/* ab[k] = q.r_k, and bb[k] = r_k.r_k when bb is not NULL, for the rows r_k = r + k * stride, k < rows <= 4.
 * Always inlined with constant rows and bb, so that the accumulators stay in registers; the rows share the
 * loads of q. When next is not NULL, the same span of the rows next + k * stride is prefetched. */
TD_FORCE_INLINE void dot_rows_f32_avx2(const float *q, const float *r, const float *next, size_t stride, size_t n,
                                       size_t rows, double *ab, double *bb) {
    __m256d ab_lo_f64x4[4], ab_hi_f64x4[4], bb_lo_f64x4[4], bb_hi_f64x4[4];
    size_t i = 0;
    for (size_t k = 0; k < rows; ++k) {
        ab_lo_f64x4[k] = ab_hi_f64x4[k] = _mm256_setzero_pd();
        bb_lo_f64x4[k] = bb_hi_f64x4[k] = _mm256_setzero_pd();
    }
    if (!bb) { /* dot products only: 8 products to a lane (a 64-float block) before widening */
        for (; i + 64 <= n; i += 64) {
            for (size_t k = 0; k < rows; ++k) {
                const float *row = r + k * stride + i;
                if (next) { /* the four cache lines of this block in the next group (a hint: never faults) */
                    for (size_t line = 0; line < 64; line += 16)
                        _mm_prefetch((const char *)(next + k * stride + i + line), _MM_HINT_T0);
                }
                widen_add_f64x4_avx2(&ab_lo_f64x4[k], &ab_hi_f64x4[k],
                           _mm256_add_ps(block_dot_f32x8_avx2(q + i, row), block_dot_f32x8_avx2(q + i + 32, row + 32)));
            }
        }
    }
    for (; i + 32 <= n; i += 32) {
        for (size_t k = 0; k < rows; ++k) {
            const float *row = r + k * stride + i;
            if (next) { /* the two cache lines of this block in the next group (a hint: never faults) */
                _mm_prefetch((const char *)(next + k * stride + i), _MM_HINT_T0);
                _mm_prefetch((const char *)(next + k * stride + i + 16), _MM_HINT_T0);
            }
            widen_add_f64x4_avx2(&ab_lo_f64x4[k], &ab_hi_f64x4[k], block_dot_f32x8_avx2(q + i, row));
            if (bb) widen_add_f64x4_avx2(&bb_lo_f64x4[k], &bb_hi_f64x4[k], block_dot_f32x8_avx2(row, row));
        }
    }
    for (; i + 8 <= n; i += 8) { /* one product per lane */
        for (size_t k = 0; k < rows; ++k) {
            __m256 r_f32x8 = _mm256_loadu_ps(r + k * stride + i);
            widen_add_f64x4_avx2(&ab_lo_f64x4[k], &ab_hi_f64x4[k], _mm256_mul_ps(_mm256_loadu_ps(q + i), r_f32x8));
            if (bb) widen_add_f64x4_avx2(&bb_lo_f64x4[k], &bb_hi_f64x4[k], _mm256_mul_ps(r_f32x8, r_f32x8));
        }
    }
    for (size_t k = 0; k < rows; ++k) {
        const float *row = r + k * stride;
        double dab = hsum_f64x4_avx2(_mm256_add_pd(ab_lo_f64x4[k], ab_hi_f64x4[k]));
        double dbb = hsum_f64x4_avx2(_mm256_add_pd(bb_lo_f64x4[k], bb_hi_f64x4[k]));
        for (size_t j = i; j < n; ++j) {
            double y = (double)row[j];
            dab += (double)q[j] * y;
            dbb += y * y;
        }
        ab[k] = dab;
        if (bb) bb[k] = dbb;
    }
}

void td_cosine_batch_f32_avx2(const float *query, double query_norm, const float *rows, size_t n_rows,
                              size_t dim, const float *row_norms, float *out) {
    const double aa = query_norm * query_norm;
    double ab[4], bb[2];
    size_t r = 0;
    if (row_norms) { /* the hot path: only q.row is needed, four rows at a time */
        const int query_ok = isfinite(aa) && aa >= TD_TINY_SUMSQ;
        for (; r + 4 <= n_rows; r += 4) {
            const float *next = r + 8 <= n_rows ? rows + (r + 4) * dim : NULL;
            __m256d ab_f64x4, norm_f64x4, bb_f64x4, c_f64x4;
            int ok;
            dot_rows_f32_avx2(query, rows + r * dim, next, dim, dim, 4, ab, NULL);
            /* ab / (query_norm * norm) for the four rows at once; td_cosine_from_f32_dots_ where it does not
             * apply (a non-finite dot, a zero or tiny norm) */
            ab_f64x4 = _mm256_loadu_pd(ab);
            norm_f64x4 = _mm256_cvtps_pd(_mm_loadu_ps(row_norms + r));
            bb_f64x4 = _mm256_mul_pd(norm_f64x4, norm_f64x4);
            ok = _mm256_movemask_pd(_mm256_and_pd(
                _mm256_cmp_pd(_mm256_andnot_pd(_mm256_set1_pd(-0.0), ab_f64x4), _mm256_set1_pd(INFINITY), _CMP_LT_OQ),
                _mm256_cmp_pd(bb_f64x4, _mm256_set1_pd(TD_TINY_SUMSQ), _CMP_GE_OQ)));
            if (ok == 0xF && query_ok) {
                c_f64x4 = _mm256_div_pd(ab_f64x4, _mm256_mul_pd(_mm256_set1_pd(query_norm), norm_f64x4));
                c_f64x4 = _mm256_min_pd(_mm256_set1_pd(1.0), _mm256_max_pd(_mm256_set1_pd(-1.0), c_f64x4));
                _mm_storeu_ps(out + r, _mm256_cvtpd_ps(c_f64x4));
            } else {
                for (size_t k = 0; k < 4; ++k) {
                    double norm = (double)row_norms[r + k];
                    out[r + k] = (float)td_cosine_from_f32_dots_(ab[k], aa, norm * norm);
                }
            }
        }
        for (; r < n_rows; ++r) {
            double norm = (double)row_norms[r];
            dot_rows_f32_avx2(query, rows + r * dim, NULL, dim, dim, 1, ab, NULL);
            out[r] = (float)td_cosine_from_f32_dots_(ab[0], aa, norm * norm);
        }
        return;
    }
    for (; r + 2 <= n_rows; r += 2) {
        dot_rows_f32_avx2(query, rows + r * dim, NULL, dim, dim, 2, ab, bb);
        for (size_t k = 0; k < 2; ++k) {
            double norm = sqrt(bb[k]);
            out[r + k] = (float)td_cosine_from_f32_dots_(ab[k], aa, norm * norm);
        }
    }
    if (r < n_rows) {
        double norm;
        dot_rows_f32_avx2(query, rows + r * dim, NULL, dim, dim, 1, ab, bb);
        norm = sqrt(bb[0]);
        out[r] = (float)td_cosine_from_f32_dots_(ab[0], aa, norm * norm);
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* int8 matrix-vector products                                                                          */
/* ---------------------------------------------------------------------------------------------------- */

/* 8 int32 lanes, each the exact sum of two int8 x int8 products of a[0..16) and b[0..16). */
static inline __m256i madd_i8x16_avx2(const int8_t *a, const int8_t *b) {
    __m256i a_i16x16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)a));
    __m256i b_i16x16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b));
    return _mm256_madd_epi16(a_i16x16, b_i16x16); /* |sum| <= 2 * 128^2: no saturation */
}

void td_matvec_i8_f32_avx2(const int8_t *w, const float *scales, const float *bias, const float *x,
                           size_t rows, size_t cols, float *y) {
    for (size_t i = 0; i < rows; ++i) {
        const int8_t *row = w + i * cols;
        __m256 sum0_f32x8 = _mm256_setzero_ps(), sum1_f32x8 = _mm256_setzero_ps();
        float s;
        size_t j = 0;
        for (; j + 16 <= cols; j += 16) {
            sum0_f32x8 = _mm256_fmadd_ps(load_i8_f32x8_avx2(row + j), _mm256_loadu_ps(x + j), sum0_f32x8);
            sum1_f32x8 = _mm256_fmadd_ps(load_i8_f32x8_avx2(row + j + 8), _mm256_loadu_ps(x + j + 8), sum1_f32x8);
        }
        if (j + 8 <= cols) {
            sum0_f32x8 = _mm256_fmadd_ps(load_i8_f32x8_avx2(row + j), _mm256_loadu_ps(x + j), sum0_f32x8);
            j += 8;
        }
        s = hsum_f32x8_avx2(_mm256_add_ps(sum0_f32x8, sum1_f32x8));
        for (; j < cols; ++j) s += (float)row[j] * x[j];
        y[i] = scales[i] * s + (bias ? bias[i] : 0.0f);
    }
}

void td_matvec_i8_i32_avx2(const int8_t *w, const int8_t *x, size_t rows, size_t cols, int32_t *acc) {
    for (size_t i = 0; i < rows; ++i) {
        const int8_t *row = w + i * cols;
        __m256i sum0_i32x8 = _mm256_setzero_si256(), sum1_i32x8 = _mm256_setzero_si256();
        int32_t s;
        size_t j = 0;
        for (; j + 32 <= cols; j += 32) {
            sum0_i32x8 = _mm256_add_epi32(sum0_i32x8, madd_i8x16_avx2(row + j, x + j));
            sum1_i32x8 = _mm256_add_epi32(sum1_i32x8, madd_i8x16_avx2(row + j + 16, x + j + 16));
        }
        if (j + 16 <= cols) {
            sum0_i32x8 = _mm256_add_epi32(sum0_i32x8, madd_i8x16_avx2(row + j, x + j));
            j += 16;
        }
        s = hsum_i32x8_avx2(_mm256_add_epi32(sum0_i32x8, sum1_i32x8));
        for (; j < cols; ++j) s += (int32_t)row[j] * (int32_t)x[j];
        acc[i] = s;
    }
}

/* CSR: each row takes its entries in groups (8 with a gather of x for the f32 forms, 16 for the exact int8
 * form), then a scalar tail. Every index lies in [0, cols) by contract, so a gather stays inside x. */

void td_csr_matvec_i8_f32_avx2(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                               const float *scales, const float *bias, const float *x, size_t rows,
                               float *y) {
    for (size_t i = 0; i < rows; ++i) {
        int32_t k = indptr[i];
        const int32_t end = indptr[i + 1];
        __m256 sum_f32x8 = _mm256_setzero_ps();
        float s;
        for (; end - k >= 8; k += 8) {
            __m256i idx_i32x8 = _mm256_loadu_si256((const __m256i *)(indices + k));
            __m256 x_f32x8 = _mm256_i32gather_ps(x, idx_i32x8, 4);
            sum_f32x8 = _mm256_fmadd_ps(load_i8_f32x8_avx2(values + k), x_f32x8, sum_f32x8);
        }
        s = hsum_f32x8_avx2(sum_f32x8);
        for (; k < end; ++k) s += (float)values[k] * x[indices[k]];
        y[i] = scales[i] * s + (bias ? bias[i] : 0.0f);
    }
}

void td_csr_matvec_i8_i32_avx2(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                               const int8_t *x, size_t rows, int32_t *acc) {
    for (size_t i = 0; i < rows; ++i) {
        int32_t k = indptr[i];
        const int32_t end = indptr[i + 1];
        __m256i sum_i32x8 = _mm256_setzero_si256();
        int32_t s;
        for (; end - k >= 16; k += 16) {
            /* x is int8: a 32-bit gather could read past its end, so its 16 values are loaded one by one */
            const int32_t *ix = indices + k;
            __m256i x_i16x16 = _mm256_setr_epi16(x[ix[0]], x[ix[1]], x[ix[2]], x[ix[3]], x[ix[4]], x[ix[5]],
                                                 x[ix[6]], x[ix[7]], x[ix[8]], x[ix[9]], x[ix[10]], x[ix[11]],
                                                 x[ix[12]], x[ix[13]], x[ix[14]], x[ix[15]]);
            __m256i v_i16x16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(values + k)));
            sum_i32x8 = _mm256_add_epi32(sum_i32x8, _mm256_madd_epi16(v_i16x16, x_i16x16));
        }
        s = hsum_i32x8_avx2(sum_i32x8);
        for (; k < end; ++k) s += (int32_t)values[k] * (int32_t)x[indices[k]];
        acc[i] = s;
    }
}

void td_csr_matvec_f32_avx2(const float *values, const int32_t *indices, const int32_t *indptr,
                            const float *bias, const float *x, size_t rows, float *y) {
    for (size_t i = 0; i < rows; ++i) {
        int32_t k = indptr[i];
        const int32_t end = indptr[i + 1];
        __m256 sum_f32x8 = _mm256_setzero_ps();
        float s;
        for (; end - k >= 8; k += 8) {
            __m256i idx_i32x8 = _mm256_loadu_si256((const __m256i *)(indices + k));
            __m256 x_f32x8 = _mm256_i32gather_ps(x, idx_i32x8, 4);
            sum_f32x8 = _mm256_fmadd_ps(_mm256_loadu_ps(values + k), x_f32x8, sum_f32x8);
        }
        s = hsum_f32x8_avx2(sum_f32x8);
        for (; k < end; ++k) s += values[k] * x[indices[k]];
        y[i] = s + (bias ? bias[i] : 0.0f);
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* FastGRNN                                                                                             */
/* ---------------------------------------------------------------------------------------------------- */

/* Buffers of hidden-sized vectors hold whole groups of 8; the lanes past hidden_dim are kept at 0. */

/* h_t = z h_{t-1} + (zeta (1 - z) + nu) tanh(a + b_h), z = sigmoid(a + b_z). */
static inline __m256 fastgrnn_cell_avx2(__m256 a_f32x8, __m256 bz_f32x8, __m256 bh_f32x8, __m256 h_f32x8,
                                        __m256 zeta_f32x8, __m256 nu_f32x8) {
    __m256 z_f32x8 = sigmoid_f32x8_avx2(_mm256_add_ps(a_f32x8, bz_f32x8));
    __m256 c_f32x8 = tanh_f32x8_avx2(_mm256_add_ps(a_f32x8, bh_f32x8));
    __m256 g_f32x8 = _mm256_fmadd_ps(zeta_f32x8, _mm256_sub_ps(_mm256_set1_ps(1.0f), z_f32x8), nu_f32x8);
    return _mm256_fmadd_ps(z_f32x8, h_f32x8, _mm256_mul_ps(g_f32x8, c_f32x8));
}

/* p[0 .. n) as f32 for n in [1, 7], zeros in the other lanes, with one 8-byte load inside [lo, lo + size)
 * where size >= 16 and [p, p + n) lies inside: the 8 bytes ending at p + n, or near lo the 8 from p, then
 * shifted and masked into place (no library call in the loop around it). */
static inline __m256 load_part_i8_f32x8_avx2(const int8_t *p, size_t n, const int8_t *lo) {
    size_t back = (size_t)(p - lo) >= 8 - n ? 8 - n : 0;
    uint64_t bytes;
    memcpy(&bytes, p - back, 8);
    bytes = (bytes >> 8 * back) & (((uint64_t)1 << 8 * n) - 1);
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128((long long)bytes)));
}

/* Rows r .. r + 7 of column j of a column-major matrix with rows rows, f32 (w32) or int8 (w8); when not full,
 * only the n = rows - r < 8 rows left (mask_i32x8 holds their lanes), zeros in the other lanes. */
TD_FORCE_INLINE __m256 load_col_avx2(const float *w32, const int8_t *w8, size_t rows, size_t j, size_t r, int full,
                                     __m256i mask_i32x8) {
    const size_t off = j * rows + r;
    if (full) return w8 ? load_i8_f32x8_avx2(w8 + off) : _mm256_loadu_ps(w32 + off);
    return w8 ? load_part_i8_f32x8_avx2(w8 + off, rows - r, w8) : _mm256_maskload_ps(w32 + off, mask_i32x8);
}

/* a_e[i + 8b + r] = sum_j M[i + 8b + r, j] x_e[j] (times scales[i + 8b + r] for int8) for E examples (E <= 4,
 * x_e = x + e x_stride, a_e = a + e a_stride) and B blocks of 8 rows from row i (B <= 2) of a column-major
 * matrix, f32 (w32) or int8 (w8). Every block is full but the last when !last_full, which holds the
 * rows - i - 8 (B - 1) < 8 rows left (lanes past them are stored as 0). Each column is loaded (and
 * converted) once for all E examples. The order of the sums is the same for every E and B and any alignment:
 * two partial sums a row, over the even and the odd columns in increasing j (an odd last column goes to the
 * even sum), then even + odd, as in small_matvec_avx2. */
TD_FORCE_INLINE void col_blocks_avx2(const float *w32, const int8_t *w8, const float *scales, size_t rows,
                                     size_t cols, size_t i, const float *x, size_t x_stride, int E, int B,
                                     int last_full, float *a, size_t a_stride) {
    __m256 acc0_f32x8[4][2], acc1_f32x8[4][2];
    const __m256i mask_i32x8 = lane_mask_i32x8_avx2(rows - i - 8 * (size_t)(B - 1));
    size_t j = 0;
    TD_UNROLL for (int e = 0; e < E; ++e)
        TD_UNROLL for (int b = 0; b < B; ++b) acc0_f32x8[e][b] = acc1_f32x8[e][b] = _mm256_setzero_ps();
    for (; j + 2 <= cols; j += 2) {
        TD_UNROLL for (int b = 0; b < B; ++b) {
            __m256 col0_f32x8 = load_col_avx2(w32, w8, rows, j, i + 8 * (size_t)b, b < B - 1 || last_full, mask_i32x8);
            TD_UNROLL for (int e = 0; e < E; ++e)
                acc0_f32x8[e][b] = _mm256_fmadd_ps(col0_f32x8, _mm256_set1_ps(x[(size_t)e * x_stride + j]),
                                                   acc0_f32x8[e][b]);
        }
        TD_UNROLL for (int b = 0; b < B; ++b) {
            __m256 col1_f32x8 =
                load_col_avx2(w32, w8, rows, j + 1, i + 8 * (size_t)b, b < B - 1 || last_full, mask_i32x8);
            TD_UNROLL for (int e = 0; e < E; ++e)
                acc1_f32x8[e][b] = _mm256_fmadd_ps(col1_f32x8, _mm256_set1_ps(x[(size_t)e * x_stride + j + 1]),
                                                   acc1_f32x8[e][b]);
        }
    }
    if (j < cols)
        TD_UNROLL for (int b = 0; b < B; ++b) {
            __m256 col0_f32x8 = load_col_avx2(w32, w8, rows, j, i + 8 * (size_t)b, b < B - 1 || last_full, mask_i32x8);
            TD_UNROLL for (int e = 0; e < E; ++e)
                acc0_f32x8[e][b] = _mm256_fmadd_ps(col0_f32x8, _mm256_set1_ps(x[(size_t)e * x_stride + j]),
                                                   acc0_f32x8[e][b]);
        }
    TD_UNROLL for (int b = 0; b < B; ++b) {
        size_t r = i + 8 * (size_t)b;
        __m256 scale_f32x8 = _mm256_setzero_ps();
        if (w8 && (b < B - 1 || last_full))
            scale_f32x8 = _mm256_loadu_ps(scales + r);
        else if (w8)
            scale_f32x8 = _mm256_maskload_ps(scales + r, mask_i32x8);
        TD_UNROLL for (int e = 0; e < E; ++e) {
            __m256 sum_f32x8 = _mm256_add_ps(acc0_f32x8[e][b], acc1_f32x8[e][b]);
            if (w8) sum_f32x8 = _mm256_mul_ps(sum_f32x8, scale_f32x8);
            _mm256_storeu_ps(a + (size_t)e * a_stride + r, sum_f32x8);
        }
    }
}

/* How many examples dense_w_group_avx2 takes at once. */
#define TD_GROUP_AVX2 4

TD_FORCE_INLINE void dense_group_avx2(const float *w32, const int8_t *w8, const float *scales, size_t rows,
                                      size_t cols, const float *x, size_t x_stride, size_t count, float *a,
                                      size_t a_stride) {
    if (count == TD_GROUP_AVX2) {
        size_t i = 0;
        for (; i + 8 <= rows; i += 8)
            col_blocks_avx2(w32, w8, scales, rows, cols, i, x, x_stride, TD_GROUP_AVX2, 1, 1, a, a_stride);
        if (i < rows) col_blocks_avx2(w32, w8, scales, rows, cols, i, x, x_stride, TD_GROUP_AVX2, 1, 0, a, a_stride);
        return;
    }
    for (size_t e = 0; e < count; ++e) { /* one example: two blocks at once where there are, for four sums */
        const float *xe = x + e * x_stride;
        float *ae = a + e * a_stride;
        size_t i = 0;
        for (; i + 16 <= rows; i += 16) col_blocks_avx2(w32, w8, scales, rows, cols, i, xe, 0, 1, 2, 1, ae, 0);
        if (rows - i > 8)
            col_blocks_avx2(w32, w8, scales, rows, cols, i, xe, 0, 1, 2, 0, ae, 0);
        else if (rows - i == 8)
            col_blocks_avx2(w32, w8, scales, rows, cols, i, xe, 0, 1, 1, 1, ae, 0);
        else if (rows > i)
            col_blocks_avx2(w32, w8, scales, rows, cols, i, xe, 0, 1, 1, 0, ae, 0);
    }
}

/* Whether dense_w_group_avx2 takes W: dense f32, or dense int8 whose short columns can be read with 8-byte
 * loads (at least 16 bytes in all, or no short column). */
static inline int groups_w_avx2(const td_matrix *w) {
    return w->kind == TD_MATRIX_DENSE_F32 ||
           (w->kind == TD_MATRIX_DENSE_I8 && (w->rows % 8 == 0 || (size_t)w->rows * (size_t)w->cols >= 16));
}

/* a_e = W x_e for count examples (count <= TD_GROUP_AVX2), x_e = x + e x_stride, a_e = a + e a_stride
 * (rows rounded up to 8 floats each, the padding 0), W as groups_w_avx2 takes it (times its row scales). A full
 * group loads and converts each column of W once for all of its examples; a smaller one takes them one by
 * one. The sums are the same either way (col_blocks_avx2), so an example's result does not depend on its
 * place in the batch. */
TD_NOINLINE void dense_w_group_avx2(const td_matrix *w, const float *x, size_t x_stride, size_t count, float *a,
                                   size_t a_stride) {
    const size_t rows = (size_t)w->rows, cols = (size_t)w->cols;
    if (w->kind == TD_MATRIX_DENSE_I8)
        dense_group_avx2(NULL, w->i8, w->scales, rows, cols, x, x_stride, count, a, a_stride);
    else
        dense_group_avx2(w->f32, NULL, NULL, rows, cols, x, x_stride, count, a, a_stride);
}

/* y = M x for a column-major rows x cols matrix, f32 (w32) or int8 (w8) times the per-row scales; y holds
 * rows rounded up to 8, the padding set to 0. Four accumulators over the columns keep long rows from
 * waiting on the latency of one FMA chain. */
TD_FORCE_INLINE void dense_cols_avx2(const float *w32, const int8_t *w8, const float *scales, size_t rows,
                                     size_t cols, const float *x, float *y) {
    for (size_t i = 0; i < rows; i += 8) {
        const size_t n = rows - i;
        __m256 sum_f32x8[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        size_t j = 0;
        for (; j + 4 <= cols; j += 4)
            for (int k = 0; k < 4; ++k) {
                size_t off = (j + (size_t)k) * rows + i;
                __m256 col_f32x8 = w8 ? loadn_i8_f32x8_avx2(w8 + off, n) : loadn_f32x8_avx2(w32 + off, n);
                sum_f32x8[k] = _mm256_fmadd_ps(col_f32x8, _mm256_set1_ps(x[j + (size_t)k]), sum_f32x8[k]);
            }
        for (; j < cols; ++j) {
            __m256 col_f32x8 = w8 ? loadn_i8_f32x8_avx2(w8 + j * rows + i, n) : loadn_f32x8_avx2(w32 + j * rows + i, n);
            sum_f32x8[0] = _mm256_fmadd_ps(col_f32x8, _mm256_set1_ps(x[j]), sum_f32x8[0]);
        }
        __m256 total_f32x8 = _mm256_add_ps(_mm256_add_ps(sum_f32x8[0], sum_f32x8[1]),
                                           _mm256_add_ps(sum_f32x8[2], sum_f32x8[3]));
        if (w8) total_f32x8 = _mm256_mul_ps(total_f32x8, loadn_f32x8_avx2(scales + i, n));
        _mm256_storeu_ps(y + i, total_f32x8);
    }
}

static void dense_cols_f32_avx2(const float *m, size_t rows, size_t cols, const float *x, float *y) {
    dense_cols_avx2(m, NULL, NULL, rows, cols, x, y);
}

static void dense_cols_i8_avx2(const int8_t *m, const float *scales, size_t rows, size_t cols,
                               const float *x, float *y) {
    dense_cols_avx2(NULL, m, scales, rows, cols, x, y);
}

/* y = M x for any matrix kind (x: cols floats); y as in dense_cols_f32_avx2. */
static void matrix_apply_avx2(const td_matrix *m, const float *x, float *y) {
    const size_t rows = (size_t)m->rows, cols = (size_t)m->cols;
    switch (m->kind) {
    case TD_MATRIX_DENSE_F32:
        dense_cols_f32_avx2(m->f32, rows, cols, x, y);
        return;
    case TD_MATRIX_LOWRANK_F32: {
        float t[TD_FASTGRNN_MAX_DIM];
        dense_cols_f32_avx2(m->f32_right, (size_t)m->rank, cols, x, t);
        dense_cols_f32_avx2(m->f32, rows, (size_t)m->rank, t, y);
        return;
    }
    case TD_MATRIX_DENSE_I8:
        dense_cols_i8_avx2(m->i8, m->scales, rows, cols, x, y);
        return;
    case TD_MATRIX_SPARSE_I8:
        td_csr_matvec_i8_f32_avx2(m->i8, m->indices, m->indptr, m->scales, NULL, x, rows, y);
        break;
    case TD_MATRIX_SPARSE_F32:
        td_csr_matvec_f32_avx2(m->f32, m->indices, m->indptr, NULL, x, rows, y);
        break;
    default:
        memset(y, 0, rows * sizeof(float));
        break;
    }
    for (size_t i = rows; i % 8 != 0; ++i) y[i] = 0.0f;
}

/* Final hidden state h (padded) of one sequence x, any matrix kinds and hidden_dim. wx, when not NULL, is
 * W x_0 already computed (padded like a), for a one-step model. */
static void fastgrnn_hidden_avx2(const td_fastgrnn *m, const float *x, const float *wx, __m256 zeta_f32x8,
                                 __m256 nu_f32x8, float *h) {
    const size_t hidden = (size_t)m->hidden_dim, inputs = (size_t)m->input_dim;
    float a[TD_FASTGRNN_MAX_DIM], uh[TD_FASTGRNN_MAX_DIM];
    memset(h, 0, (hidden + 7) / 8 * 8 * sizeof(float));
    for (int32_t t = 0; t < m->timesteps; ++t) {
        const float *at = wx && t == 0 ? wx : a;
        if (at == a) matrix_apply_avx2(&m->w, x + (size_t)t * inputs, a);
        if (t > 0) matrix_apply_avx2(&m->u, h, uh); /* h_0 = 0, so U h_0 = 0 */
        for (size_t i = 0; i < hidden; i += 8) {
            const size_t n = hidden - i;
            __m256 a_f32x8 = _mm256_loadu_ps(at + i);
            if (t > 0) a_f32x8 = _mm256_add_ps(a_f32x8, _mm256_loadu_ps(uh + i));
            __m256 bz_f32x8 = loadn_f32x8_avx2(m->b_z + i, n), bh_f32x8 = loadn_f32x8_avx2(m->b_h + i, n);
            __m256 h_f32x8 = _mm256_loadu_ps(h + i);
            h_f32x8 = fastgrnn_cell_avx2(a_f32x8, bz_f32x8, bh_f32x8, h_f32x8, zeta_f32x8, nu_f32x8);
            _mm256_storeu_ps(h + i, h_f32x8);
        }
    }
}

/* sum_j col_j x_j for a column-major hidden x cols f32 matrix, hidden <= 8. */
static inline __m256 small_matvec_avx2(const float *m, size_t hidden, size_t cols, const float *x) {
    __m256 sum0_f32x8 = _mm256_setzero_ps(), sum1_f32x8 = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 2 <= cols; j += 2) {
        __m256 col0_f32x8 = loadn_f32x8_avx2(m + j * hidden, hidden);
        __m256 col1_f32x8 = loadn_f32x8_avx2(m + (j + 1) * hidden, hidden);
        sum0_f32x8 = _mm256_fmadd_ps(col0_f32x8, _mm256_set1_ps(x[j]), sum0_f32x8);
        sum1_f32x8 = _mm256_fmadd_ps(col1_f32x8, _mm256_set1_ps(x[j + 1]), sum1_f32x8);
    }
    if (j < cols)
        sum0_f32x8 = _mm256_fmadd_ps(loadn_f32x8_avx2(m + j * hidden, hidden), _mm256_set1_ps(x[j]), sum0_f32x8);
    return _mm256_add_ps(sum0_f32x8, sum1_f32x8);
}

/* U h for a column-major hidden x hidden f32 matrix with h in one register, hidden <= 8. */
static inline __m256 small_matvec_reg_avx2(const float *u, size_t hidden, __m256 h_f32x8) {
    __m256 sum0_f32x8 = _mm256_setzero_ps(), sum1_f32x8 = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 2 <= hidden; j += 2) {
        __m256 h0_f32x8 = _mm256_permutevar8x32_ps(h_f32x8, _mm256_set1_epi32((int)j));
        __m256 h1_f32x8 = _mm256_permutevar8x32_ps(h_f32x8, _mm256_set1_epi32((int)j + 1));
        sum0_f32x8 = _mm256_fmadd_ps(loadn_f32x8_avx2(u + j * hidden, hidden), h0_f32x8, sum0_f32x8);
        sum1_f32x8 = _mm256_fmadd_ps(loadn_f32x8_avx2(u + (j + 1) * hidden, hidden), h1_f32x8, sum1_f32x8);
    }
    if (j < hidden) {
        __m256 h0_f32x8 = _mm256_permutevar8x32_ps(h_f32x8, _mm256_set1_epi32((int)j));
        sum0_f32x8 = _mm256_fmadd_ps(loadn_f32x8_avx2(u + j * hidden, hidden), h0_f32x8, sum0_f32x8);
    }
    return _mm256_add_ps(sum0_f32x8, sum1_f32x8);
}

/* M x for a matrix of at most 8 rows and any kind, in one register (lanes past the rows are 0). */
static inline __m256 small_apply_avx2(const td_matrix *mat, const float *x) {
    const size_t rows = (size_t)mat->rows, cols = (size_t)mat->cols;
    if (mat->kind == TD_MATRIX_DENSE_F32) return small_matvec_avx2(mat->f32, rows, cols, x);
    if (mat->kind == TD_MATRIX_DENSE_I8) {
        __m256 sum0_f32x8 = _mm256_setzero_ps(), sum1_f32x8 = _mm256_setzero_ps();
        size_t j = 0;
        for (; j + 2 <= cols; j += 2) {
            __m256 col0_f32x8 = loadn_i8_f32x8_avx2(mat->i8 + j * rows, rows);
            __m256 col1_f32x8 = loadn_i8_f32x8_avx2(mat->i8 + (j + 1) * rows, rows);
            sum0_f32x8 = _mm256_fmadd_ps(col0_f32x8, _mm256_set1_ps(x[j]), sum0_f32x8);
            sum1_f32x8 = _mm256_fmadd_ps(col1_f32x8, _mm256_set1_ps(x[j + 1]), sum1_f32x8);
        }
        if (j < cols) {
            __m256 col0_f32x8 = loadn_i8_f32x8_avx2(mat->i8 + j * rows, rows);
            sum0_f32x8 = _mm256_fmadd_ps(col0_f32x8, _mm256_set1_ps(x[j]), sum0_f32x8);
        }
        return _mm256_mul_ps(_mm256_add_ps(sum0_f32x8, sum1_f32x8), loadn_f32x8_avx2(mat->scales, rows));
    }
    float y[8] = {0};
    if (mat->kind == TD_MATRIX_SPARSE_I8 || mat->kind == TD_MATRIX_SPARSE_F32) {
        /* at most 8 short rows: a plain loop beats setting up gathers */
        for (size_t i = 0; i < rows; ++i) {
            float acc = 0.0f;
            for (int32_t k = mat->indptr[i]; k < mat->indptr[i + 1]; ++k)
                acc += (mat->kind == TD_MATRIX_SPARSE_I8 ? (float)mat->i8[k] : mat->f32[k]) * x[mat->indices[k]];
            y[i] = mat->kind == TD_MATRIX_SPARSE_I8 ? acc * mat->scales[i] : acc;
        }
        return _mm256_loadu_ps(y);
    }
    matrix_apply_avx2(mat, x, y); /* writes rows rounded up to 8, padding 0 */
    return _mm256_loadu_ps(y);
}

/* td_fastgrnn_output_ with vector logits: logit_o = (sum of the 8 lanes of one FMA chain over the blocks of
 * 8 hidden units, lane l taking w_out[o, i] h[i] for i = l mod 8) + b_out[o]. The sigmoid (output_dim 1) and
 * the softmax are td_fastgrnn_probs_. The scalar dot products took about 60 ns an item at
 * hidden 32 and output_dim 4. h: hidden floats. */
static void fastgrnn_output_avx2(const td_fastgrnn *m, const float *h, float *out) {
    const size_t hidden = (size_t)m->hidden_dim, outputs = (size_t)m->output_dim;
    float logits[TD_FASTGRNN_MAX_DIM];
    for (size_t o = 0; o < outputs; ++o) {
        const float *row = m->w_out + o * hidden;
        __m256 dot_f32x8 = _mm256_setzero_ps();
        for (size_t i = 0; i < hidden; i += 8)
            dot_f32x8 = _mm256_fmadd_ps(loadn_f32x8_avx2(row + i, hidden - i), loadn_f32x8_avx2(h + i, hidden - i),
                                        dot_f32x8);
        logits[o] = hsum_f32x8_avx2(dot_f32x8) + m->b_out[o];
    }
    td_fastgrnn_probs_(logits, outputs, out);
}

/* Sets lane n % 8 of *logits to v (v holds the logit of item n in every lane). When that group of 8 items
 * is complete, or n is the last item, writes the sigmoid of the group to out: one vector sigmoid per 8. */
static inline void push_logit_avx2(__m256 *logits_f32x8, __m256 v_f32x8, size_t n, size_t batch, float *out) {
    const size_t lane = n & 7;
    const __m256i lane_i32x8 = _mm256_cmpeq_epi32(_mm256_set1_epi32((int)lane),
                                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    *logits_f32x8 = _mm256_blendv_ps(*logits_f32x8, v_f32x8, _mm256_castsi256_ps(lane_i32x8));
    if (lane == 7 || n + 1 == batch) storen_f32x8_avx2(out + (n - lane), lane + 1, sigmoid_f32x8_avx2(*logits_f32x8));
}

/* The hot case: hidden_dim <= 8, the whole state in one register (dense f32 U applied in registers). */
static void fastgrnn_small_avx2(const td_fastgrnn *m, const float *x, size_t batch, __m256 zeta_f32x8,
                                __m256 nu_f32x8, float *out) {
    const size_t hidden = (size_t)m->hidden_dim, inputs = (size_t)m->input_dim;
    const size_t outputs = (size_t)m->output_dim;
    const size_t steps = (size_t)m->timesteps;
    const __m256 bz_f32x8 = loadn_f32x8_avx2(m->b_z, hidden), bh_f32x8 = loadn_f32x8_avx2(m->b_h, hidden);
    const __m256 wout_f32x8 = loadn_f32x8_avx2(m->w_out, hidden), bout_f32x8 = _mm256_set1_ps(m->b_out[0]);
    __m256 logits_f32x8 = _mm256_setzero_ps();
    float group[TD_GROUP_AVX2 * 8];
    /* one-step items in full groups take W x together; the rest one by one (small_apply_avx2: the same sums) */
    const size_t grouped_end = steps == 1 && groups_w_avx2(&m->w) ? batch - batch % TD_GROUP_AVX2 : 0;
    for (size_t n = 0; n < batch; ++n) {
        const float *xn = x + n * steps * inputs;
        __m256 h_f32x8 = _mm256_setzero_ps();
        if (n < grouped_end && n % TD_GROUP_AVX2 == 0)
            dense_w_group_avx2(&m->w, xn, inputs, TD_GROUP_AVX2, group, 8);
        for (size_t t = 0; t < steps; ++t) {
            __m256 a_f32x8 = n < grouped_end ? _mm256_loadu_ps(group + n % TD_GROUP_AVX2 * 8)
                                             : small_apply_avx2(&m->w, xn + t * inputs);
            if (t > 0 && m->u.kind == TD_MATRIX_DENSE_F32) {
                a_f32x8 = _mm256_add_ps(a_f32x8, small_matvec_reg_avx2(m->u.f32, hidden, h_f32x8));
            } else if (t > 0) {
                float h[8];
                _mm256_storeu_ps(h, h_f32x8);
                a_f32x8 = _mm256_add_ps(a_f32x8, small_apply_avx2(&m->u, h));
            }
            h_f32x8 = fastgrnn_cell_avx2(a_f32x8, bz_f32x8, bh_f32x8, h_f32x8, zeta_f32x8, nu_f32x8);
        }
        if (outputs == 1) {
            __m256 dot_f32x8 = hsum_bcast_f32x8_avx2(_mm256_mul_ps(wout_f32x8, h_f32x8));
            push_logit_avx2(&logits_f32x8, _mm256_add_ps(dot_f32x8, bout_f32x8), n, batch, out);
        } else {
            float h[8];
            _mm256_storeu_ps(h, h_f32x8);
            fastgrnn_output_avx2(m, h, out + n * outputs);
        }
    }
}

void td_fastgrnn_batch_avx2(const td_fastgrnn *m, const float *x, size_t batch, float *out) {
    const size_t hidden = (size_t)m->hidden_dim, outputs = (size_t)m->output_dim;
    const size_t step = (size_t)m->timesteps * (size_t)m->input_dim;
    /* sigmoid(zeta) and sigmoid(nu) from lanes 0 and 1 of one vector sigmoid */
    const __m256 gates_f32x8 = sigmoid_f32x8_avx2(_mm256_setr_ps(m->zeta, m->nu, 0, 0, 0, 0, 0, 0));
    const __m256 zeta_f32x8 = _mm256_permutevar8x32_ps(gates_f32x8, _mm256_setzero_si256());
    const __m256 nu_f32x8 = _mm256_permutevar8x32_ps(gates_f32x8, _mm256_set1_epi32(1));
    const size_t padded = (hidden + 7) / 8 * 8;
    const int grouped = m->timesteps == 1 && groups_w_avx2(&m->w);
    float h[TD_FASTGRNN_MAX_DIM], group[TD_GROUP_AVX2 * TD_FASTGRNN_MAX_DIM];
    __m256 logits_f32x8 = _mm256_setzero_ps();
    if (hidden <= 8) {
        fastgrnn_small_avx2(m, x, batch, zeta_f32x8, nu_f32x8, out);
        return;
    }
    for (size_t n = 0; n < batch; ++n) {
        if (grouped && n % TD_GROUP_AVX2 == 0)
            dense_w_group_avx2(&m->w, x + n * step, step, batch - n < TD_GROUP_AVX2 ? batch - n : TD_GROUP_AVX2,
                               group, padded);
        fastgrnn_hidden_avx2(m, x + n * step, grouped ? group + n % TD_GROUP_AVX2 * padded : NULL, zeta_f32x8,
                             nu_f32x8, h);
        if (outputs == 1) {
            __m256 dot_f32x8 = _mm256_setzero_ps();
            for (size_t i = 0; i < hidden; i += 8) {
                __m256 w_f32x8 = loadn_f32x8_avx2(m->w_out + i, hidden - i);
                dot_f32x8 = _mm256_fmadd_ps(w_f32x8, _mm256_loadu_ps(h + i), dot_f32x8);
            }
            dot_f32x8 = _mm256_add_ps(hsum_bcast_f32x8_avx2(dot_f32x8), _mm256_set1_ps(m->b_out[0]));
            push_logit_avx2(&logits_f32x8, dot_f32x8, n, batch, out);
        } else {
            fastgrnn_output_avx2(m, h, out + n * outputs);
        }
    }
}

void td_recency_frequency_avx2(double decay, double now, const double *created_at,
                               const int64_t *access_count, size_t n, float *recency, float *frequency) {
    td_recency_frequency_(decay, now, created_at, access_count, n, recency, frequency);
}
