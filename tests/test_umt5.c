/* umT5 encoder: golden check against upstream T5Encoder, the relative-position
 * buckets, real-rows-only vs padded computation, bf16 weights, shape errors,
 * and a second random configuration against a naive double-precision
 * reference written here from TEXT.md. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/base/half.h"
#include "../src/model/umt5.h"
#include "test_util.h"

#define GOLDEN "golden/umt5_tiny.safetensors"

/* ---- in-memory models ---- */

/* Slot i of w: 0 token_embedding, 1 norm, then 10 per block in header order. */
static const lp_tensor **slot(lp_umt5_weights *w, int64_t i) {
    if (i == 0) return &w->token_embedding;
    if (i == 1) return &w->norm;
    lp_umt5_block *b = &w->blocks[(i - 2) / 10];
    switch ((i - 2) % 10) {
    case 0: return &b->norm1;
    case 1: return &b->q;
    case 2: return &b->k;
    case 3: return &b->v;
    case 4: return &b->o;
    case 5: return &b->norm2;
    case 6: return &b->gate;
    case 7: return &b->fc1;
    case 8: return &b->fc2;
    default: return &b->pos;
    }
}
static int64_t nslots(const lp_umt5_weights *w) { return 2 + 10 * w->num_layers; }

typedef struct {
    lp_umt5_weights w;
    lp_tensor *t; /* one per slot, data heap-owned */
    char (*names)[64];
} mem_model;

static void mem_free(mem_model *m) {
    for (int64_t i = 0; m->t && i < nslots(&m->w); i++) free((void *)m->t[i].data);
    free(m->t);
    free(m->names);
    free(m->w.blocks);
    memset(m, 0, sizeof *m);
}

static int mem_alloc(mem_model *m, int64_t layers) {
    memset(m, 0, sizeof *m);
    m->w.num_layers = layers;
    m->w.blocks = calloc((size_t)layers, sizeof *m->w.blocks);
    m->t = calloc((size_t)nslots(&m->w), sizeof *m->t);
    m->names = calloc((size_t)nslots(&m->w), sizeof *m->names);
    return m->w.blocks && m->t && m->names;
}

/* Copies every tensor of src converted to dtype (F32 or BF16). */
static int mem_convert(mem_model *m, const lp_umt5_weights *src, lp_dtype dtype) {
    if (!mem_alloc(m, src->num_layers)) return 0;
    for (int64_t i = 0; i < nslots(&m->w); i++) {
        const lp_tensor *s = *slot((lp_umt5_weights *)src, i);
        int64_t n = lp_tensor_numel(s);
        float *f = malloc((size_t)n * sizeof *f);
        if (!f || lp_tensor_read_f32(s, 0, n, f) != LP_OK) return free(f), 0;
        lp_tensor *t = &m->t[i];
        *t = *s;
        snprintf(m->names[i], sizeof m->names[i], "%s", s->name);
        t->name = m->names[i];
        t->dtype = dtype;
        t->nbytes = (size_t)n * lp_dtype_size(dtype);
        if (dtype == LP_BF16) {
            uint16_t *h = malloc(t->nbytes);
            if (!h) return free(f), 0;
            for (int64_t j = 0; j < n; j++) h[j] = lp_f32_to_bf16(f[j]);
            free(f);
            t->data = h;
        } else {
            t->data = f;
        }
        *slot(&m->w, i) = t;
    }
    return 1;
}

typedef struct {
    int64_t vocab, dim, dim_attn, dim_ffn, heads, layers, buckets;
} shape_cfg;

