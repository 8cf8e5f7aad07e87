/* edgeloop-fleet: the fleet manager's tool (DESIGN.md "Three programs").
 *
 * Works in a fleet directory (--fleet DIR, $EDGELOOP_FLEET, ./fleet):
 *   ca.crt, ca.key          the fleet CA (key 0600)
 *   keys/NAME.key, .pub     root and release keys (private keys 0600)
 *   root.elb                current root metadata; root-N.elb every version
 * Commands: ca init, keys gen, root init, root rotate, issue, csr, release
 * create/sign/inspect (release.c); release push, status, promote talk to the
 * hub (hub.c). Exit codes: 0 ok, 1 usage or internal,
 * 2 bad input, 3 refused by trust.
 */
#include "fleet.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/sha256.h"
#include "bundle.h"
#include "manifest.h"
#include "trust.h"

#define ROOT_MAX (256 * 1024)

/* ---- shared helpers ------------------------------------------------------ */

static int in_list(const char *const *list, const char *s)
{
    for (; list && *list; list++)
        if (strcmp(*list, s) == 0)
            return 1;
    return 0;
}

static fl_opt *opt_slot(fl_args *a, const char *name)
{
    for (int i = 0; i < a->nopts; i++)
        if (strcmp(a->opts[i].name, name) == 0)
            return &a->opts[i];
    if (a->nopts == FL_OPTS_MAX)
        return NULL;
    a->opts[a->nopts].name = name;
    a->opts[a->nopts].n = 0;
    return &a->opts[a->nopts++];
}

int fl_parse(int argc, char **argv, const char *cmd, const char *const *allowed,
             const char *const *multi, fl_args *a, el_error *err)
{
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    const char *fleet = getenv("EDGELOOP_FLEET");
    snprintf(a->fleet, sizeof a->fleet, "%s", fleet && *fleet ? fleet : "./fleet");
    /* --json first, so that even a parse error is reported as JSON. */
    for (int i = 0; i < argc; i++)
        a->json |= strcmp(argv[i], "--json") == 0;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--json") == 0) {
            a->json = 1;
        } else if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            a->help = 1;
        } else if (strcmp(s, "--fleet") == 0) {
            if (i + 1 >= argc)
                return el_error_set(err, EL_EUSAGE, "--fleet needs a directory");
            snprintf(a->fleet, sizeof a->fleet, "%s", argv[++i]);
        } else if (s[0] == '-' && s[1] != '\0') {
            int is_multi = in_list(multi, s);
            if (!is_multi && !in_list(allowed, s))
                return el_error_set(err, EL_EUSAGE, "unknown option %s", s);
            if (i + 1 >= argc)
                return el_error_set(err, EL_EUSAGE, "%s needs a value", s);
            fl_opt *o = opt_slot(a, s);
            if (!o)
                return el_error_set(err, EL_EUSAGE, "too many options");
            do {
                if (o->n == FL_VALS_MAX)
                    return el_error_set(err, EL_EUSAGE, "too many values for %s", s);
                o->vals[o->n++] = argv[++i];
            } while (is_multi && i + 1 < argc && argv[i + 1][0] != '-');
            if (!is_multi && o->n > 1)
                return el_error_set(err, EL_EUSAGE, "%s given twice", s);
        } else {
            if (a->npos == FL_POS_MAX)
                return el_error_set(err, EL_EUSAGE, "too many arguments");
            a->pos[a->npos++] = s;
        }
    }
    return 0;
}

const char *fl_get(const fl_args *a, const char *name)
{
    for (int i = 0; i < a->nopts; i++)
        if (strcmp(a->opts[i].name, name) == 0)
            return a->opts[i].vals[0];
    return NULL;
}

const char *const *fl_getv(const fl_args *a, const char *name, int *n)
{
    for (int i = 0; i < a->nopts; i++)
        if (strcmp(a->opts[i].name, name) == 0) {
            *n = a->opts[i].n;
            return a->opts[i].vals;
        }
    *n = 0;
    return NULL;
}

void fl_path(const fl_args *a, const char *rel, char out[1024])
{
    snprintf(out, 1024, "%s/%s", a->fleet, rel);
}

static int key_name_ok(const char *name)
{
    if (!*name || strlen(name) > 64)
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
            return 0;
    return name[0] != '.';
}

