/* The hub's HTTP API under /v1 and /metrics (README "Hub API").
 *
 * Every route goes through the store interface only (store.h). The role
 * comes from the client certificate (tls.h): device routes need OU=device,
 * admin routes OU=admin; a wrong role is 403 before the body is looked at.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/json.h"
#include "base/sha256.h"
#include "client.h"
#include "crypto.h"
#include "hub.h"

#define STATUS_MAX (64u << 10)
#define RELEASES_PAGE 100

static const char *const route_names[EL_HUB_R_COUNT] = {
    "bundle_put", "bundle_get", "status", "releases", "release_put", "root_get",
    "root_put", "blob", "devices", "device", "versions", "metrics", "other",
};

static const int counted_codes[EL_HUB_CODES] = {
    200, 201, 206, 400, 403, 404, 405, 408, 409, 411, 413, 414,
    416, 422, 431, 500, 501, 503, 505, 0, 0, 0, 0, 0,
};

static int metric_slot(int status)
{
    for (int i = 0; i < EL_HUB_CODES && counted_codes[i]; i++)
        if (counted_codes[i] == status)
            return i;
    return EL_HUB_CODES - 1;   /* any other code */
}

void el_hub_count(el_hub *hub, enum el_hub_route route, int status)
{
    atomic_fetch_add(&hub->metrics.requests[route][metric_slot(status)], 1);
}

static void set_body(el_hub_response *resp, int status, const char *text, size_t len)
{
    el_free(resp->body);
    resp->status = status;
    resp->body = el_malloc(len + 1);
    resp->len = resp->body ? len : 0;
    if (resp->body)
        memcpy(resp->body, text, len);
    else
        resp->status = 500;
}

static void json_response(el_hub_response *resp, int status, json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (!text) {
        el_hub_error_response(resp, 500, "internal", "cannot serialize the answer");
        return;
    }
    set_body(resp, status, text, strlen(text));
    free(text);
}

void el_hub_error_response(el_hub_response *resp, int status, const char *code,
                           const char *message)
{
    json_t *doc = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message);
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    static const char fallback[] = "{\"error\":{\"code\":\"internal\",\"message\":\"\"}}";
    if (text)
        set_body(resp, status, text, strlen(text));
    else
        set_body(resp, status, fallback, sizeof fallback - 1);
    resp->content_type = "application/json";
    free(text);
}

/* Maps our error model to an HTTP answer. */
static void error_from(el_hub_response *resp, const el_error *err)
{
    int status;
    switch (err->code) {
    case EL_EINPUT: status = strcmp(err->tag, "oversize") ? 400 : 413; break;
    case EL_ETRUST:
        /* a bad signature is malformed input; any other refusal is about who
         * signed or when, i.e. forbidden */
        status = (!strcmp(err->tag, "bad_signature") || !strcmp(err->tag, "truncated")) ? 400
                 : !strcmp(err->tag, "oversize")                                      ? 413
                                                                                       : 403;
        break;
    case EL_EPOLICY: status = 409; break;
    case EL_ENOTFOUND: status = 404; break;
    case EL_ENOSPC: status = 503; break;
    default: status = 500; break;
    }
    el_hub_error_response(resp, status, err->tag[0] ? err->tag : el_error_code_name(err->code),
                          err->msg);
}

/* Matches PATH against PREFIX followed by one segment of at most N-1
 * characters from [A-Za-z0-9._-] (copied to SEG). */
static int match_segment(const char *path, const char *prefix, char *seg, size_t n)
{
    size_t plen = strlen(prefix);
    if (strncmp(path, prefix, plen))
        return 0;
    const char *s = path + plen;
    size_t len = strlen(s);
    if (!len || len >= n || strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                      "0123456789._-") != len)
        return 0;
    memcpy(seg, s, len + 1);
    return 1;
}

static int is_hex64(const char *s)
{
    return strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64;
}

