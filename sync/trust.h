/* Fleet trust decisions (DESIGN.md "Trust and sync"): pure functions.
 *
 * Each decision takes the bundle bytes (parsed framing), the pinned root, the
 * device's trust state and the system clock, and returns a verdict plus the
 * new trust state. Nothing here reads a file, the clock or a registry: the
 * caller (daemon, hub, fleet tool) persists the new state. On refusal the
 * returned code is EL_ETRUST with a stable tag in ERR (bad_signature,
 * unknown_key, threshold_not_met, duplicate_signer, replay, rollback, expired,
 * wrong_target, wrong_base, oversize, truncated, revoked, untrusted_signer,
 * bad_root_chain) or EL_EINPUT for malformed input, and *OUT equals *IN.
 */
#ifndef EL_SYNC_TRUST_H
#define EL_SYNC_TRUST_H

#include <stdint.h>

#include "base/error.h"
#include "bundle.h"
#include "crypto.h"
#include "manifest.h"

typedef struct el_trust_state {
    int64_t last_time;                  /* only moves forward */
    int64_t counters[EL_KIND_COUNT];    /* highest accepted per release kind */
} el_trust_state;

/* Who is asking: a device's id, group and current base model hash. */
typedef struct el_trust_device {
    const char *device_id;
    const char *group;
    const char *base;                   /* sha256 hex of the base model */
} el_trust_device;

/* max(clock, state->last_time): a set-back clock cannot replay. */
int64_t el_trust_time(const el_trust_state *state, int64_t clock);

/* The rollout bucket of DEVICE_ID: the first 4 bytes of SHA-256(id) as a
 * big-endian u32, mod 100. A device is in a rollout of P% when bucket < P. */
int el_trust_bucket(const char *device_id);

/* Accepts a first root (enrollment): B must be a root bundle signed by a
 * threshold of its own root keys, not expired at the trusted time, and, when
 * CA_FINGERPRINT is not NULL, naming that CA. On success *ROOT is filled
 * (caller el_manifest_root_finish's it). */
int el_trust_root_bootstrap(const el_bundle *b, const char *ca_fingerprint,
                            int64_t clock, const el_trust_state *in,
                            el_manifest_root *root, el_trust_state *out,
                            el_error *err);

/* Accepts root N+1 after CURRENT (N): version exactly N+1 ("replay" when
 * equal, "rollback" when lower, "bad_root_chain" when it skips), signed by a
 * threshold of N's root keys ("bad_root_chain" when not) and of its own
 * ("threshold_not_met"), and not expired. *NEXT is filled on success. */
int el_trust_root_update(const el_manifest_root *current, const el_bundle *b,
                         int64_t clock, const el_trust_state *in,
                         el_manifest_root *next, el_trust_state *out,
                         el_error *err);

/* Decides a release for DEVICE under ROOT. When B's payload is in memory it
 * is checked against the manifest; with a streamed bundle (payload NULL) the
 * caller checks it with el_bundle_stream_payload before using it. On success
 * *M holds the manifest (caller el_manifest_finish's it) and *OUT the state
 * with the kind's counter and the last trusted time advanced. */
int el_trust_release(const el_manifest_root *root, const el_bundle *b,
                     const el_trust_device *device, int64_t clock,
                     uint64_t payload_max, const el_trust_state *in,
                     el_manifest *m, el_trust_state *out, el_error *err);

/* Verifies a device delta: signed by the key of the certificate it carries,
 * which chains to CA (whose fingerprint ROOT pins), has role "device", is not
 * revoked and is valid at the trusted time. On success *M is the manifest and
 * *SIGNER (may be NULL) the certificate's fields. */
int el_trust_device_delta(const el_manifest_root *root, const el_crypto_cert *ca,
                          const el_bundle *b, int64_t clock, uint64_t payload_max,
                          const el_trust_state *in, el_manifest *m,
                          el_crypto_cert_info *signer, el_trust_state *out,
                          el_error *err);

#endif
