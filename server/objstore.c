/*
 * objstore.c - named objects: released slices and Put objects.
 *
 * Owns: the object table (srv->objs) and the calls on it.  Named objects (Put) and released
 * slices (ReleasePoolMemory) are one thing: a host-pool slice owned by
 * srv->obj_owner (no client) and a record in srv->objs (pool/objects.c, which
 * holds the state machine and the LRU order).  ReleasePoolMemory turns a
 * client's host slice into the object key (resident, most recently used,
 * spillable); AcquirePoolMemory turns it back into a slice of a client
 * (restored from the tier first if it was spilled); Put/Get/Exists/Remove
 * copy bytes in and out.  Kept slices ("kept:<tag>", slices.c) are the other
 * kind of named memory: always resident, never spilled.
 * Every object belongs to a uid: the caller's (access.c: a session's peer
 * uid, or the daemon's for a caller without a session).  Keys are a
 * namespace per uid: uid U's key k and uid V's key k are two objects, and a
 * call finds only its own uid's (Exists of another uid's key says false).
 * An object's bytes lie in its uid's chunks (Put and restores allocate there,
 * a release leaves them where they were), so an acquire hands the slice over
 * as it is.  Charges: an object is charged to its uid, and to the client that
 * released or put it while that client lives (obj_t.charged_to); an acquire
 * moves the charge to the acquirer's slice.  --client-quota and --user-quota
 * are checked before a Put copies anything.
 * A TTL makes an object invisible once it passes; the maintenance thread
 * (spill.c) removes it.  TTLs saturate: 0 is none, and one whose expiry lies
 * past what the monotonic clock counts (2^64 ns, ~584 years) never passes.
 * Every object has a generation (pool/objects.c) that names its tier copy.
 * The table holds --max-objects objects at most: a Put or Release beyond
 * fails with PINPOOL_ENOSPC (RESOURCE_EXHAUSTED) naming the limit.
 * Never: spills or restores (spill.c does, with do_restore for Acquire), or
 * writes to the tier; it reads a spilled object for Get itself (without
 * restoring it) and has spill.c remove stale tier copies (srv_tier_forget).
 * Never copies object bytes with srv->lock held: a Put fills its slice after
 * the unlock (the slice is in no table yet: nobody can see, free or spill
 * it) and inserts the object under the lock again; a Get pins a resident
 * object (objs_pin: no spill, removal or replacement meanwhile) and copies
 * after the unlock.
 * Locking (see srv_int.h): every srv_* function here takes srv->lock.  A call
 * that finds its object SPILLING or RESTORING (or, for a call that changes
 * it, pinned by a reader) waits for it to settle (do_settled, bounded);
 * srv_acquire restores through do_restore and srv_obj_put allocates through
 * do_alloc_obj, both of which drop the lock, and srv_obj_put and srv_obj_get
 * drop it to copy.  After any of those the object is looked up again, except
 * the one this thread holds in RESTORING or pinned.  Remove takes the
 * object's tier copy away before it answers (srv_tier_remove_now, after the
 * unlock), so that a Remove that returned never comes back, not even after a
 * crash; the other calls only queue a copy that became stale
 * (srv_tier_forget: the maintenance thread removes it; a newer generation or
 * an expiry would win at a restart anyway).  Reading a spilled object
 * (tier_get) happens after the unlock.  On a do_nowait() thread every call
 * returns SRV_EWOULDBLOCK instead of waiting in do_settled, restoring,
 * allocating in do_alloc_obj, reading the tier or removing a copy (Remove of
 * a spilled object).
 * With --cluster each call also answers for the cluster through one hook
 * (cluster.c: srv_cluster_* after the unlock, do_cluster_find with the lock
 * held, dropping it as do_restore does); without, the hooks do nothing.
 */
#include "srv_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "log.h"
#include "pinpool.h"

static int check_key(const char *key, char *msg, size_t msglen)
{
    return srv_check_name("key", key != NULL ? key : "", OBJ_KEY_MAX, msg, msglen);
}

