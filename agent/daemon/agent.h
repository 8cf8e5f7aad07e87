/* The long-running device agent (`edgeloop agent`): inbox, policy clock,
 * training scheduler, control socket, signals.
 *
 * The agent keeps one el_store open for its whole life (one session row for
 * boot counting: an agent killed while a version is on probation counts as
 * a crash, as DESIGN.md wants) and touches it from its main thread only.
 * Training runs as a child process (`edgeloop train --state DIR`, the
 * state mode), not in a thread of the agent, because:
 *  - SIGTERM must end the agent within a bounded time, and the trainer has
 *    no cancel hook; a child can be signalled, waited for a bounded time,
 *    then killed, and the registry is crash-safe at every instant;
 *  - a crash in training (out of memory, a GPU driver fault) does not take
 *    the agent, its socket or its session down;
 *  - the store's sessions are per process, so a second open el_store in the
 *    same process would share (and on close, remove) the agent's row.
 * The control socket keeps answering while a child trains: the main loop is
 * a poll() over the socket and its clients with a one-second tick.
 *
 * Files the agent owns in the state directory:
 *   agent.lock   flock()ed exclusively for the agent's life: one agent per
 *                state; CLI commands that the socket offers hold it shared
 *                while they work directly (see control.c, "Routing").
 *   agent.sock   the control socket (mode 0660), removed on a clean exit.
 *   agent.paused present while training is paused (el_agent_set_paused).
 *   inbox/       JSONL drop box (see el_agent_inbox_scan).
 */
#ifndef EL_DAEMON_AGENT_H
#define EL_DAEMON_AGENT_H

#include <jansson.h>
#include <stdint.h>

#include "base/error.h"
#include "base/log.h"
#include "store/store.h"

/* Logs one line "ts=2026-01-02T03:04:05Z level=info event=EVENT ..." to
 * stderr, FMT (may be NULL) giving the KEY=VALUE part; lines below the
 * $EDGELOOP_LOG level are dropped (the agent defaults to info). */
