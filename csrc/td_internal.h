/* td_internal.h - what the per-ISA kernel files and td_dispatch.c share. Not part of the public API. */
#ifndef TD_INTERNAL_H
#define TD_INTERNAL_H

#include <math.h>

#include "td_kernels.h"

/* A static function the compiler must inline (so that constant arguments such as row counts or NULL pointers
 * fold away and accumulators stay in registers). */
#if defined(_MSC_VER) && !defined(__clang__)
#define TD_FORCE_INLINE static __forceinline
#else
#define TD_FORCE_INLINE static inline __attribute__((always_inline))
#endif

/* Unrolls the short loops over examples, blocks and partial sums of the grouped FastGRNN kernels before the
 * compiler decides where their accumulator arrays live: without it GCC kept one such array on the stack and
 * stored every accumulator on each pass over the columns (AVX-512, hidden 16, input 385: 100 -> 188 ns an
 * item). */
#if defined(__GNUC__) || defined(__clang__)
#define TD_UNROLL _Pragma("GCC unroll 4")
#else
#define TD_UNROLL
#endif

/* Keeps a grouped kernel out of line: inlined into its caller, it has fewer registers for its accumulators
 * (the constants of the caller's loop hold some), and one accumulator on the stack made every pass over the
 * columns wait on a store (AVX2, hidden 8, input 385: 96 -> 185 ns an item). */
#if defined(_MSC_VER) && !defined(__clang__)
#define TD_NOINLINE static __declspec(noinline)
#else
#define TD_NOINLINE static __attribute__((noinline))
#endif

/* Internal symbols stay out of the export table of a shared library that links td_kernels, and calls to
 * them are direct (not through the PLT). */
#if defined(__GNUC__) || defined(__clang__)
#define TD_HIDDEN __attribute__((visibility("hidden")))
#else
#define TD_HIDDEN
#endif

/* The kernels: each td_<isa>.c defines td_<op>_<isa> for every op below, and td_dispatch.c gathers them in
 * one td_kernel_table_ per ISA. */

/* out[0] = a.b, out[1] = a.a, out[2] = b.b */
typedef void td_dot3_f32_fn_(const float *a, const float *b, size_t n, double out[3]);
typedef double td_sumsq_f32_fn_(const float *a, size_t n);
/* out[i] = query.rows[i] / (query_norm * norm_i), norm_i from row_norms or computed; 0 for zero norms */
typedef void td_cosine_batch_f32_fn_(const float *query, double query_norm, const float *rows, size_t n_rows,
                                     size_t dim, const float *row_norms, float *out);
typedef void td_matvec_i8_f32_fn_(const int8_t *w, const float *scales, const float *bias, const float *x,
                                  size_t rows, size_t cols, float *y);
typedef void td_matvec_i8_i32_fn_(const int8_t *w, const int8_t *x, size_t rows, size_t cols, int32_t *acc);
typedef void td_csr_matvec_i8_f32_fn_(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                                      const float *scales, const float *bias, const float *x, size_t rows,
                                      float *y);
typedef void td_csr_matvec_i8_i32_fn_(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                                      const int8_t *x, size_t rows, int32_t *acc);
typedef void td_csr_matvec_f32_fn_(const float *values, const int32_t *indices, const int32_t *indptr,
                                   const float *bias, const float *x, size_t rows, float *y);
/* m has passed td_fastgrnn_check (so timesteps >= 1) */
typedef void td_fastgrnn_batch_fn_(const td_fastgrnn *m, const float *x, size_t batch, float *out);
/* the recency and frequency features of n candidates (see td_feature_math.h) */
typedef void td_recency_frequency_fn_(double decay, double now, const double *created_at,
                                      const int64_t *access_count, size_t n, float *recency, float *frequency);

TD_HIDDEN td_dot3_f32_fn_ td_dot3_f32_scalar, td_dot3_f32_avx2, td_dot3_f32_avx512, td_dot3_f32_neon;
TD_HIDDEN td_sumsq_f32_fn_ td_sumsq_f32_scalar, td_sumsq_f32_avx2, td_sumsq_f32_avx512, td_sumsq_f32_neon;
TD_HIDDEN td_cosine_batch_f32_fn_ td_cosine_batch_f32_scalar, td_cosine_batch_f32_avx2, td_cosine_batch_f32_avx512,
    td_cosine_batch_f32_neon;
TD_HIDDEN td_matvec_i8_f32_fn_ td_matvec_i8_f32_scalar, td_matvec_i8_f32_avx2, td_matvec_i8_f32_avx512,
    td_matvec_i8_f32_neon;
TD_HIDDEN td_matvec_i8_i32_fn_ td_matvec_i8_i32_scalar, td_matvec_i8_i32_avx2, td_matvec_i8_i32_avx512,
    td_matvec_i8_i32_neon;
TD_HIDDEN td_csr_matvec_i8_f32_fn_ td_csr_matvec_i8_f32_scalar, td_csr_matvec_i8_f32_avx2,
    td_csr_matvec_i8_f32_avx512, td_csr_matvec_i8_f32_neon;
