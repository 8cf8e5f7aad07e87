/* Fleet trust decisions: roots, releases, device deltas.
 *
 * Invariants:
 *  1. Pure: inputs are bytes, the pinned root, the trust state and a clock
 *     value; the output is a verdict and a new state. No file, clock or
 *     registry access, so the device and the hub decide identically and tests
 *     set every input.
 *  2. On any refusal *out == *in: a refused bundle never moves a counter or
 *     the trusted time.
 *  3. Signatures are checked over the header as received before the JSON is
 *     parsed (roots: the old root's keys; releases: the release keys). Device
 *     deltas are the one exception: the signer's key is in the certificate
 *     inside the manifest, so only "cert" is read first, from a bounded
 *     strict parse, and nothing else is used until the signature verifies.
 *  4. Trusted time = max(clock, last trusted time); the last trusted time
 *     advances only to the creation time of fleet-signed metadata the device
 *     accepted, so a clock set back to 1970 neither breaks a device nor lets
 *     an expired release be replayed.
 *
 * Decision order for a release (first failure wins):
 *   duplicate_signer, revoked, bad_signature (by a known key),
 *   unknown_key / threshold_not_met, manifest parse, type, expired (root,
 *   then release), payload (oversize, truncated, bad_signature), replay /
 *   rollback, wrong_target, wrong_base.
 */
#include "trust.h"

#include <string.h>

#include "base/alloc.h"
#include "base/sha256.h"

int64_t el_trust_time(const el_trust_state *state, int64_t clock)
{
    return clock > state->last_time ? clock : state->last_time;
}

int el_trust_bucket(const char *device_id)
{
    uint8_t h[EL_SHA256_LEN];
    el_sha256(device_id, strlen(device_id), h);
    uint32_t v = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    return (int)(v % 100u);
}

static const el_manifest_key *find_key(const el_manifest_key *keys, size_t n,
                                       const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i].id, id) == 0)
            return &keys[i];
    return NULL;
}

/* Counts the distinct signatures of B that verify with one of KEYS. A key id
 * listed twice is refused ("duplicate_signer"), a key REVOKER revokes
 * ("revoked"), a known key whose signature fails ("bad_signature"). Unknown
 * ids are counted in *UNKNOWN and otherwise ignored (a rotation bundle
 * carries keys of two roots). */
static int count_sigs(const el_bundle *b, const el_manifest_key *keys, size_t n_keys,
                      const el_manifest_root *revoker, size_t *valid, size_t *unknown,
                      el_error *err)
{
    *valid = 0;
    *unknown = 0;
    for (size_t i = 0; i < b->n_sigs; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(b->sigs[i].key_id, b->sigs[j].key_id) == 0)
                return el_error_set_tag(err, EL_ETRUST, "duplicate_signer",
                                        "key %.16s signed twice; each key counts once",
                                        b->sigs[i].key_id);
    for (size_t i = 0; i < b->n_sigs; i++) {
        const char *id = b->sigs[i].key_id;
        if (revoker && el_manifest_root_key_revoked(revoker, id))
            return el_error_set_tag(err, EL_ETRUST, "revoked",
                                    "signing key %.16s is revoked by the root", id);
        const el_manifest_key *k = find_key(keys, n_keys, id);
        if (!k) {
            (*unknown)++;
            continue;
        }
        int rc = el_bundle_verify_sig(b, i, k->key, err);
        if (rc)
            return rc;
        (*valid)++;
    }
    return 0;
}

static int threshold_met(size_t valid, size_t unknown, int need, const char *what,
                         el_error *err)
{
    if (valid >= (size_t)need)
        return 0;
    if (valid == 0 && unknown > 0)
        return el_error_set_tag(err, EL_ETRUST, "unknown_key",
                                "no signature is by a known %s key", what);
    return el_error_set_tag(err, EL_ETRUST, "threshold_not_met",
                            "%zu valid %s signature(s), %d needed", valid, what, need);
}

static int check_expiry(int64_t expires, int64_t trusted, const char *what,
                        el_error *err)
{
    if (expires <= trusted) {
        char e[32], t[32];
        el_manifest_time_format(expires, e);
        el_manifest_time_format(trusted, t);
        return el_error_set_tag(err, EL_ETRUST, "expired",
                                "%s expired at %s (trusted time %s)", what, e, t);
    }
    return 0;
}

static int parse_root_bundle(const el_bundle *b, el_manifest *m, el_manifest_root *root,
                             el_error *err)
{
    int rc = el_manifest_parse(b->header, b->header_len, 0, m, err);
    if (rc)
        return rc;
    if (m->type != EL_MANIFEST_ROOT) {
        el_manifest_finish(m);
        return el_error_set(err, EL_EINPUT, "bundle is not root metadata");
    }
    if (b->payload && b->payload_len != 0) {
        el_manifest_finish(m);
        return el_error_set_tag(err, EL_ETRUST, "oversize", "root bundle has a payload");
    }
    rc = el_manifest_root_parse(m, root, err);
    if (rc)
        el_manifest_finish(m);
    return rc;
}

