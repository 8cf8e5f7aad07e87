/* Hub API client (see client.h). */
#include "client.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/sha256.h"
#include "crypto.h"

#define DOWNLOAD_PIECE (4u << 20)

struct el_client {
    el_client_opts opts;
    char host[256];
    el_tls_ctx *tls;
    el_tls_conn *conn;
    int resumed;
    el_http_conn http;
    int64_t hub_time;   /* "time" of the last status/releases answer, 0 = none */
    int64_t hub_time_refused;   /* the last one after the hub certificate's expiry */
};

static long io_read(void *io, void *buf, size_t len, el_error *err)
{
    return el_tls_read(io, buf, len, err);
}

static int io_write(void *io, const void *buf, size_t len, el_error *err)
{
    return el_tls_write(io, buf, len, err);
}

int el_client_create(const el_client_opts *opts, el_client **out, el_error *err)
{
    *out = NULL;
    if (!opts->host || strlen(opts->host) >= 256)
        return el_error_set(err, EL_EUSAGE, "hub host name missing or too long");
    el_client *c = el_calloc(1, sizeof *c);
    if (!c)
        return el_error_set(err, EL_ENOMEM, "out of memory for a hub client");
    c->opts = *opts;
    snprintf(c->host, sizeof c->host, "%s", opts->host);
    c->opts.host = c->host;
    if (!c->opts.body_max)
        c->opts.body_max = 64u << 20;
    el_tls_opts t = {
        .is_server = 0,
        .ca_path = opts->ca_path,
        .cert_path = opts->cert_path,
        .key_path = opts->key_path,
        .trusted_time = opts->trusted_time,
        .handshake_timeout_ms = opts->timeout_ms,
        .io_timeout_ms = opts->timeout_ms,
        .resume = opts->resume,
    };
    int rc = el_tls_ctx_create(&t, &c->tls, err);
    if (rc) {
        el_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int el_client_session_save(el_client *c, uint8_t **out, size_t *len, el_error *err)
{
    return el_tls_ctx_session_save(c->tls, out, len, err);
}

int el_client_session_load(el_client *c, const uint8_t *buf, size_t len, el_error *err)
{
    return el_tls_ctx_session_load(c->tls, buf, len, err);
}

void el_client_disconnect(el_client *c)
{
    el_tls_close(c->conn);
    c->conn = NULL;
}

void el_client_destroy(el_client *c)
{
    if (!c)
        return;
    el_client_disconnect(c);
    el_tls_ctx_destroy(c->tls);
    el_free(c);
}

int64_t el_client_hub_time(const el_client *c)
{
    return c->hub_time;
}

int64_t el_client_hub_time_refused(const el_client *c)
{
    return c->hub_time_refused;
}

/* The notAfter of the hub's certificate on the current connection, or 0
 * when it cannot be read. */
static int64_t hub_not_after(const el_client *c)
{
    const el_tls_peer *peer = c->conn ? el_tls_conn_peer(c->conn) : NULL;
    el_crypto_cert *cert = NULL;
    el_crypto_cert_info info;
    int64_t limit = 0;
    if (peer && peer->der && !el_crypto_cert_parse(peer->der, peer->der_len, &cert, NULL) &&
        !el_crypto_cert_get_info(cert, &info, NULL))
        limit = info.not_after;
    el_crypto_cert_destroy(cert);
    return limit;
}

/* Remembers the "time" member of an answer DOC from the hub, when it is a
 * positive integer; anything else leaves the last value alone. A time
 * after the hub certificate's own notAfter is not taken (kept as
 * hub_time_refused): a hub cannot vouch for a moment its certificate does
 * not cover, and a hub clock far ahead would otherwise carry a device's
 * trusted time past its certificates and releases, after which the device
 * would refuse every hub. */
static void note_hub_time(el_client *c, const json_t *doc)
{
    json_t *t = json_object_get(doc, "time");
    if (!json_is_integer(t) || json_integer_value(t) <= 0)
        return;
    int64_t v = (int64_t)json_integer_value(t), limit = hub_not_after(c);
    if (limit && v > limit)
        c->hub_time_refused = v;
    else
        c->hub_time = v;
}

int el_client_last_resumed(const el_client *c)
{
    return c->resumed;
}

void el_client_forget_session(el_client *c)
{
    el_tls_ctx_forget_session(c->tls);
}

static int ensure_connected(el_client *c, el_error *err)
{
    if (c->conn)
        return 0;
    int rc = el_tls_connect(c->tls, c->opts.host, c->opts.port, &c->conn, err);
    if (rc)
        return rc;
    c->resumed = el_tls_conn_resumed(c->conn);
    el_http_conn_init(&c->http, c->conn, io_read, io_write);
    return 0;
}

int el_client_request(el_client *c, const char *method, const char *target,
                      const char *extra_headers, const void *body, size_t len,
                      el_http_msg *resp, el_error *err)
{
    el_http_limits lim = {.body_max = c->opts.body_max};
    for (int attempt = 0;; attempt++) {
        int fresh = c->conn == NULL;
        int rc = ensure_connected(c, err);
        if (rc)
            return rc;
        rc = el_http_write_request(&c->http, method, c->opts.host, target, extra_headers,
                                   "application/octet-stream", body, len, err);
        if (!rc) {
            el_http_msg_finish(resp);
            el_http_msg_init(resp);
            rc = el_http_read_response(&c->http, &lim, resp, err);
        }
        if (rc || !resp->keep_alive)
            el_client_disconnect(c);
        /* a kept connection the hub closed while idle: retry once on a new
         * one; every request of the API is idempotent */
        if (rc == EL_EIO && !fresh && attempt == 0)
            continue;
        return rc;
    }
}

/* Converts a non-2xx answer into ERR. */
static int status_error(const el_http_msg *resp, const char *what, el_error *err)
{
    int code;
    switch (resp->status) {
    case 400: case 411: case 413: case 414: case 416: case 431: code = EL_EINPUT; break;
    case 401: case 403: code = EL_ETRUST; break;
    case 404: code = EL_ENOTFOUND; break;
    case 409: code = EL_EPOLICY; break;
    default: code = EL_EIO; break;
    }
    const char *tag = resp->status == 413 ? "oversize" : NULL;
    const char *msg = NULL;
    json_t *doc = resp->body_len ? el_json_parse(resp->body, resp->body_len, 1 << 16,
                                                 "hub error", NULL)
                                 : NULL;
    json_t *e = doc ? json_object_get(doc, "error") : NULL;
    if (json_is_object(e)) {
        if (json_is_string(json_object_get(e, "code")))
            tag = json_string_value(json_object_get(e, "code"));
        if (json_is_string(json_object_get(e, "message")))
            msg = json_string_value(json_object_get(e, "message"));
    }
    if (tag)
        el_error_set_tag(err, code, tag, "%s: hub answered %d: %s", what, resp->status,
                         msg ? msg : el_http_reason(resp->status));
    else
        el_error_set(err, code, "%s: hub answered %d: %s", what, resp->status,
                     msg ? msg : el_http_reason(resp->status));
    json_decref(doc);
    return code;
}

int el_client_upload_bundle(el_client *c, const char *id, const uint8_t *bytes,
                            size_t len, int *created, el_error *err)
{
    char target[160];
    snprintf(target, sizeof target, "/v1/bundles/%s", id);
    el_http_msg resp;
    el_http_msg_init(&resp);
    int rc = el_client_request(c, "PUT", target, NULL, bytes, len, &resp, err);
    if (!rc && resp.status != 200 && resp.status != 201)
        rc = status_error(&resp, "upload", err);
    if (!rc && created)
        *created = resp.status == 201;
    el_http_msg_finish(&resp);
    return rc;
}

int el_client_post_status(el_client *c, const json_t *status, el_error *err)
{
    char *text = el_json_dump_sorted(status);
    if (!text)
        return el_error_set(err, EL_ENOMEM, "out of memory for a status report");
    el_http_msg resp;
    el_http_msg_init(&resp);
    int rc = el_client_request(c, "POST", "/v1/status", NULL, text, strlen(text), &resp, err);
    free(text);
    if (!rc && resp.status != 200)
        rc = status_error(&resp, "status", err);
    if (!rc) {
        /* the answer is only read for its time: a hub that sends none (or
         * an unparsable body) still took the report */
        json_t *doc = el_json_parse(resp.body, resp.body_len, 1 << 16, "status answer", NULL);
        note_hub_time(c, doc);
        json_decref(doc);
    }
    el_http_msg_finish(&resp);
    return rc;
}

int el_client_releases(el_client *c, int64_t since, json_t **out, el_error *err)
{
    char target[64];
    snprintf(target, sizeof target, "/v1/releases?since=%" PRId64, since);
    *out = NULL;
    el_http_msg resp;
    el_http_msg_init(&resp);
    int rc = el_client_request(c, "GET", target, NULL, NULL, 0, &resp, err);
    if (!rc && resp.status != 200)
        rc = status_error(&resp, "releases", err);
    if (!rc) {
        *out = el_json_parse(resp.body, resp.body_len, c->opts.body_max, "releases", err);
        if (!*out)
            rc = EL_EINPUT;
        else
            note_hub_time(c, *out);
    }
    el_http_msg_finish(&resp);
    return rc;
}

int el_client_get_json(el_client *c, const char *target, json_t **out, el_error *err)
{
    *out = NULL;
    el_http_msg resp;
    el_http_msg_init(&resp);
    int rc = el_client_request(c, "GET", target, NULL, NULL, 0, &resp, err);
    if (!rc && resp.status != 200)
        rc = status_error(&resp, target, err);
    if (!rc) {
        *out = el_json_parse(resp.body, resp.body_len, c->opts.body_max, target, err);
        if (!*out)
            rc = EL_EINPUT;
    }
    el_http_msg_finish(&resp);
    return rc;
}

int el_client_put_release(el_client *c, const char *id, const uint8_t *bytes, size_t len,
                          json_t **answer, int *created, el_error *err)
{
    char target[160];
    *answer = NULL;
    if (strlen(id) != EL_SHA256_HEX_LEN)
        return el_error_set(err, EL_EUSAGE, "release id must be 64 hex characters");
    snprintf(target, sizeof target, "/v1/releases/%s", id);
    el_http_msg resp;
    el_http_msg_init(&resp);
    int rc = el_client_request(c, "PUT", target, NULL, bytes, len, &resp, err);
    if (!rc && resp.status != 200 && resp.status != 201)
        rc = status_error(&resp, "release", err);
    if (!rc) {
        *answer = el_json_parse(resp.body, resp.body_len, 1 << 16, "release answer", err);
        if (!*answer)
            rc = EL_EINPUT;
        else if (created)
            *created = resp.status == 201;
    }
    el_http_msg_finish(&resp);
    return rc;
}

int el_client_fetch_root(el_client *c, int64_t version, uint8_t **out, size_t *len,
                         el_error *err)
{
    char target[64];
    snprintf(target, sizeof target, "/v1/root/%" PRId64, version);
    *out = NULL;
    *len = 0;
    el_http_msg resp;
    el_http_msg_init(&resp);
    int rc = el_client_request(c, "GET", target, NULL, NULL, 0, &resp, err);
    if (!rc && resp.status != 200)
        rc = status_error(&resp, "root", err);
    if (!rc) {
        *out = resp.body;
        *len = resp.body_len;
        resp.body = NULL;
    }
    el_http_msg_finish(&resp);
    return rc;
}

/* "bytes FIRST-LAST/TOTAL" */
static int parse_content_range(const char *v, uint64_t *first, uint64_t *last,
                               uint64_t *total)
{
    unsigned long long a, b, t;
    int used = 0;
    if (!v || sscanf(v, "bytes %llu-%llu/%llu%n", &a, &b, &t, &used) != 3 || v[used] ||
        b < a || b >= t)
        return -1;
    *first = a;
    *last = b;
    *total = t;
    return 0;
}

static int hash_file(const char *path, char hex[EL_SHA256_HEX_LEN + 1], el_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return el_error_set(err, EL_EIO, "%s: %s", path, strerror(errno));
    el_sha256_ctx ctx;
    el_sha256_init(&ctx);
    uint8_t buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        el_sha256_update(&ctx, buf, (size_t)n);
    close(fd);
    if (n < 0)
        return el_error_set(err, EL_EIO, "%s: %s", path, strerror(errno));
    uint8_t digest[EL_SHA256_LEN];
    el_sha256_final(&ctx, digest);
    el_hex(digest, sizeof digest, hex);
    return 0;
}

int el_client_download_blob(el_client *c, const char *sha256, const char *path,
                            el_error *err)
{
    char part[4096], target[160], range[96];
    if (strlen(sha256) != EL_SHA256_HEX_LEN)
        return el_error_set(err, EL_EUSAGE, "blob id must be 64 hex characters");
    if (snprintf(part, sizeof part, "%s.part", path) >= (int)sizeof part)
        return el_error_set(err, EL_EUSAGE, "download path too long");
    snprintf(target, sizeof target, "/v1/blobs/%s", sha256);
    int fd = open(part, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return el_error_set(err, EL_EIO, "%s: %s", part, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return el_error_set(err, EL_EIO, "%s: %s", part, strerror(errno));
    }
    uint64_t have = (uint64_t)st.st_size;
    uint64_t total = UINT64_MAX;
    int rc = 0;
    el_http_msg resp;
    el_http_msg_init(&resp);
    while (have < total) {
        snprintf(range, sizeof range, "Range: bytes=%" PRIu64 "-%" PRIu64 "\r\n", have,
                 have + DOWNLOAD_PIECE - 1);
        if ((rc = el_client_request(c, "GET", target, range, NULL, 0, &resp, err)) != 0)
            break;
        uint64_t first = 0, last = 0;
        if (resp.status == 416 && have > 0) {
            /* what we hold is already the whole blob (or longer): let the
             * hash decide */
            break;
        }
        if (resp.status == 200) {
            /* the hub ignored the range: start over with the full body */
            if (ftruncate(fd, 0) < 0) {
                rc = el_error_set(err, EL_EIO, "%s: %s", part, strerror(errno));
                break;
            }
            have = 0;
            total = resp.body_len;
        } else if (resp.status == 206) {
            if (parse_content_range(el_http_header_get(&resp, "Content-Range"), &first,
                                    &last, &total) ||
                first != have || last - first + 1 != resp.body_len) {
                rc = el_error_set(err, EL_EINPUT, "blob %s: bad Content-Range", sha256);
                break;
            }
        } else {
            rc = status_error(&resp, "blob", err);
            break;
        }
        size_t off = 0;
        while (off < resp.body_len) {
            ssize_t w = write(fd, resp.body + off, resp.body_len - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                rc = el_error_set(err, errno == ENOSPC ? EL_ENOSPC : EL_EIO, "%s: %s",
                                  part, strerror(errno));
                break;
            }
            off += (size_t)w;
        }
        if (rc)
            break;
        have += resp.body_len;
        el_http_msg_finish(&resp);
        el_http_msg_init(&resp);
    }
    el_http_msg_finish(&resp);
    if (!rc && fsync(fd) < 0)
        rc = el_error_set(err, EL_EIO, "%s: fsync: %s", part, strerror(errno));
    close(fd);
    if (rc)
        return rc;
    char hex[EL_SHA256_HEX_LEN + 1];
    if ((rc = hash_file(part, hex, err)) != 0)
        return rc;
    if (strcmp(hex, sha256)) {
        unlink(part);
        return el_error_set_tag(err, EL_ETRUST, "bad_signature",
                                "blob %s: downloaded bytes hash to %s", sha256, hex);
    }
    if (rename(part, path) < 0)
        return el_error_set(err, EL_EIO, "%s: rename: %s", path, strerror(errno));
    return el_fs_fsync_dir(path, 0, err);
}

int64_t el_client_backoff_ms(unsigned attempt, int64_t base_ms, int64_t cap_ms,
                             uint64_t *seed)
{
    int64_t ceiling = base_ms > 0 ? base_ms : 1;
    for (unsigned i = 0; i < attempt && ceiling < cap_ms; i++)
        ceiling *= 2;
    if (ceiling > cap_ms)
        ceiling = cap_ms;
    /* splitmix64: tiny, seedable, good enough for spreading retries */
    uint64_t z = (*seed += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return ceiling > 0 ? (int64_t)(z % (uint64_t)(ceiling + 1)) : 0;
}

long el_client_audit_message(const char *device, int64_t seq, const char *hash,
                             char *out, size_t n)
{
    static const char context[] = "edgeloop-audit-v1";
    size_t ctx_len = sizeof context;   /* with its NUL */
    if (n <= ctx_len)
        return -1;
    memcpy(out, context, ctx_len);
    int w = snprintf(out + ctx_len, n - ctx_len, "%s\n%" PRId64 "\n%s", device, seq, hash);
    if (w < 0 || (size_t)w >= n - ctx_len)
        return -1;
    return (long)(ctx_len + (size_t)w);
}
