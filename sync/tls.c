/* Mutual TLS over mbedTLS 2.28 (see tls.h for the contract).
 *
 * Design notes:
 *  1. Protocol: min = max = TLS 1.2 (SSL 3.3). Debian's 2.28 still compiles
 *     in TLS 1.0/1.1, so the version is pinned in the config, not assumed.
 *  2. Suites: ECDHE-ECDSA with AES-128/256-GCM only. Certificates are P-256;
 *     the ECDHE group is X25519 (RFC 8422), P-256 for a peer that does not
 *     offer it, nothing else (mbedTLS's default list would let a client,
 *     ours included, pick secp521r1, several times slower). X25519 because
 *     each side of a full handshake makes one ephemeral key and one shared
 *     secret in a group loaded for that handshake: with mbedTLS 2.28 that
 *     is ~1.5 ms on X25519 against ~2.2 ms on P-256 here (P-256 rebuilds its
 *     generator table every time), and a full handshake was the hub's
 *     largest cost (docs/decisions.md 18).
 *  3. Time: mbedTLS judges validity by the wall clock, which a device that
 *     boots at 1970 or an attacker who sets the clock back can get wrong. The
 *     verify callback clears mbedTLS's EXPIRED/FUTURE verdicts and recomputes
 *     them against max(clock, trusted floor). The same check, plus the
 *     revocation list and the role, runs again after every handshake
 *     (check_peer), because a resumed session skips certificate verification
 *     and the list may have grown since the session was made.
 *  4. I/O: our own socket callbacks poll() before each read/write with the
 *     smaller of the per-operation timeout and the connection deadline, so a
 *     peer that trickles bytes (slowloris) cannot hold a worker longer than
 *     the deadline its caller set.
 *  5. Resumption: the server issues tickets (AES-256-GCM keys rotated by
 *     mbedTLS) and also keeps a session-id cache; a client context keeps the
 *     last session it made and offers it. A handshake is "resumed" when it
 *     completed without running certificate verification.
 *  6. Threads: mbedTLS is built with MBEDTLS_THREADING_PTHREAD, so the DRBG,
 *     ticket keys and cache lock themselves; our revocation list, time floor
 *     and remembered session are guarded by ctx->lock.
 *  7. The own key (signs in every handshake) and the CA certificates (verify
 *     in every handshake) are shared by all connections of a context, and
 *     mbedTLS writes a key's group on its first multiplication (the lazy
 *     table of the generator). So the context warms them when it loads
 *     them: no two workers race on that first write. (With note 10 the own
 *     key signs in the shared group instead; the warm group still serves
 *     a build without the key-method copy.)
 *  8. Certificate verification is remembered. A device reconnects with the
 *     same certificate, and a client always meets the same hub, yet mbedTLS
 *     checks the CA's signature on every full handshake (one ECDSA
 *     verification, ~1.7 ms here). So the config holds no trust anchor and
 *     runs in VERIFY_OPTIONAL; mbedTLS still parses the chain, checks the
 *     CertificateVerify / ServerKeyExchange signature (proof of the key),
 *     the key curve and usage, and calls verify_cb, which runs chain_check:
 *     a full mbedtls_x509_crt_verify against the fleet CA (host name
 *     included) the first time a certificate is seen, a table lookup after.
 *     A refusal in verify_cb is a fatal error in any auth mode. check_peer
 *     then refuses any other mbedTLS verdict, runs chain_check again (for
 *     resumed sessions) and the time / revocation / role checks, which are
 *     never cached. A peer refused after the handshake gets a fatal alert.
 *     The table holds digests only and is bounded (VERIFIED_SERVER /
 *     VERIFIED_CLIENT entries, least recently used out).
 *  9. The peer's key verifies one signature of the handshake (its
 *     CertificateVerify on the hub, the ServerKeyExchange on a device). In
 *     mbedTLS that is a group loaded for this one use, which builds a comb
 *     table for the generator and one for the peer's point: 2.3 of the
 *     hub's 7.6 ms per full sync (perf). A hub meets the same devices again
 *     and a device always the same hub, so verify_cb points the peer key at
 *     a copy of mbedTLS's EC key methods whose verify goes to
 *     el_crypto_ecp_verify_hash, which keeps both tables (crypto.c note 8).
 *     The copy needs the method table's layout, which mbedTLS 2.28 installs
 *     as pk_internal.h; built against another mbedTLS (no such header, or
 *     not 2.28), verify_cb only lends the group the shared generator table
 *     (el_crypto_ecp_adopt_table) as before. Either way mbedTLS decides
 *     when to verify and refuses the handshake on a bad signature (tested
 *     with a key that does not match its certificate, both ends).
 * 10. The own key signs one handshake message per full handshake. mbedTLS's
 *     EC key methods sign in a copy of the key's group, loaded afresh, so
 *     its generator table is rebuilt every time (pk_sign 1.1 ms against
 *     0.45 ms for the same deterministic ECDSA in a warm group, measured
 *     here). The same copied methods (note 9) sign through
 *     el_crypto_ecp_sign_hash in the shared warm group: the same RFC 6979
 *     signature bytes, mbedTLS's random generator for the blinding.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cache.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>
#if MBEDTLS_VERSION_MAJOR == 2 && MBEDTLS_VERSION_MINOR == 28 && \
    defined(__has_include) && __has_include(<mbedtls/pk_internal.h>)
#include <mbedtls/pk_internal.h>
#define EL_TLS_KEY_METHODS 1   /* design note 9 */
#endif

