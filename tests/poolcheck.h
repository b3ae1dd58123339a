/*
 * poolcheck.h - what the allocator's tests (test_pool.c, test_pool_model.c)
 * share: pools made and finished with their invariants checked, and the
 * calls that fail the test when the pool says no.  Owns no state; only
 * pool.h's functions.
 */
#ifndef PINPOOL_TEST_POOLCHECK_H
#define PINPOOL_TEST_POOLCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)

/* pool_check must pass (the test fails with its message otherwise). */
void tp_check(const pool_t *pool);
/* A pool of max_chunks chunks, ready of them added. */
pool_t *tp_mkpool(uint64_t chunk, uint32_t max_chunks, uint64_t quantum, bool multi,
                  uint32_t ready);
/* pool_alloc (tenant 0) / pool_free that must succeed, then tp_check. */
pool_slice_info_t tp_alloc_ok(pool_t *pool, uint64_t owner, uint64_t size, uint64_t align);
void tp_free_ok(pool_t *pool, uint64_t id, uint64_t owner);
pool_stats_t tp_stats(const pool_t *pool);
/* Every field of two stats alike (what names the moment). */
void tp_expect_same_stats(const pool_stats_t *a, const pool_stats_t *b, const char *what);

struct tp_owner_list {
    uint64_t ids[64];
    uint64_t bytes[64];
    uint32_t slices[64];
    size_t n;
};
struct tp_slice_list {
    pool_slice_info_t v[256];
    size_t n;
};
/* pool_foreach_owner / pool_foreach_slice callbacks into those lists. */
void tp_collect_owner(uint64_t owner, uint64_t bytes, uint32_t slices, void *arg);
void tp_collect_slice(const pool_slice_info_t *s, void *arg);

/* The runs of ready chunks of one tenant (never used ones included): their
 * number, and the largest in *largest (bytes). */
uint32_t tp_tenant_runs(const pool_t *pool, uint64_t *largest);
/* Free what is left (cleaning what is dirty and not taken), check the pool is
 * whole again (one free extent per run of one tenant's chunks), destroy it. */
void tp_finish(pool_t *pool);
bool tp_crosses_chunk(const pool_slice_info_t *s, uint64_t chunk);

#endif
