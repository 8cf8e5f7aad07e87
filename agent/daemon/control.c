/* The agent's control socket plumbing and the status document.
 *
 * Protocol (STATE/agent.sock, a Unix stream socket, mode 0660 so a group of
 * operators can use it): the client writes one JSON object on one line,
 * {"cmd": NAME, ...}, and reads one JSON object on one line, {"ok": true,
 * ...} or {"ok": false, "error": {"code", "message"}}. A connection may
 * carry many requests. Lines are limited to EL_AGENT_LINE_MAX bytes.
 *
 * A failure answer's "code" is the error's stable tag (what `--json` prints
 * as error.code) and "class" the name of its EL_E* code, so a client can
 * give the exit status the command would have given without an agent.
 *
 * The status document is built from the registry alone, so `edgeloop
 * status` prints the same document whether or not an agent runs (the agent
 * adds its own "agent" member).
 *
 * Routing (el_agent_route): the state-changing CLI commands that the socket
 * offers (feedback, activate, rollback, pin, unpin, pause-training,
 * resume-training)
 * either are answered by the agent or run directly on the state while
 * holding STATE/agent.lock shared. A running agent holds that lock
 * exclusively from before it opens the registry until after its socket is
 * gone, so:
 *  1. a routed command never writes directly while an agent runs: it either
 *     got the shared lock (no agent can run until it lets go), or an agent
 *     answered, or it fails with EL_EUNAVAIL after waiting for an agent that
 *     holds the lock but does not answer (starting, stopping, stuck);
 *  2. an agent that starts while routed commands hold the lock waits for
 *     them (el_agent_lock_wait) instead of starting beside them.
 * Other commands (ingest, train, gc, ...) write directly whether or not
 * an agent runs; SQLite's write lock (BEGIN IMMEDIATE, busy timeout)
 * serializes their transactions with the agent's.
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/json.h"
#include "daemon/agent.h"

#define EL_AGENT_LINE_MAX (1 << 20)
#define RECENT_DECISIONS 10
#define CLIENT_TIMEOUT_MS 30000
#define ROUTE_WAIT_DEFAULT_S 15
#define LOCK_POLL_MS 100

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

/* Connects to the Unix socket PATH. Returns 0 with *FD set, or the errno
 * of the failure. */
static int connect_to(const char *path, int *fd)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return errno ? errno : EIO;
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno ? errno : EIO;
        close(s);
        return e;
    }
    *fd = s;
    return 0;
}

int el_agent_answers(const char *state_dir)
{
    char path[256];
    int fd;
    if (el_agent_socket_path(state_dir, path, sizeof path, NULL) || connect_to(path, &fd))
        return 0;
    close(fd);
    return 1;
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
    int e = connect_to(path, &fd);
    /* a socket the caller may not use is not "no agent": the agent may well
     * run, and the direct path must not be taken beside it */
    if (e == EACCES || e == EPERM)
        return el_error_set(err, EL_EIO, "%s: %s (the socket is mode 0660: run as the "
                            "agent's user or group)", path, strerror(e));
    if (e)
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
            rc = el_error_set(err, EL_EIO, "%s: no answer within %d s (the agent may "
                              "still carry the request out: check before repeating it)",
                              path, CLIENT_TIMEOUT_MS / 1000);
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

/* ---- the agent lock and routing ------------------------------------------- */

int el_agent_lock_open(const char *state_dir, int *fd, el_error *err)
{
    char path[600];
    *fd = -1;
    if (snprintf(path, sizeof path, "%s/agent.lock", state_dir) >= (int)sizeof path)
        return el_error_set(err, EL_EUSAGE, "%s: state directory path too long", state_dir);
    /* read-only is enough for flock(), and lets an operator who may read
     * but not write the file (the agent created it, mode 0640) lock it */
    int f = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0640);
    if (f < 0 && errno == ENOENT)
        return el_error_set(err, EL_ENOTFOUND, "%s: no state directory", state_dir);
    if (f < 0)
        return el_error_set(err, EL_EIO, "opening %s: %s", path, strerror(errno));
    *fd = f;
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Seconds a routed command waits for an agent that holds the lock but does
 * not answer: $EDGELOOP_AGENT_WAIT_S (0..3600), else ROUTE_WAIT_DEFAULT_S. */
static int route_wait_s(void)
{
    const char *text = getenv("EDGELOOP_AGENT_WAIT_S");
    if (!text || !*text)
        return ROUTE_WAIT_DEFAULT_S;
    char *end;
    long v = strtol(text, &end, 10);
    return (*end || v < 0 || v > 3600) ? ROUTE_WAIT_DEFAULT_S : (int)v;
}

int el_agent_route(const char *state_dir, const json_t *request, json_t **reply,
                   int *lock_fd, el_error *err)
{
    *reply = NULL;
    *lock_fd = -1;
    char sock[256];
    /* a path too long for a socket means no agent can listen there */
    int can_listen = el_agent_socket_path(state_dir, sock, sizeof sock, NULL) == 0;
    int fd = -1, rc;
    int64_t deadline = now_ms() + (int64_t)route_wait_s() * 1000;
    for (;;) {
        if (can_listen) {
            rc = el_agent_request(state_dir, request, reply, err);
            if (rc != EL_EUNAVAIL) {
                /* answered (0), or a broken exchange: either way the agent
                 * runs, so the direct path is not an option */
                if (fd >= 0)
                    close(fd);
                return rc;
            }
        }
        if (fd < 0) {
            rc = el_agent_lock_open(state_dir, &fd, err);
            if (rc == EL_ENOTFOUND) {
                /* no state: the direct path's open names the problem */
                el_error_clear(err);
                return 0;
            }
            if (rc)
                return rc;
        }
        if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
            el_error_clear(err);
            *lock_fd = fd;
            return 0;
        }
        if (errno != EWOULDBLOCK && errno != EINTR) {
            int e = errno;
            close(fd);
            return el_error_set(err, EL_EIO, "locking %s/agent.lock: %s", state_dir,
                                strerror(e));
        }
        if (now_ms() >= deadline) {
            close(fd);
            return el_error_set(err, EL_EUNAVAIL,
                                "an agent holds %s/agent.lock but does not answer on %s "
                                "(starting, stopping or stuck); nothing was changed: try "
                                "again, or see the agent's log", state_dir,
                                can_listen ? sock : "its socket");
        }
        pause_ms(LOCK_POLL_MS);
    }
}

