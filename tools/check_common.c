#include "check_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/io/weights.h"

lp_status lp_check_weights_source(const lp_check_ctx *c, const lp_tensor_file *golden, const char *probe,
                                  lp_tensor_file **opened, const lp_tensor_file **src, const char **prefix) {
    *opened = NULL;
    *src = golden;
    *prefix = "w.";
    if (!c->weights_path) return LP_OK;
    LP_TRY(lp_tensor_file_open(c->weights_path, opened));
    *src = *opened;
    *prefix = lp_tensor_file_find(*opened, probe) ? "w." : "";
    return LP_OK;
}

lp_status lp_check_dit_model(lp_check_ctx *c, const lp_tensor_file *w_source, lp_dit_setup *su) {
    memset(su, 0, sizeof *su);
    int64_t heads, text_len, fpc, lh, lw;
    LP_TRY(lp_check_meta_int(w_source, "num_heads", &heads));
    LP_TRY(lp_check_meta_int(w_source, "text_len", &text_len));
    LP_TRY(lp_check_meta_int(w_source, "frames_per_chunk", &fpc));
    LP_TRY(lp_check_meta_int(w_source, "latent_h", &lh));
    LP_TRY(lp_check_meta_int(w_source, "latent_w", &lw));
    su->frames_per_chunk = (int)fpc;
    su->latent_h = (int)lh;
    su->latent_w = (int)lw;
    LP_TRY(lp_backend_create(c->backend, c->threads, &su->be));
    const char *prefix;
    if (c->weights_path) LP_TRY(lp_weights_open(c->weights_path, LP_COMPONENT_DIT, &su->weights_file, &prefix));
    else LP_TRY(lp_weights_map(w_source, LP_COMPONENT_DIT, &su->weights_file, &prefix));
    const lp_tensor_file *wf = su->weights_file ? su->weights_file : w_source;
    return lp_dit_load(wf, prefix, (int)heads, (int)text_len, su->be, &su->dit);
}

lp_status lp_check_dit_cache(lp_dit_setup *su, const lp_tensor_file *src, const lp_dit_cache_config *cc) {
    LP_TRY(lp_dit_cache_create(su->dit, cc, &su->cache));
    const lp_tensor *ctx;
    LP_TRY(lp_tensor_file_get(src, "in.context", &ctx));
    const lp_dit_config *cfg = lp_dit_get_config(su->dit);
    if (ctx->ndim != 2 || ctx->shape[1] != cfg->text_dim)
        return lp_fail(LP_ERR_SHAPE, "in.context must be [L, %d]", cfg->text_dim);
    float *buf = malloc((size_t)lp_tensor_numel(ctx) * sizeof *buf + 1);
    if (!buf) return lp_fail(LP_ERR_NOMEM, "out of memory");
    lp_status s = lp_tensor_read_f32(ctx, 0, lp_tensor_numel(ctx), buf);
    if (s == LP_OK) s = lp_dit_set_prompt(su->dit, su->cache, buf, (int)ctx->shape[0]);
    free(buf);
    return s;
}

lp_status lp_check_dit_setup(lp_check_ctx *c, const lp_tensor_file *g, lp_dit_setup *su) {
    int64_t cap, local, sink;
    lp_status s = lp_check_dit_model(c, g, su);
    if (s == LP_OK) s = lp_check_meta_int(g, "kv_cache_tokens", &cap);
    if (s == LP_OK) s = lp_check_meta_int(g, "local_attn_size", &local);
    if (s == LP_OK) s = lp_check_meta_int(g, "sink_size", &sink);
    lp_dit_cache_config cc = {.latent_h = su->latent_h,
                              .latent_w = su->latent_w,
                              .capacity = cap,
                              .local_attn = (int)local,
                              .sink_frames = (int)sink,
                              .max_frames = su->frames_per_chunk};
    if (s == LP_OK) s = lp_check_dit_cache(su, g, &cc);
    if (s != LP_OK) lp_check_dit_teardown(su);
    return s;
}

void lp_check_dit_teardown(lp_dit_setup *su) {
    lp_dit_cache_free(su->cache);
    lp_dit_free(su->dit);
    lp_tensor_file_close(su->weights_file);
    lp_backend_destroy(su->be);
    memset(su, 0, sizeof *su);
}

lp_status lp_check_denoise_plan(const lp_tensor_file *g, float context_t, lp_denoise_plan *plan) {
    double steps_d[LP_MAX_STEPS], shift, warped[LP_MAX_STEPS];
    int n, nw;
    LP_TRY(lp_check_meta_doubles(g, "denoising_step_list", steps_d, LP_MAX_STEPS, &n));
    LP_TRY(lp_check_meta_double(g, "timestep_shift", &shift));
    int steps[LP_MAX_STEPS];
    for (int i = 0; i < n; i++) steps[i] = (int)steps_d[i];
    LP_TRY(lp_denoise_plan_init(plan, steps, n, (float)shift, context_t));
    if (lp_tensor_file_meta(g, "warped_timesteps") &&
        lp_check_meta_doubles(g, "warped_timesteps", warped, LP_MAX_STEPS, &nw) == LP_OK) {
        for (int i = 0; i < n && i < nw; i++)
            if ((float)warped[i] != plan->timesteps[i])
                return lp_fail(LP_ERR_FORMAT, "warped timestep %d: computed %.9g, the file says %.9g", i,
                               plan->timesteps[i], warped[i]);
    }
    return LP_OK;
}
