/* Backend selection by name. The only place that knows which backends were
 * built in. */
#include <string.h>

#include "backend.h"

#ifndef LP_HAVE_CUDA
lp_status lp_backend_cuda_create(int nthreads, int priority, lp_backend **out) {
    (void)nthreads;
    (void)priority;
    *out = NULL;
    return lp_fail(LP_ERR_UNSUPPORTED, "this lipar was built without CUDA (nvcc was not found at build time)");
}
#endif

static lp_status create(const char *name, int nthreads, int priority, lp_backend **out) {
    if (!strcmp(name, "cpu")) return lp_backend_cpu_create(nthreads, out);
    if (!strcmp(name, "cuda")) return lp_backend_cuda_create(nthreads, priority, out);
    *out = NULL;
    return lp_fail(LP_ERR_ARG, "unknown backend '%s' (cpu or cuda)", name);
}

lp_status lp_backend_create(const char *name, int nthreads, lp_backend **out) {
    return create(name, nthreads, 0, out);
}

lp_status lp_backend_create_priority(const char *name, int nthreads, lp_backend **out) {
    return create(name, nthreads, 1, out);
}

void lp_backend_destroy(lp_backend *be) {
    if (be) be->destroy(be);
}
