/* Wan VAE: the CPU kernels against naive references on random inputs, the
 * streaming encoder/decoder against ../shared/golden/wan_vae.safetensors (and
 * its .pth weights), chunked == whole-clip streaming, memory that does not grow
 * with clip length, clear errors for bad weights and arguments, and random
 * weights (wan_vae_random.h) that load as the configuration asked for. */
#include <malloc.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/backend/cpu/conv3d.h"
#include "../src/model/wan_vae.h"
#include "../src/model/wan_vae_random.h"
#include "test_util.h"

#define TOL 1e-5

/* ------------------------------------------------------------ kernel tests */

/* The definition of lp_cpu_vae_conv, loop by loop. */
static void naive_conv(const lp_vae_conv_w *w, const lp_conv3d_geom *g, const float *const *in, int n_in,
                       float *out) {
    int n_out = (n_in - w->kt) / g->t_stride + 1;
    for (int j = 0; j < n_out; j++)
        for (int co = 0; co < w->cout; co++)
            for (int oy = 0; oy < g->oh; oy++)
                for (int ox = 0; ox < g->ow; ox++) {
                    double acc = w->bias ? w->bias[co] : 0;
                    for (int ci = 0; ci < w->cin; ci++)
                        for (int dt = 0; dt < w->kt; dt++)
                            for (int dy = 0; dy < w->kh; dy++)
                                for (int dx = 0; dx < w->kw; dx++) {
                                    const float *f = in[j * g->t_stride + dt];
                                    int iy = oy * g->stride + dy - g->pad, ix = ox * g->stride + dx - g->pad;
                                    if (!f || iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) continue;
                                    acc +=
                                        (double)
                                            w->weight[(((co * w->cin + ci) * w->kt + dt) * w->kh + dy) * w->kw + dx] *
                                        f[(ci * g->h + iy) * g->w + ix];
                                }
                    out[((j * w->cout + co) * g->oh + oy) * g->ow + ox] = (float)acc;
                }
}

/* Runs one convolution case with the given scratch budget, with and without a
 * pool; frames flagged in zero_mask are passed as NULL. */
static int conv_case(lp_pool *pool, int cout, int cin, int kt, int kh, int n_in, int zero_mask, lp_conv3d_geom g,
                     size_t budget) {
    lp_vae_conv_w w = {.cout = cout, .cin = cin, .kt = kt, .kh = kh, .kw = kh};
    size_t nw = (size_t)cout * cin * kt * kh * kh, fs = (size_t)cin * g.h * g.w;
    int n_out = (n_in - kt) / g.t_stride + 1;
    size_t on = (size_t)n_out * cout * g.oh * g.ow;
    float *wt = malloc(nw * sizeof *wt), *b = malloc((size_t)cout * sizeof *b), *x = malloc(n_in * fs * sizeof *x);
    float *ref = malloc(on * sizeof *ref), *got = malloc(on * sizeof *got);
    size_t sn = lp_cpu_vae_conv_scratch(&w, &g, budget);
    float *scratch = malloc((sn ? sn : 1) * sizeof *scratch);
    lp_test_fill(wt, nw, 1 + cout, 0.5f);
    lp_test_fill(b, (size_t)cout, 2 + cin, 0.5f);
    lp_test_fill(x, n_in * fs, 3 + kt, 1.0f);
    w.weight = wt;
    w.bias = b;
    const float *fr[16];
    for (int t = 0; t < n_in; t++) fr[t] = (zero_mask >> t & 1) ? NULL : x + t * fs;
    naive_conv(&w, &g, fr, n_in, ref);
    int bad = 0;
    for (int p = 0; p < 2 && !bad; p++) {
        memset(got, 0xff, on * sizeof *got);
        bad = lp_cpu_vae_conv(p ? pool : NULL, &w, &g, fr, n_in, got, scratch, sn) != LP_OK;
        double e = bad ? INFINITY : lp_rel_l2(got, ref, on);
        if (e > 1e-6) {
            fprintf(stderr, "  conv k=(%d,%d,%d) cin=%d cout=%d %dx%d->%dx%d s=%d ts=%d pool=%d: rel_l2 %.3e\n", kt, kh,
                    kh, cin, cout, g.h, g.w, g.oh, g.ow, g.stride, g.t_stride, p, e);
            bad = 1;
        }
    }
    free(wt);
    free(b);
    free(x);
    free(ref);
    free(got);
    free(scratch);
    return bad;
}

