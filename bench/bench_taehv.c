/* CPU benchmark of TAEHV at 832×480: streams frames through the encoder and
 * latents through the decoder and prints ms per frame and GFLOP/s for each.
 * Weights: the golden file's (random values, real architecture).
 * usage: bench_taehv [golden.safetensors] [latent_frames (default 2)] [threads (default all)] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../src/model/taehv.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fail(const char *what) {
    fprintf(stderr, "bench_taehv: %s: %s\n", what, lp_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "../shared/golden/taehv_w21.safetensors";
    int n_lat = argc > 2 ? atoi(argv[2]) : 2;
    int threads = argc > 3 ? atoi(argv[3]) : 0;
    const int H = 480, W = 832;
    if (n_lat < 1) n_lat = 1;
    lp_tensor_file *f;
    if (lp_tensor_file_open(path, &f) != LP_OK) return fail("open");
    lp_taehv *m;
    lp_pool *pool;
    if (lp_taehv_load(f, lp_tensor_file_find(f, "w.encoder.0.weight") ? "w." : "", &m) != LP_OK) return fail("load");
    if (lp_pool_create(threads, &pool) != LP_OK) return fail("pool");
    lp_taehv_encoder *e;
    lp_taehv_decoder *d;
    if (lp_taehv_encoder_create(m, H, W, pool, &e) != LP_OK) return fail("encoder");
    int lc, lh, lw, T = n_lat * lp_taehv_time_downscale(m);
    lp_taehv_encoder_latent_shape(e, &lc, &lh, &lw);
    if (lp_taehv_decoder_create(m, lh, lw, NULL, pool, &d) != LP_OK) return fail("decoder");
    size_t fr = (size_t)3 * H * W, lat_n = (size_t)lc * lh * lw;
    int n_out = lp_taehv_decoder_count(d, n_lat);
    float *px = malloc(fr * sizeof *px), *lat = malloc((size_t)n_lat * lat_n * sizeof *lat);
    float *out = malloc((size_t)n_out * fr * sizeof *out);
    if (!px || !lat || !out) return fail("out of memory");
    for (size_t i = 0; i < fr; i++) px[i] = (float)((i * 2654435761u) % 1000) / 1000.0f;

    double t0 = now();
    int got_lat = 0;
    for (int t = 0; t < T; t++) {
        int got;
        if (lp_taehv_encoder_push(e, px, 1, lat + (size_t)got_lat * lat_n, n_lat - got_lat, &got) != LP_OK)
            return fail("encode");
        got_lat += got;
    }
    double t1 = now();
    int got_px;
    if (lp_taehv_decoder_push(d, lat, got_lat, out, n_out, &got_px) != LP_OK) return fail("decode");
    double t2 = now();

    double ge = lp_taehv_encoder_flops(e) * 1e-9, gd = lp_taehv_decoder_flops(d) * 1e-9;
    printf("taehv %dx%d, %d threads: encode %d frames -> %d latents, decode %d latents -> %d frames\n", W, H,
           lp_pool_size(pool), T, got_lat, got_lat, got_px);
    printf("encode: %8.1f ms/frame  %6.1f GFLOP/frame  %6.1f GFLOP/s\n", 1e3 * (t1 - t0) / T, ge / T, ge / (t1 - t0));
    printf("decode: %8.1f ms/frame  %6.1f GFLOP/frame  %6.1f GFLOP/s\n", 1e3 * (t2 - t1) / got_px, gd / got_px,
           gd / (t2 - t1));
    free(px);
    free(lat);
    free(out);
    lp_taehv_encoder_free(e);
    lp_taehv_decoder_free(d);
    lp_pool_destroy(pool);
    lp_taehv_free(m);
    lp_tensor_file_close(f);
    return 0;
}
