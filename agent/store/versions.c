/* Versions: the state machine of adapter versions and the active pointer.
 *
 * NOTES ON THE DESIGN OF VERSIONS
 *
 * A version's state is its verdict; being active is separate (the `active`
 * row: one version, or none = the base model alone).
 *
 *   state        meaning
 *   candidate    recorded, blobs durable; gate not run, or passed
 *   probation    gate passed and activated; being judged in the field
 *   good         probation passed (may be active or not)
 *   rejected     gate failed                                    (final)
 *   rolled_back  probation failed, or rolled back by the operator (final)
 *   retired      a good version dropped by retention            (final)
 *
 * Transitions and the function that performs each:
 *   (none)      -> candidate    el_store_candidate_create
 *   candidate   -> candidate    el_store_candidate_judge (gate passed)
 *   candidate   -> rejected     el_store_candidate_judge (gate failed)
 *   candidate   -> probation    el_store_activate
 *   probation   -> good         el_store_probation_apply (events or hours)
 *   probation   -> rolled_back  el_store_probation_apply (reject rate, health
 *                               check, boot counting), el_store_rollback
 *   good        -> retired      el_store_gc (retention, blob budget)
 *   good (inactive) -> good (active)   el_store_activate, el_store_rollback
 *
 * Invariants:
 *  1. Only a version in probation or good can be active; at most one version
 *     is in probation, and it is the active one.
 *  2. Activation and rollback are one transaction each, begun only after
 *     every blob of the version to be activated was re-read and matched its
 *     hash. A crash at any instant leaves the previous active version or the
 *     new one, never a pointer to missing or unverified bytes.
 *  3. Every transition appends an audit row, with the figures that made the
 *     decision, in the same transaction.
 *  4. Time-based decisions (probation expiry, boot counting) run at every
 *     el_store_open, before the caller acts (db.c begin_session, then
 *     el_store_probation_apply; el_store_feedback and el_store_health_report
 *     apply it at once too).
 *  5. The pin holds the active pointer: while pinned, no other version is
 *     activated by hand. An automatic rollback still happens (a failing
 *     version is not kept for a pin) and releases the pin, audited.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/sha256.h"
#include "store/internal.h"
#include "train/probation.h"

#define ADAPTER_FILES_MAX 32
#define ADAPTER_FILE_MAX ((size_t)2 << 30)
#define JSON_FIELD_MAX ((size_t)1 << 20)
#define BASE_CONFIG_MAX ((size_t)1 << 20)
#define SAFETENSORS_HEADER_MAX ((size_t)100 << 20)

static const char *col(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    return t ? t : "";
}

static char *col_dup(sqlite3_stmt *st, int i)
{
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        return NULL;
    return el_strdup(col(st, i));
}

/* Checks that TEXT (may be NULL) is a JSON object and returns its canonical
 * form (caller free()s), "{}" for NULL. */
static char *canonical_object(const char *text, const char *what, el_error *err)
{
    json_t *v = text ? el_json_parse(text, strlen(text), JSON_FIELD_MAX, what, err)
                     : json_object();
    if (!v)
        return NULL;
    if (!json_is_object(v)) {
        json_decref(v);
        el_error_set(err, EL_EINPUT, "%s: must be a JSON object", what);
        return NULL;
    }
    char *out = el_store_json_take(v);
    if (!out)
        el_error_set(err, EL_ENOMEM, "out of memory");
    return out;
}

/* ---- base models ---------------------------------------------------------- */

int el_store_base_hash_file(const char *dir, char hash[65], el_error *err)
{
    char model_path[PATH_MAX];
    if (el_fs_join(model_path, sizeof model_path, dir, "model.safetensors"))
        return el_error_set(err, EL_EINPUT, "%s: path too long", dir);
    /* streamed: a base model can be larger than we want to hold in memory */
    FILE *f = fopen(model_path, "rb");
    if (!f)
        return el_error_set(err, errno == ENOENT ? EL_ENOTFOUND : EL_EIO,
                            "%s: %s", model_path, strerror(errno));
    el_sha256_ctx ctx;
    el_sha256_init(&ctx);
    uint8_t buf[1 << 16];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0)
        el_sha256_update(&ctx, buf, got);
    int read_failed = ferror(f);
    fclose(f);
    if (read_failed)
        return el_error_set(err, EL_EIO, "%s: read failed", model_path);
    uint8_t d[32];
    el_sha256_final(&ctx, d);
    el_hex(d, 32, hash);
    return 0;
}

int el_store_base_hash(el_store *s, int64_t base_id, char hash[65], el_error *err)
{
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, "SELECT hash FROM bases WHERE id = ?1", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, base_id);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        snprintf(hash, 65, "%s", col(st, 0));
    else if (step == SQLITE_DONE)
        rc = el_error_set(err, EL_ENOTFOUND, "%s: no base model %lld", s->dir,
                          (long long)base_id);
    else
        rc = el_store_sql_fail(s, "reading a base model", err);
    sqlite3_finalize(st);
    return rc;
}

int el_store_base_register(el_store *s, const char *dir, int64_t *id, el_error *err)
{
    char cfg_path[PATH_MAX], abs[PATH_MAX];
    if (el_fs_join(cfg_path, sizeof cfg_path, dir, "config.json"))
        return el_error_set(err, EL_EINPUT, "%s: path too long", dir);
    if (!realpath(dir, abs))
        return el_error_set(err, EL_ENOTFOUND, "%s: %s", dir, strerror(errno));
    uint8_t *cfg = NULL;
    size_t cfg_len;
    int rc = el_fs_read_file(cfg_path, BASE_CONFIG_MAX, &cfg, &cfg_len, err);
    if (rc)
        return rc;
    json_t *cfg_json = el_json_parse(cfg, cfg_len, BASE_CONFIG_MAX, cfg_path, err);
    if (!cfg_json || !json_is_object(cfg_json)) {
        json_decref(cfg_json);
        el_free(cfg);
        return el_error_set(err, EL_EINPUT, "%s: not a JSON object", cfg_path);
    }
    json_decref(cfg_json);
    char hash[65];
    if ((rc = el_store_base_hash_file(dir, hash, err))) {
        el_free(cfg);
        return rc;
    }
    sqlite3_stmt *st = NULL;
    if ((rc = el_store_begin(s, err)))
        goto done;
    if ((rc = el_store_prepare(s, "INSERT OR IGNORE INTO bases(hash, config, path, "
                                  "created_at) VALUES(?1, ?2, ?3, ?4)", &st, err)))
        goto done;
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, (const char *)cfg, (int)cfg_len, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, abs, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, s->now);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = el_store_sql_fail(s, "registering the base model", err);
        goto done;
    }
    int added = sqlite3_changes(s->db) > 0;
    sqlite3_finalize(st);
    if ((rc = el_store_prepare(s, "SELECT id FROM bases WHERE hash = ?1", &st, err)))
        goto done;
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
    *id = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    if (added) {
        json_t *fig = json_pack("{s:s, s:s}", "hash", hash, "path", abs);
        char *text = el_store_json_take(fig);
        rc = text ? el_store_audit_append(s, "base_registered", 0, text, err)
                  : el_error_set(err, EL_ENOMEM, "out of memory");
        free(text);
        if (rc)
            goto done;
    }
    rc = el_store_commit(s, err);
