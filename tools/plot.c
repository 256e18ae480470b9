/* Two-panel per-chunk chart (kept fraction, latency) as SVG or PNG; see plot.h.
 *
 * One layout (plot_chart: axis ranges, ticks, median) drives both writers, so
 * the SVG and the PNG show the same picture. The PNG is drawn into an RGB
 * buffer laid out as PNG scanlines (filter byte 0 + 3 bytes a pixel) and
 * stored in a zlib stream of uncompressed deflate blocks (RFC 1950/1951),
 * with the CRC-32 of every chunk (PNG spec, section 5.3). */
#include "plot.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Canvas and panel geometry in pixels (also the SVG user units). */
enum {
    PLOT_W = 800,
    PLOT_H = 500,
    PLOT_X0 = 72,  /* left edge of both panels */
    PLOT_X1 = 780, /* right edge */
    PLOT_KY0 = 44, /* kept panel: top, bottom */
    PLOT_KY1 = 230,
    PLOT_LY0 = 262, /* latency panel: top, bottom */
    PLOT_LY1 = 448,
    PLOT_MAX_TICKS = 16,
    PLOT_STRIDE = 1 + 3 * PLOT_W, /* bytes of one PNG scanline */
};

/* Colours, 0xRRGGBB. */
#define PLOT_BG 0xffffffu
#define PLOT_INK 0x000000u
#define PLOT_GRID 0xe0e0e0u
#define PLOT_KEPT 0x1f77b4u
#define PLOT_LAT 0xff7f0eu
#define PLOT_MEDIAN 0x555555u

typedef struct {
    double v;
    char label[32];
} plot_tick;

typedef struct {
    const lp_plot_data *d;
    double x0, x1;  /* x axis range */
    double lat_top; /* latency axis top, ms */
    int nx, nk, nl; /* tick counts */
    plot_tick xt[PLOT_MAX_TICKS], kt[PLOT_MAX_TICKS], lt[PLOT_MAX_TICKS];
    int has_median;
    double median_ms;
    char kept_legend[64], lat_legend[96];
} plot_chart;

enum { SERIES_KEPT, SERIES_LAT };

/* ------------------------------------------------------------------ layout */

/* 1, 2 or 5 times a power of ten, at least raw; 0 if raw is not finite and > 0. */
static double nice_step(double raw) {
    if (!(raw > 0) || !isfinite(raw)) return 0;
    double mag = pow(10, floor(log10(raw)));
    double norm = raw / mag;
    double step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
    return isfinite(step) && step > 0 ? step : 0;
}

static void format_tick(double v, double step, char *buf, size_t cap) {
    if (fabs(v) < step * 1e-9) v = 0; /* no "-0" or 1e-17 */
    if (fabs(v) >= 1e6 || step < 1e-4) {
        snprintf(buf, cap, "%.3g", v);
    } else {
        int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
        snprintf(buf, cap, "%.*f", decimals, v);
    }
}

