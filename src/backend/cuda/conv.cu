/* The CUDA backend's conv-net ops (backend.h: conv2d, relu, tanh_clamp,
 * clamp01), one frame [c, h, w] at a time.
 *
 * conv2d is an implicit GEMM on the bf16 tensor cores with fp32 accumulation.
 * With K = cin·k·k and the im2col matrix col[r][p] (r = (ci, ky, kx) in the
 * weight's order, p = an output pixel), out[co][p] = Σ_r W[co][r]·col[r][p].
 * For each band of output rows a gather kernel writes the band's col in bf16
 * into scratch (at most BAND_BYTES), reading the two concatenated inputs
 * through the nearest upsample and the zero padding, so that neither is ever
 * materialised; cuBLASLt then multiplies it with the cached bf16 weight
 * straight into the band's f32 output rows. cuBLASLt is column-major, and:
 *   col, stored [K][ldc] row-major     = column-major m×K, ld ldc   (A)
 *   W, stored [cout][K] row-major      = column-major K×cout, ld K  (B)
 *   out band, [cout][hw] row-major     = column-major m×cout, ld hw (D = C)
 * with m the band's pixels, so D = A·B is the convolution. K is padded to a
 * multiple of 8 (zero rows in col, zero columns in a padded copy of W) so that
 * every row of A and B starts on 16 bytes. The bias is written (or added, when
 * accumulating) by a small kernel first and the GEMM accumulates onto it
 * (beta = 1), the CPU's order. Convolutions with at most DIRECT_MAX_COUT
 * output channels (TAEHV's last conv) run as a direct fp32 kernel instead: a
 * GEMM with so few columns would only stream the 9× im2col.
 *
 * The elementwise ops are fp32 grid-stride kernels (float4 when aligned).
 * Errors: argument errors are returned, not sticky (as linear's); launch and
 * CUDA failures become the sticky error (lp_cuda_check). */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

#define THREADS 256
#define MAX_GRID 65535                    /* grid-stride loops cover the rest */
#define BAND_BYTES ((size_t)64 << 20)     /* im2col band target */
#define SCRATCH_ALIGN 256                 /* the padded weight's offset in the scratch */
#define PLANS 96                          /* cached GEMM plans, replaced round robin */
#define DIRECT_MAX_COUT 4
#define MAX_SIDE (1 << 20)                /* largest up·h and up·w */

/* One cached GEMM configuration D[m, n] = A[m, k]·B[k, n] (column-major,
 * leading dimensions lda, k and ldd), keyed by its shape and the alignment of
 * D's columns; g.op == NULL marks an empty slot. */
typedef struct {
    int64_t m, n, k, lda, ldd;
    uint32_t align_d;
    lp_cuda_gemm g;
} conv_plan;

struct lp_cuda_conv {
    void *scratch; /* im2col band, then the K-padded weight */
    size_t scratch_bytes;
    conv_plan plans[PLANS];
    int next_plan;
};

/* ------------------------------------------------------------------ helpers */

static int aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

static unsigned grid_1d(int64_t work) {
    int64_t b = (work + THREADS - 1) / THREADS;
    return (unsigned)(b < 1 ? 1 : b > MAX_GRID ? MAX_GRID : b);
}

/* LP_OK, or the sticky error of an earlier op: nothing is issued after a failure. */
static lp_status pending(const lp_backend *be, const char *op) {
    lp_status s = lp_cuda(be)->sticky;
    if (s == LP_OK) return LP_OK;
    return lp_fail(s, "%s: an earlier CUDA operation failed (%s)", op, lp_status_name(s));
}

/* The largest power of two <= 256 that divides every column start p + j·ld
 * (ld in elements of `size` bytes). */
static uint32_t column_alignment(const void *p, int64_t ld, size_t size) {
    uint32_t a = 256;
    while (a > 1 && ((uintptr_t)p % a || (uint64_t)ld * size % a)) a >>= 1;
    return a;
}

