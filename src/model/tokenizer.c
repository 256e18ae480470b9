/* SentencePiece unigram tokenizer: model loading, normalization, Viterbi
 * segmentation, decoding, and Wan's prompt pipeline. See tokenizer.h for the
 * contract and spec/TEXT.md ("Tokenizer") for where it sits. */
#include "tokenizer.h"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/protobuf.h"

#define SPACE_SYMBOL "\xe2\x96\x81" /* U+2581, '▁' */
#define SPACE_SYMBOL_LEN 3
#define UNK_PENALTY 10.0f           /* <unk> scores min_score - 10 */
#define CHARSMAP_MAX_RESULTS 32     /* rewrite rules considered per position */

/* A piece in a sorted lookup table (byte order, a prefix before its
 * extensions). */
typedef struct {
    const char *s;
    uint32_t len;
    int32_t id;
} tok_entry;

typedef struct {
    tok_entry *e;
    size_t n;
} tok_table;

struct lp_tokenizer {
    int n_pieces;
    char *blob;          /* all pieces, NUL-terminated, back to back */
    size_t *piece_off;   /* [n_pieces] offsets into blob */
    float *scores;       /* [n_pieces] */
    uint8_t *types;      /* [n_pieces] lp_piece_type */
    tok_table vocab;     /* NORMAL, USER_DEFINED and UNUSED pieces: what segmentation sees */
    tok_table reserved;  /* the other types */
    tok_table user;      /* USER_DEFINED pieces: kept whole by the normalizer */
    int unk_id;
    float min_score, max_score;
    int byte_fallback;
    int byte_id[256];
    char *unk_surface;
    /* normalizer */
    uint32_t *units;     /* double-array units of the charsmap trie */
    size_t n_units;
    char *rewrites;      /* NUL-terminated replacement strings */
    size_t rewrites_len;
    int add_dummy_prefix, remove_extra_ws, escape_ws, ws_as_suffix;
};

/* ---- growable byte buffer ---- */

typedef struct {
    char *p;
    size_t n, cap;
} tok_buf;

static lp_status buf_reserve(tok_buf *b, size_t extra) {
    if (extra <= b->cap - b->n) return LP_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->n < extra) {
        if (cap > SIZE_MAX / 2) return lp_fail(LP_ERR_NOMEM, "tokenizer: text too large");
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) return lp_fail(LP_ERR_NOMEM, "tokenizer: out of memory (%zu bytes)", cap);
    b->p = p;
    b->cap = cap;
    return LP_OK;
}

static lp_status buf_add(tok_buf *b, const void *s, size_t n) {
    LP_TRY(buf_reserve(b, n + 1));
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return LP_OK;
}

/* ---- UTF-8 as SentencePiece reads it ---- */

/* Byte length of the character starting with lead byte c, from the lead byte
 * alone (string_util::OneCharLen). */
static size_t one_char_len(unsigned char c) {
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[c >> 4];
}

static int is_trail(unsigned char c) { return (c & 0xC0) == 0x80; }
static int valid_cp(uint32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); }

/* Decodes one character of s[0..n) (n >= 1); returns 0xFFFD with *mblen = 1 for
 * a malformed sequence (string_util::DecodeUTF8). */
static uint32_t decode_utf8(const unsigned char *s, size_t n, size_t *mblen) {
    if (s[0] < 0x80) {
        *mblen = 1;
        return s[0];
    }
    if (n >= 2 && (s[0] & 0xE0) == 0xC0) {
        uint32_t cp = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        if (is_trail(s[1]) && cp >= 0x80 && valid_cp(cp)) {
            *mblen = 2;
            return cp;
        }
    } else if (n >= 3 && (s[0] & 0xF0) == 0xE0) {
        uint32_t cp = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        if (is_trail(s[1]) && is_trail(s[2]) && cp >= 0x800 && valid_cp(cp)) {
            *mblen = 3;
            return cp;
        }
    } else if (n >= 4 && (s[0] & 0xF8) == 0xF0) {
        uint32_t cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
                      ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        if (is_trail(s[1]) && is_trail(s[2]) && is_trail(s[3]) && cp >= 0x10000 && valid_cp(cp)) {
            *mblen = 4;
            return cp;
        }
    }
    *mblen = 1;
    return 0xFFFD;
}

/* A malformed sequence decodes to U+FFFD with length 1; a real U+FFFD has 3. */
static int valid_utf8_char(const unsigned char *s, size_t n, size_t *mblen) {
    return decode_utf8(s, n, mblen) != 0xFFFD || *mblen == 3;
}

