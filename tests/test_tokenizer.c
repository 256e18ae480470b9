/* SentencePiece unigram tokenizer: the golden cases of spm_unigram_600.json,
 * the reference library's spm_encode/spm_decode on the LIPAR prompts and on
 * random strings built from them (also with synthetic models exercising
 * user-defined, unused and byte pieces and the normalizer flags), Viterbi
 * against an exhaustive search, Wan's prompt cleaning, and malformed models. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/base/json.h"
#include "../src/io/protobuf.h"
#include "../src/model/tokenizer.h"
#include "test_util.h"

#define GOLDEN_MODEL "golden/spm_unigram_600.model"
#define GOLDEN_CASES "golden/spm_unigram_600.json"
#define PROMPTS "data/davis_prompts.jsonl"
#define SP "\xe2\x96\x81" /* U+2581 */

/* ---- small helpers ---- */

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

static int write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

static lp_tokenizer *golden_tokenizer(void) {
    const char *p = lp_test_shared(GOLDEN_MODEL);
    lp_tokenizer *tok = NULL;
    if (p && lp_tokenizer_load(p, &tok) != LP_OK) fprintf(stderr, "  %s\n", lp_last_error());
    return tok;
}

static uint32_t rng_state;
static uint32_t rnd(uint32_t n) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (uint32_t)(((uint64_t)(rng_state >> 8) * n) >> 24);
}

/* A list of text lines (no '\n' inside). */
typedef struct {
    char **s;
    size_t n, cap;
} lines;

static void lines_add(lines *l, const char *s, size_t len) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->s = realloc(l->s, l->cap * sizeof *l->s);
    }
    char *c = malloc(len + 1);
    memcpy(c, s, len);
    c[len] = 0;
    l->s[l->n++] = c;
}

static void lines_free(lines *l) {
    for (size_t i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    memset(l, 0, sizeof *l);
}

static int has_spm(void) { return system("command -v spm_encode >/dev/null 2>&1 && command -v spm_decode >/dev/null 2>&1") == 0; }

/* Runs `tool --model=MODEL ARGS < in > out`, in/out in the test directory. */
static int run_spm(const char *tool, const char *model, const char *args, const char *in, const char *out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s --model='%s' %s < '%s/%s' > '%s/%s' 2>/dev/null", tool, model, args,
             lp_test_tmpdir(), in, lp_test_tmpdir(), out);
    return system(cmd) == 0;
}

static int write_lines(const char *name, const lines *l) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", lp_test_tmpdir(), name);
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    for (size_t i = 0; i < l->n; i++) fprintf(f, "%s\n", l->s[i]);
    return fclose(f) == 0;
}

static int read_lines(const char *name, lines *l) {
    char path[512];
    size_t len;
    snprintf(path, sizeof path, "%s/%s", lp_test_tmpdir(), name);
    char *buf = slurp(path, &len);
    if (!buf) return 0;
    for (size_t a = 0; a < len;) {
        char *nl = memchr(buf + a, '\n', len - a);
        size_t b = nl ? (size_t)(nl - buf) : len;
        lines_add(l, buf + a, b - a);
        a = b + 1;
    }
    free(buf);
    return 1;
}

/* "5 12 7" -> ids; returns the count. */
static size_t parse_ids(const char *s, int32_t *ids, size_t max) {
    size_t n = 0;
    char *end;
    for (;;) {
        long v = strtol(s, &end, 10);
        if (end == s || n == max) break;
        ids[n++] = (int32_t)v;
        s = end;
    }
    return n;
}

/* The pieces of tk joined by ' ', as spm_encode prints them. */
static char *join_pieces(const lp_tokens *tk) {
    size_t len = 1;
    for (size_t i = 0; i < tk->n; i++) len += tk->piece_len[i] + 1;
    char *s = malloc(len), *w = s;
    for (size_t i = 0; i < tk->n; i++) {
        if (i) *w++ = ' ';
        memcpy(w, tk->text + tk->piece_off[i], tk->piece_len[i]);
        w += tk->piece_len[i];
    }
    *w = 0;
    return s;
}

/* ---- a tiny protobuf writer for synthetic models ---- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} pbw;

static void pbw_raw(pbw *w, const void *d, size_t n) {
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 64;
        w->p = realloc(w->p, w->cap);
    }
    if (n) memcpy(w->p + w->n, d, n);
    w->n += n;
}
static void pbw_varint(pbw *w, uint64_t v) {
    uint8_t b[10];
    size_t n = 0;
    do {
        b[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) b[n] |= 0x80;
        n++;
    } while (v);
    pbw_raw(w, b, n);
}
static void pbw_tag(pbw *w, unsigned field, unsigned wire) { pbw_varint(w, (uint64_t)field << 3 | wire); }
static void pbw_bytes(pbw *w, unsigned field, const void *d, size_t n) {
    pbw_tag(w, field, 2);
    pbw_varint(w, n);
    pbw_raw(w, d, n);
}
static void pbw_uint(pbw *w, unsigned field, uint64_t v) {
    pbw_tag(w, field, 0);
    pbw_varint(w, v);
}
static void pbw_float(pbw *w, unsigned field, float f) {
    uint8_t b[4];
    memcpy(b, &f, 4);
    pbw_tag(w, field, 5);
    pbw_raw(w, b, 4);
}

typedef struct {
    const char *s;
    float score;
    int type;
} tpiece;

typedef struct {
    int model_type, byte_fallback, ws_suffix;
    const char *unk_surface;
    const uint8_t *charsmap;
    size_t charsmap_len;
    int add_dummy_prefix, remove_extra_ws, escape_ws; /* -1: absent (default true) */
} tspec;

static void pbw_piece(pbw *m, const char *s, float score, int type) {
    pbw p = {0};
    pbw_bytes(&p, 1, s, strlen(s));
    pbw_float(&p, 2, score);
    if (type != LP_PIECE_NORMAL) pbw_uint(&p, 3, (uint64_t)type);
    pbw_bytes(m, 1, p.p, p.n);
    free(p.p);
}