void el_agent_route_end(int lock_fd)
{
    if (lock_fd >= 0)
        close(lock_fd);   /* closing the last descriptor releases the flock */
}

int el_agent_lock_wait(const char *state_dir, int fd, int wait_s, el_error *err)
{
    int64_t deadline = now_ms() + (int64_t)wait_s * 1000;
    for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            return 0;
        if (errno != EWOULDBLOCK && errno != EINTR)
            return el_error_set(err, EL_EIO, "locking %s/agent.lock: %s", state_dir,
                                strerror(errno));
        if (el_agent_answers(state_dir))
            return el_error_set(err, EL_EPOLICY, "another agent runs on %s (%s/agent.lock "
                                "is locked)", state_dir, state_dir);
        if (now_ms() >= deadline)
            return el_error_set(err, EL_EPOLICY, "another agent runs on %s, or an edgeloop "
                                "command held %s/agent.lock for more than %d s", state_dir,
                                state_dir, wait_s);
        pause_ms(LOCK_POLL_MS);
    }
}

int el_agent_reply_error(const json_t *reply, el_error *err)
{
    json_t *e = json_object_get(reply, "error");
    const char *tag = json_string_value(json_object_get(e, "code"));
    const char *cls = json_string_value(json_object_get(e, "class"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    static const int codes[] = {EL_EUSAGE, EL_EINTERNAL, EL_ENOMEM, EL_EIO, EL_ENOSPC,
                                EL_EINPUT, EL_ENOTFOUND, EL_EUNAVAIL, EL_ETRUST,
                                EL_EPOLICY};
    int code = EL_EINTERNAL;
    /* an agent from before "class" sends the class name as the code unless
     * the error had its own tag */
    const char *name = cls ? cls : tag;
    for (size_t i = 0; name && i < sizeof codes / sizeof codes[0]; i++)
        if (!strcmp(name, el_error_code_name(codes[i])))
            code = codes[i];
    if (!json_is_object(e) || !msg)
        return el_error_set(err, EL_EINPUT, "the agent's answer is neither a success nor "
                            "an error");
    return el_error_set_tag(err, code, tag ? tag : el_error_code_name(code), "%s", msg);
}

/* Stored JSON text back into a value for embedding; as the CLI prints it. */
static json_t *embed(const char *text)
{
    if (!text)
        return json_null();
    json_t *v = json_loads(text, 0, NULL);
    return v ? v : json_string(text);
}

static json_t *id_or_null(int64_t id)
{
    return id ? json_integer(id) : json_null();
}

json_t *el_agent_version_json(const el_store_version *v)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "id", json_integer(v->id));
    json_object_set_new(o, "parent", id_or_null(v->parent_id));
    json_object_set_new(o, "base", json_string(v->base_hash));
    json_object_set_new(o, "state", json_string(v->state));
    json_object_set_new(o, "origin", json_string(v->origin));
    json_object_set_new(o, "active", json_boolean(v->active));
    json_object_set_new(o, "pinned", json_boolean(v->pinned));
    json_object_set_new(o, "data_digest", json_string(v->data_digest));
    json_object_set_new(o, "adapter_hash", json_string(v->adapter_hash));
    json_object_set_new(o, "backend", json_string(v->backend));
    json_object_set_new(o, "seed", json_integer(v->seed));
    json_object_set_new(o, "recipe", embed(v->recipe));
    json_object_set_new(o, "metrics", embed(v->metrics));
    json_object_set_new(o, "plasticity", embed(v->plasticity));
    json_object_set_new(o, "gate", embed(v->gate));
    json_object_set_new(o, "reason", v->reason ? json_string(v->reason) : json_null());
    json_object_set_new(o, "signer", v->signer ? json_string(v->signer) : json_null());
    json_object_set_new(o, "created_at", json_integer(v->created_at));
    json_object_set_new(o, "updated_at", json_integer(v->updated_at));
    json_object_set_new(o, "activated_at", id_or_null(v->activated_at));
    json_object_set_new(o, "probation_since", id_or_null(v->probation_since));
    json_object_set_new(o, "crashes", json_integer(v->crashes));
    return o;
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
