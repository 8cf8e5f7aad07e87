/* What the hub checks before it keeps a bundle, and the root it holds.
 *
 * Invariants:
 *  1. Nothing becomes visible before every check passed: blobs are written
 *     (atomically, content-addressed) first, then the metadata row; a crash
 *     in between leaves an unreferenced blob and no bundle.
 *  2. A device delta is kept only when the adapter rebuilt as parent +
 *     decoded delta hashes (el_delta_digest) to the manifest's `result`; the
 *     rebuilt adapter is kept too (lossless, from zeros) so it can serve as
 *     the parent of the device's next delta.
 *  3. The held root only moves forward, one version at a time, through
 *     el_trust_root_update; the TLS revocation list follows it.
 *     Adapter releases carried as deltas are rebuilt and kept the same way.
 *  4. The hub holds no release key: it checks a release's signatures
 *     against the root's release keys, it never makes any.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/sha256.h"
#include "bundle.h"
#include "delta.h"
#include "hub.h"
#include "trust.h"

#define ROOT_FILE_MAX (1u << 20)

int64_t el_hub_now(void)
{
    return el_wall_now();
}

static int64_t wall_clock(void)
{
    return el_hub_now();
}

/* Reads a whole blob into a new buffer. */
static int read_blob(el_hub *hub, const char *sha, uint8_t **out, size_t *len, el_error *err)
{
    uint64_t size;
    int rc = hub->store->ops->blob_size(hub->store, sha, &size, err);
    if (rc)
        return rc;
    if (size > SIZE_MAX - 1 || size > (uint64_t)hub->body_max * 4)
        return el_error_set(err, EL_EINPUT, "blob %s is too large", sha);
    *out = el_malloc((size_t)size + 1);
    if (!*out)
        return el_error_set(err, EL_ENOMEM, "out of memory for blob %s", sha);
    if ((rc = hub->store->ops->blob_read(hub->store, sha, 0, (size_t)size, *out, err)) != 0) {
        el_free(*out);
        *out = NULL;
        return rc;
    }
    *len = (size_t)size;
    return 0;
}

int el_hub_revoked_serials(el_hub *hub, const char ***out, size_t *n, el_error *err)
{
    pthread_mutex_lock(&hub->root_lock);
    size_t count = hub->root.n_revoked_serials;
    size_t each = sizeof hub->root.revoked_serials[0];
    const char **list = el_malloc(count * (sizeof *list + each) + 1);
    if (list) {
        char *text = (char *)(list + count);
        for (size_t i = 0; i < count; i++) {
            memcpy(text + i * each, hub->root.revoked_serials[i], each);
            list[i] = text + i * each;
        }
    }
    pthread_mutex_unlock(&hub->root_lock);
    if (!list)
        return el_error_set(err, EL_ENOMEM, "out of memory for the revocation list");
    *out = list;
    *n = count;
    return 0;
}

/* Adopts stored roots newer than the held one, in order. */
static int catch_up_roots(el_hub *hub, el_error *err)
{
    for (;;) {
        int64_t version = hub->root.version + 1;
        char blob[EL_HUB_ID_MAX];
        int rc = hub->store->ops->root_get(hub->store, &version, blob, NULL);
        if (rc == EL_ENOTFOUND)
            return 0;
        if (rc)
            return el_error_set(err, rc, "cannot read stored root %lld", (long long)version);
        uint8_t *bytes = NULL;
        size_t len = 0;
        if ((rc = read_blob(hub, blob, &bytes, &len, err)) != 0)
            return rc;
        el_bundle b;
        el_bundle_init(&b);
        el_manifest_root next;
        memset(&next, 0, sizeof next);
        el_trust_state in = {0}, out;
        rc = el_bundle_parse(bytes, len, &b, err);
        if (!rc)
            rc = el_trust_root_update(&hub->root, &b, wall_clock(), &in, &next, &out, err);
        el_bundle_finish(&b);
        el_free(bytes);
        if (rc)
            return el_error_prefix(err, "stored root %lld", (long long)version);
        el_manifest_root_finish(&hub->root);
        hub->root = next;
    }
}

