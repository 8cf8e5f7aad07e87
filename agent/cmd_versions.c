/* Version commands: versions, show, lineage, activate, rollback, pin,
 * unpin, feedback, export, register-adapter.
 *
 * activate, rollback and feedback are routed (cmd_agent.h el_cli_route):
 * while an agent runs on the state they are carried out by the agent over
 * its socket, otherwise directly under the shared agent lock; each prints
 * the same text, the same --json (plus "via") and exits with the same
 * status either way. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_agent.h"
#include "cmd_state.h"
#include "daemon/agent.h"
#include "daemon/device.h"

static int need_id(el_cli_state *c, const char *text, int64_t *id)
{
    if (!text || el_cli_state_id(text, id))
        return el_cli_usage(c->cmd, "a version ID (a positive integer) is required",
                            c->json);
    return 0;
}

/* The command line of a command on one version ID (plus FLAGS, may be
 * NULL): parse, --help, the ID. Returns -1 to go on with *ID set, or the
 * exit status to return at once. */
static int parse_id(el_cli_state *c, int argc, char **argv, const char *help,
                    const el_cli_flag *flags, int64_t *id)
{
    const char *pos[1] = {NULL};
    if (el_cli_parse(c, argc, argv, flags, pos, 1) < 0)
        return 1;
    if (c->help) {
        fputs(help, stdout);
        return 0;
    }
    int rc = need_id(c, pos[0], id);
    return rc ? rc : -1;
}

/* Prints version V (consumed; a version object as el_cli_state_version_json
 * makes it) after WHAT: the object for --json, with "via" added when VIA is
 * not NULL. Returns 0. */
static int print_version_doc(el_cli_state *c, json_t *v, const char *what, const char *via)
{
    if (c->json) {
        if (v && via)
            json_object_set_new(v, "via", json_string(via));
        el_cli_state_print(v);
    } else {
        printf("%s version %lld (%s)\n", what,
               (long long)json_integer_value(json_object_get(v, "id")),
               json_string_value(json_object_get(v, "state")));
        json_decref(v);
    }
    return 0;
}

static int print_version_state(el_cli_state *c, el_store *s, int64_t id,
                               const char *what, const char *via)
{
    el_store_version v;
    el_error err;
    if (el_store_version_get(s, id, &v, &err))
        return el_cli_state_fail(c, &err);
    json_t *doc = el_cli_state_version_json(&v);
    el_store_version_finish(&v);
    return print_version_doc(c, doc, what, via);
}

/* ---- versions --------------------------------------------------------------- */

static const char versions_help[] =
    "usage: edgeloop versions [--state DIR] [--json]\n"
    "\n"
    "Lists every adapter version: id, state (candidate, probation, good,\n"
    "rejected, rolled_back, retired), whether it is active (*) or pinned (P),\n"
    "origin (local, fleet, imported) and parent.\n";

int el_cmd_versions(int argc, char **argv)
{
    el_cli_state c = {.cmd = "versions"};
    if (el_cli_parse(&c, argc, argv, NULL, NULL, 0) < 0)
        return 1;
    if (c.help) {
        fputs(versions_help, stdout);
        return 0;
    }
    el_store *s;
    int rc = el_cli_state_open(&c, 0, &s);
    if (rc)
        return rc;
    el_store_version *v;
    size_t n;
    el_error err;
    if (el_store_version_list(s, &v, &n, &err)) {
        el_store_close(s);
        return el_cli_state_fail(&c, &err);
    }
    int64_t active = 0;
    el_store_active(s, &active, NULL);
    if (c.json) {
        json_t *list = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(list, el_cli_state_version_json(&v[i]));
        el_cli_state_print(json_pack("{s:o, s:o}", "versions", list, "active",
                                     active ? json_integer(active) : json_null()));
    } else {
        printf("%-5s %-2s %-12s %-9s %-6s %s\n", "ID", "", "STATE", "ORIGIN", "PARENT",
               "ADAPTER");
        for (size_t i = 0; i < n; i++) {
            char parent[24] = "-";
            if (v[i].parent_id)
                snprintf(parent, sizeof parent, "%lld", (long long)v[i].parent_id);
            printf("%-5lld %c%c %-12s %-9s %-6s %.16s\n", (long long)v[i].id,
                   v[i].active ? '*' : ' ', v[i].pinned ? 'P' : ' ', v[i].state,
                   v[i].origin, parent, v[i].adapter_hash);
        }
        if (!active)
            printf("(no active version: the base model runs alone)\n");
    }
    el_store_version_list_free(v, n);
    el_store_close(s);
    return 0;
}

