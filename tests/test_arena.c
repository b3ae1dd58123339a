/*
 * test_arena.c - the client-side arena (client/arena.c) against the real
 * daemon on a temp socket: growth by leases, free by pointer, wrong pointers,
 * large blocks, caps, threads, and every lease given back on destroy.  Every
 * test ends with the daemon's pool back at zero bytes in use and the daemon
 * exiting 0 on SIGTERM (the suite's fini).
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "pinpool.h"
#include "util.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)

TEST_DAEMON_SUITE(arena);

static pinpool_arena_t *arena_ok(pinpool_ctx_t *ctx, uint64_t lease, const pinpool_arena_opts_t *o)
{
    pinpool_arena_t *a = NULL;
    int rc = pinpool_arena_create(ctx, lease, o, &a);

    cr_assert_eq(rc, 0, "pinpool_arena_create: %s (%s)", pinpool_err_name(rc), pinpool_errmsg(ctx));
    cr_assert_not_null(a);
    return a;
}

static pinpool_arena_stats_t stats(pinpool_arena_t *a)
{
    pinpool_arena_stats_t st;

    cr_assert_eq(pinpool_arena_stats(a, &st), 0);
    return st;
}

static void *alloc_ok(pinpool_arena_t *a, pinpool_ctx_t *ctx, uint64_t size, uint64_t align)
{
    void *p = NULL;
    int rc = pinpool_arena_alloc(a, size, align, &p);

    cr_assert_eq(rc, 0, "alloc %" PRIu64 ": %s (%s)", size, pinpool_err_name(rc), pinpool_errmsg(ctx));
    cr_assert_not_null(p);
    return p;
}

Test(arena, first_lease_blocks_write_and_free)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_arena_t *a = arena_ok(ctx, 4 * MiB, NULL);
    pinpool_arena_stats_t st = stats(a);
    unsigned char *p[8];

    cr_expect_eq(st.lease_size, 4 * MiB);
    cr_expect_eq(st.num_leases, 1);
    cr_expect_eq(st.leased_bytes, 4 * MiB);
    cr_expect_eq(st.num_blocks, 0);
    cr_expect_eq(test_daemon_used(&d), 4 * MiB, "one lease, one RPC");
    for (int i = 0; i < 8; i++) {
        p[i] = alloc_ok(a, ctx, 1000 + 100 * (uint64_t)i, 0);
        cr_expect_eq((uintptr_t)p[i] % 256, 0, "the default alignment is the quantum");
        memset(p[i], 0x30 + i, 1000 + 100 * (size_t)i);
    }
    for (int i = 0; i < 8; i++)
        for (size_t j = 0; j < 1000 + 100 * (size_t)i; j++)
            if (p[i][j] != 0x30 + i)
                cr_assert_fail("block %d byte %zu was overwritten", i, j);
    st = stats(a);
    cr_expect_eq(st.num_blocks, 8);
    cr_expect_eq(st.requested_bytes, 8 * 1000 + 100 * 28);
    cr_expect_eq(st.used_bytes + st.free_bytes, 4 * MiB);
    cr_expect_eq(st.allocs, 8);
    cr_expect_eq(test_daemon_used(&d), 4 * MiB, "blocks cost no RPC");
    for (int i = 0; i < 8; i++)
        cr_expect_eq(pinpool_arena_free(a, p[i]), 0, "%s", pinpool_errmsg(ctx));
    st = stats(a);
    cr_expect_eq(st.num_blocks, 0);
    cr_expect_eq(st.used_bytes, 0);
    cr_expect_eq(st.requested_bytes, 0);
    cr_expect_eq(st.frees, 8);
    cr_expect_eq(st.largest_free, 4 * MiB, "freed blocks coalesce");
    pinpool_arena_destroy(a);
    cr_expect_eq(test_daemon_used(&d), 0, "destroy gives the lease back");
    pinpool_close(ctx);
}

Test(arena, grows_by_further_leases_when_full)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_arena_t *a = arena_ok(ctx, 1 * MiB, NULL);
    void *p[14];

    for (int i = 0; i < 14; i++) { /* 3.5 MiB in 256 KiB blocks: 4 leases */
        p[i] = alloc_ok(a, ctx, 256 * KiB, 0);
        memset(p[i], i, 256 * KiB);
    }
    pinpool_arena_stats_t st = stats(a);
    cr_expect_eq(st.num_leases, 4);
    cr_expect_eq(st.leased_bytes, 4 * MiB);
    cr_expect_eq(st.used_bytes, 14 * 256 * KiB);
    cr_expect_eq(test_daemon_used(&d), 4 * MiB);
    for (int i = 0; i < 14; i++)
        for (size_t j = 0; j < 256 * KiB; j += 4099)
            cr_assert_eq(((unsigned char *)p[i])[j], i, "block %d", i);
    for (int i = 0; i < 14; i++)
        cr_expect_eq(pinpool_arena_free(a, p[i]), 0, "%s", pinpool_errmsg(ctx));
    st = stats(a);
    cr_expect_eq(st.num_blocks, 0);
    cr_expect_eq(st.num_leases, 4, "leases stay for the next blocks");
    cr_expect_eq(st.free_bytes, 4 * MiB);
    /* they are reused: no fifth lease */
    for (int i = 0; i < 14; i++)
        p[i] = alloc_ok(a, ctx, 256 * KiB, 0);
    cr_expect_eq(stats(a).num_leases, 4);
    cr_expect_eq(test_daemon_used(&d), 4 * MiB);
    pinpool_arena_destroy(a); /* with live blocks: every lease goes back */
    cr_expect_eq(test_daemon_used(&d), 0);
    pinpool_close(ctx);
}

