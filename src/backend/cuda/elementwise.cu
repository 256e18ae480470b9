/* Row-wise, element-wise and data-movement ops of the CUDA backend: the
 * fused row ops of the DiT blocks (the gated residual add + LayerNorm +
 * modulation into bf16 over frame segments, RMSNorm + 3-D RoPE), SiLU, add, the
 * writes of the bf16 KV cache (kv_store, with its row gathers/scatters),
 * patchify/unpatchify, the editing loop's steps (clear, flow_x0,
 * flow_renoise, copy_patches), and the helpers of linear (f32 → bf16 conversion of
 * GEMM inputs, the bias/GELU epilogue when cuBLASLt cannot fuse it). The CPU
 * versions (src/backend/cpu/) are the reference semantics: fp32 arithmetic
 * with the same operation order (explicitly rounded __f*_rn so that nvcc does
 * not fuse a multiply-add the CPU rounds twice), RoPE rotations in fp64;
 * bf16 outputs are those f32 values rounded to nearest even. Memory-bound:
 * the row ops give each row to one warp, which keeps a row of up to 2048
 * floats in registers (16-byte loads when the row length and the pointers
 * allow, coalesced across the warp); every launch is checked, failures
 * become the sticky error that the next status-returning op reports. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "cuda_internal.h"

#define THREADS 256     /* flat and per-row (warp per row) kernels */
#define ROW_THREADS 128 /* 2-D kernels: threads along a row */
#define ROW_CACHE 16    /* float4 per lane kept in registers: rows up to 2048 floats */
#define ROPE_MAX_HEAD_DIM 1024 /* as the CPU's RoPE */

/* ------------------------------------------------------------------ helpers */



static int aligned16(const void *p) { return lp_cuda_aligned(p, 16); }

/* A 2-D launch: x covers the `groups` vector groups of a row (every one, up
 * to 2^31 − 1 blocks), y goes over `rows` (grid-stride beyond 65535). */
