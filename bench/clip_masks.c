/* The streaming keep-masks of a real clip, as a session computes them, saved
 * in the layout of the golden lipar_mask files (out.keep U8 [latent frames,
 * H/16, W/16], 1 = keep) for `bench_dit loop --keep-file`.
 *
 *   clip_masks CLIP OUT.safetensors [--frames 96] [--size 832x480] [--fps 16] [--full]
 *              [--backend cpu|cuda] [--tau X] [--tau2 X]
 *
 * The clip is read as `lipar edit` reads it and edited with strategy lipar by
 * the demonstration model: the small one by default, the full-size one with
 * --full. Both have the same pooling TAEHV encoder (an 8x8x4 block mean of
 * the colours: its widths only add zero channels), so their latents agree to
 * float rounding (7e-7 on real frames) and so do the masks; the small one runs
 * in a minute or two on a CPU. Prints the
 * kept fraction over all latent frames and over the chunks after the first
 * (those bench_dit times). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../include/lipar.h"
#include "../src/io/video.h"

#define CHUNK_LATENTS 3

/* Writes one U8 tensor "out.keep" [t, h, w] with string metadata. */
static int write_mask_file(const char *path, const uint8_t *keep, int t, int h, int w, const char *meta_json) {
    size_t bytes = (size_t)t * h * w;
    char header[8192];
    int n = snprintf(header, sizeof header,
                     "{\"__metadata__\": {%s}, \"out.keep\": {\"dtype\": \"U8\", \"shape\": [%d, %d, %d], "
                     "\"data_offsets\": [0, %zu]}}",
                     meta_json, t, h, w, bytes);
    if (n < 0 || (size_t)n + 8 >= sizeof header) return 0;
    while (n % 8) header[n++] = ' '; /* the data starts 8-byte aligned */
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)n >> (8 * i));
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(len, 1, 8, f) == 8 && fwrite(header, 1, (size_t)n, f) == (size_t)n &&
             fwrite(keep, 1, bytes, f) == bytes;
    if (f && fclose(f) != 0) ok = 0;
    return ok;
}

/* Copies the masks of the chunks edited since the first `saved` into keep (a
 * session keeps a chunk's mask for a few chunks only); returns the new count. */
static int copy_masks(const lipar_session *s, int saved, uint8_t *keep, int hw) {
    for (; saved < lipar_session_chunks(s); saved++)
        for (int j = 0; j < CHUNK_LATENTS; j++)
            memcpy(keep + ((size_t)saved * CHUNK_LATENTS + j) * hw, lipar_session_keep_mask(s, saved, j), (size_t)hw);
    return saved;
}

static int usage(void) {
    fprintf(stderr, "usage: clip_masks CLIP OUT.safetensors [--frames N] [--size WxH] [--fps X] [--full] "
                    "[--backend cpu|cuda] [--tau X] [--tau2 X]\n");
    return 2;
}

