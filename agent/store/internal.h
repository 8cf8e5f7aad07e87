/* Shared between the store's .c files; not part of the public API. */
#ifndef EL_STORE_INTERNAL_H
#define EL_STORE_INTERNAL_H

#include <limits.h>
#include <jansson.h>
#include <sqlite3.h>

#include "store/store.h"

struct el_store {
    sqlite3 *db;
    char dir[PATH_MAX];
    char blob_dir[PATH_MAX];
    el_store_config cfg;
    int64_t now;
    char actor[64];
    int in_tx;           /* depth of el_store_begin */
    int session;         /* 1 when this process's session row exists */
};

/* SQLite failure as an el_error: SQLITE_FULL is EL_ENOSPC, the rest EL_EIO,
 * with WHAT and sqlite3_errmsg. Returns the code. */
int el_store_sql_fail(el_store *s, const char *what, el_error *err);
int el_store_exec(el_store *s, const char *sql, el_error *err);
int el_store_prepare(el_store *s, const char *sql, sqlite3_stmt **st,
                     el_error *err);
/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. Nested begins only count depth: the
 * outermost pair is the transaction. el_store_tx_abort is safe to call on
 * any failure path. */
int el_store_begin(el_store *s, el_error *err);
int el_store_commit(el_store *s, el_error *err);
void el_store_tx_abort(el_store *s);

/* One integer from a query with up to two int64 parameters (pass
 * INT64_MIN to leave one unbound). *OUT = DEF when no row. */
int el_store_query_i64(el_store *s, const char *sql, int64_t a, int64_t b,
                       int64_t def, int64_t *out, el_error *err);

/* Applies probation to the active version: expiry, reject rate, boot
 * counting (and a health report when PROBE is not NULL: {loss, ref}).
 * Runs inside its own transaction. */
int el_store_probation_apply(el_store *s, const double *probe,
                             el_error *err);

/* Records the row of blob HASH (LEN bytes of DATA) inside the caller's
 * transaction, after making sure its file is there under that lock and
 * writing it again if a concurrent gc removed it (blob.c invariant 2). */
int el_store_blob_record(el_store *s, const char *hash, const void *data, size_t len,
                         el_error *err);
/* Removes blob HASH's file when no row names it, under the write lock
 * (invariant 3): the undo of a failed writer, which must not take a file
 * another writer has recorded since. Best effort: gc sweeps what is left. */
void el_store_blob_drop_unrecorded(el_store *s, const char *hash);
/* 1 when HASH is 64 lowercase hex characters. */
int el_store_hash_valid(const char *hash);

/* Builds a JSON object text from a jansson value stolen from the caller
 * (NULL-safe): canonical (sorted keys, compact). Caller free()s. */
char *el_store_json_take(json_t *v);

#endif
