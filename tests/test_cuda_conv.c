/* CPU-vs-CUDA parity of the conv-net ops of the backend table (backend.h:
 * conv2d, relu, tanh_clamp, clamp01, rgb24_to_planar, planar_to_rgb24) on
 * random inputs, TAEHV through the CUDA
 * backend against the golden file (../shared/golden/taehv_w21.safetensors),
 * and informational timings (conv2d in TFLOP/s, 832×480 TAEHV). The CPU
 * backend is the reference; CUDA outputs that the op overwrites are poisoned
 * with NaN bytes beforehand so that an element left unwritten fails.
 * Tolerances: 2e-2 for the bf16 tensor-core convolutions and the whole model,
 * 1e-5 for tanh_clamp (another tanhf), 0 for relu, clamp01 and the pixel
 * ops (bytes compared exactly). Every case skips when the CUDA backend is unavailable (built
 * without CUDA, or no usable GPU): the binary then exits 77. Weight views
 * point at host buffers kept alive until both backends are destroyed, because
 * the CUDA backend caches device copies by data pointer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/backend/backend.h"
#include "../src/base/clock.h"
#include "../src/base/half.h"
#include "../src/model/taehv.h"
#include "test_util.h"

static lp_backend *cpu, *gpu;
static int no_gpu; /* what each case returns without the CUDA backend (set by main) */

/* ------------------------------------------------------------------ conv2d */

/* off: the output starts that many floats into its buffer (1: rows not on
 * 8 bytes, the kernel's one-pixel stores). */
typedef struct {
    int ca, cb, cout, k, stride, up, h, w, bias;
    unsigned flags; /* LP_CONV_ACCUMULATE (1), LP_CONV_RELU (2) */
    int off;
} conv_case;

/* One convolution on both backends from the same random inputs, weights,
 * bias and (when accumulating) initial output, with the flags. */
static int conv_case_run(const conv_case *cc, uint32_t seed) {
    int cin = cc->ca + cc->cb, pad = cc->k / 2;
    int ho = (cc->h * cc->up + 2 * pad - cc->k) / cc->stride + 1, wo = (cc->w * cc->up + 2 * pad - cc->k) / cc->stride + 1;
    size_t plane = (size_t)cc->h * cc->w, na = (size_t)cc->ca * plane, nb = (size_t)cc->cb * plane;
    size_t nw = (size_t)cc->cout * cin * cc->k * cc->k, no = (size_t)cc->cout * ho * wo, off = (size_t)cc->off;
    char name[128];
    snprintf(name, sizeof name, "conv2d %d+%d->%d k%d s%d up%d %dx%d%s%s%s%s", cc->ca, cc->cb, cc->cout, cc->k,
             cc->stride, cc->up, cc->w, cc->h, cc->bias ? " bias" : "",
             cc->flags & LP_CONV_ACCUMULATE ? " accumulate" : "", cc->flags & LP_CONV_RELU ? " relu" : "",
             off ? " offset" : "");
    float *a = lp_test_random_floats(na, seed, 1.0f), *b = lp_test_random_floats(nb, seed + 1, 1.0f);
    float *wt = lp_test_kept_floats(nw, seed + 2, 1.0f / sqrtf((float)(cin * cc->k * cc->k))), *bias = lp_test_kept_floats((size_t)cc->cout, seed + 3, 0.5f);
    float *buf = lp_test_random_floats(no + off, seed + 4, 1.0f), *out = buf ? buf + off : NULL;
    CHECK(a && b && wt && bias && buf, "out of memory");
    lp_tensor W = {.name = "conv.weight", .dtype = LP_F32, .ndim = 4, .shape = {cc->cout, cin, cc->k, cc->k},
                   .data = wt, .nbytes = nw * sizeof *wt};
    lp_tensor B = {.name = "conv.bias", .dtype = LP_F32, .ndim = 1, .shape = {cc->cout}, .data = bias,
                   .nbytes = (size_t)cc->cout * sizeof *bias};
    float *da = lp_test_dev_copy(gpu, a, na), *db = cc->cb ? lp_test_dev_copy(gpu, b, nb) : NULL;
    float *dbuf = cc->flags & LP_CONV_ACCUMULATE ? lp_test_dev_copy(gpu, buf, no + off) : lp_test_dev_poison(gpu, no + off);
    float *dout = dbuf ? dbuf + off : NULL;
    int fails = 1;
    if (da && (db || !cc->cb) && dout) {
        lp_conv2d_input ci = {a, cc->ca, cc->cb ? b : NULL, cc->cb, cc->h, cc->w, cc->up};
        lp_conv2d_input gi = {da, cc->ca, db, cc->cb, cc->h, cc->w, cc->up};
        lp_status s = cpu->conv2d(cpu, out, &ci, &W, cc->bias ? &B : NULL, cc->stride, cc->flags);
        if (s != LP_OK) printf("    %s: CPU: %s\n", name, lp_last_error());
        lp_status g = s == LP_OK ? gpu->conv2d(gpu, dout, &gi, &W, cc->bias ? &B : NULL, cc->stride, cc->flags) : s;
        if (s == LP_OK && lp_test_status_ok(name, g))
            fails = lp_test_dev_compare(gpu, name, dout, out, no, 2e-2);
    }
    lp_test_dev_free(gpu, da);
    lp_test_dev_free(gpu, db);
    lp_test_dev_free(gpu, dbuf);
    free(a);
    free(b);
    free(buf);
    return fails;
}

