/*
 * tests/tsan/threads.c - the client library from many threads at once, for
 * ThreadSanitizer (`make test-tsan` builds it with SANITIZE=thread; Criterion
 * binaries cannot start under TSan, so this is a plain program).
 *
 *   threads SOCKET [THREADS (8)] [ROUNDS (300)]
 *
 * Every thread shares one context (and opens one of its own), and mixes
 * alloc / write / check / free, put / get / exists / remove of its own keys,
 * arena blocks on a shared arena, and pool info.  Every slice and object is
 * filled with a pattern of its thread and checked before it goes, so a race
 * that corrupts bytes fails here even where TSan would not see it.  Exits 0,
 * or 1 with what went wrong; TSan's reports make it exit 66.
 *
 * Owns: the contexts, slices, objects and arena it makes, all given back
 * before it exits.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pinpool.h"

typedef struct worker {
    int index;
    int rounds;
    pinpool_ctx_t *shared;
    pinpool_arena_t *arena;
    const char *socket;
} worker_t;

static atomic_int failures;

__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    atomic_fetch_add(&failures, 1);
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed * 131u + i * 7u);
}

static int same(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed * 131u + i * 7u))
            return 0;
    return 1;
}

static void one_round(worker_t *w, pinpool_ctx_t *ctx, int round)
{
    unsigned seed = (unsigned)(w->index * 100000 + round);
    size_t n = 4096u << (round % 6);
    pinpool_slice_t s;
    char key[64];
    unsigned char buf[8192];
    uint64_t got = 0;
    void *block;

    if (pinpool_alloc(ctx, n, NULL, &s) != 0) {
        fail("thread %d: alloc %zu: %s", w->index, n, pinpool_errmsg(ctx));
        return;
    }
    fill(s.ptr, n, seed);
    if (!same(s.ptr, n, seed))
        fail("thread %d: slice %" PRIu64 " changed under it", w->index, s.id);
    if (pinpool_free(ctx, s.id, NULL) != 0)
        fail("thread %d: free: %s", w->index, pinpool_errmsg(ctx));

    snprintf(key, sizeof(key), "tsan-%d-%d", w->index, round % 8);
    fill(buf, sizeof(buf), seed);
    if (pinpool_put(ctx, key, buf, sizeof(buf), 0) != 0) {
        fail("thread %d: put %s: %s", w->index, key, pinpool_errmsg(ctx));
        return;
    }
    memset(buf, 0, sizeof(buf));
    if (pinpool_get(ctx, key, buf, sizeof(buf), &got) != 0 || got != sizeof(buf) ||
        !same(buf, sizeof(buf), seed))
        fail("thread %d: get %s: %s", w->index, key, pinpool_errmsg(ctx));
    if (pinpool_exists(ctx, key) != 1)
        fail("thread %d: exists %s", w->index, key);
    if (round % 3 == 0 && pinpool_remove(ctx, key) != 0)
        fail("thread %d: remove %s: %s", w->index, key, pinpool_errmsg(ctx));

    if (pinpool_arena_alloc(w->arena, 256u << (round % 4), 0, &block) == 0) {
        fill(block, 256, seed);
        if (!same(block, 256, seed))
            fail("thread %d: arena block changed under it", w->index);
        if (pinpool_arena_free(w->arena, block) != 0)
            fail("thread %d: arena free", w->index);
    }
    if (round % 16 == 0) {
        pinpool_pool_info_t info;
        if (pinpool_pool_info(ctx, &info) == 0)
            pinpool_pool_info_free(&info);
        else
            fail("thread %d: info: %s", w->index, pinpool_errmsg(ctx));
    }
}

static void *run(void *arg)
{
    worker_t *w = arg;
    pinpool_ctx_t *own = pinpool_connect(w->socket);

    if (pinpool_err(own) != 0)
        fail("thread %d: connect: %s", w->index, pinpool_errmsg(own));
    for (int r = 0; r < w->rounds; r++)
        one_round(w, (r % 2 == 0 || pinpool_err(own) != 0) ? w->shared : own, r);
    for (int k = 0; k < 8; k++) {
        char key[64];
        snprintf(key, sizeof(key), "tsan-%d-%d", w->index, k);
        pinpool_remove(w->shared, key);
    }
    pinpool_close(own);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *socket = argc > 1 ? argv[1] : NULL;
    int nthreads = argc > 2 ? atoi(argv[2]) : 8, rounds = argc > 3 ? atoi(argv[3]) : 300;
    pthread_t th[64];
    worker_t w[64];
    pinpool_ctx_t *ctx;
    pinpool_arena_t *arena;

    if (nthreads < 1 || nthreads > 64 || rounds < 1) {
        fprintf(stderr, "usage: threads SOCKET [THREADS 1..64] [ROUNDS]\n");
        return 2;
    }
    ctx = pinpool_connect(socket);
    if (pinpool_err(ctx) != 0) {
        fprintf(stderr, "threads: %s\n", pinpool_errmsg(ctx));
        return 1;
    }
    if (pinpool_arena_create(ctx, 1 << 20, NULL, &arena) != 0) {
        fprintf(stderr, "threads: arena: %s\n", pinpool_errmsg(ctx));
        return 1;
    }
    for (int i = 0; i < nthreads; i++) {
        w[i] = (worker_t){.index = i, .rounds = rounds, .shared = ctx, .arena = arena,
                          .socket = socket};
        if (pthread_create(&th[i], NULL, run, &w[i]) != 0) {
            fprintf(stderr, "threads: cannot start thread %d\n", i);
            return 1;
        }
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    pinpool_arena_destroy(arena);
    pinpool_close(ctx);
    printf("threads: %d threads x %d rounds, %d failures\n", nthreads, rounds,
           atomic_load(&failures));
    return atomic_load(&failures) == 0 ? 0 : 1;
}
