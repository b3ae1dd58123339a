/*
 * spill.c - moving objects to the spill tier and back, and the maintenance
 * thread.
 *
 * Owns: srv->tier, the spill counters (srv->sp), the spill back-off, and the
 * maintenance thread.  A released object may be spilled to srv->tier when
 * room is needed; slices in use never are.
 * Spilling (do_spill): mark SPILLING, drop srv->lock, tier_put from the slice,
 * take the lock again, and only then free the slice (SPILLED); if the put
 * failed the object is RESIDENT again and nothing is lost.  Restoring
 * (do_restore, for srv_acquire) is the mirror: RESTORING, a fresh slice,
 * unlock, tier_get, relock, RESIDENT.  An object in SPILLING/RESTORING
 * belongs to the thread that put it there; every other thread waits on obj_cv
 * (bounded) until it settles, so no one reads a half-restored slice or frees
 * one being written out.  After a tier failure, on-demand spilling pauses for
 * TIER_BACKOFF_MS (allocations fail fast with the reason) and the maintenance
 * thread retries.
 * The maintenance thread (maint_thread) wakes every MAINT_PERIOD_MS or when
 * signalled: it drops expired objects and spills LRU-first while free space is
 * below --spill-low-watermark (once every chunk is made).
 * Never: chooses a slice in use, or calls the tier with srv->lock held.
 * Locking (see srv_int.h): do_spill, do_restore, do_make_room, do_alloc_obj and
 * do_wait_obj are called with srv->lock held and drop it meanwhile (the list
 * there says where; do_alloc_obj returns SRV_EWOULDBLOCK there instead on a
 * do_nowait() thread); the maintenance thread holds it except while it waits,
 * spills, or removes an expired object's tier copy.
 */
#include "srv_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pinpool.h"

/* ---- life cycle ------------------------------------------------------------------ */

int srv_spill_open(srv_t *srv, char *err, size_t errlen)
{
    int rc;

    if (strcmp(srv->cfg.spill_tier, "auto") == 0) {
        rc = srv_config_resolve(&srv->cfg, err, errlen);
        if (rc != 0)
            return rc;
    }
    if (strcmp(srv->cfg.spill_tier, "none") != 0) {
        rc = tier_open(&srv->tier, srv->cfg.spill_tier, err, errlen);
        if (rc != 0)
            return rc;
        srv_info("spill tier: %s", srv->cfg.spill_tier);
    }
    return 0;
}

int srv_spill_watermark(srv_t *srv, char *err, size_t errlen)
{
    return srv_config_watermark(&srv->cfg, srv->capacity, &srv->low_watermark, err, errlen);
}

static void *maint_thread(void *arg);

void srv_maint_start(srv_t *srv)
{
    if (!srv->maint_started && pthread_create(&srv->maint, NULL, maint_thread, srv) == 0)
        srv->maint_started = true;
}

void srv_maint_join(srv_t *srv)
{
    if (srv->maint_started)
        pthread_join(srv->maint, NULL);
}

/* ---- spilling and restoring (lock held) ------------------------------------------------ */

static void note_tier_error(srv_t *srv, const char *what, const char *key, int rc)
{
    const char *why = tier_errmsg();

    snprintf(srv->sp.last_error, sizeof(srv->sp.last_error), "%s '%s': %s%s%s", what, key,
             pinpool_strerror(rc), why[0] != '\0' ? ": " : "", why);
    srv_warn("spill tier: %s", srv->sp.last_error);
}

/*
 * Spill o (RESIDENT) to the tier.  Lock held on entry and on return, dropped
 * during the put.  0: o is SPILLED and its slice is free.  Else o is RESIDENT
 * again, unchanged, and on-demand spilling backs off for a while.
 */
static int do_spill(srv_t *srv, obj_t *o)
{
    uint64_t slice = o->slice, off = o->offset, extent = o->extent, size = o->size, t0;
    char key[OBJ_KEY_MAX + 1];
    int rc;

    memcpy(key, o->key, o->keylen + 1);
    objs_set_state(srv->objs, o, OBJ_SPILLING, 0, 0, 0);
    srv->spilling_now++;
    pthread_mutex_unlock(&srv->lock);
    t0 = mono_ns();
    rc = tier_put(srv->tier, key, strlen(key), host_addr(srv, off), size);
    t0 = mono_ns() - t0;
    pthread_mutex_lock(&srv->lock);
    srv->spilling_now--;
    /* o is still ours: nobody touches a SPILLING object but this thread. */
    if (rc == 0) {
        pool_free(srv->pools[HOST_POOL], slice, srv->obj_owner, NULL);
        objs_set_state(srv->objs, o, OBJ_SPILLED, 0, 0, 0);
        srv->sp.spills++;
        srv->sp.spilled_bytes += size;
        srv->sp.spill_ns += t0;
        srv_debug("spilled '%s' (%" PRIu64 " bytes) in %.3f ms", key, size, (double)t0 / 1e6);
    } else {
        objs_set_state(srv->objs, o, OBJ_RESIDENT, slice, off, extent);
        srv->sp.spill_failures++;
        srv->tier_backoff_ns = mono_ns() + TIER_BACKOFF_MS * 1000000ull;
        note_tier_error(srv, "put", key, rc);
    }
    pthread_cond_broadcast(&srv->obj_cv);
    return rc;
}