#include "base/alloc.h"
#include "base/digest_set.h"
#include "base/sha256.h"
#include "crypto.h"

/* Certificates remembered as verified: a hub meets every device of its
 * fleet, a device one hub. */
#define VERIFIED_SERVER 4096
#define VERIFIED_CLIENT 16

struct el_tls_ctx {
    int is_server;
    int resume;
    int hs_timeout_ms;
    int io_timeout_ms;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt ca;
    mbedtls_x509_crt own;
    mbedtls_pk_context key;
    mbedtls_ssl_config conf;
    mbedtls_ssl_ticket_context ticket;
    mbedtls_ssl_cache_context cache;

    pthread_mutex_t lock;      /* guards the fields below */
    char **revoked;            /* normalized serials */
    size_t n_revoked;
    int64_t trusted_time;
    mbedtls_ssl_session session;
    int have_session;
    /* design note 8: certificates already verified against the CA, keyed
     * by SHA-256(expected host NUL DER); bounded, least recently used out */
    el_digest_set verified;
};

struct el_tls_conn {
    el_tls_ctx *ctx;
    int fd;
    int verified;              /* verify callback ran: a full handshake */
    uint32_t chain_flags;      /* why our chain check refused, for errors */
    char host[256];            /* the name the client expects, "" on a server */
    int64_t deadline;          /* monotonic ms, 0 = none */
    mbedtls_ssl_context ssl;
    el_tls_peer peer;
};

/* Design note 2. The list serves both the ECDHE group and the curve a
 * certificate key may use; the server takes the first entry of its own list
 * the client offers. */
static const mbedtls_ecp_group_id curves[] = {
    MBEDTLS_ECP_DP_CURVE25519,
    MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_NONE,
};

static const int suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    0,
};

