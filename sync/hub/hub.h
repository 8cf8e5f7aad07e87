/* edgeloop-hub internals shared by its files: the hub object, the bundle
 * checks (verify.c), the routes (routes.c), the server (server.c). */
#ifndef EL_HUB_HUB_H
#define EL_HUB_HUB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "crypto.h"
#include "http.h"
#include "manifest.h"
#include "store.h"
#include "tls.h"

/* Routes as counted in /metrics. */
enum el_hub_route {
    EL_HUB_R_BUNDLE_PUT, EL_HUB_R_BUNDLE_GET, EL_HUB_R_STATUS, EL_HUB_R_RELEASES,
    EL_HUB_R_RELEASE_PUT, EL_HUB_R_ROOT_GET, EL_HUB_R_ROOT_PUT, EL_HUB_R_BLOB,
    EL_HUB_R_DEVICES, EL_HUB_R_DEVICE, EL_HUB_R_VERSIONS, EL_HUB_R_METRICS,
    EL_HUB_R_OTHER, EL_HUB_R_COUNT
};

#define EL_HUB_CODES 24   /* distinct status codes counted, see metric_slot */

typedef struct el_hub_metrics {
    atomic_ullong requests[EL_HUB_R_COUNT][EL_HUB_CODES];
    atomic_ullong bytes_in, bytes_out;
    atomic_ullong handshakes_full, handshakes_resumed, handshake_failures;
    atomic_ullong rejected_busy;
    atomic_llong idle_connections;    /* parked keep-alive connections now */
    atomic_ullong idle_timeouts;      /* parked connections closed idle */
} el_hub_metrics;

typedef struct el_hub {
    el_hub_store *store;
    el_tls_ctx *tls;               /* NULL for `import` */
    el_crypto_cert *ca;
    size_t body_max;               /* largest request body */
    int request_timeout_ms;        /* one whole request, head to body */
    int idle_timeout_ms;           /* keep-alive wait for the next request */

    pthread_mutex_t root_lock;     /* guards root */
    el_manifest_root root;         /* the newest root the hub holds */

    volatile int stop;             /* set by SIGTERM: finish and leave */
    el_hub_metrics metrics;
} el_hub;

/* A response a route builds; the server sends it. BODY is el_malloc'd. */
typedef struct el_hub_response {
    int status;
    const char *content_type;      /* static; NULL = application/json */
    char extra[256];               /* extra header lines, each ending CRLF */
    uint8_t *body;
    size_t len;
    /* Instead of BODY: stream LEN bytes of blob BLOB from offset BLOB_OFF. */
    char blob[EL_HUB_ID_MAX];
    uint64_t blob_off, blob_len;
} el_hub_response;

/* ---- hub object (verify.c) ---------------------------------------------- */

/* Sets up HUB over an open STORE: loads the CA (CA_PATH) and the root
 * (ROOT_PATH, accepted as a first root naming this CA, or a newer stored
 * root when the store holds one). Returns 0 or an error; HUB is finished by
 * el_hub_finish either way. */
/* The hub's wall clock (Unix seconds): time(NULL), or $EDGELOOP_NOW when
 * set, as on the device, so tests can run a hub whose clock is off. The
 * TLS layer keeps the system clock. */
int64_t el_hub_now(void);

int el_hub_init(el_hub *hub, el_hub_store *store, const char *ca_path,
                const char *root_path, el_error *err);
void el_hub_finish(el_hub *hub);

/* Serials the current root revokes (for the TLS context). *OUT is an
 * el_malloc'd array of pointers into one block; el_free it once. */
int el_hub_revoked_serials(el_hub *hub, const char ***out, size_t *n, el_error *err);

/* Checks and stores a device delta bundle (BYTES, LEN) exactly as an upload
 * does: framing, the signer certificate from the fleet CA (not revoked, not
 * expired), its signature, the manifest, and the adapter rebuilt from parent
 * + delta against the manifest's `result`. DEVICE (may be NULL for import)
 * must equal the signer's CN. ID (may be NULL) must equal the bundle id.
 * *CREATED is 1 when stored now, 0 when already held. Returns 0, EL_EINPUT
 * (malformed, bad payload), EL_ETRUST (signature: tag bad_signature;
 * signer: untrusted_signer/revoked/expired/not_signer), EL_EPOLICY (unknown
 * parent), EL_EIO. */
int el_hub_accept_delta(el_hub *hub, const uint8_t *bytes, size_t len, const char *id,
                        const char *device, el_hub_bundle_rec *rec, int *created,
                        el_error *err);

/* Checks a release against the held root (threshold of distinct, unrevoked
 * release keys, not expired) and stores it; ID must equal its bundle id. */
int el_hub_accept_release(el_hub *hub, const uint8_t *bytes, size_t len, const char *id,
                          el_hub_release_rec *rec, int *created, el_error *err);

/* Checks root VERSION as the successor of the held root and stores it;
 * the held root (and the TLS revocation list) move to it. */
int el_hub_accept_root(el_hub *hub, const uint8_t *bytes, size_t len, int64_t version,
                       el_error *err);

/* ---- routes (routes.c) -------------------------------------------------- */

/* Serves REQ from PEER into RESP; returns the route for metrics. */
enum el_hub_route el_hub_route(el_hub *hub, const el_tls_peer *peer, el_http_msg *req,
                               el_hub_response *resp);
/* Fills RESP with {"error": {"code", "message"}} and STATUS. */
void el_hub_error_response(el_hub_response *resp, int status, const char *code,
                           const char *message);
/* Counts one request. */
void el_hub_count(el_hub *hub, enum el_hub_route route, int status);

/* ---- server (server.c) -------------------------------------------------- */

/* Worker threads when --workers is not given. Idle keep-alive connections
 * do not hold one (server.c design note 1); a worker is busy during a TLS
 * handshake and a request, and some of that is waiting on the client, so a
 * few per core. */
#define EL_HUB_DEFAULT_WORKERS 16

typedef struct el_hub_serve_opts {
    const char *listen;            /* ADDR:PORT, port 0 = any free */
    const char *port_file;         /* written with the chosen port, or NULL */
    int workers;
} el_hub_serve_opts;

/* Listens and serves until HUB->stop is set (SIGTERM), then finishes the
 * requests in flight and returns 0, or an error when it cannot listen. */
int el_hub_serve(el_hub *hub, const el_hub_serve_opts *opts, el_error *err);

#endif
