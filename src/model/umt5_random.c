#include "umt5_random.h"

#include <math.h>
#include <stdio.h>

static lp_status build(lp_tensor_file *f, const lp_umt5_config *c, lp_dtype dt, uint64_t seed) {
    char name[96];
    int64_t emb[2] = {c->vocab, c->dim}, vd[1] = {c->dim};
    int64_t q[2] = {c->dim_attn, c->dim}, o[2] = {c->dim, c->dim_attn};
    int64_t up[2] = {c->dim_ffn, c->dim}, down[2] = {c->dim, c->dim_ffn}, pos[2] = {c->num_buckets, c->num_heads};
    float s_in = 1.0f / sqrtf((float)c->dim), s_attn = 1.0f / sqrtf((float)c->dim_attn);
    LP_TRY(lp_tensor_builder_add_uniform(f, "token_embedding.weight", dt, 2, emb, 1.0f, seed++));
    for (int64_t i = 0; i < c->num_layers; i++) {
#define T(suffix, shape, scale)                                                                   \
    do {                                                                                          \
        snprintf(name, sizeof name, "blocks.%lld.%s", (long long)i, suffix);                      \
        LP_TRY(lp_tensor_builder_add_uniform(f, name, dt, 2, shape, scale, seed++));              \
    } while (0)
        snprintf(name, sizeof name, "blocks.%lld.norm1.weight", (long long)i);
        LP_TRY(lp_tensor_builder_add_uniform(f, name, dt, 1, vd, 1.0f, seed++));
        snprintf(name, sizeof name, "blocks.%lld.norm2.weight", (long long)i);
        LP_TRY(lp_tensor_builder_add_uniform(f, name, dt, 1, vd, 1.0f, seed++));
        T("attn.q.weight", q, s_in);
        T("attn.k.weight", q, s_in);
        T("attn.v.weight", q, s_in);
        T("attn.o.weight", o, s_attn);
        T("ffn.gate.0.weight", up, s_in);
        T("ffn.fc1.weight", up, s_in);
        T("ffn.fc2.weight", down, 1.0f / sqrtf((float)c->dim_ffn));
        T("pos_embedding.embedding.weight", pos, 1.0f);
#undef T
    }
    LP_TRY(lp_tensor_builder_add_uniform(f, "norm.weight", dt, 1, vd, 1.0f, seed++));
    return lp_tensor_builder_finish(f);
}

lp_status lp_umt5_random_weights(const lp_umt5_config *c, lp_dtype dtype, uint64_t seed, lp_tensor_file **out) {
    LP_TRY(lp_tensor_builder_create("random umT5", out));
    lp_status s = build(*out, c, dtype, seed);
    if (s != LP_OK) {
        lp_tensor_file_close(*out);
        *out = NULL;
    }
    return s;
}
