/* Scaled dot-product attention on the GPU (the backend.h `attention` op): q
 * and out bf16, flash-attention forward passes on bf16 tensor cores with fp32
 * accumulation. Head_dim 128 on a Hopper GPU (compute capability 9.0) runs the
 * wgmma kernel of attention_wgmma.cu; everything else (and everything when the
 * environment variable LIPAR_ATTENTION is "mma") the mma.sync m16n8k16 kernel
 * here. The host side (argument checks, the f32 K/V conversion, the split of
 * the last wave, the merge) is shared, in three kernels:
 *
 * 1. The keys are those of the ranges in order (range 0 first). A bf16
 *    range (the backend's KV cache, written by kv_store) is read where it is;
 *    kv_to_bf16_kernel rounds the keys and values of an f32 range (any
 *    caller's f32 activations) to bf16 into a head-major scratch
 *    [heads][n][head_dim] for K and one for V. Either way a key's head slice
 *    is a run of head_dim bf16 at base + row·ld + head·hstride (att_src).
 * 2. attention_kernel: one CTA of 4 warps per (block of 128 query rows,
 *    head). Q is staged in shared memory once; the key tiles stream through
 *    a double-buffered shared-memory pipeline of 16-byte cp.async copies,
 *    each tile row from its key's range (rows past Lk zero-filled; tile j + 1
 *    is in flight while tile j computes; one barrier per tile). Each warp
 *    owns 32 query rows (two m16 row blocks), so every K/V fragment read from
 *    shared memory feeds two mma; per tile: S = Q·Kᵀ times scale·log2 e (the
 *    log2 domain), keys past Lk get -inf, the online softmax in fp32 (running
 *    row base m and sum l; O is rescaled by 2^(m_old − m_new) only when a
 *    row's max grows by more than ATT_RESCALE), then O += bf16(P)·V. At the
 *    end O / l is stored as bf16; rows past Lq are never stored. The wgmma
 *    kernel does the same work per CTA by other means (attention_wgmma.cu).
 * 3. When the CTAs do not fill the last wave of the GPU, the units (row
 *    block, head) of that wave are split over the key tiles (see
 *    plan_split): their parts leave O and (m, l) in the scratch and
 *    combine_kernel merges them.
 *
 * Register budget for head_dim 128 (128 threads, at most 255 registers, two
 * CTAs per SM): O 2×16×4 = 128 fp32, S 2×8×4 = 64 fp32, plus the fragments
 * in flight. Shared-memory rows are padded by 8 bf16 (16 bytes) so that the 8
 * row addresses of every ldmatrix hit distinct bank groups.
 *
 * Fragment layouts (PTX ISA, mma.m16n8k16 with .bf16; g = lane / 4, t = lane
 * % 4): A (16×16, row-major) a0 = (row g, cols 2t, 2t+1), a1 = (row g+8, the
 * same cols), a2 = (row g, cols 2t+8, 2t+9), a3 = (row g+8, cols 2t+8, 2t+9);
 * B (16×8, k × n) b0 = (k 2t, 2t+1, col g), b1 = (k 2t+8, 2t+9, col g);
 * C/D (16×8) c0, c1 = (row g, cols 2t, 2t+1), c2, c3 = (row g+8, the same). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "attention.h"
#include "cuda_internal.h"

#define ATT_WARPS 4
#define ATT_THREADS (ATT_WARPS * 32)
#define ATT_WROWS 32 /* query rows per warp: two m16 row blocks */
#define ATT_BK 64    /* keys per tile */
#define KV_THREADS 128

static_assert(ATT_BQ == ATT_WARPS * ATT_WROWS, "a CTA covers one row block");

/* One f32 range to convert. */
typedef struct {
    const float *k, *v;
    int64_t ld;             /* row stride, floats */
    int n;                  /* rows */
    int width4;             /* heads·HD / 4: float4 columns of a key row */
    __nv_bfloat16 *kd, *vd; /* [heads][n][HD] each */
} kv_params;

/* ---------------------------------------------------------------------------
 * 1. f32 K/V rows → head-major bf16 scratch */

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi); /* .x (low half) = lo */
    return *reinterpret_cast<uint32_t *>(&h);
}

/* One CTA per key row (blockIdx.x < n): each thread reads float4 columns
 * (coalesced along the row) and writes 4 bf16 (8 bytes) to the head-major
 * scratch. */
template <int HD>
__global__ void __launch_bounds__(KV_THREADS) kv_to_bf16_kernel(const kv_params p) {
    const int key = (int)blockIdx.x;
    const float4 *krow = reinterpret_cast<const float4 *>(p.k + key * p.ld);
    const float4 *vrow = reinterpret_cast<const float4 *>(p.v + key * p.ld);
    for (int c4 = (int)threadIdx.x; c4 < p.width4; c4 += KV_THREADS) {
        const int head = c4 / (HD / 4), d = (c4 % (HD / 4)) * 4;
        const int64_t o = ((int64_t)head * p.n + key) * HD + d;
        /* read once: evict-first, so that the scratch stays in L2 instead */
        const float4 a = __ldcs(krow + c4), b = __ldcs(vrow + c4);
        *reinterpret_cast<uint2 *>(p.kd + o) = make_uint2(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w));
        *reinterpret_cast<uint2 *>(p.vd + o) = make_uint2(pack_bf16(b.x, b.y), pack_bf16(b.z, b.w));
    }
}

