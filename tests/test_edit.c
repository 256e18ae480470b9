/* The LIPAR editing loop beyond the golden cases (spec/LIPAR.md §2–4):
 * - `lipar` with thresholds so low that nothing is pruned (keep = d > τ)
 *   equals `none` (window cache) bit for bit;
 * - a chunk where nothing is kept still yields output: every frame restored
 *   from the previous chunk's last frame;
 * - the `mdeg` and `direct` strategies run with a partial mask;
 * - importance pruning and ToMe merging (spec/LIPAR.md §5).
 * Uses the small model of ../shared/golden/lipar_edit_inputs.safetensors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/pipeline/edit.h"
#include "../src/prune/alternatives.h"
#include "../src/prune/mask.h"
#include "test_util.h"

#define INPUTS "golden/lipar_edit_inputs.safetensors"

typedef struct {
    lp_tensor_file *f;
    lp_backend *be;
    lp_dit *dit;
    float *src; /* [9, 16, 60, 104] */
    int T, C, H, W;
    lp_denoise_plan plan;
} fixture;

static int setup(fixture *fx) {
    memset(fx, 0, sizeof *fx);
    const char *path = lp_test_shared(INPUTS);
    if (!path) return 0;
    CHECK(lp_tensor_file_open(path, &fx->f) == LP_OK, "%s", lp_last_error());
    CHECK(lp_backend_cpu_create(2, &fx->be) == LP_OK);
    CHECK(lp_dit_load(fx->f, "w.", 2, 32, fx->be, &fx->dit) == LP_OK, "%s", lp_last_error());
    const lp_tensor *s;
    CHECK(lp_tensor_file_get(fx->f, "in.src_latents", &s) == LP_OK);
    fx->T = (int)s->shape[1];
    fx->C = (int)s->shape[2];
    fx->H = (int)s->shape[3];
    fx->W = (int)s->shape[4];
    fx->src = malloc((size_t)lp_tensor_numel(s) * sizeof(float));
    CHECK(fx->src && lp_tensor_read_f32(s, 0, lp_tensor_numel(s), fx->src) == LP_OK);
    int steps[3] = {400, 300, 250};
    CHECK(lp_denoise_plan_init(&fx->plan, steps, 3, 5.0f, 0.0f) == LP_OK);
    return 1;
}

static void teardown(fixture *fx) {
    free(fx->src);
    lp_dit_free(fx->dit);
    lp_backend_destroy(fx->be);
    lp_tensor_file_close(fx->f);
}

/* Runs `chunks` chunks of the clip with strategy and keep ([T][h][w] or NULL)
 * into out [T, C, H, W]. */
static lp_status run_plan(fixture *fx, lp_prune_strategy strategy, const uint8_t *keep, const int32_t *merge,
                          int chunks, float *out) {
    lp_dit_cache_config cc;
    lp_edit_cache_defaults(strategy, 0, fx->H, fx->W, 3, &cc);
    lp_dit_cache *cache;
    LP_TRY(lp_dit_cache_create(fx->dit, &cc, &cache));
    const lp_tensor *ctx = lp_tensor_file_find(fx->f, "in.context");
    float *c = malloc((size_t)lp_tensor_numel(ctx) * sizeof *c);
    lp_tensor_read_f32(ctx, 0, lp_tensor_numel(ctx), c);
    lp_status s = lp_dit_set_prompt(fx->dit, cache, c, (int)ctx->shape[0]);
    free(c);
    lp_edit_state st = {0};
    if (s == LP_OK) s = lp_edit_state_init(&st, fx->C, fx->H, fx->W);
    int64_t frame = (int64_t)fx->C * fx->H * fx->W, hw = (int64_t)(fx->H / 2) * (fx->W / 2);
    lp_prng_noise pn = {5, NULL};
    float *eps = malloc((size_t)(3 * frame) * sizeof *eps);
    for (int b = 0; s == LP_OK && b < chunks; b++) {
        float *x = out + b * 3 * frame;
        memcpy(x, fx->src + b * 3 * frame, (size_t)(3 * frame) * sizeof *x);
        lp_prng_noise_fn(&pn, b, -1, eps, 3 * frame);
        lp_flow_add_noise(x, x, eps, fx->plan.sigmas[0], 3 * frame);
        s = lp_edit_chunk(fx->dit, cache, &st, strategy, &fx->plan, b * 3, 3, x, keep ? keep + b * 3 * hw : NULL,
                          merge ? merge + b * 3 * hw : NULL,
                          lp_prng_noise_fn, &pn);
    }
    free(eps);
    lp_edit_state_free(&st);
    lp_dit_cache_free(cache);
    return s;
}

