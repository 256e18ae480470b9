#include "json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct lp_json_doc {
    lp_json root;
    /* every node and string lives in blocks chained here */
    void **blocks;
    size_t nblocks, cap;
};

typedef struct {
    const char *start, *p, *end, *what;
    lp_json_doc *doc;
} parser;

static void *doc_alloc(lp_json_doc *d, size_t n) {
    if (d->nblocks == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 16;
        void **nb = realloc(d->blocks, nc * sizeof *nb);
        if (!nb) return NULL;
        d->blocks = nb;
        d->cap = nc;
    }
    void *m = malloc(n ? n : 1);
    if (m) d->blocks[d->nblocks++] = m;
    return m;
}

static void skip_ws(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static lp_status perr(parser *ps, const char *msg) {
    return lp_fail(LP_ERR_FORMAT, "%s: invalid JSON at byte %ld: %s", ps->what, (long)(ps->p - ps->start), msg);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static lp_status parse_string(parser *ps, const char **out, size_t *outlen) {
    ps->p++; /* opening quote */
    const char *s = ps->p;
    while (s < ps->end && *s != '"') {
        if (*s == '\\') s++;
        s++;
    }
    if (s >= ps->end) return perr(ps, "unterminated string");
    char *buf = doc_alloc(ps->doc, (size_t)(s - ps->p) + 1);
    if (!buf) return lp_fail(LP_ERR_NOMEM, "%s: out of memory parsing JSON", ps->what);
    size_t n = 0;
    while (*ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p++;
        if (c < 0x20) return perr(ps, "control character in string");
        if (c != '\\') { buf[n++] = (char)c; continue; }
        char e = *ps->p++;
        switch (e) {
        case '"': buf[n++] = '"'; break;
        case '\\': buf[n++] = '\\'; break;
        case '/': buf[n++] = '/'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'u': {
            uint32_t cp = 0;
            for (int k = 0; k < 4; k++) {
                int h = ps->p < ps->end ? hexval(*ps->p++) : -1;
                if (h < 0) return perr(ps, "bad \\u escape");
                cp = cp * 16 + (uint32_t)h;
            }
            if (cp >= 0xd800 && cp < 0xdc00 && ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u') {
                uint32_t lo = 0;
                int ok = 1;
                for (int k = 0; k < 4; k++) {
                    int h = hexval(ps->p[2 + k]);
                    if (h < 0) ok = 0;
                    lo = lo * 16 + (uint32_t)(h < 0 ? 0 : h);
                }
                if (ok && lo >= 0xdc00 && lo < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    ps->p += 6;
                }
            }
            /* a \u escape takes 6 input bytes and at most 4 output bytes */
            if (cp < 0x80) buf[n++] = (char)cp;
            else if (cp < 0x800) { buf[n++] = (char)(0xc0 | (cp >> 6)); buf[n++] = (char)(0x80 | (cp & 0x3f)); }
            else if (cp < 0x10000) { buf[n++] = (char)(0xe0 | (cp >> 12)); buf[n++] = (char)(0x80 | ((cp >> 6) & 0x3f)); buf[n++] = (char)(0x80 | (cp & 0x3f)); }
            else { buf[n++] = (char)(0xf0 | (cp >> 18)); buf[n++] = (char)(0x80 | ((cp >> 12) & 0x3f)); buf[n++] = (char)(0x80 | ((cp >> 6) & 0x3f)); buf[n++] = (char)(0x80 | (cp & 0x3f)); }
            break;
        }
        default: return perr(ps, "bad escape");
        }
    }
    ps->p++; /* closing quote */
    buf[n] = 0;
    *out = buf;
    *outlen = n;
    return LP_OK;
}

static lp_status parse_value(parser *ps, lp_json *node, int depth);

/* Children are collected in a growing temporary array, then copied into the doc. */
static lp_status parse_container(parser *ps, lp_json *node, int depth, int is_object) {
    ps->p++;
    size_t cap = 8, n = 0;
    lp_json *tmp = malloc(cap * sizeof *tmp);
    if (!tmp) return lp_fail(LP_ERR_NOMEM, "%s: out of memory parsing JSON", ps->what);
    lp_status s = LP_OK;
    char close = is_object ? '}' : ']';
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        goto done;
    }
    for (;;) {
        if (n == cap) {
            lp_json *nt = realloc(tmp, 2 * cap * sizeof *nt);
            if (!nt) { s = lp_fail(LP_ERR_NOMEM, "%s: out of memory parsing JSON", ps->what); goto done; }
            tmp = nt;
            cap *= 2;
        }
        lp_json *child = &tmp[n];
        memset(child, 0, sizeof *child);
        skip_ws(ps);
        if (is_object) {
            if (ps->p >= ps->end || *ps->p != '"') { s = perr(ps, "expected a key"); goto done; }
            size_t kl;
            if ((s = parse_string(ps, &child->key, &kl)) != LP_OK) goto done;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') { s = perr(ps, "expected ':'"); goto done; }
            ps->p++;
        }
        const char *key = child->key;
        if ((s = parse_value(ps, child, depth + 1)) != LP_OK) goto done;
        child->key = key;
        n++;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
        if (ps->p < ps->end && *ps->p == close) { ps->p++; break; }
        s = perr(ps, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
        goto done;
    }
done:
    if (s == LP_OK) {
        node->count = n;
        node->children = doc_alloc(ps->doc, n * sizeof *tmp);
        if (!node->children) s = lp_fail(LP_ERR_NOMEM, "%s: out of memory parsing JSON", ps->what);
        else if (n) memcpy(node->children, tmp, n * sizeof *tmp);
    }
    free(tmp);
    return s;
}

static lp_status parse_value(parser *ps, lp_json *node, int depth) {
    skip_ws(ps);
    if (ps->p >= ps->end) return perr(ps, "unexpected end");
    char c = *ps->p;
    if ((c == '{' || c == '[') && depth >= 64) return perr(ps, "nesting too deep"); /* the 65th container */
    if (c == '{') { node->type = LP_JSON_OBJECT; return parse_container(ps, node, depth, 1); }
    if (c == '[') { node->type = LP_JSON_ARRAY; return parse_container(ps, node, depth, 0); }
    if (c == '"') { node->type = LP_JSON_STRING; return parse_string(ps, &node->str, &node->str_len); }
    static const struct { const char *lit; lp_json_type t; int b; } lits[] = {
        {"true", LP_JSON_BOOL, 1}, {"false", LP_JSON_BOOL, 0}, {"null", LP_JSON_NULL, 0}};
    for (int i = 0; i < 3; i++) {
        size_t l = strlen(lits[i].lit);
        if ((size_t)(ps->end - ps->p) >= l && !memcmp(ps->p, lits[i].lit, l)) {
            node->type = lits[i].t;
            node->boolean = lits[i].b;
            ps->p += l;
            return LP_OK;
        }
    }
    const char *s = ps->p;
    if (ps->p < ps->end && (*ps->p == '-' || *ps->p == '+')) ps->p++;
    int digits = 0;
    while (ps->p < ps->end && ((*ps->p >= '0' && *ps->p <= '9') || *ps->p == '.' || *ps->p == 'e' || *ps->p == 'E' ||
                               ((*ps->p == '-' || *ps->p == '+') && (ps->p[-1] == 'e' || ps->p[-1] == 'E')))) {
        digits += (*ps->p >= '0' && *ps->p <= '9');
        ps->p++;
    }
    if (!digits) return perr(ps, "unexpected character");
    char *lit = doc_alloc(ps->doc, (size_t)(ps->p - s) + 1);
    if (!lit) return lp_fail(LP_ERR_NOMEM, "%s: out of memory parsing JSON", ps->what);
    memcpy(lit, s, (size_t)(ps->p - s));
    lit[ps->p - s] = 0;
    node->type = LP_JSON_NUMBER;
    node->str = lit;
    node->str_len = (size_t)(ps->p - s);
    return LP_OK;
}

lp_status lp_json_parse(const char *text, size_t len, const char *what, lp_json_doc **out) {
    *out = NULL;
    lp_json_doc *d = calloc(1, sizeof *d);
    if (!d) return lp_fail(LP_ERR_NOMEM, "%s: out of memory parsing JSON", what);
    parser ps = {text, text, text + len, what, d};
    lp_status s = parse_value(&ps, &d->root, 0);
    if (s == LP_OK) {
        skip_ws(&ps);
        if (ps.p != ps.end) s = perr(&ps, "trailing characters");
    }
    if (s != LP_OK) {
        lp_json_free(d);
        return s;
    }
    *out = d;
    return LP_OK;
}

void lp_json_free(lp_json_doc *doc) {
    if (!doc) return;
    for (size_t i = 0; i < doc->nblocks; i++) free(doc->blocks[i]);
    free(doc->blocks);
    free(doc);
}

const lp_json *lp_json_root(const lp_json_doc *doc) { return &doc->root; }

const lp_json *lp_json_get(const lp_json *obj, const char *key) {
    if (!obj || obj->type != LP_JSON_OBJECT) return NULL;
    for (size_t i = 0; i < obj->count; i++)
        if (!strcmp(obj->children[i].key, key)) return &obj->children[i];
    return NULL;
}

lp_status lp_json_int64(const lp_json *n, int64_t *out) {
    if (!n || n->type != LP_JSON_NUMBER) return lp_fail(LP_ERR_FORMAT, "JSON value is not a number");
    char *end;
    errno = 0;
    long long v = strtoll(n->str, &end, 10);
    if (errno || *end) return lp_fail(LP_ERR_FORMAT, "JSON number '%s' is not an integer that fits 64 bits", n->str);
    *out = v;
    return LP_OK;
}

lp_status lp_json_double(const lp_json *n, double *out) {
    if (!n || n->type != LP_JSON_NUMBER) return lp_fail(LP_ERR_FORMAT, "JSON value is not a number");
    char *end;
    double v = strtod(n->str, &end);
    if (*end) return lp_fail(LP_ERR_FORMAT, "JSON number '%s' is malformed", n->str);
    *out = v;
    return LP_OK;
}
