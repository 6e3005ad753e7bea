#include <immintrin.h>
#include "td_internal.h"
#include "td_feature_math.h"

#include <string.h>

/* td_avx512.c - AVX-512 (F, BW, DQ, VL) kernels, built with only those flags. Each function has the
 * contract of its td_scalar.c counterpart. Tails use masked loads, which touch no memory in masked-off
 * lanes, so no kernel reads past either end of an array. */

/* ---------------------------------------------------------------------------------------------------- */
/* Helpers                                                                                              */
/* ---------------------------------------------------------------------------------------------------- */

/* The low rem lanes, rem in [0, 16]. */
TD_FORCE_INLINE __mmask16 mask16_avx512(size_t rem) { return (__mmask16)((1u << rem) - 1u); }

/* The low rem lanes, rem in [0, 32]. */
TD_FORCE_INLINE __mmask32 mask32_avx512(size_t rem) {
    return rem >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << rem) - 1u);
}

TD_FORCE_INLINE size_t min_size_avx512(size_t a, size_t b) { return a < b ? a : b; }

/* acc + the 16 f32 lanes of block_f32x16, widened to f64 (lane i and lane i + 8 go to f64 lane i). */
TD_FORCE_INLINE __m512d widen_add_f64x8_avx512(__m512d acc_f64x8, __m512 block_f32x16) {
    __m512d lo_f64x8 = _mm512_cvtps_pd(_mm512_castps512_ps256(block_f32x16));
    __m512d hi_f64x8 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(block_f32x16, 1));
    return _mm512_add_pd(acc_f64x8, _mm512_add_pd(lo_f64x8, hi_f64x8));
}

/* a b and acc + a b (one rounding) for the FastGRNN products. */
TD_FORCE_INLINE __m512 mul_avx512(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }

TD_FORCE_INLINE __m512 mul_add_avx512(__m512 a, __m512 b, __m512 acc) { return _mm512_fmadd_ps(a, b, acc); }

/* 16 int8 -> 16 f32. */
TD_FORCE_INLINE __m512 cvt_i8_f32x16_avx512(__m128i v_i8x16) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v_i8x16));
}

/* e^v for v <= 0 (or NaN), as in Cephes expf: n = round(v log2 e) (adding and subtracting 1.5 * 2^23
 * rounds), r = v - n ln 2 with ln 2 in two parts, e^r = 1 + r + r^2 P(r) with Cephes' degree-5 P (by Estrin's
 * scheme: a shorter dependency chain than Horner's), then times 2^n by scalef. v is floored at
 * TD_SIGMOID_EXP_MIN (-87), the floor of the sigmoid; a NaN stays NaN. Within 2 ulp of e^v. */
TD_FORCE_INLINE __m512 exp_neg_f32x16_avx512(__m512 v) {
    const __m512 shift = _mm512_set1_ps(12582912.0f);
    __m512 n, r, r2, r4, p01, p23, p45, p;
    v = _mm512_max_ps(_mm512_set1_ps(TD_SIGMOID_EXP_MIN), v); /* max returns v when v is NaN */
    n = _mm512_sub_ps(_mm512_fmadd_ps(v, _mm512_set1_ps(1.44269504088896341f), shift), shift);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), v);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    r2 = _mm512_mul_ps(r, r);
    r4 = _mm512_mul_ps(r2, r2);
    p01 = _mm512_fmadd_ps(_mm512_set1_ps(1.6666665459e-1f), r, _mm512_set1_ps(5.0000001201e-1f));
    p23 = _mm512_fmadd_ps(_mm512_set1_ps(8.3334519073e-3f), r, _mm512_set1_ps(4.1665795894e-2f));
    p45 = _mm512_fmadd_ps(_mm512_set1_ps(1.9875691500e-4f), r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p45, r4, _mm512_fmadd_ps(p23, r2, p01));
    p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* td_sigmoid_f32_ on 16 lanes: (v >= 0 ? 1 : e) / (1 + e), e = exp(max(-|v|, -87)) (the floor is exp's). */
TD_FORCE_INLINE __m512 sigmoid_f32x16_avx512(__m512 v) {
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 e = exp_neg_f32x16_avx512(_mm512_or_ps(v, _mm512_set1_ps(-0.0f))); /* -|v| */
    __mmask16 nonneg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GE_OQ); /* false for NaN */
    return _mm512_div_ps(_mm512_mask_blend_ps(nonneg, e, one), _mm512_add_ps(one, e));
}

/* sign(v) (1 - e) / (1 + e) with e = e^-2|v|: no overflow, saturates to +-1. */
TD_FORCE_INLINE __m512 tanh_f32x16_avx512(__m512 v) {
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 sign = _mm512_and_ps(v, _mm512_set1_ps(-0.0f));
    __m512 e = exp_neg_f32x16_avx512(_mm512_mul_ps(_mm512_set1_ps(-2.0f), _mm512_abs_ps(v)));
    return _mm512_xor_ps(sign, _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e)));
}

/* ---------------------------------------------------------------------------------------------------- */
/* Cosine                                                                                               */
/* ---------------------------------------------------------------------------------------------------- */

/* Each 64-element block is summed in f32 (4 products a lane), then widened into the f64 accumulators. */
void td_dot3_f32_avx512(const float *a, const float *b, size_t n, double out[3]) {
    __m512d ab_f64x8 = _mm512_setzero_pd(), aa_f64x8 = _mm512_setzero_pd(), bb_f64x8 = _mm512_setzero_pd();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 ab_f32x16 = _mm512_setzero_ps(), aa_f32x16 = _mm512_setzero_ps(), bb_f32x16 = _mm512_setzero_ps();
        for (size_t k = 0; k < 64; k += 16) {
            __m512 x_f32x16 = _mm512_loadu_ps(a + i + k), y_f32x16 = _mm512_loadu_ps(b + i + k);
            ab_f32x16 = _mm512_fmadd_ps(x_f32x16, y_f32x16, ab_f32x16);
            aa_f32x16 = _mm512_fmadd_ps(x_f32x16, x_f32x16, aa_f32x16);
            bb_f32x16 = _mm512_fmadd_ps(y_f32x16, y_f32x16, bb_f32x16);
        }
        ab_f64x8 = widen_add_f64x8_avx512(ab_f64x8, ab_f32x16);
        aa_f64x8 = widen_add_f64x8_avx512(aa_f64x8, aa_f32x16);
        bb_f64x8 = widen_add_f64x8_avx512(bb_f64x8, bb_f32x16);
    }
    if (i < n) { /* one last block of fewer than 64 */
        __m512 ab_f32x16 = _mm512_setzero_ps(), aa_f32x16 = _mm512_setzero_ps(), bb_f32x16 = _mm512_setzero_ps();
        for (; i < n; i += 16) {
            __mmask16 mask = mask16_avx512(min_size_avx512(n - i, 16));
            __m512 x_f32x16 = _mm512_maskz_loadu_ps(mask, a + i), y_f32x16 = _mm512_maskz_loadu_ps(mask, b + i);
            ab_f32x16 = _mm512_fmadd_ps(x_f32x16, y_f32x16, ab_f32x16);
            aa_f32x16 = _mm512_fmadd_ps(x_f32x16, x_f32x16, aa_f32x16);
            bb_f32x16 = _mm512_fmadd_ps(y_f32x16, y_f32x16, bb_f32x16);
        }
        ab_f64x8 = widen_add_f64x8_avx512(ab_f64x8, ab_f32x16);
        aa_f64x8 = widen_add_f64x8_avx512(aa_f64x8, aa_f32x16);
        bb_f64x8 = widen_add_f64x8_avx512(bb_f64x8, bb_f32x16);
    }
    out[0] = _mm512_reduce_add_pd(ab_f64x8);
    out[1] = _mm512_reduce_add_pd(aa_f64x8);
    out[2] = _mm512_reduce_add_pd(bb_f64x8);
}

