/*
 * spill.c - moving objects to the spill tier and back, and the maintenance
 * thread.
 *
 * Owns: srv->tier, the spill counters (srv->sp), the spill back-off, the
 * names of tier copies and what is stored with them, the queue of removals
 * to retry (srv->stale), and the maintenance thread.  A released object may
 * be spilled to srv->tier when room is needed; slices in use never are.
 * Copies are versioned: an object's copy is named "UID/GEN/KEY" (srv_int.h),
 * GEN the generation the object got when it was made, so every removal names
 * exactly the copy it removes and no late removal (after the lock was
 * dropped) can delete the copy of a newer object under the same key.  With
 * each copy goes its expiry as wall-clock time (SRV_TMETA_LEN bytes), for
 * recover.c to bring it back after a restart.
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
 * signalled: it drops expired objects, spills LRU-first while free space is
 * below --spill-low-watermark (once every chunk is made), and retries the
 * removals that failed (every TIER_BACKOFF_MS); with --cluster it first
 * shares what releases and puts queued (cluster.c), and every removal of a
 * copy first removes its cluster record when that still names the copy.
 * Never: chooses a slice in use, or calls the tier with srv->lock held.
 * Locking (see srv_int.h): do_spill, do_restore, do_make_room, do_alloc_obj and
 * do_wait_obj are called with srv->lock held and drop it meanwhile (the list
 * there says where; do_alloc_obj returns SRV_EWOULDBLOCK there instead on a
 * do_nowait() thread); the maintenance thread holds it except while it waits,
 * spills, or removes tier copies.
 */
#include "srv_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pinpool.h"

struct srv_stale {
    struct srv_stale *next;
    srv_tkey_t copy;
};

/* ---- life cycle ------------------------------------------------------------------ */

int srv_spill_open(srv_t *srv, char *err, size_t errlen)
{
    int rc;

    if (strcmp(srv->cfg.spill_tier, "auto") == 0) {
        rc = srv_config_resolve(&srv->cfg, err, errlen);
        if (rc != 0)
            return rc;
    }
    if (strcmp(srv->cfg.spill_tier, "none") != 0 && strcmp(srv->cfg.takeover, "yes") == 0) {
        /* The tier opens in srv_handover_load, under the running daemon's claim
         * on it; its objects come with the state (nothing to reconcile). */
        if (srv->cfg.cluster[0] != '\0') {
            snprintf(err, errlen, "--takeover: --cluster is not handed over");
            return PINPOOL_EINVAL;
        }
        return 0;
    }
    if (strcmp(srv->cfg.spill_tier, "none") != 0) {
        char uri[sizeof(srv->cfg.spill_tier) + 256];

        rc = srv_cluster_open(srv, uri, sizeof(uri), err, errlen); /* --cluster: its prefix */
        if (rc == 0)
            rc = tier_open(&srv->tier, uri, err, errlen);
        if (rc != 0)
            return rc;
        srv_info("spill tier: %s", uri);
    } else if (srv->cfg.cluster[0] != '\0') {
        snprintf(err, errlen, "--cluster needs a mooncake:// --spill-tier, not none");
        return PINPOOL_EINVAL;
    }
    return srv_reconcile(srv, err, errlen);
}

static void srv_stale_close(srv_t *srv)
{
    while (srv->stale != NULL) {
        struct srv_stale *s = srv->stale;

        srv->stale = s->next;
        free(s);
    }
    srv->nstale = 0;
}

/* ---- names and metadata of tier copies --------------------------------------------- */

void do_tier_key(const obj_t *o, srv_tkey_t *out)
{
    int n = snprintf(out->s, sizeof(out->s), "%" PRIu32 "/%016" PRIx64 "/", o->uid, o->gen);

    memcpy(out->s + n, o->key, o->keylen + 1);
    out->len = (size_t)n + o->keylen;
}

