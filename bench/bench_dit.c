/* CPU benchmark of the causal Wan DiT.
 *
 *   bench_dit forward [--dim 1536 --ffn 8960 --heads 12 --layers 4 --h 60 --w 104 --dtype bf16|f32 --reps 3]
 *     one DiT forward over a chunk of 3 latent frames; achieved GFLOP/s next to
 *     the sgemm GFLOP/s of the same BLAS measured in the same run.
 *   bench_dit prune [--keep 0.30,0.60 ...same size options]
 *     time per chunk (3 steps + context pass) for `none` vs `lipar` at each kept
 *     fraction, next to the FLOP reduction predicted from the kept fraction.
 *   bench_dit loop [--backend cuda --layers 30 --frames 96 --keep-file MASK | --keep a,b]
 *     the streaming editing loop (steps 400,300,250, sink 1 + window 6) over
 *     --frames frames without pruning, then with LIPAR at each mask: DiT FPS,
 *     achieved TFLOP/s and the speed-up. A chunk's time is the wall time of
 *     lp_edit_chunk and its context pass; its noise is drawn before, as the
 *     session's encoder thread draws it ahead of the DiT.
 *
 * Prints one table; every figure is the median of --reps runs. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/base/clock.h"
#include "../src/base/prng.h"
#include "../src/model/wan_dit_random.h"
#include "../src/pipeline/edit.h"
#include "op_profile.h"

typedef struct {
    int dim, ffn, heads, layers, h, w, reps, frames;
    lp_dtype dtype;
    double keeps[8];
    int nkeeps;
    int profile; /* loop: per-op profile of the timed chunks (op_profile.h): 1 device time, 2 host issue time */
    const char *backend, *keep_file;
} opts;

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
        double t0 = lp_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N);
        t[r] = lp_seconds() - t0;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * M * N * K / median(t, reps) / 1e9;
}

typedef struct {
    lp_backend *be;
    lp_backend profiled; /* with --profile: the timing copy of be's table the model runs on */
    lp_tensor_file *wf;
    lp_dit *dit;
    lp_dit_cache *cache;
} model;

