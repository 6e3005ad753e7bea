/* td_test.c - the C library on its own: every kernel, on every ISA this CPU runs, against double-precision
 * and int64 references written here. Exit status 0 when everything passes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "td_kernels.h"

static int failures = 0;
static const char *current_isa = "?";

#define CHECK(cond, ...)                                                                                   \
    do {                                                                                                   \
        if (!(cond)) {                                                                                     \
            ++failures;                                                                                    \
            fprintf(stderr, "[%s] %s:%d: ", current_isa, __FILE__, __LINE__);                              \
            fprintf(stderr, __VA_ARGS__);                                                                  \
            fputc('\n', stderr);                                                                           \
        }                                                                                                  \
    } while (0)

/* xorshift64*: deterministic, no libc rand state. */
static unsigned long long rng_state = 0x9E3779B97F4A7C15ull;
static unsigned long long next_u64(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}
static float uniform(void) { return (float)((next_u64() >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f; }
static int8_t random_i8(void) { return (int8_t)(next_u64() >> 56); }
static void fill(float *p, size_t n) {
    for (size_t i = 0; i < n; ++i) p[i] = uniform();
}

/* Reference cosine, computed differently from every kernel: each vector is first divided by its largest
 * magnitude (so no sum can overflow or underflow, whatever the scale of the input), then normalised to unit
 * length, and only then are the unit vectors multiplied: three passes, not one pass of three dot products. */
static double ref_cosine(const float *a, const float *b, size_t n) {
    double amax = 0, bmax = 0, aa = 0, bb = 0, ab = 0, na, nb;
    for (size_t i = 0; i < n; ++i) { /* (a fmax reduction here crashes aarch64 gcc 12.2 at -O3) */
        double x = fabs((double)a[i]), y = fabs((double)b[i]);
        if (x > amax) amax = x;
        if (y > bmax) bmax = y;
    }
    if (amax == 0 || bmax == 0) return 0.0;
    for (size_t i = 0; i < n; ++i) {
        double x = a[i] / amax, y = b[i] / bmax;
        aa += x * x;
        bb += y * y;
    }
    na = sqrt(aa) * amax; /* the norms in the original scale, as divisors only */
    nb = sqrt(bb) * bmax;
    for (size_t i = 0; i < n; ++i) ab += (a[i] / na) * (b[i] / nb);
    return ab;
}

static void test_cosine(void) {
    float *a = malloc(1101 * sizeof(float)), *b = malloc(1101 * sizeof(float));
    for (size_t n = 1; n <= 1100; ++n) {
        fill(a, n);
        fill(b, n);
        double got = td_cosine_f32(a, b, n), want = ref_cosine(a, b, n);
        CHECK(fabs(got - want) < 1e-6, "cosine n=%zu: %.9f vs %.9f", n, got, want);
        /* unaligned by one float */
        got = td_cosine_f32(a + 1, b, n - 1 > 0 ? n - 1 : 0);
        want = ref_cosine(a + 1, b, n - 1);
        CHECK(fabs(got - want) < 1e-6, "unaligned cosine n=%zu", n);
    }
    memset(a, 0, 384 * sizeof(float));
    fill(b, 384);
    CHECK(td_cosine_f32(a, b, 384) == 0.0, "zero vector");
    CHECK(td_cosine_f32(a, a, 384) == 0.0, "two zero vectors");
    a[7] = NAN;
    CHECK(isnan(td_cosine_f32(a, b, 384)), "NaN must give NaN");
    a[7] = INFINITY;
    CHECK(isnan(td_cosine_f32(b, a, 384)), "Inf must give NaN");
    free(a);
    free(b);
}

static void test_cosine_batch(void) {
    const size_t dims[] = {1, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 127, 383, 384, 385, 1100};
    const size_t rows = 13;
    float *q = malloc(1100 * sizeof(float)), *m = malloc(rows * 1100 * sizeof(float));
    float out[13], out2[13], norms[13];
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; ++d) {
        size_t dim = dims[d];
        fill(q, dim);
        fill(m, rows * dim);
        memset(m + 4 * dim, 0, dim * sizeof(float)); /* a zero row */
        td_cosine_batch_f32(q, m, rows, dim, NULL, out);
        td_l2_norms_f32(m, rows, dim, norms);
        td_cosine_batch_f32(q, m, rows, dim, norms, out2);
        for (size_t r = 0; r < rows; ++r) {
            double want = ref_cosine(q, m + r * dim, dim);
            CHECK(fabs(out[r] - want) < 1e-6, "batch dim=%zu row=%zu: %f vs %f", dim, r, out[r], want);
            CHECK(fabs(out2[r] - want) < 1e-6, "batch with norms dim=%zu row=%zu", dim, r);
        }
        CHECK(out[4] == 0.0f, "zero row gives 0");
    }
    m[2 * 384 + 5] = NAN;
    td_cosine_batch_f32(q, m, rows, 384, NULL, out);
    CHECK(isnan(out[2]) && !isnan(out[1]) && !isnan(out[3]), "a NaN row gives NaN for that row only");
    td_cosine_batch_f32(q, m, 0, 384, NULL, out); /* no rows: nothing to do, nothing touched */
    free(q);
    free(m);
}

/* Inputs whose f32 products overflow (~1e20), whose block sums overflow (~1e19), or whose products underflow
 * (~1e-20 and below): the kernels must fall back to f64 and still agree with the reference. */
static void test_cosine_extreme_range(void) {
    const double scales[] = {1.0, 1e20, 1e19, 1e-20, 1e-22, 1e-25};
    const size_t n_scales = sizeof scales / sizeof scales[0];
    const size_t dims[] = {1, 5, 16, 33, 100, 384, 1100};
    enum { ROWS = 2 * 6 + 1 };
    float *a = malloc(1100 * sizeof(float)), *b = malloc(1100 * sizeof(float));
    float *m = malloc(ROWS * 1100 * sizeof(float)), out[ROWS], out2[ROWS], norms[ROWS];
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; ++d) {
        size_t n = dims[d];
        for (size_t sa = 0; sa < n_scales; ++sa)
            for (size_t sb = 0; sb < n_scales; ++sb) {
                for (size_t i = 0; i < n; ++i) a[i] = (float)(uniform() * scales[sa]);
                for (size_t i = 0; i < n; ++i) b[i] = (float)(uniform() * scales[sb]);
                double got = td_cosine_f32(a, b, n), want = ref_cosine(a, b, n);
                CHECK(fabs(got - want) < 1e-6, "cosine n=%zu scales %g, %g: %.9g vs %.9g", n, scales[sa],
                      scales[sb], got, want);
            }
        /* one vector mixing every scale */
        for (size_t i = 0; i < n; ++i) a[i] = (float)(uniform() * scales[i % n_scales]);
        fill(b, n);
        CHECK(fabs(td_cosine_f32(a, b, n) - ref_cosine(a, b, n)) < 1e-6, "cosine n=%zu mixed scales", n);
        CHECK(fabs(td_cosine_f32(a, a, n) - 1.0) < 1e-6, "cosine n=%zu mixed scales with itself", n);

        /* rows of every scale (twice, so the 4- and 8-row blocks see them), queries of every scale */
        for (size_t r = 0; r < ROWS; ++r)
            for (size_t i = 0; i < n; ++i) m[r * n + i] = (float)(uniform() * scales[r % n_scales]);
        td_l2_norms_f32(m, ROWS, n, norms);
        for (size_t r = 0; r < ROWS; ++r) {
            double want = 0;
            for (size_t i = 0; i < n; ++i) want += ((double)m[r * n + i] / scales[r % n_scales]) *
                                                   ((double)m[r * n + i] / scales[r % n_scales]);
            want = sqrt(want) * scales[r % n_scales];
            CHECK(fabs(norms[r] - want) <= 1e-6 * want, "l2 norm n=%zu row %zu: %g vs %g", n, r, norms[r], want);
        }
        for (size_t sq = 0; sq < n_scales; ++sq) {
            for (size_t i = 0; i < n; ++i) a[i] = (float)(uniform() * scales[sq]);
            td_cosine_batch_f32(a, m, ROWS, n, NULL, out);
            td_cosine_batch_f32(a, m, ROWS, n, norms, out2);
            for (size_t r = 0; r < ROWS; ++r) {
                double want = ref_cosine(a, m + r * n, n);
                CHECK(fabs(out[r] - want) < 1e-6, "batch n=%zu query scale %g row %zu: %.9g vs %.9g", n, scales[sq],
                      r, out[r], want);
                CHECK(fabs(out2[r] - want) < 1e-6, "batch with norms n=%zu query scale %g row %zu: %.9g vs %.9g", n,
                      scales[sq], r, out2[r], want);
            }
        }
    }
    free(a);
    free(b);
    free(m);
}

