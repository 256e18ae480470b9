/* In-memory tensor files: built tensor by tensor (random weights for
 * benchmarks, tests and the embedded demonstration model), then used through
 * the same lp_tensor_file API as a file on disk. */
#ifndef LP_TENSOR_BUILDER_H
#define LP_TENSOR_BUILDER_H

#include "tensor_file.h"

/* An empty in-memory file named name (used in error messages). */
lp_status lp_tensor_builder_create(const char *name, lp_tensor_file **out);
/* Adds a tensor of the given dtype (F32, F16 or BF16) and shape holding
 * uniform values in [−scale, scale) from a hash of (seed, element), so the
 * same call always gives the same tensor. */
lp_status lp_tensor_builder_add_uniform(lp_tensor_file *f, const char *name, lp_dtype dtype, int ndim,
                                        const int64_t *shape, float scale, uint64_t seed);
/* Adds an f32 tensor holding a copy of data. */
lp_status lp_tensor_builder_add_f32(lp_tensor_file *f, const char *name, int ndim, const int64_t *shape,
                                    const float *data);
/* Adds a tensor named name that views src's data (no copy): it is valid only
 * while the file holding src is open. */
lp_status lp_tensor_builder_add_view(lp_tensor_file *f, const char *name, const lp_tensor *src);
lp_status lp_tensor_builder_add_meta(lp_tensor_file *f, const char *key, const char *value);
/* Makes the tensors findable (sorts, rejects duplicates); call once at the end. */
lp_status lp_tensor_builder_finish(lp_tensor_file *f);

#endif
