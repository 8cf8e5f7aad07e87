/* edgeloop.conf parsing and the table of every key.
 *
 * The table below is the single list of keys: defaults, ranges, the comment
 * `init` writes, and the offset of the value in el_store_config all live in
 * one row, so a key cannot be documented without existing or exist without
 * being documented.
 */
#include "store/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fs.h"

enum key_type { KEY_INT, KEY_FRACTION, KEY_REAL, KEY_STR };

typedef struct key_def {
    const char *section;
    const char *name;
    enum key_type type;
    size_t offset;
    const char *def;
    double min, max;      /* inclusive range for numbers */
    const char *comment;
} key_def;

#define OFF(f) offsetof(el_store_config, f)

static const key_def keys[] = {
    {"train", "backend", KEY_STR, OFF(train.backend), "auto", 0, 0,
     "compute backend: auto, cpu or vulkan"},
    {"train", "steps", KEY_INT, OFF(train.steps), "60", 1, 1e7,
     "optimizer steps per training run"},
    {"train", "rank", KEY_INT, OFF(train.rank), "2", 1, 1024, "LoRA rank r"},
    {"train", "alpha", KEY_REAL, OFF(train.alpha), "4", 1e-6, 1e6,
     "LoRA alpha (scale alpha/r)"},
    {"train", "lr", KEY_REAL, OFF(train.lr), "0.002", 1e-9, 1, "learning rate"},
    {"train", "batch", KEY_INT, OFF(train.batch), "32", 1, 4096,
     "sequences per batch"},
    {"train", "seq_len", KEY_INT, OFF(train.seq_len), "256", 2, 65536,
     "sequence length in tokens"},
    {"train", "targets", KEY_STR, OFF(train.targets),
     "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", 0, 0,
     "LoRA target modules"},
    {"train", "seed", KEY_INT, OFF(train.seed), "0", 0, 9.2e18,
     "random seed"},
    {"train", "min_new_samples", KEY_INT, OFF(schedule.min_new_samples), "100",
     1, 1e12, "the agent trains once this many new train samples are in"},
    {"train", "window", KEY_STR, OFF(schedule.window), "", 0, 0,
     "local hours the agent may train in, e.g. 22:00-06:00 (empty: any time)"},
    {"gate", "min_gain", KEY_FRACTION, OFF(gate.min_gain), "0.01", 0, 1,
     "holdout loss must improve by at least this fraction of the active\n"
     "# version's (the base's when none is active)"},
    {"gate", "max_forget", KEY_FRACTION, OFF(gate.max_forget), "0.02", 0, 1,
     "anchor-check loss may rise by at most this fraction"},
    {"probation", "events", KEY_INT, OFF(probation.events), "50", 1, 1e9,
     "probation ends after this many feedback events ..."},
    {"probation", "hours", KEY_REAL, OFF(probation.hours), "24", 0.001, 1e6,
     "... or after this many hours, whichever comes first"},
    {"probation", "window", KEY_INT, OFF(probation.window), "20", 1, 1e9,
     "reject rate is computed over the last this many events"},
    {"probation", "min_events", KEY_INT, OFF(probation.min_events), "10", 1, 1e9,
     "the reject rate counts once at least this many events exist"},
    {"probation", "max_reject_rate", KEY_FRACTION,
     OFF(probation.max_reject_rate), "0.3", 0, 1,
     "a reject rate above this rolls the version back"},
    {"probation", "max_crashes", KEY_INT, OFF(probation.max_crashes), "3", 0,
     1e6, "more interrupted runs than this roll the version back at the next\n"
     "# start (boot counting)"},
    {"probation", "max_probe_regress", KEY_FRACTION,
     OFF(probation.max_probe_regress), "0.05", 0, 1,
     "health check: probe-set loss may exceed the previous good version's\n"
     "# by at most this fraction"},
    {"replay", "fraction", KEY_FRACTION, OFF(replay.fraction), "0.25", 0, 1,
     "share of each training batch drawn from earlier accepted train data\n"
     "# and anchor-replay (never holdout, anchor-check or probe)"},
    {"replay", "base_fraction", KEY_FRACTION, OFF(replay.base_fraction), "0.9375", 0, 1,
     "share of each training batch drawn from the base model's rehearsal set\n"
     "# (BASE/replay.jsonl, general text of its pretraining distribution) when\n"
     "# it ships one; keeps the adapter from forgetting general text"},
    {"retention", "keep_good", KEY_INT, OFF(retention.keep_good), "5", 1, 1e6,
     "good versions kept; older ones are retired and their blobs freed"},
    {"retention", "max_blob_mb", KEY_INT, OFF(retention.max_blob_mb), "1024",
     1, 1e9, "disk budget of the blob store in MiB"},
    {"retention", "max_samples", KEY_INT, OFF(retention.max_samples),
     "1000000", 1, 1e12,
     "ingested samples kept; the oldest train samples go first"},
    {"sync", "interval_s", KEY_INT, OFF(sync.interval_s), "3600", 1, 1e9,
     "seconds between sync attempts"},
    {"sync", "outbox_max_mb", KEY_INT, OFF(sync.outbox_max_mb), "256", 1, 1e9,
     "outbox size cap in MiB"},
    {"sync", "backoff_base_s", KEY_INT, OFF(sync.backoff_base_s), "30", 1, 1e9,
     "first retry delay after a failed sync; doubles per failure (jittered)"},
    {"sync", "backoff_cap_s", KEY_INT, OFF(sync.backoff_cap_s), "3600", 1, 1e9,
     "longest delay between failed sync attempts"},
    {"sync", "encoding", KEY_STR, OFF(sync.encoding), "lora-delta-exact", 0, 0,
     "device delta encoding: lora-delta-exact, or lora-delta-q8 (smaller, lossy: "
     "the gate then judges the quantized weights)"},
    {"hub", "url", KEY_STR, OFF(hub.url), "", 0, 0,
     "hub address, e.g. https://hub.example:8443 (empty: offline)"},
    {"hub", "ca", KEY_STR, OFF(hub.ca), "", 0, 0,
     "fleet CA certificate file (PEM)"},
    {"hub", "cert", KEY_STR, OFF(hub.cert), "", 0, 0,
     "this device's certificate (PEM), installed by `edgeloop enroll`"},
    {"hub", "key", KEY_STR, OFF(hub.key), "", 0, 0,
     "this device's private key (PEM, 0600), made by `edgeloop enroll`"},
};

