/*
 * objects.h - the table of named objects: released slices and Put objects.
 *
 * Owns: one record per (uid, key) (its state, size, where its bytes are, its
 * TTL) and the least-recently-used order of the objects that could be spilled.
 * Keys are a namespace per uid: uid U's key k and uid V's key k are two
 * records, and a lookup names both.
 * Never: touches memory, the pool, the tier, threads or time sources; the
 * caller (server/objstore.c, server/spill.c) moves bytes and passes "now" in.  Pure C, testable alone.
 * Locking: none; the caller holds its own lock around every call.
 *
 * States and the only transitions allowed (objs_set_state refuses the rest):
 *
 *     RESIDENT --spill starts--> SPILLING --tier confirmed put--> SPILLED
 *        ^                          |                               |
 *        +------ tier put failed ---+                      restore starts
 *        |                                                          v
 *        +----------------- tier get done ------------------- RESTORING
 *                                   (tier get failed: back to SPILLED)
 *
 * RESIDENT and SPILLING objects hold a pool slice (slice != 0); SPILLED ones
 * hold none; RESTORING ones may hold the slice being filled.  Only RESIDENT
 * objects are in the LRU list, so a spill victim is never chosen twice and an
 * object in a transient state (SPILLING, RESTORING) is left alone by everyone
 * but the thread that put it there: others wait until it settles.
 *
 * Pins.  A RESIDENT object may be pinned (objs_pin) by readers that copy its
 * bytes without the caller's lock: while pinned it is out of the LRU list (no
 * spill picks it, objs_expired skips it) and objs_set_state refuses to move
 * it; the caller must not remove it either (it waits for the last unpin).
 *
 * Invariants (objs_check): the LRU list holds exactly the unpinned RESIDENT
 * objects, in last-use order; only RESIDENT objects are pinned; per-state
 * counts and byte sums match the records; RESIDENT/SPILLING objects have a
 * slice, SPILLED ones none.
 */
#ifndef PINPOOL_OBJECTS_H
#define PINPOOL_OBJECTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OBJ_KEY_MAX 512

typedef enum obj_state {
    OBJ_RESIDENT = 0,
    OBJ_SPILLING = 1,
    OBJ_SPILLED = 2,
    OBJ_RESTORING = 3,
} obj_state_t;
#define OBJ_NSTATES 4

typedef struct objs objs_t;

/* A record; the caller may read every field, and change none directly. */
typedef struct obj {
    const char *key;     /* NUL-terminated, 1..OBJ_KEY_MAX bytes (stored with the record) */
    size_t keylen;
    uint32_t uid;        /* the owner's uid */
    uint64_t gen;        /* generation: unique to this record, larger is newer (see below) */
    obj_state_t state;
    uint64_t size;       /* bytes of the object */
    uint64_t slice;      /* the pool slice holding the bytes, 0 if none */
    uint64_t offset;     /* of that slice */
    uint64_t extent;     /* of that slice */
    uint64_t expires_ns; /* 0: never */
    uint64_t last_use;   /* objs' own clock: larger is more recent */
    uint32_t waiters;    /* threads waiting for it to settle (caller's bookkeeping) */
    uint64_t charged_to; /* who else pays for it besides its uid (caller's bookkeeping: the
                          * daemon's owner number of the client that made it; 0 none) */
    uint32_t pins;       /* readers copying its bytes (objs_pin) */
    bool in_tier;        /* a copy is in the tier (spilled, or restored and not yet removed) */
} obj_t;

/*
 * Generations.  Every record gets one when it is made: one more than the
 * largest the table has handed out or been told of (objs_seed_gen, and every
 * objs_insert_spilled), so a generation names one record, never a later one
 * under the same key.  The caller names tier copies by it.
 *
 * Limit.  objs_create's max_objects bounds the records (0: none): an insert
 * beyond it fails with PINPOOL_ENOSPC, so the table's memory is at most
 * max_objects * objs_record_bytes(OBJ_KEY_MAX).
 */

typedef struct objs_stats {
    uint32_t count[OBJ_NSTATES];
    uint64_t bytes[OBJ_NSTATES]; /* object sizes per state */
    uint32_t total;
} objs_stats_t;

