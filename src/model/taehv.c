#include "taehv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/pixels.h"

/* ---- layers (spec/VAE.md, TAEHV) ----
 * The encoder and the decoder are nn.Sequential lists in upstream; a layer's
 * position in the list is its weight-name index (encoder.4.conv.0.weight). */

typedef enum {
    L_CONV,     /* Conv2d 3×3 pad 1 */
    L_RELU,
    L_CLAMP,    /* tanh(x/3)·3 */
    L_MEM,      /* MemBlock: relu(conv(cat[x, past]) + skip(x)) */
    L_TPOOL,    /* TPool: cat `stride` frames along channels, 1×1 conv */
    L_TGROW,    /* TGrow: 1×1 conv to stride·n channels, split into `stride` frames */
    L_UPSAMPLE, /* nearest ×2 */
} layer_kind;

/* One Conv2d: f32 views of model-owned copies (w [cout, cin, k, k], b [cout];
 * b.data NULL for bias=False). */
typedef struct {
    lp_tensor w, b;
    int cin, cout, k, stride;
} conv_w;

typedef struct {
    layer_kind kind;
    int index;  /* position in the upstream nn.Sequential */
    int stride; /* L_CONV: spatial stride; L_TPOOL / L_TGROW: time stride */
    int cin, cout;
    /* L_CONV: conv[0] weight [cout, cin, 3, 3] (+ bias [cout] where upstream has one).
     * L_MEM:  conv[0..2] = conv.0 [cout, 2·cin, 3, 3], conv.2 and conv.4 [cout, cout, 3, 3]
     *         (all with bias [cout]); conv[3] = skip [cout, cin, 1, 1], w.data NULL when cin == cout.
     * L_TPOOL: conv[0] = conv [cout, stride·cin, 1, 1] as stored; part[k] [cout, cin, 1, 1]
     *         is its columns [k·cin, (k+1)·cin) (the k-th frame's channels) made contiguous.
     * L_TGROW: conv[0] = conv [stride·cin, cin, 1, 1]; cout = cin. */
    conv_w conv[4];
    conv_w *part; /* L_TPOOL: [stride], model-owned */
} layer;

typedef struct {
    layer *l;
    int n;
    int in_c, out_c;
    int tdown, tup; /* products of the TPool / TGrow strides */
} net;

struct lp_taehv {
    lp_backend *be;
    net enc, dec;
    void **owned; /* weight copies, their names, TPool parts: freed with the model */
    size_t n_owned, cap_owned;
};

/* Upstream layer sequences, one letter per index:
 * C conv 3×3 (bias)   S conv 3×3 stride 2 (no bias)   N conv 3×3 (no bias)
 * R ReLU   K Clamp   M MemBlock   P TPool   G TGrow   U Upsample ×2 */
static const char ENC_LAYOUT[] = "CRPSMMMPSMMMPSMMMC";
static const char DEC_LAYOUT[] = "KCRMMMUGNMMMUGNMMMUGNRC";

void lp_taehv_free(lp_taehv *m) {
    if (!m) return;
    free(m->enc.l);
    free(m->dec.l);
    for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m);
}

/* Makes p (a fresh allocation, or NULL when it failed) owned by m; returns it,
 * or NULL with an error set (p freed) when p is NULL or cannot be recorded. */
static void *own(lp_taehv *m, void *p) {
    if (p && m->n_owned == m->cap_owned) {
        size_t cap = m->cap_owned ? 2 * m->cap_owned : 64;
        void **o = realloc(m->owned, cap * sizeof *o);
        if (!o) {
            free(p);
            p = NULL;
        } else {
            m->owned = o;
            m->cap_owned = cap;
        }
    }
    if (!p) {
        lp_fail(LP_ERR_NOMEM, "taehv: out of memory for the weights");
        return NULL;
    }
    m->owned[m->n_owned++] = p;
    return p;
}

typedef struct {
    lp_taehv *m;
    const lp_tensor_file *f;
    const char *prefix, *net;
    int index;
} loader;

static lp_status tensor_name(const loader *ld, const char *suffix, char *buf, size_t len) {
    int r = snprintf(buf, len, "%s%s.%d.%s", ld->prefix, ld->net, ld->index, suffix);
    if (r < 0 || (size_t)r >= len) return lp_fail(LP_ERR_ARG, "taehv: weight name prefix '%s' is too long", ld->prefix);
    return LP_OK;
}

/* Finds the tensor prefix+net.index.suffix and checks its shape against want
 * (ndim entries, -1 = any). */
