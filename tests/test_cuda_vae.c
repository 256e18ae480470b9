/* CPU-vs-CUDA parity of the Wan VAE ops of the backend table (backend.h,
 * "the Wan VAE": conv3d, channel_rms_norm, upsample2x, spatial_attention) on
 * random inputs. The CPU backend is the reference; CUDA outputs are poisoned
 * with NaN bytes beforehand so that an element left unwritten fails, and each
 * comparison prints "name rel_l2=... ok|FAIL". Tolerances (relative L2
 * error):
 *   2e-2  conv3d: bf16 tensor cores (inputs and weights rounded to bf16,
 *         fp32 accumulation), expected a few 1e-3;
 *   1e-5  channel_rms_norm: the CPU's formula and summation order, expected 0;
 *   1e-4  spatial_attention: fp32 GEMMs whose summation order differs from
 *         OpenBLAS's, and another expf, expected about 1e-6;
 *   0     upsample2x (data movement).
 * Argument errors of conv3d and spatial_attention are returned, not sticky:
 * a valid op afterwards works. Every case skips when the CUDA backend is
 * unavailable (built without CUDA, or no usable GPU): the binary then exits
 * 77. Weight views point at host buffers kept alive until both backends are
 * destroyed, one buffer per weight, because the CUDA backend caches device
 * copies by data pointer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/backend/backend.h"
#include "test_util.h"

static lp_backend *cpu, *gpu;
static int no_gpu; /* what each case returns without the CUDA backend (set by main) */

/* ------------------------------------------------------------------ helpers */

/* A kept copy of the string (tensor names outlive the case that made them). */
static const char *kept_name(const char *s) {
    char *p = lp_test_keep(strlen(s) + 1);
    if (p) strcpy(p, s);
    return p ? p : "?";
}

/* ------------------------------------------------------------------ conv3d */

/* order: how the n_in frame pointers pick the frames stored one after the
 * other in the input buffer: ORDER_SEQ frame i, ORDER_REV frame n_in − 1 − i
 * (the pointers, not their contiguity, define the input), ORDER_REPEAT frame
 * i but frame 0 again in place of frame 1 (the same frame twice). */
enum { ORDER_SEQ, ORDER_REV, ORDER_REPEAT };

typedef struct {
    const char *what;
    int cin, cout;
    int ndim;        /* 5: a Conv3d weight [cout, cin, kt, k, k]; 4: a Conv2d [cout, cin, k, k] (kt 1) */
    int kt, k;
    int stride, pad, t_stride;
    int n_in, h, w;
    int bias;
    int order;
} c3_case;

/* The output size of one side: the symmetric padding, or for stride 2
 * without padding, the ZeroPad2d((0,1,0,1)) row/column appended (as
 * lp_cpu_vae_geom_down2). */
static int c3_out_side(int side, int k, int stride, int pad) {
    if (stride == 2 && pad == 0) return (side + 1 - k) / 2 + 1;
    return (side + 2 * pad - k) / stride + 1;
}

