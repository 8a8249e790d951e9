/* Twin of fp4_round_trip in kernels/ref/act_quant.py: each block of 32 values rounded through e2m1 with a ue8m0
 * scale (the indexer's queries in the official numerics). */
#include "formats.h"

/* x [rows, k] float32 or bf16 -> out (same dtype, may alias x); k % 32 == 0. */
void fp4_round_trip(const void *x, int is_bf16, int64_t rows, int64_t k, void *out) {
    float row[k];
    for (int64_t i = 0; i < rows; i++) {
        load_row(x, is_bf16, i, k, row);
        for (int64_t b = 0; b < k; b += FP4_BLOCK) {
            float scale = block_scale(row + b, FP4_BLOCK, FP4_AMAX_FLOOR, FP4_MAX), inv = 1.0f / scale;
            for (int j = 0; j < FP4_BLOCK; j++) row[b + j] = E2M1_VALUES[e2m1_code(row[b + j] * inv)] * scale;
        }
        store_row(out, is_bf16, i, k, row);
    }
}
