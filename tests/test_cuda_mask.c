/* CPU-vs-CUDA parity of the keep-mask ops of the backend table (backend.h,
 * "LIPAR's keep-mask": mask_distance, mask_median, mask_gauss,
 * mask_threshold, mask_or, mask_majority, mask_open_close, mask_dilate) on
 * random inputs. The CPU backend is the reference, and every op must match it
 * bit for bit (tolerance 0: the outputs are compared byte by byte). CUDA
 * outputs are poisoned beforehand (NaN bytes for floats, 0xab for bytes) so
 * that an element left unwritten fails; each comparison prints
 * "name ok|FAIL", with the fraction of ones for byte outputs (so that a
 * degenerate all-0 or all-1 case shows). Planes are the real 30×52 (832×480
 * video, 60×104 latents) and small ones (1×1, 2×3, 5×7) whose clamped edges
 * cover most cells. Argument errors of these void ops become the sticky error
 * of the backend, tried on backends of their own; empty sizes are no-ops.
 * Last, the streaming mask runs whole on both backends.
 * Every case skips when the CUDA backend is unavailable (built without CUDA,
 * or no usable GPU): the binary then exits 77. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/backend/backend.h"
#include "../src/prune/mask.h"
#include "test_util.h"

#define CH LP_MASK_CHANNELS
#define BYTE_POISON 0xab

static lp_backend *cpu, *gpu;
static int no_gpu; /* what each case returns without the CUDA backend (set by main) */

/* The plane sizes (h, w) of the per-cell ops. */
static const int plane_sizes[][2] = {{30, 52}, {1, 1}, {2, 3}, {5, 7}};
#define NSIZES ((int)(sizeof plane_sizes / sizeof *plane_sizes))

static const char *const distance_names[] = {"L1_gaussian", "L1", "L2", "cos"};

/* ------------------------------------------------------------------ helpers */