static void row_launch(int64_t groups, int64_t rows, dim3 *grid, dim3 *block) {
    int64_t t = (groups + 31) / 32 * 32;
    block->x = (unsigned)(t > ROW_THREADS ? ROW_THREADS : t);
    int64_t b = (groups + block->x - 1) / block->x;
    grid->x = (unsigned)(b > INT32_MAX ? INT32_MAX : b);
    grid->y = (unsigned)(rows > LP_CUDA_MAX_GRID ? LP_CUDA_MAX_GRID : rows);
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
        lp_cuda_set_sticky(be, lp_fail(LP_ERR_SHAPE,
                                      "%s: parameter '%s' has %lld elements, rows have %lld",
                                      op, t->name, (long long)lp_tensor_numel(t), (long long)dim));
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
template <> __device__ __forceinline__ void load_v<2>(float (&v)[2], const float *p) {
    float2 t = *reinterpret_cast<const float2 *>(p);
    v[0] = t.x;
    v[1] = t.y;
}
template <> __device__ __forceinline__ void load_v<1>(float (&v)[1], const float *p) { v[0] = *p; }

template <int V> __device__ __forceinline__ void store_v(float *p, const float (&v)[V]);
template <> __device__ __forceinline__ void store_v<4>(float *p, const float (&v)[4]) {
    *reinterpret_cast<float4 *>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
template <> __device__ __forceinline__ void store_v<2>(float *p, const float (&v)[2]) {
    *reinterpret_cast<float2 *>(p) = make_float2(v[0], v[1]);
}
template <> __device__ __forceinline__ void store_v<1>(float *p, const float (&v)[1]) { *p = v[0]; }

__device__ __forceinline__ float warp_sum(float s) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    return s;
}

/* Round to nearest even, NaN kept quiet: bit-identical to lp_f32_to_bf16. */
__device__ __forceinline__ uint32_t bf16_bits(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

/* V values stored as f32, or rounded to bf16 in one store (8, 4 or 2 bytes,
 * aligned as much). */
template <int V> __device__ __forceinline__ void store_out(float *p, const float (&v)[V]) { store_v<V>(p, v); }
__device__ __forceinline__ void store_out(uint16_t *p, const float (&v)[4]) {
    *reinterpret_cast<uint2 *>(p) =
        make_uint2(bf16_bits(v[0]) | bf16_bits(v[1]) << 16, bf16_bits(v[2]) | bf16_bits(v[3]) << 16);
}
__device__ __forceinline__ void store_out(uint16_t *p, const float (&v)[2]) {
    *reinterpret_cast<uint32_t *>(p) = bf16_bits(v[0]) | bf16_bits(v[1]) << 16;
}
__device__ __forceinline__ void store_out(uint16_t *p, const float (&v)[1]) { *p = (uint16_t)bf16_bits(v[0]); }

/* Calls f(k, c) for the chunks of V columns that lane `lane` of a warp
 * handles in a row of n elements: chunk k starts at column (k·32 + lane)·V.
 * With NC > 0 (n <= 32·V·NC) the loop is unrolled, so that an array indexed
 * by k stays in registers across passes; with NC = 0 (rows of any length) k
 * is always 0 and every pass reads the row again. */
template <int V, int NC, typename F> __device__ __forceinline__ void for_chunks(int n, int lane, F &&f) {
    if constexpr (NC > 0) {
#pragma unroll
        for (int k = 0; k < NC; k++) {
            int c = (k * 32 + lane) * V;
            if (c < n) f(k, c);
        }
    } else {
        for (int c = lane * V; c < n; c += 32 * V) f(0, c);
    }
}

/* ------------------------------------------------------- row segments */

/* The row count start[n] of seg, or -1 (sticky error set) unless
 * 0 <= n <= LP_MAX_SEGMENTS and start is non-decreasing from 0. */
static int64_t segment_rows(const lp_backend *be, const lp_segments *seg, const char *op) {
    int ok = seg && seg->n >= 0 && seg->n <= LP_MAX_SEGMENTS && seg->start[0] == 0;
    for (int f = 0; ok && f < seg->n; f++) ok = seg->start[f + 1] >= seg->start[f];
    if (!ok) {
        lp_cuda_set_sticky(be, lp_fail(LP_ERR_ARG, "%s: invalid row segments", op));
        return -1;
    }
    return seg->start[seg->n];
}

/* The segment of row r, given the segment f of an earlier row (each thread
 * visits its rows in increasing order, so f only moves forward). */
__device__ __forceinline__ int segment_of(const lp_segments &s, int f, int64_t r) {
    while (f + 1 < s.n && r >= s.start[f + 1]) f++;
    return f;
}

/* ------------------------------------------------------------ 3-D RoPE */

/* 3-D RoPE (spec/MODEL.md §6), shared by rms_norm_rope and kv_store: the
 * head_dim/2 pairs of a head split into frame, row and column parts of
 * nf = d/2 − 2⌊d/6⌋, nh = ⌊d/6⌋ and nh pairs; pair p, pair i of its part of
 * n pairs, turns by the angle pos[part]·10000^(−2i/2n) (as rope.c). The
 * angle, its cos/sin and the rotation are fp64, rounded once to f32. */

/* s_freq[p] = the frequency of pair p, for p < head_dim/2 (the whole block
 * fills it; the caller synchronises). */
__device__ void rope_freqs(double *s_freq, int head_dim) {
    const int half = head_dim / 2, nh = head_dim / 6, nf = half - 2 * nh;
    for (int p = threadIdx.x; p < half; p += blockDim.x) {
        int n = p < nf ? nf : nh, i = p < nf ? p : p < nf + nh ? p - nf : p - nf - nh;
        s_freq[p] = 1.0 / pow(10000.0, (double)(2 * i) / (double)(2 * n));
    }
}

/* (cos, sin) of pair p's angle for the positions pos3 = (frame, row, col). */
__device__ __forceinline__ double2 rope_cs(const int32_t *pos3, int p, int head_dim, double freq) {
    const int nh = head_dim / 6, nf = head_dim / 2 - 2 * nh;
    double s, c;
    sincos((double)pos3[p < nf ? 0 : p < nf + nh ? 1 : 2] * freq, &s, &c);
    return make_double2(c, s);
}

/* (x0, x1) ← (x0·cos − x1·sin, x0·sin + x1·cos). */
__device__ __forceinline__ void rope_rotate(float &x0, float &x1, double2 cs) {
    const double a = x0, b = x1;
    x0 = (float)__dsub_rn(__dmul_rn(a, cs.x), __dmul_rn(b, cs.y));
    x1 = (float)__dadd_rn(__dmul_rn(a, cs.y), __dmul_rn(b, cs.x));
}

/* ------------------------------------------- LayerNorm and modulation */

typedef struct {
    uint16_t *y;                /* bf16 [rows, dim] */
    float *x;                   /* f32 [rows, dim] (written only with res) */
    const float *res;           /* residual_norm_modulate: x += res·gate first (res f32 [rows, dim]), or NULL */
    const float *gate;          /* [seg.n][gate_stride], or NULL (a plain add) */
    int64_t gate_stride;
    int dim;
    const float *w, *b;         /* [dim] each, or NULL */
    float eps;
    const float *shift, *scale; /* [seg.n][stride] each, or both NULL */
    int64_t stride;
    lp_segments seg;            /* the rows: [0, seg.start[seg.n]) */
} nm_args;

/* One warp per row. Statistics: a first-pass mean, then the corrected
 * two-pass algorithm (mean += Σd/n, Σ(x − mean)² = Σd² − (Σd)²/n with
 * d = x − mean) recovers most of what the fp32 first pass lost; rstd =
 * 1/sqrt(var + eps) rounded once to float like the CPU. Output, each step
 * rounded to f32 in the CPU's order, then to bf16:
 * (((x − mean)·rstd)·w + b)·(1 + scale) + shift. V = 4 needs dim % 4 == 0,
 * 16-byte aligned x, w, b, shift, scale (and stride % 4 == 0), 8-byte aligned y. */
template <int V, int NC> __global__ void __launch_bounds__(THREADS) norm_modulate_kernel(nm_args a) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (THREADS / 32), end = a.seg.start[a.seg.n];
    const double n = (double)a.dim;
    int f = 0;
    for (int64_t r = ((int64_t)blockIdx.x * THREADS + threadIdx.x) >> 5; r < end; r += warps) {
        float *x = a.x + r * a.dim;
        float v[NC > 0 ? NC : 1][V], s = 0.0f;
        const float *g = NULL;
        if (a.res && a.gate) {
            f = segment_of(a.seg, f, r);
            g = a.gate + f * a.gate_stride;
        }
        for_chunks<V, NC>(a.dim, lane, [&](int k, int c) {
            load_v<V>(v[k], x + c);
            if (a.res) { /* the gated residual x + y·gate, rounded as the CPU's gated add rounds it */
                float d[V], gg[V];
                load_v<V>(d, a.res + r * a.dim + c);
                if (g) load_v<V>(gg, g + c);
#pragma unroll
                for (int j = 0; j < V; j++) v[k][j] = __fadd_rn(v[k][j], g ? __fmul_rn(d[j], gg[j]) : d[j]);
                store_v<V>(x + c, v[k]); /* the later passes of this lane read their own stores */
            }
#pragma unroll
            for (int j = 0; j < V; j++) s += v[k][j];
        });
        float mean = warp_sum(s) / (float)a.dim, sd = 0.0f, ss = 0.0f;
        for_chunks<V, NC>(a.dim, lane, [&](int k, int c) {
            if constexpr (NC == 0) load_v<V>(v[k], x + c);
#pragma unroll
            for (int j = 0; j < V; j++) {
                float d = v[k][j] - mean;
                sd += d;
                ss += d * d;
            }
        });
        const double dsum = (double)warp_sum(sd), q = fmax((double)warp_sum(ss) - dsum * dsum / n, 0.0);
        mean += (float)(dsum / n);
        const float rstd = (float)(1.0 / sqrt(q / n + (double)a.eps));
        const float *sh = NULL, *sc = NULL;
        if (a.scale) {
            f = segment_of(a.seg, f, r);
            sh = a.shift + f * a.stride;
            sc = a.scale + f * a.stride;
        }
        uint16_t *y = a.y + r * a.dim;
        for_chunks<V, NC>(a.dim, lane, [&](int k, int c) {
            if constexpr (NC == 0) load_v<V>(v[k], x + c);
            float o[V], p[V], t[V];
#pragma unroll
            for (int j = 0; j < V; j++) o[j] = __fmul_rn(__fsub_rn(v[k][j], mean), rstd);
            if (a.w) {
                load_v<V>(p, a.w + c);
#pragma unroll
                for (int j = 0; j < V; j++) o[j] = __fmul_rn(o[j], p[j]);
            }
            if (a.b) {
                load_v<V>(p, a.b + c);
#pragma unroll
                for (int j = 0; j < V; j++) o[j] = __fadd_rn(o[j], p[j]);
            }
            if (sc) {
                load_v<V>(p, sc + c);
                load_v<V>(t, sh + c);
#pragma unroll
                for (int j = 0; j < V; j++) o[j] = __fadd_rn(__fmul_rn(o[j], __fadd_rn(1.0f, p[j])), t[j]);
            }
            store_out(y + c, o);
        });
    }
}

/* norm_modulate, after x += res·gate when res is given (residual_norm_modulate). */
static void norm_modulate_launch(const lp_backend *be, const char *op, void *y, float *x, const float *res,
                                 const float *gate, int64_t gate_stride, int64_t dim, const lp_tensor *w,
                                 const lp_tensor *b, float eps, const lp_segments *seg, const float *shift,
                                 const float *scale, int64_t stride) {
    const int64_t rows = segment_rows(be, seg, op);
    if (rows < 0) return;
    if (dim < 0 || dim > (1 << 30) || !shift != !scale || (scale && stride < 0) || (gate && gate_stride < 0)) {
        lp_cuda_set_sticky(be, lp_fail(LP_ERR_ARG,
                                      "%s: invalid dim %lld or stride %lld, or only one of shift and scale",
                                      op, (long long)dim, (long long)stride));
        return;
    }
    if (rows == 0 || dim == 0) return;
    nm_args a;
    a.y = (uint16_t *)y;
    a.x = x;
    a.res = res;
    a.gate = res ? gate : NULL;
    a.gate_stride = gate_stride;
    a.dim = (int)dim;
    a.w = a.b = NULL;
    a.eps = eps;
    a.shift = shift;
    a.scale = scale;
    a.stride = stride;
    a.seg = *seg;
    if (w && !(a.w = param_vec(be, w, dim, op))) return;
    if (b && !(a.b = param_vec(be, b, dim, op))) return;
    const int vec = dim % 4 == 0 && aligned16(x) && lp_cuda_aligned(y, 8) && (!a.w || aligned16(a.w)) &&
                    (!a.b || aligned16(a.b)) && (!scale || (aligned16(shift) && aligned16(scale) && stride % 4 == 0)) &&
                    (!res || aligned16(res)) && (!a.gate || (aligned16(a.gate) && gate_stride % 4 == 0));
    const unsigned grid = lp_cuda_grid(rows * 32, THREADS);
    cudaStream_t s = lp_cuda(be)->stream;
    if (vec && dim <= 128 * ROW_CACHE) norm_modulate_kernel<4, ROW_CACHE><<<grid, THREADS, 0, s>>>(a);
    else if (vec) norm_modulate_kernel<4, 0><<<grid, THREADS, 0, s>>>(a);
    else norm_modulate_kernel<1, 0><<<grid, THREADS, 0, s>>>(a);
    lp_cuda_check_launch(be, op);
}

void lp_cuda_norm_modulate(const lp_backend *be, void *y, const float *x, int64_t dim, const lp_tensor *w,
                           const lp_tensor *b, float eps, const lp_segments *seg, const float *shift,
                           const float *scale, int64_t stride) {
    /* x is only read when there is no residual */
    norm_modulate_launch(be, "norm_modulate", y, (float *)x, NULL, NULL, 0, dim, w, b, eps, seg, shift, scale,
                         stride);
}

void lp_cuda_residual_norm_modulate(const lp_backend *be, float *x, const float *y, const float *gate,
                                    int64_t gate_stride, void *xn, int64_t dim, const lp_tensor *w,
                                    const lp_tensor *b, float eps, const lp_segments *seg, const float *shift,
                                    const float *scale, int64_t stride) {
    norm_modulate_launch(be, "residual_norm_modulate", xn, x, y, gate, gate_stride, dim, w, b, eps, seg, shift, scale,
                         stride);
}

/* ------------------------------------------------- RMSNorm and RoPE */

typedef struct {
    void *y;            /* T [rows, dim] */
    const float *x;     /* f32 [rows, dim] */
    int64_t rows;
    int dim, head_dim;  /* dim = heads·head_dim */
    const float *w;     /* [dim] */
    float eps;
    const int32_t *pos; /* [rows][3] in device memory, or NULL */
} rr_args;

/* One warp per row: y = (x·rs)·w with rs = 1/sqrt(mean(x²) + eps) (the sum
 * of squares in fp32, the rest in fp64, rs rounded once to f32 like the
 * CPU), then with pos every pair rotated by 3-D RoPE. Dynamic shared
 * memory with pos: the pair frequencies (head_dim/2 doubles, rounded up to
 * an even count), then per warp the (cos, sin) of the current row's pairs
 * (head_dim/2 double2). V = 4 (or 2) needs dim and, with pos, head_dim
 * divisible by V, and x and y aligned to V elements; pos needs V >= 2 (whole
 * pairs per lane). y may equal x for an f32 y: each element is read and
 * written by the same lane, all reads of a pass before the warp's sums. */
template <typename T, int V, int NC> __global__ void __launch_bounds__(THREADS) rms_norm_rope_kernel(rr_args a) {
    extern __shared__ double smem[];
    const int half = a.head_dim / 2, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    double2 *cs = reinterpret_cast<double2 *>(smem + ((half + 1) & ~1)) + warp * half;
    if (a.pos) {
        rope_freqs(smem, a.head_dim);
        __syncthreads();
    }
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + warp; r < a.rows; r += warps) {
        const float *x = a.x + r * a.dim;
        float v[NC > 0 ? NC : 1][V], ss = 0.0f;
        for_chunks<V, NC>(a.dim, lane, [&](int k, int c) {
            load_v<V>(v[k], x + c);
#pragma unroll
            for (int j = 0; j < V; j++) ss += v[k][j] * v[k][j];
        });
        const float rs = (float)(1.0 / sqrt((double)warp_sum(ss) / (double)a.dim + (double)a.eps));
        if (a.pos) {
            for (int p = lane; p < half; p += 32) cs[p] = rope_cs(a.pos + r * 3, p, a.head_dim, smem[p]);
            __syncwarp();
        }
        T *y = (T *)a.y + r * a.dim;
        for_chunks<V, NC>(a.dim, lane, [&](int k, int c) {
            if constexpr (NC == 0) load_v<V>(v[k], x + c);
            float o[V], w[V];
            load_v<V>(w, a.w + c);
#pragma unroll
            for (int j = 0; j < V; j++) o[j] = __fmul_rn(__fmul_rn(v[k][j], rs), w[j]);
            if (a.pos) {
                const int p0 = (c % a.head_dim) >> 1; /* the chunk's pairs lie in one head */
#pragma unroll
                for (int i = 0; i < V / 2; i++) rope_rotate(o[2 * i], o[2 * i + 1], cs[p0 + i]);
            }
            store_out(y + c, o);
        });
        if (a.pos) __syncwarp(); /* the next row's angles overwrite cs */
    }
}

