/* The attention kernel for head_dim 128 on Hopper (sm_90a): a flash-attention
 * forward pass on the warpgroup tensor-core instructions (wgmma.mma_async,
 * bf16 operands, fp32 accumulation). attention.cu checks the arguments,
 * converts f32 K/V, plans the split of the last wave and merges split parts;
 * this file runs one CTA per unit or part of unit exactly as its mma.sync
 * kernel does (att_params in attention.h), with other means.
 *
 * CTA: 384 threads, three warpgroups. Warpgroups 0 and 1 are consumers, each
 * owning 64 of the CTA's 128 query rows; warpgroup 2 is the producer, of
 * which one thread issues every copy, and which hands most of its registers
 * to the consumers (setmaxnreg: 24 producer, 240 consumer registers per
 * thread). The copies are TMA (cp.async.bulk.tensor.3d, 128-byte swizzle,
 * which writes exactly the layout below): 2 boxes of 64 dims × 128 rows per
 * tile (128 keys) of K, of V, and for Q (once). Each operand has a tensor map
 * (built on the host per call) whose dimensions are (dim, head, row), or
 * (dim, row, head) for the f32 ranges' head-major scratch (see encode_map),
 * with as many rows as the range (or Lq) has, so that the TMA fills rows past
 * the end with zeros. A tile therefore lies within one range: range 0 has
 * tiles0 = ceil(n0 / 128) tiles, its last one partial, then come range 1's
 * tiles; that is attention.cu's tile count (p.tiles, whose tiles may straddle
 * the ranges) or one more, which the last split part takes. Keys past a
 * range's end get -inf, in whichever tile.
 *
 * The key tiles go through a ring of AW_STAGES (3) shared-memory stages. K
 * and V of a stage have their own mbarriers: full_* (1 arrival, the
 * producer's arrive.expect_tx of the tile's 32 KiB, and those bytes) and
 * empty_* (lane 0 of each of the 8 consumer warps arrives once its wgmma
 * reading the buffer are done); Q has a full barrier of its own. Use u (0, 1,
 * ...) of a stage completes phase u of its barriers, so the consumers wait on
 * full with parity u & 1 and the producer, before refilling, on empty with
 * parity (u − 1) & 1: K tile j + 3 is requested as soon as both consumer
 * warpgroups are done with K tile j, about two tiles of work before it is
 * needed (likewise V). There are no CTA-wide barriers after setup.
 *
 * Per consumer warpgroup and key tile j (intra-warpgroup overlap): issue
 * S_j = Q·K_jᵀ (8 × m64n128k16, A = Q and B = K from shared memory), then
 * O += P_{j−1}·V_{j−1} (8 × m64n128k16, A = P from registers, B = V from
 * shared memory); wait for S_j only and run the online softmax on it while
 * the tensor cores do P·V; then wait for P·V, rescale O when a row max grew
 * (lazily, as the mma.sync kernel: only by more than ATT_RESCALE), and round
 * P_j to bf16 in registers for the next tile. Logits stay unscaled in S; the
 * softmax takes row maxima of the raw logits and computes
 * 2^(s·qscale − m) with one fma (hence scale > 0, checked by the host).
 *
 * Ping-pong (as FlashAttention-3): the two consumer warpgroups issue their
 * GEMMs in turns, each waiting on its named barrier (1 + wg) before it issues
 * and arriving on the other's (2 − wg) after, so that the tensor cores run
 * warpgroup 0's S and P·V, then warpgroup 1's, ... and each warpgroup's
 * softmax runs while the other's GEMMs (and its own P·V) keep the tensor
 * cores busy. Warpgroup 0 does not wait before its first turn and warpgroup 1
 * does not arrive after its last, so that both barriers end complete (n − 1
 * and n phases for a CTA of n tiles). The last tile's P·V is outside the
 * turns.
 *
 * Shared memory (from a 1024-byte aligned base): Q [128 rows][128], then K
 * and V of each stage [128 keys][128]; each as two column blocks of 64 bf16
 * (128 bytes a row, 16 KiB a block), rows at 128 bytes, in the 128-byte
 * swizzle: the 16-byte chunk c (0..7) of row r is stored at chunk c ^ (r % 8)
 * (bits 4-6 of the address XOR bits 7-9), the layout the wgmma descriptors'
 * swizzle mode 1 reads. Descriptors (64 bits): start address >> 4 in bits
 * 0-13, leading byte offset >> 4 in 16-29, stride byte offset >> 4 in 32-45,
 * swizzle mode in 62-63 (1 = 128 bytes); base offset 0 (every 8-row atom
 * starts 1024-byte aligned).
 * - Q (A of S = Q·Kᵀ) and K (B of S, element (k = dim, n = key)) are
 *   "K-major" (the reduced dim is contiguous): the 8-row groups of the M or N
 *   dimension are 1024 bytes apart (stride byte offset), the leading byte
 *   offset is unused (set to 16). Step kk (dims 16kk..16kk+15) starts at
 *   column block kk / 4, byte 32·(kk % 4) of the row, inside the swizzle atom.
 * - V (B of O = P·V, element (k = key, n = dim)) is "MN-major" (n
 *   contiguous), transpose bit 1: its 64-dim column blocks (n) are 16 KiB
 *   apart (leading byte offset), the 8-key groups (k) 1024 bytes apart
 *   (stride byte offset). Step kk (keys 16kk..16kk+15) starts 16kk rows in.
 *
 * Fragments (PTX ISA, wgmma .m64nNk16; warp w of the warpgroup holds rows
 * 16w..16w+15, g = lane / 4, t = lane % 4): accumulator d[4i + e] is row g
 * (e = 0, 1) or g + 8 (e = 2, 3), column 8i + 2t + (e & 1); the register A
 * fragment of step kk is a0 = (row g, cols 16kk + 2t, +1), a1 = (row g + 8,
 * the same), a2 = (row g, cols 16kk + 8 + 2t, +1), a3 = (row g + 8, the
 * same), i.e. the accumulator pairs of column blocks 2kk and 2kk + 1.
 *
 * Registers per consumer thread: O 64 and S 64 fp32, P 32 (bf16 pairs). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cuda.h> /* CUtensorMap and its enums only: the encoder comes through the runtime */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include "attention.h"
