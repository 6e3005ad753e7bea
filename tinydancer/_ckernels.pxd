# Declarations of csrc/td_kernels.h, nothing else.
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t


cdef extern from "td_kernels.h" nogil:
    ctypedef enum td_isa:
        TD_ISA_SCALAR
        TD_ISA_AVX2
        TD_ISA_AVX512
        TD_ISA_NEON

    unsigned td_isa_detected()
    unsigned td_isa_compiled()
    unsigned td_isa_usable()
    unsigned td_isa_best()
    unsigned td_isa_active()
    int td_isa_select(unsigned isa)
    const char *td_isa_name(unsigned isa)
    unsigned td_isa_from_name(const char *name)

    double td_cosine_f32(const float *a, const float *b, size_t n)
    void td_cosine_batch_f32(const float *query, const float *rows, size_t n_rows, size_t dim,
                             const float *row_norms, float *out)
    void td_l2_norms_f32(const float *rows, size_t n_rows, size_t dim, float *out)
    size_t td_find_nonfinite_f32(const float *p, size_t n)
    size_t td_find_nonfinite_f64(const double *p, size_t n)

    void td_matvec_i8_f32(const int8_t *w, const float *scales, const float *bias, const float *x,
                          size_t rows, size_t cols, float *y)
    void td_matvec_i8_i32(const int8_t *w, const int8_t *x, size_t rows, size_t cols, int32_t *acc)
    void td_csr_matvec_i8_f32(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                              const float *scales, const float *bias, const float *x, size_t rows, float *y)
    void td_csr_matvec_i8_i32(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                              const int8_t *x, size_t rows, int32_t *acc)
    void td_csr_matvec_f32(const float *values, const int32_t *indices, const int32_t *indptr,
                           const float *bias, const float *x, size_t rows, float *y)
    int td_csr_check(const int32_t *indices, const int32_t *indptr, size_t rows, size_t cols, size_t nnz)

    enum: TD_FASTGRNN_MAX_DIM
    enum: TD_NUM_FEATURES

    ctypedef enum td_matrix_kind:
        TD_MATRIX_DENSE_F32
        TD_MATRIX_LOWRANK_F32
        TD_MATRIX_DENSE_I8
        TD_MATRIX_SPARSE_I8
        TD_MATRIX_SPARSE_F32

    ctypedef struct td_matrix:
        int32_t kind
        int32_t rows
        int32_t cols
        int32_t rank
        const float *f32
        const float *f32_right
        const int8_t *i8
        const float *scales
        const int32_t *indices
        const int32_t *indptr

    ctypedef struct td_fastgrnn:
        int32_t input_dim
        int32_t hidden_dim
        int32_t output_dim
        int32_t timesteps
        td_matrix w
        td_matrix u
        const float *b_z
        const float *b_h
        const float *w_out
        const float *b_out
        float zeta
        float nu

    int td_fastgrnn_check(const td_fastgrnn *m)
    void td_fastgrnn_forward(const td_fastgrnn *m, const float *x, float *out)
    void td_fastgrnn_forward_batch(const td_fastgrnn *m, const float *x, size_t batch, float *out)

    ctypedef struct td_feature_config:
        float similarity_weight
        float recency_weight
        float frequency_weight
        float success_weight
        float metadata_weight
        double recency_decay

    int td_score_candidates(const td_fastgrnn *m, const td_feature_config *cfg, const float *query,
                            size_t dim, const float *embeddings, const float *embedding_norms, size_t n,
                            const double *created_at, const int64_t *access_count,
                            const float *success_rate, const float *metadata_overlap, double now,
                            float *features_out, float *scores_out)

    void td_candidate_features(const td_feature_config *cfg, const float *query, size_t dim,
                               const float *embeddings, const float *embedding_norms, size_t n,
                               const double *created_at, const int64_t *access_count, const float *success_rate,
                               const float *metadata_overlap, double now, float *features_out)
    void td_rank_desc(const float *scores, size_t n, int32_t *order, int32_t *scratch)
    int td_route_candidates(const td_fastgrnn *m, const td_feature_config *cfg, const float *query, size_t dim,
                            const float *embeddings, const float *embedding_norms, size_t n,
                            const double *created_at, const int64_t *access_count, const float *success_rate,
                            const float *metadata_overlap, double now, float confidence_threshold,
                            float max_uncertainty, float *scores, float *uncertainty, uint8_t *lightweight,
                            int32_t *order, int32_t *scratch)
    int td_route_candidates_ex(const td_fastgrnn *m, const td_feature_config *cfg, const float *query, size_t dim,
                               const float *embeddings, const float *embedding_norms, size_t n,
                               const double *created_at, const int64_t *access_count, const float *success_rate,
                               const float *metadata_overlap, double now, float confidence_threshold,
                               float max_uncertainty, float *scores, float *uncertainty, uint8_t *lightweight,
                               int32_t *order, int32_t *scratch, float *features_out)
