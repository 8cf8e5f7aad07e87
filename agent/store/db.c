/* registry.db: opening the state, the schema and its migrations, and the
 * session table that boot counting reads.
 *
 * Invariants:
 *  1. PRAGMA user_version is the schema version. Migration N -> N+1 runs in
 *     one transaction that also sets user_version, so a crash leaves version
 *     N or N+1, never a half-migrated schema. A database newer than
 *     EL_STORE_SCHEMA_VERSION is refused before anything is written to it.
 *  2. journal_mode=WAL, synchronous=FULL, foreign_keys=ON on every
 *     connection: a COMMIT that returned is durable, and no row can point at
 *     a missing version, base or blob row.
 *  3. Each process that opens the state owns one row of `sessions` (its pid)
 *     until el_store_close removes it. A row whose pid is gone was left by a
 *     crash; if the active version was on probation when that session began,
 *     the version's crash counter goes up (boot counting, RAUC/Mender
 *     style). The counting and probation expiry run at every open, before
 *     the caller does anything else.
 *  4. A command's scratch folder or file in the state directory is named
 *     after its process (train-work.PID, bundle-work.PID, import-work.PID,
 *     outbox-work.PID.elb; see daemon/). At open, those of pids that are no
 *     longer alive (a crash or kill -9 mid-command) are removed; those of
 *     live processes are never touched.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "store/internal.h"

/* Schema version 1: the registry as first released. Kept verbatim: a v1
 * database in the field is migrated from exactly this. */
static const char schema_v1[] =
    "CREATE TABLE bases("
    " id INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE, config TEXT NOT NULL,"
    " path TEXT NOT NULL, created_at INTEGER NOT NULL);"
    "CREATE TABLE blobs("
    " hash TEXT PRIMARY KEY, size INTEGER NOT NULL, created_at INTEGER NOT NULL);"
    "CREATE TABLE versions("
    " id INTEGER PRIMARY KEY,"
    " parent_id INTEGER REFERENCES versions(id),"
    " base_id INTEGER NOT NULL REFERENCES bases(id),"
    " state TEXT NOT NULL CHECK(state IN ('candidate','probation','good',"
    "  'rejected','rolled_back','retired')),"
    " origin TEXT NOT NULL CHECK(origin IN ('local','fleet','imported')),"
    " data_digest TEXT NOT NULL, adapter_hash TEXT NOT NULL,"
    " recipe TEXT NOT NULL, seed INTEGER NOT NULL, backend TEXT NOT NULL,"
    " metrics TEXT NOT NULL, plasticity TEXT NOT NULL,"
    " gate_pass INTEGER, gate TEXT, reason TEXT, signer TEXT,"
    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    " activated_at INTEGER, probation_since INTEGER);"
    "CREATE TABLE adapter_files("
    " version_id INTEGER NOT NULL REFERENCES versions(id),"
    " name TEXT NOT NULL, blob TEXT NOT NULL REFERENCES blobs(hash),"
    " PRIMARY KEY(version_id, name));"
    "CREATE TABLE active("
    " id INTEGER PRIMARY KEY CHECK(id = 1),"
    " version_id INTEGER REFERENCES versions(id), since INTEGER NOT NULL);"
    "INSERT INTO active(id, version_id, since) VALUES(1, NULL, 0);"
    "CREATE TABLE samples("
    " id INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE,"
    " split TEXT NOT NULL CHECK(split IN ('train','holdout','anchor')),"
    " part TEXT NOT NULL CHECK(part IN ('train','probe','holdout',"
    "  'anchor-replay','anchor-check')),"
    " body TEXT NOT NULL, source TEXT NOT NULL, line INTEGER NOT NULL,"
    " trained_by INTEGER REFERENCES versions(id), created_at INTEGER NOT NULL);"
    "CREATE TABLE feedback("
    " id INTEGER PRIMARY KEY,"
    " version_id INTEGER NOT NULL REFERENCES versions(id),"
    " accept INTEGER NOT NULL, at INTEGER NOT NULL);"
    "CREATE TABLE audit("
    " seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL,"
    " event TEXT NOT NULL, version_id INTEGER, figures TEXT NOT NULL,"
    " prev TEXT NOT NULL, hash TEXT NOT NULL);"
    "CREATE TABLE policy("
    " section TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
    " release TEXT NOT NULL, PRIMARY KEY(section, key));";

