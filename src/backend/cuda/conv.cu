/* The CUDA backend's conv-net ops (backend.h: conv2d, conv3d, relu,
 * tanh_clamp, clamp01), one frame [c, h, w] at a time.
 *
 * conv3d (the Wan VAE's) runs as conv2d does, one output frame at a time:
 * its kt input frames are the concatenated inputs and its time taps become
 * input channels (see conv_geom), the weight rearranged accordingly.
 *
 * conv2d is a fused implicit GEMM on the bf16 tensor cores (mma.sync
 * m16n8k16, fp32 accumulation): out[co][p] = Σ_r W'[co][r]·col[r][p] over
 * output pixels p and K = cin·k² reduction indices r, each an input channel
 * ci and a kernel tap (ky, kx), tap = ky·k + kx. The im2col matrix col is
 * never stored: each CTA gathers the tile it needs straight from the f32
 * [c, h, w] inputs, through the concatenation, the nearest upsample and the
 * zero padding, into shared memory as bf16, and reuses it across its BM
 * output channels. The order of r depends on the channel counts:
 *   grouped (ca and cb multiples of 16, every TAEHV conv but the first):
 *     r = (cc·k² + tap)·16 + c with ci = cc·16 + c, so each group of 16
 *     consecutive r is 16 channels of one input at one tap: a thread
 *     gathering it computes one input position and loads 16 channel planes
 *     there (coalesced: a warp covers 32 consecutive output pixels), and the
 *     taps of the same 16 channels follow each other, so the 9 reads of an
 *     input value come close together (L1 hits);
 *   dense (any other counts, such as TAEHV's 3-channel input):
 *     r = tap·cin + ci, decoded element by element.
 * W' is the weight rearranged to that order once and cached (bf16
 * [round_up(cout, BM_MAX)][kp], kp = K rounded up to BK, zero padded); the
 * padding r >= K is gathered as zeros too.
 *
 * Each CTA computes a BM×BN tile (BM output channels, BN consecutive output
 * pixels in row-major order, so rows of any width are fine) with 8 warps in a
 * 2×4 grid (warp tile BM/2 × 32). The reduction advances BK = 32 at a time
 * (two groups of 16), double-buffered in shared memory: the weight tile comes
 * by cp.async, the gathered tile through registers, both for step s+1 while
 * the tensor cores work on step s. The epilogue adds the bias (and the old
 * output when accumulating), applies the ReLU when asked and writes f32.
 *
 * Convolutions with at most 4 output channels (TAEHV's last conv, 64 -> 3),
 * 3×3, stride 1, one input without upsampling, are direct fp32 instead: a
 * tile of BM channels would be mostly padding and its gather re-reads each
 * input value 9·(tiles) times (0.24 ms a frame at 832x480). The direct
 * kernel stages CC input channels of a 130×10 window in shared memory at a
 * time and keeps all the output channels of 4 pixels per thread in
 * registers (pixels 32 apart: the lanes of a warp read consecutive words).
 *
 * The elementwise ops are fp32 grid-stride kernels (float4 when aligned).
 * Errors: argument errors are returned, not sticky (as linear's); launch and
 * CUDA failures become the sticky error (lp_cuda_check). */
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

#define THREADS 256
#define MAX_SIDE (1 << 20)  /* largest up·h and up·w */

/* The implicit GEMM's tiling (see the top of the file). */
#define CONV_THREADS 256    /* 8 warps */
#define BN 128              /* output pixels per CTA */
#define BK 32               /* reduction per pipeline step: two groups */
#define GROUP 16            /* channels of one tap gathered by one thread */
#define BM_MAX 128          /* the largest BM: cached weights are padded to it */

/* A weight rearranged for the implicit GEMM, keyed by the host view's data
 * pointer, its shape and the reduction order (the views stay valid and
 * unchanged while the backend lives, backend.h). */
typedef struct {
    const void *host;
    int64_t cout, cin, kt, k;
    int64_t cin_pad;    /* the input channels per frame the kernel sees (cin, or cin padded with zero channels) */
    int grouped;        /* the reduction order (see the top of the file) */
    __nv_bfloat16 *dev; /* [round_up(cout, BM_MAX)][kp] */
} conv_weight;

struct lp_cuda_conv {
    conv_weight *w;
    int n, cap;
    float *padded;      /* inputs with their channels padded to a multiple of GROUP */
    size_t padded_bytes;
};

/* The geometry of one convolution over the concatenation of up to three
 * inputs (conv2d's two, or the kt frames of a conv3d, whose time taps then
 * become input channels: Σ_dt Σ_ci W[co][ci][dt]·frame_dt[ci] is a 2-D
 * convolution over channels (dt, ci)). */
