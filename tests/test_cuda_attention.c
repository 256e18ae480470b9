/* The CUDA attention op against the CPU backend, with each of its kernels:
 * the mma.sync kernel (head_dim 48, 64, 96, 128) and, on a device of compute
 * capability 9.0, the wgmma kernel (head_dim 128), chosen through
 * lp_cuda_attention_with. Inputs are random values that bf16 holds exactly
 * (so that the CPU's f32 reference sees what the GPU reads), q and out bf16
 * on the GPU (the backend's activation type), the GPU output poisoned with
 * NaN beforehand; tolerance relative L2 2e-2 (bf16 P in the second product).
 * Keys come in one or two ranges, each f32 or bf16: bf16 ranges are written
 * by kv_store (the CUDA KV cache) or uploaded with a padded row stride. The
 * shapes cover Lq and Lk not multiples of any tile, Lq = 1, an empty range,
 * a tile straddling the two ranges (for the wgmma kernel: a partial tile in
 * the middle), range 0 of whole tiles, an f32 range of one row, several
 * waves with a split last wave, a launch made only of split units, the
 * text-attention shape (Lk 512), logits rising along the keys (the running
 * max grows, O is rescaled) and large logits. On a failure the first
 * mismatching (row, head, dim) is printed. With the environment variable
 * LIPAR_TIMING set, the timing case prints ms and TFLOP/s (4·Lq·Lk·heads·hd
 * flops) of each kernel on the DiT's shapes. Every case skips when the CUDA
 * backend is unavailable (the binary then exits 77). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/backend/backend.h"
#include "../src/base/clock.h"
#include "../src/base/half.h"
#ifdef LP_HAVE_CUDA
#include "../src/backend/cuda/attention.h"
#endif
#include "test_util.h"

static lp_backend *cpu, *gpu;
static int no_gpu;   /* what each case returns without the CUDA backend */
static int have_wg;  /* whether the wgmma kernel runs on this device */

enum { K_AUTO, K_MMA, K_WGMMA };
static const char *const kernel_names[] = {"auto", "mma", "wgmma"};

/* The CUDA attention with the given kernel (auto: the environment's
 * choice). */
static lp_status run_attention(int kernel, void *out, const void *q, int64_t Lq, int heads, int hd,
                               const lp_kv_range *r, int nr, float scale) {
#ifdef LP_HAVE_CUDA
    const lp_cuda_att_kernel k =
        kernel == K_MMA ? LP_CUDA_ATT_MMA : kernel == K_WGMMA ? LP_CUDA_ATT_WGMMA : LP_CUDA_ATT_AUTO;
    return lp_cuda_attention_with(gpu, k, out, q, Lq, heads, hd, r, nr, scale);
#else
    (void)kernel, (void)out, (void)q, (void)Lq, (void)heads, (void)hd, (void)r, (void)nr, (void)scale;
    return lp_fail(LP_ERR_UNSUPPORTED, "built without CUDA");
#endif
}

/* n random values in [-scale, scale) rounded to bf16 (malloc'd). */
static float *random_bf16_values(size_t n, uint32_t seed, float scale) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    if (!x) return NULL;
    lp_test_fill(x, n, seed, scale);
    for (size_t i = 0; i < n; i++) x[i] = lp_bf16_to_f32(lp_f32_to_bf16(x[i]));
    return x;
}

/* A GPU buffer holding the n values of h as bf16 (h holds bf16 values); NULL
 * on failure (message printed). */
static void *dev_bf16(const float *h, size_t n) {
    uint16_t *b = malloc((n ? n : 1) * sizeof *b);
    void *d = b ? gpu->alloc(gpu, (n ? n : 1) * sizeof *b) : NULL;
    lp_status s = LP_ERR_NOMEM;
    if (d) {
        for (size_t i = 0; i < n; i++) b[i] = lp_f32_to_bf16(h[i]);
        s = gpu->upload(gpu, d, b, n * sizeof *b);
    }
    free(b);
    if (s == LP_OK) return d;
    printf("    bf16 buffer of %zu elements: %s\n", n, lp_last_error());
    if (d) gpu->release(gpu, d);
    return NULL;
}

