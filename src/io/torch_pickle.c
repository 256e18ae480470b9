/* PyTorch zip checkpoint reader (spec/CHECKPOINTS.md, "PyTorch .pt/.pth").
 *
 * The archive holds <prefix>/data.pkl, a pickle of the saved object, and one
 * member <prefix>/data/<key> of raw little-endian bytes per storage. data.pkl
 * is run by a restricted unpickler: a small stack machine that knows the
 * opcodes a state_dict needs (protocols 2-5) and a fixed list of globals
 * (collections.OrderedDict, torch._utils._rebuild_tensor_v2 and
 * _rebuild_parameter, torch.Size, torch.<Type>Storage). Nothing is ever
 * executed: any other global, or calling an allowed one in a way a state_dict
 * does not, is refused with an error naming it.
 *
 * Naming: nested dicts flatten into dotted names ({"a": {"b": T}} -> "a.b"),
 * list and tuple items by their index; a bare tensor saved on its own is named
 * after the archive prefix. Scalar leaves (int, float, bool, str, None) become
 * metadata strings under the same dotted names.
 *
 * Tensors: _rebuild_tensor_v2(storage, offset, size, stride, ...) with a
 * contiguous layout becomes a zero-copy view into the storage's member (several
 * tensors may share a storage); other strides, and members not aligned to the
 * element size (never the case in files PyTorch writes: it pads them to 64
 * bytes), are copied into an f-owned contiguous block, so every view can be
 * read through a typed pointer. Offsets, sizes and strides are checked against
 * the storage.
 *
 * Hostile input is bounded: data.pkl at most 64 MiB, memo indices below the
 * pickle's length, nesting at most 64 levels when flattening, a walk budget
 * against shared sub-objects, and a memory budget for the machine and for what
 * it allocates on f's behalf (inflated storages and strided copies). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor_file_impl.h"
#include "zip.h"

#define MAX_PICKLE_BYTES ((size_t)64 << 20)
#define MAX_NEST 64
#define MAX_NAME 4096
#define BUDGET_BASE ((size_t)64 << 20)

typedef enum {
    V_NONE,
    V_BOOL,
    V_INT,
    V_FLOAT,
    V_STR,
    V_BYTES,
    V_TUPLE,
    V_LIST,
    V_DICT,
    V_GLOBAL,
    V_STORAGE,
    V_TENSOR
} vtype;

typedef enum { G_ORDERED_DICT, G_REBUILD_TENSOR, G_REBUILD_PARAMETER, G_SIZE, G_STORAGE_TYPE } gkind;

typedef struct val val;

typedef struct {
    const unsigned char *data; /* first element of the view */
    int ndim;
    int64_t size[LP_MAX_DIMS], stride[LP_MAX_DIMS];
    lp_dtype dtype;
    int contiguous;
} tensor_info;

struct val {
    vtype t;
    union {
        int64_t i; /* BOOL, INT */
        double d;  /* FLOAT */
        struct {   /* STR, BYTES: bytes inside the pickle */
            const char *s;
            size_t n;
        } str;
        struct { /* TUPLE, LIST; DICT as key, value, key, value, ... */
            val **items;
            size_t n, cap;
        } seq;
        struct { /* GLOBAL */
            gkind kind;
            lp_dtype dtype; /* G_STORAGE_TYPE */
        } g;
        struct { /* STORAGE: a resolved storage member */
            const unsigned char *data;
            int64_t numel;
            lp_dtype dtype;
        } st;
        tensor_info *tn; /* TENSOR */
    };
};

#define POOL_BLOCK 4096
typedef struct pool_block {
    struct pool_block *next;
    size_t used;
    val v[POOL_BLOCK];
} pool_block;

/* A storage member already located (and inflated if it was deflated). */
typedef struct {
    const char *key;
    size_t key_len;
    const unsigned char *data;
    uint64_t bytes;
} storage_slot;

typedef struct {
    lp_tensor_file *f;
    const lp_zip *zip;
    const char *prefix; /* archive prefix, NUL-terminated */
    const unsigned char *p;
    size_t len, pos;
    val **stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t nmarks, marks_cap;
    val **memo;
    size_t memo_cap, nmemo; /* nmemo: entries set (MEMOIZE's next index) */
    pool_block *pool;
    storage_slot *slots; /* open-addressing hash table by key */
    size_t slots_cap, nslots;
    size_t mem, mem_budget;     /* unpickler memory */
    size_t owned, owned_budget; /* bytes allocated on f's behalf */
    size_t walk_budget, name_bytes, name_budget;
    val none;
} machine;

/* ---- memory ---- */

static lp_status charge(machine *m, size_t n) {
    if (n > m->mem_budget - m->mem)
        return lp_fail(LP_ERR_FORMAT, "%s: data.pkl needs more than %zu bytes of memory to unpickle (hostile file?)",
                       m->f->path, m->mem_budget);
    m->mem += n;
    return LP_OK;
}

/* Makes room for need elements in arr (capacity *cap), charging the budget;
 * *out is the possibly moved array. Use through GROW. */
static lp_status grow(machine *m, void *arr, size_t *cap, size_t need, size_t elem, void **out) {
    *out = arr;
    if (need <= *cap) return LP_OK;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) nc *= 2;
    LP_TRY(charge(m, (nc - *cap) * elem));
    void *na = realloc(arr, nc * elem);
    if (!na) return lp_fail(LP_ERR_NOMEM, "%s: out of memory unpickling", m->f->path);
    *out = na;
    *cap = nc;
    return LP_OK;
}

#define GROW(m, arr, cap, need)                                                                                        \
    do {                                                                                                               \
        void *grown_;                                                                                                  \
        LP_TRY(grow((m), (arr), &(cap), (need), sizeof *(arr), &grown_));                                              \
        (arr) = grown_;                                                                                                \
    } while (0)