static void build_model(pbw *m, const tpiece *pc, size_t n, const tspec *sp) {
    for (size_t i = 0; i < n; i++) pbw_piece(m, pc[i].s, pc[i].score, pc[i].type);
    if (sp->byte_fallback)
        for (int b = 0; b < 256; b++) {
            char s[8];
            snprintf(s, sizeof s, "<0x%02X>", b);
            pbw_piece(m, s, 0.0f, LP_PIECE_BYTE);
        }
    pbw t = {0}, z = {0};
    pbw_uint(&t, 3, (uint64_t)sp->model_type);
    if (sp->ws_suffix) pbw_uint(&t, 24, 1);
    if (sp->byte_fallback) pbw_uint(&t, 35, 1);
    pbw_uint(&t, 40, 0);
    pbw_uint(&t, 41, 1);
    pbw_uint(&t, 42, 2);
    pbw_uint(&t, 43, (uint64_t)-1); /* pad_id -1: a 10-byte varint */
    if (sp->unk_surface) pbw_bytes(&t, 44, sp->unk_surface, strlen(sp->unk_surface));
    pbw_bytes(m, 2, t.p, t.n);
    pbw_bytes(&z, 1, sp->charsmap ? "nmt_nfkc" : "identity", sp->charsmap ? 8 : 8);
    if (sp->charsmap) pbw_bytes(&z, 2, sp->charsmap, sp->charsmap_len);
    if (sp->add_dummy_prefix >= 0) pbw_uint(&z, 3, (uint64_t)sp->add_dummy_prefix);
    if (sp->remove_extra_ws >= 0) pbw_uint(&z, 4, (uint64_t)sp->remove_extra_ws);
    if (sp->escape_ws >= 0) pbw_uint(&z, 5, (uint64_t)sp->escape_ws);
    pbw_bytes(m, 3, z.p, z.n);
    free(t.p);
    free(z.p);
}

static const tspec default_spec = {1, 0, 0, NULL, NULL, 0, -1, -1, -1};

/* A small vocabulary: specials, '▁', letters, some words; scores from a fixed
 * pseudo-random draw. user/unused add USER_DEFINED and UNUSED pieces. */
static size_t small_vocab(tpiece *pc, int user, int unused) {
    static const char *words[] = {SP, SP "the", "th", "he", SP "a", "ing", SP "c", "at", SP "cat", SP "do", "og",
                                  SP "dog", "in", "an", SP "an", "er", ".", ",", "!", "\xc3\xa9", "\xe6\xbc\xa2",
                                  "1", "2", SP SP, " the", " a", " ", "e ", "12"};
    static char letters[26][2];
    size_t n = 0;
    uint32_t saved = rng_state;
    rng_state = 12345;
    pc[n++] = (tpiece){"<unk>", 0.0f, LP_PIECE_UNKNOWN};
    pc[n++] = (tpiece){"<s>", 0.0f, LP_PIECE_CONTROL};
    pc[n++] = (tpiece){"</s>", 0.0f, LP_PIECE_CONTROL};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        pc[n++] = (tpiece){words[i], -1.0f - (float)rnd(1000) / 100.0f, LP_PIECE_NORMAL};
    for (int c = 0; c < 26; c++) {
        letters[c][0] = (char)('a' + c);
        if (unused && c == 'q' - 'a') continue;
        pc[n++] = (tpiece){letters[c], -3.0f - (float)rnd(1000) / 100.0f, LP_PIECE_NORMAL};
    }
    /* "ΩΨ" (-1) vs "Ω" "Ψ" (-0.5 - (0.5 - 2^-25)): equal in float, the second
     * better in double, where the reference compares. */
    pc[n++] = (tpiece){"\xce\xa9\xce\xa8", -1.0f, LP_PIECE_NORMAL};
    pc[n++] = (tpiece){"\xce\xa9", -0.5f, LP_PIECE_NORMAL};
    pc[n++] = (tpiece){"\xce\xa8", -(0.5f - 0x1p-25f), LP_PIECE_NORMAL};
    /* "ΦΣ" (-1) vs "Φ" "Σ" (-0.5 - 0.5): an exact tie, the first found stays */
    pc[n++] = (tpiece){"\xce\xa6\xce\xa3", -1.0f, LP_PIECE_NORMAL};
    pc[n++] = (tpiece){"\xce\xa6", -0.5f, LP_PIECE_NORMAL};
    pc[n++] = (tpiece){"\xce\xa3", -0.5f, LP_PIECE_NORMAL};
    if (unused) {
        pc[n++] = (tpiece){"q", -2.0f, LP_PIECE_UNUSED};
        pc[n++] = (tpiece){SP "zz", -1.0f, LP_PIECE_UNUSED};
    }
    if (user) {
        pc[n++] = (tpiece){"<sep>", 0.0f, LP_PIECE_USER_DEFINED};
        pc[n++] = (tpiece){"@@", 0.0f, LP_PIECE_USER_DEFINED};
        pc[n++] = (tpiece){"cat dog", 0.0f, LP_PIECE_USER_DEFINED};
        /* Positive scores make max_score 0.7: "@@" then scores 2 * 0.7 - 0.1 = 1.3
         * and loses to "@" "@" (1.4); "ñü" scores 4 bytes * 0.7 - 0.1 = 2.7 and
         * beats "ñ" "ü" (1.4). */
        pc[n++] = (tpiece){"@", 0.7f, LP_PIECE_NORMAL};
        pc[n++] = (tpiece){"\xc3\xb1", 0.7f, LP_PIECE_NORMAL};
        pc[n++] = (tpiece){"\xc3\xbc", 0.7f, LP_PIECE_NORMAL};
        pc[n++] = (tpiece){"\xc3\xb1\xc3\xbc", 0.0f, LP_PIECE_USER_DEFINED};
        /* full-width: NFKC would rewrite it, but user-defined pieces are kept */
        pc[n++] = (tpiece){"\xef\xbc\xa1\xef\xbc\xa2", 0.0f, LP_PIECE_USER_DEFINED};
    }
    rng_state = saved;
    return n;
}

/* ---- golden cases ---- */

