/* Tests of src/io/rawvideo (y4m and raw rgb24 without FFmpeg): the
 * nearest-frame resampling rule on raw input (the same expectations as
 * test_video's), a y4m write/read round trip, the frames, source indices and
 * counts it reads from y4m files against those of lp_video_reader (FFmpeg's
 * y4m demuxer in a VIDEO=1 build; in a VIDEO=0 build the reader is rawvideo
 * itself, so there the comparison only checks video_noffmpeg.c's wrapping),
 * y4m files written by the ffmpeg CLI (limited and full range; 4:2:2
 * refused), the float-frame paths and the pool (exactly the per-pixel
 * formulas of the reference below, with and without a pool), and the errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/io/rawvideo.h"
#include "resample_cases.h"
#include "test_util.h"

static bool have_tool(const char *name) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int slot;
    char *p = buf[slot++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", lp_test_tmpdir(), name);
    return p;
}

static lp_video_reader_opts opts(int w, int h, double fps) {
    lp_video_reader_opts o;
    lp_video_reader_opts_default(&o);
    o.width = w, o.height = h, o.fps = fps;
    return o;
}

static double psnr_u8(const uint8_t *a, const uint8_t *b, size_t n, int *max_diff) {
    double se = 0;
    *max_diff = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > *max_diff) *max_diff = d;
        se += (double)d * d;
    }
    return se == 0 ? INFINITY : 10.0 * log10(255.0 * 255.0 * (double)n / se);
}

/* A smooth synthetic rgb24 frame that changes with index. */
static void fill_frame(uint8_t *rgb, int w, int h, int index) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                rgb[((size_t)y * w + x) * 3 + c] =
                    (uint8_t)(128 + 100 * sin(0.09 * x + 0.05 * y * (c + 1) + 0.4 * index + c));
}

/* The per-pixel conversions rawvideo.h describes, as plainly as possible: the
 * reference the float paths and the pool must match bit for bit. */
#define KR 0.299f
#define KB 0.114f
#define KG (1.0f - KR - KB)

static uint8_t ref_byte(float v) { return v <= 0.0f ? 0 : v >= 255.0f ? 255 : (uint8_t)(v + 0.5f); }

static uint8_t ref_unit_byte(float v) {
    if (!(v > 0.0f)) v = 0.0f;
    if (v > 1.0f) v = 1.0f;
    return (uint8_t)(v * 255.0f + 0.5f);
}

static void ref_yuv420_to_rgb24(const uint8_t *yuv, int W, int H, bool full, uint8_t *rgb) {
    int cw = (W + 1) / 2;
    const uint8_t *Y = yuv, *U = Y + (size_t)W * H, *V = U + (size_t)cw * ((H + 1) / 2);
    float ys = full ? 1.0f : 255.0f / 219.0f, y0 = full ? 0.0f : 16.0f, cs = full ? 1.0f : 255.0f / 224.0f;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float l = ys * ((float)Y[y * W + x] - y0), u = (float)U[y / 2 * cw + x / 2] - 128.0f,
                  v = (float)V[y / 2 * cw + x / 2] - 128.0f;
            uint8_t *o = rgb + ((size_t)y * W + x) * 3;
            o[0] = ref_byte(l + cs * 2.0f * (1.0f - KR) * v);
            o[1] = ref_byte(l - cs * 2.0f * (1.0f - KB) * KB / KG * u - cs * 2.0f * (1.0f - KR) * KR / KG * v);
            o[2] = ref_byte(l + cs * 2.0f * (1.0f - KB) * u);
        }
}

