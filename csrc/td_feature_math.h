/* Recency and frequency features without libm calls, in loops the compiler vectorises.
 *
 * Included by each SIMD file, so each gets its own ISA's code from one source. The scalar reference
 * (td_scalar.c) calls exp() and log1p() instead; both agree to well under a float32 ulp, because the
 * polynomials below are accurate to about 1e-15 relative and the results are rounded to float32. */
#ifndef TD_FEATURE_MATH_H
#define TD_FEATURE_MATH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline double td_bits_to_f64_(uint64_t u) {
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static inline uint64_t td_f64_to_bits_(double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

/* exp(x) for x <= 0. Below -120 (where float32 is 0 anyway) x is clamped, so 2^k stays a normal double. */
static inline double td_exp_nonpos_(double x) {
    const double log2e = 1.4426950408889634, ln2_hi = 6.93147180369123816490e-01,
                 ln2_lo = 1.90821492927058770002e-10, shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    double t, k, r, p;
    x = x < -120.0 ? -120.0 : x;
    t = x * log2e + shifter; /* round to nearest integer, kept in the low mantissa bits */
    k = t - shifter;
    r = (x - k * ln2_hi) - k * ln2_lo; /* |r| <= ln2 / 2 */
    /* Taylor to r^12: truncation below 2e-16 relative on |r| <= 0.347 */
    p = 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    /* k in [-174, 0]: 2^k by writing the biased exponent */
    return p * td_bits_to_f64_((td_f64_to_bits_(t) - td_f64_to_bits_(shifter) + 1023u) << 52);
}

/* ln(y) for y in [1, 2^31]: y = 2^e m with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s), s = (m-1)/(m+1). */
static inline double td_log_ge1_(double y) {
    const double ln2 = 0.69314718055994530942, sqrt2 = 1.41421356237309504880;
    uint64_t bits = td_f64_to_bits_(y);
    double e = (double)(int)((bits >> 52) - 1023u);
    double m = td_bits_to_f64_((bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
    double big = m > sqrt2 ? 1.0 : 0.0;
    double s, s2, p;
    m = big > 0.0 ? 0.5 * m : m;
    e += big;
    s = (m - 1.0) / (m + 1.0); /* |s| <= 0.1716 */
    s2 = s * s;
    /* atanh series to s^19: truncation below 1e-16 relative */
    p = 1.0 / 19.0;
    p = p * s2 + 1.0 / 17.0;
    p = p * s2 + 1.0 / 15.0;
    p = p * s2 + 1.0 / 13.0;
    p = p * s2 + 1.0 / 11.0;
    p = p * s2 + 1.0 / 9.0;
    p = p * s2 + 1.0 / 7.0;
    p = p * s2 + 1.0 / 5.0;
    p = p * s2 + 1.0 / 3.0;
    p = p * s2 + 1.0;
    return e * ln2 + 2.0 * s * p;
}

/* recency[i] = exp(-decay * max(now - created_at[i], 0)) (1 when decay is 0, even for an infinite age),
 * frequency[i] = min(ln(1 + access_count[i]) / ln(1 + 10000), 1), a negative count counting as 0.
 * Inputs are staged in blocks padded to a multiple of 8, so the vector loops never run a scalar tail. */
#define TD_RF_BLOCK 64

static inline void td_recency_frequency_(double decay, double now, const double *created_at,
                                         const int64_t *access_count, size_t n, float *recency,
                                         float *frequency) {
    const double inv_log_cap = 1.0 / 9.21044036697651; /* 1 / ln(10001) */
    double age[TD_RF_BLOCK], count[TD_RF_BLOCK];
    for (size_t start = 0; start < n; start += TD_RF_BLOCK) {
        size_t m = n - start < TD_RF_BLOCK ? n - start : TD_RF_BLOCK, padded = (m + 7) & ~(size_t)7;
        float *rec = recency + start, *freq = frequency + start;
        for (size_t i = 0; i < padded; ++i) {
            size_t k = i < m ? start + i : start; /* padding repeats the first entry */
            int64_t c = access_count[k];
            age[i] = now - created_at[k];
            count[i] = (double)(c < 0 ? 0 : (c > 10000 ? 10000 : c)); /* ln(1 + c) >= ln(10001) from there */
        }
        for (size_t i = 0; i < padded; ++i) {
            double x = -decay * (age[i] > 0.0 ? age[i] : 0.0);
            age[i] = td_exp_nonpos_(decay > 0.0 ? x : 0.0);
        }
        for (size_t i = 0; i < padded; ++i) {
            double f = td_log_ge1_(count[i] + 1.0) * inv_log_cap;
            count[i] = f < 1.0 ? f : 1.0;
        }
        for (size_t i = 0; i < m; ++i) {
            rec[i] = (float)age[i];
            freq[i] = (float)count[i];
        }
    }
}

#endif
