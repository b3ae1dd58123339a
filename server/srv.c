/*
 * srv.c - the daemon's state (see srv.h for what it owns and its lock).
 *
 * Objects.  Named objects (Put) and released slices (ReleasePoolMemory) are
 * one thing: a host-pool slice owned by srv->obj_owner (no client) and a record
 * in srv->objs (pool/objects.c, which holds the state machine and LRU order).
 * Kept slices ("kept:<tag>") are the other kind of named memory: always
 * resident, never spilled, mapped by anyone.  A released object may be spilled
 * to srv->tier when room is needed; in-use slices never are.
 *
 * Spilling (do_spill): mark SPILLING, drop srv->lock, tier_put from the slice,
 * take the lock again, and only then free the slice (SPILLED); if the put
 * failed the object is RESIDENT again and nothing is lost.  Restoring
 * (srv_acquire) is the mirror: RESTORING, a fresh slice, unlock, tier_get,
 * relock, RESIDENT.  An object in SPILLING/RESTORING belongs to the thread that
 * put it there; every other thread waits on obj_cv (bounded) until it settles,
 * so no one reads a half-restored slice or frees one being written out.  After
 * a tier failure, on-demand spilling pauses for TIER_BACKOFF_MS (allocations
 * fail fast with the reason) and the maintenance thread retries.
 *
 * The maintenance thread (maint_thread) wakes every MAINT_PERIOD_MS or when
 * signalled: it drops expired objects and spills LRU-first while free space is
 * below --spill-low-watermark.
 *
 * Chunks: chunks.c.  Clients and sessions: sessions.c.  Pools and slices:
 * slices.c.  struct srv and the lock rules: srv_int.h.
 */
#include "srv_int.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "objects.h"
#include "pinpool.h"

static void *maint_thread(void *arg);

/*
 * Start the chunk threads (chunks.c) and the maintenance thread (below):
 * srv_create starts no thread, so that a failed start-up has none to stop.
 */
int srv_start_chunks(srv_t *srv)
{
    if (!srv->maint_started && pthread_create(&srv->maint, NULL, maint_thread, srv) == 0)
        srv->maint_started = true;
    return srv_chunks_start(srv);
}

/* ---- life cycle ----------------------------------------------------------- */

int srv_create(srv_t **out, const srv_config_t *cfg, char *err, size_t errlen)
{
    srv_t *srv;
    int rc;

    srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return -ENOMEM;
    srv->cfg = *cfg;
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->chunks_cv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&srv->obj_cv, &ca);
    pthread_cond_init(&srv->maint_cv, &ca);
    pthread_condattr_destroy(&ca);
    RB_INIT(&srv->clients);
    srv->next_owner = 1;
    srv->obj_owner = srv->next_owner++;
    rc = objs_create(&srv->objs);
    if (rc != 0)
        goto fail;
    if (strcmp(srv->cfg.spill_tier, "auto") == 0) {
        rc = srv_config_resolve(&srv->cfg, err, errlen);
        if (rc != 0)
            goto fail;
    }
    if (strcmp(srv->cfg.spill_tier, "none") != 0) {
        rc = tier_open(&srv->tier, srv->cfg.spill_tier, err, errlen);
        if (rc != 0)
            goto fail;
        srv_info("spill tier: %s", srv->cfg.spill_tier);
    }
    rc = srv_chunks_open(srv, err, errlen);
    if (rc != 0)
        goto fail;
    rc = srv_config_watermark(&srv->cfg, srv->capacity, &srv->low_watermark, err, errlen);
    if (rc != 0)
        goto fail;

    rc = srv_slices_open_host(srv, err, errlen);
    if (rc != 0)
        goto fail;
    rc = srv_chunks_reserve(srv, err, errlen);
    if (rc != 0)
        goto fail;
    rc = srv_slices_open_devices(srv, err, errlen);
    if (rc != 0)
        goto fail;
    *out = srv;
    return 0;

fail:
    srv_destroy(srv);
    return rc;
}

void srv_destroy(srv_t *srv)
{
    if (srv == NULL)
        return;
    pthread_mutex_lock(&srv->lock);
    srv->stop_chunks = true;
    srv->stop_maint = true;
    pthread_cond_broadcast(&srv->maint_cv);
    pthread_mutex_unlock(&srv->lock);
    if (srv->maint_started)
        pthread_join(srv->maint, NULL);
    srv_chunks_close(srv);
    srv_slices_close(srv);
    srv_clients_close(srv);
    objs_destroy(srv->objs);
    tier_close(srv->tier);
    pthread_cond_destroy(&srv->obj_cv);
    pthread_cond_destroy(&srv->maint_cv);
    pthread_cond_destroy(&srv->chunks_cv);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}

void srv_begin_shutdown(srv_t *srv)
{
    pthread_mutex_lock(&srv->lock);
    srv->shutting_down = true;
    pthread_cond_broadcast(&srv->chunks_cv);
    pthread_cond_broadcast(&srv->obj_cv);
    pthread_mutex_unlock(&srv->lock);
}

const srv_config_t *srv_config(const srv_t *srv)
{
    return &srv->cfg;
}

const ipc_host_ops_t *srv_host_backend(const srv_t *srv)
{
    return srv->host;
}