static void test_matvec(void) {
    const size_t shapes[][2] = {{1, 1}, {3, 5}, {8, 32}, {9, 33}, {17, 64}, {31, 65}, {5, 1100}, {64, 384}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
        size_t rows = shapes[s][0], cols = shapes[s][1];
        int8_t *w = malloc(rows * cols), *xi = malloc(cols);
        float *x = malloc(cols * sizeof(float)), *scales = malloc(rows * sizeof(float));
        float *bias = malloc(rows * sizeof(float)), *y = malloc(rows * sizeof(float));
        int32_t *acc = malloc(rows * sizeof(int32_t));
        for (size_t i = 0; i < rows * cols; ++i) w[i] = random_i8();
        for (size_t j = 0; j < cols; ++j) xi[j] = random_i8();
        if (s == 0) w[0] = xi[0] = -128;
        fill(x, cols);
        fill(bias, rows);
        for (size_t i = 0; i < rows; ++i) scales[i] = 0.01f + 0.01f * (float)i;
        td_matvec_i8_i32(w, xi, rows, cols, acc);
        td_matvec_i8_f32(w, scales, bias, x, rows, cols, y);
        for (size_t i = 0; i < rows; ++i) {
            long long exact = 0;
            double fl = 0, mag = 0;
            for (size_t j = 0; j < cols; ++j) {
                exact += (long long)w[i * cols + j] * xi[j];
                fl += (double)w[i * cols + j] * x[j];
                mag += fabs((double)w[i * cols + j] * x[j]);
            }
            CHECK(acc[i] == exact, "i8 exact %zux%zu row %zu: %d vs %lld", rows, cols, i, acc[i], exact);
            double want = scales[i] * fl + bias[i];
            CHECK(fabs(y[i] - want) <= 1e-6 * scales[i] * mag + 1e-6, "i8 f32 %zux%zu row %zu", rows, cols, i);
        }

        /* The same matrix as CSR with every third entry dropped and row 0 empty. */
        int32_t *indptr = malloc((rows + 1) * sizeof(int32_t)), *indices = malloc(rows * cols * sizeof(int32_t));
        int8_t *values = malloc(rows * cols);
        float *fvalues = malloc(rows * cols * sizeof(float));
        size_t nnz = 0;
        indptr[0] = 0;
        for (size_t i = 0; i < rows; ++i) {
            for (size_t j = 0; j < cols; ++j)
                if (i > 0 && (i + j) % 3 != 0) {
                    indices[nnz] = (int32_t)j;
                    values[nnz] = w[i * cols + j];
                    fvalues[nnz] = (float)w[i * cols + j] * 0.25f;
                    ++nnz;
                }
            indptr[i + 1] = (int32_t)nnz;
        }
        CHECK(td_csr_check(indices, indptr, rows, cols, nnz) == 0, "valid CSR rejected");
        if (nnz > 0) {
            int32_t saved = indices[0];
            indices[0] = (int32_t)cols;
            CHECK(td_csr_check(indices, indptr, rows, cols, nnz) != 0, "out-of-range index accepted");
            indices[0] = saved;
        }
        td_csr_matvec_i8_i32(values, indices, indptr, xi, rows, acc);
        td_csr_matvec_i8_f32(values, indices, indptr, scales, NULL, x, rows, y);
        float *y2 = malloc(rows * sizeof(float));
        td_csr_matvec_f32(fvalues, indices, indptr, bias, x, rows, y2);
        for (size_t i = 0; i < rows; ++i) {
            long long exact = 0;
            double fl = 0, mag = 0;
            for (int32_t k = indptr[i]; k < indptr[i + 1]; ++k) {
                exact += (long long)values[k] * xi[indices[k]];
                fl += (double)values[k] * x[indices[k]];
                mag += fabs((double)values[k] * x[indices[k]]);
            }
            CHECK(acc[i] == exact, "csr i8 exact row %zu", i);
            CHECK(fabs(y[i] - scales[i] * fl) <= 1e-6 * scales[i] * mag + 1e-6, "csr i8 f32 row %zu", i);
            CHECK(fabs(y2[i] - (0.25 * fl + bias[i])) <= 1e-6 * mag + 1e-6, "csr f32 row %zu", i);
        }
        free(w), free(xi), free(x), free(scales), free(bias), free(y), free(y2), free(acc);
        free(indptr), free(indices), free(values), free(fvalues);
    }
}

