/* video.h in a build without FFmpeg (VIDEO=0, e.g. for the GPU machines):
 * y4m (4:2:0) and raw rgb24 only, through rawvideo.c, which does not resize.
 * Anything else is refused with an error that says so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rawvideo.h"
#include "video.h"

#define ONLY_RAW "this build reads and writes only .y4m (4:2:0) and raw .rgb video (built without FFmpeg, VIDEO=0)"

struct lp_video_reader {
    lp_rawvideo_reader *raw;
};

struct lp_video_writer {
    lp_rawvideo_writer *raw;
};

/* False for a readable file that does not start with the y4m signature (an
 * .mp4, say); true otherwise (a missing file fails later, with its reason). */
static bool may_be_y4m(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return true;
    char head[10];
    bool y4m = fread(head, 1, sizeof head, f) == sizeof head && !memcmp(head, "YUV4MPEG2 ", sizeof head);
    fclose(f);
    return y4m;
}

lp_status lp_video_reader_open(const char *path, const lp_video_reader_opts *opts, lp_video_reader **out) {
    *out = NULL;
    lp_rawvideo_format fmt;
    if (path && *path && !(opts && opts->input_format) && !lp_rawvideo_format_of(path, &fmt) && !may_be_y4m(path))
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: not a y4m file: %s", path, ONLY_RAW);
    lp_video_reader *r = calloc(1, sizeof *r);
    if (!r) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", path);
    lp_status s = lp_rawvideo_reader_open(path, opts, &r->raw);
    if (s != LP_OK) {
        lp_video_reader_close(r);
        return s;
    }
    *out = r;
    return LP_OK;
}

const lp_video_info *lp_video_reader_info(const lp_video_reader *r) { return lp_rawvideo_reader_info(r->raw); }

lp_status lp_video_reader_next_rgb24(lp_video_reader *r, uint8_t *dst, bool *eos) {
    return lp_rawvideo_reader_next_rgb24(r->raw, dst, eos);
}

lp_status lp_video_reader_next(lp_video_reader *r, float *dst, bool *eos) {
    return lp_rawvideo_reader_next(r->raw, dst, eos);
}

int64_t lp_video_reader_source_index(const lp_video_reader *r) { return lp_rawvideo_reader_source_index(r->raw); }

void lp_video_reader_close(lp_video_reader *r) {
    if (!r) return;
    lp_rawvideo_reader_close(r->raw);
    free(r);
}

/* opts->format of the writer: "y4m", "rgb" or "rgb24". */
static bool format_named(const char *name, lp_rawvideo_format *fmt) {
    if (!strcasecmp(name, "y4m")) *fmt = LP_RAWVIDEO_Y4M;
    else if (!strcasecmp(name, "rgb") || !strcasecmp(name, "rgb24")) *fmt = LP_RAWVIDEO_RGB24;
    else return false;
    return true;
}

lp_status lp_video_writer_open(const char *path, int width, int height, double fps,
                               const lp_video_writer_opts *opts, lp_video_writer **out) {
    *out = NULL;
    if (!path || !*path) return lp_fail(LP_ERR_ARG, "video writer: empty path");
    lp_rawvideo_format fmt;
    const char *name = opts ? opts->format : NULL;
    if (!(name ? format_named(name, &fmt) : lp_rawvideo_format_of(path, &fmt))) {
        const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
        if (!name && (!dot || (slash && dot < slash) || !dot[1]))
            return lp_fail(LP_ERR_ARG, "%s: no file extension to tell the format (use .y4m or .rgb)", path);
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: %s", path, ONLY_RAW);
    }
    lp_video_writer *w = calloc(1, sizeof *w);
    if (!w) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", path);
    lp_status s = lp_rawvideo_writer_open(path, fmt, width, height, fps, opts ? opts->pool : NULL, &w->raw);
    if (s != LP_OK) {
        lp_video_writer_close(w);
        return s;
    }
    *out = w;
    return LP_OK;
}

lp_status lp_video_writer_push(lp_video_writer *w, const float *rgb) { return lp_rawvideo_writer_push(w->raw, rgb); }

lp_status lp_video_writer_push_rgb24(lp_video_writer *w, const uint8_t *rgb) {
    return lp_rawvideo_writer_push_rgb24(w->raw, rgb);
}

const char *lp_video_writer_codec(const lp_video_writer *w) {
    (void)w;
    return "rawvideo";
}

lp_status lp_video_writer_close(lp_video_writer *w) {
    if (!w) return LP_OK;
    lp_status s = lp_rawvideo_writer_close(w->raw);
    free(w);
    return s;
}
