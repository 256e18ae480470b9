/* safetensors reader: 8-byte little-endian header length N, N bytes of JSON,
 * then the data. Everything is validated before any view is handed out
 * (spec/CHECKPOINTS.md): N within the file, known dtypes, non-negative shapes
 * whose byte size fits and equals the offset range, ranges inside the data
 * section and not overlapping, no duplicate names. Views point into the
 * mapping (zero-copy) wherever the data is aligned for its dtype. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../base/json.h"
#include "tensor_file_impl.h"

static int parse_dtype(const char *s, lp_dtype *out) {
    static const struct { const char *name; lp_dtype t; } map[] = {
        {"F32", LP_F32}, {"F16", LP_F16}, {"BF16", LP_BF16}, {"F64", LP_F64}, {"I64", LP_I64},
        {"I32", LP_I32}, {"I16", LP_I16}, {"I8", LP_I8},     {"U8", LP_U8},   {"BOOL", LP_BOOL}};
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (!strcmp(s, map[i].name)) {
            *out = map[i].t;
            return 1;
        }
    return 0;
}

typedef struct {
    uint64_t begin, end;
    const char *name;
} range;

static int cmp_range(const void *a, const void *b) {
    const range *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

static lp_status parse_entry(lp_tensor_file *f, const lp_json *e, uint64_t data_len, range *r) {
    const char *nm = e->key;
    if (e->type != LP_JSON_OBJECT) return lp_fail(LP_ERR_FORMAT, "%s: header entry '%s' is not an object", f->path, nm);
    const lp_json *dt = lp_json_get(e, "dtype"), *sh = lp_json_get(e, "shape"), *off = lp_json_get(e, "data_offsets");
    if (!dt || dt->type != LP_JSON_STRING || !sh || sh->type != LP_JSON_ARRAY || !off || off->type != LP_JSON_ARRAY ||
        off->count != 2)
        return lp_fail(LP_ERR_FORMAT, "%s: tensor '%s' lacks a valid dtype, shape or data_offsets", f->path, nm);
    lp_tensor t = {0};
    if (!parse_dtype(dt->str, &t.dtype))
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: tensor '%s' has unknown dtype '%s'", f->path, nm, dt->str);
    if (sh->count > LP_MAX_DIMS)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: tensor '%s' has %zu dimensions (at most %d)", f->path, nm, sh->count,
                       LP_MAX_DIMS);
    t.ndim = (int)sh->count;
    uint64_t bytes = lp_dtype_size(t.dtype);
    for (int i = 0; i < t.ndim; i++) {
        int64_t d;
        if (lp_json_int64(&sh->children[i], &d) != LP_OK || d < 0)
            return lp_fail(LP_ERR_FORMAT, "%s: tensor '%s' has an invalid dimension", f->path, nm);
        t.shape[i] = d;
        if (d && bytes > (uint64_t)INT64_MAX / (uint64_t)d) /* so that every partial element count fits int64 */
            return lp_fail(LP_ERR_FORMAT, "%s: tensor '%s' is impossibly large", f->path, nm);
        bytes *= (uint64_t)d;
    }
    int64_t b, en;
    if (lp_json_int64(&off->children[0], &b) != LP_OK || lp_json_int64(&off->children[1], &en) != LP_OK || b < 0 ||
        en < b)
        return lp_fail(LP_ERR_FORMAT, "%s: tensor '%s' has invalid data_offsets", f->path, nm);
    if ((uint64_t)en > data_len)
        return lp_fail(LP_ERR_FORMAT, "%s: tensor '%s' data [%lld, %lld) lies beyond the file's %llu data bytes",
                       f->path, nm, (long long)b, (long long)en, (unsigned long long)data_len);
    if ((uint64_t)(en - b) != bytes)
        return lp_fail(LP_ERR_FORMAT, "%s: tensor '%s' spans %lld bytes but its dtype and shape need %llu", f->path,
                       nm, (long long)(en - b), (unsigned long long)bytes);
    t.name = lp_tf_strdup(f, nm, strlen(nm));
    if (!t.name) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", f->path);
    t.nbytes = (size_t)bytes;
    r->begin = (uint64_t)b;
    r->end = (uint64_t)en;
    r->name = t.name;
    t.data = NULL; /* set by the caller once the data section start is known */
    return lp_tf_add(f, &t);
}

