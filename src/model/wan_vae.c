#include "wan_vae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* Latent normalisation constants of Wan2.1 (spec/VAE.md). */
static const float k_mean[16] = {-0.7571f, -0.7089f, -0.9113f, 0.1075f, -0.1745f, 0.9653f, -0.1517f, 1.5508f,
                                 0.4134f,  -0.0715f, 0.5517f,  -0.3632f, -0.1922f, -0.9497f, 0.2503f, -0.2921f};
static const float k_std[16] = {2.8184f, 1.4541f, 2.3275f, 2.6558f, 1.2196f, 1.7708f, 2.6052f, 2.0743f,
                                3.2687f, 2.1526f, 2.8652f, 1.5579f, 1.6382f, 1.1253f, 2.8251f, 1.9160f};

/* Frames a stack sees per call at most: 4 pixel frames in the encoder, and
 * 1 latent frame growing to 4 through the decoder's two temporal upsamples. */
enum { MAX_T = 4, CACHE_T = 2 };

typedef enum { LAYER_RES, LAYER_ATTN, LAYER_DOWN, LAYER_UP } layer_kind;

/* A convolution's f32 weight [cout, cin, kt, kh, kw] (a Conv3d) or
 * [cout, cin, kh, kw] (a Conv2d, kt = 1) and bias [cout], as views of the
 * model's own copies (the backends key their device copies by them). */
typedef struct {
    int cout, cin, kt, kh, kw;
    lp_tensor weight, bias;
} vae_conv;

/* One entry of encoder.downsamples / decoder.upsamples / *.middle. */
typedef struct {
    layer_kind kind;
    int temporal;  /* resample: downsample3d / upsample3d (has a time_conv) */
    int cin, cout; /* channels in and out */
    /* LAYER_RES (ResidualBlock):
     *   norm1 = residual.0.gamma [cin,1,1,1], conv1 = residual.2 [cout,cin,3,3,3],
     *   norm2 = residual.3.gamma [cout,1,1,1], conv2 = residual.6 [cout,cout,3,3,3],
     *   shortcut = shortcut [cout,cin,1,1,1] (weight NULL when cin == cout).
     * LAYER_ATTN (AttentionBlock, c = cin = cout):
     *   norm1 = norm.gamma [c,1,1], conv1 = to_qkv [3c,c,1,1], conv2 = proj [c,c,1,1].
     * LAYER_DOWN (Resample downsample2d/3d, c = cin = cout):
     *   conv1 = resample.1 [c,c,3,3] (stride 2), conv2 = time_conv [c,c,3,1,1] (3d only).
     * LAYER_UP (Resample upsample2d/3d, c = cin, cout = c/2):
     *   conv1 = resample.1 [c/2,c,3,3], conv2 = time_conv [2c,c,3,1,1] (3d only). */
    lp_tensor norm1, norm2; /* views of c elements */
    vae_conv conv1, conv2, shortcut;
} vae_layer;

/* Encoder3d / Decoder3d: conv1, the layers, then head = RMS -> SiLU -> conv. */
typedef struct {
    vae_conv conv_in;       /* *.conv1 [c0, cin, 3,3,3] */
    vae_layer *layers;
    int nlayers;
    lp_tensor head_norm;    /* *.head.0.gamma [c,1,1,1] */
    vae_conv head;          /* *.head.2 [cout, c, 3,3,3] */
} vae_stack;

struct lp_wan_vae {
    lp_wan_vae_config cfg;
    vae_stack enc, dec;
    vae_conv quant;           /* conv1 [2z, 2z, 1,1,1]: encoder output -> (mu, log_var) */
    vae_conv post_quant;      /* conv2 [z, z, 1,1,1]: latent -> decoder input */
    float inv_std[16];        /* 1 / std in f32, as the reference's scale[1] */
    void **allocs;            /* every f32 weight copy and tensor name */
    int nallocs, cap;
};

/* ------------------------------------------------------------------ loading */

typedef struct {
    const lp_tensor_file *f;
    const char *prefix;
    lp_wan_vae *m;
} loader;

static const lp_tensor *find(const loader *L, const char *name) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", L->prefix, name);
    return lp_tensor_file_find(L->f, full);
}

static lp_status get(const loader *L, const char *name, const lp_tensor **t) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", L->prefix, name);
    return lp_tensor_file_get(L->f, full, t);
}

/* Keeps p (NULL: out of memory) among the model's allocations. */
static lp_status keep(lp_wan_vae *m, void *p, const char *what) {
    if (p && m->nallocs == m->cap) {
        int cap = m->cap ? 2 * m->cap : 256;
        void **a = realloc(m->allocs, (size_t)cap * sizeof *a);
        if (a) {
            m->allocs = a;
            m->cap = cap;
        }
    }
    if (!p || m->nallocs == m->cap) {
        free(p);
        return lp_fail(LP_ERR_NOMEM, "wan_vae: out of memory loading '%s'", what);
    }
    m->allocs[m->nallocs++] = p;
    return LP_OK;
}

/* Loads prefix + name, checks its shape, and makes *out an f32 view of a
 * model-owned copy (named as in the file). */
