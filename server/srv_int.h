/*
 * srv_int.h - what the rooms of the daemon's state share: struct srv, the
 * client record, and the helpers that one room calls in another.  Included by
 * the rooms only; every other file uses srv.h.
 *
 * The rooms, each owning the fields marked with its name below:
 *   srv.c       composes them: srv_create/srv_destroy, shutdown, the config
 *               accessors, srv_pool_info
 *   chunks.c    the host backend and the chunks: the threads that make them,
 *               srv_wait_chunks, srv_chunk_progress, and fresh memory for a
 *               chunk that passes to another uid (do_replace_chunks)
 *   memroom.c   the memory the chunks may still take (cgroup, MemAvailable),
 *               and pool_short when the pool stops growing short of its size
 *   cleaner.c   the cleaner thread: zeroes freed host memory (dirty extents)
 *   slices.c    the pools: alloc, attach and free, kept slices, chunk fds;
 *               placement by uid (the host pool's tenants are uids)
 *   sessions.c  the client table and its indexes, sessions and their
 *               tokens, the uids, charges and quotas, GetPoolInfo's pages
 *   access.c    who a caller is and what it may do: the policy table of
 *               every method and the one function that applies it
 *   objstore.c  named objects: Release/Acquire, Put/Get/Exists/Remove
 *   spill.c     the spill tier: spilling, restoring, making room, the names
 *               of tier copies, removing them, and the maintenance thread
 *               (TTL expiry, the low watermark, removals to retry)
 *   recover.c   the tier across restarts: reconcile at start (copies in the
 *               tier become spilled objects again), persist at a clean exit
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
 *   (srv_pool_info), and three kinds started here: the chunk threads
 *   (chunks.c, at start-up), the maintenance thread (spill.c) and the
 *   cleaner (cleaner.c).
 *   Fields marked (fixed) are set by srv_create before any other thread runs
 *   and never change until srv_destroy: read them without the lock.  Every
 *   other field is read and written under srv->lock only.
 *   Lock order: srv->lock is the outermost lock of the daemon.  Under it a
 *   thread may call pool_* and objs_* (no locks of their own), the log
 *   (stdio's lock), the callback of srv_pool_info, and
 *   tier_scheme/tier_errmsg (no lock); it must never call tier_put, tier_get,
 *   tier_remove or tier_report_stats (they block, and take the tier's own
 *   locks), nor a host backend's chunk_create or chunk_replace (they pin
 *   gigabytes), nor zero memory (the cleaner's memset).
 *
 *   Where the lock is dropped (and taken again before the function returns):
 *     chunk_thread      around chunk_create.
 *     do_replace_chunks around each chunk_replace (the chunks are claimed:
 *                       nobody else touches them meanwhile).
 *     do_clean_batch    around the zeroing (the extents are the cleaner's).
 *     do_wait_clean     cleans a batch itself (do_clean_batch), or waits on
 *                       cleaned_cv (200 ms at most).
 *     do_make_room_for_uid  in do_wait_clean or do_replace_chunks.
 *     the cleaner thread: waits on clean_cv, cleans (do_clean_batch).
 *     do_spill          around tier_put (the object is SPILLING meanwhile).
 *     do_restore        around tier_get (the object is RESTORING), and inside
 *                       do_alloc_obj.
 *     do_wait_obj       waits on obj_cv (bounded, re-checking every 200 ms).
 *     do_make_room      in do_spill or do_wait_obj.
 *     do_host_room      waiting on chunks_cv, in do_wait_clean,
 *                       do_replace_chunks or do_make_room.
 *     do_alloc_obj      in do_host_room.
 *     do_settled        in do_wait_obj.
 *     srv_alloc         in do_host_room.
 *     srv_acquire       in do_settled, do_restore and do_take_object_slice
 *                       (do_host_room).
 *     srv_obj_put       in do_settled and do_alloc_obj.
 *     srv_obj_get       in do_settled; reads a SPILLED object with tier_get
 *                       after the unlock.
 *     srv_obj_remove    in do_settled; srv_tier_remove_now after the unlock.
 *     srv_wait_chunks   waits on chunks_cv.
 *     the maintenance thread: waits on maint_cv, spills (do_spill), and
 *                       removes the queued tier copies (do_retry_stale).
 *     srv_spill_info    calls tier_report_stats after the unlock.
 *     srv_persist_objects  in do_spill, one object at a time.
 *     do_cluster_find   (--cluster; in srv_acquire and srv_obj_get) around the
 *                       record's read, in do_wait_obj, do_alloc_obj, and around
 *                       the fetch (into a slice not yet in the table).
 *     do_cluster_share_queued  (the maintenance thread) around each copy and
 *                       record it writes (the object is SPILLING meanwhile).
 *   Removing a stale tier copy never blocks a caller: do_tier_forget (lock
 *   held) and srv_tier_forget (no lock) only queue the copy's name, with its
 *   generation, taken under the lock (a late removal never reaches a newer
 *   object's copy), and the maintenance thread removes it.  Only Remove
 *   waits for its copy to go (srv_tier_remove_now, after the unlock).
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
 *     clean_cv   (CLOCK_MONOTONIC) signalled when freed memory piles up
 *                (do_cleaner_kick) and at shutdown; waited on, CLEAN_POLL_MS
 *                at most, by the cleaner only.
 *     cleaned_cv (CLOCK_MONOTONIC) broadcast after every batch the cleaner
 *                zeroed; waited on, bounded, by do_wait_clean.
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
#include <sys/types.h>
#include <time.h>

#include "objects.h"
#include "cluster.h"
#include "srv.h"

#define SESSION_PREFIX "s-"
#define KEPT_PREFIX "kept:"
#define HOST_POOL 0
#define SRV_QUANTUM 256 /* every pool's quantum: extents are sizes rounded up to it */
#define MAINT_PERIOD_MS 100
#define TIER_BACKOFF_MS 1000
#define OBJ_WAIT_MAX_S 120 /* longest wait for another thread's spill or restore */
/* Tier copies whose removal is queued, at most: one per copy there can be
 * (--max-objects) and some slack for copies of objects being replaced. */
