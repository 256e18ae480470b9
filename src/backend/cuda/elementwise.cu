/* Row-wise, element-wise and data-movement ops of the CUDA backend:
 * LayerNorm, RMSNorm, modulation, gated residual, tanh-GELU, SiLU, 3-D RoPE,
 * the writes of the bf16 KV cache (kv_store), row gathers/scatters,
 * patchify/unpatchify, add, and the f32 → bf16 conversion of GEMM inputs.
 * The CPU versions (src/backend/cpu/elementwise.c, rope.c, memory.c) are the
 * reference semantics: fp32 arithmetic with the same operation order
 * (explicitly rounded __f*_rn so that nvcc does not fuse a multiply-add the
 * CPU rounds twice), RoPE rotations in fp64. Memory-bound: float4 accesses
 * when the row length and the pointers allow, coalesced across the warp;
 * every launch is checked, failures become the sticky error that the next
 * status-returning op reports. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "cuda_internal.h"

#define THREADS 256     /* flat and per-row (warp per row) kernels */
#define ROW_THREADS 128 /* 2-D kernels: threads along a row */
#define MAX_GRID 65535  /* grid-stride loops cover work beyond this many blocks */
#define NORM_CACHE 16   /* float4 per lane kept in registers: rows up to 2048 floats */

/* ------------------------------------------------------------------ helpers */

/* Makes an argument error of an op returning void the sticky error (a
 * failure of lp_cuda_stage, lp_cuda_weight or lp_cuda_check is sticky already). */
static void set_sticky(const lp_backend *be, lp_status s) {
    lp_cuda_state *st = lp_cuda(be);
    if (st->sticky == LP_OK) st->sticky = s;
}

/* LP_OK, or the sticky error of an earlier op (whose message was recorded
 * when it happened): status-returning ops issue nothing after a failure. */
static lp_status pending(const lp_backend *be, const char *op) {
    lp_status s = lp_cuda(be)->sticky;
    if (s == LP_OK) return LP_OK;
    return lp_fail(s, "%s: an earlier CUDA operation failed (%s)", op, lp_status_name(s));
}

static int aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

static unsigned grid_for(int64_t work, int threads) {
    int64_t b = (work + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b > MAX_GRID ? MAX_GRID : b);
}

/* A 2-D launch: x covers the `groups` vector groups of a row (every one, up
 * to 2^31 − 1 blocks), y goes over `rows` (grid-stride beyond 65535). */
static void row_launch(int64_t groups, int64_t rows, dim3 *grid, dim3 *block) {
    int64_t t = (groups + 31) / 32 * 32;
    block->x = (unsigned)(t > ROW_THREADS ? ROW_THREADS : t);
    int64_t b = (groups + block->x - 1) / block->x;
    grid->x = (unsigned)(b > INT32_MAX ? INT32_MAX : b);
    grid->y = (unsigned)(rows > MAX_GRID ? MAX_GRID : rows);
}

/* Rows of `item_bytes` of host index data staged per launch: a quarter of
 * the ring at most, so that arrays staged for one launch never overlap. */
static int64_t stage_chunk(const lp_backend *be, size_t item_bytes) {
    int64_t n = (int64_t)(lp_cuda(be)->ring_bytes / 4 / item_bytes);
    return n < 1 ? 1 : n;
}

/* The device copy of n host int32 (NULL stays NULL); *ok = 0 on failure
 * (sticky, with lp_cuda_stage's message). */
static const int32_t *stage_i32(const lp_backend *be, const int32_t *host, int64_t n, int *ok) {
    if (!host || !*ok) return NULL;
    const int32_t *d = (const int32_t *)lp_cuda_stage(be, host, (size_t)n * sizeof *host);
    if (!d) *ok = 0;
    return d;
}

static lp_status check_indices(const int32_t *idx, int64_t n, const char *op, const char *what) {
    if (!idx) return LP_OK;
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0) return lp_fail(LP_ERR_ARG, "%s: %s[%lld] = %d is negative", op, what, (long long)i, idx[i]);
    return LP_OK;
}

/* The f32 device copy of an affine parameter [dim]; NULL (sticky set) on failure. */
static const float *param_vec(const lp_backend *be, const lp_tensor *t, int64_t dim, const char *op) {
    if (lp_tensor_numel(t) != dim) {
        set_sticky(be, lp_fail(LP_ERR_SHAPE, "%s: parameter '%s' has %lld elements, rows have %lld", op, t->name,
                               (long long)lp_tensor_numel(t), (long long)dim));
        return NULL;
    }
    return (const float *)lp_cuda_weight(be, t, 0);
}