/* ---- show / lineage ------------------------------------------------------------ */

static const char show_help[] =
    "usage: edgeloop show ID [--state DIR] [--json]\n"
    "\n"
    "Prints everything the registry holds about version ID: lineage (parent,\n"
    "base, data digest), recipe, seed, backend, metrics, plasticity figures,\n"
    "gate verdict, state, reason, timestamps.\n";

int el_cmd_show(int argc, char **argv)
{
    el_cli_state c = {.cmd = "show"};
    int64_t id;
    int rc = parse_id(&c, argc, argv, show_help, NULL, &id);
    if (rc >= 0)
        return rc;
    el_store *s;
    if ((rc = el_cli_state_open(&c, 0, &s)))
        return rc;
    el_store_version v;
    el_error err;
    if (el_store_version_get(s, id, &v, &err)) {
        el_store_close(s);
        return el_cli_state_fail(&c, &err);
    }
    json_t *o = el_cli_state_version_json(&v);
    if (c.json) {
        el_cli_state_print(o);
    } else {
        char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
        printf("version %lld: %s%s\n%s\n", (long long)v.id, v.state,
               v.active ? " (active)" : "", text ? text : "");
        free(text);
        json_decref(o);
    }
    el_store_version_finish(&v);
    el_store_close(s);
    return 0;
}

static const char lineage_help[] =
    "usage: edgeloop lineage ID [--state DIR] [--json]\n"
    "\n"
    "Prints the chain of versions from ID back through its parents to the base\n"
    "model, with each version's state, origin and data digest.\n";

int el_cmd_lineage(int argc, char **argv)
{
    el_cli_state c = {.cmd = "lineage"};
    int64_t id;
    int rc = parse_id(&c, argc, argv, lineage_help, NULL, &id);
    if (rc >= 0)
        return rc;
    el_store *s;
    if ((rc = el_cli_state_open(&c, 0, &s)))
        return rc;
    json_t *chain = json_array();
    char base[65] = "";
    el_error err;
    /* parents always have smaller ids (a parent exists before its child), so
     * the walk ends; the bound guards a damaged database */
    for (int depth = 0; id && depth < 100000; depth++) {
        el_store_version v;
        if (el_store_version_get(s, id, &v, &err)) {
            json_decref(chain);
            el_store_close(s);
            return el_cli_state_fail(&c, &err);
        }
        json_array_append_new(chain, json_pack("{s:I, s:s, s:s, s:s, s:b}",
                                               "id", (json_int_t)v.id, "state", v.state,
                                               "origin", v.origin, "data_digest",
                                               v.data_digest, "active", v.active));
        if (!c.json)
            printf("%s%lld (%s, %s, data %.12s)\n", depth ? "  <- " : "",
                   (long long)v.id, v.state, v.origin, v.data_digest);
        snprintf(base, sizeof base, "%s", v.base_hash);
        id = v.parent_id < v.id ? v.parent_id : 0;
        el_store_version_finish(&v);
    }
    if (c.json)
        el_cli_state_print(json_pack("{s:o, s:s}", "lineage", chain, "base", base));
    else {
        printf("  <- base %s\n", base);
        json_decref(chain);
    }
    el_store_close(s);
    return 0;
}

/* ---- activate / rollback / pin / unpin ------------------------------------------- */

static const char activate_help[] =
    "usage: edgeloop activate ID [--state DIR] [--json]\n"
    "\n"
    "Makes version ID active, in one transaction after its blobs are verified.\n"
    "A candidate that passed its gate (or was imported) enters probation; a good\n"
    "version is activated again as it is. Refused (exit 3): rejected,\n"
    "rolled_back or retired versions, the active version, a candidate without a\n"
    "passed gate, and any change while the active version is pinned or on\n"
    "probation.\n"
    EL_CLI_ROUTED_HELP;

int el_cmd_activate(int argc, char **argv)
{
    el_cli_state c = {.cmd = "activate"};
    int64_t id;
    int rc = parse_id(&c, argc, argv, activate_help, NULL, &id);
    if (rc >= 0)
        return rc;
    json_t *reply;
    int lock;
    if ((rc = el_cli_route(&c, json_pack("{ss sI}", "cmd", "activate", "version",
                                         (json_int_t)id), &reply, &lock)))
        return rc;
    if (reply) {
        json_t *v = json_incref(json_object_get(reply, "version"));
        json_decref(reply);
        if (!json_is_object(v)) {
            /* activated, but the answer lacks the version: say what is known */
            json_decref(v);
            v = json_pack("{sI ss}", "id", (json_int_t)id, "state", "?");
        }
        return print_version_doc(&c, v, "activated", "agent");
    }
    el_store *s;
    if (!(rc = el_cli_state_open(&c, 0, &s))) {
        el_error err;
        if (el_store_activate(s, id, &err))
            rc = el_cli_state_fail(&c, &err);
        else
            rc = print_version_state(&c, s, id, "activated", "direct");
        el_store_close(s);
    }
    el_agent_route_end(lock);
    return rc;
}

