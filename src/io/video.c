/* Video reader and writer on libavformat/libavcodec/libswscale; contracts and
 * the resampling rule are in video.h. */
#include "video.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#include "../base/log.h"
#include "rawvideo.h"

/* ---- shared helpers ---------------------------------------------------- */

/* FFmpeg's messages (warnings and errors) go to lp_log at debug level; our own
 * errors carry the context the caller needs. */
static void lp_av_log(void *avcl, int level, const char *fmt, va_list vl) {
    if (level > AV_LOG_WARNING) return;
    char line[1024];
    int prefix = 1;
    av_log_format_line2(avcl, level, fmt, vl, line, sizeof line, &prefix);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    if (n) lp_log(LP_LOG_DEBUG, "ffmpeg: %s", line);
}

static pthread_once_t lp_av_log_once = PTHREAD_ONCE_INIT;
static void lp_av_log_install(void) { av_log_set_callback(lp_av_log); }

/* Status for a negative FFmpeg return code: errno values are I/O problems,
 * FFmpeg's own tags (invalid data, EOF while probing, ...) mean bad contents. */
static lp_status av_status(int ret) {
    if (ret == AVERROR(ENOMEM)) return LP_ERR_NOMEM;
    return -ret < 4096 ? LP_ERR_IO : LP_ERR_FORMAT;
}

static const char *av_msg(int ret, char *buf, size_t len) {
    av_strerror(ret, buf, len);
    return buf;
}

static bool valid_rate(AVRational q) { return q.num > 0 && q.den > 0; }

static bool valid_fps(double fps) { return fps > 0 && fps <= 1000; }

/* ---- reader ------------------------------------------------------------ */

struct lp_video_reader {
    char *path;
    int width, height;
    lp_video_fit fit;
    AVFormatContext *fmt;
    AVStream *st;
    AVCodecContext *dec;
    AVPacket *pkt;
    AVRational out_rate; /* output fps */
    int64_t origin;      /* pts of the first frame: t = 0 */
    int64_t last_pts;    /* pts of the last decoded frame */
    int64_t src_dur;     /* nominal source frame duration, in st->time_base units */
    double src_period;   /* the same in seconds, unrounded */
    int64_t decoded;     /* frames decoded so far */
    bool draining, eof, done;
    lp_status error; /* sticky: set by the first failure */
    /* cur: the source frame nearest to the current output time;
     * next: the frame decoded after it (lookahead). */
    AVFrame *cur, *next;
    int64_t cur_index, next_index;
    bool have_cur, have_next;
    int64_t out_index, delivered_index;
    /* conversion */
    struct SwsContext *sws;
    int sws_w, sws_h, sws_fmt, sws_ow, sws_oh, sws_cs, sws_range;
    uint8_t *scaled; /* scaled picture before crop/pad */
    int scaled_stride, scaled_h;
    uint8_t *rgb; /* output frame, [H, W, 3] */
    int64_t converted_index;
    lp_pool *pool; /* rgb24 -> planar */
    lp_video_info info;
};

/* Gives a decoded frame a strictly increasing pts (a missing or out-of-order
 * timestamp becomes previous + one nominal frame duration). */
static void stamp(lp_video_reader *r, AVFrame *f) {
    int64_t pts = f->best_effort_timestamp;
    if (r->decoded == 0) {
        if (pts == AV_NOPTS_VALUE) pts = 0;
        r->origin = pts;
    } else if (pts == AV_NOPTS_VALUE || pts <= r->last_pts) {
        pts = r->last_pts + r->src_dur;
    }
    f->pts = r->last_pts = pts;
    r->decoded++;
}