static double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

/* Double-precision FastGRNN with dense row-major W (hidden x input) and U (hidden x hidden), output_dim 1. */
static double ref_fastgrnn(const float *W, const float *U, const float *bz, const float *bh, const float *wo,
                           float bo, float zeta, float nu, const float *x, int in, int hid, int T) {
    double h[64] = {0}, hn[64];
    for (int t = 0; t < T; ++t) {
        for (int i = 0; i < hid; ++i) {
            double a = 0;
            for (int j = 0; j < in; ++j) a += (double)W[i * in + j] * x[t * in + j];
            for (int j = 0; j < hid; ++j) a += (double)U[i * hid + j] * h[j];
            double z = sigmoid(a + bz[i]), c = tanh(a + bh[i]);
            hn[i] = z * h[i] + (sigmoid(zeta) * (1 - z) + sigmoid(nu)) * c;
        }
        memcpy(h, hn, sizeof h);
    }
    double logit = bo;
    for (int i = 0; i < hid; ++i) logit += (double)wo[i] * h[i];
    return sigmoid(logit);
}

static void transpose(const float *rowmajor, int rows, int cols, float *colmajor) {
    for (int i = 0; i < rows; ++i)
        for (int j = 0; j < cols; ++j) colmajor[j * rows + i] = rowmajor[i * cols + j];
}

enum { MAX_IN = 24, MAX_HID = 40, MAX_OUT = 5, MAX_T = 4, BATCH = 19 };

/* A td_matrix of one kind with random values, and its dense expansion in f64 (row-major), worked out here
 * from the stored values. */
typedef struct test_matrix {
    td_matrix m;
    float f32[MAX_HID * MAX_HID], right[MAX_HID * MAX_HID], scales[MAX_HID];
    int8_t i8[MAX_HID * MAX_HID];
    int32_t indices[MAX_HID * MAX_HID], indptr[MAX_HID + 1];
    double dense[MAX_HID * MAX_HID];
} test_matrix;

static void make_matrix(test_matrix *tm, int kind, int rows, int cols) {
    memset(tm, 0, sizeof *tm);
    tm->m.kind = kind, tm->m.rows = rows, tm->m.cols = cols;
    for (int i = 0; i < rows; ++i) tm->scales[i] = (0.5f + 0.5f * fabsf(uniform())) / 127.0f;
    switch (kind) {
    case TD_MATRIX_DENSE_F32:
        fill(tm->f32, (size_t)rows * cols);
        tm->m.f32 = tm->f32;
        for (int i = 0; i < rows; ++i)
            for (int j = 0; j < cols; ++j) tm->dense[i * cols + j] = tm->f32[j * rows + i];
        break;
    case TD_MATRIX_LOWRANK_F32: {
        int rank = 1 + (rows + 2 * cols) % 5; /* 1 .. 5, sometimes above min(rows, cols) */
        float s = 1.0f / sqrtf((float)rank);
        fill(tm->f32, (size_t)rows * rank);
        fill(tm->right, (size_t)rank * cols);
        for (int k = 0; k < rows * rank; ++k) tm->f32[k] *= s;
        tm->m.rank = rank, tm->m.f32 = tm->f32, tm->m.f32_right = tm->right;
        for (int i = 0; i < rows; ++i)
            for (int j = 0; j < cols; ++j) {
                double e = 0;
                for (int k = 0; k < rank; ++k) e += (double)tm->f32[k * rows + i] * tm->right[j * rank + k];
                tm->dense[i * cols + j] = e;
            }
        break;
    }
    case TD_MATRIX_DENSE_I8:
        for (int k = 0; k < rows * cols; ++k) tm->i8[k] = random_i8();
        tm->m.i8 = tm->i8, tm->m.scales = tm->scales;
        for (int i = 0; i < rows; ++i)
            for (int j = 0; j < cols; ++j) tm->dense[i * cols + j] = (double)tm->scales[i] * tm->i8[j * rows + i];
        break;
    default: { /* CSR: row 0 empty and row 1 full when there are several rows, about half of each other row */
        int nnz = 0;
        for (int i = 0; i < rows; ++i) {
            tm->indptr[i] = nnz;
            for (int j = 0; j < cols; ++j) {
                int keep = rows == 1 ? 1 : i == 0 ? 0 : i == 1 ? 1 : (int)(next_u64() >> 63);
                if (!keep) continue;
                tm->indices[nnz] = j;
                tm->i8[nnz] = random_i8();
                tm->f32[nnz] = uniform();
                tm->dense[i * cols + j] =
                    kind == TD_MATRIX_SPARSE_I8 ? (double)tm->scales[i] * tm->i8[nnz] : (double)tm->f32[nnz];
                ++nnz;
            }
        }
        tm->indptr[rows] = nnz;
        tm->m.indices = tm->indices, tm->m.indptr = tm->indptr;
        if (kind == TD_MATRIX_SPARSE_I8)
            tm->m.i8 = tm->i8, tm->m.scales = tm->scales;
        else
            tm->m.f32 = tm->f32;
        break;
    }
    }
}

