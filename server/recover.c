/*
 * recover.c - named objects across a restart of the daemon: reconcile the
 * tier at start, persist resident objects at a clean exit.
 *
 * Owns: srv_reconcile and srv_persist_objects, and nothing that outlives them.
 * Reconcile (srv_create, from srv_spill_open): every copy the tier lists is
 * checked: damaged ones (the tier removed them), names that are not the
 * daemon's ("UID/GEN/KEY", spill.c), metadata it cannot read, expired copies,
 * and older generations of a key that has a newer copy are removed; every
 * other copy becomes a SPILLED object again with its key, size, TTL (from the
 * absolute expiry stored with it) and owner uid, and generations go on past
 * the largest found (and past the wall clock in microseconds, so that they
 * grow across restarts even when the tier is empty).  One summary line at
 * info (warn when a copy was damaged), one debug line per copy removed.  A
 * tier holding more objects than --max-objects stops the start: nothing is
 * removed for it.
 * Persist (main.c, at a clean exit, after the last call and session): spill
 * every RESIDENT object, least recently used first, with a progress line each
 * second.  Bounded: a SIGTERM or SIGINT while it runs stops it after the
 * object in flight (at most the tier's own timeout), and so do three tier
 * failures in a row; what was not written then is lost, and the log says how
 * much.
 * Never: runs while calls are served (reconcile: before any thread exists;
 * persist: after rpc and sessions stopped, the maintenance thread may run).
 * Locking: srv_reconcile runs before any other thread exists and takes no
 * lock (the tier's list callback must not take srv->lock: the tier's index
 * lock is held around it).  srv_persist_objects holds srv->lock except in
 * do_spill, which drops it around each put.
 */
#include "srv_int.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pinpool.h"

/* ---- reconcile -------------------------------------------------------------------- */

struct loser {
    struct loser *next;
    size_t len;
    char name[];
};

struct recon {
    srv_t *srv;
    uint64_t wall_ms, mono;
    uint32_t recovered, damaged, expired, older, foreign;
    uint64_t bytes;
    struct loser *losers; /* copies to remove once the listing is done */
    int rc;
    char *err;
    size_t errlen;
};

