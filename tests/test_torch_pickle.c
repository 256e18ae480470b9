/* PyTorch zip checkpoint reader (src/io/torch_pickle.c, src/io/zip.c):
 * - the published-layout golden .pt/.pth files give exactly the tensors of
 *   their safetensors twins (bytewise for fp32, by value for bf16);
 * - the real CUDA-saved latents match bytes located independently here;
 * - synthetic archives written by this test cover strided views, shared
 *   storages, nested names, deflate (stored, fixed and dynamic Huffman blocks)
 *   and pickle opcodes a state_dict may use;
 * - hostile files (code-running globals, lying sizes, zip bombs, out-of-range
 *   or overflowing views, huge headers, truncation) are refused with a message
 *   naming the culprit, without crashing or allocating much. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../src/base/half.h"
#include "../src/io/tensor_file.h"
#include "../src/io/zip.h"
#include "test_util.h"

/* ---- a growable byte buffer ---- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n) nc *= 2;
        unsigned char *np = realloc(b->p, nc);
        if (!np) abort();
        b->p = np;
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put1(buf *b, int v) {
    unsigned char c = (unsigned char)v;
    put(b, &c, 1);
}
static void put_le(buf *b, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) put1(b, (int)(v >> (8 * i) & 0xff));
}
static void put_str(buf *b, const char *s) { put(b, s, strlen(s)); }

/* ---- pickle writer (the opcodes PyTorch's pickler emits) ---- */

static void pk_str(buf *b, const char *s) {
    put1(b, 'X');
    put_le(b, strlen(s), 4);
    put_str(b, s);
}
static void pk_int(buf *b, int64_t v) {
    if (v >= 0 && v < 256) {
        put1(b, 'K');
        put1(b, (int)v);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        put1(b, 'J');
        put_le(b, (uint64_t)v, 4);
    } else {
        put1(b, 0x8a); /* LONG1 */
        put1(b, 8);
        put_le(b, (uint64_t)v, 8);
    }
}
static void pk_global(buf *b, const char *mod, const char *name) {
    put1(b, 'c');
    put_str(b, mod);
    put1(b, '\n');
    put_str(b, name);
    put1(b, '\n');
}
static void pk_ints(buf *b, int n, const int64_t *v) {
    put1(b, '(');
    for (int i = 0; i < n; i++) pk_int(b, v[i]);
    put1(b, 't');
}
/* _rebuild_tensor_v2(persistent_load(('storage', torch.<stype>, key, 'cpu', numel)),
 *                    off, size, stride, False, OrderedDict()) */
static void pk_tensor(buf *b, const char *stype, const char *key, int64_t numel, int64_t off, int nd,
                      const int64_t *size, const int64_t *stride) {
    pk_global(b, "torch._utils", "_rebuild_tensor_v2");
    put1(b, '(');
    put1(b, '(');
    pk_str(b, "storage");
    pk_global(b, "torch", stype);
    pk_str(b, key);
    pk_str(b, "cpu");
    pk_int(b, numel);
    put1(b, 't');
    put1(b, 'Q');
    pk_int(b, off);
    pk_ints(b, nd, size);
    pk_ints(b, nd, stride);
    put1(b, 0x89);
    pk_global(b, "collections", "OrderedDict");
    put1(b, ')');
    put1(b, 'R');
    put1(b, 't');
    put1(b, 'R');
}
static void pk_begin(buf *b) {
    put1(b, 0x80);
    put1(b, 2);
}
static void pk_end(buf *b) { put1(b, '.'); }

/* ---- zip writer ---- */

typedef struct {
    const char *name;
    const void *data; /* bytes as stored in the archive (raw deflate if method 8) */
    size_t len;
    int method;
    uint64_t size; /* uncompressed size (declared) */
    uint32_t crc;
    int64_t lie_comp;  /* if nonzero: the directory declares this compressed size instead */
    int64_t lie_local; /* if nonzero: the local header declares this size instead */
} zmember;

static zmember stored(const char *name, const void *data, size_t len) {
    return (zmember){name, data, len, 0, len, lp_crc32(0, data, len), 0, 0};
}

/* Like PyTorch, pads each local header with an extra field so that member
 * data starts on a 64-byte boundary (unless zip_align is 0). */
static int zip_align = 1;
/* If set, sizes and offsets go to ZIP64 extra fields and a ZIP64 end of
 * central directory, as PyTorch writes archives over 4 GiB. */
static int zip_zip64 = 0;

static void zip_build(buf *z, const zmember *m, int n) {
    uint64_t *offs = calloc((size_t)n, sizeof *offs);
    for (int i = 0; i < n; i++) {
        offs[i] = z->n;
        size_t pad = zip_align ? (64 - (z->n + 30 + strlen(m[i].name) + 4) % 64) % 64 : 0;
        put_le(z, 0x04034b50u, 4);
        put_le(z, 20, 2);
        put_le(z, 0, 2);
        put_le(z, (uint64_t)m[i].method, 2);
        put_le(z, 0, 4);
        put_le(z, m[i].crc, 4);
        put_le(z, zip_zip64 ? 0xffffffffu : m[i].lie_local ? (uint64_t)m[i].lie_local : m[i].len, 4);
        put_le(z, zip_zip64 ? 0xffffffffu : m[i].lie_local ? (uint64_t)m[i].lie_local : m[i].size, 4);
        put_le(z, strlen(m[i].name), 2);
        put_le(z, zip_align ? 4 + pad : 0, 2);
        put_str(z, m[i].name);
        if (zip_align) {
            put_str(z, "FB");
            put_le(z, pad, 2);
            for (size_t k = 0; k < pad; k++) put1(z, 'Z');
        }
        put(z, m[i].data, m[i].len);
    }
    size_t cd = z->n;
    for (int i = 0; i < n; i++) {
        put_le(z, 0x02014b50u, 4);
        put_le(z, 20, 2);
        put_le(z, 20, 2);
        put_le(z, 0, 2);
        put_le(z, (uint64_t)m[i].method, 2);
        put_le(z, 0, 4);
        put_le(z, m[i].crc, 4);
        uint64_t comp = m[i].lie_comp ? (uint64_t)m[i].lie_comp : m[i].len;
        put_le(z, zip_zip64 ? 0xffffffffu : comp, 4);
        put_le(z, zip_zip64 ? 0xffffffffu : m[i].size, 4);
        put_le(z, strlen(m[i].name), 2);
        put_le(z, zip_zip64 ? 28 : 0, 2);
        put_le(z, 0, 2 * 3);
        put_le(z, 0, 4);
        put_le(z, zip_zip64 ? 0xffffffffu : offs[i], 4);
        put_str(z, m[i].name);
        if (zip_zip64) { /* extra field 1: size, compressed size, local header offset */
            put_le(z, 1, 2);
            put_le(z, 24, 2);
            put_le(z, m[i].size, 8);
            put_le(z, comp, 8);
            put_le(z, offs[i], 8);
        }
    }
    size_t cd_size = z->n - cd;
    if (zip_zip64) {
        size_t rec = z->n;
        put_le(z, 0x06064b50u, 4);
        put_le(z, 44, 8);
        put_le(z, 45, 2);
        put_le(z, 45, 2);
        put_le(z, 0, 8);
        put_le(z, (uint64_t)n, 8);
        put_le(z, (uint64_t)n, 8);
        put_le(z, cd_size, 8);
        put_le(z, cd, 8);
        put_le(z, 0x07064b50u, 4); /* locator */
        put_le(z, 0, 4);
        put_le(z, rec, 8);
        put_le(z, 1, 4);
    }
    put_le(z, 0x06054b50u, 4);
    put_le(z, 0, 4);
    put_le(z, zip_zip64 ? 0xffff : (uint64_t)n, 2);
    put_le(z, zip_zip64 ? 0xffff : (uint64_t)n, 2);
    put_le(z, zip_zip64 ? 0xffffffffu : cd_size, 4);
    put_le(z, zip_zip64 ? 0xffffffffu : cd, 4);
    put_le(z, 0, 2);
    free(offs);
}

/* ---- a minimal deflate writer: fixed Huffman, literals and distance-1 runs ---- */

typedef struct {
    buf *b;
    uint32_t acc;
    int n;
} bitw;

