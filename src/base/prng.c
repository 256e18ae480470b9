#include "prng.h"

#include <math.h>

void lp_philox4x32(uint64_t seed, uint64_t stream, uint64_t block, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)block, c1 = (uint32_t)(block >> 32), c2 = (uint32_t)stream, c3 = (uint32_t)(stream >> 32);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* Box-Muller on two 64-bit uniforms in (0, 1]; returns the pair. */
static void normal_pair(uint64_t seed, uint64_t stream, uint64_t pair, float *a, float *b) {
    uint32_t w[4];
    lp_philox4x32(seed, stream, pair, w);
    double u1 = ((double)(((uint64_t)w[0] << 21) ^ w[1]) + 1.0) / 9007199254740993.0; /* (0,1] with 53 bits */
    double u2 = (double)(((uint64_t)w[2] << 21) ^ w[3]) / 9007199254740992.0;
    u1 = u1 > 1.0 ? 1.0 : u1;
    double r = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
    *a = (float)(r * cos(th));
    *b = (float)(r * sin(th));
}

float lp_prng_normal(uint64_t seed, uint64_t stream, uint64_t index) {
    float a, b;
    normal_pair(seed, stream, index >> 1, &a, &b);
    return (index & 1) ? b : a;
}

void lp_prng_fill_normal(uint64_t seed, uint64_t stream, uint64_t first, float *dst, size_t n) {
    size_t i = 0;
    if (n && (first & 1)) dst[i++] = lp_prng_normal(seed, stream, first);
    for (; i + 1 < n; i += 2) normal_pair(seed, stream, (first + i) >> 1, &dst[i], &dst[i + 1]);
    if (i < n) dst[i] = lp_prng_normal(seed, stream, first + i);
}