static lp_status find(const loader *ld, const char *suffix, int ndim, const int64_t *want, const lp_tensor **out) {
    char name[512];
    LP_TRY(tensor_name(ld, suffix, name, sizeof name));
    const lp_tensor *t;
    LP_TRY(lp_tensor_file_get(ld->f, name, &t));
    int ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = want[d] < 0 || want[d] == t->shape[d];
    if (!ok) {
        char got[128], exp[128];
        size_t p = 0;
        exp[p++] = '[';
        for (int d = 0; d < ndim && p < sizeof exp - 24; d++) {
            if (want[d] < 0) p += (size_t)snprintf(exp + p, sizeof exp - p, "%s*", d ? ", " : "");
            else p += (size_t)snprintf(exp + p, sizeof exp - p, "%s%lld", d ? ", " : "", (long long)want[d]);
        }
        snprintf(exp + p, sizeof exp - p, "]");
        return lp_fail(LP_ERR_SHAPE, "taehv: tensor '%s' in %s has shape %s, expected %s", name,
                       lp_tensor_file_path(ld->f), lp_shape_str(t, got, sizeof got), exp);
    }
    *out = t;
    return LP_OK;
}

/* *v = an f32 view (same name and shape) of a model-owned copy of t. */
static lp_status view_f32(lp_taehv *m, const lp_tensor *t, lp_tensor *v) {
    int64_t n = lp_tensor_numel(t);
    float *data = own(m, malloc((size_t)n * sizeof *data));
    char *name = data ? own(m, strdup(t->name)) : NULL;
    if (!name) return LP_ERR_NOMEM;
    *v = *t;
    v->name = name;
    v->dtype = LP_F32;
    v->data = data;
    v->nbytes = (size_t)n * sizeof *data;
    return lp_tensor_read_f32(t, 0, n, data);
}

/* Loads weight [cout, cin, k, k] (cout or cin -1: taken from the file) and, if
 * bname, bias [cout] into cv. */
static lp_status load_conv(const loader *ld, const char *wname, const char *bname, int cout, int cin, int k,
                           int stride, conv_w *cv) {
    const lp_tensor *w;
    LP_TRY(find(ld, wname, 4, (const int64_t[]){cout, cin, k, k}, &w));
    if (w->shape[0] < 1 || w->shape[1] < 1 || w->shape[0] > 1 << 16 || w->shape[1] > 1 << 16) {
        char name[512];
        LP_TRY(tensor_name(ld, wname, name, sizeof name));
        return lp_fail(LP_ERR_SHAPE, "taehv: tensor '%s' has implausible channel counts", name);
    }
    *cv = (conv_w){.cout = (int)w->shape[0], .cin = (int)w->shape[1], .k = k, .stride = stride};
    LP_TRY(view_f32(ld->m, w, &cv->w));
    if (bname) {
        const lp_tensor *b;
        LP_TRY(find(ld, bname, 1, (const int64_t[]){cv->cout}, &b));
        LP_TRY(view_f32(ld->m, b, &cv->b));
    }
    return LP_OK;
}

/* TPool: splits the loaded conv [cout, stride·c, 1, 1] into L->stride
 * contiguous per-frame parts [cout, c, 1, 1]. */
static lp_status split_tpool(lp_taehv *m, layer *L, int c) {
    const conv_w *cv = &L->conv[0];
    const float *w = cv->w.data;
    float *parts = own(m, malloc((size_t)cv->cout * cv->cin * sizeof *parts));
    if (!parts || !(L->part = own(m, calloc((size_t)L->stride, sizeof *L->part)))) return LP_ERR_NOMEM;
    for (int k = 0; k < L->stride; k++) {
        float *pk = parts + (size_t)k * cv->cout * c;
        for (int o = 0; o < cv->cout; o++)
            memcpy(pk + (size_t)o * c, w + (size_t)o * cv->cin + (size_t)k * c, (size_t)c * sizeof *pk);
        lp_tensor v = {.name = cv->w.name, .dtype = LP_F32, .ndim = 4, .shape = {cv->cout, c, 1, 1}, .data = pk,
                       .nbytes = (size_t)cv->cout * c * sizeof *pk};
        L->part[k] = (conv_w){.w = v, .cin = c, .cout = cv->cout, .k = 1, .stride = 1};
    }
    return LP_OK;
}

