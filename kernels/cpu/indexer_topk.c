/* Twin of kernels/ref/indexer_topk.py for stored FP4 index keys and few queries (decode): one pass over the keys
 * decodes each key in registers, scores it against every query's heads and keeps a running top-k per query.
 *
 * In the official numerics the queries are FP4 too, so both sides are small integers times powers of two: the dot
 * products run exactly in int8 x int8 -> int32 (four times the lanes of float FMAs) and only per-block sums meet a
 * float scale. Queries that are not such integers take the float path. */
#include <stdlib.h>

#include "formats.h"

/* Min-heap on (score, -id): the root is the worst kept entry. Ties keep the lower id, like the torch twin. */
static inline int worse(float sa, int64_t ia, float sb, int64_t ib) { return sa < sb || (sa == sb && ia > ib); }

static void sift_down(float *s, int64_t *id, int64_t size, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < size && worse(s[l], id[l], s[m], id[m])) m = l;
        if (r < size && worse(s[r], id[r], s[m], id[m])) m = r;
        if (m == i) return;
        float ts = s[i]; s[i] = s[m]; s[m] = ts;
        int64_t ti = id[i]; id[i] = id[m]; id[m] = ti;
        i = m;
    }
}

static void sift_up(float *s, int64_t *id, int64_t i) {
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (!worse(s[i], id[i], s[p], id[p])) return;
        float ts = s[i]; s[i] = s[p]; s[p] = ts;
        int64_t ti = id[i]; id[i] = id[p]; id[p] = ti;
        i = p;
    }
}

/* Offer entry s with `score` to a heap of `*size` <= k entries. Entries arrive by increasing id, so on a tie the
 * kept entry (lower id) wins. */
static inline void offer(float *hs, int64_t *hi, int64_t *size, int64_t k, float score, int64_t s) {
    if (*size < k) {
        hs[*size] = score;
        hi[*size] = s;
        sift_up(hs, hi, (*size)++);
    } else if (score > hs[0]) {
        hs[0] = score;
        hi[0] = s;
        sift_down(hs, hi, k, 0);
    }
}

/* Heap to best-first order, padded with -inf / -1 up to k. */
static void finish(float *hs, int64_t *hi, int64_t size, int64_t k) {
    for (int64_t n = size; n > 1; n--) {
        float ts = hs[0]; hs[0] = hs[n - 1]; hs[n - 1] = ts;
        int64_t ti = hi[0]; hi[0] = hi[n - 1]; hi[n - 1] = ti;
        sift_down(hs, hi, n - 1, 0);
    }
    for (int64_t j = size; j < k; j++) {
        hs[j] = -INFINITY;
        hi[j] = -1;
    }
}

/* 12 + twice the e2m1 value of each 4-bit code: integers in [0, 24], so keys can be maddubs's unsigned operand. */
#define KEY_OFFSET 12
#define E2M1_X2_OFFSET 12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0

/* One query vector (dim values) as int8 multiples of a single step: per pair of 32-blocks, their even dims then
 * their odd dims (32 bytes each, the key layout), plus per pair the int32 lanes of KEY_OFFSET * q summed the way
 * the key products are, to take the offset back out. The step is half the smallest block's FP4 scale, which makes
 * every FP4 value of the vector an integer; returns 0 (no step) when some value is not an integer in [-128, 127]. */
static int quantize_query(const float *q, int64_t dim, int8_t *q8, __m256i *offsets, float *step) {
    float smallest = INFINITY;
    for (int64_t b = 0; b < dim; b += FP4_BLOCK) {
        smallest = fminf(smallest, block_scale(q + b, FP4_BLOCK, FP4_AMAX_FLOOR, FP4_MAX));
    }
    *step = smallest * 0.5f;
    for (int64_t i = 0; i < dim; i++) {
        float v = q[i] / *step;
        if (v != rintf(v) || v < -128.0f || v > 127.0f) return 0;
        int64_t pair = i / 64, block = (i / 32) % 2;
        q8[64 * pair + 32 * (i % 2) + 16 * block + (i % 32) / 2] = (int8_t)v;
    }
    const __m256i offset = _mm256_set1_epi8(KEY_OFFSET), ones = _mm256_set1_epi16(1);
    for (int64_t p = 0; p < dim / 64; p++) {
        __m256i even = _mm256_maddubs_epi16(offset, _mm256_loadu_si256((const __m256i *)(q8 + 64 * p)));
        __m256i odd = _mm256_maddubs_epi16(offset, _mm256_loadu_si256((const __m256i *)(q8 + 64 * p + 32)));
        offsets[p] = _mm256_madd_epi16(_mm256_add_epi16(even, odd), ones);
    }
    return 1;
}

/* Logits of 8 heads against one key held as offset int8 (keys_u) with its block scales per pair (k_scales, one
 * 32-block per 128-bit lane); steps holds the 8 heads' query steps. Products are exact integers (maddubs of the
 * unsigned key and the signed query, pairs summed in int16, then int32); only per-block sums meet a float scale. */
static inline __m256 logits_int8(const int8_t *q8, const __m256i *offsets, __m256 steps, int64_t pairs,
                                 const __m256i *k_even, const __m256i *k_odd, const __m256 *k_scales, int64_t dim) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[8];
    for (int h = 0; h < 8; h++) acc[h] = _mm256_setzero_ps();
    for (int64_t p = 0; p < pairs; p++) {
        for (int h = 0; h < 8; h++) {
            const int8_t *qp = q8 + h * dim + 64 * p;
            __m256i even = _mm256_maddubs_epi16(k_even[p], _mm256_loadu_si256((const __m256i *)qp));
            __m256i odd = _mm256_maddubs_epi16(k_odd[p], _mm256_loadu_si256((const __m256i *)(qp + 32)));
            __m256i sums = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_add_epi16(even, odd), ones),
                                            offsets[h * pairs + p]);
            acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), k_scales[p], acc[h]);
        }
    }
    return _mm256_mul_ps(hsum8x8(acc), steps);
}