/* Random F32 weights with upstream-like scales (norm weights around 1). */
static int mem_random(mem_model *m, const shape_cfg *c, uint32_t seed) {
    if (!mem_alloc(m, c->layers)) return 0;
    for (int64_t i = 0; i < nslots(&m->w); i++) {
        int64_t j = i < 2 ? -1 - i : (i - 2) % 10, d0, d1 = 0; /* d1 == 0: 1-D */
        const char *nm;
        switch (j) {
        case -1: nm = "token_embedding.weight", d0 = c->vocab, d1 = c->dim; break;
        case -2: nm = "norm.weight", d0 = c->dim; break;
        case 0: nm = "norm1.weight", d0 = c->dim; break;
        case 1: nm = "attn.q.weight", d0 = c->dim_attn, d1 = c->dim; break;
        case 2: nm = "attn.k.weight", d0 = c->dim_attn, d1 = c->dim; break;
        case 3: nm = "attn.v.weight", d0 = c->dim_attn, d1 = c->dim; break;
        case 4: nm = "attn.o.weight", d0 = c->dim, d1 = c->dim_attn; break;
        case 5: nm = "norm2.weight", d0 = c->dim; break;
        case 6: nm = "ffn.gate.0.weight", d0 = c->dim_ffn, d1 = c->dim; break;
        case 7: nm = "ffn.fc1.weight", d0 = c->dim_ffn, d1 = c->dim; break;
        case 8: nm = "ffn.fc2.weight", d0 = c->dim, d1 = c->dim_ffn; break;
        default: nm = "pos_embedding.embedding.weight", d0 = c->buckets, d1 = c->heads; break;
        }
        if (i < 2) snprintf(m->names[i], sizeof m->names[i], "%s", nm);
        else snprintf(m->names[i], sizeof m->names[i], "blocks.%lld.%s", (long long)(i - 2) / 10, nm);
        int64_t n = d0 * (d1 ? d1 : 1);
        float *f = malloc((size_t)n * sizeof *f);
        if (!f) return 0;
        int is_norm = d1 == 0, is_table = i == 0 || j == 9;
        lp_test_fill(f, (size_t)n, seed + (uint32_t)i * 7919u,
                     is_norm ? 0.5f : is_table ? 1.0f : 1.5f / sqrtf((float)d1));
        if (is_norm)
            for (int64_t k = 0; k < n; k++) f[k] += 1.0f;
        m->t[i] = (lp_tensor){.name = m->names[i], .dtype = LP_F32, .ndim = d1 ? 2 : 1, .shape = {d0, d1},
                              .data = f, .nbytes = (size_t)n * 4};
        *slot(&m->w, i) = &m->t[i];
    }
    return 1;
}

/* ---- the naive reference (double, no BLAS), straight from TEXT.md ---- */

static const float *fp(const lp_tensor *t) { return t->data; }

static int64_t naive_bucket(int64_t rel, int64_t nb, int64_t max_dist) {
    int64_t side = nb / 2, exact = side / 2, r = llabs(rel), b = rel > 0 ? side : 0;
    if (r < exact) return b + r;
    int64_t l = exact + (int64_t)floor(log((double)r / exact) / log((double)max_dist / exact) * (side - exact));
    return b + (l < side - 1 ? l : side - 1);
}

static void naive_norm(const double *x, const float *w, int64_t d, double eps, double *y) {
    double ss = 0;
    for (int64_t j = 0; j < d; j++) ss += x[j] * x[j];
    double r = 1.0 / sqrt(ss / d + eps);
    for (int64_t j = 0; j < d; j++) y[j] = w[j] * x[j] * r;
}

/* y[N] = W[N, K] x[K] */
static void naive_mv(const float *w, const double *x, int64_t n, int64_t k, double *y) {
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int64_t j = 0; j < k; j++) s += (double)w[i * k + j] * x[j];
        y[i] = s;
    }
}

