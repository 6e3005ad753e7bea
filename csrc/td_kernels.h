/*
 * td_kernels.h - the public C API of tinydancer's kernels.
 *
 * Plain C11, no Python. An application can vendor csrc/ alone and build it with its CMakeLists.txt.
 *
 * Dispatch: the CPU is probed once (CPUID + XGETBV on x86-64, so an OS that does not save YMM/ZMM state
 * is respected) and the best compiled ISA is selected. td_isa_select() switches the active ISA; it is a
 * test and benchmark hook and must not be called while other threads are running kernels.
 *
 * Precision policy:
 * - Cosine: the scalar path accumulates in f64. SIMD paths form f32 products, sum at most 8 of them per
 *   lane in f32, and widen those block sums to f64, so a 384-d cosine is within 1e-6 of the float64 result
 *   (the order of the sums does not depend on alignment: results are the same wherever the arrays start).
 *   Results are f64 (f32 for the batch form). A zero vector (or two) gives 0.0, never NaN; a NaN or Inf in
 *   either input gives NaN. Inputs whose f32 products could overflow or underflow (norms above ~1e19 or
 *   below 1e-15) are recomputed on the f64 scalar path, so every finite input gets an accurate result.
 * - int8 x int8 mat-vec accumulates exactly in int32: exact while cols <= 131071 (2^31 / 128^2 - 1).
 * - int8 x f32 mat-vec converts the weights to f32 and accumulates in f32, then applies the row scale.
 * - FastGRNN: every ISA computes sigmoid(v) = (v >= 0 ? 1 : e) / (1 + e) with e = exp(max(-|v|, -87)): no
 *   overflow, NaN stays NaN, and below v = -87 the result stays at sigmoid(-87) ~ 1.6e-38 rather than going
 *   on towards 0. The scalar path takes exp and tanh from libm; SIMD paths use a polynomial exp (within
 *   2 ulp) and tanh(v) = sign(v) (1 - e) / (1 + e) with e = exp(-2|v|) (absolute error below 1e-7; NEON uses
 *   an odd polynomial below |v| = 0.625), so probabilities agree with the scalar path to a few 1e-6.
 *   The output logits are sums of products in f32 (AVX2 and AVX-512 sum them in vector lanes, so their
 *   order differs from the scalar path's); softmax (output_dim > 1) then uses libm expf on every ISA.
 *   A batch gives every item the same result as a single call of the same ISA, wherever it sits.
 *
 * Inputs are not validated here beyond what is stated: NaN in, NaN out. Dimensions of 0 are allowed
 * wherever the result is still defined (an empty dot product is 0).
 */
#ifndef TD_KERNELS_H
#define TD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TD_VERSION_MAJOR 0
#define TD_VERSION_MINOR 1
#define TD_VERSION_PATCH 0

/* ---------------------------------------------------------------------------------------------------- */
/* Dispatch                                                                                             */
/* ---------------------------------------------------------------------------------------------------- */

typedef enum td_isa {
    TD_ISA_SCALAR = 1u << 0, /* portable C, always present */
    TD_ISA_AVX2 = 1u << 1,   /* x86-64 AVX2 + FMA */
    TD_ISA_AVX512 = 1u << 2, /* x86-64 AVX-512 F + BW + DQ + VL */
    TD_ISA_NEON = 1u << 3    /* aarch64 Advanced SIMD */
} td_isa;

/* Bitmask of ISAs this CPU and OS can run (scalar always included). */
unsigned td_isa_detected(void);
/* Bitmask of ISAs compiled into this library. */
unsigned td_isa_compiled(void);
/* detected & compiled. */
unsigned td_isa_usable(void);
/* The best usable ISA (the one selected at start-up). */
unsigned td_isa_best(void);
/* The ISA the kernels currently run. */
unsigned td_isa_active(void);
/* Select one ISA (a single bit). Returns 0, or -1 if it is unknown or not usable here. */
int td_isa_select(unsigned isa);
/* "scalar", "avx2", "avx512", "neon"; NULL for anything else. */
const char *td_isa_name(unsigned isa);
/* The inverse of td_isa_name; 0 if the name is unknown. */
unsigned td_isa_from_name(const char *name);

/* ---------------------------------------------------------------------------------------------------- */
/* Cosine similarity                                                                                    */
/* ---------------------------------------------------------------------------------------------------- */

/* cos(a, b) over n floats; 0.0 if either vector is zero. */
double td_cosine_f32(const float *a, const float *b, size_t n);

/* out[i] = cos(query, rows[i]) for a row-major n_rows x dim matrix. row_norms (the L2 norm of each row)
 * may be NULL; when given it is trusted and only dot products are computed. */
void td_cosine_batch_f32(const float *query, const float *rows, size_t n_rows, size_t dim,
                         const float *row_norms, float *out);

/* out[i] = ||rows[i]||_2 for a row-major n_rows x dim matrix. */
void td_l2_norms_f32(const float *rows, size_t n_rows, size_t dim, float *out);