static int test_conv2d(void) {
    if (!gpu) return no_gpu;
    /* 3×3 stride-1 convolutions of one input (no upsample) with at most 4
     * outputs and 6912 weights run a direct fp32 kernel; the others the
     * tensor-core kernel, which reduces over channels in groups of 16
     * per tap when both inputs' channel counts are multiples of 16
     * ("grouped"), else element by element ("dense"); its tiles are 64 or 128
     * output channels (128 above 64) × 128 pixels × 32 of the reduction
     * K = cin·k². */
    static const conv_case cases[] = {
        /* ca  cb cout k  s up    h    w bias flags off */
        {16, 0, 24, 3, 1, 1, 17, 23, 1, 0, 0},    /* 3×3, grouped */
        {16, 0, 24, 3, 1, 1, 17, 23, 0, 1, 0},    /* accumulate, no bias */
        {16, 0, 24, 3, 1, 1, 17, 23, 1, 1, 0},    /* accumulate with bias */
        {16, 0, 24, 3, 1, 1, 17, 23, 1, 2, 0},    /* ReLU */
        {16, 0, 24, 3, 1, 1, 17, 23, 1, 3, 0},    /* accumulate, then ReLU (MemBlock's last conv) */
        {64, 0, 64, 3, 1, 1, 23, 37, 1, 3, 1},    /* the same, grouped, into an unaligned output */
        {8, 8, 16, 3, 1, 2, 15, 21, 0, 2, 0},     /* ReLU, two inputs over an upsample */
        {32, 0, 64, 1, 1, 1, 19, 27, 1, 2, 0},    /* 1×1 with ReLU */
        {12, 0, 16, 3, 2, 1, 19, 25, 0, 0, 0},    /* stride 2, odd size, dense */
        {12, 0, 16, 3, 2, 1, 20, 26, 1, 0, 0},    /* stride 2, even size */
        {8, 8, 16, 3, 1, 1, 15, 21, 1, 0, 0},     /* two inputs (MemBlock), dense */
        {8, 8, 16, 3, 1, 1, 15, 21, 0, 1, 0},     /* two inputs, accumulate */
        {16, 0, 16, 3, 1, 2, 11, 13, 0, 0, 0},    /* over a ×2 upsample */
        {6, 5, 12, 3, 1, 2, 9, 7, 1, 1, 0},       /* upsample, two inputs, bias, accumulate */
        {8, 0, 16, 3, 2, 2, 9, 11, 1, 0, 0},      /* stride 2 over an upsample */
        {3, 0, 32, 3, 1, 1, 24, 40, 1, 0, 0},     /* K = 27, dense, one step (TAEHV's first conv) */
        {3, 0, 64, 3, 1, 1, 23, 37, 1, 0, 0},     /* the same with TAEHV's 64 outputs */
        {5, 2, 9, 3, 2, 2, 7, 5, 0, 1, 0},        /* K = 63, everything odd */
        {7, 0, 5, 3, 1, 1, 11, 9, 1, 0, 0},       /* cout 5: the smallest tensor-core conv */
        {32, 0, 64, 1, 1, 1, 19, 27, 0, 0, 0},    /* 1×1 (TGrow), grouped */
        {16, 16, 16, 1, 1, 1, 13, 17, 0, 1, 0},   /* 1×1, two inputs, accumulate (TPool parts, skip) */
        {12, 0, 20, 1, 2, 1, 9, 13, 1, 0, 0},     /* 1×1 stride 2, dense */
        {12, 0, 20, 1, 1, 2, 9, 13, 1, 1, 0},     /* 1×1 over an upsample */
        {24, 0, 72, 1, 1, 1, 17, 19, 1, 0, 0},    /* 1×1 dense, K = 24 */
        {64, 0, 128, 1, 1, 1, 33, 29, 1, 0, 0},   /* 1×1 grouped, K = 64 (TGrow 64 -> 128) */
        {64, 64, 64, 1, 1, 1, 13, 17, 0, 1, 0},   /* 1×1 grouped, two inputs, accumulate */
        {5, 0, 8, 1, 1, 1, 5, 3, 1, 0, 0},        /* K = 5, 15 pixels */
        {4, 0, 6, 3, 1, 1, 1, 1, 1, 0, 0},        /* 1×1 image */
        {64, 0, 64, 3, 1, 1, 23, 37, 1, 0, 0},    /* grouped, one 64 tile, 851 pixels */
        {64, 0, 64, 3, 1, 1, 23, 37, 1, 1, 1},    /* the same accumulating into an unaligned output */
        {64, 0, 64, 3, 1, 1, 24, 36, 0, 0, 1},    /* an even row count, unaligned output */
        {32, 32, 136, 3, 1, 1, 23, 37, 1, 0, 0},  /* grouped two inputs, cout 136: two 128 tiles, one of 8 */
        {40, 24, 72, 3, 1, 1, 19, 21, 0, 1, 0},   /* dense (40 = 2·16 + 8) two inputs, cout 72, accumulate */
        {48, 48, 80, 3, 1, 2, 13, 19, 1, 0, 0},   /* grouped two inputs over an upsample */
        {32, 0, 200, 3, 2, 1, 31, 45, 0, 1, 0},   /* grouped stride 2, accumulate, two 128 tiles */
        {64, 0, 64, 3, 2, 2, 17, 29, 1, 0, 0},    /* grouped stride 2 over an upsample */
        {16, 0, 256, 3, 1, 1, 15, 26, 1, 0, 0},   /* K = 144, half a step of padding (TAEHV decoder's first conv) */
        {128, 128, 8, 3, 1, 1, 70, 240, 1, 0, 0}, /* K = 2304: 72 steps */
        {64, 64, 64, 3, 1, 1, 60, 104, 1, 0, 0},  /* TAEHV MemBlock conv at 832x480's latent size */
        {64, 0, 3, 3, 1, 1, 29, 37, 1, 0, 0},     /* cout 3 (TAEHV's last conv): a tile mostly padding */
        {64, 0, 3, 3, 1, 1, 29, 37, 1, 3, 0},     /* cout 3, accumulate and ReLU */
        {64, 0, 3, 3, 1, 1, 480, 832, 1, 0, 0},   /* the direct kernel at TAEHV's full size */
        {5, 0, 4, 3, 1, 1, 9, 130, 1, 1, 0},      /* direct: channels not a multiple of 4, two tiles wide */
        {64, 0, 1, 3, 1, 1, 17, 200, 0, 2, 1},    /* direct: cout 1, ReLU, unaligned output */
        {192, 0, 4, 3, 1, 1, 11, 13, 1, 3, 0},    /* direct: the most weights it keeps (4·192·9) */
        {193, 0, 4, 3, 1, 1, 11, 13, 1, 0, 0},    /* one channel more: the tensor-core kernel */
        {8, 4, 4, 3, 2, 2, 9, 11, 1, 1, 0},       /* cout 4, two inputs, stride 2, upsample, accumulate */
        {6, 0, 1, 1, 1, 1, 7, 9, 0, 0, 0},        /* cout 1, 1×1 */
        {3, 2, 2, 3, 1, 2, 1, 1, 0, 1, 0},        /* cout 2 on a 1×1 image */
    };
    int fails = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) fails += conv_case_run(&cases[i], 100 + 10 * (uint32_t)i);
    return fails ? 1 : 0;
}

