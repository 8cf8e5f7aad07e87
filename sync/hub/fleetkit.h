/* A throwaway fleet for the hub's end-to-end tests and its load bench: a CA,
 * root and release keys, a signed root, certificates for the hub, devices
 * and admins written as PEM files, device delta bundles and signed status
 * reports, and a hub process started on a free port.
 *
 * Everything is made with the sync/ API (crypto, bundle, delta, manifest);
 * nothing here is used by the hub itself. Functions exit the process on a
 * failure of the fixture (it is not what is under test), except where they
 * return a code.
 */
#ifndef EL_HUB_FLEETKIT_H
#define EL_HUB_FLEETKIT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "client.h"
#include "crypto.h"
#include "delta.h"

typedef struct el_fleetkit {
    char dir[512];               /* a fresh temporary directory */
    el_crypto_key *ca_key;
    el_crypto_cert *ca;
    el_crypto_key *root_key;
    el_crypto_key *release_keys[2];   /* release threshold 2 */
    int64_t now;
    pid_t hub_pid;
    int hub_port;
    int fixed_port;              /* when set, hubs start on this port */
    char hub_log[600];
} el_fleetkit;

/* Makes the fleet in a new directory under $TMPDIR: ca.crt, hub.crt/key
 * (CN=localhost, OU=hub, SAN DNS:localhost) and root.elb, revoking the
 * serials REVOKED[N]. */
void el_fleetkit_init(el_fleetkit *f, const char *const *revoked, size_t n);
/* Root metadata VERSION (root key threshold 1, release keys 2 of 2)
 * revoking REVOKED[N]; *OUT el_malloc'd. Version 1 is written to root.elb
 * by el_fleetkit_init. */
void el_fleetkit_root(el_fleetkit *f, int64_t version, const char *const *revoked, size_t n,
                      uint8_t **out, size_t *len);
/* Writes BYTES to DIR/NAME. */
void el_fleetkit_write(const el_fleetkit *f, const char *name, const void *bytes, size_t len);
/* Stops a running hub and removes the directory. */
void el_fleetkit_finish(el_fleetkit *f);

/* DIR/NAME into OUT (N bytes). */
void el_fleetkit_path(const el_fleetkit *f, const char *name, char *out, size_t n);

/* Issues NAME.crt + NAME.key in the fleet directory: CN, OU=ROLE, O=GROUP
 * (may be NULL), valid [FROM, TO] (Unix seconds), signed by the fleet CA, or
 * when OTHER_CA by a separate CA made for the purpose. SERIAL (may be NULL,
 * EL_CRYPTO_SERIAL_HEX_MAX) receives the serial. */
void el_fleetkit_issue(el_fleetkit *f, const char *name, const char *cn, const char *role,
                       const char *group, int64_t from, int64_t to, int other_ca,
                       char *serial);

/* A random LoRA-like adapter (rank 8 on a DIM-wide model, LAYERS layers,
 * q_proj and v_proj), values scaled by SCALE, from SEED. */
void el_fleetkit_adapter(el_delta_set *set, int dim, int layers, float scale, uint64_t seed);

/* Builds a device delta bundle NEXT - PARENT (PARENT NULL: first version)
 * with ENCODING, signed by device NAME (NAME.key, NAME.crt). *OUT is
 * el_malloc'd; ID (65) receives the bundle id; REBUILT (may be NULL) the
 * adapter as the hub rebuilds it (parent + decoded delta), which is what a
 * lossy chain's next delta must be made against (caller finishes it). */
void el_fleetkit_delta(el_fleetkit *f, const char *name, const el_delta_set *next,
                       const el_delta_set *parent, int encoding, uint8_t **out,
                       size_t *len, char *id, el_delta_set *rebuilt_out);

/* A release bundle (kind policy, target TARGET, COUNTER) signed by NSIGS
 * (0..2) release keys. */
void el_fleetkit_release(el_fleetkit *f, const char *target, int64_t counter, int nsigs,
                         uint8_t **out, size_t *len, char *id);

/* An adapter release of SET (lora-delta-exact from zeros, as the fleet tool
 * ships adapters) for TARGET with COUNTER, signed by both release keys. */
void el_fleetkit_release_adapter(el_fleetkit *f, const char *target, int64_t counter,
                                 const el_delta_set *set, uint8_t **out, size_t *len,
                                 char *id);

/* A status report with an audit head (SEQ, HASH) signed by device NAME as
 * device id DEVICE. New reference. */
json_t *el_fleetkit_status(el_fleetkit *f, const char *name, const char *device, int64_t seq,
                           const char *hash);
/* The same with KEY already loaded (a device that keeps its key, as the
 * agent does). */
json_t *el_fleetkit_status_signed(const el_crypto_key *key, const char *device, int64_t seq,
                                  const char *hash);
/* The private key of certificate NAME; dies on failure. Caller destroys. */
el_crypto_key *el_fleetkit_key(el_fleetkit *f, const char *name);

/* Client options for certificate NAME against the running hub. */
void el_fleetkit_client_opts(el_fleetkit *f, const char *name, el_client_opts *o,
                             char *paths, size_t paths_len);

/* Starts HUB_EXE serve on 127.0.0.1:0 (or :fixed_port) with its data in DIR/data and the
 * extra arguments EXTRA (NULL-terminated, may be NULL); waits for the port
 * file. ENV_CRASH (may be NULL) is put in $EDGELOOP_CRASH_AT. Returns 0 or
 * -1 when the hub did not come up. */
int el_fleetkit_start_hub(el_fleetkit *f, const char *hub_exe, const char *const *extra,
                          const char *env_crash);
/* Sends SIG to the hub and waits for it; returns its wait status. */
int el_fleetkit_stop_hub(el_fleetkit *f, int sig);

#endif