/* Version 2: boot counting (sessions, per-version crash counter), the pin,
 * and an index for the trainer's sample lists. */
static const char migrate_v2[] =
    "ALTER TABLE versions ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE active ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE sessions("
    " pid INTEGER PRIMARY KEY, started_at INTEGER NOT NULL,"
    " version_id INTEGER REFERENCES versions(id));"
    "CREATE INDEX samples_part ON samples(part, id);";

/* Version 3: the fleet trust state (pinned root, last trusted time, highest
 * counter per release kind) and the outbox of device deltas waiting for
 * upload, both persisted by the device glue (trust_state.c). */
static const char migrate_v3[] =
    "CREATE TABLE trust("
    " id INTEGER PRIMARY KEY CHECK(id = 1), root BLOB,"
    " root_version INTEGER NOT NULL, last_time INTEGER NOT NULL);"
    "INSERT INTO trust(id, root, root_version, last_time) VALUES(1, NULL, 0, 0);"
    "CREATE TABLE trust_counters("
    " kind TEXT PRIMARY KEY CHECK(kind IN ('adapter','base-model','policy')),"
    " counter INTEGER NOT NULL);"
    "CREATE TABLE outbox("
    " id INTEGER PRIMARY KEY, bundle_id TEXT NOT NULL UNIQUE,"
    " version_id INTEGER NOT NULL REFERENCES versions(id),"
    " blob TEXT NOT NULL, size INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
    " next_at INTEGER NOT NULL DEFAULT 0, sent_at INTEGER);";

/* Version 4: a base's hash becomes SHA-256 of its model.safetensors alone
 * (what releases and deltas name as "base"), no longer of config.json +
 * model.safetensors. No SQL change: rehash_bases() recomputes every row
 * from its recorded path in the migration's transaction. */
static const char migrate_v4[] = "";

static const char *const migrations[] = {schema_v1, migrate_v2, migrate_v3, migrate_v4};
_Static_assert(sizeof migrations / sizeof migrations[0] ==
                   EL_STORE_SCHEMA_VERSION,
               "one migration per schema version");

int el_store_sql_fail(el_store *s, const char *what, el_error *err)
{
    int ec = s->db ? sqlite3_extended_errcode(s->db) : SQLITE_ERROR;
    const char *msg = s->db ? sqlite3_errmsg(s->db) : "no database";
    int code = ((ec & 0xff) == SQLITE_FULL) ? EL_ENOSPC : EL_EIO;
    if ((ec & 0xff) == SQLITE_CONSTRAINT)
        code = EL_EPOLICY;
    return el_error_set(err, code, "%s/registry.db: %s: %s", s->dir, what, msg);
}

int el_store_exec(el_store *s, const char *sql, el_error *err)
{
    if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return el_store_sql_fail(s, "statement failed", err);
    return 0;
}

int el_store_prepare(el_store *s, const char *sql, sqlite3_stmt **st,
                     el_error *err)
{
    if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK) {
        *st = NULL;
        return el_store_sql_fail(s, "prepare failed", err);
    }
    return 0;
}

int el_store_begin(el_store *s, el_error *err)
{
    if (s->in_tx++ > 0)
        return 0;
    int rc = el_store_exec(s, "BEGIN IMMEDIATE", err);
    if (rc)
        s->in_tx = 0;
    return rc;
}

