/* The LIPAR keep-mask, batch and streaming (spec/LIPAR.md §1; the streaming
 * definition is in docs/STREAMING_MASK.md). Both modes run the same per-frame
 * kernels below, so a streaming chunk is bit-identical to the batch mask of
 * the truncated clip. */
#include "mask.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CH LP_MASK_CHANNELS
#define PATCH_VALUES (4 * CH)                       /* 2·2·16 = 64 */
#define TRIM_LO ((int)(0.2 * PATCH_VALUES))        /* int(0.2·64) = 12 */
#define TRIM_HI ((int)(0.8 * PATCH_VALUES))        /* int(0.8·64) = 51, exclusive */
#define MAX_SIDE 65536                             /* sanity bound on H and W */

void lp_mask_opts_default(lp_mask_opts *o) {
    o->distance = LP_MASK_L1_GAUSSIAN;
    o->tau = 0.149f;
    o->drift = 1;
    o->tau2 = 0.3f;
}

static const char *const distance_names[] = {"L1_gaussian", "L1", "L2", "cos"};

lp_status lp_mask_distance_from_name(const char *name, lp_mask_distance *out) {
    for (int i = 0; i < 4; i++)
        if (name && !strcmp(name, distance_names[i])) {
            *out = (lp_mask_distance)i;
            return LP_OK;
        }
    return lp_fail(LP_ERR_ARG, "mask distance '%s' is not one of L1_gaussian, L1, L2, cos", name ? name : "(null)");
}

const char *lp_mask_distance_name(lp_mask_distance d) {
    return (unsigned)d < 4 ? distance_names[d] : "?";
}

