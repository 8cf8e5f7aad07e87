/* edgeloop-fleet commands that talk to the hub with an admin certificate:
 * release push, status, promote.
 *
 * The fleet tool holds the release keys, the hub holds none (DESIGN.md
 * "Trust and sync"), so the work is split: the hub stores and serves, the
 * fleet manager decides. `promote` therefore never trusts what the hub says
 * about a device's version: it downloads the device's own signed delta,
 * verifies it against the fleet CA and root kept in the fleet directory,
 * rebuilds the adapter and checks its digest before making a release of it.
 * The release it writes is unsigned; `release sign` adds the signatures.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/sha256.h"
#include "bundle.h"
#include "client.h"
#include "delta.h"
#include "fleet.h"
#include "manifest.h"
#include "trust.h"

#define PUSH_MAX ((size_t)4 << 30)
#define DELTA_MAX ((size_t)1 << 30)
#define CHAIN_MAX 64          /* parent links followed before giving up */
#define CONFIG_MAX ((size_t)64 << 10)

static const char *const hub_opts[] = {"--hub", "--cert", "--key", "--ca", NULL};

/* Opens a client for --hub https://HOST[:PORT] with the admin certificate.
 * Returns 0 and *OUT, EL_EUSAGE for missing or bad options, or the TLS
 * context's error. */
static int hub_connect(const fl_args *a, el_client **out, el_error *err)
{
    *out = NULL;
    const char *url = fl_get(a, "--hub"), *cert = fl_get(a, "--cert"),
               *key = fl_get(a, "--key"), *ca = fl_get(a, "--ca");
    if (!url || !cert || !key || !ca)
        return el_error_set(err, EL_EUSAGE, "%s: --hub, --cert, --key and --ca are required",
                            a->cmd);
    if (strncmp(url, "https://", 8))
        return el_error_set(err, EL_EUSAGE, "--hub %s: use https://HOST[:PORT]", url);
    char host[256];
    const char *h = url + 8;
    size_t n = strcspn(h, ":/");
    if (n == 0 || n >= sizeof host)
        return el_error_set(err, EL_EUSAGE, "--hub %s: bad host", url);
    memcpy(host, h, n);
    host[n] = '\0';
    int port = 443;
    if (h[n] == ':') {
        char *end;
        long p = strtol(h + n + 1, &end, 10);
        if (p < 1 || p > 65535 || (*end && strcmp(end, "/")))
            return el_error_set(err, EL_EUSAGE, "--hub %s: bad port", url);
        port = (int)p;
    } else if (h[n] && strcmp(h + n, "/")) {
        return el_error_set(err, EL_EUSAGE, "--hub %s: no path is expected", url);
    }
    el_client_opts o = {.host = host, .port = port, .ca_path = ca, .cert_path = cert,
                        .key_path = key, .resume = 1, .trusted_time = fl_now()};
    return el_client_create(&o, out, err);
}

/* ---- release push ---------------------------------------------------------- */

static const char push_help[] =
    "usage: edgeloop-fleet release push rel.elb --hub URL --cert admin.crt --key admin.key\n"
    "           --ca ca.crt [--json]\n"
    "Publishes a signed release on the hub (PUT /v1/releases/ID). Pushing the same\n"
    "release again is harmless. A release the hub refuses (not enough signatures,\n"
    "expired, ...) exits 3 with the trust code.\n";

int fl_cmd_release_push(int argc, char **argv)
{
    fl_args a;
    el_error err;
    if (fl_parse(argc, argv, "release push", hub_opts, NULL, &a, &err))
        return fl_fail(&a, &err);
    if (a.help)
        return fputs(push_help, stdout), 0;
    if (a.npos != 1)
        return fl_usage(&a, "give one release file");
    uint8_t *bytes = NULL;
    size_t len = 0;
    el_bundle b;
    el_bundle_init(&b);
    el_client *c = NULL;
    json_t *answer = NULL;
    int created = 0, rc;
    if ((rc = el_fs_read_file(a.pos[0], PUSH_MAX, &bytes, &len, &err)) ||
        (rc = el_bundle_parse(bytes, len, &b, &err))) {
        el_error_prefix(&err, "%s", a.pos[0]);
        goto out;
    }
    if ((rc = hub_connect(&a, &c, &err)) ||
        (rc = el_client_put_release(c, b.id, bytes, len, &answer, &created, &err)))
        goto out;
    if (a.json) {
        fl_print_json(json_incref(answer));
    } else {
        json_t *seq = json_object_get(answer, "seq");
        printf("release %s %s on the hub (seq %" PRId64 ")\n", b.id,
               created ? "published" : "already published",
               json_is_integer(seq) ? (int64_t)json_integer_value(seq) : (int64_t)0);
    }
out:
    json_decref(answer);
    el_client_destroy(c);
    el_bundle_finish(&b);
    el_free(bytes);
    return rc ? fl_fail(&a, &err) : 0;
}

