/* The `.elb` container: framing, signing and payload checks.
 *
 * Invariants:
 *  1. No length read from the input is used before it is checked against its
 *     limit (header <= 64 KiB, <= 16 signatures, key id == 64 hex chars,
 *     signature <= 72 bytes) and against the bytes that remain.
 *  2. Signatures are checked over the header bytes exactly as received; this
 *     file never parses the JSON. Callers parse the manifest only after the
 *     signatures they need have verified (sync/trust.c).
 *  3. A payload is accepted only when its length equals the manifest's size
 *     and its SHA-256 equals the manifest's hash; a longer one is "oversize",
 *     a shorter one "truncated".
 */
#include "bundle.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/sha256.h"

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void el_bundle_init(el_bundle *b)
{
    memset(b, 0, sizeof *b);
}

void el_bundle_finish(el_bundle *b)
{
    if (!b)
        return;
    el_free(b->header_owned);
    el_bundle_init(b);
}

static int truncated(el_error *err, const char *where)
{
    return el_error_set_tag(err, EL_ETRUST, "truncated",
                            "bundle ends inside its %s", where);
}

static int check_magic(const uint8_t *p, el_error *err)
{
    if (memcmp(p, EL_BUNDLE_MAGIC, 4) != 0)
        return el_error_set(err, EL_EINPUT, "not an edgeloop bundle of format "
                            "version 1 (magic is not \"ELB1\")");
    return 0;
}

static int check_header_len(uint32_t hlen, el_error *err)
{
    if (hlen > EL_BUNDLE_HEADER_MAX)
        return el_error_set_tag(err, EL_ETRUST, "oversize",
                                "bundle header of %u bytes exceeds %u", hlen,
                                EL_BUNDLE_HEADER_MAX);
    if (hlen == 0)
        return el_error_set(err, EL_EINPUT, "bundle header is empty");
    return 0;
}

