/* tools/bench/matmul: matmul GFLOP/s of each backend next to raw OpenBLAS.
 *
 * For every case (square sizes, then the shapes a LoRA layer's forward and
 * backward multiply) and layout it times cblas_sgemm called directly, the
 * cpu backend, and the vulkan backend with each matmul variant
 * (EDGELOOP_VK_MATMUL=regblock|tiled; only the one named when the variable
 * is already set). Each figure is the best of several runs after a warm-up;
 * raw OpenBLAS and the cpu backend are timed alternately so that load from
 * other processes hits both alike. Every backend's result is compared with
 * OpenBLAS's so a fast wrong kernel shows up as "WRONG".
 *
 * A benchmark prints numbers; it asserts nothing (exit 0 unless the
 * arguments are bad or memory runs out).
 */
#include <cblas.h>
#include <jansson.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "nn/backend.h"
#include "nn/cpu.h"

#define MAX_SIZES 16

typedef struct bench_case {
    char name[32];
    el_matmul_layout layout;
    int M, N, K;
} bench_case;

typedef struct options {
    int quick, json, threads, no_vulkan;
    int nsizes;
    int sizes[MAX_SIZES];
    double min_time;   /* seconds of timed runs per figure (at least) */
} options;

static const char *layout_name(el_matmul_layout l)
{
    return l == EL_MM_NT ? "NT" : l == EL_MM_NN ? "NN" : "TN";
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: matmul [--quick] [--sizes N,N,...] [--threads N] [--min-time S]\n"
            "              [--no-vulkan] [--json]\n"
            "Prints matmul GFLOP/s (NT, NN, TN) of raw OpenBLAS cblas_sgemm, the cpu\n"
            "backend and the vulkan backend (both variants) at square sizes and at\n"
            "LoRA shapes, with a description of the machine.\n"
            "  --quick        small sizes only (128, 256; small LoRA shapes)\n"
            "  --sizes LIST   square sizes, default 256,512,1024,2048\n"
            "  --threads N    cpu threads (default: all usable cores)\n"
            "  --min-time S   seconds of timed runs per figure (default 0.3; more runs\n"
            "                 give the best-of a better chance on a busy machine)\n"
            "  --no-vulkan    time raw OpenBLAS and the cpu backend only\n"
            "  --json         one JSON object instead of the table\n"
            "Environment: EDGELOOP_VK_MATMUL=regblock|tiled times only that variant.\n");
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    int custom_sizes = 0, custom_time = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--quick")) {
            o->quick = 1;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (!strcmp(a, "--min-time") && i + 1 < argc) {
            char *end;
            double t = strtod(argv[++i], &end);
            if (*end || !(t >= 0.0 && t <= 60.0)) {
                fprintf(stderr, "matmul: --min-time wants 0..60 seconds, got \"%s\"\n",
                        argv[i]);
                return -1;
            }
            o->min_time = t;
            custom_time = 1;
        } else if (!strcmp(a, "--no-vulkan")) {
            o->no_vulkan = 1;
        } else if (!strcmp(a, "--threads") && i + 1 < argc) {
            char *end;
            long t = strtol(argv[++i], &end, 10);
            if (*end || t < 0 || t > 64) {
                fprintf(stderr, "matmul: --threads wants 0..64, got \"%s\"\n", argv[i]);
                return -1;
            }
            o->threads = (int)t;
        } else if (!strcmp(a, "--sizes") && i + 1 < argc) {
            const char *s = argv[++i];
            custom_sizes = 1;
            while (*s) {
                char *end;
                long n = strtol(s, &end, 10);
                if (end == s || n < 1 || n > 8192 || (*end && *end != ',')) {
                    fprintf(stderr, "matmul: bad --sizes \"%s\" (want N,N,... in 1..8192)\n",
                            argv[i]);
                    return -1;
                }
                if (o->nsizes == MAX_SIZES) {
                    fprintf(stderr, "matmul: at most %d sizes\n", MAX_SIZES);
                    return -1;
                }
                o->sizes[o->nsizes++] = (int)n;
                s = *end ? end + 1 : end;
            }
        } else {
            fprintf(stderr, "matmul: unknown argument \"%s\"\n", a);
            usage(stderr);
            return -1;
        }
    }
    if (!custom_sizes) {
        static const int full[] = {256, 512, 1024, 2048}, quick[] = {128, 256};
        const int *src = o->quick ? quick : full;
        o->nsizes = o->quick ? 2 : 4;
        memcpy(o->sizes, src, (size_t)o->nsizes * sizeof *src);
    }
    if (!custom_time)
        o->min_time = o->quick ? 0.05 : 0.3;
    return 0;
}

