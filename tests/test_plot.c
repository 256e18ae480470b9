/* Tests of the chart writer (tools/plot.c, included here since tests do not
 * link tools/): the SVG is well-formed (own tag-balance check, plus xmllint
 * when installed) and carries the escaped title; the PNG is decoded by an
 * independent reader here (signature, IHDR, bitwise CRC-32 of every chunk,
 * zlib header, stored blocks, Adler-32) and its pixels checked, and when
 * ffmpeg is installed it must decode to the very same pixels. Edge cases:
 * n = 0 and 1, NaN/inf values, all-zero latency, bad arguments and paths. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../tools/plot.c"
#include "test_util.h"

#define REQUIRE(cond) CHECK(cond, "%s", "")

/* --------------------------------------------------------------- helpers */

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) free(buf);
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[n] = 0;
    *len = n;
    return buf;
}

static const char *tmp_path(const char *name) {
    static char buf[2][4096];
    static int which;
    which ^= 1;
    snprintf(buf[which], sizeof buf[which], "%s/%s", lp_test_tmpdir(), name);
    return buf[which];
}

/* Tags of an XML text nest properly (comments, <?...?> and "/>" handled) and
 * every '&' starts a known entity; returns the number of elements, -1 if bad. */
static int xml_balanced(const char *s) {
    const char *stack[64];
    size_t stack_len[64];
    int depth = 0, elements = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '&') {
            static const char *const ents[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
            int ok = 0;
            for (int k = 0; k < 5; k++) ok |= strncmp(p, ents[k], strlen(ents[k])) == 0;
            if (!ok) return -1;
            continue;
        }
        if (*p != '<') continue;
        const char *end = strchr(p, '>');
        if (!end) return -1;
        if (p[1] == '?' || p[1] == '!') {
            p = end;
            continue;
        }
        if (p[1] == '/') {
            size_t n = strcspn(p + 2, " >");
            if (depth == 0 || stack_len[depth - 1] != n || strncmp(stack[depth - 1], p + 2, n) != 0) return -1;
            depth--;
        } else {
            elements++;
            if (end[-1] != '/') {
                if (depth == 64) return -1;
                stack[depth] = p + 1;
                stack_len[depth++] = strcspn(p + 1, " />");
            }
        }
        p = end;
    }
    return depth == 0 ? elements : -1;
}

static int count_substr(const char *s, const char *sub) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, sub)) != NULL; p += strlen(sub)) n++;
    return n;
}

static int svg_ok(const char *path, const char *escaped_title, int *polylines) {
    size_t len;
    char *s = slurp(path, &len);
    CHECK(s, "cannot read %s", path);
    size_t e = len;
    while (e > 0 && (s[e - 1] == '\n' || s[e - 1] == ' ')) e--;
    int starts = strncmp(s, "<?xml", 5) == 0 || strncmp(s, "<svg", 4) == 0;
    int ends = e >= 6 && strncmp(s + e - 6, "</svg>", 6) == 0;
    int elements = xml_balanced(s);
    int titled = !escaped_title || strstr(s, escaped_title) != NULL;
    if (polylines) *polylines = count_substr(s, "<polyline");
    free(s);
    CHECK(starts && ends, "%s: bad start or end", path);
    CHECK(elements > 0, "%s: unbalanced tags or a stray '&'", path);
    CHECK(titled, "%s: escaped title '%s' missing", path, escaped_title);
    if (access("/usr/bin/xmllint", X_OK) == 0) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "/usr/bin/xmllint --noout '%s'", path);
        CHECK(system(cmd) == 0, "xmllint rejects %s", path);
    }
    return 0;
}

/* CRC-32 bit by bit, independent of the table in plot.c. */
static uint32_t crc32_bitwise(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return ~c;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }

/* Reads an 8-bit RGB PNG of stored deflate blocks written by plot.c, checking
 * every structural field; *rgb gets w*h*3 bytes (caller frees). */
