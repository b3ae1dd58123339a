/*
 * srv_int.h - what the rooms of the daemon's state share: struct srv, the
 * client record, and the helpers that one room calls in another.  Included by
 * the rooms only; every other file uses srv.h.
 *
 * The rooms, each owning the fields marked with its name below:
 *   srv.c       composes them: srv_create/srv_destroy, shutdown, the config
 *               accessors, srv_pool_info
 *   chunks.c    the host backend and the chunks: the threads that make them,
 *               srv_wait_chunks, srv_chunk_progress
 *   slices.c    the pools: alloc, attach and free, kept slices, chunk fds
 *   sessions.c  the client table, sessions and their tokens, srv_authorize,
 *               admission (--allow-uid/--allow-gid, --max-clients)
 *   objstore.c  named objects: Release/Acquire, Put/Get/Exists/Remove
 *   spill.c     the spill tier: spilling, restoring, making room, and the
 *               maintenance thread (TTL expiry, the low watermark)
 *
 * Locking, written down once for every room.
 *   One mutex, srv->lock.  The srv_* functions of srv.h take it themselves
 *   (their callers never hold it), except srv_config, srv_host_backend and
 *   srv_session_token, which read what never changes.  The helpers below
 *   named do_* (memcached's convention) are called with it held and return
 *   with it held; the srv_* helpers below say when they run.
 *   Threads that come in: the gRPC queue threads (service.c: every call on
 *   slices and objects), the libev loop (fdsock.c: sessions and chunk fds;
 *   main.c: start-up progress, shutdown), the metrics HTTP thread
 *   (srv_pool_info), and two kinds started here: the chunk threads
 *   (chunks.c, at start-up) and the maintenance thread (spill.c).
 *   Fields marked (fixed) are set by srv_create before any other thread runs
 *   and never change until srv_destroy: read them without the lock.  Every
 *   other field is read and written under srv->lock only.
 *   Lock order: srv->lock is the outermost lock of the daemon.  Under it a
 *   thread may call pool_* and objs_* (no locks of their own), the log
 *   (stdio's lock), the callback of srv_pool_info, and
 *   tier_scheme/tier_errmsg (no lock); it must never call tier_put, tier_get,
 *   tier_remove or tier_report_stats (they block, and take the tier's own
 *   locks), nor a host backend's chunk_create (it pins gigabytes).
 *
 *   Where the lock is dropped (and taken again before the function returns):
 *     chunk_thread      around chunk_create.
 *     do_spill          around tier_put (the object is SPILLING meanwhile).
 *     do_restore        around tier_get (the object is RESTORING), and inside
 *                       do_alloc_obj.
 *     do_wait_obj       waits on obj_cv (bounded, re-checking every 200 ms).
 *     do_make_room      in do_spill or do_wait_obj.
 *     do_alloc_obj      in do_make_room, or waiting on chunks_cv.
 *     do_settled        in do_wait_obj.
 *     srv_alloc         in do_make_room, or waiting on chunks_cv.
 *     srv_acquire       in do_settled and do_restore; srv_tier_forget runs
 *                       after the unlock.
 *     srv_obj_put       in do_settled and do_alloc_obj; the same
 *                       srv_tier_forget.
 *     srv_obj_get       in do_settled; reads a SPILLED object with tier_get
 *                       after the unlock.
 *     srv_obj_remove    in do_settled; the same srv_tier_forget.
 *     srv_wait_chunks   waits on chunks_cv.
 *     the maintenance thread: waits on maint_cv, spills (do_spill), and drops
 *                       the lock around srv_tier_forget of an expired
 *                       object.
 *     srv_spill_info    calls tier_report_stats after the unlock.
 *   On a thread with do_nowait() the calls above (srv_spill_info excepted:
 *   its caller leaves the tier's statistics out) return SRV_EWOULDBLOCK where
 *   they would drop the lock to wait, spill, restore or call the tier.
 *   After the lock was dropped a thread may rely on two things only: an
 *   object that it put into SPILLING or RESTORING is still there, at the same
 *   address, in that state (no other thread changes such an object or frees
 *   its slice: they wait on obj_cv until it settles; only srv_obj_get reads a
 *   SPILLING object's bytes, which stay whole), and the (fixed) fields.
 *   Everything else must be looked up again: a client record (a detached
 *   client goes when it holds nothing), slices and their owners, other
 *   objects, free space, shutting_down.
 *
 *   Condition variables, all used with srv->lock:
 *     chunks_cv  broadcast by a chunk thread when chunks join the pool or
 *                creation fails, and by srv_begin_shutdown.  Waited on by
 *                srv_wait_chunks, and by srv_alloc and do_alloc_obj when a
 *                host slice would fit once the chunks still being made exist.
 *     obj_cv     (CLOCK_MONOTONIC) broadcast when an object leaves SPILLING or
 *                RESTORING or the table, and by srv_begin_shutdown.  Waited
 *                on, bounded by OBJ_WAIT_MAX_S, in do_wait_obj: by do_settled
 *                (a call on an object another thread spills or restores) and
 *                do_make_room (a spill in flight that may free room).
 *     maint_cv   (CLOCK_MONOTONIC) signalled by srv_release and srv_obj_put (a
 *                new resident object: the watermark may want a spill),
 *                broadcast by srv_destroy.  Waited on, every MAINT_PERIOD_MS
 *                at most, by the maintenance thread only.
 */
