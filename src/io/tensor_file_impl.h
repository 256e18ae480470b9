/* Internals of lp_tensor_file shared by the format readers (safetensors.c,
 * torch_pickle.c). Not for model code. */
#ifndef LP_TENSOR_FILE_IMPL_H
#define LP_TENSOR_FILE_IMPL_H

#include "tensor_file.h"

struct lp_tensor_file {
    char *path;
    lp_file_format format;
    const unsigned char *map; /* whole file, read-only mmap */
    size_t map_len;
    lp_tensor *tensors;       /* sorted by name after lp_tf_finish */
    size_t count, cap;
    char **meta_keys, **meta_values;
    size_t nmeta, meta_cap;
    void **owned;             /* heap blocks freed at close (names, copied data) */
    size_t nowned, owned_cap;
    struct lp_tensor_file *base; /* file whose data the tensors view (closed with this one), or NULL */
};

/* Allocates n bytes owned by f (freed at close). */
void *lp_tf_alloc(lp_tensor_file *f, size_t n);
/* Copies s (len bytes) into f-owned memory, NUL-terminated. */
char *lp_tf_strdup(lp_tensor_file *f, const char *s, size_t len);
/* Appends a tensor (its name must already be f-owned). */
lp_status lp_tf_add(lp_tensor_file *f, const lp_tensor *t);
lp_status lp_tf_add_meta(lp_tensor_file *f, const char *key, size_t klen, const char *value, size_t vlen);
/* Sorts the tensors by name and rejects duplicates. */
lp_status lp_tf_finish(lp_tensor_file *f);

/* Format readers: fill f from f->map. */
lp_status lp_safetensors_parse(lp_tensor_file *f);
lp_status lp_torch_zip_parse(lp_tensor_file *f);

#endif
