/* The table of ops that model code calls. Model code never includes a backend
 * header directly and contains no #ifdef per backend: it calls through an
 * lp_backend. Activation buffers are row-major [rows, dim] in the
 * backend's memory (host memory for the CPU, device memory for CUDA), made by
 * be->alloc, f32 unless an op says they are of the activation type
 * (act_bf16); weights are lp_tensor views of host memory in their stored
 * dtype (f32/f16/bf16), which a backend converts inside the op or uploads once on
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

/* Rows grouped by frame: rows [start[f], start[f+1]) belong to frame f,
 * f < n <= LP_MAX_SEGMENTS, start[0] = 0 and start non-decreasing (per-frame
 * modulation and gates). */
#define LP_MAX_SEGMENTS 64
typedef struct {
    int n;
    int64_t start[LP_MAX_SEGMENTS + 1];
} lp_segments;

/* Where a conv3d reads and how large its output is (spec/VAE.md, "Wan VAE"):
 * output frame j, pixel (oy, ox) takes input frames j·t_stride + dt
 * (dt < kt), rows oy·stride + dy − pad and columns ox·stride + dx − pad;
 * positions outside the h × w input read as zero (this covers both the
 * symmetric padding of a CausalConv3d and the ZeroPad2d((0,1,0,1)) in front
 * of a stride-2 Conv2d). */
typedef struct {
    int h, w;        /* input frame size */
    int oh, ow;      /* output frame size */
    int stride, pad; /* spatial */
    int t_stride;    /* temporal */
} lp_conv3d_geom;

/* conv2d's flags */
#define LP_CONV_ACCUMULATE 1u /* add to out */
#define LP_CONV_RELU 2u       /* then ReLU */

/* the most weights of one linear_batch */
#define LP_LINEAR_BATCH_MAX 4

/* linear's flags */
#define LP_LINEAR_X_ACT 1u /* x is of the activation type */
#define LP_LINEAR_Y_ACT 2u /* y is written in the activation type */
#define LP_LINEAR_GELU 4u  /* GELU (tanh approximation) after the bias */

struct lp_backend {
    const char *name;
    lp_pool *pool;   /* CPU threads (also used by CPU-side work of other backends) */
    void *impl;      /* backend-private state */
    /* The element type of KV-cache buffers (what kv_store writes and
     * attention reads as ranges with bf16 = kv_bf16): 0 f32 (the CPU), 1 bf16
     * (CUDA, where attention reads them without conversion). A KV-cache row
     * of heads·head_dim elements takes heads·head_dim·(kv_bf16 ? 2 : 4) bytes. */
    int kv_bf16;
    /* The element type of activation buffers that only feed matrix products
     * (linear's x with LP_LINEAR_X_ACT, norm_modulate's output, attention's q
     * and out): 0 f32 (the CPU), 1 bf16 (CUDA). An element takes
     * (act_bf16 ? 2 : 4) bytes. */
    int act_bf16;