done:
    sqlite3_finalize(st);
    /* only on failure: after a commit the abort would end a caller's outer
     * transaction (an import registers a base inside one) */
    if (rc)
        el_store_tx_abort(s);
    el_free(cfg);
    return rc;
}

int el_store_base_current(el_store *s, int64_t *id, char hash[65], el_error *err)
{
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, "SELECT id, hash FROM bases ORDER BY id DESC LIMIT 1",
                              &st, err);
    if (rc)
        return rc;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        if (hash)
            snprintf(hash, 65, "%s", col(st, 1));
    } else {
        rc = el_error_set(err, EL_ENOTFOUND, "%s: no base model registered (run "
                          "`edgeloop init --model DIR`)", s->dir);
    }
    sqlite3_finalize(st);
    return rc;
}

/* ---- reading versions ------------------------------------------------------ */

#define VERSION_COLUMNS \
    "v.id, coalesce(v.parent_id, 0), v.base_id, v.state, v.origin, b.hash, " \
    "v.data_digest, v.adapter_hash, v.backend, v.seed, v.recipe, v.metrics, " \
    "v.plasticity, v.gate, v.reason, v.signer, v.created_at, v.updated_at, " \
    "coalesce(v.activated_at, 0), coalesce(v.probation_since, 0), v.crashes, " \
    "coalesce(a.version_id = v.id, 0), coalesce(a.version_id = v.id AND a.pinned, 0) "
#define VERSION_FROM \
    " FROM versions v JOIN bases b ON b.id = v.base_id, active a "

static int read_version(sqlite3_stmt *st, el_store_version *v)
{
    memset(v, 0, sizeof *v);
    v->id = sqlite3_column_int64(st, 0);
    v->parent_id = sqlite3_column_int64(st, 1);
    v->base_id = sqlite3_column_int64(st, 2);
    snprintf(v->state, sizeof v->state, "%s", col(st, 3));
    snprintf(v->origin, sizeof v->origin, "%s", col(st, 4));
    snprintf(v->base_hash, sizeof v->base_hash, "%s", col(st, 5));
    snprintf(v->data_digest, sizeof v->data_digest, "%s", col(st, 6));
    snprintf(v->adapter_hash, sizeof v->adapter_hash, "%s", col(st, 7));
    snprintf(v->backend, sizeof v->backend, "%s", col(st, 8));
    v->seed = sqlite3_column_int64(st, 9);
    v->recipe = col_dup(st, 10);
    v->metrics = col_dup(st, 11);
    v->plasticity = col_dup(st, 12);
    v->gate = col_dup(st, 13);
    v->reason = col_dup(st, 14);
    v->signer = col_dup(st, 15);
    v->created_at = sqlite3_column_int64(st, 16);
    v->updated_at = sqlite3_column_int64(st, 17);
    v->activated_at = sqlite3_column_int64(st, 18);
    v->probation_since = sqlite3_column_int64(st, 19);
    v->crashes = sqlite3_column_int64(st, 20);
    v->active = sqlite3_column_int(st, 21);
    v->pinned = sqlite3_column_int(st, 22);
    if ((sqlite3_column_type(st, 10) != SQLITE_NULL && !v->recipe) ||
        (sqlite3_column_type(st, 11) != SQLITE_NULL && !v->metrics) ||
        (sqlite3_column_type(st, 12) != SQLITE_NULL && !v->plasticity) ||
        (sqlite3_column_type(st, 13) != SQLITE_NULL && !v->gate) ||
        (sqlite3_column_type(st, 14) != SQLITE_NULL && !v->reason) ||
        (sqlite3_column_type(st, 15) != SQLITE_NULL && !v->signer))
        return EL_ENOMEM;
    return 0;
}

void el_store_version_finish(el_store_version *v)
{
    if (!v)
        return;
    el_free(v->recipe);
    el_free(v->metrics);
    el_free(v->plasticity);
    el_free(v->gate);
    el_free(v->reason);
    el_free(v->signer);
    v->recipe = v->metrics = v->plasticity = v->gate = v->reason = v->signer = NULL;
}

int el_store_version_get(el_store *s, int64_t id, el_store_version *v, el_error *err)
{
    memset(v, 0, sizeof *v);
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, "SELECT " VERSION_COLUMNS VERSION_FROM
                                 "WHERE v.id = ?1", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        if (read_version(st, v)) {
            el_store_version_finish(v);
            rc = el_error_set(err, EL_ENOMEM, "out of memory");
        }
    } else if (step == SQLITE_DONE) {
        rc = el_error_set(err, EL_ENOTFOUND, "no version %lld", (long long)id);
    } else {
        rc = el_store_sql_fail(s, "reading a version", err);
    }
    sqlite3_finalize(st);
    return rc;
}

