/* Internals shared by the CUDA backend's translation units (.cu files).
 * C-compatible declarations; the .cu files are compiled as CUDA C++ with C
 * linkage for everything declared here. */
#ifndef LP_CUDA_INTERNAL_H
#define LP_CUDA_INTERNAL_H

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "../backend.h"

typedef struct lp_cuda_weight_cache lp_cuda_weight_cache;
typedef struct lp_cuda_conv lp_cuda_conv; /* conv.cu: rearranged conv weights */
typedef struct lp_cuda_vae lp_cuda_vae;   /* vae.cu: the spatial attention's scratch */
typedef struct lp_cuda_graphs lp_cuda_graphs; /* graph.cu: kept executable graphs */

#define LP_CUDA_STAGED 16 /* staged arrays remembered for reuse */

typedef struct {
    int device;
    int sms, cc;                  /* the device's multiprocessors and compute capability (major·10 + minor) */
    int att_per_sm[8];            /* attention.cu: CTAs per SM of each attention kernel, 0 until queried */
    cudaStream_t stream;          /* every op is issued on this stream, in order */
    void *cublaslt;               /* cublasLtHandle_t */
    void *workspace;              /* cuBLASLt workspace */
    size_t workspace_bytes;
    lp_cuda_weight_cache *weights; /* device copies of host lp_tensor views, keyed by data pointer */
    void *kv_bf16;                /* attention scratch (bf16 copies of f32 K/V, split partials), grown on demand */
    size_t kv_bf16_bytes;
    /* a ring for small host arrays (indices, positions) uploaded for one op */
    char *ring;                   /* device */
    char *ring_host;              /* pinned host staging of the same size */
    size_t ring_bytes, ring_pos;
    uint64_t ring_wraps;          /* times the ring started again at 0 */
    /* the last arrays staged (lp_cuda_stage reuses a copy still in the ring
     * when the same host array comes again with the same bytes) */
    struct {
        const void *host;
        size_t n, pos;
        uint64_t wraps;           /* ring_wraps when it was staged */
    } staged[LP_CUDA_STAGED];
    int staged_next;
    lp_cuda_conv *conv;           /* conv2d state, created on first use, freed by lp_cuda_conv_free */
    lp_cuda_vae *vae;             /* vae.cu state (attention scratch), created on first use */
    lp_cuda_graphs *graphs;       /* graph.cu state, created by the first graph_begin */
    lp_status sticky;             /* first asynchronous failure, reported by the next status-returning op */
} lp_cuda_state;

static inline lp_cuda_state *lp_cuda(const lp_backend *be) { return (lp_cuda_state *)be->impl; }

/* Makes s the sticky error unless one is set already (an argument error of
 * an op returning void; failures of lp_cuda_stage, lp_cuda_weight and
 * lp_cuda_check are sticky already). */
static inline void lp_cuda_set_sticky(const lp_backend *be, lp_status s) {
    lp_cuda_state *st = lp_cuda(be);
    if (st->sticky == LP_OK) st->sticky = s;
}

/* LP_OK, or the sticky error of an earlier op (whose message was recorded
 * when it happened): status-returning ops issue nothing after a failure. */
static inline lp_status lp_cuda_pending(const lp_backend *be, const char *op) {
    lp_status s = lp_cuda(be)->sticky;
    if (s == LP_OK) return LP_OK;
    return lp_fail(s, "%s: an earlier CUDA operation failed (%s)", op, lp_status_name(s));
}

/* Whether p is aligned to `bytes` (a power of two). */
static inline int lp_cuda_aligned(const void *p, unsigned bytes) { return ((uintptr_t)p & (bytes - 1)) == 0; }

/* The largest power of two <= 256 that divides the address. */
static inline uint32_t lp_cuda_alignment_of(const void *p) {
    uint32_t a = 256;
    while (a > 1 && (uintptr_t)p % a) a >>= 1;
    return a;
}

/* Whether the byte ranges [a, a + na) and [b, b + nb) share a byte. */
static inline int lp_cuda_overlap(const void *a, int64_t na, const void *b, int64_t nb) {
    return (uintptr_t)a < (uintptr_t)b + (uintptr_t)nb && (uintptr_t)b < (uintptr_t)a + (uintptr_t)na;
}

/* The blocks of `threads` threads a 1-D grid-stride kernel over `work`
 * items gets: enough for one item each, at least 1, at most
 * LP_CUDA_MAX_GRID (the loop covers the rest). */