static lp_status new_val(machine *m, vtype t, val **out) {
    if (!m->pool || m->pool->used == POOL_BLOCK) {
        LP_TRY(charge(m, sizeof(pool_block)));
        pool_block *b = malloc(sizeof *b);
        if (!b) return lp_fail(LP_ERR_NOMEM, "%s: out of memory unpickling", m->f->path);
        b->next = m->pool;
        b->used = 0;
        m->pool = b;
    }
    val *v = &m->pool->v[m->pool->used++];
    memset(v, 0, sizeof *v);
    v->t = t;
    *out = v;
    return LP_OK;
}

static void free_machine(machine *m) {
    for (pool_block *b = m->pool; b;) {
        for (size_t i = 0; i < b->used; i++) {
            val *v = &b->v[i];
            if (v->t == V_TUPLE || v->t == V_LIST || v->t == V_DICT)
                free(v->seq.items);
            else if (v->t == V_TENSOR)
                free(v->tn);
        }
        pool_block *n = b->next;
        free(b);
        b = n;
    }
    free(m->stack);
    free(m->marks);
    free(m->memo);
    free(m->slots);
}

/* ---- stack ---- */

static lp_status push(machine *m, val *v) {
    GROW(m, m->stack, m->stack_cap, m->sp + 1);
    m->stack[m->sp++] = v;
    return LP_OK;
}

static lp_status push_new(machine *m, vtype t, val **out) {
    LP_TRY(new_val(m, t, out));
    return push(m, *out);
}

static lp_status pop(machine *m, val **out) {
    size_t floor = m->nmarks ? m->marks[m->nmarks - 1] : 0;
    if (m->sp <= floor)
        return lp_fail(LP_ERR_FORMAT, "%s: data.pkl pops an empty stack at byte %zu", m->f->path, m->pos);
    *out = m->stack[--m->sp];
    return LP_OK;
}

static lp_status top(machine *m, val **out) {
    size_t floor = m->nmarks ? m->marks[m->nmarks - 1] : 0;
    if (m->sp <= floor)
        return lp_fail(LP_ERR_FORMAT, "%s: data.pkl reads an empty stack at byte %zu", m->f->path, m->pos);
    *out = m->stack[m->sp - 1];
    return LP_OK;
}

/* Pops the topmost mark: the items above it are stack[*first .. sp). */
static lp_status pop_mark(machine *m, size_t *first) {
    if (!m->nmarks) return lp_fail(LP_ERR_FORMAT, "%s: data.pkl has no MARK at byte %zu", m->f->path, m->pos);
    *first = m->marks[--m->nmarks];
    return LP_OK;
}

static lp_status seq_append(machine *m, val *s, val *item) {
    GROW(m, s->seq.items, s->seq.cap, s->seq.n + 1);
    s->seq.items[s->seq.n++] = item;
    return LP_OK;
}

/* Makes a tuple of stack[first .. sp) and replaces those items with it. */
static lp_status make_tuple(machine *m, size_t first) {
    val *t;
    LP_TRY(new_val(m, V_TUPLE, &t));
    for (size_t i = first; i < m->sp; i++) LP_TRY(seq_append(m, t, m->stack[i]));
    m->sp = first;
    return push(m, t);
}

/* ---- reading the pickle ---- */

static lp_status take(machine *m, size_t n, const unsigned char **out) {
    if (n > m->len - m->pos)
        return lp_fail(LP_ERR_FORMAT, "%s: data.pkl is truncated (needs %zu bytes at byte %zu of %zu)", m->f->path, n,
                       m->pos, m->len);
    *out = m->p + m->pos;
    m->pos += n;
    return LP_OK;
}

static lp_status take_uint(machine *m, int nbytes, uint64_t *out) {
    const unsigned char *b = NULL;
    LP_TRY(take(m, (size_t)nbytes, &b));
    uint64_t v = 0;
    for (int i = nbytes - 1; i >= 0; i--) v = v << 8 | b[i];
    *out = v;
    return LP_OK;
}

/* A string or bytes object whose length is stored in nlen little-endian bytes. */
static lp_status op_string(machine *m, int nlen, vtype t) {
    uint64_t n = 0;
    LP_TRY(take_uint(m, nlen, &n));
    if (n > m->len - m->pos)
        return lp_fail(LP_ERR_FORMAT, "%s: data.pkl string of %llu bytes at byte %zu runs past its end", m->f->path,
                       (unsigned long long)n, m->pos);
    const unsigned char *s = NULL;
    LP_TRY(take(m, (size_t)n, &s));
    val *v;
    LP_TRY(push_new(m, t, &v));
    v->str.s = (const char *)s;
    v->str.n = (size_t)n;
    return LP_OK;
}

/* LONG1/LONG4: a little-endian two's complement integer of n bytes (n <= 8). */
static lp_status op_long(machine *m, int nlen) {
    uint64_t n = 0;
    LP_TRY(take_uint(m, nlen, &n));
    if (n > 8)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: data.pkl holds a %llu-byte integer at byte %zu (at most 8)", m->f->path,
                       (unsigned long long)n, m->pos);
    uint64_t u = 0;
    if (n) LP_TRY(take_uint(m, (int)n, &u));
    if (n && n < 8 && (u >> (8 * n - 1)) & 1) u |= ~(uint64_t)0 << (8 * n);
    val *v;
    LP_TRY(push_new(m, V_INT, &v));
    memcpy(&v->i, &u, sizeof u);
    return LP_OK;
}

static lp_status push_int(machine *m, int64_t x) {
    val *v;
    LP_TRY(push_new(m, V_INT, &v));
    v->i = x;
    return LP_OK;
}

