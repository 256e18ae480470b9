#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int passed, failed, skipped;

void lp_test_run(const char *name, lp_test_fn fn) {
    int r = fn();
    if (r == 0) {
        passed++;
        printf("  ok    %s\n", name);
    } else if (r == LP_TEST_SKIP) {
        skipped++;
        printf("  skip  %s\n", name);
    } else {
        failed++;
        printf("  FAIL  %s\n", name);
    }
    fflush(stdout);
}

int lp_test_finish(void) {
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    if (failed) return 1;
    return passed == 0 && skipped > 0 ? LP_TEST_SKIP : 0;
}

const char *lp_test_shared(const char *relpath) {
    static char buf[4096];
    const char *root = getenv("LIPAR_SHARED");
    if (!root || !*root) root = "../shared";
    snprintf(buf, sizeof buf, "%s/%s", root, relpath);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

int lp_test_skip_shared(const char *relpath) {
    printf("  (skipping: %s not found; set LIPAR_SHARED to the shared/ folder)\n", relpath);
    return LP_TEST_SKIP;
}

double lp_rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return sqrt(num / den);
}

double lp_max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

void lp_test_fill(float *x, size_t n, uint32_t seed, float scale) {
    uint32_t s = seed * 2654435761u + 12345u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = scale * (2.0f * (float)(s >> 8) / 16777216.0f - 1.0f);
    }
}

const char *lp_test_tmpdir(void) {
    static char dir[256];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/lipar-test-%d", (int)getpid());
        mkdir(dir, 0700);
    }
    return dir;
}

float *lp_test_load_f32(const lp_tensor_file *f, const char *name, const lp_tensor **t) {
    if (lp_tensor_file_get(f, name, t) != LP_OK) return NULL;
    int64_t n = lp_tensor_numel(*t);
    float *x = malloc((size_t)n * sizeof *x);
    if (x && lp_tensor_read_f32(*t, 0, n, x) != LP_OK) {
        free(x);
        return NULL;
    }
    return x;
}

float *lp_test_dev_copy(const lp_backend *be, const float *h, size_t n) {
    float *d = be->alloc(be, (n ? n : 1) * sizeof *d);
    if (d && be->upload(be, d, h, n * sizeof *d) == LP_OK) return d;
    printf("    %s alloc/upload of %zu floats: %s\n", be->name, n, lp_last_error());
    if (d) be->release(be, d);
    return NULL;
}

float *lp_test_dev_poison(const lp_backend *be, size_t n) {
    float *h = malloc((n ? n : 1) * sizeof *h);
    if (!h) return NULL;
    memset(h, 0xff, n * sizeof *h);
    float *d = lp_test_dev_copy(be, h, n);
    free(h);
    return d;
}

void lp_test_dev_free(const lp_backend *be, float *d) {
    if (d) be->release(be, d);
}

int lp_test_dev_compare(const lp_backend *be, const char *name, const float *d, const float *want, size_t n,
                        double tol) {
    float *got = malloc((n ? n : 1) * sizeof *got);
    if (!got || !d) {
        free(got);
        printf("    %-*s FAIL (no buffer)\n", LP_TEST_NAME_WIDTH, name);
        return 1;
    }
    lp_status s = be->download(be, got, d, n * sizeof *got);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += !isfinite(got[i]);
    double err = lp_rel_l2(got, want, n);
    int ok = s == LP_OK && bad == 0 && err <= tol;
    printf("    %-*s rel_l2=%.3e (tol %.0e) %s", LP_TEST_NAME_WIDTH, name, err, tol, ok ? "ok" : "FAIL");
    if (s != LP_OK) printf(" [%s: %s]", lp_status_name(s), lp_last_error());
    if (bad) printf(" [%zu non-finite]", bad);
    printf("\n");
    free(got);
    return !ok;
}

int lp_test_status_ok(const char *name, lp_status s) {
    if (s == LP_OK) return 1;
    printf("    %-*s FAIL [%s: %s]\n", LP_TEST_NAME_WIDTH, name, lp_status_name(s), lp_last_error());
    return 0;
}

int lp_test_cuda_backends(lp_backend **gpu, lp_backend **cpu) {
    *cpu = NULL;
    lp_status s = lp_backend_cuda_create(2, gpu);
    if (s == LP_ERR_UNSUPPORTED) {
        printf("  (skipping: %s)\n", lp_last_error());
        return LP_TEST_SKIP;
    }
    if (s != LP_OK) {
        printf("  CUDA backend: %s\n", lp_last_error());
        return 1;
    }
    if (lp_backend_cpu_create(2, cpu) != LP_OK) {
        printf("  CPU backend: %s\n", lp_last_error());
        lp_backend_destroy(*gpu);
        *gpu = NULL;
        return 1;
    }
    return LP_TEST_SKIP;
}

static void **kept;
static size_t nkept;

void *lp_test_keep(size_t bytes) {
    void **k = realloc(kept, (nkept + 1) * sizeof *k);
    if (!k) return NULL;
    kept = k;
    void *p = malloc(bytes ? bytes : 1);
    if (p) kept[nkept++] = p;
    return p;
}

void lp_test_kept_free(void) {
    for (size_t i = 0; i < nkept; i++) free(kept[i]);
    free(kept);
    kept = NULL;
    nkept = 0;
}
