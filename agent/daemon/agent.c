/* The agent's main loop: signals, configuration, the policy clock, the
 * training scheduler and the control commands. See agent.h for why training
 * runs in a child process.
 *
 * Invariants:
 *  1. Only the main thread touches the el_store, and never across a poll():
 *     every registry call is one short transaction, so CLI commands running
 *     beside the agent only ever wait for SQLite's busy timeout.
 *  2. At most one training and one sync child exist (job.pid). They die with the agent
 *     (PR_SET_PDEATHSIG), so kill -9 of the agent never leaves an orphan
 *     trainer writing into the state.
 *  3. SIGTERM/SIGINT: the child gets SIGTERM and stop_timeout_s to finish,
 *     then SIGKILL (the registry is crash-safe at every instant); the socket
 *     file is removed and the store closed (its session ends cleanly).
 *  4. SIGHUP re-reads edgeloop.conf (by reopening the store) and --config.
 *  5. agent.lock is held exclusively from before the store opens until
 *     after the socket is gone; the socket stops accepting before a stop
 *     waits for children, so a CLI command meanwhile finds the lock held
 *     and no answer, and waits (control.c, "Routing") instead of writing
 *     beside the agent or hanging on an unanswered connection.
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
#include "client.h"
#include "daemon/agent.h"
#include "daemon/device.h"
#include "daemon/sync.h"

#define INBOX_EVERY_S 2
#define CLOCK_EVERY_S 30
#define SCHEDULE_EVERY_S 5
#define MAX_CLIENTS 16
#define CLIENT_LINE_MAX 65536
#define GENERATE_OUT_MAX (256 * 1024)   /* the child's JSON answer */
#define PROMPT_MAX 16384
#define LOCK_WAIT_S 30          /* for routed commands holding agent.lock */

typedef struct client {
    int fd;
    uint64_t serial;           /* tells a reused slot (and fd) apart */
    size_t len;
    char buf[CLIENT_LINE_MAX];
} client;

/* A child process the agent runs: `edgeloop train` or `edgeloop sync`. */
typedef struct job {
    const char *command;       /* the edgeloop subcommand */
    pid_t pid;                 /* 0 when not running */
    int64_t started;
    unsigned failures;         /* consecutive failed runs */
    int64_t next_at;           /* not before (backoff, or the sync interval) */
    int64_t runs, last_at;
    int last_exit;
} job;

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
    job train, sync;
    struct {                   /* one `generate` at a time, answered later */
        pid_t pid;
        int fd;                /* the child's stdout, -1 when none */
        int client;            /* slot of the asking client */
        uint64_t client_serial;  /* ... and its serial, in case the slot was reused */
        int64_t version;
        size_t len;
        char out[GENERATE_OUT_MAX];
    } gen;
    int64_t good_versions;
    uint64_t client_serial;     /* -1 until counted: a new good one syncs */
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

/* Lays --config over BASE into *OUT and parses the training window. */
static int overlay(const agent *a, const el_store_config *base, el_store_config *out,
                   int *from, int *to, el_error *err)
{
    *out = *base;
    if (a->opts.config_path) {
        el_store_config over;
        /* el_config_load_file takes a missing file for "all defaults"; a
         * --config the operator named must exist */
        if (!el_fs_exists(a->opts.config_path))
            return el_error_set(err, EL_ENOTFOUND, "%s: no such configuration file",
                                a->opts.config_path);
        el_config_defaults(&over);
        int rc = el_config_load_file(&over, a->opts.config_path, err);
        if (rc)
            return rc;
        for (size_t i = 0; i < el_config_key_count(); i++) {
            /* a fleet policy outranks any file (DESIGN.md precedence) */
            if (over.source[i] != EL_CONFIG_FILE || base->source[i] == EL_CONFIG_POLICY)
                continue;
            const char *section, *key;
            char value[EL_CONFIG_STR_MAX + 32];
            el_config_key_at(i, &section, &key);
            el_config_value_text(&over, i, value, sizeof value);
            if ((rc = el_config_set(out, section, key, value, EL_CONFIG_FILE,
                                    a->opts.config_path, err)))
                return rc;
        }
    }
    return el_agent_window_parse(out->schedule.window, from, to, err);
}

