/* A profile without a profiler, for the benchmarks (the GPU machines have no
 * Nsight): op_profile_wrap makes a copy of a backend's op table whose ops wait
 * for the backend before and after each call and add their time (and FLOPs,
 * for the matrix products) to a row keyed by the op and its fixed dimensions
 * (not the row count, which pruning changes from call to call). The waiting
 * removes the overlap of host and device work, so the rows sum to more than
 * an unprofiled run takes; their shares are what the profile is for.
 * With op_profile_host set, the ops do not wait: the rows are the host's
 * time to issue each op (argument checks, staging, launches), which sets
 * the pace where the device work per op is small.
 * Single-threaded use only (static state). */
#ifndef LP_BENCH_OP_PROFILE_H
#define LP_BENCH_OP_PROFILE_H

#include <stdio.h>
#include <string.h>

#include "../src/backend/backend.h"
#include "../src/base/clock.h"

static const lp_backend *op_profile_real; /* the wrapped backend */
static int op_profile_host;                /* time the host's issue only (no waits) */
static struct {
    char key[80];
    double seconds, gflop;
    long calls;
} op_profile_rows[128];
static int op_profile_n;

static double op_profile_start(void) {
    if (!op_profile_host) op_profile_real->synchronize(op_profile_real);
    return lp_seconds();
}

static void op_profile_account(const char *key, double t0, double gflop) {
    if (!op_profile_host) op_profile_real->synchronize(op_profile_real);
    double dt = lp_seconds() - t0;
    int i = 0;
    while (i < op_profile_n && strcmp(op_profile_rows[i].key, key)) i++;
    if (i == op_profile_n) {
        if (op_profile_n == (int)(sizeof op_profile_rows / sizeof *op_profile_rows)) return;
        memset(&op_profile_rows[i], 0, sizeof op_profile_rows[i]);
        snprintf(op_profile_rows[op_profile_n++].key, sizeof op_profile_rows[0].key, "%s", key);
    }
    op_profile_rows[i].seconds += dt;
    op_profile_rows[i].gflop += gflop;
    op_profile_rows[i].calls++;
}

static void op_profile_reset(void) { op_profile_n = 0; }

/* Prints the rows, times divided by `per` (frames, chunks), then resets. */
static void op_profile_print(const char *what, const char *unit, double per) {
    double total = 0;
    for (int i = 0; i < op_profile_n; i++) total += op_profile_rows[i].seconds;
    printf("%s: op profile per %s (%s; %.1f ms per %s in all)\n", what, unit,
           op_profile_host ? "host issue time, ops not waited on" : "ops waited on one by one", 1e3 * total / per,
           unit);
    printf("| op | calls | ms | share | TFLOP/s |\n|---|---|---|---|---|\n");
    for (int i = 0; i < op_profile_n; i++)
        printf("| %s | %.1f | %.3f | %.1f%% | %.1f |\n", op_profile_rows[i].key, op_profile_rows[i].calls / per,
               1e3 * op_profile_rows[i].seconds / per, 100 * op_profile_rows[i].seconds / total,
               op_profile_rows[i].seconds > 0 ? op_profile_rows[i].gflop / op_profile_rows[i].seconds / 1e3 : 0.0);
    op_profile_reset();
}

/* ---- the wrapped ops (be is the copy: the real backend is called) ---- */

static lp_status op_profile_linear(const lp_backend *be, void *y, const void *x, int64_t M, const lp_tensor *W,
                                   const lp_tensor *b, unsigned flags) {
    (void)be;
    double t0 = op_profile_start();
    lp_status s = op_profile_real->linear(op_profile_real, y, x, M, W, b, flags);
    char key[80];
    snprintf(key, sizeof key, "linear %lld->%lld%s", (long long)W->shape[1], (long long)W->shape[0],
             flags & LP_LINEAR_GELU ? " +GELU" : "");
    op_profile_account(key, t0, 2e-9 * (double)M * (double)W->shape[0] * (double)W->shape[1]);
    return s;
}

