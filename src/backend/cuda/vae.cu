/* The CUDA backend's Wan VAE ops other than conv3d (backend.h, "the Wan
 * VAE"; conv3d is in conv.cu): channel_rms_norm, upsample2x and
 * spatial_attention. The CPU kernels (src/backend/cpu/conv3d.c) are the
 * reference semantics.
 *
 * channel_rms_norm: one thread per pixel of a frame (consecutive threads on
 * consecutive pixels, so every channel plane is read coalesced); the sum of
 * squares over the c channels is accumulated in double in channel order, as
 * the CPU does (each f32 square is exact in double, so even a contracted
 * multiply-add rounds the same), and the output is x / nrm · √c · γ in f32,
 * rounded as written (__f*_rn). The result is the CPU's, bit for bit. Each
 * thread reads its pixel's channels before it writes them, so y may equal x.
 *
 * upsample2x: one thread per input value (or per pair of them, stored as a
 * float4 into each of the two output rows when the row length and the
 * pointers allow); grid-stride.
 *
 * spatial_attention: q, k, v, out are channel-major [c][n], i.e. column-major
 * n×c matrices with leading dimension n for cuBLASLt. Query pixels go in
 * blocks of b (the score block b×n f32 fits the scratch kept in st->vae,
 * grown on demand, about SCORE_BUDGET floats and at least one row; b a
 * multiple of 64 unless a single block, so that q + i0 and out + i0 keep the
 * alignment of q and out). Per block, all fp32 (CUBLAS_COMPUTE_32F, no TF32):
 *   scores: D (n×b, ld n) = scale · K (n×c) · Q_blockᵀ (Q_block: the b×c
 *       matrix at q + i0, ld n), which is the row-major [b][n] block
 *       S[i][j] = scale · Σ_ch q[ch][i0+i]·k[ch][j], scale = 1/√c;
 *   a row softmax in place (one CTA per row: the row max, expf(s − max)
 *       stored back while the sum is taken in double, then times the f32
 *       inverse of the sum: lp_cpu_softmax_rows' formula, another summation
 *       order);
 *   out[:, i0..i0+b] = D (b×c, ld n) = Pᵀ (b×n) · V (n×c), P the row-major
 *       probabilities read as the column-major n×b matrix.
 * The GEMM plans (descriptors and the heuristic's algorithm) are cached in
 * st->vae, keyed by shape, transposes and pointer alignments.
 *
 * Errors: argument errors of spatial_attention are returned (not sticky);
 * those of the void ops become the sticky error. Launch failures and other
 * CUDA runtime failures become the sticky error (lp_cuda_check);
 * allocation and cuBLASLt failures are returned to the caller, as linear's. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

#define THREADS 256
#define SOFTMAX_THREADS 256             /* one CTA per score row */
#define SCORE_BUDGET ((size_t)16 << 20) /* floats of the score block (64 MiB) */
#define BLOCK_ALIGN 64                  /* query rows of a block: a multiple of this (256 bytes) */
#define GEMM_SLOTS 16                   /* cached GEMM plans, replaced round robin */

/* One fp32 GEMM D = alpha · op(A) · op(B) (beta 0) as cuBLASLt runs it:
 * column-major, D m×n with leading dimension ldd, op(A) m×k, op(B) k×n;
 * op == NULL marks an empty slot. */
typedef struct {
    int ta, tb;
    uint64_t m, n, k;
    int64_t lda, ldb, ldd;
    uint32_t align_a, align_b, align_d;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
} vae_gemm;

struct lp_cuda_vae {
    float *scores;   /* the score block of spatial_attention */
    size_t scores_n; /* its floats */
    vae_gemm gemm[GEMM_SLOTS];
    int next_gemm;
};

/* ------------------------------------------------------------------ helpers */

/* st->vae, created on first use; NULL (error set) when out of memory. */
static lp_cuda_vae *vae_state(const lp_backend *be) {
    lp_cuda_state *st = lp_cuda(be);
    if (!st->vae && !(st->vae = (lp_cuda_vae *)calloc(1, sizeof *st->vae)))
        lp_fail(LP_ERR_NOMEM, "spatial_attention: out of memory for the CUDA VAE state");
    return st->vae;
}

/* ----------------------------------------------------------- rms norm */

