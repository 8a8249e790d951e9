/* Twin of kernels/ref/fp8_linear.py for decode-sized batches: y = act_quant(x) @ dequant(W)^T, the FP8 weight decoded
 * in registers (never materialized as float) and each decoded chunk reused for a tile of tokens. */
#include <stdlib.h>

#include "formats.h"
#include "linear.h"

/* A tile of `rows` x `tokens` outputs (constants once inlined, rows * tokens <= 8 accumulators). The rows share one
 * 128-row scale block because rows divides 128 and the tile starts at a multiple of it. */
static inline __attribute__((always_inline)) void tile(const float *x, int64_t ldx, int64_t k, const uint8_t *w,
                                                       const uint8_t *scale, int64_t n, int rows, int tokens,
                                                       float *y) {
    __m256 acc[8][4];
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < tokens; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b * FP8_BLOCK < k; b++) {
        __m256 s = _mm256_set1_ps(e8m0_to_f32(scale[b]) * FP8_LANE_SCALE);
        int64_t last = (b + 1) * FP8_BLOCK < k ? (b + 1) * FP8_BLOCK : k;
        for (int64_t i = b * FP8_BLOCK; i < last; i += 8) {
            for (int r = 0; r < rows; r++) {
                __m256 wv = _mm256_mul_ps(fp8x8(w + r * k + i), s);
                for (int t = 0; t < tokens; t++)
                    acc[r][t] = _mm256_fmadd_ps(_mm256_loadu_ps(x + t * ldx + i), wv, acc[r][t]);
            }
        }
    }
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < tokens; t++) y[t * n + r] = hsum8(acc[r][t]);
}

void fp8_matmul(const float *xq, int64_t m, int64_t k, int64_t groups, const uint8_t *w, const uint8_t *w_scale,
                int64_t n, float *y) {
    int64_t k_blocks = (k + FP8_BLOCK - 1) / FP8_BLOCK, ldx = groups * k, rows_per_group = n / groups;
    for (int64_t t = 0; t < m;) {
        int tokens = m - t >= 4 ? 4 : m - t >= 2 ? 2 : 1, rows = 8 / tokens;
        for (int64_t r = 0; r < n;) {
            const float *xt = xq + t * ldx + (r / rows_per_group) * k;
            const uint8_t *wr = w + r * k, *sr = w_scale + (r / FP8_BLOCK) * k_blocks;
            float *yt = y + t * n + r;
            /* a full tile must stay inside one group; rows divides 128 so it stays inside one scale block */
            int full = r % rows == 0 && r + rows <= (r / rows_per_group + 1) * rows_per_group;
            if (tokens == 4) full ? tile(xt, ldx, k, wr, sr, n, 2, 4, yt) : tile(xt, ldx, k, wr, sr, n, 1, 4, yt);
            else if (tokens == 2) full ? tile(xt, ldx, k, wr, sr, n, 4, 2, yt) : tile(xt, ldx, k, wr, sr, n, 1, 2, yt);
            else full ? tile(xt, ldx, k, wr, sr, n, 8, 1, yt) : tile(xt, ldx, k, wr, sr, n, 1, 1, yt);
            r += full ? rows : 1;
        }
        t += tokens;
    }
}

/* x [m, groups * k] float32 or bf16; w [n, k] e4m3 bytes with ue8m0 scales [ceil(n/128), ceil(k/128)]; the rows of
 * group g (n / groups each) read x[:, g*k : (g+1)*k]; k % 8 == 0. out [m, n] float32 or bf16.
 * Returns 0, or -1 when out of memory. */
int fp8_linear(const void *x, int x_bf16, int64_t m, int64_t k, const uint8_t *w, const uint8_t *w_scale, int64_t n,
               int64_t groups, int quantize_input, void *out, int out_bf16) {
    if (m <= 0) return 0; /* also shows GCC that xq is written before fp8_matmul reads it */
    int64_t ldx = groups * k;
    float *xq = malloc((size_t)(m * ldx + m * n) * sizeof(float));
    if (!xq) return -1;
    float *y = xq + m * ldx;
    for (int64_t t = 0; t < m; t++) {
        load_row(x, x_bf16, t, ldx, xq + t * ldx);
        for (int64_t g = 0; quantize_input && g < groups; g++) fp8_round_trip_row(xq + t * ldx + g * k, k);
    }
    fp8_matmul(xq, m, k, groups, w, w_scale, n, y);
    for (int64_t t = 0; t < m; t++) store_row(out, out_bf16, t, n, y + t * n);
    free(xq);
    return 0;
}