/* One conv3d on both backends from the same random frames, weight and bias. */
static int c3_case_run(const c3_case *cc, uint32_t seed) {
    int kt = cc->ndim == 5 ? cc->kt : 1;
    int oh = c3_out_side(cc->h, cc->k, cc->stride, cc->pad), ow = c3_out_side(cc->w, cc->k, cc->stride, cc->pad);
    int n_out = (cc->n_in - kt) / cc->t_stride + 1;
    size_t frame = (size_t)cc->cin * cc->h * cc->w, nx = (size_t)cc->n_in * frame;
    size_t nw = (size_t)cc->cout * cc->cin * kt * cc->k * cc->k, no = (size_t)n_out * cc->cout * oh * ow;
    char name[160];
    snprintf(name, sizeof name, "conv3d %s: %d->%d kt%d k%d s%d p%d ts%d %d->%d frames %dx%d%s", cc->what, cc->cin,
             cc->cout, kt, cc->k, cc->stride, cc->pad, cc->t_stride, cc->n_in, n_out, cc->w, cc->h,
             cc->bias ? " bias" : "");
    float *x = lp_test_random_floats(nx, seed, 1.0f), *want = malloc((no ? no : 1) * sizeof *want);
    float *wt = lp_test_kept_floats(nw, seed + 1, 1.0f / sqrtf((float)(cc->cin * kt * cc->k * cc->k)));
    float *bias = lp_test_kept_floats((size_t)cc->cout, seed + 2, 0.5f);
    CHECK(x && want && wt && bias, "out of memory");
    char tname[96];
    snprintf(tname, sizeof tname, "vae.conv3d.%u.weight", (unsigned)seed);
    lp_tensor W = {.name = kept_name(tname), .dtype = LP_F32, .ndim = cc->ndim, .data = wt, .nbytes = nw * sizeof *wt};
    W.shape[0] = cc->cout;
    W.shape[1] = cc->cin;
    if (cc->ndim == 5) {
        W.shape[2] = kt;
        W.shape[3] = W.shape[4] = cc->k;
    } else {
        W.shape[2] = W.shape[3] = cc->k;
    }
    snprintf(tname, sizeof tname, "vae.conv3d.%u.bias", (unsigned)seed);
    lp_tensor B = {.name = kept_name(tname), .dtype = LP_F32, .ndim = 1, .shape = {cc->cout}, .data = bias,
                   .nbytes = (size_t)cc->cout * sizeof *bias};
    lp_conv3d_geom g = {.h = cc->h, .w = cc->w, .oh = oh, .ow = ow, .stride = cc->stride, .pad = cc->pad,
                        .t_stride = cc->t_stride};
    float *dx = lp_test_dev_copy(gpu, x, nx), *dout = lp_test_dev_poison(gpu, no);
    int fails = 1;
    if (dx && dout) {
        const float *cin_[8], *gin[8];
        for (int i = 0; i < cc->n_in && i < 8; i++) {
            int f = cc->order == ORDER_REV ? cc->n_in - 1 - i : cc->order == ORDER_REPEAT && i == 1 ? 0 : i;
            cin_[i] = x + (size_t)f * frame;
            gin[i] = dx + (size_t)f * frame;
        }
        lp_status s = cpu->conv3d(cpu, want, cin_, cc->n_in, &W, cc->bias ? &B : NULL, &g);
        if (s != LP_OK) printf("    %s: CPU: %s\n", name, lp_last_error());
        lp_status gs = s == LP_OK ? gpu->conv3d(gpu, dout, gin, cc->n_in, &W, cc->bias ? &B : NULL, &g) : s;
        if (s == LP_OK && lp_test_status_ok(name, gs)) fails = lp_test_dev_compare(gpu, name, dout, want, no, 2e-2);
    }
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dout);
    free(x);
    free(want);
    return fails;
}

