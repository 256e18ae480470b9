#include "conv2d.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Target size of one im2col band in floats (4 MiB): large enough for an
 * efficient GEMM, small enough to stay near the caches. */
#define BAND_FLOATS ((size_t)1 << 20)
/* Convolutions with at most this many output channels run directly (a GEMM
 * with so few rows is dominated by the im2col copy). */
#define DIRECT_MAX_COUT 4

/* How a convolution is computed. */
typedef enum {
    PATH_1X1,    /* 1×1, stride 1, no upsample: one GEMM per input */
    PATH_UP2,    /* 3×3, stride 1 over a ×2 upsample: four 2×2 phase convs on the small input */
    PATH_DIRECT, /* few output channels, stride 1, no upsample: per-row multiply-adds */
    PATH_IM2COL, /* everything else: im2col bands + GEMM */
} conv_path;

static conv_path choose_path(const lp_conv2d *cv, const lp_conv_in *in) {
    if (cv->k == 1 && cv->stride == 1 && in->up == 1) return PATH_1X1;
    if (cv->k == 3 && cv->stride == 1 && in->up == 2) return PATH_UP2;
    if (cv->cout <= DIRECT_MAX_COUT && cv->stride == 1 && in->up == 1) return PATH_DIRECT;
    return PATH_IM2COL;
}

void lp_conv2d_out_size(const lp_conv2d *cv, const lp_conv_in *in, int *ho, int *wo) {
    int pad = cv->k / 2;
    *ho = (in->h * in->up + 2 * pad - cv->k) / cv->stride + 1;
    *wo = (in->w * in->up + 2 * pad - cv->k) / cv->stride + 1;
}

/* Rows per band (of output rows, or of input rows for PATH_UP2) such that
 * per_row floats per row fit BAND_FLOATS; at least one, at most total. */
static int band_rows(size_t per_row, int total) {
    size_t r = per_row ? BAND_FLOATS / per_row : 1;
    if (r < 1) r = 1;
    if (r > (size_t)total) r = (size_t)total;
    return (int)r;
}

/* PATH_UP2 scratch layout: 4 phase weights [cout, 4·cin], one phase's im2col
 * [4·cin, n], the 4 phase outputs [cout, n]. */
static size_t up2_per_row(const lp_conv2d *cv, const lp_conv_in *in) {
    return (size_t)(4 * cv->cin + 4 * cv->cout) * (size_t)in->w;
}

size_t lp_conv2d_scratch_floats(const lp_conv2d *cv, const lp_conv_in *in) {
    int ho, wo;
    lp_conv2d_out_size(cv, in, &ho, &wo);
    switch (choose_path(cv, in)) {
    case PATH_UP2:
        return (size_t)16 * cv->cout * cv->cin + up2_per_row(cv, in) * (size_t)band_rows(up2_per_row(cv, in), in->h);
    case PATH_IM2COL: {
        size_t per_row = (size_t)cv->cin * (size_t)(cv->k * cv->k) * (size_t)wo;
        return per_row * (size_t)band_rows(per_row, ho);
    }
    default: return 0;
    }
}

/* dst[yy·wo + x] = the input channel chan ([h, w] seen through the ×up upsample)
 * at row (y0 + yy)·s + dy, column x·s + dx, zero outside; for yy < rows, x < wo. */
static void fill_row(float *dst, const float *chan, const lp_conv_in *in, int y0, int rows, int wo, int s, int dy,
                     int dx) {
    int up = in->up, hin = in->h * up, win = in->w * up;
    /* valid output columns: 0 <= x·s + dx < win */
    int xlo = dx < 0 ? (-dx + s - 1) / s : 0;
    int last = win - 1 - dx;
    int xhi = last < 0 ? 0 : last / s + 1;
    if (xhi > wo) xhi = wo;
    if (xlo > xhi) xlo = xhi;
    for (int yy = 0; yy < rows; yy++, dst += wo) {
        int iy = (y0 + yy) * s + dy;
        if (iy < 0 || iy >= hin) {
            memset(dst, 0, (size_t)wo * sizeof *dst);
            continue;
        }
        const float *src = chan + (size_t)(iy / up) * in->w;
        for (int x = 0; x < xlo; x++) dst[x] = 0;
        if (up == 1 && s == 1) {
            memcpy(dst + xlo, src + xlo + dx, (size_t)(xhi - xlo) * sizeof *dst);
        } else if (up == 1) {
            for (int x = xlo; x < xhi; x++) dst[x] = src[x * s + dx];
        } else {
            for (int x = xlo; x < xhi; x++) dst[x] = src[(x * s + dx) >> 1];
        }
        for (int x = xhi; x < wo; x++) dst[x] = 0;
    }
}

