/* Restoration of pruned positions (spec/LIPAR.md §4): a latent tensor
 * [F, C, H, W] whose pruned 2×2 patches were not computed is filled from the
 * frame before: frame 0 of the chunk from prev ([C, H, W], the previous
 * chunk's last frame; left as is when prev is NULL), frame i ≥ 1 from frame
 * i−1 after its own restoration (a chain). keep is the token mask
 * [F, H/2, W/2] (1 = computed). */
#ifndef LP_PRUNE_RECOVER_H
#define LP_PRUNE_RECOVER_H

#include <stdint.h>

void lp_restore_chain(float *x, const uint8_t *keep, const float *prev, int F, int C, int H, int W);

#endif