/* ---- status ---------------------------------------------------------------- */

static const char status_help[] =
    "usage: edgeloop-fleet status --hub URL --cert admin.crt --key admin.key --ca ca.crt\n"
    "           [--json]\n"
    "Prints the fleet as the hub last heard from it: device, group, active version,\n"
    "its state, when the device was last seen and the last rollback's reason.\n"
    "--json prints the hub's device list with each device's last status report.\n";

/* The reason of the newest rollback among a status report's decisions, or
 * "-" when there is none. Borrowed from DECISIONS. */
static const char *rollback_reason(const json_t *decisions)
{
    const char *reason = "-";
    size_t i;
    json_t *d;
    json_array_foreach(decisions, i, d) {
        const char *ev = json_string_value(json_object_get(d, "event"));
        if (!ev || strcmp(ev, "rolled_back"))
            continue;
        json_t *fig = json_object_get(d, "figures");
        const char *why = json_string_value(json_object_get(fig, "reason"));
        reason = why ? why : ev;
    }
    return reason;
}

static void format_time(json_t *v, char out[32])
{
    if (json_is_integer(v))
        el_manifest_time_format((int64_t)json_integer_value(v), out);
    else
        snprintf(out, 32, "-");
}

int fl_cmd_status(int argc, char **argv)
{
    fl_args a;
    el_error err;
    if (fl_parse(argc, argv, "status", hub_opts, NULL, &a, &err))
        return fl_fail(&a, &err);
    if (a.help)
        return fputs(status_help, stdout), 0;
    if (a.npos)
        return fl_usage(&a, "status takes no arguments");
    el_client *c = NULL;
    json_t *list = NULL;
    int rc;
    if ((rc = hub_connect(&a, &c, &err)) ||
        (rc = el_client_get_json(c, "/v1/devices", &list, &err)))
        goto out;
    json_t *devices = json_object_get(list, "devices");
    if (!json_is_array(devices)) {
        rc = el_error_set(&err, EL_EINPUT, "hub: /v1/devices answer without a list");
        goto out;
    }
    /* One more request per device for its last report: the list itself
     * carries only the hub's own columns. */
    size_t i;
    json_t *row;
    json_array_foreach(devices, i, row) {
        const char *id = json_string_value(json_object_get(row, "id"));
        char target[256];
        json_t *one = NULL;
        if (!id || strlen(id) > 128) {
            rc = el_error_set(&err, EL_EINPUT, "hub: device row %zu without a usable id", i);
            goto out;
        }
        snprintf(target, sizeof target, "/v1/devices/%s", id);
        if ((rc = el_client_get_json(c, target, &one, &err)))
            goto out;
        json_t *status = json_object_get(one, "status");
        json_object_set(row, "status", json_is_object(status) ? status : json_null());
        json_decref(one);
    }
    if (a.json) {
        fl_print_json(json_incref(devices));
        goto out;
    }
    printf("%-20s %-12s %-8s %-10s %-21s %s\n", "DEVICE", "GROUP", "ACTIVE", "STATE",
           "LAST SEEN", "LAST ROLLBACK");
    json_array_foreach(devices, i, row) {
        json_t *status = json_object_get(row, "status");
        json_t *active = json_object_get(status, "active");
        char active_s[24], seen[32];
        if (json_is_integer(active))
            snprintf(active_s, sizeof active_s, "%" PRId64, (int64_t)json_integer_value(active));
        else
            snprintf(active_s, sizeof active_s, "-");
        /* The report names the active version and its probation; a version
         * out of probation that is still active is a good one. */
        const char *state = !json_is_object(status)                      ? "unknown"
                          : json_is_object(json_object_get(status, "probation")) ? "probation"
                          : json_is_integer(active)                      ? "good"
                                                                         : "base";
        format_time(json_object_get(row, "last_seen"), seen);
        const char *group = json_string_value(json_object_get(row, "group"));
        printf("%-20s %-12s %-8s %-10s %-21s %s\n",
               json_string_value(json_object_get(row, "id")), group && *group ? group : "-",
               active_s, state, seen, rollback_reason(json_object_get(status, "decisions")));
    }
out:
    json_decref(list);
    el_client_destroy(c);
    return rc ? fl_fail(&a, &err) : 0;
}

