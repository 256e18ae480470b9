/* 3-D rotary position embedding (spec/MODEL.md §6), in double like upstream
 * (rope3d, and kv_store, which writes rotated keys into the f32 KV cache):
 * the head_dim/2 complex pairs split into [frame, row, col] parts of
 * [d/2 − 2⌊d/6⌋, ⌊d/6⌋, ⌊d/6⌋] pairs; pair j of a part of n pairs rotates by
 * pos·10000^(−j/n). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"

typedef struct {
    float *x;
    int heads, head_dim;
    const int32_t *pos;
} rope_job;

static void rope_rows(void *ctx, int64_t b, int64_t e) {
    rope_job *j = ctx;
    int half = j->head_dim / 2, nh = j->head_dim / 6, nf = half - 2 * nh;
    int parts[3] = {nf, nh, nh};
    double cs[2 * 512]; /* cos, sin per pair; head_dim <= 1024 */
    for (int64_t r = b; r < e; r++) {
        int p = 0;
        for (int part = 0; part < 3; part++) {
            double at = (double)j->pos[r * 3 + part];
            for (int i = 0; i < parts[part]; i++, p++) {
                double freq = 1.0 / pow(10000.0, (double)(2 * i) / (double)(2 * parts[part]));
                double ang = at * freq;
                cs[2 * p] = cos(ang);
                cs[2 * p + 1] = sin(ang);
            }
        }
        float *row = j->x + r * (int64_t)j->heads * j->head_dim;
        for (int h = 0; h < j->heads; h++) {
            float *v = row + h * j->head_dim;
            for (int q = 0; q < half; q++) {
                double x0 = v[2 * q], x1 = v[2 * q + 1], c = cs[2 * q], s = cs[2 * q + 1];
                v[2 * q] = (float)(x0 * c - x1 * s);
                v[2 * q + 1] = (float)(x0 * s + x1 * c);
            }
        }
    }
}

void lp_cpu_rope3d(const lp_backend *be, float *x, int64_t rows, int heads, int head_dim, const int32_t *pos) {
    rope_job j = {x, heads, head_dim, pos};
    lp_parallel_for(be->pool, rows, rope_rows, &j);
}

lp_status lp_cpu_kv_store(const lp_backend *be, void *cache_rows, const float *src, int64_t rows, int heads,
                          int head_dim, const int32_t *pos) {
    if (rows < 0 || heads < 0 || head_dim < 0)
        return lp_fail(LP_ERR_ARG, "kv_store: invalid shape rows %lld, heads %d, head_dim %d", (long long)rows, heads,
                       head_dim);
    if (pos && head_dim > 1024)
        return lp_fail(LP_ERR_UNSUPPORTED, "kv_store: head_dim %d, RoPE supports at most 1024", head_dim);
    size_t n = (size_t)rows * (size_t)heads * (size_t)head_dim;
    if (n) memcpy(cache_rows, src, n * sizeof *src);
    if (pos && n) lp_cpu_rope3d(be, cache_rows, rows, heads, head_dim, pos);
    return LP_OK;
}
