/* The CPU backend ops (src/backend/cpu through the lp_backend table of
 * lp_backend_cpu_create(2, ...)) against naive double-precision references
 * written here from their contracts (backend.h) and spec/MODEL.md §4-6, on
 * random inputs. Each case prints its relative L2 error. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/backend/backend.h"
#include "../src/backend/cpu/cpu_ops.h"
#include "../src/base/half.h"
#include "../src/pipeline/scheduler.h"
#include "test_util.h"

/* CHECK for conditions whose text says it all */
#define REQUIRE(cond) CHECK(cond, "%s", "")

static lp_backend *be;

/* Compares n floats against a double reference; prints and bounds the
 * relative L2 error. */
static int compare(const char *what, const float *got, const double *want, size_t n, double tol) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        den += want[i] * want[i];
    }
    double err = den > 0 ? sqrt(num / den) : INFINITY; /* NaN fails too */
    printf("    %-44s rel L2 %.2e (limit %.0e)\n", what, err, tol);
    CHECK(err <= tol, "%s: relative L2 %.3e > %.0e", what, err, tol);
    return 0;
}

/* A tensor view of data with the given dtype and shape. */
static lp_tensor view(const char *name, lp_dtype dt, int ndim, const int64_t *shape, const void *data) {
    lp_tensor t = {.name = name, .dtype = dt, .ndim = ndim, .data = data};
    memcpy(t.shape, shape, (size_t)ndim * sizeof *shape);
    t.nbytes = (size_t)lp_tensor_numel(&t) * lp_dtype_size(dt);
    return t;
}

/* Random values of n elements stored as dt into raw; vals receives the
 * values as stored (rounded to dt). */
static void random_as(lp_dtype dt, size_t n, uint32_t seed, float scale, void *raw, float *vals) {
    lp_test_fill(vals, n, seed, scale);
    for (size_t i = 0; i < n; i++) {
        if (dt == LP_F16) {
            uint16_t h = lp_f32_to_f16(vals[i]);
            ((uint16_t *)raw)[i] = h;
            vals[i] = lp_f16_to_f32(h);
        } else if (dt == LP_BF16) {
            uint16_t h = lp_f32_to_bf16(vals[i]);
            ((uint16_t *)raw)[i] = h;
            vals[i] = lp_bf16_to_f32(h);
        } else {
            ((float *)raw)[i] = vals[i];
        }
    }
}

/* ---------------------------------------------------------------- linear */

static int linear_case(int64_t M, int64_t K, int64_t N, lp_dtype wdt, int bias, lp_dtype bdt, int gelu) {
    size_t wn = (size_t)(N * K);
    float *x = malloc((size_t)(M * K + 1) * sizeof *x), *w = malloc(wn * sizeof *w), *b = malloc((size_t)N * sizeof *b);
    float *y = malloc((size_t)(M * N + 1) * sizeof *y);
    void *wraw = malloc(wn * 4), *braw = malloc((size_t)N * 4);
    double *ref = malloc((size_t)(M * N + 1) * sizeof *ref);
    REQUIRE(x && w && b && y && wraw && braw && ref);
    lp_test_fill(x, (size_t)(M * K), (uint32_t)(M * 7 + K), 1.0f);
    random_as(wdt, wn, (uint32_t)(N * 3 + K), 0.5f, wraw, w);
    random_as(bdt, (size_t)N, (uint32_t)N + 99, 1.0f, braw, b);
    int64_t ws[2] = {N, K}, bs[1] = {N};
    lp_tensor W = view("w", wdt, 2, ws, wraw), B = view("b", bdt, 1, bs, braw);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = bias ? b[n] : 0.0;
            for (int64_t k = 0; k < K; k++) s += (double)x[m * K + k] * w[n * K + k];
            ref[m * N + n] = gelu ? 0.5 * s * (1.0 + tanh(sqrt(2.0 / M_PI) * (s + 0.044715 * s * s * s))) : s;
        }
    y[M * N] = 12345.0f; /* sentinel after the output */
    lp_status st = be->linear(be, y, x, M, &W, bias ? &B : NULL, gelu ? LP_LINEAR_GELU : 0);
    int r = 0;
    if (st != LP_OK) {
        fprintf(stderr, "  linear: %s\n", lp_last_error());
        r = 1;
    } else if (M == 0) {
        r = y[0] != 12345.0f;
    } else {
        char what[96];
        snprintf(what, sizeof what, "linear M%lld K%lld N%lld w %s%s%s%s", (long long)M, (long long)K, (long long)N,
                 lp_dtype_name(wdt), bias ? " bias " : "", bias ? lp_dtype_name(bdt) : "", gelu ? " GELU" : "");
        r = compare(what, y, ref, (size_t)(M * N), 1e-6) || y[M * N] != 12345.0f;
    }
    free(x), free(w), free(b), free(y), free(wraw), free(braw), free(ref);
    return r;
}

static int test_linear(void) {
    /* the last: a bias longer than 4096 (ffn.0 of an fp16 checkpoint has 8960) */
    static const struct { int64_t M, K, N; } sizes[] = {
        {1, 3, 5}, {37, 3, 5}, {1, 64, 33}, {37, 65, 31}, {5, 257, 300}, {2, 3, 8960}};
    static const lp_dtype dts[] = {LP_F32, LP_F16, LP_BF16};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (int d = 0; d < 3; d++)
            for (int bias = 0; bias < 2; bias++)
                if (linear_case(sizes[s].M, sizes[s].K, sizes[s].N, dts[d], bias, dts[(d + s) % 3], 0)) return 1;
    /* GELU after the bias (LP_LINEAR_GELU) */
    if (linear_case(37, 65, 31, LP_BF16, 1, LP_F32, 1) || linear_case(5, 257, 300, LP_F32, 0, LP_F32, 1)) return 1;
    /* M = 0 leaves y alone */
    if (linear_case(0, 7, 5, LP_F32, 1, LP_F32, 0) || linear_case(0, 7, 5, LP_BF16, 0, LP_F32, 0)) return 1;
    return 0;
}