/* ---------------------------------------------------------------------------
 * 2. The attention kernel */

__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* 16-byte asynchronous global → shared copy (L2 only) to the shared-window
 * address dst of src_bytes (16, or 0: nothing is read and the 16 bytes are
 * zero-filled), and its group commit / wait for all of this thread's groups. */
__device__ __forceinline__ void cp_async_16(uint32_t dst, const __nv_bfloat16 *src, uint32_t src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}

__device__ __forceinline__ void cp_async_commit(void) { asm volatile("cp.async.commit_group;" ::: "memory"); }

__device__ __forceinline__ void cp_async_wait_all(void) { asm volatile("cp.async.wait_group 0;" ::: "memory"); }

/* Four 8x8 bf16 matrices; lane i supplies the shared-window address a of
 * row i%8 of matrix i/8; register j receives matrix j (row lane/4, columns
 * 2·(lane%4) and +1, or with .trans the transposed element pair). */
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], uint32_t a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], uint32_t a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/* d += a·b for one 16x8x16 step (a row-major 16x16, b column-major 16x8). */
__device__ __forceinline__ void mma_bf16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Issues the cp.async copies of key tile j (keys j·ATT_BK ..) of head `head`
 * into the shared K and V tiles at shared-window addresses kdst, vdst
 * (ATT_BK rows of HD + 8 bf16 each). Thread tid copies the 16-byte chunks
 * tid % 2 + 2i (i < HD/16) of tile row tid / 2 from its key's row in the
 * key's range, so that all its addresses are one base plus constants; the
 * rows of keys past Lk are zero-filled, so that padded values are finite
 * (P = 0 times a padded V row must give 0). Selects ranges without indexing
 * the parameter array (no local-memory copy of it). */
template <int HD>
__device__ __forceinline__ void load_tile_async(const att_params &p, int j, int head, uint32_t kdst, uint32_t vdst) {
    static_assert(ATT_THREADS == 2 * ATT_BK, "two threads per tile row");
    const int row = (int)threadIdx.x >> 1, c0 = (int)threadIdx.x & 1;
    const int key = j * ATT_BK + row;
    const bool r1 = key >= p.n0, valid = key < p.Lk;
    const int64_t ld = r1 ? p.src[1].ld : p.src[0].ld, hstride = r1 ? p.src[1].hstride : p.src[0].hstride;
    /* a padded key reads nothing: any valid address of its range will do */
    const int64_t off = valid ? (int64_t)(r1 ? key - p.n0 : key) * ld + head * hstride + c0 * 8 : 0;
    const __nv_bfloat16 *ks = reinterpret_cast<const __nv_bfloat16 *>(r1 ? p.src[1].k : p.src[0].k) + off;
    const __nv_bfloat16 *vs = reinterpret_cast<const __nv_bfloat16 *>(r1 ? p.src[1].v : p.src[0].v) + off;
    const uint32_t bytes = valid ? 16u : 0u;
    const uint32_t soff = (uint32_t)((row * (HD + 8) + c0 * 8) * 2);
#pragma unroll
    for (int i = 0; i < HD / 16; i++) {
        cp_async_16(kdst + soff + i * 32, ks + i * 16, bytes);
        cp_async_16(vdst + soff + i * 32, vs + i * 16, bytes);
    }
}

/* Two CTAs per SM (at most 255 registers); three for head_dim 48, which fits
 * 168 registers without spilling. */