/* Decodes the next frame into f; *got = false at the end of the stream. */
static lp_status decode_one(lp_video_reader *r, AVFrame *f, bool *got) {
    char eb[AV_ERROR_MAX_STRING_SIZE];
    *got = false;
    for (;;) {
        int ret = avcodec_receive_frame(r->dec, f);
        if (ret == 0) {
            stamp(r, f);
            *got = true;
            return LP_OK;
        }
        if (ret == AVERROR_EOF) return LP_OK;
        if (ret != AVERROR(EAGAIN))
            return lp_fail(LP_ERR_FORMAT, "%s: corrupt video data after frame %lld: %s", r->path,
                           (long long)r->decoded, av_msg(ret, eb, sizeof eb));
        if (r->draining) return lp_fail(LP_ERR_FORMAT, "%s: decoder stalled while draining", r->path);
        ret = av_read_frame(r->fmt, r->pkt);
        if (ret == AVERROR_EOF) {
            r->draining = true;
            ret = avcodec_send_packet(r->dec, NULL);
        } else if (ret < 0) {
            return lp_fail(av_status(ret), "%s: read error after frame %lld: %s", r->path,
                           (long long)r->decoded, av_msg(ret, eb, sizeof eb));
        } else if (r->pkt->stream_index != r->st->index) {
            av_packet_unref(r->pkt);
            continue;
        } else {
            ret = avcodec_send_packet(r->dec, r->pkt);
            av_packet_unref(r->pkt);
        }
        if (ret < 0 && ret != AVERROR_EOF)
            return lp_fail(LP_ERR_FORMAT, "%s: corrupt video data after frame %lld: %s", r->path,
                           (long long)r->decoded, av_msg(ret, eb, sizeof eb));
    }
}

/* Compares source time (pts - origin) * time_base with k / fps. */
static int cmp_out_time(const lp_video_reader *r, int64_t pts, int64_t k) {
    return av_compare_ts(pts - r->origin, r->st->time_base, k, av_inv_q(r->out_rate));
}

/* Moves cur to the source frame nearest to t_k = out_index / fps (ties: the
 * earlier one), decoding one frame ahead; *eos once t_k is at or past the end
 * of the last frame. */
static lp_status advance(lp_video_reader *r, bool *eos) {
    int64_t k = r->out_index;
    for (;;) {
        if (!r->have_next && !r->eof) {
            bool got;
            LP_TRY(decode_one(r, r->next, &got));
            if (got)
                r->next_index = r->decoded - 1, r->have_next = true;
            else
                r->eof = true;
        }
        /* next is nearer than cur iff t_cur + t_next < 2 t_k */
        if (!r->have_next ||
            (r->have_cur && cmp_out_time(r, r->cur->pts + r->next->pts - r->origin, 2 * k) >= 0))
            break;
        AVFrame *t = r->cur;
        r->cur = r->next;
        r->next = t;
        r->cur_index = r->next_index;
        r->have_cur = true;
        r->have_next = false;
    }
    /* The first frame is at t = 0, so cur is always set here. Past the last
     * frame, t_k still maps to it while it is nearer than the frame that would
     * follow (ties included); the margin absorbs rounding of the doubles. */
    if (!r->have_next) {
        double t_cur = (double)(r->cur->pts - r->origin) * av_q2d(r->st->time_base);
        *eos = (double)k / av_q2d(r->out_rate) > t_cur + 0.5 * r->src_period + 1e-9;
    } else {
        *eos = false;
    }
    return LP_OK;
}

/* Scaled size (sw, sh) of a src_w x src_h picture (sample aspect sar) for the fit mode. */
static void fit_size(const lp_video_reader *r, int src_w, int src_h, AVRational sar, int *sw, int *sh) {
    *sw = r->width, *sh = r->height;
    if (r->fit == LP_VIDEO_FIT_STRETCH) return;
    double ar = (double)src_w / src_h * (valid_rate(sar) ? av_q2d(sar) : 1.0);
    bool wider = ar > (double)r->width / r->height;
    if (r->fit == LP_VIDEO_FIT_CROP ? wider : !wider) {
        long w = lround(r->height * ar);
        *sw = (int)(r->fit == LP_VIDEO_FIT_CROP ? FFMAX(w, r->width) : FFMAX(FFMIN(w, r->width), 1));
    } else {
        long h = lround(r->width / ar);
        *sh = (int)(r->fit == LP_VIDEO_FIT_CROP ? FFMAX(h, r->height) : FFMAX(FFMIN(h, r->height), 1));
    }
}

/* Converts cur into r->rgb (skipped when cur is already there, e.g. when a
 * source frame is repeated to reach a higher output rate). */