static inline int clampi(int v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* ---- step 1: patch distance ---- */

static void sort_floats(float *v, int n) {
    for (int i = 1; i < n; i++) {
        float x = v[i];
        int j = i - 1;
        while (j >= 0 && v[j] > x) {
            v[j + 1] = v[j];
            j--;
        }
        v[j + 1] = x;
    }
}

/* Rows [pr0, pr1) of lp_mask_patch_distance. */
static void patch_distance_rows(lp_mask_distance dist, const float *a, const float *b, int H, int W, float *out,
                                int64_t pr0, int64_t pr1) {
    const int w = W / 2;
    const size_t plane = (size_t)H * W;
    for (int pr = (int)pr0; pr < (int)pr1; pr++)
        for (int pc = 0; pc < w; pc++) {
            /* the reference's patch vector order: (dy, dx, channel) */
            float va[PATCH_VALUES], vb[PATCH_VALUES];
            int k = 0;
            for (int dy = 0; dy < 2; dy++)
                for (int dx = 0; dx < 2; dx++)
                    for (int c = 0; c < CH; c++) {
                        size_t i = (size_t)c * plane + (size_t)(2 * pr + dy) * W + (size_t)(2 * pc + dx);
                        va[k] = a[i];
                        vb[k] = b[i];
                        k++;
                    }
            float d;
            if (dist == LP_MASK_COS) {
                double na = 0, nb = 0, dot = 0;
                for (int i = 0; i < PATCH_VALUES; i++) {
                    na += (double)va[i] * va[i];
                    nb += (double)vb[i] * vb[i];
                }
                na = fmax(sqrt(na), 1e-8);
                nb = fmax(sqrt(nb), 1e-8);
                for (int i = 0; i < PATCH_VALUES; i++) dot += (va[i] / na) * (vb[i] / nb);
                d = (float)(1.0 - dot);
            } else {
                float v[PATCH_VALUES];
                for (int i = 0; i < PATCH_VALUES; i++) v[i] = fabsf(va[i] - vb[i]);
                sort_floats(v, PATCH_VALUES);
                if (dist == LP_MASK_L2) {
                    double s = 0;
                    for (int i = 0; i < PATCH_VALUES; i++) s += (double)v[i] * v[i];
                    d = (float)(sqrt(s) / PATCH_VALUES);
                } else { /* trimmed mean: fp32, sequential, ascending (torch.norm p=1 on the CPU) */
                    float s = 0.0f;
                    for (int i = TRIM_LO; i < TRIM_HI; i++) s += v[i];
                    d = s / (float)(TRIM_HI - TRIM_LO);
                }
            }
            out[(size_t)pr * w + pc] = d;
        }
}

void lp_mask_patch_distance(lp_mask_distance dist, const float *a, const float *b, int H, int W, float *out) {
    patch_distance_rows(dist, a, b, H, W, out, 0, H / 2);
}

/* ---- per-frame kernels shared by batch and streaming ----
 * p, c, n are the planes [h][w] of frames t−1, t, t+1 after the caller's edge
 * rule (clamped for "nearest"/"replicate", NULL for outside = 0). */

/* Rows [r0, r1) of lp_mask_frame_median. */
static void median_rows(const float *p, const float *c, const float *n, int h, int w, float *out, int64_t r0,
                        int64_t r1) {
    const float *pl[3] = {p, c, n};
    for (int r = (int)r0; r < (int)r1; r++)
        for (int q = 0; q < w; q++) {
            float v[27];
            int k = 0;
            for (int z = 0; z < 3; z++)
                for (int dr = -1; dr <= 1; dr++)
                    for (int dc = -1; dc <= 1; dc++)
                        v[k++] = pl[z][(size_t)clampi(r + dr, 0, h - 1) * w + clampi(q + dc, 0, w - 1)];
            sort_floats(v, 27);
            out[(size_t)r * w + q] = v[13];
        }
}

/* The distance and median of one frame with the rows spread over a pool
 * (every cell is computed alone, so the results equal the serial ones). */
typedef struct {
    int median; /* 0: distance(a, b), 1: median of the planes p, c, n */
    lp_mask_distance dist;
    const float *a, *b, *p, *c, *n;
    int H, W;
    float *out;
} rows_job;

static void rows_run(void *ctx, int64_t r0, int64_t r1) {
    const rows_job *j = ctx;
    if (j->median) median_rows(j->p, j->c, j->n, j->H / 2, j->W / 2, j->out, r0, r1);
    else patch_distance_rows(j->dist, j->a, j->b, j->H, j->W, j->out, r0, r1);
}

static void rows_on(lp_pool *pool, const rows_job *j) {
    if (pool) lp_parallel_for(pool, j->H / 2, rows_run, (void *)j);
    else rows_run((void *)j, 0, j->H / 2);
}

void lp_mask_frame_distance(lp_pool *pool, lp_mask_distance dist, const float *a, const float *b, int H, int W,
                            float *out) {
    rows_on(pool, &(rows_job){.dist = dist, .a = a, .b = b, .H = H, .W = W, .out = out});
}

void lp_mask_frame_median(lp_pool *pool, const float *p, const float *c, const float *n, int h, int w, float *out) {
    rows_on(pool, &(rows_job){.median = 1, .p = p, .c = c, .n = n, .H = 2 * h, .W = 2 * w, .out = out});
}

/* The 18 causal taps [dt = −1, 0][dr][dc]. Built like the reference's
 * get_gaussian_kernel3d in fp32: exp(−(t²/4.5 + r²/4.5 + c²/4.5)) over the
 * full 3×3×3 grid, the dt = +1 slice zeroed, divided by the sum of all 27. */
void lp_mask_gauss_weights(float wt[18]) {
    const float den = 2.0f * 1.5f * 1.5f;
    float k[3][3][3], sum = 0.0f;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            for (int l = 0; l < 3; l++) {
                float ti = (float)(i - 1), tj = (float)(j - 1), tl = (float)(l - 1);
                k[i][j][l] = i == 2 ? 0.0f : expf(-((ti * ti / den + tj * tj / den) + tl * tl / den));
                sum += k[i][j][l];
            }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int l = 0; l < 3; l++) wt[(i * 3 + j) * 3 + l] = k[i][j][l] / sum;
}