typedef struct {
    const float *a, *b, *c; /* inputs [ca][h][w], [cab − ca][h][w] and [cin − cab][h][w] */
    int ca, cab, cin, h, w;
    int sh;             /* log2 of the upsample factor (0 or 1) */
    int k, stride, pad; /* pad: k / 2 for conv2d, the geometry's for conv3d */
    int ho, wo;
} conv_geom;

/* Channel ci of the concatenated input (stored size). */
__device__ __forceinline__ const float *channel(const conv_geom &g, int ci) {
    size_t plane = (size_t)g.h * g.w;
    return ci < g.ca ? g.a + (size_t)ci * plane
                     : ci < g.cab ? g.b + (size_t)(ci - g.ca) * plane : g.c + (size_t)(ci - g.cab) * plane;
}

/* ---------------------------------------------------- tensor-core helpers */

__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* 16 bytes global → shared, asynchronous (cached in L2 only). */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

/* Four 8×8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i,
 * which lands in r[i] (thread l holds row l/4, columns 2(l%4), 2(l%4)+1). */
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *smem) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(smem))
                 : "memory");
}

/* d += A·B for a 16×16 bf16 A (row-major fragment a), a 16×8 bf16 B
 * (column-major fragment b0, b1) and a 16×8 f32 d. */
__device__ __forceinline__ void mma_bf16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t bf16_pair(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x (lo) in the low half */
    return *reinterpret_cast<uint32_t *>(&v);
}

/* Shared-memory tiles are rows of BK bf16 (64 bytes = four 16-byte chunks):
 * the weight tile [BM][BK] (a row per output channel) and the gathered tile
 * [BN][BK] (a row per output pixel), both with r contiguous. Chunk c of row
 * `row` is stored at chunk c ^ ((row / 2) % 4): the 8 rows an ldmatrix
 * matrix (or a quarter warp's 16-byte store) touches then fall in 8 distinct
 * groups of 4 banks. Returns the element offset of the chunk. */
__device__ __forceinline__ int swizzle(int row, int chunk) { return row * BK + ((chunk ^ ((row >> 1) & 3)) << 3); }

/* --------------------------------------------------------------- kernels */

/* dst[co][r] = the bf16 weight src[co][cs][dt][tap] (src [cout][cin_src][kt][kk])
 * for the (ci, tap) of reduction index r in the grouped order (grouped != 0)
 * or the dense one (see the top of the file), over cin = kt·cin_frame input
 * channels, channel ci being channel cs = ci % cin_frame of time tap
 * dt = ci / cin_frame (cin_frame >= cin_src: the channels past cin_src are
 * zero padding); zero for co >= cout and r >= K = cin·kk, up to rows × kp. */
__global__ void __launch_bounds__(THREADS) rearrange_weight_kernel(__nv_bfloat16 *dst, const __nv_bfloat16 *src,
                                                                   int cout, int rows, int cin, int cin_frame,
                                                                   int cin_src, int kt, int kk, int kp, int grouped) {
    const int64_t total = (int64_t)rows * kp, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int co = (int)(i / kp), r = (int)(i - (int64_t)co * kp), ci, tap;
        if (grouped) {
            int grp = r / GROUP, cc = grp / kk;
            tap = grp - cc * kk;
            ci = cc * GROUP + r % GROUP;
        } else {
            tap = r / cin;
            ci = r - tap * cin;
        }
        const int dt = ci / cin_frame, cs = ci - dt * cin_frame;
        dst[i] = co < cout && r < cin * kk && cs < cin_src
                     ? src[(((int64_t)co * cin_src + cs) * kt + dt) * kk + tap]
                     : __float2bfloat16_rn(0.0f);
    }
}

/* v[c] = col[r0 + c][pixel] for c < 16: the upsampled, zero-padded
 * concatenated input at channel ci and position (by + ky, bx + kx) for the
 * (ci, ky, kx) of r (upsampled coordinates; by, bx: the pixel's top-left
 * tap), zero when the pixel is outside the image (!pix_ok), for r >= K and
 * where the position is padding. GROUPED: the grouped order (r0 a multiple
 * of 16), else the dense one. */