/* A call for client_id on key: are both names valid?  0, or PINPOOL_EINVAL with msg. */
static int check_client_and_key(const char *client_id, const char *key, char *msg, size_t msglen)
{
    int rc = srv_check_client_id(client_id, msg, msglen);

    return rc != 0 ? rc : check_key(key, msg, msglen);
}

/* The monotonic expiry of a TTL: 0 none; saturated at UINT64_MAX (never). */
static uint64_t expiry(uint64_t ttl_ms)
{
    uint64_t now = mono_ns();

    if (ttl_ms == 0)
        return 0;
    if (ttl_ms > (UINT64_MAX - now) / 1000000ull)
        return UINT64_MAX;
    return now + ttl_ms * 1000000ull;
}

/* objs_insert's error for a person (lock held). */
static void explain_insert_error(srv_t *srv, const char *key, int rc, char *msg, size_t msglen)
{
    if (rc == PINPOOL_ENOSPC)
        snprintf(msg, msglen, "cannot store object '%s': the daemon holds --max-objects %" PRIu32
                 " objects already (remove some, or raise the limit)", key, objs_max(srv->objs));
    else
        snprintf(msg, msglen, "cannot record object '%s': %s", key, pinpool_strerror(rc));
}

int srv_objects_open(srv_t *srv, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    srv->obj_owner = srv->next_owner++;
    return objs_create(&srv->objs, (uint32_t)srv->cfg.max_objects);
}

/*
 * uid's object under key, waiting (bounded) while another thread spills or
 * restores it, or, unless reader, while readers have it pinned; NULL (with
 * msg and *rc) when absent, expired, or the wait ran out.  Lock held.
 */
static obj_t *do_settled(srv_t *srv, uid_t uid, const char *key, bool reader, int *rc,
                         char *msg, size_t msglen)
{
    uint64_t deadline = mono_ns() + OBJ_WAIT_MAX_S * 1000000000ull;

    for (;;) {
        obj_t *o = objs_find(srv->objs, (uint32_t)uid, key);
        if (o != NULL && ((o->state != OBJ_RESIDENT && o->state != OBJ_SPILLED) ||
                          (!reader && o->pins > 0))) {
            if (do_nowait()) { /* another thread spills, restores or reads it: a wait */
                *rc = SRV_EWOULDBLOCK;
                return NULL;
            }
            o->waiters++;
            bool more = do_wait_obj(srv, deadline);
            o = objs_find(srv->objs, (uint32_t)uid, key);
            if (o != NULL)
                o->waiters--;
            if (!more) {
                *rc = do_shutdown_error(srv, msg, msglen);
                if (*rc == 0) {
                    snprintf(msg, msglen, "object '%s' is still being spilled, restored or "
                             "read; retry", key);
                    *rc = PINPOOL_ETIMEOUT;
                }
                return NULL;
            }
            continue;
        }
        /* Settled (or absent); an expired one is absent to every caller. */
        if (o == NULL || (o->expires_ns != 0 && o->expires_ns <= mono_ns())) {
            snprintf(msg, msglen, "no object under key '%s'", key);
            *rc = PINPOOL_ENOKEY;
            return NULL;
        }
        return o;
    }
}

/* uid's object under key whose TTL passed but that the maintenance thread
 * has not dropped yet goes now (lock held), so that a new one can take the
 * key; its copy's name into *copy. */
static void do_drop_expired(srv_t *srv, uid_t uid, const char *key, srv_tkey_t *copy)
{
    obj_t *o = objs_find(srv->objs, (uint32_t)uid, key);

    if (o != NULL && o->expires_ns != 0 && o->expires_ns <= mono_ns() && o->pins == 0 &&
        (o->state == OBJ_RESIDENT || o->state == OBJ_SPILLED)) {
        do_drop_obj(srv, o, copy);
        srv->sp.expired++;
    }
}