static int png_read(const char *path, int *w, int *h, uint8_t **rgb) {
    size_t len;
    uint8_t *f = (uint8_t *)slurp(path, &len);
    CHECK(f, "cannot read %s", path);
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    int ok = len > 8 && memcmp(f, sig, 8) == 0;
    uint8_t *z = malloc(len);
    size_t zn = 0, at = 8;
    int chunks = 0, seen_end = 0;
    *w = *h = 0;
    while (ok && !seen_end && at + 12 <= len) {
        uint32_t n = be32(f + at);
        if (n > len - at - 12) { ok = 0; break; }
        const uint8_t *type = f + at + 4, *data = f + at + 8;
        if (crc32_bitwise(type, 4 + n) != be32(data + n)) {
            fprintf(stderr, "  chunk %.4s: CRC mismatch\n", (const char *)type);
            ok = 0;
        }
        if (chunks == 0) {
            ok &= memcmp(type, "IHDR", 4) == 0 && n == 13 && data[8] == 8 && data[9] == 2 && data[10] == 0 &&
                  data[11] == 0 && data[12] == 0;
            *w = (int)be32(data);
            *h = (int)be32(data + 4);
        } else if (memcmp(type, "IDAT", 4) == 0) {
            memcpy(z + zn, data, n);
            zn += n;
        } else if (memcmp(type, "IEND", 4) == 0) {
            seen_end = n == 0;
        }
        chunks++;
        at += 12 + n;
    }
    ok &= seen_end && at == len;
    free(f);
    if (!ok) free(z);
    CHECK(ok, "%s: bad PNG structure", path);
    /* zlib: header, stored blocks, Adler-32 of the inflated bytes */
    size_t stride = 1 + 3 * (size_t)*w, raw_len = stride * (size_t)*h;
    uint8_t *raw = malloc(raw_len + 1);
    size_t rn = 0, zp = 2;
    ok = zn >= 6 && (z[0] & 0x0f) == 8 && (z[0] * 256 + z[1]) % 31 == 0 && !(z[1] & 0x20);
    for (int final = 0; ok && !final;) {
        if (zp + 5 > zn || (z[zp] & 6) != 0) { ok = 0; break; } /* stored blocks only */
        final = z[zp] & 1;
        unsigned n = z[zp + 1] | z[zp + 2] << 8, nn = z[zp + 3] | z[zp + 4] << 8;
        if ((n ^ nn) != 0xffff || zp + 5 + n > zn || rn + n > raw_len) { ok = 0; break; }
        memcpy(raw + rn, z + zp + 5, n);
        rn += n;
        zp += 5 + n;
    }
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < rn; i++) {
        a = (a + raw[i]) % 65521;
        b = (b + a) % 65521;
    }
    ok &= rn == raw_len && zp + 4 == zn && be32(z + zp) == (b << 16 | a);
    free(z);
    for (int y = 0; ok && y < *h; y++) ok = raw[(size_t)y * stride] == 0; /* filter type None */
    if (!ok) free(raw);
    CHECK(ok, "%s: bad zlib stream, Adler-32, size or filter", path);
    *rgb = malloc(3 * (size_t)*w * (size_t)*h);
    for (int y = 0; y < *h; y++) memcpy(*rgb + (size_t)y * 3 * *w, raw + y * stride + 1, stride - 1);
    free(raw);
    return 0;
}

/* Removes a checked output unless LIPAR_KEEP_TMP is set (to look at it). */
static void done_with(const char *path) {
    if (!getenv("LIPAR_KEEP_TMP")) unlink(path);
}

static int count_color(const uint8_t *rgb, int w, int x0, int y0, int x1, int y1, uint32_t color) {
    int n = 0;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            const uint8_t *p = rgb + 3 * ((size_t)y * w + x);
            n += ((uint32_t)p[0] << 16 | p[1] << 8 | p[2]) == color;
        }
    return n;
}

/* If ffmpeg is installed, it must decode path to exactly rgb. */
static int ffmpeg_agrees(const char *path, const uint8_t *rgb, int w, int h) {
    if (access("/usr/bin/ffmpeg", X_OK) != 0) return 0;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "/usr/bin/ffmpeg -nostdin -v error -i '%s' -f rawvideo -pix_fmt rgb24 -", path);
    FILE *p = popen(cmd, "r");
    CHECK(p, "cannot run ffmpeg");
    size_t n = 3 * (size_t)w * h;
    uint8_t *got = malloc(n + 1);
    size_t r = fread(got, 1, n + 1, p);
    int rc = pclose(p);
    int same = rc == 0 && r == n && memcmp(got, rgb, n) == 0;
    free(got);
    CHECK(same, "ffmpeg decodes %s differently (rc %d, %zu bytes, want %zu)", path, rc, r, n);
    return 0;
}

/* Writes d as both formats and checks them; pixel counts of the two curves
 * and of the median line, and the number of SVG polylines, come back. */
