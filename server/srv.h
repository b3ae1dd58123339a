/*
 * srv.h - the daemon's state: the pools, the host chunks, the clients, the
 * named objects and the spill tier.
 *
 * Owns: the host pool and the device pools (pool_t), the host chunks (through
 * an ipc_host_ops_t backend), the table of clients (fd-socket sessions and
 * detached gRPC-only clients), the named objects and the spill tier, and the
 * threads that make the chunks at start-up and look after the objects (TTL
 * expiry, the low watermark).  The code lives in one file per subsystem
 * (srv_int.h lists them); this header is what the rest of the daemon calls.
 * Never: speaks gRPC or touches libev; server/service.c (on the gRPC threads),
 * server/fdsock.c (on the libev loop) and server/metrics.c (on its HTTP
 * thread) call in.
 * Locking: one mutex inside, srv->lock.  Every srv_* function below takes it
 * itself (a caller never holds it; srv_config, srv_host_backend and
 * srv_session_token read what never changes and take nothing) and calls
 * nothing of the caller's while holding it, except srv_pool_info's fn.  The
 * functions may be called from any thread, many at once, except srv_create,
 * srv_start_chunks and srv_destroy (one thread; srv_destroy once every other
 * call has returned).
 * Most return after one short hold of the lock.  These wait, or do slow
 * work, with the lock released, and may take long:
 *   srv_wait_chunks         until the chunks it asks for are made;
 *   srv_alloc               for host chunks still being made, for freed memory
 *                           being zeroed (the cleaner), to give a chunk fresh
 *                           memory for the caller's uid (chunk_replace: it
 *                           pins a chunk), and for a spill that makes room
 *                           (tier I/O, or another call's spill);
 *   srv_acquire             to restore a spilled object (tier I/O), for an
 *                           object that another call spills or restores, and
 *                           as srv_alloc when the object must move to the
 *                           caller's uid's chunks;
 *   srv_obj_put, srv_obj_get, srv_obj_remove
 *                           for an object that another call spills or
 *                           restores; get reads a spilled object from the
 *                           tier, put and remove delete its stale tier copy
 *                           (and release that of an expired object);
 *   srv_persist_objects     writes every resident object to the tier;
 *   srv_spill_info          asks the tier for its statistics after unlocking.
 * A wait for another call's object is bounded (120 s, then PINPOOL_ETIMEOUT);
 * srv_begin_shutdown ends the waits (PINPOOL_ESHUTDOWN).  What a call may
 * rely on after it dropped the lock, the condition variables and the lock
 * order are written down in srv_int.h.
 * A thread that must never wait (a gRPC queue thread) calls
 * srv_set_nowait(true) first: then each of those calls, where it would wait
 * or call the tier, returns SRV_EWOULDBLOCK at once instead (see there).
 */
#ifndef PINPOOL_SRV_H
#define PINPOOL_SRV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "devmem.h"
#include "ipc.h"
#include "pool.h"
#include "tier.h"

typedef struct srv srv_t;

/*
 * "This call would have to wait or do I/O" (never sent to a client): what the
 * calls that can wait return, at once, on a thread that asked for
 * srv_set_nowait(true).  Such a call has then done no more than the same call
 * without the flag does before its first wait (it may have dropped an object
 * it replaces, for instance), so the caller runs it again, on a thread that
 * may wait, to finish it.  Blocking work: waiting for host chunks being
 * made, for another call's spill or restore, and every tier call (put, get,
 * remove).  Calls that never wait ignore the flag.
 */
#define SRV_EWOULDBLOCK (-1900)
/* The calling thread's policy for the calls above (false: they may wait, the
 * default of every thread). */
void srv_set_nowait(bool nowait);
typedef struct srv_client srv_client_t;

#define SRV_CLIENT_ID_LEN IPC_CLIENT_ID_LEN
#define SRV_MAX_DEVICES 16

/*
 * Slice ids are unique across the daemon's pools: the top 16 bits name the
 * pool (0 the host pool, k the k-th device pool), the rest is the pool's own id.
 */
#define SRV_POOL_SHIFT 48

