/* Twin of kernels/ref/rope.py: partial interleaved RoPE on the last 2 * len(freqs) dims, in place on a copy. */
#include "formats.h"

/* x [t, vectors, dim] float32 or bf16 (out the same dtype, may alias x); pairs (2i, 2i+1) of the last 2 * half
 * dims rotate by positions[t] * freqs[i] (the conjugate when inverse). */
void apply_rope(const void *x, int is_bf16, int64_t t_count, int64_t vectors, int64_t dim, const int64_t *positions,
                const float *freqs, int64_t half, int inverse, void *out) {
    float cos_[half], sin_[half], row[dim];
    for (int64_t t = 0; t < t_count; t++) {
        float position = (float)positions[t];
        for (int64_t i = 0; i < half; i++) {
            float angle = position * freqs[i];
            cos_[i] = cosf(angle);
            sin_[i] = inverse ? -sinf(angle) : sinf(angle);
        }
        for (int64_t v = 0; v < vectors; v++) {
            int64_t r = t * vectors + v;
            load_row(x, is_bf16, r, dim, row);
            float *pairs = row + dim - 2 * half;
            for (int64_t i = 0; i < half; i++) {
                float even = pairs[2 * i], odd = pairs[2 * i + 1];
                pairs[2 * i] = even * cos_[i] - odd * sin_[i];
                pairs[2 * i + 1] = even * sin_[i] + odd * cos_[i];
            }
            store_row(out, is_bf16, r, dim, row);
        }
    }
}