static lp_status load_f32(loader *L, const char *name, int ndim, const int64_t *shape, lp_tensor *out) {
    const lp_tensor *t;
    LP_TRY(get(L, name, &t));
    LP_TRY(lp_tensor_expect(t, lp_tensor_file_path(L->f), ndim, shape));
    lp_wan_vae *m = L->m;
    int64_t n = lp_tensor_numel(t);
    float *buf = malloc((size_t)(n ? n : 1) * sizeof *buf);
    LP_TRY(keep(m, buf, t->name));
    char *tname = strdup(t->name);
    LP_TRY(keep(m, tname, t->name));
    LP_TRY(lp_tensor_read_f32(t, 0, n, buf));
    *out = *t;
    out->name = tname;
    out->dtype = LP_F32;
    out->data = buf;
    out->nbytes = (size_t)n * sizeof *buf;
    return LP_OK;
}

/* "<base><suffix>" into buf. */
static const char *cat(char *buf, size_t len, const char *base, const char *suffix) {
    snprintf(buf, len, "%s%s", base, suffix);
    return buf;
}

/* A convolution base.weight [cout, cin, (kt,) kh, kw] + base.bias [cout];
 * kt == 0 means a 4-D Conv2d weight (used as kt = 1). */
static lp_status load_conv(loader *L, const char *base, int cout, int cin, int kt, int kh, int kw, vae_conv *c) {
    char name[512];
    int64_t shape5[5] = {cout, cin, kt, kh, kw}, shape4[4] = {cout, cin, kh, kw}, bshape[1] = {cout};
    *c = (vae_conv){.cout = cout, .cin = cin, .kt = kt ? kt : 1, .kh = kh, .kw = kw};
    LP_TRY(load_f32(L, cat(name, sizeof name, base, ".weight"), kt ? 5 : 4, kt ? shape5 : shape4, &c->weight));
    return load_f32(L, cat(name, sizeof name, base, ".bias"), 1, bshape, &c->bias);
}

/* An RMS_norm gamma [c,1,1,1] (videos) or [c,1,1] (images). */
static lp_status load_gamma(loader *L, const char *name, int c, int images, lp_tensor *out) {
    int64_t shape[4] = {c, 1, 1, 1};
    return load_f32(L, name, images ? 3 : 4, shape, out);
}

static lp_status load_res(loader *L, const char *base, int cin, int cout, vae_layer *l) {
    char name[512];
    *l = (vae_layer){.kind = LAYER_RES, .cin = cin, .cout = cout};
    LP_TRY(load_gamma(L, cat(name, sizeof name, base, ".residual.0.gamma"), cin, 0, &l->norm1));
    LP_TRY(load_conv(L, cat(name, sizeof name, base, ".residual.2"), cout, cin, 3, 3, 3, &l->conv1));
    LP_TRY(load_gamma(L, cat(name, sizeof name, base, ".residual.3.gamma"), cout, 0, &l->norm2));
    LP_TRY(load_conv(L, cat(name, sizeof name, base, ".residual.6"), cout, cout, 3, 3, 3, &l->conv2));
    if (cin != cout) LP_TRY(load_conv(L, cat(name, sizeof name, base, ".shortcut"), cout, cin, 1, 1, 1, &l->shortcut));
    return LP_OK;
}

static lp_status load_attn(loader *L, const char *base, int c, vae_layer *l) {
    char name[512];
    *l = (vae_layer){.kind = LAYER_ATTN, .cin = c, .cout = c};
    LP_TRY(load_gamma(L, cat(name, sizeof name, base, ".norm.gamma"), c, 1, &l->norm1));
    LP_TRY(load_conv(L, cat(name, sizeof name, base, ".to_qkv"), 3 * c, c, 0, 1, 1, &l->conv1));
    return load_conv(L, cat(name, sizeof name, base, ".proj"), c, c, 0, 1, 1, &l->conv2);
}

static lp_status load_resample(loader *L, const char *base, int c, int up, int temporal, vae_layer *l) {
    char name[512];
    *l = (vae_layer){.kind = up ? LAYER_UP : LAYER_DOWN, .temporal = temporal, .cin = c, .cout = up ? c / 2 : c};
    LP_TRY(load_conv(L, cat(name, sizeof name, base, ".resample.1"), l->cout, c, 0, 3, 3, &l->conv1));
    if (temporal)
        LP_TRY(load_conv(L, cat(name, sizeof name, base, ".time_conv"), up ? 2 * c : c, c, 3, 1, 1, &l->conv2));
    return LP_OK;
}

