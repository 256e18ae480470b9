/* CPU-vs-CUDA parity of the ops of the backend table (backend.h), except
 * attention (tests/test_cuda_attention.c): each case runs the CPU backend
 * (lp_backend_cpu_create(2, ...), the reference) and the CUDA backend on the
 * same random inputs, with the CUDA outputs poisoned with NaN bytes
 * beforehand so that an element left unwritten fails, and prints
 * "name rel_l2=... ok|FAIL". Activation-type buffers are bf16 on CUDA
 * (act_bf16) and f32 on the CPU: bf16 inputs are uploaded rounded (the CPU
 * reference reads the same rounded values), bf16 outputs are downloaded and
 * compared as f32 with the CPU's f32 result. Tolerances (relative L2 error),
 * with the magnitude expected from the arithmetic alone:
 *   2e-2  linear: bf16 tensor cores (weights and an f32 x rounded to bf16,
 *         about 1e-3 each, fp32 accumulation; a bf16 y adds about 1e-3),
 *         expected 1e-3 .. 4e-3;
 *   4e-3  f32 math rounded once to bf16 (norm_modulate, rms_norm_rope into
 *         bf16): a relative rounding error of at most 2^-9, expected ≈ 1e-3;
 *   1e-5  fp32 ops whose statistics or transcendentals differ in
 *         implementation from the CPU (rms_norm_rope into f32, SiLU),
 *         expected ≈ 1e-7;
 *   1e-6  fp32 ops in the CPU's operation order (residual_norm_modulate's x, add),
 *         expected 0;
 *   0     pure data movement, and the flow-matching steps (flow_x0,
 *         flow_renoise: explicitly rounded products and sums, the CPU's
 *         operation order);
 *   1e-4  the bf16 KV-cache writes (kv_store, against the CPU's f32 rows
 *         rounded to bf16 on the host), expected ≈ 1e-6.
 * Every case skips when the CUDA backend is unavailable (built without CUDA,
 * or no usable GPU): the binary then exits 77. Weight views point at host
 * buffers kept alive until both backends are destroyed, one buffer per
 * weight, because the CUDA backend caches device copies by data pointer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/backend/backend.h"
#include "../src/base/clock.h"
#include "../src/base/half.h"
#include "test_util.h"

static lp_backend *cpu, *gpu;
static int no_gpu; /* what each case returns without the CUDA backend (set by main) */

/* ------------------------------------------------------------------ helpers */

static uint32_t rng(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* n random floats in [offset − scale, offset + scale) (malloc'd). */
static float *random_floats(size_t n, uint32_t seed, float scale, float offset) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    if (!x) return NULL;
    lp_test_fill(x, n, seed, scale);
    for (size_t i = 0; i < n; i++) x[i] += offset;
    return x;
}

/* A weight view [shape] stored as dt in a kept buffer, random values in
 * [offset − scale, offset + scale); data NULL when out of memory. */
static lp_tensor weight(const char *name, lp_dtype dt, int ndim, const int64_t *shape, uint32_t seed, float scale,
                        float offset) {
    lp_tensor t = {.name = name, .dtype = dt, .ndim = ndim};
    memcpy(t.shape, shape, (size_t)ndim * sizeof *shape);
    size_t n = (size_t)lp_tensor_numel(&t);
    t.nbytes = n * lp_dtype_size(dt);
    float *v = random_floats(n, seed, scale, offset);
    void *raw = lp_test_keep(t.nbytes);
    if (!v || !raw) {
        free(v);
        return t;
    }
    for (size_t i = 0; i < n; i++) {
        if (dt == LP_F16) ((uint16_t *)raw)[i] = lp_f32_to_f16(v[i]);
        else if (dt == LP_BF16) ((uint16_t *)raw)[i] = lp_f32_to_bf16(v[i]);
        else ((float *)raw)[i] = v[i];
    }
    free(v);
    t.data = raw;
    return t;
}

/* Rounds the n floats of h to bf16 in place (so that a CPU reference sees
 * the stored values) and returns a buffer of be holding them as bf16; NULL
 * on failure (message printed). */
static void *dev_bf16(const lp_backend *be, float *h, size_t n) {
    uint16_t *b = malloc((n ? n : 1) * sizeof *b);
    void *d = b ? be->alloc(be, (n ? n : 1) * sizeof *b) : NULL;
    if (!d) {
        printf("    device bf16 buffer of %zu elements: %s\n", n, lp_last_error());
        if (d) be->release(be, d);
        free(b);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        b[i] = lp_f32_to_bf16(h[i]);
        h[i] = lp_bf16_to_f32(b[i]);
    }
    lp_status s = be->upload(be, d, b, n * sizeof *b);
    free(b);
    if (s != LP_OK) {
        printf("    upload of %zu bf16: %s\n", n, lp_last_error());
        be->release(be, d);
        return NULL;
    }
    return d;
}

/* lp_test_dev_compare for a buffer of n bf16 elements. */
static int dev_compare_bf16(const lp_backend *be, const char *name, const void *d, const float *want, size_t n,
                            double tol) {
    uint16_t *b = malloc((n ? n : 1) * sizeof *b);
    float *got = malloc((n ? n : 1) * sizeof *got);
    lp_status s = b && got && d ? be->download(be, b, d, n * sizeof *b) : LP_ERR_NOMEM;
    size_t bad = 0;
    double err = INFINITY;
    if (s == LP_OK) {
        for (size_t i = 0; i < n; i++) {
            got[i] = lp_bf16_to_f32(b[i]);
            bad += !isfinite(got[i]);
        }
        err = lp_rel_l2(got, want, n);
    }
    int ok = s == LP_OK && bad == 0 && err <= tol;
    printf("    %-*s rel_l2=%.3e (tol %.0e) %s", LP_TEST_NAME_WIDTH, name, err, tol, ok ? "ok" : "FAIL");
    if (s != LP_OK) printf(" [%s: %s]", lp_status_name(s), lp_last_error());
    if (bad) printf(" [%zu non-finite]", bad);
    printf("\n");
    free(b);
    free(got);
    return !ok;
}

/* ---------------------------------------------------------------- memory */

static int test_memory(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    /* upload/download round trip of an odd number of bytes */
    size_t nb = 1000003;
    unsigned char *src = malloc(nb), *back = malloc(nb);
    CHECK(src && back, "out of memory");
    uint32_t s = 7;
    for (size_t i = 0; i < nb; i++) src[i] = (unsigned char)rng(&s);
    void *d = gpu->alloc(gpu, nb);
    CHECK(d, "alloc: %s", lp_last_error());
    lp_status st = gpu->download(gpu, back, d, nb);
    size_t nonzero = 0;
    for (size_t i = 0; i < nb; i++) nonzero += back[i] != 0;
    printf("    %-*s %s\n", LP_TEST_NAME_WIDTH, "alloc is zero-filled", st == LP_OK && !nonzero ? "ok" : "FAIL");
    fails += st != LP_OK || nonzero;
    st = gpu->upload(gpu, d, src, nb);
    if (st == LP_OK) st = gpu->download(gpu, back, d, nb);
    int same = st == LP_OK && !memcmp(src, back, nb);
    printf("    %-*s %s\n", LP_TEST_NAME_WIDTH, "upload/download round trip (1000003 bytes)", same ? "ok" : "FAIL");
    fails += !same;
    gpu->release(gpu, d);
    free(src);
    free(back);

    /* copy with memmove semantics: overlapping ranges in both directions,
     * short and long distances, and a disjoint copy */
    const size_t N = 100000;
    struct {
        const char *name;
        size_t dst, src, n;
    } cases[] = {
        {"copy overlapping, dst > src (distance 1000)", 1000, 0, 60000},
        {"copy overlapping, dst < src (distance 777)", 0, 777, 70000},
        {"copy overlapping, dst > src (distance 1)", 501, 500, 64},
        {"copy overlapping, dst < src (distance 3)", 200, 203, 97},
        {"copy disjoint", 60000, 3, 39999},
        {"copy onto itself", 10, 10, 5000},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        float *h = random_floats(N, 11 + (uint32_t)c, 1.0f, 0.0f);
        CHECK(h, "out of memory");
        float *dd = lp_test_dev_copy(gpu, h, N);
        if (!dd) {
            free(h);
            return 1;
        }
        st = gpu->copy(gpu, dd + cases[c].dst, dd + cases[c].src, cases[c].n * sizeof(float));
        memmove(h + cases[c].dst, h + cases[c].src, cases[c].n * sizeof(float));
        fails += lp_test_status_ok(cases[c].name, st) ? lp_test_dev_compare(gpu, cases[c].name, dd, h, N, 0.0) : 1;
        lp_test_dev_free(gpu, dd);
        free(h);
    }
    return fails ? 1 : 0;
}

/* A poisoned output buffer of n elements of bf16 (bf16 = 1, NaN pairs) or
 * f32 in the GPU backend; NULL on failure (message printed). */
static void *dev_out(int bf16, size_t n) { return lp_test_dev_poison(gpu, bf16 ? (n + 1) / 2 : n); }

/* Compares n elements of d (bf16 or f32) with the f32 reference want. */
static int compare_out(const char *name, const void *d, int bf16, const float *want, size_t n, double tol) {
    return bf16 ? dev_compare_bf16(gpu, name, d, want, n, tol) : lp_test_dev_compare(gpu, name, d, want, n, tol);
}

/* Rows grouped into n segments of the given sizes, from row 0. */
static lp_segments segments(int n, const int64_t *sizes) {
    lp_segments s;
    memset(&s, 0, sizeof s);
    s.n = n;
    for (int f = 0; f < n; f++) s.start[f + 1] = s.start[f] + sizes[f];
    return s;
}

/* ---------------------------------------------------------------- linear */

static int linear_case(int64_t M, int64_t K, int64_t N, lp_dtype dt, int bias, unsigned flags, uint32_t seed) {
    char name[128];
    snprintf(name, sizeof name, "linear %s M=%lld K=%lld N=%lld%s%s%s%s", lp_dtype_name(dt), (long long)M,
             (long long)K, (long long)N, bias ? " +bias" : "", flags & LP_LINEAR_X_ACT ? " x:act" : "",
             flags & LP_LINEAR_Y_ACT ? " y:act" : "", flags & LP_LINEAR_GELU ? " gelu" : "");
    const int xa = (flags & LP_LINEAR_X_ACT) != 0, ya = (flags & LP_LINEAR_Y_ACT) != 0;
    lp_tensor W = weight("W", dt, 2, (int64_t[]){N, K}, seed, 1.5f / sqrtf((float)K), 0.0f);
    lp_tensor b = weight("b", dt, 1, (int64_t[]){N}, seed + 1, 0.5f, 0.0f);
    size_t nx = (size_t)(M * K), ny = (size_t)(M * N);
    float *x = random_floats(nx, seed + 2, 1.0f, 0.0f), *y = malloc((ny ? ny : 1) * sizeof *y);
    CHECK(W.data && b.data && x && y, "out of memory");
    /* the device x first: a bf16 x rounds the host values the CPU then reads */
    void *dx = xa ? dev_bf16(gpu, x, nx) : (void *)lp_test_dev_copy(gpu, x, nx);
    void *dy = dev_out(ya, ny);
    lp_status s = cpu->linear(cpu, y, x, M, &W, bias ? &b : NULL, flags);
    CHECK(s == LP_OK, "cpu linear: %s", lp_last_error());
    int fail = 1;
    if (dx && dy && lp_test_status_ok(name, gpu->linear(gpu, dy, dx, M, &W, bias ? &b : NULL, flags)))
        fail = compare_out(name, dy, ya, y, ny, 2e-2);
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dy);
    free(x);
    free(y);
    return fail;
}

