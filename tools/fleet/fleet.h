/* edgeloop-fleet internals shared by its command files: argument parsing,
 * fleet-directory paths, key loading and output. */
#ifndef EL_FLEET_H
#define EL_FLEET_H

#include <jansson.h>
#include <stdint.h>

#include "base/error.h"
#include "crypto.h"

#define FL_OPTS_MAX 24
#define FL_VALS_MAX 16
#define FL_POS_MAX 8

typedef struct fl_opt {
    const char *name;
    const char *vals[FL_VALS_MAX];
    int n;
} fl_opt;

typedef struct fl_args {
    const char *cmd;                 /* e.g. "release sign" */
    const char *pos[FL_POS_MAX];
    int npos;
    fl_opt opts[FL_OPTS_MAX];
    int nopts;
    int json, help;
    char fleet[1024];                /* --fleet, $EDGELOOP_FLEET or ./fleet */
} fl_args;

/* Parses ARGV[0..ARGC) after the command words. ALLOWED lists the options
 * that take values ("--kind"); MULTI those that take one or more values
 * ("--root-key a b"), either repeated or listed. Returns 0 or EL_EUSAGE. */
int fl_parse(int argc, char **argv, const char *cmd, const char *const *allowed,
             const char *const *multi, fl_args *a, el_error *err);

/* The first value of NAME, or NULL. */
const char *fl_get(const fl_args *a, const char *name);
/* All values of NAME (count in *N), or NULL. */
const char *const *fl_getv(const fl_args *a, const char *name, int *n);

/* Joins the fleet directory and REL into OUT (1024 bytes). */
void fl_path(const fl_args *a, const char *rel, char out[1024]);

/* Loads key NAME (fleet/keys/NAME.key or .pub) or, when --key-file is given
 * and NAME is NULL, that file. Returns as el_crypto_key_load. */
int fl_load_key(const fl_args *a, const char *name, int is_private,
                el_crypto_key **out, el_error *err);

/* Parses "30d", "12h", "90m" or "3600s" into seconds. Returns 0 or -1. */
int fl_duration(const char *s, int64_t *out);

/* The current time; $EDGELOOP_FLEET_NOW (RFC 3339) overrides it so tests
 * can make releases at a fixed instant. */
int64_t fl_now(void);

/* Prints VALUE (JSON mode) and takes ownership of it. */
void fl_print_json(json_t *value);

/* Reports ERR the DESIGN.md way and returns the exit status. */
int fl_fail(const fl_args *a, const el_error *err);
int fl_usage(const fl_args *a, const char *msg);

/* Command implementations (release.c). */
int fl_cmd_release_create(int argc, char **argv);
int fl_cmd_release_sign(int argc, char **argv);
int fl_cmd_release_inspect(int argc, char **argv);

/* Commands that talk to the hub with an admin certificate (hub.c). */
int fl_cmd_release_push(int argc, char **argv);
int fl_cmd_status(int argc, char **argv);
int fl_cmd_promote(int argc, char **argv);

#endif
