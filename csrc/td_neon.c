/* td_neon.c - aarch64 Advanced SIMD kernels (baseline armv8-a: no SVE, no dotprod), built without extra
 * flags. Contracts are those of td_scalar.c. Dot products form f32 products, sum at most 4 per lane in f32
 * (one 16-element block), then widen the block sums to f64. */
#include <arm_neon.h>
#include "td_internal.h"
#include "td_feature_math.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------------- */
/* Cosine                                                                                               */
/* ---------------------------------------------------------------------------------------------------- */

/* acc + the four f32 lanes of v, widened to f64. */
static inline float64x2_t widen_add_f64x2_neon(float64x2_t acc_f64x2, float32x4_t v_f32x4) {
    float64x2_t lo_f64x2 = vcvt_f64_f32(vget_low_f32(v_f32x4));
    float64x2_t hi_f64x2 = vcvt_high_f64_f32(v_f32x4);
    return vaddq_f64(acc_f64x2, vaddq_f64(lo_f64x2, hi_f64x2));
}

void td_dot3_f32_neon(const float *a, const float *b, size_t n, double out[3]) {
    float64x2_t ab_f64x2 = vdupq_n_f64(0.0), aa_f64x2 = vdupq_n_f64(0.0), bb_f64x2 = vdupq_n_f64(0.0);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        float32x4_t a0 = vld1q_f32(a + i), a1 = vld1q_f32(a + i + 4);
        float32x4_t a2 = vld1q_f32(a + i + 8), a3 = vld1q_f32(a + i + 12);
        float32x4_t b0 = vld1q_f32(b + i), b1 = vld1q_f32(b + i + 4);
        float32x4_t b2 = vld1q_f32(b + i + 8), b3 = vld1q_f32(b + i + 12);
        float32x4_t ab_f32x4 = vmulq_f32(a0, b0);
        float32x4_t aa_f32x4 = vmulq_f32(a0, a0);
        float32x4_t bb_f32x4 = vmulq_f32(b0, b0);
        ab_f32x4 = vfmaq_f32(ab_f32x4, a1, b1);
        aa_f32x4 = vfmaq_f32(aa_f32x4, a1, a1);
        bb_f32x4 = vfmaq_f32(bb_f32x4, b1, b1);
        ab_f32x4 = vfmaq_f32(ab_f32x4, a2, b2);
        aa_f32x4 = vfmaq_f32(aa_f32x4, a2, a2);
        bb_f32x4 = vfmaq_f32(bb_f32x4, b2, b2);
        ab_f32x4 = vfmaq_f32(ab_f32x4, a3, b3);
        aa_f32x4 = vfmaq_f32(aa_f32x4, a3, a3);
        bb_f32x4 = vfmaq_f32(bb_f32x4, b3, b3);
        ab_f64x2 = widen_add_f64x2_neon(ab_f64x2, ab_f32x4);
        aa_f64x2 = widen_add_f64x2_neon(aa_f64x2, aa_f32x4);
        bb_f64x2 = widen_add_f64x2_neon(bb_f64x2, bb_f32x4);
    }
    for (; i + 4 <= n; i += 4) {
        float32x4_t a0 = vld1q_f32(a + i), b0 = vld1q_f32(b + i);
        ab_f64x2 = widen_add_f64x2_neon(ab_f64x2, vmulq_f32(a0, b0));
        aa_f64x2 = widen_add_f64x2_neon(aa_f64x2, vmulq_f32(a0, a0));
        bb_f64x2 = widen_add_f64x2_neon(bb_f64x2, vmulq_f32(b0, b0));
    }
    double ab = vaddvq_f64(ab_f64x2), aa = vaddvq_f64(aa_f64x2), bb = vaddvq_f64(bb_f64x2);
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

double td_sumsq_f32_neon(const float *a, size_t n) {
    float64x2_t sum_f64x2 = vdupq_n_f64(0.0);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        float32x4_t a0 = vld1q_f32(a + i), a1 = vld1q_f32(a + i + 4);
        float32x4_t a2 = vld1q_f32(a + i + 8), a3 = vld1q_f32(a + i + 12);
        float32x4_t sum_f32x4 = vmulq_f32(a0, a0);
        sum_f32x4 = vfmaq_f32(sum_f32x4, a1, a1);
        sum_f32x4 = vfmaq_f32(sum_f32x4, a2, a2);
        sum_f32x4 = vfmaq_f32(sum_f32x4, a3, a3);
        sum_f64x2 = widen_add_f64x2_neon(sum_f64x2, sum_f32x4);
    }
    for (; i + 4 <= n; i += 4) {
        float32x4_t a0 = vld1q_f32(a + i);
        sum_f64x2 = widen_add_f64x2_neon(sum_f64x2, vmulq_f32(a0, a0));
    }
    double s = vaddvq_f64(sum_f64x2);
    for (; i < n; ++i) s += (double)a[i] * (double)a[i];
    return s;
}

