/* umT5 encoder forward on the CPU. Spec: ../shared/spec/TEXT.md ("umT5-XXL
 * encoder"); the layer reads top to bottom like upstream T5Encoder. */
#include "umt5.h"

#include <cblas.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/arena.h"

#define WHAT "umT5 encoder"
/* Weight rows are converted to fp32 in blocks of about this many floats
 * (4 MiB: the block and the activations stay in the 32 MiB L3). */
#define CHUNK_FLOATS ((int64_t)1 << 20)

/* ---- loading and configuration ---- */

lp_status lp_umt5_detect_prefix(const lp_tensor_file *f, char *prefix, size_t len) {
    static const char suffix[] = "token_embedding.weight";
    const size_t sl = sizeof suffix - 1;
    for (size_t i = 0; i < lp_tensor_file_count(f); i++) {
        const char *nm = lp_tensor_file_at(f, i)->name;
        size_t nl = strlen(nm);
        if (nl < sl || strcmp(nm + nl - sl, suffix)) continue;
        size_t pl = nl - sl;
        if (pl > 0 && nm[pl - 1] != '.') continue; /* e.g. "xtoken_embedding.weight" */
        if (pl + 1 > len) return lp_fail(LP_ERR_ARG, "%s: prefix of '%s' does not fit in %zu bytes", lp_tensor_file_path(f), nm, len);
        memcpy(prefix, nm, pl);
        prefix[pl] = 0;
        return LP_OK;
    }
    return lp_fail(LP_ERR_MISSING, "%s: no tensor named '[prefix]token_embedding.weight': not a umT5 encoder",
                   lp_tensor_file_path(f));
}

static lp_status get(const lp_tensor_file *f, const char *prefix, const char *name, const lp_tensor **out) {
    char buf[512];
    int n = snprintf(buf, sizeof buf, "%s%s", prefix, name);
    if (n < 0 || (size_t)n >= sizeof buf) return lp_fail(LP_ERR_ARG, "%s: tensor name prefix '%s' is too long", WHAT, prefix);
    return lp_tensor_file_get(f, buf, out);
}

static lp_status get_block(const lp_tensor_file *f, const char *prefix, int64_t i, lp_umt5_block *b) {
    static const struct {
        const char *name;
        size_t offset;
    } fields[] = {
        {"norm1.weight", offsetof(lp_umt5_block, norm1)},
        {"attn.q.weight", offsetof(lp_umt5_block, q)},
        {"attn.k.weight", offsetof(lp_umt5_block, k)},
        {"attn.v.weight", offsetof(lp_umt5_block, v)},
        {"attn.o.weight", offsetof(lp_umt5_block, o)},
        {"norm2.weight", offsetof(lp_umt5_block, norm2)},
        {"ffn.gate.0.weight", offsetof(lp_umt5_block, gate)},
        {"ffn.fc1.weight", offsetof(lp_umt5_block, fc1)},
        {"ffn.fc2.weight", offsetof(lp_umt5_block, fc2)},
        {"pos_embedding.embedding.weight", offsetof(lp_umt5_block, pos)},
    };
    for (size_t j = 0; j < sizeof fields / sizeof *fields; j++) {
        char name[128];
        snprintf(name, sizeof name, "blocks.%lld.%s", (long long)i, fields[j].name);
        LP_TRY(get(f, prefix, name, (const lp_tensor **)((char *)b + fields[j].offset)));
    }
    return LP_OK;
}