double td_sumsq_f32_avx512(const float *a, size_t n) {
    __m512d sum_f64x8 = _mm512_setzero_pd();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 sum_f32x16 = _mm512_setzero_ps();
        for (size_t k = 0; k < 64; k += 16) {
            __m512 x_f32x16 = _mm512_loadu_ps(a + i + k);
            sum_f32x16 = _mm512_fmadd_ps(x_f32x16, x_f32x16, sum_f32x16);
        }
        sum_f64x8 = widen_add_f64x8_avx512(sum_f64x8, sum_f32x16);
    }
    if (i < n) {
        __m512 sum_f32x16 = _mm512_setzero_ps();
        for (; i < n; i += 16) {
            __m512 x_f32x16 = _mm512_maskz_loadu_ps(mask16_avx512(min_size_avx512(n - i, 16)), a + i);
            sum_f32x16 = _mm512_fmadd_ps(x_f32x16, x_f32x16, sum_f32x16);
        }
        sum_f64x8 = widen_add_f64x8_avx512(sum_f64x8, sum_f32x16);
    }
    return _mm512_reduce_add_pd(sum_f64x8);
}

/* query . row for R consecutive rows (R <= 8): f32 products summed 8 to a lane (a 128-float block, or the
 * tail), each sum widened to f64, so a 384-d result is well within 1e-6 of f64. The order of the sums does
 * not depend on where the arrays start, so results are the same for any alignment. Lane r of the result
 * is row r. */
