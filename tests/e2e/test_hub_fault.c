/* Faults and offline paths of edgeloop-hub: the hub killed mid-upload (at
 * the instant its blob files are durable and the transaction with the rows
 * is not yet committed) and
 * restarted, with the client retrying under jittered backoff until the hub
 * holds exactly one copy; a download cut mid-way and resumed with Range (and
 * a corrupt partial file refused and restarted); `edgeloop-hub import` with
 * the same checks as an upload, and its system calls in crash-safe order
 * (strace); kill -9 while six devices write at once (group commit): every
 * acknowledged write survives, once; SIGTERM with an idle keep-alive
 * connection open.
 * argv[1]: the edgeloop-hub executable. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/sha256.h"
#include "check.h"
#include "client.h"
#include "fleetkit.h"

#define DAY 86400

static el_fleetkit fleet;
static const char *hub_exe;

static el_client *client_for(const char *name, char *paths, size_t n)
{
    el_client_opts o;
    el_client *c = NULL;
    el_error err = {0};
    el_fleetkit_client_opts(&fleet, name, &o, paths, n);
    CHECK_OK(el_client_create(&o, &c, &err), &err);
    return c;
}

static int count_versions(void)
{
    char paths[2100];
    el_client *admin = client_for("admin", paths, sizeof paths);
    el_http_msg resp;
    el_error err = {0};
    el_http_msg_init(&resp);
    int n = -1;
    if (admin && el_client_request(admin, "GET", "/v1/versions?device=dev-1", NULL, NULL, 0,
                                   &resp, &err) == 0 &&
        resp.status == 200) {
        json_t *doc = json_loads((const char *)resp.body, 0, NULL);
        n = (int)json_array_size(json_object_get(doc, "versions"));
        json_decref(doc);
    }
    el_http_msg_finish(&resp);
    el_client_destroy(admin);
    return n;
}

static void test_crash_mid_upload(const uint8_t *bundle, size_t len, const char *id)
{
    CHECK(el_fleetkit_start_hub(&fleet, hub_exe, NULL, "hub.upload.before_commit") == 0);
    char paths[2100];
    el_client *dev = client_for("dev1", paths, sizeof paths);
    el_error err = {0};
    int created = -1;
    int rc = el_client_upload_bundle(dev, id, bundle, len, &created, &err);
    CHECK_MSG(rc == EL_EIO, "upload through a crashing hub: rc=%d %s", rc, err.msg);
    int status = el_fleetkit_stop_hub(&fleet, SIGKILL);
    CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "hub status 0x%x", status);

    /* restarted on the same port: the half-done upload is not visible ... */
    fleet.fixed_port = fleet.hub_port;
    CHECK(el_fleetkit_start_hub(&fleet, hub_exe, NULL, NULL) == 0);
    el_client_disconnect(dev);
    CHECK(count_versions() == 0);
    /* ... and the device's retry loop lands it exactly once */
    uint64_t seed = 42;
    rc = -1;
    for (unsigned attempt = 0; attempt < 5 && rc; attempt++) {
        rc = el_client_upload_bundle(dev, id, bundle, len, &created, &err);
        if (rc)
            usleep((useconds_t)el_client_backoff_ms(attempt, 50, 400, &seed) * 1000);
    }
    CHECK_OK(rc, &err);
    CHECK(created == 1);
    rc = el_client_upload_bundle(dev, id, bundle, len, &created, &err);
    CHECK_OK(rc, &err);
    CHECK(created == 0);
    CHECK(count_versions() == 1);
    el_client_destroy(dev);
}

/* kill -9 while several devices write at once (group commit batches their
 * statuses and uploads): after a restart every write the hub acknowledged
 * is there, nothing is there twice, and each device's retry finishes its
 * chain. Run twice: killed once 10 and once 35 of the 60 uploads were
 * acknowledged, with the others in flight. */
#define KW_DEVICES 6
#define KW_DELTAS 10

typedef struct kw_device {
    char name[16], cn[16];
    el_crypto_key *key;
    uint8_t *bundles[KW_DELTAS];
    size_t lens[KW_DELTAS];
    char ids[KW_DELTAS][65];
    int acked;          /* bundles the hub acknowledged, in order */
    int64_t seq;        /* the last status seq acknowledged */
    el_client *client;
    char paths[2100];
} kw_device;

static atomic_int kw_total;   /* uploads acknowledged, all devices */

