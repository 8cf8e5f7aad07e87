/* `edgeloop agent` (the long-running daemon), `edgeloop status` (asks the
 * agent when one runs, reads the state directory otherwise), `edgeloop
 * pause-training` / `resume-training` (through the agent, or the flag file
 * it reads at start), `edgeloop sync` (one exchange with the hub), and the
 * routing the state-changing commands share (el_cli_route). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "cli.h"
#include "cmd_agent.h"
#include "cmd_state.h"
#include "daemon/agent.h"
#include "daemon/sync.h"

static const char agent_help[] =
    "usage: edgeloop agent [--state DIR] [--config FILE] [--stop-timeout S] [--json]\n"
    "\n"
    "Runs the device agent in the foreground (systemd: tools/systemd/\n"
    "edgeloop-agent.service) until SIGTERM or SIGINT; SIGHUP re-reads\n"
    "edgeloop.conf and FILE. One line per event goes to stderr:\n"
    "  ts=... level=... event=... key=value ...\n"
    "\n"
    "  inbox     STATE/inbox/*.jsonl is ingested every 2 s, then moved to\n"
    "            inbox/done/ or inbox/rejected/ (with NAME.jsonl.why naming the\n"
    "            bad lines). Writers create NAME.jsonl.tmp and rename it to\n"
    "            NAME.jsonl when complete: only names ending in .jsonl are\n"
    "            read. holdout-*.jsonl and anchor-*.jsonl go to those splits,\n"
    "            any other name to train.\n"
    "  clock     probation expiry every 30 s; boot counting at start.\n"
    "  training  `edgeloop train --state DIR` in a child process when at least\n"
    "            [train] min_new_samples new train samples exist and the local\n"
    "            time is inside [train] window (HH:MM-HH:MM, empty: any time);\n"
    "            one run at a time; a failed run is retried after a jittered\n"
    "            backoff ([sync] backoff_base_s doubling up to backoff_cap_s).\n"
    "  socket    STATE/agent.sock (mode 0660): one JSON object per line, e.g.\n"
    "            {\"cmd\":\"status\"}, {\"cmd\":\"feedback\",\"verdict\":\"accept\",\n"
    "            \"version\":3}, {\"cmd\":\"activate\",\"version\":3},\n"
    "            {\"cmd\":\"rollback\"} or {\"cmd\":\"rollback\",\"to\":2|\"base\"},\n"
    "            {\"cmd\":\"pin\",\"version\":3}, {\"cmd\":\"unpin\"},\n"
    "            {\"cmd\":\"pause-training\"}, {\"cmd\":\"resume-training\"},\n"
    "            {\"cmd\":\"generate\",\"prompt\":\"...\",\"max_tokens\":64} (greedy, with\n"
    "            the active adapter; one at a time, in a child process).\n"
    "            Answers: {\"ok\":true,...} or {\"ok\":false,\"error\":{\"code\":\n"
    "            TAG,\"class\":CLASS,\"message\":...}} (CLASS gives the exit status).\n"
    "            `edgeloop feedback`, `activate`, `rollback`, `pin`, `unpin`,\n"
    "            `pause-training` and `resume-training` go through the socket\n"
    "            while an agent runs, and work on the state directly (holding\n"
    "            agent.lock shared, so no agent starts meanwhile) when none\n"
    "            does.\n"
    "\n"
    "--config FILE  INI with the same keys as edgeloop.conf, laid over it for\n"
    "               the agent's own decisions (scheduler, retries); a fleet\n"
    "               policy still wins. The registry's rules read edgeloop.conf.\n"
    "--stop-timeout S  how long a training run may take to stop on SIGTERM\n"
    "               before it is killed (default 30).\n"
    "Exit status: 0 after a clean stop, 1 when another agent runs or it could\n"
    "not start, 2 for a bad configuration.\n";

int el_cli_route(el_cli_state *c, json_t *request, json_t **reply, int *lock_fd)
{
    el_error err = {0};
    int rc;
    *reply = NULL;
    *lock_fd = -1;
    if (!request)
        rc = el_error_set(&err, EL_ENOMEM, "out of memory");
    else
        rc = el_agent_route(el_store_state_dir(c->state), request, reply, lock_fd, &err);
    json_decref(request);
    if (rc)
        return el_cli_state_fail(c, &err);
    if (*reply && !json_is_true(json_object_get(*reply, "ok"))) {
        el_agent_reply_error(*reply, &err);
        json_decref(*reply);
        *reply = NULL;
        return el_cli_state_fail(c, &err);
    }
    return 0;
}

int el_cmd_agent(int argc, char **argv)
{
    el_cli_state c = {.cmd = "agent"};
    el_agent_opts o = {0};
    const char *stop = NULL;
    const el_cli_flag flags[] = {
        {"--config", &o.config_path, NULL}, {"--stop-timeout", &stop, NULL}, {NULL, NULL, NULL}};
    if (el_cli_parse(&c, argc, argv, flags, NULL, 0) < 0)
        return 1;
    if (stop) {
        char *end;
        long v = strtol(stop, &end, 10);
        if (*end || !*stop || v < 1 || v > 3600)
            return el_cli_usage(c.cmd, "--stop-timeout takes 1..3600 seconds", c.json);
        o.stop_timeout_s = (int)v;
    }
    if (c.help) {
        fputs(agent_help, stdout);
        return 0;
    }
    /* the agent logs its events; an operator can still lower the level */
    if (!getenv("EDGELOOP_LOG"))
        el_log_set_level(EL_LOG_INFO);
    o.state_dir = c.state;
    el_error err = {0};
    int rc = el_agent_run(&o, &err);
    if (rc == EL_EPOLICY)
        rc = EL_EUSAGE;   /* another agent: not a trust/policy refusal */
    if (rc) {
        err.code = rc;
        return el_cli_fail(&err, c.json);
    }
    return 0;
}

