/* Twin of kernels/ref/rms_norm.py: one pass per row instead of eight elementwise ops (a decode step runs ~25 norms of
 * one row each, where op overhead, not arithmetic, is the cost). */
#include "formats.h"

/* x [rows, d] float32 or bf16, weight [d] bf16 or NULL -> out [rows, d] in x's dtype. Without a weight the factor is
 * rounded to x's dtype first, as the twin multiplies in that dtype. */
void rms_norm(const void *x, int x_bf16, int64_t rows, int64_t d, const uint16_t *weight, float eps, void *out) {
    float row[d];
    for (int64_t r = 0; r < rows; r++) {
        load_row(x, x_bf16, r, d, row);
        float squares = 0.0f;
        for (int64_t i = 0; i < d; i++) squares += row[i] * row[i];
        float factor = 1.0f / sqrtf(squares / (float)d + eps);
        if (weight) {
            for (int64_t i = 0; i < d; i++) row[i] = bf16_to_f32(weight[i]) * (row[i] * factor);
        } else {
            if (x_bf16) factor = bf16_to_f32(f32_to_bf16(factor));
            for (int64_t i = 0; i < d; i++) row[i] *= factor;
        }
        store_row(out, x_bf16, r, d, row);
    }
}