static void *kw_writer(void *p)
{
    kw_device *d = p;
    for (int k = d->acked; k < KW_DELTAS; k++) {
        el_error err = {0};
        char hash[65];
        int created;
        snprintf(hash, sizeof hash, "%064lld", (long long)d->seq + 1);
        json_t *st = el_fleetkit_status_signed(d->key, d->cn, d->seq + 1, hash);
        int rc = el_client_post_status(d->client, st, &err);
        json_decref(st);
        if (rc)
            break;
        d->seq++;
        if (el_client_upload_bundle(d->client, d->ids[k], d->bundles[k], d->lens[k], &created,
                                    &err))
            break;
        d->acked = k + 1;
        atomic_fetch_add(&kw_total, 1);
    }
    return NULL;
}

/* GET /v1/devices/CN (FIELD of the device) or /v1/versions?device=CN (FIELD
 * NULL: how many versions) as admin; -1 when the request fails. */
static int64_t device_query(el_client *admin, const char *cn, const char *field)
{
    char target[128];
    json_t *doc = NULL;
    el_error err = {0};
    snprintf(target, sizeof target, field ? "/v1/devices/%s" : "/v1/versions?device=%s", cn);
    if (el_client_get_json(admin, target, &doc, &err))
        return -1;
    json_t *row = json_object_get(doc, "device");
    int64_t v = field ? json_integer_value(json_object_get(row ? row : doc, field))
                      : (int64_t)json_array_size(json_object_get(doc, "versions"));
    json_decref(doc);
    return v;
}

static void test_kill_during_writes(void)
{
    int64_t now = fleet.now;
    kw_device d[KW_DEVICES];
    memset(d, 0, sizeof d);
    for (int i = 0; i < KW_DEVICES; i++) {
        snprintf(d[i].name, sizeof d[i].name, "kw%d", i);
        snprintf(d[i].cn, sizeof d[i].cn, "kw-%d", i);
        el_fleetkit_issue(&fleet, d[i].name, d[i].cn, "device", "line-a", now - DAY,
                          now + 90 * DAY, 0, NULL);
        d[i].key = el_fleetkit_key(&fleet, d[i].name);
        el_delta_set prev = {0};
        for (int k = 0; k < KW_DELTAS; k++) {
            el_delta_set next = {0}, rebuilt = {0};
            el_fleetkit_adapter(&next, 32, 1, 0.02f, (uint64_t)(i * 100 + k + 500));
            el_fleetkit_delta(&fleet, d[i].name, &next, k ? &prev : NULL, EL_DELTA_Q8,
                              &d[i].bundles[k], &d[i].lens[k], d[i].ids[k], &rebuilt);
            el_delta_set_finish(&next);
            el_delta_set_finish(&prev);
            prev = rebuilt;
        }
        el_delta_set_finish(&prev);
    }
    const int kill_after[] = {10, 35};
    for (int round = 0; round < 2; round++) {
        fleet.fixed_port = 0;
        CHECK(el_fleetkit_start_hub(&fleet, hub_exe, NULL, NULL) == 0);
        pthread_t t[KW_DEVICES];
        atomic_store(&kw_total, 0);
        for (int i = 0; i < KW_DEVICES; i++) {
            d[i].client = client_for(d[i].name, d[i].paths, sizeof d[i].paths);
            CHECK(pthread_create(&t[i], NULL, kw_writer, &d[i]) == 0);
        }
        for (int waited = 0; atomic_load(&kw_total) < kill_after[round] && waited < 60000;
             waited++)
            usleep(1000);
        int status = el_fleetkit_stop_hub(&fleet, SIGKILL);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        for (int i = 0; i < KW_DEVICES; i++)
            pthread_join(t[i], NULL);

        /* restarted: every acknowledged write is there, once */
        fleet.fixed_port = fleet.hub_port;
        CHECK(el_fleetkit_start_hub(&fleet, hub_exe, NULL, NULL) == 0);
        char apaths[2100];
        el_client *admin = client_for("admin", apaths, sizeof apaths);
        int acked = 0;
        for (int i = 0; i < KW_DEVICES; i++) {
            acked += d[i].acked;
            int held = (int)device_query(admin, d[i].cn, NULL);
            CHECK_MSG(held >= d[i].acked && held <= d[i].acked + 1,
                      "%s: %d acknowledged, %d held", d[i].cn, d[i].acked, held);
            if (d[i].seq)
                CHECK_MSG(device_query(admin, d[i].cn, "audit_seq") >= d[i].seq,
                          "%s: status %lld acknowledged", d[i].cn, (long long)d[i].seq);
            for (int k = 0; k < d[i].acked; k++) {
                int created = -1;
                el_error err = {0};
                el_client_disconnect(d[i].client);
                CHECK_OK(el_client_upload_bundle(d[i].client, d[i].ids[k], d[i].bundles[k],
                                                 d[i].lens[k], &created, &err),
                         &err);
                CHECK(created == 0);
            }
        }
        printf("kill -9 at %d acknowledged uploads: %d of %d acknowledged in the end\n",
               kill_after[round], acked, KW_DEVICES * KW_DELTAS);
        CHECK(acked >= kill_after[round] && acked < KW_DEVICES * KW_DELTAS);
        /* each device's retry finishes its chain */
        for (int i = 0; i < KW_DEVICES; i++) {
            el_client_disconnect(d[i].client);
            kw_writer(&d[i]);
            CHECK(d[i].acked == KW_DELTAS);
            CHECK((int)device_query(admin, d[i].cn, NULL) == KW_DELTAS);
            el_client_destroy(d[i].client);
            d[i].client = NULL;
        }
        el_client_destroy(admin);
        el_fleetkit_stop_hub(&fleet, SIGTERM);
        /* the next round starts over on a fresh store */
        char cmd[800];
        snprintf(cmd, sizeof cmd, "rm -rf %s/data", fleet.dir);
        CHECK(system(cmd) == 0);
        for (int i = 0; i < KW_DEVICES; i++) {
            d[i].acked = 0;
            d[i].seq = 0;
        }
    }
    for (int i = 0; i < KW_DEVICES; i++) {
        el_crypto_key_destroy(d[i].key);
        for (int k = 0; k < KW_DELTAS; k++)
            el_free(d[i].bundles[k]);
    }
}