int el_store_version_list(el_store *s, el_store_version **out, size_t *n,
                          el_error *err)
{
    *out = NULL;
    *n = 0;
    int64_t count;
    int rc = el_store_query_i64(s, "SELECT count(*) FROM versions", INT64_MIN,
                                INT64_MIN, 0, &count, err);
    if (rc)
        return rc;
    el_store_version *v = el_calloc((size_t)count + 1, sizeof *v);
    if (!v)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    sqlite3_stmt *st;
    if ((rc = el_store_prepare(s, "SELECT " VERSION_COLUMNS VERSION_FROM
                                  "ORDER BY v.id", &st, err))) {
        el_free(v);
        return rc;
    }
    size_t i = 0;
    while (i < (size_t)count && sqlite3_step(st) == SQLITE_ROW) {
        if (read_version(st, &v[i])) {
            el_store_version_finish(&v[i]);
            sqlite3_finalize(st);
            el_store_version_list_free(v, i);
            return el_error_set(err, EL_ENOMEM, "out of memory");
        }
        i++;
    }
    sqlite3_finalize(st);
    *out = v;
    *n = i;
    return 0;
}

void el_store_version_list_free(el_store_version *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        el_store_version_finish(&v[i]);
    el_free(v);
}

int el_store_active(el_store *s, int64_t *id, el_error *err)
{
    return el_store_query_i64(s, "SELECT version_id FROM active WHERE id = 1",
                              INT64_MIN, INT64_MIN, 0, id, err);
}

/* ---- adapter files ------------------------------------------------------------ */

typedef struct adapter_file {
    char name[256];
    char blob[65];
    uint8_t *data;
    size_t len;
} adapter_file;

static void files_free(adapter_file *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        el_free(f[i].data);
}

/* Reads the (name, blob) list of version ID into F (at most
 * ADAPTER_FILES_MAX), and when LOAD, every blob verified. */
static int version_files(el_store *s, int64_t id, int load, adapter_file *f,
                         size_t *n, el_error *err)
{
    *n = 0;
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, "SELECT name, blob FROM adapter_files WHERE "
                                 "version_id = ?1 ORDER BY name", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    while (sqlite3_step(st) == SQLITE_ROW && *n < ADAPTER_FILES_MAX) {
        adapter_file *x = &f[(*n)++];
        memset(x, 0, sizeof *x);
        snprintf(x->name, sizeof x->name, "%s", col(st, 0));
        snprintf(x->blob, sizeof x->blob, "%s", col(st, 1));
    }
    sqlite3_finalize(st);
    if (*n == 0)
        return el_error_set(err, EL_ENOTFOUND,
                            "version %lld has no adapter files (freed by retention "
                            "or gc after its final verdict)", (long long)id);
    for (size_t i = 0; load && i < *n; i++) {
        if ((rc = el_store_blob_read(s, f[i].blob, &f[i].data, &f[i].len, err))) {
            files_free(f, *n);
            return el_error_prefix(err, "version %lld, %s", (long long)id, f[i].name);
        }
    }
    return 0;
}

int el_store_export(el_store *s, int64_t id, const char *dir, el_error *err)
{
    adapter_file files[ADAPTER_FILES_MAX];
    size_t n;
    el_store_version v;
    int rc = el_store_version_get(s, id, &v, err);
    if (rc)
        return rc;
    el_store_version_finish(&v);
    /* all bytes verified before the first file is written */
    if ((rc = version_files(s, id, 1, files, &n, err)))
        return rc;
    if ((rc = el_fs_mkdirs(dir, 0755, err)))
        goto done;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        if (el_fs_join(path, sizeof path, dir, files[i].name)) {
            rc = el_error_set(err, EL_EINPUT, "%s: path too long", dir);
            goto done;
        }
        if ((rc = el_fs_write_atomic(path, files[i].data, files[i].len, 0644, err)))
            goto done;
    }
done:
    files_free(files, n);
    return rc;
}

/* Checks what makes a PEFT directory loadable before it is stored: the two
 * required files, adapter_config.json a JSON object, and the safetensors
 * header length within the file and a JSON object. */
static int check_adapter(const char *dir, const adapter_file *f, size_t n,
                         el_error *err)
{
    const adapter_file *cfg = NULL, *model = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(f[i].name, "adapter_config.json"))
            cfg = &f[i];
        if (!strcmp(f[i].name, "adapter_model.safetensors"))
            model = &f[i];
    }
    if (!cfg || !model)
        return el_error_set(err, EL_EINPUT, "%s: not a PEFT adapter directory "
                            "(needs adapter_config.json and adapter_model.safetensors)",
                            dir);
    json_t *j = el_json_parse(cfg->data, cfg->len, JSON_FIELD_MAX,
                              "adapter_config.json", err);
    int ok = j && json_is_object(j);
    json_decref(j);
    if (!ok)
        return el_error_set(err, EL_EINPUT, "%s/adapter_config.json: not a JSON object",
                            dir);
    if (model->len < 8)
        return el_error_set(err, EL_EINPUT, "%s/adapter_model.safetensors: truncated "
                            "(%zu bytes)", dir, model->len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | model->data[i];
    if (hlen > SAFETENSORS_HEADER_MAX || hlen > model->len - 8)
        return el_error_set(err, EL_EINPUT, "%s/adapter_model.safetensors: header "
                            "length %llu does not fit the file", dir,
                            (unsigned long long)hlen);
    j = el_json_parse(model->data + 8, (size_t)hlen, SAFETENSORS_HEADER_MAX,
                      "adapter_model.safetensors header", err);
    ok = j && json_is_object(j);
    json_decref(j);
    if (!ok)
        return el_error_set(err, EL_EINPUT, "%s/adapter_model.safetensors: header is "
                            "not a JSON object", dir);
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(((const adapter_file *)a)->name, ((const adapter_file *)b)->name);
}

/* Reads every regular file of DIR (no subdirectories: a PEFT directory is
 * flat) into F. */
static int read_adapter_dir(const char *dir, adapter_file *f, size_t *n,
                            el_error *err)
{
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return el_error_set(err, errno == ENOENT ? EL_ENOTFOUND : EL_EINPUT,
                            "%s: %s", dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[PATH_MAX];
        struct stat st;
        if (el_fs_join(path, sizeof path, dir, e->d_name) || stat(path, &st) != 0 ||
            !S_ISREG(st.st_mode))
            continue;
        if (*n == ADAPTER_FILES_MAX || strlen(e->d_name) >= sizeof f[0].name) {
            rc = el_error_set(err, EL_EINPUT, "%s: more than %d files or a name too long",
                              dir, ADAPTER_FILES_MAX);
            break;
        }
        adapter_file *x = &f[*n];
        memset(x, 0, sizeof *x);
        snprintf(x->name, sizeof x->name, "%s", e->d_name);
        if ((rc = el_fs_read_file(path, ADAPTER_FILE_MAX, &x->data, &x->len, err)))
            break;
        (*n)++;
    }
    closedir(d);
    if (rc) {
        files_free(f, *n);
        *n = 0;
        return rc;
    }
    qsort(f, *n, sizeof *f, name_cmp);
    return 0;
}