/* Ticks at the multiples of step in [lo, hi]; none if they would not fit. */
static int make_ticks(double lo, double hi, double step, plot_tick *t) {
    if (!(step > 0)) return 0;
    double k0 = ceil(lo / step - 1e-9), k1 = floor(hi / step + 1e-9);
    if (!isfinite(k0) || !isfinite(k1) || k1 < k0 || k1 - k0 >= PLOT_MAX_TICKS) return 0;
    int n = 0;
    for (double k = k0; k <= k1; k++, n++) {
        t[n].v = k * step;
        format_tick(t[n].v, step, t[n].label, sizeof t[n].label);
    }
    return n;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Axis ranges, ticks, median and legends of d. */
static lp_status chart_init(plot_chart *c, const lp_plot_data *d) {
    memset(c, 0, sizeof *c);
    c->d = d;
    int any = 0;
    double kept_sum = 0;
    int kept_count = 0;
    for (int i = 0; i < d->n; i++) {
        double x = d->x[i];
        if (isfinite(x)) {
            if (!any || x < c->x0) c->x0 = x;
            if (!any || x > c->x1) c->x1 = x;
            any = 1;
        }
        if (isfinite(d->kept[i])) {
            kept_sum += fmin(fmax(d->kept[i], 0), 1);
            kept_count++;
        }
    }
    if (!any) {
        c->x0 = 0;
        c->x1 = 1;
    } else if (!(c->x1 > c->x0)) {
        double h = fmax(0.5, fabs(c->x0) * 1e-3);
        c->x0 -= h;
        c->x1 += h;
    }
    c->nx = make_ticks(c->x0, c->x1, nice_step((c->x1 - c->x0) / 8), c->xt);

    static const char *const kept_labels[] = {"0%", "25%", "50%", "75%", "100%"};
    c->nk = 5;
    for (int k = 0; k < 5; k++) {
        c->kt[k].v = k * 0.25;
        snprintf(c->kt[k].label, sizeof c->kt[k].label, "%s", kept_labels[k]);
    }
    snprintf(c->kept_legend, sizeof c->kept_legend, "kept fraction");
    if (kept_count)
        snprintf(c->kept_legend, sizeof c->kept_legend, "kept fraction, mean %.1f%%", 100 * kept_sum / kept_count);

    /* latency in ms: the finite values (negatives as 0), sorted for the median */
    double *ms = malloc((d->n > 0 ? (size_t)d->n : 1) * sizeof *ms);
    if (!ms) return lp_fail(LP_ERR_NOMEM, "plot: no memory for %d latencies", d->n);
    int m = 0;
    for (int i = 0; i < d->n; i++) {
        double v = d->latency[i] * 1000;
        if (isfinite(v)) ms[m++] = fmax(v, 0);
    }
    qsort(ms, (size_t)m, sizeof *ms, cmp_double);
    double top = m ? ms[m - 1] : 0;
    if (!(top > 0)) top = 1;
    double step = nice_step(top / 4);
    c->lat_top = step > 0 ? ceil(top / step - 1e-9) * step : top;
    if (!isfinite(c->lat_top) || !(c->lat_top >= top)) c->lat_top = top;
    c->nl = make_ticks(0, c->lat_top, step, c->lt);
    snprintf(c->lat_legend, sizeof c->lat_legend, "latency per chunk (ms)");
    if (m) {
        c->has_median = 1;
        c->median_ms = m % 2 ? ms[m / 2] : ms[m / 2 - 1] / 2 + ms[m / 2] / 2;
        snprintf(c->lat_legend, sizeof c->lat_legend, "latency per chunk (ms), median %.4g ms", c->median_ms);
    }
    free(ms);
    return LP_OK;
}

static double clamp01(double f) { return !(f >= 0) ? 0 : f > 1 ? 1 : f; }

static double map_x(const plot_chart *c, double x) {
    double f = (x / 2 - c->x0 / 2) / (c->x1 / 2 - c->x0 / 2); /* halves: no overflow on wide ranges */
    if (!isfinite(f)) f = 0.5;
    return PLOT_X0 + clamp01(f) * (PLOT_X1 - PLOT_X0);
}

/* v on a [0, top] axis drawn between y0 (top) and y1 (bottom). */
static double map_y(double v, double top, int y0, int y1) { return y1 - clamp01(v / top) * (y1 - y0); }

/* Pixel position of point i of a series; 0 if its x or value is NaN/inf. */
static int point_at(const plot_chart *c, int series, int i, double *px, double *py) {
    double x = c->d->x[i];
    double v = series == SERIES_KEPT ? c->d->kept[i] : c->d->latency[i] * 1000;
    if (!isfinite(x) || !isfinite(v)) return 0;
    *px = map_x(c, x);
    *py = series == SERIES_KEPT ? map_y(v, 1, PLOT_KY0, PLOT_KY1) : map_y(v, c->lat_top, PLOT_LY0, PLOT_LY1);
    return 1;
}

/* The end of the run of drawable points starting at i. */
static int run_end(const plot_chart *c, int series, int i) {
    double px, py;
    while (i < c->d->n && point_at(c, series, i, &px, &py)) i++;
    return i;
}

/* Length of the valid UTF-8 sequence at s that XML 1.0 allows, 0 if none. */
static int utf8_len(const unsigned char *s) {
    if (s[0] < 0x80) return s[0] >= 0x20 || s[0] == '\t' || s[0] == '\n' || s[0] == '\r' ? 1 : 0;
    int len = s[0] >= 0xc2 && s[0] <= 0xdf ? 2 : s[0] >= 0xe0 && s[0] <= 0xef ? 3 : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : 0;
    for (int k = 1; k < len; k++)
        if ((s[k] & 0xc0) != 0x80) return 0;
    if (len == 3 && ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f))) return 0; /* overlong, surrogate */
    if (len == 3 && s[0] == 0xef && s[1] == 0xbf && s[2] >= 0xbe) return 0;                    /* U+FFFE, U+FFFF */
    if (len == 4 && ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))) return 0;
    return len;
}

