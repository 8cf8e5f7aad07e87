/* Embedded hub store: SQLite (WAL) for metadata, a directory of
 * content-addressed files for blobs (store.h states the contract).
 *
 * Notes:
 *  1. One SQLite connection behind a mutex. The hub's writes are small rows
 *     and every upload already pays an fsync for its blob, so serializing the
 *     metadata costs little and keeps the code obviously correct; a
 *     PostgreSQL backend would pool connections instead.
 *  2. Blobs: DIR/blobs/sha256/ab/cdef... written with el_fs_write_atomic
 *     (tmp, fsync, rename, fsync dir) before the row that names them is
 *     committed. A shard directory made for a blob has its parent fsynced
 *     before the blob is written, else a power cut could take the directory
 *     and the blob with it after the row committed. Writing the same blob
 *     twice is harmless (same content), also from two workers at once: each
 *     write has a temporary file of its own.
 *  3. Schema versions by PRAGMA user_version; migrate() brings an older file
 *     forward in one transaction.
 *  4. Every connection reports its device (device_seen), but a sync's status
 *     report sets last_seen anyway: a device seen again with the same group
 *     and serial within EL_HUB_SEEN_GRANULARITY seconds is not written again
 *     (one fsynced commit less per sync). A table slot per hash of the
 *     device id; a collision only costs a write.
 *  5. A delta's or adapter release's rebuilt adapter is recorded in the same
 *     transaction as its bundle or release row: one commit, and no adapter
 *     row without the upload that produced it.
 *  6. Blobs of at most 64 KiB (a device's delta, a small adapter) are rows
 *     of small_blobs, written in the same transaction as the bundle or
 *     release row that names them; larger ones are files (note 2) written
 *     before it. A delta upload was six fsyncs (two files, their two
 *     directories, the commit, before that two commits), now one; on the
 *     bench VM every fsync also slows the CPU work around it, and on a real
 *     disk each is latency the device waits for. SQLite's own measurements
 *     put the break-even of blobs in the database against files near 100 KB.
 *  7. Group commit: every write (status, bundle and release rows, small
 *     blobs, device_seen, roots) is an operation queued for the next
 *     commit. The first writer to find no commit running takes the whole
 *     queue, applies each operation in a savepoint of its own (a refused
 *     one, e.g. an audit head going back, is rolled back alone), commits
 *     once and wakes the others; writers that queued meanwhile form the
 *     next batch. Each write still returns only after the commit that
 *     holds it is durable (synchronous=FULL), but concurrent writers share
 *     one fsync instead of one each. A failed commit fails every
 *     operation in its batch.
 */
#include "store.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/sha256.h"

#define SCHEMA_VERSION 2
#define INLINE_MAX (64 * 1024)      /* larger blobs are files (note 6) */

#define SEEN_SLOTS 1024

typedef struct seen_slot {
    char device[EL_HUB_NAME_MAX];
    uint64_t attrs;                 /* hash of group and serial */
    int64_t at;                     /* when last written */
} seen_slot;

typedef struct sqlite_store {
    el_hub_store base;
    sqlite3 *db;
    pthread_mutex_t lock;
    char dir[4096];
    atomic_char shard_ready[256];   /* blobs/sha256/XX known durable */
    seen_slot seen[SEEN_SLOTS];     /* device_seen writes, by device (note 4) */
    /* group commit (note 7) */
    pthread_mutex_t wq_lock;
    pthread_cond_t wq_cond;
    struct write_op *wq_head, **wq_tail;
    int wq_leader;                  /* a thread is committing a batch */
    atomic_ullong commits, writes;  /* write_stats */
} sqlite_store;

/* One write waiting for its batch's commit (note 7). APPLY runs inside the
 * batch's transaction, under the store lock, in a savepoint of its own. */
typedef struct write_op write_op;
struct write_op {
    int (*apply)(sqlite_store *st, write_op *op, el_error *err);
    void *arg;                      /* the operation's arguments and outputs */
    int rc;
    el_error err;
    int done;
    write_op *next;
};

static const char schema_v1[] =
    "CREATE TABLE devices("
    "  id TEXT PRIMARY KEY, grp TEXT NOT NULL DEFAULT '', serial TEXT NOT NULL DEFAULT '',"
    "  first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,"
    "  audit_seq INTEGER, audit_hash TEXT, status TEXT, status_at INTEGER);"
    "CREATE TABLE bundles("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
    "  device TEXT NOT NULL, blob TEXT NOT NULL, size INTEGER NOT NULL,"
    "  parent TEXT NOT NULL, result TEXT NOT NULL, base TEXT NOT NULL,"
    "  encoding TEXT NOT NULL, received INTEGER NOT NULL);"
    "CREATE INDEX bundles_device ON bundles(device, seq);"
    "CREATE INDEX bundles_result ON bundles(result);"
    "CREATE TABLE releases("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
    "  kind TEXT NOT NULL, counter INTEGER NOT NULL, target TEXT NOT NULL,"
    "  blob TEXT NOT NULL, size INTEGER NOT NULL, expires INTEGER NOT NULL,"
    "  received INTEGER NOT NULL);"
    "CREATE TABLE roots(version INTEGER PRIMARY KEY, blob TEXT NOT NULL);"
    "CREATE TABLE adapters(digest TEXT PRIMARY KEY, blob TEXT NOT NULL);";

