/* Shared fixtures of the crypto suite: a small fleet (CA, root keys, release
 * keys) and helpers that build and sign bundles. Header-only, static. */
#ifndef EL_TESTS_CRYPTO_FIXTURE_H
#define EL_TESTS_CRYPTO_FIXTURE_H

#include <string.h>

#include "base/alloc.h"
#include "base/json.h"
#include "base/sha256.h"
#include "bundle.h"
#include "crypto.h"
#include "manifest.h"
#include "trust.h"

#define FX_T0 1767225600LL            /* 2026-01-01T00:00:00Z */
#define FX_DAY 86400LL
#define FX_PAYLOAD_MAX (1u << 20)

typedef struct fx_fleet {
    el_crypto_key *ca_key;
    el_crypto_cert *ca;
    el_crypto_key *root_keys[3];
    el_crypto_key *release_keys[3];
    uint8_t *root_bytes;
    size_t root_len;
} fx_fleet;

static inline el_crypto_key *fx_key(void)
{
    el_crypto_key *k = NULL;
    el_error err;
    if (el_crypto_key_generate(&k, &err) != 0) {
        fprintf(stderr, "keygen: %s\n", err.msg);
        exit(1);
    }
    return k;
}

static inline void fx_time(int64_t t, char out[32])
{
    el_manifest_time_format(t, out);
}

/* Serializes MANIFEST (sorted keys) as the header, signs it with KEYS and
 * appends PAYLOAD. Exits on failure: fixtures are not under test. */
static inline void fx_bundle(const json_t *manifest, const uint8_t *payload, size_t plen,
                             el_crypto_key *const *keys, size_t n, uint8_t **out,
                             size_t *len)
{
    el_error err;
    /* Duplicate signers are an attack case: sign those by hand. */
    el_bundle b;
    el_bundle_init(&b);
    char *header = el_json_dump_sorted(manifest);
    b.header = (const uint8_t *)header;
    b.header_len = strlen(header);
    b.payload = payload;
    b.payload_len = plen;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = el_bundle_sign_header(b.header, b.header_len, keys[i], &b.sigs[b.n_sigs++],
                                   &err);
    if (rc == 0)
        rc = el_bundle_serialize(&b, out, len, &err);
    free(header);
    if (rc) {
        fprintf(stderr, "fx_bundle: %s\n", err.msg);
        exit(1);
    }
}

static inline json_t *fx_payload_json(const uint8_t *payload, size_t plen, const char *encoding)
{
    return el_manifest_payload_json(payload, plen, encoding);
}

static inline json_t *fx_root_manifest(fx_fleet *f, el_crypto_key *const *root_keys,
                                size_t n_root, int root_threshold, int64_t version,
                                int64_t expires)
{
    el_crypto_cert_info ca;
    el_error err;
    el_crypto_cert_get_info(f->ca, &ca, &err);
    json_t *root = el_manifest_root_json((const el_crypto_key *const *)root_keys, n_root,
                                         root_threshold,
                                         (const el_crypto_key *const *)f->release_keys, 3,
                                         2, ca.fingerprint, version, &err);
    char c[32], e[32];
    fx_time(FX_T0, c);
    fx_time(expires, e);
    return json_pack("{s:s, s:i, s:s, s:s, s:o, s:o}", "type", "root", "version", 1,
                     "created", c, "expires", e, "root", root, "payload",
                     fx_payload_json(NULL, 0, "none"));
}

static inline void fx_fleet_init(fx_fleet *f)
{
    memset(f, 0, sizeof *f);
    el_error err;
    f->ca_key = fx_key();
    el_crypto_cert_params p = {.cn = "test fleet CA", .role = "ca",
                               .not_before = FX_T0 - FX_DAY,
                               .not_after = FX_T0 + 3650 * FX_DAY};
    uint8_t *der;
    size_t der_len;
    if (el_crypto_ca_create(f->ca_key, &p, &der, &der_len, &err) ||
        el_crypto_cert_parse(der, der_len, &f->ca, &err)) {
        fprintf(stderr, "CA: %s\n", err.msg);
        exit(1);
    }
    el_free(der);
    for (int i = 0; i < 3; i++) {
        f->root_keys[i] = fx_key();
        f->release_keys[i] = fx_key();
    }
    json_t *m = fx_root_manifest(f, f->root_keys, 3, 2, 1, FX_T0 + 365 * FX_DAY);
    fx_bundle(m, NULL, 0, f->root_keys, 2, &f->root_bytes, &f->root_len);
    json_decref(m);
}

static inline void fx_fleet_finish(fx_fleet *f)
{
    el_crypto_key_destroy(f->ca_key);
    el_crypto_cert_destroy(f->ca);
    for (int i = 0; i < 3; i++) {
        el_crypto_key_destroy(f->root_keys[i]);
        el_crypto_key_destroy(f->release_keys[i]);
    }
    el_free(f->root_bytes);
}

/* Issues a device certificate for KEY valid [FROM, TO], signed by CA_KEY/CA. */
static inline el_crypto_cert *fx_device_cert(const el_crypto_cert *ca, const el_crypto_key *ca_key,
                                      const el_crypto_key *key, int64_t from, int64_t to)
{
    el_crypto_cert_params p = {.cn = "dev-1", .role = "device", .group = "line-a",
                               .not_before = from, .not_after = to};
    uint8_t *der;
    size_t len;
    el_error err;
    el_crypto_cert *cert = NULL;
    if (el_crypto_cert_issue(ca, ca_key, key, &p, &der, &len, &err) ||
        el_crypto_cert_parse(der, len, &cert, &err)) {
        fprintf(stderr, "issue: %s\n", err.msg);
        exit(1);
    }
    el_free(der);
    return cert;
}

#endif