void el_agent_log(enum el_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- inbox (inbox.c) ----------------------------------------------------- */

typedef struct el_agent_inbox_stats {
    int64_t files_done, files_rejected, samples_added, duplicates;
} el_agent_inbox_stats;

/* Ingests every file of STATE/inbox whose name ends in ".jsonl", oldest name
 * first. The convention for writers: create NAME.jsonl.tmp (any name not
 * ending in ".jsonl"), write and close it, then rename it to NAME.jsonl; a
 * rename is atomic, so the agent never reads a half-written file.
 * The split comes from the name: "holdout-*.jsonl" -> holdout,
 * "anchor-*.jsonl" -> anchor, anything else -> train.
 * A file that ingests is moved to inbox/done/; one with a malformed line
 * (EL_EINPUT from el_store_ingest: nothing of it is added) is moved to
 * inbox/rejected/ next to NAME.why, which names the bad lines. Any other
 * failure (disk full, I/O) leaves the file where it is for the next scan
 * and returns that error. STATS (may be NULL) is incremented. Returns 0 or
 * the first such error. */
int el_agent_inbox_scan(el_store *s, el_agent_inbox_stats *stats, el_error *err);

/* ---- the agent (agent.c) -------------------------------------------------- */

typedef struct el_agent_opts {
    const char *state_dir;     /* NULL: el_store_state_dir(NULL) */
    const char *config_path;   /* extra INI over edgeloop.conf, or NULL */
    const char *edgeloop_exe;  /* the binary to train with; NULL = self */
    int stop_timeout_s;        /* SIGTERM: how long training may finish */
} el_agent_opts;

/* Runs the agent until SIGTERM or SIGINT. Returns 0 after a clean stop, or
 * a negative EL_E* when it could not start (another agent holds the lock:
 * EL_EPOLICY; a bad configuration: EL_EINPUT) with ERR set. */
int el_agent_run(const el_agent_opts *opts, el_error *err);

/* Persists the training pause of STATE_DIR: PAUSED 1 writes
 * STATE/agent.paused (atomically), 0 removes it. An agent reads it at start
 * and keeps it in step with pause-training / resume-training. Returns 0 or
 * EL_EIO/EL_ENOSPC with ERR set (the flag is unchanged then). */
int el_agent_set_paused(const char *state_dir, int paused, el_error *err);
/* 1 when STATE_DIR's training is paused, else 0. */
int el_agent_paused(const char *state_dir);

/* Parses a training window "HH:MM-HH:MM" (may wrap midnight) into minutes
 * of the day. An empty string means any time (*FROM == *TO == -1). Returns
 * 0 or EL_EINPUT. */
int el_agent_window_parse(const char *text, int *from, int *to, el_error *err);
/* 1 when MINUTE (0..1439) lies in [FROM, TO) (wrapping), or the window is
 * empty. */
int el_agent_window_contains(int from, int to, int minute);

/* ---- status and the control socket (control.c) -------------------------- */

/* The state as `edgeloop status` shows it: active version and its
 * probation figures, versions by state, sample counts, the last decisions
 * (audit rows). New reference, or NULL with ERR set. */
json_t *el_agent_state_json(el_store *s, el_error *err);

/* Path of the control socket of STATE_DIR into OUT (N bytes). Returns 0, or
 * EL_EUSAGE when it does not fit (a Unix socket path is short). */
int el_agent_socket_path(const char *state_dir, char *out, size_t n,
                         el_error *err);

/* Binds the control socket at PATH (mode 0660) and listens; *FD is the
 * listening socket. A socket file left by a dead agent is replaced; one
 * that answers is EL_EPOLICY (another agent runs). */
int el_agent_control_listen(const char *path, int *fd, el_error *err);

/* Sends REQUEST (one JSON object) to the agent of STATE_DIR and reads the
 * one-line answer into *REPLY (new reference). Returns 0, EL_EUNAVAIL when
 * no agent listens there, EL_EIO or EL_EINPUT for a broken answer. */
int el_agent_request(const char *state_dir, const json_t *request,
                     json_t **reply, el_error *err);

/* 1 when something accepts connections on STATE_DIR's control socket. */
int el_agent_answers(const char *state_dir);

/* Opens (creating, mode 0640) STATE_DIR/agent.lock for flock() into *FD.
 * Returns 0, EL_ENOTFOUND when STATE_DIR does not exist, EL_EIO. */
int el_agent_lock_open(const char *state_dir, int *fd, el_error *err);

/* Takes the exclusive agent lock on FD (from el_agent_lock_open), waiting
 * up to WAIT_S seconds for commands that hold it shared. Returns 0, or
 * EL_EPOLICY when another agent answers on the socket or the wait ran out;
 * EL_EIO when flock fails. */
int el_agent_lock_wait(const char *state_dir, int fd, int wait_s, el_error *err);

/* Routes one state-changing CLI request (see control.c, "Routing"): sends
 * REQUEST to the agent of STATE_DIR when one answers, else takes the agent
 * lock shared. Returns 0 with either *REPLY (new reference, the agent's
 * answer; *LOCK_FD = -1) or *REPLY NULL and *LOCK_FD the held lock (-1 when
 * STATE_DIR does not exist): the caller works directly on the state, then
 * calls el_agent_route_end(*LOCK_FD). On failure *REPLY is NULL, no lock is
 * held and ERR says why: EL_EUNAVAIL when an agent holds the lock but does
 * not answer within $EDGELOOP_AGENT_WAIT_S seconds (default 15), EL_EIO or
 * EL_EINPUT for a broken exchange (the request may have been carried out). */
int el_agent_route(const char *state_dir, const json_t *request, json_t **reply,
                   int *lock_fd, el_error *err);
/* Releases the lock of el_agent_route (accepts -1). */
void el_agent_route_end(int lock_fd);

/* Fills ERR from the failure answer REPLY ({"ok": false, "error": {"code",
 * "class", "message"}}): the tag is "code", the EL_E* code comes from
 * "class" (the exit status the direct path would give). Returns err->code;
 * EL_EINPUT when REPLY carries no error. */
int el_agent_reply_error(const json_t *reply, el_error *err);

/* Version V as JSON, the same object `edgeloop activate --json` prints
 * without an agent (new reference; NULL when out of memory). */
json_t *el_agent_version_json(const el_store_version *v);

#endif
