/* edgeloop-fleet release create / sign / inspect.
 *
 * A release is made unsigned by `create`, then each release-key holder adds
 * one signature with `sign` (k-of-n signers can work on different machines:
 * a signature covers only the header, so adding one never changes what the
 * others signed), and `inspect` runs the device's own decision
 * (el_trust_release) against the fleet's root.
 *
 * Payloads:
 *   adapter     lora-delta-exact (or -q8) of the PEFT adapter's tensors,
 *               from zeros or from --parent DIR; "result" and "parent" are
 *               el_delta_digest of the adapters; adapter_config.json is
 *               carried in the manifest as "adapter_config".
 *   base-model  the model.safetensors bytes ("raw"); config.json is carried
 *               as "config"; "base" is the SHA-256 of the payload.
 *   policy      the policy file's bytes ("raw").
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/safetensors.h"
#include "base/sha256.h"
#include "bundle.h"
#include "delta.h"
#include "fleet.h"
#include "manifest.h"
#include "trust.h"

#define RELEASE_FILE_MAX ((size_t)4 << 30)
#define POLICY_MAX ((size_t)1 << 20)
#define CONFIG_MAX ((size_t)64 << 10)

/* SHA-256 of the file at PATH, hex; streamed, any size. */
static int hash_file(const char *path, char out[65], el_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return el_error_set(err, EL_ENOTFOUND, "%s: cannot open", path);
    el_sha256_ctx ctx;
    el_sha256_init(&ctx);
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        el_sha256_update(&ctx, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad)
        return el_error_set(err, EL_EIO, "%s: read error", path);
    uint8_t h[32];
    el_sha256_final(&ctx, h);
    el_hex(h, 32, out);
    return 0;
}

/* "--base" is a model directory (hash of its model.safetensors) or a hash. */
static int base_hash(const char *arg, char out[65], el_error *err)
{
    if (strlen(arg) == 64 && strspn(arg, "0123456789abcdef") == 64) {
        memcpy(out, arg, 65);
        return 0;
    }
    char path[1100];
    snprintf(path, sizeof path, "%s/model.safetensors", arg);
    return hash_file(path, out, err);
}

static json_t *read_json_file(const char *path, el_error *err)
{
    uint8_t *buf;
    size_t len;
    if (el_fs_read_file(path, CONFIG_MAX, &buf, &len, err))
        return NULL;
    json_t *v = el_json_parse(buf, len, CONFIG_MAX, path, err);
    el_free(buf);
    return v;
}

/* Loads a PEFT adapter's tensors (any of F32/F16/BF16, widened to fp32). */
static int load_adapter(const char *dir, el_delta_set *set, el_error *err)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    el_safetensors *st = NULL;
    int rc = el_safetensors_open(path, &st, err);
    if (rc)
        return rc;
    size_t n = el_safetensors_count(st);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const el_st_tensor *t = el_safetensors_at(st, i);
        if (t->ndim < 1 || t->ndim > EL_DELTA_NDIM_MAX) {
            rc = el_error_set(err, EL_EINPUT, "%s: tensor %s has rank %d (1-%d supported)",
                              path, t->name, t->ndim, EL_DELTA_NDIM_MAX);
            break;
        }
        uint64_t shape[EL_DELTA_NDIM_MAX];
        for (int k = 0; k < t->ndim; k++)
            shape[k] = (uint64_t)t->shape[k];
        float *f = el_malloc((t->numel ? t->numel : 1) * sizeof(float));
        if (!f) {
            rc = el_error_set(err, EL_ENOMEM, "out of memory");
            break;
        }
        el_safetensors_to_f32(t, f);
        rc = el_delta_set_add(set, t->name, (uint32_t)t->ndim, shape, f, err);
        el_free(f);
    }
    el_safetensors_close(st);
    if (rc)
        el_delta_set_finish(set);
    return rc;
}