static size_t encode_utf8(uint32_t c, char *out) {
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xE0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* ---- sorted piece tables: prefix search by narrowing a range ---- */

static int entry_cmp(const void *a, const void *b) {
    const tok_entry *x = a, *y = b;
    uint32_t m = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, m);
    if (c) return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

/* Key of entry e at depth d: -1 if it ends there, else its byte. */
static int entry_key(const tok_entry *e, size_t d) { return e->len == d ? -1 : (unsigned char)e->s[d]; }

/* Entries [*lo, *hi) share their first d bytes; keeps those whose byte d is c.
 * Returns 0 if none is left; otherwise 1, and *match is the id of the entry
 * equal to the new prefix (d + 1 bytes) or -1. */
static int table_step(const tok_table *t, size_t *lo, size_t *hi, size_t d, unsigned char c, int *match) {
    size_t a = *lo, b = *hi;
    while (a < b) { /* first with key >= c */
        size_t m = a + (b - a) / 2;
        if (entry_key(&t->e[m], d) < c) a = m + 1; else b = m;
    }
    size_t first = a;
    b = *hi;
    while (a < b) { /* first with key > c */
        size_t m = a + (b - a) / 2;
        if (entry_key(&t->e[m], d) <= c) a = m + 1; else b = m;
    }
    if (first == a) return 0;
    *lo = first;
    *hi = a;
    *match = t->e[first].len == d + 1 ? t->e[first].id : -1;
    return 1;
}

static int table_find(const tok_table *t, const char *s, size_t len) {
    size_t lo = 0, hi = t->n;
    int match = -1;
    if (len == 0) return -1;
    for (size_t d = 0; d < len; d++)
        if (!table_step(t, &lo, &hi, d, (unsigned char)s[d], &match)) return -1;
    return match;
}

/* Length of the longest entry that is a prefix of s[0..n), or 0. */
static size_t table_longest_prefix(const tok_table *t, const char *s, size_t n) {
    size_t lo = 0, hi = t->n, best = 0;
    int match;
    for (size_t d = 0; d < n && lo < hi; d++) {
        if (!table_step(t, &lo, &hi, d, (unsigned char)s[d], &match)) break;
        if (match >= 0) best = d + 1;
    }
    return best;
}

/* ---- model loading ---- */

typedef struct {
    int model_type, byte_fallback, ws_as_suffix;
    const uint8_t *unk_surface;
    size_t unk_surface_len;
    int has_unk_surface;
    const uint8_t *charsmap;
    size_t charsmap_len;
    int add_dummy_prefix, remove_extra_ws, escape_ws;
} tok_spec;

static lp_status parse_piece(const lp_pb_reader *top, const lp_pb_field *pf, int index, const char *what,
                             const uint8_t **s, size_t *len, float *score, int *type) {
    char name[256];
    snprintf(name, sizeof name, "%s: piece %d", what, index);
    lp_pb_reader r;
    lp_pb_sub(top, pf, name, &r);
    *s = NULL;
    *len = 0;
    *score = 0.0f;
    *type = LP_PIECE_NORMAL;
    lp_pb_field f;
    int has;
    for (;;) {
        LP_TRY(lp_pb_next(&r, &f, &has));
        if (!has) break;
        if (f.number == 1) {
            LP_TRY(lp_pb_expect(&r, &f, LP_PB_LEN, "piece"));
            *s = f.data;
            *len = f.len;
        } else if (f.number == 2) {
            LP_TRY(lp_pb_expect(&r, &f, LP_PB_I32, "score"));
            *score = lp_pb_float(&f);
        } else if (f.number == 3) {
            LP_TRY(lp_pb_expect(&r, &f, LP_PB_VARINT, "type"));
            int32_t t = lp_pb_int32(&f);
            if (t < LP_PIECE_NORMAL || t > LP_PIECE_BYTE)
                return lp_fail(LP_ERR_FORMAT, "%s: invalid piece type %d", name, (int)t);
            *type = t;
        }
    }
    if (*len == 0) return lp_fail(LP_ERR_FORMAT, "%s: piece must not be empty", name);
    if (memchr(*s, 0, *len)) return lp_fail(LP_ERR_FORMAT, "%s: piece contains a NUL byte", name);
    return LP_OK;
}

static lp_status parse_trainer(const lp_pb_reader *top, const lp_pb_field *pf, const char *what, tok_spec *sp) {
    char name[256];
    snprintf(name, sizeof name, "%s: trainer_spec", what);
    lp_pb_reader r;
    lp_pb_sub(top, pf, name, &r);
    lp_pb_field f;
    int has;
    for (;;) {
        LP_TRY(lp_pb_next(&r, &f, &has));
        if (!has) break;
        switch (f.number) {
        case 3:
            LP_TRY(lp_pb_expect(&r, &f, LP_PB_VARINT, "model_type"));
            sp->model_type = lp_pb_int32(&f);
            break;
        case 24:
            LP_TRY(lp_pb_expect(&r, &f, LP_PB_VARINT, "treat_whitespace_as_suffix"));
            sp->ws_as_suffix = lp_pb_bool(&f);
            break;
        case 35:
            LP_TRY(lp_pb_expect(&r, &f, LP_PB_VARINT, "byte_fallback"));
            sp->byte_fallback = lp_pb_bool(&f);
            break;
        case 40: LP_TRY(lp_pb_expect(&r, &f, LP_PB_VARINT, "unk_id")); break;
        case 41: LP_TRY(lp_pb_expect(&r, &f, LP_PB_VARINT, "bos_id")); break;
        case 42: LP_TRY(lp_pb_expect(&r, &f, LP_PB_VARINT, "eos_id")); break;
        case 43: LP_TRY(lp_pb_expect(&r, &f, LP_PB_VARINT, "pad_id")); break;
        case 44:
            LP_TRY(lp_pb_expect(&r, &f, LP_PB_LEN, "unk_surface"));
            sp->unk_surface = f.data;
            sp->unk_surface_len = f.len;
            sp->has_unk_surface = 1;
            break;
        default: break;
        }
    }
    return LP_OK;
}

static lp_status parse_normalizer(const lp_pb_reader *top, const lp_pb_field *pf, const char *what, tok_spec *sp) {
    char name[256];
    snprintf(name, sizeof name, "%s: normalizer_spec", what);
    lp_pb_reader r;
    lp_pb_sub(top, pf, name, &r);
    lp_pb_field f;
    int has;
    for (;;) {
        LP_TRY(lp_pb_next(&r, &f, &has));
        if (!has) break;
        switch (f.number) {
        case 1: LP_TRY(lp_pb_expect(&r, &f, LP_PB_LEN, "name")); break;
        case 2:
            LP_TRY(lp_pb_expect(&r, &f, LP_PB_LEN, "precompiled_charsmap"));
            sp->charsmap = f.data;
            sp->charsmap_len = f.len;
            break;
        case 3:
            LP_TRY(lp_pb_expect(&r, &f, LP_PB_VARINT, "add_dummy_prefix"));
            sp->add_dummy_prefix = lp_pb_bool(&f);
            break;
        case 4:
            LP_TRY(lp_pb_expect(&r, &f, LP_PB_VARINT, "remove_extra_whitespaces"));
            sp->remove_extra_ws = lp_pb_bool(&f);
            break;
        case 5:
            LP_TRY(lp_pb_expect(&r, &f, LP_PB_VARINT, "escape_whitespaces"));
            sp->escape_ws = lp_pb_bool(&f);
            break;
        default: break;
        }
    }
    return LP_OK;
}

/* precompiled_charsmap = <uint32 LE trie size><trie units><rewrite strings>. */
static lp_status load_charsmap(lp_tokenizer *t, const tok_spec *sp, const char *what) {
    if (sp->charsmap_len == 0) return LP_OK; /* identity normalization */
    const uint8_t *b = sp->charsmap;
    size_t n = sp->charsmap_len;
    if (n <= 4) return lp_fail(LP_ERR_FORMAT, "%s: precompiled_charsmap is broken (%zu bytes)", what, n);
    size_t trie = (size_t)b[0] | (size_t)b[1] << 8 | (size_t)b[2] << 16 | (size_t)b[3] << 24;
    if (trie > n - 4)
        return lp_fail(LP_ERR_FORMAT, "%s: precompiled_charsmap trie size %zu exceeds its %zu bytes", what, trie,
                       n - 4);
    t->n_units = trie / 4;
    t->units = malloc((t->n_units ? t->n_units : 1) * sizeof *t->units);
    t->rewrites_len = n - 4 - trie;
    t->rewrites = malloc(t->rewrites_len + 1);
    if (!t->units || !t->rewrites) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", what);
    for (size_t i = 0; i < t->n_units; i++) {
        const uint8_t *u = b + 4 + 4 * i;
        t->units[i] = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
    }
    memcpy(t->rewrites, b + 4 + trie, t->rewrites_len);
    t->rewrites[t->rewrites_len] = 0;
    return LP_OK;
}

static lp_status build_tables(lp_tokenizer *t, const char *what) {
    size_t nv = 0, nr = 0, nu = 0;
    for (int i = 0; i < t->n_pieces; i++) {
        int ty = t->types[i];
        if (ty == LP_PIECE_NORMAL || ty == LP_PIECE_USER_DEFINED || ty == LP_PIECE_UNUSED) nv++; else nr++;
        if (ty == LP_PIECE_USER_DEFINED) nu++;
    }
    t->vocab.e = malloc((nv ? nv : 1) * sizeof(tok_entry));
    t->reserved.e = malloc((nr ? nr : 1) * sizeof(tok_entry));
    t->user.e = malloc((nu ? nu : 1) * sizeof(tok_entry));
    if (!t->vocab.e || !t->reserved.e || !t->user.e) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", what);
    for (int i = 0; i < t->n_pieces; i++) {
        const char *s = t->blob + t->piece_off[i];
        tok_entry e = {s, (uint32_t)strlen(s), i};
        int ty = t->types[i];
        if (ty == LP_PIECE_NORMAL || ty == LP_PIECE_USER_DEFINED || ty == LP_PIECE_UNUSED)
            t->vocab.e[t->vocab.n++] = e;
        else
            t->reserved.e[t->reserved.n++] = e;
        if (ty == LP_PIECE_USER_DEFINED) t->user.e[t->user.n++] = e;
    }
    tok_table *tabs[2] = {&t->vocab, &t->reserved};
    for (int k = 0; k < 2; k++) {
        tok_table *tb = tabs[k];
        qsort(tb->e, tb->n, sizeof *tb->e, entry_cmp);
        for (size_t i = 1; i < tb->n; i++)
            if (entry_cmp(&tb->e[i - 1], &tb->e[i]) == 0)
                return lp_fail(LP_ERR_FORMAT, "%s: piece \"%s\" is defined twice (ids %d and %d)", what,
                               tb->e[i].s, (int)tb->e[i - 1].id, (int)tb->e[i].id);
    }
    qsort(t->user.e, t->user.n, sizeof *t->user.e, entry_cmp);
    if (t->vocab.n == 0) return lp_fail(LP_ERR_FORMAT, "%s: no normal pieces (nothing to segment with)", what);
    return LP_OK;
}

/* Byte pieces are spelled <0x00>..<0xFF> (upper-case hex). */
static int byte_piece_value(const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    if (strlen(s) != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    const char *h = strchr(hex, s[3]), *l = strchr(hex, s[4]);
    if (!s[3] || !s[4] || !h || !l) return -1;
    return (int)((h - hex) * 16 + (l - hex));
}

static lp_status check_pieces(lp_tokenizer *t, const char *what) {
    t->unk_id = -1;
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    t->min_score = FLT_MAX;
    t->max_score = FLT_MIN;
    for (int i = 0; i < t->n_pieces; i++) {
        const char *s = t->blob + t->piece_off[i];
        switch (t->types[i]) {
        case LP_PIECE_UNKNOWN:
            if (t->unk_id >= 0)
                return lp_fail(LP_ERR_FORMAT, "%s: unknown piece defined twice (ids %d and %d)", what, t->unk_id, i);
            t->unk_id = i;
            break;
        case LP_PIECE_BYTE: {
            if (!t->byte_fallback)
                return lp_fail(LP_ERR_FORMAT, "%s: byte piece \"%s\" (id %d) but byte_fallback is off", what, s, i);
            int v = byte_piece_value(s);
            if (v < 0) return lp_fail(LP_ERR_FORMAT, "%s: invalid byte piece \"%s\" (id %d)", what, s, i);
            t->byte_id[v] = i;
            break;
        }
        case LP_PIECE_NORMAL:
            if (t->scores[i] < t->min_score) t->min_score = t->scores[i];
            if (t->scores[i] > t->max_score) t->max_score = t->scores[i];
            break;
        default: break;
        }
    }
    if (t->unk_id < 0) return lp_fail(LP_ERR_FORMAT, "%s: no piece of type UNKNOWN (<unk>)", what);
    if (t->byte_fallback)
        for (int b = 0; b < 256; b++)
            if (t->byte_id[b] < 0)
                return lp_fail(LP_ERR_FORMAT, "%s: byte_fallback is on but byte piece <0x%02X> is missing", what, b);
    return LP_OK;
}

static lp_status tokenizer_parse(lp_tokenizer *t, const void *data, size_t len, const char *what) {
    tok_spec sp;
    memset(&sp, 0, sizeof sp);
    sp.model_type = 1; /* defaults of sentencepiece_model.proto */
    sp.add_dummy_prefix = sp.remove_extra_ws = sp.escape_ws = 1;

    /* Pass 1: count pieces and read the specs. */
    lp_pb_reader r;
    lp_pb_field f;
    int has;
    size_t n_pieces = 0, blob_len = 0;
    lp_pb_init(&r, data, len, what, 0);
    for (;;) {
        LP_TRY(lp_pb_next(&r, &f, &has));
        if (!has) break;
        switch (f.number) {
        case 1:
            LP_TRY(lp_pb_expect(&r, &f, LP_PB_LEN, "pieces"));
            n_pieces++;
            blob_len += f.len + 1;
            break;
        case 2:
            LP_TRY(lp_pb_expect(&r, &f, LP_PB_LEN, "trainer_spec"));
            LP_TRY(parse_trainer(&r, &f, what, &sp));
            break;
        case 3:
            LP_TRY(lp_pb_expect(&r, &f, LP_PB_LEN, "normalizer_spec"));
            LP_TRY(parse_normalizer(&r, &f, what, &sp));
            break;
        case 4: LP_TRY(lp_pb_expect(&r, &f, LP_PB_LEN, "self_test_data")); break;
        case 5: LP_TRY(lp_pb_expect(&r, &f, LP_PB_LEN, "denormalizer_spec")); break;
        default: break;
        }
    }
    if (n_pieces == 0) return lp_fail(LP_ERR_FORMAT, "%s: empty vocabulary (no pieces)", what);
    if (n_pieces > INT32_MAX / 2) return lp_fail(LP_ERR_FORMAT, "%s: too many pieces (%zu)", what, n_pieces);
    if (sp.model_type != 1) {
        static const char *names[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};
        const char *nm = sp.model_type >= 1 && sp.model_type <= 4 ? names[sp.model_type] : "unknown";
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: model type %s (%d) is not supported; only UNIGRAM models are", what,
                       nm, sp.model_type);
    }

    /* Pass 2: the pieces. */
    t->n_pieces = (int)n_pieces;
    t->blob = malloc(blob_len);
    t->piece_off = malloc(n_pieces * sizeof *t->piece_off);
    t->scores = malloc(n_pieces * sizeof *t->scores);
    t->types = malloc(n_pieces);
    if (!t->blob || !t->piece_off || !t->scores || !t->types) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", what);
    size_t off = 0;
    int index = 0;
    lp_pb_init(&r, data, len, what, 0);
    for (;;) {
        LP_TRY(lp_pb_next(&r, &f, &has));
        if (!has) break;
        if (f.number != 1) continue;
        const uint8_t *s;
        size_t sl;
        int type;
        LP_TRY(parse_piece(&r, &f, index, what, &s, &sl, &t->scores[index], &type));
        t->types[index] = (uint8_t)type;
        t->piece_off[index] = off;
        memcpy(t->blob + off, s, sl);
        t->blob[off + sl] = 0;
        off += sl + 1;
        index++;
    }

    t->byte_fallback = sp.byte_fallback;
    t->ws_as_suffix = sp.ws_as_suffix;
    t->add_dummy_prefix = sp.add_dummy_prefix;
    t->remove_extra_ws = sp.remove_extra_ws;
    t->escape_ws = sp.escape_ws;
    const char *unk_surface = sp.has_unk_surface ? (const char *)sp.unk_surface : " \xe2\x81\x87 ";
    size_t unk_surface_len = sp.has_unk_surface ? sp.unk_surface_len : strlen(unk_surface);
    t->unk_surface = malloc(unk_surface_len + 1);
    if (!t->unk_surface) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", what);
    if (unk_surface_len) memcpy(t->unk_surface, unk_surface, unk_surface_len);
    t->unk_surface[unk_surface_len] = 0;

    LP_TRY(check_pieces(t, what));
    LP_TRY(build_tables(t, what));
    LP_TRY(load_charsmap(t, &sp, what));
    return LP_OK;
}

lp_status lp_tokenizer_load_memory(const void *data, size_t len, const char *what, lp_tokenizer **out) {
    *out = NULL;
    if (!what) what = "tokenizer model";
    if (!data && len) return lp_fail(LP_ERR_ARG, "%s: NULL data", what);
    lp_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", what);
    lp_status s = tokenizer_parse(t, data, len, what);
    if (s != LP_OK) {
        lp_tokenizer_free(t);
        return s;
    }
    *out = t;
    return LP_OK;
}

lp_status lp_tokenizer_load(const char *path, lp_tokenizer **out) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return lp_fail(LP_ERR_IO, "%s: cannot open tokenizer model", path);
    long size = -1;
    if (fseek(fp, 0, SEEK_END) == 0) size = ftell(fp);
    if (size < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return lp_fail(LP_ERR_IO, "%s: cannot determine the file size", path);
    }
    void *data = malloc(size ? (size_t)size : 1);
    if (!data) {
        fclose(fp);
        return lp_fail(LP_ERR_NOMEM, "%s: out of memory (%ld bytes)", path, size);
    }
    size_t got = fread(data, 1, (size_t)size, fp);
    fclose(fp);
    if (got != (size_t)size) {
        free(data);
        return lp_fail(LP_ERR_IO, "%s: short read (%zu of %ld bytes)", path, got, size);
    }
    lp_status s = lp_tokenizer_load_memory(data, (size_t)size, path, out);
    free(data);
    return s;
}

