/* edgeloop-hub end to end over mutual TLS on 127.0.0.1: device uploads
 * (idempotent, another device's delta refused, bad signature refused,
 * chained deltas rebuilt by the hub), status with the audit head rules,
 * releases (threshold, targeting, arrival sequence), roots, blobs, admin
 * routes and role checks, /metrics, session resumption, curl as a client
 * nobody here wrote, and a clean SIGTERM.
 * argv[1]: the edgeloop-hub executable. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "bundle.h"
#include "check.h"
#include "client.h"
#include "fleetkit.h"

#define DAY 86400

static el_fleetkit fleet;

static el_client *client_for(const char *name)
{
    static char paths[8][2100];
    static int next;
    el_client_opts o;
    el_client *c = NULL;
    el_error err = {0};
    el_fleetkit_client_opts(&fleet, name, &o, paths[next++ % 8], sizeof paths[0]);
    int rc = el_client_create(&o, &c, &err);
    CHECK_OK(rc, &err);
    return c;
}

/* GET/PUT through C and return the status; BODY_OUT (may be NULL) gets a
 * copy of the answer. */
static int request(el_client *c, const char *method, const char *target, const void *body,
                   size_t len, char **body_out)
{
    el_http_msg resp;
    el_error err = {0};
    el_http_msg_init(&resp);
    int rc = el_client_request(c, method, target, NULL, body, len, &resp, &err);
    CHECK_OK(rc, &err);
    int status = rc ? -1 : resp.status;
    if (body_out)
        *body_out = rc ? NULL : el_strdup((const char *)resp.body);
    el_http_msg_finish(&resp);
    return status;
}