template <int HD>
__global__ void __launch_bounds__(ATT_THREADS, HD <= 48 ? 3 : 2) attention_kernel(const att_params p) {
    static_assert(HD % 16 == 0 && HD <= 128, "head dim must be a multiple of 16, at most 128");
    constexpr int LDS = HD + 8;        /* shared row stride, bf16 */
    constexpr int TILE = ATT_BK * LDS; /* one K or V tile, bf16 */
    constexpr int KS = HD / 16;        /* k-steps over the head dim */
    extern __shared__ __align__(16) unsigned char att_smem[];
    /* Q [ATT_BQ][LDS], then K [2][ATT_BK][LDS], then V [2][ATT_BK][LDS]; the
     * tensor-core operands are addressed by 32-bit shared-window addresses */
    __nv_bfloat16 *qs = reinterpret_cast<__nv_bfloat16 *>(att_smem);
    const uint32_t qs_a = (uint32_t)__cvta_generic_to_shared(att_smem);
    const uint32_t ks_a = qs_a + ATT_BQ * LDS * 2;
    const uint32_t vs_a = ks_a + 2 * TILE * 2;

    const int tid = (int)threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t = lane % 4; /* mma fragment row group and column pair */
    /* this CTA's unit, key tiles [t0, t1) and split part (-1: whole unit) */
    int unit = (int)blockIdx.x, part = -1, t0 = 0, t1 = p.tiles;
    if (unit >= p.whole) {
        part = (unit - p.whole) % p.splits;
        unit = p.whole + (unit - p.whole) / p.splits;
        t0 = part * p.split_tiles;
        t1 = min(p.tiles, t0 + p.split_tiles);
    }
    const int head = unit / p.nb;
    const int64_t qrow0 = (int64_t)(unit % p.nb) * ATT_BQ;
    const int64_t hoff = (int64_t)head * HD;

    /* tile t0 in flight while Q is staged (tile j goes to buffer j % 2) */
    load_tile_async<HD>(p, t0, head, ks_a + (t0 & 1) * TILE * 2, vs_a + (t0 & 1) * TILE * 2);
    cp_async_commit();

    /* Q rows qrow0.. of this head; rows past Lq are zeros. Item e is row
     * e / (HD/8), 16-byte chunk e % (HD/8). */
    const __nv_bfloat16 *q = reinterpret_cast<const __nv_bfloat16 *>(p.q);
#pragma unroll 8
    for (int e = tid; e < ATT_BQ * HD / 8; e += ATT_THREADS) {
        const int row = e / (HD / 8), c8 = e % (HD / 8);
        uint4 x = make_uint4(0u, 0u, 0u, 0u);
        if (qrow0 + row < p.Lq) x = *(reinterpret_cast<const uint4 *>(q + (qrow0 + row) * p.ldq + hoff) + c8);
        *reinterpret_cast<uint4 *>(qs + row * LDS + c8 * 8) = x;
    }

    /* This warp's rows are warp·32 + mb·16 + {g, g+8} for row block mb; the
     * per-row state is indexed r = 2·mb + (0 for row g, 1 for row g+8). */
    float o[2][HD / 8][4];
#pragma unroll
    for (int mb = 0; mb < 2; mb++)
#pragma unroll
        for (int d = 0; d < HD / 8; d++) o[mb][d][0] = o[mb][d][1] = o[mb][d][2] = o[mb][d][3] = 0.f;
    float m[4], l[4]; /* running max (log2 domain), this thread's part of the running sum */
#pragma unroll
    for (int r = 0; r < 4; r++) m[r] = -INFINITY, l[r] = 0.f;

    /* ldmatrix row addresses: every x4 load here reads a 16×16 block as the
     * four 8×8 matrices (rows +0..7, cols +0..7), (rows +8..15, cols +0..7),
     * (rows +0..7, cols +8..15), (rows +8..15, cols +8..15), so that one lane
     * offset serves Q, K and V. Q (A operand, rows × dims): a0..a3. K (B
     * operand, keys × dims, n = key): b0 of key block n, b0 of block n+1, b1 of
     * block n, b1 of block n+1. V (B operand, transposed, keys × dims, k =
     * key): b0, b1 of dim block d, b0, b1 of dim block d+1. */
    const uint32_t lane_off = (((lane & 7) + ((lane >> 3) & 1) * 8) * LDS + (lane >> 4) * 8) * 2;
    const uint32_t qa_lane = qs_a + warp * ATT_WROWS * LDS * 2 + lane_off;
    const uint32_t kb_lane = ks_a + lane_off;
    const uint32_t vb_lane = vs_a + lane_off;

    for (int j = t0; j < t1; j++) {
        /* tile j has landed (this thread's copies: wait; everyone's: barrier),
         * and every warp is done with tile j − 1, whose buffers get tile j + 1 */
        cp_async_wait_all();
        __syncthreads();
        if (j + 1 < t1) {
            const uint32_t nxt = ((j + 1) & 1) * TILE * 2;
            load_tile_async<HD>(p, j + 1, head, ks_a + nxt, vs_a + nxt);
            cp_async_commit();
        }
        const uint32_t cur = (j & 1) * TILE * 2;

        /* S = Q·Kᵀ: s[mb][n] covers rows of block mb, keys 8n..8n+7 of the tile */
        float s[2][ATT_BK / 8][4];
#pragma unroll
        for (int mb = 0; mb < 2; mb++)
#pragma unroll
            for (int n = 0; n < ATT_BK / 8; n++) s[mb][n][0] = s[mb][n][1] = s[mb][n][2] = s[mb][n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            uint32_t qa[2][4];
            ldsm_x4(qa[0], qa_lane + kk * 32);
            ldsm_x4(qa[1], qa_lane + 16 * LDS * 2 + kk * 32);
#pragma unroll
            for (int np = 0; np < ATT_BK / 16; np++) {
                uint32_t b[4];
                ldsm_x4(b, kb_lane + cur + np * 16 * LDS * 2 + kk * 32);
#pragma unroll
                for (int mb = 0; mb < 2; mb++) {
                    mma_bf16(s[mb][2 * np], qa[mb], b[0], b[2]);
                    mma_bf16(s[mb][2 * np + 1], qa[mb], b[1], b[3]);
                }
            }
        }

        /* logits into the log2 domain */
#pragma unroll
        for (int mb = 0; mb < 2; mb++)
#pragma unroll
            for (int n = 0; n < ATT_BK / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[mb][n][e] *= p.qscale;

        /* padding keys of the last tile */
        if (j == p.tiles - 1 && p.last_valid < ATT_BK) {
#pragma unroll
            for (int n = 0; n < ATT_BK / 8; n++) {
                const int c = n * 8 + 2 * t;
#pragma unroll
                for (int mb = 0; mb < 2; mb++) {
                    if (c >= p.last_valid) s[mb][n][0] = s[mb][n][2] = -INFINITY;
                    if (c + 1 >= p.last_valid) s[mb][n][1] = s[mb][n][3] = -INFINITY;
                }
            }
        }

        /* Online softmax (fp32, log2 domain; the 4 threads of a quad share a
         * row). The running base m of a row is raised only when a tile's max
         * exceeds it by more than ATT_RESCALE (then O and l are rescaled by
         * 2^(m_old − m_new), for all rows of the warp at once); otherwise P =
         * 2^(s − m) <= 2^ATT_RESCALE, harmless in fp32 and in bf16, and the
         * final O / l is the same. */
        float mx[4];
        bool grow = false;
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int mb = r >> 1, h = (r & 1) * 2; /* h: element pair of row g (0) or g+8 (2) */
            mx[r] = -INFINITY;
#pragma unroll
            for (int n = 0; n < ATT_BK / 8; n++) mx[r] = fmaxf(mx[r], fmaxf(s[mb][n][h], s[mb][n][h + 1]));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            grow |= mx[r] > m[r] + ATT_RESCALE;
        }
        if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
            for (int r = 0; r < 4; r++) {
                const int mb = r >> 1, h = (r & 1) * 2;
                const float mn = fmaxf(m[r], mx[r]);
                const float corr = mn == -INFINITY ? 1.f : fast_exp2(m[r] - mn);
                m[r] = mn;
                l[r] *= corr;
#pragma unroll
                for (int d = 0; d < HD / 8; d++) o[mb][d][h] *= corr, o[mb][d][h + 1] *= corr;
            }
        }
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int mb = r >> 1, h = (r & 1) * 2;
            /* a row whose logits are all -inf so far subtracts 0 (no inf − inf) */
            const float base = m[r] == -INFINITY ? 0.f : m[r];
#pragma unroll
            for (int n = 0; n < ATT_BK / 8; n++) {
                s[mb][n][h] = fast_exp2(s[mb][n][h] - base);
                s[mb][n][h + 1] = fast_exp2(s[mb][n][h + 1] - base);
                l[r] += s[mb][n][h] + s[mb][n][h + 1];
            }
        }

        /* O += P·V: P's A fragment for keys 16kk..16kk+15 of block mb is
         * s[mb][2kk] (a0: row g, a1: row g+8) and s[mb][2kk+1] (a2, a3) */