static int test_golden_cases(void) {
    const char *cases_path = lp_test_shared(GOLDEN_CASES);
    if (!cases_path) return lp_test_skip_shared(GOLDEN_CASES);
    size_t len;
    char *json = slurp(cases_path, &len);
    CHECK(json, "cannot read %s", GOLDEN_CASES);
    lp_json_doc *doc;
    CHECK(lp_json_parse(json, len, GOLDEN_CASES, &doc) == LP_OK, "%s", lp_last_error());
    free(json);
    lp_tokenizer *tok = golden_tokenizer();
    CHECK(tok);
    CHECK(lp_tokenizer_vocab_size(tok) == 600);
    CHECK(lp_tokenizer_unk_id(tok) == 2);
    const lp_json *cases = lp_json_get(lp_json_root(doc), "cases");
    CHECK(cases && cases->type == LP_JSON_ARRAY && cases->count >= 8);
    size_t tokens = 0;
    for (size_t c = 0; c < cases->count; c++) {
        const lp_json *cs = &cases->children[c];
        const lp_json *text = lp_json_get(cs, "text"), *ids = lp_json_get(cs, "ids"), *pieces = lp_json_get(cs, "pieces");
        CHECK(text && ids && pieces && ids->count == pieces->count);
        lp_tokens tk;
        CHECK(lp_tokenizer_encode(tok, text->str, text->str_len, &tk) == LP_OK, "%s", lp_last_error());
        CHECK(tk.n == ids->count, "case %zu: %zu tokens, expected %zu", c, tk.n, ids->count);
        for (size_t i = 0; i < tk.n; i++) {
            int64_t want;
            CHECK(lp_json_int64(&ids->children[i], &want) == LP_OK);
            CHECK(tk.ids[i] == want, "case %zu token %zu: id %d, expected %lld", c, i, (int)tk.ids[i], (long long)want);
            CHECK(tk.piece_len[i] == pieces->children[i].str_len &&
                      !memcmp(tk.text + tk.piece_off[i], pieces->children[i].str, tk.piece_len[i]),
                  "case %zu token %zu: piece %.*s, expected %s", c, i, (int)tk.piece_len[i], tk.text + tk.piece_off[i],
                  pieces->children[i].str);
        }
        tokens += tk.n;
        lp_tokens_free(&tk);
    }
    printf("    %zu cases, %zu tokens: ids and pieces exact\n", cases->count, tokens);
    lp_tokenizer_free(tok);
    lp_json_free(doc);
    return 0;
}

/* ---- comparison with spm_encode / spm_decode ---- */

static void add_utf8(char *buf, size_t *n, uint32_t c) {
    if (c < 0x80) buf[(*n)++] = (char)c;
    else if (c < 0x800) {
        buf[(*n)++] = (char)(0xC0 | (c >> 6));
        buf[(*n)++] = (char)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        buf[(*n)++] = (char)(0xE0 | (c >> 12));
        buf[(*n)++] = (char)(0x80 | ((c >> 6) & 0x3F));
        buf[(*n)++] = (char)(0x80 | (c & 0x3F));
    } else {
        buf[(*n)++] = (char)(0xF0 | (c >> 18));
        buf[(*n)++] = (char)(0x80 | ((c >> 12) & 0x3F));
        buf[(*n)++] = (char)(0x80 | ((c >> 6) & 0x3F));
        buf[(*n)++] = (char)(0x80 | (c & 0x3F));
    }
}

/* A random variation of prompt: mixed case, full-width letters, accents, CJK,
 * emoji, punctuation, tabs and repeated spaces, odd Unicode and, rarely,
 * malformed UTF-8. */
static void mutate(const char *prompt, char *out, size_t cap) {
    static const char *inserts[] = {
        "\xc3\xa9", "\xc3\xb1", "\xc3\xbc", "\xc3\xa7", "\xc3\x85", "e\xcc\x81", "\xe6\xbc\xa2\xe5\xad\x97",
        "\xe6\x9d\xb1\xe4\xba\xac", "\xe3\x81\x8b\xe3\x81\xaa", "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4",
        "\xf0\x9f\x8e\xac", "\xf0\x9f\x90\xa7", "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", "\xe2\x9d\xa4\xef\xb8\x8f",
        "!", "?", "...", ",", ";", ":", "\"", "'", "(", ")", "[", "]", "\xe2\x80\x94", "\xe2\x80\xa6",
        "\t", "  ", "   ", "\xc2\xa0", "\xe3\x80\x80", "\xe2\x80\x8b", "\xef\xac\x81", "\xe2\x85\xab",
        "\xe2\x91\xa0", "\xc2\xb2", "\xe2\x96\x81", "\xef\xbf\xbd", "\xe2\x80\x9c", "\xe2\x80\x9d", "4K", "8k",
        "16fps", "3.14", "2026-11-26", "\xef\xbd\x81\xef\xbd\x82", "\xef\xbc\xa1\xef\xbc\xa2\xef\xbc\xa3",
        "\xe2\x84\xa2", "\xc2\xbd", "\xe3\x8d\xbf", "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82",
        "\xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7", "\xe0\xa4\xa8\xe0\xa4\xae", "\xef\xbd\xb6\xef\xbe\x9e", "\xff", "\xc3", "\xe2\x82",
    };
    const size_t n_ins = sizeof inserts / sizeof *inserts;
    size_t n = 0;
    int mode = (int)rnd(6);
    for (const char *p = prompt; *p && n + 16 < cap; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x80) {
            if (mode == 1 && c >= 'a' && c <= 'z') c = (unsigned char)(c - 32);
            else if (mode == 2 && rnd(2) && ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) c ^= 0x20;
            if (mode == 3 && rnd(4) == 0 && c > 0x20 && c < 0x7f) {
                add_utf8(out, &n, 0xFF00 + c - 0x20); /* full width */
                continue;
            }
            if (c == ' ' && rnd(5) == 0) {
                const char *ws[] = {"\t", "  ", " \t ", "\xe3\x80\x80", "\xc2\xa0"};
                const char *w = ws[rnd(5)];
                size_t k = strlen(w);
                memcpy(out + n, w, k);
                n += k;
                continue;
            }
        }
        out[n++] = (char)c;
        if (rnd(12) == 0) {
            const char *s = inserts[rnd((uint32_t)(mode == 4 ? n_ins : n_ins - 3))]; /* malformed only in mode 4 */
            size_t k = strlen(s);
            if (n + k + 16 < cap) {
                memcpy(out + n, s, k);
                n += k;
            }
        }
    }
    if (mode == 5) { /* leading/trailing blanks */
        memmove(out + 2, out, n);
        out[0] = ' ';
        out[1] = '\t';
        n += 2;
        out[n++] = ' ';
        out[n++] = ' ';
    }
    out[n] = 0;
}

/* The prompts of davis_prompts.jsonl plus nrand random variations. */
static int load_prompt_lines(lines *l, size_t nrand) {
    const char *path = lp_test_shared(PROMPTS);
    if (!path) return 0;
    size_t len;
    char *buf = slurp(path, &len);
    if (!buf) return 0;
    lines prompts = {0};
    for (size_t a = 0; a < len;) {
        char *nl = memchr(buf + a, '\n', len - a);
        size_t b = nl ? (size_t)(nl - buf) : len;
        lp_json_doc *doc;
        if (b > a && lp_json_parse(buf + a, b - a, PROMPTS, &doc) == LP_OK) {
            const lp_json *p = lp_json_get(lp_json_root(doc), "prompt");
            if (p && p->type == LP_JSON_STRING) lines_add(&prompts, p->str, p->str_len);
            lp_json_free(doc);
        }
        a = b + 1;
    }
    free(buf);
    for (size_t i = 0; i < prompts.n; i++) lines_add(l, prompts.s[i], strlen(prompts.s[i]));
    rng_state = 2024;
    char tmp[4096];
    for (size_t i = 0; i < nrand && prompts.n; i++) {
        const char *p = prompts.s[rnd((uint32_t)prompts.n)];
        size_t plen = strlen(p), from = rnd((uint32_t)plen), to = from + rnd((uint32_t)(plen - from + 1));
        char frag[1024];
        size_t fl = to - from < sizeof frag - 1 ? to - from : sizeof frag - 1;
        memcpy(frag, p + from, fl);
        frag[fl] = 0;
        mutate(i % 3 == 0 ? p : frag, tmp, sizeof tmp);
        lines_add(l, tmp, strlen(tmp));
    }
    lines_free(&prompts);
    return 1;
}