int fl_load_key(const fl_args *a, const char *name, int is_private, el_crypto_key **out,
                el_error *err)
{
    *out = NULL;
    if (!name) {
        const char *file = fl_get(a, "--key-file");
        if (!file)
            return el_error_set(err, EL_EUSAGE, "give --key NAME or --key-file PATH");
        return el_crypto_key_load(file, is_private, out, err);
    }
    if (!key_name_ok(name))
        return el_error_set(err, EL_EUSAGE, "bad key name \"%s\"", name);
    char rel[128], path[1024];
    snprintf(rel, sizeof rel, "keys/%s.%s", name, is_private ? "key" : "pub");
    fl_path(a, rel, path);
    if (!is_private && !el_fs_exists(path)) {
        snprintf(rel, sizeof rel, "keys/%s.key", name);
        fl_path(a, rel, path);
        return el_crypto_key_load(path, 1, out, err);
    }
    return el_crypto_key_load(path, is_private, out, err);
}

int fl_duration(const char *s, int64_t *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || v <= 0 || v > 100000 || end[0] == '\0' || end[1] != '\0')
        return -1;
    int64_t unit = end[0] == 'd' ? 86400 : end[0] == 'h' ? 3600 : end[0] == 'm' ? 60
                 : end[0] == 's' ? 1 : 0;
    if (!unit)
        return -1;
    *out = v * unit;
    return 0;
}

int64_t fl_now(void)
{
    const char *s = getenv("EDGELOOP_FLEET_NOW");
    int64_t t;
    if (s && el_manifest_time_parse(s, &t) == 0)
        return t;
    return (int64_t)time(NULL);
}

void fl_print_json(json_t *value)
{
    char *s = el_json_dump_sorted(value);
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(value);
}

int fl_fail(const fl_args *a, const el_error *err)
{
    el_error_print(a->json ? stdout : stderr, "edgeloop-fleet", err, a->json);
    return el_error_exit_status(err->code);
}

int fl_usage(const fl_args *a, const char *msg)
{
    el_error err;
    el_error_set(&err, EL_EUSAGE, "%s: %s (see --help)", a->cmd, msg);
    return fl_fail(a, &err);
}

static int write_pem_file(const char *path, const char *label, const uint8_t *der,
                          size_t len, el_error *err)
{
    char *pem;
    int rc = el_crypto_pem(label, der, len, &pem, err);
    if (rc)
        return rc;
    rc = el_fs_write_atomic(path, pem, strlen(pem), 0644, err);
    el_free(pem);
    return rc;
}

/* ---- ca init ------------------------------------------------------------- */

static const char ca_help[] =
    "usage: edgeloop-fleet ca init [--cn NAME] [--days N] [--fleet DIR] [--json]\n"
    "Creates the fleet CA in the fleet directory: ca.key (0600) and ca.crt.\n";

static int cmd_ca_init(int argc, char **argv)
{
    static const char *const allowed[] = {"--cn", "--days", NULL};
    fl_args a;
    el_error err;
    if (fl_parse(argc, argv, "ca init", allowed, NULL, &a, &err))
        return fl_fail(&a, &err);
    if (a.help)
        return fputs(ca_help, stdout), 0;
    if (a.npos)
        return fl_usage(&a, "no arguments expected");
    char kpath[1024], cpath[1024];
    fl_path(&a, "ca.key", kpath);
    fl_path(&a, "ca.crt", cpath);
    if (el_fs_exists(kpath) || el_fs_exists(cpath)) {
        el_error_set(&err, EL_EUSAGE, "%s already holds a CA; refusing to replace it", a.fleet);
        return fl_fail(&a, &err);
    }
    int64_t days = 3650;
    const char *d = fl_get(&a, "--days");
    if (d && ((days = atoll(d)) < 1 || days > 36500))
        return fl_usage(&a, "--days must be 1..36500");
    int64_t now = fl_now();
    el_crypto_cert_params p = {.cn = fl_get(&a, "--cn") ? fl_get(&a, "--cn") : "edgeloop fleet CA",
                               .role = "ca", .not_before = now - 3600,
                               .not_after = now + days * 86400};
    el_crypto_key *key = NULL;
    uint8_t *der = NULL;
    size_t der_len;
    int rc;
    if ((rc = el_fs_mkdirs(a.fleet, 0700, &err)) ||
        (rc = el_crypto_key_generate(&key, &err)) ||
        (rc = el_crypto_ca_create(key, &p, &der, &der_len, &err)) ||
        (rc = el_crypto_key_save_private(key, kpath, &err)) ||
        (rc = write_pem_file(cpath, "CERTIFICATE", der, der_len, &err)))
        goto out;
    char fp[65];
    el_sha256_hex(der, der_len, fp);
    if (a.json)
        fl_print_json(json_pack("{s:s, s:s, s:s}", "ca_cert", cpath, "ca_key", kpath,
                                "fingerprint", fp));
    else
        printf("fleet CA created: %s\nfingerprint %s\n", cpath, fp);
out:
    el_free(der);
    el_crypto_key_destroy(key);
    return rc ? fl_fail(&a, &err) : 0;
}

