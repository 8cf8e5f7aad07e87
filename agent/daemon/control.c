/* The agent's control socket plumbing and the status document.
 *
 * Protocol (STATE/agent.sock, a Unix stream socket, mode 0660 so a group of
 * operators can use it): the client writes one JSON object on one line,
 * {"cmd": NAME, ...}, and reads one JSON object on one line, {"ok": true,
 * ...} or {"ok": false, "error": {"code", "message"}}. A connection may
 * carry many requests. Lines are limited to EL_AGENT_LINE_MAX bytes.
 *
 * The status document is built from the registry alone, so `edgeloop
 * status` prints the same document whether or not an agent runs (the agent
 * adds its own "agent" member).
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/json.h"
#include "daemon/agent.h"

#define EL_AGENT_LINE_MAX (1 << 20)
#define RECENT_DECISIONS 10
#define CLIENT_TIMEOUT_MS 30000

int el_agent_socket_path(const char *state_dir, char *out, size_t n, el_error *err)
{
    struct sockaddr_un sa;
    size_t need = strlen(state_dir) + sizeof "/agent.sock";
    if (need > n || need > sizeof sa.sun_path)
        return el_error_set(err, EL_EUSAGE,
                            "%s/agent.sock: the path is too long for a Unix socket",
                            state_dir);
    snprintf(out, n, "%s/agent.sock", state_dir);
    return 0;
}

static int connect_to(const char *path, int *fd)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(s);
        return -1;
    }
    *fd = s;
    return 0;
}

int el_agent_control_listen(const char *path, int *fd, el_error *err)
{
    int probe;
    if (connect_to(path, &probe) == 0) {
        close(probe);
        return el_error_set(err, EL_EPOLICY, "an agent already answers on %s", path);
    }
    /* nobody answers: a socket file left by a dead agent */
    if (unlink(path) != 0 && errno != ENOENT)
        return el_error_set(err, EL_EIO, "removing stale %s: %s", path, strerror(errno));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0)
        return el_error_set(err, EL_EIO, "socket: %s", strerror(errno));
    if (bind(s, (struct sockaddr *)&sa, sizeof sa) != 0 || chmod(path, 0660) != 0 ||
        listen(s, 16) != 0) {
        int e = errno;
        close(s);
        return el_error_set(err, EL_EIO, "listening on %s: %s", path, strerror(e));
    }
    *fd = s;
    return 0;
}

/* Writes all of BUF to FD (blocking socket). */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

int el_agent_request(const char *state_dir, const json_t *request, json_t **reply,
                     el_error *err)
{
    *reply = NULL;
    char path[256];
    int rc = el_agent_socket_path(state_dir, path, sizeof path, err);
    if (rc)
        return rc;
    int fd;
    if (connect_to(path, &fd) != 0)
        return el_error_set(err, EL_EUNAVAIL, "no agent answers on %s", path);
    char *line = json_dumps(request, JSON_COMPACT);
    if (!line) {
        close(fd);
        return el_error_set(err, EL_ENOMEM, "out of memory");
    }
    rc = write_all(fd, line, strlen(line)) || write_all(fd, "\n", 1);
    free(line);
    if (rc) {
        close(fd);
        return el_error_set(err, EL_EIO, "writing to %s: %s", path, strerror(errno));
    }
    size_t cap = 4096, len = 0;
    char *buf = el_malloc(cap);
    rc = buf ? 0 : el_error_set(err, EL_ENOMEM, "out of memory");
    while (rc == 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ready = poll(&p, 1, CLIENT_TIMEOUT_MS);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0) {
            rc = el_error_set(err, EL_EIO, "%s: no answer within %d s", path,
                              CLIENT_TIMEOUT_MS / 1000);
            break;
        }
        if (len + 1 >= cap) {
            if (cap >= EL_AGENT_LINE_MAX) {
                rc = el_error_set(err, EL_EINPUT, "%s: answer longer than %d bytes",
                                  path, EL_AGENT_LINE_MAX);
                break;
            }
            char *bigger = el_realloc(buf, cap * 2);
            if (!bigger) {
                rc = el_error_set(err, EL_ENOMEM, "out of memory");
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = el_error_set(err, EL_EIO, "%s: the agent closed the connection", path);
            break;
        }
        char *nl = memchr(buf + len, '\n', (size_t)r);
        len += (size_t)r;
        if (nl) {
            *reply = el_json_parse(buf, (size_t)(nl - buf), EL_AGENT_LINE_MAX,
                                   "agent answer", err);
            rc = *reply ? 0 : EL_EINPUT;
            if (*reply && !json_is_object(*reply)) {
                json_decref(*reply);
                *reply = NULL;
                rc = el_error_set(err, EL_EINPUT, "%s: the answer is not an object", path);
            }
            break;
        }
    }
    el_free(buf);
    close(fd);
    return rc;
}

