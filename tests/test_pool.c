/*
 * test_pool.c - the allocator (pool/pool.c) against pool.h's contract.
 *
 * Owns: the pools each test makes; every test ends with finish(), which frees
 * what is left, checks the pool is back to zero bytes used and one coalesced
 * free extent, and destroys it (destroy_with_live_slices alone destroys a
 * full pool on purpose).  The randomized test checks every operation
 * against a reference model (a sorted array of live slices that computes the
 * best-fit placement by brute force).
 * Never: looks inside a pool_t; only pool.h's functions.  Locking: none.
 */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pinpool.h"
#include "pool.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

static void check(const pool_t *pool)
{
    char msg[256];

    cr_assert_eq(pool_check(pool, msg, sizeof(msg)), 0, "pool_check: %s", msg);
}

static pool_t *mkpool(uint64_t chunk, uint32_t max_chunks, uint64_t quantum, bool multi,
                      uint32_t ready)
{
    pool_params_t params = {.chunk_size = chunk, .max_chunks = max_chunks,
                            .quantum = quantum, .allow_multi_chunk = multi};
    pool_t *pool = NULL;

    cr_assert_eq(pool_create(&pool, &params), 0);
    cr_assert_not_null(pool);
    cr_assert_eq(pool_add_chunks(pool, ready), 0);
    check(pool);
    return pool;
}

static pool_slice_info_t alloc_ok(pool_t *pool, uint64_t owner, uint64_t size, uint64_t align)
{
    pool_slice_info_t s;
    int rc = pool_alloc(pool, owner, size, align, &s);

    cr_assert_eq(rc, 0, "pool_alloc(owner %" PRIu64 ", size %" PRIu64 ", align %" PRIu64
                 ") = %d", owner, size, align, rc);
    check(pool);
    return s;
}

static void free_ok(pool_t *pool, uint64_t id, uint64_t owner)
{
    cr_assert_eq(pool_free(pool, id, owner, NULL), 0, "pool_free(%" PRIu64 ")", id);
    check(pool);
}

static pool_stats_t stats(const pool_t *pool)
{
    pool_stats_t st;

    pool_get_stats(pool, &st);
    return st;
}

static void expect_same_stats(const pool_stats_t *a, const pool_stats_t *b, const char *what)
{
    cr_expect_eq(a->capacity, b->capacity, "%s: capacity", what);
    cr_expect_eq(a->ready, b->ready, "%s: ready", what);
    cr_expect_eq(a->used, b->used, "%s: used", what);
    cr_expect_eq(a->free, b->free, "%s: free", what);
    cr_expect_eq(a->largest_free, b->largest_free, "%s: largest_free", what);
    cr_expect_eq(a->ready_chunks, b->ready_chunks, "%s: ready_chunks", what);
    cr_expect_eq(a->num_slices, b->num_slices, "%s: num_slices", what);
    cr_expect_eq(a->num_free_extents, b->num_free_extents, "%s: num_free_extents", what);
    cr_expect_eq(a->num_owners, b->num_owners, "%s: num_owners", what);
    cr_expect_eq(a->fragmentation, b->fragmentation, "%s: fragmentation", what);
}

struct owner_list {
    uint64_t ids[64];
    uint64_t bytes[64];
    uint32_t slices[64];
    size_t n;
};

static void collect_owner(uint64_t owner, uint64_t bytes, uint32_t slices, void *arg)
{
    struct owner_list *l = arg;

    cr_assert_lt(l->n, 64);
    l->ids[l->n] = owner;
    l->bytes[l->n] = bytes;
    l->slices[l->n] = slices;
    l->n++;
}

struct slice_list {
    pool_slice_info_t v[256];
    size_t n;
};

static void collect_slice(const pool_slice_info_t *s, void *arg)
{
    struct slice_list *l = arg;

    cr_assert_lt(l->n, 256);
    l->v[l->n++] = *s;
}

/* Free what is left, check the pool is whole again, destroy it. */
static void finish(pool_t *pool)
{
    struct owner_list owners = {.n = 0};
    pool_stats_t st;

    pool_foreach_owner(pool, collect_owner, &owners);
    for (size_t i = 0; i < owners.n; i++) {
        uint64_t freed = 0;

        cr_assert_eq(pool_free_owner(pool, owners.ids[i], &freed), (int)owners.slices[i]);
        cr_assert_eq(freed, owners.bytes[i]);
        check(pool);
    }
    st = stats(pool);
    cr_assert_eq(st.used, 0);
    cr_assert_eq(st.num_slices, 0);
    cr_assert_eq(st.num_owners, 0);
    cr_assert_eq(st.free, st.ready);
    cr_assert_eq(st.largest_free, st.ready);
    cr_assert_eq(st.num_free_extents, st.ready > 0 ? 1u : 0u);
    cr_assert_eq(st.fragmentation, 0.0);
    pool_destroy(pool);
}

static bool crosses_chunk(const pool_slice_info_t *s, uint64_t chunk)
{
    return s->offset / chunk != (s->offset + s->extent - 1) / chunk;
}

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
    cr_expect_eq(stats(pool).capacity, 4 * 4096);
    cr_expect_eq(stats(pool).ready, 0);
    /* no chunk is usable yet */
    cr_expect_eq(pool_alloc(pool, 1, 1, 0, &s), PINPOOL_ENOSPC);
    cr_assert_eq(pool_add_chunks(pool, 1), 0);
    s = alloc_ok(pool, 1, 1, 0);
    cr_expect_eq(s.extent, 256);
    finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Basics                                                                   */

