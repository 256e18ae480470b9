/* The LIPAR keep-mask (spec/LIPAR.md §1): which 2×2 latent patches of each
 * frame are recomputed (1 = KEEP) and which are copied from the previous frame
 * (0 = PRUNE).
 *
 * Two modes:
 * - batch (lp_mask_compute): the paper-era mask over a whole clip, bit-exact
 *   with the reference (DennisMenn/lipar df28874e, rlt_prune). Its median,
 *   majority and dilation steps look one frame ahead.
 * - streaming (lp_mask_stream_*): chunks of LP_MASK_CHUNK latent frames, never
 *   looking past the current chunk, on a backend (the keep-mask ops of
 *   backend.h, whose CPU versions are the per-frame kernels below). The keep-mask of a chunk is exactly the
 *   batch mask of the clip truncated after that chunk, restricted to the
 *   chunk's frames (docs/STREAMING_MASK.md). State is O(H·W), independent of
 *   the video length. On the last chunk of a video it equals the batch mask.
 *
 * Layouts: latents are [T][16][H][W] f32 (the golden files store
 * [1, T, 16, H, W]); masks are [T][H/2][W/2] uint8 (0/1); H and W must be even
 * (the 2×2 patching of spec §1; odd sizes fail with LP_ERR_SHAPE).
 *
 * The step functions (lp_mask_patch_distance ... lp_mask_dilate) are public
 * so that each one can be tested on its own; their volumes hold the T−1
 * "distance frames" 1…T−1 of the video (frame 0 never takes part, §1 step 9). */
#ifndef LP_PRUNE_MASK_H
#define LP_PRUNE_MASK_H

#include <stdint.h>

#include "../base/status.h"
#include "../backend/backend.h"
#include "../base/threadpool.h"

#define LP_MASK_CHANNELS 16 /* latent channels: a patch holds 2·2·16 = 64 values */
#define LP_MASK_CHUNK 3     /* latent frames per chunk (the drift reference moves per chunk) */

typedef enum {
    LP_MASK_L1_GAUSSIAN = 0, /* "L1_gaussian": trimmed L1, median, causal Gaussian (the default) */
    LP_MASK_L1,              /* "L1": trimmed L1, median, no Gaussian */
    LP_MASK_L2,              /* "L2": ‖sorted |a−b| (all 64)‖₂ / 64, median, no Gaussian */
    LP_MASK_COS,             /* "cos": 1 − cosine similarity of the two 64-vectors, median, no Gaussian */
} lp_mask_distance;

typedef struct {
    lp_mask_distance distance;
    float tau;  /* step 4: keep = d > tau (compared in fp32 like the reference) */
    int drift;  /* nonzero: step 5, the long-term drift check against tau2 */
    float tau2; /* step 5: keep |= distance(R, x_t) > tau2 */
} lp_mask_opts;

/* The paper defaults: L1_gaussian, tau 0.149, drift check on with tau2 0.3. */
void lp_mask_opts_default(lp_mask_opts *o);
/* Parses the reference's names "L1_gaussian", "L1", "L2", "cos"; anything else
 * -> LP_ERR_ARG naming the value. */
lp_status lp_mask_distance_from_name(const char *name, lp_mask_distance *out);
const char *lp_mask_distance_name(lp_mask_distance d);

/* ---- batch ---- */

/* The paper-era keep-mask of a clip (§1 steps 1–9). latents [T][16][H][W]
 * (T >= 1, H and W even and > 0) -> keep [T][H/2][W/2]. kept_per_frame [T]
 * and kept_fraction (the mean over all cells, frame 0 included) may be NULL.
 * Clips of 1 or 2 frames, and grids of one patch row or column, use the same
 * edge rules as longer ones (the reference itself fails on them): every filter
 * sees a 3-D volume; with T <= 3 the drift check has nothing to check. */
lp_status lp_mask_compute(const lp_mask_opts *o, const float *latents, int T, int H, int W, uint8_t *keep,
                          double *kept_per_frame, double *kept_fraction);

/* Fraction of nonzero cells among n (0 for n == 0). */
double lp_mask_kept_fraction(const uint8_t *keep, int64_t n);

/* ---- the steps, each on its own ---- */

/* Step 1: per 2×2 patch, the distance between frames a and b ([16][H][W] each)
 * -> out [H/2][W/2]. L1 / L1_gaussian: the 64 values |a−b| sorted ascending,
 * sorted indices 12…50 summed in that order in fp32, divided by 39 (the
 * reference's torch.norm(p=1)/39). L2 and cos accumulate in double and round
 * once (no golden data pins their rounding); cos clamps each norm at 1e-8 like
 * torch.cosine_similarity. */
void lp_mask_patch_distance(lp_mask_distance dist, const float *a, const float *b, int H, int W, float *out);

/* Step 2: 3×3×3 median over a volume [n][h][w] (n, h, w >= 1), edge mode
 * "nearest" on every axis (scipy median_filter): the 14th smallest of the 27
 * values. out must not alias in. */