/* The FastGRNN of m in f64 from dense row-major W and U: output_dim probabilities for one sequence x. */
static void ref_fastgrnn_dense(const td_fastgrnn *m, const double *W, const double *U, const float *x, double *out) {
    int in = m->input_dim, hid = m->hidden_dim, outputs = m->output_dim;
    double h[MAX_HID] = {0}, hn[MAX_HID], logits[MAX_OUT], top = -INFINITY, sum = 0;
    double zeta = sigmoid(m->zeta), nu = sigmoid(m->nu);
    for (int t = 0; t < m->timesteps; ++t) {
        for (int i = 0; i < hid; ++i) {
            double a = 0;
            for (int j = 0; j < in; ++j) a += W[i * in + j] * x[t * in + j];
            for (int j = 0; j < hid; ++j) a += U[i * hid + j] * h[j];
            double z = sigmoid(a + m->b_z[i]), c = tanh(a + m->b_h[i]);
            hn[i] = z * h[i] + (zeta * (1 - z) + nu) * c;
        }
        memcpy(h, hn, (size_t)hid * sizeof h[0]);
    }
    for (int o = 0; o < outputs; ++o) {
        logits[o] = m->b_out[o];
        for (int i = 0; i < hid; ++i) logits[o] += (double)m->w_out[o * hid + i] * h[i];
        top = fmax(top, logits[o]);
    }
    if (outputs == 1) {
        out[0] = sigmoid(logits[0]);
        return;
    }
    for (int o = 0; o < outputs; ++o) sum += exp(logits[o] - top);
    for (int o = 0; o < outputs; ++o) out[o] = exp(logits[o] - top) / sum;
}

/* Every pairing of W and U kinds (dense f32, low-rank, dense int8, sparse int8, sparse f32), several shapes
 * (hidden sizes that take each kernel's small and large paths), output_dim 1 (sigmoid) and 2, 5 (softmax),
 * against the f64 reference. */
static void test_fastgrnn_kinds(void) {
    const int cases[][3] = {{5, 8, 1},  {3, 7, 3},  {20, 33, 2}, {1, 1, 1},
                            {9, 16, 4}, {4, 12, 3}, {6, 17, 2},  {24, 40, 2}};
    const int kinds[] = {TD_MATRIX_DENSE_F32, TD_MATRIX_LOWRANK_F32, TD_MATRIX_DENSE_I8, TD_MATRIX_SPARSE_I8,
                         TD_MATRIX_SPARSE_F32};
    const int output_dims[] = {1, 2, 5};
    static test_matrix W, U;
    static float x[BATCH * MAX_T * MAX_IN], out[BATCH * MAX_OUT];
    float bz[MAX_HID], bh[MAX_HID], wo[MAX_OUT * MAX_HID], bo[MAX_OUT];
    double want[MAX_OUT];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c)
        for (size_t kw = 0; kw < 5; ++kw)
            for (size_t ku = 0; ku < 5; ++ku) {
                int in = cases[c][0], hid = cases[c][1], T = cases[c][2];
                int outputs = output_dims[(c + kw + ku) % 3];
                td_fastgrnn m = {0};
                make_matrix(&W, kinds[kw], hid, in);
                make_matrix(&U, kinds[ku], hid, hid);
                fill(bz, (size_t)hid);
                fill(bh, (size_t)hid);
                fill(wo, (size_t)outputs * hid);
                fill(bo, (size_t)outputs);
                fill(x, (size_t)BATCH * T * in);
                m.input_dim = in, m.hidden_dim = hid, m.output_dim = outputs, m.timesteps = T;
                m.w = W.m, m.u = U.m, m.b_z = bz, m.b_h = bh, m.w_out = wo, m.b_out = bo;
                m.zeta = 2.0f * uniform(), m.nu = -4.0f + uniform();
                CHECK(td_fastgrnn_check(&m) == 0, "valid model rejected: case %zu, W kind %d, U kind %d", c,
                      kinds[kw], kinds[ku]);
                td_fastgrnn_forward_batch(&m, x, BATCH, out);
                for (int n = 0; n < BATCH; ++n) {
                    ref_fastgrnn_dense(&m, W.dense, U.dense, x + n * T * in, want);
                    for (int o = 0; o < outputs; ++o)
                        CHECK(fabs(out[n * outputs + o] - want[o]) < 1e-5,
                              "fastgrnn %dx%d T=%d W kind %d U kind %d item %d output %d/%d: %.8f vs %.8f", in, hid,
                              T, kinds[kw], kinds[ku], n, o, outputs, out[n * outputs + o], want[o]);
                }
                td_fastgrnn_forward(&m, x + (BATCH - 1) * T * in, out);
                for (int o = 0; o < outputs; ++o)
                    CHECK(out[o] == out[o] && fabs(out[o] - want[o]) < 1e-5, "fastgrnn single item output %d", o);
            }
}

/* One-step models with a wide input and a narrow hidden layer (the shape of the query model): dense f32 and
 * dense int8 W, U an empty CSR matrix. Batches of every size around the kernels' groups of examples, against
 * the f64 reference; every item of a batch must equal the same item computed alone (td_fastgrnn_forward) and
 * the same batch read from an address one float further on. */