static lp_status convert(lp_video_reader *r) {
    if (r->converted_index == r->cur_index) return LP_OK;
    const AVFrame *f = r->cur;
    int sw, sh;
    fit_size(r, f->width, f->height, av_guess_sample_aspect_ratio(r->fmt, r->st, r->cur), &sw, &sh);
    int range = f->color_range == AVCOL_RANGE_JPEG;
    if (!r->sws || f->width != r->sws_w || f->height != r->sws_h || f->format != r->sws_fmt ||
        sw != r->sws_ow || sh != r->sws_oh || (int)f->colorspace != r->sws_cs || range != r->sws_range) {
        sws_freeContext(r->sws);
        r->sws = sws_getContext(f->width, f->height, f->format, sw, sh, AV_PIX_FMT_RGB24, SWS_AREA, NULL,
                                NULL, NULL);
        if (!r->sws)
            return lp_fail(LP_ERR_UNSUPPORTED, "%s: cannot convert %dx%d %s frames to rgb24", r->path,
                           f->width, f->height, av_get_pix_fmt_name(f->format));
        /* YUV matrix (BT.601 unless tagged otherwise) and range from the frame;
         * yuvj formats are full range already. */
        int *inv, src_range, *tbl, dst_range, bri, con, sat;
        if (sws_getColorspaceDetails(r->sws, &inv, &src_range, &tbl, &dst_range, &bri, &con, &sat) >= 0)
            sws_setColorspaceDetails(r->sws, sws_getCoefficients(f->colorspace), src_range || range, tbl,
                                     dst_range, bri, con, sat);
        r->sws_w = f->width, r->sws_h = f->height, r->sws_fmt = f->format;
        r->sws_ow = sw, r->sws_oh = sh, r->sws_cs = (int)f->colorspace, r->sws_range = range;
    }
    int W = r->width, H = r->height;
    bool direct = sw == W && sh == H;
    if (!direct) {
        int stride = FFALIGN(sw * 3, 64);
        if (!r->scaled || stride != r->scaled_stride || sh != r->scaled_h) {
            av_freep(&r->scaled);
            r->scaled = av_malloc((size_t)stride * sh);
            if (!r->scaled) return lp_fail(LP_ERR_NOMEM, "%s: out of memory scaling frames", r->path);
            r->scaled_stride = stride, r->scaled_h = sh;
        }
    }
    uint8_t *dst[4] = {direct ? r->rgb : r->scaled};
    int dst_stride[4] = {direct ? W * 3 : r->scaled_stride};
    int ret = sws_scale(r->sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dst, dst_stride);
    if (ret <= 0)
        return lp_fail(LP_ERR_FORMAT, "%s: frame %lld: scaling failed", r->path, (long long)r->cur_index);
    if (!direct) {
        size_t row = (size_t)W * 3;
        if (r->fit == LP_VIDEO_FIT_CROP) { /* keep the centre */
            const uint8_t *src =
                r->scaled + (size_t)((sh - H) / 2) * r->scaled_stride + (size_t)((sw - W) / 2) * 3;
            for (int y = 0; y < H; y++) memcpy(r->rgb + y * row, src + (size_t)y * r->scaled_stride, row);
        } else { /* pad: centre on black */
            memset(r->rgb, 0, row * H);
            uint8_t *dst0 = r->rgb + (size_t)((H - sh) / 2) * row + (size_t)((W - sw) / 2) * 3;
            for (int y = 0; y < sh; y++)
                memcpy(dst0 + y * row, r->scaled + (size_t)y * r->scaled_stride, (size_t)sw * 3);
        }
    }
    r->converted_index = r->cur_index;
    return LP_OK;
}