/* Index of the first NaN or Inf in p[0 .. n), or n if every value is finite. */
size_t td_find_nonfinite_f32(const float *p, size_t n);
size_t td_find_nonfinite_f64(const double *p, size_t n);

/* ---------------------------------------------------------------------------------------------------- */
/* int8 matrix-vector products                                                                          */
/* ---------------------------------------------------------------------------------------------------- */

/* y[i] = scales[i] * sum_j w[i*cols + j] * x[j] + (bias ? bias[i] : 0), w row-major. */
void td_matvec_i8_f32(const int8_t *w, const float *scales, const float *bias, const float *x,
                      size_t rows, size_t cols, float *y);

/* acc[i] = sum_j w[i*cols + j] * x[j], exact (cols <= 131071). */
void td_matvec_i8_i32(const int8_t *w, const int8_t *x, size_t rows, size_t cols, int32_t *acc);

/* CSR: row i holds values[indptr[i] .. indptr[i+1]) at columns indices[...]. indptr has rows + 1
 * entries starting at 0 and never decreasing; every index lies in [0, cols). */

/* y[i] = scales[i] * sum_k values[k] * x[indices[k]] + (bias ? bias[i] : 0). */
void td_csr_matvec_i8_f32(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                          const float *scales, const float *bias, const float *x, size_t rows, float *y);

/* acc[i] = sum_k values[k] * x[indices[k]], exact (at most 131071 entries a row). */
void td_csr_matvec_i8_i32(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                          const int8_t *x, size_t rows, int32_t *acc);

/* y[i] = sum_k values[k] * x[indices[k]] + (bias ? bias[i] : 0). */
void td_csr_matvec_f32(const float *values, const int32_t *indices, const int32_t *indptr,
                       const float *bias, const float *x, size_t rows, float *y);

/* 0 if (indptr, indices) describe a valid rows x cols CSR structure with nnz entries, else -1. */
int td_csr_check(const int32_t *indices, const int32_t *indptr, size_t rows, size_t cols, size_t nnz);

/* ---------------------------------------------------------------------------------------------------- */
/* FastGRNN (Kusupati et al., NeurIPS 2018)                                                             */
/*                                                                                                      */
/*   a_t  = W x_t + U h_{t-1}                                                                           */
/*   z_t  = sigmoid(a_t + b_z),  h~_t = tanh(a_t + b_h)                                                 */
/*   h_t  = z_t * h_{t-1} + (sigmoid(zeta) * (1 - z_t) + sigmoid(nu)) * h~_t,   h_0 = 0                 */
/*   p    = sigmoid(w_out . h_T + b_out)   (output_dim 1), softmax(w_out h_T + b_out) otherwise         */
/* ---------------------------------------------------------------------------------------------------- */

#define TD_FASTGRNN_MAX_DIM 1024 /* cap on hidden_dim, output_dim and low-rank ranks */

typedef enum td_matrix_kind {
    /* f32[cols * rows], column-major: element (i, j) at f32[j * rows + i]. */
    TD_MATRIX_DENSE_F32 = 0,
    /* M = L R with L rows x rank at f32 and R rank x cols at f32_right, both column-major. */
    TD_MATRIX_LOWRANK_F32 = 1,
    /* i8[cols * rows] column-major, element (i, j) = scales[i] * i8[j * rows + i]. */
    TD_MATRIX_DENSE_I8 = 2,
    /* CSR by rows (indices, indptr); element = scales[i] * i8[k]. */
    TD_MATRIX_SPARSE_I8 = 3,
    /* CSR by rows (indices, indptr); element = f32[k]. */
    TD_MATRIX_SPARSE_F32 = 4
} td_matrix_kind;

typedef struct td_matrix {
    int32_t kind; /* td_matrix_kind */
    int32_t rows;
    int32_t cols;
    int32_t rank;            /* low-rank only */
    const float *f32;        /* dense f32 / low-rank L / sparse f32 values */
    const float *f32_right;  /* low-rank R */
    const int8_t *i8;        /* dense or sparse int8 values */
    const float *scales;     /* per-row scales of the int8 forms */
    const int32_t *indices;  /* CSR column indices */
    const int32_t *indptr;   /* CSR row pointers, rows + 1 entries */
} td_matrix;

typedef struct td_fastgrnn {
    int32_t input_dim;
    int32_t hidden_dim;
    int32_t output_dim;
    int32_t timesteps;
    td_matrix w;        /* hidden_dim x input_dim */
    td_matrix u;        /* hidden_dim x hidden_dim */
    const float *b_z;   /* hidden_dim */
    const float *b_h;   /* hidden_dim */
    const float *w_out; /* output_dim x hidden_dim, row-major */
    const float *b_out; /* output_dim */
    float zeta;         /* before the sigmoid */
    float nu;           /* before the sigmoid */
} td_fastgrnn;

