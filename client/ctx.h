/*
 * ctx.h - the layout of a libpinpool context, shared by the three files that
 * own its parts; not installed, not exported, not for the library's other
 * parts (swap.c, fanout.c, arena.c use pinpool.h and internal.h only).
 *
 *   client/client.c   the context: connect, close, reconnect, the failure
 *                     messages, the extension slots, the calls (pinpool__call)
 *   client/session.c  one session (pinpool__conn_t): the trust checks of the
 *                     socket directory and the daemon's uid, the greeting, the
 *                     fd-socket exchange (replies matched by sequence number,
 *                     each wait bounded) and whether the session still lives
 *   client/slices.c   the slices this process holds and the mappings of the
 *                     chunk runs behind them
 *   client/devmap.c   the mapping of a vmm device pool's slice (its own address
 *                     range; pinpool_dev_unmap / pinpool_dev_remap)
 *
 * Lock order: ctx->lock (slices, runs, device pools, extensions, the ranges
 * of ended sessions) before conn->fd_lock; ctx->conn_lock (which session is
 * current, and the sessions' reference counts) is a leaf: held only to read
 * or swap ctx->conn and to count references, never across a call.  gRPC
 * calls run without any of them, on a session they hold a reference to.
 */
#ifndef PINPOOL_CLIENT_CTX_H
#define PINPOOL_CLIENT_CTX_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devmem.h"
#include "internal.h"
#include "ipc.h"
#include "pinpool.h"
#include "rbtree.h" /* after every other header */
#include "rbtree_end.h"

#define PINPOOL__MSG_LEN 512
#define PINPOOL__PATH_LEN 128

/*
 * One session with the daemon: its gRPC channel and, with a session, its fd
 * socket (the lease) and the daemon's greeting.  Everything but refs, seq and
 * lost is set when it is made and never changes, so a call that holds a
 * reference reads it without a lock.  A context has one current session;
 * pinpool_reconnect makes a new one, and the old one is freed when its last
 * call lets go of it.
 */
typedef struct pinpool__conn {
    unsigned refs; /* under ctx->conn_lock: the context's own + calls holding it */
    pinpool__rpc_t *rpc;
    int fd;        /* the fd socket (non-blocking): the lease; -1 without a session */
    int dirfd;     /* the checked socket directory (O_PATH), which both sockets are
                    * reached through (/proc/self/fd/N/NAME); -1 for tcp: and where
                    * /proc is missing */
    uint64_t gen;  /* the context's session number: 1 for pinpool_connect's, +1 per reconnect */
    char client_id[IPC_CLIENT_ID_LEN];
    char token[IPC_TOKEN_LEN];
    const ipc_host_ops_t *host; /* the daemon's host backend (NULL without a session) */
    uint64_t chunk_size;
    uint32_t peer_uid;          /* the daemon's uid (SO_PEERCRED) */
    pthread_mutex_t fd_lock;    /* one request/answer pair on fd at a time */
    uint32_t seq;               /* under fd_lock: the last request's number */
    int lost;                   /* atomic: the fd socket closed (the session ended) */
    uint64_t max_message;       /* atomic: the daemon's --max-message-size; 0 unknown */
} pinpool__conn_t;

typedef struct pinpool__run {
    RB_ENTRY(pinpool__run) node;
    uint32_t first, n; /* chunks */
    void *addr;
    unsigned access;   /* IPC_MAP_* granted */
    unsigned refs;     /* slices using the run */
} pinpool__run_t;

typedef struct pinpool__slice {
    RB_ENTRY(pinpool__slice) node;
    uint64_t id;
    pinpool__run_t *map; /* NULL for device slices */
    struct pinpool__devmap *dev; /* a vmm device slice's mapping (devmap.c); else NULL */
} pinpool__slice_t;

RB_HEAD(pinpool__run_tree, pinpool__run);
RB_HEAD(pinpool__slice_tree, pinpool__slice);

/* A GPU's device pool, opened from its IPC handle once and kept open. */
typedef struct pinpool__dev_pool {
    bool open;
    int32_t device;
    uint8_t handle[IPC_HANDLE_BYTES];
    uint64_t base;
} pinpool__dev_pool_t;

/* The address range of a run mapped for a session that ended: unmapped, but
 * kept reserved (PROT_NONE) until pinpool_close, so that no later mapping
 * lands there and an old pointer can be told from a new one. */
typedef struct pinpool__dead_range {
    void *addr;
    uint64_t bytes;
    const ipc_host_ops_t *host; /* whose release() frees the reservation */
    uint64_t gen;               /* the session it belonged to */
} pinpool__dead_range_t;

struct pinpool_ctx {
    int err;                             /* atomic: why connecting failed; 0 when it did not */
    char errmsg[PINPOOL__MSG_LEN];       /* its message (written before err is set) */
    char lost_msg[PINPOOL__MSG_LEN];     /* what PINPOOL_ESESSION says here (set at connect) */
    char path[PINPOOL__PATH_LEN];        /* the gRPC socket path (or tcp:HOST:PORT) */
    bool want_session;                   /* pinpool_connect (true) or rpc-only (false) */
    char client_id[IPC_CLIENT_ID_LEN];   /* the current session's (pinpool_client_id) */
    pthread_mutex_t reconnect_lock;      /* one pinpool_reconnect at a time; before lock */
    pthread_mutex_t conn_lock;
    pinpool__conn_t *conn;               /* under conn_lock; NULL when connecting failed */
    uint64_t gen;                        /* atomic: conn->gen of the current session */
    uint64_t lost_gen;                   /* atomic: the session found ended (== gen: the
                                          * current one; 0: none yet) */
    int64_t checked_ns;                  /* atomic: when the fd socket was last polled */

