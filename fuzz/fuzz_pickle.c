/* libFuzzer target: the restricted unpickler. The input is a data.pkl; it is
 * wrapped in a PyTorch-style zip archive "arc/" whose storages arc/data/0 ..
 * arc/data/3 hold 64 bytes each (16 floats, 32 halves, 8 longs), so that
 * pickles referring to them build real tensors. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/io/zip.h"
#include "fuzz_common.h"

typedef struct {
    unsigned char *p;
    size_t n;
} out;

static void put(out *o, const void *d, size_t n) {
    memcpy(o->p + o->n, d, n);
    o->n += n;
}

static void le(out *o, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) o->p[o->n++] = (unsigned char)(v >> (8 * i));
}

static void zeros(out *o, int bytes) {
    memset(o->p + o->n, 0, (size_t)bytes);
    o->n += (size_t)bytes;
}

/* Writes a zip of stored members (local headers, central directory, EOCD). */
static size_t zip_stored(unsigned char *dst, const char *const *names, const unsigned char *const *data,
                         const size_t *len, int n) {
    out o = {dst, 0};
    size_t offs[8];
    for (int i = 0; i < n; i++) {
        offs[i] = o.n;
        le(&o, 0x04034b50u, 4);
        le(&o, 20, 2);
        zeros(&o, 2 + 2 + 4);
        le(&o, lp_crc32(0, data[i], len[i]), 4);
        le(&o, len[i], 4);
        le(&o, len[i], 4);
        size_t pad = (64 - (o.n + 4 + strlen(names[i]) + 4) % 64) % 64; /* data 64-aligned, as PyTorch does */
        le(&o, strlen(names[i]), 2);
        le(&o, 4 + pad, 2);
        put(&o, names[i], strlen(names[i]));
        le(&o, 0x4246, 2); /* "FB" */
        le(&o, pad, 2);
        zeros(&o, (int)pad);
        put(&o, data[i], len[i]);
    }
    size_t cd = o.n;
    for (int i = 0; i < n; i++) {
        le(&o, 0x02014b50u, 4);
        le(&o, 20, 2);
        le(&o, 20, 2);
        zeros(&o, 2 + 2 + 4);
        le(&o, lp_crc32(0, data[i], len[i]), 4);
        le(&o, len[i], 4);
        le(&o, len[i], 4);
        le(&o, strlen(names[i]), 2);
        zeros(&o, 2 + 2 + 2 + 2 + 4);
        le(&o, offs[i], 4);
        put(&o, names[i], strlen(names[i]));
    }
    size_t cds = o.n - cd;
    le(&o, 0x06054b50u, 4);
    le(&o, 0, 4);
    le(&o, (uint64_t)n, 2);
    le(&o, (uint64_t)n, 2);
    le(&o, cds, 4);
    le(&o, cd, 4);
    le(&o, 0, 2);
    return o.n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 20)) return 0;
    static unsigned char storage[4][64];
    for (int s = 0; s < 4; s++)
        for (int i = 0; i < 64; i++) storage[s][i] = (unsigned char)(s * 64 + i);
    const char *names[6] = {"arc/data.pkl", "arc/byteorder", "arc/data/0", "arc/data/1", "arc/data/2", "arc/data/3"};
    const unsigned char *mem[6] = {data,      (const unsigned char *)"little", storage[0], storage[1], storage[2],
                                   storage[3]};
    size_t len[6] = {size, 6, 64, 64, 64, 64};
    unsigned char *zip = malloc(size + 4096);
    if (!zip) return 0;
    size_t n = zip_stored(zip, names, mem, len, 6);
    lp_tensor_file *f;
    if (lp_tensor_file_open_memory(zip, n, "fuzz.pt", &f) == LP_OK) {
        fuzz_touch(f);
        lp_tensor_file_close(f);
    }
    free(zip);
    return 0;
}