/* Opens the demuxer: a probed file, or y4m / raw rgb24 from a path or stdin. */
static lp_status open_input(lp_video_reader *r, const char *path, const lp_video_reader_opts *o) {
    char eb[AV_ERROR_MAX_STRING_SIZE];
    bool is_stdin = !strcmp(path, "-");
    const char *fmtname = o->input_format ? o->input_format : is_stdin ? "y4m" : NULL;
    const AVInputFormat *ifmt = NULL;
    AVDictionary *dict = NULL;
    if (fmtname && !strcmp(fmtname, "y4m")) {
        ifmt = av_find_input_format("yuv4mpegpipe");
    } else if (fmtname && !strcmp(fmtname, "rgb24")) {
        if (o->raw_width <= 0 || o->raw_height <= 0 || !valid_fps(o->raw_fps))
            return lp_fail(LP_ERR_ARG, "%s: raw rgb24 input needs its size and fps (got %dx%d at %g fps)",
                           path, o->raw_width, o->raw_height, o->raw_fps);
        char size[64], rate[64];
        snprintf(size, sizeof size, "%dx%d", o->raw_width, o->raw_height);
        snprintf(rate, sizeof rate, "%.17g", o->raw_fps);
        ifmt = av_find_input_format("rawvideo");
        av_dict_set(&dict, "video_size", size, 0);
        av_dict_set(&dict, "pixel_format", "rgb24", 0);
        av_dict_set(&dict, "framerate", rate, 0);
    } else if (fmtname) {
        return lp_fail(LP_ERR_ARG, "%s: unknown input format '%s' (use y4m or rgb24)", path, fmtname);
    }
    if (fmtname && !ifmt) {
        av_dict_free(&dict);
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: this FFmpeg has no demuxer for %s", path, fmtname);
    }
    int ret = avformat_open_input(&r->fmt, is_stdin ? "pipe:0" : path, ifmt, &dict);
    av_dict_free(&dict);
    if (ret < 0)
        return lp_fail(av_status(ret), "%s: cannot open as video: %s", path, av_msg(ret, eb, sizeof eb));
    /* y4m and raw headers say everything; probing would only delay a live pipe. */
    if (!fmtname && (ret = avformat_find_stream_info(r->fmt, NULL)) < 0)
        return lp_fail(av_status(ret), "%s: cannot read stream info: %s", path, av_msg(ret, eb, sizeof eb));
    return LP_OK;
}