static lp_status run(fixture *fx, lp_prune_strategy strategy, const uint8_t *keep, int chunks, float *out) {
    return run_plan(fx, strategy, keep, NULL, chunks, out);
}

/* Offset of element (c, q, r) of patch t in [F, C, H, W]. */
static int64_t at(const fixture *fx, int64_t t, int c, int q, int r) {
    int64_t w = fx->W / 2, hw = (int64_t)(fx->H / 2) * w, f = t / hw, y = (t % hw) / w, x = t % w;
    return ((f * fx->C + c) * fx->H + 2 * y + q) * fx->W + 2 * x + r;
}

static int same_patch(const fixture *fx, const float *x, int64_t a, int64_t b) {
    for (int c = 0; c < fx->C; c++)
        for (int q = 0; q < 2; q++)
            for (int r = 0; r < 2; r++)
                if (x[at(fx, a, c, q, r)] != x[at(fx, b, c, q, r)]) return 0;
    return 1;
}

static int test_importance(void) {
    fixture fx;
    if (!setup(&fx)) return lp_test_skip_shared(INPUTS);
    int64_t hw = (int64_t)(fx.H / 2) * (fx.W / 2), frame = (int64_t)fx.C * fx.H * fx.W;
    uint8_t *keep = malloc((size_t)(6 * hw));
    for (int b = 0; b < 2; b++)
        CHECK(lp_importance_mask(fx.src + b * 3 * frame, 3, fx.C, fx.H, fx.W, 0.3, b == 0, keep + b * 3 * hw) == LP_OK);
    /* per frame: floor(0.3·hw) dropped (the video's frame 0 whole), each with a norm <= every kept one */
    for (int f = 0; f < 6; f++) {
        int64_t dropped = 0;
        double max_dropped = 0, min_kept = INFINITY;
        for (int64_t i = 0; i < hw; i++) {
            double n = 0;
            for (int c = 0; c < fx.C; c++)
                for (int q = 0; q < 2; q++)
                    for (int r = 0; r < 2; r++) {
                        double v = fx.src[at(&fx, f * hw + i, c, q, r)];
                        n += v * v;
                    }
            if (keep[f * hw + i]) min_kept = fmin(min_kept, n);
            else {
                dropped++;
                max_dropped = fmax(max_dropped, n);
            }
        }
        CHECK(dropped == (f == 0 ? 0 : (int64_t)(0.3 * (double)hw)), "frame %d: %lld dropped", f, (long long)dropped);
        CHECK(f == 0 || max_dropped <= min_kept, "frame %d: a dropped patch has a larger norm than a kept one", f);
    }
    float *out = malloc((size_t)(6 * frame) * sizeof *out);
    CHECK(run(&fx, LP_PRUNE_IMPORTANCE, keep, 2, out) == LP_OK, "%s", lp_last_error());
    /* pruned patches carry the previous frame's final x0 */
    for (int f = 1; f < 6; f++)
        for (int64_t i = 0; i < hw; i++)
            if (!keep[f * hw + i]) CHECK(same_patch(&fx, out, f * hw + i, (f - 1) * hw + i), "frame %d patch %lld", f, (long long)i);
    free(out);
    free(keep);
    teardown(&fx);
    return 0;
}