#pragma unroll
        for (int kk = 0; kk < ATT_BK / 16; kk++) {
            uint32_t a[2][4];
#pragma unroll
            for (int mb = 0; mb < 2; mb++) {
                a[mb][0] = pack_bf16(s[mb][2 * kk][0], s[mb][2 * kk][1]);
                a[mb][1] = pack_bf16(s[mb][2 * kk][2], s[mb][2 * kk][3]);
                a[mb][2] = pack_bf16(s[mb][2 * kk + 1][0], s[mb][2 * kk + 1][1]);
                a[mb][3] = pack_bf16(s[mb][2 * kk + 1][2], s[mb][2 * kk + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < HD / 16; dp++) {
                uint32_t b[4];
                ldsm_x4_trans(b, vb_lane + cur + kk * 16 * LDS * 2 + dp * 32);
#pragma unroll
                for (int mb = 0; mb < 2; mb++) {
                    mma_bf16(o[mb][2 * dp], a[mb], b[0], b[1]);
                    mma_bf16(o[mb][2 * dp + 1], a[mb], b[2], b[3]);
                }
            }
        }
    }

    /* a whole unit stores O / l as bf16 (rows past Lq skipped); a split part
     * leaves O and (m, l) of all its rows (f32) for combine_kernel */
    const int64_t pidx = (int64_t)blockIdx.x - p.whole;
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const int mb = r >> 1, h = (r & 1) * 2;
        float sum = l[r];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const int lrow = warp * ATT_WROWS + mb * 16 + g + (r & 1) * 8; /* row within the block */
        if (part < 0) {
            if (qrow0 + lrow >= p.Lq) continue;
            __nv_bfloat16 *dst = reinterpret_cast<__nv_bfloat16 *>(p.out) + (qrow0 + lrow) * p.ldq + hoff;
            const float inv = 1.f / sum;
#pragma unroll
            for (int d = 0; d < HD / 8; d++)
                *reinterpret_cast<uint32_t *>(dst + d * 8 + 2 * t) =
                    pack_bf16(o[mb][d][h] * inv, o[mb][d][h + 1] * inv);
        } else {
            float *dst = p.part_o + (pidx * ATT_BQ + lrow) * HD;
            if (t == 0) reinterpret_cast<float2 *>(p.part_ml)[pidx * ATT_BQ + lrow] = make_float2(m[r], sum);
#pragma unroll
            for (int d = 0; d < HD / 8; d++)
                *reinterpret_cast<float2 *>(dst + d * 8 + 2 * t) = make_float2(o[mb][d][h], o[mb][d][h + 1]);
        }
    }
}