int el_hub_init(el_hub *hub, el_hub_store *store, const char *ca_path,
                const char *root_path, el_error *err)
{
    memset(hub, 0, sizeof *hub);
    pthread_mutex_init(&hub->root_lock, NULL);
    hub->store = store;
    hub->body_max = 64u << 20;
    hub->request_timeout_ms = 30000;
    hub->idle_timeout_ms = 5000;
    el_crypto_cert_info info;
    uint8_t *bytes = NULL;
    size_t len = 0;
    el_bundle b;
    el_bundle_init(&b);
    int rc = el_crypto_cert_load(ca_path, &hub->ca, err);
    if (!rc && el_crypto_cert_share(hub->ca))
        rc = el_error_set(err, EL_EINPUT, "%s: the CA key is not a P-256 key", ca_path);
    if (!rc)
        rc = el_crypto_cert_get_info(hub->ca, &info, err);
    if (rc)
        goto out;
    rc = el_fs_read_file(root_path, ROOT_FILE_MAX, &bytes, &len, err);
    if (!rc)
        rc = el_bundle_parse(bytes, len, &b, err);
    if (!rc) {
        el_trust_state in = {0}, out;
        rc = el_trust_root_bootstrap(&b, info.fingerprint, wall_clock(), &in, &hub->root, &out,
                                     err);
    }
    if (rc) {
        el_error_prefix(err, "%s", root_path);
        goto out;
    }
    char sha[EL_HUB_ID_MAX];
    int64_t version = hub->root.version;
    char held[EL_HUB_ID_MAX];
    if ((rc = store->ops->blob_put(store, bytes, len, sha, err)) != 0)
        goto out;
    if (store->ops->root_get(store, &version, held, NULL) == EL_ENOTFOUND &&
        (rc = store->ops->root_put(store, hub->root.version, sha, err)) != 0)
        goto out;
    rc = catch_up_roots(hub, err);
out:
    el_bundle_finish(&b);
    el_free(bytes);
    return rc;
}

void el_hub_finish(el_hub *hub)
{
    el_manifest_root_finish(&hub->root);
    el_crypto_cert_destroy(hub->ca);
    hub->ca = NULL;
    pthread_mutex_destroy(&hub->root_lock);
}

/* The adapter a delta was made against: NULL (zeros) when the manifest's
 * parent is empty or the digest of zeros shaped like DELTA; else a stored
 * rebuilt adapter. */
static int load_parent(el_hub *hub, const char *parent_digest, const el_delta_set *delta,
                       el_delta_set *parent, int *have_parent, el_error *err)
{
    *have_parent = 0;
    if (!parent_digest[0])
        return 0;
    char blob[EL_HUB_ID_MAX];
    int rc = hub->store->ops->adapter_get(hub->store, parent_digest, blob, NULL);
    if (rc == EL_ENOTFOUND) {
        el_delta_set zeros = {0};
        char digest[65];
        rc = 0;
        for (size_t i = 0; i < delta->n && !rc; i++)
            rc = el_delta_set_add(&zeros, delta->tensors[i].name, delta->tensors[i].ndim,
                                  delta->tensors[i].shape, NULL, err);
        if (!rc)
            rc = el_delta_digest(&zeros, digest, err);
        el_delta_set_finish(&zeros);
        if (rc)
            return rc;
        if (!strcmp(digest, parent_digest))
            return 0;
        return el_error_set_tag(err, EL_EPOLICY, "unknown_parent",
                                "the hub does not hold parent adapter %s", parent_digest);
    }
    if (rc)
        return el_error_set(err, rc, "cannot look up parent adapter %s", parent_digest);
    uint8_t *bytes = NULL;
    size_t len = 0;
    if ((rc = read_blob(hub, blob, &bytes, &len, err)) != 0)
        return rc;
    el_delta_limits limits;
    el_delta_limits_default(&limits);
    int encoding;
    rc = el_delta_decode(bytes, len, &limits, parent, &encoding, err);
    el_free(bytes);
    if (rc)
        return el_error_prefix(err, "stored parent adapter %s", parent_digest);
    *have_parent = 1;
    return 0;
}

/* Rebuilds the adapter of a verified delta, checks it against RESULT and
 * encodes it lossless into *ENCODED (el_free'd by the caller), which the
 * store records as RESULT's adapter with the bundle or release row
 * (invariant 2). */