void lp_mask_frame_gauss(const float *p, const float *c, int h, int w, const float *wt, float *out) {
    const float *pl[2] = {p, c};
    for (int r = 0; r < h; r++)
        for (int q = 0; q < w; q++) {
            float s = 0.0f;
            for (int z = 0; z < 2; z++)
                for (int dr = -1; dr <= 1; dr++)
                    for (int dc = -1; dc <= 1; dc++)
                        s += wt[(z * 3 + dr + 1) * 3 + dc + 1] *
                             pl[z][(size_t)clampi(r + dr, 0, h - 1) * w + clampi(q + dc, 0, w - 1)];
            out[(size_t)r * w + q] = s;
        }
}

void lp_mask_frame_majority(const uint8_t *p, const uint8_t *c, const uint8_t *n, int h, int w, uint8_t *out) {
    const uint8_t *pl[3] = {p, c, n};
    for (int r = 0; r < h; r++)
        for (int q = 0; q < w; q++) {
            int ones = 0;
            for (int z = 0; z < 3; z++)
                for (int dr = -1; dr <= 1; dr++)
                    for (int dc = -1; dc <= 1; dc++)
                        ones += pl[z][(size_t)clampi(r + dr, 0, h - 1) * w + clampi(q + dc, 0, w - 1)] != 0;
            out[(size_t)r * w + q] = ones >= 14;
        }
}

/* 3×3 erosion (outside = 1) or dilation (outside = 0) of one frame. */
static void morph3(const uint8_t *in, int h, int w, int erode, uint8_t *out) {
    for (int r = 0; r < h; r++)
        for (int q = 0; q < w; q++) {
            int v = erode;
            for (int dr = -1; dr <= 1; dr++)
                for (int dc = -1; dc <= 1; dc++) {
                    int rr = r + dr, cc = q + dc;
                    if (rr < 0 || rr >= h || cc < 0 || cc >= w) continue;
                    int x = in[(size_t)rr * w + cc] != 0;
                    v = erode ? (v && x) : (v || x);
                }
            out[(size_t)r * w + q] = (uint8_t)v;
        }
}

void lp_mask_frame_dilate(const uint8_t *p, const uint8_t *c, const uint8_t *n, int h, int w, uint8_t *out) {
    const uint8_t *pl[3] = {p, c, n};
    for (int r = 0; r < h; r++)
        for (int q = 0; q < w; q++) {
            int v = 0;
            for (int z = 0; z < 3 && !v; z++) {
                if (!pl[z]) continue;
                for (int rr = clampi(r - 2, 0, h - 1); rr <= clampi(r + 2, 0, h - 1) && !v; rr++)
                    for (int cc = clampi(q - 2, 0, w - 1); cc <= clampi(q + 2, 0, w - 1); cc++)
                        if (pl[z][(size_t)rr * w + cc]) {
                            v = 1;
                            break;
                        }
            }
            out[(size_t)r * w + q] = (uint8_t)v;
        }
}

/* Copies the 2×2×16 patches of src where keep is set into dst ([16][H][W]). */
static void copy_kept_patches(float *dst, const float *src, const uint8_t *keep, int H, int W) {
    const int w = W / 2;
    for (int c = 0; c < CH; c++)
        for (int y = 0; y < H; y++) {
            size_t row = ((size_t)c * H + y) * W;
            const uint8_t *k = keep + (size_t)(y / 2) * w;
            for (int x = 0; x < W; x++)
                if (k[x / 2]) dst[row + x] = src[row + x];
        }
}

/* ---- the steps over whole volumes ---- */

void lp_mask_median3(const float *in, int n, int h, int w, float *out) {
    const size_t hw = (size_t)h * w;
    for (int t = 0; t < n; t++)
        lp_mask_frame_median(NULL, in + clampi(t - 1, 0, n - 1) * hw, in + t * hw, in + clampi(t + 1, 0, n - 1) * hw,
                             h, w, out + t * hw);
}

void lp_mask_gauss_causal(const float *in, int n, int h, int w, float *out) {
    const size_t hw = (size_t)h * w;
    float wt[18];
    lp_mask_gauss_weights(wt);
    for (int t = 0; t < n; t++)
        lp_mask_frame_gauss(in + clampi(t - 1, 0, n - 1) * hw, in + t * hw, h, w, wt, out + t * hw);
}