static int test_linear_errors(void) {
    float buf[64] = {0}, y[64];
    int64_t s3[3] = {2, 2, 2}, s2[2] = {4, 2}, s1[1] = {3};
    lp_tensor W3 = view("w3", LP_F32, 3, s3, buf), W = view("w", LP_F32, 2, s2, buf), B = view("b", LP_F32, 1, s1, buf);
    lp_tensor Wi = view("wi", LP_I32, 2, s2, buf);
    CHECK(be->linear(be, y, buf, 1, &W3, NULL, 0) == LP_ERR_SHAPE && strstr(lp_last_error(), "'w3' must be 2-D"), "%s",
          lp_last_error());
    CHECK(be->linear(be, y, buf, 1, &W, &B, 0) == LP_ERR_SHAPE && strstr(lp_last_error(), "bias 'b' has 3 elements"),
          "%s", lp_last_error());
    CHECK(be->linear(be, y, buf, 1, &Wi, NULL, 0) == LP_ERR_UNSUPPORTED && strstr(lp_last_error(), "'wi'"), "%s",
          lp_last_error());
    CHECK(lp_cpu_to_f32(be, &W, 4, 5, y) == LP_ERR_ARG && lp_cpu_to_f32(be, &W, INT64_MAX, 1, y) == LP_ERR_ARG &&
              lp_cpu_to_f32(be, &W, 1, INT64_MAX, y) == LP_ERR_ARG,
          "%s", lp_last_error());
    REQUIRE(lp_cpu_to_f32(be, &W, 2, 6, y) == LP_OK);
    return 0;
}

/* linear_batch: the products one linear at a time, into outputs y_stride
 * apart (the gap untouched); argument errors. */
static int test_linear_batch(void) {
    enum { M = 7, K = 24, N = 10, CNT = 3, STRIDE = M * N + 5 };
    float x[M * K], wv[CNT][N * K], bv[CNT][N], y[CNT * STRIDE], want[M * N];
    lp_test_fill(x, M * K, 11, 1.0f);
    lp_tensor W[CNT], B[CNT];
    const lp_tensor *wp[CNT], *bp[CNT];
    int64_t ws[2] = {N, K}, bs[1] = {N};
    for (int i = 0; i < CNT; i++) {
        lp_test_fill(wv[i], N * K, 20 + (uint32_t)i, 0.5f);
        lp_test_fill(bv[i], N, 30 + (uint32_t)i, 1.0f);
        W[i] = view("w", LP_F32, 2, ws, wv[i]);
        B[i] = view("b", LP_F32, 1, bs, bv[i]);
        wp[i] = &W[i];
        bp[i] = &B[i];
    }
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        for (int i = 0; i < CNT * STRIDE; i++) y[i] = 777.0f;
        REQUIRE(be->linear_batch(be, y, STRIDE, x, M, wp, with_bias ? bp : NULL, CNT, 0) == LP_OK);
        for (int i = 0; i < CNT; i++) {
            REQUIRE(be->linear(be, want, x, M, wp[i], with_bias ? bp[i] : NULL, 0) == LP_OK);
            CHECK(!memcmp(y + i * STRIDE, want, sizeof want), "product %d differs from linear's", i);
            for (int g = M * N; g < STRIDE; g++) CHECK(y[i * STRIDE + g] == 777.0f, "gap of product %d written", i);
        }
    }
    int64_t s2[2] = {N + 1, K};
    lp_tensor other = view("other", LP_F32, 2, s2, wv[0]);
    const lp_tensor *mixed[2] = {&W[0], &other}, *half_bias[2] = {&B[0], NULL};
    CHECK(be->linear_batch(be, y, STRIDE, x, M, mixed, NULL, 2, 0) == LP_ERR_SHAPE, "mixed shapes accepted");
    CHECK(be->linear_batch(be, y, STRIDE, x, M, wp, half_bias, 2, 0) == LP_ERR_ARG, "a missing bias accepted");
    CHECK(be->linear_batch(be, y, M * N - 1, x, M, wp, NULL, 2, 0) == LP_ERR_ARG, "overlapping outputs accepted");
    CHECK(be->linear_batch(be, y, STRIDE, x, M, wp, NULL, 0, 0) == LP_ERR_ARG, "no weights accepted");
    return 0;
}

/* ---------------------------------------------------------------- row ops */

static void ref_layer_norm(double *out, const float *x, int64_t rows, int64_t dim, const float *w, const float *b,
                           double eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        double mean = 0, var = 0;
        for (int64_t c = 0; c < dim; c++) mean += xr[c];
        mean /= dim;
        for (int64_t c = 0; c < dim; c++) var += (xr[c] - mean) * (xr[c] - mean);
        var /= dim; /* biased */
        for (int64_t c = 0; c < dim; c++)
            out[r * dim + c] = (xr[c] - mean) / sqrt(var + eps) * (w ? w[c] : 1.0) + (b ? b[c] : 0.0);
    }
}