#define STALE_SLACK 4096
#define do_stale_max(srv) ((uint32_t)(srv)->cfg.max_objects + STALE_SLACK)

/*
 * The name of an object's copy in the tier (spill.c): "UID/GEN/KEY", UID in
 * decimal, GEN the object's generation as 16 lowercase hex digits, KEY its key
 * as is (any bytes: each tier encodes names).  A copy is removed by this name
 * only, so a removal can never reach another generation's copy.
 */
#define SRV_TKEY_MAX (10 + 1 + 16 + 1 + OBJ_KEY_MAX)
typedef struct srv_tkey {
    char s[SRV_TKEY_MAX + 1];
    size_t len; /* 0: no copy */
} srv_tkey_t;

/* What the daemon stores with a copy (tier metadata), version 1. */
#define SRV_TMETA_LEN 16

struct srv_stale; /* a removal to retry (spill.c) */

/*
 * A client (sessions.c).  Every client is in several indexes at once: by
 * owner number (srv->owners: whose slice is this), by token (sessions:
 * srv->tokens, so that a call carrying a token finds its session) and by id
 * (sessions and detached clients: srv->clients), hash tables, O(1); among
 * its uid's clients (kept slices are found there, by (uid, tag)), and by
 * charge, most first, daemon-wide and in its uid (GetPoolInfo's top
 * clients), red-black trees, O(log n), in the orders GetPoolInfo pages by.
 */
