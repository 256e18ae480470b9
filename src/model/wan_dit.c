/* The causal Wan DiT forward (spec/MODEL.md) with LIPAR's pruned forward and
 * K/V recovery policies (spec/LIPAR.md §2–3). */
#include "wan_dit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/arena.h"

struct lp_dit {
    lp_dit_config cfg;
    lp_dit_weights w;
    lp_backend *be;
    const lp_tensor_file *file;
};

/* An f32 copy of a small tensor in the backend's memory. */
static lp_status to_backend_f32(lp_backend *be, const lp_tensor *t, float **out) {
    int64_t n = lp_tensor_numel(t);
    float *host = malloc((size_t)n * sizeof *host);
    if (!host) return lp_fail(LP_ERR_NOMEM, "out of memory copying '%s'", t->name);
    lp_status s = lp_tensor_read_f32(t, 0, n, host);
    if (s == LP_OK && !(*out = be->alloc(be, (size_t)n * sizeof *host))) s = LP_ERR_NOMEM;
    if (s == LP_OK) s = be->upload(be, *out, host, (size_t)n * sizeof *host);
    free(host);
    return s;
}

struct lp_dit_cache {
    lp_backend *be;
    lp_dit_cache_config cc;
    int dim, layers, text_len;
    int64_t frame_tokens;     /* (H/2)·(W/2) */
    size_t kv_row;            /* bytes of a KV-cache row: dim elements of the backend's kv_bf16 type */
    /* per block; k, v, ck and cv hold elements of the kv_bf16 type (written by
     * be->kv_store), last_k and last_v f32 */
    void **k, **v;            /* [capacity, dim], keys rotated */
    void **ck, **cv;          /* cross-attention K/V [text_len, dim] */
    void **last_k, **last_v;  /* saved un-rotated last frame [frame_tokens, dim] */
    int has_last;
    int prompt_set;
    int64_t local_end;        /* tokens held */
    int chunk_frame;          /* start_frame of the chunk the last call worked on (-1: none) */
    int64_t chunk_local_start; /* first slot of that chunk */
    lp_arena scratch;         /* activations, over scratch_base in the backend's memory */
    void *scratch_base;
    /* host arrays of a call's plan, for max_frames frames of tokens */
    int32_t *h_idx, *h_pos, *h_pos_all, *h_fill_dst, *h_fill_src;
    float *h_sinus;
};

/* ---------------------------------------------------------------- loading */

typedef struct {
    const lp_tensor_file *f;
    const char *prefix;
} loader;

static lp_status get(const loader *L, const char *name, const lp_tensor **out) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", L->prefix, name);
    return lp_tensor_file_get(L->f, full, out);
}

static lp_status get_shaped(const loader *L, const char *name, int ndim, const int64_t *shape, const lp_tensor **out) {
    LP_TRY(get(L, name, out));
    return lp_tensor_expect(*out, lp_tensor_file_path(L->f), ndim, shape);
}

/* weight [rows, cols] + bias [rows] of a Linear */
static lp_status get_linear(const loader *L, const char *base, int64_t rows, int64_t cols, const lp_tensor **w,
                            const lp_tensor **b) {
    char name[256];
    int64_t ws[2] = {rows, cols}, bs[1] = {rows};
    snprintf(name, sizeof name, "%s.weight", base);
    LP_TRY(get_shaped(L, name, 2, ws, w));
    if (!b) return LP_OK;
    snprintf(name, sizeof name, "%s.bias", base);
    return get_shaped(L, name, 1, bs, b);
}

static lp_status get_vector(const loader *L, const char *name, int64_t n, const lp_tensor **out) {
    int64_t s[1] = {n};
    return get_shaped(L, name, 1, s, out);
}

static lp_status load_block(const loader *L, lp_backend *be, const lp_dit_config *c, int i, lp_dit_block_weights *b) {
    char base[128];
    int64_t D = c->dim;
#define BLK(s) (snprintf(base, sizeof base, "blocks.%d.%s", i, s), base)
    int64_t ms[3] = {1, 6, D};
    LP_TRY(get_shaped(L, BLK("modulation"), 3, ms, &b->modulation));
    LP_TRY(to_backend_f32(be, b->modulation, &b->modulation_f32));
    LP_TRY(get_linear(L, BLK("self_attn.q"), D, D, &b->sa_q_w, &b->sa_q_b));
    LP_TRY(get_linear(L, BLK("self_attn.k"), D, D, &b->sa_k_w, &b->sa_k_b));
    LP_TRY(get_linear(L, BLK("self_attn.v"), D, D, &b->sa_v_w, &b->sa_v_b));
    LP_TRY(get_linear(L, BLK("self_attn.o"), D, D, &b->sa_o_w, &b->sa_o_b));
    LP_TRY(get_vector(L, BLK("self_attn.norm_q.weight"), D, &b->sa_norm_q));
    LP_TRY(get_vector(L, BLK("self_attn.norm_k.weight"), D, &b->sa_norm_k));
    LP_TRY(get_linear(L, BLK("cross_attn.q"), D, D, &b->ca_q_w, &b->ca_q_b));
    LP_TRY(get_linear(L, BLK("cross_attn.k"), D, D, &b->ca_k_w, &b->ca_k_b));
    LP_TRY(get_linear(L, BLK("cross_attn.v"), D, D, &b->ca_v_w, &b->ca_v_b));
    LP_TRY(get_linear(L, BLK("cross_attn.o"), D, D, &b->ca_o_w, &b->ca_o_b));
    LP_TRY(get_vector(L, BLK("cross_attn.norm_q.weight"), D, &b->ca_norm_q));
    LP_TRY(get_vector(L, BLK("cross_attn.norm_k.weight"), D, &b->ca_norm_k));
    LP_TRY(get_vector(L, BLK("norm3.weight"), D, &b->norm3_w));
    LP_TRY(get_vector(L, BLK("norm3.bias"), D, &b->norm3_b));
    LP_TRY(get_linear(L, BLK("ffn.0"), c->ffn_dim, D, &b->ffn0_w, &b->ffn0_b));
    LP_TRY(get_linear(L, BLK("ffn.2"), D, c->ffn_dim, &b->ffn2_w, &b->ffn2_b));
#undef BLK
    return LP_OK;
}