/* Value of KEY in a query string "a=1&b=2", copied to OUT; 0 when absent. */
static int query_get(const char *query, const char *key, char *out, size_t n)
{
    size_t klen = strlen(key);
    for (const char *p = query; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > klen && !strncmp(p, key, klen) && p[klen] == '=') {
            size_t vlen = len - klen - 1;
            if (vlen >= n)
                return 0;
            memcpy(out, p + klen + 1, vlen);
            out[vlen] = '\0';
            return 1;
        }
        p = amp ? amp + 1 : NULL;
    }
    return 0;
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;
    if (!*s || strlen(s) > 18 || strspn(s, "0123456789") != strlen(s))
        return -1;
    *out = strtoll(s, &end, 10);
    return 0;
}

static void bundle_put(el_hub *hub, const el_tls_peer *peer, const char *id,
                       el_http_msg *req, el_hub_response *resp)
{
    el_error err = {0};
    el_hub_bundle_rec rec;
    int created = 0;
    int rc = el_hub_accept_delta(hub, req->body, req->body_len, id, peer->cn, &rec, &created,
                                 &err);
    if (rc) {
        error_from(resp, &err);
        return;
    }
    json_response(resp, created ? 201 : 200,
                  json_pack("{s:s, s:s, s:b}", "id", rec.id, "blob", rec.blob, "created",
                            created));
}

static json_t *bundle_json(const el_hub_bundle_rec *rec)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:I, s:I}", "id", rec->id,
                     "device", rec->device, "blob", rec->blob, "size", (json_int_t)rec->size,
                     "parent", rec->parent, "result", rec->result, "base", rec->base,
                     "encoding", rec->encoding, "received", (json_int_t)rec->received, "seq",
                     (json_int_t)rec->seq);
}

/* POST /v1/status: the audit head must be signed by the connected device's
 * key and extend the head the hub holds (store contract 3). */
static void status_post(el_hub *hub, const el_tls_peer *peer, el_http_msg *req,
                        el_hub_response *resp)
{
    el_error err = {0};
    el_crypto_cert *cert = NULL;
    el_crypto_key *key = NULL;
    uint8_t *sig = NULL;
    size_t sig_len = 0;
    char *text = NULL;
    json_t *doc = el_json_parse(req->body, req->body_len, STATUS_MAX, "status", &err);
    if (!doc)
        goto fail;
    json_t *audit = json_object_get(doc, "audit");
    const char *hash = NULL, *signature = NULL;
    int64_t seq = 0;
    if (!json_is_object(doc) || !json_is_object(audit)) {
        el_error_set(&err, EL_EINPUT, "status: \"audit\" object missing");
        goto fail;
    }
    if (el_json_get_i64(audit, "seq", 0, INT64_MAX, &seq, "status audit", &err) ||
        el_json_get_str(audit, "hash", &hash, "status audit", &err) ||
        el_json_get_str(audit, "signature", &signature, "status audit", &err))
        goto fail;
    if (!is_hex64(hash)) {
        el_error_set(&err, EL_EINPUT, "status: audit hash must be 64 lowercase hex characters");
        goto fail;
    }
    char message[512];
    long mlen = el_client_audit_message(peer->cn, seq, hash, message, sizeof message);
    if (mlen < 0) {
        el_error_set(&err, EL_EINPUT, "status: audit head too long");
        goto fail;
    }
    if (el_crypto_base64_decode(signature, strlen(signature), &sig, &sig_len, &err) ||
        el_crypto_cert_parse(peer->der, peer->der_len, &cert, &err) ||
        el_crypto_cert_public_key(cert, &key, &err) ||
        el_crypto_verify(key, message, (size_t)mlen, sig, sig_len, &err))
        goto fail;
    if (!(text = el_json_dump_sorted(doc))) {
        el_error_set(&err, EL_ENOMEM, "out of memory");
        goto fail;
    }
    if (hub->store->ops->status_put(hub->store, peer->cn, seq, hash, text, el_hub_now(),
                                    &err))
        goto fail;
    json_response(resp, 200, json_pack("{s:{s:I, s:s}, s:I}", "audit", "seq", (json_int_t)seq,
                                       "hash", hash, "time", (json_int_t)el_hub_now()));
    goto out;
fail:
    error_from(resp, &err);
out:
    free(text);
    el_free(sig);
    el_crypto_key_destroy(key);
    el_crypto_cert_destroy(cert);
    json_decref(doc);
}

