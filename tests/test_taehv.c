/* TAEHV: conv ops against a naive reference on random inputs, the golden file
 * (../shared/golden/taehv_w21.safetensors), streaming in any chunking, clip
 * lengths that are not a multiple of 4, the published ("" prefix) layout, load
 * errors, and a real 832×480 clip through the random-weight model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/backend/cpu/conv2d.h"
#include "../src/model/taehv.h"
#include "test_util.h"

static lp_backend *be; /* the CPU backend the models run on */
static lp_pool *pool;  /* its threads, for the conv2d.c unit tests */

/* ---- conv ops vs naive ---- */

/* Naive conv on an already upsampled and concatenated input x[cin, H, W], in double. */
static void naive_conv(const float *x, const float *w, const float *b, int cin, int cout, int k, int s, int H, int W,
                       float *out, int ho, int wo, int accumulate) {
    int pad = k / 2;
    for (int co = 0; co < cout; co++)
        for (int y = 0; y < ho; y++)
            for (int xo = 0; xo < wo; xo++) {
                double acc = b ? b[co] : 0.0;
                for (int ci = 0; ci < cin; ci++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = y * s + ky - pad, ix = xo * s + kx - pad;
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                            acc += (double)w[((co * cin + ci) * k + ky) * k + kx] * x[((size_t)ci * H + iy) * W + ix];
                        }
                float *o = &out[((size_t)co * ho + y) * wo + xo];
                *o = accumulate ? (float)(*o + acc) : (float)acc;
            }
}

typedef struct {
    int ca, cb, cout, k, stride, up, h, w, bias, accumulate;
} conv_case;

static int run_conv_case(const conv_case *cc) {
    int cin = cc->ca + cc->cb, H = cc->h * cc->up, W = cc->w * cc->up;
    size_t plane = (size_t)cc->h * cc->w;
    float *a = malloc((size_t)cc->ca * plane * sizeof *a), *b = malloc((size_t)(cc->cb ? cc->cb : 1) * plane * sizeof *b);
    float *wt = malloc((size_t)cc->cout * cin * cc->k * cc->k * sizeof *wt);
    float *bias = malloc((size_t)cc->cout * sizeof *bias);
    float *big = malloc((size_t)cin * H * W * sizeof *big);
    lp_test_fill(a, (size_t)cc->ca * plane, 1, 1.0f);
    lp_test_fill(b, (size_t)(cc->cb ? cc->cb : 1) * plane, 2, 1.0f);
    lp_test_fill(wt, (size_t)cc->cout * cin * cc->k * cc->k, 3, 0.3f);
    lp_test_fill(bias, (size_t)cc->cout, 4, 0.5f);
    /* the reference input: concatenate, then upsample, by hand */
    for (int ci = 0; ci < cin; ci++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                const float *src = ci < cc->ca ? a + (size_t)ci * plane : b + (size_t)(ci - cc->ca) * plane;
                big[((size_t)ci * H + y) * W + x] = src[(y / cc->up) * cc->w + x / cc->up];
            }
    lp_conv2d cv = {wt, cc->bias ? bias : NULL, cin, cc->cout, cc->k, cc->stride};
    lp_conv_in in = {a, cc->ca, cc->cb ? b : NULL, cc->cb, cc->h, cc->w, cc->up};
    int ho, wo;
    lp_conv2d_out_size(&cv, &in, &ho, &wo);
    int eho = (H + 2 * (cc->k / 2) - cc->k) / cc->stride + 1, ewo = (W + 2 * (cc->k / 2) - cc->k) / cc->stride + 1;
    size_t on = (size_t)cc->cout * ho * wo, sn = lp_conv2d_scratch_floats(&cv, &in);
    float *got = malloc(on * sizeof *got), *want = malloc(on * sizeof *want), *scratch = malloc((sn ? sn : 1) * sizeof *scratch);
    lp_test_fill(got, on, 5, 1.0f);
    memcpy(want, got, on * sizeof *want);
    lp_status s = lp_conv2d_forward(pool, &cv, &in, got, cc->accumulate, scratch);
    naive_conv(big, wt, cv.b, cin, cc->cout, cc->k, cc->stride, H, W, want, ho, wo, cc->accumulate);
    double rel = lp_rel_l2(got, want, on);
    free(a), free(b), free(wt), free(bias), free(big), free(got), free(want), free(scratch);
    CHECK(ho == eho && wo == ewo, "out size %dx%d, expected %dx%d", ho, wo, eho, ewo);
    CHECK(s == LP_OK, "%s", lp_last_error());
    CHECK(rel <= 1e-6, "conv ca=%d cb=%d cout=%d k=%d s=%d up=%d %dx%d: rel_l2 %.3e", cc->ca, cc->cb, cc->cout, cc->k,
          cc->stride, cc->up, cc->h, cc->w, rel);
    return 0;
}