/* Reads the configuration from the shapes (spec/MODEL.md "Configuration"). */
static lp_status detect_config(const loader *L, int num_heads, int text_len, lp_dit_config *c) {
    const lp_tensor *t;
    LP_TRY(get(L, "patch_embedding.weight", &t));
    if (t->ndim != 5)
        return lp_fail(LP_ERR_SHAPE, "%s: '%s' must be [dim, in, pt, ph, pw]", lp_tensor_file_path(L->f), t->name);
    c->dim = (int)t->shape[0];
    c->in_dim = (int)t->shape[1];
    for (int i = 0; i < 3; i++) c->patch[i] = (int)t->shape[2 + i];
    if (c->patch[0] != 1 || c->patch[1] != 2 || c->patch[2] != 2)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: patch size (%d,%d,%d) is not (1,2,2)", lp_tensor_file_path(L->f),
                       c->patch[0], c->patch[1], c->patch[2]);
    LP_TRY(get(L, "blocks.0.ffn.0.weight", &t));
    c->ffn_dim = (int)t->shape[0];
    LP_TRY(get(L, "text_embedding.0.weight", &t));
    c->text_dim = (int)t->shape[1];
    LP_TRY(get(L, "time_embedding.0.weight", &t));
    c->freq_dim = (int)t->shape[1];
    LP_TRY(get(L, "head.head.weight", &t));
    c->out_dim = (int)(t->shape[0] / 4);
    c->num_layers = 0;
    for (;;) {
        char name[64];
        snprintf(name, sizeof name, "%sblocks.%d.modulation", L->prefix, c->num_layers);
        if (!lp_tensor_file_find(L->f, name)) break;
        c->num_layers++;
    }
    c->num_heads = num_heads > 0 ? num_heads : (c->dim % 128 == 0 ? c->dim / 128 : 1);
    if (c->dim % c->num_heads)
        return lp_fail(LP_ERR_SHAPE, "DiT dim %d is not divisible by %d heads", c->dim, c->num_heads);
    c->head_dim = c->dim / c->num_heads;
    if (c->head_dim % 2 || c->head_dim > 1024)
        return lp_fail(LP_ERR_UNSUPPORTED, "DiT head dim %d unsupported (must be even, <= 1024)", c->head_dim);
    c->text_len = text_len > 0 ? text_len : 512;
    c->eps = 1e-6f;
    return LP_OK;
}

static lp_status load(const loader *L, lp_dit *m, int num_heads, int text_len) {
    lp_dit_config *c = &m->cfg;
    LP_TRY(detect_config(L, num_heads, text_len, c));
    lp_dit_weights *w = &m->w;
    const lp_tensor *pw;
    int64_t D = c->dim;
    int64_t ps[5] = {D, c->in_dim, 1, 2, 2};
    LP_TRY(get_shaped(L, "patch_embedding.weight", 5, ps, &pw));
    w->patch_w = *pw;
    w->patch_w.ndim = 2;
    w->patch_w.shape[1] = (int64_t)c->in_dim * 4;
    LP_TRY(get_vector(L, "patch_embedding.bias", D, &w->patch_b));
    LP_TRY(get_linear(L, "text_embedding.0", D, c->text_dim, &w->text0_w, &w->text0_b));
    LP_TRY(get_linear(L, "text_embedding.2", D, D, &w->text2_w, &w->text2_b));
    LP_TRY(get_linear(L, "time_embedding.0", D, c->freq_dim, &w->time0_w, &w->time0_b));
    LP_TRY(get_linear(L, "time_embedding.2", D, D, &w->time2_w, &w->time2_b));
    LP_TRY(get_linear(L, "time_projection.1", 6 * D, D, &w->tproj_w, &w->tproj_b));
    LP_TRY(get_linear(L, "head.head", (int64_t)c->out_dim * 4, D, &w->head_w, &w->head_b));
    const lp_tensor *hm;
    int64_t hs[3] = {1, 2, D};
    LP_TRY(get_shaped(L, "head.modulation", 3, hs, &hm));
    LP_TRY(to_backend_f32(m->be, hm, &w->head_modulation_f32));
    if (c->num_layers == 0) return lp_fail(LP_ERR_MISSING, "%s: no DiT blocks found", lp_tensor_file_path(L->f));
    w->blocks = calloc((size_t)c->num_layers, sizeof *w->blocks);
    if (!w->blocks) return lp_fail(LP_ERR_NOMEM, "out of memory loading the DiT");
    for (int i = 0; i < c->num_layers; i++) LP_TRY(load_block(L, m->be, c, i, &w->blocks[i]));
    return LP_OK;
}

lp_status lp_dit_load(const lp_tensor_file *f, const char *prefix, int num_heads, int text_len, lp_backend *be,
                      lp_dit **out) {
    *out = NULL;
    lp_dit *m = calloc(1, sizeof *m);
    if (!m) return lp_fail(LP_ERR_NOMEM, "out of memory loading the DiT");
    m->be = be;
    m->file = f;
    loader L = {f, prefix ? prefix : ""};
    lp_status s = load(&L, m, num_heads, text_len);
    if (s != LP_OK) {
        lp_dit_free(m);
        return s;
    }
    *out = m;
    return LP_OK;
}