/* o is charged to its uid and to maker (NULL: none), from now on (lock
 * held).  Only a session pays for what it made: a client without a session
 * is a name any caller of the daemon's uid may take (--user-quota counts its
 * objects), and it goes when it holds no slice.  0, or -ENOMEM (a uid's
 * first record). */
static int do_obj_charge(srv_t *srv, obj_t *o, struct srv_client *maker)
{
    int rc = do_charge_uid(srv, o->uid, (int64_t)obj_charge(o));

    if (rc != 0)
        return rc;
    if (maker != NULL && !maker->session)
        maker = NULL;
    do_charge_client(srv, maker, (int64_t)obj_charge(o));
    o->charged_to = maker != NULL ? maker->owner : 0;
    return 0;
}

/* o is no longer charged (it goes, or becomes a slice); returns the client it
 * was charged to if that one still lives (for the caller to drop if idle). */
static struct srv_client *do_obj_uncharge(srv_t *srv, obj_t *o)
{
    struct srv_client *m = do_client_of_owner(srv, o->charged_to);

    do_charge_uid(srv, o->uid, -(int64_t)obj_charge(o));
    do_charge_client(srv, m, -(int64_t)obj_charge(o));
    o->charged_to = 0;
    return m;
}

/* Drop o (settled) from the table and the pool; its tier copy, if any, is
 * removed by the caller after unlocking (copy). */
void do_drop_obj(srv_t *srv, obj_t *o, srv_tkey_t *copy)
{
    struct srv_client *m;

    copy->len = 0;
    if (o->in_tier)
        do_tier_key(o, copy);
    if (o->slice != 0)
        pool_free(srv->pools[HOST_POOL], o->slice, srv->obj_owner, NULL);
    m = do_obj_uncharge(srv, o);
    if (m != NULL)
        do_drop_if_idle(srv, m);
    objs_remove(srv->objs, o);
    pthread_cond_broadcast(&srv->obj_cv);
}

typedef struct recount {
    srv_t *srv;
    int rc;
} recount_t;

static void charge_one(const obj_t *o, void *arg)
{
    recount_t *r = arg;

    if (r->rc == 0)
        r->rc = do_charge_uid(r->srv, o->uid, (int64_t)obj_charge(o));
}

int srv_objects_recount(srv_t *srv, char *err, size_t errlen)
{
    recount_t r = {srv, 0};

    objs_foreach(srv->objs, charge_one, &r); /* start-up: no other thread yet */
    if (r.rc != 0)
        snprintf(err, errlen, "out of memory charging the recovered objects to their uids");
    return r.rc;
}

