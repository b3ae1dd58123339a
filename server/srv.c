/*
 * srv.c - the daemon's state (see srv.h for what it owns and its lock).
 *
 * Kept slices belong to a client named "kept:<tag>" (sessions.c).  Any client
 * may attach, map and free a kept slice.
 *
 * Pools.  pools[0] is the host pool, pools[k] the device pool of devs[k - 1].
 * A slice id carries its pool's index in its top bits (SRV_POOL_SHIFT).
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
 * Chunks: chunks.c.  Clients and sessions: sessions.c.  struct srv and the
 * lock rules: srv_int.h.
 */
#include "srv_int.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cudaload.h"
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

/* --devices / --device-pool-size: one pool per GPU. */
static int make_device_pools(srv_t *srv, char *err, size_t errlen)
{
    int list[SRV_MAX_DEVICES], n = 0;
    char msg[256];
    int rc;

    if (srv->cfg.device_pool_size == 0)
        return 0;
    rc = ipc_cuda_load(msg, sizeof(msg));
    if (rc != 0) {
        snprintf(err, errlen, "--device-pool-size needs a GPU: %s", msg);
        return rc;
    }
    if (strcmp(srv->cfg.devices, "all") == 0) {
        for (n = 0; n < ipc_cuda_device_count() && n < SRV_MAX_DEVICES; n++)
            list[n] = n;
    } else {
        char copy[sizeof(srv->cfg.devices)], *save = NULL;
        snprintf(copy, sizeof(copy), "%s", srv->cfg.devices);
        for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
            char *end;
            long d = strtol(t, &end, 10);
            if (*end != '\0' || d < 0 || d >= ipc_cuda_device_count() || n == SRV_MAX_DEVICES) {
                snprintf(err, errlen, "--devices: '%s' is not a GPU here (%d visible: 0..%d)", t,
                         ipc_cuda_device_count(), ipc_cuda_device_count() - 1);
                return PINPOOL_ENODEV;
            }
            for (int i = 0; i < n; i++)
                if (list[i] == (int)d) {
                    snprintf(err, errlen, "--devices: GPU %ld is listed twice", d);
                    return PINPOOL_EINVAL;
                }
            list[n++] = (int)d;
        }
    }
    for (int i = 0; i < n; i++) {
        pool_params_t params = {
            .chunk_size = srv->cfg.device_pool_size,
            .max_chunks = 1,
            .quantum = 256,
            .allow_multi_chunk = false,
        };
        rc = ipc_devmem_create(&srv->devs[i], list[i], srv->cfg.device_pool_size, err, errlen);
        if (rc != 0)
            return rc;
        srv->ndevs++;
        rc = pool_create(&srv->pools[1 + i], &params);
        if (rc == 0)
            rc = pool_add_chunks(srv->pools[1 + i], 1);
        if (rc != 0) {
            snprintf(err, errlen, "cannot create the device pool of GPU %d: %s", list[i],
                     pinpool_strerror(rc));
            return rc;
        }
        char sz[32];
        srv_info("GPU %d (%s): device pool of %s", list[i], srv->devs[i].name,
                 pool_format_size(srv->cfg.device_pool_size, sz, sizeof(sz)));
    }
    return 0;
}

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

    pool_params_t params = {
        .chunk_size = cfg->chunk_size,
        .max_chunks = srv->nchunks,
        .quantum = 256,
        .allow_multi_chunk = true,
    };
    rc = pool_create(&srv->pools[HOST_POOL], &params);
    if (rc != 0) {
        snprintf(err, errlen, "cannot create the pool: %s", pinpool_strerror(rc));
        goto fail;
    }
    rc = srv_chunks_reserve(srv, err, errlen);
    if (rc != 0)
        goto fail;
    rc = make_device_pools(srv, err, errlen);
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
    for (uint32_t i = 0; i < srv->ndevs; i++)
        ipc_devmem_destroy(&srv->devs[i]);
    srv_clients_close(srv);
    for (uint32_t i = 0; i <= SRV_MAX_DEVICES; i++)
        pool_destroy(srv->pools[i]);
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

/* ---- slices across pools (lock held) ----------------------------------------------- */

/* Bytes and slices owner holds in every pool. */
uint64_t do_owner_bytes(srv_t *srv, uint64_t owner, uint32_t *slices, uint64_t *device_bytes)
{
    uint64_t host = 0, dev = 0;
    uint32_t n = 0;

    for (uint32_t i = 0; i <= srv->ndevs; i++) {
        uint32_t k = 0;
        uint64_t b = pool_owner_bytes(srv->pools[i], owner, &k);
        if (i == HOST_POOL)
            host = b;
        else
            dev += b;
        n += k;
    }
    if (slices != NULL)
        *slices = n;
    if (device_bytes != NULL)
        *device_bytes = dev;
    return host + dev;
}

