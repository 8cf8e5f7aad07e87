/* The hub's embedded store (store_sqlite.c) through its operations table:
 * device_seen coalescing (note 4: a repeat within EL_HUB_SEEN_GRANULARITY
 * seconds with the same group and serial is not written; a changed group or
 * serial, or an older record, is), a bundle or release recording its
 * rebuilt adapter in the same transaction (note 5), idempotently, small
 * blobs as rows and large ones as files (note 6), read whole and by range,
 * and a schema-1 store migrated to schema 2 (its file blobs still read). */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "base/sha256.h"
#include "check.h"
#include "store.h"

static int64_t last_seen(el_hub_store *st, const char *device, const char **group)
{
    el_error err = {0};
    json_t *row = NULL;
    CHECK_OK(st->ops->device_get(st, device, &row, &err), &err);
    int64_t seen = row ? json_integer_value(json_object_get(row, "last_seen")) : -1;
    static char grp[64];
    snprintf(grp, sizeof grp, "%s", row ? json_string_value(json_object_get(row, "group")) : "");
    *group = grp;
    json_decref(row);
    return seen;
}

static void test_device_seen(el_hub_store *st)
{
    el_error err = {0};
    const char *group;
    const int64_t g = EL_HUB_SEEN_GRANULARITY;
    CHECK_OK(st->ops->device_seen(st, "dev-a", "line-a", "01", 1000, &err), &err);
    CHECK(last_seen(st, "dev-a", &group) == 1000);
    /* within the granularity: not written again */
    CHECK_OK(st->ops->device_seen(st, "dev-a", "line-a", "01", 1000 + g - 1, &err), &err);
    CHECK(last_seen(st, "dev-a", &group) == 1000);
    /* a new group or serial is written at once */
    CHECK_OK(st->ops->device_seen(st, "dev-a", "line-b", "01", 1001, &err), &err);
    CHECK(last_seen(st, "dev-a", &group) == 1001 && !strcmp(group, "line-b"));
    CHECK_OK(st->ops->device_seen(st, "dev-a", "line-b", "02", 1002, &err), &err);
    CHECK(last_seen(st, "dev-a", &group) == 1002);
    /* after the granularity it is written again */
    CHECK_OK(st->ops->device_seen(st, "dev-a", "line-b", "02", 1002 + g, &err), &err);
    CHECK(last_seen(st, "dev-a", &group) == 1002 + g);
    /* another device is its own record */
    CHECK_OK(st->ops->device_seen(st, "dev-b", "line-a", "03", 1003, &err), &err);
    CHECK(last_seen(st, "dev-b", &group) == 1003);
    CHECK(last_seen(st, "dev-a", &group) == 1002 + g);
    /* a status report sets last_seen exactly, whatever device_seen skipped */
    CHECK_OK(st->ops->status_put(st, "dev-a", 1, "aa", "{}", 1002 + g + 5, &err), &err);
    CHECK(last_seen(st, "dev-a", &group) == 1002 + g + 5);
}

static void fill(char *out, char c)
{
    memset(out, c, 64);
    out[64] = '\0';
}

/* 1 when blob SHA is a file under DIR/blobs/sha256. */
static int blob_file_exists(const char *dir, const char *sha)
{
    char path[600];
    snprintf(path, sizeof path, "%s/blobs/sha256/%.2s/%s", dir, sha, sha + 2);
    FILE *f = fopen(path, "rb");
    if (f)
        fclose(f);
    return f != NULL;
}

static void check_blob(el_hub_store *st, const char *sha, const uint8_t *want, size_t len)
{
    el_error err = {0};
    uint64_t size = 0;
    CHECK_OK(st->ops->blob_size(st, sha, &size, &err), &err);
    CHECK(size == len);
    uint8_t *back = malloc(len + 1);
    CHECK_OK(st->ops->blob_read(st, sha, 0, len, back, &err), &err);
    CHECK(!memcmp(back, want, len));
    /* a range, as GET /v1/blobs with Range reads it */
    CHECK_OK(st->ops->blob_read(st, sha, len / 3, len / 2, back, &err), &err);
    CHECK(!memcmp(back, want + len / 3, len / 2));
    CHECK(st->ops->blob_read(st, sha, len - 1, 2, back, &err) != 0);   /* past the end */
    free(back);
}

