/* Scaled dot-product attention on the CPU over one or more f32 key ranges
 * (the KV cache and, for cross-attention, the text K/V). Per head and per
 * block of query rows: scores = q·kᵀ·scale by sgemm into one row block
 * spanning all ranges, a max-subtracted softmax in fp32, then out = p·v by
 * sgemm per range. */
#include <cblas.h>
#include <math.h>

#include "cpu_ops.h"

typedef struct {
    float *s;
    int64_t rows, cols;
} softmax_job;

static void softmax_rows(void *ctx, int64_t b, int64_t e) {
    softmax_job *j = ctx;
    for (int64_t r = b; r < e; r++) {
        float *row = j->s + r * j->cols;
        float mx = -INFINITY;
        for (int64_t c = 0; c < j->cols; c++) mx = row[c] > mx ? row[c] : mx;
        double sum = 0;
        for (int64_t c = 0; c < j->cols; c++) {
            row[c] = expf(row[c] - mx);
            sum += row[c];
        }
        float inv = (float)(1.0 / sum);
        for (int64_t c = 0; c < j->cols; c++) row[c] *= inv;
    }
}

void lp_cpu_softmax_rows(lp_pool *pool, float *s, int64_t rows, int64_t cols) {
    softmax_job j = {s, rows, cols};
    lp_parallel_for(pool, rows, softmax_rows, &j);
}

lp_status lp_cpu_attention(const lp_backend *be, void *outv, const void *qv, int64_t Lq, int heads, int head_dim,
                           const lp_kv_range *ranges, int nranges, float scale) {
    float *out = outv; /* the CPU's activation type is f32 */
    const float *q = qv;
    int64_t Lk = 0;
    for (int i = 0; i < nranges; i++) {
        if (ranges[i].bf16)
            return lp_fail(LP_ERR_UNSUPPORTED, "attention (cpu): key range %d is bf16; the CPU reads f32 keys only", i);
        Lk += ranges[i].n;
    }
    if (Lk == 0) return lp_fail(LP_ERR_ARG, "attention over an empty key set");
    if (Lq == 0) return LP_OK;
    lp_cpu_state *st = be->impl;
    int64_t ld = (int64_t)heads * head_dim;
    /* a block of query rows whose score rows fit in ~64 MB */
    int64_t qb = (16 << 20) / Lk;
    qb = qb < 16 ? 16 : qb > 512 ? 512 : qb;
    if (qb > Lq) qb = Lq;
    LP_TRY(lp_cpu_reserve(&st->scores, &st->scores_len, (size_t)(qb * Lk)));
    float *S = st->scores;
    for (int h = 0; h < heads; h++) {
        for (int64_t r0 = 0; r0 < Lq; r0 += qb) {
            int64_t rows = Lq - r0 < qb ? Lq - r0 : qb;
            const float *qh = q + r0 * ld + (int64_t)h * head_dim;
            int64_t col = 0;
            for (int i = 0; i < nranges; i++) {
                const lp_kv_range *R = &ranges[i];
                if (!R->n) continue;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)R->n, head_dim, scale, qh,
                            (int)ld, (const float *)R->k + (int64_t)h * head_dim, (int)R->ld, 0.0f, S + col, (int)Lk);
                col += R->n;
            }
            lp_cpu_softmax_rows(be->pool, S, rows, Lk);
            float *oh = out + r0 * ld + (int64_t)h * head_dim;
            col = 0;
            float beta = 0.0f;
            for (int i = 0; i < nranges; i++) {
                const lp_kv_range *R = &ranges[i];
                if (!R->n) continue;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, head_dim, (int)R->n, 1.0f, S + col,
                            (int)Lk, (const float *)R->v + (int64_t)h * head_dim, (int)R->ld, beta, oh, (int)ld);
                beta = 1.0f;
                col += R->n;
            }
        }
    }
    return LP_OK;
}
