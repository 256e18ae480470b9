/* Flow-matching schedule of Self-Forcing / Wan (spec/MODEL.md "Scheduler"),
 * built in fp32 exactly as upstream: σ_i = s·u/(1+(s−1)·u) for
 * u = linspace(1, 0, 1001)[:-1], t_i = 1000·σ_i. */
#ifndef LP_SCHEDULER_H
#define LP_SCHEDULER_H

#include <stdint.h>

#define LP_FLOW_TRAIN_STEPS 1000

typedef struct {
    float shift;
    float sigmas[LP_FLOW_TRAIN_STEPS];
    float timesteps[LP_FLOW_TRAIN_STEPS];
} lp_flow_schedule;

void lp_flow_schedule_init(lp_flow_schedule *s, float shift);
/* The warp of a denoising_step_list entry n (0 ≤ n ≤ 1000): t[1000 − n], with
 * t[1000] = 0. Returns -1 for n out of range. */
float lp_flow_warp(const lp_flow_schedule *s, int n);
/* σ of the timestep nearest to t (the first on ties, like argmin). */
float lp_flow_sigma(const lp_flow_schedule *s, float t);
/* x0 = x_t − σ·v computed in fp64, stored fp32. */
void lp_flow_x0(float *x0, const float *xt, const float *v, float sigma, int64_t n);
/* x = (1 − σ)·x0 + σ·eps in fp32 (add_noise; also the SDEdit start). */
void lp_flow_add_noise(float *x, const float *x0, const float *eps, float sigma, int64_t n);

#endif