void lp_dit_free(lp_dit *m) {
    if (!m) return;
    if (m->w.blocks)
        for (int i = 0; i < m->cfg.num_layers; i++) m->be->release(m->be, m->w.blocks[i].modulation_f32);
    free(m->w.blocks);
    m->be->release(m->be, m->w.head_modulation_f32);
    free(m);
}

const lp_dit_config *lp_dit_get_config(const lp_dit *m) { return &m->cfg; }

void lp_dit_cache_grid(const lp_dit_cache *c, int *H, int *W) {
    *H = c->cc.latent_h;
    *W = c->cc.latent_w;
}

int64_t lp_dit_latent_elems(const lp_dit *m, const lp_dit_cache *c, int F) {
    return (int64_t)F * m->cfg.in_dim * c->cc.latent_h * c->cc.latent_w;
}

/* ------------------------------------------------------------------ cache */

/* Row `row` of a KV-cache buffer of c (rows of c->kv_row bytes). */
static void *kv_rows(const lp_dit_cache *c, void *base, int64_t row) {
    return (char *)base + (size_t)row * c->kv_row;
}

static void **alloc_per_block(lp_backend *be, int layers, size_t bytes) {
    void **p = calloc((size_t)layers, sizeof *p);
    if (!p) return NULL;
    for (int i = 0; i < layers; i++)
        if (!(p[i] = be->alloc(be, bytes ? bytes : 1))) return p; /* caller checks each */
    return p;
}

static void free_per_block(lp_backend *be, void **p, int layers) {
    if (!p) return;
    for (int i = 0; i < layers; i++)
        if (p[i]) be->release(be, p[i]);
    free(p);
}

/* Scratch floats for a call over up to n tokens (see lp_dit_forward). */
static size_t scratch_bytes(const lp_dit_config *c, int64_t n, int max_frames, int H, int W) {
    size_t D = (size_t)c->dim, N = (size_t)n, F = (size_t)max_frames;
    size_t b = 0;
    b += lp_arena_round(F * (size_t)c->in_dim * (size_t)H * (size_t)W * 4);  /* latents in */
    b += lp_arena_round(F * (size_t)c->out_dim * (size_t)H * (size_t)W * 4); /* flow out */
    b += 7 * lp_arena_round(N * D * 4);                        /* x, xn, q, k, v, att, y */
    b += lp_arena_round(N * (size_t)c->ffn_dim * 4);           /* ffn hidden */
    b += lp_arena_round(N * (size_t)c->in_dim * 4 * 4);        /* patches */
    b += lp_arena_round(N * (size_t)c->out_dim * 4 * 4);       /* head out */
    b += 2 * lp_arena_round(N * D * 4);                        /* rebuilt chunk K, V */
    b += lp_arena_round(F * (size_t)c->freq_dim * 4) + 3 * lp_arena_round(F * D * 4) + 2 * lp_arena_round(F * 6 * D * 4);
    b += 2 * lp_arena_round(F * D * 4);                        /* head shift/scale */
    return b + 4096;
}

lp_status lp_dit_cache_create(const lp_dit *m, const lp_dit_cache_config *cc, lp_dit_cache **out) {
    *out = NULL;
    if (cc->latent_h <= 0 || cc->latent_w <= 0 || cc->latent_h % 2 || cc->latent_w % 2)
        return lp_fail(LP_ERR_SHAPE, "DiT cache: latent grid %dx%d must be positive and even", cc->latent_h,
                       cc->latent_w);
    int64_t ft = (int64_t)(cc->latent_h / 2) * (cc->latent_w / 2);
    if (cc->capacity <= 0 || cc->max_frames <= 0 || cc->sink_frames < 0)
        return lp_fail(LP_ERR_ARG, "DiT cache: invalid configuration");
    if ((int64_t)cc->max_frames * ft > cc->capacity)
        return lp_fail(LP_ERR_ARG, "DiT cache: %lld tokens cannot hold a chunk of %d frames of %d tokens",
                       (long long)cc->capacity, cc->max_frames, (int)ft);
    if ((int64_t)cc->sink_frames * ft + (int64_t)cc->max_frames * ft > cc->capacity &&
        cc->local_attn != -1)
        return lp_fail(LP_ERR_ARG, "DiT cache: the sink and one chunk do not fit in %lld tokens",
                       (long long)cc->capacity);
    const lp_dit_config *c = &m->cfg;
    lp_dit_cache *k = calloc(1, sizeof *k);
    if (!k) return lp_fail(LP_ERR_NOMEM, "out of memory creating the DiT cache");
    k->be = m->be;
    k->cc = *cc;
    k->frame_tokens = ft;
    k->dim = c->dim;
    k->layers = c->num_layers;
    k->text_len = c->text_len;
    size_t D = (size_t)c->dim;
    k->kv_row = D * (m->be->kv_bf16 ? 2 : 4);
    k->k = alloc_per_block(m->be, c->num_layers, (size_t)cc->capacity * k->kv_row);
    k->v = alloc_per_block(m->be, c->num_layers, (size_t)cc->capacity * k->kv_row);
    k->ck = alloc_per_block(m->be, c->num_layers, (size_t)c->text_len * k->kv_row);
    k->cv = alloc_per_block(m->be, c->num_layers, (size_t)c->text_len * k->kv_row);
    k->last_k = alloc_per_block(m->be, c->num_layers, (size_t)ft * D * sizeof(float));
    k->last_v = alloc_per_block(m->be, c->num_layers, (size_t)ft * D * sizeof(float));
    int ok = k->k && k->v && k->ck && k->cv && k->last_k && k->last_v;
    for (int i = 0; ok && i < c->num_layers; i++)
        ok = k->k[i] && k->v[i] && k->ck[i] && k->cv[i] && k->last_k[i] && k->last_v[i];
    lp_status s = ok ? LP_OK
                     : lp_fail(LP_ERR_NOMEM, "out of memory allocating a KV cache of %lld tokens x %d layers",
                               (long long)cc->capacity, c->num_layers);
    if (s == LP_OK) {
        size_t N = (size_t)cc->max_frames * (size_t)ft;
        k->h_idx = malloc(N * sizeof(int32_t));
        k->h_pos = malloc(3 * N * sizeof(int32_t));
        k->h_pos_all = malloc(3 * N * sizeof(int32_t));
        k->h_fill_dst = malloc(N * sizeof(int32_t));
        k->h_fill_src = malloc(N * sizeof(int32_t));
        k->h_sinus = malloc((size_t)cc->max_frames * (size_t)c->freq_dim * sizeof(float));
        if (!k->h_idx || !k->h_pos || !k->h_pos_all || !k->h_fill_dst || !k->h_fill_src || !k->h_sinus)
            s = lp_fail(LP_ERR_NOMEM, "out of memory for the DiT call plan");
    }
    if (s == LP_OK) {
        size_t bytes = scratch_bytes(c, (int64_t)cc->max_frames * ft, cc->max_frames, cc->latent_h, cc->latent_w);
        k->scratch_base = m->be->alloc(m->be, bytes);
        if (!k->scratch_base) s = LP_ERR_NOMEM;
        else lp_arena_wrap(&k->scratch, k->scratch_base, bytes);
    }
    if (s != LP_OK) {
        lp_dit_cache_free(k);
        return s;
    }
    lp_dit_cache_reset(k);
    *out = k;
    return LP_OK;
}

