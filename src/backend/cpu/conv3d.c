#include "conv3d.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "cpu_ops.h"

lp_conv3d_geom lp_cpu_vae_geom_same(const lp_vae_conv_w *k, int h, int w) {
    return (lp_conv3d_geom){.h = h, .w = w, .oh = h, .ow = w, .stride = 1, .pad = k->kh / 2, .t_stride = 1};
}

lp_conv3d_geom lp_cpu_vae_geom_down2(int h, int w) {
    return (lp_conv3d_geom){.h = h, .w = w, .oh = (h - 2) / 2 + 1, .ow = (w - 2) / 2 + 1, .stride = 2, .pad = 0,
                              .t_stride = 1};
}

static int is_pointwise(const lp_vae_conv_w *w, const lp_conv3d_geom *g) {
    return w->kt == 1 && w->kh == 1 && w->kw == 1 && g->stride == 1 && g->pad == 0 && g->oh == g->h &&
           g->ow == g->w;
}

size_t lp_cpu_vae_conv_scratch(const lp_vae_conv_w *w, const lp_conv3d_geom *g, size_t budget) {
    if (is_pointwise(w, g)) return 0;
    size_t row = (size_t)w->cin * w->kt * w->kh * w->kw * (size_t)g->ow;
    size_t rows = budget / row;
    if (rows < 1) rows = 1;
    if (rows > (size_t)g->oh) rows = (size_t)g->oh;
    return rows * row;
}

typedef struct {
    const lp_vae_conv_w *w;
    const lp_conv3d_geom *g;
    const float *const *frames; /* the kt input frames of this output frame */
    int oy0, rows;
    float *col;                 /* [K][rows * ow] */
} im2col_ctx;

/* Rows [begin, end) of the im2col matrix; row r is (ci, dt, dy, dx) in the
 * weight's own order, so the weight is used as a [cout, K] matrix unchanged. */
static void im2col_rows(void *p, int64_t begin, int64_t end) {
    const im2col_ctx *c = p;
    const lp_vae_conv_w *w = c->w;
    const lp_conv3d_geom *g = c->g;
    int ksp = w->kh * w->kw, kvol = w->kt * ksp, ow = g->ow, s = g->stride, pad = g->pad;
    for (int64_t r = begin; r < end; r++) {
        int ci = (int)(r / kvol), rem = (int)(r % kvol);
        int dt = rem / ksp, dy = rem % ksp / w->kw, dx = rem % w->kw;
        const float *src = c->frames[dt];
        float *dst = c->col + r * (int64_t)c->rows * ow;
        /* columns ox with 0 <= ox*s + dx - pad < w */
        int lo = 0, hi = ow;
        while (lo < ow && lo * s + dx - pad < 0) lo++;
        while (hi > lo && (hi - 1) * s + dx - pad >= g->w) hi--;
        for (int i = 0; i < c->rows; i++, dst += ow) {
            int iy = (c->oy0 + i) * s + dy - pad;
            if (!src || iy < 0 || iy >= g->h) {
                memset(dst, 0, (size_t)ow * sizeof *dst);
                continue;
            }
            const float *srow = src + ((int64_t)ci * g->h + iy) * g->w;
            memset(dst, 0, (size_t)lo * sizeof *dst);
            if (s == 1) memcpy(dst + lo, srow + lo + dx - pad, (size_t)(hi - lo) * sizeof *dst);
            else
                for (int ox = lo; ox < hi; ox++) dst[ox] = srow[ox * s + dx - pad];
            memset(dst + hi, 0, (size_t)(ow - hi) * sizeof *dst);
        }
    }
}

/* out[co][p] += bias[co] for p < n, row stride ld. */
static void add_bias(const float *bias, float *out, int cout, int64_t n, int64_t ld) {
    if (!bias) return;
    for (int co = 0; co < cout; co++) {
        float b = bias[co], *o = out + co * ld;
        for (int64_t p = 0; p < n; p++) o[p] += b;
    }
}

