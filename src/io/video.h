/* Video input and output on FFmpeg's libraries (libavformat/libavcodec/libswscale),
 * implemented in video.c. A build without FFmpeg (VIDEO=0) implements the same
 * API in video_noffmpeg.c for y4m (4:2:0) and raw rgb24 only, without
 * resizing (rawvideo.h): other files are refused with LP_ERR_UNSUPPORTED.
 *
 * Reader: opens anything FFmpeg demuxes and decodes (a path), or "-" = stdin in
 * y4m (yuv4mpegpipe) or raw rgb24. It delivers frames at a constant output rate
 * (default 16 fps) and size (default 832x480) as RGB f32 planar [3, H, W] in
 * [0, 1] or as rgb24 bytes [H, W, 3].
 *
 *   Resampling rule (nearest frame): timestamps are measured from the first
 *   decoded frame (t = 0). Output frame k stands for t_k = k / fps and shows the
 *   source frame whose timestamp is nearest to t_k, the earlier one on a tie.
 *   Nearest (rather than latest <= t_k) keeps a same-rate round trip exact when a
 *   container rounds timestamps (Matroska stores milliseconds). Output frames
 *   continue while t_k <= t_last + 1 / (2 * source fps), i.e. while the last
 *   frame is still the nearest one. For N frames at constant rate r this gives
 *   floor((N - 1/2) * fps / r) + 1 output frames, output k showing source frame
 *   ceil(k * r / fps + 1/2) - 1. Deciding needs the following frame, so on a
 *   live pipe a frame goes out one source frame late. Dropped frames (empty AVI
 *   chunks) and variable rates follow from the timestamps; missing or
 *   non-increasing timestamps are replaced by previous + 1 / source fps.
 *
 *   Resize: swscale's area filter (SWS_AREA), BT.601/709 and range from the
 *   stream's tags. fit = stretch ignores the aspect ratio (the default); crop
 *   scales to cover W x H and keeps the centre; pad scales to fit inside and
 *   centres the picture on black. The aspect ratio includes the sample aspect.
 *
 * Writer: H.264 (libx264, crf 18, preset veryfast) in .mp4/.mkv/.mov when
 * FFmpeg has libx264, else MPEG-4 part 2 (qscale 2); constant fps, yuv420p
 * BT.601 limited range. Packets are written as the encoder returns them (x264
 * holds a few frames of lookahead until close). y4m (4:2:0, BT.601 limited
 * range) and raw rgb24 are written by rawvideo.c, to a file or to stdout ("-")
 * for pipes, one frame per push, flushed at once; a
 * container may go to stdout too (mp4/mov then fragmented). lp_video_writer_close finalises the file
 * (drains the encoder and writes the trailer), so a run stopped early and closed
 * leaves a playable file. Writing to a pipe whose reader has gone raises SIGPIPE;
 * the caller decides whether to ignore it (then the push fails with LP_ERR_IO).
 *
 * Errors name the file: LP_ERR_IO (missing/unreadable/unwritable), LP_ERR_FORMAT
 * (not a media file, no video stream, no decodable frame, corrupt data),
 * LP_ERR_ARG (bad size/fps/options), LP_ERR_UNSUPPORTED (no usable encoder or
 * container), LP_ERR_NOMEM. FFmpeg's own messages go to lp_log at debug level.
 * Handles are not thread-safe; distinct handles may be used from distinct threads.
 * Our own conversions (rgb24 <-> float planes, and rawvideo.c's YUV <-> RGB of
 * the y4m it reads and writes; not swscale's) run over rows on the pool of the
 * options when one is given: a pool that nothing else uses while the handle
 * converts (lp_parallel_for is not re-entrant). The results are the same with
 * or without it. */
#ifndef LP_VIDEO_H
#define LP_VIDEO_H

#include <stdbool.h>
#include <stdint.h>

#include "../base/status.h"
#include "../base/threadpool.h"

#define LP_VIDEO_DEFAULT_WIDTH 832
#define LP_VIDEO_DEFAULT_HEIGHT 480
#define LP_VIDEO_DEFAULT_FPS 16.0

typedef enum {
    LP_VIDEO_FIT_STRETCH = 0, /* resize to W x H, aspect not preserved */
    LP_VIDEO_FIT_CROP,        /* cover W x H, crop the centre */
    LP_VIDEO_FIT_PAD,         /* fit inside W x H, pad with black */
} lp_video_fit;

typedef struct {
    int width, height; /* output size, positive multiples of 16 (832 x 480) */
    double fps;        /* output frame rate (16) */
    lp_video_fit fit;  /* LP_VIDEO_FIT_STRETCH */
    /* Input format: NULL = probe the file ("-" means y4m); "y4m" or "rgb24" to
     * force one (for a path or "-"). rgb24 input is raw interleaved bytes and
     * needs the three fields below; they are ignored otherwise. */
    const char *input_format;
    int raw_width, raw_height;
    double raw_fps;
    lp_pool *pool; /* conversions over rows; NULL = on the calling thread */
} lp_video_reader_opts;