template <int V> __device__ __forceinline__ void load_v(float (&v)[V], const float *p);
template <> __device__ __forceinline__ void load_v<4>(float (&v)[4], const float *p) {
    float4 t = *reinterpret_cast<const float4 *>(p);
    v[0] = t.x;
    v[1] = t.y;
    v[2] = t.z;
    v[3] = t.w;
}
template <> __device__ __forceinline__ void load_v<1>(float (&v)[1], const float *p) { v[0] = *p; }

template <int V> __device__ __forceinline__ void store_v(float *p, const float (&v)[V]);
template <> __device__ __forceinline__ void store_v<4>(float *p, const float (&v)[4]) {
    *reinterpret_cast<float4 *>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
template <> __device__ __forceinline__ void store_v<1>(float *p, const float (&v)[1]) { *p = v[0]; }

__device__ __forceinline__ float warp_sum(float s) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    return s;
}

/* ------------------------------------------------- LayerNorm and RMSNorm */

typedef struct {
    float *y;
    const float *x;
    int64_t rows;
    int dim;
    const float *w, *b; /* [dim] each, optional (RMSNorm: w required, no b) */
    float eps;
    int rms;            /* 1: x·rsqrt(mean(x²)+eps)·w; 0: LayerNorm, biased variance */
} norm_args;

/* V outputs at column c from inputs v, statistics mean and rstd, with the
 * CPU's operation order ((x − m)·rstd)·w + b, resp. (x·rs)·w. */
template <int V>
__device__ __forceinline__ void norm_out(const norm_args &a, const float (&v)[V], float mean, float rstd, int c,
                                         float (&o)[V]) {
    float w[V], b[V];
    if (a.w) load_v<V>(w, a.w + c);
    if (a.b) load_v<V>(b, a.b + c);
#pragma unroll
    for (int j = 0; j < V; j++) {
        if (a.rms) {
            o[j] = __fmul_rn(__fmul_rn(v[j], rstd), w[j]);
        } else {
            o[j] = __fmul_rn(__fsub_rn(v[j], mean), rstd);
            if (a.w) o[j] = __fmul_rn(o[j], w[j]);
            if (a.b) o[j] = __fadd_rn(o[j], b[j]);
        }
    }
}

/* Row statistics from a warp's partial sums sd = Σ(x − mean) and ss =
 * Σ(x − mean)² around a first-pass mean: the corrected two-pass algorithm
 * (mean += Σd/n, Σ(x − mean)² = Σd² − (Σd)²/n) recovers most of what the fp32
 * first pass lost; RMSNorm (mean 0): ss = Σx². Returns 1/sqrt(ss/n + eps),
 * rounded once to float like the CPU. */
__device__ __forceinline__ float row_stats(const norm_args &a, float sd, float ss, float *mean) {
    double n = (double)a.dim, q = (double)warp_sum(ss);
    if (!a.rms) {
        double d = (double)warp_sum(sd);
        q = fmax(q - d * d / n, 0.0);
        *mean += (float)(d / n);
    }
    return (float)(1.0 / sqrt(q / n + (double)a.eps));
}

/* One warp per row, the row held in registers (dim % 4 == 0, dim <= 128·NC,
 * 16-byte aligned rows and parameters): one read, two-pass statistics. */
template <int NC>
__global__ void __launch_bounds__(THREADS) norm_rows_cached(norm_args a) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (THREADS / 32);
    for (int64_t r = ((int64_t)blockIdx.x * THREADS + threadIdx.x) >> 5; r < a.rows; r += warps) {
        const float *x = a.x + r * a.dim;
        float v[NC][4];
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < NC; k++) {
            int c = (k * 32 + lane) * 4;
            if (c < a.dim) {
                load_v<4>(v[k], x + c);
                s += (v[k][0] + v[k][1]) + (v[k][2] + v[k][3]);
            }
        }
        float mean = a.rms ? 0.0f : warp_sum(s) / (float)a.dim, sd = 0.0f, ss = 0.0f;
#pragma unroll
        for (int k = 0; k < NC; k++) {
            if ((k * 32 + lane) * 4 < a.dim) {
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    float d = v[k][j] - mean;
                    sd += d;
                    ss += d * d;
                }
            }
        }
        float rstd = row_stats(a, sd, ss, &mean);
        float *y = a.y + r * a.dim;