static int test_conv_vs_naive(void) {
    lp_pool *pool;
    CHECK(lp_pool_create(2, &pool) == LP_OK, "(last error: %s)", lp_last_error());
    lp_vae_conv_w k3 = {.kh = 3}, k1 = {.kh = 1};
    int bad = 0;
    /* causal 3x3x3: 2 history frames (zeros passed as NULL, then real) + 3 current */
    bad |= conv_case(pool, 7, 5, 3, 3, 5, 0x3, lp_cpu_vae_geom_same(&k3, 6, 9), 1 << 20);
    bad |= conv_case(pool, 7, 5, 3, 3, 5, 0, lp_cpu_vae_geom_same(&k3, 6, 9), 1 << 20);
    /* the same with one output row per im2col tile */
    bad |= conv_case(pool, 7, 5, 3, 3, 5, 0x1, lp_cpu_vae_geom_same(&k3, 6, 9), 1);
    /* time conv (3,1,1): causal (upsample3d) and stride 2 without padding (downsample3d) */
    bad |= conv_case(pool, 8, 4, 3, 1, 4, 0x2, lp_cpu_vae_geom_same(&k1, 5, 7), 1 << 20);
    lp_conv3d_geom ts2 = lp_cpu_vae_geom_same(&k1, 5, 7);
    ts2.t_stride = 2;
    bad |= conv_case(pool, 4, 4, 3, 1, 5, 0, ts2, 1 << 20);
    /* 1x1x1 (shortcut, conv1/conv2 of the VAE) over 3 frames, one of them zero */
    bad |= conv_case(pool, 6, 9, 1, 1, 3, 0x2, lp_cpu_vae_geom_same(&k1, 4, 5), 1 << 20);
    /* Conv2d 3x3 pad 1, and ZeroPad2d((0,1,0,1)) + stride 2, even and odd sizes */
    bad |= conv_case(pool, 3, 6, 1, 3, 1, 0, lp_cpu_vae_geom_same(&k3, 8, 12), 1 << 20);
    bad |= conv_case(pool, 5, 4, 1, 3, 2, 0, lp_cpu_vae_geom_down2(8, 12), 1 << 20);
    bad |= conv_case(pool, 5, 4, 1, 3, 1, 0, lp_cpu_vae_geom_down2(7, 9), 1);
    lp_pool_destroy(pool);
    CHECK(!bad, "(last error: %s)", lp_last_error());
    lp_conv3d_geom d2 = lp_cpu_vae_geom_down2(7, 9);
    CHECK(d2.oh == 3 && d2.ow == 4, "down2(7x9) -> %dx%d", d2.oh, d2.ow);
    /* a scratch smaller than one im2col row and too few frames are errors */
    float w[27] = {0}, x[16] = {0}, o[16], s[4];
    lp_vae_conv_w cw = {.cout = 1, .cin = 1, .kt = 3, .kh = 3, .kw = 3, .weight = w};
    lp_conv3d_geom g = lp_cpu_vae_geom_same(&cw, 4, 4);
    const float *fr[3] = {x, x, x};
    CHECK(lp_cpu_vae_conv(NULL, &cw, &g, fr, 3, o, s, 4) == LP_ERR_ARG, "(last error: %s)", lp_last_error());
    CHECK(strstr(lp_last_error(), "scratch"), "%s", lp_last_error());
    CHECK(lp_cpu_vae_conv(NULL, &cw, &g, fr, 2, o, s, 4) == LP_ERR_ARG, "(last error: %s)", lp_last_error());
    return 0;
}

static int test_pointwise_ops(void) {
    lp_pool *pool;
    CHECK(lp_pool_create(2, &pool) == LP_OK, "(last error: %s)", lp_last_error());
    enum { F = 2, C = 5, N = 150 };
    float x[F * C * N], y[F * C * N], ref[F * C * N], gamma[C];
    lp_test_fill(x, F * C * N, 11, 2.0f);
    lp_test_fill(gamma, C, 12, 1.5f);
    for (int p = 0; p < C * N; p++) x[C * N + p] = 0; /* a zero frame: the eps clamp keeps it 0 */
    for (int f = 0; f < F; f++)
        for (int p = 0; p < N; p++) {
            double ss = 0;
            for (int c = 0; c < C; c++) ss += (double)x[(f * C + c) * N + p] * x[(f * C + c) * N + p];
            double nrm = fmax(sqrt(ss), 1e-12);
            for (int c = 0; c < C; c++)
                ref[(f * C + c) * N + p] = (float)(x[(f * C + c) * N + p] / nrm * sqrt(C) * gamma[c]);
        }
    lp_cpu_vae_rms_norm(pool, x, y, F, C, N, gamma);
    CHECK(lp_rel_l2(y, ref, F * C * N) < 1e-6, "rms %.3e", lp_rel_l2(y, ref, F * C * N));
    memcpy(y, x, sizeof y);
    lp_cpu_vae_rms_norm(NULL, y, y, F, C, N, gamma); /* in place */
    CHECK(lp_rel_l2(y, ref, F * C * N) < 1e-6, "(last error: %s)", lp_last_error());

    for (int i = 0; i < F * C * N; i++) ref[i] = (float)(x[i] / (1.0 + exp(-(double)x[i])));
    memcpy(y, x, sizeof y);
    lp_cpu_vae_silu(pool, y, F * C * N);
    CHECK(lp_rel_l2(y, ref, F * C * N) < 1e-6, "(last error: %s)", lp_last_error());

    memcpy(y, x, sizeof y);
    lp_cpu_vae_add(pool, y, x, F * C * N);
    for (int i = 0; i < F * C * N; i++) CHECK(y[i] == 2 * x[i], "(last error: %s)", lp_last_error());

    enum { H = 3, W = 5 };
    float up[C * 4 * H * W];
    lp_cpu_vae_upsample2x(pool, x, up, C, H, W);
    for (int c = 0; c < C; c++)
        for (int yy = 0; yy < 2 * H; yy++)
            for (int xx = 0; xx < 2 * W; xx++)
                CHECK(up[(c * 2 * H + yy) * 2 * W + xx] == x[(c * H + yy / 2) * W + xx / 2], "(last error: %s)",
                      lp_last_error());
    lp_pool_destroy(pool);
    return 0;
}

