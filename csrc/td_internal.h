/* td_internal.h - the per-ISA kernel table. Not part of the public API. */
#ifndef TD_INTERNAL_H
#define TD_INTERNAL_H

#include <math.h>

#include "td_kernels.h"

/* A static function the compiler must inline: used where constant arguments (row counts, NULL pointers)
 * have to fold away so that accumulators stay in registers. */
#if defined(_MSC_VER) && !defined(__clang__)
#define TD_FORCE_INLINE static __forceinline
#else
#define TD_FORCE_INLINE static inline __attribute__((always_inline))
#endif

/* One implementation set per ISA; each td_<isa>.c defines td_table_<isa>. */
typedef struct td_kernel_table {
    /* out[0] = a.b, out[1] = a.a, out[2] = b.b */
    void (*dot3_f32)(const float *a, const float *b, size_t n, double out[3]);
    double (*sumsq_f32)(const float *a, size_t n);
    /* out[i] = query.rows[i] / (query_norm * norm_i), norm_i from row_norms or computed; 0 for zero norms */
    void (*cosine_batch_f32)(const float *query, double query_norm, const float *rows, size_t n_rows,
                             size_t dim, const float *row_norms, float *out);
    void (*matvec_i8_f32)(const int8_t *w, const float *scales, const float *bias, const float *x,
                          size_t rows, size_t cols, float *y);
    void (*matvec_i8_i32)(const int8_t *w, const int8_t *x, size_t rows, size_t cols, int32_t *acc);
    void (*csr_matvec_i8_f32)(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                              const float *scales, const float *bias, const float *x, size_t rows, float *y);
    void (*csr_matvec_i8_i32)(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                              const int8_t *x, size_t rows, int32_t *acc);
    void (*csr_matvec_f32)(const float *values, const int32_t *indices, const int32_t *indptr,
                           const float *bias, const float *x, size_t rows, float *y);
    void (*fastgrnn_batch)(const td_fastgrnn *m, const float *x, size_t batch, float *out);
    /* the recency and frequency features of n candidates (see td_feature_math.h) */
    void (*recency_frequency)(double decay, double now, const double *created_at, const int64_t *access_count,
                              size_t n, float *recency, float *frequency);
} td_kernel_table;

extern const td_kernel_table td_table_scalar;
#if defined(TD_HAVE_AVX2)
extern const td_kernel_table td_table_avx2;
#endif
#if defined(TD_HAVE_AVX512)
extern const td_kernel_table td_table_avx512;
#endif
#if defined(TD_HAVE_NEON)
extern const td_kernel_table td_table_neon;
#endif

/* Output layer shared by every ISA: output_dim probabilities from the final hidden state h. */
void td_fastgrnn_output_(const td_fastgrnn *m, const float *h, float *out);

/* The active table (never NULL after start-up). */
const td_kernel_table *td_active_table_(void);

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
