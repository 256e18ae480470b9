/* Layout detection and the diffusers name maps (see weights.h).
 *
 * The maps were written from Hugging Face diffusers' WanTransformer3DModel
 * (transformer_wan.py), AutoencoderKLWan (autoencoder_kl_wan.py) and the
 * renames of scripts/convert_wan_to_diffusers.py. None of the tensors they
 * rename changes shape or element order (the fused to_qkv / to_kv projections
 * exist only in memory after fuse_projections(), never in saved files), so the
 * mapped tensors are views. */
#include "weights.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tensor_builder.h"
#include "tensor_file_impl.h"

#define N_OF(table) (sizeof table / sizeof *table)

static const char *const prefixes[] = {"",
                                       "w.",
                                       "model.",
                                       "model.diffusion_model.",
                                       "diffusion_model.",
                                       "generator_ema.model.",
                                       "generator_ema.",
                                       "generator.model.",
                                       "generator.",
                                       "vae."};
typedef struct {
    const char *name;      /* in messages */
    const char *probe;     /* an upstream name every file of the component holds */
    const char *diffusers; /* a diffusers name every diffusers file holds, or NULL: no diffusers layout */
} component_info;

static const component_info components[] = {
    [LP_COMPONENT_DIT] = {"Wan DiT", "time_embedding.0.weight", "condition_embedder.time_embedder.linear_1.weight"},
    [LP_COMPONENT_WAN_VAE] = {"Wan VAE", "encoder.conv1.weight", "encoder.conv_in.weight"},
    [LP_COMPONENT_TAEHV] = {"TAEHV", "encoder.0.weight", NULL},
    [LP_COMPONENT_UMT5] = {"umT5", "token_embedding.weight", NULL},
};

typedef struct {
    const char *diffusers, *upstream;
} name_pair;


/* The upstream name paired with key in table, or NULL. */
static const char *lookup(const name_pair *table, size_t n, const char *key) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(table[i].diffusers, key)) return table[i].upstream;
    return NULL;
}

/* If *s starts with "<decimal>.", advances past it and returns the number;
 * else -1. */
static int take_index(const char **s) {
    const char *p = *s;
    int v = 0, digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 6; p++, digits++) v = 10 * v + (*p - '0');
    if (!digits || *p != '.') return -1;
    *s = p + 1;
    return v;
}

/* Writes the mapped name into out; returns 1 (mapped). */
__attribute__((format(printf, 3, 4))) static int mapped(char *out, size_t len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, len, fmt, ap);
    va_end(ap);
    return 1;
}

/* s after prefix, or NULL if s does not start with it. */
static const char *after(const char *s, const char *prefix) {
    size_t n = strlen(prefix);
    return strncmp(s, prefix, n) ? NULL : s + n;
}

/* ------------------------------------------------------------------- DiT */

/* WanTransformer3DModel outside the blocks. dim = model width, in = latent
 * channels, out·4 = out channels × patch 1·2·2. */
static const name_pair dit_top[] = {
    {"patch_embedding.weight", "patch_embedding.weight"},                           /* [dim, in, 1, 2, 2] */
    {"patch_embedding.bias", "patch_embedding.bias"},                               /* [dim] */
    {"condition_embedder.time_embedder.linear_1.weight", "time_embedding.0.weight"}, /* [dim, freq_dim] */
    {"condition_embedder.time_embedder.linear_1.bias", "time_embedding.0.bias"},     /* [dim] */
    {"condition_embedder.time_embedder.linear_2.weight", "time_embedding.2.weight"}, /* [dim, dim] */
    {"condition_embedder.time_embedder.linear_2.bias", "time_embedding.2.bias"},     /* [dim] */
    {"condition_embedder.time_proj.weight", "time_projection.1.weight"},             /* [6·dim, dim] */
    {"condition_embedder.time_proj.bias", "time_projection.1.bias"},                 /* [6·dim] */
    {"condition_embedder.text_embedder.linear_1.weight", "text_embedding.0.weight"}, /* [dim, text_dim] */
    {"condition_embedder.text_embedder.linear_1.bias", "text_embedding.0.bias"},     /* [dim] */
    {"condition_embedder.text_embedder.linear_2.weight", "text_embedding.2.weight"}, /* [dim, dim] */
    {"condition_embedder.text_embedder.linear_2.bias", "text_embedding.2.bias"},     /* [dim] */
    {"proj_out.weight", "head.head.weight"},                                         /* [out·4, dim] */
    {"proj_out.bias", "head.head.bias"},                                             /* [out·4] */
    {"scale_shift_table", "head.modulation"},                                        /* [1, 2, dim] */
};