template <int KS, bool GROUPED>
__device__ __forceinline__ void gather_group(float v[GROUP], const conv_geom &g, int r0, int K, bool pix_ok, int by,
                                             int bx) {
    const int hin = g.h << g.sh, win = g.w << g.sh;
#pragma unroll
    for (int c = 0; c < GROUP; c++) v[c] = 0.0f;
    if (!pix_ok || r0 >= K) return;
    if (GROUPED) { /* one tap, 16 channels of one input: one position, 16 planes */
        const int grp = r0 / GROUP, cc = grp / (KS * KS), tap = grp - cc * (KS * KS);
        const int iy = by + tap / KS, ix = bx + tap % KS;
        if ((unsigned)iy >= (unsigned)hin || (unsigned)ix >= (unsigned)win) return;
        const size_t plane = (size_t)g.h * g.w;
        const float *src = channel(g, cc * GROUP) + (iy >> g.sh) * g.w + (ix >> g.sh);
#pragma unroll
        for (int c = 0; c < GROUP; c++) v[c] = __ldg(src + (size_t)c * plane);
    } else { /* r = tap·cin + ci, walked from r0 */
        int tap = r0 / g.cin, ci = r0 - tap * g.cin;
#pragma unroll
        for (int c = 0; c < GROUP; c++) {
            const int iy = by + tap / KS, ix = bx + tap % KS;
            if (r0 + c < K && (unsigned)iy < (unsigned)hin && (unsigned)ix < (unsigned)win)
                v[c] = __ldg(channel(g, ci) + (iy >> g.sh) * g.w + (ix >> g.sh));
            if (++ci == g.cin) {
                ci = 0;
                tap++;
            }
        }
    }
}

/* The 16 gathered values of one pixel (row) into chunks 2·half and
 * 2·half + 1 of the gathered tile. */
__device__ __forceinline__ void store_group(__nv_bfloat16 *sb, int row, int half, const float v[GROUP]) {
    uint4 lo = make_uint4(bf16_pair(v[0], v[1]), bf16_pair(v[2], v[3]), bf16_pair(v[4], v[5]), bf16_pair(v[6], v[7]));
    uint4 hi = make_uint4(bf16_pair(v[8], v[9]), bf16_pair(v[10], v[11]), bf16_pair(v[12], v[13]),
                          bf16_pair(v[14], v[15]));
    *reinterpret_cast<uint4 *>(sb + swizzle(row, 2 * half)) = lo;
    *reinterpret_cast<uint4 *>(sb + swizzle(row, 2 * half + 1)) = hi;
}

/* Issues the cp.async copies of the weight tile of step s: rows co0..co0+BM
 * of wr (row length kp), columns s·BK..s·BK+BK. */
template <int BM>
__device__ __forceinline__ void load_weight_tile(__nv_bfloat16 *sa, const __nv_bfloat16 *wr, int co0, size_t kp, int s,
                                                 int tid) {
#pragma unroll
    for (int i = tid; i < BM * (BK / 8); i += CONV_THREADS) {
        int row = i / (BK / 8), chunk = i % (BK / 8);
        cp_async16(sa + swizzle(row, chunk), wr + (size_t)(co0 + row) * kp + (size_t)s * BK + chunk * 8);
    }
}

/* acc += the warp's BM/2 × 32 part of (weight tile)·(gathered tile)ᵀ over
 * one step. The warp's rows are wm·BM/2.., its pixels wn·32..; acc[mi][ni]
 * is the 16×8 block at rows mi·16, pixels ni·8 of that. */
template <int BM>
__device__ __forceinline__ void mma_step(float acc[BM / 32][4][4], const __nv_bfloat16 *sa, const __nv_bfloat16 *sb,
                                         int wm, int wn, int lane) {
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++) {
        /* B fragments of the four 8-pixel blocks: one ldmatrix.x4 covers 16
         * pixels × 16 r as (pixels 0-7, r 0-7), (0-7, 8-15), (8-15, 0-7),
         * (8-15, 8-15); a row of the tile holds one pixel's r, which is the
         * column-major B fragment that mma expects. */
        uint32_t b[4][2];
#pragma unroll
        for (int nj = 0; nj < 2; nj++) {
            int row = wn * 32 + nj * 16 + (lane & 7) + ((lane >> 4) << 3), chunk = kk * 2 + ((lane >> 3) & 1);
            uint32_t r[4];
            ldmatrix_x4(r, sb + swizzle(row, chunk));
            b[2 * nj][0] = r[0];
            b[2 * nj][1] = r[1];
            b[2 * nj + 1][0] = r[2];
            b[2 * nj + 1][1] = r[3];
        }
#pragma unroll
        for (int mi = 0; mi < BM / 32; mi++) {
            /* A fragment of 16 channels × 16 r: matrices (rows 0-7, r 0-7),
             * (8-15, 0-7), (0-7, 8-15), (8-15, 8-15) */
            int row = wm * (BM / 2) + mi * 16 + (lane & 15), chunk = kk * 2 + (lane >> 4);
            uint32_t a[4];
            ldmatrix_x4(a, sa + swizzle(row, chunk));
#pragma unroll
            for (int ni = 0; ni < 4; ni++) mma_bf16(acc[mi][ni], a, b[ni][0], b[ni][1]);
        }
    }
}

