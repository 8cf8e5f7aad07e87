/* The device state: registry (SQLite), content-addressed blob store,
 * configuration, version policies and the audit chain.
 *
 * A state directory holds edgeloop.conf, registry.db and blobs/sha256/. One
 * el_store is one open state directory; opening it applies the time-based
 * decisions (probation expiry, boot counting) before anything else, as
 * DESIGN.md requires of every command that opens the state.
 *
 * Adapters are stored one blob per file of the PEFT directory
 * (adapter_config.json, adapter_model.safetensors, ...); the version row
 * lists (file name, blob hash) pairs, so `export ID --peft DIR` writes the
 * directory back byte for byte and identical files are stored once.
 *
 * The base model is recorded, not copied: its hash (SHA-256 of the
 * model.safetensors bytes, the fleet tool's and the manifests' "base"), its
 * config.json and its path. Base models are large and already live on the device.
 */
#ifndef EL_STORE_STORE_H
#define EL_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "store/config.h"

#define EL_STORE_DEFAULT_DIR "/var/lib/edgeloop"
#define EL_STORE_SCHEMA_VERSION 4

typedef struct el_store el_store;

typedef struct el_store_open_opts {
    int create;      /* 1: create the directory, database and config (init) */
    int64_t now;     /* wall clock in seconds; 0 = time(NULL). Tests move it */
    const char *actor;  /* who acts, for the audit chain; NULL = "operator" */
} el_store_open_opts;

/* Picks the state directory: DIR when not NULL, else $EDGELOOP_STATE, else
 * EL_STORE_DEFAULT_DIR. Returns a static or borrowed string. */
const char *el_store_state_dir(const char *dir);

/* Opens the state at DIR (see el_store_state_dir). Without OPTS->create the
 * directory must hold an initialized registry. Migrates an older schema,
 * refuses a newer one (EL_EINPUT), loads the configuration, then applies
 * boot counting and probation expiry. On success *OUT is a new store the
 * caller closes with el_store_close; on failure *OUT is NULL and ERR says
 * why. */
int el_store_open(const char *dir, const el_store_open_opts *opts,
                  el_store **out, el_error *err);

/* Ends this process's session (a clean exit is not a crash) and closes the
 * database. Accepts NULL. */
void el_store_close(el_store *s);

/* The effective configuration (owned by S). */
const el_store_config *el_store_get_config(const el_store *s);
/* The state directory path (owned by S). */
const char *el_store_dir(const el_store *s);
/* The clock S uses, in seconds. Tests may move it with el_store_tick. */
int64_t el_store_now(const el_store *s);

/* Sets the clock to NOW and re-applies the time-based decisions (probation
 * expiry). Returns 0 or a negative EL_E*. */
int el_store_tick(el_store *s, int64_t now, el_error *err);

/* ---- base models ---------------------------------------------------- */

/* The base hash of the model directory DIR: lowercase hex SHA-256 of
 * DIR/model.safetensors (DESIGN.md "base"; `edgeloop-fleet release create
 * --base DIR` hashes the same). Returns 0 or EL_ENOTFOUND/EL_EIO/EL_EINPUT;
 * HASH is undefined on failure. */
int el_store_base_hash_file(const char *dir, char hash[65], el_error *err);
/* The recorded hash of base BASE_ID (as el_store_base_hash_file computed it
 * at registration or migration). Returns 0 or EL_ENOTFOUND. */
int el_store_base_hash(el_store *s, int64_t base_id, char hash[65], el_error *err);
/* Registers the base model in DIR (config.json + model.safetensors): checks
 * config.json is a JSON object, hashes model.safetensors, records hash,
 * config and absolute path. Registering the same hash again returns its
 * existing id. *ID is set on success. */
int el_store_base_register(el_store *s, const char *dir, int64_t *id,
                           el_error *err);
/* The id of the most recently registered base model, or EL_ENOTFOUND. */
int el_store_base_current(el_store *s, int64_t *id, char hash[65],
                          el_error *err);