/* Merges the split parts (of either kernel): thread item e = (split unit i,
 * row, float4 column c4) of the ATT_BQ·(HD/4) items of each split unit. With
 * the parts' bases m_s and sums l_s, M = max m_s: out = Σ 2^(m_s − M)·O_s /
 * Σ 2^(m_s − M)·l_s, stored as bf16. Rows past Lq are skipped. */
template <int HD>
__global__ void __launch_bounds__(KV_THREADS) combine_kernel(const att_params p, int64_t items) {
    for (int64_t e = (int64_t)blockIdx.x * KV_THREADS + threadIdx.x; e < items;
         e += (int64_t)gridDim.x * KV_THREADS) {
        const int c4 = (int)(e % (HD / 4));
        const int64_t rowi = e / (HD / 4); /* i·ATT_BQ + row */
        const int lrow = (int)(rowi % ATT_BQ);
        const int unit = p.whole + (int)(rowi / ATT_BQ);
        const int64_t qrow = (int64_t)(unit % p.nb) * ATT_BQ + lrow;
        if (qrow >= p.Lq) continue;
        const int64_t first = (rowi / ATT_BQ) * p.splits; /* part index of part 0 */
        float M = -INFINITY;
        const float2 *ml = reinterpret_cast<const float2 *>(p.part_ml) + first * ATT_BQ + lrow;
        for (int s = 0; s < p.splits; s++) M = fmaxf(M, ml[s * ATT_BQ].x);
        if (M == -INFINITY) M = 0.f; /* rows without a finite logit: 0 / 0, as for a whole unit */
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
        float L = 0.f;
        for (int s = 0; s < p.splits; s++) {
            const float2 mls = ml[s * ATT_BQ];
            const float w = exp2f(mls.x - M);
            const float4 x = reinterpret_cast<const float4 *>(p.part_o + ((first + s) * ATT_BQ + lrow) * HD)[c4];
            acc.x += w * x.x, acc.y += w * x.y, acc.z += w * x.z, acc.w += w * x.w;
            L += w * mls.y;
        }
        const float inv = 1.f / L;
        reinterpret_cast<uint2 *>(p.out + qrow * p.ldq + (int64_t)(unit / p.nb) * HD)[c4] =
            make_uint2(pack_bf16(acc.x * inv, acc.y * inv), pack_bf16(acc.z * inv, acc.w * inv));
    }
}

/* ---------------------------------------------------------------------------
 * Host side */

/* The backend's attention scratch of at least `bytes` bytes (grown on
 * demand; kernels in flight may still read the old one, so the stream is
 * drained before it is freed). */
static lp_status att_scratch(const lp_backend *be, size_t bytes, unsigned char **out) {
    lp_cuda_state *st = lp_cuda(be);
    if (st->kv_bf16_bytes < bytes) {
        LP_TRY(lp_cuda_check(be, cudaStreamSynchronize(st->stream), "cudaStreamSynchronize (attention scratch)"));
        LP_TRY(lp_cuda_check(be, cudaFree(st->kv_bf16), "cudaFree (attention scratch)"));
        st->kv_bf16 = NULL;
        st->kv_bf16_bytes = 0;
        const size_t want = (bytes + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1); /* whole MiB */
        cudaError_t e = cudaMalloc(&st->kv_bf16, want);
        if (e != cudaSuccess) {
            st->kv_bf16 = NULL;
            if (e != cudaErrorMemoryAllocation) return lp_cuda_check(be, e, "cudaMalloc (attention scratch)");
            cudaGetLastError(); /* out of memory is not sticky */
            return lp_fail(LP_ERR_NOMEM,
                           "attention (cuda): cannot allocate %zu bytes of device memory for its scratch (bf16 K/V, "
                           "partial results)",
                           want);
        }
        st->kv_bf16_bytes = want;
    }
    *out = (unsigned char *)st->kv_bf16;
    return LP_OK;
}

/* Sets p->whole, splits and split_tiles for `units` units on `slots`
 * concurrent CTAs. All units take about the same time, tiles·τ (τ: one key
 * tile on a loaded SM), so a grid of whole units takes ceil(units / slots)
 * waves; the units of a last, partial wave (rest) may be split into k parts
 * of tiles / k key tiles instead, which take ceil(rest·k / slots)·tiles·τ / k
 * but cost a merge: a launch (about 2τ of the mma.sync kernel's 64-key tiles)
 * and a round trip of each part's f32 O through memory (about 0.02τ per part,
 * at head_dim 128 as at 48); tile_keys / 64 times fewer τ for tiles of
 * tile_keys keys. The k in 1..8 (at least 2 tiles per part) of least
 * estimated time is taken. */
static void plan_split(att_params *p, int64_t units, int64_t slots, int tile_keys) {
    const int64_t rest = units % slots;
    const double per_tau = 64.0 / tile_keys; /* the costs above in this kernel's τ */
    p->whole = (int)units;
    p->splits = 1;
    p->split_tiles = p->tiles;
    const int kmax = p->tiles / 2 < 8 ? p->tiles / 2 : 8;
    double best = p->tiles; /* k = 1 */
    int best_k = 1;
    for (int k = 2; k <= kmax; k++) {
        const double waves = (double)((rest * k + slots - 1) / slots) / k;
        const double t = (double)p->tiles * waves + (2.0 + 0.02 * (double)(rest * k)) * per_tau;
        if (t < best) best = t, best_k = k;
    }
    if (rest == 0 || best_k == 1) return;
    p->whole = (int)(units - rest);
    p->split_tiles = (p->tiles + best_k - 1) / best_k;
    p->splits = (p->tiles + p->split_tiles - 1) / p->split_tiles; /* every part non-empty */
}

