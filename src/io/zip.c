/* Zip reader and inflate (see zip.h). Record layouts follow the PKWARE
 * APPNOTE: end of central directory (EOCD, 22 bytes + comment), ZIP64 EOCD
 * locator (20 bytes) and record (56 bytes), central directory entries (46
 * bytes + name + extra + comment), local headers (30 bytes + name + extra).
 * Deflate streams follow RFC 1951. */
#include "zip.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOC64 0x07064b50u
#define MAX_DEFLATE_RATIO 1032u /* 258-byte matches coded in 2 bits */

struct lp_zip {
    const unsigned char *data;
    size_t len;
    char *what;
    lp_zip_entry *entries;
    size_t count;
    size_t *by_name; /* entry indices sorted by name */
    char *names;     /* all names, NUL-terminated */
};

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* ---- CRC-32 ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t lp_crc32(uint32_t crc, const void *data, size_t n) {
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- inflate (RFC 1951) ---- */

typedef struct {
    const unsigned char *in;
    size_t in_len, in_pos;
    uint64_t bits;
    int nbits;
    unsigned char *out;
    size_t out_len, out_pos;
    const char *err; /* set on failure */
} inflater;

/* A canonical Huffman code: count[l] codes of length l, symbols in code order. */
typedef struct {
    uint16_t count[16];
    uint16_t symbol[288];
} huffman;

static int need(inflater *s, int n) {
    while (s->nbits < n) {
        if (s->in_pos == s->in_len) {
            s->err = "compressed data ends early";
            return 0;
        }
        s->bits |= (uint64_t)s->in[s->in_pos++] << s->nbits;
        s->nbits += 8;
    }
    return 1;
}

/* n <= 16 bits, LSB first; returns -1 on failure. */
static int getbits(inflater *s, int n) {
    if (!need(s, n)) return -1;
    int v = (int)(s->bits & ((1u << n) - 1));
    s->bits >>= n;
    s->nbits -= n;
    return v;
}

/* Builds h from n code lengths; fails on an over-subscribed set. Incomplete
 * codes are accepted: their unused codes fail when met in decode(). */
static int build(huffman *h, const uint8_t *lengths, int n) {
    uint16_t offs[16];
    memset(h->count, 0, sizeof h->count);
    for (int i = 0; i < n; i++) h->count[lengths[i]]++;
    h->count[0] = 0;
    int left = 1;
    for (int l = 1; l < 16; l++) {
        left = 2 * left - h->count[l];
        if (left < 0) return 0;
    }
    offs[1] = 0;
    for (int l = 1; l < 15; l++) offs[l + 1] = (uint16_t)(offs[l] + h->count[l]);
    for (int i = 0; i < n; i++)
        if (lengths[i]) h->symbol[offs[lengths[i]]++] = (uint16_t)i;
    return 1;
}

/* Reads one symbol, one bit at a time (codes are stored MSB first). */
static int decode(inflater *s, const huffman *h) {
    int code = 0, first = 0, index = 0;
    for (int l = 1; l < 16; l++) {
        int b = getbits(s, 1);
        if (b < 0) return -1;
        code |= b;
        int c = h->count[l];
        if (code - first < c) return h->symbol[index + code - first];
        index += c;
        first = (first + c) << 1;
        code <<= 1;
    }
    s->err = "invalid Huffman code";
    return -1;
}

static const uint16_t len_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                      31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t dist_base[30] = {1,    2,    3,    4,    5,    7,    9,    13,    17,    25,
                                       33,   49,   65,   97,   129,  193,  257,  385,   513,   769,
                                       1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

static int put(inflater *s, unsigned char b) {
    if (s->out_pos == s->out_len) {
        s->err = "inflates to more bytes than declared";
        return 0;
    }
    s->out[s->out_pos++] = b;
    return 1;
}

static int codes(inflater *s, const huffman *lit, const huffman *dist) {
    for (;;) {
        int sym = decode(s, lit);
        if (sym < 0) return 0;
        if (sym < 256) {
            if (!put(s, (unsigned char)sym)) return 0;
            continue;
        }
        if (sym == 256) return 1;
        sym -= 257;
        if (sym >= 29) {
            s->err = "invalid length code";
            return 0;
        }
        int e = getbits(s, len_extra[sym]);
        if (e < 0) return 0;
        size_t len = (size_t)len_base[sym] + (size_t)e;
        int d = decode(s, dist);
        if (d < 0) return 0;
        if (d >= 30) {
            s->err = "invalid distance code";
            return 0;
        }
        e = getbits(s, dist_extra[d]);
        if (e < 0) return 0;
        size_t distance = (size_t)dist_base[d] + (size_t)e;
        if (distance > s->out_pos) {
            s->err = "distance reaches before the start of the data";
            return 0;
        }
        if (len > s->out_len - s->out_pos) {
            s->err = "inflates to more bytes than declared";
            return 0;
        }
        for (size_t i = 0; i < len; i++, s->out_pos++) s->out[s->out_pos] = s->out[s->out_pos - distance];
    }
}

static int stored_block(inflater *s) {
    s->bits >>= s->nbits & 7;
    s->nbits -= s->nbits & 7;
    int len = getbits(s, 16), nlen = getbits(s, 16);
    if (len < 0 || nlen < 0) return 0;
    if ((len ^ 0xffff) != nlen) {
        s->err = "stored block length check fails";
        return 0;
    }
    /* nbits is 0 here: the header was read byte-aligned. */
    if ((size_t)len > s->in_len - s->in_pos) {
        s->err = "compressed data ends early";
        return 0;
    }
    if ((size_t)len > s->out_len - s->out_pos) {
        s->err = "inflates to more bytes than declared";
        return 0;
    }
    memcpy(s->out + s->out_pos, s->in + s->in_pos, (size_t)len);
    s->out_pos += (size_t)len;
    s->in_pos += (size_t)len;
    return 1;
}

static huffman fixed_lit, fixed_dist;
static pthread_once_t fixed_once = PTHREAD_ONCE_INIT;

static void fixed_init(void) {
    uint8_t l[288];
    for (int i = 0; i < 288; i++) l[i] = i < 144 ? 8 : i < 256 ? 9 : i < 280 ? 7 : 8;
    build(&fixed_lit, l, 288);
    for (int i = 0; i < 30; i++) l[i] = 5;
    build(&fixed_dist, l, 30);
}

static int fixed_block(inflater *s) {
    pthread_once(&fixed_once, fixed_init);
    return codes(s, &fixed_lit, &fixed_dist);
}

static int dynamic_block(inflater *s) {
    static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    int nlen = getbits(s, 5), ndist = getbits(s, 5), ncode = getbits(s, 4);
    if (nlen < 0 || ndist < 0 || ncode < 0) return 0;
    nlen += 257;
    ndist += 1;
    ncode += 4;
    if (nlen > 286 || ndist > 30) {
        s->err = "too many length or distance codes";
        return 0;
    }
    uint8_t lengths[320] = {0};
    for (int i = 0; i < ncode; i++) {
        int v = getbits(s, 3);
        if (v < 0) return 0;
        lengths[order[i]] = (uint8_t)v;
    }
    huffman lencode, distcode;
    if (!build(&lencode, lengths, 19)) {
        s->err = "over-subscribed code length code";
        return 0;
    }
    int n = 0;
    memset(lengths, 0, sizeof lengths);
    while (n < nlen + ndist) {
        int sym = decode(s, &lencode);
        if (sym < 0) return 0;
        if (sym < 16) {
            lengths[n++] = (uint8_t)sym;
            continue;
        }
        int rep, val = 0;
        if (sym == 16) {
            if (n == 0) {
                s->err = "repeat with no previous length";
                return 0;
            }
            val = lengths[n - 1];
            rep = getbits(s, 2);
            rep = rep < 0 ? -1 : 3 + rep;
        } else if (sym == 17) {
            rep = getbits(s, 3);
            rep = rep < 0 ? -1 : 3 + rep;
        } else {
            rep = getbits(s, 7);
            rep = rep < 0 ? -1 : 11 + rep;
        }
        if (rep < 0) return 0;
        if (n + rep > nlen + ndist) {
            s->err = "code lengths overflow the table";
            return 0;
        }
        while (rep--) lengths[n++] = (uint8_t)val;
    }
    if (lengths[256] == 0) {
        s->err = "no end-of-block code";
        return 0;
    }
    if (!build(&lencode, lengths, nlen) || !build(&distcode, lengths + nlen, ndist)) {
        s->err = "over-subscribed literal or distance code";
        return 0;
    }
    return codes(s, &lencode, &distcode);
}

/* Inflates in[0..in_len) into exactly out_len bytes; returns NULL or the reason. */
static const char *inflate_exact(const unsigned char *in, size_t in_len, unsigned char *out, size_t out_len) {
    inflater s = {.in = in, .in_len = in_len, .out = out, .out_len = out_len};
    int last;
    do {
        last = getbits(&s, 1);
        int type = getbits(&s, 2);
        if (last < 0 || type < 0) return s.err;
        int ok = type == 0 ? stored_block(&s) : type == 1 ? fixed_block(&s) : type == 2 ? dynamic_block(&s) : 0;
        if (type == 3) s.err = "invalid block type";
        if (!ok) return s.err;
    } while (!last);
    if (s.out_pos != out_len) return "inflates to fewer bytes than declared";
    return NULL;
}

/* ---- directory ---- */

static int cmp_name_idx(const void *a, const void *b, void *ctx) {
    const lp_zip_entry *e = ctx;
    return strcmp(e[*(const size_t *)a].name, e[*(const size_t *)b].name);
}

/* Finds the EOCD: the last signature whose comment ends exactly at the end. */
static lp_status find_eocd(const lp_zip *z, size_t *pos) {
    if (z->len < 22) return lp_fail(LP_ERR_FORMAT, "%s: truncated zip archive (%zu bytes)", z->what, z->len);
    size_t lo = z->len - 22 > 0xffff ? z->len - 22 - 0xffff : 0;
    for (size_t p = z->len - 22 + 1; p-- > lo;) {
        if (rd32(z->data + p) == SIG_EOCD && p + 22 + rd16(z->data + p + 20) == z->len) {
            *pos = p;
            return LP_OK;
        }
    }
    return lp_fail(LP_ERR_FORMAT, "%s: no zip end of central directory record (truncated file?)", z->what);
}

/* Reads the ZIP64 extra field of a central entry, replacing the saturated
 * 32-bit fields in their fixed order. */
static lp_status zip64_extra(const lp_zip *z, const unsigned char *ex, size_t exlen, uint64_t *size, uint64_t *csize,
                             uint64_t *off, const char *name) {
    int want_size = *size == 0xffffffffu, want_csize = *csize == 0xffffffffu, want_off = *off == 0xffffffffu;
    if (!want_size && !want_csize && !want_off) return LP_OK;
    for (size_t p = 0; p + 4 <= exlen;) {
        uint16_t id = rd16(ex + p), n = rd16(ex + p + 2);
        if (n > exlen - p - 4) break;
        if (id == 1) {
            const unsigned char *f = ex + p + 4;
            size_t need = 8u * (size_t)(want_size + want_csize + want_off);
            if (n < need) break;
            if (want_size) *size = rd64(f), f += 8;
            if (want_csize) *csize = rd64(f), f += 8;
            if (want_off) *off = rd64(f);
            return LP_OK;
        }
        p += 4 + (size_t)n;
    }
    return lp_fail(LP_ERR_FORMAT, "%s: member '%s' lacks the ZIP64 sizes its header promises", z->what, name);
}

static lp_status check_local(const lp_zip *z, lp_zip_entry *e, uint64_t local, uint64_t cd_start) {
    if (local > cd_start || cd_start - local < 30 || rd32(z->data + local) != SIG_LOCAL)
        return lp_fail(LP_ERR_FORMAT, "%s: member '%s' has no local header at offset %llu", z->what, e->name,
                       (unsigned long long)local);
    const unsigned char *h = z->data + local;
    uint64_t nl = rd16(h + 26), xl = rd16(h + 28);
    uint64_t start = local + 30 + nl + xl;
    if (start > cd_start || nl != strlen(e->name) || memcmp(h + 30, e->name, nl) != 0)
        return lp_fail(LP_ERR_FORMAT, "%s: local header of member '%s' does not match its directory entry", z->what,
                       e->name);
    if (rd16(h + 8) != e->method)
        return lp_fail(LP_ERR_FORMAT, "%s: member '%s' has two different compression methods", z->what, e->name);
    uint32_t lcrc = rd32(h + 14), lcs = rd32(h + 18), lsz = rd32(h + 22);
    if (!(rd16(h + 6) & 8) && lcs != 0xffffffffu && lsz != 0xffffffffu &&
        (lcrc != e->crc32 || lcs != e->comp_size || lsz != e->size))
        return lp_fail(LP_ERR_FORMAT,
                       "%s: member '%s': local header sizes (%u, %u) disagree with the directory (%llu, %llu)", z->what,
                       e->name, lcs, lsz, (unsigned long long)e->comp_size, (unsigned long long)e->size);
    if (e->comp_size > cd_start - start)
        return lp_fail(LP_ERR_FORMAT, "%s: member '%s' declares %llu bytes of data, past the end of the member area",
                       z->what, e->name, (unsigned long long)e->comp_size);
    e->data_offset = start;
    return LP_OK;
}

static lp_status parse_central(lp_zip *z, uint64_t cd_start, uint64_t cd_size, uint64_t count) {
    if (count > cd_size / 46)
        return lp_fail(LP_ERR_FORMAT, "%s: %llu zip members cannot fit a %llu-byte central directory", z->what,
                       (unsigned long long)count, (unsigned long long)cd_size);
    z->entries = calloc(count ? count : 1, sizeof *z->entries);
    z->by_name = malloc((count ? count : 1) * sizeof *z->by_name);
    z->names = malloc(cd_size + 1); /* names are shorter than their entries */
    if (!z->entries || !z->by_name || !z->names) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", z->what);
    const unsigned char *cd = z->data + cd_start;
    size_t p = 0, np = 0;
    for (uint64_t i = 0; i < count; i++) {
        if (cd_size - p < 46 || rd32(cd + p) != SIG_CENTRAL)
            return lp_fail(LP_ERR_FORMAT, "%s: zip central directory entry %llu is corrupt", z->what,
                           (unsigned long long)i);
        const unsigned char *h = cd + p;
        uint16_t flags = rd16(h + 8), method = rd16(h + 10);
        size_t nl = rd16(h + 28), xl = rd16(h + 30), cl = rd16(h + 32);
        if (nl + xl + cl > cd_size - p - 46)
            return lp_fail(LP_ERR_FORMAT, "%s: zip central directory entry %llu runs past the directory", z->what,
                           (unsigned long long)i);
        if (memchr(h + 46, 0, nl))
            return lp_fail(LP_ERR_FORMAT, "%s: zip member %llu has a NUL in its name", z->what, (unsigned long long)i);
        lp_zip_entry *e = &z->entries[i];
        e->name = z->names + np;
        memcpy(z->names + np, h + 46, nl);
        z->names[np + nl] = 0;
        np += nl + 1;
        e->method = method;
        e->crc32 = rd32(h + 16);
        e->comp_size = rd32(h + 20);
        e->size = rd32(h + 24);
        uint64_t local = rd32(h + 42);
        LP_TRY(zip64_extra(z, h + 46 + nl, xl, &e->size, &e->comp_size, &local, e->name));
        if (flags & 1) return lp_fail(LP_ERR_UNSUPPORTED, "%s: member '%s' is encrypted", z->what, e->name);
        if (method != 0 && method != 8)
            return lp_fail(LP_ERR_UNSUPPORTED, "%s: member '%s' uses compression method %u (only stored and deflate)",
                           z->what, e->name, method);
        if (method == 0 && e->comp_size != e->size)
            return lp_fail(LP_ERR_FORMAT, "%s: stored member '%s' declares %llu bytes of data for %llu uncompressed",
                           z->what, e->name, (unsigned long long)e->comp_size, (unsigned long long)e->size);
        if (method == 8 && e->size / MAX_DEFLATE_RATIO > e->comp_size)
            return lp_fail(LP_ERR_FORMAT, "%s: deflated member '%s' claims %llu bytes from %llu compressed (zip bomb?)",
                           z->what, e->name, (unsigned long long)e->size, (unsigned long long)e->comp_size);
        LP_TRY(check_local(z, e, local, cd_start));
        z->by_name[i] = (size_t)i;
        p += 46 + nl + xl + cl;
    }
    z->count = (size_t)count;
    if (count > 1) qsort_r(z->by_name, z->count, sizeof *z->by_name, cmp_name_idx, z->entries);
    for (size_t i = 1; i < z->count; i++)
        if (!strcmp(z->entries[z->by_name[i]].name, z->entries[z->by_name[i - 1]].name))
            return lp_fail(LP_ERR_FORMAT, "%s: zip member '%s' appears twice", z->what, z->entries[z->by_name[i]].name);
    return LP_OK;
}

/* Member data must not overlap: sorts a scratch list of [start, end) ranges. */
typedef struct {
    uint64_t begin, end;
    const char *name;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static lp_status check_overlap(const lp_zip *z) {
    if (z->count < 2) return LP_OK;
    span *s = malloc(z->count * sizeof *s);
    if (!s) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", z->what);
    for (size_t i = 0; i < z->count; i++)
        s[i] =
            (span){z->entries[i].data_offset, z->entries[i].data_offset + z->entries[i].comp_size, z->entries[i].name};
    qsort(s, z->count, sizeof *s, cmp_span);
    lp_status st = LP_OK;
    for (size_t i = 1; i < z->count && st == LP_OK; i++)
        if (s[i].begin < s[i - 1].end)
            st = lp_fail(LP_ERR_FORMAT, "%s: zip members '%s' and '%s' overlap", z->what, s[i - 1].name, s[i].name);
    free(s);
    return st;
}

static lp_status parse(lp_zip *z) {
    size_t eocd = 0;
    LP_TRY(find_eocd(z, &eocd));
    const unsigned char *h = z->data + eocd;
    uint64_t count = rd16(h + 10), cd_size = rd32(h + 12), cd_start = rd32(h + 16);
    uint64_t cd_limit = eocd; /* the directory ends before the (ZIP64) EOCD */
    if (rd16(h + 4) != 0 || rd16(h + 6) != 0 || rd16(h + 8) != rd16(h + 10))
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: multi-volume zip archives are not supported", z->what);
    if (eocd >= 20 && rd32(h - 20) == SIG_LOC64) {
        uint64_t off64 = rd64(h - 20 + 8);
        if (off64 > eocd - 20 || eocd - 20 - off64 < 56 || rd32(z->data + off64) != SIG_EOCD64)
            return lp_fail(LP_ERR_FORMAT, "%s: corrupt ZIP64 end of central directory", z->what);
        const unsigned char *r = z->data + off64;
        if (rd32(r + 16) != 0 || rd32(r + 20) != 0 || rd64(r + 24) != rd64(r + 32))
            return lp_fail(LP_ERR_UNSUPPORTED, "%s: multi-volume zip archives are not supported", z->what);
        count = rd64(r + 32);
        cd_size = rd64(r + 40);
        cd_start = rd64(r + 48);
        cd_limit = off64;
    } else if (count == 0xffff || cd_size == 0xffffffffu || cd_start == 0xffffffffu) {
        return lp_fail(LP_ERR_FORMAT, "%s: zip needs a ZIP64 end of central directory but has none", z->what);
    }
    if (cd_start > cd_limit || cd_size > cd_limit - cd_start)
        return lp_fail(LP_ERR_FORMAT, "%s: zip central directory (%llu bytes at %llu) lies outside the archive",
                       z->what, (unsigned long long)cd_size, (unsigned long long)cd_start);
    LP_TRY(parse_central(z, cd_start, cd_size, count));
    return check_overlap(z);
}

lp_status lp_zip_open(const unsigned char *data, size_t len, const char *what, lp_zip **out) {
    *out = NULL;
    lp_zip *z = calloc(1, sizeof *z);
    if (!z) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", what);
    z->data = data;
    z->len = len;
    z->what = strdup(what);
    lp_status s = z->what ? parse(z) : lp_fail(LP_ERR_NOMEM, "%s: out of memory", what);
    if (s != LP_OK) {
        lp_zip_close(z);
        return s;
    }
    *out = z;
    return LP_OK;
}

void lp_zip_close(lp_zip *z) {
    if (!z) return;
    free(z->entries);
    free(z->by_name);
    free(z->names);
    free(z->what);
    free(z);
}

size_t lp_zip_count(const lp_zip *z) { return z->count; }

const lp_zip_entry *lp_zip_entry_at(const lp_zip *z, size_t i) { return i < z->count ? &z->entries[i] : NULL; }

const lp_zip_entry *lp_zip_find(const lp_zip *z, const char *name) {
    size_t lo = 0, hi = z->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const lp_zip_entry *e = &z->entries[z->by_name[mid]];
        int c = strcmp(e->name, name);
        if (c == 0) return e;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static lp_status check_crc(const lp_zip *z, const lp_zip_entry *e, const void *data) {
    uint32_t c = lp_crc32(0, data, (size_t)e->size);
    if (c != e->crc32)
        return lp_fail(LP_ERR_FORMAT, "%s: member '%s' is corrupt (CRC-32 %08x, expected %08x)", z->what, e->name, c,
                       e->crc32);
    return LP_OK;
}

lp_status lp_zip_extract(const lp_zip *z, const lp_zip_entry *e, void *dst, size_t dst_len) {
    if (e->size > dst_len)
        return lp_fail(LP_ERR_ARG, "%s: member '%s' (%llu bytes) does not fit a %zu-byte buffer", z->what, e->name,
                       (unsigned long long)e->size, dst_len);
    const unsigned char *src = z->data + e->data_offset;
    if (e->method == 0) {
        memcpy(dst, src, (size_t)e->size);
    } else {
        const char *why = inflate_exact(src, (size_t)e->comp_size, dst, (size_t)e->size);
        if (why) return lp_fail(LP_ERR_FORMAT, "%s: deflated member '%s': %s", z->what, e->name, why);
    }
    return check_crc(z, e, dst);
}

lp_status lp_zip_read(const lp_zip *z, const lp_zip_entry *e, size_t limit, int verify_crc, const unsigned char **data,
                      void **heap) {
    *data = NULL;
    *heap = NULL;
    if (e->size > limit)
        return lp_fail(LP_ERR_FORMAT, "%s: member '%s' is %llu bytes, more than the %zu allowed", z->what, e->name,
                       (unsigned long long)e->size, limit);
    if (e->method == 0) {
        if (verify_crc) LP_TRY(check_crc(z, e, z->data + e->data_offset));
        *data = z->data + e->data_offset;
        return LP_OK;
    }
    void *m = malloc(e->size ? (size_t)e->size : 1);
    if (!m) return lp_fail(LP_ERR_NOMEM, "%s: out of memory inflating '%s'", z->what, e->name);
    lp_status s = lp_zip_extract(z, e, m, (size_t)e->size);
    if (s != LP_OK) {
        free(m);
        return s;
    }
    *data = *heap = m;
    return LP_OK;
}
