/* io/weights: every published layout of the golden weights (upstream names
 * under each prefix, the Self-Forcing .pt, the diffusers names of the DiT and
 * the Wan VAE) opens to the same tensors, loads, and gives the same DiT output
 * bit for bit; the diffusers views share the source's data; and bad files fail
 * naming the tensor and the file.
 *
 * The diffusers files are written with reference renames restated here from
 * diffusers' scripts/convert_wan_to_diffusers.py (ordered substring
 * replacements for the DiT, per-part rules for the VAE), independently of the
 * reverse tables in src/io/weights.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/io/safetensors_write.h"
#include "../src/io/tensor_builder.h"
#include "../src/io/weights.h"
#include "../src/model/taehv.h"
#include "../src/model/umt5.h"
#include "../src/model/wan_dit.h"
#include "../src/model/wan_dit_random.h"
#include "../src/model/wan_vae.h"
#include "test_util.h"

/* ------------------------------------------------------ reference renames */

typedef void (*rename_fn)(const char *upstream, char *out, size_t len);

static void keep_name(const char *upstream, char *out, size_t len) { snprintf(out, len, "%s", upstream); }

/* Replaces the first occurrence of from in s (len bytes of storage). */
static void replace(char *s, size_t len, const char *from, const char *to) {
    char *p = strstr(s, from), tail[512];
    if (!p) return;
    snprintf(tail, sizeof tail, "%s", p + strlen(from));
    snprintf(p, len - (size_t)(p - s), "%s%s", to, tail);
}

/* The conversion script's DiT renames, in its order (the norm2/norm3 swap goes
 * through a placeholder). */
static void dit_to_diffusers(const char *upstream, char *out, size_t len) {
    static const char *const rules[][2] = {
        {"time_embedding.0", "condition_embedder.time_embedder.linear_1"},
        {"time_embedding.2", "condition_embedder.time_embedder.linear_2"},
        {"text_embedding.0", "condition_embedder.text_embedder.linear_1"},
        {"text_embedding.2", "condition_embedder.text_embedder.linear_2"},
        {"time_projection.1", "condition_embedder.time_proj"},
        {"head.modulation", "scale_shift_table"},
        {"head.head", "proj_out"},
        {"modulation", "scale_shift_table"},
        {"ffn.0", "ffn.net.0.proj"},
        {"ffn.2", "ffn.net.2"},
        {"norm2", "norm__swap"},
        {"norm3", "norm2"},
        {"norm__swap", "norm3"},
        {"self_attn.q", "attn1.to_q"},
        {"self_attn.k", "attn1.to_k"},
        {"self_attn.v", "attn1.to_v"},
        {"self_attn.o", "attn1.to_out.0"},
        {"self_attn.norm_q", "attn1.norm_q"},
        {"self_attn.norm_k", "attn1.norm_k"},
        {"cross_attn.q", "attn2.to_q"},
        {"cross_attn.k", "attn2.to_k"},
        {"cross_attn.v", "attn2.to_v"},
        {"cross_attn.o", "attn2.to_out.0"},
        {"cross_attn.norm_q", "attn2.norm_q"},
        {"cross_attn.norm_k", "attn2.norm_k"},
    };
    snprintf(out, len, "%s", upstream);
    for (size_t i = 0; i < sizeof rules / sizeof *rules; i++) replace(out, len, rules[i][0], rules[i][1]);
}

/* The residual-block part renames of the VAE conversion. */
static void vae_res_rename(char *s, size_t len) {
    replace(s, len, "residual.0.", "norm1.");
    replace(s, len, "residual.2.", "conv1.");
    replace(s, len, "residual.3.", "norm2.");
    replace(s, len, "residual.6.", "conv2.");
    replace(s, len, "shortcut.", "conv_shortcut.");
}

/* The conversion script's Wan2.1 VAE renames: the decoder's flat upsamples.k
 * become up_blocks.(k/4) with resnets 0..2 and upsamplers.0 at k%4 == 3. */