/* ---- promote --------------------------------------------------------------- */

static const char promote_help[] =
    "usage: edgeloop-fleet promote BUNDLE_ID --hub URL --cert admin.crt --key admin.key\n"
    "           --ca ca.crt --target GROUP|DEVICE|'*' --counter N [--rollout PERCENT]\n"
    "           [--expires 30d] [--adapter-config FILE] -o rel.elb [--json]\n"
    "Fetches a device's delta from the hub, verifies it against the fleet CA and\n"
    "root in the fleet directory, rebuilds its adapter (following the parent chain\n"
    "the hub holds) and writes an UNSIGNED adapter release of it; add signatures\n"
    "with `release sign`. adapter_config.json comes from --adapter-config or is\n"
    "made from the delta's recipe (rank, alpha) and its tensor names.\n";

typedef struct promote_ctx {
    el_client *client;
    el_manifest_root root;
    el_crypto_cert *ca;
    json_t *versions;          /* /v1/versions rows, fetched when a parent is needed */
    char work[1100];           /* download file */
    int64_t now;
} promote_ctx;

/* Fetches bundle ID from the hub, verifies it as a device delta and
 * rebuilds its adapter into *OUT (caller finishes it), following parents
 * through the hub's version list up to DEPTH more links. *M (may be NULL)
 * receives the verified manifest (caller finishes it). Returns 0; EL_ETRUST
 * for a delta that does not verify or whose rebuilt digest differs from its
 * "result"; EL_ENOTFOUND when a parent is not on the hub. On failure *OUT is
 * empty and *M zeroed. */
