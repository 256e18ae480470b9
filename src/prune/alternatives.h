/* The token-reduction alternatives LIPAR is compared with (spec/LIPAR.md §5),
 * planned per chunk from its clean source latents [F, C, H, W] on the 2×2
 * patch grid, at a target pruned fraction r of the chunk's tokens:
 *
 * - importance pruning: in every frame (except the video's first, kept
 *   whole) the ⌊r·h·w⌋ patches with the lowest L2 norm are dropped; they are
 *   copied from the previous frame (restoration) with LIPAR's K/V recovery.
 * - ToMe-style bipartite merging: the chunk's patches are split in a
 *   checkerboard into sources A and destinations B; each source finds its most
 *   cosine-similar destination among the 3×3 neighbours in its own and the
 *   other frames of the chunk; the ⌊r·N⌋ most similar sources (at most |A|)
 *   merge into their destinations. A merged token is computed once on the
 *   average of its members; its K/V are written into every member's cache
 *   slot (so it is attended with its multiplicity) and its output is copied
 *   back to every member (unmerged). */
#ifndef LP_PRUNE_ALTERNATIVES_H
#define LP_PRUNE_ALTERNATIVES_H

#include <stdint.h>

#include "../base/status.h"

/* keep [F][H/2][W/2]: 1 = compute. first_is_video_start: frame 0 is the
 * video's first frame (kept whole). */
lp_status lp_importance_mask(const float *latents, int F, int C, int H, int W, double r, int first_is_video_start,
                             uint8_t *keep);

/* merge_dst [F·(H/2)·(W/2)]: the chunk-local index of the token a token is
 * merged into, or −1 for a token that is computed. */
lp_status lp_tome_plan(const float *latents, int F, int C, int H, int W, double r, int32_t *merge_dst);

#endif