static const char status_help[] =
    "usage: edgeloop status [--state DIR] [--json]\n"
    "\n"
    "Prints the device's state: the active version (and its probation), versions\n"
    "by state, sample counts, the audit head and the last decisions. When an agent\n"
    "runs on the state directory it answers through its socket and adds what it is\n"
    "doing (training, paused, inbox counts); otherwise the registry is read\n"
    "directly and \"agent\" says it is not running (and whether training is\n"
    "paused for the next agent: edgeloop pause-training).\n";

static void print_text(json_t *doc)
{
    json_t *active = json_object_get(doc, "active");
    json_t *agent = json_object_get(doc, "agent");
    printf("state    %s\n", json_string_value(json_object_get(doc, "state_dir")));
    if (json_is_object(agent) && json_is_true(json_object_get(agent, "running")))
        printf("agent    running (pid %lld)%s%s\n",
               (long long)json_integer_value(json_object_get(agent, "pid")),
               json_is_true(json_object_get(agent, "paused")) ? ", training paused" : "",
               json_integer_value(json_object_get(agent, "training_pid")) ? ", training"
                                                                           : "");
    else
        printf("agent    not running%s\n",
               json_is_true(json_object_get(agent, "paused")) ? ", training paused" : "");
    if (json_is_object(active))
        printf("active   version %lld (%s)\n",
               (long long)json_integer_value(json_object_get(active, "id")),
               json_string_value(json_object_get(active, "state")));
    else
        printf("active   none (base model alone)\n");
    const char *key;
    json_t *v;
    printf("versions");
    json_object_foreach(json_object_get(doc, "versions"), key, v)
        printf(" %s=%lld", key, (long long)json_integer_value(v));
    printf("\nsamples ");
    json_object_foreach(json_object_get(doc, "samples"), key, v)
        printf(" %s=%lld", key, (long long)json_integer_value(v));
    printf("\n");
    size_t i;
    json_array_foreach(json_object_get(doc, "recent_decisions"), i, v)
        printf("  #%lld %s version=%lld\n",
               (long long)json_integer_value(json_object_get(v, "seq")),
               json_string_value(json_object_get(v, "event")),
               (long long)json_integer_value(json_object_get(v, "version")));
}