static void ref_rgb24_to_yuv420(const uint8_t *rgb, int W, int H, uint8_t *yuv) {
    uint8_t *Y = yuv, *U = Y + (size_t)W * H, *V = U + (size_t)(W / 2) * (H / 2);
    for (int i = 0; i < W * H; i++)
        Y[i] = ref_byte(16.0f + 219.0f / 255.0f * (KR * rgb[3 * i] + KG * rgb[3 * i + 1] + KB * rgb[3 * i + 2]));
    for (int y = 0; y < H / 2; y++)
        for (int x = 0; x < W / 2; x++) {
            float m[3];
            for (int c = 0; c < 3; c++) {
                const uint8_t *p = rgb + ((size_t)(2 * y) * W + 2 * x) * 3 + c;
                m[c] = 0.25f * (float)(p[0] + p[3] + p[W * 3] + p[W * 3 + 3]);
            }
            float l = KR * m[0] + KG * m[1] + KB * m[2];
            U[y * (W / 2) + x] = ref_byte(128.0f + 224.0f / 255.0f * (m[2] - l) / (2.0f * (1.0f - KB)));
            V[y * (W / 2) + x] = ref_byte(128.0f + 224.0f / 255.0f * (m[0] - l) / (2.0f * (1.0f - KR)));
        }
}

static uint32_t next_random(uint32_t *s) {
    *s ^= *s << 13, *s ^= *s >> 17, *s ^= *s << 5;
    return *s;
}

static int read_file(const char *path, uint8_t *buf, size_t n) {
    FILE *f = fopen(path, "rb");
    CHECK(f && fread(buf, 1, n, f) == n && fgetc(f) == EOF && fclose(f) == 0, "%s: not %zu bytes", path, n);
    return 0;
}

/* y4m of random bytes (limited and full range) read as rgb24 and as floats,
 * without and with a pool; random floats (NaN, out of range, near the
 * rounding edges) written as y4m and rgb24 from floats and from rgb24 bytes;
 * rgb24 <-> planar. Every result equals the reference exactly. */
