/* bench-hub: load generator for edgeloop-hub (tools/bench/hub runs it).
 *
 * N simulated devices (own certificate each) sync concurrently: a TLS
 * handshake, POST /v1/status with a signed audit head, PUT of a real
 * chained adapter delta (lora-delta-q8), GET /v1/releases. Three phases:
 *   full+new  full handshakes, every upload a delta the hub has not seen
 *             (it verifies, rebuilds and stores it); ends after S seconds
 *             or when a device has used its K pre-made deltas;
 *   full      full handshakes, each device re-sends its newest delta, which
 *             the hub answers 200 from its record (a device with nothing
 *             new to upload costs the hub about as much);
 *   resumed   the same with session resumption.
 * Before them each device syncs once, unmeasured (its first delta): the hub
 * checks a device's certificate chain and builds its key table once.
 * It prints syncs/s, handshakes/s, p50/p99 sync latency, errors, the hub's
 * CPU ms per sync (from /proc), the load generator's CPU ms per sync, how
 * many uploads were new deltas, peak RSS, the writes per store commit (from
 * /metrics: group commit), and checks that every bundle
 * uploaded is stored exactly once. Client and hub share the machine: the
 * figures are a floor; 1000 * cores / (hub + client CPU ms per sync) is the
 * ceiling the CPU allows.
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/json.h"
#include "client.h"
#include "fleetkit.h"
#include "hub.h"

#define DAY 86400
#define DELTAS_DEFAULT 16
#define DELTAS_MAX 256

typedef struct device {
    char name[32], cn[32];
    el_client *client;
    el_crypto_key *key;       /* loaded once, as a running agent keeps it */
    char paths[2100];
    uint8_t **bundles;        /* K pre-made chained deltas */
    size_t *lens;
    char (*ids)[65];
    int next_delta;           /* deltas uploaded so far */
    int64_t audit_seq;
    int64_t since;
    double *lat;              /* ms per sync */
    size_t n_lat, cap_lat;
    long errors;
    long created;             /* uploads the hub stored as new, this phase */
} device;

static el_fleetkit fleet;
static atomic_int phase_stop;
static int full_handshake;
static int upload_new;        /* this phase uploads a new delta each sync */
static int deltas_per_device = DELTAS_DEFAULT;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int sync_once(device *d)
{
    el_error err = {0};
    char hash[65];
    el_client_disconnect(d->client);
    if (full_handshake)
        el_client_forget_session(d->client);
    d->audit_seq++;
    snprintf(hash, sizeof hash, "%064" PRIx64, (uint64_t)d->audit_seq);
    json_t *status = el_fleetkit_status_signed(d->key, d->cn, d->audit_seq, hash);
    int rc = el_client_post_status(d->client, status, &err);
    json_decref(status);
    if (rc)
        goto fail;
    /* a new delta, or the newest one again */
    int i = upload_new ? d->next_delta : (d->next_delta ? d->next_delta - 1 : 0);
    int created;
    if ((rc = el_client_upload_bundle(d->client, d->ids[i], d->bundles[i], d->lens[i], &created,
                                      &err)) != 0)
        goto fail;
    if (i == d->next_delta)
        d->next_delta++;
    d->created += created;
    json_t *list = NULL;
    if ((rc = el_client_releases(d->client, d->since, &list, &err)) != 0)
        goto fail;
    d->since = json_integer_value(json_object_get(list, "next"));
    json_decref(list);
    return 0;
fail:
    fprintf(stderr, "bench-hub: %s: %s\n", d->cn, err.msg);
    return rc;
}

static void *device_main(void *arg)
{
    device *d = arg;
    while (!atomic_load(&phase_stop)) {
        if (upload_new && d->next_delta == deltas_per_device) {
            atomic_store(&phase_stop, 1);   /* out of new deltas: end the phase */
            break;
        }
        double t0 = now_ms();
        if (sync_once(d)) {
            d->errors++;
            continue;
        }
        if (d->n_lat == d->cap_lat) {
            d->cap_lat = d->cap_lat ? d->cap_lat * 2 : 64;
            d->lat = realloc(d->lat, d->cap_lat * sizeof *d->lat);
            if (!d->lat)
                abort();
        }
        d->lat[d->n_lat++] = now_ms() - t0;
    }
    return NULL;
}

