/* Enrollment: the device key, its CSR, the issued certificate, the pinned
 * root, and the [hub] keys of edgeloop.conf.
 *
 * Invariants:
 *  1. The private key is made here, written 0600 into the state directory
 *     and never copied out; only the CSR (public key + CN, self-signed)
 *     leaves the device.
 *  2. Nothing is installed until every check passed: the certificate's key
 *     is this device's key, its role is "device", it chains to the CA at
 *     the trusted time, and the root verifies with its own root keys and
 *     names that CA's fingerprint.
 *  3. Files first (atomic writes: certificate, CA), then the trust state
 *     (one transaction, with its audit row), then edgeloop.conf. A crash
 *     before the trust state commits leaves an unenrolled device with spare
 *     files; after it, a re-run of the same enroll completes the conf.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "daemon/device.h"
#include "sync/bundle.h"
#include "sync/crypto.h"
#include "sync/manifest.h"
#include "sync/trust.h"

#define CERT_FILE_MAX (64 * 1024)
#define CONF_MAX (1 << 20)

static int state_path(el_store *s, const char *name, char *out, size_t n, el_error *err)
{
    if (el_fs_join(out, n, el_store_dir(s), name))
        return el_error_set(err, EL_EUSAGE, "%s: state path too long", el_store_dir(s));
    return 0;
}

static int name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n < 1 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("._-", name[i]))
            return 0;
    return 1;
}

int el_device_enroll_csr(el_store *s, const char *name, const char *csr_path,
                         char key_id[65], el_error *err)
{
    if (!name_valid(name))
        return el_error_set(err, EL_EUSAGE, "device name '%s': use 1-64 of A-Z a-z 0-9 . _ -",
                            name);
    char path[4096];
    el_crypto_key *key = NULL;
    uint8_t *der = NULL;
    char *pem = NULL;
    size_t der_len = 0;
    int rc = state_path(s, EL_DEVICE_KEY_FILE, path, sizeof path, err);
    if (rc)
        return rc;
    if (el_fs_exists(path))
        rc = el_crypto_key_load(path, 1, &key, err);
    else if (!(rc = el_crypto_key_generate(&key, err)))
        rc = el_crypto_key_save_private(key, path, err);
    if (rc || (rc = el_crypto_csr_create(key, name, &der, &der_len, err)) ||
        (rc = el_crypto_pem("CERTIFICATE REQUEST", der, der_len, &pem, err)) ||
        (rc = el_fs_write_atomic(csr_path, pem, strlen(pem), 0644, err)))
        goto done;
    if (key_id)
        rc = el_crypto_key_id(key, key_id, err);
done:
    el_free(pem);
    el_free(der);
    el_crypto_key_destroy(key);
    return rc;
}

/* ---- edgeloop.conf editing -------------------------------------------------- */

/* Sets KEYS[i] = VALUES[i] in section SECTION of the INI text IN, keeping
 * every other line: an existing `key = ...` (or the commented default
 * `# key = ...` that init writes) in that section is replaced, a missing key
 * is added after the section header, a missing section is appended. The
 * result is a new string (caller el_free's) or NULL when out of memory. */
static char *ini_set(const char *in, const char *section, const char *const *keys,
                     const char *const *values, size_t n)
{
    size_t cap = strlen(in) + 64;
    for (size_t i = 0; i < n; i++)
        cap += strlen(keys[i]) + strlen(values[i]) + 8;
    cap += strlen(section) + 8;
    char *out = el_malloc(cap);
    int *done = el_calloc(n ? n : 1, sizeof *done);
    if (!out || !done) {
        el_free(out);
        el_free(done);
        return NULL;
    }
    size_t at = 0;
    int in_section = 0, seen = 0;
    const char *p = in;
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        const char *q = p;
        while (q < p + len && (*q == ' ' || *q == '\t'))
            q++;
        int replaced = 0;
        if (*q == '[') {
            in_section = (size_t)(p + len - q) >= strlen(section) + 2 &&
                         !strncmp(q + 1, section, strlen(section)) &&
                         q[1 + strlen(section)] == ']';
            memcpy(out + at, p, len);
            at += len;
            out[at++] = '\n';
            if (in_section) {
                seen = 1;
                /* keys not in the file yet go right after the header; the
                 * loop below only replaces lines of keys already marked */
                for (size_t i = 0; i < n; i++) {
                    if (done[i])
                        continue;
                    const char *r = eol ? eol + 1 : p + len;
                    int present = 0;
                    while (*r && *r != '[') {
                        const char *k = r;
                        while (*k == ' ' || *k == '\t' || *k == '#')
                            k++;
                        size_t kl = strlen(keys[i]);
                        if (!strncmp(k, keys[i], kl) && (k[kl] == ' ' || k[kl] == '=')) {
                            present = 1;
                            break;
                        }
                        const char *e = strchr(r, '\n');
                        if (!e)
                            break;
                        r = e + 1;
                    }
                    if (!present) {
                        at += (size_t)snprintf(out + at, cap - at, "%s = %s\n", keys[i], values[i]);
                        done[i] = 1;
                    }
                }
            }
            p += len + (eol ? 1 : 0);
            continue;
        }
        if (in_section) {
            const char *k = q;
            while (*k == '#' || *k == ' ')
                k++;
            for (size_t i = 0; i < n && !replaced; i++) {
                size_t kl = strlen(keys[i]);
                if (!done[i] && !strncmp(k, keys[i], kl) && (k[kl] == ' ' || k[kl] == '=')) {
                    at += (size_t)snprintf(out + at, cap - at, "%s = %s\n", keys[i], values[i]);
                    done[i] = replaced = 1;
                }
            }
        }
        if (!replaced) {
            memcpy(out + at, p, len);
            at += len;
            out[at++] = '\n';
        }
        p += len + (eol ? 1 : 0);
    }
    if (!seen) {
        at += (size_t)snprintf(out + at, cap - at, "\n[%s]\n", section);
        for (size_t i = 0; i < n; i++)
            at += (size_t)snprintf(out + at, cap - at, "%s = %s\n", keys[i], values[i]);
    }
    out[at] = 0;
    el_free(done);
    return out;
}