/* A slice as the daemon describes it to its client. */
typedef struct srv_slice {
    pool_slice_info_t info; /* info.id is the daemon-wide id */
    int32_t device_id;      /* -1: the host pool */
    uint64_t memory_ptr;    /* the daemon's address: host VA, or CUdeviceptr (0: a vmm device
                             * pool, which the daemon does not map) */
    uint8_t ipc_handle[IPC_HANDLE_BYTES]; /* device slices of an ipc device pool */
    uint64_t chunk_size;    /* of its pool's chunks (host slices, vmm device slices) */
    bool dev_vmm;           /* a device slice whose chunks go out as descriptors (devmem.h) */
} srv_slice_t;

typedef struct srv_device_info {
    int32_t device_id;
    char name[64];
    pool_stats_t stats;
} srv_device_info_t;

typedef struct srv_client_usage {
    const char *client_id;
    uint64_t bytes;        /* host pool */
    uint64_t device_bytes; /* all device pools */
    uint32_t slices;
    int32_t pid; /* 0: no session */
    uint32_t uid;
    uint64_t charged;      /* what counts against --client-quota (sessions.c) */
    bool session, kept;
} srv_client_usage_t;

/* A uid's totals, for GetPoolInfo. */
typedef struct srv_uid_usage {
    uint32_t uid;
    uint32_t clients;  /* kept slices included */
    uint32_t sessions;
    uint64_t charged;  /* what counts against --user-quota: slices, kept slices, objects */
} srv_uid_usage_t;

/* GetPoolInfo's paging (srv_pool_page). */
#define SRV_PAGE_DEFAULT 1000u /* clients in a page when the caller names no size */
#define SRV_PAGE_MAX 10000u
#define SRV_PAGE_TOKEN_LEN 96
#define SRV_UIDS_MAX 256u /* uids listed in one reply */
typedef struct srv_info_query {
    uint32_t page_size;     /* 0: SRV_PAGE_DEFAULT; at most SRV_PAGE_MAX */
    const char *page_token; /* "" or NULL: the first page; else an earlier page's next_token */
    bool by_bytes;          /* most charged first; else by (uid, id) */
    bool one_uid;           /* only uid's clients */
    uint32_t uid;
} srv_info_query_t;
typedef struct srv_info_page {
    uint32_t matching;   /* clients the listing pages through (those the caller may see) */
    bool all_visible;    /* the caller sees every uid's clients (root, the daemon's uid) */
    uint32_t caller_uid;
    char next_token[SRV_PAGE_TOKEN_LEN]; /* "" after the last page */
} srv_info_page_t;

/* The spill tier and the named objects, for GetPoolInfo. */
typedef struct srv_spill_info {
    const char *tier;      /* "file", "mooncake", or "none" */
    uint32_t objects, resident, spilling, spilled, restoring;
    uint64_t resident_bytes, spilled_bytes_now; /* object bytes in those states */
    uint64_t spills, spilled_bytes, spill_failures, spill_ns;
    uint64_t restores, restored_bytes, restore_failures, restore_ns;
    uint64_t expired;
    uint64_t low_watermark;
    char last_error[256];
} srv_spill_info_t;

typedef struct srv_pool_info {
    pool_stats_t stats;         /* the host pool's: used excludes dirty (being cleaned) */
    uint64_t chunk_replacements; /* chunks given fresh memory for another uid */
    uint64_t chunk_size;
    uint32_t num_chunks;
    uint32_t num_clients;
    const char *host_backend;
    const char *mode;
    uint32_t num_kept;
    double pin_seconds; /* 0 while chunks are still being made */
    uint32_t ndevices;
    srv_device_info_t devices[SRV_MAX_DEVICES];
    char stopped_short[320]; /* why the host pool stopped short of its capacity ("" if not) */
} srv_pool_info_t;

/*
 * Pick the host backend (--host-backend; auto falls back to memfd, saying why
 * in the log), reserve the pool's address space, make the device pools.  No
 * host chunk is made yet.  Returns 0 and *out, or an error with a message in err.
 */
int srv_create(srv_t **out, const srv_config_t *cfg, char *err, size_t errlen);
/* Stops the chunk threads, unmaps every chunk and frees srv. */
void srv_destroy(srv_t *srv);