Test(arena, free_finds_the_block_by_pointer_and_refuses_others)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_arena_t *a = arena_ok(ctx, 1 * MiB, NULL);
    pinpool_arena_t *b = arena_ok(ctx, 1 * MiB, NULL);
    char *p = alloc_ok(a, ctx, 4096, 0);
    char *q = alloc_ok(a, ctx, 4096, 0);
    char *other = alloc_ok(b, ctx, 4096, 0);
    int on_stack;
    pinpool_arena_stats_t before = stats(a), after;

    cr_expect_eq(pinpool_arena_free(a, NULL), PINPOOL_ENOENT);
    cr_expect_eq(pinpool_arena_free(a, &on_stack), PINPOOL_ENOENT);
    cr_expect(strstr(pinpool_errmsg(ctx), "not a block of this arena") != NULL, "%s",
              pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_arena_free(a, p + 256), PINPOOL_ENOENT, "inside a block");
    cr_expect(strstr(pinpool_errmsg(ctx), "not a live block") != NULL, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_arena_free(a, p + 512 * KiB), PINPOOL_ENOENT, "free space of a lease");
    cr_expect_eq(pinpool_arena_free(a, other), PINPOOL_ENOENT, "another arena's block");
    after = stats(a);
    cr_expect_eq(after.num_blocks, before.num_blocks, "a refused free changes nothing");
    cr_expect_eq(after.used_bytes, before.used_bytes);
    cr_expect_eq(pinpool_arena_free(a, p), 0);
    cr_expect_eq(pinpool_arena_free(a, p), PINPOOL_ENOENT, "double free");
    cr_expect_eq(pinpool_arena_free(a, q), 0);
    cr_expect_eq(pinpool_arena_free(b, other), 0);
    cr_expect_eq(stats(a).num_blocks, 0);
    pinpool_arena_destroy(a);
    pinpool_arena_destroy(b);
    pinpool_close(ctx);
}

