/* CPU benchmark of the causal Wan DiT.
 *
 *   bench_dit forward [--dim 1536 --ffn 8960 --heads 12 --layers 4 --h 60 --w 104 --dtype bf16|f32 --reps 3]
 *     one DiT forward over a chunk of 3 latent frames; achieved GFLOP/s next to
 *     the sgemm GFLOP/s of the same BLAS measured in the same run.
 *   bench_dit prune [--keep 0.30,0.60 ...same size options]
 *     time per chunk (3 steps + context pass) for `none` vs `lipar` at each kept
 *     fraction, next to the FLOP reduction predicted from the kept fraction.
 *
 * Prints one table; every figure is the median of --reps runs. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/model/wan_dit_random.h"
#include "../src/base/prng.h"
#include "../src/pipeline/edit.h"

typedef struct {
    int dim, ffn, heads, layers, h, w, reps;
    lp_dtype dtype;
    double keeps[8];
    int nkeeps;
} opts;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int die(const char *what) {
    fprintf(stderr, "bench_dit: %s: %s\n", what, lp_last_error());
    return 1;
}

/* sgemm GFLOP/s on the shape of the QKV projections of one chunk */
static double sgemm_gflops(int M, int N, int K, int reps) {
    float *a = malloc((size_t)M * K * 4), *b = malloc((size_t)N * K * 4), *c = malloc((size_t)M * N * 4);
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)N * K; i++) b[i] = (float)(i % 5) * 0.1f;
    double t[16];
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N);
        t[r] = now() - t0;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * M * N * K / median(t, reps) / 1e9;
}

typedef struct {
    lp_backend *be;
    lp_tensor_file *wf;
    lp_dit *dit;
    lp_dit_cache *cache;
} model;

static lp_status make_model(const opts *o, lp_prune_strategy strategy, model *m) {
    memset(m, 0, sizeof *m);
    lp_dit_config cfg = {.dim = o->dim, .ffn_dim = o->ffn, .num_layers = o->layers, .in_dim = 16, .out_dim = 16,
                         .text_dim = 4096, .freq_dim = 256};
    LP_TRY(lp_backend_cpu_create(0, &m->be));
    LP_TRY(lp_dit_random_weights(&cfg, o->dtype, 1234, &m->wf));
    LP_TRY(lp_dit_load(m->wf, "", o->heads, 512, m->be, &m->dit));
    lp_dit_cache_config cc;
    lp_edit_cache_defaults(strategy, 0, o->h, o->w, 3, &cc);
    LP_TRY(lp_dit_cache_create(m->dit, &cc, &m->cache));
    float *ctx = malloc(64 * 4096 * sizeof *ctx);
    if (!ctx) return lp_fail(LP_ERR_NOMEM, "out of memory");
    for (int i = 0; i < 64 * 4096; i++) ctx[i] = (float)((i * 37) % 101) / 101.0f - 0.5f;
    lp_status s = lp_dit_set_prompt(m->dit, m->cache, ctx, 64);
    free(ctx);
    return s;
}

static void free_model(model *m) {
    lp_dit_cache_free(m->cache);
    lp_dit_free(m->dit);
    lp_tensor_file_close(m->wf);
    lp_backend_destroy(m->be);
}

static float *noise_latents(int64_t n) {
    float *x = malloc((size_t)n * sizeof *x);
    if (x) lp_prng_fill_normal(7, 0, 0, x, (size_t)n);
    return x;
}

static int run_forward(const opts *o) {
    model m;
    if (make_model(o, LP_PRUNE_NONE, &m) != LP_OK) return die("model");
    int F = 3;
    int64_t n = lp_dit_latent_elems(m.dit, m.cache, F), tokens = (int64_t)F * (o->h / 2) * (o->w / 2);
    float *x = noise_latents(n), *v = malloc((size_t)n * sizeof *v);
    float ts[3] = {769.2307739f, 769.2307739f, 769.2307739f};
    double t[16];
    for (int r = 0; r < o->reps; r++) {
        lp_dit_call call = {.n_frames = F, .start_frame = 0, .timesteps = ts, .kv_policy = LP_KV_DENSE};
        double t0 = now();
        if (lp_dit_forward(m.dit, m.cache, &call, x, v) != LP_OK) return die("forward");
        t[r] = now() - t0;
    }
    double sec = median(t, o->reps);
    double flops = lp_dit_flops(lp_dit_get_config(m.dit), tokens, tokens);
    double peak = sgemm_gflops((int)tokens, o->dim, o->dim, o->reps);
    printf("| dim | layers | tokens | keys | dtype | forward s | GFLOP | GFLOP/s | sgemm GFLOP/s | ratio |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    printf("| %d | %d | %lld | %lld | %s | %.3f | %.1f | %.1f | %.1f | %.0f%% |\n", o->dim, o->layers,
           (long long)tokens, (long long)tokens, lp_dtype_name(o->dtype), sec, flops / 1e9, flops / sec / 1e9, peak,
           100.0 * flops / sec / 1e9 / peak);
    free(x);
    free(v);
    free_model(&m);
    return 0;
}

