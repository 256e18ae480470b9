/* A minimal, bounds-checked reader of the protobuf wire format: enough to walk
 * a message field by field (varint, 64-bit, length-delimited and 32-bit wire
 * types), skip the fields a caller does not know, and step into nested
 * messages. It never reads outside the buffer it was given; truncated data,
 * over-long varints, field number 0 and the deprecated group wire types are
 * LP_ERR_FORMAT errors that name the message and the byte offset. Nothing is
 * copied: length-delimited payloads point into the caller's buffer. */
#ifndef LP_PROTOBUF_H
#define LP_PROTOBUF_H

#include <stddef.h>
#include <stdint.h>

#include "../base/status.h"

typedef enum {
    LP_PB_VARINT = 0, /* int32, int64, uint32, uint64, bool, enum */
    LP_PB_I64 = 1,    /* fixed64/sfixed64/double */
    LP_PB_LEN = 2,    /* string/bytes/nested message/packed */
    LP_PB_I32 = 5,    /* fixed32/sfixed32/float */
} lp_pb_wire;

/* A cursor over one message. what names it in error messages (for example
 * "model.model: trainer_spec"); base_offset is the message's offset in the
 * outermost buffer, so that errors report absolute byte offsets. */
typedef struct {
    const uint8_t *begin, *cur, *end;
    const char *what;
    size_t base_offset;
} lp_pb_reader;

/* One decoded field. For VARINT, I64 and I32 the raw value is in u64 (I32 in
 * the low 32 bits); for LEN, data/len is the payload inside the buffer. */
typedef struct {
    uint32_t number;
    lp_pb_wire wire;
    uint64_t u64;
    const uint8_t *data;
    size_t len;
    size_t offset; /* absolute offset of the field's tag */
} lp_pb_field;

/* Starts reading len bytes at data (data may be NULL when len is 0). */
void lp_pb_init(lp_pb_reader *r, const void *data, size_t len, const char *what, size_t base_offset);

/* Reads the next field. Sets *has = 1 and fills *f, or *has = 0 at the end of
 * the message. Fails with LP_ERR_FORMAT on a truncated or malformed field. */
lp_status lp_pb_next(lp_pb_reader *r, lp_pb_field *f, int *has);

/* A reader over a LEN field's payload (a nested message). */
void lp_pb_sub(const lp_pb_reader *parent, const lp_pb_field *f, const char *what, lp_pb_reader *out);

/* Checks that f has the wire type a known field must have; otherwise fails
 * with LP_ERR_FORMAT naming the message, field name, field number and offset. */
lp_status lp_pb_expect(const lp_pb_reader *r, const lp_pb_field *f, lp_pb_wire wire, const char *field_name);

/* Typed accessors of a field already checked with lp_pb_expect. int32 and
 * enum values are the low 32 bits of the varint (negative int32 values are
 * written as 10-byte varints); bool is any non-zero varint; float is the
 * IEEE-754 single of an I32 field. */
int32_t lp_pb_int32(const lp_pb_field *f);
int lp_pb_bool(const lp_pb_field *f);
float lp_pb_float(const lp_pb_field *f);

#endif