/* Writes the [hub] keys into S's edgeloop.conf atomically after checking the
 * result still loads. */
static int conf_write_hub(el_store *s, const char *url, const char *ca, const char *cert,
                          const char *key, el_error *err)
{
    char path[4096];
    int rc = state_path(s, "edgeloop.conf", path, sizeof path, err);
    if (rc)
        return rc;
    for (const char *v = url; v && *v; v++)
        if (*v == '\n' || *v == '#' || (unsigned char)*v < 0x20)
            return el_error_set(err, EL_EUSAGE, "--hub URL has a control or '#' character");
    if (url && strlen(url) >= EL_CONFIG_STR_MAX)
        return el_error_set(err, EL_EUSAGE, "--hub URL is too long");
    uint8_t *text = NULL;
    size_t len = 0;
    rc = el_fs_read_file(path, CONF_MAX, &text, &len, err);
    if (rc == EL_ENOTFOUND) {
        el_error_clear(err);
        text = (uint8_t *)el_strdup("");
        rc = text ? 0 : el_error_set(err, EL_ENOMEM, "out of memory");
    }
    if (rc)
        return rc;
    const char *keys[4] = {"ca", "cert", "key", "url"};
    const char *values[4] = {ca, cert, key, url ? url : ""};
    size_t n = url ? 4 : 3;
    char *out = ini_set((const char *)text, "hub", keys, values, n);
    el_free(text);
    if (!out)
        return el_error_set(err, EL_ENOMEM, "out of memory editing %s", path);
    char check[4200];
    snprintf(check, sizeof check, "%s.check", path);
    el_store_config cfg;
    el_config_defaults(&cfg);
    if (!(rc = el_fs_write_atomic(check, out, strlen(out), 0600, err))) {
        rc = el_config_load_file(&cfg, check, err);
        unlink(check);
    }
    if (!rc)
        rc = el_fs_write_atomic(path, out, strlen(out), 0644, err);
    el_free(out);
    return rc;
}

/* ---- install ----------------------------------------------------------------- */

