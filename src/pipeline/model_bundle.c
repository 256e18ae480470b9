/* lipar_model: loading the weights a session needs and checking that they fit
 * together. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/half.h"
#include "../io/weights.h"
#include "../model/taehv_random.h"
#include "../model/wan_dit_random.h"
#include "model_bundle.h"

const char *lipar_last_error(void) { return lp_last_error(); }

void lipar_model_options_default(lipar_model_options *o) {
    memset(o, 0, sizeof *o);
    o->vae_kind = "taehv";
}

/* Random TAEHV encoder weights give latents far smaller than real ones (std
 * ≈ 0.94 on real Wan latents), which would make every patch look static to the
 * keep-mask thresholds. The demo rescales the encoder's last convolution so
 * that a smooth synthetic clip encodes to unit standard deviation, measured on
 * a CPU backend of its own (so that m->be, which may cache weights by address,
 * never sees the weights before rescaling), then loads the model on m->be. */
static lp_status calibrate_demo_encoder(lipar_model *m) {
    enum { S = 64 };
    lp_backend *cpu = NULL;
    lp_taehv *tm = NULL;
    lp_taehv_encoder *e = NULL;
    float *frames = malloc(4 * 3 * S * S * sizeof *frames), lat[16 * (S / 8) * (S / 8)];
    lp_status st = frames ? LP_OK : lp_fail(LP_ERR_NOMEM, "out of memory");
    if (st == LP_OK) st = lp_backend_cpu_create(lp_pool_size(m->be->pool), &cpu);
    if (st == LP_OK) st = lp_taehv_load(m->vae_file, "", cpu, &tm);
    if (st == LP_OK) st = lp_taehv_encoder_create(tm, S, S, &e);
    for (int i = 0; st == LP_OK && i < 4 * 3 * S * S; i++) {
        int t = i / (3 * S * S), c = (i / (S * S)) % 3, y = (i / S) % S, x = i % S;
        frames[i] = 0.5f + 0.25f * sinf(0.11f * (float)(x + 2 * t) + (float)c) * cosf(0.07f * (float)y + 0.5f * (float)c);
    }
    int got = 0;
    if (st == LP_OK) st = lp_taehv_encoder_push(e, frames, 4, lat, 1, &got);
    lp_taehv_encoder_free(e);
    lp_taehv_free(tm);
    lp_backend_destroy(cpu);
    free(frames);
    if (st != LP_OK) return st;
    double sum = 0, sq = 0, n = (double)(sizeof lat / sizeof *lat);
    for (size_t i = 0; i < sizeof lat / sizeof *lat; i++) {
        sum += lat[i];
        sq += (double)lat[i] * lat[i];
    }
    double sd = sqrt(sq / n - (sum / n) * (sum / n));
    if (!(sd > 0)) return lp_fail(LP_ERR_FORMAT, "demo TAEHV calibration failed");
    static const char *const names[] = {"encoder.17.weight", "encoder.17.bias"};
    for (int k = 0; k < 2; k++) {
        const lp_tensor *t;
        LP_TRY(lp_tensor_file_get(m->vae_file, names[k], &t));
        uint16_t *v = (uint16_t *)t->data; /* the in-memory builder owns this F16 data */
        for (int64_t i = 0; i < lp_tensor_numel(t); i++) v[i] = lp_f32_to_f16(lp_f16_to_f32(v[i]) / (float)sd);
    }
    return lp_taehv_load(m->vae_file, "", m->be, &m->taehv);
}

/* The embedded demonstration model: the DiT, TAEHV and umT5 topologies at
 * small widths with deterministic random weights. */
static lp_status load_demo(lipar_model *m) {
    lp_dit_config dc = {.dim = 128, .ffn_dim = 256, .num_layers = 2, .in_dim = 16, .out_dim = 16, .text_dim = 64,
                        .freq_dim = 256};
    LP_TRY(lp_dit_random_weights(&dc, LP_F32, 20260101, &m->dit_file));
    LP_TRY(lp_dit_load(m->dit_file, "", 2, 64, m->be, &m->dit));
    lp_taehv_random_config tc = {.latent_channels = 16, .enc_width = 16, .dec_width = {64, 32, 16}};
    LP_TRY(lp_taehv_random_weights(&tc, 20260102, &m->vae_file));
    LP_TRY(calibrate_demo_encoder(m));
    LP_TRY(lp_text_open_demo(64, 64, m->be->pool, &m->text));
    snprintf(m->description, sizeof m->description,
             "embedded demonstration model (random weights: DiT 2x128, TAEHV 16/64/32/16, umT5 2x64)");
    return LP_OK;
}