static int write_both(const char *stem, const lp_plot_data *d, const char *escaped_title, int counts[4]) {
    char name[256];
    snprintf(name, sizeof name, "%s.svg", stem);
    const char *svg = tmp_path(name);
    lp_status st = lp_plot_write(svg, d);
    CHECK(st == LP_OK, "%s: %s", svg, lp_last_error());
    if (svg_ok(svg, escaped_title, &counts[3])) return 1;
    done_with(svg);
    snprintf(name, sizeof name, "%s.png", stem);
    const char *png = tmp_path(name);
    st = lp_plot_write(png, d);
    CHECK(st == LP_OK, "%s: %s", png, lp_last_error());
    int w, h;
    uint8_t *rgb;
    if (png_read(png, &w, &h, &rgb)) return 1;
    int bad = w != PLOT_W || h != PLOT_H;
    if (!bad) bad = ffmpeg_agrees(png, rgb, w, h);
    counts[0] = count_color(rgb, w, 0, 0, w - 1, h - 1, PLOT_KEPT);
    counts[1] = count_color(rgb, w, 0, 0, w - 1, h - 1, PLOT_LAT);
    counts[2] = count_color(rgb, w, 0, 0, w - 1, h - 1, PLOT_MEDIAN);
    free(rgb);
    done_with(png);
    CHECK(!bad, "%s: %dx%d or not decodable", png, w, h);
    return 0;
}

/* ----------------------------------------------------------------- cases */

enum { N = 64 };

static int test_sample(void) {
    double x[N], kept[N], lat[N];
    for (int i = 0; i < N; i++) {
        x[i] = 0.5 * i;
        kept[i] = 0.55 + 0.35 * sin(i * 0.2);
        lat[i] = 0.030 + 0.012 * cos(i * 0.33) + (i % 9 == 0 ? 0.02 : 0);
    }
    lp_plot_data d = {N, x, kept, lat, "clip<1> & \"edit\" 'lipar' kept:50%"};
    int counts[4];
    if (write_both("sample", &d, "clip&lt;1&gt; &amp; &quot;edit&quot; &apos;lipar&apos; kept:50%", counts)) return 1;
    CHECK(counts[0] > 500 && counts[1] > 500 && counts[2] > 200, "curve pixels %d %d %d", counts[0], counts[1],
          counts[2]);
    CHECK(counts[3] == 2, "%d polylines", counts[3]);
    return 0;
}

/* A constant kept fraction of 0.5 lies on the middle row of the top panel,
 * across the whole x range; latency equal everywhere puts the median on it. */
static int test_geometry(void) {
    double x[N], kept[N], lat[N];
    for (int i = 0; i < N; i++) x[i] = 10 + i, kept[i] = 0.5, lat[i] = 0.020;
    lp_plot_data d = {N, x, kept, lat, "geometry"};
    REQUIRE(lp_plot_write(tmp_path("geometry.png"), &d) == LP_OK);
    int w, h;
    uint8_t *rgb;
    if (png_read(tmp_path("geometry.png"), &w, &h, &rgb)) return 1;
    int mid = (PLOT_KY0 + PLOT_KY1) / 2;
    int on_row = count_color(rgb, w, PLOT_X0, mid, PLOT_X1, mid, PLOT_KEPT);
    int elsewhere = count_color(rgb, w, 0, 0, w - 1, mid - 1, PLOT_KEPT) -
                    count_color(rgb, w, PLOT_X0, PLOT_KY0 - 11, PLOT_X0 + 16, PLOT_KY0 - 10, PLOT_KEPT);
    int lat_row = count_color(rgb, w, PLOT_X0, PLOT_LY0, PLOT_X1, PLOT_LY1, PLOT_LAT);
    free(rgb);
    done_with(tmp_path("geometry.png"));
    CHECK(on_row >= PLOT_X1 - PLOT_X0 && elsewhere == 0, "kept row %d px, %d px above it", on_row, elsewhere);
    /* latency 20 ms: axis top 20, the curve (drawn over the median) on the top edge */
    CHECK(lat_row >= 2 * (PLOT_X1 - PLOT_X0), "latency curve %d px", lat_row);
    return 0;
}