int objs_create(objs_t **out, uint32_t max_objects);
/* Bytes one record with a key of keylen bytes takes (the limit's arithmetic). */
size_t objs_record_bytes(size_t keylen);
/* Every later generation is larger than gen. */
void objs_seed_gen(objs_t *t, uint64_t gen);
/* The largest generation handed out or seen so far. */
uint64_t objs_last_gen(const objs_t *t);
uint32_t objs_max(const objs_t *t);
/* Records in the table. */
uint32_t objs_count(const objs_t *t);
/* Frees every record (their slices are the caller's business). NULL ok. */
void objs_destroy(objs_t *t);

const char *objs_state_name(obj_state_t s);

/* The record of uid under key, or NULL. */
obj_t *objs_find(objs_t *t, uint32_t uid, const char *key);
/*
 * A new RESIDENT record for key in uid's namespace (owned by uid, a new
 * generation) holding slice (offset, extent), most recently used.
 * PINPOOL_EINVAL (bad key or size 0, slice 0), PINPOOL_EEXIST (uid has key),
 * PINPOOL_ENOSPC (max_objects), -ENOMEM.
 */
int objs_insert(objs_t *t, const char *key, uint32_t uid, uint64_t size, uint64_t slice,
                uint64_t offset, uint64_t extent, uint64_t expires_ns, obj_t **out);
/*
 * A new SPILLED record (its copy is in the tier: in_tier) of generation gen,
 * which must be new (larger generations follow it).  For copies found in the
 * tier at start.  Errors as objs_insert (PINPOOL_EINVAL for gen 0).
 */
int objs_insert_spilled(objs_t *t, const char *key, uint32_t uid, uint64_t gen, uint64_t size,
                        uint64_t expires_ns, obj_t **out);
/* A RESIDENT record as objs_insert makes one, but of generation gen (a
 * takeover: the record as the daemon handing over had it, made most
 * recently used).  Errors as objs_insert (PINPOOL_EINVAL for gen 0). */
int objs_restore(objs_t *t, const char *key, uint32_t uid, uint64_t gen, uint64_t size,
                 uint64_t slice, uint64_t offset, uint64_t extent, uint64_t expires_ns,
                 obj_t **out);
/* Forget o (any state; the caller has dealt with its slice and tier copy). */
void objs_remove(objs_t *t, obj_t *o);
/* Mark o most recently used (RESIDENT only; others have no LRU place). */
void objs_touch(objs_t *t, obj_t *o);
/* A reader copies o's bytes: o (RESIDENT) leaves the LRU list until its last
 * unpin, which makes it the most recently used.  0, or PINPOOL_EINVAL (not
 * RESIDENT). */
int objs_pin(objs_t *t, obj_t *o);
void objs_unpin(objs_t *t, obj_t *o);

/*
 * Change o's state along an allowed edge (see above), with the slice that it
 * holds afterwards (0 for SPILLED; kept as is for SPILLING).  PINPOOL_EINVAL and
 * o unchanged for any other edge or a slice that breaks the invariants.
 */
int objs_set_state(objs_t *t, obj_t *o, obj_state_t to, uint64_t slice, uint64_t offset,
                   uint64_t extent);

/* The least recently used RESIDENT object (the next spill victim), or NULL. */
obj_t *objs_lru(objs_t *t);
/* The next RESIDENT object after o in LRU order (older to newer), or NULL. */
obj_t *objs_lru_next(objs_t *t, obj_t *o);

/* Some object whose TTL has passed at now_ns, not in a transient state and
 * not pinned, or NULL. */
obj_t *objs_expired(objs_t *t, uint64_t now_ns);
/* The earliest expiry of any object, 0 if none has a TTL. */
uint64_t objs_next_expiry(objs_t *t);

/* Calls fn for every record, in key order (fn must not change t). */
void objs_foreach(objs_t *t, void (*fn)(const obj_t *o, void *arg), void *arg);

void objs_get_stats(const objs_t *t, objs_stats_t *out);
/* 0, or PINPOOL_EINTERNAL with the first broken invariant in msg. */
int objs_check(const objs_t *t, char *msg, size_t msglen);

#endif /* PINPOOL_OBJECTS_H */
