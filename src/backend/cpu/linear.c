/* Linear layers on the CPU: y = x·Wᵀ + b through OpenBLAS sgemm. f16/bf16
 * weights are converted one matrix at a time into a reusable scratch buffer
 * (never a whole-model f32 copy). */
#include <cblas.h>
#include <string.h>

#include "../../base/half.h"
#include "cpu_ops.h"

typedef struct {
    const lp_tensor *t;
    int64_t off;
    float *dst;
} convert_job;

static void convert_range(void *ctx, int64_t b, int64_t e) {
    convert_job *j = ctx;
    lp_tensor_read_f32(j->t, j->off + b, e - b, j->dst + b); /* dtype checked by the caller */
}

lp_status lp_cpu_to_f32(const lp_backend *be, const lp_tensor *t, int64_t off, int64_t n, float *dst) {
    if (t->dtype != LP_F32 && t->dtype != LP_F16 && t->dtype != LP_BF16 && t->dtype != LP_F64)
        return lp_fail(LP_ERR_UNSUPPORTED, "tensor '%s': dtype %s is not supported for weights", t->name,
                       lp_dtype_name(t->dtype));
    if (off < 0 || n < 0 || n > lp_tensor_numel(t) - off) /* (off + n could overflow) */
        return lp_fail(LP_ERR_ARG, "tensor '%s': conversion range out of bounds", t->name);
    convert_job j = {t, off, dst};
    /* one slice per thread, in 64K-element pieces so small tensors stay inline */
    if (n < 65536) convert_range(&j, 0, n);
    else lp_parallel_for(be->pool, n, convert_range, &j);
    return LP_OK;
}

typedef struct {
    float *y;
    const float *bias;
    int64_t N;
} bias_job;

static void add_bias_rows(void *ctx, int64_t b, int64_t e) {
    bias_job *j = ctx;
    for (int64_t r = b; r < e; r++) {
        float *row = j->y + r * j->N;
        for (int64_t c = 0; c < j->N; c++) row[c] = j->bias[c];
    }
}

lp_status lp_cpu_linear(const lp_backend *be, void *yv, const void *xv, int64_t M, const lp_tensor *W,
                        const lp_tensor *b, unsigned flags) {
    float *y = yv; /* the CPU's activation type is f32: the X_ACT/Y_ACT flags change nothing */
    const float *x = xv;
    if (W->ndim != 2)
        return lp_fail(LP_ERR_SHAPE, "linear: weight '%s' must be 2-D [out, in], has %d dims", W->name, W->ndim);
    int64_t N = W->shape[0], K = W->shape[1];
    if (b && lp_tensor_numel(b) != N)
        return lp_fail(LP_ERR_SHAPE, "linear: bias '%s' has %lld elements, weight '%s' has %lld outputs", b->name,
                       (long long)lp_tensor_numel(b), W->name, (long long)N);
    if (M == 0) return LP_OK;
    lp_cpu_state *st = be->impl;
    /* scratch holds the f32 weight (unless stored f32), then the f32 bias
     * (unless stored f32; biases reach 8960 elements in fp16 checkpoints) */
    size_t wlen = W->dtype == LP_F32 ? 0 : (size_t)(N * K);
    if (wlen || (b && b->dtype != LP_F32)) LP_TRY(lp_cpu_reserve(&st->scratch, &st->scratch_len, wlen + (size_t)N));
    const float *w = W->data;
    if (wlen) {
        LP_TRY(lp_cpu_to_f32(be, W, 0, N * K, st->scratch));
        w = st->scratch;
    }
    float beta = 0.0f;
    if (b) {
        const float *bias = b->data;
        if (b->dtype != LP_F32) {
            LP_TRY(lp_tensor_read_f32(b, 0, N, st->scratch + wlen));
            bias = st->scratch + wlen;
        }
        bias_job j = {y, bias, N};
        lp_parallel_for(be->pool, M, add_bias_rows, &j);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, x, (int)K, w, (int)K, beta, y,
                (int)N);
    if (flags & LP_LINEAR_GELU) lp_cpu_gelu_tanh(be, y, M * N);
    return LP_OK;
}