static const float *channel(const lp_conv_in *in, int ci) {
    size_t plane = (size_t)in->h * in->w;
    return ci < in->ca ? in->a + (size_t)ci * plane : in->b + (size_t)(ci - in->ca) * plane;
}

typedef struct {
    const lp_conv2d *cv;
    const lp_conv_in *in;
    float *col;
    int y0, rows, wo;
    int phase_y, phase_x; /* PATH_UP2: the output phase (row, column parity) */
} im2col_task;

/* Fills im2col rows [begin, end); row r is (channel, ky, kx) in weight order. */
static void im2col_rows(void *ctx, int64_t begin, int64_t end) {
    const im2col_task *t = ctx;
    int k = t->cv->k, pad = k / 2;
    size_t n = (size_t)t->rows * t->wo;
    for (int64_t r = begin; r < end; r++) {
        int ci = (int)(r / (k * k)), ky = (int)(r / k % k), kx = (int)(r % k);
        fill_row(t->col + (size_t)r * n, channel(t->in, ci), t->in, t->y0, t->rows, t->wo, t->cv->stride, ky - pad,
                 kx - pad);
    }
}

/* Phase im2col rows [begin, end); row r is (channel, dy, dx) of the 2×2 taps at
 * offsets (phase − 1 + d) around each input pixel. */
static void phase_rows(void *ctx, int64_t begin, int64_t end) {
    const im2col_task *t = ctx;
    lp_conv_in plain = *t->in;
    plain.up = 1;
    size_t n = (size_t)t->rows * t->wo;
    for (int64_t r = begin; r < end; r++) {
        int ci = (int)(r / 4), dy = (int)(r / 2 % 2), dx = (int)(r % 2);
        fill_row(t->col + (size_t)r * n, channel(t->in, ci), &plain, t->y0, t->rows, t->wo, 1, t->phase_y - 1 + dy,
                 t->phase_x - 1 + dx);
    }
}

/* out rows [co] of a band start at out + co·stride: sets them to the bias (or 0)
 * unless accumulating, in which case the bias is added. */
static void init_band(const lp_conv2d *cv, float *out, size_t stride, size_t n, int accumulate) {
    for (int co = 0; co < cv->cout; co++) {
        float *o = out + (size_t)co * stride;
        float b = cv->b ? cv->b[co] : 0.0f;
        if (!accumulate) {
            for (size_t i = 0; i < n; i++) o[i] = b;
        } else if (b != 0.0f) {
            for (size_t i = 0; i < n; i++) o[i] += b;
        }
    }
}

static void conv_im2col(lp_pool *pool, const lp_conv2d *cv, const lp_conv_in *in, float *out, int accumulate,
                        float *scratch) {
    int ho, wo;
    lp_conv2d_out_size(cv, in, &ho, &wo);
    size_t hw = (size_t)ho * wo;
    int kdim = cv->cin * cv->k * cv->k, rows = band_rows((size_t)kdim * wo, ho);
    for (int y0 = 0; y0 < ho; y0 += rows) {
        int r = ho - y0 < rows ? ho - y0 : rows;
        size_t n = (size_t)r * wo;
        im2col_task t = {cv, in, scratch, y0, r, wo, 0, 0};
        lp_parallel_for(pool, kdim, im2col_rows, &t);
        float *o = out + (size_t)y0 * wo;
        init_band(cv, o, hw, n, accumulate);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cv->cout, (int)n, kdim, 1.0f, cv->w, kdim, scratch,
                    (int)n, 1.0f, o, (int)hw);
    }
}

/* A 3×3 conv (pad 1) over a nearest ×2 upsample: output pixel (2i + a, 2j + b)
 * only ever reads input rows i + a − 1 + {0, 1} and columns j + b − 1 + {0, 1},
 * so each of the four phases (a, b) is a 2×2 conv of the small input whose
 * taps are sums of the 3×3 taps: for a = 0 rows {ky = 0}, {1, 2}; for a = 1
 * rows {0, 1}, {2} (likewise for columns). 4/9 of the multiply-adds. */
static const int TAP_LO[2][2] = {{0, 1}, {0, 2}}, TAP_HI[2][2] = {{0, 2}, {1, 2}};

typedef struct {
    const lp_conv2d *cv;
    const lp_conv_in *in;
    const float *ph_out; /* [4][cout, rows·w] */
    float *out;
    int y0, rows, accumulate;
} scatter_task;

