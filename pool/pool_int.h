/*
 * pool_int.h - the nodes of one pool_t, shared by the files of the
 * allocator: extents.c (the free-extent index), tenants.c (chunks and their
 * tenants), pool.c (create, alloc and free, queries), dirty.c (dirty extents:
 * cleaning, and an owner's own taken back) and pool_check.c (the
 * invariants).  Included by those five only.
 *
 * Owns: nothing itself; it declares the structures and the helpers one file
 * calls in another.  Never: included outside pool/.
 * Locking: none (see pool.h).  The helpers here assume valid arguments and a
 * caller that already holds every node they need: they cannot fail.
 *
 * The pieces of a pool:
 *   chunks    one record per chunk: its tenant (who its memory belongs to),
 *             how many slices and dirty extents touch it, whether it is
 *             claimed (its memory being replaced).  A chunk that was never
 *             used belongs to the pseudo-tenant `none`.
 *   tenants   one record per tenant that has chunks (or a claim in flight):
 *             its own best-fit index of the free extents in its chunks.
 *   extents   free space, indexed once by offset (the whole pool, to find the
 *             neighbours a freed range coalesces with) and once by (size,
 *             offset) in the index of the extent's tenant.  A free extent
 *             lies in the chunks of one tenant; two free extents that touch
 *             belong to different tenants (else they are coalesced).
 *   slices    live slices, indexed by id and by start offset (two hash
 *             tables), listed in id order and per owner; dirty extents (freed
 *             slices not yet cleaned, when the pool has dirty_on_free) are the
 *             same nodes, out of the owner lists and in the dirty list.
 */
#ifndef PINPOOL_POOL_INT_H
#define PINPOOL_POOL_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <bsd/sys/queue.h>
#include <bsd/sys/tree.h>

#include "invariants.h"
#include "pool.h"

/* The debug builds' check after every change (invariants.h). */
#define POOL_DEBUG_CHECK(pool, op) POOL_CHECK_AFTER(pool_check, pool, "pool", op)

/* Size classes of a size index: lengths 0-3 are classes 0-3; a length with
 * its top bit at 2^f (f >= 2) is class 4 + 4 (f - 2) + the next two bits. */
#define SIZE_CLASSES 256
#define SIZE_MAP_WORDS (SIZE_CLASSES / 64)

struct tenant;

/* A free extent [off, off + len) of ready space, in the chunks of tenant. */
struct extent {
    uint64_t len;             /* the keys first, next to the size links: a */
    uint64_t off;             /* size-index walk touches one cache line */
    RB_ENTRY(extent) by_size;
    RB_ENTRY(extent) by_off;
    struct tenant *tenant;
    struct extent *stash_next; /* while in a stash (not in any index) */
};

RB_HEAD(free_by_off, extent);
RB_HEAD(free_by_size, extent);
RB_PROTOTYPE(free_by_off, extent, by_off, extent_off_cmp)
RB_PROTOTYPE(free_by_size, extent, by_size, extent_size_cmp)

/* One best-fit index: a tree per size class and a bitmap of the classes
 * that hold extents (walking the classes upwards visits the extents in
 * (size, offset) order, as one tree would; each tree stays shallow). */
struct size_index {
    struct free_by_size by_size[SIZE_CLASSES];
    uint64_t map[SIZE_MAP_WORDS]; /* bit c: by_size[c] is not empty */
};

struct tenant {
    RB_ENTRY(tenant) by_id;
    uint64_t id;           /* POOL_TENANT_NONE for the pool's `none` */
    struct size_index free;
    uint64_t free_bytes;   /* in its extents */
    uint32_t nfree;        /* its extents */
    uint32_t nchunks;      /* chunks that are its (claimed ones included) */
    uint32_t nclaims;      /* chunks claimed for it, not yet ended */
    uint64_t used;         /* extents of its live slices */
};

RB_HEAD(tenant_by_id, tenant);
RB_PROTOTYPE(tenant_by_id, tenant, by_id, tenant_cmp)

struct chunk {
    struct tenant *tenant;    /* whose memory it is (none: never used) */
    struct tenant *claim_for; /* non-NULL while claimed: its memory is being replaced */
    struct extent *claimed;   /* while claimed: the node of its whole range, in no index */
    uint32_t nslices;         /* live slices and dirty extents that touch it */
    bool fresh;               /* while claimed: needs new memory (tenant was another's) */
};

struct owner;

struct slice {
    struct slice *id_next;         /* chain in the id hash */
    struct slice *off_next;        /* chain in the offset hash */
    TAILQ_ENTRY(slice) all_link;   /* every live slice, in id order */
    TAILQ_ENTRY(slice) owner_link; /* live: the owner's slices; dirty: a dirty list */
    struct owner *owner;           /* NULL once dirty */
    struct tenant *tenant;
    struct extent *spare;          /* the node its release may need */
    pool_slice_info_t info;
    bool unwritten;                /* nobody can have written it: freed, it is clean */
    bool dirty;                    /* freed, waiting for (or in) cleaning */
    bool cleaning;                 /* handed out by pool_clean_take */
};

