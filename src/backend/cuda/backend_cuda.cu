/* The CUDA backend core: device state, memory ops, the upload ring for small
 * host arrays, the device cache of host weight views, and the linear layer
 * through cuBLASLt (bf16 tensor cores, fp32 accumulation, f32 or bf16 output
 * with the bias and GELU in cuBLASLt's epilogue).
 *
 * Error model: a CUDA failure seen by lp_cuda_check (and any failure of
 * lp_cuda_stage or lp_cuda_weight, whose callers may be ops returning void)
 * becomes the backend's sticky error: its message is kept, and every later
 * status-returning op of this file reports it again. Synchronous failures
 * that the caller gets back directly (alloc returning NULL, shape errors,
 * cuBLASLt errors of linear) are not sticky. */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The project's C headers have no extern "C" guards of their own, and
 * cuda_internal.h includes backend.h outside its extern "C" block. */
extern "C" {
#include "../backend.h"
}
#include "cuda_internal.h"

#define WORKSPACE_BYTES ((size_t)32 << 20) /* cuBLASLt workspace (the size NVIDIA advises for Hopper) */
#define RING_BYTES ((size_t)16 << 20)      /* upload ring, device + pinned host */
#define STAGE_BYTES ((size_t)4 << 20)      /* each of the two pinned buffers of large transfers */
#define STAGE_MIN ((size_t)256 << 10)      /* transfers from this size on go through them */
#define RING_ALIGN 256                     /* every staged array starts on this boundary */
#define PLAN_SLOTS 64                      /* cached GEMM plans, replaced round robin */
#define COPY_MAX_PIECES 16                 /* overlapping copies in more pieces go through a bounce buffer */
#define CONVERT_THREADS 256

/* ---------------------------------------------------------------------------
 * Private state */

/* cuBLASLt GEMMs (linear): the
 * descriptors of one D = op(A)·B + beta·D (D is also C) with bf16 A and B,
 * D of the type of its layout (f32, or bf16 for linear's LP_LINEAR_Y_ACT)
 * and fp32 compute, and the algorithm chosen for them; op == NULL marks an
 * empty one. cuBLASLt failures are returned, not sticky; their messages
 * start with who (the op, and the shape where it helps). */
typedef struct {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
} lp_cuda_gemm;

/* Creates g->op: fp32 compute and scale, A transposed when trans_a, B not. */
static lp_status lp_cuda_gemm_create_op(lp_cuda_gemm *g, int trans_a, const char *who);
/* Issues D = A·B + beta·D (alpha 1, op(A) per g) on the backend's stream. */
static lp_status lp_cuda_gemm_run(const lp_backend *be, const lp_cuda_gemm *g, const void *A, const void *B,
                                  float beta, void *D, const char *who);
/* Destroys g's descriptors (those it has) and zeroes it. */
static void lp_cuda_gemm_clear(lp_cuda_gemm *g);

/* How a linear plan applies its bias, GELU and output type, in the order
 * plan_build tries them: the first one that cuBLASLt has an algorithm for is
 * kept. */
enum {
    EPI_FUSED,           /* all in cuBLASLt's epilogue, f32 bias, D of y's type */
    EPI_FUSED_BF16_BIAS, /* the same with a bf16 copy of the bias (bf16 y: cuBLASLt's default bias type) */
    EPI_KERNEL,          /* a plain GEMM into f32 (y, or the gemm_y scratch for a bf16 y), then lp_cuda_bias_act */
};

/* One cached GEMM configuration, keyed by (M, N, K, the flags that shape
 * the output (LP_LINEAR_Y_ACT, LP_LINEAR_GELU), bias or not, alignment of x
 * and y, batch: products of one x with `batch` weights of one shape, see
 * lp_cuda_linear_batch); g.op == NULL marks an empty slot. */
typedef struct {
    int64_t M, N, K;
    int64_t algo_M; /* the row count the algorithm was chosen for */
    int batch;
    int64_t y_stride; /* batch > 1: elements from one product's y to the next's, as last set */
    unsigned out_flags;
    int bias;
    uint32_t align_x, align_y;
    int epi;        /* EPI_* */
    lp_cuda_gemm g; /* A = W, B = x, D = y (or the scratch) */
} gemm_plan;

/* A device copy of a host weight view, keyed by (host data pointer, as_bf16). */
typedef struct {
    const void *host; /* NULL: empty slot */
    int as_bf16;
    lp_dtype dtype;   /* of the host data it was made from */
    int64_t numel;
    void *dev;        /* bf16 or f32 [numel] */
} weight_entry;

/* Open addressing with linear probing; cap is a power of two and count stays
 * <= cap / 2, so a probe always reaches an empty slot. */
struct lp_cuda_weight_cache {
    weight_entry *slots;
    size_t cap, count;
};

/* The weights of a batched product (lp_cuda_linear_batch) as one device
 * copy: bf16 [count][N][K] and, with biases, f32 [count][N]; keyed by the
 * weights' host data pointers. */
typedef struct {
    const void *host[LP_LINEAR_BATCH_MAX];
    int count;
    void *w;
    float *b;
} fused_weight;

typedef struct {
    lp_cuda_state st; /* first member: be->impl points here */
    lp_cuda_weight_cache cache;
    fused_weight *fused;
    int n_fused, cap_fused;
    int no_batch;     /* cuBLASLt had no batched algorithm: linear_batch runs single products */
    gemm_plan plans[PLAN_SLOTS];
    int next_plan;
    /* linear's scratch, grown on demand: the bf16 copy of an f32 x, and the
     * f32 GEMM output of an EPI_KERNEL plan with a bf16 y */
    void *gemm_x, *gemm_y;
    size_t gemm_x_bytes, gemm_y_bytes;
    int max_blocks;        /* grid size cap for grid-stride kernels */
    /* large uploads and downloads go through two pinned buffers in turn
     * (pageable transfers of frames measured 2-6 GB/s); staged[i] is free
     * for the host when free_event[i] has completed */
    char *staged[2];
    cudaEvent_t free_event[2];
    char sticky_msg[512];  /* the message of st.sticky */
} cuda_impl;

static cuda_impl *impl_of(const lp_backend *be) { return (cuda_impl *)be->impl; }

/* ---------------------------------------------------------------------------
 * Errors */

/* Makes the failure just recorded by lp_fail (status s) the sticky error,
 * unless there already is one; returns s. */
static lp_status set_sticky(const lp_backend *be, lp_status s) {
    cuda_impl *im = impl_of(be);
    if (im->st.sticky == LP_OK) {
        im->st.sticky = s;
        snprintf(im->sticky_msg, sizeof im->sticky_msg, "%s", lp_last_error());
    }
    return s;
}

/* LP_OK, or the sticky error again with its message (other files of the
 * backend may set st.sticky directly, without one). */
static lp_status sticky_status(const lp_backend *be) {
    cuda_impl *im = impl_of(be);
    if (im->st.sticky == LP_OK) return LP_OK;
    if (!im->sticky_msg[0])
        return lp_fail(im->st.sticky, "an earlier CUDA operation failed (%s; its message was reported then)",
                       lp_status_name(im->st.sticky));
    return lp_fail(im->st.sticky, "an earlier CUDA operation failed: %s", im->sticky_msg);
}