/* The implicit-GEMM convolution (see the top of the file): CTA blockIdx.x
 * computes output channels (blockIdx.x % mtiles)·BM.. and output pixels
 * (blockIdx.x / mtiles)·BN.. (the channel tiles of a pixel tile run next to
 * each other and share its input in L2). wr: the rearranged weight, steps·BK
 * wide, in the grouped order when GROUPED, else the dense one; K = cin·k².
 * out[co][p] = act((accumulate ? out[co][p] : 0) + (Σ + bias[co])), act the ReLU
 * when relu (the CPU's: v > 0 ? v : 0) else the identity. */
/* conv2d's output activation: the ReLU (as the CPU's relu) or the identity. */
__device__ __forceinline__ float act(float v, int relu) { return relu ? (v > 0.0f ? v : 0.0f) : v; }

template <int BM, int KS, bool GROUPED>
__global__ void __launch_bounds__(CONV_THREADS, 2)
    conv_mma_kernel(float *out, conv_geom g, const __nv_bfloat16 *__restrict__ wr, const float *__restrict__ bias,
                    int cout, int mtiles, int steps, int K, int accumulate, int relu) {
    __shared__ __align__(128) __nv_bfloat16 sa[2][BM * BK];
    __shared__ __align__(128) __nv_bfloat16 sb[2][BN * BK];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wm = warp & 1, wn = warp >> 1;
    const int co0 = (int)(blockIdx.x % mtiles) * BM, p0 = (int)(blockIdx.x / mtiles) * BN;
    const int hw = g.ho * g.wo;
    const size_t kp = (size_t)steps * BK;

    /* This thread gathers pixel p0 + gp, the half `half` of each step
     * (r = s·BK + half·16 ..), into row gp of the gathered tile. */
    const int gp = tid % BN, half = tid / BN, p = p0 + gp;
    const bool pix_ok = p < hw;
    const int oy = pix_ok ? p / g.wo : 0, ox = pix_ok ? p - oy * g.wo : 0;
    const int by = oy * g.stride - g.pad, bx = ox * g.stride - g.pad;

    float acc[BM / 32][4][4];
#pragma unroll
    for (int mi = 0; mi < BM / 32; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[mi][ni][j] = 0.0f;

    float v[GROUP];
    load_weight_tile<BM>(sa[0], wr, co0, kp, 0, tid);
    cp_async_commit();
    gather_group<KS, GROUPED>(v, g, half * GROUP, K, pix_ok, by, bx);
    store_group(sb[0], gp, half, v);
    cp_async_wait_all();
    __syncthreads();
    for (int s = 0; s < steps; s++) {
        const int cur = s & 1;
        const bool more = s + 1 < steps;
        /* Buffer cur ^ 1 was last read in step s − 1, which every warp has
         * finished (the barrier below): fill it for step s + 1, the global
         * loads in flight while the tensor cores work on step s. */
        if (more) {
            load_weight_tile<BM>(sa[cur ^ 1], wr, co0, kp, s + 1, tid);
            cp_async_commit();
            gather_group<KS, GROUPED>(v, g, (s + 1) * BK + half * GROUP, K, pix_ok, by, bx);
        }
        mma_step<BM>(acc, sa[cur], sb[cur], wm, wn, lane);
        if (more) {
            store_group(sb[cur ^ 1], gp, half, v);
            cp_async_wait_all();
        }
        __syncthreads();
    }

    /* acc[mi][ni][2h + j] is channel co0 + wm·BM/2 + mi·16 + lane/4 + 8h,
     * pixel p0 + wn·32 + ni·8 + 2(lane % 4) + j. A pair of pixels is one
     * 8-byte access when every row of out starts on 8 bytes (p is even). */
    const bool pairs = (hw & 1) == 0 && ((uintptr_t)out & 7) == 0;
#pragma unroll
    for (int mi = 0; mi < BM / 32; mi++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int co = co0 + wm * (BM / 2) + mi * 16 + (lane >> 2) + 8 * h;
            if (co >= cout) continue;
            const float bv = bias ? bias[co] : 0.0f;
            float *row = out + (size_t)co * hw;
#pragma unroll
            for (int ni = 0; ni < 4; ni++) {
                const int pc = p0 + wn * 32 + ni * 8 + 2 * (lane & 3);
                if (pc >= hw) continue;
                float v0 = acc[mi][ni][2 * h] + bv, v1 = acc[mi][ni][2 * h + 1] + bv;
                if (pairs) {
                    float2 *o = reinterpret_cast<float2 *>(row + pc);
                    if (accumulate) {
                        float2 old = *o;
                        v0 = old.x + v0;
                        v1 = old.y + v1;
                    }
                    *o = make_float2(act(v0, relu), act(v1, relu));
                } else {
                    row[pc] = act(accumulate ? row[pc] + v0 : v0, relu);
                    if (pc + 1 < hw) row[pc + 1] = act(accumulate ? row[pc + 1] + v1 : v1, relu);
                }
            }
        }
}

/* ------------------------------------------------ direct small-cout conv */

#define DC_TX 32                  /* threads along a row */
#define DC_TY 8                   /* rows of a tile */
#define DC_PX 4                   /* pixels per thread, DC_TX apart */
#define DC_TW (DC_TX * DC_PX)     /* tile width: 128 output pixels */
#define DC_CC 4                   /* input channels staged at a time */
#define DC_MAX_COUT 4
#define DC_MAX_WEIGHTS 6912       /* floats of weight in shared memory: with the tile, under 48 KiB */

/* out[o][y][x] = act((accumulate ? out : 0) + Σ_c,ky,kx in[c][y+ky−1][x+kx−1]·w[o][c][ky][kx] + bias[o])
 * for a 3×3, stride 1, zero padding 1 convolution of in [C, H, W]. */
template <int COUT>
__global__ void __launch_bounds__(DC_TX *DC_TY)
    conv3x3_small_kernel(float *out, const float *__restrict__ in, int C, int H, int W,
                         const float *__restrict__ w, const float *__restrict__ bias, int accumulate, int relu) {
    extern __shared__ float dc_smem[];
    float *sw = dc_smem;                     /* [COUT][C][9] */
    float *st = dc_smem + COUT * C * 9;      /* [DC_CC][DC_TY + 2][DC_TW + 2] */
    const int tid = threadIdx.x, tx = tid % DC_TX, ty = tid / DC_TX;
    const int x0 = blockIdx.x * DC_TW, y0 = blockIdx.y * DC_TY;
    const int SW = DC_TW + 2, SH = DC_TY + 2, tile = SW * SH;
    for (int i = tid; i < COUT * C * 9; i += DC_TX * DC_TY) sw[i] = w[i];
    float acc[DC_PX][COUT];
#pragma unroll
    for (int j = 0; j < DC_PX; j++)
#pragma unroll
        for (int o = 0; o < COUT; o++) acc[j][o] = 0.0f;
    const size_t plane = (size_t)H * W;
    for (int c0 = 0; c0 < C; c0 += DC_CC) {
        __syncthreads(); /* the previous channels are consumed (and the weights are in) */
        for (int i = tid; i < DC_CC * tile; i += DC_TX * DC_TY) {
            int c = i / tile, r = i - c * tile, gy = y0 - 1 + r / SW, gx = x0 - 1 + r % SW;
            float v = 0.0f;
            if (c0 + c < C && gy >= 0 && gy < H && gx >= 0 && gx < W)
                v = in[(size_t)(c0 + c) * plane + (size_t)gy * W + gx];
            st[i] = v;
        }
        __syncthreads();
        const int cn = C - c0 < DC_CC ? C - c0 : DC_CC;
        for (int c = 0; c < cn; c++) {
            const float *wc = sw + (size_t)(c0 + c) * 9;
#pragma unroll
            for (int ky = 0; ky < 3; ky++) {
                const float *row = st + (size_t)c * tile + (ty + ky) * SW + tx;
#pragma unroll
                for (int kx = 0; kx < 3; kx++) {
                    float wv[COUT];
#pragma unroll
                    for (int o = 0; o < COUT; o++) wv[o] = wc[(size_t)o * C * 9 + ky * 3 + kx];
#pragma unroll
                    for (int j = 0; j < DC_PX; j++) {
                        const float v = row[j * DC_TX + kx];
#pragma unroll
                        for (int o = 0; o < COUT; o++) acc[j][o] = fmaf(v, wv[o], acc[j][o]);
                    }
                }
            }
        }
    }
    const int y = y0 + ty;
    if (y >= H) return;
#pragma unroll
    for (int j = 0; j < DC_PX; j++) {
        const int x = x0 + tx + j * DC_TX;
        if (x >= W) continue;
#pragma unroll
        for (int o = 0; o < COUT; o++) {
            float *dst = out + (size_t)o * plane + (size_t)y * W + x;
            float v = acc[j][o] + (bias ? bias[o] : 0.0f);
            *dst = act(accumulate ? *dst + v : v, relu);
        }
    }
}

/* Whether the direct kernel takes the convolution (see the top of the file). */
static int conv_small_fits(const lp_conv2d_input *in, int cout, int k, int stride) {
    return cout <= DC_MAX_COUT && k == 3 && stride == 1 && in->up == 1 && in->cb == 0 &&
           (int64_t)cout * in->ca * 9 <= DC_MAX_WEIGHTS;
}

static lp_status conv_small(const lp_backend *be, float *out, const lp_conv2d_input *in, const lp_tensor *w,
                            int cout, const float *bias, unsigned flags) {
    const float *wd = (const float *)lp_cuda_weight(be, w, 0); /* f32 [cout][C][3][3] */
    if (!wd) return lp_cuda(be)->sticky;
    typedef void (*small_kernel)(float *, const float *, int, int, int, const float *, const float *, int, int);
    static const small_kernel kernels[DC_MAX_COUT] = {conv3x3_small_kernel<1>, conv3x3_small_kernel<2>,
                                                      conv3x3_small_kernel<3>, conv3x3_small_kernel<4>};
    size_t smem = ((size_t)cout * in->ca * 9 + (size_t)DC_CC * (DC_TW + 2) * (DC_TY + 2)) * sizeof(float);
    dim3 grid((unsigned)((in->w + DC_TW - 1) / DC_TW), (unsigned)((in->h + DC_TY - 1) / DC_TY));
    kernels[cout - 1]<<<grid, DC_TX * DC_TY, smem, lp_cuda(be)->stream>>>(
        out, in->a, in->ca, in->h, in->w, wd, bias, (flags & LP_CONV_ACCUMULATE) != 0, (flags & LP_CONV_RELU) != 0);
    return lp_cuda_check_launch(be, "conv2d (direct)");
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
    if (lp_cuda_aligned(y, 16) && lp_cuda_aligned(x, 16))
        ew_kernel<OP, 4><<<lp_cuda_grid(n / 4 + 1, THREADS), THREADS, 0, s>>>(y, x, n);
    else ew_kernel<OP, 1><<<lp_cuda_grid(n, THREADS), THREADS, 0, s>>>(y, x, n);
    lp_cuda_check_launch(be, what);
}

void lp_cuda_relu(const lp_backend *be, float *x, int64_t n) { launch_ew<EW_RELU>(be, x, x, n, "relu"); }

void lp_cuda_tanh_clamp(const lp_backend *be, float *y, const float *x, int64_t n) {
    launch_ew<EW_TANH_CLAMP>(be, y, x, n, "tanh_clamp");
}

void lp_cuda_clamp01(const lp_backend *be, float *y, const float *x, int64_t n) {
    launch_ew<EW_CLAMP01>(be, y, x, n, "clamp01");
}

/* ------------------------------------------------------------ conv2d */

/* The reduction's length K = cin·k² rounded up to whole steps. */
static int64_t gemm_kp(int64_t cin, int64_t k) { return (cin * k * k + BK - 1) / BK * BK; }

/* *out = the weight w ([cout][cin][k][k] or [cout][cin][kt][k][k] f32 on the
 * host) rearranged for the grouped order (grouped != 0) or the dense one over
 * kt frames of cin_pad channels, made on first use from the backend's bf16
 * copy of it. */
static lp_status conv_weight_get(const lp_backend *be, const lp_tensor *w, int grouped, int64_t cin_pad,
                                 const __nv_bfloat16 **out) {
    lp_cuda_state *st = lp_cuda(be);
    const int64_t cout = w->shape[0], cin = w->shape[1], k = w->shape[w->ndim - 1];
    const int64_t kt = w->ndim == 5 ? w->shape[2] : 1;
    if (!st->conv && !(st->conv = (lp_cuda_conv *)calloc(1, sizeof *st->conv)))
        return lp_fail(LP_ERR_NOMEM, "conv2d: out of memory for the CUDA conv state");
    lp_cuda_conv *c = st->conv;
    for (int i = 0; i < c->n; i++) {
        const conv_weight *e = &c->w[i];
        if (e->host == w->data && e->cout == cout && e->cin == cin && e->kt == kt && e->k == k &&
            e->grouped == grouped && e->cin_pad == cin_pad) {
            *out = e->dev;
            return LP_OK;
        }
    }
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 64;
        conv_weight *nw = (conv_weight *)realloc(c->w, (size_t)cap * sizeof *nw);
        if (!nw) return lp_fail(LP_ERR_NOMEM, "conv2d: out of memory for the CUDA conv weight list");
        c->w = nw;
        c->cap = cap;
    }
    const __nv_bfloat16 *wd = (const __nv_bfloat16 *)lp_cuda_weight(be, w, 1); /* bf16 [cout][cin][kt][k][k] */
    if (!wd) return st->sticky;
    const int64_t rows = (cout + BM_MAX - 1) / BM_MAX * BM_MAX, kp = gemm_kp(kt * cin_pad, k);
    __nv_bfloat16 *dev = NULL;
    cudaError_t e = cudaMalloc(&dev, (size_t)(rows * kp) * sizeof *dev);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return lp_fail(e == cudaErrorMemoryAllocation ? LP_ERR_NOMEM : LP_ERR_IO,
                       "conv2d: cannot allocate %lld bytes of device memory for weight '%s': %s",
                       (long long)(rows * kp * 2), w->name ? w->name : "?", cudaGetErrorString(e));
    }
    rearrange_weight_kernel<<<lp_cuda_grid(rows * kp, THREADS), THREADS, 0, st->stream>>>(
        dev, wd, (int)cout, (int)rows, (int)(kt * cin_pad), (int)cin_pad, (int)cin, (int)kt, (int)(k * k), (int)kp,
        grouped);
    lp_status s = lp_cuda_check_launch(be, "conv2d weight rearrangement");
    if (s != LP_OK) {
        cudaFree(dev);
        return s;
    }
    conv_weight *ne = &c->w[c->n++];
    ne->host = w->data;
    ne->cout = cout;
    ne->cin = cin;
    ne->kt = kt;
    ne->k = k;
    ne->cin_pad = cin_pad;
    ne->grouped = grouped;
    ne->dev = dev;
    *out = dev;
    return LP_OK;
}