/* ---- the status document --------------------------------------------------- */

static json_t *parsed_or_string(const char *text)
{
    if (!text || !*text)
        return json_null();
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    return v ? v : json_string(text);
}

static json_t *active_json(el_store *s, int64_t id, el_error *err)
{
    if (id == 0)
        return json_null();
    el_store_version v = {0};
    if (el_store_version_get(s, id, &v, err))
        return NULL;
    const el_store_config *c = el_store_get_config(s);
    json_t *o = json_pack("{sI ss ss sb sI sI sI}", "id", (json_int_t)v.id,
                          "state", v.state, "origin", v.origin, "pinned", v.pinned,
                          "activated_at", (json_int_t)v.activated_at,
                          "crashes", (json_int_t)v.crashes,
                          "parent", (json_int_t)v.parent_id);
    if (o && !strcmp(v.state, "probation")) {
        json_object_set_new(o, "probation", json_pack(
            "{sI sf sI sf}", "since", (json_int_t)v.probation_since,
            "hours", c->probation.hours, "events", (json_int_t)c->probation.events,
            "ends_at", (double)v.probation_since + c->probation.hours * 3600.0));
    }
    el_store_version_finish(&v);
    if (!o)
        el_error_set(err, EL_ENOMEM, "out of memory");
    return o;
}

json_t *el_agent_state_json(el_store *s, el_error *err)
{
    json_t *doc = json_object();
    el_store_version *versions = NULL;
    size_t n_versions = 0;
    el_store_audit_row *rows = NULL;
    size_t n_rows = 0;
    int64_t active = 0;
    el_store_sample_counts counts = {0};
    if (!doc) {
        el_error_set(err, EL_ENOMEM, "out of memory");
        return NULL;
    }
    if (el_store_active(s, &active, err) ||
        el_store_version_list(s, &versions, &n_versions, err) ||
        el_store_sample_count(s, &counts, err) ||
        el_store_audit_list(s, &rows, &n_rows, err))
        goto fail;
    json_t *a = active_json(s, active, err);
    if (!a)
        goto fail;
    json_object_set_new(doc, "state_dir", json_string(el_store_dir(s)));
    json_object_set_new(doc, "active", a);

    json_t *by_state = json_object();
    for (size_t i = 0; i < n_versions; i++) {
        json_t *c = json_object_get(by_state, versions[i].state);
        json_object_set_new(by_state, versions[i].state,
                            json_integer(c ? json_integer_value(c) + 1 : 1));
    }
    json_object_set_new(doc, "versions", by_state);
    json_object_set_new(doc, "samples", json_pack(
        "{sI sI sI sI sI sI}", "train", (json_int_t)counts.train,
        "holdout", (json_int_t)counts.holdout,
        "anchor_replay", (json_int_t)counts.anchor_replay,
        "anchor_check", (json_int_t)counts.anchor_check,
        "probe", (json_int_t)counts.probe, "total", (json_int_t)counts.total));

    json_t *recent = json_array();
    size_t first = n_rows > RECENT_DECISIONS ? n_rows - RECENT_DECISIONS : 0;
    for (size_t i = n_rows; i-- > first;)
        json_array_append_new(recent, json_pack(
            "{sI sI ss ss sI so}", "seq", (json_int_t)rows[i].seq,
            "at", (json_int_t)rows[i].at, "event", rows[i].event,
            "actor", rows[i].actor, "version", (json_int_t)rows[i].version_id,
            "figures", parsed_or_string(rows[i].figures)));
    json_object_set_new(doc, "recent_decisions", recent);
    if (n_rows)
        json_object_set_new(doc, "audit_head", json_pack(
            "{sI ss}", "seq", (json_int_t)rows[n_rows - 1].seq, "hash",
            rows[n_rows - 1].hash));
    else
        json_object_set_new(doc, "audit_head", json_null());
    el_store_version_list_free(versions, n_versions);
    el_store_audit_list_free(rows, n_rows);
    return doc;
fail:
    el_store_version_list_free(versions, n_versions);
    el_store_audit_list_free(rows, n_rows);
    json_decref(doc);
    return NULL;
}