static lp_status pointwise(const lp_vae_conv_w *w, const lp_conv3d_geom *g, const float *const *in, int n_out,
                           float *out) {
    int64_t hw = (int64_t)g->h * g->w;
    for (int j = 0; j < n_out; j++) {
        const float *src = in[(int64_t)j * g->t_stride];
        float *o = out + (int64_t)j * w->cout * hw;
        if (src)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, w->cout, (int)hw, w->cin, 1.0f, w->weight, w->cin,
                        src, (int)hw, 0.0f, o, (int)hw);
        else
            memset(o, 0, (size_t)(w->cout * hw) * sizeof *o);
        add_bias(w->bias, o, w->cout, hw, hw);
    }
    return LP_OK;
}

lp_status lp_cpu_vae_conv(lp_pool *pool, const lp_vae_conv_w *w, const lp_conv3d_geom *g, const float *const *in,
                          int n_in, float *out, float *scratch, size_t scratch_n) {
    if (n_in < w->kt || g->t_stride < 1 || g->oh < 1 || g->ow < 1)
        return lp_fail(LP_ERR_ARG, "vae conv: %d input frames for a kernel of %d frames (time stride %d, output %dx%d)",
                       n_in, w->kt, g->t_stride, g->oh, g->ow);
    int n_out = (n_in - w->kt) / g->t_stride + 1;
    if (is_pointwise(w, g)) return pointwise(w, g, in, n_out, out);
    int64_t K = (int64_t)w->cin * w->kt * w->kh * w->kw;
    int64_t rows = (int64_t)(scratch_n / (size_t)(K * g->ow));
    if (rows < 1)
        return lp_fail(LP_ERR_ARG, "vae conv: scratch of %zu floats cannot hold one im2col row of %lld", scratch_n,
                       (long long)(K * g->ow));
    if (rows > g->oh) rows = g->oh;
    int64_t ohw = (int64_t)g->oh * g->ow;
    for (int j = 0; j < n_out; j++) {
        float *o = out + (int64_t)j * w->cout * ohw;
        for (int oy0 = 0; oy0 < g->oh; oy0 += (int)rows) {
            int r = (int)(g->oh - oy0 < rows ? g->oh - oy0 : rows);
            im2col_ctx c = {.w = w, .g = g, .frames = in + (int64_t)j * g->t_stride,
                            .oy0 = oy0, .rows = r, .col = scratch};
            lp_parallel_for(pool, K, im2col_rows, &c);
            int n = r * g->ow;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, w->cout, n, (int)K, 1.0f, w->weight, (int)K,
                        scratch, n, 0.0f, o + (int64_t)oy0 * g->ow, (int)ohw);
            add_bias(w->bias, o + (int64_t)oy0 * g->ow, w->cout, n, ohw);
        }
    }
    return LP_OK;
}

typedef struct {
    const float *x;
    float *y;
    int c;
    int64_t n, blocks;
    const float *gamma;
} rms_ctx;

enum { RMS_BLOCK = 64 };

/* Tasks are (frame, block of RMS_BLOCK pixels). */
static void rms_range(void *p, int64_t begin, int64_t end) {
    const rms_ctx *r = p;
    const float scale = sqrtf((float)r->c);
    double ss[RMS_BLOCK];
    float nrm[RMS_BLOCK];
    for (int64_t task = begin; task < end; task++) {
        int64_t f = task / r->blocks, p0 = task % r->blocks * RMS_BLOCK;
        int m = (int)(r->n - p0 < RMS_BLOCK ? r->n - p0 : RMS_BLOCK);
        const float *x = r->x + f * r->c * r->n + p0;
        float *y = r->y + f * r->c * r->n + p0;
        for (int i = 0; i < m; i++) ss[i] = 0;
        for (int ch = 0; ch < r->c; ch++)
            for (int i = 0; i < m; i++) ss[i] += (double)x[ch * r->n + i] * x[ch * r->n + i];
        for (int i = 0; i < m; i++) {
            float v = (float)sqrt(ss[i]);
            nrm[i] = v > 1e-12f ? v : 1e-12f; /* F.normalize's eps */
        }
        for (int ch = 0; ch < r->c; ch++) {
            float g = r->gamma[ch];
            for (int i = 0; i < m; i++) y[ch * r->n + i] = x[ch * r->n + i] / nrm[i] * scale * g;
        }
    }
}

