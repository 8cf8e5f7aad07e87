/* Test and bench fleet for the hub (see fleetkit.h). */
#include "fleetkit.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/sha256.h"
#include "bundle.h"
#include "manifest.h"

#define DAY 86400

static void die(const char *what, const el_error *err)
{
    fprintf(stderr, "fleetkit: %s: %s\n", what, err ? err->msg : strerror(errno));
    exit(1);
}

void el_fleetkit_path(const el_fleetkit *f, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", f->dir, name);
}

static void write_file(const el_fleetkit *f, const char *name, const void *data, size_t len)
{
    char path[700];
    el_error err;
    el_fleetkit_path(f, name, path, sizeof path);
    if (el_fs_write_atomic(path, data, len, 0644, &err))
        die(path, &err);
}

void el_fleetkit_write(const el_fleetkit *f, const char *name, const void *bytes, size_t len)
{
    write_file(f, name, bytes, len);
}

static void make_ca(el_crypto_key **key, el_crypto_cert **cert, const char *cn, int64_t now)
{
    el_error err;
    uint8_t *der;
    size_t len;
    el_crypto_cert_params p = {.cn = cn, .role = "ca", .not_before = now - 2 * DAY,
                               .not_after = now + 3650 * DAY};
    if (el_crypto_key_generate(key, &err) || el_crypto_ca_create(*key, &p, &der, &len, &err) ||
        el_crypto_cert_parse(der, len, cert, &err))
        die("CA", &err);
    el_free(der);
}

static void sign_bundle(const json_t *manifest, const uint8_t *payload, size_t plen,
                        el_crypto_key *const *keys, size_t n, uint8_t **out, size_t *len,
                        char *id)
{
    char *header = el_json_dump_sorted(manifest);
    el_error err;
    el_bundle b;
    el_bundle_init(&b);
    if (!header)
        die("manifest", NULL);
    b.header = (const uint8_t *)header;
    b.header_len = strlen(header);
    b.payload = payload;
    b.payload_len = plen;
    for (size_t i = 0; i < n; i++)
        if (el_bundle_sign_header(b.header, b.header_len, keys[i], &b.sigs[b.n_sigs++], &err))
            die("sign", &err);
    if (el_bundle_serialize(&b, out, len, &err))
        die("serialize", &err);
    if (id)
        el_sha256_hex(header, strlen(header), id);
    free(header);
}

static json_t *payload_json(const uint8_t *payload, size_t len, const char *encoding)
{
    char hex[65];
    el_sha256_hex(payload ? payload : (const uint8_t *)"", len, hex);
    return json_pack("{s:s, s:I, s:s}", "sha256", hex, "size", (json_int_t)len, "encoding",
                     encoding);
}

void el_fleetkit_issue(el_fleetkit *f, const char *name, const char *cn, const char *role,
                       const char *group, int64_t from, int64_t to, int other_ca,
                       char *serial)
{
    el_error err;
    el_crypto_key *key = NULL, *ca_key = f->ca_key;
    el_crypto_cert *ca = f->ca, *cert = NULL;
    if (other_ca)
        make_ca(&ca_key, &ca, "another CA", f->now);
    const char *dns[] = {cn};
    el_crypto_cert_params p = {.cn = cn, .role = role, .group = group, .dns = dns,
                               .n_dns = strcmp(role, "hub") ? 0 : 1, .not_before = from,
                               .not_after = to};
    uint8_t *der;
    size_t len;
    char *pem;
    char path[700], file[160];
    if (el_crypto_key_generate(&key, &err) ||
        el_crypto_cert_issue(ca, ca_key, key, &p, &der, &len, &err) ||
        el_crypto_pem("CERTIFICATE", der, len, &pem, &err))
        die("issue", &err);
    snprintf(file, sizeof file, "%s.crt", name);
    write_file(f, file, pem, strlen(pem));
    snprintf(file, sizeof file, "%s.key", name);
    el_fleetkit_path(f, file, path, sizeof path);
    if (el_crypto_key_save_private(key, path, &err))
        die("save key", &err);
    if (serial) {
        el_crypto_cert_info info;
        if (el_crypto_cert_parse(der, len, &cert, &err) ||
            el_crypto_cert_get_info(cert, &info, &err))
            die("cert info", &err);
        snprintf(serial, EL_CRYPTO_SERIAL_HEX_MAX, "%s", info.serial);
        el_crypto_cert_destroy(cert);
    }
    el_free(der);
    el_free(pem);
    el_crypto_key_destroy(key);
    if (other_ca) {
        el_crypto_key_destroy(ca_key);
        el_crypto_cert_destroy(ca);
    }
}

