/* The CUDA backend's keep-mask ops (backend.h, "LIPAR's keep-mask";
 * spec/LIPAR.md §1): mask_distance (step 1), mask_median (2), mask_gauss (3),
 * mask_threshold (4, and the drift check of 5), mask_or, mask_majority (6),
 * mask_open_close (7) and mask_dilate (8), one frame at a time. The CPU
 * kernels of src/prune/mask.c (patch_distance_rows, median_rows, lp_mask_frame_gauss,
 * lp_mask_frame_majority, morph3, lp_mask_frame_dilate, lp_mask_threshold) are the reference
 * semantics, and every op gives their results bit for bit:
 *   - the values are gathered in the CPU's order (a patch as (dy, dx,
 *     channel), a 3×3×3 neighbourhood as (plane, dr, dc)) and sorted by the
 *     same insertion sort, so that even ties of +0/−0 or NaNs come out alike;
 *   - every sum and product is the CPU's, in its order, explicitly rounded
 *     (__fadd_rn, __fmul_rn, __dadd_rn, __dmul_rn, __ddiv_rn, __dsqrt_rn, ...)
 *     so that nvcc does not fuse a multiply-add that the CPU rounds twice;
 *   - edges as the CPU's: clamped ("nearest") for the median, the Gaussian
 *     and the majority, ranges clamped to the frame for the 3×5×5 dilation,
 *     and for the 3×3 morphology cells outside the frame skipped (an erosion
 *     starts at 1, a dilation at 0).
 * Layout: one thread per patch (distance: the 64 differences sorted in the
 * thread's local memory) or per cell (the plane ops), 1-D grid-stride over
 * the frame. Frames are small (1560 patches at 832×480), so the kernels are
 * simple rather than tiled. Argument errors of these void ops, and launch
 * failures, become the backend's sticky error (the next status-returning op
 * reports it); empty sizes are no-ops that launch nothing. */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.h"

#define THREADS 128      /* plane ops: one thread per cell */
#define DIST_THREADS 64  /* distance: one thread per patch, 64 floats of local memory each */
#define CH 16            /* latent channels (LP_MASK_CHANNELS) */
#define PATCH_VALUES (4 * CH)
#define TRIM_LO 12       /* int(0.2·64): the trimmed L1 sums sorted values 12…50 */
#define TRIM_HI 51       /* int(0.8·64), exclusive */

/* lp_mask_distance (src/prune/mask.h) */
enum { DIST_L1_GAUSSIAN = 0, DIST_L1 = 1, DIST_L2 = 2, DIST_COS = 3 };

/* ------------------------------------------------------------------ helpers */

__device__ __forceinline__ static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* mask.c's sort_floats: insertion sort, ascending, the same comparisons. */
template <int N> __device__ __forceinline__ static void sort_floats(float (&v)[N]) {
    for (int i = 1; i < N; i++) {
        float x = v[i];
        int j = i - 1;
        while (j >= 0 && v[j] > x) {
            v[j + 1] = v[j];
            j--;
        }
        v[j + 1] = x;
    }
}

/* The element offset of value k (0…63) of patch (pr, pc) in a [16][H][W]
 * frame, for the reference's patch vector order (dy, dx, channel). */
__device__ __forceinline__ static int64_t patch_offset(int k, int pr, int pc, int W, int64_t plane) {
    const int dy = k >> 5, dx = (k >> 4) & 1, c = k & (CH - 1);
    return (int64_t)c * plane + (int64_t)(2 * pr + dy) * W + (2 * pc + dx);
}

/* Records an argument error of a void op as the sticky error. */
static void arg_error(const lp_backend *be, const char *op, const char *what, int h, int w) {
    lp_cuda_set_sticky(be, lp_fail(LP_ERR_ARG, "%s: invalid arguments (%dx%d; %s)", op, w, h, what));
}

/* Whether a plane op's sizes are valid (else the sticky error is set). */
static int sizes_ok(const lp_backend *be, const char *op, int h, int w) {
    if (h >= 0 && w >= 0) return 1;
    arg_error(be, op, "negative size", h, w);
    return 0;
}

/* Whether the output plane of `bytes` bytes overlaps any of the inputs
 * (NULL inputs skipped). */