/* ------------------------------------------------------------------- SVG */

static void svg_escaped(FILE *f, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int len = utf8_len(p);
        if (len == 0) {
            fputc('?', f);
            p++;
            continue;
        }
        switch (*p) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default: fwrite(p, 1, (size_t)len, f);
        }
        p += len;
    }
}

static void svg_text(FILE *f, double x, double y, const char *anchor, int size, const char *s) {
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" font-size=\"%d\">", x, y, anchor, size);
    svg_escaped(f, s);
    fputs("</text>\n", f);
}

static void svg_line(FILE *f, double x0, double y0, double x1, double y1, uint32_t color, double width) {
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#%06x\" stroke-width=\"%g\"/>\n", x0, y0,
            x1, y1, (unsigned)color, width);
}

/* Gridlines, frame and tick labels of one panel. */
static void svg_panel(FILE *f, const plot_chart *c, int y0, int y1, const plot_tick *yt, int ny, double ytop,
                      int x_labels) {
    for (int k = 0; k < c->nx; k++) {
        double x = map_x(c, c->xt[k].v);
        svg_line(f, x, y0, x, y1, PLOT_GRID, 1);
        svg_line(f, x, y1, x, y1 + 4, PLOT_INK, 1);
        if (x_labels) svg_text(f, x, y1 + 14, "middle", 11, c->xt[k].label);
    }
    for (int k = 0; k < ny; k++) {
        double y = map_y(yt[k].v, ytop, y0, y1);
        svg_line(f, PLOT_X0, y, PLOT_X1, y, PLOT_GRID, 1);
        svg_line(f, PLOT_X0 - 4, y, PLOT_X0, y, PLOT_INK, 1);
        svg_text(f, PLOT_X0 - 7, y + 4, "end", 11, yt[k].label);
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#000000\"/>\n", PLOT_X0, y0,
            PLOT_X1 - PLOT_X0, y1 - y0);
}

/* A series as polylines over its runs of drawable points; lone points as dots. */
static void svg_series(FILE *f, const plot_chart *c, int series, uint32_t color) {
    for (int i = 0; i < c->d->n;) {
        int end = run_end(c, series, i);
        double px, py;
        if (end - i == 1) {
            point_at(c, series, i, &px, &py);
            fprintf(f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"#%06x\"/>\n", px, py, (unsigned)color);
        } else if (end > i) {
            fprintf(f, "<polyline fill=\"none\" stroke=\"#%06x\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"",
                    (unsigned)color);
            for (int j = i; j < end; j++) {
                point_at(c, series, j, &px, &py);
                fprintf(f, "%s%.2f,%.2f", j > i ? " " : "", px, py);
            }
            fputs("\"/>\n", f);
        }
        i = end > i ? end : i + 1;
    }
}