    /* ---- memory ---- */
    /* A zero-filled buffer of bytes in the backend's memory; NULL (error set) on failure. */
    void *(*alloc)(const lp_backend *be, size_t bytes);
    void (*release)(const lp_backend *be, void *p);
    /* host → backend and backend → host copies (download waits for pending ops). */
    lp_status (*upload)(const lp_backend *be, void *dst, const void *src, size_t bytes);
    lp_status (*download)(const lp_backend *be, void *dst, const void *src, size_t bytes);
    /* Within the backend's memory; the ranges may overlap (memmove semantics). */
    lp_status (*copy)(const lp_backend *be, void *dst, const void *src, size_t bytes);
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
    /* Zeros `bytes` bytes at p (backend memory). */
    lp_status (*clear)(const lp_backend *be, void *p, size_t bytes);
    /* The flow-matching steps on n floats (spec/MODEL.md, the denoising loop):
     * flow_x0: x0 = xt − σ·v computed in fp64, stored f32 (x0 may alias xt);
     * flow_renoise: x = (1 − σ)·x0 + σ·ε in f32, each product and the sum
     * rounded as written (x may alias x0). */
    void (*flow_x0)(const lp_backend *be, float *x0, const float *xt, const float *v, float sigma, int64_t n);
    void (*flow_renoise)(const lp_backend *be, float *x, const float *x0, const float *eps, float sigma, int64_t n);
    /* Copies the 2×2 patches of one latent frame between dst and src, both
     * [C, H, W] (H, W even): the patches of the tokens t whose keep[t] != 0
     * equals `kept` (keep: [H/2·W/2] bytes in the backend's memory); the other
     * pixels of dst are left as they are. kept 0 is LIPAR's restoration
     * (spec/LIPAR.md, after each forward); kept 1 collects the kept patches
     * (the keep-mask's drift candidate, §1 step 5). */
    lp_status (*copy_patches)(const lp_backend *be, float *dst, const float *src, const uint8_t *keep, int kept, int C,
                              int H, int W);
    /* Graphs (NULL where a backend has none: the CPU, and CUDA unless the
     * environment sets LIPAR_CUDA_GRAPHS=1, since they measured slower than
     * separate launches, docs/PERF.md run 41): after
     * graph_begin the ops are recorded instead of run, until graph_end runs
     * the recording at once (CUDA: one graph launch instead of a launch per
     * kernel; a recording with the topology of an earlier one updates that
     * one's executable graph). Only work that ran unrecorded before with the
     * same sizes may be recorded: nothing in it may wait for the device or
     * grow a scratch buffer (download, synchronize, a weight's first use, a
     * larger product or attention than before), or the op fails and
     * graph_end fails too, with nothing of the recording run. graph_end
     * must follow every successful graph_begin, also after a failed op. */
    lp_status (*graph_begin)(const lp_backend *be);
    lp_status (*graph_end)(const lp_backend *be);
    /* Waits until every op issued so far is done. */
    void (*synchronize)(const lp_backend *be);
    /* Bytes of device memory in use by the process now (0 for the CPU backend). */
    size_t (*memory_in_use)(const lp_backend *be);
    void (*destroy)(lp_backend *be);