static void releases_get(el_hub *hub, const el_tls_peer *peer, el_http_msg *req,
                         el_hub_response *resp)
{
    el_error err = {0};
    char since_text[32];
    int64_t since = 0;
    if (query_get(req->query, "since", since_text, sizeof since_text) &&
        parse_i64(since_text, &since)) {
        el_hub_error_response(resp, 400, "bad_input", "since must be a non-negative integer");
        return;
    }
    json_t *out = NULL;
    if (hub->store->ops->releases_since(hub->store, peer->cn, peer->group, since,
                                        RELEASES_PAGE, &out, &err)) {
        error_from(resp, &err);
        return;
    }
    json_object_set_new(out, "time", json_integer((json_int_t)el_hub_now()));
    json_response(resp, 200, out);
}

static void send_blob(el_hub *hub, const el_tls_peer *peer, const char *sha,
                      el_http_msg *req, el_hub_response *resp, const char *content_type)
{
    el_error err = {0};
    uint64_t size;
    if (peer && peer->role != EL_TLS_ROLE_ADMIN) {
        int ok = 0;
        if (hub->store->ops->blob_allowed(hub->store, sha, peer->cn, peer->group, &ok, &err)) {
            error_from(resp, &err);
            return;
        }
        if (!ok) {
            el_hub_error_response(resp, 404, "not_found", "no such blob for this device");
            return;
        }
    }
    if (hub->store->ops->blob_size(hub->store, sha, &size, &err)) {
        error_from(resp, &err);
        return;
    }
    uint64_t first = 0, last = size ? size - 1 : 0;
    int r = el_http_parse_range(el_http_header_get(req, "Range"), size, &first, &last);
    if (r < 0) {
        el_hub_error_response(resp, 416, "bad_range", "range not satisfiable");
        snprintf(resp->extra, sizeof resp->extra, "Content-Range: bytes */%" PRIu64 "\r\n",
                 size);
        return;
    }
    resp->content_type = content_type;
    snprintf(resp->blob, sizeof resp->blob, "%s", sha);
    if (r == 0) {
        resp->status = 206;
        resp->blob_off = first;
        resp->blob_len = last - first + 1;
        snprintf(resp->extra, sizeof resp->extra,
                 "Accept-Ranges: bytes\r\nContent-Range: bytes %" PRIu64 "-%" PRIu64
                 "/%" PRIu64 "\r\n",
                 first, last, size);
    } else {
        resp->status = 200;
        resp->blob_off = 0;
        resp->blob_len = size;
        snprintf(resp->extra, sizeof resp->extra, "Accept-Ranges: bytes\r\n");
    }
}

static void root_get(el_hub *hub, const char *version_text, el_http_msg *req,
                     el_hub_response *resp)
{
    el_error err = {0};
    int64_t version;
    char blob[EL_HUB_ID_MAX];
    if (parse_i64(version_text, &version) || version < 1) {
        el_hub_error_response(resp, 400, "bad_input", "root version must be a positive integer");
        return;
    }
    if (hub->store->ops->root_get(hub->store, &version, blob, &err)) {
        error_from(resp, &err);
        return;
    }
    send_blob(hub, NULL, blob, req, resp, "application/octet-stream");
}

