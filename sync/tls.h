/* Mutual TLS for the hub and its clients (mbedTLS 2.28 behind our own API so
 * that a move to 3.6 touches only sync/tls.c and sync/crypto.c).
 *
 * Both ends: TLS 1.2 only (1.0/1.1 are compiled into Debian's 2.28 and are
 * refused), ECDHE-ECDSA with AES-GCM only, the peer's certificate required
 * and verified against the fleet CA, its validity checked against a trusted
 * time (max of the wall clock and a caller-given floor) instead of the wall
 * clock alone, and its serial checked against a revocation list taken from
 * the current signed root. The peer's role comes from the subject OU
 * (device / hub / admin) and its device id from the subject CN; a client
 * also checks the hub's name against its certificate (CN/SAN).
 *
 * A context (el_tls_ctx) is shared by every connection of one end and is
 * safe to use from many threads; a connection (el_tls_conn) belongs to one
 * thread at a time.
 */
#ifndef EL_SYNC_TLS_H
#define EL_SYNC_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef enum el_tls_role {
    EL_TLS_ROLE_NONE = 0,
    EL_TLS_ROLE_DEVICE,
    EL_TLS_ROLE_HUB,
    EL_TLS_ROLE_ADMIN,
} el_tls_role;

#define EL_TLS_NAME_MAX 128
#define EL_TLS_SERIAL_MAX 80   /* lowercase hex of a 20-byte serial, with room */

/* What the handshake proved about the other end. */
typedef struct el_tls_peer {
    el_tls_role role;
    char cn[EL_TLS_NAME_MAX];      /* subject CN: the device id for devices */
    char ou[EL_TLS_NAME_MAX];      /* subject OU as written in the certificate */
    char group[EL_TLS_NAME_MAX];   /* device group (subject O), "" when none */
    char serial[EL_TLS_SERIAL_MAX];  /* lowercase hex, leading zeros dropped */
    char key_id[65];               /* SHA-256 hex of the SubjectPublicKeyInfo */
    const uint8_t *der;            /* the certificate, valid while the */
    size_t der_len;                /* connection lives */
} el_tls_peer;

typedef struct el_tls_opts {
    int is_server;
    const char *ca_path;     /* PEM fleet CA certificate */
    const char *cert_path;   /* PEM own certificate */
    const char *key_path;    /* PEM own private key (unencrypted) */
    /* Serials (lowercase hex) of refused peer certificates; copied. */
    const char *const *revoked;
    size_t n_revoked;
    /* Certificates are valid at max(time(NULL), trusted_time); 0 = clock. */
    int64_t trusted_time;
    int handshake_timeout_ms;  /* whole handshake; 0 = 10 s */
    int io_timeout_ms;         /* one read or write; 0 = 10 s */
    /* Session resumption: server issues tickets and keeps a cache; a client
     * context remembers its last session and offers it. 0 turns it off. */
    int resume;
} el_tls_opts;

typedef struct el_tls_ctx el_tls_ctx;
typedef struct el_tls_conn el_tls_conn;

/* Creates a context from OPTS (files read now). Returns 0 and *OUT (caller
 * destroys), or EL_EINPUT (unreadable certificate/key) / EL_ENOMEM with ERR
 * naming the file; *OUT is NULL on failure. */
int el_tls_ctx_create(const el_tls_opts *opts, el_tls_ctx **out, el_error *err);
void el_tls_ctx_destroy(el_tls_ctx *ctx);

/* Replaces the revocation list (e.g. after a new root arrives); later
 * handshakes use it. Returns 0 or EL_ENOMEM (old list kept). */
int el_tls_ctx_set_revoked(el_tls_ctx *ctx, const char *const *serials,
                           size_t n, el_error *err);
/* Raises the trusted-time floor; it never moves back. */
void el_tls_ctx_set_trusted_time(el_tls_ctx *ctx, int64_t t);
/* Client contexts: drops the remembered session so the next connect does a
 * full handshake. */
void el_tls_ctx_forget_session(el_tls_ctx *ctx);

