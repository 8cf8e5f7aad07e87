/* Shared pieces of the edgeloop command line: the command table entries each
 * cmd_*.c file provides, and how a command reports failure. */
#ifndef EL_CLI_H
#define EL_CLI_H

#include "base/error.h"

/* A subcommand: ARGV[0] is the subcommand name. Returns the exit status. */
typedef int (*el_cli_fn)(int argc, char **argv);

typedef struct el_cli_command {
    const char *name;
    el_cli_fn fn;
    const char *summary;   /* one line for `edgeloop --help` */
} el_cli_command;

/* Prints ERR (as JSON when JSON) on stdout for --json, else stderr, and
 * returns the exit status DESIGN.md assigns to its code (1, 2 or 3). */
int el_cli_fail(const el_error *err, int json);

/* Prints "edgeloop CMD: MSG" for a usage mistake and returns 1. */
int el_cli_usage(const char *cmd, const char *msg, int json);

/* Commands, one per cmd_*.c (each file adds its own line to main.c). */
int el_cmd_train(int argc, char **argv);
int el_cmd_eval(int argc, char **argv);
int el_cmd_generate(int argc, char **argv);
int el_cmd_devices(int argc, char **argv);
/* state commands (cmd_state.c, cmd_versions.c) */
int el_cmd_init(int argc, char **argv);
int el_cmd_ingest(int argc, char **argv);
int el_cmd_versions(int argc, char **argv);
int el_cmd_show(int argc, char **argv);
int el_cmd_lineage(int argc, char **argv);
int el_cmd_activate(int argc, char **argv);
int el_cmd_rollback(int argc, char **argv);
int el_cmd_pin(int argc, char **argv);
int el_cmd_unpin(int argc, char **argv);
int el_cmd_feedback(int argc, char **argv);
int el_cmd_audit(int argc, char **argv);
int el_cmd_gc(int argc, char **argv);
int el_cmd_export(int argc, char **argv);
int el_cmd_config(int argc, char **argv);
int el_cmd_register_adapter(int argc, char **argv);
int el_cmd_check(int argc, char **argv);
int el_cmd_health(int argc, char **argv);
/* the agent (cmd_agent.c) */
int el_cmd_agent(int argc, char **argv);
int el_cmd_status(int argc, char **argv);
int el_cmd_sync(int argc, char **argv);
int el_cmd_pause_training(int argc, char **argv);
int el_cmd_resume_training(int argc, char **argv);
/* device commands (cmd_device.c): `train` dispatches state/standalone mode */
int el_cmd_device_train(int argc, char **argv);
int el_cmd_enroll(int argc, char **argv);
int el_cmd_import(int argc, char **argv);
int el_cmd_bundle(int argc, char **argv);

#endif