/* Every row (the upstream ALL_ROWS semantics), masked keys excluded. */
static void naive_encode(const lp_umt5_config *c, const lp_umt5_weights *w, const int64_t *ids, const int64_t *mask,
                         int64_t L, float *out) {
    int64_t D = c->dim, A = c->dim_attn, F = c->dim_ffn, H = c->num_heads, hd = c->head_dim;
    double *x = malloc(sizeof(double) * L * D), *h = malloc(sizeof(double) * L * D);
    double *q = malloc(sizeof(double) * L * A), *k = malloc(sizeof(double) * L * A), *v = malloc(sizeof(double) * L * A);
    double *att = malloc(sizeof(double) * L * A), *g = malloc(sizeof(double) * F), *u = malloc(sizeof(double) * F);
    double *p = malloc(sizeof(double) * L), *tmp = malloc(sizeof(double) * D);
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < D; j++) x[i * D + j] = fp(w->token_embedding)[ids[i] * D + j];
    for (int64_t l = 0; l < c->num_layers; l++) {
        const lp_umt5_block *b = &w->blocks[l];
        for (int64_t i = 0; i < L; i++) {
            naive_norm(x + i * D, fp(b->norm1), D, c->eps, h + i * D);
            naive_mv(fp(b->q), h + i * D, A, D, q + i * A);
            naive_mv(fp(b->k), h + i * D, A, D, k + i * A);
            naive_mv(fp(b->v), h + i * D, A, D, v + i * A);
        }
        for (int64_t hh = 0; hh < H; hh++)
            for (int64_t i = 0; i < L; i++) {
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < L; j++) {
                    if (!mask[j]) continue;
                    double s = 0;
                    for (int64_t e = 0; e < hd; e++) s += q[i * A + hh * hd + e] * k[j * A + hh * hd + e];
                    p[j] = s + fp(b->pos)[naive_bucket(j - i, c->num_buckets, c->max_dist) * H + hh];
                    if (p[j] > mx) mx = p[j];
                }
                for (int64_t j = 0; j < L; j++)
                    if (mask[j]) sum += p[j] = exp(p[j] - mx);
                for (int64_t e = 0; e < hd; e++) {
                    double o = 0;
                    for (int64_t j = 0; j < L; j++)
                        if (mask[j]) o += p[j] / sum * v[j * A + hh * hd + e];
                    att[i * A + hh * hd + e] = o;
                }
            }
        for (int64_t i = 0; i < L; i++) {
            naive_mv(fp(b->o), att + i * A, D, A, tmp);
            for (int64_t j = 0; j < D; j++) x[i * D + j] += tmp[j];
            naive_norm(x + i * D, fp(b->norm2), D, c->eps, h + i * D);
            naive_mv(fp(b->gate), h + i * D, F, D, g);
            naive_mv(fp(b->fc1), h + i * D, F, D, u);
            for (int64_t j = 0; j < F; j++)
                u[j] *= 0.5 * g[j] * (1 + tanh(sqrt(2 / M_PI) * (g[j] + 0.044715 * g[j] * g[j] * g[j])));
            naive_mv(fp(b->fc2), u, D, F, tmp);
            for (int64_t j = 0; j < D; j++) x[i * D + j] += tmp[j];
        }
    }
    for (int64_t i = 0; i < L; i++) {
        naive_norm(x + i * D, fp(w->norm), D, c->eps, h + i * D);
        for (int64_t j = 0; j < D; j++) out[i * D + j] = (float)h[i * D + j];
    }
    free(x), free(h), free(q), free(k), free(v), free(att), free(g), free(u), free(p), free(tmp);
}

/* ---- golden ---- */

typedef struct {
    lp_tensor_file *f;
    lp_umt5_weights w;
    lp_umt5_config cfg;
    int64_t *ids, *mask, batch, len;
    float *hidden, *zeroed; /* reference outputs [batch, len, dim] */
} golden;

static void golden_close(golden *g) {
    lp_umt5_weights_free(&g->w);
    if (g->f) lp_tensor_file_close(g->f);
    free(g->ids), free(g->mask), free(g->hidden), free(g->zeroed);
}

static int64_t *copy_i64(const lp_tensor *t) {
    int64_t *p = malloc(t->nbytes);
    if (p) memcpy(p, t->data, t->nbytes);
    return p;
}

