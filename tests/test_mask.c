/* The LIPAR keep-mask (src/prune/mask.h): golden masks bit-exact, every step
 * against a naive reference written here (edges, tiny grids, short clips),
 * and the streaming mask against its definition (docs/STREAMING_MASK.md). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/io/tensor_file.h"
#include "../src/prune/mask.h"
#include "test_util.h"

#define CH LP_MASK_CHANNELS
/* CHECK for conditions whose text says it all (CHECK itself needs a message) */
#define REQUIRE(cond) CHECK(cond, "%s", "")

/* The backend the streaming masks run on: the CPU with one thread (a test
 * swaps in one with three) */
static lp_backend *stream_be;

/* ---- helpers ---- */

static int clampi(int v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Loads a [1, T, 16, H, W] latent tensor as f32 (caller frees *x). */
static int load_latents(const char *path, const char *name, float **x, int *T, int *H, int *W) {
    lp_tensor_file *f;
    if (lp_tensor_file_open(path, &f) != LP_OK) {
        fprintf(stderr, "  %s\n", lp_last_error());
        return 1;
    }
    const lp_tensor *t = name ? lp_tensor_file_find(f, name) : lp_tensor_file_at(f, 0);
    int ok = t && t->ndim == 5 && t->shape[0] == 1 && t->shape[2] == CH;
    if (ok) {
        *T = (int)t->shape[1];
        *H = (int)t->shape[3];
        *W = (int)t->shape[4];
        *x = malloc((size_t)lp_tensor_numel(t) * sizeof **x);
        ok = *x && lp_tensor_read_f32(t, 0, lp_tensor_numel(t), *x) == LP_OK;
    }
    lp_tensor_file_close(f);
    if (!ok) fprintf(stderr, "  %s: no [1, T, 16, H, W] tensor '%s'\n", path, name ? name : "(first)");
    return !ok;
}

/* A synthetic clip with real structure: a fixed background with faint noise,
 * a square moving right by one patch per frame, and a band that drifts slowly
 * (below tau per frame, above tau2 over several chunks). */
static float *synthetic_clip(int T, int H, int W, uint32_t seed) {
    const size_t chw = (size_t)CH * H * W;
    float *x = malloc((size_t)T * chw * sizeof *x), *noise = malloc(chw * sizeof *noise);
    if (!x || !noise) {
        free(x);
        free(noise);
        return NULL;
    }
    lp_test_fill(x, chw, seed, 1.0f);
    for (int t = 1; t < T; t++) {
        lp_test_fill(noise, chw, seed + 100 + (uint32_t)t, 0.05f);
        for (int c = 0; c < CH; c++)
            for (int y = 0; y < H; y++)
                for (int q = 0; q < W; q++) {
                    size_t i = ((size_t)c * H + y) * W + q;
                    float v = x[i] + noise[i];
                    if (y < H / 4) v += 0.03f * (float)t; /* slow drift */
                    int sq0 = (2 * t) % W;
                    if (y >= H / 2 && y < H / 2 + 4 && q >= sq0 && q < sq0 + 4) v = noise[i] * 20.0f;
                    x[(size_t)t * chw + i] = v;
                }
    }
    free(noise);
    return x;
}

/* ---- naive references ---- */

/* Distance with everything in double from a full sort. */
static double naive_distance(lp_mask_distance dist, const float *a, const float *b, int H, int W, int pr, int pc) {
    float v[64], va[64], vb[64];
    int k = 0;
    for (int c = 0; c < CH; c++)
        for (int dy = 0; dy < 2; dy++)
            for (int dx = 0; dx < 2; dx++) {
                size_t i = ((size_t)c * H + 2 * pr + dy) * W + 2 * pc + dx;
                va[k] = a[i];
                vb[k] = b[i];
                v[k] = fabsf(a[i] - b[i]);
                k++;
            }
    qsort(v, 64, sizeof *v, cmp_float);
    double s = 0, na = 0, nb = 0, dot = 0;
    switch (dist) {
    case LP_MASK_L2:
        for (int i = 0; i < 64; i++) s += (double)v[i] * v[i];
        return sqrt(s) / 64;
    case LP_MASK_COS:
        for (int i = 0; i < 64; i++) {
            na += (double)va[i] * va[i];
            nb += (double)vb[i] * vb[i];
            dot += (double)va[i] * vb[i];
        }
        return 1 - dot / (fmax(sqrt(na), 1e-8) * fmax(sqrt(nb), 1e-8));
    default:
        for (int i = 12; i <= 50; i++) s += v[i];
        return s / 39;
    }
}

/* Builds a nearest-padded copy [(n+2)][(h+2)][(w+2)] of a float volume. */
static float *pad_nearest(const float *in, int n, int h, int w) {
    float *p = malloc((size_t)(n + 2) * (h + 2) * (w + 2) * sizeof *p);
    for (int t = 0; t < n + 2; t++)
        for (int r = 0; r < h + 2; r++)
            for (int q = 0; q < w + 2; q++)
                p[((size_t)t * (h + 2) + r) * (w + 2) + q] =
                    in[((size_t)clampi(t - 1, 0, n - 1) * h + clampi(r - 1, 0, h - 1)) * w + clampi(q - 1, 0, w - 1)];
    return p;
}

static void naive_median3(const float *in, int n, int h, int w, float *out) {
    float *p = pad_nearest(in, n, h, w);
    for (int t = 0; t < n; t++)
        for (int r = 0; r < h; r++)
            for (int q = 0; q < w; q++) {
                float v[27];
                int k = 0;
                for (int a = 0; a < 3; a++)
                    for (int b = 0; b < 3; b++)
                        for (int c = 0; c < 3; c++) v[k++] = p[((size_t)(t + a) * (h + 2) + r + b) * (w + 2) + q + c];
                qsort(v, 27, sizeof *v, cmp_float);
                out[((size_t)t * h + r) * w + q] = v[13];
            }
    free(p);
}

/* The full 3×3×3 kernel in double with the dt = +1 slice zero, replicate padding. */
static void naive_gauss(const float *in, int n, int h, int w, double *out) {
    double k[3][3][3], sum = 0;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 3; c++) {
                int dt = a - 1, dr = b - 1, dc = c - 1;
                k[a][b][c] = dt > 0 ? 0 : exp(-(dt * dt + dr * dr + dc * dc) / (2 * 1.5 * 1.5));
                sum += k[a][b][c];
            }
    float *p = pad_nearest(in, n, h, w);
    for (int t = 0; t < n; t++)
        for (int r = 0; r < h; r++)
            for (int q = 0; q < w; q++) {
                double s = 0;
                for (int a = 0; a < 3; a++)
                    for (int b = 0; b < 3; b++)
                        for (int c = 0; c < 3; c++)
                            s += k[a][b][c] / sum * p[((size_t)(t + a) * (h + 2) + r + b) * (w + 2) + q + c];
                out[((size_t)t * h + r) * w + q] = s;
            }
    free(p);
}

