/* `lipar check` for kind lipar_edit_output: the whole LIPAR editing loop of the
 * reference on the inputs of <dir>/<prefix>lipar_edit_inputs.safetensors (or
 * --inputs), with the case's flags from the output file's metadata, comparing
 * out.x0 (the final x0 of every chunk). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/pipeline/edit.h"
#include "../src/prune/mask.h"
#include "check.h"
#include "check_common.h"

static lp_status meta_bool(const lp_tensor_file *g, const char *key, int *out) {
    const char *v = lp_tensor_file_meta(g, key);
    if (!v) return lp_fail(LP_ERR_MISSING, "%s: metadata '%s' is missing", lp_tensor_file_path(g), key);
    *out = !strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "1");
    return LP_OK;
}

/* The case's strategy from the reference's flags (golden/README.md). */
static lp_status case_strategy(const lp_tensor_file *g, lp_prune_strategy *s, int *full_cache) {
    int prune, approx, dup;
    LP_TRY(meta_bool(g, "is_prune", &prune));
    LP_TRY(meta_bool(g, "m_approx", &approx));
    LP_TRY(meta_bool(g, "n_aware_dup", &dup));
    const char *trim = lp_tensor_file_meta(g, "trim_kv");
    *full_cache = !trim || !strncmp(trim, "none", 4);
    if (!prune) *s = LP_PRUNE_NONE;
    else if (!approx) *s = LP_PRUNE_DIRECT;
    else *s = dup ? LP_PRUNE_LIPAR : LP_PRUNE_MDEG;
    if (prune && approx && *full_cache)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: recovery without the sink + window cache is not a reference case",
                       lp_tensor_file_path(g));
    return LP_OK;
}

typedef struct {
    const lp_tensor_file *inputs;
    int per_chunk;
} golden_eps;

/* in.eps.k: the re-noise draws in call order, (steps − 1) per chunk */
static lp_status eps_from_golden(void *ctx, int chunk, int step, float *eps, int64_t n) {
    golden_eps *ge = ctx;
    char name[64];
    snprintf(name, sizeof name, "in.eps.%d", chunk * ge->per_chunk + step);
    const lp_tensor *t;
    LP_TRY(lp_tensor_file_get(ge->inputs, name, &t));
    if (lp_tensor_numel(t) != n) return lp_fail(LP_ERR_SHAPE, "'%s' does not hold one chunk", name);
    return lp_tensor_read_f32(t, 0, n, eps);
}

static lp_status inputs_path(const lp_check_ctx *c, char *buf, size_t len) {
    if (c->inputs_path) {
        snprintf(buf, len, "%s", c->inputs_path);
        return LP_OK;
    }
    const char *p = strstr(c->golden_path, "lipar_edit_");
    if (!p) return lp_fail(LP_ERR_ARG, "%s: cannot derive the inputs file name; pass --inputs", c->golden_path);
    snprintf(buf, len, "%.*slipar_edit_inputs.safetensors", (int)(p - c->golden_path), c->golden_path);
    return LP_OK;
}

lp_status check_lipar_edit_output(lp_check_ctx *c, const lp_tensor_file *g) {
    char path[4096];
    LP_TRY(inputs_path(c, path, sizeof path));
    lp_tensor_file *in;
    LP_TRY(lp_tensor_file_open(path, &in));
    lp_dit_setup su = {0};
    lp_edit_state st = {0};
    float *src = NULL, *x = NULL;
    uint8_t *keep = NULL;
    lp_status s;
    lp_prune_strategy strategy;
    int full_cache;
    int64_t frames;
    if ((s = case_strategy(g, &strategy, &full_cache)) != LP_OK) goto out;
    if ((s = lp_check_meta_int(in, "frames", &frames)) != LP_OK) goto out;
    if ((s = lp_check_dit_model(c, in, &su)) != LP_OK) goto out;
    int F = su.frames_per_chunk, H = su.latent_h, W = su.latent_w;
    if (frames % F) {
        s = lp_fail(LP_ERR_SHAPE, "%lld frames are not whole chunks of %d", (long long)frames, F);
        goto out;
    }
    lp_dit_cache_config cc;
    lp_edit_cache_defaults(strategy, full_cache, H, W, F, &cc);
    if ((s = lp_check_dit_cache(&su, in, &cc)) != LP_OK) goto out;
    lp_denoise_plan plan;
    if ((s = lp_check_denoise_plan(in, 0.0f, &plan)) != LP_OK) goto out;
    int64_t n_src;
    if ((s = lp_check_load_f32(in, "in.src_latents", &src, &n_src)) != LP_OK) goto out;
    int C = lp_dit_get_config(su.dit)->in_dim;
    int64_t frame = (int64_t)C * H * W, hw = (int64_t)(H / 2) * (W / 2);
    if (n_src != frames * frame) {
        s = lp_fail(LP_ERR_SHAPE, "in.src_latents does not hold %lld frames of [%d, %d, %d]", (long long)frames, C, H, W);
        goto out;
    }
    /* the keep-mask from the clean source latents with the paper defaults */
    keep = malloc((size_t)(frames * hw));
    if (!keep) {
        s = lp_fail(LP_ERR_NOMEM, "out of memory");
        goto out;
    }
    lp_mask_opts mo;
    lp_mask_opts_default(&mo);
    double kept;
    if ((s = lp_mask_compute(&mo, src, (int)frames, H, W, keep, NULL, &kept)) != LP_OK) goto out;
    printf("mask kept_fraction=%.7f (reference %s)\n", kept,
           lp_tensor_file_meta(g, "kept_fraction") ? lp_tensor_file_meta(g, "kept_fraction") : "?");
    /* SDEdit start over the whole clip: x_T = (1−σ0)·src + σ0·eps0 */
    int64_t ne;
    if ((s = lp_check_load_f32(in, "in.eps0", &x, &ne)) != LP_OK) goto out;
    if (ne != n_src) {
        s = lp_fail(LP_ERR_SHAPE, "in.eps0 and in.src_latents differ in size");
        goto out;
    }
    lp_flow_add_noise(x, src, x, plan.sigmas[0], ne);
    if ((s = lp_edit_state_init(&st, C, H, W)) != LP_OK) goto out;
    golden_eps ge = {in, plan.n_steps - 1};
    for (int b = 0; b < frames / F && s == LP_OK; b++)
        s = lp_edit_chunk(su.dit, su.cache, &st, strategy, &plan, b * F, F, x + b * F * frame, keep + b * F * hw, NULL,
                          eps_from_golden, &ge);
    if (s != LP_OK) goto out;
    const lp_tensor *ref;
    if ((s = lp_tensor_file_get(g, "out.x0", &ref)) != LP_OK) goto out;
    lp_check_compare(c, ref, x, ne);
out:
    lp_edit_state_free(&st);
    free(src);
    free(x);
    free(keep);
    lp_check_dit_teardown(&su);
    lp_tensor_file_close(in);
    return s;
}
