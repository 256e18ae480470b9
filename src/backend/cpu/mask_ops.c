/* The CPU backend's keep-mask ops (backend.h): the per-frame kernels of
 * src/prune/mask.c, which define the mask's arithmetic for the batch mask,
 * the streaming mask and every other backend. */
#include "../../prune/mask.h"
#include "cpu_ops.h"

void lp_cpu_mask_distance(const lp_backend *be, float *out, const float *a, const float *b, int H, int W,
                          int distance) {
    lp_mask_frame_distance(be->pool, (lp_mask_distance)distance, a, b, H, W, out);
}

void lp_cpu_mask_median(const lp_backend *be, float *out, const float *p, const float *c, const float *n, int h,
                        int w) {
    lp_mask_frame_median(be->pool, p, c, n, h, w, out);
}

void lp_cpu_mask_gauss(const lp_backend *be, float *out, const float *p, const float *c, int h, int w,
                       const float *wt) {
    (void)be;
    lp_mask_frame_gauss(p, c, h, w, wt, out);
}

void lp_cpu_mask_threshold(const lp_backend *be, uint8_t *out, const float *in, int64_t n, float tau) {
    (void)be;
    lp_mask_threshold(in, n, tau, out);
}

void lp_cpu_mask_or(const lp_backend *be, uint8_t *dst, const uint8_t *src, int64_t n) {
    (void)be;
    for (int64_t i = 0; i < n; i++) dst[i] |= src[i];
}

void lp_cpu_mask_majority(const lp_backend *be, uint8_t *out, const uint8_t *p, const uint8_t *c, const uint8_t *n,
                          int h, int w) {
    (void)be;
    lp_mask_frame_majority(p, c, n, h, w, out);
}

void lp_cpu_mask_open_close(const lp_backend *be, uint8_t *out, const uint8_t *in, uint8_t *tmp, int h, int w) {
    (void)be;
    lp_mask_open_close(in, h, w, tmp, out);
}

void lp_cpu_mask_dilate(const lp_backend *be, uint8_t *out, const uint8_t *p, const uint8_t *c, const uint8_t *n,
                        int h, int w) {
    (void)be;
    lp_mask_frame_dilate(p, c, n, h, w, out);
}
