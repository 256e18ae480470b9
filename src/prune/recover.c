#include "recover.h"

#include <stdlib.h>

void lp_restore_chain(float *x, const uint8_t *keep, const float *prev, int F, int C, int H, int W) {
    int h = H / 2, w = W / 2;
    int64_t HW = (int64_t)H * W, frame = (int64_t)C * HW;
    for (int f = 0; f < F; f++) {
        const float *src = f ? x + (f - 1) * frame : prev;
        if (!src) continue;
        float *dst = x + f * frame;
        const uint8_t *k = keep + (int64_t)f * h * w;
        for (int r = 0; r < h; r++)
            for (int col = 0; col < w; col++) {
                if (k[r * w + col]) continue;
                for (int c = 0; c < C; c++)
                    for (int q = 0; q < 2; q++)
                        for (int rr = 0; rr < 2; rr++) {
                            int64_t o = c * HW + (int64_t)(2 * r + q) * W + 2 * col + rr;
                            dst[o] = src[o];
                        }
            }
    }
}

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
