/* A minimal test harness. Each tests/test_*.c is one binary whose main() calls
 * lp_test_run for each case and returns lp_test_finish(). A case fails on the
 * first failed CHECK. Exit status: 0 all passed, 1 a failure, 77 all skipped. */
#ifndef LP_TEST_UTIL_H
#define LP_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef int (*lp_test_fn)(void); /* returns 0 pass, 1 fail, LP_TEST_SKIP skip */
#define LP_TEST_SKIP 77

void lp_test_run(const char *name, lp_test_fn fn);
int lp_test_finish(void);

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, " " __VA_ARGS__);                               \
            fputc('\n', stderr);                                            \
            return 1;                                                       \
        }                                                                   \
    } while (0)

/* Path of a file under the shared folder (env LIPAR_SHARED, else ../shared
 * next to the repository), or NULL if the folder is absent: tests that need
 * it return lp_test_skip_shared(). */
const char *lp_test_shared(const char *relpath);
int lp_test_skip_shared(const char *relpath);

/* Relative L2 error ||a - b|| / ||b|| (computed in double). */
double lp_rel_l2(const float *a, const float *b, size_t n);
double lp_max_abs_diff(const float *a, const float *b, size_t n);
/* Fills x with uniform values in [-scale, scale) from a fixed LCG seed. */
void lp_test_fill(float *x, size_t n, uint32_t seed, float scale);
/* A scratch directory for the test (created on first use). */
const char *lp_test_tmpdir(void);

#endif
