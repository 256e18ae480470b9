/* conv3d's argument checks, shared by the backends (backend.h). */
#include <limits.h>

#include "backend.h"

lp_status lp_conv3d_check(const float *out, const float *const *in, int n_in, const lp_tensor *w, const lp_tensor *b,
                          const lp_conv3d_geom *g) {
    const char *name = w->name ? w->name : "?";
    if (w->dtype != LP_F32 || (b && b->dtype != LP_F32))
        return lp_fail(LP_ERR_UNSUPPORTED, "conv3d: weight '%s' and its bias must be f32", name);
    int nd = w->ndim;
    int64_t k = nd >= 4 ? w->shape[nd - 1] : 0, kt = nd == 5 ? w->shape[2] : 1;
    if ((nd != 4 && nd != 5) || (k != 1 && k != 3) || w->shape[nd - 2] != k || kt < 1 || kt > 3 ||
        w->shape[0] < 1 || w->shape[0] > INT_MAX || w->shape[1] < 1 || w->shape[1] > INT_MAX)
        return lp_fail(LP_ERR_SHAPE, "conv3d: weight '%s' must be [cout, cin, kt, k, k] or [cout, cin, k, k] with "
                       "k 1 or 3 and kt at most 3", name);
    if ((size_t)lp_tensor_numel(w) > w->nbytes / sizeof(float) || !w->data)
        return lp_fail(LP_ERR_SHAPE, "conv3d: weight '%s' has fewer bytes than its shape", name);
    if (b && (lp_tensor_numel(b) != w->shape[0] || b->nbytes < (size_t)w->shape[0] * sizeof(float) || !b->data))
        return lp_fail(LP_ERR_SHAPE, "conv3d: bias '%s' does not have the %lld elements of weight '%s'",
                       b->name ? b->name : "?", (long long)w->shape[0], name);
    if ((g->stride != 1 && g->stride != 2) || g->pad < 0 || g->pad > k / 2 || g->t_stride < 1 || g->h < 1 ||
        g->w < 1 || g->oh < 1 || g->ow < 1 || g->oh > g->h || g->ow > g->w || g->h > (1 << 20) || g->w > (1 << 20))
        return lp_fail(LP_ERR_ARG, "conv3d '%s': unsupported geometry (%dx%d -> %dx%d, stride %d, pad %d, time "
                       "stride %d)", name, g->w, g->h, g->ow, g->oh, g->stride, g->pad, g->t_stride);
    if (n_in < kt || n_in > 64 || !out || !in)
        return lp_fail(LP_ERR_ARG, "conv3d '%s': %d input frames for a kernel of %lld", name, n_in, (long long)kt);
    for (int i = 0; i < n_in; i++)
        if (!in[i]) return lp_fail(LP_ERR_ARG, "conv3d '%s': input frame %d is NULL", name, i);
    return LP_OK;
}
