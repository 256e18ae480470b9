#include "taehv_random.h"

#include <math.h>
#include <stdio.h>

#include "../base/half.h"

typedef struct {
    lp_tensor_file *f;
    uint64_t seed;
} gen;

/* conv weight [out, in, k, k] (+ bias [out]) uniform in ±gain/√fan_in */
static lp_status conv(gen *g, const char *name, int out, int in, int k, int bias) {
    char full[96];
    int64_t ws[4] = {out, in, k, k}, bs[1] = {out};
    snprintf(full, sizeof full, "%s.weight", name);
    LP_TRY(lp_tensor_builder_add_uniform(g->f, full, LP_F16, 4, ws, 1.5f / sqrtf((float)(in * k * k)), g->seed++));
    if (!bias) return LP_OK;
    snprintf(full, sizeof full, "%s.bias", name);
    return lp_tensor_builder_add_uniform(g->f, full, LP_F16, 1, bs, 0.05f, g->seed++);
}

/* MemBlock(n, n): conv.0 [n, 2n], conv.2, conv.4 [n, n] (identity skip) */
static lp_status memblock(gen *g, const char *part, int index, int n) {
    char name[64];
    snprintf(name, sizeof name, "%s.%d.conv.0", part, index);
    LP_TRY(conv(g, name, n, 2 * n, 3, 1));
    snprintf(name, sizeof name, "%s.%d.conv.2", part, index);
    LP_TRY(conv(g, name, n, n, 3, 1));
    snprintf(name, sizeof name, "%s.%d.conv.4", part, index);
    return conv(g, name, n, n, 3, 1);
}

/* The F16 data of tensor name, zero-filled, for rewriting in place (the
 * builder owns it). */
static uint16_t *zeroed(lp_tensor_file *f, const char *name, int64_t *n) {
    const lp_tensor *t = lp_tensor_file_find(f, name);
    if (!t) return NULL;
    *n = lp_tensor_numel(t);
    uint16_t *d = (uint16_t *)t->data;
    for (int64_t i = 0; i < *n; i++) d[i] = 0;
    return d;
}

/* The pooling encoder of lp_taehv_random_config (weights [out, in, k, k]). */
static lp_status pooling_encoder(lp_tensor_file *f, const lp_taehv_random_config *c) {
    int e = c->enc_width, L = c->latent_channels;
    int64_t n;
    char name[64];
    uint16_t *w = zeroed(f, "encoder.0.weight", &n), *b = zeroed(f, "encoder.0.bias", &n);
    if (!w || !b || e < 3) return lp_fail(LP_ERR_ARG, "pooling encoder: width %d < 3 or tensors missing", e);
    for (int ch = 0; ch < 3; ch++) w[((ch * 3 + ch) * 3 + 1) * 3 + 1] = lp_f32_to_f16(1.0f); /* colour ch passes */
    static const int tpool_stride[3] = {2, 2, 1};
    for (int st = 0; st < 3; st++) {
        int base = 2 + 5 * st, k = tpool_stride[st];
        snprintf(name, sizeof name, "encoder.%d.conv.weight", base); /* TPool: mean over its k frames */
        if (!(w = zeroed(f, name, &n))) return lp_fail(LP_ERR_MISSING, "pooling encoder: %s", name);
        for (int ch = 0; ch < 3; ch++)
            for (int j = 0; j < k; j++) w[ch * e * k + j * e + ch] = lp_f32_to_f16(1.0f / (float)k);
        snprintf(name, sizeof name, "encoder.%d.weight", base + 1); /* stride-2 conv: mean of each 2×2 */
        if (!(w = zeroed(f, name, &n))) return lp_fail(LP_ERR_MISSING, "pooling encoder: %s", name);
        for (int ch = 0; ch < 3; ch++)
            for (int dy = 1; dy <= 2; dy++)
                for (int dx = 1; dx <= 2; dx++) w[((ch * e + ch) * 3 + dy) * 3 + dx] = lp_f32_to_f16(0.25f);
        for (int m = 0; m < 3; m++) /* MemBlocks: every conv zero, so relu(0 + x) = x */
            for (int cv = 0; cv <= 4; cv += 2) {
                snprintf(name, sizeof name, "encoder.%d.conv.%d.weight", base + 2 + m, cv);
                zeroed(f, name, &n);
                snprintf(name, sizeof name, "encoder.%d.conv.%d.bias", base + 2 + m, cv);
                zeroed(f, name, &n);
            }
    }
    w = zeroed(f, "encoder.17.weight", &n);
    b = zeroed(f, "encoder.17.bias", &n);
    if (!w || !b) return lp_fail(LP_ERR_MISSING, "pooling encoder: encoder.17");
    for (int l = 0; l < L; l++) { /* latent l = gain · Σ A[l][ch] · (colour ch − 0.5), A = I for l < 3 */
        float bias = 0;
        for (int ch = 0; ch < 3; ch++) {
            float a = l < 3 ? (l == ch ? 1.0f : 0.0f) : sinf(1.7f * (float)(l * 3 + ch) + 0.3f);
            w[((l * e + ch) * 3 + 1) * 3 + 1] = lp_f32_to_f16(c->pooling_gain * a);
            bias -= 0.5f * c->pooling_gain * a;
        }
        b[l] = lp_f32_to_f16(bias);
    }
    return LP_OK;
}