static int test_attention_vs_naive(void) {
    enum { C = 6, N = 37 };
    float q[C * N], k[C * N], v[C * N], out[C * N], ref[C * N], s[N * 5];
    lp_test_fill(q, C * N, 21, 1.5f);
    lp_test_fill(k, C * N, 22, 1.5f);
    lp_test_fill(v, C * N, 23, 1.0f);
    for (int i = 0; i < N; i++) {
        double sc[N], mx = -INFINITY, sum = 0;
        for (int j = 0; j < N; j++) {
            sc[j] = 0;
            for (int c = 0; c < C; c++) sc[j] += (double)q[c * N + i] * k[c * N + j];
            sc[j] /= sqrt(C);
            mx = fmax(mx, sc[j]);
        }
        for (int j = 0; j < N; j++) sum += sc[j] = exp(sc[j] - mx);
        for (int c = 0; c < C; c++) {
            double o = 0;
            for (int j = 0; j < N; j++) o += sc[j] / sum * v[c * N + j];
            ref[c * N + i] = (float)o;
        }
    }
    lp_pool *pool;
    CHECK(lp_pool_create(2, &pool) == LP_OK, "(last error: %s)", lp_last_error());
    /* blocks of 5 query rows (the last one partial) */
    CHECK(lp_cpu_vae_attention_scratch(N, 5 * N) == 5 * N, "(last error: %s)", lp_last_error());
    lp_status st = lp_cpu_vae_attention(pool, q, k, v, out, C, N, s, 5 * N);
    lp_pool_destroy(pool);
    CHECK(st == LP_OK, "(last error: %s)", lp_last_error());
    CHECK(lp_rel_l2(out, ref, C * N) < 1e-6, "attention %.3e", lp_rel_l2(out, ref, C * N));
    CHECK(lp_cpu_vae_attention(NULL, q, k, v, out, C, N, s, N - 1) == LP_ERR_ARG, "(last error: %s)", lp_last_error());
    return 0;
}

/* ------------------------------------------------------------ model tests */

static const char *GOLDEN = "golden/wan_vae.safetensors";

typedef struct {
    lp_tensor_file *g;
    lp_wan_vae *m;
    lp_backend *be; /* the CPU backend, 2 threads */
    float *pixels, *latents; /* in.*, frame-major */
    int T, H, W, L, lh, lw;
} golden_case;

static void swap_ct(const float *src, float *dst, int c, int t, int hw) {
    for (int i = 0; i < c; i++)
        for (int j = 0; j < t; j++)
            memcpy(dst + ((size_t)j * c + i) * hw, src + ((size_t)i * t + j) * hw, hw * sizeof *dst);
}

/* Reads name ([1, c, t, h, w]) as frame-major [t][c][h][w]. */
static float *load_frame_major(lp_tensor_file *g, const char *name, int c) {
    const lp_tensor *t = lp_tensor_file_find(g, name);
    if (!t || t->ndim != 5 || t->shape[1] != c) return NULL;
    size_t n = (size_t)lp_tensor_numel(t);
    float *raw = malloc(n * sizeof *raw), *fm = malloc(n * sizeof *fm);
    if (raw && fm && lp_tensor_read_f32(t, 0, (int64_t)n, raw) == LP_OK) {
        swap_ct(raw, fm, c, (int)t->shape[2], (int)(t->shape[3] * t->shape[4]));
        free(raw);
        return fm;
    }
    free(raw);
    free(fm);
    return NULL;
}

static void golden_close(golden_case *c) {
    lp_wan_vae_free(c->m);
    lp_backend_destroy(c->be);
    lp_tensor_file_close(c->g);
    free(c->pixels);
    free(c->latents);
}

/* 0 ok, 1 failure, LP_TEST_SKIP without the shared folder. */
static int golden_open(golden_case *c) {
    memset(c, 0, sizeof *c);
    const char *path = lp_test_shared(GOLDEN);
    if (!path) return lp_test_skip_shared(GOLDEN);
    CHECK(lp_tensor_file_open(path, &c->g) == LP_OK, "%s", lp_last_error());
    CHECK(lp_wan_vae_load(c->g, "w.", &c->m) == LP_OK, "%s", lp_last_error());
    CHECK(lp_backend_cpu_create(2, &c->be) == LP_OK, "(last error: %s)", lp_last_error());
    const lp_tensor *p = lp_tensor_file_find(c->g, "in.pixels"), *l = lp_tensor_file_find(c->g, "in.latents");
    CHECK(p && l, "(last error: %s)", lp_last_error());
    c->T = (int)p->shape[2];
    c->H = (int)p->shape[3];
    c->W = (int)p->shape[4];
    c->L = (int)l->shape[2];
    c->lh = (int)l->shape[3];
    c->lw = (int)l->shape[4];
    c->pixels = load_frame_major(c->g, "in.pixels", 3);
    c->latents = load_frame_major(c->g, "in.latents", 16);
    CHECK(c->pixels && c->latents, "(last error: %s)", lp_last_error());
    return 0;
}