/* ---- versions --------------------------------------------------------- */

/* What a new candidate version is made of. Strings are borrowed; JSON
 * strings may be NULL (stored as {}). */
typedef struct el_store_candidate {
    int64_t parent_id;         /* 0 = trained from the base alone */
    int64_t base_id;           /* 0 = the current base */
    const char *origin;        /* "local", "fleet" or "imported" */
    const char *recipe_json;   /* every hyperparameter */
    int64_t seed;
    const char *backend;       /* "cpu", "vulkan", or "" */
    const char *metrics_json;  /* losses before/after, may be filled later */
    const char *plasticity_json;  /* update norm, grad-norm trend, rank */
    const char *signer;        /* key id of a fleet signer, or NULL */
    const int64_t *sample_ids; /* samples it was trained on (data digest) */
    size_t n_samples;
} el_store_candidate;

/* "Begin candidate": copies every regular file of the PEFT directory
 * ADAPTER_DIR (adapter_config.json and adapter_model.safetensors required)
 * into the blob store, then records a version in state "candidate" with its
 * lineage in one transaction. Blobs are durable before the row commits.
 * Returns 0 with *ID set, EL_EINPUT for a bad adapter directory or JSON,
 * EL_ENOTFOUND for an unknown parent/base/sample, EL_ENOSPC when the disk
 * or the blob budget is full (nothing is recorded then). */
int el_store_candidate_create(el_store *s, const el_store_candidate *c,
                              const char *adapter_dir, int64_t *id,
                              el_error *err);

/* "Record metrics + gate verdict": stores METRICS_JSON (may be NULL to keep
 * the current metrics) and the gate's verdict for candidate ID. PASS keeps it
 * a candidate that may be activated; a failure moves it to "rejected".
 * FIGURES_JSON (the gate's gain/forget and thresholds) goes to the audit
 * chain. Returns 0, EL_ENOTFOUND, or EL_EPOLICY when ID is not a candidate
 * awaiting a verdict. */
int el_store_candidate_judge(el_store *s, int64_t id, int pass,
                             const char *reason, const char *metrics_json,
                             const char *figures_json, el_error *err);

/* Makes ID the active version in one transaction after re-reading and
 * verifying every blob of it. A candidate (gate passed, or imported/fleet)
 * enters probation; a good version stays good. Refused with EL_EPOLICY: a
 * rejected, rolled-back or retired version, the version already active, a
 * candidate whose gate failed or is missing (local origin), another version
 * while the active one is on probation or pinned. EL_EINPUT when a blob is
 * corrupted (nothing changes). */
int el_store_activate(el_store *s, int64_t id, el_error *err);

/* Rolls back. TO_ID > 0: activate that good version; TO_ID == 0: the most
 * recently activated good version other than the active one; TO_ID < 0:
 * deactivate (the base model alone). The active version, when on probation,
 * becomes rolled_back with REASON. EL_EPOLICY when there is nothing to roll
 * back to or TO_ID is not good; EL_EPOLICY when pinned. */
int el_store_rollback(el_store *s, int64_t to_id, const char *reason,
                      el_error *err);

/* Pins the active version ID (no other version may be activated and
 * retention keeps it) or releases the pin (ID == 0). EL_EPOLICY when ID is
 * not the active version. */
int el_store_pin(el_store *s, int64_t id, el_error *err);

/* Records operator feedback (ACCEPT 1 or 0) for VERSION_ID (0 = active) and
 * evaluates its probation at once; *OUTCOME (may be NULL) receives the
 * resulting state name ("probation", "good", "rolled_back", or the state of a
 * version not on probation) in a static string. */
int el_store_feedback(el_store *s, int64_t version_id, int accept,
                      const char **outcome, el_error *err);

/* Health check of the active version on probation: PROBE_LOSS is its loss
 * on the probe set, REF_LOSS the previous good version's (or the base's).
 * A regression beyond [probation] max_probe_regress rolls it back. *OUTCOME
 * as for el_store_feedback. */
