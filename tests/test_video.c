/* Tests of src/io/video: decoding the clips in ../shared/data with 16 fps
 * resampling (frame counts from each clip's rate and frame count, the frame
 * shown at each output time from ffprobe's timestamps and a naive reference of
 * the nearest-frame rule), resizing against the ffmpeg CLI with the same filters,
 * an encode/decode round trip (PSNR), y4m to a pipe read by ffprobe, stdin
 * input, the conversion pools (same frames and files as without), and the
 * error cases. Cases that need the ffmpeg/ffprobe CLIs skip when
 * they are absent.
 *
 * Leaks: video.c frees everything it allocates; the test runs clean under
 * `make SAN=1` with LeakSanitizer on (no ASAN_OPTIONS needed). */
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/io/video.h"
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

static lp_video_reader_opts opts_size(int w, int h) {
    lp_video_reader_opts o;
    lp_video_reader_opts_default(&o);
    o.width = w, o.height = h;
    return o;
}

static double sq_err(const uint8_t *a, const uint8_t *b, size_t n) {
    double se = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        se += d * d;
    }
    return se;
}

/* PSNR of 8-bit data from the summed squared error of n values. */
static double psnr(double se, size_t n) { return se == 0 ? INFINITY : 10.0 * log10(255.0 * 255.0 * n / se); }

static double psnr_u8(const uint8_t *a, const uint8_t *b, size_t n) { return psnr(sq_err(a, b, n), n); }

/* A synthetic rgb24 frame whose every byte encodes the frame index. */
static void fill_frame(uint8_t *rgb, int w, int h, int index) {
    for (int i = 0; i < w * h * 3; i++) rgb[i] = (uint8_t)(index * 20 + (i % 3) * 5 + (i / 3 % w) % 7);
}

/* The clips and what ffprobe reports for them (stream r_frame_rate, nb_frames). */
static const struct clip {
    const char *name;
    int width, height;
    int64_t rate_num, rate_den, frames;
    const char *codec;
} clips[] = {
    {"data/vtest_768x576.avi", 768, 576, 10, 1, 795, "msmpeg4"},
    {"data/megamind_720x528.avi", 720, 528, 2997, 125, 270, "mpeg4"},
    {"data/tree_320x240.avi", 320, 240, 1000000, 66667, 444, "cinepak"},
    {"data/wan_cheesecake_832x480.mp4", 832, 480, 30, 1, 81, "mpeg4"},
};

static int test_check_size(void) {
    CHECK(lp_video_check_size(832, 480) == LP_OK, "%s", lp_last_error());
    CHECK(lp_video_check_size(16, 16) == LP_OK, "%s", lp_last_error());
    CHECK(lp_video_check_size(830, 480) == LP_ERR_ARG, "%s", lp_last_error());
    CHECK(strstr(lp_last_error(), "830x480"), "%s", lp_last_error());
    CHECK(lp_video_check_size(832, 0) == LP_ERR_ARG, "%s", lp_last_error());
    CHECK(lp_video_check_size(-16, 480) == LP_ERR_ARG, "%s", lp_last_error());
    return 0;
}

/* Decoded-frame timestamps of a clip's video from ffprobe, relative to the
 * first frame, in stream time-base units (*tb_num / *tb_den seconds). Returns
 * the frame count, or -1 without ffprobe. */
static int64_t probe_pts(const char *path, int64_t *pts, int64_t cap, int64_t *tb_num, int64_t *tb_den) {
    if (!have_tool("ffprobe")) return -1;
    char cmd[1024];
    snprintf(
        cmd, sizeof cmd,
        "ffprobe -v error -select_streams v:0 -show_entries stream=time_base:frame=best_effort_timestamp "
        "-of csv=p=0 '%s'",
        path);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[128];
    int64_t n = 0;
    long long a, b;
    while (fgets(line, sizeof line, p)) {
        if (sscanf(line, "%lld/%lld", &a, &b) == 2)
            *tb_num = a, *tb_den = b;
        else if (sscanf(line, "%lld", &a) == 1 && n < cap)
            pts[n++] = a;
    }
    pclose(p);
    for (int64_t i = n - 1; i >= 0; i--) pts[i] -= pts[0];
    return n;
}

