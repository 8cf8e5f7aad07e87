/* `edgeloop sync`: status up, roots and releases down. See sync.h.
 *
 * Invariants:
 *  1. Nothing fetched is trusted before el_device_import has verified it
 *     against the pinned root and the trust state: the hub can deliver
 *     nothing a release key did not sign (DESIGN.md).
 *  2. The release cursor (STATE/sync/cursor.json, written atomically) only
 *     moves past a release after its install committed or after a refusal
 *     that cannot change by fetching again (trust or format). A crash
 *     between the install and the cursor write fetches that release again,
 *     and el_device_import refuses it as a replay, which moves the cursor.
 *  3. An outbox entry is marked sent only after the hub answered for it
 *     (201 stored now, 200 already held): nothing the hub acknowledged is
 *     sent again, and a lost answer only costs an idempotent re-upload.
 *  4. One sync at a time per state (STATE/sync/lock, flock): `edgeloop sync`
 *     typed while the agent's sync runs waits for it, then finds little
 *     left to do.
 *  5. Downloads go to STATE/sync/BLOB.elb via BLOB.elb.part (the client
 *     resumes a .part with Range); the .elb is removed once imported.
 *  6. The TLS session of the last successful sync is kept in
 *     STATE/sync/tls-session (0600: it holds the session's master secret,
 *     like the key beside it), so that the next sync, a new process,
 *     resumes it: the hub then spends ~2 ms instead of ~10 on the
 *     handshake (BENCHMARKS.md). A file that does not load is removed; a
 *     session the hub no longer takes (restart, ticket expiry) costs one
 *     full handshake. The resumed hub is checked as on a full handshake.
 */
#define _DEFAULT_SOURCE
#include "daemon/sync.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "client.h"
#include "crypto.h"
#include "daemon/agent.h"
#include "daemon/device.h"

#define CURSOR_MAX 4096
#define MAX_ROOT_STEPS 16      /* roots pinned per run; the rest next time */
#define MAX_RELEASE_PAGES 64   /* pages of releases per run */
/* Largest release accepted for download: a base model fits, a hub that
 * advertises more is refused before a byte is fetched. */
#define RELEASE_MAX ((int64_t)8 << 30)

void el_daemon_sync_result_finish(el_daemon_sync_result *r)
{
    json_decref(r->events);
    r->events = NULL;
}

/* "https://HOST[:PORT][/]" into HOST (256) and *PORT. */
static int parse_url(const char *url, char *host, int *port, el_error *err)
{
    const char *p = url;
    if (strncmp(p, "https://", 8))
        return el_error_set(err, EL_EINPUT, "[hub] url = \"%s\" must start with https://", url);
    p += 8;
    size_t n = strcspn(p, ":/");
    if (n == 0 || n >= 256)
        return el_error_set(err, EL_EINPUT, "[hub] url = \"%s\" has no valid host", url);
    memcpy(host, p, n);
    host[n] = '\0';
    p += n;
    *port = 443;
    if (*p == ':') {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || v < 1 || v > 65535)
            return el_error_set(err, EL_EINPUT, "[hub] url = \"%s\" has a bad port", url);
        *port = (int)v;
        p = end;
    }
    if (*p && strcmp(p, "/"))
        return el_error_set(err, EL_EINPUT, "[hub] url = \"%s\" must not have a path", url);
    return 0;
}

static int cursor_path(el_store *s, char *out, size_t n)
{
    return snprintf(out, n, "%s/sync/cursor.json", el_store_dir(s)) >= (int)n ? -1 : 0;
}

static int cursor_read(el_store *s, int64_t *since, el_error *err)
{
    char path[1100];
    uint8_t *text = NULL;
    size_t len = 0;
    *since = 0;
    if (cursor_path(s, path, sizeof path))
        return el_error_set(err, EL_EUSAGE, "state directory path too long");
    int rc = el_fs_read_file(path, CURSOR_MAX, &text, &len, err);
    if (rc == EL_ENOTFOUND) {
        el_error_clear(err);
        return 0;
    }
    if (rc)
        return rc;
    json_t *doc = el_json_parse(text, len, CURSOR_MAX, path, err);
    el_free(text);
    if (!doc)
        return EL_EINPUT;
    rc = json_is_object(doc) ? el_json_get_i64(doc, "since", 0, INT64_MAX, since, path, err)
                             : el_error_set(err, EL_EINPUT, "%s: not an object", path);
    json_decref(doc);
    return rc;
}