static lp_status memo_put(machine *m, uint64_t idx) {
    if (idx >= m->len)
        return lp_fail(LP_ERR_FORMAT, "%s: data.pkl memo index %llu is out of range", m->f->path,
                       (unsigned long long)idx);
    val *v = NULL;
    LP_TRY(top(m, &v));
    size_t old = m->memo_cap;
    GROW(m, m->memo, m->memo_cap, (size_t)idx + 1);
    if (m->memo_cap > old) memset(m->memo + old, 0, (m->memo_cap - old) * sizeof *m->memo);
    if (!m->memo[idx]) m->nmemo++;
    m->memo[idx] = v;
    return LP_OK;
}

static lp_status memo_get(machine *m, uint64_t idx) {
    if (idx >= m->memo_cap || !m->memo[idx])
        return lp_fail(LP_ERR_FORMAT, "%s: data.pkl reads memo entry %llu that was never stored", m->f->path,
                       (unsigned long long)idx);
    return push(m, m->memo[idx]);
}

/* ---- globals ---- */

static lp_status resolve_global(machine *m, const char *mod, size_t ml, const char *name, size_t nl) {
    static const struct {
        const char *name;
        lp_dtype t;
    } storages[] = {{"FloatStorage", LP_F32},  {"HalfStorage", LP_F16}, {"BFloat16Storage", LP_BF16},
                    {"DoubleStorage", LP_F64}, {"LongStorage", LP_I64}, {"IntStorage", LP_I32},
                    {"ShortStorage", LP_I16},  {"CharStorage", LP_I8},  {"ByteStorage", LP_U8},
                    {"BoolStorage", LP_BOOL}};
#define IS(s, l, lit) ((l) == sizeof(lit) - 1 && !memcmp((s), (lit), (l)))
    val *v;
    LP_TRY(new_val(m, V_GLOBAL, &v));
    if (IS(mod, ml, "collections") && IS(name, nl, "OrderedDict")) {
        v->g.kind = G_ORDERED_DICT;
    } else if (IS(mod, ml, "torch._utils") && IS(name, nl, "_rebuild_tensor_v2")) {
        v->g.kind = G_REBUILD_TENSOR;
    } else if (IS(mod, ml, "torch._utils") && IS(name, nl, "_rebuild_parameter")) {
        v->g.kind = G_REBUILD_PARAMETER;
    } else if (IS(mod, ml, "torch") && IS(name, nl, "Size")) {
        v->g.kind = G_SIZE;
    } else {
        int found = 0;
        for (size_t i = 0; IS(mod, ml, "torch") && i < sizeof storages / sizeof *storages && !found; i++)
            if (nl == strlen(storages[i].name) && !memcmp(name, storages[i].name, nl)) {
                v->g.kind = G_STORAGE_TYPE;
                v->g.dtype = storages[i].t;
                found = 1;
            }
        if (!found)
            return lp_fail(LP_ERR_UNSUPPORTED,
                           "%s: data.pkl refers to the global '%.*s.%.*s', which is not allowed in a checkpoint "
                           "(refused: a pickle could run code through it)",
                           m->f->path, (int)(ml > 200 ? 200 : ml), mod, (int)(nl > 200 ? 200 : nl), name);
    }
#undef IS
    return push(m, v);
}

/* GLOBAL: "module\nname\n". */
static lp_status op_global(machine *m) {
    const char *s = (const char *)m->p + m->pos;
    size_t rest = m->len - m->pos;
    const char *nl1 = memchr(s, '\n', rest);
    const char *nl2 = nl1 ? memchr(nl1 + 1, '\n', rest - (size_t)(nl1 + 1 - s)) : NULL;
    if (!nl2) return lp_fail(LP_ERR_FORMAT, "%s: data.pkl GLOBAL at byte %zu is truncated", m->f->path, m->pos);
    m->pos += (size_t)(nl2 + 1 - s);
    return resolve_global(m, s, (size_t)(nl1 - s), nl1 + 1, (size_t)(nl2 - nl1 - 1));
}

static lp_status op_stack_global(machine *m) {
    val *name = NULL, *mod = NULL;
    LP_TRY(pop(m, &name));
    LP_TRY(pop(m, &mod));
    if (name->t != V_STR || mod->t != V_STR)
        return lp_fail(LP_ERR_FORMAT, "%s: data.pkl STACK_GLOBAL at byte %zu needs two strings", m->f->path, m->pos);
    return resolve_global(m, mod->str.s, mod->str.n, name->str.s, name->str.n);
}

/* ---- storages ---- */