/* Interleaves the phase outputs of output channels [begin, end) into out. */
static void scatter_channels(void *ctx, int64_t begin, int64_t end) {
    const scatter_task *t = ctx;
    int w = t->in->w, W = 2 * w;
    size_t n = (size_t)t->rows * w, plane = (size_t)4 * t->in->h * w, ph = (size_t)t->cv->cout * n;
    for (int64_t co = begin; co < end; co++) {
        float bias = t->cv->b ? t->cv->b[co] : 0.0f;
        for (int ii = 0; ii < t->rows; ii++)
            for (int a = 0; a < 2; a++) {
                float *dst = t->out + (size_t)co * plane + (size_t)(2 * (t->y0 + ii) + a) * W;
                const float *p0 = t->ph_out + (size_t)(2 * a) * ph + (size_t)co * n + (size_t)ii * w;
                const float *p1 = p0 + ph;
                if (t->accumulate) {
                    for (int j = 0; j < w; j++) {
                        dst[2 * j] += p0[j] + bias;
                        dst[2 * j + 1] += p1[j] + bias;
                    }
                } else {
                    for (int j = 0; j < w; j++) {
                        dst[2 * j] = p0[j] + bias;
                        dst[2 * j + 1] = p1[j] + bias;
                    }
                }
            }
    }
}

static void conv_up2(lp_pool *pool, const lp_conv2d *cv, const lp_conv_in *in, float *out, int accumulate,
                     float *scratch) {
    int cin = cv->cin, cout = cv->cout, k4 = 4 * cin;
    float *pw = scratch; /* [4][cout][cin·4] */
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++)
            for (int co = 0; co < cout; co++)
                for (int ci = 0; ci < cin; ci++)
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++) {
                            const float *w9 = cv->w + ((size_t)co * cin + ci) * 9;
                            float sum = 0.0f;
                            for (int ky = TAP_LO[a][dy]; ky <= TAP_HI[a][dy]; ky++)
                                for (int kx = TAP_LO[b][dx]; kx <= TAP_HI[b][dx]; kx++) sum += w9[ky * 3 + kx];
                            pw[(((size_t)(a * 2 + b) * cout + co) * cin + ci) * 4 + dy * 2 + dx] = sum;
                        }
    int rows = band_rows(up2_per_row(cv, in), in->h);
    float *col = pw + (size_t)16 * cout * cin, *ph_out = col + (size_t)k4 * rows * in->w;
    for (int y0 = 0; y0 < in->h; y0 += rows) {
        int r = in->h - y0 < rows ? in->h - y0 : rows;
        size_t n = (size_t)r * in->w;
        for (int p = 0; p < 4; p++) {
            im2col_task t = {cv, in, col, y0, r, in->w, p / 2, p % 2};
            lp_parallel_for(pool, k4, phase_rows, &t);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)n, k4, 1.0f,
                        pw + (size_t)p * cout * k4, k4, col, (int)n, 0.0f, ph_out + (size_t)p * cout * n, (int)n);
        }
        scatter_task st = {cv, in, ph_out, out, y0, r, accumulate};
        lp_parallel_for(pool, cout, scatter_channels, &st);
    }
}

typedef struct {
    const lp_conv2d *cv;
    const lp_conv_in *in;
    float *out;
    int accumulate;
} direct_task;

/* o[x] += Σ_kx wk[kx]·s[x + kx − pad] for x < n, where s is an input row of n
 * columns (zero outside); the interior runs in blocks the compiler vectorises. */
static void row_taps(float *restrict o, const float *restrict s, const float *wk, int k, int n) {
    int pad = k / 2, x = 0;
    for (; x < n && x < pad; x++)
        for (int kx = 0; kx < k; kx++)
            if (x + kx - pad >= 0 && x + kx - pad < n) o[x] += wk[kx] * s[x + kx - pad];
    for (; x + 8 + pad <= n; x += 8) {
        float acc[8];
        for (int u = 0; u < 8; u++) acc[u] = o[x + u];
        for (int kx = 0; kx < k; kx++)
            for (int u = 0; u < 8; u++) acc[u] += wk[kx] * s[x + u + kx - pad];
        for (int u = 0; u < 8; u++) o[x + u] = acc[u];
    }
    for (; x < n; x++)
        for (int kx = 0; kx < k; kx++)
            if (x + kx - pad >= 0 && x + kx - pad < n) o[x] += wk[kx] * s[x + kx - pad];
}

/* Output rows [begin, end) of every channel, stride 1, no upsample (so the
 * output has the input's size). */