static int test_float_frames(void) {
    enum { W = 48, H = 32, WW = 50, WH = 30, N = 3 };
    static uint8_t yuv[W * H * 3 / 2], rgb[W * H * 3], want[W * H * 3], wyuv[WW * WH * 3 / 2];
    static uint8_t wrgb[WW * WH * 3], got[2][N * (WW * WH * 3 + 6) + 128];
    static float planar[W * H * 3], fl[WW * WH * 3];
    uint32_t seed = 12345;
    lp_pool *pool;
    CHECK(lp_pool_create(3, &pool) == LP_OK, "%s", lp_last_error());
    for (int full = 0; full < 2; full++) {
        const char *path = tmp_path("rand.y4m");
        FILE *f = fopen(path, "wb");
        CHECK(f && fprintf(f, "YUV4MPEG2 W%d H%d F16:1 C420jpeg%s\n", W, H, full ? " XCOLORRANGE=FULL" : "") > 0, "%s",
              path);
        for (int k = 0; k < N; k++) {
            for (size_t i = 0; i < sizeof yuv; i++) yuv[i] = (uint8_t)next_random(&seed);
            CHECK(fwrite("FRAME\n", 1, 6, f) == 6 && fwrite(yuv, 1, sizeof yuv, f) == sizeof yuv, "%s", path);
        }
        CHECK(fclose(f) == 0, "%s", path);
        for (int with_pool = 0; with_pool < 2; with_pool++) {
            lp_video_reader_opts o = opts(W, H, 16);
            o.pool = with_pool ? pool : NULL;
            lp_rawvideo_reader *r;
            CHECK(lp_rawvideo_reader_open(path, &o, &r) == LP_OK, "%s", lp_last_error());
            f = fopen(path, "rb");
            CHECK(f && fseek(f, 0, SEEK_SET) == 0, "%s", path);
            while (fgetc(f) != '\n') continue;
            for (int k = 0; k < N; k++) {
                CHECK(fseek(f, 6, SEEK_CUR) == 0 && fread(yuv, 1, sizeof yuv, f) == sizeof yuv, "%s", path);
                ref_yuv420_to_rgb24(yuv, W, H, full, want);
                bool eos;
                if (k % 2) {
                    CHECK(lp_rawvideo_reader_next_rgb24(r, rgb, &eos) == LP_OK && !eos, "%s", lp_last_error());
                    CHECK(!memcmp(rgb, want, sizeof rgb), "full %d, pool %d, frame %d: rgb24 differs", full, with_pool, k);
                } else {
                    CHECK(lp_rawvideo_reader_next(r, planar, &eos) == LP_OK && !eos, "%s", lp_last_error());
                    for (int i = 0; i < W * H * 3; i++)
                        CHECK(planar[(i % 3) * W * H + i / 3] == (float)want[i] / 255.0f,
                              "full %d, pool %d, frame %d, value %d: %g for byte %d", full, with_pool, k, i,
                              planar[(i % 3) * W * H + i / 3], want[i]);
                }
            }
            fclose(f);
            lp_rawvideo_reader_close(r);
        }
    }
    /* rgb24 <-> planar with the pool */
    for (size_t i = 0; i < sizeof rgb; i++) rgb[i] = (uint8_t)next_random(&seed);
    lp_video_rgb24_to_planar(rgb, W, H, planar, pool);
    for (int i = 0; i < W * H * 3; i++)
        CHECK(planar[(i % 3) * W * H + i / 3] == (float)rgb[i] / 255.0f, "rgb24 -> planar, value %d", i);
    lp_video_planar_to_rgb24(planar, W, H, want, pool);
    CHECK(!memcmp(rgb, want, sizeof rgb), "planar -> rgb24 -> planar is not exact");

    /* writers: from floats and from rgb24, y4m and raw, against the reference */
    for (int fmt = 0; fmt < 2; fmt++) {
        lp_rawvideo_format rf = fmt ? LP_RAWVIDEO_RGB24 : LP_RAWVIDEO_Y4M;
        const char *paths[2] = {tmp_path(fmt ? "wf.rgb" : "wf.y4m"), tmp_path(fmt ? "wb.rgb" : "wb.y4m")};
        lp_rawvideo_writer *w[2];
        CHECK(lp_rawvideo_writer_open(paths[0], rf, WW, WH, 16, pool, &w[0]) == LP_OK, "%s", lp_last_error());
        CHECK(lp_rawvideo_writer_open(paths[1], rf, WW, WH, 16, NULL, &w[1]) == LP_OK, "%s", lp_last_error());
        size_t header = fmt ? 0 : strlen("YUV4MPEG2 W50 H30 F16:1 Ip A1:1 C420jpeg XCOLORRANGE=LIMITED\n");
        size_t frame = fmt ? sizeof wrgb : 6 + sizeof wyuv, n = header + N * frame;
        uint8_t *expect = got[1];
        for (int k = 0; k < N; k++) {
            for (int i = 0; i < WW * WH * 3; i++) {
                uint32_t u = next_random(&seed);
                float v = (float)(u % 2600) / 2000.0f - 0.15f; /* [-0.15, 1.15) */
                if (u % 97 == 0) v = NAN;
                if (u % 89 == 0) v = ((float)(u % 256) + 0.5f) / 255.0f; /* rounding edges */
                fl[i] = v;
            }
            for (int i = 0; i < WW * WH * 3; i++) wrgb[i] = ref_unit_byte(fl[(i % 3) * WW * WH + i / 3]);
            CHECK(lp_rawvideo_writer_push(w[0], fl) == LP_OK, "%s", lp_last_error());
            CHECK(lp_rawvideo_writer_push_rgb24(w[1], wrgb) == LP_OK, "%s", lp_last_error());
            uint8_t *e = expect + header + k * frame;
            if (fmt) {
                memcpy(e, wrgb, sizeof wrgb);
            } else {
                memcpy(e, "FRAME\n", 6);
                ref_rgb24_to_yuv420(wrgb, WW, WH, e + 6);
            }
        }
        CHECK(lp_rawvideo_writer_close(w[0]) == LP_OK && lp_rawvideo_writer_close(w[1]) == LP_OK, "%s",
              lp_last_error());
        if (read_file(paths[0], got[0], n)) return 1;
        CHECK(!memcmp(got[0] + header, expect + header, n - header), "%s: frames from floats differ", paths[0]);
        if (read_file(paths[1], got[0], n)) return 1;
        CHECK(!memcmp(got[0] + header, expect + header, n - header), "%s: frames from rgb24 differ", paths[1]);
    }
    lp_pool_destroy(pool);
    return 0;
}