#ifndef PINPOOL_SRV_INT_H
#define PINPOOL_SRV_INT_H

#include <bsd/sys/tree.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "objects.h"
#include "srv.h"

#define SESSION_PREFIX "s-"
#define KEPT_PREFIX "kept:"
#define HOST_POOL 0
#define MAINT_PERIOD_MS 100
#define TIER_BACKOFF_MS 1000
#define OBJ_WAIT_MAX_S 120 /* longest wait for another thread's spill or restore */

struct srv_client {
    RB_ENTRY(srv_client) node;
    char id[SRV_CLIENT_ID_LEN];
    uint64_t owner;
    bool session;
    bool kept;
    ipc_cred_t cred;
    char token[IPC_TOKEN_LEN]; /* sessions: the secret their calls carry */
};

RB_HEAD(client_tree, srv_client);

struct srv {
    pthread_mutex_t lock;
    srv_config_t cfg; /* (fixed) */
    bool shutting_down;

    /* chunks.c: the daemon maps chunk i at base + i * chunk_size. */
    const ipc_host_ops_t *host; /* (fixed) */
    void *base;                 /* (fixed) */
    uint64_t capacity;          /* (fixed) */
    uint32_t nchunks;           /* (fixed) */
    ipc_chunk_t *chunks;        /* the arrays are (fixed), their entries are not */
    bool *created;
    uint32_t ready;      /* chunks [0, ready) are in the pool */
    uint32_t next_chunk; /* the next one a thread takes */
    int chunk_err;       /* first creation error, 0 if none */
    char chunk_errmsg[256];
    bool stop_chunks;
    pthread_t *threads; /* srv_start_chunks and srv_destroy only */
    uint32_t nthreads;
    struct timespec chunks_started;
    double chunks_seconds; /* time to create them all, once done */
    pthread_cond_t chunks_cv;

    /* slices.c: the pool pointers and devices are (fixed), the pools are not. */
    pool_t *pools[1 + SRV_MAX_DEVICES];
    ipc_devmem_t devs[SRV_MAX_DEVICES]; /* (fixed) */
    uint32_t ndevs;                     /* (fixed) */

    /* objstore.c: the object table (the pointer is fixed, the table is not). */
    objs_t *objs;
    uint64_t obj_owner;        /* (fixed) the pool owner of every object's slice */
    pthread_cond_t obj_cv;     /* an object settled (left SPILLING/RESTORING) */

