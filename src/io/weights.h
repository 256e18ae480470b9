/* Weight files in every published layout (spec/CHECKPOINTS.md), seen under the
 * ORIGINAL upstream tensor names that the model loaders look up: Wan2.1
 * wan/modules/model.py (DiT), wan/modules/vae.py (Wan VAE), taehv (TAEHV) and
 * wan/modules/t5.py (umT5).
 *
 * Layouts recognised, for every component:
 *   - upstream names under one of the prefixes, tried in this order: none,
 *     "w." (golden files), "model.", "model.diffusion_model.",
 *     "diffusion_model.", "generator_ema.model.", "generator_ema.",
 *     "generator.model.", "generator.", "vae." (Self-Forcing checkpoints hold
 *     both generator and generator_ema: the EMA copy wins);
 *   - for the DiT and the Wan VAE, the Hugging Face diffusers names
 *     (WanTransformer3DModel, AutoencoderKLWan) under one of the same
 *     prefixes. Every diffusers tensor of these two models has the upstream
 *     shape and element order, so the mapped tensors are zero-copy views.
 * A diffusers file of another architecture (image conditioning, the Wan2.2
 * VAE, ...) holds tensors the maps do not know and is refused. */
#ifndef LP_WEIGHTS_H
#define LP_WEIGHTS_H

#include "tensor_file.h"

typedef enum {
    LP_COMPONENT_DIT,     /* causal Wan DiT (lp_dit_load) */
    LP_COMPONENT_WAN_VAE, /* Wan2.1 VAE (lp_wan_vae_load) */
    LP_COMPONENT_TAEHV,   /* TAEHV (lp_taehv_load) */
    LP_COMPONENT_UMT5,    /* umT5 encoder (lp_umt5_load) */
} lp_component;

/* Opens path (safetensors or PyTorch zip) and finds the weights of kind in it.
 * On success the loader of kind takes (*out, *prefix): the tensors named
 * *prefix + upstream name in *out are the weights. For upstream names *out is
 * the opened file and *prefix its prefix; for diffusers names *out is an
 * in-memory file of views named upstream (its path reads "<path> [diffusers
 * layout]", so that the loaders' messages show the mapping), which keeps the
 * opened file open, and *prefix is "". Either way the caller closes *out with
 * lp_tensor_file_close once the model is freed. *prefix is static storage.
 * On failure *out is NULL and the message names the file: LP_ERR_MISSING when
 * no layout fits (listing what was looked for) or a diffusers tensor is
 * missing, LP_ERR_UNSUPPORTED for a diffusers tensor the map does not know or
 * a non-float dtype (naming the diffusers and the upstream name), or the
 * errors of lp_tensor_file_open. Shapes are checked by the loaders. */
lp_status lp_weights_open(const char *path, lp_component kind, lp_tensor_file **out, const char **prefix);

/* The same for a file src that the caller keeps open. *view is NULL when src
 * holds upstream names (load src with *prefix); otherwise *view is a new
 * in-memory file of views into src, valid while src stays open, that the
 * caller closes with lp_tensor_file_close (which leaves src open). Errors as
 * for lp_weights_open; on failure *view and *prefix are NULL. */
lp_status lp_weights_map(const lp_tensor_file *src, lp_component kind, lp_tensor_file **view, const char **prefix);

#endif