static lp_status status_of(cudaError_t e) {
    switch (e) {
    case cudaErrorMemoryAllocation:
        return LP_ERR_NOMEM;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorInvalidDevice:
        return LP_ERR_UNSUPPORTED;
    default:
        return LP_ERR_IO; /* the device or driver failed */
    }
}

lp_status lp_cuda_check(const lp_backend *be, cudaError_t e, const char *what) {
    if (e == cudaSuccess) return LP_OK;
    cudaGetLastError(); /* clear a non-sticky runtime error so the next launch check does not see it again */
    lp_fail(status_of(e), "CUDA error in %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    return set_sticky(be, status_of(e));
}

lp_status lp_cuda_check_launch(const lp_backend *be, const char *kernel) {
    return lp_cuda_check(be, cudaGetLastError(), kernel);
}

lp_status lp_cuda_lt_check(cublasStatus_t s, const char *who, const char *what) {
    if (s == CUBLAS_STATUS_SUCCESS) return LP_OK;
    lp_status code = s == CUBLAS_STATUS_ALLOC_FAILED     ? LP_ERR_NOMEM
                     : s == CUBLAS_STATUS_NOT_SUPPORTED ? LP_ERR_UNSUPPORTED
                                                        : LP_ERR_IO;
    return lp_fail(code, "%s: cuBLASLt: %s failed: %s", who, what, cublasLtGetStatusString(s));
}

/* cudaMalloc of max(bytes, 1) bytes into *p; on failure *p = NULL and an
 * error naming what (out of memory included, with the size). Not sticky. */
static lp_status device_alloc(void **p, size_t bytes, const char *what) {
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e == cudaSuccess) return LP_OK;
    *p = NULL;
    cudaGetLastError();
    return lp_fail(status_of(e), "CUDA: cannot allocate %zu bytes of device memory for %s: %s", bytes, what,
                   cudaGetErrorString(e));
}

/* ---------------------------------------------------------------------------
 * Conversion kernels (weights of any float dtype) */

__device__ __forceinline__ float load_f32(const float *p) { return *p; }
__device__ __forceinline__ float load_f32(const double *p) { return (float)*p; }
__device__ __forceinline__ float load_f32(const __half *p) { return __half2float(*p); }
__device__ __forceinline__ float load_f32(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store_f32(float *p, float v) { *p = v; }
__device__ __forceinline__ void store_f32(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* dst[i] = src[i] for i < n, through f32 (round to nearest even into bf16). */
template <typename In, typename Out>
static __global__ void convert_kernel(Out *__restrict__ dst, const In *__restrict__ src, int64_t n) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        store_f32(dst + i, load_f32(src + i));
}

static unsigned grid_for(const cuda_impl *im, int64_t n) {
    int64_t blocks = (n + CONVERT_THREADS - 1) / CONVERT_THREADS;
    return (unsigned)(blocks < im->max_blocks ? blocks : im->max_blocks);
}

/* Launches the conversion of n elements on the stream (nothing for n = 0)
 * and returns the launch status. */
template <typename In, typename Out>
static cudaError_t launch_convert(const cuda_impl *im, Out *dst, const In *src, int64_t n) {
    if (n <= 0) return cudaSuccess;
    convert_kernel<In, Out><<<grid_for(im, n), CONVERT_THREADS, 0, im->st.stream>>>(dst, src, n);
    return cudaGetLastError();
}

/* Converts n elements of dtype `from` at device address src into dst (bf16
 * when to_bf16, else f32). from must be F32, F64, F16 or BF16. */
static cudaError_t convert_any(const cuda_impl *im, void *dst, int to_bf16, const void *src, lp_dtype from, int64_t n) {
    if (to_bf16) {
        __nv_bfloat16 *d = (__nv_bfloat16 *)dst;
        switch (from) {
        case LP_F32: return launch_convert(im, d, (const float *)src, n);
        case LP_F64: return launch_convert(im, d, (const double *)src, n);
        case LP_F16: return launch_convert(im, d, (const __half *)src, n);
        default: return launch_convert(im, d, (const __nv_bfloat16 *)src, n);
        }
    }
    float *d = (float *)dst;
    switch (from) {
    case LP_F32: return launch_convert(im, d, (const float *)src, n);
    case LP_F64: return launch_convert(im, d, (const double *)src, n);
    case LP_F16: return launch_convert(im, d, (const __half *)src, n);
    default: return launch_convert(im, d, (const __nv_bfloat16 *)src, n);
    }
}

/* ---------------------------------------------------------------------------
 * Memory ops */

static void *cuda_alloc(const lp_backend *be, size_t bytes) {
    void *p = NULL;
    if (device_alloc(&p, bytes, "a backend buffer") != LP_OK) return NULL;
    if (lp_cuda_check(be, cudaMemsetAsync(p, 0, bytes, lp_cuda(be)->stream), "cudaMemsetAsync (alloc)") != LP_OK) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cuda_release(const lp_backend *be, void *p) {
    if (!p) return;
    /* ops still in flight on the stream may use p */
    if (lp_cuda_check(be, cudaStreamSynchronize(lp_cuda(be)->stream), "cudaStreamSynchronize (release)") != LP_OK)
        return;
    lp_cuda_check(be, cudaFree(p), "cudaFree (release)");
}

/* Large uploads: each piece is copied into a free pinned buffer, whose DMA
 * is queued on the stream; the call returns once the host bytes are copied
 * (the caller may reuse src), without waiting for the device. */
static lp_status cuda_upload(const lp_backend *be, void *dst, const void *src, size_t bytes) {
    LP_TRY(sticky_status(be));
    if (!bytes) return LP_OK;
    cuda_impl *im = impl_of(be);
    cudaStream_t s = im->st.stream;
    if (bytes < STAGE_MIN) {
        LP_TRY(lp_cuda_check(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s),
                             "cudaMemcpyAsync (upload)"));
        /* the caller may reuse src as soon as we return */
        return lp_cuda_check(be, cudaStreamSynchronize(s), "cudaStreamSynchronize (upload)");
    }
    for (size_t off = 0, k = 0; off < bytes; off += STAGE_BYTES, k++) {
        const size_t n = bytes - off < STAGE_BYTES ? bytes - off : STAGE_BYTES;
        const int i = (int)(k % 2);
        LP_TRY(lp_cuda_check(be, cudaEventSynchronize(im->free_event[i]), "cudaEventSynchronize (upload)"));
        memcpy(im->staged[i], (const char *)src + off, n);
        LP_TRY(lp_cuda_check(be, cudaMemcpyAsync((char *)dst + off, im->staged[i], n, cudaMemcpyHostToDevice, s),
                             "cudaMemcpyAsync (upload)"));
        LP_TRY(lp_cuda_check(be, cudaEventRecord(im->free_event[i], s), "cudaEventRecord (upload)"));
    }
    return LP_OK;
}

/* Large downloads: the DMA of piece k + 1 runs while the host copies piece k
 * out of the other pinned buffer. */
static lp_status cuda_download(const lp_backend *be, void *dst, const void *src, size_t bytes) {
    LP_TRY(sticky_status(be));
    cuda_impl *im = impl_of(be);
    cudaStream_t s = im->st.stream;
    if (bytes < STAGE_MIN) {
        if (bytes)
            LP_TRY(lp_cuda_check(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s),
                                 "cudaMemcpyAsync (download)"));
        return lp_cuda_check(be, cudaStreamSynchronize(s), "cudaStreamSynchronize (download)");
    }
    const size_t pieces = (bytes + STAGE_BYTES - 1) / STAGE_BYTES;
    for (size_t k = 0; k <= pieces; k++) {
        if (k < pieces) { /* queue piece k (its buffer was emptied by the host at step k − 1) */
            const size_t off = k * STAGE_BYTES, n = bytes - off < STAGE_BYTES ? bytes - off : STAGE_BYTES;
            const int i = (int)(k % 2);
            LP_TRY(lp_cuda_check(be, cudaEventSynchronize(im->free_event[i]), "cudaEventSynchronize (download)"));
            LP_TRY(lp_cuda_check(be, cudaMemcpyAsync(im->staged[i], (const char *)src + off, n,
                                                     cudaMemcpyDeviceToHost, s),
                                 "cudaMemcpyAsync (download)"));
            LP_TRY(lp_cuda_check(be, cudaEventRecord(im->free_event[i], s), "cudaEventRecord (download)"));
        }
        if (k > 0) { /* copy piece k − 1 out once its DMA is done */
            const size_t off = (k - 1) * STAGE_BYTES, n = bytes - off < STAGE_BYTES ? bytes - off : STAGE_BYTES;
            const int i = (int)((k - 1) % 2);
            LP_TRY(lp_cuda_check(be, cudaEventSynchronize(im->free_event[i]), "cudaEventSynchronize (download)"));
            memcpy((char *)dst + off, im->staged[i], n);
        }
    }
    return LP_OK;
}