/* Reads the configuration off the tensor shapes (see lp_wan_vae_load). */
static lp_status detect_config(const loader *L, lp_wan_vae_config *cfg) {
    const char *path = lp_tensor_file_path(L->f);
    const lp_tensor *t;
    char name[512];
    *cfg = (lp_wan_vae_config){0};
    LP_TRY(get(L, "encoder.conv1.weight", &t));
    if (t->ndim != 5 || t->shape[0] < 1 || t->shape[1] != 3)
        return lp_fail(LP_ERR_SHAPE, "%s: tensor '%s' should be [dim, 3, 3, 3, 3]", path, t->name);
    cfg->dim = (int)t->shape[0];
    LP_TRY(get(L, "conv2.weight", &t));
    if (t->ndim != 5 || t->shape[0] != 16)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: tensor '%s' should be [16, 16, 1, 1, 1] (z_dim 16 is the only one "
                       "with known latent mean/std)", path, t->name);
    cfg->z_dim = 16;
    /* encoder.downsamples: stages of res blocks, a resample between stages */
    int n = 0, nres = -1, resamples = 0;
    for (;; n++) {
        snprintf(name, sizeof name, "encoder.downsamples.%d.resample.1.weight", n);
        int is_resample = find(L, name) != NULL;
        snprintf(name, sizeof name, "encoder.downsamples.%d.residual.0.gamma", n);
        if (!is_resample && !find(L, name)) break;
        if (is_resample && nres < 0) nres = n;
        resamples += is_resample;
    }
    if (nres < 0) nres = n;
    cfg->num_res_blocks = nres;
    cfg->nstages = resamples + 1;
    if (nres < 1 || cfg->nstages > LP_WAN_VAE_MAX_STAGES || n != cfg->nstages * nres + resamples)
        return lp_fail(LP_ERR_FORMAT, "%s: encoder.downsamples.* (%d entries, %d resamples) do not form stages of "
                       "res blocks separated by one resample", path, n, resamples);
    int temporal = 0;
    for (int s = 0; s < cfg->nstages; s++) {
        int first = s * (nres + 1);
        snprintf(name, sizeof name, "encoder.downsamples.%d.residual.2.weight", first);
        LP_TRY(get(L, name, &t));
        if (t->ndim != 5 || t->shape[0] % cfg->dim || t->shape[0] < cfg->dim)
            return lp_fail(LP_ERR_SHAPE, "%s: tensor '%s' should have a multiple of dim=%d output channels", path,
                           t->name, cfg->dim);
        cfg->dim_mult[s] = (int)(t->shape[0] / cfg->dim);
        if (s + 1 < cfg->nstages) {
            snprintf(name, sizeof name, "encoder.downsamples.%d.time_conv.weight", first + nres);
            cfg->temporal_down[s] = find(L, name) != NULL;
            temporal += cfg->temporal_down[s];
        }
    }
    if (temporal != 2)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: %d temporal downsamples; the causal chunking (1, 4, 4, ... frames) "
                       "needs exactly 2", path, temporal);
    return LP_OK;
}

static lp_status load_all(loader *L) {
    lp_wan_vae *m = L->m;
    const lp_wan_vae_config *cfg = &m->cfg;
    int dim = cfg->dim, z = cfg->z_dim, ns = cfg->nstages, nrb = cfg->num_res_blocks;
    char base[256];

    /* encoder */
    vae_stack *e = &m->enc;
    e->layers = calloc((size_t)(ns * nrb + ns - 1 + 3), sizeof *e->layers);
    if (!e->layers) return lp_fail(LP_ERR_NOMEM, "wan_vae: out of memory");
    LP_TRY(load_conv(L, "encoder.conv1", dim, 3, 3, 3, 3, &e->conv_in));
    int cin = dim, c = dim;
    for (int s = 0; s < ns; s++) {
        c = dim * cfg->dim_mult[s];
        for (int b = 0; b < nrb; b++, cin = c) {
            snprintf(base, sizeof base, "encoder.downsamples.%d", e->nlayers);
            LP_TRY(load_res(L, base, cin, c, &e->layers[e->nlayers++]));
        }
        if (s + 1 < ns) {
            snprintf(base, sizeof base, "encoder.downsamples.%d", e->nlayers);
            LP_TRY(load_resample(L, base, c, 0, cfg->temporal_down[s], &e->layers[e->nlayers++]));
        }
    }
    LP_TRY(load_res(L, "encoder.middle.0", c, c, &e->layers[e->nlayers++]));
    LP_TRY(load_attn(L, "encoder.middle.1", c, &e->layers[e->nlayers++]));
    LP_TRY(load_res(L, "encoder.middle.2", c, c, &e->layers[e->nlayers++]));
    LP_TRY(load_gamma(L, "encoder.head.0.gamma", c, 0, &e->head_norm));
    LP_TRY(load_conv(L, "encoder.head.2", 2 * z, c, 3, 3, 3, &e->head));

    LP_TRY(load_conv(L, "conv1", 2 * z, 2 * z, 1, 1, 1, &m->quant));
    LP_TRY(load_conv(L, "conv2", z, z, 1, 1, 1, &m->post_quant));

    /* decoder: the stages in reverse, each after the first taking the halved
     * channels of the upsample before it */
    vae_stack *d = &m->dec;
    d->layers = calloc((size_t)(3 + ns * (nrb + 1) + ns - 1), sizeof *d->layers);
    if (!d->layers) return lp_fail(LP_ERR_NOMEM, "wan_vae: out of memory");
    c = dim * cfg->dim_mult[ns - 1];
    LP_TRY(load_conv(L, "decoder.conv1", c, z, 3, 3, 3, &d->conv_in));
    LP_TRY(load_res(L, "decoder.middle.0", c, c, &d->layers[d->nlayers++]));
    LP_TRY(load_attn(L, "decoder.middle.1", c, &d->layers[d->nlayers++]));
    LP_TRY(load_res(L, "decoder.middle.2", c, c, &d->layers[d->nlayers++]));
    cin = c;
    for (int i = 0, idx = 0; i < ns; i++) {
        if (i > 0) cin /= 2;
        c = dim * cfg->dim_mult[ns - 1 - i];
        for (int b = 0; b <= nrb; b++, cin = c) {
            snprintf(base, sizeof base, "decoder.upsamples.%d", idx++);
            LP_TRY(load_res(L, base, cin, c, &d->layers[d->nlayers++]));
        }
        if (i + 1 < ns) {
            snprintf(base, sizeof base, "decoder.upsamples.%d", idx++);
            LP_TRY(load_resample(L, base, c, 1, cfg->temporal_down[ns - 2 - i], &d->layers[d->nlayers++]));
        }
    }
    LP_TRY(load_gamma(L, "decoder.head.0.gamma", c, 0, &d->head_norm));
    LP_TRY(load_conv(L, "decoder.head.2", 3, c, 3, 3, 3, &d->head));

    for (int i = 0; i < z; i++) m->inv_std[i] = 1.0f / k_std[i];
    return LP_OK;
}

