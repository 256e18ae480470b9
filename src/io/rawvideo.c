/* y4m and raw rgb24 without FFmpeg; contracts in rawvideo.h. Also the helpers
 * of video.h that both of its implementations share (options, size check,
 * rgb24 <-> planar). */
#include "rawvideo.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "../base/pixels.h"

#define Y4M_SIGNATURE "YUV4MPEG2 "
#define Y4M_MAX_LINE 4096

/* ---- helpers of video.h ------------------------------------------------ */

void lp_video_reader_opts_default(lp_video_reader_opts *opts) {
    memset(opts, 0, sizeof *opts);
    opts->width = LP_VIDEO_DEFAULT_WIDTH;
    opts->height = LP_VIDEO_DEFAULT_HEIGHT;
    opts->fps = LP_VIDEO_DEFAULT_FPS;
    opts->fit = LP_VIDEO_FIT_STRETCH;
}

lp_status lp_video_check_size(int width, int height) {
    if (width <= 0 || height <= 0 || width % 16 || height % 16)
        return lp_fail(LP_ERR_ARG, "video size %dx%d: width and height must be positive multiples of 16",
                       width, height);
    return LP_OK;
}

/* ---- conversions --------------------------------------------------------
 * Frames are split by rows over an lp_pool (rgb_to_yuv420_rows: by chroma
 * rows). Every value comes from its per-pixel formula in the same order of
 * operations (the lookup tables hold the very terms the formula computes for
 * each byte), so the results depend neither on the split nor on the tables. */

/* BT.601 limited range: Y in [16, 235], Cb/Cr in [16, 240] around 128. */
#define KR 0.299f
#define KB 0.114f
#define KG (1.0f - KR - KB)

static inline uint8_t clamp_byte(float v) { return v <= 0.0f ? 0 : v >= 255.0f ? 255 : (uint8_t)(v + 0.5f); }

/* What a conversion works on: frames of width x height as rgb24, planar
 * floats [3, H, W] (planes plane apart), or 4:2:0 planes y, u, v (chroma rows
 * cw wide); the YUV -> RGB scale and offset of Y and weights of chroma. */
typedef struct {
    size_t width, plane, cw;
    const uint8_t *rgb;
    uint8_t *rgb_out;
    const float *planar;
    float *planar_out;
    uint8_t *y, *u, *v;
    float unit[256]; /* byte / 255 */
    /* YUV -> RGB: the luma term of each Y, the chroma terms of each U and V */
    float luma[256], rv[256], gu[256], gv[256], bu[256];
} conv_job;

static void fill_unit(conv_job *j) {
    for (int b = 0; b < 256; b++) j->unit[b] = lp_byte_to_unit((uint8_t)b);
}

static void rgb24_to_planar_rows(void *ctx, int64_t y0, int64_t y1) {
    const conv_job *j = ctx;
    for (size_t i = (size_t)y0 * j->width; i < (size_t)y1 * j->width; i++)
        for (size_t c = 0; c < 3; c++) j->planar_out[c * j->plane + i] = j->unit[j->rgb[3 * i + c]];
}

static void planar_to_rgb24_rows(void *ctx, int64_t y0, int64_t y1) {
    const conv_job *j = ctx;
    for (size_t i = (size_t)y0 * j->width; i < (size_t)y1 * j->width; i++)
        for (size_t c = 0; c < 3; c++) j->rgb_out[3 * i + c] = lp_unit_to_byte(j->planar[c * j->plane + i]);
}

/* 4:2:0 -> rgb24 or planar floats (planar_out set); each chroma sample serves
 * its 2x2 block. */
static void yuv420_rows(void *ctx, int64_t y0, int64_t y1) {
    const conv_job *j = ctx;
    for (size_t y = (size_t)y0; y < (size_t)y1; y++) {
        const uint8_t *yr = j->y + y * j->width, *ur = j->u + y / 2 * j->cw, *vr = j->v + y / 2 * j->cw;
        for (size_t x = 0; x < j->width; x++) {
            uint8_t U = ur[x / 2], V = vr[x / 2];
            float l = j->luma[yr[x]];
            uint8_t px[3] = {clamp_byte(l + j->rv[V]), clamp_byte(l - j->gu[U] - j->gv[V]), clamp_byte(l + j->bu[U])};
            size_t i = y * j->width + x;
            if (j->planar_out)
                for (size_t c = 0; c < 3; c++) j->planar_out[c * j->plane + i] = j->unit[px[c]];
            else
                for (size_t c = 0; c < 3; c++) j->rgb_out[3 * i + c] = px[c];
        }
    }
}