/* a mask keeping fraction k of the patches of frames 1.. (frame-0 of the chunk too) */
static void make_mask(uint8_t *keep, int64_t n, double k) {
    for (int64_t i = 0; i < n; i++) keep[i] = (double)((i * 2654435761u) % 1000003u) / 1000003.0 < k;
}

static int run_prune(const opts *o) {
    int F = 3;
    int64_t hw = (int64_t)(o->h / 2) * (o->w / 2), tokens = F * hw;
    printf("| strategy | kept | chunk s (median) | speed-up vs none | predicted (FLOPs) |\n|---|---|---|---|---|\n");
    double base = 0, base_flops = 0;
    for (int ki = -1; ki < o->nkeeps; ki++) {
        lp_prune_strategy strategy = ki < 0 ? LP_PRUNE_NONE : LP_PRUNE_LIPAR;
        double k = ki < 0 ? 1.0 : o->keeps[ki];
        model m;
        if (make_model(o, strategy, &m) != LP_OK) return die("model");
        lp_denoise_plan plan;
        int steps[3] = {400, 300, 250};
        lp_denoise_plan_init(&plan, steps, 3, 5.0f, 0.0f);
        lp_edit_state st;
        lp_edit_state_init(&st, 16, o->h, o->w);
        int64_t n = lp_dit_latent_elems(m.dit, m.cache, F);
        float *x = noise_latents(n);
        uint8_t *keep = malloc((size_t)tokens);
        make_mask(keep, tokens, k);
        lp_prng_noise pn = {99};
        double t[16];
        /* chunk 0 fills the cache (its frame 0 must be whole); then timed chunks 1.. */
        for (int64_t i = 0; i < hw; i++) keep[i] = 1;
        if (lp_edit_chunk(m.dit, m.cache, &st, strategy, &plan, 0, F, x, keep, lp_prng_noise_fn, &pn, NULL) != LP_OK)
            return die("chunk");
        make_mask(keep, tokens, k);
        for (int r = 0; r < o->reps; r++) {
            lp_edit_chunk_stats cs;
            if (lp_edit_chunk(m.dit, m.cache, &st, strategy, &plan, (r + 1) * F, F, x, keep, lp_prng_noise_fn, &pn,
                              &cs) != LP_OK)
                return die("chunk");
            t[r] = cs.dit_seconds;
        }
        double sec = median(t, o->reps);
        int64_t kept = 0;
        for (int64_t i = 0; i < tokens; i++) kept += keep[i];
        int64_t keys = 7 * hw < (o->reps + 1) * tokens ? 7 * hw : (o->reps + 1) * tokens;
        double flops = 4 * lp_dit_flops(lp_dit_get_config(m.dit), kept, keys);
        if (ki < 0) {
            base = sec;
            base_flops = flops;
        }
        printf("| %s | %.3f | %.3f | %.2fx | %.2fx |\n", lp_prune_strategy_name(strategy), (double)kept / tokens, sec,
               base / sec, base_flops / flops);
        free(x);
        free(keep);
        lp_edit_state_free(&st);
        free_model(&m);
    }
    return 0;
}

int main(int argc, char **argv) {
    opts o = {.dim = 1536, .ffn = 8960, .heads = 12, .layers = 4, .h = 60, .w = 104, .reps = 3, .dtype = LP_BF16,
              .keeps = {0.30, 0.60}, .nkeeps = 2};
    if (argc < 2 || (strcmp(argv[1], "forward") && strcmp(argv[1], "prune"))) {
        fprintf(stderr, "usage: bench_dit forward|prune [--dim N --ffn N --heads N --layers N --h N --w N --reps N "
                        "--dtype bf16|f32 --keep a,b,...]\n");
        return 2;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--dim")) o.dim = atoi(v);
        else if (!strcmp(a, "--ffn")) o.ffn = atoi(v);
        else if (!strcmp(a, "--heads")) o.heads = atoi(v);
        else if (!strcmp(a, "--layers")) o.layers = atoi(v);
        else if (!strcmp(a, "--h")) o.h = atoi(v);
        else if (!strcmp(a, "--w")) o.w = atoi(v);
        else if (!strcmp(a, "--reps")) o.reps = atoi(v) < 1 ? 1 : atoi(v) > 16 ? 16 : atoi(v);
        else if (!strcmp(a, "--dtype")) o.dtype = !strcmp(v, "f32") ? LP_F32 : LP_BF16;
        else if (!strcmp(a, "--keep")) {
            o.nkeeps = 0;
            for (char *p = (char *)v; *p && o.nkeeps < 8;) {
                o.keeps[o.nkeeps++] = strtod(p, &p);
                if (*p == ',') p++;
            }
        } else {
            fprintf(stderr, "bench_dit: unknown option %s\n", a);
            return 2;
        }
    }
    return strcmp(argv[1], "forward") ? run_prune(&o) : run_forward(&o);
}
