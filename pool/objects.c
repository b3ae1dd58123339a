/*
 * objects.c - the named-object table (see objects.h for states and invariants).
 *
 * Owns: the records, a red-black tree by (uid, key) and the LRU list of the
 * unpinned RESIDENT ones.
 * Never: memory, the pool, the tier, clocks.  Locking: the caller's.
 */
#include "objects.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "invariants.h"
#include "pinpool_errors.h"
#include "rbtree.h"

struct node {
    RB_ENTRY(node) by_key;
    TAILQ_ENTRY(node) lru;
    obj_t o; /* handed out as obj_t *; node_of() gets back */
    char key[]; /* o.key points here */
};

static int node_cmp(const struct node *a, const struct node *b)
{
    if (a->o.uid != b->o.uid)
        return a->o.uid < b->o.uid ? -1 : 1;
    return strcmp(a->o.key, b->o.key);
}

RB_HEAD(obj_tree, node);
RB_GENERATE_STATIC(obj_tree, node, by_key, node_cmp)
#include "rbtree_end.h"

TAILQ_HEAD(lru_list, node);

struct objs {
    struct obj_tree tree;
    struct lru_list lru; /* head: least recently used */
    uint64_t clock;
    uint64_t gen; /* the largest generation handed out or seen */
    uint32_t max; /* records at most; 0: no limit */
    objs_stats_t st;
};

static struct node *node_of(obj_t *o)
{
    return (struct node *)((char *)o - offsetof(struct node, o));
}

#define debug_check(t, op) POOL_CHECK_AFTER(objs_check, t, "objects", op)

int objs_create(objs_t **out, uint32_t max_objects)
{
    objs_t *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return -ENOMEM;
    RB_INIT(&t->tree);
    TAILQ_INIT(&t->lru);
    t->max = max_objects;
    *out = t;
    return 0;
}

size_t objs_record_bytes(size_t keylen)
{
    return sizeof(struct node) + keylen + 1;
}

void objs_seed_gen(objs_t *t, uint64_t gen)
{
    if (gen > t->gen)
        t->gen = gen;
}

uint64_t objs_last_gen(const objs_t *t)
{
    return t->gen;
}

uint32_t objs_max(const objs_t *t)
{
    return t->max;
}

uint32_t objs_count(const objs_t *t)
{
    return t->st.total;
}

void objs_destroy(objs_t *t)
{
    struct node *n, *next;

    if (t == NULL)
        return;
    RB_FOREACH_SAFE(n, obj_tree, &t->tree, next) {
        RB_REMOVE(obj_tree, &t->tree, n);
        free(n);
    }
    free(t);
}

const char *objs_state_name(obj_state_t s)
{
    static const char *const names[OBJ_NSTATES] = {"resident", "spilling", "spilled", "restoring"};

    return (unsigned)s < OBJ_NSTATES ? names[s] : "?";
}

obj_t *objs_find(objs_t *t, uint32_t uid, const char *key)
{
    struct node *n, k;
    size_t len = key != NULL ? strlen(key) : 0;

    if (len == 0 || len > OBJ_KEY_MAX)
        return NULL;
    k.o.key = key;
    k.o.uid = uid;
    n = RB_FIND(obj_tree, &t->tree, &k);
    return n != NULL ? &n->o : NULL;
}

static void count(objs_t *t, const obj_t *o, int sign)
{
    t->st.count[o->state] += (uint32_t)sign;
    t->st.bytes[o->state] += (uint64_t)(int64_t)sign * o->size;
}

/* A new record in state (RESIDENT: in the LRU list), or an error. */
static int insert(objs_t *t, const char *key, uint32_t uid, uint64_t gen, obj_state_t state,
                  uint64_t size, uint64_t slice, uint64_t offset, uint64_t extent,
                  uint64_t expires_ns, obj_t **out)
{
    struct node *n;
    size_t len = key != NULL ? strlen(key) : 0;

    if (len == 0 || len > OBJ_KEY_MAX || size == 0 || (state == OBJ_RESIDENT && slice == 0) ||
        (slice != 0 && extent < size))
        return PINPOOL_EINVAL;
    if (objs_find(t, uid, key) != NULL)
        return PINPOOL_EEXIST;
    if (t->max != 0 && t->st.total >= t->max)
        return PINPOOL_ENOSPC;
    n = calloc(1, objs_record_bytes(len));
    if (n == NULL)
        return -ENOMEM;
    memcpy(n->key, key, len + 1);
    n->o.key = n->key;
    n->o.keylen = len;
    n->o.uid = uid;
    n->o.gen = gen;
    n->o.state = state;
    n->o.size = size;
    n->o.slice = slice;
    n->o.offset = slice != 0 ? offset : 0;
    n->o.extent = slice != 0 ? extent : 0;
    n->o.expires_ns = expires_ns;
    n->o.in_tier = state == OBJ_SPILLED;
    n->o.last_use = ++t->clock;
    RB_INSERT(obj_tree, &t->tree, n);
    if (state == OBJ_RESIDENT)
        TAILQ_INSERT_TAIL(&t->lru, n, lru);
    count(t, &n->o, 1);
    t->st.total++;
    objs_seed_gen(t, gen);
    if (out != NULL)
        *out = &n->o;
    debug_check(t, "objs_insert");
    return 0;
}

