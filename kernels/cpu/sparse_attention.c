/* Twin of kernels/ref/sparse_attention.py for few queries (decode): one softmax per query head over its gathered
 * window and compressed entries plus a sink logit in the denominator. */
#include <stdlib.h>

#include "formats.h"

static inline float dot(const float *a, const float *b, int64_t d) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    for (int64_t i = 0; i < d; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    return hsum8(_mm256_add_ps(acc0, acc1));
}

/* q [t, heads, d] float32 or bf16; window_kv [*, d] with window_idx [t, w]; comp_kv [*, d] with comp_idx [t, c]
 * (-1 = no entry); sinks [heads]; out [t, heads, d] float32. d % 16 == 0. Returns 0, or -1 when out of memory. */
int sparse_attention(const void *q, int q_bf16, int64_t t_count, int64_t heads, int64_t d, const float *window_kv,
                     const int64_t *window_idx, int64_t w, const float *comp_kv, const int64_t *comp_idx, int64_t c,
                     const float *sinks, float softmax_scale, float *out) {
    int64_t entries = w + c;
    const float **rows = malloc((size_t)entries * sizeof(float *));
    float *logits = malloc((size_t)(heads * entries + heads * d) * sizeof(float));
    if (!rows || !logits) { free(rows); free(logits); return -1; }
    float *qh = logits + heads * entries;
    for (int64_t t = 0; t < t_count; t++) {
        int64_t valid = 0;
        for (int64_t j = 0; j < w; j++)
            if (window_idx[t * w + j] >= 0) rows[valid++] = window_kv + window_idx[t * w + j] * d;
        for (int64_t j = 0; j < c; j++)
            if (comp_idx[t * c + j] >= 0) rows[valid++] = comp_kv + comp_idx[t * c + j] * d;
        load_row(q, q_bf16, t, heads * d, qh);
        float *o = out + t * heads * d;
        for (int64_t h = 0; h < heads; h++) {
            float *lg = logits + h * entries, peak = sinks[h];
            for (int64_t l = 0; l < valid; l++) {
                lg[l] = dot(qh + h * d, rows[l], d) * softmax_scale;
                peak = fmaxf(peak, lg[l]);
            }
            float denom = 0.0f;
            for (int64_t l = 0; l < valid; l++) denom += (lg[l] = expf(lg[l] - peak));
            denom += expf(sinks[h] - peak);
            memset(o + h * d, 0, (size_t)d * sizeof(float));
            for (int64_t l = 0; l < valid; l++) {
                __m256 p = _mm256_set1_ps(lg[l] / denom);
                for (int64_t i = 0; i < d; i += 8)
                    _mm256_storeu_ps(o + h * d + i, _mm256_fmadd_ps(p, _mm256_loadu_ps(rows[l] + i),
                                                                    _mm256_loadu_ps(o + h * d + i)));
            }
        }
    }
    free(rows);
    free(logits);
    return 0;
}
