/* The sample store: ingest, dedup, splits, and the trainer's lists.
 *
 * Invariants:
 *  1. A sample's hash is SHA-256 of its canonical JSON body (sorted keys,
 *     only the fields training reads); a body is stored once (UNIQUE hash).
 *  2. The part is fixed at ingest from the split and the hash, never
 *     changed: train -> `probe` when the first hash byte is below
 *     PROBE_BYTE (about 10%: the probation health check's set, drawn from
 *     new data), else `train`; anchor -> `anchor-check` when the first byte
 *     is below 128 (half: measures forgetting, never trained on), else
 *     `anchor-replay`; holdout -> `holdout`.
 *  3. One ingest is one transaction: a file is added whole or not at all.
 *  4. The trainer gets separate lists (el_store_samples): the replay list
 *     is built only from `train` rows of accepted versions and
 *     `anchor-replay`, and el_store_candidate_create refuses a sample of any
 *     other part, so holdout, anchor-check and probe data cannot be trained
 *     on by construction.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/sha256.h"
#include "store/internal.h"

#define INGEST_FILE_MAX ((size_t)256 << 20)
#define LINE_MAX_BYTES ((size_t)1 << 20)
#define PROBE_BYTE 26
#define BAD_LINES_REPORTED 5

/* Validates one JSONL line and returns its canonical body (caller free()s)
 * or NULL with WHY set. */
static char *canonical_body(const char *line, size_t len, const char **why)
{
    json_t *obj = el_json_parse(line, len, LINE_MAX_BYTES, "line", NULL);
    if (!obj) {
        *why = len > LINE_MAX_BYTES ? "line longer than 1 MiB" : "not valid JSON";
        return NULL;
    }
    char *text = NULL;
    json_t *body = NULL;
    *why = NULL;
    if (!json_is_object(obj)) {
        *why = "not a JSON object";
        goto done;
    }
    json_t *t = json_object_get(obj, "text");
    json_t *p = json_object_get(obj, "prompt");
    json_t *c = json_object_get(obj, "completion");
    if (t && (p || c)) {
        *why = "has both \"text\" and \"prompt\"/\"completion\"";
    } else if (t) {
        if (!json_is_string(t))
            *why = "\"text\" must be a string";
        else if (json_string_length(t) == 0)
            *why = "\"text\" is empty";
        else
            body = json_pack("{s:O}", "text", t);
    } else if (p || c) {
        if (!p || !c)
            *why = "needs both \"prompt\" and \"completion\"";
        else if (!json_is_string(p) || !json_is_string(c))
            *why = "\"prompt\" and \"completion\" must be strings";
        else if (json_string_length(c) == 0)
            *why = "\"completion\" is empty";
        else
            body = json_pack("{s:O, s:O}", "completion", c, "prompt", p);
    } else {
        *why = "needs \"text\" or \"prompt\" and \"completion\"";
    }
    if (!*why) {
        text = body ? el_json_dump_sorted(body) : NULL;
        if (!text)
            *why = "out of memory";
    }
done:
    json_decref(body);
    json_decref(obj);
    return text;
}

static const char *part_for(enum el_store_split split, const char *hash)
{
    uint8_t first;
    el_unhex(hash, &first, 1);
    switch (split) {
    case EL_SPLIT_TRAIN: return first < PROBE_BYTE ? "probe" : "train";
    case EL_SPLIT_HOLDOUT: return "holdout";
    default: return first < 128 ? "anchor-check" : "anchor-replay";
    }
}

static const char *split_name(enum el_store_split split)
{
    switch (split) {
    case EL_SPLIT_TRAIN: return "train";
    case EL_SPLIT_HOLDOUT: return "holdout";
    default: return "anchor";
    }
}

