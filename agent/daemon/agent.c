/* The agent's main loop: signals, configuration, the policy clock, the
 * training scheduler and the control commands. See agent.h for why training
 * runs in a child process.
 *
 * Invariants:
 *  1. Only the main thread touches the el_store, and never across a poll():
 *     every registry call is one short transaction, so CLI commands running
 *     beside the agent only ever wait for SQLite's busy timeout.
 *  2. At most one training child exists (train_pid). It dies with the agent
 *     (PR_SET_PDEATHSIG), so kill -9 of the agent never leaves an orphan
 *     trainer writing into the state.
 *  3. SIGTERM/SIGINT: the child gets SIGTERM and stop_timeout_s to finish,
 *     then SIGKILL (the registry is crash-safe at every instant); the socket
 *     file is removed and the store closed (its session ends cleanly).
 *  4. SIGHUP re-reads edgeloop.conf (by reopening the store) and --config.
 *
 * Timers (one-second tick): inbox scan every INBOX_EVERY_S, the policy clock
 * (el_store_tick: probation expiry) every CLOCK_EVERY_S, the scheduler
 * check every SCHEDULE_EVERY_S. A failed training run is retried after a
 * jittered exponential backoff bounded by [sync] backoff_cap_s.
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "daemon/agent.h"

#define INBOX_EVERY_S 2
#define CLOCK_EVERY_S 30
#define SCHEDULE_EVERY_S 5
#define MAX_CLIENTS 16
#define CLIENT_LINE_MAX 65536

typedef struct client {
    int fd;
    size_t len;
    char buf[CLIENT_LINE_MAX];
} client;

typedef struct agent {
    el_agent_opts opts;
    char state_dir[512];
    char exe[1024];
    el_store *store;
    el_store_config cfg;       /* the store's, with --config laid over */
    int window_from, window_to;
    int lock_fd, listen_fd;
    char sock_path[256];
    client *clients[MAX_CLIENTS];
    int paused;
    pid_t train_pid;
    int64_t train_started;
    unsigned train_failures;
    int64_t next_train_at;     /* backoff after a failed run */
    int64_t trainings, last_train_at;
    int last_train_exit;
    el_agent_inbox_stats inbox;
    uint64_t seed;
    int64_t started_at;
} agent;

static volatile sig_atomic_t got_stop, got_reload;

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        got_reload = 1;
    else
        got_stop = 1;
}

void el_agent_log(enum el_log_level level, const char *event, const char *fmt, ...)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    if (!el_log_enabled(level))
        return;
    char ts[32], rest[900] = "";
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rest, sizeof rest, fmt, ap);
        va_end(ap);
    }
    fprintf(stderr, "ts=%s level=%s event=%s%s%s\n", ts, names[level], event,
            *rest ? " " : "", rest);
}

int el_agent_window_parse(const char *text, int *from, int *to, el_error *err)
{
    *from = *to = -1;
    if (!text || !*text)
        return 0;
    int h1, m1, h2, m2, used = 0;
    if (sscanf(text, "%2d:%2d-%2d:%2d%n", &h1, &m1, &h2, &m2, &used) != 4 ||
        text[used] || h1 < 0 || h1 > 23 || h2 < 0 || h2 > 23 || m1 < 0 ||
        m1 > 59 || m2 < 0 || m2 > 59)
        return el_error_set(err, EL_EINPUT,
                            "[train] window = \"%s\" must be HH:MM-HH:MM", text);
    *from = h1 * 60 + m1;
    *to = h2 * 60 + m2;
    return 0;
}

int el_agent_window_contains(int from, int to, int minute)
{
    if (from < 0 || from == to)
        return 1;
    if (from < to)
        return minute >= from && minute < to;
    return minute >= from || minute < to;
}

/* ---- configuration --------------------------------------------------------- */

/* (Re)opens the store, which re-reads edgeloop.conf and applies boot
 * counting and probation expiry, then lays --config over a copy. */
