/* Readers and writers of the JSON manifest inside a bundle header, and of the
 * root metadata a `root` bundle carries (DESIGN.md "Trust and sync",
 * docs/bundle-format.md). These parse untrusted bytes: every field is typed
 * and bounded, unknown types and format versions are refused.
 *
 * el_manifest and el_manifest_root are caller-owned (parse fills them, finish
 * releases what they hold; finish on a zeroed struct is a no-op).
 */
#ifndef EL_SYNC_MANIFEST_H
#define EL_SYNC_MANIFEST_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "crypto.h"

#define EL_MANIFEST_VERSION 1       /* the only format version we read */
#define EL_MANIFEST_TARGET_MAX 128
#define EL_MANIFEST_KEYS_MAX 16
#define EL_MANIFEST_REVOKED_MAX 4096
#define EL_MANIFEST_CERT_MAX 4096

enum { EL_MANIFEST_ROOT = 1, EL_MANIFEST_RELEASE, EL_MANIFEST_DEVICE_DELTA };

/* Release kinds, also the index of the per-kind counter in trust state. */
enum { EL_KIND_NONE = -1, EL_KIND_ADAPTER = 0, EL_KIND_BASE_MODEL,
       EL_KIND_POLICY, EL_KIND_COUNT };

typedef struct el_manifest {
    int type;                         /* EL_MANIFEST_* */
    int kind;                         /* EL_KIND_*, releases only */
    int64_t version;                  /* format version, == 1 */
    int64_t created, expires;         /* Unix seconds */
    int64_t counter;                  /* 0 when absent */
    char target[EL_MANIFEST_TARGET_MAX + 1];
    int rollout;                      /* percent, 100 when absent */
    char base[65], parent[65], result[65];   /* "" when absent */
    char payload_sha256[65];
    uint64_t payload_size;
    char payload_encoding[33];
    uint8_t *cert_der;                /* device deltas: signer certificate */
    size_t cert_len;
    json_t *json;                     /* the whole document (metrics, recipe) */
} el_manifest;

/* Parses HEADER (LEN bytes) as a manifest. PAYLOAD_MAX bounds payload.size.
 * Returns 0; EL_EINPUT (malformed, unknown type/kind/version, missing field);
 * EL_ETRUST "oversize" when payload.size exceeds PAYLOAD_MAX. On failure M is
 * left zeroed. */
int el_manifest_parse(const uint8_t *header, size_t len, uint64_t payload_max,
                      el_manifest *m, el_error *err);
void el_manifest_finish(el_manifest *m);

/* Extracts only the signer certificate of a device-delta header. Needed
 * before the signature can be checked, because the key comes from it. */
int el_manifest_peek_cert(const uint8_t *header, size_t len, uint8_t **der,
                          size_t *der_len, el_error *err);

/* Names of types and kinds, and their parse. Return -1 / NULL when unknown. */
const char *el_manifest_kind_name(int kind);
int el_manifest_kind_parse(const char *name);

/* RFC 3339 UTC with 'Z': "2026-01-31T12:00:00Z" only. Returns 0 or -1. */
int el_manifest_time_parse(const char *s, int64_t *out);
/* Formats T as RFC 3339 UTC ("...Z", 20 chars + NUL). */
void el_manifest_time_format(int64_t t, char out[32]);

/* ---- root metadata ------------------------------------------------------- */

typedef struct el_manifest_key {
    char id[EL_CRYPTO_KEY_ID_LEN + 1];
    el_crypto_key *key;               /* owned */
} el_manifest_key;

typedef struct el_manifest_root {
    int64_t version;                  /* root version N, >= 1 */
    int64_t expires;
    el_manifest_key root_keys[EL_MANIFEST_KEYS_MAX];
    size_t n_root_keys;
    int root_threshold;
    el_manifest_key release_keys[EL_MANIFEST_KEYS_MAX];
    size_t n_release_keys;
    int release_threshold;
    char ca_fingerprint[65];
    char (*revoked_serials)[EL_CRYPTO_SERIAL_HEX_MAX];   /* owned */
    size_t n_revoked_serials;
    char (*revoked_keys)[EL_CRYPTO_KEY_ID_LEN + 1];     /* owned */
    size_t n_revoked_keys;
} el_manifest_root;

/* Reads the "root" object of a parsed root manifest M. Each key's id must be
 * the SHA-256 of its SPKI; thresholds must be 1..number of keys. Returns 0 or
 * EL_EINPUT, leaving ROOT zeroed on failure. */
int el_manifest_root_parse(const el_manifest *m, el_manifest_root *root,
                           el_error *err);
void el_manifest_root_finish(el_manifest_root *root);

/* 1 when SERIAL / KEY_ID is revoked by ROOT. */
int el_manifest_root_serial_revoked(const el_manifest_root *root, const char *serial);
int el_manifest_root_key_revoked(const el_manifest_root *root, const char *key_id);

/* Builds the "root" JSON object from keys and settings (for the fleet tool).
 * Returns a new reference or NULL with ERR set. */
json_t *el_manifest_root_json(const el_crypto_key *const *root_keys, size_t n_root,
                              int root_threshold,
                              const el_crypto_key *const *release_keys,
                              size_t n_release, int release_threshold,
                              const char *ca_fingerprint, int64_t version,
                              el_error *err);

/* ---- writers -------------------------------------------------------------- */

/* Serializes MANIFEST (sorted keys, compact) as the header, signs it with
 * each of KEYS (N <= 16, distinct) and appends PAYLOAD (PLEN bytes; may be
 * NULL when 0) into a new .elb buffer *OUT. The caller is responsible for
 * the manifest's payload fields matching PAYLOAD (el_manifest_payload_json).
 * Returns 0, EL_ETRUST "oversize" / "duplicate_signer", EL_ENOMEM. */
int el_manifest_seal(const json_t *manifest, const uint8_t *payload, size_t plen,
                     const el_crypto_key *const *keys, size_t n, uint8_t **out,
                     size_t *out_len, el_error *err);

/* {"sha256": ..., "size": PLEN, "encoding": ENCODING} for PAYLOAD. */
json_t *el_manifest_payload_json(const uint8_t *payload, size_t plen,
                                 const char *encoding);

/* The manifest of a device delta signed by the holder of CERT: type,
 * version, created/expires (Unix seconds), target, base, parent (may be
 * NULL: first version), result, cert (base64 DER) and the payload fields for
 * PAYLOAD. Add metrics/recipe to it before sealing. Returns a new reference
 * or NULL with ERR set. */
json_t *el_manifest_device_delta_json(const el_crypto_cert *cert, const char *target,
                                      const char *base, const char *parent,
                                      const char *result, int64_t created,
                                      int64_t expires, const uint8_t *payload,
                                      size_t plen, const char *encoding,
                                      el_error *err);

#endif