void lp_dit_cache_free(lp_dit_cache *c) {
    if (!c) return;
    free_per_block(c->be, c->k, c->layers);
    free_per_block(c->be, c->v, c->layers);
    free_per_block(c->be, c->ck, c->layers);
    free_per_block(c->be, c->cv, c->layers);
    free_per_block(c->be, c->last_k, c->layers);
    free_per_block(c->be, c->last_v, c->layers);
    if (c->scratch_base) c->be->release(c->be, c->scratch_base);
    free(c->h_idx);
    free(c->h_pos);
    free(c->h_pos_all);
    free(c->h_fill_dst);
    free(c->h_fill_src);
    free(c->h_sinus);
    free(c);
}

void lp_dit_cache_reset(lp_dit_cache *c) {
    c->local_end = 0;
    c->chunk_frame = -1;
    c->chunk_local_start = 0;
    c->has_last = 0;
}

/* ------------------------------------------------------------------- text */

lp_status lp_dit_set_prompt(lp_dit *m, lp_dit_cache *c, const float *context, int L) {
    const lp_dit_config *cfg = &m->cfg;
    lp_backend *be = m->be;
    if (L < 0 || L > cfg->text_len)
        return lp_fail(LP_ERR_SHAPE, "prompt context has %d rows, the model takes at most %d", L, cfg->text_len);
    size_t T = (size_t)cfg->text_len, D = (size_t)cfg->dim, ctx_bytes = T * (size_t)cfg->text_dim * sizeof(float);
    float *host = calloc(T * (size_t)cfg->text_dim, sizeof *host); /* rows past L stay zero */
    float *ctx = be->alloc(be, ctx_bytes), *h = be->alloc(be, T * D * sizeof *h), *e = be->alloc(be, T * D * sizeof *e);
    lp_status s = LP_OK;
    if (!host || !ctx || !h || !e) {
        s = lp_fail(LP_ERR_NOMEM, "out of memory encoding the prompt context");
        goto out;
    }
    memcpy(host, context, (size_t)L * (size_t)cfg->text_dim * sizeof *host);
    if ((s = be->upload(be, ctx, host, ctx_bytes)) != LP_OK) goto out;
    /* text_embedding: Linear → GELU(tanh) → Linear */
    if ((s = be->linear(be, h, ctx, (int64_t)T, m->w.text0_w, m->w.text0_b)) != LP_OK) goto out;
    be->gelu_tanh(be, h, (int64_t)(T * D));
    if ((s = be->linear(be, e, h, (int64_t)T, m->w.text2_w, m->w.text2_b)) != LP_OK) goto out;
    /* per block K = norm_k(k(e)), V = v(e), computed in h (free again) and
     * stored in the cache's element type */
    for (int i = 0; i < cfg->num_layers; i++) {
        const lp_dit_block_weights *b = &m->w.blocks[i];
        if ((s = be->linear(be, h, e, (int64_t)T, b->ca_k_w, b->ca_k_b)) != LP_OK) goto out;
        be->rms_norm(be, h, (int64_t)T, (int64_t)D, b->ca_norm_k, cfg->eps);
        if ((s = be->kv_store(be, c->ck[i], h, (int64_t)T, cfg->num_heads, cfg->head_dim, NULL)) != LP_OK) goto out;
        if ((s = be->linear(be, h, e, (int64_t)T, b->ca_v_w, b->ca_v_b)) != LP_OK) goto out;
        if ((s = be->kv_store(be, c->cv[i], h, (int64_t)T, cfg->num_heads, cfg->head_dim, NULL)) != LP_OK) goto out;
    }
    be->synchronize(be);
    c->prompt_set = 1;
out:
    free(host);
    if (ctx) be->release(be, ctx);
    if (h) be->release(be, h);
    if (e) be->release(be, e);
    return s;
}