template <typename T>
static void launch_rms_norm_rope(const rr_args &a, int V, unsigned grid, unsigned threads, size_t smem,
                                 cudaStream_t s) {
    if (V == 4 && a.dim <= 128 * ROW_CACHE) rms_norm_rope_kernel<T, 4, ROW_CACHE><<<grid, threads, smem, s>>>(a);
    else if (V == 4) rms_norm_rope_kernel<T, 4, 0><<<grid, threads, smem, s>>>(a);
    else if (V == 2) rms_norm_rope_kernel<T, 2, 0><<<grid, threads, smem, s>>>(a);
    else rms_norm_rope_kernel<T, 1, 0><<<grid, threads, smem, s>>>(a);
}

void lp_cuda_rms_norm_rope(const lp_backend *be, void *y, int y_act, const float *x, int64_t rows, int heads,
                           int head_dim, const lp_tensor *w, float eps, const int32_t *pos) {
    const char *op = "rms_norm_rope";
    const int64_t dim = (int64_t)heads * head_dim;
    if (rows < 0 || heads < 0 || head_dim < 0 || dim > (1 << 30) || !w) {
        lp_cuda_set_sticky(be, lp_fail(LP_ERR_ARG,
                                      "%s: invalid shape rows %lld, heads %d, head_dim %d, or no weight",
                                      op, (long long)rows, heads, head_dim));
        return;
    }
    if (pos && (head_dim % 2 || head_dim > ROPE_MAX_HEAD_DIM)) {
        lp_cuda_set_sticky(be, lp_fail(LP_ERR_UNSUPPORTED, "%s: RoPE needs an even head_dim of at most %d (got %d)", op,
                               ROPE_MAX_HEAD_DIM, head_dim));
        return;
    }
    if (rows == 0 || dim == 0) return;
    rr_args a = {y, x, rows, (int)dim, head_dim, NULL, eps, NULL};
    if (!(a.w = param_vec(be, w, dim, op))) return;
    const unsigned ysz = y_act ? 2 : 4;
    const int V = dim % 4 == 0 && (!pos || head_dim % 4 == 0) && aligned16(x) && lp_cuda_aligned(y, 4 * ysz) ? 4
                  : dim % 2 == 0 && lp_cuda_aligned(x, 8) && lp_cuda_aligned(y, 2 * ysz)                             ? 2
                                                                                                     : 1;
    if (pos && V == 1) {
        lp_cuda_set_sticky(be, lp_fail(LP_ERR_ARG, "%s: rotated rows need x and y aligned to two elements", op));
        return;
    }
    /* with pos, fewer warps per block for long heads keep the shared memory
     * (an even count >= half, plus warps·half·2 doubles) within 36 KiB */
    const int half = head_dim / 2, wpb = !pos ? THREADS / 32 : half >= 256 ? 2048 / half : THREADS / 32;
    const size_t smem = pos ? (size_t)(((half + 1) & ~1) + wpb * half * 2) * sizeof(double) : 0;
    const int64_t chunk = pos ? stage_chunk(be, 3 * sizeof(int32_t)) : rows;
    lp_cuda_state *st = lp_cuda(be);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        rr_args c = a;
        c.rows = rows - r0 < chunk ? rows - r0 : chunk;
        c.x = x + r0 * dim;
        c.y = (char *)y + r0 * dim * ysz;
        if (pos && !(c.pos = (const int32_t *)lp_cuda_stage(be, pos + r0 * 3, (size_t)c.rows * 3 * sizeof *pos)))
            return; /* sticky: the stage failed */
        const unsigned grid = lp_cuda_grid(c.rows, wpb);
        if (y_act) launch_rms_norm_rope<uint16_t>(c, V, grid, 32 * wpb, smem, st->stream);
        else launch_rms_norm_rope<float>(c, V, grid, 32 * wpb, smem, st->stream);
        if (lp_cuda_check_launch(be, op) != LP_OK) return;
    }
}