/* Loads one layer whose input has c channels; sets L->cout. */
static lp_status load_layer(const loader *ld, char letter, int c, layer *L) {
    L->cin = L->cout = c;
    L->stride = 1;
    switch (letter) {
    case 'C':
    case 'S':
    case 'N':
        L->kind = L_CONV;
        L->stride = letter == 'S' ? 2 : 1;
        LP_TRY(load_conv(ld, "weight", letter == 'C' ? "bias" : NULL, -1, c, 3, L->stride, &L->conv[0]));
        L->cout = L->conv[0].cout;
        return LP_OK;
    case 'R': L->kind = L_RELU; return LP_OK;
    case 'K': L->kind = L_CLAMP; return LP_OK;
    case 'U': L->kind = L_UPSAMPLE; return LP_OK;
    case 'M': {
        L->kind = L_MEM;
        LP_TRY(load_conv(ld, "conv.0.weight", "conv.0.bias", -1, 2 * c, 3, 1, &L->conv[0]));
        int n = L->cout = L->conv[0].cout;
        LP_TRY(load_conv(ld, "conv.2.weight", "conv.2.bias", n, n, 3, 1, &L->conv[1]));
        LP_TRY(load_conv(ld, "conv.4.weight", "conv.4.bias", n, n, 3, 1, &L->conv[2]));
        if (n != c) LP_TRY(load_conv(ld, "skip.weight", NULL, n, c, 1, 1, &L->conv[3]));
        return LP_OK;
    }
    case 'P': {
        L->kind = L_TPOOL;
        LP_TRY(load_conv(ld, "conv.weight", NULL, -1, -1, 1, 1, &L->conv[0]));
        if (L->conv[0].cin % c != 0) {
            char name[512];
            LP_TRY(tensor_name(ld, "conv.weight", name, sizeof name));
            return lp_fail(LP_ERR_SHAPE, "taehv: TPool tensor '%s' has %d input channels, not a multiple of %d", name,
                           L->conv[0].cin, c);
        }
        L->stride = L->conv[0].cin / c;
        L->cout = L->conv[0].cout;
        return split_tpool(ld->m, L, c);
    }
    case 'G': {
        L->kind = L_TGROW;
        LP_TRY(load_conv(ld, "conv.weight", NULL, -1, c, 1, 1, &L->conv[0]));
        if (L->conv[0].cout % c != 0) {
            char name[512];
            LP_TRY(tensor_name(ld, "conv.weight", name, sizeof name));
            return lp_fail(LP_ERR_SHAPE, "taehv: TGrow tensor '%s' has %d output channels, not a multiple of %d",
                           name, L->conv[0].cout, c);
        }
        L->stride = L->conv[0].cout / c;
        return LP_OK;
    }
    default: return lp_fail(LP_ERR_ARG, "taehv: bad layout letter '%c'", letter);
    }
}

/* Loads a whole sequence; in_c < 0 takes the input channels from the first conv. */
static lp_status load_net(lp_taehv *m, const lp_tensor_file *f, const char *prefix, const char *name,
                          const char *layout, int in_c, net *n) {
    n->n = (int)strlen(layout);
    n->l = calloc((size_t)n->n, sizeof *n->l);
    if (!n->l) return lp_fail(LP_ERR_NOMEM, "taehv: out of memory");
    n->tdown = n->tup = 1;
    int c = in_c;
    if (c < 0) {
        /* the decoder's first conv follows the Clamp: its weight names the latent channels */
        const lp_tensor *w;
        loader ld = {m, f, prefix, name, 1};
        LP_TRY(find(&ld, "weight", 4, (const int64_t[]){-1, -1, 3, 3}, &w));
        if (w->shape[1] < 1 || w->shape[1] > 1 << 16)
            return lp_fail(LP_ERR_SHAPE, "taehv: tensor '%s' has implausible input channels", w->name);
        c = (int)w->shape[1];
    }
    n->in_c = c;
    for (int i = 0; i < n->n; i++) {
        loader ld = {m, f, prefix, name, i};
        layer *L = &n->l[i];
        L->index = i;
        LP_TRY(load_layer(&ld, layout[i], c, L));
        if (L->kind == L_TPOOL) n->tdown *= L->stride;
        if (L->kind == L_TGROW) n->tup *= L->stride;
        if (n->tdown > 64 || n->tup > 64)
            return lp_fail(LP_ERR_SHAPE, "taehv: %s.%d: implausible time stride %d", name, i, L->stride);
        c = L->cout;
    }
    n->out_c = c;
    return LP_OK;
}

lp_status lp_taehv_load(const lp_tensor_file *f, const char *prefix, lp_backend *be, lp_taehv **out) {
    *out = NULL;
    if (!prefix) prefix = "";
    if (!be || !be->conv2d || !be->relu || !be->tanh_clamp || !be->clamp01 || !be->rgb24_to_planar ||
        !be->planar_to_rgb24)
        return lp_fail(LP_ERR_UNSUPPORTED, "taehv: the %s backend has no conv-net ops", be ? be->name : "(NULL)");
    lp_taehv *m = calloc(1, sizeof *m);
    if (!m) return lp_fail(LP_ERR_NOMEM, "taehv: out of memory");
    m->be = be;
    lp_status s = load_net(m, f, prefix, "encoder", ENC_LAYOUT, 3, &m->enc);
    if (s == LP_OK) s = load_net(m, f, prefix, "decoder", DEC_LAYOUT, -1, &m->dec);
    if (s == LP_OK && m->dec.in_c != m->enc.out_c)
        s = lp_fail(LP_ERR_SHAPE, "taehv: %s: the encoder emits %d latent channels but the decoder takes %d",
                    lp_tensor_file_path(f), m->enc.out_c, m->dec.in_c);
    if (s == LP_OK && m->dec.out_c != 3)
        s = lp_fail(LP_ERR_UNSUPPORTED, "taehv: %s: the decoder emits %d channels; only patch size 1 (3) is supported",
                    lp_tensor_file_path(f), m->dec.out_c);
    if (s != LP_OK) {
        lp_taehv_free(m);
        return s;
    }
    *out = m;
    return LP_OK;
}

