/* lipar_model: loading the weights a session needs and checking that they fit
 * together. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/half.h"
#include "../io/weights.h"
#include "../model/taehv_random.h"
#include "../model/wan_vae_random.h"
#include "../model/wan_dit_random.h"
#include "model_bundle.h"

const char *lipar_last_error(void) { return lp_last_error(); }

void lipar_model_options_default(lipar_model_options *o) {
    memset(o, 0, sizeof *o);
    o->vae_kind = "taehv";
}

/* The embedded demonstration model: the DiT, TAEHV (or the Wan VAE) and umT5
 * topologies at small widths, or the published ones (full), with
 * deterministic random weights. */
static lp_status load_demo(lipar_model *m, int full) {
    lp_dit_config small = {.dim = 128, .ffn_dim = 256, .num_layers = 2, .in_dim = 16, .out_dim = 16, .text_dim = 64,
                           .freq_dim = 256};
    lp_dit_config real = {.dim = 1536, .ffn_dim = 8960, .num_layers = 30, .in_dim = 16, .out_dim = 16, .text_dim = 4096,
                          .freq_dim = 256};
    const lp_dit_config *dc = full ? &real : &small;
    LP_TRY(lp_dit_random_weights(dc, full ? LP_BF16 : LP_F32, 20260101, &m->dit_file));
    LP_TRY(lp_dit_load(m->dit_file, "", full ? 12 : 2, full ? 512 : 64, m->be, &m->dit));
    const char *vae;
    if (m->vae_kind == LP_VAE_WAN) {
        /* the published configuration (dim 96), or a narrow one; both
         * random (the keep-mask then follows the random encoder's features) */
        lp_wan_vae_config wc = {.dim = full ? 96 : 8, .z_dim = 16, .nstages = 4, .dim_mult = {1, 2, 4, 4},
                                .num_res_blocks = full ? 2 : 1, .temporal_down = {0, 1, 1}};
        LP_TRY(lp_wan_vae_random_weights(&wc, 20260103, &m->vae_file));
        LP_TRY(lp_wan_vae_load(m->vae_file, "", &m->wan));
        lp_tensor_file_close(m->vae_file); /* the model keeps its own copies */
        m->vae_file = NULL;
        vae = full ? "the Wan VAE (dim 96)" : "a Wan VAE of dim 8";
    } else {
        /* a TAEHV whose encoder averages 8×8×4 pixel blocks (gain 4 gives
         * latents of about the spread of real Wan latents on real clips), so
         * that the keep-mask follows what moves; its decoder is random */
        lp_taehv_random_config tc = {.latent_channels = 16, .enc_width = full ? 64 : 16,
                                     .dec_width = {full ? 256 : 64, full ? 128 : 32, full ? 64 : 16},
                                     .pooling_encoder = 1, .pooling_gain = 4.0f};
        LP_TRY(lp_taehv_random_weights(&tc, 20260102, &m->vae_file));
        LP_TRY(lp_taehv_load(m->vae_file, "", m->enc_be, &m->taehv));
        LP_TRY(lp_taehv_load(m->vae_file, "", m->vae_be, &m->taehv_dec));
        vae = full ? "TAEHV with a pooling encoder and a 256/128/64 decoder"
                   : "TAEHV with a pooling encoder and a 16/64/32/16 decoder";
    }
    LP_TRY(lp_text_open_demo(dc->text_dim, lp_dit_get_config(m->dit)->text_len, m->be->pool, &m->text));
    if (full)
        snprintf(m->description, sizeof m->description,
                 "random weights at the published sizes (DiT 30x1536, %s, umT5 2x4096)", vae);
    else
        snprintf(m->description, sizeof m->description,
                 "embedded demonstration model (random weights: DiT 2x128, %s, umT5 2x64)", vae);
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
        LP_TRY(lp_taehv_load(m->vae_file, prefix, m->enc_be, &m->taehv));
        LP_TRY(lp_taehv_load(m->vae_file, prefix, m->vae_be, &m->taehv_dec));
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
    const char *backend = o->backend ? o->backend : "cpu";
    /* the DiT is the pipeline's critical path: its work goes first */
    lp_status s = lp_backend_create_priority(backend, o->threads, &m->be);
    if (s == LP_OK) s = lp_backend_create(backend, o->threads, &m->enc_be);
    if (s == LP_OK) s = lp_backend_create(backend, o->threads, &m->vae_be);
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
        else s = m->demo ? load_demo(m, o->demo_full_size) : load_files(m, o);
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
    lp_taehv_free(m->taehv_dec);
    lp_wan_vae_free(m->wan);
    lp_dit_free(m->dit);
    lp_tensor_file_close(m->vae_file);
    lp_tensor_file_close(m->dit_file);
    lp_backend_destroy(m->be);
    lp_backend_destroy(m->enc_be);
    lp_backend_destroy(m->vae_be);
    free(m);
}

int lipar_model_is_demo(const lipar_model *m) { return m->demo; }
const char *lipar_model_describe(const lipar_model *m) { return m->description; }