/* -------------------------------------------------------- flat element ops */

/* x / (1 + e^(−x)) in place on n elements: V-wide groups, then the n % V tail. */
template <int V> __global__ void silu_kernel(float *x, int64_t n) {
    const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t groups = n / V;
    for (int64_t g = gid; g < groups; g += stride) {
        float v[V];
        load_v<V>(v, x + g * V);
#pragma unroll
        for (int j = 0; j < V; j++) v[j] = v[j] / (1.0f + expf(-v[j]));
        store_v<V>(x + g * V, v);
    }
    int64_t i = groups * V + gid;
    if (i < n) x[i] = x[i] / (1.0f + expf(-x[i]));
}

void lp_cuda_silu(const lp_backend *be, float *x, int64_t n) {
    if (n <= 0) return;
    cudaStream_t s = lp_cuda(be)->stream;
    if (aligned16(x)) silu_kernel<4><<<lp_cuda_grid(n / 4 + 1, THREADS), THREADS, 0, s>>>(x, n);
    else silu_kernel<1><<<lp_cuda_grid(n, THREADS), THREADS, 0, s>>>(x, n);
    lp_cuda_check_launch(be, "silu");
}

/* y = a + b (y may alias a or b: each element is read before it is written
 * by the same thread). */
template <int V> __global__ void add_kernel(float *y, const float *a, const float *b, int64_t n) {
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
        add_kernel<4><<<lp_cuda_grid(n / 4 + 1, THREADS), THREADS, 0, s>>>(y, a, b, n);
    else add_kernel<1><<<lp_cuda_grid(n, THREADS), THREADS, 0, s>>>(y, a, b, n);
    lp_cuda_check_launch(be, "add");
}