/* ---- keys gen ------------------------------------------------------------ */

static const char keys_help[] =
    "usage: edgeloop-fleet keys gen NAME [--fleet DIR] [--json]\n"
    "Generates a P-256 key pair keys/NAME.key (0600) and keys/NAME.pub and\n"
    "prints its key id (SHA-256 of the public key's DER).\n";

static int cmd_keys_gen(int argc, char **argv)
{
    fl_args a;
    el_error err;
    if (fl_parse(argc, argv, "keys gen", NULL, NULL, &a, &err))
        return fl_fail(&a, &err);
    if (a.help)
        return fputs(keys_help, stdout), 0;
    if (a.npos != 1 || !key_name_ok(a.pos[0]))
        return fl_usage(&a, "give one key NAME of [A-Za-z0-9._-]");
    char dir[1024], rel[128], kpath[1024], ppath[1024];
    fl_path(&a, "keys", dir);
    snprintf(rel, sizeof rel, "keys/%s.key", a.pos[0]);
    fl_path(&a, rel, kpath);
    snprintf(rel, sizeof rel, "keys/%s.pub", a.pos[0]);
    fl_path(&a, rel, ppath);
    if (el_fs_exists(kpath)) {
        el_error_set(&err, EL_EUSAGE, "key %s already exists", kpath);
        return fl_fail(&a, &err);
    }
    el_crypto_key *key = NULL;
    char id[65];
    int rc;
    if ((rc = el_fs_mkdirs(dir, 0700, &err)) || (rc = el_crypto_key_generate(&key, &err)) ||
        (rc = el_crypto_key_save_private(key, kpath, &err)) ||
        (rc = el_crypto_key_save_public(key, ppath, &err)) ||
        (rc = el_crypto_key_id(key, id, &err))) {
        el_crypto_key_destroy(key);
        return fl_fail(&a, &err);
    }
    el_crypto_key_destroy(key);
    if (a.json)
        fl_print_json(json_pack("{s:s, s:s, s:s}", "name", a.pos[0], "key_id", id,
                                "private", kpath));
    else
        printf("%s %s\n", a.pos[0], id);
    return 0;
}

/* ---- csr, issue ---------------------------------------------------------- */

static const char csr_help[] =
    "usage: edgeloop-fleet csr --cn NAME --key-out FILE.key -o FILE.csr [--json]\n"
    "Makes a new key (0600) and a CSR for it, for hub and admin machines; the\n"
    "key stays where it was made.\n";

static int cmd_csr(int argc, char **argv)
{
    static const char *const allowed[] = {"--cn", "--key-out", "-o", NULL};
    fl_args a;
    el_error err;
    if (fl_parse(argc, argv, "csr", allowed, NULL, &a, &err))
        return fl_fail(&a, &err);
    if (a.help)
        return fputs(csr_help, stdout), 0;
    const char *cn = fl_get(&a, "--cn"), *kout = fl_get(&a, "--key-out"),
               *out = fl_get(&a, "-o");
    if (!cn || !kout || !out || a.npos)
        return fl_usage(&a, "--cn, --key-out and -o are required");
    el_crypto_key *key = NULL;
    uint8_t *der = NULL;
    size_t len;
    int rc;
    if ((rc = el_crypto_key_generate(&key, &err)) ||
        (rc = el_crypto_csr_create(key, cn, &der, &len, &err)) ||
        (rc = el_crypto_key_save_private(key, kout, &err)) ||
        (rc = write_pem_file(out, "CERTIFICATE REQUEST", der, len, &err))) {
        el_free(der);
        el_crypto_key_destroy(key);
        return fl_fail(&a, &err);
    }
    char id[65];
    el_crypto_key_id(key, id, &err);
    el_free(der);
    el_crypto_key_destroy(key);
    if (a.json)
        fl_print_json(json_pack("{s:s, s:s, s:s}", "csr", out, "key", kout, "key_id", id));
    else
        printf("CSR %s for key %s\n", out, id);
    return 0;
}