#include "cuda_internal.h"

#define AW_HD 128
#define AW_BK ATT_WG_BK /* keys per tile */
#define AW_STAGES 3
#define AW_CONSUMERS 2 /* warpgroups of 64 query rows */
#define AW_THREADS (AW_CONSUMERS * 128 + 128) /* + the producer warpgroup */
/* registers per thread: ptxas gives every thread AW_REGS (65536 / 384,
 * rounded down to a multiple of 8); the producer warpgroup then hands
 * AW_REGS − AW_PRODUCER_REGS of its own to the consumers (setmaxnreg), which
 * keep the per-CTA total: 128·24 + 256·240 = 384·168 */
#define AW_REGS 168
#define AW_PRODUCER_REGS 24
#define AW_CONSUMER_REGS 240
#define AW_BLOCK_BYTES (128 * 128)            /* 128 rows of 64 bf16: one column block */
#define AW_TILE_BYTES (2 * AW_BLOCK_BYTES)    /* 128 rows of 128 bf16 */
#define AW_K_OFF AW_TILE_BYTES                /* after Q */
#define AW_V_OFF (AW_K_OFF + AW_STAGES * AW_TILE_BYTES)
#define AW_BAR_OFF (AW_V_OFF + AW_STAGES * AW_TILE_BYTES)
/* the barriers: 4 per stage and Q's; + the alignment of the base */
#define AW_SMEM (AW_BAR_OFF + (4 * AW_STAGES + 1) * 8 + 1024)

static_assert(ATT_BQ == AW_CONSUMERS * 64, "a CTA covers one row block");
static_assert(AW_BK == 128 && AW_HD == 128, "the tile layout assumes 128 keys by 128 dims");
static_assert(128 * AW_PRODUCER_REGS + 128 * AW_CONSUMERS * AW_CONSUMER_REGS == AW_THREADS * AW_REGS,
              "setmaxnreg must keep the CTA's register total");

/* The kernel's arguments: the tensor maps of Q and of K and V of each range
 * (those of an empty range unset, never used), their dimension orders, and
 * the tile split of the ranges (see the top of the file). */
