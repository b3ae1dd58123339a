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
 * kind of named memory: always resident, never spilled, mapped by anyone.
 * A TTL makes an object invisible once it passes; the maintenance thread
 * (spill.c) removes it.  TTLs saturate: 0 is none, and one whose expiry lies
 * past what the monotonic clock counts (2^64 ns, ~584 years) never passes.
 * Every object has an owner uid (the daemon's own until callers carry one)
 * and a generation (pool/objects.c) that names its tier copy.  The table
 * holds --max-objects objects at most: a Put or Release beyond fails with
 * PINPOOL_ENOSPC (RESOURCE_EXHAUSTED) naming the limit.
 * Never: spills or restores (spill.c does, with do_restore for Acquire), or
 * writes to the tier; it reads a spilled object for Get itself (without
 * restoring it) and has spill.c remove stale tier copies (srv_tier_forget).
 * Locking (see srv_int.h): every srv_* function here takes srv->lock.  A call
 * that finds its object SPILLING or RESTORING waits for it to settle
 * (do_settled, bounded); srv_acquire restores through do_restore and
 * srv_obj_put allocates through do_alloc_obj, both of which drop the lock.
 * After any of those the object is looked up again, except the one this
 * thread holds in RESTORING.  Remove takes the object's tier copy away before
 * it answers (srv_tier_remove_now, after the unlock), so that a Remove that
 * returned never comes back, not even after a crash; the other calls only
 * queue a copy that became stale (srv_tier_forget: the maintenance thread
 * removes it; a newer generation or an expiry would win at a restart anyway).
 * Reading a spilled object (tier_get) happens after the unlock.  On a
 * do_nowait() thread every call returns SRV_EWOULDBLOCK instead of waiting in
 * do_settled, restoring, allocating in do_alloc_obj, reading the tier or
 * removing a copy (Remove of a spilled object).
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

/* The uid that owns a new object: the daemon's own for now (wave 3: the
 * caller's, c->uid). */
static uint32_t owner_uid(void)
{
    return (uint32_t)geteuid();
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
 * The object under key, waiting (bounded) while another thread spills or
 * restores it; NULL (with msg and *rc) when absent, expired, or the wait
 * ran out.  Lock held.
 */
static obj_t *do_settled(srv_t *srv, const char *key, bool resident_ok_while_spilling, int *rc,
                         char *msg, size_t msglen)
{
    uint64_t deadline = mono_ns() + OBJ_WAIT_MAX_S * 1000000000ull;

    for (;;) {
        obj_t *o = objs_find(srv->objs, key);
        if (o != NULL && o->state != OBJ_RESIDENT && o->state != OBJ_SPILLED &&
            !(resident_ok_while_spilling && o->state == OBJ_SPILLING)) {
            if (do_nowait()) { /* another thread spills or restores it: a wait */
                *rc = SRV_EWOULDBLOCK;
                return NULL;
            }
            o->waiters++;
            bool more = do_wait_obj(srv, deadline);
            o = objs_find(srv->objs, key);
            if (o != NULL)
                o->waiters--;
            if (!more) {
                *rc = do_shutdown_error(srv, msg, msglen);
                if (*rc == 0) {
                    snprintf(msg, msglen, "object '%s' is still being spilled or restored; "
                             "retry", key);
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

/* An object under key whose TTL passed but that the maintenance thread has
 * not dropped yet goes now (lock held), so that a new one can take the key;
 * its copy's name into *copy. */
static void do_drop_expired(srv_t *srv, const char *key, srv_tkey_t *copy)
{
    obj_t *o = objs_find(srv->objs, key);

    if (o != NULL && o->expires_ns != 0 && o->expires_ns <= mono_ns() &&
        (o->state == OBJ_RESIDENT || o->state == OBJ_SPILLED)) {
        do_drop_obj(srv, o, copy);
        srv->sp.expired++;
    }
}

/* Drop o (settled) from the table and the pool; its tier copy, if any, is
 * removed by the caller after unlocking (copy). */
void do_drop_obj(srv_t *srv, obj_t *o, srv_tkey_t *copy)
{
    copy->len = 0;
    if (o->in_tier)
        do_tier_key(o, copy);
    if (o->slice != 0)
        pool_free(srv->pools[HOST_POOL], o->slice, srv->obj_owner, NULL);
    objs_remove(srv->objs, o);
    pthread_cond_broadcast(&srv->obj_cv);
}

int srv_release(srv_t *srv, const char *client_id, uint64_t slice_id, const char *key,
                uint64_t ttl_ms, uint64_t *size, char *msg, size_t msglen)
{
    struct srv_client *c;
    pool_slice_info_t info;
    srv_tkey_t copy = {.len = 0};
    obj_t *o;
    int pool, rc;

    rc = check_client_and_key(client_id, key, msg, msglen);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&srv->lock);
    do_drop_expired(srv, key, &copy); /* its TTL passed: the key is free */
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
    } else if ((o = objs_find(srv->objs, key)) != NULL && o->expires_ns != 0 &&
               o->expires_ns <= mono_ns()) { /* expired while a spill was writing it */
        snprintf(msg, msglen, "the object under key '%s' expired while it was being spilled; "
                 "retry", key);
        rc = PINPOOL_EBUSY;
    } else if (o != NULL) {
        snprintf(msg, msglen, "an object already exists under key '%s' (remove or acquire it "
                 "first)", key);
        rc = PINPOOL_EEXIST;
    } else if ((rc = objs_insert(srv->objs, key, owner_uid(), info.size, info.id, info.offset,
                                 info.extent, expiry(ttl_ms), NULL)) != 0) {
        explain_insert_error(srv, key, rc, msg, msglen);
    } else if ((rc = pool_set_owner(srv->pools[HOST_POOL], info.id, c->owner, srv->obj_owner)) !=
               0) {
        objs_remove(srv->objs, objs_find(srv->objs, key));
        snprintf(msg, msglen, "cannot release slice %" PRIu64 ": %s", slice_id,
                 pinpool_strerror(rc));
    } else {
        *size = info.size;
        do_drop_if_idle(srv, c);
        pthread_cond_signal(&srv->maint_cv); /* the watermark may want a spill */
        srv_debug("client %s released slice %" PRIx64 " as '%s'", client_id, slice_id, key);
    }
    pthread_mutex_unlock(&srv->lock);
    srv_tier_forget(srv, &copy);
    srv_cluster_share(srv, key, rc); /* --cluster: the others see it */
    return rc;
}

int srv_acquire(srv_t *srv, const char *client_id, const char *key, srv_slice_t *out, char *msg,
                size_t msglen)
{
    struct srv_client *c;
    pool_slice_info_t info;
    srv_tkey_t copy = {.len = 0};
    bool again;
    obj_t *o;
    int rc;

    rc = check_client_and_key(client_id, key, msg, msglen);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&srv->lock);
    for (;;) {
        rc = do_shutdown_error(srv, msg, msglen);
        if (rc != 0)
            break;
        o = do_settled(srv, key, false, &rc, msg, msglen);
        o = do_cluster_find(srv, owner_uid(), key, o, &rc, msg, msglen); /* --cluster */
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
            rc = do_restore(srv, o, msg, msglen);
            if (rc != 0)
                break;
        }
        /* RESIDENT: hand the slice over (the client is looked up again: the
         * lock may have dropped). */
        rc = do_get_client(srv, client_id, &c, msg, msglen);
        if (rc != 0)
            break;
        /* The slice becomes c's (its bytes move when they lie in another
         * uid's memory: that may drop the lock, and then all is looked up again). */
        rc = do_take_object_slice(srv, o->slice, o->size, c, &info, &again, msg, msglen);
        if (again)
            continue;
        if (rc != 0)
            break;
        do_describe(srv, HOST_POOL, &info, out);
        if (o->in_tier)
            do_tier_key(o, &copy);
        objs_remove(srv->objs, o);
        pthread_cond_broadcast(&srv->obj_cv);
        srv_debug("client %s acquired '%s' as slice %" PRIx64, client_id, key, out->info.id);
        break;
    }
    pthread_mutex_unlock(&srv->lock);
    if (rc == 0)
        srv_tier_forget(srv, &copy);
    return rc;
}

int srv_obj_put(srv_t *srv, const char *key, const void *data, uint64_t len, uint64_t ttl_ms,
                char *msg, size_t msglen)
{
    pool_slice_info_t info;
    srv_tkey_t copy = {.len = 0};
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
    /* Replace: drop what is there first (Mooncake's put would ignore it). */
    o = do_settled(srv, key, false, &rc, msg, msglen);
    if (o != NULL)
        do_drop_obj(srv, o, &copy);
    else if (rc != PINPOOL_ENOKEY)
        goto out;
    else
        do_drop_expired(srv, key, &copy); /* settled now, if there */
    if (o == NULL && objs_max(srv->objs) != 0 && objs_count(srv->objs) >= objs_max(srv->objs)) {
        explain_insert_error(srv, key, PINPOOL_ENOSPC, msg, msglen); /* before any copying */
        rc = PINPOOL_ENOSPC;
        goto out;
    }
    msg[0] = '\0';
    rc = do_alloc_obj(srv, len, &info, msg, msglen);
    if (rc != 0)
        goto out;
    if (objs_find(srv->objs, key) != NULL) { /* another put won while the lock was down */
        pool_free(srv->pools[HOST_POOL], info.id, srv->obj_owner, NULL);
        snprintf(msg, msglen, "another put of '%s' ran at the same time; retry", key);
        rc = PINPOOL_EBUSY;
        goto out;
    }
    memcpy(host_addr(srv, info.offset), data, len);
    rc = objs_insert(srv->objs, key, owner_uid(), len, info.id, info.offset, info.extent,
                     expiry(ttl_ms), NULL);
    if (rc != 0) {
        pool_free(srv->pools[HOST_POOL], info.id, srv->obj_owner, NULL);
        explain_insert_error(srv, key, rc, msg, msglen);
    }
    pthread_cond_signal(&srv->maint_cv);
out:
    pthread_mutex_unlock(&srv->lock);
    /* The old object's copy: its generation's, never the new object's. */
    srv_tier_forget(srv, &copy);
    srv_cluster_share(srv, key, rc); /* --cluster: the others see it */
    return rc;
}

int srv_obj_get(srv_t *srv, const char *key, uint64_t max, void **data, uint64_t *len, char *msg,
                size_t msglen)
{
    uint64_t size, got = 0, gen;
    srv_tkey_t copy;
    void *buf;
    obj_t *o;
    int rc;

    rc = check_key(key, msg, msglen);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&srv->lock);
    /* A SPILLING object's bytes are still in its slice, whole: read them there. */
    o = do_settled(srv, key, true, &rc, msg, msglen);
    o = do_cluster_find(srv, owner_uid(), key, o, &rc, msg, msglen); /* --cluster */
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
    buf = malloc(size);
    if (buf == NULL) {
        pthread_mutex_unlock(&srv->lock);
        snprintf(msg, msglen, "out of memory for %" PRIu64 " bytes", size);
        return -ENOMEM;
    }
    if (o->state != OBJ_SPILLED) {
        memcpy(buf, host_addr(srv, o->offset), size);
        objs_touch(srv->objs, o);
        pthread_mutex_unlock(&srv->lock);
    } else {
        /* Read it from the tier without restoring it (a reader, not an owner):
         * the copy of this generation (a removal meanwhile ends in ENOKEY). */
        do_tier_key(o, &copy);
        gen = o->gen;
        pthread_mutex_unlock(&srv->lock);
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
                o = objs_find(srv->objs, key);
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

int srv_obj_exists(srv_t *srv, const char *key, char *msg, size_t msglen)
{
    obj_t *o;
    int rc = check_key(key, msg, msglen);

    if (rc != 0)
        return rc;
    pthread_mutex_lock(&srv->lock);
    o = objs_find(srv->objs, key);
    rc = o != NULL && (o->expires_ns == 0 || o->expires_ns > mono_ns());
    pthread_mutex_unlock(&srv->lock);
    return srv_cluster_exists(srv, owner_uid(), key, rc); /* --cluster */
}

int srv_obj_remove(srv_t *srv, const char *key, char *msg, size_t msglen)
{
    srv_tkey_t copy = {.len = 0};
    obj_t *o;
    int rc = check_key(key, msg, msglen);

    if (rc != 0 || (rc = srv_cluster_nowait(srv)) != 0) /* --cluster: Mooncake calls */
        return rc;
    pthread_mutex_lock(&srv->lock);
    o = do_settled(srv, key, false, &rc, msg, msglen);
    if (o != NULL && o->in_tier && do_nowait()) {
        rc = SRV_EWOULDBLOCK; /* its tier copy goes before Remove answers: tier I/O */
    } else if (o != NULL) {
        do_drop_obj(srv, o, &copy);
        rc = 0;
    }
    pthread_mutex_unlock(&srv->lock);
    srv_tier_remove_now(srv, &copy);
    return srv_cluster_remove(srv, owner_uid(), key, rc, msg, msglen); /* --cluster */
}