static const char issue_help[] =
    "usage: edgeloop-fleet issue --csr FILE --role device|hub|admin [--group GROUP]\n"
    "                            [--name HOST]... [--days N] -o FILE.crt [--json]\n"
    "Verifies the CSR's own signature, then issues a certificate from the fleet\n"
    "CA: role in OU, a device's group in O, hub DNS names in subjectAltName.\n";

static int cmd_issue(int argc, char **argv)
{
    static const char *const allowed[] = {"--csr", "--role", "--group", "--days", "-o", NULL};
    static const char *const multi[] = {"--name", NULL};
    fl_args a;
    el_error err;
    if (fl_parse(argc, argv, "issue", allowed, multi, &a, &err))
        return fl_fail(&a, &err);
    if (a.help)
        return fputs(issue_help, stdout), 0;
    const char *csr_path = fl_get(&a, "--csr"), *role = fl_get(&a, "--role"),
               *out = fl_get(&a, "-o"), *group = fl_get(&a, "--group");
    if (!csr_path || !role || !out || a.npos)
        return fl_usage(&a, "--csr, --role and -o are required");
    if (strcmp(role, "device") && strcmp(role, "hub") && strcmp(role, "admin"))
        return fl_usage(&a, "--role is device, hub or admin");
    int n_dns;
    const char *const *dns = fl_getv(&a, "--name", &n_dns);
    int64_t days = 365;
    const char *d = fl_get(&a, "--days");
    if (d && ((days = atoll(d)) < 1 || days > 36500))
        return fl_usage(&a, "--days must be 1..36500");
    char kpath[1024], cpath[1024];
    fl_path(&a, "ca.key", kpath);
    fl_path(&a, "ca.crt", cpath);
    uint8_t *csr = NULL, *der = NULL;
    size_t csr_len, der_len;
    el_crypto_key *ca_key = NULL, *subject = NULL;
    el_crypto_cert *ca = NULL, *cert = NULL;
    char cn[EL_CRYPTO_NAME_MAX + 1];
    el_crypto_cert_info info;
    int64_t now = fl_now();
    int rc;
    if ((rc = el_fs_read_file(csr_path, 65536, &csr, &csr_len, &err)) ||
        (rc = el_crypto_csr_verify(csr, csr_len, &subject, cn, &err))) {
        el_error_prefix(&err, "%s", csr_path);
        goto out;
    }
    el_crypto_cert_params p = {.cn = cn, .role = role, .group = group, .dns = dns,
                               .n_dns = (size_t)n_dns, .not_before = now - 3600,
                               .not_after = now + days * 86400};
    if ((rc = el_crypto_key_load(kpath, 1, &ca_key, &err)) ||
        (rc = el_crypto_cert_load(cpath, &ca, &err)) ||
        (rc = el_crypto_cert_issue(ca, ca_key, subject, &p, &der, &der_len, &err)) ||
        (rc = el_crypto_cert_parse(der, der_len, &cert, &err)) ||
        (rc = el_crypto_cert_get_info(cert, &info, &err)) ||
        (rc = write_pem_file(out, "CERTIFICATE", der, der_len, &err)))
        goto out;
    if (a.json)
        fl_print_json(json_pack("{s:s, s:s, s:s, s:s, s:s}", "cert", out, "cn", info.cn,
                                "role", info.role, "serial", info.serial, "key_id",
                                info.key_id));
    else
        printf("issued %s: CN=%s role=%s serial=%s\n", out, info.cn, info.role, info.serial);
out:
    el_free(csr);
    el_free(der);
    el_crypto_key_destroy(ca_key);
    el_crypto_key_destroy(subject);
    el_crypto_cert_destroy(ca);
    el_crypto_cert_destroy(cert);
    return rc ? fl_fail(&a, &err) : 0;
}

/* ---- root init / rotate -------------------------------------------------- */

