/* Shared set-up of the golden checks: where a model's weights come from, and
 * for the DiT-based checks (sf_dit_t2v, lipar_edit_output) the backend, the
 * weights (from the golden file's w.* or --weights), the model configured from
 * the metadata, a KV cache and the prompt. */
#ifndef LP_CHECK_COMMON_H
#define LP_CHECK_COMMON_H

#include "../src/model/wan_dit.h"
#include "../src/pipeline/denoise.h"
#include "check.h"

/* The weights of a model checked against golden: the file of --weights when
 * given (opened into *opened, which the caller closes; prefix "w." when it
 * holds the tensor probe, else ""), otherwise golden itself with prefix "w."
 * (*opened NULL). */
lp_status lp_check_weights_source(const lp_check_ctx *c, const lp_tensor_file *golden, const char *probe,
                                  lp_tensor_file **opened, const lp_tensor_file **src, const char **prefix);

typedef struct {
    lp_backend *be;
    lp_tensor_file *weights_file; /* opened from --weights, else NULL */
    lp_dit *dit;
    lp_dit_cache *cache;
    int frames_per_chunk;
    int latent_h, latent_w;
} lp_dit_setup;

/* w_source: the file holding w.* and the metadata of the model (the golden
 * file itself, or an inputs file); cache settings are given by the caller. */
lp_status lp_check_dit_model(lp_check_ctx *c, const lp_tensor_file *w_source, lp_dit_setup *su);
/* The sf_dit_t2v set-up: model + cache from the metadata + prompt in.context. */
lp_status lp_check_dit_setup(lp_check_ctx *c, const lp_tensor_file *g, lp_dit_setup *su);
/* Builds the cache per cc and sets the prompt in.context of src. */
lp_status lp_check_dit_cache(lp_dit_setup *su, const lp_tensor_file *src, const lp_dit_cache_config *cc);
void lp_check_dit_teardown(lp_dit_setup *su);
/* The plan from metadata denoising_step_list + timestep_shift, cross-checked
 * against warped_timesteps when present. */
lp_status lp_check_denoise_plan(const lp_tensor_file *g, float context_t, lp_denoise_plan *plan);

#endif