int el_store_commit(el_store *s, el_error *err)
{
    if (s->in_tx == 0)
        return el_error_set(err, EL_EINTERNAL, "commit without a transaction");
    if (--s->in_tx > 0)
        return 0;
    int rc = el_store_exec(s, "COMMIT", err);
    if (rc)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

void el_store_tx_abort(el_store *s)
{
    if (s->in_tx == 0)
        return;
    s->in_tx = 0;
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

int el_store_query_i64(el_store *s, const char *sql, int64_t a, int64_t b,
                       int64_t def, int64_t *out, el_error *err)
{
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, sql, &st, err);
    if (rc)
        return rc;
    if (a != INT64_MIN)
        sqlite3_bind_int64(st, 1, a);
    if (b != INT64_MIN)
        sqlite3_bind_int64(st, 2, b);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        *out = sqlite3_column_type(st, 0) == SQLITE_NULL
                   ? def
                   : sqlite3_column_int64(st, 0);
    else if (step == SQLITE_DONE)
        *out = def;
    else
        rc = el_store_sql_fail(s, "query failed", err);
    sqlite3_finalize(st);
    return rc;
}

char *el_store_json_take(json_t *v)
{
    if (!v)
        return NULL;
    char *text = el_json_dump_sorted(v);
    json_decref(v);
    return text;
}

const char *el_store_state_dir(const char *dir)
{
    if (dir && *dir)
        return dir;
    const char *env = getenv("EDGELOOP_STATE");
    if (env && *env)
        return env;
    return EL_STORE_DEFAULT_DIR;
}

const el_store_config *el_store_get_config(const el_store *s)
{
    return &s->cfg;
}

const char *el_store_dir(const el_store *s)
{
    return s->dir;
}

int64_t el_store_now(const el_store *s)
{
    return s->now;
}

/* Migration to version 4: recomputes bases.hash from each recorded path.
 * A base whose model.safetensors is gone cannot be rehashed; the database is
 * then refused (left at version 3) with the path to restore, rather than
 * keeping a hash no release or delta would ever match. Runs inside the
 * migration's transaction. Returns 0 or a negative EL_E*. */
static int rehash_bases(el_store *s, el_error *err)
{
    sqlite3_stmt *st = NULL;
    int rc = el_store_prepare(s, "SELECT id, path FROM bases ORDER BY id", &st, err);
    if (rc)
        return rc;
    int64_t *ids = NULL;
    char (*hashes)[65] = NULL;
    size_t n = 0, cap = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            int64_t *ni = el_realloc(ids, cap * sizeof *ids);
            if (ni)
                ids = ni;
            char (*nh)[65] = ni ? el_realloc(hashes, cap * sizeof *hashes) : NULL;
            if (!nh) {
                rc = el_error_set(err, EL_ENOMEM, "out of memory");
                goto done;
            }
            hashes = nh;
        }
        const char *path = (const char *)sqlite3_column_text(st, 1);
        ids[n] = sqlite3_column_int64(st, 0);
        if ((rc = el_store_base_hash_file(path ? path : "", hashes[n], err))) {
            el_error_prefix(err, "base model %lld: cannot recompute its hash (SHA-256 of "
                            "model.safetensors) for schema 4; restore %s and run again",
                            (long long)ids[n], path ? path : "?");
            goto done;
        }
        n++;
    }
    if (step != SQLITE_DONE) {
        rc = el_store_sql_fail(s, "reading base models", err);
        goto done;
    }
    sqlite3_finalize(st);
    st = NULL;
    for (size_t i = 0; i < n; i++) {
        if ((rc = el_store_prepare(s, "UPDATE bases SET hash = ?1 WHERE id = ?2", &st, err)))
            goto done;
        sqlite3_bind_text(st, 1, hashes[i], -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, ids[i]);
        step = sqlite3_step(st);
        sqlite3_finalize(st);
        st = NULL;
        if (step != SQLITE_DONE) {
            rc = el_error_set(err, EL_EINPUT, "base model %lld: its model.safetensors "
                              "(%.16s...) is also another registered base's; remove one "
                              "of them", (long long)ids[i], hashes[i]);
            goto done;
        }
    }