int el_device_enroll_install(el_store *s, const char *cert_path, const char *ca_path,
                             const char *root_path, const char *hub_url,
                             el_device_identity *id, el_error *err)
{
    memset(id, 0, sizeof *id);
    char key_path[4096], dev_crt[4096], dev_ca[4096];
    el_crypto_key *key = NULL;
    el_crypto_cert *cert = NULL, *ca = NULL;
    uint8_t *root_bytes = NULL, *cert_bytes = NULL, *ca_bytes = NULL;
    size_t root_len = 0, cert_len = 0, ca_len = 0;
    el_bundle b;
    el_bundle_init(&b);
    el_manifest_root root = {0};
    el_store_trust stored = {0};
    char kid[65];
    el_crypto_cert_info ci, cai;
    int rc;
    if ((rc = state_path(s, EL_DEVICE_KEY_FILE, key_path, sizeof key_path, err)) ||
        (rc = state_path(s, EL_DEVICE_CERT_FILE, dev_crt, sizeof dev_crt, err)) ||
        (rc = state_path(s, EL_DEVICE_CA_FILE, dev_ca, sizeof dev_ca, err)))
        goto done;
    if (!el_fs_exists(key_path)) {
        rc = el_error_set(err, EL_EPOLICY, "%s: no device key; run `edgeloop enroll "
                          "--csr-out FILE` first", el_store_dir(s));
        goto done;
    }
    if ((rc = el_crypto_key_load(key_path, 1, &key, err)) ||
        (rc = el_crypto_key_id(key, kid, err)) ||
        (rc = el_fs_read_file(cert_path, CERT_FILE_MAX, &cert_bytes, &cert_len, err)) ||
        (rc = el_crypto_cert_parse(cert_bytes, cert_len, &cert, err)) ||
        (rc = el_fs_read_file(ca_path, CERT_FILE_MAX, &ca_bytes, &ca_len, err)) ||
        (rc = el_crypto_cert_parse(ca_bytes, ca_len, &ca, err)) ||
        (rc = el_crypto_cert_get_info(cert, &ci, err)) ||
        (rc = el_crypto_cert_get_info(ca, &cai, err)) ||
        (rc = el_store_trust_get(s, &stored, err)))
        goto done;
    if (strcmp(ci.key_id, kid)) {
        rc = el_error_set(err, EL_EINPUT, "%s: certificate is for key %.16s..., not this "
                          "device's key %.16s...", cert_path, ci.key_id, kid);
        goto done;
    }
    if (strcmp(ci.role, "device")) {
        rc = el_error_set_tag(err, EL_ETRUST, "untrusted_signer", "%s: role is '%s', not "
                              "'device'", cert_path, ci.role);
        goto done;
    }
    el_trust_state in = {.last_time = stored.last_time}, out;
    for (int k = 0; k < EL_KIND_COUNT && k < EL_STORE_TRUST_KINDS; k++)
        in.counters[k] = stored.counters[k];
    int64_t clock = el_store_now(s);
    if ((rc = el_crypto_cert_verify(cert, ca, el_trust_time(&in, clock), err)) ||
        (rc = el_fs_read_file(root_path, EL_STORE_ROOT_MAX, &root_bytes, &root_len, err)) ||
        (rc = el_bundle_parse(root_bytes, root_len, &b, err)) ||
        (rc = el_trust_root_bootstrap(&b, cai.fingerprint, clock, &in, &root, &out, err)))
        goto done;
    if (stored.root && (stored.root_len != root_len ||
                        memcmp(stored.root, root_bytes, root_len))) {
        rc = el_error_set(err, EL_EPOLICY, "%s: root version %lld is already pinned; a newer "
                          "root is installed with `edgeloop import ROOT.elb`",
                          el_store_dir(s), (long long)stored.root_version);
        goto done;
    }
    if (el_manifest_root_serial_revoked(&root, ci.serial)) {
        rc = el_error_set_tag(err, EL_ETRUST, "revoked", "%s: serial %s is revoked by the "
                              "root", cert_path, ci.serial);
        goto done;
    }
    /* invariant 3: files, then the trust state, then the configuration */
    if ((rc = el_fs_write_atomic(dev_crt, cert_bytes, cert_len, 0644, err)) ||
        (rc = el_fs_write_atomic(dev_ca, ca_bytes, ca_len, 0644, err)))
        goto done;
    el_store_trust t = {.root = root_bytes, .root_len = root_len,
                        .root_version = root.version, .last_time = out.last_time};
    for (int k = 0; k < EL_STORE_TRUST_KINDS; k++)
        t.counters[k] = stored.counters[k];
    if ((rc = el_store_trust_set(s, &t, "enrolled", err)) ||
        (rc = conf_write_hub(s, hub_url, dev_ca, dev_crt, key_path, err)))
        goto done;
    snprintf(id->device_id, sizeof id->device_id, "%s", ci.cn);
    snprintf(id->group, sizeof id->group, "%s", ci.group);
    snprintf(id->key_id, sizeof id->key_id, "%s", kid);
    snprintf(id->serial, sizeof id->serial, "%s", ci.serial);
    id->root_version = root.version;
done:
    el_manifest_root_finish(&root);
    el_bundle_finish(&b);
    el_store_trust_finish(&stored);
    el_free(root_bytes);
    el_free(cert_bytes);
    el_free(ca_bytes);
    el_crypto_cert_destroy(cert);
    el_crypto_cert_destroy(ca);
    el_crypto_key_destroy(key);
    return rc;
}

int el_device_identity_get(el_store *s, el_device_identity *id, el_error *err)
{
    memset(id, 0, sizeof *id);
    char path[4096];
    el_crypto_cert *cert = NULL;
    el_store_trust t = {0};
    el_crypto_cert_info ci;
    int rc = state_path(s, EL_DEVICE_CERT_FILE, path, sizeof path, err);
    if (rc || (rc = el_store_trust_get(s, &t, err)))
        return rc;
    if (!t.root || !el_fs_exists(path)) {
        el_store_trust_finish(&t);
        return el_error_set_tag(err, EL_EPOLICY, "not_enrolled", "%s: this device is not "
                                "enrolled (run `edgeloop enroll`)", el_store_dir(s));
    }
    if (!(rc = el_crypto_cert_load(path, &cert, err)) &&
        !(rc = el_crypto_cert_get_info(cert, &ci, err))) {
        snprintf(id->device_id, sizeof id->device_id, "%s", ci.cn);
        snprintf(id->group, sizeof id->group, "%s", ci.group);
        snprintf(id->key_id, sizeof id->key_id, "%s", ci.key_id);
        snprintf(id->serial, sizeof id->serial, "%s", ci.serial);
        id->root_version = t.root_version;
    }
    el_crypto_cert_destroy(cert);
    el_store_trust_finish(&t);
    return rc;
}