/* Which GELU the fused epilogue computes: y = GELU(x·Iᵀ + b) with an
 * identity weight and x, b on a grid exact in bf16 (x = −4 + i/32 + b, b 0 or
 * 1/2), so that the GEMM is exact and y is GELU itself, into f32. Prints the
 * largest difference from the tanh approximation (the contract, the CPU's)
 * and from the exact erf GELU (they differ by up to 4.7e-4, near |x| = 2.7);
 * fails beyond 2e-3 from tanh (a tenth of a bf16 ulp at 2.7 is 1.6e-3). */
static int gelu_form_case(int bias, uint32_t seed) {
    const int64_t K = 256;
    char name[96];
    snprintf(name, sizeof name, "linear gelu%s is the tanh approximation", bias ? "+bias" : "");
    lp_tensor W = weight("I", LP_BF16, 2, (int64_t[]){K, K}, seed, 0.0f, 0.0f);
    lp_tensor b = weight("b", LP_F32, 1, (int64_t[]){K}, seed + 1, 0.0f, 0.5f);
    float *x = malloc((size_t)K * sizeof *x), *y = malloc((size_t)K * sizeof *y);
    CHECK(W.data && b.data && x && y, "out of memory");
    for (int64_t i = 0; i < K; i++) {
        ((uint16_t *)W.data)[i * K + i] = lp_f32_to_bf16(1.0f);
        x[i] = -4.0f + (float)i / 32.0f;
    }
    float *dx = lp_test_dev_copy(gpu, x, (size_t)K), *dy = lp_test_dev_poison(gpu, (size_t)K);
    lp_status s = dx && dy ? gpu->linear(gpu, dy, dx, 1, &W, bias ? &b : NULL, LP_LINEAR_GELU) : LP_ERR_NOMEM;
    if (s == LP_OK) s = gpu->download(gpu, y, dy, (size_t)K * sizeof *y);
    double d_tanh = 0, d_erf = 0;
    for (int64_t i = 0; s == LP_OK && i < K; i++) {
        double v = (double)x[i] + (bias ? 0.5 : 0.0);
        double gt = 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
        double ge = 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
        d_tanh = fmax(d_tanh, fabs((double)y[i] - gt));
        d_erf = fmax(d_erf, fabs((double)y[i] - ge));
    }
    int ok = s == LP_OK && d_tanh <= 2e-3;
    printf("    %-*s max|y - gelu_tanh|=%.2e max|y - gelu_erf|=%.2e %s", LP_TEST_NAME_WIDTH, name, d_tanh, d_erf,
           ok ? "ok" : "FAIL");
    if (s != LP_OK) printf(" [%s: %s]", lp_status_name(s), lp_last_error());
    printf("\n");
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dy);
    free(x);
    free(y);
    return !ok;
}

static int test_linear(void) {
    if (!gpu) return no_gpu;
    const unsigned XA = LP_LINEAR_X_ACT, YA = LP_LINEAR_Y_ACT, GELU = LP_LINEAR_GELU;
    int fails = 0;
    /* f32 x and y (embeddings, patch embedding) */
    fails += linear_case(1, 1536, 8960, LP_BF16, 1, 0, 100);
    fails += linear_case(37, 128, 1536, LP_F16, 0, 0, 110);
    fails += linear_case(37, 8960, 1536, LP_F32, 1, 0, 120);
    fails += linear_case(4680, 64, 1536, LP_BF16, 1, 0, 130);
    fails += linear_case(37, 100, 77, LP_F32, 1, 0, 140);
    fails += linear_case(5, 33, 17, LP_F16, 0, 0, 150);
    /* bf16 x, f32 y (q, k, v, o, ffn.2, head) */
    fails += linear_case(4680, 1536, 1536, LP_BF16, 1, XA, 160);
    fails += linear_case(37, 8960, 1536, LP_BF16, 1, XA, 170);
    fails += linear_case(4680, 1536, 64, LP_F32, 1, XA, 180);
    fails += linear_case(3, 96, 96, LP_F32, 1, XA, 190);
    fails += linear_case(1, 192, 64, LP_BF16, 1, XA, 200);
    fails += linear_case(13, 128, 128, LP_BF16, 0, XA, 210);
    /* bf16 x, GELU into bf16 (ffn.0), with and without bias */
    fails += linear_case(4680, 1536, 8960, LP_BF16, 1, XA | YA | GELU, 220);
    fails += linear_case(37, 192, 768, LP_BF16, 1, XA | YA | GELU, 230);
    fails += linear_case(3, 96, 384, LP_F32, 1, XA | YA | GELU, 240);
    fails += linear_case(1, 128, 512, LP_BF16, 1, XA | YA | GELU, 250);
    fails += linear_case(5, 64, 256, LP_BF16, 0, XA | YA | GELU, 260);
    /* f32 x, GELU into f32 (text embedding), with and without bias */
    fails += linear_case(7, 4096, 1536, LP_BF16, 1, GELU, 270);
    fails += linear_case(3, 128, 96, LP_F32, 1, GELU, 280);
    fails += linear_case(5, 64, 40, LP_F32, 0, GELU, 290);
    /* bf16 y without GELU, from either x */
    fails += linear_case(13, 96, 200, LP_BF16, 1, XA | YA, 300);
    fails += linear_case(3, 64, 128, LP_F32, 1, YA, 310);
    /* row counts of one 512-row bucket share a plan, resized (the first
     * chooses the algorithm), across the bucket's ends */
    fails += linear_case(1076, 1536, 1536, LP_BF16, 1, XA | YA, 340);
    fails += linear_case(1500, 1536, 1536, LP_BF16, 1, XA | YA, 350);
    fails += linear_case(1025, 1536, 1536, LP_BF16, 1, XA | YA, 360);
    fails += linear_case(1536, 1536, 8960, LP_BF16, 1, XA | YA | GELU, 370);
    fails += linear_case(1100, 1536, 8960, LP_BF16, 1, XA | YA | GELU, 380);
    fails += linear_case(1537, 1536, 8960, LP_BF16, 1, XA | YA | GELU, 390);
    fails += gelu_form_case(0, 320);
    fails += gelu_form_case(1, 330);
    return fails ? 1 : 0;
}

/* ------------------------------------------------------------ linear_batch */

/* count products of one x (M rows, K wide) with weights [N, K] (biases when
 * bias), into y's gap floats apart beyond M·N, on both backends; the CUDA
 * batch against the CPU's single products. */
