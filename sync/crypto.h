/* Keys, signatures and X.509 for the fleet: ECDSA P-256 over SHA-256.
 *
 * This module and sync/tls.c are the only places that call mbedTLS, so a move
 * from 2.28 to 3.6 touches only them. Everything here takes the current time
 * as an explicit argument where it matters (no hidden time(NULL)) so tests and
 * the trust rules can set it.
 *
 * Ownership: el_crypto_key and el_crypto_cert are heap objects made by the
 * generate, load and parse functions and released by their destroy (accepts
 * NULL). Byte outputs (uint8_t **out) are el_malloc'd; the caller el_free's
 * them. Private key material is wiped from memory when a key is destroyed and
 * from every intermediate buffer (PEM text) after use.
 */
#ifndef EL_SYNC_CRYPTO_H
#define EL_SYNC_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define EL_CRYPTO_KEY_ID_LEN 64   /* lowercase hex SHA-256 of the SPKI DER */
#define EL_CRYPTO_SIG_MAX 72      /* DER ECDSA P-256 signature, at most */
#define EL_CRYPTO_SERIAL_HEX_MAX 41
#define EL_CRYPTO_NAME_MAX 64     /* CN, role, group, DNS name */
#define EL_CRYPTO_DNS_MAX 8

typedef struct el_crypto_key el_crypto_key;
typedef struct el_crypto_cert el_crypto_cert;

/* ---- keys ---------------------------------------------------------------- */

/* Generates a P-256 key pair into *OUT. Returns 0 or EL_EINTERNAL (RNG). */
int el_crypto_key_generate(el_crypto_key **out, el_error *err);

/* Parses a private key (PEM or DER, SEC1 or PKCS#8) when PRIVATE, else a
 * public key (PEM or DER SubjectPublicKeyInfo). Only P-256 keys are accepted.
 * Returns 0 with *OUT set, or EL_EINPUT with *OUT NULL. */
int el_crypto_key_parse(const uint8_t *buf, size_t len, int is_private,
                        el_crypto_key **out, el_error *err);

/* Reads PATH and parses it as el_crypto_key_parse does. The file buffer is
 * wiped before it is freed. Returns 0, EL_ENOTFOUND, EL_EIO or EL_EINPUT. */
int el_crypto_key_load(const char *path, int is_private, el_crypto_key **out,
                       el_error *err);

/* Writes the private key as PEM to PATH, atomically, mode 0600. Returns 0,
 * EL_EUSAGE (KEY has no private half), EL_EIO or EL_ENOSPC. */
int el_crypto_key_save_private(const el_crypto_key *key, const char *path,
                               el_error *err);

/* Writes the public key as PEM (SPKI) to PATH, atomically, mode 0644. */
int el_crypto_key_save_public(const el_crypto_key *key, const char *path,
                              el_error *err);

/* The DER SubjectPublicKeyInfo of KEY in a new buffer (*OUT, *LEN). */
int el_crypto_key_spki(const el_crypto_key *key, uint8_t **out, size_t *len,
                       el_error *err);

/* The key id: lowercase hex SHA-256 of the SPKI DER, NUL-terminated. */
int el_crypto_key_id(const el_crypto_key *key,
                     char out[EL_CRYPTO_KEY_ID_LEN + 1], el_error *err);

/* 1 when KEY holds a private half. */
int el_crypto_key_has_private(const el_crypto_key *key);

void el_crypto_key_destroy(el_crypto_key *key);

/* ---- signatures ---------------------------------------------------------- */

/* Signs MSG: SHA-256 of the message, then deterministic ECDSA (RFC 6979), DER
 * encoded into SIG (EL_CRYPTO_SIG_MAX bytes), length in *SIG_LEN. The same
 * key and message always give the same bytes. Returns 0, EL_EUSAGE (public
 * key only) or EL_EINTERNAL. */
int el_crypto_sign(const el_crypto_key *key, const void *msg, size_t len,
                   uint8_t sig[EL_CRYPTO_SIG_MAX], size_t *sig_len,
                   el_error *err);

/* Verifies a DER ECDSA signature SIG over the SHA-256 of MSG. Returns 0, or
 * EL_ETRUST tagged "bad_signature" (also for a malformed signature or one
 * with trailing bytes). */