/* Sets the mma.sync kernel's attributes for head_dim HD and reports how many
 * of its CTAs fit an SM (*per_sm). */
template <int HD> static lp_status mma_occupancy(const lp_backend *be, size_t smem, int *per_sm) {
    lp_cuda_state *st = lp_cuda(be);
    int smem_max = 0;
    LP_TRY(lp_cuda_check(be, cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, st->device),
                         "attention: cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)"));
    if ((size_t)smem_max < smem)
        return lp_fail(LP_ERR_UNSUPPORTED,
                       "attention (cuda): head_dim %d needs %zu bytes of shared memory per block, the device has %d",
                       HD, smem, smem_max);
    LP_TRY(lp_cuda_check(be, cudaFuncSetAttribute(attention_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                  (int)smem),
                         "attention: cudaFuncSetAttribute(MaxDynamicSharedMemorySize)"));
    /* all of the unified L1/shared storage as shared memory: two CTAs per SM
     * for head_dim 128 need 2 × 102 KiB */
    LP_TRY(lp_cuda_check(be, cudaFuncSetAttribute(attention_kernel<HD>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                                  (int)cudaSharedmemCarveoutMaxShared),
                         "attention: cudaFuncSetAttribute(PreferredSharedMemoryCarveout)"));
    return lp_cuda_check(be, cudaOccupancyMaxActiveBlocksPerMultiprocessor(per_sm, attention_kernel<HD>, ATT_THREADS,
                                                                          smem),
                         "attention: cudaOccupancyMaxActiveBlocksPerMultiprocessor");
}

/* Converts the f32 ranges (kv[i].k non-NULL) into the scratch and points
 * p->src[i] at them, then runs the attention with the wgmma kernel (wgmma,
 * HD 128) or the mma.sync one, and the merge of split parts, for head_dim HD;
 * p->part_* are set here from the scratch too. */
template <int HD>
static lp_status launch(const lp_backend *be, const kv_params *kv, att_params *p, int heads, bool wgmma) {
    lp_cuda_state *st = lp_cuda(be);
    const size_t smem = (size_t)(ATT_BQ + 4 * ATT_BK) * (HD + 8) * sizeof(__nv_bfloat16); /* mma.sync kernel */
    /* the kernel's attributes are set and its occupancy read once per backend */
    int *per_sm_cached = &st->att_per_sm[wgmma ? 4 : HD == 48 ? 0 : HD == 64 ? 1 : HD == 96 ? 2 : 3];
    if (!*per_sm_cached)
        LP_TRY(wgmma ? lp_cuda_attention_wgmma_occupancy(be, per_sm_cached)
                     : mma_occupancy<HD>(be, smem, per_sm_cached));
    const int per_sm = *per_sm_cached, sms = st->sms;
    if (per_sm < 1)
        return lp_fail(LP_ERR_UNSUPPORTED, "attention (cuda): the %s kernel for head_dim %d does not fit an SM",
                       wgmma ? "wgmma" : "mma.sync", HD);
    const int64_t units = (int64_t)p->nb * heads;
    plan_split(p, units, (int64_t)per_sm * sms, wgmma ? ATT_WG_BK : ATT_BK);

    /* scratch: K then V (bf16, [heads][n][HD] each) of every f32 range (each
     * block a multiple of 32 bytes), then the split parts' O (f32) and (m, l) */
    size_t kv_bytes = 0;
    for (int i = 0; i < ATT_MAX_RANGES; i++)
        if (kv[i].k) kv_bytes += 2 * (size_t)heads * (size_t)kv[i].n * HD * sizeof(__nv_bfloat16);
    kv_bytes = (kv_bytes + 255) & ~(size_t)255;
    const size_t parts = (size_t)(units - p->whole) * (size_t)p->splits;
    const size_t po_bytes = parts * ATT_BQ * HD * sizeof(float), ml_bytes = parts * ATT_BQ * sizeof(float2);
    unsigned char *scratch = NULL;
    LP_TRY(att_scratch(be, kv_bytes + po_bytes + ml_bytes, &scratch));
    p->part_o = reinterpret_cast<float *>(scratch + kv_bytes);            /* kv_bytes: a multiple of 256 */
    p->part_ml = reinterpret_cast<float *>(scratch + kv_bytes + po_bytes); /* po_bytes: a multiple of 512 */

    __nv_bfloat16 *seg = reinterpret_cast<__nv_bfloat16 *>(scratch);
    for (int i = 0; i < ATT_MAX_RANGES; i++) {
        if (!kv[i].k) continue;
        kv_params c = kv[i];
        const size_t half = (size_t)heads * (size_t)c.n * HD;
        c.kd = seg;
        c.vd = seg + half;
        seg += 2 * half;
        p->src[i].k = reinterpret_cast<const uint16_t *>(c.kd);
        p->src[i].v = reinterpret_cast<const uint16_t *>(c.vd);
        p->src[i].ld = HD;
        p->src[i].hstride = (int64_t)c.n * HD;
        kv_to_bf16_kernel<HD><<<(unsigned)c.n, KV_THREADS, 0, st->stream>>>(c);
        LP_TRY(lp_cuda_check_launch(be, "kv_to_bf16_kernel"));
    }
    /* an empty range is never selected for a real key; padded keys may select
     * it, so it borrows the other range's (valid) addresses */
    if (!p->n0) p->src[0] = p->src[1];
    if (p->n0 == p->Lk) p->src[1] = p->src[0];

    const int64_t ctas = p->whole + (units - p->whole) * p->splits;
    if (wgmma) {
        LP_TRY(lp_cuda_attention_wgmma_launch(be, p, ctas));
    } else {
        attention_kernel<HD><<<(unsigned)ctas, ATT_THREADS, smem, st->stream>>>(*p);
        LP_TRY(lp_cuda_check_launch(be, "attention_kernel"));
    }
    if (p->whole == units) return LP_OK;
    const int64_t items = (units - p->whole) * ATT_BQ * (HD / 4);
    const int64_t blocks = (items + KV_THREADS - 1) / KV_THREADS;
    combine_kernel<HD><<<(unsigned)(blocks < 65535 ? blocks : 65535), KV_THREADS, 0, st->stream>>>(*p, items);
    return lp_cuda_check_launch(be, "combine_kernel");
}

