/* `lipar check` runner for kind "wan_vae": encodes in.pixels [1, 3, T, H, W]
 * (T = 1 + 4k) and compares the normalised latents with out.latents
 * [1, 16, 1 + k, H/8, W/8]; decodes in.latents [1, 16, L, h, w] and compares the
 * unclamped frames with out.pixels [1, 3, 1 + 4(L-1), 8h, 8w]. A direction runs
 * when its in.* tensor is present. Runs on the backend of --backend (cpu or
 * cuda). */
#include <stdlib.h>
#include <string.h>

#include "../src/model/wan_vae.h"
#include "check.h"
#include "check_common.h"

/* [C][T][HW] <-> [T][C][HW]. */
static void swap_ct(const float *src, float *dst, int64_t c, int64_t t, int64_t hw) {
    for (int64_t i = 0; i < c; i++)
        for (int64_t j = 0; j < t; j++)
            memcpy(dst + (j * c + i) * hw, src + (i * t + j) * hw, (size_t)hw * sizeof *dst);
}

/* Reads a [1, c, T, H, W] input as frame-major [T][c][H][W]. */
static lp_status load_clip(const lp_tensor_file *g, const lp_tensor *t, int c, float **out) {
    int64_t want[5] = {1, c, -1, -1, -1};
    LP_TRY(lp_tensor_expect(t, lp_tensor_file_path(g), 5, want));
    float *raw;
    int64_t n;
    LP_TRY(lp_check_load_f32(g, t->name, &raw, &n));
    float *fm = malloc((size_t)(n ? n : 1) * sizeof *fm);
    if (!fm) {
        free(raw);
        return lp_fail(LP_ERR_NOMEM, "out of memory reading '%s'", t->name);
    }
    swap_ct(raw, fm, c, t->shape[2], t->shape[3] * t->shape[4]);
    free(raw);
    *out = fm;
    return LP_OK;
}

/* Compares frame-major [T][c][HW] results with the NCTHW reference named name. */
static lp_status compare_clip(lp_check_ctx *c, const lp_tensor_file *g, const char *name, const float *got, int ch,
                              int64_t t, int64_t hw) {
    const lp_tensor *ref;
    LP_TRY(lp_tensor_file_get(g, name, &ref));
    int64_t n = ch * t * hw;
    float *ncthw = malloc((size_t)(n > 0 ? n : 1) * sizeof *ncthw);
    if (!ncthw) return lp_fail(LP_ERR_NOMEM, "out of memory comparing '%s'", name);
    swap_ct(got, ncthw, t, ch, hw);
    lp_check_compare(c, ref, ncthw, n);
    free(ncthw);
    return LP_OK;
}

static lp_status run_encode(lp_check_ctx *c, const lp_tensor_file *g, const lp_wan_vae *m, lp_backend *be,
                            const lp_tensor *in) {
    float *frames = NULL, *lat = NULL;
    lp_wan_vae_encoder *e = NULL;
    LP_TRY(load_clip(g, in, 3, &frames));
    int T = (int)in->shape[2], H = (int)in->shape[3], W = (int)in->shape[4], s = lp_wan_vae_scale(m), n = 0;
    int z = lp_wan_vae_config_of(m)->z_dim;
    int64_t lhw = (int64_t)(H / s) * (W / s);
    lp_status st = lp_wan_vae_encoder_open(m, H, W, be, &e);
    if (st == LP_OK && (T < 1 || (T - 1) % 4))
        st = lp_fail(LP_ERR_SHAPE, "%s: in.pixels has %d frames; the Wan VAE encodes 1 + 4k", c->golden_path, T);
    if (st == LP_OK && !(lat = malloc((size_t)(1 + (T - 1) / 4) * z * lhw * sizeof *lat)))
        st = lp_fail(LP_ERR_NOMEM, "out of memory encoding");
    if (st == LP_OK) st = lp_wan_vae_encode(e, frames, T, lat, &n);
    if (st == LP_OK) st = compare_clip(c, g, "out.latents", lat, z, n, lhw);
    lp_wan_vae_encoder_close(e);
    free(frames);
    free(lat);
    return st;
}

static lp_status run_decode(lp_check_ctx *c, const lp_tensor_file *g, const lp_wan_vae *m, lp_backend *be,
                            const lp_tensor *in) {
    float *lat = NULL, *frames = NULL;
    lp_wan_vae_decoder *d = NULL;
    int z = lp_wan_vae_config_of(m)->z_dim, s = lp_wan_vae_scale(m), n = 0;
    LP_TRY(load_clip(g, in, z, &lat));
    int L = (int)in->shape[2], H = (int)in->shape[3] * s, W = (int)in->shape[4] * s;
    lp_status st = lp_wan_vae_decoder_open(m, H, W, 0, be, &d);
    if (st == LP_OK && !(frames = malloc((size_t)4 * (L ? L : 1) * 3 * H * W * sizeof *frames)))
        st = lp_fail(LP_ERR_NOMEM, "out of memory decoding");
    if (st == LP_OK) st = lp_wan_vae_decode(d, lat, L, frames, &n);
    if (st == LP_OK) st = compare_clip(c, g, "out.pixels", frames, 3, n, (int64_t)H * W);
    lp_wan_vae_decoder_close(d);
    free(lat);
    free(frames);
    return st;
}

lp_status check_wan_vae(lp_check_ctx *c, const lp_tensor_file *golden) {
    lp_tensor_file *wf;
    const lp_tensor_file *src;
    const char *prefix;
    LP_TRY(lp_check_weights_source(c, golden, "w.encoder.conv1.weight", &wf, &src, &prefix));
    lp_wan_vae *m = NULL;
    lp_backend *be = NULL;
    lp_status st = lp_wan_vae_load(src, prefix, &m);
    if (st == LP_OK) st = lp_backend_create(c->backend, c->threads, &be);
    const lp_tensor *pix = lp_tensor_file_find(golden, "in.pixels"), *lat = lp_tensor_file_find(golden, "in.latents");
    if (st == LP_OK && !pix && !lat)
        st = lp_fail(LP_ERR_MISSING, "%s: neither in.pixels nor in.latents is present", c->golden_path);
    if (st == LP_OK && pix) st = run_encode(c, golden, m, be, pix);
    if (st == LP_OK && lat) st = run_decode(c, golden, m, be, lat);
    lp_backend_destroy(be);
    lp_wan_vae_free(m);
    lp_tensor_file_close(wf);
    return st;
}