__device__ __forceinline__ uint32_t bf16_pair(float lo, float hi) {
    return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
           (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16;
}

/* --------------------------------------------------------------- kernels */

/* The geometry of one convolution. */
typedef struct {
    const float *a, *b; /* inputs [ca][h][w] and [cin − ca][h][w] */
    int ca, cin, h, w;
    int sh;             /* log2 of the upsample factor (0 or 1) */
    int k, stride, pad; /* pad = k / 2 */
    int ho, wo;
} conv_geom;

/* Channel ci of the concatenated input (stored size). */
__device__ __forceinline__ const float *channel(const conv_geom &g, int ci) {
    size_t plane = (size_t)g.h * g.w;
    return ci < g.ca ? g.a + (size_t)ci * plane : g.b + (size_t)(ci - g.ca) * plane;
}

/* col[r][p] for r < kp and p < ldc, p a pixel of output rows [y0, y0 + m/wo):
 * the input at (y·stride + ky − pad, x·stride + kx − pad) of the upsampled
 * concatenation for r = (ci·k + ky)·k + kx < K, zero outside it, for
 * p >= m and for r >= K. Each thread writes 8 consecutive pixels (16 bytes;
 * ldc % 8 == 0 and col is 16-byte aligned). */
__global__ void __launch_bounds__(THREADS) im2col_kernel(__nv_bfloat16 *col, conv_geom g, int K, int kp, int ldc,
                                                         int y0, int m) {
    const int groups = ldc / 8, hin = g.h << g.sh, win = g.w << g.sh;
    for (int r = blockIdx.y; r < kp; r += gridDim.y) {
        const float *chan = NULL;
        int dy = 0, dx = 0;
        if (r < K) {
            int kk = g.k * g.k, ci = r / kk, t = r - ci * kk;
            chan = channel(g, ci);
            dy = t / g.k - g.pad;
            dx = t - (t / g.k) * g.k - g.pad;
        }
        uint4 *dst = reinterpret_cast<uint4 *>(col + (size_t)r * ldc);
        for (int q = blockIdx.x * blockDim.x + threadIdx.x; q < groups; q += gridDim.x * blockDim.x) {
            float v[8];
            int p = q * 8, yy = p / g.wo, x = p - yy * g.wo;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                float val = 0.0f;
                if (chan && p + j < m) {
                    int iy = (y0 + yy) * g.stride + dy, ix = x * g.stride + dx;
                    if (iy >= 0 && iy < hin && ix >= 0 && ix < win)
                        val = chan[(size_t)(iy >> g.sh) * g.w + (ix >> g.sh)];
                }
                v[j] = val;
                if (++x == g.wo) {
                    x = 0;
                    yy++;
                }
            }
            dst[q] = make_uint4(bf16_pair(v[0], v[1]), bf16_pair(v[2], v[3]), bf16_pair(v[4], v[5]),
                                bf16_pair(v[6], v[7]));
        }
    }
}

/* dst[co][r] = r < K ? src[co][r] : 0 for co < cout, r < kp. */
__global__ void __launch_bounds__(THREADS) pad_weight_kernel(__nv_bfloat16 *dst, const __nv_bfloat16 *src, int cout,
                                                             int K, int kp) {
    const int64_t total = (int64_t)cout * kp, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int64_t co = i / kp, r = i - co * kp;
        dst[i] = r < K ? src[co * K + r] : __float2bfloat16_rn(0.0f);
    }
}

/* out[co][i] = (accumulate ? out[co][i] : 0) + bias[co] for co < cout, i < hw. */
__global__ void __launch_bounds__(THREADS) bias_kernel(float *out, const float *bias, int cout, int64_t hw,
                                                       int accumulate) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int co = blockIdx.y; co < cout; co += gridDim.y) {
        float b = bias[co], *o = out + (size_t)co * hw;
        for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < hw; i += stride)
            o[i] = accumulate ? __fadd_rn(o[i], b) : b;
    }
}