static void svg_chart(FILE *f, const plot_chart *c) {
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
            "font-family=\"monospace\" fill=\"#000000\">\n"
            "<rect width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n",
            PLOT_W, PLOT_H, PLOT_W, PLOT_H, PLOT_W, PLOT_H);
    const char *title = c->d->title ? c->d->title : "";
    fputs("<title>", f);
    svg_escaped(f, title);
    fputs("</title>\n", f);
    svg_text(f, PLOT_W / 2.0, 22, "middle", 16, title);

    svg_panel(f, c, PLOT_KY0, PLOT_KY1, c->kt, c->nk, 1, 0);
    svg_panel(f, c, PLOT_LY0, PLOT_LY1, c->lt, c->nl, c->lat_top, 1);
    if (c->has_median) {
        double y = map_y(c->median_ms, c->lat_top, PLOT_LY0, PLOT_LY1);
        fprintf(f,
                "<line x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\" stroke=\"#%06x\" stroke-width=\"2\" "
                "stroke-dasharray=\"8 5\"/>\n",
                PLOT_X0, y, PLOT_X1, y, (unsigned)PLOT_MEDIAN);
    }
    svg_series(f, c, SERIES_KEPT, PLOT_KEPT);
    svg_series(f, c, SERIES_LAT, PLOT_LAT);

    /* legends above each panel: a swatch of the curve's colour, then the text */
    svg_line(f, PLOT_X0, PLOT_KY0 - 10, PLOT_X0 + 16, PLOT_KY0 - 10, PLOT_KEPT, 2);
    svg_text(f, PLOT_X0 + 22, PLOT_KY0 - 6, "start", 11, c->kept_legend);
    svg_line(f, PLOT_X0, PLOT_LY0 - 10, PLOT_X0 + 16, PLOT_LY0 - 10, PLOT_LAT, 2);
    svg_text(f, PLOT_X0 + 22, PLOT_LY0 - 6, "start", 11, c->lat_legend);
    svg_text(f, (PLOT_X0 + PLOT_X1) / 2.0, PLOT_LY1 + 31, "middle", 11, "chunk start (s)");
    fputs("</svg>\n", f);
}

/* ------------------------------------------------------------ 5x7 font */

/* Each glyph: 7 rows, top first; bit 4 is the leftmost of 5 columns. Glyphs
 * missing here are drawn as '?'. */
