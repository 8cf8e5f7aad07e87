/* Manifest and root-metadata readers (untrusted JSON, bounded).
 *
 * Invariants:
 *  1. The header is parsed with el_json_parse (explicit length, duplicate keys
 *     refused, <= 64 KiB), so no field can be given twice with two meanings.
 *  2. Only format version 1 is read; any other "version", "type" or "kind" is
 *     refused, never guessed.
 *  3. Hex fields are exactly 64 lowercase hex characters; times are RFC 3339
 *     UTC with 'Z'; counters and sizes are non-negative and bounded.
 */
#include "manifest.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/json.h"
#include "base/sha256.h"
#include "bundle.h"

static const char *const kind_names[EL_KIND_COUNT] = {"adapter", "base-model", "policy"};

const char *el_manifest_kind_name(int kind)
{
    return kind >= 0 && kind < EL_KIND_COUNT ? kind_names[kind] : NULL;
}

int el_manifest_kind_parse(const char *name)
{
    for (int i = 0; i < EL_KIND_COUNT; i++)
        if (strcmp(name, kind_names[i]) == 0)
            return i;
    return -1;
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int el_manifest_time_parse(const char *s, int64_t *out)
{
    /* 0123456789012345678 9 */
    /* YYYY-MM-DDTHH:MM:SSZ  */
    if (strlen(s) != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' ||
        s[13] != ':' || s[16] != ':' || s[19] != 'Z')
        return -1;
    int y, mo, d, h, mi, se;
    if (digits(s, 4, &y) || digits(s + 5, 2, &mo) || digits(s + 8, 2, &d) ||
        digits(s + 11, 2, &h) || digits(s + 14, 2, &mi) || digits(s + 17, 2, &se))
        return -1;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
        return -1;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    time_t t = timegm(&tm);
    /* timegm normalises 31 Feb into March: refuse dates that moved. */
    struct tm back;
    if (!gmtime_r(&t, &back) || back.tm_mday != d || back.tm_mon != mo - 1)
        return -1;
    *out = (int64_t)t;
    return 0;
}

void el_manifest_time_format(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm)) {
        snprintf(out, 32, "1970-01-01T00:00:00Z");
        return;
    }
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static int is_hex64(const char *s)
{
    if (strlen(s) != 64)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static int get_hex64(const json_t *obj, const char *key, int required, char out[65],
                     el_error *err)
{
    const char *s = NULL;
    int rc = required ? el_json_get_str(obj, key, &s, "manifest", err)
                      : el_json_get_str_opt(obj, key, &s, "manifest", err);
    if (rc)
        return rc;
    out[0] = '\0';
    if (!s)
        return 0;
    if (!is_hex64(s))
        return el_error_set(err, EL_EINPUT, "manifest: \"%s\" is not 64 lowercase "
                            "hex characters", key);
    memcpy(out, s, 65);
    return 0;
}

static int get_time(const json_t *obj, const char *key, int64_t *out, el_error *err)
{
    const char *s;
    int rc = el_json_get_str(obj, key, &s, "manifest", err);
    if (rc)
        return rc;
    if (el_manifest_time_parse(s, out) != 0)
        return el_error_set(err, EL_EINPUT, "manifest: \"%s\" is not an RFC 3339 "
                            "UTC time like 2026-01-31T12:00:00Z", key);
    return 0;
}

void el_manifest_finish(el_manifest *m)
{
    if (!m)
        return;
    el_free(m->cert_der);
    if (m->json)
        json_decref(m->json);
    memset(m, 0, sizeof *m);
}

static int read_cert(const json_t *doc, uint8_t **der, size_t *der_len, el_error *err)
{
    const char *b64;
    int rc = el_json_get_str(doc, "cert", &b64, "manifest", err);
    if (rc)
        return rc;
    size_t n = strlen(b64);
    if (n > EL_MANIFEST_CERT_MAX * 4 / 3 + 4)
        return el_error_set_tag(err, EL_ETRUST, "oversize",
                                "manifest: signer certificate is too large");
    rc = el_crypto_base64_decode(b64, n, der, der_len, err);
    return rc ? el_error_prefix(err, "manifest: \"cert\"") : 0;
}

int el_manifest_peek_cert(const uint8_t *header, size_t len, uint8_t **der,
                          size_t *der_len, el_error *err)
{
    *der = NULL;
    *der_len = 0;
    json_t *doc = el_json_parse(header, len, EL_BUNDLE_HEADER_MAX, "manifest", err);
    if (!doc)
        return err ? err->code : EL_EINPUT;
    int rc = json_is_object(doc) ? read_cert(doc, der, der_len, err)
                                 : el_error_set(err, EL_EINPUT, "manifest is not an object");
    json_decref(doc);
    return rc;
}

int el_manifest_parse(const uint8_t *header, size_t len, uint64_t payload_max,
                      el_manifest *m, el_error *err)
{
    memset(m, 0, sizeof *m);
    m->kind = EL_KIND_NONE;
    m->rollout = 100;
    json_t *doc = el_json_parse(header, len, EL_BUNDLE_HEADER_MAX, "manifest", err);
    if (!doc)
        return err ? err->code : EL_EINPUT;
    m->json = doc;
    int rc;
    const char *s;
    if (!json_is_object(doc)) {
        rc = el_error_set(err, EL_EINPUT, "manifest is not a JSON object");
        goto fail;
    }
    if ((rc = el_json_get_i64(doc, "version", 0, INT64_MAX, &m->version, "manifest", err)))
        goto fail;
    if (m->version != EL_MANIFEST_VERSION) {
        rc = el_error_set(err, EL_EINPUT, "manifest format version %lld is not "
                          "supported (this build reads %d)", (long long)m->version,
                          EL_MANIFEST_VERSION);
        goto fail;
    }
    if ((rc = el_json_get_str(doc, "type", &s, "manifest", err)))
        goto fail;
    if (strcmp(s, "root") == 0)
        m->type = EL_MANIFEST_ROOT;
    else if (strcmp(s, "release") == 0)
        m->type = EL_MANIFEST_RELEASE;
    else if (strcmp(s, "device-delta") == 0)
        m->type = EL_MANIFEST_DEVICE_DELTA;
    else {
        rc = el_error_set(err, EL_EINPUT, "manifest: unknown type \"%.32s\"", s);
        goto fail;
    }
    if ((rc = get_time(doc, "created", &m->created, err)) ||
        (rc = get_time(doc, "expires", &m->expires, err)))
        goto fail;
    if ((rc = el_json_get_i64_opt(doc, "counter", 0, INT64_MAX, &m->counter,
                                  "manifest", err)))
        goto fail;
    if ((rc = get_hex64(doc, "base", 0, m->base, err)) ||
        (rc = get_hex64(doc, "parent", 0, m->parent, err)) ||
        (rc = get_hex64(doc, "result", 0, m->result, err)))
        goto fail;

    json_t *payload = json_object_get(doc, "payload");
    if (!json_is_object(payload)) {
        rc = el_error_set(err, EL_EINPUT, "manifest: \"payload\" object is missing");
        goto fail;
    }
    int64_t size;
    if ((rc = get_hex64(payload, "sha256", 1, m->payload_sha256, err)) ||
        (rc = el_json_get_i64(payload, "size", 0, INT64_MAX, &size, "manifest", err)) ||
        (rc = el_json_get_str(payload, "encoding", &s, "manifest", err)))
        goto fail;
    if ((uint64_t)size > payload_max) {
        rc = el_error_set_tag(err, EL_ETRUST, "oversize", "manifest: payload of "
                              "%lld bytes exceeds the limit of %llu", (long long)size,
                              (unsigned long long)payload_max);
        goto fail;
    }
    m->payload_size = (uint64_t)size;
    if (strlen(s) >= sizeof m->payload_encoding) {
        rc = el_error_set(err, EL_EINPUT, "manifest: payload encoding is too long");
        goto fail;
    }
    strcpy(m->payload_encoding, s);

    if (m->type == EL_MANIFEST_RELEASE) {
        if ((rc = el_json_get_str(doc, "kind", &s, "manifest", err)))
            goto fail;
        m->kind = el_manifest_kind_parse(s);
        if (m->kind < 0) {
            rc = el_error_set(err, EL_EINPUT, "manifest: unknown release kind \"%.32s\"", s);
            goto fail;
        }
        if (m->counter < 1) {
            rc = el_error_set(err, EL_EINPUT, "manifest: a release needs a counter >= 1");
            goto fail;
        }
        if (m->kind == EL_KIND_ADAPTER && !m->base[0]) {
            rc = el_error_set(err, EL_EINPUT, "manifest: an adapter release needs \"base\"");
            goto fail;
        }
    }
    if (m->type == EL_MANIFEST_RELEASE || m->type == EL_MANIFEST_DEVICE_DELTA) {
        if ((rc = el_json_get_str(doc, "target", &s, "manifest", err)))
            goto fail;
        if (strlen(s) == 0 || strlen(s) > EL_MANIFEST_TARGET_MAX) {
            rc = el_error_set(err, EL_EINPUT, "manifest: \"target\" must be 1-%d bytes",
                              EL_MANIFEST_TARGET_MAX);
            goto fail;
        }
        strcpy(m->target, s);
        int64_t rollout = 100;
        if ((rc = el_json_get_i64_opt(doc, "rollout", 0, 100, &rollout, "manifest", err)))
            goto fail;
        m->rollout = (int)rollout;
    }
    if (m->type == EL_MANIFEST_DEVICE_DELTA) {
        if ((rc = read_cert(doc, &m->cert_der, &m->cert_len, err)))
            goto fail;
        if (!m->result[0] || !m->base[0]) {
            rc = el_error_set(err, EL_EINPUT, "manifest: a device delta needs "
                              "\"base\" and \"result\"");
            goto fail;
        }
    }
    if (m->type == EL_MANIFEST_ROOT && !json_is_object(json_object_get(doc, "root"))) {
        rc = el_error_set(err, EL_EINPUT, "manifest: a root bundle needs a \"root\" object");
        goto fail;
    }
    return 0;
fail:
    el_manifest_finish(m);
    return rc;
}

/* ---- root metadata ------------------------------------------------------- */

void el_manifest_root_finish(el_manifest_root *root)
{
    if (!root)
        return;
    for (size_t i = 0; i < root->n_root_keys; i++)
        el_crypto_key_destroy(root->root_keys[i].key);
    for (size_t i = 0; i < root->n_release_keys; i++)
        el_crypto_key_destroy(root->release_keys[i].key);
    el_free(root->revoked_serials);
    el_free(root->revoked_keys);
    memset(root, 0, sizeof *root);
}

static int read_keys(const json_t *obj, const char *name, el_manifest_key *keys,
                     size_t *n, el_error *err)
{
    json_t *arr = json_object_get(obj, name);
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return el_error_set(err, EL_EINPUT, "root: \"%s\" must be a non-empty array", name);
    if (json_array_size(arr) > EL_MANIFEST_KEYS_MAX)
        return el_error_set_tag(err, EL_ETRUST, "oversize", "root: more than %d %s",
                                EL_MANIFEST_KEYS_MAX, name);
    size_t i;
    json_t *item;
    json_array_foreach(arr, i, item) {
        const char *id, *pub;
        int rc;
        if (!json_is_object(item))
            return el_error_set(err, EL_EINPUT, "root: %s[%zu] is not an object", name, i);
        if ((rc = el_json_get_str(item, "id", &id, "root", err)) ||
            (rc = el_json_get_str(item, "public", &pub, "root", err)))
            return rc;
        size_t plen = strlen(pub);
        if (plen > 1024)
            return el_error_set(err, EL_EINPUT, "root: %s[%zu] key is too long", name, i);
        uint8_t *der;
        size_t der_len;
        if ((rc = el_crypto_base64_decode(pub, plen, &der, &der_len, err)))
            return el_error_prefix(err, "root: %s[%zu]", name, i);
        el_crypto_key *key;
        rc = el_crypto_key_parse(der, der_len, 0, &key, err);
        el_free(der);
        if (rc)
            return el_error_prefix(err, "root: %s[%zu]", name, i);
        keys[*n].key = key;
        (*n)++;
        if ((rc = el_crypto_key_id(key, keys[*n - 1].id, err)))
            return rc;
        if (strcmp(keys[*n - 1].id, id) != 0)
            return el_error_set(err, EL_EINPUT, "root: %s[%zu] id does not match its "
                                "public key", name, i);
        for (size_t j = 0; j + 1 < *n; j++)
            if (strcmp(keys[j].id, id) == 0)
                return el_error_set(err, EL_EINPUT, "root: %s lists key %.16s twice",
                                    name, id);
    }
    return 0;
}

static int read_strings(const json_t *obj, const char *name, size_t width,
                        void **out, size_t *n, int hex64, el_error *err)
{
    json_t *arr = json_object_get(obj, name);
    if (!arr)
        return 0;
    if (!json_is_array(arr))
        return el_error_set(err, EL_EINPUT, "root: \"%s\" must be an array", name);
    size_t count = json_array_size(arr);
    if (count > EL_MANIFEST_REVOKED_MAX)
        return el_error_set_tag(err, EL_ETRUST, "oversize", "root: more than %d %s",
                                EL_MANIFEST_REVOKED_MAX, name);
    if (count == 0)
        return 0;
    char *buf = el_calloc(count, width);
    if (!buf)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    *out = buf;
    size_t i;
    json_t *item;
    json_array_foreach(arr, i, item) {
        const char *s = json_string_value(item);
        size_t l = s ? strlen(s) : 0;
        int ok = s && l > 0 && l < width;
        for (size_t k = 0; ok && k < l; k++)
            ok = (s[k] >= '0' && s[k] <= '9') || (s[k] >= 'a' && s[k] <= 'f');
        if (!ok || (hex64 && l != 64))
            return el_error_set(err, EL_EINPUT, "root: %s[%zu] is not lowercase hex",
                                name, i);
        memcpy(buf + i * width, s, l + 1);
        (*n)++;
    }
    return 0;
}

int el_manifest_root_parse(const el_manifest *m, el_manifest_root *root, el_error *err)
{
    memset(root, 0, sizeof *root);
    const json_t *obj = json_object_get(m->json, "root");
    if (m->type != EL_MANIFEST_ROOT || !json_is_object(obj))
        return el_error_set(err, EL_EINPUT, "not a root manifest");
    int64_t v, rt, lt;
    int rc;
    if ((rc = el_json_get_i64(obj, "version", 1, INT32_MAX, &v, "root", err)) ||
        (rc = el_json_get_i64(obj, "root_threshold", 1, EL_MANIFEST_KEYS_MAX, &rt,
                              "root", err)) ||
        (rc = el_json_get_i64(obj, "release_threshold", 1, EL_MANIFEST_KEYS_MAX, &lt,
                              "root", err)))
        goto fail;
    root->version = v;
    root->expires = m->expires;
    root->root_threshold = (int)rt;
    root->release_threshold = (int)lt;
    if ((rc = read_keys(obj, "root_keys", root->root_keys, &root->n_root_keys, err)) ||
        (rc = read_keys(obj, "release_keys", root->release_keys, &root->n_release_keys,
                        err)))
        goto fail;
    if ((size_t)rt > root->n_root_keys || (size_t)lt > root->n_release_keys) {
        rc = el_error_set(err, EL_EINPUT, "root: a threshold exceeds its number of keys");
        goto fail;
    }
    if ((rc = get_hex64(obj, "ca_fingerprint", 1, root->ca_fingerprint, err)))
        goto fail;
    if ((rc = read_strings(obj, "revoked_serials", EL_CRYPTO_SERIAL_HEX_MAX,
                           (void **)&root->revoked_serials, &root->n_revoked_serials, 0,
                           err)) ||
        (rc = read_strings(obj, "revoked_keys", EL_CRYPTO_KEY_ID_LEN + 1,
                           (void **)&root->revoked_keys, &root->n_revoked_keys, 1, err)))
        goto fail;
    return 0;
fail:
    el_manifest_root_finish(root);
    return rc;
}

int el_manifest_root_serial_revoked(const el_manifest_root *root, const char *serial)
{
    for (size_t i = 0; i < root->n_revoked_serials; i++)
        if (strcmp(root->revoked_serials[i], serial) == 0)
            return 1;
    return 0;
}

int el_manifest_root_key_revoked(const el_manifest_root *root, const char *key_id)
{
    for (size_t i = 0; i < root->n_revoked_keys; i++)
        if (strcmp(root->revoked_keys[i], key_id) == 0)
            return 1;
    return 0;
}

static json_t *keys_json(const el_crypto_key *const *keys, size_t n, el_error *err)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        char id[EL_CRYPTO_KEY_ID_LEN + 1];
        uint8_t *spki;
        size_t spki_len;
        char *b64 = NULL;
        if (el_crypto_key_id(keys[i], id, err) ||
            el_crypto_key_spki(keys[i], &spki, &spki_len, err)) {
            json_decref(arr);
            return NULL;
        }
        int rc = el_crypto_base64_encode(spki, spki_len, &b64, err);
        el_free(spki);
        if (rc) {
            json_decref(arr);
            return NULL;
        }
        json_array_append_new(arr, json_pack("{s:s, s:s}", "id", id, "public", b64));
        el_free(b64);
    }
    return arr;
}

