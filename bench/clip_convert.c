/* Writes the first N frames of a video exactly as `lipar edit` reads them
 * (decoded, resampled to --fps, resized to --size with --fit) to a .y4m or
 * .rgb file, e.g. to take real clips to a machine without FFmpeg
 * (bench/make_gpu_clips.sh).
 *
 *   clip_convert IN OUT.y4m [--frames 96] [--size 832x480] [--fps 16] [--fit stretch|crop|pad]
 *
 * Fails if the video has fewer than --frames output frames. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/io/video.h"

static int fail(void) {
    fprintf(stderr, "clip_convert: %s\n", lp_last_error());
    return 1;
}

int main(int argc, char **argv) {
    lp_video_reader_opts o;
    lp_video_reader_opts_default(&o);
    int frames = 96;
    const char *in = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "--frames") && v) frames = atoi(argv[++i]);
        else if (!strcmp(k, "--size") && v && sscanf(argv[++i], "%dx%d", &o.width, &o.height) == 2) continue;
        else if (!strcmp(k, "--fps") && v) o.fps = atof(argv[++i]);
        else if (!strcmp(k, "--fit") && v) {
            i++;
            o.fit = !strcmp(v, "crop") ? LP_VIDEO_FIT_CROP : !strcmp(v, "pad") ? LP_VIDEO_FIT_PAD : LP_VIDEO_FIT_STRETCH;
        } else if (k[0] != '-' && !in) in = k;
        else if (k[0] != '-' && !out) out = k;
        else {
            fprintf(stderr, "usage: clip_convert IN OUT.y4m|OUT.rgb [--frames N] [--size WxH] [--fps X] "
                            "[--fit stretch|crop|pad]\n");
            return 2;
        }
    }
    if (!in || !out || frames < 1) {
        fprintf(stderr, "usage: clip_convert IN OUT.y4m|OUT.rgb [--frames N] [--size WxH] [--fps X] [--fit ...]\n");
        return 2;
    }
    lp_video_reader *r;
    lp_video_writer *w;
    if (lp_video_reader_open(in, &o, &r) != LP_OK) return fail();
    if (lp_video_writer_open(out, o.width, o.height, o.fps, NULL, &w) != LP_OK) {
        lp_video_reader_close(r);
        return fail();
    }
    uint8_t *rgb = malloc((size_t)o.width * o.height * 3);
    int n = 0, rc = rgb ? 0 : 1;
    if (!rgb) fprintf(stderr, "clip_convert: out of memory\n");
    while (!rc && n < frames) {
        bool eos;
        if (lp_video_reader_next_rgb24(r, rgb, &eos) != LP_OK) {
            rc = fail();
            break;
        }
        if (eos) break;
        if (lp_video_writer_push_rgb24(w, rgb) != LP_OK) {
            rc = fail();
            break;
        }
        n++;
    }
    if (lp_video_writer_close(w) != LP_OK && !rc) rc = fail();
    lp_video_reader_close(r);
    free(rgb);
    if (!rc && n < frames) { /* the file stays, with the frames there were */
        fprintf(stderr, "clip_convert: %s has %d frames at %g fps, fewer than %d\n", in, n, o.fps, frames);
        rc = 1;
    }
    if (!rc) printf("%s: %d frames %dx%d at %g fps from %s\n", out, n, o.width, o.height, o.fps, in);
    return rc;
}
