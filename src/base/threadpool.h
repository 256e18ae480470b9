/* A fixed pool of worker threads running data-parallel loops. lp_parallel_for
 * splits [0, n) into contiguous slices, one per thread (the caller's thread
 * takes one), and returns when all are done. Not re-entrant: a task must not
 * call lp_parallel_for on the same pool. */
#ifndef LP_THREADPOOL_H
#define LP_THREADPOOL_H

#include <stdint.h>

#include "status.h"

typedef struct lp_pool lp_pool;
typedef void (*lp_range_fn)(void *ctx, int64_t begin, int64_t end);

/* nthreads <= 0 means the number of online CPUs. */
lp_status lp_pool_create(int nthreads, lp_pool **out);
void lp_pool_destroy(lp_pool *p);
int lp_pool_size(const lp_pool *p);
/* Runs fn over [0, n) in slices; with p == NULL runs fn(ctx, 0, n) inline. */
void lp_parallel_for(lp_pool *p, int64_t n, lp_range_fn fn, void *ctx);

#endif