lp_status lp_umt5_load(const lp_tensor_file *f, const char *prefix, int64_t num_heads, lp_umt5_weights *w,
                       lp_umt5_config *cfg) {
    memset(w, 0, sizeof *w);
    if (!prefix) prefix = "";
    const lp_tensor *t;
    LP_TRY(get(f, prefix, "token_embedding.weight", &t));
    int64_t n = 0;
    for (;; n++) {
        char name[600];
        snprintf(name, sizeof name, "%sblocks.%lld.norm1.weight", prefix, (long long)n);
        if (!lp_tensor_file_find(f, name)) break;
    }
    if (n == 0) return get(f, prefix, "blocks.0.norm1.weight", &t); /* fails, naming the tensor */
    lp_umt5_weights lw = {.token_embedding = t, .num_layers = n, .blocks = calloc((size_t)n, sizeof(lp_umt5_block))};
    if (!lw.blocks) return lp_fail(LP_ERR_NOMEM, "%s: out of memory for %lld blocks", WHAT, (long long)n);
    lp_status s = get(f, prefix, "norm.weight", &lw.norm);
    for (int64_t i = 0; i < n && s == LP_OK; i++) s = get_block(f, prefix, i, &lw.blocks[i]);
    if (s == LP_OK) s = lp_umt5_config_detect(&lw, num_heads, cfg);
    if (s != LP_OK) {
        lp_umt5_weights_free(&lw);
        return s;
    }
    *w = lw;
    return LP_OK;
}

void lp_umt5_weights_free(lp_umt5_weights *w) {
    free(w->blocks);
    memset(w, 0, sizeof *w);
}

#define VEC (-2) /* b argument of expect for 1-D tensors */

/* Shape [a, b] (b == VEC: 1-D [a]; -1 = any) and a floating-point dtype. */
static lp_status expect(const lp_tensor *t, const char *field, int64_t layer, int64_t a, int64_t b) {
    if (!t) {
        if (layer < 0) return lp_fail(LP_ERR_MISSING, "%s: tensor %s is not set", WHAT, field);
        return lp_fail(LP_ERR_MISSING, "%s: tensor blocks.%lld.%s is not set", WHAT, (long long)layer, field);
    }
    int64_t want[2] = {a, b};
    LP_TRY(lp_tensor_expect(t, WHAT, b == VEC ? 1 : 2, want));
    if (t->dtype != LP_F32 && t->dtype != LP_BF16 && t->dtype != LP_F16 && t->dtype != LP_F64)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s, expected a floating-point type", WHAT,
                       t->name, lp_dtype_name(t->dtype));
    return LP_OK;
}

static lp_status check_cfg(const lp_umt5_config *c) {
    if (c->num_buckets < 4 || c->num_buckets % 2)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: %lld relative-position buckets; need an even number >= 4", WHAT,
                       (long long)c->num_buckets);
    if (c->max_dist <= c->num_buckets / 4)
        return lp_fail(LP_ERR_ARG, "%s: max_dist %lld must exceed num_buckets/4 = %lld", WHAT, (long long)c->max_dist,
                       (long long)(c->num_buckets / 4));
    if (!(c->eps >= 0)) return lp_fail(LP_ERR_ARG, "%s: eps %g must be >= 0", WHAT, (double)c->eps);
    if (c->num_heads <= 0 || c->head_dim * c->num_heads != c->dim_attn || c->dim <= 0 || c->dim_ffn <= 0 ||
        c->vocab <= 0 || c->num_layers <= 0)
        return lp_fail(LP_ERR_ARG, "%s: inconsistent configuration (dim %lld, dim_attn %lld = %lld heads x %lld, "
                       "dim_ffn %lld, vocab %lld, %lld layers)", WHAT, (long long)c->dim, (long long)c->dim_attn,
                       (long long)c->num_heads, (long long)c->head_dim, (long long)c->dim_ffn, (long long)c->vocab,
                       (long long)c->num_layers);
    return LP_OK;
}