void lp_mask_threshold(const float *in, int64_t count, float tau, uint8_t *keep) {
    for (int64_t i = 0; i < count; i++) keep[i] = in[i] > tau;
}

lp_status lp_mask_drift(lp_mask_distance dist, float tau2, const float *latents, int T, int H, int W,
                        uint8_t *keep) {
    if (T <= 3) return LP_OK; /* frames 1 and 2 are never drift-checked */
    const size_t chw = (size_t)CH * H * W, hw = (size_t)(H / 2) * (W / 2);
    float *ref = malloc(chw * sizeof *ref), *cand = malloc(chw * sizeof *cand), *d = malloc(hw * sizeof *d);
    if (!ref || !cand || !d) {
        free(ref);
        free(cand);
        free(d);
        return lp_fail(LP_ERR_NOMEM, "mask drift check: out of memory for %dx%d latents", H, W);
    }
    memcpy(ref, latents, chw * sizeof *ref);
    memcpy(cand, latents, chw * sizeof *cand);
    for (int t = 1; t < T; t++) {
        const float *x = latents + t * chw;
        uint8_t *k = keep + (size_t)(t - 1) * hw;
        if (t >= 3) {
            lp_mask_patch_distance(dist, ref, x, H, W, d);
            for (size_t i = 0; i < hw; i++) k[i] |= d[i] > tau2;
        }
        copy_kept_patches(cand, x, k, H, W);
        if (t % LP_MASK_CHUNK == LP_MASK_CHUNK - 1) memcpy(ref, cand, chw * sizeof *ref);
    }
    free(ref);
    free(cand);
    free(d);
    return LP_OK;
}

void lp_mask_majority3(const uint8_t *in, int n, int h, int w, uint8_t *out) {
    const size_t hw = (size_t)h * w;
    for (int t = 0; t < n; t++)
        lp_mask_frame_majority(in + clampi(t - 1, 0, n - 1) * hw, in + t * hw, in + clampi(t + 1, 0, n - 1) * hw, h,
                               w, out + t * hw);
}

void lp_mask_open_close(const uint8_t *in, int h, int w, uint8_t *tmp, uint8_t *out) {
    morph3(in, h, w, 1, tmp);  /* opening: erode … */
    morph3(tmp, h, w, 0, out); /* … then dilate */
    morph3(out, h, w, 0, tmp); /* closing: dilate … */
    morph3(tmp, h, w, 1, out); /* … then erode */
}

void lp_mask_dilate(const uint8_t *in, int n, int h, int w, uint8_t *out) {
    const size_t hw = (size_t)h * w;
    for (int t = 0; t < n; t++)
        lp_mask_frame_dilate(t > 0 ? in + (t - 1) * hw : NULL, in + t * hw, t + 1 < n ? in + (t + 1) * hw : NULL, h,
                             w, out + t * hw);
}

double lp_mask_kept_fraction(const uint8_t *keep, int64_t n) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) k += keep[i] != 0;
    return n > 0 ? (double)k / (double)n : 0.0;
}

/* ---- batch ---- */

static lp_status check_opts(const lp_mask_opts *o, int H, int W, const char *what) {
    if (!o || (unsigned)o->distance >= 4)
        return lp_fail(LP_ERR_ARG, "%s: missing options or unknown distance", what);
    if (H <= 0 || W <= 0 || H > MAX_SIDE || W > MAX_SIDE)
        return lp_fail(LP_ERR_SHAPE, "%s: latent size %dx%d out of range", what, H, W);
    if (H % 2 || W % 2)
        return lp_fail(LP_ERR_SHAPE, "%s: latent size %dx%d is odd; the 2x2 patch grid needs even H and W", what,
                       H, W);
    return LP_OK;
}