/* ---------------------------------------------------------------- forward */

/* sinusoidal time embedding [cos(t·f_k), sin(t·f_k)], f_k = 10000^(−k/half),
 * in fp64 then cast (spec/MODEL.md step 2) */
static void time_sinusoid(int freq_dim, double t, float *out) {
    int half = freq_dim / 2;
    for (int k = 0; k < half; k++) {
        double f = pow(10000.0, -(double)k / (double)half);
        out[k] = (float)cos(t * f);
        out[half + k] = (float)sin(t * f);
    }
}

double lp_dit_flops(const lp_dit_config *c, int64_t n, int64_t lk) {
    double D = c->dim, Fd = c->ffn_dim, N = (double)n;
    double per_block = 2 * N * D * D * 4      /* self q, k, v, o */
                       + 2 * N * D * D * 2    /* cross q, o */
                       + 2 * N * D * Fd * 2   /* ffn */
                       + 4 * N * (double)lk * D       /* self-attention */
                       + 4 * N * (double)c->text_len * D; /* cross-attention */
    return per_block * c->num_layers + 2 * N * D * (c->in_dim * 4) + 2 * N * D * (c->out_dim * 4);
}

typedef struct {
    int64_t n;          /* computed tokens */
    int64_t n_all;      /* tokens of the chunk */
    int32_t *idx;       /* [n] chunk-local index of each computed token (host) */
    int32_t *pos;       /* [n][3] (host) */
    int32_t *pos_all;   /* [n_all][3] (host) */
    int64_t seg_start[64], seg_count[64]; /* computed tokens of each frame */
    /* K/V recovery (LP_KV_CHAIN / LP_KV_DUPLICATE): per frame, the pruned
     * slots fill_dst[fill_start[f] ..] take row fill_src[..] of the saved last
     * frame (from_last[f]) or of the rebuilt chunk (the chain) */
    int32_t *fill_dst, *fill_src;
    int64_t fill_start[64], fill_count[64];
    int from_last[64];
    int64_t slot;       /* first cache slot of the chunk */
    int nranges;        /* cached key ranges attended to */
    int64_t range_begin[2], range_end[2];
} call_plan;

/* Decides where the chunk lives in the cache, evicting when a new chunk does
 * not fit (spec/MODEL.md "KV cache and the streaming loop"), and which keys it
 * attends to (spec/LIPAR.md §3 "Attention window"). */
static lp_status place_chunk(lp_dit_cache *c, const lp_dit_call *call, int64_t num_new, call_plan *p) {
    const lp_dit_cache_config *cc = &c->cc;
    int64_t hw = c->frame_tokens;
    if (call->start_frame != c->chunk_frame) {
        if (call->start_frame < c->chunk_frame)
            return lp_fail(LP_ERR_ARG, "DiT: chunk at frame %d comes after frame %d", call->start_frame,
                           c->chunk_frame);
        if (c->local_end + num_new > cc->capacity) {
            if (cc->local_attn == -1 && cc->sink_frames == 0 && cc->trim_window_frames == 0)
                return lp_fail(LP_ERR_ARG,
                               "DiT: the global KV cache of %lld tokens is full (the stream is longer than it holds; "
                               "use a local window)",
                               (long long)cc->capacity);
            int64_t sink = (int64_t)cc->sink_frames * hw;
            int64_t evicted = c->local_end + num_new - cc->capacity;
            int64_t rolled = c->local_end - evicted - sink;
            for (int i = 0; i < c->layers; i++) {
                LP_TRY(c->be->copy(c->be, kv_rows(c, c->k[i], sink), kv_rows(c, c->k[i], sink + evicted),
                                   (size_t)rolled * c->kv_row));
                LP_TRY(c->be->copy(c->be, kv_rows(c, c->v[i], sink), kv_rows(c, c->v[i], sink + evicted),
                                   (size_t)rolled * c->kv_row));
            }
            c->local_end -= evicted;
        }
        c->chunk_frame = call->start_frame;
        c->chunk_local_start = c->local_end;
    }
    if (c->chunk_local_start + num_new > cc->capacity)
        return lp_fail(LP_ERR_ARG, "DiT: %lld tokens do not fit the KV cache", (long long)num_new);
    c->local_end = c->chunk_local_start + num_new;
    p->slot = c->chunk_local_start;
    int64_t end = c->local_end;
    p->nranges = 1;
    if (cc->trim_window_frames > 0) {
        int64_t first_end = (int64_t)cc->trim_sink_frames * hw;
        first_end = first_end < end ? first_end : end;
        int64_t last_start = end - (int64_t)cc->trim_window_frames * hw;
        last_start = last_start > first_end ? last_start : first_end;
        p->range_begin[0] = 0;
        p->range_end[0] = first_end;
        p->range_begin[1] = last_start;
        p->range_end[1] = end;
        p->nranges = 2;
    } else {
        int64_t window = cc->max_attn_tokens > 0 ? cc->max_attn_tokens
                         : cc->local_attn == -1  ? cc->capacity
                                                 : (int64_t)cc->local_attn * hw;
        p->range_begin[0] = end > window ? end - window : 0;
        p->range_end[0] = end;
    }
    return LP_OK;
}

typedef struct {
    float *xin, *xout, *x, *xn, *q, *k, *v, *att, *y, *hid, *patches, *head_out, *kfull, *vfull;
    float *sinus, *e, *e0, *mod, *tmp, *shift, *scale;
} buffers;