/* Argument errors are returned (not sticky): a valid op afterwards works. */
static int test_conv2d_errors(void) {
    if (!gpu) return no_gpu;
    float *wt = lp_test_kept_floats(6 * 4 * 9, 7, 0.3f);
    float *d = gpu->alloc(gpu, 4096 * sizeof(float));
    CHECK(wt && d, "alloc: %s", lp_last_error());
    lp_tensor W = {.name = "w", .dtype = LP_F32, .ndim = 4, .shape = {6, 4, 3, 3}, .data = wt, .nbytes = 6 * 4 * 9 * 4};
    lp_tensor W16 = W;
    W16.dtype = LP_BF16;
    lp_conv2d_input in = {d, 3, NULL, 0, 5, 5, 1}, ok_in = {d, 4, NULL, 0, 5, 5, 1}, up3 = {d, 4, NULL, 0, 5, 5, 3};
    lp_status s1 = gpu->conv2d(gpu, d + 2048, &in, &W, NULL, 1, 0);
    lp_status s2 = gpu->conv2d(gpu, d + 2048, &ok_in, &W16, NULL, 1, 0);
    lp_status s3 = gpu->conv2d(gpu, d + 2048, &ok_in, &W, NULL, 3, 0);
    lp_status s4 = gpu->conv2d(gpu, d + 2048, &up3, &W, NULL, 1, 0);
    lp_status s7 = gpu->conv2d(gpu, d + 2048, &ok_in, &W, NULL, 1, 4u);
    lp_status s5 = gpu->conv2d(gpu, d + 2048, &ok_in, &W, NULL, 1, 0);
    float back[4];
    lp_status s6 = gpu->download(gpu, back, d + 2048, sizeof back); /* synchronizes: the valid op ran */
    gpu->release(gpu, d);
    printf("    channel mismatch -> %s, bf16 weight -> %s, stride 3 -> %s, up 3 -> %s, unknown flag -> %s, then %s, %s\n",
           lp_status_name(s1), lp_status_name(s2), lp_status_name(s3), lp_status_name(s4), lp_status_name(s7),
           lp_status_name(s5), lp_status_name(s6));
    CHECK(s1 == LP_ERR_SHAPE && s2 == LP_ERR_UNSUPPORTED && s3 == LP_ERR_ARG && s4 == LP_ERR_ARG && s7 == LP_ERR_ARG &&
              s5 == LP_OK && s6 == LP_OK,
          "unexpected statuses");
    return 0;
}

