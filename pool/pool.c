/*
 * pool.c - the allocator and slice table behind pool.h: create and grow,
 * alloc and free, owners, queries and stats.
 *
 * Owns: every slice and owner node of one pool_t.  Slices are indexed by id
 * and by start offset in two chained hash tables (the slice table, inline in
 * pool_int.h; O(1), which matters to the client arena's free-by-pointer), and
 * kept in one list in id order for pool_foreach_slice.  Owners are indexed by
 * id in a red-black tree; each keeps its byte and slice counts and a list of
 * its slices in id order, so pool_free_owner costs O(k log n) for k slices.
 * A freed slice of a pool with dirty_on_free becomes a dirty extent
 * (dirty.c's from then on).  The free-extent index is extents.c's, chunks
 * and tenants are tenants.c's, the invariants pool_check.c's.
 * Never: touches the memory it describes, CUDA, sockets or global state.
 * Never allocates on a free path: every slice carries the free-extent node
 * that its release may need, so pool_free, pool_free_owner and
 * pool_clean_done cannot fail.
 * Locking: none (see pool.h).  The do_* helpers assume valid arguments and a
 * caller that already holds every node they need; the public functions check
 * the arguments and allocate first, then change the pool, so a call that fails
 * leaves the pool unchanged.
 */
#include "pool_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pinpool_errors.h"
#include "rbtree.h"

#define POOL_DEFAULT_QUANTUM 256
#define SLICE_HASH_MIN_BITS 6

#define CMP(a, b) (((a) > (b)) - ((a) < (b)))

static int owner_cmp(const struct owner *a, const struct owner *b)
{
    return CMP(a->id, b->id);
}

RB_GENERATE(owner_by_id, owner, by_id, owner_cmp)

#include "rbtree_end.h"

/* The generated RB_* functions take non-const heads, so the read-only entry
 * points cast the const away through this; they only search and walk. */
static pool_t *unconst(const pool_t *pool)
{
    return (pool_t *)(uintptr_t)pool;
}

static bool is_pow2(uint64_t x)
{
    return x != 0 && (x & (x - 1)) == 0;
}

static uint64_t align_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) & ~(a - 1);
}

/* ---- the slice table ------------------------------------------------------------ */

static int table_init(struct slice_table *t)
{
    t->bits = SLICE_HASH_MIN_BITS;
    t->by_id = calloc((size_t)1 << t->bits, sizeof(*t->by_id));
    t->by_off = calloc((size_t)1 << t->bits, sizeof(*t->by_off));
    if (t->by_id == NULL || t->by_off == NULL) {
        free(t->by_id);
        free(t->by_off);
        return -ENOMEM;
    }
    return 0;
}

/* Double both tables when the n nodes (slices and dirty extents) outnumber
 * the buckets; on ENOMEM keep the old ones (the chains only get longer). */
void table_maybe_grow(pool_t *pool, uint32_t n)
{
    struct slice_table *t = &pool->table;
    unsigned bits = t->bits + 1;
    struct slice **by_id, **by_off;
    struct slice *s;

    if (n <= (1u << t->bits) || bits > 31)
        return;
    by_id = calloc((size_t)1 << bits, sizeof(*by_id));
    by_off = calloc((size_t)1 << bits, sizeof(*by_off));
    if (by_id == NULL || by_off == NULL) {
        free(by_id);
        free(by_off);
        return;
    }
    free(t->by_id);
    free(t->by_off);
    t->by_id = by_id;
    t->by_off = by_off;
    t->bits = bits;
    TAILQ_FOREACH(s, &pool->all_slices, all_link)
        table_link(t, s);
    TAILQ_FOREACH(s, &pool->dirty_list, owner_link)
        table_link(t, s);
    TAILQ_FOREACH(s, &pool->cleaning_list, owner_link)
        table_link(t, s);
}

/* For pool_check.c: the same lookups, and the bucket count. */
struct slice *pool__table_id(const pool_t *pool, uint64_t id)
{
    return table_find_id(&pool->table, id);
}

struct slice *pool__table_off(const pool_t *pool, uint64_t off)
{
    return table_find_off(&pool->table, off);
}

/* ---- create, destroy, grow ----------------------------------------------------- */