static const char create_help[] =
    "usage: edgeloop-fleet release create --kind adapter --adapter DIR --base DIR|SHA\n"
    "           [--parent DIR] [--encoding exact|q8]\n"
    "       edgeloop-fleet release create --kind base-model --model DIR\n"
    "       edgeloop-fleet release create --kind policy --policy FILE\n"
    "         ... --target GROUP|DEVICE|'*' --counter N --expires 30d\n"
    "             [--rollout PERCENT] -o rel.elb [--json]\n"
    "Writes an unsigned release; add signatures with `release sign`.\n";

int fl_cmd_release_create(int argc, char **argv)
{
    static const char *const allowed[] = {"--kind", "--adapter", "--base", "--parent",
                                          "--encoding", "--model", "--policy", "--target",
                                          "--counter", "--expires", "--rollout", "-o",
                                          NULL};
    fl_args a;
    el_error err;
    if (fl_parse(argc, argv, "release create", allowed, NULL, &a, &err))
        return fl_fail(&a, &err);
    if (a.help)
        return fputs(create_help, stdout), 0;
    const char *kind_s = fl_get(&a, "--kind"), *target = fl_get(&a, "--target"),
               *counter_s = fl_get(&a, "--counter"), *exp_s = fl_get(&a, "--expires"),
               *out_path = fl_get(&a, "-o");
    if (!kind_s || !target || !counter_s || !exp_s || !out_path || a.npos)
        return fl_usage(&a, "--kind, --target, --counter, --expires and -o are required");
    int kind = el_manifest_kind_parse(kind_s);
    if (kind < 0)
        return fl_usage(&a, "--kind is adapter, base-model or policy");
    char *end;
    long long counter = strtoll(counter_s, &end, 10);
    if (*end || counter < 1)
        return fl_usage(&a, "--counter must be a positive integer");
    int64_t expires;
    if (fl_duration(exp_s, &expires))
        return fl_usage(&a, "--expires is like 30d or 12h");
    int rollout = 100;
    if (fl_get(&a, "--rollout")) {
        rollout = atoi(fl_get(&a, "--rollout"));
        if (rollout < 0 || rollout > 100)
            return fl_usage(&a, "--rollout is a percent, 0-100");
    }
    if (strlen(target) == 0 || strlen(target) > EL_MANIFEST_TARGET_MAX)
        return fl_usage(&a, "--target is a group, a device id or '*'");

    int64_t now = fl_now();
    char created[32], exp[32];
    el_manifest_time_format(now, created);
    el_manifest_time_format(now + expires, exp);
    json_t *m = json_pack("{s:s, s:i, s:s, s:s, s:I, s:s, s:s}", "type", "release",
                          "version", EL_MANIFEST_VERSION, "created", created, "expires",
                          exp, "counter", (json_int_t)counter, "kind", kind_s, "target",
                          target);
    if (rollout < 100)
        json_object_set_new(m, "rollout", json_integer(rollout));
    uint8_t *payload = NULL, *out = NULL;
    size_t payload_len = 0, out_len = 0;
    const char *encoding = "raw";
    el_delta_set next = {0}, parent = {0};
    char hash[65];
    char *header = NULL;
    int rc = 0;

    if (kind == EL_KIND_ADAPTER) {
        const char *dir = fl_get(&a, "--adapter"), *base = fl_get(&a, "--base");
        const char *pdir = fl_get(&a, "--parent"), *enc = fl_get(&a, "--encoding");
        if (!dir || !base) {
            json_decref(m);
            return fl_usage(&a, "an adapter release needs --adapter DIR and --base DIR");
        }
        int encoding_id = !enc || strcmp(enc, "exact") == 0 ? EL_DELTA_EXACT
                        : strcmp(enc, "q8") == 0 ? EL_DELTA_Q8 : -1;
        if (encoding_id < 0) {
            json_decref(m);
            return fl_usage(&a, "--encoding is exact or q8");
        }
        char cfg_path[1100];
        snprintf(cfg_path, sizeof cfg_path, "%s/adapter_config.json", dir);
        json_t *cfg = read_json_file(cfg_path, &err);
        if (!cfg) {
            rc = err.code;
            goto out;
        }
        json_object_set_new(m, "adapter_config", cfg);
        if ((rc = base_hash(base, hash, &err)))
            goto out;
        json_object_set_new(m, "base", json_string(hash));
        if ((rc = load_adapter(dir, &next, &err)))
            goto out;
        if (pdir) {
            if ((rc = load_adapter(pdir, &parent, &err)) ||
                (rc = el_delta_digest(&parent, hash, &err)))
                goto out;
            json_object_set_new(m, "parent", json_string(hash));
        }
        if ((rc = el_delta_encode(&next, pdir ? &parent : NULL, encoding_id, &payload,
                                  &payload_len, &err)))
            goto out;
        /* "result" is what a device holds after rebuilding: parent + decoded
         * delta, which for q8 is not the adapter given here. */
        el_delta_limits lim;
        el_delta_limits_default(&lim);
        el_delta_set delta = {0}, rebuilt = {0};
        int enc_out;
        if ((rc = el_delta_decode(payload, payload_len, &lim, &delta, &enc_out, &err)) ||
            (rc = el_delta_apply(pdir ? &parent : NULL, &delta, &rebuilt, &err)) ||
            (rc = el_delta_digest(&rebuilt, hash, &err))) {
            el_delta_set_finish(&delta);
            el_delta_set_finish(&rebuilt);
            goto out;
        }
        el_delta_set_finish(&delta);
        el_delta_set_finish(&rebuilt);
        json_object_set_new(m, "result", json_string(hash));
        encoding = el_delta_encoding_name(encoding_id);
    } else if (kind == EL_KIND_BASE_MODEL) {
        const char *dir = fl_get(&a, "--model");
        if (!dir) {
            json_decref(m);
            return fl_usage(&a, "a base-model release needs --model DIR");
        }
        char path[1100];
        snprintf(path, sizeof path, "%s/config.json", dir);
        json_t *cfg = read_json_file(path, &err);
        if (!cfg) {
            rc = err.code;
            goto out;
        }
        json_object_set_new(m, "config", cfg);
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if ((rc = el_fs_read_file(path, RELEASE_FILE_MAX, &payload, &payload_len, &err)))
            goto out;
        el_sha256_hex(payload, payload_len, hash);
        json_object_set_new(m, "base", json_string(hash));
    } else {
        const char *file = fl_get(&a, "--policy");
        if (!file) {
            json_decref(m);
            return fl_usage(&a, "a policy release needs --policy FILE");
        }
        if ((rc = el_fs_read_file(file, POLICY_MAX, &payload, &payload_len, &err)))
            goto out;
    }
    el_sha256_hex(payload, payload_len, hash);
    json_object_set_new(m, "payload", json_pack("{s:s, s:I, s:s}", "sha256", hash, "size",
                                                (json_int_t)payload_len, "encoding",
                                                encoding));
    header = el_json_dump_sorted(m);
    el_bundle b;
    el_bundle_init(&b);
    b.header = (const uint8_t *)header;
    b.header_len = header ? strlen(header) : 0;
    b.payload = payload;
    b.payload_len = payload_len;
    if ((rc = el_bundle_serialize(&b, &out, &out_len, &err)) ||
        (rc = el_fs_write_atomic(out_path, out, out_len, 0644, &err)))
        goto out;
    el_sha256_hex(b.header, b.header_len, hash);
    if (a.json)
        fl_print_json(json_pack("{s:s, s:s, s:s, s:I, s:I}", "release", out_path, "id",
                                hash, "kind", kind_s, "counter", (json_int_t)counter,
                                "payload_size", (json_int_t)payload_len));
    else
        printf("release %s written to %s (%s, counter %lld, payload %zu bytes, unsigned)\n",
               hash, out_path, kind_s, counter, payload_len);
out:
    free(header);
    json_decref(m);
    el_free(payload);
    el_free(out);
    el_delta_set_finish(&next);
    el_delta_set_finish(&parent);
    return rc ? fl_fail(&a, &err) : 0;
}