void lp_mask_median3(const float *in, int n, int h, int w, float *out);

/* Step 3: the time-causal Gaussian over [n][h][w]: out[t] = Σ w·in over
 * dt ∈ {−1, 0}, dr, dc ∈ {−1, 0, 1}, weights exp(−(dt²+dr²+dc²)/4.5) over
 * those 18 taps normalised to sum 1 (built in fp32 like the reference),
 * replicate padding. out must not alias in. */
void lp_mask_gauss_causal(const float *in, int n, int h, int w, float *out);

/* Step 4: keep[i] = in[i] > tau for count cells. */
void lp_mask_threshold(const float *in, int64_t count, float tau, uint8_t *keep);

/* Step 5: the long-term drift check (§1 step 5) on keep [T−1][H/2][W/2] (the
 * step-4 mask of frames 1…T−1, updated in place) with latents [T][16][H][W]:
 * R starts as frame 0, takes kept patches of frames 1 and 2; for t >= 3,
 * keep[t] |= distance(R, x_t) > tau2; R moves to the candidate after frames
 * t ≡ 2 (mod 3). Uses the raw step-1 distance `dist`. */
lp_status lp_mask_drift(lp_mask_distance dist, float tau2, const float *latents, int T, int H, int W,
                        uint8_t *keep);

/* Step 6: binary 3×3×3 median (majority: 1 where at least 14 of the 27 cells
 * are 1) over [n][h][w], edge mode "nearest". out must not alias in. */
void lp_mask_majority3(const uint8_t *in, int n, int h, int w, uint8_t *out);

/* Step 7: one frame [h][w]: opening then closing with a 3×3 square, OpenCV
 * morphologyEx semantics (outside the frame counts as 1 for an erosion, as 0
 * for a dilation). tmp holds h·w bytes; out may alias in. */
void lp_mask_open_close(const uint8_t *in, int h, int w, uint8_t *tmp, uint8_t *out);

/* Step 8: binary dilation with a 3×5×5 all-ones element (|dt| <= 1, |dr| <= 2,
 * |dc| <= 2) over [n][h][w], outside = 0 (scipy binary_dilation). out must not
 * alias in. */
void lp_mask_dilate(const uint8_t *in, int n, int h, int w, uint8_t *out);

/* ---- the per-frame kernels: the CPU backend's keep-mask ops ----
 * Planes [h][w] of frames t−1, t, t+1 (p, c, n) after the caller's edge rule
 * (clamped for "nearest"/"replicate", NULL for outside = 0). */

/* lp_mask_patch_distance of one frame with the patch rows spread over pool
 * (NULL: serial; the same results). */
void lp_mask_frame_distance(lp_pool *pool, lp_mask_distance dist, const float *a, const float *b, int H, int W,
                            float *out);
/* One frame of lp_mask_median3, rows on pool (NULL: serial). */
void lp_mask_frame_median(lp_pool *pool, const float *p, const float *c, const float *n, int h, int w, float *out);
/* The 18 weights [dt = −1, 0][dr][dc] of lp_mask_gauss_causal. */
void lp_mask_gauss_weights(float wt[18]);
/* One frame of lp_mask_gauss_causal with the weights wt: each cell's sum in
 * fp32, in the order dt, dr, dc. */
void lp_mask_frame_gauss(const float *p, const float *c, int h, int w, const float *wt, float *out);
/* One frame of lp_mask_majority3. */
void lp_mask_frame_majority(const uint8_t *p, const uint8_t *c, const uint8_t *n, int h, int w, uint8_t *out);
/* One frame of lp_mask_dilate (p or n NULL: no frame there). */
void lp_mask_frame_dilate(const uint8_t *p, const uint8_t *c, const uint8_t *n, int h, int w, uint8_t *out);

/* ---- streaming ---- */

typedef struct lp_mask_stream lp_mask_stream;

/* A streaming mask for latents of H×W (even, > 0) with options o (copied),
 * whose state and work live on be (which must outlive the stream; the CPU
 * backend spreads the distance and median rows over its pool). */
lp_status lp_mask_stream_open(const lp_mask_opts *o, int H, int W, lp_backend *be, lp_mask_stream **out);

/* Takes the next n latent frames [n][16][H][W] (host memory; n = LP_MASK_CHUNK; a final
 * chunk may be shorter, 1 <= n < LP_MASK_CHUNK, and ends the stream) and
 * writes their keep-mask [n][H/2][W/2] (host memory): the batch mask of every
 * frame received so far, restricted to these n frames. The first frame of the
 * stream is all-keep. Fails with LP_ERR_ARG for a bad n or a push after the
 * end, and with the backend's error when one of its ops fails. */
lp_status lp_mask_stream_push_chunk(lp_mask_stream *s, const float *latents, int n, uint8_t *keep);

/* Number of latent frames pushed so far. */
int64_t lp_mask_stream_frames(const lp_mask_stream *s);

/* Frees s (NULL is fine). */
void lp_mask_stream_close(lp_mask_stream *s);

#endif