static lp_status alloc_buffers(lp_arena *a, const lp_dit_config *c, int64_t n, int64_t n_all, int F, int64_t HW,
                               buffers *b) {
    size_t D = (size_t)c->dim;
#define TAKE(ptr, count)                                                   \
    do {                                                                   \
        if (!((ptr) = lp_arena_alloc(a, (size_t)(count) * sizeof *(ptr)))) \
            return LP_ERR_NOMEM;                                           \
    } while (0)
    TAKE(b->xin, (size_t)F * (size_t)c->in_dim * (size_t)HW);
    TAKE(b->xout, (size_t)F * (size_t)c->out_dim * (size_t)HW);
    TAKE(b->x, n * D);
    TAKE(b->xn, n * D);
    TAKE(b->q, n * D);
    TAKE(b->k, n * D);
    TAKE(b->v, n * D);
    TAKE(b->att, n * D);
    TAKE(b->y, n * D);
    TAKE(b->hid, n * (size_t)c->ffn_dim);
    TAKE(b->patches, n * (size_t)c->in_dim * 4);
    TAKE(b->head_out, n * (size_t)c->out_dim * 4);
    TAKE(b->kfull, n_all * D);
    TAKE(b->vfull, n_all * D);
    TAKE(b->sinus, (size_t)F * (size_t)c->freq_dim);
    TAKE(b->e, (size_t)F * D);
    TAKE(b->tmp, (size_t)F * D);
    TAKE(b->e0, (size_t)F * 6 * D);
    TAKE(b->mod, (size_t)F * 6 * D);
    TAKE(b->shift, (size_t)F * D);
    TAKE(b->scale, (size_t)F * D);
#undef TAKE
    return LP_OK;
}

/* K/V of the chunk in its cache slots, built per policy (spec/LIPAR.md §3),
 * keys rotated at their own positions as they are stored. */
static lp_status write_chunk_kv(lp_dit *m, lp_dit_cache *c, int layer, const lp_dit_call *call, const call_plan *p,
                                buffers *b) {
    lp_backend *be = m->be;
    const lp_dit_config *cfg = &m->cfg;
    int64_t D = cfg->dim, hw = c->frame_tokens;
    size_t row = (size_t)D * sizeof(float);
    const float *src_k = b->k, *src_v = b->v; /* what goes into the slots (un-rotated) */
    int64_t rows = p->n;
    const int32_t *pos = p->pos;
    if (call->kv_policy == LP_KV_CHAIN || call->kv_policy == LP_KV_DUPLICATE || call->kv_policy == LP_KV_MERGE) {
        /* rebuild every token of the chunk: kept rows from this call, pruned
         * rows frame by frame from the saved last frame, the frame before, or
         * (merging) the computed token they were merged into */
        LP_TRY(be->copy_rows(be, b->kfull, p->idx, b->k, NULL, p->n, D));
        LP_TRY(be->copy_rows(be, b->vfull, p->idx, b->v, NULL, p->n, D));
        for (int f = 0; f < call->n_frames; f++) {
            if (!p->fill_count[f]) continue;
            const int32_t *dst = p->fill_dst + p->fill_start[f], *src = p->fill_src + p->fill_start[f];
            if (p->from_last[f] && !c->has_last)
                return lp_fail(LP_ERR_ARG,
                               "DiT: a pruned token in frame %d of the chunk at frame %d has no previous frame to "
                               "recover from",
                               f, call->start_frame);
            LP_TRY(be->copy_rows(be, b->kfull, dst, p->from_last[f] ? c->last_k[layer] : b->kfull, src,
                                 p->fill_count[f], D));
            LP_TRY(be->copy_rows(be, b->vfull, dst, p->from_last[f] ? c->last_v[layer] : b->vfull, src,
                                 p->fill_count[f], D));
        }
        src_k = b->kfull;
        src_v = b->vfull;
        rows = p->n_all;
        pos = p->pos_all;
    }
    if (call->save_last_frame) {
        if (rows != p->n_all) return lp_fail(LP_ERR_ARG, "DiT: saving the last frame needs every token of it");
        LP_TRY(be->copy(be, c->last_k[layer], src_k + (p->n_all - hw) * D, (size_t)hw * row));
        LP_TRY(be->copy(be, c->last_v[layer], src_v + (p->n_all - hw) * D, (size_t)hw * row));
    }
    LP_TRY(be->kv_store(be, kv_rows(c, c->k[layer], p->slot), src_k, rows, cfg->num_heads, cfg->head_dim, pos));
    return be->kv_store(be, kv_rows(c, c->v[layer], p->slot), src_v, rows, cfg->num_heads, cfg->head_dim, NULL);
}

/* Applies fn(x rows of frame f, per-frame vectors) over the frame segments. */
static void modulate_frames(lp_backend *be, float *x, const call_plan *p, int F, int64_t D, const float *shift,
                            int64_t shift_stride, const float *scale, int64_t scale_stride) {
    for (int f = 0; f < F; f++)
        if (p->seg_count[f])
            be->modulate(be, x + p->seg_start[f] * D, p->seg_count[f], D, shift + f * shift_stride,
                         scale + f * scale_stride);
}

static void gate_frames(lp_backend *be, float *x, const float *y, const call_plan *p, int F, int64_t D,
                        const float *gate, int64_t stride) {
    for (int f = 0; f < F; f++)
        if (p->seg_count[f])
            be->gated_add(be, x + p->seg_start[f] * D, y + p->seg_start[f] * D, p->seg_count[f], D, gate + f * stride);
}