void srv_pool_info(srv_t *srv, srv_pool_info_t *info,
                   void (*fn)(const srv_client_usage_t *usage, void *arg), void *arg)
{
    memset(info, 0, sizeof(*info));
    pthread_mutex_lock(&srv->lock);
    pool_get_stats(srv->pools[HOST_POOL], &info->stats);
    info->chunk_size = srv->cfg.chunk_size;
    info->num_chunks = srv->nchunks;
    info->num_clients = srv->nclients - srv->nkept;
    info->num_kept = srv->nkept;
    info->host_backend = srv->host->name;
    info->mode = srv->host->cuda || srv->ndevs > 0 ? "cuda" : "cpu-only";
    info->pin_seconds = srv->ready == srv->nchunks ? srv->chunks_seconds : 0;
    info->ndevices = srv->ndevs;
    for (uint32_t i = 0; i < srv->ndevs; i++) {
        info->devices[i].device_id = srv->devs[i].device;
        snprintf(info->devices[i].name, sizeof(info->devices[i].name), "%s", srv->devs[i].name);
        pool_get_stats(srv->pools[i + 1], &info->devices[i].stats);
    }
    if (fn != NULL)
        do_foreach_usage(srv, fn, arg);
    pthread_mutex_unlock(&srv->lock);
}

/* ---- objects: spilling and restoring (see "Objects" at the top) -------------------- */

static void *host_addr(const srv_t *srv, uint64_t offset)
{
    return (char *)srv->base + offset;
}

static int check_key(const char *key, char *msg, size_t msglen)
{
    return srv_check_name("key", key != NULL ? key : "", OBJ_KEY_MAX, msg, msglen);
}

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
static bool do_wait_obj(srv_t *srv, uint64_t deadline_ns)
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
static int do_alloc_obj(srv_t *srv, uint64_t size, pool_slice_info_t *info, char *msg,
                        size_t msglen)
{
    int rc;

    for (;;) {
        if (srv->shutting_down) {
            snprintf(msg, msglen, "the daemon is shutting down");
            return PINPOOL_ESHUTDOWN;
        }
        rc = pool_alloc(srv->pools[HOST_POOL], srv->obj_owner, size, 0, info);
        if (rc == 0)
            return 0;
        if (rc == PINPOOL_ENOSPC && do_make_room(srv))
            continue;
        if (rc == PINPOOL_ENOSPC && do_chunks_coming(srv)) {
            pthread_cond_wait(&srv->chunks_cv, &srv->lock);
            continue;
        }
        do_explain_alloc_error(srv, HOST_POOL, rc, size, 0, msg, msglen);
        return rc;
    }
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
        o->waiters++;
        bool more = do_wait_obj(srv, deadline);
        o = objs_find(srv->objs, key);
        if (o != NULL)
            o->waiters--;
        if (!more) {
            snprintf(msg, msglen, srv->shutting_down ? "the daemon is shutting down"
                     : "object '%s' is still being spilled or restored; retry", key);
            *rc = srv->shutting_down ? PINPOOL_ESHUTDOWN : PINPOOL_ETIMEOUT;
            return NULL;
        }
    }
}

/* Drop o (settled) from the table and the pool; its tier copy, if any, is
 * removed by the caller after unlocking (*tier_copy set). */
static void do_drop_obj(srv_t *srv, obj_t *o, bool *tier_copy)
{
    *tier_copy = o->in_tier;
    if (o->slice != 0)
        pool_free(srv->pools[HOST_POOL], o->slice, srv->obj_owner, NULL);
    objs_remove(srv->objs, o);
    pthread_cond_broadcast(&srv->obj_cv);
}

/* Remove key's tier copy (no lock held).  Mooncake refuses during a reader's
 * lease (PINPOOL_EBUSY): the copy stays until a later put replaces it. */
static void tier_forget(srv_t *srv, const char *key)
{
    int rc;

    if (srv->tier == NULL)
        return;
    rc = tier_remove(srv->tier, key, strlen(key));
    if (rc != 0 && rc != PINPOOL_ENOKEY)
        srv_debug("spill tier: remove '%s': %s (the stale copy stays)", key, pinpool_strerror(rc));
}

static uint64_t expiry(uint64_t ttl_ms)
{
    return ttl_ms != 0 ? mono_ns() + ttl_ms * 1000000ull : 0;
}

int srv_release(srv_t *srv, const char *client_id, uint64_t slice_id, const char *key,
                uint64_t ttl_ms, uint64_t *size, char *msg, size_t msglen)
{
    struct srv_client *c;
    pool_slice_info_t info;
    int pool, rc;

    rc = srv_check_client_id(client_id, msg, msglen);
    if (rc == 0)
        rc = check_key(key, msg, msglen);
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

/*
 * Bring SPILLED o back into a fresh slice (lock held, dropped during the get).
 * 0: o is RESIDENT.  Else o is SPILLED again with msg.
 */
static int do_restore(srv_t *srv, obj_t *o, char *msg, size_t msglen)
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

int srv_acquire(srv_t *srv, const char *client_id, const char *key, srv_slice_t *out, char *msg,
                size_t msglen)
{
    struct srv_client *c;
    pool_slice_info_t info;
    bool tier_copy = false;
    obj_t *o;
    int rc;

    rc = srv_check_client_id(client_id, msg, msglen);
    if (rc == 0)
        rc = check_key(key, msg, msglen);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&srv->lock);
    for (;;) {
        if (srv->shutting_down) {
            snprintf(msg, msglen, "the daemon is shutting down");
            rc = PINPOOL_ESHUTDOWN;
            break;
        }
        o = do_settled(srv, key, false, &rc, msg, msglen);
        if (o == NULL)
            break;
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
        tier_forget(srv, key);
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
        tier_forget(srv, key);
    return rc;
}

int srv_obj_get(srv_t *srv, const char *key, void **data, uint64_t *len, char *msg, size_t msglen)
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
    if (o != NULL) {
        do_drop_obj(srv, o, &tier_copy);
        rc = 0;
    }
    pthread_mutex_unlock(&srv->lock);
    if (tier_copy)
        tier_forget(srv, key);
    return rc;
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
                tier_forget(srv, key);
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
