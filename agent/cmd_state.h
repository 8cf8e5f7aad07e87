/* Helpers shared by the state commands (cmd_state.c, cmd_versions.c): the
 * common --state/--json/--help flags, opening the state, JSON output. */
#ifndef EL_CMD_STATE_H
#define EL_CMD_STATE_H

#include <jansson.h>
#include <stdint.h>

#include "store/store.h"

typedef struct el_cli_state {
    const char *cmd;    /* subcommand name, for messages */
    const char *state;  /* --state DIR or NULL */
    int json;           /* --json */
    int help;           /* --help / -h */
} el_cli_state;

/* Consumes ARGV[*I] (and its value) when it is --state, --json or --help.
 * Returns 1 when consumed, 0 when not one of them, -1 when --state lacks
 * its value (the usage error is printed; exit 1). */
int el_cli_state_common(el_cli_state *c, int argc, char **argv, int *i);

/* A command's own flag: NAME takes the next argument into *VALUE, or, with
 * VALUE NULL, sets *SET to 1. */
typedef struct el_cli_flag {
    const char *name;
    const char **value;
    int *set;
} el_cli_flag;

/* Parses a command line: the common options, FLAGS (ended by a NULL name;
 * FLAGS may be NULL) and up to MAXPOS positional arguments into POS.
 * Returns the number of positionals, or -1 after printing the usage error
 * (an unknown argument, one too many, a flag without its value). */
int el_cli_parse(el_cli_state *c, int argc, char **argv, const el_cli_flag *flags,
                 const char **pos, int maxpos);

/* Parses the command line of a command that takes the common options only.
 * Returns -1 to go on, or the exit status to return at once: 0 after
 * printing HELP for --help, non-zero after a usage error. */
int el_cli_state_only(el_cli_state *c, int argc, char **argv, const char *help);

/* Opens the state (CREATE for init). Returns 0 with *S set, or the exit
 * status after printing the error. */
int el_cli_state_open(el_cli_state *c, int create, el_store **s);

/* Parses a version id (a positive integer). Returns 0 or -1. */
int el_cli_state_id(const char *text, int64_t *id);

/* Prints V (consumed) as indented JSON on stdout. */
void el_cli_state_print(json_t *v);

/* A version as JSON (new reference; NULL when out of memory). */
json_t *el_cli_state_version_json(const el_store_version *v);

/* Prints ERR and returns the exit status (el_cli_fail). */
int el_cli_state_fail(el_cli_state *c, const el_error *err);

#endif
