/* Import of fleet bundles: verify against the pinned root and the trust
 * state, then install through the registry.
 *
 * Invariants:
 *  1. Nothing of a bundle is used before sync/trust.c accepted it: the
 *     decision (signatures, threshold, counter, expiry, target, base) is the
 *     pure function's; this file only supplies the device's inputs (pinned
 *     root, trust state, identity, base hash, clock) and persists the result.
 *  2. Root or release is decided from the framing first: a bundle with a
 *     signature by a root key of the pinned root is judged as a root update;
 *     when that fails and its header does not declare a root, it is judged
 *     as a release instead (so a release signed by root keys is refused as
 *     unknown_key, as the fleet tool reports it). Any other is a release.
 *  3. The new trust state commits in the same transaction as the install
 *     (candidate row + blob rows, or policy rows, or the new root), after
 *     the blobs are durable (el_store_candidate_create writes them first).
 *     Any failure aborts the transaction: registry and trust state are as
 *     before, and blob files without rows are gc's leftovers.
 *  4. The base hash a release names is SHA-256 of the base's
 *     model.safetensors (the fleet tool's convention), which is the hash the
 *     registry records for a base (store.h): one definition everywhere.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/safetensors.h"
#include "daemon/device.h"
#include "daemon/device_internal.h"
#include "sync/bundle.h"
#include "sync/delta.h"
#include "sync/manifest.h"
#include "sync/trust.h"

#define IMPORT_MAX ((size_t)1 << 30)
#define POLICY_KEYS_MAX 64

int el_device_base_hash(el_store *s, int64_t base_id, char hash[65], el_error *err)
{
    return el_store_base_hash(s, base_id, hash, err);
}

/* The current base's id and hash (invariant 4). */
static int device_base(el_store *s, int64_t *base_id, char hash[65], el_error *err)
{
    int rc = el_store_base_current(s, base_id, NULL, err);
    return rc ? rc : el_device_base_hash(s, *base_id, hash, err);
}

