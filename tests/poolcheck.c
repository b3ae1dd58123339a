/*
 * poolcheck.c - see poolcheck.h.
 */
#include "poolcheck.h"

#include <criterion/criterion.h>
#include <inttypes.h>

void tp_check(const pool_t *pool)
{
    char msg[256];

    cr_assert_eq(pool_check(pool, msg, sizeof(msg)), 0, "pool_check: %s", msg);
}

pool_t *tp_mkpool(uint64_t chunk, uint32_t max_chunks, uint64_t quantum, bool multi,
                      uint32_t ready)
{
    pool_params_t params = {.chunk_size = chunk, .max_chunks = max_chunks,
                            .quantum = quantum, .allow_multi_chunk = multi};
    pool_t *pool = NULL;

    cr_assert_eq(pool_create(&pool, &params), 0);
    cr_assert_not_null(pool);
    cr_assert_eq(pool_add_chunks(pool, ready), 0);
    tp_check(pool);
    return pool;
}

pool_slice_info_t tp_alloc_ok(pool_t *pool, uint64_t owner, uint64_t size, uint64_t align)
{
    pool_slice_info_t s;
    int rc = pool_alloc(pool, owner, size, align, &s);

    cr_assert_eq(rc, 0, "pool_alloc(owner %" PRIu64 ", size %" PRIu64 ", align %" PRIu64
                 ") = %d", owner, size, align, rc);
    tp_check(pool);
    return s;
}

void tp_free_ok(pool_t *pool, uint64_t id, uint64_t owner)
{
    cr_assert_eq(pool_free(pool, id, owner, NULL), 0, "pool_free(%" PRIu64 ")", id);
    tp_check(pool);
}

pool_stats_t tp_stats(const pool_t *pool)
{
    pool_stats_t st;

    pool_get_stats(pool, &st);
    return st;
}

void tp_expect_same_stats(const pool_stats_t *a, const pool_stats_t *b, const char *what)
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

void tp_collect_owner(uint64_t owner, uint64_t bytes, uint32_t slices, void *arg)
{
    struct tp_owner_list *l = arg;

    cr_assert_lt(l->n, 64);
    l->ids[l->n] = owner;
    l->bytes[l->n] = bytes;
    l->slices[l->n] = slices;
    l->n++;
}

void tp_collect_slice(const pool_slice_info_t *s, void *arg)
{
    struct tp_slice_list *l = arg;

    cr_assert_lt(l->n, 256);
    l->v[l->n++] = *s;
}

/* The runs of ready chunks of one tenant (never used ones included): their
 * number and the largest, in bytes.  A pool with nothing in it has one free
 * extent per run. */
uint32_t tp_tenant_runs(const pool_t *pool, uint64_t *largest)
{
    pool_stats_t st = tp_stats(pool);
    uint64_t prev = 0, len = 0;
    uint32_t runs = 0;

    *largest = 0;
    for (uint32_t i = 0; i < st.ready_chunks; i++) {
        pool_chunk_info_t ci;

        cr_assert_eq(pool_chunk_info(pool, i, &ci), 0);
        if (i == 0 || ci.tenant != prev) {
            runs++;
            len = 0;
        }
        len += pool_chunk_size(pool);
        *largest = len > *largest ? len : *largest;
        prev = ci.tenant;
    }
    return runs;
}

/* Free what is left (cleaning what is dirty), check the pool is whole again,
 * destroy it. */
void tp_finish(pool_t *pool)
{
    struct tp_owner_list owners = {.n = 0};
    pool_stats_t st;
    pool_dirty_t dirty;
    uint64_t largest;
    uint32_t runs;

    pool_foreach_owner(pool, tp_collect_owner, &owners);
    for (size_t i = 0; i < owners.n; i++) {
        uint64_t freed = 0;

        cr_assert_eq(pool_free_owner(pool, owners.ids[i], &freed), (int)owners.slices[i]);
        cr_assert_eq(freed, owners.bytes[i]);
        tp_check(pool);
    }
    while (pool_clean_take(pool, &dirty) == 0) {
        cr_assert_eq(pool_clean_done(pool, dirty.id), 0);
        tp_check(pool);
    }
    st = tp_stats(pool);
    runs = tp_tenant_runs(pool, &largest);
    cr_assert_eq(st.used, 0);
    cr_assert_eq(st.dirty, 0);
    cr_assert_eq(st.claimed, 0);
    cr_assert_eq(st.num_slices, 0);
    cr_assert_eq(st.num_owners, 0);
    cr_assert_eq(st.free, st.ready);
    cr_assert_eq(st.largest_free, largest);
    cr_assert_eq(st.num_free_extents, runs, "each run of one tenant's chunks is one extent");
    pool_destroy(pool);
}

bool tp_crosses_chunk(const pool_slice_info_t *s, uint64_t chunk)
{
    return s->offset / chunk != (s->offset + s->extent - 1) / chunk;
}