/* Cache rows [0, rows) of cache from the f32 rows of src, as the DiT writes
 * values (kv_store without indices or rotation). */
static lp_status store_rows(void *cache, const float *src, int64_t rows, int heads, int hd) {
    return gpu->kv_store(gpu, cache, NULL, src, NULL, NULL, rows, heads, hd, NULL);
}

/* Fills the n bf16 elements of d with NaN bytes. */
static lp_status dev_poison_bf16(void *d, size_t n) {
    uint16_t *b = malloc((n ? n : 1) * sizeof *b);
    if (!b) return LP_ERR_NOMEM;
    memset(b, 0xff, n * sizeof *b);
    lp_status s = gpu->upload(gpu, d, b, n * sizeof *b);
    free(b);
    return s;
}

/* Downloads the GPU output d (bf16 [Lq, heads·hd]) and compares it with want:
 * prints "name rel_l2=... ok|FAIL"; on a failure also the first element off
 * by more than a tenth of want's RMS (or non-finite), and how many elements
 * and rows are. Returns 0 when ok. */
static int compare_out(const char *name, const void *d, const float *want, int64_t Lq, int heads, int hd,
                       double tol) {
    const size_t D = (size_t)heads * (size_t)hd, n = (size_t)Lq * D;
    uint16_t *b = malloc((n ? n : 1) * sizeof *b);
    float *got = malloc((n ? n : 1) * sizeof *got);
    lp_status s = b && got ? gpu->download(gpu, b, d, n * sizeof *b) : LP_ERR_NOMEM;
    double err = INFINITY, ms = 0;
    size_t nonfinite = 0;
    if (s == LP_OK) {
        for (size_t i = 0; i < n; i++) {
            got[i] = lp_bf16_to_f32(b[i]);
            nonfinite += !isfinite(got[i]);
            ms += (double)want[i] * want[i];
        }
        err = lp_rel_l2(got, want, n);
    }
    const int ok = s == LP_OK && nonfinite == 0 && err <= tol;
    printf("    %-*s rel_l2=%.3e (tol %.0e) %s", LP_TEST_NAME_WIDTH, name, err, tol, ok ? "ok" : "FAIL");
    if (s != LP_OK) printf(" [%s: %s]", lp_status_name(s), lp_last_error());
    if (nonfinite) printf(" [%zu non-finite]", nonfinite);
    printf("\n");
    if (!ok && s == LP_OK) {
        const double lim = 0.1 * sqrt(ms / (double)(n ? n : 1));
        size_t bad = 0, bad_rows = 0, first = n;
        int64_t row_lo = -1, row_hi = -1;
        for (size_t r = 0; r < (size_t)Lq; r++) {
            size_t row_bad = 0;
            for (size_t c = 0; c < D; c++) {
                const size_t i = r * D + c;
                if (fabs((double)got[i] - (double)want[i]) > lim || !isfinite(got[i])) {
                    if (first == n) first = i;
                    row_bad++;
                }
            }
            if (row_bad) {
                bad += row_bad;
                bad_rows++;
                if (row_lo < 0) row_lo = (int64_t)r;
                row_hi = (int64_t)r;
            }
        }
        if (first < n)
            printf("      first mismatch at row %zu head %zu dim %zu: got %.6g, want %.6g; %zu of %zu elements and "
                   "%zu of %lld rows (rows %lld..%lld) off by more than %.3g\n",
                   first / D, first % D / (size_t)hd, first % (size_t)hd, (double)got[first], (double)want[first],
                   bad, n, bad_rows, (long long)Lq, (long long)row_lo, (long long)row_hi, lim);
    }
    free(b);
    free(got);
    return !ok;
}