static int is_lower_hex(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

/* Reads the signature block from a cursor over *POS..LEN of BUF. */
static int parse_sigs(const uint8_t *buf, size_t len, size_t *pos, el_bundle *b,
                      el_error *err)
{
    size_t p = *pos;
    if (len - p < 2)
        return truncated(err, "signature count");
    uint16_t n = rd16(buf + p);
    p += 2;
    if (n > EL_BUNDLE_SIGS_MAX)
        return el_error_set_tag(err, EL_ETRUST, "oversize",
                                "bundle has %u signatures, at most %u allowed", n,
                                EL_BUNDLE_SIGS_MAX);
    for (uint16_t i = 0; i < n; i++) {
        el_bundle_sig *s = &b->sigs[i];
        if (len - p < 2)
            return truncated(err, "signatures");
        uint16_t klen = rd16(buf + p);
        p += 2;
        if (klen > EL_CRYPTO_KEY_ID_LEN)
            return el_error_set_tag(err, EL_ETRUST, "oversize",
                                    "signature %u: key id of %u bytes", i, klen);
        if (len - p < klen)
            return truncated(err, "signatures");
        if (klen != EL_CRYPTO_KEY_ID_LEN || !is_lower_hex(buf + p, klen))
            return el_error_set(err, EL_EINPUT, "signature %u: key id is not 64 "
                                "lowercase hex characters", i);
        memcpy(s->key_id, buf + p, klen);
        s->key_id[klen] = '\0';
        p += klen;
        if (len - p < 2)
            return truncated(err, "signatures");
        uint16_t slen = rd16(buf + p);
        p += 2;
        if (slen > EL_CRYPTO_SIG_MAX)
            return el_error_set_tag(err, EL_ETRUST, "oversize",
                                    "signature %u is %u bytes, at most %u", i, slen,
                                    EL_CRYPTO_SIG_MAX);
        if (len - p < slen)
            return truncated(err, "signatures");
        memcpy(s->sig, buf + p, slen);
        s->sig_len = slen;
        p += slen;
    }
    b->n_sigs = n;
    *pos = p;
    return 0;
}

int el_bundle_parse(const uint8_t *buf, size_t len, el_bundle *b, el_error *err)
{
    el_bundle_init(b);
    if (len < 4)
        return len == 0 || memcmp(buf, EL_BUNDLE_MAGIC, len) == 0
                   ? truncated(err, "magic")
                   : check_magic((const uint8_t *)"\0\0\0\0", err);
    int rc = check_magic(buf, err);
    if (rc)
        return rc;
    if (len < 8)
        return truncated(err, "header length");
    uint32_t hlen = rd32(buf + 4);
    if ((rc = check_header_len(hlen, err)))
        return rc;
    if (len - 8 < hlen)
        return truncated(err, "header");
    size_t pos = 8 + (size_t)hlen;
    if ((rc = parse_sigs(buf, len, &pos, b, err))) {
        el_bundle_init(b);
        return rc;
    }
    b->header = buf + 8;
    b->header_len = hlen;
    b->payload = buf + pos;
    b->payload_len = len - pos;
    b->head_len = pos;
    el_sha256_hex(b->header, b->header_len, b->id);
    return 0;
}

/* Reads exactly N bytes; returns 0, 1 at a short read (EOF), or EL_EIO. */
static int read_full(int fd, uint8_t *buf, size_t n, size_t *got, el_error *err)
{
    *got = 0;
    while (*got < n) {
        ssize_t r = read(fd, buf + *got, n - *got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return el_error_set(err, EL_EIO, "reading the bundle: %s", strerror(errno));
        }
        if (r == 0)
            return 1;
        *got += (size_t)r;
    }
    return 0;
}

int el_bundle_read_head_fd(int fd, el_bundle *b, el_error *err)
{
    el_bundle_init(b);
    uint8_t fixed[8];
    size_t got;
    int rc = read_full(fd, fixed, sizeof fixed, &got, err);
    if (rc < 0)
        return rc;
    if (got >= 4 && (rc = check_magic(fixed, err)))
        return rc;
    if (got < 4)
        return memcmp(fixed, EL_BUNDLE_MAGIC, got) == 0
                   ? truncated(err, "magic")
                   : check_magic((const uint8_t *)"\0\0\0\0", err);
    if (got < 8)
        return truncated(err, "header length");
    uint32_t hlen = rd32(fixed + 4);
    if ((rc = check_header_len(hlen, err)))
        return rc;
    /* The signature block is at most 2 + 16 * (2 + 64 + 2 + 72) bytes; read
     * it byte-exactly so FD ends at the payload. */
    uint8_t *buf = el_malloc(hlen);
    if (!buf)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    rc = read_full(fd, buf, hlen, &got, err);
    if (rc != 0) {
        el_free(buf);
        return rc < 0 ? rc : truncated(err, "header");
    }
    uint8_t sigs[2 + EL_BUNDLE_SIGS_MAX * (4 + EL_CRYPTO_KEY_ID_LEN + EL_CRYPTO_SIG_MAX)];
    size_t have = 0;
    rc = read_full(fd, sigs, 2, &got, err);
    have = got;
    uint16_t n = have == 2 ? rd16(sigs) : 0;
    /* Each field's length comes before it: read length, check, read body. */
    int stop = 0;
    for (uint16_t i = 0; rc == 0 && !stop && i < n && i < EL_BUNDLE_SIGS_MAX; i++) {
        for (int part = 0; part < 2 && rc == 0 && !stop; part++) {
            size_t limit = part == 0 ? EL_CRYPTO_KEY_ID_LEN : EL_CRYPTO_SIG_MAX;
            rc = read_full(fd, sigs + have, 2, &got, err);
            have += got;
            if (rc)
                break;
            size_t l = rd16(sigs + have - 2);
            if (l > limit) {
                stop = 1;   /* parse_sigs reports the oversize field */
                break;
            }
            rc = read_full(fd, sigs + have, l, &got, err);
            have += got;
        }
    }
    if (rc < 0) {
        el_free(buf);
        return rc;
    }
    size_t pos = 0;
    if ((rc = parse_sigs(sigs, have, &pos, b, err))) {
        el_free(buf);
        el_bundle_init(b);
        return rc;
    }
    b->header_owned = buf;
    b->header = buf;
    b->header_len = hlen;
    b->head_len = 8 + hlen + pos;
    el_sha256_hex(b->header, b->header_len, b->id);
    return 0;
}

static int payload_verdict(const uint8_t hash[EL_SHA256_LEN], const char *sha256_hex,
                           el_error *err)
{
    char hex[EL_SHA256_HEX_LEN + 1];
    el_hex(hash, EL_SHA256_LEN, hex);
    if (strcmp(hex, sha256_hex) != 0)
        return el_error_set_tag(err, EL_ETRUST, "bad_signature",
                                "payload SHA-256 %s does not match the signed "
                                "manifest", hex);
    return 0;
}

int el_bundle_check_payload(const el_bundle *b, const char *sha256_hex,
                            uint64_t size, el_error *err)
{
    if (!b->payload)
        return el_error_set(err, EL_EINTERNAL, "bundle payload is not in memory");
    if ((uint64_t)b->payload_len > size)
        return el_error_set_tag(err, EL_ETRUST, "oversize",
                                "payload is %zu bytes, the manifest says %llu",
                                b->payload_len, (unsigned long long)size);
    if ((uint64_t)b->payload_len < size)
        return el_error_set_tag(err, EL_ETRUST, "truncated",
                                "payload is %zu bytes, the manifest says %llu",
                                b->payload_len, (unsigned long long)size);
    uint8_t hash[EL_SHA256_LEN];
    el_sha256(b->payload, b->payload_len, hash);
    return payload_verdict(hash, sha256_hex, err);
}

int el_bundle_stream_payload(int fd, const char *sha256_hex, uint64_t size,
                             el_bundle_sink sink, void *ctx, el_error *err)
{
    enum { CHUNK = 1 << 16 };
    uint8_t *buf = el_malloc(CHUNK);
    if (!buf)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    el_sha256_ctx sha;
    el_sha256_init(&sha);
    uint64_t left = size;
    int rc = 0;
    while (left > 0) {
        size_t want = left > CHUNK ? CHUNK : (size_t)left;
        size_t got;
        rc = read_full(fd, buf, want, &got, err);
        if (rc < 0)
            goto out;
        el_sha256_update(&sha, buf, got);
        if (sink && got && (rc = sink(ctx, buf, got, err)))
            goto out;
        left -= got;
        if (got < want) {
            rc = el_error_set_tag(err, EL_ETRUST, "truncated",
                                  "payload ends %llu bytes short of the manifest's size",
                                  (unsigned long long)left);
            goto out;
        }
    }
    uint8_t extra;
    size_t got;
    rc = read_full(fd, &extra, 1, &got, err);
    if (rc < 0)
        goto out;
    if (got) {
        rc = el_error_set_tag(err, EL_ETRUST, "oversize",
                              "payload is longer than the manifest's %llu bytes",
                              (unsigned long long)size);
        goto out;
    }
    uint8_t hash[EL_SHA256_LEN];
    el_sha256_final(&sha, hash);
    rc = payload_verdict(hash, sha256_hex, err);
out:
    el_free(buf);
    return rc;
}

/* The signed message: "edgeloop-bundle-v1" 0x00 header, in a new buffer. */
static uint8_t *signed_message(const uint8_t *header, size_t header_len, size_t *len)
{
    uint8_t *msg = el_malloc(EL_BUNDLE_CONTEXT_LEN + header_len);
    if (!msg)
        return NULL;
    memcpy(msg, EL_BUNDLE_CONTEXT, EL_BUNDLE_CONTEXT_LEN);   /* with its NUL */
    memcpy(msg + EL_BUNDLE_CONTEXT_LEN, header, header_len);
    *len = EL_BUNDLE_CONTEXT_LEN + header_len;
    return msg;
}

int el_bundle_verify_sig(const el_bundle *b, size_t i, const el_crypto_key *key,
                         el_error *err)
{
    size_t len;
    uint8_t *msg = signed_message(b->header, b->header_len, &len);
    if (!msg)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    int rc = el_crypto_verify(key, msg, len, b->sigs[i].sig, b->sigs[i].sig_len, err);
    el_free(msg);
    if (rc)
        return el_error_set_tag(err, EL_ETRUST, "bad_signature",
                                "signature by key %.16s does not verify over the "
                                "bundle header", b->sigs[i].key_id);
    return 0;
}

int el_bundle_sign_header(const uint8_t *header, size_t header_len,
                          const el_crypto_key *key, el_bundle_sig *sig, el_error *err)
{
    memset(sig, 0, sizeof *sig);
    int rc = el_crypto_key_id(key, sig->key_id, err);
    if (rc)
        return rc;
    size_t len;
    uint8_t *msg = signed_message(header, header_len, &len);
    if (!msg)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    rc = el_crypto_sign(key, msg, len, sig->sig, &sig->sig_len, err);
    el_free(msg);
    return rc;
}

int el_bundle_add_signature(el_bundle *b, const el_crypto_key *key, el_error *err)
{
    el_bundle_sig sig;
    int rc = el_bundle_sign_header(b->header, b->header_len, key, &sig, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < b->n_sigs; i++)
        if (strcmp(b->sigs[i].key_id, sig.key_id) == 0)
            return el_error_set_tag(err, EL_ETRUST, "duplicate_signer",
                                    "key %s already signed this bundle", sig.key_id);
    if (b->n_sigs >= EL_BUNDLE_SIGS_MAX)
        return el_error_set_tag(err, EL_ETRUST, "oversize",
                                "bundle already has %u signatures", EL_BUNDLE_SIGS_MAX);
    b->sigs[b->n_sigs++] = sig;
    return 0;
}

int el_bundle_serialize(const el_bundle *b, uint8_t **out, size_t *len, el_error *err)
{
    *out = NULL;
    *len = 0;
    if (b->header_len > EL_BUNDLE_HEADER_MAX || b->header_len == 0)
        return el_error_set_tag(err, EL_ETRUST, "oversize",
                                "bundle header of %zu bytes (1..%u allowed)",
                                b->header_len, EL_BUNDLE_HEADER_MAX);
    if (b->n_sigs > EL_BUNDLE_SIGS_MAX)
        return el_error_set_tag(err, EL_ETRUST, "oversize", "too many signatures");
    size_t total = 8 + b->header_len + 2;
    for (size_t i = 0; i < b->n_sigs; i++)
        total += 4 + strlen(b->sigs[i].key_id) + b->sigs[i].sig_len;
    size_t payload_len = b->payload ? b->payload_len : 0;
    if (payload_len > SIZE_MAX - total)
        return el_error_set_tag(err, EL_ETRUST, "oversize", "bundle too large");
    total += payload_len;
    uint8_t *buf = el_malloc(total ? total : 1);
    if (!buf)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    uint8_t *p = buf;
    memcpy(p, EL_BUNDLE_MAGIC, 4);
    wr32(p + 4, (uint32_t)b->header_len);
    p += 8;
    memcpy(p, b->header, b->header_len);
    p += b->header_len;
    wr16(p, (uint16_t)b->n_sigs);
    p += 2;
    for (size_t i = 0; i < b->n_sigs; i++) {
        size_t kl = strlen(b->sigs[i].key_id);
        wr16(p, (uint16_t)kl);
        memcpy(p + 2, b->sigs[i].key_id, kl);
        p += 2 + kl;
        wr16(p, (uint16_t)b->sigs[i].sig_len);
        memcpy(p + 2, b->sigs[i].sig, b->sigs[i].sig_len);
        p += 2 + b->sigs[i].sig_len;
    }
    if (payload_len)
        memcpy(p, b->payload, payload_len);
    *out = buf;
    *len = total;
    return 0;
}