static const char root_help[] =
    "usage: edgeloop-fleet root init|rotate --root-key NAME... --root-threshold K\n"
    "           --release-key NAME... --release-threshold K [--expires 365d]\n"
    "           [--revoke-key KEYID]... [--revoke-serial SERIAL]... [--json]\n"
    "init writes root.elb version 1, signed by the named root keys held here.\n"
    "rotate writes version N+1, signed by the current root's keys held here and\n"
    "by the new root keys; revocations carry over and can be added.\n";

typedef struct key_list {
    el_crypto_key *keys[EL_MANIFEST_KEYS_MAX];
    int n;
} key_list;

static void key_list_free(key_list *l)
{
    for (int i = 0; i < l->n; i++)
        el_crypto_key_destroy(l->keys[i]);
    l->n = 0;
}

static int load_named(const fl_args *a, const char *opt, key_list *l, el_error *err)
{
    int n;
    const char *const *names = fl_getv(a, opt, &n);
    if (n == 0 || n > EL_MANIFEST_KEYS_MAX)
        return el_error_set(err, EL_EUSAGE, "%s needs 1-%d key names", opt,
                            EL_MANIFEST_KEYS_MAX);
    for (int i = 0; i < n; i++) {
        int rc = fl_load_key(a, names[i], 0, &l->keys[l->n], err);
        if (rc)
            return rc;
        l->n++;
    }
    return 0;
}

/* Adds to SIGNERS every private key in keys/ whose id is one of IDS. */
static int find_private(const fl_args *a, const el_manifest_key *ids, size_t n_ids,
                        key_list *signers, el_error *err)
{
    char dir[1024];
    fl_path(a, "keys", dir);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".key") != 0 || e->d_name[0] == '.')
            continue;
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        el_crypto_key *k = NULL;
        char id[65];
        if (el_crypto_key_load(path, 1, &k, err) || el_crypto_key_id(k, id, err)) {
            el_crypto_key_destroy(k);
            continue;
        }
        int wanted = 0, have = 0;
        for (size_t i = 0; i < n_ids; i++)
            wanted |= strcmp(ids[i].id, id) == 0;
        for (int i = 0; i < signers->n; i++) {
            char sid[65];
            el_crypto_key_id(signers->keys[i], sid, err);
            have |= strcmp(sid, id) == 0;
        }
        if (wanted && !have && signers->n < EL_MANIFEST_KEYS_MAX)
            signers->keys[signers->n++] = k;
        else
            el_crypto_key_destroy(k);
    }
    closedir(d);
    return rc;
}

static int add_revocations(const fl_args *a, json_t *root, const el_manifest_root *cur)
{
    json_t *keys = json_object_get(root, "revoked_keys");
    json_t *serials = json_object_get(root, "revoked_serials");
    for (size_t i = 0; cur && i < cur->n_revoked_keys; i++)
        json_array_append_new(keys, json_string(cur->revoked_keys[i]));
    for (size_t i = 0; cur && i < cur->n_revoked_serials; i++)
        json_array_append_new(serials, json_string(cur->revoked_serials[i]));
    int n;
    const char *const *v = fl_getv(a, "--revoke-key", &n);
    for (int i = 0; i < n; i++)
        json_array_append_new(keys, json_string(v[i]));
    v = fl_getv(a, "--revoke-serial", &n);
    for (int i = 0; i < n; i++)
        json_array_append_new(serials, json_string(v[i]));
    return 0;
}