/* ------------------------------------------------------------ parity */

enum { R_F32, R_STORE, R_BF16 }; /* f32; bf16 written by kv_store (ld = heads·hd); bf16 uploaded (padded ld) */

typedef struct {
    int heads, hd;
    int64_t Lq;
    int nr;             /* 1 or 2 ranges */
    int64_t n[2];       /* keys of each range (0: an empty range) */
    int type[2];        /* R_* of each range */
    int pad;            /* f32 and uploaded bf16 ranges: row stride heads·hd + pad */
    float qmag;         /* q uniform in [-qmag, qmag), k and v in [-1, 1) */
    int shape;          /* 0 random, 1 logits rising along the keys, 2 logits ±90 + O(1) */
    float scale;        /* 0: 1/sqrt(hd) */
    const char *what;
} att_case;

static int attention_case(const att_case *c, uint32_t seed) {
    const int64_t D = (int64_t)c->heads * c->hd, Lk = c->n[0] + c->n[1];
    const float scale = c->scale != 0.f ? c->scale : 1.0f / sqrtf((float)c->hd);
    static const char *tn[] = {"f32", "kv_store", "bf16"};
    char desc[160];
    int len = snprintf(desc, sizeof desc, "h=%d hd=%d Lq=%lld Lk=%lld", c->heads, c->hd, (long long)c->Lq,
                       (long long)Lk);
    for (int r = 0; r < c->nr; r++)
        len += snprintf(desc + len, sizeof desc - (size_t)len, "%s%lld %s", r ? "+" : " (", (long long)c->n[r],
                        tn[c->type[r]]);
    snprintf(desc + len, sizeof desc - (size_t)len, ")%s%s", c->pad ? " ld+pad" : "", c->what ? c->what : "");

    const size_t nq = (size_t)(c->Lq * D);
    float *q = random_bf16_values(nq, seed, c->qmag), *want = malloc((nq ? nq : 1) * sizeof *want);
    CHECK(q && want, "out of memory");
    if (c->shape == 1) /* q·k gains 4·k[., h, 0]·scale: k[i, h, 0] rises to 20/(4·scale), about 20 nats in all */
        for (int64_t i = 0; i < c->Lq; i++)
            for (int h = 0; h < c->heads; h++) q[i * D + (int64_t)h * c->hd] = 4.0f;
    if (c->shape == 2)
        for (int64_t i = 0; i < c->Lq; i++)
            for (int h = 0; h < c->heads; h++) q[i * D + (int64_t)h * c->hd] = h % 2 ? -1024.0f : 1024.0f;

    float *hk[2] = {NULL, NULL}, *hv[2] = {NULL, NULL};
    void *dk[2] = {NULL, NULL}, *dv[2] = {NULL, NULL};
    float *src[2] = {NULL, NULL}; /* f32 device rows that kv_store reads */
    lp_kv_range hr[2], dr[2];
    int ok = 1;
    int64_t key0 = 0; /* keys before this range */
    for (int r = 0; r < c->nr; r++) {
        const int64_t ld = c->type[r] == R_STORE ? D : D + c->pad;
        const size_t n = (size_t)(c->n[r] * ld);
        hr[r] = (lp_kv_range){NULL, NULL, c->n[r], ld, 0};
        dr[r] = (lp_kv_range){NULL, NULL, c->n[r], ld, c->type[r] != R_F32};
        if (!c->n[r]) continue;
        hk[r] = random_bf16_values(n, seed + 10 + (uint32_t)r, 1.0f);
        hv[r] = random_bf16_values(n, seed + 20 + (uint32_t)r, 1.0f);
        CHECK(hk[r] && hv[r], "out of memory");
        for (int64_t i = 0; i < c->n[r]; i++)
            for (int h = 0; h < c->heads; h++) {
                float *k0 = &hk[r][i * ld + (int64_t)h * c->hd];
                if (c->shape == 1)
                    *k0 = lp_bf16_to_f32(lp_f32_to_bf16(20.0f / (4.0f * scale) * (float)(key0 + i) / (float)Lk));
                if (c->shape == 2) *k0 = 1.0f;
            }
        hr[r].k = hk[r];
        hr[r].v = hv[r];
        if (c->type[r] == R_F32) {
            dk[r] = lp_test_dev_copy(gpu, hk[r], n);
            dv[r] = lp_test_dev_copy(gpu, hv[r], n);
        } else if (c->type[r] == R_BF16) {
            dk[r] = dev_bf16(hk[r], n);
            dv[r] = dev_bf16(hv[r], n);
        } else { /* the cache rows as the DiT writes them: kv_store from f32 rows */
            src[r] = lp_test_dev_copy(gpu, hk[r], n);
            dk[r] = gpu->alloc(gpu, n * 2);
            dv[r] = gpu->alloc(gpu, n * 2);
            ok &= src[r] && dk[r] && dv[r] && store_rows(dk[r], src[r], c->n[r], c->heads, c->hd) == LP_OK &&
                  gpu->upload(gpu, src[r], hv[r], n * sizeof(float)) == LP_OK &&
                  store_rows(dv[r], src[r], c->n[r], c->heads, c->hd) == LP_OK;
            if (!ok) printf("    kv_store of range %d: %s\n", r, lp_last_error());
        }
        ok &= dk[r] && dv[r];
        dr[r].k = dk[r];
        dr[r].v = dv[r];
        key0 += c->n[r];
    }
    lp_status s = cpu->attention(cpu, want, q, c->Lq, c->heads, c->hd, hr, c->nr, scale);
    CHECK(s == LP_OK, "cpu attention: %s", lp_last_error());
    void *dq = dev_bf16(q, nq), *dout = gpu->alloc(gpu, (nq ? nq : 1) * 2);
    ok &= dq && dout;

    int fails = 0;
    const int kernels[] = {K_MMA, K_WGMMA, K_AUTO};
    for (int ki = 0; ki < 3; ki++) {
        const int k = kernels[ki];
        /* wgmma where it runs (head_dim 128, scale > 0); auto where it picks
         * by the scale */
        if ((k == K_WGMMA && (c->hd != 128 || !have_wg || !(scale > 0.f))) ||
            (k == K_AUTO && !(scale < 0.f)))
            continue;
        char name[200];
        snprintf(name, sizeof name, "[%s] %s", kernel_names[k], desc);
        if (!ok) {
            printf("    %-*s FAIL (setup)\n", LP_TEST_NAME_WIDTH, name);
            fails++;
            continue;
        }
        if (dev_poison_bf16(dout, nq) != LP_OK ||
            !lp_test_status_ok(name, run_attention(k, dout, dq, c->Lq, c->heads, c->hd, dr, c->nr, scale))) {
            fails++;
            continue;
        }
        fails += compare_out(name, dout, want, c->Lq, c->heads, c->hd, 2e-2);
    }
    if (dq) gpu->release(gpu, dq);
    if (dout) gpu->release(gpu, dout);
    for (int r = 0; r < 2; r++) {
        if (dk[r]) gpu->release(gpu, dk[r]);
        if (dv[r]) gpu->release(gpu, dv[r]);
        lp_test_dev_free(gpu, src[r]);
        free(hk[r]);
        free(hv[r]);
    }
    free(q);
    free(want);
    return fails;
}