static int test_layer_norm(void) {
    const int64_t rows = 13, dim = 257;
    const size_t n = (size_t)(rows * dim);
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), w[257], b[257];
    uint16_t wh[257], bh[257];
    double *ref = malloc(n * sizeof *ref);
    REQUIRE(x && y && ref);
    lp_test_fill(x, n, 11, 2.0f);
    for (size_t i = 0; i < n; i++) x[i] += 0.5f; /* a non-zero mean */
    int64_t s[1] = {dim};
    /* w, b as f32 and as f16 (the converting path) */
    for (int dt = 0; dt < 2; dt++) {
        lp_dtype pdt = dt ? LP_F16 : LP_F32;
        float wraw[257], braw[257];
        random_as(pdt, (size_t)dim, 12, 1.5f, dt ? (void *)wh : (void *)wraw, w);
        random_as(pdt, (size_t)dim, 13, 1.0f, dt ? (void *)bh : (void *)braw, b);
        lp_tensor W = view("w", pdt, 1, s, dt ? (void *)wh : (void *)wraw);
        lp_tensor B = view("b", pdt, 1, s, dt ? (void *)bh : (void *)braw);
        static const char *const kinds[] = {"no affine", "w and b", "w only", "b only"};
        for (int k = 0; k < 4; k++) {
            if (dt && k == 0) continue;
            const lp_tensor *pw = (k == 1 || k == 2) ? &W : NULL, *pb = (k == 1 || k == 3) ? &B : NULL;
            ref_layer_norm(ref, x, rows, dim, pw ? w : NULL, pb ? b : NULL, 1e-6);
            char what[96];
            snprintf(what, sizeof what, "layer_norm %s (%s)", kinds[k], lp_dtype_name(pdt));
            lp_cpu_layer_norm(be, y, x, rows, dim, pw, pb, 1e-6f);
            if (compare(what, y, ref, n, 1e-6)) return 1;
            /* in place */
            memcpy(y, x, n * sizeof *y);
            lp_cpu_layer_norm(be, y, y, rows, dim, pw, pb, 1e-6f);
            if (compare("  ... in place", y, ref, n, 1e-6)) return 1;
        }
    }
    /* a large eps matters */
    ref_layer_norm(ref, x, rows, dim, NULL, NULL, 0.5);
    lp_cpu_layer_norm(be, y, x, rows, dim, NULL, NULL, 0.5f);
    if (compare("layer_norm eps 0.5", y, ref, n, 1e-6)) return 1;
    free(x), free(y), free(ref);
    return 0;
}

static int test_rms_norm(void) {
    const int64_t rows = 9, dim = 1536;
    const size_t n = (size_t)(rows * dim);
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *w = malloc((size_t)dim * sizeof *w);
    void *wraw = malloc((size_t)dim * 4);
    double *ref = malloc(n * sizeof *ref);
    REQUIRE(x && y && w && wraw && ref);
    lp_test_fill(x, n, 21, 3.0f);
    int64_t s[1] = {dim};
    static const lp_dtype dts[] = {LP_F32, LP_BF16, LP_F16};
    for (int d = 0; d < 3; d++) {
        random_as(dts[d], (size_t)dim, 22, 2.0f, wraw, w);
        lp_tensor W = view("w", dts[d], 1, s, wraw);
        for (int64_t r = 0; r < rows; r++) {
            double ss = 0;
            for (int64_t c = 0; c < dim; c++) ss += (double)x[r * dim + c] * x[r * dim + c];
            double rs = 1.0 / sqrt(ss / dim + 1e-6);
            for (int64_t c = 0; c < dim; c++) ref[r * dim + c] = x[r * dim + c] * rs * w[c];
        }
        memcpy(y, x, n * sizeof *y);
        lp_cpu_rms_norm(be, y, rows, dim, &W, 1e-6f);
        char what[64];
        snprintf(what, sizeof what, "rms_norm (w %s)", lp_dtype_name(dts[d]));
        if (compare(what, y, ref, n, 1e-6)) return 1;
    }
    free(x), free(y), free(w), free(wraw), free(ref);
    return 0;
}

static int test_modulate_gated_add(void) {
    const int64_t rows = 37, dim = 129;
    const size_t n = (size_t)(rows * dim);
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *v = malloc(n * sizeof *v);
    float shift[129], scale[129], gate[129];
    double *ref = malloc(n * sizeof *ref);
    REQUIRE(x && y && v && ref);
    lp_test_fill(x, n, 31, 2.0f);
    lp_test_fill(v, n, 32, 1.0f);
    lp_test_fill(shift, 129, 33, 1.0f);
    lp_test_fill(scale, 129, 34, 0.5f);
    lp_test_fill(gate, 129, 35, 1.5f);
    for (size_t i = 0; i < n; i++) ref[i] = x[i] * (1.0 + scale[i % 129]) + shift[i % 129];
    memcpy(y, x, n * sizeof *y);
    lp_cpu_modulate(be, y, rows, dim, shift, scale);
    if (compare("modulate", y, ref, n, 1e-6)) return 1;
    for (int g = 0; g < 2; g++) {
        for (size_t i = 0; i < n; i++) ref[i] = x[i] + (double)v[i] * (g ? gate[i % 129] : 1.0);
        memcpy(y, x, n * sizeof *y);
        lp_cpu_gated_add(be, y, v, rows, dim, g ? gate : NULL);
        if (compare(g ? "gated_add with gate" : "gated_add without gate", y, ref, n, 1e-6)) return 1;
    }
    free(x), free(y), free(v), free(ref);
    return 0;
}

