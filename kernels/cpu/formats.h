/* Storage formats shared by the CPU kernels: bf16, FP8 e4m3 (weights and activation quantization), packed FP4 e2m1,
 * ue8m0 scales. Mirrors kernels/ref/formats.py and act_quant.py; decoding uses the same exact bit moves into float16
 * lanes (F16C converts 8 of them at once), so every decoded value is bit-identical to the torch twins'. */
#pragma once
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "the CPU kernels need AVX2, FMA and F16C; the torch twins serve other machines"
#endif

#define FP8_MAX 448.0f
#define FP8_AMAX_FLOOR 1e-4f
#define FP8_BLOCK 128
#define FP4_BLOCK 32
#define FP8_LANE_SCALE 256.0f   /* fp8x8 yields value / 2^8 */
#define FP4_LANE_SCALE 16384.0f /* fp4x8 yields value / 2^14 */

static inline float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }
/* Round to nearest even, as torch's .to(torch.bfloat16) does (no NaN reaches here). */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
/* 2^(b - 127); byte 0 is the subnormal 2^-127. */
static inline float e8m0_to_f32(uint8_t b) { return f32_from_bits(b ? (uint32_t)b << 23 : 0x00400000u); }

/* Row `row` of a [rows, n] float32 or bf16 matrix, as float32. */
static inline void load_row(const void *src, int is_bf16, int64_t row, int64_t n, float *dst) {
    if (is_bf16) {
        const uint16_t *s = (const uint16_t *)src + row * n;
        for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(s[i]);
    } else {
        memcpy(dst, (const float *)src + row * n, (size_t)n * sizeof(float));
    }
}

static inline void store_row(void *dst, int is_bf16, int64_t row, int64_t n, const float *src) {
    if (is_bf16) {
        uint16_t *d = (uint16_t *)dst + row * n;
        for (int64_t i = 0; i < n; i++) d[i] = f32_to_bf16(src[i]);
    } else {
        memcpy((float *)dst + row * n, src, (size_t)n * sizeof(float));
    }
}

/* Smallest power of two s with amax / s <= fmt_max (pow2_scale in formats.py, from the exponent bits). */
static inline float pow2_scale(float amax, float fmt_max) {
    int e;
    float m = frexpf(amax / fmt_max, &e);
    return ldexpf(1.0f, m == 0.5f ? e - 1 : e);
}

/* The power-of-two scale of a block: pow2_scale of its largest magnitude, floored at amax_floor. */
static inline float block_scale(const float *v, int64_t n, float amax_floor, float fmt_max) {
    float amax = amax_floor;
    for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(v[i]));
    return pow2_scale(amax, fmt_max);
}

/* |v| <= 448 rounded to the nearest e4m3 value, ties to even. */
static inline float round_e4m3(float v) {
    if (fabsf(v) < 0.015625f) return rintf(v * 512.0f) * (1.0f / 512.0f); /* subnormal grid: steps of 2^-9 */
    uint32_t u = f32_bits(v);
    return f32_from_bits((u + 0x7FFFFu + ((u >> 20) & 1u)) & 0xFFF00000u);
}

/* FP8 round trip of x[0, n) in blocks of FP8_BLOCK (fp8_round_trip in act_quant.py; a short last block is padded
 * with zeros there, which never changes its amax). */
static inline void fp8_round_trip_row(float *x, int64_t n) {
    for (int64_t first = 0; first < n; first += FP8_BLOCK) {
        int64_t last = first + FP8_BLOCK < n ? first + FP8_BLOCK : n;
        float scale = block_scale(x + first, last - first, FP8_AMAX_FLOOR, FP8_MAX), inv = 1.0f / scale;
        for (int64_t i = first; i < last; i++)
            x[i] = round_e4m3(fminf(fmaxf(x[i] * inv, -FP8_MAX), FP8_MAX)) * scale;
    }
}

#define FP4_MAX 6.0f
#define FP4_AMAX_FLOOR (FP4_MAX * 0x1p-126f)

/* The e2m1 code of v (|v| clamped to 6): nearest value, ties to the even code; negative v sets the sign bit. */
static inline uint8_t e2m1_code(float v) {
    float a = fminf(fabsf(v), FP4_MAX);
    uint8_t code = a <= 0.25f ? 0 : a < 0.75f ? 1 : a <= 1.25f ? 2 : a < 1.75f ? 3
                 : a <= 2.5f ? 4 : a < 3.5f ? 5 : a <= 5.0f ? 6 : 7;
    return v < 0.0f ? code | 8 : code;
}

/* 8 e4m3 bytes -> 8 floats worth value / 2^8: the sign-extended byte shifted left by 7 puts exponent and mantissa
 * at float16 bits 13..7 and the sign at bit 15; the mask clears bit 14. */