/* 0 ok, 1 failure, LP_TEST_SKIP without the shared folder. */
static int golden_open(golden *g) {
    memset(g, 0, sizeof *g);
    const char *path = lp_test_shared(GOLDEN);
    if (!path) return lp_test_skip_shared(GOLDEN);
    CHECK(lp_tensor_file_open(path, &g->f) == LP_OK, "%s", lp_last_error());
    char prefix[32];
    CHECK(lp_umt5_detect_prefix(g->f, prefix, sizeof prefix) == LP_OK && !strcmp(prefix, "w."), "%s", lp_last_error());
    int64_t heads = atoll(lp_tensor_file_meta(g->f, "num_heads"));
    CHECK(lp_umt5_load(g->f, prefix, heads, &g->w, &g->cfg) == LP_OK, "%s", lp_last_error());
    CHECK(g->cfg.dim == 64 && g->cfg.num_heads == 4 && g->cfg.num_layers == 3 && g->cfg.dim_ffn == 160 &&
          g->cfg.vocab == 384 && g->cfg.num_buckets == 32 && g->cfg.max_dist == 128, "detected config differs from the metadata");
    CHECK(atoll(lp_tensor_file_meta(g->f, "max_dist")) == g->cfg.max_dist, "max_dist");
    const lp_tensor *ids = lp_tensor_file_find(g->f, "in.ids"), *mask = lp_tensor_file_find(g->f, "in.mask");
    CHECK(ids && mask && ids->dtype == LP_I64 && ids->ndim == 2, "in.ids / in.mask");
    g->batch = ids->shape[0];
    g->len = ids->shape[1];
    g->ids = copy_i64(ids);
    g->mask = copy_i64(mask);
    int64_t n;
    const lp_tensor *h = lp_tensor_file_find(g->f, "out.hidden"), *z = lp_tensor_file_find(g->f, "out.context_zeroed");
    CHECK(h && z && g->ids && g->mask, "outputs missing or out of memory");
    n = lp_tensor_numel(h);
    g->hidden = malloc((size_t)n * 4);
    g->zeroed = malloc((size_t)n * 4);
    CHECK(g->hidden && g->zeroed && lp_tensor_read_f32(h, 0, n, g->hidden) == LP_OK &&
          lp_tensor_read_f32(z, 0, n, g->zeroed) == LP_OK, "reading the outputs");
    return 0;
}

/* Runs both modes on every batch entry of g with weights w; returns the rel L2 errors. */
static int golden_run(golden *g, const lp_umt5_weights *w, lp_pool *pool, double *err_hidden, double *err_zeroed) {
    size_t per = (size_t)g->len * (size_t)g->cfg.dim, n = per * (size_t)g->batch;
    float *hid = malloc(n * 4), *zer = malloc(n * 4);
    CHECK(hid && zer, "out of memory");
    for (int64_t b = 0; b < g->batch; b++) {
        CHECK(lp_umt5_encode(&g->cfg, w, g->ids + b * g->len, g->mask + b * g->len, g->len, LP_UMT5_ALL_ROWS, pool,
                             hid + b * per) == LP_OK, "%s", lp_last_error());
        CHECK(lp_umt5_encode(&g->cfg, w, g->ids + b * g->len, g->mask + b * g->len, g->len, LP_UMT5_REAL_ROWS, pool,
                             zer + b * per) == LP_OK, "%s", lp_last_error());
    }
    *err_hidden = lp_rel_l2(hid, g->hidden, n);
    *err_zeroed = lp_rel_l2(zer, g->zeroed, n);
    free(hid), free(zer);
    return 0;
}

static int test_golden(void) {
    golden g;
    int r = golden_open(&g);
    lp_pool *pool = NULL;
    double eh, ez;
    if (!r) r = lp_pool_create(2, &pool) != LP_OK;
    if (!r) r = golden_run(&g, &g.w, pool, &eh, &ez);
    lp_pool_destroy(pool);
    golden_close(&g);
    if (r) return r;
    printf("    out.hidden rel_l2=%.3e  out.context_zeroed rel_l2=%.3e\n", eh, ez);
    CHECK(eh <= 1e-5 && ez <= 1e-5, "tolerance 1e-5");
    return 0;
}

/* The golden weights are bf16-exact, so bf16 storage must reproduce them to fp32 accuracy. */
static int test_golden_bf16(void) {
    golden g;
    mem_model m = {0};
    double eh = 1, ez = 1;
    int r = golden_open(&g);
    if (!r) r = !mem_convert(&m, &g.w, LP_BF16);
    if (!r) r = golden_run(&g, &m.w, NULL, &eh, &ez);
    mem_free(&m);
    golden_close(&g);
    if (r) return r;
    printf("    bf16 weights: out.hidden rel_l2=%.3e  out.context_zeroed rel_l2=%.3e\n", eh, ez);
    CHECK(eh <= 1e-5 && ez <= 1e-5, "tolerance 1e-5");
    return 0;
}

