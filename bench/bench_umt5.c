/* CPU benchmark of the umT5-XXL encoder: a random-weight model of the real
 * size (bf16, ~11.4 GB, generated in memory from a hash of each element's
 * index) encodes a prompt of --tokens real tokens padded to 512, the way the
 * pipeline calls it (LP_UMT5_REAL_ROWS). Prints the median time of --runs runs
 * after one warm-up, the achieved GFLOP/s, and cblas_sgemm's GFLOP/s on the
 * same GEMM shape with weights already in fp32, measured in the same run.
 * usage: bench_umt5 [--layers N (24)] [--tokens N (60)] [--runs N (3)] [--threads N (all)] */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../src/base/clock.h"
#include "../src/base/half.h"
#include "../src/model/umt5.h"

enum { SEQ = 512, SLOTS_PER_BLOCK = 10 };

static int fail(const char *what) {
    fprintf(stderr, "bench_umt5: %s: %s\n", what, lp_last_error());
    return 1;
}

typedef struct {
    uint16_t *dst;
    uint32_t seed;
    float scale, offset;
} gen_ctx;

/* dst[i] = bf16(offset + scale * u), u uniform in [-1, 1) from a 32-bit hash of (i, seed). */
static void gen_range(void *vctx, int64_t b, int64_t e) {
    const gen_ctx *c = vctx;
    for (int64_t i = b; i < e; i++) {
        uint32_t x = (uint32_t)i * 0x9E3779B1u ^ c->seed;
        x ^= x >> 15;
        x *= 0x2C1B3C6Du;
        x ^= x >> 12;
        x *= 0x297A2D39u;
        x ^= x >> 15;
        c->dst[i] = lp_f32_to_bf16(c->offset + c->scale * ((float)(int32_t)x * (1.0f / 2147483648.0f)));
    }
}

/* Fills t (already shaped) with bf16 data carved from *arena. */
static void gen_tensor(lp_tensor *t, const char *name, uint16_t **arena, uint32_t seed, float scale, float offset,
                       lp_pool *pool) {
    int64_t n = lp_tensor_numel(t);
    t->name = name;
    t->dtype = LP_BF16;
    t->data = *arena;
    t->nbytes = (size_t)n * 2;
    gen_ctx g = {*arena, seed * 0x85EBCA6Bu + 1u, scale, offset};
    lp_parallel_for(pool, n, gen_range, &g);
    *arena += n;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* GFLOP/s of cblas_sgemm on C[m, n] = A[m, k] · B[n, k]^T with fp32 operands. */
static double sgemm_gflops(int m, int n, int k) {
    float *a = malloc((size_t)m * k * 4), *b = malloc((size_t)n * k * 4), *c = malloc((size_t)m * n * 4);
    if (!a || !b || !c) return free(a), free(b), free(c), 0;
    for (size_t i = 0; i < (size_t)m * k; i++) a[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < (size_t)n * k; i++) b[i] = (float)(i % 7) * 0.01f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1, a, k, b, k, 0, c, n);
    int reps = 5;
    double t = lp_seconds();
    for (int r = 0; r < reps; r++) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1, a, k, b, k, 0, c, n);
    t = (lp_seconds() - t) / reps;
    free(a), free(b), free(c);
    return 2.0 * m * n * k / t * 1e-9;
}

int main(int argc, char **argv) {
    int layers = 24, tokens = 60, runs = 3, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int v = i + 1 < argc ? atoi(argv[i + 1]) : -1;
        if (!strcmp(a, "--layers") && v >= 1) layers = v, i++;
        else if (!strcmp(a, "--tokens") && v >= 1 && v <= SEQ) tokens = v, i++;
        else if (!strcmp(a, "--runs") && v >= 1) runs = v, i++;
        else if (!strcmp(a, "--threads") && v >= 0) threads = v, i++;
        else {
            fprintf(stderr, "usage: bench_umt5 [--layers N] [--tokens N<=%d] [--runs N] [--threads N]\n", SEQ);
            return 2;
        }
    }
    const int64_t V = 256384, D = 4096, A = 4096, F = 10240, H = 64, NB = 32;
    lp_pool *pool;
    if (lp_pool_create(threads, &pool) != LP_OK) return fail("pool");

    /* ---- weights: bf16, one allocation, deterministic ---- */
    int64_t per_block = 2 * D + 3 * A * D + D * A + 3 * F * D + NB * H;
    int64_t total = V * D + D + layers * per_block;
    /* huge pages make first-touch page faults (most of the generation time) 512x rarer */
    size_t mem_bytes = (size_t)total * 2;
    uint16_t *mem = mmap(NULL, mem_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) mem = NULL;
    else madvise(mem, mem_bytes, MADV_HUGEPAGE);
    int64_t nslots = 2 + (int64_t)SLOTS_PER_BLOCK * layers;
    lp_tensor *t = calloc((size_t)nslots, sizeof *t);
    char (*names)[64] = calloc((size_t)nslots, sizeof *names);
    lp_umt5_weights w = {.num_layers = layers, .blocks = calloc((size_t)layers, sizeof(lp_umt5_block))};
    if (!mem || !t || !names || !w.blocks) return fail("out of memory for the weights");
    double t0 = lp_seconds();
    uint16_t *p = mem;
    int64_t s = 0;
    float lin_d = sqrtf(3.0f / (float)D), lin_a = sqrtf(3.0f / (float)A), lin_f = sqrtf(3.0f / (float)F);
