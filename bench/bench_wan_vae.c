/* Benchmark of the Wan 2.1 VAE (spec/VAE.md, "Wan VAE") at its published
 * size on a backend, with random weights of the published configuration
 * (src/model/wan_vae_random.h; --dim makes it narrower for quick CPU runs):
 * after a warm-up (5 frames encoded, 2 latents decoded, then both sessions
 * reset), streams 1 + 4(N - 1) pseudo-random frames through the encoder as a
 * clip does (1 frame, then 4 at a time) and decodes the N latents it makes
 * one at a time. Prints per direction the frames, the total and per-frame
 * time, the FPS, the peak device memory of the process (be->memory_in_use
 * sampled after each call of that direction, warm-up included; 0 on the CPU)
 * and the bytes the session allocated.
 * With --profile, the model runs on a timing copy of the backend's table
 * (op_profile.h) and the time of each op, by kind and shape, is printed per
 * frame.
 * usage: bench_wan_vae [--backend cpu|cuda] [--latents N (default 4)] [--size WxH (default 832x480)]
 *                      [--threads N (default all)] [--profile] [--dim N (default 96)] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/model/wan_vae.h"
#include "../src/model/wan_vae_random.h"
#include "op_profile.h"

static int fail(const char *what) {
    fprintf(stderr, "bench_wan_vae: %s: %s\n", what, lp_last_error());
    return 1;
}

/* n pseudo-random pixels in [-1, 1] from a hash of (seed, index). */
static void fill_frames(float *px, size_t n, uint32_t seed) {
    for (size_t i = 0; i < n; i++) {
        uint32_t x = (uint32_t)i * 0x9E3779B1u ^ (seed * 0x85EBCA6Bu + 1u);
        x ^= x >> 15;
        x *= 0x2C1B3C6Du;
        x ^= x >> 12;
        x *= 0x297A2D39u;
        x ^= x >> 15;
        px[i] = (float)(x >> 8) * (2.0f / 16777215.0f) - 1.0f;
    }
}

/* The time and peak device memory of one direction. */
typedef struct {
    double seconds;
    size_t peak;
} run_stats;

/* Waits for be, adds the time since t0 to st and samples the device memory. */
static void account(const lp_backend *be, run_stats *st, double t0) {
    be->synchronize(be);
    st->seconds += lp_seconds() - t0;
    size_t used = be->memory_in_use(be);
    if (used > st->peak) st->peak = used;
}

static void print_row(const char *dir, int frames, const run_stats *st, size_t session_bytes) {
    printf("| %s | %d | %.1f | %.2f | %.2f | %.0f | %.1f |\n", dir, frames, 1e3 * st->seconds,
           1e3 * st->seconds / frames, frames / st->seconds, (double)st->peak / 1048576.0,
           (double)session_bytes / 1048576.0);
}

