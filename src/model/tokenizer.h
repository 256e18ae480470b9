/* The SentencePiece unigram tokenizer of umT5 (spec/TEXT.md, "Tokenizer"), and
 * Wan's prompt pipeline in front of it.
 *
 * A `.model` file is a protobuf ModelProto: pieces (string, score, type), a
 * TrainerSpec (model type, special ids, byte_fallback, unk_surface) and a
 * NormalizerSpec (precompiled character map, whitespace flags). Encoding
 * reproduces the reference library (SentencePiece 0.1.9x) exactly:
 *   1. normalize: longest-prefix rewrite through the precompiled charsmap (a
 *      darts-clone double-array trie over NFKC-style rules plus a blob of
 *      NUL-terminated replacement strings), user-defined pieces passed through
 *      unchanged, malformed UTF-8 bytes -> U+FFFD; leading/trailing/repeated
 *      spaces removed; a dummy '▁' prefix; ' ' -> '▁' (U+2581);
 *   2. segment: Viterbi over piece scores on the normalized bytes; a character
 *      that no single piece covers becomes <unk> with score min_score - 10;
 *      user-defined pieces score len_bytes * max_score - 0.1; unused pieces
 *      are never emitted;
 *   3. consecutive unknown pieces merge into one <unk> token whose piece text
 *      is their concatenated surface (or, with byte_fallback, each unknown
 *      byte becomes its <0xXX> piece).
 * Only UNIGRAM models are accepted. The tokenizer is immutable after loading
 * and may be used from several threads at once. */
#ifndef LP_TOKENIZER_H
#define LP_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "../base/status.h"

typedef struct lp_tokenizer lp_tokenizer;

/* SentencePiece piece types (ModelProto.SentencePiece.Type). */
typedef enum {
    LP_PIECE_NORMAL = 1,
    LP_PIECE_UNKNOWN = 2,
    LP_PIECE_CONTROL = 3,      /* <pad>, </s>, ...: never produced by encoding */
    LP_PIECE_USER_DEFINED = 4, /* always kept whole, never normalized */
    LP_PIECE_UNUSED = 5,
    LP_PIECE_BYTE = 6,         /* <0x00>..<0xFF>, with byte_fallback */
} lp_piece_type;

/* Loads a SentencePiece model file. Fails with LP_ERR_IO if it cannot be read,
 * LP_ERR_FORMAT for a malformed protobuf or an inconsistent model (empty
 * vocabulary, empty or duplicate pieces, no or several <unk>, broken charsmap,
 * byte pieces without byte_fallback, ...), LP_ERR_UNSUPPORTED for a model type
 * other than UNIGRAM; the message names the file. */
lp_status lp_tokenizer_load(const char *path, lp_tokenizer **out);
/* The same from len bytes in memory; what names the source in messages. The
 * tokenizer keeps its own copies: data may be freed afterwards. */
lp_status lp_tokenizer_load_memory(const void *data, size_t len, const char *what, lp_tokenizer **out);
void lp_tokenizer_free(lp_tokenizer *tok);

/* Vocabulary access. ids are 0..vocab_size-1; an id outside that range gives
 * NULL / 0 / 0. Pieces are NUL-terminated UTF-8 ('▁' for a space). */
int lp_tokenizer_vocab_size(const lp_tokenizer *tok);
const char *lp_tokenizer_piece(const lp_tokenizer *tok, int id);
float lp_tokenizer_score(const lp_tokenizer *tok, int id);
lp_piece_type lp_tokenizer_piece_type(const lp_tokenizer *tok, int id);
/* The id of the UNKNOWN piece. */
int lp_tokenizer_unk_id(const lp_tokenizer *tok);
/* The id of the piece spelled exactly piece[0..len), or -1. */
int lp_tokenizer_find(const lp_tokenizer *tok, const char *piece, size_t len);

/* Step 1 alone: the normalized text of text[0..len) (malloc'd, NUL-terminated;
 * *out_len excludes the NUL). Empty or all-space input gives "". */
lp_status lp_tokenizer_normalize(const lp_tokenizer *tok, const char *text, size_t len, char **out, size_t *out_len);

/* An encoded text: n tokens; token i has id ids[i] and piece text
 * text[piece_off[i] .. piece_off[i] + piece_len[i]) (not NUL-terminated). */
typedef struct {
    size_t n;
    int32_t *ids;
    size_t *piece_off;
    size_t *piece_len;
    char *text;
} lp_tokens;

/* Encodes text[0..len) (UTF-8; invalid bytes are handled as the reference
 * does). No </s> is added. *out is overwritten; free it with lp_tokens_free. */
lp_status lp_tokenizer_encode(const lp_tokenizer *tok, const char *text, size_t len, lp_tokens *out);
void lp_tokens_free(lp_tokens *t);

/* Decodes n ids back to text like SentencePiece's DecodeIds: control pieces
 * vanish, <unk> becomes the model's unk_surface (default " ⁇ "), '▁' becomes
 * ' ', the leading space(s) that normalization added are dropped, and runs of
 * byte pieces are reassembled as UTF-8 (invalid bytes -> U+FFFD). The
 * denormalizer_spec of a model, if any, is not applied. An id out of range is
 * LP_ERR_ARG. *out is malloc'd and NUL-terminated. */
lp_status lp_tokenizer_decode(const lp_tokenizer *tok, const int32_t *ids, size_t n, char **out, size_t *out_len);

/* Wan's prompt cleaning before tokenizing (Wan2.1 wan/modules/tokenizers.py,
 * clean='whitespace'): basic_clean = fix text glitches, HTML-unescape twice,
 * strip; then whitespace_clean = every run of (Unicode) whitespace -> one ' ',
 * strip. "Fix text glitches" is a basic subset of ftfy.fix_text: ANSI terminal
 * escapes removed, UTF-8 mis-decoded as Windows-1252/Latin-1 repaired ("cafÃ©"
 * -> "café"), C1 controls read as Windows-1252, curly quotes straightened,
 * line breaks unified, control characters removed; the NFKC-like rewrites of
 * ftfy (full width, ligatures) are left to the tokenizer's charsmap. HTML
 * unescaping follows Python's html.unescape for numeric references and for the
 * Latin-1 and common named entities. Invalid UTF-8 input bytes become U+FFFD.
 * *out is malloc'd and NUL-terminated. */
lp_status lp_prompt_clean(const char *text, size_t len, char **out, size_t *out_len);

/* The ids Wan feeds to umT5 for a prompt (a NUL-terminated string): clean it,
 * encode it, keep at most L-1 tokens, append </s> (the id of the piece "</s>"),
 * pad with id 0 up to L. ids and mask have L entries; mask is 1 on the real
 * tokens (</s> included) and 0 on padding; *n_tokens (may be NULL) is the
 * number of real tokens. Truncation keeps the first L-1 tokens and still ends
 * with </s>, as the Hugging Face tokenizer Wan calls with truncation=True.
 * L is 512 in Wan. */
lp_status lp_tokenizer_encode_prompt(const lp_tokenizer *tok, const char *prompt, int L, int32_t *ids, uint8_t *mask,
                                     int *n_tokens);

#endif