int el_cmd_status(int argc, char **argv)
{
    el_cli_state c = {.cmd = "status"};
    int done = el_cli_state_only(&c, argc, argv, status_help);
    if (done >= 0)
        return done;
    el_error err = {0};
    json_t *req = json_pack("{ss}", "cmd", "status");
    json_t *reply = NULL;
    json_t *doc = NULL;
    int rc = el_agent_request(el_store_state_dir(c.state), req, &reply, &err);
    json_decref(req);
    if (rc == 0) {
        doc = json_incref(json_object_get(reply, "status"));
        json_decref(reply);
        if (!json_is_object(doc)) {
            json_decref(doc);
            el_error_set(&err, EL_EINPUT, "the agent's status answer has no \"status\"");
            return el_cli_state_fail(&c, &err);
        }
    } else if (rc == EL_EUNAVAIL) {
        el_store *s;
        if ((rc = el_cli_state_open(&c, 0, &s)))
            return rc;
        doc = el_agent_state_json(s, &err);
        /* the pause an agent started now would honour */
        int paused = el_agent_paused(el_store_dir(s));
        el_store_close(s);
        if (!doc)
            return el_cli_state_fail(&c, &err);
        json_object_set_new(doc, "agent", json_pack("{sb sb}", "running", 0, "paused", paused));
    } else {
        return el_cli_state_fail(&c, &err);
    }
    if (c.json) {
        el_cli_state_print(doc);
    } else {
        print_text(doc);
        json_decref(doc);
    }
    return 0;
}

static const char pause_help[] =
    "usage: edgeloop pause-training | edgeloop resume-training   [--state DIR] [--json]\n"
    "\n"
    "pause-training stops the agent from starting training runs (a run in\n"
    "progress finishes); resume-training lets it train again. The pause is kept\n"
    "in STATE/agent.paused, so it outlives a restart of the agent. While an agent\n"
    "runs the command goes through its socket; otherwise the file is written\n"
    "directly and an agent started later honours it. --json prints\n"
    "{\"paused\": BOOL, \"via\": \"agent\"|\"direct\"}.\n"
    "Environment: EDGELOOP_AGENT_WAIT_S (default 15): how long to wait for an\n"
    "agent that holds agent.lock but does not answer (starting or stopping)\n"
    "before giving up with exit 1; nothing is changed then.\n";

static int pause_common(int argc, char **argv, int paused)
{
    el_cli_state c = {.cmd = paused ? "pause-training" : "resume-training"};
    int done = el_cli_state_only(&c, argc, argv, pause_help);
    if (done >= 0)
        return done;
    json_t *reply;
    int lock;
    int rc = el_cli_route(&c, json_pack("{ss}", "cmd", c.cmd), &reply, &lock);
    if (rc)
        return rc;
    const char *via = reply ? "agent" : "direct";
    if (reply) {
        json_t *p = json_object_get(reply, "paused");
        if (json_is_boolean(p))
            paused = json_is_true(p);
        json_decref(reply);
    } else {
        el_error err = {0};
        const char *dir = el_store_state_dir(c.state);
        char db[600];
        /* only an initialized state: a typo in --state must not create a
         * flag nobody reads */
        snprintf(db, sizeof db, "%s/registry.db", dir);
        if (!el_fs_exists(db))
            rc = el_error_set(&err, EL_ENOTFOUND, "%s: not an initialized state directory "
                              "(run `edgeloop init`)", dir);
        else
            rc = el_agent_set_paused(dir, paused, &err);
        el_agent_route_end(lock);
        if (rc)
            return el_cli_state_fail(&c, &err);
    }
    if (c.json)
        el_cli_state_print(json_pack("{sb ss}", "paused", paused, "via", via));
    else
        printf(paused ? "training paused: the agent starts no training run until "
                        "resume-training\n"
                      : "training resumed\n");
    return 0;
}

int el_cmd_pause_training(int argc, char **argv)
{
    return pause_common(argc, argv, 1);
}

int el_cmd_resume_training(int argc, char **argv)
{
    return pause_common(argc, argv, 0);
}