struct srv_client {
    struct srv_client *next_id;       /* srv->clients' chain (not kept clients) */
    RB_ENTRY(srv_client) by_member;   /* u->members: (kept, id) */
    struct srv_client *next_owner;    /* srv->owners' chain */
    struct srv_client *next_token;    /* srv->tokens' chain (sessions) */
    RB_ENTRY(srv_client) by_charge;   /* srv->heaviest: (charge desc, owner) */
    RB_ENTRY(srv_client) by_ucharge;  /* u->heaviest */
    char id[SRV_CLIENT_ID_LEN];
    uint64_t owner;
    uid_t uid; /* sessions: the peer's (SO_PEERCRED); kept slices: their maker's;
                * callers without a session: the daemon's own (geteuid) */
    struct srv_uid *u; /* its uid's record */
    bool session;
    bool kept;
    uint64_t maker;  /* kept: the owner number of the client that made it (0: none) */
    /*
     * Bytes charged to it (--client-quota): the extents of its slices, and,
     * while it lives, what it made that outlives its slices: the kept slices
     * it made and the objects it released or put.  A kept client's charge is
     * its slice.  Changed only through do_charge_client (the indexes).
     */
    uint64_t charge;
    ipc_cred_t cred;
    char token[IPC_TOKEN_LEN]; /* sessions: the secret their calls carry */
};

RB_HEAD(member_tree, srv_client);
/* A hash table of clients, chained through the records (sessions.c): it
 * doubles when it holds as many as it has buckets; a failed doubling leaves
 * it as it was (longer chains, nothing lost). */
struct srv_chash {
    struct srv_client **b;
    size_t nb, n;
};
RB_HEAD(charge_tree, srv_client);
RB_HEAD(ucharge_tree, srv_client);

/*
 * A uid the daemon knows (sessions.c): it has clients or bytes charged to it.
 * charge: every byte of the uid's (--user-quota): its clients' slices (kept
 * ones included) and its objects (released or put; resident or spilled).
 */
struct srv_uid {
    RB_ENTRY(srv_uid) node;
    uid_t uid;
    uint64_t charge;
    uint32_t nclients; /* kept clients included */
    uint32_t nsessions;
    struct member_tree members;
    struct ucharge_tree heaviest;
};

RB_HEAD(uid_tree, srv_uid);

/*
 * Who makes a call (access.c): the session whose token the call carries, or,
 * without a token, a caller without a session, who acts as the daemon's uid.
 */
typedef struct srv_principal {
    struct srv_client *session; /* NULL: no session */
    uid_t uid;                  /* the session's uid, or the daemon's */
    bool admin;                 /* root or the daemon's uid: sees every client */
} srv_principal_t;

struct srv {
    pthread_mutex_t lock;
    srv_config_t cfg; /* (fixed) */
    uid_t uid;        /* (fixed) the daemon's own (geteuid): callers without a session act as it */
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
    /* memroom.c: why no chunk past next_chunk will be made ("" while the pool
     * grows as planned); set once, by do_chunk_fits. */
    char pool_short[320];
    uint64_t replacements; /* chunks given fresh memory for another uid */
    srv_gpu_t gpus[SRV_MAX_DEVICES]; /* chunks.c: srv_gpu_refresh's snapshot */
    uint32_t ngpus;

    /* cleaner.c */
    pthread_t cleaner;
    bool cleaner_started, stop_cleaner;
    uint32_t cleaning_now;  /* batches being zeroed */
    uint64_t cleaned_bytes; /* since start */
    uint64_t clean_ns;      /* time spent zeroing */
    pthread_cond_t clean_cv;   /* wakes the cleaner */
    pthread_cond_t cleaned_cv; /* a batch is clean */

    /* slices.c: the pool pointers and devices are (fixed), the pools are not. */
    pool_t *pools[1 + SRV_MAX_DEVICES];
    ipc_devmem_t devs[SRV_MAX_DEVICES]; /* (fixed), but for a vmm pool's chunk fds and
                                         * handles: replaced under the lock (slices.c) */
    uint32_t ndevs;                     /* (fixed) */

