/* What the hub refuses at the TLS and HTTP layers, on 127.0.0.1: no client
 * certificate, a certificate from another CA, an expired or revoked one
 * (revoked by the first root and by a root pushed later, also on a resumed
 * session), TLS 1.1 (openssl s_client), a hub name that does not match, a
 * hub certificate not valid at the client's trusted time, a key that does
 * not match its certificate (either end), malformed HTTP, a
 * body over the limit, and slowloris clients (the timeout frees the single
 * worker). argv[1]: the edgeloop-hub executable. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "check.h"
#include "client.h"
#include "fleetkit.h"
#include "tls.h"

#define DAY 86400

static el_fleetkit fleet;
static char test_dev2_serial[EL_CRYPTO_SERIAL_HEX_MAX];

static int run(const char *cmd)
{
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Connects as NAME and runs one GET; returns 0 or the error code, with the
 * tag in TAG (32) when the connection itself failed. */
static int try_get(const char *name, int64_t trusted_time, const char *host, char *tag)
{
    char paths[2100];
    el_client_opts o;
    el_client *c = NULL;
    el_error err = {0};
    el_fleetkit_client_opts(&fleet, name, &o, paths, sizeof paths);
    o.trusted_time = trusted_time;
    if (host)
        o.host = host;
    int rc = el_client_create(&o, &c, &err);
    if (!rc) {
        el_http_msg resp;
        el_http_msg_init(&resp);
        rc = el_client_request(c, "GET", "/v1/releases?since=0", NULL, NULL, 0, &resp, &err);
        if (!rc && resp.status != 200)
            rc = EL_EINTERNAL;
        el_http_msg_finish(&resp);
    }
    if (tag)
        snprintf(tag, 32, "%s", err.tag);
    el_client_destroy(c);
    return rc;
}

/* Sends RAW over a TLS connection as dev1 and reads the answer's first
 * line into LINE (128). Returns 0 or an error. */
static int raw_request(const void *raw, size_t len, char *line)
{
    char ca[700], crt[700], key[700];
    el_fleetkit_path(&fleet, "ca.crt", ca, sizeof ca);
    el_fleetkit_path(&fleet, "dev1.crt", crt, sizeof crt);
    el_fleetkit_path(&fleet, "dev1.key", key, sizeof key);
    el_tls_opts o = {.ca_path = ca, .cert_path = crt, .key_path = key};
    el_tls_ctx *ctx = NULL;
    el_tls_conn *conn = NULL;
    el_error err = {0};
    line[0] = '\0';
    int rc = el_tls_ctx_create(&o, &ctx, &err);
    if (!rc)
        rc = el_tls_connect(ctx, "localhost", fleet.hub_port, &conn, &err);
    if (!rc)
        rc = el_tls_write(conn, raw, len, &err);
    if (!rc) {
        char buf[512];
        long n = el_tls_read(conn, buf, sizeof buf - 1, &err);
        if (n > 0) {
            buf[n] = '\0';
            char *eol = strstr(buf, "\r\n");
            if (eol)
                *eol = '\0';
            snprintf(line, 128, "%s", buf);
        }
        rc = n > 0 ? 0 : EL_EIO;
    }
    el_tls_close(conn);
    el_tls_ctx_destroy(ctx);
    return rc;
}

struct mismatch_server {
    el_tls_ctx *ctx;
    int listen_fd;
    int rc;
};

static void *mismatch_serve(void *p)
{
    struct mismatch_server *m = p;
    el_error err = {0};
    el_tls_conn *conn = NULL;
    int fd = accept(m->listen_fd, NULL, NULL);
    m->rc = fd < 0 ? EL_EIO : el_tls_accept(m->ctx, fd, &conn, &err);
    el_tls_close(conn);
    return NULL;
}

/* A peer whose key does not match its certificate fails on its handshake
 * signature, also where the other end checks it with the key's remembered
 * table (tls.c design note 9): a device (dev1.crt, dev2.key) at the hub, and
 * a hub (hub.crt, dev1.key) at a device. Both ends met the real key first. */
