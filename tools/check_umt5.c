/* `lipar check` runner for kind "umt5_encoder": runs the umT5 encoder on
 * in.ids / in.mask [B, L] and compares out.hidden (every row, padded ones
 * computed with the masked attention like upstream) and out.context_zeroed
 * (padded rows zero, computed from the real tokens only). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/model/umt5.h"
#include "check.h"

lp_status check_umt5_encoder(lp_check_ctx *c, const lp_tensor_file *golden);

/* Copies an I64 [B, L] tensor (the file's bytes need not be 8-byte aligned). */
static lp_status load_i64(const lp_tensor_file *g, const char *name, int64_t **out, int64_t *b, int64_t *l) {
    const lp_tensor *t;
    LP_TRY(lp_tensor_file_get(g, name, &t));
    if (t->dtype != LP_I64 || t->ndim != 2)
        return lp_fail(LP_ERR_FORMAT, "%s: '%s' must be I64 [B, L], got %s with %d dims", lp_tensor_file_path(g), name,
                       lp_dtype_name(t->dtype), t->ndim);
    *b = t->shape[0];
    *l = t->shape[1];
    *out = malloc(t->nbytes ? t->nbytes : 1);
    if (!*out) return lp_fail(LP_ERR_NOMEM, "out of memory loading '%s'", name);
    memcpy(*out, t->data, t->nbytes);
    return LP_OK;
}

static lp_status run(lp_check_ctx *c, const lp_tensor_file *golden, const lp_tensor_file *wf, const char *prefix,
                     lp_pool *pool, int64_t *ids, int64_t *mask, int64_t nb, int64_t len) {
    int64_t heads, max_dist;
    double eps;
    LP_TRY(lp_check_meta_int(golden, "num_heads", &heads));
    lp_umt5_weights w;
    lp_umt5_config cfg;
    LP_TRY(lp_umt5_load(wf, prefix, heads, &w, &cfg));
    /* max_dist and eps are not in the weights: the file's metadata overrides the umT5 values. */
    max_dist = cfg.max_dist;
    eps = cfg.eps;
    lp_status s = LP_OK;
    if (lp_tensor_file_meta(golden, "max_dist")) s = lp_check_meta_int(golden, "max_dist", &max_dist);
    if (s == LP_OK && lp_tensor_file_meta(golden, "eps")) s = lp_check_meta_double(golden, "eps", &eps);
    cfg.max_dist = max_dist;
    cfg.eps = (float)eps;
    size_t per = (size_t)len * (size_t)cfg.dim;
    float *hidden = malloc(per * (size_t)nb * sizeof *hidden + 1), *zeroed = malloc(per * (size_t)nb * sizeof *zeroed + 1);
    if (s == LP_OK && (!hidden || !zeroed)) s = lp_fail(LP_ERR_NOMEM, "out of memory for the umT5 outputs");
    for (int64_t b = 0; b < nb && s == LP_OK; b++) {
        s = lp_umt5_encode(&cfg, &w, ids + b * len, mask + b * len, len, LP_UMT5_ALL_ROWS, pool, hidden + b * per);
        if (s == LP_OK)
            s = lp_umt5_encode(&cfg, &w, ids + b * len, mask + b * len, len, LP_UMT5_REAL_ROWS, pool, zeroed + b * per);
    }
    const lp_tensor *ref;
    if (s == LP_OK && (s = lp_tensor_file_get(golden, "out.hidden", &ref)) == LP_OK)
        lp_check_compare(c, ref, hidden, (int64_t)per * nb);
    if (s == LP_OK && (s = lp_tensor_file_get(golden, "out.context_zeroed", &ref)) == LP_OK)
        lp_check_compare(c, ref, zeroed, (int64_t)per * nb);
    free(hidden);
    free(zeroed);
    lp_umt5_weights_free(&w);
    return s;
}

lp_status check_umt5_encoder(lp_check_ctx *c, const lp_tensor_file *golden) {
    int64_t *ids = NULL, *mask = NULL, nb, len, mb, ml;
    lp_tensor_file *wf = NULL;
    lp_pool *pool = NULL;
    char prefix[256] = "w.";
    lp_status s = load_i64(golden, "in.ids", &ids, &nb, &len);
    if (s == LP_OK) s = load_i64(golden, "in.mask", &mask, &mb, &ml);
    if (s == LP_OK && (mb != nb || ml != len))
        s = lp_fail(LP_ERR_SHAPE, "%s: in.mask [%lld, %lld] does not match in.ids [%lld, %lld]", c->golden_path,
                    (long long)mb, (long long)ml, (long long)nb, (long long)len);
    if (s == LP_OK && c->weights_path) {
        s = lp_tensor_file_open(c->weights_path, &wf);
        if (s == LP_OK) s = lp_umt5_detect_prefix(wf, prefix, sizeof prefix);
    }
    if (s == LP_OK) s = lp_pool_create(c->threads, &pool);
    if (s == LP_OK) s = run(c, golden, wf ? wf : golden, prefix, pool, ids, mask, nb, len);
    lp_pool_destroy(pool);
    if (wf) lp_tensor_file_close(wf);
    free(ids);
    free(mask);
    return s;
}