static uint64_t hash_key(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

/* Looks the key up in the slot table, locating (and if needed inflating) the
 * member <prefix>/data/<key> on first use. */
static lp_status storage_bytes(machine *m, const char *key, size_t key_len, const unsigned char **data,
                               uint64_t *bytes) {
    if (2 * (m->nslots + 1) > m->slots_cap) {
        size_t nc = m->slots_cap ? 2 * m->slots_cap : 64;
        LP_TRY(charge(m, nc * sizeof *m->slots));
        storage_slot *ns = calloc(nc, sizeof *ns);
        if (!ns) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", m->f->path);
        for (size_t i = 0; i < m->slots_cap; i++) {
            if (!m->slots[i].key) continue;
            size_t j = (size_t)hash_key(m->slots[i].key, m->slots[i].key_len) & (nc - 1);
            while (ns[j].key) j = (j + 1) & (nc - 1);
            ns[j] = m->slots[i];
        }
        free(m->slots);
        m->slots = ns;
        m->slots_cap = nc;
    }
    size_t j = (size_t)hash_key(key, key_len) & (m->slots_cap - 1);
    for (; m->slots[j].key; j = (j + 1) & (m->slots_cap - 1))
        if (m->slots[j].key_len == key_len && !memcmp(m->slots[j].key, key, key_len)) {
            *data = m->slots[j].data;
            *bytes = m->slots[j].bytes;
            return LP_OK;
        }
    char member[600];
    if (key_len > 256 || memchr(key, 0, key_len))
        return lp_fail(LP_ERR_FORMAT, "%s: data.pkl names an invalid storage key", m->f->path);
    snprintf(member, sizeof member, "%s/data/%.*s", m->prefix, (int)key_len, key);
    const lp_zip_entry *e = lp_zip_find(m->zip, member);
    if (!e)
        return lp_fail(LP_ERR_FORMAT, "%s: storage '%.*s' has no member '%s'", m->f->path, (int)key_len, key, member);
    const unsigned char *d = m->f->map + e->data_offset;
    if (e->method != 0) {
        if (e->size > m->owned_budget - m->owned)
            return lp_fail(LP_ERR_FORMAT, "%s: storage '%s' inflates to %llu bytes, more than this file may need",
                           m->f->path, member, (unsigned long long)e->size);
        unsigned char *buf = lp_tf_alloc(m->f, (size_t)e->size);
        if (!buf) return lp_fail(LP_ERR_NOMEM, "%s: out of memory inflating '%s'", m->f->path, member);
        m->owned += (size_t)e->size;
        LP_TRY(lp_zip_extract(m->zip, e, buf, (size_t)e->size));
        d = buf;
    }
    m->slots[j] = (storage_slot){key, key_len, d, e->size};
    m->nslots++;
    *data = d;
    *bytes = e->size;
    return LP_OK;
}

/* BINPERSID: ('storage', torch.<Type>Storage, key, location, numel). */
static lp_status op_persid(machine *m) {
    val *pid = NULL;
    LP_TRY(pop(m, &pid));
    val **it = pid->seq.items;
    if (pid->t != V_TUPLE || pid->seq.n != 5 || it[0]->t != V_STR || it[0]->str.n != 7 ||
        memcmp(it[0]->str.s, "storage", 7) || it[1]->t != V_GLOBAL || it[1]->g.kind != G_STORAGE_TYPE ||
        it[2]->t != V_STR || it[4]->t != V_INT)
        return lp_fail(LP_ERR_FORMAT,
                       "%s: data.pkl persistent id at byte %zu is not ('storage', torch.<Type>Storage, key, "
                       "location, numel)",
                       m->f->path, m->pos);
    lp_dtype dt = it[1]->g.dtype;
    int64_t numel = it[4]->i;
    const unsigned char *data = NULL;
    uint64_t bytes = 0;
    LP_TRY(storage_bytes(m, it[2]->str.s, it[2]->str.n, &data, &bytes));
    uint64_t es = lp_dtype_size(dt);
    if (numel < 0 || (uint64_t)numel > UINT64_MAX / es || (uint64_t)numel * es != bytes)
        return lp_fail(LP_ERR_FORMAT, "%s: storage '%.*s' of %lld %s elements does not match its %llu-byte member",
                       m->f->path, (int)it[2]->str.n, it[2]->str.s, (long long)numel, lp_dtype_name(dt),
                       (unsigned long long)bytes);
    val *v;
    LP_TRY(push_new(m, V_STORAGE, &v));
    v->st.data = data;
    v->st.numel = numel;
    v->st.dtype = dt;
    return LP_OK;
}

/* ---- calls ---- */

static lp_status int_tuple(machine *m, const val *t, const char *what, int *n, int64_t *out) {
    if ((t->t != V_TUPLE && t->t != V_LIST) || t->seq.n > LP_MAX_DIMS)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: tensor %s at byte %zu is not a tuple of at most %d integers",
                       m->f->path, what, m->pos, LP_MAX_DIMS);
    for (size_t i = 0; i < t->seq.n; i++) {
        if (t->seq.items[i]->t != V_INT)
            return lp_fail(LP_ERR_FORMAT, "%s: tensor %s at byte %zu holds a non-integer", m->f->path, what, m->pos);
        out[i] = t->seq.items[i]->i;
    }
    *n = (int)t->seq.n;
    return LP_OK;
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
 * backward_hooks[, metadata]): checks that every element lies inside the
 * storage and records the view. */
static lp_status rebuild_tensor(machine *m, const val *args, val **out) {
    if (args->seq.n < 4 || args->seq.n > 7 || args->seq.items[0]->t != V_STORAGE || args->seq.items[1]->t != V_INT)
        return lp_fail(LP_ERR_FORMAT, "%s: _rebuild_tensor_v2 at byte %zu has unexpected arguments", m->f->path,
                       m->pos);
    const val *st = args->seq.items[0];
    int64_t off = args->seq.items[1]->i;
    tensor_info ti = {.dtype = st->st.dtype};
    int ns, nd;
    LP_TRY(int_tuple(m, args->seq.items[2], "size", &ns, ti.size));
    LP_TRY(int_tuple(m, args->seq.items[3], "stride", &nd, ti.stride));
    if (ns != nd)
        return lp_fail(LP_ERR_FORMAT, "%s: tensor at byte %zu has %d sizes but %d strides", m->f->path, m->pos, ns, nd);
    ti.ndim = ns;
    if (off < 0 || off > st->st.numel)
        return lp_fail(LP_ERR_FORMAT, "%s: tensor at byte %zu starts at element %lld of a %lld-element storage",
                       m->f->path, m->pos, (long long)off, (long long)st->st.numel);
    uint64_t numel = 1, last = (uint64_t)off, expect = 1;
    ti.contiguous = 1;
    for (int i = ns - 1; i >= 0; i--) {
        int64_t d = ti.size[i], s = ti.stride[i];
        if (d < 0 || s < 0)
            return lp_fail(LP_ERR_FORMAT, "%s: tensor at byte %zu has a negative size or stride (%lld, %lld)",
                           m->f->path, m->pos, (long long)d, (long long)s);
        if (d && numel > (uint64_t)INT64_MAX / (uint64_t)d)
            return lp_fail(LP_ERR_FORMAT, "%s: tensor at byte %zu has an overflowing size", m->f->path, m->pos);
        numel *= (uint64_t)d;
        if (d > 1) {
            if ((uint64_t)s != expect) ti.contiguous = 0;
            if ((uint64_t)s > (uint64_t)INT64_MAX / (uint64_t)(d - 1) ||
                (uint64_t)s * (uint64_t)(d - 1) > (uint64_t)INT64_MAX - last)
                return lp_fail(LP_ERR_FORMAT, "%s: tensor at byte %zu has an overflowing stride", m->f->path, m->pos);
            last += (uint64_t)s * (uint64_t)(d - 1);
        }
        if (d) expect *= (uint64_t)d;
    }
    if (numel > (uint64_t)INT64_MAX / lp_dtype_size(ti.dtype))
        return lp_fail(LP_ERR_FORMAT, "%s: tensor at byte %zu is too large", m->f->path, m->pos);
    if (numel && last >= (uint64_t)st->st.numel)
        return lp_fail(LP_ERR_FORMAT,
                       "%s: tensor at byte %zu reaches element %llu of a %lld-element storage (offset %lld)",
                       m->f->path, m->pos, (unsigned long long)last, (long long)st->st.numel, (long long)off);
    ti.data = st->st.data + (size_t)off * lp_dtype_size(ti.dtype);
    LP_TRY(charge(m, sizeof ti));
    val *v;
    LP_TRY(new_val(m, V_TENSOR, &v));
    v->tn = malloc(sizeof ti);
    if (!v->tn) {
        v->t = V_NONE;
        return lp_fail(LP_ERR_NOMEM, "%s: out of memory", m->f->path);
    }
    *v->tn = ti;
    *out = v;
    return LP_OK;
}

