/* The audit chain.
 *
 * Invariants:
 *  1. Rows have consecutive seq from 1. Row N's prev is row N-1's hash (64
 *     zeros for row 1).
 *  2. hash = SHA-256(prev || "\n" || canonical JSON of {"actor", "at",
 *     "event", "figures", "seq", "version"}), canonical = sorted keys, no
 *     whitespace (jansson JSON_COMPACT | JSON_SORT_KEYS). figures is the
 *     object of the values that made the decision.
 *  3. A row is appended in the same transaction as the state change it
 *     records, so the chain and the registry never disagree.
 * An edited row breaks its own hash; a deleted or reordered row breaks the
 * next row's prev or seq. Dropping the newest rows cannot be seen locally:
 * the hub keeps the signed head (DESIGN.md) and refuses a chain that does
 * not extend it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/json.h"
#include "base/sha256.h"
#include "store/internal.h"

#define GENESIS "0000000000000000000000000000000000000000000000000000000000000000"
#define FIGURES_MAX (64 * 1024)

/* Computes a row's hash into OUT. FIGURES must be an object. Returns 0 or
 * EL_ENOMEM. */
static int row_hash(const char *prev, int64_t seq, int64_t at, const char *actor,
                    const char *event, int64_t version, json_t *figures,
                    char out[65])
{
    json_t *row = json_pack("{s:s, s:I, s:s, s:O, s:I, s:I}", "actor", actor,
                            "at", (json_int_t)at, "event", event, "figures",
                            figures, "seq", (json_int_t)seq, "version",
                            (json_int_t)version);
    if (!row)
        return EL_ENOMEM;
    char *text = el_json_dump_sorted(row);
    json_decref(row);
    if (!text)
        return EL_ENOMEM;
    el_sha256_ctx ctx;
    uint8_t d[32];
    el_sha256_init(&ctx);
    el_sha256_update(&ctx, prev, strlen(prev));
    el_sha256_update(&ctx, "\n", 1);
    el_sha256_update(&ctx, text, strlen(text));
    el_sha256_final(&ctx, d);
    el_hex(d, 32, out);
    free(text);
    return 0;
}

int el_store_audit_append(el_store *s, const char *event, int64_t version_id,
                          const char *figures_json, el_error *err)
{
    json_t *figures = figures_json
        ? el_json_parse(figures_json, strlen(figures_json), FIGURES_MAX,
                        "audit figures", err)
        : json_object();
    if (!figures)
        return err ? err->code : EL_EINPUT;
    if (!json_is_object(figures)) {
        json_decref(figures);
        return el_error_set(err, EL_EINTERNAL, "audit figures must be an object");
    }
    int rc = el_store_begin(s, err);
    if (rc) {
        json_decref(figures);
        return rc;
    }
    sqlite3_stmt *st = NULL;
    char prev[65] = GENESIS;
    int64_t seq = 1;
    char *text = NULL;
    if ((rc = el_store_prepare(s, "SELECT seq, hash FROM audit ORDER BY seq DESC "
                                  "LIMIT 1", &st, err)))
        goto fail;
    if (sqlite3_step(st) == SQLITE_ROW) {
        seq = sqlite3_column_int64(st, 0) + 1;
        snprintf(prev, sizeof prev, "%s", (const char *)sqlite3_column_text(st, 1));
    }
    sqlite3_finalize(st);
    st = NULL;
    char hash[65];
    if (row_hash(prev, seq, s->now, s->actor, event, version_id, figures, hash) ||
        !(text = el_json_dump_sorted(figures))) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = el_store_prepare(s, "INSERT INTO audit(seq, at, actor, event, "
                                  "version_id, figures, prev, hash) "
                                  "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)", &st, err)))
        goto fail;
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_int64(st, 2, s->now);
    sqlite3_bind_text(st, 3, s->actor, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, event, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, version_id);
    sqlite3_bind_text(st, 6, text, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, prev, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, hash, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = el_store_sql_fail(s, "appending to the audit chain", err);
        goto fail;
    }
    sqlite3_finalize(st);
    st = NULL;
    free(text);
    json_decref(figures);
    return el_store_commit(s, err);
fail:
    sqlite3_finalize(st);
    free(text);
    json_decref(figures);
    el_store_tx_abort(s);
    return rc;
}

