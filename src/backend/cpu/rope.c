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

/* Rotates one row of heads·head_dim at pos3 = (frame, row, col). */
static void rope_row(float *row, int heads, int head_dim, const int32_t *pos3) {
    int half = head_dim / 2, nh = head_dim / 6, nf = half - 2 * nh;
    int parts[3] = {nf, nh, nh};
    double cs[2 * 512]; /* cos, sin per pair; head_dim <= 1024 */
    int p = 0;
    for (int part = 0; part < 3; part++) {
        double at = (double)pos3[part];
        for (int i = 0; i < parts[part]; i++, p++) {
            double freq = 1.0 / pow(10000.0, (double)(2 * i) / (double)(2 * parts[part]));
            double ang = at * freq;
            cs[2 * p] = cos(ang);
            cs[2 * p + 1] = sin(ang);
        }
    }
    for (int h = 0; h < heads; h++) {
        float *v = row + h * head_dim;
        for (int q = 0; q < half; q++) {
            double x0 = v[2 * q], x1 = v[2 * q + 1], c = cs[2 * q], s = cs[2 * q + 1];
            v[2 * q] = (float)(x0 * c - x1 * s);
            v[2 * q + 1] = (float)(x0 * s + x1 * c);
        }
    }
}

static void rope_rows(void *ctx, int64_t b, int64_t e) {
    rope_job *j = ctx;
    for (int64_t r = b; r < e; r++) rope_row(j->x + r * (int64_t)j->heads * j->head_dim, j->heads, j->head_dim, j->pos + r * 3);
}

void lp_cpu_rope3d(const lp_backend *be, float *x, int64_t rows, int heads, int head_dim, const int32_t *pos) {
    rope_job j = {x, heads, head_dim, pos};
    lp_parallel_for(be->pool, rows, rope_rows, &j);
}

typedef struct {
    float *cache;
    const float *src, *saved;
    const int32_t *dst_idx, *src_idx, *pos;
    int heads, head_dim;
} kv_job;

static void kv_rows(void *ctx, int64_t b, int64_t e) {
    const kv_job *j = ctx;
    int64_t ld = (int64_t)j->heads * j->head_dim;
    for (int64_t i = b; i < e; i++) {
        int32_t si = j->src_idx ? j->src_idx[i] : (int32_t)i;
        const float *from = si >= 0 ? j->src + (int64_t)si * ld : j->saved + (-(int64_t)si - 1) * ld;
        float *to = j->cache + (j->dst_idx ? (int64_t)j->dst_idx[i] : i) * ld;
        memcpy(to, from, (size_t)ld * sizeof *to);
        if (j->pos) rope_row(to, j->heads, j->head_dim, j->pos + i * 3);
    }
}

lp_status lp_cpu_kv_store(const lp_backend *be, void *cache_rows, const int32_t *dst_idx, const float *src,
                          const void *saved, const int32_t *src_idx, int64_t rows, int heads, int head_dim,
                          const int32_t *pos) {
    if (rows < 0 || heads < 0 || head_dim < 0)
        return lp_fail(LP_ERR_ARG, "kv_store: invalid shape rows %lld, heads %d, head_dim %d", (long long)rows, heads,
                       head_dim);
    if (pos && head_dim > 1024)
        return lp_fail(LP_ERR_UNSUPPORTED, "kv_store: head_dim %d, RoPE supports at most 1024", head_dim);
    for (int64_t i = 0; src_idx && !saved && i < rows; i++)
        if (src_idx[i] < 0) return lp_fail(LP_ERR_ARG, "kv_store: row %lld reads a saved row, none given", (long long)i);
    if (!rows || !heads || !head_dim) return LP_OK;
    kv_job j = {cache_rows, src, saved, dst_idx, src_idx, pos, heads, head_dim};
    lp_parallel_for(be->pool, rows, kv_rows, &j);
    return LP_OK;
}
