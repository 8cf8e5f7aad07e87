/* edgeloop-hub: the central hub. `serve` runs the /v1 API over mutual TLS;
 * `import` takes device bundles from files (a USB stick) with the same checks
 * as an upload. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "hub.h"

#ifndef EDGELOOP_VERSION
#define EDGELOOP_VERSION "0"
#endif

#define IMPORT_MAX (256u << 20)

static el_hub *running_hub;

static void on_signal(int sig)
{
    (void)sig;
    if (running_hub)
        running_hub->stop = 1;
}

typedef struct hub_args {
    const char *listen, *cert, *key, *ca, *root, *data, *port_file;
    int workers, request_timeout_ms, idle_timeout_ms, handshake_timeout_ms, resume;
    long long body_max;
    int json;
    const char *files[64];
    int n_files;
} hub_args;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: edgeloop-hub serve --listen ADDR:PORT --cert hub.crt --key hub.key\n"
            "                          --ca ca.crt --root root.elb --data DIR [options]\n"
            "       edgeloop-hub import FILE.elb... --ca ca.crt --root root.elb --data DIR\n"
            "\n"
            "serve options:\n"
            "  --workers N              worker threads (default 16; idle connections hold none)\n"
            "  --port-file FILE         write the port chosen (for --listen HOST:0)\n"
            "  --request-timeout MS     one request, first byte to last (default 30000)\n"
            "  --idle-timeout MS        keep-alive wait for the next request (default 5000)\n"
            "  --handshake-timeout MS   TLS handshake (default 10000)\n"
            "  --body-max BYTES         largest request body (default 67108864)\n"
            "  --no-resume              no TLS session tickets or cache\n"
            "common: --json (machine-readable output), --help\n"
            "Exit status: 0 ok, 1 usage or internal error, 2 bad input, 3 refused.\n");
}

static int int_arg(const char *v, long long min, long long max, long long *out)
{
    char *end;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || x < min || x > max)
        return -1;
    *out = x;
    return 0;
}

/* Returns 0, or 1 after printing a usage error, or 2 for --help. */
static int parse_args(int argc, char **argv, hub_args *a)
{
    memset(a, 0, sizeof *a);
    a->workers = EL_HUB_DEFAULT_WORKERS;
    a->request_timeout_ms = 30000;
    a->idle_timeout_ms = 5000;
    a->handshake_timeout_ms = 10000;
    a->resume = 1;
    a->body_max = 64ll << 20;
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long n;
        const char **str = NULL;
        int *num = NULL;
        if (!strcmp(o, "--help") || !strcmp(o, "-h"))
            return 2;
        if (!strcmp(o, "--json")) {
            a->json = 1;
            continue;
        }
        if (!strcmp(o, "--no-resume")) {
            a->resume = 0;
            continue;
        }
        if (!strcmp(o, "--listen")) str = &a->listen;
        else if (!strcmp(o, "--cert")) str = &a->cert;
        else if (!strcmp(o, "--key")) str = &a->key;
        else if (!strcmp(o, "--ca")) str = &a->ca;
        else if (!strcmp(o, "--root")) str = &a->root;
        else if (!strcmp(o, "--data")) str = &a->data;
        else if (!strcmp(o, "--port-file")) str = &a->port_file;
        else if (!strcmp(o, "--workers")) num = &a->workers;
        else if (!strcmp(o, "--request-timeout")) num = &a->request_timeout_ms;
        else if (!strcmp(o, "--idle-timeout")) num = &a->idle_timeout_ms;
        else if (!strcmp(o, "--handshake-timeout")) num = &a->handshake_timeout_ms;
        else if (!strcmp(o, "--body-max")) {
            if (!v || int_arg(v, 1024, 1ll << 32, &a->body_max)) {
                fprintf(stderr, "edgeloop-hub: --body-max wants 1024..4294967296 bytes\n");
                return 1;
            }
            i++;
            continue;
        } else if (o[0] != '-' && a->n_files < 64) {
            a->files[a->n_files++] = o;
            continue;
        } else {
            fprintf(stderr, "edgeloop-hub: unknown option \"%s\"\n", o);
            return 1;
        }
        if (!v) {
            fprintf(stderr, "edgeloop-hub: %s needs a value\n", o);
            return 1;
        }
        i++;
        if (str) {
            *str = v;
        } else if (int_arg(v, 1, 1000000000, &n)) {
            fprintf(stderr, "edgeloop-hub: %s wants a positive integer\n", o);
            return 1;
        } else {
            *num = (int)n;
        }
    }
    return 0;
}

static int fail(const el_error *err, int json)
{
    el_error_print(json ? stdout : stderr, "edgeloop-hub", err, json);
    return el_error_exit_status(err->code);
}

