#include "alternatives.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The 4·C values of patch (f, y, x) of latents [F, C, H, W]. */
static void patch_vector(const float *lat, int C, int H, int W, int f, int y, int x, float *v) {
    int64_t HW = (int64_t)H * W;
    const float *base = lat + (int64_t)f * C * HW;
    for (int c = 0; c < C; c++)
        for (int q = 0; q < 2; q++)
            for (int r = 0; r < 2; r++) v[c * 4 + q * 2 + r] = base[c * HW + (int64_t)(2 * y + q) * W + 2 * x + r];
}

typedef struct {
    double score;
    int32_t index;
} scored;

static int by_score(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? -1 : 1;
    return x->index - y->index; /* deterministic order on ties */
}

static lp_status check_args(int F, int C, int H, int W, double r) {
    if (F <= 0 || C <= 0 || H <= 0 || W <= 0 || H % 2 || W % 2)
        return lp_fail(LP_ERR_SHAPE, "token reduction: latents [%d, %d, %d, %d] (H and W must be even)", F, C, H, W);
    if (!(r >= 0.0 && r < 1.0)) return lp_fail(LP_ERR_ARG, "token reduction: pruned fraction %g is not in [0, 1)", r);
    if (C > 64) return lp_fail(LP_ERR_UNSUPPORTED, "token reduction: %d latent channels (at most 64)", C);
    return LP_OK;
}

lp_status lp_importance_mask(const float *latents, int F, int C, int H, int W, double r, int first_is_video_start,
                             uint8_t *keep) {
    LP_TRY(check_args(F, C, H, W, r));
    int h = H / 2, w = W / 2, hw = h * w;
    scored *s = malloc((size_t)hw * sizeof *s);
    if (!s) return lp_fail(LP_ERR_NOMEM, "out of memory");
    float v[256];
    int drop = (int)floor(r * hw);
    for (int f = 0; f < F; f++) {
        uint8_t *k = keep + (int64_t)f * hw;
        memset(k, 1, (size_t)hw);
        if (f == 0 && first_is_video_start) continue;
        for (int i = 0; i < hw; i++) {
            patch_vector(latents, C, H, W, f, i / w, i % w, v);
            double n = 0;
            for (int j = 0; j < 4 * C; j++) n += (double)v[j] * v[j];
            s[i] = (scored){sqrt(n), i};
        }
        qsort(s, (size_t)hw, sizeof *s, by_score);
        for (int i = 0; i < drop; i++) k[s[i].index] = 0;
    }
    free(s);
    return LP_OK;
}

lp_status lp_tome_plan(const float *latents, int F, int C, int H, int W, double r, int32_t *merge_dst) {
    LP_TRY(check_args(F, C, H, W, r));
    int h = H / 2, w = W / 2, hw = h * w, N = F * hw, D = 4 * C;
    float *unit = malloc((size_t)N * (size_t)D * sizeof *unit); /* unit-norm patch vectors */
    scored *best = malloc((size_t)N * sizeof *best);
    int32_t *match = malloc((size_t)N * sizeof *match);
    if (!unit || !best || !match) {
        free(unit);
        free(best);
        free(match);
        return lp_fail(LP_ERR_NOMEM, "out of memory");
    }
    for (int t = 0; t < N; t++) {
        float *u = unit + (int64_t)t * D;
        patch_vector(latents, C, H, W, t / hw, (t % hw) / w, t % w, u);
        double n = 0;
        for (int j = 0; j < D; j++) n += (double)u[j] * u[j];
        float inv = (float)(1.0 / fmax(sqrt(n), 1e-8));
        for (int j = 0; j < D; j++) u[j] *= inv;
        merge_dst[t] = -1;
    }
    /* sources: the checkerboard cells (y + x odd); destinations: the others */
    int na = 0;
    for (int t = 0; t < N; t++) {
        int y = (t % hw) / w, x = t % w;
        if (!((y + x) & 1)) continue;
        double sim = -2;
        int32_t arg = -1;
        for (int f = 0; f < F; f++)
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int yy = y + dy, xx = x + dx;
                    if (yy < 0 || yy >= h || xx < 0 || xx >= w || ((yy + xx) & 1)) continue; /* destinations only */
                    int32_t b = f * hw + yy * w + xx;
                    const float *ua = unit + (int64_t)t * D, *ub = unit + (int64_t)b * D;
                    double d = 0;
                    for (int j = 0; j < D; j++) d += (double)ua[j] * ub[j];
                    if (d > sim) {
                        sim = d;
                        arg = b;
                    }
                }
        if (arg < 0) continue;
        best[na] = (scored){-sim, t}; /* ascending order = most similar first */
        match[t] = arg;
        na++;
    }
    qsort(best, (size_t)na, sizeof *best, by_score);
    int merge = (int)floor(r * N);
    if (merge > na) merge = na;
    for (int i = 0; i < merge; i++) merge_dst[best[i].index] = match[best[i].index];
    free(unit);
    free(best);
    free(match);
    return LP_OK;
}