static void test_key_mismatch(void)
{
    char tag[32];
    uint64_t before = el_tls_table_verifications();
    CHECK(try_get("dev1", 0, NULL, tag) == 0);
    CHECK_MSG(!el_tls_remembers_keys() || el_tls_table_verifications() > before,
              "the hub's signature was not checked with a remembered table");

    char paths[2100], key2[700];
    el_client_opts o;
    el_client *c = NULL;
    el_error err = {0};
    el_fleetkit_client_opts(&fleet, "dev1", &o, paths, sizeof paths);
    el_fleetkit_path(&fleet, "dev2.key", key2, sizeof key2);
    o.key_path = key2;
    int rc = el_client_create(&o, &c, &err);
    if (!rc) {
        el_http_msg resp;
        el_http_msg_init(&resp);
        rc = el_client_request(c, "GET", "/v1/releases?since=0", NULL, NULL, 0, &resp, &err);
        el_http_msg_finish(&resp);
    }
    CHECK_MSG(rc != 0, "a device signing with another key was let in");
    el_client_destroy(c);

    char ca[700], crt[700], key[700];
    el_fleetkit_path(&fleet, "ca.crt", ca, sizeof ca);
    el_fleetkit_path(&fleet, "hub.crt", crt, sizeof crt);
    el_fleetkit_path(&fleet, "dev1.key", key, sizeof key);
    el_tls_opts so = {.is_server = 1, .ca_path = ca, .cert_path = crt, .key_path = key,
                      .handshake_timeout_ms = 3000};
    struct mismatch_server m = {NULL, -1, -1};
    CHECK_OK(el_tls_ctx_create(&so, &m.ctx, &err), &err);
    m.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    CHECK(m.listen_fd >= 0 && bind(m.listen_fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
          listen(m.listen_fd, 1) == 0 && getsockname(m.listen_fd, (struct sockaddr *)&sa, &sl) == 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, mismatch_serve, &m) == 0);
    el_fleetkit_path(&fleet, "dev1.crt", crt, sizeof crt);
    el_tls_opts co = {.ca_path = ca, .cert_path = crt, .key_path = key,
                      .handshake_timeout_ms = 3000};
    el_tls_ctx *cctx = NULL;
    el_tls_conn *conn = NULL;
    CHECK_OK(el_tls_ctx_create(&co, &cctx, &err), &err);
    before = el_tls_table_verifications();
    rc = el_tls_connect(cctx, "localhost", ntohs(sa.sin_port), &conn, &err);
    CHECK_MSG(rc != 0, "a hub signing with another key was accepted");
    CHECK(!el_tls_remembers_keys() || el_tls_table_verifications() > before);
    el_tls_close(conn);
    pthread_join(t, NULL);
    CHECK(m.rc != 0);
    close(m.listen_fd);
    el_tls_ctx_destroy(cctx);
    el_tls_ctx_destroy(m.ctx);
}