    /* spill.c */
    tier_t *tier;              /* (fixed) NULL: --spill-tier none */
    pthread_cond_t maint_cv;   /* wakes the maintenance thread */
    pthread_t maint;
    bool maint_started, stop_maint;
    uint32_t spilling_now;     /* spills in flight */
    uint64_t tier_backoff_ns;  /* no on-demand spill before this (after a failure) */
    uint64_t low_watermark;    /* (fixed) */
    srv_spill_info_t sp;       /* counters (the object counts come from objs) */

    /* sessions.c */
    struct client_tree clients;
    uint32_t nclients; /* kept clients included */
    uint32_t nkept;
    uint64_t next_owner;
};

/* The daemon's address of host pool offset (base is fixed). */
static inline void *host_addr(const srv_t *srv, uint64_t offset)
{
    return (char *)srv->base + offset;
}

static inline uint64_t mono_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* ---- srv.c ------------------------------------------------------------------------- */

/* PINPOOL_ESHUTDOWN with msg once srv_begin_shutdown ran, else 0: the first
 * test of every call that would allocate, and of each of its retries. */
int do_shutdown_error(const srv_t *srv, char *msg, size_t msglen);
/* Did the calling thread ask for srv_set_nowait(true)?  Then every place
 * below that drops the lock to wait or to call the tier returns
 * SRV_EWOULDBLOCK instead, before it changes anything (srv.h). */
bool do_nowait(void);

/* ---- chunks.c ------------------------------------------------------------------ */

/* srv_create: pick the host backend, count the chunks (nchunks, capacity). */
int srv_chunks_open(srv_t *srv, char *err, size_t errlen);
/* srv_create: the chunk records and the pool's address space. */
int srv_chunks_reserve(srv_t *srv, char *err, size_t errlen);
/* srv_start_chunks: the threads that make the chunks. */
int srv_chunks_start(srv_t *srv);
/* srv_destroy, after stop_chunks was set: join the threads, unmap every chunk. */
void srv_chunks_close(srv_t *srv);
/* Are host chunks still being made (so that waiting on chunks_cv may help)? */
bool do_chunks_coming(const srv_t *srv);

/* ---- sessions.c ------------------------------------------------------------------- */

/* The client called id, or NULL. */
struct srv_client *do_find_client(srv_t *srv, const char *id);
/* The client called id, made if it is a new detached one.  Errors with msg: a
 * closed session's id (PINPOOL_EPERM), --max-clients (PINPOOL_ENOSPC), -ENOMEM. */
int do_get_client(srv_t *srv, const char *id, struct srv_client **out, char *msg, size_t msglen);
/* A new client for a kept slice, named name ("kept:<tag>", not taken); NULL: no memory. */
struct srv_client *do_add_kept(srv_t *srv, const char *name);
/* A client without a session goes when it holds nothing (c may be freed). */
void do_drop_if_idle(srv_t *srv, struct srv_client *c);
/* The client whose owner number is owner, or NULL. */
struct srv_client *do_client_of_owner(srv_t *srv, uint64_t owner);
/* srv_pool_info's fn for every client (under the lock; fn must not call srv). */
void do_foreach_usage(srv_t *srv, void (*fn)(const srv_client_usage_t *usage, void *arg),
                      void *arg);
/* srv_destroy: free every client record. */
void srv_clients_close(srv_t *srv);
/* No lock: what is 1 to max printable ASCII characters without spaces?
 * 0, or PINPOOL_EINVAL with msg naming what. */
int srv_check_name(const char *what, const char *id, size_t max, char *msg, size_t msglen);
/* No lock: a valid client_id (srv_check_name, and not "kept:..."). */
int srv_check_client_id(const char *id, char *msg, size_t msglen);

/* ---- slices.c ------------------------------------------------------------------------ */