/* ------------------------------------------------------------- elementwise */

/* relu in place, tanh_clamp and clamp01 into another buffer and in place, on
 * n values at offset floats into the buffers (offset 1 takes the unaligned
 * path, an odd n the tail). */
static int ew_case(int64_t n, int offset, uint32_t seed) {
    static const char *ops[] = {"relu", "tanh_clamp", "clamp01"};
    size_t m = (size_t)(n + offset);
    int fails = 0;
    for (int op = 0; op < 3; op++)
        for (int inplace = op == 0; inplace < 2; inplace++) {
            char name[96];
            snprintf(name, sizeof name, "%s n=%lld offset=%d%s", ops[op], (long long)n, offset,
                     inplace ? " in place" : "");
            float *x = lp_test_random_floats(m, seed + (uint32_t)op, 4.0f), *want = malloc(m * sizeof *want);
            CHECK(x && want, "out of memory");
            memcpy(want, x, m * sizeof *want);
            float *dx = lp_test_dev_copy(gpu, x, m), *dy = inplace ? dx : lp_test_dev_poison(gpu, m);
            if (dx && dy) {
                if (op == 0) {
                    cpu->relu(cpu, want + offset, n);
                    gpu->relu(gpu, dx + offset, n);
                } else if (op == 1) {
                    cpu->tanh_clamp(cpu, want + offset, x + offset, n);
                    gpu->tanh_clamp(gpu, dy + offset, dx + offset, n);
                } else {
                    cpu->clamp01(cpu, want + offset, x + offset, n);
                    gpu->clamp01(gpu, dy + offset, dx + offset, n);
                }
                fails += lp_test_dev_compare(gpu, name, dy + offset, want + offset, (size_t)n, op == 1 ? 1e-5 : 0.0);
            } else {
                fails++;
            }
            if (dy != dx) lp_test_dev_free(gpu, dy);
            lp_test_dev_free(gpu, dx);
            free(x);
            free(want);
        }
    return fails;
}