int el_store_ingest(el_store *s, const char *file, enum el_store_split split,
                    el_store_ingest_stats *stats, el_error *err)
{
    el_store_ingest_stats local;
    if (!stats)
        stats = &local;
    memset(stats, 0, sizeof *stats);
    uint8_t *data;
    size_t len;
    int rc = el_fs_read_file(file, INGEST_FILE_MAX, &data, &len, err);
    if (rc)
        return rc;
    /* pass 1: validate everything before touching the registry */
    char report[EL_ERROR_MSG_MAX] = "";
    size_t used = 0;
    int64_t bad = 0, lines = 0;
    for (size_t off = 0; off < len;) {
        const char *line = (const char *)data + off;
        const char *nl = memchr(line, '\n', len - off);
        size_t n = nl ? (size_t)(nl - line) : len - off;
        off += n + (nl ? 1 : 0);
        lines++;
        size_t m = n;
        while (m > 0 && (line[m - 1] == '\r' || line[m - 1] == ' ' || line[m - 1] == '\t'))
            m--;
        if (m == 0)
            continue;
        const char *why;
        char *body = canonical_body(line, m, &why);
        if (body) {
            free(body);
            continue;
        }
        if (bad++ < BAD_LINES_REPORTED && used < sizeof report)
            used += (size_t)snprintf(report + used, sizeof report - used, "%s%s:%lld: %s",
                                     bad > 1 ? "; " : "", file, (long long)lines, why);
    }
    if (bad) {
        el_free(data);
        return el_error_set(err, EL_EINPUT, "%lld bad line%s, nothing ingested: %s%s",
                            (long long)bad, bad > 1 ? "s" : "", report,
                            bad > BAD_LINES_REPORTED ? "; ..." : "");
    }
    /* pass 2: one transaction */
    sqlite3_stmt *st = NULL;
    if ((rc = el_store_begin(s, err)))
        goto done;
    if ((rc = el_store_prepare(s, "INSERT OR IGNORE INTO samples(hash, split, part, "
                                  "body, source, line, created_at) "
                                  "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)", &st, err)))
        goto done;
    int64_t lineno = 0;
    for (size_t off = 0; off < len;) {
        const char *line = (const char *)data + off;
        const char *nl = memchr(line, '\n', len - off);
        size_t n = nl ? (size_t)(nl - line) : len - off;
        off += n + (nl ? 1 : 0);
        lineno++;
        while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
            n--;
        if (n == 0)
            continue;
        const char *why;
        char *body = canonical_body(line, n, &why);
        if (!body) {
            rc = el_error_set(err, EL_ENOMEM, "%s:%lld: %s", file, (long long)lineno, why);
            goto done;
        }
        char hash[65];
        el_sha256_hex(body, strlen(body), hash);
        const char *part = part_for(split, hash);
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, hash, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, split_name(split), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, part, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, body, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 5, file, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, lineno);
        sqlite3_bind_int64(st, 7, s->now);
        free(body);
        if (sqlite3_step(st) != SQLITE_DONE) {
            rc = el_store_sql_fail(s, "adding a sample", err);
            goto done;
        }
        stats->lines++;
        if (sqlite3_changes(s->db) == 0) {
            stats->duplicates++;
            continue;
        }
        stats->added++;
        if (!strcmp(part, "probe"))
            stats->probe++;
        else if (!strcmp(part, "anchor-check"))
            stats->anchor_check++;
        else if (!strcmp(part, "anchor-replay"))
            stats->anchor_replay++;
        if (stats->added == 1 + (int64_t)(lines / 2))
            el_crash_point("ingest.mid");
    }
    sqlite3_finalize(st);
    st = NULL;
    char figures[256];
    snprintf(figures, sizeof figures,
             "{\"added\":%lld,\"duplicates\":%lld,\"lines\":%lld,\"split\":\"%s\"}",
             (long long)stats->added, (long long)stats->duplicates,
             (long long)stats->lines, split_name(split));
    if (stats->added && (rc = el_store_audit_append(s, "ingest", 0, figures, err)))
        goto done;
    el_crash_point("ingest.before_commit");
    if ((rc = el_store_commit(s, err)))
        goto done;
    el_crash_point("ingest.after_commit");
    int64_t total;
    if ((rc = el_store_query_i64(s, "SELECT count(*) FROM samples", INT64_MIN,
                                 INT64_MIN, 0, &total, err)))
        goto done;
    /* over the retention limit: gc drops the oldest train samples */
    if (total > s->cfg.retention.max_samples)
        rc = el_store_gc(s, 0, NULL, err);