/* Raw rgb24 at src_fps read back at 16 fps: source indices and exact bytes. */
static int resample_raw(double src_fps, int frames, const int *want_src, int want_n) {
    enum { W = 32, H = 16 };
    static uint8_t rgb[W * H * 3], got[W * H * 3];
    const char *path = tmp_path("syn.rgb");
    lp_rawvideo_writer *w;
    CHECK(lp_rawvideo_writer_open(path, LP_RAWVIDEO_RGB24, W, H, src_fps, NULL, &w) == LP_OK, "%s", lp_last_error());
    for (int i = 0; i < frames; i++) {
        fill_frame(rgb, W, H, i);
        CHECK(lp_rawvideo_writer_push_rgb24(w, rgb) == LP_OK, "%s", lp_last_error());
    }
    CHECK(lp_rawvideo_writer_close(w) == LP_OK, "%s", lp_last_error());
    lp_video_reader_opts o = opts(W, H, 16);
    o.input_format = "rgb24", o.raw_width = W, o.raw_height = H, o.raw_fps = src_fps;
    lp_rawvideo_reader *r;
    CHECK(lp_rawvideo_reader_open(path, &o, &r) == LP_OK, "%s", lp_last_error());
    CHECK(lp_rawvideo_reader_info(r)->frame_count == frames && lp_rawvideo_reader_info(r)->output_frames == want_n,
          "info: %lld frames, %lld output frames", (long long)lp_rawvideo_reader_info(r)->frame_count,
          (long long)lp_rawvideo_reader_info(r)->output_frames);
    int k = 0;
    for (bool eos = false;;) {
        CHECK(lp_rawvideo_reader_next_rgb24(r, got, &eos) == LP_OK, "%s", lp_last_error());
        if (eos) break;
        CHECK(k < want_n && lp_rawvideo_reader_source_index(r) == want_src[k], "output %d: source %lld", k,
              (long long)lp_rawvideo_reader_source_index(r));
        fill_frame(rgb, W, H, want_src[k]);
        CHECK(!memcmp(rgb, got, sizeof rgb), "output %d: bytes differ from source %d", k, want_src[k]);
        k++;
    }
    lp_rawvideo_reader_close(r);
    CHECK(k == want_n, "%d output frames, want %d", k, want_n);
    return 0;
}

static int test_resample(void) {
    for (size_t i = 0; i < sizeof resample_cases / sizeof *resample_cases; i++) {
        const resample_case *c = &resample_cases[i];
        if (resample_raw(c->src_fps, c->frames, c->want, c->want_n)) return 1;
    }
    return 0;
}

/* Synthetic frames through the y4m writer and reader: 4:2:0 of smooth content. */
static int test_y4m_roundtrip(void) {
    enum { W = 64, H = 48, N = 5 };
    static uint8_t rgb[W * H * 3], got[W * H * 3];
    const char *path = tmp_path("rt.y4m");
    lp_rawvideo_writer *w;
    CHECK(lp_rawvideo_writer_open(path, LP_RAWVIDEO_Y4M, W, H, 16, NULL, &w) == LP_OK, "%s", lp_last_error());
    for (int i = 0; i < N; i++) {
        fill_frame(rgb, W, H, i);
        CHECK(lp_rawvideo_writer_push_rgb24(w, rgb) == LP_OK, "%s", lp_last_error());
    }
    CHECK(lp_rawvideo_writer_close(w) == LP_OK, "%s", lp_last_error());
    lp_video_reader_opts o = opts(W, H, 16);
    lp_rawvideo_reader *r;
    CHECK(lp_rawvideo_reader_open(path, &o, &r) == LP_OK, "%s", lp_last_error());
    const lp_video_info *in = lp_rawvideo_reader_info(r);
    CHECK(in->fps == 16 && in->frame_count == N && in->output_frames == N && !strcmp(in->codec, "rawvideo"),
          "info: %g fps, %lld frames", in->fps, (long long)in->frame_count);
    double worst = INFINITY;
    int k = 0, maxd;
    for (bool eos = false;; k++) {
        CHECK(lp_rawvideo_reader_next_rgb24(r, got, &eos) == LP_OK, "%s", lp_last_error());
        if (eos) break;
        fill_frame(rgb, W, H, k);
        double p = psnr_u8(rgb, got, sizeof rgb, &maxd);
        if (p < worst) worst = p;
    }
    lp_rawvideo_reader_close(r);
    printf("    %d frames %dx%d, worst PSNR %.1f dB\n", k, W, H, worst);
    CHECK(k == N && worst > 30, "%d frames, PSNR %.1f", k, worst); /* 4:2:0 of a synthetic pattern */
    return 0;
}

