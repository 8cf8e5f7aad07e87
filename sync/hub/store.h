/* The hub's one store interface: metadata + content-addressed blobs.
 *
 * Routes see only this table of operations, so a PostgreSQL + object-store
 * backend for many stateless hub nodes can replace the embedded SQLite + blob
 * directory one (store_sqlite.c) without touching them.
 *
 * Contract every backend keeps:
 *  1. A blob is durable no later than the metadata row that names it
 *     (blob_put returns after it is on disk; bundle_put and release_put
 *     store their blobs first or in the row's own transaction), so a crash
 *     leaves at worst an unreferenced blob, never a row without its bytes.
 *  2. bundle_put and release_put are idempotent by id: the same id again
 *     returns 0 with *CREATED = 0 and changes nothing.
 *  3. status_put advances a device's audit head atomically: it refuses
 *     (EL_EPOLICY) a head whose seq is below the stored one, or equal with a
 *     different hash.
 *  4. Every operation is safe to call from many worker threads at once.
 * All functions return 0 or a negative EL_E* code with ERR set; JSON
 * outputs are new references the caller json_decref's.
 */
#ifndef EL_HUB_STORE_H
#define EL_HUB_STORE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define EL_HUB_ID_MAX 65     /* 64 hex + NUL */
#define EL_HUB_NAME_MAX 129
#define EL_HUB_SEEN_GRANULARITY 60

typedef struct el_hub_bundle_rec {
    char id[EL_HUB_ID_MAX];          /* bundle id: SHA-256 of the header */
    char device[EL_HUB_NAME_MAX];    /* signer's device id (certificate CN) */
    char blob[EL_HUB_ID_MAX];        /* SHA-256 of the whole .elb (set by
                                        bundle_put) */
    uint64_t size;
    char parent[EL_HUB_ID_MAX], result[EL_HUB_ID_MAX], base[EL_HUB_ID_MAX];
    char encoding[33];
    int64_t received;                /* Unix seconds */
    int64_t seq;                     /* the hub's arrival order (output) */
    char adapter_blob[EL_HUB_ID_MAX]; /* the rebuilt adapter of RESULT (set by
                                        bundle_put; empty: none) */
} el_hub_bundle_rec;

typedef struct el_hub_release_rec {
    char id[EL_HUB_ID_MAX];
    char kind[16];
    int64_t counter;
    char target[EL_HUB_NAME_MAX];
    char blob[EL_HUB_ID_MAX];
    uint64_t size;
    int64_t expires;
    int64_t received;
    int64_t seq;                     /* output */
    char adapter[EL_HUB_ID_MAX];     /* digest of the rebuilt adapter it ships */
    char adapter_blob[EL_HUB_ID_MAX]; /* and its blob (set by release_put) */
} el_hub_release_rec;

typedef struct el_hub_store el_hub_store;

typedef struct el_hub_store_ops {
    void (*destroy)(el_hub_store *s);

    /* Stores DATA; *SHA (65) receives its lowercase hex SHA-256. */
    int (*blob_put)(el_hub_store *s, const void *data, size_t len, char *sha,
                    el_error *err);
    /* Size of blob SHA; EL_ENOTFOUND when absent. */
    int (*blob_size)(el_hub_store *s, const char *sha, uint64_t *size, el_error *err);
    /* Reads LEN bytes at OFF of blob SHA into OUT (EL_EIO when short). */
    int (*blob_read)(el_hub_store *s, const char *sha, uint64_t off, size_t len,
                     uint8_t *out, el_error *err);

    /* Stores BYTES (the .elb) as REC->blob and, when ADAPTER is not NULL,
     * the rebuilt adapter as REC->adapter_blob recorded as the adapter of
     * REC->result, then REC: blobs before or with the rows, the rows in one
     * transaction. */
    int (*bundle_put)(el_hub_store *s, el_hub_bundle_rec *rec, const void *bytes, size_t len,
                      const void *adapter, size_t adapter_len, int *created, el_error *err);
    /* EL_ENOTFOUND when absent. */
    int (*bundle_get)(el_hub_store *s, const char *id, el_hub_bundle_rec *rec,
                      el_error *err);
    /* Rebuilt adapters by their canonical digest (el_delta_digest), as
     * bundle_put and release_put record them: BLOB is the adapter encoded
     * lossless from zeros. EL_ENOTFOUND for an unknown digest. */
    int (*adapter_get)(el_hub_store *s, const char *digest, char *blob, el_error *err);
    /* 1 in *OK when DEVICE may read blob SHA: a root, a release targeted at
     * it ("*", DEVICE or GROUP), or a bundle it uploaded. */
    int (*blob_allowed)(el_hub_store *s, const char *sha, const char *device,
                        const char *group, int *ok, el_error *err);

    /* Records that DEVICE (group GROUP, certificate SERIAL) connected. A
     * backend may skip the write when the same device, group and serial
     * were recorded less than EL_HUB_SEEN_GRANULARITY seconds ago
     * (status_put sets last_seen exactly). */
    int (*device_seen)(el_hub_store *s, const char *device, const char *group,
                       const char *serial, int64_t now, el_error *err);
    /* Stores a status report and advances the audit head (contract 3). */
    int (*status_put)(el_hub_store *s, const char *device, int64_t audit_seq,
                      const char *audit_hash, const char *status_json, int64_t now,
                      el_error *err);

    /* As bundle_put: BYTES as REC->blob, ADAPTER (may be NULL) as the
     * adapter REC->adapter, then REC. */
    int (*release_put)(el_hub_store *s, el_hub_release_rec *rec, const void *bytes, size_t len,
                       const void *adapter, size_t adapter_len, int *created, el_error *err);
    /* Releases with seq > SINCE whose target is "*", DEVICE or GROUP, in
     * arrival order, at most LIMIT: {"releases": [...], "next": SEQ}. */
    int (*releases_since)(el_hub_store *s, const char *device, const char *group,
                          int64_t since, int limit, json_t **out, el_error *err);

    /* Root metadata by version; root_get with VERSION 0 gives the newest. */
    int (*root_put)(el_hub_store *s, int64_t version, const char *blob, el_error *err);
    int (*root_get)(el_hub_store *s, int64_t *version, char *blob, el_error *err);

    int (*devices)(el_hub_store *s, json_t **out, el_error *err);
    int (*device_get)(el_hub_store *s, const char *device, json_t **out, el_error *err);
    /* Bundles uploaded by DEVICE (all devices when NULL), in arrival order. */
    int (*versions)(el_hub_store *s, const char *device, json_t **out, el_error *err);
    int (*counts)(el_hub_store *s, int64_t *devices, int64_t *bundles, el_error *err);
    /* Since the store opened: metadata commits made, and the writes they
     * held (more writes than commits: writes shared a commit). */
    void (*write_stats)(el_hub_store *s, uint64_t *commits, uint64_t *writes);
} el_hub_store_ops;

struct el_hub_store {
    const el_hub_store_ops *ops;
};

/* Opens (creating when needed) the embedded store in DIR: DIR/hub.db
 * (SQLite, WAL, synchronous=FULL) and DIR/blobs/sha256/ab/cdef... Returns 0
 * and *OUT (destroy with (*out)->ops->destroy), or EL_EIO / EL_EINPUT. */
int el_hub_store_sqlite_open(const char *dir, el_hub_store **out, el_error *err);

#endif