/*
 * Start cfg->pin_threads threads that create the chunks; each chunk joins the
 * pool as soon as it and all chunks before it exist.  Starts the maintenance
 * thread too (TTL expiry, the low watermark) and the cleaner (zeroes freed
 * memory).  Returns at once.
 */
int srv_start_chunks(srv_t *srv);
/* Wait until at least n chunks are ready, all are, or creation failed.
 * Returns 0, or the creation error with its message in err. */
int srv_wait_chunks(srv_t *srv, uint32_t n, char *err, size_t errlen);

/* Chunks in the pool, chunks in all, and seconds since creation started (or
 * the time it took, once all are ready). */
void srv_chunk_progress(srv_t *srv, uint32_t *ready, uint32_t *total, double *seconds);

/*
 * Memory (memroom.c).  srv_mem_room: the bytes this process may still commit
 * before a limit - its memory cgroup's or one above it (v1 or v2), or the
 * node's MemAvailable - less SRV_MEM_KEEP for the daemon itself; UINT64_MAX
 * when nothing limits it; why names the limit with its numbers.  No lock;
 * reads /proc and /sys.  srv_pool_short_of: true once the host pool has
 * stopped growing short of its size and the chunks in flight are done, with
 * why.
 */
#define SRV_MEM_KEEP (64ull << 20)
uint64_t srv_mem_room(char *why, size_t whylen);
bool srv_pool_short_of(srv_t *srv, char *why, size_t whylen);

/* From now on every call that would allocate fails with PINPOOL_ESHUTDOWN. */
void srv_begin_shutdown(srv_t *srv);

/*
 * AllocatePoolMemory for client_id (a session's id, or any other name for a
 * detached client).  device_id -1 is the host pool.  With keep, the slice
 * belongs to no client but to its tag (which must be new): it outlives the
 * caller until someone frees it.  On success fills *out; on failure returns
 * the error with a message a person can act on in msg.  Waits for host chunks
 * still being created when the slice could fit once they are.
 */
int srv_alloc(srv_t *srv, const char *token, const char *client_id, int32_t device_id,
              uint64_t size, uint64_t alignment, const char *tag, bool keep, srv_slice_t *out,
              char *msg, size_t msglen);

/* AttachPoolMemory: the slice the caller's uid keeps under tag.  PINPOOL_ENOENT if none. */
int srv_attach(srv_t *srv, const char *token, const char *client_id, const char *tag,
               srv_slice_t *out, char *msg, size_t msglen);

/* FreePoolMemory: one slice (the client's own, or one its uid keeps), or every
 * slice of client_id when slice_id is 0. */
int srv_free(srv_t *srv, const char *token, const char *client_id, uint64_t slice_id,
             uint64_t *freed_bytes, uint32_t *freed_slices, char *msg, size_t msglen);

/* The daemon's own view (main.c, metrics.c): fills *info and calls uidfn
 * (may be NULL) with the totals of every uid that holds something, at most
 * SRV_UIDS_MAX; under the lock, O(uids): uidfn must not call back into srv. */
void srv_pool_info(srv_t *srv, srv_pool_info_t *info,
                   void (*uidfn)(const srv_uid_usage_t *usage, void *arg), void *arg);
/*
 * GetPoolInfo for the caller whose call carries token: *info, one page of the
 * clients it may see (fn for each; root and the daemon's uid see every uid's,
 * others their own uid's), its uids' totals (uidfn, may be NULL; at most
 * SRV_UIDS_MAX) and *page.  O(log n + page) under the lock.  0, or an
 * error with msg (access refused, a bad page token, another uid's listing).
 */
int srv_pool_page(srv_t *srv, const char *token, const srv_info_query_t *q,
                  srv_pool_info_t *info, void (*fn)(const srv_client_usage_t *usage, void *arg),
                  void (*uidfn)(const srv_uid_usage_t *usage, void *arg), void *arg,
                  srv_info_page_t *page, char *msg, size_t msglen);

/* A GPU on which the daemon holds a CUDA context, and what it keeps there
 * (srv_gpu_footprint; GetPoolInfo's gpus, the metrics). */