#pragma unroll
        for (int k = 0; k < NC; k++) {
            int c = (k * 32 + lane) * 4;
            if (c < a.dim) {
                float o[4];
                norm_out<4>(a, v[k], mean, rstd, c, o);
                store_v<4>(y + c, o);
            }
        }
    }
}

/* One warp per row of any length: reads the row once per pass (the re-reads
 * hit L1/L2). V = 4 needs dim % 4 == 0 and 16-byte aligned pointers. */
template <int V>
__global__ void __launch_bounds__(THREADS) norm_rows(norm_args a) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (THREADS / 32);
    for (int64_t r = ((int64_t)blockIdx.x * THREADS + threadIdx.x) >> 5; r < a.rows; r += warps) {
        const float *x = a.x + r * a.dim;
        float *y = a.y + r * a.dim;
        float v[V], mean = 0.0f, sd = 0.0f, ss = 0.0f;
        if (!a.rms) {
            float s = 0.0f;
            for (int c = lane * V; c < a.dim; c += 32 * V) {
                load_v<V>(v, x + c);
#pragma unroll
                for (int j = 0; j < V; j++) s += v[j];
            }
            mean = warp_sum(s) / (float)a.dim;
        }
        for (int c = lane * V; c < a.dim; c += 32 * V) {
            load_v<V>(v, x + c);
#pragma unroll
            for (int j = 0; j < V; j++) {
                float d = v[j] - mean;
                sd += d;
                ss += d * d;
            }
        }
        float rstd = row_stats(a, sd, ss, &mean);
        for (int c = lane * V; c < a.dim; c += 32 * V) {
            float o[V];
            load_v<V>(v, x + c);
            norm_out<V>(a, v, mean, rstd, c, o);
            store_v<V>(y + c, o);
        }
    }
}

static void launch_norm(const lp_backend *be, const norm_args *a, const char *op) {
    unsigned grid = grid_for(a->rows * 32, THREADS);
    cudaStream_t s = lp_cuda(be)->stream;
    int vec = a->dim % 4 == 0 && aligned16(a->x) && aligned16(a->y) && (!a->w || aligned16(a->w)) &&
              (!a->b || aligned16(a->b));
    if (vec && a->dim <= 128 * NORM_CACHE) norm_rows_cached<NORM_CACHE><<<grid, THREADS, 0, s>>>(*a);
    else if (vec) norm_rows<4><<<grid, THREADS, 0, s>>>(*a);
    else norm_rows<1><<<grid, THREADS, 0, s>>>(*a);
    lp_cuda_check_launch(be, op);
}

static int norm_shape_ok(const lp_backend *be, int64_t rows, int64_t dim, const char *op) {
    if (rows < 0 || dim < 0 || dim > (1 << 30)) {
        set_sticky(be, lp_fail(LP_ERR_ARG, "%s: invalid shape [%lld, %lld]", op, (long long)rows, (long long)dim));
        return 0;
    }
    return rows > 0 && dim > 0;
}

void lp_cuda_layer_norm(const lp_backend *be, float *y, const float *x, int64_t rows, int64_t dim, const lp_tensor *w,
                        const lp_tensor *b, float eps) {
    if (!norm_shape_ok(be, rows, dim, "layer_norm")) return;
    norm_args a = {y, x, rows, (int)dim, NULL, NULL, eps, 0};
    if (w && !(a.w = param_vec(be, w, dim, "layer_norm"))) return;
    if (b && !(a.b = param_vec(be, b, dim, "layer_norm"))) return;
    launch_norm(be, &a, "layer_norm");
}

void lp_cuda_rms_norm(const lp_backend *be, float *x, int64_t rows, int64_t dim, const lp_tensor *w, float eps) {
    if (!norm_shape_ok(be, rows, dim, "rms_norm")) return;
    if (!w) {
        set_sticky(be, lp_fail(LP_ERR_ARG, "rms_norm: the weight is required"));
        return;
    }
    norm_args a = {x, x, rows, (int)dim, NULL, NULL, eps, 1};
    if (!(a.w = param_vec(be, w, dim, "rms_norm"))) return;
    launch_norm(be, &a, "rms_norm");
}

/* ------------------------------------- per-column vectors broadcast over rows */