/* (Re)opens the store, which re-reads edgeloop.conf and applies boot
 * counting and probation expiry, then lays --config over a copy. On a
 * reload both files are checked first and the running store is closed
 * before the new one opens: two open stores in one process would share one
 * session row (sessions are per pid), and closing the old one would delete
 * the new one's. A refused reload keeps the running configuration. */
static int load(agent *a, el_error *err)
{
    el_store_config cfg;
    int from, to, rc;
    if (a->store) {
        char path[600];
        el_store_config file;
        el_config_defaults(&file);
        snprintf(path, sizeof path, "%s/edgeloop.conf", a->state_dir);
        if ((rc = el_config_load_file(&file, path, err)) ||
            (rc = overlay(a, &file, &cfg, &from, &to, err)))
            return rc;
        el_store_close(a->store);
        a->store = NULL;
    }
    el_store_open_opts oo = {.actor = "agent"};
    if ((rc = el_store_open(a->state_dir, &oo, &a->store, err)))
        return rc;
    if ((rc = overlay(a, el_store_get_config(a->store), &cfg, &from, &to, err)))
        return rc;
    a->cfg = cfg;
    a->window_from = from;
    a->window_to = to;
    return 0;
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

/* Starts J as `EXE COMMAND --state DIR` (invariant 2). */
static void job_start(agent *a, job *j, const char *why)
{
    pid_t pid = fork();
    if (pid < 0) {
        el_agent_log(EL_LOG_ERROR, "job.error", "command=%s error=\"fork: %s\"", j->command,
                     strerror(errno));
        return;
    }
    if (pid == 0) {
        /* the child must not outlive the agent (invariant 2) */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(1);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        /* the child's report on stdout is for people; the agent logs its
         * exit status as an event. Its stderr (errors) goes to our log. */
        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (devnull >= 0)
            dup2(devnull, 1);
        execl(a->exe, a->exe, j->command, "--state", a->state_dir, (char *)NULL);
        _exit(127);
    }
    j->pid = pid;
    j->started = (int64_t)time(NULL);
    el_agent_log(EL_LOG_INFO, j == &a->train ? "train.started" : "sync.started", "pid=%d %s",
                 (int)pid, why);
}

/* Seconds until the retry after J->failures failed runs: jittered and
 * capped, so failed devices do not retry in step. */
static int64_t backoff_s(agent *a, const job *j)
{
    int64_t ms = el_client_backoff_ms(j->failures, a->cfg.sync.backoff_base_s * 1000,
                                      a->cfg.sync.backoff_cap_s * 1000, &a->seed);
    return (ms + 999) / 1000;
}

/* Exit statuses (DESIGN.md): train 0 trained (gate passed), 3 refused by
 * the gate; sync 0 synced, 75 offline. Anything else is retried after the
 * backoff; so is offline. */
static void job_ended(agent *a, job *j, int status)
{
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    int64_t now = (int64_t)time(NULL);
    int is_train = j == &a->train;
    j->pid = 0;
    j->runs++;
    j->last_at = now;
    j->last_exit = code;
    if (code == 0 || (is_train && code == 3)) {
        j->failures = 0;
        j->next_at = 0;
        if (!is_train) {
            /* the next regular sync, jittered by +-10% */
            int64_t interval = a->cfg.sync.interval_s;
            int64_t jitter_ms = el_client_backoff_ms(0, interval * 200, interval * 200,
                                                     &a->seed);
            j->next_at = now + interval - interval / 10 + jitter_ms / 1000;
        }
        el_agent_log(EL_LOG_INFO, is_train ? (code ? "train.refused" : "train.done")
                                           : "sync.done",
                     "exit=%d seconds=%lld", code, (long long)(now - j->started));
        return;
    }
    int64_t delay = backoff_s(a, j);
    j->failures++;
    j->next_at = now + delay;
    el_agent_log(EL_LOG_WARN, is_train ? "train.failed"
                              : code == EL_DAEMON_SYNC_EXIT_OFFLINE ? "sync.offline"
                                                                   : "sync.failed",
                 "exit=%d failures=%u retry_in_s=%lld", code, j->failures,
                 (long long)delay);
}

static void schedule(agent *a)
{
    int64_t now = (int64_t)time(NULL);
    if (a->cfg.hub.url[0] && !a->sync.pid) {
        /* a version that became good is worth telling the hub at once */
        el_store_version *v = NULL;
        size_t n = 0;
        int64_t good = 0;
        if (!el_store_version_list(a->store, &v, &n, NULL)) {
            for (size_t i = 0; i < n; i++)
                good += !strcmp(v[i].state, "good");
            el_store_version_list_free(v, n);
            if (a->good_versions >= 0 && good > a->good_versions && !a->sync.failures)
                a->sync.next_at = now;
            a->good_versions = good;
        }
        if (now >= a->sync.next_at)
            job_start(a, &a->sync, a->sync.failures ? "retry=1" : "retry=0");
    }
    if (a->paused || a->train.pid || now < a->train.next_at)
        return;
    time_t t = (time_t)now;
    struct tm tm;
    localtime_r(&t, &tm);
    if (!el_agent_window_contains(a->window_from, a->window_to,
                                  tm.tm_hour * 60 + tm.tm_min))
        return;
    int64_t n_new = new_train_samples(a);
    if (n_new >= a->cfg.schedule.min_new_samples) {
        char why[64];
        snprintf(why, sizeof why, "new_samples=%lld", (long long)n_new);
        job_start(a, &a->train, why);
    }
}

/* Stops J within the bounded time (invariant 3). */
static void job_stop(agent *a, job *j)
{
    if (!j->pid)
        return;
    kill(j->pid, SIGTERM);
    int status = 0;
    int waited_ms = 0, limit_ms = a->opts.stop_timeout_s * 1000;
    while (waitpid(j->pid, &status, WNOHANG) == 0) {
        if (waited_ms >= limit_ms) {
            el_agent_log(EL_LOG_WARN, "job.killed", "command=%s pid=%d after_s=%d",
                         j->command, (int)j->pid, a->opts.stop_timeout_s);
            kill(j->pid, SIGKILL);
            waitpid(j->pid, &status, 0);
            break;
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        waited_ms += 100;
    }
    el_agent_log(EL_LOG_INFO, "job.stopped", "command=%s pid=%d", j->command, (int)j->pid);
    j->pid = 0;
}

/* ---- control commands -------------------------------------------------------- */

/* "code" is the tag `--json` prints; "class" names the EL_E* code, from
 * which a client derives the exit status (el_agent_reply_error). */
static json_t *fail_reply(const el_error *e)
{
    return json_pack("{sb s{ss ss ss}}", "ok", 0, "error", "code",
                     e->tag[0] ? e->tag : el_error_code_name(e->code), "class",
                     el_error_code_name(e->code), "message", e->msg);
}

static json_t *agent_json(const agent *a)
{
    json_t *o = json_pack("{sb sI sb sI sI sI sI sI sI sI}", "running", 1,
                     "pid", (json_int_t)getpid(), "paused", a->paused,
                     "training_pid", (json_int_t)a->train.pid,
                     "trainings", (json_int_t)a->train.runs,
                     "last_train_at", (json_int_t)a->train.last_at,
                     "last_train_exit", (json_int_t)a->train.last_exit,
                     "inbox_done", (json_int_t)a->inbox.files_done,
                     "inbox_rejected", (json_int_t)a->inbox.files_rejected,
                     "started_at", (json_int_t)a->started_at);
    if (o && a->cfg.hub.url[0])
        json_object_set_new(o, "sync", json_pack(
            "{sI sI sI sI sI}", "pid", (json_int_t)a->sync.pid, "runs",
            (json_int_t)a->sync.runs, "last_at", (json_int_t)a->sync.last_at,
            "last_exit", (json_int_t)a->sync.last_exit, "next_at",
            (json_int_t)a->sync.next_at));
    return o;
}

int el_agent_set_paused(const char *state_dir, int paused, el_error *err)
{
    char path[600];
    if (snprintf(path, sizeof path, "%s/agent.paused", state_dir) >= (int)sizeof path)
        return el_error_set(err, EL_EUSAGE, "%s: state directory path too long", state_dir);
    if (paused)
        return el_fs_write_atomic(path, "paused\n", 7, 0640, err);
    if (unlink(path) != 0 && errno != ENOENT)
        return el_error_set(err, EL_EIO, "removing %s: %s", path, strerror(errno));
    /* the removal must survive a power cut as the creation does */
    return el_fs_fsync_dir(path, 0, err);
}

int el_agent_paused(const char *state_dir)
{
    char path[600];
    snprintf(path, sizeof path, "%s/agent.paused", state_dir);
    return el_fs_exists(path);
}

static int set_paused(agent *a, int paused, el_error *err)
{
    int rc = el_agent_set_paused(a->state_dir, paused, err);
    if (rc)
        return rc;
    a->paused = paused;
    el_agent_log(EL_LOG_INFO, paused ? "train.paused" : "train.resumed", NULL);
    return 0;
}

static int generate_start(agent *a, int slot, const json_t *req, el_error *err);

/* {"cmd": "feedback", "verdict": "accept"|"reject", "version": ID (default:
 * the active one)}. Answers what `edgeloop feedback --json` prints: the
 * version judged, the verdict, its resulting state ("outcome", also as
 * "state"), the active version and how many device deltas were queued.
 * Returns the answer, or NULL with ERR set. */
static json_t *feedback(agent *a, const json_t *req, el_error *err)
{
    const char *verdict, *outcome = NULL;
    int64_t version = 0, active = 0, queued = 0;
    if (el_json_get_str(req, "verdict", &verdict, "feedback", err) ||
        el_json_get_i64_opt(req, "version", 0, INT64_MAX, &version, "feedback", err))
        return NULL;
    if (strcmp(verdict, "accept") && strcmp(verdict, "reject")) {
        el_error_set(err, EL_EINPUT, "feedback: verdict must be accept or reject");
        return NULL;
    }
    int accept = !strcmp(verdict, "accept");
    /* resolved here so the answer names the version judged */
    if (!version && el_store_active(a->store, &version, err))
        return NULL;
    if (el_store_feedback(a->store, version, accept, &outcome, err))
        return NULL;
    el_agent_log(EL_LOG_INFO, "feedback", "verdict=%s version=%lld outcome=%s", verdict,
                 (long long)version, outcome);
    el_store_active(a->store, &active, NULL);
    /* a version that just became good goes to the outbox as `edgeloop
     * feedback` would put it there; while a sync child runs it is left to
     * the next sync (which starts at once for a new good version), so the
     * two never build the same version's delta side by side */
    if (outcome && !strcmp(outcome, "good") && !a->sync.pid) {
        el_error qerr = {0};
        if (el_device_outbox_fill(a->store, &queued, &qerr) &&
            strcmp(qerr.tag, "not_enrolled"))
            el_agent_log(EL_LOG_WARN, "outbox.error", "version=%lld error=\"%s\"",
                         (long long)version, qerr.msg);
    }
    return json_pack("{sb ss sI sb ss so sI}", "ok", 1, "outcome", outcome ? outcome : "",
                     "version", (json_int_t)version, "accept", accept, "state",
                     outcome ? outcome : "", "active",
                     active ? json_integer(active) : json_null(), "outbox_queued",
                     (json_int_t)queued);
}

/* Runs one request from the client in SLOT; returns the answer (new
 * reference), or NULL when the answer comes later (generate). */
static json_t *handle(agent *a, int slot, const char *line, size_t len)
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
    /* decisions are taken at the time of the request, not of the last tick */
    int rc = el_store_tick(a->store, (int64_t)time(NULL), &err);
    if (rc)
        goto done;
    if (!strcmp(cmd, "status")) {
        json_t *doc = el_agent_state_json(a->store, &err);
        if (doc) {
            json_object_set_new(doc, "agent", agent_json(a));
            reply = json_pack("{sb so}", "ok", 1, "status", doc);
        }
    } else if (!strcmp(cmd, "feedback")) {
        reply = feedback(a, req, &err);
    } else if (!strcmp(cmd, "activate")) {
        el_store_version v = {0};
        if (!(rc = el_json_get_i64(req, "version", 1, INT64_MAX, &version, "activate",
                                   &err)) &&
            !(rc = el_store_activate(a->store, version, &err))) {
            el_agent_log(EL_LOG_INFO, "activated", "version=%lld", (long long)version);
            /* "version" is the object `edgeloop activate --json` prints */
            if (!el_store_version_get(a->store, version, &v, &err))
                reply = json_pack("{sb sI so*}", "ok", 1, "active", (json_int_t)version,
                                  "version", el_agent_version_json(&v));
            el_store_version_finish(&v);
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
        int64_t before = 0;
        if (!rc)
            el_store_active(a->store, &before, NULL);
        if (!rc && !(rc = el_store_rollback(a->store, version, "operator (agent socket)",
                                            &err))) {
            int64_t active = 0;
            el_store_active(a->store, &active, NULL);
            el_agent_log(EL_LOG_INFO, "rolled_back", "from=%lld active=%lld",
                         (long long)before, (long long)active);
            /* "active": 0 is the base alone; "from" as the CLI prints it */
            reply = json_pack("{sb sI so}", "ok", 1, "active", (json_int_t)active, "from",
                              before ? json_integer(before) : json_null());
        }
    } else if (!strcmp(cmd, "pin") || !strcmp(cmd, "unpin")) {
        int pin = cmd[0] == 'p';
        int64_t active = 0;
        if (pin)
            rc = el_json_get_i64(req, "version", 1, INT64_MAX, &version, "pin", &err);
        if (!rc)
            el_store_active(a->store, &active, NULL);
        if (!rc && !(rc = el_store_pin(a->store, version, &err))) {
            el_agent_log(EL_LOG_INFO, pin ? "pinned" : "unpinned", "version=%lld",
                         (long long)active);
            /* "version": the active version, as `edgeloop pin --json` prints */
            reply = json_pack("{sb sI sb}", "ok", 1, "version", (json_int_t)active, "pinned",
                              pin);
        }
    } else if (!strcmp(cmd, "generate")) {
        if (!generate_start(a, slot, req, &err)) {
            json_decref(req);
            return NULL;
        }
    } else if (!strcmp(cmd, "pause-training") || !strcmp(cmd, "resume-training")) {
        if (!set_paused(a, cmd[0] == 'p', &err))
            reply = json_pack("{sb sb}", "ok", 1, "paused", a->paused);
    } else {
        el_error_set(&err, EL_EUSAGE,
                     "unknown command \"%s\" (status, feedback, activate, rollback, "
                     "pin, unpin, pause-training, resume-training, generate)", cmd);
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

/* Sends REPLY (consumed) to the client in slot I; drops a client that does
 * not take it (answers are small against a Unix socket's buffer, and a
 * client that does not read them is not waited for). */
static void reply_to(agent *a, int i, json_t *reply)
{
    client *c = a->clients[i];
    char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
    json_decref(reply);
    int ok = text && send(c->fd, text, strlen(text), MSG_NOSIGNAL) == (ssize_t)strlen(text) &&
             send(c->fd, "\n", 1, MSG_NOSIGNAL) == 1;
    free(text);
    if (!ok)
        drop_client(a, i);
}

/* Answers the complete lines of client I in order; stops while a generate
 * of this client is pending, so answers keep the order of the requests. */
static void process_lines(agent *a, int i)
{
    char *nl;
    while (a->clients[i] && !(a->gen.pid && a->gen.client == i) &&
           (nl = memchr(a->clients[i]->buf, '\n', a->clients[i]->len))) {
        client *c = a->clients[i];
        size_t line_len = (size_t)(nl - c->buf);
        json_t *reply = handle(a, i, c->buf, line_len);
        memmove(c->buf, nl + 1, c->len - line_len - 1);
        c->len -= line_len + 1;
        if (reply)
            reply_to(a, i, reply);
    }
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
    process_lines(a, i);
    if (a->clients[i] && a->clients[i]->len == sizeof a->clients[i]->buf) {
        el_agent_log(EL_LOG_WARN, "control.refused", "why=\"request line too long\"");
        drop_client(a, i);
    }
}

/* The active adapter as a PEFT directory for `edgeloop generate`: exported
 * once per version into STATE/agent-generate/vID (via a temporary name, so
 * a crash never leaves a half-written one under the final name). */
static int adapter_dir(agent *a, int64_t version, char *out, size_t n, el_error *err)
{
    char tmp[700];
    if (snprintf(out, n, "%s/agent-generate/v%lld", a->state_dir, (long long)version) >=
        (int)n)
        return el_error_set(err, EL_EUSAGE, "state directory path too long");
    if (el_fs_exists(out))
        return 0;
    snprintf(tmp, sizeof tmp, "%s.tmp%d", out, (int)getpid());
    int rc = el_store_export(a->store, version, tmp, err);
    if (!rc && rename(tmp, out) != 0)
        rc = el_error_set(err, EL_EIO, "renaming %s: %s", tmp, strerror(errno));
    return rc;
}

/* Starts `edgeloop generate` with the active adapter for the client in
 * SLOT. Returns 0 when started (the answer follows in generate_readable),
 * or an error for the client now. */
static int generate_start(agent *a, int slot, const json_t *req, el_error *err)
{
    const char *prompt;
    int64_t max_tokens = 64, version = 0, base_id = 0;
    int rc;
    if (a->gen.pid)
        return el_error_set(err, EL_EPOLICY, "generate: another generation is running");
    if ((rc = el_json_get_str(req, "prompt", &prompt, "generate", err)) ||
        (rc = el_json_get_i64_opt(req, "max_tokens", 1, 4096, &max_tokens, "generate", err)))
        return rc;
    if (strlen(prompt) > PROMPT_MAX)
        return el_error_set(err, EL_EINPUT, "generate: prompt longer than %d bytes", PROMPT_MAX);
    char base[1024], adapter[640] = "", tokens[32];
    if ((rc = el_store_active(a->store, &version, err)))
        return rc;
    if (version) {
        el_store_version v = {0};
        if ((rc = el_store_version_get(a->store, version, &v, err)))
            return rc;
        base_id = v.base_id;
        el_store_version_finish(&v);
        if ((rc = adapter_dir(a, version, adapter, sizeof adapter, err)))
            return rc;
    } else if ((rc = el_store_base_current(a->store, &base_id, base, err))) {
        return rc;
    }
    if ((rc = el_store_base_path(a->store, base_id, base, sizeof base, err)))
        return rc;
    snprintf(tokens, sizeof tokens, "%lld", (long long)max_tokens);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        return el_error_set(err, EL_EIO, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return el_error_set(err, EL_EIO, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        dup2(pipefd[1], 1);
        const char *argv[16] = {a->exe, "generate", "--model", base, "--prompt", prompt,
                                "--max-tokens", tokens, "--temperature", "0",
                                "--backend", a->cfg.train.backend, "--json"};
        size_t n = 13;
        if (adapter[0]) {
            argv[n++] = "--adapter";
            argv[n++] = adapter;
        }
        argv[n] = NULL;
        execv(a->exe, (char *const *)argv);
        _exit(127);
    }
    close(pipefd[1]);
    fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    a->gen.pid = pid;
    a->gen.fd = pipefd[0];
    a->gen.client = slot;
    a->gen.client_serial = a->clients[slot]->serial;
    a->gen.version = version;
    a->gen.len = 0;
    el_agent_log(EL_LOG_INFO, "generate.started", "pid=%d version=%lld max_tokens=%lld",
                 (int)pid, (long long)version, (long long)max_tokens);
    return 0;
}

/* Collects the generation's output; at its end answers the client. */
static void generate_readable(agent *a)
{
    ssize_t r = 1;
    while (r > 0 && a->gen.len < sizeof a->gen.out) {
        r = read(a->gen.fd, a->gen.out + a->gen.len, sizeof a->gen.out - a->gen.len);
        if (r > 0)
            a->gen.len += (size_t)r;
    }
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    /* EOF, an error or more output than any answer needs: it is over */
    close(a->gen.fd);
    a->gen.fd = -1;
    if (r > 0)
        kill(a->gen.pid, SIGKILL);
    int status = 0;
    waitpid(a->gen.pid, &status, 0);
    a->gen.pid = 0;
    el_error err = {0};
    json_t *reply = NULL;
    json_t *out = NULL;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        el_error_set(&err, EL_EINTERNAL, "generate failed (exit %d; see the agent's log)",
                     WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    } else if ((out = el_json_parse(a->gen.out, a->gen.len, sizeof a->gen.out,
                                    "generate output", &err)) &&
               json_is_string(json_object_get(out, "text"))) {
        reply = json_pack("{sb sO sO sI}", "ok", 1, "text", json_object_get(out, "text"),
                          "tokens", json_object_get(out, "tokens") ? json_object_get(out, "tokens")
                                                                   : json_null(),
                          "version", (json_int_t)a->gen.version);
    } else if (!err.code) {
        el_error_set(&err, EL_EINTERNAL, "generate output has no \"text\"");
    }
    json_decref(out);
    el_agent_log(reply ? EL_LOG_INFO : EL_LOG_WARN, "generate.done", "ok=%d", reply != NULL);
    int i = a->gen.client;
    if (a->clients[i] && a->clients[i]->serial == a->gen.client_serial) {
        reply_to(a, i, reply ? reply : fail_reply(&err));
        if (a->clients[i])
            process_lines(a, i);
    } else {
        json_decref(reply);
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
        c->serial = ++a->client_serial;
        a->clients[slot] = c;
    }
}

/* ---- the loop ------------------------------------------------------------------ */

/* Takes agent.lock exclusively before the registry is opened (invariant 5):
 * another agent is refused at once; routed CLI commands holding it shared
 * are waited for, up to LOCK_WAIT_S. */
static int take_lock(agent *a, el_error *err)
{
    int rc = el_agent_lock_open(a->state_dir, &a->lock_fd, err);
    if (rc)
        return rc;
    if (flock(a->lock_fd, LOCK_EX | LOCK_NB) == 0)
        return 0;
    if (!el_agent_answers(a->state_dir))
        el_agent_log(EL_LOG_INFO, "agent.waiting", "why=\"agent.lock is held (an edgeloop "
                     "command, or an agent starting)\" max_s=%d", LOCK_WAIT_S);
    return el_agent_lock_wait(a->state_dir, a->lock_fd, LOCK_WAIT_S, err);
}

static void tick(agent *a, int64_t now, int64_t *next_inbox, int64_t *next_clock,
                 int64_t *next_schedule)
{
    el_error err = {0};
    job *jobs[] = {&a->train, &a->sync};
    for (size_t k = 0; k < 2; k++) {
        int status;
        if (jobs[k]->pid && waitpid(jobs[k]->pid, &status, WNOHANG) == jobs[k]->pid)
            job_ended(a, jobs[k], status);
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
    a->train.command = "train";
    a->sync.command = "sync";
    a->good_versions = -1;
    a->gen.fd = -1;
    if (a->opts.stop_timeout_s <= 0)
        a->opts.stop_timeout_s = 30;
    int rc = 0;
    /* absolute, so the training child and the logs name the same place
     * whatever the working directory */
    const char *dir = el_store_state_dir(opts->state_dir);
    char *abs = realpath(dir, NULL);
    snprintf(a->state_dir, sizeof a->state_dir, "%s", abs ? abs : dir);
    free(abs);
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
            if (load(a, &lerr) && !a->store) {
                /* the files checked out but the registry did not reopen:
                 * stop, and let the service manager start us afresh */
                el_agent_log(EL_LOG_ERROR, "agent.error", "error=\"%s\"", lerr.msg);
                rc = lerr.code;
                if (err)
                    *err = lerr;
                break;
            } else if (lerr.code)
                el_agent_log(EL_LOG_ERROR, "config.error", "error=\"%s\" kept=previous",
                             lerr.msg);
            else
                el_agent_log(EL_LOG_INFO, "config.reloaded", "min_new_samples=%lld "
                             "window=\"%s\"", (long long)a->cfg.schedule.min_new_samples,
                             a->cfg.schedule.window);
        }
        tick(a, (int64_t)time(NULL), &next_inbox, &next_clock, &next_schedule);
        struct pollfd pfd[MAX_CLIENTS + 2];
        int idx[MAX_CLIENTS + 2];
        nfds_t n = 0;
        pfd[n] = (struct pollfd){.fd = a->listen_fd, .events = POLLIN};
        idx[n++] = -1;
        if (a->gen.fd >= 0) {
            pfd[n] = (struct pollfd){.fd = a->gen.fd, .events = POLLIN};
            idx[n++] = -2;
        }
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
            if (idx[k] == -1)
                accept_clients(a);
            else if (idx[k] == -2)
                generate_readable(a);
            else if (a->clients[idx[k]])
                client_readable(a, idx[k]);
        }
    }
    el_agent_log(EL_LOG_INFO, "agent.stopping", "training_pid=%d sync_pid=%d",
                 (int)a->train.pid, (int)a->sync.pid);
    /* invariant 5: no new connection is accepted from here on */
    close(a->listen_fd);
    a->listen_fd = -1;
    unlink(a->sock_path);
    job_stop(a, &a->train);
    job_stop(a, &a->sync);
    if (a->gen.pid) {
        /* a generation holds no state: it is simply ended */
        kill(a->gen.pid, SIGKILL);
        waitpid(a->gen.pid, NULL, 0);
    }
    el_agent_log(EL_LOG_INFO, "agent.stopped", NULL);
out:
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (a->clients[i])
            drop_client(a, i);
    if (a->gen.fd >= 0)
        close(a->gen.fd);
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