/* srv_create: the host pool (no chunks yet), then the device pools. */
int srv_slices_open_host(srv_t *srv, char *err, size_t errlen);
int srv_slices_open_devices(srv_t *srv, char *err, size_t errlen);
/* srv_destroy: the device memory and every pool. */
void srv_slices_close(srv_t *srv);
/* Bytes owner holds in every pool (*slices: how many slices, *device_bytes:
 * the bytes in device pools; either may be NULL). */
uint64_t do_owner_bytes(srv_t *srv, uint64_t owner, uint32_t *slices, uint64_t *device_bytes);
/* Free every slice of owner in every pool; returns how many, *bytes how much. */
uint32_t do_free_owner(srv_t *srv, uint64_t owner, uint64_t *bytes);
/* The slice with daemon-wide id: 0 with its pool's index and info, or PINPOOL_ENOENT. */
int do_lookup(srv_t *srv, uint64_t id, int *pool, pool_slice_info_t *info);
/* The client's view of slice info of pool (daemon-wide id, address, IPC handle). */
void do_describe(const srv_t *srv, int pool, const pool_slice_info_t *info, srv_slice_t *out);
/* Why pool_alloc of size in pool failed with rc, for a person (with the
 * spillable objects and the last spill error for the host pool). */
void do_explain_alloc_error(srv_t *srv, int pool, int rc, uint64_t size, uint64_t alignment,
                            char *msg, size_t msglen);

/* ---- objstore.c ------------------------------------------------------------------- */

/* srv_create: the object table and the owner number of its slices (err unused:
 * the one failure is -ENOMEM). */
int srv_objects_open(srv_t *srv, char *err, size_t errlen);

/* Drop o (settled) from the table and the pool; its tier copy, if any, is
 * the caller's to remove after unlocking (*tier_copy set). */
void do_drop_obj(srv_t *srv, obj_t *o, bool *tier_copy);

/* ---- spill.c --------------------------------------------------------------------- */

/* srv_create: resolve --spill-tier auto and open the tier (none: no tier). */
int srv_spill_open(srv_t *srv, char *err, size_t errlen);
/* srv_create, once the capacity is known: --spill-low-watermark in bytes. */
int srv_spill_watermark(srv_t *srv, char *err, size_t errlen);
/* srv_start_chunks: start the maintenance thread (if it can: without it
 * nothing expires or spills by the watermark, but the daemon serves). */
void srv_maint_start(srv_t *srv);
/* srv_destroy, after stop_maint was set and maint_cv broadcast. */
void srv_maint_join(srv_t *srv);
/* The host pool is short of room: spill the least recently used released
 * object, or wait for a spill in flight.  Drops the lock meanwhile.  Returns
 * true when trying again may succeed. */
bool do_make_room(srv_t *srv);
/* Would do_make_room spill or wait (rather than return false at once)? */
bool do_make_room_waits(srv_t *srv);
/* A host slice of size for an object, spilling others if need be (drops the
 * lock meanwhile).  0 and *info, or an error with msg. */
int do_alloc_obj(srv_t *srv, uint64_t size, pool_slice_info_t *info, char *msg, size_t msglen);
/* Bring SPILLED o back into a fresh slice (drops the lock during the get and
 * in do_alloc_obj; o stays this thread's, RESTORING).  0: o is RESIDENT.  Else
 * o is SPILLED again with msg. */
int do_restore(srv_t *srv, obj_t *o, char *msg, size_t msglen);
/* Wait on obj_cv for an object to settle, at most until deadline_ns (and
 * 200 ms at a time); false once past it or shutting down. */
bool do_wait_obj(srv_t *srv, uint64_t deadline_ns);
/* No lock: remove key's tier copy.  Mooncake refuses during a reader's lease
 * (PINPOOL_EBUSY): the copy stays until a later put replaces it. */
void srv_tier_forget(srv_t *srv, const char *key);

#endif