static void vae_to_diffusers(const char *upstream, char *out, size_t len) {
    int k, n;
    char rest[256];
    snprintf(out, len, "%s", upstream);
    if (!strncmp(upstream, "conv1.", 6)) snprintf(out, len, "quant_conv.%s", upstream + 6);
    else if (!strncmp(upstream, "conv2.", 6)) snprintf(out, len, "post_quant_conv.%s", upstream + 6);
    else if (sscanf(upstream, "encoder.downsamples.%d.%n", &k, &n) == 1) {
        snprintf(out, len, "encoder.down_blocks.%d.%s", k, upstream + n);
        vae_res_rename(out, len);
    } else if (sscanf(upstream, "decoder.upsamples.%d.%n", &k, &n) == 1) {
        snprintf(rest, sizeof rest, "%s", upstream + n);
        if (k % 4 == 3) {
            snprintf(out, len, "decoder.up_blocks.%d.upsamplers.0.%s", k / 4, rest);
        } else {
            snprintf(out, len, "decoder.up_blocks.%d.resnets.%d.%s", k / 4, k % 4, rest);
            vae_res_rename(out, len);
        }
    } else {
        replace(out, len, "encoder.conv1.", "encoder.conv_in.");
        replace(out, len, "decoder.conv1.", "decoder.conv_in.");
        replace(out, len, "head.0.", "norm_out.");
        replace(out, len, "head.2.", "conv_out.");
        replace(out, len, "middle.0.", "mid_block.resnets.0.");
        replace(out, len, "middle.2.", "mid_block.resnets.1.");
        replace(out, len, "middle.1.", "mid_block.attentions.0.");
        vae_res_rename(out, len);
    }
}

/* ------------------------------------------------------------ tensor sets */

/* The tensors of a file under a prefix, as f32 copies named without it. */
typedef struct {
    int n;
    lp_st_out_tensor *t;
} tensor_set;

static void free_set(tensor_set *s) {
    for (int i = 0; i < s->n; i++) {
        free((char *)s->t[i].name);
        free((float *)s->t[i].data);
    }
    free(s->t);
    memset(s, 0, sizeof *s);
}

static int load_set(const char *path, const char *prefix, tensor_set *s) {
    memset(s, 0, sizeof *s);
    lp_tensor_file *f;
    CHECK(lp_tensor_file_open(path, &f) == LP_OK, "%s", lp_last_error());
    size_t pl = strlen(prefix), count = lp_tensor_file_count(f);
    s->t = calloc(count, sizeof *s->t);
    CHECK(s->t);
    for (size_t i = 0; i < count; i++) {
        const lp_tensor *t = lp_tensor_file_at(f, i);
        if (strncmp(t->name, prefix, pl)) continue;
        lp_st_out_tensor *o = &s->t[s->n++];
        o->name = strdup(t->name + pl);
        o->ndim = t->ndim;
        memcpy(o->shape, t->shape, sizeof o->shape);
        float *d = malloc((size_t)lp_tensor_numel(t) * sizeof *d + 1);
        CHECK(o->name && d && lp_tensor_read_f32(t, 0, lp_tensor_numel(t), d) == LP_OK);
        o->data = d;
    }
    lp_tensor_file_close(f);
    CHECK(s->n > 0, "no tensors under '%s' in %s", prefix, path);
    return 0;
}

/* Writes s to dir/file as prefix + rename(name). */
static int write_set(const tensor_set *s, const char *file, const char *prefix, rename_fn rename, char *path,
                     size_t len) {
    snprintf(path, len, "%s/%s", lp_test_tmpdir(), file);
    lp_st_out_tensor *t = malloc((size_t)s->n * sizeof *t);
    char(*names)[256] = malloc((size_t)s->n * sizeof *names);
    CHECK(t && names);
    for (int i = 0; i < s->n; i++) {
        char r[240];
        rename(s->t[i].name, r, sizeof r);
        snprintf(names[i], sizeof names[i], "%s%s", prefix, r);
        t[i] = s->t[i];
        t[i].name = names[i];
    }
    lp_status st = lp_safetensors_write(path, t, s->n, NULL, NULL, 0);
    free(t);
    free(names);
    CHECK(st == LP_OK, "%s", lp_last_error());
    return 0;
}

/* Every tensor of ref is prefix + its name in f, with the same shape and the
 * same values. */