static void test_fastgrnn_wide(void) {
    enum { WIDE_BATCH = 1000, WIDE_IN = 385 };
    const int inputs[] = {WIDE_IN, 67}, hiddens[] = {32, 16, 7, 3}, output_dims[] = {4, 1};
    const int kinds[] = {TD_MATRIX_DENSE_F32, TD_MATRIX_DENSE_I8};
    const size_t batches[] = {1, 3, 4, 5, 9, WIDE_BATCH};
    float *x = malloc(WIDE_BATCH * WIDE_IN * sizeof(float)), *x1 = malloc((WIDE_BATCH * WIDE_IN + 1) * sizeof(float));
    float *w32 = malloc(MAX_HID * WIDE_IN * sizeof(float)), *out = malloc(WIDE_BATCH * MAX_OUT * sizeof(float));
    float *out1 = malloc(WIDE_BATCH * MAX_OUT * sizeof(float));
    double *dense = malloc(MAX_HID * WIDE_IN * sizeof(double)), *want = malloc(WIDE_BATCH * MAX_OUT * sizeof(double));
    int8_t *w8 = malloc(MAX_HID * WIDE_IN);
    static const double no_u[MAX_HID * MAX_HID];
    float scales[MAX_HID], bz[MAX_HID], bh[MAX_HID], wo[MAX_OUT * MAX_HID], bo[MAX_OUT], empty_f32[1] = {0};
    int32_t empty_indices[1] = {0}, empty_indptr[MAX_HID + 1] = {0};
    float single[MAX_OUT];
    for (size_t c = 0; c < sizeof inputs / sizeof inputs[0]; ++c)
        for (size_t hi = 0; hi < sizeof hiddens / sizeof hiddens[0]; ++hi)
            for (size_t kw = 0; kw < 2; ++kw)
                for (size_t od = 0; od < 2; ++od) {
                    int in = inputs[c], hid = hiddens[hi], outputs = output_dims[od];
                    float spread = 2.0f / sqrtf((float)in); /* keeps W x near 1, where the gates are not flat */
                    td_fastgrnn m = {0};
                    m.input_dim = in, m.hidden_dim = hid, m.output_dim = outputs, m.timesteps = 1;
                    for (int i = 0; i < hid; ++i) scales[i] = spread * (0.5f + 0.5f * fabsf(uniform())) / 127.0f;
                    if (kinds[kw] == TD_MATRIX_DENSE_F32) {
                        for (int k = 0; k < hid * in; ++k) w32[k] = spread * uniform();
                        for (int i = 0; i < hid; ++i)
                            for (int j = 0; j < in; ++j) dense[i * in + j] = w32[j * hid + i];
                        m.w = (td_matrix){TD_MATRIX_DENSE_F32, hid, in, 0, w32, NULL, NULL, NULL, NULL, NULL};
                    } else {
                        for (int k = 0; k < hid * in; ++k) w8[k] = random_i8();
                        for (int i = 0; i < hid; ++i)
                            for (int j = 0; j < in; ++j) dense[i * in + j] = (double)scales[i] * w8[j * hid + i];
                        m.w = (td_matrix){TD_MATRIX_DENSE_I8, hid, in, 0, NULL, NULL, w8, scales, NULL, NULL};
                    }
                    m.u = (td_matrix){TD_MATRIX_SPARSE_F32, hid, hid, 0, empty_f32, NULL, NULL, NULL, empty_indices,
                                      empty_indptr};
                    fill(bz, (size_t)hid);
                    fill(bh, (size_t)hid);
                    fill(wo, (size_t)outputs * hid);
                    fill(bo, (size_t)outputs);
                    m.b_z = bz, m.b_h = bh, m.w_out = wo, m.b_out = bo;
                    m.zeta = 2.0f * uniform(), m.nu = -4.0f + uniform();
                    CHECK(td_fastgrnn_check(&m) == 0, "valid wide model rejected: %dx%d", in, hid);
                    fill(x, (size_t)WIDE_BATCH * in);
                    memcpy(x1 + 1, x, (size_t)WIDE_BATCH * in * sizeof(float));
                    for (int n = 0; n < WIDE_BATCH; ++n)
                        ref_fastgrnn_dense(&m, dense, no_u, x + n * in, want + n * outputs);
                    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; ++b) {
                        size_t batch = batches[b];
                        int bad = 0, bad_single = 0, bad_shift = 0;
                        td_fastgrnn_forward_batch(&m, x, batch, out);
                        td_fastgrnn_forward_batch(&m, x1 + 1, batch, out1);
                        for (size_t n = 0; n < batch; ++n) {
                            td_fastgrnn_forward(&m, x + n * in, single);
                            for (int o = 0; o < outputs; ++o) {
                                float got = out[n * outputs + o];
                                double err = fabs(got - want[n * outputs + o]);
                                if (!(err < 1e-5) && bad++ < 3)
                                    CHECK(0, "wide fastgrnn %dx%d W kind %d, %d outputs, batch %zu item %zu output %d: "
                                          "%.8f vs %.8f", in, hid, kinds[kw], outputs, batch, n, o, got,
                                          want[n * outputs + o]);
                                if (got != single[o] && bad_single++ < 3)
                                    CHECK(0, "wide fastgrnn %dx%d W kind %d, %d outputs, batch %zu item %zu output %d: "
                                          "%.9g in the batch, %.9g alone", in, hid, kinds[kw], outputs, batch, n, o,
                                          got, single[o]);
                                if (got != out1[n * outputs + o] && bad_shift++ < 3)
                                    CHECK(0, "wide fastgrnn %dx%d W kind %d, %d outputs, batch %zu item %zu output %d: "
                                          "%.9g, %.9g with x one float further on", in, hid, kinds[kw], outputs,
                                          batch, n, o, got, out1[n * outputs + o]);
                            }
                        }
                    }
                }
    free(x), free(x1), free(w32), free(out), free(out1), free(dense), free(want), free(w8);
}