int srv_release(srv_t *srv, const char *token, const char *client_id, uint64_t slice_id,
                const char *key, uint64_t ttl_ms, uint64_t *size, char *msg, size_t msglen)
{
    struct srv_client *c;
    srv_principal_t p;
    pool_slice_info_t info;
    srv_tkey_t copy = {.len = 0};
    obj_t *o = NULL;
    int pool, rc;

    rc = check_client_and_key(client_id, key, msg, msglen);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&srv->lock);
    rc = do_access(srv, SRV_OP_RELEASE, token, client_id, &p, msg, msglen);
    if (rc != 0)
        goto out;
    do_drop_expired(srv, p.uid, key, &copy); /* its TTL passed: the key is free */
    c = do_find_client(srv, client_id);
    if (do_lookup(srv, slice_id, &pool, &info) != 0) {
        snprintf(msg, msglen, "no slice %" PRIu64 " in the pool", slice_id);
        rc = PINPOOL_ENOENT;
    } else if (c == NULL || info.owner != c->owner) {
        snprintf(msg, msglen, "slice %" PRIu64 " is not %s's (kept slices cannot be released: "
                 "they are never spilled; free one, or attach it)", slice_id, client_id);
        rc = PINPOOL_EPERM;
    } else if (pool != HOST_POOL) {
        snprintf(msg, msglen, "slice %" PRIu64 " is a device slice: only host slices can be "
                 "released and spilled", slice_id);
        rc = PINPOOL_EINVAL;
    } else if ((o = objs_find(srv->objs, (uint32_t)c->uid, key)) != NULL && o->expires_ns != 0 &&
               o->expires_ns <= mono_ns()) { /* expired while a spill was writing it */
        snprintf(msg, msglen, "the object under key '%s' expired while it was being spilled; "
                 "retry", key);
        rc = PINPOOL_EBUSY;
    } else if (o != NULL) {
        snprintf(msg, msglen, "an object already exists under key '%s' (remove or acquire it "
                 "first)", key);
        rc = PINPOOL_EEXIST;
    } else if ((rc = objs_insert(srv->objs, key, (uint32_t)c->uid, info.size, info.id,
                                 info.offset, info.extent, expiry(ttl_ms), &o)) != 0) {
        explain_insert_error(srv, key, rc, msg, msglen);
    } else if ((rc = pool_set_owner(srv->pools[HOST_POOL], info.id, c->owner, srv->obj_owner)) !=
               0) {
        objs_remove(srv->objs, o);
        snprintf(msg, msglen, "cannot release slice %" PRIu64 ": %s", slice_id,
                 pinpool_strerror(rc));
    } else {
        /* The slice's charge becomes the object's: its uid's, and c's while c lives
         * (the same bytes: extents are sizes rounded up to the quantum). */
        do_obj_charge(srv, o, c); /* c's uid has its record: cannot fail */
        do_slice_charged(srv, c, -(int64_t)info.extent);
        do_drop_if_idle(srv, c); /* a client without a session that holds nothing goes */
        *size = info.size;
        pthread_cond_signal(&srv->maint_cv); /* the watermark may want a spill */
        srv_debug("client %s released slice %" PRIx64 " as '%s'", client_id, slice_id, key);
    }
out:
    pthread_mutex_unlock(&srv->lock);
    srv_tier_forget(srv, &copy);
    srv_cluster_share(srv, p.uid, key, rc); /* --cluster: the others see it */
    return rc;
}

int srv_acquire(srv_t *srv, const char *token, const char *client_id, const char *key,
                srv_slice_t *out, char *msg, size_t msglen)
{
    struct srv_client *c, *maker;
    srv_principal_t p;
    pool_slice_info_t info;
    srv_tkey_t copy = {.len = 0};
    obj_t *o;
    int rc;

    rc = check_client_and_key(client_id, key, msg, msglen);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&srv->lock);
    for (;;) {
        rc = do_shutdown_error(srv, msg, msglen);
        if (rc == 0) /* again after each dropped lock: the session may be gone */
            rc = do_access(srv, SRV_OP_ACQUIRE, token, client_id, &p, msg, msglen);
        if (rc != 0)
            break;
        o = do_settled(srv, p.uid, key, false, &rc, msg, msglen);
        o = do_cluster_find(srv, p.uid, key, o, &rc, msg, msglen); /* --cluster */
        if (o == NULL)
            break;
        if (o->state == OBJ_SPILLED && do_nowait()) { /* a restore: tier I/O */
            rc = SRV_EWOULDBLOCK;
            break;
        }
        if (o->state == OBJ_SPILLED) {
            if (srv->tier == NULL) { /* cannot happen: nothing spills without a tier */
                rc = PINPOOL_EINTERNAL;
                break;
            }
            rc = do_restore(srv, o, msg, msglen); /* into o's uid's chunks */
            if (rc != 0)
                break;
            continue; /* the lock dropped: the caller is looked up again */
        }
        /* RESIDENT: hand the slice over. */
        rc = do_get_client(srv, client_id, &c, msg, msglen);
        if (rc != 0)
            break;
        /* The object's charge moves to c's slice: nothing new for its uid; for
         * c unless it made the object itself. */
        rc = do_quota_check(srv, c, o->charged_to == c->owner ? 0 : o->extent, c->uid, 0,
                            "acquired object", msg, msglen);
        if (rc == 0)
            rc = do_take_object_slice(srv, o->slice, c, &info, msg, msglen);
        if (rc != 0) {
            do_drop_if_idle(srv, c);
            break;
        }
        maker = do_obj_uncharge(srv, o);
        if (maker != NULL && maker != c)
            do_drop_if_idle(srv, maker);
        do_describe(srv, HOST_POOL, &info, out);
        if (o->in_tier)
            do_tier_key(o, &copy);
        objs_remove(srv->objs, o);
        pthread_cond_broadcast(&srv->obj_cv);
        srv_debug("client %s acquired '%s' as slice %" PRIx64, client_id, key, out->info.id);
        break;
    }
    pthread_mutex_unlock(&srv->lock);
    if (rc == 0 && copy.len != 0 && !do_nowait())
        srv_cluster_unshare(srv, &copy); /* --cluster: no node finds it once this answers */
    if (rc == 0)
        srv_tier_forget(srv, &copy);
    return rc;
}

