/* The content-addressed blob store and retention.
 *
 * Invariants:
 *  1. A blob lives at blobs/sha256/<first 2 hex>/<remaining 62 hex> and its
 *     bytes hash to its name. It is written with el_fs_write_atomic (tmp,
 *     fsync, rename, fsync dir), so a file under its final name is complete
 *     and durable before any row refers to it.
 *  2. A row in `blobs` exists only for a durable file. Rows are added in the
 *     same transaction as the version that references them; a crash between
 *     the file and the row leaves an unrecorded file, which el_store_gc
 *     removes later (it is never referenced). el_store_blob_record checks
 *     the file again under the transaction's write lock and writes it anew
 *     when it is gone, because gc (below) may have removed it after the
 *     writer stored it: blobs are shared by content, so a new version can
 *     reuse a file that gc is freeing (test_race caught a retrained adapter
 *     identical to a rejected one losing its file this way).
 *  3. Freeing is the reverse: rows go first (one transaction), files after,
 *     under the write lock again and only while no row names them, so no
 *     writer can record a file between gc's check and its unlink. A crash
 *     in between leaves unrecorded files, again removed by gc.
 *  4. Every read checks the bytes against the name; a mismatch is reported
 *     as a corrupted blob and the bytes are never handed out.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/sha256.h"
#include "store/internal.h"

/* Adapters of small models are a few MiB; base models are recorded by path,
 * not stored. 4 GiB bounds a read of a damaged or foreign file. */
#define BLOB_READ_MAX ((size_t)4 << 30)
/* An unrecorded file younger than this may belong to a concurrent writer
 * that has not committed its row yet. */
#define ORPHAN_GRACE_S 600

int el_store_hash_valid(const char *hash)
{
    if (!hash || strlen(hash) != 64)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((hash[i] >= '0' && hash[i] <= '9') || (hash[i] >= 'a' && hash[i] <= 'f')))
            return 0;
    return 1;
}

int el_store_blob_path(const el_store *s, const char *hash, char *out, size_t n)
{
    if (!el_store_hash_valid(hash))
        return EL_EINPUT;
    int w = snprintf(out, n, "%s/%.2s/%s", s->blob_dir, hash, hash + 2);
    return (w < 0 || (size_t)w >= n) ? EL_EINPUT : 0;
}

int el_store_blob_usage(el_store *s, int64_t *bytes, el_error *err)
{
    return el_store_query_i64(s, "SELECT total(size) FROM blobs", INT64_MIN,
                              INT64_MIN, 0, bytes, err);
}

/* Writes blob HASH's file (durable, directory entry included). */
static int write_file(el_store *s, const char *hash, const void *data, size_t len,
                      el_error *err)
{
    char path[PATH_MAX], dir[PATH_MAX];
    if (el_store_blob_path(s, hash, path, sizeof path))
        return el_error_set(err, EL_EINPUT, "%s: blob path too long", s->blob_dir);
    snprintf(dir, sizeof dir, "%s/%.2s", s->blob_dir, hash);
    int rc;
    if (!el_fs_exists(dir)) {
        /* the new directory entry must itself be durable before the blob
         * inside it can be */
        if ((rc = el_fs_mkdirs(dir, 0755, err)) ||
            (rc = el_fs_fsync_dir(s->blob_dir, 1, err)))
            return rc;
    }
    return el_fs_write_atomic(path, data, len, 0444, err);
}

int el_store_blob_record(el_store *s, const char *hash, const void *data, size_t len,
                         el_error *err)
{
    if (s->in_tx == 0)
        return el_error_set(err, EL_EINTERNAL, "a blob recorded outside a transaction");
    /* invariant 2: the file, checked under the write lock */
    char path[PATH_MAX];
    struct stat stt;
    if (el_store_blob_path(s, hash, path, sizeof path))
        return el_error_set(err, EL_EINPUT, "%s: blob path too long", s->blob_dir);
    int rc;
    if ((stat(path, &stt) != 0 || stt.st_size != (off_t)len) &&
        (rc = write_file(s, hash, data, len, err)))
        return rc;
    sqlite3_stmt *st;
    rc = el_store_prepare(s, "INSERT OR IGNORE INTO blobs(hash, size, created_at) "
                             "VALUES(?1, ?2, ?3)", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (int64_t)len);
    sqlite3_bind_int64(st, 3, s->now);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = el_store_sql_fail(s, "recording a blob", err);
    sqlite3_finalize(st);
    return rc;
}

static int64_t budget_bytes(const el_store *s)
{
    return s->cfg.retention.max_blob_mb * 1024 * 1024;
}