static lp_status open_decoder(lp_video_reader *r) {
    char eb[AV_ERROR_MAX_STRING_SIZE];
    const AVCodec *codec = NULL;
    int idx = av_find_best_stream(r->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (idx == AVERROR_DECODER_NOT_FOUND)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: no decoder for its video codec", r->path);
    if (idx < 0 || (r->fmt->streams[idx]->disposition & AV_DISPOSITION_ATTACHED_PIC))
        return lp_fail(LP_ERR_FORMAT, "%s: no video stream", r->path);
    r->st = r->fmt->streams[idx];
    for (unsigned i = 0; i < r->fmt->nb_streams; i++)
        if ((int)i != idx) r->fmt->streams[i]->discard = AVDISCARD_ALL;
    r->dec = avcodec_alloc_context3(codec);
    if (!r->dec) return lp_fail(LP_ERR_NOMEM, "%s: out of memory for the decoder", r->path);
    int ret = avcodec_parameters_to_context(r->dec, r->st->codecpar);
    if (ret >= 0) ret = avcodec_open2(r->dec, codec, NULL);
    if (ret < 0)
        return lp_fail(av_status(ret), "%s: cannot open the %s decoder: %s", r->path, codec->name,
                       av_msg(ret, eb, sizeof eb));
    return LP_OK;
}

/* raw_rate: the rate given for raw input ({0, 1} otherwise). */
static void fill_info(lp_video_reader *r, AVRational raw_rate) {
    lp_video_info *in = &r->info;
    const AVStream *st = r->st;
    AVRational rate = valid_rate(st->avg_frame_rate) ? st->avg_frame_rate
                      : valid_rate(st->r_frame_rate) ? st->r_frame_rate
                                                     : raw_rate;
    in->width = st->codecpar->width;
    in->height = st->codecpar->height;
    in->fps = valid_rate(rate) ? av_q2d(rate) : 0;
    snprintf(in->codec, sizeof in->codec, "%s", r->dec->codec->name);
    if (st->duration > 0 && st->duration != AV_NOPTS_VALUE)
        in->duration = st->duration * av_q2d(st->time_base);
    else if (r->fmt->duration > 0)
        in->duration = (double)r->fmt->duration / AV_TIME_BASE;
    in->frame_count = -1;
    if (st->nb_frames > 0)
        in->frame_count = st->nb_frames;
    else if (in->duration > 0 && in->fps > 0)
        in->frame_count = llround(in->duration * in->fps);
    if (in->duration == 0 && in->frame_count > 0 && in->fps > 0) in->duration = in->frame_count / in->fps;
    in->output_frames = -1;
    if (in->frame_count > 0 && valid_rate(rate)) /* floor((N - 1/2) * fps / rate) + 1, see video.h */
        in->output_frames = av_rescale_rnd(2 * in->frame_count - 1, (int64_t)r->out_rate.num * rate.den,
                                           2 * (int64_t)r->out_rate.den * rate.num, AV_ROUND_DOWN) +
                            1;
    /* One source frame lasts 1 / rate; without a rate, one output frame. */
    AVRational dur = valid_rate(rate) ? av_inv_q(rate) : av_inv_q(r->out_rate);
    r->src_dur = FFMAX(av_rescale_q(1, dur, st->time_base), 1);
    r->src_period = av_q2d(dur);
}

lp_status lp_video_reader_open(const char *path, const lp_video_reader_opts *opts, lp_video_reader **out) {
    *out = NULL;
    if (!path || !*path) return lp_fail(LP_ERR_ARG, "video reader: empty path");
    lp_video_reader_opts o;
    if (opts)
        o = *opts;
    else
        lp_video_reader_opts_default(&o);
    if (lp_video_check_size(o.width, o.height) != LP_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", lp_last_error());
        return lp_fail(LP_ERR_ARG, "%s: output %s", path, msg);
    }
    if (!valid_fps(o.fps)) return lp_fail(LP_ERR_ARG, "%s: output fps %g is not in (0, 1000]", path, o.fps);
    if (o.fit != LP_VIDEO_FIT_STRETCH && o.fit != LP_VIDEO_FIT_CROP && o.fit != LP_VIDEO_FIT_PAD)
        return lp_fail(LP_ERR_ARG, "%s: unknown fit mode %d", path, (int)o.fit);
    pthread_once(&lp_av_log_once, lp_av_log_install);

    lp_video_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        return lp_fail(LP_ERR_NOMEM, "%s: out of memory", path);
    }
    r->width = o.width, r->height = o.height, r->fit = o.fit, r->pool = o.pool;
    r->out_rate = av_d2q(o.fps, 65535);
    r->cur_index = r->next_index = r->delivered_index = r->converted_index = -1;
    lp_status s = open_input(r, path, &o);
    if (s == LP_OK) s = open_decoder(r);
    if (s == LP_OK) {
        bool raw = o.input_format && !strcmp(o.input_format, "rgb24");
        fill_info(r, raw ? av_d2q(o.raw_fps, 65535) : (AVRational){0, 1});
        r->pkt = av_packet_alloc();
        r->cur = av_frame_alloc();
        r->next = av_frame_alloc();
        r->rgb = av_malloc((size_t)r->width * r->height * 3);
        if (!r->pkt || !r->cur || !r->next || !r->rgb) s = lp_fail(LP_ERR_NOMEM, "%s: out of memory", path);
    }
    if (s == LP_OK) { /* prime: the first frame fixes t = 0 and proves the stream decodes */
        bool got;
        s = decode_one(r, r->next, &got);
        if (s == LP_OK && !got) s = lp_fail(LP_ERR_FORMAT, "%s: no decodable video frame", path);
        r->have_next = got, r->next_index = 0;
    }
    if (s == LP_OK && !r->info.width) r->info.width = r->next->width, r->info.height = r->next->height;
    if (s != LP_OK) {
        lp_video_reader_close(r);
        return s;
    }
    *out = r;
    return LP_OK;
}

const lp_video_info *lp_video_reader_info(const lp_video_reader *r) { return &r->info; }

int64_t lp_video_reader_source_index(const lp_video_reader *r) { return r->delivered_index; }

/* Makes r->rgb the next output frame; *eos at the end. Errors are sticky. */
static lp_status step(lp_video_reader *r, bool *eos) {
    *eos = false;
    if (r->error) return lp_fail(r->error, "%s: reader stopped after an earlier error", r->path);
    if (r->done) {
        *eos = true;
        return LP_OK;
    }
    lp_status s = advance(r, eos);
    if (s == LP_OK && *eos) {
        r->done = true;
        return LP_OK;
    }
    if (s == LP_OK) s = convert(r);
    if (s != LP_OK) {
        r->error = s;
        return s;
    }
    r->delivered_index = r->cur_index;
    r->out_index++;
    return LP_OK;
}