static int test_activations(void) {
    const int64_t n = 100003;
    float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    double *ref = malloc((size_t)n * sizeof *ref);
    REQUIRE(x && y && ref);
    lp_test_fill(x, (size_t)n, 41, 6.0f);
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        ref[i] = 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    }
    memcpy(y, x, (size_t)n * sizeof *y);
    lp_cpu_gelu_tanh(be, y, n);
    if (compare("gelu_tanh", y, ref, (size_t)n, 1e-6)) return 1;
    for (int64_t i = 0; i < n; i++) ref[i] = x[i] / (1.0 + exp(-(double)x[i]));
    memcpy(y, x, (size_t)n * sizeof *y);
    be->silu(be, y, n);
    if (compare("silu", y, ref, (size_t)n, 1e-6)) return 1;
    free(x), free(y), free(ref);
    return 0;
}

/* ---------------------------------------------------------------- RoPE */

/* spec/MODEL.md §6: the d/2 consecutive pairs split into [d/2 − 2⌊d/6⌋, ⌊d/6⌋,
 * ⌊d/6⌋] parts rotated by (frame, row, col); pair j of a part of n pairs turns
 * by pos·10000^(−j/n), as x·e^{+iθ}. */
static void ref_rope(double *out, const float *x, int64_t rows, int heads, int d, const int32_t *pos) {
    int parts[3] = {d / 2 - 2 * (d / 6), d / 6, d / 6};
    for (int64_t r = 0; r < rows; r++)
        for (int h = 0; h < heads; h++) {
            const float *v = x + (r * heads + h) * d;
            double *o = out + (r * heads + h) * d;
            int p = 0;
            for (int part = 0; part < 3; part++)
                for (int j = 0; j < parts[part]; j++, p++) {
                    double th = pos[r * 3 + part] * pow(10000.0, -(double)j / parts[part]);
                    o[2 * p] = v[2 * p] * cos(th) - v[2 * p + 1] * sin(th);
                    o[2 * p + 1] = v[2 * p] * sin(th) + v[2 * p + 1] * cos(th);
                }
        }
}

static int test_rope3d(void) {
    static const int dims[] = {128, 96, 64, 48};
    const int64_t rows = 23;
    const int heads = 3;
    int32_t pos[23 * 3];
    float pr[23 * 3];
    lp_test_fill(pr, 23 * 3, 51, 1.0f);
    for (int i = 0; i < 23 * 3; i++) /* frames up to 4000, rows and columns up to 120 */
        pos[i] = (int32_t)((pr[i] + 1.0f) * (i % 3 ? 60.0f : 2000.0f));
    pos[0] = pos[1] = pos[2] = 0;
    for (int di = 0; di < 4; di++) {
        int d = dims[di];
        size_t n = (size_t)(rows * heads * d);
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
        double *ref = malloc(n * sizeof *ref);
        REQUIRE(x && y && ref);
        lp_test_fill(x, n, (uint32_t)(52 + d), 1.0f);
        ref_rope(ref, x, rows, heads, d, pos);
        memcpy(y, x, n * sizeof *y);
        lp_cpu_rope3d(be, y, rows, heads, d, pos);
        char what[64];
        snprintf(what, sizeof what, "rope3d head_dim %d", d);
        int r = compare(what, y, ref, n, 1e-6);
        /* position 0 is the identity */
        for (int i = 0; i < heads * d && !r; i++) r = y[i] != x[i];
        free(x), free(y), free(ref);
        if (r) return 1;
    }
    return 0;
}

/* ------------------------------------------------- the table's composite ops */

/* norm_modulate: LayerNorm (optionally affine) then, per segment, the
 * segment's shift and scale; rms_norm_rope: RMSNorm then RoPE;
 * residual_norm_modulate: the per-segment gated residual, then norm_modulate
 * of the result. Segments of unequal sizes, one empty. */