static lp_status copy_d2d(const lp_backend *be, char *dst, const char *src, size_t bytes) {
    return lp_cuda_check(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, lp_cuda(be)->stream),
                         "cudaMemcpyAsync (device copy)");
}

/* memmove on device memory. cudaMemcpy is undefined on overlapping ranges, so
 * an overlapping copy at distance d goes in pieces of at most d bytes, each
 * reading bytes that no earlier piece has overwritten: front to back when
 * dst < src, back to front when dst > src. When that takes many pieces (a
 * small shift of a large range) it goes through a stream-ordered bounce
 * buffer instead, if one can be had. */
static lp_status cuda_copy(const lp_backend *be, void *dst, const void *src, size_t bytes) {
    LP_TRY(sticky_status(be));
    char *d = (char *)dst;
    const char *s = (const char *)src;
    if (!bytes || d == s) return LP_OK;
    size_t dist = d > s ? (size_t)(d - s) : (size_t)(s - d);
    if (dist >= bytes) return copy_d2d(be, d, s, bytes);
    cudaStream_t stream = lp_cuda(be)->stream;
    if ((bytes + dist - 1) / dist > COPY_MAX_PIECES) {
        void *tmp = NULL;
        if (cudaMallocAsync(&tmp, bytes, stream) == cudaSuccess) {
            cudaError_t e = cudaMemcpyAsync(tmp, s, bytes, cudaMemcpyDeviceToDevice, stream);
            if (e == cudaSuccess) e = cudaMemcpyAsync(d, tmp, bytes, cudaMemcpyDeviceToDevice, stream);
            cudaError_t f = cudaFreeAsync(tmp, stream);
            return lp_cuda_check(be, e != cudaSuccess ? e : f, "overlapping device copy through a bounce buffer");
        }
        cudaGetLastError(); /* no bounce buffer: fall back to pieces */
    }
    if (d < s) {
        for (size_t off = 0; off < bytes; off += dist)
            LP_TRY(copy_d2d(be, d + off, s + off, bytes - off < dist ? bytes - off : dist));
    } else {
        for (size_t end = bytes; end > 0;) {
            size_t n = end < dist ? end : dist;
            end -= n;
            LP_TRY(copy_d2d(be, d + end, s + end, n));
        }
    }
    return LP_OK;
}

/* Device memory in use by the process: total − free of the current device. */
static size_t cuda_memory_in_use(const lp_backend *be) {
    (void)be;
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return 0;
    return total_b - free_b;
}

static void cuda_synchronize(const lp_backend *be) {
    lp_cuda_check(be, cudaStreamSynchronize(lp_cuda(be)->stream), "cudaStreamSynchronize");
}

lp_status lp_cuda_ring_wrap(const lp_backend *be) {
    lp_cuda_state *st = lp_cuda(be);
    /* earlier ops may still read the old device bytes, and earlier copies
     * may still read the old pinned host bytes */
    LP_TRY(lp_cuda_check(be, cudaStreamSynchronize(st->stream), "cudaStreamSynchronize (upload ring wrap)"));
    st->ring_pos = 0;
    st->ring_wraps++;
    return LP_OK;
}

void *lp_cuda_stage(const lp_backend *be, const void *host, size_t n) {
    lp_cuda_state *st = lp_cuda(be);
    if (n > st->ring_bytes) {
        lp_fail(LP_ERR_ARG, "CUDA: %zu bytes of host data exceed the %zu-byte upload ring", n, st->ring_bytes);
        set_sticky(be, LP_ERR_ARG);
        return NULL;
    }
    /* a copy made since the last wrap is still in both rings: the pinned
     * bytes are compared with the host's, the device ones are what the copy
     * issued earlier on the stream wrote */
    for (int i = 0; n && i < LP_CUDA_STAGED; i++)
        if (st->staged[i].host == host && st->staged[i].n == n && st->staged[i].wraps == st->ring_wraps &&
            !memcmp(st->ring_host + st->staged[i].pos, host, n))
            return st->ring + st->staged[i].pos;
    if (n > st->ring_bytes - st->ring_pos && lp_cuda_ring_wrap(be) != LP_OK) return NULL;
    size_t pos = st->ring_pos;
    if (n) {
        st->staged[st->staged_next].host = host;
        st->staged[st->staged_next].n = n;
        st->staged[st->staged_next].pos = pos;
        st->staged[st->staged_next].wraps = st->ring_wraps;
        st->staged_next = (st->staged_next + 1) % LP_CUDA_STAGED;
        memcpy(st->ring_host + pos, host, n);
        cudaError_t e = cudaMemcpyAsync(st->ring + pos, st->ring_host + pos, n, cudaMemcpyHostToDevice, st->stream);
        if (lp_cuda_check(be, e, "cudaMemcpyAsync (upload ring)") != LP_OK)
            return NULL;
    }
    /* ring_bytes and pos are multiples of RING_ALIGN, so this stays <= ring_bytes */
    st->ring_pos = pos + (n + RING_ALIGN - 1) / RING_ALIGN * RING_ALIGN;
    return st->ring + pos;
}

/* ---------------------------------------------------------------------------
 * Weight cache */

static size_t hash_key(const void *host, int as_bf16) {
    uint64_t h = (uint64_t)(uintptr_t)host ^ (uint64_t)as_bf16;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (size_t)h;
}

/* The slot holding the key, or the empty slot where it would go. */
static weight_entry *cache_slot(const lp_cuda_weight_cache *c, const void *host, int as_bf16) {
    size_t mask = c->cap - 1;
    for (size_t i = hash_key(host, as_bf16) & mask;; i = (i + 1) & mask) {
        weight_entry *e = &c->slots[i];
        if (!e->host || (e->host == host && e->as_bf16 == as_bf16)) return e;
    }
}

