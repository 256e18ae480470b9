/* Shared by the libFuzzer targets: reads every byte of every tensor and every
 * metadata string of an opened file, so that the sanitizers see any view that
 * points outside its memory. */
#ifndef LP_FUZZ_COMMON_H
#define LP_FUZZ_COMMON_H

#include <stdint.h>
#include <string.h>

#include "../src/io/tensor_file.h"

static inline void fuzz_touch(const lp_tensor_file *f) {
    volatile unsigned sink = 0;
    for (size_t i = 0; i < lp_tensor_file_count(f); i++) {
        const lp_tensor *t = lp_tensor_file_at(f, i);
        const unsigned char *d = t->data;
        for (size_t k = 0; k < t->nbytes; k++) sink += d[k];
        sink += (unsigned)strlen(t->name);
        /* Views must be aligned to their element size for typed reads: both
         * readers copy data that the file places misaligned. */
        if ((uintptr_t)t->data % lp_dtype_size(t->dtype) != 0) __builtin_trap();
        float x;
        if (lp_tensor_numel(t) > 0 && lp_tensor_read_f32(t, lp_tensor_numel(t) - 1, 1, &x) == LP_OK)
            sink += x > 0;
        if (lp_tensor_file_find(f, t->name) != t) __builtin_trap(); /* lookup must find every name */
    }
    for (size_t i = 0; i < lp_tensor_file_meta_count(f); i++) {
        const char *k, *v;
        lp_tensor_file_meta_at(f, i, &k, &v);
        sink += (unsigned)(strlen(k) + strlen(v));
    }
    (void)sink;
}

#endif