static void bits(bitw *w, uint32_t v, int n) { /* LSB first */
    for (int i = 0; i < n; i++) {
        w->acc |= ((v >> i) & 1u) << w->n;
        if (++w->n == 8) {
            put1(w->b, (int)w->acc);
            w->acc = 0;
            w->n = 0;
        }
    }
}
static void huff(bitw *w, uint32_t code, int len) { /* Huffman codes go MSB first */
    for (int i = len - 1; i >= 0; i--) bits(w, (code >> i) & 1u, 1);
}
static void fixed_lit(bitw *w, int sym) {
    if (sym < 144)
        huff(w, 0x30u + (uint32_t)sym, 8);
    else if (sym < 256)
        huff(w, 0x190u + (uint32_t)(sym - 144), 9);
    else if (sym < 280)
        huff(w, (uint32_t)(sym - 256), 7);
    else
        huff(w, 0xc0u + (uint32_t)(sym - 280), 8);
}
/* A match of length 3..258 at distance 1. */
static void fixed_run(bitw *w, int len) {
    static const int base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const int extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                  2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    int c = 28;
    while (base[c] > len) c--;
    fixed_lit(w, 257 + c);
    bits(w, (uint32_t)(len - base[c]), extra[c]);
    huff(w, 0, 5); /* distance code 0 = distance 1 */
}
/* Raw deflate of data as one fixed-Huffman block. */
static void deflate_fixed(buf *out, const unsigned char *d, size_t n) {
    bitw w = {out, 0, 0};
    bits(&w, 1, 1);
    bits(&w, 1, 2);
    for (size_t i = 0; i < n;) {
        size_t run = 0;
        while (i > 0 && i + run < n && run < 258 && d[i + run] == d[i - 1]) run++;
        if (run >= 3) {
            fixed_run(&w, (int)run);
            i += run;
        } else {
            fixed_lit(&w, d[i++]);
        }
    }
    fixed_lit(&w, 256);
    if (w.n) bits(&w, 0, 8 - w.n);
}
/* Raw deflate of data as stored blocks of at most 1000 bytes. */
static void deflate_stored(buf *out, const unsigned char *d, size_t n) {
    size_t i = 0;
    do {
        size_t k = n - i < 1000 ? n - i : 1000;
        put1(out, i + k == n ? 1 : 0);
        put_le(out, k, 2);
        put_le(out, k ^ 0xffff, 2);
        put(out, d + i, k);
        i += k;
    } while (i < n);
}
static zmember deflated(const char *name, const buf *comp, const void *raw, size_t rawlen) {
    return (zmember){name, comp->p, comp->n, 8, rawlen, lp_crc32(0, raw, rawlen), 0, 0};
}

/* zlib (level 9, raw) output for dyn_text(): a dynamic-Huffman block. */
static const unsigned char dyn_deflate[] = {
    0x75, 0x57, 0xd1, 0x6e, 0xe4, 0x30, 0x08, 0x7c, 0xe7, 0x2b, 0xf2, 0x6b, 0xa8, 0xcd, 0xaa, 0xab, 0xde, 0x6e, 0x4e,
    0xbb, 0xee, 0x7d, 0xff, 0xd9, 0x06, 0xc3, 0x80, 0xa9, 0xd4, 0x26, 0x69, 0x82, 0x61, 0x0c, 0x33, 0xe0, 0x3e, 0xf8,
    0xfd, 0x4d, 0xd7, 0xed, 0xe8, 0x3f, 0x7f, 0x5f, 0x3f, 0xcf, 0xf3, 0x78, 0xb7, 0xd7, 0xc9, 0x8f, 0x83, 0x8f, 0x3f,
    0xdc, 0xce, 0x67, 0x3b, 0xb8, 0x8d, 0xdb, 0xfd, 0x7a, 0x1e, 0xb7, 0x17, 0x3f, 0x4e, 0xb1, 0xa2, 0x7f, 0xf7, 0xcf,
    0xf3, 0xd2, 0x37, 0xed, 0xeb, 0x04, 0x2b, 0x3e, 0xe4, 0x5b, 0x77, 0x28, 0x0f, 0x9f, 0xf7, 0xdb, 0xed, 0xe7, 0xdd,
    0x3f, 0x91, 0x3d, 0x69, 0xa8, 0x6e, 0xa2, 0xd1, 0xda, 0xf5, 0x7d, 0x3e, 0x8f, 0x0f, 0xfe, 0x18, 0xae, 0x96, 0xdb,
    0xf1, 0x8e, 0xf4, 0x9d, 0xb9, 0xdf, 0x50, 0xc9, 0x52, 0xb9, 0x7a, 0x80, 0x84, 0x7a, 0x73, 0x23, 0x00, 0xf0, 0x2a,
    0x41, 0xdd, 0xa2, 0x83, 0x63, 0xb2, 0x2c, 0xa0, 0xe5, 0xd8, 0xef, 0xf8, 0x15, 0x9f, 0x6b, 0x9f, 0xa4, 0x96, 0xf2,
    0xd6, 0xbf, 0x3b, 0x26, 0x7f, 0x27, 0x57, 0xd9, 0x3b, 0x09, 0x74, 0x71, 0xcd, 0x00, 0xe0, 0xd1, 0x2b, 0xb3, 0xf2,
    0x23, 0x99, 0x14, 0xcb, 0xeb, 0x46, 0x0b, 0x41, 0xdb, 0xfc, 0xe7, 0x1d, 0x42, 0x9d, 0x28, 0xef, 0x30, 0xae, 0x9e,
    0xe1, 0x04, 0xd8, 0x7c, 0x74, 0x3b, 0x2f, 0xe0, 0xaa, 0x56, 0xb7, 0xd1, 0xdd, 0x5a, 0xad, 0xdd, 0x91, 0x3f, 0x49,
    0x40, 0x09, 0x2e, 0xd8, 0x91, 0x36, 0x33, 0x4a, 0x5f, 0x39, 0xef, 0xcd, 0xf2, 0xb1, 0xd2, 0xc2, 0x2b, 0x25, 0x58,
    0x91, 0x65, 0x5e, 0xb3, 0x42, 0xab, 0x2c, 0xeb, 0x1c, 0x86, 0xbc, 0x4d, 0x64, 0xd4, 0xbf, 0xe1, 0x1b, 0x6d, 0xd4,
    0x0a, 0xe4, 0x8c, 0x79, 0xce, 0xde, 0x7b, 0x51, 0x62, 0x62, 0x77, 0x9e, 0x86, 0x55, 0x39, 0x49, 0x63, 0x57, 0xb3,
    0xac, 0x20, 0x32, 0x53, 0x82, 0xe2, 0x58, 0x9b, 0x67, 0x10, 0xd2, 0x52, 0x5b, 0x5b, 0x65, 0xcb, 0x1b, 0x54, 0x1f,
    0x54, 0x93, 0xbc, 0x59, 0x62, 0x38, 0xe9, 0x2e, 0x0b, 0x4c, 0x57, 0x82, 0xff, 0x0e, 0x07, 0xc1, 0x86, 0x12, 0x08,
    0x4e, 0xeb, 0x25, 0x58, 0x42, 0x71, 0xa7, 0x5f, 0xa4, 0x99, 0x70, 0xa6, 0x61, 0xb0, 0x19, 0x42, 0x54, 0x90, 0x1a,
    0x23, 0x45, 0x9e, 0x06, 0x2a, 0x4d, 0xc0, 0xda, 0xf7, 0x46, 0xc9, 0xaf, 0x78, 0x99, 0x8f, 0x5a, 0x1f, 0x28, 0x55,
    0x80, 0x54, 0x73, 0xa8, 0x52, 0xb4, 0xa6, 0x2f, 0x91, 0x86, 0xd0, 0x5b, 0x95, 0x34, 0xfd, 0x8e, 0x22, 0x57, 0xa1,
    0x78, 0xfa, 0x4a, 0xf4, 0x1e, 0xc9, 0x2a, 0x4f, 0x7b, 0x37, 0x0b, 0xcd, 0x48, 0x22, 0x22, 0xe1, 0x57, 0xde, 0x0b,
    0x91, 0x17, 0xad, 0x3c, 0x20, 0x9e, 0x0e, 0xb0, 0x13, 0x20, 0xb3, 0xc4, 0xde, 0x0b, 0x17, 0x77, 0x40, 0x73, 0x1b,
    0x8b, 0x49, 0x18, 0x87, 0xc1, 0xd3, 0xd8, 0x10, 0x36, 0xc8, 0x10, 0x60, 0x10, 0x28, 0x35, 0xd0, 0xc5, 0x8a, 0xdc,
    0xa2, 0xab, 0x1d, 0xe9, 0x8a, 0x4d, 0x24, 0x94, 0xb4, 0xb3, 0xd9, 0x01, 0x4f, 0x50, 0x7c, 0x92, 0x0c, 0xfd, 0x80,
    0x53, 0x34, 0x36, 0x75, 0x13, 0x76, 0x98, 0x9b, 0x0e, 0x35, 0xb3, 0x64, 0x2b, 0x81, 0xe0, 0x5b, 0xee, 0x34, 0x1e,
    0x48, 0x65, 0x69, 0x57, 0xf0, 0x80, 0x8e, 0x07, 0x22, 0x9b, 0x53, 0xbc, 0xf3, 0x21, 0xf4, 0x65, 0x07, 0xa4, 0x11,
    0xe2, 0xad, 0xe8, 0x5e, 0x84, 0xbb, 0x05, 0x75, 0xd9, 0x80, 0x5a, 0x18, 0xb4, 0x46, 0x55, 0xe7, 0xc9, 0xa2, 0x0a,
    0x6c, 0x73, 0x30, 0x94, 0x0f, 0x22, 0x59, 0x9c, 0x7e, 0x62, 0xd9, 0xfa, 0x8e, 0xc2, 0x44, 0xe1, 0x17, 0x83, 0xb5,
    0x12, 0x83, 0x08, 0x45, 0xf5, 0x28, 0x66, 0x40, 0x62, 0x5c, 0xad, 0xd7, 0x2f, 0x51, 0x70, 0x29, 0x5d, 0xec, 0x4e,
    0x5b, 0x6b, 0x9c, 0x02, 0xc1, 0x14, 0x96, 0xe7, 0x1a, 0xa7, 0x5a, 0x5a, 0xb9, 0xb8, 0x01, 0x79, 0xab, 0xba, 0x95,
    0xad, 0xa7, 0x30, 0x6d, 0x15, 0x60, 0xee, 0x30, 0xe5, 0x28, 0x87, 0xea, 0xb3, 0x0d, 0xf1, 0x3c, 0xab, 0xcb, 0xa8,
    0xd8, 0x5a, 0xb1, 0xa1, 0x22, 0x5f, 0x57, 0x2d, 0xb1, 0x65, 0x92, 0x9d, 0x49, 0x37, 0x25, 0x8b, 0xb9, 0x15, 0x3e,
    0x25, 0x05, 0x51, 0x6f, 0x92, 0x46, 0x91, 0x85, 0x4e, 0xc3, 0x96, 0x4c, 0x9f, 0xad, 0x4b, 0x66, 0x39, 0x43, 0x71,
    0xee, 0x4f, 0xa3, 0xd0, 0x7a, 0x19, 0xce, 0xc8, 0x46, 0xf9, 0xc9, 0x10, 0xed, 0x64, 0xe1, 0x7c, 0x89, 0x90, 0x32,
    0x07, 0xd9, 0x3b, 0xa0, 0x3d, 0x54, 0x72, 0xf2, 0xea, 0xec, 0x27, 0xc4, 0xdc, 0x9e, 0x31, 0x8a, 0x8c, 0x7d, 0xec,
    0x4f, 0x79, 0x28, 0x0b, 0xe8, 0xb4, 0x42, 0x5b, 0x4e, 0x10, 0x7b, 0x69, 0xb2, 0x1d, 0xc0, 0xec, 0x9c, 0xf7, 0xeb,
    0xff, 0x0f, 0x35, 0xe9, 0x42, 0xc6, 0x30, 0x1b, 0xd5, 0xd8, 0xf1, 0x13, 0xc3, 0x46, 0x1d, 0x9c, 0x39, 0xc5, 0xb1,
    0x7c, 0xe7, 0x8b, 0x15, 0xd1, 0x1c, 0xc0, 0xd9, 0x0d, 0xe7, 0xb9, 0xbc, 0xae, 0xa4, 0x6a, 0x9d, 0xb0, 0x93, 0x2c,
    0x27, 0x99, 0x8b, 0xc9, 0x58, 0x1d, 0x18, 0xa5, 0x50, 0x38, 0x03, 0x2c, 0x15, 0x1e, 0x72, 0x93, 0x14, 0x99, 0x48,
    0x8b, 0x2e, 0xf8, 0x1f,
};