static int test_conv3d(void) {
    if (!gpu) return no_gpu;
    static const c3_case cases[] = {
        /* what                     cin cout nd kt k  s  p ts n_in   h    w bias order */
        {"causal 3x3x3", 16, 32, 5, 3, 3, 1, 1, 1, 5, 20, 24, 1, ORDER_SEQ},
        {"causal, frames reversed", 16, 32, 5, 3, 3, 1, 1, 1, 5, 20, 24, 0, ORDER_REV},
        {"causal, a frame twice", 16, 16, 5, 3, 3, 1, 1, 1, 3, 13, 11, 1, ORDER_REPEAT},
        {"rgb input (cin 3)", 3, 8, 5, 3, 3, 1, 1, 1, 5, 20, 24, 1, ORDER_SEQ},
        {"rgb input (cin 3) -> 96", 3, 96, 5, 3, 3, 1, 1, 1, 3, 17, 23, 1, ORDER_SEQ},
        {"channel tiles", 24, 200, 5, 3, 3, 1, 1, 1, 4, 17, 13, 1, ORDER_SEQ},
        {"kt 2", 16, 24, 5, 2, 3, 1, 1, 1, 2, 9, 14, 1, ORDER_SEQ},
        {"time conv (upsample3d)", 16, 32, 5, 3, 1, 1, 0, 1, 5, 10, 12, 1, ORDER_SEQ},
        {"time conv stride 2 (downsample3d)", 16, 16, 5, 3, 1, 1, 0, 2, 5, 10, 12, 1, ORDER_SEQ},
        {"time conv stride 2, one output", 16, 16, 5, 3, 1, 1, 0, 2, 3, 7, 9, 0, ORDER_SEQ},
        {"time conv stride 2, 6 frames", 24, 24, 5, 3, 1, 1, 0, 2, 6, 5, 7, 1, ORDER_SEQ},
        {"conv2d stride 2 (resample), odd", 16, 32, 4, 1, 3, 2, 0, 1, 1, 21, 25, 1, ORDER_SEQ},
        {"conv2d stride 2 (resample), even", 16, 32, 4, 1, 3, 2, 0, 1, 2, 20, 24, 1, ORDER_SEQ},
        {"conv2d stride 2, cin 3", 3, 16, 4, 1, 3, 2, 0, 1, 1, 11, 14, 0, ORDER_SEQ},
        {"conv2d 3x3 pad 1 (upsample)", 32, 16, 4, 1, 3, 1, 1, 1, 2, 16, 18, 1, ORDER_SEQ},
        {"conv2d 1x1 over 3 frames", 32, 48, 4, 1, 1, 1, 0, 1, 3, 15, 19, 1, ORDER_SEQ},
        {"conv3d 1x1x1 (shortcut)", 32, 64, 5, 1, 1, 1, 0, 1, 2, 9, 11, 1, ORDER_SEQ},
        {"decoder head (cout 3)", 96, 3, 5, 3, 3, 1, 1, 1, 5, 20, 24, 1, ORDER_SEQ},
        {"1x1 image", 16, 8, 5, 3, 3, 1, 1, 1, 3, 1, 1, 1, ORDER_SEQ},
        {"mid block at 832x480 latents", 384, 384, 5, 3, 3, 1, 1, 1, 3, 60, 104, 1, ORDER_SEQ},
    };
    int fails = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) fails += c3_case_run(&cases[i], 100 + 10 * (uint32_t)i);
    return fails ? 1 : 0;
}

/* Invalid arguments fail with an error status, which is not sticky: a valid
 * conv3d afterwards works and matches the CPU. */