int el_store_blob_put(el_store *s, const void *data, size_t len, char hash[65],
                      el_error *err)
{
    el_sha256_hex(data, len, hash);
    char path[PATH_MAX];
    if (el_store_blob_path(s, hash, path, sizeof path))
        return el_error_set(err, EL_EINPUT, "%s: blob path too long", s->blob_dir);
    int64_t recorded = 0;
    sqlite3_stmt *st;
    int rc;
    if ((rc = el_store_prepare(s, "SELECT count(*) FROM blobs WHERE hash = ?1",
                               &st, err)))
        return rc;
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
    recorded = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    if (el_fs_exists(path)) {
        /* present under its name: keep it if its bytes still match, else
         * write it again (storing the same content heals a damaged blob) */
        uint8_t *have;
        size_t have_len;
        if (el_store_blob_read(s, hash, &have, &have_len, NULL) == 0) {
            el_free(have);
            return 0;
        }
    }
    int64_t used;
    if ((rc = el_store_blob_usage(s, &used, err)))
        return rc;
    /* a recorded blob being rewritten is already counted in the usage */
    if (!recorded && used + (int64_t)len > budget_bytes(s)) {
        if ((rc = el_store_gc(s, (int64_t)len, NULL, err)))
            return rc;
        if ((rc = el_store_blob_usage(s, &used, err)))
            return rc;
        if (used + (int64_t)len > budget_bytes(s))
            return el_error_set(err, EL_ENOSPC,
                                "%s: blob store budget of %lld MiB is full (%lld bytes "
                                "used, %zu more needed) even after retention; raise "
                                "[retention] max_blob_mb or remove versions",
                                s->blob_dir, (long long)s->cfg.retention.max_blob_mb,
                                (long long)used, len);
    }
    return write_file(s, hash, data, len, err);
}

int el_store_blob_read(el_store *s, const char *hash, uint8_t **data,
                       size_t *len, el_error *err)
{
    *data = NULL;
    *len = 0;
    char path[PATH_MAX];
    if (el_store_blob_path(s, hash, path, sizeof path))
        return el_error_set(err, EL_EINPUT, "bad blob name \"%.80s\"", hash);
    uint8_t *buf;
    size_t n;
    int rc = el_fs_read_file(path, BLOB_READ_MAX, &buf, &n, err);
    if (rc == EL_ENOTFOUND)
        return el_error_set(err, EL_ENOTFOUND, "blob %s is missing (%s)", hash, path);
    if (rc)
        return rc;
    char got[65];
    el_sha256_hex(buf, n, got);
    if (strcmp(got, hash)) {
        el_free(buf);
        return el_error_set(err, EL_EINPUT,
                            "blob %s is corrupted: its content hashes to %s (%s)",
                            hash, got, path);
    }
    *data = buf;
    *len = n;
    return 0;
}

typedef struct freed_blob {
    char hash[65];
    int64_t size;
} freed_blob;

static int retire_one(el_store *s, int64_t id, int64_t need, el_error *err)
{
    char figures[160];
    snprintf(figures, sizeof figures, "{\"keep_good\":%lld,\"need_bytes\":%lld}",
             (long long)s->cfg.retention.keep_good, (long long)need);
    int64_t ignored;
    int rc = el_store_query_i64(s, "UPDATE versions SET state = 'retired', "
                                   "updated_at = ?2 WHERE id = ?1",
                                id, s->now, 0, &ignored, err);
    return rc ? rc : el_store_audit_append(s, "retired", id, figures, err);
}

/* Bytes that freeing would give back: blobs no live version references. */
static int freeable_bytes(el_store *s, int64_t *out, el_error *err)
{
    return el_store_query_i64(
        s, "SELECT total(size) FROM blobs WHERE hash NOT IN "
           "(SELECT f.blob FROM adapter_files f JOIN versions v "
           "ON v.id = f.version_id WHERE v.state NOT IN "
           "('rejected', 'rolled_back', 'retired')) "
           "AND hash NOT IN (SELECT blob FROM outbox WHERE sent_at IS NULL)",
        INT64_MIN, INT64_MIN, 0, out, err);
}

/* Retires good versions beyond keep_good and then, while NEED more bytes
 * would not fit the budget, the oldest good ones left. The active version
 * (the only one that can be pinned) is never retired. Inside the caller's
 * transaction. */