static lp_status cache_grow(lp_cuda_weight_cache *c) {
    size_t cap = c->cap ? c->cap * 2 : 256;
    weight_entry *slots = (weight_entry *)calloc(cap, sizeof *slots);
    if (!slots) return lp_fail(LP_ERR_NOMEM, "out of memory growing the CUDA weight cache to %zu entries", cap);
    lp_cuda_weight_cache grown = {slots, cap, c->count};
    for (size_t i = 0; i < c->cap; i++)
        if (c->slots[i].host) *cache_slot(&grown, c->slots[i].host, c->slots[i].as_bf16) = c->slots[i];
    free(c->slots);
    *c = grown;
    return LP_OK;
}

/* *out = a new device copy of t's first numel elements as bf16 or f32
 * (issued on the stream; t->data stays valid by contract, so no wait). */
static lp_status weight_upload(const lp_backend *be, const lp_tensor *t, int as_bf16, int64_t numel, void **out) {
    cuda_impl *im = impl_of(be);
    cudaStream_t s = im->st.stream;
    size_t in_bytes = (size_t)numel * lp_dtype_size(t->dtype);
    size_t out_bytes = (size_t)numel * (as_bf16 ? 2 : 4);
    char what[160];
    snprintf(what, sizeof what, "weight '%s'", t->name ? t->name : "?");
    void *dev = NULL;
    LP_TRY(device_alloc(&dev, out_bytes, what));
    cudaError_t e;
    if (t->dtype == (as_bf16 ? LP_BF16 : LP_F32)) {
        e = cudaMemcpyAsync(dev, t->data, out_bytes, cudaMemcpyHostToDevice, s);
    } else { /* upload as stored, convert on the device */
        void *raw = NULL;
        e = cudaMallocAsync(&raw, in_bytes, s);
        if (e == cudaSuccess) {
            e = cudaMemcpyAsync(raw, t->data, in_bytes, cudaMemcpyHostToDevice, s);
            if (e == cudaSuccess) e = convert_any(im, dev, as_bf16, raw, t->dtype, numel);
            cudaError_t f = cudaFreeAsync(raw, s);
            if (e == cudaSuccess) e = f;
        }
    }
    if (e != cudaSuccess) {
        cudaFree(dev);
        return lp_cuda_check(be, e, what);
    }
    *out = dev;
    return LP_OK;
}

/* Records a failure of lp_cuda_weight as sticky (void ops cannot report it). */
static const void *weight_fail(const lp_backend *be, lp_status s) {
    set_sticky(be, s);
    return NULL;
}

const void *lp_cuda_weight(const lp_backend *be, const lp_tensor *t, int as_bf16) {
    cuda_impl *im = impl_of(be);
    lp_cuda_weight_cache *c = &im->cache;
    as_bf16 = as_bf16 != 0;
    int64_t numel = lp_tensor_numel(t);
    if (t->data) {
        weight_entry *hit = cache_slot(c, t->data, as_bf16);
        if (hit->host && hit->dtype == t->dtype && hit->numel >= numel) return hit->dev;
    }
    /* slow path: first use (or a view of the same bytes with a different
     * dtype or more elements, which replaces the old copy) */
    const char *name = t->name ? t->name : "?";
    if (!t->data || numel <= 0)
        return weight_fail(be, lp_fail(LP_ERR_ARG, "CUDA: weight '%s' has no data", name));
    if (t->dtype != LP_F32 && t->dtype != LP_F16 && t->dtype != LP_BF16 && t->dtype != LP_F64)
        return weight_fail(be, lp_fail(LP_ERR_UNSUPPORTED, "CUDA: weight '%s': dtype %s is not supported for weights",
                                       name, lp_dtype_name(t->dtype)));
    if ((uint64_t)numel > (uint64_t)t->nbytes / lp_dtype_size(t->dtype))
        return weight_fail(be, lp_fail(LP_ERR_FORMAT, "CUDA: weight '%s' has %lld elements but only %zu bytes", name,
                                       (long long)numel, t->nbytes));
    weight_entry *e = cache_slot(c, t->data, as_bf16);
    if (!e->host && (c->count + 1) * 2 > c->cap) {
        lp_status s = cache_grow(c);
        if (s != LP_OK) return weight_fail(be, s);
        e = cache_slot(c, t->data, as_bf16);
    }
    void *dev = NULL;
    lp_status s = weight_upload(be, t, as_bf16, numel, &dev);
    if (s != LP_OK) return weight_fail(be, s);
    if (e->host) { /* replace a stale copy that ops in flight may still read */
        if (lp_cuda_check(be, cudaStreamSynchronize(im->st.stream), "cudaStreamSynchronize (weight cache)") != LP_OK) {
            cudaFree(dev);
            return NULL;
        }
        cudaFree(e->dev);
    } else {
        c->count++;
    }
    e->host = t->data;
    e->as_bf16 = as_bf16;
    e->dtype = t->dtype;
    e->numel = numel;
    e->dev = dev;
    return dev;
}

/* ---------------------------------------------------------------------------
 * cuBLASLt GEMMs */

static lp_status lp_cuda_gemm_create_op(lp_cuda_gemm *g, int trans_a, const char *who) {
    cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
    LP_TRY(lp_cuda_lt_check(cublasLtMatmulDescCreate(&g->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), who,
                            "matmul descriptor"));
    LP_TRY(lp_cuda_lt_check(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), who,
                            "transA"));
    return lp_cuda_lt_check(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), who,
                            "transB");
}

lp_status lp_cuda_choose_algo(const lp_backend *be, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a,
                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t d, const uint32_t align[4],
                              const char *who, const char *kind, cublasLtMatmulAlgo_t *algo) {
    lp_cuda_state *st = lp_cuda(be);
    cublasLtMatmulPreference_t pref = NULL;
    lp_status s = lp_cuda_lt_check(cublasLtMatmulPreferenceCreate(&pref), who, "matmul preference");
    uint64_t ws = st->workspace_bytes;
    if (s == LP_OK)
        s = lp_cuda_lt_check(
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws), who,
            "workspace preference");
    const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4 && s == LP_OK; i++)
        if (align[i])
            s = lp_cuda_lt_check(cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i], &align[i], sizeof align[i]),
                                 who, "alignment preference");
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    if (s == LP_OK)
        s = lp_cuda_lt_check(cublasLtMatmulAlgoGetHeuristic((cublasLtHandle_t)st->cublaslt, op, a, b, d, d, pref, 1,
                                                            &res, &found),
                             who, "algorithm heuristic");
    if (s == LP_OK && (found < 1 || res.state != CUBLAS_STATUS_SUCCESS))
        s = lp_fail(LP_ERR_UNSUPPORTED, "%s: cuBLASLt has no %s GEMM algorithm for it", who, kind);
    if (s == LP_OK) *algo = res.algo;
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    return s;
}

static lp_status lp_cuda_gemm_run(const lp_backend *be, const lp_cuda_gemm *g, const void *A, const void *B, float beta,
                           void *D, const char *who) {
    lp_cuda_state *st = lp_cuda(be);
    const float alpha = 1.0f;
    return lp_cuda_lt_check(cublasLtMatmul((cublasLtHandle_t)st->cublaslt, g->op, &alpha, A, g->a, B, g->b, &beta, D,
                                           g->d, D, g->d, &g->algo, st->workspace, st->workspace_bytes, st->stream),
                            who, "matmul");
}

static void lp_cuda_gemm_clear(lp_cuda_gemm *g) {
    if (g->a) cublasLtMatrixLayoutDestroy(g->a);
    if (g->b) cublasLtMatrixLayoutDestroy(g->b);
    if (g->d) cublasLtMatrixLayoutDestroy(g->d);
    if (g->op) cublasLtMatmulDescDestroy(g->op);
    memset(g, 0, sizeof *g);
}

