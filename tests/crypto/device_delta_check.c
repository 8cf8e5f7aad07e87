/* Helper of test_device_trust.sh: verifies a device delta offline the way
 * the hub does (el_trust_device_delta with the fleet root and CA) and
 * rebuilds its adapter (parent + decoded delta) against "result".
 * usage: device_delta_check ROOT.elb CA.crt DELTA.elb EXPECTED_CN
 * Prints the trust code and exits 0 (accepted), 3 (refused) or 2 (error). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "bundle.h"
#include "delta.h"
#include "manifest.h"
#include "trust.h"

static int fail(const el_error *err)
{
    printf("%s: %s\n", err->tag[0] ? err->tag : "error", err->msg);
    return err->code == EL_ETRUST ? 3 : 2;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s ROOT.elb CA.crt DELTA.elb EXPECTED_CN\n", argv[0]);
        return 2;
    }
    el_error err;
    el_error_clear(&err);
    uint8_t *root_bytes = NULL, *bytes = NULL;
    size_t root_len, len;
    el_bundle rb, b;
    el_bundle_init(&rb);
    el_bundle_init(&b);
    el_manifest rm = {0}, m = {0};
    el_manifest_root root = {0};
    el_crypto_cert *ca = NULL;
    el_crypto_cert_info signer;
    el_trust_state in = {0}, out;
    el_delta_set delta = {0}, rebuilt = {0};
    el_delta_limits lim;
    el_delta_limits_default(&lim);
    int encoding, status = 0;
    char digest[65];
    if (el_fs_read_file(argv[1], 1 << 20, &root_bytes, &root_len, &err) ||
        el_bundle_parse(root_bytes, root_len, &rb, &err) ||
        el_manifest_parse(rb.header, rb.header_len, 0, &rm, &err) ||
        el_manifest_root_parse(&rm, &root, &err) ||
        el_crypto_cert_load(argv[2], &ca, &err) ||
        el_fs_read_file(argv[3], 1 << 26, &bytes, &len, &err) ||
        el_bundle_parse(bytes, len, &b, &err) ||
        el_trust_device_delta(&root, ca, &b, (int64_t)time(NULL), 1 << 26, &in, &m, &signer,
                              &out, &err)) {
        status = fail(&err);
        goto done;
    }
    /* a first version only: its parent is zeros */
    if (m.parent[0] || el_delta_decode(b.payload, b.payload_len, &lim, &delta, &encoding,
                                       &err) ||
        el_delta_apply(NULL, &delta, &rebuilt, &err) || el_delta_digest(&rebuilt, digest, &err)) {
        if (m.parent[0])
            el_error_set(&err, EL_EINPUT, "has a parent; this check rebuilds first versions");
        status = fail(&err);
        goto done;
    }
    if (strcmp(digest, m.result) || strcmp(signer.cn, argv[4])) {
        printf("mismatch: result %s vs %s, signer %s\n", digest, m.result, signer.cn);
        status = 2;
        goto done;
    }
    printf("accepted: signer %s, result %s\n", signer.cn, m.result);
done:
    el_delta_set_finish(&delta);
    el_delta_set_finish(&rebuilt);
    el_manifest_finish(&m);
    el_manifest_finish(&rm);
    el_manifest_root_finish(&root);
    el_bundle_finish(&b);
    el_bundle_finish(&rb);
    el_crypto_cert_destroy(ca);
    el_free(bytes);
    el_free(root_bytes);
    return status;
}