int pool_create(pool_t **out, const pool_params_t *params)
{
    pool_t *pool;
    uint64_t quantum;

    if (out == NULL || params == NULL)
        return PINPOOL_EINVAL;
    quantum = params->quantum != 0 ? params->quantum : POOL_DEFAULT_QUANTUM;
    if (!is_pow2(quantum) || params->chunk_size == 0 || params->max_chunks == 0 ||
        params->chunk_size % quantum != 0 ||
        params->chunk_size > UINT64_MAX / params->max_chunks)
        return PINPOOL_EINVAL;

    pool = calloc(1, sizeof(*pool));
    if (pool == NULL)
        return -ENOMEM;
    pool->chunk_size = params->chunk_size;
    pool->quantum = quantum;
    pool->max_chunks = params->max_chunks;
    pool->capacity = params->chunk_size * params->max_chunks;
    pool->allow_multi_chunk = params->allow_multi_chunk;
    pool->dirty_on_free = params->dirty_on_free;
    pool->next_id = 1;
    RB_INIT(&pool->free_by_off);
    TAILQ_INIT(&pool->all_slices);
    TAILQ_INIT(&pool->dirty_list);
    TAILQ_INIT(&pool->cleaning_list);
    RB_INIT(&pool->owner_by_id);
    if (tenancy_init(pool) != 0) {
        free(pool);
        return -ENOMEM;
    }
    if (table_init(&pool->table) != 0) {
        tenancy_destroy(pool);
        free(pool);
        return -ENOMEM;
    }
    *out = pool;
    return 0;
}

/*
 * Each node leaves one of its trees before it is freed (the others are never
 * looked at again): RB_FOREACH_SAFE is not enough, since the step to the next
 * node climbs through ancestors that were visited, and freed, before.
 */
void pool_destroy(pool_t *pool)
{
    struct extent *e;
    struct slice *s;
    struct owner *o;

    if (pool == NULL)
        return;
    while ((e = RB_MIN(free_by_off, &pool->free_by_off)) != NULL) {
        RB_REMOVE(free_by_off, &pool->free_by_off, e);
        free(e);
    }
    while ((s = TAILQ_FIRST(&pool->all_slices)) != NULL) {
        TAILQ_REMOVE(&pool->all_slices, s, all_link);
        free(s->spare);
        free(s);
    }
    while ((s = TAILQ_FIRST(&pool->dirty_list)) != NULL) {
        TAILQ_REMOVE(&pool->dirty_list, s, owner_link);
        free(s->spare);
        free(s);
    }
    while ((s = TAILQ_FIRST(&pool->cleaning_list)) != NULL) {
        TAILQ_REMOVE(&pool->cleaning_list, s, owner_link);
        free(s->spare);
        free(s);
    }
    free(pool->table.by_id);
    free(pool->table.by_off);
    while ((o = RB_MIN(owner_by_id, &pool->owner_by_id)) != NULL) {
        RB_REMOVE(owner_by_id, &pool->owner_by_id, o);
        free(o);
    }
    tenancy_destroy(pool);
    free(pool);
}

/* New chunks are none's: they join the last free extent when it is none's
 * and ends where they start. */
int pool_add_chunks(pool_t *pool, uint32_t n)
{
    struct extent *e;

    if (pool == NULL || n > pool->max_chunks - pool->ready_chunks)
        return PINPOOL_EINVAL;
    if (n == 0)
        return 0;
    e = malloc(sizeof(*e));
    if (e == NULL)
        return -ENOMEM;
    ext_free_range(pool, e, pool->ready, pool->chunk_size * n, &pool->none);
    chunks_added(pool, pool->ready_chunks, n);
    pool->ready += pool->chunk_size * n;
    pool->ready_chunks += n;
    POOL_DEBUG_CHECK(pool, "pool_add_chunks");
    return 0;
}

/* ---- allocation ----------------------------------------------------------------- */

static inline int request_check(const pool_t *pool, uint64_t size, uint64_t *align,
                                uint64_t *extent)
{
    if (size == 0)
        return PINPOOL_EINVAL;
    if (*align == 0)
        *align = pool->quantum;
    if (!is_pow2(*align) || pool->chunk_size % *align != 0)
        return PINPOOL_EALIGN;
    /* Offsets are multiples of the quantum anyway. */
    if (*align < pool->quantum)
        *align = pool->quantum;
    if (size > pool->capacity)
        return PINPOOL_ETOOBIG;
    *extent = align_up(size, pool->quantum);
    if (*extent > pool->chunk_size && !pool->allow_multi_chunk)
        return PINPOOL_ETOOBIG;
    return 0;
}

int pool_request_check(const pool_t *pool, uint64_t size, uint64_t *align, uint64_t *extent)
{
    return request_check(pool, size, align, extent);
}

struct owner *owner_find(pool_t *pool, uint64_t id)
{
    struct owner key = {.id = id};

    return RB_FIND(owner_by_id, &pool->owner_by_id, &key);
}

