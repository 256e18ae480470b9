/* `lipar tokenize-check MODEL.model CASES.json`: encodes every case of a golden
 * tokenizer file ({"cases": [{"text", "ids", "pieces"}, ...]}) and compares ids
 * and pieces exactly. `lipar tokenize MODEL.model TEXT`: prints the ids and
 * pieces of one text (with --wan: Wan's cleaned, </s>-terminated ids). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/base/json.h"
#include "../src/model/tokenizer.h"

int lp_tokenize_check_main(int argc, char **argv);
int lp_tokenize_main(int argc, char **argv);

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 65536) {
            char *p = realloc(buf, cap = cap * 2 + 65536);
            if (!p) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = p;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Prints at most max bytes of s, cut at a character boundary, escaping
 * control characters. */
static void print_short(FILE *out, const char *s, size_t len, size_t max) {
    size_t n = len;
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
    }
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\t') fputs("\\t", out);
        else if (c == '\n') fputs("\\n", out);
        else if (c < 0x20 || c == 0x7f) fprintf(out, "\\x%02x", c);
        else fputc(c, out);
    }
    fputs(n < len ? "\"..." : "\"", out);
}

/* Compares one case; prints a line; returns 1 if it passed. */
static int check_case(const lp_tokenizer *tok, const lp_json *c, size_t index) {
    const lp_json *text = lp_json_get(c, "text"), *ids = lp_json_get(c, "ids"), *pieces = lp_json_get(c, "pieces");
    if (!text || text->type != LP_JSON_STRING || !ids || ids->type != LP_JSON_ARRAY || !pieces ||
        pieces->type != LP_JSON_ARRAY || pieces->count != ids->count) {
        printf("FAIL case %zu: needs \"text\" (string) and \"ids\", \"pieces\" (arrays of equal length)\n", index);
        return 0;
    }
    lp_tokens tk;
    if (lp_tokenizer_encode(tok, text->str, text->str_len, &tk) != LP_OK) {
        printf("FAIL case %zu: %s\n", index, lp_last_error());
        return 0;
    }
    size_t bad = tk.n != ids->count ? (tk.n < ids->count ? tk.n : ids->count) : SIZE_MAX;
    for (size_t i = 0; i < tk.n && i < ids->count && bad == SIZE_MAX; i++) {
        int64_t want;
        const lp_json *p = &pieces->children[i];
        if (lp_json_int64(&ids->children[i], &want) != LP_OK || want != tk.ids[i] || p->type != LP_JSON_STRING ||
            p->str_len != tk.piece_len[i] || memcmp(p->str, tk.text + tk.piece_off[i], p->str_len))
            bad = i;
    }
    if (bad == SIZE_MAX) {
        printf("ok   case %zu (%zu tokens) ", index, tk.n);
        print_short(stdout, text->str, text->str_len, 48);
        putchar('\n');
    } else {
        printf("FAIL case %zu ", index);
        print_short(stdout, text->str, text->str_len, 48);
        printf(": %zu tokens, expected %zu; first difference at token %zu", tk.n, ids->count, bad);
        if (bad < tk.n) {
            printf(": got %d ", (int)tk.ids[bad]);
            print_short(stdout, tk.text + tk.piece_off[bad], tk.piece_len[bad], 32);
        }
        if (bad < ids->count && pieces->children[bad].type == LP_JSON_STRING) {
            printf(", expected %s ", ids->children[bad].str ? ids->children[bad].str : "?");
            print_short(stdout, pieces->children[bad].str, pieces->children[bad].str_len, 32);
        }
        putchar('\n');
    }
    lp_tokens_free(&tk);
    return bad == SIZE_MAX;
}