/* ------------------------------------------- the editing loop's steps */

lp_status lp_cuda_clear(const lp_backend *be, void *p, size_t bytes) {
    LP_TRY(lp_cuda_pending(be, "clear"));
    if (!bytes) return LP_OK;
    return lp_cuda_check(be, cudaMemsetAsync(p, 0, bytes, lp_cuda(be)->stream), "cudaMemsetAsync (clear)");
}

/* x0 = xt − σ·v in fp64, stored f32 (the CPU's formula, no fused multiply-add). */
__global__ void flow_x0_kernel(float *x0, const float *xt, const float *v, double sigma, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x0[i] = __double2float_rn(__dsub_rn((double)xt[i], __dmul_rn(sigma, (double)v[i])));
}

/* x = (1 − σ)·x0 + σ·ε, each product and the sum rounded in f32. */
__global__ void flow_renoise_kernel(float *x, const float *x0, const float *eps, float keep, float sigma, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = __fadd_rn(__fmul_rn(keep, x0[i]), __fmul_rn(sigma, eps[i]));
}

void lp_cuda_flow_x0(const lp_backend *be, float *x0, const float *xt, const float *v, float sigma, int64_t n) {
    if (n <= 0) return;
    flow_x0_kernel<<<lp_cuda_grid(n, THREADS), THREADS, 0, lp_cuda(be)->stream>>>(x0, xt, v, (double)sigma, n);
    lp_cuda_check_launch(be, "flow_x0");
}

