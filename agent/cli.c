#include "cli.h"

#include <stdio.h>

int el_cli_fail(const el_error *err, int json)
{
    el_error_print(json ? stdout : stderr, "edgeloop", err, json);
    return el_error_exit_status(err ? err->code : EL_EINTERNAL);
}

int el_cli_usage(const char *cmd, const char *msg, int json)
{
    el_error e;
    el_error_set(&e, EL_EUSAGE, "%s: %s (see edgeloop %s --help)", cmd, msg, cmd);
    return el_cli_fail(&e, json);
}