/* ---------------------------------------------------------------------------
 * Linear layer */


static void plan_clear(gemm_plan *p) {
    lp_cuda_gemm_clear(&p->g);
    memset(p, 0, sizeof *p);
}

/* Builds g for y = x·Wᵀ with epilogue mode epi (see plan_build).
 *
 * cuBLASLt is column-major. A row-major [R, C] array with row stride C is
 * the column-major C×R matrix of its transpose, with leading dimension C. So:
 *   W row-major [N, K]  = column-major K×N, ld K   (A, used transposed: op(A) is N×K)
 *   x row-major [M, K]  = column-major K×M, ld K   (B, not transposed)
 *   y row-major [M, N]  = column-major N×M, ld N   (C and D)
 * and D(N×M) = Aᵀ(N×K) · B(K×M) is yᵀ = W·xᵀ, i.e. y = x·Wᵀ. The bias
 * epilogue adds bias[i] to row i of D (length = rows of D = N), which is
 * column i of y for every token, as Linear does, before the GELU. W and the
 * bias are cache entries (cudaMalloc'd, 256-byte aligned; the heuristic reads
 * the bias pointer's alignment, so it is set here and again per call). */
/* Builds p's descriptors for epilogue mode epi and chooses its algorithm
 * (the heuristic's first choice). */
static lp_status plan_build_epi(const lp_backend *be, gemm_plan *p, int epi, const void *bias, const char *who) {
    lp_cuda_gemm *g = &p->g;
    const int y_bf16 = (p->out_flags & LP_LINEAR_Y_ACT) != 0, gelu = (p->out_flags & LP_LINEAR_GELU) != 0;
    const int fused = epi != EPI_KERNEL, d_bf16 = fused && y_bf16;
    lp_status s = lp_cuda_gemm_create_op(g, 1, who);
    if (s == LP_OK && fused && (p->bias || gelu)) {
        cublasLtEpilogue_t e = p->bias ? (gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                                       : CUBLASLT_EPILOGUE_GELU;
        s = lp_cuda_lt_check(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e), who,
                             "epilogue");
    }
    if (s == LP_OK && fused && p->bias) {
        int32_t bias_type = epi == EPI_FUSED_BF16_BIAS ? CUDA_R_16BF : CUDA_R_32F;
        s = lp_cuda_lt_check(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                                            sizeof bias_type),
                             who, "bias type");
        if (s == LP_OK)
            s = lp_cuda_lt_check(
                cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias), who,
                "bias pointer");
    }
    const int64_t M = p->M, N = p->N, K = p->K;
    if (s == LP_OK)
        s = lp_cuda_lt_check(cublasLtMatrixLayoutCreate(&g->a, CUDA_R_16BF, (uint64_t)K, (uint64_t)N, K), who,
                             "layout of W");
    if (s == LP_OK)
        s = lp_cuda_lt_check(cublasLtMatrixLayoutCreate(&g->b, CUDA_R_16BF, (uint64_t)K, (uint64_t)M, K), who,
                             "layout of x");
    if (s == LP_OK)
        s = lp_cuda_lt_check(
            cublasLtMatrixLayoutCreate(&g->d, d_bf16 ? CUDA_R_16BF : CUDA_R_32F, (uint64_t)N, (uint64_t)M, N), who,
            "layout of y");
    if (s == LP_OK && p->batch > 1) { /* W's one after the other, the same x (stride 0), y's y_stride apart */
        int32_t count = p->batch;
        int64_t strides[3] = {N * K, 0, p->y_stride}, bias_stride = N;
        cublasLtMatrixLayout_t layouts[3] = {g->a, g->b, g->d};
        for (int i = 0; i < 3 && s == LP_OK; i++) {
            s = lp_cuda_lt_check(cublasLtMatrixLayoutSetAttribute(layouts[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                                  &count, sizeof count),
                                 who, "batch count");
            if (s == LP_OK)
                s = lp_cuda_lt_check(cublasLtMatrixLayoutSetAttribute(
                                         layouts[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &strides[i],
                                         sizeof strides[i]),
                                     who, "batch stride");
        }
        if (s == LP_OK && p->bias)
            s = lp_cuda_lt_check(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE,
                                                                &bias_stride, sizeof bias_stride),
                                 who, "bias batch stride");
    }
    /* an EPI_KERNEL plan with a bf16 y writes the 256-byte aligned scratch */
    uint32_t align_d = !fused && y_bf16 ? 256 : p->align_y;
    /* A (the weight) is cudaMalloc'd: its alignment is left to cuBLASLt */
    const uint32_t align[4] = {0, p->align_x, align_d, align_d};
    if (s == LP_OK) s = lp_cuda_choose_algo(be, g->op, g->a, g->b, g->d, align, who, "bf16", &g->algo);
    if (s != LP_OK) lp_cuda_gemm_clear(g);
    return s;
}

/* Builds the plan of y = x·Wᵀ (+ b) (then GELU) for its key, with the first
 * epilogue mode that cuBLASLt takes: EPI_FUSED, then (a bias into a bf16 y)
 * EPI_FUSED_BF16_BIAS, then (any bias, GELU or bf16 y) EPI_KERNEL, whose
 * plain f32 GEMM is what cuBLASLt always has. The error of the last one
 * tried is returned when none works. */
static lp_status plan_build(const lp_backend *be, gemm_plan *p, const void *bias) {
    char who[112];
    snprintf(who, sizeof who, "linear M=%lld N=%lld K=%lld%s%s%s", (long long)p->M, (long long)p->N,
             (long long)p->K, p->bias ? " +bias" : "", p->out_flags & LP_LINEAR_GELU ? " +gelu" : "",
             p->out_flags & LP_LINEAR_Y_ACT ? " (bf16 out)" : "");
    const int y_bf16 = (p->out_flags & LP_LINEAR_Y_ACT) != 0;
    /* a batch runs with the fused epilogue only (lp_cuda_linear_batch falls back to single products) */
    const int modes[3] = {EPI_FUSED, p->batch == 1 && p->bias && y_bf16 ? EPI_FUSED_BF16_BIAS : -1,
                          p->batch == 1 && (p->bias || p->out_flags) ? EPI_KERNEL : -1};
    lp_status s = LP_ERR_UNSUPPORTED;
    p->algo_M = p->M;
    for (int i = 0; i < 3; i++) {
        if (modes[i] < 0) continue;
        s = plan_build_epi(be, p, modes[i], bias, who);
        if (s == LP_OK) {
            p->epi = modes[i];
            return LP_OK;
        }
    }
    plan_clear(p);
    return s;
}

/* Row counts in one bucket share a plan: LIPAR changes the number of
 * computed tokens from chunk to chunk, and building a plan (descriptors and
 * cuBLASLt's heuristic) costs far more host time than the GEMM of a pruned
 * chunk. A plan serves another M of its bucket by changing the row count
 * of its x and y layouts (cheap attribute writes) and keeps its algorithm;
 * lp_cuda_linear rebuilds it for the exact M if cuBLASLt refuses that
 * algorithm for the new M. */
#define PLAN_M_BUCKET 512

