/* The device's sync with the hub (`edgeloop sync`, and the agent's timer):
 * upload the outbox, post status, fetch newer roots, fetch and install
 * releases.
 *
 * Uses sync/client.h for the wire and daemon/device.h to install what it
 * fetches (the same path as `edgeloop import`), so a release from the hub
 * and one from a USB stick meet exactly the same checks.
 */
#ifndef EL_DAEMON_SYNC_H
#define EL_DAEMON_SYNC_H

#include <jansson.h>
#include <stdint.h>

#include "base/error.h"
#include "store/store.h"

/* Exit status of `edgeloop sync` when the hub cannot be reached: offline is
 * normal for a device, so it is neither an error (1) nor a refusal (3);
 * 75 is sysexits.h's EX_TEMPFAIL ("try again later"). */
#define EL_DAEMON_SYNC_EXIT_OFFLINE 75

typedef struct el_daemon_sync_result {
    int offline;             /* 1: the hub could not be reached (or dropped) */
    int status_posted;       /* 1: the hub took the status report */
    int64_t uploaded;        /* outbox bundles the hub stored now */
    int64_t already_held;    /* outbox bundles the hub already had */
    int64_t upload_refused;  /* outbox bundles the hub refused (retried later) */
    int64_t roots_installed; /* newer roots pinned, one at a time */
    int64_t root_version;    /* the pinned root after the run */
    int64_t releases_seen, installed, refused;
    int64_t since;           /* release cursor (hub sequence) after the run */
    int64_t hub_time_refused; /* a hub time not trusted: after the hub
                                 certificate's notAfter (0: none) */
    json_t *events;          /* array of {"bundle", "kind", "outcome", ...}
                                (new reference; may be NULL) */
} el_daemon_sync_result;

/* Frees R->events. Accepts a zeroed R. */
void el_daemon_sync_result_finish(el_daemon_sync_result *r);

/* One sync with the hub of S's [hub] configuration:
 *  0. queues a signed delta of every good local version not queued yet
 *     (el_device_outbox_fill) and uploads every pending outbox entry,
 *     oldest first, marking each sent once the hub acknowledged it;
 *  1. posts the status report (active version, probation state, recent
 *     decisions with their figures, counters, and the audit head (seq,
 *     hash) signed with the device key);
 *  2. pins newer roots: GET /v1/root/N+1 until the hub has none, each
 *     installed through el_device_import (the N -> N+1 chain rule);
 *  3. GET /v1/releases?since=SEQ, each release downloaded (resuming a
 *     partial download, checked against its SHA-256) into STATE/sync/ and
 *     installed through el_device_import. The cursor STATE/sync/cursor.json
 *     moves past a release once it is installed or refused for good (trust
 *     or format), never past one that failed for a local reason (disk,
 *     I/O), so that one is fetched again next time.
 * Returns 0 with *R filled (R->refused counts releases the trust rules
 * refused: a refusal is the device doing its job, not a sync failure);
 * EL_EUNAVAIL when no hub is configured or the hub cannot be reached
 * (R->offline = 1; whatever was done before the link dropped is kept);
 * EL_EPOLICY "not_enrolled" before enrollment; other EL_E* for local
 * failures. R is always initialised: finish it. */
int el_daemon_sync(el_store *s, el_daemon_sync_result *r, el_error *err);

#endif