static lp_status make_model(const opts *o, lp_prune_strategy strategy, model *m) {
    memset(m, 0, sizeof *m);
    lp_dit_config cfg = {.dim = o->dim, .ffn_dim = o->ffn, .num_layers = o->layers, .in_dim = 16, .out_dim = 16,
                         .text_dim = 4096, .freq_dim = 256};
    LP_TRY(lp_backend_create(o->backend, 0, &m->be));
    LP_TRY(lp_dit_random_weights(&cfg, o->dtype, 1234, &m->wf));
    if (o->profile) m->profiled = op_profile_wrap(m->be);
    op_profile_host = o->profile == 2;
    LP_TRY(lp_dit_load(m->wf, "", o->heads, 512, o->profile ? &m->profiled : m->be, &m->dit));
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
        double t0 = lp_seconds();
        if (lp_dit_forward(m.dit, m.cache, &call, x, v) != LP_OK) return die("forward");
        t[r] = lp_seconds() - t0;
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

/* What the editing-loop benchmarks run: a model with its cache for one
 * strategy, the LIPAR step plan, the restoration state and a chunk of latents. */
typedef struct {
    model m;
    lp_denoise_plan plan;
    lp_edit_state st;
    float *x;
    uint8_t *keep; /* [3·h·w] */
} loop_run;

static lp_status loop_setup(const opts *o, lp_prune_strategy strategy, loop_run *r) {
    memset(r, 0, sizeof *r);
    int steps[3] = {400, 300, 250};
    LP_TRY(make_model(o, strategy, &r->m));
    LP_TRY(lp_denoise_plan_init(&r->plan, steps, 3, 5.0f, 0.0f));
    LP_TRY(lp_edit_state_init(&r->st, 16, o->h, o->w));
    r->x = noise_latents(lp_dit_latent_elems(r->m.dit, r->m.cache, 3));
    r->keep = malloc((size_t)(3 * (o->h / 2) * (o->w / 2)));
    if (!r->x || !r->keep) return lp_fail(LP_ERR_NOMEM, "out of memory");
    return LP_OK;
}

static void loop_free(loop_run *r) {
    free(r->x);
    free(r->keep);
    lp_edit_state_free(&r->st);
    free_model(&r->m);
}

/* A chunk's re-noising noise drawn before its timed edit, as the session's
 * encoder thread draws it ahead of the DiT: eps[i] is step i's. */
typedef struct {
    float *eps[LP_MAX_STEPS];
    int64_t n;
} drawn_noise;

static lp_status draw_noise(drawn_noise *d, uint64_t seed, int chunk, int steps, int64_t n) {
    lp_prng_noise pn = {seed, NULL};
    d->n = n;
    for (int i = 0; i + 1 < steps; i++) {
        if (!d->eps[i] && !(d->eps[i] = malloc((size_t)n * sizeof(float))))
            return lp_fail(LP_ERR_NOMEM, "out of memory");
        LP_TRY(lp_prng_noise_fn(&pn, chunk, i, d->eps[i], n));
    }
    return LP_OK;
}

static lp_status drawn_noise_fn(void *ctx, int chunk, int step, float *eps, int64_t n) {
    (void)chunk;
    const drawn_noise *d = ctx;
    if (n != d->n || !d->eps[step]) return lp_fail(LP_ERR_ARG, "bench: no noise drawn for step %d", step);
    memcpy(eps, d->eps[step], (size_t)n * sizeof *eps);
    return LP_OK;
}

static void drawn_noise_free(drawn_noise *d) {
    for (int i = 0; i < LP_MAX_STEPS; i++) free(d->eps[i]);
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
        loop_run run;
        if (loop_setup(o, strategy, &run) != LP_OK) return die("model");
        float *x = run.x;
        uint8_t *keep = run.keep;
        make_mask(keep, tokens, k);
        lp_prng_noise pn = {99, NULL};
        double t[16];
        /* chunk 0 fills the cache (its frame 0 must be whole); then timed chunks 1.. */
        for (int64_t i = 0; i < hw; i++) keep[i] = 1;
        if (lp_edit_chunk(run.m.dit, run.m.cache, &run.st, strategy, &run.plan, 0, F, x, keep, NULL, lp_prng_noise_fn, &pn) != LP_OK)
            return die("chunk");
        make_mask(keep, tokens, k);
        for (int r = 0; r < o->reps; r++) {
            double t0 = lp_seconds();
            if (lp_edit_chunk(run.m.dit, run.m.cache, &run.st, strategy, &run.plan, (r + 1) * F, F, x, keep, NULL, lp_prng_noise_fn, &pn) != LP_OK)
                return die("chunk");
            run.m.be->synchronize(run.m.be); /* the context pass */
            t[r] = lp_seconds() - t0;
        }
        double sec = median(t, o->reps);
        int64_t kept = 0;
        for (int64_t i = 0; i < tokens; i++) kept += keep[i];
        int64_t keys = 7 * hw < (o->reps + 1) * tokens ? 7 * hw : (o->reps + 1) * tokens;
        double flops = 4 * lp_dit_flops(lp_dit_get_config(run.m.dit), kept, keys);
        if (ki < 0) {
            base = sec;
            base_flops = flops;
        }
        printf("| %s | %.3f | %.3f | %.2fx | %.2fx |\n", lp_prune_strategy_name(strategy), (double)kept / tokens, sec,
               base / sec, base_flops / flops);
        loop_free(&run);
    }
    return 0;
}

/* The keep-mask of latent frame t (wrapping over the file's frames; frame 0 of
 * the video all kept), from a lipar_mask golden file's out.keep or a random
 * mask keeping fraction k. */
static void loop_mask(const opts *o, const lp_tensor *file_keep, double k, int t, uint8_t *keep, int64_t hw) {
    if (t == 0 || k >= 1.0) {
        memset(keep, 1, (size_t)hw);
        return;
    }
    if (file_keep) {
        int64_t T = file_keep->shape[0];
        int64_t src = 1 + (t - 1) % (T - 1); /* skip the file's all-keep frame 0 */
        memcpy(keep, (const uint8_t *)file_keep->data + src * hw, (size_t)hw);
        return;
    }
    (void)o;
    for (int64_t i = 0; i < hw; i++)
        keep[i] = (double)(((uint64_t)(t * hw + i) * 2654435761u) % 1000003u) / 1000003.0 < k;
}

/* The streaming editing loop over --frames output frames (4 per latent frame,
 * chunks of 3 latent frames), timed per chunk after one warm-up chunk. */