/* Sets the row count of plan p's x and y layouts to M. */
static lp_status plan_resize(gemm_plan *p, int64_t M) {
    uint64_t cols = (uint64_t)M;
    LP_TRY(lp_cuda_lt_check(cublasLtMatrixLayoutSetAttribute(p->g.b, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof cols),
                            "linear", "row count of x"));
    LP_TRY(lp_cuda_lt_check(cublasLtMatrixLayoutSetAttribute(p->g.d, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof cols),
                            "linear", "row count of y"));
    p->M = M;
    return LP_OK;
}

/* (Re)builds slot p for this key. */
static lp_status plan_make(const lp_backend *be, gemm_plan *p, int64_t M, int64_t N, int64_t K, int batch,
                           int64_t y_stride, unsigned out_flags, const void *bias, uint32_t align_x, uint32_t align_y) {
    plan_clear(p);
    p->batch = batch;
    p->y_stride = y_stride;
    p->M = M;
    p->N = N;
    p->K = K;
    p->out_flags = out_flags;
    p->bias = bias != NULL;
    p->align_x = align_x;
    p->align_y = align_y;
    return plan_build(be, p, bias);
}

/* *out = the cached plan for this key and M's bucket, resized to M, or one
 * built on first use. */
static lp_status plan_get(const lp_backend *be, int64_t M, int64_t N, int64_t K, int batch, int64_t y_stride,
                          unsigned out_flags, const void *bias, uint32_t align_x, uint32_t align_y, gemm_plan **out) {
    cuda_impl *im = impl_of(be);
    for (int i = 0; i < PLAN_SLOTS; i++) {
        gemm_plan *p = &im->plans[i];
        if (p->g.op && p->N == N && p->K == K && p->batch == batch && p->out_flags == out_flags &&
            p->bias == (bias != NULL) &&
            p->align_x == align_x && p->align_y == align_y &&
            (p->M - 1) / PLAN_M_BUCKET == (M - 1) / PLAN_M_BUCKET) {
            *out = p;
            return p->M == M ? LP_OK : plan_resize(p, M);
        }
    }
    gemm_plan *p = &im->plans[im->next_plan];
    im->next_plan = (im->next_plan + 1) % PLAN_SLOTS;
    *out = p;
    return plan_make(be, p, M, N, K, batch, y_stride, out_flags, bias, align_x, align_y);
}