static lp_status block_forward(lp_dit *m, lp_dit_cache *c, int layer, const lp_dit_call *call, const call_plan *p,
                               buffers *b, const float *mod /* [F, 6, D] */) {
    lp_backend *be = m->be;
    const lp_dit_config *cfg = &m->cfg;
    const lp_dit_block_weights *w = &m->w.blocks[layer];
    int F = call->n_frames;
    int64_t D = cfg->dim, n = p->n, M6 = 6 * D;
    /* self-attention on LN(x)·(1+m1)+m0 */
    be->layer_norm(be, b->xn, b->x, n, D, NULL, NULL, cfg->eps);
    modulate_frames(be, b->xn, p, F, D, mod + 0 * D, M6, mod + 1 * D, M6);
    LP_TRY(be->linear(be, b->q, b->xn, n, w->sa_q_w, w->sa_q_b));
    LP_TRY(be->linear(be, b->k, b->xn, n, w->sa_k_w, w->sa_k_b));
    LP_TRY(be->linear(be, b->v, b->xn, n, w->sa_v_w, w->sa_v_b));
    be->rms_norm(be, b->q, n, D, w->sa_norm_q, cfg->eps);
    be->rms_norm(be, b->k, n, D, w->sa_norm_k, cfg->eps);
    LP_TRY(write_chunk_kv(m, c, layer, call, p, b));
    be->rope3d(be, b->q, n, cfg->num_heads, cfg->head_dim, p->pos);
    lp_kv_range self[2];
    for (int r = 0; r < p->nranges; r++) {
        self[r].k = kv_rows(c, c->k[layer], p->range_begin[r]);
        self[r].v = kv_rows(c, c->v[layer], p->range_begin[r]);
        self[r].n = p->range_end[r] - p->range_begin[r];
        self[r].ld = D;
        self[r].bf16 = be->kv_bf16;
    }
    float scale = 1.0f / sqrtf((float)cfg->head_dim);
    LP_TRY(be->attention(be, b->att, b->q, n, cfg->num_heads, cfg->head_dim, self, p->nranges, scale));
    LP_TRY(be->linear(be, b->y, b->att, n, w->sa_o_w, w->sa_o_b));
    gate_frames(be, b->x, b->y, p, F, D, mod + 2 * D, M6);
    /* cross-attention on norm3(x), no modulation, no gate */
    be->layer_norm(be, b->xn, b->x, n, D, w->norm3_w, w->norm3_b, cfg->eps);
    LP_TRY(be->linear(be, b->q, b->xn, n, w->ca_q_w, w->ca_q_b));
    be->rms_norm(be, b->q, n, D, w->ca_norm_q, cfg->eps);
    lp_kv_range text = {c->ck[layer], c->cv[layer], cfg->text_len, D, be->kv_bf16};
    LP_TRY(be->attention(be, b->att, b->q, n, cfg->num_heads, cfg->head_dim, &text, 1, scale));
    LP_TRY(be->linear(be, b->y, b->att, n, w->ca_o_w, w->ca_o_b));
    be->gated_add(be, b->x, b->y, n, D, NULL);
    /* FFN on LN(x)·(1+m4)+m3 */
    be->layer_norm(be, b->xn, b->x, n, D, NULL, NULL, cfg->eps);
    modulate_frames(be, b->xn, p, F, D, mod + 3 * D, M6, mod + 4 * D, M6);
    LP_TRY(be->linear(be, b->hid, b->xn, n, w->ffn0_w, w->ffn0_b));
    be->gelu_tanh(be, b->hid, n * cfg->ffn_dim);
    LP_TRY(be->linear(be, b->y, b->hid, n, w->ffn2_w, w->ffn2_b));
    gate_frames(be, b->x, b->y, p, F, D, mod + 5 * D, M6);
    return LP_OK;
}

/* Builds the token list, positions and recovery lists of the call. */
static void plan_tokens(const lp_dit_call *call, int h, int w, call_plan *p) {
    int F = call->n_frames;
    int64_t hw = (int64_t)h * w;
    p->n_all = F * hw;
    int64_t n = 0, nf = 0;
    for (int f = 0; f < F; f++) {
        p->fill_start[f] = nf;
        p->from_last[f] = (f == 0 || call->kv_policy == LP_KV_DUPLICATE) && call->kv_policy != LP_KV_MERGE;
        for (int64_t s = 0; call->keep && s < hw; s++)
            if (!call->keep[f * hw + s]) {
                p->fill_dst[nf] = (int32_t)(f * hw + s);
                p->fill_src[nf++] = call->kv_policy == LP_KV_MERGE ? call->merge_dst[f * hw + s]
                                    : p->from_last[f]              ? (int32_t)s
                                                                   : (int32_t)((f - 1) * hw + s);
            }
        p->fill_count[f] = nf - p->fill_start[f];
    }
    for (int f = 0; f < F; f++) {
        p->seg_start[f] = n;
        for (int64_t s = 0; s < hw; s++) {
            int64_t t = f * hw + s;
            int32_t *pa = p->pos_all + 3 * t;
            pa[0] = call->start_frame + f;
            pa[1] = (int32_t)(s / w);
            pa[2] = (int32_t)(s % w);
            if (call->keep && !call->keep[t]) continue;
            p->idx[n] = (int32_t)t;
            memcpy(p->pos + 3 * n, pa, 3 * sizeof *pa);
            n++;
        }
        p->seg_count[f] = n - p->seg_start[f];
    }
    p->n = n;
}

