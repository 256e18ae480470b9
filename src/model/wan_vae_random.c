#include "wan_vae_random.h"

#include <math.h>
#include <stdio.h>

typedef struct {
    lp_tensor_file *f;
    uint64_t seed; /* the next tensor's seed */
} gen;

/* "<base><suffix>" into buf. */
static const char *cat(char *buf, size_t len, const char *base, const char *suffix) {
    snprintf(buf, len, "%s%s", base, suffix);
    return buf;
}

/* A convolution base.weight [cout, cin, kt, kh, kw] (kt == 0: a Conv2d's
 * [cout, cin, kh, kw]) uniform in ±√3/√fan_in, and base.bias [cout]. */
static lp_status conv(gen *g, const char *base, int cout, int cin, int kt, int kh, int kw) {
    char name[256];
    int64_t shape5[5] = {cout, cin, kt, kh, kw}, shape4[4] = {cout, cin, kh, kw}, bshape[1] = {cout};
    float fan_in = (float)cin * (float)(kt ? kt : 1) * (float)kh * (float)kw;
    LP_TRY(lp_tensor_builder_add_uniform(g->f, cat(name, sizeof name, base, ".weight"), LP_F32, kt ? 5 : 4,
                                         kt ? shape5 : shape4, sqrtf(3.0f / fan_in), g->seed++));
    return lp_tensor_builder_add_uniform(g->f, cat(name, sizeof name, base, ".bias"), LP_F32, 1, bshape, 0.02f,
                                         g->seed++);
}

/* An RMS_norm gamma 1 ± 0.1: [c,1,1,1] (videos) or [c,1,1] (images). */
static lp_status norm_gamma(gen *g, const char *name, int c, int images) {
    int64_t shape[4] = {c, 1, 1, 1};
    LP_TRY(lp_tensor_builder_add_uniform(g->f, name, LP_F32, images ? 3 : 4, shape, 0.1f, g->seed++));
    const lp_tensor *t = lp_tensor_file_at(g->f, lp_tensor_file_count(g->f) - 1); /* the one just added */
    float *v = (float *)t->data;
    for (int i = 0; i < c; i++) v[i] += 1.0f;
    return LP_OK;
}

/* ResidualBlock(cin, cout): residual.0 RMS, .2 conv 3x3x3, .3 RMS, .6 conv
 * 3x3x3, and a 1x1x1 shortcut when the channels change. */
static lp_status res(gen *g, const char *base, int cin, int cout) {
    char name[256];
    LP_TRY(norm_gamma(g, cat(name, sizeof name, base, ".residual.0.gamma"), cin, 0));
    LP_TRY(conv(g, cat(name, sizeof name, base, ".residual.2"), cout, cin, 3, 3, 3));
    LP_TRY(norm_gamma(g, cat(name, sizeof name, base, ".residual.3.gamma"), cout, 0));
    LP_TRY(conv(g, cat(name, sizeof name, base, ".residual.6"), cout, cout, 3, 3, 3));
    if (cin != cout) LP_TRY(conv(g, cat(name, sizeof name, base, ".shortcut"), cout, cin, 1, 1, 1));
    return LP_OK;
}

/* AttentionBlock(c): norm (image RMS), to_qkv and proj (1x1 Conv2d). */
static lp_status attn(gen *g, const char *base, int c) {
    char name[256];
    LP_TRY(norm_gamma(g, cat(name, sizeof name, base, ".norm.gamma"), c, 1));
    LP_TRY(conv(g, cat(name, sizeof name, base, ".to_qkv"), 3 * c, c, 0, 1, 1));
    return conv(g, cat(name, sizeof name, base, ".proj"), c, c, 0, 1, 1);
}

/* Resample(c): resample.1 Conv2d 3x3 (c -> c, or c -> c/2 when up), then for
 * the 3d modes time_conv (3,1,1) (c -> c down, c -> 2c up). */
static lp_status resample(gen *g, const char *base, int c, int up, int temporal) {
    char name[256];
    LP_TRY(conv(g, cat(name, sizeof name, base, ".resample.1"), up ? c / 2 : c, c, 0, 3, 3));
    if (temporal) LP_TRY(conv(g, cat(name, sizeof name, base, ".time_conv"), up ? 2 * c : c, c, 3, 1, 1));
    return LP_OK;
}