typedef struct {
    CUtensorMap q, k0, v0, k1, v1;
    att_params a;
    int head_major0, head_major1; /* range 0, 1: dimensions (dim, row, head) rather than (dim, head, row) */
    int tiles0;                   /* tiles of range 0: ceil(n0 / AW_BK) */
    int vtiles;                   /* tiles of both ranges (p.tiles or p.tiles + 1) */
} aw_params;

/* Device code exists for sm_90a only (the compute_80 PTX gets an empty body;
 * the host never launches it there). */
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define AW_DEVICE 1
#else
#define AW_DEVICE 0
#endif

#if AW_DEVICE

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi); /* .x (low half) = lo */
    return *reinterpret_cast<uint32_t *>(&h);
}

__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}

/* Waits until the phase of bar with the given parity has completed (this
 * thread). */
__device__ __forceinline__ void mbar_spin(uint32_t bar, uint32_t parity) {
    uint32_t done;
    do {
        asm volatile("{\n\t.reg .pred p;\n\t"
                     "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
                     "selp.u32 %0, 1, 0, p;\n\t}"
                     : "=r"(done)
                     : "r"(bar), "r"(parity)
                     : "memory");
    } while (!done);
}

/* mbar_spin, and the warp leaves converged (wgmma are warp-synchronous). */
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    mbar_spin(bar, parity);
    __syncwarp();
}

/* An arrival on bar that also expects `bytes` more bytes of asynchronous
 * copies (TMA) in the current phase. */
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}

/* TMA: the box of tensor map `map` (a generic address of a __grid_constant__
 * parameter) at coordinates (c0, c1, c2) into shared memory at dst, its
 * bytes counted on barrier bar. */
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const CUtensorMap *map, uint32_t bar, int c0, int c1,
                                            int c2) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, "
                 "%4}], [%5];" ::"r"(dst),
                 "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
                 : "memory");
}

/* A consumer warp's release of a buffer (after the wgmma that read it are
 * done): one arrival per warp. */
__device__ __forceinline__ void release(uint32_t bar, int lane) {
    if (lane == 0) mbar_arrive(bar);
    __syncwarp();
}

/* The consumers' turns: named barrier 1 + w (w = 0, 1) of 256 threads, the
 * 128 of consumer warpgroup w waiting for its turn (turn_wait(w)), the 128
 * of the other one arriving once its GEMMs are issued (turn_pass(w)). The
 * ids are immediates, so that ptxas reserves only these barriers. */
__device__ __forceinline__ void turn_wait(int w) {
    if (w == 0) asm volatile("bar.sync 1, 256;" ::: "memory");
    else asm volatile("bar.sync 2, 256;" ::: "memory");
}
__device__ __forceinline__ void turn_pass(int w) {
    if (w == 0) asm volatile("bar.arrive 1, 256;" ::: "memory");
    else asm volatile("bar.arrive 2, 256;" ::: "memory");
}

/* wgmma ordering: fence (register accesses before it are done before later
 * wgmma use the registers), commit (the wgmma issued so far form a group),
 * wait (at most N groups of this thread still pending). */
__device__ __forceinline__ void wg_fence(void) { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit(void) { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_wait(void) {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

/* Compiler-level fences: the registers are "rewritten" here, so that no
 * access to them moves across (wgmma work on them asynchronously between
 * issue and wait, which the compiler does not see). */
__device__ __forceinline__ void reg_fence(float (&x)[64]) {
#pragma unroll
    for (int i = 0; i < 64; i++) asm volatile("" : "+f"(x[i])::"memory");
}
__device__ __forceinline__ void reg_fence(uint32_t (&x)[32]) {
#pragma unroll
    for (int i = 0; i < 32; i++) asm volatile("" : "+r"(x[i])::"memory");
}

#define AW_D_REGS                                                                                                  \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, " \
    "%24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, "   \
    "%46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define AW_D8(i)                                                                                                   \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]),     \
        "+f"(d[i + 7])
#define AW_D_OPS AW_D8(0), AW_D8(8), AW_D8(16), AW_D8(24), AW_D8(32), AW_D8(40), AW_D8(48), AW_D8(56)

/* d (64×128 fp32) = a·b (+ d when accumulate): A and B from shared memory,
 * both K-major (transpose bits 0). */
__device__ __forceinline__ void wgmma_ss(float (&d)[64], uint64_t a, uint64_t b, int accumulate) {
    asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %66, 0;\n\t"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " AW_D_REGS ", %64, %65, p, 1, 1, 0, 0;\n\t}"
                 : AW_D_OPS
                 : "l"(a), "l"(b), "r"(accumulate)
                 : "memory");
}

/* d (64×128 fp32) += a·b: A (64×16) from registers, B from shared memory,
 * MN-major (transpose bit 1). */
__device__ __forceinline__ void wgmma_rs(float (&d)[64], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint64_t b) {
    asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %69, 0;\n\t"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " AW_D_REGS
                 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n\t}"
                 : AW_D_OPS
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(b), "r"(1)
                 : "memory");
}