int el_trust_root_bootstrap(const el_bundle *b, const char *ca_fingerprint,
                            int64_t clock, const el_trust_state *in,
                            el_manifest_root *root, el_trust_state *out, el_error *err)
{
    *out = *in;
    memset(root, 0, sizeof *root);
    int64_t trusted = el_trust_time(in, clock);
    el_manifest m;
    /* A first root can only vouch for itself: parse, then hold it to its own
     * keys. Pinning (enrollment) is what makes it trusted. */
    int rc = parse_root_bundle(b, &m, root, err);
    if (rc)
        return rc;
    size_t valid, unknown;
    if ((rc = count_sigs(b, root->root_keys, root->n_root_keys, NULL, &valid, &unknown,
                         err)) ||
        (rc = threshold_met(valid, unknown, root->root_threshold, "root", err)) ||
        (rc = check_expiry(m.expires, trusted, "root metadata", err)))
        goto fail;
    if (ca_fingerprint && strcmp(ca_fingerprint, root->ca_fingerprint) != 0) {
        rc = el_error_set_tag(err, EL_ETRUST, "bad_root_chain",
                              "root names CA %.16s, expected %.16s",
                              root->ca_fingerprint, ca_fingerprint);
        goto fail;
    }
    out->last_time = trusted > m.created ? trusted : m.created;
    el_manifest_finish(&m);
    return 0;
fail:
    el_manifest_finish(&m);
    el_manifest_root_finish(root);
    return rc;
}

int el_trust_root_update(const el_manifest_root *current, const el_bundle *b,
                         int64_t clock, const el_trust_state *in,
                         el_manifest_root *next, el_trust_state *out, el_error *err)
{
    *out = *in;
    memset(next, 0, sizeof *next);
    int64_t trusted = el_trust_time(in, clock);
    size_t valid, unknown;
    int rc = count_sigs(b, current->root_keys, current->n_root_keys, NULL, &valid,
                        &unknown, err);
    if (rc)
        return rc;
    if (valid < (size_t)current->root_threshold)
        return el_error_set_tag(err, EL_ETRUST, "bad_root_chain",
                                "new root has %zu valid signature(s) by root %lld's "
                                "keys, %d needed", valid, (long long)current->version,
                                current->root_threshold);
    el_manifest m;
    if ((rc = parse_root_bundle(b, &m, next, err)))
        return rc;
    if (next->version == current->version)
        rc = el_error_set_tag(err, EL_ETRUST, "replay", "root version %lld is the "
                              "current one", (long long)next->version);
    else if (next->version < current->version)
        rc = el_error_set_tag(err, EL_ETRUST, "rollback", "root version %lld is older "
                              "than the current %lld", (long long)next->version,
                              (long long)current->version);
    else if (next->version != current->version + 1)
        rc = el_error_set_tag(err, EL_ETRUST, "bad_root_chain", "root version %lld "
                              "skips from %lld; versions advance by one",
                              (long long)next->version, (long long)current->version);
    if (rc)
        goto fail;
    if ((rc = count_sigs(b, next->root_keys, next->n_root_keys, NULL, &valid, &unknown,
                         err)) ||
        /* The old root's signatures are "unknown" to the new key set: a
         * shortfall here is the new threshold, never an unknown signer. */
        (rc = threshold_met(valid, 0, next->root_threshold, "new root", err)) ||
        (rc = check_expiry(m.expires, trusted, "root metadata", err)))
        goto fail;
    out->last_time = trusted > m.created ? trusted : m.created;
    el_manifest_finish(&m);
    return 0;
fail:
    el_manifest_finish(&m);
    el_manifest_root_finish(next);
    return rc;
}

static int target_includes(const el_manifest *m, const el_trust_device *dev,
                           el_error *err)
{
    int named = strcmp(m->target, "*") == 0 ||
                (dev->group && strcmp(m->target, dev->group) == 0) ||
                (dev->device_id && strcmp(m->target, dev->device_id) == 0);
    if (!named)
        return el_error_set_tag(err, EL_ETRUST, "wrong_target",
                                "release targets \"%s\", not this device or its group",
                                m->target);
    if (m->rollout < 100) {
        int bucket = dev->device_id ? el_trust_bucket(dev->device_id) : 100;
        if (bucket >= m->rollout)
            return el_error_set_tag(err, EL_ETRUST, "wrong_target",
                                    "device is in rollout bucket %d, release reaches "
                                    "buckets below %d", bucket, m->rollout);
    }
    return 0;
}

