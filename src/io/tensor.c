#include "tensor.h"

#include <stdio.h>
#include <string.h>

#include "../base/half.h"

size_t lp_dtype_size(lp_dtype t) {
    static const size_t sz[LP_DTYPE_COUNT] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};
    return (unsigned)t < LP_DTYPE_COUNT ? sz[t] : 0;
}

const char *lp_dtype_name(lp_dtype t) {
    static const char *const nm[LP_DTYPE_COUNT] = {"F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"};
    return (unsigned)t < LP_DTYPE_COUNT ? nm[t] : "?";
}

int64_t lp_tensor_numel(const lp_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

const char *lp_shape_str(const lp_tensor *t, char *buf, size_t len) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, len - o, "[");
    for (int i = 0; i < t->ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
    return buf;
}

lp_status lp_tensor_read_f32(const lp_tensor *t, int64_t offset, int64_t n, float *dst) {
    if (offset < 0 || n < 0 || n > lp_tensor_numel(t) - offset) /* (offset + n could overflow) */
        return lp_fail(LP_ERR_ARG, "tensor '%s': read of %lld elements at %lld is out of range", t->name, (long long)n,
                       (long long)offset);
    switch (t->dtype) {
    case LP_F32: memcpy(dst, (const float *)t->data + offset, (size_t)n * 4); return LP_OK;
    case LP_F16: {
        const uint16_t *s = (const uint16_t *)t->data + offset;
        for (int64_t i = 0; i < n; i++) dst[i] = lp_f16_to_f32(s[i]);
        return LP_OK;
    }
    case LP_BF16: {
        const uint16_t *s = (const uint16_t *)t->data + offset;
        for (int64_t i = 0; i < n; i++) dst[i] = lp_bf16_to_f32(s[i]);
        return LP_OK;
    }
    case LP_F64: {
        const double *s = (const double *)t->data + offset;
        for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];
        return LP_OK;
    }
    default:
        return lp_fail(LP_ERR_UNSUPPORTED, "tensor '%s': dtype %s is not a floating-point type", t->name,
                       lp_dtype_name(t->dtype));
    }
}

lp_status lp_tensor_expect(const lp_tensor *t, const char *what, int ndim, const int64_t *want) {
    if (ndim < 0 || ndim > LP_MAX_DIMS) return lp_fail(LP_ERR_ARG, "%s: %d dimensions expected of '%s'", what, ndim, t->name);
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        if (want[i] >= 0 && t->shape[i] != want[i]) ok = 0;
    if (ok) return LP_OK;
    char got[128], exp[128];
    lp_tensor w = {.ndim = ndim};
    memcpy(w.shape, want, (size_t)ndim * sizeof *want);
    lp_shape_str(t, got, sizeof got);
    lp_shape_str(&w, exp, sizeof exp);
    return lp_fail(LP_ERR_SHAPE, "%s: tensor '%s' has shape %s, expected %s (-1 = any)", what, t->name, got, exp);
}
