#include "wan_dit_random.h"

#include <math.h>
#include <stdio.h>

typedef struct {
    lp_tensor_file *f;
    lp_dtype dtype;
    uint64_t seed;
} gen;

static lp_status tensor(gen *g, const char *name, int ndim, const int64_t *shape, float scale, int is_weight) {
    return lp_tensor_builder_add_uniform(g->f, name, is_weight ? g->dtype : LP_F32, ndim, shape, scale, g->seed++);
}

static lp_status linear(gen *g, const char *base, int64_t out, int64_t in) {
    char name[160];
    int64_t ws[2] = {out, in}, bs[1] = {out};
    snprintf(name, sizeof name, "%s.weight", base);
    LP_TRY(tensor(g, name, 2, ws, 1.0f / sqrtf((float)in), 1));
    snprintf(name, sizeof name, "%s.bias", base);
    return tensor(g, name, 1, bs, 0.02f, 0);
}

/* 1 + uniform(±0.1): random values around one, written as f32 */
static lp_status around_one(gen *g, const char *name, int64_t n) {
    int64_t s[1] = {n};
    LP_TRY(tensor(g, name, 1, s, 0.1f, 0));
    const lp_tensor *t = lp_tensor_file_at(g->f, lp_tensor_file_count(g->f) - 1);
    float *v = (float *)t->data;
    for (int64_t i = 0; i < n; i++) v[i] += 1.0f;
    return LP_OK;
}

static lp_status build(gen *g, const lp_dit_config *c) {
    int64_t D = c->dim;
    int64_t pe[5] = {D, c->in_dim, 1, 2, 2}, v1[1] = {D}, m6[3] = {1, 6, D}, m2[3] = {1, 2, D};
    LP_TRY(tensor(g, "patch_embedding.weight", 5, pe, 1.0f / sqrtf((float)(c->in_dim * 4)), 1));
    LP_TRY(tensor(g, "patch_embedding.bias", 1, v1, 0.02f, 0));
    LP_TRY(linear(g, "text_embedding.0", D, c->text_dim));
    LP_TRY(linear(g, "text_embedding.2", D, D));
    LP_TRY(linear(g, "time_embedding.0", D, c->freq_dim));
    LP_TRY(linear(g, "time_embedding.2", D, D));
    LP_TRY(linear(g, "time_projection.1", 6 * D, D));
    LP_TRY(linear(g, "head.head", (int64_t)c->out_dim * 4, D));
    LP_TRY(tensor(g, "head.modulation", 3, m2, 0.1f, 0));
    for (int i = 0; i < c->num_layers; i++) {
        char name[128];
        static const char *const lin[] = {"self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                                          "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o"};
        snprintf(name, sizeof name, "blocks.%d.modulation", i);
        LP_TRY(tensor(g, name, 3, m6, 0.1f, 0));
        for (size_t k = 0; k < sizeof lin / sizeof *lin; k++) {
            snprintf(name, sizeof name, "blocks.%d.%s", i, lin[k]);
            LP_TRY(linear(g, name, D, D));
        }
        static const char *const norms[] = {"self_attn.norm_q", "self_attn.norm_k", "cross_attn.norm_q",
                                            "cross_attn.norm_k", "norm3"};
        for (size_t k = 0; k < sizeof norms / sizeof *norms; k++) {
            snprintf(name, sizeof name, "blocks.%d.%s.weight", i, norms[k]);
            LP_TRY(around_one(g, name, D));
        }
        snprintf(name, sizeof name, "blocks.%d.norm3.bias", i);
        LP_TRY(tensor(g, name, 1, v1, 0.02f, 0));
        snprintf(name, sizeof name, "blocks.%d.ffn.0", i);
        LP_TRY(linear(g, name, c->ffn_dim, D));
        snprintf(name, sizeof name, "blocks.%d.ffn.2", i);
        LP_TRY(linear(g, name, D, c->ffn_dim));
    }
    return lp_tensor_builder_finish(g->f);
}

lp_status lp_dit_random_weights(const lp_dit_config *cfg, lp_dtype dtype, uint64_t seed, lp_tensor_file **out) {
    LP_TRY(lp_tensor_builder_create("random DiT", out));
    gen g = {*out, dtype, seed};
    lp_status s = build(&g, cfg);
    if (s != LP_OK) {
        lp_tensor_file_close(*out);
        *out = NULL;
    }
    return s;
}
