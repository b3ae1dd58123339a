/*
 * handover.c - the daemon's state handed to its successor (`pinpool serve
 * --takeover`, server/takeover.c speaks the protocol): the gate that pauses
 * the gRPC calls, what cannot be handed over, and the state written into
 * one blob with the chunks' descriptors (handover_load.c makes it again in
 * the new daemon's srv, checked).
 *
 * Owns: srv->paused, srv->in_calls, srv->pause_stopped_cleaner; the blob's
 * format (HO_MAGIC, HO_VERSION in srv_int.h; a blob of another version is
 * refused).
 * Never: writes the pool's memory, or calls the tier (its claim, a file
 * tier's lock, is handed over with the objects; a tier without one is
 * refused).
 * Locking: srv->lock around every read and change of the state, as the other
 * rooms do.  srv_handover_pause drops it while it waits for calls in flight
 * (polling, 1 ms at a time) and while it stops the cleaner (a join).
 *
 * What the blob holds: the geometry (every host chunk and its tenant: the
 * new daemon must have the same), the clients (sessions with their id, token
 * and peer; detached clients; kept slices' clients with their makers), each
 * client's and each uid's charge as the old daemon had them, the host pool's
 * live slices and dirty extents (pool_save_each), the vmm device pools
 * (layout, chunk tenants, slices; their chunks' exported descriptors follow
 * the host chunks' among the fds), the objects (RESIDENT or SPILLED: the
 * pause waits until none spills or restores) and the tier copies queued for
 * removal.  The new daemon rebuilds the pools
 * exactly (pool_restore_*), then the charges from what it rebuilt - each
 * slice charged to its holder (and a kept slice's maker), each object to its
 * uid and its maker - and compares them with the old daemon's: any
 * difference aborts the takeover.
 */
#include "srv_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "host_memfd.h"
#include "log.h"
#include "pinpool.h"


/* ---- the gate ------------------------------------------------------------------------ */

int srv_gate_enter(srv_t *srv)
{
    int rc = 0;

    pthread_mutex_lock(&srv->lock);
    if (srv->paused)
        rc = PINPOOL_EUPGRADE;
    else
        srv->in_calls++;
    pthread_mutex_unlock(&srv->lock);
    return rc;
}

void srv_gate_leave(srv_t *srv)
{
    pthread_mutex_lock(&srv->lock);
    srv->in_calls--;
    pthread_mutex_unlock(&srv->lock);
}

/* ---- what cannot be handed over ------------------------------------------------------ */

int srv_handover_check(srv_t *srv, char *msg, size_t msglen)
{
    int rc = 0;

    pthread_mutex_lock(&srv->lock);
    bool ipc_pool = false;
    for (uint32_t i = 0; i < srv->ndevs; i++)
        ipc_pool = ipc_pool || srv->devs[i].backend != IPC_DEV_VMM;
    if (ipc_pool)
        snprintf(msg, msglen, "it has a device pool on legacy CUDA IPC handles "
                 "(--device-backend ipc): a cudaIpc handle dies with the process that made "
                 "it, so its slices cannot be handed over (vmm device pools can)");
    else if (srv->host != &ipc_host_memfd)
        snprintf(msg, msglen, "its host backend is %s: only memfd chunks are handed over "
                 "(their descriptors carry the memory; %s)", srv->host->name,
                 srv->host == &ipc_host_hugetlb ? "hugetlb pools are not handed over yet"
                 : "pinned CUDA memory dies with the process that registered it");
    else if (srv->cluster != NULL)
        snprintf(msg, msglen, "it is a node of --cluster %s: cluster records are not handed "
                 "over", srv->cfg.cluster);
    else if (srv->cfg.gms[0] != '\0')
        snprintf(msg, msglen, "it serves GPU Memory Service sockets (--gms %s): their "
                 "connections and allocations are not handed over yet", srv->cfg.gms);
    else if (srv->cfg.listen[0] != '\0' || srv->cfg.metrics[0] != '\0')
        snprintf(msg, msglen, "it listens on TCP (%s%s%s): TCP ports are not handed over yet",
                 srv->cfg.listen[0] ? "--listen " : "--metrics ",
                 srv->cfg.listen[0] ? srv->cfg.listen : srv->cfg.metrics, "");
    else if (srv->tier != NULL && tier_claim_fd(srv->tier) < 0)
        snprintf(msg, msglen, "it has a %s spill tier, which is not handed over (a file tier "
                 "is)", tier_scheme(srv->tier));
    else if (srv->ready < srv->nchunks)
        snprintf(msg, msglen, "its pool is still being made (%" PRIu32 " of %" PRIu32
                 " chunks); try again when it is ready", srv->ready, srv->nchunks);
    else if (srv->shutting_down)
        snprintf(msg, msglen, "it is shutting down");
    else if (srv->paused)
        snprintf(msg, msglen, "another takeover is in progress");
    else
        msg[0] = '\0';
    if (msg[0] != '\0')
        rc = PINPOOL_EINVAL;
    pthread_mutex_unlock(&srv->lock);
    return rc;
}

