/* GEMM routines of fp8_linear.c and bf16_linear.c over float32 activations already in memory, for kernels that fuse
 * a linear with what surrounds it (fp8_swiglu.c, moe_gate.c) and must sum exactly as the standalone op does. */
#pragma once
#include <stdint.h>

/* y [m, n] = xq [m, groups * k] @ dequant(w)^T, xq already FP8-rounded where the op quantizes; w [n, k] e4m3 bytes
 * with ue8m0 scales [ceil(n/128), ceil(k/128)]; the rows of group g read xq[:, g*k : (g+1)*k]; k % 8 == 0. */
void fp8_matmul(const float *xq, int64_t m, int64_t k, int64_t groups, const uint8_t *w, const uint8_t *w_scale,
                int64_t n, float *y);

/* out[:, first:last) of [m, n] = x [m, k] @ w [n, k] bf16 ^T; k % 32 == 0; bf16-rounded when round_output. */
void bf16_linear(const float *x, int64_t m, int64_t k, const uint16_t *w, int64_t n, int64_t first, int64_t last,
                 int round_output, float *out);
