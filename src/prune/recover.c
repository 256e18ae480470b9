#include "recover.h"

#include <stdlib.h>

/* Offset of element (c, q, r) of token t's patch in [F, C, H, W]. */
static int64_t patch_at(int64_t t, int c, int q, int r, int C, int H, int W) {
    int64_t w = W / 2, hw = (int64_t)(H / 2) * w, f = t / hw, y = (t % hw) / w, x = t % w;
    return ((f * C + c) * H + 2 * y + q) * W + 2 * x + r;
}

lp_status lp_merge_average(float *x, const int32_t *merge_dst, int F, int C, int H, int W) {
    int64_t n = (int64_t)F * (H / 2) * (W / 2);
    int *count = calloc((size_t)n, sizeof *count);
    if (!count) return lp_fail(LP_ERR_NOMEM, "out of memory merging tokens");
    for (int64_t t = 0; t < n; t++)
        if (merge_dst[t] >= 0) count[merge_dst[t]]++;
    for (int64_t t = 0; t < n; t++) /* sum the sources into their destinations */
        if (merge_dst[t] >= 0)
            for (int c = 0; c < C; c++)
                for (int q = 0; q < 2; q++)
                    for (int r = 0; r < 2; r++)
                        x[patch_at(merge_dst[t], c, q, r, C, H, W)] += x[patch_at(t, c, q, r, C, H, W)];
    for (int64_t t = 0; t < n; t++)
        if (count[t])
            for (int c = 0; c < C; c++)
                for (int q = 0; q < 2; q++)
                    for (int r = 0; r < 2; r++) x[patch_at(t, c, q, r, C, H, W)] /= (float)(count[t] + 1);
    free(count);
    return LP_OK;
}

void lp_unmerge(float *x, const int32_t *merge_dst, int F, int C, int H, int W) {
    int64_t n = (int64_t)F * (H / 2) * (W / 2);
    for (int64_t t = 0; t < n; t++)
        if (merge_dst[t] >= 0)
            for (int c = 0; c < C; c++)
                for (int q = 0; q < 2; q++)
                    for (int r = 0; r < 2; r++)
                        x[patch_at(t, c, q, r, C, H, W)] = x[patch_at(merge_dst[t], c, q, r, C, H, W)];
}