/* ---- pause and resume ------------------------------------------------------------------ */

int srv_handover_pause(srv_t *srv, uint32_t wait_ms, char *msg, size_t msglen)
{
    uint64_t deadline = mono_ns() + (uint64_t)wait_ms * 1000000u;
    struct timespec ms = {0, 1000000};
    objs_stats_t st;

    pthread_mutex_lock(&srv->lock);
    srv->paused = true;
    for (;;) {
        objs_get_stats(srv->objs, &st);
        bool moving = st.count[OBJ_SPILLING] + st.count[OBJ_RESTORING] > 0;
        if (srv->in_calls == 0 && srv->spilling_now == 0 && !moving)
            break;
        if (mono_ns() >= deadline) {
            snprintf(msg, msglen, "%" PRIu32 " call%s still in flight after %" PRIu32 " ms",
                     srv->in_calls, srv->in_calls == 1 ? "" : "s", wait_ms);
            srv->paused = false;
            pthread_mutex_unlock(&srv->lock);
            return PINPOOL_ETIMEOUT;
        }
        pthread_mutex_unlock(&srv->lock);
        nanosleep(&ms, NULL);
        pthread_mutex_lock(&srv->lock);
    }
    srv->pause_stopped_cleaner = srv->cleaner_started;
    srv->pause_stopped_maint = srv->maint_started;
    pthread_mutex_unlock(&srv->lock);
    /* The cleaner writes the pool's memory and the maintenance thread the
     * tier (spills, expiries, removals): after the hand-over both are the new
     * daemon's, so ours stop (work in flight finishes first). */
    if (srv->pause_stopped_cleaner)
        srv_cleaner_stop(srv);
    if (srv->pause_stopped_maint)
        srv_maint_stop(srv);
    return 0;
}

void srv_handover_resume(srv_t *srv)
{
    bool restart, maint;

    pthread_mutex_lock(&srv->lock);
    restart = srv->pause_stopped_cleaner;
    maint = srv->pause_stopped_maint;
    srv->pause_stopped_cleaner = srv->pause_stopped_maint = false;
    srv->stop_cleaner = false;
    pthread_mutex_unlock(&srv->lock);
    if (restart)
        srv_cleaner_start(srv);
    if (maint)
        srv_maint_start(srv);
    pthread_mutex_lock(&srv->lock);
    srv->paused = false;
    pthread_mutex_unlock(&srv->lock);
}

/* ---- the blob ---------------------------------------------------------------------- */

typedef struct wbuf {
    unsigned char *p;
    size_t len, cap;
    bool failed;
} wbuf_t;