/* The square cases, then a LoRA layer of rank R on T tokens of width D:
 * forward x.A^T (NT) and u.B^T (NT); backward dU = dY.B (NN),
 * dA = dU^T.x (TN), dx += dU.A (NN), dB = dY^T.u (TN). */
static int make_cases(const options *o, bench_case *cases, int max)
{
    int n = 0;
    for (int i = 0; i < o->nsizes; i++)
        for (int l = EL_MM_NT; l <= EL_MM_TN && n < max; l++) {
            bench_case *c = &cases[n++];
            snprintf(c->name, sizeof c->name, "square-%d", o->sizes[i]);
            c->layout = (el_matmul_layout)l;
            c->M = c->N = c->K = o->sizes[i];
        }
    int T = o->quick ? 512 : 4096, D = o->quick ? 256 : 2048, R = 16;
    const struct {
        const char *name;
        el_matmul_layout layout;
        int M, N, K;
    } lora[] = {
        {"lora-xA^T", EL_MM_NT, T, R, D},
        {"lora-uB^T", EL_MM_NT, T, D, R},
        {"lora-dU=dY.B", EL_MM_NN, T, R, D},
        {"lora-dA=dU^T.x", EL_MM_TN, R, D, T},
        {"lora-dx=dU.A", EL_MM_NN, T, D, R},
        {"lora-dB=dY^T.u", EL_MM_TN, D, R, T},
    };
    for (size_t i = 0; i < sizeof lora / sizeof lora[0] && n < max; i++) {
        bench_case *c = &cases[n++];
        snprintf(c->name, sizeof c->name, "%s", lora[i].name);
        c->layout = lora[i].layout;
        c->M = lora[i].M, c->N = lora[i].N, c->K = lora[i].K;
    }
    return n;
}

static void raw_sgemm(const bench_case *c, const float *A, const float *B, float *C)
{
    int M = c->M, N = c->N, K = c->K;
    switch (c->layout) {
    case EL_MM_NT:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K,
                    0.0f, C, N);
        break;
    case EL_MM_NN:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, K, B, N,
                    0.0f, C, N);
        break;
    case EL_MM_TN:
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, 1.0f, A, M, B, N,
                    0.0f, C, N);
        break;
    }
}

/* A backend under test with its inputs uploaded. */
typedef struct bench_backend {
    el_backend *be;
    el_tensor *a, *b, *c;
} bench_backend;

static int bb_setup(bench_backend *bb, const bench_case *c, const float *A,
                    const float *B, el_error *err)
{
    size_t na = (size_t)c->M * c->K, nb = (size_t)c->N * c->K, nc = (size_t)c->M * c->N;
    bb->a = el_nn_tensor_create(bb->be, EL_F32, na, err);
    bb->b = bb->a ? el_nn_tensor_create(bb->be, EL_F32, nb, err) : NULL;
    bb->c = bb->b ? el_nn_tensor_create(bb->be, EL_F32, nc, err) : NULL;
    if (!bb->c)
        return err->code ? err->code : EL_ENOMEM;
    int rc = el_nn_write(bb->be, el_nn_whole(bb->a), A, err);
    if (!rc)
        rc = el_nn_write(bb->be, el_nn_whole(bb->b), B, err);
    return rc;
}

