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
 * (spill.c) removes it.
 * Never: spills or restores (spill.c does, with do_restore for Acquire), or
 * writes to the tier; it reads a spilled object for Get itself (without
 * restoring it) and has spill.c remove stale tier copies (srv_tier_forget).
 * Locking (see srv_int.h): every srv_* function here takes srv->lock.  A call
 * that finds its object SPILLING or RESTORING waits for it to settle
 * (do_settled, bounded); srv_acquire restores through do_restore and
 * srv_obj_put allocates through do_alloc_obj, both of which drop the lock.
 * After any of those the object is looked up again, except the one this
 * thread holds in RESTORING.  Removing a tier copy (srv_tier_forget) and
 * reading a spilled object (tier_get) happen after the unlock.  On a
 * do_nowait() thread every call returns SRV_EWOULDBLOCK instead of waiting
 * in do_settled, restoring, allocating in do_alloc_obj, reading the tier, or
 * removing a tier copy (it checks o->in_tier before dropping anything).
 */
#include "srv_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static uint64_t expiry(uint64_t ttl_ms)
{
    return ttl_ms != 0 ? mono_ns() + ttl_ms * 1000000ull : 0;
}

int srv_objects_open(srv_t *srv, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    srv->obj_owner = srv->next_owner++;
    return objs_create(&srv->objs);
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
        if (o == NULL || (o->expires_ns != 0 && o->expires_ns <= mono_ns())) {
            snprintf(msg, msglen, "no object under key '%s'", key);
            *rc = PINPOOL_ENOKEY;
            return NULL;
        }
        if (o->state == OBJ_RESIDENT || o->state == OBJ_SPILLED ||
            (resident_ok_while_spilling && o->state == OBJ_SPILLING))
            return o;
        if (do_nowait()) {
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
                snprintf(msg, msglen, "object '%s' is still being spilled or restored; retry",
                         key);
                *rc = PINPOOL_ETIMEOUT;
            }
            return NULL;
        }
    }
}

/* Drop o (settled) from the table and the pool; its tier copy, if any, is
 * removed by the caller after unlocking (*tier_copy set). */
void do_drop_obj(srv_t *srv, obj_t *o, bool *tier_copy)
{
    *tier_copy = o->in_tier;
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
    int pool, rc;

    rc = check_client_and_key(client_id, key, msg, msglen);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&srv->lock);
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
    } else if (objs_find(srv->objs, key) != NULL) {
        snprintf(msg, msglen, "an object already exists under key '%s' (remove or acquire it "
                 "first)", key);
        rc = PINPOOL_EEXIST;
    } else if ((rc = objs_insert(srv->objs, key, info.size, info.id, info.offset, info.extent,
                                 expiry(ttl_ms), NULL)) != 0) {
        snprintf(msg, msglen, "cannot record object '%s': %s", key, pinpool_strerror(rc));
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
    return rc;
}

int srv_acquire(srv_t *srv, const char *client_id, const char *key, srv_slice_t *out, char *msg,
                size_t msglen)
{
    struct srv_client *c;
    pool_slice_info_t info;
    bool tier_copy = false;
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
        if (o == NULL)
            break;
        /* A restore, or removing the tier copy afterwards, is tier I/O. */
        if ((o->state == OBJ_SPILLED || o->in_tier) && do_nowait()) {
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
        rc = pool_set_owner(srv->pools[HOST_POOL], o->slice, srv->obj_owner, c->owner);
        if (rc != 0) {
            snprintf(msg, msglen, "cannot hand '%s' over: %s", key, pinpool_strerror(rc));
            do_drop_if_idle(srv, c);
            break;
        }
        pool_lookup(srv->pools[HOST_POOL], o->slice, &info);
        do_describe(srv, HOST_POOL, &info, out);
        tier_copy = o->in_tier;
        objs_remove(srv->objs, o);
        pthread_cond_broadcast(&srv->obj_cv);
        srv_debug("client %s acquired '%s' as slice %" PRIx64, client_id, key, out->info.id);
        break;
    }
    pthread_mutex_unlock(&srv->lock);
    if (rc == 0 && tier_copy)
        srv_tier_forget(srv, key);
    return rc;
}

int srv_obj_put(srv_t *srv, const char *key, const void *data, uint64_t len, uint64_t ttl_ms,
                char *msg, size_t msglen)
{
    pool_slice_info_t info;
    bool tier_copy = false;
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
    if (o != NULL && o->in_tier && do_nowait()) {
        rc = SRV_EWOULDBLOCK; /* removing its tier copy is tier I/O */
        goto out;
    }
    if (o != NULL)
        do_drop_obj(srv, o, &tier_copy);
    else if (rc != PINPOOL_ENOKEY)
        goto out;
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
    rc = objs_insert(srv->objs, key, len, info.id, info.offset, info.extent, expiry(ttl_ms), NULL);
    if (rc != 0) {
        pool_free(srv->pools[HOST_POOL], info.id, srv->obj_owner, NULL);
        snprintf(msg, msglen, "cannot record object '%s': %s", key, pinpool_strerror(rc));
    }
    pthread_cond_signal(&srv->maint_cv);
out:
    pthread_mutex_unlock(&srv->lock);
    /* The old tier copy: a spill of the new object would replace it anyway. */
    if (tier_copy)
        srv_tier_forget(srv, key);
    return rc;
}

int srv_obj_get(srv_t *srv, const char *key, uint64_t max, void **data, uint64_t *len, char *msg,
                size_t msglen)
{
    uint64_t size, got = 0;
    void *buf;
    obj_t *o;
    int rc;

    rc = check_key(key, msg, msglen);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&srv->lock);
    /* A SPILLING object's bytes are still in its slice, whole: read them there. */
    o = do_settled(srv, key, true, &rc, msg, msglen);
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
        /* Read it from the tier without restoring it (a reader, not an owner). */
        pthread_mutex_unlock(&srv->lock);
        rc = tier_get(srv->tier, key, strlen(key), buf, size, &got);
        if (rc == 0 && got != size)
            rc = PINPOOL_ETIER;
        if (rc != 0) {
            free(buf);
            snprintf(msg, msglen, "cannot read '%s' from the spill tier: %s%s%s", key,
                     pinpool_strerror(rc), tier_errmsg()[0] ? ": " : "", tier_errmsg());
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
    return rc;
}

int srv_obj_remove(srv_t *srv, const char *key, char *msg, size_t msglen)
{
    bool tier_copy = false;
    obj_t *o;
    int rc = check_key(key, msg, msglen);

    if (rc != 0)
        return rc;
    pthread_mutex_lock(&srv->lock);
    o = do_settled(srv, key, false, &rc, msg, msglen);
    if (o != NULL && o->in_tier && do_nowait()) {
        rc = SRV_EWOULDBLOCK; /* removing its tier copy is tier I/O */
    } else if (o != NULL) {
        do_drop_obj(srv, o, &tier_copy);
        rc = 0;
    }
    pthread_mutex_unlock(&srv->lock);
    if (tier_copy)
        srv_tier_forget(srv, key);
    return rc;
}