/* The published layout: umt5_tiny_bf16.pth (unprefixed names, bf16) must give the same outputs. */
static int test_golden_pth(void) {
    const char *path = lp_test_shared("golden/umt5_tiny_bf16.pth");
    if (!path) return lp_test_skip_shared("golden/umt5_tiny_bf16.pth");
    lp_tensor_file *f;
    if (lp_tensor_file_open(path, &f) != LP_OK) {
        printf("    cannot open the .pth yet: %s\n", lp_last_error());
        return LP_TEST_SKIP;
    }
    golden g;
    lp_umt5_weights w = {0};
    lp_umt5_config cfg;
    char prefix[32];
    double eh = 1, ez = 1;
    int r = golden_open(&g);
    if (!r) r = lp_umt5_detect_prefix(f, prefix, sizeof prefix) != LP_OK || lp_umt5_load(f, prefix, 0, &w, &cfg) != LP_OK;
    if (!r) {
        printf("    prefix '%s', %lld layers, token_embedding %s\n", prefix, (long long)cfg.num_layers,
               lp_dtype_name(w.token_embedding->dtype));
        r = golden_run(&g, &w, NULL, &eh, &ez);
    } else {
        printf("    %s\n", lp_last_error());
    }
    lp_umt5_weights_free(&w);
    lp_tensor_file_close(f);
    golden_close(&g);
    if (r) return r;
    printf("    .pth weights: out.hidden rel_l2=%.3e  out.context_zeroed rel_l2=%.3e\n", eh, ez);
    CHECK(eh <= 1e-5 && ez <= 1e-5, "tolerance 1e-5");
    return 0;
}

static int test_errors(void) {
    golden g;
    int r = golden_open(&g);
    if (r) return golden_close(&g), r;
    lp_umt5_weights w2;
    lp_umt5_config cfg;
    /* wrong prefix: a missing tensor, named */
    r = lp_umt5_load(g.f, "x.", 0, &w2, &cfg) != LP_ERR_MISSING || !strstr(lp_last_error(), "x.token_embedding.weight");
    printf("    %s\n", lp_last_error());
    /* num_heads disagreeing with the position tables */
    r |= lp_umt5_load(g.f, "w.", 8, &w2, &cfg) != LP_ERR_SHAPE || !strstr(lp_last_error(), "pos_embedding");
    printf("    %s\n", lp_last_error());
    /* a transposed fc2 in block 1 */
    lp_umt5_block *blocks = malloc(sizeof *blocks * (size_t)g.w.num_layers);
    memcpy(blocks, g.w.blocks, sizeof *blocks * (size_t)g.w.num_layers);
    lp_tensor bad = *g.w.blocks[1].fc2;
    bad.shape[0] = g.w.blocks[1].fc2->shape[1];
    bad.shape[1] = g.w.blocks[1].fc2->shape[0];
    blocks[1].fc2 = &bad;
    lp_umt5_weights wb = g.w;
    wb.blocks = blocks;
    r |= lp_umt5_config_detect(&wb, 4, &cfg) != LP_ERR_SHAPE || !strstr(lp_last_error(), "'w.blocks.1.ffn.fc2.weight'");
    printf("    %s\n", lp_last_error());
    /* an integer dtype */
    bad = *g.w.blocks[1].fc2;
    bad.dtype = LP_I32;
    r |= lp_umt5_config_detect(&wb, 4, &cfg) != LP_ERR_UNSUPPORTED || !strstr(lp_last_error(), "fc2");
    printf("    %s\n", lp_last_error());
    free(blocks);
    /* a token id outside the vocabulary */
    int64_t ids[3] = {1, 384, 2};
    float out[3 * 64];
    r |= lp_umt5_encode(&g.cfg, &g.w, ids, NULL, 3, LP_UMT5_ALL_ROWS, NULL, out) != LP_ERR_ARG ||
         !strstr(lp_last_error(), "384");
    printf("    %s\n", lp_last_error());
    golden_close(&g);
    CHECK(!r, "see above");
    return 0;
}

