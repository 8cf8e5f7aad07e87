/* Export of a version as a signed device delta (`edgeloop bundle`).
 *
 * Invariants:
 *  1. The bundle verifies offline: it carries the device certificate, is
 *     signed by the device key (which stays in the state directory) and
 *     names the base by the fleet's hash, so el_trust_device_delta with the
 *     fleet root and CA is all a receiver needs.
 *  2. "result" is what the receiver rebuilds, and it is the adapter the
 *     registry holds: the delta is decoded and applied to the parent here
 *     too, and the rebuild's digest must equal the stored adapter's (train
 *     stores a rebuild that is a fixed point of the configured encoding,
 *     device.c requantize). When a lossy encoding still moves a row, the
 *     bundle uses lora-delta-exact instead, whose rebuild of a stored
 *     rebuild is the identity; a mismatch there is refused (EL_EINTERNAL),
 *     never sent.
 *  3. The file is written atomically; nothing is written on failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "daemon/device.h"
#include "daemon/device_internal.h"
#include "sync/bundle.h"
#include "sync/crypto.h"
#include "sync/delta.h"
#include "sync/manifest.h"

#define DELTA_VALID_S (30 * 86400)   /* a delta may wait a month in the outbox */

static void set_json(json_t *m, const char *key, const char *text)
{
    json_t *v = text ? json_loads(text, 0, NULL) : NULL;
    if (json_is_object(v))
        json_object_set_new(m, key, v);
    else
        json_decref(v);
}