/* The whole convolution in fp32 for cout <= DIRECT_MAX_COUT, one thread per
 * output pixel: out[co][p] = (accumulate ? out[co][p] : 0) + (Σ w·x + bias[co]),
 * w the f32 weight [cout][cin][k][k]. */
__global__ void __launch_bounds__(THREADS) direct_kernel(float *out, conv_geom g, const float *w, const float *bias,
                                                         int cout, int accumulate) {
    const int64_t hw = (int64_t)g.ho * g.wo, stride = (int64_t)gridDim.x * blockDim.x;
    const int hin = g.h << g.sh, win = g.w << g.sh, kk = g.k * g.k;
    const size_t wco = (size_t)g.cin * kk; /* weight stride between output channels */
    for (int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < hw; p += stride) {
        int y = (int)(p / g.wo), x = (int)(p - (int64_t)y * g.wo);
        float acc[DIRECT_MAX_COUT] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int ci = 0; ci < g.cin; ci++) {
            const float *chan = channel(g, ci), *wc = w + (size_t)ci * kk;
            for (int ky = 0; ky < g.k; ky++) {
                int iy = y * g.stride + ky - g.pad;
                if (iy < 0 || iy >= hin) continue;
                const float *row = chan + (size_t)(iy >> g.sh) * g.w;
                for (int kx = 0; kx < g.k; kx++) {
                    int ix = x * g.stride + kx - g.pad;
                    if (ix < 0 || ix >= win) continue;
                    float v = row[ix >> g.sh];
                    int t = ky * g.k + kx;
#pragma unroll
                    for (int co = 0; co < DIRECT_MAX_COUT; co++)
                        if (co < cout) acc[co] = fmaf(wc[co * wco + t], v, acc[co]);
                }
            }
        }
#pragma unroll
        for (int co = 0; co < DIRECT_MAX_COUT; co++) {
            if (co >= cout) break;
            float *o = out + (size_t)co * hw + p, s = bias ? __fadd_rn(acc[co], bias[co]) : acc[co];
            *o = accumulate ? __fadd_rn(*o, s) : s;
        }
    }
}

enum { EW_RELU, EW_TANH_CLAMP, EW_CLAMP01 };

/* The CPU's formulas (src/backend/cpu/conv2d.c), NaN handling included. */
template <int OP> __device__ __forceinline__ float ew(float v) {
    if (OP == EW_RELU) return v > 0.0f ? v : 0.0f;
    if (OP == EW_TANH_CLAMP) return __fmul_rn(tanhf(__fdiv_rn(v, 3.0f)), 3.0f);
    return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
}

/* y[i] = ew(x[i]) for i < n; y may equal x (each element is read before the
 * same thread writes it). V = 4: float4 groups, then the n % 4 tail. */
template <int OP, int V> __global__ void __launch_bounds__(THREADS) ew_kernel(float *y, const float *x, int64_t n) {
    const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t groups = n / V;
    for (int64_t g = gid; g < groups; g += stride) {
        if (V == 4) {
            float4 v = reinterpret_cast<const float4 *>(x)[g];
            v.x = ew<OP>(v.x);
            v.y = ew<OP>(v.y);
            v.z = ew<OP>(v.z);
            v.w = ew<OP>(v.w);
            reinterpret_cast<float4 *>(y)[g] = v;
        } else {
            y[g] = ew<OP>(x[g]);
        }
    }
    int64_t i = groups * V + gid;
    if (i < n) y[i] = ew<OP>(x[i]);
}

template <int OP> static void launch_ew(const lp_backend *be, float *y, const float *x, int64_t n, const char *what) {
    if (n <= 0) return;
    cudaStream_t s = lp_cuda(be)->stream;
    if (aligned16(y) && aligned16(x)) ew_kernel<OP, 4><<<grid_1d(n / 4 + 1), THREADS, 0, s>>>(y, x, n);
    else ew_kernel<OP, 1><<<grid_1d(n), THREADS, 0, s>>>(y, x, n);
    lp_cuda_check_launch(be, what);
}

