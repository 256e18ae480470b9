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
