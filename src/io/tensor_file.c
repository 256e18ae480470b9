#include "tensor_file_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void *lp_tf_alloc(lp_tensor_file *f, size_t n) {
    if (f->nowned == f->owned_cap) {
        size_t nc = f->owned_cap ? 2 * f->owned_cap : 64;
        void **no = realloc(f->owned, nc * sizeof *no);
        if (!no) return NULL;
        f->owned = no;
        f->owned_cap = nc;
    }
    void *m = malloc(n ? n : 1);
    if (m) f->owned[f->nowned++] = m;
    return m;
}

char *lp_tf_strdup(lp_tensor_file *f, const char *s, size_t len) {
    char *d = lp_tf_alloc(f, len + 1);
    if (!d) return NULL;
    memcpy(d, s, len);
    d[len] = 0;
    return d;
}

lp_status lp_tf_add(lp_tensor_file *f, const lp_tensor *t) {
    if (f->count == f->cap) {
        size_t nc = f->cap ? 2 * f->cap : 256;
        lp_tensor *nt = realloc(f->tensors, nc * sizeof *nt);
        if (!nt) return lp_fail(LP_ERR_NOMEM, "%s: out of memory listing tensors", f->path);
        f->tensors = nt;
        f->cap = nc;
    }
    f->tensors[f->count++] = *t;
    return LP_OK;
}

lp_status lp_tf_add_meta(lp_tensor_file *f, const char *key, size_t klen, const char *value, size_t vlen) {
    if (f->nmeta == f->meta_cap) {
        size_t nc = f->meta_cap ? 2 * f->meta_cap : 32;
        char **nk = realloc(f->meta_keys, nc * sizeof *nk);
        if (!nk) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", f->path);
        f->meta_keys = nk;
        char **nv = realloc(f->meta_values, nc * sizeof *nv);
        if (!nv) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", f->path);
        f->meta_values = nv;
        f->meta_cap = nc;
    }
    char *k = lp_tf_strdup(f, key, klen), *v = lp_tf_strdup(f, value, vlen);
    if (!k || !v) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", f->path);
    f->meta_keys[f->nmeta] = k;
    f->meta_values[f->nmeta++] = v;
    return LP_OK;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const lp_tensor *)a)->name, ((const lp_tensor *)b)->name);
}

lp_status lp_tf_finish(lp_tensor_file *f) {
    if (f->count) qsort(f->tensors, f->count, sizeof *f->tensors, cmp_tensor_name);
    for (size_t i = 1; i < f->count; i++)
        if (!strcmp(f->tensors[i - 1].name, f->tensors[i].name))
            return lp_fail(LP_ERR_FORMAT, "%s: tensor '%s' appears twice", f->path, f->tensors[i].name);
    return LP_OK;
}

/* Detects the format of f->map and parses it; closes f on failure. */
static lp_status parse_mapped(lp_tensor_file *f, const char *path, lp_tensor_file **out) {
    lp_status s;
    if (!f->path) {
        s = lp_fail(LP_ERR_NOMEM, "%s: out of memory", path);
    } else if (f->map_len >= 4 && !memcmp(f->map, "PK\x03\x04", 4)) {
        f->format = LP_FORMAT_TORCH_ZIP;
        s = lp_torch_zip_parse(f);
    } else if (f->map_len >= 9 && f->map[8] == '{') {
        f->format = LP_FORMAT_SAFETENSORS;
        s = lp_safetensors_parse(f);
    } else {
        s = lp_fail(LP_ERR_FORMAT, "%s: neither safetensors nor a PyTorch zip checkpoint (%zu bytes)", path, f->map_len);
    }
    if (s == LP_OK) s = lp_tf_finish(f);
    if (s != LP_OK) {
        lp_tensor_file_close(f);
        return s;
    }
    *out = f;
    return LP_OK;
}

lp_status lp_tensor_file_open(const char *path, lp_tensor_file **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return lp_fail(LP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return lp_fail(LP_ERR_IO, "%s: not a regular file", path);
    }
    lp_tensor_file *f = calloc(1, sizeof *f);
    if (!f) {
        close(fd);
        return lp_fail(LP_ERR_NOMEM, "%s: out of memory", path);
    }
    f->path = strdup(path);
    f->map_len = (size_t)st.st_size;
    if (f->map_len > 0) {
        void *m = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            lp_tensor_file_close(f);
            return lp_fail(LP_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
        }
        f->map = m;
    }
    close(fd);
    return parse_mapped(f, path, out);
}

lp_status lp_tensor_file_open_memory(const void *data, size_t len, const char *name, lp_tensor_file **out) {
    *out = NULL;
    lp_tensor_file *f = calloc(1, sizeof *f);
    if (!f) return lp_fail(LP_ERR_NOMEM, "%s: out of memory", name);
    f->path = strdup(name);
    f->map_len = len;
    if (len > 0) { /* an anonymous mapping, so that close() treats both alike */
        void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            lp_tensor_file_close(f);
            return lp_fail(LP_ERR_NOMEM, "%s: cannot map %zu bytes: %s", name, len, strerror(errno));
        }
        memcpy(m, data, len);
        mprotect(m, len, PROT_READ);
        f->map = m;
    }
    return parse_mapped(f, name, out);
}

void lp_tensor_file_close(lp_tensor_file *f) {
    if (!f) return;
    lp_tensor_file_close(f->base);
    if (f->map) munmap((void *)f->map, f->map_len);
    for (size_t i = 0; i < f->nowned; i++) free(f->owned[i]);
    free(f->owned);
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->path);
    free(f);
}

const char *lp_tensor_file_path(const lp_tensor_file *f) { return f->path; }
lp_file_format lp_tensor_file_format(const lp_tensor_file *f) { return f->format; }
size_t lp_tensor_file_count(const lp_tensor_file *f) { return f->count; }
const lp_tensor *lp_tensor_file_at(const lp_tensor_file *f, size_t i) { return i < f->count ? &f->tensors[i] : NULL; }

const lp_tensor *lp_tensor_file_find(const lp_tensor_file *f, const char *name) {
    size_t lo = 0, hi = f->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[mid].name, name);
        if (c == 0) return &f->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

lp_status lp_tensor_file_get(const lp_tensor_file *f, const char *name, const lp_tensor **out) {
    *out = lp_tensor_file_find(f, name);
    if (!*out) return lp_fail(LP_ERR_MISSING, "%s: tensor '%s' is missing", f->path, name);
    return LP_OK;
}

const char *lp_tensor_file_meta(const lp_tensor_file *f, const char *key) {
    for (size_t i = 0; i < f->nmeta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_values[i];
    return NULL;
}

size_t lp_tensor_file_meta_count(const lp_tensor_file *f) { return f->nmeta; }

void lp_tensor_file_meta_at(const lp_tensor_file *f, size_t i, const char **key, const char **value) {
    *key = i < f->nmeta ? f->meta_keys[i] : NULL;
    *value = i < f->nmeta ? f->meta_values[i] : NULL;
}