/* rel L2 of frame-major got against the NCTHW reference name. */
static double golden_err(lp_tensor_file *g, const char *name, const float *got, int c) {
    const lp_tensor *t = lp_tensor_file_find(g, name);
    float *ref = load_frame_major(g, name, c);
    double e = ref ? lp_rel_l2(got, ref, (size_t)lp_tensor_numel(t)) : INFINITY;
    free(ref);
    return e;
}

static int test_config_detected(void) {
    golden_case c;
    int r = golden_open(&c);
    if (r) return r;
    const lp_wan_vae_config *cfg = lp_wan_vae_config_of(c.m);
    int ok = cfg->dim == 8 && cfg->z_dim == 16 && cfg->nstages == 4 && cfg->num_res_blocks == 2 &&
             cfg->dim_mult[0] == 1 && cfg->dim_mult[1] == 2 && cfg->dim_mult[2] == 4 && cfg->dim_mult[3] == 4 &&
             !cfg->temporal_down[0] && cfg->temporal_down[1] && cfg->temporal_down[2] && lp_wan_vae_scale(c.m) == 8;
    golden_close(&c);
    CHECK(ok, "detected dim %d z %d stages %d res %d", cfg->dim, cfg->z_dim, cfg->nstages, cfg->num_res_blocks);
    return 0;
}

/* Encodes the golden clip (in chunks of the given frame counts) and decodes its
 * latents (in groups of the given sizes); results frame-major. */
static int run_golden(golden_case *c, const lp_wan_vae *m, const int *enc_chunks, const int *dec_groups, float *lat,
                      float *pix) {
    lp_wan_vae_encoder *e;
    lp_wan_vae_decoder *d;
    CHECK(lp_wan_vae_encoder_open(m, c->H, c->W, c->be, &e) == LP_OK, "%s", lp_last_error());
    size_t fs = (size_t)3 * c->H * c->W, ls = (size_t)16 * c->lh * c->lw;
    int pos = 0, nl = 0;
    for (int i = 0; enc_chunks[i]; i++) {
        int n;
        CHECK(lp_wan_vae_encode(e, c->pixels + pos * fs, enc_chunks[i], lat + nl * ls, &n) == LP_OK, "%s",
              lp_last_error());
        pos += enc_chunks[i];
        nl += n;
    }
    lp_wan_vae_encoder_close(e);
    CHECK(pos == c->T && nl == c->L, "%d frames -> %d latents", pos, nl);
    CHECK(lp_wan_vae_decoder_open(m, c->H, c->W, 0, c->be, &d) == LP_OK, "%s", lp_last_error());
    int nf = 0;
    pos = 0;
    for (int i = 0; dec_groups[i]; i++) {
        int n;
        CHECK(lp_wan_vae_decode(d, c->latents + pos * ls, dec_groups[i], pix + nf * fs, &n) == LP_OK, "%s",
              lp_last_error());
        pos += dec_groups[i];
        nf += n;
    }
    lp_wan_vae_decoder_close(d);
    CHECK(pos == c->L && nf == c->T, "%d latents -> %d frames", pos, nf);
    return 0;
}

static int test_golden(void) {
    golden_case c;
    int r = golden_open(&c);
    if (r) return r;
    float *lat = malloc((size_t)c.L * 16 * c.lh * c.lw * sizeof *lat),
          *pix = malloc((size_t)c.T * 3 * c.H * c.W * sizeof *pix);
    int whole_enc[] = {c.T, 0}, whole_dec[] = {c.L, 0};
    r = run_golden(&c, c.m, whole_enc, whole_dec, lat, pix);
    double el = golden_err(c.g, "out.latents", lat, 16), ep = golden_err(c.g, "out.pixels", pix, 3);
    printf("    wan_vae golden: latents rel_l2 %.3e, pixels rel_l2 %.3e\n", el, ep);
    free(lat);
    free(pix);
    golden_close(&c);
    if (r) return r;
    CHECK(el <= TOL && ep <= TOL, "latents %.3e pixels %.3e", el, ep);
    return 0;
}