static lp_status op_reduce(machine *m) {
    val *args = NULL, *fn = NULL, *res = NULL;
    LP_TRY(pop(m, &args));
    LP_TRY(pop(m, &fn));
    if (fn->t != V_GLOBAL || args->t != V_TUPLE)
        return lp_fail(LP_ERR_FORMAT, "%s: data.pkl REDUCE at byte %zu calls something that is not an allowed global",
                       m->f->path, m->pos);
    switch (fn->g.kind) {
    case G_ORDERED_DICT:
        if (args->seq.n)
            return lp_fail(LP_ERR_UNSUPPORTED, "%s: OrderedDict called with arguments at byte %zu", m->f->path, m->pos);
        LP_TRY(new_val(m, V_DICT, &res));
        break;
    case G_REBUILD_TENSOR: LP_TRY(rebuild_tensor(m, args, &res)); break;
    case G_REBUILD_PARAMETER:
        if (args->seq.n < 1 || args->seq.items[0]->t != V_TENSOR)
            return lp_fail(LP_ERR_FORMAT, "%s: _rebuild_parameter at byte %zu is not given a tensor", m->f->path,
                           m->pos);
        res = args->seq.items[0];
        break;
    case G_SIZE:
        if (args->seq.n != 1 || args->seq.items[0]->t != V_TUPLE)
            return lp_fail(LP_ERR_FORMAT, "%s: torch.Size at byte %zu is not given a tuple", m->f->path, m->pos);
        res = args->seq.items[0];
        break;
    case G_STORAGE_TYPE:
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: data.pkl calls a storage type at byte %zu", m->f->path, m->pos);
    }
    return push(m, res);
}

/* NEWOBJ: cls.__new__(cls, *args); only OrderedDict. */
static lp_status op_newobj(machine *m) {
    val *args = NULL, *cls = NULL, *res = NULL;
    LP_TRY(pop(m, &args));
    LP_TRY(pop(m, &cls));
    if (cls->t != V_GLOBAL || cls->g.kind != G_ORDERED_DICT)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: data.pkl NEWOBJ at byte %zu builds something other than an OrderedDict",
                       m->f->path, m->pos);
    LP_TRY(push_new(m, V_DICT, &res));
    return LP_OK;
}

/* BUILD: state set on an OrderedDict (its _metadata) or a tensor is ignored. */
static lp_status op_build(machine *m) {
    val *state = NULL, *obj = NULL;
    LP_TRY(pop(m, &state));
    LP_TRY(top(m, &obj));
    if (obj->t != V_DICT && obj->t != V_TENSOR)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: data.pkl BUILD at byte %zu sets state on an unsupported object",
                       m->f->path, m->pos);
    return LP_OK;
}

/* The object a SETITEMS/APPENDS adds to: just below the popped mark, and
 * itself above the next mark. */
static int target_ok(const machine *m, size_t first) {
    size_t floor = m->nmarks ? m->marks[m->nmarks - 1] : 0;
    return first > floor;
}

static lp_status op_setitems(machine *m, size_t first) {
    if (!target_ok(m, first) || (m->sp - first) % 2)
        return lp_fail(LP_ERR_FORMAT, "%s: data.pkl SETITEMS at byte %zu lacks a target or has an odd item count",
                       m->f->path, m->pos);
    val *d = m->stack[first - 1];
    if (d->t != V_DICT)
        return lp_fail(LP_ERR_FORMAT, "%s: data.pkl SETITEM(S) at byte %zu targets a non-dict", m->f->path, m->pos);
    for (size_t i = first; i < m->sp; i++) LP_TRY(seq_append(m, d, m->stack[i]));
    m->sp = first;
    return LP_OK;
}

static lp_status op_appends(machine *m, size_t first) {
    if (!target_ok(m, first))
        return lp_fail(LP_ERR_FORMAT, "%s: data.pkl APPENDS at byte %zu has no target", m->f->path, m->pos);
    val *l = m->stack[first - 1];
    if (l->t != V_LIST)
        return lp_fail(LP_ERR_FORMAT, "%s: data.pkl APPEND(S) at byte %zu targets a non-list", m->f->path, m->pos);
    for (size_t i = first; i < m->sp; i++) LP_TRY(seq_append(m, l, m->stack[i]));
    m->sp = first;
    return LP_OK;
}

