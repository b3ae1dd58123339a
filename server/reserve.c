/*
 * reserve.c - the emergency reserve and the headroom check (see reserve.h).
 *
 * Owns: the one reserve block of the process (R.block), and what the last
 * headroom check found.  Process-wide on purpose: libev's allocator is a
 * plain function without an argument, and the heap it guards is the
 * process's.
 * Never: allocates on the path that reports a failure (the messages are
 * formatted into the caller's buffer), or waits, except the libev allocator's
 * retries (the event loop's thread, when nothing else is left).
 * Locking: R.lock (a leaf) around taking and giving back the block; the
 * check's results are atomics, refreshed at most every CHECK_NS by whichever
 * thread asks first.
 * The headroom under a limit: limit - what the kernel counts against it
 * (/proc/self/statm: data for RLIMIT_DATA, size for RLIMIT_AS) + what malloc
 * holds free inside the heap already (mallinfo2's fordblks: glibc rarely
 * gives memory back, so after objects are removed the process stays as large
 * as it was, but that memory is reused).
 */
#include "reserve.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "log.h"
#include "pool.h"

#define CHECK_NS 10000000ull   /* a headroom check at most every 10 ms */
#define REFILL_NS 50000000ull  /* a spent reserve is tried again at most every 50 ms */

static struct {
    pthread_mutex_t lock;
    void *block;              /* NULL once spent (or with no reserve) */
    uint64_t bytes;           /* (fixed after srv_reserve_start) 0: off */
    atomic_bool spent;
    atomic_uint_fast64_t next_check, next_refill;
    atomic_bool limit_short;  /* the last check found less than bytes of headroom */
    atomic_uint_fast64_t used, limit; /* what it found, for the message */
    atomic_int which;         /* 0: RLIMIT_DATA, 1: RLIMIT_AS */
} R = {.lock = PTHREAD_MUTEX_INITIALIZER};

static uint64_t now_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* A block of n bytes that is really there (touched), or NULL. */
static void *take(uint64_t n)
{
    void *p = malloc(n);

    if (p != NULL)
        memset(p, 0, n);
    return p;
}

void srv_reserve_start(uint64_t bytes)
{
    R.bytes = bytes;
    if (bytes > 0) {
        R.block = take(bytes);
        atomic_store(&R.spent, R.block == NULL);
    }
    ev_set_allocator(srv_reserve_ev_realloc);
}

void srv_reserve_spend(const char *what)
{
    void *p;

    pthread_mutex_lock(&R.lock);
    p = R.block;
    R.block = NULL;
    pthread_mutex_unlock(&R.lock);
    if (R.bytes > 0)
        atomic_store(&R.spent, true);
    atomic_store(&R.next_refill, now_ns() + REFILL_NS);
    free(p);
    if (p != NULL) {
        char sz[32];
        srv_warn("out of memory (%s): the %s emergency reserve is spent; calls that need memory "
                 "are refused until some is free again", what,
                 pool_format_size(R.bytes, sz, sizeof(sz)));
    }
}

/* A spent reserve comes back once twice its size can be had (so that taking
 * it leaves as much again). */
static void try_refill(uint64_t now)
{
    uint64_t due = atomic_load(&R.next_refill);
    void *probe, *block;

    if (now < due || !atomic_compare_exchange_strong(&R.next_refill, &due, now + REFILL_NS))
        return;
    probe = malloc(2 * R.bytes);
    if (probe == NULL)
        return;
    free(probe);
    block = take(R.bytes);
    if (block == NULL)
        return;
    pthread_mutex_lock(&R.lock);
    if (R.block == NULL) {
        R.block = block;
        block = NULL;
    }
    pthread_mutex_unlock(&R.lock);
    free(block);
    atomic_store(&R.spent, false);
    srv_info("memory is available again: the emergency reserve is back");
}

/* Headroom under RLIMIT_DATA and RLIMIT_AS against the reserve's size. */
static void check_limits(uint64_t now)
{
    uint64_t due = atomic_load(&R.next_check);
    unsigned long long pages[7] = {0};
    struct rlimit rl[2];
    bool is_short = false;
    FILE *f;

    if (now < due || !atomic_compare_exchange_strong(&R.next_check, &due, now + CHECK_NS))
        return;
    if (getrlimit(RLIMIT_DATA, &rl[0]) != 0)
        rl[0].rlim_cur = RLIM_INFINITY;
    if (getrlimit(RLIMIT_AS, &rl[1]) != 0)
        rl[1].rlim_cur = RLIM_INFINITY;
    if (rl[0].rlim_cur == RLIM_INFINITY && rl[1].rlim_cur == RLIM_INFINITY) {
        atomic_store(&R.limit_short, false);
        return;
    }
    f = fopen("/proc/self/statm", "re");
    if (f == NULL)
        return;
    int n = fscanf(f, "%llu %llu %llu %llu %llu %llu", &pages[0], &pages[1], &pages[2],
                   &pages[3], &pages[4], &pages[5]);
    fclose(f);
    if (n != 6)
        return;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t counted[2] = {pages[5] * page, pages[0] * page}; /* data, size */
    struct mallinfo2 mi = mallinfo2();
    for (int i = 0; i < 2 && !is_short; i++) {
        if (rl[i].rlim_cur == RLIM_INFINITY)
            continue;
        uint64_t lim = (uint64_t)rl[i].rlim_cur;
        uint64_t room = (lim > counted[i] ? lim - counted[i] : 0) + (uint64_t)mi.fordblks;
        if (room < R.bytes) {
            is_short = true;
            atomic_store(&R.used, counted[i] - (counted[i] > mi.fordblks ? mi.fordblks : 0));
            atomic_store(&R.limit, lim);
            atomic_store(&R.which, i);
        }
    }
    atomic_store(&R.limit_short, is_short);
}

bool srv_reserve_short(char *msg, size_t msglen)
{
    char a[32], b[32], c[32];
    uint64_t now;

    if (R.bytes == 0)
        return false;
    now = now_ns();
    if (atomic_load(&R.spent))
        try_refill(now);
    if (atomic_load(&R.spent)) {
        snprintf(msg, msglen, "the daemon ran out of memory (an allocation failed and its %s "
                 "emergency reserve is spent): free slices or remove objects, then retry",
                 pool_format_size(R.bytes, a, sizeof(a)));
        return true;
    }
    check_limits(now);
    if (!atomic_load(&R.limit_short))
        return false;
    snprintf(msg, msglen, "the daemon's memory is nearly exhausted: %s in use of its %s %s, "
             "less than the %s it keeps free (--memory-reserve): free slices or remove "
             "objects, then retry", pool_format_size(atomic_load(&R.used), a, sizeof(a)),
             pool_format_size(atomic_load(&R.limit), b, sizeof(b)),
             atomic_load(&R.which) == 0 ? "RLIMIT_DATA" : "RLIMIT_AS",
             pool_format_size(R.bytes, c, sizeof(c)));
    return true;
}

void *srv_reserve_ev_realloc(void *ptr, long size)
{
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    for (int i = 0; i < 50; i++) {
        void *p = realloc(ptr, (size_t)size);
        if (p != NULL)
            return p;
        srv_reserve_spend("the event loop");
        usleep(20000); /* another thread may free some meanwhile */
    }
    return NULL; /* libev aborts: there is nothing left to give it */
}