static int rebuild(promote_ctx *p, const char *id, int depth, el_delta_set *out,
                   el_manifest *m_out, el_error *err)
{
    memset(out, 0, sizeof *out);
    json_t *rec = NULL;
    uint8_t *bytes = NULL;
    size_t len = 0;
    el_bundle b;
    el_bundle_init(&b);
    el_manifest m = {0};
    el_delta_set parent = {0}, delta = {0};
    el_trust_state zero = {0}, st;
    char target[160], digest[65];
    int rc, enc;
    if (strlen(id) != 64 || strspn(id, "0123456789abcdef") != 64)
        return el_error_set(err, EL_EUSAGE, "bundle id %s: 64 lowercase hex characters", id);
    snprintf(target, sizeof target, "/v1/bundles/%s", id);
    if ((rc = el_client_get_json(p->client, target, &rec, err)))
        goto out;
    const char *blob = json_string_value(json_object_get(rec, "blob"));
    if (!blob || strlen(blob) != 64) {
        rc = el_error_set(err, EL_EINPUT, "hub: bundle %s has no blob", id);
        goto out;
    }
    /* a fresh download: what an earlier run left belongs to another blob */
    char part[1200];
    snprintf(part, sizeof part, "%s.part", p->work);
    unlink(part);
    unlink(p->work);
    if ((rc = el_client_download_blob(p->client, blob, p->work, err)) ||
        (rc = el_fs_read_file(p->work, DELTA_MAX, &bytes, &len, err)) ||
        (rc = el_bundle_parse(bytes, len, &b, err)))
        goto out;
    unlink(p->work);
    if (strcmp(b.id, id)) {
        rc = el_error_set_tag(err, EL_ETRUST, "bad_signature",
                              "hub: blob %s is bundle %s, not %s", blob, b.id, id);
        goto out;
    }
    if ((rc = el_trust_device_delta(&p->root, p->ca, &b, p->now, DELTA_MAX, &zero, &m, NULL,
                                    &st, err))) {
        el_error_prefix(err, "device delta %s", id);
        goto out;
    }
    if (m.parent[0]) {
        if (depth <= 0) {
            rc = el_error_set(err, EL_ENOTFOUND, "delta %s: parent chain longer than %d", id,
                              CHAIN_MAX);
            goto out;
        }
        if (!p->versions && (rc = el_client_get_json(p->client, "/v1/versions", &p->versions,
                                                     err)))
            goto out;
        /* The parent is whichever delta on the hub rebuilt to that digest;
         * it is verified and its digest checked like this one. */
        const char *parent_id = NULL;
        size_t i;
        json_t *row;
        json_array_foreach(json_object_get(p->versions, "versions"), i, row) {
            const char *result = json_string_value(json_object_get(row, "result"));
            if (result && !strcmp(result, m.parent))
                parent_id = json_string_value(json_object_get(row, "id"));
        }
        if (!parent_id) {
            rc = el_error_set(err, EL_ENOTFOUND,
                              "delta %s: its parent adapter %s is not on the hub; promote "
                              "the device's first version, or upload the parent first",
                              id, m.parent);
            goto out;
        }
        char pid[65];
        snprintf(pid, sizeof pid, "%s", parent_id);
        if ((rc = rebuild(p, pid, depth - 1, &parent, NULL, err)))
            goto out;
    }
    el_delta_limits lim;
    el_delta_limits_default(&lim);
    if ((rc = el_delta_decode(b.payload, b.payload_len, &lim, &delta, &enc, err)) ||
        (rc = el_delta_apply(m.parent[0] ? &parent : NULL, &delta, out, err)) ||
        (rc = el_delta_digest(out, digest, err)))
        goto out;
    if (strcmp(digest, m.result)) {
        rc = el_error_set_tag(err, EL_ETRUST, "bad_signature",
                              "delta %s rebuilds to %s, not its result %s", id, digest,
                              m.result);
        goto out;
    }
out:
    if (rc) {
        el_delta_set_finish(out);
        el_manifest_finish(&m);
    } else if (m_out) {
        *m_out = m;
    } else {
        el_manifest_finish(&m);
    }
    el_delta_set_finish(&parent);
    el_delta_set_finish(&delta);
    el_bundle_finish(&b);
    el_free(bytes);
    json_decref(rec);
    return rc;
}

/* An adapter_config.json for SET: rank from the first lora_A tensor, alpha
 * from RECIPE (the device's "alpha"; the rank when absent, i.e. scale 1),
 * target_modules from the tensor names. Returns a new reference or NULL
 * with ERR set. */
static json_t *derive_adapter_config(const el_delta_set *set, const json_t *recipe,
                                     el_error *err)
{
    json_t *targets = json_array();
    int64_t rank = 0;
    for (size_t i = 0; i < set->n; i++) {
        const char *name = set->tensors[i].name;
        const char *a = strstr(name, ".lora_A.");
        if (!a)
            continue;
        const char *start = a;
        while (start > name && start[-1] != '.')
            start--;
        json_t *mod = json_stringn(start, (size_t)(a - start));
        size_t k;
        json_t *have;
        int seen = 0;
        json_array_foreach(targets, k, have)
            seen |= json_equal(have, mod);
        if (seen)
            json_decref(mod);
        else
            json_array_append_new(targets, mod);
        if (!rank && set->tensors[i].ndim == 2)
            rank = (int64_t)set->tensors[i].shape[0];
    }
    if (!rank || json_array_size(targets) == 0) {
        json_decref(targets);
        el_error_set(err, EL_EINPUT, "the delta holds no lora_A tensors; give "
                                     "--adapter-config FILE");
        return NULL;
    }
    json_t *alpha_v = json_object_get(recipe, "alpha");
    double alpha = json_is_number(alpha_v) ? json_number_value(alpha_v) : (double)rank;
    if (!(alpha > 0))
        alpha = (double)rank;
    return json_pack("{s:s, s:s, s:b, s:b, s:b, s:f, s:f, s:n, s:s, s:I, s:o, s:s, s:b}",
                     "base_model_name_or_path", "", "bias", "none", "fan_in_fan_out", 0,
                     "inference_mode", 1, "init_lora_weights", 1, "lora_alpha", alpha,
                     "lora_dropout", 0.0, "modules_to_save", "peft_type", "LORA", "r",
                     (json_int_t)rank, "target_modules", targets, "task_type", "CAUSAL_LM",
                     "use_rslora", 0);
}