/* A 128-byte-swizzle matrix descriptor (see the top of the file). */
__device__ __forceinline__ uint64_t sw128_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((saddr & 0x3FFFFu) >> 4) | (uint64_t)(lbo >> 4) << 16 | (uint64_t)(sbo >> 4) << 32 |
           (uint64_t)1 << 62;
}

/* The online softmax of one tile's S (this thread's rows g and g + 8, index
 * h = 0, 1) with `valid` real keys in the tile: P = 2^(S·qscale − m) in place,
 * m and l updated; returns whether the warp raised a row base, with corr[h]
 * the factor O's row h must be scaled by (1 when unchanged). */
__device__ __forceinline__ bool online_softmax(float (&s)[64], float (&m)[2], float (&l)[2], float (&corr)[2],
                                               float qscale, int valid, int t) {
    if (valid < AW_BK) {
#pragma unroll
        for (int i = 0; i < 16; i++) {
            const int c = i * 8 + 2 * t;
            if (c >= valid) s[4 * i] = s[4 * i + 2] = -INFINITY;
            if (c + 1 >= valid) s[4 * i + 1] = s[4 * i + 3] = -INFINITY;
        }
    }
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int i = 0; i < 16; i++) {
        mx[0] = fmaxf(mx[0], fmaxf(s[4 * i], s[4 * i + 1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[4 * i + 2], s[4 * i + 3]));
    }
    bool grow = false;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        /* the 4 threads of a quad share a row */
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
        mx[h] *= qscale; /* log2 domain (qscale > 0 keeps the max) */
        grow |= mx[h] > m[h] + ATT_RESCALE;
        corr[h] = 1.f;
    }
    const bool any = __any_sync(0xffffffffu, grow);
    if (any) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const float mn = fmaxf(m[h], mx[h]);
            corr[h] = m[h] == -INFINITY ? 1.f : fast_exp2(m[h] - mn);
            m[h] = mn;
            l[h] *= corr[h];
        }
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
        /* a row whose logits are all -inf so far subtracts 0 (no inf − inf) */
        const float nbase = m[h] == -INFINITY ? 0.f : -m[h];
#pragma unroll
        for (int i = 0; i < 16; i++) {
            s[4 * i + 2 * h] = fast_exp2(fmaf(s[4 * i + 2 * h], qscale, nbase));
            s[4 * i + 2 * h + 1] = fast_exp2(fmaf(s[4 * i + 2 * h + 1], qscale, nbase));
            l[h] += s[4 * i + 2 * h] + s[4 * i + 2 * h + 1];
        }
    }
    return any;
}

/* P (fp32 accumulator layout) → bf16 A fragments: step kk takes column
 * blocks 2kk (a0: row g, a1: row g + 8) and 2kk + 1 (a2, a3). */
__device__ __forceinline__ void pack_p(uint32_t (&pf)[32], const float (&s)[64]) {
#pragma unroll
    for (int kk = 0; kk < 8; kk++) {
        pf[4 * kk] = pack_bf16(s[8 * kk], s[8 * kk + 1]);
        pf[4 * kk + 1] = pack_bf16(s[8 * kk + 2], s[8 * kk + 3]);
        pf[4 * kk + 2] = pack_bf16(s[8 * kk + 4], s[8 * kk + 5]);
        pf[4 * kk + 3] = pack_bf16(s[8 * kk + 6], s[8 * kk + 7]);
    }
}

