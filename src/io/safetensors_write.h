/* Writing safetensors files (f32 tensors + string metadata). The file is
 * written to a temporary name beside path and renamed into place, so a reader
 * never sees a half-written file. */
#ifndef LP_SAFETENSORS_WRITE_H
#define LP_SAFETENSORS_WRITE_H

#include <stdint.h>

#include "../base/status.h"

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[8];
    const float *data;
} lp_st_out_tensor;

lp_status lp_safetensors_write(const char *path, const lp_st_out_tensor *tensors, int n, const char *const *meta_keys,
                               const char *const *meta_values, int n_meta);

#endif
