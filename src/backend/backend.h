/* The table of ops that model code calls. Model code never includes a backend
 * header directly and contains no #ifdef per backend: it calls through an
 * lp_backend. Activation buffers are f32 row-major [rows, dim] in the backend's
 * memory; weights are lp_tensor views in their stored dtype (f32/f16/bf16),
 * converted inside the op. */
#ifndef LP_BACKEND_H
#define LP_BACKEND_H

#include <stdint.h>

#include "../base/status.h"
#include "../base/threadpool.h"
#include "../io/tensor.h"

typedef struct lp_backend lp_backend;

/* One contiguous range of keys/values: rows [0, n) of k and v, each row
 * heads*head_dim floats with a row stride of ld floats. */
typedef struct {
    const float *k, *v;
    int64_t n, ld;
} lp_kv_range;

struct lp_backend {
    const char *name;
    lp_pool *pool;
    void *impl; /* backend-private state (scratch buffers) */

    /* y[M,N] = x[M,K] · Wᵀ + b, W a PyTorch Linear weight [N, K] (any float
     * dtype), b [N] or NULL. x and y must not overlap. */
    lp_status (*linear)(const lp_backend *be, float *y, const float *x, int64_t M, const lp_tensor *W,
                        const lp_tensor *b);
    /* LayerNorm over the last dim (fp32, biased variance), without affine when
     * w and b are NULL. y may equal x. */
    void (*layer_norm)(const lp_backend *be, float *y, const float *x, int64_t rows, int64_t dim, const lp_tensor *w,
                       const lp_tensor *b, float eps);
    /* RMSNorm over the last dim: x·rsqrt(mean(x²)+eps)·w, in place. */
    void (*rms_norm)(const lp_backend *be, float *x, int64_t rows, int64_t dim, const lp_tensor *w, float eps);
    /* x = x·(1 + scale) + shift on rows [0, rows), scale/shift [dim]. */
    void (*modulate)(const lp_backend *be, float *x, int64_t rows, int64_t dim, const float *shift,
                     const float *scale);
    /* x += y·gate (gate [dim], broadcast over rows; NULL gate = plain add). */
    void (*gated_add)(const lp_backend *be, float *x, const float *y, int64_t rows, int64_t dim, const float *gate);
    /* In place, n elements. */
    void (*gelu_tanh)(const lp_backend *be, float *x, int64_t n);
    void (*silu)(const lp_backend *be, float *x, int64_t n);
    /* 3-D RoPE (spec/MODEL.md §6) on x [rows, heads·head_dim] in place; pos
     * [rows][3] = (frame, row, col) absolute positions. */
    void (*rope3d)(const lp_backend *be, float *x, int64_t rows, int heads, int head_dim, const int32_t *pos);
    /* out[Lq, heads·hd] = softmax(q·kᵀ·scale)·v per head over the keys of all
     * ranges together (numerically stable softmax in fp32). q and out have row
     * stride heads·hd. */
    lp_status (*attention)(const lp_backend *be, float *out, const float *q, int64_t Lq, int heads, int head_dim,
                           const lp_kv_range *ranges, int nranges, float scale);
};

/* The CPU backend (OpenBLAS GEMMs, lp_pool for the rest). nthreads <= 0: all
 * cores. */
lp_status lp_backend_cpu_create(int nthreads, lp_backend **out);
void lp_backend_destroy(lp_backend *be);

#endif
