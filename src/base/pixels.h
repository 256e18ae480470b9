/* The one mapping between 8-bit RGB samples and the [0, 1] floats the VAEs
 * take and give, shared by the video readers/writers and the backends' pixel
 * ops so that every path rounds identically (the CUDA kernels in
 * src/backend/cuda/pixels.cu spell out the same two functions). */
#ifndef LP_PIXELS_H
#define LP_PIXELS_H

#include <stdint.h>

/* byte b -> b / 255 */
static inline float lp_byte_to_unit(uint8_t b) { return (float)b / 255.0f; }

/* [0, 1] -> byte: NaN and v <= 0 -> 0, v >= 1 -> 255, else v·255 + 0.5 truncated */
static inline uint8_t lp_unit_to_byte(float v) {
    if (!(v > 0.0f)) v = 0.0f;
    if (v > 1.0f) v = 1.0f;
    return (uint8_t)(v * 255.0f + 0.5f);
}

#endif