static int linear_batch_case(int64_t M, int64_t K, int64_t N, int count, int bias, unsigned flags, int64_t gap,
                             uint32_t seed) {
    char name[128];
    snprintf(name, sizeof name, "linear_batch x%d M=%lld K=%lld N=%lld%s%s%s", count, (long long)M, (long long)K,
             (long long)N, bias ? " +bias" : "", flags & LP_LINEAR_Y_ACT ? " y:act" : "",
             flags & LP_LINEAR_GELU ? " gelu" : "");
    const int ya = (flags & LP_LINEAR_Y_ACT) != 0;
    lp_tensor W[LP_LINEAR_BATCH_MAX], B[LP_LINEAR_BATCH_MAX];
    const lp_tensor *wp[LP_LINEAR_BATCH_MAX], *bp[LP_LINEAR_BATCH_MAX];
    for (int i = 0; i < count; i++) {
        W[i] = weight("W", LP_BF16, 2, (int64_t[]){N, K}, seed + 10 * (uint32_t)i, 1.5f / sqrtf((float)K), 0.0f);
        B[i] = weight("b", LP_BF16, 1, (int64_t[]){N}, seed + 10 * (uint32_t)i + 1, 0.5f, 0.0f);
        CHECK(W[i].data && B[i].data, "out of memory");
        wp[i] = &W[i];
        bp[i] = &B[i];
    }
    int64_t stride = M * N + gap;
    size_t nx = (size_t)(M * K), ny = (size_t)(stride * count);
    float *x = random_floats(nx, seed + 2, 1.0f, 0.0f), *y = malloc(ny * sizeof *y);
    CHECK(x && y, "out of memory");
    void *dx = dev_bf16(gpu, x, nx), *dy = dev_out(ya, ny);
    CHECK(cpu->linear_batch(cpu, y, stride, x, M, wp, bias ? bp : NULL, count, flags) == LP_OK, "cpu: %s",
          lp_last_error());
    int fail = 1;
    if (dx && dy && lp_test_status_ok(name, gpu->linear_batch(gpu, dy, stride, dx, M, wp, bias ? bp : NULL, count,
                                                              flags))) {
        fail = 0;
        for (int i = 0; i < count; i++) {
            char part[160];
            snprintf(part, sizeof part, "%s [%d]", name, i);
            size_t off = (size_t)(i * stride);
            const void *d = ya ? (const void *)((const uint16_t *)dy + off) : (const void *)((const float *)dy + off);
            fail |= compare_out(part, d, ya, y + off, (size_t)(M * N), 2e-2);
        }
    }
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dy);
    free(x);
    free(y);
    return fail;
}

static int test_linear_batch(void) {
    if (!gpu) return no_gpu;
    const unsigned XA = LP_LINEAR_X_ACT;
    int fails = 0;
    /* Q, K and V of a pruned chunk: one batched product, then other row
     * counts of its 512-row bucket (the plan resized) and another bucket */
    fails += linear_batch_case(1076, 1536, 1536, 3, 1, XA, 0, 500);
    fails += linear_batch_case(1500, 1536, 1536, 3, 1, XA, 0, 510);
    fails += linear_batch_case(1100, 1536, 1536, 3, 1, XA, 1536, 520); /* outputs apart by more than M·N */
    fails += linear_batch_case(37, 128, 96, 2, 0, XA, 0, 530);         /* no biases, two weights */
    fails += linear_batch_case(5, 64, 40, 4, 1, XA, 8, 540);           /* four, small */
    /* forms the batch does not take run as single products */
    fails += linear_batch_case(37, 192, 768, 3, 1, XA | LP_LINEAR_Y_ACT | LP_LINEAR_GELU, 0, 550);
    fails += linear_batch_case(13, 96, 64, 1, 1, XA, 0, 560);
    /* argument errors, before anything is issued */
    lp_tensor a = weight("a", LP_BF16, 2, (int64_t[]){64, 32}, 570, 0.1f, 0.0f);
    lp_tensor c = weight("c", LP_BF16, 2, (int64_t[]){48, 32}, 571, 0.1f, 0.0f);
    const lp_tensor *mixed[2] = {&a, &c}, *same[2] = {&a, &a};
    void *dx = lp_test_dev_poison(gpu, 4096), *dy = lp_test_dev_poison(gpu, 4096);
    CHECK(a.data && c.data && dx && dy, "out of memory");
    lp_status s1 = gpu->linear_batch(gpu, dy, 640, dx, 10, mixed, NULL, 2, XA);
    lp_status s2 = gpu->linear_batch(gpu, dy, 639, dx, 10, same, NULL, 2, XA);
    lp_status s3 = gpu->linear_batch(gpu, dy, 640, dx, 10, same, NULL, 5, XA);
    lp_status s4 = gpu->linear_batch(gpu, dy, 640, dx, 10, same, NULL, 2, XA);
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dy);
    printf("    linear_batch mixed shapes -> %s, overlapping outputs -> %s, 5 weights -> %s, then %s\n",
           lp_status_name(s1), lp_status_name(s2), lp_status_name(s3), lp_status_name(s4));
    CHECK(s1 == LP_ERR_SHAPE && s2 == LP_ERR_ARG && s3 == LP_ERR_ARG && s4 == LP_OK, "unexpected statuses");
    return fails ? 1 : 0;
}

/* ---------------------------------------------------- norm_modulate */

/* LayerNorm of the rows of nseg segments (sizes) of width dim, values around
 * offset, with an affine w/b stored as wdt (wdt < 0: none), modulated per
 * segment when modulate (shift and scale rows with the model's stride of
 * 6·dim, shift at column 0 and scale at column dim of a row). */
static int norm_modulate_case(int nseg, const int64_t *sizes, int64_t dim, int wdt, int modulate, float offset,
                              uint32_t seed) {
    char name[128];
    lp_segments seg = segments(nseg, sizes);
    int64_t rows = seg.start[nseg], stride = 6 * dim;
    int len = snprintf(name, sizeof name, "norm_modulate %lldx%lld segments", (long long)rows, (long long)dim);
    for (int f = 0; f < nseg; f++) len += snprintf(name + len, sizeof name - (size_t)len, "%s%lld", f ? "+" : " ",
                                                   (long long)sizes[f]);
    snprintf(name + len, sizeof name - (size_t)len, "%s%s%s", wdt < 0 ? "" : " affine ",
             wdt < 0 ? "" : lp_dtype_name((lp_dtype)wdt), modulate ? " modulated" : "");
    size_t n = (size_t)(rows * dim), nm = (size_t)(nseg * stride);
    lp_tensor w = {0}, b = {0};
    if (wdt >= 0) {
        w = weight("w", (lp_dtype)wdt, 1, (int64_t[]){dim}, seed, 0.5f, 1.0f);
        b = weight("b", (lp_dtype)wdt, 1, (int64_t[]){dim}, seed + 1, 0.5f, 0.0f);
        CHECK(w.data && b.data, "out of memory");
    }
    const lp_tensor *pw = wdt >= 0 ? &w : NULL, *pb = wdt >= 0 ? &b : NULL;
    float *x = random_floats(n, seed + 2, 2.0f, offset), *mod = random_floats(nm, seed + 3, 1.0f, 0.0f),
          *y = malloc((n ? n : 1) * sizeof *y);
    CHECK(x && mod && y, "out of memory");
    float *dx = lp_test_dev_copy(gpu, x, n), *dmod = lp_test_dev_copy(gpu, mod, nm);
    void *dy = dev_out(1, n);
    const float eps = 1e-6f;
    cpu->norm_modulate(cpu, y, x, dim, pw, pb, eps, &seg, modulate ? mod : NULL, modulate ? mod + dim : NULL,
                       modulate ? stride : 0);
    int fail = 1;
    if (dx && dmod && dy) {
        gpu->norm_modulate(gpu, dy, dx, dim, pw, pb, eps, &seg, modulate ? dmod : NULL,
                           modulate ? dmod + dim : NULL, modulate ? stride : 0);
        fail = compare_out(name, dy, 1, y, n, 4e-3);
    }
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dmod);
    lp_test_dev_free(gpu, dy);
    free(x);
    free(mod);
    free(y);
    return fail;
}

static int test_norm_modulate(void) {
    if (!gpu) return no_gpu;
    CHECK(gpu->act_bf16 == 1, "CUDA activations should be bf16 (act_bf16 %d)", gpu->act_bf16);
    int fails = 0;
    fails += norm_modulate_case(1, (int64_t[]){4680}, 1536, -1, 1, 4.0f, 400);
    fails += norm_modulate_case(3, (int64_t[]){1560, 1000, 2120}, 1536, -1, 1, 0.0f, 410);
    fails += norm_modulate_case(3, (int64_t[]){1560, 1560, 1560}, 1536, LP_F32, 0, -3.0f, 420);
    fails += norm_modulate_case(1, (int64_t[]){37}, 1536, LP_BF16, 0, 1.0f, 430);
    fails += norm_modulate_case(1, (int64_t[]){300}, 96, -1, 1, 0.5f, 440);
    fails += norm_modulate_case(3, (int64_t[]){20, 77, 3}, 96, -1, 1, 2.0f, 450);
    fails += norm_modulate_case(3, (int64_t[]){40, 0, 21}, 96, LP_F16, 0, 0.0f, 460); /* an empty segment */
    fails += norm_modulate_case(3, (int64_t[]){3, 1, 5}, 128, -1, 1, 0.0f, 470);
    fails += norm_modulate_case(2, (int64_t[]){30, 7}, 2504, LP_F32, 1, 1.0f, 480); /* rows past the register cache */
    fails += norm_modulate_case(2, (int64_t[]){9, 4}, 77, -1, 1, 0.0f, 490);        /* scalar path */
    return fails ? 1 : 0;
}

/* ---------------------------------------------------- rms_norm_rope */

/* RMSNorm over rows of heads·hd (weight stored as wdt) then, with rotate,
 * RoPE at random positions; into a bf16 y (y_act), an f32 y in place, or a
 * separate f32 y. */