/* Issues S = Q·Kᵀ (dq: this warpgroup's Q rows, dk: a K tile). */
__device__ __forceinline__ void issue_qk(float (&s)[64], uint64_t dq, uint64_t dk) {
#pragma unroll
    for (int kk = 0; kk < AW_HD / 16; kk++) {
        const uint64_t step = (uint64_t)(((kk >> 2) * AW_BLOCK_BYTES + (kk & 3) * 32) >> 4);
        wgmma_ss(s, dq + step, dk + step, kk > 0);
    }
}

/* Issues O += P·V (dv: a V tile). */
__device__ __forceinline__ void issue_pv(float (&o)[64], const uint32_t (&pf)[32], uint64_t dv) {
#pragma unroll
    for (int kk = 0; kk < AW_BK / 16; kk++)
        wgmma_rs(o, pf[4 * kk], pf[4 * kk + 1], pf[4 * kk + 2], pf[4 * kk + 3], dv + (uint64_t)((kk * 16 * 128) >> 4));
}

/* Tile v (of both ranges): its range (r1: range 1) and its first row there. */
__device__ __forceinline__ int aw_row0(const aw_params &P, int v, bool &r1) {
    r1 = v >= P.tiles0;
    return (r1 ? v - P.tiles0 : v) * AW_BK;
}

/* The real keys of tile v (1..AW_BK; the rest lie past its range's end). */
__device__ __forceinline__ int aw_valid(const aw_params &P, int v) {
    bool r1;
    const int row0 = aw_row0(P, v, r1);
    return min(AW_BK, (r1 ? P.a.Lk - P.a.n0 : P.a.n0) - row0);
}

/* The end of a CTA (this thread's rows lrow0 and lrow0 + 8 of the block,
 * O, m and its part of l): a whole unit (part < 0) stores O / l as bf16
 * (rows past Lq skipped); a split part leaves O and (m, l) of all its rows
 * (f32) for the merge. */
__device__ __forceinline__ void store_o(const att_params &p, const float (&o)[64], const float (&m)[2],
                                        const float (&l)[2], int part, int64_t qrow0, int64_t hoff, int lrow0,
                                        int t) {
    const int64_t pidx = (int64_t)blockIdx.x - p.whole;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        float sum = l[h];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const int lrow = lrow0 + 8 * h; /* row within the block */
        if (part < 0) {
            if (qrow0 + lrow >= p.Lq) continue;
            uint16_t *dst = p.out + (qrow0 + lrow) * p.ldq + hoff;
            const float inv = 1.f / sum;
#pragma unroll
            for (int i = 0; i < 16; i++)
                *reinterpret_cast<uint32_t *>(dst + i * 8 + 2 * t) =
                    pack_bf16(o[4 * i + 2 * h] * inv, o[4 * i + 2 * h + 1] * inv);
        } else {
            float *dst = p.part_o + (pidx * ATT_BQ + lrow) * AW_HD;
            if (t == 0) reinterpret_cast<float2 *>(p.part_ml)[pidx * ATT_BQ + lrow] = make_float2(m[h], sum);
#pragma unroll
            for (int i = 0; i < 16; i++)
                *reinterpret_cast<float2 *>(dst + i * 8 + 2 * t) = make_float2(o[4 * i + 2 * h], o[4 * i + 2 * h + 1]);
        }
    }
}

#endif /* AW_DEVICE */

