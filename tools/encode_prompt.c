/* `lipar encode-prompt --text-encoder F --tokenizer F "PROMPT" -o emb.safetensors`:
 * runs the tokenizer and umT5 once and writes the DiT context [text_len, dim]
 * (rows past the prompt zero) with the prompt and its token count in the
 * metadata; `lipar edit --prompt-embedding` then skips the text encoder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/io/safetensors_write.h"
#include "../src/pipeline/text.h"

int lp_encode_prompt_main(int argc, char **argv) {
    const char *enc = NULL, *tok = NULL, *out = NULL, *prompt = NULL;
    int text_len = 512, threads = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--text-encoder") && v) enc = argv[++i];
        else if (!strcmp(a, "--tokenizer") && v) tok = argv[++i];
        else if (!strcmp(a, "-o") && v) out = argv[++i];
        else if (!strcmp(a, "--text-len") && v) text_len = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && v) threads = atoi(argv[++i]);
        else if (a[0] != '-' && !prompt) prompt = a;
        else {
            fprintf(stderr, "lipar encode-prompt: unexpected argument '%s'\n", a);
            prompt = NULL;
            enc = NULL;
            break;
        }
    }
    if (!enc || !tok || !out || !prompt || text_len < 1) {
        fprintf(stderr, "usage: lipar encode-prompt --text-encoder FILE --tokenizer FILE \"PROMPT\" -o OUT.safetensors\n"
                        "                           [--text-len 512] [--threads N]\n");
        return 2;
    }
    lp_pool *pool = NULL;
    lp_text *t = NULL;
    float *ctx = NULL, *padded = NULL;
    int rows = 0, rc = 1;
    if (lp_pool_create(threads, &pool) != LP_OK || lp_text_open_umt5(enc, tok, text_len, pool, &t) != LP_OK ||
        lp_text_encode(t, prompt, &ctx, &rows) != LP_OK) {
        fprintf(stderr, "lipar encode-prompt: %s\n", lp_last_error());
        goto out;
    }
    int dim = lp_text_dim(t);
    padded = calloc((size_t)text_len * (size_t)dim, sizeof *padded);
    if (!padded) {
        fprintf(stderr, "lipar encode-prompt: out of memory\n");
        goto out;
    }
    memcpy(padded, ctx, (size_t)rows * (size_t)dim * sizeof *padded);
    char len[32];
    snprintf(len, sizeof len, "%d", rows);
    const char *keys[] = {"prompt", "length", "kind"}, *vals[] = {prompt, len, "prompt_embedding"};
    lp_st_out_tensor tt = {"context", 2, {text_len, dim}, padded};
    if (lp_safetensors_write(out, &tt, 1, keys, vals, 3) != LP_OK) {
        fprintf(stderr, "lipar encode-prompt: %s\n", lp_last_error());
        goto out;
    }
    printf("wrote %s: context [%d, %d], %d real tokens\n", out, text_len, dim, rows);
    rc = 0;
out:
    free(ctx);
    free(padded);
    lp_text_free(t);
    lp_pool_destroy(pool);
    return rc;
}