/* Naive reference of the resampling rule: the frame whose time is nearest to
 * k / 16, the earlier one on a tie. */
static int64_t nearest_frame(const int64_t *pts, int64_t n, int64_t tb_num, int64_t tb_den, int64_t k) {
    int64_t best = 0, best_d = INT64_MAX;
    for (int64_t i = 0; i < n; i++) {
        int64_t d = llabs(pts[i] * tb_num * 16 - k * tb_den); /* in 1 / (16 tb_den) s */
        if (d < best_d) best = i, best_d = d;
    }
    return best;
}

/* Whole clips at 64x48 (cheap to scale): N frames at rate r give
 * floor((N - 1/2) * 16 / r) + 1 output frames, and output k shows the frame
 * that ffprobe's timestamps put nearest to k / 16. */
static int test_counts(void) {
    static int64_t pts[1024];
    for (size_t c = 0; c < sizeof clips / sizeof clips[0]; c++) {
        const struct clip *cl = &clips[c];
        const char *path = lp_test_shared(cl->name);
        if (!path) return lp_test_skip_shared(cl->name);
        int64_t tb_num = 0, tb_den = 1;
        int64_t npts = probe_pts(path, pts, 1024, &tb_num, &tb_den);
        lp_video_reader_opts o = opts_size(64, 48);
        lp_video_reader *r;
        CHECK(lp_video_reader_open(path, &o, &r) == LP_OK, "%s", lp_last_error());
        const lp_video_info *in = lp_video_reader_info(r);
        int64_t want = (2 * cl->frames - 1) * 16 * cl->rate_den / (2 * cl->rate_num) + 1;
        CHECK(in->width == cl->width && in->height == cl->height, "%s: %dx%d", cl->name, in->width,
              in->height);
        CHECK(fabs(in->fps - (double)cl->rate_num / cl->rate_den) < 1e-6, "%s: fps %g", cl->name, in->fps);
        CHECK(in->frame_count == cl->frames, "%s: %lld frames", cl->name, (long long)in->frame_count);
        CHECK(in->output_frames == want, "%s: estimate %lld, want %lld", cl->name,
              (long long)in->output_frames, (long long)want);
        CHECK(!strcmp(in->codec, cl->codec), "%s: codec %s", cl->name, in->codec);
        static uint8_t rgb[64 * 48 * 3];
        int64_t k = 0, last = -1;
        bool eos = false;
        while (!eos) {
            CHECK(lp_video_reader_next_rgb24(r, rgb, &eos) == LP_OK, "%s", lp_last_error());
            if (eos) break;
            last = lp_video_reader_source_index(r);
            int64_t src = npts > 0 ? nearest_frame(pts, npts, tb_num, tb_den, k) : last;
            CHECK(last == src, "%s: output %lld shows source %lld, want %lld", cl->name, (long long)k,
                  (long long)last, (long long)src);
            k++;
        }
        bool again;
        CHECK(lp_video_reader_next_rgb24(r, rgb, &again) == LP_OK && again, "%s", lp_last_error());
        lp_video_reader_close(r);
        CHECK(k == want, "%s: %lld output frames, want %lld", cl->name, (long long)k, (long long)want);
        printf("    %-34s %4lld frames (%lld decoded) @ %6.3f fps -> %4lld @ 16 fps%s\n", cl->name,
               (long long)cl->frames, (long long)npts, (double)cl->rate_num / cl->rate_den, (long long)k,
               npts < 0 ? " (no ffprobe: mapping unchecked)" : "");
    }
    return 0;
}

/* First 2 s of each clip at the default 832x480 as f32 planar: sizes, range,
 * and that the picture moves. */