/* Binary median as the sorted middle of the 27 (nearest-padded) bits. */
static void naive_majority3(const uint8_t *in, int n, int h, int w, uint8_t *out) {
    float *f = calloc((size_t)n * h * w, sizeof *f), *m = malloc((size_t)n * h * w * sizeof *m);
    for (size_t i = 0; i < (size_t)n * h * w; i++) f[i] = in[i] ? 1.0f : 0.0f;
    naive_median3(f, n, h, w, m);
    for (size_t i = 0; i < (size_t)n * h * w; i++) out[i] = m[i] > 0.5f;
    free(f);
    free(m);
}

/* min (erode) or max (dilate) over a 3×3 window of a frame padded with border. */
static void naive_morph(const uint8_t *in, int h, int w, int erode, uint8_t *out) {
    uint8_t *p = malloc((size_t)(h + 2) * (w + 2));
    memset(p, erode ? 255 : 0, (size_t)(h + 2) * (w + 2));
    for (int r = 0; r < h; r++)
        for (int q = 0; q < w; q++) p[(size_t)(r + 1) * (w + 2) + q + 1] = in[(size_t)r * w + q] ? 255 : 0;
    for (int r = 0; r < h; r++)
        for (int q = 0; q < w; q++) {
            int v = erode ? 255 : 0;
            for (int b = 0; b < 3; b++)
                for (int c = 0; c < 3; c++) {
                    int x = p[(size_t)(r + b) * (w + 2) + q + c];
                    v = erode ? (x < v ? x : v) : (x > v ? x : v);
                }
            out[(size_t)r * w + q] = v > 0;
        }
    free(p);
}

static void naive_open_close(const uint8_t *in, int h, int w, uint8_t *out) {
    uint8_t *a = malloc((size_t)h * w), *b = malloc((size_t)h * w);
    naive_morph(in, h, w, 1, a);
    naive_morph(a, h, w, 0, b);
    naive_morph(b, h, w, 0, a);
    naive_morph(a, h, w, 1, out);
    free(a);
    free(b);
}

static void naive_dilate(const uint8_t *in, int n, int h, int w, uint8_t *out) {
    const int P = n + 2, R = h + 4, Q = w + 4;
    uint8_t *p = calloc((size_t)P * R * Q, 1);
    for (int t = 0; t < n; t++)
        for (int r = 0; r < h; r++)
            for (int q = 0; q < w; q++) p[((size_t)(t + 1) * R + r + 2) * Q + q + 2] = in[((size_t)t * h + r) * w + q];
    for (int t = 0; t < n; t++)
        for (int r = 0; r < h; r++)
            for (int q = 0; q < w; q++) {
                int v = 0;
                for (int a = 0; a < 3; a++)
                    for (int b = 0; b < 5; b++)
                        for (int c = 0; c < 5; c++) v |= p[((size_t)(t + a) * R + r + b) * Q + q + c];
                out[((size_t)t * h + r) * w + q] = (uint8_t)v;
            }
    free(p);
}

/* Step 5 in the reference's shape: prepend an all-keep frame 0, take per patch
 * the last kept frame among 0…2 as R, then scan t >= 3. Records the smallest
 * |distance − tau2| seen in *margin. */