static int misaligned16(const void *ptr) { return ((uintptr_t)ptr & 15u) != 0; }


/* Whether the wgmma kernel can run head_dim on be's device with scale (it
 * takes the row maxima of the unscaled logits, so the scale must be positive;
 * it is built for sm_90a only). */
static bool wgmma_usable(const lp_backend *be, int head_dim, float scale) {
    return head_dim == 128 && lp_cuda(be)->cc == 90 && scale > 0.f && scale < INFINITY;
}

/* LIPAR_ATTENTION=mma, read on first use. */
static bool env_forces_mma(void) {
    static int forced = -1;
    if (forced < 0) {
        const char *e = getenv("LIPAR_ATTENTION");
        forced = e && !strcmp(e, "mma");
    }
    return forced != 0;
}

lp_cuda_att_kernel lp_cuda_attention_auto_kernel(const lp_backend *be, int head_dim, float scale) {
    if (env_forces_mma() || !wgmma_usable(be, head_dim, scale)) return LP_CUDA_ATT_MMA;
    return LP_CUDA_ATT_WGMMA;
}

lp_status lp_cuda_attention(const lp_backend *be, void *out, const void *q, int64_t Lq, int heads, int head_dim,
                            const lp_kv_range *ranges, int nranges, float scale) {
    return lp_cuda_attention_with(be, LP_CUDA_ATT_AUTO, out, q, Lq, heads, head_dim, ranges, nranges, scale);
}

/* The backend.h contract, with these requirements (LP_ERR_ARG otherwise,
 * LP_ERR_UNSUPPORTED for head_dim and nranges): head_dim 48, 64, 96 or 128;
 * 1 or 2 ranges; q, out and every non-empty range's k and v 16-byte aligned;
 * each range's ld >= heads·head_dim and a multiple of 16 bytes (4 floats, 8
 * bf16); fewer than 2^31 − 128 keys and query rows; out may be q itself but
 * may not otherwise overlap q, k or v. Lq = 0 does nothing; no keys at all is
 * an error, as on the CPU. bf16 ranges are read in place; f32 ranges are
 * converted into the backend's attention scratch (4·heads·n·head_dim bytes
 * for a range of n keys), which also holds the partial results of split
 * units (see plan_split). LP_CUDA_ATT_WGMMA where the wgmma kernel cannot run
 * (head_dim other than 128, a device other than compute capability 9.0, or
 * scale <= 0) is LP_ERR_UNSUPPORTED. */