/* y[f][ch][p] = x[f][ch][p] / max(‖x[f][:][p]‖₂, 1e-12) · scale · gamma[ch]
 * (see the top of the file). Blocks: x over pixels, y over frames
 * (grid-stride beyond LP_CUDA_MAX_GRID). */
static __global__ void __launch_bounds__(THREADS)
    channel_rms_norm_kernel(float *y, const float *x, int64_t frames, int c, int64_t n, const float *__restrict__ gamma,
                            float scale) {
    const int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= n) return;
    for (int64_t f = blockIdx.y; f < frames; f += gridDim.y) {
        const float *xp = x + f * c * n + p;
        float *yp = y + f * c * n + p;
        double ss = 0.0;
        for (int ch = 0; ch < c; ch++) {
            const double v = (double)xp[(int64_t)ch * n];
            ss += v * v; /* exact product: a contraction into fma rounds the same */
        }
        const float v = (float)sqrt(ss);
        const float nrm = v > 1e-12f ? v : 1e-12f; /* F.normalize's eps */
        for (int ch = 0; ch < c; ch++) {
            const int64_t o = (int64_t)ch * n;
            yp[o] = __fmul_rn(__fmul_rn(__fdiv_rn(xp[o], nrm), scale), gamma[ch]);
        }
    }
}

void lp_cuda_channel_rms_norm(const lp_backend *be, float *y, const float *x, int64_t frames, int c, int64_t n,
                              const lp_tensor *gamma) {
    const char *op = "channel_rms_norm";
    if (frames < 0 || c < 0 || n < 0 || ((frames && c && n) && (!x || !y || !gamma))) {
        lp_cuda_set_sticky(be,
                           lp_fail(LP_ERR_ARG, "%s: invalid arguments (frames %lld, c %d, n %lld, or a NULL pointer)",
                                   op, (long long)frames, c, (long long)n));
        return;
    }
    if (!frames || !c || !n) return;
    if (gamma->dtype != LP_F32 || lp_tensor_numel(gamma) != c) {
        lp_cuda_set_sticky(be, lp_fail(LP_ERR_SHAPE, "%s: gamma '%s' must be an f32 view of %d elements", op,
                                       gamma->name ? gamma->name : "?", c));
        return;
    }
    const float *g = (const float *)lp_cuda_weight(be, gamma, 0); /* f32 [c] */
    if (!g) return;                                               /* sticky already */
    const int64_t blocks = (n + THREADS - 1) / THREADS;
    if (blocks > INT32_MAX) {
        lp_cuda_set_sticky(be, lp_fail(LP_ERR_ARG, "%s: %lld pixels a frame are too many", op, (long long)n));
        return;
    }
    dim3 grid((unsigned)blocks, (unsigned)(frames < LP_CUDA_MAX_GRID ? frames : LP_CUDA_MAX_GRID));
    channel_rms_norm_kernel<<<grid, THREADS, 0, lp_cuda(be)->stream>>>(y, x, frames, c, n, g, sqrtf((float)c));
    lp_cuda_check_launch(be, op);
}

/* ----------------------------------------------------------- upsample */

/* out[r'][2x + {0, 1}] = in[r][x] for the two output rows r' = 2r, 2r + 1 of
 * each input row r (rows = c·h of length w; output rows of length 2w). V = 2:
 * a thread takes the input pair x, x + 1 (w even) and stores a float4 into
 * each output row (in 8-byte and out 16-byte aligned). */
template <int V>
static __global__ void __launch_bounds__(THREADS)
    upsample2x_kernel(float *__restrict__ out, const float *__restrict__ in, int64_t rows, int64_t w) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x, groups = rows * w / V;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < groups; i += stride) {
        const int64_t e = i * V, r = e / w, x = e - r * w;
        float *o = out + r * 4 * w + 2 * x; /* output row 2r, column 2x */
        if (V == 2) {
            const float2 v = reinterpret_cast<const float2 *>(in)[i];
            const float4 q = make_float4(v.x, v.x, v.y, v.y);
            *reinterpret_cast<float4 *>(o) = q;
            *reinterpret_cast<float4 *>(o + 2 * w) = q;
        } else {
            const float v = in[e];
            o[0] = v;
            o[1] = v;
            o[2 * w] = v;
            o[2 * w + 1] = v;
        }
    }
}

