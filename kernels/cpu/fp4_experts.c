/* Twin of kernels/ref/fp4_experts.py for decode-sized batches: each token's routed experts run as FP4 GEMVs that
 * decode the packed weights in registers. */
#include <stdlib.h>

#include "formats.h"

/* x [t, d] float32 or bf16; ids/weights [t, top_k]; w13 [E, 2*inter, d/2] + w13_scale [E, 2*inter, d/32];
 * w2 [E, d, inter/2] + w2_scale [E, d, inter/32]; d and inter multiples of 32. out [t, d] float32.
 * Returns 0, or -1 when out of memory. */
int fp4_expert_ffn(const void *x, int x_bf16, int64_t t_count, int64_t d, const int64_t *ids, const float *weights,
                   int64_t top_k, const uint8_t *w13, const uint8_t *w13_scale, const uint8_t *w2,
                   const uint8_t *w2_scale, int64_t inter, float swiglu_limit, int quantize_input, float *out) {
    float *buf = malloc((size_t)(3 * d + 4 * inter) * sizeof(float));
    if (!buf) return -1;
    float *xrow = buf, *x_even = xrow + d, *x_odd = x_even + d / 2, *gate_up = x_odd + d / 2;
    float *hidden = gate_up + 2 * inter, *h_even = hidden + inter, *h_odd = h_even + inter / 2, *slot = xrow;
    for (int64_t t = 0; t < t_count; t++) {
        load_row(x, x_bf16, t, d, xrow);
        if (quantize_input) fp8_round_trip_row(xrow, d);
        deinterleave(xrow, d, x_even, x_odd);
        float *y = out + t * d;
        memset(y, 0, (size_t)d * sizeof(float));
        for (int64_t j = 0; j < top_k; j++) {
            int64_t e = ids[t * top_k + j];
            float route = weights[t * top_k + j];
            fp4_gemv(x_even, x_odd, d, w13 + e * 2 * inter * (d / 2), w13_scale + e * 2 * inter * (d / FP4_BLOCK),
                     2 * inter, gate_up);
            for (int64_t i = 0; i < inter; i++) {
                float gate = gate_up[i], up = gate_up[inter + i];
                if (swiglu_limit > 0) {
                    gate = fminf(gate, swiglu_limit);
                    up = fminf(fmaxf(up, -swiglu_limit), swiglu_limit);
                }
                hidden[i] = gate / (1.0f + expf(-gate)) * up * route;
            }
            if (quantize_input) fp8_round_trip_row(hidden, inter);
            deinterleave(hidden, inter, h_even, h_odd);
            /* the token's row is already split, so xrow is free to take this slot's output */
            fp4_gemv(h_even, h_odd, inter, w2 + e * d * (inter / 2), w2_scale + e * d * (inter / FP4_BLOCK), d, slot);
            for (int64_t i = 0; i < d; i++) y[i] += slot[i];
        }
    }
    free(buf);
    return 0;
}