static void metrics_get(el_hub *hub, el_hub_response *resp)
{
    el_error err = {0};
    int64_t devices = 0, bundles = 0;
    if (hub->store->ops->counts(hub->store, &devices, &bundles, &err)) {
        error_from(resp, &err);
        return;
    }
    size_t cap = 1 << 16, len = 0;
    char *text = el_malloc(cap);
    if (!text) {
        el_hub_error_response(resp, 500, "internal", "out of memory");
        return;
    }
#define EMIT(...) \
    do { \
        int n_ = snprintf(text + len, cap - len, __VA_ARGS__); \
        if (n_ > 0 && (size_t)n_ < cap - len) \
            len += (size_t)n_; \
    } while (0)
    el_hub_metrics *m = &hub->metrics;
    EMIT("# HELP edgeloop_hub_requests_total HTTP requests by route and status code.\n"
         "# TYPE edgeloop_hub_requests_total counter\n");
    for (int r = 0; r < EL_HUB_R_COUNT; r++)
        for (int c = 0; c < EL_HUB_CODES; c++) {
            unsigned long long v = atomic_load(&m->requests[r][c]);
            if (v) {
                if (counted_codes[c])
                    EMIT("edgeloop_hub_requests_total{route=\"%s\",code=\"%d\"} %llu\n",
                         route_names[r], counted_codes[c], v);
                else
                    EMIT("edgeloop_hub_requests_total{route=\"%s\",code=\"other\"} %llu\n",
                         route_names[r], v);
            }
        }
    EMIT("# HELP edgeloop_hub_received_bytes_total Request body bytes received.\n"
         "# TYPE edgeloop_hub_received_bytes_total counter\n"
         "edgeloop_hub_received_bytes_total %llu\n"
         "# HELP edgeloop_hub_sent_bytes_total Response body bytes sent.\n"
         "# TYPE edgeloop_hub_sent_bytes_total counter\n"
         "edgeloop_hub_sent_bytes_total %llu\n",
         (unsigned long long)atomic_load(&m->bytes_in),
         (unsigned long long)atomic_load(&m->bytes_out));
    EMIT("# HELP edgeloop_hub_handshakes_total Completed TLS handshakes.\n"
         "# TYPE edgeloop_hub_handshakes_total counter\n"
         "edgeloop_hub_handshakes_total{kind=\"full\"} %llu\n"
         "edgeloop_hub_handshakes_total{kind=\"resumed\"} %llu\n"
         "# HELP edgeloop_hub_handshake_failures_total Refused or failed TLS handshakes.\n"
         "# TYPE edgeloop_hub_handshake_failures_total counter\n"
         "edgeloop_hub_handshake_failures_total %llu\n"
         "# HELP edgeloop_hub_busy_rejections_total Connections closed because every "
         "worker was busy and the queue was full.\n"
         "# TYPE edgeloop_hub_busy_rejections_total counter\n"
         "edgeloop_hub_busy_rejections_total %llu\n",
         (unsigned long long)atomic_load(&m->handshakes_full),
         (unsigned long long)atomic_load(&m->handshakes_resumed),
         (unsigned long long)atomic_load(&m->handshake_failures),
         (unsigned long long)atomic_load(&m->rejected_busy));
    EMIT("# HELP edgeloop_hub_devices_seen Devices the hub has seen.\n"
         "# TYPE edgeloop_hub_devices_seen gauge\n"
         "edgeloop_hub_devices_seen %lld\n"
         "# HELP edgeloop_hub_bundles_stored Device bundles stored.\n"
         "# TYPE edgeloop_hub_bundles_stored gauge\n"
         "edgeloop_hub_bundles_stored %lld\n",
         (long long)devices, (long long)bundles);
    EMIT("# HELP edgeloop_hub_idle_connections Keep-alive connections waiting for a "
         "request (held by the poller, not a worker).\n"
         "# TYPE edgeloop_hub_idle_connections gauge\n"
         "edgeloop_hub_idle_connections %lld\n"
         "# HELP edgeloop_hub_idle_timeouts_total Idle connections closed after "
         "--idle-timeout.\n"
         "# TYPE edgeloop_hub_idle_timeouts_total counter\n"
         "edgeloop_hub_idle_timeouts_total %llu\n",
         (long long)atomic_load(&m->idle_connections),
         (unsigned long long)atomic_load(&m->idle_timeouts));
    uint64_t commits = 0, writes = 0;
    hub->store->ops->write_stats(hub->store, &commits, &writes);
    EMIT("# HELP edgeloop_hub_store_commits_total Durable metadata commits (group "
         "commit: concurrent writes share one).\n"
         "# TYPE edgeloop_hub_store_commits_total counter\n"
         "edgeloop_hub_store_commits_total %llu\n"
         "# HELP edgeloop_hub_store_writes_total Writes (statuses, uploads, releases, "
         "device records) those commits held.\n"
         "# TYPE edgeloop_hub_store_writes_total counter\n"
         "edgeloop_hub_store_writes_total %llu\n",
         (unsigned long long)commits, (unsigned long long)writes);
#undef EMIT
    resp->status = 200;
    resp->content_type = "text/plain; version=0.0.4";
    resp->body = (uint8_t *)text;
    resp->len = len;
}