static void naive_drift(lp_mask_distance dist, float tau2, const float *x, int T, int H, int W, uint8_t *keep,
                        double *margin) {
    if (T <= 3) return;
    const int h = H / 2, w = W / 2;
    const size_t chw = (size_t)CH * H * W, hw = (size_t)h * w;
    float *R = malloc(chw * sizeof *R), *cand = malloc(chw * sizeof *cand), *d = malloc(hw * sizeof *d);
    for (int pr = 0; pr < h; pr++)
        for (int pc = 0; pc < w; pc++) {
            int last = 0;
            for (int t = 1; t <= 2; t++)
                if (keep[(size_t)(t - 1) * hw + (size_t)pr * w + pc]) last = t;
            for (int c = 0; c < CH; c++)
                for (int dy = 0; dy < 2; dy++)
                    for (int dx = 0; dx < 2; dx++) {
                        size_t i = ((size_t)c * H + 2 * pr + dy) * W + 2 * pc + dx;
                        R[i] = x[(size_t)last * chw + i];
                    }
        }
    memcpy(cand, R, chw * sizeof *R);
    for (int t = 3; t < T; t++) {
        uint8_t *k = keep + (size_t)(t - 1) * hw;
        lp_mask_patch_distance(dist, R, x + (size_t)t * chw, H, W, d);
        for (size_t i = 0; i < hw; i++) {
            k[i] = k[i] || d[i] > tau2;
            if (margin && fabs((double)d[i] - tau2) < *margin) *margin = fabs((double)d[i] - tau2);
        }
        for (int c = 0; c < CH; c++)
            for (int y = 0; y < H; y++)
                for (int q = 0; q < W; q++) {
                    size_t i = ((size_t)c * H + y) * W + q;
                    if (k[(size_t)(y / 2) * w + q / 2]) cand[i] = x[(size_t)t * chw + i];
                }
        if (t % 3 == 2) memcpy(R, cand, chw * sizeof *R);
    }
    free(R);
    free(cand);
    free(d);
}

/* The whole batch mask from the naive steps (the Gaussian from the library,
 * whose own test is gauss_causal). Records the smallest |d − tau| of step 4
 * and |distance − tau2| of step 5 in *margin (may be NULL). */
static void naive_mask(const lp_mask_opts *o, const float *x, int T, int H, int W, uint8_t *keep, double *margin) {
    const int h = H / 2, w = W / 2, n = T - 1;
    const size_t hw = (size_t)h * w, chw = (size_t)CH * H * W;
    memset(keep, 1, hw);
    if (n == 0) return;
    float *d = malloc(n * hw * sizeof *d), *m = malloc(n * hw * sizeof *m), *g = malloc(n * hw * sizeof *g);
    uint8_t *k = malloc(n * hw), *k6 = malloc(n * hw);
    for (int t = 1; t < T; t++) lp_mask_patch_distance(o->distance, x + t * chw, x + (t - 1) * chw, H, W, d + (t - 1) * hw);
    naive_median3(d, n, h, w, m);
    if (o->distance == LP_MASK_L1_GAUSSIAN) lp_mask_gauss_causal(m, n, h, w, g);
    else memcpy(g, m, n * hw * sizeof *g);
    for (size_t i = 0; i < n * hw; i++) {
        k[i] = g[i] > o->tau;
        if (margin && fabs((double)g[i] - o->tau) < *margin) *margin = fabs((double)g[i] - o->tau);
    }
    if (o->drift) naive_drift(o->distance, o->tau2, x, T, H, W, k, margin);
    naive_majority3(k, n, h, w, k6);
    for (int t = 0; t < n; t++) naive_open_close(k6 + t * hw, h, w, k6 + t * hw);
    naive_dilate(k6, n, h, w, keep + hw);
    free(d);
    free(m);
    free(g);
    free(k);
    free(k6);
}

static int64_t count_diff(const uint8_t *a, const uint8_t *b, size_t n) {
    int64_t k = 0;
    for (size_t i = 0; i < n; i++) k += (a[i] != 0) != (b[i] != 0);
    return k;
}

/* Streams x in chunks and checks the definition: each chunk equals the batch
 * mask of the clip truncated after it (so the last chunk equals the batch mask
 * of the whole clip). With a label, prints how the streaming mask differs from
 * the batch mask of the whole clip (the numbers of docs/STREAMING_MASK.md). */
