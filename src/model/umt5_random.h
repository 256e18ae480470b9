/* Random weights for a umT5 encoder of any size under the upstream names (no
 * prefix), deterministic from a seed: the embedded demonstration text encoder
 * and the real-size benchmark. */
#ifndef LP_UMT5_RANDOM_H
#define LP_UMT5_RANDOM_H

#include "../io/tensor_builder.h"
#include "umt5.h"

/* Uses vocab, dim, dim_attn, dim_ffn, num_heads, num_layers, num_buckets. */
lp_status lp_umt5_random_weights(const lp_umt5_config *c, lp_dtype dtype, uint64_t seed, lp_tensor_file **out);

#endif