static void put(wbuf_t *w, const void *data, size_t n)
{
    if (w->failed || n == 0)
        return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + n)
            cap *= 2;
        unsigned char *p = realloc(w->p, cap);
        if (p == NULL) {
            w->failed = true;
            return;
        }
        w->p = p;
        w->cap = cap;
    }
    memcpy(w->p + w->len, data, n);
    w->len += n;
}

static void put64(wbuf_t *w, uint64_t v)
{
    put(w, &v, sizeof(v));
}

static void put_str(wbuf_t *w, const char *s)
{
    size_t n = strlen(s);

    put64(w, n);
    put(w, s, n);
}

/* ---- save (the daemon handing over) --------------------------------------------------- */

static void save_slice(const pool_saved_t *s, void *arg)
{
    wbuf_t *w = arg;

    put64(w, s->info.id);
    put64(w, s->info.owner);
    put64(w, s->info.tenant);
    put64(w, s->info.offset);
    put64(w, s->info.size);
    put64(w, s->info.extent);
    put64(w, (uint64_t)s->unwritten | (uint64_t)s->dirty << 1);
}

typedef struct span_list {
    pool_saved_t *v;
    size_t n, cap;
    bool failed;
} span_list_t;

static void list_span(const pool_saved_t *s, void *arg)
{
    span_list_t *l = arg;

    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        pool_saved_t *v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL) {
            l->failed = true;
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = *s;
}

static int by_offset(const void *a, const void *b)
{
    const pool_saved_t *x = a, *y = b;

    return x->info.offset < y->info.offset ? -1 : x->info.offset > y->info.offset;
}

/* No two slices or dirty extents of pool overlap (pool_check looks at the
 * free extents; the rebuild needs the slices disjoint).  0, or
 * PINPOOL_EINTERNAL naming two that overlap. */
static int check_disjoint(const pool_t *pool, const char *what, char *msg, size_t msglen)
{
    span_list_t l = {0};
    int rc = 0;

    pool_save_each(pool, list_span, &l);
    if (l.failed) {
        free(l.v);
        return -ENOMEM;
    }
    if (l.n > 1) /* qsort's base must not be NULL, even for nothing */
        qsort(l.v, l.n, sizeof(*l.v), by_offset);
    for (size_t i = 1; i < l.n && rc == 0; i++) {
        const pool_slice_info_t *p = &l.v[i - 1].info, *q = &l.v[i].info;
        if (p->offset + p->extent > q->offset) {
            snprintf(msg, msglen, "the %s pool is inconsistent: %s %" PRIu64 " [%" PRIu64
                     ", +%" PRIu64 ") overlaps %s %" PRIu64 " [%" PRIu64 ", +%" PRIu64 ")",
                     what, l.v[i - 1].dirty ? "dirty extent" : "slice", p->id, p->offset,
                     p->extent, l.v[i].dirty ? "dirty extent" : "slice", q->id, q->offset,
                     q->extent);
            rc = PINPOOL_EINTERNAL;
        }
    }
    free(l.v);
    return rc;
}

static void count_slice(const pool_saved_t *s, void *arg)
{
    (void)s;
    ++*(uint64_t *)arg;
}

typedef struct obj_list {
    const obj_t **v;
    size_t n, cap;
    bool failed;
} obj_list_t;

static void list_obj(const obj_t *o, void *arg)
{
    obj_list_t *l = arg;

    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        const obj_t **v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL) {
            l->failed = true;
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = o;
}

static int by_last_use(const void *a, const void *b)
{
    const obj_t *x = *(const obj_t *const *)a, *y = *(const obj_t *const *)b;

    return x->last_use < y->last_use ? -1 : x->last_use > y->last_use;
}

static void count_stale(const srv_tkey_t *copy, void *arg)
{
    (void)copy;
    ++*(uint64_t *)arg;
}

static void save_stale(const srv_tkey_t *copy, void *arg)
{
    put64(arg, copy->len);
    put(arg, copy->s, copy->len);
}

