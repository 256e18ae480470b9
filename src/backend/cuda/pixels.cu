/* The CUDA backend's pixel ops (backend.h: rgb24_to_planar,
 * planar_to_rgb24): video frames enter and leave the device as bytes, a
 * quarter of the f32 frames' transfer. One thread per pixel with its three
 * samples; the arithmetic is src/base/pixels.h's, IEEE-rounded (__fdiv_rn,
 * __fmul_rn, __fadd_rn: no fused multiply-add), so the results equal the
 * CPU's bit for bit. */
#include <stdint.h>

#include "cuda_internal.h"

#define THREADS 256

__device__ static float byte_to_unit(uint8_t b) { return __fdiv_rn((float)b, 255.0f); }

__device__ static uint8_t unit_to_byte(float v) {
    if (!(v > 0.0f)) v = 0.0f;
    if (v > 1.0f) v = 1.0f;
    return (uint8_t)__fadd_rn(__fmul_rn(v, 255.0f), 0.5f);
}

__global__ static void to_planar_kernel(float *y, const uint8_t *rgb, int64_t n, int64_t pixels) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t f = i / pixels, p = i - f * pixels;
        float *dst = y + f * 3 * pixels + p;
        for (int c = 0; c < 3; c++) dst[c * pixels] = byte_to_unit(rgb[3 * i + c]);
    }
}

__global__ static void to_rgb24_kernel(uint8_t *rgb, const float *x, int64_t n, int64_t pixels) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t f = i / pixels, p = i - f * pixels;
        const float *src = x + f * 3 * pixels + p;
        for (int c = 0; c < 3; c++) rgb[3 * i + c] = unit_to_byte(src[c * pixels]);
    }
}

extern "C" void lp_cuda_rgb24_to_planar(const lp_backend *be, float *y, const uint8_t *rgb, int64_t frames,
                                        int64_t pixels) {
    if (frames <= 0 || pixels <= 0) return;
    to_planar_kernel<<<lp_cuda_grid(frames * pixels, THREADS), THREADS, 0, lp_cuda(be)->stream>>>(
        y, rgb, frames * pixels, pixels);
    lp_cuda_check_launch(be, "rgb24_to_planar");
}

extern "C" void lp_cuda_planar_to_rgb24(const lp_backend *be, uint8_t *rgb, const float *x, int64_t frames,
                                        int64_t pixels) {
    if (frames <= 0 || pixels <= 0) return;
    to_rgb24_kernel<<<lp_cuda_grid(frames * pixels, THREADS), THREADS, 0, lp_cuda(be)->stream>>>(
        rgb, x, frames * pixels, pixels);
    lp_cuda_check_launch(be, "planar_to_rgb24");
}
