/* The table of ops that model code calls. Model code never includes a backend
 * header directly and contains no #ifdef per backend: it calls through an
 * lp_backend. Activation buffers are f32 row-major [rows, dim] in the
 * backend's memory (host memory for the CPU, device memory for CUDA), made by
 * be->alloc; weights are lp_tensor views of host memory in their stored dtype
 * (f32/f16/bf16), which a backend converts inside the op or uploads once on
 * first use (keyed by the view's data pointer, which must stay valid and
 * unchanged while the backend lives). Small index and position arrays are
 * always host arrays. Ops run in order; results are visible to the host after
 * be->download. */
#ifndef LP_BACKEND_H
#define LP_BACKEND_H

#include <stdint.h>

#include "../base/status.h"
#include "../base/threadpool.h"
#include "../io/tensor.h"

typedef struct lp_backend lp_backend;

/* One contiguous range of keys/values: rows [0, n) of k and v, each row
 * heads*head_dim elements with a row stride of ld elements; the elements are
 * f32 (bf16 = 0) or bf16 (bf16 = 1: rows written by kv_store on a backend
 * whose kv_bf16 is 1). */
typedef struct {
    const void *k, *v;
    int64_t n, ld;
    int bf16;
} lp_kv_range;

/* The input of one frame's 2-D convolution: channels [0, ca) from a and
 * [ca, ca + cb) from b (b NULL and cb 0 for a single input), each stored
 * [c, h, w] f32 in the backend's memory, seen through a nearest ×up upsample
 * (up 1 or 2). The convolution reads the concatenation [ca + cb, up·h, up·w]
 * without it ever being materialised. */
typedef struct {
    const float *a;
    int ca;
    const float *b;
    int cb;
    int h, w, up;
} lp_conv2d_input;

struct lp_backend {
    const char *name;
    lp_pool *pool;   /* CPU threads (also used by CPU-side work of other backends) */
    void *impl;      /* backend-private state */
    /* The element type of KV-cache buffers (what kv_store writes and
     * attention reads as ranges with bf16 = kv_bf16): 0 f32 (the CPU), 1 bf16
     * (CUDA, where attention reads them without conversion). A KV-cache row
     * of heads·head_dim elements takes heads·head_dim·(kv_bf16 ? 2 : 4) bytes. */
    int kv_bf16;

