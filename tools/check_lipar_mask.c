/* `lipar check` runner for kind "lipar_mask": the batch keep-mask of
 * in.latents [1, T, 16, H, W] with the file's tau / tau2 / distance, compared
 * exactly with out.keep [T, H/2, W/2] (spec/LIPAR.md §1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/prune/mask.h"
#include "check.h"

lp_status check_lipar_mask(lp_check_ctx *c, const lp_tensor_file *golden);

/* Options from the metadata: tau (required), distance (default L1_gaussian),
 * tau2 (absent or null: no drift check, like the reference's drop_param2=None). */
static lp_status read_opts(const lp_tensor_file *g, lp_mask_opts *o) {
    lp_mask_opts_default(o);
    double tau;
    LP_TRY(lp_check_meta_double(g, "tau", &tau));
    o->tau = (float)tau;
    const char *dist = lp_tensor_file_meta(g, "distance");
    if (dist) LP_TRY(lp_mask_distance_from_name(dist, &o->distance));
    const char *t2 = lp_tensor_file_meta(g, "tau2");
    o->drift = t2 && strcmp(t2, "null") && strcmp(t2, "None");
    if (o->drift) {
        double tau2;
        LP_TRY(lp_check_meta_double(g, "tau2", &tau2));
        o->tau2 = (float)tau2;
    }
    return LP_OK;
}

lp_status check_lipar_mask(lp_check_ctx *c, const lp_tensor_file *golden) {
    const char *path = lp_tensor_file_path(golden);
    lp_mask_opts o;
    LP_TRY(read_opts(golden, &o));
    const lp_tensor *lat, *ref;
    LP_TRY(lp_tensor_file_get(golden, "in.latents", &lat));
    LP_TRY(lp_tensor_file_get(golden, "out.keep", &ref));
    const int64_t want_lat[5] = {1, -1, LP_MASK_CHANNELS, -1, -1};
    LP_TRY(lp_tensor_expect(lat, path, 5, want_lat));
    if (lat->shape[1] < 1 || lat->shape[1] > 100000 || lat->shape[3] > 65536 || lat->shape[4] > 65536)
        return lp_fail(LP_ERR_SHAPE, "%s: in.latents has an unsupported size", path);
    const int T = (int)lat->shape[1], H = (int)lat->shape[3], W = (int)lat->shape[4];
    const int64_t want_keep[3] = {T, H / 2, W / 2};
    LP_TRY(lp_tensor_expect(ref, path, 3, want_keep));

    float *x;
    int64_t n;
    LP_TRY(lp_check_load_f32(golden, "in.latents", &x, &n));
    const int64_t cells = (int64_t)T * (H / 2) * (W / 2);
    uint8_t *keep = malloc((size_t)cells);
    double *per_frame = malloc((size_t)T * sizeof *per_frame);
    lp_status s = keep && per_frame ? LP_OK : lp_fail(LP_ERR_NOMEM, "%s: out of memory", path);
    double kept = 0;
    if (s == LP_OK) s = lp_mask_compute(&o, x, T, H, W, keep, per_frame, &kept);
    if (s == LP_OK) {
        const char *ref_kept = lp_tensor_file_meta(golden, "kept_fraction");
        printf("mask %s tau=%g", lp_mask_distance_name(o.distance), o.tau);
        if (o.drift) printf(" tau2=%g", o.tau2);
        else printf(" tau2=off");
        printf(" kept_fraction=%.6f (reference %s)\nkept_per_frame", kept, ref_kept ? ref_kept : "?");
        for (int t = 0; t < T; t++) printf(" %.4f", per_frame[t]);
        printf("\n");
        lp_check_compare_exact(c, ref, keep, cells);
    }
    free(x);
    free(keep);
    free(per_frame);
    return s;
}