int el_device_load_tensors(const char *path, el_delta_set *set, el_error *err)
{
    el_safetensors *st = NULL;
    int rc = el_safetensors_open(path, &st, err);
    if (rc)
        return rc;
    size_t n = el_safetensors_count(st);
    for (size_t i = 0; i < n && !rc; i++) {
        const el_st_tensor *t = el_safetensors_at(st, i);
        if (t->ndim < 1 || t->ndim > EL_DELTA_NDIM_MAX) {
            rc = el_error_set(err, EL_EINPUT, "%s: tensor %s has rank %d", path, t->name,
                              t->ndim);
            break;
        }
        uint64_t shape[EL_DELTA_NDIM_MAX];
        for (int k = 0; k < t->ndim; k++)
            shape[k] = (uint64_t)t->shape[k];
        float *f = el_malloc((t->numel ? t->numel : 1) * sizeof *f);
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

void el_device_remove_adapter_dir(const char *dir)
{
    static const char *const names[] = {"adapter_config.json", "adapter_model.safetensors"};
    char p[4200];
    for (size_t i = 0; i < 2; i++)
        if (!el_fs_join(p, sizeof p, dir, names[i]))
            unlink(p);
    rmdir(dir);
}

int el_device_version_tensors(el_store *s, int64_t id, const char *dir, el_delta_set *set,
                              el_error *err)
{
    char path[4300];
    if (el_fs_join(path, sizeof path, dir, "adapter_model.safetensors"))
        return el_error_set(err, EL_EINPUT, "%s: path too long", dir);
    int rc = el_store_export(s, id, dir, err);
    if (!rc)
        rc = el_device_load_tensors(path, set, err);
    el_device_remove_adapter_dir(dir);
    return rc;
}

/* Finds the registry version on BASE_ID whose adapter digest is DIGEST and
 * loads it into PARENT. Returns 0 and *ID, or EL_ENOTFOUND. */
static int find_parent(el_store *s, int64_t base_id, const char *digest, const char *work,
                       int64_t *id, el_delta_set *parent, el_error *err)
{
    el_store_version *v;
    size_t n;
    int rc = el_store_version_list(s, &v, &n, err);
    if (rc)
        return rc;
    char dir[4200], d[65];
    snprintf(dir, sizeof dir, "%s/parent", work);
    rc = EL_ENOTFOUND;
    for (size_t i = n; i-- > 0 && rc == EL_ENOTFOUND;) {
        if (v[i].base_id != base_id || !strcmp(v[i].state, "retired"))
            continue;
        el_delta_set set = {0};
        int r2 = el_device_version_tensors(s, v[i].id, dir, &set, err);
        if (!r2)
            r2 = el_delta_digest(&set, d, err);
        if (r2) {
            el_delta_set_finish(&set);
            rc = r2;
            break;
        }
        if (!strcmp(d, digest)) {
            *parent = set;
            *id = v[i].id;
            rc = 0;
        } else {
            el_delta_set_finish(&set);
        }
    }
    el_store_version_list_free(v, n);
    if (rc == EL_ENOTFOUND)
        el_error_set(err, EL_ENOTFOUND, "the release's parent adapter %.16s... is not on "
                     "this device", digest);
    return rc;
}

/* Writes SET as a PEFT directory DIR with the manifest's adapter_config. */
static int write_adapter(const el_delta_set *set, const json_t *config, const char *dir,
                         el_error *err)
{
    if (!json_is_object(config))
        return el_error_set(err, EL_EINPUT, "adapter release has no \"adapter_config\" "
                            "object");
    int rc = el_fs_mkdirs(dir, 0700, err);
    if (rc)
        return rc;
    el_st_entry *e = el_calloc(set->n ? set->n : 1, sizeof *e);
    if (!e)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    for (size_t i = 0; i < set->n; i++) {
        e[i].name = set->tensors[i].name;
        e[i].ndim = (int)set->tensors[i].ndim;
        for (uint32_t k = 0; k < set->tensors[i].ndim; k++)
            e[i].shape[k] = (int64_t)set->tensors[i].shape[k];
        e[i].data = set->tensors[i].data;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    rc = el_safetensors_write(path, e, set->n, NULL, 0, err);
    el_free(e);
    if (rc)
        return rc;
    char *text = json_dumps(config, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    rc = el_fs_write_atomic(path, text, strlen(text), 0644, err);
    free(text);
    return rc;
}

static char *json_text(const json_t *v)
{
    return json_is_object(v) ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
}

/* Signers of B as "id,id,..." into OUT. */
static void signers(const el_bundle *b, char *out, size_t n)
{
    size_t at = 0;
    out[0] = 0;
    for (size_t i = 0; i < b->n_sigs && at + 66 < n; i++)
        at += (size_t)snprintf(out + at, n - at, "%s%s", i ? "," : "", b->sigs[i].key_id);
}

static void to_store(const el_trust_state *t, const el_store_trust *old, el_store_trust *out)
{
    *out = *old;
    out->last_time = t->last_time;
    for (int k = 0; k < EL_STORE_TRUST_KINDS && k < EL_KIND_COUNT; k++)
        out->counters[k] = t->counters[k];
}

static int install_adapter(el_store *s, const el_bundle *b, const el_manifest *m,
                           int64_t base_id, const el_store_trust *next,
                           el_device_import_result *r, el_error *err)
{
    el_delta_set delta = {0}, parent = {0}, rebuilt = {0};
    el_delta_limits lim;
    el_delta_limits_default(&lim);
    char work[4096], dir[4200], d[65], signer[16 * 66 + 1];
    char *recipe = NULL, *metrics = NULL;
    int64_t parent_id = 0;
    int encoding, rc;
    snprintf(work, sizeof work, "%s/import-work.%ld", el_store_dir(s), (long)getpid());
    snprintf(dir, sizeof dir, "%s/adapter", work);
    if ((rc = el_fs_mkdirs(work, 0700, err)))
        return rc;
    if ((rc = el_delta_decode(b->payload, b->payload_len, &lim, &delta, &encoding, err)))
        goto done;
    if (m->parent[0] &&
        (rc = find_parent(s, base_id, m->parent, work, &parent_id, &parent, err)))
        goto done;
    if ((rc = el_delta_apply(m->parent[0] ? &parent : NULL, &delta, &rebuilt, err)) ||
        (rc = el_delta_digest(&rebuilt, d, err)))
        goto done;
    if (strcmp(d, m->result)) {
        rc = el_error_set(err, EL_EINPUT, "rebuilt adapter %.16s... does not match the "
                          "release's result %.16s...", d, m->result);
        goto done;
    }
    if ((rc = write_adapter(&rebuilt, json_object_get(m->json, "adapter_config"), dir, err)))
        goto done;
    recipe = json_text(json_object_get(m->json, "recipe"));
    metrics = json_text(json_object_get(m->json, "metrics"));
    signers(b, signer, sizeof signer);
    el_store_candidate c = {.parent_id = parent_id, .base_id = base_id, .origin = "fleet",
                            .recipe_json = recipe, .backend = "", .metrics_json = metrics,
                            .signer = signer};
    /* invariant 3 */
    if ((rc = el_store_transaction_begin(s, err)))
        goto done;
    if ((rc = el_store_candidate_create(s, &c, dir, &r->version_id, err)) ||
        (rc = el_store_trust_set(s, next, "release_accepted", err)) ||
        (rc = el_store_transaction_commit(s, err))) {
        el_store_transaction_abort(s);
        r->version_id = 0;
        goto done;
    }
    el_error aerr;
    el_error_clear(&aerr);
    int arc = el_store_activate(s, r->version_id, &aerr);
    if (!arc)
        r->activated = 1;
    else if (arc == EL_EPOLICY)
        snprintf(r->activate_error, sizeof r->activate_error, "%s", aerr.msg);
    else {
        *err = aerr;
        rc = arc;
    }
done:
    free(recipe);
    free(metrics);
    el_delta_set_finish(&delta);
    el_delta_set_finish(&parent);
    el_delta_set_finish(&rebuilt);
    el_device_remove_adapter_dir(dir);
    rmdir(work);
    return rc;
}

/* A base-model release: the payload is model.safetensors, the manifest
 * carries config.json. Both are written under STATE/bases/HASH/ (durable
 * before the registry changes), registered as the current base, and the
 * active adapter, trained for the old base, is deactivated (the base model
 * alone runs until a version for the new base is activated); all in one
 * transaction with the trust state. A pinned version refuses the upgrade
 * (EL_EPOLICY) and nothing changes. */
static int install_base(el_store *s, const el_bundle *b, const el_manifest *m,
                        const el_store_trust *next, el_device_import_result *r,
                        el_error *err)
{
    const json_t *config = json_object_get(m->json, "config");
    if (!json_is_object(config))
        return el_error_set(err, EL_EINPUT, "base-model release has no \"config\" object");
    if (strcmp(m->base, m->payload_sha256))
        return el_error_set(err, EL_EINPUT, "base-model release: \"base\" %.16s... is not "
                            "the payload's hash %.16s...", m->base, m->payload_sha256);
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/bases/%s", el_store_dir(s), m->base);
    char *text = json_dumps(config, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    int rc = el_fs_mkdirs(dir, 0755, err);
    if (!rc) {
        snprintf(path, sizeof path, "%s/config.json", dir);
        rc = el_fs_write_atomic(path, text, strlen(text), 0644, err);
    }
    free(text);
    if (!rc) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        rc = el_fs_write_atomic(path, b->payload, b->payload_len, 0644, err);
    }
    if (rc || (rc = el_store_transaction_begin(s, err)))
        return rc;
    int64_t active = 0;
    el_store_version v;
    memset(&v, 0, sizeof v);
    if ((rc = el_store_base_register(s, dir, &r->base_id, err)) ||
        (rc = el_store_active(s, &active, err)))
        goto fail;
    if (active) {
        if ((rc = el_store_version_get(s, active, &v, err)))
            goto fail;
        int64_t old_base = v.base_id;
        el_store_version_finish(&v);
        if (old_base != r->base_id &&
            (rc = el_store_rollback(s, -1, "base model replaced by a fleet release", err)))
            goto fail;
    }
    if ((rc = el_store_trust_set(s, next, "release_accepted", err)) ||
        (rc = el_store_transaction_commit(s, err)))
        goto fail;
    return 0;
fail:
    el_store_transaction_abort(s);
    r->base_id = 0;
    return rc;
}

/* Trims spaces and tabs at both ends of [*B, *E). */
static void trim(const char **b, const char **e)
{
    while (*b < *e && (**b == ' ' || **b == '\t' || **b == '\r'))
        (*b)++;
    while (*e > *b && ((*e)[-1] == ' ' || (*e)[-1] == '\t' || (*e)[-1] == '\r'))
        (*e)--;
}

/* The policy payload is an edgeloop.conf fragment (INI: [section], key =
 * value, # comments), the same syntax the operator writes. Each entry is
 * validated by el_store_policy_replace before anything is written. */
static int install_policy(el_store *s, const el_bundle *b, const el_store_trust *next,
                          el_device_import_result *r, el_error *err)
{
    enum { FIELD = 64 };
    char sec_buf[POLICY_KEYS_MAX][FIELD], key_buf[POLICY_KEYS_MAX][FIELD];
    char val_buf[POLICY_KEYS_MAX][EL_CONFIG_STR_MAX];
    const char *sections[POLICY_KEYS_MAX], *keys[POLICY_KEYS_MAX], *values[POLICY_KEYS_MAX];
    char section[FIELD] = "";
    size_t n = 0, line = 0;
    const char *p = (const char *)b->payload, *end = p + b->payload_len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end, *lb = p;
        p = eol ? eol + 1 : end;
        line++;
        trim(&lb, &le);
        if (lb == le || *lb == '#' || *lb == ';')
            continue;
        if (memchr(lb, 0, (size_t)(le - lb)))
            return el_error_set(err, EL_EINPUT, "policy release line %zu: NUL byte", line);
        if (*lb == '[') {
            if (le[-1] != ']' || le - lb - 2 < 1 || le - lb - 2 >= FIELD)
                return el_error_set(err, EL_EINPUT, "policy release line %zu: bad section",
                                    line);
            snprintf(section, sizeof section, "%.*s", (int)(le - lb - 2), lb + 1);
            continue;
        }
        const char *eq = memchr(lb, '=', (size_t)(le - lb));
        if (!eq || !section[0])
            return el_error_set(err, EL_EINPUT, "policy release line %zu: expected key = "
                                "value inside a [section]", line);
        const char *kb = lb, *ke = eq, *vb = eq + 1, *ve = le;
        trim(&kb, &ke);
        trim(&vb, &ve);
        if (ke == kb || ke - kb >= FIELD || ve - vb >= EL_CONFIG_STR_MAX)
            return el_error_set(err, EL_EINPUT, "policy release line %zu: key or value too "
                                "long or empty", line);
        if (n == POLICY_KEYS_MAX)
            return el_error_set(err, EL_EINPUT, "policy release: over %d keys",
                                POLICY_KEYS_MAX);
        snprintf(sec_buf[n], FIELD, "%s", section);
        snprintf(key_buf[n], FIELD, "%.*s", (int)(ke - kb), kb);
        snprintf(val_buf[n], EL_CONFIG_STR_MAX, "%.*s", (int)(ve - vb), vb);
        sections[n] = sec_buf[n];
        keys[n] = key_buf[n];
        values[n] = val_buf[n];
        n++;
    }
    int rc = el_store_transaction_begin(s, err);
    if (rc)
        return rc;
    if ((rc = el_store_policy_replace(s, sections, keys, values, n, b->id, err)) ||
        (rc = el_store_trust_set(s, next, "release_accepted", err)) ||
        (rc = el_store_transaction_commit(s, err)))
        el_store_transaction_abort(s);
    else
        r->policy_keys = (int64_t)n;
    return rc;
}

/* 1 when a signer of B is a root key of ROOT (invariant 2): a rotation is
 * signed by a threshold of the old root's keys and of the new one's. */
static int signed_by_root_keys(const el_bundle *b, const el_manifest_root *root)
{
    for (size_t i = 0; i < b->n_sigs; i++)
        for (size_t k = 0; k < root->n_root_keys; k++)
            if (!strcmp(root->root_keys[k].id, b->sigs[i].key_id))
                return 1;
    return 0;
}

/* 1 when B's header declares a root. Only called after the root keys'
 * verdict failed, to choose which verdict to report: nothing of the header
 * is used otherwise. */
static int is_root(const el_bundle *b)
{
    json_error_t je;
    json_t *h = json_loadb((const char *)b->header, b->header_len, 0, &je);
    const char *type = json_string_value(json_object_get(h, "type"));
    int root = type && !strcmp(type, "root");
    json_decref(h);
    return root;
}

int el_device_import(el_store *s, const char *path, int64_t clock,
                     el_device_import_result *r, el_error *err)
{
    memset(r, 0, sizeof *r);
    if (!clock)
        clock = el_store_now(s);
    uint8_t *bytes = NULL;
    size_t len = 0;
    el_bundle b, rb;
    el_bundle_init(&b);
    el_bundle_init(&rb);
    el_manifest rm = {0}, m = {0};
    el_manifest_root root = {0}, next_root = {0};
    el_store_trust stored = {0}, next;
    el_device_identity id;
    char base_hash[65];
    int64_t base_id;
    int rc;
    if ((rc = el_device_identity_get(s, &id, err)) ||
        (rc = el_store_trust_get(s, &stored, err)) ||
        (rc = el_bundle_parse(stored.root, stored.root_len, &rb, err)) ||
        (rc = el_manifest_parse(rb.header, rb.header_len, 0, &rm, err)) ||
        (rc = el_manifest_root_parse(&rm, &root, err)))
        goto done;
    if ((rc = el_fs_read_file(path, IMPORT_MAX, &bytes, &len, err)) ||
        (rc = el_bundle_parse(bytes, len, &b, err)))
        goto done;
    snprintf(r->bundle_id, sizeof r->bundle_id, "%s", b.id);
    el_trust_state in = {.last_time = stored.last_time}, out;
    for (int k = 0; k < EL_KIND_COUNT && k < EL_STORE_TRUST_KINDS; k++)
        in.counters[k] = stored.counters[k];

    if (signed_by_root_keys(&b, &root)) {
        el_error rerr;
        el_error_clear(&rerr);
        rc = el_trust_root_update(&root, &b, clock, &in, &next_root, &out, &rerr);
        if (rc == 0) {
            to_store(&out, &stored, &next);
            next.root = bytes;
            next.root_len = len;
            next.root_version = next_root.version;
            if ((rc = el_store_trust_set(s, &next, "root_rotated", err)))
                goto done;
            snprintf(r->type, sizeof r->type, "root");
            r->root_version = next_root.version;
            goto done;
        }
        if (is_root(&b)) {
            *err = rerr;
            goto done;
        }
        /* not a root after all: judge it as a release (invariant 2) */
    }
    if ((rc = device_base(s, &base_id, base_hash, err)))
        goto done;
    el_trust_device dev = {.device_id = id.device_id, .group = id.group, .base = base_hash};
    if ((rc = el_trust_release(&root, &b, &dev, clock, IMPORT_MAX, &in, &m, &out, err)))
        goto done;
    snprintf(r->type, sizeof r->type, "release");
    snprintf(r->kind, sizeof r->kind, "%s", el_manifest_kind_name(m.kind));
    r->counter = m.counter;
    to_store(&out, &stored, &next);
    if (m.kind == EL_KIND_ADAPTER)
        rc = install_adapter(s, &b, &m, base_id, &next, r, err);
    else if (m.kind == EL_KIND_POLICY)
        rc = install_policy(s, &b, &next, r, err);
    else
        rc = install_base(s, &b, &m, &next, r, err);
done:
    el_manifest_finish(&m);
    el_manifest_finish(&rm);
    el_manifest_root_finish(&root);
    el_manifest_root_finish(&next_root);
    el_bundle_finish(&b);
    el_bundle_finish(&rb);
    el_store_trust_finish(&stored);
    el_free(bytes);
    return rc;
}