typedef void (*conv_kernel)(float *, conv_geom, const __nv_bfloat16 *, const float *, int, int, int, int, int, int);

/* The tensor-core convolution. BM 128 halves the gathers
 * per multiply-add where there are enough output channels to fill it. */
static lp_status conv_mma(const lp_backend *be, float *out, const conv_geom &g, const lp_tensor *w, int cout,
                          const float *bias, unsigned flags) {
    /* the channels of one time tap (all of them for a 2-D weight) */
    const int cin_frame = w->ndim == 5 ? g.cin / (int)w->shape[2] : g.cin;
    static const conv_kernel kernels[2][2][2] = { /* [BM 128][k 3][grouped] */
        {{conv_mma_kernel<64, 1, false>, conv_mma_kernel<64, 1, true>},
         {conv_mma_kernel<64, 3, false>, conv_mma_kernel<64, 3, true>}},
        {{conv_mma_kernel<128, 1, false>, conv_mma_kernel<128, 1, true>},
         {conv_mma_kernel<128, 3, false>, conv_mma_kernel<128, 3, true>}},
    };
    const int64_t hw = (int64_t)g.ho * g.wo, plane = (int64_t)g.h * g.w, kp = gemm_kp(g.cin, g.k);
    const int bm = cout > 64 ? 128 : 64,
              grouped = g.ca % GROUP == 0 && g.cab % GROUP == 0 && g.cin % GROUP == 0 && cin_frame % GROUP == 0;
    const int64_t mtiles = (cout + bm - 1) / bm, blocks = mtiles * ((hw + BN - 1) / BN);
    if (hw > INT32_MAX - BN || plane > INT32_MAX || blocks > INT32_MAX || cout > INT32_MAX - BM_MAX ||
        kp > INT32_MAX / BM_MAX)
        return lp_fail(LP_ERR_ARG, "conv2d '%s': too large (%d channels, %dx%d input, %dx%d output)",
                       w->name ? w->name : "?", g.cin, g.w, g.h, g.wo, g.ho);
    const __nv_bfloat16 *wr = NULL;
    LP_TRY(conv_weight_get(be, w, grouped, cin_frame, &wr));
    conv_kernel kern = kernels[bm == 128][g.k == 3][grouped];
    kern<<<(unsigned)blocks, CONV_THREADS, 0, lp_cuda(be)->stream>>>(out, g, wr, bias, cout, (int)mtiles,
                                                                     (int)(kp / BK), g.cin * g.k * g.k,
                                                                     (flags & LP_CONV_ACCUMULATE) != 0,
                                                                     (flags & LP_CONV_RELU) != 0);
    return lp_cuda_check_launch(be, "conv2d");
}

