/* `lipar check` runner for kind "taehv": streams in.pixels [1, T, 3, H, W]
 * through the encoder one frame at a time (flushing a partial group) and
 * compares out.latents [1, ceil(T/4), C, H/8, W/8]; decodes in.latents
 * [1, T', C, h, w] with upstream's trimming and clamping (out.pixels) and with
 * neither (out.pixels_untrimmed_unclamped). Every size comes from the tensors.
 * Runs on the backend of --backend (cpu or cuda). */
#include <stdio.h>
#include <stdlib.h>

#include "../src/model/taehv.h"
#include "check.h"
#include "check_common.h"

lp_status check_taehv(lp_check_ctx *c, const lp_tensor_file *golden);

static lp_status expect_ntchw(const lp_tensor *t, int channels) {
    if (t->ndim != 5 || t->shape[0] != 1 || t->shape[1] < 1 || (channels > 0 && t->shape[2] != channels) ||
        t->shape[3] < 1 || t->shape[4] < 1 || t->shape[1] > 1 << 20 || t->shape[3] > 1 << 15 || t->shape[4] > 1 << 15) {
        char buf[128];
        return lp_fail(LP_ERR_SHAPE, "check taehv: '%s' has shape %s, expected [1, T, %d, H, W]", t->name,
                       lp_shape_str(t, buf, sizeof buf), channels);
    }
    return LP_OK;
}

static lp_status check_encoder(lp_check_ctx *c, const lp_tensor_file *g, const lp_taehv *m) {
    const lp_tensor *tin, *tref;
    LP_TRY(lp_tensor_file_get(g, "in.pixels", &tin));
    LP_TRY(lp_tensor_file_get(g, "out.latents", &tref));
    LP_TRY(expect_ntchw(tin, 3));
    int T = (int)tin->shape[1], H = (int)tin->shape[3], W = (int)tin->shape[4];
    float *px = NULL, *lat = NULL;
    lp_taehv_encoder *e = NULL;
    lp_status s = lp_check_load_f32(g, "in.pixels", &px, NULL);
    if (s == LP_OK) s = lp_taehv_encoder_create(m, H, W, &e);
    int lc, lh, lw, n_lat = 0;
    if (s == LP_OK) {
        lp_taehv_encoder_latent_shape(e, &lc, &lh, &lw);
        int max = lp_taehv_encoder_count(e, T) + 1;
        size_t lat_n = (size_t)lc * lh * lw;
        if (!(lat = malloc((size_t)max * lat_n * sizeof *lat))) s = lp_fail(LP_ERR_NOMEM, "check taehv: out of memory");
        for (int t = 0; t < T && s == LP_OK; t++) {
            int got;
            s = lp_taehv_encoder_push(e, px + (size_t)t * 3 * H * W, 1, lat + (size_t)n_lat * lat_n, max - n_lat, &got);
            n_lat += got;
        }
        if (s == LP_OK) {
            int got;
            s = lp_taehv_encoder_flush(e, lat + (size_t)n_lat * lat_n, max - n_lat, &got);
            n_lat += got;
        }
        if (s == LP_OK) lp_check_compare(c, tref, lat, (int64_t)n_lat * (int64_t)lat_n);
    }
    lp_taehv_encoder_free(e);
    free(px);
    free(lat);
    return s;
}

/* Decodes in.latents with opts and compares against ref_name. */
static lp_status check_decoder(lp_check_ctx *c, const lp_tensor_file *g, const lp_taehv *m,
                               const lp_taehv_decoder_opts *opts, const char *ref_name) {
    const lp_tensor *tin, *tref;
    LP_TRY(lp_tensor_file_get(g, "in.latents", &tin));
    LP_TRY(lp_tensor_file_get(g, ref_name, &tref));
    LP_TRY(expect_ntchw(tin, lp_taehv_latent_channels(m)));
    int T = (int)tin->shape[1], h = (int)tin->shape[3], w = (int)tin->shape[4];
    float *lat = NULL, *px = NULL;
    lp_taehv_decoder *d = NULL;
    lp_status s = lp_check_load_f32(g, "in.latents", &lat, NULL);
    if (s == LP_OK) s = lp_taehv_decoder_create(m, h, w, opts, &d);
    if (s == LP_OK) {
        int fc, fh, fw, n = 0, max = lp_taehv_decoder_count(d, T);
        lp_taehv_decoder_frame_shape(d, &fc, &fh, &fw);
        size_t fr = (size_t)fc * fh * fw, lat_n = (size_t)tin->shape[2] * h * w;
        if (!(px = malloc((size_t)(max ? max : 1) * fr * sizeof *px)))
            s = lp_fail(LP_ERR_NOMEM, "check taehv: out of memory");
        for (int t = 0; t < T && s == LP_OK; t++) {
            int got;
            s = lp_taehv_decoder_push(d, lat + (size_t)t * lat_n, 1, px + (size_t)n * fr, max - n, &got);
            n += got;
        }
        if (s == LP_OK) lp_check_compare(c, tref, px, (int64_t)n * (int64_t)fr);
    }
    lp_taehv_decoder_free(d);
    free(lat);
    free(px);
    return s;
}

lp_status check_taehv(lp_check_ctx *c, const lp_tensor_file *golden) {
    lp_tensor_file *wf;
    const lp_tensor_file *src;
    const char *prefix;
    LP_TRY(lp_check_weights_source(c, golden, "w.encoder.0.weight", &wf, &src, &prefix));
    lp_taehv *m = NULL;
    lp_backend *be = NULL;
    lp_status s = lp_backend_create(c->backend, c->threads, &be);
    if (s == LP_OK) s = lp_taehv_load(src, prefix, be, &m);
    if (s == LP_OK) s = check_encoder(c, golden, m);
    lp_taehv_decoder_opts upstream = {.trim = 1, .clamp = 1}, raw = {.trim = 0, .clamp = 0};
    if (s == LP_OK) s = check_decoder(c, golden, m, &upstream, "out.pixels");
    if (s == LP_OK) s = check_decoder(c, golden, m, &raw, "out.pixels_untrimmed_unclamped");
    lp_taehv_free(m);
    lp_backend_destroy(be);
    lp_tensor_file_close(wf);
    return s;
}