static int test_first_two_seconds(void) {
    size_t n = 3 * 832 * 480;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    CHECK(a && b, "%s", lp_last_error());
    for (size_t c = 0; c < sizeof clips / sizeof clips[0]; c++) {
        const char *path = lp_test_shared(clips[c].name);
        if (!path) {
            free(a), free(b);
            return lp_test_skip_shared(clips[c].name);
        }
        lp_video_reader *r;
        CHECK(lp_video_reader_open(path, NULL, &r) == LP_OK, "%s", lp_last_error());
        float lo = 1, hi = 0;
        for (int k = 0; k < 32; k++) {
            bool eos;
            float *x = k ? b : a;
            CHECK(lp_video_reader_next(r, x, &eos) == LP_OK && !eos, "%s frame %d: %s", path, k,
                  lp_last_error());
            for (size_t i = 0; i < n; i++) lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
        }
        double change = lp_max_abs_diff(a, b, n);
        lp_video_reader_close(r);
        CHECK(lo >= 0 && hi <= 1 && hi - lo > 0.5f, "%s: range [%g, %g]", path, lo, hi);
        CHECK(change > 0.1, "%s: frame 31 equals frame 0", path);
    }
    free(a), free(b);
    return 0;
}

/* Frame 0 of a clip through our reader vs the ffmpeg CLI with the same filter
 * chain (area scaling, then crop or pad). */
static int compare_with_cli(const char *clip, lp_video_fit fit, const char *vf) {
    const char *path = lp_test_shared(clip);
    if (!path) return lp_test_skip_shared(clip);
    if (!have_tool("ffmpeg")) return LP_TEST_SKIP;
    const char *ref = tmp_path("ref.rgb");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ffmpeg -v error -y -i '%s' -vf '%s,format=rgb24' -frames:v 1 -f rawvideo '%s'",
             path, vf, ref);
    CHECK(system(cmd) == 0, "%s", cmd);
    size_t n = 832 * 480 * 3;
    uint8_t *want = malloc(n), *got = malloc(n);
    CHECK(want && got, "%s", lp_last_error());
    FILE *f = fopen(ref, "rb");
    CHECK(f && fread(want, 1, n, f) == n, "%s", lp_last_error());
    fclose(f);
    lp_video_reader_opts o = opts_size(832, 480);
    o.fit = fit;
    lp_video_reader *r;
    bool eos;
    CHECK(lp_video_reader_open(path, &o, &r) == LP_OK, "%s", lp_last_error());
    CHECK(lp_video_reader_next_rgb24(r, got, &eos) == LP_OK && !eos, "%s", lp_last_error());
    lp_video_reader_close(r);
    int maxd = 0;
    for (size_t i = 0; i < n; i++)
        maxd = abs((int)want[i] - got[i]) > maxd ? abs((int)want[i] - got[i]) : maxd;
    double p = psnr_u8(got, want, n);
    printf("    %s vs ffmpeg -vf %s: max |diff| %d, PSNR %.1f dB\n", clip, vf, maxd, p);
    free(want), free(got);
    CHECK(maxd <= 2, "max |diff| %d", maxd);
    return 0;
}

static int test_stretch_vs_cli(void) {
    return compare_with_cli("data/megamind_720x528.avi", LP_VIDEO_FIT_STRETCH, "scale=832:480:flags=area");
}
static int test_crop_vs_cli(void) { /* 4:3 covers 832x480 at 832x624 */
    return compare_with_cli("data/vtest_768x576.avi", LP_VIDEO_FIT_CROP,
                            "scale=832:624:flags=area,crop=832:480");
}
static int test_pad_vs_cli(void) { /* 4:3 fits 832x480 at 640x480 */
    return compare_with_cli("data/tree_320x240.avi", LP_VIDEO_FIT_PAD,
                            "scale=640:480:flags=area,pad=832:480:96:0:black");
}