static void bb_release(bench_backend *bb)
{
    el_nn_tensor_destroy(bb->be, bb->a);
    el_nn_tensor_destroy(bb->be, bb->b);
    el_nn_tensor_destroy(bb->be, bb->c);
    bb->a = bb->b = bb->c = NULL;
}

/* One timed matmul (issue + wait). Returns seconds, or -1 with ERR set. */
static double bb_time(bench_backend *bb, const bench_case *c, el_error *err)
{
    double t0 = now();
    int rc = el_nn_matmul(bb->be, c->layout, c->M, c->N, c->K, 1.0f, el_nn_whole(bb->a),
                          el_nn_whole(bb->b), 0.0f, el_nn_whole(bb->c), err);
    if (!rc)
        rc = el_nn_sync(bb->be, err);
    return rc ? -1.0 : now() - t0;
}

/* Worst |x - ref| / (max |ref| + tiny): the backends must agree with
 * OpenBLAS to fp32 accumulation error. */
static double diff(const float *x, const float *ref, size_t n)
{
    double worst = 0, mag = 1e-30;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs((double)x[i] - ref[i]));
        mag = fmax(mag, fabs((double)ref[i]));
    }
    return worst / mag;
}

#define WRONG_BOUND 1e-4

typedef struct result {
    double blas, cpu;           /* GFLOP/s, < 0: failed */
    double ratio;               /* median of paired raw/cpu times, < 0: none */
    double vk[2];               /* per variant; < 0: failed or absent */
    int cpu_wrong, vk_wrong[2];
    char vk_error[2][EL_ERROR_MSG_MAX];
} result;

static double gflops(const bench_case *c, double seconds)
{
    return 2.0 * c->M * c->N * (double)c->K / seconds * 1e-9;
}

#define MAX_PAIRS 512

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Best-of timing of raw OpenBLAS and the cpu backend, run as pairs back to
 * back (which one goes first alternates). The cpu/blas ratio is the median
 * over pairs of raw time / cpu time: both halves of a pair see about the
 * same load, so the ratio is steadier than the ratio of two best-ofs. */
static void time_cpu(const options *o, const bench_case *c, bench_backend *cpu,
                     const float *A, const float *B, float *Cref, float *Cout,
                     result *r)
{
    el_error err = {0};
    size_t nc = (size_t)c->M * c->N;
    r->blas = r->cpu = r->ratio = -1;
    if (bb_setup(cpu, c, A, B, &err)) {
        fprintf(stderr, "matmul: cpu backend: %s\n", err.msg);
        bb_release(cpu);
        return;
    }
    /* warm-up (page faults, OpenBLAS buffers), and the reference result */
    raw_sgemm(c, A, B, Cref);
    double best_raw = 1e30, best_cpu = 1e30, spent = 0;
    double ratios[MAX_PAIRS];
    int npairs = 0;
    int ok = bb_time(cpu, c, &err) >= 0;
    for (int rep = 0; ok && (rep < 3 || spent < o->min_time) && rep < MAX_PAIRS; rep++) {
        double tc = 0, traw;
        if (rep % 2)
            tc = bb_time(cpu, c, &err);
        double t0 = now();
        raw_sgemm(c, A, B, Cref);
        traw = now() - t0;
        if (rep % 2 == 0)
            tc = bb_time(cpu, c, &err);
        ok = tc >= 0;
        if (!ok)
            break;
        best_raw = fmin(best_raw, traw);
        best_cpu = fmin(best_cpu, tc);
        ratios[npairs++] = traw / tc;
        spent += traw + tc;
    }
    if (npairs) {
        qsort(ratios, (size_t)npairs, sizeof ratios[0], cmp_double);
        r->ratio = npairs % 2 ? ratios[npairs / 2]
                              : 0.5 * (ratios[npairs / 2 - 1] + ratios[npairs / 2]);
    }
    r->blas = gflops(c, best_raw);
    if (!ok) {
        fprintf(stderr, "matmul: cpu backend: %s\n", err.msg);
    } else {
        r->cpu = gflops(c, best_cpu);
        if (el_nn_read(cpu->be, el_nn_whole(cpu->c), Cout, &err) == 0)
            r->cpu_wrong = diff(Cout, Cref, nc) > WRONG_BOUND;
    }
    bb_release(cpu);
}