int lp_tokenize_check_main(int argc, char **argv) {
    if (argc != 2 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
        fprintf(argc == 1 ? stdout : stderr,
                "usage: lipar tokenize-check MODEL.model CASES.json\n"
                "  encodes every case {\"text\", \"ids\", \"pieces\"} of CASES.json and compares exactly\n");
        return argc == 1 ? 0 : 2;
    }
    lp_tokenizer *tok;
    if (lp_tokenizer_load(argv[0], &tok) != LP_OK) {
        fprintf(stderr, "tokenize-check: %s\n", lp_last_error());
        return 1;
    }
    size_t len;
    char *json = read_file(argv[1], &len);
    if (!json) {
        fprintf(stderr, "tokenize-check: %s: cannot read\n", argv[1]);
        lp_tokenizer_free(tok);
        return 1;
    }
    lp_json_doc *doc;
    lp_status s = lp_json_parse(json, len, argv[1], &doc);
    free(json);
    if (s != LP_OK) {
        fprintf(stderr, "tokenize-check: %s\n", lp_last_error());
        lp_tokenizer_free(tok);
        return 1;
    }
    const lp_json *cases = lp_json_get(lp_json_root(doc), "cases");
    int passed = 0, failed = 0;
    if (!cases || cases->type != LP_JSON_ARRAY) {
        fprintf(stderr, "tokenize-check: %s: no \"cases\" array\n", argv[1]);
        failed = 1;
    } else {
        for (size_t i = 0; i < cases->count; i++) {
            if (check_case(tok, &cases->children[i], i)) passed++; else failed++;
        }
    }
    printf("check: %d passed, %d failed\n", passed, failed);
    lp_json_free(doc);
    lp_tokenizer_free(tok);
    return failed ? 1 : 0;
}

int lp_tokenize_main(int argc, char **argv) {
    int wan = 0, L = 512, help = 0, bad = 0;
    const char *model = NULL, *text = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--wan")) wan = 1;
        else if (!strcmp(argv[i], "--len") && i + 1 < argc) L = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) help = 1;
        else if (!model) model = argv[i];
        else if (!text) text = argv[i];
        else bad = 1;
    }
    if (help || bad || !model || !text) {
        fprintf(help ? stdout : stderr,
                "usage: lipar tokenize MODEL.model [--wan [--len L]] TEXT\n"
                "  prints the ids and pieces of TEXT; --wan: Wan's cleaned prompt ids with </s>, padded to L (512)\n");
        return help ? 0 : 2;
    }
    lp_tokenizer *tok;
    if (lp_tokenizer_load(model, &tok) != LP_OK) {
        fprintf(stderr, "tokenize: %s\n", lp_last_error());
        return 1;
    }
    int rc = 0;
    if (wan) {
        int32_t *ids = malloc((L > 0 ? (size_t)L : 1) * sizeof *ids);
        uint8_t *mask = malloc(L > 0 ? (size_t)L : 1);
        int n = 0;
        if (!ids || !mask || lp_tokenizer_encode_prompt(tok, text, L, ids, mask, &n) != LP_OK) {
            fprintf(stderr, "tokenize: %s\n", ids && mask ? lp_last_error() : "out of memory");
            rc = 1;
        } else {
            printf("tokens: %d of %d (the rest is padding 0, mask 0)\nids:", n, L);
            for (int i = 0; i < n; i++) printf(" %d", (int)ids[i]);
            printf("\npieces:");
            for (int i = 0; i < n; i++) printf(" %s", lp_tokenizer_piece(tok, ids[i]));
            putchar('\n');
        }
        free(ids);
        free(mask);
    } else {
        lp_tokens tk;
        if (lp_tokenizer_encode(tok, text, strlen(text), &tk) != LP_OK) {
            fprintf(stderr, "tokenize: %s\n", lp_last_error());
            rc = 1;
        } else {
            printf("tokens: %zu\nids:", tk.n);
            for (size_t i = 0; i < tk.n; i++) printf(" %d", (int)tk.ids[i]);
            printf("\npieces:");
            for (size_t i = 0; i < tk.n; i++) printf(" %.*s", (int)tk.piece_len[i], tk.text + tk.piece_off[i]);
            putchar('\n');
            lp_tokens_free(&tk);
        }
    }
    lp_tokenizer_free(tok);
    return rc;
}