lp_status lp_wan_vae_load(const lp_tensor_file *f, const char *prefix, lp_wan_vae **out) {
    *out = NULL;
    lp_wan_vae *m = calloc(1, sizeof *m);
    if (!m) return lp_fail(LP_ERR_NOMEM, "wan_vae: out of memory");
    loader L = {.f = f, .prefix = prefix ? prefix : "", .m = m};
    lp_status s = detect_config(&L, &m->cfg);
    if (s == LP_OK) s = load_all(&L);
    if (s != LP_OK) {
        lp_wan_vae_free(m);
        return s;
    }
    *out = m;
    return LP_OK;
}

void lp_wan_vae_free(lp_wan_vae *m) {
    if (!m) return;
    for (int i = 0; i < m->nallocs; i++) free(m->allocs[i]);
    free(m->allocs);
    free(m->enc.layers);
    free(m->dec.layers);
    free(m);
}

const lp_wan_vae_config *lp_wan_vae_config_of(const lp_wan_vae *m) { return &m->cfg; }

int lp_wan_vae_scale(const lp_wan_vae *m) { return 1 << (m->cfg.nstages - 1); }

/* ---------------------------------------------------------------- sessions */

/* Geometry of a causal 3-D convolution (or a stride-1 Conv2d): spatial stride
 * 1, padding kh/2, output size = input size. */
static lp_conv3d_geom geom_same(const vae_conv *k, int h, int w) {
    return (lp_conv3d_geom){.h = h, .w = w, .oh = h, .ow = w, .stride = 1, .pad = k->kh / 2, .t_stride = 1};
}

/* Geometry of Resample "downsample": ZeroPad2d((0,1,0,1)) then Conv2d 3x3
 * stride 2 without padding: output floor((h-2)/2)+1 x floor((w-2)/2)+1. */
static lp_conv3d_geom geom_down2(int h, int w) {
    return (lp_conv3d_geom){.h = h, .w = w, .oh = (h - 2) / 2 + 1, .ow = (w - 2) / 2 + 1, .stride = 2, .pad = 0,
                            .t_stride = 1};
}

/* Streaming state of one layer, at the layer's input resolution h x w. */
typedef struct {
    int h, w;
    /* LAYER_RES: the last CACHE_T inputs of conv1 [2][cin][h][w] and of conv2
     * [2][cout][h][w]. LAYER_UP (3d): the time_conv's last CACHE_T inputs
     * [2][c][h][w]. LAYER_DOWN (3d): the last frame after the spatial conv
     * [c][h/2][w/2]. Zeros at the start of a clip. */
    float *cache1, *cache2;
} layer_state;

/* A stack (encoder or decoder body) run chunk by chunk on a backend; every
 * buffer is in the backend's memory and allocated by stack_open. */
typedef struct {
    const vae_stack *st;
    lp_backend *be;
    int h, w;             /* input frame size */
    int first;            /* the next chunk is the clip's first (temporal resamples bypass their time_conv) */
    float *cache_in;      /* conv_in's last CACHE_T inputs */
    float *cache_head;    /* head conv's last CACHE_T inputs */
    layer_state *ls;      /* [st->nlayers], host */
    float *buf[3];        /* activations, each sized for the largest tensor of a chunk */
    void **allocs;        /* the backend buffers, for close and reset */
    size_t *clear_bytes;  /* bytes of each that a reset zeroes */
    int nallocs, cap;
    size_t bytes;         /* total allocated */
} stack_run;

/* Allocates bytes of zeroed backend memory owned by the session; clear marks
 * state that a reset must zero again (the caches). */
static lp_status run_alloc(stack_run *r, size_t bytes, int clear, void **out) {
    if (r->nallocs == r->cap) {
        int cap = r->cap ? 2 * r->cap : 64;
        void **a = realloc(r->allocs, (size_t)cap * sizeof *a);
        if (a) r->allocs = a;
        size_t *b = a ? realloc(r->clear_bytes, (size_t)cap * sizeof *b) : NULL;
        if (!b) return lp_fail(LP_ERR_NOMEM, "wan_vae session: out of memory");
        r->clear_bytes = b;
        r->cap = cap;
    }
    void *p = r->be->alloc(r->be, bytes ? bytes : 1);
    if (!p) return lp_fail(LP_ERR_NOMEM, "wan_vae session: cannot allocate %zu bytes (%s)", bytes, lp_last_error());
    r->allocs[r->nallocs] = p;
    r->clear_bytes[r->nallocs++] = clear ? bytes : 0;
    r->bytes += bytes;
    *out = p;
    return LP_OK;
}

static lp_status run_floats(stack_run *r, size_t n, int clear, float **out) {
    void *p = NULL;
    LP_TRY(run_alloc(r, n * sizeof(float), clear, &p));
    *out = p;
    return LP_OK;
}