static int check_stream(const lp_mask_opts *o, const float *x, int T, int H, int W, const char *label) {
    const size_t hw = (size_t)(H / 2) * (W / 2), chw = (size_t)CH * H * W;
    uint8_t *full = malloc(T * hw), *pre = malloc(T * hw), *got = malloc(LP_MASK_CHUNK * hw);
    lp_mask_stream *s = NULL;
    REQUIRE(full && pre && got);
    CHECK(lp_mask_compute(o, x, T, H, W, full, NULL, NULL) == LP_OK, "%s", lp_last_error());
    CHECK(lp_mask_stream_open(o, H, W, stream_be, &s) == LP_OK, "%s", lp_last_error());
    int64_t diff = 0, pos[LP_MASK_CHUNK] = {0}, added = 0, stream_kept = 0;
    for (int t0 = 0; t0 < T; t0 += LP_MASK_CHUNK) {
        int n = T - t0 < LP_MASK_CHUNK ? T - t0 : LP_MASK_CHUNK;
        CHECK(lp_mask_stream_push_chunk(s, x + t0 * chw, n, got) == LP_OK, "%s", lp_last_error());
        REQUIRE(lp_mask_compute(o, x, t0 + n, H, W, pre, NULL, NULL) == LP_OK);
        int64_t dp = count_diff(got, pre + t0 * hw, n * hw);
        CHECK(dp == 0, "chunk at frame %d: %lld cells differ from the batch mask of frames 0..%d", t0, (long long)dp,
              t0 + n - 1);
        for (size_t i = 0; i < n * hw; i++) {
            int d = (got[i] != 0) != (full[t0 * hw + i] != 0);
            diff += d;
            pos[i / hw] += d;
            added += d && got[i];
            stream_kept += got[i] != 0;
        }
    }
    if (label)
        printf("    streaming %s: %lld of %zu cells differ from batch (%.2f%%; by chunk position %lld/%lld/%lld; "
               "+%lld kept, -%lld pruned), kept %.4f -> %.4f\n",
               label, (long long)diff, T * hw, 100.0 * diff / (double)(T * hw), (long long)pos[0], (long long)pos[1],
               (long long)pos[2], (long long)added, (long long)(diff - added),
               lp_mask_kept_fraction(full, (int64_t)(T * hw)), (double)stream_kept / (double)(T * hw));
    REQUIRE(lp_mask_stream_frames(s) == T);
    lp_mask_stream_close(s);
    free(full);
    free(pre);
    free(got);
    return 0;
}

/* ---- golden ---- */

static int golden_case(const char *rel) {
    const char *path = lp_test_shared(rel);
    if (!path) return lp_test_skip_shared(rel);
    lp_tensor_file *f;
    CHECK(lp_tensor_file_open(path, &f) == LP_OK, "%s", lp_last_error());
    const char *tau = lp_tensor_file_meta(f, "tau"), *tau2 = lp_tensor_file_meta(f, "tau2"),
               *dist = lp_tensor_file_meta(f, "distance"), *kf = lp_tensor_file_meta(f, "kept_fraction");
    CHECK(tau && tau2 && dist && kf, "%s: metadata tau, tau2, distance, kept_fraction expected", rel);
    lp_mask_opts o;
    lp_mask_opts_default(&o);
    o.tau = (float)atof(tau);
    o.tau2 = (float)atof(tau2);
    REQUIRE(lp_mask_distance_from_name(dist, &o.distance) == LP_OK);
    double ref_kept = atof(kf);
    const lp_tensor *ref = lp_tensor_file_find(f, "out.keep");
    REQUIRE(ref && ref->dtype == LP_U8);
    float *x;
    int T, H, W;
    REQUIRE(load_latents(path, "in.latents", &x, &T, &H, &W) == 0);
    const size_t cells = (size_t)T * (H / 2) * (W / 2);
    REQUIRE((size_t)lp_tensor_numel(ref) == cells);
    uint8_t *keep = malloc(cells), *nv = malloc(cells);
    double kept;
    CHECK(lp_mask_compute(&o, x, T, H, W, keep, NULL, &kept) == LP_OK, "%s", lp_last_error());
    int64_t diff = count_diff(keep, ref->data, cells);
    /* the margin shows how far every thresholded value is from its threshold:
     * above ~1e-6, no fp32 summation order could flip a cell */
    double margin = INFINITY;
    naive_mask(&o, x, T, H, W, nv, &margin);
    printf("    %s: %lld of %zu cells differ, kept %.6f (ref %.6f), min |d - threshold| = %.3g\n", rel,
           (long long)diff, cells, kept, ref_kept, margin);
    REQUIRE(diff == 0);
    CHECK(count_diff(nv, keep, cells) == 0, "naive pipeline differs");
    REQUIRE(fabs(kept - ref_kept) < 1e-6);
    REQUIRE(check_stream(&o, x, T, H, W, rel) == 0);
    free(keep);
    free(nv);
    free(x);
    lp_tensor_file_close(f);
    return 0;
}

static int test_golden_real(void) { return golden_case("golden/lipar_mask_real40x64.safetensors"); }
static int test_golden_real_t09(void) { return golden_case("golden/lipar_mask_real40x64_t09.safetensors"); }
static int test_golden_static(void) { return golden_case("golden/lipar_mask_static60x104.safetensors"); }

/* The mask the reference computed for the editing goldens keeps 31.047% (the
 * kept_fraction of lipar_edit_full), within one cell. */