void lp_cuda_relu(const lp_backend *be, float *x, int64_t n) { launch_ew<EW_RELU>(be, x, x, n, "relu"); }

void lp_cuda_tanh_clamp(const lp_backend *be, float *y, const float *x, int64_t n) {
    launch_ew<EW_TANH_CLAMP>(be, y, x, n, "tanh_clamp");
}

void lp_cuda_clamp01(const lp_backend *be, float *y, const float *x, int64_t n) {
    launch_ew<EW_CLAMP01>(be, y, x, n, "clamp01");
}

/* --------------------------------------------------------- GEMM plans */

static void plan_clear(conv_plan *p) {
    lp_cuda_gemm_clear(&p->g);
    memset(p, 0, sizeof *p);
}

/* Builds the descriptors of D = A·B (see the top of the file) and picks an
 * algorithm; A and B start on 256 bytes (cudaMalloc'd scratch and weights). */
static lp_status plan_build(const lp_backend *be, conv_plan *p) {
    char who[96];
    snprintf(who, sizeof who, "conv2d m=%lld n=%lld k=%lld", (long long)p->m, (long long)p->n, (long long)p->k);
    lp_cuda_gemm *g = &p->g;
    lp_status s = lp_cuda_gemm_create_op(g, 0, who);
    if (s == LP_OK)
        s = lp_cuda_lt_check(cublasLtMatrixLayoutCreate(&g->a, CUDA_R_16BF, (uint64_t)p->m, (uint64_t)p->k, p->lda),
                             who, "layout of the im2col band");
    if (s == LP_OK)
        s = lp_cuda_lt_check(cublasLtMatrixLayoutCreate(&g->b, CUDA_R_16BF, (uint64_t)p->k, (uint64_t)p->n, p->k),
                             who, "layout of the weight");
    if (s == LP_OK)
        s = lp_cuda_lt_check(cublasLtMatrixLayoutCreate(&g->d, CUDA_R_32F, (uint64_t)p->m, (uint64_t)p->n, p->ldd),
                             who, "layout of the output");
    if (s == LP_OK) s = lp_cuda_gemm_choose_algo(be, g, p->align_d, who);
    if (s != LP_OK) plan_clear(p);
    return s;
}

/* *out = the cached plan for key (only its shape fields and align_d are
 * read), built on first use. */
static lp_status plan_get(const lp_backend *be, lp_cuda_conv *c, const conv_plan *key, conv_plan **out) {
    for (int i = 0; i < PLANS; i++) {
        conv_plan *p = &c->plans[i];
        if (p->g.op && p->m == key->m && p->n == key->n && p->k == key->k && p->lda == key->lda &&
            p->ldd == key->ldd && p->align_d == key->align_d) {
            *out = p;
            return LP_OK;
        }
    }
    conv_plan *p = &c->plans[c->next_plan];
    c->next_plan = (c->next_plan + 1) % PLANS;
    plan_clear(p);
    p->m = key->m;
    p->n = key->n;
    p->k = key->k;
    p->lda = key->lda;
    p->ldd = key->ldd;
    p->align_d = key->align_d;
    *out = p;
    return plan_build(be, p);
}

/* ------------------------------------------------------------ conv2d */

/* The conv state (created on first use) with at least need bytes of scratch. */
static lp_status reserve(const lp_backend *be, size_t need, lp_cuda_conv **out) {
    lp_cuda_state *st = lp_cuda(be);
    if (!st->conv && !(st->conv = (lp_cuda_conv *)calloc(1, sizeof *st->conv)))
        return lp_fail(LP_ERR_NOMEM, "conv2d: out of memory for the CUDA conv state");
    lp_cuda_conv *c = st->conv;
    *out = c;
    if (c->scratch_bytes >= need) return LP_OK;
    /* ops in flight may still read the old scratch */
    LP_TRY(lp_cuda_check(be, cudaStreamSynchronize(st->stream), "cudaStreamSynchronize (conv2d scratch)"));
    cudaFree(c->scratch);
    c->scratch = NULL;
    c->scratch_bytes = 0;
    size_t want = (need + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1); /* whole MiB */
    cudaError_t e = cudaMalloc(&c->scratch, want);
    if (e != cudaSuccess) {
        cudaGetLastError();
        c->scratch = NULL;
        return lp_fail(e == cudaErrorMemoryAllocation ? LP_ERR_NOMEM : LP_ERR_IO,
                       "conv2d: cannot allocate %zu bytes of device memory for the im2col scratch: %s", want,
                       cudaGetErrorString(e));
    }
    c->scratch_bytes = want;
    return LP_OK;
}