/* Reads path with lp_video_reader and with lp_rawvideo_reader at fps and
 * compares frame by frame (source index, bytes), and the counts. */
static int compare_readers(const char *path, int W, int H, double fps, double min_psnr, int max_allowed) {
    lp_video_reader_opts o = opts(W, H, fps);
    lp_video_reader *ref;
    lp_rawvideo_reader *raw;
    CHECK(lp_video_reader_open(path, &o, &ref) == LP_OK, "%s", lp_last_error());
    CHECK(lp_rawvideo_reader_open(path, &o, &raw) == LP_OK, "%s", lp_last_error());
    const lp_video_info *a = lp_video_reader_info(ref), *b = lp_rawvideo_reader_info(raw);
    CHECK(a->width == b->width && a->height == b->height && fabs(a->fps - b->fps) < 1e-9 &&
              a->frame_count == b->frame_count && a->output_frames == b->output_frames,
          "info: %dx%d %g fps %lld frames %lld out vs %dx%d %g fps %lld frames %lld out", a->width, a->height, a->fps,
          (long long)a->frame_count, (long long)a->output_frames, b->width, b->height, b->fps,
          (long long)b->frame_count, (long long)b->output_frames);
    size_t n = (size_t)W * H * 3;
    uint8_t *x = malloc(n), *y = malloc(n);
    CHECK(x && y, "out of memory");
    double worst = INFINITY;
    int k = 0, worst_diff = 0, rc = 0;
    for (;; k++) {
        bool e1, e2;
        if (lp_video_reader_next_rgb24(ref, x, &e1) != LP_OK || lp_rawvideo_reader_next_rgb24(raw, y, &e2) != LP_OK) {
            fprintf(stderr, "  frame %d: %s\n", k, lp_last_error());
            rc = 1;
            break;
        }
        if (e1 != e2 || (!e1 && lp_video_reader_source_index(ref) != lp_rawvideo_reader_source_index(raw))) {
            fprintf(stderr, "  output %d: eos %d/%d, source %lld/%lld\n", k, e1, e2,
                    (long long)lp_video_reader_source_index(ref), (long long)lp_rawvideo_reader_source_index(raw));
            rc = 1;
            break;
        }
        if (e1) break;
        int d;
        double p = psnr_u8(x, y, n, &d);
        if (p < worst) worst = p;
        if (d > worst_diff) worst_diff = d;
    }
    lp_video_reader_close(ref);
    lp_rawvideo_reader_close(raw);
    free(x);
    free(y);
    printf("    %s at %g fps: %d frames, same source frames, PSNR >= %.1f dB, max |diff| %d\n",
           strrchr(path, '/') + 1, fps, k, worst, worst_diff);
    CHECK(rc == 0 && k > 0 && worst >= min_psnr && worst_diff <= max_allowed, "PSNR %.1f, max diff %d", worst,
          worst_diff);
    return 0;
}

/* 20 frames of a real clip, written as y4m at 10 fps by rawvideo's writer,
 * read by both readers at 16 fps (repeats) and 7 fps (drops). */