static const char sync_help[] =
    "usage: edgeloop sync [--state DIR] [--json]\n"
    "\n"
    "One exchange with the hub named by [hub] url (certificate, key and CA from\n"
    "[hub] cert, key, ca, as `edgeloop enroll` wrote them):\n"
    "  0. queues a signed delta of each good local version in the outbox and\n"
    "     uploads the outbox, oldest first (idempotent by bundle id; an entry\n"
    "     the hub acknowledged is never sent again);\n"
    "  1. posts the status: active version, probation, recent decisions, counters\n"
    "     and the audit head (seq, hash) signed with the device key;\n"
    "  2. pins newer roots the hub has (GET /v1/root/N+1, chain-checked);\n"
    "  3. fetches releases since the last one seen (STATE/sync/cursor.json),\n"
    "     resuming partial downloads, and installs each as `edgeloop import`\n"
    "     does (same trust checks; a refused release is reported, not retried).\n"
    "Exit status: 0 synced (refused releases are listed, not failures), 75 the\n"
    "hub is not configured or cannot be reached (offline is normal: try again\n"
    "later; the agent retries with jittered exponential backoff, [sync]\n"
    "backoff_base_s up to backoff_cap_s), 1 internal error or not enrolled,\n"
    "2 bad configuration.\n";

int el_cmd_sync(int argc, char **argv)
{
    el_cli_state c = {.cmd = "sync"};
    int done = el_cli_state_only(&c, argc, argv, sync_help);
    if (done >= 0)
        return done;
    el_store *s;
    int rc = el_cli_state_open(&c, 0, &s);
    if (rc)
        return rc;
    el_error err = {0};
    el_daemon_sync_result r;
    rc = el_daemon_sync(s, &r, &err);
    el_store_close(s);
    if (rc == EL_EUNAVAIL) {
        /* offline: one clear line, a distinct exit status, no error object
         * on stdout for --json but the same fields as a success */
        if (c.json)
            el_cli_state_print(json_pack("{sb sb ss sO}", "offline", 1, "status_posted",
                                         r.status_posted, "message", err.msg,
                                         "events", r.events ? r.events : json_null()));
        else
            fprintf(stderr, "edgeloop sync: offline: %s\n", err.msg);
        el_daemon_sync_result_finish(&r);
        return EL_DAEMON_SYNC_EXIT_OFFLINE;
    }
    if (rc) {
        el_daemon_sync_result_finish(&r);
        if (rc == EL_EPOLICY)   /* not enrolled: a setup step is missing */
            rc = EL_EUSAGE;
        err.code = rc;
        return el_cli_fail(&err, c.json);
    }
    if (c.json) {
        el_cli_state_print(json_pack("{sb sb sI sI sI sI sI sI sI sI sI sI sO}", "offline", 0,
                                     "status_posted", r.status_posted,
                                     "uploaded", (json_int_t)r.uploaded,
                                     "already_held", (json_int_t)r.already_held,
                                     "upload_refused", (json_int_t)r.upload_refused,
                                     "roots_installed", (json_int_t)r.roots_installed,
                                     "root_version", (json_int_t)r.root_version,
                                     "releases_seen", (json_int_t)r.releases_seen,
                                     "installed", (json_int_t)r.installed,
                                     "refused", (json_int_t)r.refused,
                                     "since", (json_int_t)r.since, "hub_time_refused",
                                     (json_int_t)r.hub_time_refused, "events", r.events));
    } else {
        printf("synced: %lld bundle(s) uploaded (%lld already held, %lld refused), status "
               "posted, root %lld (%lld new), %lld release(s): %lld installed, %lld "
               "refused\n", (long long)r.uploaded, (long long)r.already_held,
               (long long)r.upload_refused, (long long)r.root_version,
               (long long)r.roots_installed, (long long)r.releases_seen,
               (long long)r.installed, (long long)r.refused);
        if (r.hub_time_refused)
            fprintf(stderr, "edgeloop sync: warning: the hub's time (%lld) is after its "
                            "certificate's expiry; trusted time not moved\n",
                    (long long)r.hub_time_refused);
        size_t i;
        json_t *ev;
        json_array_foreach(r.events, i, ev)
            if (!strcmp(json_string_value(json_object_get(ev, "outcome")), "refused"))
                printf("  refused %s: %s\n", json_string_value(json_object_get(ev, "bundle")),
                       json_string_value(json_object_get(json_object_get(ev, "error"),
                                                         "message")));
    }
    el_daemon_sync_result_finish(&r);
    return 0;
}
