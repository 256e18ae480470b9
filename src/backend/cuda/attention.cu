/* Scaled dot-product attention on the GPU (the backend.h `attention` op), a
 * flash-attention forward pass on bf16 tensor cores (mma.sync m16n8k16, fp32
 * accumulation):
 *
 * - one CTA of 8 warps per (block of 128 query rows, head); each warp owns 16
 *   query rows, whose Q fragments (pre-multiplied by scale·log2 e, rounded to
 *   bf16) stay in registers for the whole key loop;
 * - the keys of all ranges are walked in tiles of 64 keys (range 0 first;
 *   a tile never straddles two ranges, the last tile of a range is partial);
 *   the f32 K/V rows of the next tile are loaded into registers while the
 *   current tile computes, then rounded to bf16 and stored into the other
 *   half of a double-buffered shared-memory tile (one barrier per tile);
 * - per tile: S = Q·Kᵀ (log2 domain), keys past the range end get -inf, the
 *   online softmax in fp32 (running row max m and sum l, O rescaled by
 *   2^(m_old − m_new)), then O += bf16(P)·V;
 * - at the end O / l is stored as f32; rows past Lq are never stored.
 *
 * Shared-memory rows are padded by 8 bf16 (16 bytes) so that the 8 row
 * addresses of every ldmatrix hit distinct bank groups. */
#include <stddef.h>
#include <stdint.h>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

/* The base headers have no C++ guards: give them C linkage here. */
extern "C" {
#include "../backend.h"
}
#include "cuda_internal.h"

#define ATT_WARPS 8
#define ATT_THREADS (ATT_WARPS * 32)
#define ATT_BQ (ATT_WARPS * 16) /* query rows per CTA */
#define ATT_BK 64               /* keys per tile */
#define ATT_MAX_RANGES 2

typedef struct {
    const float *q;
    float *out;
    int Lq;
    int ldq; /* heads·HD: the row stride of q and out */
    const float *k[ATT_MAX_RANGES], *v[ATT_MAX_RANGES];
    int64_t ld[ATT_MAX_RANGES];
    int n[ATT_MAX_RANGES];     /* keys per range (0 for an absent range) */
    int tiles0, tiles;         /* key tiles of range 0, of all ranges */
    float qscale;              /* scale·log2(e): logits come out in the log2 domain */
} att_params;

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi); /* .x (low half) = lo */
    return *reinterpret_cast<uint32_t *>(&h);
}

__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* Four 8x8 bf16 matrices; lane i supplies the row address of row i%8 of
 * matrix i/8; register j receives matrix j (row lane/4, columns 2·(lane%4)
 * and +1, or with .trans the transposed element pair). */
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const __nv_bfloat16 *p) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], const __nv_bfloat16 *p) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
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

/* Loads this thread's share of one tile of f32 rows [start, start + valid) of
 * one head (src already offset to the head's first column) into registers;
 * rows past valid read as zeros (so padded V rows contribute 0·0). Element e =
 * i·THREADS + tid of the tile is row e / (HD/4), float4 column e % (HD/4). */
template <int HD>
__device__ __forceinline__ void load_tile(float4 (&r)[HD / 16], const float *src, int64_t ld, int start, int valid) {
    const float *base = src + (int64_t)start * ld;
#pragma unroll
    for (int i = 0; i < HD / 16; i++) {
        int e = i * ATT_THREADS + (int)threadIdx.x;
        int row = e / (HD / 4), c4 = e % (HD / 4);
        r[i] = row < valid ? __ldg(reinterpret_cast<const float4 *>(base + row * ld) + c4)
                           : make_float4(0.f, 0.f, 0.f, 0.f);
    }
}

/* Rounds the registers of load_tile to bf16 and stores them into a tile of
 * ATT_BK rows of HD + 8 bf16. */
template <int HD>
__device__ __forceinline__ void store_tile(__nv_bfloat16 *tile, const float4 (&r)[HD / 16]) {
#pragma unroll
    for (int i = 0; i < HD / 16; i++) {
        int e = i * ATT_THREADS + (int)threadIdx.x;
        int row = e / (HD / 4), c4 = e % (HD / 4);
        uint2 w = make_uint2(pack_bf16(r[i].x, r[i].y), pack_bf16(r[i].z, r[i].w));
        *reinterpret_cast<uint2 *>(tile + row * (HD + 8) + c4 * 4) = w;
    }
}

/* Key tile j: its range r, first key and number of valid keys (1..ATT_BK).
 * Selects rather than indexing the parameter arrays with r, which would copy
 * the parameters to local memory. */