static int same_tensors(const tensor_set *ref, const lp_tensor_file *f, const char *prefix) {
    for (int i = 0; i < ref->n; i++) {
        char name[512];
        snprintf(name, sizeof name, "%s%s", prefix, ref->t[i].name);
        const lp_tensor *t = lp_tensor_file_find(f, name);
        CHECK(t, "%s: '%s' not found", lp_tensor_file_path(f), name);
        CHECK(t->ndim == ref->t[i].ndim && !memcmp(t->shape, ref->t[i].shape, (size_t)t->ndim * sizeof *t->shape),
              "'%s': shape differs", name);
        int64_t n = lp_tensor_numel(t);
        float *d = malloc((size_t)n * sizeof *d + 1);
        CHECK(d && lp_tensor_read_f32(t, 0, n, d) == LP_OK);
        int same = !memcmp(d, ref->t[i].data, (size_t)n * sizeof *d);
        free(d);
        CHECK(same, "'%s': values differ", name);
    }
    return 0;
}

/* -------------------------------------------------------------- DiT runs */

#define LH 4
#define LW 6
#define NF 2

typedef struct {
    float *context; /* [L, text_dim] */
    int L, heads, text_len;
    float x[NF * 16 * LH * LW];
    float flow[NF * 16 * LH * LW]; /* the golden w.* model's output */
} dit_probe;

/* Loads the DiT from (f, prefix) and runs one forward of p->x into flow. */
static int dit_forward(const dit_probe *p, const lp_tensor_file *f, const char *prefix, float *flow) {
    lp_backend *be;
    lp_dit *dit;
    lp_dit_cache *cache;
    CHECK(lp_backend_create("cpu", 1, &be) == LP_OK);
    CHECK(lp_dit_load(f, prefix, p->heads, p->text_len, be, &dit) == LP_OK, "%s", lp_last_error());
    lp_dit_cache_config cc = {.latent_h = LH, .latent_w = LW, .capacity = 4 * NF * (LH / 2) * (LW / 2),
                              .local_attn = -1, .max_frames = NF};
    CHECK(lp_dit_cache_create(dit, &cc, &cache) == LP_OK);
    CHECK(lp_dit_set_prompt(dit, cache, p->context, p->L) == LP_OK);
    float ts[NF] = {700.5f, 700.5f};
    lp_dit_call call = {.n_frames = NF, .timesteps = ts, .kv_policy = LP_KV_DENSE};
    lp_status s = lp_dit_forward(dit, cache, &call, p->x, flow);
    lp_dit_cache_free(cache);
    lp_dit_free(dit);
    lp_backend_destroy(be);
    CHECK(s == LP_OK, "%s", lp_last_error());
    return 0;
}

/* Opens path through lp_weights_open as a DiT: the prefix is want_prefix, the
 * tensors are those of ref, and the forward equals the golden model's. */
static int check_dit_file(const dit_probe *p, const tensor_set *ref, const char *path, const char *want_prefix) {
    lp_tensor_file *f;
    const char *prefix;
    CHECK(lp_weights_open(path, LP_COMPONENT_DIT, &f, &prefix) == LP_OK, "%s", lp_last_error());
    int r = strcmp(prefix, want_prefix) ? 1 : same_tensors(ref, f, prefix);
    float flow[NF * 16 * LH * LW];
    if (!r) r = dit_forward(p, f, prefix, flow);
    lp_tensor_file_close(f);
    CHECK(!r, "%s: prefix '%s' (want '%s')", path, prefix, want_prefix);
    CHECK(!memcmp(flow, p->flow, sizeof flow), "%s: the forward differs from the golden weights'", path);
    return 0;
}