/* One sync per device before anything is measured: the hub meets each
 * device's certificate and key for the first time (chain check, key table),
 * which a running fleet has long done. */
static void *warm_main(void *arg)
{
    device *d = arg;
    if (sync_once(d))
        d->errors++;
    return NULL;
}

static long warm_up(device *devs, int n)
{
    pthread_t *threads = calloc((size_t)n, sizeof *threads);
    if (!threads)
        abort();
    for (int i = 0; i < n; i++)
        if (pthread_create(&threads[i], NULL, warm_main, &devs[i]))
            abort();
    long errors = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(threads[i], NULL);
        errors += devs[i].errors;
        devs[i].errors = 0;
    }
    free(threads);
    return errors;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* utime + stime of PID in ms, and its VmHWM in KiB. */
static void hub_usage(pid_t pid, double *cpu_ms, long *hwm_kib)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    *cpu_ms = 0;
    *hwm_kib = 0;
    if (f) {
        if (fgets(buf, sizeof buf, f)) {
            char *p = strrchr(buf, ')');
            unsigned long ut = 0, st = 0;
            if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                            &st) == 2)
                *cpu_ms = (double)(ut + st) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
        }
        fclose(f);
    }
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (f) {
        while (fgets(buf, sizeof buf, f))
            if (!strncmp(buf, "VmHWM:", 6))
                *hwm_kib = atol(buf + 6);
        fclose(f);
    }
}

/* CPU ms used so far by this process (all the simulated devices). */
static double self_cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static el_client *admin_client;   /* reads /metrics between phases */

/* The hub's store commits and the writes they held, from /metrics. */
static void store_counters(double *commits, double *writes)
{
    el_http_msg resp;
    el_error err = {0};
    el_http_msg_init(&resp);
    *commits = *writes = 0;
    if (admin_client &&
        !el_client_request(admin_client, "GET", "/metrics", NULL, NULL, 0, &resp, &err) &&
        resp.status == 200) {
        const char *c = strstr((const char *)resp.body, "\nedgeloop_hub_store_commits_total ");
        const char *w = strstr((const char *)resp.body, "\nedgeloop_hub_store_writes_total ");
        if (c)
            *commits = atof(c + strlen("\nedgeloop_hub_store_commits_total "));
        if (w)
            *writes = atof(w + strlen("\nedgeloop_hub_store_writes_total "));
    }
    el_http_msg_finish(&resp);
}

static long run_phase(device *devs, int n, int seconds, const char *label, int json)
{
    atomic_store(&phase_stop, 0);
    for (int i = 0; i < n; i++) {
        devs[i].n_lat = 0;
        devs[i].errors = 0;
        devs[i].created = 0;
    }
    double cpu0, cpu1, self0 = self_cpu_ms(), self1, commits0, writes0, commits1, writes1;
    long hwm;
    store_counters(&commits0, &writes0);
    hub_usage(fleet.hub_pid, &cpu0, &hwm);
    pthread_t *threads = calloc((size_t)n, sizeof *threads);
    double t0 = now_ms();
    for (int i = 0; i < n; i++)
        if (pthread_create(&threads[i], NULL, device_main, &devs[i]))
            abort();
    /* the phase may end early (full+new: a device is out of deltas) */
    while (!atomic_load(&phase_stop) && now_ms() - t0 < seconds * 1e3)
        usleep(20000);
    atomic_store(&phase_stop, 1);
    for (int i = 0; i < n; i++)
        pthread_join(threads[i], NULL);
    double wall = (now_ms() - t0) / 1e3;
    free(threads);
    hub_usage(fleet.hub_pid, &cpu1, &hwm);
    self1 = self_cpu_ms();
    store_counters(&commits1, &writes1);
    double per_commit = commits1 > commits0 ? (writes1 - writes0) / (commits1 - commits0) : 0;
    size_t total = 0;
    long errors = 0, created = 0;
    for (int i = 0; i < n; i++) {
        total += devs[i].n_lat;
        errors += devs[i].errors;
        created += devs[i].created;
    }
    double *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < devs[i].n_lat; j++)
            all[k++] = devs[i].lat[j];
    qsort(all, total, sizeof *all, cmp_double);
    double p50 = total ? all[total / 2] : 0, p99 = total ? all[(total * 99) / 100] : 0;
    free(all);
    double rate = (double)total / wall;
    double cpu_per = total ? (cpu1 - cpu0) / (double)total : 0;
    double self_per = total ? (self1 - self0) / (double)total : 0;
    if (json)
        printf("{\"mode\":\"%s\",\"seconds\":%.1f,\"syncs\":%zu,\"syncs_per_s\":%.1f,"
               "\"handshakes_per_s\":%.1f,"
               "\"p50_ms\":%.1f,\"p99_ms\":%.1f,\"errors\":%ld,\"new_deltas\":%ld,"
               "\"hub_cpu_ms_per_sync\":%.2f,\"client_cpu_ms_per_sync\":%.2f,"
               "\"hub_peak_rss_mib\":%.1f,\"writes_per_commit\":%.2f}\n",
               label, wall, total, rate, rate, p50, p99, errors, created, cpu_per, self_per,
               (double)hwm / 1024.0, per_commit);
    else
        printf("%-8s %5.1f %7zu %8.1f %13.1f %8.1f %8.1f %7ld %6ld %10.2f %10.2f %8.1f %7.2f\n",
               label, wall, total, rate, rate, p50, p99, errors, created, cpu_per, self_per,
               (double)hwm / 1024.0, per_commit);
    fflush(stdout);
    return errors;
}