#define LP_CUDA_MAX_GRID 65535
static inline unsigned lp_cuda_grid(int64_t work, int threads) {
    int64_t b = (work + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b > LP_CUDA_MAX_GRID ? LP_CUDA_MAX_GRID : b);
}

/* Records e (with what) as the sticky error when it is not cudaSuccess;
 * returns the lp_status for it. */
lp_status lp_cuda_check(const lp_backend *be, cudaError_t e, const char *what);
/* LP_OK, or the error "<who>: cuBLASLt: <what> failed: <reason>" for s
 * (not sticky). */
lp_status lp_cuda_lt_check(cublasStatus_t s, const char *who, const char *what);
/* *algo = cuBLASLt's first heuristic choice for the GEMM of op and layouts
 * a, b, d (D is also C) within the backend's workspace, for A, B, C, D
 * pointers aligned to align[0..3] bytes (0: not given, for memory that
 * cudaMalloc'd: 256; so must any bias pointer set on op be);
 * LP_ERR_UNSUPPORTED ("<who>: cuBLASLt has no <kind> GEMM algorithm ...")
 * when there is none. */
lp_status lp_cuda_choose_algo(const lp_backend *be, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a,
                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t d, const uint32_t align[4],
                              const char *who, const char *kind, cublasLtMatmulAlgo_t *algo);
/* Checks the last launch (cudaGetLastError) after a kernel launch. */
lp_status lp_cuda_check_launch(const lp_backend *be, const char *kernel);
/* Copies n bytes of host data into the upload ring and returns its device
 * address (valid for ops issued before the ring wraps around, i.e. for the
 * op that follows); NULL with an error set if n exceeds the ring. The same
 * host array with the same n bytes as one of the last LP_CUDA_STAGED staged
 * since the last wrap is not copied again: its copy is returned (the DiT's
 * 30 layers pass the same index and position arrays). */
void *lp_cuda_stage(const lp_backend *be, const void *host, size_t n);
/* Starts the upload ring again at 0 once the stream has drained (so that no
 * op or copy in flight still reads what gets overwritten); the staged copies
 * remembered for reuse are forgotten. */
lp_status lp_cuda_ring_wrap(const lp_backend *be);

/* The device copy of a host weight view: bf16 for matrices (as_bf16 = 1),
 * f32 for vectors (as_bf16 = 0). Uploaded on first use, then cached. NULL
 * with an error set on failure. */
const void *lp_cuda_weight(const lp_backend *be, const lp_tensor *t, int as_bf16);

/* Op implementations (see backend.h for each contract). */
lp_status lp_cuda_linear(const lp_backend *be, void *y, const void *x, int64_t M, const lp_tensor *W,
                         const lp_tensor *b, unsigned flags);
void lp_cuda_norm_modulate(const lp_backend *be, void *y, const float *x, int64_t dim, const lp_tensor *w,
                           const lp_tensor *b, float eps, const lp_segments *seg, const float *shift,
                           const float *scale, int64_t stride);
void lp_cuda_rms_norm_rope(const lp_backend *be, void *y, int y_act, const float *x, int64_t rows, int heads,
                           int head_dim, const lp_tensor *w, float eps, const int32_t *pos);
void lp_cuda_residual_norm_modulate(const lp_backend *be, float *x, const float *y, const float *gate,
                                    int64_t gate_stride, void *xn, int64_t dim, const lp_tensor *w,
                                    const lp_tensor *b, float eps, const lp_segments *seg, const float *shift,
                                    const float *scale, int64_t stride);
void lp_cuda_silu(const lp_backend *be, float *x, int64_t n);
lp_status lp_cuda_kv_store(const lp_backend *be, void *cache_rows, const int32_t *dst_idx, const float *src,
                           const void *saved, const int32_t *src_idx, int64_t rows, int heads, int head_dim,
                           const int32_t *pos);
lp_status lp_cuda_attention(const lp_backend *be, void *out, const void *q, int64_t Lq, int heads, int head_dim,
                            const lp_kv_range *ranges, int nranges, float scale);
lp_status lp_cuda_patchify(const lp_backend *be, float *tokens, const float *x, const int32_t *idx, int64_t n, int C,
                           int H, int W);
lp_status lp_cuda_unpatchify(const lp_backend *be, float *x, const float *tokens, const int32_t *idx, int64_t n,
                             int C, int H, int W);
