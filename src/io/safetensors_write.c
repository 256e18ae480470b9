#include "safetensors_write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Appends s as a JSON string literal. */
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

lp_status lp_safetensors_write(const char *path, const lp_st_out_tensor *tensors, int n, const char *const *meta_keys,
                               const char *const *meta_values, int n_meta) {
    /* the header first, into memory, to know its length */
    char *hdr = NULL;
    size_t hlen = 0;
    FILE *h = open_memstream(&hdr, &hlen);
    if (!h) return lp_fail(LP_ERR_NOMEM, "out of memory writing %s", path);
    fputc('{', h);
    fputs("\"__metadata__\":{", h);
    for (int i = 0; i < n_meta; i++) {
        if (i) fputc(',', h);
        json_string(h, meta_keys[i]);
        fputc(':', h);
        json_string(h, meta_values[i]);
    }
    fputc('}', h);
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t bytes = 4;
        fputc(',', h);
        json_string(h, tensors[i].name);
        fputs(":{\"dtype\":\"F32\",\"shape\":[", h);
        for (int d = 0; d < tensors[i].ndim; d++) {
            fprintf(h, d ? ",%lld" : "%lld", (long long)tensors[i].shape[d]);
            bytes *= (uint64_t)tensors[i].shape[d];
        }
        fprintf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + bytes));
        off += bytes;
    }
    fputc('}', h);
    for (long pos = ftell(h); pos % 8; pos++) fputc(' ', h); /* data starts 8-byte aligned */
    if (fclose(h) != 0) {
        free(hdr);
        return lp_fail(LP_ERR_NOMEM, "out of memory writing %s", path);
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(hdr);
        return lp_fail(LP_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(hdr, 1, hlen, f) == hlen;
    for (int i = 0; ok && i < n; i++) {
        size_t cnt = 1;
        for (int d = 0; d < tensors[i].ndim; d++) cnt *= (size_t)tensors[i].shape[d];
        ok = fwrite(tensors[i].data, 4, cnt, f) == cnt;
    }
    free(hdr);
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return lp_fail(LP_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    return LP_OK;
}
