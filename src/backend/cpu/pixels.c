/* The CPU backend's pixel ops (backend.h: rgb24_to_planar, planar_to_rgb24)
 * with the mapping of src/base/pixels.h, a frame's rows of pixels on the
 * pool. */
#include "../../base/pixels.h"
#include "cpu_ops.h"

typedef struct {
    int64_t pixels;
    const uint8_t *rgb_in;
    uint8_t *rgb_out;
    const float *planar_in;
    float *planar_out;
} pixel_task;

/* Pixels [b, e) of all frames, counted over frames × pixels. */
static void to_planar_range(void *ctx, int64_t b, int64_t e) {
    const pixel_task *t = ctx;
    for (int64_t i = b; i < e; i++) {
        int64_t f = i / t->pixels, p = i % t->pixels;
        float *dst = t->planar_out + f * 3 * t->pixels + p;
        for (int c = 0; c < 3; c++) dst[c * t->pixels] = lp_byte_to_unit(t->rgb_in[3 * i + c]);
    }
}

static void to_rgb24_range(void *ctx, int64_t b, int64_t e) {
    const pixel_task *t = ctx;
    for (int64_t i = b; i < e; i++) {
        int64_t f = i / t->pixels, p = i % t->pixels;
        const float *src = t->planar_in + f * 3 * t->pixels + p;
        for (int c = 0; c < 3; c++) t->rgb_out[3 * i + c] = lp_unit_to_byte(src[c * t->pixels]);
    }
}

void lp_cpu_rgb24_to_planar(const lp_backend *be, float *y, const uint8_t *rgb, int64_t frames, int64_t pixels) {
    if (frames <= 0 || pixels <= 0) return;
    pixel_task t = {.pixels = pixels, .rgb_in = rgb, .planar_out = y};
    lp_parallel_for(be->pool, frames * pixels, to_planar_range, &t);
}

void lp_cpu_planar_to_rgb24(const lp_backend *be, uint8_t *rgb, const float *x, int64_t frames, int64_t pixels) {
    if (frames <= 0 || pixels <= 0) return;
    pixel_task t = {.pixels = pixels, .rgb_out = rgb, .planar_in = x};
    lp_parallel_for(be->pool, frames * pixels, to_rgb24_range, &t);
}
