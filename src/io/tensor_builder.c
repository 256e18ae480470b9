#include "tensor_builder.h"

#include <stdlib.h>
#include <string.h>

#include "../base/half.h"
#include "tensor_file_impl.h"

lp_status lp_tensor_builder_create(const char *name, lp_tensor_file **out) {
    *out = NULL;
    lp_tensor_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(name))) {
        free(f);
        return lp_fail(LP_ERR_NOMEM, "out of memory creating '%s'", name);
    }
    f->format = LP_FORMAT_SAFETENSORS;
    *out = f;
    return LP_OK;
}

static uint64_t mix(uint64_t z) { /* splitmix64 finaliser */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static lp_status add(lp_tensor_file *f, const char *name, lp_dtype dtype, int ndim, const int64_t *shape,
                     void **data) {
    if (ndim < 0 || ndim > LP_MAX_DIMS) return lp_fail(LP_ERR_ARG, "'%s': %d dimensions", name, ndim);
    lp_tensor t = {.dtype = dtype, .ndim = ndim};
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return lp_fail(LP_ERR_ARG, "'%s': negative dimension", name);
        t.shape[i] = shape[i];
        n *= shape[i];
    }
    t.nbytes = (size_t)n * lp_dtype_size(dtype);
    t.name = lp_tf_strdup(f, name, strlen(name));
    *data = lp_tf_alloc(f, t.nbytes);
    if (!t.name || !*data) return lp_fail(LP_ERR_NOMEM, "out of memory for tensor '%s'", name);
    t.data = *data;
    return lp_tf_add(f, &t);
}

lp_status lp_tensor_builder_add_uniform(lp_tensor_file *f, const char *name, lp_dtype dtype, int ndim,
                                        const int64_t *shape, float scale, uint64_t seed) {
    if (dtype != LP_F32 && dtype != LP_F16 && dtype != LP_BF16)
        return lp_fail(LP_ERR_UNSUPPORTED, "'%s': random tensors are F32, F16 or BF16", name);
    void *data;
    LP_TRY(add(f, name, dtype, ndim, shape, &data));
    int64_t n = (int64_t)(f->tensors[f->count - 1].nbytes / lp_dtype_size(dtype));
    uint64_t key = mix(seed ^ 0x9e3779b97f4a7c15ull);
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = mix(key + (uint64_t)i);
        float v = scale * (2.0f * (float)(r >> 40) / 16777216.0f - 1.0f);
        if (dtype == LP_F32) ((float *)data)[i] = v;
        else if (dtype == LP_F16) ((uint16_t *)data)[i] = lp_f32_to_f16(v);
        else ((uint16_t *)data)[i] = lp_f32_to_bf16(v);
    }
    return LP_OK;
}

lp_status lp_tensor_builder_add_f32(lp_tensor_file *f, const char *name, int ndim, const int64_t *shape,
                                    const float *values) {
    void *data;
    LP_TRY(add(f, name, LP_F32, ndim, shape, &data));
    memcpy(data, values, f->tensors[f->count - 1].nbytes);
    return LP_OK;
}

lp_status lp_tensor_builder_add_view(lp_tensor_file *f, const char *name, const lp_tensor *src) {
    lp_tensor t = *src;
    t.name = lp_tf_strdup(f, name, strlen(name));
    if (!t.name) return lp_fail(LP_ERR_NOMEM, "out of memory for tensor '%s'", name);
    return lp_tf_add(f, &t);
}

lp_status lp_tensor_builder_add_meta(lp_tensor_file *f, const char *key, const char *value) {
    return lp_tf_add_meta(f, key, strlen(key), value, strlen(value));
}

lp_status lp_tensor_builder_finish(lp_tensor_file *f) { return lp_tf_finish(f); }
