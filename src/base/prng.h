/* Counter-based Gaussian noise: Philox-4x32-10 keyed by the seed, with the
 * counter (stream, index). Any element of any stream can be generated alone, so
 * a run is reproducible and a chunk can be regenerated without replaying the
 * ones before it. Streams are chosen by the caller, e.g. stream = chunk * 64 +
 * step. Normals come from Box-Muller over pairs (element 2i and 2i+1 share one
 * Philox output). */
#ifndef LP_PRNG_H
#define LP_PRNG_H

#include <stddef.h>
#include <stdint.h>

/* Four 32-bit random words for counter (stream, block) under seed. */
void lp_philox4x32(uint64_t seed, uint64_t stream, uint64_t block, uint32_t out[4]);
/* Standard normal for element index of stream. */
float lp_prng_normal(uint64_t seed, uint64_t stream, uint64_t index);
/* dst[i] = lp_prng_normal(seed, stream, first + i) for i < n. */
void lp_prng_fill_normal(uint64_t seed, uint64_t stream, uint64_t first, float *dst, size_t n);

#endif