static int test_elementwise(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += ew_case(1 << 20, 0, 300);
    fails += ew_case(100003, 1, 310);
    fails += ew_case(7, 0, 320);
    return fails ? 1 : 0;
}

/* ------------------------------------------------------------------ pixels */

/* rgb24_to_planar and planar_to_rgb24 on `frames` frames of `pixels` random
 * pixels; the floats for planar_to_rgb24 cover [−0.5, 1.5) (clamping), the
 * exact byte boundaries k/255 ± half a step, and NaN. */
static int pixel_case(int frames, int64_t pixels, uint32_t seed) {
    size_t n = (size_t)frames * 3 * (size_t)pixels;
    char name[96];
    int fails = 0;
    uint8_t *rgb = malloc(n), *want_rgb = malloc(n), *got_rgb = malloc(n);
    float *x = lp_test_random_floats(n, seed, 1.0f), *want = malloc(n * sizeof *want);
    CHECK(rgb && want_rgb && got_rgb && x && want, "out of memory");
    uint32_t r = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        r = r * 1664525u + 1013904223u;
        rgb[i] = (uint8_t)(r >> 24);
        x[i] = 0.5f + x[i]; /* [−0.5, 1.5) */
        if (i % 7 == 3) x[i] = ((float)(r >> 24) + ((r >> 8) & 1 ? 0.5f : -0.5f)) / 255.0f;
    }
    x[n / 2] = NAN;
    /* bytes -> floats */
    snprintf(name, sizeof name, "rgb24_to_planar %d frames x %lld px", frames, (long long)pixels);
    uint8_t *drgb = gpu->alloc(gpu, n);
    float *dy = lp_test_dev_poison(gpu, n);
    if (drgb && dy && gpu->upload(gpu, drgb, rgb, n) == LP_OK) {
        cpu->rgb24_to_planar(cpu, want, rgb, frames, pixels);
        gpu->rgb24_to_planar(gpu, dy, drgb, frames, pixels);
        fails += lp_test_dev_compare(gpu, name, dy, want, n, 0.0);
    } else fails++;
    /* floats -> bytes */
    float *dx = lp_test_dev_copy(gpu, x, n);
    if (drgb && dx) {
        cpu->planar_to_rgb24(cpu, want_rgb, x, frames, pixels);
        gpu->planar_to_rgb24(gpu, drgb, dx, frames, pixels);
        if (gpu->download(gpu, got_rgb, drgb, n) != LP_OK) fails++;
        else {
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) bad += got_rgb[i] != want_rgb[i];
            printf("    planar_to_rgb24 %d frames x %lld px: %zu of %zu bytes differ\n", frames, (long long)pixels, bad,
                   n);
            fails += bad != 0;
        }
    } else fails++;
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dy);
    if (drgb) gpu->release(gpu, drgb);
    free(rgb), free(want_rgb), free(got_rgb), free(x), free(want);
    return fails;
}

static int test_pixels(void) {
    if (!gpu) return no_gpu;
    int fails = pixel_case(4, 832 * 480, 400);
    fails += pixel_case(3, 1001, 410);
    fails += pixel_case(1, 1, 420);
    return fails ? 1 : 0;
}

/* ----------------------------------------------------------------- TAEHV */

static const char *golden_rel = "golden/taehv_w21.safetensors";
/* The golden file and its model on the CUDA backend, loaded once: the backend
 * caches weights by address, so a second model must not reuse freed ones. */
static lp_tensor_file *golden;
static lp_taehv *model;

/* Opens the golden file and loads its model on first use; LP_TEST_SKIP
 * without the shared folder. */
static int open_golden(void) {
    if (model) return 0;
    const char *path = lp_test_shared(golden_rel);
    if (!path) return lp_test_skip_shared(golden_rel);
    CHECK(lp_tensor_file_open(path, &golden) == LP_OK, "%s", lp_last_error());
    CHECK(lp_taehv_load(golden, "w.", gpu, &model) == LP_OK, "%s", lp_last_error());
    return 0;
}

