/* Uncompressed video streams without FFmpeg: y4m (YUV4MPEG2, 8-bit 4:2:0) and
 * raw rgb24, read and written with plain stdio. Both builds use the writer
 * (video.c hands .y4m/.rgb to it); the reader is what a build without FFmpeg
 * (VIDEO=0, video_noffmpeg.c) reads with.
 *
 * Reader: the contract of lp_video_reader (video.h) for these two formats, with
 * the same nearest-frame resampling rule; the source rate is constant (the y4m
 * header's F, or raw_fps), so output frame k shows source frame
 * ceil(k * r / fps + 1/2) - 1 and the stream ends where that frame does not
 * exist. It does not resize: the source must already be width x height
 * (LP_ERR_UNSUPPORTED otherwise, naming both sizes).
 *   y4m: the header tokens W, H, F (required), C (420, 420jpeg, 420mpeg2,
 *   420paldv; absent = 420jpeg; anything else, e.g. 422 or 420p10, is
 *   LP_ERR_UNSUPPORTED), XCOLORRANGE=FULL|LIMITED (absent = limited); I, A and
 *   other X tokens are ignored, as are FRAME parameters. YUV -> RGB uses the
 *   BT.601 matrix, each chroma sample covering its 2x2 luma block (no
 *   interpolation: what swscale does for an unscaled yuv420p -> rgb24).
 *   Without an input format, a path is y4m if it starts with "YUV4MPEG2 ".
 * Writer: y4m with "C420jpeg XCOLORRANGE=LIMITED", BT.601 limited range,
 * chroma = the mean of each 2x2 block; or raw rgb24. One frame per push,
 * flushed at once, so a pipe reader sees every frame as it is written.
 * Float frames are converted straight to and from YUV (no rgb24 copy in
 * between, same values as through rgb24); conversions run on the pool of the
 * reader's options or the writer's pool, as for video.h. */
#ifndef LP_RAWVIDEO_H
#define LP_RAWVIDEO_H

#include <stdbool.h>
#include <stdint.h>

#include "video.h"

typedef enum { LP_RAWVIDEO_Y4M, LP_RAWVIDEO_RGB24 } lp_rawvideo_format;

/* The format a path names by its extension: "-" and .y4m are y4m, .rgb and
 * .rgb24 raw rgb24; false for anything else. */
bool lp_rawvideo_format_of(const char *path, lp_rawvideo_format *fmt);

typedef struct lp_rawvideo_reader lp_rawvideo_reader;

/* opts: as for lp_video_reader_open; input_format NULL = y4m for "-", else
 * sniffed (y4m or LP_ERR_FORMAT "not a y4m stream"), "y4m" or "rgb24" (then
 * raw_width, raw_height, raw_fps). fit is irrelevant (no resizing); pool is
 * kept for the conversions. Reads the first frame, so an empty stream fails
 * here ("no decodable video frame"). */
lp_status lp_rawvideo_reader_open(const char *path, const lp_video_reader_opts *opts, lp_rawvideo_reader **out);
const lp_video_info *lp_rawvideo_reader_info(const lp_rawvideo_reader *r);
/* Next output frame as rgb24 [H, W, 3]; *eos at the end. Errors are final. */
lp_status lp_rawvideo_reader_next_rgb24(lp_rawvideo_reader *r, uint8_t *dst, bool *eos);
/* The same as RGB f32 planar [3, H, W] (byte / 255, as lp_video_reader_next). */
lp_status lp_rawvideo_reader_next(lp_rawvideo_reader *r, float *dst, bool *eos);
/* Index of the source frame behind the last delivered frame; -1 before the first. */
int64_t lp_rawvideo_reader_source_index(const lp_rawvideo_reader *r);
void lp_rawvideo_reader_close(lp_rawvideo_reader *r);

typedef struct lp_rawvideo_writer lp_rawvideo_writer;

/* Opens path ("-" = stdout) for width x height frames (even for y4m) at fps
 * and writes the y4m header; pool: for the conversions (NULL = none). On
 * failure *out is NULL. */
lp_status lp_rawvideo_writer_open(const char *path, lp_rawvideo_format fmt, int width, int height, double fps,
                                  lp_pool *pool, lp_rawvideo_writer **out);
lp_status lp_rawvideo_writer_push_rgb24(lp_rawvideo_writer *w, const uint8_t *rgb);
/* The same from RGB f32 planar [3, H, W], clamped and rounded as
 * lp_video_writer_push does. */
lp_status lp_rawvideo_writer_push(lp_rawvideo_writer *w, const float *rgb);
/* Flushes and closes (stdout is flushed, not closed) and frees w. NULL is a no-op. */
lp_status lp_rawvideo_writer_close(lp_rawvideo_writer *w);

#endif