static int test_composite_ops(void) {
    const int64_t dim = 96, rows = 29;
    const int heads = 2, hd = 48;
    const lp_segments seg = {.n = 4, .start = {0, 11, 11, 20, 29}};
    const size_t n = (size_t)(rows * dim);
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *v = malloc(n * sizeof *v);
    float mod[4 * 3 * 96], w[96], b[96];
    double *ref = malloc(n * sizeof *ref);
    int32_t pos[29 * 3];
    REQUIRE(x && y && v && ref);
    lp_test_fill(x, n, 61, 2.0f);
    for (size_t i = 0; i < n; i++) x[i] += 0.25f;
    lp_test_fill(v, n, 62, 1.0f);
    lp_test_fill(mod, 4 * 3 * 96, 63, 0.7f);
    lp_test_fill(w, 96, 64, 1.5f);
    lp_test_fill(b, 96, 65, 1.0f);
    for (int i = 0; i < 29 * 3; i++) pos[i] = (int32_t)((i * 37) % (i % 3 ? 30 : 9));
    int64_t s1[1] = {dim};
    lp_tensor W = view("w", LP_F32, 1, s1, w), B = view("b", LP_F32, 1, s1, b);
    const int64_t stride = 3 * dim; /* per frame: shift, scale, gate */
    for (int f = 0; f < seg.n; f++) {
        ref_layer_norm(ref + seg.start[f] * dim, x + seg.start[f] * dim, seg.start[f + 1] - seg.start[f], dim, NULL,
                       NULL, 1e-6);
        for (int64_t r = seg.start[f]; r < seg.start[f + 1]; r++)
            for (int64_t c = 0; c < dim; c++)
                ref[r * dim + c] = ref[r * dim + c] * (1.0 + mod[f * stride + dim + c]) + mod[f * stride + c];
    }
    be->norm_modulate(be, y, x, dim, NULL, NULL, 1e-6f, &seg, mod, mod + dim, stride);
    if (compare("norm_modulate, 4 segments", y, ref, n, 1e-6)) return 1;
    ref_layer_norm(ref, x, rows, dim, w, b, 1e-6);
    be->norm_modulate(be, y, x, dim, &W, &B, 1e-6f, &seg, NULL, NULL, 0);
    if (compare("norm_modulate, affine, no modulation", y, ref, n, 1e-6)) return 1;
    /* rms_norm_rope: into another buffer with RoPE, in place without */
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0;
        for (int64_t c = 0; c < dim; c++) ss += (double)x[r * dim + c] * x[r * dim + c];
        double rs = 1.0 / sqrt(ss / dim + 1e-6);
        for (int64_t c = 0; c < dim; c++) y[r * dim + c] = (float)(x[r * dim + c] * rs * w[c]);
    }
    float *normed = malloc(n * sizeof *normed);
    REQUIRE(normed);
    memcpy(normed, y, n * sizeof *y);
    ref_rope(ref, normed, rows, heads, hd, pos);
    be->rms_norm_rope(be, y, 1, x, rows, heads, hd, &W, 1e-6f, pos);
    if (compare("rms_norm_rope with positions", y, ref, n, 1e-6)) return 1;
    for (size_t i = 0; i < n; i++) ref[i] = normed[i];
    memcpy(y, x, n * sizeof *y);
    be->rms_norm_rope(be, y, 0, y, rows, heads, hd, &W, 1e-6f, NULL);
    if (compare("rms_norm_rope in place, no positions", y, ref, n, 1e-6)) return 1;
    /* residual_norm_modulate: x (y here) += v·gate, then the affine norm of it */
    for (int g = 0; g < 2; g++) {
        for (int f = 0; f < seg.n; f++)
            for (int64_t r = seg.start[f]; r < seg.start[f + 1]; r++)
                for (int64_t c = 0; c < dim; c++)
                    ref[r * dim + c] = x[r * dim + c] + (double)v[r * dim + c] * (g ? mod[f * stride + 2 * dim + c] : 1.0);
        memcpy(y, x, n * sizeof *y);
        be->residual_norm_modulate(be, y, v, g ? mod + 2 * dim : NULL, stride, normed, dim, &W, &B, 1e-6f, &seg, NULL,
                                   NULL, 0);
        if (compare(g ? "residual_norm_modulate: x, per-segment gates" : "residual_norm_modulate: x, no gate", y, ref,
                    n, 1e-6))
            return 1;
        ref_layer_norm(ref, y, rows, dim, w, b, 1e-6);
        if (compare("  ... the norm of the updated x", normed, ref, n, 1e-6)) return 1;
    }
    free(x), free(y), free(v), free(ref), free(normed);
    return 0;
}

/* ---------------------------------------------------------------- attention */

/* Softmax(q·kᵀ·scale)·v per head over all ranges, in double with the maximum
 * subtracted. */
static void ref_attention(double *out, const float *q, int64_t Lq, int heads, int hd, const lp_kv_range *R, int nr,
                          double scale) {
    int64_t Lk = 0;
    for (int i = 0; i < nr; i++) Lk += R[i].n;
    double *s = malloc((size_t)Lk * sizeof *s);
    const int64_t ldq = (int64_t)heads * hd;
    for (int h = 0; h < heads; h++)
        for (int64_t i = 0; i < Lq; i++) {
            const float *qi = q + i * ldq + h * hd;
            double mx = -INFINITY, sum = 0;
            int64_t j = 0;
            for (int r = 0; r < nr; r++)
                for (int64_t t = 0; t < R[r].n; t++, j++) {
                    const float *kt = (const float *)R[r].k + t * R[r].ld + h * hd;
                    double d = 0;
                    for (int c = 0; c < hd; c++) d += (double)qi[c] * kt[c];
                    s[j] = d * scale;
                    if (s[j] > mx) mx = s[j];
                }
            for (j = 0; j < Lk; j++) sum += s[j] = exp(s[j] - mx);
            double *o = out + i * ldq + h * hd;
            for (int c = 0; c < hd; c++) o[c] = 0;
            j = 0;
            for (int r = 0; r < nr; r++)
                for (int64_t t = 0; t < R[r].n; t++, j++) {
                    const float *vt = (const float *)R[r].v + t * R[r].ld + h * hd;
                    for (int c = 0; c < hd; c++) o[c] += s[j] / sum * vt[c];
                }
        }
    free(s);
}

/* Keys split into the given ranges (row stride ld ≥ heads·hd); q and k
 * rounded to integers when integer_qk (exact logits). */