lp_status lp_umt5_config_detect(const lp_umt5_weights *w, int64_t num_heads, lp_umt5_config *cfg) {
    if (w->num_layers <= 0 || !w->blocks)
        return lp_fail(LP_ERR_MISSING, "%s: no blocks (blocks.0.norm1.weight is absent)", WHAT);
    LP_TRY(expect(w->token_embedding, "token_embedding.weight", -1, -1, -1));
    LP_TRY(expect(w->blocks[0].q, "attn.q.weight", 0, -1, -1));
    LP_TRY(expect(w->blocks[0].gate, "ffn.gate.0.weight", 0, -1, -1));
    LP_TRY(expect(w->blocks[0].pos, "pos_embedding.embedding.weight", 0, -1, -1));
    lp_umt5_config c = {
        .vocab = w->token_embedding->shape[0],
        .dim = w->token_embedding->shape[1],
        .dim_attn = w->blocks[0].q->shape[0],
        .dim_ffn = w->blocks[0].gate->shape[0],
        .num_heads = w->blocks[0].pos->shape[1],
        .num_layers = w->num_layers,
        .num_buckets = w->blocks[0].pos->shape[0],
        .max_dist = 128,
        .eps = 1e-6f,
    };
    if (num_heads > 0 && num_heads != c.num_heads)
        return lp_fail(LP_ERR_SHAPE, "%s: tensor '%s' holds %lld heads, but num_heads = %lld was asked for", WHAT,
                       w->blocks[0].pos->name, (long long)c.num_heads, (long long)num_heads);
    if (c.num_heads <= 0 || c.dim_attn % c.num_heads)
        return lp_fail(LP_ERR_SHAPE, "%s: dim_attn %lld (from '%s') is not a multiple of %lld heads", WHAT,
                       (long long)c.dim_attn, w->blocks[0].q->name, (long long)c.num_heads);
    c.head_dim = c.dim_attn / c.num_heads;
    if (c.dim > INT_MAX / 16 || c.dim_attn > INT_MAX / 16 || c.dim_ffn > INT_MAX / 16)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: dimensions of '%s' / '%s' are too large for BLAS", WHAT,
                       w->blocks[0].q->name, w->blocks[0].gate->name);
    LP_TRY(expect(w->norm, "norm.weight", -1, c.dim, VEC));
    for (int64_t i = 0; i < c.num_layers; i++) {
        const lp_umt5_block *b = &w->blocks[i];
        LP_TRY(expect(b->norm1, "norm1.weight", i, c.dim, VEC));
        LP_TRY(expect(b->q, "attn.q.weight", i, c.dim_attn, c.dim));
        LP_TRY(expect(b->k, "attn.k.weight", i, c.dim_attn, c.dim));
        LP_TRY(expect(b->v, "attn.v.weight", i, c.dim_attn, c.dim));
        LP_TRY(expect(b->o, "attn.o.weight", i, c.dim, c.dim_attn));
        LP_TRY(expect(b->norm2, "norm2.weight", i, c.dim, VEC));
        LP_TRY(expect(b->gate, "ffn.gate.0.weight", i, c.dim_ffn, c.dim));
        LP_TRY(expect(b->fc1, "ffn.fc1.weight", i, c.dim_ffn, c.dim));
        LP_TRY(expect(b->fc2, "ffn.fc2.weight", i, c.dim, c.dim_ffn));
        LP_TRY(expect(b->pos, "pos_embedding.embedding.weight", i, c.num_buckets, c.num_heads));
    }
    LP_TRY(check_cfg(&c));
    *cfg = c;
    return LP_OK;
}

/* ---- kernels ---- */

int64_t lp_umt5_bucket(int64_t rel, int64_t num_buckets, int64_t max_dist) {
    int64_t side = num_buckets / 2, max_exact = side / 2;
    int64_t bucket = rel > 0 ? side : 0;
    int64_t r = rel < 0 ? -rel : rel;
    if (r < max_exact) return bucket + r;
    /* fp32 like upstream; exact at the power-of-two boundaries for the umT5 sizes */
    float large = logf((float)r / (float)max_exact) / (float)log((double)max_dist / (double)max_exact) *
                  (float)(side - max_exact);
    int64_t l = max_exact + (large < (float)side ? (int64_t)large : side);
    return bucket + (l < side - 1 ? l : side - 1);
}

/* Rows of an [N, K] weight converted per GEMM step. */
static int64_t chunk_rows(int64_t N, int64_t K) {
    int64_t r = CHUNK_FLOATS / K;
    if (r < 1) r = 1;
    return r < N ? r : N;
}

typedef struct {
    const lp_tensor *w;
    int64_t row0, k;
    float *dst;
} convert_ctx;

static void convert_rows(void *vctx, int64_t b, int64_t e) {
    const convert_ctx *c = vctx;
    /* The dtype is a checked float type and the range lies inside the tensor, so this cannot fail. */
    (void)lp_tensor_read_f32(c->w, (c->row0 + b) * c->k, (e - b) * c->k, c->dst + b * c->k);
}