void lp_tokenizer_free(lp_tokenizer *t) {
    if (!t) return;
    free(t->blob);
    free(t->piece_off);
    free(t->scores);
    free(t->types);
    free(t->vocab.e);
    free(t->reserved.e);
    free(t->user.e);
    free(t->unk_surface);
    free(t->units);
    free(t->rewrites);
    free(t);
}

int lp_tokenizer_vocab_size(const lp_tokenizer *t) { return t->n_pieces; }

const char *lp_tokenizer_piece(const lp_tokenizer *t, int id) {
    return id >= 0 && id < t->n_pieces ? t->blob + t->piece_off[id] : NULL;
}

float lp_tokenizer_score(const lp_tokenizer *t, int id) { return id >= 0 && id < t->n_pieces ? t->scores[id] : 0.0f; }

lp_piece_type lp_tokenizer_piece_type(const lp_tokenizer *t, int id) {
    return id >= 0 && id < t->n_pieces ? (lp_piece_type)t->types[id] : (lp_piece_type)0;
}

int lp_tokenizer_unk_id(const lp_tokenizer *t) { return t->unk_id; }

int lp_tokenizer_find(const lp_tokenizer *t, const char *piece, size_t len) {
    int id = table_find(&t->reserved, piece, len);
    return id >= 0 ? id : table_find(&t->vocab, piece, len);
}