static void count_uid(uid_t uid, uint64_t charge, void *arg)
{
    (void)uid;
    (void)charge;
    ++*(uint64_t *)arg;
}

static void save_uid(uid_t uid, uint64_t charge, void *arg)
{
    put64(arg, uid);
    put64(arg, charge);
}

static void save_client(wbuf_t *w, const struct srv_client *c)
{
    put_str(w, c->id);
    put64(w, c->owner);
    put64(w, c->uid);
    put64(w, (uint64_t)c->session | (uint64_t)c->kept << 1);
    put64(w, c->maker);
    put64(w, c->charge);
    put64(w, (uint64_t)(uint32_t)c->cred.pid);
    put64(w, c->cred.uid);
    put64(w, c->cred.gid);
    put(w, c->token, sizeof(c->token));
}

/* The vmm device pools: each one's layout, chunks (their descriptors into
 * fds, in order) and tenants, and its slices; the device pools' owner. */
static int save_devices(srv_t *srv, wbuf_t *w, int *fds, char *msg, size_t msglen)
{
    put64(w, srv->ndevs);
    put64(w, srv->dev_uid_set);
    put64(w, srv->dev_uid);
    for (uint32_t d = 0; d < srv->ndevs; d++) {
        const ipc_devmem_t *dm = &srv->devs[d];
        pool_t *pool = srv->pools[1 + d];
        uint64_t n = 0;
        put64(w, (uint64_t)dm->device);
        put64(w, dm->chunk_size);
        put64(w, dm->align);
        put64(w, dm->nchunks);
        put64(w, pool_next_id(pool));
        for (uint32_t i = 0; i < dm->nchunks; i++) {
            pool_chunk_info_t ci;
            if (pool_chunk_info(pool, i, &ci) != 0 || ci.claimed || dm->chunks[i].fd < 0) {
                snprintf(msg, msglen, "GPU %d: chunk %" PRIu32 " is not settled", dm->device, i);
                return PINPOOL_EBUSY;
            }
            put64(w, ci.tenant);
            *fds++ = dm->chunks[i].fd;
        }
        if (pool_save_each(pool, count_slice, &n) != 0) {
            snprintf(msg, msglen, "GPU %d: its pool is not settled", dm->device);
            return PINPOOL_EBUSY;
        }
        put64(w, n);
        pool_save_each(pool, save_slice, w);
    }
    return 0;
}

