/* The CPU backend's conv-net ops (backend.h: conv2d, relu, tanh_clamp,
 * clamp01): argument checks around the algorithms of conv2d.c, with the
 * convolution's scratch kept in the backend state. */
#include <limits.h>

#include "conv2d.h"
#include "cpu_ops.h"

lp_status lp_cpu_conv2d(const lp_backend *be, float *out, const lp_conv2d_input *in, const lp_tensor *w,
                        const lp_tensor *b, int stride, unsigned flags) {
    const char *name = w->name ? w->name : "?";
    if (w->dtype != LP_F32 || (b && b->dtype != LP_F32))
        return lp_fail(LP_ERR_UNSUPPORTED, "conv2d: weight '%s' and its bias must be f32", name);
    int64_t k = w->ndim == 4 ? w->shape[2] : 0;
    if (w->ndim != 4 || (k != 1 && k != 3) || w->shape[3] != k || w->shape[0] < 1 || w->shape[0] > INT_MAX ||
        w->shape[1] != (int64_t)in->ca + in->cb)
        return lp_fail(LP_ERR_SHAPE, "conv2d: weight '%s' must be [cout, %d, k, k] with k 1 or 3", name,
                       in->ca + in->cb);
    if ((size_t)lp_tensor_numel(w) > w->nbytes / sizeof(float) || !w->data)
        return lp_fail(LP_ERR_SHAPE, "conv2d: weight '%s' has fewer bytes than its shape", name);
    if (b && (lp_tensor_numel(b) != w->shape[0] || b->nbytes < (size_t)w->shape[0] * sizeof(float) || !b->data))
        return lp_fail(LP_ERR_SHAPE, "conv2d: bias '%s' does not have the %lld elements of weight '%s'",
                       b->name ? b->name : "?", (long long)w->shape[0], name);
    if ((stride != 1 && stride != 2) || (in->up != 1 && in->up != 2) || in->h < 1 || in->w < 1 || in->ca < 1 ||
        in->cb < 0 || (in->cb > 0 && !in->b) || !in->a || !out)
        return lp_fail(LP_ERR_ARG, "conv2d '%s': unsupported input (%d + %d channels, %dx%d, up %d, stride %d)", name,
                       in->ca, in->cb, in->w, in->h, in->up, stride);
    if (flags & ~(LP_CONV_ACCUMULATE | LP_CONV_RELU))
        return lp_fail(LP_ERR_ARG, "conv2d '%s': unknown flags 0x%x", name, flags);
    lp_conv2d cv = {w->data, b ? b->data : NULL, in->ca + in->cb, (int)w->shape[0], (int)k, stride};
    lp_cpu_state *st = be->impl;
    LP_TRY(lp_cpu_reserve(&st->conv_scratch, &st->conv_scratch_len, lp_conv2d_scratch_floats(&cv, in)));
    LP_TRY(lp_conv2d_forward(be->pool, &cv, in, out, (flags & LP_CONV_ACCUMULATE) != 0, st->conv_scratch));
    if (flags & LP_CONV_RELU) {
        int ho, wo;
        lp_conv2d_out_size(&cv, in, &ho, &wo);
        lp_relu(be->pool, out, (int64_t)cv.cout * ho * wo);
    }
    return LP_OK;
}

void lp_cpu_relu(const lp_backend *be, float *x, int64_t n) { lp_relu(be->pool, x, n); }

void lp_cpu_tanh_clamp(const lp_backend *be, float *y, const float *x, int64_t n) {
    lp_tanh_clamp(be->pool, y, x, n);
}

void lp_cpu_clamp01(const lp_backend *be, float *y, const float *x, int64_t n) { lp_clamp01(be->pool, y, x, n); }