/* Copies the c channels of each of the n frames src[i] ([c][plane]) into
 * frame i of the backend's padding buffer ([n][cpad][plane], grown on
 * demand), zero channels after them, and points src[i] at the copy. A few channels (RGB frames) padded to a multiple of
 * GROUP make a grouped convolution, whose gathers are coalesced (the dense
 * order measured 1 TFLOP/s on TAEHV's 3 -> 64 conv at 832x480, the grouped
 * one over 100). */
static lp_status pad_channels(const lp_backend *be, const float **src, int n, int c, int cpad, size_t plane) {
    lp_cuda_state *st = lp_cuda(be);
    const size_t frame = (size_t)cpad * plane * sizeof(float), bytes = (size_t)n * frame;
    lp_cuda_conv *cs = st->conv;
    if (!cs && !(cs = st->conv = (lp_cuda_conv *)calloc(1, sizeof *st->conv)))
        return lp_fail(LP_ERR_NOMEM, "conv: out of memory for the CUDA conv state");
    if (cs->padded_bytes < bytes) {
        /* the old buffer may still be read by issued kernels */
        LP_TRY(lp_cuda_check(be, cudaStreamSynchronize(st->stream), "conv: channel padding (wait)"));
        cudaFree(cs->padded);
        cs->padded = NULL;
        cs->padded_bytes = 0;
        cudaError_t e = cudaMalloc(&cs->padded, bytes);
        if (e != cudaSuccess) {
            cudaGetLastError();
            return lp_fail(e == cudaErrorMemoryAllocation ? LP_ERR_NOMEM : LP_ERR_IO,
                           "conv: cannot allocate %zu bytes of device memory: %s", bytes, cudaGetErrorString(e));
        }
        cs->padded_bytes = bytes;
    }
    for (int i = 0; i < n; i++) {
        char *dst = (char *)cs->padded + (size_t)i * frame;
        LP_TRY(lp_cuda_check(be, cudaMemcpyAsync(dst, src[i], (size_t)c * plane * sizeof(float),
                                                 cudaMemcpyDeviceToDevice, st->stream),
                             "conv: channel padding (copy)"));
        LP_TRY(lp_cuda_check(be, cudaMemsetAsync(dst + (size_t)c * plane * sizeof(float), 0,
                                                 (size_t)(cpad - c) * plane * sizeof(float), st->stream),
                             "conv: channel padding (zeros)"));
        src[i] = (const float *)dst;
    }
    return LP_OK;
}

