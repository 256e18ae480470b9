/* What every backend's linear_batch shares (backend.h): the checks of its
 * arguments and its meaning, `count` calls of linear, which the CPU runs as
 * such and CUDA where it cannot batch. */
#include "backend.h"

lp_status lp_linear_batch_check(int64_t y_stride, int64_t M, const lp_tensor *const *W, const lp_tensor *const *b,
                                int count) {
    if (count < 1 || count > LP_LINEAR_BATCH_MAX)
        return lp_fail(LP_ERR_ARG, "linear_batch: %d weights (1..%d)", count, LP_LINEAR_BATCH_MAX);
    for (int i = 0; i < count; i++) {
        if (W[i]->ndim != 2 || W[i]->shape[0] != W[0]->shape[0] || W[i]->shape[1] != W[0]->shape[1] ||
            W[i]->dtype != W[0]->dtype)
            return lp_fail(LP_ERR_SHAPE, "linear_batch: weight '%s' differs from '%s' in shape or dtype", W[i]->name,
                           W[0]->name);
        if (b && !b[i])
            return lp_fail(LP_ERR_ARG, "linear_batch: weight '%s' has no bias while the others have", W[i]->name);
    }
    if (M < 0 || y_stride < M * W[0]->shape[0])
        return lp_fail(LP_ERR_ARG, "linear_batch: outputs of %lld x %lld elements %lld apart overlap", (long long)M,
                       (long long)W[0]->shape[0], (long long)y_stride);
    return LP_OK;
}

lp_status lp_linear_batch_loop(const lp_backend *be, void *y, int64_t y_stride, const void *x, int64_t M,
                               const lp_tensor *const *W, const lp_tensor *const *b, int count, unsigned flags) {
    size_t elem = (flags & LP_LINEAR_Y_ACT) && be->act_bf16 ? 2 : 4;
    for (int i = 0; i < count; i++)
        LP_TRY(be->linear(be, (char *)y + (size_t)i * (size_t)y_stride * elem, x, M, W[i], b ? b[i] : NULL, flags));
    return LP_OK;
}

lp_status lp_linear_batch_serial(const lp_backend *be, void *y, int64_t y_stride, const void *x, int64_t M,
                                 const lp_tensor *const *W, const lp_tensor *const *b, int count, unsigned flags) {
    LP_TRY(lp_linear_batch_check(y_stride, M, W, b, count));
    return lp_linear_batch_loop(be, y, y_stride, x, M, W, b, count, flags);
}
