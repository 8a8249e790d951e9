/* Twin of kernels/ref/indexer_topk.py for stored FP4 index keys and few queries (decode): one pass over the keys
 * decodes a block of keys, scores them against every query's heads and keeps a running top-k per query.
 *
 * In the official numerics the queries are FP4 too, so both sides are small integers times powers of two: the dot
 * products run exactly in int8 x int8 -> int32 (four times the lanes of float FMAs) and only per-block sums meet a
 * float scale. Eight heads share a vector, one per lane, so a key's logits need no horizontal sums. Queries that are
 * not such integers take the float path. (An AVX-512 VNNI variant of the int8 products measured no faster, on Intel
 * and AMD alike: the scan is bound by loads and issue, not by multiplies.) */
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

/* One query vector (dim values) as int8 multiples of a single step, in the decoded key's byte order (per pair of
 * 32-blocks, their even dims then their odd dims, 32 bytes each). The step is half the smallest block's FP4 scale,
 * which makes every FP4 value of the vector an integer; returns 0 (no step) when some value is not an integer in
 * [-128, 127]. */
static int quantize_query(const float *q, int64_t dim, int8_t *q8, float *step) {
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
    return 1;
}

/* Byte offset, in the decoded key, of block b's even dims (its odd dims follow 32 bytes later). */
static inline int64_t block_start(int64_t b) { return 64 * (b / 2) + 16 * (b % 2); }

/* Eight heads' int8 queries (q8, dim bytes each) with the heads in the lanes: per 4-byte chunk of the key order, the
 * heads' 4 bytes side by side (qt [dim/4]), and per 32-block KEY_OFFSET times each head's sum over it (off
 * [dim/32] int32 lanes), to take the keys' offset back out. */
static void heads_in_lanes(const int8_t *q8, int64_t dim, __m256i *qt, __m256i *off) {
    for (int64_t c = 0; c < dim / 4; c++) {
        int32_t lanes[8];
        for (int h = 0; h < 8; h++) memcpy(lanes + h, q8 + h * dim + 4 * c, 4);
        qt[c] = _mm256_loadu_si256((const __m256i *)lanes);
    }
    for (int64_t b = 0; b < dim / FP4_BLOCK; b++) {
        int32_t sums[8] = {0};
        for (int h = 0; h < 8; h++)
            for (int64_t i = 0; i < 16; i++)
                sums[h] += q8[h * dim + block_start(b) + i] + q8[h * dim + block_start(b) + 32 + i];
        for (int h = 0; h < 8; h++) sums[h] *= KEY_OFFSET;
        off[b] = _mm256_loadu_si256((const __m256i *)sums);
    }
}

static inline __m256i broadcast4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* 16 key bytes (4 chunks) against the heads' queries: int16 lanes, each two heads' products summed; at most
 * 4 x 2 x 24 x 128 < 2^15, so nothing saturates. */
static inline __m256i dot16(const uint8_t *key, const __m256i *qt) {
    __m256i s = _mm256_maddubs_epi16(broadcast4(key), qt[0]);
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(broadcast4(key + 4), qt[1]));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(broadcast4(key + 8), qt[2]));
    return _mm256_add_epi16(s, _mm256_maddubs_epi16(broadcast4(key + 12), qt[3]));
}

/* One block's 32 key bytes (8 chunks: 16 even-dim bytes at `key`, 16 odd-dim bytes 32 bytes later) against the
 * heads' queries, summed into int32 lanes. */
static inline __m256i block_dot(const uint8_t *key, const __m256i *qt) {
    const __m256i ones = _mm256_set1_epi16(1);
    return _mm256_add_epi32(_mm256_madd_epi16(dot16(key, qt), ones), _mm256_madd_epi16(dot16(key + 32, qt + 8), ones));
}

/* Logits of 8 heads (one per lane) against one key decoded to offset int8 bytes (key, dim bytes in the key order)
 * with its block scales (k_scales); steps holds the heads' query steps. Each 4-byte chunk of the key is broadcast
 * and multiplied with all 8 heads' chunk at once, so no horizontal sums are needed; products are exact integers and
 * only per-block sums meet a float scale. */