void lp_cuda_flow_renoise(const lp_backend *be, float *x, const float *x0, const float *eps, float sigma, int64_t n) {
    if (n <= 0) return;
    flow_renoise_kernel<<<lp_cuda_grid(n, THREADS), THREADS, 0, lp_cuda(be)->stream>>>(x, x0, eps, 1.0f - sigma,
                                                                                      sigma, n);
    lp_cuda_check_launch(be, "flow_renoise");
}

/* One thread per (channel, pixel pair (2·col, 2·col + 1) of a row): copies the
 * pair when its token's keep flag is `kept`. */
__global__ void copy_patches_kernel(float *dst, const float *src, const uint8_t *keep, int kept, int C, int H, int W) {
    const int half = W / 2;
    const int64_t n = (int64_t)C * H * half;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int col = (int)(i % half), y = (int)(i / half % H);
        if ((keep[(y / 2) * half + col] != 0) != kept) continue;
        const int64_t o = i / half * W + 2 * col; /* (c·H + y)·W + 2·col */
        dst[o] = src[o];
        dst[o + 1] = src[o + 1];
    }
}

lp_status lp_cuda_copy_patches(const lp_backend *be, float *dst, const float *src, const uint8_t *keep, int kept,
                               int C, int H, int W) {
    LP_TRY(lp_cuda_pending(be, "copy_patches"));
    if (C < 1 || H < 2 || W < 2 || H % 2 || W % 2 || !dst || !src || !keep)
        return lp_fail(LP_ERR_ARG, "copy_patches: C %d, %dx%d (positive, even sizes) or a NULL buffer", C, W, H);
    const int64_t n = (int64_t)C * H * (W / 2);
    copy_patches_kernel<<<lp_cuda_grid(n, THREADS), THREADS, 0, lp_cuda(be)->stream>>>(dst, src, keep, kept != 0, C,
                                                                                      H, W);
    return lp_cuda_check_launch(be, "copy_patches");
}

/* ------------------------------------------------------ linear's helpers */