/* v2: blobs of at most INLINE_MAX bytes are rows (note 6); v1 files stay
 * where they are and are still read. */
static const char schema_v2[] =
    "CREATE TABLE small_blobs(sha TEXT PRIMARY KEY, data BLOB NOT NULL);";

static int db_error(sqlite_store *st, el_error *err, const char *what)
{
    return el_error_set(err, EL_EIO, "hub store: %s: %s", what, sqlite3_errmsg(st->db));
}

static int exec(sqlite_store *st, const char *sql, el_error *err)
{
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = el_error_set(err, EL_EIO, "hub store: %s", msg ? msg : "exec failed");
        sqlite3_free(msg);
        return rc;
    }
    return 0;
}

static int prepare(sqlite_store *st, const char *sql, sqlite3_stmt **stmt, el_error *err)
{
    if (sqlite3_prepare_v2(st->db, sql, -1, stmt, NULL) != SQLITE_OK)
        return db_error(st, err, "prepare");
    return 0;
}

/* Binds the variable arguments to STMT's parameters 1, 2, ... by TYPES:
 * 't' a const char * (bound as text, not copied), 'i' an int64_t. */
static void bind_va(sqlite3_stmt *stmt, const char *types, va_list ap)
{
    for (int i = 0; types[i]; i++) {
        if (types[i] == 't')
            sqlite3_bind_text(stmt, i + 1, va_arg(ap, const char *), -1, SQLITE_STATIC);
        else
            sqlite3_bind_int64(stmt, i + 1, (sqlite3_int64)va_arg(ap, int64_t));
    }
}

/* prepare() and bind the arguments as bind_va does. */
static int prepare_bound(sqlite_store *st, sqlite3_stmt **stmt, el_error *err, const char *sql,
                         const char *types, ...)
{
    int rc = prepare(st, sql, stmt, err);
    if (!rc) {
        va_list ap;
        va_start(ap, types);
        bind_va(*stmt, types, ap);
        va_end(ap);
    }
    return rc;
}

/* Runs one statement that returns no rows, its arguments bound as bind_va
 * does. *CHANGED (when not NULL) says whether it changed a row. Returns 0 or
 * the store's error naming WHAT. The caller holds st->lock. */
static int run(sqlite_store *st, const char *what, int *changed, el_error *err, const char *sql,
               const char *types, ...)
{
    sqlite3_stmt *stmt = NULL;
    int rc = prepare(st, sql, &stmt, err);
    if (!rc) {
        va_list ap;
        va_start(ap, types);
        bind_va(stmt, types, ap);
        va_end(ap);
        if (sqlite3_step(stmt) != SQLITE_DONE)
            rc = db_error(st, err, what);
        else if (changed)
            *changed = sqlite3_changes(st->db) > 0;
    }
    sqlite3_finalize(stmt);
    return rc;
}

static void copy_col(sqlite3_stmt *stmt, int col, char *out, size_t n)
{
    const unsigned char *v = sqlite3_column_text(stmt, col);
    snprintf(out, n, "%s", v ? (const char *)v : "");
}

static json_t *col_json(sqlite3_stmt *stmt, int col)
{
    switch (sqlite3_column_type(stmt, col)) {
    case SQLITE_INTEGER: return json_integer(sqlite3_column_int64(stmt, col));
    case SQLITE_NULL: return json_null();
    default: return json_string((const char *)sqlite3_column_text(stmt, col));
    }
}

/* Runs STMT (bound) and collects each row as an object keyed by column name. */
static int rows_json(sqlite_store *st, sqlite3_stmt *stmt, json_t **out, el_error *err)
{
    json_t *arr = json_array();
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        json_t *row = json_object();
        for (int i = 0; i < sqlite3_column_count(stmt); i++)
            json_object_set_new(row, sqlite3_column_name(stmt, i), col_json(stmt, i));
        json_array_append_new(arr, row);
    }
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return db_error(st, err, "query");
    }
    *out = arr;
    return 0;
}

static int blob_path(sqlite_store *st, const char *sha, char *out, size_t n, el_error *err)
{
    if (strlen(sha) != EL_SHA256_HEX_LEN || strspn(sha, "0123456789abcdef") != EL_SHA256_HEX_LEN)
        return el_error_set(err, EL_EINPUT, "blob id must be 64 lowercase hex characters");
    if (snprintf(out, n, "%s/blobs/sha256/%.2s/%s", st->dir, sha, sha + 2) >= (int)n)
        return el_error_set(err, EL_EINPUT, "hub data directory path too long");
    return 0;
}

/* The value of the first two hex digits of SHA (validated by blob_path). */
static int hex_byte(const char *sha)
{
    int v = 0;
    for (int i = 0; i < 2; i++)
        v = v * 16 + (sha[i] <= '9' ? sha[i] - '0' : sha[i] - 'a' + 10);
    return v;
}

static void st_destroy(el_hub_store *s)
{
    sqlite_store *st = (sqlite_store *)s;
    if (!st)
        return;
    sqlite3_close(st->db);
    pthread_mutex_destroy(&st->lock);
    pthread_mutex_destroy(&st->wq_lock);
    pthread_cond_destroy(&st->wq_cond);
    el_free(st);
}

/* Writes blob SHA (LEN bytes of DATA) as a file (note 2), durable when it
 * returns. */
