#include "scheduler.h"

#include <math.h>

void lp_flow_schedule_init(lp_flow_schedule *s, float shift) {
    s->shift = shift;
    /* torch.linspace(1, 0, 1001) in fp32: the first half counts up from the
     * start, the second half down from the end, with step (end−start)/(n−1) */
    const int steps = LP_FLOW_TRAIN_STEPS + 1, halfway = steps / 2;
    const float start = 1.0f, end = 0.0f, step = (end - start) / (float)(steps - 1);
    for (int i = 0; i < LP_FLOW_TRAIN_STEPS; i++) {
        float u = i < halfway ? start + step * (float)i : end - step * (float)(steps - i - 1);
        float num = shift * u, den = 1.0f + (shift - 1.0f) * u;
        s->sigmas[i] = num / den;
        s->timesteps[i] = s->sigmas[i] * 1000.0f;
    }
}

float lp_flow_warp(const lp_flow_schedule *s, int n) {
    if (n < 0 || n > LP_FLOW_TRAIN_STEPS) return -1.0f;
    int i = LP_FLOW_TRAIN_STEPS - n;
    return i == LP_FLOW_TRAIN_STEPS ? 0.0f : s->timesteps[i];
}

float lp_flow_sigma(const lp_flow_schedule *s, float t) {
    int best = 0;
    double bd = INFINITY;
    for (int i = 0; i < LP_FLOW_TRAIN_STEPS; i++) {
        double d = fabs((double)s->timesteps[i] - (double)t);
        if (d < bd) {
            bd = d;
            best = i;
        }
    }
    return s->sigmas[best];
}

void lp_flow_x0(float *x0, const float *xt, const float *v, float sigma, int64_t n) {
    double sg = sigma;
    for (int64_t i = 0; i < n; i++) x0[i] = (float)((double)xt[i] - sg * (double)v[i]);
}

void lp_flow_add_noise(float *x, const float *x0, const float *eps, float sigma, int64_t n) {
    float keep = 1.0f - sigma;
    for (int64_t i = 0; i < n; i++) x[i] = keep * x0[i] + sigma * eps[i];
}