static const char rollback_help[] =
    "usage: edgeloop rollback [--to ID|base] [--state DIR] [--json]\n"
    "\n"
    "Rolls back the active version: a version on probation becomes rolled_back\n"
    "(a good one stays good). Without --to the most recently active good\n"
    "version is activated; --to ID activates that good version; --to base runs\n"
    "the base model alone. Refused (exit 3) when there is no good version to\n"
    "go to, or while pinned.\n"
    EL_CLI_ROUTED_HELP;

int el_cmd_rollback(int argc, char **argv)
{
    el_cli_state c = {.cmd = "rollback"};
    const char *to = NULL;
    const el_cli_flag flags[] = {{"--to", &to, NULL}, {NULL, NULL, NULL}};
    if (el_cli_parse(&c, argc, argv, flags, NULL, 0) < 0)
        return 1;
    if (c.help) {
        fputs(rollback_help, stdout);
        return 0;
    }
    int64_t target = 0;
    if (to && !strcmp(to, "base"))
        target = -1;
    else if (to && el_cli_state_id(to, &target))
        return el_cli_usage(c.cmd, "--to needs a version ID or \"base\"", c.json);
    json_t *req = json_pack("{ss}", "cmd", "rollback");
    if (req && to)
        json_object_set_new(req, "to", target < 0 ? json_string("base") : json_integer(target));
    json_t *reply;
    int lock;
    int rc = el_cli_route(&c, req, &reply, &lock);
    if (rc)
        return rc;
    const char *via = reply ? "agent" : "direct";
    int64_t before = 0, after = 0;
    if (reply) {
        before = json_integer_value(json_object_get(reply, "from"));
        after = json_integer_value(json_object_get(reply, "active"));
        json_decref(reply);
    } else {
        el_store *s;
        el_error err;
        if (!(rc = el_cli_state_open(&c, 0, &s))) {
            el_store_active(s, &before, NULL);
            if (el_store_rollback(s, target, "operator", &err))
                rc = el_cli_state_fail(&c, &err);
            el_store_active(s, &after, NULL);
            el_store_close(s);
        }
        el_agent_route_end(lock);
        if (rc)
            return rc;
    }
    if (c.json)
        el_cli_state_print(json_pack("{s:o, s:o, s:s}",
                                     "from", before ? json_integer(before) : json_null(),
                                     "active", after ? json_integer(after) : json_null(),
                                     "via", via));
    else if (after && !before)
        printf("rolled back from the base model to version %lld\n", (long long)after);
    else if (after)
        printf("rolled back from version %lld to version %lld\n", (long long)before,
               (long long)after);
    else
        printf("rolled back from version %lld to the base model\n", (long long)before);
    return 0;
}

static const char pin_help[] =
    "usage: edgeloop pin ID | edgeloop unpin   [--state DIR] [--json]\n"
    "\n"
    "pin holds the active version ID: no other version can be activated and\n"
    "retention keeps it until unpin. A failing probation still rolls it back.\n"
    "Refused (exit 3): pinning a version that is not the active one, unpin\n"
    "when nothing is pinned.\n"
    EL_CLI_ROUTED_HELP;

static int pin_common(int argc, char **argv, int pin)
{
    el_cli_state c = {.cmd = pin ? "pin" : "unpin"};
    const char *pos[1] = {NULL};
    if (el_cli_parse(&c, argc, argv, NULL, pos, pin ? 1 : 0) < 0)
        return 1;
    if (c.help) {
        fputs(pin_help, stdout);
        return 0;
    }
    int64_t id = 0;
    int rc;
    if (pin && (rc = need_id(&c, pos[0], &id)))
        return rc;
    json_t *req = pin ? json_pack("{ss sI}", "cmd", "pin", "version", (json_int_t)id)
                      : json_pack("{ss}", "cmd", "unpin");
    json_t *reply;
    int lock;
    if ((rc = el_cli_route(&c, req, &reply, &lock)))
        return rc;
    const char *via = reply ? "agent" : "direct";
    int64_t active = 0;
    if (reply) {
        active = json_integer_value(json_object_get(reply, "version"));
        json_decref(reply);
    } else {
        el_store *s;
        el_error err;
        if (!(rc = el_cli_state_open(&c, 0, &s))) {
            el_store_active(s, &active, NULL);
            if (el_store_pin(s, id, &err))
                rc = el_cli_state_fail(&c, &err);
            el_store_close(s);
        }
        el_agent_route_end(lock);
        if (rc)
            return rc;
    }
    if (c.json)
        el_cli_state_print(json_pack("{s:I, s:b, s:s}", "version", (json_int_t)active,
                                     "pinned", pin, "via", via));
    else
        printf("version %lld %s\n", (long long)active, pin ? "pinned" : "unpinned");
    return 0;
}