/* Runs the pickle to its STOP; *result is the saved object. */
static lp_status run(machine *m, val **result) {
    while (m->pos < m->len) {
        size_t at = m->pos;
        unsigned char op = m->p[m->pos++];
        uint64_t u = 0;
        size_t first = 0;
        val *v = NULL, *a = NULL, *b = NULL;
        switch (op) {
        case 0x80: /* PROTO */
            LP_TRY(take_uint(m, 1, &u));
            if (u < 2 || u > 5)
                return lp_fail(LP_ERR_UNSUPPORTED, "%s: data.pkl uses pickle protocol %llu (2-5 supported)", m->f->path,
                               (unsigned long long)u);
            break;
        case 0x95: LP_TRY(take_uint(m, 8, &u)); break; /* FRAME: a hint only */
        case '.': LP_TRY(pop(m, result)); return LP_OK;
        case '(':
            GROW(m, m->marks, m->marks_cap, m->nmarks + 1);
            m->marks[m->nmarks++] = m->sp;
            break;
        case '0': LP_TRY(pop(m, &v)); break;
        case '1':
            LP_TRY(pop_mark(m, &first));
            m->sp = first;
            break;
        case '2':
            LP_TRY(top(m, &v));
            LP_TRY(push(m, v));
            break;
        case 'N': LP_TRY(push(m, &m->none)); break;
        case 0x88:
            LP_TRY(push_new(m, V_BOOL, &v));
            v->i = 1;
            break;
        case 0x89:
            LP_TRY(push_new(m, V_BOOL, &v));
            v->i = 0;
            break;
        case 'J':
            LP_TRY(take_uint(m, 4, &u));
            LP_TRY(push_int(m, (int32_t)(uint32_t)u));
            break;
        case 'K':
            LP_TRY(take_uint(m, 1, &u));
            LP_TRY(push_int(m, (int64_t)u));
            break;
        case 'M':
            LP_TRY(take_uint(m, 2, &u));
            LP_TRY(push_int(m, (int64_t)u));
            break;
        case 0x8a: LP_TRY(op_long(m, 1)); break;
        case 0x8b: LP_TRY(op_long(m, 4)); break;
        case 'G': { /* BINFLOAT: big-endian double */
            const unsigned char *p = NULL;
            LP_TRY(take(m, 8, &p));
            uint64_t bits = 0;
            for (int i = 0; i < 8; i++) bits = bits << 8 | p[i];
            LP_TRY(push_new(m, V_FLOAT, &v));
            memcpy(&v->d, &bits, 8);
            break;
        }
        case 0x8c: LP_TRY(op_string(m, 1, V_STR)); break; /* SHORT_BINUNICODE */
        case 'X': LP_TRY(op_string(m, 4, V_STR)); break;  /* BINUNICODE */
        case 0x8d: LP_TRY(op_string(m, 8, V_STR)); break; /* BINUNICODE8 */
        case 'U': LP_TRY(op_string(m, 1, V_STR)); break;  /* SHORT_BINSTRING */
        case 'T': LP_TRY(op_string(m, 4, V_STR)); break;  /* BINSTRING */
        case 'C': LP_TRY(op_string(m, 1, V_BYTES)); break;
        case 'B': LP_TRY(op_string(m, 4, V_BYTES)); break;
        case 0x8e: LP_TRY(op_string(m, 8, V_BYTES)); break;
        case ')': LP_TRY(push_new(m, V_TUPLE, &v)); break;
        case 't':
            LP_TRY(pop_mark(m, &first));
            LP_TRY(make_tuple(m, first));
            break;
        case 0x85:
        case 0x86:
        case 0x87: { /* TUPLE1-3 */
            size_t n = (size_t)(op - 0x84);
            size_t floor = m->nmarks ? m->marks[m->nmarks - 1] : 0;
            if (m->sp - floor < n)
                return lp_fail(LP_ERR_FORMAT, "%s: data.pkl TUPLE%zu at byte %zu lacks items", m->f->path, n, at);
            LP_TRY(make_tuple(m, m->sp - n));
            break;
        }
        case ']': LP_TRY(push_new(m, V_LIST, &v)); break;
        case 'l':
        case 'd': /* LIST, DICT from the items above the mark */
            LP_TRY(pop_mark(m, &first));
            if (op == 'd' && (m->sp - first) % 2)
                return lp_fail(LP_ERR_FORMAT, "%s: data.pkl DICT at byte %zu has an odd item count", m->f->path, at);
            LP_TRY(new_val(m, op == 'l' ? V_LIST : V_DICT, &v));
            for (size_t i = first; i < m->sp; i++) LP_TRY(seq_append(m, v, m->stack[i]));
            m->sp = first;
            LP_TRY(push(m, v));
            break;
        case 'a':
            LP_TRY(pop(m, &v));
            LP_TRY(top(m, &a));
            if (a->t != V_LIST)
                return lp_fail(LP_ERR_FORMAT, "%s: data.pkl APPEND at byte %zu targets a non-list", m->f->path, at);
            LP_TRY(seq_append(m, a, v));
            break;
        case 'e':
            LP_TRY(pop_mark(m, &first));
            LP_TRY(op_appends(m, first));
            break;
        case '}': LP_TRY(push_new(m, V_DICT, &v)); break;
        case 's':
            LP_TRY(pop(m, &b));
            LP_TRY(pop(m, &a));
            LP_TRY(top(m, &v));
            if (v->t != V_DICT)
                return lp_fail(LP_ERR_FORMAT, "%s: data.pkl SETITEM at byte %zu targets a non-dict", m->f->path, at);
            LP_TRY(seq_append(m, v, a));
            LP_TRY(seq_append(m, v, b));
            break;
        case 'u':
            LP_TRY(pop_mark(m, &first));
            LP_TRY(op_setitems(m, first));
            break;
        case 'q':
            LP_TRY(take_uint(m, 1, &u));
            LP_TRY(memo_put(m, u));
            break;
        case 'r':
            LP_TRY(take_uint(m, 4, &u));
            LP_TRY(memo_put(m, u));
            break;
        case 0x94: LP_TRY(memo_put(m, m->nmemo)); break; /* MEMOIZE */
        case 'h':
            LP_TRY(take_uint(m, 1, &u));
            LP_TRY(memo_get(m, u));
            break;
        case 'j':
            LP_TRY(take_uint(m, 4, &u));
            LP_TRY(memo_get(m, u));
            break;
        case 'c': LP_TRY(op_global(m)); break;
        case 0x93: LP_TRY(op_stack_global(m)); break;
        case 'R': LP_TRY(op_reduce(m)); break;
        case 0x81: LP_TRY(op_newobj(m)); break;
        case 'b': LP_TRY(op_build(m)); break;
        case 'Q': LP_TRY(op_persid(m)); break;
        default:
            return lp_fail(LP_ERR_UNSUPPORTED,
                           "%s: data.pkl uses pickle opcode 0x%02x ('%c') at byte %zu, which a "
                           "state_dict does not need",
                           m->f->path, op, op >= 32 && op < 127 ? op : '?', at);
        }
    }
    return lp_fail(LP_ERR_FORMAT, "%s: data.pkl ends without STOP (truncated?)", m->f->path);
}