static int cursor_write(el_store *s, int64_t since, el_error *err)
{
    char path[1100], text[64];
    if (cursor_path(s, path, sizeof path))
        return el_error_set(err, EL_EUSAGE, "state directory path too long");
    int n = snprintf(text, sizeof text, "{\"since\": %lld}\n", (long long)since);
    return el_fs_write_atomic(path, text, (size_t)n, 0640, err);
}

static void event(el_daemon_sync_result *r, const char *bundle, const char *what,
                  const char *outcome, const el_error *e)
{
    json_t *ev = json_pack("{ss ss ss}", "bundle", bundle, "kind", what, "outcome", outcome);
    if (ev && e && e->code)
        json_object_set_new(ev, "error", json_pack("{ss ss}", "code",
                                                   e->tag[0] ? e->tag : el_error_code_name(e->code),
                                                   "message", e->msg));
    if (ev)
        json_array_append_new(r->events, ev);
    el_agent_log(e && e->code ? EL_LOG_WARN : EL_LOG_INFO, "sync.bundle",
                 "bundle=%s kind=%s outcome=%s%s%s%s", bundle, what, outcome,
                 e && e->code ? " error=\"" : "", e && e->code ? e->msg : "",
                 e && e->code ? "\"" : "");
}

/* A failure of the link (not of the hub's judgement): offline. */
static int is_link_failure(int rc)
{
    return rc == EL_EIO;
}

/* ---- outbox ------------------------------------------------------------------ */

/* Uploads every pending outbox entry, oldest first. The hub answers the same
 * bundle id twice with 200 (idempotent), so an upload whose answer was lost
 * is simply sent again; an entry is marked sent only after the hub's answer,
 * and a sent entry is never listed again. A refusal by the hub (bad bundle,
 * wrong signer) is recorded as a failed attempt with a backoff and the next
 * entry goes on; a link failure stops the run (offline). */
static int upload_outbox(el_store *s, el_client *c, el_daemon_sync_result *r, el_error *err)
{
    int64_t queued = 0;
    el_error ferr = {0};
    int rc = el_device_outbox_fill(s, &queued, &ferr);
    if (rc && rc != EL_ENOSPC)
        goto fail_fill;
    if (rc)   /* the cap: what is queued still goes up */
        el_agent_log(EL_LOG_WARN, "sync.outbox_full", "error=\"%s\"", ferr.msg);
    el_store_outbox_entry *e = NULL;
    size_t n = 0;
    if ((rc = el_store_outbox_list(s, &e, &n, err)))
        return rc;
    for (size_t i = 0; i < n && !rc; i++) {
        uint8_t *bytes = NULL;
        size_t len = 0;
        int created = 0;
        el_error uerr = {0};
        rc = el_store_blob_read(s, e[i].blob, &bytes, &len, &uerr);
        if (!rc)
            rc = el_client_upload_bundle(c, e[i].bundle_id, bytes, len, &created, &uerr);
        el_free(bytes);
        if (!rc) {
            rc = el_store_outbox_sent(s, e[i].bundle_id, err);
            if (!rc) {
                created ? r->uploaded++ : r->already_held++;
                event(r, e[i].bundle_id, "device-delta", created ? "uploaded" : "already_held",
                      NULL);
            }
        } else if (is_link_failure(rc)) {
            if (err)
                *err = uerr;
        } else {
            /* the hub (or our blob) refused it: retry this one later */
            const el_store_config *cfg = el_store_get_config(s);
            uint64_t seed = (uint64_t)el_store_now(s) ^ (uint64_t)e[i].id * 0x9e3779b97f4a7c15ULL;
            int64_t delay_ms = el_client_backoff_ms((unsigned)e[i].attempts,
                                                    cfg->sync.backoff_base_s * 1000,
                                                    cfg->sync.backoff_cap_s * 1000, &seed);
            r->upload_refused++;
            event(r, e[i].bundle_id, "device-delta", "refused", &uerr);
            rc = el_store_outbox_retry(s, e[i].bundle_id,
                                       el_store_now(s) + delay_ms / 1000, err);
        }
    }
    el_free(e);
    return rc;
fail_fill:
    if (err)
        *err = ferr;
    return rc;
}

