/* The causal Wan DiT forward (spec/MODEL.md) with LIPAR's pruned forward and
 * K/V recovery policies (spec/LIPAR.md §2–3). */
#include "wan_dit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/arena.h"
#include "../base/clock.h"

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

/* The per-frame modulation of a call depends only on its timesteps
 * (spec/MODEL.md step 2): entries keep, for one list of F timesteps, every
 * block's modulation + e0[f] and the head's shift and scale, in the
 * backend's memory, so that calls repeating timesteps (every chunk of a
 * stream uses the same few) skip the time embedding. */
#define TIME_SLOTS 8
typedef struct {
    int F;              /* 0: empty */
    float t[64];
    float *mod;         /* [layers][F][6·dim] */
    float *shift, *scale; /* [F][dim] each */
} time_entry;

/* What the backend's scratch and plans of a forward depend on: its frames,
 * rows and key ranges (the K/V fills and saves only stage index arrays). */
typedef struct {
    int64_t F, n, keys[2];
} forward_shape;
#define PLAIN_SHAPES 8

struct lp_dit_cache {
    lp_backend *be;
    lp_dit_cache_config cc;
    int dim, layers, text_len;
    int64_t frame_tokens;     /* (H/2)·(W/2) */
    size_t kv_row;            /* bytes of a KV-cache row: dim elements of the backend's kv_bf16 type */
    /* per block; k, v, ck and cv hold elements of the kv_bf16 type (written by
     * be->kv_store) */
    void **k, **v;            /* [capacity, dim], keys rotated */
    void **ck, **cv;          /* cross-attention K/V [text_len, dim] */
    void **last_k, **last_v;  /* saved un-rotated last frame [frame_tokens, dim], kv_bf16 type */
    int has_last;
    int prompt_set;
    int64_t local_end;        /* tokens held */
    int chunk_frame;          /* start_frame of the chunk the last call worked on (-1: none) */
    int64_t chunk_local_start; /* first slot of that chunk */
    double issue_seconds;      /* lp_dit_cache_issue_seconds */
    /* The last call was a LP_KV_DUPLICATE call on chunk dup_frame (dup_F
     * frames) with keep-mask dup_keep: the pruned rows of those slots hold
     * what another such call would write again. */
    int dup_valid, dup_frame, dup_F;
    uint8_t *dup_keep;
    time_entry times[TIME_SLOTS];
    int next_time;            /* slot replaced next */
    /* the sizes of the last calls run unrecorded (forward_shape), which later
     * calls of the same sizes may record as a graph (be->graph_begin) */
    forward_shape plain[PLAIN_SHAPES];
    int next_plain;
    lp_arena scratch;         /* activations, over scratch_base in the backend's memory */
    void *scratch_base;
    /* host arrays of a call's plan, for max_frames frames of tokens */
    int32_t *h_idx, *h_pos, *h_pos_all, *h_src_of, *h_fill_dst, *h_fill_src, *h_fill_pos, *h_save_dst, *h_save_src;
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

double lp_dit_cache_issue_seconds(const lp_dit_cache *c) { return c->issue_seconds; }

lp_backend *lp_dit_backend(const lp_dit *m) { return m->be; }

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

/* Scratch bytes for a call over up to n tokens (see alloc_buffers), act_size
 * the bytes of an element of the backend's activation type. */
static size_t scratch_bytes(const lp_dit_config *c, size_t act_size, int64_t n, int max_frames, int H, int W) {
    size_t D = (size_t)c->dim, N = (size_t)n, F = (size_t)max_frames;
    size_t b = 0;
    b += lp_arena_round(F * (size_t)c->in_dim * (size_t)H * (size_t)W * 4);  /* latents in */
    b += lp_arena_round(F * (size_t)c->out_dim * (size_t)H * (size_t)W * 4); /* flow out */
    b += 5 * lp_arena_round(N * D * 4);                        /* x, q, k, v, y */
    b += 3 * lp_arena_round(N * D * act_size);                 /* xn, qa, att */
    b += lp_arena_round(N * (size_t)c->ffn_dim * act_size);    /* ffn hidden */
    b += lp_arena_round(N * (size_t)c->in_dim * 4 * 4);        /* patches */
    b += lp_arena_round(N * (size_t)c->out_dim * 4 * 4);       /* head out */
    b += lp_arena_round(F * (size_t)c->freq_dim * 4) + 2 * lp_arena_round(F * D * 4) + lp_arena_round(F * 6 * D * 4);
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
    k->last_k = alloc_per_block(m->be, c->num_layers, (size_t)ft * k->kv_row);
    k->last_v = alloc_per_block(m->be, c->num_layers, (size_t)ft * k->kv_row);
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
        k->h_src_of = malloc(N * sizeof(int32_t));
        k->h_fill_dst = malloc(N * sizeof(int32_t));
        k->h_fill_src = malloc(N * sizeof(int32_t));
        k->h_fill_pos = malloc(3 * N * sizeof(int32_t));
        k->h_save_dst = malloc(N * sizeof(int32_t));
        k->h_save_src = malloc(N * sizeof(int32_t));
        k->h_sinus = malloc((size_t)cc->max_frames * (size_t)c->freq_dim * sizeof(float));
        k->dup_keep = malloc(N);
        if (!k->h_idx || !k->h_pos || !k->h_pos_all || !k->h_src_of || !k->h_fill_dst || !k->h_fill_src ||
            !k->h_fill_pos || !k->h_save_dst || !k->h_save_src || !k->h_sinus || !k->dup_keep)
            s = lp_fail(LP_ERR_NOMEM, "out of memory for the DiT call plan");
    }
    if (s == LP_OK) {
        size_t bytes = scratch_bytes(c, m->be->act_bf16 ? 2 : 4, (int64_t)cc->max_frames * ft, cc->max_frames,
                                     cc->latent_h, cc->latent_w);
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
    for (int i = 0; i < TIME_SLOTS; i++)
        if (c->times[i].mod) c->be->release(c->be, c->times[i].mod);
    free(c->h_idx);
    free(c->h_pos);
    free(c->h_pos_all);
    free(c->h_src_of);
    free(c->h_fill_dst);
    free(c->h_fill_src);
    free(c->h_fill_pos);
    free(c->h_save_dst);
    free(c->h_save_src);
    free(c->h_sinus);
    free(c->dup_keep);
    free(c);
}

void lp_dit_cache_reset(lp_dit_cache *c) {
    c->local_end = 0;
    c->chunk_frame = -1;
    c->chunk_local_start = 0;
    c->has_last = 0;
    c->dup_valid = 0;
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
    if ((s = be->linear(be, h, ctx, (int64_t)T, m->w.text0_w, m->w.text0_b, LP_LINEAR_GELU)) != LP_OK) goto out;
    if ((s = be->linear(be, e, h, (int64_t)T, m->w.text2_w, m->w.text2_b, 0)) != LP_OK) goto out;
    /* per block K = norm_k(k(e)), V = v(e), computed in h (free again) and
     * stored in the cache's element type */
    for (int i = 0; i < cfg->num_layers; i++) {
        const lp_dit_block_weights *b = &m->w.blocks[i];
        if ((s = be->linear(be, h, e, (int64_t)T, b->ca_k_w, b->ca_k_b, 0)) != LP_OK) goto out;
        be->rms_norm_rope(be, h, 0, h, (int64_t)T, cfg->num_heads, cfg->head_dim, b->ca_norm_k, cfg->eps, NULL);
        s = be->kv_store(be, c->ck[i], NULL, h, NULL, NULL, (int64_t)T, cfg->num_heads, cfg->head_dim, NULL);
        if (s != LP_OK) goto out;
        if ((s = be->linear(be, h, e, (int64_t)T, b->ca_v_w, b->ca_v_b, 0)) != LP_OK) goto out;
        s = be->kv_store(be, c->cv[i], NULL, h, NULL, NULL, (int64_t)T, cfg->num_heads, cfg->head_dim, NULL);
        if (s != LP_OK) goto out;
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
    lp_segments seg;    /* computed tokens of each frame: rows [seg.start[f], seg.start[f+1]) */
    /* K/V recovery (LP_KV_CHAIN / _DUPLICATE / _MERGE, spec/LIPAR.md §3): the
     * source of every chunk token, src_of[t] (host, [n_all]): >= 0 a computed
     * row of this call, < 0 row −src_of[t] − 1 of the saved last frame. The
     * nfill pruned slots fill_dst[i] take source fill_src[i], rotated at
     * fill_pos[i]; saving the last frame writes its slots save_dst[i] from
     * computed row save_src[i] (the others keep their saved row). */
    int32_t *src_of, *fill_dst, *fill_src, *fill_pos, *save_dst, *save_src;
    int64_t nfill, nsave;
    int uses_last;      /* a fill reads the saved last frame */
    int64_t slot;       /* first cache slot of the chunk */
    int pruned_current; /* the pruned rows' K/V in the slots are already this call's (lp_dit_cache.dup_*) */
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

/* f32 buffers, and act-typed ones (the backend's activation type, which only
 * feeds matrix products: be->act_bf16) */
typedef struct {
    float *x, *q, *k, *v, *y, *patches, *head_out;
    void *xn, *qa, *att, *hid;
    float *sinus, *e, *e0, *tmp;
} buffers;

static lp_status alloc_buffers(lp_arena *a, const lp_dit_config *c, size_t act_size, int64_t n, int F, buffers *b) {
    size_t D = (size_t)c->dim;
#define TAKE_BYTES(ptr, bytes)                             \
    do {                                                   \
        if (!((ptr) = lp_arena_alloc(a, (size_t)(bytes)))) \
            return LP_ERR_NOMEM;                           \
    } while (0)
#define TAKE(ptr, count) TAKE_BYTES(ptr, (size_t)(count) * sizeof *(ptr))
    TAKE(b->x, n * D);
    TAKE_BYTES(b->xn, n * D * act_size);
    TAKE(b->q, 3 * n * D); /* q, k, v one after the other: one batched product writes them */
    b->k = b->q + n * D;
    b->v = b->k + n * D;
    TAKE_BYTES(b->qa, n * D * act_size);
    TAKE_BYTES(b->att, n * D * act_size);
    TAKE(b->y, n * D);
    TAKE_BYTES(b->hid, n * (size_t)c->ffn_dim * act_size);
    TAKE(b->patches, n * (size_t)c->in_dim * 4);
    TAKE(b->head_out, n * (size_t)c->out_dim * 4);
    TAKE(b->sinus, (size_t)F * (size_t)c->freq_dim);
    TAKE(b->e, (size_t)F * D);
    TAKE(b->tmp, (size_t)F * D);
    TAKE(b->e0, (size_t)F * 6 * D);
#undef TAKE
#undef TAKE_BYTES
    return LP_OK;
}

/* K/V of the chunk in its cache slots, built per policy (spec/LIPAR.md §3),
 * keys rotated at their own positions as they are stored: computed rows from
 * this call, pruned slots from their sources (plan_tokens), then the saved
 * last frame updated. */
static lp_status write_chunk_kv(lp_dit *m, lp_dit_cache *c, int layer, const lp_dit_call *call, const call_plan *p,
                                const buffers *b) {
    lp_backend *be = m->be;
    const lp_dit_config *cfg = &m->cfg;
    int H = cfg->num_heads, hd = cfg->head_dim;
    void *k_slots = kv_rows(c, c->k[layer], p->slot), *v_slots = kv_rows(c, c->v[layer], p->slot);
    /* kept-only and dense calls hold their computed rows in order; the
     * others place them at their tokens */
    const int32_t *at = call->keep && call->kv_policy != LP_KV_KEPT_ONLY ? p->idx : NULL;
    LP_TRY(be->kv_store(be, k_slots, at, b->k, NULL, NULL, p->n, H, hd, p->pos));
    LP_TRY(be->kv_store(be, v_slots, at, b->v, NULL, NULL, p->n, H, hd, NULL));
    if (p->nfill && !p->pruned_current) {
        if (p->uses_last && !c->has_last)
            return lp_fail(LP_ERR_ARG, "DiT: a pruned token of the chunk at frame %d has no previous frame to recover "
                                       "from", call->start_frame);
        LP_TRY(be->kv_store(be, k_slots, p->fill_dst, b->k, c->last_k[layer], p->fill_src, p->nfill, H, hd,
                            p->fill_pos));
        LP_TRY(be->kv_store(be, v_slots, p->fill_dst, b->v, c->last_v[layer], p->fill_src, p->nfill, H, hd, NULL));
    }
    if (call->save_last_frame && p->nsave) {
        LP_TRY(be->kv_store(be, c->last_k[layer], p->save_dst, b->k, NULL, p->save_src, p->nsave, H, hd, NULL));
        LP_TRY(be->kv_store(be, c->last_v[layer], p->save_dst, b->v, NULL, p->save_src, p->nsave, H, hd, NULL));
    }
    return LP_OK;
}

/* One block on x. On entry b->xn holds this block's first modulated norm,
 * LN(x)·(1+m1)+m0; on exit it holds the next stage's, LN(x)·(1+next_scale)+
 * next_shift (per frame, vectors next_stride apart): every norm of the block
 * is fused with the residual add before it. */
static lp_status block_forward(lp_dit *m, lp_dit_cache *c, int layer, const lp_dit_call *call, const call_plan *p,
                               buffers *b, const float *mod /* [F, 6, D] */, const float *next_shift,
                               const float *next_scale, int64_t next_stride) {
    lp_backend *be = m->be;
    const lp_dit_config *cfg = &m->cfg;
    const lp_dit_block_weights *w = &m->w.blocks[layer];
    int64_t D = cfg->dim, n = p->n, M6 = 6 * D;
    int H = cfg->num_heads, hd = cfg->head_dim;
    const unsigned XA = LP_LINEAR_X_ACT;
    /* self-attention on xn = LN(x)·(1+m1)+m0; q and k RMS-normed, q rotated
     * here, k rotated as it is stored */
    const lp_tensor *qkv_w[3] = {w->sa_q_w, w->sa_k_w, w->sa_v_w}, *qkv_b[3] = {w->sa_q_b, w->sa_k_b, w->sa_v_b};
    LP_TRY(be->linear_batch(be, b->q, b->k - b->q, b->xn, n, qkv_w, w->sa_q_b ? qkv_b : NULL, 3, XA));
    be->rms_norm_rope(be, b->qa, 1, b->q, n, H, hd, w->sa_norm_q, cfg->eps, p->pos);
    be->rms_norm_rope(be, b->k, 0, b->k, n, H, hd, w->sa_norm_k, cfg->eps, NULL);
    LP_TRY(write_chunk_kv(m, c, layer, call, p, b));
    lp_kv_range self[2];
    for (int r = 0; r < p->nranges; r++) {
        self[r].k = kv_rows(c, c->k[layer], p->range_begin[r]);
        self[r].v = kv_rows(c, c->v[layer], p->range_begin[r]);
        self[r].n = p->range_end[r] - p->range_begin[r];
        self[r].ld = D;
        self[r].bf16 = be->kv_bf16;
    }
    float scale = 1.0f / sqrtf((float)hd);
    LP_TRY(be->attention(be, b->att, b->qa, n, H, hd, self, p->nranges, scale));
    LP_TRY(be->linear(be, b->y, b->att, n, w->sa_o_w, w->sa_o_b, XA));
    /* x += y·m2; cross-attention on norm3(x), no modulation, no gate */
    be->residual_norm_modulate(be, b->x, b->y, mod + 2 * D, M6, b->xn, D, w->norm3_w, w->norm3_b, cfg->eps, &p->seg,
                               NULL, NULL, 0);
    LP_TRY(be->linear(be, b->q, b->xn, n, w->ca_q_w, w->ca_q_b, XA));
    be->rms_norm_rope(be, b->qa, 1, b->q, n, H, hd, w->ca_norm_q, cfg->eps, NULL);
    lp_kv_range text = {c->ck[layer], c->cv[layer], cfg->text_len, D, be->kv_bf16};
    LP_TRY(be->attention(be, b->att, b->qa, n, H, hd, &text, 1, scale));
    LP_TRY(be->linear(be, b->y, b->att, n, w->ca_o_w, w->ca_o_b, XA));
    /* x += y; FFN on LN(x)·(1+m4)+m3, GELU(tanh) fused into the first product */
    be->residual_norm_modulate(be, b->x, b->y, NULL, 0, b->xn, D, NULL, NULL, cfg->eps, &p->seg, mod + 3 * D,
                               mod + 4 * D, M6);
    LP_TRY(be->linear(be, b->hid, b->xn, n, w->ffn0_w, w->ffn0_b, XA | LP_LINEAR_Y_ACT | LP_LINEAR_GELU));
    LP_TRY(be->linear(be, b->y, b->hid, n, w->ffn2_w, w->ffn2_b, XA));
    /* x += y·m5, and the next stage's norm */
    be->residual_norm_modulate(be, b->x, b->y, mod + 5 * D, M6, b->xn, D, NULL, NULL, cfg->eps, &p->seg, next_shift,
                               next_scale, next_stride);
    return LP_OK;
}

/* Builds the token list, positions and recovery lists of the call
 * (call_plan). Pruned tokens resolve to their source through the policy's
 * chain (spec/LIPAR.md §3): the computed token they were merged into
 * (merging), the saved last frame at their position (duplicating, and the
 * first frame of a chain), or whatever the same position of the frame
 * before resolved to (the chain). */
static lp_status plan_tokens(const lp_dit_call *call, int h, int w, call_plan *p) {
    int F = call->n_frames;
    int64_t hw = (int64_t)h * w;
    p->n_all = F * hw;
    int64_t n = 0;
    p->seg.n = F;
    for (int f = 0; f < F; f++) {
        p->seg.start[f] = n;
        for (int64_t s = 0; s < hw; s++) {
            int64_t t = f * hw + s;
            int32_t *pa = p->pos_all + 3 * t;
            pa[0] = call->start_frame + f;
            pa[1] = (int32_t)(s / w);
            pa[2] = (int32_t)(s % w);
            p->src_of[t] = -1; /* resolved below when pruned */
            if (call->keep && !call->keep[t]) continue;
            p->idx[n] = (int32_t)t;
            memcpy(p->pos + 3 * n, pa, 3 * sizeof *pa);
            p->src_of[t] = (int32_t)n++;
        }
    }
    p->seg.start[F] = n;
    p->n = n;
    p->nfill = p->nsave = 0;
    p->uses_last = 0;
    lp_kv_policy pol = call->kv_policy;
    if (call->keep && (pol == LP_KV_CHAIN || pol == LP_KV_DUPLICATE || pol == LP_KV_MERGE))
        for (int64_t t = 0; t < p->n_all; t++) {
            if (call->keep[t]) continue;
            int64_t f = t / hw, s = t % hw;
            int32_t src;
            if (pol == LP_KV_MERGE) {
                int32_t to = call->merge_dst[t];
                if (to < 0 || to >= p->n_all || p->src_of[to] < 0)
                    return lp_fail(LP_ERR_ARG, "DiT: token %lld is merged into %d, which is not computed",
                                   (long long)t, (int)to);
                src = p->src_of[to];
            } else {
                src = pol == LP_KV_DUPLICATE || f == 0 ? (int32_t)(-s - 1) : p->src_of[t - hw];
            }
            p->src_of[t] = src;
            p->uses_last |= src < 0;
            p->fill_dst[p->nfill] = (int32_t)t;
            p->fill_src[p->nfill] = src;
            memcpy(p->fill_pos + 3 * p->nfill, p->pos_all + 3 * t, 3 * sizeof(int32_t));
            p->nfill++;
        }
    if (call->save_last_frame)
        for (int64_t s = 0; s < hw; s++) {
            int32_t src = p->src_of[(F - 1) * hw + s];
            if (src < 0) continue; /* resolves to the saved row at s: unchanged */
            p->save_dst[p->nsave] = (int32_t)s;
            p->save_src[p->nsave++] = src;
        }
    return LP_OK;
}

/* The modulation of the call's timesteps (time_entry), computed on a miss
 * into the next slot with b's time-embedding buffers. */
static lp_status time_modulation(lp_dit *m, lp_dit_cache *c, const lp_dit_call *call, buffers *b,
                                 const time_entry **out) {
    const lp_dit_config *cfg = &m->cfg;
    lp_backend *be = m->be;
    int F = call->n_frames;
    int64_t D = cfg->dim, L = cfg->num_layers;
    for (int i = 0; i < TIME_SLOTS; i++) {
        const time_entry *t = &c->times[i];
        if (t->F == F && !memcmp(t->t, call->timesteps, (size_t)F * sizeof *t->t)) {
            *out = t;
            return LP_OK;
        }
    }
    time_entry *t = &c->times[c->next_time];
    c->next_time = (c->next_time + 1) % TIME_SLOTS;
    t->F = 0;
    if (!t->mod) { /* sized for max_frames */
        size_t floats = (size_t)c->cc.max_frames * (size_t)(L * 6 * D + 2 * D);
        if (!(t->mod = be->alloc(be, floats * sizeof(float)))) return LP_ERR_NOMEM;
    }
    t->shift = t->mod + (size_t)(L * F * 6 * D);
    t->scale = t->shift + (size_t)(F * D);
    /* e = time_embedding(sinusoid), e0 = time_projection(e) */
    for (int f = 0; f < F; f++) time_sinusoid(cfg->freq_dim, (double)call->timesteps[f], c->h_sinus + f * cfg->freq_dim);
    LP_TRY(be->upload(be, b->sinus, c->h_sinus, (size_t)F * (size_t)cfg->freq_dim * sizeof(float)));
    LP_TRY(be->linear(be, b->tmp, b->sinus, F, m->w.time0_w, m->w.time0_b, 0));
    be->silu(be, b->tmp, F * D);
    LP_TRY(be->linear(be, b->e, b->tmp, F, m->w.time2_w, m->w.time2_b, 0));
    LP_TRY(be->copy(be, b->tmp, b->e, (size_t)(F * D) * sizeof(float)));
    be->silu(be, b->tmp, F * D);
    LP_TRY(be->linear(be, b->e0, b->tmp, F, m->w.tproj_w, m->w.tproj_b, 0));
    /* block modulation = block.modulation + e0[f]; head: head.modulation + e[f] */
    for (int64_t l = 0; l < L; l++)
        for (int f = 0; f < F; f++)
            be->add(be, t->mod + (l * F + f) * 6 * D, m->w.blocks[l].modulation_f32, b->e0 + f * 6 * D, 6 * D);
    const float *hm = m->w.head_modulation_f32;
    for (int f = 0; f < F; f++) {
        be->add(be, t->shift + f * D, hm, b->e + f * D, D);
        be->add(be, t->scale + f * D, hm + D, b->e + f * D, D);
    }
    memcpy(t->t, call->timesteps, (size_t)F * sizeof *t->t);
    t->F = F;
    *out = t;
    return LP_OK;
}

/* The checks of a call that do not depend on its tokens. */
static lp_status check_call(const lp_dit_cache *c, const lp_dit_call *call) {
    int F = call->n_frames;
    if (!c->prompt_set) return lp_fail(LP_ERR_ARG, "DiT: no prompt set on this stream");
    if (F <= 0 || F > c->cc.max_frames || F > 64)
        return lp_fail(LP_ERR_ARG, "DiT: %d frames per call (the cache was made for at most %d)", F, c->cc.max_frames);
    if (call->start_frame < 0) return lp_fail(LP_ERR_ARG, "DiT: negative start frame");
    return LP_OK;
}

lp_status lp_dit_forward(lp_dit *m, lp_dit_cache *c, const lp_dit_call *call, const float *x, float *flow) {
    LP_TRY(check_call(c, call));
    lp_backend *be = m->be;
    int64_t F = call->n_frames, HW = (int64_t)c->cc.latent_h * c->cc.latent_w;
    size_t lat_bytes = (size_t)(F * m->cfg.in_dim * HW) * sizeof(float);
    size_t out_bytes = (size_t)(F * m->cfg.out_dim * HW) * sizeof(float);
    size_t mark = lp_arena_mark(&c->scratch);
    float *xin = lp_arena_alloc(&c->scratch, lat_bytes), *xout = lp_arena_alloc(&c->scratch, out_bytes);
    lp_status s = xin && xout ? LP_OK : lp_fail(LP_ERR_NOMEM, "DiT: out of scratch memory");
    /* the output latents start as the caller's: pixels of pruned tokens keep them */
    if (s == LP_OK) s = be->upload(be, xin, x, lat_bytes);
    if (s == LP_OK) s = be->upload(be, xout, flow, out_bytes);
    if (s == LP_OK) s = lp_dit_forward_dev(m, c, call, xin, xout);
    if (s == LP_OK) s = be->download(be, flow, xout, out_bytes);
    lp_arena_reset(&c->scratch, mark);
    return s;
}

/* Whether a call of these sizes ran unrecorded among the last PLAIN_SHAPES
 * (so that nothing of the backend needs to grow for it). */
static int seen_plain(const lp_dit_cache *c, const forward_shape *sh) {
    for (int i = 0; i < PLAIN_SHAPES; i++)
        if (!memcmp(&c->plain[i], sh, sizeof *sh)) return 1;
    return 0;
}

lp_status lp_dit_forward_dev(lp_dit *m, lp_dit_cache *c, const lp_dit_call *call, const float *x, float *flow) {
    const lp_dit_config *cfg = &m->cfg;
    lp_backend *be = m->be;
    int F = call->n_frames;
    int H = c->cc.latent_h, W = c->cc.latent_w, h = H / 2, w = W / 2, C = cfg->in_dim, Co = cfg->out_dim;
    int64_t hw = (int64_t)h * w, D = cfg->dim;
    LP_TRY(check_call(c, call));
    double t0 = lp_seconds();
    size_t mark = lp_arena_mark(&c->scratch);
    buffers b;
    call_plan p;
    int recording = 0;
    memset(&p, 0, sizeof p);
    p.idx = c->h_idx;
    p.pos = c->h_pos;
    p.pos_all = c->h_pos_all;
    p.src_of = c->h_src_of;
    p.fill_dst = c->h_fill_dst;
    p.fill_src = c->h_fill_src;
    p.fill_pos = c->h_fill_pos;
    p.save_dst = c->h_save_dst;
    p.save_src = c->h_save_src;
    lp_status s = alloc_buffers(&c->scratch, cfg, be->act_bf16 ? 2 : 4, F * hw, F, &b);
    if (s != LP_OK) goto out;
    if (call->kv_policy == LP_KV_MERGE && !call->merge_dst) {
        s = lp_fail(LP_ERR_ARG, "DiT: the merge K/V policy needs the merge targets");
        goto out;
    }
    if ((s = plan_tokens(call, h, w, &p)) != LP_OK) goto out;
    int64_t n = p.n;
    if (call->kv_policy == LP_KV_DENSE && n != p.n_all) {
        s = lp_fail(LP_ERR_ARG, "DiT: the dense K/V policy needs every token (%lld of %lld kept)", (long long)n,
                    (long long)p.n_all);
        goto out;
    }
    if (call->save_last_frame && call->kv_policy == LP_KV_KEPT_ONLY) {
        s = lp_fail(LP_ERR_ARG, "DiT: a kept-only call cannot save a full last frame");
        goto out;
    }
    /* a repeated duplicating call on the same chunk and mask (the denoising
     * steps after the first) rewrites only the kept rows' K/V */
    int duplicating = call->kv_policy == LP_KV_DUPLICATE && call->keep;
    p.pruned_current = duplicating && c->dup_valid && c->dup_frame == call->start_frame && c->dup_F == F &&
                       !memcmp(c->dup_keep, call->keep, (size_t)(F * hw));
    c->dup_valid = 0; /* until this call has written its slots */
    if ((s = place_chunk(c, call, call->kv_policy == LP_KV_KEPT_ONLY ? n : p.n_all, &p)) != LP_OK) goto out;
    if (n == 0 && call->kv_policy == LP_KV_KEPT_ONLY) goto out; /* nothing computed, nothing written */

    /* 2. time embedding and modulation per frame (first: on a miss it
     * uploads, which a recording must not) */
    const time_entry *te;
    if ((s = time_modulation(m, c, call, &b, &te)) != LP_OK) goto out;
    /* the rest as one graph when these sizes ran unrecorded before */
    forward_shape shape = {F, n, {0, 0}};
    for (int r = 0; r < p.nranges; r++) shape.keys[r] = p.range_end[r] - p.range_begin[r];
    recording = be->graph_begin && seen_plain(c, &shape);
    if (recording && (s = be->graph_begin(be)) != LP_OK) {
        recording = 0;
        goto out;
    }
    if (!recording) {
        c->plain[c->next_plain] = shape;
        c->next_plain = (c->next_plain + 1) % PLAIN_SHAPES;
    }

    /* 1. patchify the computed tokens: each input vector is (c, q, r) */
    if ((s = be->patchify(be, b.patches, x, p.idx, n, C, H, W)) != LP_OK) goto out;
    if ((s = be->linear(be, b.x, b.patches, n, &m->w.patch_w, m->w.patch_b, 0)) != LP_OK) goto out;

    /* 4. blocks (each ends with the next one's first norm, the last with the
     * head's: 7. LN(x)·(1+scale)+shift with head.modulation + e[f]) */
    const int64_t layer_mod = F * 6 * D;
    be->norm_modulate(be, b.xn, b.x, D, NULL, NULL, cfg->eps, &p.seg, te->mod, te->mod + D, 6 * D); /* >= 1 layer */
    for (int l = 0; l < cfg->num_layers; l++) {
        const float *mod = te->mod + (size_t)l * (size_t)layer_mod, *next = mod + layer_mod;
        int last = l + 1 == cfg->num_layers;
        s = block_forward(m, c, l, call, &p, &b, mod, last ? te->shift : next, last ? te->scale : next + D,
                          last ? D : 6 * D);
        if (s != LP_OK) goto out;
    }
    if (call->save_last_frame) c->has_last = 1;
    if (duplicating) {
        memcpy(c->dup_keep, call->keep, (size_t)(F * hw));
        c->dup_frame = call->start_frame;
        c->dup_F = F;
        c->dup_valid = 1;
    }

    /* 7. head on xn, then unpatchify (q, r, c) */
    if ((s = be->linear(be, b.head_out, b.xn, n, m->w.head_w, m->w.head_b, LP_LINEAR_X_ACT)) != LP_OK) goto out;
    if ((s = be->unpatchify(be, flow, b.head_out, p.idx, n, Co, H, W)) != LP_OK) goto out;
out:
    if (recording) { /* ends the recording also after a failure (reporting the first error) */
        lp_status e = be->graph_end(be);
        if (s == LP_OK) s = e;
    }
    if (s == LP_OK) c->issue_seconds += lp_seconds() - t0;
    if (s == LP_ERR_NOMEM && !*lp_last_error()) lp_fail(LP_ERR_NOMEM, "DiT: out of scratch memory");
    lp_arena_reset(&c->scratch, mark);
    return s;
}