uint32_t do_free_owner(srv_t *srv, uint64_t owner, uint64_t *bytes)
{
    uint32_t n = 0;

    *bytes = 0;
    for (uint32_t i = 0; i <= srv->ndevs; i++) {
        uint64_t b = 0;
        int k = pool_free_owner(srv->pools[i], owner, &b);
        *bytes += b;
        n += k > 0 ? (uint32_t)k : 0;
    }
    return n;
}


static uint64_t global_id(uint32_t pool, uint64_t local)
{
    return ((uint64_t)pool << SRV_POOL_SHIFT) | local;
}

/* The pool index of a daemon-wide id, or -1 if it names no pool. */
static int pool_of(const srv_t *srv, uint64_t id)
{
    uint64_t p = id >> SRV_POOL_SHIFT;

    return p <= srv->ndevs ? (int)p : -1;
}

static int do_lookup(srv_t *srv, uint64_t id, int *pool, pool_slice_info_t *info)
{
    *pool = pool_of(srv, id);
    if (*pool < 0)
        return PINPOOL_ENOENT;
    return pool_lookup(srv->pools[*pool], id & ((1ull << SRV_POOL_SHIFT) - 1), info);
}

/* The pool of device_id (-1: host), or -1 with msg. */
static int pool_for_device(const srv_t *srv, int32_t device_id, char *msg, size_t msglen)
{
    if (device_id == -1)
        return HOST_POOL;
    for (uint32_t i = 0; i < srv->ndevs; i++)
        if (srv->devs[i].device == device_id)
            return (int)i + 1;
    if (srv->ndevs == 0)
        snprintf(msg, msglen, "device %" PRId32 ": this daemon has no device pool (host slices "
                 "use device_id -1; start it with --device-pool-size)", device_id);
    else
        snprintf(msg, msglen, "device %" PRId32 ": no device pool on that GPU (see --devices)",
                 device_id);
    return -1;
}

static void describe(const srv_t *srv, int pool, const pool_slice_info_t *info, srv_slice_t *out)
{
    memset(out, 0, sizeof(*out));
    out->info = *info;
    out->info.id = global_id((uint32_t)pool, info->id);
    if (pool == HOST_POOL) {
        out->device_id = -1;
        out->memory_ptr = (uint64_t)(uintptr_t)srv->base + info->offset;
    } else {
        const ipc_devmem_t *dm = &srv->devs[pool - 1];
        out->device_id = dm->device;
        out->memory_ptr = dm->base + info->offset;
        memcpy(out->ipc_handle, dm->handle, IPC_HANDLE_BYTES);
    }
}

/* The one slice of a kept client, in *pool / *info. */
typedef struct find_one {
    pool_slice_info_t info;
    bool found;
} find_one_t;

static void take_first(const pool_slice_info_t *slice, void *arg)
{
    find_one_t *f = arg;
    if (!f->found) {
        f->info = *slice;
        f->found = true;
    }
}

static bool do_kept_slice(srv_t *srv, const struct srv_client *c, int *pool, pool_slice_info_t *info)
{
    for (uint32_t i = 0; i <= srv->ndevs; i++) {
        find_one_t f = {.found = false};
        pool_foreach_slice(srv->pools[i], c->owner, false, take_first, &f);
        if (f.found) {
            *pool = (int)i;
            *info = f.info;
            return true;
        }
    }
    return false;
}

static bool do_make_room(srv_t *srv);

/* ---- the calls ------------------------------------------------------------------ */