/* C[n, N] = A[n, K] · W[N, K]^T + beta·C, converting W a block of rows at a time into wbuf. */
static void linear(const lp_tensor *w, const float *a, int64_t n, float beta, float *c, float *wbuf, lp_pool *pool) {
    int N = (int)w->shape[0], K = (int)w->shape[1];
    if (w->dtype == LP_F32 && (uintptr_t)w->data % sizeof(float) == 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, N, K, 1.0f, a, K, w->data, K, beta, c, N);
        return;
    }
    int rows = (int)chunk_rows(N, K);
    for (int r0 = 0; r0 < N; r0 += rows) {
        int nb = N - r0 < rows ? N - r0 : rows;
        convert_ctx cc = {w, r0, K, wbuf};
        lp_parallel_for(pool, nb, convert_rows, &cc);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, nb, K, 1.0f, a, K, wbuf, K, beta, c + r0, N);
    }
}

typedef struct {
    const float *x, *weight;
    float *y;
    int64_t dim;
    float eps;
} norm_ctx;

/* T5Norm in fp32: y = weight · (x · rsqrt(mean(x²) + eps)), no mean subtraction. */
static void norm_rows(void *vctx, int64_t b, int64_t e) {
    const norm_ctx *c = vctx;
    for (int64_t i = b; i < e; i++) {
        const float *x = c->x + i * c->dim;
        float *y = c->y + i * c->dim;
        double ss = 0;
        for (int64_t j = 0; j < c->dim; j++) ss += (double)x[j] * x[j];
        float r = 1.0f / sqrtf((float)(ss / (double)c->dim) + c->eps);
        for (int64_t j = 0; j < c->dim; j++) y[j] = c->weight[j] * (x[j] * r);
    }
}

typedef struct {
    float *s;              /* [n, n] logits of one head, softmaxed in place */
    const int32_t *bucket; /* [n, n] */
    const float *table;    /* [num_buckets, num_heads] */
    const uint8_t *key_ok; /* [n] */
    int64_t n, heads, head;
} softmax_ctx;

/* Adds the relative-position bias (or the mask) to one head's logits and
 * applies softmax per query row. A masked key gets finfo(float32).min in place
 * of the bias, as upstream's masked_fill does. */
static void softmax_rows(void *vctx, int64_t b, int64_t e) {
    const softmax_ctx *c = vctx;
    for (int64_t i = b; i < e; i++) {
        float *s = c->s + i * c->n;
        const int32_t *bk = c->bucket + i * c->n;
        float mx = -INFINITY;
        for (int64_t j = 0; j < c->n; j++) {
            s[j] += c->key_ok[j] ? c->table[bk[j] * c->heads + c->head] : -FLT_MAX;
            if (s[j] > mx) mx = s[j];
        }
        float sum = 0;
        for (int64_t j = 0; j < c->n; j++) {
            s[j] = expf(s[j] - mx);
            sum += s[j];
        }
        float inv = 1.0f / sum;
        for (int64_t j = 0; j < c->n; j++) s[j] *= inv;
    }
}

typedef struct {
    float *up;
    const float *gate;
} gelu_ctx;

/* up = up · gelu_tanh(gate), elementwise. */
static void gated_gelu(void *vctx, int64_t b, int64_t e) {
    const gelu_ctx *c = vctx;
    for (int64_t i = b; i < e; i++) {
        float g = c->gate[i];
        c->up[i] *= 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
    }
}

/* ---- forward ---- */

typedef struct {
    int64_t *pos;     /* [n] index in ids of each computed row */
    uint8_t *key_ok;  /* [n] key is a real token */
    int32_t *bucket;  /* [n, n] */
    float *x, *h;     /* [n, dim] residual stream, normed input */
    float *q, *k, *v; /* [n, dim_attn] */
    float *att;       /* [n, dim_attn] attention output (heads concatenated) */
    float *gate, *up; /* [n, dim_ffn] */
    float *s;         /* [n, n] one head's logits */
    float *table;     /* [num_buckets, num_heads] this layer's position bias */
    float *normw;     /* [dim] */
    float *wbuf;      /* converted weight rows */
} scratch;