/* x = x·(1 + scale) + shift; each thread keeps its columns' vectors. */
template <int V>
__global__ void modulate_rows(float *x, int64_t rows, int dim, const float *shift, const float *scale) {
    const int64_t c = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (c >= dim) return;
    float sh[V], sc[V];
    load_v<V>(sh, shift + c);
    load_v<V>(sc, scale + c);
#pragma unroll
    for (int j = 0; j < V; j++) sc[j] = __fadd_rn(1.0f, sc[j]);
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        float v[V];
        float *p = x + r * dim + c;
        load_v<V>(v, p);
#pragma unroll
        for (int j = 0; j < V; j++) v[j] = __fadd_rn(__fmul_rn(v[j], sc[j]), sh[j]);
        store_v<V>(p, v);
    }
}

/* x += y·gate (gate NULL: x += y, the same as a gate of ones). */
template <int V>
__global__ void gated_add_rows(float *x, const float *y, int64_t rows, int dim, const float *gate) {
    const int64_t c = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (c >= dim) return;
    float g[V];
    if (gate) {
        load_v<V>(g, gate + c);
    } else {
#pragma unroll
        for (int j = 0; j < V; j++) g[j] = 1.0f;
    }
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        float a[V], b[V];
        float *p = x + r * dim + c;
        load_v<V>(a, p);
        load_v<V>(b, y + r * dim + c);
#pragma unroll
        for (int j = 0; j < V; j++) a[j] = __fadd_rn(a[j], __fmul_rn(b[j], g[j]));
        store_v<V>(p, a);
    }
}

/* Blocks along the rows in the broadcast kernels: each thread reuses its
 * column vectors over rows / 1024 rows. */
#define BCAST_ROWS 1024

void lp_cuda_modulate(const lp_backend *be, float *x, int64_t rows, int64_t dim, const float *shift,
                      const float *scale) {
    if (!norm_shape_ok(be, rows, dim, "modulate")) return;
    int vec = dim % 4 == 0 && aligned16(x) && aligned16(shift) && aligned16(scale);
    dim3 grid, block;
    row_launch(vec ? dim / 4 : dim, rows < BCAST_ROWS ? rows : BCAST_ROWS, &grid, &block);
    cudaStream_t s = lp_cuda(be)->stream;
    if (vec) modulate_rows<4><<<grid, block, 0, s>>>(x, rows, (int)dim, shift, scale);
    else modulate_rows<1><<<grid, block, 0, s>>>(x, rows, (int)dim, shift, scale);
    lp_cuda_check_launch(be, "modulate");
}

void lp_cuda_gated_add(const lp_backend *be, float *x, const float *y, int64_t rows, int64_t dim, const float *gate) {
    if (!norm_shape_ok(be, rows, dim, "gated_add")) return;
    int vec = dim % 4 == 0 && aligned16(x) && aligned16(y) && (!gate || aligned16(gate));
    dim3 grid, block;
    row_launch(vec ? dim / 4 : dim, rows < BCAST_ROWS ? rows : BCAST_ROWS, &grid, &block);
    cudaStream_t s = lp_cuda(be)->stream;
    if (vec) gated_add_rows<4><<<grid, block, 0, s>>>(x, y, rows, (int)dim, gate);
    else gated_add_rows<1><<<grid, block, 0, s>>>(x, y, rows, (int)dim, gate);
    lp_cuda_check_launch(be, "gated_add");
}

/* -------------------------------------------------------- flat element ops */

enum { OP_GELU_TANH, OP_SILU };

/* 0.5·v·(1 + tanh(u)) written as v·sigmoid(2u) = v / (1 + e^(−2u)): the same
 * function without the cancellation of 1 + tanh(u) for negative v. */
template <int OP> __device__ __forceinline__ float unary(float v) {
    if (OP == OP_GELU_TANH) {
        float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
        return v / (1.0f + expf(-2.0f * u));
    }
    return v / (1.0f + expf(-v));
}

/* In place on n elements: V-wide groups, then the n % V tail. */
template <int OP, int V>
__global__ void unary_kernel(float *x, int64_t n) {
    const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t groups = n / V;
    for (int64_t g = gid; g < groups; g += stride) {
        float v[V];
        load_v<V>(v, x + g * V);
#pragma unroll
        for (int j = 0; j < V; j++) v[j] = unary<OP>(v[j]);
        store_v<V>(x + g * V, v);
    }
    int64_t i = groups * V + gid;
    if (i < n) x[i] = unary<OP>(x[i]);
}