/* ---- normalization (SentencePiece normalizer.cc semantics) ---- */

/* Longest charsmap rule matching a prefix of s[0..n): darts-clone's
 * commonPrefixSearch over the double array, at most CHARSMAP_MAX_RESULTS
 * matches considered. Returns the match length (0 if none) and the rewrite
 * offset in *value. Out-of-range units end the search. */
static size_t charsmap_match(const lp_tokenizer *t, const unsigned char *s, size_t n, uint32_t *value) {
    if (t->n_units == 0) return 0;
    size_t best = 0, found = 0;
    uint32_t unit = t->units[0];
    uint64_t id = (unit >> 10) << ((unit & (1u << 9)) >> 6);
    for (size_t i = 0; i < n; i++) {
        id ^= s[i];
        if (id >= t->n_units) break;
        unit = t->units[id];
        if ((unit & ((1u << 31) | 0xFFu)) != s[i]) break; /* label */
        id ^= (unit >> 10) << ((unit & (1u << 9)) >> 6);  /* offset */
        if ((unit >> 8) & 1) {                            /* has leaf */
            if (id >= t->n_units) break;
            if (found++ < CHARSMAP_MAX_RESULTS) {
                best = i + 1;
                *value = t->units[id] & 0x7FFFFFFFu;
            }
        }
    }
    return best;
}