lp_status lp_video_reader_next_rgb24(lp_video_reader *r, uint8_t *dst, bool *eos) {
    LP_TRY(step(r, eos));
    if (!*eos) memcpy(dst, r->rgb, (size_t)r->width * r->height * 3);
    return LP_OK;
}

lp_status lp_video_reader_next(lp_video_reader *r, float *dst, bool *eos) {
    LP_TRY(step(r, eos));
    if (!*eos) lp_video_rgb24_to_planar(r->rgb, r->width, r->height, dst, r->pool);
    return LP_OK;
}

void lp_video_reader_close(lp_video_reader *r) {
    if (!r) return;
    avformat_close_input(&r->fmt);
    avcodec_free_context(&r->dec);
    av_packet_free(&r->pkt);
    av_frame_free(&r->cur);
    av_frame_free(&r->next);
    sws_freeContext(r->sws);
    av_free(r->scaled);
    av_free(r->rgb);
    free(r->path);
    free(r);
}

/* ---- writer ------------------------------------------------------------ */

struct lp_video_writer {
    char *path;
    int width, height;
    lp_rawvideo_writer *raw; /* y4m / rgb; else a container: */
    AVFormatContext *fmt;
    AVStream *st;
    AVCodecContext *enc;
    AVFrame *frame;
    AVPacket *pkt;
    bool pipe, header_written;
    struct SwsContext *sws; /* rgb24 -> yuv420p */
    uint8_t *rgb;           /* bytes of a float frame */
    lp_pool *pool;          /* float -> rgb24 */
    int64_t pts;
    char codec[32];
};

/* Sends frame (NULL = drain) and writes out every packet the encoder returns. */
static lp_status encode(lp_video_writer *w, const AVFrame *frame) {
    char eb[AV_ERROR_MAX_STRING_SIZE];
    int ret = avcodec_send_frame(w->enc, frame);
    if (ret < 0)
        return lp_fail(LP_ERR_FORMAT, "%s: %s encoder rejected frame %lld: %s", w->path, w->codec,
                       (long long)w->pts, av_msg(ret, eb, sizeof eb));
    for (;;) {
        ret = avcodec_receive_packet(w->enc, w->pkt);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) break;
        if (ret < 0)
            return lp_fail(LP_ERR_FORMAT, "%s: %s encoder failed: %s", w->path, w->codec,
                           av_msg(ret, eb, sizeof eb));
        av_packet_rescale_ts(w->pkt, w->enc->time_base, w->st->time_base);
        w->pkt->stream_index = w->st->index;
        ret = av_interleaved_write_frame(w->fmt, w->pkt);
        av_packet_unref(w->pkt);
        if (ret < 0)
            return lp_fail(av_status(ret), "%s: write failed: %s", w->path, av_msg(ret, eb, sizeof eb));
    }
    if (w->pipe) avio_flush(w->fmt->pb);
    return LP_OK;
}