static int test_conv_vs_naive(void) {
    static const conv_case cases[] = {
        /* ca cb cout k s up  h   w  bias acc */
        {5, 0, 7, 3, 1, 1, 9, 11, 1, 0},    /* im2col */
        {5, 0, 7, 3, 2, 1, 9, 11, 0, 0},    /* stride 2, odd size */
        {6, 0, 5, 3, 2, 1, 8, 10, 1, 1},    /* stride 2, even size, accumulate */
        {4, 3, 6, 3, 1, 1, 8, 10, 1, 0},    /* two inputs */
        {6, 0, 5, 1, 1, 1, 7, 9, 0, 0},     /* 1×1 GEMM */
        {3, 4, 5, 1, 1, 1, 7, 9, 1, 1},     /* 1×1 two inputs, accumulate */
        {3, 0, 4, 1, 1, 2, 5, 6, 0, 0},     /* 1×1 over an upsample (im2col) */
        {5, 0, 7, 3, 1, 2, 6, 7, 0, 0},     /* 3×3 over an upsample: phases */
        {5, 2, 9, 3, 1, 2, 5, 4, 1, 1},     /* phases, two inputs, bias, accumulate */
        {4, 0, 6, 3, 2, 2, 5, 7, 1, 0},     /* stride 2 over an upsample (im2col) */
        {8, 0, 3, 3, 1, 1, 13, 29, 1, 0},   /* few outputs: direct */
        {5, 3, 4, 3, 1, 1, 6, 3, 0, 1},     /* direct, two inputs, narrow, accumulate */
        {2, 0, 1, 3, 1, 1, 1, 1, 1, 0},     /* 1×1 image, direct */
        {3, 0, 5, 3, 2, 1, 1, 1, 1, 0},     /* 1×1 image, stride 2 */
        {4, 0, 5, 3, 1, 2, 1, 1, 0, 0},     /* 1×1 image, phases */
        {64, 0, 8, 3, 1, 1, 20, 200, 1, 0}, /* several im2col bands */
        {64, 0, 8, 3, 1, 2, 40, 100, 1, 0}, /* several phase bands */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        if (run_conv_case(&cases[i])) return 1;
    float w[5 * 5 * 9] = {0}, x[5 * 9] = {0}, y[5 * 9];
    lp_conv2d bad = {w, NULL, 5, 5, 3, 1}; /* 5 outputs: the im2col path */
    lp_conv_in in = {x, 4, NULL, 0, 3, 3, 1};
    CHECK(lp_conv2d_forward(pool, &bad, &in, y, 0, NULL) == LP_ERR_ARG, "channel mismatch accepted");
    in.ca = 5;
    CHECK(lp_conv2d_forward(pool, &bad, &in, y, 0, NULL) == LP_ERR_ARG, "NULL scratch accepted");
    bad.stride = 3;
    CHECK(lp_conv2d_forward(pool, &bad, &in, y, 0, NULL) == LP_ERR_ARG, "stride 3 accepted");
    return 0;
}

static int test_elementwise(void) {
    enum { C = 3, H = 5, W = 7, N = C * H * W };
    float x[N], z[N];
    lp_test_fill(x, N, 11, 4.0f);
    memcpy(z, x, sizeof z);
    lp_relu(pool, z, N);
    for (int i = 0; i < N; i++) CHECK(z[i] == (x[i] > 0 ? x[i] : 0.0f), "relu at %d", i);
    lp_tanh_clamp(pool, z, x, N);
    for (int i = 0; i < N; i++) CHECK(fabs(z[i] - 3.0 * tanh(x[i] / 3.0)) <= 1e-6, "tanh clamp at %d", i);
    lp_clamp01(pool, z, x, N);
    for (int i = 0; i < N; i++) CHECK(z[i] == fminf(fmaxf(x[i], 0.0f), 1.0f), "clamp01 at %d", i);
    return 0;
}

/* ---- the model ---- */

static const char *golden_rel = "golden/taehv_w21.safetensors";

/* Opens the golden file and loads its model; returns LP_TEST_SKIP without it. */
static int open_golden(lp_tensor_file **f, lp_taehv **m) {
    const char *path = lp_test_shared(golden_rel);
    if (!path) return lp_test_skip_shared(golden_rel);
    CHECK(lp_tensor_file_open(path, f) == LP_OK, "%s", lp_last_error());
    CHECK(lp_taehv_load(*f, "w.", be, m) == LP_OK, "%s", lp_last_error());
    return 0;
}

/* Encodes T frames [T, 3, H, W] pushing chunks of the given sizes in turn
 * (cycling), then flushes; returns the latents (*n_lat of them). */
static float *encode(const lp_taehv *m, const float *px, int T, int H, int W, const int *chunks, int n_chunks,
                     int *n_lat, size_t *lat_n) {
    lp_taehv_encoder *e;
    if (lp_taehv_encoder_create(m, H, W, &e) != LP_OK) return NULL;
    int c, h, w, max = lp_taehv_encoder_count(e, T) + 1;
    lp_taehv_encoder_latent_shape(e, &c, &h, &w);
    *lat_n = (size_t)c * h * w;
    float *lat = malloc((size_t)max * *lat_n * sizeof *lat);
    *n_lat = 0;
    lp_status s = lat ? LP_OK : LP_ERR_NOMEM;
    for (int t = 0, i = 0; t < T && s == LP_OK; i++) {
        int n = chunks[i % n_chunks] < T - t ? chunks[i % n_chunks] : T - t, got;
        s = lp_taehv_encoder_push(e, px + (size_t)t * 3 * H * W, n, lat + (size_t)*n_lat * *lat_n, max - *n_lat, &got);
        *n_lat += got;
        t += n;
    }
    int got = 0;
    if (s == LP_OK) s = lp_taehv_encoder_flush(e, lat + (size_t)*n_lat * *lat_n, max - *n_lat, &got);
    *n_lat += got;
    lp_taehv_encoder_free(e);
    if (s != LP_OK) {
        fprintf(stderr, "  encode: %s\n", lp_last_error());
        free(lat);
        return NULL;
    }
    return lat;
}

/* Decodes T latents [T, C, h, w] in chunks; returns the frames (*n_frames). */
static float *decode(const lp_taehv *m, const float *lat, int T, int h, int w, const lp_taehv_decoder_opts *o,
                     const int *chunks, int n_chunks, int *n_frames, size_t *fr_n) {
    lp_taehv_decoder *d;
    if (lp_taehv_decoder_create(m, h, w, o, &d) != LP_OK) return NULL;
    int c, fh, fw, max = lp_taehv_decoder_count(d, T);
    lp_taehv_decoder_frame_shape(d, &c, &fh, &fw);
    *fr_n = (size_t)c * fh * fw;
    size_t lat_n = (size_t)lp_taehv_latent_channels(m) * h * w;
    float *px = malloc((size_t)(max ? max : 1) * *fr_n * sizeof *px);
    *n_frames = 0;
    lp_status s = px ? LP_OK : LP_ERR_NOMEM;
    for (int t = 0, i = 0; t < T && s == LP_OK; i++) {
        int n = chunks[i % n_chunks] < T - t ? chunks[i % n_chunks] : T - t, got;
        s = lp_taehv_decoder_push(d, lat + (size_t)t * lat_n, n, px + (size_t)*n_frames * *fr_n, max - *n_frames, &got);
        *n_frames += got;
        t += n;
    }
    lp_taehv_decoder_free(d);
    if (s != LP_OK) {
        fprintf(stderr, "  decode: %s\n", lp_last_error());
        free(px);
        return NULL;
    }
    return px;
}

static int test_golden(void) {
    lp_tensor_file *f = NULL;
    lp_taehv *m = NULL;
    int r = open_golden(&f, &m);
    if (r) return r;
    CHECK(lp_taehv_latent_channels(m) == 16 && lp_taehv_time_downscale(m) == 4 && lp_taehv_time_upscale(m) == 4);
    const lp_tensor *tp, *tl, *tlat, *tpx, *traw;
    float *px = lp_test_load_f32(f, "in.pixels", &tp), *lat_in = lp_test_load_f32(f, "in.latents", &tl);
    float *ref_lat = lp_test_load_f32(f, "out.latents", &tlat), *ref_px = lp_test_load_f32(f, "out.pixels", &tpx);
    float *ref_raw = lp_test_load_f32(f, "out.pixels_untrimmed_unclamped", &traw);
    CHECK(px && lat_in && ref_lat && ref_px && ref_raw, "%s", lp_last_error());
    int T = (int)tp->shape[1], H = (int)tp->shape[3], W = (int)tp->shape[4];
    int one = 1, n_lat, n_px, n_raw;
    size_t lat_n, fr_n;
    float *lat = encode(m, px, T, H, W, &one, 1, &n_lat, &lat_n);
    CHECK(lat && n_lat == (int)tlat->shape[1] && lat_n * (size_t)n_lat == (size_t)lp_tensor_numel(tlat));
    double e_lat = lp_rel_l2(lat, ref_lat, lat_n * (size_t)n_lat);
    int TL = (int)tl->shape[1], h = (int)tl->shape[3], w = (int)tl->shape[4];
    lp_taehv_decoder_opts up = {.trim = 1, .clamp = 1}, raw = {.trim = 0, .clamp = 0};
    float *dec = decode(m, lat_in, TL, h, w, &up, &one, 1, &n_px, &fr_n);
    CHECK(dec && n_px == (int)tpx->shape[1] && n_px == 4 * TL - 3);
    double e_px = lp_rel_l2(dec, ref_px, fr_n * (size_t)n_px);
    float *dec_raw = decode(m, lat_in, TL, h, w, &raw, &one, 1, &n_raw, &fr_n);
    CHECK(dec_raw && n_raw == (int)traw->shape[1] && n_raw == 4 * TL);
    double e_raw = lp_rel_l2(dec_raw, ref_raw, fr_n * (size_t)n_raw);
    printf("    rel_l2: latents %.3e, pixels %.3e, untrimmed unclamped %.3e\n", e_lat, e_px, e_raw);
    CHECK(e_lat <= 1e-5 && e_px <= 1e-5 && e_raw <= 1e-5);
    free(px), free(lat_in), free(ref_lat), free(ref_px), free(ref_raw), free(lat), free(dec), free(dec_raw);
    lp_taehv_free(m);
    lp_tensor_file_close(f);
    return 0;
}

/* Frame by frame, all 12 at once and chunks of 5/7 give identical latents;
 * latent by latent and all at once give identical frames. */
static int test_streaming_chunks(void) {
    lp_tensor_file *f = NULL;
    lp_taehv *m = NULL;
    int r = open_golden(&f, &m);
    if (r) return r;
    const lp_tensor *tp, *tl;
    float *px = lp_test_load_f32(f, "in.pixels", &tp), *lat_in = lp_test_load_f32(f, "in.latents", &tl);
    CHECK(px && lat_in);
    int T = (int)tp->shape[1], H = (int)tp->shape[3], W = (int)tp->shape[4];
    const int one[] = {1}, all[] = {T}, odd[] = {5, 7};
    int n1, n2, n3;
    size_t ln;
    float *a = encode(m, px, T, H, W, one, 1, &n1, &ln), *b = encode(m, px, T, H, W, all, 1, &n2, &ln);
    float *c = encode(m, px, T, H, W, odd, 2, &n3, &ln);
    CHECK(a && b && c && n1 == T / 4 && n2 == n1 && n3 == n1);
    CHECK(!memcmp(a, b, ln * (size_t)n1 * sizeof *a) && !memcmp(a, c, ln * (size_t)n1 * sizeof *a), "encoder chunking");
    free(a), free(b), free(c);
    int TL = (int)tl->shape[1], h = (int)tl->shape[3], w = (int)tl->shape[4], two_one[] = {2, 1}, allL[] = {TL};
    size_t fn;
    a = decode(m, lat_in, TL, h, w, NULL, one, 1, &n1, &fn);
    b = decode(m, lat_in, TL, h, w, NULL, allL, 1, &n2, &fn);
    c = decode(m, lat_in, TL, h, w, NULL, two_one, 2, &n3, &fn);
    CHECK(a && b && c && n1 == 4 * TL && n2 == n1 && n3 == n1);
    CHECK(!memcmp(a, b, fn * (size_t)n1 * sizeof *a) && !memcmp(a, c, fn * (size_t)n1 * sizeof *a), "decoder chunking");
    for (size_t i = 0; i < fn * (size_t)n1; i++) CHECK(a[i] >= 0.0f && a[i] <= 1.0f, "default output not clamped");
    free(a), free(b), free(c), free(px), free(lat_in);
    lp_taehv_free(m);
    lp_tensor_file_close(f);
    return 0;
}

/* Byte frames in and out (push_rgb24) == float frames converted on the host. */
static int test_rgb24_frames(void) {
    lp_tensor_file *f = NULL;
    lp_taehv *m = NULL;
    int r = open_golden(&f, &m);
    if (r) return r;
    r = lp_test_taehv_rgb24(m, 10, 40, 56, 7);
    lp_taehv_free(m);
    lp_tensor_file_close(f);
    return r;
}

/* 10 frames + flush == the same 10 frames followed by two copies of the last;
 * a too-small output buffer is refused without consuming input; reset
 * restarts the clip. */
static int test_partial_clip_and_reset(void) {
    lp_tensor_file *f = NULL;
    lp_taehv *m = NULL;
    int r = open_golden(&f, &m);
    if (r) return r;
    const lp_tensor *tp;
    float *px = lp_test_load_f32(f, "in.pixels", &tp);
    CHECK(px);
    int H = (int)tp->shape[3], W = (int)tp->shape[4];
    size_t fr = (size_t)3 * H * W;
    float *padded = malloc(12 * fr * sizeof *padded);
    CHECK(padded);
    memcpy(padded, px, 10 * fr * sizeof *padded);
    memcpy(padded + 10 * fr, px + 9 * fr, fr * sizeof *padded);
    memcpy(padded + 11 * fr, px + 9 * fr, fr * sizeof *padded);
    const int one[] = {1}, three[] = {3};
    int n1, n2;
    size_t ln;
    float *a = encode(m, px, 10, H, W, three, 1, &n1, &ln), *b = encode(m, padded, 12, H, W, one, 1, &n2, &ln);
    CHECK(a && b && n1 == 3 && n2 == 3, "%d and %d latents", n1, n2);
    CHECK(!memcmp(a, b, 3 * ln * sizeof *a), "flush padding differs from explicit padding");

    lp_taehv_encoder *e;
    CHECK(lp_taehv_encoder_create(m, H, W, &e) == LP_OK, "%s", lp_last_error());
    float *lat = malloc(3 * ln * sizeof *lat);
    int got;
    CHECK(lat);
    CHECK(lp_taehv_encoder_count(e, 3) == 0 && lp_taehv_encoder_count(e, 4) == 1 && lp_taehv_encoder_count(e, 9) == 2);
    CHECK(lp_taehv_encoder_push(e, px, 4, lat, 0, &got) == LP_ERR_ARG && got == 0, "overflow accepted");
    CHECK(lp_taehv_encoder_push(e, px, 6, lat, 3, &got) == LP_OK && got == 1, "%s", lp_last_error());
    CHECK(!memcmp(lat, a, ln * sizeof *lat), "a refused push changed the state");
    CHECK(lp_taehv_encoder_flush(e, lat + ln, 2, &got) == LP_OK && got == 1);
    CHECK(lp_taehv_encoder_flush(e, lat + ln, 2, &got) == LP_OK && got == 0, "flush of a complete clip emitted");
    lp_taehv_encoder_reset(e);
    CHECK(lp_taehv_encoder_push(e, px, 4, lat + 2 * ln, 1, &got) == LP_OK && got == 1);
    CHECK(!memcmp(lat + 2 * ln, a, ln * sizeof *lat), "reset does not restart the clip");
    lp_taehv_encoder_free(e);

    lp_taehv_decoder *d;
    lp_taehv_decoder_opts trim = {.trim = 1, .clamp = 1};
    int c, fh, fw;
    CHECK(lp_taehv_decoder_create(m, H / 8, W / 8, &trim, &d) == LP_OK, "%s", lp_last_error());
    lp_taehv_decoder_frame_shape(d, &c, &fh, &fw);
    CHECK(c == 3 && fh == H && fw == W);
    CHECK(lp_taehv_decoder_count(d, 1) == 1 && lp_taehv_decoder_count(d, 3) == 9);
    float *out = malloc(4 * fr * sizeof *out);
    CHECK(out);
    CHECK(lp_taehv_decoder_push(d, a, 1, out, 0, &got) == LP_ERR_ARG, "overflow accepted");
    CHECK(lp_taehv_decoder_push(d, a, 1, out, 1, &got) == LP_OK && got == 1);
    CHECK(lp_taehv_decoder_count(d, 1) == 4);
    lp_taehv_decoder_reset(d);
    CHECK(lp_taehv_decoder_count(d, 1) == 1, "reset does not restart trimming");
    lp_taehv_decoder_free(d);
    CHECK(lp_taehv_decoder_create(m, 0, 4, NULL, &d) == LP_ERR_ARG && !d, "empty latent accepted");
    free(px), free(padded), free(a), free(b), free(lat), free(out);
    lp_taehv_free(m);
    lp_tensor_file_close(f);
    return 0;
}

/* Writes the w.* tensors of src as a safetensors file without the "w." prefix,
 * leaving out `drop` and declaring `reshape` (a 1-D tensor of even length n)
 * as [n/2, 2]. */
static int write_published(const char *path, const lp_tensor_file *src, const char *drop, const char *reshape) {
    size_t cap = 1 << 16, len = 0, off = 0;
    char *hdr = malloc(cap);
    if (!hdr) return 1;
    len += (size_t)snprintf(hdr, cap, "{");
    for (size_t i = 0; i < lp_tensor_file_count(src); i++) {
        const lp_tensor *t = lp_tensor_file_at(src, i);
        if (strncmp(t->name, "w.", 2) || (drop && !strcmp(t->name, drop))) continue;
        char shape[128];
        if (reshape && !strcmp(t->name, reshape)) {
            snprintf(shape, sizeof shape, "%lld,2", (long long)t->shape[0] / 2);
        } else {
            size_t p = 0;
            shape[0] = 0;
            for (int d = 0; d < t->ndim; d++)
                p += (size_t)snprintf(shape + p, sizeof shape - p, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        }
        len += (size_t)snprintf(hdr + len, cap - len, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%zu,%zu]}",
                                len > 1 ? "," : "", t->name + 2, lp_dtype_name(t->dtype), shape, off, off + t->nbytes);
        off += t->nbytes;
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    while (len % 8) hdr[len++] = ' ';
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        free(hdr);
        return 1;
    }
    unsigned char n8[8];
    for (int i = 0; i < 8; i++) n8[i] = (unsigned char)((uint64_t)len >> (8 * i));
    fwrite(n8, 1, 8, fp);
    fwrite(hdr, 1, len, fp);
    for (size_t i = 0; i < lp_tensor_file_count(src); i++) {
        const lp_tensor *t = lp_tensor_file_at(src, i);
        if (strncmp(t->name, "w.", 2) || (drop && !strcmp(t->name, drop))) continue;
        fwrite(t->data, 1, t->nbytes, fp);
    }
    free(hdr);
    return fclose(fp) != 0;
}

