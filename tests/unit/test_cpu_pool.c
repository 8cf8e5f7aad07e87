/* The cpu backend's worker pool (agent/nn/cpu_pool.h): every task runs
 * exactly once per run, worker ids stay in range, runs follow each other
 * without losing or repeating tasks, and creation failures clean up. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "base/alloc.h"
#include "check.h"
#include "nn/cpu_pool.h"

struct count_ctx {
    size_t ntasks;
    atomic_int *hits;        /* per task */
    atomic_int bad_worker;
    int nworkers;
    atomic_int used[8];      /* per worker id: ran at least one task */
};

static void count_task(void *p, size_t task, int worker)
{
    struct count_ctx *c = p;
    if (task >= c->ntasks || worker < 0 || worker >= c->nworkers) {
        atomic_fetch_add(&c->bad_worker, 1);
        return;
    }
    atomic_fetch_add(&c->hits[task], 1);
    atomic_store(&c->used[worker], 1);
}

/* Runs NTASKS tasks REPEAT times on POOL; returns 1 when each ran exactly
 * REPEAT times with valid worker ids. */
static int run_counted(el_nn_pool *pool, size_t ntasks, int repeat, int *workers_used)
{
    struct count_ctx c = {.ntasks = ntasks, .nworkers = el_nn_pool_size(pool)};
    c.hits = calloc(ntasks ? ntasks : 1, sizeof *c.hits);
    for (int r = 0; r < repeat; r++)
        el_nn_pool_run(pool, ntasks, count_task, &c);
    int ok = atomic_load(&c.bad_worker) == 0;
    for (size_t i = 0; i < ntasks; i++)
        ok &= atomic_load(&c.hits[i]) == repeat;
    if (workers_used) {
        *workers_used = 0;
        for (int w = 0; w < c.nworkers && w < 8; w++)
            *workers_used += atomic_load(&c.used[w]);
    }
    free(c.hits);
    return ok;
}

/* Rendezvous: each task waits until all of them have started, which only
 * happens when they run on distinct threads at once. The 30 s limit only
 * turns a broken pool into a failure instead of a hang. */
struct meet_ctx {
    int n;
    atomic_int arrived;
    atomic_int met;
};

static void meet_task(void *p, size_t task, int worker)
{
    struct meet_ctx *c = p;
    atomic_fetch_add(&c->arrived, 1);
    struct timespec pause = {0, 100000};
    for (int i = 0; i < 300000 && atomic_load(&c->arrived) < c->n; i++)
        nanosleep(&pause, NULL);
    if (atomic_load(&c->arrived) == c->n)
        atomic_fetch_add(&c->met, 1);
}

int main(void)
{
    el_error err = {0};
    el_nn_pool *pool = NULL;

    /* NULL pool and 1-thread pools run on the caller */
    CHECK(run_counted(NULL, 100, 1, NULL));
    CHECK_OK(el_nn_pool_create(1, &pool, &err), &err);
    CHECK(el_nn_pool_size(pool) == 1);
    int used = 0;
    CHECK(run_counted(pool, 1000, 3, &used));
    CHECK(used == 1);
    el_nn_pool_destroy(pool);
    CHECK_OK(el_nn_pool_create(0, &pool, &err), &err);
    CHECK(el_nn_pool_size(pool) == 1);
    el_nn_pool_destroy(pool);

    /* 4 threads: zero, one and many tasks; many short runs back to back
     * (a lost wake-up or a worker still in the previous run shows up as a
     * task counted twice or never, or as a hang) */
    CHECK_OK(el_nn_pool_create(4, &pool, &err), &err);
    CHECK(el_nn_pool_size(pool) == 4);
    CHECK(run_counted(pool, 0, 5, NULL));
    CHECK(run_counted(pool, 1, 5, NULL));
    CHECK(run_counted(pool, 3, 2000, NULL));
    CHECK(run_counted(pool, 100003, 3, NULL));

    /* the 4 threads really run at once */
    struct meet_ctx meet = {.n = 4};
    el_nn_pool_run(pool, 4, meet_task, &meet);
    CHECK_MSG(atomic_load(&meet.met) == 4, "%d of 4 tasks met", atomic_load(&meet.met));
    el_nn_pool_destroy(pool);
    el_nn_pool_destroy(NULL);

    /* every allocation failure during creation is reported and cleaned up
     * (the sanitizer build checks for leaks) */
    int failures = 0;
    for (long n = 1; n <= 8; n++) {
        el_alloc_fail_after(n);
        el_error e = {0};
        int rc = el_nn_pool_create(3, &pool, &e);
        el_alloc_fail_reset();
        if (rc) {
            failures++;
            CHECK(rc == EL_ENOMEM && pool == NULL && e.msg[0]);
        } else {
            CHECK(run_counted(pool, 50, 2, NULL));
            el_nn_pool_destroy(pool);
        }
    }
    CHECK(failures >= 1);
    return el_test_done("test_cpu_pool");
}