static lp_status open_container(lp_video_writer *w, const char *fmtname, AVRational rate,
                                const lp_video_writer_opts *o) {
    char eb[AV_ERROR_MAX_STRING_SIZE], probe[64];
    snprintf(probe, sizeof probe, "x.%s", fmtname);
    const AVOutputFormat *ofmt = av_guess_format(NULL, probe, NULL);
    if (!ofmt)
        return lp_fail(LP_ERR_ARG, "%s: unknown output format '%s' (use .mp4, .mkv, .y4m or .rgb)", w->path,
                       fmtname);
    if (w->width % 2 || w->height % 2)
        return lp_fail(LP_ERR_ARG, "%s: size %dx%d must be even for yuv420p", w->path, w->width, w->height);
    const char *name = o->codec;
    if (!name)
        name = avcodec_find_encoder_by_name("libx264") &&
                       avformat_query_codec(ofmt, AV_CODEC_ID_H264, FF_COMPLIANCE_NORMAL) == 1
                   ? "libx264"
                   : "mpeg4";
    const AVCodec *codec = avcodec_find_encoder_by_name(name);
    if (!codec || codec->type != AVMEDIA_TYPE_VIDEO)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: this FFmpeg has no video encoder '%s'", w->path, name);
    if (avformat_query_codec(ofmt, codec->id, FF_COMPLIANCE_NORMAL) == 0)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: the %s container cannot hold %s", w->path, ofmt->name, name);
    snprintf(w->codec, sizeof w->codec, "%s", codec->name);

    const char *url = w->pipe ? "pipe:1" : w->path;
    int ret = avformat_alloc_output_context2(&w->fmt, ofmt, NULL, url);
    if (ret < 0) return lp_fail(av_status(ret), "%s: %s", w->path, av_msg(ret, eb, sizeof eb));
    w->st = avformat_new_stream(w->fmt, NULL);
    w->enc = avcodec_alloc_context3(codec);
    w->frame = av_frame_alloc();
    w->pkt = av_packet_alloc();
    if (!w->st || !w->enc || !w->frame || !w->pkt) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", w->path);

    AVCodecContext *enc = w->enc;
    enc->width = w->width;
    enc->height = w->height;
    enc->pix_fmt = AV_PIX_FMT_YUV420P;
    enc->time_base = av_inv_q(rate);
    enc->framerate = rate;
    enc->sample_aspect_ratio = (AVRational){1, 1};
    enc->colorspace = AVCOL_SPC_SMPTE170M; /* what swscale's rgb -> yuv uses */
    enc->color_range = AVCOL_RANGE_MPEG;
    if (ofmt->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if (!strcmp(codec->name, "libx264")) {
        char crf[16];
        snprintf(crf, sizeof crf, "%d", o->quality > 0 ? o->quality : 18);
        av_opt_set(enc->priv_data, "crf", crf, 0);
        av_opt_set(enc->priv_data, "preset", "veryfast", 0);
    } else {
        enc->flags |= AV_CODEC_FLAG_QSCALE;
        enc->global_quality = FF_QP2LAMBDA * (o->quality > 0 ? o->quality : 2);
    }
    if ((ret = avcodec_open2(enc, codec, NULL)) < 0)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: cannot open the %s encoder for %dx%d: %s", w->path, w->codec,
                       w->width, w->height, av_msg(ret, eb, sizeof eb));
    if ((ret = avcodec_parameters_from_context(w->st->codecpar, enc)) < 0)
        return lp_fail(av_status(ret), "%s: %s", w->path, av_msg(ret, eb, sizeof eb));
    w->st->time_base = enc->time_base;
    w->st->avg_frame_rate = rate;

    if (!(ofmt->flags & AVFMT_NOFILE) && (ret = avio_open(&w->fmt->pb, url, AVIO_FLAG_WRITE)) < 0)
        return lp_fail(av_status(ret), "%s: cannot open for writing: %s", w->path,
                       av_msg(ret, eb, sizeof eb));
    AVDictionary *mux = NULL;
    if (w->pipe) av_dict_set(&mux, "movflags", "frag_keyframe+empty_moov", 0); /* mp4/mov on a pipe */
    ret = avformat_write_header(w->fmt, &mux);
    av_dict_free(&mux);
    if (ret < 0)
        return lp_fail(av_status(ret), "%s: cannot write the header: %s", w->path,
                       av_msg(ret, eb, sizeof eb));
    w->header_written = true;

    w->frame->format = AV_PIX_FMT_YUV420P;
    w->frame->width = w->width;
    w->frame->height = w->height;
    if ((ret = av_frame_get_buffer(w->frame, 0)) < 0)
        return lp_fail(LP_ERR_NOMEM, "%s: out of memory", w->path);
    return LP_OK;
}