/* 16 frames (1 s) of the Wan clip at its native size -> writer -> reader. */
static int roundtrip(const char *file, const char *codec, double min_psnr) {
    const char *src = lp_test_shared("data/wan_cheesecake_832x480.mp4");
    if (!src) return lp_test_skip_shared("data/wan_cheesecake_832x480.mp4");
    enum { N = 16, W = 832, H = 480 };
    size_t fn = (size_t)W * H * 3;
    uint8_t *orig = malloc(N * fn), *back = malloc(fn);
    float *planar = malloc(fn * sizeof *planar);
    CHECK(orig && back && planar, "%s", lp_last_error());
    lp_video_reader *r;
    CHECK(lp_video_reader_open(src, NULL, &r) == LP_OK, "%s", lp_last_error());
    const char *out = tmp_path(file);
    lp_video_writer_opts wo = {.codec = codec};
    lp_video_writer *w;
    CHECK(lp_video_writer_open(out, W, H, 16, &wo, &w) == LP_OK, "%s", lp_last_error());
    for (int k = 0; k < N; k++) {
        bool eos;
        CHECK(lp_video_reader_next(r, planar, &eos) == LP_OK && !eos, "%s", lp_last_error());
        lp_video_planar_to_rgb24(planar, W, H, orig + k * fn, NULL);
        CHECK(lp_video_writer_push(w, planar) == LP_OK, "%s", lp_last_error());
    }
    lp_video_reader_close(r);
    char used[32];
    snprintf(used, sizeof used, "%s", lp_video_writer_codec(w));
    CHECK(lp_video_writer_close(w) == LP_OK, "%s", lp_last_error());

    CHECK(lp_video_reader_open(out, NULL, &r) == LP_OK, "%s", lp_last_error());
    const lp_video_info *in = lp_video_reader_info(r);
    CHECK(in->width == W && in->height == H && fabs(in->fps - 16) < 1e-9, "%dx%d %g fps", in->width,
          in->height, in->fps);
    double worst = INFINITY, se = 0;
    int k = 0;
    for (bool eos = false;;) {
        CHECK(lp_video_reader_next_rgb24(r, back, &eos) == LP_OK, "%s", lp_last_error());
        if (eos) break;
        CHECK(k < N && lp_video_reader_source_index(r) == k, "frame %d", k);
        double e = sq_err(back, orig + k * fn, fn);
        worst = fmin(worst, psnr(e, fn));
        se += e;
        k++;
    }
    lp_video_reader_close(r);
    double mean = psnr(se, N * fn);
    printf("    %s (%s): %d frames, PSNR %.2f dB overall, worst frame %.2f dB\n", file, used, k, mean, worst);
    free(orig), free(back), free(planar);
    CHECK(k == N, "%d frames back, wrote %d", k, N);
    CHECK(worst >= min_psnr, "PSNR %.2f < %.1f", worst, min_psnr);
    return 0;
}

static int test_roundtrip_default(void) { return roundtrip("rt.mp4", NULL, 35); }
static int test_roundtrip_mpeg4(void) { return roundtrip("rt.mkv", "mpeg4", 35); }

/* Float frames of a clip read with and without a conversion pool are the
 * same, and so are the y4m files written from them with and without one and
 * the frames of the mpeg4 files (Matroska files differ by their random
 * segment UID). */