/* ---- candidates ----------------------------------------------------------------- */

static int sample_hash_cmp(const void *a, const void *b)
{
    return memcmp(a, b, 65);
}

/* Marks the samples a candidate trained on and computes its data digest:
 * SHA-256 over the sorted sample hashes, each followed by '\n'. Refuses any
 * sample that must never be trained on. Inside the caller's transaction. */
static int use_samples(el_store *s, int64_t version, const int64_t *ids, size_t n,
                       char digest[65], el_error *err)
{
    char (*hashes)[65] = el_calloc(n + 1, 65);
    if (!hashes)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, "SELECT hash, part FROM samples WHERE id = ?1", &st, err);
    if (rc) {
        el_free(hashes);
        return rc;
    }
    for (size_t i = 0; i < n && !rc; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, ids[i]);
        if (sqlite3_step(st) != SQLITE_ROW) {
            rc = el_error_set(err, EL_ENOTFOUND, "no sample %lld", (long long)ids[i]);
            break;
        }
        const char *part = col(st, 1);
        if (strcmp(part, "train") && strcmp(part, "anchor-replay")) {
            rc = el_error_set(err, EL_EPOLICY, "sample %lld is %s data, which is "
                              "never trained on", (long long)ids[i], part);
            break;
        }
        snprintf(hashes[i], 65, "%s", col(st, 0));
    }
    sqlite3_finalize(st);
    if (!rc) {
        qsort(hashes, n, 65, sample_hash_cmp);
        el_sha256_ctx ctx;
        uint8_t d[32];
        el_sha256_init(&ctx);
        for (size_t i = 0; i < n; i++) {
            el_sha256_update(&ctx, hashes[i], 64);
            el_sha256_update(&ctx, "\n", 1);
        }
        el_sha256_final(&ctx, d);
        el_hex(d, 32, digest);
    }
    el_free(hashes);
    for (size_t i = 0; i < n && !rc; i++) {
        int64_t ignored;
        rc = el_store_query_i64(s, "UPDATE samples SET trained_by = ?2 WHERE id = ?1 "
                                   "AND trained_by IS NULL AND part = 'train'",
                                ids[i], version, 0, &ignored, err);
    }
    return rc;
}

int el_store_candidate_create(el_store *s, const el_store_candidate *c,
                              const char *adapter_dir, int64_t *id, el_error *err)
{
    *id = 0;
    const char *origin = c->origin ? c->origin : "local";
    if (strcmp(origin, "local") && strcmp(origin, "fleet") && strcmp(origin, "imported"))
        return el_error_set(err, EL_EUSAGE, "origin must be local, fleet or imported");
    adapter_file files[ADAPTER_FILES_MAX];
    size_t n = 0;
    int written[ADAPTER_FILES_MAX] = {0};
    char *recipe = NULL, *metrics = NULL, *plasticity = NULL;
    sqlite3_stmt *st = NULL;
    int rc = read_adapter_dir(adapter_dir, files, &n, err);
    if (rc)
        return rc;
    if ((rc = check_adapter(adapter_dir, files, n, err)))
        goto fail;
    if (!(recipe = canonical_object(c->recipe_json, "recipe", err)) ||
        !(metrics = canonical_object(c->metrics_json, "metrics", err)) ||
        !(plasticity = canonical_object(c->plasticity_json, "plasticity", err))) {
        rc = err ? err->code : EL_EINPUT;
        goto fail;
    }
    /* blobs first, durable (invariant 2 of blob.c); remember which files
     * this call created so a failure leaves nothing behind */
    el_sha256_ctx ctx;
    el_sha256_init(&ctx);
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        el_sha256_hex(files[i].data, files[i].len, files[i].blob);
        int existed = el_store_blob_path(s, files[i].blob, path, sizeof path) == 0 &&
                      el_fs_exists(path);
        if ((rc = el_store_blob_put(s, files[i].data, files[i].len, files[i].blob, err)))
            goto fail;
        written[i] = !existed;
        el_sha256_update(&ctx, files[i].name, strlen(files[i].name));
        el_sha256_update(&ctx, "\0", 1);
        el_sha256_update(&ctx, files[i].blob, 64);
        el_sha256_update(&ctx, "\n", 1);
    }
    uint8_t d[32];
    char adapter_hash[65];
    el_sha256_final(&ctx, d);
    el_hex(d, 32, adapter_hash);
    el_crash_point("register.after_blobs");

    if ((rc = el_store_begin(s, err)))
        goto fail;
    int64_t base_id = c->base_id;
    if (!base_id && (rc = el_store_base_current(s, &base_id, NULL, err)))
        goto fail;
    if (c->parent_id) {
        int64_t found = 0;
        if ((rc = el_store_query_i64(s, "SELECT count(*) FROM versions WHERE id = ?1",
                                     c->parent_id, INT64_MIN, 0, &found, err)))
            goto fail;
        if (!found) {
            rc = el_error_set(err, EL_ENOTFOUND, "parent version %lld does not exist",
                              (long long)c->parent_id);
            goto fail;
        }
    }
    if ((rc = el_store_prepare(s, "INSERT INTO versions(parent_id, base_id, state, "
                                  "origin, data_digest, adapter_hash, recipe, seed, "
                                  "backend, metrics, plasticity, signer, created_at, "
                                  "updated_at) VALUES(?1, ?2, 'candidate', ?3, '', ?4, "
                                  "?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)", &st, err)))
        goto fail;
    if (c->parent_id)
        sqlite3_bind_int64(st, 1, c->parent_id);
    else
        sqlite3_bind_null(st, 1);
    sqlite3_bind_int64(st, 2, base_id);
    sqlite3_bind_text(st, 3, origin, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, adapter_hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, recipe, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, c->seed);
    sqlite3_bind_text(st, 7, c->backend ? c->backend : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, metrics, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, plasticity, -1, SQLITE_STATIC);
    if (c->signer)
        sqlite3_bind_text(st, 10, c->signer, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 10);
    sqlite3_bind_int64(st, 11, s->now);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = el_store_sql_fail(s, "recording the candidate", err);
        goto fail;
    }
    sqlite3_finalize(st);
    st = NULL;
    int64_t vid = sqlite3_last_insert_rowid(s->db);
    char digest[65];
    el_sha256_hex("", 0, digest);
    if (c->n_samples && (rc = use_samples(s, vid, c->sample_ids, c->n_samples,
                                          digest, err)))
        goto fail;
    if ((rc = el_store_prepare(s, "UPDATE versions SET data_digest = ?2 WHERE id = ?1",
                               &st, err)))
        goto fail;
    sqlite3_bind_int64(st, 1, vid);
    sqlite3_bind_text(st, 2, digest, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    sqlite3_finalize(st);
    st = NULL;
    if (step != SQLITE_DONE) {
        rc = el_store_sql_fail(s, "recording the data digest", err);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        if ((rc = el_store_blob_record(s, files[i].blob, files[i].data, files[i].len, err)))
            goto fail;
        if ((rc = el_store_prepare(s, "INSERT INTO adapter_files(version_id, name, blob) "
                                      "VALUES(?1, ?2, ?3)", &st, err)))
            goto fail;
        sqlite3_bind_int64(st, 1, vid);
        sqlite3_bind_text(st, 2, files[i].name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, files[i].blob, -1, SQLITE_STATIC);
        step = sqlite3_step(st);
        sqlite3_finalize(st);
        st = NULL;
        if (step != SQLITE_DONE) {
            rc = el_store_sql_fail(s, "recording an adapter file", err);
            goto fail;
        }
    }
    char figures[320];
    snprintf(figures, sizeof figures,
             "{\"adapter\":\"%s\",\"data_digest\":\"%s\",\"origin\":\"%s\","
             "\"parent\":%lld,\"samples\":%zu}",
             adapter_hash, digest, origin, (long long)c->parent_id, c->n_samples);
    if ((rc = el_store_audit_append(s, "candidate", vid, figures, err)))
        goto fail;
    el_crash_point("register.before_commit");
    if ((rc = el_store_commit(s, err)))
        goto fail;
    *id = vid;
    files_free(files, n);
    free(recipe);
    free(metrics);
    free(plasticity);
    return 0;
fail:
    sqlite3_finalize(st);
    el_store_tx_abort(s);
    for (size_t i = 0; i < n; i++)
        if (written[i])
            el_store_blob_drop_unrecorded(s, files[i].blob);
    files_free(files, n);
    free(recipe);
    free(metrics);
    free(plasticity);
    return rc;
}

