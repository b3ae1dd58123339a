/*
 * restore.c - a pool rebuilt exactly as another process had it: the takeover
 * of a running daemon (server/handover.c) reads every piece of the old pool
 * out (pool_save_each) and makes them again in a fresh pool of the same
 * geometry (pool_restore_*), with the same ids, owners, tenants and offsets.
 *
 * Owns: nothing beyond the calls.  Never: touches memory, or rebuilds
 * anything a caller could get otherwise than by asking pool_save_each: the
 * restored pool must pass pool_check exactly as the saved one did.
 * Locking: none (pool.h).  Order of the restore: every chunk added
 * (pool_add_chunks), then the chunks' tenants (pool_restore_tenant), then
 * the live slices in ascending id order and the dirty extents oldest first
 * (pool_restore_slice), then pool_restore_next_id.
 */
#include "pool_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pinpool_errors.h"

int pool_save_each(const pool_t *pool, void (*fn)(const pool_saved_t *s, void *arg), void *arg)
{
    const struct slice *s;
    pool_saved_t out;

    if (pool == NULL || fn == NULL)
        return PINPOOL_EINVAL;
    if (pool->claimed != 0 || !TAILQ_EMPTY(&pool->cleaning_list))
        return PINPOOL_EBUSY; /* a claim or a cleaning in flight: not a settled pool */
    TAILQ_FOREACH(s, &pool->all_slices, all_link) {
        out = (pool_saved_t){.info = s->info, .unwritten = s->unwritten, .dirty = false};
        fn(&out, arg);
    }
    TAILQ_FOREACH(s, &pool->dirty_list, owner_link) {
        out = (pool_saved_t){.info = s->info, .unwritten = s->unwritten, .dirty = true};
        fn(&out, arg);
    }
    return 0;
}

uint64_t pool_next_id(const pool_t *pool)
{
    return pool->next_id;
}

int pool_restore_tenant(pool_t *pool, uint32_t chunk, uint64_t tenant)
{
    struct stash st = {0};
    struct tenant *t, *nt = NULL;
    struct chunk *c;

    if (pool == NULL || chunk >= pool->ready_chunks || tenant == POOL_TENANT_NONE)
        return PINPOOL_EINVAL;
    c = &pool->chunks[chunk];
    if (c->tenant != &pool->none || c->nslices != 0 || c->claim_for != NULL)
        return PINPOOL_EINVAL; /* only a chunk never used is given a tenant */
    t = tenant_find(pool, tenant);
    if ((t == NULL && (nt = malloc(sizeof(*nt))) == NULL) || !stash_fill(&st, 2)) {
        free(nt);
        stash_free(&st);
        return -ENOMEM;
    }
    if (t == NULL) {
        t = nt;
        tenant_add(pool, t, tenant);
    }
    tenancy_assign(pool, t, chunk, 1, &st);
    stash_free(&st);
    POOL_DEBUG_CHECK(pool, "pool_restore_tenant");
    return 0;
}

int pool_restore_slice(pool_t *pool, const pool_saved_t *saved, const char **why)
{
    const pool_slice_info_t *in = &saved->info;
    struct extent *e, *spare = NULL, *tail = NULL;
    struct slice *s, *last;
    struct owner *o, *no = NULL;
    struct tenant *t;
    uint64_t extent, align = 0;
    bool exact, split;
    int rc;

    *why = "a bad id or tenant";
    if (pool == NULL || in->id == 0 || in->tenant == POOL_TENANT_NONE)
        return PINPOOL_EINVAL;
    *why = "a bad size";
    rc = pool_request_check(pool, in->size, &align, &extent);
    if (rc != 0)
        return rc;
    *why = "its extent, offset or id";
    if (extent != in->extent || in->offset % pool->quantum != 0 ||
        table_find_id(&pool->table, in->id) != NULL)
        return PINPOOL_EINVAL;
    *why = "out of id order";
    last = TAILQ_LAST(&pool->all_slices, all_slices);
    if (!saved->dirty && last != NULL && last->info.id >= in->id)
        return PINPOOL_EINVAL; /* live slices come in id order (the list stays sorted) */
    e = ext_at(pool, in->offset);
    *why = e == NULL ? "not in free space" : e->tenant->id != in->tenant
        ? "in free space of another tenant" : "not wholly inside one free extent";
    if (e == NULL || e->tenant->id != in->tenant || in->offset + extent > e->off + e->len)
        return PINPOOL_EINVAL; /* not wholly inside free space of its tenant */
    *why = "across a chunk boundary";
    if (extent > pool->chunk_size && in->offset % pool->chunk_size != 0)
        return PINPOOL_EINVAL;
    if (extent <= pool->chunk_size &&
        in->offset / pool->chunk_size != (in->offset + extent - 1) / pool->chunk_size)
        return PINPOOL_EINVAL; /* a small slice never crosses a chunk boundary */
    exact = in->offset == e->off && extent == e->len;
    split = in->offset > e->off && in->offset + extent < e->off + e->len;
    o = saved->dirty ? NULL : owner_find(pool, in->owner);
    *why = "no memory";
    if ((s = malloc(sizeof(*s))) == NULL || (!exact && (spare = malloc(sizeof(*spare))) == NULL) ||
        (split && (tail = malloc(sizeof(*tail))) == NULL) ||
        (!saved->dirty && o == NULL && (no = malloc(sizeof(*no))) == NULL)) {
        free(s);
        free(spare);
        free(tail);
        return -ENOMEM;
    }
    t = e->tenant;
    ext_take(pool, e, in->offset, extent, tail);
    if (exact)
        spare = e;
    memset(s, 0, sizeof(*s));
    s->tenant = t;
    s->spare = spare;
    s->info = *in;
    s->info.first_chunk = (uint32_t)(in->offset / pool->chunk_size);
    s->info.nchunks = (uint32_t)((in->offset + extent - 1) / pool->chunk_size -
                                 in->offset / pool->chunk_size + 1);
    s->unwritten = saved->unwritten;
    table_maybe_grow(pool, pool->nslices + pool->ndirty + 1);
    table_link(&pool->table, s);
    chunks_hold(pool, s->info.first_chunk, s->info.nchunks);
    if (saved->dirty) {
        s->dirty = true;
        TAILQ_INSERT_TAIL(&pool->dirty_list, s, owner_link);
        pool->dirty += extent;
        pool->ndirty++;
    } else {
        if (o == NULL) {
            o = no;
            owner_add(pool, o, in->owner);
        }
        slice_go_live(pool, s, o);
    }
    if (in->id >= pool->next_id)
        pool->next_id = in->id + 1;
    *why = "";
    POOL_DEBUG_CHECK(pool, "pool_restore_slice");
    return 0;
}

int pool_restore_next_id(pool_t *pool, uint64_t next_id)
{
    if (pool == NULL || next_id < pool->next_id)
        return PINPOOL_EINVAL;
    pool->next_id = next_id;
    return 0;
}
