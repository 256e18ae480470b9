/* The causal Wan DiT of Self-Forcing (spec/MODEL.md), with the hooks LIPAR
 * needs (spec/LIPAR.md §2–3): a forward over the kept tokens of a chunk only,
 * and policies for filling the K/V of pruned tokens in the cache.
 *
 * Latents are [F, C, H, W] f32 (frame-major; the golden files' [1, F, C, H, W]
 * without the batch). Tokens are ordered (frame, row, col) over the h×w patch
 * grid, h = H/2, w = W/2. */
#ifndef LP_WAN_DIT_H
#define LP_WAN_DIT_H

#include <stdint.h>

#include "../backend/backend.h"
#include "../io/tensor_file.h"

typedef struct {
    int dim;        /* 1536 */
    int ffn_dim;    /* 8960 */
    int num_heads;  /* 12 (not readable from shapes) */
    int head_dim;   /* dim / num_heads */
    int num_layers; /* 30 */
    int in_dim;     /* 16 latent channels */
    int out_dim;    /* 16 */
    int text_dim;   /* 4096 */
    int text_len;   /* 512 (not readable from shapes) */
    int freq_dim;   /* 256 */
    int patch[3];   /* (1, 2, 2) */
    float eps;      /* 1e-6 */
} lp_dit_config;

typedef struct {
    const lp_tensor *modulation;                 /* [1, 6, dim] */
    const lp_tensor *sa_q_w, *sa_q_b;            /* [dim, dim], [dim] */
    const lp_tensor *sa_k_w, *sa_k_b;
    const lp_tensor *sa_v_w, *sa_v_b;
    const lp_tensor *sa_o_w, *sa_o_b;
    const lp_tensor *sa_norm_q, *sa_norm_k;      /* [dim] */
    const lp_tensor *ca_q_w, *ca_q_b;            /* [dim, dim], [dim] */
    const lp_tensor *ca_k_w, *ca_k_b;
    const lp_tensor *ca_v_w, *ca_v_b;
    const lp_tensor *ca_o_w, *ca_o_b;
    const lp_tensor *ca_norm_q, *ca_norm_k;      /* [dim] */
    const lp_tensor *norm3_w, *norm3_b;          /* [dim] */
    const lp_tensor *ffn0_w, *ffn0_b;            /* [ffn, dim], [ffn] */
    const lp_tensor *ffn2_w, *ffn2_b;            /* [dim, ffn], [dim] */
    float *modulation_f32;                       /* [6, dim] copy */
} lp_dit_block_weights;

typedef struct {
    lp_tensor patch_w;                           /* [dim, in·1·2·2] view of patch_embedding.weight [dim, in, 1, 2, 2] */
    const lp_tensor *patch_b;                    /* [dim] */
    const lp_tensor *text0_w, *text0_b;          /* text_embedding.0: [dim, text_dim], [dim] */
    const lp_tensor *text2_w, *text2_b;          /* text_embedding.2: [dim, dim], [dim] */
    const lp_tensor *time0_w, *time0_b;          /* time_embedding.0: [dim, freq_dim], [dim] */
    const lp_tensor *time2_w, *time2_b;          /* time_embedding.2: [dim, dim], [dim] */
    const lp_tensor *tproj_w, *tproj_b;          /* time_projection.1: [6·dim, dim], [6·dim] */
    const lp_tensor *head_w, *head_b;            /* head.head: [out·4, dim], [out·4] */
    float *head_modulation_f32;                  /* head.modulation [1, 2, dim] copy */
    lp_dit_block_weights *blocks;                /* [num_layers] */
} lp_dit_weights;

typedef struct lp_dit lp_dit;

/* Loads the DiT from f, looking up every tensor as prefix + upstream name
 * (e.g. "w." in golden files, "" in the base Wan file). num_heads and text_len
 * come from the caller (0 = defaults: dim/128 heads, 512 text rows). Fails
 * naming the tensor and file for a missing or mis-shaped tensor. f must stay
 * open while the model is used. */
lp_status lp_dit_load(const lp_tensor_file *f, const char *prefix, int num_heads, int text_len, lp_backend *be,
                      lp_dit **out);
void lp_dit_free(lp_dit *m);
const lp_dit_config *lp_dit_get_config(const lp_dit *m);

/* ---- Per-stream state: KV cache and prompt ---- */

typedef struct {
    int latent_h, latent_w; /* latent grid H×W (even); tokens per frame = (H/2)·(W/2) */
    int64_t capacity;    /* cache tokens, sink included */
    int local_attn;      /* window in frames, -1 = global */
    int sink_frames;     /* frames kept forever at the front (inside capacity) */
    int max_frames;      /* largest chunk (frames per call) */
    /* Which cached keys a call attends to (the chunk itself always included):
     * trim_window_frames > 0: the first trim_sink_frames frames of the cache plus
     * its last trim_window_frames frames (LIPAR's "M-degree" m0 + m1);
     * otherwise the last max_attn_tokens tokens (0 = local_attn frames with a
     * local window, else the whole cache). */
    int trim_sink_frames, trim_window_frames;
    int64_t max_attn_tokens;
} lp_dit_cache_config;