/* Wait (lock held) for an object to settle or TIMEOUT; false past deadline. */
bool do_wait_obj(srv_t *srv, uint64_t deadline_ns)
{
    struct timespec ts;
    uint64_t now = mono_ns(), until = now + 200000000ull; /* re-check at least every 200 ms */

    if (now >= deadline_ns || srv->shutting_down)
        return false;
    if (until > deadline_ns)
        until = deadline_ns;
    ts.tv_sec = (time_t)(until / 1000000000u);
    ts.tv_nsec = (long)(until % 1000000000u);
    pthread_cond_timedwait(&srv->obj_cv, &srv->lock, &ts);
    return true;
}

bool do_make_room_waits(srv_t *srv)
{
    if (srv->tier == NULL || srv->shutting_down)
        return false;
    return (objs_lru(srv->objs) != NULL && mono_ns() >= srv->tier_backoff_ns) ||
           srv->spilling_now > 0;
}

/*
 * The host pool is short of room: spill the least recently used released
 * object, or wait for a spill in flight.  Lock held; dropped meanwhile.
 * Returns true when trying again may succeed.
 */
bool do_make_room(srv_t *srv)
{
    obj_t *o;

    if (srv->tier == NULL || srv->shutting_down)
        return false;
    o = objs_lru(srv->objs);
    if (o != NULL && mono_ns() >= srv->tier_backoff_ns)
        return do_spill(srv, o) == 0;
    if (srv->spilling_now > 0)
        return do_wait_obj(srv, mono_ns() + OBJ_WAIT_MAX_S * 1000000000ull);
    return false;
}

/* A host slice of size for the objects, spilling others if need be (lock held,
 * dropped meanwhile).  0 and *info, or an error with msg. */
int do_alloc_obj(srv_t *srv, uint64_t size, pool_slice_info_t *info, char *msg, size_t msglen)
{
    int rc;

    for (;;) {
        rc = do_shutdown_error(srv, msg, msglen);
        if (rc != 0)
            return rc;
        rc = pool_alloc(srv->pools[HOST_POOL], srv->obj_owner, size, 0, info);
        if (rc == 0)
            return 0;
        if (rc == PINPOOL_ENOSPC && do_make_room_waits(srv)) {
            if (do_nowait())
                return SRV_EWOULDBLOCK;
            if (do_make_room(srv))
                continue;
        }
        if (rc == PINPOOL_ENOSPC && do_chunks_coming(srv)) {
            if (do_nowait())
                return SRV_EWOULDBLOCK;
            pthread_cond_wait(&srv->chunks_cv, &srv->lock);
            continue;
        }
        do_explain_alloc_error(srv, HOST_POOL, rc, size, 0, msg, msglen);
        return rc;
    }
}

/*
 * Bring SPILLED o back into a fresh slice (lock held, dropped during the get).
 * 0: o is RESIDENT.  Else o is SPILLED again with msg.
 */