static size_t dyn_text(char *out) {
    static const char *words[13] = {"latent", "frame",     "token",     "mask", "prune", "cache", "video",
                                    "stream", "diffusion", "attention", "the",  "a",     "of"};
    uint64_t x = 1;
    size_t n = 0;
    for (int i = 0; i < 600; i++) {
        x = (x * 1103515245u + 12345u) % (1u << 31);
        const char *w = words[(x >> 16) % 13];
        memcpy(out + n, w, strlen(w));
        n += strlen(w);
        out[n++] = i % 9 ? ' ' : '\n';
    }
    return n;
}

/* ---- helpers ---- */

static const char *tmp_path(const char *name) {
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", lp_test_tmpdir(), name);
    return p;
}

static int write_file(const char *path, const void *d, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return 0;
    int ok = fwrite(d, 1, n, fp) == n;
    return fclose(fp) == 0 && ok;
}

/* Writes the archive to the temp dir and opens it. */
static lp_status open_zip(const char *name, const zmember *m, int n, lp_tensor_file **f) {
    buf z = {0};
    zip_build(&z, m, n);
    const char *path = tmp_path(name);
    lp_status s = write_file(path, z.p, z.n) ? lp_tensor_file_open(path, f) : LP_ERR_IO;
    free(z.p);
    return s;
}

/* An archive "arc" with the given pickle and storage members "arc/data/<i>". */
static lp_status open_pickle(const char *name, const buf *pkl, const void *const *st, const size_t *st_len, int nst,
                             lp_tensor_file **f) {
    zmember m[10];
    char names[8][32];
    m[0] = stored("arc/data.pkl", pkl->p, pkl->n);
    m[1] = stored("arc/byteorder", "little", 6);
    for (int i = 0; i < nst; i++) {
        snprintf(names[i], sizeof names[i], "arc/data/%d", i);
        m[2 + i] = stored(names[i], st[i], st_len[i]);
    }
    return open_zip(name, m, 2 + nst, f);
}

static long max_rss_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* The operation failed with a message that names the culprit. */
#define CHECK_REFUSED(status, culprit)                                                                                 \
    do {                                                                                                               \
        lp_status st_ = (status);                                                                                      \
        CHECK(st_ != LP_OK, "accepted a bad file (expected an error naming '%s')", culprit);                           \
        CHECK(strstr(lp_last_error(), culprit), "message '%s' does not name '%s'", lp_last_error(), culprit);          \
        printf("        refused: %s\n", lp_last_error());                                                              \
    } while (0)

/* ---- golden files ---- */

/* Every tensor of ref named <ref_prefix><x> equals the tensor <got_prefix><x> of got:
 * bytewise when the dtypes agree, else by value (bf16 in got, its exact f32 in ref). */
static int compare_files(const lp_tensor_file *got, const char *got_prefix, const lp_tensor_file *ref,
                         const char *ref_prefix, size_t *matched) {
    *matched = 0;
    size_t lp = strlen(ref_prefix);
    for (size_t i = 0; i < lp_tensor_file_count(ref); i++) {
        const lp_tensor *r = lp_tensor_file_at(ref, i);
        if (strncmp(r->name, ref_prefix, lp)) continue;
        char name[512];
        snprintf(name, sizeof name, "%s%s", got_prefix, r->name + lp);
        const lp_tensor *g = lp_tensor_file_find(got, name);
        CHECK(g, "'%s' is missing from %s", name, lp_tensor_file_path(got));
        CHECK(g->ndim == r->ndim, "'%s': %d dims vs %d", name, g->ndim, r->ndim);
        for (int d = 0; d < g->ndim; d++) CHECK(g->shape[d] == r->shape[d], "'%s': dim %d differs", name, d);
        if (g->dtype == r->dtype) {
            CHECK(g->nbytes == r->nbytes && !memcmp(g->data, r->data, g->nbytes), "'%s' differs bytewise", name);
        } else {
            int64_t n = lp_tensor_numel(g);
            float *a = malloc((size_t)n * 4 + 4), *b = malloc((size_t)n * 4 + 4);
            CHECK(a && b, "%s", lp_last_error());
            CHECK(lp_tensor_read_f32(g, 0, n, a) == LP_OK && lp_tensor_read_f32(r, 0, n, b) == LP_OK, "%s",
                  lp_last_error());
            int same = !memcmp(a, b, (size_t)n * 4);
            free(a);
            free(b);
            CHECK(same, "'%s' differs in value (%s vs %s)", name, lp_dtype_name(g->dtype), lp_dtype_name(r->dtype));
        }
        (*matched)++;
    }
    return 0;
}

