#include "threadpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct lp_pool {
    int n;                 /* threads including the caller */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    uint64_t generation;   /* bumped for each parallel_for */
    int pending;           /* worker slices not yet finished */
    int quit;
    lp_range_fn fn;
    void *ctx;
    int64_t total;
};

typedef struct {
    lp_pool *p;
    int index;
} worker_arg;

static void slice(int64_t n, int parts, int i, int64_t *b, int64_t *e) {
    *b = n * i / parts;
    *e = n * (i + 1) / parts;
}

static void *worker(void *arg) {
    worker_arg *wa = arg;
    lp_pool *p = wa->p;
    int idx = wa->index;
    free(wa);
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->generation == seen) pthread_cond_wait(&p->work_cv, &p->mu);
        if (p->quit) break;
        seen = p->generation;
        lp_range_fn fn = p->fn;
        void *ctx = p->ctx;
        int64_t b, e;
        slice(p->total, p->n, idx, &b, &e);
        pthread_mutex_unlock(&p->mu);
        if (b < e) fn(ctx, b, e);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

lp_status lp_pool_create(int nthreads, lp_pool **out) {
    *out = NULL;
    if (nthreads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = c > 0 ? (int)c : 1;
    }
    lp_pool *p = calloc(1, sizeof *p);
    if (!p) return lp_fail(LP_ERR_NOMEM, "out of memory creating a thread pool");
    p->n = nthreads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    p->threads = calloc((size_t)nthreads, sizeof *p->threads);
    if (!p->threads) {
        lp_pool_destroy(p);
        return lp_fail(LP_ERR_NOMEM, "out of memory creating a thread pool");
    }
    for (int i = 1; i < nthreads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa || pthread_create(&p->threads[i], NULL, worker, wa ? (wa->p = p, wa->index = i, wa) : NULL) != 0) {
            free(wa);
            p->n = i; /* only threads 1..i-1 exist */
            lp_pool_destroy(p);
            return lp_fail(LP_ERR_NOMEM, "cannot start worker thread %d", i);
        }
    }
    *out = p;
    return LP_OK;
}

void lp_pool_destroy(lp_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n && p->threads; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p->threads);
    free(p);
}

int lp_pool_size(const lp_pool *p) { return p ? p->n : 1; }

void lp_parallel_for(lp_pool *p, int64_t n, lp_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (!p || p->n == 1 || n == 1) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->total = n;
    p->pending = p->n - 1;
    p->generation++;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    int64_t b, e;
    slice(n, p->n, 0, &b, &e);
    if (b < e) fn(ctx, b, e);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