/* The kernel (see the top of the file). */
__global__ void __launch_bounds__(AW_THREADS, 1) attention_wgmma_kernel(const __grid_constant__ aw_params P) {
#if AW_DEVICE
    const att_params &p = P.a;
    extern __shared__ unsigned char aw_smem[];
    const uint32_t base = ((uint32_t)__cvta_generic_to_shared(aw_smem) + 1023u) & ~1023u;
    const uint32_t q_a = base, k_a = base + AW_K_OFF, v_a = base + AW_V_OFF;
    /* barriers: full_k[s], full_v[s], empty_k[s], empty_v[s], then Q's */
    const uint32_t full_k = base + AW_BAR_OFF, full_v = full_k + 8 * AW_STAGES;
    const uint32_t empty_k = full_v + 8 * AW_STAGES, empty_v = empty_k + 8 * AW_STAGES;
    const uint32_t full_q = empty_v + 8 * AW_STAGES;

    const int tid = (int)threadIdx.x, warp = tid >> 5, lane = tid & 31;
    /* this CTA's unit, tiles [t0, t1) of both ranges (P.vtiles in all) and
     * split part (-1: whole unit); the last part takes the tiles past
     * p.tiles */
    int unit = (int)blockIdx.x, part = -1, t0 = 0, t1 = P.vtiles;
    if (unit >= p.whole) {
        part = (unit - p.whole) % p.splits;
        unit = p.whole + (unit - p.whole) / p.splits;
        t0 = part * p.split_tiles;
        t1 = part == p.splits - 1 ? P.vtiles : t0 + p.split_tiles;
    }
    const int n = t1 - t0;
    const int head = unit / p.nb;
    const int64_t qrow0 = (int64_t)(unit % p.nb) * ATT_BQ;
    const int64_t hoff = (int64_t)head * AW_HD;

    if (tid == 0) {
        for (int s = 0; s < AW_STAGES; s++) {
            mbar_init(full_k + 8 * s, 1);
            mbar_init(full_v + 8 * s, 1);
            mbar_init(empty_k + 8 * s, 4 * AW_CONSUMERS);
            mbar_init(empty_v + 8 * s, 4 * AW_CONSUMERS);
        }
        mbar_init(full_q, 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();

    if (warp >= 4 * AW_CONSUMERS) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(AW_PRODUCER_REGS));
        if (tid != 128 * AW_CONSUMERS) return; /* one thread issues every copy */
        /* Q: rows qrow0.. of this head (dimensions (dim, head, row)) */
        mbar_arrive_expect_tx(full_q, AW_TILE_BYTES);
        tma_load_3d(q_a, &P.q, full_q, 0, head, (int)qrow0);
        tma_load_3d(q_a + AW_BLOCK_BYTES, &P.q, full_q, 64, head, (int)qrow0);
        for (int it = 0; it < n; it++) {
            const int s = it % AW_STAGES;
            const uint32_t released = ((it / AW_STAGES) & 1) ^ 1; /* parity of the previous use's release */
            bool r1;
            const int row0 = aw_row0(P, t0 + it, r1);
            const bool hm = r1 ? P.head_major1 : P.head_major0;
            const int c1 = hm ? row0 : head, c2 = hm ? head : row0;
            const CUtensorMap *mk = r1 ? &P.k1 : &P.k0, *mv = r1 ? &P.v1 : &P.v0;
            const uint32_t kd = k_a + s * AW_TILE_BYTES, vd = v_a + s * AW_TILE_BYTES;
            if (it >= AW_STAGES) mbar_spin(empty_k + 8 * s, released);
            mbar_arrive_expect_tx(full_k + 8 * s, AW_TILE_BYTES);
            tma_load_3d(kd, mk, full_k + 8 * s, 0, c1, c2);
            tma_load_3d(kd + AW_BLOCK_BYTES, mk, full_k + 8 * s, 64, c1, c2);
            if (it >= AW_STAGES) mbar_spin(empty_v + 8 * s, released);
            mbar_arrive_expect_tx(full_v + 8 * s, AW_TILE_BYTES);
            tma_load_3d(vd, mv, full_v + 8 * s, 0, c1, c2);
            tma_load_3d(vd + AW_BLOCK_BYTES, mv, full_v + 8 * s, 64, c1, c2);
        }
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(AW_CONSUMER_REGS));

    const int wg = warp >> 2, wq = warp & 3, g = lane >> 2, t = lane & 3;
    const int other = 1 - wg; /* the other consumer warpgroup, whose turn follows this one's */
    const uint64_t dq = sw128_desc(q_a + wg * 64 * 128, 16, 1024);
    const uint64_t dk = sw128_desc(k_a, 16, 1024);
    const uint64_t dv = sw128_desc(v_a, AW_BLOCK_BYTES, 1024);
    const uint64_t dstage = AW_TILE_BYTES >> 4; /* descriptor step from one stage to the next */

    float o[64], s[64], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, corr[2];
    uint32_t pf[32];
#pragma unroll
    for (int i = 0; i < 64; i++) o[i] = s[i] = 0.f; /* (s only so that it is never read undefined) */

    /* tile t0: S only (warpgroup 0's first turn needs no wait) */
    mbar_wait(full_q, 0);
    mbar_wait(full_k, 0);
    if (wg == 1) turn_wait(wg);
    reg_fence(s);
    wg_fence();
    issue_qk(s, dq, dk);
    wg_commit();
    if (wg == 0 || n > 1) turn_pass(other);
    wg_wait<0>();
    reg_fence(s);
    release(empty_k, lane);
    online_softmax(s, m, l, corr, p.qscale, aw_valid(P, t0), t);
    pack_p(pf, s);

    for (int it = 1; it < n; it++) {
        const int sc = it % AW_STAGES, sp = (it - 1) % AW_STAGES;
        mbar_wait(full_k + 8 * sc, (it / AW_STAGES) & 1);
        mbar_wait(full_v + 8 * sp, ((it - 1) / AW_STAGES) & 1);
        turn_wait(wg);
        reg_fence(s);
        reg_fence(o);
        reg_fence(pf);
        wg_fence();
        issue_qk(s, dq, dk + sc * dstage);
        wg_commit();
        issue_pv(o, pf, dv + sp * dstage);
        wg_commit();
        if (wg == 0 || it < n - 1) turn_pass(other); /* warpgroup 1's last turn passes on to nobody */
        wg_wait<1>(); /* S done, P·V may still run */
        reg_fence(s);
        release(empty_k + 8 * sc, lane);
        const bool rescale = online_softmax(s, m, l, corr, p.qscale, aw_valid(P, t0 + it), t);
        wg_wait<0>();
        /* s too: its P must not be packed into pf before P·V is done with pf */
        reg_fence(o);
        reg_fence(s);
        reg_fence(pf);
        release(empty_v + 8 * sp, lane);
        if (rescale) {
#pragma unroll
            for (int i = 0; i < 64; i++) o[i] *= corr[(i >> 1) & 1];
        }
        pack_p(pf, s);
    }

    /* the last tile's P·V (outside the turns) */
    {
        const int sl = (n - 1) % AW_STAGES;
        mbar_wait(full_v + 8 * sl, ((n - 1) / AW_STAGES) & 1);
        reg_fence(o);
        reg_fence(pf);
        wg_fence();
        issue_pv(o, pf, dv + sl * dstage);
        wg_commit();
        wg_wait<0>();
        reg_fence(o);
        release(empty_v + 8 * sl, lane);
    }

    store_o(p, o, m, l, part, qrow0, hoff, wg * 64 + wq * 16 + g, t);
#endif
}