TD_FORCE_INLINE __m512d dot_rows_f32_avx512(const float *query, const float *rows, size_t dim, int R) {
    __m512d dot_f64x8[8], p01, p23, p45, p67, q0, q1;
    __m512 rest_f32x16[8];
    size_t i = 0;
    for (int r = 0; r < 8; ++r) dot_f64x8[r] = _mm512_setzero_pd();
    for (int r = 0; r < R; ++r) rest_f32x16[r] = _mm512_setzero_ps();
    for (; i + 128 <= dim; i += 128) {
        for (int r = 0; r < R; ++r) {
            const float *p = rows + (size_t)r * dim + i;
            __m512 dot_f32x16 = _mm512_mul_ps(_mm512_loadu_ps(query + i), _mm512_loadu_ps(p));
            for (size_t k = 16; k < 128; k += 16)
                dot_f32x16 = _mm512_fmadd_ps(_mm512_loadu_ps(query + i + k), _mm512_loadu_ps(p + k), dot_f32x16);
            dot_f64x8[r] = widen_add_f64x8_avx512(dot_f64x8[r], dot_f32x16);
        }
    }
    for (; i < dim; i += 16) {
        __mmask16 mask = mask16_avx512(min_size_avx512(dim - i, 16));
        __m512 q_f32x16 = _mm512_maskz_loadu_ps(mask, query + i);
        for (int r = 0; r < R; ++r)
            rest_f32x16[r] = _mm512_fmadd_ps(q_f32x16, _mm512_maskz_loadu_ps(mask, rows + (size_t)r * dim + i),
                                             rest_f32x16[r]);
    }
    for (int r = 0; r < R; ++r) dot_f64x8[r] = widen_add_f64x8_avx512(dot_f64x8[r], rest_f32x16[r]);
    /* transpose-add: lane r of the result is the sum of dot_f64x8[r] */
    p01 = _mm512_add_pd(_mm512_unpacklo_pd(dot_f64x8[0], dot_f64x8[1]), _mm512_unpackhi_pd(dot_f64x8[0], dot_f64x8[1]));
    p23 = _mm512_add_pd(_mm512_unpacklo_pd(dot_f64x8[2], dot_f64x8[3]), _mm512_unpackhi_pd(dot_f64x8[2], dot_f64x8[3]));
    p45 = _mm512_add_pd(_mm512_unpacklo_pd(dot_f64x8[4], dot_f64x8[5]), _mm512_unpackhi_pd(dot_f64x8[4], dot_f64x8[5]));
    p67 = _mm512_add_pd(_mm512_unpacklo_pd(dot_f64x8[6], dot_f64x8[7]), _mm512_unpackhi_pd(dot_f64x8[6], dot_f64x8[7]));
    q0 = _mm512_add_pd(_mm512_shuffle_f64x2(p01, p23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f64x2(p01, p23, _MM_SHUFFLE(3, 1, 3, 1)));
    q1 = _mm512_add_pd(_mm512_shuffle_f64x2(p45, p67, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f64x2(p45, p67, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_pd(_mm512_shuffle_f64x2(q0, q1, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f64x2(q0, q1, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Lane r (r < 4) of the result: the sum of the 8 lanes of v[r]. */
TD_FORCE_INLINE __m256d reduce4_f64x8_avx512(const __m512d v[4]) {
    __m512d p01 = _mm512_add_pd(_mm512_unpacklo_pd(v[0], v[1]), _mm512_unpackhi_pd(v[0], v[1]));
    __m512d p23 = _mm512_add_pd(_mm512_unpacklo_pd(v[2], v[3]), _mm512_unpackhi_pd(v[2], v[3]));
    __m512d q = _mm512_add_pd(_mm512_shuffle_f64x2(p01, p23, _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f64x2(p01, p23, _MM_SHUFFLE(3, 1, 3, 1)));
    q = _mm512_shuffle_f64x2(q, q, _MM_SHUFFLE(3, 1, 2, 0));
    return _mm256_add_pd(_mm512_castpd512_pd256(q), _mm512_extractf64x4_pd(q, 1));
}

/* Cosines of R rows (R <= 4) without norms: query . row and row . row summed as in dot_rows_f32_avx512, then
 * ab / (query_norm * sqrt(bb)) for the R rows at once, and td_cosine_from_f32_dots_ on the rare rows it
 * does not cover (non-finite, zero or tiny). */
TD_FORCE_INLINE void cosine_rows_avx512(const float *query, double query_norm, const float *rows, size_t dim, int R,
                                        float *out) {
    __m512d dot_f64x8[4], sq_f64x8[4];
    __m512 rest_dot_f32x16[4], rest_sq_f32x16[4];
    __m256d ab_f64x4, bb_f64x4, c_f64x4;
    __mmask8 live = (__mmask8)((1u << R) - 1u), ok;
    double aa = query_norm * query_norm;
    size_t i = 0;
    for (int r = 0; r < 4; ++r) dot_f64x8[r] = sq_f64x8[r] = _mm512_setzero_pd();
    for (int r = 0; r < R; ++r) rest_dot_f32x16[r] = rest_sq_f32x16[r] = _mm512_setzero_ps();
    for (; i + 128 <= dim; i += 128) {
        for (int r = 0; r < R; ++r) {
            const float *p = rows + (size_t)r * dim + i;
            __m512 y_f32x16 = _mm512_loadu_ps(p);
            __m512 dot_f32x16 = _mm512_mul_ps(_mm512_loadu_ps(query + i), y_f32x16);
            __m512 sq_f32x16 = _mm512_mul_ps(y_f32x16, y_f32x16);
            for (size_t k = 16; k < 128; k += 16) {
                y_f32x16 = _mm512_loadu_ps(p + k);
                dot_f32x16 = _mm512_fmadd_ps(_mm512_loadu_ps(query + i + k), y_f32x16, dot_f32x16);
                sq_f32x16 = _mm512_fmadd_ps(y_f32x16, y_f32x16, sq_f32x16);
            }
            dot_f64x8[r] = widen_add_f64x8_avx512(dot_f64x8[r], dot_f32x16);
            sq_f64x8[r] = widen_add_f64x8_avx512(sq_f64x8[r], sq_f32x16);
        }
    }
    for (; i < dim; i += 16) {
        __mmask16 mask = mask16_avx512(min_size_avx512(dim - i, 16));
        __m512 q_f32x16 = _mm512_maskz_loadu_ps(mask, query + i);
        for (int r = 0; r < R; ++r) {
            __m512 y_f32x16 = _mm512_maskz_loadu_ps(mask, rows + (size_t)r * dim + i);
            rest_dot_f32x16[r] = _mm512_fmadd_ps(q_f32x16, y_f32x16, rest_dot_f32x16[r]);
            rest_sq_f32x16[r] = _mm512_fmadd_ps(y_f32x16, y_f32x16, rest_sq_f32x16[r]);
        }
    }
    for (int r = 0; r < R; ++r) {
        dot_f64x8[r] = widen_add_f64x8_avx512(dot_f64x8[r], rest_dot_f32x16[r]);
        sq_f64x8[r] = widen_add_f64x8_avx512(sq_f64x8[r], rest_sq_f32x16[r]);
    }
    ab_f64x4 = reduce4_f64x8_avx512(dot_f64x8);
    bb_f64x4 = reduce4_f64x8_avx512(sq_f64x8);
    c_f64x4 = _mm256_div_pd(ab_f64x4, _mm256_mul_pd(_mm256_set1_pd(query_norm), _mm256_sqrt_pd(bb_f64x4)));
    c_f64x4 = _mm256_min_pd(_mm256_set1_pd(1.0), _mm256_max_pd(_mm256_set1_pd(-1.0), c_f64x4));
    _mm_mask_storeu_ps(out, live, _mm256_cvtpd_ps(c_f64x4));
    /* ab finite, and bb in [TD_TINY_SUMSQ, inf) */
    ok = _mm256_cmp_pd_mask(_mm256_andnot_pd(_mm256_set1_pd(-0.0), ab_f64x4), _mm256_set1_pd(INFINITY), _CMP_LT_OQ) &
         _mm256_cmp_pd_mask(bb_f64x4, _mm256_set1_pd(TD_TINY_SUMSQ), _CMP_GE_OQ) &
         _mm256_cmp_pd_mask(bb_f64x4, _mm256_set1_pd(INFINITY), _CMP_LT_OQ);
    if ((ok & live) != live || !(isfinite(aa) && aa >= TD_TINY_SUMSQ)) {
        double ab[4], bb[4];
        _mm256_storeu_pd(ab, ab_f64x4);
        _mm256_storeu_pd(bb, bb_f64x4);
        for (int r = 0; r < R; ++r) {
            double norm = sqrt(bb[r]);
            out[r] = (float)td_cosine_from_f32_dots_(ab[r], aa, norm * norm);
        }
    }
}

/* Cosines of R rows (R <= 8) with trusted norms: ab / (query_norm * norm) in f64 for every lane, then
 * td_cosine_from_f32_dots_ on the rare lanes it does not cover (non-finite, zero or tiny). */
TD_FORCE_INLINE void cosine_rows_normed_avx512(const float *query, double query_norm, const float *rows, size_t dim,
                                               const float *row_norms, int R, float *out) {
    __mmask8 live = (__mmask8)((1u << R) - 1u);
    double aa = query_norm * query_norm;
    __m512d ab_f64x8 = dot_rows_f32_avx512(query, rows, dim, R);
    __m512d norm_f64x8 = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(live, row_norms));
    __m512d bb_f64x8 = _mm512_mul_pd(norm_f64x8, norm_f64x8);
    __m512d c_f64x8 = _mm512_div_pd(ab_f64x8, _mm512_mul_pd(_mm512_set1_pd(query_norm), norm_f64x8));
    /* ab finite (|ab| < inf, false for NaN) and bb >= TD_TINY_SUMSQ */
    __mmask8 ok = _mm512_cmp_pd_mask(_mm512_abs_pd(ab_f64x8), _mm512_set1_pd(INFINITY), _CMP_LT_OQ) &
                  _mm512_cmp_pd_mask(bb_f64x8, _mm512_set1_pd(TD_TINY_SUMSQ), _CMP_GE_OQ);
    c_f64x8 = _mm512_min_pd(_mm512_set1_pd(1.0), _mm512_max_pd(_mm512_set1_pd(-1.0), c_f64x8));
    _mm256_mask_storeu_ps(out, live, _mm512_cvtpd_ps(c_f64x8));
    if ((ok & live) != live || !(isfinite(aa) && aa >= TD_TINY_SUMSQ)) {
        double ab[8], bb[8];
        _mm512_storeu_pd(ab, ab_f64x8);
        _mm512_storeu_pd(bb, bb_f64x8);
        for (int r = 0; r < R; ++r) out[r] = (float)td_cosine_from_f32_dots_(ab[r], aa, bb[r]);
    }
}

void td_cosine_batch_f32_avx512(const float *query, double query_norm, const float *rows, size_t n_rows,
                                size_t dim, const float *row_norms, float *out) {
    size_t r = 0;
    if (row_norms) { /* trusted norms: only a.b per row */
        for (; r + 8 <= n_rows; r += 8)
            cosine_rows_normed_avx512(query, query_norm, rows + r * dim, dim, row_norms + r, 8, out + r);
        if (r < n_rows)
            cosine_rows_normed_avx512(query, query_norm, rows + r * dim, dim, row_norms + r, (int)(n_rows - r),
                                      out + r);
    } else {
        for (; r + 4 <= n_rows; r += 4) cosine_rows_avx512(query, query_norm, rows + r * dim, dim, 4, out + r);
        if (r < n_rows) cosine_rows_avx512(query, query_norm, rows + r * dim, dim, (int)(n_rows - r), out + r);
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* Dense int8 mat-vec (row-major)                                                                       */
/* ---------------------------------------------------------------------------------------------------- */

/* f32 dot products of R consecutive int8 rows (R <= 4) with x, sharing the x loads. */
TD_FORCE_INLINE void dot_rows_i8_f32_avx512(const int8_t *w, const float *x, size_t cols, int R, float *dots) {
    __m512 acc_f32x16[4];
    size_t j = 0;
    for (int r = 0; r < R; ++r) acc_f32x16[r] = _mm512_setzero_ps();
    for (; j + 16 <= cols; j += 16) {
        __m512 x_f32x16 = _mm512_loadu_ps(x + j);
        for (int r = 0; r < R; ++r) {
            __m128i w_i8x16 = _mm_loadu_si128((const __m128i *)(w + (size_t)r * cols + j));
            acc_f32x16[r] = _mm512_fmadd_ps(cvt_i8_f32x16_avx512(w_i8x16), x_f32x16, acc_f32x16[r]);
        }
    }
    if (j < cols) {
        __mmask16 mask = mask16_avx512(cols - j);
        __m512 x_f32x16 = _mm512_maskz_loadu_ps(mask, x + j);
        for (int r = 0; r < R; ++r) {
            __m128i w_i8x16 = _mm_maskz_loadu_epi8(mask, w + (size_t)r * cols + j);
            acc_f32x16[r] = _mm512_fmadd_ps(cvt_i8_f32x16_avx512(w_i8x16), x_f32x16, acc_f32x16[r]);
        }
    }
    for (int r = 0; r < R; ++r) dots[r] = _mm512_reduce_add_ps(acc_f32x16[r]);
}

void td_matvec_i8_f32_avx512(const int8_t *w, const float *scales, const float *bias, const float *x,
                             size_t rows, size_t cols, float *y) {
    float dots[4];
    size_t i = 0;
    for (; i + 4 <= rows; i += 4) {
        dot_rows_i8_f32_avx512(w + i * cols, x, cols, 4, dots);
        for (size_t k = 0; k < 4; ++k) y[i + k] = scales[i + k] * dots[k] + (bias ? bias[i + k] : 0.0f);
    }
    for (; i < rows; ++i) {
        dot_rows_i8_f32_avx512(w + i * cols, x, cols, 1, dots);
        y[i] = scales[i] * dots[0] + (bias ? bias[i] : 0.0f);
    }
}

/* Exact int32 dot products of R consecutive int8 rows (R <= 4) with int8 x: 32 bytes at a time are
 * sign-extended to int16 and multiplied pairwise into int32 (madd: |2 * 128 * 128| fits, no saturation). */
TD_FORCE_INLINE void dot_rows_i8_i32_avx512(const int8_t *w, const int8_t *x, size_t cols, int R, int32_t *dots) {
    __m512i acc_i32x16[4];
    size_t j = 0;
    for (int r = 0; r < R; ++r) acc_i32x16[r] = _mm512_setzero_si512();
    for (; j + 32 <= cols; j += 32) {
        __m512i x_i16x32 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(x + j)));
        for (int r = 0; r < R; ++r) {
            __m256i w_i8x32 = _mm256_loadu_si256((const __m256i *)(w + (size_t)r * cols + j));
            __m512i prod_i32x16 = _mm512_madd_epi16(_mm512_cvtepi8_epi16(w_i8x32), x_i16x32);
            acc_i32x16[r] = _mm512_add_epi32(acc_i32x16[r], prod_i32x16);
        }
    }
    if (j < cols) {
        __mmask32 mask = mask32_avx512(cols - j);
        __m512i x_i16x32 = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(mask, x + j));
        for (int r = 0; r < R; ++r) {
            __m256i w_i8x32 = _mm256_maskz_loadu_epi8(mask, w + (size_t)r * cols + j);
            __m512i prod_i32x16 = _mm512_madd_epi16(_mm512_cvtepi8_epi16(w_i8x32), x_i16x32);
            acc_i32x16[r] = _mm512_add_epi32(acc_i32x16[r], prod_i32x16);
        }
    }
    for (int r = 0; r < R; ++r) dots[r] = _mm512_reduce_add_epi32(acc_i32x16[r]);
}

void td_matvec_i8_i32_avx512(const int8_t *w, const int8_t *x, size_t rows, size_t cols, int32_t *acc) {
    size_t i = 0;
    for (; i + 4 <= rows; i += 4) dot_rows_i8_i32_avx512(w + i * cols, x, cols, 4, acc + i);
    for (; i < rows; ++i) dot_rows_i8_i32_avx512(w + i * cols, x, cols, 1, acc + i);
}

/* ---------------------------------------------------------------------------------------------------- */
/* CSR mat-vec: one row at a time; rows of 16 or more entries gather x, shorter rows stay scalar.       */
/* ---------------------------------------------------------------------------------------------------- */

/* sum of values[k] * x[indices[k]] for k in [begin, end). */
static inline float csr_row_f32_avx512(const float *values, const int32_t *indices, size_t begin, size_t end,
                                       const float *x) {
    __m512 acc_f32x16 = _mm512_setzero_ps();
    if (end - begin < 16) {
        float acc = 0.0f;
        for (size_t k = begin; k < end; ++k) acc += values[k] * x[indices[k]];
        return acc;
    }
    for (size_t k = begin; k < end; k += 16) {
        __mmask16 mask = mask16_avx512(min_size_avx512(end - k, 16));
        __m512i idx_i32x16 = _mm512_maskz_loadu_epi32(mask, indices + k);
        __m512 x_f32x16 = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, idx_i32x16, x, 4);
        acc_f32x16 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, values + k), x_f32x16, acc_f32x16);
    }
    return _mm512_reduce_add_ps(acc_f32x16);
}

/* Same with int8 values (converted to f32). */
static inline float csr_row_i8_f32_avx512(const int8_t *values, const int32_t *indices, size_t begin, size_t end,
                                          const float *x) {
    __m512 acc_f32x16 = _mm512_setzero_ps();
    if (end - begin < 16) {
        float acc = 0.0f;
        for (size_t k = begin; k < end; ++k) acc += (float)values[k] * x[indices[k]];
        return acc;
    }
    for (size_t k = begin; k < end; k += 16) {
        __mmask16 mask = mask16_avx512(min_size_avx512(end - k, 16));
        __m512i idx_i32x16 = _mm512_maskz_loadu_epi32(mask, indices + k);
        __m512 x_f32x16 = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, idx_i32x16, x, 4);
        __m512 v_f32x16 = cvt_i8_f32x16_avx512(_mm_maskz_loadu_epi8(mask, values + k));
        acc_f32x16 = _mm512_fmadd_ps(v_f32x16, x_f32x16, acc_f32x16);
    }
    return _mm512_reduce_add_ps(acc_f32x16);
}

/* Exact int32 sum of values[k] * x[indices[k]] over int8 x. x[idx] is fetched as the top byte of the
 * 32-bit word at x + idx - 3, which lies inside x whenever idx >= 3; the rare lanes with idx < 3 are
 * added one by one. */
static inline int32_t csr_row_i8_i32_avx512(const int8_t *values, const int32_t *indices, size_t begin, size_t end,
                                            const int8_t *x) {
    const __m512i three_i32x16 = _mm512_set1_epi32(3);
    __m512i acc_i32x16 = _mm512_setzero_si512();
    int32_t acc = 0;
    if (end - begin < 16) {
        for (size_t k = begin; k < end; ++k) acc += (int32_t)values[k] * (int32_t)x[indices[k]];
        return acc;
    }
    for (size_t k = begin; k < end; k += 16) {
        __mmask16 mask = mask16_avx512(min_size_avx512(end - k, 16));
        __m512i idx_i32x16 = _mm512_maskz_loadu_epi32(mask, indices + k);
        __mmask16 low = _mm512_mask_cmplt_epi32_mask(mask, idx_i32x16, three_i32x16);
        __m512i word_i32x16 = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), (__mmask16)(mask & ~low),
                                                          _mm512_sub_epi32(idx_i32x16, three_i32x16), x, 1);
        __m512i x_i32x16 = _mm512_srai_epi32(word_i32x16, 24); /* sign-extended top byte */
        __m512i v_i32x16 = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, values + k));
        acc_i32x16 = _mm512_add_epi32(acc_i32x16, _mm512_mullo_epi32(v_i32x16, x_i32x16));
        for (unsigned lane = 0; low; ++lane, low >>= 1)
            if (low & 1u) acc += (int32_t)values[k + lane] * (int32_t)x[indices[k + lane]];
    }
    return acc + _mm512_reduce_add_epi32(acc_i32x16);
}