    /* objstore.c: the object table (the pointer is fixed, the table is not). */
    objs_t *objs;
    uint64_t obj_owner;        /* (fixed) the pool owner of every object's slice */
    pthread_cond_t obj_cv;     /* an object settled (left SPILLING/RESTORING) */

    /* spill.c */
    tier_t *tier;              /* (fixed) NULL: --spill-tier none */
    struct srv_cluster *cluster; /* (fixed) NULL: no --cluster (cluster.c) */
    pthread_cond_t maint_cv;   /* wakes the maintenance thread */
    pthread_t maint;
    bool maint_started, stop_maint;
    uint32_t spilling_now;     /* spills in flight */
    uint64_t tier_backoff_ns;  /* no on-demand spill before this (after a failure) */
    uint64_t low_watermark;    /* (fixed) */
    srv_spill_info_t sp;       /* counters (the object counts come from objs) */
    struct srv_stale *stale;   /* tier copies to remove again (a failed removal) */
    uint32_t nstale;
    uint64_t stale_retry_ns;   /* no removal before this (0: at once) */
    bool stale_failing;        /* the last removals failed: retry after a back-off */

    /* sessions.c */
    struct srv_chash clients;    /* sessions and detached clients, by id */
    struct srv_chash owners;     /* every client, by owner number */
    struct srv_chash tokens;     /* sessions, by token */
    struct charge_tree heaviest; /* every client, most charged first */
    struct uid_tree uids;
    uint32_t nclients; /* kept clients included */
    uint32_t nkept;
    uint32_t nsessions;
    uint64_t next_owner;

    /* handover.c: the takeover's gate (srv_gate_enter) and what a pause stopped. */
    bool paused;       /* gRPC calls are answered PINPOOL_EUPGRADE */
    uint32_t in_calls; /* gRPC calls inside srv now */
    bool pause_stopped_cleaner, pause_stopped_maint;