done:
    sqlite3_finalize(st);
    el_free(ids);
    el_free(hashes);
    return rc;
}

static int migrate(el_store *s, el_error *err)
{
    int64_t version;
    int rc = el_store_query_i64(s, "PRAGMA user_version", INT64_MIN, INT64_MIN,
                                0, &version, err);
    if (rc)
        return rc;
    if (version > EL_STORE_SCHEMA_VERSION)
        return el_error_set(err, EL_EINPUT,
                            "%s/registry.db has schema version %lld, newer than "
                            "this edgeloop understands (%d); upgrade edgeloop",
                            s->dir, (long long)version, EL_STORE_SCHEMA_VERSION);
    if (version < 0)
        return el_error_set(err, EL_EINPUT, "%s/registry.db: bad schema version %lld",
                            s->dir, (long long)version);
    for (int64_t v = version; v < EL_STORE_SCHEMA_VERSION; v++) {
        rc = el_store_begin(s, err);
        if (rc)
            return rc;
        char set[64];
        snprintf(set, sizeof set, "PRAGMA user_version = %lld", (long long)(v + 1));
        if ((rc = el_store_exec(s, migrations[v], err)) ||
            (v + 1 == 4 && (rc = rehash_bases(s, err))) ||
            (rc = el_store_exec(s, set, err)) || (rc = el_store_commit(s, err))) {
            el_store_tx_abort(s);
            return el_error_prefix(err, "migrating the registry to schema %lld",
                                   (long long)(v + 1));
        }
    }
    return 0;
}

/* Fleet policy values override the file: they come from verified releases
 * the sync glue wrote into the policy table. */
static int apply_policy(el_store *s, el_error *err)
{
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, "SELECT section, key, value, release FROM policy",
                              &st, err);
    if (rc)
        return rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char where[128];
        snprintf(where, sizeof where, "policy release %.64s",
                 (const char *)sqlite3_column_text(st, 3));
        int r = el_config_set(&s->cfg, (const char *)sqlite3_column_text(st, 0),
                              (const char *)sqlite3_column_text(st, 1),
                              (const char *)sqlite3_column_text(st, 2),
                              EL_CONFIG_POLICY, where, err);
        if (r) {
            sqlite3_finalize(st);
            return r;
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : el_store_sql_fail(s, "reading policy", err);
}