/* Sets the kernel's attributes and reports how many of its CTAs fit an SM. */
lp_status lp_cuda_attention_wgmma_occupancy(const lp_backend *be, int *per_sm) {
    const void *kernel = reinterpret_cast<const void *>(attention_wgmma_kernel);
    lp_cuda_state *st = lp_cuda(be);
    int smem_max = 0;
    *per_sm = 0;
    LP_TRY(lp_cuda_check(be, cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, st->device),
                         "attention: cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)"));
    if (smem_max < AW_SMEM)
        return lp_fail(LP_ERR_UNSUPPORTED,
                       "attention (cuda): the wgmma kernel needs %d bytes of shared memory per block, "
                       "the device has %d",
                       AW_SMEM, smem_max);
    /* setmaxnreg.inc would wait forever if the CTA held fewer registers than
     * the counts above assume */
    cudaFuncAttributes fa;
    LP_TRY(lp_cuda_check(be, cudaFuncGetAttributes(&fa, kernel), "attention: cudaFuncGetAttributes (wgmma)"));
    if (fa.numRegs != AW_REGS)
        return lp_fail(LP_ERR_UNSUPPORTED,
                       "attention (cuda): the wgmma kernel was built with %d registers per thread, %d expected",
                       fa.numRegs, AW_REGS);
    LP_TRY(lp_cuda_check(be, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, AW_SMEM),
                         "attention: cudaFuncSetAttribute(MaxDynamicSharedMemorySize) (wgmma)"));
    return lp_cuda_check(be, cudaOccupancyMaxActiveBlocksPerMultiprocessor(per_sm, kernel, AW_THREADS, AW_SMEM),
                         "attention: cudaOccupancyMaxActiveBlocksPerMultiprocessor (wgmma)");
}