/* Encodes every line with tok and compares with spm_encode (ids, and pieces
 * if with_pieces) and our decode of the ids with spm_decode. Returns the
 * number of mismatching lines (printing the first few). */
static int compare_with_spm(const lp_tokenizer *tok, const char *model_path, const lines *in, int with_pieces,
                            size_t *n_tokens) {
    lines ids = {0}, pieces = {0}, decoded = {0};
    int bad = 0;
    if (!write_lines("in.txt", in) || !run_spm("spm_encode", model_path, "--output_format=id", "in.txt", "ids.txt") ||
        (with_pieces && !run_spm("spm_encode", model_path, "--output_format=piece", "in.txt", "pieces.txt")) ||
        !read_lines("ids.txt", &ids) || (with_pieces && !read_lines("pieces.txt", &pieces)) ||
        !run_spm("spm_decode", model_path, "--input_format=id", "ids.txt", "dec.txt") ||
        !read_lines("dec.txt", &decoded)) {
        fprintf(stderr, "  running spm_encode/spm_decode on %s failed\n", model_path);
        return 1000000;
    }
    if (ids.n != in->n || (with_pieces && pieces.n != in->n) || decoded.n != in->n) {
        fprintf(stderr, "  spm output has %zu/%zu/%zu lines for %zu inputs\n", ids.n, pieces.n, decoded.n, in->n);
        bad = 1000000;
        goto done;
    }
    int32_t *want = malloc(65536 * sizeof *want);
    for (size_t i = 0; i < in->n; i++) {
        lp_tokens tk;
        if (lp_tokenizer_encode(tok, in->s[i], strlen(in->s[i]), &tk) != LP_OK) {
            fprintf(stderr, "  line %zu: %s\n", i, lp_last_error());
            bad++;
            continue;
        }
        size_t nw = parse_ids(ids.s[i], want, 65536);
        int ok = nw == tk.n;
        for (size_t k = 0; ok && k < nw; k++) ok = want[k] == tk.ids[k];
        char *joined = join_pieces(&tk);
        if (ok && with_pieces) ok = !strcmp(joined, pieces.s[i]);
        char *dec = NULL;
        size_t dec_len;
        if (ok && lp_tokenizer_decode(tok, tk.ids, tk.n, &dec, &dec_len) == LP_OK)
            ok = dec_len == strlen(decoded.s[i]) && !memcmp(dec, decoded.s[i], dec_len);
        else ok = 0;
        if (!ok && bad++ < 5) {
            fprintf(stderr, "  line %zu mismatch: [%s]\n    ours: ", i, in->s[i]);
            for (size_t k = 0; k < tk.n; k++) fprintf(stderr, " %d", (int)tk.ids[k]);
            fprintf(stderr, " | %s\n    spm:   %s | %s\n    decoded: ours [%s] spm [%s]\n", joined, ids.s[i],
                    with_pieces ? pieces.s[i] : "", dec ? dec : "(error)", decoded.s[i]);
        }
        *n_tokens += tk.n;
        free(dec);
        free(joined);
        lp_tokens_free(&tk);
    }
    free(want);
done:
    lines_free(&ids);
    lines_free(&pieces);
    lines_free(&decoded);
    return bad;
}

static int test_spm_encode_prompts(void) {
    const char *model = lp_test_shared(GOLDEN_MODEL);
    if (!model) return lp_test_skip_shared(GOLDEN_MODEL);
    char model_path[1024];
    snprintf(model_path, sizeof model_path, "%s", model);
    if (!has_spm()) {
        printf("  (skipping: spm_encode/spm_decode not installed)\n");
        return LP_TEST_SKIP;
    }
    lines in = {0};
    if (!load_prompt_lines(&in, 450)) return lp_test_skip_shared(PROMPTS);
    lp_tokenizer *tok = golden_tokenizer();
    CHECK(tok);
    size_t n_tokens = 0;
    int bad = compare_with_spm(tok, model_path, &in, 1, &n_tokens);
    printf("    %zu lines (51 prompts + 450 random), %zu tokens, %d mismatches vs spm_encode/spm_decode\n", in.n,
           n_tokens, bad);
    lp_tokenizer_free(tok);
    lines_free(&in);
    CHECK(bad == 0);
    return 0;
}

/* Extracts the golden model's precompiled_charsmap (normalizer_spec field 2). */
static uint8_t *golden_charsmap(size_t *len) {
    const char *p = lp_test_shared(GOLDEN_MODEL);
    size_t n;
    char *data = p ? slurp(p, &n) : NULL;
    if (!data) return NULL;
    lp_pb_reader r, z;
    lp_pb_field f, g;
    int has;
    uint8_t *out = NULL;
    lp_pb_init(&r, data, n, "golden", 0);
    while (!out && lp_pb_next(&r, &f, &has) == LP_OK && has) {
        if (f.number != 3) continue;
        lp_pb_sub(&r, &f, "normalizer", &z);
        while (lp_pb_next(&z, &g, &has) == LP_OK && has)
            if (g.number == 2) {
                out = malloc(g.len);
                memcpy(out, g.data, g.len);
                *len = g.len;
            }
    }
    free(data);
    return out;
}

/* Synthetic models through spm_encode/spm_decode: user-defined, unused and
 * byte pieces, the real charsmap with other whitespace flags, a custom
 * unk_surface, whitespace as suffix without escaping. */