static uint32_t rng(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* A well-mixed LCG state for a seed (nearby seeds of the plain LCG give
 * correlated streams, which made planes p, c, n alike). */
static uint32_t mix(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* n random bytes, 1 with probability percent/100, else 0 (malloc'd). */
static uint8_t *random_bits(size_t n, uint32_t seed, int percent) {
    uint8_t *x = malloc(n ? n : 1);
    if (!x) return NULL;
    uint32_t s = mix(seed);
    for (size_t i = 0; i < n; i++) x[i] = rng(&s) % 100 < (uint32_t)percent;
    return x;
}

/* A plane [h][w] of blobs: 3×3 blocks of ones or zeros (half each), then 10%
 * of the cells flipped, so that opening and closing both change something. */
static uint8_t *random_blobs(int h, int w, uint32_t seed) {
    uint8_t *x = malloc((size_t)h * w);
    if (!x) return NULL;
    uint32_t s = mix(seed + 0x5bd1e995u);
    int bw = (w + 2) / 3;
    uint8_t *blocks = random_bits((size_t)((h + 2) / 3) * bw, seed + 1, 50);
    if (!blocks) {
        free(x);
        return NULL;
    }
    for (int r = 0; r < h; r++)
        for (int q = 0; q < w; q++) x[(size_t)r * w + q] = blocks[(r / 3) * bw + q / 3] ^ (rng(&s) % 10 == 0);
    free(blocks);
    return x;
}

/* A buffer of the GPU backend holding the n bytes of h; NULL on failure
 * (printed). */
static void *dev_bytes(const void *h, size_t n) {
    void *d = gpu->alloc(gpu, n ? n : 1);
    if (d && gpu->upload(gpu, d, h, n) == LP_OK) return d;
    printf("    device buffer of %zu bytes: %s\n", n, lp_last_error());
    if (d) gpu->release(gpu, d);
    return NULL;
}

/* A buffer of the GPU backend of n bytes (at least 1), each `byte`. */
static void *dev_poison(size_t n, int byte) {
    void *h = malloc(n ? n : 1);
    if (!h) return NULL;
    memset(h, byte, n ? n : 1);
    void *d = dev_bytes(h, n ? n : 1);
    free(h);
    return d;
}

static void dev_free(void *d) {
    if (d) gpu->release(gpu, d);
}

/* Downloads n elements of elem bytes (4: f32, 1: bytes) of d and compares
 * them byte for byte with want; prints "name ok|FAIL" (with want's fraction
 * of nonzero bytes when show_ones, failures with the first difference).
 * Returns 0 when equal, 1 otherwise. */
static int compare_exact(const char *name, const void *d, const void *want, size_t n, size_t elem, int show_ones) {
    size_t bytes = n * elem;
    unsigned char *got = malloc(bytes ? bytes : 1);
    lp_status s = got && d ? gpu->download(gpu, got, d, bytes) : LP_ERR_NOMEM;
    size_t bad = 0, first = 0, ones = 0;
    for (size_t i = 0; s == LP_OK && i < n; i++) {
        if (memcmp(got + i * elem, (const unsigned char *)want + i * elem, elem)) {
            if (!bad) first = i;
            bad++;
        }
        if (elem == 1) ones += ((const uint8_t *)want)[i] != 0;
    }
    int ok = s == LP_OK && bad == 0;
    printf("    %-*s", LP_TEST_NAME_WIDTH, name);
    if (show_ones) printf(" ones=%5.1f%%", 100.0 * (double)ones / (double)n);
    printf(" %s", ok ? "ok" : "FAIL");
    if (s != LP_OK) printf(" [%s: %s]", lp_status_name(s), lp_last_error());
    if (bad && elem == 4) {
        float g, w;
        memcpy(&g, got + first * 4, 4);
        memcpy(&w, (const unsigned char *)want + first * 4, 4);
        printf(" [%zu of %zu differ; first [%zu]: got %.9g, want %.9g]", bad, n, first, (double)g, (double)w);
    } else if (bad) {
        printf(" [%zu of %zu differ; first [%zu]: got %d, want %d]", bad, n, first, got[first],
               ((const uint8_t *)want)[first]);
    }
    printf("\n");
    free(got);
    return !ok;
}

/* ---------------------------------------------------------------- distance */

/* mask_distance of random latents a and b = a + noise, the noise's scale
 * picked per patch among 0 (equal patches), small and large ones, and one
 * patch of a scaled to norm < 1e-8 (cos clamps the norm there). */
static int distance_case(int H, int W, int distance, uint32_t seed) {
    const int h = H / 2, w = W / 2;
    const size_t plane = (size_t)H * W, n = (size_t)CH * plane, cells = (size_t)h * w;
    char name[128];
    snprintf(name, sizeof name, "mask_distance %s %dx%d", distance_names[distance], W, H);
    static const float scales[] = {0.0f, 0.003f, 0.03f, 0.15f, 0.6f, 2.0f};
    float *a = lp_test_random_floats(2 * n, seed, 1.0f), *b = malloc(n * sizeof *b);
    float *want = malloc(cells * sizeof *want);
    CHECK(a && b && want, "out of memory");
    const float *noise = a + n; /* the second half of one random stream */
    uint32_t s = mix(seed);
    for (int pr = 0; pr < h; pr++)
        for (int pc = 0; pc < w; pc++) {
            float sc = scales[rng(&s) % 6];
            int tiny = cells > 2 && (size_t)pr * w + pc == cells - 2;
            for (int c = 0; c < CH; c++)
                for (int dy = 0; dy < 2; dy++)
                    for (int dx = 0; dx < 2; dx++) {
                        size_t i = (size_t)c * plane + (size_t)(2 * pr + dy) * W + (size_t)(2 * pc + dx);
                        if (tiny) a[i] *= 1e-9f;
                        b[i] = a[i] + sc * noise[i];
                    }
        }
    memset(want, 0xff, cells * sizeof *want);
    cpu->mask_distance(cpu, want, a, b, H, W, distance);
    size_t differ = 0;
    for (size_t i = 1; i < cells; i++) differ += want[i] != want[0];
    CHECK(cells < 4 || differ > cells / 2, "the distances hardly vary (%zu of %zu differ from the first)", differ,
          cells);
    float *da = lp_test_dev_copy(gpu, a, n), *db = lp_test_dev_copy(gpu, b, n), *dout = lp_test_dev_poison(gpu, cells);
    int fails = 1;
    if (da && db && dout) {
        gpu->mask_distance(gpu, dout, da, db, H, W, distance);
        fails = compare_exact(name, dout, want, cells, 4, 0);
    }
    lp_test_dev_free(gpu, da);
    lp_test_dev_free(gpu, db);
    lp_test_dev_free(gpu, dout);
    free(a);
    free(b);
    free(want);
    return fails;
}

static int test_distance(void) {
    if (!gpu) return no_gpu;
    static const int sizes[][2] = {{60, 104}, {6, 10}, {2, 2}};
    int fails = 0;
    for (int sz = 0; sz < 3; sz++)
        for (int d = 0; d < 4; d++)
            fails += distance_case(sizes[sz][0], sizes[sz][1], d, 100 + 10 * (uint32_t)(4 * sz + d));
    return fails ? 1 : 0;
}

/* ---------------------------------------------------- median and Gaussian */

/* mask_median (gauss 0) or mask_gauss (gauss 1: the real weights; 2: random
 * ones) of random planes; same_pc: p is c (a clamped first frame). */
static int float_plane_case(int gauss, int h, int w, int same_pc, uint32_t seed) {
    const size_t cells = (size_t)h * w;
    char name[128];
    snprintf(name, sizeof name, "%s %dx%d%s", gauss == 0 ? "mask_median" : gauss == 1 ? "mask_gauss" :
                                              "mask_gauss, random weights", w, h, same_pc ? ", p = c" : "");
    float *p = lp_test_random_floats(3 * cells, seed, 1.0f), *want = malloc(cells * sizeof *want);
    float wt[18];
    CHECK(p && want, "out of memory");
    const float *c = p + cells, *n = p + 2 * cells; /* the planes: thirds of one random stream */
    if (gauss == 2) lp_test_fill(wt, 18, seed + 3, 0.3f);
    else lp_mask_gauss_weights(wt);
    memset(want, 0xff, cells * sizeof *want);
    const float *pp = same_pc ? c : p;
    if (gauss) cpu->mask_gauss(cpu, want, pp, c, h, w, wt);
    else cpu->mask_median(cpu, want, pp, c, n, h, w);
    float *dp = lp_test_dev_copy(gpu, p, cells), *dc = lp_test_dev_copy(gpu, c, cells);
    float *dn = lp_test_dev_copy(gpu, n, cells), *dout = lp_test_dev_poison(gpu, cells);
    int fails = 1;
    if (dp && dc && dn && dout) {
        const float *dpp = same_pc ? dc : dp;
        if (gauss) gpu->mask_gauss(gpu, dout, dpp, dc, h, w, wt);
        else gpu->mask_median(gpu, dout, dpp, dc, dn, h, w);
        fails = compare_exact(name, dout, want, cells, 4, 0);
    }
    lp_test_dev_free(gpu, dp);
    lp_test_dev_free(gpu, dc);
    lp_test_dev_free(gpu, dn);
    lp_test_dev_free(gpu, dout);
    free(p);
    free(want);
    return fails;
}

static int test_median(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    for (int i = 0; i < NSIZES; i++)
        fails += float_plane_case(0, plane_sizes[i][0], plane_sizes[i][1], 0, 200 + 10 * (uint32_t)i);
    fails += float_plane_case(0, 30, 52, 1, 290);
    return fails ? 1 : 0;
}

static int test_gauss(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    for (int i = 0; i < NSIZES; i++)
        fails += float_plane_case(1, plane_sizes[i][0], plane_sizes[i][1], 0, 300 + 10 * (uint32_t)i);
    fails += float_plane_case(1, 30, 52, 1, 380);
    fails += float_plane_case(2, 30, 52, 0, 390);
    fails += float_plane_case(2, 5, 7, 0, 395);
    return fails ? 1 : 0;
}

/* ------------------------------------------------------- threshold and or */

/* mask_threshold of n floats around tau (every 17th exactly tau). An empty n
 * must leave the output untouched. */
static int threshold_case(int64_t n, float tau, uint32_t seed) {
    char name[128];
    snprintf(name, sizeof name, "mask_threshold n=%lld tau=%g%s", (long long)n, (double)tau,
             n ? "" : " (output untouched)");
    size_t m = n ? (size_t)n : 1;
    float *in = lp_test_random_floats(m, seed, 0.05f);
    uint8_t *want = malloc(m);
    CHECK(in && want, "out of memory");
    for (size_t i = 0; i < m; i++) in[i] = i % 17 == 5 ? tau : in[i] + tau;
    memset(want, BYTE_POISON, m);
    cpu->mask_threshold(cpu, want, in, n, tau);
    float *din = lp_test_dev_copy(gpu, in, m);
    uint8_t *dout = dev_poison(m, BYTE_POISON);
    int fails = 1;
    if (din && dout) {
        gpu->mask_threshold(gpu, dout, din, n, tau);
        fails = compare_exact(name, dout, want, m, 1, n > 0);
    }
    lp_test_dev_free(gpu, din);
    dev_free(dout);
    free(in);
    free(want);
    return fails;
}

/* mask_or of random bits into random bits (n = 0: dst untouched). */
static int or_case(int64_t n, uint32_t seed) {
    char name[128];
    snprintf(name, sizeof name, "mask_or n=%lld%s", (long long)n, n ? "" : " (dst untouched)");
    size_t m = n ? (size_t)n : 1;
    uint8_t *dst = random_bits(m, seed, 50), *src = random_bits(m, seed + 1, 50);
    CHECK(dst && src, "out of memory");
    uint8_t *ddst = dev_bytes(dst, m), *dsrc = dev_bytes(src, m);
    cpu->mask_or(cpu, dst, src, n);
    int fails = 1;
    if (ddst && dsrc) {
        gpu->mask_or(gpu, ddst, dsrc, n);
        fails = compare_exact(name, ddst, dst, m, 1, n > 0);
    }
    dev_free(ddst);
    dev_free(dsrc);
    free(dst);
    free(src);
    return fails;
}

static int test_threshold_or(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += threshold_case(1560, 0.149f, 400);
    fails += threshold_case(3 * 1560 + 7, 0.3f, 410);
    fails += threshold_case(35, -0.25f, 420);
    fails += threshold_case(1, 0.149f, 430);
    fails += threshold_case(0, 0.149f, 440);
    fails += or_case(1560, 450);
    fails += or_case(3 * 1560 + 7, 460);
    fails += or_case(1, 470);
    fails += or_case(0, 480);
    return fails ? 1 : 0;
}

/* ---------------------------------------------------------------- majority */

/* An op on three byte planes p, c, n [h][w] (random bits, `percent` ones)
 * on both backends, compared exactly: mask_majority (dilate 0; p is c with
 * same_pc) or mask_dilate (dilate 1; p and n NULL unless has_p, has_n). */
static int planes3_case(const char *name, int dilate, int h, int w, int percent, int same_pc, int has_p, int has_n,
                        uint32_t seed) {
    const size_t cells = (size_t)h * w;
    uint8_t *p = random_bits(3 * cells, seed, percent), *want = malloc(cells);
    CHECK(p && want, "out of memory");
    const uint8_t *c = p + cells, *n = p + 2 * cells;
    const uint8_t *hp = same_pc ? c : has_p ? p : NULL, *hn = has_n ? n : NULL;
    memset(want, BYTE_POISON, cells);
    if (dilate) cpu->mask_dilate(cpu, want, hp, c, hn, h, w);
    else cpu->mask_majority(cpu, want, hp, c, hn, h, w);
    uint8_t *dp = dev_bytes(p, cells), *dc = dev_bytes(c, cells), *dn = dev_bytes(n, cells);
    uint8_t *dout = dev_poison(cells, BYTE_POISON);
    int fails = 1;
    if (dp && dc && dn && dout) {
        const uint8_t *gp = same_pc ? dc : has_p ? dp : NULL, *gn = has_n ? dn : NULL;
        if (dilate) gpu->mask_dilate(gpu, dout, gp, dc, gn, h, w);
        else gpu->mask_majority(gpu, dout, gp, dc, gn, h, w);
        fails = compare_exact(name, dout, want, cells, 1, 1);
    }
    dev_free(dp);
    dev_free(dc);
    dev_free(dn);
    dev_free(dout);
    free(p);
    free(want);
    return fails;
}

/* mask_majority of random planes (about half ones); same_pc: p is c. */
static int majority_case(int h, int w, int same_pc, uint32_t seed) {
    char name[128];
    snprintf(name, sizeof name, "mask_majority %dx%d%s", w, h, same_pc ? ", p = c" : "");
    return planes3_case(name, 0, h, w, 50, same_pc, 1, 1, seed);
}

static int test_majority(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    for (int i = 0; i < NSIZES; i++) fails += majority_case(plane_sizes[i][0], plane_sizes[i][1], 0, 500 + 10 * i);
    fails += majority_case(30, 52, 1, 590);
    return fails ? 1 : 0;
}

/* -------------------------------------------------------------- open_close */

/* The inputs of mask_open_close. */
enum { OC_NOISE, OC_DENSE, OC_BLOBS };

/* mask_open_close of a plane of noise (half ones, no structure), dense noise
 * (85% ones: the opening keeps some on small planes) or blobs, into another
 * buffer or in place. */
static int open_close_case(int h, int w, int inplace, int kind, uint32_t seed) {
    const size_t cells = (size_t)h * w;
    char name[128];
    snprintf(name, sizeof name, "mask_open_close %dx%d %s%s", w, h,
             kind == OC_BLOBS ? "blobs" : kind == OC_DENSE ? "dense noise" : "noise", inplace ? " in place" : "");
    uint8_t *in = kind == OC_BLOBS ? random_blobs(h, w, seed) : random_bits(cells, seed, kind == OC_DENSE ? 85 : 50);
    uint8_t *want = malloc(cells), *tmp = malloc(cells);
    CHECK(in && want && tmp, "out of memory");
    if (inplace) {
        memcpy(want, in, cells);
        cpu->mask_open_close(cpu, want, want, tmp, h, w);
    } else {
        memset(want, BYTE_POISON, cells);
        cpu->mask_open_close(cpu, want, in, tmp, h, w);
    }
    uint8_t *din = dev_bytes(in, cells), *dtmp = dev_poison(cells, BYTE_POISON);
    uint8_t *dout = inplace ? din : dev_poison(cells, BYTE_POISON);
    int fails = 1;
    if (din && dtmp && dout) {
        gpu->mask_open_close(gpu, dout, din, dtmp, h, w);
        fails = compare_exact(name, dout, want, cells, 1, 1);
    }
    if (dout != din) dev_free(dout);
    dev_free(din);
    dev_free(dtmp);
    free(in);
    free(want);
    free(tmp);
    return fails;
}

static int test_open_close(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    for (int i = 0; i < NSIZES; i++)
        for (int kind = OC_DENSE; kind <= OC_BLOBS; kind++)
            for (int inplace = 0; inplace < 2; inplace++)
                fails += open_close_case(plane_sizes[i][0], plane_sizes[i][1], inplace, kind, 600 + 10 * i + kind);
    fails += open_close_case(30, 52, 0, OC_NOISE, 690);
    fails += open_close_case(30, 52, 1, OC_NOISE, 690);
    return fails ? 1 : 0;
}

/* ------------------------------------------------------------------ dilate */

/* mask_dilate of sparse random planes (2% ones at the real size, so that the
 * 3×5×5 dilation of all three planes leaves zeros; 5% on the small planes),
 * with planes p and n present or absent (NULL). */
static int dilate_case(int h, int w, int has_p, int has_n, uint32_t seed) {
    char name[128];
    snprintf(name, sizeof name, "mask_dilate %dx%d%s%s", w, h, has_p ? "" : ", p NULL", has_n ? "" : ", n NULL");
    return planes3_case(name, 1, h, w, (size_t)h * w >= 100 ? 2 : 5, 0, has_p, has_n, seed);
}

static int test_dilate(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    for (int i = 0; i < NSIZES; i++)
        for (int pn = 0; pn < 4; pn++)
            fails += dilate_case(plane_sizes[i][0], plane_sizes[i][1], !(pn & 1), !(pn & 2), 700 + 10 * i);
    return fails ? 1 : 0;
}

/* ------------------------------------------------------------------ errors */

/* Empty sizes are no-ops (even with NULL buffers), leaving no error behind;
 * an argument error becomes the sticky error of its backend, reported by the
 * next status-returning op (each on a backend of its own). */
static int test_errors(void) {
    if (!gpu) return no_gpu;
    gpu->mask_distance(gpu, NULL, NULL, NULL, 0, 104, 0);
    gpu->mask_median(gpu, NULL, NULL, NULL, NULL, 30, 0);
    gpu->mask_gauss(gpu, NULL, NULL, NULL, 0, 52, NULL);
    gpu->mask_threshold(gpu, NULL, NULL, 0, 0.5f);
    gpu->mask_or(gpu, NULL, NULL, 0);
    gpu->mask_majority(gpu, NULL, NULL, NULL, NULL, 0, 0);
    gpu->mask_open_close(gpu, NULL, NULL, NULL, 0, 7);
    gpu->mask_dilate(gpu, NULL, NULL, NULL, NULL, 3, 0);
    uint8_t *d = gpu->alloc(gpu, 64);
    CHECK(d, "alloc: %s", lp_last_error());
    lp_status s0 = gpu->clear(gpu, d, 0);
    gpu->release(gpu, d);
    printf("    %-*s %s [%s]\n", LP_TEST_NAME_WIDTH, "empty sizes: no-ops, no error", s0 == LP_OK ? "ok" : "FAIL",
           lp_status_name(s0));
    int fails = s0 != LP_OK;

    static const char *const what[] = {"mask_distance odd H -> sticky LP_ERR_ARG",
                                       "mask_distance distance 4 -> sticky LP_ERR_ARG",
                                       "mask_open_close tmp = in -> sticky LP_ERR_ARG",
                                       "mask_dilate c NULL -> sticky LP_ERR_ARG"};
    for (int k = 0; k < 4; k++) {
        lp_backend *b2 = NULL;
        CHECK(lp_backend_cuda_create(1, 0, &b2) == LP_OK, "second CUDA backend: %s", lp_last_error());
        float *e = b2->alloc(b2, 4096 * sizeof(float));
        CHECK(e, "alloc: %s", lp_last_error());
        uint8_t *eb = (uint8_t *)(e + 3072);
        switch (k) {
        case 0: b2->mask_distance(b2, e + 3072, e, e + 1536, 5, 8, 0); break;
        case 1: b2->mask_distance(b2, e + 3072, e, e + 1536, 4, 8, 4); break;
        case 2: b2->mask_open_close(b2, eb + 64, eb, eb, 4, 4); break;
        default: b2->mask_dilate(b2, eb, eb + 64, NULL, eb + 128, 4, 4); break;
        }
        lp_status s = b2->clear(b2, e, 4);
        b2->release(b2, e);
        lp_backend_destroy(b2);
        printf("    %-*s %s [%s]\n", LP_TEST_NAME_WIDTH, what[k], s == LP_ERR_ARG ? "ok" : "FAIL", lp_status_name(s));
        fails += s != LP_ERR_ARG;
    }
    return fails ? 1 : 0;
}

/* The streaming keep-mask (lp_mask_stream) on CUDA and on the CPU: a clip of
 * 832×480 latents (60×104) with a still background, a moving block and
 * noise of several strengths, pushed in chunks (the last one short), with
 * each distance: every chunk's keep bytes equal. */
static int stream_case(int distance, uint32_t seed) {
    if (!gpu) return no_gpu;
    const int T = 13, H = 60, W = 104;
    const size_t chw = (size_t)CH * H * W, hw = (size_t)(H / 2) * (W / 2);
    float *x = malloc((size_t)T * chw * sizeof *x);
    uint8_t *kc = malloc(LP_MASK_CHUNK * hw), *kg = malloc(LP_MASK_CHUNK * hw);
    CHECK(x && kc && kg, "out of memory");
    uint32_t r = mix(seed);
    for (size_t i = 0; i < chw; i++) x[i] = (float)(rng(&r) % 20001) / 10000.0f - 1.0f;
    for (int t = 1; t < T; t++)
        for (size_t i = 0; i < chw; i++) {
            int y = (int)(i / W % H), col = (int)(i % W);
            float noise = ((float)(rng(&r) % 2001) / 1000.0f - 1.0f) * (y < 20 ? 0.05f : y < 40 ? 0.2f : 0.4f);
            int in_block = y >= 10 && y < 30 && col >= 6 * t && col < 6 * t + 24;
            x[t * chw + i] = x[(t - 1) * chw + i] + noise + (in_block ? 1.5f : 0.0f);
        }
    lp_mask_opts o;
    lp_mask_opts_default(&o);
    o.distance = (lp_mask_distance)distance;
    if (distance == LP_MASK_COS) o.tau = 0.05f, o.tau2 = 0.1f;
    if (distance == LP_MASK_L2) o.tau = 0.03f, o.tau2 = 0.06f;
    lp_mask_stream *sc = NULL, *sg = NULL;
    CHECK(lp_mask_stream_open(&o, H, W, cpu, &sc) == LP_OK, "cpu stream: %s", lp_last_error());
    CHECK(lp_mask_stream_open(&o, H, W, gpu, &sg) == LP_OK, "cuda stream: %s", lp_last_error());
    int fails = 0;
    size_t ones = 0, cells = 0;
    for (int t0 = 0; t0 < T; t0 += LP_MASK_CHUNK) {
        int n = T - t0 < LP_MASK_CHUNK ? T - t0 : LP_MASK_CHUNK;
        CHECK(lp_mask_stream_push_chunk(sc, x + t0 * chw, n, kc) == LP_OK, "cpu push: %s", lp_last_error());
        memset(kg, BYTE_POISON, LP_MASK_CHUNK * hw);
        lp_status st = lp_mask_stream_push_chunk(sg, x + t0 * chw, n, kg);
        CHECK(st == LP_OK, "cuda push: %s", lp_last_error());
        fails += memcmp(kc, kg, n * hw) != 0;
        for (size_t i = 0; i < n * hw; i++) ones += kc[i] != 0;
        cells += n * hw;
    }
    printf("    %-*s %s [%.1f%% kept]\n", LP_TEST_NAME_WIDTH, distance_names[distance], fails ? "FAIL" : "ok",
           100.0 * (double)ones / (double)cells);
    CHECK(ones > cells / 20 && ones < cells - cells / 20, "a degenerate mask (%zu of %zu kept)", ones, cells);
    lp_mask_stream_close(sc);
    lp_mask_stream_close(sg);
    free(x);
    free(kc);
    free(kg);
    return fails ? 1 : 0;
}

static int test_stream(void) {
    int fails = 0;
    for (int d = 0; d < 4; d++) {
        int f = stream_case(d, 4000 + (uint32_t)d);
        if (f == 77) return f;
        fails += f;
    }
    return fails ? 1 : 0;
}

int main(void) {
    no_gpu = lp_test_cuda_backends(&gpu, &cpu);
    lp_test_run("mask_distance: L1_gaussian, L1, L2, cos at 60x104, 6x10, 2x2 latents (exact)", test_distance);
    lp_test_run("mask_median (exact)", test_median);
    lp_test_run("mask_gauss: the real and random weights (exact)", test_gauss);
    lp_test_run("mask_threshold, mask_or (exact)", test_threshold_or);
    lp_test_run("mask_majority (exact)", test_majority);
    lp_test_run("mask_open_close, in place and not (exact)", test_open_close);
    lp_test_run("mask_dilate, with and without p and n (exact)", test_dilate);
    lp_test_run("empty sizes and argument errors", test_errors);
    lp_test_run("the streaming mask, 13 frames of 60x104 latents, each distance (exact)", test_stream);
    lp_backend_destroy(gpu);
    lp_backend_destroy(cpu);
    lp_test_kept_free();
    return lp_test_finish();
}