/* rgb24 -> BT.601 limited-range 4:2:0, chroma from the mean of each 2x2
 * block; chroma row y is luma rows 2y and 2y + 1. From planar floats when
 * planar is set: each row pair goes to rgb24 in rgb_out first. */
static void rgb_to_yuv420_rows(void *ctx, int64_t y0, int64_t y1) {
    const conv_job *j = ctx;
    const float ys = 219.0f / 255.0f, cs = 224.0f / 255.0f;
    size_t W = j->width;
    for (size_t y = (size_t)y0; y < (size_t)y1; y++) {
        if (j->planar) planar_to_rgb24_rows(ctx, 2 * y, 2 * y + 2);
        const uint8_t *rgb = j->planar ? j->rgb_out : j->rgb;
        for (size_t i = 2 * y * W; i < (2 * y + 2) * W; i++)
            j->y[i] = clamp_byte(16.0f + ys * (KR * rgb[3 * i] + KG * rgb[3 * i + 1] + KB * rgb[3 * i + 2]));
        for (size_t x = 0; x < W / 2; x++) {
            float m[3];
            for (int c = 0; c < 3; c++) {
                const uint8_t *p = rgb + (2 * y * W + 2 * x) * 3 + c;
                m[c] = 0.25f * (float)(p[0] + p[3] + p[W * 3] + p[W * 3 + 3]);
            }
            float l = KR * m[0] + KG * m[1] + KB * m[2];
            j->u[y * j->cw + x] = clamp_byte(128.0f + cs * (m[2] - l) / (2.0f * (1.0f - KB)));
            j->v[y * j->cw + x] = clamp_byte(128.0f + cs * (m[0] - l) / (2.0f * (1.0f - KR)));
        }
    }
}

void lp_video_rgb24_to_planar(const uint8_t *rgb, int width, int height, float *dst, lp_pool *pool) {
    conv_job j = {.width = (size_t)width, .plane = (size_t)width * height, .rgb = rgb, .planar_out = dst};
    fill_unit(&j);
    lp_parallel_for(pool, height, rgb24_to_planar_rows, &j);
}

void lp_video_planar_to_rgb24(const float *src, int width, int height, uint8_t *rgb, lp_pool *pool) {
    conv_job j = {.width = (size_t)width, .plane = (size_t)width * height, .planar = src, .rgb_out = rgb};
    lp_parallel_for(pool, height, planar_to_rgb24_rows, &j);
}

/* ---- shared ------------------------------------------------------------ */

bool lp_rawvideo_format_of(const char *path, lp_rawvideo_format *fmt) {
    if (!strcmp(path, "-")) {
        *fmt = LP_RAWVIDEO_Y4M;
        return true;
    }
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash)) return false;
    if (!strcasecmp(dot, ".y4m")) *fmt = LP_RAWVIDEO_Y4M;
    else if (!strcasecmp(dot, ".rgb") || !strcasecmp(dot, ".rgb24")) *fmt = LP_RAWVIDEO_RGB24;
    else return false;
    return true;
}

static bool valid_fps(double fps) { return fps > 0 && fps <= 1000; }

/* The continued-fraction approximation of x > 0 with numerator and
 * denominator at most max (16 -> 16/1, 29.97 -> 2997/100). */
static void to_rational(double x, int64_t max, int64_t *num, int64_t *den) {
    int64_t h0 = 0, h1 = 1, k0 = 1, k1 = 0; /* convergents h/k, two back and one back */
    double v = x;
    for (int i = 0; i < 40 && v < (double)max; i++) {
        int64_t a = (int64_t)floor(v);
        int64_t h2 = a * h1 + h0, k2 = a * k1 + k0;
        if (h2 > max || k2 > max) break;
        h0 = h1, h1 = h2, k0 = k1, k1 = k2;
        double frac = v - (double)a;
        if (frac < 1e-9) break;
        v = 1.0 / frac;
    }
    if (k1 == 0) h1 = max, k1 = 1; /* x above max */
    *num = h1, *den = k1;
}