typedef struct srv_gpu {
    int32_t device_id;
    const char *role;           /* "device pool", "host pinning", "device pool, host pinning" */
    uint64_t device_pool_bytes; /* 0: none on it */
    uint64_t used, total;       /* cuMemGetInfo: all processes' use, and the GPU's size */
} srv_gpu_t;
/* Take a new snapshot of the GPUs the daemon holds a context on.  May wait
 * for the driver (pinning holds it): never on a gRPC thread. */
void srv_gpu_refresh(srv_t *srv);
/* The last snapshot (from the end of start-up or srv_gpu_refresh) into
 * out[SRV_MAX_DEVICES]; how many.  Never waits. */
uint32_t srv_gpu_footprint(srv_t *srv, srv_gpu_t *out);

/* The effective configuration. */
const srv_config_t *srv_config(const srv_t *srv);
const ipc_host_ops_t *srv_host_backend(const srv_t *srv);

/*
 * fd-socket sessions.  srv_session_open makes a client with a fresh random id
 * (copied into id) tied to the peer; srv_session_close frees every slice it
 * holds and forgets it.
 */
srv_client_t *srv_session_open(srv_t *srv, const ipc_cred_t *cred, char *id, size_t idlen);
/* The secret token of a session (for its HELLO): calls for the session must carry it. */
const char *srv_session_token(const srv_client_t *client);
/* Why a peer may not open a session (--allow-uid/--allow-gid, --max-clients):
 * 0, or PINPOOL_EPERM / PINPOOL_ENOSPC with msg.  groups: the peer's
 * supplementary groups (SO_PEERGROUPS; may be NULL), for --allow-gid. */
int srv_session_admit(srv_t *srv, const ipc_cred_t *cred, const uint32_t *groups,
                      size_t ngroups, char *msg, size_t msglen);

/*
 * The operations a caller may ask for, one row each in access.c's policy
 * table (who may call it, what it acts on, what "allowed" means).  Every gRPC
 * method is one of them (the Batch* methods are their item's), and so is a
 * session's MAP_REQ on the fd socket.
 */
typedef enum srv_op {
    SRV_OP_ALLOC, SRV_OP_FREE, SRV_OP_ATTACH, SRV_OP_RELEASE, SRV_OP_ACQUIRE,
    SRV_OP_PUT, SRV_OP_GET, SRV_OP_EXISTS, SRV_OP_REMOVE,
    SRV_OP_INFO, SRV_OP_CONFIG, SRV_OP_PING, SRV_OP_MAP,
    SRV_NOPS
} srv_op_t;
/*
 * May the caller whose call carries token (its "pinpool-token" metadata: ""
 * for a caller without a session) ask for op, naming client_id (NULL for
 * the methods without one)?  The gate of every gRPC method (service.c's
 * check column); the srv_* calls below ask the same again under their own
 * hold of the lock for what they do.  0, or PINPOOL_EINVAL (a bad
 * client_id), PINPOOL_EPERM or PINPOOL_ENOSPC (--max-clients) with msg.
 */
int srv_access(srv_t *srv, srv_op_t op, const char *token, const char *client_id, char *msg,
               size_t msglen);
void srv_session_close(srv_t *srv, srv_client_t *client);

/*
 * The descriptors of chunks [first, first + count) of slice_id, which must be
 * a host slice of client (or a kept one) and cover those chunks.  The fds stay owned by srv (send
 * them, do not close them).  0, or an error with msg.
 */
int srv_session_chunk_fds(srv_t *srv, srv_client_t *client, uint64_t slice_id,
                          uint32_t first, uint32_t count, int *fds, char *msg, size_t msglen);

/* ---- named objects (objstore.c) and the spill tier (spill.c) ---------------- */

/*
 * Objects are named in the caller's uid's namespace: the caller is the
 * session whose token the call carries, else the daemon's uid (access.c).
 * Another uid's key k is another object, never found.
 *
 * ReleasePoolMemory: client_id gives up host slice slice_id, which becomes the
 * object key (resident, most recently used; spillable).  ttl_ms 0: no expiry.
 * PINPOOL_EEXIST if key is taken, ENOENT/EPERM for the slice.
 */