static int test_parity(void) {
    if (!gpu) return no_gpu;
    if (!have_wg) printf("    (the wgmma kernel does not run on this device: mma.sync only)\n");
    static const att_case cases[] = {
        /* head_dim 128: both kernels */
        {12, 128, 100, 1, {512, 0}, {R_STORE, 0}, 0, 4.f, 0, 0, " text attention"},
        {12, 128, 100, 1, {512, 0}, {R_F32, 0}, 0, 4.f, 0, 0, NULL},
        {3, 128, 1, 1, {77, 0}, {R_F32, 0}, 0, 4.f, 0, 0, " Lq=1"},
        {3, 128, 1, 2, {1560, 9360}, {R_STORE, R_STORE}, 0, 4.f, 0, 0, " Lq=1"},
        {2, 128, 300, 2, {200, 333}, {R_STORE, R_F32}, 0, 4.f, 0, 0, " tile across the ranges"},
        {2, 128, 200, 2, {300, 333}, {R_BF16, R_F32}, 8, 4.f, 0, 0, NULL},
        {2, 128, 37, 2, {0, 300}, {R_STORE, R_STORE}, 0, 4.f, 0, 0, " range 0 empty"},
        {2, 128, 300, 2, {256, 300}, {R_STORE, R_BF16}, 8, 4.f, 0, 0, " range 0 of whole tiles"},
        {3, 128, 50, 2, {1, 400}, {R_F32, R_STORE}, 0, 4.f, 0, 0, " f32 range of one row"},
        {2, 128, 130, 2, {1000, 650}, {R_F32, R_F32}, 0, 4.f, 0, 0, " f32 ranges, split"},
        {2, 128, 130, 2, {257, 0}, {R_F32, R_STORE}, 0, 4.f, 0, 0, " range 1 empty"},
        {2, 128, 4680, 2, {1560, 9360}, {R_STORE, R_STORE}, 0, 4.f, 0, 0, " self-attention window"},
        {12, 128, 1076, 2, {1560, 9360}, {R_STORE, R_STORE}, 0, 4.f, 0, 0, " split units only"},
        {12, 128, 4680, 1, {1000, 0}, {R_STORE, 0}, 0, 4.f, 0, 0, " waves + split tail"},
        {2, 128, 256, 1, {3000, 0}, {R_STORE, 0}, 0, 1.f, 1, 0, " rising logits"},
        {2, 128, 130, 1, {700, 0}, {R_F32, 0}, 0, 1.f, 2, 0, " large logits"},
        {2, 128, 130, 1, {300, 0}, {R_STORE, 0}, 0, 4.f, 0, -0.05f, " negative scale"},
        /* the other head dims: mma.sync */
        {4, 48, 100, 2, {300, 77}, {R_STORE, R_F32}, 0, 4.f, 0, 0, NULL},
        {2, 48, 37, 2, {0, 300}, {R_F32, R_F32}, 8, 4.f, 0, 0, " range 0 empty"},
        {3, 64, 1, 1, {77, 0}, {R_F32, 0}, 0, 4.f, 0, 0, " Lq=1"},
        {2, 64, 4680, 1, {4680, 0}, {R_STORE, 0}, 0, 4.f, 0, 0, NULL},
        {3, 64, 300, 2, {77, 130}, {R_BF16, R_BF16}, 8, 4.f, 0, 0, NULL},
        {2, 96, 130, 2, {1, 511}, {R_STORE, R_BF16}, 8, 4.f, 0, 0, NULL},
        {2, 96, 256, 1, {3000, 0}, {R_STORE, 0}, 0, 1.f, 1, 0, " rising logits"},
    };
    int fails = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        fails += attention_case(&cases[i], 500 + 40 * (uint32_t)i);
    return fails ? 1 : 0;
}