int el_cmd_pin(int argc, char **argv)
{
    return pin_common(argc, argv, 1);
}

int el_cmd_unpin(int argc, char **argv)
{
    return pin_common(argc, argv, 0);
}

/* ---- feedback ------------------------------------------------------------------ */

static const char feedback_help[] =
    "usage: edgeloop feedback --accept|--reject [--version ID] [--state DIR] [--json]\n"
    "\n"
    "Records operator feedback on a version (default: the active one). On\n"
    "probation the reject rate over the last [probation] window events, once\n"
    "[probation] min_events exist, above max_reject_rate rolls the version back;\n"
    "after [probation] events events (or hours) it becomes good.\n"
    EL_CLI_ROUTED_HELP;

typedef struct feedback_args {
    int accept, reject;
    const char *version;
} feedback_args;

/* What feedback did, from the agent's answer or the direct path. */
typedef struct feedback_result {
    int64_t version, active, queued;
    char state[16];
} feedback_result;

/* The direct path of feedback (the agent lock held): records the verdict
 * for R->version (0: the active one) and fills R. Returns 0 or the exit
 * status after printing the error. */
static int feedback_direct(el_cli_state *c, int accept, feedback_result *r)
{
    el_store *s;
    int rc = el_cli_state_open(c, 0, &s);
    if (rc)
        return rc;
    el_error err;
    const char *outcome = NULL;
    if (!r->version)
        el_store_active(s, &r->version, NULL);
    if (el_store_feedback(s, r->version, accept, &outcome, &err)) {
        el_store_close(s);
        return el_cli_state_fail(c, &err);
    }
    el_store_active(s, &r->active, NULL);
    snprintf(r->state, sizeof r->state, "%s", outcome ? outcome : "?");
    /* a version that just became good goes to the outbox as a signed device
     * delta (when enrolled); the feedback itself stands either way */
    if (outcome && !strcmp(outcome, "good")) {
        el_error qerr;
        el_error_clear(&qerr);
        if (el_device_outbox_fill(s, &r->queued, &qerr) && strcmp(qerr.tag, "not_enrolled"))
            fprintf(stderr, "edgeloop feedback: warning: device delta not queued: %s\n",
                    qerr.msg);
    }
    el_store_close(s);
    return 0;
}

int el_cmd_feedback(int argc, char **argv)
{
    el_cli_state c = {.cmd = "feedback"};
    feedback_args f = {0};
    const el_cli_flag flags[] = {{"--accept", NULL, &f.accept},
                                 {"--reject", NULL, &f.reject},
                                 {"--version", &f.version, NULL},
                                 {NULL, NULL, NULL}};
    if (el_cli_parse(&c, argc, argv, flags, NULL, 0) < 0)
        return 1;
    if (c.help) {
        fputs(feedback_help, stdout);
        return 0;
    }
    if (f.accept == f.reject)
        return el_cli_usage(c.cmd, "give exactly one of --accept and --reject", c.json);
    int64_t id = 0;
    if (f.version && el_cli_state_id(f.version, &id))
        return el_cli_usage(c.cmd, "--version needs a version ID", c.json);
    json_t *req = json_pack("{ss ss}", "cmd", "feedback", "verdict",
                            f.accept ? "accept" : "reject");
    if (req && id)
        json_object_set_new(req, "version", json_integer(id));
    json_t *reply;
    int lock;
    int rc = el_cli_route(&c, req, &reply, &lock);
    if (rc)
        return rc;
    const char *via = reply ? "agent" : "direct";
    feedback_result r = {.version = id};
    if (reply) {
        r.version = json_integer_value(json_object_get(reply, "version"));
        r.active = json_integer_value(json_object_get(reply, "active"));
        r.queued = json_integer_value(json_object_get(reply, "outbox_queued"));
        const char *state = json_string_value(json_object_get(reply, "state"));
        if (!state)   /* an agent from before "state" */
            state = json_string_value(json_object_get(reply, "outcome"));
        snprintf(r.state, sizeof r.state, "%s", state ? state : "?");
        json_decref(reply);
    } else {
        rc = feedback_direct(&c, f.accept, &r);
        el_agent_route_end(lock);
        if (rc)
            return rc;
    }
    if (c.json)
        el_cli_state_print(json_pack("{s:I, s:b, s:s, s:o, s:I, s:s}", "version",
                                     (json_int_t)r.version, "accept", f.accept, "state",
                                     r.state, "active",
                                     r.active ? json_integer(r.active) : json_null(),
                                     "outbox_queued", (json_int_t)r.queued, "via",
                                     via));
    else
        printf("feedback recorded for version %lld; it is %s\n", (long long)r.version,
               r.state);
    return 0;
}

