/* CPU-vs-CUDA parity of every op of the backend table (backend.h): each case
 * runs the CPU backend (lp_backend_cpu_create(2, ...), the reference) and the
 * CUDA backend on the same random inputs, with the CUDA outputs poisoned with
 * NaN bytes beforehand so that an element left unwritten fails, and prints
 * "name rel_l2=... ok|FAIL". Tolerances: 2e-2 for linear and attention (bf16
 * tensor cores), 1e-5 for fp32 ops that use other transcendental
 * implementations than the CPU (norm statistics, GELU, SiLU), 1e-6 for fp32
 * ops computed in the CPU's operation order, 0 for pure data movement, 1e-4
 * for the bf16 KV-cache writes (kv_store, against the CPU's f32 rows rounded
 * to bf16 on the host). Attention also runs over bf16 ranges (uploaded
 * rounded, the CPU reference reading the same rounded values as f32). Every
 * case skips when the CUDA backend is unavailable (built without CUDA, or no
 * usable GPU): the binary then exits 77. Weight views point at host buffers
 * kept alive until both backends are destroyed, one buffer per weight,
 * because the CUDA backend caches device copies by data pointer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/backend/backend.h"
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

/* ---------------------------------------------------------------- linear */

static int linear_case(int64_t M, int64_t K, int64_t N, lp_dtype dt, int bias, uint32_t seed) {
    char name[96];
    snprintf(name, sizeof name, "linear %s M=%lld K=%lld N=%lld%s", lp_dtype_name(dt), (long long)M, (long long)K,
             (long long)N, bias ? " +bias" : "");
    lp_tensor W = weight("W", dt, 2, (int64_t[]){N, K}, seed, 1.0f / sqrtf((float)K), 0.0f);
    lp_tensor b = weight("b", dt, 1, (int64_t[]){N}, seed + 1, 0.5f, 0.0f);
    float *x = random_floats((size_t)(M * K), seed + 2, 1.0f, 0.0f), *y = malloc((size_t)(M * N) * sizeof *y);
    CHECK(W.data && b.data && x && y, "out of memory");
    lp_status s = cpu->linear(cpu, y, x, M, &W, bias ? &b : NULL);
    CHECK(s == LP_OK, "cpu linear: %s", lp_last_error());
    float *dx = lp_test_dev_copy(gpu, x, (size_t)(M * K)), *dy = lp_test_dev_poison(gpu, (size_t)(M * N));
    int fail = 1;
    if (dx && dy && lp_test_status_ok(name, gpu->linear(gpu, dy, dx, M, &W, bias ? &b : NULL)))
        fail = lp_test_dev_compare(gpu, name, dy, y, (size_t)(M * N), 2e-2);
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dy);
    free(x);
    free(y);
    return fail;
}

static int test_linear(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += linear_case(1, 1536, 8960, LP_BF16, 1, 100);
    fails += linear_case(37, 128, 1536, LP_F16, 0, 110);
    fails += linear_case(37, 8960, 1536, LP_F32, 1, 120);
    fails += linear_case(4680, 1536, 1536, LP_BF16, 1, 130);
    fails += linear_case(512, 4096, 1536, LP_BF16, 1, 140);
    fails += linear_case(4680, 1536, 64, LP_F32, 1, 150);
    fails += linear_case(1, 256, 1536, LP_F32, 1, 160);
    fails += linear_case(37, 100, 77, LP_F32, 1, 170);
    fails += linear_case(5, 33, 17, LP_F16, 0, 180);
    fails += linear_case(300, 1000, 300, LP_BF16, 1, 190);
    return fails ? 1 : 0;
}

/* --------------------------------------------------------------- norms */

/* LayerNorm (rms = 0; affine when wdt >= 0, weight and bias stored as wdt)
 * or RMSNorm (rms = 1, weight stored as wdt, always in place) on rows × dim
 * values around `offset`, in place or into a poisoned buffer. */