static int pid_alive(int64_t pid)
{
    if (pid <= 0 || pid == (int64_t)getpid())
        return 0;
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/* Boot counting: see invariant 3. */
static int begin_session(el_store *s, el_error *err)
{
    int rc = el_store_begin(s, err);
    if (rc)
        return rc;
    sqlite3_stmt *st = NULL;
    rc = el_store_prepare(s, "SELECT pid, version_id FROM sessions", &st, err);
    if (rc)
        goto fail;
    int64_t dead[64], dead_version[64];
    size_t n_dead = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW && n_dead < 64) {
        int64_t pid = sqlite3_column_int64(st, 0);
        if (pid_alive(pid))
            continue;
        dead[n_dead] = pid;
        dead_version[n_dead] = sqlite3_column_type(st, 1) == SQLITE_NULL
                                   ? 0 : sqlite3_column_int64(st, 1);
        n_dead++;
    }
    sqlite3_finalize(st);
    st = NULL;
    int64_t active = 0, probation = 0;
    if ((rc = el_store_query_i64(s, "SELECT version_id FROM active WHERE id = 1",
                                 INT64_MIN, INT64_MIN, 0, &active, err)))
        goto fail;
    if (active && (rc = el_store_query_i64(
                       s, "SELECT count(*) FROM versions WHERE id = ?1 AND "
                          "state = 'probation'", active, INT64_MIN, 0,
                       &probation, err)))
        goto fail;
    for (size_t i = 0; i < n_dead; i++) {
        int64_t ignored;
        if ((rc = el_store_query_i64(s, "DELETE FROM sessions WHERE pid = ?1",
                                     dead[i], INT64_MIN, 0, &ignored, err)))
            goto fail;
        if (dead_version[i] && dead_version[i] == active && probation) {
            if ((rc = el_store_query_i64(
                     s, "UPDATE versions SET crashes = crashes + 1 WHERE id = ?1",
                     active, INT64_MIN, 0, &ignored, err)))
                goto fail;
            int64_t crashes = 0;
            if ((rc = el_store_query_i64(s, "SELECT crashes FROM versions WHERE id = ?1",
                                         active, INT64_MIN, 0, &crashes, err)))
                goto fail;
            char figures[128];
            snprintf(figures, sizeof figures, "{\"crashes\":%lld,\"pid\":%lld}",
                     (long long)crashes, (long long)dead[i]);
            if ((rc = el_store_audit_append(s, "crash_counted", active, figures, err)))
                goto fail;
        }
    }
    if ((rc = el_store_prepare(s, "INSERT OR REPLACE INTO sessions(pid, started_at, "
                                  "version_id) VALUES(?1, ?2, ?3)", &st, err)))
        goto fail;
    sqlite3_bind_int64(st, 1, (int64_t)getpid());
    sqlite3_bind_int64(st, 2, s->now);
    if (active && probation)
        sqlite3_bind_int64(st, 3, active);
    else
        sqlite3_bind_null(st, 3);
    step = sqlite3_step(st);
    sqlite3_finalize(st);
    st = NULL;
    if (step != SQLITE_DONE) {
        rc = el_store_sql_fail(s, "recording the session", err);
        goto fail;
    }
    if ((rc = el_store_commit(s, err)))
        goto fail;
    s->session = 1;
    return 0;
fail:
    sqlite3_finalize(st);
    el_store_tx_abort(s);
    return rc;
}

/* Removes PATH and what is under it, DEPTH levels deep at most; a failure
 * leaves the rest for the next open. */
static void remove_tree(const char *path, int depth)
{
    struct stat sb;
    if (lstat(path, &sb))
        return;
    if (!S_ISDIR(sb.st_mode)) {
        unlink(path);
        return;
    }
    DIR *d = depth > 0 ? opendir(path) : NULL;
    if (d) {
        struct dirent *e;
        char sub[PATH_MAX];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            if (!el_fs_join(sub, sizeof sub, path, e->d_name))
                remove_tree(sub, depth - 1);
        }
        closedir(d);
    }
    rmdir(path);
}

/* Invariant 4: work folders of processes that died mid-command. */
static void clean_work_dirs(el_store *s)
{
    static const struct {
        const char *prefix, *suffix;
    } names[] = {{"train-work.", ""}, {"bundle-work.", ""}, {"import-work.", ""},
                 {"outbox-work.", ".elb"}};
    DIR *d = opendir(s->dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            size_t n = strlen(names[i].prefix);
            if (strncmp(e->d_name, names[i].prefix, n))
                continue;
            const char *digits = e->d_name + n;
            char *end;
            errno = 0;
            long long pid = strtoll(digits, &end, 10);
            if (end == digits || strcmp(end, names[i].suffix) || errno || pid <= 0 ||
                pid == (long long)getpid() || pid_alive(pid))
                continue;
            char path[PATH_MAX];
            if (!el_fs_join(path, sizeof path, s->dir, e->d_name))
                remove_tree(path, 3);
        }
    }
    closedir(d);
}

static int write_default_config(const char *dir, el_error *err)
{
    char path[PATH_MAX];
    if (el_fs_join(path, sizeof path, dir, "edgeloop.conf"))
        return el_error_set(err, EL_EINPUT, "%s: path too long", dir);
    if (el_fs_exists(path))
        return 0;
    const char *text = el_config_default_text();
    return el_fs_write_atomic(path, text, strlen(text), 0644, err);
}

