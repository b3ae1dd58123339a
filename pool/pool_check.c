/*
 * pool_check.c - pool_check: every invariant of pool.h, checked by walking
 * every index once.
 *
 * Owns: the checks and their messages.  Never: changes the pool (it casts
 * const away only to walk the generated trees), or runs outside the debug
 * builds' check after every operation and the tests.
 * Locking: the caller's (see pool.h).
 *
 * Cost: O(n) over extents, slices, dirty extents and chunks, plus one
 * O(log n) search per slice for the free extents around it, and O(tenants x
 * chunks) for the per-tenant chunk counts (tenants are few).  Slices are not
 * kept in offset order (an index only for this check cost 18% of an
 * alloc+free pair), so two slices overlapping each other is not caught here;
 * the tests check that against a model.
 */
#include "pool_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "pinpool_errors.h"

static pool_t *unconst(const pool_t *pool)
{
    return (pool_t *)(uintptr_t)pool;
}

__attribute__((format(printf, 3, 4)))
static int check_fail(char *msg, size_t msglen, const char *fmt, ...)
{
    va_list ap;

    if (msg != NULL && msglen > 0) {
        va_start(ap, fmt);
        vsnprintf(msg, msglen, fmt, ap);
        va_end(ap);
    }
    return PINPOOL_EINTERNAL;
}

static uint64_t tenant_id(const struct tenant *t)
{
    return t != NULL ? t->id : 0;
}

/* Order-independent fingerprint of a set of extents: both indexes must hold
 * the same nodes with the same keys. */