static int test_dit_layouts(void) {
    const char *g = lp_test_shared("golden/sf_dit_t2v.safetensors");
    if (!g) return lp_test_skip_shared("golden/sf_dit_t2v.safetensors");
    char golden[4096], pt[4096 + 8];
    snprintf(golden, sizeof golden, "%s", g);
    snprintf(pt, sizeof pt, "%.*s.pt", (int)(strlen(golden) - strlen(".safetensors")), golden);
    tensor_set ref;
    if (load_set(golden, "w.", &ref)) return 1;
    static dit_probe p;
    lp_tensor_file *gf;
    CHECK(lp_tensor_file_open(golden, &gf) == LP_OK);
    const lp_tensor *ctx = lp_tensor_file_find(gf, "in.context");
    CHECK(ctx && ctx->ndim == 2);
    p.L = (int)ctx->shape[0];
    p.heads = atoi(lp_tensor_file_meta(gf, "num_heads"));
    p.text_len = atoi(lp_tensor_file_meta(gf, "text_len"));
    p.context = malloc((size_t)lp_tensor_numel(ctx) * sizeof *p.context);
    CHECK(p.context && lp_tensor_read_f32(ctx, 0, lp_tensor_numel(ctx), p.context) == LP_OK);
    lp_tensor_file_close(gf);
    lp_test_fill(p.x, sizeof p.x / sizeof *p.x, 11, 1.0f);

    /* the reference output: the golden file's own w.* */
    lp_tensor_file *direct;
    CHECK(lp_tensor_file_open(golden, &direct) == LP_OK);
    int r = dit_forward(&p, direct, "w.", p.flow);
    lp_tensor_file_close(direct);
    CHECK(!r);

    static const struct {
        const char *file, *prefix;
        rename_fn rename;
        const char *want_prefix; /* what lp_weights_open reports */
    } cases[] = {
        {"dit_plain.safetensors", "", keep_name, ""},
        {"dit_model.safetensors", "model.", keep_name, "model."},
        {"dit_comfy.safetensors", "model.diffusion_model.", keep_name, "model.diffusion_model."},
        {"dit_diffusers.safetensors", "", dit_to_diffusers, ""},
        {"dit_diffusers_model.safetensors", "model.", dit_to_diffusers, ""},
    };
    char path[4096];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        CHECK(!write_set(&ref, cases[i].file, cases[i].prefix, cases[i].rename, path, sizeof path));
        CHECK(!check_dit_file(&p, &ref, path, cases[i].want_prefix), "case %s", cases[i].file);
    }
    CHECK(!check_dit_file(&p, &ref, golden, "w."));
    /* the Self-Forcing checkpoint: generator_ema, not the all-zero generator */
    CHECK(!check_dit_file(&p, &ref, pt, "generator_ema.model."));
    free(p.context);
    free_set(&ref);
    return 0;
}

/* ---------------------------------------------------------- the other parts */

static int test_wan_vae_layouts(void) {
    const char *g = lp_test_shared("golden/wan_vae.safetensors");
    if (!g) return lp_test_skip_shared("golden/wan_vae.safetensors");
    char golden[4096], pth[4096], path[4096];
    snprintf(golden, sizeof golden, "%s", g);
    snprintf(pth, sizeof pth, "%.*s.pth", (int)(strlen(golden) - strlen(".safetensors")), golden);
    tensor_set ref;
    if (load_set(golden, "w.", &ref)) return 1;
    CHECK(!write_set(&ref, "vae_diffusers.safetensors", "", vae_to_diffusers, path, sizeof path));
    const char *files[] = {path, pth, golden}, *want[] = {"", "", "w."};
    for (int i = 0; i < 3; i++) {
        lp_tensor_file *f;
        const char *prefix;
        lp_wan_vae *m;
        CHECK(lp_weights_open(files[i], LP_COMPONENT_WAN_VAE, &f, &prefix) == LP_OK, "%s", lp_last_error());
        CHECK(!strcmp(prefix, want[i]) && !same_tensors(&ref, f, prefix), "%s", files[i]);
        CHECK(i > 0 || lp_tensor_file_count(f) == (size_t)ref.n, "the diffusers view holds %zu tensors",
              lp_tensor_file_count(f));
        CHECK(lp_wan_vae_load(f, prefix, &m) == LP_OK, "%s", lp_last_error());
        lp_wan_vae_free(m);
        lp_tensor_file_close(f);
    }
    free_set(&ref);
    return 0;
}