TD_HIDDEN td_csr_matvec_i8_i32_fn_ td_csr_matvec_i8_i32_scalar, td_csr_matvec_i8_i32_avx2,
    td_csr_matvec_i8_i32_avx512, td_csr_matvec_i8_i32_neon;
TD_HIDDEN td_csr_matvec_f32_fn_ td_csr_matvec_f32_scalar, td_csr_matvec_f32_avx2, td_csr_matvec_f32_avx512,
    td_csr_matvec_f32_neon;
TD_HIDDEN td_fastgrnn_batch_fn_ td_fastgrnn_batch_scalar, td_fastgrnn_batch_avx2, td_fastgrnn_batch_avx512,
    td_fastgrnn_batch_neon;
TD_HIDDEN td_recency_frequency_fn_ td_recency_frequency_scalar, td_recency_frequency_avx2,
    td_recency_frequency_avx512, td_recency_frequency_neon;

/* The kernels of one ISA. */
typedef struct td_kernel_table_ {
    td_dot3_f32_fn_ *dot3_f32;
    td_sumsq_f32_fn_ *sumsq_f32;
    td_cosine_batch_f32_fn_ *cosine_batch_f32;
    td_matvec_i8_f32_fn_ *matvec_i8_f32;
    td_matvec_i8_i32_fn_ *matvec_i8_i32;
    td_csr_matvec_i8_f32_fn_ *csr_matvec_i8_f32;
    td_csr_matvec_i8_i32_fn_ *csr_matvec_i8_i32;
    td_csr_matvec_f32_fn_ *csr_matvec_f32;
    td_fastgrnn_batch_fn_ *fastgrnn_batch;
    td_recency_frequency_fn_ *recency_frequency;
} td_kernel_table_;

/* The active table (never NULL after start-up). */
TD_HIDDEN const td_kernel_table_ *td_active_table_(void);

/* Output layer: output_dim probabilities from the final hidden state h (the scalar and NEON paths; AVX2 and
 * AVX-512 compute the logits with vectors and share the rest, td_fastgrnn_probs_). */
TD_HIDDEN void td_fastgrnn_output_(const td_fastgrnn *m, const float *h, float *out);

/* Whether a matrix is stored dense (f32 or int8 with row scales). */
static inline int td_matrix_is_dense_(const td_matrix *m) {
    return m->kind == TD_MATRIX_DENSE_F32 || m->kind == TD_MATRIX_DENSE_I8;
}

/* Probabilities from output_dim logits: the sigmoid for one output, else the softmax (libm expf). */
TD_HIDDEN void td_fastgrnn_probs_(const float *logits, size_t outputs, float *out);

/* The sigmoid of every ISA: (v >= 0 ? 1 : e) / (1 + e) with e = exp(max(-|v|, TD_SIGMOID_EXP_MIN)). e lies in
 * (0, 1], so nothing overflows; a NaN stays NaN. The floor keeps 2^n of the SIMD exp kernels a normal float:
 * below v = -87 the result stays at sigmoid(-87), about 1.6e-38. SIMD files compute the same expression with
 * their polynomial exp; this is the scalar form (libm expf). */
#define TD_SIGMOID_EXP_MIN (-87.0f)

static inline float td_sigmoid_f32_(float v) {
    float t = -fabsf(v), e;
    e = expf(t < TD_SIGMOID_EXP_MIN ? TD_SIGMOID_EXP_MIN : t); /* the comparison is false for NaN */
    return (v >= 0.0f ? 1.0f : e) / (1.0f + e);
}

/* Cosine from the three dot products: NaN if any of them is not finite (a NaN or Inf in either input, or
 * an overflow), 0 for a zero vector, otherwise clamped to [-1, 1] (rounding may step just outside). */
static inline double td_cosine_from_dots_(double ab, double aa, double bb) {
    double c;
    if (!isfinite(ab) || !isfinite(aa) || !isfinite(bb)) return NAN;
    if (!(aa > 0.0) || !(bb > 0.0)) return 0.0;
    c = ab / (sqrt(aa) * sqrt(bb));
    return c > 1.0 ? 1.0 : (c < -1.0 ? -1.0 : c);
}

/* Squared norms below this (norms below 1e-15) may have lost terms to f32 underflow in SIMD kernels. */
#define TD_TINY_SUMSQ 1e-30

/* For SIMD kernels: as td_cosine_from_dots_, but 0.0 also when a squared norm is below TD_TINY_SUMSQ.
 * The dispatcher recomputes every 0.0 and NaN result on the f64 scalar path, which is exact there. */
static inline double td_cosine_from_f32_dots_(double ab, double aa, double bb) {
    if (isfinite(ab) && isfinite(aa) && isfinite(bb) && (aa < TD_TINY_SUMSQ || bb < TD_TINY_SUMSQ)) return 0.0;
    return td_cosine_from_dots_(ab, aa, bb);
}

#endif /* TD_INTERNAL_H */
