#include "denoise.h"

#include <stdlib.h>
#include <string.h>

#include "../base/prng.h"

lp_status lp_denoise_plan_init(lp_denoise_plan *p, const int *step_list, int n_steps, float shift, float context_t) {
    if (n_steps <= 0 || n_steps > LP_MAX_STEPS)
        return lp_fail(LP_ERR_ARG, "%d denoising steps (1..%d supported)", n_steps, LP_MAX_STEPS);
    lp_flow_schedule s;
    lp_flow_schedule_init(&s, shift);
    p->n_steps = n_steps;
    p->context_t = context_t;
    for (int i = 0; i < n_steps; i++) {
        if (step_list[i] < 1 || step_list[i] > LP_FLOW_TRAIN_STEPS)
            return lp_fail(LP_ERR_ARG, "denoising step %d is outside 1..%d", step_list[i], LP_FLOW_TRAIN_STEPS);
        p->timesteps[i] = lp_flow_warp(&s, step_list[i]);
        p->sigmas[i] = lp_flow_sigma(&s, p->timesteps[i]);
    }
    return LP_OK;
}

typedef struct {
    uint64_t seed, stream;
    float *eps;
} noise_job;

static void noise_range(void *ctx, int64_t b, int64_t e) {
    const noise_job *j = ctx;
    lp_prng_fill_normal(j->seed, j->stream, (uint64_t)b, j->eps + b, (size_t)(e - b));
}

lp_status lp_prng_noise_fn(void *ctx, int chunk, int step, float *eps, int64_t n) {
    const lp_prng_noise *pn = ctx;
    noise_job j = {pn->seed, (uint64_t)chunk * LP_MAX_STEPS + (uint64_t)(step + 1), eps};
    if (pn->pool) lp_parallel_for(pn->pool, n, noise_range, &j);
    else noise_range(&j, 0, n);
    return LP_OK;
}

lp_status lp_denoise_chunk(lp_dit *m, lp_dit_cache *c, const lp_denoise_plan *p, int chunk, int start_frame, int F,
                           float *x, lp_noise_fn noise, void *noise_ctx, lp_denoise_observer obs, void *obs_ctx) {
    int64_t n = lp_dit_latent_elems(m, c, F);
    float *v = malloc((size_t)n * sizeof *v), *x0 = malloc((size_t)n * sizeof *x0), *eps = malloc((size_t)n * sizeof *eps);
    float ts[64];
    lp_status s = LP_OK;
    if (!v || !x0 || !eps || F > 64) {
        s = lp_fail(LP_ERR_NOMEM, "out of memory denoising a chunk");
        goto out;
    }
    for (int i = 0; i < p->n_steps; i++) {
        for (int f = 0; f < F; f++) ts[f] = p->timesteps[i];
        lp_dit_call call = {.n_frames = F, .start_frame = start_frame, .timesteps = ts, .kv_policy = LP_KV_DENSE};
        if (obs && i > 0) obs(obs_ctx, chunk, i, "x_t", x, n);
        if ((s = lp_dit_forward(m, c, &call, x, v)) != LP_OK) goto out;
        lp_flow_x0(x0, x, v, p->sigmas[i], n);
        if (obs) {
            obs(obs_ctx, chunk, i, "flow", v, n);
            obs(obs_ctx, chunk, i, "x0", x0, n);
        }
        if (i + 1 < p->n_steps) {
            if ((s = noise(noise_ctx, chunk, i, eps, n)) != LP_OK) goto out;
            lp_flow_add_noise(x, x0, eps, p->sigmas[i + 1], n);
        }
    }
    memcpy(x, x0, (size_t)n * sizeof *x);
    for (int f = 0; f < F; f++) ts[f] = p->context_t;
    lp_dit_call ctx_call = {.n_frames = F, .start_frame = start_frame, .timesteps = ts, .kv_policy = LP_KV_DENSE};
    if ((s = lp_dit_forward(m, c, &ctx_call, x, v)) != LP_OK) goto out;
    if (obs) obs(obs_ctx, chunk, -1, "context_flow", v, n);
out:
    free(v);
    free(x0);
    free(eps);
    return s;
}