static int retire(el_store *s, int64_t need, int64_t *retired, el_error *err)
{
    sqlite3_stmt *st;
    int rc = el_store_prepare(
        s, "SELECT v.id FROM versions v, active a WHERE v.state = 'good' "
           "AND (a.version_id IS NULL OR v.id != a.version_id) "
           "ORDER BY coalesce(v.activated_at, v.created_at) DESC, v.id DESC",
        &st, err);
    if (rc)
        return rc;
    int64_t ids[4096];
    size_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW && n < 4096)
        ids[n++] = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    int64_t active_good = 0;
    if ((rc = el_store_query_i64(s, "SELECT count(*) FROM versions v, active a "
                                    "WHERE v.id = a.version_id AND v.state = 'good'",
                                 INT64_MIN, INT64_MIN, 0, &active_good, err)))
        return rc;
    /* the active good version counts toward keep_good */
    int64_t keep = s->cfg.retention.keep_good - active_good;
    size_t kept = keep < 0 ? 0 : ((size_t)keep < n ? (size_t)keep : n);
    for (size_t i = kept; i < n; i++) {
        if ((rc = retire_one(s, ids[i], need, err)))
            return rc;
        (*retired)++;
    }
    if (need <= 0)
        return 0;
    int64_t used;
    if ((rc = el_store_blob_usage(s, &used, err)))
        return rc;
    while (kept > 0) {
        int64_t freeable;
        if ((rc = freeable_bytes(s, &freeable, err)))
            return rc;
        if (used - freeable + need <= budget_bytes(s))
            break;
        kept--;   /* oldest of those still kept */
        if ((rc = retire_one(s, ids[kept], need, err)))
            return rc;
        (*retired)++;
    }
    return 0;
}

/* *YES = 1 when a row names blob HASH. */
static int blob_recorded(el_store *s, const char *hash, int64_t *yes, el_error *err)
{
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, "SELECT count(*) FROM blobs WHERE hash = ?1", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW)
        *yes = sqlite3_column_int64(st, 0) > 0;
    else
        rc = el_store_sql_fail(s, "looking up a blob", err);
    sqlite3_finalize(st);
    return rc;
}

void el_store_blob_drop_unrecorded(el_store *s, const char *hash)
{
    char path[PATH_MAX];
    int64_t recorded = 1;
    if (s->in_tx || el_store_blob_path(s, hash, path, sizeof path) ||
        el_store_begin(s, NULL))
        return;
    if (blob_recorded(s, hash, &recorded, NULL) == 0 && !recorded)
        unlink(path);
    el_store_commit(s, NULL);
}

/* Removes unrecorded files; the caller holds the write lock (invariant 3). */
static int sweep_orphans(el_store *s, int64_t *orphans, el_error *err)
{
    int64_t others = 0;
    int rc = el_store_query_i64(s, "SELECT count(*) FROM sessions WHERE pid != ?1",
                                (int64_t)getpid(), INT64_MIN, 0, &others, err);
    if (rc)
        return rc;
    DIR *top = opendir(s->blob_dir);
    if (!top)
        return 0;
    struct dirent *d;
    while ((d = readdir(top))) {
        if (strlen(d->d_name) != 2 || d->d_name[0] == '.')
            continue;
        char sub[PATH_MAX];
        if (el_fs_join(sub, sizeof sub, s->blob_dir, d->d_name))
            continue;
        DIR *dir = opendir(sub);
        if (!dir)
            continue;
        struct dirent *e;
        while ((e = readdir(dir))) {
            if (e->d_name[0] == '.')
                continue;
            char hash[65], path[PATH_MAX];
            snprintf(hash, sizeof hash, "%s%.62s", d->d_name, e->d_name);
            if (el_fs_join(path, sizeof path, sub, e->d_name))
                continue;
            int recorded = 0;
            if (strlen(e->d_name) == 62 && el_store_hash_valid(hash)) {
                sqlite3_stmt *st;
                if (el_store_prepare(s, "SELECT 1 FROM blobs WHERE hash = ?1", &st,
                                     NULL) == 0) {
                    sqlite3_bind_text(st, 1, hash, -1, SQLITE_TRANSIENT);
                    recorded = sqlite3_step(st) == SQLITE_ROW;
                    sqlite3_finalize(st);
                } else {
                    recorded = 1;   /* when in doubt, keep */
                }
            }
            if (recorded)
                continue;
            struct stat stt;
            if (stat(path, &stt) != 0)
                continue;
            if (others > 0 && s->now - (int64_t)stt.st_mtime < ORPHAN_GRACE_S)
                continue;
            if (unlink(path) == 0)
                (*orphans)++;
        }
        closedir(dir);
    }
    closedir(top);
    return 0;
}