/* The normalized form of the longest prefix of s[0..n) handled as one unit:
 * (*rep, *rep_len) is its replacement and the return value the bytes consumed. */
static lp_status normalize_prefix(const lp_tokenizer *t, const char *s, size_t n, const char **rep, size_t *rep_len,
                                  size_t *consumed) {
    size_t ul = table_longest_prefix(&t->user, s, n);
    if (ul) {
        *rep = s;
        *rep_len = *consumed = ul;
        return LP_OK;
    }
    uint32_t value = 0;
    size_t ml = charsmap_match(t, (const unsigned char *)s, n, &value);
    if (ml) {
        if (value >= t->rewrites_len)
            return lp_fail(LP_ERR_FORMAT, "tokenizer: precompiled_charsmap rule points outside its strings (%u >= %zu)",
                           value, t->rewrites_len);
        *rep = t->rewrites + value;
        *rep_len = strlen(*rep); /* rewrites[rewrites_len] is a NUL */
        *consumed = ml;
        return LP_OK;
    }
    size_t mblen;
    if (!valid_utf8_char((const unsigned char *)s, n, &mblen)) {
        *rep = "\xef\xbf\xbd";
        *rep_len = 3;
        *consumed = 1;
        return LP_OK;
    }
    *rep = s;
    *rep_len = *consumed = mblen;
    return LP_OK;
}

static lp_status add_space(const lp_tokenizer *t, tok_buf *b) {
    return t->escape_ws ? buf_add(b, SPACE_SYMBOL, SPACE_SYMBOL_LEN) : buf_add(b, " ", 1);
}

static lp_status normalize_into(const lp_tokenizer *t, const char *text, size_t len, tok_buf *b) {
    const char *rep;
    size_t rep_len, used;
    LP_TRY(buf_reserve(b, 1));
    b->p[0] = 0;
    if (t->remove_extra_ws) { /* drop leading spaces */
        while (len) {
            LP_TRY(normalize_prefix(t, text, len, &rep, &rep_len, &used));
            if (!(rep_len == 1 && rep[0] == ' ')) break;
            text += used;
            len -= used;
        }
    }
    if (!len) return LP_OK;
    if (!t->ws_as_suffix && t->add_dummy_prefix) LP_TRY(add_space(t, b));
    int prev_space = t->remove_extra_ws;
    while (len) {
        LP_TRY(normalize_prefix(t, text, len, &rep, &rep_len, &used));
        while (prev_space && rep_len && rep[0] == ' ') { /* collapse repeated spaces */
            rep++;
            rep_len--;
        }
        if (rep_len) {
            for (size_t i = 0; i < rep_len; i++) {
                if (t->escape_ws && rep[i] == ' ') LP_TRY(buf_add(b, SPACE_SYMBOL, SPACE_SYMBOL_LEN));
                else LP_TRY(buf_add(b, rep + i, 1));
            }
            prev_space = rep[rep_len - 1] == ' ';
        }
        text += used;
        len -= used;
        if (!t->remove_extra_ws) prev_space = 0;
    }
    if (t->remove_extra_ws) { /* drop trailing spaces */
        const char *sp = t->escape_ws ? SPACE_SYMBOL : " ";
        size_t sl = t->escape_ws ? SPACE_SYMBOL_LEN : 1;
        while (b->n >= sl && !memcmp(b->p + b->n - sl, sp, sl)) b->n -= sl;
        b->p[b->n] = 0;
    }
    if (t->ws_as_suffix && t->add_dummy_prefix) LP_TRY(add_space(t, b));
    return LP_OK;
}

lp_status lp_tokenizer_normalize(const lp_tokenizer *t, const char *text, size_t len, char **out, size_t *out_len) {
    tok_buf b = {0};
    *out = NULL;
    lp_status s = normalize_into(t, text, len, &b);
    if (s != LP_OK) {
        free(b.p);
        return s;
    }
    *out = b.p;
    if (out_len) *out_len = b.n;
    return LP_OK;
}

/* ---- segmentation (unigram_model.cc EncodeOptimized semantics) ---- */

typedef struct {
    float score;  /* best path score ending here */
    size_t start; /* start of its last piece, SIZE_MAX if unreached */
    int32_t id;
} tok_best;

/* Best segmentation of s[0..n) into (start, id) nodes, back to front in
 * best[]. The arithmetic mirrors the reference: piece candidates are summed
 * and compared in double, stored in float; <unk> candidates stay in float. */
static void viterbi(const lp_tokenizer *t, const char *s, size_t n, tok_best *best) {
    const float unk_score = t->min_score - UNK_PENALTY;
    for (size_t i = 0; i <= n; i++) {
        best[i].score = 0.0f;
        best[i].start = SIZE_MAX;
        best[i].id = -1;
    }
    for (size_t start = 0; start < n;) {
        const float here = best[start].score;
        size_t mblen = one_char_len((unsigned char)s[start]);
        if (mblen > n - start) mblen = n - start;
        int has_single = 0;
        size_t lo = 0, hi = t->vocab.n;
        for (size_t end = start; end < n; end++) {
            int id;
            if (!table_step(&t->vocab, &lo, &hi, end - start, (unsigned char)s[end], &id)) break;
            if (id < 0 || t->types[id] == LP_PIECE_UNUSED) continue;
            size_t length = end + 1 - start;
            double score = t->types[id] == LP_PIECE_USER_DEFINED ? (double)((float)length * t->max_score) - 0.1
                                                                  : (double)t->scores[id];
            double cand = score + (double)here;
            tok_best *tgt = &best[end + 1];
            if (tgt->start == SIZE_MAX || cand > (double)tgt->score) {
                tgt->score = (float)cand;
                tgt->start = start;
                tgt->id = id;
            }
            if (length == mblen) has_single = 1;
        }
        if (!has_single) {
            float cand = unk_score + here;
            tok_best *tgt = &best[start + mblen];
            if (tgt->start == SIZE_MAX || cand > tgt->score) {
                tgt->score = cand;
                tgt->start = start;
                tgt->id = t->unk_id;
            }
        }
        start += mblen;
    }
}

void lp_tokens_free(lp_tokens *tk) {
    if (!tk) return;
    free(tk->ids);
    free(tk->piece_off);
    free(tk->piece_len);
    free(tk->text);
    memset(tk, 0, sizeof *tk);
}