/* Decodes T latents one at a time with opts; returns the frames (*n of them). */
static float *decode_all(const lp_taehv *m, const float *lat, int T, int h, int w, const lp_taehv_decoder_opts *o,
                         int *n) {
    lp_taehv_decoder *d;
    if (lp_taehv_decoder_create(m, h, w, o, &d) != LP_OK) return NULL;
    int c, fh, fw, max = lp_taehv_decoder_count(d, T);
    lp_taehv_decoder_frame_shape(d, &c, &fh, &fw);
    size_t fr = (size_t)c * fh * fw, ln = (size_t)lp_taehv_latent_channels(m) * h * w;
    float *px = malloc((size_t)(max ? max : 1) * fr * sizeof *px);
    lp_status s = px ? LP_OK : LP_ERR_NOMEM;
    *n = 0;
    for (int t = 0; t < T && s == LP_OK; t++) {
        int got;
        s = lp_taehv_decoder_push(d, lat + (size_t)t * ln, 1, px + (size_t)*n * fr, max - *n, &got);
        *n += got;
    }
    lp_taehv_decoder_free(d);
    if (s != LP_OK) {
        printf("    decode: %s\n", lp_last_error());
        free(px);
        return NULL;
    }
    return px;
}

/* The golden encode (frame by frame, flushed) and decodes through the CUDA backend. */
static int test_taehv_golden(void) {
    if (!gpu) return no_gpu;
    int r = open_golden();
    if (r) return r;
    const lp_tensor_file *f = golden;
    const lp_taehv *m = model;
    const lp_tensor *tp, *tl, *tlat, *tpx, *traw;
    float *px = lp_test_load_f32(f, "in.pixels", &tp), *lat_in = lp_test_load_f32(f, "in.latents", &tl);
    float *ref_lat = lp_test_load_f32(f, "out.latents", &tlat), *ref_px = lp_test_load_f32(f, "out.pixels", &tpx);
    float *ref_raw = lp_test_load_f32(f, "out.pixels_untrimmed_unclamped", &traw);
    CHECK(px && lat_in && ref_lat && ref_px && ref_raw, "%s", lp_last_error());
    int T = (int)tp->shape[1], H = (int)tp->shape[3], W = (int)tp->shape[4];
    lp_taehv_encoder *e;
    CHECK(lp_taehv_encoder_create(m, H, W, &e) == LP_OK, "%s", lp_last_error());
    int lc, lh, lw, n_lat = 0, max = lp_taehv_encoder_count(e, T) + 1, got = 0;
    lp_taehv_encoder_latent_shape(e, &lc, &lh, &lw);
    size_t ln = (size_t)lc * lh * lw;
    float *lat = malloc((size_t)max * ln * sizeof *lat);
    CHECK(lat, "out of memory");
    lp_status s = LP_OK;
    for (int t = 0; t < T && s == LP_OK; t++) {
        s = lp_taehv_encoder_push(e, px + (size_t)t * 3 * H * W, 1, lat + (size_t)n_lat * ln, max - n_lat, &got);
        n_lat += got;
    }
    if (s == LP_OK) s = lp_taehv_encoder_flush(e, lat + (size_t)n_lat * ln, max - n_lat, &got);
    n_lat += got;
    lp_taehv_encoder_free(e);
    CHECK(s == LP_OK, "encode: %s", lp_last_error());
    CHECK((int64_t)n_lat * (int64_t)ln == lp_tensor_numel(tlat), "%d latents of %zu", n_lat, ln);
    double e_lat = lp_rel_l2(lat, ref_lat, (size_t)n_lat * ln);
    int TL = (int)tl->shape[1], h = (int)tl->shape[3], w = (int)tl->shape[4], n_px, n_raw;
    lp_taehv_decoder_opts up = {.trim = 1, .clamp = 1}, raw = {.trim = 0, .clamp = 0};
    float *dec = decode_all(m, lat_in, TL, h, w, &up, &n_px), *dec_raw = decode_all(m, lat_in, TL, h, w, &raw, &n_raw);
    CHECK(dec && dec_raw && (int64_t)n_px * 3 * H * W == lp_tensor_numel(tpx) &&
              (int64_t)n_raw * 3 * H * W == lp_tensor_numel(traw),
          "decoded %d and %d frames", n_px, n_raw);
    double e_px = lp_rel_l2(dec, ref_px, (size_t)n_px * 3 * H * W);
    double e_raw = lp_rel_l2(dec_raw, ref_raw, (size_t)n_raw * 3 * H * W);
    printf("    cuda vs golden rel_l2: latents %.3e, pixels %.3e, untrimmed unclamped %.3e (tol 2e-2)\n", e_lat, e_px,
           e_raw);
    CHECK(e_lat <= 2e-2 && e_px <= 2e-2 && e_raw <= 2e-2);
    free(px), free(lat_in), free(ref_lat), free(ref_px), free(ref_raw), free(lat), free(dec), free(dec_raw);
    return 0;
}