#define N_KEYS (sizeof keys / sizeof keys[0])

_Static_assert(N_KEYS <= 64, "el_store_config.source is too small");

size_t el_config_key_count(void)
{
    return N_KEYS;
}

void el_config_key_at(size_t i, const char **section, const char **key)
{
    *section = keys[i].section;
    *key = keys[i].name;
}

const char *el_config_source_name(enum el_config_source s)
{
    switch (s) {
    case EL_CONFIG_FILE: return "file";
    case EL_CONFIG_POLICY: return "policy";
    default: return "default";
    }
}

static int parse_value(el_store_config *c, size_t i, const char *value,
                       const char *where, el_error *err)
{
    const key_def *k = &keys[i];
    char *base = (char *)c + k->offset;
    if (k->type == KEY_STR) {
        if (strlen(value) >= EL_CONFIG_STR_MAX)
            return el_error_set(err, EL_EINPUT, "%s: [%s] %s is longer than %d bytes",
                                where, k->section, k->name, EL_CONFIG_STR_MAX - 1);
        memcpy(base, value, strlen(value) + 1);
        return 0;
    }
    if (!*value)
        return el_error_set(err, EL_EINPUT, "%s: [%s] %s has no value", where,
                            k->section, k->name);
    char *end;
    errno = 0;
    if (k->type == KEY_INT) {
        long long x = strtoll(value, &end, 10);
        if (errno || *end || (double)x < k->min || (double)x > k->max)
            return el_error_set(err, EL_EINPUT,
                                "%s: [%s] %s = \"%s\" must be an integer in [%.0f, %.0f]",
                                where, k->section, k->name, value, k->min, k->max);
        memcpy(base, &(int64_t){x}, sizeof(int64_t));
        return 0;
    }
    double x = strtod(value, &end);
    if (errno || *end || !isfinite(x) || x < k->min || x > k->max)
        return el_error_set(err, EL_EINPUT,
                            "%s: [%s] %s = \"%s\" must be a %s in [%g, %g]", where,
                            k->section, k->name, value,
                            k->type == KEY_FRACTION ? "fraction" : "number",
                            k->min, k->max);
    memcpy(base, &x, sizeof x);
    return 0;
}

void el_config_defaults(el_store_config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_KEYS; i++) {
        /* the defaults are compile-time constants inside their ranges */
        parse_value(c, i, keys[i].def, "defaults", NULL);
        c->source[i] = EL_CONFIG_DEFAULT;
    }
}

static long find_key(const char *section, const char *key)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (!strcmp(keys[i].section, section) && !strcmp(keys[i].name, key))
            return (long)i;
    return -1;
}

