#include "recover.h"

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