static int out_overlaps(const void *out, int64_t bytes, const void *p, const void *c, const void *n) {
    return (p && lp_cuda_overlap(out, bytes, p, bytes)) || (c && lp_cuda_overlap(out, bytes, c, bytes)) ||
           (n && lp_cuda_overlap(out, bytes, n, bytes));
}

/* ------------------------------------------------------- step 1: distance */

/* Trimmed L1 (KIND 0) or L2 (KIND 1) of one patch per thread: |a−b| sorted,
 * then the fp32 sum of sorted values 12…50 / 39, or the double sum of all the
 * squares, √ / 64. */
template <int KIND>
__global__ static void __launch_bounds__(DIST_THREADS)
    sorted_distance_kernel(float *out, const float *a, const float *b, int H, int W) {
    const int w = W / 2;
    const int64_t cells = (int64_t)(H / 2) * w, plane = (int64_t)H * W;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < cells; i += (int64_t)gridDim.x * blockDim.x) {
        const int pr = (int)(i / w), pc = (int)(i - (int64_t)pr * w);
        float v[PATCH_VALUES];
        for (int k = 0; k < PATCH_VALUES; k++) {
            const int64_t o = patch_offset(k, pr, pc, W, plane);
            v[k] = fabsf(__fsub_rn(a[o], b[o]));
        }
        sort_floats(v);
        float d;
        if (KIND == 0) {
            float s = 0.0f;
            for (int k = TRIM_LO; k < TRIM_HI; k++) s = __fadd_rn(s, v[k]);
            d = __fdiv_rn(s, (float)(TRIM_HI - TRIM_LO));
        } else {
            double s = 0.0;
            for (int k = 0; k < PATCH_VALUES; k++) s = __dadd_rn(s, __dmul_rn((double)v[k], (double)v[k]));
            d = __double2float_rn(__ddiv_rn(__dsqrt_rn(s), (double)PATCH_VALUES));
        }
        out[i] = d;
    }
}

/* 1 − cosine similarity of the two 64-vectors of one patch per thread, in
 * double: the norms (each clamped at 1e-8), then Σ (a/‖a‖)·(b/‖b‖); the
 * values are read twice from global memory rather than kept. */
__global__ static void __launch_bounds__(DIST_THREADS)
    cos_distance_kernel(float *out, const float *a, const float *b, int H, int W) {
    const int w = W / 2;
    const int64_t cells = (int64_t)(H / 2) * w, plane = (int64_t)H * W;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < cells; i += (int64_t)gridDim.x * blockDim.x) {
        const int pr = (int)(i / w), pc = (int)(i - (int64_t)pr * w);
        double na = 0.0, nb = 0.0, dot = 0.0;
        for (int k = 0; k < PATCH_VALUES; k++) {
            const int64_t o = patch_offset(k, pr, pc, W, plane);
            const double x = a[o], y = b[o];
            na = __dadd_rn(na, __dmul_rn(x, x));
            nb = __dadd_rn(nb, __dmul_rn(y, y));
        }
        na = fmax(__dsqrt_rn(na), 1e-8);
        nb = fmax(__dsqrt_rn(nb), 1e-8);
        for (int k = 0; k < PATCH_VALUES; k++) {
            const int64_t o = patch_offset(k, pr, pc, W, plane);
            dot = __dadd_rn(dot, __dmul_rn(__ddiv_rn((double)a[o], na), __ddiv_rn((double)b[o], nb)));
        }
        out[i] = __double2float_rn(__dsub_rn(1.0, dot));
    }
}

