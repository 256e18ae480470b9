/* A minimal test harness. Each tests/test_*.c is one binary whose main() calls
 * lp_test_run for each case and returns lp_test_finish(). A case fails on the
 * first failed CHECK. Exit status: 0 all passed, 1 a failure, 77 all skipped. */
#ifndef LP_TEST_UTIL_H
#define LP_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../src/backend/backend.h"
#include "../src/io/tensor_file.h"
#include "../src/model/taehv.h"

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

/* Tensor name of f (*t: its view) as a newly malloc'd f32 array; NULL when
 * it is missing, unreadable or memory runs out. */
float *lp_test_load_f32(const lp_tensor_file *f, const char *name, const lp_tensor **t);

/* CPU-vs-CUDA parity tests. lp_test_cuda_backends creates the CUDA backend
 * under test and the CPU reference (2 threads each). Without them *gpu is
 * NULL and it returns what each case should return: LP_TEST_SKIP when CUDA is
 * unavailable (built without it or no usable GPU; the reason is printed), 1
 * when a backend fails otherwise (printed). With both it returns LP_TEST_SKIP. */
int lp_test_cuda_backends(lp_backend **gpu, lp_backend **cpu);
/* A host buffer of bytes (at least 1) that lives until lp_test_kept_free():
 * for weight views, since the CUDA backend caches device copies by data
 * pointer. NULL when out of memory. */
void *lp_test_keep(size_t bytes);
/* Frees every lp_test_keep buffer (after the backends are destroyed). */
void lp_test_kept_free(void);
/* n random floats in [−scale, scale) (lp_test_fill): malloc'd
 * (lp_test_random_floats) or kept (lp_test_kept_floats); NULL when out of
 * memory. */
float *lp_test_random_floats(size_t n, uint32_t seed, float scale);
float *lp_test_kept_floats(size_t n, uint32_t seed, float scale);

/* Buffers of a device backend (CPU-vs-device parity tests). Result lines are
 * "    <name, padded to LP_TEST_NAME_WIDTH> ..." so that they line up. */
#define LP_TEST_NAME_WIDTH 60
/* A buffer of be holding the n floats of h; NULL on failure (message printed). */
float *lp_test_dev_copy(const lp_backend *be, const float *h, size_t n);
/* A buffer of be of n floats of NaN bytes, so that unwritten outputs show. */
float *lp_test_dev_poison(const lp_backend *be, size_t n);
/* Releases d; NULL is a no-op. */
void lp_test_dev_free(const lp_backend *be, float *d);
/* Downloads n floats of d (a buffer of be; NULL fails) and compares them with
 * want (the reference): prints "name rel_l2=... ok|FAIL"; a failed download
 * or any non-finite value (poison left, or a NaN/inf from the op) fails.
 * Returns 0 when ok, 1 otherwise. */
int lp_test_dev_compare(const lp_backend *be, const char *name, const float *d, const float *want, size_t n,
                        double tol);
/* 1 when s is LP_OK; else prints "name FAIL [status: message]" and returns 0. */
int lp_test_status_ok(const char *name, lp_status s);

/* TAEHV's byte frames against its float frames on the model's backend: T
 * random frames [T][H][W][3] encoded through lp_taehv_encoder_push_rgb24 (3
 * at a time, then the flush) and as their floats b / 255 through
 * lp_taehv_encoder_push; the latents decoded through
 * lp_taehv_decoder_push_rgb24 and through lp_taehv_decoder_push with the
 * host's lp_unit_to_byte. Returns 0 when both pairs agree bit for bit, else
 * prints what differs and returns 1. */
int lp_test_taehv_rgb24(const lp_taehv *m, int T, int H, int W, uint32_t seed);

#endif
