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

/* Entries are folded into each head's running softmax a block at a time (online softmax: running max, sum, and an
 * accumulator rescaled when the max grows), so stored entries are decoded once into a block-sized buffer that stays
 * in cache, however many entries a query reads (HCA at 1M tokens: 8,192). */
#define BLOCK 64

/* q [t, heads, d] float32 or bf16; window_kv rows of window_bytes bytes with window_idx [t, w]; comp_kv rows of
 * comp_bytes bytes with comp_idx [t, c] (-1 = no entry). Rows are float32 [d], or stored entries (kv_codec) when
 * `stored`, decoded as they are read. sinks [heads]; out [t, heads, d] float32. d % 16 == 0. Returns 0, or -1 when
 * out of memory. */
int sparse_attention(const void *q, int q_bf16, int64_t t_count, int64_t heads, int64_t d, int stored, int64_t rope,
                     const uint8_t *window_kv, int64_t window_bytes, const int64_t *window_idx, int64_t w,
                     const uint8_t *comp_kv, int64_t comp_bytes, const int64_t *comp_idx, int64_t c,
                     const float *sinks, float softmax_scale, float *out) {
    const uint8_t **sources = malloc((size_t)(w + c) * sizeof(uint8_t *));
    float *scratch = malloc((size_t)(heads * d + BLOCK * d + BLOCK + 2 * heads) * sizeof(float));
    if (!sources || !scratch) { free(sources); free(scratch); return -1; }
    float *qh = scratch, *decoded = qh + heads * d, *lg = decoded + BLOCK * d, *peak = lg + BLOCK;
    float *denom = peak + heads;
    const float *rows[BLOCK];
    for (int64_t t = 0; t < t_count; t++) {
        int64_t valid = 0;
        for (int64_t j = 0; j < w + c; j++) {
            int64_t id = j < w ? window_idx[t * w + j] : comp_idx[t * c + j - w];
            if (id >= 0) sources[valid++] = j < w ? window_kv + id * window_bytes : comp_kv + id * comp_bytes;
        }
        load_row(q, q_bf16, t, heads * d, qh);
        float *o = out + t * heads * d;
        memset(o, 0, (size_t)(heads * d) * sizeof(float));
        for (int64_t h = 0; h < heads; h++) peak[h] = sinks[h], denom[h] = 1.0f; /* the sink: exp(sink - peak) */
        for (int64_t first = 0; first < valid; first += BLOCK) {
            int64_t n = valid - first < BLOCK ? valid - first : BLOCK;
            for (int64_t l = 0; l < n; l++) {
                if (stored) decode_kv_row(sources[first + l], d, rope, decoded + l * d);
                rows[l] = stored ? decoded + l * d : (const float *)sources[first + l];
            }
            for (int64_t h = 0; h < heads; h++) {
                float block_peak = peak[h], *acc = o + h * d;
                for (int64_t l = 0; l < n; l++) {
                    lg[l] = dot(qh + h * d, rows[l], d) * softmax_scale;
                    block_peak = fmaxf(block_peak, lg[l]);
                }
                if (block_peak > peak[h]) { /* rescale what was summed under the old max */
                    float alpha = expf(peak[h] - block_peak);
                    __m256 a = _mm256_set1_ps(alpha);
                    for (int64_t i = 0; i < d; i += 8)
                        _mm256_storeu_ps(acc + i, _mm256_mul_ps(a, _mm256_loadu_ps(acc + i)));
                    denom[h] *= alpha;
                    peak[h] = block_peak;
                }
                for (int64_t l = 0; l < n; l++) {
                    float p = expf(lg[l] - peak[h]);
                    denom[h] += p;
                    __m256 pv = _mm256_set1_ps(p);
                    for (int64_t i = 0; i < d; i += 8)
                        _mm256_storeu_ps(acc + i,
                                         _mm256_fmadd_ps(pv, _mm256_loadu_ps(rows[l] + i), _mm256_loadu_ps(acc + i)));
                }
            }
        }
        for (int64_t h = 0; h < heads; h++) {
            __m256 inv = _mm256_set1_ps(1.0f / denom[h]);
            for (int64_t i = 0; i < d; i += 8)
                _mm256_storeu_ps(o + h * d + i, _mm256_mul_ps(inv, _mm256_loadu_ps(o + h * d + i)));
        }
    }
    free(sources);
    free(scratch);
    return 0;
}