static int test_taehv_umt5_layouts(void) {
    const char *need[] = {"golden/taehv_w21.safetensors", "golden/umt5_tiny.safetensors", "golden/umt5_tiny_bf16.pth"};
    char paths[3][4096];
    for (int i = 0; i < 3; i++) {
        const char *p = lp_test_shared(need[i]);
        if (!p) return lp_test_skip_shared(need[i]);
        snprintf(paths[i], sizeof paths[i], "%s", p);
    }
    lp_tensor_file *f;
    const char *prefix;
    lp_backend *be;
    lp_taehv *t;
    CHECK(lp_backend_create("cpu", 1, &be) == LP_OK);
    CHECK(lp_weights_open(paths[0], LP_COMPONENT_TAEHV, &f, &prefix) == LP_OK && !strcmp(prefix, "w."));
    CHECK(lp_taehv_load(f, prefix, be, &t) == LP_OK, "%s", lp_last_error());
    lp_taehv_free(t);
    lp_backend_destroy(be);
    lp_tensor_file_close(f);
    const char *want[] = {"w.", ""};
    for (int i = 0; i < 2; i++) {
        lp_umt5_weights w;
        lp_umt5_config cfg;
        CHECK(lp_weights_open(paths[1 + i], LP_COMPONENT_UMT5, &f, &prefix) == LP_OK && !strcmp(prefix, want[i]));
        CHECK(lp_umt5_load(f, prefix, 0, &w, &cfg) == LP_OK, "%s", lp_last_error());
        lp_umt5_weights_free(&w);
        lp_tensor_file_close(f);
    }
    /* a TAEHV file holds no Wan VAE: the message says what was looked for */
    CHECK(lp_weights_open(paths[0], LP_COMPONENT_WAN_VAE, &f, &prefix) == LP_ERR_MISSING && !f);
    CHECK(strstr(lp_last_error(), "taehv_w21") && strstr(lp_last_error(), "encoder.conv_in.weight"), "%s",
          lp_last_error());
    return 0;
}

/* ------------------------------------------- random weights, no shared files */

#define RND_NAME "random diffusers DiT"

/* A diffusers-named in-memory copy (views) of the random DiT up, under
 * "model.", without the tensor named skip; extra (if not NULL) is added. */
static lp_status diffusers_file(const lp_tensor_file *up, const char *skip, const lp_tensor *extra,
                                lp_tensor_file **out) {
    LP_TRY(lp_tensor_builder_create(RND_NAME, out));
    for (size_t i = 0; i < lp_tensor_file_count(up); i++) {
        const lp_tensor *t = lp_tensor_file_at(up, i);
        char d[256], name[300];
        dit_to_diffusers(t->name, d, sizeof d);
        snprintf(name, sizeof name, "model.%s", d);
        if (skip && !strcmp(name, skip)) continue;
        LP_TRY(lp_tensor_builder_add_view(*out, name, t));
    }
    if (extra) LP_TRY(lp_tensor_builder_add_view(*out, extra->name, extra));
    return lp_tensor_builder_finish(*out);
}

static const lp_dit_config rnd_cfg = {.dim = 64, .ffn_dim = 96, .num_layers = 3, .in_dim = 16, .out_dim = 16,
                                      .text_dim = 32, .freq_dim = 256};

/* The diffusers view of a bf16 DiT shares the source's data under the
 * upstream names, and loads. */
static int test_diffusers_views(void) {
    lp_tensor_file *up, *d, *view;
    const char *prefix;
    CHECK(lp_dit_random_weights(&rnd_cfg, LP_BF16, 7, &up) == LP_OK);
    CHECK(diffusers_file(up, NULL, NULL, &d) == LP_OK, "%s", lp_last_error());
    CHECK(lp_weights_map(d, LP_COMPONENT_DIT, &view, &prefix) == LP_OK, "%s", lp_last_error());
    CHECK(view && !strcmp(prefix, "") && lp_tensor_file_count(view) == lp_tensor_file_count(up));
    CHECK(strstr(lp_tensor_file_path(view), RND_NAME " [diffusers layout]"));
    for (size_t i = 0; i < lp_tensor_file_count(up); i++) {
        const lp_tensor *t = lp_tensor_file_at(up, i), *v = lp_tensor_file_find(view, t->name);
        CHECK(v, "'%s' missing from the view", t->name);
        CHECK(v->data == t->data && v->nbytes == t->nbytes && v->dtype == t->dtype && v->ndim == t->ndim &&
                  !memcmp(v->shape, t->shape, sizeof v->shape),
              "'%s' is not a view of the source tensor", t->name);
    }
    lp_backend *be;
    lp_dit *dit;
    CHECK(lp_backend_create("cpu", 1, &be) == LP_OK);
    CHECK(lp_dit_load(view, prefix, 1, 16, be, &dit) == LP_OK, "%s", lp_last_error());
    CHECK(lp_dit_get_config(dit)->num_layers == 3 && lp_dit_get_config(dit)->ffn_dim == 96);
    lp_dit_free(dit);
    lp_backend_destroy(be);
    /* the same file under upstream names needs no view */
    lp_tensor_file *none;
    CHECK(lp_weights_map(up, LP_COMPONENT_DIT, &none, &prefix) == LP_OK && !none && !strcmp(prefix, ""));
    lp_tensor_file_close(view);
    lp_tensor_file_close(d);
    lp_tensor_file_close(up);
    return 0;
}