int el_store_health_report(el_store *s, double probe_loss, double ref_loss,
                           const char **outcome, el_error *err);

/* A version as the registry holds it. Strings are owned by the struct and
 * freed by el_store_version_finish. */
typedef struct el_store_version {
    int64_t id, parent_id, base_id;   /* parent_id 0 = none */
    char state[16];
    char origin[16];
    char base_hash[65];
    char data_digest[65];
    char adapter_hash[65];   /* SHA-256 over the sorted (name, blob) list */
    char backend[16];
    int64_t seed;
    char *recipe, *metrics, *plasticity, *gate, *reason, *signer;
    int64_t created_at, updated_at, activated_at, probation_since;
    int64_t crashes;
    int active, pinned;
} el_store_version;

void el_store_version_finish(el_store_version *v);

/* Reads version ID into V (caller-owned, finish it). EL_ENOTFOUND. */
int el_store_version_get(el_store *s, int64_t id, el_store_version *v,
                         el_error *err);
/* Lists every version, oldest first, in a new array (*N entries) the caller
 * frees with el_store_version_list_free. */
int el_store_version_list(el_store *s, el_store_version **out, size_t *n,
                          el_error *err);
void el_store_version_list_free(el_store_version *v, size_t n);

/* The active version's id in *ID (0 = none, the base alone). */
int el_store_active(el_store *s, int64_t *id, el_error *err);

/* Writes the adapter files of version ID into DIR (created if missing),
 * each blob verified against its hash first; a corrupted blob is reported
 * (EL_EINPUT naming the blob) and nothing of it is written. */
int el_store_export(el_store *s, int64_t id, const char *dir, el_error *err);

/* ---- blobs -------------------------------------------------------------- */

/* Stores DATA under its SHA-256 (hex into HASH) unless present, within the
 * [retention] budget (retention frees old versions first). The file is
 * durable when this returns; the caller records its row in the same
 * transaction as whatever references it (el_store_blob_record). */
int el_store_blob_put(el_store *s, const void *data, size_t len,
                      char hash[65], el_error *err);
/* Reads blob HASH into a new buffer (caller el_free's) after checking it
 * against its hash: EL_EINPUT "corrupted" on mismatch, EL_ENOTFOUND when
 * missing. */
int el_store_blob_read(el_store *s, const char *hash, uint8_t **data,
                       size_t *len, el_error *err);
/* Path of blob HASH into OUT (size N). */
int el_store_blob_path(const el_store *s, const char *hash, char *out,
                       size_t n);
/* Total bytes of recorded blobs. */
int el_store_blob_usage(el_store *s, int64_t *bytes, el_error *err);

/* ---- retention ----------------------------------------------------------- */

typedef struct el_store_gc_stats {
    int64_t retired;        /* good versions retired beyond keep_good */
    int64_t blobs_freed;    /* blob files removed */
    int64_t bytes_freed;
    int64_t orphans;        /* files without a row (a crash's leftovers) */
    int64_t samples_dropped;
} el_store_gc_stats;

/* Applies retention: keeps [retention] keep_good good versions (the active
 * and pinned ones always), frees the blobs no kept version references, then
 * removes leftover files of interrupted writes. NEED_BYTES > 0 also retires
 * old good versions until that many bytes fit the budget, and then leaves
 * unrecorded files alone (a candidate's blobs are being written). STATS may
 * be NULL. */
int el_store_gc(el_store *s, int64_t need_bytes, el_store_gc_stats *stats,
                el_error *err);

/* ---- samples -------------------------------------------------------------- */

enum el_store_split { EL_SPLIT_TRAIN, EL_SPLIT_HOLDOUT, EL_SPLIT_ANCHOR };

typedef struct el_store_ingest_stats {
    int64_t lines, added, duplicates, probe, anchor_check, anchor_replay;
} el_store_ingest_stats;