static int test_spm_synthetic_models(void) {
    if (!has_spm()) {
        printf("  (skipping: spm_encode/spm_decode not installed)\n");
        return LP_TEST_SKIP;
    }
    lines in = {0};
    static const char *fixed[] = {
        "the cat<sep>at@@ the", "  the  cat  dog ", "qqq zz q", "user<sep><sep>", "cat dog", "cat  dog", "a",
        "", " ", "\t", "the\xe2\x96\x81\xe2\x96\x81" "cat", "\xf0\x9f\x90\xa7\xf0\x9f\x90\xa7 the \xf0\x9f\x90\xa7",
        "\xc3\xa9\xc3\xa9 \xe6\xbc\xa2\xe5\xad\x97", "12 121 1212", "\xff\xfe ok", "The Cat.  DOG!",
        "\xc3\xb1\xc3\xbc x \xc3\xb1\xc3\xbc\xc3\xb1 @@@ a@@b", "\xef\xbc\xa1\xef\xbc\xa2 \xef\xbc\xa1\xef\xbc\xa2\xef\xbc\xa3",
        "\xce\xa9\xce\xa8 \xce\xa9\xce\xa8\xce\xa9 \xce\xa6\xce\xa3\xce\xa6", "\xef\xbd\xb6\xef\xbe\x9e\xef\xbd\xb6",
    };
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) lines_add(&in, fixed[i], strlen(fixed[i]));
    if (lp_test_shared(PROMPTS)) {
        lines more = {0};
        load_prompt_lines(&more, 80);
        for (size_t i = 0; i < more.n; i += 2) lines_add(&in, more.s[i], strlen(more.s[i]));
        lines_free(&more);
    }
    size_t cm_len = 0;
    uint8_t *cm = golden_charsmap(&cm_len);
    tpiece pc[128];
    struct {
        const char *name;
        int user, unused, pieces, nfkc;
        tspec sp;
    } variants[] = {
        {"user+unused+byte_fallback", 1, 1, 1, 0, {1, 1, 0, NULL, NULL, 0, -1, -1, -1}},
        {"nfkc, no dummy prefix, keep spaces, unk_surface", 1, 0, 1, 1, {1, 0, 0, "<?>", cm, cm_len, 0, 0, -1}},
        {"nfkc, dummy prefix, keep spaces", 0, 1, 1, 1, {1, 0, 0, NULL, cm, cm_len, 1, 0, 1}},
        {"whitespace as suffix, unescaped", 1, 0, 0, 0, {1, 0, 1, NULL, NULL, 0, -1, -1, 0}},
    };
    int bad_total = 0;
    for (size_t v = 0; v < sizeof variants / sizeof *variants; v++) {
        if (variants[v].nfkc && !cm) continue; /* needs the golden model's charsmap */
        size_t n = small_vocab(pc, variants[v].user, variants[v].unused);
        pbw m = {0};
        build_model(&m, pc, n, &variants[v].sp);
        char path[512];
        snprintf(path, sizeof path, "%s/synthetic%zu.model", lp_test_tmpdir(), v);
        CHECK(write_file(path, m.p, m.n));
        lp_tokenizer *tok;
        CHECK(lp_tokenizer_load_memory(m.p, m.n, path, &tok) == LP_OK, "%s: %s", variants[v].name, lp_last_error());
        size_t n_tokens = 0;
        int bad = compare_with_spm(tok, path, &in, variants[v].pieces, &n_tokens);
        printf("    %-48s %zu lines, %zu tokens, %d mismatches\n", variants[v].name, in.n, n_tokens, bad);
        bad_total += bad;
        lp_tokenizer_free(tok);
        free(m.p);
    }
    free(cm);
    lines_free(&in);
    CHECK(bad_total == 0);
    return 0;
}

/* ---- Viterbi against an exhaustive search ---- */

/* Best total score over all segmentations of s[0..n) into vocabulary pieces
 * and single unknown characters (scored like the reference), in double. */
static double brute_best(const lp_tokenizer *tok, const char *s, size_t n, float unk_score, float max_score) {
    if (n == 0) return 0.0;
    double best = -1e300;
    size_t cl = ((unsigned char)s[0] >> 4) == 0xF ? 4 : ((unsigned char)s[0] >> 4) == 0xE ? 3 : ((unsigned char)s[0] >> 4) >= 0xC ? 2 : 1;
    int single = 0;
    for (size_t len = 1; len <= n; len++) {
        int id = lp_tokenizer_find(tok, s, len);
        lp_piece_type ty = lp_tokenizer_piece_type(tok, id);
        if (id < 0 || (ty != LP_PIECE_NORMAL && ty != LP_PIECE_USER_DEFINED)) continue;
        if (len == cl) single = 1;
        double sc = ty == LP_PIECE_USER_DEFINED ? (double)((float)len * max_score) - 0.1 : lp_tokenizer_score(tok, id);
        double r = sc + brute_best(tok, s + len, n - len, unk_score, max_score);
        if (r > best) best = r;
    }
    if (!single) {
        double r = unk_score + brute_best(tok, s + cl, n - cl, unk_score, max_score);
        if (r > best) best = r;
    }
    return best;
}

static int test_viterbi_vs_exhaustive(void) {
    tpiece pc[128];
    size_t n = small_vocab(pc, 1, 1);
    pbw m = {0};
    build_model(&m, pc, n, &default_spec);
    lp_tokenizer *tok;
    CHECK(lp_tokenizer_load_memory(m.p, m.n, "synthetic", &tok) == LP_OK, "%s", lp_last_error());
    free(m.p);
    float min_score = 1e30f, max_score = 1.17549435e-38f; /* FLT_MIN, as the reference starts */
    for (int i = 0; i < lp_tokenizer_vocab_size(tok); i++)
        if (lp_tokenizer_piece_type(tok, i) == LP_PIECE_NORMAL) {
            float sc = lp_tokenizer_score(tok, i);
            if (sc < min_score) min_score = sc;
            if (sc > max_score) max_score = sc;
        }
    static const char *alphabet[] = {"t", "h", "e", "a", "c", "o", "g", "d", "q", " ", " ", "\xc3\xa9", "1", "2",
                                     "<sep>", "@@", "z", "\xf0\x9f\x90\xa7", "i", "n"};
    rng_state = 99;
    double worst = 0;
    for (int trial = 0; trial < 400; trial++) {
        char text[128];
        size_t tl = 0, parts = 1 + rnd(9);
        for (size_t k = 0; k < parts; k++) {
            const char *a = alphabet[rnd(sizeof alphabet / sizeof *alphabet)];
            memcpy(text + tl, a, strlen(a));
            tl += strlen(a);
        }
        char *norm;
        size_t nl;
        CHECK(lp_tokenizer_normalize(tok, text, tl, &norm, &nl) == LP_OK);
        lp_tokens tk;
        CHECK(lp_tokenizer_encode(tok, text, tl, &tk) == LP_OK);
        /* the pieces cover the normalized text exactly */
        size_t covered = 0;
        for (size_t i = 0; i < tk.n; i++) {
            CHECK(tk.piece_off[i] == covered && !memcmp(tk.text + covered, norm + covered, tk.piece_len[i]));
            covered += tk.piece_len[i];
        }
        CHECK(covered == nl, "pieces cover %zu of %zu normalized bytes", covered, nl);
        /* the path's score (unknown runs split per character) is the optimum */
        double ours = 0;
        for (size_t i = 0; i < tk.n; i++) {
            const char *p = tk.text + tk.piece_off[i];
            lp_piece_type ty = lp_tokenizer_piece_type(tok, tk.ids[i]);
            if (tk.ids[i] == lp_tokenizer_unk_id(tok)) {
                for (size_t k = 0; k < tk.piece_len[i];) {
                    unsigned char c = (unsigned char)p[k];
                    k += c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
                    ours += (double)(min_score - 10.0f);
                }
            } else {
                ours += ty == LP_PIECE_USER_DEFINED ? (double)((float)tk.piece_len[i] * max_score) - 0.1
                                                    : lp_tokenizer_score(tok, tk.ids[i]);
            }
        }
        double best = brute_best(tok, norm, nl, min_score - 10.0f, max_score);
        double d = best - ours;
        if (d > worst) worst = d;
        CHECK(d < 1e-4, "[%.*s]: path score %.6f, optimum %.6f", (int)tl, text, ours, best);
        free(norm);
        lp_tokens_free(&tk);
    }
    printf("    400 random strings: Viterbi path score within %.2g of the exhaustive optimum\n", worst);
    lp_tokenizer_free(tok);
    return 0;
}