/* ---- transitions ------------------------------------------------------------------ */

/* State of version ID into STATE (16 bytes). EL_ENOTFOUND when absent. */
static int version_state(el_store *s, int64_t id, char state[16], int64_t *gate_pass,
                         char origin[16], el_error *err)
{
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, "SELECT state, coalesce(gate_pass, -1), origin "
                                 "FROM versions WHERE id = ?1", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(state, 16, "%s", col(st, 0));
        if (gate_pass)
            *gate_pass = sqlite3_column_int64(st, 1);
        if (origin)
            snprintf(origin, 16, "%s", col(st, 2));
    } else {
        rc = el_error_set(err, EL_ENOTFOUND, "no version %lld", (long long)id);
    }
    sqlite3_finalize(st);
    return rc;
}

static int set_state(el_store *s, int64_t id, const char *state, const char *reason,
                     el_error *err)
{
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, "UPDATE versions SET state = ?2, reason = "
                                 "coalesce(?3, reason), updated_at = ?4 WHERE id = ?1",
                              &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
    if (reason)
        sqlite3_bind_text(st, 3, reason, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 3);
    sqlite3_bind_int64(st, 4, s->now);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = el_store_sql_fail(s, "changing a version's state", err);
    sqlite3_finalize(st);
    return rc;
}

static int active_row(el_store *s, int64_t *active, int64_t *pinned, el_error *err)
{
    int rc = el_store_active(s, active, err);
    if (!rc && pinned)
        rc = el_store_query_i64(s, "SELECT pinned FROM active WHERE id = 1",
                                INT64_MIN, INT64_MIN, 0, pinned, err);
    return rc;
}

/* Points the active row at ID (0 = none) and, for a version on probation,
 * ties this process's session to it so a crash counts (db.c invariant 3). */
static int set_active(el_store *s, int64_t id, int probation, el_error *err)
{
    int64_t ignored;
    int rc;
    if (id)
        rc = el_store_query_i64(s, "UPDATE active SET version_id = ?1, since = ?2, "
                                   "pinned = 0 WHERE id = 1",
                                id, s->now, 0, &ignored, err);
    else
        rc = el_store_query_i64(s, "UPDATE active SET version_id = NULL, since = ?1, "
                                   "pinned = 0 WHERE id = 1",
                                s->now, INT64_MIN, 0, &ignored, err);
    if (rc)
        return rc;
    if (probation)
        return el_store_query_i64(s, "UPDATE sessions SET version_id = ?2 WHERE "
                                     "pid = ?1", (int64_t)getpid(), id, 0, &ignored,
                                  err);
    return el_store_query_i64(s, "UPDATE sessions SET version_id = NULL WHERE pid = ?1",
                              (int64_t)getpid(), INT64_MIN, 0, &ignored, err);
}