/* Points t at its bytes p in the mapping or, where the file puts them at an
 * address unaligned for the dtype (the format does not require alignment), at
 * an aligned copy, so that every view can be read as a typed array. */
static lp_status place_view(lp_tensor_file *f, lp_tensor *t, const unsigned char *p) {
    if ((uintptr_t)p % lp_dtype_size(t->dtype) == 0) {
        t->data = p;
        return LP_OK;
    }
    void *copy = lp_tf_alloc(f, t->nbytes);
    if (!copy) return lp_fail(LP_ERR_NOMEM, "%s: out of memory copying unaligned tensor '%s'", f->path, t->name);
    memcpy(copy, p, t->nbytes);
    t->data = copy;
    return LP_OK;
}

lp_status lp_safetensors_parse(lp_tensor_file *f) {
    if (f->map_len < 8) return lp_fail(LP_ERR_FORMAT, "%s: truncated (no header length)", f->path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | f->map[i];
    if (n > f->map_len - 8)
        return lp_fail(LP_ERR_FORMAT, "%s: header length %llu runs past the end of the %zu-byte file", f->path,
                       (unsigned long long)n, f->map_len);
    const unsigned char *data = f->map + 8 + n;
    uint64_t data_len = f->map_len - 8 - n;
    lp_json_doc *doc;
    LP_TRY(lp_json_parse((const char *)f->map + 8, (size_t)n, f->path, &doc));
    const lp_json *root = lp_json_root(doc);
    lp_status s = LP_OK;
    range *ranges = NULL;
    if (root->type != LP_JSON_OBJECT) {
        s = lp_fail(LP_ERR_FORMAT, "%s: header is not a JSON object", f->path);
        goto out;
    }
    ranges = malloc((root->count + 1) * sizeof *ranges);
    if (!ranges) {
        s = lp_fail(LP_ERR_NOMEM, "%s: out of memory", f->path);
        goto out;
    }
    size_t nr = 0;
    for (size_t i = 0; i < root->count && s == LP_OK; i++) {
        const lp_json *e = &root->children[i];
        if (!strcmp(e->key, "__metadata__")) {
            if (e->type != LP_JSON_OBJECT) {
                s = lp_fail(LP_ERR_FORMAT, "%s: __metadata__ is not an object", f->path);
                break;
            }
            for (size_t j = 0; j < e->count && s == LP_OK; j++) {
                const lp_json *m = &e->children[j];
                if (m->type != LP_JSON_STRING)
                    s = lp_fail(LP_ERR_FORMAT, "%s: metadata value '%s' is not a string", f->path, m->key);
                else
                    s = lp_tf_add_meta(f, m->key, strlen(m->key), m->str, m->str_len);
            }
            continue;
        }
        s = parse_entry(f, e, data_len, &ranges[nr]);
        if (s == LP_OK) s = place_view(f, &f->tensors[f->count - 1], data + ranges[nr].begin);
        nr++;
    }
    if (s == LP_OK && nr > 1) {
        qsort(ranges, nr, sizeof *ranges, cmp_range);
        for (size_t i = 1; i < nr; i++)
            if (ranges[i].begin < ranges[i - 1].end) {
                s = lp_fail(LP_ERR_FORMAT, "%s: data of tensors '%s' and '%s' overlap", f->path, ranges[i - 1].name,
                            ranges[i].name);
                break;
            }
    }
out:
    free(ranges);
    lp_json_free(doc);
    return s;
}