const char *el_tls_role_name(el_tls_role role)
{
    switch (role) {
    case EL_TLS_ROLE_DEVICE: return "device";
    case EL_TLS_ROLE_HUB: return "hub";
    case EL_TLS_ROLE_ADMIN: return "admin";
    default: return "none";
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *tls_strerror(int rc, char *buf, size_t n)
{
    mbedtls_strerror(rc, buf, n);
    return buf;
}

/* Serial as lowercase hex without leading zeros, so "00ab" and "ab" match. */
static void normalize_serial(const char *in, char *out, size_t n)
{
    while (*in == '0' && in[1])
        in++;
    size_t i = 0;
    for (; in[i] && i + 1 < n; i++)
        out[i] = (char)((in[i] >= 'A' && in[i] <= 'F') ? in[i] + 32 : in[i]);
    out[i] = '\0';
}

static void serial_hex(const mbedtls_x509_crt *crt, char *out, size_t n)
{
    char raw[2 * 32 + 1];
    size_t len = crt->serial.len > 32 ? 32 : crt->serial.len;
    el_hex(crt->serial.p, len, raw);
    normalize_serial(raw, out, n);
}

static int64_t x509_epoch(const mbedtls_x509_time *t)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = t->year - 1900;
    tm.tm_mon = t->mon - 1;
    tm.tm_mday = t->day;
    tm.tm_hour = t->hour;
    tm.tm_min = t->min;
    tm.tm_sec = t->sec;
    return (int64_t)timegm(&tm);
}

static int64_t trusted_now(el_tls_ctx *ctx)
{
    int64_t now = (int64_t)time(NULL);
    pthread_mutex_lock(&ctx->lock);
    if (ctx->trusted_time > now)
        now = ctx->trusted_time;
    pthread_mutex_unlock(&ctx->lock);
    return now;
}

static int is_revoked(el_tls_ctx *ctx, const char *serial)
{
    int hit = 0;
    pthread_mutex_lock(&ctx->lock);
    for (size_t i = 0; i < ctx->n_revoked && !hit; i++)
        hit = !strcmp(ctx->revoked[i], serial);
    pthread_mutex_unlock(&ctx->lock);
    return hit;
}

/* Flags for CRT's validity at the trusted time (design note 3). */
static uint32_t time_flags(el_tls_ctx *ctx, const mbedtls_x509_crt *crt)
{
    int64_t now = trusted_now(ctx);
    uint32_t flags = 0;
    if (x509_epoch(&crt->valid_to) < now)
        flags |= MBEDTLS_X509_BADCERT_EXPIRED;
    if (x509_epoch(&crt->valid_from) > now)
        flags |= MBEDTLS_X509_BADCERT_FUTURE;
    return flags;
}

/* Callback of our own chain verification: validity at the trusted time
 * (design note 3) and the revocation list. */
static int chain_cb(void *p, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    el_tls_conn *conn = p;
    *flags &= ~(uint32_t)(MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE);
    *flags |= time_flags(conn->ctx, crt);
    if (depth == 0) {
        char serial[EL_TLS_SERIAL_MAX];
        serial_hex(crt, serial, sizeof serial);
        if (is_revoked(conn->ctx, serial))
            *flags |= MBEDTLS_X509_BADCERT_REVOKED;
    }
    return 0;
}

/* Checks that CRT (with the chain the peer sent after it) leads to the
 * fleet CA and names the host we expect (client side), remembering a
 * success (design note 8). Returns 0, or -1 with the verdict in *FLAGS. */
static int chain_check(el_tls_conn *conn, const mbedtls_x509_crt *crt, uint32_t *flags)
{
    el_tls_ctx *ctx = conn->ctx;
    uint8_t key[EL_SHA256_LEN];
    el_sha256_ctx h;
    el_sha256_init(&h);
    el_sha256_update(&h, conn->host, strlen(conn->host) + 1);
    el_sha256_update(&h, crt->raw.p, crt->raw.len);
    el_sha256_final(&h, key);
    if (el_digest_set_has(&ctx->verified, key))
        return 0;
    *flags = 0;
    int rc = mbedtls_x509_crt_verify_with_profile((mbedtls_x509_crt *)crt, &ctx->ca, NULL,
                                                  &mbedtls_x509_crt_profile_default,
                                                  conn->host[0] ? conn->host : NULL, flags,
                                                  chain_cb, conn);
    if (rc) {
        if (!*flags)
            *flags = MBEDTLS_X509_BADCERT_OTHER;
        return -1;
    }
    el_digest_set_add(&ctx->verified, key);
    return 0;
}

static _Atomic uint64_t table_verifies;

uint64_t el_tls_table_verifications(void)
{
    return table_verifies;
}

int el_tls_remembers_keys(void)
{
#ifdef EL_TLS_KEY_METHODS
    return 1;
#else
    return 0;
#endif
}

#ifdef EL_TLS_KEY_METHODS
/* mbedTLS's EC key methods with the verification replaced (design note 9). */
static mbedtls_pk_info_t remembered_eckey;
static int remembered_ok;
static pthread_once_t remembered_once = PTHREAD_ONCE_INIT;
static int (*eckey_verify)(void *, mbedtls_md_type_t, const unsigned char *, size_t,
                           const unsigned char *, size_t);
static int (*eckey_sign)(void *, mbedtls_md_type_t, const unsigned char *, size_t,
                         unsigned char *, size_t *, int (*)(void *, unsigned char *, size_t),
                         void *);

static int remembered_verify(void *ctx, mbedtls_md_type_t md_alg, const unsigned char *hash,
                             size_t hash_len, const unsigned char *sig, size_t sig_len)
{
    int r = el_crypto_ecp_verify_hash(ctx, hash, hash_len, sig, sig_len);
    if (r < 0)
        return eckey_verify(ctx, md_alg, hash, hash_len, sig, sig_len);
    table_verifies++;
    return r == 0 ? 0 : MBEDTLS_ERR_ECP_VERIFY_FAILED;
}

static int remembered_sign(void *ctx, mbedtls_md_type_t md_alg, const unsigned char *hash,
                           size_t hash_len, unsigned char *sig, size_t *sig_len,
                           int (*f_rng)(void *, unsigned char *, size_t), void *p_rng)
{
    int r = el_crypto_ecp_sign_hash(ctx, (int)md_alg, hash, hash_len, sig, sig_len, f_rng,
                                    p_rng);
    return r == -1 ? eckey_sign(ctx, md_alg, hash, hash_len, sig, sig_len, f_rng, p_rng) : r;
}

static void remembered_init(void)
{
    const mbedtls_pk_info_t *info = mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY);
    if (!info || !info->verify_func || !info->sign_func)
        return;
    remembered_eckey = *info;
    eckey_verify = info->verify_func;
    eckey_sign = info->sign_func;
    remembered_eckey.verify_func = remembered_verify;
    remembered_eckey.sign_func = remembered_sign;
    remembered_ok = 1;
}

/* Points PK (a peer certificate's key, or the context's own key) at the
 * remembered methods. Returns 1 when it did. */
static int remember_key(mbedtls_pk_context *pk)
{
    pthread_once(&remembered_once, remembered_init);
    if (!remembered_ok || pk->pk_info != mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY) ||
        mbedtls_pk_ec(*pk)->grp.id != MBEDTLS_ECP_DP_SECP256R1)
        return 0;
    pk->pk_info = &remembered_eckey;
    return 1;
}
#else
static int remember_key(mbedtls_pk_context *pk)
{
    (void)pk;
    return 0;
}
#endif

/* mbedTLS's verification, run with no trust anchor (design note 8): it has
 * built the chain the peer sent and marked the top NOT_TRUSTED. The leaf's
 * call (last, depth 0) runs our chain check; a refusal returns an error
 * that is fatal even in VERIFY_OPTIONAL. */
static int verify_cb(void *p, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    el_tls_conn *conn = p;
    conn->verified = 1;
    /* certificates the peer sent above its own: judged by chain_check */
    if (depth > 0) {
        *flags = 0;
        return 0;
    }
    uint32_t verdict = 0;
    if (chain_check(conn, crt, &verdict)) {
        conn->chain_flags = verdict;
        return MBEDTLS_ERR_X509_FATAL_ERROR;
    }
    *flags = 0;
    /* design note 9 */
    if (mbedtls_pk_can_do(&crt->pk, MBEDTLS_PK_ECKEY) && !remember_key(&crt->pk))
        el_crypto_ecp_adopt_table(&mbedtls_pk_ec(crt->pk)->grp);
    return 0;
}