typedef struct lp_dit_cache lp_dit_cache;

/* Allocates the cache in the model's backend: per block the self-attention
 * K/V [capacity, dim] and the text K/V [text_len, dim] in the backend's KV
 * element type (be->kv_bf16: f32 on the CPU, bf16 on CUDA, 2 or 4 bytes per
 * element), keys stored rotated; plus the saved last frame (f32). */
lp_status lp_dit_cache_create(const lp_dit *m, const lp_dit_cache_config *cc, lp_dit_cache **out);
void lp_dit_cache_free(lp_dit_cache *c);
/* Forgets every cached token (a new video). The prompt stays. */
void lp_dit_cache_reset(lp_dit_cache *c);
/* Encodes the text context [L, text_dim] (zero-padded to text_len) and caches
 * every block's cross-attention K/V. L <= text_len. */
lp_status lp_dit_set_prompt(lp_dit *m, lp_dit_cache *c, const float *context, int L);

/* How the self-attention writes the chunk's K/V into the cache when some
 * tokens are pruned (spec/LIPAR.md §3). Keys are stored rotated at their own
 * (frame, row, col) position. */
typedef enum {
    LP_KV_DENSE,       /* every token is computed: write them all */
    LP_KV_KEPT_ONLY,   /* write the kept tokens only, compacted (direct pruning) */
    LP_KV_CHAIN,       /* pruned slots of frame 0 ← the saved previous-chunk last frame,
                          of frame i ≥ 1 ← frame i−1 of this call (context pass, mdeg) */
    LP_KV_DUPLICATE,   /* pruned slots of every frame ← the saved previous-chunk last
                          frame (noise-aware duplication of `full`) */
    LP_KV_MERGE,       /* a merged token's slot ← the K/V of the token it was merged
                          into, computed in this call (token merging) */
} lp_kv_policy;

typedef struct {
    int n_frames;            /* F, frames in this call */
    int start_frame;         /* absolute index of the chunk's first frame in the stream */
    const float *timesteps;  /* [F] per-frame timestep t (fractional, as the scheduler gives) */
    const uint8_t *keep;     /* [F·h·w] token mask (1 = compute) or NULL = all */
    const int32_t *merge_dst; /* LP_KV_MERGE: [F·h·w] the computed token each pruned token
                                 was merged into (−1 for computed tokens) */
    lp_kv_policy kv_policy;
    int save_last_frame;     /* store this call's rebuilt last-frame K/V (un-rotated) for the next chunk */
} lp_dit_call;

/* Runs the DiT on x [F, C, H, W] for one call on a chunk; writes the flow
 * prediction of the computed tokens into flow [F, C, H, W] (positions of
 * pruned tokens are left untouched). The first call with a new start_frame
 * appends the chunk to the cache (evicting per spec/MODEL.md when it does not
 * fit); later calls with the same start_frame rewrite the chunk from its first
 * slot (the number of tokens written may differ between them, e.g. kept-only
 * steps then a full context pass). A call with no kept token still writes its
 * recovered K/V. */
lp_status lp_dit_forward(lp_dit *m, lp_dit_cache *c, const lp_dit_call *call, const float *x, float *flow);
/* The same with x and flow in the memory of the model's backend
 * (lp_dit_backend): the work is issued, not waited for, so that a caller
 * keeping its latents there runs a chunk's steps without waiting for the
 * device in between. */
lp_status lp_dit_forward_dev(lp_dit *m, lp_dit_cache *c, const lp_dit_call *call, const float *x, float *flow);
/* The backend the model runs on. */
lp_backend *lp_dit_backend(const lp_dit *m);

/* The latent grid H×W of the cache. */
void lp_dit_cache_grid(const lp_dit_cache *c, int *H, int *W);
/* Host seconds spent issuing the work of the forwards on this cache since it
 * was created (the device runs it meanwhile; compared with the wall time of
 * the calls, ≈ 1 means the host, not the device, sets the pace). */
double lp_dit_cache_issue_seconds(const lp_dit_cache *c);

/* Floats in F latent frames [F, C, H, W] of the cache's grid. */
int64_t lp_dit_latent_elems(const lp_dit *m, const lp_dit_cache *c, int F);

/* FLOPs of the linear layers and attention of a forward over n of the chunk's
 * tokens attending to lk keys (for benchmarks). */
double lp_dit_flops(const lp_dit_config *cfg, int64_t n_tokens, int64_t n_keys);

#endif