static uint64_t wall_us(void)
{
    struct timespec t;

    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

/* Remember a copy to remove; why for the debug line. */
static int lose(struct recon *r, const void *name, size_t len, const char *why)
{
    struct loser *l = malloc(sizeof(*l) + len + 1);

    srv_debug("spill tier: removing %.*s: %s", (int)len, (const char *)name, why);
    if (l == NULL) {
        snprintf(r->err, r->errlen, "spill tier: out of memory while reconciling");
        return r->rc = -ENOMEM;
    }
    memcpy(l->name, name, len);
    l->name[len] = '\0';
    l->len = len;
    l->next = r->losers;
    r->losers = l;
    return 0;
}

/* The monotonic expiry of a wall-clock one (0 none, UINT64_MAX never). */
static uint64_t mono_expiry(const struct recon *r, uint64_t exp_ms)
{
    uint64_t left_ms;

    if (exp_ms == 0 || exp_ms == UINT64_MAX)
        return exp_ms;
    left_ms = exp_ms - r->wall_ms; /* > 0: expired copies never get here */
    if (left_ms > (UINT64_MAX - r->mono) / 1000000u)
        return UINT64_MAX;
    return r->mono + left_ms * 1000000u;
}

static int on_copy(const tier_entry_t *e, void *arg)
{
    struct recon *r = arg;
    srv_t *srv = r->srv;
    char key[OBJ_KEY_MAX + 1], msg[128], size[32];
    uint32_t uid;
    uint64_t gen, exp_ms;
    obj_t *o;
    int rc;

    if (e->damage != NULL) { /* the tier removed it */
        r->damaged++;
        srv_debug("spill tier: removed %s: %s", e->where, e->damage);
        return 0;
    }
    if (srv_tier_key_parse(e->key, e->keylen, &uid, &gen, key) != 0 ||
        srv_check_name("key", key, OBJ_KEY_MAX, msg, sizeof(msg)) != 0 ||
        srv_tier_meta_parse(e->meta, e->metalen, &exp_ms) != 0) {
        r->foreign++;
        return lose(r, e->key, e->keylen, "not a copy the daemon made (name or metadata)");
    }
    if (exp_ms != 0 && exp_ms <= r->wall_ms) {
        r->expired++;
        return lose(r, e->key, e->keylen, "its TTL passed");
    }
    o = objs_find(srv->objs, uid, key);
    if (o != NULL && o->gen > gen) {
        r->older++;
        return lose(r, e->key, e->keylen, "an older generation of a key with a newer copy");
    }
    if (o != NULL) {
        srv_tkey_t old;

        do_tier_key(o, &old);
        r->older++;
        r->recovered--;
        r->bytes -= o->size;
        objs_remove(srv->objs, o);
        if (lose(r, old.s, old.len, "an older generation of a key with a newer copy") != 0)
            return r->rc;
    }
    rc = objs_insert_spilled(srv->objs, key, uid, gen, e->size, mono_expiry(r, exp_ms), NULL);
    if (rc != 0) {
        if (rc == PINPOOL_ENOSPC)
            snprintf(r->err, r->errlen, "spill tier: it holds more objects than --max-objects "
                     "%" PRIu32 " (found at %s); raise --max-objects to keep them, nothing "
                     "was removed", objs_max(srv->objs), e->where);
        else
            snprintf(r->err, r->errlen, "spill tier: cannot recover '%s': %s", key,
                     pinpool_strerror(rc));
        return r->rc = rc;
    }
    r->recovered++;
    r->bytes += e->size;
    srv_debug("spill tier: recovered '%s' (%s, uid %" PRIu32 ", generation %" PRIx64 ")", key,
              pool_format_size(e->size, size, sizeof(size)), uid, gen);
    return 0;
}

int srv_reconcile(srv_t *srv, char *err, size_t errlen)
{
    struct recon r = {.srv = srv, .wall_ms = wall_us() / 1000u, .mono = mono_ns(), .err = err,
                      .errlen = errlen};
    uint32_t removed;
    char size[32];
    int rc = 0;

    if (srv->tier != NULL) {
        rc = tier_list(srv->tier, on_copy, &r);
        if (rc != 0 && r.rc == 0) /* the tier's own failure */
            snprintf(err, errlen, "spill tier: cannot list its objects: %s%s%s",
                     pinpool_strerror(rc), tier_errmsg()[0] ? ": " : "", tier_errmsg());
    }
    while (r.losers != NULL) {
        struct loser *l = r.losers;

        r.losers = l->next;
        if (rc == 0) {
            int rr = tier_remove(srv->tier, l->name, l->len);

            if (rr != 0 && rr != PINPOOL_ENOKEY)
                srv_warn("spill tier: cannot remove %s: %s%s%s", l->name, pinpool_strerror(rr),
                         tier_errmsg()[0] ? ": " : "", tier_errmsg());
        }
        free(l);
    }
    /* Later generations are larger than every one found and than now in µs. */
    objs_seed_gen(srv->objs, wall_us());
    if (rc != 0 || srv->tier == NULL)
        return rc;
    removed = r.damaged + r.expired + r.older + r.foreign;
    if (r.recovered == 0 && removed == 0)
        return 0;
    srv_log(r.damaged > 0 ? SRV_LOG_WARN : SRV_LOG_INFO,
        "spill tier: %" PRIu32 " objects recovered (%s); %" PRIu32 " copies removed (%" PRIu32
        " damaged, %" PRIu32 " expired, %" PRIu32 " older generations, %" PRIu32
        " not the daemon's)%s", r.recovered, pool_format_size(r.bytes, size, sizeof(size)),
        removed, r.damaged, r.expired, r.older, r.foreign,
        removed > 0 ? "; --log-level debug names them" : "");
    return 0;
}

/* ---- persist at exit ------------------------------------------------------------- */

static volatile sig_atomic_t persist_stop;

static void on_stop_signal(int sig)
{
    (void)sig;
    persist_stop = 1;
}

void srv_persist_objects(srv_t *srv)
{
    struct sigaction sa = {.sa_handler = on_stop_signal, .sa_flags = SA_RESTART}, old_term,
                     old_int;
    objs_stats_t st;
    uint32_t n, done = 0, fails = 0;
    uint64_t bytes, done_bytes = 0, t0 = mono_ns(), next = t0 + 1000000000ull;
    char a[32], b[32];
    obj_t *o;

    if (srv == NULL || srv->tier == NULL)
        return;
    pthread_mutex_lock(&srv->lock);
    objs_get_stats(srv->objs, &st);
    n = st.count[OBJ_RESIDENT];
    bytes = st.bytes[OBJ_RESIDENT];
    if (n == 0) {
        pthread_mutex_unlock(&srv->lock);
        return;
    }
    srv_info("persisting %" PRIu32 " resident objects (%s) to the spill tier before exit; "
             "SIGTERM or SIGINT again stops this, and the objects not yet written are lost", n,
             pool_format_size(bytes, a, sizeof(a)));
    persist_stop = 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGINT, &sa, &old_int);
    for (uint32_t i = 0; i < n && !persist_stop && fails < 3; i++) {
        uint64_t size;

        o = objs_lru(srv->objs); /* a failed spill goes to the other end */
        if (o == NULL)
            break;
        size = o->size;
        if (do_spill(srv, o) == 0) {
            done++;
            done_bytes += size;
            fails = 0;
        } else {
            fails++;
        }
        if (mono_ns() >= next) {
            srv_info("persisting: %" PRIu32 " of %" PRIu32 " objects written (%s of %s)", done,
                     n, pool_format_size(done_bytes, a, sizeof(a)),
                     pool_format_size(bytes, b, sizeof(b)));
            next += 1000000000ull;
        }
    }
    srv->stale_retry_ns = 0;
    do_retry_stale(srv); /* removals that failed before: once more */
    objs_get_stats(srv->objs, &st);
    pthread_mutex_unlock(&srv->lock);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGINT, &old_int, NULL);
    if (st.count[OBJ_RESIDENT] == 0)
        srv_info("persisted %" PRIu32 " objects (%s) in %.1f s", done,
                 pool_format_size(done_bytes, a, sizeof(a)), (double)(mono_ns() - t0) / 1e9);
    else
        srv_warn("persisted %" PRIu32 " objects (%s); %" PRIu32 " (%s) were not written and are "
                 "lost: %s", done, pool_format_size(done_bytes, a, sizeof(a)),
                 st.count[OBJ_RESIDENT], pool_format_size(st.bytes[OBJ_RESIDENT], b, sizeof(b)),
                 persist_stop ? "stopped by a signal" : srv->sp.last_error);
}
