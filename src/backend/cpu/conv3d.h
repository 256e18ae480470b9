/* CPU reference kernels of the Wan VAE (spec/VAE.md, "Wan VAE"): causal 3-D
 * convolution, 2-D convolution (stride 1 pad 1, or stride 2 with one zero
 * row/column appended), RMS norm over channels, SiLU, nearest 2x upsampling and
 * single-head spatial attention.
 *
 * Layout: a frame is [C][H][W] f32, row-major; a clip chunk is a run of frames.
 * Time padding is never implicit: a causal convolution receives the previous
 * input frames (the caller's cache) in front of the current ones, so the same
 * call serves a whole clip (history = zero frames) and a streamed chunk.
 * Convolutions are im2col (row tiles bounded by a caller-given scratch) + BLAS
 * sgemm; the other kernels split their work over an lp_pool (NULL = inline). */
#ifndef LP_CPU_CONV3D_H
#define LP_CPU_CONV3D_H

#include <stddef.h>
#include <stdint.h>

#include "../../base/status.h"
#include "../../base/threadpool.h"
#include "../backend.h" /* lp_conv3d_geom */

/* A convolution's parameters, f32, in PyTorch layout. 2-D kernels use kt = 1. */
typedef struct {
    int cout, cin, kt, kh, kw;
    const float *weight; /* [cout, cin, kt, kh, kw] */
    const float *bias;   /* [cout], or NULL */
} lp_vae_conv_w;

/* Geometry of a causal 3-D convolution with kernel k (or a stride-1 Conv2d 3x3
 * pad 1 when kt = 1): spatial stride 1, padding kh/2, output size = input size. */
lp_conv3d_geom lp_cpu_vae_geom_same(const lp_vae_conv_w *k, int h, int w);
/* Geometry of Resample "downsample": ZeroPad2d((0,1,0,1)) then Conv2d 3x3
 * stride 2 without padding: output floor((h-2)/2)+1 x floor((w-2)/2)+1. */
lp_conv3d_geom lp_cpu_vae_geom_down2(int h, int w);

/* Scratch floats that lp_cpu_vae_conv wants for w at geometry g: im2col tiles of
 * whole output rows, about budget floats (at least one row, at most one frame);
 * 0 for a 1x1x1 convolution, which needs none. */
size_t lp_cpu_vae_conv_scratch(const lp_vae_conv_w *w, const lp_conv3d_geom *g, size_t budget);

/* Convolves n_in input frames (each [cin][h][w]; a NULL pointer is a zero
 * frame) into n_out = (n_in - kt) / t_stride + 1 output frames written
 * contiguously to out ([n_out][cout][oh][ow]), bias added. out must not overlap
 * an input. scratch holds scratch_n floats (see lp_cpu_vae_conv_scratch; fewer
 * gives smaller tiles). Fails with LP_ERR_ARG if n_in < kt or the scratch cannot
 * hold one output row. */
lp_status lp_cpu_vae_conv(lp_pool *pool, const lp_vae_conv_w *w, const lp_conv3d_geom *g, const float *const *in,
                          int n_in, float *out, float *scratch, size_t scratch_n);

/* RMS_norm over channels: y = x / max(||x||_2, 1e-12) * sqrt(c) * gamma[ch], the
 * norm taken over the c channels of each pixel; x is [frames][c][n]. y may be x. */
void lp_cpu_vae_rms_norm(lp_pool *pool, const float *x, float *y, int64_t frames, int c, int64_t n,
                         const float *gamma);

/* y += x over n values. */
void lp_cpu_vae_add(lp_pool *pool, float *y, const float *x, int64_t n);

/* x = x * sigmoid(x), in place, over n values. */
void lp_cpu_vae_silu(lp_pool *pool, float *x, int64_t n);

/* Nearest-neighbour 2x upsampling of one frame: out[c][y][x] = in[c][y/2][x/2],
 * in [c][h][w], out [c][2h][2w]. */
void lp_cpu_vae_upsample2x(lp_pool *pool, const float *in, float *out, int c, int h, int w);

/* Scratch floats lp_cpu_vae_attention wants for n tokens: blocks of query rows
 * of about budget floats (at least one row of n scores, at most n rows). */
size_t lp_cpu_vae_attention_scratch(int64_t n, size_t budget);

/* Single-head attention over the n pixels of one frame, channel-major:
 * q, k, v, out are [c][n]; out[:, i] = sum_j softmax_j(q[:,i].k[:,j] / sqrt(c)) v[:, j].
 * out must not overlap q, k or v. Fails with LP_ERR_ARG if the scratch cannot
 * hold one row of n scores. */
lp_status lp_cpu_vae_attention(lp_pool *pool, const float *q, const float *k, const float *v, float *out, int c,
                               int64_t n, float *scratch, size_t scratch_n);

#endif