__device__ __forceinline__ void tile_of(const att_params &p, int j, int *r, int *start, int *valid) {
    *r = j < p.tiles0 ? 0 : 1;
    *start = (*r ? j - p.tiles0 : j) * ATT_BK;
    *valid = min(ATT_BK, (*r ? p.n[1] : p.n[0]) - *start);
}

__device__ __forceinline__ const float *sel(int r, const float *a, const float *b) { return r ? b : a; }
__device__ __forceinline__ int64_t sel(int r, int64_t a, int64_t b) { return r ? b : a; }

template <int HD>
__global__ void __launch_bounds__(ATT_THREADS, 1) attention_kernel(const att_params p) {
    static_assert(HD % 16 == 0 && HD <= 128, "head dim must be a multiple of 16, at most 128");
    constexpr int LDS = HD + 8;            /* shared row stride, bf16 */
    constexpr int TILE = ATT_BK * LDS;     /* one K or V tile, bf16 */
    constexpr int KS = HD / 16;            /* k-steps over the head dim */
    extern __shared__ __align__(16) unsigned char att_smem[];
    /* [K0, K1, V0, V1] */
    __nv_bfloat16 *ks = reinterpret_cast<__nv_bfloat16 *>(att_smem);
    __nv_bfloat16 *vs = ks + 2 * TILE;

    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4; /* mma fragment row group and column pair */
    const int head = (int)blockIdx.y;
    const int64_t row0 = (int64_t)blockIdx.x * ATT_BQ + warp * 16 + g; /* this thread's rows: row0, row0 + 8 */
    const int64_t hoff = (int64_t)head * HD;

    /* Q fragments (A operand) straight from global memory: a0 (row g, cols
     * 2t, 2t+1), a1 (row g+8), a2 (row g, cols 2t+8, 2t+9), a3 (row g+8). */
    uint32_t qf[KS][4];
    {
        const float *q0 = p.q + row0 * p.ldq + hoff;
        const float *q1 = q0 + (int64_t)8 * p.ldq;
        const bool in0 = row0 < p.Lq, in1 = row0 + 8 < p.Lq;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            int c = kk * 16 + 2 * t;
            float2 x0 = in0 ? *reinterpret_cast<const float2 *>(q0 + c) : make_float2(0.f, 0.f);
            float2 x1 = in1 ? *reinterpret_cast<const float2 *>(q1 + c) : make_float2(0.f, 0.f);
            float2 x2 = in0 ? *reinterpret_cast<const float2 *>(q0 + c + 8) : make_float2(0.f, 0.f);
            float2 x3 = in1 ? *reinterpret_cast<const float2 *>(q1 + c + 8) : make_float2(0.f, 0.f);
            qf[kk][0] = pack_bf16(x0.x * p.qscale, x0.y * p.qscale);
            qf[kk][1] = pack_bf16(x1.x * p.qscale, x1.y * p.qscale);
            qf[kk][2] = pack_bf16(x2.x * p.qscale, x2.y * p.qscale);
            qf[kk][3] = pack_bf16(x3.x * p.qscale, x3.y * p.qscale);
        }
    }

    float o[HD / 8][4];