lp_status lp_tokenizer_encode(const lp_tokenizer *t, const char *text, size_t len, lp_tokens *out) {
    memset(out, 0, sizeof *out);
    tok_buf norm = {0};
    lp_status st = normalize_into(t, text, len, &norm);
    if (st != LP_OK) {
        free(norm.p);
        return st;
    }
    const char *s = norm.p;
    size_t n = norm.n;
    tok_best *best = malloc((n + 1) * sizeof *best);
    size_t *nodes = malloc((n + 1) * sizeof *nodes); /* end positions of the path, back to front */
    size_t cap = n + 1;                              /* at most one token per byte */
    out->ids = malloc(cap * sizeof *out->ids);
    out->piece_off = malloc(cap * sizeof *out->piece_off);
    out->piece_len = malloc(cap * sizeof *out->piece_len);
    tok_buf pieces = {0};
    if (!best || !nodes || !out->ids || !out->piece_off || !out->piece_len) {
        st = lp_fail(LP_ERR_NOMEM, "tokenizer: out of memory encoding %zu bytes", len);
        goto done;
    }
    viterbi(t, s, n, best);
    size_t count = 0;
    for (size_t end = n; end > 0; end = best[end].start) {
        if (best[end].start == SIZE_MAX || best[end].start >= end) {
            st = lp_fail(LP_ERR_FORMAT, "tokenizer: no segmentation reaches byte %zu", end);
            goto done;
        }
        nodes[count++] = end;
    }
    int prev_unk = 0;
    for (size_t k = count; k-- > 0;) {
        size_t end = nodes[k], start = best[end].start;
        int32_t id = best[end].id;
        int is_unk = id == t->unk_id;
        if (is_unk && t->byte_fallback) { /* each byte becomes its <0xXX> piece */
            for (size_t i = start; i < end; i++) {
                int bid = t->byte_id[(unsigned char)s[i]];
                const char *p = t->blob + t->piece_off[bid];
                out->ids[out->n] = bid;
                out->piece_off[out->n] = pieces.n;
                out->piece_len[out->n] = strlen(p);
                if ((st = buf_add(&pieces, p, strlen(p))) != LP_OK) goto done;
                out->n++;
            }
        } else if (is_unk && prev_unk) { /* merge a run of unknowns */
            out->piece_len[out->n - 1] += end - start;
            if ((st = buf_add(&pieces, s + start, end - start)) != LP_OK) goto done;
        } else {
            out->ids[out->n] = id;
            out->piece_off[out->n] = pieces.n;
            out->piece_len[out->n] = end - start;
            if ((st = buf_add(&pieces, s + start, end - start)) != LP_OK) goto done;
            out->n++;
        }
        prev_unk = is_unk;
    }
    if (!pieces.p && (st = buf_add(&pieces, "", 0)) != LP_OK) goto done;
    out->text = pieces.p;
    pieces.p = NULL;
done:
    free(norm.p);
    free(best);
    free(nodes);
    free(pieces.p);
    if (st != LP_OK) lp_tokens_free(out);
    return st;
}

/* ---- decoding (sentencepiece_processor.cc Decode semantics) ---- */

static lp_status flush_bytes(tok_buf *b, const unsigned char *bytes, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t used;
        if (valid_utf8_char(bytes + i, n - i, &used)) {
            LP_TRY(buf_add(b, bytes + i, used));
        } else {
            LP_TRY(buf_add(b, "\xef\xbf\xbd", 3));
            used = 1;
        }
        i += used;
    }
    return LP_OK;
}

static lp_status decode_into(const lp_tokenizer *t, const int32_t *ids, size_t n, tok_buf *b, unsigned char *bytes) {
    size_t nbytes = 0;
    int is_bos_ws = 1, bos_ws_seen = 0;
    LP_TRY(buf_add(b, "", 0));
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_pieces)
            return lp_fail(LP_ERR_ARG, "tokenizer decode: id %d at position %zu is outside the vocabulary (%d)",
                           (int)id, i, t->n_pieces);
        int type = t->types[id];
        if (type == LP_PIECE_BYTE) {
            bytes[nbytes++] = (unsigned char)byte_piece_value(t->blob + t->piece_off[id]);
            continue;
        }
        LP_TRY(flush_bytes(b, bytes, nbytes));
        nbytes = 0;
        if (bos_ws_seen || b->n) is_bos_ws = 0;
        bos_ws_seen = 0;
        if (type == LP_PIECE_CONTROL) continue;
        if (type == LP_PIECE_UNKNOWN) {
            LP_TRY(buf_add(b, t->unk_surface, strlen(t->unk_surface)));
            continue;
        }
        const char *p = t->blob + t->piece_off[id];
        size_t pl = strlen(p);
        if (is_bos_ws && (t->add_dummy_prefix || t->remove_extra_ws) && pl >= SPACE_SYMBOL_LEN &&
            !memcmp(p, SPACE_SYMBOL, SPACE_SYMBOL_LEN)) {
            p += SPACE_SYMBOL_LEN;
            pl -= SPACE_SYMBOL_LEN;
            bos_ws_seen = !t->remove_extra_ws; /* with space removal, keep dropping leading spaces */
        }
        for (size_t k = 0; k < pl;) {
            if (pl - k >= SPACE_SYMBOL_LEN && !memcmp(p + k, SPACE_SYMBOL, SPACE_SYMBOL_LEN)) {
                LP_TRY(buf_add(b, " ", 1));
                k += SPACE_SYMBOL_LEN;
            } else {
                LP_TRY(buf_add(b, p + k, 1));
                k++;
            }
        }
    }
    return flush_bytes(b, bytes, nbytes);
}

lp_status lp_tokenizer_decode(const lp_tokenizer *t, const int32_t *ids, size_t n, char **out, size_t *out_len) {
    *out = NULL;
    tok_buf b = {0};
    unsigned char *bytes = malloc(n ? n : 1);
    if (!bytes) return lp_fail(LP_ERR_NOMEM, "tokenizer decode: out of memory");
    lp_status s = decode_into(t, ids, n, &b, bytes);
    free(bytes);
    if (s != LP_OK) {
        free(b.p);
        return s;
    }
    *out = b.p;
    if (out_len) *out_len = b.n;
    return LP_OK;
}

/* ---- Wan's prompt cleaning ---- */

/* Unicode code points of the Windows-1252 bytes 0x80..0x9F (0 = undefined). */
static const uint16_t cp1252_c1[32] = {
    0x20AC, 0, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0, 0x017D, 0,
    0, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0, 0x017E, 0x0178,
};

/* The byte a character stands for when Windows-1252 (or Latin-1) text is
 * re-encoded, or -1. */