static void list_response(el_hub_response *resp, int rc, const el_error *err, const char *key,
                          json_t *rows)
{
    if (rc) {
        error_from(resp, err);
        return;
    }
    json_response(resp, 200, key ? json_pack("{s:o}", key, rows) : rows);
}

/* Admin-only routes. */
static enum el_hub_route admin_route(el_hub *hub, el_http_msg *req, el_hub_response *resp)
{
    el_error err = {0};
    char seg[130];
    const char *m = req->method;
    json_t *rows = NULL;
    int rc;
    if (!strcmp(m, "PUT") && match_segment(req->path, "/v1/releases/", seg, sizeof seg)) {
        el_hub_release_rec rec;
        int created = 0;
        if (el_hub_accept_release(hub, req->body, req->body_len, seg, &rec, &created, &err))
            error_from(resp, &err);
        else
            json_response(resp, created ? 201 : 200,
                          json_pack("{s:s, s:I, s:s, s:b}", "id", rec.id, "seq",
                                    (json_int_t)rec.seq, "blob", rec.blob, "created", created));
        return EL_HUB_R_RELEASE_PUT;
    }
    if (!strcmp(m, "PUT") && match_segment(req->path, "/v1/roots/", seg, sizeof seg)) {
        int64_t version;
        if (parse_i64(seg, &version) || version < 1)
            el_hub_error_response(resp, 400, "bad_input", "root version must be positive");
        else if (el_hub_accept_root(hub, req->body, req->body_len, version, &err))
            error_from(resp, &err);
        else
            json_response(resp, 201, json_pack("{s:I}", "version", (json_int_t)version));
        return EL_HUB_R_ROOT_PUT;
    }
    if (strcmp(m, "GET")) {
        el_hub_error_response(resp, 405, "method_not_allowed", "method not allowed here");
        return EL_HUB_R_OTHER;
    }
    if (!strcmp(req->path, "/v1/devices")) {
        rc = hub->store->ops->devices(hub->store, &rows, &err);
        list_response(resp, rc, &err, "devices", rows);
        return EL_HUB_R_DEVICES;
    }
    if (match_segment(req->path, "/v1/devices/", seg, sizeof seg)) {
        rc = hub->store->ops->device_get(hub->store, seg, &rows, &err);
        list_response(resp, rc, &err, NULL, rows);
        return EL_HUB_R_DEVICE;
    }
    if (!strcmp(req->path, "/v1/versions")) {
        char device[130];
        int has = query_get(req->query, "device", device, sizeof device);
        rc = hub->store->ops->versions(hub->store, has ? device : NULL, &rows, &err);
        list_response(resp, rc, &err, "versions", rows);
        return EL_HUB_R_VERSIONS;
    }
    if (match_segment(req->path, "/v1/bundles/", seg, sizeof seg)) {
        el_hub_bundle_rec rec;
        if (hub->store->ops->bundle_get(hub->store, seg, &rec, &err))
            error_from(resp, &err);
        else
            json_response(resp, 200, bundle_json(&rec));
        return EL_HUB_R_BUNDLE_GET;
    }
    if (!strcmp(req->path, "/metrics")) {
        metrics_get(hub, resp);
        return EL_HUB_R_METRICS;
    }
    el_hub_error_response(resp, 404, "not_found", "no such route");
    return EL_HUB_R_OTHER;
}