int lp_taehv_latent_channels(const lp_taehv *m) { return m->enc.out_c; }
int lp_taehv_time_downscale(const lp_taehv *m) { return m->enc.tdown; }
int lp_taehv_time_upscale(const lp_taehv *m) { return m->dec.tup; }

/* ---- streaming engine ----
 * A frame enters layer 0 and runs down the list; a TPool that has not yet seen
 * `stride` frames stops it, a TGrow runs the rest of the list once per output
 * frame, in time order, so each MemBlock sees its frames in time order.
 * Buffers, all in the backend's memory: two ping-pong slots for layer outputs
 * (a layer writes the slot its input is not in), two temporaries inside
 * MemBlocks, per-layer state (MemBlock: previous input; TPool: running sum;
 * TGrow: output frames), a block of input frames and the frames it emits
 * (a push goes through in blocks of tdown inputs, which emit at most tup
 * frames: one upload and one download per block). An Upsample is not
 * materialised: it marks the frame as pending ×2, which TGrow's 1×1 conv
 * preserves and the next 3×3 conv reads through. */

/* Zeros that reset copies over the MemBlock memories, at most this many floats at a time. */
#define ZERO_FLOATS ((size_t)1 << 20)

typedef struct {
    int c, h, w, up; /* stored shape; up = pending nearest upsample factor */
} fshape;

typedef struct {
    const net *net;
    const lp_backend *be;
    fshape *in;        /* [n + 1]: input shape of each layer; in[n] is the output */
    signed char *dst;  /* [n]: output slot of each layer, -1 = its state buffer */
    float *slot[2], *tmp[2];
    float **state;     /* [n] */
    size_t *state_n;   /* [n] floats */
    float *zeros;      /* zero_n zeros */
    size_t zero_n;
    float *io_in;      /* block_in input frames */
    float *io_out;     /* up to block_out output frames, io_n of them filled */
    uint8_t *io_in_rgb, *io_out_rgb; /* the same frames as packed bytes, made on first use */
    int block_in, block_out, io_n;
    int *count;        /* [n] TPool: frames summed so far */
    int64_t n_in, n_emitted;
    int trim, clamp;   /* frames to drop at the start; clamp the output to [0, 1] */
    int out_cap, out_n; /* the current push's room for output frames and frames written */
    double flops;
} stream;

static void release(const lp_backend *be, float *p) {
    if (p) be->release(be, p);
}

static void stream_free(stream *st) {
    const lp_backend *be = st->be;
    if (st->state)
        for (int i = 0; i < st->net->n; i++) release(be, st->state[i]);
    for (int j = 0; j < 2; j++) {
        release(be, st->slot[j]);
        release(be, st->tmp[j]);
    }
    release(be, st->zeros);
    release(be, st->io_in);
    release(be, st->io_out);
    if (st->io_in_rgb) be->release(be, st->io_in_rgb);
    if (st->io_out_rgb) be->release(be, st->io_out_rgb);
    free(st->state);
    free(st->state_n);
    free(st->count);
    free(st->in);
    free(st->dst);
}

static size_t numel(const fshape *s) { return (size_t)s->c * s->h * s->w; }
static void grow(size_t *have, size_t want) { if (want > *have) *have = want; }

/* Output size of cv on a stored [h, w] input seen through a ×up upsample. */
static void out_size(const conv_w *cv, int h, int w, int up, int *ho, int *wo) {
    int pad = cv->k / 2;
    *ho = (h * up + 2 * pad - cv->k) / cv->stride + 1;
    *wo = (w * up + 2 * pad - cv->k) / cv->stride + 1;
}

/* *p = a backend buffer of n floats (zero-filled); the backend reports failures. */
static lp_status balloc(const lp_backend *be, size_t n, float **p) {
    *p = be->alloc(be, n * sizeof **p);
    return *p ? LP_OK : LP_ERR_NOMEM;
}