static int cp1252_byte(uint32_t c) {
    if (c < 0x100) return (int)c;
    for (int i = 0; i < 32; i++)
        if (cp1252_c1[i] == c) return 0x80 + i;
    return -1;
}

/* Python's str.isspace(), which re's \s and str.strip() use. */
static int py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Characters ftfy's remove_control_chars deletes. */
static int ftfy_control(uint32_t c) {
    return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
           c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC) || (c >= 0x1D173 && c <= 0x1D17A) ||
           (c >= 0xE0000 && c <= 0xE007F);
}

/* Repairs UTF-8 that was decoded as Windows-1252/Latin-1: a lead character
 * followed by the right number of continuation characters (bytes 0x80..0xBF)
 * that together decode as valid UTF-8. Two-byte sequences are repaired only
 * for the leads 'Â' and 'Ã' (U+0080..U+00FF, the common case), so that real
 * text such as "ß»" is left alone. In place. */
static size_t fix_mojibake(uint32_t *u, size_t n) {
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        int lead = cp1252_byte(u[i]);
        size_t need = lead == 0xC2 || lead == 0xC3 ? 2 : lead >= 0xE0 && lead <= 0xEF ? 3 : lead >= 0xF0 && lead <= 0xF4 ? 4 : 0;
        if (need && i + need <= n) {
            unsigned char bytes[4];
            size_t k;
            bytes[0] = (unsigned char)lead;
            for (k = 1; k < need; k++) {
                int b = cp1252_byte(u[i + k]);
                if (b < 0x80 || b > 0xBF) break;
                bytes[k] = (unsigned char)b;
            }
            size_t used;
            if (k == need) {
                uint32_t c = decode_utf8(bytes, need, &used);
                if (used == need) {
                    u[w++] = c;
                    i += need;
                    continue;
                }
            }
        }
        u[w++] = u[i++];
    }
    return w;
}

/* ftfy's remaining basic fixes, in place: terminal escapes, C1 controls as
 * Windows-1252, curly quotes, line breaks, control characters. */
static size_t fix_glitches(uint32_t *u, size_t n) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = u[i];
        if (c == 0x1B && i + 1 < n && u[i + 1] == '[') { /* ESC [ digits/; letter */
            size_t j = i + 2;
            while (j < n && ((u[j] >= '0' && u[j] <= '9') || u[j] == ';')) j++;
            if (j < n && ((u[j] | 0x20) >= 'a' && (u[j] | 0x20) <= 'z')) {
                i = j;
                continue;
            }
        }
        if (c >= 0x80 && c <= 0x9F && cp1252_c1[c - 0x80]) c = cp1252_c1[c - 0x80];
        if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';
        else if (c >= 0x201C && c <= 0x201F) c = '"';
        if (c == '\r' && i + 1 < n && u[i + 1] == '\n') continue; /* the \n follows */
        if (c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85) c = '\n';
        if (ftfy_control(c)) continue;
        u[w++] = c;
    }
    return w;
}

typedef struct {
    const char *name;
    uint16_t cp;
} html_entity;

/* Named references that need their ';' (HTML5). */
static const html_entity html_named[] = {
    {"apos", 0x27}, {"OElig", 0x152}, {"oelig", 0x153}, {"Scaron", 0x160}, {"scaron", 0x161}, {"Yuml", 0x178},
    {"fnof", 0x192}, {"circ", 0x2C6}, {"tilde", 0x2DC}, {"ensp", 0x2002}, {"emsp", 0x2003}, {"thinsp", 0x2009},
    {"zwnj", 0x200C}, {"zwj", 0x200D}, {"lrm", 0x200E}, {"rlm", 0x200F}, {"ndash", 0x2013}, {"mdash", 0x2014},
    {"lsquo", 0x2018}, {"rsquo", 0x2019}, {"sbquo", 0x201A}, {"ldquo", 0x201C}, {"rdquo", 0x201D},
    {"bdquo", 0x201E}, {"dagger", 0x2020}, {"Dagger", 0x2021}, {"bull", 0x2022}, {"hellip", 0x2026},
    {"permil", 0x2030}, {"prime", 0x2032}, {"Prime", 0x2033}, {"lsaquo", 0x2039}, {"rsaquo", 0x203A},
    {"euro", 0x20AC}, {"trade", 0x2122}, {"larr", 0x2190}, {"uarr", 0x2191}, {"rarr", 0x2192}, {"darr", 0x2193},
    {"hearts", 0x2665},
};

/* Legacy references, valid with or without ';': amp lt gt quot, and the
 * Latin-1 names of U+00A0..U+00FF in order. */
static const html_entity html_legacy[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}};
static const char *const html_latin1[96] = {
    "nbsp", "iexcl", "cent", "pound", "curren", "yen", "brvbar", "sect", "uml", "copy", "ordf", "laquo",
    "not", "shy", "reg", "macr", "deg", "plusmn", "sup2", "sup3", "acute", "micro", "para", "middot",
    "cedil", "sup1", "ordm", "raquo", "frac14", "frac12", "frac34", "iquest", "Agrave", "Aacute", "Acirc", "Atilde",
    "Auml", "Aring", "AElig", "Ccedil", "Egrave", "Eacute", "Ecirc", "Euml", "Igrave", "Iacute", "Icirc", "Iuml",
    "ETH", "Ntilde", "Ograve", "Oacute", "Ocirc", "Otilde", "Ouml", "times", "Oslash", "Ugrave", "Uacute", "Ucirc",
    "Uuml", "Yacute", "THORN", "szlig", "agrave", "aacute", "acirc", "atilde", "auml", "aring", "aelig", "ccedil",
    "egrave", "eacute", "ecirc", "euml", "igrave", "iacute", "icirc", "iuml", "eth", "ntilde", "ograve", "oacute",
    "ocirc", "otilde", "ouml", "divide", "oslash", "ugrave", "uacute", "ucirc", "uuml", "yacute", "thorn", "yuml",
};

static int name_eq(const uint32_t *u, size_t n, const char *name) {
    size_t k = strlen(name);
    if (k != n) return 0;
    for (size_t i = 0; i < k; i++)
        if (u[i] != (unsigned char)name[i]) return 0;
    return 1;
}

/* Code point of a legacy entity named exactly u[0..n), or 0. */
static uint32_t html_legacy_cp(const uint32_t *u, size_t n) {
    for (size_t i = 0; i < sizeof html_legacy / sizeof *html_legacy; i++)
        if (name_eq(u, n, html_legacy[i].name)) return html_legacy[i].cp;
    for (int i = 0; i < 96; i++)
        if (name_eq(u, n, html_latin1[i])) return 0xA0 + (uint32_t)i;
    return 0;
}