/* The .pth weights (published layout, no prefix) give the same results. */
static int test_pth_weights(void) {
    golden_case c;
    int r = golden_open(&c);
    if (r) return r;
    const char *pth = lp_test_shared("golden/wan_vae.pth");
    lp_tensor_file *f = NULL;
    lp_wan_vae *m = NULL;
    size_t nl = (size_t)c.L * 16 * c.lh * c.lw, np = (size_t)c.T * 3 * c.H * c.W;
    float *lat = malloc(nl * sizeof *lat), *pix = malloc(np * sizeof *pix);
    float *lat2 = malloc(nl * sizeof *lat), *pix2 = malloc(np * sizeof *pix);
    int whole_enc[] = {c.T, 0}, whole_dec[] = {c.L, 0};
    r = !pth || lp_tensor_file_open(pth, &f) != LP_OK || lp_wan_vae_load(f, "", &m) != LP_OK;
    if (r) fprintf(stderr, "  %s\n", lp_last_error());
    if (!r) r = run_golden(&c, c.m, whole_enc, whole_dec, lat, pix);
    if (!r) r = run_golden(&c, m, whole_enc, whole_dec, lat2, pix2);
    int same = !r && !memcmp(lat, lat2, nl * sizeof *lat) && !memcmp(pix, pix2, np * sizeof *pix);
    lp_wan_vae_free(m);
    lp_tensor_file_close(f);
    free(lat);
    free(pix);
    free(lat2);
    free(pix2);
    golden_close(&c);
    CHECK(!r && same, "(last error: %s)", lp_last_error());
    return 0;
}

/* Encoding 1 + 4 + 4 frames in three calls equals one call; decoding the
 * latents one at a time equals all at once; a reset session starts over. */
static int test_streaming_chunks(void) {
    golden_case c;
    int r = golden_open(&c);
    if (r) return r;
    size_t nl = (size_t)c.L * 16 * c.lh * c.lw, np = (size_t)c.T * 3 * c.H * c.W;
    float *lat = malloc(nl * sizeof *lat), *pix = malloc(np * sizeof *pix);
    float *lat2 = malloc(nl * sizeof *lat), *pix2 = malloc(np * sizeof *pix);
    int whole_enc[] = {c.T, 0}, whole_dec[] = {c.L, 0};
    int enc_chunks[] = {1, 4, 4, 0}, dec_one[] = {1, 1, 1, 0};
    r = c.T != 9 || c.L != 3;
    if (!r) r = run_golden(&c, c.m, whole_enc, whole_dec, lat, pix);
    if (!r) r = run_golden(&c, c.m, enc_chunks, dec_one, lat2, pix2);
    int same = !r && !memcmp(lat, lat2, nl * sizeof *lat) && !memcmp(pix, pix2, np * sizeof *pix);
    /* a reset session reproduces the first clip */
    lp_wan_vae_encoder *e = NULL;
    int n = 0;
    if (same && lp_wan_vae_encoder_open(c.m, c.H, c.W, c.be, &e) == LP_OK) {
        lp_wan_vae_encode(e, c.pixels, 5, lat2, &n);
        lp_wan_vae_encoder_reset(e);
        memset(lat2, 0, nl * sizeof *lat2);
        same = lp_wan_vae_encode(e, c.pixels, c.T, lat2, &n) == LP_OK && n == c.L && lp_rel_l2(lat2, lat, nl) < 1e-6;
    }
    lp_wan_vae_encoder_close(e);
    free(lat);
    free(pix);
    free(lat2);
    free(pix2);
    golden_close(&c);
    CHECK(!r && same, "(last error: %s)", lp_last_error());
    return 0;
}

/* Bytes in use on the heap (glibc); all session memory is reserved at open, so
 * this must not move while a clip streams through. */
static size_t heap_in_use(void) { return mallinfo2().uordblks; }

/* Encodes nframes random frames of 16x16 then decodes their latents; reports
 * the sessions' sizes and the heap growth during encode/decode. */
static int stream_clip(const lp_wan_vae *m, lp_backend *be, int nframes, size_t *enc_bytes, size_t *dec_bytes,
                       long *heap_growth) {
    enum { S = 16 };
    int nl = 1 + (nframes - 1) / 4, n;
    float *pix = malloc((size_t)nframes * 3 * S * S * sizeof *pix), *lat = malloc((size_t)nl * 16 * 4 * sizeof *lat);
    float *out = malloc((size_t)4 * nl * 3 * S * S * sizeof *out);
    lp_test_fill(pix, (size_t)nframes * 3 * S * S, 99, 1.0f);
    lp_wan_vae_encoder *e;
    lp_wan_vae_decoder *d;
    CHECK(lp_wan_vae_encoder_open(m, S, S, be, &e) == LP_OK, "(last error: %s)", lp_last_error());
    CHECK(lp_wan_vae_decoder_open(m, S, S, 1, be, &d) == LP_OK, "(last error: %s)", lp_last_error());
    /* warm-up (one-time lazy allocations of threads and BLAS), then a fresh clip */
    CHECK(lp_wan_vae_encode(e, pix, 5, lat, &n) == LP_OK && lp_wan_vae_decode(d, lat, 2, out, &n) == LP_OK,
          "(last error: %s)", lp_last_error());
    lp_wan_vae_encoder_reset(e);
    lp_wan_vae_decoder_reset(d);
    size_t h0 = heap_in_use();
    CHECK(lp_wan_vae_encode(e, pix, 1, lat, &n) == LP_OK && n == 1, "(last error: %s)", lp_last_error());
    for (int t = 1; t < nframes; t += 4)
        CHECK(lp_wan_vae_encode(e, pix + (size_t)t * 3 * S * S, 4, lat + (t + 3) / 4 * 64, &n) == LP_OK && n == 1,
              "(last error: %s)", lp_last_error());
    int nf = 0;
    for (int i = 0; i < nl; i++) {
        CHECK(lp_wan_vae_decode(d, lat + i * 64, 1, out + (size_t)nf * 3 * S * S, &n) == LP_OK, "(last error: %s)",
              lp_last_error());
        nf += n;
    }
    *heap_growth = (long)heap_in_use() - (long)h0;
    CHECK(nf == nframes, "%d latents -> %d frames", nl, nf);
    for (size_t i = 0; i < (size_t)nf * 3 * S * S; i++)
        CHECK(out[i] >= -1.0f && out[i] <= 1.0f && isfinite(out[i]), "(last error: %s)", lp_last_error());
    *enc_bytes = lp_wan_vae_encoder_bytes(e);
    *dec_bytes = lp_wan_vae_decoder_bytes(d);
    lp_wan_vae_encoder_close(e);
    lp_wan_vae_decoder_close(d);
    free(pix);
    free(lat);
    free(out);
    return 0;
}