static const char sign_help[] =
    "usage: edgeloop-fleet release sign rel.elb --key NAME | --key-file PATH [--json]\n"
    "Adds one signature to the release in place (atomically). A key that already\n"
    "signed it is refused (duplicate_signer).\n";

int fl_cmd_release_sign(int argc, char **argv)
{
    static const char *const allowed[] = {"--key", "--key-file", NULL};
    fl_args a;
    el_error err;
    if (fl_parse(argc, argv, "release sign", allowed, NULL, &a, &err))
        return fl_fail(&a, &err);
    if (a.help)
        return fputs(sign_help, stdout), 0;
    if (a.npos != 1 || (!fl_get(&a, "--key") && !fl_get(&a, "--key-file")))
        return fl_usage(&a, "give the release file and --key NAME or --key-file PATH");
    el_crypto_key *key = NULL;
    uint8_t *bytes = NULL, *out = NULL;
    size_t len, out_len;
    el_bundle b;
    el_bundle_init(&b);
    int rc;
    if ((rc = fl_load_key(&a, fl_get(&a, "--key"), 1, &key, &err)) ||
        (rc = el_fs_read_file(a.pos[0], RELEASE_FILE_MAX, &bytes, &len, &err)) ||
        (rc = el_bundle_parse(bytes, len, &b, &err)) ||
        (rc = el_bundle_add_signature(&b, key, &err)) ||
        (rc = el_bundle_serialize(&b, &out, &out_len, &err)) ||
        (rc = el_fs_write_atomic(a.pos[0], out, out_len, 0644, &err)))
        goto out;
    const el_bundle_sig *s = &b.sigs[b.n_sigs - 1];
    if (a.json)
        fl_print_json(json_pack("{s:s, s:s, s:i}", "release", a.pos[0], "key_id",
                                s->key_id, "signatures", (int)b.n_sigs));
    else
        printf("signed %s with key %s (%zu signatures)\n", a.pos[0], s->key_id, b.n_sigs);
out:
    el_crypto_key_destroy(key);
    el_free(bytes);
    el_free(out);
    return rc ? fl_fail(&a, &err) : 0;
}

