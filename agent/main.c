/* edgeloop: the device agent's command line. Each subcommand lives in a
 * cmd_*.c file; this file only dispatches. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const el_cli_command commands[] = {
    /* name, function, summary: kept in the order `--help` shows them */
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: edgeloop COMMAND [OPTIONS]\n"
            "\n"
            "On-device LoRA fine-tuning agent. Commands:\n");
    for (size_t i = 0; commands[i].name; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n"
            "Run `edgeloop COMMAND --help` for a command's options.\n"
            "Exit status: 0 ok, 1 usage or internal error, 2 bad input,\n"
            "3 refused by trust or policy.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("edgeloop %s\n", EDGELOOP_VERSION);
        return 0;
    }
    for (size_t i = 0; commands[i].name; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "edgeloop: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 1;
}
