/* Prompt → DiT context [L, text_dim] (spec/TEXT.md): the SentencePiece
 * tokenizer + umT5 encoder, a precomputed embedding file, or the embedded
 * demonstration encoder (UTF-8 bytes as tokens through a small random umT5).
 * A prompt is encoded once; callers cache the result. */
#ifndef LP_TEXT_H
#define LP_TEXT_H

#include "../base/threadpool.h"
#include "../base/status.h"

typedef struct lp_text lp_text;

/* umT5 weights (.pth or safetensors) + spiece.model; text_len = 512 for Wan. */
lp_status lp_text_open_umt5(const char *encoder_path, const char *tokenizer_path, int text_len, lp_pool *pool,
                            lp_text **out);
/* A file written by `lipar encode-prompt`: the context of one prompt
 * (tensor "context" [L, text_dim], metadata "prompt"). Encoding any other
 * prompt with it fails. */
lp_status lp_text_open_embedding(const char *path, lp_text **out);
/* The demonstration encoder: bytes + 3 as ids, </s> = 1, a random umT5 of
 * width text_dim. */
lp_status lp_text_open_demo(int text_dim, int text_len, lp_pool *pool, lp_text **out);
void lp_text_free(lp_text *t);

int lp_text_dim(const lp_text *t);
/* Encodes prompt into *context (malloc'd [*rows, text_dim], the real rows
 * only: tokens and </s>; padded rows are zero by definition). */
lp_status lp_text_encode(lp_text *t, const char *prompt, float **context, int *rows);

#endif
