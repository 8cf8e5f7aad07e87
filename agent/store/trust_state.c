/* The device's fleet trust state in the registry (schema version 3), and
 * the base model's recorded path.
 *
 * Invariants:
 *  1. One row (id = 1) holds the pinned root bundle bytes, its version and
 *     the last trusted time; trust_counters holds the highest accepted
 *     counter per release kind. A device that is not enrolled has a NULL
 *     root and version 0.
 *  2. The trust decision itself is sync/trust.c's (a pure function); the
 *     caller persists the new state here, inside the same transaction as
 *     the install it belongs to (el_store_transaction_begin), so a crash
 *     leaves the old state with the old install or the new with the new.
 *  3. Counters and the last trusted time only move forward: a write that
 *     would lower one is refused (EL_EPOLICY) and changes nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "store/internal.h"

static const char *const kind_names[EL_STORE_TRUST_KINDS] = {"adapter", "base-model",
                                                             "policy"};

const char *el_store_trust_kind_name(int kind)
{
    return kind >= 0 && kind < EL_STORE_TRUST_KINDS ? kind_names[kind] : NULL;
}

int el_store_base_path(el_store *s, int64_t base_id, char *out, size_t n, el_error *err)
{
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, "SELECT path FROM bases WHERE id = ?1", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, base_id);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        const char *p = (const char *)sqlite3_column_text(st, 0);
        if ((size_t)snprintf(out, n, "%s", p ? p : "") >= n)
            rc = el_error_set(err, EL_EINPUT, "base model %lld: path too long",
                              (long long)base_id);
    } else if (step == SQLITE_DONE) {
        rc = el_error_set(err, EL_ENOTFOUND, "%s: no base model %lld", s->dir,
                          (long long)base_id);
    } else {
        rc = el_store_sql_fail(s, "reading a base model", err);
    }
    sqlite3_finalize(st);
    return rc;
}

void el_store_trust_finish(el_store_trust *t)
{
    if (!t)
        return;
    el_free(t->root);
    t->root = NULL;
    t->root_len = 0;
}

int el_store_trust_get(el_store *s, el_store_trust *t, el_error *err)
{
    memset(t, 0, sizeof *t);
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, "SELECT root, root_version, last_time FROM trust "
                                 "WHERE id = 1", &st, err);
    if (rc)
        return rc;
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return el_store_sql_fail(s, "reading the trust state", err);
    }
    const void *root = sqlite3_column_blob(st, 0);
    int len = sqlite3_column_bytes(st, 0);
    if (root && len > 0) {
        if (!(t->root = el_malloc((size_t)len))) {
            sqlite3_finalize(st);
            return el_error_set(err, EL_ENOMEM, "out of memory reading the pinned root");
        }
        memcpy(t->root, root, (size_t)len);
        t->root_len = (size_t)len;
    }
    t->root_version = sqlite3_column_int64(st, 1);
    t->last_time = sqlite3_column_int64(st, 2);
    sqlite3_finalize(st);
    for (int k = 0; k < EL_STORE_TRUST_KINDS; k++) {
        if ((rc = el_store_prepare(s, "SELECT counter FROM trust_counters WHERE kind = ?1",
                                   &st, err))) {
            el_store_trust_finish(t);
            return rc;
        }
        sqlite3_bind_text(st, 1, kind_names[k], -1, SQLITE_STATIC);
        t->counters[k] = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
        sqlite3_finalize(st);
    }
    return 0;
}

/* Writes T (invariant 3 checked against OLD) inside the open transaction. */
static int trust_write(el_store *s, const el_store_trust *old, const el_store_trust *t,
                       el_error *err)
{
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, "UPDATE trust SET root = ?1, root_version = ?2, "
                                 "last_time = ?3 WHERE id = 1", &st, err);
    if (rc)
        return rc;
    if (t->root && t->root_len)
        sqlite3_bind_blob(st, 1, t->root, (int)t->root_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 1);
    sqlite3_bind_int64(st, 2, t->root_version);
    sqlite3_bind_int64(st, 3, t->last_time);
    int step = sqlite3_step(st);
    sqlite3_finalize(st);
    if (step != SQLITE_DONE)
        return el_store_sql_fail(s, "writing the trust state", err);
    for (int k = 0; k < EL_STORE_TRUST_KINDS; k++) {
        if (t->counters[k] == old->counters[k])
            continue;
        if ((rc = el_store_prepare(s, "INSERT INTO trust_counters(kind, counter) "
                                      "VALUES(?1, ?2) ON CONFLICT(kind) DO UPDATE "
                                      "SET counter = excluded.counter", &st, err)))
            return rc;
        sqlite3_bind_text(st, 1, kind_names[k], -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, t->counters[k]);
        step = sqlite3_step(st);
        sqlite3_finalize(st);
        if (step != SQLITE_DONE)
            return el_store_sql_fail(s, "writing a release counter", err);
    }
    return 0;
}

