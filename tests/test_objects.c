/*
 * test_objects.c - the named-object table (pool/objects.c): states, LRU
 * order, TTL, invariants after every step; and pool_set_owner.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "objects.h"
#include "pinpool.h"
#include "pool.h"

static void check(objs_t *t)
{
    char msg[256];
    int rc = objs_check(t, msg, sizeof(msg));
    cr_assert_eq(rc, 0, "%s", msg);
}

Test(objects, insert_find_remove, .timeout = 10)
{
    objs_t *t;
    obj_t *o;

    cr_assert_eq(objs_create(&t, 0), 0);
    cr_assert_eq(objs_insert(t, "a", 1000, 100, 1, 0, 256, 0, &o), 0);
    cr_assert_eq(o->state, OBJ_RESIDENT);
    cr_assert_eq(objs_insert(t, "a", 1000, 100, 2, 256, 256, 0, NULL), PINPOOL_EEXIST);
    cr_assert_eq(objs_insert(t, "", 1000, 100, 2, 256, 256, 0, NULL), PINPOOL_EINVAL);
    cr_assert_eq(objs_insert(t, "b", 1000, 0, 2, 256, 256, 0, NULL), PINPOOL_EINVAL);
    cr_assert_eq(objs_insert(t, "b", 1000, 10, 0, 256, 256, 0, NULL), PINPOOL_EINVAL);
    cr_assert_eq(objs_find(t, 1000, "a"), o);
    cr_assert_null(objs_find(t, 1000, "b"));
    check(t);
    objs_remove(t, o);
    cr_assert_null(objs_find(t, 1000, "a"));
    check(t);
    objs_destroy(t);
}

Test(objects, lru_order_and_touch, .timeout = 10)
{
    objs_t *t;
    obj_t *a, *b, *c;

    objs_create(&t, 0);
    objs_insert(t, "a", 1000, 1, 1, 0, 256, 0, &a);
    objs_insert(t, "b", 1000, 1, 2, 256, 256, 0, &b);
    objs_insert(t, "c", 1000, 1, 3, 512, 256, 0, &c);
    cr_assert_eq(objs_lru(t), a);
    objs_touch(t, a);
    cr_assert_eq(objs_lru(t), b);
    cr_assert_eq(objs_lru_next(t, b), c);
    cr_assert_eq(objs_lru_next(t, c), a);
    cr_assert_null(objs_lru_next(t, a));
    check(t);
    objs_destroy(t);
}

Test(objects, state_machine, .timeout = 10)
{
    objs_t *t;
    obj_t *a, *b;
    objs_stats_t st;

    objs_create(&t, 0);
    objs_insert(t, "a", 1000, 1000, 7, 4096, 1024, 0, &a);
    objs_insert(t, "b", 1000, 10, 8, 0, 256, 0, &b);
    /* Only the allowed edges. */
    cr_assert_eq(objs_set_state(t, a, OBJ_SPILLED, 0, 0, 0), PINPOOL_EINVAL);
    cr_assert_eq(objs_set_state(t, a, OBJ_RESTORING, 0, 0, 0), PINPOOL_EINVAL);
    cr_assert_eq(objs_set_state(t, a, OBJ_SPILLING, 0, 0, 0), 0);
    cr_assert_eq(a->slice, 7, "SPILLING keeps its slice");
    cr_assert_eq(objs_lru(t), b, "a spilling object is no victim");
    cr_assert_eq(objs_set_state(t, a, OBJ_RESTORING, 0, 0, 0), PINPOOL_EINVAL);
    check(t);
    /* A failed put: back to RESIDENT, most recently used. */
    cr_assert_eq(objs_set_state(t, a, OBJ_RESIDENT, 7, 4096, 1024), 0);
    cr_assert_eq(objs_lru(t), b);
    cr_assert_eq(objs_set_state(t, a, OBJ_SPILLING, 0, 0, 0), 0);
    cr_assert_eq(objs_set_state(t, a, OBJ_SPILLED, 7, 0, 0), PINPOOL_EINVAL, "spilled holds no slice");
    cr_assert_eq(objs_set_state(t, a, OBJ_SPILLED, 0, 0, 0), 0);
    cr_assert(a->in_tier);
    cr_assert_eq(a->slice, 0);
    objs_get_stats(t, &st);
    cr_assert_eq(st.count[OBJ_SPILLED], 1);
    cr_assert_eq(st.bytes[OBJ_SPILLED], 1000);
    cr_assert_eq(st.count[OBJ_RESIDENT], 1);
    check(t);
    cr_assert_eq(objs_set_state(t, a, OBJ_RESIDENT, 9, 0, 1024), PINPOOL_EINVAL);
    cr_assert_eq(objs_set_state(t, a, OBJ_RESTORING, 0, 0, 0), 0);
    cr_assert_eq(objs_set_state(t, a, OBJ_SPILLING, 0, 0, 0), PINPOOL_EINVAL);
    /* A failed get: back to SPILLED; then a good one at a new place. */
    cr_assert_eq(objs_set_state(t, a, OBJ_SPILLED, 0, 0, 0), 0);
    cr_assert_eq(objs_set_state(t, a, OBJ_RESTORING, 0, 0, 0), 0);
    cr_assert_eq(objs_set_state(t, a, OBJ_RESIDENT, 9, 8192, 512), PINPOOL_EINVAL, "extent < size");
    cr_assert_eq(objs_set_state(t, a, OBJ_RESIDENT, 9, 8192, 1024), 0);
    cr_assert_eq(a->slice, 9);
    cr_assert_eq(a->offset, 8192);
    check(t);
    objs_remove(t, a);
    objs_remove(t, b);
    objs_get_stats(t, &st);
    cr_assert_eq(st.total, 0);
    check(t);
    objs_destroy(t);
}

