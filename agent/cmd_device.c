/* Device commands over the state directory: `edgeloop train` in state mode
 * (ingested data -> candidate -> gate -> probation), `enroll` (device key,
 * CSR, certificate, pinned root), `import` (verified fleet bundles) and
 * `bundle` (signed device deltas). With --model, --data or --out, `train`
 * is the standalone trainer of cmd_train.c and this file only forwards to
 * it. The work is in agent/daemon/ (device.h); this file parses flags and
 * prints. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "base/alloc.h"
#include "cli.h"
#include "cmd_state.h"
#include "daemon/device.h"
#include "nn/cpu.h"

static const char *train_state_help =
    "usage: edgeloop train [--state DIR] [--steps N] [--backend auto|cpu|vulkan]\n"
    "                      [--threads N] [--seed N] [--no-activate] [--json]\n"
    "       edgeloop train --model DIR --data FILE.jsonl --out DIR [options]\n"
    "\n"
    "State mode (no --model/--data/--out): trains a candidate adapter from the\n"
    "data ingested into the state directory, judges it with the gate and\n"
    "activates it on a pass. The training set is every new train sample plus a\n"
    "[replay] fraction of earlier accepted train and anchor-replay samples;\n"
    "holdout, anchor-check and probe samples are never trained on. Training\n"
    "starts from the active version (a fresh LoRA when the base runs alone)\n"
    "with the [train] settings of edgeloop.conf. The gate compares holdout and\n"
    "anchor-check loss before and after ([gate] min_gain, max_forget); a pass\n"
    "activates the version on probation and runs the probe health check.\n"
    "With [sync] encoding = lora-delta-q8 the gate judges the weights a\n"
    "receiver rebuilds (parent + decoded 8-bit delta), not the fp32 ones.\n"
    "\n"
    "  --state DIR     state directory (default $EDGELOOP_STATE or\n"
    "                  /var/lib/edgeloop)\n"
    "  --steps N       optimizer steps instead of [train] steps\n"
    "  --backend B     compute backend instead of [train] backend\n"
    "  --threads N     cpu backend threads (default: all cores)\n"
    "  --seed N        seed instead of [train] seed (LoRA init, data order)\n"
    "  --no-activate   record the gate verdict but leave the active version\n"
    "  --json          print the result (or the error) as JSON\n"
    "\n"
    "Exit status: 0 the candidate passed the gate (see \"activated\"), 2 no\n"
    "new data or bad input, 3 the gate refused it (code \"gate_failed\"; the\n"
    "version is recorded as rejected), 1 usage or internal error.\n"
    "\n"
    "Standalone mode, with --model, --data and --out:\n\n";

/* 1 when ARGV asks for the standalone trainer. */
static int standalone(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--model") || !strcmp(a, "--data") || !strcmp(a, "--out") ||
            !strncmp(a, "--model=", 8) || !strncmp(a, "--data=", 7) ||
            !strncmp(a, "--out=", 6))
            return 1;
    }
    return 0;
}

static int parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    long long x = strtoll(s, &end, 10);
    if (!*s || *end || x < min || x > max)
        return -1;
    *out = x;
    return 0;
}

/* OpenBLAS picks slow generic kernels on CPUs it does not know; as the
 * standalone trainer does (cmd_train.c), re-execute once with the core type
 * set. The hint is NULL once it is set, so this cannot loop. */
static void blas_reexec(const char *backend, int argc, char **argv)
{
    if ((backend && !strcmp(backend, "vulkan")) || getenv("EDGELOOP_NO_BLAS_REEXEC"))
        return;
    const char *hint = el_nn_cpu_blas_coretype_hint();
    if (!hint)
        return;
    char **args = el_calloc((size_t)argc + 2, sizeof *args);
    if (!args)
        return;
    args[0] = "edgeloop";
    memcpy(args + 1, argv, (size_t)argc * sizeof *argv);
    setenv("OPENBLAS_CORETYPE", hint, 1);
    fflush(NULL);
    execv("/proc/self/exe", args);
    unsetenv("OPENBLAS_CORETYPE");
    el_free(args);
}