lp_status lp_cuda_conv2d(const lp_backend *be, float *out, const lp_conv2d_input *in, const lp_tensor *w,
                         const lp_tensor *b, int stride, unsigned flags) {
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
    if (flags & ~(LP_CONV_ACCUMULATE | LP_CONV_RELU))
        return lp_fail(LP_ERR_ARG, "conv2d '%s': unknown flags 0x%x", name, flags);
    LP_TRY(lp_cuda_pending(be, "conv2d"));
    lp_cuda_state *st = lp_cuda(be);
    int cout = (int)w->shape[0];
    conv_geom g;
    g.a = in->a;
    g.b = in->b;
    g.c = NULL;
    g.ca = in->ca;
    g.cin = g.cab = in->ca + in->cb;
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
    if (conv_small_fits(in, cout, g.k, stride)) return conv_small(be, out, in, w, cout, bias, flags);
    if (in->cb == 0 && g.ca % GROUP) {
        /* a single input of few channels (TAEHV's RGB frames) */
        const int cpad = (g.ca + GROUP - 1) / GROUP * GROUP;
        LP_TRY(pad_channels(be, &g.a, 1, g.ca, cpad, (size_t)g.h * g.w));
        g.ca = g.cin = g.cab = cpad;
    }
    return conv_mma(be, out, g, w, cout, bias, flags);
}