static const struct {
    char c;
    unsigned char rows[7];
} plot_font[] = {
    {' ', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}}, {'0', {0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e}},
    {'1', {0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e}}, {'2', {0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f}},
    {'3', {0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e}}, {'4', {0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02}},
    {'5', {0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e}}, {'6', {0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e}},
    {'7', {0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}}, {'8', {0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e}},
    {'9', {0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c}}, {'A', {0x0e, 0x11, 0x11, 0x11, 0x1f, 0x11, 0x11}},
    {'B', {0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e}}, {'C', {0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e}},
    {'D', {0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c}}, {'E', {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f}},
    {'F', {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10}}, {'G', {0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f}},
    {'H', {0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11}}, {'I', {0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e}},
    {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c}}, {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}},
    {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f}}, {'M', {0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11}},
    {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}}, {'O', {0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e}},
    {'P', {0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10}}, {'Q', {0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d}},
    {'R', {0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11}}, {'S', {0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e}},
    {'T', {0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}}, {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e}},
    {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04}}, {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a}},
    {'X', {0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11}}, {'Y', {0x11, 0x11, 0x11, 0x0a, 0x04, 0x04, 0x04}},
    {'Z', {0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f}}, {'a', {0x00, 0x00, 0x0e, 0x01, 0x0f, 0x11, 0x0f}},
    {'b', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1e}}, {'c', {0x00, 0x00, 0x0e, 0x10, 0x10, 0x11, 0x0e}},
    {'d', {0x01, 0x01, 0x0d, 0x13, 0x11, 0x11, 0x0f}}, {'e', {0x00, 0x00, 0x0e, 0x11, 0x1f, 0x10, 0x0e}},
    {'f', {0x06, 0x09, 0x08, 0x1c, 0x08, 0x08, 0x08}}, {'g', {0x00, 0x0f, 0x11, 0x11, 0x0f, 0x01, 0x0e}},
    {'h', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11}}, {'i', {0x04, 0x00, 0x0c, 0x04, 0x04, 0x04, 0x0e}},
    {'j', {0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0c}}, {'k', {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}},
    {'l', {0x0c, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e}}, {'m', {0x00, 0x00, 0x1a, 0x15, 0x15, 0x11, 0x11}},
    {'n', {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11}}, {'o', {0x00, 0x00, 0x0e, 0x11, 0x11, 0x11, 0x0e}},
    {'p', {0x00, 0x00, 0x1e, 0x11, 0x1e, 0x10, 0x10}}, {'q', {0x00, 0x00, 0x0d, 0x13, 0x0f, 0x01, 0x01}},
    {'r', {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}}, {'s', {0x00, 0x00, 0x0e, 0x10, 0x0e, 0x01, 0x1e}},
    {'t', {0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06}}, {'u', {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0d}},
    {'v', {0x00, 0x00, 0x11, 0x11, 0x11, 0x0a, 0x04}}, {'w', {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0a}},
    {'x', {0x00, 0x00, 0x11, 0x0a, 0x04, 0x0a, 0x11}}, {'y', {0x00, 0x00, 0x11, 0x11, 0x0f, 0x01, 0x0e}},
    {'z', {0x00, 0x00, 0x1f, 0x02, 0x04, 0x08, 0x1f}}, {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}}, {':', {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00}},
    {'-', {0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00}}, {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1f}},
    {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}}, {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}}, {',', {0x00, 0x00, 0x00, 0x00, 0x0c, 0x04, 0x08}},
    {'=', {0x00, 0x00, 0x1f, 0x00, 0x1f, 0x00, 0x00}}, {'+', {0x00, 0x04, 0x04, 0x1f, 0x04, 0x04, 0x00}},
    {'[', {0x0e, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0e}}, {']', {0x0e, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0e}},
    {'<', {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}}, {'>', {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}},
    {'!', {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04}}, {'#', {0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a}},
    {'\'', {0x0c, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00}}, {'?', {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}},
    {'&', {0x0c, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0d}},  {'"', {0x0a, 0x0a, 0x0a, 0x00, 0x00, 0x00, 0x00}},
    {'*', {0x00, 0x04, 0x15, 0x0e, 0x15, 0x04, 0x00}},
};

static const unsigned char *glyph(char ch) {
    for (size_t i = 0; i < sizeof plot_font / sizeof plot_font[0]; i++)
        if (plot_font[i].c == ch) return plot_font[i].rows;
    return glyph('?');
}

/* s as at most max glyphs of the font (one '?' per character it lacks),
 * ending in "..." if cut. */
static void to_glyphs(const char *s, char *out, int max) {
    const unsigned char *p = (const unsigned char *)s;
    int n = 0;
    while (*p && n < max) {
        int len = utf8_len(p);
        out[n++] = len == 1 && *p >= 0x20 ? (char)*p : '?';
        p += len ? len : 1;
    }
    if (*p && max >= 3) memcpy(out + max - 3, "...", 3);
    out[n] = 0;
}

/* ---------------------------------------------------------------- raster */

/* The picture as PNG scanlines: row y starts with its filter byte (0). */
typedef struct {
    uint8_t *rows;
} plot_image;

static void put(plot_image *im, int x, int y, uint32_t color) {
    if (x < 0 || y < 0 || x >= PLOT_W || y >= PLOT_H) return;
    uint8_t *p = im->rows + (size_t)y * PLOT_STRIDE + 1 + 3 * (size_t)x;
    p[0] = (uint8_t)(color >> 16);
    p[1] = (uint8_t)(color >> 8);
    p[2] = (uint8_t)color;
}