static int test_tome(void) {
    fixture fx;
    if (!setup(&fx)) return lp_test_skip_shared(INPUTS);
    int64_t hw = (int64_t)(fx.H / 2) * (fx.W / 2), frame = (int64_t)fx.C * fx.H * fx.W, w = fx.W / 2;
    int32_t *merge = malloc((size_t)(6 * hw) * sizeof *merge);
    for (int b = 0; b < 2; b++)
        CHECK(lp_tome_plan(fx.src + b * 3 * frame, 3, fx.C, fx.H, fx.W, 0.3, merge + b * 3 * hw) == LP_OK);
    for (int b = 0; b < 2; b++) {
        int64_t merged = 0;
        for (int64_t t = 0; t < 3 * hw; t++) {
            int32_t d = merge[b * 3 * hw + t];
            if (d < 0) continue;
            merged++;
            int64_t ya = (t % hw) / w, xa = t % w, yb = (d % hw) / w, xb = d % w;
            CHECK((ya + xa) % 2 == 1 && (yb + xb) % 2 == 0, "sources are odd cells, destinations even");
            CHECK(llabs(ya - yb) <= 1 && llabs(xa - xb) <= 1 && merge[b * 3 * hw + d] < 0);
        }
        CHECK(merged == (int64_t)(0.3 * (double)(3 * hw)), "%lld merged", (long long)merged);
    }
    float *out = malloc((size_t)(6 * frame) * sizeof *out), *none = malloc((size_t)(6 * frame) * sizeof *none);
    CHECK(run_plan(&fx, LP_PRUNE_TOME, NULL, merge, 2, out) == LP_OK, "%s", lp_last_error());
    for (int64_t t = 0; t < 6 * hw; t++) /* outputs unmerged: a member equals its merged token */
        if (merge[t] >= 0) CHECK(same_patch(&fx, out, t, (t / (3 * hw)) * 3 * hw + merge[t]));
    /* with nothing merged, tome is the unpruned loop bit for bit */
    for (int64_t t = 0; t < 6 * hw; t++) merge[t] = -1;
    CHECK(run_plan(&fx, LP_PRUNE_TOME, NULL, merge, 2, out) == LP_OK);
    CHECK(run(&fx, LP_PRUNE_NONE, NULL, 2, none) == LP_OK);
    CHECK(!memcmp(out, none, (size_t)(6 * frame) * sizeof *out));
    free(out);
    free(none);
    free(merge);
    teardown(&fx);
    return 0;
}

static int test_high_tau_equals_window(void) {
    fixture fx;
    if (!setup(&fx)) return lp_test_skip_shared(INPUTS);
    int64_t n = (int64_t)6 * fx.C * fx.H * fx.W, cells = (int64_t)fx.T * (fx.H / 2) * (fx.W / 2);
    uint8_t *keep = malloc((size_t)cells);
    lp_mask_opts mo;
    lp_mask_opts_default(&mo);
    mo.tau = -1.0f; /* keep = d > τ: every distance is ≥ 0 */
    mo.tau2 = -1.0f;
    double kept;
    CHECK(lp_mask_compute(&mo, fx.src, fx.T, fx.H, fx.W, keep, NULL, &kept) == LP_OK);
    CHECK(kept == 1.0, "kept %g", kept);
    float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    CHECK(run(&fx, LP_PRUNE_LIPAR, keep, 2, a) == LP_OK, "%s", lp_last_error());
    CHECK(run(&fx, LP_PRUNE_NONE, NULL, 2, b) == LP_OK, "%s", lp_last_error());
    CHECK(!memcmp(a, b, (size_t)n * sizeof *a), "lipar with nothing pruned differs from window (max %g)",
          lp_max_abs_diff(a, b, (size_t)n));
    free(a);
    free(b);
    free(keep);
    teardown(&fx);
    return 0;
}