void td_csr_matvec_i8_f32_avx512(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                                 const float *scales, const float *bias, const float *x, size_t rows,
                                 float *y) {
    for (size_t i = 0; i < rows; ++i) {
        float acc = csr_row_i8_f32_avx512(values, indices, (size_t)indptr[i], (size_t)indptr[i + 1], x);
        y[i] = scales[i] * acc + (bias ? bias[i] : 0.0f);
    }
}

void td_csr_matvec_i8_i32_avx512(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                                 const int8_t *x, size_t rows, int32_t *acc) {
    for (size_t i = 0; i < rows; ++i)
        acc[i] = csr_row_i8_i32_avx512(values, indices, (size_t)indptr[i], (size_t)indptr[i + 1], x);
}

void td_csr_matvec_f32_avx512(const float *values, const int32_t *indices, const int32_t *indptr,
                              const float *bias, const float *x, size_t rows, float *y) {
    for (size_t i = 0; i < rows; ++i) {
        float acc = csr_row_f32_avx512(values, indices, (size_t)indptr[i], (size_t)indptr[i + 1], x);
        y[i] = acc + (bias ? bias[i] : 0.0f);
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* FastGRNN                                                                                             */
/* ---------------------------------------------------------------------------------------------------- */

/* One column of a column-major matrix (16 rows from off), f32 or int8 converted to f32. */
TD_FORCE_INLINE __m512 load_col_avx512(const float *w32, const int8_t *w8, int is_i8, size_t off, __mmask16 mask) {
    return is_i8 ? cvt_i8_f32x16_avx512(_mm_maskz_loadu_epi8(mask, w8 + off)) : _mm512_maskz_loadu_ps(mask, w32 + off);
}

/* sum_j M[rows i.., j] x_e[j] for E examples (E <= 4, x_e = x + e x_stride) and one block of up to 16 rows
 * (lanes in mask) of a column-major matrix; out[e] receives example e. Each column is loaded (and converted)
 * once for all E examples. The order of the sums is the same for every E and any alignment: four partial
 * sums a row, s_k over the columns j = k (mod 4) in increasing j (the last cols % 4 columns go to s_0), then
 * (s_0 + s_1) + (s_2 + s_3). The four chains of each example keep long rows from waiting on the latency of
 * one FMA chain; with E = 4 there are 16. */
TD_FORCE_INLINE void col_blocks_avx512(const float *w32, const int8_t *w8, int is_i8, size_t rows, size_t cols,
                                       size_t i, const float *x, size_t x_stride, int E, __mmask16 mask,
                                       __m512 *out) {
    __m512 acc_f32x16[4][4];
    size_t j = 0;
    TD_UNROLL for (int e = 0; e < E; ++e)
        TD_UNROLL for (int k = 0; k < 4; ++k) acc_f32x16[e][k] = _mm512_setzero_ps();
    for (; j + 4 <= cols; j += 4)
        TD_UNROLL for (size_t k = 0; k < 4; ++k) {
            __m512 col_f32x16 = load_col_avx512(w32, w8, is_i8, (j + k) * rows + i, mask);
            TD_UNROLL for (int e = 0; e < E; ++e)
                acc_f32x16[e][k] = mul_add_avx512(col_f32x16, _mm512_set1_ps(x[(size_t)e * x_stride + j + k]),
                                                  acc_f32x16[e][k]);
        }
    for (; j < cols; ++j) {
        __m512 col_f32x16 = load_col_avx512(w32, w8, is_i8, j * rows + i, mask);
        TD_UNROLL for (int e = 0; e < E; ++e)
            acc_f32x16[e][0] =
                mul_add_avx512(col_f32x16, _mm512_set1_ps(x[(size_t)e * x_stride + j]), acc_f32x16[e][0]);
    }
    TD_UNROLL for (int e = 0; e < E; ++e)
        out[e] = _mm512_add_ps(_mm512_add_ps(acc_f32x16[e][0], acc_f32x16[e][1]),
                               _mm512_add_ps(acc_f32x16[e][2], acc_f32x16[e][3]));
}

/* col_blocks_avx512 for one example. */
TD_FORCE_INLINE __m512 col_block_avx512(const float *w32, const int8_t *w8, int is_i8, size_t rows, size_t cols,
                                        size_t i, const float *x, __mmask16 mask) {
    __m512 sum_f32x16;
    col_blocks_avx512(w32, w8, is_i8, rows, cols, i, x, 0, 1, mask, &sum_f32x16);
    return sum_f32x16;
}

/* y = M x for a column-major rows x cols matrix: f32 (w32), or int8 (w8) times the per-row scales.
 * Vectorised over rows, 64 at a time in four registers, then 16 at a time with a masked tail. */
TD_FORCE_INLINE void dense_cols_avx512(const float *w32, const int8_t *w8, const float *scales, int is_i8, size_t rows,
                                       size_t cols, const float *x, float *y) {
    size_t i = 0;
    for (; i + 64 <= rows; i += 64) {
        __m512 acc0_f32x16 = _mm512_setzero_ps(), acc1_f32x16 = _mm512_setzero_ps();
        __m512 acc2_f32x16 = _mm512_setzero_ps(), acc3_f32x16 = _mm512_setzero_ps();
        for (size_t j = 0; j < cols; ++j) {
            __m512 xj_f32x16 = _mm512_set1_ps(x[j]);
            size_t off = j * rows + i;
            acc0_f32x16 = mul_add_avx512(load_col_avx512(w32, w8, is_i8, off, 0xFFFF), xj_f32x16, acc0_f32x16);
            acc1_f32x16 = mul_add_avx512(load_col_avx512(w32, w8, is_i8, off + 16, 0xFFFF), xj_f32x16, acc1_f32x16);
            acc2_f32x16 = mul_add_avx512(load_col_avx512(w32, w8, is_i8, off + 32, 0xFFFF), xj_f32x16, acc2_f32x16);
            acc3_f32x16 = mul_add_avx512(load_col_avx512(w32, w8, is_i8, off + 48, 0xFFFF), xj_f32x16, acc3_f32x16);
        }
        if (is_i8) {
            acc0_f32x16 = mul_avx512(acc0_f32x16, _mm512_loadu_ps(scales + i));
            acc1_f32x16 = mul_avx512(acc1_f32x16, _mm512_loadu_ps(scales + i + 16));
            acc2_f32x16 = mul_avx512(acc2_f32x16, _mm512_loadu_ps(scales + i + 32));
            acc3_f32x16 = mul_avx512(acc3_f32x16, _mm512_loadu_ps(scales + i + 48));
        }
        _mm512_storeu_ps(y + i, acc0_f32x16);
        _mm512_storeu_ps(y + i + 16, acc1_f32x16);
        _mm512_storeu_ps(y + i + 32, acc2_f32x16);
        _mm512_storeu_ps(y + i + 48, acc3_f32x16);
    }
    for (; i < rows; i += 16) {
        __mmask16 mask = mask16_avx512(min_size_avx512(rows - i, 16));
        __m512 acc_f32x16 = col_block_avx512(w32, w8, is_i8, rows, cols, i, x, mask);
        if (is_i8) acc_f32x16 = mul_avx512(acc_f32x16, _mm512_maskz_loadu_ps(mask, scales + i));
        _mm512_mask_storeu_ps(y + i, mask, acc_f32x16);
    }
}

/* y = M x (rows entries) for any matrix kind; tmp holds the rank intermediate of the low-rank form. */
static void matrix_apply_avx512(const td_matrix *mat, const float *x, float *y, float *tmp) {
    size_t rows = (size_t)mat->rows, cols = (size_t)mat->cols;
    switch (mat->kind) {
    case TD_MATRIX_DENSE_F32:
        dense_cols_avx512(mat->f32, NULL, NULL, 0, rows, cols, x, y);
        break;
    case TD_MATRIX_LOWRANK_F32:
        dense_cols_avx512(mat->f32_right, NULL, NULL, 0, (size_t)mat->rank, cols, x, tmp);
        dense_cols_avx512(mat->f32, NULL, NULL, 0, rows, (size_t)mat->rank, tmp, y);
        break;
    case TD_MATRIX_DENSE_I8:
        dense_cols_avx512(NULL, mat->i8, mat->scales, 1, rows, cols, x, y);
        break;
    case TD_MATRIX_SPARSE_I8:
        for (size_t i = 0; i < rows; ++i)
            y[i] = mat->scales[i] *
                   csr_row_i8_f32_avx512(mat->i8, mat->indices, (size_t)mat->indptr[i], (size_t)mat->indptr[i + 1], x);
        break;
    case TD_MATRIX_SPARSE_F32:
        for (size_t i = 0; i < rows; ++i)
            y[i] = csr_row_f32_avx512(mat->f32, mat->indices, (size_t)mat->indptr[i], (size_t)mat->indptr[i + 1], x);
        break;
    default:
        memset(y, 0, rows * sizeof(float));
        break;
    }
}

/* The lanes of mask from p, the others 0. Masked-off lanes are never read, but where they reach an unmapped
 * page the load is very slow (a fault-suppression assist), so a mask within the low 8 lanes addresses only
 * 32 bytes. */
TD_FORCE_INLINE __m512 load_lanes_avx512(const float *p, __mmask16 mask) {
    if (mask & 0xFF00) return _mm512_maskz_loadu_ps(mask, p);
    return _mm512_zextps256_ps512(_mm256_maskz_loadu_ps((__mmask8)mask, p));
}

/* M x for a matrix of at most 16 rows, returned in one register (lanes outside mask are 0). The dense
 * forms stay in registers; the others go through matrix_apply_avx512 (tmp: 16 + TD_FASTGRNN_MAX_DIM floats). */
TD_FORCE_INLINE __m512 apply_small_avx512(const td_matrix *mat, const float *x, __mmask16 mask, float *tmp) {
    size_t rows = (size_t)mat->rows, cols = (size_t)mat->cols;
    switch (mat->kind) {
    case TD_MATRIX_DENSE_F32:
        return col_block_avx512(mat->f32, NULL, 0, rows, cols, 0, x, mask);
    case TD_MATRIX_DENSE_I8:
        return mul_avx512(col_block_avx512(NULL, mat->i8, 1, rows, cols, 0, x, mask),
                          load_lanes_avx512(mat->scales, mask));
    default:
        matrix_apply_avx512(mat, x, tmp, tmp + 16);
        return load_lanes_avx512(tmp, mask);
    }
}

/* How many examples dense_w_group_avx512 takes at once. */
#define TD_GROUP_AVX512 4

TD_FORCE_INLINE void dense_group_avx512(const float *w32, const int8_t *w8, const float *scales, int is_i8,
                                        size_t rows, size_t cols, const float *x, size_t x_stride, size_t count,
                                        float *a, size_t a_stride) {
    for (size_t i = 0; i < rows; i += 16) {
        __mmask16 mask = mask16_avx512(min_size_avx512(rows - i, 16));
        __m512 sum_f32x16[TD_GROUP_AVX512];
        if (count == TD_GROUP_AVX512) {
            col_blocks_avx512(w32, w8, is_i8, rows, cols, i, x, x_stride, TD_GROUP_AVX512, mask, sum_f32x16);
        } else {
            for (size_t e = 0; e < count; ++e)
                sum_f32x16[e] = col_block_avx512(w32, w8, is_i8, rows, cols, i, x + e * x_stride, mask);
        }
        for (size_t e = 0; e < count; ++e) {
            if (is_i8) sum_f32x16[e] = mul_avx512(sum_f32x16[e], _mm512_maskz_loadu_ps(mask, scales + i));
            _mm512_mask_storeu_ps(a + e * a_stride + i, mask, sum_f32x16[e]);
        }
    }
}

/* a_e = W x_e for count examples (count <= TD_GROUP_AVX512), x_e = x + e x_stride, a_e = a + e a_stride
 * (rows floats each), W dense f32 or dense int8 (times its row scales). A full group loads and converts each
 * column of W once for all of its examples; a smaller one takes them one by one. The sums are the same either
 * way (col_blocks_avx512), so an example's result does not depend on its place in the batch. */
TD_NOINLINE void dense_w_group_avx512(const td_matrix *w, const float *x, size_t x_stride, size_t count, float *a,
                                     size_t a_stride) {
    size_t rows = (size_t)w->rows, cols = (size_t)w->cols;
    if (w->kind == TD_MATRIX_DENSE_I8)
        dense_group_avx512(NULL, w->i8, w->scales, 1, rows, cols, x, x_stride, count, a, a_stride);
    else
        dense_group_avx512(w->f32, NULL, NULL, 0, rows, cols, x, x_stride, count, a, a_stride);
}

/* h_t = z h_{t-1} + (zeta (1 - z) + nu) c, rounded like the scalar reference. */
TD_FORCE_INLINE __m512 fastgrnn_update_avx512(__m512 z_f32x16, __m512 c_f32x16, __m512 h_f32x16, __m512 zeta_f32x16,
                                              __m512 nu_f32x16) {
    __m512 g_f32x16 = mul_add_avx512(zeta_f32x16, _mm512_sub_ps(_mm512_set1_ps(1.0f), z_f32x16), nu_f32x16);
    return mul_add_avx512(z_f32x16, h_f32x16, mul_avx512(g_f32x16, c_f32x16));
}

/* h_t for 16 hidden units from a_t = W x_t + U h_{t-1}. */
TD_FORCE_INLINE __m512 fastgrnn_cell_avx512(__m512 a_f32x16, __m512 bz_f32x16, __m512 bh_f32x16, __m512 h_f32x16,
                                            __m512 zeta_f32x16, __m512 nu_f32x16) {
    __m512 z_f32x16 = sigmoid_f32x16_avx512(_mm512_add_ps(a_f32x16, bz_f32x16));
    __m512 c_f32x16 = tanh_f32x16_avx512(_mm512_add_ps(a_f32x16, bh_f32x16));
    return fastgrnn_update_avx512(z_f32x16, c_f32x16, h_f32x16, zeta_f32x16, nu_f32x16);
}

/* td_fastgrnn_output_ with vector logits: logit_o = (sum of the 16 lanes of one FMA chain over the blocks of
 * 16 hidden units, lane l taking w_out[o, i] h[i] for i = l mod 16) + b_out[o]. The sigmoid (output_dim 1) and
 * the softmax are td_fastgrnn_probs_. The scalar dot products took about 60 ns an item at
 * hidden 32 and output_dim 4, a third of a one-step item with input 385. h: hidden floats. */
static void fastgrnn_output_avx512(const td_fastgrnn *m, const float *h, float *out) {
    size_t hidden = (size_t)m->hidden_dim, outputs = (size_t)m->output_dim;
    float logits[TD_FASTGRNN_MAX_DIM];
    for (size_t o = 0; o < outputs; ++o) {
        const float *row = m->w_out + o * hidden;
        __m512 dot_f32x16 = _mm512_setzero_ps();
        for (size_t i = 0; i < hidden; i += 16) {
            __mmask16 mask = mask16_avx512(min_size_avx512(hidden - i, 16));
            dot_f32x16 = mul_add_avx512(_mm512_maskz_loadu_ps(mask, row + i), _mm512_maskz_loadu_ps(mask, h + i),
                                        dot_f32x16);
        }
        logits[o] = _mm512_reduce_add_ps(dot_f32x16) + m->b_out[o];
    }
    td_fastgrnn_probs_(logits, outputs, out);
}

/* W x_e for TD_GROUP_AVX512 examples (x_e = x + e x_stride) and a W of at most 16 rows (lanes in mask), dense f32
 * or int8, into out[e]: the same values as apply_small_avx512 gives each example. */
TD_NOINLINE void dense_w_small_group_avx512(const td_matrix *w, const float *x, size_t x_stride, __mmask16 mask,
                                           __m512 *out) {
    size_t rows = (size_t)w->rows, cols = (size_t)w->cols;
    if (w->kind == TD_MATRIX_DENSE_I8) {
        col_blocks_avx512(NULL, w->i8, 1, rows, cols, 0, x, x_stride, TD_GROUP_AVX512, mask, out);
        for (int e = 0; e < TD_GROUP_AVX512; ++e) out[e] = mul_avx512(out[e], load_lanes_avx512(w->scales, mask));
    } else {
        col_blocks_avx512(w->f32, NULL, 0, rows, cols, 0, x, x_stride, TD_GROUP_AVX512, mask, out);
    }
}

/* hidden_dim 9..16: the state lives in one register (lanes past hidden_dim kept 0); hbuf mirrors it for U h
 * and the output layer. With output_dim 1 the logits of 16 items are collected in one register and go
 * through one vector sigmoid. One-step items with a dense W take W x in groups of TD_GROUP_AVX512, the rest
 * of the batch one by one (apply_small_avx512: the same sums). */
static void fastgrnn_small_avx512(const td_fastgrnn *m, const float *x, size_t batch, float *out, __m512 zeta_f32x16,
                                  __m512 nu_f32x16) {
    size_t inputs = (size_t)m->input_dim, outputs = (size_t)m->output_dim;
    size_t step = (size_t)m->timesteps * inputs;
    __mmask16 mask = mask16_avx512((size_t)m->hidden_dim);
    __m512 bz_f32x16 = load_lanes_avx512(m->b_z, mask), bh_f32x16 = load_lanes_avx512(m->b_h, mask);
    __m512 wout_f32x16 = load_lanes_avx512(m->w_out, mask), logit_f32x16 = _mm512_setzero_ps();
    float hbuf[16], tmp[16 + TD_FASTGRNN_MAX_DIM];
    __m512 group_f32x16[TD_GROUP_AVX512];
    size_t grouped_end = m->timesteps == 1 && td_matrix_is_dense_(&m->w) ? batch - batch % TD_GROUP_AVX512 : 0;
    for (size_t n = 0; n < batch; ++n) {
        const float *xn = x + n * step;
        __m512 h_f32x16 = _mm512_setzero_ps(); /* h_0 = 0 */
        if (n < grouped_end && n % TD_GROUP_AVX512 == 0)
            dense_w_small_group_avx512(&m->w, xn, inputs, mask, group_f32x16);
        for (int32_t t = 0; t < m->timesteps; ++t) {
            __m512 a_f32x16 = n < grouped_end ? group_f32x16[n % TD_GROUP_AVX512]
                                              : apply_small_avx512(&m->w, xn + (size_t)t * inputs, mask, tmp);
            if (t > 0) a_f32x16 = _mm512_add_ps(a_f32x16, apply_small_avx512(&m->u, hbuf, mask, tmp));
            h_f32x16 = fastgrnn_cell_avx512(a_f32x16, bz_f32x16, bh_f32x16, h_f32x16, zeta_f32x16, nu_f32x16);
            h_f32x16 = _mm512_maskz_mov_ps(mask, h_f32x16);
            _mm512_storeu_ps(hbuf, h_f32x16);
        }
        if (outputs == 1) {
            size_t lane = n % 16;
            float logit = _mm512_reduce_add_ps(_mm512_mul_ps(wout_f32x16, h_f32x16)) + m->b_out[0];
            logit_f32x16 = _mm512_mask_mov_ps(logit_f32x16, (__mmask16)(1u << lane), _mm512_set1_ps(logit));
            if (lane == 15 || n + 1 == batch)
                _mm512_mask_storeu_ps(out + n - lane, mask16_avx512(lane + 1), sigmoid_f32x16_avx512(logit_f32x16));
        } else {
            fastgrnn_output_avx512(m, hbuf, out + n * outputs);
        }
    }
}

/* Any hidden_dim: a, U h and h in arrays, the cell update 16 units at a time. */
static void fastgrnn_large_avx512(const td_fastgrnn *m, const float *x, size_t batch, float *out, __m512 zeta_f32x16,
                                  __m512 nu_f32x16) {
    size_t inputs = (size_t)m->input_dim, hidden = (size_t)m->hidden_dim, outputs = (size_t)m->output_dim;
    size_t step = (size_t)m->timesteps * inputs;
    float group[TD_GROUP_AVX512 * TD_FASTGRNN_MAX_DIM], uh[TD_FASTGRNN_MAX_DIM], h[TD_FASTGRNN_MAX_DIM];
    float tmp[TD_FASTGRNN_MAX_DIM];
    int grouped = m->timesteps == 1 && td_matrix_is_dense_(&m->w);
    for (size_t n = 0; n < batch; ++n) {
        const float *xn = x + n * step;
        float *a = grouped ? group + n % TD_GROUP_AVX512 * hidden : group;
        if (grouped && n % TD_GROUP_AVX512 == 0)
            dense_w_group_avx512(&m->w, xn, inputs, min_size_avx512(batch - n, TD_GROUP_AVX512), group, hidden);
        for (int32_t t = 0; t < m->timesteps; ++t) {
            if (!grouped) matrix_apply_avx512(&m->w, xn + (size_t)t * inputs, a, tmp);
            if (t > 0) matrix_apply_avx512(&m->u, h, uh, tmp);
            for (size_t i = 0; i < hidden; i += 16) {
                __mmask16 mask = mask16_avx512(min_size_avx512(hidden - i, 16));
                __m512 a_f32x16 = _mm512_maskz_loadu_ps(mask, a + i), h_f32x16 = _mm512_setzero_ps();
                if (t > 0) {
                    a_f32x16 = _mm512_add_ps(a_f32x16, _mm512_maskz_loadu_ps(mask, uh + i));
                    h_f32x16 = _mm512_maskz_loadu_ps(mask, h + i);
                }
                __m512 bz_f32x16 = _mm512_maskz_loadu_ps(mask, m->b_z + i);
                __m512 bh_f32x16 = _mm512_maskz_loadu_ps(mask, m->b_h + i);
                h_f32x16 = fastgrnn_cell_avx512(a_f32x16, bz_f32x16, bh_f32x16, h_f32x16, zeta_f32x16, nu_f32x16);
                _mm512_mask_storeu_ps(h + i, mask, h_f32x16);
            }
        }
        fastgrnn_output_avx512(m, h, out + n * outputs);
    }
}

void td_fastgrnn_batch_avx512(const td_fastgrnn *m, const float *x, size_t batch, float *out) {
#if defined(TD_HAVE_AVX2)
    if (m->hidden_dim <= 8) {
        /* The state fits one 256-bit register; the AVX2 kernel is faster there (input 5, hidden 8:
         * 15 against 18 ns an item in a batch, 85 against 112 ns a call from Python), and no slower with a
         * wide input (input 385, hidden 8, one step, batches of 1000: 100 against 104 to 108 ns an item;
         * a 16-lane register would do the same number of FMAs there, half of each one idle). */
        td_fastgrnn_batch_avx2(m, x, batch, out);
        return;
    }
#endif
    /* sigmoid(zeta) and sigmoid(nu) in lanes 0 and 1 (one vector sigmoid is cheaper than two libm calls) */
    __m512 gate_f32x16 = sigmoid_f32x16_avx512(_mm512_zextps128_ps512(_mm_setr_ps(m->zeta, m->nu, 0.0f, 0.0f)));
    __m512 zeta_f32x16 = _mm512_permutexvar_ps(_mm512_set1_epi32(0), gate_f32x16);
    __m512 nu_f32x16 = _mm512_permutexvar_ps(_mm512_set1_epi32(1), gate_f32x16);
    if (m->hidden_dim <= 16) {
        fastgrnn_small_avx512(m, x, batch, out, zeta_f32x16, nu_f32x16);
    } else {
        fastgrnn_large_avx512(m, x, batch, out, zeta_f32x16, nu_f32x16);
    }
}

void td_recency_frequency_avx512(double decay, double now, const double *created_at,
                                 const int64_t *access_count, size_t n, float *recency, float *frequency) {
    td_recency_frequency_(decay, now, created_at, access_count, n, recency, frequency);
}