/* The kernel choice and the requests the wgmma kernel refuses. */
static int test_dispatch(void) {
    if (!gpu) return no_gpu;
#ifdef LP_HAVE_CUDA
    const char *env = getenv("LIPAR_ATTENTION");
    const int forced = env && !strcmp(env, "mma");
    lp_cuda_att_kernel k128 = lp_cuda_attention_auto_kernel(gpu, 128, 0.088f);
    lp_cuda_att_kernel k64 = lp_cuda_attention_auto_kernel(gpu, 64, 0.125f);
    lp_cuda_att_kernel kneg = lp_cuda_attention_auto_kernel(gpu, 128, -0.088f);
    printf("    auto picks %s for head_dim 128 (LIPAR_ATTENTION %s), %s for 64, %s for a negative scale\n",
           kernel_names[k128 == LP_CUDA_ATT_WGMMA ? K_WGMMA : K_MMA], env ? env : "unset",
           kernel_names[k64 == LP_CUDA_ATT_WGMMA ? K_WGMMA : K_MMA],
           kernel_names[kneg == LP_CUDA_ATT_WGMMA ? K_WGMMA : K_MMA]);
    CHECK(k64 == LP_CUDA_ATT_MMA && kneg == LP_CUDA_ATT_MMA, "wgmma picked where it cannot run");
    CHECK(k128 == (have_wg && !forced ? LP_CUDA_ATT_WGMMA : LP_CUDA_ATT_MMA), "unexpected choice for head_dim 128");
    /* forced wgmma where it cannot run */
    void *d = gpu->alloc(gpu, 1 << 16);
    CHECK(d, "alloc: %s", lp_last_error());
    lp_kv_range r = {(char *)d + 8192, (char *)d + 16384, 4, 128, 1};
    lp_status s1 = run_attention(K_WGMMA, d, (char *)d + 4096, 2, 2, 64, &r, 1, 0.125f);
    lp_status s2 = run_attention(K_WGMMA, d, (char *)d + 4096, 2, 1, 128, &r, 1, -0.125f);
    gpu->release(gpu, d);
    printf("    forced wgmma: head_dim 64 -> %s, negative scale -> %s\n", lp_status_name(s1), lp_status_name(s2));
    CHECK(s1 == LP_ERR_UNSUPPORTED && s2 == LP_ERR_UNSUPPORTED, "unexpected statuses");
    return 0;
#else
    return LP_TEST_SKIP;
#endif
}