static void explain_alloc_error(srv_t *srv, int pool, int rc, uint64_t size, uint64_t alignment,
                                char *msg, size_t msglen)
{
    pool_stats_t st;
    char a[32], b[32], c[32], d[32], where[32] = "";

    pool_get_stats(srv->pools[pool], &st);
    pool_format_size(size, a, sizeof(a));
    if (pool != HOST_POOL)
        snprintf(where, sizeof(where), " on GPU %d", srv->devs[pool - 1].device);
    switch (rc) {
    case PINPOOL_EINVAL:
        snprintf(msg, msglen, "size_bytes must be greater than 0");
        break;
    case PINPOOL_ETOOBIG:
        snprintf(msg, msglen, "cannot allocate %s%s: the whole pool is %s", a, where,
                 pool_format_size(st.capacity, b, sizeof(b)));
        break;
    case PINPOOL_EALIGN:
        snprintf(msg, msglen, "alignment %" PRIu64 " must be a power of two that divides the "
                 "chunk size (%s)", alignment,
                 pool_format_size(pool_chunk_size(srv->pools[pool]), b, sizeof(b)));
        break;
    case PINPOOL_ENOSPC: {
        int n = snprintf(msg, msglen, "cannot allocate %s%s: the largest free extent is %s (%s "
                         "free of %s)", a, where, pool_format_size(st.largest_free, b, sizeof(b)),
                         pool_format_size(st.free, c, sizeof(c)),
                         pool_format_size(st.capacity, d, sizeof(d)));
        if (pool == HOST_POOL && n > 0 && (size_t)n < msglen) {
            objs_stats_t os;
            objs_get_stats(srv->objs, &os);
            n += snprintf(msg + n, msglen - (size_t)n, "; spillable (released, resident): %s in "
                          "%" PRIu32 " object%s; spill tier: %s", pool_format_size(
                              os.bytes[OBJ_RESIDENT], b, sizeof(b)), os.count[OBJ_RESIDENT],
                          os.count[OBJ_RESIDENT] == 1 ? "" : "s",
                          srv->tier != NULL ? tier_scheme(srv->tier) : "none");
            if (srv->sp.last_error[0] != '\0' && n > 0 && (size_t)n < msglen)
                snprintf(msg + n, msglen - (size_t)n, "; last spill error: %s", srv->sp.last_error);
        }
        break;
    }
    default:
        snprintf(msg, msglen, "cannot allocate %s%s: %s", a, where, pinpool_strerror(rc));
        break;
    }
}

int srv_alloc(srv_t *srv, const char *client_id, int32_t device_id, uint64_t size,
              uint64_t alignment, const char *tag, bool keep, srv_slice_t *out, char *msg,
              size_t msglen)
{
    struct srv_client *c;
    char kept_name[SRV_CLIENT_ID_LEN];
    pool_slice_info_t info;
    int pool, rc;

    rc = srv_check_client_id(client_id, msg, msglen);
    if (rc != 0)
        return rc;
    pool = pool_for_device(srv, device_id, msg, msglen);
    if (pool < 0)
        return PINPOOL_ENODEV;
    if (keep) {
        rc = srv_check_name("tag", tag != NULL ? tag : "",
                        SRV_CLIENT_ID_LEN - 1 - strlen(KEPT_PREFIX), msg, msglen);
        if (rc != 0)
            return rc;
        snprintf(kept_name, sizeof(kept_name), KEPT_PREFIX "%s", tag);
    }
    pthread_mutex_lock(&srv->lock);
    for (;;) {
        if (srv->shutting_down) {
            snprintf(msg, msglen, "the daemon is shutting down");
            rc = PINPOOL_ESHUTDOWN;
            break;
        }
        if (keep) {
            if (do_find_client(srv, kept_name) != NULL) {
                snprintf(msg, msglen, "a slice is already kept under tag '%s'", tag);
                rc = PINPOOL_EEXIST;
                break;
            }
            /* The caller must be a client in good standing all the same. */
            rc = do_get_client(srv, client_id, &c, msg, msglen);
            if (rc != 0)
                break;
            do_drop_if_idle(srv, c);
            c = do_add_kept(srv, kept_name);
            if (c == NULL) {
                rc = -ENOMEM;
                break;
            }
        } else {
            rc = do_get_client(srv, client_id, &c, msg, msglen);
            if (rc != 0)
                break;
        }
        if (srv->cfg.client_quota != 0 && !keep &&
            do_owner_bytes(srv, c->owner, NULL, NULL) + size > srv->cfg.client_quota) {
            char a[32], b[32], q[32];
            snprintf(msg, msglen, "client %s would hold %s with this %s; --client-quota is %s",
                     c->id, pool_format_size(do_owner_bytes(srv, c->owner, NULL, NULL) + size, a, sizeof(a)),
                     pool_format_size(size, b, sizeof(b)),
                     pool_format_size(srv->cfg.client_quota, q, sizeof(q)));
            do_drop_if_idle(srv, c);
            rc = PINPOOL_ENOSPC;
            break;
        }
        rc = pool_alloc(srv->pools[pool], c->owner, size, alignment, &info);
        if (rc == 0) {
            describe(srv, pool, &info, out);
            srv_debug("client %s: slice %" PRIx64 " of %" PRIu64 " bytes at %" PRIu64 " tag '%s'",
                      c->id, out->info.id, size, info.offset, tag != NULL ? tag : "");
            break;
        }
        do_drop_if_idle(srv, c); /* c may be gone now */
        /* Released objects can make room: spill one (the lock drops meanwhile,
         * so everything is looked up again) and try again. */
        if (rc == PINPOOL_ENOSPC && pool == HOST_POOL && do_make_room(srv))
            continue;
        /* Not enough room yet: wait for host chunks that are still being made. */
        if (rc != PINPOOL_ENOSPC || pool != HOST_POOL || !do_chunks_coming(srv)) {
            explain_alloc_error(srv, pool, rc, size, alignment, msg, msglen);
            break;
        }
        pthread_cond_wait(&srv->chunks_cv, &srv->lock);
    }
    pthread_mutex_unlock(&srv->lock);
    return rc;
}

