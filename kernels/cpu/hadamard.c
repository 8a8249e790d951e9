/* Twin of kernels/ref/hadamard.py: the fast Walsh-Hadamard transform (log2 d butterfly stages of exact-order adds)
 * instead of a d x d float32 GEMM, which for the indexer's one decode row per head costs more in call overhead than
 * in arithmetic. The sums are rounded in a different order than the GEMM's, so results agree within float32
 * rounding (one bf16 ulp after the cast back). */
#include "formats.h"

/* x [rows, d] float32 or bf16 (d a power of two) -> out [rows, d] in x's dtype: x @ H_d * d^-0.5 (Sylvester order,
 * which is what the butterfly with (a + b, a - b) at stride h produces). */
void hadamard_rows(const void *x, int x_bf16, int64_t rows, int64_t d, void *out) {
    float row[d];
    const float scale = (float)(1.0 / sqrt((double)d)); /* the twin's float32 matrix entries */
    for (int64_t r = 0; r < rows; r++) {
        load_row(x, x_bf16, r, d, row);
        for (int64_t h = 1; h < d; h *= 2) {
            for (int64_t i = 0; i < d; i += 2 * h) {
                for (int64_t j = i; j < i + h; j++) {
                    float a = row[j], b = row[j + h];
                    row[j] = a + b;
                    row[j + h] = a - b;
                }
            }
        }
        for (int64_t i = 0; i < d; i++) row[i] *= scale;
        store_row(out, x_bf16, r, d, row);
    }
}