static int test_edit_inputs(void) {
    const char *rel = "golden/lipar_edit_inputs.safetensors";
    const char *path = lp_test_shared(rel);
    if (!path) return lp_test_skip_shared(rel);
    float *x;
    int T, H, W;
    REQUIRE(load_latents(path, "in.src_latents", &x, &T, &H, &W) == 0);
    lp_mask_opts o;
    lp_mask_opts_default(&o);
    const size_t cells = (size_t)T * (H / 2) * (W / 2);
    uint8_t *keep = malloc(cells);
    double kept;
    CHECK(lp_mask_compute(&o, x, T, H, W, keep, NULL, &kept) == LP_OK, "%s", lp_last_error());
    printf("    kept %.10f (reference 0.3104700744152069)\n", kept);
    REQUIRE(fabs(kept - 0.3104700744152069) <= 1.0 / cells + 1e-12);
    REQUIRE(check_stream(&o, x, T, H, W, "in.src_latents") == 0);
    /* with the distance and median rows on three threads: the same masks */
    lp_backend *one = stream_be, *three = NULL;
    REQUIRE(lp_backend_cpu_create(3, &three) == LP_OK);
    stream_be = three;
    int fail = check_stream(&o, x, T, H, W, "in.src_latents, rows on 3 threads");
    stream_be = one;
    lp_backend_destroy(three);
    REQUIRE(fail == 0);
    free(keep);
    free(x);
    return 0;
}

/* The real latents of data/test_latents_wan.pth (the same clip as the
 * lipar_mask_real40x64 goldens), once a PyTorch zip reader is in the tree. */
static int test_wan_pth(void) {
    const char *rel = "data/test_latents_wan.pth";
    const char *path = lp_test_shared(rel);
    if (!path) return lp_test_skip_shared(rel);
    lp_tensor_file *f;
    if (lp_tensor_file_open(path, &f) != LP_OK) {
        printf("    (skipping: %s)\n", lp_last_error());
        return LP_TEST_SKIP;
    }
    lp_tensor_file_close(f);
    float *x;
    int T, H, W;
    REQUIRE(load_latents(path, NULL, &x, &T, &H, &W) == 0);
    lp_mask_opts o;
    lp_mask_opts_default(&o);
    o.tau = 0.9f;
    o.tau2 = 1.6f;
    const size_t cells = (size_t)T * (H / 2) * (W / 2);
    uint8_t *keep = malloc(cells);
    double kept;
    CHECK(lp_mask_compute(&o, x, T, H, W, keep, NULL, &kept) == LP_OK, "%s", lp_last_error());
    CHECK(fabs(kept - 0.84375) < 1e-9, "kept %.6f, the t09 golden keeps 0.84375", kept);
    REQUIRE(check_stream(&o, x, T, H, W, "tau 0.9, tau2 1.6") == 0);
    free(keep);
    free(x);
    return 0;
}

/* ---- steps ---- */

static int test_distance(void) {
    const int H = 4, W = 6, h = 2, w = 3;
    const size_t chw = (size_t)CH * H * W;
    float a[CH * 4 * 6], b[CH * 4 * 6], d[6];
    /* |a − b| of patch (0,0) is a permutation of 1…64: trimmed mean of 13…51 = 32 */
    lp_test_fill(a, chw, 1, 1.0f);
    memcpy(b, a, sizeof a);
    for (int c = 0, k = 0; c < CH; c++)
        for (int dy = 0; dy < 2; dy++)
            for (int dx = 0; dx < 2; dx++, k++) {
                float v = (float)((k * 37) % 64 + 1);
                b[((size_t)c * H + dy) * W + dx] += (k % 2 ? v : -v);
            }
    lp_mask_patch_distance(LP_MASK_L1, a, b, H, W, d);
    CHECK(fabsf(d[0] - 32.0f) < 1e-4f, "%g", d[0]);
    REQUIRE(d[1] == 0 && d[5] == 0);
    lp_mask_patch_distance(LP_MASK_L2, a, b, H, W, d);
    CHECK(fabs(d[0] - sqrt(64.0 * 65 * 129 / 6) / 64) < 1e-4, "%g", d[0]);
    /* cos: identical -> 0, opposite -> 2 */
    lp_mask_patch_distance(LP_MASK_COS, a, a, H, W, d);
    REQUIRE(fabsf(d[0]) < 1e-6f && fabsf(d[5]) < 1e-6f);
    for (size_t i = 0; i < chw; i++) b[i] = -a[i];
    lp_mask_patch_distance(LP_MASK_COS, a, b, H, W, d);
    REQUIRE(fabsf(d[3] - 2.0f) < 1e-6f);
    /* all distances against the double-precision reference on random data */
    lp_test_fill(b, chw, 2, 1.0f);
    for (int dist = 0; dist < 4; dist++) {
        lp_mask_patch_distance((lp_mask_distance)dist, a, b, H, W, d);
        for (int pr = 0; pr < h; pr++)
            for (int pc = 0; pc < w; pc++) {
                double ref = naive_distance((lp_mask_distance)dist, a, b, H, W, pr, pc);
                CHECK(fabs(d[pr * w + pc] - ref) <= 1e-6 * fabs(ref) + 1e-7, "%s: %g vs %g",
                      lp_mask_distance_name((lp_mask_distance)dist), d[pr * w + pc], ref);
            }
    }
    return 0;
}