static int test_pools(void) {
    const char *src = lp_test_shared("data/wan_cheesecake_832x480.mp4");
    if (!src) return lp_test_skip_shared("data/wan_cheesecake_832x480.mp4");
    enum { N = 6, W = 832, H = 480 };
    size_t n = (size_t)3 * W * H;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    lp_pool *rp, *wp;
    CHECK(a && b && lp_pool_create(3, &rp) == LP_OK && lp_pool_create(2, &wp) == LP_OK, "%s", lp_last_error());
    lp_video_reader_opts o = opts_size(W, H);
    lp_video_reader *r[2];
    CHECK(lp_video_reader_open(src, &o, &r[0]) == LP_OK, "%s", lp_last_error());
    o.pool = rp;
    CHECK(lp_video_reader_open(src, &o, &r[1]) == LP_OK, "%s", lp_last_error());
    const char *names[2][2] = {{"np.y4m", "p.y4m"}, {"np.mkv", "p.mkv"}};
    lp_video_writer *w[2][2];
    for (int f = 0; f < 2; f++)
        for (int p = 0; p < 2; p++) {
            lp_video_writer_opts wo = {.codec = "mpeg4", .pool = p ? wp : NULL};
            CHECK(lp_video_writer_open(tmp_path(names[f][p]), W, H, 16, &wo, &w[f][p]) == LP_OK, "%s",
                  lp_last_error());
        }
    for (int k = 0; k < N; k++) {
        bool e1, e2;
        CHECK(lp_video_reader_next(r[0], a, &e1) == LP_OK && lp_video_reader_next(r[1], b, &e2) == LP_OK && !e1 && !e2,
              "%s", lp_last_error());
        CHECK(!memcmp(a, b, n * sizeof *a), "frame %d differs with the pool", k);
        for (int f = 0; f < 2; f++)
            CHECK(lp_video_writer_push(w[f][0], a) == LP_OK && lp_video_writer_push(w[f][1], b) == LP_OK, "%s",
                  lp_last_error());
    }
    for (int f = 0; f < 2; f++)
        CHECK(lp_video_writer_close(w[f][0]) == LP_OK && lp_video_writer_close(w[f][1]) == LP_OK, "%s",
              lp_last_error());
    lp_video_reader_close(r[0]);
    lp_video_reader_close(r[1]);
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", tmp_path(names[0][0]), tmp_path(names[0][1]));
    CHECK(system(cmd) == 0, "%s and %s differ", names[0][0], names[0][1]);
    uint8_t *x = (uint8_t *)a, *y = (uint8_t *)b; /* rgb24 frames fit in the float buffers */
    o.pool = NULL;
    CHECK(lp_video_reader_open(tmp_path(names[1][0]), &o, &r[0]) == LP_OK &&
              lp_video_reader_open(tmp_path(names[1][1]), &o, &r[1]) == LP_OK,
          "%s", lp_last_error());
    for (int k = 0;; k++) {
        bool e1, e2;
        CHECK(lp_video_reader_next_rgb24(r[0], x, &e1) == LP_OK && lp_video_reader_next_rgb24(r[1], y, &e2) == LP_OK &&
                  e1 == e2,
              "%s", lp_last_error());
        if (e1) {
            CHECK(k == N, "%d frames in the mpeg4 files", k);
            break;
        }
        CHECK(!memcmp(x, y, n), "mpeg4 frame %d differs with the pool", k);
    }
    lp_video_reader_close(r[0]);
    lp_video_reader_close(r[1]);
    lp_pool_destroy(rp);
    lp_pool_destroy(wp);
    free(a), free(b);
    printf("    %d frames %dx%d: same floats, same y4m file and mpeg4 frames with the pools\n", N, W, H);
    return 0;
}

/* Synthetic raw rgb24 at a given rate, read back at 16 fps (exact bytes: same
 * size and format is a copy). */