static int attention_case(const char *what, int64_t Lq, int heads, int hd, const int64_t *lens, int nr, int64_t ld,
                          float qk_scale, int integer_qk, float scale, double tol) {
    const int64_t ldq = (int64_t)heads * hd;
    float *q = malloc((size_t)(Lq * ldq) * sizeof *q), *out = malloc((size_t)(Lq * ldq) * sizeof *out);
    double *ref = malloc((size_t)(Lq * ldq) * sizeof *ref);
    float *kv[2][4] = {{0}};
    lp_kv_range R[4];
    REQUIRE(q && out && ref && nr <= 4);
    lp_test_fill(q, (size_t)(Lq * ldq), 61, qk_scale);
    if (integer_qk)
        for (int64_t i = 0; i < Lq * ldq; i++) q[i] = roundf(q[i]);
    for (int r = 0; r < nr; r++) {
        for (int m = 0; m < 2; m++) {
            size_t n = (size_t)(lens[r] * ld);
            kv[m][r] = malloc((n ? n : 1) * sizeof(float));
            REQUIRE(kv[m][r]);
            lp_test_fill(kv[m][r], n, (uint32_t)(62 + 2 * r + m), m ? 1.0f : qk_scale);
            if (integer_qk && !m)
                for (size_t i = 0; i < n; i++) kv[m][r][i] = roundf(kv[m][r][i]);
        }
        R[r] = (lp_kv_range){kv[0][r], kv[1][r], lens[r], ld, 0};
    }
    ref_attention(ref, q, Lq, heads, hd, R, nr, scale);
    lp_status s = be->attention(be, out, q, Lq, heads, hd, R, nr, scale);
    int fail = s != LP_OK;
    if (fail) fprintf(stderr, "  %s: %s\n", what, lp_last_error());
    else fail = compare(what, out, ref, (size_t)(Lq * ldq), tol);
    for (int r = 0; r < nr; r++) free(kv[0][r]), free(kv[1][r]);
    free(q), free(out), free(ref);
    return fail;
}

static int test_attention(void) {
    const int64_t one[1] = {50}, two[2] = {29, 41}, with_empty[3] = {17, 0, 23};
    if (attention_case("attention 1 range, 3 heads x 16", 37, 3, 16, one, 1, 48, 1.0f, 0, 0.25f, 1e-6)) return 1;
    if (attention_case("attention 2 ranges, ld 56 > 48", 37, 3, 16, two, 2, 56, 1.0f, 0, 0.25f, 1e-6)) return 1;
    if (attention_case("attention 3 ranges, one empty", 5, 2, 8, with_empty, 3, 19, 1.0f, 0, 0.5f, 1e-6)) return 1;
    if (attention_case("attention Lq 1, head_dim 128", 1, 2, 128, two, 2, 256, 1.0f, 0, 0.0883883f, 1e-6)) return 1;
    /* Lk = 70000 forces several query blocks; Lq = 300 is not a multiple */
    const int64_t big[2] = {30011, 39989};
    if (attention_case("attention Lq 300, Lk 70000 (blocks)", 300, 1, 8, big, 2, 8, 3.0f, 0, 0.35f, 1e-5)) return 1;
    /* logits up to ±10000 (scale 1, q and k integers in [-50, 50]): exp overflows
     * without the max subtraction; exact logits keep the comparison tight */
    const int64_t mid[2] = {100, 157};
    if (attention_case("attention large logits (scale 1, q,k +-50)", 40, 2, 4, mid, 2, 8, 50.0f, 1, 1.0f, 1e-6))
        return 1;
    /* errors and no-ops */
    float q[16] = {0}, out[16];
    lp_kv_range R = {q, q, 0, 16, 0};
    CHECK(be->attention(be, out, q, 1, 1, 16, &R, 1, 1.0f) == LP_ERR_ARG && strstr(lp_last_error(), "empty key set"),
          "%s", lp_last_error());
    REQUIRE(be->attention(be, out, q, 1, 1, 16, NULL, 0, 1.0f) == LP_ERR_ARG);
    R.n = 1;
    REQUIRE(be->attention(be, NULL, NULL, 0, 1, 16, &R, 1, 1.0f) == LP_OK);
    /* the CPU reads f32 ranges only (its KV cache is f32) */
    R.bf16 = 1;
    CHECK(be->attention(be, out, q, 1, 1, 16, &R, 1, 1.0f) == LP_ERR_UNSUPPORTED && strstr(lp_last_error(), "bf16"),
          "%s", lp_last_error());
    return 0;
}

/* ----------------------------------------------------------------- kv_store */