lp_status lp_mask_compute(const lp_mask_opts *o, const float *latents, int T, int H, int W, uint8_t *keep,
                          double *kept_per_frame, double *kept_fraction) {
    LP_TRY(check_opts(o, H, W, "lp_mask_compute"));
    if (T < 1 || !latents || !keep)
        return lp_fail(LP_ERR_ARG, "lp_mask_compute: need T >= 1 (got %d) and non-NULL latents and keep", T);
    const int h = H / 2, w = W / 2, n = T - 1;
    const size_t hw = (size_t)h * w, chw = (size_t)CH * H * W;
    memset(keep, 1, hw); /* step 9: frame 0 is all-keep */
    if (n > 0) {
        float *fa = malloc(n * hw * sizeof *fa), *fb = malloc(n * hw * sizeof *fb);
        uint8_t *ua = malloc(n * hw), *ub = malloc(n * hw), *tmp = malloc(hw);
        lp_status s = LP_OK;
        if (!fa || !fb || !ua || !ub || !tmp)
            s = lp_fail(LP_ERR_NOMEM, "lp_mask_compute: out of memory for %d frames of %dx%d", T, H, W);
        if (s == LP_OK) {
            for (int t = 1; t < T; t++)
                lp_mask_patch_distance(o->distance, latents + t * chw, latents + (t - 1) * chw, H, W,
                                       fa + (t - 1) * hw);
            lp_mask_median3(fa, n, h, w, fb);
            const float *d = fb;
            if (o->distance == LP_MASK_L1_GAUSSIAN) {
                lp_mask_gauss_causal(fb, n, h, w, fa);
                d = fa;
            }
            lp_mask_threshold(d, (int64_t)n * hw, o->tau, ua);
            if (o->drift) s = lp_mask_drift(o->distance, o->tau2, latents, T, H, W, ua);
        }
        if (s == LP_OK) {
            lp_mask_majority3(ua, n, h, w, ub);
            for (int t = 0; t < n; t++) lp_mask_open_close(ub + t * hw, h, w, tmp, ub + t * hw);
            lp_mask_dilate(ub, n, h, w, keep + hw);
        }
        free(fa);
        free(fb);
        free(ua);
        free(ub);
        free(tmp);
        LP_TRY(s);
    }
    if (kept_per_frame)
        for (int t = 0; t < T; t++) kept_per_frame[t] = lp_mask_kept_fraction(keep + t * hw, (int64_t)hw);
    if (kept_fraction) *kept_fraction = lp_mask_kept_fraction(keep, (int64_t)T * hw);
    return LP_OK;
}

/* ---- streaming ----
 * A push of frames t0…E (E = t0+n−1) works on a window of frames t0−2 … E,
 * slot = frame − (t0 − 2). Slots 0 and 1 (frames t0−2, t0−1) hold what the
 * previous push carried over: values that were final then (d, m and the
 * step-5 mask of t0−2, d and the drift bits of t0−1). Frame t0−1 was the end
 * of the truncated clip last time; now that frame t0 is known its median,
 * Gaussian, threshold, drift, majority and morphology are recomputed, which
 * gives the batch values of the longer prefix. Every buffer lives in the
 * backend's memory and every step is a backend op (backend.h, the keep-mask
 * ops), so a GPU computes the mask where the latents are. */

#define WIN (LP_MASK_CHUNK + 2)

struct lp_mask_stream {
    lp_mask_opts o;
    lp_backend *be;
    int H, W, h, w;
    int64_t t; /* frames received */
    int ended;
    float wt[18]; /* step 3's weights */
    float *x;     /* [1 + LP_MASK_CHUNK][16][H][W]: frame t0−1, then the pushed frames */
    float *cand;  /* [16][H][W]: drift candidate after frame t−2 (then of the current push) */
    float *ref;   /* [16][H][W]: drift reference R of the current chunk */
    float *d[WIN], *m[WIN], *g;
    uint8_t *k5[WIN], *drift[WIN], *k6[WIN], *tmp, *keep; /* keep: [LP_MASK_CHUNK][h][w] */
};

void lp_mask_stream_close(lp_mask_stream *s) {
    if (!s) return;
    lp_backend *be = s->be;
    void *bufs[] = {s->x, s->cand, s->ref, s->g, s->tmp, s->keep};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i]) be->release(be, bufs[i]);
    for (int i = 0; i < WIN; i++) {
        void *per_slot[] = {s->d[i], s->m[i], s->k5[i], s->drift[i], s->k6[i]};
        for (int j = 0; j < 5; j++)
            if (per_slot[j]) be->release(be, per_slot[j]);
    }
    free(s);
}