int srv_obj_put(srv_t *srv, const char *token, const char *key, const void *data, uint64_t len,
                uint64_t ttl_ms, char *msg, size_t msglen)
{
    pool_slice_info_t info;
    srv_tkey_t copy = {.len = 0}, copy2 = {.len = 0};
    srv_principal_t p;
    uint64_t maker, charge = (len + SRV_QUANTUM - 1) & ~(uint64_t)(SRV_QUANTUM - 1);
    uid_t uid = 0; /* set once the call is allowed */
    obj_t *o;
    int rc;

    rc = check_key(key, msg, msglen);
    if (rc != 0)
        return rc;
    if (len == 0) {
        snprintf(msg, msglen, "an object needs at least 1 byte");
        return PINPOOL_EINVAL;
    }
    pthread_mutex_lock(&srv->lock);
    rc = do_access(srv, SRV_OP_PUT, token, NULL, &p, msg, msglen);
    if (rc != 0)
        goto out;
    uid = p.uid;
    maker = p.session != NULL ? p.session->owner : 0;
    o = do_settled(srv, uid, key, false, &rc, msg, msglen);
    if (o == NULL && rc != PINPOOL_ENOKEY)
        goto out;
    rc = 0;
    /* do_settled may have dropped the lock: is the session still there? */
    if (maker != 0 && (p.session = do_client_of_owner(srv, maker)) == NULL) {
        snprintf(msg, msglen, "the session of this Put ended while it waited; reconnect");
        rc = PINPOOL_EPERM;
        goto out;
    }
    /* The quotas before the old object goes (a refused Put keeps it): what
     * the old one is charged comes back to whom it is charged. */
    uint64_t old = o != NULL ? obj_charge(o) : 0;
    uint64_t mine = o != NULL && maker != 0 && o->charged_to == maker ? old : 0;
    rc = do_quota_check(srv, p.session, charge > mine ? charge - mine : 0, uid,
                        charge > old ? charge - old : 0, "object", msg, msglen);
    if (rc != 0)
        goto out;
    /* Replace: drop what is there first (Mooncake's put would ignore it). */
    if (o != NULL)
        do_drop_obj(srv, o, &copy);
    else
        do_drop_expired(srv, uid, key, &copy); /* settled now, if there */
    if (objs_max(srv->objs) != 0 && objs_count(srv->objs) >= objs_max(srv->objs)) {
        explain_insert_error(srv, key, PINPOOL_ENOSPC, msg, msglen); /* before any copying */
        rc = PINPOOL_ENOSPC;
        goto out;
    }
    /* Charged before the copy, so that puts at once cannot pass a quota together. */
    rc = do_charge_uid(srv, uid, (int64_t)charge);
    if (rc != 0)
        goto out;
    do_charge_client(srv, p.session, (int64_t)charge);
    msg[0] = '\0';
    rc = do_alloc_obj(srv, uid, len, &info, msg, msglen); /* may drop the lock */
    if (rc == 0) {
        /* The slice is in no table: nobody can see, free or spill it while
         * its bytes arrive, without the lock. */
        pthread_mutex_unlock(&srv->lock);
        memcpy(host_addr(srv, info.offset), data, len);
        pthread_mutex_lock(&srv->lock);
        o = objs_find(srv->objs, (uint32_t)uid, key);
        if (o != NULL && (o->state == OBJ_RESIDENT || o->state == OBJ_SPILLED) && o->pins == 0) {
            do_drop_obj(srv, o, &copy2); /* a put that ran meanwhile: the later one wins */
        } else if (o != NULL) {
            snprintf(msg, msglen, "another call on '%s' (a spill, a restore, a read) ran at the "
                     "same time; retry", key);
            rc = PINPOOL_EBUSY;
        }
        if (rc == 0)
            rc = objs_insert(srv->objs, key, (uint32_t)uid, len, info.id, info.offset,
                             info.extent, expiry(ttl_ms), &o);
        if (rc == 0) {
            o->charged_to = maker; /* charged above (a session gone meanwhile took its share along) */
            pthread_cond_signal(&srv->maint_cv);
            goto out;
        }
        if (rc != PINPOOL_EBUSY)
            explain_insert_error(srv, key, rc, msg, msglen);
        pool_free(srv->pools[HOST_POOL], info.id, srv->obj_owner, NULL);
        do_cleaner_kick(srv);
    }
    /* Not stored: the charge goes back (to the session, if it is still there). */
    do_charge_uid(srv, uid, -(int64_t)charge);
    struct srv_client *m = do_client_of_owner(srv, maker);
    do_charge_client(srv, m, -(int64_t)charge);
out:
    pthread_mutex_unlock(&srv->lock);
    /* The old objects' copies: their generations', never the new object's. */
    srv_tier_forget(srv, &copy);
    srv_tier_forget(srv, &copy2);
    srv_cluster_share(srv, uid, key, rc); /* --cluster: the others see it */
    return rc;
}