int el_store_trust_set(el_store *s, const el_store_trust *t, const char *event,
                       el_error *err)
{
    if (t->root_len > EL_STORE_ROOT_MAX)
        return el_error_set(err, EL_EINPUT, "pinned root of %zu bytes is over %d",
                            t->root_len, EL_STORE_ROOT_MAX);
    el_store_trust old;
    int rc = el_store_begin(s, err);
    if (rc)
        return rc;
    if ((rc = el_store_trust_get(s, &old, err)))
        goto fail;
    el_store_trust_finish(&old);
    if (t->last_time < old.last_time || t->root_version < old.root_version) {
        rc = el_error_set(err, EL_EPOLICY, "trust state would move back (time %lld < %lld "
                          "or root %lld < %lld)", (long long)t->last_time,
                          (long long)old.last_time, (long long)t->root_version,
                          (long long)old.root_version);
        goto fail;
    }
    for (int k = 0; k < EL_STORE_TRUST_KINDS; k++)
        if (t->counters[k] < old.counters[k]) {
            rc = el_error_set(err, EL_EPOLICY, "%s counter would move back (%lld < %lld)",
                              kind_names[k], (long long)t->counters[k],
                              (long long)old.counters[k]);
            goto fail;
        }
    if ((rc = trust_write(s, &old, t, err)))
        goto fail;
    if (event) {
        json_t *f = json_object();
        json_object_set_new(f, "root_version", json_integer(t->root_version));
        json_object_set_new(f, "last_time", json_integer(t->last_time));
        for (int k = 0; k < EL_STORE_TRUST_KINDS; k++)
            json_object_set_new(f, kind_names[k], json_integer(t->counters[k]));
        char *text = el_store_json_take(f);
        if (!text) {
            rc = el_error_set(err, EL_ENOMEM, "out of memory");
            goto fail;
        }
        rc = el_store_audit_append(s, event, 0, text, err);
        free(text);
        if (rc)
            goto fail;
    }
    return el_store_commit(s, err);
fail:
    el_store_tx_abort(s);
    return rc;
}

int el_store_transaction_begin(el_store *s, el_error *err)
{
    return el_store_begin(s, err);
}

int el_store_transaction_commit(el_store *s, el_error *err)
{
    return el_store_commit(s, err);
}

void el_store_transaction_abort(el_store *s)
{
    el_store_tx_abort(s);
}

