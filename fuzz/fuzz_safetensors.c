/* libFuzzer target: the safetensors reader on arbitrary bytes (inputs that do
 * not look like safetensors are skipped: fuzz_zip and fuzz_pickle cover the
 * other format). */
#include <stdint.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 9 || data[8] != '{') return 0;
    lp_tensor_file *f;
    if (lp_tensor_file_open_memory(data, size, "fuzz.safetensors", &f) != LP_OK) return 0;
    fuzz_touch(f);
    lp_tensor_file_close(f);
    return 0;
}