int el_store_audit_verify(el_store *s, int64_t *rows, int64_t *bad_seq,
                          el_error *err)
{
    if (rows)
        *rows = 0;
    if (bad_seq)
        *bad_seq = 0;
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, "SELECT seq, at, actor, event, version_id, "
                                 "figures, prev, hash FROM audit ORDER BY rowid",
                              &st, err);
    if (rc)
        return rc;
    char prev[65] = GENESIS;
    int64_t expect = 1, n = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0);
        const char *actor = (const char *)sqlite3_column_text(st, 2);
        const char *event = (const char *)sqlite3_column_text(st, 3);
        const char *figures = (const char *)sqlite3_column_text(st, 5);
        const char *row_prev = (const char *)sqlite3_column_text(st, 6);
        const char *row_hash_text = (const char *)sqlite3_column_text(st, 7);
        const char *why = NULL;
        char hash[65] = "";
        if (seq != expect) {
            why = seq > expect ? "rows are missing before it"
                               : "it is out of order";
        } else if (!actor || !event || !figures || !row_prev || !row_hash_text) {
            why = "it has an empty field";
        } else if (strcmp(row_prev, prev)) {
            why = "its prev does not match the previous row's hash";
        } else {
            json_t *f = el_json_parse(figures, strlen(figures), FIGURES_MAX,
                                      "audit figures", NULL);
            if (!f || !json_is_object(f) ||
                row_hash(prev, seq, sqlite3_column_int64(st, 1), actor, event,
                         sqlite3_column_int64(st, 4), f, hash))
                why = "its figures are not a JSON object";
            else if (strcmp(hash, row_hash_text))
                why = "its content does not match its hash";
            json_decref(f);
        }
        if (why) {
            if (bad_seq)
                *bad_seq = seq;
            if (rows)
                *rows = n;
            sqlite3_finalize(st);
            return el_error_set(err, EL_EINPUT,
                                "audit chain broken at row %lld (position %lld): %s",
                                (long long)seq, (long long)(n + 1), why);
        }
        snprintf(prev, sizeof prev, "%s", row_hash_text);
        expect++;
        n++;
    }
    sqlite3_finalize(st);
    if (step != SQLITE_DONE)
        return el_store_sql_fail(s, "reading the audit chain", err);
    if (rows)
        *rows = n;
    return 0;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    return t ? t : "";
}

int el_store_audit_list(el_store *s, el_store_audit_row **out, size_t *n,
                        el_error *err)
{
    *out = NULL;
    *n = 0;
    int64_t count;
    int rc = el_store_query_i64(s, "SELECT count(*) FROM audit", INT64_MIN,
                                INT64_MIN, 0, &count, err);
    if (rc)
        return rc;
    el_store_audit_row *rows = el_calloc((size_t)count + 1, sizeof *rows);
    if (!rows)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    sqlite3_stmt *st;
    if ((rc = el_store_prepare(s, "SELECT seq, at, actor, event, version_id, "
                                  "figures, prev, hash FROM audit ORDER BY rowid",
                               &st, err))) {
        el_free(rows);
        return rc;
    }
    size_t i = 0;
    while (i < (size_t)count && sqlite3_step(st) == SQLITE_ROW) {
        el_store_audit_row *r = &rows[i++];
        r->seq = sqlite3_column_int64(st, 0);
        r->at = sqlite3_column_int64(st, 1);
        snprintf(r->actor, sizeof r->actor, "%s", col_text(st, 2));
        snprintf(r->event, sizeof r->event, "%s", col_text(st, 3));
        r->version_id = sqlite3_column_int64(st, 4);
        const char *f = (const char *)sqlite3_column_text(st, 5);
        r->figures = el_strdup(f ? f : "{}");
        snprintf(r->prev, sizeof r->prev, "%s", col_text(st, 6));
        snprintf(r->hash, sizeof r->hash, "%s", col_text(st, 7));
        if (!r->figures) {
            sqlite3_finalize(st);
            el_store_audit_list_free(rows, i);
            return el_error_set(err, EL_ENOMEM, "out of memory");
        }
    }
    sqlite3_finalize(st);
    *out = rows;
    *n = i;
    return 0;
}

void el_store_audit_list_free(el_store_audit_row *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        el_free(v[i].figures);
    el_free(v);
}