static lp_status build(gen *g, const lp_taehv_random_config *c) {
    int e = c->enc_width;
    char name[64];
    /* encoder: conv, ReLU, 3 × [TPool(e, 2|2|1), conv s2, 3 MemBlocks], conv to latents */
    LP_TRY(conv(g, "encoder.0", e, 3, 3, 1));
    static const int tpool_stride[3] = {2, 2, 1};
    for (int s = 0; s < 3; s++) {
        int base = 2 + 5 * s;
        snprintf(name, sizeof name, "encoder.%d.conv", base);
        LP_TRY(conv(g, name, e, e * tpool_stride[s], 1, 0));
        snprintf(name, sizeof name, "encoder.%d", base + 1);
        LP_TRY(conv(g, name, e, e, 3, 0));
        for (int m = 0; m < 3; m++) LP_TRY(memblock(g, "encoder", base + 2 + m, e));
    }
    LP_TRY(conv(g, "encoder.17", c->latent_channels, e, 3, 1));
    /* decoder: Clamp, conv, ReLU, 3 × [3 MemBlocks, Upsample, TGrow(n, 1|2|2), conv], ReLU, conv to RGB */
    const int *w = c->dec_width;
    LP_TRY(conv(g, "decoder.1", w[0], c->latent_channels, 3, 1));
    static const int tgrow_stride[3] = {1, 2, 2};
    for (int s = 0; s < 3; s++) {
        int base = 3 + 6 * s, n = w[s], next = s < 2 ? w[s + 1] : w[2];
        for (int m = 0; m < 3; m++) LP_TRY(memblock(g, "decoder", base + m, n));
        snprintf(name, sizeof name, "decoder.%d.conv", base + 4);
        LP_TRY(conv(g, name, n * tgrow_stride[s], n, 1, 0));
        snprintf(name, sizeof name, "decoder.%d", base + 5);
        LP_TRY(conv(g, name, next, n, 3, 0));
    }
    LP_TRY(conv(g, "decoder.22", 3, w[2], 3, 1));
    LP_TRY(lp_tensor_builder_finish(g->f)); /* sorted: findable by name */
    return c->pooling_encoder ? pooling_encoder(g->f, c) : LP_OK;
}

lp_status lp_taehv_random_weights(const lp_taehv_random_config *c, uint64_t seed, lp_tensor_file **out) {
    LP_TRY(lp_tensor_builder_create("random TAEHV", out));
    gen g = {*out, seed};
    lp_status s = build(&g, c);
    if (s != LP_OK) {
        lp_tensor_file_close(*out);
        *out = NULL;
    }
    return s;
}
