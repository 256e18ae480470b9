#include "taehv_random.h"

#include <math.h>
#include <stdio.h>

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
    return lp_tensor_builder_finish(g->f);
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