/* One WanTransformerBlock, under "blocks.<i>.". diffusers numbers the block's
 * norms in the order they run: its norm2 (affine, before the cross-attention)
 * is upstream's norm3; the affine-free norms hold no tensors. */
static const name_pair dit_block[] = {
    {"scale_shift_table", "modulation"},                     /* [1, 6, dim] */
    {"attn1.to_q.weight", "self_attn.q.weight"},             /* [dim, dim] */
    {"attn1.to_q.bias", "self_attn.q.bias"},                 /* [dim] */
    {"attn1.to_k.weight", "self_attn.k.weight"},             /* [dim, dim] */
    {"attn1.to_k.bias", "self_attn.k.bias"},                 /* [dim] */
    {"attn1.to_v.weight", "self_attn.v.weight"},             /* [dim, dim] */
    {"attn1.to_v.bias", "self_attn.v.bias"},                 /* [dim] */
    {"attn1.to_out.0.weight", "self_attn.o.weight"},         /* [dim, dim] */
    {"attn1.to_out.0.bias", "self_attn.o.bias"},             /* [dim] */
    {"attn1.norm_q.weight", "self_attn.norm_q.weight"},      /* [dim] (RMS norm across heads) */
    {"attn1.norm_k.weight", "self_attn.norm_k.weight"},      /* [dim] */
    {"attn2.to_q.weight", "cross_attn.q.weight"},            /* [dim, dim] */
    {"attn2.to_q.bias", "cross_attn.q.bias"},                /* [dim] */
    {"attn2.to_k.weight", "cross_attn.k.weight"},            /* [dim, dim] */
    {"attn2.to_k.bias", "cross_attn.k.bias"},                /* [dim] */
    {"attn2.to_v.weight", "cross_attn.v.weight"},            /* [dim, dim] */
    {"attn2.to_v.bias", "cross_attn.v.bias"},                /* [dim] */
    {"attn2.to_out.0.weight", "cross_attn.o.weight"},        /* [dim, dim] */
    {"attn2.to_out.0.bias", "cross_attn.o.bias"},            /* [dim] */
    {"attn2.norm_q.weight", "cross_attn.norm_q.weight"},     /* [dim] */
    {"attn2.norm_k.weight", "cross_attn.norm_k.weight"},     /* [dim] */
    {"norm2.weight", "norm3.weight"},                        /* [dim] */
    {"norm2.bias", "norm3.bias"},                            /* [dim] */
    {"ffn.net.0.proj.weight", "ffn.0.weight"},               /* [ffn_dim, dim] */
    {"ffn.net.0.proj.bias", "ffn.0.bias"},                   /* [ffn_dim] */
    {"ffn.net.2.weight", "ffn.2.weight"},                    /* [dim, ffn_dim] */
    {"ffn.net.2.bias", "ffn.2.bias"},                        /* [dim] */
};

/* The upstream name of the DiT tensor d into out; *block gets the block
 * index (-1 outside the blocks). Returns 0 if d is not in the map. */
static int dit_upstream(const char *d, char *out, size_t len, int *block) {
    const char *r = after(d, "blocks."), *u;
    *block = r ? take_index(&r) : -1;
    if (*block >= 0)
        return (u = lookup(dit_block, N_OF(dit_block), r)) ? mapped(out, len, "blocks.%d.%s", *block, u) : 0;
    return (u = lookup(dit_top, N_OF(dit_top), d)) ? mapped(out, len, "%s", u) : 0;
}