static uint32_t html_named_cp(const uint32_t *u, size_t n) {
    for (size_t i = 0; i < sizeof html_named / sizeof *html_named; i++)
        if (name_eq(u, n, html_named[i].name)) return html_named[i].cp;
    return html_legacy_cp(u, n);
}

/* Python html's replacement of a numeric reference: -1 drops it. */
static int64_t html_charref(uint64_t num) {
    if (num == 0) return 0xFFFD;
    if (num == 0x0D) return '\r';
    if (num >= 0x80 && num <= 0x9F) return cp1252_c1[num - 0x80] ? cp1252_c1[num - 0x80] : (int64_t)num;
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return 0xFFFD;
    if ((num >= 0x1 && num <= 0x8) || (num >= 0xE && num <= 0x1F) || (num >= 0x7F && num <= 0x9F) ||
        (num >= 0xFDD0 && num <= 0xFDEF) || num == 0xB || (num & 0xFFFE) == 0xFFFE)
        return -1;
    return (int64_t)num;
}

static int is_digit(uint32_t c) { return c >= '0' && c <= '9'; }
static int is_hex(uint32_t c) { return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }

/* Python's html.unescape, in place (every replacement is shorter than the
 * reference it replaces): &#N; &#xH; (';' optional), and named references,
 * where a legacy name also matches as the longest prefix of the word. */
static size_t html_unescape(uint32_t *u, size_t n) {
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        if (u[i] != '&') {
            u[w++] = u[i++];
            continue;
        }
        size_t j = i + 1;
        if (j < n && u[j] == '#') {
            int hex = j + 1 < n && (u[j + 1] | 0x20) == 'x';
            size_t k = j + 1 + (size_t)hex, d0 = k;
            uint64_t num = 0;
            while (k < n && (hex ? is_hex(u[k]) : is_digit(u[k]))) {
                uint32_t c = u[k];
                uint32_t v = is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
                if (num <= 0x10FFFF) num = num * (hex ? 16 : 10) + v;
                k++;
            }
            if (k > d0) {
                if (k < n && u[k] == ';') k++;
                int64_t c = html_charref(num);
                if (c >= 0) u[w++] = (uint32_t)c;
                i = k;
                continue;
            }
            u[w++] = u[i++];
            continue;
        }
        /* a name: up to 32 characters other than \t \n \f space < & # ; */
        size_t k = j;
        while (k < n && k - j < 32 && u[k] != '\t' && u[k] != '\n' && u[k] != '\f' && u[k] != ' ' && u[k] != '<' &&
               u[k] != '&' && u[k] != '#' && u[k] != ';')
            k++;
        if (k == j) {
            u[w++] = u[i++];
            continue;
        }
        uint32_t c;
        if (k < n && u[k] == ';' && (c = html_named_cp(u + j, k - j)) != 0) {
            u[w++] = c;
            i = k + 1;
            continue;
        }
        /* the whole name without ';', then ever shorter prefixes (>= 2) */
        int done = 0;
        for (size_t p = k - j; p >= 2 && !done; p--) {
            if ((c = html_legacy_cp(u + j, p)) != 0) {
                u[w++] = c;
                i = j + p;
                done = 1;
            }
        }
        if (!done) u[w++] = u[i++];
    }
    return w;
}

/* Strips Python whitespace at both ends and, if collapse, turns every inner
 * run into one ' '. In place. */
static size_t clean_whitespace(uint32_t *u, size_t n, int collapse) {
    size_t a = 0, b = n, w = 0;
    while (a < b && py_space(u[a])) a++;
    while (b > a && py_space(u[b - 1])) b--;
    for (size_t i = a; i < b; i++) {
        if (collapse && py_space(u[i])) {
            while (i + 1 < b && py_space(u[i + 1])) i++;
            u[w++] = ' ';
        } else {
            u[w++] = u[i];
        }
    }
    return w;
}

lp_status lp_prompt_clean(const char *text, size_t len, char **out, size_t *out_len) {
    *out = NULL;
    if (len > SIZE_MAX / 4 - 1) return lp_fail(LP_ERR_ARG, "prompt cleaning: prompt too long (%zu bytes)", len);
    uint32_t *u = malloc((len ? len : 1) * sizeof *u);
    if (!u) return lp_fail(LP_ERR_NOMEM, "prompt cleaning: out of memory");
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t used;
        u[n++] = decode_utf8((const unsigned char *)text + i, len - i, &used);
        i += used;
    }
    n = fix_glitches(u, fix_mojibake(u, n)); /* basic_clean: ftfy subset */
    n = html_unescape(u, n);
    n = html_unescape(u, n);
    n = clean_whitespace(u, n, 0);
    n = clean_whitespace(u, n, 1); /* whitespace_clean */
    char *s = malloc(4 * n + 1);
    if (!s) {
        free(u);
        return lp_fail(LP_ERR_NOMEM, "prompt cleaning: out of memory");
    }
    size_t w = 0;
    for (size_t i = 0; i < n; i++) w += encode_utf8(u[i], s + w);
    s[w] = 0;
    free(u);
    *out = s;
    if (out_len) *out_len = w;
    return LP_OK;
}

lp_status lp_tokenizer_encode_prompt(const lp_tokenizer *t, const char *prompt, int L, int32_t *ids, uint8_t *mask,
                                     int *n_tokens) {
    if (L < 1) return lp_fail(LP_ERR_ARG, "encode_prompt: text length L must be >= 1 (got %d)", L);
    int eos = lp_tokenizer_find(t, "</s>", 4);
    if (eos < 0) return lp_fail(LP_ERR_MISSING, "encode_prompt: the model has no \"</s>\" piece");
    char *clean;
    size_t clean_len;
    LP_TRY(lp_prompt_clean(prompt, strlen(prompt), &clean, &clean_len));
    lp_tokens tk;
    lp_status s = lp_tokenizer_encode(t, clean, clean_len, &tk);
    free(clean);
    if (s != LP_OK) return s;
    size_t keep = tk.n < (size_t)L - 1 ? tk.n : (size_t)L - 1;
    for (size_t i = 0; i < keep; i++) ids[i] = tk.ids[i];
    ids[keep] = eos;
    for (size_t i = 0; i < (size_t)L; i++) {
        if (i > keep) ids[i] = 0;
        mask[i] = i <= keep;
    }
    if (n_tokens) *n_tokens = (int)keep + 1;
    lp_tokens_free(&tk);
    return LP_OK;
}