int srv_attach(srv_t *srv, const char *client_id, const char *tag, srv_slice_t *out, char *msg,
               size_t msglen)
{
    char kept_name[SRV_CLIENT_ID_LEN];
    struct srv_client *c;
    pool_slice_info_t info;
    int pool, rc;

    rc = srv_check_client_id(client_id, msg, msglen);
    if (rc == 0)
        rc = srv_check_name("tag", tag, SRV_CLIENT_ID_LEN - 1 - strlen(KEPT_PREFIX), msg, msglen);
    if (rc != 0)
        return rc;
    snprintf(kept_name, sizeof(kept_name), KEPT_PREFIX "%s", tag);
    pthread_mutex_lock(&srv->lock);
    c = do_find_client(srv, kept_name);
    if (c == NULL || !do_kept_slice(srv, c, &pool, &info)) {
        snprintf(msg, msglen, "no slice is kept under tag '%s'", tag);
        rc = PINPOOL_ENOENT;
    } else {
        describe(srv, pool, &info, out);
    }
    pthread_mutex_unlock(&srv->lock);
    return rc;
}

int srv_free(srv_t *srv, const char *client_id, uint64_t slice_id, uint64_t *freed_bytes,
             uint32_t *freed_slices, char *msg, size_t msglen)
{
    struct srv_client *c, *owner;
    pool_slice_info_t info;
    int pool, rc = 0;

    *freed_bytes = 0;
    *freed_slices = 0;
    rc = srv_check_client_id(client_id, msg, msglen);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&srv->lock);
    c = do_find_client(srv, client_id);
    if (slice_id == 0) {
        if (c != NULL) {
            *freed_slices = do_free_owner(srv, c->owner, freed_bytes);
            do_drop_if_idle(srv, c);
        }
        pthread_mutex_unlock(&srv->lock);
        return 0;
    }
    if (do_lookup(srv, slice_id, &pool, &info) != 0) {
        snprintf(msg, msglen, "no slice %" PRIu64 " in the pool", slice_id);
        rc = PINPOOL_ENOENT;
        goto out;
    }
    /* Kept slices are anyone's to free; others only their owner's. */
    owner = do_client_of_owner(srv, info.owner);
    if (owner == NULL || (owner != c && !owner->kept)) {
        snprintf(msg, msglen, "slice %" PRIu64 " belongs to another client", slice_id);
        rc = PINPOOL_EPERM;
        goto out;
    }
    rc = pool_free(srv->pools[pool], info.id, info.owner, freed_bytes);
    if (rc == 0)
        *freed_slices = 1;
    do_drop_if_idle(srv, owner);
out:
    if (rc != 0 && msg[0] == '\0')
        snprintf(msg, msglen, "%s", pinpool_strerror(rc));
    pthread_mutex_unlock(&srv->lock);
    return rc;
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

int srv_session_chunk_fds(srv_t *srv, srv_client_t *c, uint64_t slice_id, uint32_t first,
                          uint32_t count, int *fds, char *msg, size_t msglen)
{
    struct srv_client *owner;
    pool_slice_info_t info;
    int pool, rc = 0;

    pthread_mutex_lock(&srv->lock);
    if (do_lookup(srv, slice_id, &pool, &info) != 0 || pool != HOST_POOL) {
        snprintf(msg, msglen, "no host slice %" PRIu64, slice_id);
        rc = PINPOOL_ENOENT;
        goto out;
    }
    owner = do_client_of_owner(srv, info.owner);
    if (owner == NULL || (owner != c && !owner->kept)) {
        snprintf(msg, msglen, "slice %" PRIu64 " belongs to another client", slice_id);
        rc = PINPOOL_EPERM;
    } else if (count == 0 || count > IPC_MAX_FDS || first < info.first_chunk ||
               (uint64_t)first + count > (uint64_t)info.first_chunk + info.nchunks) {
        snprintf(msg, msglen, "chunks %" PRIu32 "+%" PRIu32 " are not those of slice %" PRIu64,
                 first, count, slice_id);
        rc = PINPOOL_EINVAL;
    } else {
        for (uint32_t i = 0; i < count; i++)
            fds[i] = srv->chunks[first + i].fd;
    }
out:
    pthread_mutex_unlock(&srv->lock);
    return rc;
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
static bool do_make_room(srv_t *srv)
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
        explain_alloc_error(srv, HOST_POOL, rc, size, 0, msg, msglen);
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
        describe(srv, HOST_POOL, &info, out);
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