int el_store_open(const char *dir, const el_store_open_opts *opts,
                  el_store **out, el_error *err)
{
    *out = NULL;
    el_store_open_opts none = {0};
    if (!opts)
        opts = &none;
    dir = el_store_state_dir(dir);
    el_store *s = el_calloc(1, sizeof *s);
    if (!s)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    int rc = 0;
    char path[PATH_MAX];
    if (snprintf(s->dir, sizeof s->dir, "%s", dir) >= (int)sizeof s->dir ||
        el_fs_join(s->blob_dir, sizeof s->blob_dir, dir, "blobs/sha256") ||
        el_fs_join(path, sizeof path, dir, "registry.db")) {
        rc = el_error_set(err, EL_EINPUT, "%s: state path too long", dir);
        goto fail;
    }
    /* the one place the device reads the clock for the state it opens */
    s->now = opts->now ? opts->now : el_wall_now();
    snprintf(s->actor, sizeof s->actor, "%s", opts->actor ? opts->actor : "operator");
    if (opts->create) {
        if ((rc = el_fs_mkdirs(s->blob_dir, 0755, err)) ||
            (rc = el_fs_fsync_dir(s->dir, 1, err)) ||
            (rc = write_default_config(s->dir, err)))
            goto fail;
    } else if (!el_fs_exists(path)) {
        rc = el_error_set(err, EL_ENOTFOUND,
                          "%s: not an edgeloop state directory (run `edgeloop init "
                          "--model DIR --state %s` first)", dir, dir);
        goto fail;
    }
    int flags = SQLITE_OPEN_READWRITE | (opts->create ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        rc = el_store_sql_fail(s, "cannot open", err);
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 10000);
    if ((rc = el_store_exec(s, "PRAGMA foreign_keys = ON", err)) ||
        (rc = el_store_exec(s, "PRAGMA synchronous = FULL", err)))
        goto fail;
    /* journal_mode answers with the mode in effect; anything but wal means
     * the database could not switch (e.g. a read-only directory) */
    sqlite3_stmt *st;
    if ((rc = el_store_prepare(s, "PRAGMA journal_mode = WAL", &st, err)))
        goto fail;
    int wal = sqlite3_step(st) == SQLITE_ROW &&
              !strcmp((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    if (!wal) {
        rc = el_store_sql_fail(s, "cannot switch to WAL mode", err);
        goto fail;
    }
    if ((rc = migrate(s, err)))
        goto fail;
    el_config_defaults(&s->cfg);
    char conf[PATH_MAX];
    if (el_fs_join(conf, sizeof conf, dir, "edgeloop.conf")) {
        rc = el_error_set(err, EL_EINPUT, "%s: path too long", dir);
        goto fail;
    }
    if ((rc = el_config_load_file(&s->cfg, conf, err)) ||
        (rc = apply_policy(s, err)))
        goto fail;
    if ((rc = begin_session(s, err)))
        goto fail;
    clean_work_dirs(s);
    el_crash_point("open.after_session");
    if ((rc = el_store_probation_apply(s, NULL, err)))
        goto fail;
    *out = s;
    return 0;
fail:
    el_store_close(s);
    return rc;
}

void el_store_close(el_store *s)
{
    if (!s)
        return;
    if (s->db) {
        el_store_tx_abort(s);
        if (s->session) {
            int64_t ignored;
            el_store_query_i64(s, "DELETE FROM sessions WHERE pid = ?1",
                               (int64_t)getpid(), INT64_MIN, 0, &ignored, NULL);
        }
        sqlite3_close(s->db);
    }
    el_free(s);
}

int el_store_tick(el_store *s, int64_t now, el_error *err)
{
    s->now = now;
    return el_store_probation_apply(s, NULL, err);
}