static void stack_close(stack_run *r) {
    for (int i = 0; i < r->nallocs; i++) r->be->release(r->be, r->allocs[i]);
    free(r->allocs);
    free(r->clear_bytes);
    free(r->ls);
    *r = (stack_run){0};
}

/* Clears every cache: the state of a new clip. */
static lp_status stack_reset(stack_run *r) {
    for (int i = 0; i < r->nallocs; i++)
        if (r->clear_bytes[i]) LP_TRY(r->be->clear(r->be, r->allocs[i], r->clear_bytes[i]));
    r->first = 1;
    return LP_OK;
}

static size_t max_z(size_t a, size_t b) { return a > b ? a : b; }

/* Walks the stack's shapes for chunks of t0 input frames (the steady state,
 * where temporal resamples are active), allocating each cache and sizing the
 * activation buffers for the largest tensor met. */
static lp_status stack_open(stack_run *r, const vae_stack *st, int h, int w, int t0, lp_backend *be) {
    *r = (stack_run){.st = st, .be = be, .h = h, .w = w, .first = 1};
    if (!(r->ls = calloc((size_t)st->nlayers, sizeof *r->ls)))
        return lp_fail(LP_ERR_NOMEM, "wan_vae session: out of memory");
    size_t need = 0, T = (size_t)t0, hw = (size_t)h * w;
    LP_TRY(run_floats(r, CACHE_T * (size_t)st->conv_in.cin * hw, 1, &r->cache_in));
    need = T * st->conv_in.cout * hw;
    for (int i = 0; i < st->nlayers; i++) {
        const vae_layer *l = &st->layers[i];
        layer_state *s = &r->ls[i];
        s->h = h;
        s->w = w;
        hw = (size_t)h * w;
        switch (l->kind) {
        case LAYER_RES:
            LP_TRY(run_floats(r, CACHE_T * (size_t)l->cin * hw, 1, &s->cache1));
            LP_TRY(run_floats(r, CACHE_T * (size_t)l->cout * hw, 1, &s->cache2));
            need = max_z(need, T * max_z((size_t)l->cin, (size_t)l->cout) * hw);
            break;
        case LAYER_ATTN: need = max_z(need, 3 * (size_t)l->cin * hw); break;
        case LAYER_DOWN:
            h = (h - 2) / 2 + 1;
            w = (w - 2) / 2 + 1;
            hw = (size_t)h * w;
            need = max_z(need, T * l->cin * hw);
            if (l->temporal) {
                LP_TRY(run_floats(r, (size_t)l->cin * hw, 1, &s->cache1));
                T = T / 2 ? T / 2 : 1;
            }
            break;
        case LAYER_UP:
            if (l->temporal) {
                LP_TRY(run_floats(r, CACHE_T * (size_t)l->cin * hw, 1, &s->cache1));
                need = max_z(need, T * 2 * l->cin * hw);
                T *= 2;
            }
            h *= 2;
            w *= 2;
            hw = (size_t)h * w;
            need = max_z(need, max_z((size_t)l->cin, T * l->cout) * hw);
            break;
        }
    }
    hw = (size_t)h * w;
    LP_TRY(run_floats(r, CACHE_T * (size_t)st->head.cin * hw, 1, &r->cache_head));
    need = max_z(need, T * st->head.cin * hw);
    if (T > MAX_T) return lp_fail(LP_ERR_UNSUPPORTED, "wan_vae: %zu frames per chunk inside the stack", T);
    for (int i = 0; i < 3; i++) LP_TRY(run_floats(r, need, 0, &r->buf[i]));
    return LP_OK;
}

/* The convolution cw over the n frames fr with geometry g into out. */
static lp_status conv(stack_run *r, const vae_conv *cw, const lp_conv3d_geom *g, const float *const *fr, int n,
                      float *out) {
    return r->be->conv3d(r->be, out, fr, n, &cw->weight, &cw->bias, g);
}

/* out = conv(w) over [history (CACHE_T frames), in (T frames)] at h x w, then
 * the history becomes the last CACHE_T frames of that sequence (the reference's
 * feat_cache of a CausalConv3d, zeros standing for "no history yet"). */
static lp_status cached_conv(stack_run *r, const vae_conv *cw, float *cache, const float *in, int T, int h, int w,
                             float *out) {
    size_t fs = (size_t)cw->cin * h * w, bytes = fs * sizeof(float);
    const float *fr[CACHE_T + MAX_T];
    fr[0] = cache;
    fr[1] = cache + fs;
    for (int t = 0; t < T; t++) fr[CACHE_T + t] = in + t * fs;
    lp_conv3d_geom g = geom_same(cw, h, w);
    LP_TRY(conv(r, cw, &g, fr, CACHE_T + T, out));
    if (T >= 2) return r->be->copy(r->be, cache, in + (T - 2) * fs, 2 * bytes);
    LP_TRY(r->be->copy(r->be, cache, cache + fs, bytes));
    return r->be->copy(r->be, cache + fs, in, bytes);
}

/* An uncached convolution of T frames (pointwise or kt = 1) with geometry g. */
static lp_status frame_conv(stack_run *r, const vae_conv *cw, const lp_conv3d_geom *g, const float *in, int T,
                            float *out) {
    const float *fr[MAX_T];
    for (int t = 0; t < T; t++) fr[t] = in + (size_t)t * cw->cin * g->h * g->w;
    return conv(r, cw, g, fr, T, out);
}