void lp_cuda_add(const lp_backend *be, float *y, const float *a, const float *b, int64_t n);
lp_status lp_cuda_clear(const lp_backend *be, void *p, size_t bytes);
void lp_cuda_flow_x0(const lp_backend *be, float *x0, const float *xt, const float *v, float sigma, int64_t n);
void lp_cuda_flow_renoise(const lp_backend *be, float *x, const float *x0, const float *eps, float sigma, int64_t n);
lp_status lp_cuda_copy_patches(const lp_backend *be, float *dst, const float *src, const uint8_t *keep, int kept, int C,
                                  int H, int W);
/* f32 → bf16 conversion of n elements (GEMM inputs), rounding to nearest
 * even like lp_f32_to_bf16; returns the launch status. */
lp_status lp_cuda_f32_to_bf16(const lp_backend *be, void *dst, const float *src, int64_t n);
/* linear's epilogue when cuBLASLt cannot fuse it: y[m][j] = act(d[m][j] +
 * bias[j]) for m < M, j < N (bias NULL: 0; act GELU (tanh approximation)
 * when gelu, else the identity), y bf16 when y_bf16 else f32 (and may then
 * equal d); returns the launch status. */
lp_status lp_cuda_bias_act(const lp_backend *be, void *y, int y_bf16, const float *d, int64_t M, int64_t N,
                           const float *bias, int gelu);
/* conv.cu: the conv-net ops, and the release of st->conv (NULL is a no-op). */
lp_status lp_cuda_conv2d(const lp_backend *be, float *out, const lp_conv2d_input *in, const lp_tensor *w,
                         const lp_tensor *b, int stride, unsigned flags);
void lp_cuda_relu(const lp_backend *be, float *x, int64_t n);
void lp_cuda_tanh_clamp(const lp_backend *be, float *y, const float *x, int64_t n);
void lp_cuda_clamp01(const lp_backend *be, float *y, const float *x, int64_t n);
void lp_cuda_conv_free(lp_cuda_state *st);
/* The Wan VAE's ops: conv3d in conv.cu, the others in vae.cu
 * (lp_cuda_vae_free releases st->vae; NULL is a no-op). */
lp_status lp_cuda_conv3d(const lp_backend *be, float *out, const float *const *in, int n_in, const lp_tensor *w,
                         const lp_tensor *b, const lp_conv3d_geom *g);
void lp_cuda_channel_rms_norm(const lp_backend *be, float *y, const float *x, int64_t frames, int c, int64_t n,
                              const lp_tensor *gamma);
void lp_cuda_upsample2x(const lp_backend *be, float *out, const float *in, int c, int h, int w);
lp_status lp_cuda_spatial_attention(const lp_backend *be, float *out, const float *q, const float *k, const float *v,
                                    int c, int64_t n);
void lp_cuda_vae_free(lp_cuda_state *st);
/* graph.cu: graph_begin / graph_end, and the release of st->graphs (NULL is
 * a no-op). */
lp_status lp_cuda_graph_begin(const lp_backend *be);
lp_status lp_cuda_graph_end(const lp_backend *be);
void lp_cuda_graphs_free(lp_cuda_state *st);
/* mask.cu: LIPAR's keep-mask ops. */
void lp_cuda_mask_distance(const lp_backend *be, float *out, const float *a, const float *b, int H, int W,
                           int distance);
void lp_cuda_mask_median(const lp_backend *be, float *out, const float *p, const float *c, const float *n, int h,
                         int w);
void lp_cuda_mask_gauss(const lp_backend *be, float *out, const float *p, const float *c, int h, int w,
                        const float *wt);
void lp_cuda_mask_threshold(const lp_backend *be, uint8_t *out, const float *in, int64_t n, float tau);
void lp_cuda_mask_or(const lp_backend *be, uint8_t *dst, const uint8_t *src, int64_t n);
void lp_cuda_mask_majority(const lp_backend *be, uint8_t *out, const uint8_t *p, const uint8_t *c, const uint8_t *n,
                           int h, int w);
void lp_cuda_mask_open_close(const lp_backend *be, uint8_t *out, const uint8_t *in, uint8_t *tmp, int h, int w);
void lp_cuda_mask_dilate(const lp_backend *be, uint8_t *out, const uint8_t *p, const uint8_t *c, const uint8_t *n,
                         int h, int w);
/* pixels.cu: the pixel ops. */
void lp_cuda_rgb24_to_planar(const lp_backend *be, float *y, const uint8_t *rgb, int64_t frames, int64_t pixels);
void lp_cuda_planar_to_rgb24(const lp_backend *be, uint8_t *rgb, const float *x, int64_t frames, int64_t pixels);

#ifdef __cplusplus
}
#endif

#endif