static inline __m256 fp8x8(const uint8_t *p) {
    __m128i w = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)p));
    return _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(w, 7), _mm_set1_epi16((short)0xBFFF)));
}

#define KV_NOPE_BLOCK 64

/* One stored KV entry (kernels/ref/kv_codec.py) -> dim floats: dim - rope FP8 e4m3 bytes with a ue8m0 scale per 64,
 * then rope bf16 dims, then the scale bytes. */
static inline void decode_kv_row(const uint8_t *s, int64_t dim, int64_t rope, float *o) {
    int64_t nope = dim - rope;
    for (int64_t b = 0; b < nope / KV_NOPE_BLOCK; b++) {
        __m256 scale = _mm256_set1_ps(e8m0_to_f32(s[nope + 2 * rope + b]) * FP8_LANE_SCALE);
        for (int64_t j = b * KV_NOPE_BLOCK; j < (b + 1) * KV_NOPE_BLOCK; j += 8)
            _mm256_storeu_ps(o + j, _mm256_mul_ps(fp8x8(s + j), scale));
    }
    for (int64_t j = 0; j < rope; j++) {
        uint16_t h;
        memcpy(&h, s + nope + 2 * j, 2);
        o[nope + j] = bf16_to_f32(h);
    }
}

/* 8 packed FP4 bytes -> even dims (low nibbles) and odd dims (high nibbles), floats worth value / 2^14. */
static inline void fp4x8(const uint8_t *p, __m256 *even, __m256 *odd) {
    __m128i w = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)p));
    __m128i lo = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(w, _mm_set1_epi16(0x8)), 12),
                              _mm_slli_epi16(_mm_and_si128(w, _mm_set1_epi16(0x7)), 9));
    __m128i hi = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(w, _mm_set1_epi16(0x80)), 8),
                              _mm_slli_epi16(_mm_and_si128(w, _mm_set1_epi16(0x70)), 5));
    *even = _mm256_cvtph_ps(lo);
    *odd = _mm256_cvtph_ps(hi);
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* x[0, n) split into its even and odd elements (packed FP4 holds dims 2i and 2i+1 in one byte). */
static inline void deinterleave(const float *x, int64_t n, float *even, float *odd) {
    for (int64_t i = 0; i < n / 2; i++) {
        even[i] = x[2 * i];
        odd[i] = x[2 * i + 1];
    }
}

/* Sums of 8 vectors, lane i holding the sum of v[i]. */
static inline __m256 hsum8x8(const __m256 v[8]) {
    __m256 s0123 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    __m256 s4567 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

/* `rows` (<= 8, a constant once inlined) rows of packed FP4 W (ue8m0 scale per 32 inputs) against x given split by
 * deinterleave: independent accumulators per row keep the FMA units busy instead of waiting on one chain. */
static inline __attribute__((always_inline)) void fp4_rows(const float *x_even, const float *x_odd, int64_t k,
                                                           const uint8_t *w, const uint8_t *scale, int rows, float *y) {
    int64_t row_bytes = k / 2, blocks = k / FP4_BLOCK;
    __m256 acc[8];
    for (int r = 0; r < rows; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks; b++) {
        for (int64_t c = 16 * b; c < 16 * b + 16; c += 8) {
            __m256 xe = _mm256_loadu_ps(x_even + c), xo = _mm256_loadu_ps(x_odd + c);
            for (int r = 0; r < rows; r++) {
                __m256 s = _mm256_set1_ps(e8m0_to_f32(scale[r * blocks + b]) * FP4_LANE_SCALE), even, odd;
                fp4x8(w + r * row_bytes + c, &even, &odd);
                acc[r] = _mm256_fmadd_ps(xe, _mm256_mul_ps(even, s), acc[r]);
                acc[r] = _mm256_fmadd_ps(xo, _mm256_mul_ps(odd, s), acc[r]);
            }
        }
    }
    for (int r = 0; r < rows; r++) y[r] = hsum8(acc[r]);
}

/* y[r] = sum_k x[k] * W[r, k] over packed FP4 rows; k % 32 == 0. */
static inline void fp4_gemv(const float *x_even, const float *x_odd, int64_t k, const uint8_t *w, const uint8_t *scale,
                            int64_t rows, float *y) {
    int64_t r = 0, row_bytes = k / 2, blocks = k / FP4_BLOCK;
    for (; r + 8 <= rows; r += 8) fp4_rows(x_even, x_odd, k, w + r * row_bytes, scale + r * blocks, 8, y + r);
    for (; r < rows; r++) fp4_rows(x_even, x_odd, k, w + r * row_bytes, scale + r * blocks, 1, y + r);
}
