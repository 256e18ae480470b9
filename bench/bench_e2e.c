/* End-to-end benchmark of the session API (no video files: frames are made
 * procedurally so that it runs where FFmpeg is absent): TAEHV encode, mask,
 * DiT loop, TAEHV decode for N frames at W×H, with the random-weight model at
 * the published sizes (or the small demonstration model), on any backend.
 *
 *   bench_e2e [--backend cuda] [--frames 96] [--size 832x480] [--small] [--float]
 *
 * Frames are pushed and pulled as packed RGB bytes (rgb24_frames, what a
 * video application has), or as planar floats with --float.
 *
 * Two clips: "static" (a fixed textured background with a small square
 * moving across it, like a surveillance camera) and "moving" (the whole
 * texture panning). For each clip and strategy (none, lipar) it prints the
 * FPS over the frames after the first chunk (from the end of its edit to the
 * last frame pulled), the kept fraction, and the time
 * per stage. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../include/lipar.h"
#include "../src/base/clock.h"
#include "../src/io/video.h"

/* A texture [3][h][tw] wide enough to pan over for the whole clip. */
static float *make_texture(int w, int h, int tw) {
    float *tex = malloc((size_t)3 * h * tw * sizeof *tex);
    if (!tex) return NULL;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < tw; x++)
                tex[((size_t)c * h + y) * tw + x] = 0.5f +
                    0.2f * sinf(0.05f * (float)x + 1.3f * (float)c) * cosf(0.07f * (float)y) +
                    0.1f * sinf(0.31f * (float)(x + 2 * y));
    (void)w;
    return tex;
}

/* frame t of clip kind (0 static, 1 moving) into rgb [3, h, w] */
static void make_frame(const float *tex, int tw, int kind, int t, int w, int h, float *rgb) {
    int shift = kind ? 6 * t : 0, sx = (t * 8) % w, sy = h / 3;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < h; y++) {
            float *row = rgb + ((size_t)c * h + y) * w;
            memcpy(row, tex + ((size_t)c * h + y) * tw + shift, (size_t)w * sizeof *row);
            if (!kind && y >= sy && y < sy + h / 6) /* a square moving across a static scene */
                for (int x = sx; x < sx + w / 8 && x < w; x++) row[x] = c == 0 ? 0.9f : 0.2f;
        }
}

/* Pulls every ready frame (into rgb or bytes); returns how many. */
static int pull_ready(lipar_session *s, int floats, float *rgb, uint8_t *bytes) {
    int n = 0;
    for (int got = 1; got; n += got)
        if ((floats ? lipar_session_pull(s, rgb, &got) : lipar_session_pull_rgb24(s, bytes, &got)) != LIPAR_OK) break;
    return n;
}

int main(int argc, char **argv) {
    const char *backend = "cpu";
    int frames = 96, w = 832, h = 480, small = 0, floats = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc) backend = argv[++i];
        else if (!strcmp(argv[i], "--frames") && i + 1 < argc) frames = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) sscanf(argv[++i], "%dx%d", &w, &h);
        else if (!strcmp(argv[i], "--small")) small = 1;
        else if (!strcmp(argv[i], "--float")) floats = 1;
        else {
            fprintf(stderr, "usage: bench_e2e [--backend cpu|cuda] [--frames N] [--size WxH] [--small] [--float]\n");
            return 2;
        }
    }
    lipar_model_options mo;
    lipar_model_options_default(&mo);
    mo.backend = backend;
    mo.demo_full_size = !small;
    lipar_model *m;
    double t0 = lp_seconds();
    if (lipar_model_load(&mo, &m) != LIPAR_OK) {
        fprintf(stderr, "bench_e2e: %s\n", lipar_last_error());
        return 1;
    }
    printf("model: %s (%.1f s to build), backend %s, %d frames at %dx%d as %s\n", lipar_model_describe(m),
           lp_seconds() - t0, backend, frames, w, h, floats ? "planar floats" : "packed bytes");
    size_t px = (size_t)w * h;
    float *rgb = malloc(3 * px * sizeof *rgb);
    uint8_t *bytes = malloc(3 * px);
    int tw = w + 6 * frames;
    float *tex = make_texture(w, h, tw);
    if (!rgb || !bytes || !tex) {
        fprintf(stderr, "bench_e2e: out of memory\n");
        return 1;
    }
    printf("| clip | strategy | kept | FPS | encode ms/chunk | mask | DiT | decode | peak device GB |\n"
           "|---|---|---|---|---|---|---|---|---|\n");
    static const char *const clips[] = {"static", "moving"}, *const strategies[] = {"none", "lipar"};
    for (int clip = 0; clip < 2; clip++)
        for (int si = 0; si < 2; si++) {
            lipar_session_options so;
            lipar_session_options_default(&so);
            so.width = w;
            so.height = h;
            so.strategy = strategies[si];
            so.prompt = "three corgi puppies sharing a meal";
            so.rgb24_frames = !floats;
            lipar_session *s;
            if (lipar_session_open(m, &so, &s) != LIPAR_OK) {
                fprintf(stderr, "bench_e2e: %s\n", lipar_last_error());
                return 1;
            }
            double start = 0;
            int pulled = 0, timed_from = 0;
            for (int t = 0; t < frames; t++) {
                make_frame(tex, tw, clip, t, w, h, rgb);
                if (!floats) lp_video_planar_to_rgb24(rgb, w, h, bytes, NULL);
                if ((floats ? lipar_session_push(s, rgb) : lipar_session_push_rgb24(s, bytes)) != LIPAR_OK) {
                    fprintf(stderr, "bench_e2e: %s\n", lipar_last_error());
                    return 1;
                }
                pulled += pull_ready(s, floats, rgb, bytes);
                if (!start && lipar_session_chunks(s) > 0) { /* timed from the end of chunk 0's edit */
                    lipar_chunk_stats first;
                    lipar_session_chunk_stats(s, 0, &first);
                    start = lp_seconds();
                    timed_from = first.frames;
                }
            }
            lipar_session_finish(s);
            pulled += pull_ready(s, floats, rgb, bytes); /* the last chunks' frames */
            double sec = lp_seconds() - start;
            int n = lipar_session_chunks(s);
            double kept = 0, st[4] = {0};
            for (int i = 1; i < n; i++) {
                lipar_chunk_stats cs;
                lipar_session_chunk_stats(s, i, &cs);
                kept += cs.kept_fraction;
                st[0] += cs.seconds_encode;
                st[1] += cs.seconds_mask;
                st[2] += cs.seconds_dit;
                st[3] += cs.seconds_decode;
            }
            int k = n > 1 ? n - 1 : 1;
            printf("| %s | %s | %.3f | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f |\n", clips[clip], strategies[si],
                   kept / k, (pulled - timed_from) / sec, 1e3 * st[0] / k, 1e3 * st[1] / k, 1e3 * st[2] / k,
                   1e3 * st[3] / k, (double)lipar_session_peak_device_memory(s) / 1e9);
            lipar_session_close(s);
        }
    free(rgb);
    free(bytes);
    free(tex);
    lipar_model_free(m);
    return 0;
}