/* The rectangle [x0, x1] x [y0, y1], inclusive. */
static void fill(plot_image *im, int x0, int y0, int x1, int y1, uint32_t color) {
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) put(im, x, y, color);
}

/* A 2-pixel-wide line: Bresenham's walk with a 2x2 brush. */
static void line2(plot_image *im, int x0, int y0, int x1, int y1, uint32_t color) {
    int dx = abs(x1 - x0), dy = -abs(y1 - y0);
    int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (;;) {
        fill(im, x0, y0, x0 + 1, y0 + 1, color);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) {
            err += dy;
            x0 += sx;
        }
        if (e2 <= dx) {
            err += dx;
            y0 += sy;
        }
    }
}

/* ASCII text s with its top-left corner at (x, y), each font pixel scale^2. */
static void text(plot_image *im, int x, int y, const char *s, int scale, uint32_t color) {
    for (; *s; s++, x += 6 * scale) {
        const unsigned char *g = glyph(*s);
        for (int r = 0; r < 7; r++)
            for (int col = 0; col < 5; col++)
                if (g[r] >> (4 - col) & 1)
                    fill(im, x + col * scale, y + r * scale, x + col * scale + scale - 1, y + r * scale + scale - 1,
                         color);
    }
}

static int text_w(const char *s, int scale) { return (int)strlen(s) * 6 * scale - scale; }

static int px(double v) { return (int)lround(v); }

static void raster_panel(plot_image *im, const plot_chart *c, int y0, int y1, const plot_tick *yt, int ny, double ytop,
                         int x_labels) {
    for (int k = 0; k < c->nx; k++) {
        int x = px(map_x(c, c->xt[k].v));
        fill(im, x, y0, x, y1, PLOT_GRID);
        fill(im, x, y1, x, y1 + 4, PLOT_INK);
        if (x_labels) text(im, x - text_w(c->xt[k].label, 1) / 2, y1 + 7, c->xt[k].label, 1, PLOT_INK);
    }
    for (int k = 0; k < ny; k++) {
        int y = px(map_y(yt[k].v, ytop, y0, y1));
        fill(im, PLOT_X0, y, PLOT_X1, y, PLOT_GRID);
        fill(im, PLOT_X0 - 4, y, PLOT_X0, y, PLOT_INK);
        text(im, PLOT_X0 - 7 - text_w(yt[k].label, 1), y - 3, yt[k].label, 1, PLOT_INK);
    }
    fill(im, PLOT_X0, y0, PLOT_X1, y0, PLOT_INK);
    fill(im, PLOT_X0, y1, PLOT_X1, y1, PLOT_INK);
    fill(im, PLOT_X0, y0, PLOT_X0, y1, PLOT_INK);
    fill(im, PLOT_X1, y0, PLOT_X1, y1, PLOT_INK);
}

static void raster_series(plot_image *im, const plot_chart *c, int series, uint32_t color) {
    for (int i = 0; i < c->d->n;) {
        int end = run_end(c, series, i);
        double x, y, xp, yp;
        if (end - i == 1) {
            point_at(c, series, i, &x, &y);
            fill(im, px(x) - 2, px(y) - 2, px(x) + 2, px(y) + 2, color);
        }
        for (int j = i + 1; j < end; j++) {
            point_at(c, series, j - 1, &xp, &yp);
            point_at(c, series, j, &x, &y);
            line2(im, px(xp), px(yp), px(x), px(y), color);
        }
        i = end > i ? end : i + 1;
    }
}