static void test_download_resume(const uint8_t *bundle, size_t len, const char *blob)
{
    char paths[2100], path[700], part[720];
    el_client *dev = client_for("dev1", paths, sizeof paths);
    el_error err = {0};
    el_fleetkit_path(&fleet, "download.elb", path, sizeof path);
    snprintf(part, sizeof part, "%s.part", path);
    /* a download cut after its first half: the partial file is what the
     * client keeps, and it asks only for the rest */
    CHECK(el_fs_write_atomic(part, bundle, len / 2, 0644, &err) == 0);
    int rc = el_client_download_blob(dev, blob, path, &err);
    CHECK_OK(rc, &err);
    uint8_t *got = NULL;
    size_t glen = 0;
    el_fs_read_file(path, 64 << 20, &got, &glen, NULL);
    CHECK(got && glen == len && !memcmp(got, bundle, len));
    el_free(got);
    CHECK(!el_fs_exists(part));

    /* a corrupt partial file: refused by the hash, removed, then a clean
     * retry succeeds */
    unlink(path);
    uint8_t *bad = el_malloc(len / 2);
    memcpy(bad, bundle, len / 2);
    bad[len / 4] ^= 0xff;
    CHECK(el_fs_write_atomic(part, bad, len / 2, 0644, &err) == 0);
    el_free(bad);
    rc = el_client_download_blob(dev, blob, path, &err);
    CHECK(rc == EL_ETRUST && !strcmp(err.tag, "bad_signature"));
    CHECK(!el_fs_exists(part) && !el_fs_exists(path));
    rc = el_client_download_blob(dev, blob, path, &err);
    CHECK_OK(rc, &err);

    /* the hub answered the resumed piece with 206 */
    char apaths[2100];
    el_client *admin = client_for("admin", apaths, sizeof apaths);
    el_http_msg resp;
    el_http_msg_init(&resp);
    if (admin && el_client_request(admin, "GET", "/metrics", NULL, NULL, 0, &resp, &err) == 0)
        CHECK(strstr((const char *)resp.body,
                     "edgeloop_hub_requests_total{route=\"blob\",code=\"206\"}") != NULL);
    el_http_msg_finish(&resp);
    el_client_destroy(admin);
    el_client_destroy(dev);
}

static void test_sigterm_idle(void)
{
    /* an idle keep-alive connection must not hold the shutdown */
    char paths[2100];
    el_client *dev = client_for("dev1", paths, sizeof paths);
    json_t *list = NULL;
    el_error err = {0};
    CHECK_OK(el_client_releases(dev, 0, &list, &err), &err);
    json_decref(list);
    int status = el_fleetkit_stop_hub(&fleet, SIGTERM);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "hub status 0x%x", status);
    el_client_destroy(dev);
}

