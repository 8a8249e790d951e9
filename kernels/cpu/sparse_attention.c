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

/* Row `id` of a KV source: float rows as they are; stored entries decoded into `scratch` (d floats). */
static inline const float *kv_row(const uint8_t *kv, int64_t row_bytes, int stored, int64_t id, int64_t d,
                                  int64_t rope, float *scratch) {
    if (!stored) return (const float *)(kv + id * row_bytes);
    decode_kv_row(kv + id * row_bytes, d, rope, scratch);
    return scratch;
}

/* q [t, heads, d] float32 or bf16; window_kv rows of window_bytes bytes with window_idx [t, w]; comp_kv rows of
 * comp_bytes bytes with comp_idx [t, c] (-1 = no entry). Rows are float32 [d], or stored entries (kv_codec) when
 * `stored`, decoded as they are read. sinks [heads]; out [t, heads, d] float32. d % 16 == 0. Returns 0, or -1 when
 * out of memory. */
int sparse_attention(const void *q, int q_bf16, int64_t t_count, int64_t heads, int64_t d, int stored, int64_t rope,
                     const uint8_t *window_kv, int64_t window_bytes, const int64_t *window_idx, int64_t w,
                     const uint8_t *comp_kv, int64_t comp_bytes, const int64_t *comp_idx, int64_t c,
                     const float *sinks, float softmax_scale, float *out) {
    int64_t entries = w + c;
    const float **rows = malloc((size_t)entries * sizeof(float *));
    float *logits = malloc((size_t)(heads * entries + heads * d) * sizeof(float));
    float *decoded = stored ? malloc((size_t)(entries * d) * sizeof(float)) : NULL;
    if (!rows || !logits || (stored && !decoded)) { free(rows); free(logits); free(decoded); return -1; }
    float *qh = logits + heads * entries;
    for (int64_t t = 0; t < t_count; t++) {
        int64_t valid = 0;
        for (int64_t j = 0; j < w + c; j++) {
            int64_t id = j < w ? window_idx[t * w + j] : comp_idx[t * c + j - w];
            if (id < 0) continue;
            rows[valid] = j < w ? kv_row(window_kv, window_bytes, stored, id, d, rope, decoded + valid * d)
                                : kv_row(comp_kv, comp_bytes, stored, id, d, rope, decoded + valid * d);
            valid++;
        }
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
    free(decoded);
    return 0;
}