/* The published layout (no prefix) gives the same model; a missing or
 * mis-shaped tensor is a clear error naming it. */
static int test_published_layout_and_errors(void) {
    lp_tensor_file *f = NULL, *p = NULL;
    lp_taehv *m = NULL, *m2 = NULL;
    int r = open_golden(&f, &m);
    if (r) return r;
    char path[512];
    snprintf(path, sizeof path, "%s/taew2_1.safetensors", lp_test_tmpdir());
    CHECK(!write_published(path, f, NULL, NULL), "cannot write %s", path);
    CHECK(lp_tensor_file_open(path, &p) == LP_OK, "%s", lp_last_error());
    CHECK(lp_taehv_load(p, "w.", be, &m2) == LP_ERR_MISSING && !m2 && strstr(lp_last_error(), "w.encoder.0.weight"),
          "wrong prefix: %s", lp_last_error());
    CHECK(lp_taehv_load(p, NULL, be, &m2) == LP_OK, "%s", lp_last_error());
    lp_tensor_file_close(p);
    const lp_tensor *tl;
    float *lat = lp_test_load_f32(f, "in.latents", &tl);
    CHECK(lat);
    int one = 1, n1, n2;
    size_t fn;
    float *a = decode(m, lat, 1, (int)tl->shape[3], (int)tl->shape[4], NULL, &one, 1, &n1, &fn);
    float *b = decode(m2, lat, 1, (int)tl->shape[3], (int)tl->shape[4], NULL, &one, 1, &n2, &fn);
    CHECK(a && b && n1 == 4 && n2 == 4 && !memcmp(a, b, 4 * fn * sizeof *a), "published layout decodes differently");
    free(a), free(b), free(lat);
    lp_taehv_free(m2);

    CHECK(!write_published(path, f, "w.decoder.10.conv.2.bias", NULL));
    CHECK(lp_tensor_file_open(path, &p) == LP_OK, "%s", lp_last_error());
    CHECK(lp_taehv_load(p, "", be, &m2) == LP_ERR_MISSING && !m2, "missing tensor accepted");
    CHECK(strstr(lp_last_error(), "decoder.10.conv.2.bias"), "message: %s", lp_last_error());
    lp_tensor_file_close(p);

    CHECK(!write_published(path, f, NULL, "w.encoder.17.bias"));
    CHECK(lp_tensor_file_open(path, &p) == LP_OK, "%s", lp_last_error());
    CHECK(lp_taehv_load(p, "", be, &m2) == LP_ERR_SHAPE && !m2, "mis-shaped tensor accepted");
    CHECK(strstr(lp_last_error(), "encoder.17.bias") && strstr(lp_last_error(), "[8, 2]"), "message: %s",
          lp_last_error());
    lp_tensor_file_close(p);
    remove(path);
    lp_taehv_free(m);
    lp_tensor_file_close(f);
    return 0;
}