Test(pool, basic_alloc_free, .timeout = 10)
{
    pool_t *pool = mkpool(1 * MiB, 4, 256, false, 4);
    pool_slice_info_t a, b, c, got;
    pool_stats_t st;
    uint64_t freed = 0;

    a = alloc_ok(pool, 7, 1000, 0);
    cr_expect_eq(a.id, 1);
    cr_expect_eq(a.owner, 7);
    cr_expect_eq(a.offset, 0);
    cr_expect_eq(a.size, 1000);
    cr_expect_eq(a.extent, 1024);
    cr_expect_eq(a.first_chunk, 0);
    cr_expect_eq(a.nchunks, 1);
    b = alloc_ok(pool, 7, 256, 0);
    cr_expect_eq(b.id, 2);
    cr_expect_eq(b.offset, 1024);
    cr_expect_eq(b.extent, 256);

    cr_assert_eq(pool_lookup(pool, a.id, &got), 0);
    cr_expect_eq(memcmp(&got, &a, sizeof(a)), 0);
    st = stats(pool);
    cr_expect_eq(st.used, 1280);
    cr_expect_eq(st.free, 4 * MiB - 1280);
    cr_expect_eq(st.num_slices, 2);
    cr_expect_eq(st.num_owners, 1);
    cr_expect_eq(st.num_free_extents, 1);

    cr_assert_eq(pool_free(pool, a.id, 7, &freed), 0);
    cr_expect_eq(freed, 1024);
    check(pool);
    cr_expect_eq(pool_lookup(pool, a.id, &got), PINPOOL_ENOENT);
    cr_expect_eq(stats(pool).num_free_extents, 2); /* [0, 1024) and after b */

    /* the hole is the best fit for a small slice; ids never repeat */
    c = alloc_ok(pool, 8, 512, 0);
    cr_expect_eq(c.id, 3);
    cr_expect_eq(c.offset, 0);
    free_ok(pool, b.id, 7);
    free_ok(pool, c.id, 8);
    cr_expect_eq(stats(pool).num_free_extents, 1);
    finish(pool);
}

Test(pool, free_coalesces_both_sides, .timeout = 10)
{
    pool_t *pool = mkpool(64 * KiB, 1, 256, false, 1);
    pool_slice_info_t s[5];

    for (int i = 0; i < 5; i++)
        s[i] = alloc_ok(pool, 1, 1024, 0);
    free_ok(pool, s[1].id, 1);
    free_ok(pool, s[3].id, 1);
    cr_expect_eq(stats(pool).num_free_extents, 3); /* s1, s3, tail */
    free_ok(pool, s[2].id, 1);                     /* joins s1 and s3 */
    cr_expect_eq(stats(pool).num_free_extents, 2);
    cr_expect_eq(stats(pool).largest_free, 64 * KiB - 5 * 1024);
    free_ok(pool, s[4].id, 1); /* joins [1024, 4096) and the tail */
    cr_expect_eq(stats(pool).num_free_extents, 1);
    cr_expect_eq(stats(pool).largest_free, 63 * KiB);
    free_ok(pool, s[0].id, 1);
    cr_expect_eq(stats(pool).num_free_extents, 1);
    finish(pool);
}