static int rebuild_adapter(el_hub *hub, const el_bundle *b, const el_manifest *m,
                           uint8_t **encoded, size_t *encoded_len, el_error *err)
{
    el_delta_limits limits;
    el_delta_limits_default(&limits);
    el_delta_set delta = {0}, parent = {0}, result = {0};
    int encoding, have_parent = 0;
    char digest[65];
    *encoded = NULL;
    *encoded_len = 0;
    int rc = el_delta_decode(b->payload, b->payload_len, &limits, &delta, &encoding, err);
    if (rc)
        goto out;
    const char *name = el_delta_encoding_name(encoding);
    if (!name || strcmp(name, m->payload_encoding)) {
        rc = el_error_set(err, EL_EINPUT, "payload encoding is %s, manifest says %s",
                          name ? name : "unknown", m->payload_encoding);
        goto out;
    }
    if ((rc = load_parent(hub, m->parent, &delta, &parent, &have_parent, err)) != 0)
        goto out;
    if ((rc = el_delta_apply(have_parent ? &parent : NULL, &delta, &result, err)) != 0)
        goto out;
    if ((rc = el_delta_digest(&result, digest, err)) != 0)
        goto out;
    if (strcmp(digest, m->result)) {
        rc = el_error_set_tag(err, EL_EINPUT, "result_mismatch",
                              "rebuilt adapter hashes to %s, manifest result is %s", digest,
                              m->result);
        goto out;
    }
    /* the hub's own copy, written once per upload and read back as the
     * next delta's parent: zstd level 1 (~5x faster to write than the
     * level 9 of bundles that travel) */
    rc = el_delta_encode_level(&result, NULL, EL_DELTA_EXACT, 1, encoded, encoded_len, err);
out:
    el_delta_set_finish(&delta);
    el_delta_set_finish(&parent);
    el_delta_set_finish(&result);
    return rc;
}

int el_hub_accept_delta(el_hub *hub, const uint8_t *bytes, size_t len, const char *id,
                        const char *device, el_hub_bundle_rec *rec, int *created,
                        el_error *err)
{
    el_bundle b;
    el_manifest m;
    el_crypto_cert_info signer;
    uint8_t *adapter = NULL;
    size_t adapter_len = 0;
    el_bundle_init(&b);
    memset(&m, 0, sizeof m);
    memset(rec, 0, sizeof *rec);
    *created = 0;
    int rc = el_bundle_parse(bytes, len, &b, err);
    if (rc)
        goto out;
    if (id && strcmp(id, b.id)) {
        rc = el_error_set(err, EL_EINPUT, "bundle id is %s, not %s as the path says", b.id, id);
        goto out;
    }
    /* idempotent: the same bytes already held for the same device are not
     * checked again (they were when first stored) */
    el_hub_bundle_rec held;
    char sha[EL_HUB_ID_MAX];
    el_sha256_hex(bytes, len, sha);
    if (hub->store->ops->bundle_get(hub->store, b.id, &held, NULL) == 0 &&
        !strcmp(held.blob, sha) && (!device || !strcmp(held.device, device))) {
        *rec = held;
        goto out;
    }
    el_trust_state in = {0}, state;
    pthread_mutex_lock(&hub->root_lock);
    rc = el_trust_device_delta(&hub->root, hub->ca, &b, wall_clock(), hub->body_max, &in, &m,
                               &signer, &state, err);
    pthread_mutex_unlock(&hub->root_lock);
    if (rc)
        goto out;
    if (device && strcmp(signer.cn, device)) {
        rc = el_error_set_tag(err, EL_ETRUST, "not_signer",
                              "bundle %s is signed by device %s, not by the connected %s", b.id,
                              signer.cn, device);
        goto out;
    }
    if ((rc = rebuild_adapter(hub, &b, &m, &adapter, &adapter_len, err)) != 0)
        goto out;
    snprintf(rec->id, sizeof rec->id, "%s", b.id);
    snprintf(rec->device, sizeof rec->device, "%s", signer.cn);
    snprintf(rec->parent, sizeof rec->parent, "%s", m.parent);
    snprintf(rec->result, sizeof rec->result, "%s", m.result);
    snprintf(rec->base, sizeof rec->base, "%s", m.base);
    snprintf(rec->encoding, sizeof rec->encoding, "%s", m.payload_encoding);
    rec->size = len;
    rec->received = wall_clock();
    rc = hub->store->ops->bundle_put(hub->store, rec, bytes, len, adapter, adapter_len, created,
                                     err);
out:
    el_free(adapter);
    el_manifest_finish(&m);
    el_bundle_finish(&b);
    return rc;
}

