/* CPU 2-D convolution and the elementwise helpers of the small conv nets (TAEHV).
 *
 * Layout: one frame is [C, H, W] f32, row-major, no batch. A convolution reads
 * the channel concatenation of up to two inputs (so cat([x, past]) never has to
 * be materialised) and may read them through a pending nearest ×2 upsample (so
 * Upsample → 1×1 conv → 3×3 conv never materialises the large tensor).
 * Paths: a 1×1 conv is one GEMM; a 3×3 conv over a ×2 upsample runs as four
 * 2×2 convs on the small input (one per output phase, 4/9 of the work); a conv
 * with ≤ 4 output channels runs directly; the rest is im2col over bands of
 * output rows + one cblas_sgemm per band. Copies and direct loops run on the
 * thread pool, GEMMs on OpenBLAS's threads. */
#ifndef LP_CONV2D_H
#define LP_CONV2D_H

#include <stddef.h>
#include <stdint.h>

#include "../../base/status.h"
#include "../../base/threadpool.h"
#include "../backend.h"

/* A convolution layer: square kernel k (odd), zero padding k/2, stride 1 or 2. */
typedef struct {
    const float *w; /* [cout, cin, k, k] (PyTorch Conv2d.weight) */
    const float *b; /* [cout] or NULL for bias=False */
    int cin, cout, k, stride;
} lp_conv2d;

/* The input of a convolution: the backend table's (backend.h): channels
 * [0, ca) from a, [ca, ca+cb) from b (b may be NULL with cb = 0). Both are
 * stored [c, h, w]; up (1 or 2) is a nearest upsample applied before the
 * conv, so the conv sees [c, up·h, up·w]. */
typedef lp_conv2d_input lp_conv_in;

/* Output size of cv on in (rows, cols): (up·h + 2·(k/2) − k)/stride + 1. */
void lp_conv2d_out_size(const lp_conv2d *cv, const lp_conv_in *in, int *ho, int *wo);

/* Scratch floats that lp_conv2d_forward needs for cv on in (0 for a plain
 * 1×1 stride-1 conv without upsample, which runs as one GEMM per input). */
size_t lp_conv2d_scratch_floats(const lp_conv2d *cv, const lp_conv_in *in);

/* out[cout, ho, wo] = (accumulate ? out : 0) + conv(in) + bias. scratch holds at
 * least lp_conv2d_scratch_floats(cv, in) floats; out must not overlap the
 * inputs. Fails with LP_ERR_ARG when cin != ca + cb or k/stride/up are
 * outside the supported set (k odd, stride 1|2, up 1|2). */
lp_status lp_conv2d_forward(lp_pool *pool, const lp_conv2d *cv, const lp_conv_in *in, float *out, int accumulate,
                            float *scratch);


/* x[i] = max(x[i], 0) for i < n. */
void lp_relu(lp_pool *pool, float *x, int64_t n);
/* dst[i] = tanh(src[i] / 3) · 3 (TAEHV's Clamp); dst may equal src. */
void lp_tanh_clamp(lp_pool *pool, float *dst, const float *src, int64_t n);
/* dst[i] = min(max(src[i], 0), 1); dst may equal src. */
void lp_clamp01(lp_pool *pool, float *dst, const float *src, int64_t n);

#endif
