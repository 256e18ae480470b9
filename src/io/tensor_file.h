/* An opened weight or data file (safetensors, or a PyTorch zip checkpoint),
 * exposing its tensors as zero-copy lp_tensor views and its string metadata.
 * The views stay valid until lp_tensor_file_close. */
#ifndef LP_TENSOR_FILE_H
#define LP_TENSOR_FILE_H

#include "tensor.h"

typedef struct lp_tensor_file lp_tensor_file;

typedef enum { LP_FORMAT_SAFETENSORS, LP_FORMAT_TORCH_ZIP } lp_file_format;

/* Opens path, detecting the format from its first bytes. */
lp_status lp_tensor_file_open(const char *path, lp_tensor_file **out);
/* The same for len bytes at data, which are copied (the caller keeps data);
 * name stands for the path in messages and lp_tensor_file_path. */
lp_status lp_tensor_file_open_memory(const void *data, size_t len, const char *name, lp_tensor_file **out);
void lp_tensor_file_close(lp_tensor_file *f);

const char *lp_tensor_file_path(const lp_tensor_file *f);
lp_file_format lp_tensor_file_format(const lp_tensor_file *f);
size_t lp_tensor_file_count(const lp_tensor_file *f);
/* Tensors in name order. */
const lp_tensor *lp_tensor_file_at(const lp_tensor_file *f, size_t i);
/* Exact name lookup (O(log n)); NULL if absent. */
const lp_tensor *lp_tensor_file_find(const lp_tensor_file *f, const char *name);
/* Metadata string value for key, or NULL. */
const char *lp_tensor_file_meta(const lp_tensor_file *f, const char *key);
size_t lp_tensor_file_meta_count(const lp_tensor_file *f);
void lp_tensor_file_meta_at(const lp_tensor_file *f, size_t i, const char **key, const char **value);

/* Finds name or fails with LP_ERR_MISSING naming the tensor and the file. */
lp_status lp_tensor_file_get(const lp_tensor_file *f, const char *name, const lp_tensor **out);

#endif