/* ---- status ----------------------------------------------------------------- */

static json_t *status_doc(el_store *s, const el_crypto_key *key, const char *device_id,
                          el_error *err)
{
    json_t *st = el_agent_state_json(s, err);
    if (!st)
        return NULL;
    json_t *head = json_object_get(st, "audit_head");
    json_t *doc = NULL;
    char *b64 = NULL;
    if (!json_is_object(head)) {
        el_error_set(err, EL_EINTERNAL, "the audit chain is empty");
        goto out;
    }
    int64_t seq = json_integer_value(json_object_get(head, "seq"));
    const char *hash = json_string_value(json_object_get(head, "hash"));
    char message[512];
    uint8_t sig[EL_CRYPTO_SIG_MAX];
    size_t sig_len = 0;
    long mlen = el_client_audit_message(device_id, seq, hash, message, sizeof message);
    if (mlen < 0) {
        el_error_set(err, EL_EINTERNAL, "audit head message too long");
        goto out;
    }
    if (el_crypto_sign(key, message, (size_t)mlen, sig, &sig_len, err) ||
        el_crypto_base64_encode(sig, sig_len, &b64, err))
        goto out;
    json_t *active = json_object_get(st, "active");
    json_t *probation = json_is_object(active) ? json_object_get(active, "probation") : NULL;
    doc = json_pack("{sO sO sO s{sO sO} s{sI ss ss}}",
                    "active", json_is_object(active) ? json_object_get(active, "id") : json_null(),
                    "probation", probation ? probation : json_null(),
                    "decisions", json_object_get(st, "recent_decisions"),
                    "counters", "versions", json_object_get(st, "versions"),
                    "samples", json_object_get(st, "samples"),
                    "audit", "seq", (json_int_t)seq, "hash", hash, "signature", b64);
    if (!doc)
        el_error_set(err, EL_ENOMEM, "out of memory");
out:
    el_free(b64);
    json_decref(st);
    return doc;
}

/* ---- fetch and install ---------------------------------------------------- */

/* Imports the file at PATH; classifies the outcome. Returns 0 when the
 * bundle is settled (installed or refused for good), else the local error. */
static int install(el_store *s, const char *path, const char *label, const char *what,
                   el_daemon_sync_result *r, el_error *err)
{
    el_device_import_result ir;
    el_error ierr = {0};
    memset(&ir, 0, sizeof ir);
    int rc = el_device_import(s, path, 0, &ir, &ierr);
    if (rc == 0) {
        event(r, label, what, "installed", NULL);
        if (strcmp(what, "root"))
            r->installed++;
        unlink(path);
        return 0;
    }
    if (rc == EL_ETRUST || rc == EL_EINPUT || rc == EL_EUNAVAIL) {
        /* the same bytes will be judged the same way next time */
        event(r, label, what, "refused", &ierr);
        unlink(path);
        return 0;
    }
    event(r, label, what, "failed", &ierr);
    if (err)
        *err = ierr;
    return rc;
}

static int sync_roots(el_store *s, el_client *c, el_daemon_sync_result *r, el_error *err)
{
    for (int step = 0; step < MAX_ROOT_STEPS; step++) {
        el_device_identity id;
        int rc = el_device_identity_get(s, &id, err);
        if (rc)
            return rc;
        r->root_version = id.root_version;
        uint8_t *bytes = NULL;
        size_t len = 0;
        rc = el_client_fetch_root(c, id.root_version + 1, &bytes, &len, err);
        if (rc == EL_ENOTFOUND) {
            el_error_clear(err);
            return 0;
        }
        if (rc)
            return rc;
        char path[1100], label[32];
        snprintf(path, sizeof path, "%s/sync/root-%lld.elb", el_store_dir(s),
                 (long long)(id.root_version + 1));
        snprintf(label, sizeof label, "root-%lld", (long long)(id.root_version + 1));
        rc = el_fs_write_atomic(path, bytes, len, 0640, err);
        el_free(bytes);
        if (rc)
            return rc;
        if ((rc = install(s, path, label, "root", r, err)))
            return rc;
        if (!el_device_identity_get(s, &id, NULL) && id.root_version > r->root_version) {
            r->roots_installed++;
            r->root_version = id.root_version;
        } else {
            return 0;   /* refused: keep the pinned root, stop climbing */
        }
    }
    return 0;
}