int el_store_candidate_judge(el_store *s, int64_t id, int pass, const char *reason,
                             const char *metrics_json, const char *figures_json,
                             el_error *err)
{
    char *metrics = NULL, *figures = NULL, *gate = NULL;
    sqlite3_stmt *st = NULL;
    if (metrics_json && !(metrics = canonical_object(metrics_json, "metrics", err)))
        return err ? err->code : EL_EINPUT;
    if (!(figures = canonical_object(figures_json, "gate figures", err))) {
        free(metrics);
        return err ? err->code : EL_EINPUT;
    }
    int rc = el_store_begin(s, err);
    if (rc)
        goto done;
    char state[16];
    int64_t gate_pass;
    if ((rc = version_state(s, id, state, &gate_pass, NULL, err)))
        goto done;
    if (strcmp(state, "candidate") || gate_pass != -1) {
        rc = el_error_set(err, EL_EPOLICY, "version %lld is %s%s; only a candidate "
                          "awaiting its gate can be judged", (long long)id, state,
                          gate_pass != -1 && !strcmp(state, "candidate")
                              ? " and already judged" : "");
        goto done;
    }
    json_t *g = json_pack("{s:b, s:s, s:o}", "pass", pass, "reason",
                          reason ? reason : (pass ? "ok" : "failed"), "figures",
                          json_loads(figures, 0, NULL));
    if (!(gate = el_store_json_take(g))) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = el_store_prepare(s, "UPDATE versions SET gate_pass = ?2, gate = ?3, "
                                  "metrics = coalesce(?4, metrics), updated_at = ?5 "
                                  "WHERE id = ?1", &st, err)))
        goto done;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int(st, 2, pass ? 1 : 0);
    sqlite3_bind_text(st, 3, gate, -1, SQLITE_STATIC);
    if (metrics)
        sqlite3_bind_text(st, 4, metrics, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 4);
    sqlite3_bind_int64(st, 5, s->now);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = el_store_sql_fail(s, "recording the gate verdict", err);
        goto done;
    }
    if (!pass && (rc = set_state(s, id, "rejected", reason ? reason : "gate failed",
                                 err)))
        goto done;
    if ((rc = el_store_audit_append(s, pass ? "gate_passed" : "rejected", id, gate,
                                    err)))
        goto done;
    rc = el_store_commit(s, err);
done:
    sqlite3_finalize(st);
    if (rc)   /* after a commit an abort would end a caller's transaction */
        el_store_tx_abort(s);
    free(metrics);
    free(figures);
    free(gate);
    return rc;
}

/* Re-reads every blob of ID against its hash (invariant 2). */
static int verify_version(el_store *s, int64_t id, el_error *err)
{
    adapter_file files[ADAPTER_FILES_MAX];
    size_t n;
    int rc = version_files(s, id, 1, files, &n, err);
    if (!rc)
        files_free(files, n);
    return rc;
}

int el_store_activate(el_store *s, int64_t id, el_error *err)
{
    char state[16], origin[16];
    int64_t gate_pass, active, pinned;
    int rc = version_state(s, id, state, &gate_pass, origin, err);
    if (rc)
        return rc;
    if ((rc = active_row(s, &active, &pinned, err)))
        return rc;
    if (active == id)
        return el_error_set(err, EL_EPOLICY, "version %lld is already active",
                            (long long)id);
    if (strcmp(state, "candidate") && strcmp(state, "good"))
        return el_error_set(err, EL_EPOLICY, "version %lld is %s and cannot be "
                            "activated", (long long)id, state);
    if (!strcmp(state, "candidate") && gate_pass != 1 && !strcmp(origin, "local"))
        return el_error_set(err, EL_EPOLICY, "version %lld has not passed its gate",
                            (long long)id);
    if (pinned)
        return el_error_set(err, EL_EPOLICY, "version %lld is pinned; run `edgeloop "
                            "unpin` first", (long long)active);
    if (active) {
        char cur[16];
        if ((rc = version_state(s, active, cur, NULL, NULL, err)))
            return rc;
        if (!strcmp(cur, "probation"))
            return el_error_set(err, EL_EPOLICY, "version %lld is on probation; wait "
                                "for its verdict or `edgeloop rollback` first",
                                (long long)active);
    }
    if ((rc = verify_version(s, id, err)))
        return rc;
    el_crash_point("activate.after_blob");
    if ((rc = el_store_begin(s, err)))
        return rc;
    /* another process may have moved the pointer since the checks above */
    int64_t again;
    char state2[16];
    if ((rc = active_row(s, &again, NULL, err)) ||
        (rc = version_state(s, id, state2, NULL, NULL, err)))
        goto fail;
    if (again != active || strcmp(state2, state)) {
        rc = el_error_set(err, EL_EPOLICY, "the registry changed while activating "
                          "version %lld; try again", (long long)id);
        goto fail;
    }
    int probation = !strcmp(state, "candidate");
    int64_t ignored;
    if (probation) {
        if ((rc = el_store_query_i64(s, "UPDATE versions SET state = 'probation', "
                                        "probation_since = ?2, activated_at = ?2, "
                                        "crashes = 0, updated_at = ?2 WHERE id = ?1",
                                     id, s->now, 0, &ignored, err)))
            goto fail;
    } else if ((rc = el_store_query_i64(s, "UPDATE versions SET activated_at = ?2, "
                                           "updated_at = ?2 WHERE id = ?1",
                                        id, s->now, 0, &ignored, err))) {
        goto fail;
    }
    if ((rc = set_active(s, id, probation, err)))
        goto fail;
    char figures[160];
    snprintf(figures, sizeof figures, "{\"from\":%lld,\"state\":\"%s\"}",
             (long long)active, probation ? "probation" : "good");
    if ((rc = el_store_audit_append(s, "activated", id, figures, err)))
        goto fail;
    el_crash_point("activate.before_commit");
    if ((rc = el_store_commit(s, err)))
        goto fail;
    el_crash_point("activate.after_commit");
    return 0;
fail:
    el_store_tx_abort(s);
    return rc;
}

/* The most recently activated good version other than EXCLUDE whose blobs
 * verify, into *ID (0 = none). SKIPPED counts good versions passed over
 * because a blob was missing or corrupted. */
static int last_good(el_store *s, int64_t exclude, int64_t *id, int64_t *skipped,
                     el_error *err)
{
    *id = 0;
    *skipped = 0;
    sqlite3_stmt *st;
    int rc = el_store_prepare(s, "SELECT id FROM versions WHERE state = 'good' AND "
                                 "id != ?1 ORDER BY coalesce(activated_at, 0) DESC, "
                                 "id DESC", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, exclude);
    int64_t ids[256];
    size_t n = 0;
    while (n < 256 && sqlite3_step(st) == SQLITE_ROW)
        ids[n++] = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    for (size_t i = 0; i < n; i++) {
        if (verify_version(s, ids[i], NULL) == 0) {
            *id = ids[i];
            return 0;
        }
        (*skipped)++;
    }
    return 0;
}

