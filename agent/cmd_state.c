/* State commands: init, ingest, config, audit, gc, check, health, and the
 * helpers every state command shares (cmd_state.h). The version commands
 * are in cmd_versions.c. */
#include "cmd_state.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/json.h"
#include "cli.h"
#include "daemon/agent.h"

int el_cli_state_common(el_cli_state *c, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--json")) {
        c->json = 1;
        return 1;
    }
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
        c->help = 1;
        return 1;
    }
    if (!strcmp(a, "--state")) {
        if (*i + 1 >= argc) {
            el_cli_usage(c->cmd, "--state needs a directory", c->json);
            return -1;
        }
        c->state = argv[++*i];
        return 1;
    }
    if (!strncmp(a, "--state=", 8)) {
        c->state = a + 8;
        return 1;
    }
    return 0;
}

int el_cli_state_fail(el_cli_state *c, const el_error *err)
{
    return el_cli_fail(err, c->json);
}

int el_cli_parse(el_cli_state *c, int argc, char **argv, const el_cli_flag *flags,
                 const char **pos, int maxpos)
{
    int n = 0;
    for (int i = 1; i < argc; i++) {
        int k = el_cli_state_common(c, argc, argv, &i);
        if (k < 0)
            return -1;
        if (k)
            continue;
        const el_cli_flag *f = flags;
        while (f && f->name && strcmp(f->name, argv[i]))
            f++;
        char msg[160];
        if (f && f->name) {
            if (!f->value) {
                *f->set = 1;
                continue;
            }
            if (i + 1 < argc) {
                *f->value = argv[++i];
                continue;
            }
            snprintf(msg, sizeof msg, "%s needs a value", argv[i]);
        } else if (argv[i][0] != '-' && n < maxpos) {
            pos[n++] = argv[i];
            continue;
        } else {
            snprintf(msg, sizeof msg, "unexpected argument '%s'", argv[i]);
        }
        el_cli_usage(c->cmd, msg, c->json);
        return -1;
    }
    return n;
}

int el_cli_state_only(el_cli_state *c, int argc, char **argv, const char *help)
{
    if (el_cli_parse(c, argc, argv, NULL, NULL, 0) < 0)
        return 1;
    if (c->help) {
        fputs(help, stdout);
        return 0;
    }
    return -1;
}

int el_cli_state_open(el_cli_state *c, int create, el_store **s)
{
    el_error err;
    el_error_clear(&err);
    el_store_open_opts opts = {.create = create, .actor = "operator"};
    int rc = el_store_open(c->state, &opts, s, &err);
    if (rc)
        return el_cli_state_fail(c, &err);
    return 0;
}

int el_cli_state_id(const char *text, int64_t *id)
{
    char *end;
    long long x = strtoll(text, &end, 10);
    if (!*text || *end || x <= 0)
        return -1;
    *id = x;
    return 0;
}