static int test_nothing_kept_chunk(void) {
    fixture fx;
    if (!setup(&fx)) return lp_test_skip_shared(INPUTS);
    int64_t frame = (int64_t)fx.C * fx.H * fx.W, hw = (int64_t)(fx.H / 2) * (fx.W / 2);
    uint8_t *keep = malloc((size_t)(6 * hw));
    memset(keep, 1, (size_t)(3 * hw));     /* chunk 0 whole */
    memset(keep + 3 * hw, 0, (size_t)(3 * hw)); /* chunk 1: nothing kept */
    float *out = malloc((size_t)(6 * frame) * sizeof *out);
    for (int s = 0; s < 2; s++) {
        lp_prune_strategy st = s ? LP_PRUNE_MDEG : LP_PRUNE_LIPAR;
        CHECK(run(&fx, st, keep, 2, out) == LP_OK, "%s", lp_last_error());
        /* every frame of chunk 1 is the final x0 of chunk 0's last frame */
        for (int f = 3; f < 6; f++)
            CHECK(!memcmp(out + f * frame, out + 2 * frame, (size_t)frame * sizeof *out),
                  "%s: frame %d is not the restored previous frame", lp_prune_strategy_name(st), f);
        for (int64_t i = 0; i < 3 * frame; i++) CHECK(isfinite(out[i]));
    }
    free(out);
    free(keep);
    teardown(&fx);
    return 0;
}

static int test_partial_masks_all_strategies(void) {
    fixture fx;
    if (!setup(&fx)) return lp_test_skip_shared(INPUTS);
    int64_t n = (int64_t)6 * fx.C * fx.H * fx.W, cells = (int64_t)fx.T * (fx.H / 2) * (fx.W / 2);
    uint8_t *keep = malloc((size_t)cells);
    lp_mask_opts mo;
    lp_mask_opts_default(&mo);
    double kept;
    CHECK(lp_mask_compute(&mo, fx.src, fx.T, fx.H, fx.W, keep, NULL, &kept) == LP_OK);
    CHECK(kept > 0.1 && kept < 0.9, "kept %g", kept);
    float *base = malloc((size_t)n * sizeof *base), *out[3];
    CHECK(run(&fx, LP_PRUNE_NONE, NULL, 2, base) == LP_OK);
    static const lp_prune_strategy all[] = {LP_PRUNE_LIPAR, LP_PRUNE_MDEG, LP_PRUNE_DIRECT};
    for (int i = 0; i < 3; i++) {
        out[i] = malloc((size_t)n * sizeof *out[i]);
        CHECK(run(&fx, all[i], keep, 2, out[i]) == LP_OK, "%s: %s", lp_prune_strategy_name(all[i]), lp_last_error());
        double rel = lp_rel_l2(out[i], base, (size_t)n);
        printf("  %s vs none: rel_l2 %.4f at kept %.3f\n", lp_prune_strategy_name(all[i]), rel, kept);
        CHECK(isfinite(rel) && rel > 0 && rel < 2.0);
    }
    /* the three recoveries differ from one another */
    CHECK(memcmp(out[0], out[1], (size_t)n * sizeof(float)) && memcmp(out[0], out[2], (size_t)n * sizeof(float)) &&
          memcmp(out[1], out[2], (size_t)n * sizeof(float)));
    for (int i = 0; i < 3; i++) free(out[i]);
    free(base);
    free(keep);
    teardown(&fx);
    return 0;
}

int main(void) {
    lp_test_run("lipar with nothing pruned == window, bit for bit", test_high_tau_equals_window);
    lp_test_run("a chunk with nothing kept is restored from the previous frame", test_nothing_kept_chunk);
    lp_test_run("lipar, mdeg, direct on a partial mask", test_partial_masks_all_strategies);
    lp_test_run("importance pruning: lowest norms dropped, copied from the previous frame", test_importance);
    lp_test_run("ToMe merging: plan, unmerged outputs, nothing merged == none", test_tome);
    return lp_test_finish();
}