/* ------------------------------------------------------------ timing */

/* ms per call of `kernel` on q/out with the ranges (after 2 warm-up calls);
 * negative on failure (message printed). */
static double time_kernel(int kernel, void *out, const void *q, int64_t Lq, const lp_kv_range *r, int nr) {
    const int reps = 20;
    double t0 = 0;
    for (int i = 0; i < reps + 2; i++) {
        if (i == 2) {
            gpu->synchronize(gpu);
            t0 = lp_seconds();
        }
        if (run_attention(kernel, out, q, Lq, 12, 128, r, nr, 0.088f) != LP_OK) {
            printf("    timing [%s]: %s\n", kernel_names[kernel], lp_last_error());
            return -1;
        }
    }
    gpu->synchronize(gpu);
    return 1e3 * (lp_seconds() - t0) / reps;
}

/* The DiT's shapes: 12 heads of 128, keys 1560 (sink) + 9360 (window) bf16
 * cache rows, Lq 4680 (a chunk) and 1076 (a pruned chunk); host wall time
 * after synchronize, and the two kernels' outputs compared. */
static int test_timing(void) {
    if (!gpu) return no_gpu;
    if (!getenv("LIPAR_TIMING")) {
        printf("    (set LIPAR_TIMING=1 to run)\n");
        return LP_TEST_SKIP;
    }
    const int heads = 12, hd = 128;
    const int64_t D = heads * hd, n0 = 1560, n1 = 9360, Lk = n0 + n1, Lq_max = 4680;
    float *hq = random_bf16_values((size_t)(Lq_max * D), 77, 4.f), *hkv = random_bf16_values((size_t)(Lk * D), 78, 1.f);
    void *q = hq ? dev_bf16(hq, (size_t)(Lq_max * D)) : NULL, *kv = hkv ? dev_bf16(hkv, (size_t)(Lk * D)) : NULL;
    /* the output of each kernel: mma, wgmma */
    void *out[2];
    for (int i = 0; i < 2; i++) out[i] = gpu->alloc(gpu, (size_t)(Lq_max * D) * 2);
    int fails = 0;
    if (!q || !kv || !out[0] || !out[1]) {
        printf("    timing: setup failed: %s\n", lp_last_error());
        fails++;
    }
    /* K and V of both ranges share one buffer (the values do not matter here) */
    const char *k0 = kv, *k1 = kv ? (const char *)kv + n0 * D * 2 : NULL;
    lp_kv_range r[2] = {{k0, k0, n0, D, 1}, {k1, k1, n1, D, 1}};
    const int64_t lqs[2] = {4680, 1076};
    for (int li = 0; li < 2 && !fails; li++) {
        const int64_t Lq = lqs[li];
        for (int k = K_MMA; k <= K_WGMMA; k++) {
            if (k != K_MMA && !have_wg) continue;
            const double ms = time_kernel(k, out[k - K_MMA], q, Lq, r, 2);
            if (ms < 0) {
                fails++;
                continue;
            }
            printf("    attention [%-6s] %dx%d Lq=%-5lld Lk=%lld (%lld+%lld) %8.3f ms %7.1f TFLOP/s\n", kernel_names[k],
                   heads, hd, (long long)Lq, (long long)Lk, (long long)n0, (long long)n1, ms,
                   4.0 * (double)Lq * (double)Lk * heads * hd / (ms * 1e-3) / 1e12);
        }
        if (have_wg && !fails) { /* the wgmma kernel agrees with mma.sync on the full shape */
            const size_t n = (size_t)(Lq * D);
            uint16_t *b = malloc(n * sizeof *b);
            float *a = malloc(n * sizeof *a);
            if (b && a && gpu->download(gpu, b, out[0], n * 2) == LP_OK) {
                for (size_t i = 0; i < n; i++) a[i] = lp_bf16_to_f32(b[i]);
                char name[96];
                snprintf(name, sizeof name, "[wgmma] vs [mma] 12x128 Lq=%lld Lk=%lld", (long long)Lq, (long long)Lk);
                fails += compare_out(name, out[1], a, Lq, heads, hd, 2e-2);
            } else {
                fails++;
            }
            free(b);
            free(a);
        }
    }
    if (q) gpu->release(gpu, q);
    if (kv) gpu->release(gpu, kv);
    for (int i = 0; i < 2; i++)
        if (out[i]) gpu->release(gpu, out[i]);
    free(hq);
    free(hkv);
    return fails ? 1 : 0;
}

