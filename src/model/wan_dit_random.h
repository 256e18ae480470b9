/* Random weights for a causal Wan DiT of any size, under the upstream names
 * (no prefix), generated deterministically from a seed: for benchmarks at the
 * real width, tests of other sizes, and the embedded demonstration model.
 * Linear weights are uniform in ±1/√fan_in (PyTorch's default init scale),
 * biases ±0.02, norm weights 1 ± 0.1, modulations ±0.1. */
#ifndef LP_WAN_DIT_RANDOM_H
#define LP_WAN_DIT_RANDOM_H

#include "../io/tensor_builder.h"
#include "wan_dit.h"

/* Uses cfg's dim, ffn_dim, num_layers, in_dim, out_dim, text_dim, freq_dim;
 * weights in dtype (F32/F16/BF16), small vectors in F32. */
lp_status lp_dit_random_weights(const lp_dit_config *cfg, lp_dtype dtype, uint64_t seed, lp_tensor_file **out);

#endif