/* The CPU KV cache is f32: kv_store is exactly a copy, then rope3d for keys. */
static int test_kv_store(void) {
    REQUIRE(be->kv_bf16 == 0);
    const int64_t rows = 37;
    const int heads = 3, d = 48;
    const size_t n = (size_t)(rows * heads * d);
    int32_t pos[37 * 3];
    for (int i = 0; i < 37 * 3; i++) pos[i] = (int32_t)((i * 7919) % (i % 3 ? 60 : 21));
    float *x = malloc(n * sizeof *x), *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    REQUIRE(x && want && got);
    lp_test_fill(x, n, 81, 2.0f);
    memcpy(want, x, n * sizeof *want);
    lp_cpu_rope3d(be, want, rows, heads, d, pos);
    lp_status s = be->kv_store(be, got, NULL, x, NULL, NULL, rows, heads, d, pos);
    int keys_ok = s == LP_OK && !memcmp(got, want, n * sizeof *got);
    s = be->kv_store(be, got, NULL, x, NULL, NULL, rows, heads, d, NULL);
    int values_ok = s == LP_OK && !memcmp(got, x, n * sizeof *got);
    /* scattered: row i into row rows − 1 − i */
    int32_t rev[37];
    for (int i = 0; i < 37; i++) rev[i] = 36 - i;
    s = be->kv_store(be, got, rev, x, NULL, NULL, rows, heads, d, pos);
    int scattered_ok = s == LP_OK;
    for (int64_t r = 0; r < rows && scattered_ok; r++)
        scattered_ok = !memcmp(got + (rows - 1 - r) * heads * d, want + r * heads * d, (size_t)(heads * d) * sizeof *got);
    printf("    %-44s %s\n", "kv_store keys == copy + rope3d (bitwise)", keys_ok ? "ok" : "FAIL");
    printf("    %-44s %s\n", "kv_store values == copy (bitwise)", values_ok ? "ok" : "FAIL");
    printf("    %-44s %s\n", "kv_store keys scattered by dst_idx (bitwise)", scattered_ok ? "ok" : "FAIL");
    /* gathered: even rows from saved row i/2 (src_idx −i/2 − 1), odd rows from x */
    int32_t from[37];
    for (int i = 0; i < 37; i++) from[i] = i % 2 ? i : -(i / 2) - 1;
    float *saved = malloc(n * sizeof *saved);
    REQUIRE(saved);
    lp_test_fill(saved, n, 82, 2.0f);
    s = be->kv_store(be, got, NULL, x, saved, from, rows, heads, d, pos);
    int gathered_ok = s == LP_OK;
    for (int64_t r = 0; r < rows && gathered_ok; r++) {
        float row[3 * 48];
        memcpy(row, r % 2 ? x + r * heads * d : saved + (r / 2) * heads * d, sizeof row);
        lp_cpu_rope3d(be, row, 1, heads, d, pos + 3 * r);
        gathered_ok = !memcmp(got + r * heads * d, row, sizeof row);
    }
    printf("    %-44s %s\n", "kv_store keys gathered from saved rows (bitwise)", gathered_ok ? "ok" : "FAIL");
    CHECK(be->kv_store(be, got, NULL, x, NULL, from, rows, heads, d, pos) == LP_ERR_ARG, "%s",
          "a saved row without saved rows is refused");
    free(saved);
    lp_status bad = be->kv_store(be, got, NULL, x, NULL, NULL, -1, heads, d, NULL);
    free(x), free(want), free(got);
    CHECK(keys_ok && values_ok && scattered_ok && gathered_ok, "%s", "kv_store differs from copy (+ rope3d)");
    CHECK(bad == LP_ERR_ARG, "kv_store with -1 rows: %s", lp_status_name(bad));
    return 0;
}

/* ----------------------------------------------- the editing loop's ops */

/* The cases below compare bit for bit ("ok" means identical bytes).
 * flow_x0 and flow_renoise against the scheduler's lp_flow_x0 and
 * lp_flow_add_noise (what the editing loop ran on the host so far), out of
 * place (into a NaN-poisoned buffer with a sentinel after it) and in place. */
static int flow_case(int64_t n, float sigma, uint32_t seed) {
    const size_t sz = (size_t)n;
    float *a = malloc(sz * sizeof *a), *b = malloc(sz * sizeof *b), *want = malloc(sz * sizeof *want);
    float *got = malloc((sz + 1) * sizeof *got);
    REQUIRE(a && b && want && got);
    lp_test_fill(a, sz, seed, 2.0f);
    lp_test_fill(b, sz, seed + 1, 1.5f);
    for (size_t i = 0; i < sz; i++) a[i] += 0.25f, b[i] -= 0.125f; /* no zeros, a mean */
    int ok[4];
    char what[4][96];
    /* x0 = xt − σ·v: a = xt, b = v */
    lp_flow_x0(want, a, b, sigma, n);
    memset(got, 0xff, sz * sizeof *got); /* NaN: an unwritten element differs */
    got[n] = 12345.0f;
    be->flow_x0(be, got, a, b, sigma, n);
    ok[0] = !memcmp(got, want, sz * sizeof *got) && got[n] == 12345.0f && memcmp(want, a, sz * sizeof *a);
    memcpy(got, a, sz * sizeof *got);
    be->flow_x0(be, got, got, b, sigma, n);
    ok[1] = !memcmp(got, want, sz * sizeof *got);
    /* x = (1 − σ)·x0 + σ·ε: a = x0, b = ε */
    lp_flow_add_noise(want, a, b, sigma, n);
    memset(got, 0xff, sz * sizeof *got);
    got[n] = 12345.0f;
    be->flow_renoise(be, got, a, b, sigma, n);
    ok[2] = !memcmp(got, want, sz * sizeof *got) && got[n] == 12345.0f && memcmp(want, a, sz * sizeof *a);
    memcpy(got, a, sz * sizeof *got);
    be->flow_renoise(be, got, got, b, sigma, n);
    ok[3] = !memcmp(got, want, sz * sizeof *got);
    snprintf(what[0], sizeof what[0], "flow_x0 n=%lld s=%g = lp_flow_x0", (long long)n, sigma);
    snprintf(what[1], sizeof what[1], "  ... in place (x0 = xt)");
    snprintf(what[2], sizeof what[2], "flow_renoise n=%lld = lp_flow_add_noise", (long long)n);
    snprintf(what[3], sizeof what[3], "  ... in place (x = x0)");
    for (int k = 0; k < 4; k++) printf("    %-44s %s\n", what[k], ok[k] ? "ok" : "FAIL");
    free(a), free(b), free(want), free(got);
    CHECK(ok[0] && ok[1] && ok[2] && ok[3], "flow ops differ from the scheduler's (n %lld, sigma %g)", (long long)n,
          sigma);
    return 0;
}

