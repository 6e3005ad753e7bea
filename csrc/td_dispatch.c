/* td_dispatch.c - CPU detection, the active kernel table, and the public entry points of td_kernels.h. */
#include <math.h>
#include <string.h>

#include "td_internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#define TD_X86_64 1
#if defined(_MSC_VER)
#include <immintrin.h>
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

/* ---------------------------------------------------------------------------------------------------- */
/* Detection                                                                                            */
/* ---------------------------------------------------------------------------------------------------- */

#if defined(TD_X86_64)
static void cpuid_(unsigned leaf, unsigned subleaf, unsigned regs[4]) {
#if defined(_MSC_VER)
    int r[4];
    __cpuidex(r, (int)leaf, (int)subleaf);
    for (int i = 0; i < 4; ++i) regs[i] = (unsigned)r[i];
#else
    __cpuid_count(leaf, subleaf, regs[0], regs[1], regs[2], regs[3]);
#endif
}

/* XCR0: which register states the OS saves on a context switch. Only valid when OSXSAVE is set. */
static unsigned long long xgetbv0_(void) {
#if defined(_MSC_VER)
    return _xgetbv(0);
#else
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
#endif
}

static unsigned detect_x86_(void) {
    unsigned r1[4], r7[4], found = TD_ISA_SCALAR;
    unsigned long long xcr0;
    cpuid_(0, 0, r1);
    if (r1[0] < 7) return found;
    cpuid_(1, 0, r1);
    cpuid_(7, 0, r7);
    if (!(r1[2] & (1u << 27))) return found; /* OSXSAVE: without it XGETBV faults */
    xcr0 = xgetbv0_();
    int os_ymm = (xcr0 & 0x6) == 0x6;    /* SSE + AVX state */
    int os_zmm = (xcr0 & 0xE6) == 0xE6;  /* + opmask, ZMM_Hi256, Hi16_ZMM state */
    int avx = (r1[2] >> 28) & 1, fma = (r1[2] >> 12) & 1, avx2 = (r7[1] >> 5) & 1;
    int f = (r7[1] >> 16) & 1, dq = (r7[1] >> 17) & 1, bw = (r7[1] >> 30) & 1, vl = (r7[1] >> 31) & 1;
    if (os_ymm && avx && fma && avx2) {
        found |= TD_ISA_AVX2;
        if (os_zmm && f && dq && bw && vl) found |= TD_ISA_AVX512;
    }
    return found;
}
#endif