static int norm_case(int rms, int64_t rows, int64_t dim, int wdt, int in_place, float offset, uint32_t seed) {
    char name[96];
    in_place |= rms;
    snprintf(name, sizeof name, "%s %lldx%lld%s%s%s", rms ? "rms_norm" : "layer_norm", (long long)rows,
             (long long)dim, wdt < 0 ? " no-affine" : " ", wdt < 0 ? "" : lp_dtype_name((lp_dtype)wdt),
             in_place ? " in-place" : "");
    size_t n = (size_t)(rows * dim);
    lp_tensor w = {0}, b = {0};
    if (wdt >= 0) {
        w = weight("w", (lp_dtype)wdt, 1, (int64_t[]){dim}, seed, 0.5f, 1.0f);
        b = weight("b", (lp_dtype)wdt, 1, (int64_t[]){dim}, seed + 1, 0.5f, 0.0f);
        CHECK(w.data && b.data, "out of memory");
    }
    const lp_tensor *pw = wdt >= 0 ? &w : NULL, *pb = wdt >= 0 ? &b : NULL;
    float *x = random_floats(n, seed + 2, 2.0f, offset), *y = malloc(n * sizeof *y);
    CHECK(x && y, "out of memory");
    float *dx = lp_test_dev_copy(gpu, x, n), *dy = in_place ? dx : lp_test_dev_poison(gpu, n);
    float eps = 1e-6f;
    if (rms) {
        memcpy(y, x, n * sizeof *y);
        cpu->rms_norm(cpu, y, rows, dim, pw, eps);
        if (dx) gpu->rms_norm(gpu, dx, rows, dim, pw, eps);
    } else {
        cpu->layer_norm(cpu, y, x, rows, dim, pw, pb, eps);
        if (dx && dy) gpu->layer_norm(gpu, dy, dx, rows, dim, pw, pb, eps);
    }
    int fail = lp_test_dev_compare(gpu, name, dy, y, n, 1e-5);
    if (dy != dx) lp_test_dev_free(gpu, dy);
    lp_test_dev_free(gpu, dx);
    free(x);
    free(y);
    return fail;
}

static int test_layer_norm(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += norm_case(0, 4680, 1536, -1, 0, 4.0f, 200);
    fails += norm_case(0, 4680, 1536, LP_F32, 1, 0.0f, 210);
    fails += norm_case(0, 37, 1536, LP_BF16, 0, -3.0f, 220);
    fails += norm_case(0, 37, 5000, LP_F32, 0, 1.0f, 230);
    fails += norm_case(0, 37, 77, LP_F32, 0, 2.0f, 240);
    fails += norm_case(0, 3, 4096, -1, 1, 0.5f, 250);
    fails += norm_case(0, 1, 8, LP_F16, 0, 0.0f, 260);
    return fails ? 1 : 0;
}

static int test_rms_norm(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += norm_case(1, 4680, 1536, LP_F32, 1, 0.0f, 300);
    fails += norm_case(1, 512, 1536, LP_BF16, 1, 0.5f, 310);
    fails += norm_case(1, 37, 3000, LP_F32, 1, 0.0f, 320);
    fails += norm_case(1, 37, 77, LP_BF16, 1, 0.0f, 330);
    return fails ? 1 : 0;
}

/* ------------------------------------------------ modulate and gated add */

static int modulate_case(int64_t rows, int64_t dim, uint32_t seed) {
    char name[96];
    snprintf(name, sizeof name, "modulate %lldx%lld", (long long)rows, (long long)dim);
    size_t n = (size_t)(rows * dim);
    float *x = random_floats(n, seed, 2.0f, 0.0f), *sh = random_floats((size_t)dim, seed + 1, 1.0f, 0.0f),
          *sc = random_floats((size_t)dim, seed + 2, 1.0f, 0.0f);
    CHECK(x && sh && sc, "out of memory");
    float *dx = lp_test_dev_copy(gpu, x, n), *dsh = lp_test_dev_copy(gpu, sh, (size_t)dim);
    float *dsc = lp_test_dev_copy(gpu, sc, (size_t)dim);
    cpu->modulate(cpu, x, rows, dim, sh, sc);
    if (dx && dsh && dsc) gpu->modulate(gpu, dx, rows, dim, dsh, dsc);
    int fail = lp_test_dev_compare(gpu, name, dx, x, n, 1e-6);
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dsh);
    lp_test_dev_free(gpu, dsc);
    free(x);
    free(sh);
    free(sc);
    return fail;
}