    /* ---- memory ---- */
    /* A zero-filled buffer of bytes in the backend's memory; NULL (error set) on failure. */
    void *(*alloc)(const lp_backend *be, size_t bytes);
    void (*release)(const lp_backend *be, void *p);
    /* host → backend and backend → host copies (download waits for pending ops). */
    lp_status (*upload)(const lp_backend *be, void *dst, const void *src, size_t bytes);
    lp_status (*download)(const lp_backend *be, void *dst, const void *src, size_t bytes);
    /* Within the backend's memory; the ranges may overlap (memmove semantics). */
    lp_status (*copy)(const lp_backend *be, void *dst, const void *src, size_t bytes);
    /* dst[dst_idx[i]] = src[src_idx[i]] for i < n, rows of row_floats floats;
     * a NULL index array means the identity (i). Index arrays are host arrays. */
    lp_status (*copy_rows)(const lp_backend *be, float *dst, const int32_t *dst_idx, const float *src,
                           const int32_t *src_idx, int64_t n, int64_t row_floats);
    /* tokens[i][(c·2 + q)·2 + r] = x[f][c][2y+q][2x+r] for token idx[i] = f·(H/2)(W/2) + y·(W/2) + x
     * (the Conv3d patch layout (c, q, r)); x [F, C, H, W]. */
    lp_status (*patchify)(const lp_backend *be, float *tokens, const float *x, const int32_t *idx, int64_t n, int C,
                          int H, int W);
    /* The inverse for the head's layout (q, r, c): x[f][c][2y+q][2x+r] = tokens[i][(q·2 + r)·C + c];
     * pixels of tokens not listed are left untouched. */
    lp_status (*unpatchify)(const lp_backend *be, float *x, const float *tokens, const int32_t *idx, int64_t n,
                            int C, int H, int W);
    /* y[i] = a[i] + b[i] for i < n (y may alias a or b). */
    void (*add)(const lp_backend *be, float *y, const float *a, const float *b, int64_t n);
    /* Waits until every op issued so far is done. */
    void (*synchronize)(const lp_backend *be);
    /* Bytes of device memory in use by the process now (0 for the CPU backend). */
    size_t (*memory_in_use)(const lp_backend *be);
    void (*destroy)(lp_backend *be);

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
    /* Writes rows [0, rows) of f32 activations src [rows, heads·head_dim] into
     * KV-cache rows (contiguous, heads·head_dim elements of the kv_bf16 type
     * each) at cache_rows, which must not overlap src: with pos ([rows][3]
     * host positions) the rows are rotated by 3-D RoPE as rope3d does (keys),
     * without (pos NULL) copied as they are (values, text K/V). f32: exactly
     * a copy then rope3d; bf16: the same f32 values rounded to nearest even. */
    lp_status (*kv_store)(const lp_backend *be, void *cache_rows, const float *src, int64_t rows, int heads,
                          int head_dim, const int32_t *pos);
    /* out[Lq, heads·hd] = softmax(q·kᵀ·scale)·v per head over the keys of all
     * ranges together (numerically stable softmax in fp32). q and out have row
     * stride heads·hd. Ranges are f32 or bf16 (lp_kv_range); the CPU takes
     * f32 ranges only (LP_ERR_UNSUPPORTED otherwise). */
    lp_status (*attention)(const lp_backend *be, float *out, const float *q, int64_t Lq, int heads, int head_dim,
                           const lp_kv_range *ranges, int nranges, float scale);

    /* ---- small conv nets (TAEHV), one frame [c, h, w] at a time ---- */
    /* out[cout, ho, wo] = (accumulate ? out : 0) + conv(in) + b: PyTorch Conv2d
     * with weight w [cout, ca + cb, k, k] (k 1 or 3) and bias b [cout] (NULL
     * for bias=False), both f32 views; zero padding k/2, stride 1 or 2, so
     * ho = (up·h + 2·(k/2) − k)/stride + 1 and likewise wo. out must not
     * overlap the inputs. Other shapes, strides, upsample factors or dtypes
     * fail with LP_ERR_SHAPE / LP_ERR_ARG / LP_ERR_UNSUPPORTED. Scratch is the
     * backend's own. */
    lp_status (*conv2d)(const lp_backend *be, float *out, const lp_conv2d_input *in, const lp_tensor *w,
                        const lp_tensor *b, int stride, int accumulate);
    /* x[i] = max(x[i], 0) for i < n, in place. */
    void (*relu)(const lp_backend *be, float *x, int64_t n);
    /* y[i] = tanh(x[i] / 3)·3 (TAEHV's Clamp) for i < n; y may equal x. */
    void (*tanh_clamp)(const lp_backend *be, float *y, const float *x, int64_t n);
    /* y[i] = min(max(x[i], 0), 1) for i < n; y may equal x. */
    void (*clamp01)(const lp_backend *be, float *y, const float *x, int64_t n);
};

/* The CPU backend (OpenBLAS GEMMs, lp_pool for the rest). nthreads <= 0: all
 * cores. */
lp_status lp_backend_cpu_create(int nthreads, lp_backend **out);
/* The CUDA backend on device 0 (bf16 tensor-core GEMMs and attention, f32
 * activations); LP_ERR_UNSUPPORTED when lipar was built without CUDA or no
 * GPU is usable. nthreads is for its CPU pool. */
lp_status lp_backend_cuda_create(int nthreads, lp_backend **out);
/* "cpu" or "cuda". */
lp_status lp_backend_create(const char *name, int nthreads, lp_backend **out);
/* be->destroy(be); NULL is a no-op. */
void lp_backend_destroy(lp_backend *be);

#endif