static void time_vulkan(const options *o, const bench_case *c, bench_backend *vk,
                        int variant, const float *A, const float *B, const float *Cref,
                        float *Cout, result *r)
{
    el_error err = {0};
    size_t nc = (size_t)c->M * c->N;
    r->vk[variant] = -1;
    if (bb_setup(vk, c, A, B, &err)) {
        snprintf(r->vk_error[variant], sizeof r->vk_error[variant], "%s", err.msg);
        bb_release(vk);
        return;
    }
    /* warm-up: pipeline creation, first touch of the buffers; a slow
     * device (lavapipe at 2048) gets one timed run after a long warm-up */
    double warm = bb_time(vk, c, &err);
    double best = warm < 0 ? -1 : 1e30, spent = 0;
    int min_reps = warm > 1.0 ? 1 : 2;
    for (int rep = 0; best >= 0 && (rep < min_reps || spent < o->min_time) && rep < 500;
         rep++) {
        double t = bb_time(vk, c, &err);
        if (t < 0) {
            best = -1;
            break;
        }
        best = fmin(best, t);
        spent += t;
    }
    if (best < 0) {
        snprintf(r->vk_error[variant], sizeof r->vk_error[variant], "%s", err.msg);
    } else {
        r->vk[variant] = gflops(c, best);
        if (el_nn_read(vk->be, el_nn_whole(vk->c), Cout, &err) == 0)
            r->vk_wrong[variant] = diff(Cout, Cref, nc) > WRONG_BOUND;
    }
    bb_release(vk);
}

/* ---- machine description ---- */

static void cpu_model(char *out, size_t size)
{
    snprintf(out, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "model name", 10)) {
            const char *v = strchr(line, ':');
            if (v) {
                v++;
                while (*v == ' ' || *v == '\t')
                    v++;
                snprintf(out, size, "%.*s", (int)strcspn(v, "\n"), v);
            }
            break;
        }
    }
    fclose(f);
}

/* "0.52 0.61 0.70" from /proc/loadavg: how busy the machine was, so a
 * reader can judge the noise. */
static void load_average(char *out, size_t size)
{
    snprintf(out, size, "unknown");
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f)
        return;
    double a, b, c;
    if (fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3)
        snprintf(out, size, "%.2f %.2f %.2f", a, b, c);
    fclose(f);
}

static int usable_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void fmt_cell(char *out, size_t size, double v, int wrong)
{
    if (v < 0)
        snprintf(out, size, "-");
    else
        snprintf(out, size, "%.1f%s", v, wrong ? " WRONG" : "");
}

static json_t *num_or_null(double v)
{
    return v < 0 ? json_null() : json_real(round(v * 10) / 10);
}