unsigned td_isa_detected(void) {
    static unsigned cached = 0; /* CPUID costs 100+ cycles; probe once */
    if (!cached) {
#if defined(TD_X86_64)
        cached = detect_x86_();
#elif defined(__aarch64__) || defined(_M_ARM64)
        cached = TD_ISA_SCALAR | TD_ISA_NEON;
#else
        cached = TD_ISA_SCALAR;
#endif
    }
    return cached;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Kernel tables                                                                                        */
/* ---------------------------------------------------------------------------------------------------- */

static const td_kernel_table_ table_scalar_ = {
    .dot3_f32 = td_dot3_f32_scalar,
    .sumsq_f32 = td_sumsq_f32_scalar,
    .cosine_batch_f32 = td_cosine_batch_f32_scalar,
    .matvec_i8_f32 = td_matvec_i8_f32_scalar,
    .matvec_i8_i32 = td_matvec_i8_i32_scalar,
    .csr_matvec_i8_f32 = td_csr_matvec_i8_f32_scalar,
    .csr_matvec_i8_i32 = td_csr_matvec_i8_i32_scalar,
    .csr_matvec_f32 = td_csr_matvec_f32_scalar,
    .fastgrnn_batch = td_fastgrnn_batch_scalar,
    .recency_frequency = td_recency_frequency_scalar,
};

#if defined(TD_HAVE_AVX2)
static const td_kernel_table_ table_avx2_ = {
    .dot3_f32 = td_dot3_f32_avx2,
    .sumsq_f32 = td_sumsq_f32_avx2,
    .cosine_batch_f32 = td_cosine_batch_f32_avx2,
    .matvec_i8_f32 = td_matvec_i8_f32_avx2,
    .matvec_i8_i32 = td_matvec_i8_i32_avx2,
    .csr_matvec_i8_f32 = td_csr_matvec_i8_f32_avx2,
    .csr_matvec_i8_i32 = td_csr_matvec_i8_i32_avx2,
    .csr_matvec_f32 = td_csr_matvec_f32_avx2,
    .fastgrnn_batch = td_fastgrnn_batch_avx2,
    .recency_frequency = td_recency_frequency_avx2,
};
#endif

#if defined(TD_HAVE_AVX512)
static const td_kernel_table_ table_avx512_ = {
    .dot3_f32 = td_dot3_f32_avx512,
    .sumsq_f32 = td_sumsq_f32_avx512,
    .cosine_batch_f32 = td_cosine_batch_f32_avx512,
    .matvec_i8_f32 = td_matvec_i8_f32_avx512,
    .matvec_i8_i32 = td_matvec_i8_i32_avx512,
    .csr_matvec_i8_f32 = td_csr_matvec_i8_f32_avx512,
    .csr_matvec_i8_i32 = td_csr_matvec_i8_i32_avx512,
    .csr_matvec_f32 = td_csr_matvec_f32_avx512,
    .fastgrnn_batch = td_fastgrnn_batch_avx512,
    .recency_frequency = td_recency_frequency_avx512,
};
#endif

#if defined(TD_HAVE_NEON)
static const td_kernel_table_ table_neon_ = {
    .dot3_f32 = td_dot3_f32_neon,
    .sumsq_f32 = td_sumsq_f32_neon,
    .cosine_batch_f32 = td_cosine_batch_f32_neon,
    .matvec_i8_f32 = td_matvec_i8_f32_neon,
    .matvec_i8_i32 = td_matvec_i8_i32_neon,
    .csr_matvec_i8_f32 = td_csr_matvec_i8_f32_neon,
    .csr_matvec_i8_i32 = td_csr_matvec_i8_i32_neon,
    .csr_matvec_f32 = td_csr_matvec_f32_neon,
    .fastgrnn_batch = td_fastgrnn_batch_neon,
    .recency_frequency = td_recency_frequency_neon,
};
#endif

/* Every ISA compiled into this library, with its table. */
static const struct {
    unsigned isa;
    const td_kernel_table_ *table;
} compiled_[] = {
    {TD_ISA_SCALAR, &table_scalar_},
#if defined(TD_HAVE_AVX2)
    {TD_ISA_AVX2, &table_avx2_},
#endif
#if defined(TD_HAVE_AVX512)
    {TD_ISA_AVX512, &table_avx512_},
#endif
#if defined(TD_HAVE_NEON)
    {TD_ISA_NEON, &table_neon_},
#endif
};

#define TD_N_COMPILED (sizeof compiled_ / sizeof compiled_[0])

/* ---------------------------------------------------------------------------------------------------- */
/* Selection                                                                                            */
/* ---------------------------------------------------------------------------------------------------- */

unsigned td_isa_compiled(void) {
    unsigned isas = 0;
    for (size_t i = 0; i < TD_N_COMPILED; ++i) isas |= compiled_[i].isa;
    return isas;
}

unsigned td_isa_usable(void) { return td_isa_detected() & td_isa_compiled(); }

unsigned td_isa_best(void) {
    unsigned usable = td_isa_usable();
    if (usable & TD_ISA_AVX512) return TD_ISA_AVX512;
    if (usable & TD_ISA_AVX2) return TD_ISA_AVX2;
    if (usable & TD_ISA_NEON) return TD_ISA_NEON;
    return TD_ISA_SCALAR;
}

/* The table of a compiled ISA (a single bit); the scalar table for anything else. */
static const td_kernel_table_ *table_for_(unsigned isa) {
    for (size_t i = 0; i < TD_N_COMPILED; ++i)
        if (compiled_[i].isa == isa) return compiled_[i].table;
    return &table_scalar_;
}

static const td_kernel_table_ *volatile active_table_ = NULL;
static volatile unsigned active_isa_ = 0;

static void select_best_(void) {
    unsigned best = td_isa_best();
    active_table_ = table_for_(best);
    active_isa_ = best;
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((constructor)) static void td_dispatch_init_(void) { select_best_(); }
#endif

const td_kernel_table_ *td_active_table_(void) {
    const td_kernel_table_ *t = active_table_;
    if (!t) { /* no constructor support: the first call selects (every racer writes the same values) */
        select_best_();
        t = active_table_;
    }
    return t;
}

unsigned td_isa_active(void) {
    td_active_table_();
    return active_isa_;
}

int td_isa_select(unsigned isa) {
    if (isa == 0 || (isa & (isa - 1)) != 0 || (isa & td_isa_usable()) != isa) return -1;
    active_table_ = table_for_(isa);
    active_isa_ = isa;
    return 0;
}

const char *td_isa_name(unsigned isa) {
    switch (isa) {
    case TD_ISA_SCALAR: return "scalar";
    case TD_ISA_AVX2: return "avx2";
    case TD_ISA_AVX512: return "avx512";
    case TD_ISA_NEON: return "neon";
    default: return NULL;
    }
}

unsigned td_isa_from_name(const char *name) {
    static const unsigned all[] = {TD_ISA_SCALAR, TD_ISA_AVX2, TD_ISA_AVX512, TD_ISA_NEON};
    if (!name) return 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i)
        if (strcmp(name, td_isa_name(all[i])) == 0) return all[i];
    return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Cosine and mat-vec entry points                                                                      */
/* ---------------------------------------------------------------------------------------------------- */

/* SIMD paths form products in f32. Squared norms below TD_TINY_SUMSQ may have lost terms to underflow,
 * and non-finite sums may come from overflow: both are recomputed on the f64 scalar path, which neither
 * overflows nor underflows for finite f32 input. Only truly non-finite input still gives NaN. */

static int needs_f64_(double sumsq) { return !(sumsq >= TD_TINY_SUMSQ) || !isfinite(sumsq); }

double td_cosine_f32(const float *a, const float *b, size_t n) {
    double dots[3];
    td_active_table_()->dot3_f32(a, b, n, dots);
    if (needs_f64_(dots[1]) || needs_f64_(dots[2]) || !isfinite(dots[0]))
        td_dot3_f32_scalar(a, b, n, dots);
    return td_cosine_from_dots_(dots[0], dots[1], dots[2]);
}

static double l2_norm_(const td_kernel_table_ *t, const float *query, size_t dim) {
    double s = t->sumsq_f32(query, dim);
    return sqrt(needs_f64_(s) ? td_sumsq_f32_scalar(query, dim) : s);
}

/* The batch kernel, then rows whose result is 0 or NaN (zero, tiny, overflowing or non-finite rows; see
 * td_cosine_from_f32_dots_) again on the f64 path: a zero row costs one scalar row, anything else is rare. */
static void cosine_rows_(const td_kernel_table_ *t, const float *query, double query_norm, const float *rows,
                         size_t n_rows, size_t dim, const float *row_norms, float *out) {
    t->cosine_batch_f32(query, query_norm, rows, n_rows, dim, row_norms, out);
    if (t == &table_scalar_) return;
    for (size_t r = 0; r < n_rows; ++r)
        if (out[r] == 0.0f || out[r] != out[r])
            td_cosine_batch_f32_scalar(query, query_norm, rows + r * dim, 1, dim,
                                             row_norms ? row_norms + r : NULL, out + r);
}

void td_cosine_batch_f32(const float *query, const float *rows, size_t n_rows, size_t dim,
                         const float *row_norms, float *out) {
    const td_kernel_table_ *t = td_active_table_();
    cosine_rows_(t, query, l2_norm_(t, query, dim), rows, n_rows, dim, row_norms, out);
}

void td_l2_norms_f32(const float *rows, size_t n_rows, size_t dim, float *out) {
    const td_kernel_table_ *t = td_active_table_();
    for (size_t r = 0; r < n_rows; ++r) out[r] = (float)l2_norm_(t, rows + r * dim, dim);
}

/* Finiteness checks read the exponent bits (all ones for NaN and Inf), a block at a time with an integer
 * OR that compilers vectorise, and look for the exact index only inside a flagged block. */
#define TD_SCAN_BLOCK 256

size_t td_find_nonfinite_f32(const float *p, size_t n) {
    for (size_t start = 0; start < n; start += TD_SCAN_BLOCK) {
        size_t end = n - start < TD_SCAN_BLOCK ? n : start + TD_SCAN_BLOCK;
        uint32_t flag = 0;
        for (size_t i = start; i < end; ++i) {
            uint32_t bits;
            memcpy(&bits, p + i, sizeof bits);
            flag |= (uint32_t)((bits & 0x7F800000u) == 0x7F800000u);
        }
        if (flag)
            for (size_t i = start; i < end; ++i)
                if (!isfinite(p[i])) return i;
    }
    return n;
}

size_t td_find_nonfinite_f64(const double *p, size_t n) {
    for (size_t start = 0; start < n; start += TD_SCAN_BLOCK) {
        size_t end = n - start < TD_SCAN_BLOCK ? n : start + TD_SCAN_BLOCK;
        uint64_t flag = 0;
        for (size_t i = start; i < end; ++i) {
            uint64_t bits;
            memcpy(&bits, p + i, sizeof bits);
            flag |= (uint64_t)((bits & 0x7FF0000000000000ull) == 0x7FF0000000000000ull);
        }
        if (flag)
            for (size_t i = start; i < end; ++i)
                if (!isfinite(p[i])) return i;
    }
    return n;
}

void td_matvec_i8_f32(const int8_t *w, const float *scales, const float *bias, const float *x, size_t rows,
                      size_t cols, float *y) {
    td_active_table_()->matvec_i8_f32(w, scales, bias, x, rows, cols, y);
}

void td_matvec_i8_i32(const int8_t *w, const int8_t *x, size_t rows, size_t cols, int32_t *acc) {
    td_active_table_()->matvec_i8_i32(w, x, rows, cols, acc);
}

void td_csr_matvec_i8_f32(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                          const float *scales, const float *bias, const float *x, size_t rows, float *y) {
    td_active_table_()->csr_matvec_i8_f32(values, indices, indptr, scales, bias, x, rows, y);
}

void td_csr_matvec_i8_i32(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                          const int8_t *x, size_t rows, int32_t *acc) {
    td_active_table_()->csr_matvec_i8_i32(values, indices, indptr, x, rows, acc);
}

void td_csr_matvec_f32(const float *values, const int32_t *indices, const int32_t *indptr, const float *bias,
                       const float *x, size_t rows, float *y) {
    td_active_table_()->csr_matvec_f32(values, indices, indptr, bias, x, rows, y);
}

int td_csr_check(const int32_t *indices, const int32_t *indptr, size_t rows, size_t cols, size_t nnz) {
    if (!indptr || indptr[0] != 0 || (size_t)indptr[rows] != nnz || (nnz > 0 && !indices)) return -1;
    for (size_t i = 0; i < rows; ++i)
        if (indptr[i + 1] < indptr[i]) return -1;
    for (size_t k = 0; k < nnz; ++k)
        if (indices[k] < 0 || (size_t)indices[k] >= cols) return -1;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* FastGRNN                                                                                             */
/* ---------------------------------------------------------------------------------------------------- */

static int matrix_check_(const td_matrix *m, int32_t rows, int32_t cols) {
    if (m->rows != rows || m->cols != cols || rows <= 0 || cols <= 0) return -1;
    switch (m->kind) {
    case TD_MATRIX_DENSE_F32: return m->f32 ? 0 : -1;
    case TD_MATRIX_LOWRANK_F32:
        return m->f32 && m->f32_right && m->rank > 0 && m->rank <= TD_FASTGRNN_MAX_DIM ? 0 : -1;
    case TD_MATRIX_DENSE_I8: return m->i8 && m->scales ? 0 : -1;
    case TD_MATRIX_SPARSE_I8:
        if (!m->i8 || !m->scales || !m->indptr) return -1;
        return td_csr_check(m->indices, m->indptr, (size_t)rows, (size_t)cols, (size_t)m->indptr[rows]);
    case TD_MATRIX_SPARSE_F32:
        if (!m->f32 || !m->indptr) return -1;
        return td_csr_check(m->indices, m->indptr, (size_t)rows, (size_t)cols, (size_t)m->indptr[rows]);
    default: return -1;
    }
}

int td_fastgrnn_check(const td_fastgrnn *m) {
    if (!m || m->input_dim <= 0 || m->timesteps <= 0) return -1;
    if (m->hidden_dim <= 0 || m->hidden_dim > TD_FASTGRNN_MAX_DIM) return -1;
    if (m->output_dim <= 0 || m->output_dim > TD_FASTGRNN_MAX_DIM) return -1;
    if (!m->b_z || !m->b_h || !m->w_out || !m->b_out) return -1;
    if (matrix_check_(&m->w, m->hidden_dim, m->input_dim) != 0) return -1;
    return matrix_check_(&m->u, m->hidden_dim, m->hidden_dim);
}

void td_fastgrnn_forward(const td_fastgrnn *m, const float *x, float *out) {
    td_active_table_()->fastgrnn_batch(m, x, 1, out);
}

void td_fastgrnn_forward_batch(const td_fastgrnn *m, const float *x, size_t batch, float *out) {
    td_active_table_()->fastgrnn_batch(m, x, batch, out);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Fused candidate scoring                                                                              */
/* ---------------------------------------------------------------------------------------------------- */

#define TD_SCORE_CHUNK 64 /* candidates staged at once: features live on the stack, nothing is allocated */

/* Features of count candidates from start, into f (count x 5). */
static void features_chunk_(const td_kernel_table_ *t, const td_feature_config *cfg, const float *query,
                            double query_norm, size_t dim, const float *embeddings, const float *embedding_norms,
                            size_t start, size_t count, const double *created_at, const int64_t *access_count,
                            const float *success_rate, const float *metadata_overlap, double now, float *f) {
    float sims[TD_SCORE_CHUNK], recency[TD_SCORE_CHUNK], frequency[TD_SCORE_CHUNK];
    cosine_rows_(t, query, query_norm, embeddings + start * dim, count, dim,
                 embedding_norms ? embedding_norms + start : NULL, sims);
    t->recency_frequency(cfg->recency_decay, now, created_at + start, access_count + start, count, recency,
                         frequency);
    for (size_t i = 0; i < count; ++i) {
        size_t c = start + i;
        float *row = f + i * TD_NUM_FEATURES;
        row[0] = cfg->similarity_weight * sims[i];
        row[1] = cfg->recency_weight * recency[i];
        row[2] = cfg->frequency_weight * frequency[i];
        row[3] = cfg->success_weight * success_rate[c];
        row[4] = metadata_overlap ? cfg->metadata_weight * metadata_overlap[c] : 0.0f;
    }
}

void td_candidate_features(const td_feature_config *cfg, const float *query, size_t dim, const float *embeddings,
                           const float *embedding_norms, size_t n, const double *created_at,
                           const int64_t *access_count, const float *success_rate, const float *metadata_overlap,
                           double now, float *features_out) {
    const td_kernel_table_ *t = td_active_table_();
    double query_norm = l2_norm_(t, query, dim);
    for (size_t start = 0; start < n; start += TD_SCORE_CHUNK) {
        size_t count = n - start < TD_SCORE_CHUNK ? n - start : TD_SCORE_CHUNK;
        features_chunk_(t, cfg, query, query_norm, dim, embeddings, embedding_norms, start, count, created_at,
                        access_count, success_rate, metadata_overlap, now, features_out + start * TD_NUM_FEATURES);
    }
}

int td_score_candidates(const td_fastgrnn *m, const td_feature_config *cfg, const float *query, size_t dim,
                        const float *embeddings, const float *embedding_norms, size_t n,
                        const double *created_at, const int64_t *access_count, const float *success_rate,
                        const float *metadata_overlap, double now, float *features_out, float *scores_out) {
    const td_kernel_table_ *t = td_active_table_();
    float features[TD_SCORE_CHUNK * TD_NUM_FEATURES];
    double query_norm;
    if (!m || !cfg || m->input_dim != TD_NUM_FEATURES || m->timesteps != 1 || m->output_dim != 1) return -1;
    query_norm = l2_norm_(t, query, dim);
    for (size_t start = 0; start < n; start += TD_SCORE_CHUNK) {
        size_t count = n - start < TD_SCORE_CHUNK ? n - start : TD_SCORE_CHUNK;
        float *f = features_out ? features_out + start * TD_NUM_FEATURES : features;
        features_chunk_(t, cfg, query, query_norm, dim, embeddings, embedding_norms, start, count, created_at,
                        access_count, success_rate, metadata_overlap, now, f);
        t->fastgrnn_batch(m, f, count, scores_out + start);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Routing                                                                                              */
/* ---------------------------------------------------------------------------------------------------- */

/* a ranks before b: higher score first, then lower index. Scores are finite here. */
#define TD_BEFORE(sa, ia, sb, ib) ((sa) > (sb) || ((sa) == (sb) && (ia) < (ib)))

void td_rank_desc(const float *scores, size_t n, int32_t *order, int32_t *scratch) {
    for (size_t i = 0; i < n; ++i) order[i] = (int32_t)i;
    if (n <= 32 || !scratch) { /* insertion sort: stable, and fastest for the usual handful */
        for (size_t i = 1; i < n; ++i) {
            int32_t item = order[i];
            size_t j = i;
            while (j > 0 && TD_BEFORE(scores[item], item, scores[order[j - 1]], order[j - 1])) {
                order[j] = order[j - 1];
                --j;
            }
            order[j] = item;
        }
        return;
    }
    /* bottom-up merge sort: runs of 16 by insertion, then merges between order and scratch */
    for (size_t lo = 0; lo < n; lo += 16) {
        size_t hi = lo + 16 < n ? lo + 16 : n;
        for (size_t i = lo + 1; i < hi; ++i) {
            int32_t item = order[i];
            size_t j = i;
            while (j > lo && TD_BEFORE(scores[item], item, scores[order[j - 1]], order[j - 1])) {
                order[j] = order[j - 1];
                --j;
            }
            order[j] = item;
        }
    }
    int32_t *src = order, *dst = scratch;
    for (size_t width = 16; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t a = lo, b = mid, k = lo;
            while (a < mid && b < hi)
                dst[k++] = TD_BEFORE(scores[src[b]], src[b], scores[src[a]], src[a]) ? src[b++] : src[a++];
            while (a < mid) dst[k++] = src[a++];
            while (b < hi) dst[k++] = src[b++];
        }
        int32_t *tmp = src;
        src = dst;
        dst = tmp;
    }
    if (src != order) memcpy(order, src, n * sizeof(int32_t));
}

int td_route_candidates(const td_fastgrnn *m, const td_feature_config *cfg, const float *query, size_t dim,
                        const float *embeddings, const float *embedding_norms, size_t n, const double *created_at,
                        const int64_t *access_count, const float *success_rate, const float *metadata_overlap,
                        double now, float confidence_threshold, float max_uncertainty, float *scores,
                        float *uncertainty, uint8_t *lightweight, int32_t *order, int32_t *scratch) {
    return td_route_candidates_ex(m, cfg, query, dim, embeddings, embedding_norms, n, created_at, access_count,
                                  success_rate, metadata_overlap, now, confidence_threshold, max_uncertainty, scores,
                                  uncertainty, lightweight, order, scratch, NULL);
}

int td_route_candidates_ex(const td_fastgrnn *m, const td_feature_config *cfg, const float *query, size_t dim,
                           const float *embeddings, const float *embedding_norms, size_t n, const double *created_at,
                           const int64_t *access_count, const float *success_rate, const float *metadata_overlap,
                           double now, float confidence_threshold, float max_uncertainty, float *scores,
                           float *uncertainty, uint8_t *lightweight, int32_t *order, int32_t *scratch,
                           float *features_out) {
    int rc = td_score_candidates(m, cfg, query, dim, embeddings, embedding_norms, n, created_at, access_count,
                                 success_rate, metadata_overlap, now, features_out, scores);
    if (rc != 0) return rc;
    for (size_t i = 0; i < n; ++i) {
        float p = scores[i], u;
        if (!isfinite(p)) return 1;
        u = 1.0f - 2.0f * fabsf(p - 0.5f);
        u = u < 0.0f ? 0.0f : (u > 1.0f ? 1.0f : u);
        uncertainty[i] = u;
        lightweight[i] = (uint8_t)(p >= confidence_threshold && u <= max_uncertainty);
    }
    td_rank_desc(scores, n, order, scratch);
    return 0;
}