static void bundle_rec(el_hub_bundle_rec *rec, char id, char result)
{
    memset(rec, 0, sizeof *rec);
    fill(rec->id, id);
    snprintf(rec->device, sizeof rec->device, "dev-a");
    fill(rec->parent, '3');
    fill(rec->result, result);
    fill(rec->base, '5');
    snprintf(rec->encoding, sizeof rec->encoding, "lora-delta-q8");
}

/* Small blobs are rows written with the bundle (note 6), large ones files;
 * both read back whole and by range; the rebuilt adapter is recorded with
 * the row (note 5), idempotently. */
static void test_bundles_and_blobs(el_hub_store *st, const char *dir)
{
    el_error err = {0};
    char blob[EL_HUB_ID_MAX];
    const size_t small_len = 6000, large_len = 200000;
    uint8_t *small = malloc(small_len), *large = malloc(large_len), *adapter = malloc(small_len);
    for (size_t i = 0; i < large_len; i++)
        large[i] = (uint8_t)(i * 7 + i / 251);
    for (size_t i = 0; i < small_len; i++) {
        small[i] = (uint8_t)(i * 13 + 1);
        adapter[i] = (uint8_t)(i * 5 + 2);
    }
    el_hub_bundle_rec rec;
    bundle_rec(&rec, '1', '4');
    CHECK(st->ops->adapter_get(st, rec.result, blob, &err) == EL_ENOTFOUND);
    int created = 0;
    CHECK_OK(st->ops->bundle_put(st, &rec, small, small_len, adapter, small_len, &created, &err),
             &err);
    CHECK(created == 1 && rec.seq > 0);
    CHECK(strlen(rec.blob) == 64 && strlen(rec.adapter_blob) == 64);
    CHECK(!blob_file_exists(dir, rec.blob) && !blob_file_exists(dir, rec.adapter_blob));
    check_blob(st, rec.blob, small, small_len);
    check_blob(st, rec.adapter_blob, adapter, small_len);
    CHECK_OK(st->ops->adapter_get(st, rec.result, blob, &err), &err);
    CHECK(!strcmp(blob, rec.adapter_blob));
    el_hub_bundle_rec held;
    CHECK_OK(st->ops->bundle_get(st, rec.id, &held, &err), &err);
    CHECK(!strcmp(held.blob, rec.blob));
    /* the same id again: nothing changes */
    CHECK_OK(st->ops->bundle_put(st, &rec, small, small_len, adapter, small_len, &created, &err),
             &err);
    CHECK(created == 0);

    /* a large bundle is a file; without an adapter none is recorded */
    bundle_rec(&rec, '6', '7');
    CHECK_OK(st->ops->bundle_put(st, &rec, large, large_len, NULL, 0, &created, &err), &err);
    CHECK(created == 1 && rec.adapter_blob[0] == '\0');
    CHECK(blob_file_exists(dir, rec.blob));
    check_blob(st, rec.blob, large, large_len);
    CHECK(st->ops->adapter_get(st, rec.result, blob, &err) == EL_ENOTFOUND);

    /* blob_put on its own: small as a row, large as a file */
    char sha[EL_HUB_ID_MAX];
    CHECK_OK(st->ops->blob_put(st, small, small_len / 2, sha, &err), &err);
    CHECK(!blob_file_exists(dir, sha));
    check_blob(st, sha, small, small_len / 2);
    large[0] ^= 1;
    CHECK_OK(st->ops->blob_put(st, large, large_len, sha, &err), &err);
    CHECK(blob_file_exists(dir, sha));
    check_blob(st, sha, large, large_len);
    uint64_t size;
    fill(sha, 'f');
    CHECK(st->ops->blob_size(st, sha, &size, &err) == EL_ENOTFOUND);

    el_hub_release_rec rel;
    memset(&rel, 0, sizeof rel);
    fill(rel.id, '8');
    snprintf(rel.kind, sizeof rel.kind, "adapter");
    rel.counter = 1;
    snprintf(rel.target, sizeof rel.target, "*");
    rel.expires = 4000000000;
    fill(rel.adapter, 'a');
    CHECK_OK(st->ops->release_put(st, &rel, small, small_len - 1, large, large_len, &created,
                                  &err),
             &err);
    CHECK(created == 1);
    CHECK(!blob_file_exists(dir, rel.blob) && blob_file_exists(dir, rel.adapter_blob));
    CHECK_OK(st->ops->adapter_get(st, rel.adapter, blob, &err), &err);
    CHECK(!strcmp(blob, rel.adapter_blob));
    check_blob(st, rel.adapter_blob, large, large_len);
    free(small);
    free(large);
    free(adapter);
}