static inline __m256 logits_int8(const __m256i *qt, const __m256i *off, __m256 steps, const uint8_t *key,
                                 const float *k_scales, int64_t dim) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < dim / FP4_BLOCK; b++) {
        int64_t at = block_start(b);
        __m256i sums = _mm256_sub_epi32(block_dot(key + at, qt + at / 4), off[b]);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(k_scales[b]), acc);
    }
    return _mm256_mul_ps(acc, steps);
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

/* A key (a row of packed FP4 then ue8m0 scales) for the int8 path: its dims as offset int8 in the key order (per
 * pair of 32-blocks, even dims then odd dims) and its block scales, halved with the doubled values. */
static inline void decode_key_int8(const uint8_t *row, int64_t dim, uint8_t *key, float *k_scales) {
    const __m256i lut = _mm256_setr_epi8(E2M1_X2_OFFSET, E2M1_X2_OFFSET), low_nibbles = _mm256_set1_epi8(0x0F);
    for (int64_t p = 0; p < dim / 64; p++) {
        __m256i bytes = _mm256_loadu_si256((const __m256i *)(row + 32 * p)); /* lane = one 32-block */
        _mm256_storeu_si256((__m256i *)(key + 64 * p), _mm256_shuffle_epi8(lut, _mm256_and_si256(bytes, low_nibbles)));
        _mm256_storeu_si256((__m256i *)(key + 64 * p + 32),
                            _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low_nibbles)));
    }
    for (int64_t b = 0; b < dim / FP4_BLOCK; b++) k_scales[b] = e8m0_to_f32(row[dim / 2 + b]) * 0.5f;
}

/* Key s decoded to float for the float path: even dims then odd dims. */
static inline void decode_key_float(const uint8_t *row, int64_t dim, float *key) {
    int64_t half = dim / 2;
    for (int64_t b = 0; b < dim / FP4_BLOCK; b++) {
        __m256 scale = _mm256_set1_ps(e8m0_to_f32(row[half + b]) * FP4_LANE_SCALE), even, odd;
        for (int64_t c = 0; c < 16; c += 8) {
            fp4x8(row + 16 * b + c, &even, &odd);
            _mm256_storeu_ps(key + 16 * b + c, _mm256_mul_ps(even, scale));
            _mm256_storeu_ps(key + half + 16 * b + c, _mm256_mul_ps(odd, scale));
        }
    }
}

/* Round 8 scores to bf16 (to nearest even, as f32_to_bf16) and make -0.0 rank as 0.0. */
static inline __m256 bf16_round8(__m256 v) {
    __m256i u = _mm256_castps_si256(v);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    u = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), odd));
    return _mm256_castsi256_ps(_mm256_and_si256(u, _mm256_set1_epi32((int)0xFFFF0000u)));
}

/* Keys are scored KEY_BLOCK at a time: one transposing reduction turns the block's per-head sums into its scores,
 * and one vector compare against the worst kept score skips the heap for keys that cannot enter it (nearly all of
 * them once the heap is full). */
#define KEY_BLOCK 8

/* q [t, heads, dim] float32; head_weights [t, heads]; keys: rows of `key_stride` bytes, dim/2 packed FP4 then dim/32
 * ue8m0 scales; key s is row rows[s] (keys in a shared page pool), or row s when rows is NULL; only keys [first,
 * last) are scanned, key s counting for query i when s < num_visible[i]. Writes per query its best k entries, best
 * first, into out_scores/out_ids [t, k] (-inf / -1 where fewer). Scores are rounded to bf16 first when bf16_scores.
 * heads % 8 == 0, dim % 64 == 0. Returns 0, or -1 when out of memory. */