template <int OP> static void launch_unary(const lp_backend *be, float *x, int64_t n, const char *op) {
    if (n <= 0) return;
    cudaStream_t s = lp_cuda(be)->stream;
    if (aligned16(x)) unary_kernel<OP, 4><<<grid_for(n / 4 + 1, THREADS), THREADS, 0, s>>>(x, n);
    else unary_kernel<OP, 1><<<grid_for(n, THREADS), THREADS, 0, s>>>(x, n);
    lp_cuda_check_launch(be, op);
}

void lp_cuda_gelu_tanh(const lp_backend *be, float *x, int64_t n) { launch_unary<OP_GELU_TANH>(be, x, n, "gelu_tanh"); }

void lp_cuda_silu(const lp_backend *be, float *x, int64_t n) { launch_unary<OP_SILU>(be, x, n, "silu"); }

/* y = a + b (y may alias a or b: each element is read before it is written
 * by the same thread). */
template <int V>
__global__ void add_kernel(float *y, const float *a, const float *b, int64_t n) {
    const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t groups = n / V;
    for (int64_t g = gid; g < groups; g += stride) {
        float u[V], v[V];
        load_v<V>(u, a + g * V);
        load_v<V>(v, b + g * V);
#pragma unroll
        for (int j = 0; j < V; j++) u[j] = __fadd_rn(u[j], v[j]);
        store_v<V>(y + g * V, u);
    }
    int64_t i = groups * V + gid;
    if (i < n) y[i] = __fadd_rn(a[i], b[i]);
}

void lp_cuda_add(const lp_backend *be, float *y, const float *a, const float *b, int64_t n) {
    if (n <= 0) return;
    cudaStream_t s = lp_cuda(be)->stream;
    if (aligned16(y) && aligned16(a) && aligned16(b))
        add_kernel<4><<<grid_for(n / 4 + 1, THREADS), THREADS, 0, s>>>(y, a, b, n);
    else add_kernel<1><<<grid_for(n, THREADS), THREADS, 0, s>>>(y, a, b, n);
    lp_cuda_check_launch(be, "add");
}

/* Round to nearest even, NaN kept quiet: bit-identical to lp_f32_to_bf16. */
__device__ __forceinline__ uint32_t bf16_bits(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

template <int V> __device__ __forceinline__ void store_bf16(uint16_t *p, const float (&v)[V]);
template <> __device__ __forceinline__ void store_bf16<4>(uint16_t *p, const float (&v)[4]) {
    *reinterpret_cast<uint2 *>(p) =
        make_uint2(bf16_bits(v[0]) | bf16_bits(v[1]) << 16, bf16_bits(v[2]) | bf16_bits(v[3]) << 16);
}
template <> __device__ __forceinline__ void store_bf16<1>(uint16_t *p, const float (&v)[1]) {
    *p = (uint16_t)bf16_bits(v[0]);
}

/* V = 4: float4 in, four bf16 (8 bytes) out; then the n % V tail. */
template <int V>
__global__ void to_bf16_kernel(uint16_t *dst, const float *src, int64_t n) {
    const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t groups = n / V;
    for (int64_t g = gid; g < groups; g += stride) {
        float v[V];
        load_v<V>(v, src + g * V);
        store_bf16<V>(dst + g * V, v);
    }
    int64_t i = groups * V + gid;
    if (i < n) dst[i] = (uint16_t)bf16_bits(src[i]);
}

void lp_cuda_f32_to_bf16(const lp_backend *be, void *dst, const float *src, int64_t n) {
    if (n <= 0) return;
    cudaStream_t s = lp_cuda(be)->stream;
    uint16_t *d = (uint16_t *)dst;
    if (aligned16(src) && ((uintptr_t)dst & 7) == 0)
        to_bf16_kernel<4><<<grid_for(n / 4 + 1, THREADS), THREADS, 0, s>>>(d, src, n);
    else to_bf16_kernel<1><<<grid_for(n, THREADS), THREADS, 0, s>>>(d, src, n);
    lp_cuda_check_launch(be, "f32_to_bf16");
}

/* -------------------------------------------------------------------- RoPE */

/* Stores a rotated pair (rounded once to f32): as f32, or as two bf16 (one
 * 4-byte store) for the KV cache. */
__device__ __forceinline__ void store_pair(float *y, float a, float b) {
    y[0] = a;
    y[1] = b;
}
__device__ __forceinline__ void store_pair(uint16_t *y, float a, float b) {
    *reinterpret_cast<uint32_t *>(y) = bf16_bits(a) | bf16_bits(b) << 16;
}

/* 3-D RoPE (spec/MODEL.md §6) of rows [0, rows) of x [rows, heads·head_dim]
 * into y (the same layout; y may be x): one thread per (row, pair) computes
 * the angle pos·10000^(−i/n) and its cos/sin in fp64 (the pair's part and
 * index i inside a part of n pairs as in rope.c), then rotates that pair in
 * every head, in fp64, rounding once to f32 (and then to bf16 for a bf16 y).
 * The per-pair frequencies are built per block in shared memory
 * ([head_dim/2] doubles). pos [rows][3] (frame, row, col) in device memory;
 * a bf16 y needs an even head_dim and 4-byte alignment (pair stores). */
template <typename T>
__global__ void rope_kernel(T *y, const float *x, int64_t rows, int heads, int head_dim, const int32_t *pos) {
    extern __shared__ double s_freq[];
    const int half = head_dim / 2, nh = head_dim / 6, nf = half - 2 * nh;
    for (int p = threadIdx.x; p < half; p += blockDim.x) {
        int n = p < nf ? nf : nh, i = p < nf ? p : p < nf + nh ? p - nf : p - nf - nh;
        s_freq[p] = 1.0 / pow(10000.0, (double)(2 * i) / (double)(2 * n));
    }
    __syncthreads();
    const int64_t total = rows * half, stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t ld = (int64_t)heads * head_dim;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        int64_t r = t / half;
        int p = (int)(t - r * half), part = p < nf ? 0 : p < nf + nh ? 1 : 2;
        double sn, cs;
        sincos((double)pos[r * 3 + part] * s_freq[p], &sn, &cs);
        const float *v = x + r * ld + 2 * p;
        T *w = y + r * ld + 2 * p;
        for (int h = 0; h < heads; h++, v += head_dim, w += head_dim) {
            double x0 = v[0], x1 = v[1];
            store_pair(w, (float)__dsub_rn(__dmul_rn(x0, cs), __dmul_rn(x1, sn)),
                       (float)__dadd_rn(__dmul_rn(x0, sn), __dmul_rn(x1, cs)));
        }
    }
}

