/* The CPU implementations behind the lp_backend table (see backend.h for each
 * op's contract). Declared here so that tests can call them directly. */
#ifndef LP_CPU_OPS_H
#define LP_CPU_OPS_H

#include "../backend.h"

typedef struct {
    float *scratch; /* weight conversion buffer for linear */
    size_t scratch_len;
    float *scores;  /* attention score block */
    size_t scores_len;
    float *conv_scratch; /* conv2d: im2col bands / phase weights (conv_ops.c) */
    size_t conv_scratch_len;
} lp_cpu_state;

lp_status lp_cpu_linear(const lp_backend *be, void *y, const void *x, int64_t M, const lp_tensor *W,
                        const lp_tensor *b, unsigned flags);
/* The plain row ops below are not in the table; the table's composite ops
 * (fused.c) are made of them, and other CPU-only models call them directly. */
void lp_cpu_layer_norm(const lp_backend *be, float *y, const float *x, int64_t rows, int64_t dim, const lp_tensor *w,
                       const lp_tensor *b, float eps);
void lp_cpu_rms_norm(const lp_backend *be, float *x, int64_t rows, int64_t dim, const lp_tensor *w, float eps);
void lp_cpu_modulate(const lp_backend *be, float *x, int64_t rows, int64_t dim, const float *shift,
                     const float *scale);
void lp_cpu_gated_add(const lp_backend *be, float *x, const float *y, int64_t rows, int64_t dim, const float *gate);
void lp_cpu_gelu_tanh(const lp_backend *be, float *x, int64_t n);
void lp_cpu_silu(const lp_backend *be, float *x, int64_t n);
void lp_cpu_rope3d(const lp_backend *be, float *x, int64_t rows, int heads, int head_dim, const int32_t *pos);
/* kv_store for f32 KV-cache rows: a copy of the source rows, each rotated as
 * lp_cpu_rope3d does when pos is given. */
lp_status lp_cpu_kv_store(const lp_backend *be, void *cache_rows, const int32_t *dst_idx, const float *src,
                          const void *saved, const int32_t *src_idx, int64_t rows, int heads, int head_dim,
                          const int32_t *pos);
lp_status lp_cpu_attention(const lp_backend *be, void *out, const void *q, int64_t Lq, int heads, int head_dim,
                           const lp_kv_range *ranges, int nranges, float scale);
void lp_cpu_norm_modulate(const lp_backend *be, void *y, const float *x, int64_t dim, const lp_tensor *w,
                          const lp_tensor *b, float eps, const lp_segments *seg, const float *shift,
                          const float *scale, int64_t stride);
void lp_cpu_rms_norm_rope(const lp_backend *be, void *y, int y_act, const float *x, int64_t rows, int heads,
                          int head_dim, const lp_tensor *w, float eps, const int32_t *pos);
void lp_cpu_residual_norm_modulate(const lp_backend *be, float *x, const float *y, const float *gate,
                                   int64_t gate_stride, void *xn, int64_t dim, const lp_tensor *w, const lp_tensor *b,
                                   float eps, const lp_segments *seg, const float *shift, const float *scale,
                                   int64_t stride);
/* In-place softmax of each row of s [rows, cols] (rows on pool): subtract
 * the row max, expf, sum in double, scale by the f32 inverse of the sum.
 * Shared by attention and the VAE's attention (conv3d.c). */
void lp_cpu_softmax_rows(lp_pool *pool, float *s, int64_t rows, int64_t cols);

void *lp_cpu_alloc(const lp_backend *be, size_t bytes);
void lp_cpu_release(const lp_backend *be, void *p);
lp_status lp_cpu_copy(const lp_backend *be, void *dst, const void *src, size_t bytes);
lp_status lp_cpu_patchify(const lp_backend *be, float *tokens, const float *x, const int32_t *idx, int64_t n, int C,
                          int H, int W);
lp_status lp_cpu_unpatchify(const lp_backend *be, float *x, const float *tokens, const int32_t *idx, int64_t n, int C,
                            int H, int W);
void lp_cpu_add(const lp_backend *be, float *y, const float *a, const float *b, int64_t n);
lp_status lp_cpu_clear(const lp_backend *be, void *p, size_t bytes);
void lp_cpu_flow_x0(const lp_backend *be, float *x0, const float *xt, const float *v, float sigma, int64_t n);
void lp_cpu_flow_renoise(const lp_backend *be, float *x, const float *x0, const float *eps, float sigma, int64_t n);
lp_status lp_cpu_copy_patches(const lp_backend *be, float *dst, const float *src, const uint8_t *keep, int kept, int C,
                              int H, int W);
lp_status lp_cpu_conv2d(const lp_backend *be, float *out, const lp_conv2d_input *in, const lp_tensor *w,
                        const lp_tensor *b, int stride, unsigned flags);
void lp_cpu_relu(const lp_backend *be, float *x, int64_t n);
void lp_cpu_tanh_clamp(const lp_backend *be, float *y, const float *x, int64_t n);
void lp_cpu_clamp01(const lp_backend *be, float *y, const float *x, int64_t n);
lp_status lp_cpu_conv3d(const lp_backend *be, float *out, const float *const *in, int n_in, const lp_tensor *w,
                        const lp_tensor *b, const lp_conv3d_geom *g);
void lp_cpu_channel_rms_norm(const lp_backend *be, float *y, const float *x, int64_t frames, int c, int64_t n,
                             const lp_tensor *gamma);
void lp_cpu_upsample2x(const lp_backend *be, float *out, const float *in, int c, int h, int w);
lp_status lp_cpu_spatial_attention(const lp_backend *be, float *out, const float *q, const float *k, const float *v,
                                   int c, int64_t n);
/* the keep-mask ops: mask_ops.c */
void lp_cpu_mask_distance(const lp_backend *be, float *out, const float *a, const float *b, int H, int W,
                          int distance);
void lp_cpu_mask_median(const lp_backend *be, float *out, const float *p, const float *c, const float *n, int h,
                        int w);
void lp_cpu_mask_gauss(const lp_backend *be, float *out, const float *p, const float *c, int h, int w,
                       const float *wt);
void lp_cpu_mask_threshold(const lp_backend *be, uint8_t *out, const float *in, int64_t n, float tau);
void lp_cpu_mask_or(const lp_backend *be, uint8_t *dst, const uint8_t *src, int64_t n);
void lp_cpu_mask_majority(const lp_backend *be, uint8_t *out, const uint8_t *p, const uint8_t *c, const uint8_t *n,
                          int h, int w);
void lp_cpu_mask_open_close(const lp_backend *be, uint8_t *out, const uint8_t *in, uint8_t *tmp, int h, int w);
void lp_cpu_mask_dilate(const lp_backend *be, uint8_t *out, const uint8_t *p, const uint8_t *c, const uint8_t *n,
                        int h, int w);
void lp_cpu_rgb24_to_planar(const lp_backend *be, float *y, const uint8_t *rgb, int64_t frames, int64_t pixels);
void lp_cpu_planar_to_rgb24(const lp_backend *be, uint8_t *rgb, const float *x, int64_t frames, int64_t pixels);
void lp_cpu_synchronize(const lp_backend *be);
size_t lp_cpu_memory_in_use(const lp_backend *be);

/* Converts n elements of a float tensor starting at element off into dst,
 * in parallel on be's pool. */
lp_status lp_cpu_to_f32(const lp_backend *be, const lp_tensor *t, int64_t off, int64_t n, float *dst);
/* Grows a scratch buffer to at least n floats. */
lp_status lp_cpu_reserve(float **buf, size_t *len, size_t n);

#endif