int srv_obj_get(srv_t *srv, const char *token, const char *key, uint64_t max, void **data,
                uint64_t *len, char *msg, size_t msglen)
{
    uint64_t size, got = 0, gen;
    srv_principal_t p;
    srv_tkey_t copy;
    uid_t uid;
    void *buf;
    obj_t *o;
    int rc;

    rc = check_key(key, msg, msglen);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&srv->lock);
    rc = do_access(srv, SRV_OP_GET, token, NULL, &p, msg, msglen);
    if (rc != 0) {
        pthread_mutex_unlock(&srv->lock);
        return rc;
    }
    uid = p.uid;
    o = do_settled(srv, uid, key, true, &rc, msg, msglen);
    o = do_cluster_find(srv, uid, key, o, &rc, msg, msglen); /* --cluster */
    if (o == NULL) {
        pthread_mutex_unlock(&srv->lock);
        return rc;
    }
    size = o->size;
    if (size > max) {
        pthread_mutex_unlock(&srv->lock);
        *len = size;
        snprintf(msg, msglen, "object '%s' is %" PRIu64 " bytes, more than the %" PRIu64
                 " this reply may carry", key, size, max);
        return -EMSGSIZE;
    }
    if (o->state == OBJ_SPILLED && do_nowait()) {
        pthread_mutex_unlock(&srv->lock);
        return SRV_EWOULDBLOCK; /* a tier read */
    }
    if (o->state == OBJ_RESIDENT) {
        /* Pinned: no spill, removal or replacement while its bytes are copied
         * without the lock. */
        uint64_t offset = o->offset;
        objs_pin(srv->objs, o);
        pthread_mutex_unlock(&srv->lock);
        buf = malloc(size);
        if (buf != NULL)
            memcpy(buf, host_addr(srv, offset), size);
        pthread_mutex_lock(&srv->lock);
        objs_unpin(srv->objs, o); /* o stayed: nobody drops a pinned object */
        if (o->pins == 0 && o->waiters > 0)
            pthread_cond_broadcast(&srv->obj_cv);
        pthread_mutex_unlock(&srv->lock);
        if (buf == NULL) {
            snprintf(msg, msglen, "out of memory for %" PRIu64 " bytes", size);
            return -ENOMEM;
        }
    } else {
        /* Read it from the tier without restoring it (a reader, not an owner):
         * the copy of this generation (a removal meanwhile ends in ENOKEY). */
        do_tier_key(o, &copy);
        gen = o->gen;
        pthread_mutex_unlock(&srv->lock);
        buf = malloc(size);
        if (buf == NULL) {
            snprintf(msg, msglen, "out of memory for %" PRIu64 " bytes", size);
            return -ENOMEM;
        }
        rc = tier_get(srv->tier, copy.s, copy.len, buf, size, &got);
        if (rc == 0 && got != size)
            rc = PINPOOL_ETIER;
        if (rc != 0) {
            free(buf);
            snprintf(msg, msglen, "cannot read '%s' from the spill tier: %s%s%s%s", key,
                     pinpool_strerror(rc), tier_errmsg()[0] ? ": " : "", tier_errmsg(),
                     rc == -EBADMSG ? "; the object is removed" : "");
            if (rc == -EBADMSG) {
                pthread_mutex_lock(&srv->lock);
                o = objs_find(srv->objs, (uint32_t)uid, key);
                if (o != NULL && o->gen == gen && o->state == OBJ_SPILLED)
                    do_drop_damaged(srv, o, &copy);
                pthread_mutex_unlock(&srv->lock);
                srv_tier_forget(srv, &copy);
                return PINPOOL_ENOKEY;
            }
            return rc == PINPOOL_ENOKEY ? rc : PINPOOL_ETIER;
        }
    }
    *data = buf;
    *len = size;
    return 0;
}