void lp_cuda_upsample2x(const lp_backend *be, float *out, const float *in, int c, int h, int w) {
    const char *op = "upsample2x";
    const int64_t n_in = (int64_t)c * h * w, in_bytes = n_in * (int64_t)sizeof(float);
    if (c < 0 || h < 0 || w < 0 || (n_in && (!in || !out || lp_cuda_overlap(out, 4 * in_bytes, in, in_bytes)))) {
        lp_cuda_set_sticky(
            be, lp_fail(LP_ERR_ARG, "%s: invalid arguments (c %d, %dx%d, a NULL or overlapping buffer)", op, c, w, h));
        return;
    }
    if (!n_in) return;
    cudaStream_t s = lp_cuda(be)->stream;
    const int64_t rows = (int64_t)c * h;
    if (w % 2 == 0 && lp_cuda_aligned(in, 8) && lp_cuda_aligned(out, 16))
        upsample2x_kernel<2><<<lp_cuda_grid(n_in / 2, THREADS), THREADS, 0, s>>>(out, in, rows, w);
    else
        upsample2x_kernel<1><<<lp_cuda_grid(n_in, THREADS), THREADS, 0, s>>>(out, in, rows, w);
    lp_cuda_check_launch(be, op);
}

/* ------------------------------------------------------------ attention */

/* The largest value of v over the CTA (the CPU's comparison: NaN never
 * wins); every thread gets it. red: SOFTMAX_THREADS / 32 floats. */
__device__ __forceinline__ float block_max(float v, float *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float u = __shfl_xor_sync(0xffffffffu, v, o);
        v = u > v ? u : v;
    }
    __syncthreads(); /* red is free (an earlier reduction has been read) */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = red[0];
    for (int i = 1; i < SOFTMAX_THREADS / 32; i++)
        v = red[i] > v ? red[i] : v;
    return v;
}

/* The sum of v over the CTA; every thread gets it. red: SOFTMAX_THREADS / 32 doubles. */
__device__ __forceinline__ double block_sum(double v, double *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = 0.0;
    for (int i = 0; i < SOFTMAX_THREADS / 32; i++)
        v += red[i];
    return v;
}

/* In-place softmax of row blockIdx.x (and every gridDim.x-th after it) of s
 * [rows][cols]: subtract the row max, expf, sum in double, times the f32
 * inverse of the sum (lp_cpu_softmax_rows). */
static __global__ void __launch_bounds__(SOFTMAX_THREADS) softmax_rows_kernel(float *s, int64_t rows, int64_t cols) {
    __shared__ float red_f[SOFTMAX_THREADS / 32];
    __shared__ double red_d[SOFTMAX_THREADS / 32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        float *row = s + r * cols;
        float mx = -INFINITY;
        for (int64_t j = threadIdx.x; j < cols; j += SOFTMAX_THREADS) {
            const float v = row[j];
            mx = v > mx ? v : mx;
        }
        mx = block_max(mx, red_f);
        double sum = 0.0;
        for (int64_t j = threadIdx.x; j < cols; j += SOFTMAX_THREADS) {
            const float e = expf(__fsub_rn(row[j], mx));
            row[j] = e;
            sum += e;
        }
        const float inv = (float)(1.0 / block_sum(sum, red_d));
        for (int64_t j = threadIdx.x; j < cols; j += SOFTMAX_THREADS)
            row[j] = __fmul_rn(row[j], inv);
    }
}

static void gemm_clear(vae_gemm *g) {
    if (g->a) cublasLtMatrixLayoutDestroy(g->a);
    if (g->b) cublasLtMatrixLayoutDestroy(g->b);
    if (g->d) cublasLtMatrixLayoutDestroy(g->d);
    if (g->op) cublasLtMatmulDescDestroy(g->op);
    memset(g, 0, sizeof *g);
}

/* Builds g's descriptors (fp32 in, out and compute) for its key and chooses
 * its algorithm (the heuristic's first choice within the backend's
 * workspace, for the key's pointer alignments). */