/* Copies the first attribute OID of NAME into OUT ("" when absent). */
static void name_attr(const mbedtls_x509_name *name, const char *oid,
                      size_t oid_len, char *out, size_t n)
{
    out[0] = '\0';
    for (; name; name = name->next) {
        if (name->oid.len == oid_len && !memcmp(name->oid.p, oid, oid_len)) {
            size_t len = name->val.len < n - 1 ? name->val.len : n - 1;
            memcpy(out, name->val.p, len);
            out[len] = '\0';
            return;
        }
    }
}

int el_tls_ctx_session_save(el_tls_ctx *ctx, uint8_t **out, size_t *len, el_error *err)
{
    *out = NULL;
    *len = 0;
    pthread_mutex_lock(&ctx->lock);
    int rc = 0;
    size_t need = 0;
    if (!ctx->have_session) {
        rc = el_error_set(err, EL_ENOTFOUND, "no TLS session to save");
    } else if (mbedtls_ssl_session_save(&ctx->session, NULL, 0, &need) !=
                   MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL ||
               !need) {
        rc = el_error_set(err, EL_EINTERNAL, "the TLS session cannot be serialized");
    } else if (!(*out = el_malloc(need))) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory for a TLS session");
    } else if (mbedtls_ssl_session_save(&ctx->session, *out, need, len) != 0) {
        el_free(*out);
        *out = NULL;
        rc = el_error_set(err, EL_EINTERNAL, "the TLS session cannot be serialized");
    }
    pthread_mutex_unlock(&ctx->lock);
    return rc;
}

int el_tls_ctx_session_load(el_tls_ctx *ctx, const uint8_t *buf, size_t len, el_error *err)
{
    mbedtls_ssl_session s;
    mbedtls_ssl_session_init(&s);
    if (mbedtls_ssl_session_load(&s, buf, len) != 0) {
        mbedtls_ssl_session_free(&s);
        return el_error_set(err, EL_EINPUT, "saved TLS session does not load");
    }
    pthread_mutex_lock(&ctx->lock);
    mbedtls_ssl_session_free(&ctx->session);
    ctx->session = s;
    ctx->have_session = 1;
    pthread_mutex_unlock(&ctx->lock);
    return 0;
}

/* Maps verification flags to our error model. Returns EL_ETRUST. */
static int flags_error(uint32_t flags, el_error *err)
{
    if (flags & MBEDTLS_X509_BADCERT_REVOKED)
        return el_error_set_tag(err, EL_ETRUST, "revoked", "TLS peer certificate is revoked");
    if (flags & (MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE))
        return el_error_set_tag(err, EL_ETRUST, "expired",
                                "TLS peer certificate is not valid at the trusted time");
    if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH)
        return el_error_set_tag(err, EL_ETRUST, "untrusted_signer",
                                "TLS peer certificate does not name the host");
    return el_error_set_tag(err, EL_ETRUST, "untrusted_signer",
                            "TLS peer certificate is not from the fleet CA (flags 0x%x)",
                            (unsigned)flags);
}

/* Fills conn->peer from the peer certificate and applies the checks that a
 * resumed session would otherwise skip (design note 3). */
static int check_peer(el_tls_conn *conn, el_error *err)
{
    const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(&conn->ssl);
    el_tls_peer *peer = &conn->peer;
    if (!crt)
        return el_error_set_tag(err, EL_ETRUST, "no_certificate",
                                "TLS peer sent no certificate");
    /* mbedTLS's own checks (key curve, key usage, ...; kept in a resumed
     * session) are not enforced by VERIFY_OPTIONAL: refuse any verdict but
     * the missing trust anchor that chain_check stands in for */
    uint32_t mbed_flags = mbedtls_ssl_get_verify_result(&conn->ssl);
    if (mbed_flags & ~(uint32_t)MBEDTLS_X509_BADCERT_NOT_TRUSTED)
        return flags_error(mbed_flags, err);
    uint32_t verdict = 0;
    if (chain_check(conn, crt, &verdict))
        return flags_error(verdict, err);
    name_attr(&crt->subject, MBEDTLS_OID_AT_CN, MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_CN),
              peer->cn, sizeof peer->cn);
    name_attr(&crt->subject, MBEDTLS_OID_AT_ORG_UNIT,
              MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_ORG_UNIT), peer->ou, sizeof peer->ou);
    name_attr(&crt->subject, MBEDTLS_OID_AT_ORGANIZATION,
              MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_ORGANIZATION), peer->group,
              sizeof peer->group);
    serial_hex(crt, peer->serial, sizeof peer->serial);
    el_sha256_hex(crt->pk_raw.p, crt->pk_raw.len, peer->key_id);
    peer->der = crt->raw.p;
    peer->der_len = crt->raw.len;
    if (!strcmp(peer->ou, "device"))
        peer->role = EL_TLS_ROLE_DEVICE;
    else if (!strcmp(peer->ou, "hub"))
        peer->role = EL_TLS_ROLE_HUB;
    else if (!strcmp(peer->ou, "admin"))
        peer->role = EL_TLS_ROLE_ADMIN;
    else
        peer->role = EL_TLS_ROLE_NONE;

    if (is_revoked(conn->ctx, peer->serial))
        return el_error_set_tag(err, EL_ETRUST, "revoked",
                                "TLS peer certificate %s (serial %s) is revoked",
                                peer->cn, peer->serial);
    if (time_flags(conn->ctx, crt))
        return el_error_set_tag(err, EL_ETRUST, "expired",
                                "TLS peer certificate %s is not valid at the trusted time",
                                peer->cn);
    int ok_role = conn->ctx->is_server
                      ? (peer->role == EL_TLS_ROLE_DEVICE || peer->role == EL_TLS_ROLE_ADMIN)
                      : peer->role == EL_TLS_ROLE_HUB;
    if (!ok_role || !peer->cn[0])
        return el_error_set_tag(err, EL_ETRUST, "bad_role",
                                "TLS peer certificate %s has role \"%s\", not allowed here",
                                peer->cn, peer->ou);
    return 0;
}