void el_cli_state_print(json_t *v)
{
    if (!v) {
        fputs("{\"error\": {\"code\": \"out_of_memory\", \"message\": \"out of memory\"}}\n",
              stdout);
        return;
    }
    char *text = json_dumps(v, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (text)
        printf("%s\n", text);
    free(text);
    json_decref(v);
}

/* One definition of a version's JSON for the CLI and the agent's socket
 * (the transcripts of test_agent_control compare them). */
json_t *el_cli_state_version_json(const el_store_version *v)
{
    return el_agent_version_json(v);
}

/* ---- init ------------------------------------------------------------- */

static const char init_help[] =
    "usage: edgeloop init --model DIR [--state DIR] [--json]\n"
    "\n"
    "Creates the state directory (default $EDGELOOP_STATE or /var/lib/edgeloop):\n"
    "edgeloop.conf with documented defaults (kept if it exists), registry.db and\n"
    "blobs/. Registers the base model in DIR (config.json + model.safetensors):\n"
    "its hash is the SHA-256 of model.safetensors (the \"base\" releases name);\n"
    "the model stays where it is (its path is recorded). Running init again\n"
    "with another model registers that one too.\n";

int el_cmd_init(int argc, char **argv)
{
    el_cli_state c = {.cmd = "init"};
    const char *model = NULL;
    const el_cli_flag flags[] = {{"--model", &model, NULL}, {NULL, NULL, NULL}};
    if (el_cli_parse(&c, argc, argv, flags, NULL, 0) < 0)
        return 1;
    if (c.help) {
        fputs(init_help, stdout);
        return 0;
    }
    if (!model)
        return el_cli_usage(c.cmd, "--model DIR is required", c.json);
    el_store *s;
    int rc = el_cli_state_open(&c, 1, &s);
    if (rc)
        return rc;
    el_error err;
    int64_t id;
    if (el_store_base_register(s, model, &id, &err)) {
        el_store_close(s);
        return el_cli_state_fail(&c, &err);
    }
    char hash[65];
    if (el_store_base_current(s, &id, hash, &err)) {
        el_store_close(s);
        return el_cli_state_fail(&c, &err);
    }
    if (c.json)
        el_cli_state_print(json_pack("{s:s, s:{s:I, s:s}, s:i}", "state", el_store_dir(s),
                                     "base", "id", (json_int_t)id, "hash", hash,
                                     "schema", EL_STORE_SCHEMA_VERSION));
    else
        printf("initialized %s\nbase model %lld: %s\n", el_store_dir(s), (long long)id,
               hash);
    el_store_close(s);
    return 0;
}

/* ---- ingest ------------------------------------------------------------- */

static const char ingest_help[] =
    "usage: edgeloop ingest FILE.jsonl --split train|holdout|anchor [--state DIR] [--json]\n"
    "\n"
    "Adds the samples of FILE (one JSON object a line: {\"text\": ...} or\n"
    "{\"prompt\": ..., \"completion\": ...}) to the sample store, deduplicated by\n"
    "content hash. Any bad line refuses the whole file (exit 2, FILE:LINE named)\n"
    "and adds nothing. About 10% of new train samples (by hash) form the probe\n"
    "set of the probation health check; anchor samples are divided by hash into\n"
    "anchor-replay (may be replayed in training) and anchor-check (never\n"
    "trained on; measures forgetting). Holdout is never trained on.\n";

int el_cmd_ingest(int argc, char **argv)
{
    el_cli_state c = {.cmd = "ingest"};
    const char *file = NULL, *split_text = NULL;
    const el_cli_flag flags[] = {{"--split", &split_text, NULL}, {NULL, NULL, NULL}};
    if (el_cli_parse(&c, argc, argv, flags, &file, 1) < 0)
        return 1;
    if (c.help) {
        fputs(ingest_help, stdout);
        return 0;
    }
    if (!file || !split_text)
        return el_cli_usage(c.cmd, "FILE and --split are required", c.json);
    enum el_store_split split;
    if (!strcmp(split_text, "train"))
        split = EL_SPLIT_TRAIN;
    else if (!strcmp(split_text, "holdout"))
        split = EL_SPLIT_HOLDOUT;
    else if (!strcmp(split_text, "anchor"))
        split = EL_SPLIT_ANCHOR;
    else
        return el_cli_usage(c.cmd, "--split must be train, holdout or anchor", c.json);
    el_store *s;
    int rc = el_cli_state_open(&c, 0, &s);
    if (rc)
        return rc;
    el_error err;
    el_store_ingest_stats st;
    if (el_store_ingest(s, file, split, &st, &err)) {
        el_store_close(s);
        return el_cli_state_fail(&c, &err);
    }
    if (c.json)
        el_cli_state_print(json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I}",
                                     "file", file, "split", split_text,
                                     "lines", (json_int_t)st.lines,
                                     "added", (json_int_t)st.added,
                                     "duplicates", (json_int_t)st.duplicates,
                                     "probe", (json_int_t)st.probe,
                                     "anchor_check", (json_int_t)st.anchor_check,
                                     "anchor_replay", (json_int_t)st.anchor_replay));
    else
        printf("%s: %lld samples, %lld added to %s (%lld duplicates, %lld probe, "
               "%lld anchor-check, %lld anchor-replay)\n", file, (long long)st.lines,
               (long long)st.added, split_text, (long long)st.duplicates,
               (long long)st.probe, (long long)st.anchor_check,
               (long long)st.anchor_replay);
    el_store_close(s);
    return 0;
}

/* ---- config -------------------------------------------------------------- */

static const char config_help[] =
    "usage: edgeloop config [--state DIR] [--json]\n"
    "\n"
    "Prints every configuration key with its effective value and its source:\n"
    "policy (a fleet-signed policy release), file (edgeloop.conf) or default.\n";

int el_cmd_config(int argc, char **argv)
{
    el_cli_state c = {.cmd = "config"};
    int done = el_cli_state_only(&c, argc, argv, config_help);
    if (done >= 0)
        return done;
    el_store *s;
    int rc = el_cli_state_open(&c, 0, &s);
    if (rc)
        return rc;
    const el_store_config *cfg = el_store_get_config(s);
    json_t *keys = json_object();
    for (size_t i = 0; i < el_config_key_count(); i++) {
        const char *section, *key;
        char value[EL_CONFIG_STR_MAX];
        el_config_key_at(i, &section, &key);
        el_config_value_text(cfg, i, value, sizeof value);
        const char *source = el_config_source_name(cfg->source[i]);
        if (c.json) {
            char name[128];
            snprintf(name, sizeof name, "%s.%s", section, key);
            json_object_set_new(keys, name, json_pack("{s:s, s:s}", "value", value,
                                                      "source", source));
        } else {
            printf("[%s] %s = %s (%s)\n", section, key, value, source);
        }
    }
    if (c.json)
        el_cli_state_print(json_pack("{s:o}", "config", keys));
    else
        json_decref(keys);
    el_store_close(s);
    return 0;
}