static lp_status gemm_build(const lp_backend *be, vae_gemm *g, const char *who) {
    const cublasOperation_t ta = g->ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    lp_status s =
        lp_cuda_lt_check(cublasLtMatmulDescCreate(&g->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), who, "matmul descriptor");
    if (s == LP_OK)
        s = lp_cuda_lt_check(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), who,
                             "transA");
    if (s == LP_OK)
        s = lp_cuda_lt_check(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), who,
                             "transB");
    /* stored shapes: A is k×m when transposed, else m×k; B n×k or k×n */
    if (s == LP_OK)
        s = lp_cuda_lt_check(
            cublasLtMatrixLayoutCreate(&g->a, CUDA_R_32F, g->ta ? g->k : g->m, g->ta ? g->m : g->k, g->lda), who,
            "layout of A");
    if (s == LP_OK)
        s = lp_cuda_lt_check(
            cublasLtMatrixLayoutCreate(&g->b, CUDA_R_32F, g->tb ? g->n : g->k, g->tb ? g->k : g->n, g->ldb), who,
            "layout of B");
    if (s == LP_OK)
        s = lp_cuda_lt_check(cublasLtMatrixLayoutCreate(&g->d, CUDA_R_32F, g->m, g->n, g->ldd), who, "layout of D");
    const uint32_t align[4] = {g->align_a, g->align_b, g->align_d, g->align_d};
    if (s == LP_OK) s = lp_cuda_choose_algo(be, g->op, g->a, g->b, g->d, align, who, "fp32", &g->algo);
    return s;
}

/* Issues D = alpha · op(A) · op(B) (column-major, see vae_gemm) on the
 * backend's stream, with a cached plan for the shape and the pointers'
 * alignments (built on first use). */
static lp_status gemm_run(const lp_backend *be, lp_cuda_vae *vs, int ta, int tb, int64_t m, int64_t n, int64_t k,
                          float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float *D, int64_t ldd,
                          const char *who) {
    vae_gemm key;
    memset(&key, 0, sizeof key);
    key.ta = ta;
    key.tb = tb;
    key.m = (uint64_t)m;
    key.n = (uint64_t)n;
    key.k = (uint64_t)k;
    key.lda = lda;
    key.ldb = ldb;
    key.ldd = ldd;
    key.align_a = lp_cuda_alignment_of(A);
    key.align_b = lp_cuda_alignment_of(B);
    key.align_d = lp_cuda_alignment_of(D);
    vae_gemm *g = NULL;
    for (int i = 0; i < GEMM_SLOTS && !g; i++) {
        vae_gemm *e = &vs->gemm[i];
        if (e->op && e->ta == key.ta && e->tb == key.tb && e->m == key.m && e->n == key.n && e->k == key.k &&
            e->lda == key.lda && e->ldb == key.ldb && e->ldd == key.ldd && e->align_a == key.align_a &&
            e->align_b == key.align_b && e->align_d == key.align_d)
            g = e;
    }
    if (!g) {
        g = &vs->gemm[vs->next_gemm];
        vs->next_gemm = (vs->next_gemm + 1) % GEMM_SLOTS;
        gemm_clear(g);
        *g = key;
        lp_status s = gemm_build(be, g, who);
        if (s != LP_OK) {
            gemm_clear(g);
            return s;
        }
    }
    lp_cuda_state *st = lp_cuda(be);
    const float beta = 0.0f; /* D is not read (it may hold anything, NaN included) */
    return lp_cuda_lt_check(cublasLtMatmul((cublasLtHandle_t)st->cublaslt, g->op, &alpha, A, g->a, B, g->b, &beta, D,
                                           g->d, D, g->d, &g->algo, st->workspace, st->workspace_bytes, st->stream),
                            who, "matmul");
}

/* Makes vs->scores hold at least n floats. The old block may still be read
 * by ops in flight, so the stream is drained before it is freed. */
static lp_status scores_reserve(const lp_backend *be, lp_cuda_vae *vs, size_t n) {
    if (vs->scores_n >= n) return LP_OK;
    if (vs->scores) {
        LP_TRY(lp_cuda_check(be, cudaStreamSynchronize(lp_cuda(be)->stream),
                             "cudaStreamSynchronize (spatial_attention scratch)"));
        cudaFree(vs->scores);
        vs->scores = NULL;
        vs->scores_n = 0;
    }
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, n * sizeof(float));
    if (e != cudaSuccess) {
        cudaGetLastError();
        return lp_fail(e == cudaErrorMemoryAllocation ? LP_ERR_NOMEM : LP_ERR_IO,
                       "spatial_attention: cannot allocate %zu bytes of device memory for the scores: %s",
                       n * sizeof(float), cudaGetErrorString(e));
    }
    vs->scores = (float *)p;
    vs->scores_n = n;
    return LP_OK;
}