static int sync_releases(el_store *s, el_client *c, el_daemon_sync_result *r, el_error *err)
{
    int rc = cursor_read(s, &r->since, err);
    if (rc)
        return rc;
    for (int page = 0; page < MAX_RELEASE_PAGES; page++) {
        json_t *answer = NULL;
        if ((rc = el_client_releases(c, r->since, &answer, err)))
            return rc;
        json_t *list = json_object_get(answer, "releases");
        if (!json_is_array(list)) {
            json_decref(answer);
            return el_error_set(err, EL_EINPUT, "hub: releases answer without a list");
        }
        size_t i;
        json_t *rel;
        json_array_foreach(list, i, rel) {
            const char *blob = NULL, *id = NULL, *kind = "release";
            int64_t seq = 0, size = 0;
            if (!json_is_object(rel) ||
                el_json_get_i64(rel, "seq", r->since + 1, INT64_MAX, &seq, "release", err) ||
                el_json_get_i64(rel, "size", 0, RELEASE_MAX, &size, "release", err) ||
                el_json_get_str(rel, "blob", &blob, "release", err) ||
                el_json_get_str(rel, "id", &id, "release", err) ||
                el_json_get_str_opt(rel, "kind", &kind, "release", err) ||
                strlen(blob) != 64 || strspn(blob, "0123456789abcdef") != 64 ||
                strlen(id) > 64) {
                json_decref(answer);
                return err && err->code ? EL_EINPUT
                                        : el_error_set(err, EL_EINPUT, "hub: malformed release row");
            }
            r->releases_seen++;
            char path[1100];
            snprintf(path, sizeof path, "%s/sync/%s.elb", el_store_dir(s), blob);
            rc = el_client_download_blob(c, blob, path, err);
            if (rc == EL_ETRUST) {
                /* bytes that do not hash to the advertised blob: try again
                 * later from scratch (the client removed the .part) */
                event(r, id, kind, "bad_download", err);
                json_decref(answer);
                return EL_EIO;
            }
            if (!rc) {
                int64_t installed = r->installed;
                rc = install(s, path, id, kind, r, err);
                if (!rc && r->installed == installed)
                    r->refused++;
            }
            if (rc) {
                json_decref(answer);
                return rc;
            }
            r->since = seq;
            if ((rc = cursor_write(s, r->since, err))) {
                json_decref(answer);
                return rc;
            }
        }
        size_t n = json_array_size(list);
        json_decref(answer);
        if (n == 0)
            return 0;
    }
    return 0;
}

/* Moves the last trusted time forward to HUB_TIME, the clock the hub sent
 * over the mutually authenticated connection, so a device whose clock was
 * set back still refuses what expired (DESIGN.md "Trust and sync"). Never
 * backward: an older hub time changes nothing. No audit row: this happens at
 * every sync and is a clock reading, not a decision. Returns 0 or the
 * store's error. */
static int advance_trusted_time(el_store *s, int64_t hub_time, el_error *err)
{
    el_store_trust t = {0};
    int rc = el_store_trust_get(s, &t, err);
    if (rc)
        return rc;
    if (hub_time > t.last_time) {
        t.last_time = hub_time;
        rc = el_store_trust_set(s, &t, NULL, err);
    }
    el_store_trust_finish(&t);
    return rc;
}

#define SESSION_FILE_MAX 65536