/* The bf16 GEMM path (cout > DIRECT_MAX_COUT); wd: the cached bf16 weight [cout][K]. */
static lp_status conv_gemm(const lp_backend *be, float *out, const conv_geom &g, const __nv_bfloat16 *wd, int cout,
                           const float *bias, int accumulate) {
    lp_cuda_state *st = lp_cuda(be);
    const int64_t K = (int64_t)g.cin * g.k * g.k, kp = (K + 7) / 8 * 8, hw = (int64_t)g.ho * g.wo;
    /* bands of equal height whose im2col fits BAND_BYTES (one output row at least) */
    int64_t rows_max = (int64_t)(BAND_BYTES / ((size_t)kp * 2 * (size_t)g.wo));
    if (rows_max < 1) rows_max = 1;
    if (rows_max > g.ho) rows_max = g.ho;
    int64_t bands = (g.ho + rows_max - 1) / rows_max, rows = (g.ho + bands - 1) / bands;
    int64_t ldc = (rows * g.wo + 7) / 8 * 8;
    if (ldc > INT32_MAX / 2 || kp > INT32_MAX / 2)
        return lp_fail(LP_ERR_ARG, "conv2d: an im2col band of %lld x %lld is too large", (long long)kp,
                       (long long)ldc);
    size_t col_bytes = (size_t)(kp * ldc) * 2;
    size_t wpad_off = (col_bytes + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN;
    size_t need = wpad_off + (kp != K ? (size_t)cout * (size_t)kp * 2 : 0);
    lp_cuda_conv *c = NULL;
    LP_TRY(reserve(be, need, &c));
    __nv_bfloat16 *col = (__nv_bfloat16 *)c->scratch;
    const __nv_bfloat16 *wb = wd;
    if (kp != K) {
        __nv_bfloat16 *wp = (__nv_bfloat16 *)((char *)c->scratch + wpad_off);
        pad_weight_kernel<<<grid_1d((int64_t)cout * kp), THREADS, 0, st->stream>>>(wp, wd, cout, (int)K, (int)kp);
        LP_TRY(lp_cuda_check_launch(be, "conv2d weight padding"));
        wb = wp;
    }
    if (bias) {
        dim3 grid(grid_1d(hw), (unsigned)(cout < MAX_GRID ? cout : MAX_GRID));
        bias_kernel<<<grid, THREADS, 0, st->stream>>>(out, bias, cout, hw, accumulate);
        LP_TRY(lp_cuda_check_launch(be, "conv2d bias"));
    }
    const float beta = bias || accumulate ? 1.0f : 0.0f;
    for (int64_t y0 = 0; y0 < g.ho; y0 += rows) {
        int64_t m = (g.ho - y0 < rows ? g.ho - y0 : rows) * g.wo, groups = (m + 7) / 8;
        dim3 grid(grid_1d(groups), (unsigned)(kp < MAX_GRID ? kp : MAX_GRID));
        im2col_kernel<<<grid, THREADS, 0, st->stream>>>(col, g, (int)K, (int)kp, (int)ldc, (int)y0, (int)m);
        LP_TRY(lp_cuda_check_launch(be, "conv2d im2col"));
        float *d = out + y0 * g.wo;
        conv_plan key;
        key.m = m;
        key.n = cout;
        key.k = kp;
        key.lda = ldc;
        key.ldd = hw;
        key.align_d = column_alignment(d, hw, sizeof *d);
        conv_plan *p;
        LP_TRY(plan_get(be, c, &key, &p));
        LP_TRY(lp_cuda_gemm_run(be, &p->g, col, wb, beta, d, "conv2d"));
    }
    return LP_OK;
}

lp_status lp_cuda_conv2d(const lp_backend *be, float *out, const lp_conv2d_input *in, const lp_tensor *w,
                         const lp_tensor *b, int stride, int accumulate) {
    const char *name = w->name ? w->name : "?";
    if (w->dtype != LP_F32 || (b && b->dtype != LP_F32))
        return lp_fail(LP_ERR_UNSUPPORTED, "conv2d: weight '%s' and its bias must be f32", name);
    int64_t k = w->ndim == 4 ? w->shape[2] : 0;
    if (w->ndim != 4 || (k != 1 && k != 3) || w->shape[3] != k || w->shape[0] < 1 || w->shape[0] > INT32_MAX ||
        w->shape[1] != (int64_t)in->ca + in->cb)
        return lp_fail(LP_ERR_SHAPE, "conv2d: weight '%s' must be [cout, %d, k, k] with k 1 or 3", name,
                       in->ca + in->cb);
    if (b && lp_tensor_numel(b) != w->shape[0])
        return lp_fail(LP_ERR_SHAPE, "conv2d: bias '%s' does not have the %lld elements of weight '%s'",
                       b->name ? b->name : "?", (long long)w->shape[0], name);
    if ((stride != 1 && stride != 2) || (in->up != 1 && in->up != 2) || in->h < 1 || in->w < 1 || in->ca < 1 ||
        in->cb < 0 || (in->cb > 0 && !in->b) || !in->a || !out || (int64_t)in->h * in->up > MAX_SIDE ||
        (int64_t)in->w * in->up > MAX_SIDE)
        return lp_fail(LP_ERR_ARG, "conv2d '%s': unsupported input (%d + %d channels, %dx%d, up %d, stride %d)", name,
                       in->ca, in->cb, in->w, in->h, in->up, stride);
    LP_TRY(pending(be, "conv2d"));
    lp_cuda_state *st = lp_cuda(be);
    int cout = (int)w->shape[0];
    conv_geom g;
    g.a = in->a;
    g.b = in->b;
    g.ca = in->ca;
    g.cin = in->ca + in->cb;
    g.h = in->h;
    g.w = in->w;
    g.sh = in->up == 2 ? 1 : 0;
    g.k = (int)k;
    g.stride = stride;
    g.pad = (int)k / 2;
    g.ho = (in->h * in->up + 2 * g.pad - g.k) / stride + 1;
    g.wo = (in->w * in->up + 2 * g.pad - g.k) / stride + 1;
    const float *bias = NULL; /* f32 [cout] */
    if (b && !(bias = (const float *)lp_cuda_weight(be, b, 0))) return st->sticky;
    if (cout > DIRECT_MAX_COUT) {
        const __nv_bfloat16 *wd = (const __nv_bfloat16 *)lp_cuda_weight(be, w, 1); /* bf16 [cout][K] */
        if (!wd) return st->sticky;
        return conv_gemm(be, out, g, wd, cout, bias, accumulate);
    }
    const float *wf = (const float *)lp_cuda_weight(be, w, 0); /* f32 [cout][cin][k][k] */
    if (!wf) return st->sticky;
    direct_kernel<<<grid_1d((int64_t)g.ho * g.wo), THREADS, 0, st->stream>>>(out, g, wf, bias, cout, accumulate);
    return lp_cuda_check_launch(be, "conv2d (direct)");
}

void lp_cuda_conv_free(lp_cuda_state *st) {
    lp_cuda_conv *c = st->conv;
    if (!c) return;
    for (int i = 0; i < PLANS; i++) plan_clear(&c->plans[i]);
    cudaFree(c->scratch);
    free(c);
    st->conv = NULL;
}