Test(arena, bad_arguments)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_arena_t *a = NULL;
    pinpool_arena_opts_t o = {.quantum = 100};
    void *p = NULL;

    cr_expect_eq(pinpool_arena_create(ctx, MiB, &o, &a), PINPOOL_EINVAL);
    o = (pinpool_arena_opts_t){.max_bytes = MiB};
    cr_expect_eq(pinpool_arena_create(ctx, 2 * MiB, &o, &a), PINPOOL_EINVAL);
    cr_expect_null(a);
    cr_expect_eq(pinpool_arena_create(ctx, 128 * MiB, NULL, &a), PINPOOL_ETOOBIG,
                 "a lease larger than the daemon's pool");
    cr_expect_null(a);
    a = arena_ok(ctx, MiB, NULL);
    cr_expect_eq(pinpool_arena_alloc(a, 0, 0, &p), PINPOOL_EINVAL);
    cr_expect(strstr(pinpool_errmsg(ctx), "greater than 0") != NULL, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_arena_alloc(a, 100, 3, &p), PINPOOL_EALIGN);
    cr_expect_eq(pinpool_arena_alloc(a, 100, 8192, &p), PINPOOL_EALIGN);
    cr_expect_null(p);
    for (uint64_t al = 1; al <= PINPOOL_ARENA_MAX_ALIGN; al *= 2) {
        p = alloc_ok(a, ctx, 1, al);
        cr_expect_eq((uintptr_t)p % al, 0, "alignment %" PRIu64, al);
        cr_expect_eq(pinpool_arena_free(a, p), 0);
    }
    pinpool_arena_destroy(a);
    pinpool_close(ctx);
}

Test(arena, large_blocks_get_a_lease_of_their_own)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_arena_t *a = arena_ok(ctx, 1 * MiB, NULL);
    pinpool_arena_stats_t st;
    unsigned char *big = alloc_ok(a, ctx, 20 * MiB + 5, 0);
    pinpool_arena_block_t blk;

    memset(big, 0x5a, 20 * MiB + 5); /* crosses the daemon's 16 MiB chunks: contiguous */
    st = stats(a);
    cr_expect_eq(st.num_large, 1);
    cr_expect_eq(st.num_leases, 1);
    cr_expect_eq(st.num_blocks, 1);
    cr_expect_eq(st.requested_bytes, 20 * MiB + 5);
    cr_expect_geq(st.leased_bytes, 21 * MiB);
    cr_expect_geq(test_daemon_used(&d), 21 * MiB);
    cr_expect_eq(pinpool_arena_free(a, big + 4096), PINPOOL_ENOENT);
    cr_assert_eq(pinpool_arena_alloc_block(a, 100, 0, &blk), 0);
    cr_expect_eq(blk.large, 0);
    cr_expect_eq(blk.lease_size, 1 * MiB);
    cr_expect((char *)blk.ptr >= (char *)blk.lease_base &&
              (char *)blk.ptr < (char *)blk.lease_base + blk.lease_size);
    cr_expect_eq(pinpool_arena_free(a, big), 0);
    cr_expect_eq(test_daemon_used(&d), 1 * MiB, "a large block's lease goes back with it");
    st = stats(a);
    cr_expect_eq(st.num_large, 0);
    cr_expect_eq(st.leased_bytes, 1 * MiB);
    cr_expect_eq(pinpool_arena_free(a, blk.ptr), 0);
    pinpool_arena_destroy(a);
    pinpool_close(ctx);
}