/* V = 4: float4 in, four bf16 (8 bytes) out; then the n % V tail. */
template <int V> __global__ void to_bf16_kernel(uint16_t *dst, const float *src, int64_t n) {
    const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t groups = n / V;
    for (int64_t g = gid; g < groups; g += stride) {
        float v[V];
        load_v<V>(v, src + g * V);
        store_out(dst + g * V, v);
    }
    int64_t i = groups * V + gid;
    if (i < n) dst[i] = (uint16_t)bf16_bits(src[i]);
}

lp_status lp_cuda_f32_to_bf16(const lp_backend *be, void *dst, const float *src, int64_t n) {
    if (n <= 0) return LP_OK;
    cudaStream_t s = lp_cuda(be)->stream;
    uint16_t *d = (uint16_t *)dst;
    if (aligned16(src) && lp_cuda_aligned(dst, 8))
        to_bf16_kernel<4><<<lp_cuda_grid(n / 4 + 1, THREADS), THREADS, 0, s>>>(d, src, n);
    else to_bf16_kernel<1><<<lp_cuda_grid(n, THREADS), THREADS, 0, s>>>(d, src, n);
    return lp_cuda_check_launch(be, "f32_to_bf16");
}

/* GELU, tanh approximation: 0.5·v·(1 + tanh(u)) with u = √(2/π)·(v +
 * 0.044715·v³), written as v·sigmoid(2u) = v / (1 + e^(−2u)): the same
 * function without the cancellation of 1 + tanh(u) for negative v. */
__device__ __forceinline__ float gelu_tanh(float v) {
    float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
    return v / (1.0f + expf(-2.0f * u));
}

/* y[m][j] = act(d[m][j] + bias[j]); each thread owns V columns and walks
 * the rows (y may equal d for an f32 y: same thread, read before write). */
template <typename T, int V>
__global__ void bias_act_kernel(T *y, const float *d, int64_t M, int64_t N, const float *bias, int gelu) {
    const int64_t c = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (c >= N) return;
    float b[V];
    if (bias) {
        load_v<V>(b, bias + c);
    } else {
#pragma unroll
        for (int j = 0; j < V; j++) b[j] = 0.0f;
    }
    for (int64_t m = blockIdx.y; m < M; m += gridDim.y) {
        float v[V];
        load_v<V>(v, d + m * N + c);
#pragma unroll
        for (int j = 0; j < V; j++) {
            v[j] = __fadd_rn(v[j], b[j]);
            if (gelu) v[j] = gelu_tanh(v[j]);
        }
        store_out(y + m * N + c, v);
    }
}

lp_status lp_cuda_bias_act(const lp_backend *be, void *y, int y_bf16, const float *d, int64_t M, int64_t N,
                           const float *bias, int gelu) {
    if (M <= 0 || N <= 0) return LP_OK;
    const int vec = N % 4 == 0 && aligned16(d) && lp_cuda_aligned(y, y_bf16 ? 8 : 16) && (!bias || aligned16(bias));
    dim3 grid, block;
    row_launch(vec ? N / 4 : N, M, &grid, &block);
    cudaStream_t s = lp_cuda(be)->stream;
    if (y_bf16 && vec) bias_act_kernel<uint16_t, 4><<<grid, block, 0, s>>>((uint16_t *)y, d, M, N, bias, gelu);
    else if (y_bf16) bias_act_kernel<uint16_t, 1><<<grid, block, 0, s>>>((uint16_t *)y, d, M, N, bias, gelu);
    else if (vec) bias_act_kernel<float, 4><<<grid, block, 0, s>>>((float *)y, d, M, N, bias, gelu);
    else bias_act_kernel<float, 1><<<grid, block, 0, s>>>((float *)y, d, M, N, bias, gelu);
    return lp_cuda_check_launch(be, "linear (bias and activation)");
}

/* ------------------------------------------------------------- kv_store */

/* Rows into the bf16 cache: one thread per (row, pair) takes the pair's
 * (cos, sin) once (keys: pos given) and writes that pair in every head. Row
 * r goes to cache row di[r] (di NULL: r) from row si[r] of the f32 x when
 * si[r] >= 0, from bf16 row −si[r] − 1 of saved otherwise (si NULL: row r of
 * x). The pair frequencies are built per block in shared memory
 * ([head_dim/2] doubles). pos, di and si in device memory; y needs an even
 * head_dim and 4-byte alignment (pair stores). */