static int test_conv3d_errors(void) {
    if (!gpu) return no_gpu;
    enum { C = 4, CO = 8, H = 5, WD = 6 };
    size_t frame = (size_t)C * H * WD, nout = (size_t)5 * CO * H * WD;
    float *w4 = lp_test_kept_floats((size_t)CO * C * 4 * 9, 11, 0.2f), *w3 = lp_test_kept_floats((size_t)CO * C * 3 * 9, 12, 0.2f);
    float *w5 = lp_test_kept_floats((size_t)CO * C * 3 * 25, 13, 0.1f), *b = lp_test_kept_floats(CO + 1, 14, 0.5f);
    float *x = lp_test_random_floats(5 * frame, 15, 1.0f), *want = malloc(nout * sizeof *want);
    CHECK(w4 && w3 && w5 && b && x && want, "out of memory");
    lp_tensor Wkt4 = {.name = "vae.err.kt4.weight", .dtype = LP_F32, .ndim = 5, .shape = {CO, C, 4, 3, 3}, .data = w4,
                      .nbytes = (size_t)CO * C * 4 * 9 * sizeof(float)};
    lp_tensor W = {.name = "vae.err.weight", .dtype = LP_F32, .ndim = 5, .shape = {CO, C, 3, 3, 3}, .data = w3,
                   .nbytes = (size_t)CO * C * 3 * 9 * sizeof(float)};
    lp_tensor Wk5 = {.name = "vae.err.k5.weight", .dtype = LP_F32, .ndim = 5, .shape = {CO, C, 3, 5, 5}, .data = w5,
                     .nbytes = (size_t)CO * C * 3 * 25 * sizeof(float)};
    lp_tensor Wbf16 = W;
    Wbf16.name = "vae.err.bf16.weight";
    Wbf16.dtype = LP_BF16;
    lp_tensor B = {.name = "vae.err.bias", .dtype = LP_F32, .ndim = 1, .shape = {CO}, .data = b,
                   .nbytes = CO * sizeof(float)};
    lp_tensor Bbad = {.name = "vae.err.bias9", .dtype = LP_F32, .ndim = 1, .shape = {CO + 1}, .data = b,
                      .nbytes = (CO + 1) * sizeof(float)};
    const lp_conv3d_geom ok = {.h = H, .w = WD, .oh = H, .ow = WD, .stride = 1, .pad = 1, .t_stride = 1};
    lp_conv3d_geom stride3 = ok, pad2 = ok, ts0 = ok, oh0 = ok;
    stride3.stride = 3;
    pad2.pad = 2;
    ts0.t_stride = 0;
    oh0.oh = 0;
    float *dx = lp_test_dev_copy(gpu, x, 5 * frame), *dout = lp_test_dev_poison(gpu, nout);
    CHECK(dx && dout, "device buffers");
    const float *gin[5], *cin_[5];
    for (int i = 0; i < 5; i++) {
        gin[i] = dx + (size_t)i * frame;
        cin_[i] = x + (size_t)i * frame;
    }
    struct {
        const char *what;
        lp_status s;
    } r[] = {
        {"kt 4", gpu->conv3d(gpu, dout, gin, 5, &Wkt4, NULL, &ok)},
        {"k 5", gpu->conv3d(gpu, dout, gin, 5, &Wk5, NULL, &ok)},
        {"2 frames for kt 3", gpu->conv3d(gpu, dout, gin, 2, &W, NULL, &ok)},
        {"stride 3", gpu->conv3d(gpu, dout, gin, 5, &W, NULL, &stride3)},
        {"pad 2 with k 3", gpu->conv3d(gpu, dout, gin, 5, &W, NULL, &pad2)},
        {"time stride 0", gpu->conv3d(gpu, dout, gin, 5, &W, NULL, &ts0)},
        {"output height 0", gpu->conv3d(gpu, dout, gin, 5, &W, NULL, &oh0)},
        {"bf16 weight", gpu->conv3d(gpu, dout, gin, 5, &Wbf16, NULL, &ok)},
        {"bias of 9 for 8 outputs", gpu->conv3d(gpu, dout, gin, 5, &W, &Bbad, &ok)},
    };
    int fails = 0;
    for (size_t i = 0; i < sizeof r / sizeof *r; i++) {
        printf("    conv3d %-*s -> %s%s\n", LP_TEST_NAME_WIDTH - 7, r[i].what, lp_status_name(r[i].s),
               r[i].s == LP_OK ? " FAIL (expected an error)" : "");
        fails += r[i].s == LP_OK;
    }
    /* then a valid call: 5 frames -> 3 */
    lp_status s = cpu->conv3d(cpu, want, cin_, 5, &W, &B, &ok);
    CHECK(s == LP_OK, "CPU: %s", lp_last_error());
    s = gpu->conv3d(gpu, dout, gin, 5, &W, &B, &ok);
    if (lp_test_status_ok("conv3d after the errors", s))
        fails += lp_test_dev_compare(gpu, "conv3d after the errors", dout, want, (size_t)3 * CO * H * WD, 2e-2);
    else
        fails++;
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dout);
    free(x);
    free(want);
    return fails ? 1 : 0;
}

/* -------------------------------------------------------- channel_rms_norm */

/* channel_rms_norm of `frames` frames [c][n] into another buffer and in place;
 * off: floats the data starts into the buffers. */
