#include "arena.h"

#include <stdint.h>
#include <stdlib.h>

lp_status lp_arena_init(lp_arena *a, size_t bytes) {
    if (bytes > SIZE_MAX - 63) return lp_fail(LP_ERR_NOMEM, "cannot reserve %zu bytes of scratch memory", bytes);
    a->size = lp_arena_round(bytes);
    a->used = a->peak = 0;
    a->base = a->size ? aligned_alloc(64, a->size) : NULL;
    a->owned = 1;
    if (a->size && !a->base) return lp_fail(LP_ERR_NOMEM, "cannot reserve %zu bytes of scratch memory", a->size);
    return LP_OK;
}

void lp_arena_wrap(lp_arena *a, void *base, size_t bytes) {
    a->base = base;
    a->size = bytes & ~(size_t)63;
    a->used = a->peak = 0;
    a->owned = 0;
}

void lp_arena_release(lp_arena *a) {
    if (a->owned) free(a->base);
    a->base = NULL;
    a->size = a->used = 0;
}

void *lp_arena_alloc(lp_arena *a, size_t n) {
    size_t r = lp_arena_round(n);
    if (n > a->size - a->used || r > a->size - a->used) { /* r wraps to 0 for n near SIZE_MAX */
        lp_fail(LP_ERR_NOMEM, "scratch arena exhausted: %zu bytes requested, %zu of %zu free", n, a->size - a->used,
                a->size);
        return NULL;
    }
    void *p = a->base + a->used;
    a->used += r;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}
