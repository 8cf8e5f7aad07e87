/* The device's glue between the registry (store/), the trainer (train/, nn/)
 * and, later, the sync pieces: what `edgeloop train` does in state mode and
 * what the long-running agent (daemon/agent.c) calls on its timer.
 *
 * DESIGN.md's dependency rule puts this here: main -> daemon -> {train,
 * store, sync}. The store never reads the trainer, the gate takes its
 * thresholds as values; this file reads the effective configuration and
 * hands the values on.
 */
#ifndef EL_DAEMON_DEVICE_H
#define EL_DAEMON_DEVICE_H

#include <stdint.h>

#include "base/error.h"
#include "store/store.h"

/* Overrides of the [train] configuration for one run; 0 / NULL / "" keeps the
 * effective configuration's value. */
typedef struct el_device_train_opts {
    int64_t steps;         /* optimizer steps */
    const char *backend;   /* "auto", "cpu", "vulkan" */
    int threads;           /* cpu backend threads; 0 = all cores */
    int64_t seed;          /* < 0 keeps [train] seed */
    int no_activate;       /* 1: record the verdict but do not activate */
    void (*progress)(void *ctx, int step, int steps, double loss);
    void *progress_ctx;
} el_device_train_opts;

/* What one state-mode training run did. */
typedef struct el_device_train_result {
    int64_t version_id;        /* the candidate recorded (0 when none) */
    int64_t parent_id;         /* the version trained from, 0 = the base */
    int64_t n_new, n_replay;   /* training samples: new train, replayed */
    int64_t steps;
    char backend[64];
    double train_loss_first, train_loss_last;
    double holdout_before, holdout_after;
    double anchor_before, anchor_after;   /* anchor-check; NAN when empty */
    /* plasticity figures */
    double update_norm;        /* ||delta(scale * B A)||_F over all slots */
    double grad_norm_before, grad_norm_after;  /* on the training set */
    double effective_rank;     /* mean over slots of exp(entropy of sigma) */
    /* the gate */
    int gate_pass;
    char gate_reason[32];      /* el_gate_result.reason */
    double gain, forget;
    /* after the gate */
    int activated;             /* 1 when the candidate entered probation */
    char activate_error[160];  /* why activation was refused, when it was */
    int health_checked;        /* 1 when a probe health check ran */
    double probe_loss, probe_ref_loss;
    char outcome[16];          /* the version's state at the end */
} el_device_train_result;

/* Trains a candidate from the data ingested in S (state mode of `edgeloop
 * train`): new train samples plus a [replay] fraction drawn from earlier
 * accepted train and anchor-replay samples (never holdout, anchor-check or
 * probe), starting from the active adapter (or a fresh PEFT init when the
 * base alone is active). Evaluates holdout and anchor-check before and
 * after, computes the plasticity figures, records the candidate with
 * el_store_candidate_create, runs el_gate_decide with [gate] min_gain /
 * max_forget and records the verdict. On a pass it activates the candidate
 * (probation) and runs the probe health check against the previous version.
 *
 * What is gated is what is synced: the trained weights are first replaced
 * by parent + decoded delta in the [sync] encoding (from zeros when the
 * version has no parent), the adapter the hub rebuilds, and evaluated,
 * recorded and exported as such. For lora-delta-q8 that is the 8-bit
 * rounding; for lora-delta-exact (the default) the fp32 subtraction and
 * addition, which need not give back the trained values bit for bit.
 *
 * Returns 0 with *R filled when the gate passed (whether or not activation
 * was possible: see R->activated / R->activate_error); EL_EPOLICY tagged
 * "gate_failed" when the gate refused (the candidate is recorded as
 * rejected and *R is filled); EL_EINPUT tagged "no_data" when no new train
 * sample exists (nothing recorded); another negative EL_E* on failure
 * (nothing recorded, temporary files removed). R must not be NULL. */
int el_device_train(el_store *s, const el_device_train_opts *o,
                    el_device_train_result *r, el_error *err);

/* ---- enrollment (enroll.c) ----------------------------------------------- */

/* Files of the device's identity inside the state directory. The key never
 * leaves it (mode 0600). */
#define EL_DEVICE_KEY_FILE "device.key"
#define EL_DEVICE_CERT_FILE "device.crt"
#define EL_DEVICE_CA_FILE "ca.crt"

/* Enrollment step 1: creates the device key in S's directory unless one
 * exists (it is reused: re-running after a lost CSR gives a CSR for the same
 * key) and writes a PEM CSR for common name NAME to CSR_PATH. NAME must be
 * 1-64 of [A-Za-z0-9._-]. *KEY_ID (may be NULL) receives the key id. Returns
 * 0, EL_EUSAGE for a bad name, or an I/O / crypto error. */
int el_device_enroll_csr(el_store *s, const char *name, const char *csr_path,
                         char key_id[65], el_error *err);