int main(void) {
    no_gpu = lp_test_cuda_backends(&gpu, &cpu);
    if (gpu) {
        /* the reference on all cores: the larger cases are tens of GFLOP */
        lp_backend_destroy(cpu);
        cpu = NULL;
        if (lp_backend_cpu_create(0, &cpu) != LP_OK) {
            printf("  CPU backend: %s\n", lp_last_error());
            lp_backend_destroy(gpu);
            gpu = NULL;
            no_gpu = 1;
        }
    }
    if (gpu) { /* a tiny call tells whether the wgmma kernel runs here; where the automatic choice is wgmma, a
                * failure of it fails the dispatch case */
        void *d = gpu->alloc(gpu, 1 << 16);
        lp_kv_range r = {d ? (char *)d + 8192 : NULL, d ? (char *)d + 16384 : NULL, 4, 128, 1};
        lp_status s = d ? run_attention(K_WGMMA, d, (char *)d + 4096, 2, 1, 128, &r, 1, 0.088f) : LP_ERR_NOMEM;
        have_wg = s == LP_OK;
        if (s != LP_OK) printf("  wgmma probe: %s: %s\n", lp_status_name(s), lp_last_error());
        if (d) gpu->release(gpu, d);
    }
    lp_test_run("attention parity", test_parity);
    lp_test_run("attention dispatch", test_dispatch);
    lp_test_run("attention timing", test_timing);
    lp_backend_destroy(gpu);
    lp_backend_destroy(cpu);
    return lp_test_finish();
}