static int run_loop(const opts *o) {
    int F = 3, chunks = o->frames / 12;
    int64_t hw = (int64_t)(o->h / 2) * (o->w / 2);
    if (chunks < 2) {
        fprintf(stderr, "bench_dit loop: --frames must be at least 24\n");
        return 2;
    }
    lp_tensor_file *kf = NULL;
    const lp_tensor *file_keep = NULL;
    if (o->keep_file) {
        if (lp_tensor_file_open(o->keep_file, &kf) != LP_OK || lp_tensor_file_get(kf, "out.keep", &file_keep) != LP_OK)
            return die("keep file");
        if (file_keep->ndim != 3 || file_keep->shape[1] * file_keep->shape[2] != hw || file_keep->shape[0] < 2) {
            fprintf(stderr, "bench_dit: %s: out.keep does not fit a %dx%d latent grid\n", o->keep_file, o->h, o->w);
            return 1;
        }
    }
    printf("| backend | mask | kept | chunk ms (median) | DiT FPS | TFLOP/s | speed-up | host issue / call time |\n"
           "|---|---|---|---|---|---|---|---|\n");
    double base = 0;
    for (int ki = -1; ki < (file_keep ? 1 : o->nkeeps); ki++) {
        lp_prune_strategy strategy = ki < 0 ? LP_PRUNE_NONE : LP_PRUNE_LIPAR;
        double k = ki < 0 ? 1.0 : file_keep ? 0.5 : o->keeps[ki];
        loop_run run;
        if (loop_setup(o, strategy, &run) != LP_OK) return die("model");
        float *x = run.x;
        uint8_t *keep = run.keep;
        drawn_noise dn = {{NULL}, 0};
        double t[64], flops = 0, kept_sum = 0, issue = 0, total_call = 0;
        int timed = 0;
        for (int c = 0; c < chunks && c < 64; c++) {
            for (int f = 0; f < F; f++) loop_mask(o, file_keep, k, c * F + f, keep + f * hw, hw);
            int64_t kept = 0;
            for (int64_t i = 0; i < F * hw; i++) kept += keep[i];
            if (draw_noise(&dn, 99, c, run.plan.n_steps, lp_dit_latent_elems(run.m.dit, run.m.cache, F)) != LP_OK)
                return die("noise");
            double issue0 = lp_dit_cache_issue_seconds(run.m.cache), t0 = lp_seconds();
            if (lp_edit_chunk(run.m.dit, run.m.cache, &run.st, strategy, &run.plan, c * F, F, x, strategy == LP_PRUNE_NONE ? NULL : keep, NULL,
                              drawn_noise_fn, &dn) != LP_OK)
                return die("chunk");
            run.m.be->synchronize(run.m.be); /* the context pass */
            if (c == 0) { /* warm-up */
                op_profile_reset();
                continue;
            }
            t[timed] = lp_seconds() - t0;
            issue += lp_dit_cache_issue_seconds(run.m.cache) - issue0;
            total_call += t[timed++];
            int64_t keys = (int64_t)((c + 1) * F < 7 ? (c + 1) * F : 7) * hw;
            int64_t q = strategy == LP_PRUNE_NONE ? F * hw : kept;
            flops += 3 * lp_dit_flops(lp_dit_get_config(run.m.dit), q, keys) +
                     lp_dit_flops(lp_dit_get_config(run.m.dit), q, keys); /* 3 steps + context pass */
            kept_sum += (double)kept / (double)(F * hw);
        }
        drawn_noise_free(&dn);
        double total = 0;
        for (int i = 0; i < timed; i++) total += t[i];
        double med = median(t, timed);
        if (ki < 0) base = med;
        printf("| %s | %s | %.3f | %.1f | %.1f | %.1f | %.2fx | %.2f |\n", o->backend,
               ki < 0 ? "none" : file_keep ? o->keep_file : "random", kept_sum / timed, 1e3 * med, 12.0 / med,
               flops / total / 1e12, base / med, issue / total_call);
        if (o->profile) {
            char what[96];
            snprintf(what, sizeof what, "DiT loop, %s, kept %.3f", ki < 0 ? "no pruning" : "lipar", kept_sum / timed);
            op_profile_print(what, "chunk", timed);
        }
        loop_free(&run);
    }
    lp_tensor_file_close(kf);
    return 0;
}

int main(int argc, char **argv) {
    opts o = {.dim = 1536, .ffn = 8960, .heads = 12, .layers = 4, .h = 60, .w = 104, .reps = 3, .dtype = LP_BF16,
              .keeps = {0.30, 0.60}, .nkeeps = 2, .frames = 96, .backend = "cpu"};
    if (argc < 2 || (strcmp(argv[1], "forward") && strcmp(argv[1], "prune") && strcmp(argv[1], "loop"))) {
        fprintf(stderr, "usage: bench_dit forward|prune|loop [--dim N --ffn N --heads N --layers N --h N --w N --reps N "
                        "--dtype bf16|f32 --keep a,b,... --backend cpu|cuda --frames N --keep-file GOLDEN_MASK "
                        "--profile 0|1|2]\n");
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
        else if (!strcmp(a, "--backend")) o.backend = v;
        else if (!strcmp(a, "--frames")) o.frames = atoi(v);
        else if (!strcmp(a, "--keep-file")) o.keep_file = v;
        else if (!strcmp(a, "--profile")) o.profile = atoi(v);
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
    if (!strcmp(argv[1], "loop")) return run_loop(&o);
    return strcmp(argv[1], "forward") ? run_prune(&o) : run_forward(&o);
}