static int test_sf_dit_pt(void) {
    const char *pp = lp_test_shared("golden/sf_dit_t2v.pt");
    if (!pp) return lp_test_skip_shared("golden/sf_dit_t2v.pt");
    char ptpath[4096];
    snprintf(ptpath, sizeof ptpath, "%s", pp);
    const char *sp = lp_test_shared("golden/sf_dit_t2v.safetensors");
    if (!sp) return lp_test_skip_shared("golden/sf_dit_t2v.safetensors");
    lp_tensor_file *pt, *sf;
    CHECK(lp_tensor_file_open(ptpath, &pt) == LP_OK, "%s", lp_last_error());
    CHECK(lp_tensor_file_open(sp, &sf) == LP_OK, "%s", lp_last_error());
    CHECK(lp_tensor_file_format(pt) == LP_FORMAT_TORCH_ZIP, "%s", lp_last_error());
    size_t matched = 0, nw = 0, ngen = 0, nema = 0;
    if (compare_files(pt, "generator_ema.model.", sf, "w.", &matched)) return 1;
    for (size_t i = 0; i < lp_tensor_file_count(sf); i++) nw += !strncmp(lp_tensor_file_at(sf, i)->name, "w.", 2);
    for (size_t i = 0; i < lp_tensor_file_count(pt); i++) {
        const lp_tensor *t = lp_tensor_file_at(pt, i);
        if (!strncmp(t->name, "generator_ema.model.", 20)) {
            nema++;
        } else {
            CHECK(!strncmp(t->name, "generator.model.", 16), "unexpected tensor '%s'", t->name);
            ngen++;
            const unsigned char *d = t->data;
            for (size_t k = 0; k < t->nbytes; k++) CHECK(d[k] == 0, "'%s' is not all zeros", t->name);
            char twin[512];
            snprintf(twin, sizeof twin, "generator_ema.%s", t->name + 10);
            CHECK(lp_tensor_file_find(pt, twin), "'%s' has no generator_ema twin", t->name);
        }
    }
    printf("        %zu generator_ema tensors equal bytewise, %zu generator tensors all zero\n", matched, ngen);
    CHECK(matched == nw && nema == nw && ngen == nw, "%zu matched, %zu w.*, %zu ema, %zu generator", matched, nw, nema,
          ngen);
    lp_tensor_file_close(pt);
    lp_tensor_file_close(sf);
    return 0;
}

static int test_pair(const char *pth, const char *sft, int want_dtype) {
    const char *pp = lp_test_shared(pth);
    if (!pp) return lp_test_skip_shared(pth);
    char ppath[4096];
    snprintf(ppath, sizeof ppath, "%s", pp);
    const char *sp = lp_test_shared(sft);
    if (!sp) return lp_test_skip_shared(sft);
    lp_tensor_file *a, *b;
    CHECK(lp_tensor_file_open(ppath, &a) == LP_OK, "%s", lp_last_error());
    CHECK(lp_tensor_file_open(sp, &b) == LP_OK, "%s", lp_last_error());
    size_t matched = 0, nw = 0;
    if (compare_files(a, "", b, "w.", &matched)) return 1;
    for (size_t i = 0; i < lp_tensor_file_count(b); i++) nw += !strncmp(lp_tensor_file_at(b, i)->name, "w.", 2);
    for (size_t i = 0; i < lp_tensor_file_count(a); i++)
        CHECK((int)lp_tensor_file_at(a, i)->dtype == want_dtype, "'%s' is %s", lp_tensor_file_at(a, i)->name,
              lp_dtype_name(lp_tensor_file_at(a, i)->dtype));
    printf("        %zu tensors equal, %zu in the .pth, %zu w.* in the safetensors\n", matched, lp_tensor_file_count(a),
           nw);
    CHECK(matched == nw && lp_tensor_file_count(a) == nw, "%s", lp_last_error());
    lp_tensor_file_close(a);
    lp_tensor_file_close(b);
    return 0;
}

static int test_wan_vae_pth(void) { return test_pair("golden/wan_vae.pth", "golden/wan_vae.safetensors", LP_F32); }
static int test_umt5_pth(void) {
    return test_pair("golden/umt5_tiny_bf16.pth", "golden/umt5_tiny.safetensors", LP_BF16);
}