/* One implicit GEMM per output frame over its kt input frames (see conv_geom). */
lp_status lp_cuda_conv3d(const lp_backend *be, float *out, const float *const *in, int n_in, const lp_tensor *w,
                         const lp_tensor *b, const lp_conv3d_geom *geom) {
    LP_TRY(lp_conv3d_check(out, in, n_in, w, b, geom));
    LP_TRY(lp_cuda_pending(be, "conv3d"));
    const int nd = w->ndim, cout = (int)w->shape[0], cin = (int)w->shape[1];
    const int kt = nd == 5 ? (int)w->shape[2] : 1, k = (int)w->shape[nd - 1];
    const int n_out = (n_in - kt) / geom->t_stride + 1, cpad = (cin + GROUP - 1) / GROUP * GROUP;
    const size_t plane = (size_t)geom->h * geom->w, out_frame = (size_t)cout * geom->oh * geom->ow;
    const float *bias = NULL; /* f32 [cout] */
    if (b && !(bias = (const float *)lp_cuda_weight(be, b, 0))) return lp_cuda(be)->sticky;
    for (int j = 0; j < n_out; j++) {
        const float *fr[3] = {NULL, NULL, NULL};
        for (int dt = 0; dt < kt; dt++) fr[dt] = in[j * geom->t_stride + dt];
        if (cin % GROUP) LP_TRY(pad_channels(be, fr, kt, cin, cpad, plane));
        const int cf = cin % GROUP ? cpad : cin;
        conv_geom g;
        g.a = fr[0];
        g.b = fr[1];
        g.c = fr[2];
        g.ca = cf;
        g.cab = (kt < 2 ? 1 : 2) * cf;
        g.cin = kt * cf;
        g.h = geom->h;
        g.w = geom->w;
        g.sh = 0;
        g.k = k;
        g.stride = geom->stride;
        g.pad = geom->pad;
        g.ho = geom->oh;
        g.wo = geom->ow;
        LP_TRY(conv_mma(be, out + (size_t)j * out_frame, g, w, cout, bias, 0));
    }
    return LP_OK;
}

void lp_cuda_conv_free(lp_cuda_state *st) {
    lp_cuda_conv *c = st->conv;
    if (!c) return;
    for (int i = 0; i < c->n; i++) cudaFree(c->w[i].dev);
    cudaFree(c->padded);
    free(c->w);
    free(c);
    st->conv = NULL;
}