#define SWAP(a, b)          \
    do {                    \
        float *swap_ = (a); \
        (a) = (b);          \
        (b) = swap_;        \
    } while (0)

/* ResidualBlock: out = conv2(silu(rms2(conv1(silu(rms1(x)))))) + shortcut(x),
 * with x in *x, the result left in *x (a and b are free buffers). */
static lp_status res_block(stack_run *r, const vae_layer *l, layer_state *s, float **x, float **a, float *b, int T) {
    lp_backend *be = r->be;
    int64_t hw = (int64_t)s->h * s->w;
    be->channel_rms_norm(be, *a, *x, T, l->cin, hw, &l->norm1);
    be->silu(be, *a, T * l->cin * hw);
    LP_TRY(cached_conv(r, &l->conv1, s->cache1, *a, T, s->h, s->w, b));
    be->channel_rms_norm(be, b, b, T, l->cout, hw, &l->norm2);
    be->silu(be, b, T * l->cout * hw);
    LP_TRY(cached_conv(r, &l->conv2, s->cache2, b, T, s->h, s->w, *a));
    if (l->shortcut.weight.data) {
        lp_conv3d_geom g = geom_same(&l->shortcut, s->h, s->w);
        LP_TRY(frame_conv(r, &l->shortcut, &g, *x, T, b));
        be->add(be, *a, *a, b, T * l->cout * hw);
    } else {
        be->add(be, *a, *a, *x, T * l->cout * hw);
    }
    SWAP(*x, *a);
    return LP_OK;
}

/* AttentionBlock, per frame: x += proj(attention(to_qkv(rms(x)))), in place. */
static lp_status attn_block(stack_run *r, const vae_layer *l, const layer_state *s, float *x, float *a, float *b,
                            int T) {
    lp_backend *be = r->be;
    int c = l->cin;
    int64_t n = (int64_t)s->h * s->w;
    lp_conv3d_geom g = geom_same(&l->conv1, s->h, s->w);
    for (int t = 0; t < T; t++) {
        float *xf = x + t * c * n;
        be->channel_rms_norm(be, a, xf, 1, c, n, &l->norm1);
        LP_TRY(frame_conv(r, &l->conv1, &g, a, 1, b)); /* q, k, v = channels [0:c], [c:2c], [2c:3c] */
        LP_TRY(be->spatial_attention(be, a, b, b + c * n, b + 2 * c * n, c, n));
        LP_TRY(frame_conv(r, &l->conv2, &g, a, 1, b));
        be->add(be, xf, xf, b, c * n);
    }
    return LP_OK;
}

/* Resample down (spec/VAE.md): per frame ZeroPad2d((0,1,0,1)) + Conv2d stride 2;
 * downsample3d then runs time_conv (kernel 3, stride 2) over [the previous
 * chunk's last frame, this chunk], except on the clip's first chunk, which
 * passes unchanged; either way the chunk's last frame is kept. */
static lp_status down_block(stack_run *r, const vae_layer *l, layer_state *s, float **x, float **a, int *T) {
    lp_conv3d_geom g = geom_down2(s->h, s->w);
    LP_TRY(frame_conv(r, &l->conv1, &g, *x, *T, *a));
    SWAP(*x, *a);
    if (!l->temporal) return LP_OK;
    size_t fs = (size_t)l->cin * g.oh * g.ow;
    if (!r->first) {
        if (*T % 2)
            return lp_fail(LP_ERR_ARG, "wan_vae: a later chunk reaches a temporal downsample with %d frames (even "
                           "needed)", *T);
        const float *fr[1 + MAX_T];
        fr[0] = s->cache1;
        for (int t = 0; t < *T; t++) fr[1 + t] = *x + t * fs;
        lp_conv3d_geom tg = geom_same(&l->conv2, g.oh, g.ow);
        tg.t_stride = 2;
        LP_TRY(conv(r, &l->conv2, &tg, fr, 1 + *T, *a));
        LP_TRY(r->be->copy(r->be, s->cache1, *x + (*T - 1) * fs, fs * sizeof(float)));
        SWAP(*x, *a);
        *T /= 2;
    } else {
        LP_TRY(r->be->copy(r->be, s->cache1, *x + (*T - 1) * fs, fs * sizeof(float)));
    }
    return LP_OK;
}

/* Resample up (spec/VAE.md): upsample3d first runs time_conv (C -> 2C, causal,
 * kernel 3) whose output channels [0:C] / [C:2C] become frames 2t / 2t+1 -
 * except on the clip's first chunk, which bypasses it without touching its
 * history; then per frame nearest x2 and Conv2d 3x3 pad 1 (C -> C/2). */
static lp_status up_block(stack_run *r, const vae_layer *l, layer_state *s, float **x, float **a, float *b, int *T) {
    int c = l->cin, h = s->h, w = s->w;
    if (l->temporal && !r->first) {
        /* [T][2C][h][w] is [2T][C][h][w] with frame 2t+k = channels [kC:(k+1)C] of t */
        LP_TRY(cached_conv(r, &l->conv2, s->cache1, *x, *T, h, w, *a));
        SWAP(*x, *a);
        *T *= 2;
    }
    lp_conv3d_geom g = geom_same(&l->conv1, 2 * h, 2 * w);
    for (int t = 0; t < *T; t++) {
        r->be->upsample2x(r->be, b, *x + (size_t)t * c * h * w, c, h, w);
        LP_TRY(frame_conv(r, &l->conv1, &g, b, 1, *a + (size_t)t * l->cout * 4 * h * w));
    }
    SWAP(*x, *a);
    return LP_OK;
}