int srv_obj_exists(srv_t *srv, const char *token, const char *key, char *msg, size_t msglen)
{
    srv_principal_t p;
    obj_t *o;
    int rc = check_key(key, msg, msglen);

    if (rc != 0)
        return rc;
    pthread_mutex_lock(&srv->lock);
    rc = do_access(srv, SRV_OP_EXISTS, token, NULL, &p, msg, msglen);
    if (rc == 0) {
        /* the caller's uid's key only: another uid's says nothing */
        o = objs_find(srv->objs, (uint32_t)p.uid, key);
        rc = o != NULL && (o->expires_ns == 0 || o->expires_ns > mono_ns());
    }
    pthread_mutex_unlock(&srv->lock);
    return srv_cluster_exists(srv, p.uid, key, rc); /* --cluster */
}

int srv_obj_remove(srv_t *srv, const char *token, const char *key, char *msg, size_t msglen)
{
    srv_tkey_t copy = {.len = 0};
    srv_principal_t p;
    obj_t *o = NULL;
    int rc = check_key(key, msg, msglen);

    if (rc != 0 || (rc = srv_cluster_nowait(srv)) != 0) /* --cluster: Mooncake calls */
        return rc;
    pthread_mutex_lock(&srv->lock);
    rc = do_access(srv, SRV_OP_REMOVE, token, NULL, &p, msg, msglen);
    if (rc == 0)
        o = do_settled(srv, p.uid, key, false, &rc, msg, msglen);
    if (o != NULL && o->in_tier && do_nowait()) {
        rc = SRV_EWOULDBLOCK; /* its tier copy goes before Remove answers: tier I/O */
    } else if (o != NULL) {
        do_drop_obj(srv, o, &copy);
        rc = 0;
    }
    pthread_mutex_unlock(&srv->lock);
    srv_tier_remove_now(srv, &copy);
    return srv_cluster_remove(srv, p.uid, key, rc, msg, msglen); /* --cluster */
}
