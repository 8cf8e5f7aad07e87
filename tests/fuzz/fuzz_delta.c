/* libFuzzer target: the delta container decoder, then the rebuild and the
 * digest of whatever it accepted. Limits are small so the fuzzer explores
 * the checks rather than allocating. */
#include <stdint.h>

#include "delta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    el_delta_limits lim = {.max_tensors = 64, .max_elements = 1 << 18};
    el_delta_set delta = {0}, rebuilt = {0};
    int enc;
    el_error err;
    if (el_delta_decode(data, size, &lim, &delta, &enc, &err) == 0) {
        char hex[65];
        if (el_delta_apply(NULL, &delta, &rebuilt, &err) == 0)
            el_delta_digest(&rebuilt, hex, &err);
        el_delta_set_finish(&rebuilt);
        el_delta_set_finish(&delta);
    }
    return 0;
}
