/* agent/store schema 3: the trust state (defaults, round trip, the audit
 * row, refusals of any move backwards, oversize roots, commit/abort of the
 * caller's transaction), the base path accessor, the v2 -> v3 migration of
 * a registry that predates the new tables, and the outbox. */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/error.h"
#include "check.h"
#include "store/store.h"

static char root[256];
static const int64_t T0 = 1800000000;

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

static el_store *open_state(const char *dir, int create)
{
    el_error err;
    el_store *s = NULL;
    el_store_open_opts o = {.create = create, .now = T0};
    int rc = el_store_open(dir, &o, &s, &err);
    CHECK_OK(rc, &err);
    if (rc)
        exit(1);
    return s;
}

static void sql(const char *dir, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/registry.db", dir);
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, text, NULL, NULL, &msg);
    CHECK_MSG(rc == SQLITE_OK, "%s: %s", text, msg ? msg : "");
    sqlite3_free(msg);
    sqlite3_close(db);
}

static int64_t user_version(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/registry.db", dir);
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t v = -1;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void check_equal(el_store *s, const el_store_trust *want)
{
    el_error err;
    el_store_trust t;
    CHECK_OK(el_store_trust_get(s, &t, &err), &err);
    CHECK(t.root_len == want->root_len);
    CHECK(t.root_len == 0 || (t.root && !memcmp(t.root, want->root, t.root_len)));
    CHECK(t.root_version == want->root_version);
    CHECK(t.last_time == want->last_time);
    for (int k = 0; k < EL_STORE_TRUST_KINDS; k++)
        CHECK_MSG(t.counters[k] == want->counters[k], "counter %s: %lld != %lld",
                  el_store_trust_kind_name(k), (long long)t.counters[k],
                  (long long)want->counters[k]);
    el_store_trust_finish(&t);
}

static void test_trust_state(void)
{
    char dir[300], model[300];
    snprintf(dir, sizeof dir, "%s/state", root);
    el_store *s = open_state(dir, 1);
    el_error err;

    /* a fresh registry: not enrolled */
    el_store_trust none = {0};
    check_equal(s, &none);
    CHECK_STR(el_store_trust_kind_name(0), "adapter");
    CHECK_STR(el_store_trust_kind_name(1), "base-model");
    CHECK_STR(el_store_trust_kind_name(2), "policy");
    CHECK(el_store_trust_kind_name(3) == NULL);
    CHECK(el_store_trust_kind_name(-1) == NULL);

    /* round trip, with an audit row that keeps the chain valid */
    uint8_t bytes[300];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (uint8_t)(i * 7 + 1);
    el_store_trust t1 = {.root = bytes, .root_len = sizeof bytes, .root_version = 1,
                         .last_time = T0 - 5, .counters = {3, 0, 1}};
    CHECK_OK(el_store_trust_set(s, &t1, "trust_enrolled", &err), &err);
    check_equal(s, &t1);
    el_store_audit_row *rows;
    size_t n;
    CHECK_OK(el_store_audit_list(s, &rows, &n, &err), &err);
    CHECK(n >= 1 && !strcmp(rows[n - 1].event, "trust_enrolled"));
    CHECK(n >= 1 && strstr(rows[n - 1].figures, "\"root_version\":1") != NULL);
    el_store_audit_list_free(rows, n);
    int64_t checked, bad;
    CHECK_OK(el_store_audit_verify(s, &checked, &bad, &err), &err);

    /* nothing moves backwards; a refusal changes nothing */
    el_store_trust back = t1;
    back.counters[0] = 2;
    CHECK(el_store_trust_set(s, &back, "x", &err) == EL_EPOLICY);
    CHECK(strstr(err.msg, "adapter") != NULL);
    back = t1;
    back.last_time = T0 - 6;
    CHECK(el_store_trust_set(s, &back, "x", &err) == EL_EPOLICY);
    back = t1;
    back.root_version = 0;
    CHECK(el_store_trust_set(s, &back, "x", &err) == EL_EPOLICY);
    check_equal(s, &t1);

    /* an oversize root is refused before anything is written */
    uint8_t *big = el_calloc(EL_STORE_ROOT_MAX + 1, 1);
    CHECK(big != NULL);
    back = t1;
    back.root = big;
    back.root_len = EL_STORE_ROOT_MAX + 1;
    CHECK(el_store_trust_set(s, &back, NULL, &err) == EL_EINPUT);
    el_free(big);
    check_equal(s, &t1);

    /* inside the caller's transaction: abort undoes, commit keeps */
    el_store_trust t2 = t1;
    t2.root_version = 2;
    t2.last_time = T0;
    t2.counters[1] = 9;
    CHECK_OK(el_store_transaction_begin(s, &err), &err);
    CHECK_OK(el_store_trust_set(s, &t2, "root_rotated", &err), &err);
    el_store_transaction_abort(s);
    check_equal(s, &t1);
    CHECK_OK(el_store_transaction_begin(s, &err), &err);
    CHECK_OK(el_store_trust_set(s, &t2, NULL, &err), &err);
    CHECK_OK(el_store_transaction_commit(s, &err), &err);
    check_equal(s, &t2);

    /* base path accessor */
    snprintf(model, sizeof model, "%s/model", root);
    mkdir(model, 0755);
    write_file(model, "config.json", "{\"vocab_size\": 259}");
    write_file(model, "model.safetensors", "weights");
    int64_t id;
    CHECK_OK(el_store_base_register(s, model, &id, &err), &err);
    char path[600];
    CHECK_OK(el_store_base_path(s, id, path, sizeof path, &err), &err);
    CHECK(strstr(path, "/model") != NULL);
    CHECK(el_store_base_path(s, id + 100, path, sizeof path, &err) == EL_ENOTFOUND);
    char tiny[4];
    CHECK(el_store_base_path(s, id, tiny, sizeof tiny, &err) == EL_EINPUT);

    /* survives a reopen */
    el_store_close(s);
    s = open_state(dir, 0);
    check_equal(s, &t2);
    el_store_close(s);
}

/* A schema-2 registry (as edgeloop wrote it before the trust tables) is
 * migrated to 3 on open: the tables appear with the not-enrolled state and
 * everything else is kept. */
static void test_migration_v2(void)
{
    char dir[300];
    snprintf(dir, sizeof dir, "%s/state-v2", root);
    el_store *s = open_state(dir, 1);
    el_store_close(s);
    sql(dir, "DROP TABLE trust; DROP TABLE trust_counters; DROP TABLE outbox; "
             "PRAGMA user_version = 2");
    CHECK(user_version(dir) == 2);
    s = open_state(dir, 0);
    CHECK(user_version(dir) == EL_STORE_SCHEMA_VERSION);
    /* through 3 to 4 (the base rehash; no base is registered here) */
    CHECK(EL_STORE_SCHEMA_VERSION == 4);
    el_store_trust none = {0};
    check_equal(s, &none);
    el_error err;
    el_store_trust t = {.root_version = 1, .last_time = T0, .counters = {0, 0, 4}};
    CHECK_OK(el_store_trust_set(s, &t, NULL, &err), &err);
    check_equal(s, &t);
    el_store_fsck r;
    CHECK_OK(el_store_check(s, &r, &err), &err);
    el_store_close(s);
}

/* The outbox: queue (blob durable, row), duplicate no-op, the size cap,
 * retry bookkeeping, gc keeps pending blobs and frees sent ones. */
static void test_outbox(void)
{
    char dir[300], model[300], adapter[300];
    snprintf(dir, sizeof dir, "%s/state-outbox", root);
    mkdir(dir, 0755);
    write_file(dir, "edgeloop.conf", "[sync]\noutbox_max_mb = 1\n");
    el_store *s = open_state(dir, 1);
    el_error err;
    snprintf(model, sizeof model, "%s/model-o", root);
    mkdir(model, 0755);
    write_file(model, "config.json", "{\"vocab_size\": 259}");
    write_file(model, "model.safetensors", "weights");
    int64_t base, v;
    CHECK_OK(el_store_base_register(s, model, &base, &err), &err);
    snprintf(adapter, sizeof adapter, "%s/adapter-o", root);
    mkdir(adapter, 0755);
    write_file(adapter, "adapter_config.json", "{\"r\": 1}");
    {
        /* an empty safetensors file: u64 LE header length 8, "{}" padded */
        static const char st[] = "\x08\x00\x00\x00\x00\x00\x00\x00{}      ";
        char path[400];
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", adapter);
        FILE *f = fopen(path, "wb");
        CHECK(f != NULL);
        if (f) {
            fwrite(st, 1, sizeof st - 1, f);
            fclose(f);
        }
    }
    el_store_candidate c = {.origin = "imported"};
    CHECK_OK(el_store_candidate_create(s, &c, adapter, &v, &err), &err);

    const char *id1 = "1111111111111111111111111111111111111111111111111111111111111111";
    const char *id2 = "2222222222222222222222222222222222222222222222222222222222222222";
    uint8_t small[100], *big = el_calloc(1024 * 1024, 1);
    CHECK(big != NULL);
    memset(small, 0x5a, sizeof small);
    CHECK(el_store_outbox_has(s, v, &err) == 0);
    CHECK_OK(el_store_outbox_add(s, v, id1, small, sizeof small, &err), &err);
    CHECK_OK(el_store_outbox_add(s, v, id1, small, sizeof small, &err), &err);
    CHECK(el_store_outbox_has(s, v, &err) == 1);
    CHECK(el_store_outbox_add(s, v + 1, id2, small, sizeof small, &err) == EL_ENOTFOUND);
    CHECK(el_store_outbox_add(s, v, "nothex", small, sizeof small, &err) == EL_EINPUT);
    /* 100 bytes pending + 1 MiB is over the 1 MiB cap: refused, nothing queued */
    CHECK(el_store_outbox_add(s, v, id2, big, 1024 * 1024, &err) == EL_ENOSPC);
    el_free(big);
    el_store_outbox_entry *e;
    size_t n;
    CHECK_OK(el_store_outbox_list(s, &e, &n, &err), &err);
    CHECK(n == 1);
    if (n == 1) {
        CHECK_STR(e[0].bundle_id, id1);
        CHECK(e[0].size == (int64_t)sizeof small && e[0].attempts == 0);
        uint8_t *bytes;
        size_t len;
        CHECK_OK(el_store_blob_read(s, e[0].blob, &bytes, &len, &err), &err);
        CHECK(len == sizeof small && !memcmp(bytes, small, len));
        el_free(bytes);
    }
    char blob[65];
    snprintf(blob, sizeof blob, "%s", n ? e[0].blob : "");
    el_free(e);
    CHECK_OK(el_store_outbox_retry(s, id1, T0 + 60, &err), &err);
    CHECK_OK(el_store_outbox_list(s, &e, &n, &err), &err);
    CHECK(n == 1 && e[0].attempts == 1 && e[0].next_at == T0 + 60);
    el_free(e);
    CHECK(el_store_outbox_retry(s, id2, T0, &err) == EL_ENOTFOUND);

    /* gc keeps a pending bundle's blob ... */
    el_store_gc_stats gs;
    CHECK_OK(el_store_gc(s, 0, &gs, &err), &err);
    uint8_t *bytes = NULL;
    size_t len;
    CHECK_OK(el_store_blob_read(s, blob, &bytes, &len, &err), &err);
    el_free(bytes);
    /* ... and frees it once sent; the row stays (no second upload) */
    CHECK_OK(el_store_outbox_sent(s, id1, &err), &err);
    CHECK(el_store_outbox_sent(s, id1, &err) == EL_ENOTFOUND);
    CHECK_OK(el_store_gc(s, 0, &gs, &err), &err);
    CHECK(el_store_blob_read(s, blob, &bytes, &len, &err) == EL_ENOTFOUND);
    CHECK(el_store_outbox_has(s, v, &err) == 1);
    CHECK_OK(el_store_outbox_list(s, &e, &n, &err), &err);
    CHECK(n == 0);
    el_free(e);
    el_store_fsck r;
    CHECK_OK(el_store_check(s, &r, &err), &err);
    el_store_close(s);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/el-test-trust-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    test_trust_state();
    test_migration_v2();
    test_outbox();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
    return el_test_done("test_store_trust");
}