void owner_add(pool_t *pool, struct owner *o, uint64_t id)
{
    o->id = id;
    o->bytes = 0;
    o->nslices = 0;
    TAILQ_INIT(&o->slices);
    RB_INSERT(owner_by_id, &pool->owner_by_id, o);
    pool->nowners++;
}

/* The nodes one allocation may need, taken before anything changes. */
struct alloc_nodes {
    struct slice *s;
    struct extent *spare, *tail;
    struct owner *o;
    struct tenant *t;
    struct stash st;
};

static void nodes_free(struct alloc_nodes *nd)
{
    free(nd->s);
    free(nd->spare);
    free(nd->tail);
    free(nd->o);
    free(nd->t);
    stash_free(&nd->st);
    memset(nd, 0, sizeof(*nd));
}

/*
 * Tenant t (NULL: it has no record yet) has no extent for the request: give
 * it chunks that were never used, taking every node the whole allocation may
 * need first (so nothing fails after the chunks moved).  0 with *t, *e and
 * *at; PINPOOL_ENOSPC or -ENOMEM with the pool unchanged.
 */
static int do_place_slow(pool_t *pool, uint64_t tenant, uint64_t owner, uint64_t extent,
                         uint64_t align, struct tenant **t, struct extent **e, uint64_t *at,
                         struct alloc_nodes *nd)
{
    uint32_t first, n;
    int rc = tenancy_find_room(pool, extent, align, tenant, &first, &n);

    if (rc != 0)
        return rc;
    if ((nd->s = malloc(sizeof(*nd->s))) == NULL || (nd->spare = malloc(sizeof(*nd->spare))) == NULL ||
        (nd->tail = malloc(sizeof(*nd->tail))) == NULL ||
        (owner_find(pool, owner) == NULL && (nd->o = malloc(sizeof(*nd->o))) == NULL) ||
        (*t == NULL && (nd->t = malloc(sizeof(*nd->t))) == NULL) || !stash_fill(&nd->st, 2 * n)) {
        nodes_free(nd);
        return -ENOMEM;
    }
    if (*t == NULL) {
        *t = nd->t;
        nd->t = NULL;
        tenant_add(pool, *t, tenant);
    }
    tenancy_assign(pool, *t, first, n, &nd->st);
    *e = ext_best_fit(pool, *t, extent, align, at);
    if (*e == NULL) { /* cannot happen: the chunks just given hold it */
        nodes_free(nd);
        return PINPOOL_EINTERNAL;
    }
    return 0;
}

int pool_alloc_as(pool_t *pool, uint64_t tenant, uint64_t owner, uint64_t size, uint64_t align,
                  pool_slice_info_t *out)
{
    struct alloc_nodes nd = {0};
    struct extent *e, *spare;
    struct tenant *t;
    struct slice *s;
    struct owner *o;
    uint64_t extent, at;
    bool exact, split, slow = false;
    int rc;

    if (pool == NULL || tenant == POOL_TENANT_NONE)
        return PINPOOL_EINVAL;
    rc = request_check(pool, size, &align, &extent);
    if (rc != 0)
        return rc;
    t = tenant_find(pool, tenant);
    e = t != NULL ? ext_best_fit(pool, t, extent, align, &at) : NULL;
    if (e == NULL) {
        rc = do_place_slow(pool, tenant, owner, extent, align, &t, &e, &at, &nd);
        if (rc != 0)
            return rc;
        slow = true;
    }

    /* Take every node this may need first: after that nothing can fail (the
     * slow path took them all already). */
    exact = at == e->off && extent == e->len; /* e itself becomes the spare */
    split = at > e->off && at + extent < e->off + e->len;
    o = owner_find(pool, owner);
    if ((nd.s == NULL && (nd.s = malloc(sizeof(*nd.s))) == NULL) ||
        (!exact && nd.spare == NULL && (nd.spare = malloc(sizeof(*nd.spare))) == NULL) ||
        (split && nd.tail == NULL && (nd.tail = malloc(sizeof(*nd.tail))) == NULL) ||
        (o == NULL && nd.o == NULL && (nd.o = malloc(sizeof(*nd.o))) == NULL)) {
        nodes_free(&nd);
        return -ENOMEM;
    }
    s = nd.s;
    nd.s = NULL;
    if (exact) {
        spare = e;
    } else {
        spare = nd.spare;
        nd.spare = NULL;
    }
    ext_take(pool, e, at, extent, split ? nd.tail : NULL);
    if (split)
        nd.tail = NULL;
    if (o == NULL) {
        o = nd.o;
        nd.o = NULL;
        owner_add(pool, o, owner);
    }
    memset(s, 0, sizeof(*s));
    s->owner = o;
    s->tenant = t;
    s->spare = spare;
    s->info.id = pool->next_id++;
    s->info.owner = owner;
    s->info.tenant = tenant;
    s->info.offset = at;
    s->info.size = size;
    s->info.extent = extent;
    s->info.first_chunk = (uint32_t)(at / pool->chunk_size);
    s->info.nchunks = (uint32_t)((at + extent - 1) / pool->chunk_size - at / pool->chunk_size + 1);
    table_maybe_grow(pool, pool->nslices + pool->ndirty + 1);
    table_link(&pool->table, s);
    chunks_hold(pool, s->info.first_chunk, s->info.nchunks);
    slice_go_live(pool, s, o);
    if (slow)
        nodes_free(&nd); /* what the slow path took and this one did not need */
    if (out != NULL)
        *out = s->info;
    POOL_DEBUG_CHECK(pool, "pool_alloc");
    return 0;
}