static int cmd_root(int argc, char **argv, int rotate)
{
    static const char *const allowed[] = {"--root-threshold", "--release-threshold",
                                          "--expires", NULL};
    static const char *const multi[] = {"--root-key", "--release-key", "--revoke-key",
                                        "--revoke-serial", NULL};
    fl_args a;
    el_error err;
    if (fl_parse(argc, argv, rotate ? "root rotate" : "root init", allowed, multi, &a, &err))
        return fl_fail(&a, &err);
    if (a.help)
        return fputs(root_help, stdout), 0;
    const char *rt = fl_get(&a, "--root-threshold"), *lt = fl_get(&a, "--release-threshold");
    if (!rt || !lt || a.npos)
        return fl_usage(&a, "--root-key, --root-threshold, --release-key and "
                            "--release-threshold are required");
    int64_t expires = 365 * 86400;
    const char *e = fl_get(&a, "--expires");
    if (e && fl_duration(e, &expires))
        return fl_usage(&a, "--expires is like 365d, 12h");
    char root_path[1024], ca_path[1024];
    fl_path(&a, "root.elb", root_path);
    fl_path(&a, "ca.crt", ca_path);
    if (!rotate && el_fs_exists(root_path))
        return fl_usage(&a, "root.elb exists; use root rotate");

    key_list rk = {0}, lk = {0}, signers = {0};
    el_crypto_cert *ca = NULL;
    uint8_t *cur_bytes = NULL, *out = NULL;
    size_t cur_len = 0, out_len = 0;
    el_manifest_root cur = {0}, check = {0};
    el_bundle cur_b, b;
    el_bundle_init(&b);
    json_t *m = NULL;
    char *header = NULL;
    int rc;
    int64_t now = fl_now(), version = 1;
    el_trust_state zero = {0}, st;
    el_crypto_cert_info ca_info;
    if ((rc = load_named(&a, "--root-key", &rk, &err)) ||
        (rc = load_named(&a, "--release-key", &lk, &err)) ||
        (rc = el_crypto_cert_load(ca_path, &ca, &err)) ||
        (rc = el_crypto_cert_get_info(ca, &ca_info, &err)))
        goto out;
    if (rotate) {
        if ((rc = el_fs_read_file(root_path, ROOT_MAX, &cur_bytes, &cur_len, &err)) ||
            (rc = el_bundle_parse(cur_bytes, cur_len, &cur_b, &err)) ||
            (rc = el_trust_root_bootstrap(&cur_b, NULL, 0, &zero, &cur, &st, &err)))
            goto out;
        version = cur.version + 1;
        if ((rc = find_private(&a, cur.root_keys, cur.n_root_keys, &signers, &err)))
            goto out;
    }
    json_t *root = el_manifest_root_json((const el_crypto_key *const *)rk.keys, (size_t)rk.n,
                                         atoi(rt), (const el_crypto_key *const *)lk.keys,
                                         (size_t)lk.n, atoi(lt), ca_info.fingerprint,
                                         version, &err);
    if (!root) {
        rc = err.code;
        goto out;
    }
    add_revocations(&a, root, rotate ? &cur : NULL);
    char created[32], exp[32], empty[65];
    el_manifest_time_format(now, created);
    el_manifest_time_format(now + expires, exp);
    el_sha256_hex("", 0, empty);
    m = json_pack("{s:s, s:i, s:s, s:s, s:o, s:{s:s, s:i, s:s}}", "type", "root",
                  "version", EL_MANIFEST_VERSION, "created", created, "expires", exp,
                  "root", root, "payload", "sha256", empty, "size", 0, "encoding", "none");
    header = el_json_dump_sorted(m);
    if (!header) {
        rc = el_error_set(&err, EL_ENOMEM, "out of memory");
        goto out;
    }
    b.header = (const uint8_t *)header;
    b.header_len = strlen(header);
    el_sha256_hex(b.header, b.header_len, b.id);
    el_manifest_key new_ids[EL_MANIFEST_KEYS_MAX];
    for (int i = 0; i < rk.n; i++)
        el_crypto_key_id(rk.keys[i], new_ids[i].id, &err);
    if ((rc = find_private(&a, new_ids, (size_t)rk.n, &signers, &err)))
        goto out;
    for (int i = 0; i < signers.n; i++)
        if ((rc = el_bundle_add_signature(&b, signers.keys[i], &err)))
            goto out;
    /* Hold the result to the rules a device applies before writing it. */
    if (rotate)
        rc = el_trust_root_update(&cur, &b, now, &zero, &check, &st, &err);
    else
        rc = el_trust_root_bootstrap(&b, ca_info.fingerprint, now, &zero, &check, &st, &err);
    if (rc) {
        el_error_prefix(&err, "the new root would be refused (signing keys held "
                              "here: %d)", signers.n);
        goto out;
    }
    char vrel[64], vpath[1024];
    snprintf(vrel, sizeof vrel, "root-%lld.elb", (long long)version);
    fl_path(&a, vrel, vpath);
    if ((rc = el_bundle_serialize(&b, &out, &out_len, &err)) ||
        (rc = el_fs_write_atomic(vpath, out, out_len, 0644, &err)) ||
        (rc = el_fs_write_atomic(root_path, out, out_len, 0644, &err)))
        goto out;
    if (a.json)
        fl_print_json(json_pack("{s:s, s:I, s:s, s:i}", "root", root_path, "version",
                                (json_int_t)version, "id", b.id, "signatures",
                                (int)b.n_sigs));
    else
        printf("root version %lld written to %s (%zu signatures, id %s)\n",
               (long long)version, root_path, b.n_sigs, b.id);
out:
    free(header);
    if (m)
        json_decref(m);
    el_free(out);
    el_free(cur_bytes);
    el_manifest_root_finish(&cur);
    el_manifest_root_finish(&check);
    el_crypto_cert_destroy(ca);
    key_list_free(&rk);
    key_list_free(&lk);
    key_list_free(&signers);
    return rc ? fl_fail(&a, &err) : 0;
}

