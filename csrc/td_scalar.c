/* td_scalar.c - portable reference kernels. Built without auto-vectorisation so it stays an honest
 * baseline; every SIMD file is tested against it. Dot products accumulate in f64. */
#include <math.h>
#include <string.h>

#include "td_internal.h"

void td_dot3_f32_scalar(const float *a, const float *b, size_t n, double out[3]) {
    double ab = 0.0, aa = 0.0, bb = 0.0;
    for (size_t i = 0; i < n; ++i) {
        double x = (double)a[i], y = (double)b[i];
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    out[0] = ab;
    out[1] = aa;
    out[2] = bb;
}

double td_sumsq_f32_scalar(const float *a, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; ++i) s += (double)a[i] * (double)a[i];
    return s;
}

void td_cosine_batch_f32_scalar(const float *query, double query_norm, const float *rows, size_t n_rows,
                                size_t dim, const float *row_norms, float *out) {
    for (size_t r = 0; r < n_rows; ++r) {
        const float *row = rows + r * dim;
        double ab = 0.0, bb = 0.0, norm;
        for (size_t i = 0; i < dim; ++i) {
            double y = (double)row[i];
            ab += (double)query[i] * y;
            bb += y * y;
        }
        norm = row_norms ? (double)row_norms[r] : sqrt(bb);
        out[r] = (float)td_cosine_from_dots_(ab, query_norm * query_norm, norm * norm);
    }
}

void td_matvec_i8_f32_scalar(const int8_t *w, const float *scales, const float *bias, const float *x,
                             size_t rows, size_t cols, float *y) {
    for (size_t i = 0; i < rows; ++i) {
        const int8_t *row = w + i * cols;
        float acc = 0.0f;
        for (size_t j = 0; j < cols; ++j) acc += (float)row[j] * x[j];
        y[i] = scales[i] * acc + (bias ? bias[i] : 0.0f);
    }
}

void td_matvec_i8_i32_scalar(const int8_t *w, const int8_t *x, size_t rows, size_t cols, int32_t *acc) {
    for (size_t i = 0; i < rows; ++i) {
        const int8_t *row = w + i * cols;
        int32_t s = 0;
        for (size_t j = 0; j < cols; ++j) s += (int32_t)row[j] * (int32_t)x[j];
        acc[i] = s;
    }
}

void td_csr_matvec_i8_f32_scalar(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                                 const float *scales, const float *bias, const float *x, size_t rows,
                                 float *y) {
    for (size_t i = 0; i < rows; ++i) {
        float acc = 0.0f;
        for (int32_t k = indptr[i]; k < indptr[i + 1]; ++k) acc += (float)values[k] * x[indices[k]];
        y[i] = scales[i] * acc + (bias ? bias[i] : 0.0f);
    }
}

void td_csr_matvec_i8_i32_scalar(const int8_t *values, const int32_t *indices, const int32_t *indptr,
                                 const int8_t *x, size_t rows, int32_t *acc) {
    for (size_t i = 0; i < rows; ++i) {
        int32_t s = 0;
        for (int32_t k = indptr[i]; k < indptr[i + 1]; ++k) s += (int32_t)values[k] * (int32_t)x[indices[k]];
        acc[i] = s;
    }
}

void td_csr_matvec_f32_scalar(const float *values, const int32_t *indices, const int32_t *indptr,
                              const float *bias, const float *x, size_t rows, float *y) {
    for (size_t i = 0; i < rows; ++i) {
        float acc = 0.0f;
        for (int32_t k = indptr[i]; k < indptr[i + 1]; ++k) acc += values[k] * x[indices[k]];
        y[i] = acc + (bias ? bias[i] : 0.0f);
    }
}

/* y = M x for the column-major dense f32 form (rows x cols). */
static void dense_cols_f32_scalar(const float *m, size_t rows, size_t cols, const float *x, float *y) {
    memset(y, 0, rows * sizeof(float));
    for (size_t j = 0; j < cols; ++j) {
        const float *col = m + j * rows;
        float xj = x[j];
        for (size_t i = 0; i < rows; ++i) y[i] += col[i] * xj;
    }
}