lp_status lp_mask_stream_open(const lp_mask_opts *o, int H, int W, lp_backend *be, lp_mask_stream **out) {
    if (!out) return lp_fail(LP_ERR_ARG, "lp_mask_stream_open: out is NULL");
    *out = NULL;
    if (!be) return lp_fail(LP_ERR_ARG, "lp_mask_stream_open: no backend");
    LP_TRY(check_opts(o, H, W, "lp_mask_stream_open"));
    lp_mask_stream *s = calloc(1, sizeof *s);
    if (!s) return lp_fail(LP_ERR_NOMEM, "lp_mask_stream_open: out of memory");
    s->o = *o;
    s->be = be;
    s->H = H;
    s->W = W;
    s->h = H / 2;
    s->w = W / 2;
    lp_mask_gauss_weights(s->wt);
    const size_t chw = (size_t)CH * H * W, hw = (size_t)s->h * s->w;
    /* be->alloc zero-fills: the step-5 and drift bits start clear */
    int ok = (s->x = be->alloc(be, (1 + LP_MASK_CHUNK) * chw * sizeof(float))) &&
             (s->cand = be->alloc(be, chw * sizeof(float))) && (s->ref = be->alloc(be, chw * sizeof(float))) &&
             (s->g = be->alloc(be, hw * sizeof(float))) && (s->tmp = be->alloc(be, hw)) &&
             (s->keep = be->alloc(be, LP_MASK_CHUNK * hw));
    for (int i = 0; i < WIN && ok; i++)
        ok = (s->d[i] = be->alloc(be, hw * sizeof(float))) && (s->m[i] = be->alloc(be, hw * sizeof(float))) &&
             (s->k5[i] = be->alloc(be, hw)) && (s->drift[i] = be->alloc(be, hw)) && (s->k6[i] = be->alloc(be, hw));
    if (!ok) {
        lp_mask_stream_close(s);
        return lp_fail(LP_ERR_NOMEM, "lp_mask_stream_open: out of %s memory for %dx%d latents", be->name, H, W);
    }
    *out = s;
    return LP_OK;
}

int64_t lp_mask_stream_frames(const lp_mask_stream *s) {
    return s ? s->t : 0;
}