/* Group commit (note 7): writers on many threads at once, each write
 * durable and with its own result; a refused write (an audit head going
 * back) fails alone while the writes batched with it commit. */
#define GC_THREADS 8
#define GC_ROUNDS 40

typedef struct gc_arg {
    el_hub_store *st;
    int index;
    int failures;      /* writes that should have succeeded and did not */
    int refused;       /* going-back heads refused, as they must be */
    int created;
} gc_arg;

static void *gc_writer(void *p)
{
    gc_arg *a = p;
    char device[32], hash[65];
    snprintf(device, sizeof device, "gc-dev-%d", a->index);
    for (int i = 1; i <= GC_ROUNDS; i++) {
        el_error err = {0};
        snprintf(hash, sizeof hash, "%064d", i);
        if (a->st->ops->status_put(a->st, device, i, hash, "{}", 2000 + i, &err))
            a->failures++;
        /* a head going back, refused whatever it is batched with */
        if (i % 10 == 0) {
            snprintf(hash, sizeof hash, "%064d", i - 5);
            if (a->st->ops->status_put(a->st, device, i - 5, hash, "{}", 2000 + i, &err) ==
                EL_EPOLICY)
                a->refused++;
        }
        el_hub_bundle_rec rec;
        memset(&rec, 0, sizeof rec);
        snprintf(rec.id, sizeof rec.id, "%032d%032d", a->index, i);
        snprintf(rec.device, sizeof rec.device, "%s", device);
        snprintf(rec.result, sizeof rec.result, "%032d%032d", a->index + 100, i);
        snprintf(rec.encoding, sizeof rec.encoding, "lora-delta-q8");
        char bytes[64], adapter[64];
        snprintf(bytes, sizeof bytes, "bundle %d %d", a->index, i);
        snprintf(adapter, sizeof adapter, "adapter %d %d", a->index, i);
        int created = 0;
        if (a->st->ops->bundle_put(a->st, &rec, bytes, strlen(bytes), adapter, strlen(adapter),
                                   &created, &err) ||
            rec.seq <= 0)
            a->failures++;
        a->created += created;
        if (a->st->ops->device_seen(a->st, device, "line-a", "01", 2000 + i, &err))
            a->failures++;
    }
    return NULL;
}

static void test_group_commit(el_hub_store *st)
{
    uint64_t commits0, writes0, commits, writes;
    st->ops->write_stats(st, &commits0, &writes0);
    pthread_t t[GC_THREADS];
    gc_arg a[GC_THREADS];
    for (int i = 0; i < GC_THREADS; i++) {
        a[i] = (gc_arg){st, i, 0, 0, 0};
        CHECK(pthread_create(&t[i], NULL, gc_writer, &a[i]) == 0);
    }
    for (int i = 0; i < GC_THREADS; i++) {
        pthread_join(t[i], NULL);
        CHECK(a[i].failures == 0);
        CHECK(a[i].refused == GC_ROUNDS / 10);
        CHECK(a[i].created == GC_ROUNDS);
    }
    /* each status, bundle and new device record is one write; refused
     * heads are not; the commits held them all */
    st->ops->write_stats(st, &commits, &writes);
    CHECK(writes - writes0 == (uint64_t)GC_THREADS * (2 * GC_ROUNDS + 1));
    CHECK(commits - commits0 >= 1 && commits - commits0 <= writes - writes0);
    printf("group commit: %llu writes in %llu commits\n",
           (unsigned long long)(writes - writes0), (unsigned long long)(commits - commits0));
    el_error err = {0};
    for (int i = 0; i < GC_THREADS; i++) {
        char device[32];
        snprintf(device, sizeof device, "gc-dev-%d", i);
        json_t *row = NULL;
        CHECK_OK(st->ops->device_get(st, device, &row, &err), &err);
        CHECK(json_integer_value(json_object_get(row, "audit_seq")) == GC_ROUNDS);
        json_decref(row);
        json_t *versions = NULL;
        CHECK_OK(st->ops->versions(st, device, &versions, &err), &err);
        json_t *list = json_is_array(versions) ? versions
                                               : json_object_get(versions, "versions");
        CHECK(json_array_size(list) == GC_ROUNDS);
        json_decref(versions);
    }
}