/* Runs edgeloop-hub import FILE; returns its exit status. */
static int run_import(const char *file)
{
    char cmd[4096];
    const char *d = fleet.dir;
    snprintf(cmd, sizeof cmd,
             "'%s' import '%s' --ca %s/ca.crt --root %s/root.elb --data %s/data "
             ">>%s/import.log 2>&1",
             hub_exe, file, d, d, d, d);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_import(void)
{
    el_delta_set v = {0};
    el_fleetkit_adapter(&v, 32, 1, 0.02f, 77);
    uint8_t *bytes;
    size_t len;
    char id[65], path[700], bad_path[700];
    el_fleetkit_delta(&fleet, "dev1", &v, NULL, EL_DELTA_Q8, &bytes, &len, id, NULL);
    el_fleetkit_path(&fleet, "usb.elb", path, sizeof path);
    el_fleetkit_write(&fleet, "usb.elb", bytes, len);
    CHECK(run_import(path) == 0);
    CHECK(run_import(path) == 0);   /* already held: not a duplicate */
    bytes[len - 1] ^= 0x5a;         /* payload no longer matches its hash */
    el_fleetkit_write(&fleet, "usb-bad.elb", bytes, len);
    el_fleetkit_path(&fleet, "usb-bad.elb", bad_path, sizeof bad_path);
    CHECK(run_import(bad_path) != 0);
    el_free(bytes);
    el_delta_set_finish(&v);
    CHECK(el_fleetkit_start_hub(&fleet, hub_exe, NULL, NULL) == 0);
    CHECK(count_versions() == 2);
}

/* kill -9 cannot show a missing fsync: read the system calls of an import
 * of BUNDLE (larger than the 64 KiB kept as rows, so it and its rebuilt
 * adapter are files) into an empty data directory and check, for each blob
 * file, the order
 *   mkdir(shard) -> fsync(blobs/sha256) (only when the shard is new),
 *   write(tmp) -> fsync(tmp) -> rename(tmp, blob) -> fsync(shard),
 * and that the metadata commit (hub.db-wal synced) comes after all of it. */
#define TRACE_MAX 64

typedef struct blob_trace {
    char final[700], tmp[700], shard[700];
    long mkdir_at, parent_sync, write_at, tmp_sync, rename_at, dir_sync;
} blob_trace;

/* The path inside the first <...> of LINE (strace -y) into OUT. */
static void fd_path(const char *line, char *out, size_t n)
{
    out[0] = '\0';
    const char *a = strchr(line, '<'), *b = a ? strchr(a, '>') : NULL;
    if (a && b && (size_t)(b - a - 1) < n) {
        memcpy(out, a + 1, (size_t)(b - a - 1));
        out[b - a - 1] = '\0';
    }
}

/* The Ith quoted string of LINE into OUT. */
static int quoted(const char *line, int i, char *out, size_t n)
{
    const char *p = line;
    for (int k = 0; k <= i; k++) {
        const char *a = strchr(p, '"'), *b = a ? strchr(a + 1, '"') : NULL;
        if (!b)
            return -1;
        if (k == i) {
            if ((size_t)(b - a - 1) >= n)
                return -1;
            memcpy(out, a + 1, (size_t)(b - a - 1));
            out[b - a - 1] = '\0';
            return 0;
        }
        p = b + 1;
    }
    return -1;
}

static void test_import_syscall_order(const uint8_t *bundle, size_t len)
{
    if (system("command -v strace >/dev/null 2>&1") != 0) {
        printf("strace is not installed: syscall order not checked\n");
        return;
    }
    char path[700], log[700], data[700], cmd[4096];
    CHECK(len > 64 * 1024);
    el_fleetkit_write(&fleet, "trace.elb", bundle, len);
    el_fleetkit_path(&fleet, "trace.elb", path, sizeof path);
    el_fleetkit_path(&fleet, "trace.log", log, sizeof log);
    el_fleetkit_path(&fleet, "data-trace", data, sizeof data);
    const char *d = fleet.dir;
    /* LeakSanitizer cannot run under ptrace */
    snprintf(cmd, sizeof cmd,
             "ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0\" strace -f -y -o %s "
             "-e trace=mkdir,openat,write,pwrite64,fsync,fdatasync,rename "
             "'%s' import '%s' --ca %s/ca.crt --root %s/root.elb --data %s >>%s/import.log 2>&1",
             log, hub_exe, path, d, d, data, d);
    CHECK(system(cmd) == 0);

    char blobs[720], wal[720];
    snprintf(blobs, sizeof blobs, "%s/blobs/sha256", data);
    snprintf(wal, sizeof wal, "%s/hub.db-wal", data);
    blob_trace t[TRACE_MAX];
    int nt = 0;
    long last_wal_sync = 0;
    char line[8192], p[700];
    FILE *f = fopen(log, "r");
    CHECK(f != NULL);
    if (!f)
        return;
    /* first pass: the renames into the store name the blobs and their tmp */
    for (long no = 1; fgets(line, sizeof line, f); no++) {
        char from[700], to[700];
        if (strstr(line, " rename(") && !quoted(line, 0, from, sizeof from) &&
            !quoted(line, 1, to, sizeof to) && !strncmp(to, blobs, strlen(blobs)) &&
            nt < TRACE_MAX) {
            blob_trace *b = &t[nt++];
            memset(b, 0, sizeof *b);
            snprintf(b->final, sizeof b->final, "%s", to);
            snprintf(b->tmp, sizeof b->tmp, "%s", from);
            snprintf(b->shard, sizeof b->shard, "%s", to);
            *strrchr(b->shard, '/') = '\0';
            b->rename_at = no;
        }
    }
    CHECK(nt == 2);   /* the bundle and its rebuilt adapter */
    rewind(f);
    for (long no = 1; fgets(line, sizeof line, f); no++) {
        int is_sync = strstr(line, " fsync(") || strstr(line, " fdatasync(");
        int is_write = strstr(line, " write(") || strstr(line, " pwrite64(");
        char q[700];
        fd_path(line, p, sizeof p);
        if (is_sync && !strcmp(p, wal))
            last_wal_sync = no;
        for (int i = 0; i < nt; i++) {
            blob_trace *b = &t[i];
            if (strstr(line, " mkdir(") && !quoted(line, 0, q, sizeof q) &&
                !strcmp(q, b->shard) && strstr(line, ") = 0"))
                b->mkdir_at = no;
            if (is_sync && !strcmp(p, blobs) && b->mkdir_at && !b->parent_sync)
                b->parent_sync = no;
            if (is_write && !strcmp(p, b->tmp))
                b->write_at = no;
            if (is_sync && !strcmp(p, b->tmp))
                b->tmp_sync = no;
            if (is_sync && !strcmp(p, b->shard) && no > b->rename_at && !b->dir_sync)
                b->dir_sync = no;
        }
    }
    fclose(f);
    int created = 0;
    for (int i = 0; i < nt; i++) {
        blob_trace *b = &t[i];
        printf("%s: mkdir@%ld parent-sync@%ld write@%ld fsync@%ld rename@%ld dirsync@%ld "
               "commit@%ld\n",
               b->final + strlen(data), b->mkdir_at, b->parent_sync, b->write_at, b->tmp_sync,
               b->rename_at, b->dir_sync, last_wal_sync);
        if (b->mkdir_at) {
            created++;
            CHECK(b->parent_sync > b->mkdir_at && b->parent_sync < b->write_at);
        }
        CHECK(b->write_at > 0 && b->tmp_sync > b->write_at && b->rename_at > b->tmp_sync &&
              b->dir_sync > b->rename_at && last_wal_sync > b->dir_sync);
    }
    CHECK(created >= 1);   /* an empty store: at least one shard was made */
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_hub_fault EDGELOOP_HUB\n");
        return 1;
    }
    hub_exe = argv[1];
    el_fleetkit_init(&fleet, NULL, 0);
    int64_t now = fleet.now;
    el_fleetkit_issue(&fleet, "dev1", "dev-1", "device", "line-a", now - DAY, now + 90 * DAY, 0,
                      NULL);
    el_fleetkit_issue(&fleet, "admin", "ops", "admin", NULL, now - DAY, now + 90 * DAY, 0, NULL);
    el_delta_set v = {0};
    el_fleetkit_adapter(&v, 256, 4, 0.02f, 9);   /* ~130 KB exact delta */
    uint8_t *bundle;
    size_t len;
    char id[65], blob[65];
    el_fleetkit_delta(&fleet, "dev1", &v, NULL, EL_DELTA_EXACT, &bundle, &len, id, NULL);
    el_sha256_hex(bundle, len, blob);
    el_delta_set_finish(&v);

    test_crash_mid_upload(bundle, len, id);
    test_download_resume(bundle, len, blob);
    test_sigterm_idle();
    test_import();
    test_import_syscall_order(bundle, len);
    test_kill_during_writes();
    el_free(bundle);
    el_fleetkit_finish(&fleet);
    return el_test_done("test_hub_fault");
}
