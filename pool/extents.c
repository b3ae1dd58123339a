/*
 * extents.c - the free-extent index of a pool (pool_int.h).
 *
 * Owns: the offset tree of every free extent (pool->free_by_off) and the
 * best-fit index of each tenant (tenant->free), in red-black trees from
 * libbsd's <bsd/sys/tree.h>; the placement rule (where in a free extent a
 * slice goes), best fit, coalescing, and the stash of spare nodes.
 * A tenant's size index is split by size class (four classes per power of
 * two) into one small tree per class, with a bitmap of the classes that hold
 * extents: walking the classes upwards visits the extents in the same (size,
 * offset) order as one tree would, so best fit is unchanged, and each tree is
 * a few levels deep (a size-tree insert was a fifth of an alloc+free pair).
 * Never: allocates (the caller hands in every node; only stash_fill mallocs),
 * looks at slices or chunk records, or lets two touching extents of one
 * tenant stand apart: ext_free_range coalesces.
 * Locking: none (see pool.h).
 *
 * Invariants kept here (checked by pool_check): every extent is in the offset
 * tree and in its tenant's size index, in the class of its length; a class's
 * bit is set iff its tree is not empty; the counters (pool->nfree, a tenant's
 * nfree and free_bytes) match the trees.
 */
#include "pool_int.h"

#include <stdlib.h>

#include "rbtree.h"

#define CMP(a, b) (((a) > (b)) - ((a) < (b)))

static int extent_off_cmp(const struct extent *a, const struct extent *b)
{
    return CMP(a->off, b->off);
}

int extent_size_cmp(const struct extent *a, const struct extent *b)
{
    return a->len != b->len ? CMP(a->len, b->len) : CMP(a->off, b->off);
}

/* No semicolons after these: they expand to function definitions. */
RB_GENERATE(free_by_off, extent, by_off, extent_off_cmp)
RB_GENERATE(free_by_size, extent, by_size, extent_size_cmp)

#include "rbtree_end.h"

/* x rounded up to a multiple of a, a power of two; the callers keep it below
 * 2^64.  (The chunk size need not be a power of two: see place.) */
static uint64_t align_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) & ~(a - 1);
}

/* ---- size classes ------------------------------------------------------------ */

unsigned ext_size_class(uint64_t len)
{
    unsigned f;

    if (len < 4)
        return (unsigned)len;
    f = 63u - (unsigned)__builtin_clzll(len);
    return 4 + 4 * (f - 2) + (unsigned)((len >> (f - 2)) & 3);
}

/* The first class >= c of ix that holds extents, or SIZE_CLASSES. */
static unsigned class_at_or_above(const struct size_index *ix, unsigned c)
{
    unsigned w = c / 64;
    uint64_t bits;

    if (c >= SIZE_CLASSES)
        return SIZE_CLASSES;
    bits = ix->map[w] & (~0ull << (c % 64));
    while (bits == 0) {
        if (++w == SIZE_MAP_WORDS)
            return SIZE_CLASSES;
        bits = ix->map[w];
    }
    return w * 64 + (unsigned)__builtin_ctzll(bits);
}

void ext_index_init(struct size_index *ix)
{
    for (unsigned c = 0; c < SIZE_CLASSES; c++)
        RB_INIT(&ix->by_size[c]);
    for (unsigned w = 0; w < SIZE_MAP_WORDS; w++)
        ix->map[w] = 0;
}

struct extent *ext_largest(const struct tenant *t)
{
    struct size_index *ix = (struct size_index *)(uintptr_t)&t->free; /* RB_MAX only reads */

    for (unsigned w = SIZE_MAP_WORDS; w-- > 0;)
        if (ix->map[w] != 0)
            return RB_MAX(free_by_size,
                          &ix->by_size[w * 64 + 63u - (unsigned)__builtin_clzll(ix->map[w])]);
    return NULL;
}

static void size_insert(struct size_index *ix, struct extent *e)
{
    unsigned c = ext_size_class(e->len);

    RB_INSERT(free_by_size, &ix->by_size[c], e);
    ix->map[c / 64] |= 1ull << (c % 64);
}

static void size_remove(struct size_index *ix, struct extent *e)
{
    unsigned c = ext_size_class(e->len);

    RB_REMOVE(free_by_size, &ix->by_size[c], e);
    if (RB_EMPTY(&ix->by_size[c]))
        ix->map[c / 64] &= ~(1ull << (c % 64));
}

/* ---- the two indexes ----------------------------------------------------------- */

void ext_insert(pool_t *pool, struct extent *e)
{
    RB_INSERT(free_by_off, &pool->free_by_off, e);
    size_insert(&e->tenant->free, e);
    pool->nfree++;
    e->tenant->nfree++;
    e->tenant->free_bytes += e->len;
}

void ext_remove(pool_t *pool, struct extent *e)
{
    RB_REMOVE(free_by_off, &pool->free_by_off, e);
    size_remove(&e->tenant->free, e);
    pool->nfree--;
    e->tenant->nfree--;
    e->tenant->free_bytes -= e->len;
}

/*
 * The new bounds must keep e between its neighbours in offset order (they lie
 * inside or next to its old ones), so only the size index may need e
 * re-inserted: not when the new (size, offset) key still sorts between e's
 * neighbours there, which is the common case of the largest extent shrinking
 * or growing (a re-insertion was a quarter of an alloc+free pair).
 */