extern "C" void lp_cuda_mask_distance(const lp_backend *be, float *out, const float *a, const float *b, int H, int W,
                                      int distance) {
    const char *op = "mask_distance";
    if (H < 0 || W < 0 || H % 2 || W % 2 || (unsigned)distance > DIST_COS) {
        lp_cuda_set_sticky(be, lp_fail(LP_ERR_ARG, "%s: latent size %dx%d (even, >= 0) or distance %d (0..3)", op, W,
                                       H, distance));
        return;
    }
    const int64_t cells = (int64_t)(H / 2) * (W / 2), frame = (int64_t)CH * H * W * (int64_t)sizeof(float);
    if (!cells) return;
    if (!out || !a || !b || lp_cuda_overlap(out, cells * (int64_t)sizeof(float), a, frame) ||
        lp_cuda_overlap(out, cells * (int64_t)sizeof(float), b, frame)) {
        arg_error(be, op, "a NULL or overlapping buffer", H, W);
        return;
    }
    const unsigned grid = lp_cuda_grid(cells, DIST_THREADS);
    cudaStream_t s = lp_cuda(be)->stream;
    if (distance == DIST_COS) cos_distance_kernel<<<grid, DIST_THREADS, 0, s>>>(out, a, b, H, W);
    else if (distance == DIST_L2) sorted_distance_kernel<1><<<grid, DIST_THREADS, 0, s>>>(out, a, b, H, W);
    else sorted_distance_kernel<0><<<grid, DIST_THREADS, 0, s>>>(out, a, b, H, W);
    lp_cuda_check_launch(be, op);
}

/* --------------------------------------------------------- step 2: median */

/* The 14th smallest of the 27 clamped-edge values of planes p, c, n around
 * each cell (the CPU's gather order and insertion sort). */
__global__ static void median_kernel(float *out, const float *p, const float *c, const float *n, int h, int w) {
    const int64_t cells = (int64_t)h * w;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < cells; i += (int64_t)gridDim.x * blockDim.x) {
        const int r = (int)(i / w), q = (int)(i - (int64_t)r * w);
        const float *pl[3] = {p, c, n};
        float v[27];
        int k = 0;
        for (int z = 0; z < 3; z++)
            for (int dr = -1; dr <= 1; dr++)
                for (int dc = -1; dc <= 1; dc++)
                    v[k++] = pl[z][(int64_t)clampi(r + dr, 0, h - 1) * w + clampi(q + dc, 0, w - 1)];
        sort_floats(v);
        out[i] = v[13];
    }
}

extern "C" void lp_cuda_mask_median(const lp_backend *be, float *out, const float *p, const float *c, const float *n,
                                    int h, int w) {
    const char *op = "mask_median";
    if (!sizes_ok(be, op, h, w)) return;
    const int64_t cells = (int64_t)h * w;
    if (!cells) return;
    if (!out || !p || !c || !n || out_overlaps(out, cells * (int64_t)sizeof(float), p, c, n)) {
        arg_error(be, op, "a NULL or overlapping plane", h, w);
        return;
    }
    median_kernel<<<lp_cuda_grid(cells, THREADS), THREADS, 0, lp_cuda(be)->stream>>>(out, p, c, n, h, w);
    lp_cuda_check_launch(be, op);
}

/* ------------------------------------------------------- step 3: Gaussian */

typedef struct {
    float w[18]; /* [z][dr + 1][dc + 1], z 0: plane p (t − 1), 1: plane c (t) */
} gauss_taps;

/* Σ wt · plane over z, dr, dc (in that nesting) of the clamped-edge cells of
 * p and c, each product and each sum rounded in f32 from s = 0. */
__global__ static void gauss_kernel(float *out, const float *p, const float *c, int h, int w, const gauss_taps wt) {
    const int64_t cells = (int64_t)h * w;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < cells; i += (int64_t)gridDim.x * blockDim.x) {
        const int r = (int)(i / w), q = (int)(i - (int64_t)r * w);
        const float *pl[2] = {p, c};
        float s = 0.0f;
        for (int z = 0; z < 2; z++)
            for (int dr = -1; dr <= 1; dr++)
                for (int dc = -1; dc <= 1; dc++) {
                    const float x = pl[z][(int64_t)clampi(r + dr, 0, h - 1) * w + clampi(q + dc, 0, w - 1)];
                    s = __fadd_rn(s, __fmul_rn(wt.w[z * 9 + (dr + 1) * 3 + (dc + 1)], x));
                }
        out[i] = s;
    }
}

extern "C" void lp_cuda_mask_gauss(const lp_backend *be, float *out, const float *p, const float *c, int h, int w,
                                   const float *wt) {
    const char *op = "mask_gauss";
    if (!sizes_ok(be, op, h, w)) return;
    const int64_t cells = (int64_t)h * w;
    if (!cells) return;
    if (!out || !p || !c || !wt || out_overlaps(out, cells * (int64_t)sizeof(float), p, c, NULL)) {
        arg_error(be, op, "a NULL or overlapping plane, or no weights", h, w);
        return;
    }
    gauss_taps taps;
    for (int k = 0; k < 18; k++) taps.w[k] = wt[k];
    gauss_kernel<<<lp_cuda_grid(cells, THREADS), THREADS, 0, lp_cuda(be)->stream>>>(out, p, c, h, w, taps);
    lp_cuda_check_launch(be, op);
}