static int rms_rope_case(int64_t rows, int heads, int hd, int rotate, int y_act, int in_place, int wdt,
                         uint32_t seed) {
    char name[128];
    snprintf(name, sizeof name, "rms_norm_rope rows=%lld heads=%d head_dim=%d %s%s %s", (long long)rows, heads, hd,
             rotate ? "rope " : "", lp_dtype_name((lp_dtype)wdt),
             y_act ? "-> act" : in_place ? "-> f32 in place" : "-> f32");
    const int64_t D = (int64_t)heads * hd;
    size_t n = (size_t)(rows * D);
    lp_tensor w = weight("norm", (lp_dtype)wdt, 1, (int64_t[]){D}, seed, 0.5f, 1.0f);
    float *x = random_floats(n, seed + 1, 2.0f, 0.25f), *y = malloc((n ? n : 1) * sizeof *y);
    int32_t *pos = malloc((size_t)(rows ? rows : 1) * 3 * sizeof *pos);
    CHECK(w.data && x && y && pos, "out of memory");
    uint32_t s = seed;
    for (int64_t r = 0; r < rows; r++) {
        pos[r * 3] = (int32_t)(rng(&s) % 21);
        pos[r * 3 + 1] = (int32_t)(rng(&s) % 30);
        pos[r * 3 + 2] = (int32_t)(rng(&s) % 52);
    }
    const int32_t *p = rotate ? pos : NULL;
    const float eps = 1e-6f;
    float *dx = lp_test_dev_copy(gpu, x, n);
    void *dy = in_place ? (void *)dx : dev_out(y_act, n);
    if (in_place) {
        memcpy(y, x, n * sizeof *y);
        cpu->rms_norm_rope(cpu, y, 0, y, rows, heads, hd, &w, eps, p);
    } else {
        cpu->rms_norm_rope(cpu, y, y_act, x, rows, heads, hd, &w, eps, p);
    }
    int fail = 1;
    if (dx && dy) {
        gpu->rms_norm_rope(gpu, dy, y_act, dx, rows, heads, hd, &w, eps, p);
        fail = compare_out(name, dy, y_act, y, n, y_act ? 4e-3 : 1e-5);
    }
    if (!in_place) lp_test_dev_free(gpu, dy);
    lp_test_dev_free(gpu, dx);
    free(x);
    free(y);
    free(pos);
    return fail;
}

static int test_rms_norm_rope(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += rms_rope_case(4680, 12, 128, 1, 1, 0, LP_BF16, 500); /* self-attention q */
    fails += rms_rope_case(4680, 12, 128, 0, 0, 1, LP_BF16, 510); /* self-attention k */
    fails += rms_rope_case(4680, 12, 128, 0, 1, 0, LP_BF16, 520); /* cross-attention q */
    fails += rms_rope_case(512, 12, 128, 0, 0, 1, LP_F32, 530);   /* text k */
    fails += rms_rope_case(300, 4, 96, 1, 1, 0, LP_F32, 540);
    fails += rms_rope_case(301, 3, 48, 1, 1, 0, LP_F32, 550);
    fails += rms_rope_case(300, 4, 64, 1, 0, 0, LP_F32, 560);
    fails += rms_rope_case(37, 2, 64, 0, 1, 0, LP_F16, 570);
    fails += rms_rope_case(5, 2, 48, 1, 0, 1, LP_F32, 580);
    fails += rms_rope_case(3, 1, 96, 1, 1, 0, LP_BF16, 590);
    fails += rms_rope_case(1, 12, 128, 1, 1, 0, LP_BF16, 600);
    fails += rms_rope_case(1, 2, 128, 1, 0, 1, LP_BF16, 610);
    fails += rms_rope_case(37, 20, 128, 1, 1, 0, LP_F32, 620); /* rows past the register cache */
    fails += rms_rope_case(7, 3, 18, 1, 0, 0, LP_F32, 630);    /* pairs not in float4 groups */
    fails += rms_rope_case(7, 3, 18, 1, 1, 0, LP_F32, 640);
    fails += rms_rope_case(5, 1, 77, 0, 0, 1, LP_F32, 650);    /* scalar path */
    return fails ? 1 : 0;
}

/* ------------------------------------------- residual_norm_modulate */

/* x += y·gate per segment (gate rows with the model's stride 6·dim, or NULL),
 * then xn = LN(x) with the affine (kind 1, the cross-attention's norm3) or the
 * per-segment modulation (kind 0), as the model calls it; both x (f32, 1e-6)
 * and xn (bf16) are compared. */
static int residual_case(int nseg, const int64_t *sizes, int64_t dim, int gated, int affine, uint32_t seed) {
    char name[128];
    lp_segments seg = segments(nseg, sizes);
    int64_t rows = seg.start[nseg], stride = 6 * dim;
    int len = snprintf(name, sizeof name, "residual_norm_modulate %lldx%lld segments", (long long)rows,
                       (long long)dim);
    for (int f = 0; f < nseg; f++) len += snprintf(name + len, sizeof name - (size_t)len, "%s%lld", f ? "+" : " ",
                                                   (long long)sizes[f]);
    snprintf(name + len, sizeof name - (size_t)len, "%s%s", gated ? "" : " no-gate", affine ? " affine" : "");
    size_t n = (size_t)(rows * dim), ng = (size_t)((nseg ? nseg : 1) * stride);
    float *x = random_floats(n, seed, 2.0f, 0.0f), *y = random_floats(n, seed + 1, 2.0f, 0.0f),
          *g = random_floats(ng, seed + 2, 1.0f, 0.0f), *xn = malloc((n ? n : 1) * sizeof *xn);
    lp_tensor w = weight("norm3.weight", LP_F32, 1, (int64_t[]){dim}, seed + 3, 0.5f, 1.0f);
    lp_tensor b = weight("norm3.bias", LP_F32, 1, (int64_t[]){dim}, seed + 4, 0.2f, 0.0f);
    CHECK(x && y && g && xn && w.data && b.data, "out of memory");
    float *dx = lp_test_dev_copy(gpu, x, n), *dy = lp_test_dev_copy(gpu, y, n), *dg = lp_test_dev_copy(gpu, g, ng);
    void *dxn = dev_out(1, n);
    /* the gate at column 2·dim of a modulation row (the model's m2), shift
     * and scale at 3·dim and 4·dim (m3, m4) */
    const float *gate = gated ? g + 2 * dim : NULL, *dgate = gated && dg ? dg + 2 * dim : NULL;
    cpu->residual_norm_modulate(cpu, x, y, gate, stride, xn, dim, affine ? &w : NULL, affine ? &b : NULL, 1e-6f, &seg,
                                affine ? NULL : g + 3 * dim, affine ? NULL : g + 4 * dim, stride);
    int fail = 1;
    if (dx && dy && dg && dxn) {
        gpu->residual_norm_modulate(gpu, dx, dy, dgate, stride, dxn, dim, affine ? &w : NULL, affine ? &b : NULL,
                                    1e-6f, &seg, affine ? NULL : dg + 3 * dim, affine ? NULL : dg + 4 * dim, stride);
        fail = lp_test_dev_compare(gpu, name, dx, x, n, 1e-6) | compare_out("  ... its norm", dxn, 1, xn, n, 4e-3);
    }
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dy);
    lp_test_dev_free(gpu, dg);
    lp_test_dev_free(gpu, dxn);
    free(x), free(y), free(g), free(xn); /* w and b stay: the CUDA backend caches them by pointer */
    return fail;
}

static int test_residual_norm_modulate(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += residual_case(3, (int64_t[]){1560, 1560, 1560}, 1536, 1, 0, 700);
    fails += residual_case(3, (int64_t[]){1560, 1000, 2120}, 1536, 0, 0, 710);
    fails += residual_case(3, (int64_t[]){359, 359, 358}, 1536, 1, 1, 715); /* after self-attention: norm3 */
    fails += residual_case(1, (int64_t[]){37}, 1536, 1, 0, 720);
    fails += residual_case(3, (int64_t[]){20, 77, 3}, 96, 1, 0, 730);
    fails += residual_case(3, (int64_t[]){40, 0, 21}, 128, 1, 1, 740); /* an empty segment */
    fails += residual_case(2, (int64_t[]){9, 4}, 77, 1, 0, 750);        /* scalar path */
    fails += residual_case(2, (int64_t[]){9, 4}, 77, 0, 1, 760);
    fails += residual_case(1, (int64_t[]){5}, 4200, 1, 0, 770);         /* wider than the row cache */
    return fails ? 1 : 0;
}

/* --------------------------------------------------------- SiLU and add */

/* SiLU on n values starting `skew` floats past an aligned buffer (skew 1
 * takes the unaligned path). */
static int silu_case(size_t n, size_t skew, uint32_t seed) {
    char name[96];
    snprintf(name, sizeof name, "silu n=%zu%s", n, skew ? " unaligned" : "");
    float *x = random_floats(n + skew, seed, 8.0f, 0.0f);
    CHECK(x, "out of memory");
    float *dx = lp_test_dev_copy(gpu, x, n + skew);
    cpu->silu(cpu, x + skew, (int64_t)n);
    if (dx) gpu->silu(gpu, dx + skew, (int64_t)n);
    int fail = lp_test_dev_compare(gpu, name, dx, x, n + skew, 1e-5);
    lp_test_dev_free(gpu, dx);
    free(x);
    return fail;
}

static int test_silu(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += silu_case(1000003, 0, 800);
    fails += silu_case(4607, 1, 810);
    return fails ? 1 : 0;
}

/* y = a + b with y separate, y aliasing a, and unaligned pointers. */
static int add_case(const char *name, size_t n, int alias, size_t skew, uint32_t seed) {
    float *a = random_floats(n + skew, seed, 2.0f, 0.0f), *b = random_floats(n + skew, seed + 1, 2.0f, 0.0f),
          *y = malloc((n + skew) * sizeof *y);
    CHECK(a && b && y, "out of memory");
    float *da = lp_test_dev_copy(gpu, a, n + skew), *db = lp_test_dev_copy(gpu, b, n + skew);
    float *dy = alias ? da : lp_test_dev_poison(gpu, n + skew);
    float *hy = alias ? a : y;
    cpu->add(cpu, hy + skew, a + skew, b + skew, (int64_t)n);
    if (da && db && dy) gpu->add(gpu, dy + skew, da + skew, db + skew, (int64_t)n);
    /* compare from `skew` on: the skipped head of a poisoned y stays NaN */
    float *sub = dy ? dy + skew : NULL;
    int fail = lp_test_dev_compare(gpu, name, sub, hy + skew, n, 1e-6);
    if (!alias) lp_test_dev_free(gpu, dy);
    lp_test_dev_free(gpu, da);
    lp_test_dev_free(gpu, db);
    free(a);
    free(b);
    free(y);
    return fail;
}