static lp_status op_profile_linear_batch(const lp_backend *be, void *y, int64_t y_stride, const void *x, int64_t M,
                                         const lp_tensor *const *W, const lp_tensor *const *b, int count,
                                         unsigned flags) {
    (void)be;
    double t0 = op_profile_start();
    lp_status s = op_profile_real->linear_batch(op_profile_real, y, y_stride, x, M, W, b, count, flags);
    char key[80];
    snprintf(key, sizeof key, "linear_batch %d x %lld->%lld", count, (long long)W[0]->shape[1],
             (long long)W[0]->shape[0]);
    op_profile_account(key, t0, 2e-9 * count * (double)M * (double)W[0]->shape[0] * (double)W[0]->shape[1]);
    return s;
}

static void op_profile_norm_modulate(const lp_backend *be, void *y, const float *x, int64_t dim, const lp_tensor *w,
                                     const lp_tensor *b, float eps, const lp_segments *seg, const float *shift,
                                     const float *scale, int64_t stride) {
    (void)be;
    double t0 = op_profile_start();
    op_profile_real->norm_modulate(op_profile_real, y, x, dim, w, b, eps, seg, shift, scale, stride);
    op_profile_account("norm_modulate", t0, 0);
}

static void op_profile_rms_norm_rope(const lp_backend *be, void *y, int y_act, const float *x, int64_t rows,
                                     int heads, int head_dim, const lp_tensor *w, float eps, const int32_t *pos) {
    (void)be;
    double t0 = op_profile_start();
    op_profile_real->rms_norm_rope(op_profile_real, y, y_act, x, rows, heads, head_dim, w, eps, pos);
    op_profile_account(pos ? "rms_norm_rope (rotated)" : "rms_norm_rope", t0, 0);
}

static void op_profile_residual_norm_modulate(const lp_backend *be, float *x, const float *y, const float *gate,
                                              int64_t gate_stride, void *xn, int64_t dim, const lp_tensor *w,
                                              const lp_tensor *b, float eps, const lp_segments *seg,
                                              const float *shift, const float *scale, int64_t stride) {
    (void)be;
    double t0 = op_profile_start();
    op_profile_real->residual_norm_modulate(op_profile_real, x, y, gate, gate_stride, xn, dim, w, b, eps, seg, shift,
                                            scale, stride);
    op_profile_account("residual_norm_modulate", t0, 0);
}

static lp_status op_profile_kv_store(const lp_backend *be, void *cache_rows, const int32_t *dst_idx, const float *src,
                                     const void *saved, const int32_t *src_idx, int64_t rows, int heads, int head_dim,
                                     const int32_t *pos) {
    (void)be;
    double t0 = op_profile_start();
    lp_status s = op_profile_real->kv_store(op_profile_real, cache_rows, dst_idx, src, saved, src_idx, rows, heads,
                                            head_dim, pos);
    op_profile_account(src_idx ? "kv_store (recovery gather)" : dst_idx ? "kv_store (scattered)" : "kv_store", t0, 0);
    return s;
}

static lp_status op_profile_attention(const lp_backend *be, void *out, const void *q, int64_t Lq, int heads,
                                      int head_dim, const lp_kv_range *ranges, int nranges, float scale) {
    (void)be;
    double t0 = op_profile_start();
    lp_status s = op_profile_real->attention(op_profile_real, out, q, Lq, heads, head_dim, ranges, nranges, scale);
    int64_t lk = 0;
    for (int i = 0; i < nranges; i++) lk += ranges[i].n;
    op_profile_account(nranges > 1 ? "attention (self, two key ranges)" : "attention (one key range)", t0,
                       4e-9 * (double)Lq * (double)lk * heads * head_dim);
    return s;
}

