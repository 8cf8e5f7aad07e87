/* edgeloop: the device agent's command line. Each subcommand lives in a
 * cmd_*.c file; this file only dispatches. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const el_cli_command commands[] = {
    /* name, function, summary: kept in the order `--help` shows them */
    {"devices", el_cmd_devices, "list Vulkan devices and what --backend auto would use"},
    {"init", el_cmd_init, "create the state directory and register the base model"},
    {"ingest", el_cmd_ingest, "add JSONL samples to the train, holdout or anchor split"},
    {"versions", el_cmd_versions, "list adapter versions and their states"},
    {"show", el_cmd_show, "print one version: lineage, recipe, metrics, gate"},
    {"lineage", el_cmd_lineage, "print a version's chain of parents to the base"},
    {"activate", el_cmd_activate, "activate a version (candidate -> probation)"},
    {"rollback", el_cmd_rollback, "roll back to the last good version (or --to ID|base)"},
    {"pin", el_cmd_pin, "hold the active version"},
    {"unpin", el_cmd_unpin, "release the pin"},
    {"feedback", el_cmd_feedback, "record --accept or --reject for a version"},
    {"audit", el_cmd_audit, "print or --verify the audit chain"},
    {"gc", el_cmd_gc, "apply retention and free unreferenced blobs"},
    {"export", el_cmd_export, "write a version back as a PEFT directory"},
    {"config", el_cmd_config, "print every effective configuration key and its source"},
    {"register-adapter", el_cmd_register_adapter, "maintenance: import a PEFT directory as a version"},
    {"check", el_cmd_check, "verify the registry, blobs and audit chain"},
    {"health", el_cmd_health, "maintenance: report a probation health check"},
    {"agent", el_cmd_agent, "run the device agent: inbox, scheduler, control socket"},
    {"sync", el_cmd_sync, "sync once with the hub: outbox and status up, roots and releases down"},
    {"status", el_cmd_status, "show the device state (asks the running agent when there is one)"},
    {"pause-training", el_cmd_pause_training, "stop the agent from starting training runs (kept across restarts)"},
    {"resume-training", el_cmd_resume_training, "let the agent train again"},
    {"enroll", el_cmd_enroll, "create the device key and CSR, or install the certificate and pin the root"},
    {"import", el_cmd_import, "verify a signed fleet bundle (.elb) and install it"},
    {"bundle", el_cmd_bundle, "write a version as a signed device delta (.elb) for the hub"},
    {"train", el_cmd_device_train, "train a candidate from ingested data and gate it (or --model/--data/--out: standalone)"},
    {"eval", el_cmd_eval, "loss of a model (+ adapter) on JSONL data"},
    {"generate", el_cmd_generate, "continue a prompt with a model (+ adapter)"},
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