static int test_vs_reader(void) {
    const char *clip = lp_test_shared("data/vtest_768x576.avi");
    if (!clip) return lp_test_skip_shared("data/vtest_768x576.avi");
    enum { W = 320, H = 240, N = 20 };
    static uint8_t rgb[W * H * 3];
    lp_video_reader_opts o = opts(W, H, 10);
    lp_video_reader *r;
    lp_rawvideo_writer *w;
    const char *path = tmp_path("vtest.y4m");
    lp_status s = lp_video_reader_open(clip, &o, &r);
    if (s == LP_ERR_UNSUPPORTED) { /* a build without FFmpeg */
        printf("  (skipping: %s)\n", lp_last_error());
        return LP_TEST_SKIP;
    }
    CHECK(s == LP_OK, "%s", lp_last_error());
    CHECK(lp_rawvideo_writer_open(path, LP_RAWVIDEO_Y4M, W, H, 10, NULL, &w) == LP_OK, "%s", lp_last_error());
    for (int i = 0; i < N; i++) {
        bool eos;
        CHECK(lp_video_reader_next_rgb24(r, rgb, &eos) == LP_OK && !eos, "%s", lp_last_error());
        CHECK(lp_rawvideo_writer_push_rgb24(w, rgb) == LP_OK, "%s", lp_last_error());
    }
    lp_video_reader_close(r);
    CHECK(lp_rawvideo_writer_close(w) == LP_OK, "%s", lp_last_error());
    /* swscale's fixed-point yuv -> rgb against the float one here: off by a
     * few levels at most */
    if (compare_readers(path, W, H, 16, 40, 4)) return 1;
    return compare_readers(path, W, H, 7, 40, 4);
}

/* y4m files from the ffmpeg CLI: yuv420p (limited range), yuvj420p (full
 * range, XCOLORRANGE=FULL) and yuv422p (refused). */
static int test_ffmpeg_y4m(void) {
    const char *clip = lp_test_shared("data/megamind_720x528.avi");
    if (!clip) return lp_test_skip_shared("data/megamind_720x528.avi");
    if (!have_tool("ffmpeg")) return LP_TEST_SKIP;
    static const char *const fmts[] = {"yuv420p", "yuvj420p", "yuv422p"};
    for (int i = 0; i < 3; i++) {
        const char *path = tmp_path("ff.y4m");
        char cmd[1024];
        snprintf(cmd, sizeof cmd,
                 "ffmpeg -v error -y -i '%s' -frames:v 12 -vf scale=256:192 -pix_fmt %s -strict -1 '%s'", clip,
                 fmts[i], path);
        CHECK(system(cmd) == 0, "%s", cmd);
        if (i < 2) {
            if (compare_readers(path, 256, 192, 16, 40, 4)) return 1;
            continue;
        }
        lp_video_reader_opts o = opts(256, 192, 16);
        lp_rawvideo_reader *r = (lp_rawvideo_reader *)1;
        lp_status s = lp_rawvideo_reader_open(path, &o, &r);
        printf("    %-11s %s\n", lp_status_name(s), lp_last_error());
        CHECK(s == LP_ERR_UNSUPPORTED && !r && strstr(lp_last_error(), "C422"), "%s", lp_last_error());
    }
    return 0;
}

static int write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(data, 1, n, f) == n && fclose(f) == 0, "%s", path);
    return 0;
}

static int expect_open_error(const char *path, const lp_video_reader_opts *o, lp_status want, const char *needle) {
    lp_rawvideo_reader *r = (lp_rawvideo_reader *)1;
    lp_status s = lp_rawvideo_reader_open(path, o, &r);
    printf("    %-11s %s\n", lp_status_name(s), lp_last_error());
    CHECK(s == want && r == NULL, "%s: got %s (%s)", path, lp_status_name(s), lp_last_error());
    CHECK(strstr(lp_last_error(), path) && strstr(lp_last_error(), needle), "message: %s", lp_last_error());
    return 0;
}

