/* Twins of hc_pre, hc_post and hc_head in kernels/ref/mhc.py: mHC's collapse and expansion of the residual streams,
 * one token at a time (a few dozen torch ops each otherwise). */
#include <stdlib.h>

#include "formats.h"

void sinkhorn(const float *logits, int64_t count, int64_t n, int64_t iters, float eps, float *comb);

static inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* The mixing logits of one token's streams `flat` [n * d]: fn [rows, n * d] @ flat / rms(flat). */
static void mixes_of(const float *flat, int64_t flat_dim, const float *fn, int64_t rows, float norm_eps,
                     float *mixes) {
    float squares = 0.0f;
    for (int64_t i = 0; i < flat_dim; i++) squares += flat[i] * flat[i];
    float inv_rms = 1.0f / sqrtf(squares / (float)flat_dim + norm_eps);
    for (int64_t r = 0; r < rows; r++) {
        const float *w = fn + r * flat_dim;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t i = 0; i < flat_dim; i += 8)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(flat + i), _mm256_loadu_ps(w + i), acc);
        mixes[r] = hsum8(acc) * inv_rms;
    }
}

/* out [d] = sum_i (sigmoid(mixes[i] * scale + base[i]) + hc_eps) * stream_i. */
static void collapse(const float *flat, int64_t n, int64_t d, const float *mixes, float scale, const float *base,
                     float hc_eps, float *out) {
    memset(out, 0, (size_t)d * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        float pre = sigmoid(mixes[i] * scale + base[i]) + hc_eps;
        for (int64_t j = 0; j < d; j++) out[j] += pre * flat[i * d + j];
    }
}

/* streams [t, n, d] float32 or bf16; fn [(2 + n) * n, n * d] float32; base [(2 + n) * n]; scale [3].
 * Writes collapsed [t, d] (streams' dtype), post [t, n] and comb [t, n, n] (float32). Returns 0, or -1 when out of
 * memory. */
int hc_pre(const void *streams, int is_bf16, int64_t t_count, int64_t n, int64_t d, const float *fn,
           const float *base, const float *scale, float norm_eps, float hc_eps, int64_t iters, void *collapsed,
           float *post, float *comb) {
    int64_t flat_dim = n * d, rows = (2 + n) * n;
    float *flat = malloc((size_t)(flat_dim + rows + d) * sizeof(float));
    if (!flat) return -1;
    float *mixes = flat + flat_dim, *out = mixes + rows;
    for (int64_t t = 0; t < t_count; t++) {
        load_row(streams, is_bf16, t, flat_dim, flat);
        mixes_of(flat, flat_dim, fn, rows, norm_eps, mixes);
        float *post_t = post + t * n, *comb_t = comb + t * n * n;
        for (int64_t i = 0; i < n; i++) post_t[i] = 2.0f * sigmoid(mixes[n + i] * scale[1] + base[n + i]);
        for (int64_t i = 0; i < n * n; i++) comb_t[i] = mixes[2 * n + i] * scale[2] + base[2 * n + i];
        sinkhorn(comb_t, 1, n, iters, hc_eps, comb_t);
        collapse(flat, n, d, mixes, scale[0], base, hc_eps, out);
        store_row(collapsed, is_bf16, t, d, out);
    }
    free(flat);
    return 0;
}

/* The final collapse before the head: streams [t, n, d]; fn [n, n * d] float32; base [n]; scale [1] -> collapsed
 * [t, d] in streams' dtype. Returns 0, or -1 when out of memory. */
int hc_head(const void *streams, int is_bf16, int64_t t_count, int64_t n, int64_t d, const float *fn,
            const float *base, const float *scale, float norm_eps, float hc_eps, void *collapsed) {
    int64_t flat_dim = n * d;
    float *flat = malloc((size_t)(flat_dim + n + d) * sizeof(float));
    if (!flat) return -1;
    float *mixes = flat + flat_dim, *out = mixes + n;
    for (int64_t t = 0; t < t_count; t++) {
        load_row(streams, is_bf16, t, flat_dim, flat);
        mixes_of(flat, flat_dim, fn, n, norm_eps, mixes);
        collapse(flat, n, d, mixes, scale[0], base, hc_eps, out);
        store_row(collapsed, is_bf16, t, d, out);
    }
    free(flat);
    return 0;
}

/* output [t, d] float32 or bf16 (output_bf16), streams [t, n, d] (streams_bf16), post [t, n], comb [t, n, n] ->
 * out [t, n, d] in streams' dtype: out_k = post_k * output + sum_j comb[j, k] * stream_j. Returns 0, or -1 when out of
 * memory. */
int hc_post(const void *output, int output_bf16, const void *streams, int streams_bf16, int64_t t_count, int64_t n,
            int64_t d, const float *post, const float *comb, void *out) {
    float *buf = malloc((size_t)(d + 2 * n * d) * sizeof(float));
    if (!buf) return -1;
    float *y = buf, *s = y + d, *mixed = s + n * d;
    for (int64_t t = 0; t < t_count; t++) {
        load_row(output, output_bf16, t, d, y);
        load_row(streams, streams_bf16, t, n * d, s);
        const float *comb_t = comb + t * n * n;
        for (int64_t k = 0; k < n; k++) {
            float *m = mixed + k * d;
            memset(m, 0, (size_t)d * sizeof(float));
            for (int64_t j = 0; j < n; j++)
                for (int64_t i = 0; i < d; i++) m[i] += comb_t[j * n + k] * s[j * d + i];
            for (int64_t i = 0; i < d; i++) m[i] = post[t * n + k] * y[i] + m[i];
        }
        store_row(out, streams_bf16, t, n * d, mixed);
    }
    free(buf);
    return 0;
}