/* ---- export ------------------------------------------------------------------- */

static const char export_help[] =
    "usage: edgeloop export ID --peft DIR [--state DIR] [--json]\n"
    "\n"
    "Writes version ID's adapter back as a PEFT directory (adapter_config.json,\n"
    "adapter_model.safetensors, ...), every blob verified against its hash\n"
    "first; a corrupted blob is reported (exit 2) and nothing is written.\n";

int el_cmd_export(int argc, char **argv)
{
    el_cli_state c = {.cmd = "export"};
    const char *dir = NULL;
    const el_cli_flag flags[] = {{"--peft", &dir, NULL}, {NULL, NULL, NULL}};
    int64_t id;
    int rc = parse_id(&c, argc, argv, export_help, flags, &id);
    if (rc >= 0)
        return rc;
    if (!dir)
        return el_cli_usage(c.cmd, "--peft DIR is required", c.json);
    el_store *s;
    if ((rc = el_cli_state_open(&c, 0, &s)))
        return rc;
    el_error err;
    if (el_store_export(s, id, dir, &err)) {
        el_store_close(s);
        return el_cli_state_fail(&c, &err);
    }
    if (c.json)
        el_cli_state_print(json_pack("{s:I, s:s}", "version", (json_int_t)id, "peft", dir));
    else
        printf("exported version %lld to %s\n", (long long)id, dir);
    el_store_close(s);
    return 0;
}

/* ---- register-adapter ------------------------------------------------------------ */

static const char register_help[] =
    "usage: edgeloop register-adapter DIR [--parent ID] [--metrics JSON]\n"
    "                                 [--recipe JSON] [--activate] [--state DIR] [--json]\n"
    "\n"
    "Maintenance: imports the PEFT adapter directory DIR as a new version with\n"
    "origin \"imported\" (an operator's import: no gate ran on it). Its files are\n"
    "stored as blobs. --activate activates it at once (it enters probation).\n";

typedef struct register_args {
    const char *parent, *metrics, *recipe;
    int activate;
} register_args;

int el_cmd_register_adapter(int argc, char **argv)
{
    el_cli_state c = {.cmd = "register-adapter"};
    register_args r = {0};
    const el_cli_flag flags[] = {{"--activate", NULL, &r.activate},
                                 {"--parent", &r.parent, NULL},
                                 {"--metrics", &r.metrics, NULL},
                                 {"--recipe", &r.recipe, NULL},
                                 {NULL, NULL, NULL}};
    const char *pos[1] = {NULL};
    if (el_cli_parse(&c, argc, argv, flags, pos, 1) < 0)
        return 1;
    if (c.help) {
        fputs(register_help, stdout);
        return 0;
    }
    if (!pos[0])
        return el_cli_usage(c.cmd, "the adapter directory is required", c.json);
    int64_t parent = 0;
    if (r.parent && el_cli_state_id(r.parent, &parent))
        return el_cli_usage(c.cmd, "--parent needs a version ID", c.json);
    el_store *s;
    int rc = el_cli_state_open(&c, 0, &s);
    if (rc)
        return rc;
    el_error err;
    el_store_candidate cand = {
        .parent_id = parent, .origin = "imported", .recipe_json = r.recipe,
        .metrics_json = r.metrics, .backend = "",
    };
    int64_t id;
    if (el_store_candidate_create(s, &cand, pos[0], &id, &err) ||
        (r.activate && el_store_activate(s, id, &err))) {
        el_store_close(s);
        return el_cli_state_fail(&c, &err);
    }
    rc = print_version_state(&c, s, id, "registered", NULL);
    el_store_close(s);
    return rc;
}