static json_t *num(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

static json_t *result_json(const el_device_train_result *r)
{
    json_t *j = json_object();
    json_object_set_new(j, "version", json_integer(r->version_id));
    json_object_set_new(j, "parent", r->parent_id ? json_integer(r->parent_id) : json_null());
    json_object_set_new(j, "state", json_string(r->outcome));
    json_object_set_new(j, "backend", json_string(r->backend));
    json_object_set_new(j, "steps", json_integer(r->steps));
    json_object_set_new(j, "samples_new", json_integer(r->n_new));
    json_object_set_new(j, "samples_replay", json_integer(r->n_replay));
    json_object_set_new(j, "train_loss_first", num(r->train_loss_first));
    json_object_set_new(j, "train_loss_last", num(r->train_loss_last));
    json_object_set_new(j, "holdout_before", num(r->holdout_before));
    json_object_set_new(j, "holdout_after", num(r->holdout_after));
    json_object_set_new(j, "anchor_before", num(r->anchor_before));
    json_object_set_new(j, "anchor_after", num(r->anchor_after));
    json_t *p = json_object();
    json_object_set_new(p, "update_norm", num(r->update_norm));
    json_object_set_new(p, "grad_norm_before", num(r->grad_norm_before));
    json_object_set_new(p, "grad_norm_after", num(r->grad_norm_after));
    json_object_set_new(p, "effective_rank", num(r->effective_rank));
    json_object_set_new(j, "plasticity", p);
    json_t *g = json_object();
    json_object_set_new(g, "pass", json_boolean(r->gate_pass));
    json_object_set_new(g, "reason", json_string(r->gate_reason));
    json_object_set_new(g, "gain", num(r->gain));
    json_object_set_new(g, "forget", num(r->forget));
    json_object_set_new(j, "gate", g);
    json_object_set_new(j, "activated", json_boolean(r->activated));
    if (r->activate_error[0])
        json_object_set_new(j, "activate_refused", json_string(r->activate_error));
    if (r->health_checked) {
        json_t *h = json_object();
        json_object_set_new(h, "probe_loss", num(r->probe_loss));
        json_object_set_new(h, "ref_loss", num(r->probe_ref_loss));
        json_object_set_new(j, "health_check", h);
    }
    return j;
}

static void on_progress(void *ctx, int step, int steps, double loss)
{
    (void)ctx;
    fprintf(stderr, "\rstep %d/%d  loss %.4f   ", step, steps, loss);
    if (step == steps)
        fputc('\n', stderr);
    fflush(stderr);
}

/* `edgeloop train`: state mode here, standalone in cmd_train.c. */
int el_cmd_device_train(int argc, char **argv)
{
    if (standalone(argc, argv))
        return el_cmd_train(argc, argv);
    el_cli_state c = {.cmd = argv[0]};
    el_device_train_opts o = {.seed = -1};
    for (int i = 1; i < argc; i++) {
        int k = el_cli_state_common(&c, argc, argv, &i);
        if (k < 0)
            return 1;
        if (k)
            continue;
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t x;
        if (!strcmp(a, "--no-activate")) {
            o.no_activate = 1;
        } else if (!strcmp(a, "--steps") || !strcmp(a, "--threads") || !strcmp(a, "--seed")) {
            int steps = !strcmp(a, "--steps"), threads = !strcmp(a, "--threads");
            int64_t max = threads ? 1024 : steps ? 10000000 : INT64_MAX;
            if (!v || parse_i64(v, steps, max, &x)) {
                char msg[96];
                snprintf(msg, sizeof msg, "%s needs a number from %d to %lld", a, steps,
                         (long long)max);
                return el_cli_usage(c.cmd, msg, c.json);
            }
            if (steps)
                o.steps = x;
            else if (threads)
                o.threads = (int)x;
            else
                o.seed = x;
            i++;
        } else if (!strcmp(a, "--backend")) {
            if (!v)
                return el_cli_usage(c.cmd, "--backend needs auto, cpu or vulkan", c.json);
            o.backend = v;
            i++;
        } else {
            char msg[160];
            snprintf(msg, sizeof msg, "unknown argument '%s' (see --help)", a);
            return el_cli_usage(c.cmd, msg, c.json);
        }
    }
    if (c.help) {
        fputs(train_state_help, stdout);
        fflush(stdout);
        char *help_argv[] = {argv[0], "--help", NULL};
        return el_cmd_train(2, help_argv);
    }
    blas_reexec(o.backend, argc, argv);
    if (!c.json && isatty(STDERR_FILENO))
        o.progress = on_progress;
    el_store *s;
    int status = el_cli_state_open(&c, 0, &s);
    if (status)
        return status;
    el_error err;
    el_error_clear(&err);
    el_device_train_result r;
    int rc = el_device_train(s, &o, &r, &err);
    el_store_close(s);
    if (rc && !(rc == EL_EPOLICY && r.version_id))
        return el_cli_fail(&err, c.json);
    if (c.json && !rc) {
        el_cli_state_print(result_json(&r));
        return 0;
    }
    if (!c.json) {
        printf("version %lld (parent %s%lld): trained %lld steps on %s, %lld new + %lld "
               "replayed samples, loss %.4f -> %.4f\n",
               (long long)r.version_id, r.parent_id ? "" : "base ", (long long)r.parent_id,
               (long long)r.steps, r.backend, (long long)r.n_new, (long long)r.n_replay,
               r.train_loss_first, r.train_loss_last);
        printf("holdout %.4f -> %.4f (gain %.4f), anchor-check %.4f -> %.4f (forget %.4f)\n",
               r.holdout_before, r.holdout_after, r.gain, r.anchor_before, r.anchor_after,
               r.forget);
        printf("plasticity: update norm %.4g, grad norm %.4g -> %.4g, effective rank %.2f\n",
               r.update_norm, r.grad_norm_before, r.grad_norm_after, r.effective_rank);
        if (r.gate_pass && r.activated)
            printf("gate passed; version %lld is %s\n", (long long)r.version_id, r.outcome);
        else if (r.gate_pass)
            printf("gate passed; not activated%s%s\n", r.activate_error[0] ? ": " : "",
                   r.activate_error);
    }
    if (rc) {
        /* The gate refused: the error carries "gate_failed"; in JSON mode
         * the figures are in the error message and in `edgeloop show ID`. */
        return el_cli_fail(&err, c.json);
    }
    return 0;
}

/* ---- enroll ------------------------------------------------------------------ */

static const char *enroll_help =
    "usage: edgeloop enroll --csr-out FILE [--name DEVICE_ID] [--state DIR] [--json]\n"
    "       edgeloop enroll --cert dev.crt --ca ca.crt --root root.elb\n"
    "                       [--hub https://HOST:PORT] [--state DIR] [--json]\n"
    "\n"
    "Step 1 (--csr-out) creates the device key in the state directory (mode\n"
    "0600; it never leaves the device; an existing key is reused) and writes a\n"
    "certificate signing request for DEVICE_ID (default: the host name) to\n"
    "FILE, for the fleet manager (`edgeloop-fleet issue --csr FILE`).\n"
    "\n"
    "Step 2 (--cert) installs the issued certificate: it must carry this\n"
    "device's key, have role device and chain to --ca; pins the fleet root\n"
    "(root.elb, verified with its own root keys and naming --ca's\n"
    "fingerprint); and writes [hub] url, ca, cert and key into edgeloop.conf.\n"
    "\n"
    "Exit status: 0 ok, 1 usage, 2 bad input (unreadable file, certificate for\n"
    "another key), 3 refused by trust (code as trust.h: untrusted_signer,\n"
    "expired, threshold_not_met, ...) or a root already pinned.\n";

static void host_name(char *out, size_t n)
{
    char h[256] = "";
    if (gethostname(h, sizeof h - 1))
        h[0] = 0;
    size_t j = 0;
    for (size_t i = 0; h[i] && j + 1 < n && j < 64; i++)
        if ((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z') ||
            (h[i] >= '0' && h[i] <= '9') || h[i] == '.' || h[i] == '_' || h[i] == '-')
            out[j++] = h[i];
    out[j] = 0;
    if (!j)
        snprintf(out, n, "device");
}

int el_cmd_enroll(int argc, char **argv)
{
    el_cli_state c = {.cmd = argv[0]};
    const char *csr_out = NULL, *name = NULL, *cert = NULL, *ca = NULL, *root = NULL,
               *hub = NULL;
    const el_cli_flag flags[] = {{"--csr-out", &csr_out, NULL}, {"--name", &name, NULL},
                                 {"--cert", &cert, NULL},       {"--ca", &ca, NULL},
                                 {"--root", &root, NULL},       {"--hub", &hub, NULL},
                                 {NULL, NULL, NULL}};
    if (el_cli_parse(&c, argc, argv, flags, NULL, 0) < 0)
        return 1;
    if (c.help) {
        fputs(enroll_help, stdout);
        return 0;
    }
    int step1 = csr_out != NULL, step2 = cert || ca || root || hub;
    if (step1 == step2 || (step1 && (cert || ca || root || hub)) ||
        (step2 && (!cert || !ca || !root || name)))
        return el_cli_usage(c.cmd, "use either --csr-out FILE [--name ID], or --cert, --ca "
                            "and --root [--hub URL]", c.json);
    el_store *s;
    int status = el_cli_state_open(&c, 0, &s);
    if (status)
        return status;
    el_error err;
    el_error_clear(&err);
    int rc;
    if (step1) {
        char host[80], kid[65];
        if (!name) {
            host_name(host, sizeof host);
            name = host;
        }
        rc = el_device_enroll_csr(s, name, csr_out, kid, &err);
        el_store_close(s);
        if (rc)
            return el_cli_fail(&err, c.json);
        if (c.json) {
            json_t *j = json_object();
            json_object_set_new(j, "csr", json_string(csr_out));
            json_object_set_new(j, "name", json_string(name));
            json_object_set_new(j, "key_id", json_string(kid));
            el_cli_state_print(j);
        } else {
            printf("device key %s; certificate request for %s written to %s\n", kid, name,
                   csr_out);
        }
        return 0;
    }
    el_device_identity id;
    rc = el_device_enroll_install(s, cert, ca, root, hub, &id, &err);
    el_store_close(s);
    if (rc)
        return el_cli_fail(&err, c.json);
    if (c.json) {
        json_t *j = json_object();
        json_object_set_new(j, "device_id", json_string(id.device_id));
        json_object_set_new(j, "group", json_string(id.group));
        json_object_set_new(j, "key_id", json_string(id.key_id));
        json_object_set_new(j, "serial", json_string(id.serial));
        json_object_set_new(j, "root_version", json_integer(id.root_version));
        json_object_set_new(j, "hub", hub ? json_string(hub) : json_null());
        el_cli_state_print(j);
    } else {
        printf("enrolled as %s (group %s), root version %lld pinned%s%s\n", id.device_id,
               id.group[0] ? id.group : "-", (long long)id.root_version,
               hub ? ", hub " : "", hub ? hub : "");
    }
    return 0;
}

/* ---- import ------------------------------------------------------------------ */

static const char *import_help =
    "usage: edgeloop import FILE.elb [--state DIR] [--json]\n"
    "\n"
    "Verifies a fleet bundle against the pinned root and the trust state and\n"
    "installs it. A root bundle (signed by root keys) rotates the pinned root\n"
    "to version N+1. A release needs a threshold of release-key signatures, a\n"
    "counter above the last accepted one of its kind, an expiry after the\n"
    "trusted time (max of the clock and the last trusted time), a target that\n"
    "includes this device, and for adapters this device's base model. An\n"
    "adapter release is rebuilt from its delta, recorded with origin fleet and\n"
    "activated on probation; a policy release (an edgeloop.conf fragment:\n"
    "[section] and key = value lines) replaces the fleet policy overrides. A\n"
    "base-model release becomes the current base (STATE/bases/HASH/); the\n"
    "active adapter, made for the old base, is deactivated.\n"
    "\n"
    "Exit status: 0 installed, 2 bad input, 3 refused: with --json the error\n"
    "code is the trust rule's (bad_signature, unknown_key, threshold_not_met,\n"
    "duplicate_signer, replay, rollback, expired, wrong_target, wrong_base,\n"
    "oversize, truncated, revoked, bad_root_chain) or not_enrolled. A refusal\n"
    "leaves the registry and the trust state unchanged.\n";

int el_cmd_import(int argc, char **argv)
{
    el_cli_state c = {.cmd = argv[0]};
    const char *file = NULL;
    if (el_cli_parse(&c, argc, argv, NULL, &file, 1) < 0)
        return 1;
    if (c.help) {
        fputs(import_help, stdout);
        return 0;
    }
    if (!file)
        return el_cli_usage(c.cmd, "FILE.elb is required", c.json);
    el_store *s;
    int status = el_cli_state_open(&c, 0, &s);
    if (status)
        return status;
    el_error err;
    el_error_clear(&err);
    el_device_import_result r;
    int rc = el_device_import(s, file, 0, &r, &err);
    el_store_close(s);
    if (rc)
        return el_cli_fail(&err, c.json);
    if (c.json) {
        json_t *j = json_object();
        json_object_set_new(j, "bundle", json_string(r.bundle_id));
        json_object_set_new(j, "type", json_string(r.type));
        if (!strcmp(r.type, "root")) {
            json_object_set_new(j, "root_version", json_integer(r.root_version));
        } else {
            json_object_set_new(j, "kind", json_string(r.kind));
            json_object_set_new(j, "counter", json_integer(r.counter));
        }
        if (r.version_id) {
            json_object_set_new(j, "version", json_integer(r.version_id));
            json_object_set_new(j, "activated", json_boolean(r.activated));
            if (r.activate_error[0])
                json_object_set_new(j, "activate_refused", json_string(r.activate_error));
        }
        if (!strcmp(r.kind, "policy"))
            json_object_set_new(j, "policy_keys", json_integer(r.policy_keys));
        if (r.base_id)
            json_object_set_new(j, "base_id", json_integer(r.base_id));
        el_cli_state_print(j);
    } else if (!strcmp(r.type, "root")) {
        printf("root rotated to version %lld (bundle %s)\n", (long long)r.root_version,
               r.bundle_id);
    } else if (r.version_id) {
        printf("adapter release %s (counter %lld) installed as version %lld%s%s\n",
               r.bundle_id, (long long)r.counter, (long long)r.version_id,
               r.activated ? ", on probation" : "; not activated: ",
               r.activated ? "" : r.activate_error);
    } else if (r.base_id) {
        printf("base-model release %s (counter %lld) installed as base %lld\n", r.bundle_id,
               (long long)r.counter, (long long)r.base_id);
    } else {
        printf("%s release %s (counter %lld) installed, %lld policy keys\n", r.kind,
               r.bundle_id, (long long)r.counter, (long long)r.policy_keys);
    }
    return 0;
}

/* ---- bundle ------------------------------------------------------------------ */

static const char *bundle_help =
    "usage: edgeloop bundle ID -o FILE.elb [--state DIR] [--json]\n"
    "\n"
    "Writes version ID as a signed device delta: the version minus its parent\n"
    "in the [sync] encoding (lora-delta-exact by default, or lora-delta-q8),\n"
    "with its metrics and recipe, signed with the device key\n"
    "and carrying the device certificate, so the hub (or anyone holding the\n"
    "fleet root and CA) verifies it offline. For transfer by file (USB) when\n"
    "the hub is out of reach. Needs an enrolled device.\n";

int el_cmd_bundle(int argc, char **argv)
{
    el_cli_state c = {.cmd = argv[0]};
    const char *out = NULL, *ids = NULL;
    const el_cli_flag flags[] = {{"-o", &out, NULL}, {"--out", &out, NULL}, {NULL, NULL, NULL}};
    if (el_cli_parse(&c, argc, argv, flags, &ids, 1) < 0)
        return 1;
    if (c.help) {
        fputs(bundle_help, stdout);
        return 0;
    }
    int64_t id;
    if (!ids || !out || el_cli_state_id(ids, &id))
        return el_cli_usage(c.cmd, "a version ID and -o FILE.elb are required", c.json);
    el_store *s;
    int status = el_cli_state_open(&c, 0, &s);
    if (status)
        return status;
    el_error err;
    el_error_clear(&err);
    el_device_bundle_result r;
    int rc = el_device_bundle_export(s, id, out, &r, &err);
    el_store_close(s);
    if (rc)
        return el_cli_fail(&err, c.json);
    if (c.json) {
        json_t *j = json_object();
        json_object_set_new(j, "bundle", json_string(r.bundle_id));
        json_object_set_new(j, "version", json_integer(id));
        json_object_set_new(j, "out", json_string(out));
        json_object_set_new(j, "parent", r.parent[0] ? json_string(r.parent) : json_null());
        json_object_set_new(j, "result", json_string(r.result));
        json_object_set_new(j, "payload_size", json_integer((json_int_t)r.payload_size));
        json_object_set_new(j, "size", json_integer((json_int_t)r.size));
        el_cli_state_print(j);
    } else {
        printf("version %lld written to %s as device delta %s (%llu bytes)\n", (long long)id,
               out, r.bundle_id, (unsigned long long)r.size);
    }
    return 0;
}
