#include "text.h"

#include <stdlib.h>
#include <string.h>

#include "../io/tensor_file.h"
#include "../model/tokenizer.h"
#include "../model/umt5.h"
#include "../model/umt5_random.h"

typedef enum { TEXT_UMT5, TEXT_EMBEDDING, TEXT_DEMO } text_kind;

struct lp_text {
    text_kind kind;
    int text_len;
    lp_pool *pool;
    lp_tensor_file *weights;
    lp_tokenizer *tok;
    lp_umt5_weights w;
    lp_umt5_config cfg;
    int loaded;
    /* embedding file */
    char *prompt;
    float *context;
    int rows, dim;
};

static lp_status load_umt5(lp_text *t) {
    char prefix[128];
    LP_TRY(lp_umt5_detect_prefix(t->weights, prefix, sizeof prefix));
    LP_TRY(lp_umt5_load(t->weights, prefix, 0, &t->w, &t->cfg));
    t->loaded = 1;
    t->dim = (int)t->cfg.dim;
    return LP_OK;
}

lp_status lp_text_open_umt5(const char *encoder_path, const char *tokenizer_path, int text_len, lp_pool *pool,
                            lp_text **out) {
    *out = NULL;
    lp_text *t = calloc(1, sizeof *t);
    if (!t) return lp_fail(LP_ERR_NOMEM, "out of memory");
    t->kind = TEXT_UMT5;
    t->text_len = text_len;
    t->pool = pool;
    lp_status s = lp_tensor_file_open(encoder_path, &t->weights);
    if (s == LP_OK) s = load_umt5(t);
    if (s == LP_OK) s = lp_tokenizer_load(tokenizer_path, &t->tok);
    if (s != LP_OK) {
        lp_text_free(t);
        return s;
    }
    *out = t;
    return LP_OK;
}

lp_status lp_text_open_embedding(const char *path, lp_text **out) {
    *out = NULL;
    lp_tensor_file *f;
    LP_TRY(lp_tensor_file_open(path, &f));
    lp_text *t = calloc(1, sizeof *t);
    const lp_tensor *ctx = lp_tensor_file_find(f, "context");
    const char *prompt = lp_tensor_file_meta(f, "prompt");
    lp_status s = LP_OK;
    if (!t) s = lp_fail(LP_ERR_NOMEM, "out of memory");
    else if (!ctx || ctx->ndim != 2 || !prompt)
        s = lp_fail(LP_ERR_FORMAT, "%s: not a prompt embedding (needs tensor 'context' [L, dim] and metadata 'prompt')",
                    path);
    if (s == LP_OK) {
        t->kind = TEXT_EMBEDDING;
        t->rows = (int)ctx->shape[0];
        t->dim = (int)ctx->shape[1];
        const char *len = lp_tensor_file_meta(f, "length"); /* real rows; the rest is zero padding */
        if (len && atoi(len) > 0 && atoi(len) <= t->rows) t->rows = atoi(len);
        t->prompt = strdup(prompt);
        t->context = malloc((size_t)lp_tensor_numel(ctx) * sizeof(float) + 1);
        if (!t->prompt || !t->context) s = lp_fail(LP_ERR_NOMEM, "out of memory");
        else s = lp_tensor_read_f32(ctx, 0, lp_tensor_numel(ctx), t->context);
    }
    lp_tensor_file_close(f);
    if (s != LP_OK) {
        lp_text_free(t);
        return s;
    }
    *out = t;
    return LP_OK;
}

lp_status lp_text_open_demo(int text_dim, int text_len, lp_pool *pool, lp_text **out) {
    *out = NULL;
    lp_text *t = calloc(1, sizeof *t);
    if (!t) return lp_fail(LP_ERR_NOMEM, "out of memory");
    t->kind = TEXT_DEMO;
    t->text_len = text_len;
    t->pool = pool;
    lp_umt5_config c = {.vocab = 256 + 3, .dim = text_dim, .dim_attn = text_dim, .dim_ffn = 2 * text_dim,
                        .num_heads = 4, .num_layers = 2, .num_buckets = 32};
    lp_status s = lp_umt5_random_weights(&c, LP_F32, 31337, &t->weights);
    if (s == LP_OK) s = load_umt5(t);
    if (s != LP_OK) {
        lp_text_free(t);
        return s;
    }
    *out = t;
    return LP_OK;
}

void lp_text_free(lp_text *t) {
    if (!t) return;
    if (t->loaded) lp_umt5_weights_free(&t->w);
    lp_tokenizer_free(t->tok);
    lp_tensor_file_close(t->weights);
    free(t->prompt);
    free(t->context);
    free(t);
}

int lp_text_dim(const lp_text *t) { return t->dim; }

lp_status lp_text_encode(lp_text *t, const char *prompt, float **context, int *rows) {
    *context = NULL;
    *rows = 0;
    if (t->kind == TEXT_EMBEDDING) {
        if (strcmp(prompt, t->prompt))
            return lp_fail(LP_ERR_ARG, "the prompt embedding file was made for \"%s\", not \"%s\"", t->prompt, prompt);
        size_t n = (size_t)t->rows * (size_t)t->dim;
        *context = malloc(n * sizeof(float) + 1);
        if (!*context) return lp_fail(LP_ERR_NOMEM, "out of memory");
        memcpy(*context, t->context, n * sizeof(float));
        *rows = t->rows;
        return LP_OK;
    }
    int L = t->text_len, n = 0;
    int64_t *ids = calloc((size_t)L, sizeof *ids), *mask = calloc((size_t)L, sizeof *mask);
    int32_t *ids32 = calloc((size_t)L, sizeof *ids32);
    uint8_t *mask8 = calloc((size_t)L, 1);
    lp_status s = LP_OK;
    if (!ids || !mask || !ids32 || !mask8) {
        s = lp_fail(LP_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (t->kind == TEXT_UMT5) {
        if ((s = lp_tokenizer_encode_prompt(t->tok, prompt, L, ids32, mask8, &n)) != LP_OK) goto out;
        for (int i = 0; i < L; i++) {
            ids[i] = ids32[i];
            mask[i] = mask8[i];
        }
    } else { /* demo: UTF-8 bytes, at most L − 1, then </s> */
        for (const unsigned char *p = (const unsigned char *)prompt; *p && n < L - 1; p++) ids[n++] = *p + 3;
        ids[n++] = 1;
        for (int i = 0; i < n; i++) mask[i] = 1;
    }
    float *out_rows = malloc((size_t)n * (size_t)t->dim * sizeof *out_rows + 1);
    if (!out_rows) {
        s = lp_fail(LP_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* padded keys are masked, so the real rows need only the real tokens */
    s = lp_umt5_encode(&t->cfg, &t->w, ids, mask, n, LP_UMT5_REAL_ROWS, t->pool, out_rows);
    if (s != LP_OK) {
        free(out_rows);
        goto out;
    }
    *context = out_rows;
    *rows = n;
out:
    free(ids);
    free(mask);
    free(ids32);
    free(mask8);
    return s;
}
