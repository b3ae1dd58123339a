/*
 * pool.c - the allocator and slice table behind pool.h.
 *
 * Owns: every node of one pool_t.  Free extents are indexed twice, by offset
 * (to find the neighbours a freed slice coalesces with) and by (size, offset)
 * (best fit), in red-black trees from libbsd's <bsd/sys/tree.h>.  The size
 * index is split by size class (four classes per power of two) into one small
 * tree per class, with a bitmap of the classes that hold extents: walking the
 * classes upwards visits the extents in the same (size, offset) order as one
 * tree would, so best fit is unchanged, and each tree is a few levels deep
 * (a size-tree insert was a fifth of an alloc+free pair).  Slices are
 * indexed by id and by start offset in two chained hash tables (the slice
 * table; O(1), which matters to the client arena's free-by-pointer), and kept
 * in one list in id order for pool_foreach_slice.  Owners are indexed by id in
 * a red-black tree; each keeps its byte and slice counts and a list of its
 * slices in id order, so pool_free_owner costs O(k log n) for k slices.
 * Never: touches the memory it describes, CUDA, sockets or global state.
 * Never allocates on a free path: every slice carries the free-extent node
 * that its release may need, so pool_free and pool_free_owner cannot fail.
 * Locking: none (see pool.h).  The do_* helpers assume valid arguments and a
 * caller that already holds every node they need; the public functions check
 * the arguments and allocate first, then change the pool, so a call that fails
 * leaves the pool unchanged.
 */
#include "pool.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "invariants.h"
#include "pinpool_errors.h"

#include <bsd/sys/queue.h>
#include "rbtree.h"

#define POOL_DEFAULT_QUANTUM 256

/* A free extent [off, off + len) of ready space. */
struct extent {
    uint64_t len;             /* the keys first, next to the size links: a */
    uint64_t off;             /* size-index walk touches one cache line */
    RB_ENTRY(extent) by_size;
    RB_ENTRY(extent) by_off;
};

struct owner;

struct slice {
    struct slice *id_next;         /* chain in the id hash */
    struct slice *off_next;        /* chain in the offset hash */
    TAILQ_ENTRY(slice) all_link;   /* every slice, in id order */
    TAILQ_ENTRY(slice) owner_link; /* the owner's slices, in id order */
    struct owner *owner;
    struct extent *spare;          /* the node do_release may need */
    pool_slice_info_t info;
};

struct owner {
    RB_ENTRY(owner) by_id;
    TAILQ_HEAD(slice_list, slice) slices;
    uint64_t id;
    uint64_t bytes;    /* sum of the extents of its slices */
    uint32_t nslices;  /* > 0: an owner leaves the tree with its last slice */
};

RB_HEAD(free_by_off, extent);
RB_HEAD(free_by_size, extent);

/* Size classes: lengths 0-3 are classes 0-3; a length with its top bit at
 * 2^f (f >= 2) is class 4 + 4 (f - 2) + the next two bits. */
#define SIZE_CLASSES 256
#define SIZE_MAP_WORDS (SIZE_CLASSES / 64)
RB_HEAD(owner_by_id, owner);
TAILQ_HEAD(all_slices, slice);

/*
 * The slice table: two chained hash tables over the same nodes, one keyed by
 * id, one by start offset (live slices never share a start).  Both have
 * 1 << bits buckets and grow together when the slices outnumber the buckets;
 * a failed growth only lengthens the chains, so inserting never fails.
 */
#define SLICE_HASH_MIN_BITS 6

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

    uint32_t ready_chunks;
    uint64_t ready;        /* chunk_size * ready_chunks */
    uint64_t used;         /* sum of slice extents; free = ready - used */
    uint32_t nslices;
    uint32_t nfree;        /* free extents */
    uint32_t nowners;
    uint64_t next_id;

    struct free_by_off free_by_off;
    struct free_by_size by_size[SIZE_CLASSES];  /* one tree per size class */
    uint64_t size_map[SIZE_MAP_WORDS];          /* bit c: by_size[c] is not empty */
    struct slice_table table;
    struct all_slices all_slices;
    struct owner_by_id owner_by_id;
};