int objs_insert(objs_t *t, const char *key, uint32_t uid, uint64_t size, uint64_t slice,
                uint64_t offset, uint64_t extent, uint64_t expires_ns, obj_t **out)
{
    return insert(t, key, uid, t->gen + 1, OBJ_RESIDENT, size, slice, offset, extent,
                  expires_ns, out);
}

int objs_insert_spilled(objs_t *t, const char *key, uint32_t uid, uint64_t gen, uint64_t size,
                        uint64_t expires_ns, obj_t **out)
{
    if (gen == 0)
        return PINPOOL_EINVAL;
    return insert(t, key, uid, gen, OBJ_SPILLED, size, 0, 0, 0, expires_ns, out);
}

int objs_restore(objs_t *t, const char *key, uint32_t uid, uint64_t gen, uint64_t size,
                 uint64_t slice, uint64_t offset, uint64_t extent, uint64_t expires_ns,
                 obj_t **out)
{
    if (gen == 0)
        return PINPOOL_EINVAL;
    return insert(t, key, uid, gen, OBJ_RESIDENT, size, slice, offset, extent, expires_ns, out);
}

/* Is o in the LRU list? */
static bool in_lru(const obj_t *o)
{
    return o->state == OBJ_RESIDENT && o->pins == 0;
}

void objs_remove(objs_t *t, obj_t *o)
{
    struct node *n = node_of(o);

    if (in_lru(o))
        TAILQ_REMOVE(&t->lru, n, lru);
    RB_REMOVE(obj_tree, &t->tree, n);
    count(t, o, -1);
    t->st.total--;
    free(n);
    debug_check(t, "objs_remove");
}

void objs_touch(objs_t *t, obj_t *o)
{
    struct node *n = node_of(o);

    o->last_use = ++t->clock;
    if (in_lru(o)) {
        TAILQ_REMOVE(&t->lru, n, lru);
        TAILQ_INSERT_TAIL(&t->lru, n, lru);
    }
    debug_check(t, "objs_touch");
}

int objs_pin(objs_t *t, obj_t *o)
{
    if (o->state != OBJ_RESIDENT)
        return PINPOOL_EINVAL;
    if (o->pins++ == 0)
        TAILQ_REMOVE(&t->lru, node_of(o), lru);
    debug_check(t, "objs_pin");
    return 0;
}

void objs_unpin(objs_t *t, obj_t *o)
{
    if (o->pins == 0)
        return;
    if (--o->pins == 0) {
        o->last_use = ++t->clock;
        TAILQ_INSERT_TAIL(&t->lru, node_of(o), lru);
    }
    debug_check(t, "objs_unpin");
}

static bool edge_ok(obj_state_t from, obj_state_t to)
{
    switch (from) {
    case OBJ_RESIDENT:
        return to == OBJ_SPILLING;
    case OBJ_SPILLING:
        return to == OBJ_SPILLED || to == OBJ_RESIDENT;
    case OBJ_SPILLED:
        return to == OBJ_RESTORING;
    case OBJ_RESTORING:
        return to == OBJ_RESIDENT || to == OBJ_SPILLED;
    }
    return false;
}

int objs_set_state(objs_t *t, obj_t *o, obj_state_t to, uint64_t slice, uint64_t offset,
                   uint64_t extent)
{
    struct node *n = node_of(o);

    if ((unsigned)to >= OBJ_NSTATES || !edge_ok(o->state, to) || o->pins > 0)
        return PINPOOL_EINVAL;
    if (to == OBJ_SPILLING) {
        slice = o->slice;
        offset = o->offset;
        extent = o->extent;
    }
    if ((to == OBJ_RESIDENT && (slice == 0 || extent < o->size)) || (to == OBJ_SPILLED && slice != 0))
        return PINPOOL_EINVAL;
    if (o->state == OBJ_RESIDENT)
        TAILQ_REMOVE(&t->lru, n, lru);
    count(t, o, -1);
    o->state = to;
    o->slice = slice;
    o->offset = slice != 0 ? offset : 0;
    o->extent = slice != 0 ? extent : 0;
    if (to == OBJ_SPILLED)
        o->in_tier = true;
    count(t, o, 1);
    if (to == OBJ_RESIDENT) {
        o->last_use = ++t->clock;
        TAILQ_INSERT_TAIL(&t->lru, n, lru);
    }
    debug_check(t, "objs_set_state");
    return 0;
}