#define GEN(field, nm, d0, d1, scale, offset)                                                     \
    do {                                                                                          \
        t[s].ndim = (d1) ? 2 : 1;                                                                 \
        t[s].shape[0] = (d0);                                                                     \
        t[s].shape[1] = (d1);                                                                     \
        snprintf(names[s], sizeof names[s], "%s", nm);                                            \
        gen_tensor(&t[s], names[s], &p, (uint32_t)s, scale, offset, pool);                        \
        field = &t[s];                                                                            \
        s++;                                                                                      \
    } while (0)
    GEN(w.token_embedding, "token_embedding.weight", V, D, 1.0f, 0.0f);
    GEN(w.norm, "norm.weight", D, 0, 0.5f, 1.0f);
    for (int l = 0; l < layers; l++) {
        lp_umt5_block *b = &w.blocks[l];
        GEN(b->norm1, "norm1.weight", D, 0, 0.5f, 1.0f);
        GEN(b->q, "attn.q.weight", A, D, lin_d, 0.0f);
        GEN(b->k, "attn.k.weight", A, D, lin_d, 0.0f);
        GEN(b->v, "attn.v.weight", A, D, lin_d, 0.0f);
        GEN(b->o, "attn.o.weight", D, A, lin_a, 0.0f);
        GEN(b->norm2, "norm2.weight", D, 0, 0.5f, 1.0f);
        GEN(b->gate, "ffn.gate.0.weight", F, D, lin_d, 0.0f);
        GEN(b->fc1, "ffn.fc1.weight", F, D, lin_d, 0.0f);
        GEN(b->fc2, "ffn.fc2.weight", D, F, lin_f, 0.0f);
        GEN(b->pos, "pos_embedding.embedding.weight", NB, H, 0.5f, 0.0f);
    }
#undef GEN
    double t_gen = lp_seconds() - t0;
    lp_umt5_config cfg;
    if (lp_umt5_config_detect(&w, 64, &cfg) != LP_OK) return fail("config");
    printf("umT5: vocab %lld, dim %lld, %lld heads x %lld, ffn %lld, %lld layers; %.2f GB of bf16 weights generated in %.1f s\n",
           (long long)cfg.vocab, (long long)cfg.dim, (long long)cfg.num_heads, (long long)cfg.head_dim,
           (long long)cfg.dim_ffn, (long long)cfg.num_layers, (double)total * 2e-9, t_gen);

    /* ---- encode ---- */
    int64_t ids[SEQ], mask[SEQ];
    for (int i = 0; i < SEQ; i++) {
        ids[i] = i < tokens ? (i * 7919 + 13) % V : 0;
        mask[i] = i < tokens;
    }
    float *out = malloc((size_t)SEQ * D * sizeof *out);
    if (!out) return fail("out of memory for the output");
    double *times = malloc(sizeof(double) * (size_t)runs);
    for (int r = -1; r < runs; r++) {
        double a = lp_seconds();
        if (lp_umt5_encode(&cfg, &w, ids, mask, SEQ, LP_UMT5_REAL_ROWS, pool, out) != LP_OK) return fail("encode");
        if (r >= 0) times[r] = lp_seconds() - a;
    }
    qsort(times, (size_t)runs, sizeof *times, cmp_double);
    double med = times[runs / 2];
    double ss = 0;
    for (int64_t i = 0; i < tokens * D; i++) ss += (double)out[i] * out[i];
    /* linear layers + QK^T and PV of the attention, per token and layer */
    double flop = (double)tokens * layers * (2.0 * (3 * D * A + A * D + 3 * D * F) + 4.0 * tokens * A);
    printf("encode %d tokens (padded to %d): median %.3f s of %d runs (min %.3f, max %.3f), %.1f GFLOP -> %.1f GFLOP/s; "
           "output rms %.3f\n",
           tokens, SEQ, med, runs, times[0], times[runs - 1], flop * 1e-9, flop / med * 1e-9, sqrt(ss / (double)(tokens * D)));
    printf("cblas_sgemm %dx%lldx%lld (fp32 weights, no conversion): %.1f GFLOP/s\n", tokens, (long long)F,
           (long long)D, sgemm_gflops(tokens, (int)F, (int)D));
    free(times), free(out), munmap(mem, mem_bytes), free(t), free(names), free(w.blocks);
    lp_pool_destroy(pool);
    return 0;
}