/* Waits for EVENTS on the socket within the I/O timeout and the deadline.
 * Returns 1 ready, 0 timed out, -1 on a poll error. */
static int wait_fd(el_tls_conn *conn, short events)
{
    for (;;) {
        int64_t timeout = conn->ctx->io_timeout_ms;
        if (conn->deadline) {
            int64_t left = conn->deadline - now_ms();
            if (left <= 0)
                return 0;
            if (left < timeout)
                timeout = left;
        }
        struct pollfd pfd = {.fd = conn->fd, .events = events};
        int rc = poll(&pfd, 1, (int)timeout);
        if (rc > 0)
            return 1;
        if (rc == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

static int bio_send(void *p, const unsigned char *buf, size_t len)
{
    el_tls_conn *conn = p;
    for (;;) {
        int w = wait_fd(conn, POLLOUT);
        if (w == 0)
            return MBEDTLS_ERR_SSL_TIMEOUT;
        if (w < 0)
            return MBEDTLS_ERR_NET_SEND_FAILED;
        ssize_t n = send(conn->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0)
            return (int)n;
        if (errno == EINTR || errno == EAGAIN)
            continue;
        return (errno == EPIPE || errno == ECONNRESET) ? MBEDTLS_ERR_NET_CONN_RESET
                                                        : MBEDTLS_ERR_NET_SEND_FAILED;
    }
}

static int bio_recv(void *p, unsigned char *buf, size_t len)
{
    el_tls_conn *conn = p;
    for (;;) {
        int w = wait_fd(conn, POLLIN);
        if (w == 0)
            return MBEDTLS_ERR_SSL_TIMEOUT;
        if (w < 0)
            return MBEDTLS_ERR_NET_RECV_FAILED;
        ssize_t n = recv(conn->fd, buf, len, 0);
        if (n >= 0)
            return (int)n;
        if (errno == EINTR || errno == EAGAIN)
            continue;
        return errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET
                                   : MBEDTLS_ERR_NET_RECV_FAILED;
    }
}

int el_tls_ctx_create(const el_tls_opts *opts, el_tls_ctx **out, el_error *err)
{
    static const char pers[] = "edgeloop-tls";
    char ebuf[128];
    int rc;
    *out = NULL;
    el_tls_ctx *ctx = el_calloc(1, sizeof *ctx);
    if (!ctx)
        return el_error_set(err, EL_ENOMEM, "out of memory for a TLS context");
    ctx->is_server = opts->is_server;
    ctx->resume = opts->resume;
    ctx->hs_timeout_ms = opts->handshake_timeout_ms > 0 ? opts->handshake_timeout_ms : 10000;
    ctx->io_timeout_ms = opts->io_timeout_ms > 0 ? opts->io_timeout_ms : 10000;
    ctx->trusted_time = opts->trusted_time;
    pthread_mutex_init(&ctx->lock, NULL);
    mbedtls_entropy_init(&ctx->entropy);
    mbedtls_ctr_drbg_init(&ctx->drbg);
    mbedtls_x509_crt_init(&ctx->ca);
    mbedtls_x509_crt_init(&ctx->own);
    mbedtls_pk_init(&ctx->key);
    mbedtls_ssl_config_init(&ctx->conf);
    mbedtls_ssl_ticket_init(&ctx->ticket);
    mbedtls_ssl_cache_init(&ctx->cache);
    mbedtls_ssl_session_init(&ctx->session);
    if (el_digest_set_init(&ctx->verified,
                           opts->is_server ? VERIFIED_SERVER : VERIFIED_CLIENT)) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory for a TLS context");
        goto fail;
    }

    rc = mbedtls_ctr_drbg_seed(&ctx->drbg, mbedtls_entropy_func, &ctx->entropy,
                               (const unsigned char *)pers, sizeof pers - 1);
    if (rc) {
        rc = el_error_set(err, EL_EINTERNAL, "TLS random generator: %s",
                          tls_strerror(rc, ebuf, sizeof ebuf));
        goto fail;
    }
    if ((rc = mbedtls_x509_crt_parse_file(&ctx->ca, opts->ca_path)) != 0) {
        rc = el_error_set(err, EL_EINPUT, "%s: cannot read CA certificate: %s",
                          opts->ca_path, tls_strerror(rc, ebuf, sizeof ebuf));
        goto fail;
    }
    if ((rc = mbedtls_x509_crt_parse_file(&ctx->own, opts->cert_path)) != 0) {
        rc = el_error_set(err, EL_EINPUT, "%s: cannot read certificate: %s",
                          opts->cert_path, tls_strerror(rc, ebuf, sizeof ebuf));
        goto fail;
    }
    if ((rc = mbedtls_pk_parse_keyfile(&ctx->key, opts->key_path, NULL)) != 0) {
        rc = el_error_set(err, EL_EINPUT, "%s: cannot read private key: %s",
                          opts->key_path, tls_strerror(rc, ebuf, sizeof ebuf));
        goto fail;
    }
    if (mbedtls_pk_get_type(&ctx->key) != MBEDTLS_PK_ECKEY) {
        rc = el_error_set(err, EL_EINPUT, "%s: not an EC (P-256) key", opts->key_path);
        goto fail;
    }
    /* design note 7 */
    for (mbedtls_x509_crt *c = &ctx->ca; c && c->raw.p; c = c->next)
        if (mbedtls_pk_can_do(&c->pk, MBEDTLS_PK_ECKEY))
            el_crypto_ecp_warm(&mbedtls_pk_ec(c->pk)->grp);
    el_crypto_ecp_warm(&mbedtls_pk_ec(ctx->key)->grp);
    remember_key(&ctx->key);   /* design note 10 */
    rc = mbedtls_ssl_config_defaults(&ctx->conf,
                                     opts->is_server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                     MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc) {
        rc = el_error_set(err, EL_EINTERNAL, "TLS config: %s", tls_strerror(rc, ebuf, sizeof ebuf));
        goto fail;
    }
    mbedtls_ssl_conf_min_version(&ctx->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(&ctx->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(&ctx->conf, suites);
    mbedtls_ssl_conf_curves(&ctx->conf, curves);
    mbedtls_ssl_conf_rng(&ctx->conf, mbedtls_ctr_drbg_random, &ctx->drbg);
    /* design note 8: no trust anchor in the config, chain_check decides */
    mbedtls_ssl_conf_authmode(&ctx->conf, MBEDTLS_SSL_VERIFY_OPTIONAL);
    mbedtls_ssl_conf_renegotiation(&ctx->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    if ((rc = mbedtls_ssl_conf_own_cert(&ctx->conf, &ctx->own, &ctx->key)) != 0) {
        rc = el_error_set(err, EL_EINPUT, "%s: certificate does not fit key %s: %s",
                          opts->cert_path, opts->key_path, tls_strerror(rc, ebuf, sizeof ebuf));
        goto fail;
    }
    if (opts->is_server) {
        if (opts->resume) {
            rc = mbedtls_ssl_ticket_setup(&ctx->ticket, mbedtls_ctr_drbg_random, &ctx->drbg,
                                          MBEDTLS_CIPHER_AES_256_GCM, 86400);
            if (rc) {
                rc = el_error_set(err, EL_EINTERNAL, "TLS session tickets: %s",
                                  tls_strerror(rc, ebuf, sizeof ebuf));
                goto fail;
            }
            mbedtls_ssl_conf_session_tickets_cb(&ctx->conf, mbedtls_ssl_ticket_write,
                                                mbedtls_ssl_ticket_parse, &ctx->ticket);
            mbedtls_ssl_conf_session_cache(&ctx->conf, &ctx->cache, mbedtls_ssl_cache_get,
                                           mbedtls_ssl_cache_set);
        }
    } else {
        mbedtls_ssl_conf_session_tickets(&ctx->conf, opts->resume
                                                         ? MBEDTLS_SSL_SESSION_TICKETS_ENABLED
                                                         : MBEDTLS_SSL_SESSION_TICKETS_DISABLED);
    }
    if ((rc = el_tls_ctx_set_revoked(ctx, opts->revoked, opts->n_revoked, err)) != 0)
        goto fail;
    *out = ctx;
    return 0;
fail:
    el_tls_ctx_destroy(ctx);
    return rc;
}

static void free_revoked(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        el_free(list[i]);
    el_free(list);
}

void el_tls_ctx_destroy(el_tls_ctx *ctx)
{
    if (!ctx)
        return;
    mbedtls_ssl_session_free(&ctx->session);
    mbedtls_ssl_cache_free(&ctx->cache);
    mbedtls_ssl_ticket_free(&ctx->ticket);
    mbedtls_ssl_config_free(&ctx->conf);
    mbedtls_pk_free(&ctx->key);
    mbedtls_x509_crt_free(&ctx->own);
    mbedtls_x509_crt_free(&ctx->ca);
    mbedtls_ctr_drbg_free(&ctx->drbg);
    mbedtls_entropy_free(&ctx->entropy);
    el_digest_set_finish(&ctx->verified);
    free_revoked(ctx->revoked, ctx->n_revoked);
    pthread_mutex_destroy(&ctx->lock);
    el_free(ctx);
}

int el_tls_ctx_set_revoked(el_tls_ctx *ctx, const char *const *serials, size_t n,
                           el_error *err)
{
    char **list = n ? el_calloc(n, sizeof *list) : NULL;
    if (n && !list)
        return el_error_set(err, EL_ENOMEM, "out of memory for the revocation list");
    for (size_t i = 0; i < n; i++) {
        char norm[EL_TLS_SERIAL_MAX];
        normalize_serial(serials[i], norm, sizeof norm);
        if (!(list[i] = el_strdup(norm))) {
            free_revoked(list, i);
            return el_error_set(err, EL_ENOMEM, "out of memory for the revocation list");
        }
    }
    pthread_mutex_lock(&ctx->lock);
    char **old = ctx->revoked;
    size_t old_n = ctx->n_revoked;
    ctx->revoked = list;
    ctx->n_revoked = n;
    pthread_mutex_unlock(&ctx->lock);
    free_revoked(old, old_n);
    return 0;
}

void el_tls_ctx_set_trusted_time(el_tls_ctx *ctx, int64_t t)
{
    pthread_mutex_lock(&ctx->lock);
    if (t > ctx->trusted_time)
        ctx->trusted_time = t;
    pthread_mutex_unlock(&ctx->lock);
}

void el_tls_ctx_forget_session(el_tls_ctx *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    mbedtls_ssl_session_free(&ctx->session);
    mbedtls_ssl_session_init(&ctx->session);
    ctx->have_session = 0;
    pthread_mutex_unlock(&ctx->lock);
}

/* Maps a failed handshake to our error model, naming the verification
 * verdict when there is one. */
static int handshake_error(el_tls_conn *conn, int rc, el_error *err)
{
    char ebuf[128];
    if (rc == MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE)
        return el_error_set_tag(err, EL_ETRUST, "no_certificate",
                                "TLS client presented no certificate");
    if (rc == MBEDTLS_ERR_X509_FATAL_ERROR && conn->chain_flags)
        return flags_error(conn->chain_flags, err);
    if (rc == MBEDTLS_ERR_SSL_TIMEOUT)
        return el_error_set(err, EL_EIO, "TLS handshake timed out");
    return el_error_set(err, EL_EIO, "TLS handshake failed: %s",
                        tls_strerror(rc, ebuf, sizeof ebuf));
}

/* The alert that tells a peer why it was refused after the handshake. */
static unsigned char refusal_alert(const el_error *err)
{
    if (!err)
        return MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED;
    if (!strcmp(err->tag, "revoked"))
        return MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED;
    if (!strcmp(err->tag, "expired"))
        return MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED;
    if (!strcmp(err->tag, "untrusted_signer"))
        return MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA;
    if (!strcmp(err->tag, "no_certificate"))
        return MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE;
    return MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED;
}

static int conn_new(el_tls_ctx *ctx, int fd, el_tls_conn **out, el_error *err)
{
    char ebuf[128];
    el_tls_conn *conn = el_calloc(1, sizeof *conn);
    if (!conn) {
        close(fd);
        return el_error_set(err, EL_ENOMEM, "out of memory for a TLS connection");
    }
    conn->ctx = ctx;
    conn->fd = fd;
    mbedtls_ssl_init(&conn->ssl);
    int rc = mbedtls_ssl_setup(&conn->ssl, &ctx->conf);
    if (rc) {
        el_tls_close(conn);
        return el_error_set(err, EL_ENOMEM, "TLS setup: %s", tls_strerror(rc, ebuf, sizeof ebuf));
    }
    mbedtls_ssl_set_bio(&conn->ssl, conn, bio_send, bio_recv, NULL);
    mbedtls_ssl_set_verify(&conn->ssl, verify_cb, conn);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *out = conn;
    return 0;
}

static int run_handshake(el_tls_conn *conn, el_error *err)
{
    conn->deadline = now_ms() + conn->ctx->hs_timeout_ms;
    int rc;
    do {
        rc = mbedtls_ssl_handshake(&conn->ssl);
    } while (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE);
    conn->deadline = 0;
    if (rc)
        return handshake_error(conn, rc, err);
    if ((rc = check_peer(conn, err)) != 0) {
        /* best effort, as close_notify: never hold a worker on the peer */
        conn->deadline = now_ms() + 200;
        mbedtls_ssl_send_alert_message(&conn->ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL,
                                       refusal_alert(err));
        conn->deadline = 0;
    }
    return rc;
}

int el_tls_accept(el_tls_ctx *ctx, int fd, el_tls_conn **out, el_error *err)
{
    el_tls_conn *conn;
    *out = NULL;
    int rc = conn_new(ctx, fd, &conn, err);
    if (rc)
        return rc;
    if ((rc = run_handshake(conn, err)) != 0) {
        el_tls_close(conn);
        return rc;
    }
    *out = conn;
    return 0;
}

static int tcp_connect(const char *host, int port, int timeout_ms, el_error *err)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai)
        return el_error_set(err, EL_EIO, "cannot resolve %s: %s", host, gai_strerror(gai));
    int fd = -1;
    int last_errno = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    ai->ai_protocol);
        if (fd < 0)
            continue;
        int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (rc < 0 && errno == EINPROGRESS) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            int so_err = 0;
            socklen_t sl = sizeof so_err;
            if (poll(&pfd, 1, timeout_ms) == 1 &&
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_err, &sl) == 0 && so_err == 0)
                rc = 0;
            else
                errno = so_err ? so_err : ETIMEDOUT;
        }
        if (rc < 0) {
            last_errno = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return el_error_set(err, EL_EIO, "cannot connect to %s:%d: %s", host, port,
                            strerror(last_errno ? last_errno : ECONNREFUSED));
    /* back to blocking: our BIO polls before every operation */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

int el_tls_connect(el_tls_ctx *ctx, const char *host, int port, el_tls_conn **out,
                   el_error *err)
{
    char ebuf[128];
    *out = NULL;
    int fd = tcp_connect(host, port, ctx->hs_timeout_ms, err);
    if (fd < 0)
        return fd;
    el_tls_conn *conn;
    int rc = conn_new(ctx, fd, &conn, err);
    if (rc)
        return rc;
    if (strlen(host) >= sizeof conn->host) {
        el_tls_close(conn);
        return el_error_set(err, EL_EUSAGE, "host name too long: %s", host);
    }
    strcpy(conn->host, host);
    if ((rc = mbedtls_ssl_set_hostname(&conn->ssl, host)) != 0) {
        el_tls_close(conn);
        return el_error_set(err, EL_ENOMEM, "TLS hostname: %s", tls_strerror(rc, ebuf, sizeof ebuf));
    }
    if (ctx->resume) {
        pthread_mutex_lock(&ctx->lock);
        if (ctx->have_session)
            mbedtls_ssl_set_session(&conn->ssl, &ctx->session);
        pthread_mutex_unlock(&ctx->lock);
    }
    if ((rc = run_handshake(conn, err)) != 0) {
        /* a session the hub no longer accepts must not be offered again */
        if (ctx->resume)
            el_tls_ctx_forget_session(ctx);
        el_tls_close(conn);
        return rc;
    }
    if (ctx->resume) {
        pthread_mutex_lock(&ctx->lock);
        mbedtls_ssl_session_free(&ctx->session);
        mbedtls_ssl_session_init(&ctx->session);
        ctx->have_session = mbedtls_ssl_get_session(&conn->ssl, &ctx->session) == 0;
        pthread_mutex_unlock(&ctx->lock);
    }
    *out = conn;
    return 0;
}

long el_tls_read(el_tls_conn *conn, void *buf, size_t len, el_error *err)
{
    char ebuf[128];
    for (;;) {
        int rc = mbedtls_ssl_read(&conn->ssl, buf, len);
        if (rc > 0)
            return rc;
        if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || rc == MBEDTLS_ERR_SSL_CONN_EOF)
            return 0;
        if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        if (rc == MBEDTLS_ERR_SSL_TIMEOUT)
            return el_error_set(err, EL_EIO, "TLS read timed out");
        return el_error_set(err, EL_EIO, "TLS read: %s", tls_strerror(rc, ebuf, sizeof ebuf));
    }
}

int el_tls_write(el_tls_conn *conn, const void *buf, size_t len, el_error *err)
{
    char ebuf[128];
    const unsigned char *p = buf;
    while (len) {
        int rc = mbedtls_ssl_write(&conn->ssl, p, len);
        if (rc > 0) {
            p += rc;
            len -= (size_t)rc;
            continue;
        }
        if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        if (rc == MBEDTLS_ERR_SSL_TIMEOUT)
            return el_error_set(err, EL_EIO, "TLS write timed out");
        return el_error_set(err, EL_EIO, "TLS write: %s", tls_strerror(rc, ebuf, sizeof ebuf));
    }
    return 0;
}

int el_tls_pending(el_tls_conn *conn)
{
    return mbedtls_ssl_get_bytes_avail(&conn->ssl) > 0 || mbedtls_ssl_check_pending(&conn->ssl);
}

int el_tls_conn_fd(const el_tls_conn *conn)
{
    return conn->fd;
}

int el_tls_wait(el_tls_conn *conn, int timeout_ms, const volatile int *cancel)
{
    if (el_tls_pending(conn))
        return 1;
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        if (cancel && *cancel)
            return 0;
        int64_t left = end - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd = {.fd = conn->fd, .events = POLLIN};
        int rc = poll(&pfd, 1, left < 100 ? (int)left : 100);
        if (rc > 0)
            return 1;
        if (rc < 0 && errno != EINTR)
            return 1;   /* let the read report the error */
    }
}

void el_tls_set_deadline(el_tls_conn *conn, int deadline_ms)
{
    conn->deadline = deadline_ms > 0 ? now_ms() + deadline_ms : 0;
}

const el_tls_peer *el_tls_conn_peer(const el_tls_conn *conn)
{
    return &conn->peer;
}

int el_tls_conn_resumed(const el_tls_conn *conn)
{
    return !conn->verified;
}

void el_tls_abort(el_tls_conn *conn)
{
    if (!conn)
        return;
    if (conn->fd >= 0) {
        close(conn->fd);
        conn->fd = -1;
    }
    mbedtls_ssl_free(&conn->ssl);
    el_free(conn);
}

void el_tls_close(el_tls_conn *conn)
{
    if (!conn)
        return;
    if (conn->fd >= 0) {
        /* close_notify must not block a worker on a peer that stopped reading */
        conn->deadline = now_ms() + 200;
        mbedtls_ssl_close_notify(&conn->ssl);
        close(conn->fd);
    }
    mbedtls_ssl_free(&conn->ssl);
    el_free(conn);
}