/* Validates every line of the JSONL FILE ({"text"} or {"prompt",
 * "completion"}, strings) and adds the new ones to SPLIT in one transaction,
 * deduplicated by content hash. Any bad line refuses the whole file
 * (EL_EINPUT; ERR lists up to 5 as FILE:LINE: why) and adds nothing. Train
 * samples whose hash falls in the probe share become the probe set; anchor
 * samples are divided by hash into anchor-replay and anchor-check. */
int el_store_ingest(el_store *s, const char *file, enum el_store_split split,
                    el_store_ingest_stats *stats, el_error *err);

/* The lists the trainer reads. They are separate queries so a replay batch
 * can never contain holdout, anchor-check or probe data. */
enum el_store_list {
    EL_LIST_NEW_TRAIN,     /* train samples no version has trained on */
    EL_LIST_REPLAY,        /* train data of probation/good versions +
                              anchor-replay */
    EL_LIST_HOLDOUT,
    EL_LIST_ANCHOR_CHECK,
    EL_LIST_PROBE,
};

typedef struct el_store_sample {
    int64_t id;
    char hash[65];
    char *body;       /* the JSON object of the line (owned) */
} el_store_sample;

/* Fills a new array with list WHICH (oldest first). Free with
 * el_store_sample_list_free. */
int el_store_samples(el_store *s, enum el_store_list which,
                     el_store_sample **out, size_t *n, el_error *err);
void el_store_sample_list_free(el_store_sample *v, size_t n);

typedef struct el_store_sample_counts {
    int64_t train, holdout, anchor_replay, anchor_check, probe, total;
} el_store_sample_counts;
int el_store_sample_count(el_store *s, el_store_sample_counts *c,
                          el_error *err);

/* ---- audit chain -------------------------------------------------------- */

/* Appends an audit row (inside the caller's transaction when one is open).
 * FIGURES_JSON may be NULL ({}); it is stored canonically (sorted keys). */
int el_store_audit_append(el_store *s, const char *event, int64_t version_id,
                          const char *figures_json, el_error *err);

/* Checks the whole chain. Returns 0 when intact; EL_EINPUT otherwise with
 * *BAD_SEQ (may be NULL) set to the first row that does not verify and ERR
 * naming it. *ROWS receives the number of rows checked (may be NULL). */
int el_store_audit_verify(el_store *s, int64_t *rows, int64_t *bad_seq,
                          el_error *err);

typedef struct el_store_audit_row {
    int64_t seq, version_id, at;
    char actor[64], event[32];
    char prev[65], hash[65];
    char *figures;
} el_store_audit_row;
int el_store_audit_list(el_store *s, el_store_audit_row **out, size_t *n,
                        el_error *err);
void el_store_audit_list_free(el_store_audit_row *v, size_t n);

/* ---- checks -------------------------------------------------------------- */

typedef struct el_store_fsck {
    int integrity_ok;     /* PRAGMA integrity_check said ok */
    int audit_ok;
    int64_t audit_rows, audit_bad_seq;
    int64_t blobs, blobs_missing, blobs_corrupt;
    int64_t versions_missing_blob;  /* versions pointing at a missing blob */
    int active_ok;        /* no active version, or its blobs verify */
    int64_t active_id;
    int64_t samples;
} el_store_fsck;

/* Checks the whole state. Returns 0 when everything holds, EL_EINPUT when a
 * check failed (R says which; ERR names the first problem). */
int el_store_check(el_store *s, el_store_fsck *r, el_error *err);

/* ---- trust state (schema 3; persisted by the device glue) --------------- */

/* Release kinds with a counter, indexed 0..EL_STORE_TRUST_KINDS-1:
 * "adapter", "base-model", "policy". */
#define EL_STORE_TRUST_KINDS 3
/* Largest pinned root bundle accepted (the bundle header limit plus room
 * for its signatures). */
#define EL_STORE_ROOT_MAX (80 * 1024)

typedef struct el_store_trust {
    uint8_t *root;        /* pinned root bundle bytes (owned), NULL = none */
    size_t root_len;
    int64_t root_version; /* 0 when not enrolled */
    int64_t last_time;    /* last trusted time, seconds; only moves forward */
    int64_t counters[EL_STORE_TRUST_KINDS];  /* highest accepted per kind */
} el_store_trust;

