/* `lipar info FILE... [--tensors]`: what a weight or data file holds — its
 * format, tensor count, dtypes, parameter and byte totals, the component it
 * looks like (Wan DiT, Wan VAE, TAEHV, umT5, latents) with the configuration
 * read off its tensor shapes, and with --tensors every tensor's dtype and shape.
 *
 * Components are recognised by characteristic tensor names after one of the
 * prefixes published checkpoints use (spec/CHECKPOINTS.md): none, `w.` (golden
 * files), `model.diffusion_model.`, `model.`, `generator_ema.model.`,
 * `generator.model.` (Self-Forcing; the EMA copy is preferred), in both the
 * original upstream naming and the diffusers naming. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "../src/io/tensor_file.h"

static const char *const prefixes[] = {
    "",       "w.", "model.diffusion_model.", "generator_ema.model.", "model.", "generator.model.", "diffusion_model.",
    "module."};

typedef struct {
    const lp_tensor_file *f;
    const char *prefix;
} view;

/* The tensor <prefix><name>, or NULL. */
static const lp_tensor *get(const view *v, const char *name) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", v->prefix, name);
    return lp_tensor_file_find(v->f, full);
}

/* Dimension d of tensor name if it has ndim dimensions, else -1. */
static int64_t dim(const view *v, const char *name, int ndim, int d) {
    const lp_tensor *t = get(v, name);
    return t && t->ndim == ndim ? t->shape[d] : -1;
}

/* Number of consecutive blocks i = 0, 1, ... for which fmt (with %d) exists. */
static int count_blocks(const view *v, const char *fmt) {
    char name[256];
    int n = 0;
    for (;; n++) {
        snprintf(name, sizeof name, fmt, n);
        if (!get(v, name)) return n;
    }
}

static void dit_original(const view *v) {
    const lp_tensor *pe = get(v, "patch_embedding.weight"); /* [dim, in_dim, pt, ph, pw] */
    int64_t dim0 = pe->shape[0], patch = pe->shape[2] * pe->shape[3] * pe->shape[4];
    int64_t head = dim(v, "head.head.weight", 2, 0); /* [out_dim * patch, dim] */
    const char *mh = lp_tensor_file_meta(v->f, "num_heads");
    printf("  component: Wan DiT (%s)\n", get(v, "blocks.0.cross_attn.k_img.weight") ? "i2v" : "t2v");
    printf("    dim %" PRId64 ", layers %d, ", dim0, count_blocks(v, "blocks.%d.self_attn.q.weight"));
    if (mh)
        printf("heads %s (metadata), ", mh);
    else
        printf("heads %" PRId64 " (guess: head_dim 128), ", dim0 % 128 ? 1 : dim0 / 128);
    printf("ffn %" PRId64 ", in_channels %" PRId64 ", out_channels %" PRId64 ", text_dim %" PRId64 ", freq_dim %" PRId64
           ", patch [%" PRId64 ", %" PRId64 ", %" PRId64 "]\n",
           dim(v, "blocks.0.ffn.0.weight", 2, 0), pe->shape[1], head > 0 ? head / patch : -1,
           dim(v, "text_embedding.0.weight", 2, 1), dim(v, "time_embedding.0.weight", 2, 1), pe->shape[2], pe->shape[3],
           pe->shape[4]);
}

static void dit_diffusers(const view *v) {
    const lp_tensor *pe = get(v, "patch_embedding.weight");
    int64_t dim0 = pe->shape[0], patch = pe->shape[2] * pe->shape[3] * pe->shape[4];
    int64_t out = dim(v, "proj_out.weight", 2, 0);
    printf("  component: Wan DiT (diffusers naming)\n");
    printf("    dim %" PRId64 ", layers %d, heads %" PRId64 " (guess: head_dim 128), ffn %" PRId64
           ", in_channels %" PRId64 ", out_channels %" PRId64 ", text_dim %" PRId64 ", freq_dim %" PRId64 "\n",
           dim0, count_blocks(v, "blocks.%d.attn1.to_q.weight"), dim0 % 128 ? 1 : dim0 / 128,
           dim(v, "blocks.0.ffn.net.0.proj.weight", 2, 0), pe->shape[1], out > 0 ? out / patch : -1,
           dim(v, "condition_embedder.text_embedder.linear_1.weight", 2, 1),
           dim(v, "condition_embedder.time_embedder.linear_1.weight", 2, 1));
}