int el_config_set(el_store_config *c, const char *section, const char *key,
                  const char *value, enum el_config_source source,
                  const char *where, el_error *err)
{
    long i = find_key(section, key);
    if (i < 0)
        return el_error_set(err, EL_ENOTFOUND, "%s: unknown key [%s] %s", where,
                            section, key);
    int rc = parse_value(c, (size_t)i, value, where, err);
    if (rc == 0)
        c->source[i] = source;
    return rc;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static int known_section(const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (!strcmp(keys[i].section, name))
            return 1;
    return 0;
}

int el_config_load_file(el_store_config *c, const char *path, el_error *err)
{
    uint8_t *text = NULL;
    size_t len = 0;
    /* a configuration file is a few KiB; a huge one is a mistake */
    int rc = el_fs_read_file(path, 1 << 20, &text, &len, err);
    if (rc == EL_ENOTFOUND) {
        el_error_clear(err);
        return 0;
    }
    if (rc)
        return rc;
    if (memchr(text, '\0', len)) {
        el_free(text);
        return el_error_set(err, EL_EINPUT, "%s: contains a NUL byte", path);
    }
    char section[64] = "";
    char where[600];
    long lineno = 0;
    char *next = (char *)text;
    while (next && *next) {
        char *line = next;
        char *nl = strchr(line, '\n');
        if (nl) {
            *nl = '\0';
            next = nl + 1;
        } else {
            next = NULL;
        }
        lineno++;
        char *l = trim(line);
        snprintf(where, sizeof where, "%s:%ld", path, lineno);
        if (!*l || *l == '#' || *l == ';')
            continue;
        if (*l == '[') {
            char *close = strchr(l, ']');
            if (!close || close[1] != '\0') {
                rc = el_error_set(err, EL_EINPUT, "%s: malformed section header", where);
                goto done;
            }
            *close = '\0';
            char *name = trim(l + 1);
            if (!known_section(name) || strlen(name) >= sizeof section) {
                rc = el_error_set(err, EL_EINPUT, "%s: unknown section [%s]", where, name);
                goto done;
            }
            snprintf(section, sizeof section, "%s", name);
            continue;
        }
        char *eq = strchr(l, '=');
        if (!eq) {
            rc = el_error_set(err, EL_EINPUT, "%s: expected KEY = VALUE", where);
            goto done;
        }
        if (!*section) {
            rc = el_error_set(err, EL_EINPUT, "%s: key outside a [section]", where);
            goto done;
        }
        *eq = '\0';
        char *key = trim(l);
        char *value = trim(eq + 1);
        rc = el_config_set(c, section, key, value, EL_CONFIG_FILE, where, err);
        if (rc == EL_ENOTFOUND) {
            rc = el_error_set(err, EL_EINPUT, "%s: unknown key [%s] %s", where,
                              section, key);
            goto done;
        }
        if (rc)
            goto done;
    }
done:
    el_free(text);
    return rc;
}

void el_config_value_text(const el_store_config *c, size_t i, char *out,
                          size_t n)
{
    const key_def *k = &keys[i];
    const char *base = (const char *)c + k->offset;
    if (k->type == KEY_STR) {
        snprintf(out, n, "%s", base);
    } else if (k->type == KEY_INT) {
        int64_t x;
        memcpy(&x, base, sizeof x);
        snprintf(out, n, "%lld", (long long)x);
    } else {
        double x;
        memcpy(&x, base, sizeof x);
        snprintf(out, n, "%.17g", x);
        /* print 0.01, not 0.01000000000000000021 */
        char shorter[64];
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(shorter, sizeof shorter, "%.*g", prec, x);
            if (strtod(shorter, NULL) == x) {
                snprintf(out, n, "%s", shorter);
                break;
            }
        }
    }
}

const char *el_config_default_text(void)
{
    static char text[8192];
    if (text[0])
        return text;
    size_t used = 0;
    const char *section = "";
    used += (size_t)snprintf(text + used, sizeof text - used,
        "# edgeloop.conf: device configuration (written by `edgeloop init`).\n"
        "# Precedence: a fleet-signed policy release > this file > built-in\n"
        "# defaults. `edgeloop config` prints every effective value and its\n"
        "# source. Fractions are written as 0.01 for 1%%. Every key is shown\n"
        "# commented out with its built-in default: uncomment to change it.\n");
    for (size_t i = 0; i < N_KEYS && used < sizeof text; i++) {
        if (strcmp(section, keys[i].section)) {
            section = keys[i].section;
            used += (size_t)snprintf(text + used, sizeof text - used, "\n[%s]\n",
                                     section);
        }
        if (used >= sizeof text)
            break;
        used += (size_t)snprintf(text + used, sizeof text - used,
                                 "# %s\n# %s = %s\n", keys[i].comment,
                                 keys[i].name, keys[i].def);
    }
    return text;
}