void el_fleetkit_init(el_fleetkit *f, const char *const *revoked, size_t n)
{
    memset(f, 0, sizeof *f);
    el_error err;
    f->now = (int64_t)time(NULL);
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof f->dir, "%s/edgeloop-hub-XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir))
        die("mkdtemp", NULL);
    make_ca(&f->ca_key, &f->ca, "fleet CA", f->now);
    const uint8_t *der;
    size_t len;
    char *pem;
    el_crypto_cert_der(f->ca, &der, &len);
    if (el_crypto_pem("CERTIFICATE", der, len, &pem, &err))
        die("CA PEM", &err);
    write_file(f, "ca.crt", pem, strlen(pem));
    el_free(pem);
    el_fleetkit_issue(f, "hub", "localhost", "hub", NULL, f->now - DAY, f->now + 365 * DAY, 0,
                      NULL);

    if (el_crypto_key_generate(&f->root_key, &err) ||
        el_crypto_key_generate(&f->release_keys[0], &err) ||
        el_crypto_key_generate(&f->release_keys[1], &err))
        die("keys", &err);
    uint8_t *bytes;
    size_t blen;
    el_fleetkit_root(f, 1, revoked, n, &bytes, &blen);
    write_file(f, "root.elb", bytes, blen);
    el_free(bytes);
}

void el_fleetkit_root(el_fleetkit *f, int64_t version, const char *const *revoked, size_t n,
                      uint8_t **out, size_t *len)
{
    el_error err;
    el_crypto_cert_info ca_info;
    if (el_crypto_cert_get_info(f->ca, &ca_info, &err))
        die("CA info", &err);
    json_t *root = el_manifest_root_json((const el_crypto_key *const *)&f->root_key, 1, 1,
                                         (const el_crypto_key *const *)f->release_keys, 2, 2,
                                         ca_info.fingerprint, version, &err);
    if (!root)
        die("root", &err);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, json_string(revoked[i]));
    json_object_set_new(root, "revoked_serials", list);
    char created[32], expires[32];
    el_manifest_time_format(f->now - DAY, created);
    el_manifest_time_format(f->now + 365 * DAY, expires);
    json_t *m = json_pack("{s:s, s:i, s:s, s:s, s:o, s:o}", "type", "root", "version", 1,
                          "created", created, "expires", expires, "root", root, "payload",
                          payload_json(NULL, 0, "none"));
    sign_bundle(m, NULL, 0, &f->root_key, 1, out, len, NULL);
    json_decref(m);
}

void el_fleetkit_finish(el_fleetkit *f)
{
    if (f->hub_pid > 0)
        el_fleetkit_stop_hub(f, SIGKILL);
    el_crypto_key_destroy(f->ca_key);
    el_crypto_cert_destroy(f->ca);
    el_crypto_key_destroy(f->root_key);
    el_crypto_key_destroy(f->release_keys[0]);
    el_crypto_key_destroy(f->release_keys[1]);
    if (f->dir[0] && !getenv("EDGELOOP_KEEP_TMP")) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "fleetkit: could not remove %s\n", f->dir);
    }
}

static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void el_fleetkit_adapter(el_delta_set *set, int dim, int layers, float scale, uint64_t seed)
{
    static const char *const proj[] = {"q_proj", "v_proj"};
    el_error err;
    const uint64_t rank = 8;
    float *data = el_malloc(sizeof(float) * (size_t)dim * (size_t)rank);
    if (!data)
        die("adapter", NULL);
    for (int l = 0; l < layers; l++)
        for (int p = 0; p < 2; p++)
            for (int ab = 0; ab < 2; ab++) {
                char name[160];
                snprintf(name, sizeof name,
                         "base_model.model.model.layers.%d.self_attn.%s.lora_%c.weight", l,
                         proj[p], ab ? 'B' : 'A');
                uint64_t shape[2] = {ab ? (uint64_t)dim : rank, ab ? rank : (uint64_t)dim};
                for (uint64_t i = 0; i < (uint64_t)dim * rank; i++)
                    data[i] = scale * ((float)(next_rand(&seed) >> 40) / (float)(1 << 24) - 0.5f);
                if (el_delta_set_add(set, name, 2, shape, data, &err))
                    die("adapter", &err);
            }
    el_free(data);
}