int el_device_bundle_export(el_store *s, int64_t version_id, const char *out_path,
                            el_device_bundle_result *r, el_error *err)
{
    memset(r, 0, sizeof *r);
    el_device_identity id;
    el_store_version v;
    memset(&v, 0, sizeof v);
    el_crypto_key *key = NULL;
    el_crypto_cert *cert = NULL;
    el_delta_set next = {0}, parent = {0}, delta = {0}, rebuilt = {0};
    uint8_t *payload = NULL, *out = NULL;
    size_t plen = 0, out_len = 0;
    json_t *m = NULL;
    char work[4096], dir[4200], path[4200], base[65];
    int have_v = 0, rc;
    snprintf(work, sizeof work, "%s/bundle-work.%ld", el_store_dir(s), (long)getpid());
    snprintf(dir, sizeof dir, "%s/adapter", work);
    if ((rc = el_device_identity_get(s, &id, err)) ||
        (rc = el_store_version_get(s, version_id, &v, err)))
        goto done;
    have_v = 1;
    if ((rc = el_fs_mkdirs(work, 0700, err)) ||
        (rc = el_device_base_hash(s, v.base_id, base, err)) ||
        (rc = el_device_version_tensors(s, version_id, dir, &next, err)))
        goto done;
    if (v.parent_id &&
        ((rc = el_device_version_tensors(s, v.parent_id, dir, &parent, err)) ||
         (rc = el_delta_digest(&parent, r->parent, err))))
        goto done;
    el_delta_limits lim;
    el_delta_limits_default(&lim);
    int encoding = el_delta_encoding_parse(el_store_get_config(s)->sync.encoding), got;
    if (encoding < 0) {
        rc = el_error_set(err, EL_EINPUT, "[sync] encoding = %s: use lora-delta-exact or "
                          "lora-delta-q8", el_store_get_config(s)->sync.encoding);
        goto done;
    }
    char stored[65];
    if ((rc = el_delta_digest(&next, stored, err)))
        goto done;
    for (;;) {
        if ((rc = el_delta_encode(&next, v.parent_id ? &parent : NULL, encoding, &payload,
                                  &plen, err)) ||
            (rc = el_delta_decode(payload, plen, &lim, &delta, &got, err)) ||
            (rc = el_delta_apply(v.parent_id ? &parent : NULL, &delta, &rebuilt, err)) ||
            (rc = el_delta_digest(&rebuilt, r->result, err)))
            goto done;
        if (!strcmp(r->result, stored))
            break;
        /* invariant 2: the rebuild must be the registry's adapter */
        if (encoding == EL_DELTA_EXACT) {
            rc = el_error_set(err, EL_EINTERNAL, "version %lld: its exact delta does not "
                              "rebuild the stored adapter", (long long)version_id);
            goto done;
        }
        encoding = EL_DELTA_EXACT;
        el_free(payload);
        payload = NULL;
        el_delta_set_finish(&delta);
        el_delta_set_finish(&rebuilt);
    }
    snprintf(path, sizeof path, "%s/%s", el_store_dir(s), EL_DEVICE_CERT_FILE);
    if ((rc = el_crypto_cert_load(path, &cert, err)))
        goto done;
    snprintf(path, sizeof path, "%s/%s", el_store_dir(s), EL_DEVICE_KEY_FILE);
    if ((rc = el_crypto_key_load(path, 1, &key, err)))
        goto done;
    int64_t now = el_store_now(s);
    if (!(m = el_manifest_device_delta_json(cert, "hub", base,
                                            v.parent_id ? r->parent : NULL, r->result,
                                            now, now + DELTA_VALID_S, payload, plen,
                                            el_delta_encoding_name(encoding), err))) {
        rc = err && err->code ? err->code : EL_ENOMEM;
        goto done;
    }
    set_json(m, "metrics", v.metrics);
    set_json(m, "recipe", v.recipe);
    const el_crypto_key *keys[1] = {key};
    if ((rc = el_manifest_seal(m, payload, plen, keys, 1, &out, &out_len, err)))
        goto done;
    el_bundle b;
    el_bundle_init(&b);
    if ((rc = el_bundle_parse(out, out_len, &b, err)))
        goto done;
    snprintf(r->bundle_id, sizeof r->bundle_id, "%s", b.id);
    el_bundle_finish(&b);
    if ((rc = el_fs_write_atomic(out_path, out, out_len, 0644, err)))
        goto done;
    r->payload_size = plen;
    r->size = out_len;
done:
    json_decref(m);
    el_free(payload);
    el_free(out);
    el_delta_set_finish(&next);
    el_delta_set_finish(&parent);
    el_delta_set_finish(&delta);
    el_delta_set_finish(&rebuilt);
    el_crypto_key_destroy(key);
    el_crypto_cert_destroy(cert);
    if (have_v)
        el_store_version_finish(&v);
    rmdir(work);
    return rc;
}

int el_device_outbox_fill(el_store *s, int64_t *queued, el_error *err)
{
    if (queued)
        *queued = 0;
    el_device_identity id;
    int rc = el_device_identity_get(s, &id, err);
    if (rc)
        return rc;
    el_store_version *v;
    size_t n;
    if ((rc = el_store_version_list(s, &v, &n, err)))
        return rc;
    char path[4200];
    snprintf(path, sizeof path, "%s/outbox-work.%ld.elb", el_store_dir(s), (long)getpid());
    for (size_t i = 0; i < n && !rc; i++) {
        if (strcmp(v[i].state, "good") || strcmp(v[i].origin, "local"))
            continue;
        int has = el_store_outbox_has(s, v[i].id, err);
        if (has < 0) {
            rc = has;
            break;
        }
        if (has)
            continue;
        el_device_bundle_result r;
        uint8_t *bytes = NULL;
        size_t len = 0;
        if (!(rc = el_device_bundle_export(s, v[i].id, path, &r, err)) &&
            !(rc = el_fs_read_file(path, (size_t)r.size, &bytes, &len, err)) &&
            !(rc = el_store_outbox_add(s, v[i].id, r.bundle_id, bytes, len, err)) && queued)
            (*queued)++;
        el_free(bytes);
        unlink(path);
    }
    el_store_version_list_free(v, n);
    return rc;
}