/* Times REPS runs of a 3×3 stride-1 conv2d with bias of cin -> cout channels
 * on an h×w frame after a warm-up run (informational: ms and TFLOP/s, 2
 * FLOPs per multiply-add), then checks the last output against the CPU. */
static int time_conv(int cin, int cout, int h, int w) {
    enum { REPS = 20 };
    size_t ni = (size_t)cin * h * w, no = (size_t)cout * h * w, nw = (size_t)cout * cin * 9;
    char name[96];
    snprintf(name, sizeof name, "conv2d %d->%d 3x3 %dx%d (timed)", cin, cout, w, h);
    float *x = lp_test_random_floats(ni, 500, 1.0f), *want = malloc(no * sizeof *want);
    float *wt = lp_test_kept_floats(nw, 501, 1.0f / sqrtf((float)(cin * 9))), *bias = lp_test_kept_floats((size_t)cout, 502, 0.5f);
    CHECK(x && want && wt && bias, "out of memory");
    lp_tensor W = {.name = "timed.weight", .dtype = LP_F32, .ndim = 4, .shape = {cout, cin, 3, 3}, .data = wt,
                   .nbytes = nw * sizeof *wt};
    lp_tensor B = {.name = "timed.bias", .dtype = LP_F32, .ndim = 1, .shape = {cout}, .data = bias,
                   .nbytes = (size_t)cout * sizeof *bias};
    float *dx = lp_test_dev_copy(gpu, x, ni), *dout = lp_test_dev_poison(gpu, no);
    int fails = 1;
    if (dx && dout) {
        lp_conv2d_input gi = {dx, cin, NULL, 0, h, w, 1}, ci = {x, cin, NULL, 0, h, w, 1};
        lp_status s = gpu->conv2d(gpu, dout, &gi, &W, &B, 1, 0); /* warm-up: rearranges the weight */
        gpu->synchronize(gpu);
        double t0 = lp_seconds();
        for (int r = 0; r < REPS && s == LP_OK; r++) s = gpu->conv2d(gpu, dout, &gi, &W, &B, 1, 0);
        gpu->synchronize(gpu);
        double t = lp_seconds() - t0, flops = 2.0 * cout * cin * 9 * (double)h * w;
        if (lp_test_status_ok(name, s)) {
            printf("    %-*s %.3f ms, %.1f TFLOP/s\n", LP_TEST_NAME_WIDTH, name, 1e3 * t / REPS,
                   flops * REPS / t / 1e12);
            s = cpu->conv2d(cpu, want, &ci, &W, &B, 1, 0);
            if (s == LP_OK) fails = lp_test_dev_compare(gpu, name, dout, want, no, 2e-2);
            else printf("    %s: CPU: %s\n", name, lp_last_error());
        }
    }
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dout);
    free(x);
    free(want);
    return fails;
}

/* The convolutions that dominate TAEHV at 832×480: 64 -> 64 at full size,
 * 256 -> 256 at the decoder's first upsampled size. */
static int test_conv2d_timing(void) {
    if (!gpu) return no_gpu;
    int fails = time_conv(64, 64, 480, 832);
    fails += time_conv(256, 256, 120, 208);
    return fails ? 1 : 0;
}

/* 832×480 encode of 8 frames and decode of the 2 latents they make, one per
 * push, after a warm-up group each (informational). */