static uint64_t extent_hash(const struct extent *e)
{
    uint64_t h = (uint64_t)(uintptr_t)e ^ (e->off * 0x9e3779b97f4a7c15ull) ^
                 (e->len * 0xc2b2ae3d27d4eb4full) ^ ((uint64_t)(uintptr_t)e->tenant << 7);

    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

/* The offset index: free extents in ready space, disjoint, coalesced within a
 * tenant, each in chunks of its tenant that are not claimed. */
static int check_offset_index(const pool_t *pool, uint64_t *free_bytes, uint64_t *free_hash,
                              char *msg, size_t msglen)
{
    pool_t *p = unconst(pool);
    const struct extent *prev = NULL;
    struct extent *e;
    uint64_t q = pool->quantum, cs = pool->chunk_size;
    uint32_t n = 0;

    *free_bytes = *free_hash = 0;
    RB_FOREACH(e, free_by_off, &p->free_by_off) {
        if (e->len == 0 || e->off % q != 0 || e->len % q != 0 || e->off > pool->ready ||
            e->len > pool->ready - e->off)
            return check_fail(msg, msglen, "free extent [%" PRIu64 ", +%" PRIu64
                              ") is empty, off the quantum or past ready %" PRIu64,
                              e->off, e->len, pool->ready);
        if (prev != NULL && e->off < prev->off + prev->len)
            return check_fail(msg, msglen, "free extent at %" PRIu64 " overlaps the one before,"
                              " which ends at %" PRIu64, e->off, prev->off + prev->len);
        if (prev != NULL && e->off == prev->off + prev->len && e->tenant == prev->tenant)
            return check_fail(msg, msglen, "free extents at %" PRIu64 " and %" PRIu64 " of"
                              " tenant %" PRIu64 " touch (not coalesced)", prev->off, e->off,
                              tenant_id(e->tenant));
        if (e->tenant == NULL)
            return check_fail(msg, msglen, "free extent at %" PRIu64 " has no tenant", e->off);
        for (uint64_t c = e->off / cs; c <= (e->off + e->len - 1) / cs; c++) {
            const struct chunk *ch = &pool->chunks[c];

            if (ch->tenant != e->tenant || ch->claim_for != NULL)
                return check_fail(msg, msglen, "free extent [%" PRIu64 ", +%" PRIu64 ") of tenant"
                                  " %" PRIu64 " lies in chunk %" PRIu64 " of tenant %" PRIu64
                                  "%s", e->off, e->len, tenant_id(e->tenant), c,
                                  tenant_id(ch->tenant), ch->claim_for ? " (claimed)" : "");
        }
        *free_bytes += e->len;
        *free_hash += extent_hash(e);
        prev = e;
        n++;
    }
    if (n != pool->nfree)
        return check_fail(msg, msglen, "offset index holds %" PRIu32 " free extents, the"
                          " counter says %" PRIu32, n, pool->nfree);
    return 0;
}

/* One tenant's size index: its extents, in (size, offset) order, in the
 * classes of their lengths, adding up to its counters. */
static int check_size_index(const struct tenant *t, uint64_t *bytes, uint64_t *hash,
                            uint32_t *count, char *msg, size_t msglen)
{
    struct size_index *ix = (struct size_index *)(uintptr_t)&t->free;
    const struct extent *prev = NULL;
    struct extent *e;
    uint64_t b = 0;
    uint32_t n = 0;

    for (unsigned c = 0; c < SIZE_CLASSES; c++) {
        bool mapped = (ix->map[c / 64] >> (c % 64)) & 1;

        if (mapped == RB_EMPTY(&ix->by_size[c]))
            return check_fail(msg, msglen, "tenant %" PRIu64 ": size class %u is %s but its bit"
                              " says otherwise", t->id, c, mapped ? "empty" : "not empty");
        RB_FOREACH(e, free_by_size, &ix->by_size[c]) {
            if (ext_size_class(e->len) != c || e->tenant != t)
                return check_fail(msg, msglen, "free extent [%" PRIu64 ", +%" PRIu64 ") is in"
                                  " size class %u of tenant %" PRIu64 ", not %u of %" PRIu64,
                                  e->off, e->len, c, t->id, ext_size_class(e->len),
                                  tenant_id(e->tenant));
            if (prev != NULL && extent_size_cmp(prev, e) >= 0)
                return check_fail(msg, msglen, "size index of tenant %" PRIu64 " out of order at"
                                  " [%" PRIu64 ", +%" PRIu64 ")", t->id, e->off, e->len);
            b += e->len;
            *hash += extent_hash(e);
            n++;
            prev = e;
        }
    }
    if (n != t->nfree || b != t->free_bytes)
        return check_fail(msg, msglen, "tenant %" PRIu64 " says %" PRIu32 " free extents, %"
                          PRIu64 " bytes; its index holds %" PRIu32 ", %" PRIu64, t->id,
                          t->nfree, t->free_bytes, n, b);
    *bytes += b;
    *count += n;
    return 0;
}

/* Every tenant's index together: the same extents as the offset index. */
static int check_size_indexes(const pool_t *pool, uint64_t free_bytes, uint64_t free_hash,
                              char *msg, size_t msglen)
{
    struct tenant *t;
    uint64_t bytes = 0, hash = 0, prev_id = 0;
    uint32_t n = 0, ntenants = 0;
    int rc = check_size_index(&pool->none, &bytes, &hash, &n, msg, msglen);

    if (rc != 0)
        return rc;
    RB_FOREACH(t, tenant_by_id, &unconst(pool)->tenant_by_id) {
        if ((ntenants > 0 && t->id <= prev_id) || t->id == POOL_TENANT_NONE)
            return check_fail(msg, msglen, "tenant tree out of order at %" PRIu64, t->id);
        if (t->nchunks == 0 && t->nclaims == 0)
            return check_fail(msg, msglen, "tenant %" PRIu64 " has no chunk and no claim", t->id);
        rc = check_size_index(t, &bytes, &hash, &n, msg, msglen);
        if (rc != 0)
            return rc;
        prev_id = t->id;
        ntenants++;
    }
    if (ntenants != pool->ntenants)
        return check_fail(msg, msglen, "%" PRIu32 " tenants in the tree, the counter says %"
                          PRIu32, ntenants, pool->ntenants);
    if (n != pool->nfree || bytes != free_bytes || hash != free_hash)
        return check_fail(msg, msglen, "size indexes (%" PRIu32 " extents, %" PRIu64
                          " bytes) differ from offset index (%" PRIu32 ", %" PRIu64 ")",
                          n, bytes, pool->nfree, free_bytes);
    return 0;
}

/* One slice or dirty extent on its own: ids, rounding, the boundary rule, its
 * chunks (its tenant's, not claimed), and no overlap with a free extent. */
static int check_slice(const pool_t *pool, const struct slice *s, uint32_t *holds, char *msg,
                       size_t msglen)
{
    const pool_slice_info_t *i = &s->info;
    struct extent key = {.off = i->offset, .len = 0};
    struct extent *next, *prev;
    uint64_t c = pool->chunk_size;
    uint64_t last = (i->offset + i->extent - 1) / c;

    if (i->id == 0 || i->id >= pool->next_id)
        return check_fail(msg, msglen, "slice id %" PRIu64 " was never handed out", i->id);
    if (pool__table_id(pool, i->id) != s || pool__table_off(pool, i->offset) != s)
        return check_fail(msg, msglen, "slice %" PRIu64 " at %" PRIu64 " is missing from"
                          " the id or offset hash", i->id, i->offset);
    if (i->size == 0 || i->extent != ((i->size + pool->quantum - 1) & ~(pool->quantum - 1)) ||
        i->offset % pool->quantum != 0)
        return check_fail(msg, msglen, "slice %" PRIu64 ": size %" PRIu64 ", extent %" PRIu64
                          ", offset %" PRIu64 " do not fit quantum %" PRIu64,
                          i->id, i->size, i->extent, i->offset, pool->quantum);
    if (i->extent <= c ? i->offset / c != last
                       : !pool->allow_multi_chunk || i->offset % c != 0)
        return check_fail(msg, msglen, "slice %" PRIu64 " [%" PRIu64 ", +%" PRIu64
                          ") breaks the chunk boundary rule", i->id, i->offset, i->extent);
    if (i->first_chunk != i->offset / c || i->nchunks != last - i->offset / c + 1)
        return check_fail(msg, msglen, "slice %" PRIu64 ": chunks %" PRIu32 "+%" PRIu32
                          " are wrong", i->id, i->first_chunk, i->nchunks);
    if (s->spare == NULL || s->tenant == NULL || s->tenant->id != i->tenant ||
        s->tenant == &pool->none || (s->owner == NULL) != s->dirty ||
        (!s->dirty && s->owner->id != i->owner))
        return check_fail(msg, msglen, "slice %" PRIu64 ": bad owner, tenant or spare node",
                          i->id);
    if (i->offset > pool->ready || i->extent > pool->ready - i->offset)
        return check_fail(msg, msglen, "slice %" PRIu64 " [%" PRIu64 ", +%" PRIu64
                          ") is past ready %" PRIu64, i->id, i->offset, i->extent, pool->ready);
    for (uint64_t k = i->first_chunk; k <= last; k++) {
        const struct chunk *ch = &pool->chunks[k];

        if (ch->tenant != s->tenant || ch->claim_for != NULL)
            return check_fail(msg, msglen, "slice %" PRIu64 " of tenant %" PRIu64 " lies in"
                              " chunk %" PRIu64 " of tenant %" PRIu64 "%s", i->id, i->tenant,
                              k, tenant_id(ch->tenant), ch->claim_for ? " (claimed)" : "");
        holds[k]++;
    }
    /* the free extents around it must stay clear of it */
    next = RB_NFIND(free_by_off, &unconst(pool)->free_by_off, &key);
    prev = next != NULL ? RB_PREV(free_by_off, &unconst(pool)->free_by_off, next)
                        : RB_MAX(free_by_off, &unconst(pool)->free_by_off);
    if ((next != NULL && next->off < i->offset + i->extent) ||
        (prev != NULL && prev->off + prev->len > i->offset))
        return check_fail(msg, msglen, "slice %" PRIu64 " [%" PRIu64 ", +%" PRIu64
                          ") overlaps a free extent", i->id, i->offset, i->extent);
    return 0;
}

/* The dirty lists: their nodes are dirty, the first list's waiting and the
 * second's taken, adding up to the counters. */
static int check_dirty(const pool_t *pool, uint32_t *holds, char *msg, size_t msglen)
{
    pool_t *p = unconst(pool);
    struct slice *s;
    uint64_t bytes = 0;
    uint32_t n = 0;
    int rc;

    for (int list = 0; list < 2; list++) {
        struct slice_list *l = list == 0 ? &p->dirty_list : &p->cleaning_list;

        TAILQ_FOREACH(s, l, owner_link) {
            if (!s->dirty || s->cleaning != (list == 1))
                return check_fail(msg, msglen, "dirty extent %" PRIu64 " is in the wrong list",
                                  s->info.id);
            rc = check_slice(pool, s, holds, msg, msglen);
            if (rc != 0)
                return rc;
            bytes += s->info.extent;
            n++;
        }
    }
    if (n != pool->ndirty || bytes != pool->dirty || (n > 0 && !pool->dirty_on_free))
        return check_fail(msg, msglen, "dirty lists (%" PRIu32 " extents, %" PRIu64
                          " bytes) differ from the counters (%" PRIu32 ", %" PRIu64 ")",
                          n, bytes, pool->ndirty, pool->dirty);
    return 0;
}

/* The slice table, then the owners: counts and bytes must add up. */
static int check_slices_and_owners(const pool_t *pool, uint32_t *holds, char *msg, size_t msglen)
{
    pool_t *p = unconst(pool);
    struct slice *s;
    struct owner *o;
    uint64_t used = 0, prev_id = 0, owner_bytes = 0, prev_owner = 0;
    uint32_t n = 0, nowners = 0, owner_slices = 0, hashed_id = 0, hashed_off = 0;
    int rc;

    TAILQ_FOREACH(s, &p->all_slices, all_link) {
        if (n > 0 && s->info.id <= prev_id)
            return check_fail(msg, msglen, "slice list out of order at id %" PRIu64,
                              s->info.id);
        if (s->dirty)
            return check_fail(msg, msglen, "dirty extent %" PRIu64 " in the slice list",
                              s->info.id);
        rc = check_slice(pool, s, holds, msg, msglen);
        if (rc != 0)
            return rc;
        used += s->info.extent;
        prev_id = s->info.id;
        n++;
    }
    for (size_t b = 0; b < (size_t)1 << p->table.bits; b++) {
        for (s = p->table.by_id[b]; s != NULL; s = s->id_next)
            hashed_id++;
        for (s = p->table.by_off[b]; s != NULL; s = s->off_next)
            hashed_off++;
    }
    if (hashed_id != n + pool->ndirty || hashed_off != n + pool->ndirty)
        return check_fail(msg, msglen, "the id and offset hashes hold %" PRIu32 " and %" PRIu32
                          " nodes, the lists %" PRIu32, hashed_id, hashed_off, n + pool->ndirty);
    if (n != pool->nslices || used != pool->used)
        return check_fail(msg, msglen, "slice table (%" PRIu32 " slices, %" PRIu64
                          " bytes) differs from the counters (%" PRIu32 ", %" PRIu64 ")",
                          n, used, pool->nslices, pool->used);

    RB_FOREACH(o, owner_by_id, &p->owner_by_id) {
        uint64_t bytes = 0;
        uint32_t k = 0;

        if (nowners > 0 && o->id <= prev_owner)
            return check_fail(msg, msglen, "owner index out of order at %" PRIu64, o->id);
        prev_id = 0;
        TAILQ_FOREACH(s, &o->slices, owner_link) {
            if (s->owner != o || s->info.id <= prev_id)
                return check_fail(msg, msglen, "owner %" PRIu64 " lists slice %" PRIu64
                                  " wrongly or out of id order", o->id, s->info.id);
            bytes += s->info.extent;
            prev_id = s->info.id;
            k++;
        }
        if (k == 0 || k != o->nslices || bytes != o->bytes)
            return check_fail(msg, msglen, "owner %" PRIu64 " says %" PRIu32 " slices, %"
                              PRIu64 " bytes; its list has %" PRIu32 ", %" PRIu64,
                              o->id, o->nslices, o->bytes, k, bytes);
        owner_bytes += bytes;
        owner_slices += k;
        prev_owner = o->id;
        nowners++;
    }
    if (nowners != pool->nowners || owner_slices != pool->nslices || owner_bytes != pool->used)
        return check_fail(msg, msglen, "owners (%" PRIu32 ") hold %" PRIu32 " slices, %"
                          PRIu64 " bytes; the pool says %" PRIu32 " owners, %" PRIu32
                          " slices, %" PRIu64 " bytes", nowners, owner_slices, owner_bytes,
                          pool->nowners, pool->nslices, pool->used);
    return 0;
}

/* Chunk records: what touches them (holds, counted from the slices), their
 * idle bits, claims, and the tenants' counts of chunks, claims and bytes. */
static int check_chunks(const pool_t *pool, const uint32_t *holds, char *msg, size_t msglen)
{
    pool_t *p = unconst(pool);
    uint64_t cs = pool->chunk_size, claimed = 0;
    uint32_t nidle = 0, none_chunks = 0;
    struct tenant *t;
    struct slice *s;

    for (uint32_t i = 0; i < pool->max_chunks; i++) {
        const struct chunk *c = &pool->chunks[i];
        bool idle = (pool->idle_map[i / 64] >> (i % 64)) & 1;
        bool want = i < pool->ready_chunks && c->tenant != &pool->none && c->claim_for == NULL &&
                    c->nslices == 0;

        if (c->nslices != holds[i])
            return check_fail(msg, msglen, "chunk %" PRIu32 " says %" PRIu32 " slices touch it,"
                              " %" PRIu32 " do", i, c->nslices, holds[i]);
        if (idle != want)
            return check_fail(msg, msglen, "chunk %" PRIu32 "'s idle bit is %d", i, (int)idle);
        nidle += idle;
        if (i >= pool->ready_chunks) {
            if (c->tenant != &pool->none || c->claim_for != NULL || c->claimed != NULL)
                return check_fail(msg, msglen, "chunk %" PRIu32 " is not ready but has a"
                                  " tenant or a claim", i);
            continue;
        }
        none_chunks += c->tenant == &pool->none;
        if (c->nslices > 0 && c->tenant == &pool->none)
            return check_fail(msg, msglen, "chunk %" PRIu32 " holds slices but has no tenant", i);
        if ((c->claim_for == NULL) != (c->claimed == NULL) ||
            (c->claimed != NULL && (c->nslices != 0 || c->claimed->off != (uint64_t)i * cs ||
                                    c->claimed->len != cs || ext_at(p, (uint64_t)i * cs) != NULL)) ||
            (c->fresh && (c->claim_for == NULL || c->tenant == &pool->none ||
                          c->tenant == c->claim_for)))
            return check_fail(msg, msglen, "chunk %" PRIu32 ": a bad claim", i);
        claimed += c->claimed != NULL ? cs : 0;
    }
    if (nidle != pool->nidle || claimed != pool->claimed || none_chunks != pool->none.nchunks)
        return check_fail(msg, msglen, "chunk counters: %" PRIu32 " idle (says %" PRIu32 "), %"
                          PRIu64 " claimed bytes (says %" PRIu64 "), %" PRIu32 " unused (says %"
                          PRIu32 ")", nidle, pool->nidle, claimed, pool->claimed, none_chunks,
                          pool->none.nchunks);
    RB_FOREACH(t, tenant_by_id, &p->tenant_by_id) {
        uint32_t nchunks = 0, nclaims = 0;
        uint64_t used = 0;

        for (uint32_t i = 0; i < pool->ready_chunks; i++) {
            nchunks += pool->chunks[i].tenant == t;
            nclaims += pool->chunks[i].claim_for == t;
        }
        TAILQ_FOREACH(s, &p->all_slices, all_link)
            used += s->tenant == t ? s->info.extent : 0;
        if (nchunks != t->nchunks || nclaims != t->nclaims || used != t->used)
            return check_fail(msg, msglen, "tenant %" PRIu64 " says %" PRIu32 " chunks, %" PRIu32
                              " claims, %" PRIu64 " bytes used; there are %" PRIu32 ", %"
                              PRIu32 ", %" PRIu64, t->id, t->nchunks, t->nclaims, t->used,
                              nchunks, nclaims, used);
    }
    return 0;
}

int pool_check(const pool_t *pool, char *msg, size_t msglen)
{
    uint64_t free_bytes, free_hash;
    uint32_t *holds;
    int rc;

    if (msg != NULL && msglen > 0)
        msg[0] = '\0';
    if (pool == NULL)
        return check_fail(msg, msglen, "no pool");
    if (pool->ready_chunks > pool->max_chunks ||
        pool->ready != pool->chunk_size * pool->ready_chunks ||
        pool->used + pool->dirty + pool->claimed > pool->ready)
        return check_fail(msg, msglen, "counters: %" PRIu32 " of %" PRIu32 " chunks ready, ready %"
                          PRIu64 ", used %" PRIu64 ", dirty %" PRIu64 ", claimed %" PRIu64,
                          pool->ready_chunks, pool->max_chunks, pool->ready, pool->used,
                          pool->dirty, pool->claimed);
    holds = calloc(pool->max_chunks, sizeof(*holds));
    if (holds == NULL)
        return check_fail(msg, msglen, "out of memory for the check");
    rc = check_offset_index(pool, &free_bytes, &free_hash, msg, msglen);
    if (rc == 0)
        rc = check_size_indexes(pool, free_bytes, free_hash, msg, msglen);
    if (rc == 0)
        rc = check_slices_and_owners(pool, holds, msg, msglen);
    if (rc == 0)
        rc = check_dirty(pool, holds, msg, msglen);
    if (rc == 0)
        rc = check_chunks(pool, holds, msg, msglen);
    if (rc == 0 && free_bytes + pool->used + pool->dirty + pool->claimed != pool->ready)
        rc = check_fail(msg, msglen, "free %" PRIu64 " + used %" PRIu64 " + dirty %" PRIu64
                        " + claimed %" PRIu64 " != ready %" PRIu64, free_bytes, pool->used,
                        pool->dirty, pool->claimed, pool->ready);
    free(holds);
    return rc;
}
