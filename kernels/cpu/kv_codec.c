/* Twins of encode_kv / decode_kv / encode_index_keys in kernels/ref/kv_codec.py: a KV entry of `dim` dims stores its
 * first dim - rope dims as FP8 e4m3 with a ue8m0 scale per 64, then the rope dims as bf16, then the scale bytes, then
 * zero padding. */
#include "formats.h"

/* The e4m3 byte of a value already on the e4m3 grid (round_e4m3's output). */
static inline uint8_t e4m3_byte(float r) {
    uint32_t u = f32_bits(r), sign = (u >> 24) & 0x80u;
    float a = fabsf(r);
    if (a < 0.015625f) return (uint8_t)(sign | (uint32_t)(a * 512.0f)); /* subnormal: mantissa steps of 2^-9 */
    return (uint8_t)(sign | ((((u >> 23) & 0xFFu) - 120u) << 3) | ((u >> 20) & 7u));
}

/* x [n, dim] float32 or bf16 -> out [n, stride] bytes. */
void encode_kv(const void *x, int x_bf16, int64_t n, int64_t dim, int64_t rope, int64_t stride, uint8_t *out) {
    int64_t nope = dim - rope;
    float row[dim];
    for (int64_t i = 0; i < n; i++) {
        uint8_t *o = out + i * stride;
        load_row(x, x_bf16, i, dim, row);
        memset(o, 0, (size_t)stride);
        for (int64_t b = 0; b < nope / KV_NOPE_BLOCK; b++) {
            float *v = row + b * KV_NOPE_BLOCK;
            float scale = block_scale(v, KV_NOPE_BLOCK, FP8_AMAX_FLOOR, FP8_MAX), inv = 1.0f / scale;
            for (int j = 0; j < KV_NOPE_BLOCK; j++)
                o[b * KV_NOPE_BLOCK + j] = e4m3_byte(round_e4m3(fminf(fmaxf(v[j] * inv, -FP8_MAX), FP8_MAX)));
            o[nope + 2 * rope + b] = (uint8_t)(f32_bits(scale) >> 23); /* a normal power of two: its exponent byte */
        }
        uint16_t *r = (uint16_t *)(o + nope);
        for (int64_t j = 0; j < rope; j++) {
            uint16_t h = f32_to_bf16(row[nope + j]);
            memcpy(r + j, &h, 2);
        }
    }
}

/* stored [n, stride] bytes -> out [n, dim] float32. */
void decode_kv(const uint8_t *stored, int64_t n, int64_t dim, int64_t rope, int64_t stride, float *out) {
    for (int64_t i = 0; i < n; i++) decode_kv_row(stored + i * stride, dim, rope, out + i * dim);
}

/* Twin of encode_index_keys: x [n, dim] float32 or bf16 (already rotated) -> out [n, dim/2 + dim/32] bytes: packed
 * e2m1 codes (dim 2i in the low nibble), then a ue8m0 scale per 32 dims. dim % 32 == 0. */
void encode_index_keys(const void *x, int x_bf16, int64_t n, int64_t dim, uint8_t *out) {
    float row[dim];
    for (int64_t i = 0; i < n; i++) {
        uint8_t *o = out + i * (dim / 2 + dim / FP4_BLOCK);
        load_row(x, x_bf16, i, dim, row);
        for (int64_t b = 0; b < dim / FP4_BLOCK; b++) {
            float *v = row + b * FP4_BLOCK;
            float scale = block_scale(v, FP4_BLOCK, FP4_AMAX_FLOOR, FP4_MAX), inv = 1.0f / scale;
            for (int j = 0; j < FP4_BLOCK; j += 2)
                o[(b * FP4_BLOCK + j) / 2] = (uint8_t)(e2m1_code(v[j] * inv) | e2m1_code(v[j + 1] * inv) << 4);
            o[dim / 2 + b] = (uint8_t)(f32_bits(scale) >> 23);
        }
    }
}
