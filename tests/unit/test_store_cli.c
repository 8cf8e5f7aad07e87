/* The state commands end to end through the built `edgeloop` binary: every
 * --help, exit codes 0/1/2/3, the --json error object, show/lineage/export/
 * pin/config output, and detection of a corrupted blob and a tampered audit
 * row from the command line. argv[1] is the edgeloop executable. */
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static const char *edgeloop;
static char root[256], state[300];
static char out[65536];

/* Runs `edgeloop ARGS --state STATE` (ARGS already shell-quoted), captures
 * stdout into `out` and returns the exit status. */
static int run(const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' %s --state '%s' 2>%s/stderr", edgeloop, args, state,
             root);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static json_t *run_json(const char *args, int want_rc)
{
    char full[1024];
    snprintf(full, sizeof full, "%s --json", args);
    int rc = run(full);
    CHECK_MSG(rc == want_rc, "edgeloop %s: exit %d, wanted %d: %s", args, rc, want_rc, out);
    json_error_t e;
    json_t *v = json_loads(out, 0, &e);
    CHECK_MSG(v != NULL, "edgeloop %s: output is not JSON: %s", args, out);
    return v;
}

static const char *error_code(json_t *v)
{
    json_t *e = json_object_get(v, "error");
    json_t *c = e ? json_object_get(e, "code") : NULL;
    return c && json_is_string(c) ? json_string_value(c) : "";
}

static void sh(const char *fmt, const char *a)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, fmt, a, a, a);
    CHECK_MSG(system(cmd) == 0, "%s", cmd);
}

static void make_fixtures(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && mkdir -p model a1 a2 && "
             "printf '{\"vocab_size\": 259}' > model/config.json && "
             "printf 'weights' > model/model.safetensors && "
             "printf '{\"r\": 8}' > a1/adapter_config.json && "
             "printf '\\024\\0\\0\\0\\0\\0\\0\\0{\"__metadata__\": {}}AAAAAAAA' "
             "> a1/adapter_model.safetensors && "
             "printf '{\"r\": 4}' > a2/adapter_config.json && "
             "printf '\\024\\0\\0\\0\\0\\0\\0\\0{\"__metadata__\": {}}BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB' "
             "> a2/adapter_model.safetensors && "
             "printf '{\"text\": \"one\"}\\n{\"prompt\": \"p\", \"completion\": \"c\"}\\n' > good.jsonl && "
             "printf '{\"text\": \"ok\"}\\n{\"text\": 1}\\n' > bad.jsonl",
             root);
    CHECK(system(cmd) == 0);
}

static void test_help_and_usage(void)
{
    const char *cmds[] = {"init", "ingest", "versions", "show", "lineage", "activate",
                          "rollback", "pin", "unpin", "feedback", "audit", "gc",
                          "export", "config", "register-adapter", "check", "health"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char args[128];
        snprintf(args, sizeof args, "%s --help", cmds[i]);
        CHECK_MSG(run(args) == 0 && strstr(out, "usage: edgeloop"), "%s --help", cmds[i]);
        snprintf(args, sizeof args, "%s --bogus-flag", cmds[i]);
        CHECK_MSG(run(args) == 1, "%s --bogus-flag should be a usage error", cmds[i]);
    }
    /* not initialized yet: a clear error, exit 2 (not found) */
    json_t *v = run_json("versions", 2);
    CHECK_STR(error_code(v), "not_found");
    json_decref(v);
}

