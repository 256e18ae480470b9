#include "edit.h"

#include <stdlib.h>
#include <string.h>

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
    if (C < 1 || H < 2 || W < 2 || H % 2 || W % 2)
        return lp_fail(LP_ERR_ARG, "edit state: latent frames [%d, %d, %d] (even sizes)", C, H, W);
    st->C = C;
    st->H = H;
    st->W = W;
    return LP_OK;
}

static void release(lp_backend *be, void *p) {
    if (p) be->release(be, p);
}

void lp_edit_state_free(lp_edit_state *st) {
    if (st->be) {
        void *bufs[] = {st->x, st->v, st->x0, st->eps, st->keep, st->flow_prev, st->xt_prev};
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) release(st->be, bufs[i]);
    }
    memset(st, 0, sizeof *st);
}

/* The buffers for chunks of F frames on be (the first chunk's backend). */
static lp_status state_buffers(lp_edit_state *st, lp_backend *be, int F) {
    int64_t frame = (int64_t)st->C * st->H * st->W, n = F * frame;
    if (st->be && st->be != be) return lp_fail(LP_ERR_ARG, "edit state: used with another model's backend");
    if (st->be && n <= st->cap) return LP_OK;
    int has_prev = st->has_prev, chunk = st->chunk, C = st->C, H = st->H, W = st->W;
    if (st->be) { /* a larger chunk than before: the carried frames are kept */
        float *fp = st->flow_prev, *xp = st->xt_prev;
        st->flow_prev = st->xt_prev = NULL;
        lp_edit_state_free(st);
        st->flow_prev = fp;
        st->xt_prev = xp;
    }
    st->be = be;
    st->C = C, st->H = H, st->W = W, st->has_prev = has_prev, st->chunk = chunk;
    size_t fb = (size_t)n * sizeof(float);
    st->x = be->alloc(be, fb);
    st->v = be->alloc(be, fb);
    st->x0 = be->alloc(be, fb);
    st->eps = be->alloc(be, fb);
    st->keep = be->alloc(be, (size_t)F * (H / 2) * (W / 2));
    if (!st->flow_prev) st->flow_prev = be->alloc(be, (size_t)frame * sizeof(float));
    if (!st->xt_prev) st->xt_prev = be->alloc(be, (size_t)frame * sizeof(float));
    st->cap = n;
    if (!st->x || !st->v || !st->x0 || !st->eps || !st->keep || !st->flow_prev || !st->xt_prev) {
        lp_edit_state_free(st);
        return LP_ERR_NOMEM; /* the backend set the message */
    }
    return LP_OK;
}

/* §4: restores the pruned positions of the chunk's frames in y (v or x_t), in
 * frame order: frame 0 from prev (the previous chunk's last frame, when there
 * is one), frame f ≥ 1 from frame f − 1 as restored. */
static lp_status restore_chain(const lp_edit_state *st, float *y, const float *prev, int F) {
    int64_t frame = (int64_t)st->C * st->H * st->W, hw = (int64_t)(st->H / 2) * (st->W / 2);
    for (int f = 0; f < F; f++) {
        const float *src = f ? y + (f - 1) * frame : prev;
        if (src)
            LP_TRY(st->be->copy_patches(st->be, y + f * frame, src, st->keep + f * hw, 0, st->C, st->H, st->W));
    }
    return LP_OK;
}