lp_status lp_cuda_attention_with(const lp_backend *be, lp_cuda_att_kernel kernel, void *out, const void *q,
                                 int64_t Lq, int heads, int head_dim, const lp_kv_range *ranges, int nranges,
                                 float scale) {
    if (lp_cuda(be)->sticky != LP_OK)
        return lp_fail(lp_cuda(be)->sticky, "attention: an earlier CUDA operation failed (%s)",
                       lp_status_name(lp_cuda(be)->sticky));
    if (!ranges || nranges < 1) return lp_fail(LP_ERR_ARG, "attention: no key ranges (nranges %d)", nranges);
    if (nranges > ATT_MAX_RANGES)
        return lp_fail(LP_ERR_UNSUPPORTED, "attention (cuda): %d key ranges, at most %d supported", nranges,
                       ATT_MAX_RANGES);
    if (head_dim != 48 && head_dim != 64 && head_dim != 96 && head_dim != 128)
        return lp_fail(LP_ERR_UNSUPPORTED, "attention (cuda): head_dim %d (supported: 48, 64, 96, 128)", head_dim);
    if (heads < 1 || heads > 65535) return lp_fail(LP_ERR_ARG, "attention: %d heads (1..65535)", heads);
    if (Lq < 0 || Lq > INT32_MAX) return lp_fail(LP_ERR_ARG, "attention: Lq %lld out of range", (long long)Lq);
    if (kernel == LP_CUDA_ATT_AUTO) kernel = lp_cuda_attention_auto_kernel(be, head_dim, scale);
    const bool wgmma = kernel == LP_CUDA_ATT_WGMMA;
    if (wgmma) {
        if (!wgmma_usable(be, head_dim, scale))
            return lp_fail(LP_ERR_UNSUPPORTED,
                           "attention (cuda): the wgmma kernel needs head_dim 128, a device of compute capability "
                           "9.0 and a positive scale (head_dim %d, scale %g)",
                           head_dim, (double)scale);
    }
    const int bk = wgmma ? ATT_WG_BK : ATT_BK; /* keys per tile */
    const int64_t width = (int64_t)heads * head_dim;
    int64_t Lk = 0;
    att_params p;
    kv_params kv[ATT_MAX_RANGES];
    for (int i = 0; i < ATT_MAX_RANGES; i++) {
        p.src[i].k = p.src[i].v = NULL;
        p.src[i].ld = p.src[i].hstride = 0;
        kv[i].k = kv[i].v = NULL;
    }
    for (int i = 0; i < nranges; i++) {
        const lp_kv_range *R = &ranges[i];
        if (R->n < 0 || R->n > INT32_MAX - ATT_WG_BK)
            return lp_fail(LP_ERR_ARG, "attention: key range %d has %lld rows", i, (long long)R->n);
        Lk += R->n;
        if (!R->n) continue;
        if (!R->k || !R->v || misaligned16(R->k) || misaligned16(R->v))
            return lp_fail(LP_ERR_ARG, "attention (cuda): key range %d: k/v must be non-NULL and 16-byte aligned", i);
        const int per16 = R->bf16 ? 8 : 4; /* elements in 16 bytes */
        if (R->ld < width || R->ld % per16)
            return lp_fail(LP_ERR_ARG,
                           "attention (cuda): key range %d (%s): row stride %lld must be >= heads*head_dim (%lld) and "
                           "a multiple of %d elements (16 bytes)",
                           i, R->bf16 ? "bf16" : "f32", (long long)R->ld, (long long)width, per16);
        if (R->bf16) {
            p.src[i].k = static_cast<const uint16_t *>(R->k);
            p.src[i].v = static_cast<const uint16_t *>(R->v);
            p.src[i].ld = R->ld;
            p.src[i].hstride = head_dim;
        } else {
            kv[i].k = static_cast<const float *>(R->k);
            kv[i].v = static_cast<const float *>(R->v);
            kv[i].ld = R->ld;
            kv[i].n = (int)R->n;
            kv[i].width4 = (int)(width / 4);
        }
    }
    if (Lk == 0) return lp_fail(LP_ERR_ARG, "attention over an empty key set");
    if (Lk > INT32_MAX - ATT_WG_BK) return lp_fail(LP_ERR_ARG, "attention: %lld keys, too many", (long long)Lk);
    if (Lq == 0) return LP_OK;
    if (!q || !out || misaligned16(q) || misaligned16(out))
        return lp_fail(LP_ERR_ARG, "attention (cuda): q and out must be non-NULL and 16-byte aligned");
    const int64_t qbytes = Lq * width * (int64_t)sizeof(__nv_bfloat16);
    if (out != q && lp_cuda_overlap(out, qbytes, q, qbytes))
        return lp_fail(LP_ERR_ARG, "attention (cuda): out partially overlaps q");
    for (int i = 0; i < nranges; i++) {
        const lp_kv_range *R = &ranges[i];
        const int64_t span = R->n ? ((R->n - 1) * R->ld + width) * (R->bf16 ? 2 : 4) : 0; /* bytes */
        if (R->n && (lp_cuda_overlap(out, qbytes, R->k, span) || lp_cuda_overlap(out, qbytes, R->v, span)))
            return lp_fail(LP_ERR_ARG, "attention (cuda): out overlaps the keys/values of range %d", i);
    }
    const int tiles = (int)((Lk + bk - 1) / bk);
    p.q = static_cast<const uint16_t *>(q);
    p.out = static_cast<uint16_t *>(out);
    p.Lq = (int)Lq;
    p.ldq = (int)width;
    p.n0 = (int)ranges[0].n;
    p.Lk = (int)Lk;
    p.tiles = tiles;
    p.last_valid = (int)(Lk - (int64_t)(tiles - 1) * bk);
    p.nb = (int)((Lq + ATT_BQ - 1) / ATT_BQ);
    if ((int64_t)p.nb * heads > INT32_MAX / 8)
        return lp_fail(LP_ERR_ARG, "attention (cuda): %lld query rows x %d heads, too many", (long long)Lq, heads);
    p.qscale = scale * 1.4426950408889634f; /* log2(e) */
    switch (head_dim) {
    case 48: return launch<48>(be, kv, &p, heads, false);
    case 64: return launch<64>(be, kv, &p, heads, false);
    case 96: return launch<96>(be, kv, &p, heads, false);
    default: return launch<128>(be, kv, &p, heads, wgmma);
    }
}