static int blob_file_put(sqlite_store *st, const char *sha, const void *data, size_t len,
                         el_error *err)
{
    char path[4200], dir[4200], parent[4200];
    int rc = blob_path(st, sha, path, sizeof path, err);
    if (rc)
        return rc;
    struct stat sb;
    if (stat(path, &sb) == 0 && (uint64_t)sb.st_size == len)
        return 0;   /* content-addressed: already durable */
    int shard = hex_byte(sha);
    if (!atomic_load(&st->shard_ready[shard])) {
        snprintf(dir, sizeof dir, "%s/blobs/sha256/%.2s", st->dir, sha);
        if (!el_fs_exists(dir)) {
            /* the shard's own directory entry must be durable before a
             * blob inside it can be */
            snprintf(parent, sizeof parent, "%s/blobs/sha256", st->dir);
            if ((rc = el_fs_mkdirs(dir, 0755, err)) != 0 ||
                (rc = el_fs_fsync_dir(parent, 1, err)) != 0)
                return rc;
        }
        atomic_store(&st->shard_ready[shard], 1);
    }
    return el_fs_write_atomic(path, data, len, 0644, err);
}

/* A blob on its way into the store with a row: large ones are written as
 * files at once, small ones wait for the row's transaction (note 6). */
typedef struct staged_blob {
    char sha[EL_HUB_ID_MAX];
    const void *data;               /* NULL: nothing left to write */
    size_t len;
} staged_blob;

static int stage_blob(sqlite_store *st, const void *data, size_t len, staged_blob *b,
                      el_error *err)
{
    el_sha256_hex(data, len, b->sha);
    b->data = data;
    b->len = len;
    if (len <= INLINE_MAX)
        return 0;
    b->data = NULL;
    return blob_file_put(st, b->sha, data, len, err);
}

/* Inside a transaction, under the lock: the row of a staged small blob. */
static int staged_insert(sqlite_store *st, const staged_blob *b, el_error *err)
{
    if (!b->data)
        return 0;
    sqlite3_stmt *stmt = NULL;
    int rc = prepare(st,
                     "INSERT INTO small_blobs(sha, data) VALUES(?,?) ON CONFLICT(sha) DO NOTHING",
                     &stmt, err);
    if (!rc) {
        sqlite3_bind_text(stmt, 1, b->sha, -1, SQLITE_STATIC);
        sqlite3_bind_blob64(stmt, 2, b->data, (sqlite3_uint64)b->len, SQLITE_STATIC);
        if (sqlite3_step(stmt) != SQLITE_DONE)
            rc = db_error(st, err, "insert blob");
    }
    sqlite3_finalize(stmt);
    return rc;
}

/* Applies BATCH in one transaction (note 7). */
static void commit_batch(sqlite_store *st, write_op *batch)
{
    el_error err = {0};
    pthread_mutex_lock(&st->lock);
    int rc = exec(st, "BEGIN IMMEDIATE", &err);
    for (write_op *op = batch; op; op = op->next) {
        if (rc) {
            op->rc = rc;
            op->err = err;
        } else if ((op->rc = exec(st, "SAVEPOINT op", &op->err)) == 0) {
            if ((op->rc = op->apply(st, op, &op->err)) != 0)
                exec(st, "ROLLBACK TO op", NULL);
            exec(st, "RELEASE op", NULL);
        }
    }
    if (!rc && (rc = exec(st, "COMMIT", &err)) != 0) {
        exec(st, "ROLLBACK", NULL);
        for (write_op *op = batch; op; op = op->next)
            if (!op->rc) {
                op->rc = rc;
                op->err = err;
            }
    }
    if (!rc) {
        unsigned long long n = 0;
        for (write_op *op = batch; op; op = op->next)
            n += !op->rc;
        if (n) {   /* a batch of refused writes only commits nothing */
            atomic_fetch_add(&st->commits, 1);
            atomic_fetch_add(&st->writes, n);
        }
    }
    pthread_mutex_unlock(&st->lock);
}

/* Queues OP and returns once the commit holding it is done: its result. */
static int submit(sqlite_store *st, write_op *op, el_error *err)
{
    op->done = 0;
    op->next = NULL;
    memset(&op->err, 0, sizeof op->err);
    pthread_mutex_lock(&st->wq_lock);
    *st->wq_tail = op;
    st->wq_tail = &op->next;
    while (!op->done) {
        if (st->wq_leader) {
            pthread_cond_wait(&st->wq_cond, &st->wq_lock);
            continue;
        }
        st->wq_leader = 1;
        write_op *batch = st->wq_head;
        st->wq_head = NULL;
        st->wq_tail = &st->wq_head;
        pthread_mutex_unlock(&st->wq_lock);
        commit_batch(st, batch);
        pthread_mutex_lock(&st->wq_lock);
        for (write_op *o = batch, *next; o; o = next) {
            next = o->next;
            o->done = 1;
        }
        st->wq_leader = 0;
        pthread_cond_broadcast(&st->wq_cond);
    }
    pthread_mutex_unlock(&st->wq_lock);
    if (op->rc && err)
        *err = op->err;
    return op->rc;
}

static int apply_small_blob(sqlite_store *st, write_op *op, el_error *err)
{
    return staged_insert(st, op->arg, err);
}

static int st_blob_put(el_hub_store *s, const void *data, size_t len, char *sha,
                       el_error *err)
{
    sqlite_store *st = (sqlite_store *)s;
    staged_blob b;
    int rc = stage_blob(st, data, len, &b, err);
    snprintf(sha, EL_HUB_ID_MAX, "%s", b.sha);
    if (rc || !b.data)
        return rc;
    write_op op = {.apply = apply_small_blob, .arg = &b};
    return submit(st, &op, err);
}