int srv_tier_key_parse(const void *name, size_t len, uint32_t *uid, uint64_t *gen, char *key)
{
    const char *p = name, *end = p + len;
    uint64_t u = 0, g = 0;
    size_t i = 0;

    for (; p < end && *p >= '0' && *p <= '9' && i < 10; p++, i++)
        u = u * 10 + (uint64_t)(*p - '0');
    if (i == 0 || u > UINT32_MAX || p == end || *p++ != '/')
        return -1;
    for (i = 0; i < 16; i++, p++) {
        if (p == end || !((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return -1;
        g = g * 16 + (uint64_t)(*p <= '9' ? *p - '0' : *p - 'a' + 10);
    }
    if (p == end || *p++ != '/' || end - p < 1 || end - p > OBJ_KEY_MAX || g == 0 ||
        memchr(p, '\0', (size_t)(end - p)) != NULL)
        return -1;
    *uid = (uint32_t)u;
    *gen = g;
    memcpy(key, p, (size_t)(end - p));
    key[end - p] = '\0';
    return 0;
}

static uint64_t wall_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/* Version 1: u8 1, 7 bytes 0, u64 expiry in ms since the epoch (0: none;
 * UINT64_MAX: later than the clocks can say, i.e. never). */
void do_tier_meta(const obj_t *o, unsigned char meta[SRV_TMETA_LEN])
{
    uint64_t exp = 0, now = mono_ns();

    if (o->expires_ns == UINT64_MAX)
        exp = UINT64_MAX;
    else if (o->expires_ns != 0) {
        uint64_t left_ms = o->expires_ns > now ? (o->expires_ns - now + 999999) / 1000000u : 0;
        uint64_t w = wall_ms();

        exp = left_ms > UINT64_MAX - 1 - w ? UINT64_MAX : w + (left_ms > 0 ? left_ms : 1);
    }
    memset(meta, 0, SRV_TMETA_LEN);
    meta[0] = 1;
    memcpy(meta + 8, &exp, 8);
}

int srv_tier_meta_parse(const void *meta, uint32_t len, uint64_t *expires_ms)
{
    const unsigned char *m = meta;

    if (len != SRV_TMETA_LEN || m[0] != 1)
        return -1;
    memcpy(expires_ms, m + 8, 8);
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

void do_each_stale(srv_t *srv, void (*fn)(const srv_tkey_t *copy, void *arg), void *arg)
{
    for (const struct srv_stale *st = srv->stale; st != NULL; st = st->next)
        fn(&st->copy, arg);
}

void srv_maint_stop(srv_t *srv)
{
    bool started;

    pthread_mutex_lock(&srv->lock);
    started = srv->maint_started;
    srv->stop_maint = true;
    pthread_cond_broadcast(&srv->maint_cv);
    pthread_mutex_unlock(&srv->lock);
    if (started)
        pthread_join(srv->maint, NULL);
    pthread_mutex_lock(&srv->lock);
    srv->maint_started = false;
    srv->stop_maint = false;
    pthread_mutex_unlock(&srv->lock);
}

void srv_maint_join(srv_t *srv)
{
    if (srv->maint_started)
        pthread_join(srv->maint, NULL);
    srv_stale_close(srv); /* the copies stay in the tier (the log said so) */
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
int do_spill(srv_t *srv, obj_t *o)
{
    uint64_t slice = o->slice, off = o->offset, extent = o->extent, size = o->size, t0;
    unsigned char meta[SRV_TMETA_LEN];
    const char *key = o->key; /* o stays ours, at the same address */
    srv_tkey_t copy;
    int rc;

    do_tier_key(o, &copy);
    do_tier_meta(o, meta);
    objs_set_state(srv->objs, o, OBJ_SPILLING, 0, 0, 0);
    srv->spilling_now++;
    pthread_mutex_unlock(&srv->lock);
    t0 = mono_ns();
    rc = tier_put_meta(srv->tier, copy.s, copy.len, host_addr(srv, off), size, meta,
                       sizeof(meta));
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
        srv_debug("spilled '%s' (%" PRIu64 " bytes) as '%s' in %.3f ms", key, size, copy.s,
                  (double)t0 / 1e6);
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

/* A spill victim whose TTL passed is dropped instead (its room is free at
 * once, and no expired object is ever in flight): true if it was (lock held;
 * its copy's removal is queued). */
static bool do_drop_if_expired(srv_t *srv, obj_t *o)
{
    srv_tkey_t copy;

    if (o->expires_ns == 0 || o->expires_ns > mono_ns())
        return false;
    do_drop_obj(srv, o, &copy);
    srv->sp.expired++;
    do_tier_forget(srv, &copy);
    return true;
}

bool do_make_room_waits(srv_t *srv)
{
    obj_t *o;

    if (srv->tier == NULL || srv->shutting_down)
        return false;
    o = objs_lru(srv->objs);
    return (o != NULL && (mono_ns() >= srv->tier_backoff_ns ||
                          (o->expires_ns != 0 && o->expires_ns <= mono_ns()))) ||
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
    if (o != NULL && do_drop_if_expired(srv, o))
        return true;
    if (o != NULL && mono_ns() >= srv->tier_backoff_ns)
        return do_spill(srv, o) == 0;
    if (srv->spilling_now > 0)
        return do_wait_obj(srv, mono_ns() + OBJ_WAIT_MAX_S * 1000000000ull);
    return false;
}

/* A host slice of size for the objects, spilling others if need be (lock held,
 * dropped meanwhile).  0 and *info, or an error with msg. */
int do_alloc_obj(srv_t *srv, uid_t uid, uint64_t size, pool_slice_info_t *info, char *msg,
                 size_t msglen)
{
    int rc;

    for (;;) {
        rc = do_shutdown_error(srv, msg, msglen);
        if (rc != 0)
            return rc;
        /* an object lives in its owner's memory */
        rc = pool_alloc_as(srv->pools[HOST_POOL], uid, srv->obj_owner, size, 0, info);
        if (rc == 0)
            return 0;
        if (rc == PINPOOL_ENOSPC) {
            int room = do_host_room(srv, uid, size, 0);
            if (room == 0)
                continue;
            if (room == SRV_EWOULDBLOCK)
                return room;
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
    const char *key = o->key; /* o stays ours, at the same address */
    pool_slice_info_t info;
    uint64_t got = 0, t0, size = o->size;
    srv_tkey_t copy;
    int rc;

    do_tier_key(o, &copy);
    objs_set_state(srv->objs, o, OBJ_RESTORING, 0, 0, 0);
    rc = do_alloc_obj(srv, o->uid, size, &info, msg, msglen); /* may drop the lock: o stays ours */
    if (rc == 0) {
        pthread_mutex_unlock(&srv->lock);
        t0 = mono_ns();
        rc = tier_get(srv->tier, copy.s, copy.len, host_addr(srv, info.offset), size, &got);
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
            bool damaged = rc == -EBADMSG;

            pool_free(srv->pools[HOST_POOL], info.id, srv->obj_owner, NULL);
            srv->sp.restore_failures++;
            note_tier_error(srv, "get", key, rc);
            snprintf(msg, msglen, "cannot restore '%s' from the spill tier: %s%s", key,
                     srv->sp.last_error, damaged ? "; the object is removed" : "");
            rc = damaged ? -EBADMSG : rc == -ETIMEDOUT ? PINPOOL_ETIMEOUT
                 : rc == PINPOOL_ENOKEY ? rc : PINPOOL_ETIER;
        }
    }
    if (rc != 0)
        objs_set_state(srv->objs, o, OBJ_SPILLED, 0, 0, 0);
    if (rc == -EBADMSG) { /* it will never read back: the object goes */
        do_drop_damaged(srv, o, &copy);
        do_tier_forget(srv, &copy);
        rc = PINPOOL_ENOKEY;
    }
    pthread_cond_broadcast(&srv->obj_cv);
    return rc;
}

void do_drop_damaged(srv_t *srv, obj_t *o, srv_tkey_t *copy)
{
    srv_error("spill tier: the copy of '%s' is damaged (%s): the object is removed", o->key,
              tier_errmsg()[0] ? tier_errmsg() : "its bytes do not match their checksum");
    do_drop_obj(srv, o, copy);
}

/* Queue copy's removal (lock held); false when the queue is full. */
static bool do_queue_stale(srv_t *srv, const srv_tkey_t *copy)
{
    struct srv_stale *s;

    if (srv->nstale >= do_stale_max(srv) || (s = malloc(sizeof(*s))) == NULL)
        return false;
    s->copy = *copy;
    s->next = srv->stale;
    srv->stale = s;
    srv->nstale++;
    return true;
}

void do_tier_forget(srv_t *srv, const srv_tkey_t *copy)
{
    if (srv->tier == NULL || copy->len == 0)
        return;
    if (!do_queue_stale(srv, copy)) {
        srv_warn("spill tier: %u removals wait already: the copy '%s' stays in the tier",
                 srv->nstale, copy->s);
        return;
    }
    if (!srv->stale_failing) /* the tier works: remove it now, not in a period */
        srv->stale_retry_ns = 0;
    pthread_cond_signal(&srv->maint_cv);
}

void srv_tier_forget(srv_t *srv, const srv_tkey_t *copy)
{
    if (copy->len == 0)
        return;
    pthread_mutex_lock(&srv->lock);
    do_tier_forget(srv, copy);
    pthread_mutex_unlock(&srv->lock);
}

void srv_tier_remove_now(srv_t *srv, const srv_tkey_t *copy)
{
    int rc;

    if (srv->tier == NULL || copy->len == 0)
        return;
    srv_cluster_unshare(srv, copy); /* its cluster record first */
    rc = tier_remove(srv->tier, copy->s, copy->len);
    if (rc == 0 || rc == PINPOOL_ENOKEY)
        return;
    srv_debug("spill tier: remove '%s': %s (retried later)", copy->s, pinpool_strerror(rc));
    srv_tier_forget(srv, copy);
}

/* The maintenance thread (lock held, dropped meanwhile): remove the queued
 * copies; the ones that fail go back on the queue, and the next try waits
 * TIER_BACKOFF_MS. */
void do_retry_stale(srv_t *srv)
{
    struct srv_stale *list = srv->stale, *s;
    uint32_t failed = 0;
    int last = 0;

    if (list == NULL || mono_ns() < srv->stale_retry_ns)
        return;
    srv->stale = NULL;
    srv->nstale = 0;
    pthread_mutex_unlock(&srv->lock);
    for (s = list; s != NULL; s = s->next) {
        srv_cluster_unshare(srv, &s->copy); /* its cluster record first */
        int rc = tier_remove(srv->tier, s->copy.s, s->copy.len);

        if (rc == 0 || rc == PINPOOL_ENOKEY) {
            s->copy.len = 0;
        } else {
            failed++;
            last = rc;
        }
    }
    pthread_mutex_lock(&srv->lock);
    srv->stale_failing = failed > 0;
    srv->stale_retry_ns = failed > 0 ? mono_ns() + TIER_BACKOFF_MS * 1000000ull : 0;
    if (failed > 0)
        srv_debug("spill tier: %u removals failed (%s); retried in %d ms", failed,
                  pinpool_strerror(last), TIER_BACKOFF_MS);
    while ((s = list) != NULL) {
        list = s->next;
        if (s->copy.len == 0 || srv->nstale >= do_stale_max(srv)) {
            if (s->copy.len != 0)
                srv_warn("spill tier: the removal queue is full: the copy '%s' stays in the tier",
                         s->copy.s);
            free(s);
        } else {
            s->next = srv->stale;
            srv->stale = s;
            srv->nstale++;
        }
    }
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
    if (add != NULL)
        srv_cluster_report(srv, add, arg);
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
            srv_tkey_t copy;

            do_drop_obj(srv, o, &copy);
            srv->sp.expired++;
            do_tier_forget(srv, &copy);
        }
        if (!srv->stop_maint)
            do_cluster_share_queued(srv); /* before removals: a new version first */
        if (!srv->stop_maint)
            do_retry_stale(srv);
        /* Below the watermark: spill LRU-first; stop at the first failure
         * (the next period retries: a tier that is back resumes spilling). */
        while (!srv->stop_maint && !srv->shutting_down && srv->tier != NULL &&
               srv->low_watermark > 0 && srv->ready == srv->nchunks) {
            pool_stats_t st;
            pool_get_stats(srv->pools[HOST_POOL], &st);
            if (st.free >= srv->low_watermark || (o = objs_lru(srv->objs)) == NULL)
                break;
            if (!do_drop_if_expired(srv, o) && do_spill(srv, o) != 0)
                break;
        }
    }
    srv->stale_retry_ns = 0; /* one last try at what is queued */
    do_cluster_share_queued(srv);
    do_retry_stale(srv);
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}
