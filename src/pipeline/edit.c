#include "edit.h"

#include <stdlib.h>
#include <string.h>

#include "../base/clock.h"
#include "../prune/recover.h"

const char *lp_prune_strategy_name(lp_prune_strategy s) {
    switch (s) {
    case LP_PRUNE_NONE: return "none";
    case LP_PRUNE_LIPAR: return "lipar";
    case LP_PRUNE_MDEG: return "mdeg";
    case LP_PRUNE_DIRECT: return "direct";
    case LP_PRUNE_TOME: return "tome";
    case LP_PRUNE_IMPORTANCE: return "importance";
    }
    return "?";
}

lp_status lp_prune_strategy_parse(const char *name, lp_prune_strategy *out) {
    static const struct { const char *n; lp_prune_strategy s; } names[] = {
        {"lipar", LP_PRUNE_LIPAR}, {"full", LP_PRUNE_LIPAR}, {"mdeg", LP_PRUNE_MDEG},
        {"direct", LP_PRUNE_DIRECT}, {"none", LP_PRUNE_NONE}, {"tome", LP_PRUNE_TOME},
        {"importance", LP_PRUNE_IMPORTANCE}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(name, names[i].n)) {
            *out = names[i].s;
            return LP_OK;
        }
    return lp_fail(LP_ERR_ARG, "unknown pruning strategy '%s' (lipar, mdeg, direct, none, tome, importance)", name);
}

void lp_edit_cache_defaults(lp_prune_strategy s, int full_cache, int latent_h, int latent_w, int frames_per_chunk,
                            lp_dit_cache_config *cc) {
    int64_t hw = (int64_t)(latent_h / 2) * (latent_w / 2);
    memset(cc, 0, sizeof *cc);
    cc->latent_h = latent_h;
    cc->latent_w = latent_w;
    cc->max_frames = frames_per_chunk;
    if (s == LP_PRUNE_DIRECT || (s == LP_PRUNE_NONE && full_cache)) {
        /* the reference's 39,000-token cache (25 frames of 1560) with Self-Forcing's
         * 32,760-token (21-frame) attention cap; it rolls when full */
        cc->capacity = 25 * hw;
        cc->local_attn = 25;
        cc->max_attn_tokens = 21 * hw;
    } else {
        cc->capacity = 7 * hw;
        cc->local_attn = -1;
        cc->sink_frames = 1;
        cc->trim_sink_frames = 1;
        cc->trim_window_frames = 6;
    }
}

lp_status lp_edit_state_init(lp_edit_state *st, int C, int H, int W) {
    memset(st, 0, sizeof *st);
    size_t n = (size_t)C * H * W;
    st->flow_prev = malloc(n * sizeof(float));
    st->xt_prev = malloc(n * sizeof(float));
    if (!st->flow_prev || !st->xt_prev) {
        lp_edit_state_free(st);
        return lp_fail(LP_ERR_NOMEM, "out of memory for the restoration state");
    }
    return LP_OK;
}

void lp_edit_state_free(lp_edit_state *st) {
    free(st->flow_prev);
    free(st->xt_prev);
    memset(st, 0, sizeof *st);
}

/* Which K/V policy a call uses (spec/LIPAR.md §3). */
static lp_kv_policy policy_for(lp_prune_strategy s, int first_chunk, int context_pass) {
    switch (s) {
    case LP_PRUNE_NONE: return LP_KV_DENSE;
    case LP_PRUNE_DIRECT: return LP_KV_KEPT_ONLY;
    case LP_PRUNE_MDEG: return LP_KV_CHAIN;
    case LP_PRUNE_TOME: return LP_KV_MERGE;
    case LP_PRUNE_IMPORTANCE: /* LIPAR's recovery on another choice of tokens */
    case LP_PRUNE_LIPAR:
        if (context_pass) return LP_KV_CHAIN;
        return first_chunk ? LP_KV_KEPT_ONLY : LP_KV_DUPLICATE;
    }
    return LP_KV_DENSE;
}