static int gated_add_case(int64_t rows, int64_t dim, int gated, uint32_t seed) {
    char name[96];
    snprintf(name, sizeof name, "gated_add %lldx%lld%s", (long long)rows, (long long)dim, gated ? "" : " no-gate");
    size_t n = (size_t)(rows * dim);
    float *x = random_floats(n, seed, 2.0f, 0.0f), *y = random_floats(n, seed + 1, 2.0f, 0.0f),
          *g = random_floats((size_t)dim, seed + 2, 1.0f, 0.0f);
    CHECK(x && y && g, "out of memory");
    float *dx = lp_test_dev_copy(gpu, x, n), *dy = lp_test_dev_copy(gpu, y, n);
    float *dg = lp_test_dev_copy(gpu, g, (size_t)dim);
    cpu->gated_add(cpu, x, y, rows, dim, gated ? g : NULL);
    if (dx && dy && dg) gpu->gated_add(gpu, dx, dy, rows, dim, gated ? dg : NULL);
    int fail = lp_test_dev_compare(gpu, name, dx, x, n, 1e-6);
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dy);
    lp_test_dev_free(gpu, dg);
    free(x);
    free(y);
    free(g);
    return fail;
}

static int test_modulate_gated_add(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += modulate_case(1560, 1536, 400);
    fails += modulate_case(5, 77, 410);
    fails += gated_add_case(1560, 1536, 1, 420);
    fails += gated_add_case(37, 1536, 0, 430);
    fails += gated_add_case(5, 77, 1, 440);
    fails += gated_add_case(5, 77, 0, 450);
    return fails ? 1 : 0;
}

/* ------------------------------------------------ activations and add */

/* op 0: gelu_tanh, 1: silu, on n values starting `skew` floats past an
 * aligned buffer (skew 1 takes the unaligned path). */
static int activation_case(int op, size_t n, size_t skew, uint32_t seed) {
    char name[96];
    snprintf(name, sizeof name, "%s n=%zu%s", op ? "silu" : "gelu_tanh", n, skew ? " unaligned" : "");
    float *x = random_floats(n + skew, seed, 8.0f, 0.0f);
    CHECK(x, "out of memory");
    float *dx = lp_test_dev_copy(gpu, x, n + skew);
    if (op) cpu->silu(cpu, x + skew, (int64_t)n);
    else cpu->gelu_tanh(cpu, x + skew, (int64_t)n);
    if (dx && op) gpu->silu(gpu, dx + skew, (int64_t)n);
    else if (dx) gpu->gelu_tanh(gpu, dx + skew, (int64_t)n);
    int fail = lp_test_dev_compare(gpu, name, dx, x, n + skew, 1e-5);
    lp_test_dev_free(gpu, dx);
    free(x);
    return fail;
}