/* Reads the whole file. */
static unsigned char *slurp(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *d = malloc((size_t)len + 1);
    if (d && fread(d, 1, (size_t)len, fp) != (size_t)len) {
        free(d);
        d = NULL;
    }
    fclose(fp);
    *n = (size_t)len;
    return d;
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int test_latents(void) {
    const char *path = lp_test_shared("data/test_latents_wan.pth");
    if (!path) return lp_test_skip_shared("data/test_latents_wan.pth");
    lp_tensor_file *f;
    CHECK(lp_tensor_file_open(path, &f) == LP_OK, "%s", lp_last_error());
    CHECK(lp_tensor_file_count(f) == 1, "%s", lp_last_error());
    const lp_tensor *t = lp_tensor_file_at(f, 0);
    const int64_t want[5] = {1, 16, 16, 40, 64};
    CHECK(t->dtype == LP_BF16 && lp_tensor_expect(t, "latents", 5, want) == LP_OK, "%s", lp_last_error());
    /* Find the storage member through the central directory, independently of zip.c
     * (this file's local headers use data descriptors, so they carry no sizes). */
    size_t n;
    unsigned char *raw = slurp(path, &n);
    CHECK(raw, "cannot read %s", path);
    size_t eocd = n - 22;
    while (eocd > 0 && le32(raw + eocd) != 0x06054b50u) eocd--;
    const unsigned char *member = NULL;
    size_t msize = 0, cd = le32(raw + eocd + 16), count = raw[eocd + 10] | raw[eocd + 11] << 8;
    for (size_t i = 0; i < count && cd + 46 <= n && le32(raw + cd) == 0x02014b50u; i++) {
        size_t nl = raw[cd + 28] | raw[cd + 29] << 8, xl = raw[cd + 30] | raw[cd + 31] << 8,
               cl = raw[cd + 32] | raw[cd + 33] << 8;
        if (nl >= 7 && !memcmp(raw + cd + 46 + nl - 7, "/data/0", 7)) {
            size_t local = le32(raw + cd + 42);
            member =
                raw + local + 30 + (raw[local + 26] | raw[local + 27] << 8) + (raw[local + 28] | raw[local + 29] << 8);
            msize = le32(raw + cd + 24);
        }
        cd += 46 + nl + xl + cl;
    }
    CHECK(member && msize == t->nbytes, "storage member not found (%zu bytes)", msize);
    CHECK(!memcmp(member, t->data, t->nbytes), "tensor bytes differ from the storage member");
    const int64_t at[4][5] = {{0, 0, 0, 0, 0}, {0, 15, 15, 39, 63}, {0, 3, 7, 20, 31}, {0, 9, 2, 33, 5}};
    for (int k = 0; k < 4; k++) {
        int64_t idx = (((at[k][1] * 16 + at[k][2]) * 40 + at[k][3]) * 64) + at[k][4];
        uint32_t bits = (uint32_t)(member[2 * idx] | member[2 * idx + 1] << 8) << 16;
        float expect, got;
        memcpy(&expect, &bits, 4);
        CHECK(lp_tensor_read_f32(t, idx, 1, &got) == LP_OK, "%s", lp_last_error());
        CHECK(got == expect, "element %lld: %g vs %g", (long long)idx, got, expect);
        if (k == 2) printf("        latents[0,3,7,20,31] = %g\n", got);
    }
    free(raw);
    lp_tensor_file_close(f);
    return 0;
}

/* ---- synthetic archives ---- */

/* Strided views of random layouts against a naive gather. */
static int test_strided_random(void) {
    for (uint32_t seed = 1; seed <= 40; seed++) {
        uint32_t r = seed * 2654435761u;
#define RND(n) ((r = r * 1664525u + 1013904223u), (int64_t)((r >> 8) % (uint32_t)(n)))
        int nd = 1 + (int)RND(4);
        int64_t base[4], cs[4], perm[4] = {0, 1, 2, 3}, start[4], size[4], stride[4], off = 0, numel = 1;
        for (int i = 0; i < nd; i++) base[i] = 1 + RND(5);
        for (int i = nd - 1; i >= 0; i--) {
            cs[i] = numel;
            numel *= base[i];
        }
        for (int i = nd - 1; i > 0; i--) {
            int j = (int)RND(i + 1);
            int64_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        for (int i = 0; i < nd; i++) {
            start[i] = RND(base[i]);
            off += start[i] * cs[i];
        }
        for (int i = 0; i < nd; i++) {
            size[i] = base[perm[i]] - start[perm[i]];
            stride[i] = cs[perm[i]];
        }
#undef RND
        float *st = malloc((size_t)numel * 4);
        CHECK(st, "%s", lp_last_error());
        lp_test_fill(st, (size_t)numel, seed, 1.0f);
        buf p = {0};
        pk_begin(&p);
        put1(&p, '}');
        pk_str(&p, "t");
        pk_tensor(&p, "FloatStorage", "0", numel, off, nd, size, stride);
        put1(&p, 's');
        pk_end(&p);
        const void *sd[1] = {st};
        size_t sl[1] = {(size_t)numel * 4};
        lp_tensor_file *f;
        CHECK(open_pickle("strided.pt", &p, sd, sl, 1, &f) == LP_OK, "%s", lp_last_error());
        const lp_tensor *t = lp_tensor_file_find(f, "t");
        CHECK(t && t->ndim == nd, "%s", lp_last_error());
        int64_t idx[4] = {0}, n = lp_tensor_numel(t);
        const float *got = t->data;
        for (int64_t k = 0; k < n; k++) {
            int64_t src = off;
            for (int i = 0; i < nd; i++) src += idx[i] * stride[i];
            CHECK(got[k] == st[src], "seed %u element %lld", seed, (long long)k);
            for (int i = nd - 1; i >= 0; i--) {
                if (++idx[i] < size[i]) break;
                idx[i] = 0;
            }
        }
        lp_tensor_file_close(f);
        free(st);
        free(p.p);
    }
    return 0;
}

/* Shared storages, zero-copy views, nested names, scalar metadata. */
static int test_names_and_sharing(void) {
    float st0[6] = {0, 1, 2, 3, 4, 5};
    int64_t st1[2] = {-7, 1LL << 40};
    buf p = {0};
    pk_begin(&p);
    put1(&p, '}');
    put1(&p, '(');
    pk_str(&p, "a");
    pk_tensor(&p, "FloatStorage", "0", 6, 0, 1, (int64_t[]){6}, (int64_t[]){1});
    pk_str(&p, "n");
    put1(&p, '}');
    put1(&p, '(');
    pk_str(&p, "b");
    pk_tensor(&p, "FloatStorage", "0", 6, 2, 2, (int64_t[]){2, 2}, (int64_t[]){2, 1});
    pk_int(&p, 7);
    pk_tensor(&p, "FloatStorage", "0", 6, 0, 2, (int64_t[]){3, 1}, (int64_t[]){1, 99}); /* size-1 dim: contiguous */
    pk_str(&p, "l");
    put1(&p, ']');
    put1(&p, '(');
    pk_tensor(&p, "LongStorage", "1", 2, 0, 1, (int64_t[]){2}, (int64_t[]){1});
    pk_int(&p, 5);
    put1(&p, 'e');
    put1(&p, 'u');
    pk_str(&p, "step");
    pk_int(&p, 1000000);
    pk_str(&p, "lr");
    put1(&p, 'G');
    const unsigned char half[8] = {0x3f, 0xe0, 0, 0, 0, 0, 0, 0}; /* 0.5, big-endian */
    put(&p, half, 8);
    pk_str(&p, "ok");
    put1(&p, 0x88);
    pk_str(&p, "none");
    put1(&p, 'N');
    put1(&p, 'u');
    pk_end(&p);
    const void *sd[2] = {st0, st1};
    size_t sl[2] = {sizeof st0, sizeof st1};
    lp_tensor_file *f;
    CHECK(open_pickle("names.pt", &p, sd, sl, 2, &f) == LP_OK, "%s", lp_last_error());
    free(p.p);
    CHECK(lp_tensor_file_count(f) == 4, "%zu tensors", lp_tensor_file_count(f));
    const lp_tensor *a = lp_tensor_file_find(f, "a"), *b = lp_tensor_file_find(f, "n.b"),
                    *c = lp_tensor_file_find(f, "n.7"), *l = lp_tensor_file_find(f, "n.l.0");
    CHECK(a && b && c && l, "names: a %p n.b %p n.7 %p n.l.0 %p", (void *)a, (void *)b, (void *)c, (void *)l);
    CHECK(b->data == (const float *)a->data + 2, "n.b is not a zero-copy view of a's storage");
    CHECK(c->data == a->data && c->shape[0] == 3 && c->shape[1] == 1, "%s", lp_last_error());
    CHECK(((const float *)b->data)[3] == 5.0f, "%s", lp_last_error());
    CHECK(l->dtype == LP_I64 && ((const int64_t *)l->data)[1] == 1LL << 40, "%s", lp_last_error());
    const char *want[][2] = {{"n.l.1", "5"}, {"step", "1000000"}, {"lr", "0.5"}, {"ok", "true"}, {"none", "null"}};
    for (int i = 0; i < 5; i++) {
        const char *v = lp_tensor_file_meta(f, want[i][0]);
        CHECK(v && !strcmp(v, want[i][1]), "metadata %s = %s", want[i][0], v ? v : "(missing)");
    }
    lp_tensor_file_close(f);
    return 0;
}

/* Members that do not start on an element boundary are copied, so that every
 * view can be read through a typed pointer. */
static int test_misaligned(void) {
    float st[6] = {1, 2, 3, 4, 5, 6};
    buf p = {0};
    pk_begin(&p);
    put1(&p, '}');
    pk_str(&p, "t");
    pk_tensor(&p, "FloatStorage", "0", 6, 1, 1, (int64_t[]){5}, (int64_t[]){1});
    put1(&p, 's');
    pk_end(&p);
    zip_align = 0;
    zmember m[2] = {stored("arc/data.pkl", p.p, p.n), stored("arc/data/0", st, sizeof st)};
    /* 42 + pickle + 40 bytes of headers: make the storage start off a 4-byte boundary */
    if ((42 + p.n + 40) % 4 == 0) {
        pk_end(&p); /* bytes after STOP are never read */
        m[0] = stored("arc/data.pkl", p.p, p.n);
    }
    lp_tensor_file *f;
    lp_status s = open_zip("misaligned.pt", m, 2, &f);
    zip_align = 1;
    free(p.p);
    CHECK(s == LP_OK, "%s", lp_last_error());
    const lp_tensor *t = lp_tensor_file_find(f, "t");
    CHECK(t && (uintptr_t)t->data % 4 == 0 && ((const float *)t->data)[4] == 6.0f, "misaligned view not copied");
    lp_tensor_file_close(f);
    return 0;
}

/* An archive in the ZIP64 layout PyTorch uses past 4 GiB: saturated 32-bit
 * fields, the real values in extra fields and a ZIP64 end record. */
static int test_zip64(void) {
    float st[6] = {1, 2, 3, 4, 5, 6};
    buf p = {0};
    pk_begin(&p);
    put1(&p, '}');
    pk_str(&p, "t");
    pk_tensor(&p, "FloatStorage", "0", 6, 0, 2, (int64_t[]){2, 3}, (int64_t[]){3, 1});
    put1(&p, 's');
    pk_end(&p);
    zmember m[2] = {stored("arc/data.pkl", p.p, p.n), stored("arc/data/0", st, sizeof st)};
    zip_zip64 = 1;
    lp_tensor_file *f;
    lp_status s = open_zip("zip64.pt", m, 2, &f);
    zip_zip64 = 0;
    free(p.p);
    CHECK(s == LP_OK, "%s", lp_last_error());
    const lp_tensor *t = lp_tensor_file_find(f, "t");
    CHECK(t && t->nbytes == sizeof st && !memcmp(t->data, st, sizeof st), "ZIP64 member read wrongly");
    lp_tensor_file_close(f);
    return 0;
}

/* Protocol 4 with FRAME, STACK_GLOBAL, MEMOIZE/BINGET, OrderedDict + BUILD,
 * _rebuild_parameter, torch.Size, LONG1, SHORT_BINUNICODE, a bf16 storage. */
static int test_protocol4(void) {
    uint16_t bf[4] = {0x3f80, 0x4000, 0xc040, 0x0000};
    buf p = {0};
    put1(&p, 0x80);
    put1(&p, 4);
    put1(&p, 0x95);
    put_le(&p, 0, 8);
    put1(&p, 0x8c);
    put1(&p, 11);
    put_str(&p, "collections");
    put1(&p, 0x8c);
    put1(&p, 11);
    put_str(&p, "OrderedDict");
    put1(&p, 0x93);
    put1(&p, 0x94); /* memo 0: OrderedDict */
    put1(&p, ')');
    put1(&p, 'R');
    put1(&p, 0x94); /* memo 1: the root dict */
    put1(&p, 0x8c);
    put1(&p, 1);
    put_str(&p, "w");
    pk_global(&p, "torch._utils", "_rebuild_parameter");
    put1(&p, '(');
    pk_tensor(&p, "BFloat16Storage", "0", 4, 0, 2, (int64_t[]){2, 2}, (int64_t[]){2, 1});
    put1(&p, 0x88);
    put1(&p, 'h');
    put1(&p, 0); /* BINGET OrderedDict */
    put1(&p, ')');
    put1(&p, 'R');
    put1(&p, 't');
    put1(&p, 'R');
    put1(&p, 's');
    put1(&p, 0x8c);
    put1(&p, 4);
    put_str(&p, "size");
    pk_global(&p, "torch", "Size");
    pk_ints(&p, 2, (int64_t[]){1LL << 33, 3});
    put1(&p, 0x85);
    put1(&p, 'R');
    put1(&p, 's');
    put1(&p, '}'); /* BUILD state: {'_metadata': {}} is ignored */
    pk_str(&p, "_metadata");
    put1(&p, '}');
    put1(&p, 's');
    put1(&p, 'b');
    pk_end(&p);
    const void *sd[1] = {bf};
    size_t sl[1] = {sizeof bf};
    lp_tensor_file *f;
    CHECK(open_pickle("proto4.pt", &p, sd, sl, 1, &f) == LP_OK, "%s", lp_last_error());
    free(p.p);
    const lp_tensor *w = lp_tensor_file_find(f, "w");
    CHECK(w && w->dtype == LP_BF16 && w->ndim == 2 && w->nbytes == 8, "%s", lp_last_error());
    float v[4];
    CHECK(lp_tensor_read_f32(w, 0, 4, v) == LP_OK, "%s", lp_last_error());
    CHECK(v[0] == 1.0f && v[1] == 2.0f && v[2] == -3.0f && v[3] == 0.0f, "%s", lp_last_error());
    CHECK(lp_tensor_file_meta(f, "size.0") && !strcmp(lp_tensor_file_meta(f, "size.0"), "8589934592"), "%s",
          lp_last_error());
    CHECK(!lp_tensor_file_meta(f, "_metadata"), "%s", lp_last_error());
    lp_tensor_file_close(f);
    return 0;
}

/* Deflated members: stored blocks, fixed and dynamic Huffman, checked against
 * the raw bytes (and the dynamic one against zlib's CRC-32). */
static int test_deflate(void) {
    char text[4096];
    size_t tn = dyn_text(text);
    CHECK(tn == 3589 && lp_crc32(0, text, tn) == 0x98a0db91u, "text %zu bytes, crc %08x", tn, lp_crc32(0, text, tn));
    unsigned char runs[1200]; /* 300 floats whose bytes come in runs */
    for (int i = 0; i < 1200; i++) runs[i] = (unsigned char)(i / 200 * 37 + 1);
    buf p = {0};
    pk_begin(&p);
    put1(&p, '}');
    put1(&p, '(');
    pk_str(&p, "runs");
    pk_tensor(&p, "FloatStorage", "0", 300, 0, 1, (int64_t[]){300}, (int64_t[]){1});
    pk_str(&p, "text");
    pk_tensor(&p, "ByteStorage", "1", (int64_t)tn, 0, 1, (int64_t[]){(int64_t)tn}, (int64_t[]){1});
    put1(&p, 'u');
    pk_end(&p);
    buf cp = {0}, c0 = {0}, c1 = {0};
    deflate_stored(&cp, p.p, p.n);
    deflate_fixed(&c0, (const unsigned char *)runs, sizeof runs);
    put(&c1, dyn_deflate, sizeof dyn_deflate);
    CHECK(c0.n < sizeof runs / 4, "runs compressed to %zu bytes", c0.n);
    zmember m[3] = {deflated("arc/data.pkl", &cp, p.p, p.n), deflated("arc/data/0", &c0, runs, sizeof runs),
                    deflated("arc/data/1", &c1, text, tn)};
    lp_tensor_file *f;
    CHECK(open_zip("deflate.pt", m, 3, &f) == LP_OK, "%s", lp_last_error());
    const lp_tensor *r = lp_tensor_file_find(f, "runs"), *t = lp_tensor_file_find(f, "text");
    CHECK(r && t && t->dtype == LP_U8, "%s", lp_last_error());
    CHECK(!memcmp(r->data, runs, sizeof runs), "fixed-Huffman member inflated wrongly");
    CHECK(t->nbytes == tn && !memcmp(t->data, text, tn), "dynamic-Huffman member inflated wrongly");
    lp_tensor_file_close(f);
    /* The zip layer on its own. */
    buf z = {0};
    zip_build(&z, m, 3);
    lp_zip *zip;
    CHECK(lp_zip_open(z.p, z.n, "deflate.zip", &zip) == LP_OK, "%s", lp_last_error());
    CHECK(lp_zip_count(zip) == 3 && !lp_zip_find(zip, "arc/data/2"), "%s", lp_last_error());
    const lp_zip_entry *e = lp_zip_find(zip, "arc/data/1");
    CHECK(e && e->method == 8 && e->size == tn, "%s", lp_last_error());
    const unsigned char *d;
    void *heap;
    CHECK(lp_zip_read(zip, e, tn - 1, 1, &d, &heap) != LP_OK && strstr(lp_last_error(), "arc/data/1"), "%s",
          lp_last_error());
    CHECK(lp_zip_read(zip, e, tn, 1, &d, &heap) == LP_OK && heap && !memcmp(d, text, tn), "%s", lp_last_error());
    free(heap);
    lp_zip_close(zip);
    free(z.p);
    free(p.p);
    free(cp.p);
    free(c0.p);
    free(c1.p);
    return 0;
}

/* ---- hostile files ---- */

static lp_status open_raw_pickle(const char *name, const buf *p) {
    float st[6] = {0};
    const void *sd[1] = {st};
    size_t sl[1] = {sizeof st};
    lp_tensor_file *f = NULL;
    lp_status s = open_pickle(name, p, sd, sl, 1, &f);
    lp_tensor_file_close(f);
    return s;
}

static int test_evil_globals(void) {
    buf p = {0};
    pk_begin(&p); /* os.system('echo pwned') */
    pk_global(&p, "os", "system");
    pk_str(&p, "echo pwned");
    put1(&p, 0x85);
    put1(&p, 'R');
    pk_end(&p);
    CHECK_REFUSED(open_raw_pickle("os_system.pt", &p), "os.system");
    p.n = 0;
    put1(&p, 0x80); /* builtins.eval("...") through STACK_GLOBAL, protocol 4 */
    put1(&p, 4);
    put1(&p, 0x8c);
    put1(&p, 8);
    put_str(&p, "builtins");
    put1(&p, 0x8c);
    put1(&p, 4);
    put_str(&p, "eval");
    put1(&p, 0x93);
    pk_str(&p, "__import__('os').system('id')");
    put1(&p, 0x85);
    put1(&p, 'R');
    pk_end(&p);
    CHECK_REFUSED(open_raw_pickle("builtins_eval.pt", &p), "builtins.eval");
    p.n = 0; /* a global hidden inside a tensor's arguments */
    pk_begin(&p);
    put1(&p, '}');
    pk_str(&p, "t");
    pk_global(&p, "subprocess", "Popen");
    put1(&p, 's');
    pk_end(&p);
    CHECK_REFUSED(open_raw_pickle("popen.pt", &p), "subprocess.Popen");
    p.n = 0; /* calling an allowed storage type */
    pk_begin(&p);
    pk_global(&p, "torch", "FloatStorage");
    put1(&p, ')');
    put1(&p, 'R');
    pk_end(&p);
    CHECK_REFUSED(open_raw_pickle("call_storage.pt", &p), "storage type");
    p.n = 0; /* protocol 0 INST */
    pk_begin(&p);
    put1(&p, '(');
    put_str(&p, "iposix\nsystem\n");
    pk_end(&p);
    CHECK_REFUSED(open_raw_pickle("inst.pt", &p), "opcode 0x69");
    free(p.p);
    return 0;
}

/* A valid one-tensor archive whose members can then be made to lie. */
static int test_lying_zip(void) {
    float st[6] = {1, 2, 3, 4, 5, 6};
    buf p = {0};
    pk_begin(&p);
    put1(&p, '}');
    pk_str(&p, "t");
    pk_tensor(&p, "FloatStorage", "0", 6, 0, 1, (int64_t[]){6}, (int64_t[]){1});
    put1(&p, 's');
    pk_end(&p);
    buf c = {0};
    deflate_fixed(&c, (const unsigned char *)st, sizeof st);
    zmember m[2] = {stored("arc/data.pkl", p.p, p.n), stored("arc/data/0", st, sizeof st)};
    lp_tensor_file *f;
    CHECK(open_zip("honest.pt", m, 2, &f) == LP_OK, "%s", lp_last_error());
    lp_tensor_file_close(f);

    m[1].lie_comp = 4000; /* the directory claims more data than the member holds */
    CHECK_REFUSED(open_zip("lie_comp.pt", m, 2, &f), "arc/data/0");
    m[1].lie_comp = 0;
    m[1].lie_local = 12; /* the local header disagrees */
    CHECK_REFUSED(open_zip("lie_local.pt", m, 2, &f), "arc/data/0");
    m[1].lie_local = 0;
    m[1].size = m[1].lie_comp = m[1].lie_local = 1000; /* consistent but past the member area */
    CHECK_REFUSED(open_zip("lie_both.pt", m, 2, &f), "arc/data/0");
    m[1] = deflated("arc/data/0", &c, st, sizeof st);
    m[1].size = 28; /* inflates to fewer bytes than declared */
    CHECK_REFUSED(open_zip("lie_short.pt", m, 2, &f), "fewer bytes than declared");
    m[1].size = 20; /* inflates to more */
    CHECK_REFUSED(open_zip("lie_long.pt", m, 2, &f), "more bytes than declared");
    m[1] = stored("arc/data/0", st, sizeof st);
    m[1].crc ^= 1;
    m[0].crc ^= 1; /* data.pkl is CRC-checked */
    CHECK_REFUSED(open_zip("bad_crc.pt", m, 2, &f), "arc/data.pkl");
    m[0].crc ^= 1;
    zmember dup[3] = {m[0], m[1], m[1]};
    CHECK_REFUSED(open_zip("dup.pt", dup, 3, &f), "appears twice");
    zmember nopkl[1] = {m[1]};
    CHECK_REFUSED(open_zip("nopkl.pt", nopkl, 1, &f), "data.pkl");
    free(p.p);
    free(c.p);
    return 0;
}

/* A fixed-Huffman stream of n zero bytes (a literal, then 258-byte runs). */
static void deflate_zeros(buf *out, size_t n) {
    bitw w = {out, 0, 0};
    bits(&w, 1, 1);
    bits(&w, 1, 2);
    fixed_lit(&w, 0);
    for (size_t done = 1; done < n;) {
        size_t k = n - done;
        if (k > 258) k = n - done - 258 < 3 ? n - done - 3 : 258;
        if (k < 3) {
            for (size_t i = 0; i < k; i++) fixed_lit(&w, 0);
        } else {
            fixed_run(&w, (int)k);
        }
        done += k;
    }
    fixed_lit(&w, 256);
    if (w.n) bits(&w, 0, 8 - w.n);
}

static int test_zip_bomb(void) {
    long rss0 = max_rss_kb();
    buf p = {0};
    pk_begin(&p);
    put1(&p, '}');
    pk_str(&p, "t");
    pk_tensor(&p, "ByteStorage", "0", 4096, 0, 1, (int64_t[]){4096}, (int64_t[]){1});
    put1(&p, 's');
    pk_end(&p);
    buf small = {0}, big = {0};
    deflate_zeros(&small, 4096);
    CHECK(small.n < 64, "%zu", small.n);
    unsigned char zeros[4096] = {0};
    zmember m[2] = {stored("arc/data.pkl", p.p, p.n), deflated("arc/data/0", &small, zeros, sizeof zeros)};
    lp_tensor_file *f;
    CHECK(open_zip("bomb_ok.pt", m, 2, &f) == LP_OK, "%s", lp_last_error());
    const lp_tensor *t = lp_tensor_file_find(f, "t");
    CHECK(t && t->nbytes == 4096 && !memcmp(t->data, zeros, 4096), "%s", lp_last_error());
    lp_tensor_file_close(f);
    /* claims 4 GiB from a few bytes */
    m[1].size = 0xfffffff0u;
    CHECK_REFUSED(open_zip("bomb_claim.pt", m, 2, &f), "arc/data/0");
    /* declares 4 KiB, produces 16 MiB */
    deflate_zeros(&big, (size_t)16 << 20);
    m[1] = deflated("arc/data/0", &big, zeros, sizeof zeros);
    CHECK_REFUSED(open_zip("bomb_produce.pt", m, 2, &f), "more bytes than declared");
    /* a deflated data.pkl of 100 MiB (a legal ratio, but past the pickle limit) */
    big.n = 0;
    deflate_zeros(&big, (size_t)100 << 20);
    zmember pk = {"arc/data.pkl", big.p, big.n, 8, (size_t)100 << 20, 0, 0, 0};
    CHECK_REFUSED(open_zip("bomb_pickle.pt", &pk, 1, &f), "arc/data.pkl");
    long grown = max_rss_kb() - rss0;
    printf("        max RSS grew by %ld KiB\n", grown);
    CHECK(grown < 64 * 1024, "the bombs made the reader allocate %ld KiB", grown);
    free(p.p);
    free(small.p);
    free(big.p);
    return 0;
}

/* One tensor over a 6-float storage with the given view. */
static lp_status open_view(const char *name, int64_t numel, int64_t off, int nd, const int64_t *size,
                           const int64_t *stride) {
    buf p = {0};
    pk_begin(&p);
    put1(&p, '}');
    pk_str(&p, "t");
    pk_tensor(&p, "FloatStorage", "0", numel, off, nd, size, stride);
    put1(&p, 's');
    pk_end(&p);
    lp_status s = open_raw_pickle(name, &p);
    free(p.p);
    return s;
}

static int test_bad_views(void) {
    const int64_t big = 1LL << 62;
    CHECK(open_view("view_ok.pt", 6, 3, 1, (int64_t[]){3}, (int64_t[]){1}) == LP_OK, "%s", lp_last_error());
    CHECK_REFUSED(open_view("view_off.pt", 6, 100, 1, (int64_t[]){1}, (int64_t[]){1}), "element 100");
    CHECK_REFUSED(open_view("view_end.pt", 6, 2, 1, (int64_t[]){5}, (int64_t[]){1}), "reaches element 6");
    CHECK_REFUSED(open_view("view_negsize.pt", 6, 0, 1, (int64_t[]){-1}, (int64_t[]){1}), "negative size");
    CHECK_REFUSED(open_view("view_negstride.pt", 6, 5, 1, (int64_t[]){2}, (int64_t[]){-1}), "negative size or stride");
    CHECK_REFUSED(open_view("view_bigsize.pt", 6, 0, 2, (int64_t[]){big, big}, (int64_t[]){1, 1}), "overflowing size");
    CHECK_REFUSED(open_view("view_bigstride.pt", 6, 0, 2, (int64_t[]){3, 3}, (int64_t[]){big, 1}),
                  "overflowing stride");
    CHECK_REFUSED(open_view("view_bytes.pt", 6, 0, 1, (int64_t[]){big}, (int64_t[]){0}), "too large");
    CHECK_REFUSED(open_view("view_broadcast.pt", 6, 0, 2, (int64_t[]){1LL << 31, 1LL << 20}, (int64_t[]){0, 0}),
                  "copies");
    CHECK_REFUSED(open_view("view_numel.pt", 1000, 0, 1, (int64_t[]){6}, (int64_t[]){1}), "does not match");
    CHECK_REFUSED(open_view("view_hugenumel.pt", big, 0, 1, (int64_t[]){6}, (int64_t[]){1}), "does not match");
    CHECK_REFUSED(open_view("view_dims.pt", 6, 0, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1},
                            (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}),
                  "size");
    buf p = {0}; /* a storage with no member */
    pk_begin(&p);
    pk_tensor(&p, "FloatStorage", "9", 6, 0, 1, (int64_t[]){6}, (int64_t[]){1});
    pk_end(&p);
    CHECK_REFUSED(open_raw_pickle("view_nomember.pt", &p), "arc/data/9");
    free(p.p);
    return 0;
}

static int test_pickle_limits(void) {
    buf p = {0};
    pk_begin(&p); /* memo index far past the pickle */
    put1(&p, 'N');
    put1(&p, 'r');
    put_le(&p, 0xfffffff0u, 4);
    pk_end(&p);
    CHECK_REFUSED(open_raw_pickle("memo_big.pt", &p), "memo index");
    p.n = 0;
    pk_begin(&p);
    put1(&p, 'h');
    put1(&p, 3);
    pk_end(&p);
    CHECK_REFUSED(open_raw_pickle("memo_unset.pt", &p), "memo entry 3");
    p.n = 0; /* 100 nested dicts */
    pk_begin(&p);
    for (int i = 0; i < 100; i++) {
        put1(&p, '}');
        pk_str(&p, "k");
    }
    put1(&p, 'N');
    for (int i = 0; i < 100; i++) put1(&p, 's');
    pk_end(&p);
    CHECK_REFUSED(open_raw_pickle("deep.pt", &p), "deeper than 64");
    p.n = 0; /* a dict that contains itself */
    pk_begin(&p);
    put1(&p, '}');
    put1(&p, 'q');
    put1(&p, 0);
    pk_str(&p, "self");
    put1(&p, 'h');
    put1(&p, 0);
    put1(&p, 's');
    pk_end(&p);
    CHECK_REFUSED(open_raw_pickle("cycle.pt", &p), "cyclic");
    p.n = 0; /* 40 levels of lists holding the level below twice: 2^40 paths */
    pk_begin(&p);
    put1(&p, ']');
    pk_int(&p, 1);
    put1(&p, 'a');
    put1(&p, 'q');
    put1(&p, 0);
    for (int i = 1; i <= 40; i++) {
        put1(&p, ']');
        put1(&p, '(');
        put1(&p, 'h');
        put1(&p, (unsigned char)(i - 1));
        put1(&p, 'h');
        put1(&p, (unsigned char)(i - 1));
        put1(&p, 'e');
        put1(&p, 'q');
        put1(&p, (unsigned char)i);
    }
    pk_end(&p);
    CHECK_REFUSED(open_raw_pickle("dag.pt", &p), "shares sub-objects");
    p.n = 0;
    pk_begin(&p);
    put1(&p, '0');
    pk_end(&p);
    CHECK_REFUSED(open_raw_pickle("pop_empty.pt", &p), "empty stack");
    p.n = 0;
    pk_begin(&p);
    pk_int(&p, 1);
    CHECK_REFUSED(open_raw_pickle("no_stop.pt", &p), "without STOP");
    p.n = 0;
    pk_begin(&p);
    put1(&p, 'X');
    put_le(&p, 0xffffffffu, 4);
    CHECK_REFUSED(open_raw_pickle("long_str.pt", &p), "runs past its end");
    free(p.p);
    return 0;
}

static int test_safetensors_hostile(void) {
    unsigned char h[64] = {0};
    h[7] = 0x80; /* header length 2^63 */
    memcpy(h + 8, "{\"a\":{}}", 8);
    const char *path = tmp_path("huge_header.safetensors");
    CHECK(write_file(path, h, sizeof h), "%s", lp_last_error());
    lp_tensor_file *f;
    CHECK_REFUSED(lp_tensor_file_open(path, &f), "9223372036854775808");
    CHECK_REFUSED(lp_tensor_file_open_memory(h, sizeof h, "mem.safetensors", &f), "mem.safetensors");
    return 0;
}

/* Every prefix of a valid file (a synthetic archive, a golden .pth and a golden
 * safetensors) and every cut of its pickle is refused without crashing. */
static int test_truncated(void) {
    float st[6] = {1, 2, 3, 4, 5, 6};
    buf p = {0}, z = {0};
    pk_begin(&p);
    put1(&p, '}');
    pk_str(&p, "t");
    pk_tensor(&p, "FloatStorage", "0", 6, 0, 2, (int64_t[]){2, 3}, (int64_t[]){1, 2});
    put1(&p, 's');
    pk_end(&p);
    zmember m[2] = {stored("arc/data.pkl", p.p, p.n), stored("arc/data/0", st, sizeof st)};
    zip_build(&z, m, 2);
    lp_tensor_file *f;
    CHECK(lp_tensor_file_open_memory(z.p, z.n, "whole.pt", &f) == LP_OK, "%s", lp_last_error());
    lp_tensor_file_close(f);
    for (size_t n = 0; n < z.n; n++) {
        CHECK(lp_tensor_file_open_memory(z.p, n, "cut.pt", &f) != LP_OK, "a %zu-byte prefix was accepted", n);
        CHECK(*lp_last_error(), "%s", lp_last_error());
    }
    for (size_t n = 0; n < p.n; n++) {
        buf q = {0};
        put(&q, p.p, n);
        lp_status s = open_raw_pickle("cut_pickle.pt", &q);
        free(q.p);
        CHECK(s != LP_OK && strstr(lp_last_error(), "data.pkl"), "pickle cut at %zu: %s", n, lp_last_error());
    }
    free(p.p);
    free(z.p);
    const char *files[2] = {"golden/umt5_tiny_bf16.pth", "golden/umt5_tiny.safetensors"};
    for (int k = 0; k < 2; k++) {
        const char *path = lp_test_shared(files[k]);
        if (!path) return lp_test_skip_shared(files[k]);
        size_t n;
        unsigned char *d = slurp(path, &n);
        CHECK(d, "%s", lp_last_error());
        size_t cuts = 0;
        for (size_t c = 0; c < n; c += 1 + c / 8, cuts++)
            CHECK(lp_tensor_file_open_memory(d, c, files[k], &f) != LP_OK, "%s cut at %zu was accepted", files[k], c);
        printf("        %s: %zu truncations refused\n", files[k], cuts);
        free(d);
    }
    return 0;
}

int main(void) {
    lp_test_run("sf_dit_t2v.pt == sf_dit_t2v.safetensors", test_sf_dit_pt);
    lp_test_run("wan_vae.pth == wan_vae.safetensors", test_wan_vae_pth);
    lp_test_run("umt5_tiny_bf16.pth == umt5_tiny.safetensors", test_umt5_pth);
    lp_test_run("test_latents_wan.pth", test_latents);
    lp_test_run("strided views vs naive gather", test_strided_random);
    lp_test_run("names, sharing, metadata", test_names_and_sharing);
    lp_test_run("misaligned members", test_misaligned);
    lp_test_run("ZIP64 layout", test_zip64);
    lp_test_run("protocol 4 opcodes", test_protocol4);
    lp_test_run("deflate", test_deflate);
    lp_test_run("evil globals", test_evil_globals);
    lp_test_run("lying zip members", test_lying_zip);
    lp_test_run("zip bombs", test_zip_bomb);
    lp_test_run("bad views", test_bad_views);
    lp_test_run("pickle limits", test_pickle_limits);
    lp_test_run("safetensors hostile header", test_safetensors_hostile);
    lp_test_run("truncated files", test_truncated);
    return lp_test_finish();
}