/* The sigmoid of td_kernels.h, in f64: (v >= 0 ? 1 : e) / (1 + e) with e = exp(max(-|v|, -87)). */
static double documented_sigmoid(double v) {
    double e = exp(fmax(-fabs(v), -87.0));
    return (v >= 0 ? 1.0 : e) / (1.0 + e);
}

/* Output probabilities for logits across the whole range (saturation, the -87 floor, NaN), through every
 * output path: hidden sizes for the small and large kernels, output_dim 1 and 2 (softmax). */
static void test_sigmoid_range(void) {
    const float logits[] = {-1e30f, -200.0f, -104.0f, -88.0f, -87.5f, -87.0f, -86.0f, -50.0f, -17.0f, -1.0f,
                            -1e-3f, -0.0f,   0.0f,    1e-3f,  1.0f,   17.0f,  50.0f,  88.0f,  200.0f, 1e30f};
    const int hiddens[] = {8, 12, 20};
    static float x[BATCH * 3], out[BATCH * 2];
    float zero[64] = {0}, ones[64], bo[2];
    for (int i = 0; i < 64; ++i) ones[i] = 1.0f;
    fill(x, sizeof x / sizeof x[0]);
    for (size_t h = 0; h < sizeof hiddens / sizeof hiddens[0]; ++h)
        for (size_t k = 0; k <= sizeof logits / sizeof logits[0]; ++k) {
            int hid = hiddens[h];
            float v = k < sizeof logits / sizeof logits[0] ? logits[k] : NAN;
            td_fastgrnn m = {3, hid, 1, 1, {TD_MATRIX_DENSE_F32, hid, 3, 0, ones, NULL, NULL, NULL, NULL, NULL},
                             {TD_MATRIX_DENSE_F32, hid, hid, 0, ones, NULL, NULL, NULL, NULL, NULL},
                             zero, zero, zero, bo, 1.0f, -4.0f};
            bo[0] = v; /* w_out = 0: the logit is b_out exactly */
            td_fastgrnn_forward_batch(&m, x, BATCH, out);
            double want = documented_sigmoid(v);
            for (int n = 0; n < BATCH; ++n)
                CHECK(v != v ? out[n] != out[n] : fabs(out[n] - want) <= 1e-6 * want,
                      "sigmoid(%g), hidden %d, item %d: %.9g vs %.9g", v, hid, n, out[n], want);
            /* softmax of (v, 0) is the sigmoid of v up to rounding (no floor there: libm exp, which may return a
             * subnormal, hence the absolute 1e-44) */
            m.output_dim = 2;
            bo[1] = 0.0f;
            td_fastgrnn_forward_batch(&m, x, BATCH, out);
            want = v != v ? NAN : 1.0 / (1.0 + exp(-(double)v));
            for (int n = 0; n < BATCH; ++n)
                CHECK(v != v ? out[2 * n] != out[2 * n]
                             : fabs(out[2 * n] - want) <= 1e-6 * want + 1e-44 &&
                                   fabs(out[2 * n] + out[2 * n + 1] - 1) < 1e-6,
                      "softmax(%g, 0), hidden %d, item %d: %.9g vs %.9g", v, hid, n, out[2 * n], want);
        }
}

static void test_fastgrnn(void) {
    const int cases[][3] = {{5, 8, 1}, {3, 7, 3}, {20, 33, 2}, {1, 1, 1}, {9, 16, 4}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
        int in = cases[c][0], hid = cases[c][1], T = cases[c][2];
        float W[64 * 20], U[64 * 64], Wc[64 * 20], Uc[64 * 64], bz[64], bh[64], wo[64], bo;
        float x[4 * 20 * 5], out[5];
        fill(W, (size_t)hid * in);
        fill(U, (size_t)hid * hid);
        fill(bz, (size_t)hid);
        fill(bh, (size_t)hid);
        fill(wo, (size_t)hid);
        bo = uniform();
        fill(x, (size_t)5 * T * in);
        transpose(W, hid, in, Wc);
        transpose(U, hid, hid, Uc);

        td_fastgrnn m = {0};
        m.input_dim = in, m.hidden_dim = hid, m.output_dim = 1, m.timesteps = T;
        m.w = (td_matrix){TD_MATRIX_DENSE_F32, hid, in, 0, Wc, NULL, NULL, NULL, NULL, NULL};
        m.u = (td_matrix){TD_MATRIX_DENSE_F32, hid, hid, 0, Uc, NULL, NULL, NULL, NULL, NULL};
        m.b_z = bz, m.b_h = bh, m.w_out = wo, m.b_out = &bo, m.zeta = 1.0f, m.nu = -4.0f;
        CHECK(td_fastgrnn_check(&m) == 0, "valid model rejected");
        td_fastgrnn_forward_batch(&m, x, 5, out);
        for (int n = 0; n < 5; ++n) {
            double want = ref_fastgrnn(W, U, bz, bh, wo, bo, 1.0f, -4.0f, x + n * T * in, in, hid, T);
            CHECK(fabs(out[n] - want) < 1e-5, "fastgrnn dense case %zu item %d: %f vs %f", c, n, out[n], want);
        }

        m.hidden_dim = TD_FASTGRNN_MAX_DIM + 1;
        CHECK(td_fastgrnn_check(&m) != 0, "oversized model accepted");
        m.hidden_dim = hid;
        m.timesteps = 0;
        CHECK(td_fastgrnn_check(&m) != 0, "a model without timesteps accepted");
        m.timesteps = T;
        m.w.rows = hid + 1;
        CHECK(td_fastgrnn_check(&m) != 0, "mismatched W accepted");
    }
}

