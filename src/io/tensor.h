/* A typed, contiguous, row-major view of tensor bytes that someone else owns
 * (usually an mmapped checkpoint). Shapes keep PyTorch order. */
#ifndef LP_TENSOR_H
#define LP_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "../base/status.h"

#define LP_MAX_DIMS 8

typedef enum {
    LP_F32 = 0,
    LP_F16,
    LP_BF16,
    LP_F64,
    LP_I64,
    LP_I32,
    LP_I16,
    LP_I8,
    LP_U8,
    LP_BOOL,
    LP_DTYPE_COUNT
} lp_dtype;

typedef struct {
    const char *name;  /* as stored in the file */
    lp_dtype dtype;
    int ndim;
    int64_t shape[LP_MAX_DIMS];
    const void *data;  /* contiguous, little-endian */
    size_t nbytes;
} lp_tensor;

size_t lp_dtype_size(lp_dtype t);
const char *lp_dtype_name(lp_dtype t);
/* Number of elements (product of the shape; 1 for a scalar). */
int64_t lp_tensor_numel(const lp_tensor *t);
/* "[a, b, c]" into buf. */
const char *lp_shape_str(const lp_tensor *t, char *buf, size_t len);
/* Converts n elements starting at element offset of a float tensor (F32/F16/BF16/F64)
 * to f32. Fails with LP_ERR_UNSUPPORTED for integer dtypes. */
lp_status lp_tensor_read_f32(const lp_tensor *t, int64_t offset, int64_t n, float *dst);
/* Checks ndim and every dimension (-1 in want matches anything). what names the
 * owner (file) in the error. */
lp_status lp_tensor_expect(const lp_tensor *t, const char *what, int ndim, const int64_t *want);

#endif