static int need(const char *value, const char *flag, int json)
{
    if (value)
        return 0;
    el_error err;
    el_error_set(&err, EL_EUSAGE, "%s is required (see --help)", flag);
    fail(&err, json);
    return 1;
}

static int cmd_serve(const hub_args *a)
{
    if (need(a->listen, "--listen", a->json) || need(a->cert, "--cert", a->json) ||
        need(a->key, "--key", a->json) || need(a->ca, "--ca", a->json) ||
        need(a->root, "--root", a->json) || need(a->data, "--data", a->json))
        return 1;
    el_error err = {0};
    el_hub_store *store = NULL;
    el_hub hub;
    const char **revoked = NULL;
    size_t n_revoked = 0;
    int rc = el_hub_store_sqlite_open(a->data, &store, &err);
    if (rc)
        return fail(&err, a->json);
    rc = el_hub_init(&hub, store, a->ca, a->root, &err);
    hub.body_max = (size_t)a->body_max;
    hub.request_timeout_ms = a->request_timeout_ms;
    hub.idle_timeout_ms = a->idle_timeout_ms;
    if (!rc)
        rc = el_hub_revoked_serials(&hub, &revoked, &n_revoked, &err);
    if (!rc) {
        el_tls_opts t = {
            .is_server = 1,
            .ca_path = a->ca,
            .cert_path = a->cert,
            .key_path = a->key,
            .revoked = revoked,
            .n_revoked = n_revoked,
            .handshake_timeout_ms = a->handshake_timeout_ms,
            .io_timeout_ms = a->request_timeout_ms,
            .resume = a->resume,
        };
        rc = el_tls_ctx_create(&t, &hub.tls, &err);
    }
    el_free(revoked);
    if (!rc) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        running_hub = &hub;
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
        el_hub_serve_opts so = {.listen = a->listen, .port_file = a->port_file,
                                .workers = a->workers};
        rc = el_hub_serve(&hub, &so, &err);
        running_hub = NULL;
    }
    el_tls_ctx_destroy(hub.tls);
    el_hub_finish(&hub);
    store->ops->destroy(store);
    if (rc)
        return fail(&err, a->json);
    if (!a->json)
        fprintf(stderr, "edgeloop-hub: stopped\n");
    return 0;
}

static int cmd_import(const hub_args *a)
{
    if (need(a->ca, "--ca", a->json) || need(a->root, "--root", a->json) ||
        need(a->data, "--data", a->json))
        return 1;
    if (!a->n_files) {
        el_error err;
        el_error_set(&err, EL_EUSAGE, "import needs at least one FILE.elb");
        return fail(&err, a->json);
    }
    el_error err = {0};
    el_hub_store *store = NULL;
    el_hub hub;
    int rc = el_hub_store_sqlite_open(a->data, &store, &err);
    if (rc)
        return fail(&err, a->json);
    rc = el_hub_init(&hub, store, a->ca, a->root, &err);
    json_t *results = json_array();
    for (int i = 0; !rc && i < a->n_files; i++) {
        uint8_t *bytes = NULL;
        size_t len = 0;
        el_hub_bundle_rec rec;
        int created = 0;
        rc = el_fs_read_file(a->files[i], IMPORT_MAX, &bytes, &len, &err);
        if (!rc)
            rc = el_hub_accept_delta(&hub, bytes, len, NULL, NULL, &rec, &created, &err);
        el_free(bytes);
        if (rc) {
            el_error_prefix(&err, "%s", a->files[i]);
            break;
        }
        json_array_append_new(results, json_pack("{s:s, s:s, s:s, s:b}", "file", a->files[i],
                                                 "id", rec.id, "device", rec.device,
                                                 "created", created));
        if (!a->json)
            printf("%s: bundle %s from %s %s\n", a->files[i], rec.id, rec.device,
                   created ? "imported" : "already held");
    }
    el_hub_finish(&hub);
    store->ops->destroy(store);
    if (!rc && a->json) {
        char *text = el_json_dump_sorted(results);
        if (text)
            printf("{\"imported\":%s}\n", text);
        free(text);
    }
    json_decref(results);
    return rc ? fail(&err, a->json) : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 1 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("edgeloop-hub %s\n", EDGELOOP_VERSION);
        return 0;
    }
    hub_args a;
    int p = parse_args(argc, argv, &a);
    if (p == 2) {
        usage(stdout);
        return 0;
    }
    if (p)
        return 1;
    if (!strcmp(argv[1], "serve")) {
        if (a.n_files) {
            fprintf(stderr, "edgeloop-hub serve: unexpected argument \"%s\"\n", a.files[0]);
            return 1;
        }
        return cmd_serve(&a);
    }
    if (!strcmp(argv[1], "import"))
        return cmd_import(&a);
    fprintf(stderr, "edgeloop-hub: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 1;
}