static void test_score_candidates(void) {
    enum { N = 70, D = 24 };
    float W[8 * 5], Wc[8 * 5], U[8 * 8], Uc[8 * 8], bz[8], bh[8], wo[8], bo = 0.1f;
    float q[D], E[N * D], success[N], overlap[N], features[N * 5], scores[N];
    double created[N], now = 1.8e9;
    int64_t counts[N];
    fill(W, 40), fill(U, 64), fill(bz, 8), fill(bh, 8), fill(wo, 8), fill(q, D), fill(E, N * D);
    transpose(W, 8, 5, Wc);
    transpose(U, 8, 8, Uc);
    for (int i = 0; i < N; ++i) {
        created[i] = now - 40.0 * i + 100.0;
        counts[i] = (int64_t)i * 300;
        success[i] = (uniform() + 1.0f) / 2.0f;
        overlap[i] = (float)(i % 4) / 4.0f;
    }
    td_fastgrnn m = {5, 8, 1, 1, {TD_MATRIX_DENSE_F32, 8, 5, 0, Wc, NULL, NULL, NULL, NULL, NULL},
                     {TD_MATRIX_DENSE_F32, 8, 8, 0, Uc, NULL, NULL, NULL, NULL, NULL}, bz, bh, wo, &bo, 1.0f, -4.0f};
    td_feature_config cfg = {0.4f, 0.2f, 0.15f, 0.15f, 0.1f, 0.001};
    CHECK(td_score_candidates(&m, &cfg, q, D, E, NULL, N, created, counts, success, overlap, now, features, scores) == 0,
          "score_candidates refused a valid model");
    for (int i = 0; i < N; ++i) {
        double age = now - created[i] > 0 ? now - created[i] : 0;
        double freq = fmin(log1p((double)counts[i]) / log1p(10000.0), 1.0);
        float f[5] = {(float)(0.4 * ref_cosine(q, E + i * D, D)), (float)(0.2 * exp(-0.001 * age)),
                      (float)(0.15 * freq), 0.15f * success[i], 0.1f * overlap[i]};
        for (int k = 0; k < 5; ++k) CHECK(fabs(features[i * 5 + k] - f[k]) < 1e-6, "feature %d of %d", k, i);
        double want = ref_fastgrnn(W, U, bz, bh, wo, bo, 1.0f, -4.0f, f, 5, 8, 1);
        CHECK(fabs(scores[i] - want) < 1e-5, "score %d: %f vs %f", i, scores[i], want);
    }
    m.input_dim = 4;
    CHECK(td_score_candidates(&m, &cfg, q, D, E, NULL, N, created, counts, success, NULL, now, NULL, scores) != 0,
          "score_candidates accepted a model with input_dim 4");
}

/* Recency and frequency alone (unit weights) over their whole range, against libm in f64. */
static void test_recency_frequency(void) {
    enum { N = 301, D = 4 };
    const double decays[] = {0.0, 1e-6, 0.001, 1.0, 1e6};
    static float E[N * D], features[N * 5];
    float q[D] = {1, 1, 1, 1}, success[N];
    double created[N], now = 1.8e9;
    int64_t counts[N];
    for (int i = 0; i < N * D; ++i) E[i] = 1.0f;
    for (int i = 0; i < N; ++i) {
        double age = i < 3 ? (double)(i - 1) : pow(10.0, -3.0 + 12.0 * i / N); /* -1, 0, 1, then 1e-3 .. 1e9 */
        created[i] = now - age;
        counts[i] = i < 250 ? i - 1 : (int64_t)1 << (i - 250); /* -1 .. 248, then 1 .. 2^50 (past 10000) */
        success[i] = 0.0f;
    }
    for (size_t d = 0; d < sizeof decays / sizeof decays[0]; ++d) {
        td_feature_config cfg = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, decays[d]};
        td_candidate_features(&cfg, q, D, E, NULL, N, created, counts, success, NULL, now, features);
        for (int i = 0; i < N; ++i) {
            double age = fmax(now - created[i], 0.0);
            double rec = decays[d] > 0.0 ? exp(-decays[d] * age) : 1.0;
            double freq = fmin(log1p((double)(counts[i] > 0 ? counts[i] : 0)) / log1p(10000.0), 1.0);
            CHECK(fabs(features[i * 5 + 1] - rec) <= 1e-7, "recency %d, decay %g: %.9g vs %.9g", i, decays[d],
                  features[i * 5 + 1], rec);
            CHECK(fabs(features[i * 5 + 2] - freq) <= 1e-7, "frequency %d: %.9g vs %.9g", i, features[i * 5 + 2],
                  freq);
        }
    }
}

static void test_find_nonfinite(void) {
    enum { N = 1000 };
    static float f[N];
    static double d[N];
    const size_t spots[] = {0, 1, 255, 256, 257, 511, 999};
    CHECK(td_find_nonfinite_f32(f, N) == N && td_find_nonfinite_f64(d, N) == N, "all finite");
    CHECK(td_find_nonfinite_f32(f, 0) == 0, "empty");
    for (size_t k = 0; k < sizeof spots / sizeof spots[0]; ++k) {
        size_t at = spots[k];
        f[at] = k % 2 ? NAN : -INFINITY;
        d[at] = k % 2 ? INFINITY : NAN;
        CHECK(td_find_nonfinite_f32(f, N) == at && td_find_nonfinite_f64(d, N) == at, "non-finite at %zu", at);
        CHECK(td_find_nonfinite_f32(f, at) == at, "stops at n");
        f[at] = 3.4e38f;
        d[at] = 1.7e308;
    }
}

static const float *rank_scores_;
static int rank_ref_cmp_(const void *pa, const void *pb) {
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    if (rank_scores_[a] != rank_scores_[b]) return rank_scores_[a] > rank_scores_[b] ? -1 : 1;
    return a < b ? -1 : (a > b); /* stable: the lower index first */
}

