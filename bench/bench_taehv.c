/* Benchmark of TAEHV at 832×480 on a backend: streams N frames through the
 * encoder, one frame per push, and the latents they make through the decoder,
 * one latent per push, after a warm-up group each (weight upload, GEMM plans)
 * and a reset; prints ms per frame and GFLOP/s (direct-convolution FLOPs) for
 * each direction. Weights: the golden file's (random values, real
 * architecture).
 * With --profile, the model runs on a timing copy of the backend's table
 * (op_profile.h) and the time of each op, by kind and shape, is printed per
 * frame.
 * usage: bench_taehv [--backend cpu|cuda] [--frames N (default 8)] [--threads N (default all)]
 *                    [--profile] [golden.safetensors] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/model/taehv.h"
#include "op_profile.h"

static int fail(const char *what) {
    fprintf(stderr, "bench_taehv: %s: %s\n", what, lp_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *path = "../shared/golden/taehv_w21.safetensors", *backend = "cpu";
    int frames = 8, threads = 0, profile = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc) backend = argv[++i];
        else if (!strcmp(argv[i], "--frames") && i + 1 < argc) frames = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--profile")) profile = 1;
        else if (argv[i][0] != '-') path = argv[i];
        else {
            fprintf(stderr, "usage: bench_taehv [--backend cpu|cuda] [--frames N] [--threads N] [--profile] "
                            "[golden.safetensors]\n");
            return 2;
        }
    }
    const int H = 480, W = 832;
    lp_backend *be;
    if (lp_backend_create(backend, threads, &be) != LP_OK) return fail("backend");
    lp_backend *owned = be, prof_be;
    if (profile) {
        prof_be = op_profile_wrap(be);
        be = &prof_be;
    }
    lp_tensor_file *f;
    if (lp_tensor_file_open(path, &f) != LP_OK) return fail("open");
    lp_taehv *m;
    if (lp_taehv_load(f, lp_tensor_file_find(f, "w.encoder.0.weight") ? "w." : "", be, &m) != LP_OK)
        return fail("load");
    int td = lp_taehv_time_downscale(m);
    if (frames < td) frames = td;
    frames -= frames % td; /* whole latent groups */
    int n_lat = frames / td;
    lp_taehv_encoder *e;
    lp_taehv_decoder *d;
    if (lp_taehv_encoder_create(m, H, W, &e) != LP_OK) return fail("encoder");
    int lc, lh, lw;
    lp_taehv_encoder_latent_shape(e, &lc, &lh, &lw);
    if (lp_taehv_decoder_create(m, lh, lw, NULL, &d) != LP_OK) return fail("decoder");
    size_t fr = (size_t)3 * H * W, lat_n = (size_t)lc * lh * lw;
    int n_out = lp_taehv_decoder_count(d, n_lat), tu = lp_taehv_time_upscale(m);
    float *px = malloc(fr * sizeof *px), *lat = malloc((size_t)n_lat * lat_n * sizeof *lat);
    float *out = malloc((size_t)(n_out > tu ? n_out : tu) * fr * sizeof *out);
    if (!px || !lat || !out) return fail("out of memory");
    for (size_t i = 0; i < fr; i++) px[i] = (float)((i * 2654435761u) % 1000) / 1000.0f;

    /* warm-up: one latent group each way, then forget it */
    int got;
    for (int t = 0; t < td; t++)
        if (lp_taehv_encoder_push(e, px, 1, lat, 1, &got) != LP_OK) return fail("encode (warm-up)");
    if (lp_taehv_decoder_push(d, lat, 1, out, tu, &got) != LP_OK) return fail("decode (warm-up)");
    if (lp_taehv_encoder_reset(e) != LP_OK || lp_taehv_decoder_reset(d) != LP_OK) return fail("reset");
    double fe0 = lp_taehv_encoder_flops(e), fd0 = lp_taehv_decoder_flops(d);
    op_profile_reset();

    double t0 = lp_seconds();
    int got_lat = 0;
    for (int t = 0; t < frames; t++) {
        if (lp_taehv_encoder_push(e, px, 1, lat + (size_t)got_lat * lat_n, n_lat - got_lat, &got) != LP_OK)
            return fail("encode");
        got_lat += got;
    }
    double t1 = lp_seconds();
    if (profile) op_profile_print("TAEHV encode", "frame", frames);
    t1 = lp_seconds();
    int got_px = 0;
    for (int t = 0; t < got_lat; t++) {
        if (lp_taehv_decoder_push(d, lat + (size_t)t * lat_n, 1, out + (size_t)got_px * fr, n_out - got_px, &got) !=
            LP_OK)
            return fail("decode");
        got_px += got;
    }
    double t2 = lp_seconds();
    if (profile) op_profile_print("TAEHV decode", "frame", got_px);

    double ge = (lp_taehv_encoder_flops(e) - fe0) * 1e-9, gd = (lp_taehv_decoder_flops(d) - fd0) * 1e-9;
    printf("taehv %dx%d on %s (%d CPU threads): encode %d frames -> %d latents, decode %d latents -> %d frames\n", W,
           H, be->name, lp_pool_size(be->pool), frames, got_lat, got_lat, got_px);
    printf("encode: %8.2f ms/frame  %6.1f GFLOP/frame  %8.1f GFLOP/s\n", 1e3 * (t1 - t0) / frames, ge / frames,
           ge / (t1 - t0));
    if (got_px > 0)
        printf("decode: %8.2f ms/frame  %6.1f GFLOP/frame  %8.1f GFLOP/s\n", 1e3 * (t2 - t1) / got_px, gd / got_px,
               gd / (t2 - t1));
    free(px);
    free(lat);
    free(out);
    lp_taehv_encoder_free(e);
    lp_taehv_decoder_free(d);
    lp_taehv_free(m);
    lp_tensor_file_close(f);
    lp_backend_destroy(owned);
    return 0;
}