static int test_errors(void) {
    lp_video_reader_opts o = opts(32, 16, 16);
    if (expect_open_error(tmp_path("missing.y4m"), &o, LP_ERR_IO, "No such file")) return 1;
    const char *txt = tmp_path("notes.mp4");
    if (write_file(txt, "this is a text file, not a video\n", 33)) return 1;
    if (expect_open_error(txt, &o, LP_ERR_FORMAT, "not a y4m stream")) return 1;
    const char *p = tmp_path("bad.y4m");
    static const struct {
        const char *header, *needle;
        lp_status want;
    } bad[] = {
        {"YUV4MPEG2 W32 H16 F16:1 C444\n", "C444", LP_ERR_UNSUPPORTED},
        {"YUV4MPEG2 W32 H16 F16:1 C420p10 XYSCSS=420P10\n", "C420p10", LP_ERR_UNSUPPORTED},
        {"YUV4MPEG2 W32 H16 C420jpeg\n", "frame rate", LP_ERR_FORMAT},
        {"YUV4MPEG2 W32 F16:1\n", "frame size", LP_ERR_FORMAT},
        {"YUV4MPEG2 W32 H16 F16:0\n", "F16:0", LP_ERR_FORMAT},
        {"YUV4MPEG2 W64 H48 F16:1\nFRAME\n", "64x48", LP_ERR_UNSUPPORTED}, /* not resized */
        {"YUV4MPEG2 W32 H16 F16:1\n", "no decodable video frame", LP_ERR_FORMAT},
        {"YUV4MPEG2 W32 H16 F16:1\nFRAME\nabc", "truncated frame 0", LP_ERR_FORMAT},
        {"YUV4MPEG2 W32 H16 F16:1\nFRAMX\n", "FRAME", LP_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (write_file(p, bad[i].header, strlen(bad[i].header))) return 1;
        if (expect_open_error(p, &o, bad[i].want, bad[i].needle)) return 1;
    }
    o.input_format = "rgb24";
    if (expect_open_error(txt, &o, LP_ERR_ARG, "size and fps")) return 1;
    o.input_format = "gif";
    if (expect_open_error(txt, &o, LP_ERR_ARG, "unknown input format")) return 1;

    /* a frame cut short after a good one: the good one is delivered, then the error */
    enum { W = 32, H = 16 };
    static uint8_t rgb[W * H * 3];
    lp_rawvideo_writer *w;
    CHECK(lp_rawvideo_writer_open(p, LP_RAWVIDEO_Y4M, W, H, 16, NULL, &w) == LP_OK, "%s", lp_last_error());
    CHECK(lp_rawvideo_writer_push_rgb24(w, rgb) == LP_OK && lp_rawvideo_writer_close(w) == LP_OK, "%s",
          lp_last_error());
    FILE *f = fopen(p, "ab");
    CHECK(f && fputs("FRAME\nshort", f) >= 0 && fclose(f) == 0, "%s", p);
    lp_rawvideo_reader *r;
    lp_video_reader_opts o2 = opts(W, H, 16);
    CHECK(lp_rawvideo_reader_open(p, &o2, &r) == LP_OK, "%s", lp_last_error());
    bool eos;
    CHECK(lp_rawvideo_reader_next_rgb24(r, rgb, &eos) == LP_OK && !eos, "%s", lp_last_error());
    lp_status s = lp_rawvideo_reader_next_rgb24(r, rgb, &eos);
    printf("    %-11s %s\n", lp_status_name(s), lp_last_error());
    CHECK(s == LP_ERR_FORMAT && strstr(lp_last_error(), "truncated frame 1"), "%s", lp_last_error());
    CHECK(lp_rawvideo_reader_next_rgb24(r, rgb, &eos) == LP_ERR_FORMAT, "errors are final");
    lp_rawvideo_reader_close(r);

    lp_rawvideo_writer *wr = (lp_rawvideo_writer *)1;
    CHECK(lp_rawvideo_writer_open("/nonexistent-dir/o.y4m", LP_RAWVIDEO_Y4M, W, H, 16, NULL, &wr) == LP_ERR_IO && !wr,
          "%s", lp_last_error());
    CHECK(lp_rawvideo_writer_open(p, LP_RAWVIDEO_Y4M, 31, 16, 16, NULL, &wr) == LP_ERR_ARG && !wr &&
              strstr(lp_last_error(), "even"),
          "%s", lp_last_error());
    return 0;
}

int main(void) {
    lp_test_run("resample_rgb24", test_resample);
    lp_test_run("y4m_roundtrip", test_y4m_roundtrip);
    lp_test_run("y4m_vs_lp_video_reader", test_vs_reader);
    lp_test_run("y4m_from_ffmpeg_cli", test_ffmpeg_y4m);
    lp_test_run("float_frames_and_pool", test_float_frames);
    lp_test_run("errors", test_errors);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", lp_test_tmpdir());
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", lp_test_tmpdir());
    return lp_test_finish();
}
