/* libFuzzer target: the .elb framing (in memory and streamed from a file
 * descriptor), signature checks and the release decision over arbitrary
 * bytes. Must never crash, leak or read out of bounds. */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/alloc.h"
#include "bundle.h"
#include "manifest.h"
#include "trust.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static el_crypto_key *key;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!key && el_crypto_key_generate(&key, NULL) != 0)
        return 0;
    el_bundle b;
    el_error err;
    if (el_bundle_parse(data, size, &b, &err) == 0) {
        for (size_t i = 0; i < b.n_sigs; i++)
            el_bundle_verify_sig(&b, i, key, &err);
        el_bundle_check_payload(&b, "0000000000000000000000000000000000000000000000000000000000000000",
                                b.payload_len, &err);
        /* A root made of the bundle itself, as enrollment would try. */
        el_trust_state in = {0}, out;
        el_manifest_root root;
        if (el_trust_root_bootstrap(&b, NULL, 0, &in, &root, &out, &err) == 0)
            el_manifest_root_finish(&root);
        uint8_t *again;
        size_t len;
        if (el_bundle_serialize(&b, &again, &len, &err) == 0)
            el_free(again);
    }
    int fd = memfd_create("fuzz", 0);
    if (fd >= 0) {
        if (write(fd, data, size) == (ssize_t)size && lseek(fd, 0, SEEK_SET) == 0) {
            el_bundle s;
            if (el_bundle_read_head_fd(fd, &s, &err) == 0) {
                el_bundle_stream_payload(fd, "0000000000000000000000000000000000000000000000000000000000000000",
                                         size - s.head_len, NULL, NULL, &err);
                el_bundle_finish(&s);
            }
        }
        close(fd);
    }
    return 0;
}