static int resample_raw(double src_fps, int frames, const int *want_src, int want_n) {
    enum { W = 64, H = 48 };
    static uint8_t rgb[W * H * 3], got[W * H * 3];
    const char *path = tmp_path("syn.rgb");
    lp_video_writer *w;
    CHECK(lp_video_writer_open(path, W, H, src_fps, NULL, &w) == LP_OK, "%s", lp_last_error());
    for (int i = 0; i < frames; i++) {
        fill_frame(rgb, W, H, i);
        CHECK(lp_video_writer_push_rgb24(w, rgb) == LP_OK, "%s", lp_last_error());
    }
    CHECK(lp_video_writer_close(w) == LP_OK, "%s", lp_last_error());
    lp_video_reader_opts o = opts_size(W, H);
    o.input_format = "rgb24", o.raw_width = W, o.raw_height = H, o.raw_fps = src_fps;
    lp_video_reader *r;
    CHECK(lp_video_reader_open(path, &o, &r) == LP_OK, "%s", lp_last_error());
    int k = 0;
    for (bool eos = false;;) {
        CHECK(lp_video_reader_next_rgb24(r, got, &eos) == LP_OK, "%s", lp_last_error());
        if (eos) break;
        CHECK(k < want_n && lp_video_reader_source_index(r) == want_src[k], "output %d", k);
        fill_frame(rgb, W, H, want_src[k]);
        CHECK(!memcmp(rgb, got, sizeof rgb), "output %d: bytes differ from source %d", k, want_src[k]);
        k++;
    }
    lp_video_reader_close(r);
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

/* Reads "-" with fd 0 redirected from a file. */
static lp_status open_stdin_from(const char *file, const lp_video_reader_opts *o, lp_video_reader **r,
                                 int *saved) {
    int fd = open(file, O_RDONLY);
    *saved = dup(0);
    dup2(fd, 0);
    close(fd);
    return lp_video_reader_open("-", o, r);
}

static void restore_stdin(int saved) {
    dup2(saved, 0);
    close(saved);
}

static int test_stdin(void) {
    enum { W = 64, H = 48, N = 6 };
    static uint8_t rgb[N][W * H * 3], got[W * H * 3];
    static float planar[3 * W * H], back[3 * W * H];
    const char *y4m = tmp_path("in.y4m"), *raw = tmp_path("in.rgb");
    lp_video_writer *wy, *wr;
    CHECK(lp_video_writer_open(y4m, W, H, 16, NULL, &wy) == LP_OK, "%s", lp_last_error());
    CHECK(lp_video_writer_open(raw, W, H, 16, NULL, &wr) == LP_OK, "%s", lp_last_error());
    for (int i = 0; i < N; i++) {
        fill_frame(rgb[i], W, H, i);
        CHECK(lp_video_writer_push_rgb24(wy, rgb[i]) == LP_OK &&
                  lp_video_writer_push_rgb24(wr, rgb[i]) == LP_OK,
              "%s", lp_last_error());
    }
    CHECK(lp_video_writer_close(wy) == LP_OK && lp_video_writer_close(wr) == LP_OK, "%s", lp_last_error());

    lp_video_reader_opts o = opts_size(W, H);
    lp_video_reader *r;
    int saved, k = 0;
    lp_status s = open_stdin_from(y4m, &o, &r, &saved);
    CHECK(s == LP_OK, "%s", lp_last_error());
    CHECK(lp_video_reader_info(r)->fps == 16 && !strcmp(lp_video_reader_info(r)->codec, "rawvideo"), "%s",
          lp_last_error());
    for (bool eos = false;; k++) {
        s = lp_video_reader_next_rgb24(r, got, &eos);
        if (s != LP_OK || eos) break;
        if (k >= N || psnr_u8(got, rgb[k], sizeof got) < 30) break; /* 4:2:0 of a synthetic pattern */
    }
    lp_video_reader_close(r);
    restore_stdin(saved);
    CHECK(s == LP_OK && k == N, "y4m from stdin: %d frames: %s", k, lp_last_error());

    o.input_format = "rgb24", o.raw_width = W, o.raw_height = H, o.raw_fps = 16;
    CHECK(open_stdin_from(raw, &o, &r, &saved) == LP_OK, "%s", lp_last_error());
    for (k = 0;; k++) {
        bool eos;
        s = lp_video_reader_next(r, back, &eos);
        if (s != LP_OK || eos) break;
        lp_video_rgb24_to_planar(rgb[k < N ? k : 0], W, H, planar, NULL);
        if (k >= N || memcmp(planar, back, sizeof back)) break; /* exact: byte / 255 both ways */
    }
    lp_video_reader_close(r);
    restore_stdin(saved);
    CHECK(s == LP_OK && k == N, "rgb24 from stdin: %d frames: %s", k, lp_last_error());
    return 0;
}

/* The writer on stdout ("-"), piped into ffprobe; want is ffprobe's line after
 * the codec name (the codec ffprobe should see is derived from the encoder). */
static int pipe_to_ffprobe(const char *format, const char *want) {
    if (!have_tool("ffprobe")) return LP_TEST_SKIP;
    enum { W = 96, H = 64, N = 5 };
    static float planar[3 * W * H];
    const char *res = tmp_path("ffprobe.txt");
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "ffprobe -v error -count_frames -show_entries "
             "stream=codec_name,width,height,nb_read_frames,r_frame_rate "
             "-of csv=p=0 -i - > '%s' 2>&1",
             res);
    fflush(stdout);
    FILE *p = popen(cmd, "w");
    CHECK(p, "popen: %s", cmd);
    int saved = dup(1);
    dup2(fileno(p), 1);
    lp_video_writer_opts o = {.format = format};
    lp_video_writer *w;
    lp_status s = lp_video_writer_open("-", W, H, 16, &o, &w);
    char codec[32] = "";
    if (s == LP_OK) {
        const char *enc = lp_video_writer_codec(w);
        snprintf(codec, sizeof codec, "%s", !strcmp(enc, "libx264") ? "h264" : enc);
    }
    for (int i = 0; s == LP_OK && i < N; i++) {
        lp_test_fill(planar, 3 * W * H, i, 1.0f);
        s = lp_video_writer_push(w, planar);
    }
    if (w) {
        lp_status c = lp_video_writer_close(w);
        if (s == LP_OK) s = c;
    }
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    int rc = pclose(p);
    CHECK(s == LP_OK, "%s", lp_last_error());
    char line[256] = {0};
    FILE *f = fopen(res, "r");
    CHECK(f && fgets(line, sizeof line, f), "%s", res);
    fclose(f);
    line[strcspn(line, "\n")] = 0;
    printf("    %s on a pipe, ffprobe: %s\n", format, line);
    char expect[128];
    snprintf(expect, sizeof expect, "%s,%s", codec, want);
    CHECK(rc == 0 && !strcmp(line, expect), "ffprobe rc %d: '%s', want '%s'", rc, line, expect);
    return 0;
}