/* Query rows per block for n pixels: the score block b×n within
 * SCORE_BUDGET floats (at least one row), the blocks of one frame as even as
 * can be, b a multiple of BLOCK_ALIGN unless one block covers the frame. */
static int64_t attention_block(int64_t n) {
    int64_t most = (int64_t)(SCORE_BUDGET / (size_t)n);
    if (most >= n) return n;
    if (most >= BLOCK_ALIGN) most = most / BLOCK_ALIGN * BLOCK_ALIGN;
    if (most < 1) most = 1;
    const int64_t blocks = (n + most - 1) / most, even = (n + blocks - 1) / blocks;
    if (most < BLOCK_ALIGN) return even; /* most >= even */
    const int64_t b = (even + BLOCK_ALIGN - 1) / BLOCK_ALIGN * BLOCK_ALIGN;
    return b < most ? b : most;
}

lp_status lp_cuda_spatial_attention(const lp_backend *be, float *out, const float *q, const float *k, const float *v,
                                    int c, int64_t n) {
    const char *op = "spatial_attention";
    if (c < 1 || n < 1)
        return lp_fail(LP_ERR_ARG, "%s: %d channels and %lld pixels (both must be positive)", op, c, (long long)n);
    if (!out || !q || !k || !v) return lp_fail(LP_ERR_ARG, "%s: a NULL buffer", op);
    const int64_t numel = (int64_t)c * n;
    if (n > INT64_MAX / c / (int64_t)sizeof(float))
        return lp_fail(LP_ERR_ARG, "%s: %d channels of %lld pixels are too many", op, c, (long long)n);
    const int64_t bytes = numel * (int64_t)sizeof(float);
    if (lp_cuda_overlap(out, bytes, q, bytes) || lp_cuda_overlap(out, bytes, k, bytes) ||
        lp_cuda_overlap(out, bytes, v, bytes))
        return lp_fail(LP_ERR_ARG, "%s: out overlaps q, k or v", op);
    LP_TRY(lp_cuda_pending(be, op));
    lp_cuda_vae *vs = vae_state(be);
    if (!vs) return LP_ERR_NOMEM;
    const int64_t rows = attention_block(n);
    LP_TRY(scores_reserve(be, vs, (size_t)rows * (size_t)n));
    float *S = vs->scores;
    const float scale = 1.0f / sqrtf((float)c);
    cudaStream_t stream = lp_cuda(be)->stream;
    char who[96];
    for (int64_t i0 = 0; i0 < n; i0 += rows) {
        const int64_t b = n - i0 < rows ? n - i0 : rows;
        /* S (column-major n×b, ld n: row-major [b][n]) = scale · K (n×c) · Q_blockᵀ */
        snprintf(who, sizeof who, "%s scores c=%d n=%lld rows=%lld", op, c, (long long)n, (long long)b);
        LP_TRY(gemm_run(be, vs, 0, 1, n, b, c, scale, k, n, q + i0, n, S, n, who));
        softmax_rows_kernel<<<(unsigned)(b < LP_CUDA_MAX_GRID ? b : LP_CUDA_MAX_GRID), SOFTMAX_THREADS, 0, stream>>>(
            S, b, n);
        LP_TRY(lp_cuda_check_launch(be, "spatial_attention softmax"));
        /* out[:, i0..] (column-major b×c, ld n) = Pᵀ (b×n) · V (n×c) */
        snprintf(who, sizeof who, "%s output c=%d n=%lld rows=%lld", op, c, (long long)n, (long long)b);
        LP_TRY(gemm_run(be, vs, 1, 0, b, c, n, 1.0f, S, n, v, n, out + i0, n, who));
    }
    return LP_OK;
}

void lp_cuda_vae_free(lp_cuda_state *st) {
    lp_cuda_vae *vs = st->vae;
    if (!vs) return;
    for (int i = 0; i < GEMM_SLOTS; i++)
        gemm_clear(&vs->gemm[i]);
    cudaFree(vs->scores);
    free(vs);
    st->vae = NULL;
}
