/* The V2V editing loop of LIPAR (spec/LIPAR.md "The editing task", §2–4): per
 * chunk, SDEdit start x = (1−σ0)·src + σ0·ε (done by the caller over the whole
 * stream or chunk by chunk), the few denoising steps on the kept tokens with
 * K/V recovery in the cache and restoration of the pruned positions, then the
 * context pass at t = 0 with the same mask. */
#ifndef LP_EDIT_H
#define LP_EDIT_H

#include "../model/wan_dit.h"
#include "denoise.h"

typedef enum {
    LP_PRUNE_NONE = 0, /* no pruning (window or full cache) */
    LP_PRUNE_LIPAR,    /* pruning + attention recovery + noise-aware duplication ("full") */
    LP_PRUNE_MDEG,     /* pruning + recovery without noise-aware duplication */
    LP_PRUNE_DIRECT,   /* pruning without recovery: the cache holds kept tokens only */
    LP_PRUNE_TOME,     /* ToMe-style bipartite merging within a chunk (prune/alternatives.h) */
    LP_PRUNE_IMPORTANCE, /* the lowest-norm tokens dropped, with LIPAR's recovery */
} lp_prune_strategy;

const char *lp_prune_strategy_name(lp_prune_strategy s);
/* "lipar"/"full", "mdeg", "direct", "none", "tome", "importance"; else LP_ERR_ARG. */
lp_status lp_prune_strategy_parse(const char *name, lp_prune_strategy *out);

/* The KV cache settings each strategy runs with in the paper: LIPAR, mdeg and
 * `none` a sink of 1 frame + the last 6 (7 frames in all); direct (and the
 * paper's baseline, `none` with full_cache) 25 frames attending to the last 21. */
void lp_edit_cache_defaults(lp_prune_strategy s, int full_cache, int latent_h, int latent_w, int frames_per_chunk,
                            lp_dit_cache_config *cc);

/* The loop's latents, kept in the memory of the DiT's backend (allocated on
 * the first chunk): a chunk's steps run there without the host waiting for
 * the device, and the restoration memory is carried from chunk to chunk. */
typedef struct {
    lp_backend *be;             /* the DiT's, once buffers exist */
    int C, H, W;
    int64_t cap;                /* floats of x, v, x0, eps */
    float *x, *v, *x0, *eps;    /* a chunk [F, C, H, W]: x_t, the flow, x0, the noise */
    uint8_t *keep;              /* the chunk's mask [F, H/2, W/2] */
    float *flow_prev, *xt_prev; /* [C, H, W]: restored last frame at the previous chunk's final step */
    int has_prev;
    int chunk;                  /* chunks done */
} lp_edit_state;

lp_status lp_edit_state_init(lp_edit_state *st, int C, int H, int W);
void lp_edit_state_free(lp_edit_state *st);

/* Edits one chunk. x [F, C, H, W]: in, the SDEdit start; out, the final x0.
 * Returns once x0 is back; the context pass may still run on the device
 * (the next call on the DiT's backend comes after it).
 * keep [F, H/2, W/2] (1 = compute) or NULL for all-keep; ignored by
 * LP_PRUNE_NONE and LP_PRUNE_TOME, which takes merge_dst instead
 * (lp_tome_plan; NULL = nothing merged). Noise for re-noising after step i
 * comes from noise(ctx, chunk, i). start_frame is the chunk's first frame in
 * the stream. */
lp_status lp_edit_chunk(lp_dit *m, lp_dit_cache *c, lp_edit_state *st, lp_prune_strategy strategy,
                        const lp_denoise_plan *plan, int start_frame, int F, float *x, const uint8_t *keep,
                        const int32_t *merge_dst, lp_noise_fn noise, void *noise_ctx);

#endif