/* ---- reader ------------------------------------------------------------ */

struct lp_rawvideo_reader {
    char *path;
    FILE *f;          /* stdin for "-" (not closed) */
    bool y4m, full_range;
    int width, height;
    int cw, ch;       /* chroma plane size */
    size_t frame_bytes;
    uint8_t *frame;   /* the last source frame read: Y, U, V planes or rgb24 */
    int64_t frame_index; /* its index; frames read so far - 1 */
    lp_pool *pool;    /* conversions; NULL = on the calling thread */
    /* output frame k shows source frame floor((2k·a + b − 1) / 2b), with
     * a / b = source rate / output rate (see next_source) */
    int64_t ratio_a, ratio_b;
    int64_t out_index, delivered_index;
    bool done;
    lp_status error; /* sticky: set by the first failure */
    lp_video_info info;
};

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b, b = t;
    }
    return a;
}

/* ceil(k·a/b + 1/2) − 1 = floor((2k·a + b − 1) / (2b)): the source frame
 * nearest to output time k / fps, the earlier one on a tie (video.h). */
static int64_t next_source(const lp_rawvideo_reader *r, int64_t k) {
    unsigned __int128 n = (unsigned __int128)(2 * (uint64_t)k) * (uint64_t)r->ratio_a + (uint64_t)r->ratio_b - 1;
    return (int64_t)(n / (2 * (unsigned __int128)r->ratio_b));
}

/* One header token after its letter, e.g. "832" of "W832". */
static lp_status parse_ratio(const lp_rawvideo_reader *r, const char *tok, int64_t *num, int64_t *den) {
    char *end;
    long long n = strtoll(tok + 1, &end, 10), d = 1;
    if (*end == ':') d = strtoll(end + 1, &end, 10);
    if (*end || n <= 0 || d <= 0 || n > INT32_MAX || d > INT32_MAX)
        return lp_fail(LP_ERR_FORMAT, "%s: bad y4m header token '%s'", r->path, tok);
    *num = n, *den = d;
    return LP_OK;
}