static int load(agent *a, el_error *err)
{
    el_store *s = NULL;
    el_store_open_opts oo = {.actor = "agent"};
    int rc = el_store_open(a->state_dir, &oo, &s, err);
    if (rc)
        return rc;
    el_store_config cfg = *el_store_get_config(s);
    if (a->opts.config_path) {
        el_store_config over;
        el_config_defaults(&over);
        if ((rc = el_config_load_file(&over, a->opts.config_path, err)))
            goto fail;
        for (size_t i = 0; i < el_config_key_count(); i++) {
            /* a fleet policy outranks any file (DESIGN.md precedence) */
            if (over.source[i] != EL_CONFIG_FILE || cfg.source[i] == EL_CONFIG_POLICY)
                continue;
            const char *section, *key;
            char value[EL_CONFIG_STR_MAX + 32];
            el_config_key_at(i, &section, &key);
            el_config_value_text(&over, i, value, sizeof value);
            if ((rc = el_config_set(&cfg, section, key, value, EL_CONFIG_FILE,
                                    a->opts.config_path, err)))
                goto fail;
        }
    }
    int from, to;
    if ((rc = el_agent_window_parse(cfg.schedule.window, &from, &to, err)))
        goto fail;
    el_store_close(a->store);
    a->store = s;
    a->cfg = cfg;
    a->window_from = from;
    a->window_to = to;
    return 0;
fail:
    el_store_close(s);
    return rc;
}

/* ---- training ------------------------------------------------------------- */

static int64_t new_train_samples(agent *a)
{
    el_store_sample *v = NULL;
    size_t n = 0;
    el_error err = {0};
    if (el_store_samples(a->store, EL_LIST_NEW_TRAIN, &v, &n, &err)) {
        el_agent_log(EL_LOG_ERROR, "schedule.error", "error=\"%s\"", err.msg);
        return 0;
    }
    el_store_sample_list_free(v, n);
    return (int64_t)n;
}

static void start_training(agent *a, int64_t n_new)
{
    pid_t pid = fork();
    if (pid < 0) {
        el_agent_log(EL_LOG_ERROR, "train.error", "error=\"fork: %s\"", strerror(errno));
        return;
    }
    if (pid == 0) {
        /* the trainer must not outlive the agent (invariant 2) */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(1);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        dup2(2, 1);
        execl(a->exe, a->exe, "train", "--state", a->state_dir, (char *)NULL);
        _exit(127);
    }
    a->train_pid = pid;
    a->train_started = (int64_t)time(NULL);
    el_agent_log(EL_LOG_INFO, "train.started", "pid=%d new_samples=%lld", (int)pid,
                 (long long)n_new);
}

/* Exit statuses of `edgeloop train` (DESIGN.md): 0 trained (gate passed),
 * 3 refused by policy (gate failed), others: an error worth a retry later. */
static void training_ended(agent *a, int status)
{
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    int64_t now = (int64_t)time(NULL);
    a->train_pid = 0;
    a->trainings++;
    a->last_train_at = now;
    a->last_train_exit = code;
    if (code == 0 || code == 3) {
        a->train_failures = 0;
        a->next_train_at = 0;
        el_agent_log(EL_LOG_INFO, code ? "train.refused" : "train.done",
                     "exit=%d seconds=%lld", code, (long long)(now - a->train_started));
        return;
    }
    int64_t cap_ms = a->cfg.sync.backoff_cap_s * 1000;
    int64_t base_ms = a->cfg.sync.backoff_base_s * 1000;
    unsigned shift = a->train_failures < 30 ? a->train_failures : 30;
    int64_t span = base_ms << shift;
    if (span > cap_ms || span <= 0)
        span = cap_ms;
    /* full jitter (xorshift64*): failed devices must not retry in step */
    a->seed ^= a->seed >> 12;
    a->seed ^= a->seed << 25;
    a->seed ^= a->seed >> 27;
    int64_t delay_ms = (int64_t)((a->seed * 2685821657736338717ULL) % (uint64_t)(span + 1));
    a->train_failures++;
    a->next_train_at = now + (delay_ms + 999) / 1000;
    el_agent_log(EL_LOG_WARN, "train.failed", "exit=%d failures=%u retry_in_s=%lld", code,
                 a->train_failures, (long long)(a->next_train_at - now));
}

static void schedule(agent *a)
{
    int64_t now = (int64_t)time(NULL);
    if (a->paused || a->train_pid || now < a->next_train_at)
        return;
    time_t t = (time_t)now;
    struct tm tm;
    localtime_r(&t, &tm);
    if (!el_agent_window_contains(a->window_from, a->window_to,
                                  tm.tm_hour * 60 + tm.tm_min))
        return;
    int64_t n_new = new_train_samples(a);
    if (n_new >= a->cfg.schedule.min_new_samples)
        start_training(a, n_new);
}

