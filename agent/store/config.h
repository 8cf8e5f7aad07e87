/* edgeloop.conf: the one INI configuration file of a device.
 *
 * Sections [train], [gate], [probation], [replay], [retention], [sync],
 * [hub]. Each key has a built-in default; the file overrides it; a
 * fleet-signed policy release (stored by the sync glue in the registry's
 * policy table) overrides both. Every effective value keeps its source so
 * `edgeloop config` can show where it came from.
 */
#ifndef EL_STORE_CONFIG_H
#define EL_STORE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define EL_CONFIG_STR_MAX 256

enum el_config_source {
    EL_CONFIG_DEFAULT = 0,
    EL_CONFIG_FILE = 1,
    EL_CONFIG_POLICY = 2,
};

typedef struct el_store_config {
    struct {
        char backend[EL_CONFIG_STR_MAX];
        char targets[EL_CONFIG_STR_MAX];
        int64_t steps, rank, batch, seq_len, seed;
        double alpha, lr;
    } train;
    struct {
        double min_gain, max_forget;
    } gate;
    struct {
        int64_t events, window, min_events, max_crashes;
        double hours, max_reject_rate, max_probe_regress;
    } probation;
    struct {
        double fraction;
        double base_fraction;   /* share of each batch from BASE/replay.jsonl */
    } replay;
    struct {
        int64_t keep_good, max_blob_mb, max_samples;
    } retention;
    struct {
        int64_t interval_s, outbox_max_mb;
        int64_t backoff_base_s, backoff_cap_s;   /* daemon: retry delays */
        char encoding[EL_CONFIG_STR_MAX];        /* device deltas (device) */
    } sync;
    struct {
        int64_t min_new_samples;                 /* daemon: when to train */
        char window[EL_CONFIG_STR_MAX];
    } schedule;
    struct {
        char url[EL_CONFIG_STR_MAX];
        char ca[EL_CONFIG_STR_MAX];
        char cert[EL_CONFIG_STR_MAX];   /* device certificate (enroll) */
        char key[EL_CONFIG_STR_MAX];    /* device private key (enroll) */
    } hub;
    /* where each key's value came from, indexed like el_config_key_at */
    enum el_config_source source[64];
} el_store_config;

/* Fills C with the built-in defaults. */
void el_config_defaults(el_store_config *c);

/* Applies the file at PATH over C. A missing file is not an error (the
 * defaults stand). Unknown sections or keys, malformed lines and values
 * outside their range are EL_EINPUT naming PATH:LINE and the key. C may be
 * partly updated on failure. */
int el_config_load_file(el_store_config *c, const char *path, el_error *err);

/* Sets SECTION.KEY to the text VALUE with SOURCE (a policy release uses
 * EL_CONFIG_POLICY). Returns 0, EL_ENOTFOUND for an unknown key, EL_EINPUT
 * for a bad value; WHERE names the origin in messages. */
int el_config_set(el_store_config *c, const char *section, const char *key,
                  const char *value, enum el_config_source source,
                  const char *where, el_error *err);

/* The documented default file, as `init` writes it. Static storage. */
const char *el_config_default_text(void);

/* Number of keys and the I-th key's section, name and source name. */
size_t el_config_key_count(void);
void el_config_key_at(size_t i, const char **section, const char **key);
const char *el_config_source_name(enum el_config_source s);

/* The I-th key's effective value as text into OUT (size N). */
void el_config_value_text(const el_store_config *c, size_t i, char *out,
                          size_t n);

#endif