static void matrix_apply_scalar(const td_matrix *m, const float *x, float *y) {
    size_t rows = (size_t)m->rows, cols = (size_t)m->cols;
    switch (m->kind) {
    case TD_MATRIX_DENSE_F32:
        dense_cols_f32_scalar(m->f32, rows, cols, x, y);
        break;
    case TD_MATRIX_LOWRANK_F32: {
        float t[TD_FASTGRNN_MAX_DIM];
        dense_cols_f32_scalar(m->f32_right, (size_t)m->rank, cols, x, t);
        dense_cols_f32_scalar(m->f32, rows, (size_t)m->rank, t, y);
        break;
    }
    case TD_MATRIX_DENSE_I8:
        memset(y, 0, rows * sizeof(float));
        for (size_t j = 0; j < cols; ++j) {
            const int8_t *col = m->i8 + j * rows;
            float xj = x[j];
            for (size_t i = 0; i < rows; ++i) y[i] += (float)col[i] * xj;
        }
        for (size_t i = 0; i < rows; ++i) y[i] *= m->scales[i];
        break;
    case TD_MATRIX_SPARSE_I8:
        td_csr_matvec_i8_f32_scalar(m->i8, m->indices, m->indptr, m->scales, NULL, x, rows, y);
        break;
    case TD_MATRIX_SPARSE_F32:
        td_csr_matvec_f32_scalar(m->f32, m->indices, m->indptr, NULL, x, rows, y);
        break;
    default:
        memset(y, 0, rows * sizeof(float));
        break;
    }
}

void td_fastgrnn_probs_(const float *logits, size_t outputs, float *out) {
    float top = -INFINITY, sum = 0.0f;
    if (outputs == 1) {
        out[0] = td_sigmoid_f32_(logits[0]);
        return;
    }
    for (size_t o = 0; o < outputs; ++o) top = logits[o] > top ? logits[o] : top;
    for (size_t o = 0; o < outputs; ++o) {
        out[o] = expf(logits[o] - top);
        sum += out[o];
    }
    for (size_t o = 0; o < outputs; ++o) out[o] /= sum;
}

/* Writes output_dim probabilities from the final hidden state. */
void td_fastgrnn_output_(const td_fastgrnn *m, const float *h, float *out) {
    size_t hidden = (size_t)m->hidden_dim, outputs = (size_t)m->output_dim;
    float logits[TD_FASTGRNN_MAX_DIM];
    for (size_t o = 0; o < outputs; ++o) {
        const float *row = m->w_out + o * hidden;
        float acc = m->b_out[o];
        for (size_t i = 0; i < hidden; ++i) acc += row[i] * h[i];
        logits[o] = acc;
    }
    td_fastgrnn_probs_(logits, outputs, out);
}

static void fastgrnn_one_scalar(const td_fastgrnn *m, const float *x, float *out) {
    size_t hidden = (size_t)m->hidden_dim, inputs = (size_t)m->input_dim;
    float h[TD_FASTGRNN_MAX_DIM], a[TD_FASTGRNN_MAX_DIM], b[TD_FASTGRNN_MAX_DIM];
    float zeta = td_sigmoid_f32_(m->zeta), nu = td_sigmoid_f32_(m->nu);
    for (int32_t t = 0; t < m->timesteps; ++t) {
        matrix_apply_scalar(&m->w, x + (size_t)t * inputs, a);
        if (t > 0) { /* h_0 = 0, so U h_0 = 0 */
            matrix_apply_scalar(&m->u, h, b);
            for (size_t i = 0; i < hidden; ++i) a[i] += b[i];
        }
        for (size_t i = 0; i < hidden; ++i) {
            float z = td_sigmoid_f32_(a[i] + m->b_z[i]);
            float c = tanhf(a[i] + m->b_h[i]);
            float prev = t > 0 ? h[i] : 0.0f;
            h[i] = z * prev + (zeta * (1.0f - z) + nu) * c;
        }
    }
    td_fastgrnn_output_(m, h, out);
}

void td_fastgrnn_batch_scalar(const td_fastgrnn *m, const float *x, size_t batch, float *out) {
    size_t step = (size_t)m->timesteps * (size_t)m->input_dim;
    for (size_t n = 0; n < batch; ++n) fastgrnn_one_scalar(m, x + n * step, out + n * (size_t)m->output_dim);
}

/* The reference for td_feature_math.h: libm's exp and log1p in float64. */
void td_recency_frequency_scalar(double decay, double now, const double *created_at,
                                 const int64_t *access_count, size_t n, float *recency, float *frequency) {
    const double inv_log_cap = 1.0 / log1p(10000.0);
    for (size_t i = 0; i < n; ++i) {
        double age = now - created_at[i];
        double freq = log1p((double)(access_count[i] > 0 ? access_count[i] : 0)) * inv_log_cap;
        recency[i] = decay > 0.0 ? (float)exp(-decay * (age > 0.0 ? age : 0.0)) : 1.0f;
        frequency[i] = (float)(freq < 1.0 ? freq : 1.0);
    }
}
