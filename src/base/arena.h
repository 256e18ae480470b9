/* A bump allocator over one block reserved up front. Models compute their
 * worst-case scratch size from their configuration, reserve it once, and reset
 * the arena between forwards; running out is reported as LP_ERR_NOMEM rather
 * than growing behind the caller's back. Allocations are 64-byte aligned. */
#ifndef LP_ARENA_H
#define LP_ARENA_H

#include <stddef.h>

#include "status.h"

typedef struct {
    unsigned char *base;
    size_t size, used, peak;
    int owned; /* base was allocated by lp_arena_init */
} lp_arena;

lp_status lp_arena_init(lp_arena *a, size_t bytes);
/* An arena over memory the caller owns (e.g. a backend buffer of `bytes`
 * bytes, 64-byte aligned); lp_arena_release does not free it. */
void lp_arena_wrap(lp_arena *a, void *base, size_t bytes);
void lp_arena_release(lp_arena *a);
/* NULL (and an error recorded) if the arena cannot hold n more bytes. */
void *lp_arena_alloc(lp_arena *a, size_t n);
static inline size_t lp_arena_mark(const lp_arena *a) { return a->used; }
static inline void lp_arena_reset(lp_arena *a, size_t mark) { a->used = mark; }
/* Bytes an allocation of n takes inside the arena (with alignment). */
static inline size_t lp_arena_round(size_t n) { return (n + 63) & ~(size_t)63; }

#endif