    pthread_mutex_t lock;
    struct pinpool__run_tree runs;     /* by first chunk, then length */
    struct pinpool__slice_tree slices; /* by id */
    pinpool__dev_pool_t devs[PINPOOL_MAX_DEVICES];
    pinpool__dead_range_t *dead;
    uint32_t ndead, capdead;
    struct {
        const pinpool__ext_t *ext;
        void *state;
    } ext[PINPOOL__MAX_EXT]; /* the states of swap.c, fanout.c (under lock) */
    int next;
};

/* ---- client.c ---------------------------------------------------------------------- */

/* The current session with a reference taken (drop it with pinpool__conn_put),
 * or NULL when connecting failed. */
pinpool__conn_t *pinpool__conn_get(pinpool_ctx_t *ctx);
void pinpool__conn_put(pinpool_ctx_t *ctx, pinpool__conn_t *c);
/* PINPOOL_ESESSION with the context's message (the session ended). */
int pinpool__session_fail(const pinpool_ctx_t *ctx);
/* pinpool__check on session c (held by the caller). */
int pinpool__check_on(pinpool_ctx_t *ctx, pinpool__conn_t *c, bool session, bool args_ok,
                      const char *args);
/* pinpool__call on session c (held by the caller). */
int pinpool__call_on(pinpool_ctx_t *ctx, pinpool__conn_t *c, pinpool__method_t m,
                     const ProtobufCMessage *req, void *reply);

/* ---- session.c --------------------------------------------------------------------- */

/*
 * Make a session with the daemon at path (a unix socket path, or
 * "tcp:HOST:PORT": then only the gRPC channel), with its fd socket when
 * session is true: the socket's directory is checked, the fd socket's peer
 * too, and the greeting read.  0 and *out (refs 1), or the error with its
 * message in msg.
 */
int pinpool__conn_open(pinpool__conn_t **out, const char *path, bool session, uint64_t gen,
                       char *msg, size_t msglen);
/* Close c's sockets and free it (its last reference is gone). */
void pinpool__conn_free(pinpool__conn_t *c);
/*
 * Whether c's session has ended: its fd socket closed (the daemon exited,
 * restarted or ended the session); wait_ms > 0 waits that long for the close
 * to show (a call that just failed may have raced it).  false for a context
 * without a session.
 */
bool pinpool__conn_lost(pinpool__conn_t *c, int wait_ms);
/*
 * The descriptors of chunks [first, first + n) of slice id over c's fd
 * socket into fds; each answer is matched to its request by sequence number
 * (an answer that comes after its request gave up is discarded with its
 * descriptors) and each wait is bounded ($PINPOOL_FD_TIMEOUT_MS, 10 s: then
 * PINPOOL_ETIMEOUT; the session stays).  0, or the error (pinpool__fail on
 * ctx; PINPOOL_ESESSION when the fd socket closed).  On failure no
 * descriptor is left open.
 */
int pinpool__conn_fetch_fds(pinpool_ctx_t *ctx, pinpool__conn_t *c, uint64_t id, uint32_t first,
                            uint32_t n, int *fds);

/* ---- slices.c ---------------------------------------------------------------------- */

/* Forget every slice and unmap every run (mapped by c's host backend) and
 * device pool (ctx->lock held).  keep_reserved: the runs' address ranges stay
 * reserved, as dead ranges of c's session (reconnect); else they are released,
 * and the dead ranges of earlier sessions too (close). */
void pinpool__drop_mappings(pinpool_ctx_t *ctx, const pinpool__conn_t *c, bool keep_reserved);

/* ---- devmap.c ---------------------------------------------------------------------- */

/*
 * A device slice of a vmm device pool mapped in this process: its chunks
 * (their descriptors fetched on session c's fd socket) imported into an
 * address range of its own, read-write or read-only.  Open maps it (ptr: the
 * slice's first byte); unmap lets the memory go but keeps the range; remap
 * fetches the descriptors again (on c, the session the slice is of) and maps
 * them at the same address with the same access; close undoes it all.  The
 * caller holds ctx->lock around each.
 */
typedef struct pinpool__devmap pinpool__devmap_t;
int pinpool__devmap_open(pinpool_ctx_t *ctx, pinpool__conn_t *c, uint64_t slice_id,
                         int32_t device, uint32_t first_chunk, uint32_t nchunks,
                         uint64_t chunk_size, uint64_t offset, bool writable,
                         pinpool__devmap_t **out, void **ptr);
int pinpool__devmap_unmap(pinpool_ctx_t *ctx, pinpool__devmap_t *m);
int pinpool__devmap_remap(pinpool_ctx_t *ctx, pinpool__conn_t *c, pinpool__devmap_t *m);
void pinpool__devmap_close(pinpool__devmap_t *m);

#endif