int main(int argc, char **argv) {
    lipar_model_options mo;
    lipar_session_options so;
    lipar_model_options_default(&mo);
    lipar_session_options_default(&so);
    so.strategy = "lipar";
    so.prompt = "a watercolor painting";
    lp_video_reader_opts ro;
    lp_video_reader_opts_default(&ro);
    int frames = 96;
    const char *clip = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "--full")) mo.demo_full_size = 1;
        else if (!v && k[0] == '-') return usage();
        else if (!strcmp(k, "--frames")) frames = atoi(argv[++i]);
        else if (!strcmp(k, "--size")) {
            if (sscanf(argv[++i], "%dx%d", &so.width, &so.height) != 2) return usage();
        } else if (!strcmp(k, "--fps")) ro.fps = atof(argv[++i]);
        else if (!strcmp(k, "--backend")) mo.backend = argv[++i];
        else if (!strcmp(k, "--tau")) so.tau = (float)atof(argv[++i]);
        else if (!strcmp(k, "--tau2")) so.tau2 = (float)atof(argv[++i]);
        else if (k[0] != '-' && !clip) clip = k;
        else if (k[0] != '-' && !out) out = k;
        else return usage();
    }
    if (!clip || !out || frames < 12) return usage();
    ro.width = so.width, ro.height = so.height;
    int pw = so.width / 16, ph = so.height / 16, hw = pw * ph;
    int max_latents = (frames + 11) / 12 * CHUNK_LATENTS;
    lp_video_reader *r = NULL;
    lipar_model *m = NULL;
    lipar_session *s = NULL;
    float *rgb = malloc((size_t)3 * so.width * so.height * sizeof *rgb);
    uint8_t *keep = calloc((size_t)max_latents, (size_t)hw);
    int rc = 1, n = 0, saved = 0; /* saved: chunks whose masks are in keep */
    if (!rgb || !keep) {
        fprintf(stderr, "clip_masks: out of memory\n");
        goto done;
    }
    if (lp_video_reader_open(clip, &ro, &r) != LP_OK) {
        fprintf(stderr, "clip_masks: %s\n", lp_last_error());
        goto done;
    }
    if (lipar_model_load(&mo, &m) != LIPAR_OK || lipar_session_open(m, &so, &s) != LIPAR_OK) {
        fprintf(stderr, "clip_masks: %s\n", lipar_last_error());
        goto done;
    }
    while (n < frames) {
        bool eos;
        if (lp_video_reader_next(r, rgb, &eos) != LP_OK) {
            fprintf(stderr, "clip_masks: %s\n", lp_last_error());
            goto done;
        }
        if (eos) break;
        if (lipar_session_push(s, rgb) != LIPAR_OK) {
            fprintf(stderr, "clip_masks: %s\n", lipar_last_error());
            goto done;
        }
        n++;
        saved = copy_masks(s, saved, keep, hw);
        int got;
        do lipar_session_pull(s, rgb, &got); /* the edited frames are not needed */
        while (got);
    }
    if (lipar_session_finish(s) != LIPAR_OK) {
        fprintf(stderr, "clip_masks: %s\n", lipar_last_error());
        goto done;
    }
    saved = copy_masks(s, saved, keep, hw);
    int T = saved * CHUNK_LATENTS;
    double all = 0, later = 0;
    char per_frame[4096] = "[";
    for (int t = 0; t < T; t++) {
        int kept = 0;
        for (int i = 0; i < hw; i++) kept += keep[(size_t)t * hw + i] != 0;
        double f = (double)kept / hw;
        all += f;
        if (t >= CHUNK_LATENTS) later += f;
        size_t len = strlen(per_frame);
        snprintf(per_frame + len, sizeof per_frame - len, "%s%.4f", t ? ", " : "", f);
    }
    strncat(per_frame, "]", sizeof per_frame - strlen(per_frame) - 1);
    all /= T;
    later = T > CHUNK_LATENTS ? later / (T - CHUNK_LATENTS) : 1.0;
    char meta[6144];
    snprintf(meta, sizeof meta,
             "\"kind\": \"keep_mask\", \"note\": \"the streaming keep-mask of a lipar session on a real clip "
             "(bench/clip_masks.c); out.keep is [latent frames, H/16, W/16], 1 = keep\", \"clip\": \"%s\", "
             "\"frames\": \"%d\", \"latent_h\": \"%d\", \"latent_w\": \"%d\", \"fps\": \"%g\", \"tau\": \"%g\", "
             "\"tau2\": \"%g\", \"kept_fraction\": \"%.6f\", \"kept_after_first_chunk\": \"%.6f\", "
             "\"kept_per_frame\": \"%s\", \"model\": \"%s\"",
             strrchr(clip, '/') ? strrchr(clip, '/') + 1 : clip, T, so.height / 8, so.width / 8, ro.fps, so.tau,
             so.tau2, all, later, per_frame, lipar_model_describe(m));
    if (!write_mask_file(out, keep, T, ph, pw, meta)) {
        fprintf(stderr, "clip_masks: cannot write %s\n", out);
        goto done;
    }
    printf("%s: %d frames -> %d latent frames [%d, %d], kept %.3f overall, %.3f after the first chunk\n", out, n, T,
           ph, pw, all, later);
    rc = 0;
done:
    lipar_session_close(s);
    lipar_model_free(m);
    lp_video_reader_close(r);
    free(rgb);
    free(keep);
    return rc;
}