/* The session a client context would offer next, serialized into a new
 * buffer (*OUT, el_free), so that a later process can resume it. Returns 0,
 * EL_ENOTFOUND when there is none, or EL_ENOMEM / EL_EINTERNAL. The bytes
 * hold the session's master secret: keep them like the private key. */
int el_tls_ctx_session_save(el_tls_ctx *ctx, uint8_t **out, size_t *len, el_error *err);

/* Makes a client context offer the session in BUF (from
 * el_tls_ctx_session_save). Returns 0, or EL_EINPUT for bytes that do not
 * load (another mbedTLS build, damage): the caller discards them. A resumed
 * session's peer is checked as on a full handshake (chain, time,
 * revocation, role), only the handshake's public-key work is skipped. */
int el_tls_ctx_session_load(el_tls_ctx *ctx, const uint8_t *buf, size_t len, el_error *err);

/* Server side: runs the handshake on the connected socket FD (always closed
 * by this call on failure, owned by *OUT on success). Returns 0, EL_ETRUST
 * (peer certificate refused: tag "revoked", "expired", "untrusted_signer"
 * or "bad_role"), EL_EIO (protocol error, timeout or peer gone). */
int el_tls_accept(el_tls_ctx *ctx, int fd, el_tls_conn **out, el_error *err);

/* Client side: connects to HOST:PORT (HOST is also the name checked against
 * the hub certificate), offering the remembered session when resumption is
 * on. Returns 0 and *OUT, or EL_EIO / EL_ETRUST as el_tls_accept. */
int el_tls_connect(el_tls_ctx *ctx, const char *host, int port,
                   el_tls_conn **out, el_error *err);

/* Reads up to LEN bytes. Returns the count (>0), 0 at a clean end of stream,
 * or EL_EIO (timeout, reset, protocol error) with ERR set. */
long el_tls_read(el_tls_conn *conn, void *buf, size_t len, el_error *err);
/* Writes all LEN bytes. Returns 0 or EL_EIO. */
int el_tls_write(el_tls_conn *conn, const void *buf, size_t len, el_error *err);

/* Waits up to TIMEOUT_MS for the next bytes from the peer, waking every
 * 100 ms to look at *CANCEL (may be NULL). Returns 1 when data (or the end
 * of the stream) is ready, 0 on timeout or cancel. */
int el_tls_wait(el_tls_conn *conn, int timeout_ms, const volatile int *cancel);

/* Sets a deadline DEADLINE_MS from now after which every read or write fails
 * (bounds a whole request, so a slow trickle cannot hold a worker); 0 clears. */
void el_tls_set_deadline(el_tls_conn *conn, int deadline_ms);

/* 1 when bytes already read from the socket wait inside the TLS layer (a
 * decrypted record, or records not yet decrypted): poll() on the socket
 * would not see them. */
int el_tls_pending(el_tls_conn *conn);

/* The socket of CONN, for an event loop. CONN keeps owning it. */
int el_tls_conn_fd(const el_tls_conn *conn);

const el_tls_peer *el_tls_conn_peer(const el_tls_conn *conn);
/* 1 when the handshake resumed an earlier session. */
int el_tls_conn_resumed(const el_tls_conn *conn);

/* Handshake signatures of peers verified with remembered per-key tables
 * in this process (tls.c design note 9), for tests and benchmarks. */
uint64_t el_tls_table_verifications(void);
/* 1 when this build checks peers' handshake signatures that way. */
int el_tls_remembers_keys(void);

/* Sends close_notify (best effort), closes the socket and frees CONN.
 * Accepts NULL. */
void el_tls_close(el_tls_conn *conn);
/* Closes CONN's socket without a close_notify and frees CONN: for a thread
 * that must never wait on a peer (the hub's poller). Accepts NULL. */
void el_tls_abort(el_tls_conn *conn);

/* Name of ROLE: "device", "hub", "admin" or "none". */
const char *el_tls_role_name(el_tls_role role);

#endif
