/* libFuzzer target: the manifest and root-metadata JSON readers and the
 * RFC 3339 time parser over arbitrary header bytes. */
#include <stdint.h>
#include <string.h>

#include "base/alloc.h"
#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    el_manifest m;
    el_error err;
    if (el_manifest_parse(data, size, (uint64_t)1 << 40, &m, &err) == 0) {
        el_manifest_root root;
        if (m.type == EL_MANIFEST_ROOT && el_manifest_root_parse(&m, &root, &err) == 0) {
            el_manifest_root_key_revoked(&root, "00");
            el_manifest_root_serial_revoked(&root, "00");
            el_manifest_root_finish(&root);
        }
        el_manifest_finish(&m);
    }
    uint8_t *der;
    size_t der_len;
    if (el_manifest_peek_cert(data, size, &der, &der_len, &err) == 0)
        el_free(der);
    if (size < 64) {
        char s[64];
        memcpy(s, data, size);
        s[size] = '\0';
        int64_t t;
        el_manifest_time_parse(s, &t);
    }
    return 0;
}