/* Runs a shell command quietly; returns its exit status. */
static int run(const char *cmd)
{
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_uploads(el_client *dev1, el_client *dev2, char *first_id)
{
    el_error err = {0};
    el_delta_set v1 = {0}, v2 = {0};
    el_fleetkit_adapter(&v1, 32, 2, 0.02f, 1);
    el_fleetkit_adapter(&v2, 32, 2, 0.02f, 2);
    uint8_t *b1, *b2;
    size_t l1, l2;
    char id1[65], id2[65];
    el_fleetkit_delta(&fleet, "dev1", &v1, NULL, EL_DELTA_EXACT, &b1, &l1, id1, NULL);
    el_fleetkit_delta(&fleet, "dev1", &v2, &v1, EL_DELTA_Q8, &b2, &l2, id2, NULL);
    memcpy(first_id, id1, 65);

    int created = -1;
    int rc = el_client_upload_bundle(dev1, id1, b1, l1, &created, &err);
    CHECK_OK(rc, &err);
    CHECK(created == 1);
    rc = el_client_upload_bundle(dev1, id1, b1, l1, &created, &err);
    CHECK_OK(rc, &err);
    CHECK(created == 0);   /* idempotent: 200, not a duplicate */

    /* a chained, lossy delta: the hub rebuilds v1 + delta and checks result */
    rc = el_client_upload_bundle(dev1, id2, b2, l2, &created, &err);
    CHECK_OK(rc, &err);
    CHECK(created == 1);

    /* the id in the path must be the bundle id */
    rc = el_client_upload_bundle(dev1, id2, b1, l1, &created, &err);
    CHECK(rc == EL_EINPUT);

    /* another device's delta: 403 */
    el_delta_set v3 = {0};
    el_fleetkit_adapter(&v3, 32, 2, 0.02f, 3);
    uint8_t *b3;
    size_t l3;
    char id3[65];
    el_fleetkit_delta(&fleet, "dev1", &v3, NULL, EL_DELTA_EXACT, &b3, &l3, id3, NULL);
    rc = el_client_upload_bundle(dev2, id3, b3, l3, &created, &err);
    CHECK_MSG(rc == EL_ETRUST && !strcmp(err.tag, "not_signer"), "rc=%d tag=%s", rc, err.tag);

    /* a bad signature: flip the last byte of the DER signature -> 400 */
    uint32_t hlen = (uint32_t)b3[4] | (uint32_t)b3[5] << 8 | (uint32_t)b3[6] << 16 |
                    (uint32_t)b3[7] << 24;
    size_t p = 8 + hlen + 2;
    size_t kid = (size_t)b3[p] | (size_t)b3[p + 1] << 8;
    p += 2 + kid;
    size_t slen = (size_t)b3[p] | (size_t)b3[p + 1] << 8;
    b3[p + 2 + slen - 1] ^= 0x01;
    rc = el_client_upload_bundle(dev1, id3, b3, l3, &created, &err);
    CHECK_MSG(rc == EL_EINPUT && !strcmp(err.tag, "bad_signature"), "rc=%d tag=%s", rc,
              err.tag);

    /* a second delta whose parent the hub never saw: refused, not guessed */
    el_delta_set v4 = {0};
    el_fleetkit_adapter(&v4, 32, 2, 0.02f, 4);
    uint8_t *b4;
    size_t l4;
    char id4[65];
    el_fleetkit_delta(&fleet, "dev1", &v4, &v3, EL_DELTA_EXACT, &b4, &l4, id4, NULL);
    rc = el_client_upload_bundle(dev1, id4, b4, l4, &created, &err);
    CHECK_MSG(rc == EL_EPOLICY && !strcmp(err.tag, "unknown_parent"), "rc=%d tag=%s %s", rc,
              err.tag, err.msg);

    el_free(b1);
    el_free(b2);
    el_free(b3);
    el_free(b4);
    el_delta_set_finish(&v1);
    el_delta_set_finish(&v2);
    el_delta_set_finish(&v3);
    el_delta_set_finish(&v4);
}

static void test_status(el_client *dev1)
{
    el_error err = {0};
    const char *h1 = "1111111111111111111111111111111111111111111111111111111111111111";
    const char *h2 = "2222222222222222222222222222222222222222222222222222222222222222";
    json_t *s = el_fleetkit_status(&fleet, "dev1", "dev-1", 5, h1);
    int rc = el_client_post_status(dev1, s, &err);
    CHECK_OK(rc, &err);
    rc = el_client_post_status(dev1, s, &err);   /* same head again: fine */
    CHECK_OK(rc, &err);
    json_decref(s);
    s = el_fleetkit_status(&fleet, "dev1", "dev-1", 4, h1);   /* goes back */
    rc = el_client_post_status(dev1, s, &err);
    CHECK_MSG(rc == EL_EPOLICY && !strcmp(err.tag, "rollback"), "rc=%d tag=%s", rc, err.tag);
    json_decref(s);
    s = el_fleetkit_status(&fleet, "dev1", "dev-1", 5, h2);   /* forked */
    rc = el_client_post_status(dev1, s, &err);
    CHECK_MSG(rc == EL_EPOLICY && !strcmp(err.tag, "fork"), "rc=%d tag=%s", rc, err.tag);
    json_decref(s);
    s = el_fleetkit_status(&fleet, "dev2", "dev-1", 9, h2);   /* signed by another key */
    rc = el_client_post_status(dev1, s, &err);
    CHECK_MSG(rc == EL_EINPUT && !strcmp(err.tag, "bad_signature"), "rc=%d tag=%s", rc,
              err.tag);
    json_decref(s);
    s = el_fleetkit_status(&fleet, "dev1", "dev-1", 6, h2);   /* extends */
    rc = el_client_post_status(dev1, s, &err);
    CHECK_OK(rc, &err);
    json_decref(s);
}

static void test_releases(el_client *admin, el_client *dev1, el_client *dev2,
                          uint8_t **rel_out, size_t *rel_len, char *rel_blob)
{
    el_error err = {0};
    uint8_t *rel, *weak;
    size_t rlen, wlen;
    char id[65], wid[65], target[128];
    el_fleetkit_release(&fleet, "line-a", 1, 2, &rel, &rlen, id);
    el_fleetkit_release(&fleet, "*", 2, 1, &weak, &wlen, wid);
    snprintf(target, sizeof target, "/v1/releases/%s", id);
    char *body = NULL;
    CHECK(request(dev1, "PUT", target, rel, rlen, NULL) == 403);   /* admin route */
    CHECK(request(admin, "PUT", target, rel, rlen, &body) == 201);
    json_t *doc = body ? json_loads(body, 0, NULL) : NULL;
    snprintf(rel_blob, 65, "%s", json_string_value(json_object_get(doc, "blob")));
    json_decref(doc);
    el_free(body);
    CHECK(request(admin, "PUT", target, rel, rlen, NULL) == 200);
    snprintf(target, sizeof target, "/v1/releases/%s", wid);
    CHECK(request(admin, "PUT", target, weak, wlen, &body) == 403);   /* 1 of 2 */
    CHECK(body && strstr(body, "threshold_not_met"));
    el_free(body);

    json_t *list = NULL;
    int rc = el_client_releases(dev1, 0, &list, &err);
    CHECK_OK(rc, &err);
    json_t *arr = json_object_get(list, "releases");
    CHECK(json_array_size(arr) == 1);
    CHECK_STR(json_string_value(json_object_get(json_array_get(arr, 0), "id")), id);
    int64_t next = json_integer_value(json_object_get(list, "next"));
    json_decref(list);
    rc = el_client_releases(dev1, next, &list, &err);
    CHECK_OK(rc, &err);
    CHECK(json_array_size(json_object_get(list, "releases")) == 0);
    json_decref(list);
    rc = el_client_releases(dev2, 0, &list, &err);   /* group line-b: not targeted */
    CHECK_OK(rc, &err);
    CHECK(json_array_size(json_object_get(list, "releases")) == 0);
    json_decref(list);
    *rel_out = rel;
    *rel_len = rlen;
    el_free(weak);

    /* an adapter release becomes a parent the hub knows: a device that
     * installed it uploads its next delta against it */
    el_delta_set fleet_adapter = {0}, local = {0};
    el_fleetkit_adapter(&fleet_adapter, 32, 2, 0.02f, 50);
    el_fleetkit_adapter(&local, 32, 2, 0.02f, 51);
    uint8_t *arel, *delta;
    size_t alen, dlen;
    char aid[65], did[65];
    el_fleetkit_release_adapter(&fleet, "line-a", 1, &fleet_adapter, &arel, &alen, aid);
    el_fleetkit_delta(&fleet, "dev1", &local, &fleet_adapter, EL_DELTA_Q8, &delta, &dlen, did,
                      NULL);
    int created = -1;
    rc = el_client_upload_bundle(dev1, did, delta, dlen, &created, &err);
    CHECK(rc == EL_EPOLICY);   /* parent not known yet */
    snprintf(target, sizeof target, "/v1/releases/%s", aid);
    CHECK(request(admin, "PUT", target, arel, alen, NULL) == 201);
    rc = el_client_upload_bundle(dev1, did, delta, dlen, &created, &err);
    CHECK_OK(rc, &err);
    CHECK(created == 1);
    el_free(arel);
    el_free(delta);
    el_delta_set_finish(&fleet_adapter);
    el_delta_set_finish(&local);
}

static void test_blobs_roots(el_client *dev1, el_client *dev2, const uint8_t *rel, size_t rlen,
                             const char *rel_blob)
{
    el_error err = {0};
    char path[700], root_path[700];
    uint8_t *got = NULL, *want = NULL;
    size_t glen = 0, wlen = 0;
    int rc = el_client_fetch_root(dev1, 1, &got, &glen, &err);
    CHECK_OK(rc, &err);
    el_fleetkit_path(&fleet, "root.elb", root_path, sizeof root_path);
    el_fs_read_file(root_path, 1 << 20, &want, &wlen, NULL);
    CHECK(got && want && glen == wlen && !memcmp(got, want, glen));
    el_free(got);
    el_free(want);
    rc = el_client_fetch_root(dev1, 2, &got, &glen, &err);
    CHECK(rc == EL_ENOTFOUND);

    el_fleetkit_path(&fleet, "release.elb", path, sizeof path);
    rc = el_client_download_blob(dev1, rel_blob, path, &err);
    CHECK_OK(rc, &err);
    got = NULL;
    el_fs_read_file(path, 1 << 20, &got, &glen, NULL);
    CHECK(got && glen == rlen && !memcmp(got, rel, rlen));
    el_free(got);
    /* a device outside the release's target cannot read its blob */
    el_fleetkit_path(&fleet, "release2.elb", path, sizeof path);
    rc = el_client_download_blob(dev2, rel_blob, path, &err);
    CHECK(rc == EL_ENOTFOUND);
}

static void test_admin(el_client *admin, el_client *dev1, const char *first_id)
{
    char *body = NULL, target[128];
    CHECK(request(dev1, "GET", "/v1/devices", NULL, 0, NULL) == 403);
    CHECK(request(dev1, "GET", "/metrics", NULL, 0, NULL) == 403);
    CHECK(request(admin, "GET", "/v1/releases?since=0", NULL, 0, NULL) == 403);
    CHECK(request(admin, "GET", "/v1/devices", NULL, 0, &body) == 200);
    CHECK(body && strstr(body, "\"dev-1\"") && strstr(body, "\"line-a\""));
    el_free(body);
    CHECK(request(admin, "GET", "/v1/devices/dev-1", NULL, 0, &body) == 200);
    CHECK(body && strstr(body, "\"audit_seq\":6") && strstr(body, "holdout loss"));
    el_free(body);
    CHECK(request(admin, "GET", "/v1/devices/nobody", NULL, 0, NULL) == 404);
    CHECK(request(admin, "GET", "/v1/versions?device=dev-1", NULL, 0, &body) == 200);
    json_t *doc = body ? json_loads(body, 0, NULL) : NULL;
    CHECK(json_array_size(json_object_get(doc, "versions")) == 3);
    json_decref(doc);
    el_free(body);
    snprintf(target, sizeof target, "/v1/bundles/%s", first_id);
    CHECK(request(admin, "GET", target, NULL, 0, &body) == 200);
    CHECK(body && strstr(body, "\"device\":\"dev-1\""));
    el_free(body);
    CHECK(request(admin, "GET", "/metrics", NULL, 0, &body) == 200);
    CHECK(body && strstr(body, "edgeloop_hub_bundles_stored 3"));
    CHECK(body && strstr(body, "edgeloop_hub_requests_total{route=\"bundle_put\",code=\"201\"} 3"));
    CHECK(body && strstr(body, "edgeloop_hub_devices_seen"));
    /* every write went through a commit; no commit without a write */
    unsigned long long commits = 0, writes = 0;
    const char *c = body ? strstr(body, "\nedgeloop_hub_store_commits_total ") : NULL;
    const char *w = body ? strstr(body, "\nedgeloop_hub_store_writes_total ") : NULL;
    CHECK(c && sscanf(c, "\nedgeloop_hub_store_commits_total %llu", &commits) == 1);
    CHECK(w && sscanf(w, "\nedgeloop_hub_store_writes_total %llu", &writes) == 1);
    CHECK(commits > 0 && writes >= commits);
    el_free(body);
}

static void test_resumption(el_client *dev1)
{
    el_client_disconnect(dev1);
    CHECK(request(dev1, "GET", "/v1/releases?since=0", NULL, 0, NULL) == 200);
    CHECK(el_client_last_resumed(dev1) == 1);
    el_client_disconnect(dev1);
    el_client_forget_session(dev1);
    CHECK(request(dev1, "GET", "/v1/releases?since=0", NULL, 0, NULL) == 200);
    CHECK(el_client_last_resumed(dev1) == 0);
}

/* curl: a client nobody here wrote, against DNS:localhost. */
static void test_curl(void)
{
    if (run("command -v curl >/dev/null 2>&1")) {
        printf("curl not installed: curl checks skipped\n");
        return;
    }
    char cmd[4096], out[700];
    el_fleetkit_path(&fleet, "curl.out", out, sizeof out);
    const char *d = fleet.dir;
    int port = fleet.hub_port;
    snprintf(cmd, sizeof cmd,
             "curl -sS --fail --cacert %s/ca.crt --cert %s/dev1.crt --key %s/dev1.key "
             "-o %s https://localhost:%d/v1/releases?since=0",
             d, d, d, out, port);
    CHECK(run(cmd) == 0);
    uint8_t *text = NULL;
    size_t len = 0;
    el_fs_read_file(out, 1 << 20, &text, &len, NULL);
    CHECK(text && strstr((const char *)text, "\"releases\""));
    el_free(text);
    snprintf(cmd, sizeof cmd,
             "curl -sS --fail --cacert %s/ca.crt --cert %s/admin.crt --key %s/admin.key "
             "-o %s https://localhost:%d/metrics",
             d, d, d, out, port);
    CHECK(run(cmd) == 0);
    text = NULL;
    el_fs_read_file(out, 1 << 20, &text, &len, NULL);
    CHECK(text && strstr((const char *)text, "# TYPE edgeloop_hub_requests_total counter"));
    el_free(text);
    /* no client certificate: no answer */
    snprintf(cmd, sizeof cmd,
             "curl -sS --fail --cacert %s/ca.crt -o %s https://localhost:%d/v1/releases "
             "2>/dev/null",
             d, out, port);
    CHECK(run(cmd) != 0);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_hub_api EDGELOOP_HUB\n");
        return 1;
    }
    el_fleetkit_init(&fleet, NULL, 0);
    int64_t now = fleet.now;
    el_fleetkit_issue(&fleet, "dev1", "dev-1", "device", "line-a", now - DAY, now + 90 * DAY, 0,
                      NULL);
    el_fleetkit_issue(&fleet, "dev2", "dev-2", "device", "line-b", now - DAY, now + 90 * DAY, 0,
                      NULL);
    el_fleetkit_issue(&fleet, "admin", "ops", "admin", NULL, now - DAY, now + 90 * DAY, 0, NULL);
    const char *extra[] = {"--workers", "4", NULL};
    if (el_fleetkit_start_hub(&fleet, argv[1], extra, NULL)) {
        fprintf(stderr, "hub did not start (log: %s)\n", fleet.hub_log);
        return 1;
    }
    el_client *dev1 = client_for("dev1");
    el_client *dev2 = client_for("dev2");
    el_client *admin = client_for("admin");
    char first_id[65] = "", rel_blob[65] = "";
    uint8_t *rel = NULL;
    size_t rlen = 0;
    if (dev1 && dev2 && admin) {
        test_uploads(dev1, dev2, first_id);
        test_status(dev1);
        test_releases(admin, dev1, dev2, &rel, &rlen, rel_blob);
        test_blobs_roots(dev1, dev2, rel, rlen, rel_blob);
        test_admin(admin, dev1, first_id);
        test_resumption(dev1);
        test_curl();
    }
    el_free(rel);
    el_client_destroy(dev1);
    el_client_destroy(dev2);
    el_client_destroy(admin);
    int status = el_fleetkit_stop_hub(&fleet, SIGTERM);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "hub exit status 0x%x", status);
    el_fleetkit_finish(&fleet);
    return el_test_done("test_hub_api");
}