/* ---- audit ----------------------------------------------------------------- */

static const char audit_help[] =
    "usage: edgeloop audit [--verify] [--state DIR] [--json]\n"
    "\n"
    "Prints the audit chain: every state change with the figures that made it.\n"
    "--verify recomputes the chain and names the first edited, deleted or\n"
    "reordered row (exit 2 when broken).\n";

int el_cmd_audit(int argc, char **argv)
{
    el_cli_state c = {.cmd = "audit"};
    int verify = 0;
    const el_cli_flag flags[] = {{"--verify", NULL, &verify}, {NULL, NULL, NULL}};
    if (el_cli_parse(&c, argc, argv, flags, NULL, 0) < 0)
        return 1;
    if (c.help) {
        fputs(audit_help, stdout);
        return 0;
    }
    el_store *s;
    int rc = el_cli_state_open(&c, 0, &s);
    if (rc)
        return rc;
    el_error err;
    if (verify) {
        int64_t rows, bad;
        rc = el_store_audit_verify(s, &rows, &bad, &err);
        el_store_close(s);
        if (rc)
            return el_cli_state_fail(&c, &err);
        if (c.json)
            el_cli_state_print(json_pack("{s:b, s:I}", "ok", 1, "rows", (json_int_t)rows));
        else
            printf("audit chain ok: %lld rows\n", (long long)rows);
        return 0;
    }
    el_store_audit_row *rows;
    size_t n;
    if (el_store_audit_list(s, &rows, &n, &err)) {
        el_store_close(s);
        return el_cli_state_fail(&c, &err);
    }
    json_t *list = c.json ? json_array() : NULL;
    for (size_t i = 0; i < n; i++) {
        el_store_audit_row *r = &rows[i];
        if (c.json) {
            json_t *f = json_loads(r->figures, 0, NULL);
            json_array_append_new(list, json_pack("{s:I, s:I, s:s, s:s, s:I, s:o, s:s, s:s}",
                                                  "seq", (json_int_t)r->seq,
                                                  "at", (json_int_t)r->at,
                                                  "actor", r->actor, "event", r->event,
                                                  "version", (json_int_t)r->version_id,
                                                  "figures", f ? f : json_null(),
                                                  "prev", r->prev, "hash", r->hash));
        } else {
            char when[32];
            time_t t = (time_t)r->at;
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
            printf("%5lld %s %-8s %-16s v%-4lld %s %.12s\n", (long long)r->seq, when,
                   r->actor, r->event, (long long)r->version_id, r->figures, r->hash);
        }
    }
    if (c.json)
        el_cli_state_print(json_pack("{s:o}", "audit", list));
    el_store_audit_list_free(rows, n);
    el_store_close(s);
    return 0;
}

/* ---- gc ---------------------------------------------------------------------- */

static const char gc_help[] =
    "usage: edgeloop gc [--state DIR] [--json]\n"
    "\n"
    "Applies retention: keeps [retention] keep_good good versions (the active\n"
    "one always), frees the blobs of retired, rejected and rolled-back\n"
    "versions, drops the oldest train samples beyond [retention] max_samples,\n"
    "and removes files left by interrupted writes.\n";

int el_cmd_gc(int argc, char **argv)
{
    el_cli_state c = {.cmd = "gc"};
    int done = el_cli_state_only(&c, argc, argv, gc_help);
    if (done >= 0)
        return done;
    el_store *s;
    int rc = el_cli_state_open(&c, 0, &s);
    if (rc)
        return rc;
    el_error err;
    el_store_gc_stats st;
    if (el_store_gc(s, 0, &st, &err)) {
        el_store_close(s);
        return el_cli_state_fail(&c, &err);
    }
    int64_t usage = 0;
    el_store_blob_usage(s, &usage, NULL);
    if (c.json)
        el_cli_state_print(json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}",
                                     "retired", (json_int_t)st.retired,
                                     "blobs_freed", (json_int_t)st.blobs_freed,
                                     "bytes_freed", (json_int_t)st.bytes_freed,
                                     "orphans", (json_int_t)st.orphans,
                                     "samples_dropped", (json_int_t)st.samples_dropped,
                                     "blob_bytes", (json_int_t)usage));
    else
        printf("retired %lld versions, freed %lld blobs (%lld bytes), removed %lld "
               "leftover files, dropped %lld samples; blobs now use %lld bytes\n",
               (long long)st.retired, (long long)st.blobs_freed,
               (long long)st.bytes_freed, (long long)st.orphans,
               (long long)st.samples_dropped, (long long)usage);
    el_store_close(s);
    return 0;
}