static void vae_original(const view *v) {
    printf("  component: Wan VAE\n");
    printf("    base dim %" PRId64 ", z_dim %" PRId64 "\n", dim(v, "encoder.conv1.weight", 5, 0),
           dim(v, "conv2.weight", 5, 0));
}

static void vae_diffusers(const view *v) {
    printf("  component: Wan VAE (diffusers naming)\n");
    printf("    base dim %" PRId64 ", z_dim %" PRId64 "\n", dim(v, "encoder.conv_in.weight", 5, 0),
           dim(v, "post_quant_conv.weight", 5, 0));
}

static void taehv(const view *v) {
    int64_t in = dim(v, "encoder.0.weight", 4, 1);
    int64_t patch = in == 3 ? 1 : in == 12 ? 2 : -1;
    printf("  component: TAEHV\n");
    printf("    width %" PRId64 ", latent_channels %" PRId64 ", decoder width %" PRId64 ", patch %" PRId64 "\n",
           dim(v, "encoder.0.weight", 4, 0), dim(v, "decoder.1.weight", 4, 1), dim(v, "decoder.1.weight", 4, 0), patch);
}

static void umt5_original(const view *v) {
    int64_t heads = dim(v, "blocks.0.pos_embedding.embedding.weight", 2, 1);
    int shared = heads < 0;
    if (shared) heads = dim(v, "pos_embedding.embedding.weight", 2, 1);
    printf("  component: umT5 encoder\n");
    printf("    vocab %" PRId64 ", dim %" PRId64 ", dim_attn %" PRId64 ", layers %d, heads %" PRId64 ", ffn %" PRId64
           ", position bias %s\n",
           dim(v, "token_embedding.weight", 2, 0), dim(v, "token_embedding.weight", 2, 1),
           dim(v, "blocks.0.attn.q.weight", 2, 0), count_blocks(v, "blocks.%d.attn.q.weight"), heads,
           dim(v, "blocks.0.ffn.fc1.weight", 2, 0), shared ? "shared" : "per layer");
}

static void umt5_hf(const view *v) {
    const char *emb = get(v, "shared.weight") ? "shared.weight" : "encoder.embed_tokens.weight";
    printf("  component: umT5 encoder (Hugging Face naming)\n");
    printf("    vocab %" PRId64 ", dim %" PRId64 ", layers %d, heads %" PRId64 ", ffn %" PRId64 "\n", dim(v, emb, 2, 0),
           dim(v, emb, 2, 1), count_blocks(v, "encoder.block.%d.layer.0.SelfAttention.q.weight"),
           dim(v, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 2, 1),
           dim(v, "encoder.block.0.layer.1.DenseReluDense.wi_0.weight", 2, 0));
}

typedef struct {
    const char *key;  /* characteristic tensor */
    int ndim;         /* its rank */
    const char *also; /* a second tensor that must exist */
    void (*describe)(const view *v);
} detector;

static const detector detectors[] = {
    {"patch_embedding.weight", 5, "blocks.0.self_attn.q.weight", dit_original},
    {"patch_embedding.weight", 5, "blocks.0.attn1.to_q.weight", dit_diffusers},
    {"encoder.conv1.weight", 5, "decoder.conv1.weight", vae_original},
    {"encoder.conv_in.weight", 5, "post_quant_conv.weight", vae_diffusers},
    {"encoder.0.weight", 4, "decoder.1.weight", taehv},
    {"token_embedding.weight", 2, "blocks.0.attn.q.weight", umt5_original},
    {"shared.weight", 2, "encoder.block.0.layer.0.SelfAttention.q.weight", umt5_hf},
    {"encoder.embed_tokens.weight", 2, "encoder.block.0.layer.0.SelfAttention.q.weight", umt5_hf},
};