static void usage(void)
{
    printf("usage: bench-hub --hub PATH [--devices N] [--seconds S] [--deltas K] [--workers W]\n"
           "                 [--json]\n"
           "  N simulated devices (default 200) sync for S seconds (default 10) per phase:\n"
           "  full+new (full handshakes, every upload a new delta; ends early when a\n"
           "  device has used its K pre-made deltas, default %d), full (full handshakes,\n"
           "  the newest delta re-sent), resumed (session resumption, re-sent). Exit 1\n"
           "  on any error or when a bundle is not stored exactly once.\n",
           DELTAS_DEFAULT);
}

int main(int argc, char **argv)
{
    const char *hub = NULL;
    int n = 200, seconds = 10, workers = EL_HUB_DEFAULT_WORKERS, json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--hub") && i + 1 < argc)
            hub = argv[++i];
        else if (!strcmp(argv[i], "--devices") && i + 1 < argc)
            n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--deltas") && i + 1 < argc)
            deltas_per_device = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--workers") && i + 1 < argc)
            workers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--help")) {
            usage();
            return 0;
        } else {
            usage();
            return 1;
        }
    }
    if (!hub || n < 1 || n > 2000 || seconds < 1 || workers < 1 || deltas_per_device < 1 ||
        deltas_per_device > DELTAS_MAX) {
        usage();
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    el_fleetkit_init(&fleet, NULL, 0);
    int64_t now = fleet.now;
    device *devs = calloc((size_t)n, sizeof *devs);
    el_fleetkit_issue(&fleet, "admin", "ops", "admin", NULL, now - DAY, now + 30 * DAY, 0, NULL);
    for (int i = 0; i < n; i++) {
        device *d = &devs[i];
        snprintf(d->name, sizeof d->name, "dev%d", i);
        snprintf(d->cn, sizeof d->cn, "device-%04d", i);
        el_fleetkit_issue(&fleet, d->name, d->cn, "device", i % 2 ? "line-a" : "line-b",
                          now - DAY, now + 30 * DAY, 0, NULL);
        d->bundles = calloc((size_t)deltas_per_device, sizeof *d->bundles);
        d->lens = calloc((size_t)deltas_per_device, sizeof *d->lens);
        d->ids = calloc((size_t)deltas_per_device, sizeof *d->ids);
        if (!d->bundles || !d->lens || !d->ids)
            abort();
        el_delta_set prev = {0};
        for (int k = 0; k < deltas_per_device; k++) {
            /* a lossy chain continues from what the hub rebuilt */
            el_delta_set next = {0}, rebuilt = {0};
            el_fleetkit_adapter(&next, 64, 2, 0.02f, (uint64_t)i * 1000 + (uint64_t)k);
            el_fleetkit_delta(&fleet, d->name, &next, k ? &prev : NULL, EL_DELTA_Q8,
                              &d->bundles[k], &d->lens[k], d->ids[k], &rebuilt);
            el_delta_set_finish(&next);
            el_delta_set_finish(&prev);
            prev = rebuilt;
        }
        el_delta_set_finish(&prev);
    }
    char wbuf[16];
    snprintf(wbuf, sizeof wbuf, "%d", workers);
    const char *extra[] = {"--workers", wbuf, NULL};
    if (el_fleetkit_start_hub(&fleet, hub, extra, NULL)) {
        fprintf(stderr, "bench-hub: the hub did not start (log %s)\n", fleet.hub_log);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        el_client_opts o;
        el_error err = {0};
        el_fleetkit_client_opts(&fleet, devs[i].name, &o, devs[i].paths, sizeof devs[i].paths);
        /* a shared, loaded machine: only a real failure should count */
        o.timeout_ms = 60000;
        devs[i].key = el_fleetkit_key(&fleet, devs[i].name);
        if (el_client_create(&o, &devs[i].client, &err)) {
            fprintf(stderr, "bench-hub: %s\n", err.msg);
            return 1;
        }
    }
    static char metrics_paths[2100];
    el_client_opts mo;
    el_error merr = {0};
    el_fleetkit_client_opts(&fleet, "admin", &mo, metrics_paths, sizeof metrics_paths);
    mo.timeout_ms = 60000;
    if (el_client_create(&mo, &admin_client, &merr))
        fprintf(stderr, "bench-hub: no /metrics: %s\n", merr.msg);
    if (!json) {
        printf("hub bench: %d devices, %d s per phase, %d hub workers, %d deltas per device, "
               "delta %zu bytes (lora-delta-q8)\n",
               n, seconds, workers, deltas_per_device, devs[0].lens[0]);
        printf("phase     secs   syncs  syncs/s  handshakes/s   p50 ms   p99 ms  errors    new"
               "    hub CPU client CPU  hub RSS  writes/\n"
               "                                                                       deltas"
               "    ms/sync    ms/sync      MiB   commit\n");
    }
    full_handshake = 1;
    upload_new = 1;
    long errors = warm_up(devs, n);
    errors += run_phase(devs, n, seconds, "full+new", json);
    upload_new = 0;
    errors += run_phase(devs, n, seconds, "full", json);
    full_handshake = 0;
    errors += run_phase(devs, n, seconds, "resumed", json);

    /* every bundle a device sent is stored exactly once */
    long sent = 0;
    for (int i = 0; i < n; i++)
        sent += devs[i].next_delta;
    char apaths[2100];
    el_client_opts o;
    el_client *admin = NULL;
    el_error err = {0};
    el_http_msg resp;
    el_http_msg_init(&resp);
    el_fleetkit_client_opts(&fleet, "admin", &o, apaths, sizeof apaths);
    long stored = -1, dupes = 0;
    if (!el_client_create(&o, &admin, &err) &&
        !el_client_request(admin, "GET", "/v1/versions", NULL, NULL, 0, &resp, &err) &&
        resp.status == 200) {
        json_t *doc = json_loads((const char *)resp.body, 0, NULL);
        json_t *arr = json_object_get(doc, "versions");
        stored = (long)json_array_size(arr);
        json_t *seen = json_object();
        for (size_t i = 0; i < json_array_size(arr); i++) {
            const char *id = json_string_value(json_object_get(json_array_get(arr, i), "id"));
            if (json_object_get(seen, id))
                dupes++;
            json_object_set_new(seen, id, json_true());
        }
        json_decref(seen);
        json_decref(doc);
    }
    el_http_msg_finish(&resp);
    el_client_destroy(admin);
    el_client_destroy(admin_client);
    int ok = errors == 0 && stored == sent && dupes == 0;
    if (json)
        printf("{\"bundles_sent\":%ld,\"bundles_stored\":%ld,\"duplicates\":%ld,\"ok\":%s}\n",
               sent, stored, dupes, ok ? "true" : "false");
    else
        printf("bundles: %ld distinct uploaded, %ld stored, %ld duplicates -> %s\n", sent,
               stored, dupes, ok ? "ok" : "FAILED");
    for (int i = 0; i < n; i++) {
        el_client_destroy(devs[i].client);
        el_crypto_key_destroy(devs[i].key);
        for (int k = 0; k < deltas_per_device; k++)
            el_free(devs[i].bundles[k]);
        free(devs[i].bundles);
        free(devs[i].lens);
        free(devs[i].ids);
        free(devs[i].lat);
    }
    free(devs);
    el_fleetkit_stop_hub(&fleet, SIGTERM);
    el_fleetkit_finish(&fleet);
    return ok ? 0 : 1;
}