/* cuTensorMapEncodeTiled, from the driver through the runtime (no libcuda
 * link); NULL when the driver lacks it. */
static PFN_cuTensorMapEncodeTiled_v12000 lookup_encode(void) {
    void *fn = NULL;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) !=
            cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
        cudaGetLastError(); /* not sticky */
        fn = NULL;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
}

/* The tensor map of a bf16 operand whose element (row, head, dim) is at
 * base[row·ld + head·hstride + dim] (rows < rows, heads < heads, dims <
 * AW_HD), read in boxes of 64 dims × AW_BK rows of one head, 128-byte
 * swizzle, zeros past the last row. Dimensions (dim, head, row) where the
 * heads of a row lie within the row stride (the row-major cache), else (dim,
 * row, head) (*head_major = 1: the head-major f32 scratch), so that each
 * stride spans the dimensions before it. */
static lp_status encode_map(CUtensorMap *map, const uint16_t *base, int64_t rows, int heads, int64_t ld,
                            int64_t hstride, int *head_major, const char *what) {
    static const PFN_cuTensorMapEncodeTiled_v12000 encode = lookup_encode();
    if (!encode)
        return lp_fail(LP_ERR_UNSUPPORTED, "attention (cuda): the driver has no cuTensorMapEncodeTiled, which the "
                                           "wgmma kernel needs (LIPAR_ATTENTION=mma runs the mma.sync kernel)");
    const int hm = ld < hstride * heads;
    const cuuint64_t dim[3] = {AW_HD, (cuuint64_t)(hm ? rows : heads), (cuuint64_t)(hm ? heads : rows)};
    const cuuint64_t stride[2] = {(cuuint64_t)(hm ? ld : hstride) * 2, (cuuint64_t)(hm ? hstride : ld) * 2}; /* bytes */
    const cuuint32_t box[3] = {64, hm ? (cuuint32_t)AW_BK : 1u, hm ? 1u : (cuuint32_t)AW_BK};
    const cuuint32_t estride[3] = {1, 1, 1};
    const CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<uint16_t *>(base), dim, stride, box,
                              estride, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                              CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS)
        return lp_fail(LP_ERR_UNSUPPORTED,
                       "attention (cuda): cuTensorMapEncodeTiled (%s: %lld rows, %d heads, ld %lld, head stride %lld) "
                       "failed with %d (LIPAR_ATTENTION=mma runs the mma.sync kernel)",
                       what, (long long)rows, heads, (long long)ld, (long long)hstride, (int)r);
    *head_major = hm;
    return LP_OK;
}

lp_status lp_cuda_attention_wgmma_launch(const lp_backend *be, const att_params *p, int64_t ctas) {
    aw_params P;
    memset(&P, 0, sizeof P);
    P.a = *p;
    const int heads = p->ldq / AW_HD;
    const int64_t n[2] = {p->n0, (int64_t)p->Lk - p->n0};
    int q_major = 0; /* 0: q is row-major, ldq = heads·AW_HD */
    LP_TRY(encode_map(&P.q, p->q, p->Lq, heads, p->ldq, AW_HD, &q_major, "q"));
    for (int r = 0; r < ATT_MAX_RANGES; r++) {
        if (!n[r]) continue; /* no tile of an empty range */
        const att_src *src = &p->src[r];
        int *major = r ? &P.head_major1 : &P.head_major0; /* K and V of a range share strides */
        LP_TRY(encode_map(r ? &P.k1 : &P.k0, src->k, n[r], heads, src->ld, src->hstride, major, "k"));
        LP_TRY(encode_map(r ? &P.v1 : &P.v0, src->v, n[r], heads, src->ld, src->hstride, major, "v"));
    }
    P.tiles0 = (int)((n[0] + AW_BK - 1) / AW_BK);
    P.vtiles = P.tiles0 + (int)((n[1] + AW_BK - 1) / AW_BK);
    attention_wgmma_kernel<<<(unsigned)ctas, AW_THREADS, AW_SMEM, lp_cuda(be)->stream>>>(P);
    return lp_cuda_check_launch(be, "attention_wgmma_kernel");
}