int srv_handover_save(srv_t *srv, void **blob, size_t *len, int **fds, uint32_t *nfds,
                      int *tier_fd, char *msg, size_t msglen)
{
    pool_t *host = srv->pools[HOST_POOL];
    obj_list_t objs = {0};
    wbuf_t w = {0};
    uint64_t nslices = 0, nclients = 0, nuids = 0;
    int *out = NULL;
    int rc = 0;

    pthread_mutex_lock(&srv->lock);
    if (!srv->paused) {
        snprintf(msg, msglen, "internal: the state is saved only while paused");
        rc = PINPOOL_EINTERNAL;
        goto out;
    }
    /* What is handed over must be whole: the pools pass their own checks. */
    for (uint32_t i = 0; i <= srv->ndevs; i++) {
        char pmsg[256];
        if (pool_check(srv->pools[i], pmsg, sizeof(pmsg)) != 0) {
            snprintf(msg, msglen, "the %s pool fails its own checks: %s",
                     i == 0 ? "host" : "device", pmsg);
            rc = PINPOOL_EINTERNAL;
            goto out;
        }
        rc = check_disjoint(srv->pools[i], i == 0 ? "host" : "device", msg, msglen);
        if (rc != 0)
            goto out;
    }
    rc = pool_save_each(host, count_slice, &nslices);
    if (rc != 0) {
        snprintf(msg, msglen, "the host pool is not settled (a chunk passing to another uid, "
                 "or memory being cleaned)");
        goto out;
    }
    uint32_t total = srv->nchunks;
    for (uint32_t i = 0; i < srv->ndevs; i++)
        total += srv->devs[i].nchunks;
    out = calloc(total, sizeof(*out));
    if (out == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    put64(&w, HO_MAGIC);
    put64(&w, HO_VERSION);
    put64(&w, srv->capacity);
    put64(&w, srv->cfg.chunk_size);
    put64(&w, srv->nchunks);
    put_str(&w, srv->host->name);
    put64(&w, srv->obj_owner);
    put64(&w, srv->next_owner);
    put64(&w, pool_next_id(host));
    put64(&w, objs_last_gen(srv->objs));
    put64(&w, srv->replacements);
    put64(&w, (uint64_t)(srv->chunks_seconds * 1e9));
    for (uint32_t i = 0; i < srv->nchunks; i++) {
        pool_chunk_info_t ci;
        if (pool_chunk_info(host, i, &ci) != 0 || ci.claimed) {
            snprintf(msg, msglen, "chunk %" PRIu32 " is not settled", i);
            rc = PINPOOL_EBUSY;
            goto out;
        }
        put64(&w, ci.tenant);
        out[i] = srv->chunks[i].fd;
    }
    /* Clients: every one is in srv->owners. */
    for (size_t b = 0; b < srv->owners.nb; b++)
        for (const struct srv_client *c = srv->owners.b[b]; c != NULL; c = c->next_owner)
            nclients++;
    put64(&w, nclients);
    for (size_t b = 0; b < srv->owners.nb; b++)
        for (const struct srv_client *c = srv->owners.b[b]; c != NULL; c = c->next_owner)
            save_client(&w, c);
    do_each_uid_charge(srv, count_uid, &nuids);
    put64(&w, nuids);
    do_each_uid_charge(srv, save_uid, &w);
    put64(&w, nslices);
    pool_save_each(host, save_slice, &w);
    rc = save_devices(srv, &w, out + srv->nchunks, msg, msglen);
    if (rc != 0)
        goto out;
    objs_foreach(srv->objs, list_obj, &objs);
    if (objs.failed) {
        rc = -ENOMEM;
        goto out;
    }
    if (objs.n > 1) /* least recently used first */
        qsort(objs.v, objs.n, sizeof(*objs.v), by_last_use);
    put64(&w, objs.n);
    for (size_t i = 0; i < objs.n; i++) {
        const obj_t *o = objs.v[i];
        if ((o->state != OBJ_RESIDENT && o->state != OBJ_SPILLED) || o->pins != 0) {
            snprintf(msg, msglen, "object '%s' is %s: not settled", o->key,
                     objs_state_name(o->state));
            rc = PINPOOL_EBUSY;
            goto out;
        }
        put_str(&w, o->key);
        put64(&w, o->uid);
        put64(&w, o->gen);
        put64(&w, o->size);
        put64(&w, o->slice);
        put64(&w, o->expires_ns);
        put64(&w, o->charged_to);
        put64(&w, (uint64_t)o->state | (uint64_t)o->in_tier << 8);
    }
    /* The tier copies whose removal is queued: the new daemon removes them. */
    uint64_t nstale = 0;
    do_each_stale(srv, count_stale, &nstale);
    put64(&w, nstale);
    do_each_stale(srv, save_stale, &w);
    put64(&w, HO_MAGIC);
    if (w.failed)
        rc = -ENOMEM;

out:
    pthread_mutex_unlock(&srv->lock);
    free(objs.v);
    if (rc != 0) {
        if (msg[0] == '\0')
            snprintf(msg, msglen, "cannot save the state: %s", pinpool_strerror(rc));
        free(w.p);
        free(out);
        return rc;
    }
    *blob = w.p;
    *len = w.len;
    *fds = out;
    *nfds = total;
    *tier_fd = srv->tier != NULL ? tier_claim_fd(srv->tier) : -1;
    return 0;
}