static int rms_case(int64_t frames, int c, int64_t n, int off, uint32_t seed) {
    size_t m = (size_t)(frames * c * n), mo = m + (size_t)off;
    float *x = lp_test_random_floats(mo, seed, 2.0f), *want = malloc(mo * sizeof *want);
    float *gamma = lp_test_kept_floats((size_t)c, seed + 1, 1.0f);
    CHECK(x && want && gamma, "out of memory");
    for (int ch = 0; ch < c; ch++) gamma[ch] += 1.0f; /* around 1, as trained */
    for (int ch = 0; ch < c; ch++) x[off + (size_t)ch * (size_t)n] = 0.0f; /* a zero pixel: the 1e-12 floor */
    char gname[64];
    snprintf(gname, sizeof gname, "vae.norm.%u.gamma", (unsigned)seed);
    lp_tensor G = {.name = kept_name(gname), .dtype = LP_F32, .ndim = 1, .shape = {c}, .data = gamma,
                   .nbytes = (size_t)c * sizeof *gamma};
    cpu->channel_rms_norm(cpu, want + off, x + off, frames, c, n, &G);
    int fails = 0;
    for (int inplace = 0; inplace < 2; inplace++) {
        char name[128];
        snprintf(name, sizeof name, "channel_rms_norm %lld frames x %d ch x %lld px%s%s", (long long)frames, c,
                 (long long)n, off ? " offset" : "", inplace ? " in place" : "");
        float *dx = lp_test_dev_copy(gpu, x, mo), *dy = inplace ? dx : lp_test_dev_poison(gpu, mo);
        if (dx && dy) {
            gpu->channel_rms_norm(gpu, dy + off, dx + off, frames, c, n, &G);
            fails += lp_test_dev_compare(gpu, name, dy + off, want + off, m, 1e-5);
        } else {
            fails++;
        }
        if (dy != dx) lp_test_dev_free(gpu, dy);
        lp_test_dev_free(gpu, dx);
    }
    free(x);
    free(want);
    return fails;
}

static int test_channel_rms_norm(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += rms_case(3, 96, 1000, 0, 200);
    fails += rms_case(2, 13, 37, 1, 210);
    fails += rms_case(1, 384, 60 * 104, 0, 220); /* the mid block's norms at 832x480 */
    fails += rms_case(4, 3, 5, 0, 230);
    return fails ? 1 : 0;
}

/* ---------------------------------------------------------------- upsample2x */

/* off: floats the output starts into its buffer (1: not aligned). */
static int up_case(int c, int h, int w, int off, uint32_t seed) {
    size_t ni = (size_t)c * h * w, no = 4 * ni;
    char name[128];
    snprintf(name, sizeof name, "upsample2x %d ch %dx%d%s", c, w, h, off ? " offset output" : "");
    float *x = lp_test_random_floats(ni, seed, 1.0f), *want = malloc(no * sizeof *want);
    CHECK(x && want, "out of memory");
    cpu->upsample2x(cpu, want, x, c, h, w);
    float *dx = lp_test_dev_copy(gpu, x, ni), *dbuf = lp_test_dev_poison(gpu, no + (size_t)off);
    int fails = 1;
    if (dx && dbuf) {
        gpu->upsample2x(gpu, dbuf + off, dx, c, h, w);
        fails = lp_test_dev_compare(gpu, name, dbuf + off, want, no, 0.0);
    }
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dbuf);
    free(x);
    free(want);
    return fails;
}

static int test_upsample2x(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += up_case(16, 20, 24, 0, 300);
    fails += up_case(16, 20, 24, 1, 310);
    fails += up_case(3, 7, 9, 0, 320);
    fails += up_case(96, 120, 208, 0, 330);
    fails += up_case(1, 1, 1, 0, 340);
    return fails ? 1 : 0;
}

/* --------------------------------------------------------- spatial_attention */

/* q, k, v [c][n] random (q and k in [−2, 2), so that the softmax is not
 * flat), out poisoned; off: floats every buffer starts into its allocation
 * (1: pointers on 4 bytes only). */
static int att_case(int c, int64_t n, int off, uint32_t seed) {
    size_t m = (size_t)c * (size_t)n, mo = m + (size_t)off;
    char name[128];
    snprintf(name, sizeof name, "spatial_attention c %d n %lld%s", c, (long long)n, off ? " offset" : "");
    float *q = lp_test_random_floats(mo, seed, 2.0f), *k = lp_test_random_floats(mo, seed + 1, 2.0f);
    float *v = lp_test_random_floats(mo, seed + 2, 1.0f), *want = malloc(m * sizeof *want);
    CHECK(q && k && v && want, "out of memory");
    lp_status s = cpu->spatial_attention(cpu, want, q + off, k + off, v + off, c, n);
    CHECK(s == LP_OK, "CPU: %s", lp_last_error());
    float *dq = lp_test_dev_copy(gpu, q, mo), *dk = lp_test_dev_copy(gpu, k, mo), *dv = lp_test_dev_copy(gpu, v, mo);
    float *dout = lp_test_dev_poison(gpu, mo);
    int fails = 1;
    if (dq && dk && dv && dout) {
        s = gpu->spatial_attention(gpu, dout + off, dq + off, dk + off, dv + off, c, n);
        if (lp_test_status_ok(name, s)) fails = lp_test_dev_compare(gpu, name, dout + off, want, m, 1e-4);
    }
    lp_test_dev_free(gpu, dq);
    lp_test_dev_free(gpu, dk);
    lp_test_dev_free(gpu, dv);
    lp_test_dev_free(gpu, dout);
    free(q);
    free(k);
    free(v);
    free(want);
    return fails;
}