/* ---- flattening into tensors and metadata ---- */

/* Copies a strided (or misaligned) view into a contiguous f-owned block. */
static lp_status materialise(machine *m, const tensor_info *ti, size_t nbytes, const void **out) {
    if (nbytes > m->owned_budget - m->owned)
        return lp_fail(LP_ERR_FORMAT, "%s: strided tensors need more than %zu bytes of copies (hostile file?)",
                       m->f->path, m->owned_budget);
    unsigned char *dst = lp_tf_alloc(m->f, nbytes);
    if (!dst) return lp_fail(LP_ERR_NOMEM, "%s: out of memory copying a strided tensor", m->f->path);
    m->owned += nbytes;
    size_t es = lp_dtype_size(ti->dtype);
    if (ti->contiguous) {
        memcpy(dst, ti->data, nbytes);
        *out = dst;
        return LP_OK;
    }
    int64_t idx[LP_MAX_DIMS] = {0};
    int nd = ti->ndim, last = nd - 1;
    size_t row = (size_t)ti->size[last], done = 0, total = nbytes / es;
    while (done < total) {
        size_t base = 0;
        for (int i = 0; i < last; i++) base += (size_t)idx[i] * (size_t)ti->stride[i];
        for (size_t j = 0; j < row; j++)
            memcpy(dst + (done + j) * es, ti->data + (base + j * (size_t)ti->stride[last]) * es, es);
        done += row;
        for (int i = last - 1; i >= 0; i--) {
            if (++idx[i] < ti->size[i]) break;
            idx[i] = 0;
        }
    }
    *out = dst;
    return LP_OK;
}

static lp_status emit_tensor(machine *m, const tensor_info *ti, const char *name, size_t nlen) {
    lp_tensor t = {.dtype = ti->dtype, .ndim = ti->ndim};
    size_t numel = 1;
    for (int i = 0; i < ti->ndim; i++) {
        t.shape[i] = ti->size[i];
        numel *= (size_t)ti->size[i];
    }
    t.nbytes = numel * lp_dtype_size(ti->dtype);
    t.data = ti->data;
    if (numel > 0 && (!ti->contiguous || (uintptr_t)ti->data % lp_dtype_size(ti->dtype)))
        LP_TRY(materialise(m, ti, t.nbytes, &t.data));
    t.name = lp_tf_strdup(m->f, name, nlen);
    if (!t.name) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", m->f->path);
    return lp_tf_add(m->f, &t);
}

static lp_status emit_meta(machine *m, const val *v, const char *name, size_t nlen) {
    char buf[64];
    const char *s = buf;
    size_t n;
    switch (v->t) {
    case V_NONE:
        s = "null";
        n = 4;
        break;
    case V_BOOL:
        s = v->i ? "true" : "false";
        n = strlen(s);
        break;
    case V_INT: n = (size_t)snprintf(buf, sizeof buf, "%lld", (long long)v->i); break;
    case V_FLOAT: n = (size_t)snprintf(buf, sizeof buf, "%.17g", v->d); break;
    case V_STR:
        s = v->str.s;
        n = v->str.n;
        break;
    default: return LP_OK; /* bytes, storages, globals: nothing to name */
    }
    if (n > m->name_budget - m->name_bytes)
        return lp_fail(LP_ERR_FORMAT, "%s: data.pkl holds too much text (hostile file?)", m->f->path);
    m->name_bytes += n;
    return lp_tf_add_meta(m->f, name, nlen, s, n);
}

/* Appends ".<component>" (or just the component at the root) to name. */
static lp_status name_push(machine *m, char *name, size_t *nlen, const char *c, size_t cl) {
    size_t add = cl + (*nlen ? 1 : 0);
    if (*nlen + add > MAX_NAME)
        return lp_fail(LP_ERR_FORMAT, "%s: a tensor name in data.pkl is longer than %d bytes", m->f->path, MAX_NAME);
    if (memchr(c, 0, cl)) return lp_fail(LP_ERR_FORMAT, "%s: a key in data.pkl contains a NUL byte", m->f->path);
    if (*nlen) name[(*nlen)++] = '.';
    memcpy(name + *nlen, c, cl);
    *nlen += cl;
    name[*nlen] = 0;
    return LP_OK;
}