static int test_add(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += add_case("add n=1000003", 1000003, 0, 0, 600);
    fails += add_case("add n=1000003 in place (y = a)", 1000003, 1, 0, 610);
    fails += add_case("add n=9999 unaligned", 9999, 0, 1, 620);
    return fails ? 1 : 0;
}

/* ------------------------------------------------------------- kv_store */

/* kv_store of random rows (rotated at random positions, or not) into a
 * poisoned bf16 buffer, against the CPU's f32 kv_store (copy + RoPE)
 * rounded to bf16 on the host: both round the same f32 values to nearest
 * even, so only the rare f32 RoPE result 1 ulp away from the CPU's that
 * crosses a bf16 rounding boundary may differ. */
static int kv_store_case(int64_t rows, int heads, int hd, int rotate, int scatter, uint32_t seed) {
    char name[96];
    snprintf(name, sizeof name, "kv_store rows=%lld heads=%d head_dim=%d %s%s", (long long)rows, heads, hd,
             rotate ? "rotated" : "plain", scatter ? " scattered" : "");
    size_t n = (size_t)rows * (size_t)heads * (size_t)hd;
    float *x = random_floats(n, seed, 2.0f, 0.0f), *want = malloc((n ? n : 1) * sizeof *want);
    int32_t *pos = malloc((size_t)rows * 3 * sizeof *pos);
    CHECK(x && want && pos, "out of memory");
    uint32_t s = seed;
    for (int64_t r = 0; r < rows; r++) {
        pos[r * 3] = (int32_t)(rng(&s) % 21);
        pos[r * 3 + 1] = (int32_t)(rng(&s) % 30);
        pos[r * 3 + 2] = (int32_t)(rng(&s) % 52);
    }
    const int32_t *p = rotate ? pos : NULL;
    int32_t *di = scatter ? malloc((size_t)(rows ? rows : 1) * sizeof *di) : NULL; /* row r → rows − 1 − r */
    CHECK(!scatter || di, "out of memory");
    for (int64_t r = 0; scatter && r < rows; r++) di[r] = (int32_t)(rows - 1 - r);
    CHECK(cpu->kv_store(cpu, want, di, x, NULL, NULL, rows, heads, hd, p) == LP_OK, "cpu kv_store: %s", lp_last_error());
    for (size_t i = 0; i < n; i++) want[i] = lp_bf16_to_f32(lp_f32_to_bf16(want[i]));
    float *dx = lp_test_dev_copy(gpu, x, n), *dd = lp_test_dev_poison(gpu, (n + 1) / 2); /* NaN bf16 pairs */
    int fail = 1;
    if (dx && dd && lp_test_status_ok(name, gpu->kv_store(gpu, dd, di, dx, NULL, NULL, rows, heads, hd, p)))
        fail = dev_compare_bf16(gpu, name, dd, want, n, 1e-4);
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dd);
    free(x);
    free(want);
    free(pos);
    free(di);
    return fail;
}

/* LIPAR's K/V recovery through kv_store: rows gathered from computed f32 rows
 * and from saved bf16 rows (src_idx < 0), scattered to the cache rows
 * dst_idx, rotated or not, against the CPU's f32 kv_store of the same values
 * (the saved rows rounded to bf16 first, as the GPU holds them). */
static int kv_gather_case(int64_t rows, int64_t computed, int64_t nsaved, int heads, int hd, int rotate, uint32_t seed) {
    char name[112];
    snprintf(name, sizeof name, "kv_store gather %lld rows of %lld computed + %lld saved, head_dim %d %s",
             (long long)rows, (long long)computed, (long long)nsaved, hd, rotate ? "rotated" : "plain");
    const int64_t ld = (int64_t)heads * hd;
    float *x = random_floats((size_t)(computed * ld), seed, 2.0f, 0.0f);
    float *saved = random_floats((size_t)(nsaved * ld), seed + 1, 2.0f, 0.0f);
    float *want = malloc((size_t)(rows * ld) * sizeof *want);
    uint16_t *saved_bf16 = malloc((size_t)(nsaved * ld) * sizeof *saved_bf16);
    int32_t *di = malloc((size_t)rows * sizeof *di), *si = malloc((size_t)rows * sizeof *si);
    int32_t *pos = malloc((size_t)rows * 3 * sizeof *pos);
    CHECK(x && saved && want && saved_bf16 && di && si && pos, "out of memory");
    for (int64_t i = 0; i < nsaved * ld; i++) {
        saved_bf16[i] = lp_f32_to_bf16(saved[i]);
        saved[i] = lp_bf16_to_f32(saved_bf16[i]);
    }
    uint32_t r = seed;
    for (int64_t i = 0; i < rows; i++) {
        di[i] = (int32_t)(rows - 1 - i);
        si[i] = (int32_t)(rng(&r) % (uint32_t)(computed + nsaved)) - (int32_t)nsaved; /* < 0: saved */
        pos[i * 3] = (int32_t)(rng(&r) % 21);
        pos[i * 3 + 1] = (int32_t)(rng(&r) % 30);
        pos[i * 3 + 2] = (int32_t)(rng(&r) % 52);
    }
    const int32_t *p = rotate ? pos : NULL;
    CHECK(cpu->kv_store(cpu, want, di, x, saved, si, rows, heads, hd, p) == LP_OK, "cpu kv_store: %s",
          lp_last_error());
    for (int64_t i = 0; i < rows * ld; i++) want[i] = lp_bf16_to_f32(lp_f32_to_bf16(want[i]));
    float *dx = lp_test_dev_copy(gpu, x, (size_t)(computed * ld));
    void *dsaved = gpu->alloc(gpu, (size_t)(nsaved * ld) * 2), *dd = lp_test_dev_poison(gpu, (size_t)(rows * ld + 1) / 2);
    int fail = 1;
    if (dx && dsaved && dd && gpu->upload(gpu, dsaved, saved_bf16, (size_t)(nsaved * ld) * 2) == LP_OK &&
        lp_test_status_ok(name, gpu->kv_store(gpu, dd, di, dx, dsaved, si, rows, heads, hd, p)))
        fail = dev_compare_bf16(gpu, name, dd, want, (size_t)(rows * ld), 1e-4);
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dd);
    if (dsaved) gpu->release(gpu, dsaved);
    free(x), free(saved), free(want), free(saved_bf16), free(di), free(si), free(pos);
    return fail;
}

static int test_kv_store(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    CHECK(gpu->kv_bf16 == 1, "the CUDA KV cache should be bf16 (kv_bf16 %d)", gpu->kv_bf16);
    fails += kv_store_case(4680, 12, 128, 1, 0, 1200);
    fails += kv_store_case(4680, 12, 128, 0, 0, 1210);
    fails += kv_store_case(1076, 12, 128, 1, 1, 1215); /* kept rows only (LIPAR's repeated steps) */
    fails += kv_store_case(1076, 12, 128, 0, 1, 1216);
    fails += kv_store_case(301, 3, 48, 1, 0, 1220);
    fails += kv_store_case(300, 4, 96, 1, 1, 1230);
    fails += kv_store_case(77, 3, 64, 0, 0, 1240); /* 14784 elements: the vector path */
    fails += kv_store_case(7, 1, 18, 0, 0, 1250);  /* 126: a scalar tail */
    fails += kv_gather_case(3604, 1076, 1560, 12, 128, 1, 1260); /* the pruned slots of a LIPAR chunk */
    fails += kv_gather_case(3604, 1076, 1560, 12, 128, 0, 1270);
    fails += kv_gather_case(301, 40, 25, 3, 48, 1, 1280);
    return fails ? 1 : 0;
}

/* --------------------------------------------------------- data movement */

