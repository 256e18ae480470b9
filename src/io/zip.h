/* A read-only zip reader over an archive already in memory (usually mmapped),
 * enough for PyTorch checkpoints (spec/CHECKPOINTS.md): the end of central
 * directory record (found behind an optional comment), its ZIP64 variant and
 * the ZIP64 extra fields PyTorch writes for large files, the central directory
 * and the local headers. Stored members are handed out zero-copy; deflated
 * members are inflated by a small built-in inflate (RFC 1951).
 *
 * Everything is validated at open: every offset and size lies inside the
 * archive, each member's local header agrees with its central entry, member
 * data does not run into the central directory, names are unique, and a
 * deflated member does not declare more output than deflate can produce from
 * its compressed size (1032:1). Inflating stops at the declared size and fails
 * if the stream would produce more or less than declared (a member whose
 * sizes lie), or if the CRC-32 disagrees. */
#ifndef LP_ZIP_H
#define LP_ZIP_H

#include <stddef.h>
#include <stdint.h>

#include "../base/status.h"

typedef struct {
    const char *name;     /* NUL-terminated copy of the member name */
    uint16_t method;      /* 0 stored, 8 deflated (others are refused at open) */
    uint32_t crc32;       /* of the uncompressed data, from the central directory */
    uint64_t comp_size;   /* bytes of (compressed) data in the archive */
    uint64_t size;        /* uncompressed bytes */
    uint64_t data_offset; /* archive offset of the (compressed) data */
} lp_zip_entry;

typedef struct lp_zip lp_zip;

/* Parses the directory of the len-byte archive at data (which must outlive the
 * lp_zip). what names the archive in error messages. */
lp_status lp_zip_open(const unsigned char *data, size_t len, const char *what, lp_zip **out);
void lp_zip_close(lp_zip *z);

size_t lp_zip_count(const lp_zip *z);
/* Members in central directory order; NULL past the end. */
const lp_zip_entry *lp_zip_entry_at(const lp_zip *z, size_t i);
/* Exact name lookup; NULL if absent. */
const lp_zip_entry *lp_zip_find(const lp_zip *z, const char *name);

/* Writes the uncompressed contents of e (exactly e->size bytes) to dst, which
 * holds dst_len >= e->size bytes; checks the CRC-32. */
lp_status lp_zip_extract(const lp_zip *z, const lp_zip_entry *e, void *dst, size_t dst_len);

/* The uncompressed contents of e: for a stored member *data points into the
 * archive and *heap is NULL (its CRC is checked only if verify_crc); for a
 * deflated one the bytes are inflated into a malloc'd block returned in both
 * *data and *heap (the caller frees *heap). Members larger than limit bytes
 * are refused before anything is allocated. */
lp_status lp_zip_read(const lp_zip *z, const lp_zip_entry *e, size_t limit, int verify_crc, const unsigned char **data,
                      void **heap);

/* CRC-32 (IEEE, as zip uses it) of n bytes, continuing from crc (0 to start). */
uint32_t lp_crc32(uint32_t crc, const void *data, size_t n);

#endif