/* Volume shapes that hit every edge rule: single frames, single rows/columns. */
static const int shapes[][3] = {{1, 1, 1}, {2, 1, 1}, {1, 2, 3}, {2, 2, 3}, {3, 1, 5}, {4, 5, 4}, {7, 6, 9}};
#define NSHAPES ((int)(sizeof shapes / sizeof *shapes))

static int test_median3(void) {
    for (int s = 0; s < NSHAPES; s++) {
        int n = shapes[s][0], h = shapes[s][1], w = shapes[s][2];
        size_t N = (size_t)n * h * w;
        float *in = malloc(N * sizeof *in), *got = malloc(N * sizeof *got), *ref = malloc(N * sizeof *ref);
        lp_test_fill(in, N, 10 + s, 1.0f);
        lp_mask_median3(in, n, h, w, got);
        naive_median3(in, n, h, w, ref);
        CHECK(memcmp(got, ref, N * sizeof *got) == 0, "shape %dx%dx%d", n, h, w);
        free(in);
        free(got);
        free(ref);
    }
    return 0;
}

static int test_gauss_causal(void) {
    for (int s = 0; s < NSHAPES; s++) {
        int n = shapes[s][0], h = shapes[s][1], w = shapes[s][2];
        size_t N = (size_t)n * h * w;
        float *in = malloc(N * sizeof *in), *got = malloc(N * sizeof *got);
        double *ref = malloc(N * sizeof *ref);
        lp_test_fill(in, N, 20 + s, 1.0f);
        lp_mask_gauss_causal(in, n, h, w, got);
        naive_gauss(in, n, h, w, ref);
        for (size_t i = 0; i < N; i++) CHECK(fabs(got[i] - ref[i]) <= 1e-6, "shape %dx%dx%d cell %zu", n, h, w, i);
        /* causal: changing the last frame leaves every earlier frame alone */
        float *got2 = malloc(N * sizeof *got2);
        for (size_t i = (size_t)(n - 1) * h * w; i < N; i++) in[i] += 1.0f;
        lp_mask_gauss_causal(in, n, h, w, got2);
        REQUIRE(memcmp(got, got2, (size_t)(n - 1) * h * w * sizeof *got) == 0);
        free(got2);
        free(in);
        free(got);
        free(ref);
    }
    /* a constant volume stays constant (weights sum to 1) */
    float c[2 * 3 * 3], o[2 * 3 * 3];
    for (int i = 0; i < 18; i++) c[i] = 0.25f;
    lp_mask_gauss_causal(c, 2, 3, 3, o);
    for (int i = 0; i < 18; i++) REQUIRE(fabsf(o[i] - 0.25f) < 1e-7f);
    return 0;
}

static void random_bits(uint8_t *b, size_t n, uint32_t seed, float density) {
    float *f = malloc(n * sizeof *f);
    lp_test_fill(f, n, seed, 1.0f);
    for (size_t i = 0; i < n; i++) b[i] = f[i] * 0.5f + 0.5f < density;
    free(f);
}

static int test_majority3(void) {
    const float dens[] = {0.1f, 0.5f, 0.9f};
    for (int s = 0; s < NSHAPES; s++)
        for (int di = 0; di < 3; di++) {
            int n = shapes[s][0], h = shapes[s][1], w = shapes[s][2];
            size_t N = (size_t)n * h * w;
            uint8_t *in = malloc(N), *got = malloc(N), *ref = malloc(N);
            random_bits(in, N, 30 + s * 3 + di, dens[di]);
            lp_mask_majority3(in, n, h, w, got);
            naive_majority3(in, n, h, w, ref);
            CHECK(memcmp(got, ref, N) == 0, "shape %dx%dx%d density %g", n, h, w, dens[di]);
            free(in);
            free(got);
            free(ref);
        }
    return 0;
}

static int test_open_close(void) {
    const int sz[][2] = {{1, 1}, {1, 5}, {2, 3}, {3, 3}, {4, 4}, {7, 9}, {30, 52}};
    const float dens[] = {0.2f, 0.5f, 0.8f, 1.0f};
    for (int s = 0; s < 7; s++)
        for (int di = 0; di < 4; di++) {
            int h = sz[s][0], w = sz[s][1];
            size_t N = (size_t)h * w;
            uint8_t *in = malloc(N), *got = malloc(N), *ref = malloc(N), *tmp = malloc(N);
            random_bits(in, N, 40 + s * 4 + di, dens[di]);
            naive_open_close(in, h, w, ref);
            memcpy(got, in, N);
            lp_mask_open_close(got, h, w, tmp, got); /* in place */
            CHECK(memcmp(got, ref, N) == 0, "frame %dx%d density %g", h, w, dens[di]);
            free(in);
            free(got);
            free(ref);
            free(tmp);
        }
    /* an all-ones frame survives (erosion counts the outside as 1) */
    uint8_t ones[12], out[12], tmp[12];
    memset(ones, 1, 12);
    lp_mask_open_close(ones, 3, 4, tmp, out);
    for (int i = 0; i < 12; i++) REQUIRE(out[i] == 1);
    return 0;
}