static lp_status op_profile_conv2d(const lp_backend *be, float *out, const lp_conv2d_input *in, const lp_tensor *w,
                                   const lp_tensor *b, int stride, unsigned flags) {
    (void)be;
    double t0 = op_profile_start();
    lp_status s = op_profile_real->conv2d(op_profile_real, out, in, w, b, stride, flags);
    int k = (int)w->shape[2], hin = in->h * in->up, win = in->w * in->up;
    int ho = (hin + 2 * (k / 2) - k) / stride + 1, wo = (win + 2 * (k / 2) - k) / stride + 1;
    char key[80];
    snprintf(key, sizeof key, "conv %d+%d->%lld k%d s%d up%d %dx%d", in->ca, in->cb, (long long)w->shape[0], k, stride,
             in->up, in->w, in->h);
    op_profile_account(key, t0, 2e-9 * (double)w->shape[0] * (double)(in->ca + in->cb) * k * k * ho * wo);
    return s;
}

/* The Wan VAE's ops (spec/VAE.md, "Wan VAE"), keyed by channels, kernel,
 * strides and input frame size (not the frame count, which differs between a
 * clip's first chunk and the later ones). */
static lp_status op_profile_conv3d(const lp_backend *be, float *out, const float *const *in, int n_in,
                                   const lp_tensor *w, const lp_tensor *b, const lp_conv3d_geom *g) {
    (void)be;
    double t0 = op_profile_start();
    lp_status s = op_profile_real->conv3d(op_profile_real, out, in, n_in, w, b, g);
    int kt = w->ndim == 5 ? (int)w->shape[2] : 1, kh = (int)w->shape[w->ndim - 2], kw = (int)w->shape[w->ndim - 1];
    int n_out = n_in >= kt ? (n_in - kt) / g->t_stride + 1 : 0;
    char key[80];
    snprintf(key, sizeof key, "conv3d %lld->%lld k%dx%dx%d%s%s %dx%d", (long long)w->shape[1],
             (long long)w->shape[0], kt, kh, kw, g->stride == 2 ? " s2" : "", g->t_stride == 2 ? " ts2" : "", g->w,
             g->h);
    op_profile_account(key, t0,
                       2e-9 * (double)w->shape[0] * (double)w->shape[1] * kt * kh * kw * (double)g->oh * g->ow *
                           n_out);
    return s;
}

static void op_profile_channel_rms_norm(const lp_backend *be, float *y, const float *x, int64_t frames, int c,
                                        int64_t n, const lp_tensor *gamma) {
    (void)be;
    double t0 = op_profile_start();
    op_profile_real->channel_rms_norm(op_profile_real, y, x, frames, c, n, gamma);
    char key[80];
    snprintf(key, sizeof key, "channel_rms_norm %d ch x %lld px", c, (long long)n);
    op_profile_account(key, t0, 0);
}

static void op_profile_upsample2x(const lp_backend *be, float *out, const float *in, int c, int h, int w) {
    (void)be;
    double t0 = op_profile_start();
    op_profile_real->upsample2x(op_profile_real, out, in, c, h, w);
    char key[80];
    snprintf(key, sizeof key, "upsample2x %d ch %dx%d", c, w, h);
    op_profile_account(key, t0, 0);
}

static lp_status op_profile_spatial_attention(const lp_backend *be, float *out, const float *q, const float *k,
                                              const float *v, int c, int64_t n) {
    (void)be;
    double t0 = op_profile_start();
    lp_status s = op_profile_real->spatial_attention(op_profile_real, out, q, k, v, c, n);
    char key[80];
    snprintf(key, sizeof key, "spatial_attention %d ch x %lld px", c, (long long)n);
    op_profile_account(key, t0, 4e-9 * (double)n * (double)n * c);
    return s;
}

#define OP_PROFILE_IN_PLACE(name)                                          \
    static void op_profile_##name(const lp_backend *be, float *x, int64_t n) { \
        (void)be;                                                          \
        double t0 = op_profile_start();                                    \
        op_profile_real->name(op_profile_real, x, n);                      \
        op_profile_account(#name, t0, 0);                                  \
    }
