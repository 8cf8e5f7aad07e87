/* Faults and offline paths of edgeloop-hub: the hub killed mid-upload (at
 * the instant between the durable blob and the metadata commit) and
 * restarted, with the client retrying under jittered backoff until the hub
 * holds exactly one copy; a download cut mid-way and resumed with Range (and
 * a corrupt partial file refused and restarted); `edgeloop-hub import` with
 * the same checks as an upload; SIGTERM with an idle keep-alive connection
 * open. argv[1]: the edgeloop-hub executable. */
#include <signal.h>
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
    el_free(bundle);
    el_fleetkit_finish(&fleet);
    return el_test_done("test_hub_fault");
}