    /* y[M,N] = x[M,K] · Wᵀ + b, W a PyTorch Linear weight [N, K] (any float
     * dtype), b [N] or NULL, then GELU (tanh approximation) with
     * LP_LINEAR_GELU. x is f32, or of the activation type (act_bf16) with
     * LP_LINEAR_X_ACT; y likewise with LP_LINEAR_Y_ACT. x and y must not
     * overlap. */
    lp_status (*linear)(const lp_backend *be, void *y, const void *x, int64_t M, const lp_tensor *W,
                        const lp_tensor *b, unsigned flags);
    /* The products of one x with `count` (1..LP_LINEAR_BATCH_MAX) weights of
     * one shape [N, K]: y_i = x·W_iᵀ + b_i into y + i·y_stride elements (of
     * y's type; y_stride ≥ M·N), as `count` calls of linear with the same
     * flags (b NULL for no biases, else b_i for every i). A GPU runs them as
     * one batched product, which fills the device where separate small ones
     * do not (Q, K and V of a pruned chunk). */
    lp_status (*linear_batch)(const lp_backend *be, void *y, int64_t y_stride, const void *x, int64_t M,
                              const lp_tensor *const *W, const lp_tensor *const *b, int count, unsigned flags);
    /* y (activation type) = LayerNorm(x) over the last dim (fp32, biased
     * variance), times w plus b when given (both or neither), then when
     * shift and scale are given, per segment f: ·(1 + scale[f·stride + j]) +
     * shift[f·stride + j] (spec/MODEL.md "modulation"). x f32 [rows, dim],
     * rows = seg->start[seg->n]. y must not overlap x. */
    void (*norm_modulate)(const lp_backend *be, void *y, const float *x, int64_t dim, const lp_tensor *w,
                          const lp_tensor *b, float eps, const lp_segments *seg, const float *shift,
                          const float *scale, int64_t stride);
    /* y = RMSNorm(x)·w over rows of heads·head_dim (x·rsqrt(mean(x²)+eps)·w),
     * then with pos ([rows][3] host positions) 3-D RoPE (spec/MODEL.md §6)
     * per head. y is of the activation type when y_act, else f32 (and may
     * then equal x). */
    void (*rms_norm_rope)(const lp_backend *be, void *y, int y_act, const float *x, int64_t rows, int heads,
                          int head_dim, const lp_tensor *w, float eps, const int32_t *pos);
    /* The residual add of a block, x[r] += y[r]·gate[f·gate_stride + j] for
     * the rows r of segment f (gate NULL: x += y), x and y f32 [rows, dim],
     * then xn = norm_modulate(x) with (w, b, eps, seg, shift, scale, stride)
     * of the updated x: the two in one pass where the backend can. xn must
     * not overlap x or y. */
    void (*residual_norm_modulate)(const lp_backend *be, float *x, const float *y, const float *gate,
                                   int64_t gate_stride, void *xn, int64_t dim, const lp_tensor *w, const lp_tensor *b,
                                   float eps, const lp_segments *seg, const float *shift, const float *scale,
                                   int64_t stride);
    /* In place, n elements. */
    void (*silu)(const lp_backend *be, float *x, int64_t n);
    /* Writes `rows` rows into KV-cache rows (heads·head_dim elements of the
     * kv_bf16 type each) of cache_rows, row i into cache row dst_idx[i]
     * (dst_idx NULL: row i), taken from row src_idx[i] of src (f32
     * activations [.., heads·head_dim]) when src_idx[i] >= 0, from row
     * −src_idx[i] − 1 of saved (rows of the kv_bf16 type, such as rows this op
     * wrote earlier without pos) when it is negative (src_idx NULL: row i of
     * src). With pos ([rows][3] positions, one per row written) the rows are
     * rotated by 3-D RoPE as rms_norm_rope does (keys); without (pos NULL)
     * copied as they are (values, text K/V, saved rows). Index and position
     * arrays are host arrays; the rows written must not overlap those read.
     * f32 cache: exactly a copy then the rotation; bf16: the same f32 values
     * rounded to nearest even. */
    lp_status (*kv_store)(const lp_backend *be, void *cache_rows, const int32_t *dst_idx, const float *src,
                          const void *saved, const int32_t *src_idx, int64_t rows, int heads, int head_dim,
                          const int32_t *pos);
    /* out[Lq, heads·hd] = softmax(q·kᵀ·scale)·v per head over the keys of all
     * ranges together (numerically stable softmax in fp32). q and out are of
     * the activation type with row stride heads·hd. Ranges are f32 or bf16
     * (lp_kv_range); the CPU takes f32 ranges only (LP_ERR_UNSUPPORTED
     * otherwise). */
    lp_status (*attention)(const lp_backend *be, void *out, const void *q, int64_t Lq, int heads, int head_dim,
                           const lp_kv_range *ranges, int nranges, float scale);

    /* ---- small conv nets (TAEHV), one frame [c, h, w] at a time ---- */
    /* out[cout, ho, wo] = act((flags & LP_CONV_ACCUMULATE ? out : 0) + conv(in) + b),
     * act = ReLU (max(v, 0), NaN -> 0) with LP_CONV_RELU, else the identity: PyTorch Conv2d
     * with weight w [cout, ca + cb, k, k] (k 1 or 3) and bias b [cout] (NULL
     * for bias=False), both f32 views; zero padding k/2, stride 1 or 2, so
     * ho = (up·h + 2·(k/2) − k)/stride + 1 and likewise wo. out must not
     * overlap the inputs. Other shapes, strides, upsample factors or dtypes
     * fail with LP_ERR_SHAPE / LP_ERR_ARG / LP_ERR_UNSUPPORTED. Scratch is the
     * backend's own. */
    lp_status (*conv2d)(const lp_backend *be, float *out, const lp_conv2d_input *in, const lp_tensor *w,
                        const lp_tensor *b, int stride, unsigned flags);
    /* x[i] = max(x[i], 0) for i < n, in place. */
    void (*relu)(const lp_backend *be, float *x, int64_t n);
    /* y[i] = tanh(x[i] / 3)·3 (TAEHV's Clamp) for i < n; y may equal x. */
    void (*tanh_clamp)(const lp_backend *be, float *y, const float *x, int64_t n);
    /* y[i] = min(max(x[i], 0), 1) for i < n; y may equal x. */
    void (*clamp01)(const lp_backend *be, float *y, const float *x, int64_t n);