static const char inspect_help[] =
    "usage: edgeloop-fleet release inspect rel.elb [--device ID] [--group GROUP]\n"
    "           [--base SHA] [--json]\n"
    "Verifies the release against the fleet's root.elb and prints what a device\n"
    "(by default a fresh one in the release's target, on the release's base)\n"
    "would decide. Exit 0 when it would accept, 3 when it would refuse.\n";

static const char *sig_status(const el_manifest_root *root, const el_bundle *b, size_t i)
{
    if (el_manifest_root_key_revoked(root, b->sigs[i].key_id))
        return "revoked";
    for (size_t k = 0; k < root->n_release_keys; k++)
        if (strcmp(root->release_keys[k].id, b->sigs[i].key_id) == 0)
            return el_bundle_verify_sig(b, i, root->release_keys[k].key, NULL) == 0
                       ? "valid" : "bad_signature";
    return "unknown_key";
}

int fl_cmd_release_inspect(int argc, char **argv)
{
    static const char *const allowed[] = {"--device", "--group", "--base", NULL};
    fl_args a;
    el_error err;
    if (fl_parse(argc, argv, "release inspect", allowed, NULL, &a, &err))
        return fl_fail(&a, &err);
    if (a.help)
        return fputs(inspect_help, stdout), 0;
    if (a.npos != 1)
        return fl_usage(&a, "give one release file");
    char root_path[1024];
    fl_path(&a, "root.elb", root_path);
    uint8_t *root_bytes = NULL;
    size_t root_len;
    int fd = -1;
    el_bundle rb, b;
    el_bundle_init(&b);
    el_manifest_root root = {0};
    el_manifest shown = {0}, decided = {0};
    el_trust_state zero = {0}, st;
    int64_t now = fl_now();
    int rc;
    if ((rc = el_fs_read_file(root_path, 256 * 1024, &root_bytes, &root_len, &err)) ||
        (rc = el_bundle_parse(root_bytes, root_len, &rb, &err)) ||
        (rc = el_trust_root_bootstrap(&rb, NULL, now, &zero, &root, &st, &err))) {
        el_error_prefix(&err, "%s", root_path);
        goto out;
    }
    /* Streamed: the framing is read first, the payload only hashed. */
    fd = open(a.pos[0], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = el_error_set(&err, EL_ENOTFOUND, "%s: cannot open", a.pos[0]);
        goto out;
    }
    if ((rc = el_bundle_read_head_fd(fd, &b, &err))) {
        el_error_prefix(&err, "%s", a.pos[0]);
        goto out;
    }
    /* Display only: the decision below parses again, after the signatures. */
    el_error show_err;
    int shown_ok = el_manifest_parse(b.header, b.header_len, RELEASE_FILE_MAX, &shown,
                                     &show_err) == 0;
    el_trust_device dev = {
        .device_id = fl_get(&a, "--device"),
        .group = fl_get(&a, "--group") ? fl_get(&a, "--group")
               : shown_ok && strcmp(shown.target, "*") ? shown.target : NULL,
        .base = fl_get(&a, "--base") ? fl_get(&a, "--base")
              : shown_ok ? shown.base : NULL,
    };
    el_error verdict;
    el_error_clear(&verdict);
    int vrc = el_trust_release(&root, &b, &dev, now, RELEASE_FILE_MAX, &zero, &decided, &st,
                               &verdict);
    if (vrc == 0)
        vrc = el_bundle_stream_payload(fd, decided.payload_sha256, decided.payload_size,
                                       NULL, NULL, &verdict);
    size_t valid = 0;
    json_t *sigs = json_array();
    for (size_t i = 0; i < b.n_sigs; i++) {
        const char *s = sig_status(&root, &b, i);
        valid += strcmp(s, "valid") == 0;
        json_array_append_new(sigs, json_pack("{s:s, s:s}", "key_id", b.sigs[i].key_id,
                                              "status", s));
    }
    if (a.json) {
        json_t *o = json_pack("{s:s, s:o, s:I, s:i, s:s, s:I}", "id", b.id, "signatures",
                              sigs, "valid_signatures", (json_int_t)valid, "threshold",
                              root.release_threshold, "decision", vrc ? "refuse" : "accept",
                              "root_version", (json_int_t)root.version);
        if (shown_ok) {
            json_object_set(o, "manifest", shown.json);
        }
        if (vrc)
            json_object_set_new(o, "error", json_pack("{s:s, s:s}", "code",
                                                      verdict.tag[0] ? verdict.tag
                                                      : el_error_code_name(vrc),
                                                      "message", verdict.msg));
        fl_print_json(o);
    } else {
        printf("release %s\n", b.id);
        if (shown_ok) {
            char e[32];
            el_manifest_time_format(shown.expires, e);
            printf("  kind %s, counter %lld, target %s, rollout %d%%, expires %s\n",
                   el_manifest_kind_name(shown.kind) ? el_manifest_kind_name(shown.kind)
                                                      : "-",
                   (long long)shown.counter, shown.target, shown.rollout, e);
            printf("  payload %llu bytes, %s, sha256 %s\n",
                   (unsigned long long)shown.payload_size, shown.payload_encoding,
                   shown.payload_sha256);
        }
        for (size_t i = 0; i < b.n_sigs; i++)
            printf("  signature %s: %s\n", b.sigs[i].key_id,
                   json_string_value(json_object_get(json_array_get(sigs, i), "status")));
        printf("  %zu of %d required release signatures (root version %lld)\n", valid,
               root.release_threshold, (long long)root.version);
        if (vrc)
            printf("a device would REFUSE it: %s (%s)\n", verdict.tag, verdict.msg);
        else
            printf("a device would ACCEPT it\n");
        json_decref(sigs);
    }
    rc = vrc ? el_error_exit_status(vrc) : 0;
    el_manifest_finish(&shown);
    el_manifest_finish(&decided);
    el_manifest_root_finish(&root);
    el_free(root_bytes);
    el_bundle_finish(&b);
    close(fd);
    return rc;
out:
    el_manifest_root_finish(&root);
    el_free(root_bytes);
    el_bundle_finish(&b);
    if (fd >= 0)
        close(fd);
    return fl_fail(&a, &err);
}
