/* Memory and data-movement ops of the CPU backend (buffers are host memory),
 * and the editing loop's elementwise steps (flow_x0, flow_renoise,
 * copy_patches) with the formulas of src/pipeline/scheduler.c. */
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"

void *lp_cpu_alloc(const lp_backend *be, size_t bytes) {
    (void)be;
    size_t n = (bytes + 63) & ~(size_t)63;
    if (n < bytes) {
        lp_fail(LP_ERR_NOMEM, "cannot allocate %zu bytes", bytes);
        return NULL;
    }
    void *p = aligned_alloc(64, n ? n : 64);
    if (!p) {
        lp_fail(LP_ERR_NOMEM, "out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    memset(p, 0, n ? n : 64);
    return p;
}

void lp_cpu_release(const lp_backend *be, void *p) {
    (void)be;
    free(p);
}

lp_status lp_cpu_copy(const lp_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memmove(dst, src, bytes);
    return LP_OK;
}

lp_status lp_cpu_patchify(const lp_backend *be, float *tokens, const float *x, const int32_t *idx, int64_t n, int C,
                          int H, int W) {
    (void)be;
    int64_t w = W / 2, hw = (int64_t)(H / 2) * w, HW = (int64_t)H * W;
    for (int64_t i = 0; i < n; i++) {
        int64_t t = idx ? idx[i] : i, f = t / hw, s = t % hw, r = s / w, c = s % w;
        float *dst = tokens + i * C * 4;
        for (int ch = 0; ch < C; ch++)
            for (int q = 0; q < 2; q++)
                for (int rr = 0; rr < 2; rr++)
                    dst[(ch * 2 + q) * 2 + rr] = x[(f * C + ch) * HW + (2 * r + q) * W + 2 * c + rr];
    }
    return LP_OK;
}

lp_status lp_cpu_unpatchify(const lp_backend *be, float *x, const float *tokens, const int32_t *idx, int64_t n, int C,
                            int H, int W) {
    (void)be;
    int64_t w = W / 2, hw = (int64_t)(H / 2) * w, HW = (int64_t)H * W;
    for (int64_t i = 0; i < n; i++) {
        int64_t t = idx ? idx[i] : i, f = t / hw, s = t % hw, r = s / w, c = s % w;
        const float *src = tokens + i * C * 4;
        for (int q = 0; q < 2; q++)
            for (int rr = 0; rr < 2; rr++)
                for (int ch = 0; ch < C; ch++)
                    x[(f * C + ch) * HW + (2 * r + q) * W + 2 * c + rr] = src[(q * 2 + rr) * C + ch];
    }
    return LP_OK;
}

void lp_cpu_add(const lp_backend *be, float *y, const float *a, const float *b, int64_t n) {
    (void)be;
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

lp_status lp_cpu_clear(const lp_backend *be, void *p, size_t bytes) {
    (void)be;
    if (bytes) memset(p, 0, bytes);
    return LP_OK;
}

void lp_cpu_flow_x0(const lp_backend *be, float *x0, const float *xt, const float *v, float sigma, int64_t n) {
    (void)be;
    double sg = sigma;
    for (int64_t i = 0; i < n; i++) x0[i] = (float)((double)xt[i] - sg * (double)v[i]);
}

void lp_cpu_flow_renoise(const lp_backend *be, float *x, const float *x0, const float *eps, float sigma, int64_t n) {
    (void)be;
    float keep = 1.0f - sigma;
    for (int64_t i = 0; i < n; i++) x[i] = keep * x0[i] + sigma * eps[i];
}

lp_status lp_cpu_copy_patches(const lp_backend *be, float *dst, const float *src, const uint8_t *keep, int kept, int C,
                              int H, int W) {
    (void)be;
    int h = H / 2, w = W / 2;
    int64_t HW = (int64_t)H * W;
    for (int r = 0; r < h; r++)
        for (int col = 0; col < w; col++) {
            if ((keep[r * w + col] != 0) != (kept != 0)) continue;
            for (int c = 0; c < C; c++)
                for (int q = 0; q < 2; q++) {
                    int64_t o = c * HW + (int64_t)(2 * r + q) * W + 2 * col;
                    dst[o] = src[o];
                    dst[o + 1] = src[o + 1];
                }
        }
    return LP_OK;
}

void lp_cpu_synchronize(const lp_backend *be) { (void)be; }

size_t lp_cpu_memory_in_use(const lp_backend *be) {
    (void)be;
    return 0;
}