/* Stops the training child within the bounded time (invariant 3). */
static void stop_training(agent *a)
{
    if (!a->train_pid)
        return;
    kill(a->train_pid, SIGTERM);
    int status = 0;
    int waited_ms = 0, limit_ms = a->opts.stop_timeout_s * 1000;
    while (waitpid(a->train_pid, &status, WNOHANG) == 0) {
        if (waited_ms >= limit_ms) {
            el_agent_log(EL_LOG_WARN, "train.killed", "pid=%d after_s=%d",
                         (int)a->train_pid, a->opts.stop_timeout_s);
            kill(a->train_pid, SIGKILL);
            waitpid(a->train_pid, &status, 0);
            break;
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        waited_ms += 100;
    }
    el_agent_log(EL_LOG_INFO, "train.stopped", "pid=%d", (int)a->train_pid);
    a->train_pid = 0;
}

/* ---- control commands -------------------------------------------------------- */

static json_t *fail_reply(const el_error *e)
{
    return json_pack("{sb s{ss ss}}", "ok", 0, "error", "code",
                     e->tag[0] ? e->tag : el_error_code_name(e->code), "message", e->msg);
}

static json_t *agent_json(const agent *a)
{
    return json_pack("{sb sI sb sI sI sI sI sI sI sI}", "running", 1,
                     "pid", (json_int_t)getpid(), "paused", a->paused,
                     "training_pid", (json_int_t)a->train_pid,
                     "trainings", (json_int_t)a->trainings,
                     "last_train_at", (json_int_t)a->last_train_at,
                     "last_train_exit", (json_int_t)a->last_train_exit,
                     "inbox_done", (json_int_t)a->inbox.files_done,
                     "inbox_rejected", (json_int_t)a->inbox.files_rejected,
                     "started_at", (json_int_t)a->started_at);
}

static int set_paused(agent *a, int paused, el_error *err)
{
    char path[600];
    snprintf(path, sizeof path, "%s/agent.paused", a->state_dir);
    if (paused) {
        int rc = el_fs_write_atomic(path, "paused\n", 7, 0640, err);
        if (rc)
            return rc;
    } else if (unlink(path) != 0 && errno != ENOENT) {
        return el_error_set(err, EL_EIO, "removing %s: %s", path, strerror(errno));
    }
    a->paused = paused;
    el_agent_log(EL_LOG_INFO, paused ? "train.paused" : "train.resumed", NULL);
    return 0;
}

/* Runs one request; returns the answer (new reference). */
static json_t *handle(agent *a, const char *line, size_t len)
{
    el_error err = {0};
    json_t *req = el_json_parse(line, len, CLIENT_LINE_MAX, "request", &err);
    json_t *reply = NULL;
    const char *cmd = NULL;
    if (!req)
        return fail_reply(&err);
    if (!json_is_object(req)) {
        el_error_set(&err, EL_EINPUT, "request: expected a JSON object");
        goto done;
    }
    if (el_json_get_str(req, "cmd", &cmd, "request", &err))
        goto done;
    int64_t version = 0;
    int rc = 0;
    if (!strcmp(cmd, "status")) {
        json_t *doc = el_agent_state_json(a->store, &err);
        if (doc) {
            json_object_set_new(doc, "agent", agent_json(a));
            reply = json_pack("{sb so}", "ok", 1, "status", doc);
        }
    } else if (!strcmp(cmd, "feedback")) {
        const char *verdict;
        const char *outcome = NULL;
        if (!(rc = el_json_get_str(req, "verdict", &verdict, "feedback", &err)) &&
            !(rc = el_json_get_i64_opt(req, "version", 0, INT64_MAX, &version,
                                       "feedback", &err))) {
            if (strcmp(verdict, "accept") && strcmp(verdict, "reject"))
                rc = el_error_set(&err, EL_EINPUT,
                                  "feedback: verdict must be accept or reject");
            else
                rc = el_store_feedback(a->store, version, !strcmp(verdict, "accept"),
                                       &outcome, &err);
        }
        if (!rc) {
            el_agent_log(EL_LOG_INFO, "feedback", "verdict=%s version=%lld outcome=%s",
                         verdict, (long long)version, outcome);
            reply = json_pack("{sb ss}", "ok", 1, "outcome", outcome);
        }
    } else if (!strcmp(cmd, "activate")) {
        if (!(rc = el_json_get_i64(req, "version", 1, INT64_MAX, &version, "activate",
                                   &err)) &&
            !(rc = el_store_activate(a->store, version, &err))) {
            el_agent_log(EL_LOG_INFO, "activated", "version=%lld", (long long)version);
            reply = json_pack("{sb sI}", "ok", 1, "active", (json_int_t)version);
        }
    } else if (!strcmp(cmd, "rollback")) {
        /* "to": absent (the last good version), a version id, or "base" */
        json_t *to = json_object_get(req, "to");
        if (to && json_is_string(to) && !strcmp(json_string_value(to), "base"))
            version = -1;
        else if (to && json_is_integer(to) && json_integer_value(to) > 0)
            version = json_integer_value(to);
        else if (to)
            rc = el_error_set(&err, EL_EINPUT,
                              "rollback: \"to\" must be a version id or \"base\"");
        if (!rc && !(rc = el_store_rollback(a->store, version, "operator (agent socket)",
                                            &err))) {
            int64_t active = 0;
            el_store_active(a->store, &active, NULL);
            el_agent_log(EL_LOG_INFO, "rolled_back", "active=%lld", (long long)active);
            reply = json_pack("{sb sI}", "ok", 1, "active", (json_int_t)active);
        }
    } else if (!strcmp(cmd, "pause-training") || !strcmp(cmd, "resume-training")) {
        if (!set_paused(a, cmd[0] == 'p', &err))
            reply = json_pack("{sb sb}", "ok", 1, "paused", a->paused);
    } else {
        el_error_set(&err, EL_EUSAGE,
                     "unknown command \"%s\" (status, feedback, activate, rollback, "
                     "pause-training, resume-training)", cmd);
    }
done:
    json_decref(req);
    if (!reply && !err.code)
        el_error_set(&err, EL_ENOMEM, "out of memory");
    return reply ? reply : fail_reply(&err);
}

static void drop_client(agent *a, int i)
{
    close(a->clients[i]->fd);
    el_free(a->clients[i]);
    a->clients[i] = NULL;
}

static void client_readable(agent *a, int i)
{
    client *c = a->clients[i];
    ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (r < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (r <= 0) {
        drop_client(a, i);
        return;
    }
    c->len += (size_t)r;
    char *nl;
    while (a->clients[i] && (nl = memchr(c->buf, '\n', c->len))) {
        size_t line_len = (size_t)(nl - c->buf);
        json_t *reply = handle(a, c->buf, line_len);
        char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
        json_decref(reply);
        /* answers are small against a Unix socket's buffer; a client that
         * does not read them is dropped rather than waited for */
        int ok = text && send(c->fd, text, strlen(text), MSG_NOSIGNAL) ==
                             (ssize_t)strlen(text) &&
                 send(c->fd, "\n", 1, MSG_NOSIGNAL) == 1;
        free(text);
        memmove(c->buf, nl + 1, c->len - line_len - 1);
        c->len -= line_len + 1;
        if (!ok)
            drop_client(a, i);
    }
    if (a->clients[i] && c->len == sizeof c->buf) {
        el_agent_log(EL_LOG_WARN, "control.refused", "why=\"request line too long\"");
        drop_client(a, i);
    }
}

static void accept_clients(agent *a)
{
    for (;;) {
        int fd = accept4(a->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        int slot = -1;
        for (int i = 0; i < MAX_CLIENTS && slot < 0; i++)
            if (!a->clients[i])
                slot = i;
        client *c = slot >= 0 ? el_malloc(sizeof *c) : NULL;
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->len = 0;
        a->clients[slot] = c;
    }
}

/* ---- the loop ------------------------------------------------------------------ */

static int take_lock(agent *a, el_error *err)
{
    char path[600];
    snprintf(path, sizeof path, "%s/agent.lock", a->state_dir);
    a->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (a->lock_fd < 0)
        return el_error_set(err, EL_EIO, "opening %s: %s", path, strerror(errno));
    if (flock(a->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return el_error_set(err, EL_EPOLICY, "another agent runs on %s (%s is locked)",
                            a->state_dir, path);
    return 0;
}

static void tick(agent *a, int64_t now, int64_t *next_inbox, int64_t *next_clock,
                 int64_t *next_schedule)
{
    el_error err = {0};
    if (a->train_pid) {
        int status;
        if (waitpid(a->train_pid, &status, WNOHANG) == a->train_pid)
            training_ended(a, status);
    }
    if (now >= *next_inbox) {
        int64_t added = a->inbox.samples_added;
        el_agent_inbox_scan(a->store, &a->inbox, &err);
        *next_inbox = now + INBOX_EVERY_S;
        if (a->inbox.samples_added != added)
            *next_schedule = now;
    }
    if (now >= *next_clock) {
        if (el_store_tick(a->store, now, &err))
            el_agent_log(EL_LOG_ERROR, "clock.error", "error=\"%s\"", err.msg);
        *next_clock = now + CLOCK_EVERY_S;
    }
    if (now >= *next_schedule) {
        schedule(a);
        *next_schedule = now + SCHEDULE_EVERY_S;
    }
}

int el_agent_run(const el_agent_opts *opts, el_error *err)
{
    agent *a = el_calloc(1, sizeof *a);
    if (!a)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    a->opts = *opts;
    a->lock_fd = a->listen_fd = -1;
    if (a->opts.stop_timeout_s <= 0)
        a->opts.stop_timeout_s = 30;
    snprintf(a->state_dir, sizeof a->state_dir, "%s", el_store_state_dir(opts->state_dir));
    int rc = 0;
    if (opts->edgeloop_exe) {
        snprintf(a->exe, sizeof a->exe, "%s", opts->edgeloop_exe);
    } else {
        ssize_t n = readlink("/proc/self/exe", a->exe, sizeof a->exe - 1);
        if (n <= 0) {
            rc = el_error_set(err, EL_EINTERNAL, "cannot find my own executable");
            goto out;
        }
        a->exe[n] = '\0';
    }
    a->started_at = (int64_t)time(NULL);
    a->seed = (uint64_t)a->started_at ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ULL;
    if (!el_fs_exists(a->state_dir)) {
        rc = el_error_set(err, EL_ENOTFOUND, "%s: no state directory (run `edgeloop init`)",
                          a->state_dir);
        goto out;
    }
    if ((rc = take_lock(a, err)) || (rc = load(a, err)) ||
        (rc = el_agent_socket_path(a->state_dir, a->sock_path, sizeof a->sock_path, err)) ||
        (rc = el_agent_control_listen(a->sock_path, &a->listen_fd, err)))
        goto out;
    char paused_path[600];
    snprintf(paused_path, sizeof paused_path, "%s/agent.paused", a->state_dir);
    a->paused = el_fs_exists(paused_path);

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    el_agent_log(EL_LOG_INFO, "agent.started", "pid=%d state=%s socket=%s paused=%d",
                 (int)getpid(), a->state_dir, a->sock_path, a->paused);

    int64_t next_inbox = 0, next_clock = 0, next_schedule = 0;
    while (!got_stop) {
        if (got_reload) {
            got_reload = 0;
            el_error lerr = {0};
            if (load(a, &lerr))
                el_agent_log(EL_LOG_ERROR, "config.error", "error=\"%s\" kept=previous",
                             lerr.msg);
            else
                el_agent_log(EL_LOG_INFO, "config.reloaded", "min_new_samples=%lld "
                             "window=\"%s\"", (long long)a->cfg.schedule.min_new_samples,
                             a->cfg.schedule.window);
        }
        tick(a, (int64_t)time(NULL), &next_inbox, &next_clock, &next_schedule);
        struct pollfd pfd[MAX_CLIENTS + 1];
        int idx[MAX_CLIENTS + 1];
        nfds_t n = 0;
        pfd[n] = (struct pollfd){.fd = a->listen_fd, .events = POLLIN};
        idx[n++] = -1;
        for (int i = 0; i < MAX_CLIENTS; i++)
            if (a->clients[i]) {
                pfd[n] = (struct pollfd){.fd = a->clients[i]->fd, .events = POLLIN};
                idx[n++] = i;
            }
        if (poll(pfd, n, 1000) <= 0)
            continue;
        for (nfds_t k = 0; k < n; k++) {
            if (!pfd[k].revents)
                continue;
            if (idx[k] < 0)
                accept_clients(a);
            else if (a->clients[idx[k]])
                client_readable(a, idx[k]);
        }
    }
    el_agent_log(EL_LOG_INFO, "agent.stopping", "training_pid=%d", (int)a->train_pid);
    stop_training(a);
    el_agent_log(EL_LOG_INFO, "agent.stopped", NULL);
out:
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (a->clients[i])
            drop_client(a, i);
    if (a->listen_fd >= 0) {
        close(a->listen_fd);
        unlink(a->sock_path);
    }
    el_store_close(a->store);
    if (a->lock_fd >= 0)
        close(a->lock_fd);
    el_free(a);
    return rc;
}