/* Classifies a route by path alone, for a refusal by role. */
static enum el_hub_route admin_only(const el_http_msg *req)
{
    const char *p = req->path;
    if (!strcmp(p, "/metrics"))
        return EL_HUB_R_METRICS;
    if (!strncmp(p, "/v1/devices", 11))
        return EL_HUB_R_DEVICES;
    if (!strcmp(p, "/v1/versions"))
        return EL_HUB_R_VERSIONS;
    if (!strncmp(p, "/v1/roots/", 10))
        return EL_HUB_R_ROOT_PUT;
    if (!strncmp(p, "/v1/releases/", 13))
        return EL_HUB_R_RELEASE_PUT;
    if (!strncmp(p, "/v1/bundles/", 12) && strcmp(req->method, "PUT"))
        return EL_HUB_R_BUNDLE_GET;
    return EL_HUB_R_COUNT;
}

enum el_hub_route el_hub_route(el_hub *hub, const el_tls_peer *peer, el_http_msg *req,
                               el_hub_response *resp)
{
    char seg[130];
    const char *m = req->method;
    int is_get = !strcmp(m, "GET");
    if (is_get && match_segment(req->path, "/v1/root/", seg, sizeof seg)) {
        root_get(hub, seg, req, resp);
        return EL_HUB_R_ROOT_GET;
    }
    if (is_get && match_segment(req->path, "/v1/blobs/", seg, sizeof seg)) {
        if (!is_hex64(seg))
            el_hub_error_response(resp, 400, "bad_input", "blob id must be 64 lowercase hex");
        else
            send_blob(hub, peer, seg, req, resp, "application/octet-stream");
        return EL_HUB_R_BLOB;
    }
    enum el_hub_route admin = admin_only(req);
    if (admin != EL_HUB_R_COUNT) {
        if (peer->role != EL_TLS_ROLE_ADMIN) {
            el_hub_error_response(resp, 403, "forbidden", "this route needs an admin certificate");
            return admin;
        }
        return admin_route(hub, req, resp);
    }
    enum el_hub_route route = EL_HUB_R_OTHER;
    if (!strcmp(m, "PUT") && !strncmp(req->path, "/v1/bundles/", 12))
        route = EL_HUB_R_BUNDLE_PUT;
    else if (!strcmp(req->path, "/v1/status"))
        route = EL_HUB_R_STATUS;
    else if (!strcmp(req->path, "/v1/releases"))
        route = EL_HUB_R_RELEASES;
    if (route == EL_HUB_R_OTHER) {
        el_hub_error_response(resp, 404, "not_found", "no such route");
        return route;
    }
    if (peer->role != EL_TLS_ROLE_DEVICE) {
        el_hub_error_response(resp, 403, "forbidden", "this route needs a device certificate");
        return route;
    }
    if (route == EL_HUB_R_BUNDLE_PUT) {
        if (!match_segment(req->path, "/v1/bundles/", seg, sizeof seg) || !is_hex64(seg))
            el_hub_error_response(resp, 400, "bad_input", "bundle id must be 64 lowercase hex");
        else
            bundle_put(hub, peer, seg, req, resp);
    } else if (route == EL_HUB_R_STATUS) {
        if (strcmp(m, "POST"))
            el_hub_error_response(resp, 405, "method_not_allowed", "use POST");
        else
            status_post(hub, peer, req, resp);
    } else {
        if (!is_get)
            el_hub_error_response(resp, 405, "method_not_allowed", "use GET");
        else
            releases_get(hub, peer, req, resp);
    }
    return route;
}