struct owner {
    RB_ENTRY(owner) by_id;
    TAILQ_HEAD(slice_list, slice) slices;
    uint64_t id;
    uint64_t bytes;    /* sum of the extents of its slices */
    uint32_t nslices;  /* > 0: an owner leaves the tree with its last slice */
};

RB_HEAD(owner_by_id, owner);
RB_PROTOTYPE(owner_by_id, owner, by_id, owner_cmp)
TAILQ_HEAD(all_slices, slice);

/* The slice table: two chained hash tables over the same nodes, one keyed by
 * id, one by start offset (slices and dirty extents never share a start).
 * Both have 1 << bits buckets and grow together. */
struct slice_table {
    struct slice **by_id;
    struct slice **by_off;
    unsigned bits;
};

struct pool {
    uint64_t chunk_size;
    uint64_t quantum;
    uint64_t capacity;
    uint32_t max_chunks;
    bool allow_multi_chunk;
    bool dirty_on_free;

    uint32_t ready_chunks;
    uint64_t ready;        /* chunk_size * ready_chunks */
    uint64_t used;         /* sum of live slice extents */
    uint64_t dirty;        /* sum of dirty extents */
    uint64_t claimed;      /* bytes of claimed chunks */
    uint32_t nslices;      /* live */
    uint32_t ndirty;
    uint32_t nfree;        /* free extents */
    uint32_t nowners;
    uint32_t ntenants;     /* in the tree (none not counted) */
    uint32_t nidle;        /* chunks set in idle_map */
    uint64_t next_id;

    struct free_by_off free_by_off;
    struct tenant none;           /* chunks never used */
    struct tenant_by_id tenant_by_id;
    struct tenant *last_tenant;   /* the last one looked up (a cache) */
    struct chunk *chunks;         /* max_chunks records */
    uint64_t *idle_map;           /* bit i: chunk i is idle (see tenants.c) */
    struct slice_table table;
    struct all_slices all_slices;
    struct slice_list dirty_list; /* dirty, waiting to be taken: oldest first */
    struct slice_list cleaning_list; /* dirty, taken by pool_clean_take */
    struct owner_by_id owner_by_id;
};

/* A handful of extent nodes taken before a change, so that it cannot fail. */
struct stash {
    struct extent *head;
};

/* ---- the slice table (inline: every alloc and free goes through it) ----------------- */

/* Fibonacci hashing: the top bits of key * 2^64/phi.  Offsets are multiples
 * of the quantum and ids are consecutive; both spread well. */
static inline size_t hash_key(uint64_t key, unsigned bits)
{
    return (size_t)((key * 0x9e3779b97f4a7c15ull) >> (64 - bits));
}

static inline void table_link(struct slice_table *t, struct slice *s)
{
    struct slice **b = &t->by_id[hash_key(s->info.id, t->bits)];

    s->id_next = *b;
    *b = s;
    b = &t->by_off[hash_key(s->info.offset, t->bits)];
    s->off_next = *b;
    *b = s;
}

/* The node with id / start offset, live or dirty, or NULL. */
static inline struct slice *table_find_id(const struct slice_table *t, uint64_t id)
{
    struct slice *s = t->by_id[hash_key(id, t->bits)];

    while (s != NULL && s->info.id != id)
        s = s->id_next;
    return s;
}

static inline struct slice *table_find_off(const struct slice_table *t, uint64_t off)
{
    struct slice *s = t->by_off[hash_key(off, t->bits)];

    while (s != NULL && s->info.offset != off)
        s = s->off_next;
    return s;
}

static inline void table_unlink(struct slice_table *t, struct slice *s)
{
    struct slice **pp = &t->by_id[hash_key(s->info.id, t->bits)];

    while (*pp != s)
        pp = &(*pp)->id_next;
    *pp = s->id_next;
    pp = &t->by_off[hash_key(s->info.offset, t->bits)];
    while (*pp != s)
        pp = &(*pp)->off_next;
    *pp = s->off_next;
}

/* The live slice with id / starting at off, or NULL (dirty ones are gone). */
static inline struct slice *live_by_id(const pool_t *pool, uint64_t id)
{
    struct slice *s = table_find_id(&pool->table, id);

    return s != NULL && !s->dirty ? s : NULL;
}

static inline struct slice *live_by_off(const pool_t *pool, uint64_t off)
{
    struct slice *s = table_find_off(&pool->table, off);

    return s != NULL && !s->dirty ? s : NULL;
}


/* ---- pool.c ------------------------------------------------------------------ */

/* s (its extent taken, linked in the table) becomes a live slice of owner
 * o: at the end of the pool's and o's lists (ids only grow: both stay
 * sorted), counted in o, its tenant and the pool. */
static inline void slice_go_live(pool_t *pool, struct slice *s, struct owner *o)
{
    uint64_t extent = s->info.extent;

    s->owner = o;
    TAILQ_INSERT_TAIL(&pool->all_slices, s, all_link);
    TAILQ_INSERT_TAIL(&o->slices, s, owner_link);
    o->bytes += extent;
    o->nslices++;
    s->tenant->used += extent;
    pool->used += extent;
    pool->nslices++;
}