static size_t wbuf_floats(const lp_umt5_config *c) {
    int64_t m = chunk_rows(c->dim_attn, c->dim) * c->dim;
    int64_t o = chunk_rows(c->dim, c->dim_attn) * c->dim_attn;
    int64_t f = chunk_rows(c->dim_ffn, c->dim) * c->dim;
    int64_t d = chunk_rows(c->dim, c->dim_ffn) * c->dim_ffn;
    if (o > m) m = o;
    if (f > m) m = f;
    if (d > m) m = d;
    return (size_t)m;
}

static lp_status reserve(lp_arena *ar, const lp_umt5_config *c, int64_t n, scratch *s) {
    size_t nn = (size_t)n, f = sizeof(float);
    size_t sizes[] = {nn * 8, nn, nn * nn * 4, nn * (size_t)c->dim * f, nn * (size_t)c->dim * f,
                      nn * (size_t)c->dim_attn * f, nn * (size_t)c->dim_attn * f, nn * (size_t)c->dim_attn * f,
                      nn * (size_t)c->dim_attn * f, nn * (size_t)c->dim_ffn * f, nn * (size_t)c->dim_ffn * f,
                      nn * nn * f, (size_t)(c->num_buckets * c->num_heads) * f, (size_t)c->dim * f,
                      wbuf_floats(c) * f};
    void **dst[] = {(void **)&s->pos, (void **)&s->key_ok, (void **)&s->bucket, (void **)&s->x, (void **)&s->h,
                    (void **)&s->q, (void **)&s->k, (void **)&s->v, (void **)&s->att, (void **)&s->gate,
                    (void **)&s->up, (void **)&s->s, (void **)&s->table, (void **)&s->normw, (void **)&s->wbuf};
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) total += lp_arena_round(sizes[i]);
    LP_TRY(lp_arena_init(ar, total));
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) *dst[i] = lp_arena_alloc(ar, sizes[i]);
    return LP_OK;
}

static void read_vec(const lp_tensor *t, float *dst) {
    /* shape and dtype were checked by lp_umt5_config_detect */
    (void)lp_tensor_read_f32(t, 0, lp_tensor_numel(t), dst);
}

static void run_norm(const lp_umt5_config *c, const lp_tensor *w, float *wf, const float *x, float *y, int64_t n,
                     lp_pool *pool) {
    read_vec(w, wf);
    norm_ctx nc = {x, wf, y, c->dim, c->eps};
    lp_parallel_for(pool, n, norm_rows, &nc);
}

/* x += o(attention(T5Norm1(x))) with this layer's relative-position bias. */
static void attention(const lp_umt5_config *c, const lp_umt5_block *b, scratch *s, int64_t n, lp_pool *pool) {
    run_norm(c, b->norm1, s->normw, s->x, s->h, n, pool);
    linear(b->q, s->h, n, 0.0f, s->q, s->wbuf, pool);
    linear(b->k, s->h, n, 0.0f, s->k, s->wbuf, pool);
    linear(b->v, s->h, n, 0.0f, s->v, s->wbuf, pool);
    read_vec(b->pos, s->table);
    int da = (int)c->dim_attn, hd = (int)c->head_dim, nn = (int)n;
    for (int64_t h = 0; h < c->num_heads; h++) {
        /* T5 does not scale the logits by 1/sqrt(head_dim). */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nn, nn, hd, 1.0f, s->q + h * hd, da, s->k + h * hd, da,
                    0.0f, s->s, nn);
        softmax_ctx sc = {s->s, s->bucket, s->table, s->key_ok, n, c->num_heads, h};
        lp_parallel_for(pool, n, softmax_rows, &sc);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nn, hd, nn, 1.0f, s->s, nn, s->v + h * hd, da, 0.0f,
                    s->att + h * hd, da);
    }
    linear(b->o, s->att, n, 1.0f, s->x, s->wbuf, pool);
}