obj_t *objs_lru(objs_t *t)
{
    struct node *n = TAILQ_FIRST(&t->lru);

    return n != NULL ? &n->o : NULL;
}

obj_t *objs_lru_next(objs_t *t, obj_t *o)
{
    struct node *n;

    (void)t;
    if (!in_lru(o))
        return NULL;
    n = TAILQ_NEXT(node_of(o), lru);
    return n != NULL ? &n->o : NULL;
}

obj_t *objs_expired(objs_t *t, uint64_t now_ns)
{
    struct node *n;

    RB_FOREACH(n, obj_tree, &t->tree)
        if (n->o.expires_ns != 0 && n->o.expires_ns <= now_ns && n->o.pins == 0 &&
            (n->o.state == OBJ_RESIDENT || n->o.state == OBJ_SPILLED))
            return &n->o;
    return NULL;
}

uint64_t objs_next_expiry(objs_t *t)
{
    struct node *n;
    uint64_t next = 0;

    RB_FOREACH(n, obj_tree, &t->tree)
        if (n->o.expires_ns != 0 && (next == 0 || n->o.expires_ns < next))
            next = n->o.expires_ns;
    return next;
}

void objs_foreach(objs_t *t, void (*fn)(const obj_t *o, void *arg), void *arg)
{
    struct node *n;

    RB_FOREACH(n, obj_tree, &t->tree)
        fn(&n->o, arg);
}

void objs_get_stats(const objs_t *t, objs_stats_t *out)
{
    *out = t->st;
}

int objs_check(const objs_t *t, char *msg, size_t msglen)
{
    objs_t *u = (objs_t *)t;
    objs_stats_t st = {{0}, {0}, 0};
    struct node *n, *prev = NULL;
    uint32_t nlru = 0, unpinned = 0;

#define FAIL(...) do { snprintf(msg, msglen, __VA_ARGS__); return PINPOOL_EINTERNAL; } while (0)
    RB_FOREACH(n, obj_tree, &u->tree) {
        const obj_t *o = &n->o;
        if ((unsigned)o->state >= OBJ_NSTATES)
            FAIL("object '%s': bad state %d", o->key, (int)o->state);
        if (o->keylen != strlen(o->key) || o->keylen == 0)
            FAIL("object '%s': bad key length", o->key);
        if ((o->state == OBJ_RESIDENT || o->state == OBJ_SPILLING) && o->slice == 0)
            FAIL("object '%s' is %s without a slice", o->key, objs_state_name(o->state));
        if (o->state == OBJ_SPILLED && o->slice != 0)
            FAIL("object '%s' is spilled but holds slice %" PRIu64, o->key, o->slice);
        if (o->gen == 0 || o->gen > u->gen)
            FAIL("object '%s': generation %" PRIu64 " outside 1..%" PRIu64, o->key, o->gen,
                 u->gen);
        if (o->slice != 0 && o->extent < o->size)
            FAIL("object '%s': extent %" PRIu64 " < size %" PRIu64, o->key, o->extent, o->size);
        if (o->pins > 0 && o->state != OBJ_RESIDENT)
            FAIL("object '%s' is pinned but %s", o->key, objs_state_name(o->state));
        if (o->state == OBJ_RESIDENT && o->pins == 0)
            unpinned++;
        st.count[o->state]++;
        st.bytes[o->state] += o->size;
        st.total++;
    }
    TAILQ_FOREACH(n, &u->lru, lru) {
        if (!in_lru(&n->o))
            FAIL("object '%s' is in the LRU list but %s%s", n->o.key, objs_state_name(n->o.state),
                 n->o.pins > 0 ? " and pinned" : "");
        if (prev != NULL && prev->o.last_use >= n->o.last_use)
            FAIL("LRU list out of order at '%s'", n->o.key);
        prev = n;
        nlru++;
    }
    if (nlru != unpinned)
        FAIL("%" PRIu32 " objects in the LRU list, %" PRIu32 " resident and unpinned", nlru,
             unpinned);
    if (memcmp(&st, &t->st, sizeof(st)) != 0)
        FAIL("per-state counters do not match the records (total %" PRIu32 " vs %" PRIu32 ")",
             st.total, t->st.total);
#undef FAIL
    return 0;
}
