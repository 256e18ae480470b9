/* libFuzzer target: the zip reader and inflate on arbitrary bytes: opens the
 * directory, looks every member up by name and reads it (inflating deflated
 * ones, at most 1 MiB each, with CRC checks). */
#include <stdint.h>
#include <stdlib.h>

#include "../src/io/zip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_zip *z;
    if (lp_zip_open(data, size, "fuzz.zip", &z) != LP_OK) return 0;
    volatile unsigned sink = 0;
    for (size_t i = 0; i < lp_zip_count(z); i++) {
        const lp_zip_entry *e = lp_zip_entry_at(z, i);
        if (lp_zip_find(z, e->name) != e) __builtin_trap(); /* names are unique, lookup must work */
        const unsigned char *d;
        void *heap;
        if (lp_zip_read(z, e, (size_t)1 << 20, 1, &d, &heap) != LP_OK) continue;
        for (uint64_t k = 0; k < e->size; k++) sink += d[k];
        free(heap);
    }
    (void)sink;
    lp_zip_close(z);
    return 0;
}
