/* `lipar check` for kind sf_dit_t2v: Self-Forcing's streaming T2V denoising
 * loop with noise injected from the file, comparing every step's flow, x0 and
 * re-noised x_t, each chunk's final x0 and its context-pass flow. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/model/wan_dit.h"
#include "../src/pipeline/denoise.h"
#include "check.h"
#include "check_common.h"

typedef struct {
    const lp_tensor_file *g;
} golden_noise;

static lp_status noise_from_golden(void *ctx, int chunk, int step, float *eps, int64_t n) {
    golden_noise *gn = ctx;
    char name[96];
    snprintf(name, sizeof name, "in.chunk%d.step%d.eps", chunk, step);
    const lp_tensor *t;
    LP_TRY(lp_tensor_file_get(gn->g, name, &t));
    if (lp_tensor_numel(t) != n) return lp_fail(LP_ERR_SHAPE, "'%s' has the wrong size", name);
    return lp_tensor_read_f32(t, 0, n, eps);
}

typedef struct {
    lp_check_ctx *c;
    const lp_tensor_file *g;
} observer;

static void compare_step(void *ctx, int chunk, int step, const char *what, const float *data, int64_t n) {
    observer *o = ctx;
    char name[96];
    if (step < 0) snprintf(name, sizeof name, "out.chunk%d.%s", chunk, what);
    else snprintf(name, sizeof name, "out.chunk%d.step%d.%s", chunk, step, what);
    const lp_tensor *ref = lp_tensor_file_find(o->g, name);
    if (ref) lp_check_compare(o->c, ref, data, n);
}

lp_status check_sf_dit_t2v(lp_check_ctx *c, const lp_tensor_file *g) {
    lp_dit_setup su;
    LP_TRY(lp_check_dit_setup(c, g, &su));
    lp_status s = LP_OK;
    int64_t chunks;
    double ctx_t = 0;
    if ((s = lp_check_meta_int(g, "chunks", &chunks)) != LP_OK) goto out;
    if ((s = lp_check_meta_double(g, "context_noise", &ctx_t)) != LP_OK) goto out;
    lp_denoise_plan plan;
    if ((s = lp_check_denoise_plan(g, (float)ctx_t, &plan)) != LP_OK) goto out;
    golden_noise gn = {g};
    observer ob = {c, g};
    int F = su.frames_per_chunk;
    int64_t n = lp_dit_latent_elems(su.dit, su.cache, F);
    float *x = malloc((size_t)n * sizeof *x);
    if (!x) {
        s = lp_fail(LP_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int b = 0; b < chunks && s == LP_OK; b++) {
        char name[64];
        snprintf(name, sizeof name, "in.chunk%d.noise", b);
        const lp_tensor *t;
        if ((s = lp_tensor_file_get(g, name, &t)) != LP_OK) break;
        if (lp_tensor_numel(t) != n) {
            s = lp_fail(LP_ERR_SHAPE, "'%s' does not hold %d latent frames of the grid", name, F);
            break;
        }
        if ((s = lp_tensor_read_f32(t, 0, n, x)) != LP_OK) break;
        s = lp_denoise_chunk(su.dit, su.cache, &plan, b, b * F, F, x, noise_from_golden, &gn, compare_step, &ob);
        if (s == LP_OK) compare_step(&ob, b, -1, "final", x, n);
    }
    free(x);
out:
    lp_check_dit_teardown(&su);
    return s;
}