/* What the reader found in the source. */
typedef struct {
    int width, height;     /* coded frame size */
    double fps;            /* nominal source rate; 0 if the container does not say */
    int64_t frame_count;   /* estimate: the container's count (AVI counts dropped
                              frames too), else duration * fps; -1 unknown */
    double duration;       /* seconds; 0 if unknown */
    int64_t output_frames; /* estimate from frame_count and fps by the rule above; -1 unknown */
    char codec[32];        /* decoder name, e.g. "mpeg4" */
} lp_video_info;

typedef struct lp_video_reader lp_video_reader;

/* Fills opts with the defaults above. */
void lp_video_reader_opts_default(lp_video_reader_opts *opts);

/* LP_OK if width and height are positive multiples of 16 (the VAE and patch
 * grid need it), else LP_ERR_ARG naming the size. */
lp_status lp_video_check_size(int width, int height);

/* Opens path (or "-" for stdin) and decodes the first frame, so a file with no
 * video stream or no decodable frame fails here. opts NULL = defaults.
 * On failure *out is NULL. */
lp_status lp_video_reader_open(const char *path, const lp_video_reader_opts *opts, lp_video_reader **out);

/* Source properties (valid until close). */
const lp_video_info *lp_video_reader_info(const lp_video_reader *r);

/* Next output frame as RGB f32 planar [3, H, W] in [0, 1] (value = byte / 255).
 * Returns LP_OK with *eos = false and dst filled, or LP_OK with *eos = true at
 * the end of the stream (dst untouched, later calls keep returning eos), or an
 * error (a packet the decoder rejects, e.g. a truncated raw frame; a read
 * error). Errors are final: later calls fail too. */
lp_status lp_video_reader_next(lp_video_reader *r, float *dst, bool *eos);

/* The same frame as rgb24 bytes, interleaved [H, W, 3]. */
lp_status lp_video_reader_next_rgb24(lp_video_reader *r, uint8_t *dst, bool *eos);

/* Index (0-based, decode order) of the source frame behind the last delivered
 * output frame; -1 before the first. */
int64_t lp_video_reader_source_index(const lp_video_reader *r);

/* Frees everything; NULL is a no-op. */
void lp_video_reader_close(lp_video_reader *r);

typedef struct {
    /* NULL = from the extension of path ("-" means y4m): "mp4", "mkv", "mov",
     * "avi" or another container FFmpeg knows by extension; "y4m"; "rgb"
     * (raw rgb24). */
    const char *format;
    /* Encoder for containers: NULL = "libx264" if present and the container
     * takes H.264, else "mpeg4". Ignored for y4m/rgb. */
    const char *codec;
    /* crf for libx264 (default 18), qscale for other encoders (default 2);
     * 0 = default. */
    int quality;
    lp_pool *pool; /* conversions over rows; NULL = on the calling thread */
} lp_video_writer_opts;

typedef struct lp_video_writer lp_video_writer;

/* Opens path (or "-" = stdout) for frames of width x height (even, for 4:2:0;
 * any positive size for rgb) at fps. opts NULL = defaults. The container
 * header is written here. On failure *out is NULL. */
lp_status lp_video_writer_open(const char *path, int width, int height, double fps,
                               const lp_video_writer_opts *opts, lp_video_writer **out);

/* Encodes and writes one frame, RGB f32 planar [3, H, W]; values are clamped
 * to [0, 1] (NaN -> 0) and rounded to bytes. */
lp_status lp_video_writer_push(lp_video_writer *w, const float *rgb);

/* The same from rgb24 bytes, interleaved [H, W, 3]. */
lp_status lp_video_writer_push_rgb24(lp_video_writer *w, const uint8_t *rgb);

/* Name of the encoder in use ("libx264", "mpeg4", "rawvideo" for y4m/rgb). */
const char *lp_video_writer_codec(const lp_video_writer *w);

/* Drains the encoder, writes the trailer, closes the file and frees w (also on
 * failure). Returns the first error of the finalisation. NULL is a no-op. */
lp_status lp_video_writer_close(lp_video_writer *w);

/* rgb24 [H, W, 3] bytes <-> RGB f32 planar [3, H, W] (byte / 255; the inverse
 * clamps to [0, 1], maps NaN to 0 and rounds to nearest), over rows on pool
 * (NULL = on the calling thread). */
void lp_video_rgb24_to_planar(const uint8_t *rgb, int width, int height, float *dst, lp_pool *pool);
void lp_video_planar_to_rgb24(const float *src, int width, int height, uint8_t *rgb, lp_pool *pool);

#endif