/* Runs the stack over T input frames ([T][conv_in.cin][h][w], backend
 * memory); writes the head's *t_out output frames to out. */
static lp_status stack_chunk(stack_run *r, const float *in, int T, float *out, int *t_out) {
    const vae_stack *st = r->st;
    lp_backend *be = r->be;
    float *x = r->buf[0], *a = r->buf[1], *b = r->buf[2];
    int h = r->h, w = r->w;
    LP_TRY(cached_conv(r, &st->conv_in, r->cache_in, in, T, h, w, x));
    for (int i = 0; i < st->nlayers; i++) {
        const vae_layer *l = &st->layers[i];
        layer_state *s = &r->ls[i];
        switch (l->kind) {
        case LAYER_RES: LP_TRY(res_block(r, l, s, &x, &a, b, T)); break;
        case LAYER_ATTN: LP_TRY(attn_block(r, l, s, x, a, b, T)); break;
        case LAYER_DOWN: LP_TRY(down_block(r, l, s, &x, &a, &T)); break;
        case LAYER_UP: LP_TRY(up_block(r, l, s, &x, &a, b, &T)); break;
        }
        h = l->kind == LAYER_DOWN ? (h - 2) / 2 + 1 : l->kind == LAYER_UP ? 2 * h : h;
        w = l->kind == LAYER_DOWN ? (w - 2) / 2 + 1 : l->kind == LAYER_UP ? 2 * w : w;
    }
    int64_t hw = (int64_t)h * w;
    be->channel_rms_norm(be, a, x, T, st->head.cin, hw, &st->head_norm);
    be->silu(be, a, T * st->head.cin * hw);
    LP_TRY(cached_conv(r, &st->head, r->cache_head, a, T, h, w, out));
    r->first = 0;
    *t_out = T;
    return LP_OK;
}

static lp_status check_size(const lp_wan_vae *m, const char *what, int height, int width) {
    int s = lp_wan_vae_scale(m);
    if (height < s || width < s || height % s || width % s || height > 16384 || width > 16384)
        return lp_fail(LP_ERR_ARG, "wan_vae %s: frame size %dx%d must be positive multiples of %d (at most 16384)",
                       what, width, height, s);
    return LP_OK;
}

struct lp_wan_vae_encoder {
    const lp_wan_vae *m;
    stack_run run;
    int lh, lw;       /* latent size */
    float *in;        /* [MAX_T][3][H][W]: the chunk's frames (backend) */
    float *head_out;  /* [2z][lh][lw]: the encoder body's output for one chunk (backend) */
    float *moments;   /* [2z][lh][lw]: conv1 of it = (mu, log_var) (backend) */
    float *host;      /* [2z][lh][lw]: the moments on the host */
};

lp_status lp_wan_vae_encoder_open(const lp_wan_vae *m, int height, int width, lp_backend *be,
                                  lp_wan_vae_encoder **out) {
    *out = NULL;
    LP_TRY(check_size(m, "encoder", height, width));
    lp_wan_vae_encoder *e = calloc(1, sizeof *e);
    if (!e) return lp_fail(LP_ERR_NOMEM, "wan_vae encoder: out of memory");
    e->m = m;
    e->lh = height / lp_wan_vae_scale(m);
    e->lw = width / lp_wan_vae_scale(m);
    size_t lat = (size_t)2 * m->cfg.z_dim * e->lh * e->lw;
    lp_status s = stack_open(&e->run, &m->enc, height, width, 4, be);
    if (s == LP_OK) s = run_floats(&e->run, (size_t)MAX_T * 3 * height * width, 0, &e->in);
    if (s == LP_OK) s = run_floats(&e->run, lat, 0, &e->head_out);
    if (s == LP_OK) s = run_floats(&e->run, lat, 0, &e->moments);
    if (s == LP_OK && !(e->host = malloc(lat * sizeof *e->host)))
        s = lp_fail(LP_ERR_NOMEM, "wan_vae encoder: out of memory");
    if (s != LP_OK) {
        lp_wan_vae_encoder_close(e);
        return s;
    }
    e->run.bytes += lat * sizeof *e->host;
    *out = e;
    return LP_OK;
}

void lp_wan_vae_encoder_close(lp_wan_vae_encoder *e) {
    if (!e) return;
    if (e->run.be) stack_close(&e->run);
    free(e->host);
    free(e);
}

lp_status lp_wan_vae_encoder_reset(lp_wan_vae_encoder *e) { return stack_reset(&e->run); }

size_t lp_wan_vae_encoder_bytes(const lp_wan_vae_encoder *e) { return e->run.bytes + sizeof *e; }