int fl_cmd_promote(int argc, char **argv)
{
    static const char *const allowed[] = {"--hub", "--cert", "--key", "--ca", "--target",
                                          "--counter", "--rollout", "--expires",
                                          "--adapter-config", "-o", NULL};
    fl_args a;
    el_error err;
    if (fl_parse(argc, argv, "promote", allowed, NULL, &a, &err))
        return fl_fail(&a, &err);
    if (a.help)
        return fputs(promote_help, stdout), 0;
    const char *target = fl_get(&a, "--target"), *counter_s = fl_get(&a, "--counter"),
               *out_path = fl_get(&a, "-o"), *exp_s = fl_get(&a, "--expires"),
               *cfg_path = fl_get(&a, "--adapter-config");
    if (a.npos != 1 || !target || !counter_s || !out_path)
        return fl_usage(&a, "give BUNDLE_ID, --target, --counter and -o");
    char *end;
    long long counter = strtoll(counter_s, &end, 10);
    if (*end || counter < 1)
        return fl_usage(&a, "--counter must be a positive integer");
    int64_t expires = 30 * 86400;
    if (exp_s && fl_duration(exp_s, &expires))
        return fl_usage(&a, "--expires is like 30d or 12h");
    int rollout = 100;
    if (fl_get(&a, "--rollout")) {
        rollout = (int)strtol(fl_get(&a, "--rollout"), &end, 10);
        if (*end || rollout < 0 || rollout > 100)
            return fl_usage(&a, "--rollout is a percent, 0-100");
    }
    if (strlen(target) == 0 || strlen(target) > EL_MANIFEST_TARGET_MAX)
        return fl_usage(&a, "--target is a group, a device id or '*'");

    promote_ctx p = {.now = fl_now()};
    uint8_t *root_bytes = NULL, *payload = NULL, *out = NULL;
    size_t root_len, payload_len = 0, out_len = 0;
    el_bundle rb;
    el_bundle_init(&rb);
    el_manifest dm = {0};
    el_delta_set adapter = {0}, delta = {0}, rebuilt = {0};
    el_trust_state zero = {0}, st;
    json_t *m = NULL, *cfg = NULL;
    char *header = NULL;
    char path[1024], hash[65];
    int rc;
    fl_path(&a, "root.elb", path);
    if ((rc = el_fs_read_file(path, 256 * 1024, &root_bytes, &root_len, &err)) ||
        (rc = el_bundle_parse(root_bytes, root_len, &rb, &err)) ||
        (rc = el_trust_root_bootstrap(&rb, NULL, p.now, &zero, &p.root, &st, &err))) {
        el_error_prefix(&err, "%s", path);
        goto out;
    }
    fl_path(&a, "ca.crt", path);
    if ((rc = el_crypto_cert_load(path, &p.ca, &err)))
        goto out;
    if (cfg_path) {
        uint8_t *buf;
        size_t len;
        if ((rc = el_fs_read_file(cfg_path, CONFIG_MAX, &buf, &len, &err)))
            goto out;
        cfg = el_json_parse(buf, len, CONFIG_MAX, cfg_path, &err);
        el_free(buf);
        if (!json_is_object(cfg)) {
            rc = err.code ? err.code : el_error_set(&err, EL_EINPUT, "%s: not an object",
                                                    cfg_path);
            goto out;
        }
    }
    snprintf(p.work, sizeof p.work, "%s.delta", out_path);
    if ((rc = hub_connect(&a, &p.client, &err)) ||
        (rc = rebuild(&p, a.pos[0], CHAIN_MAX, &adapter, &dm, &err)))
        goto out;
    json_t *recipe = json_object_get(dm.json, "recipe");
    if (!cfg && !(cfg = derive_adapter_config(&adapter, recipe, &err))) {
        rc = err.code;
        goto out;
    }
    /* From zeros, exact: any device on that base can install it whatever
     * version it holds, and it holds bit-identical weights afterwards. */
    el_delta_limits lim;
    el_delta_limits_default(&lim);
    int enc;
    if ((rc = el_delta_encode(&adapter, NULL, EL_DELTA_EXACT, &payload, &payload_len, &err)) ||
        (rc = el_delta_decode(payload, payload_len, &lim, &delta, &enc, &err)) ||
        (rc = el_delta_apply(NULL, &delta, &rebuilt, &err)) ||
        (rc = el_delta_digest(&rebuilt, hash, &err)))
        goto out;
    if (strcmp(hash, dm.result)) {
        rc = el_error_set(&err, EL_EINTERNAL, "re-encoding changed the adapter (%s, not %s)",
                          hash, dm.result);
        goto out;
    }
    char created[32], exp[32];
    el_manifest_time_format(p.now, created);
    el_manifest_time_format(p.now + expires, exp);
    m = json_pack("{s:s, s:i, s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:O, s:s}", "type", "release",
                  "version", EL_MANIFEST_VERSION, "created", created, "expires", exp,
                  "counter", (json_int_t)counter, "kind", "adapter", "target", target, "base",
                  dm.base, "result", dm.result, "adapter_config", cfg, "source", a.pos[0]);
    if (!m) {
        rc = el_error_set(&err, EL_ENOMEM, "out of memory");
        goto out;
    }
    if (rollout < 100)
        json_object_set_new(m, "rollout", json_integer(rollout));
    /* Accountability: the release says which device version it came from and
     * carries that version's figures. */
    if (json_is_object(recipe))
        json_object_set(m, "recipe", recipe);
    if (json_is_object(json_object_get(dm.json, "metrics")))
        json_object_set(m, "metrics", json_object_get(dm.json, "metrics"));
    el_sha256_hex(payload, payload_len, hash);
    json_object_set_new(m, "payload", json_pack("{s:s, s:I, s:s}", "sha256", hash, "size",
                                                (json_int_t)payload_len, "encoding",
                                                el_delta_encoding_name(EL_DELTA_EXACT)));
    if (!(header = el_json_dump_sorted(m))) {
        rc = el_error_set(&err, EL_ENOMEM, "out of memory");
        goto out;
    }
    el_bundle b;
    el_bundle_init(&b);
    b.header = (const uint8_t *)header;
    b.header_len = strlen(header);
    b.payload = payload;
    b.payload_len = payload_len;
    if ((rc = el_bundle_serialize(&b, &out, &out_len, &err)) ||
        (rc = el_fs_write_atomic(out_path, out, out_len, 0644, &err)))
        goto out;
    el_sha256_hex(b.header, b.header_len, hash);
    if (a.json)
        fl_print_json(json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "release", out_path, "id",
                                hash, "source", a.pos[0], "result", dm.result, "counter",
                                (json_int_t)counter, "payload_size", (json_int_t)payload_len));
    else
        printf("release %s written to %s (adapter %s from device delta %s, counter %lld, "
               "unsigned)\n", hash, out_path, dm.result, a.pos[0], counter);
out:
    if (p.work[0]) {
        unlink(p.work);
        char part[1200];
        snprintf(part, sizeof part, "%s.part", p.work);
        unlink(part);
    }
    free(header);
    json_decref(m);
    json_decref(cfg);
    json_decref(p.versions);
    el_client_destroy(p.client);
    el_crypto_cert_destroy(p.ca);
    el_manifest_root_finish(&p.root);
    el_manifest_finish(&dm);
    el_delta_set_finish(&adapter);
    el_delta_set_finish(&delta);
    el_delta_set_finish(&rebuilt);
    el_bundle_finish(&rb);
    el_free(root_bytes);
    el_free(payload);
    el_free(out);
    return rc ? fl_fail(&a, &err) : 0;
}