static int test_y4m_pipe(void) { return pipe_to_ffprobe("y4m", "96,64,16/1,5"); }
static int test_mp4_pipe(void) { return pipe_to_ffprobe("mp4", "96,64,16/1,5"); }

static int expect_open_error(const char *path, const lp_video_reader_opts *o, lp_status want,
                             const char *needle) {
    lp_video_reader *r = (lp_video_reader *)1;
    lp_status s = lp_video_reader_open(path, o, &r);
    CHECK(s == want, "%s: got %s (%s), want %s", path, lp_status_name(s), lp_last_error(),
          lp_status_name(want));
    CHECK(r == NULL, "%s", lp_last_error());
    CHECK(strstr(lp_last_error(), path) && strstr(lp_last_error(), needle), "message: %s", lp_last_error());
    printf("    %-10s %s\n", lp_status_name(s), lp_last_error());
    return 0;
}

static int test_reader_errors(void) {
    if (expect_open_error(tmp_path("missing.mp4"), NULL, LP_ERR_IO, "No such file")) return 1;
    const char *txt = tmp_path("notes.txt");
    FILE *f = fopen(txt, "w");
    CHECK(f, "%s", lp_last_error());
    fputs("this is a text file, not a video\n", f);
    fclose(f);
    if (expect_open_error(txt, NULL, LP_ERR_FORMAT, "cannot open")) return 1;
    lp_video_reader_opts o = opts_size(830, 480);
    if (expect_open_error(txt, &o, LP_ERR_ARG, "830x480")) return 1;
    o = opts_size(64, 48);
    o.input_format = "rgb24";
    if (expect_open_error(txt, &o, LP_ERR_ARG, "size and fps")) return 1;
    o.input_format = "gif";
    if (expect_open_error(txt, &o, LP_ERR_ARG, "unknown input format")) return 1;

    /* a y4m header with no frame */
    const char *empty = tmp_path("empty.y4m");
    lp_video_writer *w;
    CHECK(lp_video_writer_open(empty, 64, 48, 16, NULL, &w) == LP_OK && lp_video_writer_close(w) == LP_OK,
          "%s", lp_last_error());
    if (expect_open_error(empty, NULL, LP_ERR_FORMAT, "no decodable video frame")) return 1;

    /* the first half of an mp4 whose index (moov) sits at the end */
    const char *src = lp_test_shared("data/wan_cheesecake_832x480.mp4");
    if (src) {
        static char buf[1 << 16];
        const char *cut = tmp_path("cut.mp4");
        FILE *in = fopen(src, "rb"), *out = fopen(cut, "wb");
        CHECK(in && out, "%s", lp_last_error());
        for (int i = 0; i < 8; i++)
            CHECK(fread(buf, 1, sizeof buf, in) == sizeof buf &&
                      fwrite(buf, 1, sizeof buf, out) == sizeof buf,
                  "%s", lp_last_error());
        fclose(in), fclose(out);
        if (expect_open_error(cut, NULL, LP_ERR_FORMAT, "cannot")) return 1;
    }

    if (have_tool("ffmpeg")) {
        const char *wav = tmp_path("audio.wav");
        char cmd[512];
        snprintf(cmd, sizeof cmd, "ffmpeg -v error -y -f lavfi -i anullsrc -t 1 '%s'", wav);
        CHECK(system(cmd) == 0, "%s", cmd);
        if (expect_open_error(wav, NULL, LP_ERR_FORMAT, "no video stream")) return 1;
    }
    return 0;
}