/* 0 if the shapes and pointers of m are consistent (and within TD_FASTGRNN_MAX_DIM), else -1.
 * Values are not inspected. Call once when binding weights; the forward functions trust m (a model this
 * refuses, such as one with timesteps < 1, must never reach them). */
int td_fastgrnn_check(const td_fastgrnn *m);

/* x: timesteps x input_dim, row-major; out: output_dim probabilities. */
void td_fastgrnn_forward(const td_fastgrnn *m, const float *x, float *out);

/* x: batch x timesteps x input_dim; out: batch x output_dim. */
void td_fastgrnn_forward_batch(const td_fastgrnn *m, const float *x, size_t batch, float *out);

/* ---------------------------------------------------------------------------------------------------- */
/* Fused candidate scoring                                                                              */
/* ---------------------------------------------------------------------------------------------------- */

typedef struct td_feature_config {
    float similarity_weight; /* 0.4 */
    float recency_weight;    /* 0.2 */
    float frequency_weight;  /* 0.15 */
    float success_weight;    /* 0.15 */
    float metadata_weight;   /* 0.1 */
    double recency_decay;    /* 0.001 per second */
} td_feature_config;

#define TD_NUM_FEATURES 5

/*
 * For each of n candidates:
 *   sim  = cos(query, embeddings[i])                               (embedding_norms may be NULL)
 *   rec  = exp(-recency_decay * max(now - created_at[i], 0))        (1 when recency_decay is 0)
 *   freq = min(log1p(access_count[i]) / log1p(10000), 1)           (a negative count counts as 0)
 *   succ = success_rate[i]
 *   meta = metadata_overlap ? metadata_overlap[i] : 0
 *   features[i] = [w_sim*sim, w_rec*rec, w_freq*freq, w_succ*succ, w_meta*meta]
 *   scores[i]   = FastGRNN(features[i]) as one timestep
 * SIMD paths compute rec and freq with polynomials accurate to ~1e-15 before rounding to f32 (libm on the
 * scalar path). features_out (n x 5) may be NULL. The model must have input_dim 5, timesteps 1 and output_dim 1.
 * Returns 0, or -1 if the model does not have that shape (nothing is written then).
 */
int td_score_candidates(const td_fastgrnn *m, const td_feature_config *cfg, const float *query, size_t dim,
                        const float *embeddings, const float *embedding_norms, size_t n,
                        const double *created_at, const int64_t *access_count, const float *success_rate,
                        const float *metadata_overlap, double now, float *features_out, float *scores_out);

/* The features of td_score_candidates alone: features_out (n x 5) receives the weighted features. */
void td_candidate_features(const td_feature_config *cfg, const float *query, size_t dim, const float *embeddings,
                           const float *embedding_norms, size_t n, const double *created_at,
                           const int64_t *access_count, const float *success_rate, const float *metadata_overlap,
                           double now, float *features_out);

/* ---------------------------------------------------------------------------------------------------- */
/* Routing                                                                                              */
/* ---------------------------------------------------------------------------------------------------- */

/* order[0 .. n) = the indices of scores sorted by score, highest first; equal scores keep their input
 * order (a stable sort). scratch holds n int32 values; it may be NULL when n <= 32. */
void td_rank_desc(const float *scores, size_t n, int32_t *order, int32_t *scratch);

/*
 * One routing pass over n candidates: td_score_candidates, then for each candidate
 *   uncertainty[i]     = clamp(1 - 2 |scores[i] - 0.5|, 0, 1)     (distance from the decision boundary)
 *   lightweight[i]     = scores[i] >= confidence_threshold && uncertainty[i] <= max_uncertainty
 * and order = td_rank_desc(scores). scratch holds n int32 values (NULL when n <= 32).
 * Returns 0; -1 if the model does not have the scorer's shape; 1 if some score is not finite (the
 * outputs are then incomplete and must not be used).
 */
int td_route_candidates(const td_fastgrnn *m, const td_feature_config *cfg, const float *query, size_t dim,
                        const float *embeddings, const float *embedding_norms, size_t n, const double *created_at,
                        const int64_t *access_count, const float *success_rate, const float *metadata_overlap,
                        double now, float confidence_threshold, float max_uncertainty, float *scores,
                        float *uncertainty, uint8_t *lightweight, int32_t *order, int32_t *scratch);

/* td_route_candidates that also writes the model's input, the weighted features (n x 5), to features_out
 * (which may be NULL): what a routing log keeps for retraining. */
int td_route_candidates_ex(const td_fastgrnn *m, const td_feature_config *cfg, const float *query, size_t dim,
                           const float *embeddings, const float *embedding_norms, size_t n, const double *created_at,
                           const int64_t *access_count, const float *success_rate, const float *metadata_overlap,
                           double now, float confidence_threshold, float max_uncertainty, float *scores,
                           float *uncertainty, uint8_t *lightweight, int32_t *order, int32_t *scratch,
                           float *features_out);

#ifdef __cplusplus
}
#endif

#endif /* TD_KERNELS_H */