/* The first 4 frames of a real 832×480 clip, decoded by ffmpeg, through the
 * random-weight model at full size: 1 latent [16, 60, 104], 4 frames back. */
static int test_real_clip(void) {
    const char *rel = "data/wan_cheesecake_832x480.mp4";
    const char *clip = lp_test_shared(rel);
    if (!clip) return lp_test_skip_shared(rel);
    char clip_path[4096];
    snprintf(clip_path, sizeof clip_path, "%s", clip);
    if (system("command -v ffmpeg > /dev/null 2>&1") != 0) {
        printf("  (skipping: ffmpeg not found)\n");
        return LP_TEST_SKIP;
    }
    lp_tensor_file *f = NULL;
    lp_taehv *m = NULL;
    int r = open_golden(&f, &m);
    if (r) return r;
    enum { T = 4, H = 480, W = 832 };
    size_t fr = (size_t)3 * H * W;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "ffmpeg -v error -i '%s' -frames:v %d -f rawvideo -pix_fmt rgb24 -", clip_path, T);
    FILE *pp = popen(cmd, "r");
    CHECK(pp, "popen failed");
    unsigned char *rgb = malloc(T * fr);
    float *px = malloc(T * fr * sizeof *px);
    CHECK(rgb && px);
    size_t n = fread(rgb, 1, T * fr, pp);
    int rc = pclose(pp);
    CHECK(n == T * fr && rc == 0, "ffmpeg gave %zu of %zu bytes (status %d)", n, (size_t)T * fr, rc);
    for (int t = 0; t < T; t++)
        for (int c = 0; c < 3; c++)
            for (size_t i = 0; i < (size_t)H * W; i++) px[t * fr + c * H * W + i] = rgb[t * fr + i * 3 + c] / 255.0f;
    int one = 1, n_lat, n_px;
    size_t ln, fn;
    float *lat = encode(m, px, T, H, W, &one, 1, &n_lat, &ln);
    CHECK(lat && n_lat == 1 && ln == (size_t)16 * 60 * 104, "%d latents of %zu", n_lat, ln);
    float *out = decode(m, lat, 1, 60, 104, NULL, &one, 1, &n_px, &fn);
    CHECK(out && n_px == T && fn == fr);
    for (size_t i = 0; i < ln; i++) CHECK(isfinite(lat[i]), "latent %zu not finite", i);
    for (size_t i = 0; i < T * fr; i++) CHECK(isfinite(out[i]) && out[i] >= 0.0f && out[i] <= 1.0f, "pixel %zu", i);
    free(rgb), free(px), free(lat), free(out);
    lp_taehv_free(m);
    lp_tensor_file_close(f);
    return 0;
}

int main(void) {
    if (lp_backend_cpu_create(2, &be) != LP_OK) {
        fprintf(stderr, "%s\n", lp_last_error());
        return 1;
    }
    pool = be->pool;
    lp_test_run("conv2d vs naive (im2col, stride 2, concat, 1x1, upsample phases, direct, bands)", test_conv_vs_naive);
    lp_test_run("relu, tanh clamp, clamp01, add, upsample, concat", test_elementwise);
    lp_test_run("golden taehv_w21: encode, decode trimmed+clamped, untrimmed+unclamped", test_golden);
    lp_test_run("streaming: frame by frame == all at once == chunks of 5/7", test_streaming_chunks);
    lp_test_run("partial clip flush, output overflow, reset", test_partial_clip_and_reset);
    lp_test_run("byte frames (push_rgb24) == float frames converted on the host", test_rgb24_frames);
    lp_test_run("published layout (no prefix); missing / mis-shaped tensors", test_published_layout_and_errors);
    lp_test_run("real clip 832x480 through the random-weight model", test_real_clip);
    lp_backend_destroy(be);
    return lp_test_finish();
}