typedef struct el_device_identity {
    char device_id[65];    /* the certificate's CN */
    char group[65];        /* its O (device group), "" when absent */
    char key_id[65];
    char serial[41];
    int64_t root_version;
} el_device_identity;

/* Enrollment step 2: installs CERT_PATH (must carry the device key's public
 * key, role "device", and chain to CA_PATH at the trusted time), pins the
 * root bundle ROOT_PATH (verified with el_trust_root_bootstrap against the
 * CA's fingerprint) and writes [hub] url (HUB_URL, may be NULL), ca, cert
 * and key into edgeloop.conf. Returns 0 and *ID; EL_ETRUST with the trust
 * code when the root or the certificate chain is refused; EL_EINPUT when the
 * certificate is not for this device's key; EL_EPOLICY when another root is
 * already pinned (rotate it with a root bundle through el_device_import).
 * A refusal changes nothing. */
int el_device_enroll_install(el_store *s, const char *cert_path, const char *ca_path,
                             const char *root_path, const char *hub_url,
                             el_device_identity *id, el_error *err);

/* Reads the enrolled identity (certificate in the state directory and the
 * pinned root). EL_EPOLICY tagged "not_enrolled" when there is none. */
int el_device_identity_get(el_store *s, el_device_identity *id, el_error *err);

/* ---- import of fleet bundles (import.c) ---------------------------------- */

typedef struct el_device_import_result {
    char bundle_id[65];
    char type[16];          /* "root" or "release" */
    char kind[16];          /* releases: "adapter", "policy" */
    int64_t counter;        /* releases: the accepted counter */
    int64_t root_version;   /* root: the new version */
    int64_t version_id;     /* adapter: the installed version */
    int activated;          /* adapter: entered probation */
    char activate_error[160];
    int64_t policy_keys;    /* policy: keys set */
    int64_t base_id;        /* base-model: the registered base */
} el_device_import_result;

/* Verifies the bundle at PATH against the pinned root and the trust state
 * (trusted time = max(CLOCK, last trusted time); CLOCK 0 = the store's
 * clock) and installs it: a root bundle (signed by root keys) rotates the
 * pinned root N -> N+1; an adapter release is rebuilt from its delta
 * (parent looked up among the registry's versions by digest), checked
 * against "result", recorded as a candidate of origin "fleet" with its
 * signers and activated (probation) when possible; a policy release (an
 * edgeloop.conf fragment: [section] and key = value lines) replaces the
 * fleet policy overrides; a base-model release is written under
 * STATE/bases/HASH/, registered as the current base, and the active
 * adapter of the old base is deactivated (it stays in the registry). The
 * new trust state commits in the same transaction as the install, after
 * the files are durable. Returns 0 and *R; EL_ETRUST with trust.h's stable
 * code on a refusal, EL_EINPUT for a malformed bundle or payload,
 * EL_EPOLICY "not_enrolled" (or a pin that holds the old base). On any
 * failure registry, blobs' rows and trust state are unchanged. */
int el_device_import(el_store *s, const char *path, int64_t clock,
                     el_device_import_result *r, el_error *err);

/* ---- device deltas (delta_export.c) ---------------------------------------- */

typedef struct el_device_bundle_result {
    char bundle_id[65];
    char parent[65];      /* digest of the parent adapter, "" when none */
    char result[65];      /* digest of the adapter the receiver rebuilds */
    uint64_t payload_size;
    uint64_t size;        /* bytes written */
} el_device_bundle_result;

/* Writes version VERSION_ID as a signed device delta to OUT_PATH
 * (atomically): the version minus its parent (zeros when it has none) in
 * the [sync] encoding, with target "hub", the base's hash (SHA-256 of its
 * model.safetensors), the version's metrics and recipe and this device's
 * certificate, signed with the device key, so anyone holding the fleet root
 * and CA verifies it offline (el_trust_device_delta). "result" is the
 * digest of parent + decoded delta, the adapter a receiver rebuilds.
 * Returns 0 and *R; EL_EPOLICY "not_enrolled"; EL_ENOTFOUND for an unknown
 * version; an I/O or encoding error. Nothing is written on failure. */
int el_device_bundle_export(el_store *s, int64_t version_id, const char *out_path,
                            el_device_bundle_result *r, el_error *err);

/* Queues a signed device delta in the outbox (el_store_outbox_add) for
 * every good local version that has none yet, oldest first; the daemon's
 * sync uploads and marks them. *QUEUED (may be NULL) counts the new ones.
 * Returns 0; EL_EPOLICY "not_enrolled" (nothing to sign with); EL_ENOSPC
 * when the outbox cap is reached (the ones queued before stay). */
int el_device_outbox_fill(el_store *s, int64_t *queued, el_error *err);

#endif