int main(int argc, char **argv) {
    const char *backend = "cpu";
    int latents = 4, W = 832, H = 480, threads = 0, profile = 0, dim = 96;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc) backend = argv[++i];
        else if (!strcmp(argv[i], "--latents") && i + 1 < argc) latents = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc && sscanf(argv[i + 1], "%dx%d", &W, &H) == 2) i++;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--profile")) profile = 1;
        else if (!strcmp(argv[i], "--dim") && i + 1 < argc) dim = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_wan_vae [--backend cpu|cuda] [--latents N] [--size WxH] [--threads N] "
                            "[--profile] [--dim N]\n");
            return 2;
        }
    }
    if (latents < 1 || dim < 1) {
        fprintf(stderr, "bench_wan_vae: --latents and --dim must be at least 1\n");
        return 2;
    }

    /* the published configuration (Wan2.1_VAE.pth), dim overridable */
    lp_wan_vae_config cfg = {.dim = dim, .z_dim = 16, .nstages = 4, .dim_mult = {1, 2, 4, 4}, .num_res_blocks = 2,
                             .temporal_down = {0, 1, 1}};
    double t0 = lp_seconds();
    lp_tensor_file *f;
    if (lp_wan_vae_random_weights(&cfg, 1, &f) != LP_OK) return fail("random weights");
    int64_t params = 0;
    for (size_t i = 0; i < lp_tensor_file_count(f); i++) params += lp_tensor_numel(lp_tensor_file_at(f, i));
    lp_wan_vae *m;
    if (lp_wan_vae_load(f, "", &m) != LP_OK) return fail("load");
    lp_tensor_file_close(f); /* the model keeps its own f32 copies */
    double t_load = lp_seconds() - t0;

    lp_backend *be;
    if (lp_backend_create(backend, threads, &be) != LP_OK) return fail("backend");
    lp_backend *owned = be, prof_be;
    if (profile) {
        prof_be = op_profile_wrap(be);
        be = &prof_be;
    }
    lp_wan_vae_encoder *e;
    lp_wan_vae_decoder *d;
    if (lp_wan_vae_encoder_open(m, H, W, be, &e) != LP_OK) return fail("encoder");
    if (lp_wan_vae_decoder_open(m, H, W, 1, be, &d) != LP_OK) return fail("decoder");
    int sc = lp_wan_vae_scale(m), frames = 1 + 4 * (latents - 1);
    size_t fs = (size_t)3 * H * W, ls = (size_t)cfg.z_dim * (H / sc) * (W / sc);
    float *px = malloc(5 * fs * sizeof *px), *lat = malloc((size_t)(latents > 2 ? latents : 2) * ls * sizeof *lat);
    float *out = malloc(8 * fs * sizeof *out);
    if (!px || !lat || !out) {
        fprintf(stderr, "bench_wan_vae: out of memory for %dx%d frames\n", W, H);
        return 1;
    }

    /* warm-up (weight upload, scratch, plans): 5 frames -> 2 latents -> 5
     * frames, then a fresh clip */
    run_stats enc = {0}, dec = {0};
    int got;
    fill_frames(px, 5 * fs, 0);
    t0 = lp_seconds();
    if (lp_wan_vae_encode(e, px, 5, lat, &got) != LP_OK) return fail("encode (warm-up)");
    account(be, &enc, t0);
    t0 = lp_seconds();
    if (lp_wan_vae_decode(d, lat, 2, out, &got) != LP_OK) return fail("decode (warm-up)");
    account(be, &dec, t0);
    double warm_enc = enc.seconds, warm_dec = dec.seconds;
    if (lp_wan_vae_encoder_reset(e) != LP_OK || lp_wan_vae_decoder_reset(d) != LP_OK) return fail("reset");
    enc.seconds = dec.seconds = 0;
    op_profile_reset();

    /* the clip: frames made between calls, outside the timing */
    int nlat = 0;
    for (int pos = 0; pos < frames;) {
        int n = pos ? 4 : 1;
        fill_frames(px, (size_t)n * fs, 1 + (uint32_t)pos);
        t0 = lp_seconds();
        if (lp_wan_vae_encode(e, px, n, lat + (size_t)nlat * ls, &got) != LP_OK) return fail("encode");
        account(be, &enc, t0);
        nlat += got;
        pos += n;
    }
    if (nlat != latents) {
        fprintf(stderr, "bench_wan_vae: %d frames gave %d latents, not %d\n", frames, nlat, latents);
        return 1;
    }
    if (profile) op_profile_print("Wan VAE encode", "frame", frames);
    int nout = 0;
    for (int i = 0; i < latents; i++) {
        t0 = lp_seconds();
        if (lp_wan_vae_decode(d, lat + (size_t)i * ls, 1, out, &got) != LP_OK) return fail("decode");
        account(be, &dec, t0);
        nout += got;
    }
    if (nout != frames) {
        fprintf(stderr, "bench_wan_vae: %d latents gave %d frames, not %d\n", latents, nout, frames);
        return 1;
    }
    if (profile) op_profile_print("Wan VAE decode", "frame", frames);

    printf("wan_vae dim %d (%.1fM parameters, random; built and loaded in %.1f s) %dx%d on %s (%d CPU threads): "
           "%d frames <-> %d latents; warm-up %.0f ms encode, %.0f ms decode\n",
           dim, params * 1e-6, t_load, W, H, be->name, lp_pool_size(be->pool), frames, latents, 1e3 * warm_enc,
           1e3 * warm_dec);
    printf("| direction | frames | total ms | ms/frame | FPS | peak device MiB | session MiB |\n"
           "|---|---|---|---|---|---|---|\n");
    print_row("encode", frames, &enc, lp_wan_vae_encoder_bytes(e));
    print_row("decode", frames, &dec, lp_wan_vae_decoder_bytes(d));
    free(px);
    free(lat);
    free(out);
    lp_wan_vae_encoder_close(e);
    lp_wan_vae_decoder_close(d);
    lp_wan_vae_free(m);
    lp_backend_destroy(owned);
    return 0;
}