int pool_alloc(pool_t *pool, uint64_t owner, uint64_t size, uint64_t align,
               pool_slice_info_t *out)
{
    return pool_alloc_as(pool, 0, owner, size, align, out);
}

/* ---- release -------------------------------------------------------------------- */

void slice_free_extent(pool_t *pool, struct slice *s)
{
    table_unlink(&pool->table, s);
    chunks_drop(pool, s->info.first_chunk, s->info.nchunks);
    ext_free_range(pool, s->spare, s->info.offset, s->info.extent, s->tenant);
    free(s);
}

/*
 * Take live slice s from its owner (forgetting the owner with its last
 * slice); then free its extent, or with dirty_on_free make it dirty (it keeps
 * its place in the hash tables and its chunks).
 */
static uint64_t do_release(pool_t *pool, struct slice *s)
{
    uint64_t len = s->info.extent;
    struct owner *o = s->owner;

    TAILQ_REMOVE(&pool->all_slices, s, all_link);
    TAILQ_REMOVE(&o->slices, s, owner_link);
    o->bytes -= len;
    if (--o->nslices == 0) {
        RB_REMOVE(owner_by_id, &pool->owner_by_id, o);
        free(o);
        pool->nowners--;
    }
    s->tenant->used -= len;
    pool->used -= len;
    pool->nslices--;
    if (!pool->dirty_on_free || s->unwritten) {
        slice_free_extent(pool, s);
        return len;
    }
    s->owner = NULL;
    s->dirty = true;
    s->cleaning = false;
    TAILQ_INSERT_TAIL(&pool->dirty_list, s, owner_link);
    pool->dirty += len;
    pool->ndirty++;
    return len;
}

/* Slice id, if owner has it: PINPOOL_ENOENT, PINPOOL_EPERM otherwise. */
static int find_owned(pool_t *pool, uint64_t id, uint64_t owner, struct slice **out)
{
    struct slice *s;

    if (pool == NULL)
        return PINPOOL_EINVAL;
    s = live_by_id(pool, id);
    if (s == NULL)
        return PINPOOL_ENOENT;
    if (s->info.owner != owner)
        return PINPOOL_EPERM;
    *out = s;
    return 0;
}

int pool_free(pool_t *pool, uint64_t id, uint64_t owner, uint64_t *freed)
{
    struct slice *s;
    uint64_t len;
    int rc = find_owned(pool, id, owner, &s);

    if (rc != 0)
        return rc;
    len = do_release(pool, s);
    if (freed != NULL)
        *freed = len;
    POOL_DEBUG_CHECK(pool, "pool_free");
    return 0;
}

int pool_set_owner(pool_t *pool, uint64_t id, uint64_t owner, uint64_t new_owner)
{
    struct owner *o, *n;
    struct slice *s, *at;
    int rc = find_owned(pool, id, owner, &s);

    if (rc != 0)
        return rc;
    s->unwritten = false; /* the new owner may write it */
    if (owner == new_owner)
        return 0;
    o = s->owner;
    n = owner_find(pool, new_owner);
    if (n == NULL) {
        if ((n = malloc(sizeof(*n))) == NULL)
            return -ENOMEM;
        owner_add(pool, n, new_owner);
    }
    /* Keep the new owner's list in id order: find the last slice below id. */
    TAILQ_FOREACH_REVERSE(at, &n->slices, slice_list, owner_link)
        if (at->info.id < id)
            break;
    TAILQ_REMOVE(&o->slices, s, owner_link);
    if (at == NULL)
        TAILQ_INSERT_HEAD(&n->slices, s, owner_link);
    else
        TAILQ_INSERT_AFTER(&n->slices, at, s, owner_link);
    o->bytes -= s->info.extent;
    o->nslices--;
    n->bytes += s->info.extent;
    n->nslices++;
    s->owner = n;
    s->info.owner = new_owner;
    if (o->nslices == 0) {
        RB_REMOVE(owner_by_id, &pool->owner_by_id, o);
        free(o);
        pool->nowners--;
    }
    POOL_DEBUG_CHECK(pool, "pool_set_owner");
    return 0;
}