static int test_spatial_attention(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += att_case(32, 300, 0, 400);
    fails += att_case(64, 1000, 0, 410);
    fails += att_case(8, 20, 0, 420);
    fails += att_case(16, 501, 1, 430);   /* odd n, pointers on 4 bytes */
    fails += att_case(16, 4097, 0, 440);  /* several blocks of query rows, odd n */
    fails += att_case(384, 60 * 104, 0, 450); /* the mid block's attention at 832x480 */
    fails += att_case(32, 300, 0, 400);   /* the same shape again (cached plans) */
    return fails ? 1 : 0;
}

/* Argument errors are returned, not sticky: a valid call afterwards works. */
static int test_spatial_attention_errors(void) {
    if (!gpu) return no_gpu;
    enum { C = 8, N = 40 };
    float *h = lp_test_random_floats(4 * C * N, 500, 1.0f), *want = malloc(C * N * sizeof *want);
    CHECK(h && want, "out of memory");
    float *d = lp_test_dev_copy(gpu, h, 4 * C * N);
    CHECK(d, "device buffer");
    float *q = d, *k = d + C * N, *v = d + 2 * C * N, *out = d + 3 * C * N;
    lp_status s1 = gpu->spatial_attention(gpu, out, q, k, v, 0, N);
    lp_status s2 = gpu->spatial_attention(gpu, out, q, k, v, C, 0);
    lp_status s3 = gpu->spatial_attention(gpu, v + 1, q, k, v, C, N); /* out overlaps v */
    lp_status s4 = gpu->spatial_attention(gpu, NULL, q, k, v, C, N);
    printf("    c 0 -> %s, n 0 -> %s, out overlapping v -> %s, NULL out -> %s\n", lp_status_name(s1),
           lp_status_name(s2), lp_status_name(s3), lp_status_name(s4));
    int fails = s1 == LP_OK || s2 == LP_OK || s3 != LP_ERR_ARG || s4 != LP_ERR_ARG;
    lp_status s = cpu->spatial_attention(cpu, want, h, h + C * N, h + 2 * C * N, C, N);
    CHECK(s == LP_OK, "CPU: %s", lp_last_error());
    s = gpu->spatial_attention(gpu, out, q, k, v, C, N);
    if (lp_test_status_ok("spatial_attention after the errors", s))
        fails += lp_test_dev_compare(gpu, "spatial_attention after the errors", out, want, C * N, 1e-4);
    else
        fails++;
    lp_test_dev_free(gpu, d);
    free(h);
    free(want);
    return fails ? 1 : 0;
}

int main(void) {
    no_gpu = lp_test_cuda_backends(&gpu, &cpu);
    lp_test_run("conv3d: causal 3x3x3, time convs (stride 1/2), conv2d stride 2 and 1x1, few/many channels",
                test_conv3d);
    lp_test_run("conv3d argument errors (returned, not sticky)", test_conv3d_errors);
    lp_test_run("channel_rms_norm (in place and not)", test_channel_rms_norm);
    lp_test_run("upsample2x (exact)", test_upsample2x);
    lp_test_run("spatial_attention (fp32)", test_spatial_attention);
    lp_test_run("spatial_attention argument errors (returned, not sticky)", test_spatial_attention_errors);
    lp_backend_destroy(gpu);
    lp_backend_destroy(cpu);
    lp_test_kept_free();
    return lp_test_finish();
}