int el_trust_release(const el_manifest_root *root, const el_bundle *b,
                     const el_trust_device *device, int64_t clock,
                     uint64_t payload_max, const el_trust_state *in, el_manifest *m,
                     el_trust_state *out, el_error *err)
{
    *out = *in;
    memset(m, 0, sizeof *m);
    int64_t trusted = el_trust_time(in, clock);
    size_t valid, unknown;
    int rc = count_sigs(b, root->release_keys, root->n_release_keys, root, &valid,
                        &unknown, err);
    if (rc || (rc = threshold_met(valid, unknown, root->release_threshold, "release",
                                  err)))
        return rc;
    if ((rc = el_manifest_parse(b->header, b->header_len, payload_max, m, err)))
        return rc;
    if (m->type != EL_MANIFEST_RELEASE) {
        rc = el_error_set(err, EL_EINPUT, "bundle is not a release");
        goto fail;
    }
    if ((rc = check_expiry(root->expires, trusted, "root metadata", err)) ||
        (rc = check_expiry(m->expires, trusted, "release", err)))
        goto fail;
    if (b->payload &&
        (rc = el_bundle_check_payload(b, m->payload_sha256, m->payload_size, err)))
        goto fail;
    int64_t highest = in->counters[m->kind];
    if (m->counter == highest)
        rc = el_error_set_tag(err, EL_ETRUST, "replay", "%s release counter %lld was "
                              "already accepted", el_manifest_kind_name(m->kind),
                              (long long)m->counter);
    else if (m->counter < highest)
        rc = el_error_set_tag(err, EL_ETRUST, "rollback", "%s release counter %lld is "
                              "below the accepted %lld", el_manifest_kind_name(m->kind),
                              (long long)m->counter, (long long)highest);
    if (rc || (rc = target_includes(m, device, err)))
        goto fail;
    if (m->kind == EL_KIND_ADAPTER && (!device->base || strcmp(device->base, m->base) != 0)) {
        rc = el_error_set_tag(err, EL_ETRUST, "wrong_base",
                              "adapter is for base %.16s, this device runs %.16s",
                              m->base, device->base ? device->base : "(none)");
        goto fail;
    }
    out->counters[m->kind] = m->counter;
    out->last_time = trusted > m->created ? trusted : m->created;
    return 0;
fail:
    el_manifest_finish(m);
    return rc;
}

int el_trust_device_delta(const el_manifest_root *root, const el_crypto_cert *ca,
                          const el_bundle *b, int64_t clock, uint64_t payload_max,
                          const el_trust_state *in, el_manifest *m,
                          el_crypto_cert_info *signer, el_trust_state *out,
                          el_error *err)
{
    *out = *in;
    memset(m, 0, sizeof *m);
    int64_t trusted = el_trust_time(in, clock);
    el_crypto_cert_info ca_info, info;
    int rc = el_crypto_cert_get_info(ca, &ca_info, err);
    if (rc)
        return rc;
    if (strcmp(ca_info.fingerprint, root->ca_fingerprint) != 0)
        return el_error_set_tag(err, EL_ETRUST, "untrusted_signer",
                                "the CA given is not the fleet CA the root pins");
    uint8_t *der;
    size_t der_len;
    if ((rc = el_manifest_peek_cert(b->header, b->header_len, &der, &der_len, err)))
        return rc;
    el_crypto_cert *cert = NULL;
    el_crypto_key *key = NULL;
    rc = el_crypto_cert_parse(der, der_len, &cert, err);
    el_free(der);
    if (rc)
        return el_error_prefix(err, "device delta signer");
    if ((rc = el_crypto_cert_verify(cert, ca, trusted, err)) ||
        (rc = el_crypto_cert_get_info(cert, &info, err)))
        goto out;
    if (strcmp(info.role, "device") != 0) {
        rc = el_error_set_tag(err, EL_ETRUST, "untrusted_signer",
                              "signer certificate has role \"%s\", not device", info.role);
        goto out;
    }
    if (el_manifest_root_serial_revoked(root, info.serial)) {
        rc = el_error_set_tag(err, EL_ETRUST, "revoked",
                              "device certificate %s is revoked", info.serial);
        goto out;
    }
    if ((rc = el_crypto_cert_public_key(cert, &key, err)))
        goto out;
    size_t i;
    for (i = 0; i < b->n_sigs; i++)
        if (strcmp(b->sigs[i].key_id, info.key_id) == 0)
            break;
    if (i == b->n_sigs) {
        rc = el_error_set_tag(err, EL_ETRUST, "untrusted_signer",
                              "no signature by the certificate's key %.16s", info.key_id);
        goto out;
    }
    if ((rc = el_bundle_verify_sig(b, i, key, err)))
        goto out;
    if ((rc = el_manifest_parse(b->header, b->header_len, payload_max, m, err)))
        goto out;
    if (m->type != EL_MANIFEST_DEVICE_DELTA) {
        rc = el_error_set(err, EL_EINPUT, "bundle is not a device delta");
        goto out;
    }
    if (b->payload &&
        (rc = el_bundle_check_payload(b, m->payload_sha256, m->payload_size, err)))
        goto out;
    if (signer)
        *signer = info;
    out->last_time = trusted;
out:
    if (rc)
        el_manifest_finish(m);
    el_crypto_key_destroy(key);
    el_crypto_cert_destroy(cert);
    return rc;
}
