/* The frame-rate resampling cases that both video readers are tested with
 * (test_video.c: the FFmpeg reader; test_rawvideo.c: the y4m/raw one): a clip
 * of `frames` frames at src_fps read at 16 fps gives the source frames
 * want[0..want_n). */
#ifndef LP_TEST_RESAMPLE_CASES_H
#define LP_TEST_RESAMPLE_CASES_H

typedef struct {
    int src_fps, frames;
    int want_n;
    int want[10];
} resample_case;

static const resample_case resample_cases[] = {
    {8, 5, 10, {0, 0, 1, 1, 2, 2, 3, 3, 4, 4}}, /* up: 5 frames @ 8 fps -> 10 */
    {40, 10, 4, {0, 2, 5, 7}},                  /* down: 10 @ 40 fps -> ceil(4) */
    {30, 15, 8, {0, 2, 4, 6, 7, 9, 11, 13}},    /* odd: 15 @ 30 -> 8; 7.5 -> 7 */
};

#endif