done:
    sqlite3_finalize(st);
    el_store_tx_abort(s);
    el_free(data);
    return rc;
}

static const char *const list_sql[] = {
    [EL_LIST_NEW_TRAIN] = "SELECT id, hash, body FROM samples WHERE part = 'train' "
                          "AND trained_by IS NULL ORDER BY id",
    [EL_LIST_REPLAY] = "SELECT id, hash, body FROM samples WHERE (part = 'train' "
                       "AND trained_by IN (SELECT id FROM versions WHERE state IN "
                       "('probation', 'good'))) OR part = 'anchor-replay' ORDER BY id",
    [EL_LIST_HOLDOUT] = "SELECT id, hash, body FROM samples WHERE part = 'holdout' "
                        "ORDER BY id",
    [EL_LIST_ANCHOR_CHECK] = "SELECT id, hash, body FROM samples WHERE "
                             "part = 'anchor-check' ORDER BY id",
    [EL_LIST_PROBE] = "SELECT id, hash, body FROM samples WHERE part = 'probe' "
                      "ORDER BY id",
};

int el_store_samples(el_store *s, enum el_store_list which,
                     el_store_sample **out, size_t *n, el_error *err)
{
    *out = NULL;
    *n = 0;
    if ((unsigned)which >= sizeof list_sql / sizeof list_sql[0])
        return el_error_set(err, EL_EINTERNAL, "unknown sample list %d", (int)which);
    size_t cap = 0, count = 0;
    el_store_sample *v = NULL;
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, list_sql[which], &st, err);
    if (rc)
        return rc;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            el_store_sample *nv = el_realloc(v, ncap * sizeof *nv);
            if (!nv) {
                rc = el_error_set(err, EL_ENOMEM, "out of memory");
                goto fail;
            }
            v = nv;
            cap = ncap;
        }
        el_store_sample *x = &v[count];
        x->id = sqlite3_column_int64(st, 0);
        const char *h = (const char *)sqlite3_column_text(st, 1);
        const char *b = (const char *)sqlite3_column_text(st, 2);
        snprintf(x->hash, sizeof x->hash, "%s", h ? h : "");
        x->body = el_strdup(b ? b : "");
        if (!x->body) {
            rc = el_error_set(err, EL_ENOMEM, "out of memory");
            goto fail;
        }
        count++;
    }
    if (step != SQLITE_DONE) {
        rc = el_store_sql_fail(s, "reading samples", err);
        goto fail;
    }
    sqlite3_finalize(st);
    *out = v;
    *n = count;
    return 0;
fail:
    sqlite3_finalize(st);
    el_store_sample_list_free(v, count);
    return rc;
}

void el_store_sample_list_free(el_store_sample *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        el_free(v[i].body);
    el_free(v);
}

int el_store_sample_count(el_store *s, el_store_sample_counts *c, el_error *err)
{
    memset(c, 0, sizeof *c);
    static const struct {
        const char *part;
        size_t off;
    } parts[] = {
        {"train", offsetof(el_store_sample_counts, train)},
        {"holdout", offsetof(el_store_sample_counts, holdout)},
        {"anchor-replay", offsetof(el_store_sample_counts, anchor_replay)},
        {"anchor-check", offsetof(el_store_sample_counts, anchor_check)},
        {"probe", offsetof(el_store_sample_counts, probe)},
    };
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, "SELECT part, count(*) FROM samples GROUP BY part",
                              &st, err);
    if (rc)
        return rc;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *part = (const char *)sqlite3_column_text(st, 0);
        int64_t k = sqlite3_column_int64(st, 1);
        c->total += k;
        for (size_t i = 0; part && i < sizeof parts / sizeof parts[0]; i++)
            if (!strcmp(part, parts[i].part))
                memcpy((char *)c + parts[i].off, &k, sizeof k);
    }
    sqlite3_finalize(st);
    return 0;
}
