/*
 * dirty.c - dirty extents (pool.h, "Dirty memory"): freed slices that must be
 * zeroed before anyone else gets them, handed to the caller's cleaner
 * (pool_clean_take, pool_clean_done); an owner taking back what it freed
 * itself (pool_alloc_own); slices whose release needs no cleaning
 * (pool_mark_unwritten).
 *
 * Owns: pool->dirty_list (waiting, oldest first) and pool->cleaning_list
 * (taken).  A dirty extent is the node of the slice it was: it keeps its
 * place in the slice table (lookups skip it, pool.c), its tenant and its
 * chunks (a chunk with one is busy: not idle, not claimable), and loses its
 * owner record.  Never: makes a dirty extent free space before
 * pool_clean_done, or gives one to anyone but the owner that freed it.
 * Locking: none (see pool.h).
 */
#include "pool_int.h"

#include <errno.h>
#include <stdlib.h>

#include "pinpool_errors.h"

/*
 * A dirty extent that owner itself freed, of exactly extent bytes and
 * aligned to align, among the REUSE_DEPTH most recent ones not yet taken for
 * cleaning: it may have it back as it is (its bytes are its own), or NULL.
 */
#define REUSE_DEPTH 16

static struct slice *own_dirty(pool_t *pool, uint64_t owner, uint64_t extent, uint64_t align)
{
    struct slice *s;
    unsigned n = 0;

    TAILQ_FOREACH_REVERSE(s, &pool->dirty_list, slice_list, owner_link) {
        if (s->info.owner == owner && s->info.extent == extent && s->info.offset % align == 0)
            return s;
        if (++n == REUSE_DEPTH)
            break;
    }
    return NULL;
}

/* Dirty extent s becomes a live slice of owner (o, or the new record no) again,
 * with a new id and size. */
static void do_revive(pool_t *pool, struct slice *s, struct owner *o, struct owner *no,
                      uint64_t owner, uint64_t size)
{
    uint64_t extent = s->info.extent;

    TAILQ_REMOVE(&pool->dirty_list, s, owner_link);
    pool->dirty -= extent;
    pool->ndirty--;
    table_unlink(&pool->table, s);
    if (o == NULL) {
        o = no;
        owner_add(pool, o, owner);
    }
    s->dirty = false;
    s->unwritten = false;
    s->info.id = pool->next_id++;
    s->info.size = size;
    table_link(&pool->table, s);
    slice_go_live(pool, s, o);
}

int pool_alloc_own(pool_t *pool, uint64_t tenant, uint64_t owner, uint64_t size, uint64_t align,
                   pool_slice_info_t *out)
{
    struct owner *o, *no = NULL;
    struct slice *s;
    uint64_t extent;
    int rc;

    if (pool == NULL || tenant == POOL_TENANT_NONE)
        return PINPOOL_EINVAL;
    rc = pool_request_check(pool, size, &align, &extent);
    if (rc != 0)
        return rc;
    if (pool->ndirty == 0 || (s = own_dirty(pool, owner, extent, align)) == NULL ||
        s->info.tenant != tenant)
        return PINPOOL_ENOENT;
    o = owner_find(pool, owner);
    if (o == NULL && (no = malloc(sizeof(*no))) == NULL)
        return -ENOMEM;
    do_revive(pool, s, o, no, owner, size);
    if (out != NULL)
        *out = s->info;
    POOL_DEBUG_CHECK(pool, "pool_alloc_own");
    return 0;
}

int pool_mark_unwritten(pool_t *pool, uint64_t id)
{
    struct slice *s = pool != NULL ? live_by_id(pool, id) : NULL;

    if (s == NULL)
        return PINPOOL_ENOENT;
    s->unwritten = true;
    return 0;
}

/* ---- cleaning ------------------------------------------------------------------- */

int pool_clean_take(pool_t *pool, pool_dirty_t *out)
{
    struct slice *s;

    if (pool == NULL || out == NULL)
        return PINPOOL_EINVAL;
    s = TAILQ_FIRST(&pool->dirty_list);
    if (s == NULL)
        return PINPOOL_ENOENT;
    TAILQ_REMOVE(&pool->dirty_list, s, owner_link);
    TAILQ_INSERT_TAIL(&pool->cleaning_list, s, owner_link);
    s->cleaning = true;
    out->id = s->info.id;
    out->offset = s->info.offset;
    out->len = s->info.extent;
    POOL_DEBUG_CHECK(pool, "pool_clean_take");
    return 0;
}

int pool_clean_done(pool_t *pool, uint64_t id)
{
    struct slice *s;

    if (pool == NULL)
        return PINPOOL_EINVAL;
    s = table_find_id(&pool->table, id);
    if (s == NULL || !s->dirty || !s->cleaning)
        return PINPOOL_ENOENT;
    TAILQ_REMOVE(&pool->cleaning_list, s, owner_link);
    pool->dirty -= s->info.extent;
    pool->ndirty--;
    slice_free_extent(pool, s);
    POOL_DEBUG_CHECK(pool, "pool_clean_done");
    return 0;
}

uint64_t pool_dirty_bytes(const pool_t *pool)
{
    return pool != NULL ? pool->dirty : 0;
}