/* Grows the scratch *buf of *bytes to at least need bytes (whole MiB). */
static lp_status scratch_reserve(const lp_backend *be, void **buf, size_t *bytes, size_t need, const char *what) {
    if (*bytes >= need) return LP_OK;
    /* GEMMs in flight may still use the old scratch */
    LP_TRY(lp_cuda_check(be, cudaStreamSynchronize(lp_cuda(be)->stream), "cudaStreamSynchronize (GEMM scratch)"));
    cudaFree(*buf);
    *buf = NULL;
    *bytes = 0;
    size_t want = (need + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
    LP_TRY(device_alloc(buf, want, what));
    *bytes = want;
    return LP_OK;
}

/* Issues the GEMM of plan p (and its epilogue kernel, if separate). */
static lp_status linear_run(const lp_backend *be, const gemm_plan *p, const lp_tensor *b, const float *bias,
                            const void *w, const void *xb, void *y) {
    cuda_impl *im = impl_of(be);
    lp_cuda_state *st = &im->st;
    const int64_t M = p->M, N = p->N;
    const unsigned out_flags = p->out_flags;
    if (p->epi == EPI_KERNEL) {
        void *d = y;
        if (out_flags & LP_LINEAR_Y_ACT) {
            LP_TRY(scratch_reserve(be, &im->gemm_y, &im->gemm_y_bytes, (size_t)(M * N) * 4, "the f32 GEMM output"));
            d = im->gemm_y;
        }
        LP_TRY(lp_cuda_gemm_run(be, &p->g, w, xb, 0.0f, d, "linear"));
        return lp_cuda_bias_act(be, y, (out_flags & LP_LINEAR_Y_ACT) != 0, (const float *)d, M, N, bias,
                                (out_flags & LP_LINEAR_GELU) != 0);
    }
    if (bias) {
        const void *bp = bias;
        if (p->epi == EPI_FUSED_BF16_BIAS && !(bp = lp_cuda_weight(be, b, 1))) return st->sticky;
        LP_TRY(lp_cuda_lt_check(
            cublasLtMatmulDescSetAttribute(p->g.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp), "linear",
            "bias pointer"));
    }
    return lp_cuda_gemm_run(be, &p->g, w, xb, 0.0f, y, "linear");
}

lp_status lp_cuda_linear(const lp_backend *be, void *y, const void *x, int64_t M, const lp_tensor *W,
                         const lp_tensor *b, unsigned flags) {
    if (W->ndim != 2)
        return lp_fail(LP_ERR_SHAPE, "linear: weight '%s' must be 2-D [out, in], has %d dims", W->name, W->ndim);
    int64_t N = W->shape[0], K = W->shape[1];
    if (b && lp_tensor_numel(b) != N)
        return lp_fail(LP_ERR_SHAPE, "linear: bias '%s' has %lld elements, weight '%s' has %lld outputs", b->name,
                       (long long)lp_tensor_numel(b), W->name, (long long)N);
    if (M < 0) return lp_fail(LP_ERR_ARG, "linear: negative row count %lld (weight '%s')", (long long)M, W->name);
    if (N <= 0 || K <= 0)
        return lp_fail(LP_ERR_SHAPE, "linear: weight '%s' has an empty shape [%lld, %lld]", W->name, (long long)N,
                       (long long)K);
    if (flags & ~(LP_LINEAR_X_ACT | LP_LINEAR_Y_ACT | LP_LINEAR_GELU))
        return lp_fail(LP_ERR_ARG, "linear: unknown flags 0x%x (weight '%s')", flags, W->name);
    LP_TRY(sticky_status(be));
    if (M == 0) return LP_OK;
    if (M > INT64_MAX / 4 / K || M > INT64_MAX / 4 / N)
        return lp_fail(LP_ERR_ARG, "linear: %lld rows of %lld inputs and %lld outputs are too many (weight '%s')",
                       (long long)M, (long long)K, (long long)N, W->name);
    cuda_impl *im = impl_of(be);
    lp_cuda_state *st = &im->st;
    const void *w = lp_cuda_weight(be, W, 1); /* bf16 [N, K] */
    if (!w) return st->sticky;
    const float *bias = NULL; /* f32 [N] */
    if (b && !(bias = (const float *)lp_cuda_weight(be, b, 0))) return st->sticky;
    const void *xb = x; /* bf16 [M, K] */
    if (!(flags & LP_LINEAR_X_ACT)) {
        LP_TRY(scratch_reserve(be, &im->gemm_x, &im->gemm_x_bytes, (size_t)(M * K) * 2, "the bf16 GEMM input"));
        LP_TRY(lp_cuda_f32_to_bf16(be, im->gemm_x, (const float *)x, M * K));
        xb = im->gemm_x;
    }
    const unsigned out_flags = flags & (LP_LINEAR_Y_ACT | LP_LINEAR_GELU);
    gemm_plan *p;
    LP_TRY(plan_get(be, M, N, K, 1, 0, out_flags, bias, lp_cuda_alignment_of(xb), lp_cuda_alignment_of(y), &p));
    lp_status s = linear_run(be, p, b, bias, w, xb, y);
    if (s == LP_OK || p->algo_M == M) return s;
    /* the algorithm of another row count of the bucket: choose one for M */
    LP_TRY(plan_make(be, p, M, N, K, 1, 0, out_flags, bias, lp_cuda_alignment_of(xb), lp_cuda_alignment_of(y)));
    return linear_run(be, p, b, bias, w, xb, y);
}

/* Copies the count tensors t[i] (each of `numel` elements) into dst as bf16
 * or f32, one after the other (through weight_upload's conversion). */
static lp_status fuse_upload(const lp_backend *be, const lp_tensor *const *t, int count, int64_t numel, int as_bf16,
                             void *dst) {
    size_t each = (size_t)numel * (as_bf16 ? 2 : 4);
    void *tmp[LP_LINEAR_BATCH_MAX] = {NULL};
    lp_status s = LP_OK;
    for (int i = 0; i < count && s == LP_OK; i++) {
        s = weight_upload(be, t[i], as_bf16, numel, &tmp[i]);
        if (s == LP_OK)
            s = lp_cuda_check(be, cudaMemcpyAsync((char *)dst + i * each, tmp[i], each, cudaMemcpyDeviceToDevice,
                                                  lp_cuda(be)->stream),
                              "cudaMemcpyAsync (fused weight)");
    }
    if (s == LP_OK) s = lp_cuda_check(be, cudaStreamSynchronize(lp_cuda(be)->stream), "cudaStreamSynchronize (fused weight)");
    for (int i = 0; i < count; i++) cudaFree(tmp[i]);
    return s;
}

/* *out = the fused copy of W (and b), made on first use. */
static lp_status fused_get(const lp_backend *be, const lp_tensor *const *W, const lp_tensor *const *b, int count,
                           const fused_weight **out) {
    cuda_impl *im = impl_of(be);
    for (int i = 0; i < im->n_fused; i++) {
        const fused_weight *f = &im->fused[i];
        int same = f->count == count && (f->b != NULL) == (b != NULL);
        for (int j = 0; same && j < count; j++) same = f->host[j] == W[j]->data;
        if (same) {
            *out = f;
            return LP_OK;
        }
    }
    for (int j = 0; j < count; j++) {
        int64_t n = lp_tensor_numel(W[j]);
        if (!W[j]->data || (uint64_t)n > (uint64_t)W[j]->nbytes / lp_dtype_size(W[j]->dtype) ||
            (b && (!b[j]->data || lp_tensor_numel(b[j]) != W[j]->shape[0])))
            return lp_fail(LP_ERR_FORMAT, "linear_batch: weight '%s' or its bias has fewer bytes than its shape",
                           W[j]->name);
    }
    if (im->n_fused == im->cap_fused) {
        int cap = im->cap_fused ? 2 * im->cap_fused : 32;
        fused_weight *nf = (fused_weight *)realloc(im->fused, (size_t)cap * sizeof *nf);
        if (!nf) return lp_fail(LP_ERR_NOMEM, "out of memory for the fused weights");
        im->fused = nf;
        im->cap_fused = cap;
    }
    fused_weight f;
    memset(&f, 0, sizeof f);
    f.count = count;
    for (int j = 0; j < count; j++) f.host[j] = W[j]->data;
    int64_t N = W[0]->shape[0], NK = lp_tensor_numel(W[0]);
    lp_status s = device_alloc(&f.w, (size_t)count * (size_t)NK * 2, "fused weights");
    if (s == LP_OK) s = fuse_upload(be, W, count, NK, 1, f.w);
    if (s == LP_OK && b) s = device_alloc((void **)&f.b, (size_t)count * (size_t)N * 4, "fused biases");
    if (s == LP_OK && b) s = fuse_upload(be, b, count, N, 0, f.b);
    if (s != LP_OK) {
        cudaFree(f.w);
        cudaFree(f.b);
        return s;
    }
    im->fused[im->n_fused] = f;
    *out = &im->fused[im->n_fused++];
    return LP_OK;
}

/* Issues the batched product of plan p. */
static lp_status batch_run(const lp_backend *be, gemm_plan *p, const fused_weight *f, const void *x, void *y,
                           int64_t y_stride) {
    if (p->y_stride != y_stride) {
        LP_TRY(lp_cuda_lt_check(cublasLtMatrixLayoutSetAttribute(p->g.d, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                                 &y_stride, sizeof y_stride),
                                "linear_batch", "batch stride of y"));
        p->y_stride = y_stride;
    }
    if (f->b)
        LP_TRY(lp_cuda_lt_check(
            cublasLtMatmulDescSetAttribute(p->g.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &f->b, sizeof f->b),
            "linear_batch", "bias pointer"));
    return lp_cuda_gemm_run(be, &p->g, f->w, x, 0.0f, y, "linear_batch");
}

/* One batched cuBLASLt product (strided batch: the fused weights, x at
 * stride 0, the y's y_stride apart, the fused epilogue with a bias batch
 * stride of N) when x is bf16 and y f32 without GELU (the form of Q, K and
 * V); single products otherwise, or when cuBLASLt has no batched algorithm. */
static lp_status lp_cuda_linear_batch(const lp_backend *be, void *y, int64_t y_stride, const void *x, int64_t M,
                               const lp_tensor *const *W, const lp_tensor *const *b, int count, unsigned flags) {
    LP_TRY(lp_linear_batch_check(y_stride, M, W, b, count));
    cuda_impl *im = impl_of(be);
    if (count == 1 || flags != LP_LINEAR_X_ACT || im->no_batch || M == 0)
        return lp_linear_batch_loop(be, y, y_stride, x, M, W, b, count, flags);
    LP_TRY(sticky_status(be));
    const fused_weight *f = NULL;
    LP_TRY(fused_get(be, W, b, count, &f));
    int64_t N = W[0]->shape[0], K = W[0]->shape[1];
    gemm_plan *p = NULL;
    lp_status s = plan_get(be, M, N, K, count, y_stride, 0, f->b, lp_cuda_alignment_of(x), lp_cuda_alignment_of(y), &p);
    if (s == LP_OK) s = batch_run(be, p, f, x, y, y_stride);
    if (s != LP_OK && p && p->g.op && p->algo_M != M) { /* the bucket's algorithm refused for M */
        s = plan_make(be, p, M, N, K, count, y_stride, 0, f->b, lp_cuda_alignment_of(x), lp_cuda_alignment_of(y));
        if (s == LP_OK) s = batch_run(be, p, f, x, y, y_stride);
    }
    if (s == LP_ERR_UNSUPPORTED) { /* no batched algorithm: single products from now on */
        im->no_batch = 1;
        return lp_linear_batch_loop(be, y, y_stride, x, M, W, b, count, flags);
    }
    return s;
}

/* ---------------------------------------------------------------------------
 * Creation and destruction */

static void cuda_destroy(lp_backend *be) {
    if (!be) return;
    cuda_impl *im = impl_of(be);
    if (im) {
        lp_cuda_state *st = &im->st;
        if (st->stream) cudaStreamSynchronize(st->stream);
        for (int i = 0; i < PLAN_SLOTS; i++) plan_clear(&im->plans[i]);
        for (size_t i = 0; i < im->cache.cap; i++)
            if (im->cache.slots[i].host) cudaFree(im->cache.slots[i].dev);
        free(im->cache.slots);
        for (int i = 0; i < im->n_fused; i++) {
            cudaFree(im->fused[i].w);
            cudaFree(im->fused[i].b);
        }
        free(im->fused);
        cudaFree(im->gemm_x);
        cudaFree(im->gemm_y);
        cudaFree(st->kv_bf16);
        lp_cuda_conv_free(st);
        lp_cuda_vae_free(st);
        lp_cuda_graphs_free(st);
        cudaFree(st->ring);
        cudaFreeHost(st->ring_host);
        for (int i = 0; i < 2; i++) {
            cudaFreeHost(im->staged[i]);
            if (im->free_event[i]) cudaEventDestroy(im->free_event[i]);
        }
        cudaFree(st->workspace);
        if (st->cublaslt) cublasLtDestroy((cublasLtHandle_t)st->cublaslt);
        if (st->stream) cudaStreamDestroy(st->stream);
        cudaGetLastError(); /* leave no error behind for a later backend on this thread */
        free(im);
    }
    lp_pool_destroy(be->pool);
    free(be);
}

/* Stream, cuBLASLt handle, workspace, upload ring and weight cache of a new
 * backend whose impl is zeroed. */
static lp_status init_device(lp_backend *be, int priority) {
    cuda_impl *im = impl_of(be);
    lp_cuda_state *st = &im->st;
    int least = 0, greatest = 0; /* numerically: greatest <= least */
    LP_TRY(lp_cuda_check(be, cudaDeviceGetStreamPriorityRange(&least, &greatest), "cudaDeviceGetStreamPriorityRange"));
    LP_TRY(lp_cuda_check(be, cudaStreamCreateWithPriority(&st->stream, cudaStreamNonBlocking, priority ? greatest : least),
                         "cudaStreamCreateWithPriority"));
    cublasLtHandle_t lt = NULL;
    LP_TRY(lp_cuda_lt_check(cublasLtCreate(&lt), "CUDA backend", "cublasLtCreate"));
    st->cublaslt = lt;
    LP_TRY(device_alloc(&st->workspace, WORKSPACE_BYTES, "the cuBLASLt workspace"));
    st->workspace_bytes = WORKSPACE_BYTES;
    void *ring = NULL;
    LP_TRY(device_alloc(&ring, RING_BYTES, "the upload ring"));
    st->ring = (char *)ring;
    void *ring_host = NULL;
    LP_TRY(lp_cuda_check(be, cudaHostAlloc(&ring_host, RING_BYTES, cudaHostAllocDefault),
                         "cudaHostAlloc (upload ring)"));
    st->ring_host = (char *)ring_host;
    st->ring_bytes = RING_BYTES;
    for (int i = 0; i < 2; i++) {
        void *h = NULL;
        LP_TRY(lp_cuda_check(be, cudaHostAlloc(&h, STAGE_BYTES, cudaHostAllocDefault), "cudaHostAlloc (staging)"));
        im->staged[i] = (char *)h;
        LP_TRY(lp_cuda_check(be, cudaEventCreateWithFlags(&im->free_event[i], cudaEventDisableTiming),
                             "cudaEventCreate (staging)"));
    }
    st->ring_pos = 0;
    st->weights = &im->cache;
    return cache_grow(&im->cache);
}

lp_status lp_backend_cuda_create(int nthreads, int priority, lp_backend **out) {
    *out = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        cudaGetLastError();
        return lp_fail(LP_ERR_UNSUPPORTED, "CUDA backend: no usable GPU (%s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device found");
    }
    int major = 0, minor = 0, sms = 0;
    e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    if (e == cudaSuccess) e = cudaSetDevice(0);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return lp_fail(status_of(e), "CUDA backend: cannot use device 0: %s", cudaGetErrorString(e));
    }
    if (major < 8)
        return lp_fail(LP_ERR_UNSUPPORTED,
                       "CUDA backend: device 0 has compute capability %d.%d; bf16 tensor cores need 8.0 or newer",
                       major, minor);
    lp_backend *be = (lp_backend *)calloc(1, sizeof *be);
    cuda_impl *im = (cuda_impl *)calloc(1, sizeof *im);
    if (!be || !im) {
        free(be);
        free(im);
        return lp_fail(LP_ERR_NOMEM, "out of memory creating the CUDA backend");
    }
    be->impl = &im->st;
    im->st.device = 0;
    im->st.sms = sms > 0 ? sms : 1;
    im->st.cc = major * 10 + minor;
    im->max_blocks = (sms > 0 ? sms : 1) * 8; /* 8 blocks of 256 threads fill an SM */
    lp_status s = lp_pool_create(nthreads, &be->pool);
    if (s == LP_OK) s = init_device(be, priority);
    if (s != LP_OK) {
        cuda_destroy(be);
        return s;
    }
    be->name = "cuda";
    be->alloc = cuda_alloc;
    be->release = cuda_release;
    be->upload = cuda_upload;
    be->download = cuda_download;
    be->copy = cuda_copy;
    be->patchify = lp_cuda_patchify;
    be->unpatchify = lp_cuda_unpatchify;
    be->add = lp_cuda_add;
    be->clear = lp_cuda_clear;
    be->flow_x0 = lp_cuda_flow_x0;
    be->flow_renoise = lp_cuda_flow_renoise;
    be->copy_patches = lp_cuda_copy_patches;
    be->mask_distance = lp_cuda_mask_distance;
    be->mask_median = lp_cuda_mask_median;
    be->mask_gauss = lp_cuda_mask_gauss;
    be->mask_threshold = lp_cuda_mask_threshold;
    be->mask_or = lp_cuda_mask_or;
    be->mask_majority = lp_cuda_mask_majority;
    be->mask_open_close = lp_cuda_mask_open_close;
    be->mask_dilate = lp_cuda_mask_dilate;
    be->synchronize = cuda_synchronize;
    be->memory_in_use = cuda_memory_in_use;
    be->destroy = cuda_destroy;
    be->linear = lp_cuda_linear;
    be->linear_batch = lp_cuda_linear_batch;
    be->norm_modulate = lp_cuda_norm_modulate;
    be->rms_norm_rope = lp_cuda_rms_norm_rope;
    be->residual_norm_modulate = lp_cuda_residual_norm_modulate;
    be->silu = lp_cuda_silu;
    be->kv_store = lp_cuda_kv_store;
    be->kv_bf16 = 1;
    be->act_bf16 = 1;
    be->attention = lp_cuda_attention;
    be->conv2d = lp_cuda_conv2d;
    be->conv3d = lp_cuda_conv3d;
    be->channel_rms_norm = lp_cuda_channel_rms_norm;
    be->upsample2x = lp_cuda_upsample2x;
    be->spatial_attention = lp_cuda_spatial_attention;
    be->relu = lp_cuda_relu;
    be->tanh_clamp = lp_cuda_tanh_clamp;
    be->clamp01 = lp_cuda_clamp01;
    be->rgb24_to_planar = lp_cuda_rgb24_to_planar;
    be->planar_to_rgb24 = lp_cuda_planar_to_rgb24;
    /* CUDA graphs only with LIPAR_CUDA_GRAPHS=1: they made the DiT loop and
     * `lipar edit` slower on an H100 (docs/PERF.md run 41) */
    const char *graphs = getenv("LIPAR_CUDA_GRAPHS");
    if (graphs && !strcmp(graphs, "1")) {
        be->graph_begin = lp_cuda_graph_begin;
        be->graph_end = lp_cuda_graph_end;
    }
    *out = be;
    return LP_OK;
}