/* ---- unit tests ---- */

static int test_bucket(void) {
    /* 32 buckets, max_dist 128: 16 per side, exact below 8, then
     * 8 + floor(ln(|r|/8) / ln(16) * 8) capped at 15; + 16 for r > 0. */
    static const int64_t cases[][2] = {
        {0, 0},    {-1, 1},    {1, 17},     {-7, 7},    {7, 23},    {-8, 8},     {8, 24},  {-11, 8},
        {-12, 9},  {15, 25},   {-16, 10},   {16, 26},   {20, 26},   {-22, 10},   {-23, 11}, {-32, 12},
        {32, 28},  {-45, 12},  {-46, 13},   {-64, 14},  {64, 30},   {-90, 14},   {-91, 15}, {-127, 15},
        {-128, 15}, {128, 31}, {-1000, 15}, {1000, 31}, {-511, 15}, {511, 31},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        CHECK(lp_umt5_bucket(cases[i][0], 32, 128) == cases[i][1], "rel %lld: got %lld, want %lld",
              (long long)cases[i][0], (long long)lp_umt5_bucket(cases[i][0], 32, 128), (long long)cases[i][1]);
    /* 16 buckets, max_dist 20: 8 per side, exact below 4, 4 + floor(ln(|r|/4) / ln(5) * 4) capped at 7 */
    static const int64_t small[][2] = {{-3, 3}, {3, 11}, {-4, 4}, {-5, 4}, {-6, 5}, {-8, 5}, {-9, 6}, {-13, 6},
                                       {-14, 7}, {19, 15}, {-20, 7}, {300, 15}};
    for (size_t i = 0; i < sizeof small / sizeof *small; i++)
        CHECK(lp_umt5_bucket(small[i][0], 16, 20) == small[i][1], "rel %lld: got %lld, want %lld",
              (long long)small[i][0], (long long)lp_umt5_bucket(small[i][0], 16, 20), (long long)small[i][1]);
    /* the naive reference agrees everywhere the encoder can reach */
    for (int64_t r = -600; r <= 600; r++)
        CHECK(lp_umt5_bucket(r, 32, 128) == naive_bucket(r, 32, 128) && lp_umt5_bucket(r, 16, 20) == naive_bucket(r, 16, 20), "rel %lld", (long long)r);
    return 0;
}

/* A second configuration: dim_attn != dim, 5 heads of 8, 16 buckets, max_dist 20. */
static const shape_cfg rnd = {.vocab = 50, .dim = 48, .dim_attn = 40, .dim_ffn = 72, .heads = 5, .layers = 2, .buckets = 16};

static int random_model(mem_model *m, lp_umt5_config *cfg) {
    CHECK(mem_random(m, &rnd, 1234), "out of memory");
    CHECK(lp_umt5_config_detect(&m->w, 0, cfg) == LP_OK, "%s", lp_last_error());
    CHECK(cfg->dim == 48 && cfg->dim_attn == 40 && cfg->head_dim == 8 && cfg->num_heads == 5 && cfg->dim_ffn == 72 &&
          cfg->vocab == 50 && cfg->num_layers == 2 && cfg->num_buckets == 16, "detected config");
    cfg->max_dist = 20;
    return 0;
}

enum { RL = 30 };

static void random_ids(int64_t *ids, int64_t *mask, int64_t real) {
    for (int64_t i = 0; i < RL; i++) {
        ids[i] = i < real ? (i * 37 + 11) % rnd.vocab : 0;
        mask[i] = i < real;
    }
}

static int test_random_vs_naive(void) {
    mem_model m;
    lp_umt5_config cfg;
    int r = random_model(&m, &cfg);
    if (r) return mem_free(&m), r;
    lp_pool *pool;
    CHECK(lp_pool_create(2, &pool) == LP_OK, "%s", lp_last_error());
    int64_t ids[RL], mask[RL];
    float got[RL * 48], zer[RL * 48], want[RL * 48];
    for (int64_t real = RL; real >= 19 && !r; real -= 11) {
        random_ids(ids, mask, real);
        naive_encode(&cfg, &m.w, ids, mask, RL, want);
        r |= lp_umt5_encode(&cfg, &m.w, ids, mask, RL, LP_UMT5_ALL_ROWS, pool, got) != LP_OK;
        r |= lp_umt5_encode(&cfg, &m.w, ids, mask, RL, LP_UMT5_REAL_ROWS, NULL, zer) != LP_OK;
        double e_all = lp_rel_l2(got, want, RL * 48), e_real = lp_rel_l2(zer, want, (size_t)real * 48);
        printf("    %lld real of %d: all rows rel_l2=%.3e, real rows only rel_l2=%.3e\n", (long long)real, RL, e_all, e_real);
        r |= !(e_all <= 1e-5 && e_real <= 1e-5);
    }
    lp_pool_destroy(pool);
    mem_free(&m);
    CHECK(!r, "see above");
    return 0;
}

/* Real-rows-only equals the padded computation on the real rows, also when
 * the real tokens are not a prefix; padded rows come out exactly zero. */
static int test_real_rows(void) {
    mem_model m;
    lp_umt5_config cfg;
    int r = random_model(&m, &cfg);
    if (r) return mem_free(&m), r;
    int64_t ids[RL], mask[RL];
    float all[RL * 48], real_rows[RL * 48];
    for (int holes = 0; holes < 2 && !r; holes++) {
        random_ids(ids, mask, 17);
        if (holes) mask[3] = mask[9] = mask[10] = 0, mask[25] = 1;
        r |= lp_umt5_encode(&cfg, &m.w, ids, mask, RL, LP_UMT5_ALL_ROWS, NULL, all) != LP_OK;
        r |= lp_umt5_encode(&cfg, &m.w, ids, mask, RL, LP_UMT5_REAL_ROWS, NULL, real_rows) != LP_OK;
        double num = 0, den = 0;
        for (int64_t i = 0; i < RL; i++)
            for (int64_t j = 0; j < 48; j++) {
                float a = all[i * 48 + j], b = real_rows[i * 48 + j];
                if (!mask[i]) r |= b != 0.0f;
                else num += ((double)a - b) * ((double)a - b), den += (double)a * a;
            }
        printf("    %s: real rows rel_l2=%.3e\n", holes ? "mask with holes" : "prefix mask", sqrt(num / den));
        r |= !(sqrt(num / den) <= 1e-6);
    }
    mem_free(&m);
    CHECK(!r, "see above");
    return 0;
}

/* bf16 storage of weights that are not bf16-exact stays close to fp32. */
static int test_random_bf16(void) {
    mem_model m, h = {0};
    lp_umt5_config cfg;
    int r = random_model(&m, &cfg);
    if (!r) r = !mem_convert(&h, &m.w, LP_BF16);
    int64_t ids[RL], mask[RL];
    float a[RL * 48], b[RL * 48];
    random_ids(ids, mask, 21);
    if (!r) r = lp_umt5_encode(&cfg, &m.w, ids, mask, RL, LP_UMT5_ALL_ROWS, NULL, a) != LP_OK ||
                lp_umt5_encode(&cfg, &h.w, ids, mask, RL, LP_UMT5_ALL_ROWS, NULL, b) != LP_OK;
    mem_free(&m);
    mem_free(&h);
    CHECK(!r, "see above");
    double e = lp_rel_l2(b, a, RL * 48);
    printf("    bf16 vs fp32 weights rel_l2=%.3e\n", e);
    CHECK(e <= 2e-2 && e > 0, "tolerance 2e-2");
    return 0;
}

int main(void) {
    lp_test_run("umt5_golden", test_golden);
    lp_test_run("umt5_golden_bf16_weights", test_golden_bf16);
    lp_test_run("umt5_golden_pth_weights", test_golden_pth);
    lp_test_run("umt5_errors", test_errors);
    lp_test_run("umt5_bucket", test_bucket);
    lp_test_run("umt5_random_vs_naive", test_random_vs_naive);
    lp_test_run("umt5_real_rows_only", test_real_rows);
    lp_test_run("umt5_random_bf16_weights", test_random_bf16);
    return lp_test_finish();
}
