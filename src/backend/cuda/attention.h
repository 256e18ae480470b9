/* Internals of the CUDA attention op shared by attention.cu (argument checks,
 * f32 K/V conversion, work split, the mma.sync kernel, the merge of split
 * parts) and attention_wgmma.cu (the Hopper wgmma kernel for head_dim 128),
 * and the entry point that picks the kernel (for tests and benchmarks). Plain
 * C: no CUDA headers, so that C tests can include it. */
#ifndef LP_CUDA_ATTENTION_H
#define LP_CUDA_ATTENTION_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "../backend.h"

#define ATT_BQ 128 /* query rows per CTA (a "row block"), both kernels */
#define ATT_MAX_RANGES 2
#define ATT_WG_BK 128 /* keys per tile of the wgmma kernel */
/* log2-domain headroom of a row's running max: both kernels raise it (and
 * rescale O) only when a tile's max exceeds it by more than this */
#define ATT_RESCALE 8.f

/* Where the keys of one range are: element d of head h of key row r is
 * k[r·ld + h·hstride + d] (likewise v), bf16 bits; base, ld·2 and hstride·2
 * bytes are multiples of 16 (cp.async). */
typedef struct {
    const uint16_t *k, *v;
    int64_t ld, hstride;
} att_src;

/* One launch of either kernel. The work is made of units (block of ATT_BQ
 * query rows, head), unit u = head·nb + block. CTA c < whole takes unit c
 * over all key tiles; the units after those (the last, partial wave) are split
 * into `splits` parts of split_tiles key tiles (the last part may have fewer),
 * CTA whole + i·splits + s taking part s of unit whole + i and leaving its
 * unnormalised O and (m, l) per row in part_o / part_ml, entry i·splits + s,
 * for the merge kernel. q and out are bf16 bits. */
typedef struct {
    const uint16_t *q;
    uint16_t *out;
    att_src src[ATT_MAX_RANGES]; /* key i < n0 is row i of src[0], else row i − n0 of src[1] */
    float *part_o;               /* [parts][ATT_BQ][head_dim] */
    float *part_ml;              /* [parts][ATT_BQ][2]: the row's base m (log2 domain) and sum l */
    int Lq;
    int ldq;        /* heads·head_dim: the row stride of q and out */
    int n0, Lk;     /* keys of range 0, of all ranges */
    int tiles;      /* key tiles per head (of the kernel's tile size) */
    int last_valid; /* keys of the last tile (1..tile size); the rest are padding */
    int nb;         /* query row blocks per head */
    int whole, splits, split_tiles;
    float qscale;   /* scale·log2(e): logits times qscale are in the log2 domain */
} att_params;

/* Which kernel lp_cuda_attention_with runs. */
typedef enum {
    LP_CUDA_ATT_AUTO,  /* wgmma for head_dim 128 on compute capability 9.0 with scale > 0, unless the
                        * environment variable LIPAR_ATTENTION is "mma" (read once); else mma.sync */
    LP_CUDA_ATT_MMA,   /* the mma.sync kernel (any supported head_dim, any device) */
    LP_CUDA_ATT_WGMMA  /* the wgmma kernel; LP_ERR_UNSUPPORTED where it cannot run */
} lp_cuda_att_kernel;

/* The attention op (backend.h) with the kernel chosen by `kernel`;
 * lp_cuda_attention is this with LP_CUDA_ATT_AUTO. */
lp_status lp_cuda_attention_with(const lp_backend *be, lp_cuda_att_kernel kernel, void *out, const void *q,
                                 int64_t Lq, int heads, int head_dim, const lp_kv_range *ranges, int nranges,
                                 float scale);
/* The kernel that LP_CUDA_ATT_AUTO picks for head_dim and scale on be's
 * device (LP_CUDA_ATT_MMA or LP_CUDA_ATT_WGMMA). */
lp_cuda_att_kernel lp_cuda_attention_auto_kernel(const lp_backend *be, int head_dim, float scale);

/* attention_wgmma.cu. Sets the attributes of the wgmma kernel and reports
 * how many of its CTAs fit an SM (*per_sm, 0 when none); LP_ERR_UNSUPPORTED
 * when the device lacks the shared memory it needs. */
lp_status lp_cuda_attention_wgmma_occupancy(const lp_backend *be, int *per_sm);
/* Builds the tensor maps of the wgmma kernel (LP_ERR_UNSUPPORTED when the
 * driver cannot) and issues the kernel for p (head_dim 128, tiles of
 * ATT_WG_BK keys) on ctas CTAs, on the backend's stream. */
lp_status lp_cuda_attention_wgmma_launch(const lp_backend *be, const att_params *p, int64_t ctas);

#ifdef __cplusplus
}
#endif

#endif
