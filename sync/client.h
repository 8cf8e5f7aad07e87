/* The hub API client used by devices, by edgeloop-fleet (admin routes) and
 * by tests and the load bench.
 *
 * It speaks the /v1 JSON API over mutual TLS with session resumption and
 * keeps one connection alive between calls, reconnecting once when the hub
 * closed it. It knows no registry: callers hand it bundle bytes and JSON and
 * decide what to persist. Failures map the hub's answer to our error model:
 * 400 -> EL_EINPUT, 403 -> EL_ETRUST, 404 -> EL_ENOTFOUND, 409 -> EL_EPOLICY,
 * 413 -> EL_EINPUT "oversize", other 4xx/5xx and transport -> EL_EIO, with
 * the hub's {"error": {"code", "message"}} copied into the el_error.
 */
#ifndef EL_SYNC_CLIENT_H
#define EL_SYNC_CLIENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "http.h"
#include "tls.h"

typedef struct el_client_opts {
    const char *host;        /* also the name checked against the hub cert */
    int port;
    const char *ca_path, *cert_path, *key_path;
    int resume;              /* offer the last TLS session (1 recommended) */
    int64_t trusted_time;    /* see el_tls_opts */
    int timeout_ms;          /* handshake and each read/write; 0 = 10 s */
    size_t body_max;         /* largest response body; 0 = 64 MiB */
} el_client_opts;

typedef struct el_client el_client;

/* Creates a client (no connection yet). Returns 0 and *OUT, or the TLS
 * context's error (unreadable certificate or key). */
int el_client_create(const el_client_opts *opts, el_client **out, el_error *err);
/* Closes the connection and frees C. Accepts NULL. */
void el_client_destroy(el_client *c);
/* Closes the kept connection; the next call reconnects (and resumes). */
void el_client_disconnect(el_client *c);
/* The TLS session to offer on the next connection, across processes (see
 * el_tls_ctx_session_save / _load for the contract). */
int el_client_session_save(el_client *c, uint8_t **out, size_t *len, el_error *err);
int el_client_session_load(el_client *c, const uint8_t *buf, size_t len, el_error *err);
/* 1 when the last connection resumed a TLS session. */
int el_client_last_resumed(const el_client *c);
/* Forgets the TLS session so the next connection does a full handshake. */
void el_client_forget_session(el_client *c);

/* Sends one request and reads the answer into RESP (caller initialised it
 * with el_http_msg_init and finishes it). Returns 0 whatever the status, or
 * a transport error (EL_EIO, EL_ETRUST from the handshake). */
int el_client_request(el_client *c, const char *method, const char *target,
                      const char *extra_headers, const void *body, size_t len,
                      el_http_msg *resp, el_error *err);

/* PUT /v1/bundles/ID. *CREATED (may be NULL) is 1 when the hub stored it
 * now, 0 when it already had it. Safe to retry. */
int el_client_upload_bundle(el_client *c, const char *id, const uint8_t *bytes,
                            size_t len, int *created, el_error *err);

/* POST /v1/status with STATUS (borrowed). */
int el_client_post_status(el_client *c, const json_t *status, el_error *err);

/* The hub's clock (Unix seconds) from the "time" member of the last status
 * or releases answer, or 0 when no answer carried one. It came over the
 * mutually authenticated connection, so a device may move its last trusted
 * time forward with it (DESIGN.md "Trust and sync"); never backward, and
 * never past the hub certificate's notAfter (el_client_hub_time_refused). */
int64_t el_client_hub_time(const el_client *c);
/* A hub time not taken because it is after the hub certificate's notAfter
 * (the last one), or 0. */
int64_t el_client_hub_time_refused(const el_client *c);

/* GET /v1/releases?since=SINCE. *OUT is the hub's answer (a new reference:
 * {"releases": [...], "next": SEQ}). */
int el_client_releases(el_client *c, int64_t since, json_t **out, el_error *err);

/* GET TARGET (a path with its query) that answers JSON: the fleet
 * manager's admin routes (/v1/devices, /v1/bundles/ID, /v1/versions).
 * *OUT is a new reference, NULL on failure. */
int el_client_get_json(el_client *c, const char *target, json_t **out, el_error *err);

/* PUT /v1/releases/ID (admin certificate): publishes a signed release.
 * *ANSWER is the hub's answer (new reference: {"id", "seq", "blob",
 * "created"}), NULL on failure; *CREATED (may be NULL) is 1 when the hub
 * stored it now, 0 when it held it already. Safe to retry. */
int el_client_put_release(el_client *c, const char *id, const uint8_t *bytes, size_t len,
                          json_t **answer, int *created, el_error *err);

/* GET /v1/root/VERSION into a new buffer (*OUT, *LEN; caller el_free's). */
int el_client_fetch_root(el_client *c, int64_t version, uint8_t **out, size_t *len,
                         el_error *err);

/* Downloads blob SHA256 (64 lowercase hex) to PATH. Bytes are appended to
 * PATH.part in ranged pieces, so an interrupted download resumes where it
 * stopped; when complete the file's SHA-256 is checked and PATH.part is
 * renamed to PATH (a mismatch removes PATH.part and returns EL_ETRUST
 * "bad_signature"). Returns 0 or an error; PATH.part stays for a retry. */
int el_client_download_blob(el_client *c, const char *sha256, const char *path,
                            el_error *err);

/* The bytes a device signs (el_crypto_sign, with its device key) to vouch
 * for its audit head in a status report: "edgeloop-audit-v1" 0x00
 * "DEVICE\nSEQ\nHASH". Writes them to OUT (N bytes). Returns the length,
 * or -1 when OUT is too small. */
long el_client_audit_message(const char *device, int64_t seq, const char *hash,
                             char *out, size_t n);

/* Delay before retry ATTEMPT (0-based): a uniformly random value in
 * [0, min(CAP_MS, BASE_MS * 2^ATTEMPT)] ("full jitter"), drawn from *SEED
 * (any value; updated). */
int64_t el_client_backoff_ms(unsigned attempt, int64_t base_ms, int64_t cap_ms,
                             uint64_t *seed);

#endif
