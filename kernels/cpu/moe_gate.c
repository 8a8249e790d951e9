/* Twin of kernels/ref/moe_gate.py for decode-sized batches: the router GEMV, scores, top-k and mixing weights in one
 * call instead of a dozen torch ops, reading the bf16 router weight in place (the twin converts all of it to float on
 * every call: 4 MiB for the Flash model's 256 x 4096 router). */
#include <stdlib.h>

#include "formats.h"
#include "linear.h"

enum { SQRTSOFTPLUS, SIGMOID, SOFTMAX };

/* The twin's score functions: softplus switches to the identity above 20 as torch's does (beta 1, threshold 20);
 * softmax multiplies by the reciprocal of the sum, as torch's CPU softmax does. */
static void score_row(float *s, int64_t e, int score_func) {
    if (score_func == SQRTSOFTPLUS) {
        for (int64_t i = 0; i < e; i++) s[i] = sqrtf(s[i] > 20.0f ? s[i] : log1pf(expf(s[i])));
    } else if (score_func == SIGMOID) {
        for (int64_t i = 0; i < e; i++) s[i] = 1.0f / (1.0f + expf(-s[i]));
    } else {
        float max = -INFINITY, sum = 0.0f;
        for (int64_t i = 0; i < e; i++) max = fmaxf(max, s[i]);
        for (int64_t i = 0; i < e; i++) sum += s[i] = expf(s[i] - max);
        float inv = 1.0f / sum;
        for (int64_t i = 0; i < e; i++) s[i] *= inv;
    }
}

/* torch.topk counts NaN above every number. */
static inline int ranks_above(float a, float b) { return a > b || (isnan(a) && !isnan(b)); }

/* The k largest of v[0, e) (v + bias when bias), largest first. torch.topk leaves the order of equal values
 * unspecified; here the lower index ranks first (a later value must be strictly larger to pass an earlier one). */
static void top_k(const float *v, const float *bias, int64_t e, int64_t k, int64_t *ids) {
    float best[k];
    int64_t n = 0;
    for (int64_t i = 0; i < e; i++) {
        float value = bias ? v[i] + bias[i] : v[i];
        if (n == k && !ranks_above(value, best[k - 1])) continue;
        int64_t at = n < k ? n++ : k - 1;
        for (; at > 0 && ranks_above(value, best[at - 1]); at--) {
            best[at] = best[at - 1];
            ids[at] = ids[at - 1];
        }
        best[at] = value;
        ids[at] = i;
    }
}

/* x [t, d] float32 or bf16; weight [e, d] bf16, d % 32 == 0; bias [e] float32 or NULL; tid2eid [vocab, k] int64 with
 * token_ids [t] int64 for hash routing, else NULL and the top k (<= e) of scores + bias. Writes ids [t, k] int64 and
 * weights [t, k] float32. Returns 0, -1 when out of memory, -2 for a token or table entry out of range (where the
 * twin's indexing raises). */
int moe_gate(const void *x, int x_bf16, int64_t t_count, int64_t d, const uint16_t *weight, int64_t e,
             const float *bias, const int64_t *tid2eid, int64_t vocab, const int64_t *token_ids, int score_func,
             int64_t k, float route_scale, int64_t *ids, float *weights) {
    if (t_count <= 0) return 0; /* also shows GCC that xf is written before bf16_linear reads it */
    float *xf = malloc((size_t)(t_count * (d + e)) * sizeof(float));
    if (!xf) return -1;
    float *scores = xf + t_count * d;
    for (int64_t t = 0; t < t_count; t++) load_row(x, x_bf16, t, d, xf + t * d);
    bf16_linear(xf, t_count, d, weight, e, 0, e, 0, scores);
    int status = 0;
    for (int64_t t = 0; t < t_count && !status; t++) {
        float *s = scores + t * e, *w = weights + t * k, sum = 0.0f;
        int64_t *id = ids + t * k;
        score_row(s, e, score_func);
        if (!tid2eid) {
            top_k(s, bias, e, k, id);
        } else if (token_ids[t] >= 0 && token_ids[t] < vocab) {
            memcpy(id, tid2eid + token_ids[t] * k, (size_t)k * sizeof(int64_t));
        } else {
            status = -2;
        }
        for (int64_t j = 0; j < k && !status; j++) {
            if (id[j] < 0 || id[j] >= e) status = -2;
            else sum += w[j] = s[id[j]];
        }
        for (int64_t j = 0; j < k && !status; j++)
            w[j] = (score_func == SOFTMAX ? w[j] : w[j] / (sum + 1e-20f)) * route_scale;
    }
    free(xf);
    return status;
}
