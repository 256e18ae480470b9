/* Random weights in the TAEHV Wan-2.1 topology (spec/VAE.md) at any widths,
 * under the upstream names (no prefix), deterministic from a seed: the
 * embedded demonstration model and tests of other widths. */
#ifndef LP_TAEHV_RANDOM_H
#define LP_TAEHV_RANDOM_H

#include "../io/tensor_builder.h"

typedef struct {
    int latent_channels; /* 16 */
    int enc_width;       /* 64 (at least 3 with pooling_encoder) */
    int dec_width[3];    /* 256, 128, 64 (the last stage's output width too) */
    /* Nonzero: instead of random weights, the encoder is set to average each
     * 8×8 block of pixels over the 4 frames of a latent frame (the MemBlocks
     * pass their input through) and to map the three mean colours to the
     * latent channels with a fixed mixing of gain pooling_gain around 0.5 grey,
     * so that latent differences follow pixel changes as a real encoder's do
     * (the keep-mask then behaves meaningfully on real clips). The decoder
     * stays random. */
    int pooling_encoder;
    float pooling_gain;
} lp_taehv_random_config;

lp_status lp_taehv_random_weights(const lp_taehv_random_config *c, uint64_t seed, lp_tensor_file **out);

#endif
