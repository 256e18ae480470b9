#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../src/base/pixels.h"

static int passed, failed, skipped;

void lp_test_run(const char *name, lp_test_fn fn) {
    int r = fn();
    if (r == 0) {
        passed++;
        printf("  ok    %s\n", name);
    } else if (r == LP_TEST_SKIP) {
        skipped++;
        printf("  skip  %s\n", name);
    } else {
        failed++;
        printf("  FAIL  %s\n", name);
    }
    fflush(stdout);
}

int lp_test_finish(void) {
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    if (failed) return 1;
    return passed == 0 && skipped > 0 ? LP_TEST_SKIP : 0;
}

const char *lp_test_shared(const char *relpath) {
    static char buf[4096];
    const char *root = getenv("LIPAR_SHARED");
    if (!root || !*root) root = "../shared";
    snprintf(buf, sizeof buf, "%s/%s", root, relpath);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

int lp_test_skip_shared(const char *relpath) {
    printf("  (skipping: %s not found; set LIPAR_SHARED to the shared/ folder)\n", relpath);
    return LP_TEST_SKIP;
}

double lp_rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return sqrt(num / den);
}

double lp_max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

void lp_test_fill(float *x, size_t n, uint32_t seed, float scale) {
    uint32_t s = seed * 2654435761u + 12345u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = scale * (2.0f * (float)(s >> 8) / 16777216.0f - 1.0f);
    }
}

const char *lp_test_tmpdir(void) {
    static char dir[256];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/lipar-test-%d", (int)getpid());
        mkdir(dir, 0700);
    }
    return dir;
}

float *lp_test_load_f32(const lp_tensor_file *f, const char *name, const lp_tensor **t) {
    if (lp_tensor_file_get(f, name, t) != LP_OK) return NULL;
    int64_t n = lp_tensor_numel(*t);
    float *x = malloc((size_t)n * sizeof *x);
    if (x && lp_tensor_read_f32(*t, 0, n, x) != LP_OK) {
        free(x);
        return NULL;
    }
    return x;
}

float *lp_test_dev_copy(const lp_backend *be, const float *h, size_t n) {
    float *d = be->alloc(be, (n ? n : 1) * sizeof *d);
    if (d && be->upload(be, d, h, n * sizeof *d) == LP_OK) return d;
    printf("    %s alloc/upload of %zu floats: %s\n", be->name, n, lp_last_error());
    if (d) be->release(be, d);
    return NULL;
}

float *lp_test_dev_poison(const lp_backend *be, size_t n) {
    float *h = malloc((n ? n : 1) * sizeof *h);
    if (!h) return NULL;
    memset(h, 0xff, n * sizeof *h);
    float *d = lp_test_dev_copy(be, h, n);
    free(h);
    return d;
}

void lp_test_dev_free(const lp_backend *be, float *d) {
    if (d) be->release(be, d);
}

int lp_test_dev_compare(const lp_backend *be, const char *name, const float *d, const float *want, size_t n,
                        double tol) {
    float *got = malloc((n ? n : 1) * sizeof *got);
    if (!got || !d) {
        free(got);
        printf("    %-*s FAIL (no buffer)\n", LP_TEST_NAME_WIDTH, name);
        return 1;
    }
    lp_status s = be->download(be, got, d, n * sizeof *got);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += !isfinite(got[i]);
    double err = lp_rel_l2(got, want, n);
    int ok = s == LP_OK && bad == 0 && err <= tol;
    printf("    %-*s rel_l2=%.3e (tol %.0e) %s", LP_TEST_NAME_WIDTH, name, err, tol, ok ? "ok" : "FAIL");
    if (s != LP_OK) printf(" [%s: %s]", lp_status_name(s), lp_last_error());
    if (bad) printf(" [%zu non-finite]", bad);
    printf("\n");
    free(got);
    return !ok;
}

int lp_test_status_ok(const char *name, lp_status s) {
    if (s == LP_OK) return 1;
    printf("    %-*s FAIL [%s: %s]\n", LP_TEST_NAME_WIDTH, name, lp_status_name(s), lp_last_error());
    return 0;
}

int lp_test_cuda_backends(lp_backend **gpu, lp_backend **cpu) {
    *cpu = NULL;
    lp_status s = lp_backend_cuda_create(2, 0, gpu);
    if (s == LP_ERR_UNSUPPORTED) {
        printf("  (skipping: %s)\n", lp_last_error());
        return LP_TEST_SKIP;
    }
    if (s != LP_OK) {
        printf("  CUDA backend: %s\n", lp_last_error());
        return 1;
    }
    if (lp_backend_cpu_create(2, cpu) != LP_OK) {
        printf("  CPU backend: %s\n", lp_last_error());
        lp_backend_destroy(*gpu);
        *gpu = NULL;
        return 1;
    }
    return LP_TEST_SKIP;
}

static void **kept;
static size_t nkept;

void *lp_test_keep(size_t bytes) {
    void **k = realloc(kept, (nkept + 1) * sizeof *k);
    if (!k) return NULL;
    kept = k;
    void *p = malloc(bytes ? bytes : 1);
    if (p) kept[nkept++] = p;
    return p;
}

float *lp_test_random_floats(size_t n, uint32_t seed, float scale) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    if (x) lp_test_fill(x, n, seed, scale);
    return x;
}

float *lp_test_kept_floats(size_t n, uint32_t seed, float scale) {
    float *p = lp_test_keep(n * sizeof *p);
    if (p) lp_test_fill(p, n, seed, scale);
    return p;
}