/* Walks the layers once with shapes only, assigning slots and sizing buffers. */
static lp_status stream_init(stream *st, const lp_taehv *m, const net *n, int c, int h, int w) {
    memset(st, 0, sizeof *st);
    st->net = n;
    st->be = m->be;
    if (h < 1 || w < 1 || h > 1 << 15 || w > 1 << 15)
        return lp_fail(LP_ERR_ARG, "taehv: unsupported frame size %dx%d", w, h);
    st->in = calloc((size_t)n->n + 1, sizeof *st->in);
    st->dst = calloc((size_t)n->n, sizeof *st->dst);
    st->state = calloc((size_t)n->n, sizeof *st->state);
    st->state_n = calloc((size_t)n->n, sizeof *st->state_n);
    st->count = calloc((size_t)n->n, sizeof *st->count);
    if (!st->in || !st->dst || !st->state || !st->state_n || !st->count)
        return lp_fail(LP_ERR_NOMEM, "taehv: out of memory");
    size_t slot_n[2] = {0, 0}, tmp_n = 0, mem_n = 0;
    fshape s = {c, h, w, 1};
    int cur = -1; /* slot holding the current frame, -1 = elsewhere */
    for (int i = 0; i < n->n; i++) {
        const layer *L = &n->l[i];
        st->in[i] = s;
        int other = cur == 0 ? 1 : 0;
        if (L->kind == L_MEM || L->kind == L_TPOOL) {
            if (s.up != 1)
                return lp_fail(LP_ERR_UNSUPPORTED, "taehv: layer %d needs an upsampled input materialised", L->index);
        }
        switch (L->kind) {
        case L_CONV:
            out_size(&L->conv[0], s.h, s.w, s.up, &s.h, &s.w);
            s.c = L->cout;
            s.up = 1;
            st->dst[i] = (signed char)other;
            break;
        case L_RELU:
        case L_CLAMP: st->dst[i] = (signed char)(cur >= 0 ? cur : 0); break;
        case L_UPSAMPLE:
            st->dst[i] = (signed char)cur;
            if (s.up != 1)
                return lp_fail(LP_ERR_UNSUPPORTED, "taehv: layer %d: two upsamples in a row", L->index);
            s.up = 2;
            break;
        case L_MEM:
            st->state_n[i] = numel(&s);
            grow(&mem_n, st->state_n[i]);
            s.c = L->cout;
            grow(&tmp_n, numel(&s));
            st->dst[i] = (signed char)other;
            break;
        case L_TPOOL:
            s.c = L->cout;
            st->state_n[i] = numel(&s);
            st->dst[i] = -1;
            break;
        case L_TGROW:
            st->state_n[i] = numel(&s) * (size_t)L->stride;
            st->dst[i] = -1;
            break;
        }
        if (st->dst[i] >= 0) grow(&slot_n[st->dst[i]], numel(&s));
        cur = st->dst[i];
    }
    if (s.up != 1) return lp_fail(LP_ERR_UNSUPPORTED, "taehv: the last layer leaves an upsample pending");
    st->in[n->n] = s;
    st->block_in = n->tdown;
    st->block_out = n->tup;
    st->zero_n = mem_n < ZERO_FLOATS ? mem_n : ZERO_FLOATS;
    const lp_backend *be = st->be;
    for (int j = 0; j < 2; j++) {
        if (slot_n[j]) LP_TRY(balloc(be, slot_n[j], &st->slot[j]));
        if (tmp_n) LP_TRY(balloc(be, tmp_n, &st->tmp[j]));
    }
    for (int i = 0; i < n->n; i++)
        if (st->state_n[i]) LP_TRY(balloc(be, st->state_n[i], &st->state[i]));
    if (st->zero_n) LP_TRY(balloc(be, st->zero_n, &st->zeros));
    LP_TRY(balloc(be, (size_t)st->block_in * numel(&st->in[0]), &st->io_in));
    return balloc(be, (size_t)st->block_out * numel(&s), &st->io_out);
}

/* Zeros the MemBlock memories (the TPool sums and TGrow frames are written
 * before they are read) and restarts the counts. */
static lp_status stream_reset(stream *st) {
    const lp_backend *be = st->be;
    lp_status s = LP_OK;
    for (int i = 0; i < st->net->n; i++) {
        st->count[i] = 0;
        if (st->net->l[i].kind != L_MEM) continue;
        for (size_t off = 0; off < st->state_n[i] && s == LP_OK; off += st->zero_n) {
            size_t k = st->state_n[i] - off < st->zero_n ? st->state_n[i] - off : st->zero_n;
            s = be->copy(be, st->state[i] + off, st->zeros, k * sizeof(float));
        }
    }
    st->n_in = st->n_emitted = 0;
    return s;
}

/* FLOPs of cv on in as a direct convolution (2 per multiply-add). */
static double conv_flops(const conv_w *cv, const lp_conv2d_input *in) {
    int ho, wo;
    out_size(cv, in->h, in->w, in->up, &ho, &wo);
    return 2.0 * cv->cout * (double)cv->cin * cv->k * cv->k * (double)ho * wo;
}

/* flags: LP_CONV_ACCUMULATE and/or LP_CONV_RELU (a ReLU after the conv runs
 * in the conv's epilogue). */
static lp_status conv(stream *st, const conv_w *cv, const lp_conv2d_input *in, float *out, unsigned flags) {
    st->flops += conv_flops(cv, in);
    return st->be->conv2d(st->be, out, in, &cv->w, cv->b.data ? &cv->b : NULL, cv->stride, flags);
}

/* MemBlock (spec: relu(convs(cat[x, past]) + skip(x)), convs = conv→ReLU→conv→ReLU→conv);
 * then past = x. The ReLUs and the skip's sum run in the convolutions'
 * epilogues; an identity skip is x copied to out for the last conv to add to. */