Test(arena, caps_and_a_full_daemon_say_enospc)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_arena_opts_t o = {.max_bytes = 2 * MiB};
    pinpool_arena_t *a = arena_ok(ctx, 1 * MiB, &o);
    void *p[3], *q = NULL;

    p[0] = alloc_ok(a, ctx, MiB, 0);
    p[1] = alloc_ok(a, ctx, MiB, 0);
    cr_expect_eq(pinpool_arena_alloc(a, MiB, 0, &q), PINPOOL_ENOSPC);
    cr_expect(strstr(pinpool_errmsg(ctx), "cap") != NULL, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_arena_alloc(a, 3 * MiB, 0, &q), PINPOOL_ENOSPC, "large, past the cap");
    cr_expect_eq(stats(a).leased_bytes, 2 * MiB);
    cr_expect_eq(pinpool_arena_free(a, p[0]), 0);
    p[0] = alloc_ok(a, ctx, MiB, 0); /* room again */
    pinpool_arena_destroy(a);

    /* No cap: the daemon's pool (64 MiB) is the limit. */
    a = arena_ok(ctx, 16 * MiB, NULL);
    for (int i = 0; i < 4; i++)
        p[0] = alloc_ok(a, ctx, 16 * MiB, 0);
    cr_expect_eq(pinpool_arena_alloc(a, 4096, 0, &q), PINPOOL_ENOSPC);
    cr_expect(strstr(pinpool_errmsg(ctx), "largest free extent") != NULL, "the daemon's reason: %s",
              pinpool_errmsg(ctx));
    cr_expect_eq(stats(a).num_leases, 4);
    cr_expect_eq(stats(a).leased_bytes, 64 * MiB, "a failed lease is not counted");
    cr_expect_null(q);
    pinpool_arena_destroy(a);
    cr_expect_eq(test_daemon_used(&d), 0);
    pinpool_close(ctx);
}

typedef struct worker {
    pinpool_arena_t *arena;
    int id, rounds, failures;
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    unsigned char *live[16] = {0};
    uint64_t sizes[16] = {0};
    uint32_t r = (uint32_t)w->id * 2654435761u;

    for (int i = 0; i < w->rounds; i++) {
        int k = i % 16;

        if (live[k] != NULL) {
            for (uint64_t j = 0; j < sizes[k]; j += 97)
                if (live[k][j] != (unsigned char)(w->id * 16 + k))
                    w->failures++;
            if (pinpool_arena_free(w->arena, live[k]) != 0)
                w->failures++;
            live[k] = NULL;
        }
        r = r * 1103515245u + 12345u;
        sizes[k] = 1 + (r >> 8) % (64 * KiB);
        if (i % 997 == 0)
            sizes[k] = MiB + 4096; /* larger than a lease: a lease of its own */
        if (pinpool_arena_alloc(w->arena, sizes[k], 0, (void **)&live[k]) != 0) {
            w->failures++;
            live[k] = NULL;
            continue;
        }
        memset(live[k], w->id * 16 + k, sizes[k]);
    }
    for (int k = 0; k < 16; k++)
        if (live[k] != NULL && pinpool_arena_free(w->arena, live[k]) != 0)
            w->failures++;
    return NULL;
}

Test(arena, threads_share_one_arena)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_arena_t *a = arena_ok(ctx, 1 * MiB, NULL);
    worker_t w[4];

    for (int i = 0; i < 4; i++)
        w[i] = (worker_t){.arena = a, .id = i + 1, .rounds = 20000};
    test_threads(4, worker, w, sizeof(w[0]));
    for (int i = 0; i < 4; i++)
        cr_expect_eq(w[i].failures, 0, "thread %d: %d failures", i, w[i].failures);
    pinpool_arena_stats_t st = stats(a);
    cr_expect_eq(st.num_blocks, 0);
    cr_expect_eq(st.used_bytes, 0);
    cr_expect_eq(st.allocs, 80000);
    cr_expect_eq(st.frees, 80000);
    cr_expect_geq(st.num_leases, 2, "4 threads x 16 blocks of up to 64 KiB need 2+ leases");
    cr_expect_eq(st.num_large, 0);
    cr_expect_eq(test_daemon_used(&d), st.leased_bytes);
    pinpool_arena_destroy(a);
    cr_expect_eq(test_daemon_used(&d), 0);
    pinpool_close(ctx);
}

Test(arena, destroy_gives_back_every_lease_large_ones_too)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_arena_t *a = arena_ok(ctx, 2 * MiB, NULL);

    alloc_ok(a, ctx, 5 * MiB, 0);
    alloc_ok(a, ctx, 100, 0);
    alloc_ok(a, ctx, 2 * MiB, 0); /* a second lease */
    cr_expect_eq(test_daemon_used(&d), 5 * MiB + 4 * MiB);
    pinpool_arena_destroy(a);
    cr_expect_eq(test_daemon_used(&d), 0);
    pinpool_close(ctx);
}