static int test_memory_constant(void) {
    golden_case c;
    int r = golden_open(&c);
    if (r) return r;
    size_t e9, d9, e81, d81;
    long g9, g81;
    r = stream_clip(c.m, c.be, 9, &e9, &d9, &g9);
    if (!r) r = stream_clip(c.m, c.be, 81, &e81, &d81, &g81);
    golden_close(&c);
    if (r) return r;
    printf("    16x16: encoder %zu bytes, decoder %zu bytes for 9 and 81 frames; heap growth while streaming "
           "%ld / %ld bytes\n",
           e9, d9, g9, g81);
    CHECK(e9 == e81 && d9 == d81, "encoder %zu vs %zu, decoder %zu vs %zu bytes", e9, e81, d9, d81);
    CHECK(g9 == 0 && g81 == 0, "heap grew by %ld / %ld bytes while streaming", g9, g81);
    return 0;
}

/* The decoder's clamp option is the clamp of the raw output. */
static int test_clamp_option(void) {
    golden_case c;
    int r = golden_open(&c);
    if (r) return r;
    size_t np = (size_t)c.T * 3 * c.H * c.W;
    float *raw = malloc(np * sizeof *raw), *cl = malloc(np * sizeof *cl);
    lp_wan_vae_decoder *d0 = NULL, *d1 = NULL;
    int n0 = 0, n1 = 0,
        ok = lp_wan_vae_decoder_open(c.m, c.H, c.W, 0, c.be, &d0) == LP_OK &&
             lp_wan_vae_decoder_open(c.m, c.H, c.W, 1, c.be, &d1) == LP_OK &&
             lp_wan_vae_decode(d0, c.latents, c.L, raw, &n0) == LP_OK &&
             lp_wan_vae_decode(d1, c.latents, c.L, cl, &n1) == LP_OK && n0 == c.T && n1 == c.T;
    int outside = 0;
    for (size_t i = 0; ok && i < np; i++) {
        outside += raw[i] < -1 || raw[i] > 1;
        ok = cl[i] == fminf(fmaxf(raw[i], -1.0f), 1.0f);
    }
    lp_wan_vae_decoder_close(d0);
    lp_wan_vae_decoder_close(d1);
    free(raw);
    free(cl);
    golden_close(&c);
    printf("    %d raw values outside [-1, 1]\n", outside);
    CHECK(ok, "(last error: %s)", lp_last_error());
    return 0;
}

/* Bad calls fail with LP_ERR_ARG and a message. */
static int test_bad_arguments(void) {
    golden_case c;
    int r = golden_open(&c);
    if (r) return r;
    lp_wan_vae_encoder *e = NULL;
    lp_wan_vae_decoder *d = NULL;
    float lat[16 * 4 * 6 * 3];
    int n, ok = lp_wan_vae_encoder_open(c.m, 30, 48, c.be, &e) == LP_ERR_ARG && !e &&
                strstr(lp_last_error(), "multiples of 8") &&
                lp_wan_vae_decoder_open(c.m, 32, 0, 0, c.be, &d) == LP_ERR_ARG;
    ok = ok && lp_wan_vae_encoder_open(c.m, c.H, c.W, c.be, &e) == LP_OK;
    ok = ok && lp_wan_vae_encode(e, c.pixels, 4, lat, &n) == LP_ERR_ARG && strstr(lp_last_error(), "1 + 4k");
    ok = ok && lp_wan_vae_encode(e, c.pixels, 1, lat, &n) == LP_OK && n == 1;
    ok = ok && lp_wan_vae_encode(e, c.pixels, 5, lat, &n) == LP_ERR_ARG;
    lp_wan_vae_encoder_close(e);
    golden_close(&c);
    CHECK(ok, "%s", lp_last_error());
    return 0;
}

/* Writes the w.* tensors of src to a safetensors file, dropping the tensor
 * named drop and giving the tensor named reshape a second dimension of half
 * its size (data truncated to match). */
