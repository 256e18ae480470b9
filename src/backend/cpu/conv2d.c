#include "conv2d.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Target size of one im2col band in floats (4 MiB): large enough for an
 * efficient GEMM, small enough to stay near the caches. */
#define BAND_FLOATS ((size_t)1 << 20)

void lp_conv2d_out_size(const lp_conv2d *cv, const lp_conv_in *in, int *ho, int *wo) {
    int pad = cv->k / 2;
    *ho = (in->h * in->up + 2 * pad - cv->k) / cv->stride + 1;
    *wo = (in->w * in->up + 2 * pad - cv->k) / cv->stride + 1;
}

static int is_plain_1x1(const lp_conv2d *cv, const lp_conv_in *in) {
    return cv->k == 1 && cv->stride == 1 && in->up == 1;
}

/* Output rows per band: as many as fit BAND_FLOATS, at least one. */
static int band_rows(const lp_conv2d *cv, const lp_conv_in *in) {
    int ho, wo;
    lp_conv2d_out_size(cv, in, &ho, &wo);
    size_t row = (size_t)cv->cin * (size_t)(cv->k * cv->k) * (size_t)wo;
    size_t r = row ? BAND_FLOATS / row : 1;
    if (r < 1) r = 1;
    if (r > (size_t)ho) r = (size_t)ho;
    return (int)r;
}

size_t lp_conv2d_scratch_floats(const lp_conv2d *cv, const lp_conv_in *in) {
    if (is_plain_1x1(cv, in)) return 0;
    int ho, wo;
    lp_conv2d_out_size(cv, in, &ho, &wo);
    return (size_t)cv->cin * (size_t)(cv->k * cv->k) * (size_t)band_rows(cv, in) * (size_t)wo;
}

double lp_conv2d_flops(const lp_conv2d *cv, const lp_conv_in *in) {
    int ho, wo;
    lp_conv2d_out_size(cv, in, &ho, &wo);
    return 2.0 * cv->cout * (double)cv->cin * cv->k * cv->k * (double)ho * wo;
}

typedef struct {
    const lp_conv2d *cv;
    const lp_conv_in *in;
    float *col;     /* [cin·k·k, rows·wo] */
    int y0, rows, wo;
} im2col_task;

/* Fills im2col rows [begin, end); row r is (channel, ky, kx) in weight order. */
static void im2col_rows(void *ctx, int64_t begin, int64_t end) {
    const im2col_task *t = ctx;
    const lp_conv_in *in = t->in;
    int k = t->cv->k, s = t->cv->stride, pad = k / 2, up = in->up;
    int hin = in->h * up, win = in->w * up, wo = t->wo;
    size_t plane = (size_t)in->h * in->w, n = (size_t)t->rows * wo;
    for (int64_t r = begin; r < end; r++) {
        int ci = (int)(r / (k * k)), ky = (int)(r / k % k), kx = (int)(r % k);
        const float *chan = ci < in->ca ? in->a + (size_t)ci * plane : in->b + (size_t)(ci - in->ca) * plane;
        float *dst = t->col + (size_t)r * n;
        /* valid output columns: 0 <= xo·s + kx − pad < win */
        int xlo = pad - kx > 0 ? (pad - kx + s - 1) / s : 0;
        int last = win - 1 - kx + pad;
        int xhi = last < 0 ? 0 : last / s + 1;
        if (xhi > wo) xhi = wo;
        if (xlo > xhi) xlo = xhi;
        for (int yy = 0; yy < t->rows; yy++, dst += wo) {
            int iy = (t->y0 + yy) * s + ky - pad;
            if (iy < 0 || iy >= hin) {
                memset(dst, 0, (size_t)wo * sizeof *dst);
                continue;
            }
            const float *src = chan + (size_t)(iy / up) * in->w;
            for (int x = 0; x < xlo; x++) dst[x] = 0;
            int off = kx - pad;
            if (up == 1 && s == 1) {
                memcpy(dst + xlo, src + xlo + off, (size_t)(xhi - xlo) * sizeof *dst);
            } else if (up == 1) {
                for (int x = xlo; x < xhi; x++) dst[x] = src[x * s + off];
            } else {
                for (int x = xlo; x < xhi; x++) dst[x] = src[(x * s + off) / up];
            }
            for (int x = xhi; x < wo; x++) dst[x] = 0;
        }
    }
}