/* Rotates x into y (f32 or bf16): positions are a host array, staged into the
 * ring in pieces of rows. rows, heads > 0, head_dim >= 2. */
template <typename T>
static lp_status rope_launch(const lp_backend *be, T *y, const float *x, int64_t rows, int heads, int head_dim,
                             const int32_t *pos, const char *op) {
    const int half = head_dim / 2;
    const int64_t chunk = stage_chunk(be, 3 * sizeof(int32_t)), ld = (int64_t)heads * head_dim;
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int64_t n = rows - r0 < chunk ? rows - r0 : chunk;
        int ok = 1;
        const int32_t *dpos = stage_i32(be, pos + r0 * 3, n * 3, &ok);
        if (!ok) return lp_cuda(be)->sticky != LP_OK ? lp_cuda(be)->sticky : LP_ERR_NOMEM; /* sticky: stage failed */
        rope_kernel<T><<<grid_for(n * half, THREADS), THREADS, (size_t)half * sizeof(double), lp_cuda(be)->stream>>>(
            y + r0 * ld, x + r0 * ld, n, heads, head_dim, dpos);
        LP_TRY(lp_cuda_check_launch(be, op));
    }
    return LP_OK;
}

void lp_cuda_rope3d(const lp_backend *be, float *x, int64_t rows, int heads, int head_dim, const int32_t *pos) {
    if (rows < 0 || heads < 0 || head_dim < 0 || head_dim > 8192) {
        set_sticky(be, lp_fail(LP_ERR_ARG, "rope3d: invalid shape rows %lld, heads %d, head_dim %d", (long long)rows,
                               heads, head_dim));
        return;
    }
    if (rows == 0 || heads == 0 || head_dim < 2) return;
    (void)rope_launch(be, x, x, rows, heads, head_dim, pos, "rope3d"); /* failures are sticky */
}

/* The bf16 KV cache: keys through rope_kernel<uint16_t>, other rows through
 * to_bf16_kernel (both rounding to nearest even like lp_f32_to_bf16). */
