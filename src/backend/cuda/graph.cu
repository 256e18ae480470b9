/* CUDA graphs for the backend table's graph_begin / graph_end (backend.h).
 *
 * graph_begin starts a stream capture on the backend's stream: the ops issued
 * after it are recorded, not run. graph_end ends the capture and launches
 * the recording as one graph. Instantiating a graph costs far more host time
 * than issuing its kernels, so executable graphs are kept (GRAPH_SLOTS of
 * them, least recently used replaced) and a new recording with the node
 * count of a kept one is first tried as an update of it
 * (cudaGraphExecUpdate: same topology, new kernel arguments and sizes,
 * which takes effect at the next launch and leaves launches in flight
 * alone); only when no kept graph takes the update is a new one
 * instantiated.
 *
 * What a recording may contain: kernels, cuBLASLt products and device
 * copies, and arrays staged through the upload ring (lp_cuda_stage), whose
 * pinned copies stay in the ring until its next wrap; graph_begin wraps the
 * ring first when less than half of it is free, so that a recording never
 * wraps it. An op that would wait for the device or allocate (a download,
 * a first use of a weight, scratch that must grow, a ring that wraps) fails
 * under the thread-local capture mode with a CUDA error, which becomes the
 * sticky error, and graph_end then discards the recording and reports it:
 * callers record only work whose shapes ran unrecorded before (the DiT,
 * src/model/wan_dit.c).
 *
 * The table has these ops only with LIPAR_CUDA_GRAPHS=1: on an H100 the DiT
 * loop and `lipar edit` ran slower with them (docs/PERF.md run 41). A graph
 * starts only once it is recorded whole, while separate launches start as
 * they are issued, and the host's issue was not what set the pace. */
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

#define GRAPH_SLOTS 8

struct lp_cuda_graphs {
    struct {
        cudaGraphExec_t exec;
        size_t nodes;
        uint64_t last_use;
    } slot[GRAPH_SLOTS];
    uint64_t uses;
    int recording;
};

extern "C" lp_status lp_cuda_graph_begin(const lp_backend *be) {
    LP_TRY(lp_cuda_pending(be, "graph_begin"));
    lp_cuda_state *st = lp_cuda(be);
    if (!st->graphs && !(st->graphs = (lp_cuda_graphs *)calloc(1, sizeof *st->graphs)))
        return lp_fail(LP_ERR_NOMEM, "graph_begin: out of memory");
    if (st->graphs->recording) return lp_fail(LP_ERR_ARG, "graph_begin: a recording is open already");
    /* a wrap now, while waiting is allowed */
    if (st->ring_bytes - st->ring_pos < st->ring_bytes / 2) LP_TRY(lp_cuda_ring_wrap(be));
    LP_TRY(lp_cuda_check(be, cudaStreamBeginCapture(st->stream, cudaStreamCaptureModeThreadLocal),
                         "cudaStreamBeginCapture"));
    st->graphs->recording = 1;
    return LP_OK;
}

/* The kept executable graph that takes g as an update, or NULL. */
static cudaGraphExec_t update_kept(lp_cuda_graphs *gs, cudaGraph_t g, size_t nodes) {
    for (int i = 0; i < GRAPH_SLOTS; i++) {
        if (!gs->slot[i].exec || gs->slot[i].nodes != nodes) continue;
        cudaGraphExecUpdateResultInfo info;
        if (cudaGraphExecUpdate(gs->slot[i].exec, g, &info) == cudaSuccess) {
            gs->slot[i].last_use = ++gs->uses;
            return gs->slot[i].exec;
        }
        cudaGetLastError(); /* a refused update is not an error */
    }
    return NULL;
}

/* g instantiated into the free or least recently used slot. */
static lp_status instantiate(const lp_backend *be, lp_cuda_graphs *gs, cudaGraph_t g, size_t nodes,
                             cudaGraphExec_t *out) {
    int v = 0;
    for (int i = 1; i < GRAPH_SLOTS; i++)
        if (gs->slot[i].last_use < gs->slot[v].last_use) v = i;
    if (gs->slot[v].exec) {
        cudaGraphExecDestroy(gs->slot[v].exec); /* launches in flight finish (CUDA keeps them alive) */
        gs->slot[v].exec = NULL;
    }
    LP_TRY(lp_cuda_check(be, cudaGraphInstantiate(&gs->slot[v].exec, g, 0), "cudaGraphInstantiate"));
    gs->slot[v].nodes = nodes;
    gs->slot[v].last_use = ++gs->uses;
    *out = gs->slot[v].exec;
    return LP_OK;
}

extern "C" lp_status lp_cuda_graph_end(const lp_backend *be) {
    lp_cuda_state *st = lp_cuda(be);
    lp_cuda_graphs *gs = st->graphs;
    if (!gs || !gs->recording) return lp_fail(LP_ERR_ARG, "graph_end: no recording is open");
    gs->recording = 0;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(st->stream, &g);
    lp_status s = lp_cuda_pending(be, "graph_end (an op of the recording failed; nothing of it ran)");
    if (s == LP_OK) s = lp_cuda_check(be, e, "cudaStreamEndCapture");
    size_t nodes = 0;
    if (s == LP_OK) s = lp_cuda_check(be, cudaGraphGetNodes(g, NULL, &nodes), "cudaGraphGetNodes");
    cudaGraphExec_t exec = NULL;
    if (s == LP_OK && !(exec = update_kept(gs, g, nodes))) s = instantiate(be, gs, g, nodes, &exec);
    if (s == LP_OK) s = lp_cuda_check(be, cudaGraphLaunch(exec, st->stream), "cudaGraphLaunch");
    if (g) cudaGraphDestroy(g);
    return s;
}

extern "C" void lp_cuda_graphs_free(lp_cuda_state *st) {
    if (!st->graphs) return;
    for (int i = 0; i < GRAPH_SLOTS; i++)
        if (st->graphs->slot[i].exec) cudaGraphExecDestroy(st->graphs->slot[i].exec);
    free(st->graphs);
    st->graphs = NULL;
}
