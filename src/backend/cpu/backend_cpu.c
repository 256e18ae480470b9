/* The CPU backend table. */
#include <cblas.h>
#include <stdlib.h>

#include "cpu_ops.h"

lp_status lp_cpu_reserve(float **buf, size_t *len, size_t n) {
    if (*len >= n) return LP_OK;
    float *nb = malloc(n * sizeof *nb);
    if (!nb) return lp_fail(LP_ERR_NOMEM, "out of memory reserving %zu floats of CPU scratch", n);
    free(*buf);
    *buf = nb;
    *len = n;
    return LP_OK;
}

static void cpu_destroy(lp_backend *be) {
    lp_cpu_state *st = be->impl;
    if (st) {
        free(st->scratch);
        free(st->scores);
        free(st->conv_scratch);
        free(st);
    }
    lp_pool_destroy(be->pool);
    free(be);
}

lp_status lp_backend_cpu_create(int nthreads, lp_backend **out) {
    *out = NULL;
    lp_backend *be = calloc(1, sizeof *be);
    lp_cpu_state *st = calloc(1, sizeof *st);
    if (!be || !st) {
        free(be);
        free(st);
        return lp_fail(LP_ERR_NOMEM, "out of memory creating the CPU backend");
    }
    lp_status s = lp_pool_create(nthreads, &be->pool);
    if (s != LP_OK) {
        free(be);
        free(st);
        return s;
    }
    openblas_set_num_threads(lp_pool_size(be->pool));
    be->name = "cpu";
    be->impl = st;
    be->kv_bf16 = 0;
    be->act_bf16 = 0;
    be->linear = lp_cpu_linear;
    be->norm_modulate = lp_cpu_norm_modulate;
    be->rms_norm_rope = lp_cpu_rms_norm_rope;
    be->residual_norm_modulate = lp_cpu_residual_norm_modulate;
    be->silu = lp_cpu_silu;
    be->kv_store = lp_cpu_kv_store;
    be->attention = lp_cpu_attention;
    be->alloc = lp_cpu_alloc;
    be->release = lp_cpu_release;
    be->upload = lp_cpu_copy;
    be->download = lp_cpu_copy;
    be->copy = lp_cpu_copy;
    be->patchify = lp_cpu_patchify;
    be->unpatchify = lp_cpu_unpatchify;
    be->add = lp_cpu_add;
    be->linear_batch = lp_linear_batch_serial;
    be->clear = lp_cpu_clear;
    be->flow_x0 = lp_cpu_flow_x0;
    be->flow_renoise = lp_cpu_flow_renoise;
    be->copy_patches = lp_cpu_copy_patches;
    be->synchronize = lp_cpu_synchronize;
    be->memory_in_use = lp_cpu_memory_in_use;
    be->destroy = cpu_destroy;
    be->conv2d = lp_cpu_conv2d;
    be->relu = lp_cpu_relu;
    be->tanh_clamp = lp_cpu_tanh_clamp;
    be->clamp01 = lp_cpu_clamp01;
    be->conv3d = lp_cpu_conv3d;
    be->channel_rms_norm = lp_cpu_channel_rms_norm;
    be->upsample2x = lp_cpu_upsample2x;
    be->spatial_attention = lp_cpu_spatial_attention;
    be->mask_distance = lp_cpu_mask_distance;
    be->mask_median = lp_cpu_mask_median;
    be->mask_gauss = lp_cpu_mask_gauss;
    be->mask_threshold = lp_cpu_mask_threshold;
    be->mask_or = lp_cpu_mask_or;
    be->mask_majority = lp_cpu_mask_majority;
    be->mask_open_close = lp_cpu_mask_open_close;
    be->mask_dilate = lp_cpu_mask_dilate;
    be->rgb24_to_planar = lp_cpu_rgb24_to_planar;
    be->planar_to_rgb24 = lp_cpu_planar_to_rgb24;
    *out = be;
    return LP_OK;
}