/* The record of owner id, or NULL; make o (allocated by the caller) the empty
 * record of owner id. */
struct owner *owner_find(pool_t *pool, uint64_t id);
void owner_add(pool_t *pool, struct owner *o, uint64_t id);
/* Slice (or dirty extent) s's extent becomes free space of its tenant
 * (coalescing), its node goes; its chunks lose it. */
void slice_free_extent(pool_t *pool, struct slice *s);

/* pool_alloc's checks of a request; sets *align (0 = quantum) and *extent. */
int pool_request_check(const pool_t *pool, uint64_t size, uint64_t *align, uint64_t *extent);

/* Grow the slice table ahead of n nodes (a failed growth keeps longer chains). */
void table_maybe_grow(pool_t *pool, uint32_t n);
/* For pool_check.c: the slice table's node (live or dirty) with id / start. */
struct slice *pool__table_id(const pool_t *pool, uint64_t id);
struct slice *pool__table_off(const pool_t *pool, uint64_t off);

/* ---- extents.c --------------------------------------------------------------- */

void ext_index_init(struct size_index *ix);
/* Add e (its tenant set) to both indexes / take it out of both. */
void ext_insert(pool_t *pool, struct extent *e);
void ext_remove(pool_t *pool, struct extent *e);
/* Give e the bounds [off, off + len), which keep it between its neighbours. */
void ext_resize(pool_t *pool, struct extent *e, uint64_t off, uint64_t len);
/* Make [off, off + len) free space of tenant t, coalescing with t's extents
 * that touch it; node is used if it joins none, else freed. */
void ext_free_range(pool_t *pool, struct extent *node, uint64_t off, uint64_t len,
                    struct tenant *t);
/* Cut [at, at + len) out of free extent e (which holds it); e keeps one
 * piece, tail (needed when both are left) the one after.  When nothing is
 * left e leaves the indexes and is the caller's again. */
void ext_take(pool_t *pool, struct extent *e, uint64_t at, uint64_t len, struct extent *tail);
/* The free extent that holds offset off, or NULL. */
struct extent *ext_at(pool_t *pool, uint64_t off);
/* Best fit in t's index: the extent and *at, or NULL. */
struct extent *ext_best_fit(pool_t *pool, struct tenant *t, uint64_t extent, uint64_t align,
                            uint64_t *at);
/* t's largest free extent, or NULL. */
struct extent *ext_largest(const struct tenant *t);
unsigned ext_size_class(uint64_t len);
int extent_size_cmp(const struct extent *a, const struct extent *b);

bool stash_fill(struct stash *st, unsigned n);
struct extent *stash_take(struct stash *st);
void stash_free(struct stash *st);

/* ---- tenants.c ---------------------------------------------------------------- */

int tenancy_init(pool_t *pool);
void tenancy_destroy(pool_t *pool);
/* Set chunk i's idle bit to what its state says. */
void chunk_idle_update(pool_t *pool, uint32_t i);
/* Chunks [first, first + n) get (hold) / lose (drop) one slice or dirty
 * extent.  Inline: one of each per alloc+free pair. */
static inline void chunks_hold(pool_t *pool, uint32_t first, uint32_t n)
{
    for (uint32_t i = first; i < first + n; i++)
        if (pool->chunks[i].nslices++ == 0)
            chunk_idle_update(pool, i);
}

static inline void chunks_drop(pool_t *pool, uint32_t first, uint32_t n)
{
    for (uint32_t i = first; i < first + n; i++)
        if (--pool->chunks[i].nslices == 0)
            chunk_idle_update(pool, i);
}
/* Chunks [first, first + n) joined the pool (they are none's). */
void chunks_added(pool_t *pool, uint32_t first, uint32_t n);
/* The record of tenant id, or NULL. */
struct tenant *tenant_find(pool_t *pool, uint64_t id);
/* Make t (allocated by the caller) the empty record of tenant id. */
void tenant_add(pool_t *pool, struct tenant *t, uint64_t id);
/* Free t if it holds no chunk and no claim. */
void tenant_maybe_free(pool_t *pool, struct tenant *t);
/*
 * t's own extents hold no place for extent bytes: which chunks could become
 * t's without new memory (never used ones, or for a slice of several chunks a
 * run of wholly free chunks of t and none)?  0 with *first and *n, or
 * PINPOOL_ENOSPC.  Changes nothing.
 */
int tenancy_find_room(pool_t *pool, uint64_t extent, uint64_t align, uint64_t tenant,
                      uint32_t *first, uint32_t *n);
/* Give t the chunks of [first, first + n) that are none's (all are wholly
 * free); takes up to 2 stash nodes per such chunk. */
void tenancy_assign(pool_t *pool, struct tenant *t, uint32_t first, uint32_t n, struct stash *st);

#endif /* PINPOOL_POOL_INT_H */
