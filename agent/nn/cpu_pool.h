/* A small fixed pool of worker threads for the cpu backend's own loops.
 *
 * Why a pthread pool and not OpenMP: the matmuls already run on OpenBLAS's
 * pthread build, whose threads are not OpenMP threads; a second runtime
 * (libgomp) would spin its own workers against them. A pool of our own is
 * ~200 lines, has no spin-waiting (workers sleep on a condition variable),
 * and lets each op decide from its size whether threads pay at all.
 *
 * Invariants:
 *  1. el_nn_pool_run() returns only after every task ran exactly once.
 *  2. The calling thread takes part (as worker 0); worker ids are
 *     0 .. el_nn_pool_size() - 1, so callers can index per-worker scratch.
 *  3. Tasks are handed out in index order from one atomic counter, so a
 *     task must not depend on which worker runs it. Ops that reduce combine
 *     per-task (not per-worker) partial results, which keeps their results
 *     independent of the thread count.
 *  4. A run never waits for a sleeping worker: workers that wake after the
 *     caller has taken the last task do not join it (on a busy machine the
 *     caller may run everything itself).
 *  5. One run at a time: a pool is used by one thread (the backend's owner)
 *     and a task must not call el_nn_pool_run() itself.
 */
#ifndef EL_NN_CPU_POOL_H
#define EL_NN_CPU_POOL_H

#include <stddef.h>

#include "base/error.h"

typedef struct el_nn_pool el_nn_pool;

/* Runs task number TASK on worker WORKER. */
typedef void (*el_nn_pool_fn)(void *ctx, size_t task, int worker);

/* Creates a pool that runs tasks on THREADS threads in all (the caller plus
 * THREADS - 1 workers); THREADS <= 1 gives a pool that runs everything on the
 * caller. Returns 0 and *OUT (caller destroys), or EL_ENOMEM/EL_EINTERNAL
 * with *OUT NULL. */
int el_nn_pool_create(int threads, el_nn_pool **out, el_error *err);

/* Stops and joins the workers. Accepts NULL. */
void el_nn_pool_destroy(el_nn_pool *pool);

/* Number of threads that run tasks (>= 1). */
int el_nn_pool_size(const el_nn_pool *pool);

/* Runs FN(CTX, i, worker) for every i in [0, NTASKS) and returns when all
 * are done. POOL may be NULL (everything runs on the caller). */
void el_nn_pool_run(el_nn_pool *pool, size_t ntasks, el_nn_pool_fn fn,
                    void *ctx);

#endif