/* Every DiT tensor of blocks 0 .. n_blocks-1 and outside them is present. */
static lp_status dit_complete(const lp_tensor_file *src, const char *prefix, int n_blocks) {
    char d[512];
    for (size_t i = 0; i < N_OF(dit_top); i++) {
        snprintf(d, sizeof d, "%s%s", prefix, dit_top[i].diffusers);
        if (!lp_tensor_file_find(src, d))
            return lp_fail(LP_ERR_MISSING, "%s: diffusers tensor '%s' (upstream '%s') is missing", src->path, d,
                           dit_top[i].upstream);
    }
    for (int b = 0; b < n_blocks; b++)
        for (size_t i = 0; i < N_OF(dit_block); i++) {
            snprintf(d, sizeof d, "%sblocks.%d.%s", prefix, b, dit_block[i].diffusers);
            if (!lp_tensor_file_find(src, d))
                return lp_fail(LP_ERR_MISSING, "%s: diffusers tensor '%s' (upstream 'blocks.%d.%s') is missing",
                               src->path, d, b, dit_block[i].upstream);
        }
    return LP_OK;
}

/* --------------------------------------------------------------- Wan VAE */

/* A residual block (diffusers WanResidualBlock, upstream ResidualBlock). */
static const name_pair vae_res[] = {
    {"norm1.gamma", "residual.0.gamma"},         /* [cin, 1, 1, 1] */
    {"conv1.weight", "residual.2.weight"},       /* [cout, cin, 3, 3, 3] */
    {"conv1.bias", "residual.2.bias"},           /* [cout] */
    {"norm2.gamma", "residual.3.gamma"},         /* [cout, 1, 1, 1] */
    {"conv2.weight", "residual.6.weight"},       /* [cout, cout, 3, 3, 3] */
    {"conv2.bias", "residual.6.bias"},           /* [cout] */
    {"conv_shortcut.weight", "shortcut.weight"}, /* [cout, cin, 1, 1, 1] */
    {"conv_shortcut.bias", "shortcut.bias"},     /* [cout] */
};

/* A resample (same names on both sides). */
static const name_pair vae_resample[] = {
    {"resample.1.weight", "resample.1.weight"}, /* [c', c, 3, 3] */
    {"resample.1.bias", "resample.1.bias"},     /* [c'] */
    {"time_conv.weight", "time_conv.weight"},   /* [c or 2c, c, 3, 1, 1] */
    {"time_conv.bias", "time_conv.bias"},       /* [c or 2c] */
};

/* The middle attention (same names on both sides). */
static const name_pair vae_attn[] = {
    {"norm.gamma", "norm.gamma"},         /* [c, 1, 1] */
    {"to_qkv.weight", "to_qkv.weight"},   /* [3c, c, 1, 1] */
    {"to_qkv.bias", "to_qkv.bias"},       /* [3c] */
    {"proj.weight", "proj.weight"},       /* [c, c, 1, 1] */
    {"proj.bias", "proj.bias"},           /* [c] */
};

/* Names outside the encoder and decoder, and those of either one outside its
 * stages (after "encoder." / "decoder."). */
static const name_pair vae_top[] = {
    {"quant_conv.weight", "conv1.weight"},      /* [2z, 2z, 1, 1, 1] */
    {"quant_conv.bias", "conv1.bias"},          /* [2z] */
    {"post_quant_conv.weight", "conv2.weight"}, /* [z, z, 1, 1, 1] */
    {"post_quant_conv.bias", "conv2.bias"},     /* [z] */
};
static const name_pair vae_side[] = {
    {"conv_in.weight", "conv1.weight"},    /* [c, 3 or z, 3, 3, 3] */
    {"conv_in.bias", "conv1.bias"},        /* [c] */
    {"norm_out.gamma", "head.0.gamma"},    /* [c, 1, 1, 1] */
    {"conv_out.weight", "head.2.weight"},  /* [2z or 3, c, 3, 3, 3] */
    {"conv_out.bias", "head.2.bias"},      /* [2z or 3] */
};