lp_status lp_cuda_kv_store(const lp_backend *be, void *cache_rows, const float *src, int64_t rows, int heads,
                           int head_dim, const int32_t *pos) {
    if (rows < 0 || heads < 0 || head_dim < 0 || head_dim > 8192)
        return lp_fail(LP_ERR_ARG, "kv_store: invalid shape rows %lld, heads %d, head_dim %d", (long long)rows, heads,
                       head_dim);
    const int64_t n = rows * heads * (int64_t)head_dim;
    if (n == 0) return pending(be, "kv_store");
    if (!cache_rows || !src) return lp_fail(LP_ERR_ARG, "kv_store: NULL cache rows or source");
    uint16_t *dst = (uint16_t *)cache_rows;
    if ((uintptr_t)dst < (uintptr_t)(src + n) && (uintptr_t)src < (uintptr_t)(dst + n))
        return lp_fail(LP_ERR_ARG, "kv_store: the cache rows overlap the source");
    if (pos && (head_dim % 2 || ((uintptr_t)dst & 3)))
        return lp_fail(LP_ERR_ARG, "kv_store (cuda): rotated rows need an even head_dim (got %d) and 4-byte aligned "
                                   "cache rows", head_dim);
    LP_TRY(pending(be, "kv_store"));
    if (pos) return rope_launch(be, dst, src, rows, heads, head_dim, pos, "kv_store (rope)");
    cudaStream_t s = lp_cuda(be)->stream;
    if (aligned16(src) && ((uintptr_t)dst & 7) == 0)
        to_bf16_kernel<4><<<grid_for(n / 4 + 1, THREADS), THREADS, 0, s>>>(dst, src, n);
    else to_bf16_kernel<1><<<grid_for(n, THREADS), THREADS, 0, s>>>(dst, src, n);
    return lp_cuda_check_launch(be, "kv_store (bf16)");
}

/* ----------------------------------------------------------- data movement */

/* dst[di[i]] = src[si[i]] for rows i < n of `row` floats (NULL index: base + i). */
template <int V>
__global__ void copy_rows_kernel(float *dst, const int32_t *di, const float *src, const int32_t *si, int64_t n,
                                 int64_t base, int64_t row) {
    const int64_t groups = row / V;
    for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
        const float *s = src + (si ? (int64_t)si[i] : base + i) * row;
        float *d = dst + (di ? (int64_t)di[i] : base + i) * row;
        for (int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups;
             g += (int64_t)gridDim.x * blockDim.x) {
            float v[V];
            load_v<V>(v, s + g * V);
            store_v<V>(d + g * V, v);
        }
    }
}

lp_status lp_cuda_copy_rows(const lp_backend *be, float *dst, const int32_t *dst_idx, const float *src,
                            const int32_t *src_idx, int64_t n, int64_t row_floats) {
    if (n < 0 || row_floats < 0)
        return lp_fail(LP_ERR_ARG, "copy_rows: invalid count %lld or row length %lld", (long long)n,
                       (long long)row_floats);
    LP_TRY(check_indices(dst_idx, n, "copy_rows", "dst_idx"));
    LP_TRY(check_indices(src_idx, n, "copy_rows", "src_idx"));
    LP_TRY(pending(be, "copy_rows"));
    lp_cuda_state *st = lp_cuda(be);
    if (n == 0 || row_floats == 0) return LP_OK;
    int vec = row_floats % 4 == 0 && aligned16(dst) && aligned16(src);
    const int64_t chunk = stage_chunk(be, 2 * sizeof(int32_t));
    for (int64_t i0 = 0; i0 < n; i0 += chunk) {
        int64_t m = n - i0 < chunk ? n - i0 : chunk;
        int ok = 1;
        const int32_t *di = stage_i32(be, dst_idx ? dst_idx + i0 : NULL, m, &ok);
        const int32_t *si = stage_i32(be, src_idx ? src_idx + i0 : NULL, m, &ok);
        if (!ok) return st->sticky != LP_OK ? st->sticky : LP_ERR_NOMEM; /* sticky since lp_cuda_stage failed */
        dim3 grid, block;
        row_launch(vec ? row_floats / 4 : row_floats, m, &grid, &block);
        if (vec) copy_rows_kernel<4><<<grid, block, 0, st->stream>>>(dst, di, src, si, m, i0, row_floats);
        else copy_rows_kernel<1><<<grid, block, 0, st->stream>>>(dst, di, src, si, m, i0, row_floats);
        LP_TRY(lp_cuda_check_launch(be, "copy_rows"));
    }
    return LP_OK;
}