int el_crypto_verify(const el_crypto_key *key, const void *msg, size_t len,
                     const uint8_t *sig, size_t sig_len, el_error *err);

/* Builds, in GROUP (an mbedtls_ecp_group *, for tls.c), the table of the
 * generator that mbedTLS otherwise builds lazily on the first
 * multiplication. A group shared by threads (a long-lived key or CA
 * certificate) must be warmed before it is shared: the lazy build writes the
 * group. Returns 0 or EL_EINTERNAL. */
int el_crypto_ecp_warm(void *group);

/* Gives GROUP (an mbedtls_ecp_group *, for tls.c) a copy of the shared
 * group's generator table when it is P-256 as mbedTLS loads it (curve
 * constants static, no table yet): a group made for one multiplication by
 * the generator (a peer certificate's key, verifying one handshake
 * signature) then does not build its own. Only T is added, so mbedTLS frees
 * it with the group. Leaves any other group alone. Returns 0, or EL_ENOMEM
 * with GROUP unchanged. */
int el_crypto_ecp_adopt_table(void *group);

/* ECDSA verification of the DER signature SIG over HASH by KEYPAIR (an
 * mbedtls_ecp_keypair *, for tls.c: a peer's handshake signature) with the
 * remembered per-key tables of el_crypto_verify (crypto.c note 8). HASH_LEN
 * must be at least 32; ECDSA on P-256 uses its first 32 bytes. Returns 0
 * when the signature verifies, 1 when it does not, -1 when this cannot
 * check it (not P-256, a short hash): the caller verifies another way. */
int el_crypto_ecp_verify_hash(const void *keypair, const uint8_t *hash, size_t hash_len,
                              const uint8_t *sig, size_t sig_len);

/* ECDSA signature (deterministic, RFC 6979 with MD_ALG, an mbedtls_md_type_t;
 * the bytes mbedtls_ecdsa_write_signature gives) over HASH with KEYPAIR's
 * private key, computed in the shared pre-warmed group (note 7) with
 * F_RNG / P_RNG for blinding, DER into SIG (MBEDTLS_ECDSA_MAX_LEN bytes).
 * Returns 0, an mbedTLS error, or -1 when this cannot sign with KEYPAIR
 * (not P-256): the caller signs another way. */
int el_crypto_ecp_sign_hash(const void *keypair, int md_alg, const uint8_t *hash,
                            size_t hash_len, uint8_t *sig, size_t *sig_len,
                            int (*f_rng)(void *, unsigned char *, size_t), void *p_rng);

/* ---- X.509 --------------------------------------------------------------- */

/* What a certificate says. Roles: "ca", "device", "hub", "admin". */
typedef struct el_crypto_cert_info {
    char serial[EL_CRYPTO_SERIAL_HEX_MAX];  /* lowercase hex, no leading 0s */
    char cn[EL_CRYPTO_NAME_MAX + 1];
    char role[EL_CRYPTO_NAME_MAX + 1];      /* OU */
    char group[EL_CRYPTO_NAME_MAX + 1];     /* O, empty when absent */
    char dns[EL_CRYPTO_DNS_MAX][EL_CRYPTO_NAME_MAX + 1];
    size_t n_dns;
    int64_t not_before, not_after;          /* Unix seconds, UTC */
    int is_ca;
    char key_id[EL_CRYPTO_KEY_ID_LEN + 1];  /* of the subject public key */
    char fingerprint[EL_CRYPTO_KEY_ID_LEN + 1];  /* SHA-256 of the DER */
} el_crypto_cert_info;

/* What to put in a certificate. CN, ROLE, GROUP and DNS names are limited to
 * [A-Za-z0-9._-] (and spaces in CN), so they never need DN escaping. */
typedef struct el_crypto_cert_params {
    const char *cn;
    const char *role;           /* OU: device, hub, admin (ca for the CA) */
    const char *group;          /* O: a device's group, or NULL */
    const char *const *dns;     /* subjectAltName DNS: names (hubs) */
    size_t n_dns;
    int64_t not_before, not_after;
} el_crypto_cert_params;