    /* ---- the Wan VAE (spec/VAE.md, "Wan VAE"), frames [c, h, w] f32 ---- */
    /* Convolves n_in input frames in[i] (backend memory, each [cin][h][w])
     * into n_out = (n_in − kt)/t_stride + 1 output frames written one after
     * another to out ([n_out][cout][oh][ow]), bias b [cout] added (NULL for
     * none), with geometry g. w is f32 [cout, cin, kt, k, k] (a Conv3d) or
     * [cout, cin, k, k] (a Conv2d, kt = 1), k 1 or 3, kt at most 3; stride 1
     * or 2, 0 <= pad <= k/2. in is a host array; out must not overlap an
     * input. Time padding is never implicit: a causal convolution is given
     * its history frames in front of the current ones. Fails with
     * LP_ERR_ARG / LP_ERR_SHAPE / LP_ERR_UNSUPPORTED on other arguments. */
    lp_status (*conv3d)(const lp_backend *be, float *out, const float *const *in, int n_in, const lp_tensor *w,
                        const lp_tensor *b, const lp_conv3d_geom *g);
    /* The VAE's RMS_norm over channels: y = x / max(‖x‖₂, 1e-12) · √c · gamma[ch],
     * the norm over the c channels of each pixel; x and y [frames][c][n];
     * gamma an f32 view of c elements. y may equal x. */
    void (*channel_rms_norm)(const lp_backend *be, float *y, const float *x, int64_t frames, int c, int64_t n,
                             const lp_tensor *gamma);
    /* Nearest 2× upsampling of one frame: out[c][y][x] = in[c][y/2][x/2],
     * in [c][h][w], out [c][2h][2w] (not overlapping). */
    void (*upsample2x)(const lp_backend *be, float *out, const float *in, int c, int h, int w);
    /* Single-head attention over the n pixels of one frame, channel-major:
     * q, k, v, out [c][n]; out[:, i] = Σ_j softmax_j(q[:, i]·k[:, j]/√c)·v[:, j]
     * (fp32). out must not overlap q, k or v. Scratch is the backend's own. */
    lp_status (*spatial_attention)(const lp_backend *be, float *out, const float *q, const float *k, const float *v,
                                   int c, int64_t n);

    /* ---- LIPAR's keep-mask (src/prune/mask.h, spec/LIPAR.md §1) ----
     * One frame at a time: latent frames [16][H][W] f32, planes [h][w] (h =
     * H/2, w = W/2, one cell per 2×2 patch) of f32 or bytes (0/1), all in
     * the backend's memory; outputs never overlap inputs unless said. Each op
     * gives bit for bit what the CPU kernel it names in src/prune/mask.c gives:
     * the same sums in the same order, no fused multiply-adds. */
    /* Step 1, lp_mask_patch_distance: out = distance(a, b) per patch, with
     * distance an lp_mask_distance. */
    void (*mask_distance)(const lp_backend *be, float *out, const float *a, const float *b, int H, int W,
                          int distance);
    /* Step 2, lp_mask_frame_median: the 3×3×3 median of planes p, c, n. */
    void (*mask_median)(const lp_backend *be, float *out, const float *p, const float *c, const float *n, int h,
                        int w);
    /* Step 3, lp_mask_frame_gauss: the causal Gaussian of planes p, c with the
     * 18 weights wt (lp_mask_gauss_weights; a host array). */
    void (*mask_gauss)(const lp_backend *be, float *out, const float *p, const float *c, int h, int w,
                       const float *wt);
    /* out[i] = in[i] > tau for i < n (step 4 and the drift check of step 5). */
    void (*mask_threshold)(const lp_backend *be, uint8_t *out, const float *in, int64_t n, float tau);
    /* dst[i] |= src[i] for i < n. */
    void (*mask_or)(const lp_backend *be, uint8_t *dst, const uint8_t *src, int64_t n);
    /* Step 6, lp_mask_frame_majority: 1 where at least 14 of the 27 cells of
     * planes p, c, n around the cell are 1. */
    void (*mask_majority)(const lp_backend *be, uint8_t *out, const uint8_t *p, const uint8_t *c, const uint8_t *n,
                          int h, int w);
    /* Step 7, lp_mask_open_close: opening then closing of plane in with a 3×3
     * square; tmp holds h·w bytes; out may equal in. */
    void (*mask_open_close)(const lp_backend *be, uint8_t *out, const uint8_t *in, uint8_t *tmp, int h, int w);
    /* Step 8, lp_mask_frame_dilate: 1 where any cell of p, c, n within
     * |dr|, |dc| <= 2 is 1; p or n NULL is a plane of zeros. */
    void (*mask_dilate)(const lp_backend *be, uint8_t *out, const uint8_t *p, const uint8_t *c, const uint8_t *n,
                        int h, int w);