int el_hub_accept_release(el_hub *hub, const uint8_t *bytes, size_t len, const char *id,
                          el_hub_release_rec *rec, int *created, el_error *err)
{
    el_bundle b;
    el_manifest m;
    uint8_t *adapter = NULL;
    size_t adapter_len = 0;
    el_bundle_init(&b);
    memset(&m, 0, sizeof m);
    memset(rec, 0, sizeof *rec);
    *created = 0;
    int rc = el_bundle_parse(bytes, len, &b, err);
    if (rc)
        goto out;
    if (id && strcmp(id, b.id)) {
        rc = el_error_set(err, EL_EINPUT, "bundle id is %s, not %s as the path says", b.id, id);
        goto out;
    }
    /* invariant 4: count distinct, unrevoked release keys whose signature
     * verifies; signatures are checked before the JSON is parsed */
    pthread_mutex_lock(&hub->root_lock);
    const el_manifest_root *root = &hub->root;
    int counted[EL_MANIFEST_KEYS_MAX] = {0};
    int valid = 0;
    for (size_t i = 0; i < b.n_sigs && !rc; i++) {
        for (size_t k = 0; k < root->n_release_keys; k++) {
            if (strcmp(root->release_keys[k].id, b.sigs[i].key_id) || counted[k] ||
                el_manifest_root_key_revoked(root, b.sigs[i].key_id))
                continue;
            rc = el_bundle_verify_sig(&b, i, root->release_keys[k].key, err);
            if (!rc) {
                counted[k] = 1;
                valid++;
            }
            break;
        }
    }
    int threshold = root->release_threshold;
    pthread_mutex_unlock(&hub->root_lock);
    if (rc)
        goto out;
    if (valid < threshold) {
        rc = el_error_set_tag(err, EL_ETRUST, "threshold_not_met",
                              "release %s has %d valid release-key signatures, %d needed", b.id,
                              valid, threshold);
        goto out;
    }
    if ((rc = el_manifest_parse(b.header, b.header_len, hub->body_max, &m, err)) != 0)
        goto out;
    if (m.type != EL_MANIFEST_RELEASE) {
        rc = el_error_set(err, EL_EINPUT, "bundle %s is not a release", b.id);
        goto out;
    }
    if (m.expires <= wall_clock()) {
        rc = el_error_set_tag(err, EL_ETRUST, "expired", "release %s has expired", b.id);
        goto out;
    }
    if ((rc = el_bundle_check_payload(&b, m.payload_sha256, m.payload_size, err)) != 0)
        goto out;
    /* an adapter the fleet ships becomes a known parent: devices that
     * install it upload their next deltas against it (invariant 2) */
    if (m.kind == EL_KIND_ADAPTER && el_delta_encoding_parse(m.payload_encoding) > 0) {
        if ((rc = rebuild_adapter(hub, &b, &m, &adapter, &adapter_len, err)) != 0)
            goto out;
        snprintf(rec->adapter, sizeof rec->adapter, "%s", m.result);
    }
    snprintf(rec->id, sizeof rec->id, "%s", b.id);
    snprintf(rec->kind, sizeof rec->kind, "%s", el_manifest_kind_name(m.kind));
    snprintf(rec->target, sizeof rec->target, "%s", m.target);
    rec->counter = m.counter;
    rec->expires = m.expires;
    rec->size = len;
    rec->received = wall_clock();
    rc = hub->store->ops->release_put(hub->store, rec, bytes, len, adapter, adapter_len, created,
                                      err);
out:
    el_free(adapter);
    el_manifest_finish(&m);
    el_bundle_finish(&b);
    return rc;
}

int el_hub_accept_root(el_hub *hub, const uint8_t *bytes, size_t len, int64_t version,
                       el_error *err)
{
    el_bundle b;
    el_manifest_root next;
    memset(&next, 0, sizeof next);
    el_bundle_init(&b);
    int rc = el_bundle_parse(bytes, len, &b, err);
    if (rc)
        goto out;
    el_trust_state in = {0}, state;
    pthread_mutex_lock(&hub->root_lock);
    rc = el_trust_root_update(&hub->root, &b, wall_clock(), &in, &next, &state, err);
    if (!rc && next.version != version)
        rc = el_error_set(err, EL_EINPUT, "root is version %lld, not %lld as the path says",
                          (long long)next.version, (long long)version);
    char sha[EL_HUB_ID_MAX];
    if (!rc)
        rc = hub->store->ops->blob_put(hub->store, bytes, len, sha, err);
    if (!rc)
        rc = hub->store->ops->root_put(hub->store, version, sha, err);
    if (!rc) {
        el_manifest_root_finish(&hub->root);
        hub->root = next;
        memset(&next, 0, sizeof next);
    }
    pthread_mutex_unlock(&hub->root_lock);
    if (!rc && hub->tls) {
        const char **serials;
        size_t n;
        if ((rc = el_hub_revoked_serials(hub, &serials, &n, err)) == 0) {
            rc = el_tls_ctx_set_revoked(hub->tls, serials, n, err);
            el_free(serials);
        }
    }
out:
    el_manifest_root_finish(&next);
    el_bundle_finish(&b);
    return rc;
}
