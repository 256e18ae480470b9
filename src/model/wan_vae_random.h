/* Random weights for the Wan 2.1 VAE (spec/VAE.md, "Wan VAE") of any
 * configuration, under the upstream names (no prefix, as in Wan2.1_VAE.pth),
 * deterministic from a seed: for benchmarks at the published size (dim 96,
 * ~127M parameters) without the checkpoint, and tests of small sizes.
 * Every tensor lp_wan_vae_load reads is made, in f32 (the loader keeps f32
 * copies anyway): convolution weights uniform in ±√3/√fan_in (variance
 * 1/fan_in, so a convolution keeps the mean square of its input), biases
 * ±0.02, RMS-norm gammas 1 ± 0.1. With the RMS norm in front of every
 * residual branch and head, activations stay O(1) through the whole stack. */
#ifndef LP_WAN_VAE_RANDOM_H
#define LP_WAN_VAE_RANDOM_H

#include <stdint.h>

#include "../io/tensor_builder.h"
#include "wan_vae.h"

/* Uses c's dim, z_dim, nstages, dim_mult, num_res_blocks and temporal_down
 * (the loader itself accepts only z_dim 16 and exactly two temporal
 * downsamples). Fails with LP_ERR_ARG on sizes out of range. */
lp_status lp_wan_vae_random_weights(const lp_wan_vae_config *c, uint64_t seed, lp_tensor_file **out);

#endif