static int test_taehv_timing(void) {
    if (!gpu) return no_gpu;
    int r = open_golden();
    if (r) return r;
    enum { H = 480, W = 832, T = 8 };
    const lp_taehv *m = model;
    lp_taehv_encoder *e;
    lp_taehv_decoder *d;
    CHECK(lp_taehv_encoder_create(m, H, W, &e) == LP_OK, "%s", lp_last_error());
    int lc, lh, lw, got;
    lp_taehv_encoder_latent_shape(e, &lc, &lh, &lw);
    CHECK(lp_taehv_decoder_create(m, lh, lw, NULL, &d) == LP_OK, "%s", lp_last_error());
    size_t fr = (size_t)3 * H * W, ln = (size_t)lc * lh * lw;
    float *px = malloc(fr * sizeof *px), *lat = malloc(T / 4 * ln * sizeof *lat), *out = malloc(T * fr * sizeof *out);
    CHECK(px && lat && out, "out of memory");
    for (size_t i = 0; i < fr; i++) px[i] = (float)((i * 2654435761u) % 1000) / 1000.0f;
    lp_status s = LP_OK;
    for (int t = 0; t < 4 && s == LP_OK; t++) s = lp_taehv_encoder_push(e, px, 1, lat, 1, &got);
    if (s == LP_OK) s = lp_taehv_decoder_push(d, lat, 1, out, 4, &got);
    if (s == LP_OK) s = lp_taehv_encoder_reset(e);
    if (s == LP_OK) s = lp_taehv_decoder_reset(d);
    double t0 = lp_seconds();
    int n_lat = 0, n_px = 0;
    for (int t = 0; t < T && s == LP_OK; t++) {
        s = lp_taehv_encoder_push(e, px, 1, lat + (size_t)n_lat * ln, T / 4 - n_lat, &got);
        n_lat += got;
    }
    double t1 = lp_seconds();
    for (int t = 0; t < n_lat && s == LP_OK; t++) {
        s = lp_taehv_decoder_push(d, lat + (size_t)t * ln, 1, out + (size_t)n_px * fr, T - n_px, &got);
        n_px += got;
    }
    double t2 = lp_seconds();
    if (s == LP_OK)
        printf("    taehv 832x480 on cuda: encode %.2f ms/frame (%d frames), decode %.2f ms/frame (%d frames)\n",
               1e3 * (t1 - t0) / T, T, 1e3 * (t2 - t1) / (n_px ? n_px : 1), n_px);
    else printf("    timing: %s\n", lp_last_error());
    lp_taehv_encoder_free(e);
    lp_taehv_decoder_free(d);
    free(px), free(lat), free(out);
    CHECK(s == LP_OK && n_lat == T / 4 && n_px == T, "timing runs failed");
    return 0;
}

/* Byte frames in and out (push_rgb24, converted on the device) == float
 * frames converted on the host, through the CUDA backend. */
static int test_taehv_rgb24(void) {
    if (!gpu) return no_gpu;
    int r = open_golden();
    if (r) return r;
    return lp_test_taehv_rgb24(model, 10, 40, 56, 7);
}

int main(void) {
    no_gpu = lp_test_cuda_backends(&gpu, &cpu);
    lp_test_run("conv2d: k 1/3, stride 1/2, two inputs, upsample, bias, accumulate, odd sizes, few outputs", test_conv2d);
    lp_test_run("conv2d argument errors", test_conv2d_errors);
    lp_test_run("relu, tanh_clamp, clamp01", test_elementwise);
    lp_test_run("rgb24_to_planar, planar_to_rgb24 (bytes exact)", test_pixels);
    lp_test_run("taehv golden through cuda (encode, decode trimmed+clamped, raw)", test_taehv_golden);
    lp_test_run("taehv byte frames through cuda == float frames converted on the host", test_taehv_rgb24);
    lp_test_run("conv2d timing: 64->64 3x3 at 832x480, 256->256 3x3 at 208x120", test_conv2d_timing);
    lp_test_run("taehv 832x480 timing", test_taehv_timing);
    lp_taehv_free(model);
    lp_tensor_file_close(golden);
    lp_backend_destroy(gpu);
    lp_backend_destroy(cpu);
    lp_test_kept_free();
    return lp_test_finish();
}