    /* Video frames: packed 8-bit RGB rgb[f][p][c] <-> planar [0, 1] floats
     * [f][c][p] for `frames` frames of `pixels` pixels, with the mapping of
     * src/base/pixels.h (b / 255; clamped to [0, 1], NaN -> 0, then
     * v·255 + 0.5 truncated). */
    void (*rgb24_to_planar)(const lp_backend *be, float *y, const uint8_t *rgb, int64_t frames, int64_t pixels);
    void (*planar_to_rgb24)(const lp_backend *be, uint8_t *rgb, const float *x, int64_t frames, int64_t pixels);
};

/* The CPU backend (OpenBLAS GEMMs, lp_pool for the rest). nthreads <= 0: all
 * cores. */
lp_status lp_backend_cpu_create(int nthreads, lp_backend **out);
/* The CUDA backend on device 0 (bf16 tensor-core GEMMs and attention, bf16
 * activations between matrix products, f32 residual stream);
 * LP_ERR_UNSUPPORTED when lipar was built without CUDA or no GPU is usable.
 * nthreads is for its CPU pool. priority: 1 puts its work ahead of that of
 * instances made with 0 when they compete for the GPU (its stream gets the
 * device's greatest priority: the GPU starts its pending blocks first). */
lp_status lp_backend_cuda_create(int nthreads, int priority, lp_backend **out);
/* linear_batch's shared parts (linear_batch.c): the argument checks; the
 * products one linear call at a time; both (the CPU's linear_batch). */
lp_status lp_linear_batch_check(int64_t y_stride, int64_t M, const lp_tensor *const *W, const lp_tensor *const *b,
                                int count);
lp_status lp_linear_batch_loop(const lp_backend *be, void *y, int64_t y_stride, const void *x, int64_t M,
                               const lp_tensor *const *W, const lp_tensor *const *b, int count, unsigned flags);
lp_status lp_linear_batch_serial(const lp_backend *be, void *y, int64_t y_stride, const void *x, int64_t M,
                                 const lp_tensor *const *W, const lp_tensor *const *b, int count, unsigned flags);
/* conv3d's argument checks, shared by the backends (conv3d_check.c). */
lp_status lp_conv3d_check(const float *out, const float *const *in, int n_in, const lp_tensor *w, const lp_tensor *b,
                          const lp_conv3d_geom *g);
/* "cpu" or "cuda", priority 0. */
lp_status lp_backend_create(const char *name, int nthreads, lp_backend **out);
/* The same for the stage on the critical path of a pipeline whose stages
 * have their own instances: its work goes first where the device orders
 * work (CUDA: priority 1 above; the CPU has nothing to order). */
lp_status lp_backend_create_priority(const char *name, int nthreads, lp_backend **out);
/* be->destroy(be); NULL is a no-op. */
void lp_backend_destroy(lp_backend *be);

#endif