OP_PROFILE_IN_PLACE(relu)
OP_PROFILE_IN_PLACE(silu)
#undef OP_PROFILE_IN_PLACE

#define OP_PROFILE_UNARY(name)                                                            \
    static void op_profile_##name(const lp_backend *be, float *y, const float *x, int64_t n) { \
        (void)be;                                                                         \
        double t0 = op_profile_start();                                                   \
        op_profile_real->name(op_profile_real, y, x, n);                                  \
        op_profile_account(#name, t0, 0);                                                 \
    }
OP_PROFILE_UNARY(tanh_clamp)
OP_PROFILE_UNARY(clamp01)
#undef OP_PROFILE_UNARY

static void op_profile_add(const lp_backend *be, float *y, const float *a, const float *b, int64_t n) {
    (void)be;
    double t0 = op_profile_start();
    op_profile_real->add(op_profile_real, y, a, b, n);
    op_profile_account("add", t0, 0);
}

#define OP_PROFILE_MOVE(name, label)                                                             \
    static lp_status op_profile_##name(const lp_backend *be, void *dst, const void *src, size_t bytes) { \
        (void)be;                                                                                \
        double t0 = op_profile_start();                                                          \
        lp_status s = op_profile_real->name(op_profile_real, dst, src, bytes);                   \
        op_profile_account(label, t0, 0);                                                        \
        return s;                                                                                \
    }
OP_PROFILE_MOVE(copy, "copy (device)")
OP_PROFILE_MOVE(upload, "upload")
OP_PROFILE_MOVE(download, "download")
#undef OP_PROFILE_MOVE

static lp_status op_profile_patchify(const lp_backend *be, float *tokens, const float *x, const int32_t *idx,
                                     int64_t n, int C, int H, int W) {
    (void)be;
    double t0 = op_profile_start();
    lp_status s = op_profile_real->patchify(op_profile_real, tokens, x, idx, n, C, H, W);
    op_profile_account("patchify", t0, 0);
    return s;
}

static lp_status op_profile_unpatchify(const lp_backend *be, float *x, const float *tokens, const int32_t *idx,
                                       int64_t n, int C, int H, int W) {
    (void)be;
    double t0 = op_profile_start();
    lp_status s = op_profile_real->unpatchify(op_profile_real, x, tokens, idx, n, C, H, W);
    op_profile_account("unpatchify", t0, 0);
    return s;
}

/* A copy of be's table with every compute and data-movement op timed. */
static lp_backend op_profile_wrap(const lp_backend *be) {
    op_profile_real = be;
    lp_backend p = *be;
    p.linear = op_profile_linear;
    p.linear_batch = op_profile_linear_batch;
    p.norm_modulate = op_profile_norm_modulate;
    p.rms_norm_rope = op_profile_rms_norm_rope;
    p.residual_norm_modulate = op_profile_residual_norm_modulate;
    p.kv_store = op_profile_kv_store;
    p.attention = op_profile_attention;
    p.conv2d = op_profile_conv2d;
    p.conv3d = op_profile_conv3d;
    p.channel_rms_norm = op_profile_channel_rms_norm;
    p.upsample2x = op_profile_upsample2x;
    p.spatial_attention = op_profile_spatial_attention;
    p.relu = op_profile_relu;
    p.silu = op_profile_silu;
    p.tanh_clamp = op_profile_tanh_clamp;
    p.clamp01 = op_profile_clamp01;
    p.add = op_profile_add;
    p.copy = op_profile_copy;
    p.upload = op_profile_upload;
    p.download = op_profile_download;
    p.patchify = op_profile_patchify;
    p.unpatchify = op_profile_unpatchify;
    p.graph_begin = NULL; /* each op on its own: a recording would time nothing */
    p.graph_end = NULL;
    return p;
}

#endif