/* Fisher-Yates: idx[0..n) = the first n of a random permutation of [0, range). */
static int32_t *random_subset(int64_t n, int64_t range, uint32_t seed) {
    int32_t *perm = malloc((size_t)range * sizeof *perm);
    if (!perm) return NULL;
    for (int64_t i = 0; i < range; i++) perm[i] = (int32_t)i;
    uint32_t s = seed;
    for (int64_t i = 0; i < n; i++) {
        int64_t j = i + (int64_t)(rng(&s) % (uint32_t)(range - i));
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    return perm;
}

/* patchify of n tokens (a shuffled subset of the F·(H/2)(W/2) tokens, or all
 * in order with idx NULL) into poisoned tokens; unpatchify of random tokens
 * into a random x (untouched pixels must stay). */
static int patch_case(int F, int C, int H, int W, int64_t n, int subset, uint32_t seed) {
    char name[2][96];
    int64_t T = (int64_t)F * (H / 2) * (W / 2);
    for (int u = 0; u < 2; u++)
        snprintf(name[u], sizeof name[u], "%s F=%d C=%d H=%d W=%d n=%lld%s", u ? "unpatchify" : "patchify", F, C, H, W,
                 (long long)n, subset ? " subset" : " idx=NULL");
    size_t nx = (size_t)F * C * H * W, nt = (size_t)(n * 4 * C);
    float *x = random_floats(nx, seed, 1.0f, 0.0f), *tok = malloc(nt * sizeof *tok),
          *tin = random_floats(nt, seed + 1, 1.0f, 0.0f);
    int32_t *idx = subset ? random_subset(n, T, seed + 2) : NULL;
    CHECK(x && tok && tin && (idx || !subset), "out of memory");
    int fails = 0;
    /* patchify */
    float *dx = lp_test_dev_copy(gpu, x, nx), *dtok = lp_test_dev_poison(gpu, nt);
    CHECK(cpu->patchify(cpu, tok, x, idx, n, C, H, W) == LP_OK, "cpu patchify: %s", lp_last_error());
    if (dx && dtok && lp_test_status_ok(name[0], gpu->patchify(gpu, dtok, dx, idx, n, C, H, W)))
        fails += lp_test_dev_compare(gpu, name[0], dtok, tok, nt, 0.0);
    else fails++;
    /* unpatchify into the same random x on both sides */
    float *dtin = lp_test_dev_copy(gpu, tin, nt);
    CHECK(cpu->unpatchify(cpu, x, tin, idx, n, C, H, W) == LP_OK, "cpu unpatchify: %s", lp_last_error());
    if (dx && dtin && lp_test_status_ok(name[1], gpu->unpatchify(gpu, dx, dtin, idx, n, C, H, W)))
        fails += lp_test_dev_compare(gpu, name[1], dx, x, nx, 0.0);
    else fails++;
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dtok);
    lp_test_dev_free(gpu, dtin);
    free(x);
    free(tok);
    free(tin);
    free(idx);
    return fails;
}

static int test_patchify(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += patch_case(3, 16, 60, 104, 1400, 1, 1000);
    fails += patch_case(3, 16, 60, 104, 4680, 0, 1010);
    fails += patch_case(2, 3, 6, 10, 11, 1, 1020);
    return fails ? 1 : 0;
}

/* ------------------------------------------------- the editing loop's ops */

/* flow_x0 (x0 = xt − σ·v, fp64) and flow_renoise (x = (1 − σ)·x0 + σ·ε, f32)
 * on n random values, out of place into a poisoned buffer or in place (the
 * output aliasing the first input): exact, the kernels round each product
 * and sum as the CPU does. */
static int flow_case(int renoise, size_t n, int inplace, float sigma, uint32_t seed) {
    char name[96];
    snprintf(name, sizeof name, "%s n=%zu sigma=%g%s", renoise ? "flow_renoise" : "flow_x0", n, sigma,
             inplace ? (renoise ? " in place (x = x0)" : " in place (x0 = xt)") : "");
    float *a = random_floats(n, seed, 2.0f, 0.25f), *b = random_floats(n, seed + 1, 1.5f, -0.125f),
          *want = malloc((n ? n : 1) * sizeof *want);
    CHECK(a && b && want, "out of memory");
    float *da = lp_test_dev_copy(gpu, a, n), *db = lp_test_dev_copy(gpu, b, n);
    float *dout = inplace ? da : lp_test_dev_poison(gpu, n);
    if (inplace) memcpy(want, a, n * sizeof *want);
    const float *ha = inplace ? want : a;
    const float *ga = inplace ? dout : da;
    if (renoise) cpu->flow_renoise(cpu, want, ha, b, sigma, (int64_t)n);
    else cpu->flow_x0(cpu, want, ha, b, sigma, (int64_t)n);
    if (da && db && dout) {
        if (renoise) gpu->flow_renoise(gpu, dout, ga, db, sigma, (int64_t)n);
        else gpu->flow_x0(gpu, dout, ga, db, sigma, (int64_t)n);
    }
    int fail = lp_test_dev_compare(gpu, name, da && db ? dout : NULL, want, n, 0.0);
    if (!inplace) lp_test_dev_free(gpu, dout);
    lp_test_dev_free(gpu, da);
    lp_test_dev_free(gpu, db);
    free(a);
    free(b);
    free(want);
    return fail;
}

/* A random keep mask of (H/2)·(W/2) bytes, about 30% ones. */
static uint8_t *random_keep(int H, int W, uint32_t seed) {
    size_t T = (size_t)(H / 2) * (size_t)(W / 2);
    uint8_t *k = malloc(T ? T : 1);
    if (!k) return NULL;
    uint32_t s = seed;
    for (size_t t = 0; t < T; t++) k[t] = rng(&s) % 10 < 3;
    return k;
}

/* The keep mask in the GPU backend's memory; NULL on failure (printed). */
static uint8_t *dev_keep(const uint8_t *keep, size_t T) {
    uint8_t *d = gpu->alloc(gpu, T ? T : 1);
    if (!d) {
        printf("    device keep mask of %zu bytes: %s\n", T, lp_last_error());
        return NULL;
    }
    if (gpu->upload(gpu, d, keep, T) != LP_OK) {
        printf("    upload of the keep mask: %s\n", lp_last_error());
        gpu->release(gpu, d);
        return NULL;
    }
    return d;
}

/* copy_patches of one frame [C, H, W] with a random mask (the pruned patches
 * for kept 0, the kept ones for 1), dst random (the same on both sides), src
 * random: exact. */
static int copy_patches_case(int C, int H, int W, int kept_flag, uint32_t seed) {
    char name[96];
    snprintf(name, sizeof name, "copy_patches C=%d H=%d W=%d kept=%d (30%% kept)", C, H, W, kept_flag);
    size_t n = (size_t)C * H * W, T = (size_t)(H / 2) * (W / 2);
    float *dst = random_floats(n, seed, 1.0f, -2.0f), *src = random_floats(n, seed + 1, 1.0f, 2.0f);
    uint8_t *keep = random_keep(H, W, seed + 2);
    CHECK(dst && src && keep, "out of memory");
    size_t kept = 0;
    for (size_t t = 0; t < T; t++) kept += keep[t];
    CHECK(kept > 0 && kept < T, "the mask should mix kept and pruned tokens (%zu of %zu kept)", kept, T);
    float *ddst = lp_test_dev_copy(gpu, dst, n), *dsrc = lp_test_dev_copy(gpu, src, n);
    uint8_t *dk = dev_keep(keep, T);
    CHECK(cpu->copy_patches(cpu, dst, src, keep, kept_flag, C, H, W) == LP_OK, "cpu copy_patches: %s",
          lp_last_error());
    int fail = 1;
    if (ddst && dsrc && dk && lp_test_status_ok(name, gpu->copy_patches(gpu, ddst, dsrc, dk, kept_flag, C, H, W)))
        fail = lp_test_dev_compare(gpu, name, ddst, dst, n, 0.0);
    lp_test_dev_free(gpu, ddst);
    lp_test_dev_free(gpu, dsrc);
    if (dk) gpu->release(gpu, dk);
    free(dst);
    free(src);
    free(keep);
    return fail;
}

/* clear of bytes [off, off + len) of a device buffer of n random floats (none
 * zero): the range zero, every other byte as uploaded. */
static int clear_case(size_t n, size_t off, size_t len, uint32_t seed) {
    char name[96];
    snprintf(name, sizeof name, "clear bytes [%zu, %zu) of %zu", off, off + len, n * sizeof(float));
    float *h = random_floats(n, seed, 1.0f, 2.0f); /* in [1, 3): no zero byte pattern */
    unsigned char *back = malloc(n * sizeof(float));
    CHECK(h && back && off + len <= n * sizeof(float), "out of memory or a bad range");
    float *d = lp_test_dev_copy(gpu, h, n);
    lp_status s = d ? gpu->clear(gpu, (char *)d + off, len) : LP_ERR_NOMEM;
    if (s == LP_OK) s = gpu->download(gpu, back, d, n * sizeof(float));
    size_t wrong = 0;
    const unsigned char *orig = (const unsigned char *)h;
    for (size_t i = 0; s == LP_OK && i < n * sizeof(float); i++)
        wrong += back[i] != (i >= off && i < off + len ? 0 : orig[i]);
    int ok = s == LP_OK && wrong == 0;
    printf("    %-*s %s", LP_TEST_NAME_WIDTH, name, ok ? "ok" : "FAIL");
    if (s != LP_OK) printf(" [%s: %s]", lp_status_name(s), lp_last_error());
    if (wrong) printf(" [%zu bytes wrong]", wrong);
    printf("\n");
    lp_test_dev_free(gpu, d);
    free(h);
    free(back);
    return !ok;
}

static int test_edit_ops(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    /* 3 frames of 16×60×104 latents, and an odd count */
    static const size_t sizes[] = {299520, 1001};
    static const float sigmas[] = {0.7373f, 0.0625f};
    for (int sz = 0; sz < 2; sz++)
        for (int renoise = 0; renoise < 2; renoise++)
            for (int inplace = 0; inplace < 2; inplace++)
                fails += flow_case(renoise, sizes[sz], inplace, sigmas[sz], 1400 + (uint32_t)(10 * sz + 2 * renoise));
    fails += copy_patches_case(16, 60, 104, 0, 1420);
    fails += copy_patches_case(16, 60, 104, 1, 1425);
    /* argument errors: odd H, odd W, returned before anything is issued (not
     * sticky): the valid copy after them must still work */
    float *d = gpu->alloc(gpu, 4096 * sizeof(float));
    uint8_t *dk = gpu->alloc(gpu, 64);
    CHECK(d && dk, "alloc: %s", lp_last_error());
    lp_status e1 = gpu->copy_patches(gpu, d, d + 2048, dk, 0, 2, 7, 8);
    lp_status e2 = gpu->copy_patches(gpu, d, d + 2048, dk, 0, 2, 8, 7);
    gpu->release(gpu, d);
    gpu->release(gpu, dk);
    printf("    %-*s %s [%s]\n", LP_TEST_NAME_WIDTH, "copy_patches H odd -> LP_ERR_ARG",
           e1 == LP_ERR_ARG ? "ok" : "FAIL", lp_status_name(e1));
    printf("    %-*s %s [%s]\n", LP_TEST_NAME_WIDTH, "copy_patches W odd -> LP_ERR_ARG",
           e2 == LP_ERR_ARG ? "ok" : "FAIL", lp_status_name(e2));
    fails += (e1 != LP_ERR_ARG) + (e2 != LP_ERR_ARG);
    fails += copy_patches_case(16, 60, 104, 0, 1430); /* after the errors: not sticky */
    fails += copy_patches_case(3, 6, 10, 0, 1440);
    /* clear: float-aligned and odd byte ranges, and nothing */
    fails += clear_case(100003, 4 * 1000, 4 * 50001, 1450);
    fails += clear_case(100003, 4 * 1000 + 3, 4 * 50001 - 6, 1460);
    fails += clear_case(1001, 17, 0, 1470);
    return fails ? 1 : 0;
}