/* ------------------------------------------------- step 4: threshold, or */

/* out[i] = in[i] > tau. */
__global__ static void threshold_kernel(uint8_t *out, const float *in, int64_t n, float tau) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = in[i] > tau;
}

/* dst[i] |= src[i]. */
__global__ static void or_kernel(uint8_t *dst, const uint8_t *src, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] |= src[i];
}

extern "C" void lp_cuda_mask_threshold(const lp_backend *be, uint8_t *out, const float *in, int64_t n, float tau) {
    const char *op = "mask_threshold";
    if (n < 0 || (n && (!out || !in || lp_cuda_overlap(out, n, in, n * (int64_t)sizeof(float))))) {
        lp_cuda_set_sticky(be, lp_fail(LP_ERR_ARG, "%s: invalid arguments (n %lld, a NULL or overlapping buffer)", op,
                                       (long long)n));
        return;
    }
    if (!n) return;
    threshold_kernel<<<lp_cuda_grid(n, THREADS), THREADS, 0, lp_cuda(be)->stream>>>(out, in, n, tau);
    lp_cuda_check_launch(be, op);
}

extern "C" void lp_cuda_mask_or(const lp_backend *be, uint8_t *dst, const uint8_t *src, int64_t n) {
    const char *op = "mask_or";
    /* dst == src is harmless; a partial overlap would race */
    if (n < 0 || (n && (!dst || !src || (dst != src && lp_cuda_overlap(dst, n, src, n))))) {
        lp_cuda_set_sticky(be, lp_fail(LP_ERR_ARG, "%s: invalid arguments (n %lld, a NULL or overlapping buffer)", op,
                                       (long long)n));
        return;
    }
    if (!n) return;
    or_kernel<<<lp_cuda_grid(n, THREADS), THREADS, 0, lp_cuda(be)->stream>>>(dst, src, n);
    lp_cuda_check_launch(be, op);
}

/* ------------------------------------------------------- step 6: majority */

/* 1 where at least 14 of the 27 clamped-edge cells of p, c, n around the
 * cell are nonzero. */
__global__ static void majority_kernel(uint8_t *out, const uint8_t *p, const uint8_t *c, const uint8_t *n, int h,
                                       int w) {
    const int64_t cells = (int64_t)h * w;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < cells; i += (int64_t)gridDim.x * blockDim.x) {
        const int r = (int)(i / w), q = (int)(i - (int64_t)r * w);
        const uint8_t *pl[3] = {p, c, n};
        int ones = 0;
        for (int z = 0; z < 3; z++)
            for (int dr = -1; dr <= 1; dr++)
                for (int dc = -1; dc <= 1; dc++)
                    ones += pl[z][(int64_t)clampi(r + dr, 0, h - 1) * w + clampi(q + dc, 0, w - 1)] != 0;
        out[i] = ones >= 14;
    }
}

extern "C" void lp_cuda_mask_majority(const lp_backend *be, uint8_t *out, const uint8_t *p, const uint8_t *c,
                                      const uint8_t *n, int h, int w) {
    const char *op = "mask_majority";
    if (!sizes_ok(be, op, h, w)) return;
    const int64_t cells = (int64_t)h * w;
    if (!cells) return;
    if (!out || !p || !c || !n || out_overlaps(out, cells, p, c, n)) {
        arg_error(be, op, "a NULL or overlapping plane", h, w);
        return;
    }
    majority_kernel<<<lp_cuda_grid(cells, THREADS), THREADS, 0, lp_cuda(be)->stream>>>(out, p, c, n, h, w);
    lp_cuda_check_launch(be, op);
}

/* --------------------------------------------------- step 7: open, close */

/* 3×3 erosion (erode 1: all nonzero; outside cells skipped, i.e. count as 1)
 * or dilation (erode 0: any nonzero; outside skipped, i.e. 0) of one plane. */