static int cmd_root_init(int argc, char **argv)
{
    return cmd_root(argc, argv, 0);
}

static int cmd_root_rotate(int argc, char **argv)
{
    return cmd_root(argc, argv, 1);
}

/* ---- main ---------------------------------------------------------------- */

typedef struct fl_command {
    const char *w1, *w2;
    int (*fn)(int, char **);
    const char *summary;
} fl_command;

static const fl_command commands[] = {
    {"ca", "init", cmd_ca_init, "create the fleet CA"},
    {"keys", "gen", cmd_keys_gen, "generate a root or release key"},
    {"root", "init", cmd_root_init, "write root metadata version 1"},
    {"root", "rotate", cmd_root_rotate, "write root metadata version N+1"},
    {"issue", NULL, cmd_issue, "issue a certificate from a verified CSR"},
    {"csr", NULL, cmd_csr, "make a key and a CSR (hub, admin machines)"},
    {"release", "create", fl_cmd_release_create, "make an unsigned release bundle"},
    {"release", "sign", fl_cmd_release_sign, "add one signature to a release"},
    {"release", "inspect", fl_cmd_release_inspect, "verify a release as a device would"},
    {"release", "push", fl_cmd_release_push, "publish a signed release on the hub"},
    {"status", NULL, fl_cmd_status, "the fleet as the hub sees it"},
    {"promote", NULL, fl_cmd_promote, "make an unsigned release of a device's version"},
};

static void usage(FILE *out)
{
    fputs("usage: edgeloop-fleet [--fleet DIR] COMMAND [ARGS] [--json] [--help]\n"
          "The fleet directory is --fleet DIR, $EDGELOOP_FLEET or ./fleet.\n"
          "Exit codes: 0 ok, 1 usage/internal, 2 bad input, 3 refused by trust.\n\n"
          "commands:\n", out);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "%s%s%s", commands[i].w1, commands[i].w2 ? " " : "",
                 commands[i].w2 ? commands[i].w2 : "");
        fprintf(out, "  %-16s %s\n", name, commands[i].summary);
    }
}

int main(int argc, char **argv)
{
    /* Global options before the command are passed on to it. */
    char *rest[256];
    int nrest = 0, first = -1;
    for (int i = 1; i < argc && nrest < 255; i++) {
        if (first < 0 && strcmp(argv[i], "--fleet") == 0 && i + 1 < argc) {
            rest[nrest++] = argv[i];
            rest[nrest++] = argv[++i];
        } else if (first < 0 && argv[i][0] != '-') {
            first = i;
            break;
        } else if (first < 0 && (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)) {
            usage(stdout);
            return 0;
        } else {
            rest[nrest++] = argv[i];
        }
    }
    if (first < 0) {
        usage(stderr);
        return 1;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        const fl_command *c = &commands[i];
        if (strcmp(argv[first], c->w1) != 0)
            continue;
        int skip = 1;
        if (c->w2) {
            if (first + 1 >= argc || strcmp(argv[first + 1], c->w2) != 0)
                continue;
            skip = 2;
        }
        for (int k = first + skip; k < argc && nrest < 255; k++)
            rest[nrest++] = argv[k];
        rest[nrest] = NULL;
        return c->fn(nrest, rest);
    }
    /* "edgeloop-fleet root --help": the group's commands. */
    int want_help = 0;
    for (int k = first + 1; k < argc; k++)
        want_help |= !strcmp(argv[k], "--help") || !strcmp(argv[k], "-h");
    for (size_t i = 0; want_help && i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[first], commands[i].w1) == 0) {
            usage(stdout);
            return 0;
        }
    fprintf(stderr, "edgeloop-fleet: unknown command \"%s%s%s\"\n", argv[first],
            first + 1 < argc ? " " : "", first + 1 < argc ? argv[first + 1] : "");
    usage(stderr);
    return 1;
}