/* Argument checks of the CUDA ops (the CPU ones trust their caller), the
 * no-ops of zero rows, and a void op's argument error becoming the sticky
 * error of its backend. */
static int test_errors(void) {
    if (!gpu) return no_gpu;
    float *d = gpu->alloc(gpu, 4096 * sizeof(float));
    CHECK(d, "alloc: %s", lp_last_error());
    int32_t bad[2] = {1, -1};
    lp_status s1 = gpu->kv_store(gpu, d, bad, d + 2048, NULL, NULL, 2, 1, 16, NULL);
    lp_status s2 = gpu->patchify(gpu, d, d + 2048, NULL, 1, 4, 5, 4);
    lp_status s3 = gpu->unpatchify(gpu, d, d + 2048, bad, 2, 1, 2, 2);
    /* rotated rows of an odd head_dim, rotated rows into misaligned cache rows */
    int32_t pos[3] = {1, 2, 3};
    lp_status s5 = gpu->kv_store(gpu, d, NULL, d + 2048, NULL, NULL, 1, 1, 17, pos);
    lp_status s6 = gpu->kv_store(gpu, (char *)d + 2, NULL, d + 2048, NULL, NULL, 1, 1, 16, pos);
    lp_tensor W = weight("W", LP_F32, 2, (int64_t[]){8, 8}, 1300, 0.5f, 0.0f);
    CHECK(W.data, "out of memory");
    lp_status s7 = gpu->linear(gpu, d, d + 2048, 2, &W, NULL, 8u);
    /* zero rows: no-ops, no error */
    lp_segments none = segments(1, (int64_t[]){0}), empty = segments(0, NULL);
    lp_tensor w8 = weight("w8", LP_F32, 1, (int64_t[]){8}, 1301, 0.5f, 1.0f);
    CHECK(w8.data, "out of memory");
    lp_status s8 = gpu->linear(gpu, d, d + 2048, 0, &W, NULL, LP_LINEAR_X_ACT | LP_LINEAR_Y_ACT | LP_LINEAR_GELU);
    gpu->norm_modulate(gpu, d, d + 2048, 8, NULL, NULL, 1e-6f, &none, d + 1024, d + 1032, 48);
    gpu->norm_modulate(gpu, d, d + 2048, 8, NULL, NULL, 1e-6f, &empty, NULL, NULL, 0);
    gpu->rms_norm_rope(gpu, d, 1, d + 2048, 0, 2, 4, &w8, 1e-6f, pos);
    gpu->residual_norm_modulate(gpu, d, d + 2048, d + 1024, 48, d + 3072, 8, NULL, NULL, 1e-6f, &none, NULL, NULL, 0);
    gpu->residual_norm_modulate(gpu, d, d + 2048, NULL, 0, d + 3072, 8, NULL, NULL, 1e-6f, &empty, NULL, NULL, 0);
    /* a valid op afterwards still works (argument errors of status ops are not sticky) */
    lp_status s4 = gpu->kv_store(gpu, d, NULL, d + 2048, NULL, NULL, 2, 1, 16, NULL);
    gpu->release(gpu, d);
    printf("    kv_store negative index -> %s, patchify odd H -> %s, unpatchify negative index -> %s, then %s\n",
           lp_status_name(s1), lp_status_name(s2), lp_status_name(s3), lp_status_name(s4));
    printf("    kv_store rotated head_dim 17 -> %s, misaligned -> %s, linear unknown flag -> %s, M = 0 -> %s\n",
           lp_status_name(s5), lp_status_name(s6), lp_status_name(s7), lp_status_name(s8));
    CHECK(s1 == LP_ERR_ARG && s2 == LP_ERR_ARG && s3 == LP_ERR_ARG && s4 == LP_OK, "unexpected statuses");
    CHECK(s5 == LP_ERR_ARG && s6 == LP_ERR_ARG && s7 == LP_ERR_ARG && s8 == LP_OK, "unexpected statuses");

    /* on a backend of its own: segments that go backwards */
    lp_backend *b2 = NULL;
    CHECK(lp_backend_cuda_create(1, 1, &b2) == LP_OK, "second CUDA backend: %s", lp_last_error());
    float *e = b2->alloc(b2, 1024 * sizeof(float));
    CHECK(e, "alloc: %s", lp_last_error());
    lp_segments back = segments(2, (int64_t[]){4, 4});
    back.start[2] = 2;
    b2->norm_modulate(b2, e, e + 512, 8, NULL, NULL, 1e-6f, &back, NULL, NULL, 0);
    lp_status s9 = b2->kv_store(b2, e, NULL, e + 512, NULL, NULL, 2, 1, 16, NULL);
    b2->release(b2, e);
    lp_backend_destroy(b2);
    printf("    norm_modulate backward segments, then kv_store -> %s (sticky)\n", lp_status_name(s9));
    CHECK(s9 == LP_ERR_ARG, "unexpected status");
    return 0;
}

/* ---------------------------------------------------------------- timing */

/* Host wall time of the DiT block's ops at 4680 tokens (3 frames of 60×104
 * latents), after synchronize (informational): memory-bound ops in GB/s of
 * their compulsory traffic, GEMMs in TFLOP/s. */
static int test_timing(void) {
    if (!gpu) return no_gpu;
    const int64_t T = 4680, D = 1536, FF = 8960;
    const int heads = 12, hd = 128, reps = 10;
    lp_tensor W0 = weight("ffn.0.weight", LP_BF16, 2, (int64_t[]){FF, D}, 1100, 0.03f, 0.0f);
    lp_tensor b0 = weight("ffn.0.bias", LP_BF16, 1, (int64_t[]){FF}, 1101, 0.1f, 0.0f);
    lp_tensor W2 = weight("ffn.2.weight", LP_BF16, 2, (int64_t[]){D, FF}, 1102, 0.01f, 0.0f);
    lp_tensor b2 = weight("ffn.2.bias", LP_BF16, 1, (int64_t[]){D}, 1103, 0.1f, 0.0f);
    lp_tensor Wq = weight("q.weight", LP_BF16, 2, (int64_t[]){D, D}, 1104, 0.03f, 0.0f);
    lp_tensor bq = weight("q.bias", LP_BF16, 1, (int64_t[]){D}, 1105, 0.1f, 0.0f);
    lp_tensor nq = weight("norm_q.weight", LP_BF16, 1, (int64_t[]){D}, 1106, 0.5f, 1.0f);
    int32_t *pos = malloc((size_t)T * 3 * sizeof *pos);
    float *hx = random_floats((size_t)(T * D), 1107, 2.0f, 0.0f), *hmod = random_floats((size_t)(18 * D), 1108, 1.0f,
                                                                                        0.0f);
    float *x = hx ? lp_test_dev_copy(gpu, hx, (size_t)(T * D)) : NULL;
    float *mod = hmod ? lp_test_dev_copy(gpu, hmod, (size_t)(18 * D)) : NULL;
    float *y = gpu->alloc(gpu, (size_t)(T * D) * sizeof(float));
    void *xa = gpu->alloc(gpu, (size_t)(T * D) * 2), *h = gpu->alloc(gpu, (size_t)(T * FF) * 2);
    void *kb = gpu->alloc(gpu, (size_t)(T * D) * 2); /* bf16 cache rows */
    int ok = W0.data && b0.data && W2.data && b2.data && Wq.data && bq.data && nq.data && pos && x && mod && y &&
             xa && h && kb;
    if (ok) {
        for (int64_t i = 0; i < T; i++) {
            pos[i * 3] = (int32_t)(i / 1560);
            pos[i * 3 + 1] = (int32_t)(i % 1560 / 104);
            pos[i * 3 + 2] = (int32_t)(i % 104);
        }
        static const char *names[] = {"norm_modulate %lldx1536 (3 frames)",
                                      "rms_norm_rope %lldx12x128 rope -> act",
                                      "residual_norm_modulate %lldx1536 (3 frames)",
                                      "kv_store %lldx12x128 rotated",
                                      "linear %lldx1536 -> 8960 x:act y:act gelu",
                                      "linear %lldx8960 -> 1536 x:act",
                                      "linear %lldx1536 -> 1536 x:act",
                                      "linear %lldx1536 -> 1536 f32 x"};
        /* every op for the whole chunk, then for the tokens LIPAR keeps of the
         * static clip (23%) */
        for (int size = 0; size < 2 && ok; size++) {
            const int64_t n = size ? 1076 : T;
            lp_segments seg = segments(3, (int64_t[]){n / 3, n / 3, n - 2 * (n / 3)});
            const double work[] = {6.0 * n * D, 6.0 * n * D, 14.0 * n * D, 6.0 * n * D,
                                   2.0 * n * D * FF, 2.0 * n * D * FF, 2.0 * n * D * D, 2.0 * n * D * D};
            for (int op = 0; op < 8 && ok; op++) {
                double t0 = 0;
                for (int rep = 0; rep <= reps && ok; rep++) {
                    if (rep == 1) { /* the first run warms up (weight upload, algorithm choice) */
                        gpu->synchronize(gpu);
                        t0 = lp_seconds();
                    }
                    switch (op) {
                    case 0: gpu->norm_modulate(gpu, xa, x, D, NULL, NULL, 1e-6f, &seg, mod, mod + D, 6 * D); break;
                    case 1: gpu->rms_norm_rope(gpu, xa, 1, x, n, heads, hd, &nq, 1e-6f, pos); break;
                    case 2:
                        gpu->residual_norm_modulate(gpu, x, y, mod + 2 * D, 6 * D, xa, D, NULL, NULL, 1e-6f, &seg,
                                                    mod + 3 * D, mod + 4 * D, 6 * D);
                        break;
                    case 3: ok = gpu->kv_store(gpu, kb, NULL, x, NULL, NULL, n, heads, hd, pos) == LP_OK; break;
                    case 4:
                        ok = gpu->linear(gpu, h, xa, n, &W0, &b0, LP_LINEAR_X_ACT | LP_LINEAR_Y_ACT | LP_LINEAR_GELU) ==
                             LP_OK;
                        break;
                    case 5: ok = gpu->linear(gpu, y, h, n, &W2, &b2, LP_LINEAR_X_ACT) == LP_OK; break;
                    case 6: ok = gpu->linear(gpu, y, xa, n, &Wq, &bq, LP_LINEAR_X_ACT) == LP_OK; break;
                    default: ok = gpu->linear(gpu, y, x, n, &Wq, &bq, 0) == LP_OK; break;
                    }
                }
                gpu->synchronize(gpu);
                double ms = 1e3 * (lp_seconds() - t0) / reps;
                char name[64];
                snprintf(name, sizeof name, names[op], (long long)n);
                if (ok)
                    printf("    %-44s %8.3f ms  %8.1f %s\n", name, ms, work[op] / (ms * 1e-3) / (op < 4 ? 1e9 : 1e12),
                           op < 4 ? "GB/s" : "TFLOP/s");
            }
        }
        if (!ok) printf("    timing: %s\n", lp_last_error());
    }
    lp_test_dev_free(gpu, x);
    lp_test_dev_free(gpu, mod);
    lp_test_dev_free(gpu, y);
    lp_test_dev_free(gpu, xa);
    lp_test_dev_free(gpu, h);
    lp_test_dev_free(gpu, kb);
    free(pos);
    free(hx);
    free(hmod);
    CHECK(ok, "timing runs failed");
    return 0;
}