int main(int argc, char **argv)
{
    options o;
    if (parse_args(argc, argv, &o))
        return 1;

    bench_case cases[MAX_SIZES * 3 + 8];
    int ncases = make_cases(&o, cases, (int)(sizeof cases / sizeof cases[0]));

    el_error err = {0};
    bench_backend cpu = {0};
    el_backend_options copts = {.kind = EL_BACKEND_CPU, .threads = o.threads};
    if (el_nn_backend_create(&copts, &cpu.be, &err)) {
        fprintf(stderr, "matmul: cannot create the cpu backend: %s\n", err.msg);
        return 1;
    }

    /* Vulkan variants: both, unless the caller pinned one. */
    const char *pinned = getenv("EDGELOOP_VK_MATMUL");
    const char *variants[2] = {"regblock", "tiled"};
    int nvariants = 2;
    if (pinned && *pinned) {
        variants[0] = pinned;
        nvariants = 1;
    }
    bench_backend vk[2] = {{0}};
    char vk_name[2][160] = {"", ""}, vk_unavailable[EL_ERROR_MSG_MAX] = "";
    if (o.no_vulkan)
        snprintf(vk_unavailable, sizeof vk_unavailable, "not timed (--no-vulkan)");
    for (int v = 0; v < nvariants && !o.no_vulkan; v++) {
        el_error verr = {0};
        setenv("EDGELOOP_VK_MATMUL", variants[v], 1);
        el_backend_options vopts = {.kind = EL_BACKEND_VULKAN, .device_index = -1};
        if (el_nn_backend_create(&vopts, &vk[v].be, &verr)) {
            snprintf(vk_unavailable, sizeof vk_unavailable, "%s", verr.msg);
            vk[v].be = NULL;
            break;
        }
        snprintf(vk_name[v], sizeof vk_name[v], "%s", el_nn_backend_name(vk[v].be));
    }

    char model[256];
    cpu_model(model, sizeof model);
    int cores = usable_cores();
    const char *blas_cfg = openblas_get_config(), *core = openblas_get_corename();
    int blas_threads = openblas_get_num_threads();

    if (!o.json) {
        printf("edgeloop matmul bench: GFLOP/s, the best of the timed runs after a "
               "warm-up\n(>= 3 runs and >= %g s of runs per figure); cpu/blas: the median "
               "over back-to-back\npairs of runs of openblas time / cpu time\n", o.min_time);
        char load[64];
        load_average(load, sizeof load);
        printf("cpu:      %s, %d usable cores, load average %s (1/5/15 min)\n", model, cores,
               load);
        printf("openblas: %s (kernels: %s, %d threads)\n", blas_cfg, core ? core : "?",
               blas_threads);
        printf("backend:  %s\n", el_nn_backend_name(cpu.be));
        const char *hint = el_nn_cpu_blas_coretype_hint();
        if (hint)
            printf("note:     OpenBLAS chose %s kernels on a CPU that runs %s ones; "
                   "try OPENBLAS_CORETYPE=%s\n", core ? core : "?", hint, hint);
        if (o.no_vulkan)
            printf("vulkan:   %s\n", vk_unavailable);
        for (int v = 0; v < nvariants && !o.no_vulkan; v++) {
            if (!vk[v].be) {
                printf("vulkan:   unavailable (EDGELOOP_VK_MATMUL=%s): %s\n", variants[v],
                       vk_unavailable);
                break;
            }
            printf("vulkan:   %s, EDGELOOP_VK_MATMUL=%s\n", vk_name[v], variants[v]);
        }
        printf("\n%-16s %-3s %5s %5s %5s %9s %9s %8s", "case", "lay", "M", "N", "K",
               "openblas", "cpu", "cpu/blas");
        for (int v = 0; v < nvariants; v++)
            printf(" %12s", variants[v]);
        printf("\n");
        fflush(stdout);
    }

    json_t *jresults = json_array();
    for (int i = 0; i < ncases; i++) {
        const bench_case *c = &cases[i];
        size_t na = (size_t)c->M * c->K, nb = (size_t)c->N * c->K, nc = (size_t)c->M * c->N;
        float *A = malloc(na * sizeof *A), *B = malloc(nb * sizeof *B);
        float *Cref = malloc(nc * sizeof *Cref), *Cout = malloc(nc * sizeof *Cout);
        if (!A || !B || !Cref || !Cout) {
            fprintf(stderr, "matmul: out of memory for case %s\n", c->name);
            return 1;
        }
        unsigned s = 12345u + (unsigned)i;
        for (size_t j = 0; j < na; j++)
            A[j] = (float)((s = s * 1103515245u + 12345u) >> 8) / 16777216.0f - 0.5f;
        for (size_t j = 0; j < nb; j++)
            B[j] = (float)((s = s * 1103515245u + 12345u) >> 8) / 16777216.0f - 0.5f;

        result r = {.vk = {-1, -1}};
        time_cpu(&o, c, &cpu, A, B, Cref, Cout, &r);
        for (int v = 0; v < nvariants && vk[v].be; v++) {
            setenv("EDGELOOP_VK_MATMUL", variants[v], 1);
            time_vulkan(&o, c, &vk[v], v, A, B, Cref, Cout, &r);
        }

        if (!o.json) {
            char cells[4][48];
            fmt_cell(cells[0], sizeof cells[0], r.blas, 0);
            fmt_cell(cells[1], sizeof cells[1], r.cpu, r.cpu_wrong);
            if (r.ratio > 0)
                snprintf(cells[2], sizeof cells[2], "%.0f%%", 100.0 * r.ratio);
            else
                snprintf(cells[2], sizeof cells[2], "-");
            printf("%-16s %-3s %5d %5d %5d %9s %9s %8s", c->name, layout_name(c->layout),
                   c->M, c->N, c->K, cells[0], cells[1], cells[2]);
            for (int v = 0; v < nvariants; v++) {
                fmt_cell(cells[3], sizeof cells[3], r.vk[v], r.vk_wrong[v]);
                printf(" %12s", cells[3]);
            }
            printf("\n");
            for (int v = 0; v < nvariants; v++)
                if (r.vk_error[v][0])
                    printf("  vulkan %s: %s\n", variants[v], r.vk_error[v]);
            fflush(stdout);
        }
        json_t *jr = json_pack("{s:s, s:s, s:i, s:i, s:i, s:o, s:o, s:o, s:b}", "case",
                               c->name, "layout", layout_name(c->layout), "M", c->M, "N",
                               c->N, "K", c->K, "openblas_gflops", num_or_null(r.blas),
                               "cpu_gflops", num_or_null(r.cpu), "cpu_vs_openblas_median",
                               r.ratio < 0 ? json_null()
                                           : json_real(round(r.ratio * 1000) / 1000),
                               "cpu_wrong", r.cpu_wrong);
        json_t *jv = json_object();
        for (int v = 0; v < nvariants && vk[v].be; v++) {
            json_object_set_new(jv, variants[v], num_or_null(r.vk[v]));
            if (r.vk_wrong[v])
                json_object_set_new(jr, "vulkan_wrong", json_string(variants[v]));
            if (r.vk_error[v][0])
                json_object_set_new(jr, "vulkan_error", json_string(r.vk_error[v]));
        }
        json_object_set_new(jr, "vulkan_gflops", jv);
        json_array_append_new(jresults, jr);
        free(A), free(B), free(Cref), free(Cout);
    }

    if (o.json) {
        json_t *jvk = json_object();
        if (vk[0].be) {
            json_object_set_new(jvk, "device", json_string(vk_name[0]));
            json_t *jvar = json_array();
            for (int v = 0; v < nvariants && vk[v].be; v++)
                json_array_append_new(jvar, json_string(variants[v]));
            json_object_set_new(jvk, "variants", jvar);
        } else {
            json_object_set_new(jvk, "unavailable", json_string(vk_unavailable));
        }
        json_t *root = json_pack(
            "{s:{s:s, s:i, s:s, s:s, s:i, s:s}, s:o, s:o}", "machine", "cpu", model,
            "cores", cores, "openblas", blas_cfg ? blas_cfg : "?", "openblas_kernels",
            core ? core : "?", "openblas_threads", blas_threads, "cpu_backend",
            el_nn_backend_name(cpu.be), "vulkan", jvk, "results", jresults);
        if (!root) {
            fprintf(stderr, "matmul: cannot build the JSON output\n");
            return 1;
        }
        const char *hint = el_nn_cpu_blas_coretype_hint();
        json_t *jm = json_object_get(root, "machine");
        json_object_set_new(jm, "openblas_coretype_hint", hint ? json_string(hint) : json_null());
        char load[64];
        load_average(load, sizeof load);
        json_object_set_new(jm, "load_average_end", json_string(load));
        json_dumpf(root, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        printf("\n");
        json_decref(root);
    } else {
        char load[64];
        load_average(load, sizeof load);
        printf("\nload average at the end: %s\n", load);
        json_decref(jresults);
    }

    for (int v = 0; v < nvariants; v++)
        el_nn_backend_destroy(vk[v].be);
    el_nn_backend_destroy(cpu.be);
    return 0;
}