__global__ static void morph3_kernel(uint8_t *out, const uint8_t *in, int h, int w, int erode) {
    const int64_t cells = (int64_t)h * w;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < cells; i += (int64_t)gridDim.x * blockDim.x) {
        const int r = (int)(i / w), q = (int)(i - (int64_t)r * w);
        int v = erode;
        for (int dr = -1; dr <= 1; dr++)
            for (int dc = -1; dc <= 1; dc++) {
                const int rr = r + dr, cc = q + dc;
                if (rr < 0 || rr >= h || cc < 0 || cc >= w) continue;
                const int x = in[(int64_t)rr * w + cc] != 0;
                v = erode ? (v && x) : (v || x);
            }
        out[i] = (uint8_t)v;
    }
}

extern "C" void lp_cuda_mask_open_close(const lp_backend *be, uint8_t *out, const uint8_t *in, uint8_t *tmp, int h,
                                        int w) {
    const char *op = "mask_open_close";
    if (!sizes_ok(be, op, h, w)) return;
    const int64_t cells = (int64_t)h * w;
    if (!cells) return;
    /* out may equal in (the first launch reads in entirely before the second
     * writes out); tmp must be apart from both */
    if (!out || !in || !tmp || lp_cuda_overlap(tmp, cells, in, cells) || lp_cuda_overlap(tmp, cells, out, cells) ||
        (out != in && lp_cuda_overlap(out, cells, in, cells))) {
        arg_error(be, op, "a NULL or overlapping plane", h, w);
        return;
    }
    const unsigned grid = lp_cuda_grid(cells, THREADS);
    cudaStream_t s = lp_cuda(be)->stream;
    morph3_kernel<<<grid, THREADS, 0, s>>>(tmp, in, h, w, 1);  /* opening: erode … */
    morph3_kernel<<<grid, THREADS, 0, s>>>(out, tmp, h, w, 0); /* … then dilate */
    morph3_kernel<<<grid, THREADS, 0, s>>>(tmp, out, h, w, 0); /* closing: dilate … */
    morph3_kernel<<<grid, THREADS, 0, s>>>(out, tmp, h, w, 1); /* … then erode */
    lp_cuda_check_launch(be, op);
}

/* --------------------------------------------------------- step 8: dilate */

/* 1 where any cell of p, c, n (p or n NULL: absent) within rows r−2…r+2 and
 * columns q−2…q+2, clamped to the frame, is nonzero. */
__global__ static void dilate_kernel(uint8_t *out, const uint8_t *p, const uint8_t *c, const uint8_t *n, int h,
                                     int w) {
    const int64_t cells = (int64_t)h * w;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < cells; i += (int64_t)gridDim.x * blockDim.x) {
        const int r = (int)(i / w), q = (int)(i - (int64_t)r * w);
        const int r0 = clampi(r - 2, 0, h - 1), r1 = clampi(r + 2, 0, h - 1);
        const int c0 = clampi(q - 2, 0, w - 1), c1 = clampi(q + 2, 0, w - 1);
        const uint8_t *pl[3] = {p, c, n};
        int v = 0;
        for (int z = 0; z < 3 && !v; z++) {
            if (!pl[z]) continue;
            for (int rr = r0; rr <= r1 && !v; rr++)
                for (int cc = c0; cc <= c1; cc++)
                    if (pl[z][(int64_t)rr * w + cc]) {
                        v = 1;
                        break;
                    }
        }
        out[i] = (uint8_t)v;
    }
}

extern "C" void lp_cuda_mask_dilate(const lp_backend *be, uint8_t *out, const uint8_t *p, const uint8_t *c,
                                    const uint8_t *n, int h, int w) {
    const char *op = "mask_dilate";
    if (!sizes_ok(be, op, h, w)) return;
    const int64_t cells = (int64_t)h * w;
    if (!cells) return;
    if (!out || !c || out_overlaps(out, cells, p, c, n)) {
        arg_error(be, op, "a NULL or overlapping plane", h, w);
        return;
    }
    dilate_kernel<<<lp_cuda_grid(cells, THREADS), THREADS, 0, lp_cuda(be)->stream>>>(out, p, c, n, h, w);
    lp_cuda_check_launch(be, op);
}
