#include "protobuf.h"

#include <string.h>

void lp_pb_init(lp_pb_reader *r, const void *data, size_t len, const char *what, size_t base_offset) {
    static const uint8_t empty[1] = {0};
    r->begin = data ? (const uint8_t *)data : empty;
    r->cur = r->begin;
    r->end = r->begin + (data ? len : 0);
    r->what = what ? what : "protobuf";
    r->base_offset = base_offset;
}

static size_t pb_offset(const lp_pb_reader *r, const uint8_t *p) {
    return r->base_offset + (size_t)(p - r->begin);
}

/* Reads a varint of at most 10 bytes; the 10th byte may only carry bit 63. */
static lp_status pb_varint(lp_pb_reader *r, uint64_t *out, const char *part) {
    const uint8_t *start = r->cur;
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (r->cur >= r->end)
            return lp_fail(LP_ERR_FORMAT, "%s: truncated %s varint at byte %zu", r->what, part,
                           pb_offset(r, start));
        uint8_t b = *r->cur++;
        if (i == 9 && b > 1)
            return lp_fail(LP_ERR_FORMAT, "%s: %s varint at byte %zu overflows 64 bits", r->what, part,
                           pb_offset(r, start));
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (b < 0x80) {
            *out = v;
            return LP_OK;
        }
    }
    return lp_fail(LP_ERR_FORMAT, "%s: %s varint at byte %zu is longer than 10 bytes", r->what, part,
                   pb_offset(r, start));
}

static lp_status pb_fixed(lp_pb_reader *r, size_t n, uint64_t *out, size_t tag_at) {
    if ((size_t)(r->end - r->cur) < n)
        return lp_fail(LP_ERR_FORMAT, "%s: truncated %zu-byte field (tag at byte %zu)", r->what, n,
                       r->base_offset + tag_at);
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)r->cur[i] << (8 * i);
    r->cur += n;
    *out = v;
    return LP_OK;
}

lp_status lp_pb_next(lp_pb_reader *r, lp_pb_field *f, int *has) {
    *has = 0;
    if (r->cur >= r->end) return LP_OK;
    memset(f, 0, sizeof *f);
    size_t tag_at = (size_t)(r->cur - r->begin);
    f->offset = r->base_offset + tag_at;
    uint64_t tag;
    LP_TRY(pb_varint(r, &tag, "tag"));
    uint64_t number = tag >> 3;
    unsigned wire = (unsigned)(tag & 7);
    if (number == 0 || number > 0x1fffffff)
        return lp_fail(LP_ERR_FORMAT, "%s: invalid field number %llu at byte %zu", r->what,
                       (unsigned long long)number, f->offset);
    f->number = (uint32_t)number;
    switch (wire) {
    case LP_PB_VARINT:
        f->wire = LP_PB_VARINT;
        LP_TRY(pb_varint(r, &f->u64, "value"));
        break;
    case LP_PB_I64:
        f->wire = LP_PB_I64;
        LP_TRY(pb_fixed(r, 8, &f->u64, tag_at));
        break;
    case LP_PB_I32:
        f->wire = LP_PB_I32;
        LP_TRY(pb_fixed(r, 4, &f->u64, tag_at));
        break;
    case LP_PB_LEN: {
        f->wire = LP_PB_LEN;
        uint64_t len;
        LP_TRY(pb_varint(r, &len, "length"));
        size_t left = (size_t)(r->end - r->cur);
        if (len > left)
            return lp_fail(LP_ERR_FORMAT,
                           "%s: truncated field %u at byte %zu: length %llu but only %zu bytes remain",
                           r->what, f->number, f->offset, (unsigned long long)len, left);
        f->data = r->cur;
        f->len = (size_t)len;
        r->cur += len;
        break;
    }
    default:
        return lp_fail(LP_ERR_FORMAT, "%s: unsupported wire type %u (field %u) at byte %zu", r->what, wire,
                       f->number, f->offset);
    }
    *has = 1;
    return LP_OK;
}

void lp_pb_sub(const lp_pb_reader *parent, const lp_pb_field *f, const char *what, lp_pb_reader *out) {
    size_t off = f->data ? parent->base_offset + (size_t)(f->data - parent->begin) : parent->base_offset;
    lp_pb_init(out, f->data, f->len, what, off);
}

static const char *pb_wire_name(lp_pb_wire w) {
    switch (w) {
    case LP_PB_VARINT: return "varint";
    case LP_PB_I64: return "64-bit";
    case LP_PB_LEN: return "length-delimited";
    case LP_PB_I32: return "32-bit";
    }
    return "?";
}

lp_status lp_pb_expect(const lp_pb_reader *r, const lp_pb_field *f, lp_pb_wire wire, const char *field_name) {
    if (f->wire == wire) return LP_OK;
    return lp_fail(LP_ERR_FORMAT, "%s: field %s (%u) at byte %zu has wire type %s, expected %s", r->what,
                   field_name, f->number, f->offset, pb_wire_name(f->wire), pb_wire_name(wire));
}

int32_t lp_pb_int32(const lp_pb_field *f) {
    uint32_t u = (uint32_t)f->u64;
    int32_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

int lp_pb_bool(const lp_pb_field *f) { return f->u64 != 0; }

float lp_pb_float(const lp_pb_field *f) {
    uint32_t u = (uint32_t)f->u64;
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}