/* The size of small blob SHA in *SIZE: 1 when it is a row, 0 when not,
 * or a negative code. */
static int small_blob_size(sqlite_store *st, const char *sha, uint64_t *size, el_error *err)
{
    sqlite3_stmt *stmt = NULL;
    pthread_mutex_lock(&st->lock);
    int rc = prepare_bound(st, &stmt, err, "SELECT length(data) FROM small_blobs WHERE sha = ?",
                           "t", sha);
    if (!rc) {
        int step = sqlite3_step(stmt);
        if (step == SQLITE_ROW) {
            *size = (uint64_t)sqlite3_column_int64(stmt, 0);
            rc = 1;
        } else if (step != SQLITE_DONE) {
            rc = db_error(st, err, "select blob size");
        }
    }
    sqlite3_finalize(stmt);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

/* LEN bytes at OFF of small blob SHA into OUT: 1 when it is a row, 0 when
 * not, or a negative code. */
static int small_blob_read(sqlite_store *st, const char *sha, uint64_t off, size_t len,
                           uint8_t *out, el_error *err)
{
    sqlite3_stmt *stmt = NULL;
    pthread_mutex_lock(&st->lock);
    int rc = prepare_bound(st, &stmt, err, "SELECT data FROM small_blobs WHERE sha = ?", "t",
                           sha);
    if (!rc) {
        int step = sqlite3_step(stmt);
        if (step == SQLITE_ROW) {
            const uint8_t *data = sqlite3_column_blob(stmt, 0);
            uint64_t size = (uint64_t)sqlite3_column_bytes(stmt, 0);
            if (off > size || len > size - off)
                rc = el_error_set(err, EL_EIO, "blob %s: short read", sha);
            else {
                if (len)
                    memcpy(out, data + off, len);
                rc = 1;
            }
        } else if (step != SQLITE_DONE) {
            rc = db_error(st, err, "select blob");
        }
    }
    sqlite3_finalize(stmt);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

static int st_blob_size(el_hub_store *s, const char *sha, uint64_t *size, el_error *err)
{
    char path[4200];
    int rc = blob_path((sqlite_store *)s, sha, path, sizeof path, err);
    if (rc)
        return rc;
    if ((rc = small_blob_size((sqlite_store *)s, sha, size, err)) != 0)
        return rc < 0 ? rc : 0;
    struct stat sb;
    if (stat(path, &sb) < 0)
        return el_error_set(err, errno == ENOENT ? EL_ENOTFOUND : EL_EIO, "blob %s: %s", sha,
                            strerror(errno));
    *size = (uint64_t)sb.st_size;
    return 0;
}

static int st_blob_read(el_hub_store *s, const char *sha, uint64_t off, size_t len,
                        uint8_t *out, el_error *err)
{
    char path[4200];
    int rc = blob_path((sqlite_store *)s, sha, path, sizeof path, err);
    if (rc)
        return rc;
    if ((rc = small_blob_read((sqlite_store *)s, sha, off, len, out, err)) != 0)
        return rc < 0 ? rc : 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return el_error_set(err, errno == ENOENT ? EL_ENOTFOUND : EL_EIO, "blob %s: %s", sha,
                            strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, out + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return el_error_set(err, EL_EIO, "blob %s: short read", sha);
        }
        done += (size_t)n;
    }
    close(fd);
    return 0;
}

/* Inside a transaction: the rebuilt adapter DIGEST -> BLOB (none when
 * BLOB is empty). */
static int adapter_insert(sqlite_store *st, const char *digest, const char *blob,
                          el_error *err)
{
    if (!blob[0])
        return 0;
    return run(st, "insert adapter", NULL, err,
               "INSERT INTO adapters(digest, blob) VALUES(?,?) ON CONFLICT(digest) DO NOTHING",
               "tt", digest, blob);
}

/* Stages the blobs of a bundle or release row: BYTES into BLOB (65) and
 * ADAPTER (may be NULL) into ADAPTER_BLOB (65, "" when NULL). */
static int stage_row_blobs(sqlite_store *st, const void *bytes, size_t len,
                           const void *adapter, size_t adapter_len, staged_blob *b,
                           staged_blob *a, char *blob, char *adapter_blob, el_error *err)
{
    memset(a, 0, sizeof *a);
    int rc = stage_blob(st, bytes, len, b, err);
    if (!rc && adapter)
        rc = stage_blob(st, adapter, adapter_len, a, err);
    snprintf(blob, EL_HUB_ID_MAX, "%s", b->sha);
    snprintf(adapter_blob, EL_HUB_ID_MAX, "%s", a->sha);
    return rc;
}

/* A bundle or release row with its staged blobs and the adapter it
 * records (note 5). */
typedef struct row_put row_put;
struct row_put {
    void *rec;                      /* el_hub_bundle_rec or el_hub_release_rec */
    const char *adapter_digest;     /* what the staged adapter is the rebuild of */
    staged_blob b, a;
    int *created;
    int64_t *seq;
    /* the row itself, after its blobs and the adapter row */
    int (*insert)(sqlite_store *st, row_put *p, el_error *err);
};

static int apply_row(sqlite_store *st, write_op *op, el_error *err)
{
    row_put *p = op->arg;
    int rc = staged_insert(st, &p->b, err);
    if (!rc)
        rc = staged_insert(st, &p->a, err);
    if (!rc)
        rc = adapter_insert(st, p->adapter_digest, p->a.sha, err);
    if (!rc)
        rc = p->insert(st, p, err);
    if (!rc)
        *p->seq = *p->created ? sqlite3_last_insert_rowid(st->db) : 0;
    return rc;
}

/* Stages BYTES and ADAPTER (may be NULL) into BLOB and ADAPTER_BLOB (65
 * each), then writes P's row with them in the next commit. */
static int put_row(sqlite_store *st, row_put *p, const void *bytes, size_t len,
                   const void *adapter, size_t adapter_len, char *blob, char *adapter_blob,
                   el_error *err)
{
    *p->created = 0;
    int rc = stage_row_blobs(st, bytes, len, adapter, adapter_len, &p->b, &p->a, blob,
                             adapter_blob, err);
    if (rc)
        return rc;
    write_op op = {.apply = apply_row, .arg = p};
    if ((rc = submit(st, &op, err)) != 0) {
        *p->created = 0;
        *p->seq = 0;
    }
    return rc;
}

static int insert_bundle(sqlite_store *st, row_put *p, el_error *err)
{
    el_hub_bundle_rec *rec = p->rec;
    int rc = run(st, "insert bundle", p->created, err,
                 "INSERT INTO bundles(id, device, blob, size, parent, result, base,"
                 " encoding, received) VALUES(?,?,?,?,?,?,?,?,?)"
                 " ON CONFLICT(id) DO NOTHING",
                 "tttitttti", rec->id, rec->device, rec->blob, (int64_t)rec->size,
                 rec->parent, rec->result, rec->base, rec->encoding, rec->received);
    /* killed here, the transaction is not committed: no trace of the
     * upload but unreferenced files */
    if (!rc)
        el_crash_point("hub.upload.before_commit");
    return rc;
}

static int st_bundle_put(el_hub_store *s, el_hub_bundle_rec *rec, const void *bytes,
                         size_t len, const void *adapter, size_t adapter_len, int *created,
                         el_error *err)
{
    row_put p = {.rec = rec, .adapter_digest = rec->result, .created = created,
                 .seq = &rec->seq, .insert = insert_bundle};
    return put_row((sqlite_store *)s, &p, bytes, len, adapter, adapter_len, rec->blob,
                   rec->adapter_blob, err);
}

static int st_bundle_get(el_hub_store *s, const char *id, el_hub_bundle_rec *rec,
                         el_error *err)
{
    sqlite_store *st = (sqlite_store *)s;
    sqlite3_stmt *stmt = NULL;
    int rc;
    pthread_mutex_lock(&st->lock);
    if ((rc = prepare_bound(st, &stmt, err,
                            "SELECT id, device, blob, size, parent, result, base, encoding,"
                            " received, seq FROM bundles WHERE id = ?",
                            "t", id)) != 0)
        goto out;
    int step = sqlite3_step(stmt);
    if (step == SQLITE_ROW) {
        memset(rec, 0, sizeof *rec);
        copy_col(stmt, 0, rec->id, sizeof rec->id);
        copy_col(stmt, 1, rec->device, sizeof rec->device);
        copy_col(stmt, 2, rec->blob, sizeof rec->blob);
        rec->size = (uint64_t)sqlite3_column_int64(stmt, 3);
        copy_col(stmt, 4, rec->parent, sizeof rec->parent);
        copy_col(stmt, 5, rec->result, sizeof rec->result);
        copy_col(stmt, 6, rec->base, sizeof rec->base);
        copy_col(stmt, 7, rec->encoding, sizeof rec->encoding);
        rec->received = sqlite3_column_int64(stmt, 8);
        rec->seq = sqlite3_column_int64(stmt, 9);
    } else if (step == SQLITE_DONE) {
        rc = el_error_set(err, EL_ENOTFOUND, "no bundle %s", id);
    } else {
        rc = db_error(st, err, "select bundle");
    }
out:
    sqlite3_finalize(stmt);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

static int st_adapter_get(el_hub_store *s, const char *digest, char *blob, el_error *err)
{
    sqlite_store *st = (sqlite_store *)s;
    sqlite3_stmt *stmt = NULL;
    int rc;
    pthread_mutex_lock(&st->lock);
    if ((rc = prepare_bound(st, &stmt, err, "SELECT blob FROM adapters WHERE digest = ?", "t",
                            digest)) == 0) {
        int step = sqlite3_step(stmt);
        if (step == SQLITE_ROW)
            copy_col(stmt, 0, blob, EL_HUB_ID_MAX);
        else if (step == SQLITE_DONE)
            rc = el_error_set(err, EL_ENOTFOUND, "no adapter %s", digest);
        else
            rc = db_error(st, err, "select adapter");
    }
    sqlite3_finalize(stmt);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

static int st_blob_allowed(el_hub_store *s, const char *sha, const char *device,
                           const char *group, int *ok, el_error *err)
{
    sqlite_store *st = (sqlite_store *)s;
    sqlite3_stmt *stmt = NULL;
    int rc;
    pthread_mutex_lock(&st->lock);
    if ((rc = prepare_bound(st, &stmt, err,
                            "SELECT 1 FROM roots WHERE blob = ?1"
                            " UNION ALL SELECT 1 FROM releases WHERE blob = ?1 AND"
                            "  (target = '*' OR target = ?2 OR (?3 <> '' AND target = ?3))"
                            " UNION ALL SELECT 1 FROM bundles WHERE blob = ?1 AND device = ?2"
                            " LIMIT 1",
                            "ttt", sha, device, group ? group : "")) == 0) {
        int step = sqlite3_step(stmt);
        if (step != SQLITE_ROW && step != SQLITE_DONE)
            rc = db_error(st, err, "select blob owner");
        *ok = step == SQLITE_ROW;
    }
    sqlite3_finalize(stmt);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

/* FNV-1a over the NUL-terminated strings A and B (B may be NULL). */
static uint64_t fnv(const char *a, const char *b)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = a; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    if (b) {
        h = (h ^ 0xff) * 1099511628211ull;   /* separator: "ab","c" != "a","bc" */
        for (const char *p = b; *p; p++)
            h = (h ^ (uint8_t)*p) * 1099511628211ull;
    }
    return h;
}

typedef struct seen_put {
    const char *device, *group, *serial;
    int64_t now;
} seen_put;

static int apply_seen(sqlite_store *st, write_op *op, el_error *err)
{
    seen_put *p = op->arg;
    return run(st, "device seen", NULL, err,
               "INSERT INTO devices(id, grp, serial, first_seen, last_seen)"
               " VALUES(?1,?2,?3,?4,?4) ON CONFLICT(id) DO UPDATE SET"
               " grp = ?2, serial = ?3, last_seen = ?4",
               "ttti", p->device, p->group, p->serial, p->now);
}

static int st_device_seen(el_hub_store *s, const char *device, const char *group,
                          const char *serial, int64_t now, el_error *err)
{
    sqlite_store *st = (sqlite_store *)s;
    seen_slot *slot = &st->seen[fnv(device, NULL) % SEEN_SLOTS];
    uint64_t attrs = fnv(group, serial);
    pthread_mutex_lock(&st->lock);
    int fresh = !strcmp(slot->device, device) && slot->attrs == attrs && now >= slot->at &&
                now - slot->at < EL_HUB_SEEN_GRANULARITY;
    pthread_mutex_unlock(&st->lock);
    if (fresh)
        return 0;
    seen_put p = {device, group, serial, now};
    write_op op = {.apply = apply_seen, .arg = &p};
    int rc = submit(st, &op, err);
    if (!rc && strlen(device) < sizeof slot->device) {
        pthread_mutex_lock(&st->lock);
        snprintf(slot->device, sizeof slot->device, "%s", device);
        slot->attrs = attrs;
        slot->at = now;
        pthread_mutex_unlock(&st->lock);
    }
    return rc;
}

typedef struct status_put {
    const char *device, *audit_hash, *status_json;
    int64_t audit_seq, now;
} status_put;

/* Contract 3: the head must not go back or fork. */
static int apply_status(sqlite_store *st, write_op *op, el_error *err)
{
    status_put *p = op->arg;
    const char *device = p->device, *audit_hash = p->audit_hash;
    int64_t audit_seq = p->audit_seq;
    sqlite3_stmt *stmt = NULL;
    int rc;
    if ((rc = prepare_bound(st, &stmt, err, "SELECT audit_seq, audit_hash FROM devices WHERE id = ?",
                            "t", device)) != 0)
        goto out;
    int step = sqlite3_step(stmt);
    if (step == SQLITE_ROW && sqlite3_column_type(stmt, 0) != SQLITE_NULL) {
        int64_t held = sqlite3_column_int64(stmt, 0);
        const char *held_hash = (const char *)sqlite3_column_text(stmt, 1);
        if (audit_seq < held) {
            rc = el_error_set_tag(err, EL_EPOLICY, "rollback",
                                  "audit head seq %lld goes back from %lld",
                                  (long long)audit_seq, (long long)held);
            goto out;
        }
        if (audit_seq == held && (!held_hash || strcmp(held_hash, audit_hash))) {
            rc = el_error_set_tag(err, EL_EPOLICY, "fork",
                                  "audit head seq %lld has a different hash than held",
                                  (long long)audit_seq);
            goto out;
        }
    } else if (step != SQLITE_ROW && step != SQLITE_DONE) {
        rc = db_error(st, err, "select audit head");
        goto out;
    }
    sqlite3_finalize(stmt);
    stmt = NULL;
    rc = run(st, "store status", NULL, err,
             "INSERT INTO devices(id, first_seen, last_seen, audit_seq, audit_hash,"
             " status, status_at) VALUES(?1,?5,?5,?2,?3,?4,?5)"
             " ON CONFLICT(id) DO UPDATE SET audit_seq = ?2, audit_hash = ?3,"
             " status = ?4, status_at = ?5, last_seen = ?5",
             "titti", device, audit_seq, audit_hash, p->status_json, p->now);
out:
    sqlite3_finalize(stmt);
    return rc;
}

static int st_status_put(el_hub_store *s, const char *device, int64_t audit_seq,
                         const char *audit_hash, const char *status_json, int64_t now,
                         el_error *err)
{
    status_put p = {device, audit_hash, status_json, audit_seq, now};
    write_op op = {.apply = apply_status, .arg = &p};
    return submit((sqlite_store *)s, &op, err);
}

static int insert_release(sqlite_store *st, row_put *p, el_error *err)
{
    el_hub_release_rec *rec = p->rec;
    return run(st, "insert release", p->created, err,
               "INSERT INTO releases(id, kind, counter, target, blob, size, expires,"
               " received) VALUES(?,?,?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING",
               "ttittiii", rec->id, rec->kind, rec->counter, rec->target, rec->blob,
               (int64_t)rec->size, rec->expires, rec->received);
}

static int st_release_put(el_hub_store *s, el_hub_release_rec *rec, const void *bytes,
                          size_t len, const void *adapter, size_t adapter_len, int *created,
                          el_error *err)
{
    row_put p = {.rec = rec, .adapter_digest = rec->adapter, .created = created,
                 .seq = &rec->seq, .insert = insert_release};
    return put_row((sqlite_store *)s, &p, bytes, len, adapter, adapter_len, rec->blob,
                   rec->adapter_blob, err);
}

static int st_releases_since(el_hub_store *s, const char *device, const char *group,
                             int64_t since, int limit, json_t **out, el_error *err)
{
    sqlite_store *st = (sqlite_store *)s;
    sqlite3_stmt *stmt = NULL;
    json_t *rows = NULL;
    int rc;
    pthread_mutex_lock(&st->lock);
    if ((rc = prepare_bound(st, &stmt, err,
                            "SELECT seq, id, kind, counter, target, blob, size, expires"
                            " FROM releases WHERE seq > ?1 AND (target = '*' OR target = ?2 OR"
                            " (?3 <> '' AND target = ?3)) ORDER BY seq LIMIT ?4",
                            "itti", since, device, group ? group : "", (int64_t)limit)) != 0)
        goto out;
    if ((rc = rows_json(st, stmt, &rows, err)) != 0)
        goto out;
    int64_t next = since;
    size_t n = json_array_size(rows);
    if (n)
        next = json_integer_value(json_object_get(json_array_get(rows, n - 1), "seq"));
    *out = json_pack("{s:o, s:I}", "releases", rows, "next", (json_int_t)next);
out:
    sqlite3_finalize(stmt);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

typedef struct root_put {
    int64_t version;
    const char *blob;
} root_put;

static int apply_root(sqlite_store *st, write_op *op, el_error *err)
{
    root_put *p = op->arg;
    return run(st, "insert root", NULL, err,
               "INSERT INTO roots(version, blob) VALUES(?,?) ON CONFLICT(version) DO NOTHING",
               "it", p->version, p->blob);
}

static int st_root_put(el_hub_store *s, int64_t version, const char *blob, el_error *err)
{
    root_put p = {version, blob};
    write_op op = {.apply = apply_root, .arg = &p};
    return submit((sqlite_store *)s, &op, err);
}

static int st_root_get(el_hub_store *s, int64_t *version, char *blob, el_error *err)
{
    sqlite_store *st = (sqlite_store *)s;
    sqlite3_stmt *stmt = NULL;
    int rc;
    pthread_mutex_lock(&st->lock);
    if ((rc = prepare(st,
                      *version ? "SELECT version, blob FROM roots WHERE version = ?"
                               : "SELECT version, blob FROM roots ORDER BY version DESC LIMIT 1",
                      &stmt, err)) != 0)
        goto out;
    if (*version)
        sqlite3_bind_int64(stmt, 1, *version);
    int step = sqlite3_step(stmt);
    if (step == SQLITE_ROW) {
        *version = sqlite3_column_int64(stmt, 0);
        copy_col(stmt, 1, blob, EL_HUB_ID_MAX);
    } else if (step == SQLITE_DONE) {
        rc = el_error_set(err, EL_ENOTFOUND, "no root version %lld", (long long)*version);
    } else {
        rc = db_error(st, err, "select root");
    }
out:
    sqlite3_finalize(stmt);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

static int query_rows(el_hub_store *s, const char *sql, const char *arg, json_t **out,
                      el_error *err)
{
    sqlite_store *st = (sqlite_store *)s;
    sqlite3_stmt *stmt = NULL;
    int rc;
    pthread_mutex_lock(&st->lock);
    if ((rc = prepare(st, sql, &stmt, err)) == 0) {
        if (arg)
            sqlite3_bind_text(stmt, 1, arg, -1, SQLITE_STATIC);
        rc = rows_json(st, stmt, out, err);
    }
    sqlite3_finalize(stmt);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

static int st_devices(el_hub_store *s, json_t **out, el_error *err)
{
    return query_rows(s,
                      "SELECT id, grp AS \"group\", serial, first_seen, last_seen, audit_seq,"
                      " status_at FROM devices ORDER BY id",
                      NULL, out, err);
}

static int st_device_get(el_hub_store *s, const char *device, json_t **out, el_error *err)
{
    json_t *rows = NULL;
    int rc = query_rows(s,
                        "SELECT id, grp AS \"group\", serial, first_seen, last_seen, audit_seq,"
                        " audit_hash, status, status_at FROM devices WHERE id = ?",
                        device, &rows, err);
    if (rc)
        return rc;
    if (json_array_size(rows) == 0) {
        json_decref(rows);
        return el_error_set(err, EL_ENOTFOUND, "no device %s", device);
    }
    json_t *row = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    /* the stored status is JSON text: show it as an object */
    const char *text = json_string_value(json_object_get(row, "status"));
    if (text) {
        json_t *status = json_loads(text, 0, NULL);
        if (status)
            json_object_set_new(row, "status", status);
    }
    *out = row;
    return 0;
}

static int st_versions(el_hub_store *s, const char *device, json_t **out, el_error *err)
{
    return query_rows(s,
                      device ? "SELECT seq, id, device, blob, size, parent, result, base,"
                               " encoding, received FROM bundles WHERE device = ? ORDER BY seq"
                             : "SELECT seq, id, device, blob, size, parent, result, base,"
                               " encoding, received FROM bundles ORDER BY seq",
                      device, out, err);
}

static int count(sqlite_store *st, const char *sql, int64_t *out, el_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int rc = prepare(st, sql, &stmt, err);
    if (!rc) {
        if (sqlite3_step(stmt) == SQLITE_ROW)
            *out = sqlite3_column_int64(stmt, 0);
        else
            rc = db_error(st, err, "count");
    }
    sqlite3_finalize(stmt);
    return rc;
}

static int st_counts(el_hub_store *s, int64_t *devices, int64_t *bundles, el_error *err)
{
    sqlite_store *st = (sqlite_store *)s;
    pthread_mutex_lock(&st->lock);
    int rc = count(st, "SELECT count(*) FROM devices", devices, err);
    if (!rc)
        rc = count(st, "SELECT count(*) FROM bundles", bundles, err);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

static void st_write_stats(el_hub_store *s, uint64_t *commits, uint64_t *writes)
{
    sqlite_store *st = (sqlite_store *)s;
    *commits = atomic_load(&st->commits);
    *writes = atomic_load(&st->writes);
}

static const el_hub_store_ops sqlite_ops = {
    .destroy = st_destroy,
    .blob_put = st_blob_put,
    .blob_size = st_blob_size,
    .blob_read = st_blob_read,
    .bundle_put = st_bundle_put,
    .bundle_get = st_bundle_get,
    .adapter_get = st_adapter_get,
    .blob_allowed = st_blob_allowed,
    .device_seen = st_device_seen,
    .status_put = st_status_put,
    .release_put = st_release_put,
    .releases_since = st_releases_since,
    .root_put = st_root_put,
    .root_get = st_root_get,
    .devices = st_devices,
    .device_get = st_device_get,
    .versions = st_versions,
    .counts = st_counts,
    .write_stats = st_write_stats,
};

static int migrate(sqlite_store *st, el_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int rc = prepare(st, "PRAGMA user_version", &stmt, err);
    if (rc)
        return rc;
    int version = sqlite3_step(stmt) == SQLITE_ROW ? sqlite3_column_int(stmt, 0) : -1;
    sqlite3_finalize(stmt);
    if (version < 0)
        return db_error(st, err, "read user_version");
    if (version > SCHEMA_VERSION)
        return el_error_set(err, EL_EINPUT, "%s/hub.db has schema %d, newer than this hub (%d)",
                            st->dir, version, SCHEMA_VERSION);
    if (version == SCHEMA_VERSION)
        return 0;
    if ((rc = exec(st, "BEGIN IMMEDIATE", err)) != 0)
        return rc;
    if (version < 1 && (rc = exec(st, schema_v1, err)) != 0)
        goto fail;
    if (version < 2 && (rc = exec(st, schema_v2, err)) != 0)
        goto fail;
    if ((rc = exec(st, "PRAGMA user_version = 2", err)) != 0)
        goto fail;
    return exec(st, "COMMIT", err);
fail:
    exec(st, "ROLLBACK", NULL);
    return rc;
}

int el_hub_store_sqlite_open(const char *dir, el_hub_store **out, el_error *err)
{
    char path[4200];
    *out = NULL;
    sqlite_store *st = el_calloc(1, sizeof *st);
    if (!st)
        return el_error_set(err, EL_ENOMEM, "out of memory for the hub store");
    st->base.ops = &sqlite_ops;
    pthread_mutex_init(&st->lock, NULL);
    pthread_mutex_init(&st->wq_lock, NULL);
    pthread_cond_init(&st->wq_cond, NULL);
    st->wq_tail = &st->wq_head;
    int rc;
    if (snprintf(st->dir, sizeof st->dir, "%s", dir) >= (int)sizeof st->dir) {
        rc = el_error_set(err, EL_EINPUT, "hub data directory path too long");
        goto fail;
    }
    snprintf(path, sizeof path, "%s/blobs/sha256", dir);
    if ((rc = el_fs_mkdirs(path, 0755, err)) != 0)
        goto fail;
    /* a first start made these directories: their entries must be durable
     * before any blob in them is */
    snprintf(path, sizeof path, "%s/blobs", dir);
    if ((rc = el_fs_fsync_dir(path, 1, err)) != 0 || (rc = el_fs_fsync_dir(dir, 1, err)) != 0)
        goto fail;
    snprintf(path, sizeof path, "%s/hub.db", dir);
    if (sqlite3_open_v2(path, &st->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        rc = el_error_set(err, EL_EIO, "%s: %s", path,
                          st->db ? sqlite3_errmsg(st->db) : "cannot open");
        goto fail;
    }
    sqlite3_busy_timeout(st->db, 5000);
    if ((rc = exec(st, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                       " PRAGMA foreign_keys=ON;",
                   err)) != 0)
        goto fail;
    if ((rc = migrate(st, err)) != 0)
        goto fail;
    *out = &st->base;
    return 0;
fail:
    st_destroy(&st->base);
    return rc;
}