lp_status lp_wan_vae_encode(lp_wan_vae_encoder *e, const float *frames, int nframes, float *latents, int *nlatents) {
    *nlatents = 0;
    int first = e->run.first;
    if (nframes < 0 || (first ? (nframes - 1) % 4 != 0 : nframes % 4 != 0))
        return lp_fail(LP_ERR_ARG, "wan_vae encode: %d frames; the first call of a clip takes 1 + 4k frames, later "
                       "calls 4k", nframes);
    const lp_wan_vae *m = e->m;
    lp_backend *be = e->run.be;
    int z = m->cfg.z_dim;
    size_t fs = (size_t)3 * e->run.h * e->run.w, hw = (size_t)e->lh * e->lw;
    lp_conv3d_geom g = geom_same(&m->quant, e->lh, e->lw);
    for (int pos = 0; pos < nframes;) {
        int T = e->run.first ? 1 : 4, tout;
        LP_TRY(be->upload(be, e->in, frames + pos * fs, (size_t)T * fs * sizeof(float)));
        LP_TRY(stack_chunk(&e->run, e->in, T, e->head_out, &tout));
        LP_TRY(frame_conv(&e->run, &m->quant, &g, e->head_out, 1, e->moments));
        LP_TRY(be->download(be, e->host, e->moments, (size_t)z * hw * sizeof(float)));
        /* normalised mu = (mu - mean) * (1 / std) */
        float *dst = latents + (size_t)*nlatents * z * hw;
        for (int c = 0; c < z; c++)
            for (size_t p = 0; p < hw; p++) dst[c * hw + p] = (e->host[c * hw + p] - k_mean[c]) * m->inv_std[c];
        *nlatents += tout;
        pos += T;
    }
    return LP_OK;
}

struct lp_wan_vae_decoder {
    const lp_wan_vae *m;
    stack_run run;
    int height, width, clamp;
    float *host_z; /* [z][lh][lw]: one latent, un-normalised, on the host */
    float *z;      /* the same in the backend's memory */
    float *zin;    /* [z][lh][lw]: conv2 of it, the decoder body's input (backend) */
    float *out;    /* [MAX_T][3][H][W]: the frames of one latent (backend) */
};

lp_status lp_wan_vae_decoder_open(const lp_wan_vae *m, int height, int width, int clamp, lp_backend *be,
                                  lp_wan_vae_decoder **out) {
    *out = NULL;
    LP_TRY(check_size(m, "decoder", height, width));
    lp_wan_vae_decoder *d = calloc(1, sizeof *d);
    if (!d) return lp_fail(LP_ERR_NOMEM, "wan_vae decoder: out of memory");
    int sc = lp_wan_vae_scale(m);
    *d = (lp_wan_vae_decoder){.m = m, .height = height, .width = width, .clamp = clamp};
    size_t lat = (size_t)m->cfg.z_dim * (height / sc) * (width / sc);
    lp_status s = stack_open(&d->run, &m->dec, height / sc, width / sc, 1, be);
    if (s == LP_OK) s = run_floats(&d->run, lat, 0, &d->z);
    if (s == LP_OK) s = run_floats(&d->run, lat, 0, &d->zin);
    if (s == LP_OK) s = run_floats(&d->run, (size_t)MAX_T * 3 * height * width, 0, &d->out);
    if (s == LP_OK && !(d->host_z = malloc(lat * sizeof *d->host_z)))
        s = lp_fail(LP_ERR_NOMEM, "wan_vae decoder: out of memory");
    if (s != LP_OK) {
        lp_wan_vae_decoder_close(d);
        return s;
    }
    d->run.bytes += lat * sizeof *d->host_z;
    *out = d;
    return LP_OK;
}

void lp_wan_vae_decoder_close(lp_wan_vae_decoder *d) {
    if (!d) return;
    if (d->run.be) stack_close(&d->run);
    free(d->host_z);
    free(d);
}

lp_status lp_wan_vae_decoder_reset(lp_wan_vae_decoder *d) { return stack_reset(&d->run); }

size_t lp_wan_vae_decoder_bytes(const lp_wan_vae_decoder *d) { return d->run.bytes + sizeof *d; }

lp_status lp_wan_vae_decode(lp_wan_vae_decoder *d, const float *latents, int nlatents, float *frames, int *nframes) {
    *nframes = 0;
    if (nlatents < 0) return lp_fail(LP_ERR_ARG, "wan_vae decode: %d latent frames", nlatents);
    const lp_wan_vae *m = d->m;
    lp_backend *be = d->run.be;
    int z = m->cfg.z_dim;
    size_t hw = (size_t)d->run.h * d->run.w, fs = (size_t)3 * d->height * d->width;
    lp_conv3d_geom g = geom_same(&m->post_quant, d->run.h, d->run.w);
    for (int i = 0; i < nlatents; i++) {
        /* z / (1 / std) + mean, then conv2 */
        const float *src = latents + (size_t)i * z * hw;
        for (int c = 0; c < z; c++)
            for (size_t p = 0; p < hw; p++) d->host_z[c * hw + p] = src[c * hw + p] / m->inv_std[c] + k_mean[c];
        LP_TRY(be->upload(be, d->z, d->host_z, (size_t)z * hw * sizeof(float)));
        LP_TRY(frame_conv(&d->run, &m->post_quant, &g, d->z, 1, d->zin));
        int tout;
        float *dst = frames + (size_t)*nframes * fs;
        LP_TRY(stack_chunk(&d->run, d->zin, 1, d->out, &tout));
        LP_TRY(be->download(be, dst, d->out, (size_t)tout * fs * sizeof(float)));
        if (d->clamp)
            for (size_t k = 0; k < (size_t)tout * fs; k++) dst[k] = fminf(fmaxf(dst[k], -1.0f), 1.0f);
        *nframes += tout;
    }
    return LP_OK;
}