/* The tome path's token merging runs on the host: x or v goes there and back. */
static lp_status host_merge(lp_backend *be, float *dev, float *host, int64_t n, const int32_t *merge_dst, int F,
                            int C, int H, int W, int unmerge) {
    size_t bytes = (size_t)n * sizeof *host;
    LP_TRY(be->download(be, host, dev, bytes));
    if (unmerge) lp_unmerge(host, merge_dst, F, C, H, W);
    else LP_TRY(lp_merge_average(host, merge_dst, F, C, H, W));
    return be->upload(be, dev, host, bytes);
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
                        const int32_t *merge_dst, lp_noise_fn noise, void *noise_ctx) {
    const lp_dit_config *cfg = lp_dit_get_config(m);
    lp_backend *be = lp_dit_backend(m);
    int64_t n = lp_dit_latent_elems(m, c, F), frame = n / F;
    int H = 0, W = 0;
    lp_dit_cache_grid(c, &H, &W);
    int64_t hw = (int64_t)(H / 2) * (W / 2);
    if (H != st->H || W != st->W || cfg->in_dim != st->C || F > 64)
        return lp_fail(LP_ERR_ARG, "edit: the state is for [%d, %d, %d] latents, the chunk has %d frames of [%d, %d, %d]",
                       st->C, st->H, st->W, F, cfg->in_dim, H, W);
    LP_TRY(state_buffers(st, be, F));
    int merging = strategy == LP_PRUNE_TOME && merge_dst != NULL;
    int pruning = strategy != LP_PRUNE_NONE && strategy != LP_PRUNE_TOME && keep != NULL;
    const uint8_t *mask = pruning ? keep : NULL;
    int first_chunk = start_frame == 0;
    float *eps = malloc((size_t)n * sizeof *eps), *v_host = merging ? malloc((size_t)n * sizeof *v_host) : NULL;
    uint8_t *merge_keep = merging ? malloc((size_t)(F * hw)) : NULL;
    float ts[64];
    lp_status s = LP_OK;
    if (!eps || (merging && (!merge_keep || !v_host))) {
        s = lp_fail(LP_ERR_NOMEM, "out of memory editing a chunk");
        goto out;
    }
    if (merging) { /* merged tokens are not computed */
        for (int64_t t = 0; t < F * hw; t++) merge_keep[t] = merge_dst[t] < 0;
        mask = merge_keep;
    }
    /* the chunk goes to the backend once; its steps run there */
    size_t bytes = (size_t)n * sizeof(float);
    if ((s = be->upload(be, st->x, x, bytes)) != LP_OK) goto out;
    if ((s = be->clear(be, st->v, bytes)) != LP_OK) goto out;
    if (pruning && (s = be->upload(be, st->keep, mask, (size_t)(F * hw))) != LP_OK) goto out;
    for (int i = 0; i < plan->n_steps; i++) {
        for (int f = 0; f < F; f++) ts[f] = plan->timesteps[i];
        lp_dit_call call = {.n_frames = F,
                            .start_frame = start_frame,
                            .timesteps = ts,
                            .keep = mask,
                            .merge_dst = merging ? merge_dst : NULL,
                            .kv_policy = policy_for(strategy, first_chunk, 0)};
        if (merging && (s = host_merge(be, st->x, x, n, merge_dst, F, cfg->in_dim, H, W, 0)) != LP_OK) goto out;
        if ((s = lp_dit_forward_dev(m, c, &call, st->x, st->v)) != LP_OK) goto out;
        if (merging) { /* outputs unmerged: every member takes its merged token's values */
            if ((s = host_merge(be, st->v, v_host, n, merge_dst, F, cfg->in_dim, H, W, 1)) != LP_OK) goto out;
            if ((s = host_merge(be, st->x, x, n, merge_dst, F, cfg->in_dim, H, W, 1)) != LP_OK) goto out;
        } else if (pruning) { /* §4: restore v and x_t at pruned positions */
            if ((s = restore_chain(st, st->v, st->has_prev ? st->flow_prev : NULL, F)) != LP_OK) goto out;
            if ((s = restore_chain(st, st->x, st->has_prev ? st->xt_prev : NULL, F)) != LP_OK) goto out;
            if (i + 1 == plan->n_steps) {
                size_t fb = (size_t)frame * sizeof(float);
                if ((s = be->copy(be, st->flow_prev, st->v + (F - 1) * frame, fb)) != LP_OK) goto out;
                if ((s = be->copy(be, st->xt_prev, st->x + (F - 1) * frame, fb)) != LP_OK) goto out;
                st->has_prev = 1;
            }
        }
        be->flow_x0(be, st->x0, st->x, st->v, plan->sigmas[i], n);
        if (i + 1 < plan->n_steps) {
            if ((s = noise(noise_ctx, st->chunk, i, eps, n)) != LP_OK) goto out;
            if ((s = be->upload(be, st->eps, eps, bytes)) != LP_OK) goto out;
            be->flow_renoise(be, st->x, st->x0, st->eps, plan->sigmas[i + 1], n);
        }
    }
    /* the final x0 is the output; the context pass on it (same mask, t =
     * context_t) rewrites clean K/V while the caller goes on */
    if ((s = be->download(be, x, st->x0, bytes)) != LP_OK) goto out;
    for (int f = 0; f < F; f++) ts[f] = plan->context_t;
    lp_kv_policy ctx_policy = policy_for(strategy, first_chunk, 1);
    lp_dit_call ctx = {.n_frames = F,
                       .start_frame = start_frame,
                       .timesteps = ts,
                       .keep = mask,
                       .merge_dst = merging ? merge_dst : NULL,
                       .kv_policy = ctx_policy,
                       .save_last_frame = ctx_policy == LP_KV_CHAIN};
    if ((s = lp_dit_forward_dev(m, c, &ctx, st->x0, st->v)) != LP_OK) goto out;
    st->chunk++;
out:
    free(eps);
    free(v_host);
    free(merge_keep);
    return s;
}