static int test_dilate(void) {
    for (int s = 0; s < NSHAPES; s++) {
        int n = shapes[s][0], h = shapes[s][1], w = shapes[s][2];
        size_t N = (size_t)n * h * w;
        uint8_t *in = malloc(N), *got = malloc(N), *ref = malloc(N);
        random_bits(in, N, 50 + s, 0.05f);
        lp_mask_dilate(in, n, h, w, got);
        naive_dilate(in, n, h, w, ref);
        CHECK(memcmp(got, ref, N) == 0, "shape %dx%dx%d", n, h, w);
        free(in);
        free(got);
        free(ref);
    }
    /* one cell reaches ±1 frame and ±2 patches, nothing beyond */
    uint8_t in[5 * 7 * 7] = {0}, out[5 * 7 * 7];
    in[(2 * 7 + 3) * 7 + 3] = 1;
    lp_mask_dilate(in, 5, 7, 7, out);
    for (int t = 0; t < 5; t++)
        for (int r = 0; r < 7; r++)
            for (int q = 0; q < 7; q++)
                REQUIRE(out[(t * 7 + r) * 7 + q] == (abs(t - 2) <= 1 && abs(r - 3) <= 2 && abs(q - 3) <= 2));
    return 0;
}

static int test_drift(void) {
    const int T = 11, H = 8, W = 12, h = 4, w = 6;
    float *x = synthetic_clip(T, H, W, 7);
    REQUIRE(x);
    size_t N = (size_t)(T - 1) * h * w;
    uint8_t *k = malloc(N), *ref = malloc(N);
    for (int seed = 0; seed < 4; seed++) {
        random_bits(k, N, 60 + seed, seed * 0.2f);
        memcpy(ref, k, N);
        REQUIRE(lp_mask_drift(LP_MASK_L1, 0.3f, x, T, H, W, k) == LP_OK);
        naive_drift(LP_MASK_L1, 0.3f, x, T, H, W, ref, NULL);
        CHECK(memcmp(k, ref, N) == 0, "seed %d", seed);
    }
    /* nothing kept by step 4: the band drifting 0.03 per frame is caught at frame 8
     * (0.24 from frame 0), where R moves; frame 10 is 0.06 from the new R */
    memset(k, 0, N);
    REQUIRE(lp_mask_drift(LP_MASK_L1, 0.2f, x, T, H, W, k) == LP_OK);
    REQUIRE(k[0] == 0 && k[(size_t)7 * h * w] == 1 && k[(size_t)9 * h * w] == 0);
    free(k);
    free(ref);
    free(x);
    return 0;
}

/* The whole batch mask against the naive composition, on clips of 1…7
 * frames and grids down to a single patch, for every distance. */
static int test_batch_small(void) {
    const int sz[][2] = {{2, 2}, {4, 6}, {2, 8}, {8, 12}};
    for (int s = 0; s < 4; s++)
        for (int T = 1; T <= 7; T++)
            for (int dist = 0; dist < 4; dist++) {
                int H = sz[s][0], W = sz[s][1];
                float *x = synthetic_clip(T, H, W, 80 + T);
                size_t cells = (size_t)T * (H / 2) * (W / 2);
                uint8_t *got = malloc(cells), *ref = malloc(cells);
                lp_mask_opts o;
                lp_mask_opts_default(&o);
                o.distance = (lp_mask_distance)dist;
                o.tau = dist == LP_MASK_COS ? 0.5f : dist == LP_MASK_L2 ? 0.03f : 0.2f;
                o.drift = T % 2;
                double per[7], kept;
                CHECK(lp_mask_compute(&o, x, T, H, W, got, per, &kept) == LP_OK, "%s", lp_last_error());
                naive_mask(&o, x, T, H, W, ref, NULL);
                CHECK(memcmp(got, ref, cells) == 0, "%dx%d T=%d %s", H, W, T, lp_mask_distance_name(o.distance));
                REQUIRE(per[0] == 1.0);
                REQUIRE(fabs(kept - lp_mask_kept_fraction(got, (int64_t)cells)) < 1e-12);
                free(got);
                free(ref);
                free(x);
            }
    return 0;
}

static int test_errors(void) {
    lp_mask_opts o;
    lp_mask_opts_default(&o);
    float x[CH * 4 * 6] = {0};
    uint8_t keep[6];
    REQUIRE(lp_mask_compute(&o, x, 1, 3, 6, keep, NULL, NULL) == LP_ERR_SHAPE);
    REQUIRE(strstr(lp_last_error(), "odd") != NULL);
    REQUIRE(lp_mask_compute(&o, x, 1, 4, 5, keep, NULL, NULL) == LP_ERR_SHAPE);
    REQUIRE(lp_mask_compute(&o, x, 0, 4, 6, keep, NULL, NULL) == LP_ERR_ARG);
    REQUIRE(lp_mask_compute(&o, NULL, 1, 4, 6, keep, NULL, NULL) == LP_ERR_ARG);
    lp_mask_distance d;
    REQUIRE(lp_mask_distance_from_name("L3", &d) == LP_ERR_ARG);
    REQUIRE(lp_mask_distance_from_name("cos", &d) == LP_OK && d == LP_MASK_COS);
    lp_mask_stream *s;
    REQUIRE(lp_mask_stream_open(&o, 4, 7, stream_be, &s) == LP_ERR_SHAPE && s == NULL);
    REQUIRE(lp_mask_stream_open(&o, 4, 6, stream_be, &s) == LP_OK);
    REQUIRE(lp_mask_stream_push_chunk(s, x, 0, keep) == LP_ERR_ARG);
    REQUIRE(lp_mask_stream_push_chunk(s, x, 4, keep) == LP_ERR_ARG);
    REQUIRE(lp_mask_stream_push_chunk(s, x, 1, keep) == LP_OK);
    REQUIRE(lp_mask_stream_push_chunk(s, x, 1, keep) == LP_ERR_ARG); /* ended by the short chunk */
    lp_mask_stream_close(s);
    lp_mask_stream_close(NULL);
    return 0;
}