lp_status lp_edit_chunk(lp_dit *m, lp_dit_cache *c, lp_edit_state *st, lp_prune_strategy strategy,
                        const lp_denoise_plan *plan, int start_frame, int F, float *x, const uint8_t *keep,
                        const int32_t *merge_dst, lp_noise_fn noise, void *noise_ctx, lp_edit_chunk_stats *stats) {
    const lp_dit_config *cfg = lp_dit_get_config(m);
    int64_t n = lp_dit_latent_elems(m, c, F), frame = n / F;
    int H = 0, W = 0;
    lp_dit_cache_grid(c, &H, &W);
    int64_t hw = (int64_t)(H / 2) * (W / 2);
    int merging = strategy == LP_PRUNE_TOME && merge_dst != NULL;
    int pruning = strategy != LP_PRUNE_NONE && strategy != LP_PRUNE_TOME && keep != NULL;
    const uint8_t *mask = pruning ? keep : NULL;
    int first_chunk = start_frame == 0;
    float *v = malloc((size_t)n * sizeof *v), *x0 = malloc((size_t)n * sizeof *x0),
          *eps = malloc((size_t)n * sizeof *eps);
    uint8_t *merge_keep = merging ? malloc((size_t)(F * hw)) : NULL;
    float ts[64];
    lp_status s = LP_OK;
    if (!v || !x0 || !eps || F > 64 || (merging && !merge_keep)) {
        s = lp_fail(LP_ERR_NOMEM, "out of memory editing a chunk");
        goto out;
    }
    if (merging) { /* merged tokens are not computed */
        for (int64_t t = 0; t < F * hw; t++) merge_keep[t] = merge_dst[t] < 0;
        mask = merge_keep;
    }
    memset(v, 0, (size_t)n * sizeof *v);
    lp_edit_chunk_stats local = {0};
    local.total_tokens = F * hw;
    local.kept_tokens = local.total_tokens;
    if (mask) {
        local.kept_tokens = 0;
        for (int64_t i = 0; i < F * hw; i++) local.kept_tokens += mask[i] != 0;
    }
    for (int i = 0; i < plan->n_steps; i++) {
        for (int f = 0; f < F; f++) ts[f] = plan->timesteps[i];
        lp_dit_call call = {.n_frames = F,
                            .start_frame = start_frame,
                            .timesteps = ts,
                            .keep = mask,
                            .merge_dst = merging ? merge_dst : NULL,
                            .kv_policy = policy_for(strategy, first_chunk, 0)};
        if (merging && (s = lp_merge_average(x, merge_dst, F, cfg->in_dim, H, W)) != LP_OK) goto out;
        double t0 = lp_seconds();
        if ((s = lp_dit_forward(m, c, &call, x, v)) != LP_OK) goto out;
        local.dit_seconds += lp_seconds() - t0;
        if (merging) { /* outputs unmerged: every member takes its merged token's values */
            lp_unmerge(v, merge_dst, F, cfg->in_dim, H, W);
            lp_unmerge(x, merge_dst, F, cfg->in_dim, H, W);
        } else if (mask) { /* §4: restore v and x_t at pruned positions */
            lp_restore_chain(v, mask, st->has_prev ? st->flow_prev : NULL, F, cfg->in_dim, H, W);
            lp_restore_chain(x, mask, st->has_prev ? st->xt_prev : NULL, F, cfg->in_dim, H, W);
            if (i + 1 == plan->n_steps) {
                memcpy(st->flow_prev, v + (F - 1) * frame, (size_t)frame * sizeof *v);
                memcpy(st->xt_prev, x + (F - 1) * frame, (size_t)frame * sizeof *x);
                st->has_prev = 1;
            }
        }
        lp_flow_x0(x0, x, v, plan->sigmas[i], n);
        if (i + 1 < plan->n_steps) {
            if ((s = noise(noise_ctx, st->chunk, i, eps, n)) != LP_OK) goto out;
            lp_flow_add_noise(x, x0, eps, plan->sigmas[i + 1], n);
        }
    }
    memcpy(x, x0, (size_t)n * sizeof *x);
    /* context pass on the final x0, same mask, t = context_t: rewrites clean K/V */
    for (int f = 0; f < F; f++) ts[f] = plan->context_t;
    lp_kv_policy ctx_policy = policy_for(strategy, first_chunk, 1);
    lp_dit_call ctx = {.n_frames = F,
                       .start_frame = start_frame,
                       .timesteps = ts,
                       .keep = mask,
                       .merge_dst = merging ? merge_dst : NULL,
                       .kv_policy = ctx_policy,
                       .save_last_frame = ctx_policy == LP_KV_CHAIN};
    double t0 = lp_seconds();
    if ((s = lp_dit_forward(m, c, &ctx, x, v)) != LP_OK) goto out;
    local.dit_seconds += lp_seconds() - t0;
    st->chunk++;
    if (stats) *stats = local;
out:
    free(v);
    free(x0);
    free(eps);
    free(merge_keep);
    return s;
}