static void direct_rows(void *ctx, int64_t begin, int64_t end) {
    const direct_task *t = ctx;
    const lp_conv2d *cv = t->cv;
    const lp_conv_in *in = t->in;
    int k = cv->k, pad = k / 2, w = in->w;
    size_t hw = (size_t)in->h * w;
    for (int64_t y = begin; y < end; y++) {
        init_band(cv, t->out + (size_t)y * w, hw, (size_t)w, t->accumulate);
        for (int co = 0; co < cv->cout; co++) {
            float *o = t->out + (size_t)co * hw + (size_t)y * w;
            for (int ci = 0; ci < cv->cin; ci++)
                for (int ky = 0; ky < k; ky++) {
                    int iy = (int)y + ky - pad;
                    if (iy < 0 || iy >= in->h) continue;
                    row_taps(o, channel(in, ci) + (size_t)iy * w, cv->w + (((size_t)co * cv->cin + ci) * k + ky) * k,
                             k, w);
                }
        }
    }
}

lp_status lp_conv2d_forward(lp_pool *pool, const lp_conv2d *cv, const lp_conv_in *in, float *out, int accumulate,
                            float *scratch) {
    if (!cv->w || !in->a || !out)
        return lp_fail(LP_ERR_ARG, "conv2d: NULL weight, input or output");
    if (cv->cin != in->ca + in->cb || in->ca <= 0 || in->cb < 0 || (in->cb > 0 && !in->b))
        return lp_fail(LP_ERR_ARG, "conv2d: weight expects %d input channels, input has %d + %d", cv->cin, in->ca,
                       in->cb);
    if (cv->k < 1 || cv->k % 2 == 0 || (cv->stride != 1 && cv->stride != 2) || (in->up != 1 && in->up != 2) ||
        in->h <= 0 || in->w <= 0 || cv->cout <= 0)
        return lp_fail(LP_ERR_ARG, "conv2d: unsupported k=%d stride=%d up=%d on %dx%d", cv->k, cv->stride, in->up,
                       in->h, in->w);
    if (!scratch && lp_conv2d_scratch_floats(cv, in) > 0) return lp_fail(LP_ERR_ARG, "conv2d: scratch is NULL");
    int ho, wo;
    lp_conv2d_out_size(cv, in, &ho, &wo);
    size_t hw = (size_t)ho * wo;
    switch (choose_path(cv, in)) {
    case PATH_1X1:
        init_band(cv, out, hw, hw, accumulate);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cv->cout, (int)hw, in->ca, 1.0f, cv->w, cv->cin, in->a,
                    (int)hw, 1.0f, out, (int)hw);
        if (in->cb > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cv->cout, (int)hw, in->cb, 1.0f, cv->w + in->ca,
                        cv->cin, in->b, (int)hw, 1.0f, out, (int)hw);
        break;
    case PATH_UP2: conv_up2(pool, cv, in, out, accumulate, scratch); break;
    case PATH_DIRECT: {
        direct_task t = {cv, in, out, accumulate};
        lp_parallel_for(pool, ho, direct_rows, &t);
        break;
    }
    case PATH_IM2COL: conv_im2col(pool, cv, in, out, accumulate, scratch); break;
    }
    return LP_OK;
}

typedef struct {
    float *dst;
    const float *src;
} ew_task;

static void relu_range(void *ctx, int64_t b, int64_t e) {
    float *x = ((ew_task *)ctx)->dst;
    for (int64_t i = b; i < e; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void lp_relu(lp_pool *pool, float *x, int64_t n) {
    ew_task t = {x, x};
    lp_parallel_for(pool, n, relu_range, &t);
}

static void tanh_clamp_range(void *ctx, int64_t b, int64_t e) {
    ew_task *t = ctx;
    for (int64_t i = b; i < e; i++) t->dst[i] = tanhf(t->src[i] / 3.0f) * 3.0f;
}

void lp_tanh_clamp(lp_pool *pool, float *dst, const float *src, int64_t n) {
    ew_task t = {dst, src};
    lp_parallel_for(pool, n, tanh_clamp_range, &t);
}

static void clamp01_range(void *ctx, int64_t b, int64_t e) {
    ew_task *t = ctx;
    for (int64_t i = b; i < e; i++) {
        float v = t->src[i];
        t->dst[i] = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
    }
}

void lp_clamp01(lp_pool *pool, float *dst, const float *src, int64_t n) {
    ew_task t = {dst, src};
    lp_parallel_for(pool, n, clamp01_range, &t);
}