static lp_status memblock(stream *st, int i, const float *x, float *out) {
    const lp_backend *be = st->be;
    const layer *L = &st->net->l[i];
    const fshape *s = &st->in[i];
    int64_t nout = (int64_t)L->cout * s->h * s->w;
    float *past = st->state[i], *t0 = st->tmp[0], *t1 = st->tmp[1];
    const unsigned add_relu = LP_CONV_ACCUMULATE | LP_CONV_RELU;
    LP_TRY(conv(st, &L->conv[0], &(lp_conv2d_input){x, s->c, past, s->c, s->h, s->w, 1}, t0, LP_CONV_RELU));
    LP_TRY(conv(st, &L->conv[1], &(lp_conv2d_input){t0, L->cout, NULL, 0, s->h, s->w, 1}, t1, LP_CONV_RELU));
    const lp_conv2d_input last = {t1, L->cout, NULL, 0, s->h, s->w, 1};
    if (L->conv[3].w.data) {
        LP_TRY(conv(st, &L->conv[2], &last, out, 0));
        LP_TRY(conv(st, &L->conv[3], &(lp_conv2d_input){x, s->c, NULL, 0, s->h, s->w, 1}, out, add_relu));
    } else {
        LP_TRY(be->copy(be, out, x, (size_t)nout * sizeof *out));
        LP_TRY(conv(st, &L->conv[2], &last, out, add_relu));
    }
    return be->copy(be, past, x, st->state_n[i] * sizeof *past);
}

/* Puts output frame x into the block's output frames (unless trimmed). */
static lp_status emit(stream *st, const float *x) {
    if (++st->n_emitted <= st->trim) return LP_OK;
    if (st->out_n + st->io_n >= st->out_cap || st->io_n >= st->block_out)
        return lp_fail(LP_ERR_ARG, "taehv: output buffer too small");
    const lp_backend *be = st->be;
    size_t n = numel(&st->in[st->net->n]);
    float *d = st->io_out + (size_t)st->io_n++ * n;
    if (st->clamp) be->clamp01(be, d, x, (int64_t)n);
    else LP_TRY(be->copy(be, d, x, n * sizeof *d));
    return LP_OK;
}

/* Runs frame x (shape in[i], backend memory) through layers i.. and emits what comes out. */
static lp_status run(stream *st, int i, const float *x) {
    const net *n = st->net;
    const lp_backend *be = st->be;
    for (; i < n->n; i++) {
        const layer *L = &n->l[i];
        const fshape *s = &st->in[i];
        float *dst = st->dst[i] >= 0 ? st->slot[st->dst[i]] : st->state[i];
        lp_conv2d_input in = {x, s->c, NULL, 0, s->h, s->w, s->up};
        switch (L->kind) {
        case L_CONV:
            /* a ReLU next, in place on the conv's output (stream_init), runs in its epilogue */
            if (i + 1 < n->n && n->l[i + 1].kind == L_RELU && st->dst[i + 1] == st->dst[i]) {
                LP_TRY(conv(st, &L->conv[0], &in, dst, LP_CONV_RELU));
                i++;
            } else LP_TRY(conv(st, &L->conv[0], &in, dst, 0));
            break;
        case L_RELU:
            if (dst != x) LP_TRY(be->copy(be, dst, x, numel(s) * sizeof *dst));
            be->relu(be, dst, (int64_t)numel(s));
            break;
        case L_CLAMP: be->tanh_clamp(be, dst, x, (int64_t)numel(s)); break;
        case L_UPSAMPLE: continue; /* only marks the frame: in[i + 1].up == 2 */
        case L_MEM: LP_TRY(memblock(st, i, x, dst)); break;
        case L_TPOOL:
            /* the k-th frame of the group meets weight columns [k·C, (k+1)·C) */
            LP_TRY(conv(st, &L->part[st->count[i]], &in, dst, st->count[i] > 0 ? LP_CONV_ACCUMULATE : 0));
            if (++st->count[i] < L->stride) return LP_OK;
            st->count[i] = 0;
            break;
        case L_TGROW: {
            /* a 1×1 conv commutes with the pending nearest upsample: run it at the stored size */
            in.up = 1;
            LP_TRY(conv(st, &L->conv[0], &in, dst, 0));
            size_t fr = numel(&st->in[i + 1]);
            for (int k = 0; k < L->stride; k++) LP_TRY(run(st, i + 1, dst + (size_t)k * fr));
            return LP_OK;
        }
        }
        x = dst;
    }
    return emit(st, x);
}

/* Frames emitted by the stream for n more inputs, given its total time ratio. */
static int64_t emitted_after(const stream *st, int64_t n_in) {
    int64_t e = n_in * st->net->tup / st->net->tdown - st->trim;
    return e > 0 ? e : 0;
}

static int stream_count(const stream *st, int n) {
    return (int)(emitted_after(st, st->n_in + n) - emitted_after(st, st->n_in));
}

/* A stream end's frames on the host: planar floats, or packed 8-bit RGB
 * converted on the backend (src/base/pixels.h) through a byte buffer. */