/* The rollback itself, inside the caller's transaction: the active version
 * (if on probation) -> rolled_back with REASON, the pointer -> TO (0 =
 * base). FIGURES (an object, consumed) gets from/to/reason added. */
static int rollback_locked(el_store *s, int64_t active, int64_t to, const char *reason,
                           json_t *figures, el_error *err)
{
    char state[16] = "";
    int rc = 0;
    if (active && (rc = version_state(s, active, state, NULL, NULL, err))) {
        json_decref(figures);
        return rc;
    }
    if (!strcmp(state, "probation") &&
        (rc = set_state(s, active, "rolled_back", reason, err))) {
        json_decref(figures);
        return rc;
    }
    if ((rc = set_active(s, to, 0, err))) {
        json_decref(figures);
        return rc;
    }
    int64_t ignored;
    if (to && (rc = el_store_query_i64(s, "UPDATE versions SET activated_at = ?2 "
                                          "WHERE id = ?1", to, s->now, 0, &ignored,
                                       err))) {
        json_decref(figures);
        return rc;
    }
    json_object_set_new(figures, "from", json_integer(active));
    json_object_set_new(figures, "to", json_integer(to));
    json_object_set_new(figures, "reason", json_string(reason));
    json_object_set_new(figures, "from_state", json_string(state));
    char *text = el_store_json_take(figures);
    if (!text)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    rc = el_store_audit_append(s, "rolled_back", active, text, err);
    free(text);
    return rc;
}

int el_store_rollback(el_store *s, int64_t to_id, const char *reason, el_error *err)
{
    int rc = el_store_begin(s, err);
    if (rc)
        return rc;
    int64_t active, pinned, target = 0, skipped = 0;
    if ((rc = active_row(s, &active, &pinned, err)))
        goto fail;
    if (pinned) {
        rc = el_error_set(err, EL_EPOLICY, "version %lld is pinned; run `edgeloop "
                          "unpin` first", (long long)active);
        goto fail;
    }
    if (to_id > 0) {
        char state[16];
        if ((rc = version_state(s, to_id, state, NULL, NULL, err)))
            goto fail;
        if (to_id == active) {
            rc = el_error_set(err, EL_EPOLICY, "version %lld is already active",
                              (long long)to_id);
            goto fail;
        }
        if (strcmp(state, "good")) {
            rc = el_error_set(err, EL_EPOLICY, "version %lld is %s; rollback goes "
                              "only to a good version", (long long)to_id, state);
            goto fail;
        }
        if ((rc = verify_version(s, to_id, err)))
            goto fail;
        target = to_id;
    } else if (to_id == 0) {
        if ((rc = last_good(s, active, &target, &skipped, err)))
            goto fail;
        if (!target) {
            rc = el_error_set(err, EL_EPOLICY, "no good version to roll back to%s; "
                              "`edgeloop rollback --to base` runs the base model alone",
                              skipped ? " (the good ones have damaged blobs)" : "");
            goto fail;
        }
    }
    if (!active && !target) {
        rc = el_error_set(err, EL_EPOLICY, "nothing is active; the base model already "
                          "runs alone");
        goto fail;
    }
    json_t *figures = json_pack("{s:I}", "skipped_damaged", (json_int_t)skipped);
    if (!figures) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = rollback_locked(s, active, target, reason ? reason : "operator",
                              figures, err)))
        goto fail;
    el_crash_point("rollback.before_commit");
    if ((rc = el_store_commit(s, err)))
        goto fail;
    el_crash_point("rollback.after_commit");
    return 0;
fail:
    el_store_tx_abort(s);
    return rc;
}

int el_store_pin(el_store *s, int64_t id, el_error *err)
{
    int rc = el_store_begin(s, err);
    if (rc)
        return rc;
    int64_t active, pinned, ignored;
    if ((rc = active_row(s, &active, &pinned, err)))
        goto fail;
    if (id && id != active) {
        rc = el_error_set(err, EL_EPOLICY, "version %lld is not the active version "
                          "(%lld); activate it before pinning", (long long)id,
                          (long long)active);
        goto fail;
    }
    if (!id && !pinned) {
        rc = el_error_set(err, EL_EPOLICY, "nothing is pinned");
        goto fail;
    }
    if ((rc = el_store_query_i64(s, "UPDATE active SET pinned = ?1 WHERE id = 1",
                                 id ? 1 : 0, INT64_MIN, 0, &ignored, err)) ||
        (rc = el_store_audit_append(s, id ? "pinned" : "unpinned", active, NULL, err)) ||
        (rc = el_store_commit(s, err)))
        goto fail;
    return 0;
fail:
    el_store_tx_abort(s);
    return rc;
}

static const char *static_state(const char *state)
{
    static const char *const names[] = {"candidate", "probation", "good", "rejected",
                                        "rolled_back", "retired"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(state, names[i]))
            return names[i];
    return "unknown";
}

static int outcome_of(el_store *s, int64_t id, const char **outcome, el_error *err)
{
    char state[16];
    int rc = version_state(s, id, state, NULL, NULL, err);
    if (!rc && outcome)
        *outcome = static_state(state);
    return rc;
}

int el_store_feedback(el_store *s, int64_t version_id, int accept,
                      const char **outcome, el_error *err)
{
    int64_t id = version_id;
    int rc;
    if (!id) {
        if ((rc = el_store_active(s, &id, err)))
            return rc;
        if (!id)
            return el_error_set(err, EL_EPOLICY, "no version is active; name one with "
                                "--version ID");
    }
    char state[16];
    if ((rc = version_state(s, id, state, NULL, NULL, err)))
        return rc;
    if ((rc = el_store_begin(s, err)))
        return rc;
    char figures[64];
    snprintf(figures, sizeof figures, "{\"accept\":%s}", accept ? "true" : "false");
    sqlite3_stmt *st;
    if ((rc = el_store_prepare(s, "INSERT INTO feedback(version_id, accept, at) "
                                  "VALUES(?1, ?2, ?3)", &st, err)))
        goto fail;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int(st, 2, accept ? 1 : 0);
    sqlite3_bind_int64(st, 3, s->now);
    int step = sqlite3_step(st);
    sqlite3_finalize(st);
    if (step != SQLITE_DONE) {
        rc = el_store_sql_fail(s, "recording feedback", err);
        goto fail;
    }
    if ((rc = el_store_audit_append(s, "feedback", id, figures, err)))
        goto fail;
    el_crash_point("feedback.before_commit");
    if ((rc = el_store_commit(s, err)))
        goto fail;
    if ((rc = el_store_probation_apply(s, NULL, err)))
        return rc;
    return outcome_of(s, id, outcome, err);
fail:
    el_store_tx_abort(s);
    return rc;
}

