/* Random weights in the TAEHV Wan-2.1 topology (spec/VAE.md) at any widths,
 * under the upstream names (no prefix), deterministic from a seed: the
 * embedded demonstration model and tests of other widths. */
#ifndef LP_TAEHV_RANDOM_H
#define LP_TAEHV_RANDOM_H

#include "../io/tensor_builder.h"

typedef struct {
    int latent_channels; /* 16 */
    int enc_width;       /* 64 */
    int dec_width[3];    /* 256, 128, 64 (the last stage's output width too) */
} lp_taehv_random_config;

lp_status lp_taehv_random_weights(const lp_taehv_random_config *c, uint64_t seed, lp_tensor_file **out);

#endif