int indexer_topk_fp4(const float *q, const float *head_weights, int64_t t_count, int64_t heads, int64_t dim,
                     const uint8_t *keys, int64_t key_stride, const int64_t *rows, int64_t first, int64_t last,
                     const int64_t *num_visible,
                     int64_t k, int bf16_scores, float *out_scores, int64_t *out_ids) {
    int64_t half = dim / 2, blocks = dim / FP4_BLOCK, vectors = t_count * heads;
    float *q_split = malloc((size_t)(vectors * dim + KEY_BLOCK * dim) * sizeof(float));
    int8_t *q8 = malloc((size_t)(vectors * dim));
    float *steps = malloc((size_t)vectors * sizeof(float));
    float *k_scales = malloc((size_t)(KEY_BLOCK * blocks) * sizeof(float));
    uint8_t *keys8 = malloc((size_t)(KEY_BLOCK * dim));
    /* per group of 8 heads: dim/4 query chunks, then its block offsets */
    __m256i *qt = aligned_alloc(32, (size_t)((vectors / 8) * (dim / 4 + blocks)) * sizeof(__m256i));
    int64_t *sizes = calloc((size_t)t_count, sizeof(int64_t));
    if (!q_split || !q8 || !steps || !k_scales || !keys8 || !qt || !sizes) {
        free(q_split); free(q8); free(steps); free(k_scales); free(keys8); free(qt); free(sizes);
        return -1;
    }
    const int64_t group_vectors = dim / 4 + blocks;
    float *key = q_split + vectors * dim; /* float path: KEY_BLOCK decoded keys */
    int exact = 1;
    for (int64_t i = 0; i < vectors && exact; i++) exact = quantize_query(q + i * dim, dim, q8 + i * dim, steps + i);
    for (int64_t g = 0; exact && g < vectors / 8; g++)
        heads_in_lanes(q8 + 8 * g * dim, dim, qt + g * group_vectors, qt + g * group_vectors + dim / 4);
    for (int64_t i = 0; i < vectors && !exact; i++)
        deinterleave(q + i * dim, dim, q_split + i * dim, q_split + i * dim + half);
    for (int64_t s0 = first; s0 < last; s0 += KEY_BLOCK) {
        int64_t count = last - s0 < KEY_BLOCK ? last - s0 : KEY_BLOCK;
        for (int64_t j = 0; j < count; j++) {
            const uint8_t *row = keys + (rows ? rows[s0 + j] : s0 + j) * key_stride;
            if (exact) decode_key_int8(row, dim, keys8 + j * dim, k_scales + j * blocks);
            else decode_key_float(row, dim, key + j * dim);
        }
        for (int64_t t = 0; t < t_count; t++) {
            int64_t visible = num_visible[t] - s0 < count ? num_visible[t] - s0 : count;
            if (visible <= 0) continue;
            __m256 per_key[KEY_BLOCK]; /* key j: its heads' relu(logit) * weight, to be summed */
            for (int64_t j = 0; j < KEY_BLOCK; j++) per_key[j] = _mm256_setzero_ps();
            for (int64_t j = 0; j < visible; j++) {
                for (int64_t h0 = 0; h0 < heads; h0 += 8) {
                    int64_t v = t * heads + h0;
                    const __m256i *group = qt + (v / 8) * group_vectors;
                    __m256 logits = exact
                        ? logits_int8(group, group + dim / 4, _mm256_loadu_ps(steps + v), keys8 + j * dim,
                                      k_scales + j * blocks, dim)
                        : logits_float(q_split + v * dim, key + j * dim, dim);
                    per_key[j] = _mm256_fmadd_ps(_mm256_max_ps(logits, _mm256_setzero_ps()),
                                                 _mm256_loadu_ps(head_weights + v), per_key[j]);
                }
            }
            __m256 scores = hsum8x8(per_key);
            if (bf16_scores) scores = bf16_round8(scores);
            scores = _mm256_add_ps(scores, _mm256_setzero_ps()); /* -0.0 and 0.0 rank as one score */
            float *hs = out_scores + t * k;
            int64_t *hi = out_ids + t * k;
            int candidates = (1 << visible) - 1;
            if (sizes[t] == k) candidates &= _mm256_movemask_ps(_mm256_cmp_ps(scores, _mm256_set1_ps(hs[0]),
                                                                               _CMP_GT_OQ));
            if (!candidates) continue;
            float block_scores[KEY_BLOCK];
            _mm256_storeu_ps(block_scores, scores);
            for (int64_t j = 0; j < visible; j++)
                if (candidates >> j & 1) offer(hs, hi, sizes + t, k, block_scores[j], s0 + j);
        }
    }
    for (int64_t t = 0; t < t_count; t++) finish(out_scores + t * k, out_ids + t * k, sizes[t], k);
    free(q_split);
    free(q8);
    free(steps);
    free(k_scales);
    free(keys8);
    free(qt);
    free(sizes);
    return 0;
}