#define CMP(a, b) (((a) > (b)) - ((a) < (b)))

static int extent_off_cmp(const struct extent *a, const struct extent *b)
{
    return CMP(a->off, b->off);
}

static int extent_size_cmp(const struct extent *a, const struct extent *b)
{
    return a->len != b->len ? CMP(a->len, b->len) : CMP(a->off, b->off);
}

static int owner_cmp(const struct owner *a, const struct owner *b)
{
    return CMP(a->id, b->id);
}

/* No semicolons after these: they expand to function definitions. */
RB_GENERATE_STATIC(free_by_off, extent, by_off, extent_off_cmp)
RB_GENERATE_STATIC(free_by_size, extent, by_size, extent_size_cmp)
RB_GENERATE_STATIC(owner_by_id, owner, by_id, owner_cmp)

#include "rbtree_end.h"

/*
 * The generated RB_* functions take non-const heads, so the read-only entry
 * points (pool_lookup, pool_check, ...) cast the const away through this; they
 * only search and walk.
 */
static pool_t *unconst(const pool_t *pool)
{
    return (pool_t *)(uintptr_t)pool;
}

#define debug_check(pool, op) POOL_CHECK_AFTER(pool_check, pool, "pool", op)

static bool is_pow2(uint64_t x)
{
    return x != 0 && (x & (x - 1)) == 0;
}

/* x rounded up to a multiple of a, a power of two; the callers keep it below
 * 2^64.  (The chunk size need not be a power of two: see do_place.) */
static uint64_t align_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) & ~(a - 1);
}

/* ------------------------------------------------------------------------ */
/* Size classes of the free-extent index                                    */

static unsigned size_class(uint64_t len)
{
    unsigned f;

    if (len < 4)
        return (unsigned)len;
    f = 63u - (unsigned)__builtin_clzll(len);
    return 4 + 4 * (f - 2) + (unsigned)((len >> (f - 2)) & 3);
}

/* The first class >= c that holds extents, or SIZE_CLASSES. */
static unsigned class_at_or_above(const pool_t *pool, unsigned c)
{
    unsigned w = c / 64;
    uint64_t bits;

    if (c >= SIZE_CLASSES)
        return SIZE_CLASSES;
    bits = pool->size_map[w] & (~0ull << (c % 64));
    while (bits == 0) {
        if (++w == SIZE_MAP_WORDS)
            return SIZE_CLASSES;
        bits = pool->size_map[w];
    }
    return w * 64 + (unsigned)__builtin_ctzll(bits);
}

/* The highest class that holds extents, or SIZE_CLASSES when none does. */
static unsigned top_class(const pool_t *pool)
{
    for (unsigned w = SIZE_MAP_WORDS; w-- > 0;)
        if (pool->size_map[w] != 0)
            return w * 64 + 63u - (unsigned)__builtin_clzll(pool->size_map[w]);
    return SIZE_CLASSES;
}

static void size_insert(pool_t *pool, struct extent *e)
{
    unsigned c = size_class(e->len);

    RB_INSERT(free_by_size, &pool->by_size[c], e);
    pool->size_map[c / 64] |= 1ull << (c % 64);
}

static void size_remove(pool_t *pool, struct extent *e)
{
    unsigned c = size_class(e->len);

    RB_REMOVE(free_by_size, &pool->by_size[c], e);
    if (RB_EMPTY(&pool->by_size[c]))
        pool->size_map[c / 64] &= ~(1ull << (c % 64));
}

/* ------------------------------------------------------------------------ */
/* The slice table                                                          */

/* Fibonacci hashing: the top bits of key * 2^64/phi.  Offsets are multiples
 * of the quantum and ids are consecutive; both spread well. */
