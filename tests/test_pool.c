/*
 * test_pool.c - the allocator (pool/) against pool.h's contract: placement,
 * best fit, boundaries, growth, errors, owners, and tenants (a chunk holds
 * one tenant's slices; idle chunks stay their tenant's; claims), dirty memory
 * and its cleaning.  The randomized test against a reference model is
 * test_pool_model.c.
 *
 * Owns: the pools each test makes; every test ends with tp_finish(), which
 * frees what is left, checks the pool is back to zero bytes used and one
 * coalesced free extent per run of one tenant's chunks, and destroys it
 * (destroy_with_live_slices alone destroys a full pool on purpose).
 * Never: looks inside a pool_t; only pool.h's functions.  Locking: none.
 */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pinpool.h"
#include "poolcheck.h"

/* ------------------------------------------------------------------------ */
/* Construction                                                             */

Test(pool, create_params, .timeout = 10)
{
    pool_params_t good = {.chunk_size = 4096, .max_chunks = 4, .quantum = 256};
    pool_params_t p;
    pool_slice_info_t s;
    pool_t *pool = NULL;

    cr_expect_eq(pool_create(NULL, &good), PINPOOL_EINVAL);
    cr_expect_eq(pool_create(&pool, NULL), PINPOOL_EINVAL);
    p = good, p.chunk_size = 0;
    cr_expect_eq(pool_create(&pool, &p), PINPOOL_EINVAL);
    p = good, p.max_chunks = 0;
    cr_expect_eq(pool_create(&pool, &p), PINPOOL_EINVAL);
    p = good, p.quantum = 384; /* not a power of two */
    cr_expect_eq(pool_create(&pool, &p), PINPOOL_EINVAL);
    p = good, p.chunk_size = 4096 + 128; /* not a multiple of the quantum */
    cr_expect_eq(pool_create(&pool, &p), PINPOOL_EINVAL);
    p = good, p.chunk_size = 1ull << 40, p.max_chunks = 1u << 24; /* 2^64 overflows */
    cr_expect_eq(pool_create(&pool, &p), PINPOOL_EINVAL);
    cr_expect_null(pool);
    pool_destroy(NULL);

    /* quantum 0 means 256 */
    p = good, p.quantum = 0;
    cr_assert_eq(pool_create(&pool, &p), 0);
    cr_expect_eq(pool_chunk_size(pool), 4096);
    cr_expect_eq(tp_stats(pool).capacity, 4 * 4096);
    cr_expect_eq(tp_stats(pool).ready, 0);
    /* no chunk is usable yet */
    cr_expect_eq(pool_alloc(pool, 1, 1, 0, &s), PINPOOL_ENOSPC);
    cr_assert_eq(pool_add_chunks(pool, 1), 0);
    s = tp_alloc_ok(pool, 1, 1, 0);
    cr_expect_eq(s.extent, 256);
    tp_finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Basics                                                                   */

Test(pool, basic_alloc_free, .timeout = 10)
{
    pool_t *pool = tp_mkpool(1 * MiB, 4, 256, false, 4);
    pool_slice_info_t a, b, c, got;
    pool_stats_t st;
    uint64_t freed = 0;

    a = tp_alloc_ok(pool, 7, 1000, 0);
    cr_expect_eq(a.id, 1);
    cr_expect_eq(a.owner, 7);
    cr_expect_eq(a.offset, 0);
    cr_expect_eq(a.size, 1000);
    cr_expect_eq(a.extent, 1024);
    cr_expect_eq(a.first_chunk, 0);
    cr_expect_eq(a.nchunks, 1);
    b = tp_alloc_ok(pool, 7, 256, 0);
    cr_expect_eq(b.id, 2);
    cr_expect_eq(b.offset, 1024);
    cr_expect_eq(b.extent, 256);

    cr_assert_eq(pool_lookup(pool, a.id, &got), 0);
    cr_expect_eq(memcmp(&got, &a, sizeof(a)), 0);
    st = tp_stats(pool);
    cr_expect_eq(st.used, 1280);
    cr_expect_eq(st.free, 4 * MiB - 1280);
    cr_expect_eq(st.num_slices, 2);
    cr_expect_eq(st.num_owners, 1);
    cr_expect_eq(st.num_tenants, 1);
    /* chunk 0 is tenant 0's now: its rest is one extent, the chunks never
     * used another */
    cr_expect_eq(st.num_free_extents, 2);
    cr_expect_eq(st.largest_free, 3 * MiB);

    cr_assert_eq(pool_free(pool, a.id, 7, &freed), 0);
    cr_expect_eq(freed, 1024);
    tp_check(pool);
    cr_expect_eq(pool_lookup(pool, a.id, &got), PINPOOL_ENOENT);
    cr_expect_eq(tp_stats(pool).num_free_extents, 3); /* [0, 1024), after b, unused */

    /* the hole is the best fit for a small slice; ids never repeat */
    c = tp_alloc_ok(pool, 8, 512, 0);
    cr_expect_eq(c.id, 3);
    cr_expect_eq(c.offset, 0);
    tp_free_ok(pool, b.id, 7);
    tp_free_ok(pool, c.id, 8);
    cr_expect_eq(tp_stats(pool).num_free_extents, 2); /* chunk 0, and chunks 1-3 */
    cr_expect_eq(tp_stats(pool).idle_chunks, 1, "chunk 0 stays tenant 0's, idle");
    tp_finish(pool);
}

Test(pool, free_coalesces_both_sides, .timeout = 10)
{
    pool_t *pool = tp_mkpool(64 * KiB, 1, 256, false, 1);
    pool_slice_info_t s[5];

    for (int i = 0; i < 5; i++)
        s[i] = tp_alloc_ok(pool, 1, 1024, 0);
    tp_free_ok(pool, s[1].id, 1);
    tp_free_ok(pool, s[3].id, 1);
    cr_expect_eq(tp_stats(pool).num_free_extents, 3); /* s1, s3, tail */
    tp_free_ok(pool, s[2].id, 1);                     /* joins s1 and s3 */
    cr_expect_eq(tp_stats(pool).num_free_extents, 2);
    cr_expect_eq(tp_stats(pool).largest_free, 64 * KiB - 5 * 1024);
    tp_free_ok(pool, s[4].id, 1); /* joins [1024, 4096) and the tail */
    cr_expect_eq(tp_stats(pool).num_free_extents, 1);
    cr_expect_eq(tp_stats(pool).largest_free, 63 * KiB);
    tp_free_ok(pool, s[0].id, 1);
    cr_expect_eq(tp_stats(pool).num_free_extents, 1);
    tp_finish(pool);
}

Test(pool, best_fit, .timeout = 10)
{
    pool_t *pool = tp_mkpool(64 * KiB, 1, 256, false, 1);
    pool_slice_info_t s[8], a;

    /* holes of 2 KiB at 0, 1 KiB at 3072, 1 KiB at 5120, 3 KiB at 7168 */
    s[0] = tp_alloc_ok(pool, 1, 2048, 0); /* 0 */
    s[1] = tp_alloc_ok(pool, 1, 1024, 0); /* 2048 */
    s[2] = tp_alloc_ok(pool, 1, 1024, 0); /* 3072 */
    s[3] = tp_alloc_ok(pool, 1, 1024, 0); /* 4096 */
    s[4] = tp_alloc_ok(pool, 1, 1024, 0); /* 5120 */
    s[5] = tp_alloc_ok(pool, 1, 1024, 0); /* 6144 */
    s[6] = tp_alloc_ok(pool, 1, 3072, 0); /* 7168 */
    s[7] = tp_alloc_ok(pool, 1, 1024, 0); /* 10240 */
    tp_free_ok(pool, s[0].id, 1);
    tp_free_ok(pool, s[2].id, 1);
    tp_free_ok(pool, s[4].id, 1);
    tp_free_ok(pool, s[6].id, 1);

    a = tp_alloc_ok(pool, 2, 1000, 0); /* two 1 KiB holes: the lower one */
    cr_expect_eq(a.offset, 3072);
    a = tp_alloc_ok(pool, 2, 1024, 0);
    cr_expect_eq(a.offset, 5120);
    a = tp_alloc_ok(pool, 2, 1500, 0); /* 2 KiB hole beats 3 KiB and the tail */
    cr_expect_eq(a.offset, 0);
    a = tp_alloc_ok(pool, 2, 2048, 0);
    cr_expect_eq(a.offset, 7168);
    a = tp_alloc_ok(pool, 2, 512, 0); /* the 512 B left of the 2 KiB hole */
    cr_expect_eq(a.offset, 1536);
    /* alignment may skip the best candidate: the 1 KiB hole left at 9216
     * holds no 4 KiB aligned offset, so the tail (from 11264) serves */
    a = tp_alloc_ok(pool, 2, 256, 4096);
    cr_expect_eq(a.offset, 12288);
    tp_finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Alignment and the chunk boundary rule                                    */


Test(pool, alignment, .timeout = 10)
{
    pool_t *pool = tp_mkpool(64 * KiB, 4, 256, false, 4);
    pool_slice_info_t a;
    pool_stats_t before, after;

    a = tp_alloc_ok(pool, 1, 100, 0); /* 0 = the quantum */
    cr_expect_eq(a.offset, 0);
    cr_expect_eq(a.extent, 256);
    a = tp_alloc_ok(pool, 1, 100, 4096);
    cr_expect_eq(a.offset, 4096);
    a = tp_alloc_ok(pool, 1, 100, 128); /* below the quantum: offsets stay quantum aligned */
    cr_expect_eq(a.offset, 256);
    a = tp_alloc_ok(pool, 1, 100, 1);
    cr_expect_eq(a.offset, 512);
    a = tp_alloc_ok(pool, 1, 100, 64 * KiB); /* the chunk size itself */
    cr_expect_eq(a.offset, 64 * KiB);
    a = tp_alloc_ok(pool, 1, 5000, 8192);
    cr_expect_eq(a.offset, 8192);
    cr_expect_eq(a.extent, 5120);

    before = tp_stats(pool);
    cr_expect_eq(pool_alloc(pool, 1, 100, 3, NULL), PINPOOL_EALIGN);
    cr_expect_eq(pool_alloc(pool, 1, 100, 768, NULL), PINPOOL_EALIGN);       /* not 2^k */
    cr_expect_eq(pool_alloc(pool, 1, 100, 128 * KiB, NULL), PINPOOL_EALIGN); /* > chunk */
    cr_expect_eq(pool_alloc(pool, 1, 100, 1ull << 63, NULL), PINPOOL_EALIGN);
    cr_expect_eq(pool_alloc(pool, 1, 100, UINT64_MAX, NULL), PINPOOL_EALIGN);
    tp_check(pool);
    after = tp_stats(pool);
    tp_expect_same_stats(&before, &after, "alignment errors");
    tp_finish(pool);
}

Test(pool, boundary_rule, .timeout = 10)
{
    pool_t *pool = tp_mkpool(4096, 2, 256, false, 2);
    pool_slice_info_t a, b, c, d;

    a = tp_alloc_ok(pool, 1, 3072, 0);
    cr_expect_eq(a.offset, 0);
    b = tp_alloc_ok(pool, 1, 2048, 0); /* at 3072 it would cross into chunk 1 */
    cr_expect_eq(b.offset, 4096);
    cr_expect_eq(b.first_chunk, 1);
    cr_expect_eq(b.nchunks, 1);
    c = tp_alloc_ok(pool, 1, 1024, 0); /* the 1 KiB hole at the end of chunk 0 */
    cr_expect_eq(c.offset, 3072);
    tp_free_ok(pool, a.id, 1);
    tp_free_ok(pool, c.id, 1);
    cr_expect_eq(tp_stats(pool).num_free_extents, 2); /* [0, 4096) and [6144, 8192) */
    tp_free_ok(pool, b.id, 1);
    cr_expect_eq(tp_stats(pool).num_free_extents, 1); /* coalesced across the boundary */

    /* a free extent that spans the boundary, [2048, 8192) */
    a = tp_alloc_ok(pool, 1, 2048, 0);
    b = tp_alloc_ok(pool, 1, 4096, 0); /* a whole chunk fits only in chunk 1 */
    cr_expect_eq(b.offset, 4096);
    tp_free_ok(pool, b.id, 1);
    c = tp_alloc_ok(pool, 1, 1024, 0);
    cr_expect_eq(c.offset, 2048);
    d = tp_alloc_ok(pool, 1, 3072, 0); /* [3072, 6144) would cross: next chunk */
    cr_expect_eq(d.offset, 4096);
    cr_expect(!tp_crosses_chunk(&a, 4096) && !tp_crosses_chunk(&c, 4096) &&
              !tp_crosses_chunk(&d, 4096));
    /* 2 KiB free in two pieces of 1 KiB, one per chunk; 1.5 KiB fits neither */
    cr_expect_eq(tp_stats(pool).free, 2048);
    cr_expect_eq(pool_alloc(pool, 1, 1536, 0, NULL), PINPOOL_ENOSPC);
    tp_check(pool);
    tp_finish(pool);
}

Test(pool, multi_chunk_off, .timeout = 10)
{
    pool_t *pool = tp_mkpool(4096, 4, 256, false, 4);
    pool_stats_t before = tp_stats(pool), after;
    pool_slice_info_t a;

    cr_expect_eq(pool_alloc(pool, 1, 4097, 0, NULL), PINPOOL_ETOOBIG);
    cr_expect_eq(pool_alloc(pool, 1, 3 * 4096, 0, NULL), PINPOOL_ETOOBIG);
    cr_expect_eq(pool_alloc(pool, 1, 4 * 4096 + 1, 0, NULL), PINPOOL_ETOOBIG);
    cr_expect_eq(pool_alloc(pool, 1, UINT64_MAX, 0, NULL), PINPOOL_ETOOBIG);
    tp_check(pool);
    after = tp_stats(pool);
    tp_expect_same_stats(&before, &after, "too big");
    a = tp_alloc_ok(pool, 1, 4096, 0);
    cr_expect_eq(a.nchunks, 1);
    a = tp_alloc_ok(pool, 1, 4000, 0); /* rounds up to 4096, still one chunk */
    cr_expect_eq(a.extent, 4096);
    cr_expect_eq(a.offset, 4096);
    tp_finish(pool);
}

Test(pool, multi_chunk_on, .timeout = 10)
{
    pool_t *pool = tp_mkpool(4096, 4, 256, true, 4);
    pool_slice_info_t a, b, c, d;

    a = tp_alloc_ok(pool, 1, 256, 0);
    b = tp_alloc_ok(pool, 1, 5000, 0); /* starts on the next chunk boundary */
    cr_expect_eq(b.offset, 4096);
    cr_expect_eq(b.extent, 5120);
    cr_expect_eq(b.first_chunk, 1);
    cr_expect_eq(b.nchunks, 2);
    /* b's chunks are tenant 0's now: the tail of its last chunk stays usable,
     * and is the best fit */
    c = tp_alloc_ok(pool, 1, 3072, 0);
    cr_expect_eq(c.offset, 9216);
    d = tp_alloc_ok(pool, 1, 2048, 0); /* the rest of chunk 0 */
    cr_expect_eq(d.offset, 256);
    /* [2304, 4096) and unused [12288, 16384) are too small for 4352 */
    cr_expect_eq(pool_alloc(pool, 1, 4097, 0, NULL), PINPOOL_ENOSPC);
    tp_check(pool);
    tp_free_ok(pool, a.id, 1);
    tp_free_ok(pool, b.id, 1);
    tp_free_ok(pool, c.id, 1);
    tp_free_ok(pool, d.id, 1);

    a = tp_alloc_ok(pool, 2, 4 * 4096, 0); /* the whole pool */
    cr_expect_eq(a.offset, 0);
    cr_expect_eq(a.nchunks, 4);
    cr_expect_eq(tp_stats(pool).free, 0);
    cr_expect_eq(tp_stats(pool).num_free_extents, 0);
    tp_free_ok(pool, a.id, 2);
    a = tp_alloc_ok(pool, 2, 100, 0);
    b = tp_alloc_ok(pool, 2, 8192, 0); /* exactly two chunks */
    cr_expect_eq(b.offset, 4096);
    cr_expect_eq(b.nchunks, 2);
    cr_expect_eq(b.extent, 8192);
    cr_expect_eq(pool_alloc(pool, 1, 4 * 4096 + 1, 0, NULL), PINPOOL_ETOOBIG);
    tp_finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Growth                                                                   */

Test(pool, add_chunks_grows_and_coalesces, .timeout = 10)
{
    pool_t *pool = tp_mkpool(4096, 4, 256, false, 1);
    pool_slice_info_t a, b, c;
    pool_stats_t st, before;

    a = tp_alloc_ok(pool, 1, 1024, 0);
    cr_assert_eq(pool_add_chunks(pool, 1), 0); /* chunk 1 is nobody's: [1024, 4096) stays apart */
    tp_check(pool);
    st = tp_stats(pool);
    cr_expect_eq(st.ready_chunks, 2);
    cr_expect_eq(st.ready, 8192);
    cr_expect_eq(st.num_free_extents, 2);
    cr_expect_eq(st.largest_free, 4096);
    b = tp_alloc_ok(pool, 1, 3072, 0); /* still must not cross chunk 0's end */
    cr_expect_eq(b.offset, 1024);
    c = tp_alloc_ok(pool, 1, 4096, 0);
    cr_expect_eq(c.offset, 4096);
    cr_expect_eq(tp_stats(pool).num_free_extents, 0);

    cr_assert_eq(pool_add_chunks(pool, 1), 0); /* nothing free ends at 8192 */
    tp_check(pool);
    cr_expect_eq(tp_stats(pool).num_free_extents, 1);
    cr_expect_eq(tp_stats(pool).largest_free, 4096);
    tp_free_ok(pool, a.id, 1);
    tp_free_ok(pool, b.id, 1);
    cr_expect_eq(tp_stats(pool).num_free_extents, 2);
    tp_free_ok(pool, c.id, 1); /* joins [0, 4096), not chunk 2: nobody's yet */
    cr_expect_eq(tp_stats(pool).num_free_extents, 2);
    cr_expect_eq(tp_stats(pool).largest_free, 8192);

    before = tp_stats(pool);
    cr_expect_eq(pool_add_chunks(pool, 2), PINPOOL_EINVAL); /* 3 + 2 > 4 */
    cr_expect_eq(pool_add_chunks(pool, UINT32_MAX), PINPOOL_EINVAL);
    cr_expect_eq(pool_add_chunks(pool, 0), 0);
    tp_check(pool);
    st = tp_stats(pool);
    tp_expect_same_stats(&before, &st, "add_chunks errors");
    cr_expect_eq(pool_add_chunks(pool, 1), 0); /* joins chunk 2: both nobody's */
    cr_expect_eq(pool_add_chunks(pool, 1), PINPOOL_EINVAL); /* full */
    tp_check(pool);
    st = tp_stats(pool);
    cr_expect_eq(st.ready, st.capacity);
    cr_expect_eq(st.num_free_extents, 2);
    cr_expect_eq(st.largest_free, 8192);
    tp_finish(pool);
}

Test(pool, add_chunks_multi, .timeout = 10)
{
    pool_t *pool = tp_mkpool(4096, 4, 256, true, 1);
    pool_slice_info_t a;

    cr_expect_eq(pool_alloc(pool, 1, 8192, 0, NULL), PINPOOL_ENOSPC); /* not ready yet */
    cr_assert_eq(pool_add_chunks(pool, 1), 0);
    a = tp_alloc_ok(pool, 1, 8192, 0); /* spans the chunk that was just added */
    cr_expect_eq(a.offset, 0);
    cr_expect_eq(a.nchunks, 2);
    tp_finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

struct snapshot {
    pool_stats_t st;
    struct tp_slice_list slices;
};

static void take_snapshot(const pool_t *pool, struct snapshot *s)
{
    memset(s, 0, sizeof(*s));
    s->st = tp_stats(pool);
    pool_foreach_slice(pool, 0, true, tp_collect_slice, &s->slices);
}

static void expect_unchanged(const pool_t *pool, const struct snapshot *before, const char *what)
{
    struct snapshot now;

    tp_check(pool);
    take_snapshot(pool, &now);
    tp_expect_same_stats(&before->st, &now.st, what);
    cr_expect_eq(now.slices.n, before->slices.n, "%s: slice count", what);
    cr_expect_eq(memcmp(now.slices.v, before->slices.v, now.slices.n * sizeof(now.slices.v[0])),
                 0, "%s: slices changed", what);
}

Test(pool, errors_leave_pool_unchanged, .timeout = 10)
{
    pool_t *pool = tp_mkpool(4096, 4, 256, false, 2);
    struct snapshot snap;
    pool_slice_info_t a, b, out;
    uint64_t freed = 12345;

    a = tp_alloc_ok(pool, 1, 1000, 0);
    b = tp_alloc_ok(pool, 2, 4096, 0);
    tp_alloc_ok(pool, 2, 2000, 0);
    take_snapshot(pool, &snap);

    memset(&out, 0xab, sizeof(out));
    cr_expect_eq(pool_alloc(pool, 1, 0, 0, &out), PINPOOL_EINVAL);
    cr_expect_eq(out.id, 0xabababababababab, "*out written on error");
    cr_expect_eq(pool_alloc(pool, 1, 0, 3, &out), PINPOOL_EINVAL);
    cr_expect_eq(pool_alloc(pool, 1, 100, 3, &out), PINPOOL_EALIGN);
    cr_expect_eq(pool_alloc(pool, 1, 4097, 0, &out), PINPOOL_ETOOBIG);
    cr_expect_eq(pool_alloc(pool, 1, 5 * 4096, 0, &out), PINPOOL_ETOOBIG);
    cr_expect_eq(pool_alloc(pool, 1, 4096, 0, &out), PINPOOL_ENOSPC);
    cr_expect_eq(pool_alloc(pool, 3, 4096, 4096, &out), PINPOOL_ENOSPC);
    cr_expect_eq(out.id, 0xabababababababab, "*out written on error");
    cr_expect_eq(pool_alloc(NULL, 1, 100, 0, &out), PINPOOL_EINVAL);
    cr_expect_eq(pool_free(pool, a.id, 2, &freed), PINPOOL_EPERM);
    cr_expect_eq(pool_free(pool, 999, 1, &freed), PINPOOL_ENOENT);
    cr_expect_eq(pool_free(pool, 0, 1, &freed), PINPOOL_ENOENT);
    cr_expect_eq(freed, 12345, "*freed written on error");
    cr_expect_eq(pool_add_chunks(pool, 3), PINPOOL_EINVAL);
    cr_expect_eq(pool_lookup(pool, 999, &out), PINPOOL_ENOENT);
    cr_expect_eq(pool_free_owner(pool, 77, &freed), 0);
    cr_expect_eq(freed, 0);
    expect_unchanged(pool, &snap, "after errors");

    /* failed calls used no id */
    a = tp_alloc_ok(pool, 1, 100, 0);
    cr_expect_eq(a.id, 4);
    tp_free_ok(pool, b.id, 2);
    tp_finish(pool);
}

Test(pool, perm_and_enoent, .timeout = 10)
{
    pool_t *pool = tp_mkpool(4096, 1, 256, false, 1);
    pool_slice_info_t a, got;
    uint64_t freed = 0;

    a = tp_alloc_ok(pool, 10, 300, 0);
    cr_expect_eq(pool_free(pool, a.id, 11, NULL), PINPOOL_EPERM);
    cr_expect_eq(pool_free(pool, a.id, 0, NULL), PINPOOL_EPERM);
    cr_assert_eq(pool_lookup(pool, a.id, &got), 0); /* still there */
    cr_expect_eq(got.owner, 10);
    cr_expect_eq(pool_owner_bytes(pool, 10, NULL), 512);
    cr_expect_eq(pool_free(pool, a.id + 1, 10, NULL), PINPOOL_ENOENT);
    cr_assert_eq(pool_free(pool, a.id, 10, &freed), 0);
    cr_expect_eq(freed, 512);
    cr_expect_eq(pool_free(pool, a.id, 10, NULL), PINPOOL_ENOENT); /* double free */
    cr_expect_eq(pool_lookup(pool, a.id, &got), PINPOOL_ENOENT);
    tp_check(pool);
    tp_finish(pool);
}

/* The offset index: only a slice's exact start finds it; it stays right while
 * the tables grow (past 64 slices) and as slices come and go. */
Test(pool, lookup_by_offset, .timeout = 10)
{
    pool_t *pool = tp_mkpool(64 * KiB, 8, 256, false, 8);
    pool_slice_info_t s[300], got;

    cr_expect_eq(pool_lookup_offset(NULL, 0, &got), PINPOOL_EINVAL);
    cr_expect_eq(pool_lookup_offset(pool, 0, &got), PINPOOL_ENOENT);
    for (int i = 0; i < 300; i++)
        s[i] = tp_alloc_ok(pool, 1 + (uint64_t)(i % 2), 100 + 37 * (uint64_t)(i % 13), 0);
    for (int i = 0; i < 300; i++) {
        cr_assert_eq(pool_lookup_offset(pool, s[i].offset, &got), 0, "slice %d", i);
        cr_expect_eq(got.id, s[i].id);
        cr_expect_eq(got.size, s[i].size);
        if (s[i].extent > 256)
            cr_expect_eq(pool_lookup_offset(pool, s[i].offset + 256, NULL), PINPOOL_ENOENT,
                         "inside slice %d", i);
    }
    for (int i = 0; i < 300; i += 3)
        tp_free_ok(pool, s[i].id, s[i].owner);
    for (int i = 0; i < 300; i++) {
        int rc = pool_lookup_offset(pool, s[i].offset, &got);

        if (i % 3 == 0) {
            cr_expect_eq(rc, PINPOOL_ENOENT, "freed slice %d", i);
        } else {
            cr_expect_eq(rc, 0, "slice %d", i);
            cr_expect_eq(got.id, s[i].id);
        }
    }
    /* a new slice in a freed place is found under its own id */
    got = tp_alloc_ok(pool, 3, s[0].size, 0);
    cr_expect_eq(got.offset, s[0].offset);
    cr_assert_eq(pool_lookup_offset(pool, s[0].offset, &s[0]), 0);
    cr_expect_eq(s[0].id, got.id);
    cr_expect_eq(s[0].owner, 3);
    tp_finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Owners                                                                   */

Test(pool, free_owner, .timeout = 10)
{
    pool_t *pool = tp_mkpool(64 * KiB, 1, 256, false, 1);
    pool_slice_info_t s[15], got;
    uint64_t freed = 0, want = 0;
    pool_stats_t st;

    for (int i = 0; i < 15; i++) {
        s[i] = tp_alloc_ok(pool, 1 + (uint64_t)(i % 3), 100 + 200 * (uint64_t)i, 0);
        if (i % 3 == 1)
            want += s[i].extent;
    }
    cr_expect_eq(tp_stats(pool).num_owners, 3);
    cr_expect_eq(pool_free_owner(pool, 2, &freed), 5);
    tp_check(pool);
    cr_expect_eq(freed, want);
    cr_expect_eq(pool_owner_bytes(pool, 2, NULL), 0);
    for (int i = 0; i < 15; i++)
        cr_expect_eq(pool_lookup(pool, s[i].id, &got), i % 3 == 1 ? PINPOOL_ENOENT : 0);
    st = tp_stats(pool);
    cr_expect_eq(st.num_owners, 2);
    cr_expect_eq(st.num_slices, 10);
    cr_expect_eq(pool_free_owner(pool, 2, &freed), 0);
    cr_expect_eq(freed, 0);
    cr_expect_eq(pool_free_owner(pool, 99, NULL), 0);
    cr_expect_eq(pool_free_owner(pool, 1, NULL), 5);
    tp_check(pool);
    cr_expect_eq(tp_stats(pool).num_owners, 1);
    tp_finish(pool);
}

Test(pool, owner_accounting, .timeout = 10)
{
    pool_t *pool = tp_mkpool(4096, 4, 256, true, 4);
    struct tp_owner_list owners = {.n = 0};
    struct tp_slice_list list = {.n = 0};
    pool_slice_info_t a, b, c, d;
    uint32_t n = 99;

    a = tp_alloc_ok(pool, 30, 100, 0);  /* 256 */
    b = tp_alloc_ok(pool, 10, 5000, 0); /* 5120, multi-chunk */
    c = tp_alloc_ok(pool, 30, 600, 0);  /* 768 */
    d = tp_alloc_ok(pool, 20, 256, 0);  /* 256 */
    cr_expect_eq(pool_owner_bytes(pool, 30, &n), 1024);
    cr_expect_eq(n, 2);
    cr_expect_eq(pool_owner_bytes(pool, 10, &n), 5120);
    cr_expect_eq(n, 1);
    cr_expect_eq(pool_owner_bytes(pool, 20, NULL), 256);
    cr_expect_eq(pool_owner_bytes(pool, 40, &n), 0);
    cr_expect_eq(n, 0);
    cr_expect_eq(tp_stats(pool).used, 1024 + 5120 + 256);

    pool_foreach_owner(pool, tp_collect_owner, &owners); /* in owner order */
    cr_assert_eq(owners.n, 3);
    cr_expect_eq(owners.ids[0], 10);
    cr_expect_eq(owners.ids[1], 20);
    cr_expect_eq(owners.ids[2], 30);
    cr_expect_eq(owners.bytes[2], 1024);
    cr_expect_eq(owners.slices[2], 2);

    pool_foreach_slice(pool, 30, false, tp_collect_slice, &list);
    cr_assert_eq(list.n, 2);
    cr_expect_eq(list.v[0].id, a.id);
    cr_expect_eq(list.v[1].id, c.id);
    list.n = 0;
    pool_foreach_slice(pool, 40, false, tp_collect_slice, &list);
    cr_expect_eq(list.n, 0);
    pool_foreach_slice(pool, 0, true, tp_collect_slice, &list); /* every slice, id order */
    cr_assert_eq(list.n, 4);
    for (size_t i = 0; i < 4; i++)
        cr_expect_eq(list.v[i].id, i + 1);

    tp_free_ok(pool, a.id, 30);
    cr_expect_eq(pool_owner_bytes(pool, 30, &n), 768);
    cr_expect_eq(n, 1);
    tp_free_ok(pool, d.id, 20);
    cr_expect_eq(tp_stats(pool).num_owners, 2);
    owners.n = 0;
    pool_foreach_owner(pool, tp_collect_owner, &owners);
    cr_assert_eq(owners.n, 2);
    cr_expect_eq(owners.ids[0], 10);
    cr_expect_eq(owners.ids[1], 30);
    (void)b;
    tp_finish(pool);
}

/*
 * pool_destroy frees live slices, owners and scattered free extents too.  The
 * one test that does not free everything first: run it under ASan/LSan to see
 * a leak or a use after free.
 */
Test(pool, destroy_with_live_slices, .timeout = 10)
{
    pool_t *pool = tp_mkpool(4096, 128, 256, true, 128);
    pool_slice_info_t s[300];

    for (int i = 0; i < 300; i++)
        s[i] = tp_alloc_ok(pool, 1 + (uint64_t)(i % 7), 256 + 97 * (uint64_t)(i % 13), 0);
    for (int i = 0; i < 300; i += 3)
        tp_free_ok(pool, s[i].id, s[i].owner);
    cr_expect_gt(tp_stats(pool).num_free_extents, 50);
    pool_destroy(pool);
}

/* ------------------------------------------------------------------------ */
/* Stats                                                                    */

Test(pool, fragmentation, .timeout = 10)
{
    pool_t *pool = tp_mkpool(4096, 1, 256, false, 1);
    pool_slice_info_t s[16];
    pool_stats_t st;

    st = tp_stats(pool);
    cr_expect_eq(st.fragmentation, 0.0);
    cr_expect_eq(st.largest_free, 4096);
    for (int i = 0; i < 16; i++)
        s[i] = tp_alloc_ok(pool, 1, 256, 0);
    st = tp_stats(pool);
    cr_expect_eq(st.free, 0);
    cr_expect_eq(st.largest_free, 0);
    cr_expect_eq(st.fragmentation, 0.0); /* free == 0 */
    for (int i = 0; i < 16; i += 2)
        tp_free_ok(pool, s[i].id, 1);
    st = tp_stats(pool);
    cr_expect_eq(st.free, 2048);
    cr_expect_eq(st.largest_free, 256);
    cr_expect_eq(st.num_free_extents, 8);
    cr_expect_float_eq(st.fragmentation, 1.0 - 256.0 / 2048.0, 1e-12);
    tp_free_ok(pool, s[1].id, 1); /* [0, 768) */
    st = tp_stats(pool);
    cr_expect_eq(st.largest_free, 768);
    cr_expect_eq(st.num_free_extents, 7);
    cr_expect_float_eq(st.fragmentation, 1.0 - 768.0 / 2304.0, 1e-12);
    tp_finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Tenants, claims, dirty memory                                            */

#define TA 1000 /* two tenants, as two uids */
#define TB 1001

static pool_slice_info_t alloc_as_ok(pool_t *pool, uint64_t tenant, uint64_t owner,
                                     uint64_t size)
{
    pool_slice_info_t s;
    int rc = pool_alloc_as(pool, tenant, owner, size, 0, &s);

    cr_assert_eq(rc, 0, "pool_alloc_as(tenant %" PRIu64 ", size %" PRIu64 ") = %d", tenant,
                 size, rc);
    cr_assert_eq(s.tenant, tenant);
    tp_check(pool);
    return s;
}

static pool_chunk_info_t chunk_info(const pool_t *pool, uint32_t c)
{
    pool_chunk_info_t ci;

    cr_assert_eq(pool_chunk_info(pool, c, &ci), 0);
    return ci;
}

Test(pool, tenants_never_share_a_chunk, .timeout = 10)
{
    pool_t *pool = tp_mkpool(4096, 4, 256, false, 4);
    pool_slice_info_t a1, a2, b1, b2;

    a1 = alloc_as_ok(pool, TA, 1, 1024);
    b1 = alloc_as_ok(pool, TB, 2, 1024); /* room in chunk 0, but it is A's */
    cr_expect_eq(a1.first_chunk, 0);
    cr_expect_eq(b1.first_chunk, 1);
    a2 = alloc_as_ok(pool, TA, 3, 2048); /* A's own chunk first */
    b2 = alloc_as_ok(pool, TB, 2, 3072);
    cr_expect_eq(a2.first_chunk, 0);
    cr_expect_eq(b2.first_chunk, 1);
    cr_expect_eq(chunk_info(pool, 0).tenant, TA);
    cr_expect_eq(chunk_info(pool, 1).tenant, TB);
    cr_expect_eq(chunk_info(pool, 2).tenant, POOL_TENANT_NONE);
    cr_expect_eq(tp_stats(pool).num_tenants, 2);
    /* B's chunk is full: B gets a chunk never used, not A's 1 KiB */
    b1 = alloc_as_ok(pool, TB, 2, 1024);
    cr_expect_eq(b1.first_chunk, 2);
    /* without chunks never used, the other tenant's free bytes stay its own */
    alloc_as_ok(pool, TA, 1, 4096);
    cr_expect_eq(pool_alloc_as(pool, TB, 2, 3072, 0, NULL), 0);
    cr_expect_eq(pool_alloc_as(pool, TB, 2, 1024, 0, NULL), PINPOOL_ENOSPC,
                 "1 KiB is free in chunk 0, but that is A's");
    cr_expect_eq(pool_alloc_as(pool, POOL_TENANT_NONE, 2, 256, 0, NULL), PINPOOL_EINVAL);
    tp_finish(pool);
}

Test(pool, idle_chunk_is_reused_by_its_tenant_and_claimed_by_another, .timeout = 10)
{
    pool_t *pool = tp_mkpool(4096, 2, 256, false, 2);
    pool_slice_info_t a, b;
    pool_claim_t c;

    a = alloc_as_ok(pool, TA, 1, 2048);
    b = alloc_as_ok(pool, TB, 2, 4096);
    tp_free_ok(pool, a.id, 1);
    cr_expect(chunk_info(pool, 0).idle, "chunk 0 stays A's, idle");
    cr_expect_eq(chunk_info(pool, 0).tenant, TA);
    cr_expect_eq(tp_stats(pool).idle_chunks, 1);
    /* A comes back: the same chunk, no claim */
    a = alloc_as_ok(pool, TA, 1, 4096);
    cr_expect_eq(a.first_chunk, 0);
    tp_free_ok(pool, a.id, 1);
    /* B needs room: nothing of B's or never used; a claim of A's idle chunk */
    cr_expect_eq(pool_alloc_as(pool, TB, 2, 100, 0, NULL), PINPOOL_ENOSPC);
    cr_expect_eq(pool_claim(pool, TB, 100, 0, &c), 0);
    tp_check(pool);
    cr_expect(c.tenant == TB && c.first == 0 && c.n == 1 && c.fresh == 1);
    cr_expect(pool_claim_fresh(pool, 0));
    cr_expect(chunk_info(pool, 0).claimed);
    cr_expect_eq(tp_stats(pool).claimed, 4096);
    cr_expect_eq(tp_stats(pool).free, 0, "a claimed chunk is nobody's free space");
    cr_expect_eq(pool_alloc_as(pool, TA, 1, 100, 0, NULL), PINPOOL_ENOSPC,
                 "nobody allocates in a claimed chunk");
    /* the replacement failed: the chunk goes back to A */
    pool_claim_end(pool, &c, false);
    tp_check(pool);
    cr_expect_eq(chunk_info(pool, 0).tenant, TA);
    cr_expect(chunk_info(pool, 0).idle);
    cr_expect_eq(pool_claim(pool, TB, 100, 0, &c), 0);
    pool_claim_end(pool, &c, true);
    tp_check(pool);
    cr_expect_eq(chunk_info(pool, 0).tenant, TB);
    cr_expect_eq(tp_stats(pool).num_tenants, 1, "A has no chunk left");
    a = alloc_as_ok(pool, TB, 2, 100);
    cr_expect_eq(a.first_chunk, 0);
    /* nothing is idle now: no claim */
    cr_expect_eq(pool_claim(pool, TA, 100, 0, &c), PINPOOL_ENOSPC);
    tp_free_ok(pool, b.id, 2);
    cr_expect_eq(pool_claim(pool, TB, 100, 0, &c), PINPOOL_ENOSPC,
                 "B's own idle chunk needs no claim");
    tp_finish(pool);
}

Test(pool, claim_of_several_chunks_needs_the_fewest_fresh, .timeout = 10)
{
    pool_t *pool = tp_mkpool(4096, 4, 256, true, 4);
    pool_slice_info_t s[4];
    pool_claim_t c;

    /* chunks: 0 A, 1 B, 2 A, 3 B, all idle */
    s[0] = alloc_as_ok(pool, TA, 1, 4096);
    s[1] = alloc_as_ok(pool, TB, 2, 4096);
    s[2] = alloc_as_ok(pool, TA, 1, 4096);
    s[3] = alloc_as_ok(pool, TB, 2, 4096);
    for (int i = 0; i < 4; i++)
        tp_free_ok(pool, s[i].id, i % 2 ? 2 : 1);
    cr_expect_eq(pool_alloc_as(pool, TA, 1, 8192, 0, NULL), PINPOOL_ENOSPC,
                 "no two chunks in a row are A's");
    cr_expect_eq(pool_claim(pool, TA, 8192, 0, &c), 0);
    cr_expect(c.first == 0 && c.n == 2 && c.fresh == 1, "claim %" PRIu32 "+%" PRIu32 " fresh %"
              PRIu32, c.first, c.n, c.fresh);
    cr_expect(!pool_claim_fresh(pool, 0) && pool_claim_fresh(pool, 1));
    pool_claim_end(pool, &c, true);
    s[0] = alloc_as_ok(pool, TA, 1, 8192);
    cr_expect_eq(s[0].offset, 0);
    cr_expect_eq(s[0].nchunks, 2);
    tp_free_ok(pool, s[0].id, 1);
    tp_finish(pool);
}

Test(pool, dirty_memory_is_nobodys_until_cleaned, .timeout = 10)
{
    pool_params_t params = {.chunk_size = 4096, .max_chunks = 1, .quantum = 256,
                            .dirty_on_free = true};
    pool_t *pool = NULL;
    pool_slice_info_t a, b, got;
    pool_dirty_t d1, d2;
    uint64_t freed = 0;

    cr_assert_eq(pool_create(&pool, &params), 0);
    cr_assert_eq(pool_add_chunks(pool, 1), 0);
    a = alloc_as_ok(pool, TA, 1, 4096);
    cr_assert_eq(pool_free(pool, a.id, 1, &freed), 0);
    tp_check(pool);
    cr_expect_eq(freed, 4096);
    cr_expect_eq(tp_stats(pool).used, 0, "dirty bytes are not in use");
    cr_expect_eq(tp_stats(pool).dirty, 4096);
    cr_expect_eq(pool_dirty_bytes(pool), 4096);
    cr_expect_eq(tp_stats(pool).free, 0);
    cr_expect_eq(pool_lookup(pool, a.id, &got), PINPOOL_ENOENT);
    cr_expect_eq(pool_lookup_offset(pool, 0, &got), PINPOOL_ENOENT);
    cr_expect_eq(pool_free(pool, a.id, 1, NULL), PINPOOL_ENOENT);
    cr_expect_eq(pool_alloc_as(pool, TA, 1, 256, 0, NULL), PINPOOL_ENOSPC);
    cr_expect(!chunk_info(pool, 0).idle, "a chunk with dirty bytes is busy");
    cr_expect_eq(pool_clean_done(pool, a.id), PINPOOL_ENOENT, "not taken yet");
    cr_assert_eq(pool_clean_take(pool, &d1), 0);
    cr_expect(d1.id == a.id && d1.offset == 0 && d1.len == 4096);
    cr_expect_eq(pool_clean_take(pool, &d2), PINPOOL_ENOENT);
    cr_expect_eq(pool_clean_done(pool, d1.id), 0);
    tp_check(pool);
    cr_expect_eq(tp_stats(pool).dirty, 0);
    cr_expect(chunk_info(pool, 0).idle);
    /* two dirty extents: taken oldest first, done in any order */
    a = alloc_as_ok(pool, TA, 1, 1024);
    b = alloc_as_ok(pool, TA, 2, 1024);
    cr_expect_eq(pool_free_owner(pool, 2, NULL), 1);
    tp_free_ok(pool, a.id, 1);
    cr_assert_eq(pool_clean_take(pool, &d1), 0);
    cr_assert_eq(pool_clean_take(pool, &d2), 0);
    cr_expect(d1.id == b.id && d2.id == a.id);
    cr_expect_eq(pool_clean_done(pool, d2.id), 0);
    a = alloc_as_ok(pool, TA, 1, 1024);
    cr_expect_eq(a.offset, 0, "cleaned memory is free again");
    cr_expect_eq(pool_clean_done(pool, d1.id), 0);
    tp_free_ok(pool, a.id, 1);
    /* a slice nobody could write is clean when freed, until it changes owner */
    cr_assert_eq(pool_clean_take(pool, &d1), 0);
    cr_assert_eq(pool_clean_done(pool, d1.id), 0);
    a = alloc_as_ok(pool, TA, 1, 1024);
    cr_expect_eq(pool_mark_unwritten(pool, a.id), 0);
    b = alloc_as_ok(pool, TA, 1, 1024);
    cr_expect_eq(pool_mark_unwritten(pool, b.id), 0);
    cr_expect_eq(pool_set_owner(pool, b.id, 1, 2), 0);
    tp_free_ok(pool, a.id, 1);
    cr_expect_eq(tp_stats(pool).dirty, 0, "an unwritten slice freed is free at once");
    tp_free_ok(pool, b.id, 2);
    cr_expect_eq(tp_stats(pool).dirty, 1024, "a slice that changed owner may have been written");
    cr_expect_eq(pool_mark_unwritten(pool, b.id), PINPOOL_ENOENT);
    /* an owner gets back what it freed itself (and only it; only that size) */
    a = alloc_as_ok(pool, TA, 1, 1024);
    tp_free_ok(pool, a.id, 1);
    cr_expect_eq(pool_alloc_own(pool, TA, 3, 1024, 0, &got), PINPOOL_ENOENT, "another owner's");
    cr_expect_eq(pool_alloc_own(pool, TA, 1, 2048, 0, &got), PINPOOL_ENOENT, "another size");
    cr_expect_eq(pool_alloc_own(pool, TB, 1, 1024, 0, &got), PINPOOL_ENOENT, "another tenant");
    cr_assert_eq(pool_alloc_own(pool, TA, 1, 1000, 0, &got), 0);
    tp_check(pool);
    cr_expect(got.offset == a.offset && got.id != a.id && got.size == 1000 && got.owner == 1);
    cr_expect_eq(tp_stats(pool).used, 1024, "used %" PRIu64, tp_stats(pool).used);
    tp_free_ok(pool, got.id, 1);
    tp_finish(pool);
}