lp_status lp_dit_forward(lp_dit *m, lp_dit_cache *c, const lp_dit_call *call, const float *x, float *flow) {
    const lp_dit_config *cfg = &m->cfg;
    lp_backend *be = m->be;
    int F = call->n_frames;
    int H = c->cc.latent_h, W = c->cc.latent_w, h = H / 2, w = W / 2, C = cfg->in_dim, Co = cfg->out_dim;
    int64_t hw = (int64_t)h * w, D = cfg->dim, HW = (int64_t)H * W;
    if (!c->prompt_set) return lp_fail(LP_ERR_ARG, "DiT: no prompt set on this stream");
    if (F <= 0 || F > c->cc.max_frames || F > 64)
        return lp_fail(LP_ERR_ARG, "DiT: %d frames per call (the cache was made for at most %d)", F, c->cc.max_frames);
    if (call->start_frame < 0) return lp_fail(LP_ERR_ARG, "DiT: negative start frame");
    size_t mark = lp_arena_mark(&c->scratch);
    buffers b;
    call_plan p;
    memset(&p, 0, sizeof p);
    p.idx = c->h_idx;
    p.pos = c->h_pos;
    p.pos_all = c->h_pos_all;
    p.fill_dst = c->h_fill_dst;
    p.fill_src = c->h_fill_src;
    lp_status s = alloc_buffers(&c->scratch, cfg, F * hw, F * hw, F, HW, &b);
    if (s != LP_OK) goto out;
    plan_tokens(call, h, w, &p);
    int64_t n = p.n;
    if (call->kv_policy == LP_KV_DENSE && n != p.n_all) {
        s = lp_fail(LP_ERR_ARG, "DiT: the dense K/V policy needs every token (%lld of %lld kept)", (long long)n,
                    (long long)p.n_all);
        goto out;
    }
    if (call->kv_policy == LP_KV_MERGE && !call->merge_dst) {
        s = lp_fail(LP_ERR_ARG, "DiT: the merge K/V policy needs the merge targets");
        goto out;
    }
    if (call->save_last_frame && call->kv_policy == LP_KV_KEPT_ONLY) {
        s = lp_fail(LP_ERR_ARG, "DiT: a kept-only call cannot save a full last frame");
        goto out;
    }
    if ((s = place_chunk(c, call, call->kv_policy == LP_KV_KEPT_ONLY ? n : p.n_all, &p)) != LP_OK) goto out;
    if (n == 0 && call->kv_policy == LP_KV_KEPT_ONLY) goto out; /* nothing computed, nothing written */

    /* 1. patchify the computed tokens: each input vector is (c, q, r) */
    size_t lat_bytes = (size_t)(F * C * HW) * sizeof(float);
    if ((s = be->upload(be, b.xin, x, lat_bytes)) != LP_OK) goto out;
    if ((s = be->patchify(be, b.patches, b.xin, p.idx, n, C, H, W)) != LP_OK) goto out;
    if ((s = be->linear(be, b.x, b.patches, n, &m->w.patch_w, m->w.patch_b)) != LP_OK) goto out;

    /* 2. time embedding per frame: e = time_embedding(sinusoid), e0 = time_projection(e) */
    for (int f = 0; f < F; f++) time_sinusoid(cfg->freq_dim, (double)call->timesteps[f], c->h_sinus + f * cfg->freq_dim);
    if ((s = be->upload(be, b.sinus, c->h_sinus, (size_t)F * (size_t)cfg->freq_dim * sizeof(float))) != LP_OK) goto out;
    if ((s = be->linear(be, b.tmp, b.sinus, F, m->w.time0_w, m->w.time0_b)) != LP_OK) goto out;
    be->silu(be, b.tmp, F * D);
    if ((s = be->linear(be, b.e, b.tmp, F, m->w.time2_w, m->w.time2_b)) != LP_OK) goto out;
    if ((s = be->copy(be, b.tmp, b.e, (size_t)(F * D) * sizeof(float))) != LP_OK) goto out;
    be->silu(be, b.tmp, F * D);
    if ((s = be->linear(be, b.e0, b.tmp, F, m->w.tproj_w, m->w.tproj_b)) != LP_OK) goto out;

    /* 4. blocks; modulation = block.modulation + e0[f] */
    for (int l = 0; l < cfg->num_layers; l++) {
        for (int f = 0; f < F; f++)
            be->add(be, b.mod + f * 6 * D, m->w.blocks[l].modulation_f32, b.e0 + f * 6 * D, 6 * D);
        if ((s = block_forward(m, c, l, call, &p, &b, b.mod)) != LP_OK) goto out;
    }
    if (call->save_last_frame) c->has_last = 1;

    /* 7. head: LN(x)·(1+scale)+shift with (head.modulation + e[f]), then unpatchify (q, r, c) */
    const float *hm = m->w.head_modulation_f32;
    for (int f = 0; f < F; f++) {
        be->add(be, b.shift + f * D, hm, b.e + f * D, D);
        be->add(be, b.scale + f * D, hm + D, b.e + f * D, D);
    }
    be->layer_norm(be, b.xn, b.x, n, D, NULL, NULL, cfg->eps);
    modulate_frames(be, b.xn, &p, F, D, b.shift, D, b.scale, D);
    if ((s = be->linear(be, b.head_out, b.xn, n, m->w.head_w, m->w.head_b)) != LP_OK) goto out;
    /* pixels of pruned tokens keep the caller's values */
    size_t out_bytes = (size_t)(F * Co * HW) * sizeof(float);
    if ((s = be->upload(be, b.xout, flow, out_bytes)) != LP_OK) goto out;
    if ((s = be->unpatchify(be, b.xout, b.head_out, p.idx, n, Co, H, W)) != LP_OK) goto out;
    s = be->download(be, flow, b.xout, out_bytes);
out:
    if (s == LP_ERR_NOMEM && !*lp_last_error()) lp_fail(LP_ERR_NOMEM, "DiT: out of scratch memory");
    lp_arena_reset(&c->scratch, mark);
    return s;
}