void el_fleetkit_delta(el_fleetkit *f, const char *name, const el_delta_set *next,
                       const el_delta_set *parent, int encoding, uint8_t **out,
                       size_t *len, char *id, el_delta_set *rebuilt_out)
{
    el_error err;
    char path[700], file[160], digest[65], parent_digest[65] = "";
    uint8_t *payload;
    size_t plen;
    el_delta_set decoded = {0}, rebuilt = {0};
    el_delta_limits limits;
    int enc;
    el_delta_limits_default(&limits);
    /* the result is what both ends rebuild from the (possibly lossy) delta */
    if (el_delta_encode(next, parent, encoding, &payload, &plen, &err) ||
        el_delta_decode(payload, plen, &limits, &decoded, &enc, &err) ||
        el_delta_apply(parent, &decoded, &rebuilt, &err) ||
        el_delta_digest(&rebuilt, digest, &err) ||
        (parent && el_delta_digest(parent, parent_digest, &err)))
        die("delta", &err);
    el_delta_set_finish(&decoded);
    if (rebuilt_out)
        *rebuilt_out = rebuilt;
    else
        el_delta_set_finish(&rebuilt);
    el_crypto_key *key = NULL;
    el_crypto_cert *cert = NULL;
    snprintf(file, sizeof file, "%s.key", name);
    el_fleetkit_path(f, file, path, sizeof path);
    if (el_crypto_key_load(path, 1, &key, &err))
        die(path, &err);
    snprintf(file, sizeof file, "%s.crt", name);
    el_fleetkit_path(f, file, path, sizeof path);
    const uint8_t *der;
    size_t der_len;
    char *b64;
    if (el_crypto_cert_load(path, &cert, &err))
        die(path, &err);
    el_crypto_cert_der(cert, &der, &der_len);
    if (el_crypto_base64_encode(der, der_len, &b64, &err))
        die("base64", &err);
    char created[32], expires[32];
    el_manifest_time_format(f->now - 60, created);
    el_manifest_time_format(f->now + 30 * DAY, expires);
    char base[65];
    el_sha256_hex("fleetkit base model", 19, base);
    json_t *m = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:o, s:s}", "type",
                          "device-delta", "version", 1, "created", created, "expires",
                          expires, "target", "hub", "base", base, "result", digest,
                          "payload", payload_json(payload, plen,
                                                  el_delta_encoding_name(encoding)),
                          "cert", b64);
    if (parent_digest[0])
        json_object_set_new(m, "parent", json_string(parent_digest));
    sign_bundle(m, payload, plen, &key, 1, out, len, id);
    json_decref(m);
    el_free(b64);
    el_free(payload);
    el_crypto_key_destroy(key);
    el_crypto_cert_destroy(cert);
}

void el_fleetkit_release(el_fleetkit *f, const char *target, int64_t counter, int nsigs,
                         uint8_t **out, size_t *len, char *id)
{
    static const char policy[] = "[gate]\nmin_gain = 0.02\n";
    char created[32], expires[32];
    el_manifest_time_format(f->now - 60, created);
    el_manifest_time_format(f->now + 30 * DAY, expires);
    json_t *m = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:I, s:o}", "type", "release",
                          "version", 1, "created", created, "expires", expires, "kind",
                          "policy", "target", target, "counter", (json_int_t)counter,
                          "payload",
                          payload_json((const uint8_t *)policy, sizeof policy - 1, "none"));
    sign_bundle(m, (const uint8_t *)policy, sizeof policy - 1, f->release_keys,
                (size_t)nsigs, out, len, id);
    json_decref(m);
}

void el_fleetkit_release_adapter(el_fleetkit *f, const char *target, int64_t counter,
                                 const el_delta_set *set, uint8_t **out, size_t *len,
                                 char *id)
{
    el_error err;
    uint8_t *payload;
    size_t plen;
    char digest[65], base[65], created[32], expires[32];
    if (el_delta_encode(set, NULL, EL_DELTA_EXACT, &payload, &plen, &err) ||
        el_delta_digest(set, digest, &err))
        die("adapter release", &err);
    el_sha256_hex("fleetkit base model", 19, base);
    el_manifest_time_format(f->now - 60, created);
    el_manifest_time_format(f->now + 30 * DAY, expires);
    json_t *m = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:o}", "type",
                          "release", "version", 1, "created", created, "expires", expires,
                          "kind", "adapter", "target", target, "counter", (json_int_t)counter,
                          "base", base, "result", digest, "payload",
                          payload_json(payload, plen, "lora-delta-exact"));
    sign_bundle(m, payload, plen, f->release_keys, 2, out, len, id);
    json_decref(m);
    el_free(payload);
}