/* Token t = f·(H/2)(W/2) + y·(W/2) + x → the offset of pixel (f, 0, 2y, 2x) in x [F, C, H, W]. */
__device__ __forceinline__ int64_t patch_origin(int64_t t, int C, int H, int W) {
    int64_t w = W / 2, hw = (int64_t)(H / 2) * w, f = t / hw, s = t - f * hw, r = s / w, c = s - r * w;
    return f * C * H * W + 2 * r * W + 2 * c;
}

/* tokens[i][(c·2 + q)·2 + r] = x[f][c][2y+q][2x+r]: one thread per token
 * element (coalesced writes). tokens points at the chunk's first row. */
__global__ void patchify_kernel(float *tokens, const float *x, const int32_t *idx, int64_t n, int64_t base, int C,
                                int H, int W) {
    const int E = 4 * C;
    const int64_t HW = (int64_t)H * W;
    for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
        const float *px = x + patch_origin(idx ? (int64_t)idx[i] : base + i, C, H, W);
        for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < E; e += gridDim.x * blockDim.x)
            tokens[i * E + e] = px[(e >> 2) * HW + ((e >> 1) & 1) * W + (e & 1)];
    }
}

/* x[f][c][2y+q][2x+r] = tokens[i][(q·2 + r)·C + c]: one thread per token
 * element (coalesced reads). */
__global__ void unpatchify_kernel(float *x, const float *tokens, const int32_t *idx, int64_t n, int64_t base, int C,
                                  int H, int W) {
    const int E = 4 * C;
    const int64_t HW = (int64_t)H * W;
    for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
        float *px = x + patch_origin(idx ? (int64_t)idx[i] : base + i, C, H, W);
        for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < E; e += gridDim.x * blockDim.x) {
            int qr = e / C, c = e - qr * C;
            px[c * HW + (qr >> 1) * W + (qr & 1)] = tokens[i * E + e];
        }
    }
}

static lp_status patch_args(const char *op, const int32_t *idx, int64_t n, int C, int H, int W) {
    if (n < 0 || C <= 0 || C > (1 << 28) || H <= 0 || W <= 0 || H % 2 || W % 2)
        return lp_fail(LP_ERR_ARG, "%s: invalid shape n %lld, C %d, H %d, W %d (H and W must be even)", op,
                       (long long)n, C, H, W);
    return check_indices(idx, n, op, "idx");
}

/* Shared driver: stages idx in pieces and launches the kernel per piece. */
static lp_status patch_launch(const lp_backend *be, int unpatch, float *out, const float *in, const int32_t *idx,
                              int64_t n, int C, int H, int W) {
    LP_TRY(pending(be, unpatch ? "unpatchify" : "patchify"));
    lp_cuda_state *st = lp_cuda(be);
    const int64_t chunk = stage_chunk(be, sizeof(int32_t)), E = 4 * (int64_t)C;
    for (int64_t i0 = 0; i0 < n; i0 += chunk) {
        int64_t m = n - i0 < chunk ? n - i0 : chunk;
        int ok = 1;
        const int32_t *d = stage_i32(be, idx ? idx + i0 : NULL, m, &ok);
        if (!ok) return st->sticky != LP_OK ? st->sticky : LP_ERR_NOMEM; /* sticky since lp_cuda_stage failed */
        dim3 grid, block;
        row_launch(E, m, &grid, &block);
        if (unpatch) unpatchify_kernel<<<grid, block, 0, st->stream>>>(out, in + i0 * E, d, m, i0, C, H, W);
        else patchify_kernel<<<grid, block, 0, st->stream>>>(out + i0 * E, in, d, m, i0, C, H, W);
        LP_TRY(lp_cuda_check_launch(be, unpatch ? "unpatchify" : "patchify"));
    }
    return LP_OK;
}

lp_status lp_cuda_patchify(const lp_backend *be, float *tokens, const float *x, const int32_t *idx, int64_t n, int C,
                           int H, int W) {
    LP_TRY(patch_args("patchify", idx, n, C, H, W));
    return patch_launch(be, 0, tokens, x, idx, n, C, H, W);
}

lp_status lp_cuda_unpatchify(const lp_backend *be, float *x, const float *tokens, const int32_t *idx, int64_t n,
                             int C, int H, int W) {
    LP_TRY(patch_args("unpatchify", idx, n, C, H, W));
    return patch_launch(be, 1, x, tokens, idx, n, C, H, W);
}