lp_status lp_video_writer_open(const char *path, int width, int height, double fps,
                               const lp_video_writer_opts *opts, lp_video_writer **out) {
    *out = NULL;
    if (!path || !*path) return lp_fail(LP_ERR_ARG, "video writer: empty path");
    if (width <= 0 || height <= 0 || width > 16384 || height > 16384)
        return lp_fail(LP_ERR_ARG, "%s: bad frame size %dx%d", path, width, height);
    if (!valid_fps(fps)) return lp_fail(LP_ERR_ARG, "%s: fps %g is not in (0, 1000]", path, fps);
    lp_video_writer_opts o = {0};
    if (opts) o = *opts;
    bool pipe = !strcmp(path, "-");
    const char *fmtname = o.format;
    if (!fmtname && pipe) fmtname = "y4m";
    if (!fmtname) {
        const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
        if (!dot || (slash && dot < slash) || !dot[1])
            return lp_fail(LP_ERR_ARG,
                           "%s: no file extension to tell the format (use .mp4, .mkv, .y4m or .rgb)", path);
        fmtname = dot + 1;
    }
    pthread_once(&lp_av_log_once, lp_av_log_install);

    lp_video_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return lp_fail(LP_ERR_NOMEM, "%s: out of memory", path);
    }
    w->width = width, w->height = height, w->pipe = pipe, w->pool = o.pool;
    lp_status s;
    if (!strcasecmp(fmtname, "y4m") || !strcasecmp(fmtname, "rgb") || !strcasecmp(fmtname, "rgb24")) {
        s = lp_rawvideo_writer_open(path, strcasecmp(fmtname, "y4m") ? LP_RAWVIDEO_RGB24 : LP_RAWVIDEO_Y4M, width,
                                    height, fps, o.pool, &w->raw);
        snprintf(w->codec, sizeof w->codec, "rawvideo");
    } else {
        s = open_container(w, fmtname, av_d2q(fps, 65535), &o);
    }
    if (s == LP_OK && !w->raw) { /* y4m and rgb convert float frames themselves */
        w->rgb = av_malloc((size_t)width * height * 3);
        w->sws = sws_getContext(width, height, AV_PIX_FMT_RGB24, width, height, AV_PIX_FMT_YUV420P,
                                SWS_AREA | SWS_ACCURATE_RND, NULL, NULL, NULL);
        if (!w->rgb) s = lp_fail(LP_ERR_NOMEM, "%s: out of memory", path);
        else if (!w->sws) s = lp_fail(LP_ERR_UNSUPPORTED, "%s: cannot convert rgb24 to yuv420p", path);
    }
    if (s != LP_OK) {
        lp_video_writer_close(w);
        return s;
    }
    *out = w;
    return LP_OK;
}

lp_status lp_video_writer_push_rgb24(lp_video_writer *w, const uint8_t *rgb) {
    if (w->raw) return lp_rawvideo_writer_push_rgb24(w->raw, rgb);
    const uint8_t *src[4] = {rgb};
    int src_stride[4] = {w->width * 3};
    if (av_frame_make_writable(w->frame) < 0) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", w->path);
    sws_scale(w->sws, src, src_stride, 0, w->height, w->frame->data, w->frame->linesize);
    w->frame->pts = w->pts;
    LP_TRY(encode(w, w->frame));
    w->pts++;
    return LP_OK;
}

lp_status lp_video_writer_push(lp_video_writer *w, const float *rgb) {
    if (w->raw) return lp_rawvideo_writer_push(w->raw, rgb); /* straight to y4m / rgb24 */
    lp_video_planar_to_rgb24(rgb, w->width, w->height, w->rgb, w->pool);
    return lp_video_writer_push_rgb24(w, w->rgb);
}

const char *lp_video_writer_codec(const lp_video_writer *w) { return w->codec; }

lp_status lp_video_writer_close(lp_video_writer *w) {
    if (!w) return LP_OK;
    char eb[AV_ERROR_MAX_STRING_SIZE];
    lp_status s = lp_rawvideo_writer_close(w->raw);
    if (w->header_written) {
        s = encode(w, NULL);
        int ret = av_write_trailer(w->fmt);
        if (ret < 0 && s == LP_OK)
            s = lp_fail(av_status(ret), "%s: cannot finish the file: %s", w->path,
                        av_msg(ret, eb, sizeof eb));
    }
    if (w->fmt && w->fmt->pb && !(w->fmt->oformat->flags & AVFMT_NOFILE)) {
        int ret = avio_closep(&w->fmt->pb);
        if (ret < 0 && s == LP_OK)
            s = lp_fail(av_status(ret), "%s: close failed: %s", w->path, av_msg(ret, eb, sizeof eb));
    }
    avformat_free_context(w->fmt);
    avcodec_free_context(&w->enc);
    av_frame_free(&w->frame);
    av_packet_free(&w->pkt);
    sws_freeContext(w->sws);
    av_free(w->rgb);
    free(w->path);
    free(w);
    return s;
}