/* Maps a diffusers file built by diffusers_file(skip, extra) and expects code
 * with a message holding each of the needles. */
static int expect_map_error(const lp_tensor_file *up, const char *skip, const lp_tensor *extra, lp_status code,
                            const char *n1, const char *n2) {
    lp_tensor_file *d, *view;
    const char *prefix;
    CHECK(diffusers_file(up, skip, extra, &d) == LP_OK, "%s", lp_last_error());
    lp_status s = lp_weights_map(d, LP_COMPONENT_DIT, &view, &prefix);
    lp_tensor_file_close(d);
    CHECK(s == code && !view, "status %s: %s", lp_status_name(s), lp_last_error());
    const char *m = lp_last_error();
    CHECK(strstr(m, RND_NAME) && strstr(m, n1) && (!n2 || strstr(m, n2)), "message: %s", m);
    return 0;
}

static int test_errors(void) {
    lp_tensor_file *up;
    CHECK(lp_dit_random_weights(&rnd_cfg, LP_F32, 8, &up) == LP_OK);
    /* a missing diffusers tensor: both names */
    CHECK(!expect_map_error(up, "model.blocks.1.attn2.norm_k.weight", NULL, LP_ERR_MISSING,
                            "'model.blocks.1.attn2.norm_k.weight'", "'blocks.1.cross_attn.norm_k.weight'"));
    CHECK(!expect_map_error(up, "model.scale_shift_table", NULL, LP_ERR_MISSING, "'model.scale_shift_table'",
                            "'head.modulation'"));
    /* a tensor the map does not know (image conditioning of the I2V model) */
    const lp_tensor *q = lp_tensor_file_find(up, "blocks.0.cross_attn.k.weight");
    lp_tensor extra = *q;
    extra.name = "model.blocks.0.attn2.add_k_proj.weight";
    CHECK(!expect_map_error(up, NULL, &extra, LP_ERR_UNSUPPORTED, "'model.blocks.0.attn2.add_k_proj.weight'", NULL));
    /* an integer tensor */
    static int32_t ints[64];
    lp_tensor bad = {.name = "model.blocks.0.attn1.to_q.bias", .dtype = LP_I32, .ndim = 1, .shape = {64},
                     .data = ints, .nbytes = sizeof ints};
    CHECK(!expect_map_error(up, "model.blocks.0.attn1.to_q.bias", &bad, LP_ERR_UNSUPPORTED,
                            "'model.blocks.0.attn1.to_q.bias'", "'blocks.0.self_attn.q.bias'"));
    /* a wrong shape: the loader names the upstream tensor and the mapped file */
    lp_tensor_file *d, *view;
    const char *prefix;
    const lp_tensor *f2 = lp_tensor_file_find(up, "blocks.2.ffn.2.weight");
    lp_tensor wrong = *f2;
    wrong.name = "model.blocks.2.ffn.net.2.weight";
    wrong.shape[1] -= 1;
    CHECK(diffusers_file(up, wrong.name, &wrong, &d) == LP_OK);
    CHECK(lp_weights_map(d, LP_COMPONENT_DIT, &view, &prefix) == LP_OK && view);
    lp_backend *be;
    lp_dit *dit;
    CHECK(lp_backend_create("cpu", 1, &be) == LP_OK);
    CHECK(lp_dit_load(view, prefix, 1, 16, be, &dit) == LP_ERR_SHAPE);
    CHECK(strstr(lp_last_error(), RND_NAME " [diffusers layout]") && strstr(lp_last_error(), "blocks.2.ffn.2.weight"),
          "%s", lp_last_error());
    lp_backend_destroy(be);
    lp_tensor_file_close(view);
    lp_tensor_file_close(d);
    lp_tensor_file_close(up);

    /* no weights of the component at all */
    lp_tensor_file *f;
    int64_t shape[1] = {4};
    CHECK(lp_tensor_builder_create("stray", &f) == LP_OK);
    CHECK(lp_tensor_builder_add_uniform(f, "foo.weight", LP_F32, 1, shape, 1, 1) == LP_OK);
    CHECK(lp_tensor_builder_finish(f) == LP_OK);
    CHECK(lp_weights_map(f, LP_COMPONENT_DIT, &view, &prefix) == LP_ERR_MISSING && !view && !prefix);
    CHECK(strstr(lp_last_error(), "stray") && strstr(lp_last_error(), "time_embedding.0.weight") &&
              strstr(lp_last_error(), "generator_ema.model."),
          "%s", lp_last_error());
    CHECK(lp_weights_map(f, LP_COMPONENT_UMT5, &view, &prefix) == LP_ERR_MISSING);
    CHECK(lp_weights_map(f, (lp_component)99, &view, &prefix) == LP_ERR_ARG);
    lp_tensor_file_close(f);

    /* a Wan VAE tensor outside the map */
    CHECK(lp_tensor_builder_create("vae", &f) == LP_OK);
    CHECK(lp_tensor_builder_add_uniform(f, "encoder.conv_in.weight", LP_F32, 1, shape, 1, 1) == LP_OK);
    CHECK(lp_tensor_builder_add_uniform(f, "decoder.up_blocks.0.resnets.0.extra.weight", LP_F32, 1, shape, 1, 1) ==
          LP_OK);
    CHECK(lp_tensor_builder_finish(f) == LP_OK);
    CHECK(lp_weights_map(f, LP_COMPONENT_WAN_VAE, &view, &prefix) == LP_ERR_UNSUPPORTED && !view);
    CHECK(strstr(lp_last_error(), "'decoder.up_blocks.0.resnets.0.extra.weight'"), "%s", lp_last_error());
    lp_tensor_file_close(f);

    /* files that do not open */
    char path[4096];
    snprintf(path, sizeof path, "%s/absent.safetensors", lp_test_tmpdir());
    CHECK(lp_weights_open(path, LP_COMPONENT_DIT, &f, &prefix) == LP_ERR_IO && !f && !prefix);
    snprintf(path, sizeof path, "%s/garbage.safetensors", lp_test_tmpdir());
    FILE *fp = fopen(path, "wb");
    CHECK(fp);
    fputs("\x10\0\0\0\0\0\0\0{\"a\":", fp);
    fclose(fp);
    CHECK(lp_weights_open(path, LP_COMPONENT_DIT, &f, &prefix) == LP_ERR_FORMAT && !f);
    return 0;
}

