/*
 * workers.c - the worker pool (see workers.h).
 *
 * Owns: w->threads and the ring of queued jobs.  A job is taken off the ring
 * by the first idle thread; the ring holds at most queue_max jobs beyond
 * the ones running, so that a flood of waiting calls costs a bounded amount
 * of memory and every call beyond it is refused at once (-EAGAIN) instead.
 * Never: runs a job on the submitting thread, or holds w->lock while a job runs.
 * Locking: w->lock guards every field below it in struct srv_workers; w->cv
 * wakes idle threads (a job came, or stopping began).  A leaf lock.
 * Threads get 4 MiB stacks (instead of glibc's 8 MiB): a job runs srv_* and
 * tier calls, never deep recursion, and under RLIMIT_DATA/RLIMIT_AS every
 * thread's stack counts.
 */
#include "workers.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORKERS_MAX 256
#define WORKER_STACK (4u << 20)

typedef struct job {
    void (*fn)(void *arg);
    void *arg;
} job_t;

struct srv_workers {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    job_t *ring;          /* queue_max + nthreads slots */
    unsigned cap;         /* slots in ring */
    unsigned head, count; /* jobs not yet taken: ring[head], ... */
    unsigned queue_max;
    unsigned idle;        /* threads waiting for a job */
    unsigned nthreads;    /* started */
    bool stopping;
    pthread_t threads[WORKERS_MAX];
};

static void *worker_main(void *arg)
{
    srv_workers_t *w = arg;

    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (w->count == 0 && !w->stopping) {
            w->idle++;
            pthread_cond_wait(&w->cv, &w->lock);
            w->idle--;
        }
        if (w->count == 0) /* stopping, and nothing left to run */
            break;
        job_t j = w->ring[w->head];
        w->head = (w->head + 1) % w->cap;
        w->count--;
        pthread_mutex_unlock(&w->lock);
        j.fn(j.arg);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int srv_workers_start(srv_workers_t **out, unsigned nthreads, unsigned queue_max, char *err,
                      size_t errlen)
{
    srv_workers_t *w;
    pthread_attr_t attr;
    int rc = 0;

    if (nthreads < 1 || nthreads > WORKERS_MAX) {
        snprintf(err, errlen, "a worker pool has 1 to %d threads, not %u", WORKERS_MAX, nthreads);
        return -EINVAL;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL || (w->ring = calloc((size_t)queue_max + nthreads, sizeof(job_t))) == NULL) {
        free(w);
        snprintf(err, errlen, "out of memory for the worker pool");
        return -ENOMEM;
    }
    w->cap = queue_max + nthreads;
    w->queue_max = queue_max;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cv, NULL);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, WORKER_STACK);
    for (unsigned i = 0; i < nthreads; i++) {
        rc = pthread_create(&w->threads[i], &attr, worker_main, w);
        if (rc != 0) {
            snprintf(err, errlen, "cannot start worker thread %u of %u: %s", i + 1, nthreads,
                     strerror(rc));
            rc = -rc;
            break;
        }
        pthread_mutex_lock(&w->lock);
        w->nthreads++;
        pthread_mutex_unlock(&w->lock);
    }
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        srv_workers_stop(w);
        return rc;
    }
    *out = w;
    return 0;
}

int srv_workers_submit(srv_workers_t *w, void (*fn)(void *arg), void *arg)
{
    int rc = 0;

    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        rc = -ESHUTDOWN;
    } else if (w->count >= w->idle + w->queue_max) {
        rc = -EAGAIN; /* every idle thread has a job already, and the queue is full */
    } else {
        w->ring[(w->head + w->count) % w->cap] = (job_t){fn, arg};
        w->count++;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

void srv_workers_load(srv_workers_t *w, unsigned *threads, unsigned *busy, unsigned *queued,
                      unsigned *queue_max)
{
    pthread_mutex_lock(&w->lock);
    *threads = w->nthreads;
    *busy = w->nthreads - w->idle;
    *queued = w->count;
    *queue_max = w->queue_max;
    pthread_mutex_unlock(&w->lock);
}

void srv_workers_stop(srv_workers_t *w)
{
    unsigned n;

    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    n = w->nthreads;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->lock);
    for (unsigned i = 0; i < n; i++)
        pthread_join(w->threads[i], NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->lock);
    free(w->ring);
    free(w);
}