Test(pool, best_fit, .timeout = 10)
{
    pool_t *pool = mkpool(64 * KiB, 1, 256, false, 1);
    pool_slice_info_t s[8], a;

    /* holes of 2 KiB at 0, 1 KiB at 3072, 1 KiB at 5120, 3 KiB at 7168 */
    s[0] = alloc_ok(pool, 1, 2048, 0); /* 0 */
    s[1] = alloc_ok(pool, 1, 1024, 0); /* 2048 */
    s[2] = alloc_ok(pool, 1, 1024, 0); /* 3072 */
    s[3] = alloc_ok(pool, 1, 1024, 0); /* 4096 */
    s[4] = alloc_ok(pool, 1, 1024, 0); /* 5120 */
    s[5] = alloc_ok(pool, 1, 1024, 0); /* 6144 */
    s[6] = alloc_ok(pool, 1, 3072, 0); /* 7168 */
    s[7] = alloc_ok(pool, 1, 1024, 0); /* 10240 */
    free_ok(pool, s[0].id, 1);
    free_ok(pool, s[2].id, 1);
    free_ok(pool, s[4].id, 1);
    free_ok(pool, s[6].id, 1);

    a = alloc_ok(pool, 2, 1000, 0); /* two 1 KiB holes: the lower one */
    cr_expect_eq(a.offset, 3072);
    a = alloc_ok(pool, 2, 1024, 0);
    cr_expect_eq(a.offset, 5120);
    a = alloc_ok(pool, 2, 1500, 0); /* 2 KiB hole beats 3 KiB and the tail */
    cr_expect_eq(a.offset, 0);
    a = alloc_ok(pool, 2, 2048, 0);
    cr_expect_eq(a.offset, 7168);
    a = alloc_ok(pool, 2, 512, 0); /* the 512 B left of the 2 KiB hole */
    cr_expect_eq(a.offset, 1536);
    /* alignment may skip the best candidate: the 1 KiB hole left at 9216
     * holds no 4 KiB aligned offset, so the tail (from 11264) serves */
    a = alloc_ok(pool, 2, 256, 4096);
    cr_expect_eq(a.offset, 12288);
    finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Alignment and the chunk boundary rule                                    */


Test(pool, alignment, .timeout = 10)
{
    pool_t *pool = mkpool(64 * KiB, 4, 256, false, 4);
    pool_slice_info_t a;
    pool_stats_t before, after;

    a = alloc_ok(pool, 1, 100, 0); /* 0 = the quantum */
    cr_expect_eq(a.offset, 0);
    cr_expect_eq(a.extent, 256);
    a = alloc_ok(pool, 1, 100, 4096);
    cr_expect_eq(a.offset, 4096);
    a = alloc_ok(pool, 1, 100, 128); /* below the quantum: offsets stay quantum aligned */
    cr_expect_eq(a.offset, 256);
    a = alloc_ok(pool, 1, 100, 1);
    cr_expect_eq(a.offset, 512);
    a = alloc_ok(pool, 1, 100, 64 * KiB); /* the chunk size itself */
    cr_expect_eq(a.offset, 64 * KiB);
    a = alloc_ok(pool, 1, 5000, 8192);
    cr_expect_eq(a.offset, 8192);
    cr_expect_eq(a.extent, 5120);

    before = stats(pool);
    cr_expect_eq(pool_alloc(pool, 1, 100, 3, NULL), PINPOOL_EALIGN);
    cr_expect_eq(pool_alloc(pool, 1, 100, 768, NULL), PINPOOL_EALIGN);       /* not 2^k */
    cr_expect_eq(pool_alloc(pool, 1, 100, 128 * KiB, NULL), PINPOOL_EALIGN); /* > chunk */
    cr_expect_eq(pool_alloc(pool, 1, 100, 1ull << 63, NULL), PINPOOL_EALIGN);
    cr_expect_eq(pool_alloc(pool, 1, 100, UINT64_MAX, NULL), PINPOOL_EALIGN);
    check(pool);
    after = stats(pool);
    expect_same_stats(&before, &after, "alignment errors");
    finish(pool);
}

Test(pool, boundary_rule, .timeout = 10)
{
    pool_t *pool = mkpool(4096, 2, 256, false, 2);
    pool_slice_info_t a, b, c, d;

    a = alloc_ok(pool, 1, 3072, 0);
    cr_expect_eq(a.offset, 0);
    b = alloc_ok(pool, 1, 2048, 0); /* at 3072 it would cross into chunk 1 */
    cr_expect_eq(b.offset, 4096);
    cr_expect_eq(b.first_chunk, 1);
    cr_expect_eq(b.nchunks, 1);
    c = alloc_ok(pool, 1, 1024, 0); /* the 1 KiB hole at the end of chunk 0 */
    cr_expect_eq(c.offset, 3072);
    free_ok(pool, a.id, 1);
    free_ok(pool, c.id, 1);
    cr_expect_eq(stats(pool).num_free_extents, 2); /* [0, 4096) and [6144, 8192) */
    free_ok(pool, b.id, 1);
    cr_expect_eq(stats(pool).num_free_extents, 1); /* coalesced across the boundary */

    /* a free extent that spans the boundary, [2048, 8192) */
    a = alloc_ok(pool, 1, 2048, 0);
    b = alloc_ok(pool, 1, 4096, 0); /* a whole chunk fits only in chunk 1 */
    cr_expect_eq(b.offset, 4096);
    free_ok(pool, b.id, 1);
    c = alloc_ok(pool, 1, 1024, 0);
    cr_expect_eq(c.offset, 2048);
    d = alloc_ok(pool, 1, 3072, 0); /* [3072, 6144) would cross: next chunk */
    cr_expect_eq(d.offset, 4096);
    cr_expect(!crosses_chunk(&a, 4096) && !crosses_chunk(&c, 4096) &&
              !crosses_chunk(&d, 4096));
    /* 2 KiB free in two pieces of 1 KiB, one per chunk; 1.5 KiB fits neither */
    cr_expect_eq(stats(pool).free, 2048);
    cr_expect_eq(pool_alloc(pool, 1, 1536, 0, NULL), PINPOOL_ENOSPC);
    check(pool);
    finish(pool);
}

Test(pool, multi_chunk_off, .timeout = 10)
{
    pool_t *pool = mkpool(4096, 4, 256, false, 4);
    pool_stats_t before = stats(pool), after;
    pool_slice_info_t a;

    cr_expect_eq(pool_alloc(pool, 1, 4097, 0, NULL), PINPOOL_ETOOBIG);
    cr_expect_eq(pool_alloc(pool, 1, 3 * 4096, 0, NULL), PINPOOL_ETOOBIG);
    cr_expect_eq(pool_alloc(pool, 1, 4 * 4096 + 1, 0, NULL), PINPOOL_ETOOBIG);
    cr_expect_eq(pool_alloc(pool, 1, UINT64_MAX, 0, NULL), PINPOOL_ETOOBIG);
    check(pool);
    after = stats(pool);
    expect_same_stats(&before, &after, "too big");
    a = alloc_ok(pool, 1, 4096, 0);
    cr_expect_eq(a.nchunks, 1);
    a = alloc_ok(pool, 1, 4000, 0); /* rounds up to 4096, still one chunk */
    cr_expect_eq(a.extent, 4096);
    cr_expect_eq(a.offset, 4096);
    finish(pool);
}

Test(pool, multi_chunk_on, .timeout = 10)
{
    pool_t *pool = mkpool(4096, 4, 256, true, 4);
    pool_slice_info_t a, b, c, d;

    a = alloc_ok(pool, 1, 256, 0);
    b = alloc_ok(pool, 1, 5000, 0); /* starts on the next chunk boundary */
    cr_expect_eq(b.offset, 4096);
    cr_expect_eq(b.extent, 5120);
    cr_expect_eq(b.first_chunk, 1);
    cr_expect_eq(b.nchunks, 2);
    c = alloc_ok(pool, 1, 3072, 0); /* best fit: the rest of chunk 0 */
    cr_expect_eq(c.offset, 256);
    d = alloc_ok(pool, 1, 2048, 0); /* the tail of b's last chunk stays usable */
    cr_expect_eq(d.offset, 9216);
    /* [11264, 16384) is large enough but holds no chunk boundary + 4352 */
    cr_expect_eq(pool_alloc(pool, 1, 4097, 0, NULL), PINPOOL_ENOSPC);
    check(pool);
    free_ok(pool, a.id, 1);
    free_ok(pool, b.id, 1);
    free_ok(pool, c.id, 1);
    free_ok(pool, d.id, 1);

    a = alloc_ok(pool, 2, 4 * 4096, 0); /* the whole pool */
    cr_expect_eq(a.offset, 0);
    cr_expect_eq(a.nchunks, 4);
    cr_expect_eq(stats(pool).free, 0);
    cr_expect_eq(stats(pool).num_free_extents, 0);
    free_ok(pool, a.id, 2);
    a = alloc_ok(pool, 2, 100, 0);
    b = alloc_ok(pool, 2, 8192, 0); /* exactly two chunks */
    cr_expect_eq(b.offset, 4096);
    cr_expect_eq(b.nchunks, 2);
    cr_expect_eq(b.extent, 8192);
    cr_expect_eq(pool_alloc(pool, 1, 4 * 4096 + 1, 0, NULL), PINPOOL_ETOOBIG);
    finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Growth                                                                   */

Test(pool, add_chunks_grows_and_coalesces, .timeout = 10)
{
    pool_t *pool = mkpool(4096, 4, 256, false, 1);
    pool_slice_info_t a, b, c;
    pool_stats_t st, before;

    a = alloc_ok(pool, 1, 1024, 0);
    cr_assert_eq(pool_add_chunks(pool, 1), 0); /* [1024, 4096) grows to [1024, 8192) */
    check(pool);
    st = stats(pool);
    cr_expect_eq(st.ready_chunks, 2);
    cr_expect_eq(st.ready, 8192);
    cr_expect_eq(st.num_free_extents, 1);
    cr_expect_eq(st.largest_free, 7168);
    b = alloc_ok(pool, 1, 3072, 0); /* still must not cross chunk 0's end */
    cr_expect_eq(b.offset, 1024);
    c = alloc_ok(pool, 1, 4096, 0);
    cr_expect_eq(c.offset, 4096);
    cr_expect_eq(stats(pool).num_free_extents, 0);

    cr_assert_eq(pool_add_chunks(pool, 1), 0); /* nothing free ends at 8192 */
    check(pool);
    cr_expect_eq(stats(pool).num_free_extents, 1);
    cr_expect_eq(stats(pool).largest_free, 4096);
    free_ok(pool, a.id, 1);
    free_ok(pool, b.id, 1);
    cr_expect_eq(stats(pool).num_free_extents, 2);
    free_ok(pool, c.id, 1); /* joins [0, 4096) and [8192, 12288) */
    cr_expect_eq(stats(pool).num_free_extents, 1);
    cr_expect_eq(stats(pool).largest_free, 12288);

    before = stats(pool);
    cr_expect_eq(pool_add_chunks(pool, 2), PINPOOL_EINVAL); /* 3 + 2 > 4 */
    cr_expect_eq(pool_add_chunks(pool, UINT32_MAX), PINPOOL_EINVAL);
    cr_expect_eq(pool_add_chunks(pool, 0), 0);
    check(pool);
    st = stats(pool);
    expect_same_stats(&before, &st, "add_chunks errors");
    cr_expect_eq(pool_add_chunks(pool, 1), 0);
    cr_expect_eq(pool_add_chunks(pool, 1), PINPOOL_EINVAL); /* full */
    check(pool);
    st = stats(pool);
    cr_expect_eq(st.ready, st.capacity);
    cr_expect_eq(st.num_free_extents, 1);
    finish(pool);
}

Test(pool, add_chunks_multi, .timeout = 10)
{
    pool_t *pool = mkpool(4096, 4, 256, true, 1);
    pool_slice_info_t a;

    cr_expect_eq(pool_alloc(pool, 1, 8192, 0, NULL), PINPOOL_ENOSPC); /* not ready yet */
    cr_assert_eq(pool_add_chunks(pool, 1), 0);
    a = alloc_ok(pool, 1, 8192, 0); /* spans the chunk that was just added */
    cr_expect_eq(a.offset, 0);
    cr_expect_eq(a.nchunks, 2);
    finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

struct snapshot {
    pool_stats_t st;
    struct slice_list slices;
};

static void take_snapshot(const pool_t *pool, struct snapshot *s)
{
    memset(s, 0, sizeof(*s));
    s->st = stats(pool);
    pool_foreach_slice(pool, 0, true, collect_slice, &s->slices);
}

static void expect_unchanged(const pool_t *pool, const struct snapshot *before, const char *what)
{
    struct snapshot now;

    check(pool);
    take_snapshot(pool, &now);
    expect_same_stats(&before->st, &now.st, what);
    cr_expect_eq(now.slices.n, before->slices.n, "%s: slice count", what);
    cr_expect_eq(memcmp(now.slices.v, before->slices.v, now.slices.n * sizeof(now.slices.v[0])),
                 0, "%s: slices changed", what);
}

Test(pool, errors_leave_pool_unchanged, .timeout = 10)
{
    pool_t *pool = mkpool(4096, 4, 256, false, 2);
    struct snapshot snap;
    pool_slice_info_t a, b, out;
    uint64_t freed = 12345;

    a = alloc_ok(pool, 1, 1000, 0);
    b = alloc_ok(pool, 2, 4096, 0);
    alloc_ok(pool, 2, 2000, 0);
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
    a = alloc_ok(pool, 1, 100, 0);
    cr_expect_eq(a.id, 4);
    free_ok(pool, b.id, 2);
    finish(pool);
}

Test(pool, perm_and_enoent, .timeout = 10)
{
    pool_t *pool = mkpool(4096, 1, 256, false, 1);
    pool_slice_info_t a, got;
    uint64_t freed = 0;

    a = alloc_ok(pool, 10, 300, 0);
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
    check(pool);
    finish(pool);
}

/* The offset index: only a slice's exact start finds it; it stays right while
 * the tables grow (past 64 slices) and as slices come and go. */
Test(pool, lookup_by_offset, .timeout = 10)
{
    pool_t *pool = mkpool(64 * KiB, 8, 256, false, 8);
    pool_slice_info_t s[300], got;

    cr_expect_eq(pool_lookup_offset(NULL, 0, &got), PINPOOL_EINVAL);
    cr_expect_eq(pool_lookup_offset(pool, 0, &got), PINPOOL_ENOENT);
    for (int i = 0; i < 300; i++)
        s[i] = alloc_ok(pool, 1 + (uint64_t)(i % 2), 100 + 37 * (uint64_t)(i % 13), 0);
    for (int i = 0; i < 300; i++) {
        cr_assert_eq(pool_lookup_offset(pool, s[i].offset, &got), 0, "slice %d", i);
        cr_expect_eq(got.id, s[i].id);
        cr_expect_eq(got.size, s[i].size);
        if (s[i].extent > 256)
            cr_expect_eq(pool_lookup_offset(pool, s[i].offset + 256, NULL), PINPOOL_ENOENT,
                         "inside slice %d", i);
    }
    for (int i = 0; i < 300; i += 3)
        free_ok(pool, s[i].id, s[i].owner);
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
    got = alloc_ok(pool, 3, s[0].size, 0);
    cr_expect_eq(got.offset, s[0].offset);
    cr_assert_eq(pool_lookup_offset(pool, s[0].offset, &s[0]), 0);
    cr_expect_eq(s[0].id, got.id);
    cr_expect_eq(s[0].owner, 3);
    finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Owners                                                                   */

Test(pool, free_owner, .timeout = 10)
{
    pool_t *pool = mkpool(64 * KiB, 1, 256, false, 1);
    pool_slice_info_t s[15], got;
    uint64_t freed = 0, want = 0;
    pool_stats_t st;

    for (int i = 0; i < 15; i++) {
        s[i] = alloc_ok(pool, 1 + (uint64_t)(i % 3), 100 + 200 * (uint64_t)i, 0);
        if (i % 3 == 1)
            want += s[i].extent;
    }
    cr_expect_eq(stats(pool).num_owners, 3);
    cr_expect_eq(pool_free_owner(pool, 2, &freed), 5);
    check(pool);
    cr_expect_eq(freed, want);
    cr_expect_eq(pool_owner_bytes(pool, 2, NULL), 0);
    for (int i = 0; i < 15; i++)
        cr_expect_eq(pool_lookup(pool, s[i].id, &got), i % 3 == 1 ? PINPOOL_ENOENT : 0);
    st = stats(pool);
    cr_expect_eq(st.num_owners, 2);
    cr_expect_eq(st.num_slices, 10);
    cr_expect_eq(pool_free_owner(pool, 2, &freed), 0);
    cr_expect_eq(freed, 0);
    cr_expect_eq(pool_free_owner(pool, 99, NULL), 0);
    cr_expect_eq(pool_free_owner(pool, 1, NULL), 5);
    check(pool);
    cr_expect_eq(stats(pool).num_owners, 1);
    finish(pool);
}

Test(pool, owner_accounting, .timeout = 10)
{
    pool_t *pool = mkpool(4096, 4, 256, true, 4);
    struct owner_list owners = {.n = 0};
    struct slice_list list = {.n = 0};
    pool_slice_info_t a, b, c, d;
    uint32_t n = 99;

    a = alloc_ok(pool, 30, 100, 0);  /* 256 */
    b = alloc_ok(pool, 10, 5000, 0); /* 5120, multi-chunk */
    c = alloc_ok(pool, 30, 600, 0);  /* 768 */
    d = alloc_ok(pool, 20, 256, 0);  /* 256 */
    cr_expect_eq(pool_owner_bytes(pool, 30, &n), 1024);
    cr_expect_eq(n, 2);
    cr_expect_eq(pool_owner_bytes(pool, 10, &n), 5120);
    cr_expect_eq(n, 1);
    cr_expect_eq(pool_owner_bytes(pool, 20, NULL), 256);
    cr_expect_eq(pool_owner_bytes(pool, 40, &n), 0);
    cr_expect_eq(n, 0);
    cr_expect_eq(stats(pool).used, 1024 + 5120 + 256);

    pool_foreach_owner(pool, collect_owner, &owners); /* in owner order */
    cr_assert_eq(owners.n, 3);
    cr_expect_eq(owners.ids[0], 10);
    cr_expect_eq(owners.ids[1], 20);
    cr_expect_eq(owners.ids[2], 30);
    cr_expect_eq(owners.bytes[2], 1024);
    cr_expect_eq(owners.slices[2], 2);

    pool_foreach_slice(pool, 30, false, collect_slice, &list);
    cr_assert_eq(list.n, 2);
    cr_expect_eq(list.v[0].id, a.id);
    cr_expect_eq(list.v[1].id, c.id);
    list.n = 0;
    pool_foreach_slice(pool, 40, false, collect_slice, &list);
    cr_expect_eq(list.n, 0);
    pool_foreach_slice(pool, 0, true, collect_slice, &list); /* every slice, id order */
    cr_assert_eq(list.n, 4);
    for (size_t i = 0; i < 4; i++)
        cr_expect_eq(list.v[i].id, i + 1);

    free_ok(pool, a.id, 30);
    cr_expect_eq(pool_owner_bytes(pool, 30, &n), 768);
    cr_expect_eq(n, 1);
    free_ok(pool, d.id, 20);
    cr_expect_eq(stats(pool).num_owners, 2);
    owners.n = 0;
    pool_foreach_owner(pool, collect_owner, &owners);
    cr_assert_eq(owners.n, 2);
    cr_expect_eq(owners.ids[0], 10);
    cr_expect_eq(owners.ids[1], 30);
    (void)b;
    finish(pool);
}

/*
 * pool_destroy frees live slices, owners and scattered free extents too.  The
 * one test that does not free everything first: run it under ASan/LSan to see
 * a leak or a use after free.
 */
Test(pool, destroy_with_live_slices, .timeout = 10)
{
    pool_t *pool = mkpool(4096, 128, 256, true, 128);
    pool_slice_info_t s[300];

    for (int i = 0; i < 300; i++)
        s[i] = alloc_ok(pool, 1 + (uint64_t)(i % 7), 256 + 97 * (uint64_t)(i % 13), 0);
    for (int i = 0; i < 300; i += 3)
        free_ok(pool, s[i].id, s[i].owner);
    cr_expect_gt(stats(pool).num_free_extents, 50);
    pool_destroy(pool);
}

/* ------------------------------------------------------------------------ */
/* Stats                                                                    */

Test(pool, fragmentation, .timeout = 10)
{
    pool_t *pool = mkpool(4096, 1, 256, false, 1);
    pool_slice_info_t s[16];
    pool_stats_t st;

    st = stats(pool);
    cr_expect_eq(st.fragmentation, 0.0);
    cr_expect_eq(st.largest_free, 4096);
    for (int i = 0; i < 16; i++)
        s[i] = alloc_ok(pool, 1, 256, 0);
    st = stats(pool);
    cr_expect_eq(st.free, 0);
    cr_expect_eq(st.largest_free, 0);
    cr_expect_eq(st.fragmentation, 0.0); /* free == 0 */
    for (int i = 0; i < 16; i += 2)
        free_ok(pool, s[i].id, 1);
    st = stats(pool);
    cr_expect_eq(st.free, 2048);
    cr_expect_eq(st.largest_free, 256);
    cr_expect_eq(st.num_free_extents, 8);
    cr_expect_float_eq(st.fragmentation, 1.0 - 256.0 / 2048.0, 1e-12);
    free_ok(pool, s[1].id, 1); /* [0, 768) */
    st = stats(pool);
    cr_expect_eq(st.largest_free, 768);
    cr_expect_eq(st.num_free_extents, 7);
    cr_expect_float_eq(st.fragmentation, 1.0 - 768.0 / 2304.0, 1e-12);
    finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Randomized, against a reference model                                    */

#define NOWNERS 8

struct ref {
    uint64_t id, owner, off, extent, size;
};

struct model {
    uint64_t counts[8]; /* outcomes, for the log: see run_random */
    uint64_t chunk, quantum, capacity, ready;
    uint32_t max_chunks, ready_chunks;
    bool multi;
    struct ref *v; /* live slices, sorted by offset */
    size_t n, cap;
    uint64_t next_id, used;
    uint64_t owner_bytes[NOWNERS + 1];
    uint32_t owner_slices[NOWNERS + 1];
    struct ref *gaps; /* free space [off, off + extent), scratch */
    size_t ngaps;
};

static uint64_t rng_state;

static uint64_t rnd(void) /* xorshift64* */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static uint64_t rnd_below(uint64_t n)
{
    return rnd() % n;
}

static uint64_t round_to(uint64_t x, uint64_t m)
{
    return (x + m - 1) / m * m;
}

/* The free space between the live slices, coalesced, in offset order. */
static void model_gaps(struct model *m)
{
    uint64_t pos = 0;

    m->ngaps = 0;
    for (size_t i = 0; i <= m->n; i++) {
        uint64_t next = i < m->n ? m->v[i].off : m->ready;

        if (next > pos)
            m->gaps[m->ngaps++] = (struct ref){.off = pos, .extent = next - pos};
        if (i < m->n)
            pos = m->v[i].off + m->v[i].extent;
    }
}

/* Lowest offset in the gap for x bytes aligned to a, by trying them in turn. */
static bool model_place(const struct model *m, const struct ref *g, uint64_t x, uint64_t a,
                        uint64_t *at)
{
    uint64_t end = g->off + g->extent;

    if (x > m->chunk) {
        uint64_t p = round_to(g->off, m->chunk);

        if (p + x > end)
            return false;
        *at = p;
        return true;
    }
    for (uint64_t p = round_to(g->off, a); p + x <= end; p += a) {
        if (p / m->chunk == (p + x - 1) / m->chunk) {
            *at = p;
            return true;
        }
    }
    return false;
}

/* Best fit by brute force: the smallest gap that takes it, ties lowest. */
static bool model_best(struct model *m, uint64_t x, uint64_t a, uint64_t *at)
{
    const struct ref *best = NULL;
    uint64_t best_at = 0, p;

    model_gaps(m);
    for (size_t i = 0; i < m->ngaps; i++) {
        const struct ref *g = &m->gaps[i];

        if (g->extent < x || (best != NULL && g->extent >= best->extent))
            continue; /* gaps come in offset order: equal size keeps the lower */
        if (model_place(m, g, x, a, &p)) {
            best = g;
            best_at = p;
        }
    }
    *at = best_at;
    return best != NULL;
}

static void model_insert(struct model *m, const struct ref *r)
{
    size_t lo = 0, hi = m->n;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;

        if (m->v[mid].off < r->off)
            lo = mid + 1;
        else
            hi = mid;
    }
    cr_assert(lo == 0 || m->v[lo - 1].off + m->v[lo - 1].extent <= r->off,
              "slice %" PRIu64 " overlaps slice %" PRIu64, r->id, m->v[lo - 1].id);
    cr_assert(lo == m->n || r->off + r->extent <= m->v[lo].off,
              "slice %" PRIu64 " overlaps slice %" PRIu64, r->id, m->v[lo].id);
    cr_assert_leq(r->off + r->extent, m->ready, "slice %" PRIu64 " past ready space", r->id);
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 256;
        m->v = realloc(m->v, m->cap * sizeof(*m->v));
        m->gaps = realloc(m->gaps, (m->cap + 1) * sizeof(*m->gaps));
        cr_assert(m->v != NULL && m->gaps != NULL);
    }
    memmove(&m->v[lo + 1], &m->v[lo], (m->n - lo) * sizeof(*m->v));
    m->v[lo] = *r;
    m->n++;
    m->used += r->extent;
    m->owner_bytes[r->owner] += r->extent;
    m->owner_slices[r->owner]++;
}

static void model_remove(struct model *m, size_t i)
{
    const struct ref *r = &m->v[i];

    m->used -= r->extent;
    m->owner_bytes[r->owner] -= r->extent;
    m->owner_slices[r->owner]--;
    memmove(&m->v[i], &m->v[i + 1], (m->n - i - 1) * sizeof(*m->v));
    m->n--;
}

static void model_compare(pool_t *pool, struct model *m, uint64_t op, bool full)
{
    pool_stats_t st;
    uint64_t largest = 0;
    uint32_t owners = 0, n;

    check(pool);
    pool_get_stats(pool, &st);
    model_gaps(m);
    for (size_t i = 0; i < m->ngaps; i++)
        largest = m->gaps[i].extent > largest ? m->gaps[i].extent : largest;
    cr_assert_eq(st.ready, m->ready, "op %" PRIu64 ": ready", op);
    cr_assert_eq(st.ready_chunks, m->ready_chunks, "op %" PRIu64 ": ready_chunks", op);
    cr_assert_eq(st.used, m->used, "op %" PRIu64 ": used", op);
    cr_assert_eq(st.free, m->ready - m->used, "op %" PRIu64 ": free", op);
    cr_assert_eq(st.num_slices, m->n, "op %" PRIu64 ": num_slices", op);
    cr_assert_eq(st.num_free_extents, m->ngaps, "op %" PRIu64 ": free extents", op);
    cr_assert_eq(st.largest_free, largest, "op %" PRIu64 ": largest free", op);
    for (uint64_t o = 1; o <= NOWNERS; o++) {
        cr_assert_eq(pool_owner_bytes(pool, o, &n), m->owner_bytes[o], "op %" PRIu64
                     ": owner %" PRIu64 " bytes", op, o);
        cr_assert_eq(n, m->owner_slices[o]);
        owners += m->owner_slices[o] > 0;
    }
    cr_assert_eq(st.num_owners, owners, "op %" PRIu64 ": owners", op);
    if (!full)
        return;
    for (size_t i = 0; i < m->n; i++) {
        pool_slice_info_t s;

        cr_assert_eq(pool_lookup(pool, m->v[i].id, &s), 0);
        cr_assert(s.offset == m->v[i].off && s.extent == m->v[i].extent &&
                  s.size == m->v[i].size && s.owner == m->v[i].owner,
                  "op %" PRIu64 ": slice %" PRIu64 " differs from the model", op, s.id);
    }
}

static void random_alloc(pool_t *pool, struct model *m, uint64_t op)
{
    uint64_t owner = 1 + rnd_below(NOWNERS), size, align = 0, x, want_at = 0;
    unsigned kind = (unsigned)rnd_below(100);
    pool_slice_info_t s;
    pool_stats_t before, after;
    int rc, want;

    if (kind < 55)
        size = 1 + rnd_below(m->chunk / 16);
    else if (kind < 70)
        size = 1 + rnd_below(m->chunk / 4);
    else if (kind < 85)
        size = m->chunk / 4 + rnd_below(m->chunk - m->chunk / 4) + 1;
    else if (kind < 93)
        size = m->chunk + 1 + rnd_below(3 * m->chunk);
    else if (kind < 96)
        size = m->chunk * (1 + rnd_below(3));
    else if (kind < 97)
        size = 0;
    else if (kind < 98)
        size = m->capacity + 1 + rnd_below(m->capacity);
    else
        size = 1 + rnd_below(m->capacity);
    switch (rnd_below(8)) {
    case 0: case 1: case 2: case 3:
        break;
    case 7:
        if (rnd_below(4) == 0) {
            align = rnd_below(2) ? 3 * m->quantum : 2 * m->chunk; /* invalid */
            break;
        }
        /* fall through */
    default:
        for (uint64_t a = m->chunk; ; a /= 2) {
            align = a;
            if (a == 1 || rnd_below(3) == 0)
                break;
        }
    }

    /* what the pool must answer */
    x = round_to(size, m->quantum);
    if (size == 0)
        want = PINPOOL_EINVAL;
    else if (align != 0 && ((align & (align - 1)) != 0 || m->chunk % align != 0))
        want = PINPOOL_EALIGN;
    else if (size > m->capacity || (x > m->chunk && !m->multi))
        want = PINPOOL_ETOOBIG;
    else {
        uint64_t a = align < m->quantum ? m->quantum : align;

        want = model_best(m, x, a, &want_at) ? 0 : PINPOOL_ENOSPC;
    }

    pool_get_stats(pool, &before);
    rc = pool_alloc(pool, owner, size, align, &s);
    cr_assert_eq(rc, want, "op %" PRIu64 ": alloc(size %" PRIu64 ", align %" PRIu64
                 ") = %d, want %d", op, size, align, rc, want);
    m->counts[rc == 0 ? (x > m->chunk ? 1 : 0) : rc == PINPOOL_ENOSPC ? 2 : 3]++;
    if (rc != 0) {
        pool_get_stats(pool, &after);
        expect_same_stats(&before, &after, "failed alloc");
        return;
    }
    cr_assert_eq(s.id, m->next_id, "op %" PRIu64 ": id", op);
    cr_assert_eq(s.offset, want_at, "op %" PRIu64 ": alloc(size %" PRIu64 ", align %" PRIu64
                 ") at %" PRIu64 ", best fit is %" PRIu64, op, size, align, s.offset, want_at);
    cr_assert(s.owner == owner && s.size == size && s.extent == x);
    cr_assert_eq(s.offset % (align > m->quantum ? align : m->quantum), 0);
    if (x <= m->chunk)
        cr_assert(!crosses_chunk(&s, m->chunk), "op %" PRIu64 ": crosses a chunk", op);
    else
        cr_assert_eq(s.offset % m->chunk, 0, "op %" PRIu64 ": multi-chunk not on a boundary",
                     op);
    cr_assert_eq(s.first_chunk, s.offset / m->chunk);
    cr_assert_eq(s.nchunks, (s.offset + x - 1) / m->chunk - s.offset / m->chunk + 1);
    m->next_id++;
    model_insert(m, &(struct ref){.id = s.id, .owner = owner, .off = s.offset,
                                  .extent = x, .size = size});
}

static void random_free(pool_t *pool, struct model *m, uint64_t op)
{
    unsigned kind = (unsigned)rnd_below(100);
    size_t i;
    uint64_t freed = 0, id;
    pool_stats_t before, after;

    if (m->n == 0 || kind < 3) { /* no such slice */
        id = rnd_below(2) ? m->next_id + rnd_below(10) : 0;
        pool_get_stats(pool, &before);
        cr_assert_eq(pool_free(pool, id, 1, &freed), PINPOOL_ENOENT, "op %" PRIu64, op);
        pool_get_stats(pool, &after);
        expect_same_stats(&before, &after, "ENOENT");
        return;
    }
    i = (size_t)rnd_below(m->n);
    if (kind < 8) { /* somebody else's */
        uint64_t other = m->v[i].owner % NOWNERS + 1;

        pool_get_stats(pool, &before);
        cr_assert_eq(pool_free(pool, m->v[i].id, other, &freed), PINPOOL_EPERM,
                     "op %" PRIu64, op);
        pool_get_stats(pool, &after);
        expect_same_stats(&before, &after, "EPERM");
        return;
    }
    cr_assert_eq(pool_free(pool, m->v[i].id, m->v[i].owner, &freed), 0, "op %" PRIu64, op);
    m->counts[4]++;
    cr_assert_eq(freed, m->v[i].extent);
    model_remove(m, i);
}

static void random_free_owner(pool_t *pool, struct model *m, uint64_t op)
{
    uint64_t owner = 1 + rnd_below(NOWNERS), freed = 0, want = m->owner_bytes[owner];
    uint32_t count = m->owner_slices[owner];

    cr_assert_eq(pool_free_owner(pool, owner, &freed), (int)count, "op %" PRIu64, op);
    cr_assert_eq(freed, want);
    m->counts[5] += count;
    for (size_t i = m->n; i-- > 0;)
        if (m->v[i].owner == owner)
            model_remove(m, i);
}

static void random_add_chunks(pool_t *pool, struct model *m, uint64_t op)
{
    uint32_t n = 1 + (uint32_t)rnd_below(3);

    if (n > m->max_chunks - m->ready_chunks) {
        pool_stats_t before, after;

        pool_get_stats(pool, &before);
        cr_assert_eq(pool_add_chunks(pool, n), PINPOOL_EINVAL, "op %" PRIu64, op);
        pool_get_stats(pool, &after);
        expect_same_stats(&before, &after, "add_chunks past max");
        return;
    }
    cr_assert_eq(pool_add_chunks(pool, n), 0, "op %" PRIu64, op);
    m->ready_chunks += n;
    m->ready += n * m->chunk;
}

/* ops random operations; allocations outnumber frees while less than fill
 * percent of the ready space is used. */
static void run_random(uint64_t chunk, uint64_t quantum, uint32_t max_chunks, bool multi,
                       unsigned fill, uint64_t ops)
{
    pool_t *pool = mkpool(chunk, max_chunks, quantum, multi, 2);
    struct model m = {.chunk = chunk, .quantum = quantum, .capacity = chunk * max_chunks,
                      .ready = 2 * chunk, .max_chunks = max_chunks, .ready_chunks = 2,
                      .multi = multi, .next_id = 1};

    m.cap = 256;
    m.v = malloc(m.cap * sizeof(*m.v));
    m.gaps = malloc((m.cap + 1) * sizeof(*m.gaps));
    cr_assert(m.v != NULL && m.gaps != NULL);
    for (uint64_t op = 0; op < ops; op++) {
        unsigned r = (unsigned)rnd_below(1000);
        unsigned alloc_share = m.used * 100 < m.ready * fill ? 650 : 350;

        if (r < 4)
            random_add_chunks(pool, &m, op);
        else if (r < 14)
            random_free_owner(pool, &m, op);
        else if (r < 14 + alloc_share)
            random_alloc(pool, &m, op);
        else
            random_free(pool, &m, op);
        model_compare(pool, &m, op, op % 1024 == 0);
        m.counts[6] = m.n > m.counts[6] ? m.n : m.counts[6];
    }
    cr_log_info("random: chunk %" PRIu64 ", quantum %" PRIu64 ", multi %d: %" PRIu64
                " ops: %" PRIu64 " allocs (%" PRIu64 " multi-chunk), %" PRIu64 " ENOSPC, %"
                PRIu64 " other errors, %" PRIu64 " frees, %" PRIu64 " by owner; %" PRIu64
                " most live; %" PRIu32 " chunks ready", chunk, quantum, (int)multi, ops,
                m.counts[0] + m.counts[1], m.counts[1], m.counts[2], m.counts[3], m.counts[4],
                m.counts[5], m.counts[6], m.ready_chunks);
    free(m.v);
    free(m.gaps);
    finish(pool);
}

static void seed_rng(void)
{
    const char *env = getenv("PINPOOL_TEST_SEED");

    rng_state = env != NULL ? strtoull(env, NULL, 0) : 0x5eed5eed1234ull;
    if (rng_state == 0)
        rng_state = 1;
    cr_log_info("seed 0x%" PRIx64 " (set PINPOOL_TEST_SEED to change)", rng_state);
}

Test(pool, randomized_vs_model, .timeout = 30)
{
    seed_rng();
    run_random(16 * KiB, 64, 32, true, 50, 40000);
    run_random(16 * KiB, 256, 32, false, 80, 25000);
    run_random(4 * KiB, 256, 64, true, 60, 25000);
    run_random(64 * KiB, 64, 16, true, 40, 15000);
}
