/* Twin of kernels/ref/compressor_project.py: both projections and the slot bias in one call. A decode step runs it
 * five times (each CSA layer's compressor and its indexer's, each HCA layer's), where the two GEMVs alone cost less
 * than the dozen torch ops around them. The GEMVs are bf16_linear.c's, so the sums are the standalone op's. */
#include <stdlib.h>

#include "formats.h"
#include "linear.h"

/* x [t, d] float32 or bf16; wkv, wgate [f, d] bf16 (d % 32 == 0); ape [m, f] float32; positions [t] ->
 * out [t, 2f] float32. Returns 0, or -1 when out of memory. */
int compressor_project(const void *x, int x_bf16, int64_t t_count, int64_t d, const uint16_t *wkv,
                       const uint16_t *wgate, int64_t f, const float *ape, int64_t m, const int64_t *positions,
                       float *out) {
    if (t_count <= 0) return 0;
    float *xf = malloc((size_t)(t_count * d + 2 * t_count * f) * sizeof(float));
    if (!xf) return -1;
    float *kv = xf + t_count * d, *score = kv + t_count * f;
    for (int64_t t = 0; t < t_count; t++) load_row(x, x_bf16, t, d, xf + t * d);
    bf16_linear(xf, t_count, d, wkv, f, 0, f, 0, kv);
    bf16_linear(xf, t_count, d, wgate, f, 0, f, 0, score);
    for (int64_t t = 0; t < t_count; t++) {
        int64_t slot = positions[t] % m;
        const float *bias = ape + (slot < 0 ? slot + m : slot) * f; /* the twin's (floored) remainder */
        float *row = out + t * 2 * f;
        memcpy(row, kv + t * f, (size_t)f * sizeof(float));
        for (int64_t j = 0; j < f; j++) row[f + j] = score[t * f + j] + bias[j];
    }
    free(xf);
    return 0;
}