/* diffusers groups the decoder's flat upstream list upsamples.<k> into
 * up_blocks.<b> = {resnets.0 .. resnets.<n-1>, upsamplers.0 (all but the
 * last)}; this is the grouping found in the file. */
#define MAX_UP_BLOCKS 16
typedef struct {
    int nres[MAX_UP_BLOCKS], has_up[MAX_UP_BLOCKS];
} vae_grouping;

static void vae_scan(const lp_tensor_file *src, const char *prefix, vae_grouping *g) {
    memset(g, 0, sizeof *g);
    char head[256];
    snprintf(head, sizeof head, "%sdecoder.up_blocks.", prefix);
    for (size_t i = 0; i < src->count; i++) {
        const char *r = after(src->tensors[i].name, head), *q;
        int b = r ? take_index(&r) : -1, k;
        if (b < 0 || b >= MAX_UP_BLOCKS) continue;
        if ((q = after(r, "resnets.")) && (k = take_index(&q)) >= 0 && k + 1 > g->nres[b]) g->nres[b] = k + 1;
        if (after(r, "upsamplers.0.")) g->has_up[b] = 1;
    }
}

/* The upstream name of the Wan VAE tensor d into out; 0 if not in the map. */
static int vae_upstream(const char *d, const vae_grouping *g, char *out, size_t len) {
    const char *u = lookup(vae_top, N_OF(vae_top), d), *r, *q;
    if (u) return mapped(out, len, "%s", u);
    static const char *const sides[] = {"encoder.", "decoder."};
    for (int s = 0; s < 2; s++) {
        if (!(r = after(d, sides[s]))) continue;
        int k;
        if ((u = lookup(vae_side, N_OF(vae_side), r))) return mapped(out, len, "%s%s", sides[s], u);
        if ((q = after(r, "mid_block.resnets.")) && (k = take_index(&q)) >= 0 && k <= 1 &&
            (u = lookup(vae_res, N_OF(vae_res), q)))
            return mapped(out, len, "%smiddle.%d.%s", sides[s], 2 * k, u);
        if ((q = after(r, "mid_block.attentions.0.")) && (u = lookup(vae_attn, N_OF(vae_attn), q)))
            return mapped(out, len, "%smiddle.1.%s", sides[s], u);
        if (s == 0 && (q = after(r, "down_blocks.")) && (k = take_index(&q)) >= 0 &&
            ((u = lookup(vae_res, N_OF(vae_res), q)) || (u = lookup(vae_resample, N_OF(vae_resample), q))))
            return mapped(out, len, "encoder.downsamples.%d.%s", k, u);
        int b;
        if (s == 1 && (q = after(r, "up_blocks.")) && (b = take_index(&q)) >= 0 && b < MAX_UP_BLOCKS) {
            int base = 0;
            for (int j = 0; j < b; j++) base += g->nres[j] + g->has_up[j];
            if ((r = after(q, "resnets.")) && (k = take_index(&r)) >= 0 && (u = lookup(vae_res, N_OF(vae_res), r)))
                return mapped(out, len, "decoder.upsamples.%d.%s", base + k, u);
            if ((r = after(q, "upsamplers.0.")) && (u = lookup(vae_resample, N_OF(vae_resample), r)))
                return mapped(out, len, "decoder.upsamples.%d.%s", base + g->nres[b], u);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- views */

/* Fills v with views named upstream of the diffusers tensors of src under
 * prefix. */
static lp_status fill_view(lp_tensor_file *v, const lp_tensor_file *src, lp_component kind, const char *prefix) {
    vae_grouping g;
    if (kind == LP_COMPONENT_WAN_VAE) vae_scan(src, prefix, &g);
    int n_blocks = 0;
    for (size_t i = 0; i < src->count; i++) {
        const lp_tensor *t = &src->tensors[i];
        const char *d = after(t->name, prefix);
        if (!d) continue;
        char up[512];
        int block = -1;
        int known = kind == LP_COMPONENT_DIT ? dit_upstream(d, up, sizeof up, &block)
                                             : vae_upstream(d, &g, up, sizeof up);
        if (!known)
            return lp_fail(LP_ERR_UNSUPPORTED,
                           "%s: diffusers tensor '%s' has no counterpart in the upstream %s (another architecture?)",
                           src->path, t->name, components[kind].name);
        if (t->dtype != LP_F32 && t->dtype != LP_F16 && t->dtype != LP_BF16)
            return lp_fail(LP_ERR_UNSUPPORTED, "%s: diffusers tensor '%s' (upstream '%s') is %s; weights must be F32, "
                           "F16 or BF16", src->path, t->name, up, lp_dtype_name(t->dtype));
        if (block + 1 > n_blocks) n_blocks = block + 1;
        LP_TRY(lp_tensor_builder_add_view(v, up, t));
    }
    for (size_t i = 0; i < src->nmeta; i++)
        LP_TRY(lp_tensor_builder_add_meta(v, src->meta_keys[i], src->meta_values[i]));
    LP_TRY(lp_tensor_builder_finish(v));
    return kind == LP_COMPONENT_DIT ? dit_complete(src, prefix, n_blocks) : LP_OK;
}

static lp_status diffusers_view(const lp_tensor_file *src, lp_component kind, const char *prefix,
                                lp_tensor_file **out) {
    char name[4096];
    snprintf(name, sizeof name, "%s [diffusers layout]", src->path);
    lp_tensor_file *v;
    LP_TRY(lp_tensor_builder_create(name, &v));
    v->format = src->format;
    lp_status s = fill_view(v, src, kind, prefix);
    if (s != LP_OK) {
        lp_tensor_file_close(v);
        return s;
    }
    *out = v;
    return LP_OK;
}

/* Whether src holds prefix + name. */
static int holds(const lp_tensor_file *src, const char *prefix, const char *name) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    return lp_tensor_file_find(src, full) != NULL;
}

lp_status lp_weights_map(const lp_tensor_file *src, lp_component kind, lp_tensor_file **view, const char **prefix) {
    *view = NULL;
    *prefix = NULL;
    if ((unsigned)kind >= N_OF(components)) return lp_fail(LP_ERR_ARG, "%s: unknown component %d", src->path, kind);
    const component_info *c = &components[kind];
    for (size_t i = 0; i < N_OF(prefixes); i++)
        if (holds(src, prefixes[i], c->probe)) {
            *prefix = prefixes[i];
            return LP_OK;
        }
    for (size_t i = 0; c->diffusers && i < N_OF(prefixes); i++)
        if (holds(src, prefixes[i], c->diffusers)) {
            LP_TRY(diffusers_view(src, kind, prefixes[i], view));
            *prefix = "";
            return LP_OK;
        }
    char tried[512] = "none";
    for (size_t i = 1; i < N_OF(prefixes); i++)
        snprintf(tried + strlen(tried), sizeof tried - strlen(tried), ", '%s'", prefixes[i]);
    if (c->diffusers)
        return lp_fail(LP_ERR_MISSING, "%s: no %s weights: no tensor '%s' (upstream names) or '%s' (diffusers names) "
                       "under the prefixes %s", src->path, c->name, c->probe, c->diffusers, tried);
    return lp_fail(LP_ERR_MISSING, "%s: no %s weights: no tensor '%s' under the prefixes %s", src->path, c->name,
                   c->probe, tried);
}

lp_status lp_weights_open(const char *path, lp_component kind, lp_tensor_file **out, const char **prefix) {
    *out = NULL;
    *prefix = NULL;
    lp_tensor_file *f, *view;
    const char *p;
    LP_TRY(lp_tensor_file_open(path, &f));
    lp_status s = lp_weights_map(f, kind, &view, &p);
    if (s != LP_OK) {
        lp_tensor_file_close(f);
        return s;
    }
    if (view) {
        view->base = f; /* the views point into f's mapping */
        f = view;
    }
    *out = f;
    *prefix = p;
    return LP_OK;
}
