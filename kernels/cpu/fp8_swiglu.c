/* Twin of kernels/ref/fp8_swiglu.py for decode-sized batches: the shared expert's three FP8 linears and SwiGLU in one
 * call. The linears are fp8_linear.c's (linear.h), so each sums exactly as a standalone fp8_linear call would; the
 * input is loaded and FP8-rounded once for both w1 and w3. */
#include <stdlib.h>

#include "formats.h"
#include "linear.h"

/* What storing v in the activation dtype and reading it back gives (each twin linear returns that dtype). */
static inline float as_act(float v, int act_bf16) { return act_bf16 ? bf16_to_f32(f32_to_bf16(v)) : v; }

/* x [m, d] float32 or bf16; w1, w3 [inter, d] and w2 [d, inter] e4m3 bytes with ue8m0 block scales; d and inter
 * multiples of 8. out [m, d] in the activation dtype (bf16 when act_bf16, else float32).
 * Returns 0, or -1 when out of memory. */
int fp8_swiglu_ffn(const void *x, int x_bf16, int64_t m, int64_t d, const uint8_t *w1, const uint8_t *w1_scale,
                   const uint8_t *w3, const uint8_t *w3_scale, int64_t inter, const uint8_t *w2,
                   const uint8_t *w2_scale, float swiglu_limit, int quantize_input, void *out, int act_bf16) {
    if (m <= 0) return 0; /* also shows GCC that xq is written before fp8_matmul reads it */
    float *xq = malloc((size_t)(2 * m * d + 2 * m * inter) * sizeof(float));
    if (!xq) return -1;
    float *y = xq + m * d, *gate = y + m * d, *up = gate + m * inter;
    for (int64_t t = 0; t < m; t++) {
        load_row(x, x_bf16, t, d, xq + t * d);
        if (quantize_input) fp8_round_trip_row(xq + t * d, d);
    }
    fp8_matmul(xq, m, d, 1, w1, w1_scale, inter, gate);
    fp8_matmul(xq, m, d, 1, w3, w3_scale, inter, up);
    for (int64_t i = 0; i < m * inter; i++) {
        float g = as_act(gate[i], act_bf16), u = as_act(up[i], act_bf16);
        if (swiglu_limit > 0) {
            g = fminf(g, swiglu_limit);
            u = fminf(fmaxf(u, -swiglu_limit), swiglu_limit);
        }
        gate[i] = as_act(g / (1.0f + expf(-g)) * u, act_bf16);
    }
    for (int64_t t = 0; quantize_input && t < m; t++) fp8_round_trip_row(gate + t * inter, inter);
    fp8_matmul(gate, m, inter, 1, w2, w2_scale, d, y);
    for (int64_t t = 0; t < m; t++) store_row(out, act_bf16, t, d, y + t * d);
    free(xq);
    return 0;
}
