/* Twin of kernels/ref/argmax.py: torch's CPU argmax walks a 129K-logit row element by element (~110 us per row on
 * the development machine, a few % of a decode step); two vector passes over the row, which stays in L2 between
 * them, take ~15 us: the maximum, then the first index holding it. */
#include "formats.h"

/* x [rows, n] float32 -> out [rows]: the first index of each row's maximum, or of its first NaN (NaN wins, as in
 * torch). -0.0 and 0.0 are one value. */
void argmax_rows(const float *x, int64_t rows, int64_t n, int64_t *out) {
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * n;
        __m256 best = _mm256_set1_ps(-INFINITY), nan = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
            __m256 v = _mm256_loadu_ps(row + i);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            best = _mm256_max_ps(best, v);
        }
        float lanes[8], top = -INFINITY;
        _mm256_storeu_ps(lanes, best);
        for (int l = 0; l < 8; l++) top = fmaxf(top, lanes[l]);
        int has_nan = !_mm256_testz_ps(nan, nan);
        for (int64_t j = i; j < n; j++) {
            if (isnan(row[j])) has_nan = 1;
            top = fmaxf(top, row[j]);
        }
        int64_t found = 0;
        if (has_nan) {
            while (!isnan(row[found])) found++;
        } else {
            __m256 target = _mm256_set1_ps(top);
            int64_t j = 0;
            for (; j + 8 <= n; j += 8) {
                int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(row + j), target, _CMP_EQ_OQ));
                if (mask) break;
            }
            while (row[j] != top) j++;
            found = j;
        }
        out[r] = found;
    }
}