/* a.b only (row norms given). */
static double dot_f32_neon(const float *a, const float *b, size_t n) {
    float64x2_t dot_f64x2 = vdupq_n_f64(0.0);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        float32x4_t dot_f32x4 = vmulq_f32(vld1q_f32(a + i), vld1q_f32(b + i));
        dot_f32x4 = vfmaq_f32(dot_f32x4, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
        dot_f32x4 = vfmaq_f32(dot_f32x4, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
        dot_f32x4 = vfmaq_f32(dot_f32x4, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
        dot_f64x2 = widen_add_f64x2_neon(dot_f64x2, dot_f32x4);
    }
    for (; i + 4 <= n; i += 4)
        dot_f64x2 = widen_add_f64x2_neon(dot_f64x2, vmulq_f32(vld1q_f32(a + i), vld1q_f32(b + i)));
    double s = vaddvq_f64(dot_f64x2);
    for (; i < n; ++i) s += (double)a[i] * (double)b[i];
    return s;
}

/* a.b and b.b (no row norms). */
static void dot2_f32_neon(const float *a, const float *b, size_t n, double *ab_out, double *bb_out) {
    float64x2_t ab_f64x2 = vdupq_n_f64(0.0), bb_f64x2 = vdupq_n_f64(0.0);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        float32x4_t b0 = vld1q_f32(b + i), b1 = vld1q_f32(b + i + 4);
        float32x4_t b2 = vld1q_f32(b + i + 8), b3 = vld1q_f32(b + i + 12);
        float32x4_t ab_f32x4 = vmulq_f32(vld1q_f32(a + i), b0);
        float32x4_t bb_f32x4 = vmulq_f32(b0, b0);
        ab_f32x4 = vfmaq_f32(ab_f32x4, vld1q_f32(a + i + 4), b1);
        bb_f32x4 = vfmaq_f32(bb_f32x4, b1, b1);
        ab_f32x4 = vfmaq_f32(ab_f32x4, vld1q_f32(a + i + 8), b2);
        bb_f32x4 = vfmaq_f32(bb_f32x4, b2, b2);
        ab_f32x4 = vfmaq_f32(ab_f32x4, vld1q_f32(a + i + 12), b3);
        bb_f32x4 = vfmaq_f32(bb_f32x4, b3, b3);
        ab_f64x2 = widen_add_f64x2_neon(ab_f64x2, ab_f32x4);
        bb_f64x2 = widen_add_f64x2_neon(bb_f64x2, bb_f32x4);
    }
    for (; i + 4 <= n; i += 4) {
        float32x4_t b0 = vld1q_f32(b + i);
        ab_f64x2 = widen_add_f64x2_neon(ab_f64x2, vmulq_f32(vld1q_f32(a + i), b0));
        bb_f64x2 = widen_add_f64x2_neon(bb_f64x2, vmulq_f32(b0, b0));
    }
    double ab = vaddvq_f64(ab_f64x2), bb = vaddvq_f64(bb_f64x2);
    for (; i < n; ++i) {
        double y = (double)b[i];
        ab += (double)a[i] * y;
        bb += y * y;
    }
    *ab_out = ab;
    *bb_out = bb;
}

void td_cosine_batch_f32_neon(const float *query, double query_norm, const float *rows, size_t n_rows,
                              size_t dim, const float *row_norms, float *out) {
    for (size_t r = 0; r < n_rows; ++r) {
        const float *row = rows + r * dim;
        double ab, bb = 0.0, norm;
        if (row_norms) {
            ab = dot_f32_neon(query, row, dim);
            norm = (double)row_norms[r];
        } else {
            dot2_f32_neon(query, row, dim, &ab, &bb);
            norm = sqrt(bb);
        }
        out[r] = (float)td_cosine_from_f32_dots_(ab, query_norm * query_norm, norm * norm);
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* int8 mat-vec                                                                                         */
/* ---------------------------------------------------------------------------------------------------- */

/* Lanes 0-3 / 4-7 of eight int16 as f32 (exact). */
static inline float32x4_t s16_lo_f32x4_neon(int16x8_t v_s16x8) {
    return vcvtq_f32_s32(vmovl_s16(vget_low_s16(v_s16x8)));
}
static inline float32x4_t s16_hi_f32x4_neon(int16x8_t v_s16x8) { return vcvtq_f32_s32(vmovl_high_s16(v_s16x8)); }

void td_matvec_i8_f32_neon(const int8_t *w, const float *scales, const float *bias, const float *x,
                           size_t rows, size_t cols, float *y) {
    for (size_t i = 0; i < rows; ++i) {
        const int8_t *row = w + i * cols;
        float32x4_t s0_f32x4 = vdupq_n_f32(0.0f), s1_f32x4 = vdupq_n_f32(0.0f);
        float32x4_t s2_f32x4 = vdupq_n_f32(0.0f), s3_f32x4 = vdupq_n_f32(0.0f);
        size_t j = 0;
        for (; j + 16 <= cols; j += 16) {
            int8x16_t w_s8x16 = vld1q_s8(row + j);
            int16x8_t lo_s16x8 = vmovl_s8(vget_low_s8(w_s8x16)), hi_s16x8 = vmovl_high_s8(w_s8x16);
            s0_f32x4 = vfmaq_f32(s0_f32x4, s16_lo_f32x4_neon(lo_s16x8), vld1q_f32(x + j));
            s1_f32x4 = vfmaq_f32(s1_f32x4, s16_hi_f32x4_neon(lo_s16x8), vld1q_f32(x + j + 4));
            s2_f32x4 = vfmaq_f32(s2_f32x4, s16_lo_f32x4_neon(hi_s16x8), vld1q_f32(x + j + 8));
            s3_f32x4 = vfmaq_f32(s3_f32x4, s16_hi_f32x4_neon(hi_s16x8), vld1q_f32(x + j + 12));
        }
        if (j + 8 <= cols) {
            int16x8_t w_s16x8 = vmovl_s8(vld1_s8(row + j));
            s0_f32x4 = vfmaq_f32(s0_f32x4, s16_lo_f32x4_neon(w_s16x8), vld1q_f32(x + j));
            s1_f32x4 = vfmaq_f32(s1_f32x4, s16_hi_f32x4_neon(w_s16x8), vld1q_f32(x + j + 4));
            j += 8;
        }
        float acc = vaddvq_f32(vaddq_f32(vaddq_f32(s0_f32x4, s1_f32x4), vaddq_f32(s2_f32x4, s3_f32x4)));
        for (; j < cols; ++j) acc += (float)row[j] * x[j];
        y[i] = scales[i] * acc + (bias ? bias[i] : 0.0f);
    }
}

/* vmull_s8 products (|p| <= 16384) fit int16; vpadalq_s16 adds each pair straight into int32 lanes, so no
 * int16 sum is ever formed. */
void td_matvec_i8_i32_neon(const int8_t *w, const int8_t *x, size_t rows, size_t cols, int32_t *acc) {
    for (size_t i = 0; i < rows; ++i) {
        const int8_t *row = w + i * cols;
        int32x4_t s0_s32x4 = vdupq_n_s32(0), s1_s32x4 = vdupq_n_s32(0);
        size_t j = 0;
        for (; j + 16 <= cols; j += 16) {
            int8x16_t w_s8x16 = vld1q_s8(row + j), x_s8x16 = vld1q_s8(x + j);
            s0_s32x4 = vpadalq_s16(s0_s32x4, vmull_s8(vget_low_s8(w_s8x16), vget_low_s8(x_s8x16)));
            s1_s32x4 = vpadalq_s16(s1_s32x4, vmull_high_s8(w_s8x16, x_s8x16));
        }
        if (j + 8 <= cols) {
            s0_s32x4 = vpadalq_s16(s0_s32x4, vmull_s8(vld1_s8(row + j), vld1_s8(x + j)));
            j += 8;
        }
        int32_t s = vaddvq_s32(vaddq_s32(s0_s32x4, s1_s32x4));
        for (; j < cols; ++j) s += (int32_t)row[j] * (int32_t)x[j];
        acc[i] = s;
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* CSR mat-vec: lane-by-lane gathers (NEON has no gather), vector multiply-add                          */
/* ---------------------------------------------------------------------------------------------------- */

static inline float32x4_t gather4_f32x4_neon(const float *x, const int32_t *idx) {
    float32x2_t lo_f32x2 = vld1_dup_f32(x + idx[0]);
    float32x2_t hi_f32x2 = vld1_dup_f32(x + idx[2]);
    lo_f32x2 = vld1_lane_f32(x + idx[1], lo_f32x2, 1);
    hi_f32x2 = vld1_lane_f32(x + idx[3], hi_f32x2, 1);
    return vcombine_f32(lo_f32x2, hi_f32x2);
}

static inline int8x8_t gather8_s8x8_neon(const int8_t *x, const int32_t *idx) {
    int8x8_t g_s8x8 = vld1_dup_s8(x + idx[0]);
    g_s8x8 = vld1_lane_s8(x + idx[1], g_s8x8, 1);
    g_s8x8 = vld1_lane_s8(x + idx[2], g_s8x8, 2);
    g_s8x8 = vld1_lane_s8(x + idx[3], g_s8x8, 3);
    g_s8x8 = vld1_lane_s8(x + idx[4], g_s8x8, 4);
    g_s8x8 = vld1_lane_s8(x + idx[5], g_s8x8, 5);
    g_s8x8 = vld1_lane_s8(x + idx[6], g_s8x8, 6);
    g_s8x8 = vld1_lane_s8(x + idx[7], g_s8x8, 7);
    return g_s8x8;
}

/* sum_k values[k] * x[indices[k]] over [beg, end), int8 values, f32 accumulation. */
static inline float csr_row_i8_f32_neon(const int8_t *values, const int32_t *indices, const float *x,
                                        ptrdiff_t beg, ptrdiff_t end) {
    float32x4_t s0_f32x4 = vdupq_n_f32(0.0f), s1_f32x4 = vdupq_n_f32(0.0f);
    ptrdiff_t k = beg;
    for (; k + 8 <= end; k += 8) {
        int16x8_t v_s16x8 = vmovl_s8(vld1_s8(values + k));
        s0_f32x4 = vfmaq_f32(s0_f32x4, s16_lo_f32x4_neon(v_s16x8), gather4_f32x4_neon(x, indices + k));
        s1_f32x4 = vfmaq_f32(s1_f32x4, s16_hi_f32x4_neon(v_s16x8), gather4_f32x4_neon(x, indices + k + 4));
    }
    float acc = vaddvq_f32(vaddq_f32(s0_f32x4, s1_f32x4));
    for (; k < end; ++k) acc += (float)values[k] * x[indices[k]];
    return acc;
}

static inline float csr_row_f32_neon(const float *values, const int32_t *indices, const float *x, ptrdiff_t beg,
                                     ptrdiff_t end) {
    float32x4_t s0_f32x4 = vdupq_n_f32(0.0f), s1_f32x4 = vdupq_n_f32(0.0f);
    ptrdiff_t k = beg;
    for (; k + 8 <= end; k += 8) {
        s0_f32x4 = vfmaq_f32(s0_f32x4, vld1q_f32(values + k), gather4_f32x4_neon(x, indices + k));
        s1_f32x4 = vfmaq_f32(s1_f32x4, vld1q_f32(values + k + 4), gather4_f32x4_neon(x, indices + k + 4));
    }
    if (k + 4 <= end) {
        s0_f32x4 = vfmaq_f32(s0_f32x4, vld1q_f32(values + k), gather4_f32x4_neon(x, indices + k));
        k += 4;
    }
    float acc = vaddvq_f32(vaddq_f32(s0_f32x4, s1_f32x4));
    for (; k < end; ++k) acc += values[k] * x[indices[k]];
    return acc;
}

void td_csr_matvec_i8_f32_neon(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                               const float *scales, const float *bias, const float *x, size_t rows,
                               float *y) {
    for (size_t i = 0; i < rows; ++i) {
        float acc = csr_row_i8_f32_neon(values, indices, x, (ptrdiff_t)indptr[i], (ptrdiff_t)indptr[i + 1]);
        y[i] = scales[i] * acc + (bias ? bias[i] : 0.0f);
    }
}

void td_csr_matvec_i8_i32_neon(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                               const int8_t *x, size_t rows, int32_t *acc) {
    for (size_t i = 0; i < rows; ++i) {
        ptrdiff_t k = (ptrdiff_t)indptr[i], end = (ptrdiff_t)indptr[i + 1];
        int32x4_t sum_s32x4 = vdupq_n_s32(0);
        for (; k + 8 <= end; k += 8)
            sum_s32x4 = vpadalq_s16(sum_s32x4, vmull_s8(vld1_s8(values + k), gather8_s8x8_neon(x, indices + k)));
        int32_t s = vaddvq_s32(sum_s32x4);
        for (; k < end; ++k) s += (int32_t)values[k] * (int32_t)x[indices[k]];
        acc[i] = s;
    }
}

void td_csr_matvec_f32_neon(const float *values, const int32_t *indices, const int32_t *indptr,
                            const float *bias, const float *x, size_t rows, float *y) {
    for (size_t i = 0; i < rows; ++i) {
        float acc = csr_row_f32_neon(values, indices, x, (ptrdiff_t)indptr[i], (ptrdiff_t)indptr[i + 1]);
        y[i] = acc + (bias ? bias[i] : 0.0f);
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* FastGRNN                                                                                             */
/* ---------------------------------------------------------------------------------------------------- */

/* exp(x), Cephes expf: n = round(x / ln2), r = x - n ln2 (two-part ln2), degree-7 polynomial, times 2^n.
 * x is clamped to [TD_SIGMOID_EXP_MIN, 88] = [-87, 88] so 2^n stays a normal float; NaN propagates. */
static inline float32x4_t exp_f32x4_neon(float32x4_t x_f32x4) {
    x_f32x4 = vminq_f32(vmaxq_f32(x_f32x4, vdupq_n_f32(TD_SIGMOID_EXP_MIN)), vdupq_n_f32(88.0f));
    float32x4_t n_f32x4 = vrndnq_f32(vmulq_f32(x_f32x4, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r_f32x4 = vfmsq_f32(x_f32x4, n_f32x4, vdupq_n_f32(0.693359375f));
    r_f32x4 = vfmsq_f32(r_f32x4, n_f32x4, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p_f32x4 = vdupq_n_f32(1.9875691500e-4f);
    p_f32x4 = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p_f32x4, r_f32x4);
    p_f32x4 = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p_f32x4, r_f32x4);
    p_f32x4 = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p_f32x4, r_f32x4);
    p_f32x4 = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p_f32x4, r_f32x4);
    p_f32x4 = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p_f32x4, r_f32x4);
    p_f32x4 = vfmaq_f32(vaddq_f32(r_f32x4, vdupq_n_f32(1.0f)), p_f32x4, vmulq_f32(r_f32x4, r_f32x4));
    int32x4_t e_s32x4 = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n_f32x4), vdupq_n_s32(127)), 23);
    return vmulq_f32(p_f32x4, vreinterpretq_f32_s32(e_s32x4));
}

/* td_sigmoid_f32_ on 4 lanes: (v >= 0 ? 1 : e) / (1 + e), e = exp(max(-|v|, -87)) (the floor is exp's). */
static inline float32x4_t sigmoid_f32x4_neon(float32x4_t v_f32x4) {
    float32x4_t one_f32x4 = vdupq_n_f32(1.0f);
    float32x4_t e_f32x4 = exp_f32x4_neon(vnegq_f32(vabsq_f32(v_f32x4)));
    float32x4_t num_f32x4 = vbslq_f32(vcgeq_f32(v_f32x4, vdupq_n_f32(0.0f)), one_f32x4, e_f32x4);
    return vdivq_f32(num_f32x4, vaddq_f32(one_f32x4, e_f32x4));
}

/* tanh: Cephes odd polynomial for |x| < 0.625, else (1 - e) / (1 + e) with e = exp(-2|x|); sign of x. */
static inline float32x4_t tanh_f32x4_neon(float32x4_t x_f32x4) {
    float32x4_t one_f32x4 = vdupq_n_f32(1.0f);
    float32x4_t ax_f32x4 = vabsq_f32(x_f32x4);
    float32x4_t e_f32x4 = exp_f32x4_neon(vmulq_f32(ax_f32x4, vdupq_n_f32(-2.0f)));
    float32x4_t big_f32x4 = vdivq_f32(vsubq_f32(one_f32x4, e_f32x4), vaddq_f32(one_f32x4, e_f32x4));
    float32x4_t z_f32x4 = vmulq_f32(ax_f32x4, ax_f32x4);
    float32x4_t p_f32x4 = vdupq_n_f32(-5.70498872745e-3f);
    p_f32x4 = vfmaq_f32(vdupq_n_f32(2.06390887954e-2f), p_f32x4, z_f32x4);
    p_f32x4 = vfmaq_f32(vdupq_n_f32(-5.37397155531e-2f), p_f32x4, z_f32x4);
    p_f32x4 = vfmaq_f32(vdupq_n_f32(1.33314422036e-1f), p_f32x4, z_f32x4);
    p_f32x4 = vfmaq_f32(vdupq_n_f32(-3.33332819422e-1f), p_f32x4, z_f32x4);
    float32x4_t small_f32x4 = vfmaq_f32(ax_f32x4, vmulq_f32(p_f32x4, z_f32x4), ax_f32x4);
    float32x4_t t_f32x4 = vbslq_f32(vcltq_f32(ax_f32x4, vdupq_n_f32(0.625f)), small_f32x4, big_f32x4);
    return vbslq_f32(vdupq_n_u32(0x80000000u), x_f32x4, t_f32x4);
}

/* y = M x, M column-major f32 (rows x cols). Rows in vector blocks, each summed over j in order. */
static void dense_cols_f32_neon(const float *m, size_t rows, size_t cols, const float *x, float *y) {
    size_t i = 0;
    for (; i + 16 <= rows; i += 16) {
        float32x4_t y0_f32x4 = vdupq_n_f32(0.0f), y1_f32x4 = vdupq_n_f32(0.0f);
        float32x4_t y2_f32x4 = vdupq_n_f32(0.0f), y3_f32x4 = vdupq_n_f32(0.0f);
        for (size_t j = 0; j < cols; ++j) {
            const float *col = m + j * rows + i;
            float32x4_t xj_f32x4 = vdupq_n_f32(x[j]);
            y0_f32x4 = vfmaq_f32(y0_f32x4, vld1q_f32(col), xj_f32x4);
            y1_f32x4 = vfmaq_f32(y1_f32x4, vld1q_f32(col + 4), xj_f32x4);
            y2_f32x4 = vfmaq_f32(y2_f32x4, vld1q_f32(col + 8), xj_f32x4);
            y3_f32x4 = vfmaq_f32(y3_f32x4, vld1q_f32(col + 12), xj_f32x4);
        }
        vst1q_f32(y + i, y0_f32x4);
        vst1q_f32(y + i + 4, y1_f32x4);
        vst1q_f32(y + i + 8, y2_f32x4);
        vst1q_f32(y + i + 12, y3_f32x4);
    }
    for (; i + 4 <= rows; i += 4) {
        float32x4_t y0_f32x4 = vdupq_n_f32(0.0f);
        for (size_t j = 0; j < cols; ++j) y0_f32x4 = vfmaq_n_f32(y0_f32x4, vld1q_f32(m + j * rows + i), x[j]);
        vst1q_f32(y + i, y0_f32x4);
    }
    for (; i < rows; ++i) {
        float acc = 0.0f;
        for (size_t j = 0; j < cols; ++j) acc += m[j * rows + i] * x[j];
        y[i] = acc;
    }
}

/* Four int8 at p as f32, read lane by lane (no over-read). */
static inline float32x4_t load4_s8_f32x4_neon(const int8_t *p) {
    int8x8_t v_s8x8 = vld1_dup_s8(p);
    v_s8x8 = vld1_lane_s8(p + 1, v_s8x8, 1);
    v_s8x8 = vld1_lane_s8(p + 2, v_s8x8, 2);
    v_s8x8 = vld1_lane_s8(p + 3, v_s8x8, 3);
    return s16_lo_f32x4_neon(vmovl_s8(v_s8x8));
}

/* y = diag(scales) M x, M column-major int8 (rows x cols). */
static void dense_cols_i8_neon(const int8_t *m, const float *scales, size_t rows, size_t cols,
                               const float *x, float *y) {
    size_t i = 0;
    for (; i + 16 <= rows; i += 16) {
        float32x4_t y0_f32x4 = vdupq_n_f32(0.0f), y1_f32x4 = vdupq_n_f32(0.0f);
        float32x4_t y2_f32x4 = vdupq_n_f32(0.0f), y3_f32x4 = vdupq_n_f32(0.0f);
        for (size_t j = 0; j < cols; ++j) {
            int8x16_t w_s8x16 = vld1q_s8(m + j * rows + i);
            int16x8_t lo_s16x8 = vmovl_s8(vget_low_s8(w_s8x16)), hi_s16x8 = vmovl_high_s8(w_s8x16);
            float32x4_t xj_f32x4 = vdupq_n_f32(x[j]);
            y0_f32x4 = vfmaq_f32(y0_f32x4, s16_lo_f32x4_neon(lo_s16x8), xj_f32x4);
            y1_f32x4 = vfmaq_f32(y1_f32x4, s16_hi_f32x4_neon(lo_s16x8), xj_f32x4);
            y2_f32x4 = vfmaq_f32(y2_f32x4, s16_lo_f32x4_neon(hi_s16x8), xj_f32x4);
            y3_f32x4 = vfmaq_f32(y3_f32x4, s16_hi_f32x4_neon(hi_s16x8), xj_f32x4);
        }
        vst1q_f32(y + i, vmulq_f32(y0_f32x4, vld1q_f32(scales + i)));
        vst1q_f32(y + i + 4, vmulq_f32(y1_f32x4, vld1q_f32(scales + i + 4)));
        vst1q_f32(y + i + 8, vmulq_f32(y2_f32x4, vld1q_f32(scales + i + 8)));
        vst1q_f32(y + i + 12, vmulq_f32(y3_f32x4, vld1q_f32(scales + i + 12)));
    }
    for (; i + 8 <= rows; i += 8) {
        float32x4_t y0_f32x4 = vdupq_n_f32(0.0f), y1_f32x4 = vdupq_n_f32(0.0f);
        for (size_t j = 0; j < cols; ++j) {
            int16x8_t w_s16x8 = vmovl_s8(vld1_s8(m + j * rows + i));
            float32x4_t xj_f32x4 = vdupq_n_f32(x[j]);
            y0_f32x4 = vfmaq_f32(y0_f32x4, s16_lo_f32x4_neon(w_s16x8), xj_f32x4);
            y1_f32x4 = vfmaq_f32(y1_f32x4, s16_hi_f32x4_neon(w_s16x8), xj_f32x4);
        }
        vst1q_f32(y + i, vmulq_f32(y0_f32x4, vld1q_f32(scales + i)));
        vst1q_f32(y + i + 4, vmulq_f32(y1_f32x4, vld1q_f32(scales + i + 4)));
    }
    for (; i + 4 <= rows; i += 4) {
        float32x4_t y0_f32x4 = vdupq_n_f32(0.0f);
        size_t j = 0;
        /* An 8-byte load at column j < cols - 1 ends inside column j + 1 (rows >= 4): within the matrix. */
        for (; j + 1 < cols; ++j) {
            float32x4_t w_f32x4 = s16_lo_f32x4_neon(vmovl_s8(vld1_s8(m + j * rows + i)));
            y0_f32x4 = vfmaq_n_f32(y0_f32x4, w_f32x4, x[j]);
        }
        for (; j < cols; ++j) y0_f32x4 = vfmaq_n_f32(y0_f32x4, load4_s8_f32x4_neon(m + j * rows + i), x[j]);
        vst1q_f32(y + i, vmulq_f32(y0_f32x4, vld1q_f32(scales + i)));
    }
    for (; i < rows; ++i) {
        float acc = 0.0f;
        for (size_t j = 0; j < cols; ++j) acc += (float)m[j * rows + i] * x[j];
        y[i] = acc * scales[i];
    }
}

static void matrix_apply_neon(const td_matrix *m, const float *x, float *y) {
    size_t rows = (size_t)m->rows, cols = (size_t)m->cols;
    switch (m->kind) {
    case TD_MATRIX_DENSE_F32:
        dense_cols_f32_neon(m->f32, rows, cols, x, y);
        break;
    case TD_MATRIX_LOWRANK_F32: {
        float t[TD_FASTGRNN_MAX_DIM];
        dense_cols_f32_neon(m->f32_right, (size_t)m->rank, cols, x, t);
        dense_cols_f32_neon(m->f32, rows, (size_t)m->rank, t, y);
        break;
    }
    case TD_MATRIX_DENSE_I8:
        dense_cols_i8_neon(m->i8, m->scales, rows, cols, x, y);
        break;
    case TD_MATRIX_SPARSE_I8:
        td_csr_matvec_i8_f32_neon(m->i8, m->indices, m->indptr, m->scales, NULL, x, rows, y);
        break;
    case TD_MATRIX_SPARSE_F32:
        td_csr_matvec_f32_neon(m->f32, m->indices, m->indptr, NULL, x, rows, y);
        break;
    default:
        memset(y, 0, rows * sizeof(float));
        break;
    }
}

/* Rows i .. i + 4R - 1 (R = 4 or 1 vectors of 4 rows, all inside the matrix) of a_e = M x_e (times the row
 * scales for int8) for E examples (E <= 4, x_e = x + e x_stride, a_e = a + e a_stride), M column-major f32
 * (w32) or int8 (w8). Each column is loaded (and converted) once for all E examples. Each row is one FMA
 * chain over j in increasing order, as in dense_cols_f32_neon and dense_cols_i8_neon, whatever E and R. */
TD_FORCE_INLINE void group_rows_neon(const float *w32, const int8_t *w8, const float *scales, size_t rows, size_t cols,
                                     size_t i, int R, const float *x, size_t x_stride, int E, float *a,
                                     size_t a_stride) {
    float32x4_t acc_f32x4[4][4], col_f32x4[4];
    TD_UNROLL for (int e = 0; e < E; ++e)
        TD_UNROLL for (int r = 0; r < R; ++r) acc_f32x4[e][r] = vdupq_n_f32(0.0f);
    for (size_t j = 0; j < cols; ++j) {
        size_t off = j * rows + i;
        if (w8 && R == 4) {
            int8x16_t w_s8x16 = vld1q_s8(w8 + off);
            int16x8_t lo_s16x8 = vmovl_s8(vget_low_s8(w_s8x16)), hi_s16x8 = vmovl_high_s8(w_s8x16);
            col_f32x4[0] = s16_lo_f32x4_neon(lo_s16x8), col_f32x4[1] = s16_hi_f32x4_neon(lo_s16x8);
            col_f32x4[2] = s16_lo_f32x4_neon(hi_s16x8), col_f32x4[3] = s16_hi_f32x4_neon(hi_s16x8);
        } else if (w8) { /* an 8-byte load stays inside the matrix before the last column (rows >= 4) */
            col_f32x4[0] =
                j + 1 < cols ? s16_lo_f32x4_neon(vmovl_s8(vld1_s8(w8 + off))) : load4_s8_f32x4_neon(w8 + off);
        } else {
            TD_UNROLL for (int r = 0; r < R; ++r) col_f32x4[r] = vld1q_f32(w32 + off + 4 * (size_t)r);
        }
        TD_UNROLL for (int e = 0; e < E; ++e) {
            float32x4_t xj_f32x4 = vdupq_n_f32(x[(size_t)e * x_stride + j]);
            TD_UNROLL for (int r = 0; r < R; ++r) acc_f32x4[e][r] = vfmaq_f32(acc_f32x4[e][r], col_f32x4[r], xj_f32x4);
        }
    }
    TD_UNROLL for (int r = 0; r < R; ++r) {
        float32x4_t scale_f32x4 = w8 ? vld1q_f32(scales + i + 4 * (size_t)r) : vdupq_n_f32(1.0f);
        TD_UNROLL for (int e = 0; e < E; ++e)
            vst1q_f32(a + (size_t)e * a_stride + i + 4 * (size_t)r,
                      w8 ? vmulq_f32(acc_f32x4[e][r], scale_f32x4) : acc_f32x4[e][r]);
    }
}

/* How many examples dense_w_group_neon takes at once. */
#define TD_GROUP_NEON 4

TD_FORCE_INLINE void dense_group_neon(const float *w32, const int8_t *w8, const float *scales, size_t rows,
                                      size_t cols, const float *x, size_t x_stride, size_t count, float *a,
                                      size_t a_stride) {
    for (size_t e = 0; e < count;) {
        size_t take = count - e == TD_GROUP_NEON ? TD_GROUP_NEON : 1, i = 0;
        const float *xe = x + e * x_stride;
        float *ae = a + e * a_stride;
        if (take == TD_GROUP_NEON) {
            for (; i + 16 <= rows; i += 16)
                group_rows_neon(w32, w8, scales, rows, cols, i, 4, xe, x_stride, TD_GROUP_NEON, ae, a_stride);
            for (; i + 4 <= rows; i += 4)
                group_rows_neon(w32, w8, scales, rows, cols, i, 1, xe, x_stride, TD_GROUP_NEON, ae, a_stride);
        } else {
            for (; i + 16 <= rows; i += 16) group_rows_neon(w32, w8, scales, rows, cols, i, 4, xe, 0, 1, ae, 0);
            for (; i + 4 <= rows; i += 4) group_rows_neon(w32, w8, scales, rows, cols, i, 1, xe, 0, 1, ae, 0);
        }
        for (; i < rows; ++i) /* 1..3 rows left: one fused chain each, as the vector lanes */
            for (size_t k = 0; k < take; ++k) {
                float acc = 0.0f;
                for (size_t j = 0; j < cols; ++j)
                    acc = fmaf(w8 ? (float)w8[j * rows + i] : w32[j * rows + i], xe[k * x_stride + j], acc);
                ae[k * a_stride + i] = w8 ? acc * scales[i] : acc;
            }
        e += take;
    }
}

/* a_e = W x_e for count examples (count <= TD_GROUP_NEON), x_e = x + e x_stride, a_e = a + e a_stride (rows
 * floats each), W dense f32 or dense int8 (times its row scales). A full group loads and converts each
 * column of W once for all of its examples; a smaller one takes them one by one. Every row is summed the
 * same way in either case (group_rows_neon), so an example's result does not depend on its place in the
 * batch. */
static void dense_w_group_neon(const td_matrix *w, const float *x, size_t x_stride, size_t count, float *a,
                               size_t a_stride) {
    size_t rows = (size_t)w->rows, cols = (size_t)w->cols;
    if (w->kind == TD_MATRIX_DENSE_I8)
        dense_group_neon(NULL, w->i8, w->scales, rows, cols, x, x_stride, count, a, a_stride);
    else
        dense_group_neon(w->f32, NULL, NULL, rows, cols, x, x_stride, count, a, a_stride);
}

/* h_t from the pre-activation a = W x_t (+ U h_{t-1}) and h_{t-1} (0 at t = 0). */
static inline float32x4_t fastgrnn_cell_neon(float32x4_t a_f32x4, float32x4_t bz_f32x4, float32x4_t bh_f32x4,
                                             float32x4_t prev_f32x4, float32x4_t zeta_f32x4, float32x4_t nu_f32x4) {
    float32x4_t z_f32x4 = sigmoid_f32x4_neon(vaddq_f32(a_f32x4, bz_f32x4));
    float32x4_t c_f32x4 = tanh_f32x4_neon(vaddq_f32(a_f32x4, bh_f32x4));
    float32x4_t coef_f32x4 = vfmaq_f32(nu_f32x4, zeta_f32x4, vsubq_f32(vdupq_n_f32(1.0f), z_f32x4));
    return vfmaq_f32(vmulq_f32(coef_f32x4, c_f32x4), z_f32x4, prev_f32x4);
}

/* One sequence x; wx, when not NULL, is W x_0 already computed (a one-step model). zeta and nu: the
 * sigmoids of the model's gate scalars in every lane. */
static void fastgrnn_one_neon(const td_fastgrnn *m, const float *x, const float *wx, float32x4_t zeta_f32x4,
                              float32x4_t nu_f32x4, float *out) {
    size_t hidden = (size_t)m->hidden_dim, inputs = (size_t)m->input_dim;
    float h[TD_FASTGRNN_MAX_DIM], a[TD_FASTGRNN_MAX_DIM], b[TD_FASTGRNN_MAX_DIM];
    for (int32_t t = 0; t < m->timesteps; ++t) {
        if (wx && t == 0)
            memcpy(a, wx, hidden * sizeof(float));
        else
            matrix_apply_neon(&m->w, x + (size_t)t * inputs, a);
        if (t > 0) { /* h_0 = 0, so U h_0 = 0 */
            matrix_apply_neon(&m->u, h, b);
            size_t i = 0;
            for (; i + 4 <= hidden; i += 4) vst1q_f32(a + i, vaddq_f32(vld1q_f32(a + i), vld1q_f32(b + i)));
            for (; i < hidden; ++i) a[i] += b[i];
        }
        size_t i = 0;
        for (; i + 4 <= hidden; i += 4) {
            float32x4_t prev_f32x4 = t > 0 ? vld1q_f32(h + i) : vdupq_n_f32(0.0f);
            vst1q_f32(h + i, fastgrnn_cell_neon(vld1q_f32(a + i), vld1q_f32(m->b_z + i), vld1q_f32(m->b_h + i),
                                         prev_f32x4, zeta_f32x4, nu_f32x4));
        }
        if (i < hidden) { /* 1..3 left: staged through zero-padded lanes */
            size_t rem = hidden - i;
            float ta[4] = {0}, tz[4] = {0}, th[4] = {0}, tp[4] = {0};
            memcpy(ta, a + i, rem * sizeof(float));
            memcpy(tz, m->b_z + i, rem * sizeof(float));
            memcpy(th, m->b_h + i, rem * sizeof(float));
            if (t > 0) memcpy(tp, h + i, rem * sizeof(float));
            vst1q_f32(tp, fastgrnn_cell_neon(vld1q_f32(ta), vld1q_f32(tz), vld1q_f32(th), vld1q_f32(tp), zeta_f32x4,
                                      nu_f32x4));
            memcpy(h + i, tp, rem * sizeof(float));
        }
    }
    td_fastgrnn_output_(m, h, out);
}

void td_fastgrnn_batch_neon(const td_fastgrnn *m, const float *x, size_t batch, float *out) {
    size_t step = (size_t)m->timesteps * (size_t)m->input_dim, hidden = (size_t)m->hidden_dim;
    size_t outputs = (size_t)m->output_dim;
    float group[TD_GROUP_NEON * TD_FASTGRNN_MAX_DIM];
    float32x4_t zeta_f32x4 = vdupq_n_f32(td_sigmoid_f32_(m->zeta));
    float32x4_t nu_f32x4 = vdupq_n_f32(td_sigmoid_f32_(m->nu));
    if (m->timesteps == 1 && td_matrix_is_dense_(&m->w)) {
        for (size_t n = 0; n < batch; n += TD_GROUP_NEON) {
            size_t count = batch - n < TD_GROUP_NEON ? batch - n : TD_GROUP_NEON;
            dense_w_group_neon(&m->w, x + n * step, step, count, group, hidden);
            for (size_t e = 0; e < count; ++e)
                fastgrnn_one_neon(m, x + (n + e) * step, group + e * hidden, zeta_f32x4, nu_f32x4,
                                  out + (n + e) * outputs);
        }
        return;
    }
    for (size_t n = 0; n < batch; ++n)
        fastgrnn_one_neon(m, x + n * step, NULL, zeta_f32x4, nu_f32x4, out + n * outputs);
}

void td_recency_frequency_neon(double decay, double now, const double *created_at,
                               const int64_t *access_count, size_t n, float *recency, float *frequency) {
    td_recency_frequency_(decay, now, created_at, access_count, n, recency, frequency);
}