/* Self-Forcing checkpoints hold generator and generator_ema: the EMA wins. */
static int test_prefix_preference(void) {
    lp_tensor_file *f, *view;
    const char *prefix;
    int64_t shape[2] = {4, 256};
    CHECK(lp_tensor_builder_create("sf", &f) == LP_OK);
    CHECK(lp_tensor_builder_add_uniform(f, "generator.model.time_embedding.0.weight", LP_F32, 2, shape, 1, 1) == LP_OK);
    CHECK(lp_tensor_builder_add_uniform(f, "generator_ema.model.time_embedding.0.weight", LP_F32, 2, shape, 1, 2) ==
          LP_OK);
    CHECK(lp_tensor_builder_finish(f) == LP_OK);
    CHECK(lp_weights_map(f, LP_COMPONENT_DIT, &view, &prefix) == LP_OK && !view);
    CHECK(!strcmp(prefix, "generator_ema.model."), "prefix '%s'", prefix);
    lp_tensor_file_close(f);
    return 0;
}

int main(void) {
    lp_test_run("diffusers views share the data and load", test_diffusers_views);
    lp_test_run("errors name the tensor and the file", test_errors);
    lp_test_run("generator_ema preferred", test_prefix_preference);
    lp_test_run("DiT: golden weights in every layout", test_dit_layouts);
    lp_test_run("Wan VAE: golden weights in every layout", test_wan_vae_layouts);
    lp_test_run("TAEHV and umT5 prefixes", test_taehv_umt5_layouts);
    return lp_test_finish();
}