/* ---------------------------------------------------------------- graphs */

/* One round of graph_test: patchify of n staged token indices, a product
 * (cuBLASLt) of those tokens and a residual add, into the device buffers
 * dtok [n][64] and dy [n][N]; with extra, one more add (another topology). */
static int graph_ops(const float *dx, float *dtok, float *dy, const int32_t *idx, int64_t n, const lp_tensor *W,
                     int extra) {
    const int C = 16, H = 60, W_ = 104;
    if (gpu->patchify(gpu, dtok, dx, idx, n, C, H, W_) != LP_OK) return 1;
    if (gpu->linear(gpu, dy, dtok, n, W, NULL, 0) != LP_OK) return 1;
    gpu->add(gpu, dy, dy, dtok, n * 64);
    if (extra) gpu->add(gpu, dy, dy, dy, n * 64);
    return 0;
}

/* graph_begin / graph_end against the same ops unrecorded, bit for bit: a
 * first recording (instantiated), one with the same sizes and new indices
 * (an update), one with fewer rows (an update with other sizes: the
 * product's plan and the grids change), and one with an op more (a new
 * topology); each size ran unrecorded before. Then a download inside a
 * recording: the op fails, graph_end fails, and nothing of it ran. */
static int test_graphs(void) {
    if (!gpu) return no_gpu;
    CHECK(gpu->graph_begin && gpu->graph_end, "the CUDA backend has no graph ops with LIPAR_CUDA_GRAPHS=1");
    const int C = 16, H = 60, W_ = 104;
    const int64_t T = (int64_t)(H / 2) * (W_ / 2), N = 64;
    const size_t nx = (size_t)C * H * W_;
    lp_tensor Wt = weight("graph W", LP_BF16, 2, (int64_t[]){N, 64}, 1600, 0.2f, 0.0f);
    float *x = random_floats(nx, 1601, 1.0f, 0.0f);
    CHECK(Wt.data && x, "out of memory");
    float *dx = lp_test_dev_copy(gpu, x, nx), *dtok = lp_test_dev_poison(gpu, (size_t)T * 64),
          *dy = lp_test_dev_poison(gpu, (size_t)T * N), *ref = lp_test_dev_poison(gpu, (size_t)T * N);
    CHECK(dx && dtok && dy && ref, "device buffers: %s", lp_last_error());
    const struct {
        const char *name;
        int64_t n;
        int extra;
    } rounds[] = {{"first recording", 1000, 0}, {"same sizes, other indices (update)", 1000, 0},
                  {"fewer rows (update)", 700, 0}, {"one op more (new graph)", 1000, 1}};
    int fails = 0;
    /* each size and topology once unrecorded */
    for (int r = 0; r < 4; r++) {
        int32_t *idx = random_subset(rounds[r].n, T, 1610 + (uint32_t)r);
        CHECK(idx, "out of memory");
        fails += graph_ops(dx, dtok, dy, idx, rounds[r].n, &Wt, rounds[r].extra);
        free(idx);
    }
    for (int r = 0; r < 4; r++) {
        int64_t n = rounds[r].n;
        int32_t *idx = random_subset(n, T, 1620 + (uint32_t)r); /* new indices: staged again */
        CHECK(idx, "out of memory");
        char name[96];
        snprintf(name, sizeof name, "graph: %s, n=%lld", rounds[r].name, (long long)n);
        lp_status s = gpu->graph_begin(gpu);
        int op_fail = s == LP_OK ? graph_ops(dx, dtok, dy, idx, n, &Wt, rounds[r].extra) : 1;
        if (s == LP_OK) s = gpu->graph_end(gpu);
        if (!lp_test_status_ok(name, op_fail ? LP_ERR_IO : s)) {
            fails++;
        } else {
            /* the same ops unrecorded into ref, then compared with the recording's dy */
            fails += graph_ops(dx, dtok, ref, idx, n, &Wt, rounds[r].extra);
            float *got = malloc((size_t)(n * N) * sizeof *got);
            CHECK(got, "out of memory");
            CHECK(gpu->download(gpu, got, dy, (size_t)(n * N) * sizeof *got) == LP_OK, "%s", lp_last_error());
            fails += lp_test_dev_compare(gpu, name, ref, got, (size_t)(n * N), 0.0);
            free(got);
        }
        free(idx);
    }
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dtok);
    lp_test_dev_free(gpu, dy);
    lp_test_dev_free(gpu, ref);
    free(x);
    /* a download while recording, on a backend of its own (the failure is sticky) */
    lp_backend *b2 = NULL;
    CHECK(lp_backend_cuda_create(1, 0, &b2) == LP_OK, "second CUDA backend: %s", lp_last_error());
    float *d = b2->alloc(b2, 1024 * sizeof(float)), h[4] = {1, 2, 3, 4}, back[4];
    CHECK(d && b2->upload(b2, d, h, sizeof h) == LP_OK, "%s", lp_last_error());
    lp_status sb = b2->graph_begin(b2);
    b2->add(b2, d, d, d, 4);
    lp_status sd = b2->download(b2, back, d, sizeof back);
    lp_status se = b2->graph_end(b2);
    int ok = sb == LP_OK && sd != LP_OK && se != LP_OK;
    printf("    %-*s %s [%s, %s]\n", LP_TEST_NAME_WIDTH, "graph: a download while recording fails", ok ? "ok" : "FAIL",
           lp_status_name(sd), lp_status_name(se));
    fails += !ok;
    b2->release(b2, d);
    lp_backend_destroy(b2);
    return fails ? 1 : 0;
}

int main(void) {
    setenv("LIPAR_CUDA_GRAPHS", "1", 1); /* the backends get graph_begin / graph_end (test_graphs) */
    no_gpu = lp_test_cuda_backends(&gpu, &cpu);
    lp_test_run("memory", test_memory);
    lp_test_run("linear", test_linear);
    lp_test_run("linear_batch (Q, K, V in one product)", test_linear_batch);
    lp_test_run("norm_modulate", test_norm_modulate);
    lp_test_run("rms_norm_rope", test_rms_norm_rope);
    lp_test_run("residual_norm_modulate", test_residual_norm_modulate);
    lp_test_run("silu", test_silu);
    lp_test_run("add", test_add);
    lp_test_run("kv_store", test_kv_store);
    lp_test_run("patchify", test_patchify);
    lp_test_run("edit_ops", test_edit_ops);
    lp_test_run("errors", test_errors);
    lp_test_run("graphs", test_graphs);
    lp_test_run("timing", test_timing);
    lp_backend_destroy(gpu);
    lp_backend_destroy(cpu);
    lp_test_kept_free();
    return lp_test_finish();
}