static int test_edge_cases(void) {
    int counts[4];
    /* no chunks: empty axes */
    lp_plot_data d0 = {0, NULL, NULL, NULL, NULL};
    if (write_both("empty", &d0, NULL, counts)) return 1;
    CHECK(counts[0] == 34 && counts[1] == 34 && counts[2] == 0, "empty chart drew curves %d %d %d", counts[0],
          counts[1], counts[2]); /* only the legend swatches */
    /* one chunk: a dot per series */
    double x1 = 3.0, k1 = 0.4, l1 = 0.05;
    lp_plot_data d1 = {1, &x1, &k1, &l1, "one"};
    if (write_both("one", &d1, "one", counts)) return 1;
    CHECK(counts[0] >= 34 + 25 && counts[1] >= 34 + 25 && counts[2] > 0, "single point %d %d %d", counts[0],
          counts[1], counts[2]);
    /* NaN/inf everywhere but a few points; out-of-range kept values; zero latency */
    double x[8] = {0, 1, NAN, 3, 4, INFINITY, 6, 7};
    double kept[8] = {0.2, -0.5, 0.3, NAN, 1.7, 0.5, 0.6, 0.7};
    double lat[8] = {0, 0, 0, 0, 0, 0, -INFINITY, 0};
    lp_plot_data d2 = {8, x, kept, lat, "gaps\x01 \xff\xfe caf\xc3\xa9"};
    if (write_both("gaps", &d2, "caf\xc3\xa9", counts)) return 1;
    CHECK(counts[0] > 34 && counts[1] > 34 && counts[2] > 0 && counts[3] == 4, "gaps %d %d %d, %d polylines",
          counts[0], counts[1], counts[2], counts[3]);
    /* nothing finite: no curve, no median; a huge x range and a long title */
    double xb[3] = {-1e308, 1e308, 0}, nan3[3] = {NAN, NAN, NAN};
    char title[400];
    memset(title, 'W', sizeof title - 1);
    title[sizeof title - 1] = 0;
    lp_plot_data d3 = {3, xb, nan3, nan3, title};
    if (write_both("nan", &d3, NULL, counts)) return 1;
    CHECK(counts[0] == 34 && counts[1] == 34 && counts[2] == 0, "all-NaN drew %d %d %d", counts[0], counts[1],
          counts[2]);
    return 0;
}

static int test_errors(void) {
    double v = 1;
    lp_plot_data d = {1, &v, &v, &v, "t"};
    const char *bad_ext = tmp_path("chart.jpg");
    REQUIRE(lp_plot_write(bad_ext, &d) == LP_ERR_ARG && strstr(lp_last_error(), bad_ext));
    REQUIRE(access(bad_ext, F_OK) != 0);
    REQUIRE(lp_plot_write("noext", &d) == LP_ERR_ARG);
    REQUIRE(lp_plot_write(NULL, &d) == LP_ERR_ARG);
    REQUIRE(lp_plot_write(tmp_path("x.svg"), NULL) == LP_ERR_ARG);
    lp_plot_data neg = {-1, NULL, NULL, NULL, NULL}, nul = {2, &v, NULL, &v, NULL};
    REQUIRE(lp_plot_write(tmp_path("x.svg"), &neg) == LP_ERR_ARG);
    REQUIRE(lp_plot_write(tmp_path("x.png"), &nul) == LP_ERR_ARG);
    const char *bad_dir[2] = {tmp_path("no/such/dir/chart.svg"), tmp_path("no/such/dir/chart.PNG")};
    for (int k = 0; k < 2; k++) {
        lp_status st = lp_plot_write(bad_dir[k], &d);
        CHECK(st == LP_ERR_IO && strstr(lp_last_error(), bad_dir[k]), "%s: %s '%s'", bad_dir[k], lp_status_name(st),
              lp_last_error());
    }
    /* a write that fails after the open: a link to /dev/full (no space left) */
    const char *full = tmp_path("full.png");
    unlink(full);
    if (access("/dev/full", W_OK) == 0 && symlink("/dev/full", full) == 0) {
        lp_status st = lp_plot_write(full, &d);
        CHECK(st == LP_ERR_IO && strstr(lp_last_error(), full), "%s: %s '%s'", full, lp_status_name(st),
              lp_last_error());
        unlink(full);
    }
    return 0;
}

int main(void) {
    lp_test_run("sample", test_sample);
    lp_test_run("geometry", test_geometry);
    lp_test_run("edge_cases", test_edge_cases);
    lp_test_run("errors", test_errors);
    rmdir(lp_test_tmpdir()); /* if nothing was kept */
    return lp_test_finish();
}
