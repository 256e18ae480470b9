/* The CPU backend's Wan VAE ops (backend.h: conv3d, channel_rms_norm,
 * upsample2x, spatial_attention): the kernels of conv3d.c behind the shared
 * argument checks, with their scratch kept in the backend state. */
#include "conv3d.h"
#include "cpu_ops.h"

/* Target size of the im2col and attention-score scratch, in floats. */
#define VAE_SCRATCH_BUDGET ((size_t)1 << 23)

lp_status lp_cpu_conv3d(const lp_backend *be, float *out, const float *const *in, int n_in, const lp_tensor *w,
                        const lp_tensor *b, const lp_conv3d_geom *g) {
    LP_TRY(lp_conv3d_check(out, in, n_in, w, b, g));
    int nd = w->ndim;
    lp_vae_conv_w cw = {.cout = (int)w->shape[0], .cin = (int)w->shape[1], .kt = nd == 5 ? (int)w->shape[2] : 1,
                        .kh = (int)w->shape[nd - 2], .kw = (int)w->shape[nd - 1], .weight = w->data,
                        .bias = b ? b->data : NULL};
    lp_cpu_state *st = be->impl;
    LP_TRY(lp_cpu_reserve(&st->conv_scratch, &st->conv_scratch_len, lp_cpu_vae_conv_scratch(&cw, g,
                                                                                           VAE_SCRATCH_BUDGET)));
    return lp_cpu_vae_conv(be->pool, &cw, g, in, n_in, out, st->conv_scratch, st->conv_scratch_len);
}

void lp_cpu_channel_rms_norm(const lp_backend *be, float *y, const float *x, int64_t frames, int c, int64_t n,
                             const lp_tensor *gamma) {
    lp_cpu_vae_rms_norm(be->pool, x, y, frames, c, n, gamma->data);
}

void lp_cpu_upsample2x(const lp_backend *be, float *out, const float *in, int c, int h, int w) {
    lp_cpu_vae_upsample2x(be->pool, in, out, c, h, w);
}

lp_status lp_cpu_spatial_attention(const lp_backend *be, float *out, const float *q, const float *k, const float *v,
                                   int c, int64_t n) {
    if (c < 1 || n < 1 || !out || !q || !k || !v)
        return lp_fail(LP_ERR_ARG, "spatial_attention: %d channels, %lld pixels", c, (long long)n);
    lp_cpu_state *st = be->impl;
    LP_TRY(lp_cpu_reserve(&st->scores, &st->scores_len, lp_cpu_vae_attention_scratch(n, VAE_SCRATCH_BUDGET)));
    return lp_cpu_vae_attention(be->pool, q, k, v, out, c, n, st->scores, st->scores_len);
}