void lp_cpu_vae_rms_norm(lp_pool *pool, const float *x, float *y, int64_t frames, int c, int64_t n,
                         const float *gamma) {
    rms_ctx r = {.x = x, .y = y, .c = c, .n = n, .blocks = (n + RMS_BLOCK - 1) / RMS_BLOCK, .gamma = gamma};
    lp_parallel_for(pool, frames * r.blocks, rms_range, &r);
}

typedef struct {
    float *y;
    const float *x;
} add_ctx;

static void add_range(void *p, int64_t begin, int64_t end) {
    const add_ctx *a = p;
    for (int64_t i = begin; i < end; i++) a->y[i] += a->x[i];
}

void lp_cpu_vae_add(lp_pool *pool, float *y, const float *x, int64_t n) {
    add_ctx a = {.y = y, .x = x};
    lp_parallel_for(pool, n, add_range, &a);
}

static void silu_range(void *p, int64_t begin, int64_t end) {
    float *x = p;
    for (int64_t i = begin; i < end; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
}

void lp_cpu_vae_silu(lp_pool *pool, float *x, int64_t n) { lp_parallel_for(pool, n, silu_range, x); }

typedef struct {
    const float *in;
    float *out;
    int h, w;
} up_ctx;

/* Tasks are input rows (channel, y). */
static void up_range(void *p, int64_t begin, int64_t end) {
    const up_ctx *u = p;
    for (int64_t row = begin; row < end; row++) {
        const float *src = u->in + row * u->w;
        float *d0 = u->out + row * 4 * u->w, *d1 = d0 + 2 * u->w;
        for (int x = 0; x < u->w; x++) d0[2 * x] = d0[2 * x + 1] = src[x];
        memcpy(d1, d0, (size_t)(2 * u->w) * sizeof *d1);
    }
}

void lp_cpu_vae_upsample2x(lp_pool *pool, const float *in, float *out, int c, int h, int w) {
    up_ctx u = {.in = in, .out = out, .h = h, .w = w};
    lp_parallel_for(pool, (int64_t)c * h, up_range, &u);
}

size_t lp_cpu_vae_attention_scratch(int64_t n, size_t budget) {
    size_t rows = budget / (size_t)n;
    if (rows < 1) rows = 1;
    if (rows > (size_t)n) rows = (size_t)n;
    return rows * (size_t)n;
}

lp_status lp_cpu_vae_attention(lp_pool *pool, const float *q, const float *k, const float *v, float *out, int c,
                               int64_t n, float *scratch, size_t scratch_n) {
    int64_t rows = (int64_t)(scratch_n / (size_t)n);
    if (rows < 1)
        return lp_fail(LP_ERR_ARG, "vae attention: scratch of %zu floats cannot hold one row of %lld scores",
                       scratch_n, (long long)n);
    const float scale = 1.0f / sqrtf((float)c);
    for (int64_t i0 = 0; i0 < n; i0 += rows) {
        int b = (int)(n - i0 < rows ? n - i0 : rows);
        /* scores[b][n] = q[:, i0:i0+b]^T k / sqrt(c) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, b, (int)n, c, scale, q + i0, (int)n, k, (int)n, 0.0f,
                    scratch, (int)n);
        lp_cpu_softmax_rows(pool, scratch, b, n);
        /* out[:, i0:i0+b] = v scores^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c, b, (int)n, 1.0f, v, (int)n, scratch, (int)n, 0.0f,
                    out + i0, (int)n);
    }
    return LP_OK;
}