static int test_activations(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += activation_case(0, 1000003, 0, 500);
    fails += activation_case(0, 100001, 1, 510);
    fails += activation_case(1, 1000003, 0, 520);
    fails += activation_case(1, 4607, 1, 530);
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

/* ----------------------------------------------------------------- RoPE */

static int rope_case(int64_t rows, int heads, int hd, int max_frame, uint32_t seed) {
    char name[96];
    snprintf(name, sizeof name, "rope3d rows=%lld heads=%d head_dim=%d", (long long)rows, heads, hd);
    size_t n = (size_t)rows * (size_t)heads * (size_t)hd;
    float *x = random_floats(n, seed, 2.0f, 0.0f);
    int32_t *pos = malloc((size_t)rows * 3 * sizeof *pos);
    CHECK(x && pos, "out of memory");
    uint32_t s = seed;
    for (int64_t r = 0; r < rows; r++) {
        pos[r * 3] = (int32_t)(rng(&s) % (uint32_t)max_frame);
        pos[r * 3 + 1] = (int32_t)(rng(&s) % 30);
        pos[r * 3 + 2] = (int32_t)(rng(&s) % 52);
    }
    float *dx = lp_test_dev_copy(gpu, x, n);
    cpu->rope3d(cpu, x, rows, heads, hd, pos);
    if (dx) gpu->rope3d(gpu, dx, rows, heads, hd, pos);
    int fail = lp_test_dev_compare(gpu, name, dx, x, n, 1e-6);
    lp_test_dev_free(gpu, dx);
    free(x);
    free(pos);
    return fail;
}

static int test_rope3d(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += rope_case(4680, 12, 128, 21, 700);
    fails += rope_case(300, 4, 96, 5000, 710);
    fails += rope_case(300, 4, 64, 100, 720);
    fails += rope_case(301, 3, 48, 21, 730);
    return fails ? 1 : 0;
}

/* ------------------------------------------------------------- kv_store */

/* kv_store of random rows (rotated at random positions, or not) into a
 * poisoned bf16 buffer, against the CPU's f32 kv_store (copy + rope3d)
 * rounded to bf16 on the host: both round the same f32 values to nearest
 * even, so only the rare f32 RoPE result 1 ulp away from the CPU's that
 * crosses a bf16 rounding boundary may differ. */
static int kv_store_case(int64_t rows, int heads, int hd, int rotate, uint32_t seed) {
    char name[96];
    snprintf(name, sizeof name, "kv_store rows=%lld heads=%d head_dim=%d %s", (long long)rows, heads, hd,
             rotate ? "rotated" : "plain");
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
    CHECK(cpu->kv_store(cpu, want, x, rows, heads, hd, p) == LP_OK, "cpu kv_store: %s", lp_last_error());
    for (size_t i = 0; i < n; i++) want[i] = lp_bf16_to_f32(lp_f32_to_bf16(want[i]));
    float *dx = lp_test_dev_copy(gpu, x, n), *dd = lp_test_dev_poison(gpu, (n + 1) / 2); /* NaN bf16 pairs */
    int fail = 1;
    if (dx && dd && lp_test_status_ok(name, gpu->kv_store(gpu, dd, dx, rows, heads, hd, p)))
        fail = dev_compare_bf16(gpu, name, dd, want, n, 1e-4);
    lp_test_dev_free(gpu, dx);
    lp_test_dev_free(gpu, dd);
    free(x);
    free(want);
    free(pos);
    return fail;
}

static int test_kv_store(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    CHECK(gpu->kv_bf16 == 1, "the CUDA KV cache should be bf16 (kv_bf16 %d)", gpu->kv_bf16);
    fails += kv_store_case(4680, 12, 128, 1, 1200);
    fails += kv_store_case(4680, 12, 128, 0, 1210);
    fails += kv_store_case(301, 3, 48, 1, 1220);
    fails += kv_store_case(300, 4, 96, 1, 1230);
    fails += kv_store_case(77, 3, 64, 0, 1240); /* 14784 elements: the vector path */
    fails += kv_store_case(7, 1, 18, 0, 1250);  /* 126: a scalar tail */
    return fails ? 1 : 0;
}

/* ------------------------------------------------------------ attention */

typedef struct {
    int heads, hd;
    int64_t Lq, n0, n1; /* n1 = 0 and n0 > 0: one range */
    int fused;          /* K and V interleaved in one buffer, ld = 2·heads·hd (+ pad) */
    int large;          /* logits ≈ ±90 + O(1): q[.,h,0] = ±1024, k[.,h,0] = 1 */
    int bf16;           /* bit r: range r is stored bf16 (the CPU reference gets the same rounded values) */
    int pad;            /* ld = heads·hd (or twice that, fused) + pad elements */
} attn_case;

static int attention_case(const attn_case *c, uint32_t seed) {
    char name[160], ranges[40];
    int nr = c->n1 || !c->n0 ? 2 : 1;
    if (nr == 2) snprintf(ranges, sizeof ranges, " (2 ranges %lld+%lld)", (long long)c->n0, (long long)c->n1);
    else ranges[0] = 0;
    static const char *types[] = {"", " bf16+f32", " f32+bf16", " bf16"};
    int64_t D = (int64_t)c->heads * c->hd, ld = (c->fused ? 2 * D : D) + c->pad;
    snprintf(name, sizeof name, "attention h=%d hd=%d Lq=%lld Lk=%lld%s%s%s%s", c->heads, c->hd, (long long)c->Lq,
             (long long)(c->n0 + c->n1), ranges, c->fused ? " fused-kv" : "", c->large ? " large-logits" : "",
             nr == 1 && c->bf16 ? " bf16" : types[c->bf16 & 3]);
    if (c->pad) snprintf(name + strlen(name), sizeof name - strlen(name), " ld+%d", c->pad);
    int64_t nk[2] = {c->n0, c->n1};
    size_t nq = (size_t)(c->Lq * D);
    float *q = random_floats(nq, seed, 1.0f, 0.0f), *out = malloc(nq * sizeof *out);
    CHECK(q && out, "out of memory");
    float *hk[2] = {NULL, NULL}, *hv[2] = {NULL, NULL};
    void *dk[2] = {NULL, NULL}, *dv[2] = {NULL, NULL};
    lp_kv_range hr[2], dr[2];
    int ok = 1;
    if (c->large)
        for (int64_t i = 0; i < c->Lq; i++)
            for (int h = 0; h < c->heads; h++) q[i * D + (int64_t)h * c->hd] = h % 2 ? -1024.0f : 1024.0f;
    for (int r = 0; r < nr; r++) {
        size_t n = (size_t)(nk[r] * ld);
        int b16 = (c->bf16 >> r) & 1;
        hr[r] = dr[r] = (lp_kv_range){NULL, NULL, 0, ld, b16};
        hr[r].bf16 = 0;
        if (!nk[r]) continue; /* an empty range */
        hk[r] = random_floats(n, seed + 10 + (uint32_t)r, 1.0f, 0.0f);
        hv[r] = c->fused ? NULL : random_floats(n, seed + 20 + (uint32_t)r, 1.0f, 0.0f);
        CHECK(hk[r] && (c->fused || hv[r]), "out of memory");
        if (c->large)
            for (int64_t i = 0; i < nk[r]; i++)
                for (int h = 0; h < c->heads; h++) hk[r][i * ld + (int64_t)h * c->hd] = 1.0f;
        dk[r] = b16 ? dev_bf16(gpu, hk[r], n) : lp_test_dev_copy(gpu, hk[r], n);
        dv[r] = c->fused ? NULL : b16 ? dev_bf16(gpu, hv[r], n) : lp_test_dev_copy(gpu, hv[r], n);
        ok &= dk[r] && (c->fused || dv[r]);
        /* fused: v of row i follows its k at offset D in the same row */
        hr[r].k = hk[r];
        hr[r].v = c->fused ? hk[r] + D : hv[r];
        hr[r].n = dr[r].n = nk[r];
        dr[r].k = dk[r];
        dr[r].v = c->fused ? (dk[r] ? (const char *)dk[r] + D * (b16 ? 2 : 4) : NULL) : dv[r];
    }
    float scale = 1.0f / sqrtf((float)c->hd);
    lp_status s = cpu->attention(cpu, out, q, c->Lq, c->heads, c->hd, hr, nr, scale);
    CHECK(s == LP_OK, "cpu attention: %s", lp_last_error());
    float *dq = lp_test_dev_copy(gpu, q, nq), *dout = lp_test_dev_poison(gpu, nq);
    int fail = 1;
    if (ok && dq && dout &&
        lp_test_status_ok(name, gpu->attention(gpu, dout, dq, c->Lq, c->heads, c->hd, dr, nr, scale)))
        fail = lp_test_dev_compare(gpu, name, dout, out, nq, 2e-2);
    lp_test_dev_free(gpu, dq);
    lp_test_dev_free(gpu, dout);
    for (int r = 0; r < nr; r++) {
        lp_test_dev_free(gpu, dk[r]);
        lp_test_dev_free(gpu, dv[r]);
        free(hk[r]);
        free(hv[r]);
    }
    free(q);
    free(out);
    return fail;
}

static int test_attention(void) {
    if (!gpu) return no_gpu;
    static const attn_case cases[] = {
        {12, 128, 100, 512, 0, 0, 0, 0, 0},     /* cross-attention shape */
        {2, 128, 4680, 4680, 6240, 0, 0, 0, 0}, /* self-attention over a 7-frame window */
        {3, 64, 1, 77, 0, 0, 0, 0, 0},
        {4, 48, 100, 1, 0, 0, 0, 0, 0},
        {2, 96, 100, 1, 511, 0, 0, 0, 0},
        {2, 64, 4680, 4680, 0, 1, 0, 0, 0},
        {2, 128, 100, 512, 0, 0, 1, 0, 0},
        {2, 48, 37, 300, 77, 0, 1, 0, 0},
        {1, 128, 1, 10920, 0, 0, 0, 0, 0},
        /* bf16 ranges read in place (the CUDA KV cache): range boundaries and
         * the end inside a key tile, row strides past heads·hd */
        {12, 128, 100, 512, 0, 0, 0, 1, 0},
        {2, 128, 4680, 4680, 6240, 0, 0, 3, 0},
        {3, 64, 300, 77, 130, 0, 0, 3, 8},
        {4, 48, 100, 1, 0, 0, 0, 1, 16},
        {2, 96, 100, 1, 511, 0, 0, 3, 8},
        {2, 128, 37, 0, 300, 0, 0, 3, 0},       /* range 0 empty */
        {2, 64, 4680, 4680, 0, 1, 0, 1, 8},     /* K and V interleaved */
        {2, 128, 100, 512, 0, 0, 1, 1, 0},
        {2, 48, 37, 300, 77, 0, 1, 3, 24},
        {1, 128, 1, 10920, 0, 0, 0, 1, 0},
        /* one range of each type */
        {2, 128, 200, 300, 333, 0, 0, 1, 0},
        {3, 96, 200, 300, 333, 0, 0, 2, 8},
    };
    int fails = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        fails += attention_case(&cases[i], 800 + 30 * (uint32_t)i);
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

/* copy_rows from src [S rows] into dst [Dn rows] (both `row` floats wide),
 * n rows; destination rows distinct, so the result is order-independent. */
static int copy_rows_case(int64_t n, int64_t row, int with_dst, int with_src, uint32_t seed) {
    char name[96];
    snprintf(name, sizeof name, "copy_rows n=%lld row=%lld dst_idx=%s src_idx=%s", (long long)n, (long long)row,
             with_dst ? "yes" : "NULL", with_src ? "yes" : "NULL");
    const int64_t S = 2000, Dn = 2500;
    float *src = random_floats((size_t)(S * row), seed, 1.0f, 0.0f), *dst = random_floats((size_t)(Dn * row), seed + 1,
                                                                                           1.0f, 0.0f);
    int32_t *di = random_subset(n, Dn, seed + 2), *si = malloc((size_t)n * sizeof *si);
    CHECK(src && dst && di && si, "out of memory");
    uint32_t s = seed + 3;
    for (int64_t i = 0; i < n; i++) si[i] = (int32_t)(rng(&s) % (uint32_t)S); /* repeats allowed */
    float *dsrc = lp_test_dev_copy(gpu, src, (size_t)(S * row)), *ddst = lp_test_dev_copy(gpu, dst, (size_t)(Dn * row));
    lp_status st = cpu->copy_rows(cpu, dst, with_dst ? di : NULL, src, with_src ? si : NULL, n, row);
    CHECK(st == LP_OK, "cpu copy_rows: %s", lp_last_error());
    int fail = 1;
    if (dsrc && ddst &&
        lp_test_status_ok(name, gpu->copy_rows(gpu, ddst, with_dst ? di : NULL, dsrc, with_src ? si : NULL, n, row)))
        fail = lp_test_dev_compare(gpu, name, ddst, dst, (size_t)(Dn * row), 0.0);
    lp_test_dev_free(gpu, dsrc);
    lp_test_dev_free(gpu, ddst);
    free(src);
    free(dst);
    free(di);
    free(si);
    return fail;
}

static int test_copy_rows(void) {
    if (!gpu) return no_gpu;
    int fails = 0;
    fails += copy_rows_case(1000, 1536, 1, 1, 900);
    fails += copy_rows_case(1000, 1536, 1, 0, 910);
    fails += copy_rows_case(1000, 1536, 0, 1, 920);
    fails += copy_rows_case(1999, 1536, 0, 0, 930);
    fails += copy_rows_case(777, 77, 1, 1, 940);
    fails += copy_rows_case(5, 3, 0, 1, 950);
    return fails ? 1 : 0;
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

/* Argument checks of the CUDA data-movement ops (the CPU ones trust their caller). */
static int test_errors(void) {
    if (!gpu) return no_gpu;
    float *d = gpu->alloc(gpu, 4096 * sizeof(float));
    CHECK(d, "alloc: %s", lp_last_error());
    int32_t bad[2] = {1, -1};
    lp_status s1 = gpu->copy_rows(gpu, d, bad, d + 2048, NULL, 2, 16);
    lp_status s2 = gpu->patchify(gpu, d, d + 2048, NULL, 1, 4, 5, 4);
    lp_status s3 = gpu->unpatchify(gpu, d, d + 2048, bad, 2, 1, 2, 2);
    /* a bf16 range whose rows are not 16-byte multiples (ld 132), rotated
     * rows of an odd head_dim, rotated rows into misaligned cache rows */
    int32_t pos[3] = {1, 2, 3};
    lp_kv_range r = {d, d + 1024, 4, 132, 1};
    lp_status s5 = gpu->attention(gpu, d + 2048, d + 3072, 2, 2, 64, &r, 1, 0.125f);
    lp_status s6 = gpu->kv_store(gpu, d, d + 2048, 1, 1, 17, pos);
    lp_status s7 = gpu->kv_store(gpu, (char *)d + 2, d + 2048, 1, 1, 16, pos);
    /* a valid op afterwards still works (argument errors are not sticky) */
    lp_status s4 = gpu->copy_rows(gpu, d, NULL, d + 2048, NULL, 2, 16);
    gpu->release(gpu, d);
    printf("    copy_rows negative index -> %s, patchify odd H -> %s, unpatchify negative index -> %s, then %s\n",
           lp_status_name(s1), lp_status_name(s2), lp_status_name(s3), lp_status_name(s4));
    printf("    attention bf16 ld 132 -> %s, kv_store rotated head_dim 17 -> %s, misaligned -> %s\n",
           lp_status_name(s5), lp_status_name(s6), lp_status_name(s7));
    CHECK(s1 == LP_ERR_ARG && s2 == LP_ERR_ARG && s3 == LP_ERR_ARG && s4 == LP_OK, "unexpected statuses");
    CHECK(s5 == LP_ERR_ARG && s6 == LP_ERR_ARG && s7 == LP_ERR_ARG, "unexpected statuses");
    return 0;
}

/* ---------------------------------------------------------------- timing */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Host wall time of a few DiT-sized ops after synchronize (informational). */
static int test_timing(void) {
    if (!gpu) return no_gpu;
    const int64_t T = 4680, D = 1536, FF = 8960, Lk = 10920;
    const int heads = 12, hd = 128, reps = 10;
    lp_tensor W = weight("ffn.0.weight", LP_BF16, 2, (int64_t[]){FF, D}, 1100, 0.03f, 0.0f);
    lp_tensor b = weight("ffn.0.bias", LP_BF16, 1, (int64_t[]){FF}, 1101, 0.1f, 0.0f);
    int32_t *pos = malloc((size_t)T * 3 * sizeof *pos);
    float *x = gpu->alloc(gpu, (size_t)(T * D) * sizeof(float));
    float *h = gpu->alloc(gpu, (size_t)(T * FF) * sizeof(float));
    float *k = gpu->alloc(gpu, (size_t)(Lk * D) * sizeof(float));
    float *v = gpu->alloc(gpu, (size_t)(Lk * D) * sizeof(float));
    float *o = gpu->alloc(gpu, (size_t)(T * D) * sizeof(float));
    void *kb = gpu->alloc(gpu, (size_t)(Lk * D) * 2), *vb = gpu->alloc(gpu, (size_t)(Lk * D) * 2); /* bf16 cache */
    int ok = W.data && b.data && pos && x && h && k && v && o && kb && vb;
    if (ok) {
        for (int64_t i = 0; i < T; i++) {
            pos[i * 3] = (int32_t)(i / 1560);
            pos[i * 3 + 1] = (int32_t)(i % 1560 / 52);
            pos[i * 3 + 2] = (int32_t)(i % 52);
        }
        lp_kv_range r = {k, v, Lk, D, 0}, rb = {kb, vb, Lk, D, 1};
        for (int op = 0; op < 7 && ok; op++) {
            static const char *names[] = {"layer_norm 4680x1536",
                                          "rope3d 4680x12x128",
                                          "gelu_tanh 4680x8960",
                                          "kv_store 4680x12x128 rotated",
                                          "linear bf16 4680x1536 -> 8960",
                                          "attention 12x128 Lq=4680 Lk=10920 f32",
                                          "attention 12x128 Lq=4680 Lk=10920 bf16"};
            double t0 = 0;
            for (int rep = 0; rep <= reps && ok; rep++) {
                if (rep == 1) { /* the first run warms up (weight upload, algorithm choice) */
                    gpu->synchronize(gpu);
                    t0 = now_s();
                }
                switch (op) {
                case 0: gpu->layer_norm(gpu, o, x, T, D, NULL, NULL, 1e-6f); break;
                case 1: gpu->rope3d(gpu, x, T, heads, hd, pos); break;
                case 2: gpu->gelu_tanh(gpu, h, T * FF); break;
                case 3: ok = gpu->kv_store(gpu, kb, x, T, heads, hd, pos) == LP_OK; break;
                case 4: ok = gpu->linear(gpu, h, x, T, &W, &b) == LP_OK; break;
                case 5: ok = gpu->attention(gpu, o, x, T, heads, hd, &r, 1, 0.088f) == LP_OK; break;
                default: ok = gpu->attention(gpu, o, x, T, heads, hd, &rb, 1, 0.088f) == LP_OK; break;
                }
            }
            gpu->synchronize(gpu);
            double ms = 1e3 * (now_s() - t0) / reps;
            double work[] = {2.0 * T * D * 4, 2.0 * T * D * 4, 2.0 * T * FF * 4, 6.0 * T * D, 2.0 * T * D * FF,
                             4.0 * T * Lk * D, 4.0 * T * Lk * D};
            if (ok)
                printf("    %-40s %8.3f ms  %8.1f %s\n", names[op], ms, work[op] / (ms * 1e-3) / 1e9,
                       op < 4 ? "GB/s" : "GFLOP/s");
        }
        if (!ok) printf("    timing: %s\n", lp_last_error());
    }
    lp_test_dev_free(gpu, x);
    lp_test_dev_free(gpu, h);
    lp_test_dev_free(gpu, k);
    lp_test_dev_free(gpu, v);
    lp_test_dev_free(gpu, o);
    lp_test_dev_free(gpu, kb);
    lp_test_dev_free(gpu, vb);
    free(pos);
    CHECK(ok, "timing runs failed");
    return 0;
}

int main(void) {
    no_gpu = lp_test_cuda_backends(&gpu, &cpu);
    lp_test_run("memory", test_memory);
    lp_test_run("linear", test_linear);
    lp_test_run("layer_norm", test_layer_norm);
    lp_test_run("rms_norm", test_rms_norm);
    lp_test_run("modulate_gated_add", test_modulate_gated_add);
    lp_test_run("activations", test_activations);
    lp_test_run("add", test_add);
    lp_test_run("rope3d", test_rope3d);
    lp_test_run("kv_store", test_kv_store);
    lp_test_run("attention", test_attention);
    lp_test_run("copy_rows", test_copy_rows);
    lp_test_run("patchify", test_patchify);
    lp_test_run("errors", test_errors);
    lp_test_run("timing", test_timing);
    lp_backend_destroy(gpu);
    lp_backend_destroy(cpu);
    lp_test_kept_free();
    return lp_test_finish();
}