typedef struct {
    const void *in;
    void *out;
    int in_rgb24, out_rgb24;
} host_frames;

/* *buf = a backend byte buffer for `frames` packed RGB frames of shape s
 * (3 channels), made on first use. */
static lp_status rgb_buffer(const stream *st, const fshape *s, int frames, uint8_t **buf) {
    if (s->c != 3) return lp_fail(LP_ERR_ARG, "taehv: %d-channel frames cannot be packed RGB", s->c);
    if (!*buf && !(*buf = st->be->alloc(st->be, (size_t)frames * numel(s)))) return LP_ERR_NOMEM;
    return LP_OK;
}

static lp_status upload_block(stream *st, const host_frames *io, int t, int blk) {
    const lp_backend *be = st->be;
    const fshape *s = &st->in[0];
    size_t fr = numel(s);
    if (!io->in_rgb24)
        return be->upload(be, st->io_in, (const float *)io->in + (size_t)t * fr, (size_t)blk * fr * sizeof(float));
    LP_TRY(rgb_buffer(st, s, st->block_in, &st->io_in_rgb));
    LP_TRY(be->upload(be, st->io_in_rgb, (const uint8_t *)io->in + (size_t)t * fr, (size_t)blk * fr));
    be->rgb24_to_planar(be, st->io_in, st->io_in_rgb, blk, (int64_t)s->h * s->w);
    return LP_OK;
}

static lp_status download_block(stream *st, const host_frames *io) {
    const lp_backend *be = st->be;
    const fshape *s = &st->in[st->net->n];
    size_t ofr = numel(s), at = (size_t)st->out_n * ofr;
    if (!io->out_rgb24)
        return be->download(be, (float *)io->out + at, st->io_out, (size_t)st->io_n * ofr * sizeof(float));
    LP_TRY(rgb_buffer(st, s, st->block_out, &st->io_out_rgb));
    be->planar_to_rgb24(be, st->io_out_rgb, st->io_out, st->io_n, (int64_t)s->h * s->w);
    return be->download(be, (uint8_t *)io->out + at, st->io_out_rgb, (size_t)st->io_n * ofr);
}

static lp_status stream_push(stream *st, const host_frames *io, int n, int max_out, int *n_out) {
    *n_out = 0;
    if (n < 0 || (n > 0 && !io->in) || max_out < 0)
        return lp_fail(LP_ERR_ARG, "taehv: bad push arguments (n=%d, max_out=%d)", n, max_out);
    if (n > (1 << 24)) return lp_fail(LP_ERR_ARG, "taehv: too many frames in one push (%d)", n);
    int want = stream_count(st, n);
    if (want > max_out)
        return lp_fail(LP_ERR_ARG, "taehv: pushing %d frames emits %d, but the output has room for %d", n, want,
                       max_out);
    if (want > 0 && !io->out) return lp_fail(LP_ERR_ARG, "taehv: output buffer is NULL");
    st->out_cap = max_out;
    st->out_n = 0;
    lp_status s = LP_OK;
    for (int t = 0; t < n && s == LP_OK;) {
        int blk = n - t < st->block_in ? n - t : st->block_in;
        s = upload_block(st, io, t, blk);
        st->io_n = 0;
        for (int j = 0; j < blk && s == LP_OK; j++) {
            s = run(st, 0, st->io_in + (size_t)j * numel(&st->in[0]));
            st->n_in++;
        }
        t += blk;
        if (s == LP_OK && st->io_n > 0) s = download_block(st, io);
        if (s == LP_OK) st->out_n += st->io_n;
    }
    *n_out = st->out_n;
    return s;
}

/* ---- encoder ---- */

struct lp_taehv_encoder {
    stream s;
    float *last; /* host: the last frame pushed, for flush padding */
};

lp_status lp_taehv_encoder_create(const lp_taehv *m, int height, int width, lp_taehv_encoder **out) {
    *out = NULL;
    lp_taehv_encoder *e = calloc(1, sizeof *e);
    if (!e) return lp_fail(LP_ERR_NOMEM, "taehv: out of memory");
    lp_status s = stream_init(&e->s, m, &m->enc, m->enc.in_c, height, width);
    if (s == LP_OK && !(e->last = malloc(numel(&e->s.in[0]) * sizeof *e->last)))
        s = lp_fail(LP_ERR_NOMEM, "taehv: out of memory");
    if (s != LP_OK) {
        lp_taehv_encoder_free(e);
        return s;
    }
    e->s.clamp = 0;
    *out = e;
    return LP_OK;
}

void lp_taehv_encoder_free(lp_taehv_encoder *e) {
    if (!e) return;
    stream_free(&e->s);
    free(e->last);
    free(e);
}

void lp_taehv_encoder_latent_shape(const lp_taehv_encoder *e, int *c, int *h, int *w) {
    const fshape *s = &e->s.in[e->s.net->n];
    *c = s->c;
    *h = s->h;
    *w = s->w;
}

