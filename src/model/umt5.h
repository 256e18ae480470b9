/* The umT5 text encoder (umT5-XXL in Wan2.1), CPU reference path.
 * Spec: ../shared/spec/TEXT.md, section "umT5-XXL encoder".
 *
 * Weights stay in their stored dtype (bf16 for the published checkpoint) as
 * zero-copy views; each linear layer converts a block of weight rows at a time
 * into a scratch buffer and multiplies with cblas_sgemm, so no fp32 copy of the
 * model is ever made. All arithmetic is fp32. */
#ifndef LP_MODEL_UMT5_H
#define LP_MODEL_UMT5_H

#include <stddef.h>
#include <stdint.h>

#include "../base/status.h"
#include "../base/threadpool.h"
#include "../io/tensor_file.h"

typedef struct {
    int64_t vocab;       /* 256384 for umT5-XXL */
    int64_t dim;         /* model width, 4096 */
    int64_t dim_attn;    /* width of q/k/v, 4096 = num_heads * head_dim */
    int64_t dim_ffn;     /* 10240 */
    int64_t num_heads;   /* 64 */
    int64_t head_dim;    /* dim_attn / num_heads = 64 */
    int64_t num_layers;  /* 24 */
    int64_t num_buckets; /* relative-position buckets, 32 (both directions together) */
    int64_t max_dist;    /* relative distance where the log buckets saturate, 128 */
    float eps;           /* T5Norm epsilon, 1e-6 */
} lp_umt5_config;

/* One encoder block (upstream T5SelfAttention) under "blocks.<i>.". */
typedef struct {
    const lp_tensor *norm1; /* norm1.weight                     [dim] */
    const lp_tensor *q;     /* attn.q.weight                    [dim_attn, dim] */
    const lp_tensor *k;     /* attn.k.weight                    [dim_attn, dim] */
    const lp_tensor *v;     /* attn.v.weight                    [dim_attn, dim] */
    const lp_tensor *o;     /* attn.o.weight                    [dim, dim_attn] */
    const lp_tensor *norm2; /* norm2.weight                     [dim] */
    const lp_tensor *gate;  /* ffn.gate.0.weight                [dim_ffn, dim] */
    const lp_tensor *fc1;   /* ffn.fc1.weight                   [dim_ffn, dim] */
    const lp_tensor *fc2;   /* ffn.fc2.weight                   [dim, dim_ffn] */
    const lp_tensor *pos;   /* pos_embedding.embedding.weight   [num_buckets, num_heads] */
} lp_umt5_block;

typedef struct {
    const lp_tensor *token_embedding; /* token_embedding.weight [vocab, dim] (row lookup only) */
    const lp_tensor *norm;            /* norm.weight            [dim] (the final T5Norm) */
    int64_t num_layers;
    lp_umt5_block *blocks;            /* num_layers entries, heap-owned (lp_umt5_weights_free) */
} lp_umt5_weights;

/* Which rows lp_umt5_encode computes. Padded keys are always masked, so the
 * real rows are the same in both modes. */
typedef enum {
    LP_UMT5_ALL_ROWS,  /* every position, padded ones included, exactly as upstream T5Encoder(ids, mask) */
    LP_UMT5_REAL_ROWS, /* only positions with mask != 0; padded output rows are zero (the DiT's context) */
} lp_umt5_rows;

/* Finds the name prefix under which f stores the encoder ("w." in golden
 * files, "" in the published checkpoint): the text before the name of a tensor
 * ending in "token_embedding.weight". Fails with LP_ERR_MISSING if there is
 * none, LP_ERR_ARG if it does not fit in len bytes. */
lp_status lp_umt5_detect_prefix(const lp_tensor_file *f, char *prefix, size_t len);

/* Binds w to the tensors of f named prefix + upstream name (blocks are counted
 * until blocks.<n>.norm1.weight is absent) and detects cfg from their shapes
 * (lp_umt5_config_detect). num_heads <= 0 takes it from the per-layer
 * relative-position table. The views live as long as f. On failure w holds no
 * memory; on success release it with lp_umt5_weights_free. */
lp_status lp_umt5_load(const lp_tensor_file *f, const char *prefix, int64_t num_heads, lp_umt5_weights *w,
                       lp_umt5_config *cfg);

/* Detects cfg from the shapes of a filled w and checks every tensor: shape
 * (LP_ERR_SHAPE naming the tensor), floating-point dtype (LP_ERR_UNSUPPORTED).
 * The number of heads cannot be inferred from the projection shapes; it is the
 * second dimension of each block's position table, and a num_heads > 0 must
 * agree with it. max_dist (128) and eps (1e-6) are not stored in the weights:
 * they get the umT5 values and the caller may override them. */
lp_status lp_umt5_config_detect(const lp_umt5_weights *w, int64_t num_heads, lp_umt5_config *cfg);

/* Frees what lp_umt5_load allocated (the block table) and zeroes w. */
void lp_umt5_weights_free(lp_umt5_weights *w);

/* Bidirectional relative-position bucket of rel = key - query position
 * (TEXT.md): num_buckets/2 buckets per side, + num_buckets/2 if rel > 0;
 * |rel| < num_buckets/4 is its own bucket, larger distances are log-spaced up
 * to max_dist and capped at the side's last bucket. Requires num_buckets >= 4
 * and max_dist > num_buckets/4. */
int64_t lp_umt5_bucket(int64_t rel, int64_t num_buckets, int64_t max_dist);

/* Encodes one sequence: ids[len] (token ids), mask[len] (nonzero = real token,
 * NULL = all real) -> out[len, dim] fp32, the final-normed hidden states.
 * rows selects whether padded rows are computed like upstream does
 * (LP_UMT5_ALL_ROWS) or skipped and zeroed (LP_UMT5_REAL_ROWS, cheaper, the
 * form the DiT consumes). Real tokens need not be a prefix: positions keep
 * their index in ids. GEMMs use OpenBLAS's threads; the other work runs on
 * pool (NULL = the calling thread). Activation scratch is reserved once per
 * call from the number of computed rows. Fails with LP_ERR_ARG for an id
 * outside [0, vocab), LP_ERR_NOMEM if the scratch cannot be reserved. */
lp_status lp_umt5_encode(const lp_umt5_config *cfg, const lp_umt5_weights *w, const int64_t *ids,
                         const int64_t *mask, int64_t len, lp_umt5_rows rows, lp_pool *pool, float *out);

#endif