/* copy_patches on one frame [C, H, W] against a naive loop over the tokens:
 * the 2×2 patch of every token whose keep flag is `kept` is src's, the rest
 * dst's. */
static int copy_patches_case(const char *mask, const uint8_t *keep, int kept, int C, int H, int W, uint32_t seed) {
    const size_t n = (size_t)C * H * W;
    float *src = malloc(n * sizeof *src), *dst = malloc(n * sizeof *dst), *want = malloc(n * sizeof *want);
    REQUIRE(src && dst && want);
    lp_test_fill(src, n, seed, 1.0f);
    lp_test_fill(dst, n, seed + 1, 1.0f);
    for (size_t i = 0; i < n; i++) src[i] += 2.0f, dst[i] -= 2.0f; /* disjoint ranges: no equal pixels */
    memcpy(want, dst, n * sizeof *want);
    for (int r = 0; r < H / 2; r++)
        for (int c = 0; c < W / 2; c++) {
            if ((keep[r * (W / 2) + c] != 0) != kept) continue;
            for (int ch = 0; ch < C; ch++)
                for (int q = 0; q < 2; q++)
                    for (int rr = 0; rr < 2; rr++) {
                        size_t o = ((size_t)ch * H + (size_t)(2 * r + q)) * W + (size_t)(2 * c + rr);
                        want[o] = src[o];
                    }
        }
    lp_status s = be->copy_patches(be, dst, src, keep, kept, C, H, W);
    int ok = s == LP_OK && !memcmp(dst, want, n * sizeof *dst);
    char what[96];
    snprintf(what, sizeof what, "copy_patches kept=%d C%d %dx%d %s", kept, C, H, W, mask);
    printf("    %-44s %s\n", what, ok ? "ok" : "FAIL");
    free(src), free(dst), free(want);
    CHECK(ok, "%s: %s", what, s == LP_OK ? "pixels differ" : lp_last_error());
    return 0;
}

/* clear of bytes [off, off + len) of a buffer of non-zero bytes: the range
 * zero, the bytes around it (the guard right after it) untouched. */
static int clear_case(size_t total, size_t off, size_t len) {
    unsigned char *buf = malloc(total), *orig = malloc(total);
    REQUIRE(buf && orig && off + len < total);
    uint32_t s = (uint32_t)(total * 31 + off);
    for (size_t i = 0; i < total; i++) {
        s = s * 1664525u + 1013904223u;
        orig[i] = (unsigned char)(1 + (s >> 24) % 255); /* 1..255 */
    }
    memcpy(buf, orig, total);
    lp_status st = be->clear(be, buf + off, len);
    size_t wrong = 0;
    for (size_t i = 0; i < total; i++) wrong += buf[i] != (i >= off && i < off + len ? 0 : orig[i]);
    int ok = st == LP_OK && wrong == 0 && buf[off + len] == orig[off + len];
    char what[96];
    snprintf(what, sizeof what, "clear bytes [%zu, %zu) of %zu", off, off + len, total);
    printf("    %-44s %s\n", what, ok ? "ok" : "FAIL");
    free(buf), free(orig);
    CHECK(ok, "%s: status %s, %zu bytes wrong", what, lp_status_name(st), wrong);
    return 0;
}

static int test_edit_ops(void) {
    if (flow_case(4096, 0.7373f, 91) || flow_case(3001, 0.0625f, 92) || flow_case(1, 0.999f, 93)) return 1;
    /* copy_patches: C 5, 6×8 (3×4 tokens), the pruned patches (restoration) and the kept ones */
    enum { C = 5, H = 6, W = 8, T = (H / 2) * (W / 2) };
    uint8_t keep[T];
    uint32_t s = 94;
    for (int t = 0; t < T; t++) {
        s = s * 1664525u + 1013904223u;
        keep[t] = (uint8_t)((s >> 20) & 1);
    }
    keep[0] = 0, keep[T - 1] = 1; /* both kinds, whatever the draw */
    for (int kept = 0; kept < 2; kept++) {
        uint8_t k[T];
        memcpy(k, keep, sizeof k);
        if (copy_patches_case("random mask", k, kept, C, H, W, 95)) return 1;
        memset(k, 1, sizeof k);
        if (copy_patches_case("all kept", k, kept, C, H, W, 96)) return 1;
        memset(k, 0, sizeof k);
        if (copy_patches_case("none kept", k, kept, C, H, W, 97)) return 1;
    }
    /* clear */
    if (clear_case(4 * 4099 + 8, 4 * 1000, 4 * 2001) || clear_case(5003, 7, 1999) || clear_case(64, 10, 0)) return 1;
    return 0;
}

int main(void) {
    if (lp_backend_cpu_create(2, &be) != LP_OK) {
        fprintf(stderr, "cannot create the CPU backend: %s\n", lp_last_error());
        return 1;
    }
    lp_test_run("linear", test_linear);
    lp_test_run("linear_errors", test_linear_errors);
    lp_test_run("linear_batch", test_linear_batch);
    lp_test_run("layer_norm", test_layer_norm);
    lp_test_run("rms_norm", test_rms_norm);
    lp_test_run("modulate_gated_add", test_modulate_gated_add);
    lp_test_run("activations", test_activations);
    lp_test_run("rope3d", test_rope3d);
    lp_test_run("composite_ops", test_composite_ops);
    lp_test_run("attention", test_attention);
    lp_test_run("kv_store", test_kv_store);
    lp_test_run("edit_ops", test_edit_ops);
    lp_backend_destroy(be);
    return lp_test_finish();
}
