/* GEMV streaming dense bf16 rows: the twin of kernels/ref/bf16_linear.py (the 129K-row output head, the largest read
 * of a decode step) and of fp8_linear over dense bf16 weights. One range of rows per call so Python threads can split
 * it. */
#include "formats.h"
#include "linear.h"

/* The widest float vector the build machine has: 16 lanes with AVX-512 (twice the FMA width on the Xeons that have
 * it), else 8. A bf16 is the high half of its float32. */
#ifdef __AVX512F__
typedef __m512 vec;
#define VEC_LANES 16
static inline vec bf16_vec(const uint16_t *p) {
    __m512i widened = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(widened, 16));
}
static inline __m256 fold8(vec v) {
    return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
#define vec_zero _mm512_setzero_ps
#define vec_load _mm512_loadu_ps
#define vec_fma _mm512_fmadd_ps
#define vec_add _mm512_add_ps
#else
typedef __m256 vec;
#define VEC_LANES 8
static inline vec bf16_vec(const uint16_t *p) {
    __m256i widened = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(widened, 16));
}
static inline __m256 fold8(vec v) { return v; }
#define vec_zero _mm256_setzero_ps
#define vec_load _mm256_loadu_ps
#define vec_fma _mm256_fmadd_ps
#define vec_add _mm256_add_ps
#endif

/* One row against `tokens` tokens (constants once inlined), with `lanes` accumulators per token (lanes * VEC_LANES
 * divides 32): streaming one row at a time keeps the reads sequential, and independent accumulators keep the FMA
 * units busy. */
static inline __attribute__((always_inline)) void row_dot(const float *x, int64_t k, const uint16_t *w, int tokens,
                                                          int lanes, int round_output, float *y, int64_t n) {
    vec acc[8][4];
    for (int t = 0; t < tokens; t++)
        for (int j = 0; j < lanes; j++) acc[t][j] = vec_zero();
    for (int64_t i = 0; i < k; i += VEC_LANES * lanes) {
        for (int j = 0; j < lanes; j++) {
            vec wv = bf16_vec(w + i + VEC_LANES * j);
            for (int t = 0; t < tokens; t++)
                acc[t][j] = vec_fma(vec_load(x + t * k + i + VEC_LANES * j), wv, acc[t][j]);
        }
    }
    /* One transposing reduction for all tokens costs about what one horizontal sum per token would. */
    __m256 folded[8];
    for (int t = 0; t < 8; t++) {
        if (t >= tokens) {
            folded[t] = _mm256_setzero_ps();
            continue;
        }
        for (int j = 1; j < lanes; j++) acc[t][0] = vec_add(acc[t][0], acc[t][j]);
        folded[t] = fold8(acc[t][0]);
    }
    float sums[8];
    _mm256_storeu_ps(sums, hsum8x8(folded));
    for (int t = 0; t < tokens; t++) y[t * n] = round_output ? bf16_to_f32(f32_to_bf16(sums[t])) : sums[t];
}

#define PREFETCH_ROWS 16

/* x [m, k] float32; w [n, k] bf16; k % 32 == 0. Writes out[:, first:last) of [m, n] float32, rounded to bf16 values
 * when round_output. Tokens go in groups of up to 8 per row, so a row is read from memory once. */
void bf16_linear(const float *x, int64_t m, int64_t k, const uint16_t *w, int64_t n, int64_t first, int64_t last,
                 int round_output, float *out) {
    for (int64_t r = first; r < last; r++) {
        /* The weight stream is the bound: ask for rows well ahead so their reads overlap this row's arithmetic. */
        if (r + PREFETCH_ROWS < last)
            for (int64_t byte = 0; byte < 2 * k; byte += 64)
                _mm_prefetch((const char *)(w + (r + PREFETCH_ROWS) * k) + byte, _MM_HINT_T0);
        for (int64_t t = 0; t < m; t += 8) {
            const float *xt = x + t * k;
            float *y = out + t * n + r;
            const uint16_t *wr = w + r * k;
            switch (m - t < 8 ? m - t : 8) {
            case 1: row_dot(xt, k, wr, 1, 32 / VEC_LANES, round_output, y, n); break;
            case 2: row_dot(xt, k, wr, 2, 32 / VEC_LANES, round_output, y, n); break;
            case 3: row_dot(xt, k, wr, 3, 16 / VEC_LANES > 1 ? 2 : 1, round_output, y, n); break;
            case 4: row_dot(xt, k, wr, 4, 16 / VEC_LANES > 1 ? 2 : 1, round_output, y, n); break;
            case 5: row_dot(xt, k, wr, 5, 1, round_output, y, n); break;
            case 6: row_dot(xt, k, wr, 6, 1, round_output, y, n); break;
            case 7: row_dot(xt, k, wr, 7, 1, round_output, y, n); break;
            default: row_dot(xt, k, wr, 8, 1, round_output, y, n); break;
            }
        }
    }
}
