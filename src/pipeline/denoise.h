/* Self-Forcing's few-step denoising of one chunk (spec/MODEL.md "Per chunk"):
 * for each step i, v = DiT(x, t_i); x0 = x − σ_i·v; if not last,
 * x = (1−σ_{i+1})·x0 + σ_{i+1}·ε_i. Then the context pass DiT(x0, t_ctx) writes
 * clean K/V; its output is discarded (but shown to the observer). */
#ifndef LP_DENOISE_H
#define LP_DENOISE_H

#include "../model/wan_dit.h"
#include "scheduler.h"

#define LP_MAX_STEPS 16

typedef struct {
    int n_steps;
    float timesteps[LP_MAX_STEPS]; /* warped t_i */
    float sigmas[LP_MAX_STEPS];    /* σ_i */
    float context_t;               /* timestep of the context pass (0) */
} lp_denoise_plan;

/* Builds the plan from a denoising_step_list (entries 0..1000) and shift. */
lp_status lp_denoise_plan_init(lp_denoise_plan *p, const int *step_list, int n_steps, float shift, float context_t);

/* Supplies noise: the ε drawn after step `step` of chunk `chunk` (n floats). */
typedef lp_status (*lp_noise_fn)(void *ctx, int chunk, int step, float *eps, int64_t n);

/* Sees the intermediate tensors ("flow", "x0", "x_t" per step; "context_flow"). */
typedef void (*lp_denoise_observer)(void *ctx, int chunk, int step, const char *what, const float *data, int64_t n);

/* Noise from the counter-based PRNG: stream = chunk·LP_MAX_STEPS + step + 1
 * under the seed (step −1, stream chunk·LP_MAX_STEPS, is the initial noise).
 * With a pool the elements are drawn in parallel (the same values: each
 * element depends only on its counter). */
typedef struct {
    uint64_t seed;
    lp_pool *pool; /* NULL: on the calling thread */
} lp_prng_noise;
lp_status lp_prng_noise_fn(void *ctx, int chunk, int step, float *eps, int64_t n);

/* Denoises chunk `chunk` (frames start_frame .. start_frame+F−1) in place:
 * x [F, C, H, W] holds the starting noise and receives the final x0. */
lp_status lp_denoise_chunk(lp_dit *m, lp_dit_cache *c, const lp_denoise_plan *p, int chunk, int start_frame, int F,
                           float *x, lp_noise_fn noise, void *noise_ctx, lp_denoise_observer obs, void *obs_ctx);

#endif