#pragma unroll
    for (int j = 0; j < HD / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY; /* running max (log2 domain) of rows g, g+8 */
    float l0 = 0.f, l1 = 0.f;             /* this thread's part of the running sums */

    float4 pre[HD / 16]; /* f32 rows of the next tile in flight */

    {
        int r, start, valid;
        tile_of(p, 0, &r, &start, &valid);
        load_tile<HD>(pre, sel(r, p.k[0], p.k[1]) + hoff, sel(r, p.ld[0], p.ld[1]), start, valid);
        store_tile<HD>(ks, pre);
        load_tile<HD>(pre, sel(r, p.v[0], p.v[1]) + hoff, sel(r, p.ld[0], p.ld[1]), start, valid);
        store_tile<HD>(vs, pre);
    }
    __syncthreads();

    for (int j = 0; j < p.tiles; j++) {
        const int cur = j & 1;
        const __nv_bfloat16 *kt = ks + cur * TILE, *vt = vs + cur * TILE;
        __nv_bfloat16 *kn = ks + (cur ^ 1) * TILE, *vn = vs + (cur ^ 1) * TILE;
        const bool has_next = j + 1 < p.tiles;
        int r, start, valid, nr = 0, nstart = 0, nvalid = 0;
        tile_of(p, j, &r, &start, &valid);
        if (has_next) {
            tile_of(p, j + 1, &nr, &nstart, &nvalid);
            load_tile<HD>(pre, sel(nr, p.k[0], p.k[1]) + hoff, sel(nr, p.ld[0], p.ld[1]), nstart, nvalid);
        }

        /* S = Q·Kᵀ: s[n] covers keys 8n..8n+7 of the tile */
        float s[ATT_BK / 8][4];
#pragma unroll
        for (int n = 0; n < ATT_BK / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
#pragma unroll
            for (int np = 0; np < ATT_BK / 16; np++) {
                /* matrices: (keys +0..7, dims +0..7), (keys +0..7, dims +8..15),
                 * (keys +8..15, dims +0..7), (keys +8..15, dims +8..15) */
                uint32_t b[4];
                ldsm_x4(b, kt + (np * 16 + (lane & 7) + (lane >> 4) * 8) * LDS + kk * 16 + ((lane >> 3) & 1) * 8);
                mma_bf16(s[2 * np], qf[kk], b[0], b[1]);
                mma_bf16(s[2 * np + 1], qf[kk], b[2], b[3]);
            }
        }

        if (has_next) {
            store_tile<HD>(kn, pre);
            load_tile<HD>(pre, sel(nr, p.v[0], p.v[1]) + hoff, sel(nr, p.ld[0], p.ld[1]), nstart, nvalid);
        }

        /* keys past the end of the range */
        if (valid < ATT_BK) {
#pragma unroll
            for (int n = 0; n < ATT_BK / 8; n++) {
                int c = n * 8 + 2 * t;
                if (c >= valid) s[n][0] = s[n][2] = -INFINITY;
                if (c + 1 >= valid) s[n][1] = s[n][3] = -INFINITY;
            }
        }

        /* online softmax (fp32, log2 domain); the 4 threads of a quad share a row */
        float mx0 = m0, mx1 = m1;
#pragma unroll
        for (int n = 0; n < ATT_BK / 8; n++) {
            mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
            mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        /* a row whose logits are all -inf so far subtracts 0 (no inf − inf) */
        const float base0 = mx0 == -INFINITY ? 0.f : mx0, base1 = mx1 == -INFINITY ? 0.f : mx1;
        const float corr0 = fast_exp2(m0 - base0), corr1 = fast_exp2(m1 - base1);
        m0 = mx0, m1 = mx1;
        l0 *= corr0, l1 *= corr1;
#pragma unroll
        for (int d = 0; d < HD / 8; d++) o[d][0] *= corr0, o[d][1] *= corr0, o[d][2] *= corr1, o[d][3] *= corr1;
#pragma unroll
        for (int n = 0; n < ATT_BK / 8; n++) {
            s[n][0] = fast_exp2(s[n][0] - base0);
            s[n][1] = fast_exp2(s[n][1] - base0);
            s[n][2] = fast_exp2(s[n][2] - base1);
            s[n][3] = fast_exp2(s[n][3] - base1);
            l0 += s[n][0] + s[n][1];
            l1 += s[n][2] + s[n][3];
        }

        /* O += P·V: P's A fragment for keys 16kk..16kk+15 is s[2kk], s[2kk+1] */
#pragma unroll
        for (int kk = 0; kk < ATT_BK / 16; kk++) {
            uint32_t a[4];
            a[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
            a[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
            a[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < HD / 16; dp++) {
                /* transposed matrices: (keys +0..7, dims +0..7), (keys +8..15,
                 * dims +0..7), (keys +0..7, dims +8..15), (keys +8..15, dims +8..15) */
                uint32_t b[4];
                ldsm_x4_trans(b, vt + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LDS + dp * 16 + (lane >> 4) * 8);
                mma_bf16(o[2 * dp], a, b[0], b[1]);
                mma_bf16(o[2 * dp + 1], a, b[2], b[3]);
            }
        }

        if (has_next) store_tile<HD>(vn, pre);
        __syncthreads();
    }

    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float inv0 = 1.f / l0, inv1 = 1.f / l1;
    float *o0 = p.out + row0 * p.ldq + hoff + 2 * t;
    float *o1 = o0 + (int64_t)8 * p.ldq;
    if (row0 < p.Lq) {
#pragma unroll
        for (int d = 0; d < HD / 8; d++)
            *reinterpret_cast<float2 *>(o0 + d * 8) = make_float2(o[d][0] * inv0, o[d][1] * inv0);
    }
    if (row0 + 8 < p.Lq) {
#pragma unroll
        for (int d = 0; d < HD / 8; d++)
            *reinterpret_cast<float2 *>(o1 + d * 8) = make_float2(o[d][2] * inv1, o[d][3] * inv1);
    }
}

template <int HD>
static lp_status launch(const lp_backend *be, const att_params *p, int heads) {
    const size_t smem = (size_t)4 * ATT_BK * (HD + 8) * sizeof(__nv_bfloat16);
    LP_TRY(lp_cuda_check(be, cudaFuncSetAttribute(attention_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                  (int)smem),
                         "attention: cudaFuncSetAttribute(MaxDynamicSharedMemorySize)"));
    dim3 grid((unsigned)((p->Lq + ATT_BQ - 1) / ATT_BQ), (unsigned)heads);
    attention_kernel<HD><<<grid, ATT_THREADS, smem, lp_cuda(be)->stream>>>(*p);
    return lp_cuda_check_launch(be, "attention_kernel");
}

static int misaligned16(const void *ptr) { return ((uintptr_t)ptr & 15u) != 0; }

/* Whether the float ranges [a, a + na) and [b, b + nb) share an element. */
static int overlap(const float *a, int64_t na, const float *b, int64_t nb) {
    return (uintptr_t)a < (uintptr_t)(b + nb) && (uintptr_t)b < (uintptr_t)(a + na);
}

/* The backend.h contract, with these requirements (LP_ERR_ARG otherwise,
 * LP_ERR_UNSUPPORTED for head_dim and nranges): head_dim 48, 64, 96 or 128;
 * 1 or 2 ranges; q, out and every non-empty range's k and v 16-byte aligned;
 * each range's ld a multiple of 4 and >= heads·head_dim; fewer than 2^31 − 64
 * keys and query rows; out may be q itself but may not otherwise overlap q,
 * k or v. Lq = 0 does nothing; no keys at all is an error, as on the CPU. */
lp_status lp_cuda_attention(const lp_backend *be, float *out, const float *q, int64_t Lq, int heads, int head_dim,
                            const lp_kv_range *ranges, int nranges, float scale) {
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
    const int64_t width = (int64_t)heads * head_dim;
    int64_t Lk = 0;
    att_params p;
    p.qscale = scale * 1.4426950408889634f; /* log2(e) */
    for (int i = 0; i < ATT_MAX_RANGES; i++) {
        p.k[i] = p.v[i] = NULL;
        p.ld[i] = 0;
        p.n[i] = 0;
    }
    for (int i = 0; i < nranges; i++) {
        const lp_kv_range *R = &ranges[i];
        if (R->n < 0 || R->n > INT32_MAX - ATT_BK)
            return lp_fail(LP_ERR_ARG, "attention: key range %d has %lld rows", i, (long long)R->n);
        Lk += R->n;
        if (!R->n) continue;
        if (!R->k || !R->v || misaligned16(R->k) || misaligned16(R->v))
            return lp_fail(LP_ERR_ARG, "attention (cuda): key range %d: k/v must be non-NULL and 16-byte aligned", i);
        if (R->ld < width || R->ld % 4)
            return lp_fail(LP_ERR_ARG,
                           "attention (cuda): key range %d: row stride %lld must be >= heads*head_dim (%lld) and a "
                           "multiple of 4",
                           i, (long long)R->ld, (long long)width);
        p.k[i] = R->k;
        p.v[i] = R->v;
        p.ld[i] = R->ld;
        p.n[i] = (int)R->n;
    }
    if (Lk == 0) return lp_fail(LP_ERR_ARG, "attention over an empty key set");
    if (Lk > INT32_MAX - ATT_BK) return lp_fail(LP_ERR_ARG, "attention: %lld keys, too many", (long long)Lk);
    if (Lq == 0) return LP_OK;
    if (!q || !out || misaligned16(q) || misaligned16(out))
        return lp_fail(LP_ERR_ARG, "attention (cuda): q and out must be non-NULL and 16-byte aligned");
    if (out != q && overlap(out, Lq * width, q, Lq * width))
        return lp_fail(LP_ERR_ARG, "attention (cuda): out partially overlaps q");
    for (int i = 0; i < nranges; i++) {
        const lp_kv_range *R = &ranges[i];
        int64_t span = R->n ? (R->n - 1) * R->ld + width : 0;
        if (R->n && (overlap(out, Lq * width, R->k, span) || overlap(out, Lq * width, R->v, span)))
            return lp_fail(LP_ERR_ARG, "attention (cuda): out overlaps the keys/values of range %d", i);
    }
    p.q = q;
    p.out = out;
    p.Lq = (int)Lq;
    p.ldq = (int)width;
    p.tiles0 = (p.n[0] + ATT_BK - 1) / ATT_BK;
    p.tiles = p.tiles0 + (p.n[1] + ATT_BK - 1) / ATT_BK;
    switch (head_dim) {
    case 48: return launch<48>(be, &p, heads);
    case 64: return launch<64>(be, &p, heads);
    case 96: return launch<96>(be, &p, heads);
    default: return launch<128>(be, &p, heads);
    }
}
