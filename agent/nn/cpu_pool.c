/* Worker pool of the cpu backend; see cpu_pool.h for the invariants.
 *
 * One run is a "generation": el_nn_pool_run() publishes the job under the
 * mutex, opens it, bumps the generation and wakes the workers; every thread
 * that joins (caller included) takes task indexes from an atomic counter
 * until they run out. A worker joins only while the job is open, counted in
 * `joined` under the mutex. When the caller runs out of tasks it closes the
 * job and sleeps on `done` until `joined` is 0: so no worker can still touch
 * the job (or the caller's context) after run returns, and a worker that
 * wakes late (a busy machine) finds the job closed and goes back to sleep
 * instead of making the caller wait for it. */
#include "nn/cpu_pool.h"

#include <pthread.h>
#include <stdatomic.h>

#include "base/alloc.h"

struct el_nn_pool {
    pthread_mutex_t mu;
    pthread_cond_t wake;   /* workers wait for a new generation or stop */
    pthread_cond_t done;   /* the caller waits for joined == 0 */
    pthread_t *workers;
    int nworkers;          /* threads besides the caller */
    int started;           /* workers successfully created */
    int stop;
    unsigned long generation;
    int open;              /* the current job still takes joiners */
    int joined;            /* workers inside the current job */
    /* the current job, valid while open or joined > 0 */
    el_nn_pool_fn fn;
    void *ctx;
    size_t ntasks;
    atomic_size_t next;
};

struct worker_arg {
    el_nn_pool *pool;
    int id;
};

static void drain(el_nn_pool *pool, el_nn_pool_fn fn, void *ctx, size_t ntasks,
                  int worker)
{
    for (;;) {
        size_t i = atomic_fetch_add_explicit(&pool->next, 1, memory_order_relaxed);
        if (i >= ntasks)
            return;
        fn(ctx, i, worker);
    }
}

static void *worker_main(void *p)
{
    el_nn_pool *pool = ((struct worker_arg *)p)->pool;
    int id = ((struct worker_arg *)p)->id;
    el_free(p);
    unsigned long seen = 0;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (!pool->stop && pool->generation == seen)
            pthread_cond_wait(&pool->wake, &pool->mu);
        if (pool->stop)
            break;
        seen = pool->generation;
        if (!pool->open)
            continue;
        pool->joined++;
        el_nn_pool_fn fn = pool->fn;
        void *ctx = pool->ctx;
        size_t ntasks = pool->ntasks;
        pthread_mutex_unlock(&pool->mu);

        drain(pool, fn, ctx, ntasks, id);

        pthread_mutex_lock(&pool->mu);
        if (--pool->joined == 0 && !pool->open)
            pthread_cond_signal(&pool->done);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

int el_nn_pool_create(int threads, el_nn_pool **out, el_error *err)
{
    *out = NULL;
    el_nn_pool *pool = el_calloc(1, sizeof *pool);
    if (!pool)
        return el_error_set(err, EL_ENOMEM, "out of memory for the cpu thread pool");
    pool->nworkers = threads > 1 ? threads - 1 : 0;
    atomic_init(&pool->next, 0);
    if (pthread_mutex_init(&pool->mu, NULL) != 0) {
        el_free(pool);
        return el_error_set(err, EL_EINTERNAL, "cannot create the thread pool's mutex");
    }
    if (pthread_cond_init(&pool->wake, NULL) != 0) {
        pthread_mutex_destroy(&pool->mu);
        el_free(pool);
        return el_error_set(err, EL_EINTERNAL, "cannot create the thread pool's condition");
    }
    if (pthread_cond_init(&pool->done, NULL) != 0) {
        pthread_cond_destroy(&pool->wake);
        pthread_mutex_destroy(&pool->mu);
        el_free(pool);
        return el_error_set(err, EL_EINTERNAL, "cannot create the thread pool's condition");
    }
    if (pool->nworkers == 0) {
        *out = pool;
        return 0;
    }
    pool->workers = el_calloc((size_t)pool->nworkers, sizeof *pool->workers);
    if (!pool->workers) {
        el_nn_pool_destroy(pool);
        return el_error_set(err, EL_ENOMEM, "out of memory for the cpu thread pool");
    }
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker_arg *arg = el_malloc(sizeof *arg);
        if (!arg) {
            el_nn_pool_destroy(pool);
            return el_error_set(err, EL_ENOMEM, "out of memory for the cpu thread pool");
        }
        arg->pool = pool;
        arg->id = i + 1;
        if (pthread_create(&pool->workers[i], NULL, worker_main, arg) != 0) {
            el_free(arg);
            el_nn_pool_destroy(pool);
            return el_error_set(err, EL_EINTERNAL,
                                "cannot start worker thread %d of %d", i + 1, threads);
        }
        pool->started++;
    }
    *out = pool;
    return 0;
}

void el_nn_pool_destroy(el_nn_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->stop = 1;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->started; i++)
        pthread_join(pool->workers[i], NULL);
    pthread_cond_destroy(&pool->done);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mu);
    el_free(pool->workers);
    el_free(pool);
}

int el_nn_pool_size(const el_nn_pool *pool)
{
    return pool ? pool->started + 1 : 1;
}

void el_nn_pool_run(el_nn_pool *pool, size_t ntasks, el_nn_pool_fn fn,
                    void *ctx)
{
    if (ntasks == 0)
        return;
    if (!pool || pool->started == 0 || ntasks == 1) {
        for (size_t i = 0; i < ntasks; i++)
            fn(ctx, i, 0);
        return;
    }
    pthread_mutex_lock(&pool->mu);
    pool->fn = fn;
    pool->ctx = ctx;
    pool->ntasks = ntasks;
    atomic_store_explicit(&pool->next, 0, memory_order_relaxed);
    pool->open = 1;
    pool->joined = 0;
    pool->generation++;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);

    drain(pool, fn, ctx, ntasks, 0);

    pthread_mutex_lock(&pool->mu);
    pool->open = 0;
    while (pool->joined > 0)
        pthread_cond_wait(&pool->done, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
}
