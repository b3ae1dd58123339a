/*
 * arena_bench.c - alloc+free pairs per second through the client arena
 * (pinpool_arena_*), against a running daemon: bench/run starts one.
 *
 *   arena_bench SOCKET [PAIRS]
 *
 * Two patterns, each with LIVE blocks held (sizes 64 B - 64 KiB, uniform):
 *   churn: free a random live block, allocate a new one in its place;
 *   lifo:  allocate a block and free it at once.
 * Run from 1 thread, then from 3 threads sharing one arena (each holding
 * LIVE / 3 blocks).  Target (DESIGN.md): >= 1,000,000 pairs/s single thread.
 * Owns: its context and arena; never writes outside the blocks it got.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pinpool.h"

#define LIVE 1000
#define MAX_BLOCK (64u << 10)
#define THREADS 3

typedef struct job {
    pinpool_arena_t *arena;
    int live;
    long pairs;
    int lifo;
    uint32_t seed;
    long failures;
} job_t;

static double now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint32_t next(uint32_t *r)
{
    *r = *r * 1103515245u + 12345u;
    return *r >> 4;
}

static void *run_job(void *arg)
{
    job_t *j = arg;
    void **live = calloc((size_t)j->live, sizeof(*live));
    uint32_t r = j->seed;

    for (int i = 0; i < j->live; i++)
        if (pinpool_arena_alloc(j->arena, 64 + next(&r) % MAX_BLOCK, 0, &live[i]) != 0)
            j->failures++;
    for (long i = 0; i < j->pairs; i++) {
        void *p;

        if (j->lifo) {
            if (pinpool_arena_alloc(j->arena, 64 + next(&r) % MAX_BLOCK, 0, &p) != 0 ||
                pinpool_arena_free(j->arena, p) != 0)
                j->failures++;
        } else {
            int k = (int)(next(&r) % (uint32_t)j->live);

            if (pinpool_arena_free(j->arena, live[k]) != 0 ||
                pinpool_arena_alloc(j->arena, 64 + next(&r) % MAX_BLOCK, 0, &live[k]) != 0)
                j->failures++;
        }
    }
    for (int i = 0; i < j->live; i++)
        pinpool_arena_free(j->arena, live[i]);
    free(live);
    return NULL;
}

/* pairs/s of nthreads jobs (setup of the live set excluded: warm-up run first). */
static double measure(pinpool_arena_t *arena, int nthreads, int lifo, long pairs, long *failures)
{
    pthread_t t[THREADS];
    job_t j[THREADS];
    double t0, t1;

    for (int i = 0; i < nthreads; i++)
        j[i] = (job_t){.arena = arena, .live = LIVE / nthreads, .pairs = pairs / nthreads,
                       .lifo = lifo, .seed = 77u + (uint32_t)i * 7919u};
    t0 = now();
    for (int i = 0; i < nthreads; i++)
        pthread_create(&t[i], NULL, run_job, &j[i]);
    for (int i = 0; i < nthreads; i++)
        pthread_join(t[i], NULL);
    t1 = now();
    *failures = 0;
    for (int i = 0; i < nthreads; i++)
        *failures += j[i].failures;
    return (double)(pairs / nthreads * nthreads) / (t1 - t0);
}

int main(int argc, char **argv)
{
    const char *sock = argc > 1 ? argv[1] : NULL;
    long pairs = argc > 2 ? atol(argv[2]) : 3000000;
    pinpool_ctx_t *ctx = pinpool_connect(sock);
    pinpool_arena_t *arena = NULL;
    pinpool_arena_stats_t st;
    int rc, bad = 0;

    if (pinpool_err(ctx) != 0) {
        fprintf(stderr, "arena_bench: %s\n", pinpool_errmsg(ctx));
        return 1;
    }
    rc = pinpool_arena_create(ctx, 64ull << 20, NULL, &arena);
    if (rc != 0) {
        fprintf(stderr, "arena_bench: %s\n", pinpool_errmsg(ctx));
        return 1;
    }
    printf("%-8s %-6s %8s %14s %10s\n", "threads", "pattern", "live", "pairs/s", "ns/pair");
    for (int nt = 1; nt <= THREADS; nt += THREADS - 1) {
        for (int lifo = 0; lifo <= 1; lifo++) {
            long failures;
            double rate;

            measure(arena, nt, lifo, pairs / 10, &failures); /* warm-up */
            rate = measure(arena, nt, lifo, pairs, &failures);
            printf("%-8d %-6s %8d %14.0f %10.1f%s\n", nt, lifo ? "lifo" : "churn", LIVE,
                   rate, 1e9 / rate * nt, failures ? "  FAILURES" : "");
            bad |= failures != 0;
        }
    }
    pinpool_arena_stats(arena, &st);
    printf("leases: %" PRIu32 " x %" PRIu64 " MiB; blocks left: %" PRIu32 "\n", st.num_leases,
           st.lease_size >> 20, st.num_blocks);
    pinpool_arena_destroy(arena);
    pinpool_close(ctx);
    return bad;
}