/* Parses a certificate (PEM or DER). Returns 0 or EL_EINPUT. */
int el_crypto_cert_parse(const uint8_t *buf, size_t len, el_crypto_cert **out,
                         el_error *err);
int el_crypto_cert_load(const char *path, el_crypto_cert **out, el_error *err);

/* Makes CERT safe to verify with from several threads at once (a CA held by
 * a server): warms its key's group (see el_crypto_ecp_warm). Returns 0 or
 * EL_EINTERNAL. */
int el_crypto_cert_share(el_crypto_cert *cert);
void el_crypto_cert_destroy(el_crypto_cert *cert);

/* Borrowed pointer to the certificate's DER bytes (valid while CERT lives). */
void el_crypto_cert_der(const el_crypto_cert *cert, const uint8_t **der,
                        size_t *len);

/* Fills INFO from CERT. Returns 0 or EL_EINPUT (a field we cannot read). */
int el_crypto_cert_get_info(const el_crypto_cert *cert,
                            el_crypto_cert_info *info, el_error *err);

/* A new el_crypto_key holding CERT's public key. */
int el_crypto_cert_public_key(const el_crypto_cert *cert, el_crypto_key **out,
                              el_error *err);

/* Verifies that LEAF is signed by CA, that CA is a CA certificate, and that
 * both are valid at TRUSTED_TIME (the system clock is not consulted).
 * Returns 0, or EL_ETRUST tagged "untrusted_signer" (not issued by CA) or
 * "expired" (outside its validity at TRUSTED_TIME). */
int el_crypto_cert_verify(const el_crypto_cert *leaf, const el_crypto_cert *ca,
                          int64_t trusted_time, el_error *err);

/* Makes a self-signed fleet CA certificate (OU=ca, basicConstraints CA:TRUE,
 * keyCertSign) for KEY. DER in a new buffer. */
int el_crypto_ca_create(const el_crypto_key *key,
                        const el_crypto_cert_params *params, uint8_t **der,
                        size_t *der_len, el_error *err);

/* Makes a PKCS#10 CSR with subject CN=CN signed by KEY (which never leaves
 * the caller). DER in a new buffer. */
int el_crypto_csr_create(const el_crypto_key *key, const char *cn,
                         uint8_t **der, size_t *der_len, el_error *err);

/* Parses a CSR (PEM or DER) and verifies its own signature with the public
 * key it carries (mbedTLS 2.28's parser does not). On success *PUB is the
 * requested key and CN (EL_CRYPTO_NAME_MAX+1) the requested common name.
 * Returns 0, EL_EINPUT (malformed, not P-256) or EL_ETRUST "bad_signature". */
int el_crypto_csr_verify(const uint8_t *buf, size_t len, el_crypto_key **pub,
                         char *cn, el_error *err);

/* Issues a certificate for SUBJECT (a public key, normally from a verified
 * CSR) signed by CA_KEY as CA. A random positive 127-bit serial. DER in a new
 * buffer. Returns 0, EL_EUSAGE (bad names) or EL_EINTERNAL. */
int el_crypto_cert_issue(const el_crypto_cert *ca, const el_crypto_key *ca_key,
                         const el_crypto_key *subject,
                         const el_crypto_cert_params *params, uint8_t **der,
                         size_t *der_len, el_error *err);

/* PEM-armours DER with LABEL ("CERTIFICATE", "CERTIFICATE REQUEST") into a
 * new NUL-terminated buffer. */
int el_crypto_pem(const char *label, const uint8_t *der, size_t der_len,
                  char **pem, el_error *err);

/* ---- encodings ----------------------------------------------------------- */

/* Standard base64 (with padding) of IN into a new NUL-terminated string. */
int el_crypto_base64_encode(const uint8_t *in, size_t len, char **out,
                            el_error *err);
/* Decodes base64 TEXT (LEN chars) into a new buffer. EL_EINPUT when bad. */
int el_crypto_base64_decode(const char *text, size_t len, uint8_t **out,
                            size_t *out_len, el_error *err);

/* Fills BUF with LEN random bytes from the DRBG. */
int el_crypto_random(void *buf, size_t len, el_error *err);

#endif
