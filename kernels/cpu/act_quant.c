/* Twin of fp4_round_trip in kernels/ref/act_quant.py: each block of 32 values rounded through e2m1 with a ue8m0
 * scale (the indexer's queries in the official numerics). */
#include "formats.h"

/* e2m1_code's rounding, 8 values at once and without branches (random data mispredicts the scalar comparison chain
 * on nearly every value): the value is the sum of the grid steps whose midpoint |v| passes, the midpoints that tie
 * to the even code counted as passed only above them; a negative v (not -0.0) gets the sign bit. */
static inline __m256 e2m1_round8(__m256 v) {
    const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    const __m256 two = _mm256_set1_ps(2.0f);
    __m256 six = _mm256_set1_ps(FP4_MAX), a = _mm256_min_ps(_mm256_andnot_ps(sign, v), six);
    a = _mm256_blendv_ps(a, six, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)); /* NaN -> 6, as fminf in e2m1_code */
    __m256 value = _mm256_and_ps(_mm256_cmp_ps(a, _mm256_set1_ps(0.25f), _CMP_GT_OQ), half);
    value = _mm256_add_ps(value, _mm256_and_ps(_mm256_cmp_ps(a, _mm256_set1_ps(0.75f), _CMP_GE_OQ), half));
    value = _mm256_add_ps(value, _mm256_and_ps(_mm256_cmp_ps(a, _mm256_set1_ps(1.25f), _CMP_GT_OQ), half));
    value = _mm256_add_ps(value, _mm256_and_ps(_mm256_cmp_ps(a, _mm256_set1_ps(1.75f), _CMP_GE_OQ), half));
    value = _mm256_add_ps(value, _mm256_and_ps(_mm256_cmp_ps(a, _mm256_set1_ps(2.5f), _CMP_GT_OQ), one));
    value = _mm256_add_ps(value, _mm256_and_ps(_mm256_cmp_ps(a, _mm256_set1_ps(3.5f), _CMP_GE_OQ), one));
    value = _mm256_add_ps(value, _mm256_and_ps(_mm256_cmp_ps(a, _mm256_set1_ps(5.0f), _CMP_GT_OQ), two));
    return _mm256_or_ps(value, _mm256_and_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ), sign));
}

/* x [rows, k] float32 or bf16 -> out (same dtype, may alias x); k % 32 == 0. */
void fp4_round_trip(const void *x, int is_bf16, int64_t rows, int64_t k, void *out) {
    float row[k];
    for (int64_t i = 0; i < rows; i++) {
        load_row(x, is_bf16, i, k, row);
        for (int64_t b = 0; b < k; b += FP4_BLOCK) {
            float scale = block_scale(row + b, FP4_BLOCK, FP4_AMAX_FLOOR, FP4_MAX), inv = 1.0f / scale;
            __m256 scale8 = _mm256_set1_ps(scale), inv8 = _mm256_set1_ps(inv);
            for (int j = 0; j < FP4_BLOCK; j += 8) {
                __m256 v = _mm256_mul_ps(_mm256_loadu_ps(row + b + j), inv8);
                _mm256_storeu_ps(row + b + j, _mm256_mul_ps(e2m1_round8(v), scale8));
            }
        }
        store_row(out, is_bf16, i, k, row);
    }
}
