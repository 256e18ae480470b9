/* `lipar check`: runs the component named by a golden file's __metadata__.kind
 * on its in.* / w.* tensors and compares every out.* tensor. Each kind has one
 * runner (tools/check_<kind>.c) registered in the table in check.c. */
#ifndef LP_CHECK_H
#define LP_CHECK_H

#include "../src/io/tensor_file.h"

typedef struct {
    const char *golden_path;  /* the file being checked */
    const char *weights_path; /* --weights FILE: weights from another file (else w.* of the golden) */
    const char *inputs_path;  /* --inputs FILE: for kinds whose inputs live in a separate file */
    const char *backend;      /* --backend cpu|cuda (default cpu) */
    double tol;               /* relative L2 tolerance (1e-5 on the CPU; 2e-2 on bf16 GPU paths) */
    int threads;              /* worker threads (0 = all cores) */
    int passed, failed;
} lp_check_ctx;

typedef lp_status (*lp_check_fn)(lp_check_ctx *c, const lp_tensor_file *golden);

/* Compares got (numel floats) with the reference tensor ref (any float dtype),
 * prints "<name> rel_l2=<v> max_abs=<v> ok|FAIL" and counts the result. A shape
 * mismatch in element count is a failure. */
void lp_check_compare(lp_check_ctx *c, const lp_tensor *ref, const float *got, int64_t numel);
/* Compares integer/boolean data exactly (printing the number of differing
 * elements as max_abs and their fraction as rel_l2). */
void lp_check_compare_exact(lp_check_ctx *c, const lp_tensor *ref, const uint8_t *got, int64_t numel);
/* Looks up name in golden, converting to newly malloc'd f32 (caller frees). */
lp_status lp_check_load_f32(const lp_tensor_file *golden, const char *name, float **out, int64_t *numel);
/* Reads a metadata value as int / double / string; missing key -> LP_ERR_MISSING. */
lp_status lp_check_meta_int(const lp_tensor_file *golden, const char *key, int64_t *out);
lp_status lp_check_meta_double(const lp_tensor_file *golden, const char *key, double *out);
/* Parses a metadata value holding a JSON array of numbers into out (at most max). */
lp_status lp_check_meta_doubles(const lp_tensor_file *golden, const char *key, double *out, int max, int *count);

/* Entry point of the subcommand: argv after "check". */
int lp_check_main(int argc, char **argv);

#endif