/* Name of release kind KIND, or NULL out of range. Static. */
const char *el_store_trust_kind_name(int kind);

/* Reads the trust state into T (caller-owned; el_store_trust_finish it).
 * On failure T holds nothing to free. */
int el_store_trust_get(el_store *s, el_store_trust *t, el_error *err);
void el_store_trust_finish(el_store_trust *t);   /* accepts NULL */

/* Replaces the trust state with T (borrowed) and, when EVENT is not NULL,
 * appends an audit row EVENT with the new figures; inside the caller's
 * transaction when one is open (el_store_transaction_begin), so it commits
 * with the install it belongs to. Refuses (EL_EPOLICY, nothing changed) a
 * state whose last time, root version or any counter is below the stored
 * one; EL_EINPUT for a root over EL_STORE_ROOT_MAX. */
int el_store_trust_set(el_store *s, const el_store_trust *t, const char *event,
                       el_error *err);

/* The recorded path of base model BASE_ID into OUT (size N). EL_ENOTFOUND
 * for an unknown id, EL_EINPUT when the path does not fit. */
int el_store_base_path(el_store *s, int64_t base_id, char *out, size_t n,
                       el_error *err);

/* One transaction around several store calls (each of which otherwise
 * commits on its own): nested begins only count depth, so candidate
 * creation + trust state commit together. Abort is safe on any failure
 * path and undoes everything since the outermost begin. */
int el_store_transaction_begin(el_store *s, el_error *err);
int el_store_transaction_commit(el_store *s, el_error *err);
void el_store_transaction_abort(el_store *s);

/* Replaces the fleet policy overrides with the N (SECTIONS[i], KEYS[i],
 * VALUES[i]) entries of release RELEASE_ID (the bundle id), inside the
 * caller's transaction when one is open. Each entry is checked with
 * el_config_set first: an unknown key or a bad value is EL_EINPUT and
 * nothing changes. The overrides apply from the next el_store_open. */
int el_store_policy_replace(el_store *s, const char *const *sections,
                            const char *const *keys, const char *const *values,
                            size_t n, const char *release_id, el_error *err);

/* ---- outbox (schema 3): device deltas waiting for upload ---------------- */

typedef struct el_store_outbox_entry {
    int64_t id, version_id, size, created_at, attempts, next_at, sent_at;
    char bundle_id[65];
    char blob[65];     /* the bundle bytes: el_store_blob_read(blob) */
} el_store_outbox_entry;

/* Queues the signed bundle BYTES (LEN) of VERSION_ID under BUNDLE_ID: the
 * bytes become a blob (durable first), then the row commits. A bundle id
 * already queued is a no-op (0). EL_ENOSPC when the pending outbox would
 * exceed [sync] outbox_max_mb (nothing queued); EL_ENOTFOUND for an unknown
 * version. */
int el_store_outbox_add(el_store *s, int64_t version_id, const char *bundle_id,
                        const uint8_t *bytes, size_t len, el_error *err);

/* Pending entries (not sent), oldest first, in a new array the caller
 * el_free's. *N may be 0 (*OUT NULL then). */
int el_store_outbox_list(el_store *s, el_store_outbox_entry **out, size_t *n,
                         el_error *err);

/* 1 when VERSION_ID has an outbox row (pending or sent), else 0; negative
 * EL_E* on failure. */
int el_store_outbox_has(el_store *s, int64_t version_id, el_error *err);

/* Marks BUNDLE_ID sent (the hub acknowledged it): its blob is freed by the
 * next gc. EL_ENOTFOUND when not queued. */
int el_store_outbox_sent(el_store *s, const char *bundle_id, el_error *err);

/* Records a failed attempt: attempts + 1 and the next try at NEXT_AT (the
 * caller's jittered backoff). EL_ENOTFOUND when not queued. */
int el_store_outbox_retry(el_store *s, const char *bundle_id, int64_t next_at,
                          el_error *err);

#endif