static void raster_chart(plot_image *im, const plot_chart *c) {
    for (int y = 0; y < PLOT_H; y++) memset(im->rows + (size_t)y * PLOT_STRIDE + 1, 0xff, 3 * PLOT_W); /* white */
    char title[PLOT_W / 12 + 1];
    to_glyphs(c->d->title ? c->d->title : "", title, PLOT_W / 12 - 1);
    text(im, (PLOT_W - text_w(title, 2)) / 2, 8, title, 2, PLOT_INK);

    raster_panel(im, c, PLOT_KY0, PLOT_KY1, c->kt, c->nk, 1, 0);
    raster_panel(im, c, PLOT_LY0, PLOT_LY1, c->lt, c->nl, c->lat_top, 1);
    if (c->has_median) {
        int y = px(map_y(c->median_ms, c->lat_top, PLOT_LY0, PLOT_LY1));
        for (int x = PLOT_X0; x <= PLOT_X1; x += 13) fill(im, x, y, x + 7 < PLOT_X1 ? x + 7 : PLOT_X1, y + 1, PLOT_MEDIAN);
    }
    raster_series(im, c, SERIES_KEPT, PLOT_KEPT);
    raster_series(im, c, SERIES_LAT, PLOT_LAT);

    char legend[PLOT_W / 6];
    fill(im, PLOT_X0, PLOT_KY0 - 11, PLOT_X0 + 16, PLOT_KY0 - 10, PLOT_KEPT);
    to_glyphs(c->kept_legend, legend, (int)sizeof legend - 1);
    text(im, PLOT_X0 + 22, PLOT_KY0 - 14, legend, 1, PLOT_INK);
    fill(im, PLOT_X0, PLOT_LY0 - 11, PLOT_X0 + 16, PLOT_LY0 - 10, PLOT_LAT);
    to_glyphs(c->lat_legend, legend, (int)sizeof legend - 1);
    text(im, PLOT_X0 + 22, PLOT_LY0 - 14, legend, 1, PLOT_INK);
    const char *xlabel = "chunk start (s)";
    text(im, (PLOT_X0 + PLOT_X1 - text_w(xlabel, 1)) / 2, PLOT_LY1 + 24, xlabel, 1, PLOT_INK);
}

/* ------------------------------------------------------------------- PNG */

typedef struct {
    uint32_t table[256];
} plot_crc;

/* CRC-32 of ISO 3309 / PNG (reflected polynomial 0xedb88320). */
static void crc_init(plot_crc *t) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        t->table[n] = c;
    }
}

static uint32_t crc_update(const plot_crc *t, uint32_t crc, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) crc = t->table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return crc;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Length, type, data and CRC of one chunk; 0 on a write error. */
static int png_chunk(FILE *f, const plot_crc *t, const char *type, const uint8_t *data, uint32_t len) {
    uint8_t head[8], tail[4];
    put_be32(head, len);
    memcpy(head + 4, type, 4);
    uint32_t crc = crc_update(t, 0xffffffffu, head + 4, 4);
    crc = crc_update(t, crc, data, len) ^ 0xffffffffu;
    put_be32(tail, crc);
    return fwrite(head, 1, 8, f) == 8 && (len == 0 || fwrite(data, 1, len, f) == len) && fwrite(tail, 1, 4, f) == 4;
}

/* raw as a zlib stream of stored deflate blocks (RFC 1950, RFC 1951 3.2.4);
 * malloc'd into *out, NULL if out of memory. */
static uint8_t *zlib_stored(const uint8_t *raw, size_t n, size_t *out_len) {
    size_t blocks = n / 65535 + (n % 65535 != 0) + (n == 0);
    size_t len = 2 + 5 * blocks + n + 4;
    uint8_t *z = malloc(len), *p = z;
    if (!z) return NULL;
    *p++ = 0x78; /* deflate, 32K window */
    *p++ = 0x01; /* no dictionary, fastest; (0x78 * 256 + 0x01) % 31 == 0 */
    uint32_t a = 1, b = 0;
    size_t done = 0;
    do {
        size_t k = n - done < 65535 ? n - done : 65535;
        *p++ = done + k == n; /* BFINAL, BTYPE 00 */
        p[0] = (uint8_t)k;
        p[1] = (uint8_t)(k >> 8);
        p[2] = (uint8_t)~k;
        p[3] = (uint8_t)(~k >> 8);
        memcpy(p + 4, raw + done, k);
        for (size_t i = 0; i < k; i++) {
            a = (a + raw[done + i]) % 65521;
            b = (b + a) % 65521;
        }
        p += 4 + k;
        done += k;
    } while (done < n);
    put_be32(p, b << 16 | a); /* Adler-32 of the uncompressed data */
    *out_len = len;
    return z;
}

