/* libFuzzer target: the protobuf reader and the SentencePiece model loader on
 * arbitrary bytes (lp_tokenizer_load_memory). When a model loads, it encodes a
 * few fixed strings and the input's last 64 bytes as text (exercising the
 * charsmap trie, the rewrite strings and the Viterbi search on whatever the
 * input holds), decodes the ids, and runs Wan's prompt pipeline.
 * Build (self-contained):
 *   clang -std=c11 -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
 *     -o build-fuzz/fuzz_protobuf fuzz/fuzz_protobuf.c src/model/tokenizer.c \
 *     src/io/protobuf.c src/base/status.c
 * Seeds: ../shared/golden/spm_unigram_600.model (use -max_len=262144). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/model/tokenizer.h"

static void fuzz_text(const lp_tokenizer *tok, const char *text, size_t len) {
    lp_tokens tk;
    if (lp_tokenizer_encode(tok, text, len, &tk) != LP_OK) return;
    size_t covered = 0;
    for (size_t i = 0; i < tk.n; i++) {
        if (tk.piece_off[i] != covered || tk.piece_len[i] == 0) __builtin_trap(); /* pieces are contiguous */
        if (tk.ids[i] < 0 || tk.ids[i] >= lp_tokenizer_vocab_size(tok)) __builtin_trap();
        covered += tk.piece_len[i];
    }
    char *dec;
    if (lp_tokenizer_decode(tok, tk.ids, tk.n, &dec, NULL) == LP_OK) free(dec);
    lp_tokens_free(&tk);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_tokenizer *tok;
    if (lp_tokenizer_load_memory(data, size, "fuzz.model", &tok) != LP_OK) return 0;
    static const char *texts[] = {"", " ", "A majestic lion\tin a field.", "Ｆｕｌｌｗｉｄｔｈ café 漢字 かな 🎬🐧",
                                  "ｶﾞ ﬁ ① ² \xff\xc3 end  "};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) fuzz_text(tok, texts[i], strlen(texts[i]));
    size_t tail = size < 64 ? size : 64;
    fuzz_text(tok, (const char *)data + size - tail, tail);
    int32_t ids[16];
    uint8_t mask[16];
    int n;
    if (lp_tokenizer_encode_prompt(tok, "Tom &amp; Jerry \xe2\x80\x9chi\xe2\x80\x9d", 16, ids, mask, &n) == LP_OK &&
        (n < 1 || n > 16 || mask[n - 1] != 1))
        __builtin_trap();
    lp_tokenizer_free(tok);
    return 0;
}