static int expect_writer_error(const char *path, int w, int h, lp_status want, const char *needle) {
    lp_video_writer *wr = (lp_video_writer *)1;
    lp_status s = lp_video_writer_open(path, w, h, 16, NULL, &wr);
    CHECK(s == want && wr == NULL, "%s: got %s (%s)", path, lp_status_name(s), lp_last_error());
    CHECK(strstr(lp_last_error(), path) && strstr(lp_last_error(), needle), "message: %s", lp_last_error());
    printf("    %-10s %s\n", lp_status_name(s), lp_last_error());
    return 0;
}

static int test_writer_errors(void) {
    if (expect_writer_error("/nonexistent-dir/out.mp4", 64, 48, LP_ERR_IO, "cannot open")) return 1;
    if (expect_writer_error("/nonexistent-dir/out.y4m", 64, 48, LP_ERR_IO, "cannot open")) return 1;
    if (expect_writer_error(tmp_path("odd.mp4"), 65, 48, LP_ERR_ARG, "even")) return 1;
    if (expect_writer_error(tmp_path("out.xyz"), 64, 48, LP_ERR_ARG, "unknown output format")) return 1;
    if (expect_writer_error(tmp_path("noext"), 64, 48, LP_ERR_ARG, "extension")) return 1;
    return expect_writer_error(tmp_path("zero.mp4"), 0, 48, LP_ERR_ARG, "0x48");
}

int main(void) {
    lp_test_run("check_size", test_check_size);
    lp_test_run("counts_16fps", test_counts);
    lp_test_run("first_two_seconds_832x480", test_first_two_seconds);
    lp_test_run("stretch_vs_ffmpeg_cli", test_stretch_vs_cli);
    lp_test_run("crop_vs_ffmpeg_cli", test_crop_vs_cli);
    lp_test_run("pad_vs_ffmpeg_cli", test_pad_vs_cli);
    lp_test_run("resample_synthetic", test_resample);
    lp_test_run("roundtrip_default_codec_mp4", test_roundtrip_default);
    lp_test_run("roundtrip_mpeg4_mkv", test_roundtrip_mpeg4);
    lp_test_run("conversion_pools", test_pools);
    lp_test_run("stdin_y4m_and_rgb24", test_stdin);
    lp_test_run("y4m_pipe_to_ffprobe", test_y4m_pipe);
    lp_test_run("mp4_pipe_to_ffprobe", test_mp4_pipe);
    lp_test_run("reader_errors", test_reader_errors);
    lp_test_run("writer_errors", test_writer_errors);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", lp_test_tmpdir());
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", lp_test_tmpdir());
    return lp_test_finish();
}
