/* The host side of token merging for the `tome` strategy: averaging the
 * merged tokens' latent patches into their destination and copying the
 * results back. (The restoration of pruned positions, spec/LIPAR.md §4, is
 * the backend op copy_patches, run by the editing loop.) */
#ifndef LP_PRUNE_RECOVER_H
#define LP_PRUNE_RECOVER_H

#include <stdint.h>

#include "../base/status.h"

/* Token merging (prune/alternatives.h): merge_dst[t] is the token that token t
 * was merged into (−1: not merged). lp_merge_average replaces each
 * destination's 2×2 patch of x [F, C, H, W] by the mean over it and its
 * sources; lp_unmerge copies each destination's patch back to its sources. */
lp_status lp_merge_average(float *x, const int32_t *merge_dst, int F, int C, int H, int W);
void lp_unmerge(float *x, const int32_t *merge_dst, int F, int C, int H, int W);

#endif