/* Prints the component of f; returns 0 if none was recognised. */
static int describe_component(const lp_tensor_file *f) {
    for (size_t p = 0; p < sizeof prefixes / sizeof *prefixes; p++) {
        view v = {f, prefixes[p]};
        for (size_t d = 0; d < sizeof detectors / sizeof *detectors; d++) {
            const lp_tensor *k = get(&v, detectors[d].key);
            if (!k || k->ndim != detectors[d].ndim || !get(&v, detectors[d].also)) continue;
            detectors[d].describe(&v);
            if (*v.prefix) printf("    (weights under '%s')\n", v.prefix);
            return 1;
        }
    }
    /* Latents: a 5-D tensor with 16 channels in [B, C, F, H, W] or [B, F, C, H, W]. */
    for (size_t i = 0; i < lp_tensor_file_count(f); i++) {
        const lp_tensor *t = lp_tensor_file_at(f, i);
        if (t->ndim != 5 || (t->shape[1] != 16 && t->shape[2] != 16)) continue;
        char sh[128];
        printf("  component: latents ('%s' %s %s)\n", t->name, lp_dtype_name(t->dtype), lp_shape_str(t, sh, sizeof sh));
        return 1;
    }
    printf("  component: unknown\n");
    return 0;
}

static int info_file(const char *path, int list) {
    lp_tensor_file *f;
    if (lp_tensor_file_open(path, &f) != LP_OK) {
        fprintf(stderr, "lipar info: %s\n", lp_last_error());
        return 1;
    }
    size_t n = lp_tensor_file_count(f), per_dtype[LP_DTYPE_COUNT] = {0};
    int64_t params = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const lp_tensor *t = lp_tensor_file_at(f, i);
        per_dtype[t->dtype]++;
        params += lp_tensor_numel(t);
        bytes += t->nbytes;
    }
    printf("%s\n", path);
    printf("  format: %s\n",
           lp_tensor_file_format(f) == LP_FORMAT_TORCH_ZIP ? "PyTorch zip checkpoint" : "safetensors");
    printf("  tensors: %zu, parameters: %" PRId64 " (%.2f M), bytes: %" PRIu64 " (%.2f MiB)\n", n, params,
           (double)params / 1e6, bytes, (double)bytes / 1048576.0);
    printf("  dtypes:");
    for (int d = 0; d < LP_DTYPE_COUNT; d++)
        if (per_dtype[d]) printf(" %s x %zu", lp_dtype_name((lp_dtype)d), per_dtype[d]);
    printf("\n");
    size_t nm = lp_tensor_file_meta_count(f);
    const char *kind = lp_tensor_file_meta(f, "kind");
    if (nm) printf("  metadata: %zu keys%s%s\n", nm, kind ? ", kind " : "", kind ? kind : "");
    describe_component(f);
    for (size_t i = 0; list && i < n; i++) {
        const lp_tensor *t = lp_tensor_file_at(f, i);
        char sh[160];
        printf("    %s %s %s\n", t->name, lp_dtype_name(t->dtype), lp_shape_str(t, sh, sizeof sh));
    }
    lp_tensor_file_close(f);
    return 0;
}

static void usage(FILE *out) {
    fprintf(out, "usage: lipar info FILE... [--tensors]\n"
                 "Prints each safetensors or PyTorch .pt/.pth file's format, tensor count, dtypes,\n"
                 "parameter and byte totals, and the component it holds (Wan DiT, Wan VAE, TAEHV,\n"
                 "umT5, latents) with its configuration; --tensors also lists every tensor.\n");
}

int lp_info_main(int argc, char **argv) {
    int list = 0, files = 0, failed = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--tensors")) {
            list = 1;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "lipar info: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    for (int i = 0; i < argc; i++) {
        if (argv[i][0] == '-') continue;
        files++;
        failed |= info_file(argv[i], list);
    }
    if (!files) {
        usage(stderr);
        return 2;
    }
    return failed;
}