static void test_certificates(void)
{
    char tag[32];
    int64_t now = fleet.now;
    CHECK(try_get("dev1", 0, NULL, tag) == 0);
    CHECK(try_get("alien", 0, NULL, tag) != 0);    /* another CA */
    CHECK(try_get("expired", 0, NULL, tag) != 0);
    CHECK(try_get("revoked", 0, NULL, tag) != 0);
    CHECK(try_get("hubcert", 0, NULL, tag) != 0);  /* role hub as a client */
    /* the client checks the hub: name (SAN is DNS:localhost only) ... */
    CHECK(try_get("dev1", 0, "127.0.0.1", tag) == EL_ETRUST);
    CHECK_STR(tag, "untrusted_signer");
    /* ... and validity at its trusted time, not only the wall clock */
    CHECK(try_get("dev1", now + 400 * DAY, NULL, tag) == EL_ETRUST);
    CHECK_STR(tag, "expired");

    if (run("command -v openssl >/dev/null 2>&1")) {
        printf("openssl not installed: s_client checks skipped\n");
        return;
    }
    char cmd[4096];
    const char *d = fleet.dir;
    /* control: the same command with TLS 1.2 gets through */
    snprintf(cmd, sizeof cmd,
             "openssl s_client -connect 127.0.0.1:%d -servername localhost -tls1_2 "
             "-cipher 'DEFAULT:@SECLEVEL=0' -CAfile %s/ca.crt -cert %s/dev1.crt "
             "-key %s/dev1.key </dev/null >%s/s_client12.log 2>&1",
             fleet.hub_port, d, d, d, d);
    CHECK(run(cmd) == 0);
    /* the ECDHE group: X25519 when offered (openssl offers it first), P-256
     * for a client that offers only that (tls.c design note 2) */
    snprintf(cmd, sizeof cmd, "grep -q 'Server Temp Key: X25519' %s/s_client12.log", d);
    CHECK(run(cmd) == 0);
    snprintf(cmd, sizeof cmd,
             "openssl s_client -connect 127.0.0.1:%d -servername localhost -tls1_2 "
             "-groups P-256 -CAfile %s/ca.crt -cert %s/dev1.crt -key %s/dev1.key "
             "</dev/null >%s/s_client_p256.log 2>&1 && "
             "grep -q 'Server Temp Key: ECDH, prime256v1' %s/s_client_p256.log",
             fleet.hub_port, d, d, d, d, d);
    CHECK(run(cmd) == 0);
    /* TLS 1.1 offered (SECLEVEL=0 so openssl itself would allow it): refused */
    snprintf(cmd, sizeof cmd,
             "openssl s_client -connect 127.0.0.1:%d -servername localhost -tls1_1 "
             "-cipher 'DEFAULT:@SECLEVEL=0' -CAfile %s/ca.crt -cert %s/dev1.crt "
             "-key %s/dev1.key </dev/null >%s/s_client11.log 2>&1",
             fleet.hub_port, d, d, d, d);
    CHECK(run(cmd) != 0);
    /* no client certificate: the handshake fails, no HTTP answer */
    snprintf(cmd, sizeof cmd,
             "printf 'GET /v1/releases HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n' | "
             "openssl s_client -connect 127.0.0.1:%d -servername localhost -quiet "
             "-CAfile %s/ca.crt 2>/dev/null | grep -q 'HTTP/1.1'",
             fleet.hub_port, d);
    CHECK(run(cmd) != 0);
}

static void test_root_revocation(void)
{
    /* dev2 connects, keeps a session, then a new root revokes it: both a
     * full handshake and a resumed one are refused afterwards */
    char paths[2100], apaths[2100];
    el_client_opts o, ao;
    el_client *dev2 = NULL, *admin = NULL;
    el_error err = {0};
    el_fleetkit_client_opts(&fleet, "dev2", &o, paths, sizeof paths);
    el_fleetkit_client_opts(&fleet, "admin", &ao, apaths, sizeof apaths);
    CHECK_OK(el_client_create(&o, &dev2, &err), &err);
    CHECK_OK(el_client_create(&ao, &admin, &err), &err);
    if (!dev2 || !admin)
        return;
    el_http_msg resp;
    el_http_msg_init(&resp);
    int rc = el_client_request(dev2, "GET", "/v1/releases?since=0", NULL, NULL, 0, &resp, &err);
    CHECK(rc == 0 && resp.status == 200);
    el_client_disconnect(dev2);

    char dev2_serial[EL_CRYPTO_SERIAL_HEX_MAX];
    snprintf(dev2_serial, sizeof dev2_serial, "%s", test_dev2_serial);
    const char *revoked[] = {dev2_serial};
    uint8_t *root2;
    size_t len;
    el_fleetkit_root(&fleet, 2, revoked, 1, &root2, &len);
    rc = el_client_request(admin, "PUT", "/v1/roots/2", NULL, root2, len, &resp, &err);
    CHECK_MSG(rc == 0 && resp.status == 201, "rc=%d status=%d %s", rc, resp.status,
              resp.body ? (const char *)resp.body : "");
    el_free(root2);

    rc = el_client_request(dev2, "GET", "/v1/releases?since=0", NULL, NULL, 0, &resp, &err);
    CHECK_MSG(rc != 0, "a resumed session of a revoked certificate was served");
    el_client_forget_session(dev2);
    rc = el_client_request(dev2, "GET", "/v1/releases?since=0", NULL, NULL, 0, &resp, &err);
    CHECK(rc != 0);
    /* devices fetch the new root */
    uint8_t *got = NULL;
    size_t glen = 0;
    rc = el_client_fetch_root(admin, 2, &got, &glen, &err);
    CHECK_OK(rc, &err);
    el_free(got);
    el_http_msg_finish(&resp);
    el_client_destroy(dev2);
    el_client_destroy(admin);
}

