/* Row-wise and element-wise CPU ops: LayerNorm, RMSNorm, modulation, gated
 * residual, tanh-GELU, SiLU. Statistics are accumulated in double. */
#include <math.h>

#include "cpu_ops.h"

typedef struct {
    float *y;
    const float *x;
    int64_t dim;
    const lp_tensor *w, *b;
    float eps;
    const float *shift, *scale, *gate;
} row_job;

/* Reads element i of an optional affine parameter (1 or 0 when absent). */
static float param(const lp_tensor *t, int64_t i, float dflt) {
    if (!t) return dflt;
    float v;
    lp_tensor_read_f32(t, i, 1, &v);
    return v;
}

static void layer_norm_rows(void *ctx, int64_t b, int64_t e) {
    row_job *j = ctx;
    int f32w = (!j->w || j->w->dtype == LP_F32) && (!j->b || j->b->dtype == LP_F32);
    for (int64_t r = b; r < e; r++) {
        const float *x = j->x + r * j->dim;
        float *y = j->y + r * j->dim;
        double mean = 0, var = 0;
        for (int64_t c = 0; c < j->dim; c++) mean += x[c];
        mean /= (double)j->dim;
        for (int64_t c = 0; c < j->dim; c++) var += ((double)x[c] - mean) * ((double)x[c] - mean);
        var /= (double)j->dim;
        float rstd = (float)(1.0 / sqrt(var + (double)j->eps)), m = (float)mean;
        if (!j->w && !j->b) {
            for (int64_t c = 0; c < j->dim; c++) y[c] = (x[c] - m) * rstd;
        } else if (f32w) {
            const float *w = j->w ? j->w->data : NULL, *bb = j->b ? j->b->data : NULL;
            for (int64_t c = 0; c < j->dim; c++) y[c] = (x[c] - m) * rstd * (w ? w[c] : 1.0f) + (bb ? bb[c] : 0.0f);
        } else {
            for (int64_t c = 0; c < j->dim; c++)
                y[c] = (x[c] - m) * rstd * param(j->w, c, 1.0f) + param(j->b, c, 0.0f);
        }
    }
}

void lp_cpu_layer_norm(const lp_backend *be, float *y, const float *x, int64_t rows, int64_t dim, const lp_tensor *w,
                       const lp_tensor *b, float eps) {
    row_job j = {.y = y, .x = x, .dim = dim, .w = w, .b = b, .eps = eps};
    lp_parallel_for(be->pool, rows, layer_norm_rows, &j);
}

static void rms_norm_rows(void *ctx, int64_t b, int64_t e) {
    row_job *j = ctx;
    for (int64_t r = b; r < e; r++) {
        float *x = j->y + r * j->dim;
        double ss = 0;
        for (int64_t c = 0; c < j->dim; c++) ss += (double)x[c] * x[c];
        float rs = (float)(1.0 / sqrt(ss / (double)j->dim + (double)j->eps));
        if (j->w->dtype == LP_F32) {
            const float *w = j->w->data;
            for (int64_t c = 0; c < j->dim; c++) x[c] = x[c] * rs * w[c];
        } else {
            for (int64_t c = 0; c < j->dim; c++) x[c] = x[c] * rs * param(j->w, c, 1.0f);
        }
    }
}

void lp_cpu_rms_norm(const lp_backend *be, float *x, int64_t rows, int64_t dim, const lp_tensor *w, float eps) {
    row_job j = {.y = x, .dim = dim, .w = w, .eps = eps};
    lp_parallel_for(be->pool, rows, rms_norm_rows, &j);
}

static void modulate_rows(void *ctx, int64_t b, int64_t e) {
    row_job *j = ctx;
    for (int64_t r = b; r < e; r++) {
        float *x = j->y + r * j->dim;
        for (int64_t c = 0; c < j->dim; c++) x[c] = x[c] * (1.0f + j->scale[c]) + j->shift[c];
    }
}

void lp_cpu_modulate(const lp_backend *be, float *x, int64_t rows, int64_t dim, const float *shift,
                     const float *scale) {
    row_job j = {.y = x, .dim = dim, .shift = shift, .scale = scale};
    lp_parallel_for(be->pool, rows, modulate_rows, &j);
}

static void gated_add_rows(void *ctx, int64_t b, int64_t e) {
    row_job *j = ctx;
    for (int64_t r = b; r < e; r++) {
        float *x = j->y + r * j->dim;
        const float *y = j->x + r * j->dim;
        if (j->gate)
            for (int64_t c = 0; c < j->dim; c++) x[c] += y[c] * j->gate[c];
        else
            for (int64_t c = 0; c < j->dim; c++) x[c] += y[c];
    }
}

void lp_cpu_gated_add(const lp_backend *be, float *x, const float *y, int64_t rows, int64_t dim, const float *gate) {
    row_job j = {.y = x, .x = y, .dim = dim, .gate = gate};
    lp_parallel_for(be->pool, rows, gated_add_rows, &j);
}

static void gelu_range(void *ctx, int64_t b, int64_t e) {
    float *x = ((row_job *)ctx)->y;
    for (int64_t i = b; i < e; i++) {
        double v = x[i];
        x[i] = (float)(0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))));
    }
}

void lp_cpu_gelu_tanh(const lp_backend *be, float *x, int64_t n) {
    row_job j = {.y = x};
    lp_parallel_for(be->pool, n, gelu_range, &j);
}

static void silu_range(void *ctx, int64_t b, int64_t e) {
    float *x = ((row_job *)ctx)->y;
    for (int64_t i = b; i < e; i++) x[i] = (float)((double)x[i] / (1.0 + exp(-(double)x[i])));
}

void lp_cpu_silu(const lp_backend *be, float *x, int64_t n) {
    row_job j = {.y = x};
    lp_parallel_for(be->pool, n, silu_range, &j);
}