/* out rows [co] of a band start at out + co·ho·wo: sets them to the bias (or 0)
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

lp_status lp_conv2d_forward(lp_pool *pool, const lp_conv2d *cv, const lp_conv_in *in, float *out, int accumulate,
                            float *scratch) {
    if (cv->cin != in->ca + in->cb || in->ca <= 0 || in->cb < 0 || (in->cb > 0 && !in->b))
        return lp_fail(LP_ERR_ARG, "conv2d: weight expects %d input channels, input has %d + %d", cv->cin, in->ca,
                       in->cb);
    if (cv->k < 1 || cv->k % 2 == 0 || (cv->stride != 1 && cv->stride != 2) || (in->up != 1 && in->up != 2) ||
        in->h <= 0 || in->w <= 0 || cv->cout <= 0)
        return lp_fail(LP_ERR_ARG, "conv2d: unsupported k=%d stride=%d up=%d on %dx%d", cv->k, cv->stride, in->up,
                       in->h, in->w);
    int ho, wo;
    lp_conv2d_out_size(cv, in, &ho, &wo);
    size_t hw = (size_t)ho * wo;
    if (is_plain_1x1(cv, in)) {
        init_band(cv, out, hw, hw, accumulate);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cv->cout, (int)hw, in->ca, 1.0f, cv->w, cv->cin, in->a,
                    (int)hw, 1.0f, out, (int)hw);
        if (in->cb > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cv->cout, (int)hw, in->cb, 1.0f, cv->w + in->ca,
                        cv->cin, in->b, (int)hw, 1.0f, out, (int)hw);
        return LP_OK;
    }
    int kdim = cv->cin * cv->k * cv->k, rows = band_rows(cv, in);
    for (int y0 = 0; y0 < ho; y0 += rows) {
        int r = ho - y0 < rows ? ho - y0 : rows;
        size_t n = (size_t)r * wo;
        im2col_task t = {cv, in, scratch, y0, r, wo};
        lp_parallel_for(pool, kdim, im2col_rows, &t);
        float *o = out + (size_t)y0 * wo;
        init_band(cv, o, hw, n, accumulate);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cv->cout, (int)n, kdim, 1.0f, cv->w, kdim, scratch,
                    (int)n, 1.0f, o, (int)hw);
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

static void add_range(void *ctx, int64_t b, int64_t e) {
    ew_task *t = ctx;
    for (int64_t i = b; i < e; i++) t->dst[i] += t->src[i];
}

void lp_add_inplace(lp_pool *pool, float *y, const float *x, int64_t n) {
    ew_task t = {y, x};
    lp_parallel_for(pool, n, add_range, &t);
}

typedef struct {
    float *dst;
    const float *src;
    int w;
} up_task;

/* Rows [b, e) of the source, all channels flattened (c·h rows). */
static void upsample_rows(void *ctx, int64_t b, int64_t e) {
    up_task *t = ctx;
    for (int64_t r = b; r < e; r++) {
        const float *s = t->src + (size_t)r * t->w;
        float *d = t->dst + (size_t)r * 4 * t->w;
        for (int x = 0; x < t->w; x++) d[2 * x] = d[2 * x + 1] = s[x];
        memcpy(d + 2 * t->w, d, (size_t)2 * t->w * sizeof *d);
    }
}

void lp_upsample2x_nearest(lp_pool *pool, float *dst, const float *src, int c, int h, int w) {
    up_task t = {dst, src, w};
    lp_parallel_for(pool, (int64_t)c * h, upsample_rows, &t);
}

void lp_concat_channels(float *dst, const float *a, int ca, const float *b, int cb, int h, int w) {
    size_t plane = (size_t)h * w;
    memcpy(dst, a, (size_t)ca * plane * sizeof *dst);
    if (cb > 0) memcpy(dst + (size_t)ca * plane, b, (size_t)cb * plane * sizeof *dst);
}