/* ---- decode ---- */

static int test_decode_round_trip(void) {
    lp_tokenizer *tok = golden_tokenizer();
    if (!tok) return lp_test_skip_shared(GOLDEN_MODEL);
    static const char *texts[] = {"A majestic lion is turning its head to look around in a field.",
                                  "  Two  cute, fluffy penguins\twearing winter scarves!  ", "a", "",
                                  "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ and cafe", "x y  z"};
    static const char *expect[] = {"A majestic lion is turning its head to look around in a field.",
                                   "Two cute, fluffy penguins wearing winter scarves \xe2\x81\x87 ", "a", "", /* "!" is unknown here */
                                   "Fullwidth ABC and cafe", "x y z"};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        lp_tokens tk;
        CHECK(lp_tokenizer_encode(tok, texts[i], strlen(texts[i]), &tk) == LP_OK);
        char *dec;
        size_t dl;
        CHECK(lp_tokenizer_decode(tok, tk.ids, tk.n, &dec, &dl) == LP_OK);
        CHECK(!strcmp(dec, expect[i]), "decode [%s] -> [%s], expected [%s]", texts[i], dec, expect[i]);
        free(dec);
        lp_tokens_free(&tk);
    }
    /* control pieces vanish, <unk> shows as " ⁇ ", leading spaces go */
    int32_t ids[] = {1, 5, 5, 4, 2, 0, 4};
    char *dec;
    CHECK(lp_tokenizer_decode(tok, ids, 7, &dec, NULL) == LP_OK);
    CHECK(!strcmp(dec, "a \xe2\x81\x87  a"), "[%s]", dec);
    free(dec);
    int32_t badid[] = {4, 600};
    CHECK(lp_tokenizer_decode(tok, badid, 2, &dec, NULL) == LP_ERR_ARG && strstr(lp_last_error(), "600"));
    lp_tokenizer_free(tok);
    return 0;
}

/* ---- Wan's prompt pipeline ---- */