int pool_free_owner(pool_t *pool, uint64_t owner, uint64_t *freed)
{
    struct owner *o;
    uint64_t bytes = 0;
    uint32_t i, n;

    if (freed != NULL)
        *freed = 0;
    if (pool == NULL || (o = owner_find(pool, owner)) == NULL)
        return 0;
    /* The last release frees o itself: count first. */
    n = o->nslices;
    for (i = 0; i < n; i++)
        bytes += do_release(pool, TAILQ_FIRST(&o->slices));
    if (freed != NULL)
        *freed = bytes;
    POOL_DEBUG_CHECK(pool, "pool_free_owner");
    return n > INT32_MAX ? INT32_MAX : (int)n;
}

/* ---- queries -------------------------------------------------------------------- */

/* A lookup's answer: s (NULL: PINPOOL_ENOENT) into *out (may be NULL). */
static int found(const struct slice *s, pool_slice_info_t *out)
{
    if (s == NULL)
        return PINPOOL_ENOENT;
    if (out != NULL)
        *out = s->info;
    return 0;
}

int pool_lookup(const pool_t *pool, uint64_t id, pool_slice_info_t *out)
{
    return pool == NULL ? PINPOOL_EINVAL : found(live_by_id(pool, id), out);
}

int pool_lookup_offset(const pool_t *pool, uint64_t offset, pool_slice_info_t *out)
{
    return pool == NULL ? PINPOOL_EINVAL : found(live_by_off(pool, offset), out);
}

uint64_t pool_owner_bytes(const pool_t *pool, uint64_t owner, uint32_t *slices)
{
    struct owner *o = pool != NULL ? owner_find(unconst(pool), owner) : NULL;

    if (slices != NULL)
        *slices = o != NULL ? o->nslices : 0;
    return o != NULL ? o->bytes : 0;
}

void pool_foreach_owner(const pool_t *pool,
                        void (*fn)(uint64_t owner, uint64_t bytes, uint32_t slices, void *arg),
                        void *arg)
{
    struct owner *o;

    if (pool == NULL || fn == NULL)
        return;
    RB_FOREACH(o, owner_by_id, &unconst(pool)->owner_by_id)
        fn(o->id, o->bytes, o->nslices, arg);
}

void pool_foreach_slice(const pool_t *pool, uint64_t owner, bool all,
                        void (*fn)(const pool_slice_info_t *slice, void *arg), void *arg)
{
    struct slice *s;
    struct owner *o;

    if (pool == NULL || fn == NULL)
        return;
    if (all) {
        TAILQ_FOREACH(s, &pool->all_slices, all_link)
            fn(&s->info, arg);
        return;
    }
    o = owner_find(unconst(pool), owner);
    if (o == NULL)
        return;
    TAILQ_FOREACH(s, &o->slices, owner_link)
        fn(&s->info, arg);
}

void pool_get_stats(const pool_t *pool, pool_stats_t *out)
{
    struct extent *e = NULL;
    struct tenant *t;
    uint64_t largest = 0;

    if (pool == NULL || out == NULL)
        return;
    e = ext_largest(&pool->none);
    largest = e != NULL ? e->len : 0;
    RB_FOREACH(t, tenant_by_id, &unconst(pool)->tenant_by_id) {
        e = ext_largest(t);
        if (e != NULL && e->len > largest)
            largest = e->len;
    }
    memset(out, 0, sizeof(*out));
    out->capacity = pool->capacity;
    out->ready = pool->ready;
    out->used = pool->used;
    out->dirty = pool->dirty;
    out->claimed = pool->claimed;
    out->free = pool->ready - pool->used - pool->dirty - pool->claimed;
    out->largest_free = largest;
    out->ready_chunks = pool->ready_chunks;
    out->idle_chunks = pool->nidle;
    out->num_slices = pool->nslices;
    out->num_dirty = pool->ndirty;
    out->num_free_extents = pool->nfree;
    out->num_owners = pool->nowners;
    out->num_tenants = pool->ntenants;
    out->fragmentation =
        out->free != 0 ? 1.0 - (double)out->largest_free / (double)out->free : 0.0;
}

uint64_t pool_chunk_size(const pool_t *pool)
{
    return pool != NULL ? pool->chunk_size : 0;
}