static void test_flow(void)
{
    char args[1024];
    snprintf(args, sizeof args, "init --model '%s/model'", root);
    json_t *v = run_json(args, 0);
    CHECK(json_integer_value(json_object_get(v, "schema")) == 4);
    /* init reports the base as the fleet names it (sha256 of
     * model.safetensors alone: `printf weights | sha256sum`) */
    const char *init_base = json_string_value(json_object_get(json_object_get(v, "base"),
                                                              "hash"));
    CHECK_STR(init_base ? init_base : "",
              "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c");
    json_decref(v);

    /* config: every key, defaults until the file sets one */
    v = run_json("config", 0);
    json_t *cfg = json_object_get(v, "config");
    CHECK(json_object_size(cfg) >= 20);
    json_t *k = json_object_get(cfg, "gate.min_gain");
    CHECK(k && !strcmp(json_string_value(json_object_get(k, "source")), "default"));
    CHECK(k && !strcmp(json_string_value(json_object_get(k, "value")), "0.01"));
    json_decref(v);
    char conf[400];
    snprintf(conf, sizeof conf, "%s/edgeloop.conf", state);
    FILE *f = fopen(conf, "a");
    fputs("\n[gate]\nmin_gain = 0.03\n", f);
    fclose(f);
    v = run_json("config", 0);
    k = json_object_get(json_object_get(v, "config"), "gate.min_gain");
    CHECK(k && !strcmp(json_string_value(json_object_get(k, "source")), "file"));
    json_decref(v);

    /* ingest: good file, then a bad one refused whole with FILE:LINE */
    snprintf(args, sizeof args, "ingest '%s/good.jsonl' --split train", root);
    v = run_json(args, 0);
    CHECK(json_integer_value(json_object_get(v, "added")) == 2);
    json_decref(v);
    snprintf(args, sizeof args, "ingest '%s/bad.jsonl' --split holdout", root);
    v = run_json(args, 2);
    CHECK_STR(error_code(v), "bad_input");
    char *text = json_dumps(v, 0);
    CHECK(text && strstr(text, "bad.jsonl:2") != NULL);
    free(text);
    json_decref(v);
    snprintf(args, sizeof args, "ingest '%s/good.jsonl' --split nope", root);
    CHECK(run(args) == 1);

    /* versions: import two, activate the first, make it good */
    snprintf(args, sizeof args, "register-adapter '%s/a1' --activate", root);
    v = run_json(args, 0);
    CHECK_STR(json_string_value(json_object_get(v, "state")), "probation");
    json_decref(v);
    snprintf(args, sizeof args, "register-adapter '%s/a2' --parent 1", root);
    v = run_json(args, 0);
    CHECK_STR(json_string_value(json_object_get(v, "state")), "candidate");
    json_decref(v);
    /* activating while on probation, or twice, is refused: exit 3 */
    v = run_json("activate 2", 3);
    CHECK_STR(error_code(v), "refused");
    json_decref(v);
    v = run_json("activate 1", 3);
    json_decref(v);
    CHECK(run("activate 99") == 2);
    CHECK(run("activate zero") == 1);
    for (int i = 0; i < 50; i++)
        CHECK(run("feedback --accept") == 0);
    v = run_json("show 1", 0);
    CHECK_STR(json_string_value(json_object_get(v, "state")), "good");
    CHECK(json_is_true(json_object_get(v, "active")));
    json_decref(v);
    CHECK(run("feedback --accept --reject") == 1);

    /* lineage of 2 goes through 1 to the base */
    v = run_json("lineage 2", 0);
    json_t *chain = json_object_get(v, "lineage");
    CHECK(json_array_size(chain) == 2);
    CHECK(json_integer_value(json_object_get(json_array_get(chain, 1), "id")) == 1);
    /* the base is named as releases name it: sha256 of model.safetensors
     * alone (`printf weights | sha256sum`) */
    CHECK_STR(json_string_value(json_object_get(v, "base")),
              "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c");
    json_decref(v);

    /* pin holds the pointer */
    CHECK(run("pin 2") == 3);
    CHECK(run("pin 1") == 0);
    CHECK(run("activate 2") == 3);
    CHECK(run("unpin") == 0);
    CHECK(run("activate 2") == 0);
    /* rollback: 2 (probation) -> rolled_back, 1 active again */
    v = run_json("rollback", 0);
    CHECK(json_integer_value(json_object_get(v, "active")) == 1);
    json_decref(v);
    v = run_json("rollback", 3);   /* no other good version */
    CHECK_STR(error_code(v), "refused");
    json_decref(v);
    CHECK(run("rollback --to 2") == 3);

    /* export writes the PEFT directory back byte for byte */
    snprintf(args, sizeof args, "export 1 --peft '%s/out1'", root);
    CHECK(run(args) == 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cmp -s '%s/a1/adapter_model.safetensors' "
             "'%s/out1/adapter_model.safetensors' && cmp -s '%s/a1/adapter_config.json' "
             "'%s/out1/adapter_config.json'", root, root, root, root);
    CHECK(system(cmd) == 0);

    v = run_json("audit", 0);
    size_t rows = json_array_size(json_object_get(v, "audit"));
    CHECK(rows > 50);
    json_decref(v);
    v = run_json("check", 0);
    CHECK(json_is_true(json_object_get(v, "ok")));
    json_decref(v);
    CHECK(run("gc") == 0);
    CHECK(run("check") == 0);

    /* a corrupted blob: export refuses (exit 2), check reports it */
    sh("f=$(find '%s/blobs' -type f -name '*' | xargs ls -S | head -1); chmod u+w \"$f\"; "
       "printf Z | dd of=\"$f\" bs=1 seek=12 conv=notrunc 2>/dev/null", state);
    snprintf(args, sizeof args, "export 1 --peft '%s/out2'", root);
    v = run_json(args, 2);
    CHECK(strstr(json_string_value(json_object_get(json_object_get(v, "error"), "message")),
                 "corrupted") != NULL);
    json_decref(v);
    v = run_json("check", 2);
    CHECK(json_integer_value(json_object_get(v, "blobs_corrupt")) == 1);
    json_decref(v);

    /* a tampered audit row is named by audit --verify */
    char db[400];
    snprintf(db, sizeof db, "%s/registry.db", state);
    sqlite3 *h;
    CHECK(sqlite3_open(db, &h) == SQLITE_OK);
    CHECK(sqlite3_exec(h, "UPDATE audit SET event = 'nothing' WHERE seq = 4", NULL, NULL,
                       NULL) == SQLITE_OK);
    sqlite3_close(h);
    v = run_json("audit --verify", 2);
    CHECK(strstr(json_string_value(json_object_get(json_object_get(v, "error"), "message")),
                 "row 4") != NULL);
    json_decref(v);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_store_cli EDGELOOP\n");
        return 1;
    }
    edgeloop = argv[1];
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/el-test-store-cli-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(state, sizeof state, "%s/state", root);
    make_fixtures();
    test_help_and_usage();
    test_flow();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (!el_test_failures && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
    return el_test_done("test_store_cli");
}