static size_t hash_key(uint64_t key, unsigned bits)
{
    return (size_t)((key * 0x9e3779b97f4a7c15ull) >> (64 - bits));
}

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

static void table_link(struct slice_table *t, struct slice *s)
{
    struct slice **b = &t->by_id[hash_key(s->info.id, t->bits)];

    s->id_next = *b;
    *b = s;
    b = &t->by_off[hash_key(s->info.offset, t->bits)];
    s->off_next = *b;
    *b = s;
}

/* Double both tables when n slices outnumber the buckets; on ENOMEM keep the
 * old ones. */
static void table_maybe_grow(struct slice_table *t, const struct all_slices *all, uint32_t n)
{
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
    TAILQ_FOREACH(s, all, all_link)
        table_link(t, s);
}

static struct slice *table_find_id(const struct slice_table *t, uint64_t id)
{
    struct slice *s = t->by_id[hash_key(id, t->bits)];

    while (s != NULL && s->info.id != id)
        s = s->id_next;
    return s;
}

static struct slice *table_find_off(const struct slice_table *t, uint64_t off)
{
    struct slice *s = t->by_off[hash_key(off, t->bits)];

    while (s != NULL && s->info.offset != off)
        s = s->off_next;
    return s;
}

static void table_unlink(struct slice_table *t, struct slice *s)
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

/* ------------------------------------------------------------------------ */
/* Create, destroy, grow                                                    */

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
    pool->next_id = 1;
    RB_INIT(&pool->free_by_off);
    for (unsigned c = 0; c < SIZE_CLASSES; c++)
        RB_INIT(&pool->by_size[c]);
    TAILQ_INIT(&pool->all_slices);
    RB_INIT(&pool->owner_by_id);
    if (table_init(&pool->table) != 0) {
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
    free(pool->table.by_id);
    free(pool->table.by_off);
    while ((o = RB_MIN(owner_by_id, &pool->owner_by_id)) != NULL) {
        RB_REMOVE(owner_by_id, &pool->owner_by_id, o);
        free(o);
    }
    free(pool);
}

static void do_insert_free(pool_t *pool, struct extent *e)
{
    RB_INSERT(free_by_off, &pool->free_by_off, e);
    size_insert(pool, e);
    pool->nfree++;
}

static void do_remove_free(pool_t *pool, struct extent *e)
{
    RB_REMOVE(free_by_off, &pool->free_by_off, e);
    size_remove(pool, e);
    pool->nfree--;
}

/*
 * Give free extent e the new bounds [off, off + len).  The new bounds must
 * keep e between its neighbours in offset order (they lie inside or next to
 * its old ones), so only the size index may need e re-inserted: not when the
 * new (size, offset) key still sorts between e's neighbours there, which is
 * the common case of the largest extent shrinking or growing (a re-insertion
 * was a quarter of an alloc+free pair).
 */
static void do_resize_free(pool_t *pool, struct extent *e, uint64_t off, uint64_t len)
{
    struct extent key = {.off = off, .len = len};
    unsigned c = size_class(e->len);

    if (size_class(len) == c) {
        struct extent *prev = RB_PREV(free_by_size, &pool->by_size[c], e);
        struct extent *next = RB_NEXT(free_by_size, &pool->by_size[c], e);

        if ((prev == NULL || extent_size_cmp(prev, &key) < 0) &&
            (next == NULL || extent_size_cmp(&key, next) < 0)) {
            e->off = off;
            e->len = len;
            return;
        }
    }
    size_remove(pool, e);
    e->off = off;
    e->len = len;
    size_insert(pool, e);
}