lp_status lp_mask_stream_push_chunk(lp_mask_stream *s, const float *latents, int n, uint8_t *keep) {
    if (!s || !latents || !keep) return lp_fail(LP_ERR_ARG, "lp_mask_stream_push_chunk: NULL argument");
    if (n < 1 || n > LP_MASK_CHUNK)
        return lp_fail(LP_ERR_ARG, "lp_mask_stream_push_chunk: %d frames, expected 1..%d", n, LP_MASK_CHUNK);
    if (s->ended)
        return lp_fail(LP_ERR_ARG, "lp_mask_stream_push_chunk: the stream ended with a chunk of fewer than %d frames",
                       LP_MASK_CHUNK);
    lp_backend *be = s->be;
    const int H = s->H, W = s->W, h = s->h, w = s->w;
    const size_t chw = (size_t)CH * H * W, hw = (size_t)h * w;
    const int64_t t0 = s->t, E = t0 + n - 1, base = t0 - 2, lo = t0 - 1 > 1 ? t0 - 1 : 1;
#define SLOT(t) ((int)((t) - base))
#define FRAME(t) (s->x + (size_t)((t) - t0 + 1) * chw) /* frame t0 − 1 is in front of the pushed ones */
#define CL(t) ((t) < 1 ? 1 : (t) > E ? E : (t))     /* "nearest" edges of the truncated clip */

    LP_TRY(be->upload(be, FRAME(t0), latents, (size_t)n * chw * sizeof(float)));
    /* step 1 */
    for (int64_t t = t0 > 1 ? t0 : 1; t <= E; t++)
        be->mask_distance(be, s->d[SLOT(t)], FRAME(t), FRAME(t - 1), H, W, (int)s->o.distance);
    /* steps 2-4 for frames lo…E */
    for (int64_t t = lo; t <= E; t++)
        be->mask_median(be, s->m[SLOT(t)], s->d[SLOT(CL(t - 1))], s->d[SLOT(t)], s->d[SLOT(CL(t + 1))], h, w);
    for (int64_t t = lo; t <= E; t++) {
        const float *d = s->m[SLOT(t)];
        if (s->o.distance == LP_MASK_L1_GAUSSIAN) {
            be->mask_gauss(be, s->g, s->m[SLOT(CL(t - 1))], s->m[SLOT(t)], h, w, s->wt);
            d = s->g;
        }
        be->mask_threshold(be, s->k5[SLOT(t)], d, (int64_t)hw, s->o.tau);
    }
    /* step 5: R is fixed within a chunk; cand collects the kept patches */
    if (s->o.drift && E >= 1) {
        if (t0 == 0) {
            LP_TRY(be->copy(be, s->ref, FRAME(0), chw * sizeof(float)));
        } else {
            uint8_t *k = s->k5[SLOT(t0 - 1)];
            be->mask_or(be, k, s->drift[SLOT(t0 - 1)], (int64_t)hw);
            LP_TRY(be->copy_patches(be, s->cand, FRAME(t0 - 1), k, 1, CH, H, W));
            LP_TRY(be->copy(be, s->ref, s->cand, chw * sizeof(float)));
        }
        LP_TRY(be->copy(be, s->cand, s->ref, chw * sizeof(float)));
        for (int64_t t = t0 > 1 ? t0 : 1; t <= E; t++) {
            uint8_t *k = s->k5[SLOT(t)], *dr = s->drift[SLOT(t)];
            if (t >= 3) {
                be->mask_distance(be, s->g, s->ref, FRAME(t), H, W, (int)s->o.distance);
                be->mask_threshold(be, dr, s->g, (int64_t)hw, s->o.tau2);
                be->mask_or(be, k, dr, (int64_t)hw);
            } else {
                LP_TRY(be->clear(be, dr, hw));
            }
            if (t < E) LP_TRY(be->copy_patches(be, s->cand, FRAME(t), k, 1, CH, H, W));
        }
    }
    /* steps 6-7 for frames lo…E */
    for (int64_t t = lo; t <= E; t++) {
        uint8_t *k6 = s->k6[SLOT(t)];
        be->mask_majority(be, k6, s->k5[SLOT(CL(t - 1))], s->k5[SLOT(t)], s->k5[SLOT(CL(t + 1))], h, w);
        be->mask_open_close(be, k6, k6, s->tmp, h, w);
    }
    /* step 8 for frames t0…E (outside the truncated clip = 0) */
    for (int64_t t = t0 > 1 ? t0 : 1; t <= E; t++)
        be->mask_dilate(be, s->keep + (size_t)(t - t0) * hw, t - 1 >= 1 ? s->k6[SLOT(t - 1)] : NULL, s->k6[SLOT(t)],
                        t + 1 <= E ? s->k6[SLOT(t + 1)] : NULL, h, w);
    LP_TRY(be->download(be, keep, s->keep, (size_t)n * hw));
    if (t0 == 0) memset(keep, 1, hw); /* frame 0 is all-keep */

    s->t += n;
    if (n < LP_MASK_CHUNK) {
        s->ended = 1;
        return LP_OK;
    }
    /* carry frames E−1, E into slots 0, 1 (and frame E in front of the next push) */
    LP_TRY(be->copy(be, FRAME(t0 - 1), FRAME(E), chw * sizeof(float)));
    LP_TRY(be->copy(be, s->d[0], s->d[SLOT(E - 1)], hw * sizeof(float)));
    LP_TRY(be->copy(be, s->d[1], s->d[SLOT(E)], hw * sizeof(float)));
    LP_TRY(be->copy(be, s->m[0], s->m[SLOT(E - 1)], hw * sizeof(float)));
    LP_TRY(be->copy(be, s->k5[0], s->k5[SLOT(E - 1)], hw));
    LP_TRY(be->copy(be, s->drift[1], s->drift[SLOT(E)], hw));
#undef SLOT
#undef FRAME
#undef CL
    return LP_OK;
}