/* ---- check ------------------------------------------------------------------- */

static const char check_help[] =
    "usage: edgeloop check [--state DIR] [--json]\n"
    "\n"
    "Verifies the whole state: PRAGMA integrity_check, the audit chain, every\n"
    "blob against its hash, that no version points at a missing blob, and that\n"
    "the active version's blobs verify. Exit 2 when anything fails.\n";

int el_cmd_check(int argc, char **argv)
{
    el_cli_state c = {.cmd = "check"};
    int done = el_cli_state_only(&c, argc, argv, check_help);
    if (done >= 0)
        return done;
    el_store *s;
    int rc = el_cli_state_open(&c, 0, &s);
    if (rc)
        return rc;
    el_error err;
    el_error_clear(&err);
    el_store_fsck r;
    rc = el_store_check(s, &r, &err);
    el_store_sample_counts counts = {0};
    el_store_sample_count(s, &counts, NULL);
    el_store_close(s);
    if (c.json) {
        json_t *o = json_pack("{s:b, s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:I, "
                              "s:I, s:{s:I, s:I, s:I, s:I, s:I}}",
                              "ok", rc == 0, "integrity_ok", r.integrity_ok,
                              "audit_ok", r.audit_ok,
                              "audit_rows", (json_int_t)r.audit_rows,
                              "audit_bad_seq", (json_int_t)r.audit_bad_seq,
                              "blobs", (json_int_t)r.blobs,
                              "blobs_missing", (json_int_t)r.blobs_missing,
                              "blobs_corrupt", (json_int_t)r.blobs_corrupt,
                              "versions_missing_blob", (json_int_t)r.versions_missing_blob,
                              "active_ok", r.active_ok,
                              "active", (json_int_t)r.active_id,
                              "samples", (json_int_t)r.samples,
                              "parts", "train", (json_int_t)counts.train,
                              "holdout", (json_int_t)counts.holdout,
                              "anchor_replay", (json_int_t)counts.anchor_replay,
                              "anchor_check", (json_int_t)counts.anchor_check,
                              "probe", (json_int_t)counts.probe);
        if (rc && o)
            json_object_set_new(o, "error", json_pack("{s:s, s:s}", "code", err.tag,
                                                      "message", err.msg));
        el_cli_state_print(o);
        return rc ? el_error_exit_status(rc) : 0;
    }
    if (rc)
        return el_cli_state_fail(&c, &err);
    printf("state ok: integrity ok, audit chain of %lld rows ok, %lld blobs verified, "
           "active version %lld ok, %lld samples\n", (long long)r.audit_rows,
           (long long)r.blobs, (long long)r.active_id, (long long)r.samples);
    return 0;
}

/* ---- health ------------------------------------------------------------------- */

static const char health_help[] =
    "usage: edgeloop health --probe-loss LOSS --ref-loss LOSS [--state DIR] [--json]\n"
    "\n"
    "Maintenance: reports the probation health check of the active version:\n"
    "its loss on the probe set and the previous good version's (or the base's).\n"
    "A rise beyond [probation] max_probe_regress rolls the version back.\n"
    "(The daemon computes these losses itself; this is for operators and tests.)\n";

int el_cmd_health(int argc, char **argv)
{
    el_cli_state c = {.cmd = "health"};
    const char *probe = NULL, *ref = NULL;
    const el_cli_flag flags[] = {
        {"--probe-loss", &probe, NULL}, {"--ref-loss", &ref, NULL}, {NULL, NULL, NULL}};
    if (el_cli_parse(&c, argc, argv, flags, NULL, 0) < 0)
        return 1;
    if (c.help) {
        fputs(health_help, stdout);
        return 0;
    }
    char *e1 = NULL, *e2 = NULL;
    double pl = probe ? strtod(probe, &e1) : NAN, rl = ref ? strtod(ref, &e2) : NAN;
    if (!probe || !ref || *e1 || *e2)
        return el_cli_usage(c.cmd, "--probe-loss and --ref-loss need numbers", c.json);
    el_store *s;
    int rc = el_cli_state_open(&c, 0, &s);
    if (rc)
        return rc;
    el_error err;
    const char *outcome = NULL;
    if (el_store_health_report(s, pl, rl, &outcome, &err)) {
        el_store_close(s);
        return el_cli_state_fail(&c, &err);
    }
    if (c.json)
        el_cli_state_print(json_pack("{s:s}", "state", outcome));
    else
        printf("health check recorded; version is %s\n", outcome);
    el_store_close(s);
    return 0;
}