/* Parses the y4m header line after the signature; sets size, rate, range. */
static lp_status parse_y4m_header(lp_rawvideo_reader *r, char *line, int64_t *rate_num, int64_t *rate_den) {
    int64_t w = 0, h = 0, one;
    const char *colour = "420jpeg";
    *rate_num = *rate_den = 0;
    for (char *save = NULL, *tok = strtok_r(line, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        switch (tok[0]) {
        case 'W': LP_TRY(parse_ratio(r, tok, &w, &one)); break;
        case 'H': LP_TRY(parse_ratio(r, tok, &h, &one)); break;
        case 'F': LP_TRY(parse_ratio(r, tok, rate_num, rate_den)); break;
        case 'C': colour = tok + 1; break;
        case 'X':
            if (!strcmp(tok, "XCOLORRANGE=FULL")) r->full_range = true;
            else if (!strcmp(tok, "XCOLORRANGE=LIMITED")) r->full_range = false;
            break;
        default: break; /* I (interlacing), A (aspect), extensions */
        }
    }
    if (!w || !h || w > 16384 || h > 16384)
        return lp_fail(LP_ERR_FORMAT, "%s: y4m header without a valid frame size (W, H)", r->path);
    if (!*rate_num) return lp_fail(LP_ERR_FORMAT, "%s: y4m header without a frame rate (F)", r->path);
    if (strcmp(colour, "420") && strcmp(colour, "420jpeg") && strcmp(colour, "420mpeg2") &&
        strcmp(colour, "420paldv"))
        return lp_fail(LP_ERR_UNSUPPORTED,
                       "%s: y4m colour space C%s is not supported: only 8-bit 4:2:0 (C420, C420jpeg, C420mpeg2, "
                       "C420paldv)",
                       r->path, colour);
    r->width = (int)w, r->height = (int)h;
    r->cw = (r->width + 1) / 2, r->ch = (r->height + 1) / 2;
    r->frame_bytes = (size_t)r->width * r->height + 2 * (size_t)r->cw * r->ch;
    return LP_OK;
}

/* Reads the signature (already known for "-" or a forced y4m) and the header
 * line; header_bytes: its length including the newline. */
static lp_status read_y4m_header(lp_rawvideo_reader *r, int64_t *rate_num, int64_t *rate_den, size_t *header_bytes) {
    char line[Y4M_MAX_LINE];
    size_t n = 0;
    int c;
    while ((c = getc(r->f)) != EOF && c != '\n' && n + 1 < sizeof line) line[n++] = (char)c;
    line[n] = 0;
    size_t sig = strlen(Y4M_SIGNATURE);
    if (n < sig || memcmp(line, Y4M_SIGNATURE, sig)) {
        if (ferror(r->f)) return lp_fail(LP_ERR_IO, "%s: read error: %s", r->path, strerror(errno));
        return lp_fail(LP_ERR_FORMAT, "%s: not a y4m stream (no YUV4MPEG2 signature)", r->path);
    }
    if (c != '\n') return lp_fail(LP_ERR_FORMAT, "%s: y4m header line unterminated or too long", r->path);
    *header_bytes = n + 1;
    return parse_y4m_header(r, line + sig, rate_num, rate_den);
}

/* Reads the next source frame into r->frame; *got = false at a clean end. */
static lp_status read_frame(lp_rawvideo_reader *r, bool *got) {
    *got = false;
    long long index = (long long)r->frame_index + 1;
    if (r->y4m) {
        char tag[5];
        size_t n = fread(tag, 1, sizeof tag, r->f);
        if (n == 0 && feof(r->f)) return LP_OK;
        if (n != sizeof tag || memcmp(tag, "FRAME", sizeof tag)) {
            if (ferror(r->f)) return lp_fail(LP_ERR_IO, "%s: read error at frame %lld: %s", r->path, index, strerror(errno));
            return lp_fail(LP_ERR_FORMAT, "%s: frame %lld does not start with FRAME", r->path, index);
        }
        int c, len = 0;
        while ((c = getc(r->f)) != EOF && c != '\n' && len < Y4M_MAX_LINE) len++; /* frame parameters */
        if (c != '\n') return lp_fail(LP_ERR_FORMAT, "%s: frame %lld: bad FRAME line", r->path, index);
    }
    size_t n = fread(r->frame, 1, r->frame_bytes, r->f);
    if (n != r->frame_bytes) {
        if (ferror(r->f)) return lp_fail(LP_ERR_IO, "%s: read error at frame %lld: %s", r->path, index, strerror(errno));
        if (n == 0 && !r->y4m) return LP_OK;
        return lp_fail(LP_ERR_FORMAT, "%s: truncated frame %lld (%zu of %zu bytes)", r->path, index, n,
                       r->frame_bytes);
    }
    r->frame_index++;
    *got = true;
    return LP_OK;
}

/* The last source frame read into rgb24 (rgb) or planar floats (planar);
 * y4m: BT.601, each chroma sample serving its 2x2 block. */
static void convert(const lp_rawvideo_reader *r, uint8_t *rgb, float *planar) {
    if (!r->y4m) {
        if (planar) lp_video_rgb24_to_planar(r->frame, r->width, r->height, planar, r->pool);
        else memcpy(rgb, r->frame, r->frame_bytes);
        return;
    }
    size_t plane = (size_t)r->width * r->height;
    conv_job j = {
        .width = (size_t)r->width,
        .plane = plane,
        .cw = (size_t)r->cw,
        .rgb_out = rgb,
        .planar_out = planar,
        .y = r->frame,
        .u = r->frame + plane,
        .v = r->frame + plane + (size_t)r->cw * r->ch,
    };
    /* limited range stretches Y by 255/219 and Cb/Cr by 255/224 */
    float ys = r->full_range ? 1.0f : 255.0f / 219.0f, y0 = r->full_range ? 0.0f : 16.0f;
    float cs = r->full_range ? 1.0f : 255.0f / 224.0f;
    float rv = cs * 2.0f * (1.0f - KR), bu = cs * 2.0f * (1.0f - KB);
    float gu = cs * 2.0f * (1.0f - KB) * KB / KG, gv = cs * 2.0f * (1.0f - KR) * KR / KG;
    for (int b = 0; b < 256; b++) {
        float c = (float)b - 128.0f;
        j.luma[b] = ys * ((float)b - y0);
        j.rv[b] = rv * c, j.gu[b] = gu * c, j.gv[b] = gv * c, j.bu[b] = bu * c;
    }
    fill_unit(&j);
    lp_parallel_for(r->pool, r->height, yuv420_rows, &j);
}

static void fill_info(lp_rawvideo_reader *r, int64_t rate_num, int64_t rate_den, int64_t out_num, int64_t out_den,
                      size_t header_bytes) {
    lp_video_info *in = &r->info;
    in->width = r->width, in->height = r->height;
    in->fps = (double)rate_num / (double)rate_den;
    snprintf(in->codec, sizeof in->codec, "rawvideo");
    in->frame_count = in->output_frames = -1;
    struct stat st;
    if (r->f != stdin && fstat(fileno(r->f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > (off_t)header_bytes)
        in->frame_count = (int64_t)(st.st_size - (off_t)header_bytes) /
                          (int64_t)(r->frame_bytes + (r->y4m ? 6 : 0)); /* "FRAME\n" without parameters */
    if (in->frame_count > 0) {
        in->duration = (double)in->frame_count / in->fps;
        /* floor((N − 1/2)·fps / r) + 1 (video.h) */
        in->output_frames = (int64_t)(((unsigned __int128)(2 * in->frame_count - 1) * (uint64_t)(out_num * rate_den)) /
                                      ((unsigned __int128)(2 * (uint64_t)out_den) * (uint64_t)rate_num)) +
                            1;
    }
    /* a / b = (rate_num / rate_den) / (out_num / out_den) in lowest terms */
    int64_t a = rate_num * out_den, b = rate_den * out_num, g = gcd64(a, b);
    r->ratio_a = a / g, r->ratio_b = b / g;
}

static lp_status open_reader(lp_rawvideo_reader *r, const lp_video_reader_opts *o) {
    bool is_stdin = !strcmp(r->path, "-");
    const char *fmt = o->input_format;
    if (fmt && strcmp(fmt, "y4m") && strcmp(fmt, "rgb24"))
        return lp_fail(LP_ERR_ARG, "%s: unknown input format '%s' (use y4m or rgb24)", r->path, fmt);
    bool raw = fmt && !strcmp(fmt, "rgb24");
    if (raw && (o->raw_width <= 0 || o->raw_height <= 0 || !valid_fps(o->raw_fps)))
        return lp_fail(LP_ERR_ARG, "%s: raw rgb24 input needs its size and fps (got %dx%d at %g fps)", r->path,
                       o->raw_width, o->raw_height, o->raw_fps);
    r->f = is_stdin ? stdin : fopen(r->path, "rb");
    if (!r->f) return lp_fail(LP_ERR_IO, "%s: cannot open: %s", r->path, strerror(errno));
    int64_t rate_num, rate_den, out_num, out_den;
    size_t header_bytes = 0;
    if (raw) {
        r->width = o->raw_width, r->height = o->raw_height;
        r->frame_bytes = (size_t)r->width * r->height * 3;
        to_rational(o->raw_fps, 65535, &rate_num, &rate_den);
    } else {
        r->y4m = true;
        LP_TRY(read_y4m_header(r, &rate_num, &rate_den, &header_bytes));
    }
    if (r->width != o->width || r->height != o->height)
        return lp_fail(LP_ERR_UNSUPPORTED,
                       "%s: frames are %dx%d, not the %dx%d wanted (y4m and raw rgb24 are not resized without "
                       "FFmpeg: ask for their size)",
                       r->path, r->width, r->height, o->width, o->height);
    to_rational(o->fps, 65535, &out_num, &out_den);
    fill_info(r, rate_num, rate_den, out_num, out_den, header_bytes);
    r->pool = o->pool;
    r->frame = malloc(r->frame_bytes);
    if (!r->frame) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", r->path);
    bool got; /* the first frame proves the stream holds one */
    LP_TRY(read_frame(r, &got));
    if (!got) return lp_fail(LP_ERR_FORMAT, "%s: no decodable video frame", r->path);
    return LP_OK;
}

lp_status lp_rawvideo_reader_open(const char *path, const lp_video_reader_opts *opts, lp_rawvideo_reader **out) {
    *out = NULL;
    if (!path || !*path) return lp_fail(LP_ERR_ARG, "video reader: empty path");
    lp_video_reader_opts o;
    if (opts) o = *opts;
    else lp_video_reader_opts_default(&o);
    if (lp_video_check_size(o.width, o.height) != LP_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", lp_last_error());
        return lp_fail(LP_ERR_ARG, "%s: output %s", path, msg);
    }
    if (!valid_fps(o.fps)) return lp_fail(LP_ERR_ARG, "%s: output fps %g is not in (0, 1000]", path, o.fps);
    lp_rawvideo_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        return lp_fail(LP_ERR_NOMEM, "%s: out of memory", path);
    }
    r->frame_index = r->delivered_index = -1;
    lp_status s = open_reader(r, &o);
    if (s != LP_OK) {
        lp_rawvideo_reader_close(r);
        return s;
    }
    *out = r;
    return LP_OK;
}

const lp_video_info *lp_rawvideo_reader_info(const lp_rawvideo_reader *r) { return &r->info; }

int64_t lp_rawvideo_reader_source_index(const lp_rawvideo_reader *r) { return r->delivered_index; }

/* Reads up to the source frame of the next output frame; *eos when the
 * stream ends before it. */
static lp_status step(lp_rawvideo_reader *r, bool *eos) {
    int64_t want = next_source(r, r->out_index);
    while (r->frame_index < want) {
        bool got;
        LP_TRY(read_frame(r, &got));
        if (!got) {
            *eos = true;
            return LP_OK;
        }
    }
    r->delivered_index = r->frame_index;
    r->out_index++;
    return LP_OK;
}

/* step with the sticky end and error. */
static lp_status next_frame(lp_rawvideo_reader *r, bool *eos) {
    *eos = false;
    if (r->error) return lp_fail(r->error, "%s: reader stopped after an earlier error", r->path);
    if (r->done) {
        *eos = true;
        return LP_OK;
    }
    lp_status s = step(r, eos);
    if (s != LP_OK) r->error = s;
    if (*eos) r->done = true;
    return s;
}

lp_status lp_rawvideo_reader_next_rgb24(lp_rawvideo_reader *r, uint8_t *dst, bool *eos) {
    LP_TRY(next_frame(r, eos));
    if (!*eos) convert(r, dst, NULL);
    return LP_OK;
}

lp_status lp_rawvideo_reader_next(lp_rawvideo_reader *r, float *dst, bool *eos) {
    LP_TRY(next_frame(r, eos));
    if (!*eos) convert(r, NULL, dst);
    return LP_OK;
}

void lp_rawvideo_reader_close(lp_rawvideo_reader *r) {
    if (!r) return;
    if (r->f && r->f != stdin) fclose(r->f);
    free(r->frame);
    free(r->path);
    free(r);
}

/* ---- writer ------------------------------------------------------------ */

struct lp_rawvideo_writer {
    char *path;
    FILE *f; /* stdout for "-" (not closed) */
    lp_rawvideo_format fmt;
    int width, height;
    uint8_t *yuv; /* y4m: one frame, Y, U, V planes back to back */
    uint8_t *rgb; /* the bytes of a float frame */
    lp_pool *pool;
    int64_t frames;
};

lp_status lp_rawvideo_writer_open(const char *path, lp_rawvideo_format fmt, int width, int height, double fps,
                                  lp_pool *pool, lp_rawvideo_writer **out) {
    *out = NULL;
    if (width <= 0 || height <= 0 || width > 16384 || height > 16384)
        return lp_fail(LP_ERR_ARG, "%s: bad frame size %dx%d", path, width, height);
    if (!valid_fps(fps)) return lp_fail(LP_ERR_ARG, "%s: fps %g is not in (0, 1000]", path, fps);
    if (fmt == LP_RAWVIDEO_Y4M && (width % 2 || height % 2))
        return lp_fail(LP_ERR_ARG, "%s: size %dx%d must be even for y4m 4:2:0", path, width, height);
    lp_rawvideo_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return lp_fail(LP_ERR_NOMEM, "%s: out of memory", path);
    }
    w->fmt = fmt, w->width = width, w->height = height, w->pool = pool;
    lp_status s = LP_OK;
    w->rgb = malloc((size_t)width * height * 3);
    if (!w->rgb || (fmt == LP_RAWVIDEO_Y4M && !(w->yuv = malloc((size_t)width * height * 3 / 2))))
        s = lp_fail(LP_ERR_NOMEM, "%s: out of memory", path);
    if (s == LP_OK && !(w->f = strcmp(path, "-") ? fopen(path, "wb") : stdout))
        s = lp_fail(LP_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
    if (s == LP_OK && fmt == LP_RAWVIDEO_Y4M) {
        int64_t num, den;
        to_rational(fps, 65535, &num, &den);
        if (fprintf(w->f, Y4M_SIGNATURE "W%d H%d F%lld:%lld Ip A1:1 C420jpeg XCOLORRANGE=LIMITED\n", width, height,
                    (long long)num, (long long)den) < 0 ||
            fflush(w->f) != 0)
            s = lp_fail(LP_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
    if (s != LP_OK) {
        lp_rawvideo_writer_close(w);
        return s;
    }
    *out = w;
    return LP_OK;
}

static lp_status write_bytes(lp_rawvideo_writer *w, const void *p, size_t n) {
    if (fwrite(p, 1, n, w->f) != n)
        return lp_fail(LP_ERR_IO, "%s: write failed at frame %lld: %s", w->path, (long long)w->frames,
                       strerror(errno));
    return LP_OK;
}

/* One frame from rgb24 or from planar floats (when planar is set). */
static lp_status write_frame(lp_rawvideo_writer *w, const uint8_t *rgb, const float *planar) {
    size_t npix = (size_t)w->width * w->height;
    if (w->fmt == LP_RAWVIDEO_Y4M) {
        conv_job j = {.width = (size_t)w->width,
                      .plane = npix,
                      .cw = (size_t)w->width / 2,
                      .rgb = rgb,
                      .rgb_out = w->rgb,
                      .planar = planar,
                      .y = w->yuv,
                      .u = w->yuv + npix,
                      .v = w->yuv + npix + npix / 4};
        lp_parallel_for(w->pool, w->height / 2, rgb_to_yuv420_rows, &j);
        LP_TRY(write_bytes(w, "FRAME\n", 6));
        LP_TRY(write_bytes(w, w->yuv, npix * 3 / 2));
    } else {
        if (planar) lp_video_planar_to_rgb24(planar, w->width, w->height, w->rgb, w->pool);
        LP_TRY(write_bytes(w, planar ? w->rgb : rgb, npix * 3));
    }
    if (fflush(w->f) != 0)
        return lp_fail(LP_ERR_IO, "%s: write failed at frame %lld: %s", w->path, (long long)w->frames,
                       strerror(errno));
    w->frames++;
    return LP_OK;
}

lp_status lp_rawvideo_writer_push_rgb24(lp_rawvideo_writer *w, const uint8_t *rgb) {
    return write_frame(w, rgb, NULL);
}

lp_status lp_rawvideo_writer_push(lp_rawvideo_writer *w, const float *rgb) { return write_frame(w, NULL, rgb); }

lp_status lp_rawvideo_writer_close(lp_rawvideo_writer *w) {
    if (!w) return LP_OK;
    lp_status s = LP_OK;
    if (w->f && (w->f == stdout ? fflush(w->f) : fclose(w->f)) != 0)
        s = lp_fail(LP_ERR_IO, "%s: close failed: %s", w->path, strerror(errno));
    free(w->yuv);
    free(w->rgb);
    free(w->path);
    free(w);
    return s;
}