int srv_release(srv_t *srv, const char *token, const char *client_id, uint64_t slice_id,
                const char *key, uint64_t ttl_ms, uint64_t *size, char *msg, size_t msglen);
/*
 * AcquirePoolMemory: the object key becomes a slice of client_id again (restored
 * from the tier if it was spilled, perhaps at a new offset) and leaves the
 * object table.  Waits (bounded) while another thread spills or restores it.
 */
int srv_acquire(srv_t *srv, const char *token, const char *client_id, const char *key,
                srv_slice_t *out, char *msg, size_t msglen);
/* Put: store len bytes under key (replacing an object there).  The bytes are
 * copied with the lock released, into a slice nobody else can see yet. */
int srv_obj_put(srv_t *srv, const char *token, const char *key, const void *data, uint64_t len,
                uint64_t ttl_ms, char *msg, size_t msglen);
/* Get: *data (malloc'd, the caller frees) and *len.  PINPOOL_ENOKEY if absent;
 * -EMSGSIZE with *len the object's size, before any copy, when it is larger
 * than max bytes.  The copy runs with the lock released (the object pinned). */
int srv_obj_get(srv_t *srv, const char *token, const char *key, uint64_t max, void **data,
                uint64_t *len, char *msg, size_t msglen);
/* 1, 0, or an error. */
int srv_obj_exists(srv_t *srv, const char *token, const char *key, char *msg, size_t msglen);
int srv_obj_remove(srv_t *srv, const char *token, const char *key, char *msg, size_t msglen);

/*
 * At a clean exit (after the last call and session ended, before
 * srv_destroy): spill every resident object to the tier, so that a restart on
 * the same tier finds it (recover.c).  Logs its progress; a SIGTERM or SIGINT
 * while it runs stops it, and the objects not yet written are then lost.
 */
void srv_persist_objects(srv_t *srv);

/*
 * Takeover (handover.c; server/takeover.c runs it).  The gate: every gRPC
 * method that acts on slices or objects runs between srv_gate_enter (0, or
 * PINPOOL_EUPGRADE while paused: the caller answers that at once, and
 * libpinpool tries again) and srv_gate_leave.  The old daemon:
 * srv_handover_check says what cannot be handed over (PINPOOL_EINVAL with
 * msg); srv_handover_pause closes the gate, waits up to wait_ms for the
 * calls inside and for spills and restores to settle, and stops the cleaner
 * and the maintenance thread
 * (PINPOOL_ETIMEOUT with msg, the gate open again, if they did not);
 * srv_handover_save writes the whole state into *blob (malloc'd, *len bytes),
 * the chunks' descriptors into *fds (malloc'd, *nfds) and the spill tier's
 * claim into *tier_fd (-1: no tier; the descriptors stay srv's); srv_handover_resume opens the gate again (a failed takeover).
 * The new daemon, after srv_create and before srv_start_chunks:
 * srv_handover_load makes the state again from blob, the chunks' fds and
 * the tier's claim tier_fd (-1: none; all taken, closed on failure too),
 * opening the spill tier under that claim, rebuilds the charges and compares
 * them with the old daemon's; 0, or an error with msg (srv must then be
 * destroyed).  srv_handover_session: the restored session called id, or NULL.
 */
int srv_gate_enter(srv_t *srv);
void srv_gate_leave(srv_t *srv);
int srv_handover_check(srv_t *srv, char *msg, size_t msglen);
int srv_handover_pause(srv_t *srv, uint32_t wait_ms, char *msg, size_t msglen);
void srv_handover_resume(srv_t *srv);
int srv_handover_save(srv_t *srv, void **blob, size_t *len, int **fds, uint32_t *nfds,
                      int *tier_fd, char *msg, size_t msglen);
int srv_handover_load(srv_t *srv, const void *blob, size_t len, int *fds, uint32_t nfds,
                      int tier_fd, char *msg, size_t msglen);
srv_client_t *srv_handover_session(srv_t *srv, const char *id);

/* The spill counters; add (may be NULL) gets the tier's own named stats. */
void srv_spill_info(srv_t *srv, srv_spill_info_t *out,
                    void (*add)(const char *name, const char *value, void *arg), void *arg);

#endif