int pool_add_chunks(pool_t *pool, uint32_t n)
{
    struct extent *last;
    uint64_t add;

    if (pool == NULL || n > pool->max_chunks - pool->ready_chunks)
        return PINPOOL_EINVAL;
    if (n == 0)
        return 0;
    add = pool->chunk_size * n;

    last = RB_MAX(free_by_off, &pool->free_by_off);
    if (last != NULL && last->off + last->len == pool->ready) {
        do_resize_free(pool, last, last->off, last->len + add);
    } else {
        struct extent *e = malloc(sizeof(*e));

        if (e == NULL)
            return -ENOMEM;
        e->off = pool->ready;
        e->len = add;
        do_insert_free(pool, e);
    }
    pool->ready += add;
    pool->ready_chunks += n;
    debug_check(pool, "pool_add_chunks");
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Allocation                                                               */

/*
 * Where in free extent e does a slice of extent bytes aligned to align go?
 * The lowest offset that meets the alignment and the boundary rule: a slice of
 * at most one chunk must not cross a chunk boundary (if the aligned start
 * would make it cross, it moves to the next boundary, which is aligned too as
 * align divides chunk_size); a larger one starts on a chunk boundary.
 */
static bool do_place(const pool_t *pool, const struct extent *e, uint64_t extent,
                     uint64_t align, uint64_t *at)
{
    uint64_t end = e->off + e->len;
    uint64_t p, into;

    if (extent > pool->chunk_size) {
        into = e->off % pool->chunk_size;
        p = into == 0 ? e->off : e->off - into + pool->chunk_size;
    } else {
        p = align_up(e->off, align);
        into = p % pool->chunk_size;
        if (into + extent > pool->chunk_size)
            p += pool->chunk_size - into;
    }
    if (p > end || end - p < extent)
        return false;
    *at = p;
    return true;
}

/*
 * Best fit: the smallest free extent (ties: the lowest offset) in which the
 * slice can be placed.  Candidates come from the size index upwards from the
 * first one that is large enough (in the request's class, then the whole of
 * each class above); those that the alignment or the boundary rule rejects
 * are skipped one by one.
 */
static struct extent *do_best_fit(pool_t *pool, uint64_t extent, uint64_t align, uint64_t *at)
{
    struct extent key = {.off = 0, .len = extent};
    unsigned c = size_class(extent);
    struct extent *e;

    for (e = RB_NFIND(free_by_size, &pool->by_size[c], &key); e != NULL;
         e = RB_NEXT(free_by_size, &pool->by_size[c], e)) {
        if (do_place(pool, e, extent, align, at))
            return e;
    }
    for (c = class_at_or_above(pool, c + 1); c < SIZE_CLASSES;
         c = class_at_or_above(pool, c + 1)) {
        RB_FOREACH(e, free_by_size, &pool->by_size[c]) {
            if (do_place(pool, e, extent, align, at))
                return e;
        }
    }
    return NULL;
}

static struct owner *do_find_owner(pool_t *pool, uint64_t id)
{
    struct owner key = {.id = id};

    return RB_FIND(owner_by_id, &pool->owner_by_id, &key);
}

/* Make o (allocated by the caller) the empty record of owner id. */
static void do_add_owner(pool_t *pool, struct owner *o, uint64_t id)
{
    o->id = id;
    o->bytes = 0;
    o->nslices = 0;
    TAILQ_INIT(&o->slices);
    RB_INSERT(owner_by_id, &pool->owner_by_id, o);
    pool->nowners++;
}

/*
 * Cut [at, at + len) out of free extent e.  What is left before and after it
 * stays free: e keeps one piece, tail (given when both pieces are non-empty)
 * takes the one after.  When nothing is left e leaves both indexes and the
 * caller owns it again.
 */
static void do_take(pool_t *pool, struct extent *e, uint64_t at, uint64_t len,
                    struct extent *tail)
{
    uint64_t end = e->off + e->len;

    if (at == e->off && len == e->len) {
        do_remove_free(pool, e);
    } else if (at == e->off) {
        do_resize_free(pool, e, at + len, end - (at + len));
    } else {
        do_resize_free(pool, e, e->off, at - e->off);
        if (at + len < end) {
            tail->off = at + len;
            tail->len = end - tail->off;
            do_insert_free(pool, tail);
        }
    }
}

/* Size checks of pool_alloc; sets *align (0 = quantum) and *extent. */
static int check_request(const pool_t *pool, uint64_t size, uint64_t *align, uint64_t *extent)
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

int pool_alloc(pool_t *pool, uint64_t owner, uint64_t size, uint64_t align,
               pool_slice_info_t *out)
{
    struct extent *e, *spare = NULL, *tail = NULL;
    struct slice *s = NULL;
    struct owner *o;
    uint64_t extent, at;
    bool exact, split, new_owner;
    int rc;

    if (pool == NULL)
        return PINPOOL_EINVAL;
    rc = check_request(pool, size, &align, &extent);
    if (rc != 0)
        return rc;
    e = do_best_fit(pool, extent, align, &at);
    if (e == NULL)
        return PINPOOL_ENOSPC;

    /* Take every node this may need first: after that nothing can fail. */
    exact = at == e->off && extent == e->len; /* e itself becomes the spare */
    split = at > e->off && at + extent < e->off + e->len;
    o = do_find_owner(pool, owner);
    new_owner = o == NULL;
    if ((s = malloc(sizeof(*s))) == NULL)
        goto fail;
    if (!exact && (spare = malloc(sizeof(*spare))) == NULL)
        goto fail;
    if (split && (tail = malloc(sizeof(*tail))) == NULL)
        goto fail;
    if (new_owner && (o = malloc(sizeof(*o))) == NULL)
        goto fail;
    if (exact)
        spare = e;

    do_take(pool, e, at, extent, tail);
    if (new_owner)
        do_add_owner(pool, o, owner);
    memset(s, 0, sizeof(*s));
    s->owner = o;
    s->spare = spare;
    s->info.id = pool->next_id++;
    s->info.owner = owner;
    s->info.offset = at;
    s->info.size = size;
    s->info.extent = extent;
    s->info.first_chunk = (uint32_t)(at / pool->chunk_size);
    s->info.nchunks = (uint32_t)((at + extent - 1) / pool->chunk_size - at / pool->chunk_size + 1);
    table_maybe_grow(&pool->table, &pool->all_slices, pool->nslices + 1);
    table_link(&pool->table, s);
    /* ids only grow: both lists stay sorted */
    TAILQ_INSERT_TAIL(&pool->all_slices, s, all_link);
    TAILQ_INSERT_TAIL(&o->slices, s, owner_link);
    o->bytes += extent;
    o->nslices++;
    pool->used += extent;
    pool->nslices++;
    if (out != NULL)
        *out = s->info;
    debug_check(pool, "pool_alloc");
    return 0;

fail: /* the last malloc failed; o, if new, is still NULL */
    free(s);
    free(spare);
    free(tail);
    return -ENOMEM;
}

/* ------------------------------------------------------------------------ */
/* Release                                                                  */

/*
 * Return slice s to the free space, coalescing with the free extents that end
 * where it starts and start where it ends, and forget it (its owner too when
 * that was its last slice).  Uses s->spare when it joins no neighbour.
 */
static uint64_t do_release(pool_t *pool, struct slice *s)
{
    uint64_t off = s->info.offset, len = s->info.extent;
    struct extent key = {.off = off, .len = 0};
    struct extent *next, *prev;
    struct owner *o = s->owner;
    bool join_prev, join_next;

    next = RB_NFIND(free_by_off, &pool->free_by_off, &key);
    prev = next != NULL ? RB_PREV(free_by_off, &pool->free_by_off, next)
                        : RB_MAX(free_by_off, &pool->free_by_off);
    join_prev = prev != NULL && prev->off + prev->len == off;
    join_next = next != NULL && next->off == off + len;

    if (join_prev && join_next) {
        uint64_t total = prev->len + len + next->len;

        do_remove_free(pool, next);
        free(next);
        do_resize_free(pool, prev, prev->off, total);
        free(s->spare);
    } else if (join_prev) {
        do_resize_free(pool, prev, prev->off, prev->len + len);
        free(s->spare);
    } else if (join_next) {
        do_resize_free(pool, next, off, next->len + len);
        free(s->spare);
    } else {
        s->spare->off = off;
        s->spare->len = len;
        do_insert_free(pool, s->spare);
    }

    table_unlink(&pool->table, s);
    TAILQ_REMOVE(&pool->all_slices, s, all_link);
    TAILQ_REMOVE(&o->slices, s, owner_link);
    o->bytes -= len;
    o->nslices--;
    if (o->nslices == 0) {
        RB_REMOVE(owner_by_id, &pool->owner_by_id, o);
        free(o);
        pool->nowners--;
    }
    pool->used -= len;
    pool->nslices--;
    free(s);
    return len;
}

/* Slice id, if owner has it: PINPOOL_ENOENT, PINPOOL_EPERM otherwise. */
static int find_owned(pool_t *pool, uint64_t id, uint64_t owner, struct slice **out)
{
    struct slice *s;

    if (pool == NULL)
        return PINPOOL_EINVAL;
    s = table_find_id(&pool->table, id);
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
    debug_check(pool, "pool_free");
    return 0;
}

int pool_set_owner(pool_t *pool, uint64_t id, uint64_t owner, uint64_t new_owner)
{
    struct owner *o, *n;
    struct slice *s, *at;
    int rc = find_owned(pool, id, owner, &s);

    if (rc != 0)
        return rc;
    if (owner == new_owner)
        return 0;
    o = s->owner;
    n = do_find_owner(pool, new_owner);
    if (n == NULL) {
        if ((n = malloc(sizeof(*n))) == NULL)
            return -ENOMEM;
        do_add_owner(pool, n, new_owner);
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
    debug_check(pool, "pool_set_owner");
    return 0;
}

int pool_free_owner(pool_t *pool, uint64_t owner, uint64_t *freed)
{
    struct owner *o;
    uint64_t bytes = 0;
    uint32_t i, n;

    if (freed != NULL)
        *freed = 0;
    if (pool == NULL || (o = do_find_owner(pool, owner)) == NULL)
        return 0;
    /* The last release frees o itself: count first. */
    n = o->nslices;
    for (i = 0; i < n; i++)
        bytes += do_release(pool, TAILQ_FIRST(&o->slices));
    if (freed != NULL)
        *freed = bytes;
    debug_check(pool, "pool_free_owner");
    return n > INT32_MAX ? INT32_MAX : (int)n;
}

/* ------------------------------------------------------------------------ */
/* Queries                                                                  */

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
    return pool == NULL ? PINPOOL_EINVAL : found(table_find_id(&pool->table, id), out);
}

int pool_lookup_offset(const pool_t *pool, uint64_t offset, pool_slice_info_t *out)
{
    return pool == NULL ? PINPOOL_EINVAL : found(table_find_off(&pool->table, offset), out);
}

uint64_t pool_owner_bytes(const pool_t *pool, uint64_t owner, uint32_t *slices)
{
    struct owner *o = pool != NULL ? do_find_owner(unconst(pool), owner) : NULL;

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
    o = do_find_owner(unconst(pool), owner);
    if (o == NULL)
        return;
    TAILQ_FOREACH(s, &o->slices, owner_link)
        fn(&s->info, arg);
}

void pool_get_stats(const pool_t *pool, pool_stats_t *out)
{
    struct extent *largest = NULL;
    unsigned top;

    if (pool == NULL || out == NULL)
        return;
    top = top_class(pool);
    if (top < SIZE_CLASSES)
        largest = RB_MAX(free_by_size, &unconst(pool)->by_size[top]);
    memset(out, 0, sizeof(*out));
    out->capacity = pool->capacity;
    out->ready = pool->ready;
    out->used = pool->used;
    out->free = pool->ready - pool->used;
    out->largest_free = largest != NULL ? largest->len : 0;
    out->ready_chunks = pool->ready_chunks;
    out->num_slices = pool->nslices;
    out->num_free_extents = pool->nfree;
    out->num_owners = pool->nowners;
    out->fragmentation =
        out->free != 0 ? 1.0 - (double)out->largest_free / (double)out->free : 0.0;
}

uint64_t pool_chunk_size(const pool_t *pool)
{
    return pool != NULL ? pool->chunk_size : 0;
}

/* ------------------------------------------------------------------------ */
/* Invariants                                                               */

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

/* Order-independent fingerprint of a set of extents: both indexes must hold
 * the same nodes with the same keys. */
static uint64_t extent_hash(const struct extent *e)
{
    uint64_t h = (uint64_t)(uintptr_t)e ^ (e->off * 0x9e3779b97f4a7c15ull) ^
                 (e->len * 0xc2b2ae3d27d4eb4full);

    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

/* The offset index: free extents in ready space, disjoint and coalesced. */
static int check_offset_index(const pool_t *pool, uint64_t *free_bytes, uint64_t *free_hash,
                              char *msg, size_t msglen)
{
    pool_t *p = unconst(pool);
    struct extent *e;
    uint64_t end = 0, q = pool->quantum;
    uint32_t n = 0;

    *free_bytes = *free_hash = 0;
    RB_FOREACH(e, free_by_off, &p->free_by_off) {
        if (e->len == 0 || e->off % q != 0 || e->len % q != 0 || e->off > pool->ready ||
            e->len > pool->ready - e->off)
            return check_fail(msg, msglen, "free extent [%" PRIu64 ", +%" PRIu64
                              ") is empty, off the quantum or past ready %" PRIu64,
                              e->off, e->len, pool->ready);
        if (n > 0 && e->off <= end)
            return check_fail(msg, msglen, "free extent at %" PRIu64 " %s the one before,"
                              " which ends at %" PRIu64, e->off,
                              e->off == end ? "touches (not coalesced)" : "overlaps", end);
        end = e->off + e->len;
        *free_bytes += e->len;
        *free_hash += extent_hash(e);
        n++;
    }
    if (n != pool->nfree)
        return check_fail(msg, msglen, "offset index holds %" PRIu32 " free extents, the"
                          " counter says %" PRIu32, n, pool->nfree);
    return 0;
}

/* The size index: same extents as the offset index, in (size, offset) order. */
static int check_size_index(const pool_t *pool, uint64_t free_bytes, uint64_t free_hash,
                            char *msg, size_t msglen)
{
    pool_t *p = unconst(pool);
    const struct extent *prev = NULL;
    struct extent *e;
    uint64_t bytes = 0, hash = 0;
    uint32_t n = 0;

    for (unsigned c = 0; c < SIZE_CLASSES; c++) {
        bool mapped = (p->size_map[c / 64] >> (c % 64)) & 1;

        if (mapped == RB_EMPTY(&p->by_size[c]))
            return check_fail(msg, msglen, "size class %u is %s but its bit says otherwise",
                              c, mapped ? "empty" : "not empty");
        RB_FOREACH(e, free_by_size, &p->by_size[c]) {
            if (size_class(e->len) != c)
                return check_fail(msg, msglen, "free extent [%" PRIu64 ", +%" PRIu64
                                  ") is in size class %u, not %u", e->off, e->len, c,
                                  size_class(e->len));
            if (prev != NULL && extent_size_cmp(prev, e) >= 0)
                return check_fail(msg, msglen, "size index out of order at [%" PRIu64 ", +%"
                                  PRIu64 ")", e->off, e->len);
            bytes += e->len;
            hash += extent_hash(e);
            n++;
            prev = e;
        }
    }
    if (n != pool->nfree || bytes != free_bytes || hash != free_hash)
        return check_fail(msg, msglen, "size index (%" PRIu32 " extents, %" PRIu64
                          " bytes) differs from offset index (%" PRIu32 ", %" PRIu64 ")",
                          n, bytes, pool->nfree, free_bytes);
    return 0;
}

/* One slice on its own: ids, rounding, the boundary rule, its chunks, and no
 * overlap with a free extent. */
static int check_slice(const pool_t *pool, const struct slice *s, char *msg, size_t msglen)
{
    const pool_slice_info_t *i = &s->info;
    struct extent key = {.off = i->offset, .len = 0};
    struct extent *next, *prev;
    uint64_t c = pool->chunk_size;
    uint64_t last = (i->offset + i->extent - 1) / c;

    if (i->id == 0 || i->id >= pool->next_id)
        return check_fail(msg, msglen, "slice id %" PRIu64 " was never handed out", i->id);
    if (i->size == 0 || i->extent != align_up(i->size, pool->quantum) ||
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
    if (s->owner == NULL || s->owner->id != i->owner || s->spare == NULL)
        return check_fail(msg, msglen, "slice %" PRIu64 ": bad owner or spare node", i->id);
    if (i->offset > pool->ready || i->extent > pool->ready - i->offset)
        return check_fail(msg, msglen, "slice %" PRIu64 " [%" PRIu64 ", +%" PRIu64
                          ") is past ready %" PRIu64, i->id, i->offset, i->extent, pool->ready);
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

/* The slice table, then the owners: counts and bytes must add up. */
static int check_slices_and_owners(const pool_t *pool, char *msg, size_t msglen)
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
        if (table_find_id(&p->table, s->info.id) != s ||
            table_find_off(&p->table, s->info.offset) != s)
            return check_fail(msg, msglen, "slice %" PRIu64 " at %" PRIu64 " is missing from"
                              " the id or offset hash", s->info.id, s->info.offset);
        rc = check_slice(pool, s, msg, msglen);
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
    if (hashed_id != n || hashed_off != n)
        return check_fail(msg, msglen, "the id and offset hashes hold %" PRIu32 " and %" PRIu32
                          " slices, the list %" PRIu32, hashed_id, hashed_off, n);
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

/*
 * Walks every index once, O(n), plus one O(log n) search per slice for the
 * free extents around it.  Slices are not kept in offset order (an index only
 * for this check cost 18% of an alloc+free pair), so two slices overlapping
 * each other is not caught here; the tests check that against a model.
 */
int pool_check(const pool_t *pool, char *msg, size_t msglen)
{
    uint64_t free_bytes, free_hash;
    int rc;

    if (msg != NULL && msglen > 0)
        msg[0] = '\0';
    if (pool == NULL)
        return check_fail(msg, msglen, "no pool");
    if (pool->ready_chunks > pool->max_chunks ||
        pool->ready != pool->chunk_size * pool->ready_chunks || pool->used > pool->ready)
        return check_fail(msg, msglen, "counters: %" PRIu32 " of %" PRIu32 " chunks ready, ready %"
                          PRIu64 ", used %" PRIu64, pool->ready_chunks, pool->max_chunks,
                          pool->ready, pool->used);
    rc = check_offset_index(pool, &free_bytes, &free_hash, msg, msglen);
    if (rc == 0)
        rc = check_size_index(pool, free_bytes, free_hash, msg, msglen);
    if (rc == 0)
        rc = check_slices_and_owners(pool, msg, msglen);
    if (rc == 0 && free_bytes + pool->used != pool->ready)
        rc = check_fail(msg, msglen, "free %" PRIu64 " + used %" PRIu64 " != ready %" PRIu64,
                        free_bytes, pool->used, pool->ready);
    return rc;
}