int el_store_policy_replace(el_store *s, const char *const *sections,
                            const char *const *keys, const char *const *values,
                            size_t n, const char *release_id, el_error *err)
{
    el_store_config scratch;
    el_config_defaults(&scratch);
    for (size_t i = 0; i < n; i++) {
        int rc = el_config_set(&scratch, sections[i], keys[i], values[i], EL_CONFIG_POLICY,
                               "policy release", err);
        if (rc)
            return rc == EL_ENOTFOUND ? el_error_set(err, EL_EINPUT, "policy release: "
                                                     "unknown key [%s] %s", sections[i],
                                                     keys[i])
                                      : rc;
    }
    int rc = el_store_begin(s, err);
    if (rc)
        return rc;
    sqlite3_stmt *st = NULL;
    if ((rc = el_store_exec(s, "DELETE FROM policy", err)))
        goto fail;
    for (size_t i = 0; i < n; i++) {
        if ((rc = el_store_prepare(s, "INSERT OR REPLACE INTO policy(section, key, value, "
                                      "release) VALUES(?1, ?2, ?3, ?4)", &st, err)))
            goto fail;
        sqlite3_bind_text(st, 1, sections[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, keys[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, values[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, release_id, -1, SQLITE_STATIC);
        int step = sqlite3_step(st);
        sqlite3_finalize(st);
        if (step != SQLITE_DONE) {
            rc = el_store_sql_fail(s, "writing a policy override", err);
            goto fail;
        }
    }
    json_t *f = json_object();
    json_object_set_new(f, "release", json_string(release_id));
    json_object_set_new(f, "keys", json_integer((json_int_t)n));
    char *text = el_store_json_take(f);
    if (!text) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory");
        goto fail;
    }
    rc = el_store_audit_append(s, "policy_installed", 0, text, err);
    free(text);
    if (rc)
        goto fail;
    return el_store_commit(s, err);
fail:
    el_store_tx_abort(s);
    return rc;
}

/* ---- outbox ------------------------------------------------------------------- */

int el_store_outbox_add(el_store *s, int64_t version_id, const char *bundle_id,
                        const uint8_t *bytes, size_t len, el_error *err)
{
    if (!el_store_hash_valid(bundle_id))
        return el_error_set(err, EL_EINPUT, "outbox: bad bundle id");
    int64_t have = 0, pending = 0, exists = 0;
    int rc = el_store_query_i64(s, "SELECT count(*) FROM versions WHERE id = ?1", version_id,
                                INT64_MIN, 0, &exists, err);
    if (rc)
        return rc;
    if (!exists)
        return el_error_set(err, EL_ENOTFOUND, "outbox: no version %lld",
                            (long long)version_id);
    sqlite3_stmt *st;
    if ((rc = el_store_prepare(s, "SELECT count(*) FROM outbox WHERE bundle_id = ?1", &st,
                               err)))
        return rc;
    sqlite3_bind_text(st, 1, bundle_id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        have = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (have)
        return 0;
    if ((rc = el_store_query_i64(s, "SELECT total(size) FROM outbox WHERE sent_at IS NULL",
                                 INT64_MIN, INT64_MIN, 0, &pending, err)))
        return rc;
    int64_t cap = s->cfg.sync.outbox_max_mb * 1024 * 1024;
    if (pending + (int64_t)len > cap)
        return el_error_set(err, EL_ENOSPC, "outbox: %lld pending bytes + %zu would exceed "
                            "[sync] outbox_max_mb = %lld", (long long)pending, len,
                            (long long)s->cfg.sync.outbox_max_mb);
    char hash[65];
    if ((rc = el_store_blob_put(s, bytes, len, hash, err)) || (rc = el_store_begin(s, err)))
        return rc;
    if ((rc = el_store_blob_record(s, hash, bytes, len, err)) ||
        (rc = el_store_prepare(s, "INSERT INTO outbox(bundle_id, version_id, blob, size, "
                                  "created_at) VALUES(?1, ?2, ?3, ?4, ?5)", &st, err)))
        goto fail;
    sqlite3_bind_text(st, 1, bundle_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, version_id);
    sqlite3_bind_text(st, 3, hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (int64_t)len);
    sqlite3_bind_int64(st, 5, s->now);
    int step = sqlite3_step(st);
    sqlite3_finalize(st);
    if (step != SQLITE_DONE) {
        rc = el_store_sql_fail(s, "queueing a bundle", err);
        goto fail;
    }
    json_t *f = json_object();
    json_object_set_new(f, "bundle", json_string(bundle_id));
    json_object_set_new(f, "size", json_integer((json_int_t)len));
    char *text = el_store_json_take(f);
    if (!text) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory");
        goto fail;
    }
    rc = el_store_audit_append(s, "outbox_queued", version_id, text, err);
    free(text);
    if (rc)
        goto fail;
    return el_store_commit(s, err);
fail:
    el_store_tx_abort(s);
    return rc;
}

int el_store_outbox_list(el_store *s, el_store_outbox_entry **out, size_t *n,
                         el_error *err)
{
    *out = NULL;
    *n = 0;
    int64_t count = 0;
    int rc = el_store_query_i64(s, "SELECT count(*) FROM outbox WHERE sent_at IS NULL",
                                INT64_MIN, INT64_MIN, 0, &count, err);
    if (rc || !count)
        return rc;
    el_store_outbox_entry *v = el_calloc((size_t)count, sizeof *v);
    if (!v)
        return el_error_set(err, EL_ENOMEM, "out of memory listing the outbox");
    sqlite3_stmt *st;
    if ((rc = el_store_prepare(s, "SELECT id, version_id, size, created_at, attempts, "
                                  "next_at, bundle_id, blob FROM outbox WHERE sent_at IS "
                                  "NULL ORDER BY id", &st, err))) {
        el_free(v);
        return rc;
    }
    size_t i = 0;
    while (i < (size_t)count && sqlite3_step(st) == SQLITE_ROW) {
        v[i].id = sqlite3_column_int64(st, 0);
        v[i].version_id = sqlite3_column_int64(st, 1);
        v[i].size = sqlite3_column_int64(st, 2);
        v[i].created_at = sqlite3_column_int64(st, 3);
        v[i].attempts = sqlite3_column_int64(st, 4);
        v[i].next_at = sqlite3_column_int64(st, 5);
        snprintf(v[i].bundle_id, 65, "%s", (const char *)sqlite3_column_text(st, 6));
        snprintf(v[i].blob, 65, "%s", (const char *)sqlite3_column_text(st, 7));
        i++;
    }
    sqlite3_finalize(st);
    *out = v;
    *n = i;
    return 0;
}

int el_store_outbox_has(el_store *s, int64_t version_id, el_error *err)
{
    int64_t c = 0;
    int rc = el_store_query_i64(s, "SELECT count(*) FROM outbox WHERE version_id = ?1",
                                version_id, INT64_MIN, 0, &c, err);
    return rc ? rc : c > 0;
}

/* Runs SQL (?1 = bundle id, ?2 = NEXT) on one outbox row. */
static int outbox_update(el_store *s, const char *sql, const char *bundle_id, int64_t next,
                         el_error *err)
{
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, sql, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, bundle_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, next);
    int step = sqlite3_step(st);
    sqlite3_finalize(st);
    if (step != SQLITE_DONE)
        return el_store_sql_fail(s, "updating the outbox", err);
    if (sqlite3_changes(s->db) == 0)
        return el_error_set(err, EL_ENOTFOUND, "outbox: bundle %.16s... is not queued",
                            bundle_id);
    return 0;
}

int el_store_outbox_sent(el_store *s, const char *bundle_id, el_error *err)
{
    return outbox_update(s, "UPDATE outbox SET sent_at = ?2 WHERE bundle_id = ?1 AND "
                            "sent_at IS NULL", bundle_id, s->now, err);
}

int el_store_outbox_retry(el_store *s, const char *bundle_id, int64_t next_at,
                          el_error *err)
{
    return outbox_update(s, "UPDATE outbox SET attempts = attempts + 1, next_at = ?2 "
                            "WHERE bundle_id = ?1 AND sent_at IS NULL", bundle_id, next_at,
                         err);
}