json_t *el_manifest_root_json(const el_crypto_key *const *root_keys, size_t n_root,
                              int root_threshold,
                              const el_crypto_key *const *release_keys,
                              size_t n_release, int release_threshold,
                              const char *ca_fingerprint, int64_t version,
                              el_error *err)
{
    json_t *rk = keys_json(root_keys, n_root, err);
    json_t *lk = rk ? keys_json(release_keys, n_release, err) : NULL;
    if (!rk || !lk) {
        if (rk)
            json_decref(rk);
        return NULL;
    }
    json_t *obj = json_pack("{s:I, s:o, s:i, s:o, s:i, s:s, s:[], s:[]}",
                            "version", (json_int_t)version, "root_keys", rk,
                            "root_threshold", root_threshold, "release_keys", lk,
                            "release_threshold", release_threshold, "ca_fingerprint",
                            ca_fingerprint, "revoked_serials", "revoked_keys");
    if (!obj)
        el_error_set(err, EL_ENOMEM, "building the root JSON failed");
    return obj;
}

/* ---- writers -------------------------------------------------------------- */

json_t *el_manifest_payload_json(const uint8_t *payload, size_t plen,
                                 const char *encoding)
{
    char hex[65];
    el_sha256_hex(payload ? (const void *)payload : "", plen, hex);
    return json_pack("{s:s, s:I, s:s}", "sha256", hex, "size", (json_int_t)plen,
                     "encoding", encoding);
}