static int write_variant(const lp_tensor_file *src, const char *path, const char *drop, const char *reshape) {
    size_t cap = 1 << 16, len = 0, off = 0;
    char *hdr = malloc(cap);
    len += (size_t)snprintf(hdr, cap, "{");
    size_t count = lp_tensor_file_count(src);
    for (size_t i = 0; i < count; i++) {
        const lp_tensor *t = lp_tensor_file_at(src, i);
        if (strncmp(t->name, "w.", 2) || (drop && !strcmp(t->name, drop))) continue;
        int64_t shape[LP_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (reshape && !strcmp(t->name, reshape)) shape[1] /= 2;
        size_t bytes = 4;
        for (int k = 0; k < t->ndim; k++) bytes *= (size_t)shape[k];
        len += (size_t)snprintf(hdr + len, cap - len, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[", len > 1 ? "," : "",
                                t->name);
        for (int k = 0; k < t->ndim; k++)
            len += (size_t)snprintf(hdr + len, cap - len, "%s%lld", k ? "," : "", (long long)shape[k]);
        len += (size_t)snprintf(hdr + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", off, off + bytes);
        off += bytes;
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    FILE *f = fopen(path, "wb");
    if (!f || len >= cap) {
        free(hdr);
        if (f) fclose(f);
        return 1;
    }
    uint64_t hl = len;
    fwrite(&hl, 8, 1, f);
    fwrite(hdr, 1, len, f);
    for (size_t i = 0; i < count; i++) {
        const lp_tensor *t = lp_tensor_file_at(src, i);
        if (strncmp(t->name, "w.", 2) || (drop && !strcmp(t->name, drop))) continue;
        size_t bytes = t->nbytes / (reshape && !strcmp(t->name, reshape) ? 2 : 1);
        fwrite(t->data, 1, bytes, f);
    }
    free(hdr);
    return fclose(f) != 0;
}

/* Loading path must fail with want, and the message must name name. */
static int expect_load_error(const char *path, lp_status want, const char *name) {
    lp_tensor_file *f;
    lp_wan_vae *m = NULL;
    CHECK(lp_tensor_file_open(path, &f) == LP_OK, "%s", lp_last_error());
    lp_status s = lp_wan_vae_load(f, "w.", &m);
    lp_tensor_file_close(f);
    CHECK(s == want && !m, "status %s: %s", lp_status_name(s), lp_last_error());
    CHECK(strstr(lp_last_error(), name), "message does not name %s: %s", name, lp_last_error());
    printf("    %s\n", lp_last_error());
    return 0;
}

static int test_bad_weights(void) {
    golden_case c;
    int r = golden_open(&c);
    if (r) return r;
    char path[512];
    snprintf(path, sizeof path, "%s/wan_vae_bad.safetensors", lp_test_tmpdir());
    const char *cases[][2] = {
        {NULL, "w.decoder.upsamples.4.shortcut.weight"},                                   /* mis-shaped */
        {NULL, "w.encoder.middle.1.to_qkv.weight"},       {"w.decoder.head.2.bias", NULL}, /* missing */
        {"w.encoder.downsamples.8.time_conv.bias", NULL}, {"w.decoder.upsamples.3.time_conv.weight", NULL},
    };
    for (int i = 0; i < 5 && !r; i++) {
        const char *drop = cases[i][0], *reshape = cases[i][1];
        r = write_variant(c.g, path, drop, reshape);
        if (!r) r = expect_load_error(path, drop ? LP_ERR_MISSING : LP_ERR_SHAPE, drop ? drop : reshape);
    }
    /* without an encoder time_conv the layout has one temporal downsample */
    if (!r) r = write_variant(c.g, path, "w.encoder.downsamples.8.time_conv.weight", NULL);
    if (!r) r = expect_load_error(path, LP_ERR_UNSUPPORTED, "temporal downsamples");
    remove(path);
    /* the wrong prefix names the first tensor looked up */
    lp_wan_vae *m = NULL;
    if (!r) r = lp_wan_vae_load(c.g, "", &m) != LP_ERR_MISSING || !strstr(lp_last_error(), "encoder.conv1.weight");
    golden_close(&c);
    CHECK(!r && !m, "%s", lp_last_error());
    return 0;
}

/* ------------------------------------------------------- random weights */

/* 1 when a and b are the same configuration (the fields in use). */
static int config_equal(const lp_wan_vae_config *a, const lp_wan_vae_config *b) {
    if (a->dim != b->dim || a->z_dim != b->z_dim || a->nstages != b->nstages ||
        a->num_res_blocks != b->num_res_blocks)
        return 0;
    for (int s = 0; s < a->nstages; s++)
        if (a->dim_mult[s] != b->dim_mult[s] || (s + 1 < a->nstages && a->temporal_down[s] != b->temporal_down[s]))
            return 0;
    return 1;
}

enum { RW_T = 9, RW_L = 3, RW_S = 16 }; /* frames, latents, frame size (latents 4x4: scale 4) */

/* Random weights of cfg from seed, loaded, must be detected as cfg; then the
 * RW_T frames pix are encoded (lat: [RW_L][16][4][4]) and decoded (out:
 * [RW_T][3][RW_S][RW_S]) on be. */
static int random_clip(const lp_wan_vae_config *cfg, uint64_t seed, lp_backend *be, const float *pix, float *lat,
                       float *out) {
    lp_tensor_file *f = NULL;
    lp_wan_vae *m = NULL;
    lp_wan_vae_encoder *e = NULL;
    lp_wan_vae_decoder *d = NULL;
    int nl = 0, nf = 0, same_cfg = 0;
    int ok = lp_wan_vae_random_weights(cfg, seed, &f) == LP_OK && lp_wan_vae_load(f, "", &m) == LP_OK;
    if (ok) same_cfg = config_equal(lp_wan_vae_config_of(m), cfg);
    ok = ok && same_cfg && lp_wan_vae_encoder_open(m, RW_S, RW_S, be, &e) == LP_OK &&
         lp_wan_vae_encode(e, pix, RW_T, lat, &nl) == LP_OK && nl == RW_L &&
         lp_wan_vae_decoder_open(m, RW_S, RW_S, 0, be, &d) == LP_OK &&
         lp_wan_vae_decode(d, lat, RW_L, out, &nf) == LP_OK && nf == RW_T;
    lp_wan_vae_encoder_close(e);
    lp_wan_vae_decoder_close(d);
    lp_wan_vae_free(m);
    lp_tensor_file_close(f);
    CHECK(ok, "seed %llu: config %s, %d latents, %d frames (last error: %s)", (unsigned long long)seed,
          same_cfg ? "detected" : "NOT detected", nl, nf, lp_last_error());
    return 0;
}

/* A small configuration (dim 8, 3 stages, 1 res block, both downsamples
 * temporal): loads and is detected as asked; the same seed gives bit-identical
 * finite latents and frames, another seed different latents. */
static int test_random_weights(void) {
    lp_wan_vae_config cfg = {.dim = 8, .z_dim = 16, .nstages = 3, .dim_mult = {1, 2, 2}, .num_res_blocks = 1,
                             .temporal_down = {1, 1}};
    size_t np = (size_t)RW_T * 3 * RW_S * RW_S, nl = (size_t)RW_L * 16 * 4 * 4;
    size_t nout = 4 * (size_t)RW_L * 3 * RW_S * RW_S; /* decode's room: 4 frames a latent */
    float *pix = malloc(np * sizeof *pix), *lat[3], *out[3];
    for (int i = 0; i < 3; i++) {
        lat[i] = malloc(nl * sizeof *lat[i]);
        out[i] = malloc(nout * sizeof *out[i]);
    }
    lp_backend *be = NULL;
    int r = !pix || lp_backend_cpu_create(2, &be) != LP_OK;
    if (!r) lp_test_fill(pix, np, 5, 1.0f);
    static const uint64_t seeds[3] = {7, 7, 8};
    for (int i = 0; i < 3 && !r; i++) r = !lat[i] || !out[i] || random_clip(&cfg, seeds[i], be, pix, lat[i], out[i]);
    int finite = 1;
    for (size_t k = 0; !r && k < nl; k++) finite &= isfinite(lat[0][k]) && isfinite(lat[2][k]);
    for (size_t k = 0; !r && k < np; k++) finite &= isfinite(out[0][k]) && isfinite(out[2][k]);
    int same = !r && !memcmp(lat[0], lat[1], nl * sizeof *lat[0]) && !memcmp(out[0], out[1], np * sizeof *out[0]);
    double diff = r ? 0 : lp_rel_l2(lat[2], lat[0], nl);
    if (!r) printf("    dim 8, 3 stages: seeds 7 and 8 give latents rel_l2 %.3f apart\n", diff);
    lp_backend_destroy(be);
    free(pix);
    for (int i = 0; i < 3; i++) {
        free(lat[i]);
        free(out[i]);
    }
    CHECK(!r, "(last error: %s)", lp_last_error());
    CHECK(finite && same, "finite %d, same seed bit-identical %d", finite, same);
    CHECK(diff > 1e-3, "another seed: rel_l2 %.3e", diff);
    return 0;
}

int main(void) {
    lp_test_run("conv vs naive (3x3x3 causal, time convs, 1x1x1, 2-D stride 1/2)", test_conv_vs_naive);
    lp_test_run("rms norm, silu, add, upsample vs naive", test_pointwise_ops);
    lp_test_run("attention vs naive", test_attention_vs_naive);
    lp_test_run("config detected from shapes", test_config_detected);
    lp_test_run("golden encode + decode (rel L2 <= 1e-5)", test_golden);
    lp_test_run(".pth weights give the same results", test_pth_weights);
    lp_test_run("streaming chunks == whole clip", test_streaming_chunks);
    lp_test_run("memory constant for 9 and 81 frames", test_memory_constant);
    lp_test_run("decoder clamp option", test_clamp_option);
    lp_test_run("bad arguments", test_bad_arguments);
    lp_test_run("wrong-shaped / missing weights", test_bad_weights);
    lp_test_run("random weights: load, config detected, same seed same output", test_random_weights);
    rmdir(lp_test_tmpdir()); /* only if empty */
    return lp_test_finish();
}