json_t *el_fleetkit_status_signed(const el_crypto_key *key, const char *device, int64_t seq,
                                  const char *hash)
{
    el_error err;
    char message[512];
    uint8_t sig[EL_CRYPTO_SIG_MAX];
    size_t sig_len;
    char *b64;
    long mlen = el_client_audit_message(device, seq, hash, message, sizeof message);
    if (mlen < 0 || el_crypto_sign(key, message, (size_t)mlen, sig, &sig_len, &err) ||
        el_crypto_base64_encode(sig, sig_len, &b64, &err))
        die("status", &err);
    json_t *doc = json_pack("{s:s, s:s, s:[{s:s, s:s}], s:{s:I, s:s, s:s}, s:{s:i}}",
                            "active", "none", "probation", "none", "decisions", "decision",
                            "rejected", "reason", "holdout loss did not improve", "audit",
                            "seq", (json_int_t)seq, "hash", hash, "signature", b64,
                            "counters", "trained", 1);
    el_free(b64);
    return doc;
}

el_crypto_key *el_fleetkit_key(el_fleetkit *f, const char *name)
{
    el_error err;
    char path[700], file[160];
    snprintf(file, sizeof file, "%s.key", name);
    el_fleetkit_path(f, file, path, sizeof path);
    el_crypto_key *key = NULL;
    if (el_crypto_key_load(path, 1, &key, &err))
        die("key", &err);
    return key;
}

json_t *el_fleetkit_status(el_fleetkit *f, const char *name, const char *device, int64_t seq,
                           const char *hash)
{
    el_crypto_key *key = el_fleetkit_key(f, name);
    json_t *doc = el_fleetkit_status_signed(key, device, seq, hash);
    el_crypto_key_destroy(key);
    return doc;
}

void el_fleetkit_client_opts(el_fleetkit *f, const char *name, el_client_opts *o,
                             char *paths, size_t paths_len)
{
    /* three paths packed into the caller's buffer */
    size_t third = paths_len / 3;
    char *ca = paths, *crt = paths + third, *key = paths + 2 * third;
    char file[160];
    el_fleetkit_path(f, "ca.crt", ca, third);
    snprintf(file, sizeof file, "%s.crt", name);
    el_fleetkit_path(f, file, crt, third);
    snprintf(file, sizeof file, "%s.key", name);
    el_fleetkit_path(f, file, key, third);
    memset(o, 0, sizeof *o);
    o->host = "localhost";
    o->port = f->hub_port;
    o->ca_path = ca;
    o->cert_path = crt;
    o->key_path = key;
    o->resume = 1;
    o->timeout_ms = 10000;
}

int el_fleetkit_start_hub(el_fleetkit *f, const char *hub_exe, const char *const *extra,
                          const char *env_crash)
{
    char port_file[700], data[700], ca[700], crt[700], key[700], root[700];
    el_fleetkit_path(f, "port", port_file, sizeof port_file);
    el_fleetkit_path(f, "data", data, sizeof data);
    el_fleetkit_path(f, "ca.crt", ca, sizeof ca);
    el_fleetkit_path(f, "hub.crt", crt, sizeof crt);
    el_fleetkit_path(f, "hub.key", key, sizeof key);
    el_fleetkit_path(f, "root.elb", root, sizeof root);
    el_fleetkit_path(f, "hub.log", f->hub_log, sizeof f->hub_log);
    unlink(port_file);
    if (f->hub_pid > 0)
        el_fleetkit_stop_hub(f, SIGKILL);   /* never leave one running */
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", f->fixed_port);
    const char *argv[64] = {hub_exe, "serve", "--listen", listen, "--port-file",
                            port_file, "--data", data, "--ca", ca, "--cert", crt, "--key", key,
                            "--root", root};
    int argc = 16;
    for (int i = 0; extra && extra[i] && argc < 62; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        FILE *log = fopen(f->hub_log, "a");
        if (log) {
            dup2(fileno(log), 1);
            dup2(fileno(log), 2);
        }
        if (env_crash)
            setenv("EDGELOOP_CRASH_AT", env_crash, 1);
        else
            unsetenv("EDGELOOP_CRASH_AT");
        execv(hub_exe, (char *const *)argv);
        _exit(127);
    }
    f->hub_pid = pid;
    /* readiness wait (not a timing assertion): the port file appears once
     * the socket listens */
    for (int i = 0; i < 600; i++) {
        uint8_t *text = NULL;
        size_t len = 0;
        if (el_fs_read_file(port_file, 64, &text, &len, NULL) == 0) {
            f->hub_port = atoi((const char *)text);
            el_free(text);
            if (f->hub_port > 0)
                return 0;
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            f->hub_pid = 0;
            return -1;
        }
        usleep(50 * 1000);
    }
    el_fleetkit_stop_hub(f, SIGKILL);
    return -1;
}

int el_fleetkit_stop_hub(el_fleetkit *f, int sig)
{
    int status = -1;
    if (f->hub_pid <= 0)
        return -1;
    kill(f->hub_pid, sig);
    while (waitpid(f->hub_pid, &status, 0) < 0 && errno == EINTR)
        ;
    f->hub_pid = 0;
    return status;
}