int el_manifest_seal(const json_t *manifest, const uint8_t *payload, size_t plen,
                     const el_crypto_key *const *keys, size_t n, uint8_t **out,
                     size_t *out_len, el_error *err)
{
    *out = NULL;
    *out_len = 0;
    char *header = el_json_dump_sorted(manifest);
    if (!header)
        return el_error_set(err, EL_ENOMEM, "serializing the manifest failed");
    el_bundle b;
    el_bundle_init(&b);
    b.header = (const uint8_t *)header;
    b.header_len = strlen(header);
    b.payload = payload;
    b.payload_len = payload ? plen : 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = el_bundle_add_signature(&b, keys[i], err);
    if (rc == 0)
        rc = el_bundle_serialize(&b, out, out_len, err);
    free(header);
    return rc;
}

json_t *el_manifest_device_delta_json(const el_crypto_cert *cert, const char *target,
                                      const char *base, const char *parent,
                                      const char *result, int64_t created,
                                      int64_t expires, const uint8_t *payload,
                                      size_t plen, const char *encoding,
                                      el_error *err)
{
    if (!is_hex64(base) || !is_hex64(result) || (parent && !is_hex64(parent))) {
        el_error_set(err, EL_EUSAGE, "base, parent and result are 64 lowercase hex");
        return NULL;
    }
    const uint8_t *der;
    size_t der_len;
    el_crypto_cert_der(cert, &der, &der_len);
    char *b64;
    if (el_crypto_base64_encode(der, der_len, &b64, err))
        return NULL;
    char c[32], e[32];
    el_manifest_time_format(created, c);
    el_manifest_time_format(expires, e);
    json_t *m = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "type",
                          "device-delta", "version", EL_MANIFEST_VERSION, "created", c,
                          "expires", e, "target", target, "base", base, "result", result,
                          "cert", b64, "payload",
                          el_manifest_payload_json(payload, plen, encoding));
    el_free(b64);
    if (m && parent)
        json_object_set_new(m, "parent", json_string(parent));
    if (!m)
        el_error_set(err, EL_ENOMEM, "building the manifest failed");
    return m;
}
