/* The table's composite DiT ops on the CPU (backend.h: norm_modulate,
 * rms_norm_rope, residual_norm_modulate): each is the sequence of the plain row ops
 * it stands for, in that order, so the CPU results are exactly those of the
 * unfused forward (the CPU's activation type is f32). */
#include <string.h>

#include "cpu_ops.h"

void lp_cpu_norm_modulate(const lp_backend *be, void *y, const float *x, int64_t dim, const lp_tensor *w,
                          const lp_tensor *b, float eps, const lp_segments *seg, const float *shift,
                          const float *scale, int64_t stride) {
    float *out = y;
    lp_cpu_layer_norm(be, out, x, seg->start[seg->n], dim, w, b, eps);
    if (!shift) return;
    for (int f = 0; f < seg->n; f++)
        lp_cpu_modulate(be, out + seg->start[f] * dim, seg->start[f + 1] - seg->start[f], dim, shift + f * stride,
                        scale + f * stride);
}

void lp_cpu_rms_norm_rope(const lp_backend *be, void *y, int y_act, const float *x, int64_t rows, int heads,
                          int head_dim, const lp_tensor *w, float eps, const int32_t *pos) {
    (void)y_act; /* the activation type is f32 */
    float *out = y;
    int64_t dim = (int64_t)heads * head_dim;
    if (out != x) memcpy(out, x, (size_t)(rows * dim) * sizeof *out);
    lp_cpu_rms_norm(be, out, rows, dim, w, eps);
    if (pos) lp_cpu_rope3d(be, out, rows, heads, head_dim, pos);
}

/* x += y·gate per segment (gate NULL: x += y). */
static void gated_residual(const lp_backend *be, float *x, const float *y, int64_t dim, const lp_segments *seg,
                           const float *gate, int64_t stride) {
    if (!gate) {
        lp_cpu_gated_add(be, x, y, seg->start[seg->n], dim, NULL);
        return;
    }
    for (int f = 0; f < seg->n; f++) {
        int64_t r0 = seg->start[f];
        lp_cpu_gated_add(be, x + r0 * dim, y + r0 * dim, seg->start[f + 1] - r0, dim, gate + f * stride);
    }
}

void lp_cpu_residual_norm_modulate(const lp_backend *be, float *x, const float *y, const float *gate,
                                   int64_t gate_stride, void *xn, int64_t dim, const lp_tensor *w, const lp_tensor *b,
                                   float eps, const lp_segments *seg, const float *shift, const float *scale,
                                   int64_t stride) {
    gated_residual(be, x, y, dim, seg, gate, gate_stride);
    lp_cpu_norm_modulate(be, xn, x, dim, w, b, eps, seg, shift, scale, stride);
}