static void test_http_refusals(void)
{
    char line[128];
    static const char bare_lf[] = "GET /v1/releases HTTP/1.1\nHost: localhost\n\n";
    CHECK(raw_request(bare_lf, sizeof bare_lf - 1, line) == 0);
    CHECK_STR(line, "HTTP/1.1 400 Bad Request");
    static const char no_host[] = "GET /v1/releases HTTP/1.1\r\n\r\n";
    CHECK(raw_request(no_host, sizeof no_host - 1, line) == 0);
    CHECK_STR(line, "HTTP/1.1 400 Bad Request");
    static const char version[] = "GET /v1/releases HTTP/2.0\r\nHost: x\r\n\r\n";
    CHECK(raw_request(version, sizeof version - 1, line) == 0);
    CHECK_STR(line, "HTTP/1.1 505 HTTP Version Not Supported");
    static const char big[] = "PUT /v1/bundles/00 HTTP/1.1\r\nHost: x\r\n"
                              "Content-Length: 100000000\r\n\r\n";
    CHECK(raw_request(big, sizeof big - 1, line) == 0);
    CHECK_STR(line, "HTTP/1.1 413 Content Too Large");
    static const char chunked[] = "PUT /v1/bundles/00 HTTP/1.1\r\nHost: x\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    CHECK(raw_request(chunked, sizeof chunked - 1, line) == 0);
    CHECK_STR(line, "HTTP/1.1 501 Not Implemented");
    char huge[12000];
    memcpy(huge, "GET /", 5);
    memset(huge + 5, 'a', sizeof huge - 5);
    CHECK(raw_request(huge, sizeof huge, line) == 0);
    CHECK_STR(line, "HTTP/1.1 414 URI Too Long");
}

/* Opens a TCP connection to the hub and sends nothing (a handshake that
 * never comes). Returns the socket. */
