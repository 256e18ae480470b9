/* PyTorch zip checkpoint reader: being written (issue 5). */
#include "tensor_file_impl.h"

lp_status lp_torch_zip_parse(lp_tensor_file *f) {
    return lp_fail(LP_ERR_UNSUPPORTED, "%s: PyTorch zip checkpoints are not supported yet", f->path);
}
