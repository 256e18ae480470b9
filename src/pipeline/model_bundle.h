/* The weights a session edits with (internal side of lipar_model): DiT, VAE
 * (TAEHV or Wan VAE) and text encoder, loaded from files or built in memory
 * for the embedded demonstration. */
#ifndef LP_MODEL_BUNDLE_H
#define LP_MODEL_BUNDLE_H

#include "../../include/lipar.h"
#include "../backend/backend.h"
#include "../model/taehv.h"
#include "../model/wan_dit.h"
#include "../model/wan_vae.h"
#include "text.h"

typedef enum { LP_VAE_TAEHV, LP_VAE_WAN } lp_vae_kind;

struct lipar_model {
    int demo;
    lp_backend *be;                 /* DiT, text */
    lp_backend *enc_be;             /* a second instance (own stream / thread pool) for the VAE
                                       encoder, which runs beside the DiT on its own thread */
    lp_backend *vae_be;             /* a third for the VAE decoder, likewise */
    lp_tensor_file *dit_file, *vae_file;
    lp_dit *dit;
    lp_vae_kind vae_kind;
    lp_taehv *taehv;                /* on enc_be: the encoder */
    lp_taehv *taehv_dec;            /* the same weights on vae_be: the decoder */
    lp_wan_vae *wan;
    lp_text *text;
    char description[256];
};

#endif