/* ---- streaming ---- */

static int test_stream_definition(void) {
    const int sz[][2] = {{2, 2}, {4, 6}, {16, 24}};
    for (int s = 0; s < 3; s++)
        for (int T = 1; T <= 14; T++)
            for (int v = 0; v < 4; v++) {
                int H = sz[s][0], W = sz[s][1];
                float *x = synthetic_clip(T, H, W, 90 + T);
                lp_mask_opts o;
                lp_mask_opts_default(&o);
                o.distance = (lp_mask_distance)v;
                o.tau = v == LP_MASK_COS ? 0.5f : v == LP_MASK_L2 ? 0.03f : 0.149f;
                o.drift = s != 1 || T % 2;
                o.tau2 = v == LP_MASK_COS ? 0.8f : v == LP_MASK_L2 ? 0.06f : 0.3f;
                CHECK(check_stream(&o, x, T, H, W, NULL) == 0, "%dx%d T=%d %s", H, W, T,
                      lp_mask_distance_name(o.distance));
                free(x);
            }
    /* a long stream: the state does not grow, chunks still match their prefix */
    float *x = synthetic_clip(60, 4, 6, 5);
    lp_mask_opts o;
    lp_mask_opts_default(&o);
    REQUIRE(check_stream(&o, x, 60, 4, 6, NULL) == 0);
    free(x);
    return 0;
}

/* A static clip: every chunk after the first frame prunes everything; a clip
 * of unrelated frames keeps everything. */
static int test_stream_extremes(void) {
    const int T = 9, H = 8, W = 12;
    const size_t chw = (size_t)CH * H * W, hw = (size_t)(H / 2) * (W / 2);
    float *x = malloc(T * chw * sizeof *x);
    uint8_t keep[LP_MASK_CHUNK * 24];
    lp_mask_opts o;
    lp_mask_opts_default(&o);
    for (int pass = 0; pass < 2; pass++) {
        for (int t = 0; t < T; t++) lp_test_fill(x + t * chw, chw, pass ? 200 + t : 200, 1.0f);
        lp_mask_stream *s;
        REQUIRE(lp_mask_stream_open(&o, H, W, stream_be, &s) == LP_OK);
        for (int t0 = 0; t0 < T; t0 += LP_MASK_CHUNK) {
            REQUIRE(lp_mask_stream_push_chunk(s, x + t0 * chw, LP_MASK_CHUNK, keep) == LP_OK);
            double f = lp_mask_kept_fraction(keep + (t0 ? 0 : hw), (int64_t)((t0 ? 3 : 2) * hw));
            CHECK(f == (pass ? 1.0 : 0.0), "pass %d chunk %d kept %g", pass, t0 / 3, f);
            if (t0 == 0) REQUIRE(lp_mask_kept_fraction(keep, (int64_t)hw) == 1.0);
        }
        lp_mask_stream_close(s);
        REQUIRE(check_stream(&o, x, T, H, W, NULL) == 0);
    }
    free(x);
    return 0;
}

int main(void) {
    if (lp_backend_cpu_create(1, &stream_be) != LP_OK) {
        fprintf(stderr, "test_mask: %s\n", lp_last_error());
        return 1;
    }
    lp_test_run("golden_real40x64", test_golden_real);
    lp_test_run("golden_real40x64_t09", test_golden_real_t09);
    lp_test_run("golden_static60x104", test_golden_static);
    lp_test_run("edit_inputs_kept_fraction", test_edit_inputs);
    lp_test_run("test_latents_wan_pth", test_wan_pth);
    lp_test_run("distance", test_distance);
    lp_test_run("median3", test_median3);
    lp_test_run("gauss_causal", test_gauss_causal);
    lp_test_run("majority3", test_majority3);
    lp_test_run("open_close", test_open_close);
    lp_test_run("dilate", test_dilate);
    lp_test_run("drift", test_drift);
    lp_test_run("batch_small", test_batch_small);
    lp_test_run("errors", test_errors);
    lp_test_run("stream_definition", test_stream_definition);
    lp_test_run("stream_extremes", test_stream_extremes);
    lp_backend_destroy(stream_be);
    return lp_test_finish();
}