static lp_status load_files(lipar_model *m, const lipar_model_options *o) {
    if (!o->vae_path) return lp_fail(LP_ERR_ARG, "a DiT was given without a VAE (--vae-weights)");
    if (!o->prompt_embedding && (!o->text_encoder_path || !o->tokenizer_path))
        return lp_fail(LP_ERR_ARG, "a DiT needs a text encoder and tokenizer, or a prompt embedding file");
    const char *prefix;
    LP_TRY(lp_weights_open(o->dit_path, LP_COMPONENT_DIT, &m->dit_file, &prefix));
    LP_TRY(lp_dit_load(m->dit_file, prefix, 0, 512, m->be, &m->dit));
    const lp_dit_config *dc = lp_dit_get_config(m->dit);
    LP_TRY(lp_weights_open(o->vae_path, m->vae_kind == LP_VAE_TAEHV ? LP_COMPONENT_TAEHV : LP_COMPONENT_WAN_VAE,
                           &m->vae_file, &prefix));
    int latent_channels;
    if (m->vae_kind == LP_VAE_TAEHV) {
        LP_TRY(lp_taehv_load(m->vae_file, prefix, m->be, &m->taehv));
        latent_channels = lp_taehv_latent_channels(m->taehv);
    } else {
        LP_TRY(lp_wan_vae_load(m->vae_file, prefix, &m->wan));
        latent_channels = lp_wan_vae_config_of(m->wan)->z_dim;
    }
    if (latent_channels != dc->in_dim)
        return lp_fail(LP_ERR_SHAPE, "the VAE %s makes %d latent channels, the DiT %s takes %d", o->vae_path,
                       latent_channels, o->dit_path, dc->in_dim);
    if (o->prompt_embedding) LP_TRY(lp_text_open_embedding(o->prompt_embedding, &m->text));
    else LP_TRY(lp_text_open_umt5(o->text_encoder_path, o->tokenizer_path, dc->text_len, m->be->pool, &m->text));
    if (lp_text_dim(m->text) != dc->text_dim)
        return lp_fail(LP_ERR_SHAPE, "the text encoder gives %d-wide embeddings, the DiT takes %d",
                       lp_text_dim(m->text), dc->text_dim);
    snprintf(m->description, sizeof m->description, "DiT %dx%d (%d heads), %s, text %s", dc->num_layers, dc->dim,
             dc->num_heads, m->vae_kind == LP_VAE_TAEHV ? "TAEHV" : "Wan VAE",
             o->prompt_embedding ? "from an embedding file" : "umT5");
    return LP_OK;
}

lipar_status lipar_model_load(const lipar_model_options *o, lipar_model **out) {
    *out = NULL;
    lipar_model *m = calloc(1, sizeof *m);
    if (!m) return (lipar_status)lp_fail(LP_ERR_NOMEM, "out of memory");
    lp_status s = lp_backend_create(o->backend ? o->backend : "cpu", o->threads, &m->be);
    if (s == LP_OK) {
        const char *kind = o->vae_kind ? o->vae_kind : "taehv";
        if (!strcmp(kind, "taehv")) m->vae_kind = LP_VAE_TAEHV;
        else if (!strcmp(kind, "wan")) m->vae_kind = LP_VAE_WAN;
        else s = lp_fail(LP_ERR_ARG, "unknown VAE kind '%s' (taehv or wan)", kind);
    }
    if (s == LP_OK) {
        m->demo = o->dit_path == NULL;
        if (m->demo && (o->vae_path || o->text_encoder_path || o->prompt_embedding))
            s = lp_fail(LP_ERR_ARG, "VAE or text weights were given without DiT weights");
        else if (m->demo && m->vae_kind != LP_VAE_TAEHV)
            s = lp_fail(LP_ERR_ARG, "the demonstration model has a TAEHV only");
        else s = m->demo ? load_demo(m) : load_files(m, o);
    }
    if (s != LP_OK) {
        lipar_model_free(m);
        return (lipar_status)s;
    }
    *out = m;
    return LIPAR_OK;
}

void lipar_model_free(lipar_model *m) {
    if (!m) return;
    lp_text_free(m->text);
    lp_taehv_free(m->taehv);
    lp_wan_vae_free(m->wan);
    lp_dit_free(m->dit);
    lp_tensor_file_close(m->vae_file);
    lp_tensor_file_close(m->dit_file);
    lp_backend_destroy(m->be);
    free(m);
}

int lipar_model_is_demo(const lipar_model *m) { return m->demo; }
const char *lipar_model_describe(const lipar_model *m) { return m->description; }