int do_restore(srv_t *srv, obj_t *o, char *msg, size_t msglen)
{
    char key[OBJ_KEY_MAX + 1];
    pool_slice_info_t info;
    uint64_t got = 0, t0, size = o->size;
    int rc;

    memcpy(key, o->key, o->keylen + 1);
    objs_set_state(srv->objs, o, OBJ_RESTORING, 0, 0, 0);
    rc = do_alloc_obj(srv, size, &info, msg, msglen); /* may drop the lock: o stays ours */
    if (rc == 0) {
        pthread_mutex_unlock(&srv->lock);
        t0 = mono_ns();
        rc = tier_get(srv->tier, key, strlen(key), host_addr(srv, info.offset), size, &got);
        t0 = mono_ns() - t0;
        if (rc == 0 && got != size)
            rc = tier__fail(PINPOOL_ETIER, "the tier holds %" PRIu64 " bytes, not %" PRIu64, got,
                            size);
        pthread_mutex_lock(&srv->lock);
        if (rc == 0) {
            objs_set_state(srv->objs, o, OBJ_RESIDENT, info.id, info.offset, info.extent);
            srv->sp.restores++;
            srv->sp.restored_bytes += size;
            srv->sp.restore_ns += t0;
        } else {
            pool_free(srv->pools[HOST_POOL], info.id, srv->obj_owner, NULL);
            srv->sp.restore_failures++;
            note_tier_error(srv, "get", key, rc);
            snprintf(msg, msglen, "cannot restore '%s' from the spill tier: %s", key,
                     srv->sp.last_error);
            rc = rc == -ETIMEDOUT ? PINPOOL_ETIMEOUT : rc == PINPOOL_ENOKEY ? rc : PINPOOL_ETIER;
        }
    }
    if (rc != 0)
        objs_set_state(srv->objs, o, OBJ_SPILLED, 0, 0, 0);
    pthread_cond_broadcast(&srv->obj_cv);
    return rc;
}

/* Remove key's tier copy (no lock held).  Mooncake refuses during a reader's
 * lease (PINPOOL_EBUSY): the copy stays until a later put replaces it. */
void srv_tier_forget(srv_t *srv, const char *key)
{
    int rc;

    if (srv->tier == NULL)
        return;
    rc = tier_remove(srv->tier, key, strlen(key));
    if (rc != 0 && rc != PINPOOL_ENOKEY)
        srv_debug("spill tier: remove '%s': %s (the stale copy stays)", key, pinpool_strerror(rc));
}

void srv_spill_info(srv_t *srv, srv_spill_info_t *out,
                    void (*add)(const char *name, const char *value, void *arg), void *arg)
{
    objs_stats_t os;

    pthread_mutex_lock(&srv->lock);
    *out = srv->sp;
    objs_get_stats(srv->objs, &os);
    out->tier = srv->tier != NULL ? tier_scheme(srv->tier) : "none";
    out->objects = os.total;
    out->resident = os.count[OBJ_RESIDENT];
    out->spilling = os.count[OBJ_SPILLING];
    out->spilled = os.count[OBJ_SPILLED];
    out->restoring = os.count[OBJ_RESTORING];
    out->resident_bytes = os.bytes[OBJ_RESIDENT] + os.bytes[OBJ_SPILLING];
    out->spilled_bytes_now = os.bytes[OBJ_SPILLED] + os.bytes[OBJ_RESTORING];
    out->low_watermark = srv->low_watermark;
    pthread_mutex_unlock(&srv->lock);
    if (add != NULL && srv->tier != NULL)
        tier_report_stats(srv->tier, add, arg); /* its own lock; may ask the backend */
}

/* ---- the maintenance thread: TTL expiry and the low watermark ---------------------- */

static void *maint_thread(void *arg)
{
    srv_t *srv = arg;

    pthread_mutex_lock(&srv->lock);
    while (!srv->stop_maint) {
        struct timespec ts;
        uint64_t until = mono_ns() + MAINT_PERIOD_MS * 1000000ull;
        obj_t *o;

        ts.tv_sec = (time_t)(until / 1000000000u);
        ts.tv_nsec = (long)(until % 1000000000u);
        pthread_cond_timedwait(&srv->maint_cv, &srv->lock, &ts);
        if (srv->stop_maint)
            break;
        /* Expired objects go, one at a time (the tier copy outside the lock). */
        while (!srv->stop_maint && (o = objs_expired(srv->objs, mono_ns())) != NULL) {
            char key[OBJ_KEY_MAX + 1];
            bool tier_copy;
            memcpy(key, o->key, o->keylen + 1);
            do_drop_obj(srv, o, &tier_copy);
            srv->sp.expired++;
            if (tier_copy) {
                pthread_mutex_unlock(&srv->lock);
                srv_tier_forget(srv, key);
                pthread_mutex_lock(&srv->lock);
            }
        }
        /* Below the watermark: spill LRU-first; stop at the first failure
         * (the next period retries: a tier that is back resumes spilling). */
        while (!srv->stop_maint && !srv->shutting_down && srv->tier != NULL &&
               srv->low_watermark > 0 && srv->ready == srv->nchunks) {
            pool_stats_t st;
            pool_get_stats(srv->pools[HOST_POOL], &st);
            if (st.free >= srv->low_watermark || (o = objs_lru(srv->objs)) == NULL ||
                do_spill(srv, o) != 0)
                break;
        }
    }
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}