__global__ void kv_store_kernel(uint16_t *y, const int32_t *di, const float *x, const uint16_t *saved,
                                const int32_t *si, int64_t rows, int heads, int head_dim, const int32_t *pos) {
    extern __shared__ double s_freq[];
    if (pos) rope_freqs(s_freq, head_dim);
    __syncthreads();
    const int half = head_dim / 2;
    const int64_t total = rows * half, stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t ld = (int64_t)heads * head_dim;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        const int64_t r = t / half;
        const int p = (int)(t - r * half);
        const double2 cs = pos ? rope_cs(pos + r * 3, p, head_dim, s_freq[p]) : make_double2(1.0, 0.0);
        const int64_t from = si ? (int64_t)si[r] : r;
        uint16_t *w = y + (di ? (int64_t)di[r] : r) * ld + 2 * p;
        if (from >= 0) {
            const float *v = x + from * ld + 2 * p;
            for (int h = 0; h < heads; h++, v += head_dim, w += head_dim) {
                float o[2] = {v[0], v[1]};
                if (pos) rope_rotate(o[0], o[1], cs);
                store_out(w, o);
            }
        } else {
            const uint16_t *v = saved + (-from - 1) * ld + 2 * p;
            for (int h = 0; h < heads; h++, v += head_dim, w += head_dim) {
                float o[2] = {__uint_as_float((uint32_t)v[0] << 16), __uint_as_float((uint32_t)v[1] << 16)};
                if (pos) rope_rotate(o[0], o[1], cs);
                store_out(w, o);
            }
        }
    }
}

/* The bf16 KV cache: contiguous values through to_bf16_kernel, everything
 * else through kv_store_kernel (both rounding to nearest even like
 * lp_f32_to_bf16). Positions and row indices are host arrays, staged into
 * the ring in pieces of rows. */
lp_status lp_cuda_kv_store(const lp_backend *be, void *cache_rows, const int32_t *dst_idx, const float *src,
                           const void *saved, const int32_t *src_idx, int64_t rows, int heads, int head_dim,
                           const int32_t *pos) {
    if (rows < 0 || heads < 0 || head_dim < 0 || head_dim > 8192)
        return lp_fail(LP_ERR_ARG, "kv_store: invalid shape rows %lld, heads %d, head_dim %d", (long long)rows, heads,
                       head_dim);
    const int64_t n = rows * heads * (int64_t)head_dim;
    if (n == 0) return lp_cuda_pending(be, "kv_store");
    if (!cache_rows || (!src && !saved)) return lp_fail(LP_ERR_ARG, "kv_store: NULL cache rows or source");
    LP_TRY(check_indices(dst_idx, rows, "kv_store", "dst_idx"));
    for (int64_t i = 0; src_idx && i < rows; i++)
        if ((src_idx[i] < 0 && !saved) || (src_idx[i] >= 0 && !src))
            return lp_fail(LP_ERR_ARG, "kv_store: row %lld reads a source that was not given", (long long)i);
    uint16_t *dst = (uint16_t *)cache_rows;
    const int plain = !pos && !dst_idx && !src_idx;
    if (plain && (uintptr_t)dst < (uintptr_t)(src + n) && (uintptr_t)src < (uintptr_t)(dst + n))
        return lp_fail(LP_ERR_ARG, "kv_store: the cache rows overlap the source");
    if (!plain && (head_dim % 2 || !lp_cuda_aligned(dst, 4) || (saved && !lp_cuda_aligned(saved, 4))))
        return lp_fail(LP_ERR_ARG, "kv_store (cuda): rotated, scattered or gathered rows need an even head_dim (got "
                                   "%d) and 4-byte aligned rows", head_dim);
    LP_TRY(lp_cuda_pending(be, "kv_store"));
    lp_cuda_state *st = lp_cuda(be);
    if (plain) return lp_cuda_f32_to_bf16(be, dst, src, n);
    const int half = head_dim / 2;
    const int64_t chunk = stage_chunk(be, 5 * sizeof(int32_t)), ld = (int64_t)heads * head_dim;
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        const int64_t m = rows - r0 < chunk ? rows - r0 : chunk;
        int ok = 1;
        const int32_t *dpos = stage_i32(be, pos ? pos + r0 * 3 : NULL, m * 3, &ok);
        const int32_t *ddi = stage_i32(be, dst_idx ? dst_idx + r0 : NULL, m, &ok);
        const int32_t *dsi = stage_i32(be, src_idx ? src_idx + r0 : NULL, m, &ok);
        if (!ok) return st->sticky != LP_OK ? st->sticky : LP_ERR_NOMEM; /* sticky: the stage failed */
        /* without index arrays, piece r0 reads and writes rows from r0 on */
        kv_store_kernel<<<lp_cuda_grid(m * half, THREADS), THREADS, pos ? (size_t)half * sizeof(double) : 0,
                          st->stream>>>(ddi ? dst : dst + r0 * ld, ddi, dsi || !src ? src : src + r0 * ld,
                                        (const uint16_t *)saved, dsi, m, heads, head_dim, dpos);
        LP_TRY(lp_cuda_check_launch(be, "kv_store"));
    }
    return LP_OK;
}

/* ----------------------------------------------------------- data movement */

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
    LP_TRY(lp_cuda_pending(be, unpatch ? "unpatchify" : "patchify"));
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