static int test_prompt_clean(void) {
    static const char *cases[][2] = {
        {"  A  cat\t\n sits.  ", "A cat sits."},
        {"Tom &amp; Jerry", "Tom & Jerry"},
        {"Tom &amp;amp; Jerry", "Tom & Jerry"}, /* unescaped twice */
        {"&amp;amp;amp;", "&amp;"},
        {"&lt;b&gt;bold&lt;/b&gt;", "<b>bold</b>"},
        {"it&#39;s &#x27;ok&#x27; &#128512;", "it's 'ok' \xf0\x9f\x98\x80"},
        {"&copy 2024 &eacute;t&eacute;", "\xc2\xa9 2024 \xc3\xa9t\xc3\xa9"},
        {"&ampx &notit; &unknown; & ;", "&x \xc2\xacit; &unknown; & ;"},
        {"&#0; &#x110000; &#1; &#150;", "\xef\xbf\xbd \xef\xbf\xbd \xe2\x80\x93"},
        {"caf\xc3\x83\xc2\xa9 na\xc3\x83\xc2\xafve", "caf\xc3\xa9 na\xc3\xafve"}, /* mojibake */
        {"it\xc3\xa2\xe2\x82\xac\xe2\x84\xa2s", "it's"},                               /* â€™ -> ’ -> ' */
        {"\xe2\x80\x9cquoted\xe2\x80\x9d \xe2\x80\x98single\xe2\x80\x99", "\"quoted\" 'single'"},
        {"\x1b[31mred\x1b[0m text", "red text"},
        {"a\r\nb\x0b" "c\x07" "d", "a bcd"},
        {"x\xc2\xa0\xe3\x80\x80y\xe2\x80\x8a", "x y"},
        {"Stra\xc3\x9f\xc2\xbb ok", "Stra\xc3\x9f\xc2\xbb ok"}, /* real text is left alone */
        {"\xef\xbb\xbf" "bom", "bom"},
        {"bad \xff byte", "bad \xef\xbf\xbd byte"},
        {"", ""},
        {" \t\n ", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *out;
        size_t len;
        CHECK(lp_prompt_clean(cases[i][0], strlen(cases[i][0]), &out, &len) == LP_OK);
        CHECK(len == strlen(out) && !strcmp(out, cases[i][1]), "clean [%s] -> [%s], expected [%s]", cases[i][0], out,
              cases[i][1]);
        free(out);
    }
    return 0;
}

static int test_encode_prompt(void) {
    lp_tokenizer *tok = golden_tokenizer();
    if (!tok) return lp_test_skip_shared(GOLDEN_MODEL);
    int32_t ids[512];
    uint8_t mask[512];
    int n;
    /* Cleaning collapses the whitespace, then ids + </s> (1), padded with 0. */
    CHECK(lp_tokenizer_encode_prompt(tok, "  A majestic   lion &amp; a  field. ", 512, ids, mask, &n) == LP_OK,
          "%s", lp_last_error());
    lp_tokens tk;
    const char *clean = "A majestic lion & a field.";
    CHECK(lp_tokenizer_encode(tok, clean, strlen(clean), &tk) == LP_OK);
    CHECK(n == (int)tk.n + 1, "%d tokens, expected %zu", n, tk.n + 1);
    for (size_t i = 0; i < tk.n; i++) CHECK(ids[i] == tk.ids[i] && mask[i] == 1);
    CHECK(ids[tk.n] == 1 && mask[tk.n] == 1);
    for (int i = n; i < 512; i++) CHECK(ids[i] == 0 && mask[i] == 0);
    lp_tokens_free(&tk);
    /* Empty prompt: just </s>. */
    CHECK(lp_tokenizer_encode_prompt(tok, " ", 4, ids, mask, &n) == LP_OK && n == 1);
    CHECK(ids[0] == 1 && ids[1] == 0 && ids[3] == 0 && mask[0] == 1 && mask[1] == 0);
    /* Truncation keeps L-1 tokens and ends with </s>. */
    char longp[3000];
    memset(longp, 'x', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    CHECK(lp_tokenizer_encode_prompt(tok, longp, 512, ids, mask, &n) == LP_OK && n == 512);
    CHECK(ids[511] == 1 && mask[511] == 1 && ids[510] != 1);
    CHECK(lp_tokenizer_encode_prompt(tok, "a b c d e f", 3, ids, mask, &n) == LP_OK && n == 3);
    CHECK(ids[0] == 4 && ids[2] == 1, "%d %d %d", ids[0], ids[1], ids[2]);
    CHECK(lp_tokenizer_encode_prompt(tok, "a", 0, ids, mask, &n) == LP_ERR_ARG);
    lp_tokenizer_free(tok);
    return 0;
}

/* ---- malformed models ---- */

/* Expects loading to fail with code and a message containing needle. */
static int expect_fail(const void *data, size_t len, lp_status code, const char *needle) {
    lp_tokenizer *tok = (lp_tokenizer *)1;
    lp_status s = lp_tokenizer_load_memory(data, len, "bad.model", &tok);
    CHECK(s == code, "expected %s, got %s (%s)", lp_status_name(code), lp_status_name(s), lp_last_error());
    CHECK(tok == NULL);
    CHECK(strstr(lp_last_error(), "bad.model") && strstr(lp_last_error(), needle), "message [%s] lacks [%s]",
          lp_last_error(), needle);
    return 0;
}

static int test_malformed_synthetic(void) {
    tpiece pc[128];
    size_t n = small_vocab(pc, 0, 0);
    pbw m = {0};
    tspec sp = default_spec;
    int r = 0;
    /* a valid baseline */
    build_model(&m, pc, n, &sp);
    lp_tokenizer *tok;
    CHECK(lp_tokenizer_load_memory(m.p, m.n, "ok.model", &tok) == LP_OK, "%s", lp_last_error());
    lp_tokenizer_free(tok);
    free(m.p);
    /* empty vocabulary: specs but no pieces; and an empty file */
    m = (pbw){0};
    build_model(&m, pc, 0, &sp);
    r |= expect_fail(m.p, m.n, LP_ERR_FORMAT, "empty vocabulary");
    free(m.p);
    r |= expect_fail(NULL, 0, LP_ERR_FORMAT, "empty vocabulary");
    /* non-unigram */
    m = (pbw){0};
    sp.model_type = 2;
    build_model(&m, pc, n, &sp);
    r |= expect_fail(m.p, m.n, LP_ERR_UNSUPPORTED, "BPE");
    free(m.p);
    sp = default_spec;
    /* no <unk>, two <unk> */
    m = (pbw){0};
    build_model(&m, pc + 1, n - 1, &sp);
    r |= expect_fail(m.p, m.n, LP_ERR_FORMAT, "UNKNOWN");
    free(m.p);
    m = (pbw){0};
    pbw_piece(&m, "<unk2>", 0, LP_PIECE_UNKNOWN);
    build_model(&m, pc, n, &sp);
    r |= expect_fail(m.p, m.n, LP_ERR_FORMAT, "twice");
    free(m.p);
    /* duplicate, empty, NUL-containing, invalid type */
    const char *dup[] = {"th", "", "a\0b", NULL};
    const char *why[] = {"defined twice", "empty", "NUL", "type"};
    for (int k = 0; k < 4; k++) {
        m = (pbw){0};
        if (k == 2) {
            pbw p = {0};
            pbw_bytes(&p, 1, "a\0b", 3);
            pbw_bytes(&m, 1, p.p, p.n);
            free(p.p);
        } else if (k == 3) {
            pbw_piece(&m, "zzz", -1.0f, 9);
        } else {
            pbw_piece(&m, dup[k], -1.0f, LP_PIECE_NORMAL);
        }
        build_model(&m, pc, n, &sp);
        r |= expect_fail(m.p, m.n, LP_ERR_FORMAT, why[k]);
        free(m.p);
    }
    /* byte piece without byte_fallback; byte_fallback without all bytes */
    m = (pbw){0};
    pbw_piece(&m, "<0x41>", 0, LP_PIECE_BYTE);
    build_model(&m, pc, n, &sp);
    r |= expect_fail(m.p, m.n, LP_ERR_FORMAT, "byte_fallback is off");
    free(m.p);
    m = (pbw){0};
    for (size_t i = 0; i < n; i++) pbw_piece(&m, pc[i].s, pc[i].score, pc[i].type);
    {
        pbw t = {0};
        pbw_uint(&t, 35, 1);
        pbw_bytes(&m, 2, t.p, t.n);
        free(t.p);
    }
    r |= expect_fail(m.p, m.n, LP_ERR_FORMAT, "<0x00> is missing");
    free(m.p);
    /* wrong wire types: a piece as a varint, a score as a varint, model_type as bytes */
    m = (pbw){0};
    pbw_uint(&m, 1, 7);
    r |= expect_fail(m.p, m.n, LP_ERR_FORMAT, "pieces");
    free(m.p);
    m = (pbw){0};
    {
        pbw p = {0};
        pbw_bytes(&p, 1, "x", 1);
        pbw_uint(&p, 2, 3);
        pbw_bytes(&m, 1, p.p, p.n);
        free(p.p);
    }
    build_model(&m, pc, n, &sp);
    r |= expect_fail(m.p, m.n, LP_ERR_FORMAT, "score");
    free(m.p);
    m = (pbw){0};
    {
        pbw t = {0};
        pbw_bytes(&t, 3, "BPE", 3);
        pbw_bytes(&m, 2, t.p, t.n);
        free(t.p);
    }
    r |= expect_fail(m.p, m.n, LP_ERR_FORMAT, "model_type");
    free(m.p);
    /* broken charsmaps: too short, trie larger than the blob */
    const uint8_t short_map[3] = {1, 0, 0}, big_map[8] = {0xff, 0, 0, 0, 1, 2, 3, 4};
    m = (pbw){0};
    sp.charsmap = short_map;
    sp.charsmap_len = 3;
    build_model(&m, pc, n, &sp);
    r |= expect_fail(m.p, m.n, LP_ERR_FORMAT, "charsmap");
    free(m.p);
    m = (pbw){0};
    sp.charsmap = big_map;
    sp.charsmap_len = 8;
    build_model(&m, pc, n, &sp);
    r |= expect_fail(m.p, m.n, LP_ERR_FORMAT, "charsmap");
    free(m.p);
    /* raw wire-format errors: group wire type, field 0, an 11-byte varint */
    const uint8_t group[] = {0x0b, 0x0c}, field0[] = {0x02, 0x00},
                  longv[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    r |= expect_fail(group, sizeof group, LP_ERR_FORMAT, "wire type 3");
    r |= expect_fail(field0, sizeof field0, LP_ERR_FORMAT, "field number 0");
    r |= expect_fail(longv, sizeof longv, LP_ERR_FORMAT, "varint");
    return r;
}

static int test_malformed_golden(void) {
    const char *path = lp_test_shared(GOLDEN_MODEL);
    if (!path) return lp_test_skip_shared(GOLDEN_MODEL);
    size_t len;
    uint8_t *data = (uint8_t *)slurp(path, &len);
    CHECK(data);
    /* top-level field boundaries: a cut there is a valid (shorter) message */
    size_t *bounds = malloc((len + 1) * sizeof *bounds), nb = 0;
    lp_pb_reader r;
    lp_pb_field f;
    int has;
    lp_pb_init(&r, data, len, "golden", 0);
    bounds[nb++] = 0;
    while (lp_pb_next(&r, &f, &has) == LP_OK && has) bounds[nb++] = (size_t)(r.cur - r.begin);
    CHECK(bounds[nb - 1] == len);
    /* truncations */
    size_t cuts[] = {1, 2, 3, 7, 100, 1000, 4097, len / 3, len / 2, len - 240100, len - 240007, len - 1000, len - 100,
                     len - 5, len - 1};
    int failed_cuts = 0;
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        size_t cut = cuts[i];
        int boundary = 0;
        for (size_t k = 0; k < nb; k++) boundary |= bounds[k] == cut;
        uint8_t *copy = malloc(cut); /* exact size, so ASan sees any over-read */
        memcpy(copy, data, cut);
        lp_tokenizer *tok;
        lp_status s = lp_tokenizer_load_memory(copy, cut, "cut.model", &tok);
        if (s == LP_OK) {
            CHECK(boundary, "truncated at %zu (inside a field) but loaded", cut);
            lp_tokenizer_free(tok);
        } else {
            failed_cuts++;
            CHECK(s == LP_ERR_FORMAT && strstr(lp_last_error(), "cut.model"), "cut %zu: %s", cut, lp_last_error());
        }
        free(copy);
    }
    /* the model cut right after the first pieces (a boundary): no <unk> yet */
    {
        lp_tokenizer *tok;
        CHECK(lp_tokenizer_load_memory(data, bounds[2], "cut.model", &tok) == LP_ERR_FORMAT);
        CHECK(strstr(lp_last_error(), "UNKNOWN"), "%s", lp_last_error());
    }
    /* field type corruption: the first piece as a 32-bit field */
    uint8_t *bad = malloc(len);
    memcpy(bad, data, len);
    CHECK(bad[0] == 0x0a);
    bad[0] = 0x0d;
    CHECK(expect_fail(bad, len, LP_ERR_FORMAT, "wire type") == 0);
    /* random byte corruption: must load or fail cleanly, and encode if loaded */
    rng_state = 7;
    int loaded = 0, rejected = 0;
    for (int trial = 0; trial < 300; trial++) {
        memcpy(bad, data, len);
        size_t pos = trial < 150 ? rnd(4096) : rnd((uint32_t)len); /* pieces, then anywhere (mostly the charsmap) */
        bad[pos] = (uint8_t)rnd(256);
        if (trial % 3 == 0) bad[rnd((uint32_t)len)] ^= (uint8_t)(1u << rnd(8));
        lp_tokenizer *tok;
        if (lp_tokenizer_load_memory(bad, len, "corrupt.model", &tok) == LP_OK) {
            loaded++;
            lp_tokens tk;
            const char *t = "Ｆｕｌｌ café 漢字 🎬 ①² ﬁ the  end\xff";
            if (lp_tokenizer_encode(tok, t, strlen(t), &tk) == LP_OK) lp_tokens_free(&tk);
            lp_tokenizer_free(tok);
        } else {
            rejected++;
            CHECK(strstr(lp_last_error(), "corrupt.model"), "%s", lp_last_error());
        }
    }
    printf("    %zu truncations (%d rejected), 300 corruptions: %d loaded, %d rejected, no crash\n",
           sizeof cuts / sizeof *cuts, failed_cuts, loaded, rejected);
    /* a missing file */
    lp_tokenizer *tok;
    CHECK(lp_tokenizer_load("/nonexistent/x.model", &tok) == LP_ERR_IO && strstr(lp_last_error(), "x.model"));
    free(bad);
    free(bounds);
    free(data);
    return 0;
}

/* Removes the files the tests wrote into the scratch directory. */
static void remove_scratch(void) {
    static const char *names[] = {"in.txt", "ids.txt", "pieces.txt", "dec.txt", "synthetic0.model",
                                  "synthetic1.model", "synthetic2.model", "synthetic3.model"};
    char path[512];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/%s", lp_test_tmpdir(), names[i]);
        remove(path);
    }
    remove(lp_test_tmpdir()); /* only if empty */
}

int main(void) {
    lp_test_run("golden_cases", test_golden_cases);
    lp_test_run("spm_encode_prompts", test_spm_encode_prompts);
    lp_test_run("spm_synthetic_models", test_spm_synthetic_models);
    lp_test_run("viterbi_vs_exhaustive", test_viterbi_vs_exhaustive);
    lp_test_run("decode_round_trip", test_decode_round_trip);
    lp_test_run("prompt_clean", test_prompt_clean);
    lp_test_run("encode_prompt", test_encode_prompt);
    lp_test_run("malformed_synthetic", test_malformed_synthetic);
    lp_test_run("malformed_golden", test_malformed_golden);
    remove_scratch();
    return lp_test_finish();
}
