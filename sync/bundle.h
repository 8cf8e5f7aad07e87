/* The signed bundle container `.elb` (docs/bundle-format.md, DESIGN.md
 * "Trust and sync"): root metadata, releases and device deltas.
 *
 *   "ELB1" | u32 LE header length | header (UTF-8 JSON, <= 64 KiB)
 *   | u16 LE signature count (<= 16)
 *   | per signature: u16 LE key-id length, key id (64 lowercase hex),
 *                    u16 LE signature length, DER ECDSA signature (<= 72)
 *   | payload (the rest)
 *
 * Each signature is ECDSA-P256-SHA256 over "edgeloop-bundle-v1" 0x00 header.
 * The bundle id is the lowercase hex SHA-256 of the header bytes.
 *
 * el_bundle is caller-owned (init/finish): after el_bundle_parse its header
 * and payload point into the caller's buffer, which must outlive it; after
 * el_bundle_read_head_fd the header is owned by the bundle and the payload is
 * left in the file for el_bundle_stream_payload.
 */
#ifndef EL_SYNC_BUNDLE_H
#define EL_SYNC_BUNDLE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "crypto.h"

#define EL_BUNDLE_MAGIC "ELB1"
#define EL_BUNDLE_HEADER_MAX 65536u
#define EL_BUNDLE_SIGS_MAX 16u
#define EL_BUNDLE_CONTEXT "edgeloop-bundle-v1"   /* + its NUL: 19 bytes */
#define EL_BUNDLE_CONTEXT_LEN 19u

typedef struct el_bundle_sig {
    char key_id[EL_CRYPTO_KEY_ID_LEN + 1];
    uint8_t sig[EL_CRYPTO_SIG_MAX];
    size_t sig_len;
} el_bundle_sig;

typedef struct el_bundle {
    const uint8_t *header;      /* borrowed, or header_owned */
    size_t header_len;
    uint8_t *header_owned;
    el_bundle_sig sigs[EL_BUNDLE_SIGS_MAX];
    size_t n_sigs;
    const uint8_t *payload;     /* borrowed; NULL when left in a file */
    size_t payload_len;
    size_t head_len;            /* bytes before the payload */
    char id[EL_CRYPTO_KEY_ID_LEN + 1];
} el_bundle;

void el_bundle_init(el_bundle *b);
void el_bundle_finish(el_bundle *b);

/* Parses the framing of LEN bytes at BUF (the whole file). Every length is
 * checked against the limits and against what remains before it is used.
 * Returns 0; EL_EINPUT for another magic; EL_ETRUST tagged "truncated" when
 * the input ends inside the framing, "oversize" when a limit is exceeded.
 * On failure B is left initialised and empty. */
int el_bundle_parse(const uint8_t *buf, size_t len, el_bundle *b, el_error *err);

/* Streaming variant: reads the framing from FD (leaving FD at the first
 * payload byte). Same checks and returns as el_bundle_parse, plus EL_EIO. */
int el_bundle_read_head_fd(int fd, el_bundle *b, el_error *err);

/* Reads exactly SIZE payload bytes from FD and then expects end of file,
 * hashing them and passing each chunk to SINK (may be NULL). Returns 0;
 * EL_ETRUST "truncated" (fewer bytes), "oversize" (more), "bad_signature"
 * (SHA-256 differs from SHA256_HEX); EL_EIO; or the sink's error. */
typedef int (*el_bundle_sink)(void *ctx, const uint8_t *data, size_t len,
                              el_error *err);
int el_bundle_stream_payload(int fd, const char *sha256_hex, uint64_t size,
                             el_bundle_sink sink, void *ctx, el_error *err);

/* Checks an in-memory payload against its manifest's size and hash, with the
 * same returns as el_bundle_stream_payload. */
int el_bundle_check_payload(const el_bundle *b, const char *sha256_hex,
                            uint64_t size, el_error *err);

/* Verifies signature I of B with KEY over the signed message. Returns 0 or
 * EL_ETRUST "bad_signature". */
int el_bundle_verify_sig(const el_bundle *b, size_t i, const el_crypto_key *key,
                         el_error *err);

/* Signs HEADER with KEY into *SIG (key id and DER signature). */
int el_bundle_sign_header(const uint8_t *header, size_t header_len,
                          const el_crypto_key *key, el_bundle_sig *sig,
                          el_error *err);

/* Appends KEY's signature to B. Returns 0, EL_ETRUST "duplicate_signer" when
 * KEY already signed, "oversize" when B has 16 signatures. */
int el_bundle_add_signature(el_bundle *b, const el_crypto_key *key, el_error *err);

/* Serializes B (header, signatures, payload) into a new buffer. Returns 0,
 * EL_ETRUST "oversize" when the header exceeds the limit, EL_ENOMEM. */
int el_bundle_serialize(const el_bundle *b, uint8_t **out, size_t *len,
                        el_error *err);

#endif