int el_store_gc(el_store *s, int64_t need_bytes, el_store_gc_stats *stats,
                el_error *err)
{
    el_store_gc_stats local = {0};
    if (!stats)
        stats = &local;
    memset(stats, 0, sizeof *stats);
    if (s->in_tx)   /* its commits must be real (invariant 3) */
        return el_error_set(err, EL_EINTERNAL, "gc inside a transaction");
    freed_blob *freed = NULL;
    size_t n_freed = 0;
    sqlite3_stmt *st = NULL;
    int rc = el_store_begin(s, err);
    if (rc)
        return rc;
    if ((rc = retire(s, need_bytes, &stats->retired, err)))
        goto fail;
    /* a version whose verdict is final and negative, or that retention
     * retired, keeps its row (lineage) but no longer its files */
    int64_t ignored;
    if ((rc = el_store_query_i64(s, "DELETE FROM adapter_files WHERE version_id IN "
                                    "(SELECT id FROM versions WHERE state IN "
                                    "('rejected', 'rolled_back', 'retired'))",
                                 INT64_MIN, INT64_MIN, 0, &ignored, err)))
        goto fail;
    int64_t count = 0;
    if ((rc = el_store_query_i64(s, "SELECT count(*) FROM blobs WHERE hash NOT IN "
                                    "(SELECT blob FROM adapter_files UNION SELECT blob FROM outbox "
                                    "WHERE sent_at IS NULL)",
                                 INT64_MIN, INT64_MIN, 0, &count, err)))
        goto fail;
    freed = el_calloc((size_t)count + 1, sizeof *freed);
    if (!freed) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = el_store_prepare(s, "SELECT hash, size FROM blobs WHERE hash NOT IN "
                                  "(SELECT blob FROM adapter_files UNION SELECT blob FROM outbox "
                                    "WHERE sent_at IS NULL)", &st, err)))
        goto fail;
    while (n_freed < (size_t)count && sqlite3_step(st) == SQLITE_ROW) {
        snprintf(freed[n_freed].hash, 65, "%s", (const char *)sqlite3_column_text(st, 0));
        freed[n_freed].size = sqlite3_column_int64(st, 1);
        n_freed++;
    }
    sqlite3_finalize(st);
    st = NULL;
    if ((rc = el_store_query_i64(s, "DELETE FROM blobs WHERE hash NOT IN "
                                    "(SELECT blob FROM adapter_files UNION SELECT blob FROM outbox "
                                    "WHERE sent_at IS NULL)",
                                 INT64_MIN, INT64_MIN, 0, &ignored, err)))
        goto fail;
    /* samples beyond the retention limit: the oldest train samples go */
    int64_t total = 0;
    if ((rc = el_store_query_i64(s, "SELECT count(*) FROM samples", INT64_MIN,
                                 INT64_MIN, 0, &total, err)))
        goto fail;
    if (total > s->cfg.retention.max_samples) {
        int64_t drop = total - s->cfg.retention.max_samples;
        if ((rc = el_store_query_i64(s, "DELETE FROM samples WHERE id IN (SELECT id "
                                        "FROM samples WHERE part = 'train' ORDER BY "
                                        "id LIMIT ?1)", drop, INT64_MIN, 0, &ignored,
                                     err)))
            goto fail;
        stats->samples_dropped = sqlite3_changes(s->db);
    }
    if (n_freed || stats->retired || stats->samples_dropped) {
        char figures[192];
        int64_t bytes = 0;
        for (size_t i = 0; i < n_freed; i++)
            bytes += freed[i].size;
        snprintf(figures, sizeof figures,
                 "{\"blobs\":%zu,\"bytes\":%lld,\"retired\":%lld,\"samples_dropped\":%lld}",
                 n_freed, (long long)bytes, (long long)stats->retired,
                 (long long)stats->samples_dropped);
        if ((rc = el_store_audit_append(s, "gc", 0, figures, err)))
            goto fail;
    }
    if ((rc = el_store_commit(s, err)))
        goto fail;
    el_crash_point("gc.after_commit");
    /* invariant 3: files under the write lock, each only while no row
     * names it (a writer may have recorded the same content since) */
    if ((rc = el_store_begin(s, err)))
        goto fail;
    for (size_t i = 0; i < n_freed; i++) {
        char path[PATH_MAX];
        int64_t again = 0;
        if (el_store_blob_path(s, freed[i].hash, path, sizeof path))
            continue;
        if ((rc = blob_recorded(s, freed[i].hash, &again, err)))
            goto fail;
        if (again)
            continue;
        if (unlink(path) == 0 || errno == ENOENT) {
            stats->blobs_freed++;
            stats->bytes_freed += freed[i].size;
        }
        if (i == n_freed / 2)
            el_crash_point("gc.mid_unlink");
    }
    el_free(freed);
    freed = NULL;
    /* gc for space runs in the middle of a candidate's blob writes, whose
     * files are not recorded yet: sweeping then would delete them */
    if (need_bytes <= 0 && (rc = sweep_orphans(s, &stats->orphans, err)))
        goto fail;
    return el_store_commit(s, err);
