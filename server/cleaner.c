/*
 * cleaner.c - no stale bytes: the thread that zeroes freed host memory.
 *
 * Owns: the cleaner thread and its counters (srv->clean_*).  The host pool is
 * made with dirty_on_free (slices.c): a freed slice, whoever freed it (a
 * client, a session's end, an object dropped or spilled), is not free space
 * but dirty, held by the pool's cleaner, so no allocation can get it.  This
 * thread takes dirty extents a batch at a time (pool_clean_take), zeroes them
 * with the lock released, and makes them free (pool_clean_done).  So a slice
 * never shows bytes that another session freed, and the zeroing stays off the
 * allocation's path as long as clean memory is there: an allocation that
 * finds only dirty memory zeroes a batch itself (do_wait_clean), or waits for
 * the batch another thread is zeroing.  Chunks that get fresh memory
 * for another uid (chunks.c) are clean already.
 * This is CPU memset on the daemon's mapping.  On a GPU node the copy engine
 * could clear pinned host memory at PCIe speed without a CPU core
 * (cuMemsetD8Async on a stream of the daemon's, once its GPU has access to
 * the mapping); that is not done here.
 * Never: touches a dirty extent it did not take, or memory of a chunk that is
 * being replaced (a chunk with dirty extents cannot be claimed), or zeroes
 * with srv->lock held.
 * Scheduling: the thread runs at nice CLEANER_NICE and wakes every
 * CLEAN_POLL_MS, or when freed memory piles up (do_cleaner_kick: more than
 * an eighth of the pool dirty), so that it zeroes in batches, in the
 * background, behind the threads that answer calls (waking it on every free
 * made FreePoolMemory 1.3x slower under churn on two cores: the woken thread
 * took the core of the call being answered).  An allocation that needs the
 * memory does not wait for that: it zeroes a batch itself.
 * Locking (see srv_int.h): do_clean_batch and do_wait_clean are called with
 * srv->lock held and drop it meanwhile; the thread holds it except while it
 * zeroes or waits.  clean_cv wakes the thread; cleaned_cv is broadcast after
 * every batch.
 */
#include "srv_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "pinpool.h"

#define CLEAN_BATCH 16                 /* extents a batch takes at most */
#define CLEAN_BATCH_BYTES (64ull << 20) /* and bytes, once it has one */
#define CLEAN_POLL_MS 20
#define CLEAN_WAIT_MS 200              /* an allocation's wait for one batch, at most */
#define CLEANER_NICE 10

static void deadline_in(struct timespec *ts, uint64_t ms)
{
    uint64_t t = mono_ns() + ms * 1000000ull;

    ts->tv_sec = (time_t)(t / 1000000000u);
    ts->tv_nsec = (long)(t % 1000000000u);
}

bool do_clean_batch(srv_t *srv)
{
    pool_t *host = srv->pools[HOST_POOL];
    pool_dirty_t d[CLEAN_BATCH];
    uint64_t bytes = 0, t0;
    uint32_t n = 0;

    while (n < CLEAN_BATCH && bytes < CLEAN_BATCH_BYTES && pool_clean_take(host, &d[n]) == 0)
        bytes += d[n++].len;
    if (n == 0)
        return false;
    srv->cleaning_now++;
    pthread_mutex_unlock(&srv->lock);
    t0 = mono_ns();
    for (uint32_t i = 0; i < n; i++)
        memset(host_addr(srv, d[i].offset), 0, d[i].len);
    t0 = mono_ns() - t0;
    pthread_mutex_lock(&srv->lock);
    srv->cleaning_now--;
    for (uint32_t i = 0; i < n; i++)
        pool_clean_done(host, d[i].id);
    srv->cleaned_bytes += bytes;
    srv->clean_ns += t0;
    pthread_cond_broadcast(&srv->cleaned_cv);
    return true;
}

void do_cleaner_kick(srv_t *srv)
{
    if (pool_dirty_bytes(srv->pools[HOST_POOL]) > (uint64_t)srv->ready * srv->cfg.chunk_size / 8)
        pthread_cond_signal(&srv->clean_cv);
}

void do_wait_clean(srv_t *srv)
{
    struct timespec ts;

    if (do_clean_batch(srv))
        return;
    /* every dirty extent is in some other thread's batch: wait for it */
    deadline_in(&ts, CLEAN_WAIT_MS);
    pthread_cond_timedwait(&srv->cleaned_cv, &srv->lock, &ts);
}

static void *cleaner_thread(void *arg)
{
    srv_t *srv = arg;
    struct timespec ts;

    /* behind the threads that answer calls (Linux: nice is per thread) */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), CLEANER_NICE) != 0)
        srv_debug("cleaner: cannot lower its priority: %s", strerror(errno));
    pthread_mutex_lock(&srv->lock);
    while (!srv->stop_cleaner) {
        if (do_clean_batch(srv))
            continue;
        deadline_in(&ts, CLEAN_POLL_MS);
        pthread_cond_timedwait(&srv->clean_cv, &srv->lock, &ts);
    }
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}

void srv_cleaner_start(srv_t *srv)
{
    int rc = pthread_create(&srv->cleaner, NULL, cleaner_thread, srv);

    pthread_mutex_lock(&srv->lock);
    srv->cleaner_started = rc == 0;
    pthread_mutex_unlock(&srv->lock);
    if (rc != 0)
        srv_warn("cannot start the cleaner thread (%s): allocations that find only freed "
                 "memory will zero it themselves", strerror(rc));
}

void srv_cleaner_stop(srv_t *srv)
{
    bool started;

    pthread_mutex_lock(&srv->lock);
    started = srv->cleaner_started;
    srv->stop_cleaner = true;
    srv->cleaner_started = false;
    pthread_cond_broadcast(&srv->clean_cv);
    pthread_mutex_unlock(&srv->lock);
    if (started)
        pthread_join(srv->cleaner, NULL);
}