static int tcp_open(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fleet.hub_port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void test_slowloris(void)
{
    /* the hub runs ONE worker: a slow client that never completes its head,
     * then one that never handshakes; the next real client is still served
     * because the request and handshake timeouts free the worker */
    char ca[700], crt[700], key[700];
    el_fleetkit_path(&fleet, "ca.crt", ca, sizeof ca);
    el_fleetkit_path(&fleet, "dev1.crt", crt, sizeof crt);
    el_fleetkit_path(&fleet, "dev1.key", key, sizeof key);
    el_tls_opts o = {.ca_path = ca, .cert_path = crt, .key_path = key};
    el_tls_ctx *ctx = NULL;
    el_tls_conn *slow = NULL;
    el_error err = {0};
    CHECK_OK(el_tls_ctx_create(&o, &ctx, &err), &err);
    if (!ctx)
        return;
    CHECK_OK(el_tls_connect(ctx, "localhost", fleet.hub_port, &slow, &err), &err);
    if (slow)
        CHECK_OK(el_tls_write(slow, "GET /v1/rel", 11, &err), &err);
    int idle = tcp_open();
    CHECK(idle >= 0);
    char tag[32];
    CHECK(try_get("dev1", 0, NULL, tag) == 0);
    CHECK(try_get("dev1", 0, NULL, tag) == 0);
    /* the slow connection was closed by the hub: nothing more to read */
    if (slow) {
        char buf[64];
        el_tls_set_deadline(slow, 5000);
        long n = el_tls_read(slow, buf, sizeof buf, &err);
        CHECK(n <= 0 || !memcmp(buf, "HTTP/1.1 408", 12));
    }
    el_tls_close(slow);
    if (idle >= 0)
        close(idle);
    el_tls_ctx_destroy(ctx);
}

/* Reads one whole answer (head + Content-Length body) from CONN into BUF.
 * Returns its status code, or -1. */
static int read_answer(el_tls_conn *conn, char *buf, size_t cap)
{
    size_t have = 0;
    el_error err = {0};
    for (;;) {
        if (have + 1 >= cap)
            return -1;
        long n = el_tls_read(conn, buf + have, cap - 1 - have, &err);
        if (n <= 0)
            return -1;
        have += (size_t)n;
        buf[have] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (!end)
            continue;
        const char *cl = strstr(buf, "Content-Length:");
        size_t body = cl ? strtoul(cl + 15, NULL, 10) : 0;
        if (have >= (size_t)(end + 4 - buf) + body)
            return atoi(buf + 9);
    }
}

/* The value of METRIC in the hub's /metrics (as admin), or -1. */
static long long hub_metric(const char *metric)
{
    char paths[2100];
    el_client_opts o;
    el_client *admin = NULL;
    el_error err = {0};
    el_http_msg resp;
    el_http_msg_init(&resp);
    long long v = -1;
    el_fleetkit_client_opts(&fleet, "admin", &o, paths, sizeof paths);
    if (!el_client_create(&o, &admin, &err) &&
        !el_client_request(admin, "GET", "/metrics", NULL, NULL, 0, &resp, &err) &&
        resp.status == 200) {
        char *text = el_malloc(resp.body_len + 1);
        if (text) {
            memcpy(text, resp.body, resp.body_len);
            text[resp.body_len] = '\0';
            char key[128];
            snprintf(key, sizeof key, "\n%s ", metric);
            char *at = strstr(text, key);
            if (at)
                v = strtoll(at + strlen(key), NULL, 10);
            el_free(text);
        }
    }
    el_http_msg_finish(&resp);
    el_client_destroy(admin);
    return v;
}

static const char keep_alive_get[] =
    "GET /v1/releases?since=0 HTTP/1.1\r\nHost: localhost\r\n\r\n";

static void test_idle_parked(void)
{
    /* ONE worker and --idle-timeout 6000: a client that keeps its connection
     * open after an answer must not hold the worker (the hub parks idle
     * connections), so a client whose handshake gives up after 3 s is
     * served meanwhile; the parked connection is served again, then closed
     * by the hub once idle past the timeout */
    char ca[700], crt[700], key[700], buf[8192];
    el_fleetkit_path(&fleet, "ca.crt", ca, sizeof ca);
    el_fleetkit_path(&fleet, "dev1.crt", crt, sizeof crt);
    el_fleetkit_path(&fleet, "dev1.key", key, sizeof key);
    el_tls_opts o = {.ca_path = ca, .cert_path = crt, .key_path = key};
    el_tls_opts quick = o;
    quick.handshake_timeout_ms = 3000;
    quick.io_timeout_ms = 3000;
    el_tls_ctx *ctx = NULL, *ctx2 = NULL;
    el_tls_conn *keep = NULL, *other = NULL;
    el_error err = {0};
    CHECK_OK(el_tls_ctx_create(&o, &ctx, &err), &err);
    CHECK_OK(el_tls_ctx_create(&quick, &ctx2, &err), &err);
    if (!ctx || !ctx2)
        goto out;
    CHECK_OK(el_tls_connect(ctx, "localhost", fleet.hub_port, &keep, &err), &err);
    if (!keep)
        goto out;
    CHECK_OK(el_tls_write(keep, keep_alive_get, sizeof keep_alive_get - 1, &err), &err);
    CHECK(read_answer(keep, buf, sizeof buf) == 200);
    /* KEEP is idle now (the admin's own connection closes after its answer) */
    CHECK(hub_metric("edgeloop_hub_idle_connections") >= 1);
    long long timeouts = hub_metric("edgeloop_hub_idle_timeouts_total");
    CHECK_OK(el_tls_connect(ctx2, "localhost", fleet.hub_port, &other, &err), &err);
    if (other) {
        CHECK_OK(el_tls_write(other, keep_alive_get, sizeof keep_alive_get - 1, &err), &err);
        CHECK_MSG(read_answer(other, buf, sizeof buf) == 200,
                  "a second client was not served while the first one idled");
    }
    CHECK_OK(el_tls_write(keep, keep_alive_get, sizeof keep_alive_get - 1, &err), &err);
    CHECK_MSG(read_answer(keep, buf, sizeof buf) == 200, "a parked connection was not served");
    sleep(7);
    el_tls_set_deadline(keep, 3000);
    CHECK_MSG(el_tls_read(keep, buf, sizeof buf, &err) <= 0,
              "an idle connection outlived --idle-timeout");
    CHECK(hub_metric("edgeloop_hub_idle_timeouts_total") > timeouts);
out:
    el_tls_close(other);
    el_tls_close(keep);
    el_tls_ctx_destroy(ctx2);
    el_tls_ctx_destroy(ctx);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_tls EDGELOOP_HUB\n");
        return 1;
    }
    el_fleetkit_init(&fleet, NULL, 0);
    int64_t now = fleet.now;
    char revoked[EL_CRYPTO_SERIAL_HEX_MAX];
    el_fleetkit_issue(&fleet, "dev1", "dev-1", "device", "line-a", now - DAY, now + 90 * DAY, 0,
                      NULL);
    el_fleetkit_issue(&fleet, "dev2", "dev-2", "device", "line-a", now - DAY, now + 90 * DAY, 0,
                      test_dev2_serial);
    el_fleetkit_issue(&fleet, "admin", "ops", "admin", NULL, now - DAY, now + 90 * DAY, 0, NULL);
    el_fleetkit_issue(&fleet, "alien", "dev-9", "device", "line-a", now - DAY, now + 90 * DAY, 1,
                      NULL);
    el_fleetkit_issue(&fleet, "expired", "dev-3", "device", "line-a", now - 30 * DAY,
                      now - DAY, 0, NULL);
    el_fleetkit_issue(&fleet, "revoked", "dev-4", "device", "line-a", now - DAY,
                      now + 90 * DAY, 0, revoked);
    el_fleetkit_issue(&fleet, "hubcert", "localhost", "hub", NULL, now - DAY, now + 90 * DAY, 0,
                      NULL);
    /* root 1 revokes dev-4 */
    const char *list[] = {revoked};
    uint8_t *root;
    size_t len;
    el_fleetkit_root(&fleet, 1, list, 1, &root, &len);
    el_fleetkit_write(&fleet, "root.elb", root, len);
    el_free(root);
    const char *extra[] = {"--workers", "1", "--request-timeout", "1500",
                           "--handshake-timeout", "1500", "--idle-timeout", "6000",
                           "--body-max", "65536", NULL};
    if (el_fleetkit_start_hub(&fleet, argv[1], extra, NULL)) {
        fprintf(stderr, "hub did not start (log: %s)\n", fleet.hub_log);
        return 1;
    }
    test_certificates();
    test_key_mismatch();
    test_http_refusals();
    test_slowloris();
    test_idle_parked();
    test_root_revocation();
    int status = el_fleetkit_stop_hub(&fleet, SIGTERM);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "hub exit status 0x%x", status);
    el_fleetkit_finish(&fleet);
    return el_test_done("test_tls");
}
