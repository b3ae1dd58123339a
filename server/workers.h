/*
 * workers.h - a small pool of threads for the work that may wait.
 *
 * Owns: its threads and one bounded queue of jobs (a function and its
 * argument).  The gRPC queue threads (rpc.c) hand it the calls that would
 * wait (for chunks being pinned, for room, for the tier); a worker runs each
 * to the end, however long that takes, so that the queue threads never wait.
 * Never: knows what a job does, or runs one on the submitting thread.
 * Threads and locks: srv_workers_submit and srv_workers_load may be called
 * from any thread at once; srv_workers_start and srv_workers_stop from one
 * thread (the daemon's main thread).  One mutex inside, a leaf: a job runs
 * without it, and nothing is called while it is held.
 */
#ifndef PINPOOL_SRV_WORKERS_H
#define PINPOOL_SRV_WORKERS_H

#include <stddef.h>

typedef struct srv_workers srv_workers_t;

/*
 * Start nthreads threads (1..256) and a queue of up to queue_max jobs that
 * wait for one of them (0: no waiting, a job runs only if a thread is idle).
 * Returns 0 and *out, or an error (-errno) with err; nothing is left running.
 */
int srv_workers_start(srv_workers_t **out, unsigned nthreads, unsigned queue_max, char *err,
                      size_t errlen);

/*
 * Run fn(arg) on a worker: at once when one is idle, else once the jobs
 * queued before it have started.  0, or -EAGAIN when every thread is busy and
 * the queue is full (fn will not run), or -ESHUTDOWN once stopping began.
 */
int srv_workers_submit(srv_workers_t *w, void (*fn)(void *arg), void *arg);

/* Threads, how many run a job now, and how many jobs wait (for messages). */
void srv_workers_load(srv_workers_t *w, unsigned *threads, unsigned *busy, unsigned *queued,
                      unsigned *queue_max);

/* Refuse new jobs, let every queued and running one finish, join the
 * threads and free w.  NULL is a no-op. */
void srv_workers_stop(srv_workers_t *w);

#endif