void lp_test_kept_free(void) {
    for (size_t i = 0; i < nkept; i++) free(kept[i]);
    free(kept);
    kept = NULL;
    nkept = 0;
}

/* Encodes T byte frames (as bytes, or as floats when planar is set), 3 per
 * push, then flushes; returns the latents (*n of them), NULL on failure. */
static float *taehv_encode_frames(const lp_taehv *m, const uint8_t *rgb, const float *planar, int T, int H, int W,
                                  int *n) {
    lp_taehv_encoder *e;
    if (lp_taehv_encoder_create(m, H, W, &e) != LP_OK) return NULL;
    int c, h, w, max = lp_taehv_encoder_count(e, T) + 1;
    lp_taehv_encoder_latent_shape(e, &c, &h, &w);
    size_t ln = (size_t)c * h * w, fr = (size_t)3 * H * W;
    float *lat = malloc((size_t)max * ln * sizeof *lat);
    lp_status s = lat ? LP_OK : LP_ERR_NOMEM;
    *n = 0;
    for (int t = 0; t < T && s == LP_OK; t += 3) {
        int k = T - t < 3 ? T - t : 3, got = 0;
        float *dst = lat + (size_t)*n * ln;
        s = planar ? lp_taehv_encoder_push(e, planar + (size_t)t * fr, k, dst, max - *n, &got)
                   : lp_taehv_encoder_push_rgb24(e, rgb + (size_t)t * fr, k, dst, max - *n, &got);
        *n += got;
    }
    int got = 0;
    if (s == LP_OK) s = lp_taehv_encoder_flush(e, lat + (size_t)*n * ln, max - *n, &got);
    *n += got;
    lp_taehv_encoder_free(e);
    if (s != LP_OK) {
        printf("    taehv rgb24: encode: %s\n", lp_last_error());
        free(lat);
        return NULL;
    }
    return lat;
}

int lp_test_taehv_rgb24(const lp_taehv *m, int T, int H, int W, uint32_t seed) {
    size_t fr = (size_t)3 * H * W, n = (size_t)T * fr;
    uint8_t *rgb = malloc(n), *bytes = NULL, *want = NULL;
    float *planar = malloc(n * sizeof *planar), *a = NULL, *b = NULL, *frames = NULL;
    int fails = 1, na = 0, nb = 0;
    if (!rgb || !planar) goto out;
    uint32_t r = seed;
    for (int t = 0; t < T; t++)
        for (size_t p = 0; p < (size_t)H * W; p++)
            for (size_t c = 0; c < 3; c++) {
                r = r * 1664525u + 1013904223u;
                uint8_t v = (uint8_t)(r >> 24);
                rgb[t * fr + 3 * p + c] = v;
                planar[t * fr + c * (size_t)H * W + p] = lp_byte_to_unit(v);
            }
    a = taehv_encode_frames(m, rgb, NULL, T, H, W, &na);
    b = taehv_encode_frames(m, NULL, planar, T, H, W, &nb);
    if (!a || !b || na != nb) goto out;
    size_t ln = (size_t)lp_taehv_latent_channels(m) * ((H + 7) / 8) * ((W + 7) / 8);
    int enc_same = !memcmp(a, b, (size_t)na * ln * sizeof *a);
    /* decode the latents both ways */
    lp_taehv_decoder *d1 = NULL, *d2 = NULL;
    int h = (H + 7) / 8, w = (W + 7) / 8, got1 = 0, got2 = 0;
    lp_status s = lp_taehv_decoder_create(m, h, w, NULL, &d1);
    if (s == LP_OK) s = lp_taehv_decoder_create(m, h, w, NULL, &d2);
    int c, fh, fw, max = s == LP_OK ? lp_taehv_decoder_count(d1, na) : 0;
    if (s == LP_OK) lp_taehv_decoder_frame_shape(d1, &c, &fh, &fw);
    size_t on = s == LP_OK ? (size_t)max * c * fh * fw : 0;
    if (s == LP_OK && (!(bytes = malloc(on)) || !(want = malloc(on)) || !(frames = malloc(on * sizeof *frames))))
        s = LP_ERR_NOMEM;
    if (s == LP_OK) s = lp_taehv_decoder_push_rgb24(d1, a, na, bytes, max, &got1);
    if (s == LP_OK) s = lp_taehv_decoder_push(d2, a, na, frames, max, &got2);
    lp_taehv_decoder_free(d1);
    lp_taehv_decoder_free(d2);
    if (s != LP_OK || got1 != got2 || got1 != max) {
        printf("    taehv rgb24: decode: %s\n", s != LP_OK ? lp_last_error() : "frame counts differ");
        goto out;
    }
    size_t px = (size_t)fh * fw, bad = 0;
    for (int t = 0; t < max; t++)
        for (size_t p = 0; p < px; p++)
            for (size_t k = 0; k < 3; k++)
                want[(t * px + p) * 3 + k] = lp_unit_to_byte(frames[((size_t)t * 3 + k) * px + p]);
    for (size_t i = 0; i < on; i++) bad += bytes[i] != want[i];
    printf("    taehv rgb24 %d frames %dx%d: latents %s; %zu of %zu decoded bytes differ\n", T, W, H,
           enc_same ? "identical" : "DIFFER", bad, on);
    fails = !enc_same || bad;
out:
    free(rgb), free(planar), free(a), free(b), free(bytes), free(want), free(frames);
    return fails;
}