int el_store_health_report(el_store *s, double probe_loss, double ref_loss,
                           const char **outcome, el_error *err)
{
    int64_t active;
    int rc = el_store_active(s, &active, err);
    if (rc)
        return rc;
    char state[16] = "";
    if (active && (rc = version_state(s, active, state, NULL, NULL, err)))
        return rc;
    if (!active || strcmp(state, "probation"))
        return el_error_set(err, EL_EPOLICY, "no version is on probation");
    double probe[2] = {probe_loss, ref_loss};
    if ((rc = el_store_probation_apply(s, probe, err)))
        return rc;
    return outcome_of(s, active, outcome, err);
}

static json_t *real_or_null(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

int el_store_probation_apply(el_store *s, const double *probe, el_error *err)
{
    int rc = el_store_begin(s, err);
    if (rc)
        return rc;
    int64_t active, since = 0, crashes = 0, events = 0;
    char state[16] = "";
    if ((rc = el_store_active(s, &active, err)))
        goto fail;
    if (active && (rc = version_state(s, active, state, NULL, NULL, err)))
        goto fail;
    if (!active || strcmp(state, "probation")) {
        el_store_tx_abort(s);
        return 0;
    }
    const el_store_config *c = &s->cfg;
    el_probation_policy p = {
        .events = c->probation.events, .hours = c->probation.hours,
        .window = c->probation.window, .min_events = c->probation.min_events,
        .max_reject_rate = c->probation.max_reject_rate,
        .max_crashes = c->probation.max_crashes,
        .max_probe_regress = c->probation.max_probe_regress,
    };
    el_probation_input in = {0};
    if ((rc = el_store_query_i64(s, "SELECT probation_since FROM versions WHERE id = ?1",
                                 active, INT64_MIN, 0, &since, err)) ||
        (rc = el_store_query_i64(s, "SELECT crashes FROM versions WHERE id = ?1",
                                 active, INT64_MIN, 0, &crashes, err)) ||
        (rc = el_store_query_i64(s, "SELECT count(*) FROM feedback WHERE version_id = ?1",
                                 active, INT64_MIN, 0, &events, err)) ||
        (rc = el_store_query_i64(s, "SELECT count(*) FROM (SELECT accept FROM feedback "
                                    "WHERE version_id = ?1 ORDER BY id DESC LIMIT ?2)",
                                 active, p.window, 0, &in.window_events, err)) ||
        (rc = el_store_query_i64(s, "SELECT count(*) FROM (SELECT accept FROM feedback "
                                    "WHERE version_id = ?1 ORDER BY id DESC LIMIT ?2) "
                                    "WHERE accept = 0",
                                 active, p.window, 0, &in.window_rejects, err)))
        goto fail;
    in.events = events;
    in.crashes = crashes;
    /* a clock set back does not un-expire anything: elapsed time is >= 0 */
    in.hours = s->now > since ? (double)(s->now - since) / 3600.0 : 0.0;
    if (probe) {
        in.has_probe = 1;
        in.probe_loss = probe[0];
        in.probe_ref_loss = probe[1];
    }
    el_probation_result r;
    el_probation_decide(&p, &in, &r);
    json_t *fig = json_pack("{s:s, s:I, s:I, s:I, s:f, s:I, s:o, s:f, s:f}",
                            "reason", r.reason, "events", (json_int_t)in.events,
                            "window_events", (json_int_t)in.window_events,
                            "window_rejects", (json_int_t)in.window_rejects,
                            "reject_rate", r.reject_rate,
                            "crashes", (json_int_t)in.crashes,
                            "probe_regress", real_or_null(r.probe_regress),
                            "hours", in.hours,
                            "max_reject_rate", p.max_reject_rate);
    if (!fig) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory");
        goto fail;
    }
    if (probe) {
        json_object_set_new(fig, "probe_loss", real_or_null(probe[0]));
        json_object_set_new(fig, "probe_ref_loss", real_or_null(probe[1]));
        json_object_set_new(fig, "max_probe_regress", json_real(p.max_probe_regress));
    }
    if (r.verdict == EL_PROBATION_PASS) {
        char *text = el_store_json_take(fig);
        if (!text) {
            rc = el_error_set(err, EL_ENOMEM, "out of memory");
            goto fail;
        }
        rc = set_state(s, active, "good", NULL, err);
        if (!rc)
            rc = el_store_audit_append(s, "probation_passed", active, text, err);
        free(text);
        int64_t ignored;
        if (rc || (rc = el_store_query_i64(s, "UPDATE sessions SET version_id = NULL "
                                              "WHERE version_id = ?1", active,
                                           INT64_MIN, 0, &ignored, err)))
            goto fail;
    } else if (r.verdict == EL_PROBATION_FAIL) {
        int64_t target, skipped;
        if ((rc = last_good(s, active, &target, &skipped, err))) {
            json_decref(fig);
            goto fail;
        }
        json_object_set_new(fig, "skipped_damaged", json_integer(skipped));
        json_object_set_new(fig, "automatic", json_true());
        if ((rc = rollback_locked(s, active, target, r.reason, fig, err)))
            goto fail;
        el_crash_point("rollback.before_commit");
    } else if (probe) {
        char *text = el_store_json_take(fig);
        if (!text) {
            rc = el_error_set(err, EL_ENOMEM, "out of memory");
            goto fail;
        }
        rc = el_store_audit_append(s, "health_ok", active, text, err);
        free(text);
        if (rc)
            goto fail;
    } else {
        json_decref(fig);
    }
    if ((rc = el_store_commit(s, err)))
        goto fail;
    return 0;
fail:
    el_store_tx_abort(s);
    return rc;
}