static lp_status walk(machine *m, const val *v, char *name, size_t nlen, int depth) {
    if (depth > MAX_NEST)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: data.pkl nests deeper than %d levels (or is cyclic)", m->f->path,
                       MAX_NEST);
    if (m->walk_budget-- == 0)
        return lp_fail(LP_ERR_FORMAT, "%s: data.pkl shares sub-objects too often (hostile file?)", m->f->path);
    if (v->t == V_TENSOR || (nlen && v->t != V_DICT && v->t != V_LIST && v->t != V_TUPLE)) {
        if (nlen + 1 > m->name_budget - m->name_bytes)
            return lp_fail(LP_ERR_FORMAT, "%s: data.pkl names add up to too many bytes (hostile file?)", m->f->path);
        m->name_bytes += nlen + 1;
        if (v->t == V_TENSOR) {
            if (!nlen) return emit_tensor(m, v->tn, m->prefix, strlen(m->prefix));
            return emit_tensor(m, v->tn, name, nlen);
        }
        return emit_meta(m, v, name, nlen);
    }
    if (v->t != V_DICT && v->t != V_LIST && v->t != V_TUPLE) return LP_OK;
    int dict = v->t == V_DICT;
    size_t step = dict ? 2 : 1;
    for (size_t i = 0; i + step <= v->seq.n; i += step) {
        char num[32];
        const char *c = num;
        size_t cl;
        const val *k = dict ? v->seq.items[i] : NULL;
        if (!dict) {
            cl = (size_t)snprintf(num, sizeof num, "%zu", i);
        } else if (k->t == V_STR) {
            c = k->str.s;
            cl = k->str.n;
        } else if (k->t == V_INT) {
            cl = (size_t)snprintf(num, sizeof num, "%lld", (long long)k->i);
        } else {
            return lp_fail(LP_ERR_UNSUPPORTED, "%s: data.pkl has a dict key that is neither a string nor an integer",
                           m->f->path);
        }
        size_t nl = nlen;
        LP_TRY(name_push(m, name, &nl, c, cl));
        LP_TRY(walk(m, v->seq.items[i + step - 1], name, nl, depth + 1));
        name[nlen] = 0;
    }
    return LP_OK;
}

/* ---- the archive ---- */

/* The one member named <prefix>/data.pkl, with a prefix free of '/'. */
static lp_status find_pickle(lp_tensor_file *f, const lp_zip *z, const lp_zip_entry **pkl, size_t *plen) {
    *pkl = NULL;
    for (size_t i = 0; i < lp_zip_count(z); i++) {
        const lp_zip_entry *e = lp_zip_entry_at(z, i);
        size_t n = strlen(e->name);
        if (n < 10 || strcmp(e->name + n - 9, "/data.pkl") || memchr(e->name, '/', n - 9)) continue;
        if (*pkl)
            return lp_fail(LP_ERR_FORMAT, "%s: holds two pickles ('%s' and '%s')", f->path, (*pkl)->name, e->name);
        *pkl = e;
        *plen = n - 9;
    }
    if (!*pkl)
        return lp_fail(LP_ERR_FORMAT, "%s: a zip archive without <name>/data.pkl: not a PyTorch checkpoint", f->path);
    return LP_OK;
}

static lp_status check_byteorder(lp_tensor_file *f, const lp_zip *z, const char *prefix) {
    char member[MAX_NAME];
    snprintf(member, sizeof member, "%s/byteorder", prefix);
    const lp_zip_entry *e = lp_zip_find(z, member);
    if (!e) return LP_OK; /* older files: little-endian */
    const unsigned char *d;
    void *heap;
    LP_TRY(lp_zip_read(z, e, 16, 1, &d, &heap));
    int little = e->size == 6 && !memcmp(d, "little", 6);
    free(heap);
    if (!little)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: '%s' is not 'little': big-endian checkpoints are not supported",
                       f->path, member);
    return LP_OK;
}

static size_t sat_add(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }
static size_t sat_mul(size_t a, size_t b) { return b && a > SIZE_MAX / b ? SIZE_MAX : a * b; }

lp_status lp_torch_zip_parse(lp_tensor_file *f) {
    lp_zip *z;
    LP_TRY(lp_zip_open(f->map, f->map_len, f->path, &z));
    const lp_zip_entry *pkl;
    size_t plen = 0;
    const unsigned char *p = NULL;
    void *heap = NULL;
    char *name = NULL;
    machine m = {.f = f, .zip = z};
    lp_status s = find_pickle(f, z, &pkl, &plen);
    if (s == LP_OK) {
        m.prefix = lp_tf_strdup(f, pkl->name, plen);
        s = m.prefix ? check_byteorder(f, z, m.prefix) : lp_fail(LP_ERR_NOMEM, "%s: out of memory", f->path);
    }
    if (s == LP_OK) s = lp_zip_read(z, pkl, MAX_PICKLE_BYTES, 1, &p, &heap);
    if (s == LP_OK) {
        m.p = p;
        m.len = (size_t)pkl->size;
        m.mem_budget = sat_add(BUDGET_BASE, sat_mul(32, m.len));
        m.owned_budget = sat_add(BUDGET_BASE, sat_mul(4, f->map_len));
        m.walk_budget = sat_add(1024, sat_mul(2, m.len));
        m.name_budget = sat_add((size_t)1 << 20, sat_mul(16, m.len));
        m.none.t = V_NONE;
        val *root;
        s = run(&m, &root);
        name = malloc(MAX_NAME + 1);
        if (s == LP_OK && !name) s = lp_fail(LP_ERR_NOMEM, "%s: out of memory", f->path);
        if (s == LP_OK) {
            name[0] = 0;
            s = walk(&m, root, name, 0, 0);
        }
    }
    free(name);
    free_machine(&m);
    free(heap);
    lp_zip_close(z);
    return s;
}