    /* slices.c: the device pools belong to one uid (a cudaMalloc shared by its
     * CUDA IPC handle isolates nothing): --device-pool-uid, else the first
     * uid that allocates in one, for the daemon's lifetime. */
    bool dev_uid_set;
    uid_t dev_uid;
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

/* ---- handover.c, handover_load.c ------------------------------------------------------ */

/* The takeover's blob: it starts and ends with HO_MAGIC, then HO_VERSION;
 * both daemons must speak the same version (handover.c writes the format). */
#define HO_MAGIC 0x4f545050u /* "PPTO" */
#define HO_VERSION 1u

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
/*
 * The blocking half of a chunk passing to another uid: every chunk of claim
 * (pool_claim on the host pool) that needs it gets fresh memory from the
 * host backend (chunk_replace), with the lock dropped around each; then the
 * claim ends: the chunks are the claim's uid's, or, when a replacement failed
 * (logged), back to whom they were.  Lock held on entry and on return.
 * 0 or the backend's error.  The one entry point of that work, so that it can
 * be scheduled on a thread that may block.
 */
int do_replace_chunks(srv_t *srv, const pool_claim_t *claim);

/* ---- cleaner.c --------------------------------------------------------------------- */

/* srv_start_chunks / srv_destroy (before the chunks are unmapped). */
void srv_cleaner_start(srv_t *srv);
void srv_cleaner_stop(srv_t *srv);
/* Memory was freed: wake the cleaner if freed memory piles up (it polls
 * every CLEAN_POLL_MS anyway). */
void do_cleaner_kick(srv_t *srv);
/* Zero and free one batch of dirty extents (drops the lock meanwhile); false
 * if there was none to take. */
bool do_clean_batch(srv_t *srv);
/* An allocation found only dirty memory: zero a batch here (dropping the
 * lock), or, when every dirty extent is in another thread's batch, wait
 * (bounded) for one. */
void do_wait_clean(srv_t *srv);

/* ---- memroom.c ------------------------------------------------------------------ */

/* A chunk thread, before it picks the next chunk: does one more chunk fit in
 * room (srv_mem_room's, read without the lock; why says what limits it), with
 * the chunks other threads are making now?  If not, the pool stops growing:
 * pool_short says why (and the log, once); with no chunk made at all that is
 * a creation error (chunk_err).  Never true again once false. */
bool do_chunk_fits(srv_t *srv, uint64_t room, const char *why);

/* ---- sessions.c ------------------------------------------------------------------- */

/* The client called id (a session or a detached client), or NULL. */
struct srv_client *do_find_client(srv_t *srv, const char *id);
/* uid's kept client named name ("kept:<tag>"), or NULL. */
struct srv_client *do_find_kept(srv_t *srv, uid_t uid, const char *name);
/* The session whose token is token, or NULL. */
struct srv_client *do_find_token(srv_t *srv, const char *token);
/* The client called id, made if it is a new detached one (of the daemon's
 * uid).  Errors with msg: a closed session's id (PINPOOL_EPERM),
 * --max-clients (PINPOOL_ENOSPC), -ENOMEM. */
int do_get_client(srv_t *srv, const char *id, struct srv_client **out, char *msg, size_t msglen);
/* --max-clients: 0, or PINPOOL_ENOSPC with msg when no client may be added. */
int do_room_for_client(const srv_t *srv, char *msg, size_t msglen);
/* A new client for a kept slice, named name ("kept:<tag>", not taken in
 * uid's namespace), of uid, made by the client whose owner number is maker;
 * NULL: no memory. */
struct srv_client *do_add_kept(srv_t *srv, const char *name, uid_t uid, uint64_t maker);
/* Takeover (handover.c): a client made again as saved describes it - id,
 * owner number, uid, session (its cred and token), kept and maker - with
 * nothing charged; NULL when its owner number or id is taken, or no memory. */
struct srv_client *do_restore_client(srv_t *srv, const struct srv_client *saved);
/* fn for every uid the daemon knows, with its charge (--user-quota's count). */
void do_each_uid_charge(srv_t *srv, void (*fn)(uid_t uid, uint64_t charge, void *arg),
                        void *arg);
/* A client without a session goes when nothing is charged to it (it holds no
 * slice, and nothing it made is left): c may be freed. */
void do_drop_if_idle(srv_t *srv, struct srv_client *c);
/* The client whose owner number is owner, or NULL.  O(1) (a hash table). */
struct srv_client *do_client_of_owner(srv_t *srv, uint64_t owner);
/*
 * Charges (what the quotas count).  do_charge_client: c's charge changes by
 * delta (c NULL: nothing), O(log n) (its place in the indexes by charge).
 * do_charge_uid: uid's, made if new: 0, or -ENOMEM (delta > 0 only).
 * do_quota_check: may client c (NULL: none; kept clients have no quota) take
 * c_add bytes more, and uid u_add?  0, or PINPOOL_ENOSPC with the numbers
 * ("this <what> of <size>") and the option in msg.  O(log uids).
 */
void do_charge_client(srv_t *srv, struct srv_client *c, int64_t delta);
int do_charge_uid(srv_t *srv, uid_t uid, int64_t delta);
uint64_t do_uid_charge(srv_t *srv, uid_t uid);
int do_quota_check(srv_t *srv, const struct srv_client *c, uint64_t c_add, uid_t uid,
                   uint64_t u_add, const char *what, char *msg, size_t msglen);
/* One page of the clients p may see (srv_pool_page): fn for each, *page.  0,
 * or PINPOOL_EINVAL (a bad token) / PINPOOL_EPERM (another uid) with msg. */
int do_page_clients(srv_t *srv, const srv_principal_t *p, const srv_info_query_t *q,
                    void (*fn)(const srv_client_usage_t *usage, void *arg), void *arg,
                    srv_info_page_t *page, char *msg, size_t msglen);
/* fn for every uid p may see (at most SRV_UIDS_MAX), in uid order. */
void do_foreach_uid(srv_t *srv, const srv_principal_t *p,
                    void (*fn)(const srv_uid_usage_t *usage, void *arg), void *arg);
/* srv_destroy: free every client record. */
void srv_clients_close(srv_t *srv);
/* No lock: what is 1 to max printable ASCII characters without spaces?
 * 0, or PINPOOL_EINVAL with msg naming what. */
int srv_check_name(const char *what, const char *id, size_t max, char *msg, size_t msglen);
/* No lock: a valid client_id (srv_check_name, and not "kept:..."). */
int srv_check_client_id(const char *id, char *msg, size_t msglen);

/* ---- access.c ----------------------------------------------------------------------- */

/*
 * The one authorization path: may the caller whose call carries token ask
 * for op, naming client_id (NULL: the request names none)?  Resolves the
 * caller into *p (a session by its token, O(1); no token: the daemon's
 * uid, where callers without a session are let in) and applies op's row of
 * the policy table.  Lock held.  0, or an error with msg: PINPOOL_EINVAL (a
 * client_id that is not a name), PINPOOL_EPERM (refused), PINPOOL_ENOSPC
 * (--max-clients).
 */
int do_access(srv_t *srv, srv_op_t op, const char *token, const char *client_id,
              srv_principal_t *p, char *msg, size_t msglen);
/* The fd socket's MAP_REQ: the session itself is the caller. */
void do_principal_of(const srv_t *srv, struct srv_client *session, srv_principal_t *p);
/*
 * What "allowed" means for a slice, per op's row: may client c (the caller's,
 * named by client_id; NULL: none yet) of principal p use slice info whose
 * holder is holder (NULL: no client holds it: an object's)?  Its own slice;
 * for FREE and MAP also a slice its uid keeps.  0, or PINPOOL_EPERM with msg.
 */
int do_may_use_slice(srv_t *srv, srv_op_t op, const srv_principal_t *p,
                     const struct srv_client *c, const struct srv_client *holder,
                     uint64_t slice_id, char *msg, size_t msglen);
/* The device pools' owner (slices.c): may uid allocate in them?  The first
 * uid to ask becomes it unless --device-pool-uid named one.  0 or
 * PINPOOL_EPERM with msg (why, and what would isolate uids). */
int do_device_pool_access(srv_t *srv, uid_t uid, char *msg, size_t msglen);

/* ---- slices.c ------------------------------------------------------------------------ */

/* srv_create: the host pool (no chunks yet), then the device pools. */
int srv_slices_open_host(srv_t *srv, char *err, size_t errlen);
int srv_slices_open_devices(srv_t *srv, char *err, size_t errlen);
/* srv_destroy: the device memory and every pool. */
void srv_slices_close(srv_t *srv);
/* Bytes owner holds in every pool (*slices: how many slices, *device_bytes:
 * the bytes in device pools; either may be NULL). */
uint64_t do_owner_bytes(srv_t *srv, uint64_t owner, uint32_t *slices, uint64_t *device_bytes);
/* Free every slice of client c in every pool (c's and its uid's charges go
 * down with them); returns how many, *bytes how much. */
uint32_t do_free_owner(srv_t *srv, struct srv_client *c, uint64_t *bytes);
/* The slice with daemon-wide id: 0 with its pool's index and info, or PINPOOL_ENOENT. */
int do_lookup(srv_t *srv, uint64_t id, int *pool, pool_slice_info_t *info);
/* The client's view of slice info of pool (daemon-wide id, address, IPC handle). */
void do_describe(const srv_t *srv, int pool, const pool_slice_info_t *info, srv_slice_t *out);
/*
 * Blocking: pool_alloc_as found no room for size bytes (aligned to align) in
 * uid's host chunks nor in chunks never used.  Wait for the cleaner when
 * freed memory is still being zeroed, else give uid an idle chunk of another
 * uid with fresh memory (pool_claim, do_replace_chunks).  Lock held, dropped
 * meanwhile: everything must be looked up again after.  true when trying
 * again may succeed.
 */
bool do_make_room_for_uid(srv_t *srv, uid_t uid, uint64_t size, uint64_t align);
/*
 * A host slice of size bytes for uid found no room (ENOSPC): make some, the
 * cheapest way first - wait for chunks still being made; wait for the
 * cleaner; give uid another uid's idle chunk with fresh memory; spill a
 * released object (or wait for a spill in flight).  Lock held, dropped
 * meanwhile.  0: try again (look everything up again); SRV_EWOULDBLOCK on a
 * do_nowait() thread when any of that would wait (nothing changed); 1:
 * nothing can make room.
 */
int do_host_room(srv_t *srv, uid_t uid, uint64_t size, uint64_t align);
/*
 * AcquirePoolMemory's hand-over: host slice slice (owned by srv->obj_owner,
 * in the chunks of c's uid: objects live in their owner's memory, and only
 * their owner's clients find them) becomes client c's, charged to c and its
 * uid.  0 and *info (the slice c now holds), or an error with msg.
 */
int do_take_object_slice(srv_t *srv, uint64_t slice, struct srv_client *c,
                         pool_slice_info_t *info, char *msg, size_t msglen);
/* A slice of extent bytes came to (delta > 0) or left (< 0) client c: its
 * charge, its maker's for a kept slice, its uid's. */
void do_slice_charged(srv_t *srv, struct srv_client *c, int64_t delta);
/* Why pool_alloc of size in pool failed with rc, for a person (with the
 * spillable objects and the last spill error for the host pool). */
void do_explain_alloc_error(srv_t *srv, int pool, int rc, uint64_t size, uint64_t alignment,
                            char *msg, size_t msglen);

/* ---- objstore.c ------------------------------------------------------------------- */

/* srv_create: the object table (--max-objects) and the owner number of its
 * slices (err unused: the one failure is -ENOMEM). */
int srv_objects_open(srv_t *srv, char *err, size_t errlen);

/* srv_create, after the tier was reconciled: charge every object recovered
 * from the tier to its uid. */
int srv_objects_recount(srv_t *srv, char *err, size_t errlen);

/* Drop o (settled, unpinned) from the table and the pool, and its charges;
 * its tier copy, if any, is the caller's to remove after unlocking (copy: its
 * name, len 0 if none). */
void do_drop_obj(srv_t *srv, obj_t *o, srv_tkey_t *copy);
/* The bytes an object is charged: its size rounded up to the pool's quantum
 * (what its slice takes when resident, also while spilled). */
static inline uint64_t obj_charge(const obj_t *o)
{
    return (o->size + SRV_QUANTUM - 1) & ~(uint64_t)(SRV_QUANTUM - 1);
}

/* ---- spill.c --------------------------------------------------------------------- */

/* srv_create: resolve --spill-tier auto and open the tier (none: no tier). */
int srv_spill_open(srv_t *srv, char *err, size_t errlen);
/* srv_create, once the capacity is known: --spill-low-watermark in bytes. */
int srv_spill_watermark(srv_t *srv, char *err, size_t errlen);
/* srv_start_chunks: start the maintenance thread (if it can: without it
 * nothing expires or spills by the watermark, but the daemon serves). */
void srv_maint_start(srv_t *srv);
/* srv_destroy, after stop_maint was set and maint_cv broadcast; frees the
 * queue of removals to retry. */
void srv_maint_join(srv_t *srv);
/* A takeover's pause (handover.c): stop the maintenance thread and wait for
 * it (no lock held); srv_maint_start starts it again.  The queue stays. */
void srv_maint_stop(srv_t *srv);
/* fn for every tier copy queued for removal, oldest first (lock held). */
void do_each_stale(srv_t *srv, void (*fn)(const srv_tkey_t *copy, void *arg), void *arg);
/* The host pool is short of room: spill the least recently used released
 * object, or wait for a spill in flight.  Drops the lock meanwhile.  Returns
 * true when trying again may succeed. */
bool do_make_room(srv_t *srv);
/* Would do_make_room spill or wait (rather than return false at once)? */
bool do_make_room_waits(srv_t *srv);
/* A host slice of size for an object of uid, in uid's chunks (objects live in
 * their owner's memory), spilling others if need be (drops the lock
 * meanwhile).  0 and *info, or an error with msg. */
int do_alloc_obj(srv_t *srv, uid_t uid, uint64_t size, pool_slice_info_t *info, char *msg,
                 size_t msglen);
/* Bring SPILLED o back into a fresh slice (drops the lock during the get and
 * in do_alloc_obj; o stays this thread's, RESTORING).  0: o is RESIDENT.  Else
 * o is SPILLED again with msg, or, PINPOOL_ENOKEY after a damaged copy,
 * gone (o freed). */
int do_restore(srv_t *srv, obj_t *o, char *msg, size_t msglen);
/* Wait on obj_cv for an object to settle, at most until deadline_ns (and
 * 200 ms at a time); false once past it or shutting down. */
bool do_wait_obj(srv_t *srv, uint64_t deadline_ns);
/* The name of o's tier copy (lock held). */
void do_tier_key(const obj_t *o, srv_tkey_t *out);
/* Parse a copy's name: 0 with *uid, *gen and the key (NUL-terminated, into
 * key[OBJ_KEY_MAX + 1]), or -1 when it is not one of the daemon's names. */
int srv_tier_key_parse(const void *name, size_t len, uint32_t *uid, uint64_t *gen, char *key);
/* o's metadata for the tier (its expiry as wall-clock ms), into meta (lock held). */
void do_tier_meta(const obj_t *o, unsigned char meta[SRV_TMETA_LEN]);
/* Read a copy's metadata: 0 and *expires_ms (0: none), or -1. */
int srv_tier_meta_parse(const void *meta, uint32_t len, uint64_t *expires_ms);
/* Remove the copy named copy (nothing if copy->len is 0), later: its name is
 * queued and the maintenance thread removes it, at once while the tier works,
 * else retried every TIER_BACKOFF_MS (Mooncake refuses a removal during a
 * reader's lease: PINPOOL_EBUSY).  No tier I/O on the caller's thread.
 * srv_tier_forget takes the lock; do_tier_forget is called with it held. */
void srv_tier_forget(srv_t *srv, const srv_tkey_t *copy);
void do_tier_forget(srv_t *srv, const srv_tkey_t *copy);
/* No lock, tier I/O: remove the copy now (Remove); if the tier refuses, it is
 * queued as srv_tier_forget would. */
void srv_tier_remove_now(srv_t *srv, const srv_tkey_t *copy);
/* An object whose copy turned out damaged (-EBADMSG, lock held): drop it and
 * log why; its copy's name into *copy, for the caller to forget after unlocking. */
void do_drop_damaged(srv_t *srv, obj_t *o, srv_tkey_t *copy);
/* Spill o (RESIDENT; lock held, dropped during the put).  0: SPILLED. */
int do_spill(srv_t *srv, obj_t *o);
/* Try the queued removals again now (lock held, dropped meanwhile; not before
 * stale_retry_ns); the ones that fail again stay queued. */
void do_retry_stale(srv_t *srv);

/* ---- recover.c --------------------------------------------------------------------- */

/* srv_spill_open, once the tier is open: the copies in the tier become
 * SPILLED objects (damaged, expired and superseded ones are removed), and
 * generations start past every one found.  0, or an error with err. */
int srv_reconcile(srv_t *srv, char *err, size_t errlen);

#endif