/* Offers the session kept by the last sync (design note 6), if any. */
static void session_restore(el_client *c, const char *dir)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/tls-session", dir);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (el_fs_read_file(path, SESSION_FILE_MAX, &buf, &len, NULL))
        return;
    el_error err = {0};
    if (el_client_session_load(c, buf, len, &err)) {
        el_agent_log(EL_LOG_WARN, "sync.session", "path=%s error=\"%s\" action=removed", path,
                     err.msg);
        unlink(path);
    }
    el_free(buf);
}

/* Keeps the session of this sync for the next one (design note 6); a
 * failure only costs the next sync a full handshake. */
static void session_keep(el_client *c, const char *dir)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/tls-session", dir);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (el_client_session_save(c, &buf, &len, NULL) == 0)
        el_fs_write_atomic(path, buf, len, 0600, NULL);
    el_free(buf);
}

int el_daemon_sync(el_store *s, el_daemon_sync_result *r, el_error *err)
{
    memset(r, 0, sizeof *r);
    r->events = json_array();
    const el_store_config *cfg = el_store_get_config(s);
    if (!cfg->hub.url[0]) {
        r->offline = 1;
        return el_error_set(err, EL_EUNAVAIL, "no hub configured ([hub] url is empty)");
    }
    char host[256];
    int port = 443;
    int rc = parse_url(cfg->hub.url, host, &port, err);
    if (rc)
        return rc;
    el_device_identity id;
    if ((rc = el_device_identity_get(s, &id, err)))
        return rc;
    r->root_version = id.root_version;
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/sync", el_store_dir(s));
    if ((rc = el_fs_mkdirs(dir, 0750, err)))
        return rc;
    char lock_path[1200];
    snprintf(lock_path, sizeof lock_path, "%s/lock", dir);
    int lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (lock_fd < 0)
        return el_error_set(err, EL_EIO, "opening %s: %s", lock_path, strerror(errno));
    while (flock(lock_fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            close(lock_fd);
            return el_error_set(err, EL_EIO, "locking %s: %s", lock_path, strerror(errno));
        }
    }
    el_store_trust trust = {0};
    if ((rc = el_store_trust_get(s, &trust, err))) {
        close(lock_fd);
        return rc;
    }
    int64_t now = el_store_now(s);
    int64_t trusted = trust.last_time > now ? trust.last_time : now;
    el_store_trust_finish(&trust);

    el_crypto_key *key = NULL;
    el_client *c = NULL;
    json_t *status = NULL;
    if ((rc = el_crypto_key_load(cfg->hub.key, 1, &key, err)))
        goto out;
    el_client_opts co = {.host = host, .port = port, .ca_path = cfg->hub.ca,
                         .cert_path = cfg->hub.cert, .key_path = cfg->hub.key,
                         .resume = 1, .trusted_time = trusted};
    if ((rc = el_client_create(&co, &c, err)))
        goto out;
    session_restore(c, dir);
    if (!(status = status_doc(s, key, id.device_id, err))) {
        rc = err && err->code ? err->code : EL_EINTERNAL;
        goto out;
    }
    if ((rc = upload_outbox(s, c, r, err)) || (rc = el_client_post_status(c, status, err)))
        goto out;
    r->status_posted = 1;
    if ((rc = advance_trusted_time(s, el_client_hub_time(c), err)))
        goto out;
    if ((r->hub_time_refused = el_client_hub_time_refused(c)) != 0)
        el_agent_log(EL_LOG_WARN, "sync.hub_time_refused",
                     "hub_time=%lld reason=\"after the hub certificate's notAfter\"",
                     (long long)r->hub_time_refused);
    el_agent_log(EL_LOG_INFO, "sync.status", "hub=%s", cfg->hub.url);
    if ((rc = sync_roots(s, c, r, err)) || (rc = sync_releases(s, c, r, err)))
        goto out;
    session_keep(c, dir);
out:
    if (rc && is_link_failure(rc)) {
        r->offline = 1;
        el_error_prefix(err, "hub %s unreachable", cfg->hub.url);
        if (err)
            err->code = EL_EUNAVAIL;
        rc = EL_EUNAVAIL;
    }
    json_decref(status);
    el_client_destroy(c);
    el_crypto_key_destroy(key);
    close(lock_fd);   /* releases the flock */
    return rc;
}