static void test_rank_and_route(void) {
    enum { N = 1000 };
    static float scores[N];
    static int32_t order[N], want[N], scratch[N];
    const size_t sizes[] = {0, 1, 2, 5, 16, 17, 32, 33, 100, 999, 1000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; ++s) {
        size_t n = sizes[s];
        for (size_t i = 0; i < n; ++i) scores[i] = (float)(next_u64() % 7) / 7.0f; /* many ties */
        for (size_t i = 0; i < n; ++i) want[i] = (int32_t)i;
        rank_scores_ = scores;
        qsort(want, n, sizeof want[0], rank_ref_cmp_);
        td_rank_desc(scores, n, order, scratch);
        CHECK(n == 0 || memcmp(order, want, n * sizeof order[0]) == 0, "rank of %zu", n);
        if (n <= 32) {
            td_rank_desc(scores, n, order, NULL);
            CHECK(n == 0 || memcmp(order, want, n * sizeof order[0]) == 0, "rank of %zu without scratch", n);
        }
    }

    enum { C = 50, D = 16 };
    float W[40], Wc[40], U[64], Uc[64], bz[8] = {0}, bh[8] = {0}, wo[8], bo = 0.0f;
    float q[D], E[C * D], success[C], sc[C], unc[C], ref_scores[C];
    double created[C];
    int64_t counts[C];
    uint8_t light[C];
    int32_t ord[C], scr[C];
    fill(W, 40), fill(U, 64), fill(wo, 8), fill(q, D), fill(E, C * D);
    for (int i = 0; i < 40; ++i) W[i] *= 4.0f;
    transpose(W, 8, 5, Wc);
    transpose(U, 8, 8, Uc);
    for (int i = 0; i < C; ++i) created[i] = 1e9, counts[i] = i, success[i] = (float)i / C;
    td_fastgrnn m = {5, 8, 1, 1, {TD_MATRIX_DENSE_F32, 8, 5, 0, Wc, NULL, NULL, NULL, NULL, NULL},
                     {TD_MATRIX_DENSE_F32, 8, 8, 0, Uc, NULL, NULL, NULL, NULL, NULL}, bz, bh, wo, &bo, 1.0f, -4.0f};
    td_feature_config cfg = {0.4f, 0.2f, 0.15f, 0.15f, 0.1f, 0.001};
    float feats[C * 5], feats2[C * 5];
    td_score_candidates(&m, &cfg, q, D, E, NULL, C, created, counts, success, NULL, 1e9, feats, ref_scores);
    td_candidate_features(&cfg, q, D, E, NULL, C, created, counts, success, NULL, 1e9, feats2);
    CHECK(memcmp(feats, feats2, sizeof feats) == 0, "candidate_features differs from score_candidates");
    CHECK(td_route_candidates(&m, &cfg, q, D, E, NULL, C, created, counts, success, NULL, 1e9, 0.5f, 0.9f, sc, unc,
                              light, ord, scr) == 0, "route refused a valid model");
    for (int i = 0; i < C; ++i) {
        float u = fminf(fmaxf(1.0f - 2.0f * fabsf(sc[i] - 0.5f), 0.0f), 1.0f);
        CHECK(sc[i] == ref_scores[i] && unc[i] == u, "route score/uncertainty %d", i);
        CHECK(light[i] == (sc[i] >= 0.5f && u <= 0.9f), "route lightweight flag %d", i);
    }
    for (int i = 1; i < C; ++i) CHECK(sc[ord[i - 1]] >= sc[ord[i]], "route order %d", i);
    float sc2[C], feats3[C * 5];
    CHECK(td_route_candidates_ex(&m, &cfg, q, D, E, NULL, C, created, counts, success, NULL, 1e9, 0.5f, 0.9f, sc2,
                                 unc, light, ord, scr, feats3) == 0, "route_ex refused a valid model");
    CHECK(memcmp(feats, feats3, sizeof feats) == 0 && memcmp(sc, sc2, sizeof sc2) == 0,
          "route_ex features or scores differ from score_candidates");
    bo = NAN;
    CHECK(td_route_candidates(&m, &cfg, q, D, E, NULL, C, created, counts, success, NULL, 1e9, 0.5f, 0.9f, sc, unc,
                              light, ord, scr) == 1, "a NaN score must be reported");
}

static void test_isa_api(void) {
    CHECK(td_isa_usable() & TD_ISA_SCALAR, "scalar must always be usable");
    CHECK(td_isa_from_name("avx2") == TD_ISA_AVX2 && td_isa_from_name("bogus") == 0, "isa names");
    CHECK(td_isa_select(0) != 0 && td_isa_select(TD_ISA_AVX2 | TD_ISA_SCALAR) != 0, "select needs one usable ISA");
    CHECK(td_isa_active() == td_isa_best(), "the best ISA is active at start-up");
}

int main(void) {
    const unsigned all[] = {TD_ISA_SCALAR, TD_ISA_AVX2, TD_ISA_AVX512, TD_ISA_NEON};
    test_isa_api();
    test_find_nonfinite();
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) {
        if (!(td_isa_usable() & all[i])) continue;
        CHECK(td_isa_select(all[i]) == 0, "select %s", td_isa_name(all[i]));
        current_isa = td_isa_name(all[i]);
        test_cosine();
        test_cosine_batch();
        test_cosine_extreme_range();
        test_matvec();
        test_fastgrnn();
        test_fastgrnn_kinds();
        test_fastgrnn_wide();
        test_sigmoid_range();
        test_score_candidates();
        test_recency_frequency();
        test_rank_and_route();
        printf("%-7s checked\n", current_isa);
    }
    if (failures) fprintf(stderr, "%d check(s) failed\n", failures);
    return failures ? 1 : 0;
}