Test(objects, ttl, .timeout = 10)
{
    objs_t *t;
    obj_t *a, *b;

    objs_create(&t, 0);
    objs_insert(t, "a", 1000, 1, 1, 0, 256, 500, &a);
    objs_insert(t, "b", 1000, 1, 2, 256, 256, 0, &b);
    cr_assert_eq(objs_next_expiry(t), 500);
    cr_assert_null(objs_expired(t, 499));
    cr_assert_eq(objs_expired(t, 500), a);
    objs_set_state(t, a, OBJ_SPILLING, 0, 0, 0);
    cr_assert_null(objs_expired(t, 1000), "transient objects are left to their thread");
    objs_set_state(t, a, OBJ_SPILLED, 0, 0, 0);
    cr_assert_eq(objs_expired(t, 1000), a);
    objs_remove(t, a);
    cr_assert_eq(objs_next_expiry(t), 0);
    check(t);
    objs_destroy(t);
}

/* Keys are a namespace per uid: the same key of two uids is two records, and
 * a lookup in one never finds the other's. */
Test(objects, keys_are_a_namespace_per_uid, .timeout = 10)
{
    objs_t *t;
    obj_t *a, *b;

    cr_assert_eq(objs_create(&t, 0), 0);
    cr_assert_eq(objs_insert(t, "k", 1000, 10, 1, 0, 256, 0, &a), 0);
    cr_assert_eq(objs_insert(t, "k", 2000, 20, 2, 256, 256, 0, &b), 0, "another uid's key k is new");
    cr_assert_eq(objs_insert(t, "k", 1000, 10, 3, 512, 256, 0, NULL), PINPOOL_EEXIST);
    cr_assert_eq(objs_find(t, 1000, "k"), a);
    cr_assert_eq(objs_find(t, 2000, "k"), b);
    cr_assert_null(objs_find(t, 3000, "k"));
    objs_remove(t, a);
    cr_assert_null(objs_find(t, 1000, "k"));
    cr_assert_eq(objs_find(t, 2000, "k"), b);
    check(t);
    objs_destroy(t);
}

/* A pinned object is no spill victim, cannot change state, does not expire,
 * and is the most recently used after its last unpin. */
Test(objects, pins, .timeout = 10)
{
    objs_t *t;
    obj_t *a, *b;

    objs_create(&t, 0);
    objs_insert(t, "a", 1000, 1, 1, 0, 256, 5, &a);
    objs_insert(t, "b", 1000, 1, 2, 256, 256, 0, &b);
    cr_assert_eq(objs_lru(t), a);
    cr_assert_eq(objs_pin(t, a), 0);
    cr_assert_eq(objs_pin(t, a), 0, "two readers");
    check(t);
    cr_assert_eq(objs_lru(t), b, "a pinned object is no victim");
    cr_assert_null(objs_lru_next(t, b));
    cr_assert_null(objs_expired(t, 10), "a pinned object does not expire under its reader");
    cr_assert_eq(objs_set_state(t, a, OBJ_SPILLING, 0, 0, 0), PINPOOL_EINVAL);
    objs_touch(t, a);
    check(t);
    objs_unpin(t, a);
    cr_assert_eq(objs_lru(t), b);
    objs_unpin(t, a);
    check(t);
    cr_assert_eq(objs_lru(t), b, "unpinned last: most recently used");
    cr_assert_eq(objs_lru_next(t, b), a);
    cr_assert_eq(objs_expired(t, 10), a);
    cr_assert_eq(objs_set_state(t, b, OBJ_SPILLING, 0, 0, 0), 0);
    cr_assert_eq(objs_pin(t, b), PINPOOL_EINVAL, "only resident objects are pinned");
    check(t);
    objs_destroy(t);
}