int lp_taehv_encoder_count(const lp_taehv_encoder *e, int n) { return stream_count(&e->s, n); }

lp_status lp_taehv_encoder_push(lp_taehv_encoder *e, const float *frames, int n, float *latents, int max_latents,
                                int *n_latents) {
    LP_TRY(stream_push(&e->s, &(host_frames){.in = frames, .out = latents}, n, max_latents, n_latents));
    if (n > 0) memcpy(e->last, frames + (size_t)(n - 1) * numel(&e->s.in[0]), numel(&e->s.in[0]) * sizeof *e->last);
    return LP_OK;
}

lp_status lp_taehv_encoder_push_rgb24(lp_taehv_encoder *e, const uint8_t *frames, int n, float *latents,
                                      int max_latents, int *n_latents) {
    LP_TRY(stream_push(&e->s, &(host_frames){.in = frames, .in_rgb24 = 1, .out = latents}, n, max_latents,
                       n_latents));
    if (n > 0) { /* the flush pads with the last frame, kept as the floats the backend made of it */
        const fshape *s = &e->s.in[0];
        size_t px = (size_t)s->h * s->w;
        const uint8_t *last = frames + (size_t)(n - 1) * 3 * px;
        for (size_t p = 0; p < px; p++)
            for (size_t c = 0; c < 3; c++) e->last[c * px + p] = lp_byte_to_unit(last[3 * p + c]);
    }
    return LP_OK;
}

lp_status lp_taehv_encoder_flush(lp_taehv_encoder *e, float *latents, int max_latents, int *n_latents) {
    *n_latents = 0;
    int td = e->s.net->tdown;
    int pad = e->s.n_in > 0 ? (int)((td - e->s.n_in % td) % td) : 0;
    if (stream_count(&e->s, pad) > max_latents)
        return lp_fail(LP_ERR_ARG, "taehv: flush emits a latent frame, but the output has room for %d", max_latents);
    for (int k = 0; k < pad; k++) {
        int got;
        float *dst = latents + (size_t)*n_latents * numel(&e->s.in[e->s.net->n]);
        LP_TRY(stream_push(&e->s, &(host_frames){.in = e->last, .out = dst}, 1, max_latents - *n_latents, &got));
        *n_latents += got;
    }
    return LP_OK;
}

lp_status lp_taehv_encoder_reset(lp_taehv_encoder *e) { return stream_reset(&e->s); }
double lp_taehv_encoder_flops(const lp_taehv_encoder *e) { return e->s.flops; }

/* ---- decoder ---- */

struct lp_taehv_decoder {
    stream s;
};

lp_taehv_decoder_opts lp_taehv_decoder_defaults(void) { return (lp_taehv_decoder_opts){.trim = 0, .clamp = 1}; }

lp_status lp_taehv_decoder_create(const lp_taehv *m, int lat_h, int lat_w, const lp_taehv_decoder_opts *opts,
                                  lp_taehv_decoder **out) {
    *out = NULL;
    lp_taehv_decoder_opts o = opts ? *opts : lp_taehv_decoder_defaults();
    lp_taehv_decoder *d = calloc(1, sizeof *d);
    if (!d) return lp_fail(LP_ERR_NOMEM, "taehv: out of memory");
    lp_status s = stream_init(&d->s, m, &m->dec, m->dec.in_c, lat_h, lat_w);
    if (s != LP_OK) {
        lp_taehv_decoder_free(d);
        return s;
    }
    d->s.trim = o.trim ? m->dec.tup - 1 : 0;
    d->s.clamp = o.clamp != 0;
    *out = d;
    return LP_OK;
}

void lp_taehv_decoder_free(lp_taehv_decoder *d) {
    if (!d) return;
    stream_free(&d->s);
    free(d);
}

void lp_taehv_decoder_frame_shape(const lp_taehv_decoder *d, int *c, int *h, int *w) {
    const fshape *s = &d->s.in[d->s.net->n];
    *c = s->c;
    *h = s->h;
    *w = s->w;
}

int lp_taehv_decoder_count(const lp_taehv_decoder *d, int n) { return stream_count(&d->s, n); }

lp_status lp_taehv_decoder_push(lp_taehv_decoder *d, const float *latents, int n, float *frames, int max_frames,
                                int *n_frames) {
    return stream_push(&d->s, &(host_frames){.in = latents, .out = frames}, n, max_frames, n_frames);
}

lp_status lp_taehv_decoder_push_rgb24(lp_taehv_decoder *d, const float *latents, int n, uint8_t *frames,
                                      int max_frames, int *n_frames) {
    return stream_push(&d->s, &(host_frames){.in = latents, .out = frames, .out_rgb24 = 1}, n, max_frames, n_frames);
}

lp_status lp_taehv_decoder_reset(lp_taehv_decoder *d) { return stream_reset(&d->s); }
double lp_taehv_decoder_flops(const lp_taehv_decoder *d) { return d->s.flops; }