/* Closes f, just written to path; ok: whether every write succeeded (err:
 * the errno of a failure). On any failure the partial file is removed and
 * the error names path. */
static lp_status finish_file(FILE *f, const char *path, int ok, int err) {
    if (fclose(f) != 0 && ok) {
        ok = 0;
        err = errno;
    }
    if (!ok) {
        remove(path);
        return lp_fail(LP_ERR_IO, "plot: cannot write '%s': %s", path, strerror(err));
    }
    return LP_OK;
}

static lp_status write_png(const char *path, const plot_chart *c) {
    size_t raw_len = (size_t)PLOT_H * PLOT_STRIDE;
    plot_image im = {calloc(raw_len, 1)};
    if (!im.rows) return lp_fail(LP_ERR_NOMEM, "plot: no memory for a %dx%d picture", PLOT_W, PLOT_H);
    raster_chart(&im, c);
    size_t z_len = 0;
    uint8_t *z = zlib_stored(im.rows, raw_len, &z_len);
    free(im.rows);
    if (!z) return lp_fail(LP_ERR_NOMEM, "plot: no memory for the PNG of '%s'", path);

    FILE *f = fopen(path, "wb");
    if (!f) {
        free(z);
        return lp_fail(LP_ERR_IO, "plot: cannot create '%s': %s", path, strerror(errno));
    }
    static const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t ihdr[13];
    put_be32(ihdr, PLOT_W);
    put_be32(ihdr + 4, PLOT_H);
    ihdr[8] = 8;   /* bits per sample */
    ihdr[9] = 2;   /* colour type: RGB */
    ihdr[10] = 0;  /* deflate */
    ihdr[11] = 0;  /* adaptive filtering (every row uses filter 0) */
    ihdr[12] = 0;  /* no interlace */
    plot_crc t;
    crc_init(&t);
    int ok = fwrite(signature, 1, 8, f) == 8 && png_chunk(f, &t, "IHDR", ihdr, 13) &&
             png_chunk(f, &t, "IDAT", z, (uint32_t)z_len) && png_chunk(f, &t, "IEND", NULL, 0);
    int err = errno;
    free(z);
    return finish_file(f, path, ok, err);
}

static lp_status write_svg(const char *path, const plot_chart *c) {
    FILE *f = fopen(path, "w");
    if (!f) return lp_fail(LP_ERR_IO, "plot: cannot create '%s': %s", path, strerror(errno));
    svg_chart(f, c);
    int ok = !ferror(f);
    return finish_file(f, path, ok, errno);
}

/* -------------------------------------------------------------- entry */

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

lp_status lp_plot_write(const char *path, const lp_plot_data *d) {
    if (!path || !d) return lp_fail(LP_ERR_ARG, "plot: %s is NULL", path ? "the data" : "the output path");
    int svg = has_suffix(path, ".svg");
    if (!svg && !has_suffix(path, ".png"))
        return lp_fail(LP_ERR_ARG, "plot: output '%s' must end in .svg or .png", path);
    if (d->n < 0) return lp_fail(LP_ERR_ARG, "plot: negative chunk count %d for '%s'", d->n, path);
    if (d->n > 0 && (!d->x || !d->kept || !d->latency))
        return lp_fail(LP_ERR_ARG, "plot: %d chunks but a NULL x/kept/latency array for '%s'", d->n, path);
    plot_chart c;
    LP_TRY(chart_init(&c, d));
    return svg ? write_svg(path, &c) : write_png(path, &c);
}