/* Logits of 8 heads against one float-decoded key (even dims then odd dims; q split the same way). */
static inline __m256 logits_float(const float *q_split, const float *key, int64_t dim) {
    __m256 acc[8];
    for (int h = 0; h < 8; h++) acc[h] = _mm256_setzero_ps();
    for (int64_t c = 0; c < dim; c += 8) {
        __m256 kc = _mm256_loadu_ps(key + c);
        for (int h = 0; h < 8; h++) acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q_split + h * dim + c), kc, acc[h]);
    }
    return hsum8x8(acc);
}

/* q [t, heads, dim] float32; head_weights [t, heads]; keys: rows of `key_stride` bytes, dim/2 packed FP4 then dim/32
 * ue8m0 scales; only keys [first, last) are scanned, key s counting for query i when s < num_visible[i]. Writes per
 * query its best k entries, best first, into out_scores/out_ids [t, k] (-inf / -1 where fewer). Scores are rounded
 * to bf16 first when bf16_scores. heads % 8 == 0, dim % 64 == 0. Returns 0, or -1 when out of memory. */
int indexer_topk_fp4(const float *q, const float *head_weights, int64_t t_count, int64_t heads, int64_t dim,
                     const uint8_t *keys, int64_t key_stride, int64_t first, int64_t last, const int64_t *num_visible,
                     int64_t k, int bf16_scores, float *out_scores, int64_t *out_ids) {
    int64_t half = dim / 2, pairs = dim / 64, vectors = t_count * heads;
    float *q_split = malloc((size_t)(vectors * dim + dim) * sizeof(float));
    int8_t *q8 = malloc((size_t)(vectors * dim));
    float *steps = malloc((size_t)vectors * sizeof(float));
    __m256i *offsets = aligned_alloc(32, (size_t)(vectors * pairs + 3 * pairs) * sizeof(__m256i));
    int64_t *sizes = calloc((size_t)t_count, sizeof(int64_t));
    if (!q_split || !q8 || !steps || !offsets || !sizes) {
        free(q_split); free(q8); free(steps); free(offsets); free(sizes);
        return -1;
    }
    float *key = q_split + vectors * dim; /* float path: decoded key, even dims then odd dims */
    __m256i *k_even = offsets + vectors * pairs, *k_odd = k_even + pairs;
    __m256 *k_scales = (__m256 *)(k_odd + pairs);
    int exact = 1;
    for (int64_t i = 0; i < vectors && exact; i++)
        exact = quantize_query(q + i * dim, dim, q8 + i * dim, offsets + i * pairs, steps + i);
    for (int64_t i = 0; i < vectors && !exact; i++)
        deinterleave(q + i * dim, dim, q_split + i * dim, q_split + i * dim + half);
    const __m256i lut = _mm256_setr_epi8(E2M1_X2_OFFSET, E2M1_X2_OFFSET), low_nibbles = _mm256_set1_epi8(0x0F);
    for (int64_t s = first; s < last; s++) {
        const uint8_t *row = keys + s * key_stride;
        if (exact) {
            for (int64_t p = 0; p < pairs; p++) {
                __m256i bytes = _mm256_loadu_si256((const __m256i *)(row + 32 * p)); /* lane = one 32-block */
                k_even[p] = _mm256_shuffle_epi8(lut, _mm256_and_si256(bytes, low_nibbles));
                k_odd[p] = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low_nibbles));
                float s0 = e8m0_to_f32(row[half + 2 * p]) * 0.5f, s1 = e8m0_to_f32(row[half + 2 * p + 1]) * 0.5f;
                k_scales[p] = _mm256_setr_ps(s0, s0, s0, s0, s1, s1, s1, s1);
            }
        } else {
            for (int64_t b = 0; b < dim / FP4_BLOCK; b++) {
                __m256 scale = _mm256_set1_ps(e8m0_to_f32(row[half + b]) * FP4_LANE_SCALE), even, odd;
                for (int64_t c = 0; c < 16; c += 8) {
                    fp4x8(row + 16 * b + c, &even, &odd);
                    _mm256_storeu_ps(key + 16 * b + c, _mm256_mul_ps(even, scale));
                    _mm256_storeu_ps(key + half + 16 * b + c, _mm256_mul_ps(odd, scale));
                }
            }
        }
        for (int64_t t = 0; t < t_count; t++) {
            if (s >= num_visible[t]) continue;
            float score = 0.0f;
            for (int64_t h0 = 0; h0 < heads; h0 += 8) {
                int64_t v = t * heads + h0;
                __m256 logits = exact
                    ? logits_int8(q8 + v * dim, offsets + v * pairs, _mm256_loadu_ps(steps + v), pairs, k_even, k_odd,
                                  k_scales, dim)
                    : logits_float(q_split + v * dim, key, dim);
                logits = _mm256_max_ps(logits, _mm256_setzero_ps());
                score += hsum8(_mm256_mul_ps(logits, _mm256_loadu_ps(head_weights + v)));
            }
            if (bf16_scores) score = bf16_to_f32(f32_to_bf16(score));
            score += 0.0f; /* -0.0 and 0.0 rank as one score */
            offer(out_scores + t * k, out_ids + t * k, sizes + t, k, score, s);
        }
    }
    for (int64_t t = 0; t < t_count; t++) finish(out_scores + t * k, out_ids + t * k, sizes[t], k);
    free(q_split);
    free(q8);
    free(steps);
    free(offsets);
    free(sizes);
    return 0;
}
