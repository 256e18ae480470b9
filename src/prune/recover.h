/* Restoration of pruned positions (spec/LIPAR.md §4): a latent tensor
 * [F, C, H, W] whose pruned 2×2 patches were not computed is filled from the
 * frame before: frame 0 of the chunk from prev ([C, H, W], the previous
 * chunk's last frame; left as is when prev is NULL), frame i ≥ 1 from frame
 * i−1 after its own restoration (a chain). keep is the token mask
 * [F, H/2, W/2] (1 = computed). */
#ifndef LP_PRUNE_RECOVER_H
#define LP_PRUNE_RECOVER_H

#include <stdint.h>

#include "../base/status.h"

void lp_restore_chain(float *x, const uint8_t *keep, const float *prev, int F, int C, int H, int W);

/* Token merging (prune/alternatives.h): merge_dst[t] is the token that token t
 * was merged into (−1: not merged). lp_merge_average replaces each
 * destination's 2×2 patch of x [F, C, H, W] by the mean over it and its
 * sources; lp_unmerge copies each destination's patch back to its sources. */
lp_status lp_merge_average(float *x, const int32_t *merge_dst, int F, int C, int H, int W);
void lp_unmerge(float *x, const int32_t *merge_dst, int F, int C, int H, int W);

#endif