/* x += fc2(fc1(T5Norm2(x)) · gelu_tanh(gate(T5Norm2(x)))). */
static void feed_forward(const lp_umt5_config *c, const lp_umt5_block *b, scratch *s, int64_t n, lp_pool *pool) {
    run_norm(c, b->norm2, s->normw, s->x, s->h, n, pool);
    linear(b->gate, s->h, n, 0.0f, s->gate, s->wbuf, pool);
    linear(b->fc1, s->h, n, 0.0f, s->up, s->wbuf, pool);
    gelu_ctx gc = {s->up, s->gate};
    lp_parallel_for(pool, n * c->dim_ffn, gated_gelu, &gc);
    linear(b->fc2, s->up, n, 1.0f, s->x, s->wbuf, pool);
}

lp_status lp_umt5_encode(const lp_umt5_config *cfg, const lp_umt5_weights *w, const int64_t *ids,
                         const int64_t *mask, int64_t len, lp_umt5_rows rows, lp_pool *pool, float *out) {
    if (!cfg || !w || len < 0 || (len > 0 && (!ids || !out)) || (rows != LP_UMT5_ALL_ROWS && rows != LP_UMT5_REAL_ROWS))
        return lp_fail(LP_ERR_ARG, "%s: invalid arguments to lp_umt5_encode (len %lld)", WHAT, (long long)len);
    LP_TRY(check_cfg(cfg));
    if (w->num_layers != cfg->num_layers || !w->blocks || !w->token_embedding || !w->norm)
        return lp_fail(LP_ERR_ARG, "%s: weights (%lld blocks) do not match the configuration (%lld layers)", WHAT,
                       (long long)w->num_layers, (long long)cfg->num_layers);
    int64_t n = 0;
    for (int64_t i = 0; i < len; i++) {
        if (ids[i] < 0 || ids[i] >= cfg->vocab)
            return lp_fail(LP_ERR_ARG, "%s: token id %lld at position %lld is outside the vocabulary [0, %lld)", WHAT,
                           (long long)ids[i], (long long)i, (long long)cfg->vocab);
        n += rows == LP_UMT5_ALL_ROWS || !mask || mask[i] != 0;
    }
    if (rows == LP_UMT5_REAL_ROWS) memset(out, 0, (size_t)len * (size_t)cfg->dim * sizeof *out);
    if (n == 0) return LP_OK;
    if (n > INT_MAX / 16) return lp_fail(LP_ERR_UNSUPPORTED, "%s: sequence of %lld tokens is too long", WHAT, (long long)n);

    lp_arena ar;
    scratch s;
    LP_TRY(reserve(&ar, cfg, n, &s));
    for (int64_t i = 0, r = 0; i < len; i++) {
        int real = !mask || mask[i] != 0;
        if (rows == LP_UMT5_REAL_ROWS && !real) continue;
        s.pos[r] = i;
        s.key_ok[r] = (uint8_t)real;
        r++;
    }
    /* x = token_embedding(ids): a row lookup, converted to fp32. */
    for (int64_t r = 0; r < n; r++)
        (void)lp_tensor_read_f32(w->token_embedding, ids[s.pos[r]] * cfg->dim, cfg->dim, s.x + r * cfg->dim);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            s.bucket[i * n + j] = (int32_t)lp_umt5_bucket(s.pos[j] - s.pos[i], cfg->num_buckets, cfg->max_dist);

    for (int64_t l = 0; l < cfg->num_layers; l++) {
        attention(cfg, &w->blocks[l], &s, n, pool);
        feed_forward(cfg, &w->blocks[l], &s, n, pool);
    }
    if (rows == LP_UMT5_ALL_ROWS) {
        run_norm(cfg, w->norm, s.normw, s.x, out, n, pool);
    } else {
        run_norm(cfg, w->norm, s.normw, s.x, s.h, n, pool);
        for (int64_t r = 0; r < n; r++)
            memcpy(out + s.pos[r] * cfg->dim, s.h + r * cfg->dim, (size_t)cfg->dim * sizeof *out);
    }
    lp_arena_release(&ar);
    return LP_OK;
}