/* The schema-1 file layout, as hubs before small blobs wrote it. */
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
    "CREATE TABLE adapters(digest TEXT PRIMARY KEY, blob TEXT NOT NULL);"
    "PRAGMA user_version = 1;";

/* A schema-1 store (every blob a file) opens migrated to schema 2: its rows
 * and file blobs read as before, new small blobs are rows; a store newer
 * than this hub is refused. */
static void test_migration(void)
{
    char dir[] = "/tmp/el-test-hub-v1-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[600], cmd[700];
    const char content[] = "a version-1 bundle file";
    char sha[65];
    el_sha256_hex(content, sizeof content, sha);
    snprintf(path, sizeof path, "%s/blobs/sha256/%.2s", dir, sha);
    el_error err = {0};
    CHECK_OK(el_fs_mkdirs(path, 0755, &err), &err);
    snprintf(path, sizeof path, "%s/blobs/sha256/%.2s/%s", dir, sha, sha + 2);
    CHECK_OK(el_fs_write_atomic(path, content, sizeof content, 0644, &err), &err);
    snprintf(path, sizeof path, "%s/hub.db", dir);
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, schema_v1, NULL, NULL, NULL) == SQLITE_OK);
    char sql[1200];
    snprintf(sql, sizeof sql,
             "INSERT INTO bundles(id, device, blob, size, parent, result, base, encoding,"
             " received) VALUES('%064d', 'dev-a', '%s', %zu, '', '%064d', '', 'lora-delta-q8',"
             " 1)",
             1, sha, sizeof content, 2);
    CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);

    el_hub_store *st = NULL;
    CHECK_OK(el_hub_store_sqlite_open(dir, &st, &err), &err);
    if (st) {
        el_hub_bundle_rec rec;
        char id[65];
        snprintf(id, sizeof id, "%064d", 1);
        CHECK_OK(st->ops->bundle_get(st, id, &rec, &err), &err);
        CHECK(!strcmp(rec.blob, sha));
        check_blob(st, sha, (const uint8_t *)content, sizeof content);
        char small[EL_HUB_ID_MAX];
        CHECK_OK(st->ops->blob_put(st, "new", 3, small, &err), &err);
        CHECK(!blob_file_exists(dir, small));
        st->ops->destroy(st);
    }
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_stmt *stmt = NULL;
    CHECK(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_int(stmt, 0) == 2);
    sqlite3_finalize(stmt);
    CHECK(sqlite3_exec(db, "PRAGMA user_version = 3", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    st = NULL;
    CHECK(el_hub_store_sqlite_open(dir, &st, &err) == EL_EINPUT);
    CHECK(st == NULL && strstr(err.msg, "newer"));
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

int main(void)
{
    char dir[] = "/tmp/el-test-hub-store-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    el_error err = {0};
    el_hub_store *st = NULL;
    CHECK_OK(el_hub_store_sqlite_open(dir, &st, &err), &err);
    if (st) {
        test_device_seen(st);
        test_bundles_and_blobs(st, dir);
        test_group_commit(st);
        st->ops->destroy(st);
    }
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    test_migration();
    return el_test_done("test_hub_store");
}