/* Many random steps: the invariants hold after each (POOL_DEBUG checks too). */
Test(objects, random_walk, .timeout = 30)
{
    objs_t *t;
    char key[16];

    objs_create(&t, 0);
    srand(5);
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "k%d", rand() % 64);
        obj_t *o = objs_find(t, 1000, key);
        if (o == NULL) {
            cr_assert_eq(objs_insert(t, key, 1000, 1 + (uint64_t)(rand() % 1000), 1 + (uint64_t)i, 0,
                                     1024, 0, NULL), 0);
            continue;
        }
        switch (rand() % 5) {
        case 0:
            if (o->pins == 0)
                objs_remove(t, o);
            break;
        case 4:
            if (o->pins > 0 && rand() % 2)
                objs_unpin(t, o);
            else
                (void)objs_pin(t, o);
            break;
        case 1:
            objs_touch(t, o);
            break;
        default: {
            obj_state_t to = (obj_state_t)(rand() % OBJ_NSTATES);
            uint64_t slice = to == OBJ_SPILLED ? 0 : 1 + (uint64_t)i;
            (void)objs_set_state(t, o, to, slice, 0, 1024);
        }
        }
        if (i % 1000 == 0)
            check(t);
    }
    check(t);
    objs_destroy(t);
}

Test(objects, pool_set_owner, .timeout = 10)
{
    pool_t *p;
    pool_params_t params = {.chunk_size = 1 << 20, .max_chunks = 4, .quantum = 256,
                            .allow_multi_chunk = true};
    pool_slice_info_t a, b, c, info;
    char msg[256];

    cr_assert_eq(pool_create(&p, &params), 0);
    pool_add_chunks(p, 4);
    pool_alloc(p, 1, 1000, 0, &a);
    pool_alloc(p, 2, 1000, 0, &b);
    pool_alloc(p, 1, 1000, 0, &c);
    cr_assert_eq(pool_set_owner(p, a.id, 2, 3), PINPOOL_EPERM);
    cr_assert_eq(pool_set_owner(p, 999, 1, 3), PINPOOL_ENOENT);
    cr_assert_eq(pool_set_owner(p, c.id, 1, 2), 0);
    cr_assert_eq(pool_set_owner(p, a.id, 1, 2), 0); /* owner 1 goes; a lands before b */
    cr_assert_eq(pool_check(p, msg, sizeof(msg)), 0, "%s", msg);
    pool_lookup(p, a.id, &info);
    cr_assert_eq(info.owner, 2);
    cr_assert_eq(info.offset, a.offset);
    cr_assert_eq(pool_owner_bytes(p, 1, NULL), 0);
    cr_assert_eq(pool_owner_bytes(p, 2, NULL), a.extent + b.extent + c.extent);
    cr_assert_eq(pool_free_owner(p, 2, NULL), 3);
    cr_assert_eq(pool_check(p, msg, sizeof(msg)), 0, "%s", msg);
    pool_destroy(p);
}

/* Every record gets a new generation, larger than any before it or seen in a
 * spilled insert; the table refuses records beyond its limit. */
Test(objects, generations_and_limit, .timeout = 10)
{
    objs_t *t;
    obj_t *a, *b, *c, *s;

    cr_assert_eq(objs_create(&t, 3), 0);
    cr_assert_eq(objs_max(t), 3);
    objs_seed_gen(t, 100);
    cr_assert_eq(objs_insert(t, "a", 7, 1, 1, 0, 256, 0, &a), 0);
    cr_assert_eq(a->gen, 101);
    cr_assert_eq(a->uid, 7);
    cr_assert_eq(objs_insert_spilled(t, "s", 8, 500, 42, 0, &s), 0);
    cr_assert_eq(s->state, OBJ_SPILLED);
    cr_assert(s->in_tier);
    cr_assert_eq(s->gen, 500);
    cr_assert_eq(objs_insert_spilled(t, "z", 8, 0, 42, 0, NULL), PINPOOL_EINVAL);
    cr_assert_eq(objs_insert(t, "b", 7, 1, 2, 256, 256, 0, &b), 0);
    cr_assert_eq(b->gen, 501, "after a spilled insert of 500");
    cr_assert_eq(objs_count(t), 3);
    cr_assert_eq(objs_insert(t, "c", 7, 1, 3, 512, 256, 0, NULL), PINPOOL_ENOSPC);
    cr_assert_eq(objs_insert_spilled(t, "c", 7, 900, 1, 0, NULL), PINPOOL_ENOSPC);
    objs_remove(t, a);
    cr_assert_eq(objs_insert(t, "a", 7, 1, 1, 0, 256, 0, &c), 0);
    cr_assert_eq(c->gen, 502, "a new record under an old key is a new generation");
    objs_seed_gen(t, 10); /* never backwards */
    cr_assert_eq(objs_last_gen(t), 502);
    check(t);
    cr_assert_lt(objs_record_bytes(OBJ_KEY_MAX), 720, "the bound --max-objects' help states");
    objs_destroy(t);
}
