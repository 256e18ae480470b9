/* Backend selection by name. The only place that knows which backends were
 * built in. */
#include <string.h>

#include "backend.h"

#ifndef LP_HAVE_CUDA
lp_status lp_backend_cuda_create(int nthreads, lp_backend **out) {
    (void)nthreads;
    *out = NULL;
    return lp_fail(LP_ERR_UNSUPPORTED, "this lipar was built without CUDA (nvcc was not found at build time)");
}
#endif

lp_status lp_backend_create(const char *name, int nthreads, lp_backend **out) {
    if (!strcmp(name, "cpu")) return lp_backend_cpu_create(nthreads, out);
    if (!strcmp(name, "cuda")) return lp_backend_cuda_create(nthreads, out);
    *out = NULL;
    return lp_fail(LP_ERR_ARG, "unknown backend '%s' (cpu or cuda)", name);
}

void lp_backend_destroy(lp_backend *be) {
    if (be) be->destroy(be);
}