fail:
    sqlite3_finalize(st);
    el_free(freed);
    el_store_tx_abort(s);
    return rc;
}

int el_store_check(el_store *s, el_store_fsck *r, el_error *err)
{
    memset(r, 0, sizeof *r);
    el_error first;
    el_error_clear(&first);
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, "PRAGMA integrity_check", &st, err);
    if (rc)
        return rc;
    r->integrity_ok = sqlite3_step(st) == SQLITE_ROW &&
                      !strcmp((const char *)sqlite3_column_text(st, 0), "ok");
    if (!r->integrity_ok)
        el_error_set(&first, EL_EINPUT, "%s/registry.db: integrity_check: %s", s->dir,
                     (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (!r->integrity_ok)
        goto done;
    el_error aerr;
    r->audit_ok = el_store_audit_verify(s, &r->audit_rows, &r->audit_bad_seq, &aerr) == 0;
    if (!r->audit_ok && !first.code)
        first = aerr;
    if ((rc = el_store_prepare(s, "SELECT hash FROM blobs ORDER BY hash", &st, err)))
        return rc;
    while (sqlite3_step(st) == SQLITE_ROW) {
        char hash[65];
        snprintf(hash, sizeof hash, "%s", (const char *)sqlite3_column_text(st, 0));
        uint8_t *data;
        size_t len;
        el_error berr;
        int b = el_store_blob_read(s, hash, &data, &len, &berr);
        r->blobs++;
        if (b == EL_ENOTFOUND)
            r->blobs_missing++;
        else if (b)
            r->blobs_corrupt++;
        el_free(data);
        if (b && !first.code)
            first = berr;
    }
    sqlite3_finalize(st);
    /* a version must not point at a blob without a row or a file; the row
     * half is also a foreign key, the file half only this check sees */
    if ((rc = el_store_prepare(s, "SELECT DISTINCT f.version_id, f.blob FROM "
                                  "adapter_files f ORDER BY f.version_id", &st, err)))
        return rc;
    int64_t last_bad = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t vid = sqlite3_column_int64(st, 0);
        char path[PATH_MAX];
        const char *hash = (const char *)sqlite3_column_text(st, 1);
        if (el_store_blob_path(s, hash ? hash : "", path, sizeof path) == 0 &&
            el_fs_exists(path))
            continue;
        if (vid != last_bad) {
            r->versions_missing_blob++;
            last_bad = vid;
            if (!first.code)
                el_error_set(&first, EL_EINPUT, "version %lld points at missing blob %s",
                             (long long)vid, hash ? hash : "?");
        }
    }
    sqlite3_finalize(st);
    if ((rc = el_store_active(s, &r->active_id, err)))
        return rc;
    r->active_ok = 1;
    if (r->active_id) {
        int64_t nfiles = 0, bad = 0;
        if ((rc = el_store_query_i64(s, "SELECT count(*) FROM adapter_files WHERE "
                                        "version_id = ?1", r->active_id, INT64_MIN, 0,
                                     &nfiles, err)))
            return rc;
        if ((rc = el_store_prepare(s, "SELECT blob FROM adapter_files WHERE "
                                      "version_id = ?1", &st, err)))
            return rc;
        sqlite3_bind_int64(st, 1, r->active_id);
        while (sqlite3_step(st) == SQLITE_ROW) {
            uint8_t *data;
            size_t len;
            const char *hash = (const char *)sqlite3_column_text(st, 0);
            if (el_store_blob_read(s, hash ? hash : "", &data, &len, NULL))
                bad++;
            el_free(data);
        }
        sqlite3_finalize(st);
        r->active_ok = nfiles > 0 && bad == 0;
        if (!r->active_ok && !first.code)
            el_error_set(&first, EL_EINPUT, "active version %lld does not verify",
                         (long long)r->active_id);
    }
    if ((rc = el_store_query_i64(s, "SELECT count(*) FROM samples", INT64_MIN,
                                 INT64_MIN, 0, &r->samples, err)))
        return rc;
done:
    if (first.code) {
        if (err)
            *err = first;
        return EL_EINPUT;
    }
    return 0;
}
