/* Twin of kernels/ref/sinkhorn.py: mHC's n x n mixing matrices, one small matrix at a time in registers' reach. */
#include "formats.h"

/* logits [count, n, n] float32 -> comb (may alias logits). */
void sinkhorn(const float *logits, int64_t count, int64_t n, int64_t iters, float eps, float *comb) {
    for (int64_t m = 0; m < count; m++) {
        const float *in = logits + m * n * n;
        float *c = comb + m * n * n;
        for (int64_t i = 0; i < n; i++) {
            float mx = -INFINITY, sum = 0.0f;
            for (int64_t j = 0; j < n; j++) mx = fmaxf(mx, in[i * n + j]);
            for (int64_t j = 0; j < n; j++) sum += (c[i * n + j] = expf(in[i * n + j] - mx));
            for (int64_t j = 0; j < n; j++) c[i * n + j] = c[i * n + j] / sum + eps;
        }
        for (int64_t round = 0; round < iters; round++) {
            if (round > 0) {
                for (int64_t i = 0; i < n; i++) {
                    float sum = 0.0f;
                    for (int64_t j = 0; j < n; j++) sum += c[i * n + j];
                    for (int64_t j = 0; j < n; j++) c[i * n + j] /= sum + eps;
                }
            }
            for (int64_t j = 0; j < n; j++) {
                float sum = 0.0f;
                for (int64_t i = 0; i < n; i++) sum += c[i * n + j];
                for (int64_t i = 0; i < n; i++) c[i * n + j] /= sum + eps;
            }
        }
    }
}