void ext_resize(pool_t *pool, struct extent *e, uint64_t off, uint64_t len)
{
    struct size_index *ix = &e->tenant->free;
    struct extent key = {.off = off, .len = len};
    unsigned c = ext_size_class(e->len);

    (void)pool;
    e->tenant->free_bytes += len - e->len; /* wraps back correctly when it shrinks */
    if (ext_size_class(len) == c) {
        struct extent *prev = RB_PREV(free_by_size, &ix->by_size[c], e);
        struct extent *next = RB_NEXT(free_by_size, &ix->by_size[c], e);

        if ((prev == NULL || extent_size_cmp(prev, &key) < 0) &&
            (next == NULL || extent_size_cmp(&key, next) < 0)) {
            e->off = off;
            e->len = len;
            return;
        }
    }
    size_remove(ix, e);
    e->off = off;
    e->len = len;
    size_insert(ix, e);
}

/* The free extents just before and at-or-after off. */
static void neighbours(pool_t *pool, uint64_t off, struct extent **prev, struct extent **next)
{
    struct extent key = {.off = off, .len = 0};

    *next = RB_NFIND(free_by_off, &pool->free_by_off, &key);
    *prev = *next != NULL ? RB_PREV(free_by_off, &pool->free_by_off, *next)
                          : RB_MAX(free_by_off, &pool->free_by_off);
}

struct extent *ext_at(pool_t *pool, uint64_t off)
{
    struct extent *prev, *next;

    neighbours(pool, off, &prev, &next);
    if (next != NULL && next->off == off)
        return next;
    if (prev != NULL && off - prev->off < prev->len)
        return prev;
    return NULL;
}

void ext_free_range(pool_t *pool, struct extent *node, uint64_t off, uint64_t len,
                    struct tenant *t)
{
    struct extent *next, *prev;
    bool join_prev, join_next;

    neighbours(pool, off, &prev, &next);
    join_prev = prev != NULL && prev->tenant == t && prev->off + prev->len == off;
    join_next = next != NULL && next->tenant == t && next->off == off + len;

    if (join_prev && join_next) {
        uint64_t total = prev->len + len + next->len;

        ext_remove(pool, next);
        free(next);
        ext_resize(pool, prev, prev->off, total);
        free(node);
    } else if (join_prev) {
        ext_resize(pool, prev, prev->off, prev->len + len);
        free(node);
    } else if (join_next) {
        ext_resize(pool, next, off, next->len + len);
        free(node);
    } else {
        node->off = off;
        node->len = len;
        node->tenant = t;
        ext_insert(pool, node);
    }
}

void ext_take(pool_t *pool, struct extent *e, uint64_t at, uint64_t len, struct extent *tail)
{
    uint64_t end = e->off + e->len;

    if (at == e->off && len == e->len) {
        ext_remove(pool, e);
    } else if (at == e->off) {
        ext_resize(pool, e, at + len, end - (at + len));
    } else {
        ext_resize(pool, e, e->off, at - e->off);
        if (at + len < end) {
            tail->off = at + len;
            tail->len = end - tail->off;
            tail->tenant = e->tenant;
            ext_insert(pool, tail);
        }
    }
}

/* ---- placement and best fit ----------------------------------------------------- */

/*
 * Where in free extent e does a slice of extent bytes aligned to align go?
 * The lowest offset that meets the alignment and the boundary rule: a slice of
 * at most one chunk must not cross a chunk boundary (if the aligned start
 * would make it cross, it moves to the next boundary, which is aligned too as
 * align divides chunk_size); a larger one starts on a chunk boundary.
 */
static bool place(const pool_t *pool, const struct extent *e, uint64_t extent, uint64_t align,
                  uint64_t *at)
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
 * Best fit: the smallest free extent of t (ties: the lowest offset) in which
 * the slice can be placed.  Candidates come from the size index upwards from
 * the first one that is large enough (in the request's class, then the whole
 * of each class above); those that the alignment or the boundary rule rejects
 * are skipped one by one.
 */
struct extent *ext_best_fit(pool_t *pool, struct tenant *t, uint64_t extent, uint64_t align,
                            uint64_t *at)
{
    struct size_index *ix = &t->free;
    struct extent key = {.off = 0, .len = extent};
    unsigned c = ext_size_class(extent);
    struct extent *e;

    for (e = RB_NFIND(free_by_size, &ix->by_size[c], &key); e != NULL;
         e = RB_NEXT(free_by_size, &ix->by_size[c], e)) {
        if (place(pool, e, extent, align, at))
            return e;
    }
    for (c = class_at_or_above(ix, c + 1); c < SIZE_CLASSES; c = class_at_or_above(ix, c + 1)) {
        RB_FOREACH(e, free_by_size, &ix->by_size[c]) {
            if (place(pool, e, extent, align, at))
                return e;
        }
    }
    return NULL;
}

/* ---- the stash ----------------------------------------------------------------- */

bool stash_fill(struct stash *st, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        struct extent *e = malloc(sizeof(*e));

        if (e == NULL) {
            stash_free(st);
            return false;
        }
        e->stash_next = st->head;
        st->head = e;
    }
    return true;
}

struct extent *stash_take(struct stash *st)
{
    struct extent *e = st->head;

    if (e != NULL)
        st->head = e->stash_next;
    return e;
}

void stash_free(struct stash *st)
{
    struct extent *e;

    while ((e = stash_take(st)) != NULL)
        free(e);
}
