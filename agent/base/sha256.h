/* SHA-256 (FIPS 180-4). Our own small implementation so that base/ (linked
 * by everything) does not depend on mbedTLS, whose calls stay in
 * sync/crypto.c and sync/tls.c. */
#ifndef EL_BASE_SHA256_H
#define EL_BASE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define EL_SHA256_LEN 32
#define EL_SHA256_HEX_LEN 64

typedef struct el_sha256_ctx {
    uint32_t state[8];
    uint64_t bytes;
    uint8_t block[64];
    size_t fill;
} el_sha256_ctx;

void el_sha256_init(el_sha256_ctx *ctx);
void el_sha256_update(el_sha256_ctx *ctx, const void *data, size_t len);
void el_sha256_final(el_sha256_ctx *ctx, uint8_t out[EL_SHA256_LEN]);
void el_sha256(const void *data, size_t len, uint8_t out[EL_SHA256_LEN]);

/* Writes LEN bytes of IN as lowercase hex plus a NUL into OUT (2*LEN+1). */
void el_hex(const uint8_t *in, size_t len, char *out);
/* The block function in use: "sha-ni" (x86 SHA extensions) or
 * "portable"; EDGELOOP_SHA256_PORTABLE=1 forces the portable one. */
const char *el_sha256_impl(void);
/* SHA-256 of DATA as 64 lowercase hex chars + NUL. */
void el_sha256_hex(const void *data, size_t len, char out[EL_SHA256_HEX_LEN + 1]);
/* Parses 2*LEN hex chars of IN into OUT. Returns 0 or -1 on a bad char. */
int el_unhex(const char *in, uint8_t *out, size_t len);

#endif