/* The tensors of lp_wan_vae_load, in the order of its load_all. */
static lp_status build(gen *g, const lp_wan_vae_config *cfg) {
    int dim = cfg->dim, z = cfg->z_dim, ns = cfg->nstages, nrb = cfg->num_res_blocks;
    char base[64];

    /* encoder: conv1, per stage nrb res blocks then a downsample (not after
     * the last), middle Res/Attn/Res, head */
    LP_TRY(conv(g, "encoder.conv1", dim, 3, 3, 3, 3));
    int cin = dim, c = dim, idx = 0;
    for (int s = 0; s < ns; s++) {
        c = dim * cfg->dim_mult[s];
        for (int b = 0; b < nrb; b++, cin = c) {
            snprintf(base, sizeof base, "encoder.downsamples.%d", idx++);
            LP_TRY(res(g, base, cin, c));
        }
        if (s + 1 < ns) {
            snprintf(base, sizeof base, "encoder.downsamples.%d", idx++);
            LP_TRY(resample(g, base, c, 0, cfg->temporal_down[s] != 0));
        }
    }
    LP_TRY(res(g, "encoder.middle.0", c, c));
    LP_TRY(attn(g, "encoder.middle.1", c));
    LP_TRY(res(g, "encoder.middle.2", c, c));
    LP_TRY(norm_gamma(g, "encoder.head.0.gamma", c, 0));
    LP_TRY(conv(g, "encoder.head.2", 2 * z, c, 3, 3, 3));

    /* the top-level 1x1x1 convs: moments (mu, log_var) and the decoder's input */
    LP_TRY(conv(g, "conv1", 2 * z, 2 * z, 1, 1, 1));
    LP_TRY(conv(g, "conv2", z, z, 1, 1, 1));

    /* decoder: conv1, middle, the stages in reverse with nrb + 1 res blocks
     * each and an upsample after all but the last (temporal flags reversed);
     * the stage after an upsample starts from its halved channels */
    c = dim * cfg->dim_mult[ns - 1];
    LP_TRY(conv(g, "decoder.conv1", c, z, 3, 3, 3));
    LP_TRY(res(g, "decoder.middle.0", c, c));
    LP_TRY(attn(g, "decoder.middle.1", c));
    LP_TRY(res(g, "decoder.middle.2", c, c));
    cin = c;
    idx = 0;
    for (int i = 0; i < ns; i++) {
        if (i > 0) cin /= 2;
        c = dim * cfg->dim_mult[ns - 1 - i];
        for (int b = 0; b <= nrb; b++, cin = c) {
            snprintf(base, sizeof base, "decoder.upsamples.%d", idx++);
            LP_TRY(res(g, base, cin, c));
        }
        if (i + 1 < ns) {
            snprintf(base, sizeof base, "decoder.upsamples.%d", idx++);
            LP_TRY(resample(g, base, c, 1, cfg->temporal_down[ns - 2 - i] != 0));
        }
    }
    LP_TRY(norm_gamma(g, "decoder.head.0.gamma", c, 0));
    LP_TRY(conv(g, "decoder.head.2", 3, c, 3, 3, 3));
    return lp_tensor_builder_finish(g->f); /* sorted: findable by name */
}

lp_status lp_wan_vae_random_weights(const lp_wan_vae_config *c, uint64_t seed, lp_tensor_file **out) {
    *out = NULL;
    int ok = c->dim >= 1 && c->z_dim >= 1 && c->nstages >= 1 && c->nstages <= LP_WAN_VAE_MAX_STAGES &&
             c->num_res_blocks >= 1;
    for (int s = 0; ok && s < c->nstages; s++) ok = c->dim_mult[s] >= 1 && c->dim_mult[s] <= 65536 / c->dim;
    if (!ok)
        return lp_fail(LP_ERR_ARG, "wan_vae random weights: dim %d, z_dim %d, %d stages (1..%d), %d res blocks, "
                       "or a stage wider than 65536 channels", c->dim, c->z_dim, c->nstages, LP_WAN_VAE_MAX_STAGES,
                       c->num_res_blocks);
    LP_TRY(lp_tensor_builder_create("random Wan VAE", out));
    gen g = {*out, seed};
    lp_status s = build(&g, c);
    if (s != LP_OK) {
        lp_tensor_file_close(*out);
        *out = NULL;
    }
    return s;
}
