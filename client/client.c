/*
 * client.c - libpinpool's context: connect and close, the failure messages,
 * the calls to the daemon (one method table, pinpool__call) and the slices
 * (alloc, attach, acquire, release, free: their mapping in this process).
 * The calls without a session are objects.c's.
 *
 * Owns: the fd-socket session (the lease), the slices this process holds and
 * the mappings of the chunk runs behind them (a vmm device slice's mapping is
 * devmap.c's; pinpool_dev_unmap/remap reach it here).  A run is mapped once, on the
 * first slice that needs it, and unmapped when its last slice is freed.  The
 * slots where the library's other parts (swap.c, fanout.c) keep their state
 * per context (pinpool__ext_get), which pinpool_close tears down first.
 * Never: frees a slice locally that the daemon still counts, or the reverse,
 * except when the daemon says the slice is gone; calls into swap.c or
 * fanout.c other than through their pinpool__ext_t.
 * Locking: ctx->lock guards the slice, map and extension tables and is held
 * across a run's descriptor fetch and mapping (so that a run is mapped once);
 * ctx->fd_lock serialises request/answer pairs on the fd socket and is taken
 * inside ctx->lock.  gRPC calls run without either.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "cudaload.h"
#include "devmem.h"
#include "internal.h"
#include "ipc.h"
#include "paths.h"
#include "pinpool.pb-c.h"
#include "rbtree.h"

#define METHOD(name) "/pinpool.v1.PinPool/" name
#define MSG_LEN 512
#define HELLO_TIMEOUT_S 10

typedef struct run_map {
    RB_ENTRY(run_map) node;
    uint32_t first, n; /* chunks */
    void *addr;
    unsigned access;   /* IPC_MAP_* granted */
    unsigned refs;     /* slices using the run */
} run_map_t;

typedef struct slice_rec {
    RB_ENTRY(slice_rec) node;
    uint64_t id;
    run_map_t *map; /* NULL for device slices */
    pinpool__devmap_t *dev; /* a vmm device slice's mapping (devmap.c); else NULL */
} slice_rec_t;

/* A GPU's device pool, opened from its IPC handle once and kept open. */
typedef struct dev_pool {
    bool open;
    int32_t device;
    uint8_t handle[IPC_HANDLE_BYTES];
    uint64_t base;
} dev_pool_t;

static int run_cmp(const run_map_t *a, const run_map_t *b)
{
    if (a->first != b->first)
        return a->first < b->first ? -1 : 1;
    return a->n < b->n ? -1 : a->n > b->n;
}

static int slice_cmp(const slice_rec_t *a, const slice_rec_t *b)
{
    return a->id < b->id ? -1 : a->id > b->id;
}

RB_HEAD(run_tree, run_map);
RB_GENERATE_STATIC(run_tree, run_map, node, run_cmp)
RB_HEAD(slice_tree, slice_rec);
RB_GENERATE_STATIC(slice_tree, slice_rec, node, slice_cmp)
#include "rbtree_end.h"

struct pinpool_ctx {
    int err;
    char errmsg[MSG_LEN]; /* why connecting failed */
    char client_id[IPC_CLIENT_ID_LEN];
    char token[IPC_TOKEN_LEN]; /* the session's secret; every call carries it */
    pinpool__rpc_t *rpc;
    int fd; /* the fd socket: our lease; -1 without a session */
    const ipc_host_ops_t *host;
    uint64_t chunk_size;
    uint32_t seq;
    pthread_mutex_t lock;
    pthread_mutex_t fd_lock;
    struct run_tree runs;
    struct slice_tree slices;
    dev_pool_t devs[PINPOOL_MAX_DEVICES];
    struct {
        const pinpool__ext_t *ext;
        void *state;
    } ext[PINPOOL__MAX_EXT]; /* the states of swap.c, fanout.c (under lock) */
    int next;
};

/* The calling thread's last failure message, and the context it was on. */
static __thread char tls_msg[MSG_LEN];
static __thread const pinpool_ctx_t *tls_ctx;

int pinpool__fail(const pinpool_ctx_t *ctx, int err, const char *fmt, ...)
{
    char msg[MSG_LEN]; /* an argument may be tls_msg itself (pinpool_errmsg) */
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    memcpy(tls_msg, msg, sizeof(tls_msg));
    tls_ctx = ctx;
    return err;
}

/* Why connecting failed: ctx->err and the message pinpool_errmsg gives on
 * every thread (a context that could not connect keeps its reason). */
__attribute__((format(printf, 3, 4))) static int connect_fail(pinpool_ctx_t *ctx, int err,
                                                              const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(ctx->errmsg, sizeof(ctx->errmsg), fmt, ap);
    va_end(ap);
    ctx->err = err;
    return err;
}

int pinpool_err(const pinpool_ctx_t *ctx)
{
    return ctx == NULL ? -ENOMEM : ctx->err;
}

const char *pinpool_errmsg(const pinpool_ctx_t *ctx)
{
    if (ctx == NULL)
        return "out of memory";
    if (tls_ctx == ctx)
        return tls_msg;
    return ctx->errmsg;
}

const char *pinpool_client_id(const pinpool_ctx_t *ctx)
{
    return ctx != NULL ? ctx->client_id : "";
}

int pinpool__ext_get(pinpool_ctx_t *ctx, const pinpool__ext_t *ext, void **state)
{
    int rc = 0, i;

    pthread_mutex_lock(&ctx->lock);
    for (i = 0; i < ctx->next && ctx->ext[i].ext != ext; i++)
        ;
    if (i == ctx->next) {
        void *made = NULL;
        if (i == PINPOOL__MAX_EXT)
            rc = pinpool__fail(ctx, PINPOOL_EINTERNAL,
                               "%s: no room for its state in the context", ext->name);
        else
            rc = ext->make(ctx, &made);
        if (rc == 0) {
            ctx->ext[i].ext = ext;
            ctx->ext[i].state = made;
            ctx->next++;
        }
    }
    *state = rc == 0 ? ctx->ext[i].state : NULL;
    pthread_mutex_unlock(&ctx->lock);
    return rc;
}

void *pinpool__ext_find(pinpool_ctx_t *ctx, const pinpool__ext_t *ext)
{
    void *state = NULL;

    pthread_mutex_lock(&ctx->lock);
    for (int i = 0; i < ctx->next; i++)
        if (ctx->ext[i].ext == ext)
            state = ctx->ext[i].state;
    pthread_mutex_unlock(&ctx->lock);
    return state;
}

int pinpool__ctx_cuda_host(const pinpool_ctx_t *ctx)
{
    return ctx != NULL && ctx->host != NULL && ctx->host->cuda;
}

/* ---- connect / close -------------------------------------------------------------- */

static pinpool_ctx_t *ctx_new(void)
{
    pinpool_ctx_t *ctx = calloc(1, sizeof(*ctx));

    if (ctx == NULL)
        return NULL;
    ctx->fd = -1;
    pthread_mutex_init(&ctx->lock, NULL);
    pthread_mutex_init(&ctx->fd_lock, NULL);
    RB_INIT(&ctx->runs);
    RB_INIT(&ctx->slices);
    return ctx;
}

static int resolve_path(const char *socket_path, char *buf, size_t len)
{
    const char *env = getenv("PINPOOL_SOCKET");

    if (socket_path == NULL && env != NULL && env[0] != '\0')
        socket_path = env;
    if (socket_path == NULL)
        return ipc_default_socket(buf, len);
    if ((size_t)snprintf(buf, len, "%s", socket_path) >= len)
        return -ENAMETOOLONG;
    return 0;
}

/* Open the fd socket and read the daemon's HELLO.  0, or the error (connect_fail). */
static int open_session(pinpool_ctx_t *ctx, const char *path)
{
    char fdpath[128], why[256];
    ipc_hello_t hello;
    size_t nfds = 0;
    ssize_t n;
    int fd, rc = 0;

    if (ipc_fd_socket_path(path, fdpath, sizeof(fdpath)) != 0)
        return connect_fail(ctx, -ENAMETOOLONG, "socket path too long: %s", path);
    fd = ipc_connect_seqpacket(fdpath);
    if (fd < 0)
        return connect_fail(ctx, PINPOOL_ECONNECT,
                            "cannot connect to the pinpool daemon at %s: %s (is `pinpool serve` "
                            "running? set PINPOOL_SOCKET or pass its --socket path)",
                            fdpath, strerror(-fd));
    struct timeval tv = {.tv_sec = HELLO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    n = ipc_recv_msg(fd, &hello, sizeof(hello), NULL, 0, &nfds);
    if (n > 0 && ipc_msg_check(&hello, (size_t)n) == IPC_MSG_HELLO && hello.status != 0)
        rc = connect_fail(ctx, hello.status, "the pinpool daemon refused this process: %s",
                          hello.reason);
    else if (n <= 0 || ipc_msg_check(&hello, (size_t)n) != IPC_MSG_HELLO)
        rc = connect_fail(ctx, PINPOOL_EPROTO, "%s did not greet us as a pinpool daemon does (%s)",
                          fdpath, n < 0    ? strerror((int)-n)
                                  : n == 0 ? "it closed the connection"
                                           : "bad message");
    else if ((ctx->host = ipc_host_backend(hello.backend)) == NULL)
        rc = connect_fail(ctx, PINPOOL_EPROTO,
                          "the daemon's host backend '%s' is not supported by this libpinpool %s",
                          hello.backend, PINPOOL_VERSION_STRING);
    else if (ctx->host->cuda && ipc_cuda_load(why, sizeof(why)) != 0)
        rc = connect_fail(ctx, PINPOOL_ECUDA,
                          "the daemon's host memory is CUDA memory (%s) but this process cannot "
                          "use CUDA: %s", hello.backend, why);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    ctx->fd = fd;
    ctx->chunk_size = hello.chunk_size;
    snprintf(ctx->client_id, sizeof(ctx->client_id), "%s", hello.client_id);
    snprintf(ctx->token, sizeof(ctx->token), "%s", hello.token);
    return 0;
}

static pinpool_ctx_t *connect_ctx(const char *socket_path, bool session)
{
    pinpool_ctx_t *ctx = ctx_new();
    char path[128];
    int rc;

    if (ctx == NULL)
        return NULL;
    rc = resolve_path(socket_path, path, sizeof(path));
    if (rc != 0) {
        connect_fail(ctx, rc, "socket path too long");
        return ctx;
    }
    if (session && open_session(ctx, path) != 0)
        return ctx;
    rc = pinpool__rpc_open(&ctx->rpc, path);
    if (rc != 0)
        connect_fail(ctx, rc, "cannot open a gRPC channel: %s", pinpool_strerror(rc));
    else
        pinpool__rpc_set_token(ctx->rpc, ctx->token);
    return ctx;
}

pinpool_ctx_t *pinpool_connect(const char *socket_path)
{
    return connect_ctx(socket_path, true);
}

pinpool_ctx_t *pinpool__connect_rpc_only(const char *socket_path)
{
    return connect_ctx(socket_path, false);
}

static void unmap_run(pinpool_ctx_t *ctx, run_map_t *m)
{
    uint64_t bytes = (uint64_t)m->n * ctx->chunk_size;

    RB_REMOVE(run_tree, &ctx->runs, m);
    ctx->host->unmap(m->addr, ctx->chunk_size, m->n);
    ctx->host->release(m->addr, bytes);
    free(m);
}

void pinpool_close(pinpool_ctx_t *ctx)
{
    slice_rec_t *s, *snext;
    run_map_t *m, *mnext;

    if (ctx == NULL)
        return;
    /* First the other parts' states (swap tags: their device memory and their
     * host copies' mappings; fan-out streams, before the device pools close). */
    while (ctx->next > 0) {
        ctx->next--;
        ctx->ext[ctx->next].ext->destroy(ctx, ctx->ext[ctx->next].state);
    }
    RB_FOREACH_SAFE(s, slice_tree, &ctx->slices, snext) {
        RB_REMOVE(slice_tree, &ctx->slices, s);
        pinpool__devmap_close(s->dev);
        free(s);
    }
    RB_FOREACH_SAFE(m, run_tree, &ctx->runs, mnext)
        unmap_run(ctx, m);
    for (int i = 0; i < PINPOOL_MAX_DEVICES; i++)
        if (ctx->devs[i].open)
            ipc_devmem_close(ctx->devs[i].device, ctx->devs[i].base);
    if (ctx->fd >= 0)
        close(ctx->fd); /* the daemon frees our slices */
    pinpool__rpc_close(ctx->rpc);
    pthread_mutex_destroy(&ctx->lock);
    pthread_mutex_destroy(&ctx->fd_lock);
    if (tls_ctx == ctx)
        tls_ctx = NULL;
    free(ctx);
}

/* ---- mapping ------------------------------------------------------------------------- */

/* Ask the daemon for the fds of chunks [first, first + n) of slice id. */
int pinpool__fetch_fds(pinpool_ctx_t *ctx, uint64_t id, uint32_t first, uint32_t n, int *fds)
{
    uint32_t got = 0;
    int rc = 0;

    pthread_mutex_lock(&ctx->fd_lock);
    while (got < n) {
        uint32_t count = n - got < IPC_MAX_FDS ? n - got : IPC_MAX_FDS;
        ipc_map_req_t req;
        ipc_map_resp_t resp;
        size_t nfds = 0;
        ssize_t len;

        memset(&req, 0, sizeof(req));
        ipc_hdr_init(&req.hdr, IPC_MSG_MAP_REQ, ++ctx->seq, sizeof(req));
        req.slice_id = id;
        req.first_chunk = first + got;
        req.count = count;
        rc = ipc_send_msg(ctx->fd, &req, sizeof(req), NULL, 0);
        if (rc != 0) {
            rc = pinpool__fail(ctx, PINPOOL_ECONNECT,
                               "lost the fd socket to the daemon: %s", strerror(-rc));
            break;
        }
        len = ipc_recv_msg(ctx->fd, &resp, sizeof(resp), fds + got, count, &nfds);
        if (len <= 0 || ipc_msg_check(&resp, (size_t)len) != IPC_MSG_MAP_RESP ||
            resp.hdr.seq != req.hdr.seq) {
            for (size_t i = 0; i < nfds; i++)
                close(fds[got + i]);
            if (len == 0 || len == -ECONNRESET || len == -EPIPE)
                rc = pinpool__fail(ctx, PINPOOL_ECONNECT,
                                   "the daemon closed the fd socket (it stopped?)");
            else
                rc = pinpool__fail(ctx, PINPOOL_EPROTO, "bad answer on the fd socket (%s)",
                                   len < 0 ? strerror((int)-len) : "malformed");
            break;
        }
        if (resp.status != 0 || nfds != count || resp.count != count) {
            for (size_t i = 0; i < nfds; i++)
                close(fds[got + i]);
            rc = pinpool__fail(ctx, resp.status != 0 ? resp.status : PINPOOL_EPROTO,
                               "the daemon refused the chunks of slice %" PRIu64 ": %s", id,
                               pinpool_strerror(resp.status != 0 ? resp.status : PINPOOL_EPROTO));
            break;
        }
        got += count;
    }
    pthread_mutex_unlock(&ctx->fd_lock);
    if (rc != 0)
        for (uint32_t i = 0; i < got; i++)
            close(fds[i]);
    return rc;
}

/* The mapping of run [first, first + n), made if needed.  Lock held. */
static int get_run(pinpool_ctx_t *ctx, uint64_t id, uint32_t first, uint32_t n, unsigned access,
                   run_map_t **out)
{
    run_map_t key = {.first = first, .n = n}, *m;
    int *fds = NULL;
    int rc;

    m = RB_FIND(run_tree, &ctx->runs, &key);
    if (m != NULL) {
        if ((m->access & access) != access) { /* mapped GPU-only; now the CPU too */
            rc = ctx->host->access(m->addr, (uint64_t)n * ctx->chunk_size, m->access | access);
            if (rc != 0)
                return pinpool__fail(ctx, rc,
                                     "cannot widen the access to slice %" PRIu64 ": %s", id,
                                     pinpool_strerror(rc));
            m->access |= access;
        }
        *out = m;
        return 0;
    }
    m = calloc(1, sizeof(*m));
    fds = calloc(n, sizeof(*fds));
    if (m == NULL || fds == NULL) {
        rc = pinpool__fail(ctx, -ENOMEM, "out of memory");
        goto fail;
    }
    m->first = first;
    m->n = n;
    rc = pinpool__fetch_fds(ctx, id, first, n, fds);
    if (rc != 0)
        goto fail;
    rc = ctx->host->reserve((uint64_t)n * ctx->chunk_size, &m->addr);
    if (rc != 0) {
        for (uint32_t i = 0; i < n; i++)
            close(fds[i]);
        rc = pinpool__fail(ctx, rc, "cannot reserve address space for %" PRIu32 " chunks: %s", n,
                           pinpool_strerror(rc));
        goto fail;
    }
    /* Backends without an access() op map with every access at once. */
    m->access = ctx->host->access != NULL ? access : IPC_MAP_CPU | IPC_MAP_GPU;
    rc = ctx->host->map(m->addr, ctx->chunk_size, fds, n, access);
    if (rc != 0) {
        ctx->host->release(m->addr, (uint64_t)n * ctx->chunk_size);
        rc = pinpool__fail(ctx, rc, "cannot map the chunks of slice %" PRIu64 ": %s", id,
                           pinpool_strerror(rc));
        goto fail;
    }
    free(fds);
    RB_INSERT(run_tree, &ctx->runs, m);
    *out = m;
    return 0;

fail:
    free(fds);
    free(m);
    return rc;
}

/* This process's address of the device pool of GPU device (opened once). */
static int device_base(pinpool_ctx_t *ctx, int32_t device, const ProtobufCBinaryData *handle,
                       uint64_t *base)
{
    dev_pool_t *free_slot = NULL;
    char why[256];
    int rc = 0;

    if (handle->len != IPC_HANDLE_BYTES)
        return pinpool__fail(ctx, PINPOOL_EPROTO,
                             "the daemon sent a %zu-byte CUDA IPC handle", handle->len);
    pthread_mutex_lock(&ctx->lock);
    for (int i = 0; i < PINPOOL_MAX_DEVICES; i++) {
        dev_pool_t *d = &ctx->devs[i];
        if (d->open && d->device == device && memcmp(d->handle, handle->data, IPC_HANDLE_BYTES) == 0) {
            *base = d->base;
            goto out;
        }
        if (!d->open && free_slot == NULL)
            free_slot = d;
    }
    if (free_slot == NULL) {
        rc = pinpool__fail(ctx, PINPOOL_ENODEV, "too many device pools open");
        goto out;
    }
    rc = ipc_devmem_open(device, handle->data, base, why, sizeof(why));
    if (rc != 0) {
        rc = pinpool__fail(ctx, rc, "%s", why);
        goto out;
    }
    free_slot->open = true;
    free_slot->device = device;
    memcpy(free_slot->handle, handle->data, IPC_HANDLE_BYTES);
    free_slot->base = *base;
out:
    pthread_mutex_unlock(&ctx->lock);
    return rc;
}

/* Map the slice resp describes and record it; fills *out.  On failure the
 * slice is not recorded (the caller decides whether to free it). */
static int take_slice(pinpool_ctx_t *ctx, const Pinpool__V1__AllocatePoolMemoryResponse *resp,
                      uint32_t flags, pinpool_slice_t *out)
{
    slice_rec_t *rec;
    run_map_t *m = NULL;
    uint64_t base = 0;
    void *ptr;
    bool vmm = resp->device_id >= 0 && resp->cuda_ipc_handle.len == 0;
    int rc;

    if (vmm) {
        if (resp->n_chunks == 0 || resp->chunks[0]->chunk_index > UINT32_MAX - resp->n_chunks)
            return pinpool__fail(ctx, PINPOOL_EPROTO, "the daemon's reply for device slice %"
                                 PRIu64 " has no chunks", resp->slice_id);
        ptr = NULL; /* below, under the lock */
    } else if (resp->device_id >= 0) {
        rc = device_base(ctx, resp->device_id, &resp->cuda_ipc_handle, &base);
        if (rc != 0)
            return rc;
        ptr = (void *)(uintptr_t)(base + resp->start_offset);
    } else if (resp->n_chunks == 0 || resp->chunk_size != ctx->chunk_size) {
        return pinpool__fail(ctx, PINPOOL_EPROTO,
                             "the daemon's reply for slice %" PRIu64 " has no chunks",
                             resp->slice_id);
    } else {
        ptr = NULL; /* below, under the lock */
    }
    rec = calloc(1, sizeof(*rec));
    if (rec == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    rec->id = resp->slice_id;
    pthread_mutex_lock(&ctx->lock);
    if (RB_FIND(slice_tree, &ctx->slices, rec) != NULL) {
        pthread_mutex_unlock(&ctx->lock);
        free(rec);
        return pinpool__fail(ctx, PINPOOL_EEXIST,
                             "slice %" PRIu64 " is already mapped in this process",
                             resp->slice_id);
    }
    rc = 0;
    if (vmm)
        rc = pinpool__devmap_open(ctx, resp->slice_id, resp->device_id,
                                  resp->chunks[0]->chunk_index, (uint32_t)resp->n_chunks,
                                  resp->chunk_size, resp->chunks[0]->offset,
                                  (flags & PINPOOL_ATTACH_WRITABLE) != 0, &rec->dev, &ptr);
    if (resp->device_id < 0) {
        unsigned access = IPC_MAP_GPU | ((flags & PINPOOL_ALLOC_GPU_ONLY) ? 0 : IPC_MAP_CPU);
        rc = get_run(ctx, resp->slice_id, resp->chunks[0]->chunk_index, (uint32_t)resp->n_chunks,
                     access, &m);
        if (rc == 0) {
            m->refs++;
            ptr = (char *)m->addr + resp->chunks[0]->offset;
        }
    }
    if (rc == 0) {
        rec->map = m;
        RB_INSERT(slice_tree, &ctx->slices, rec);
    }
    pthread_mutex_unlock(&ctx->lock);
    if (rc != 0) {
        free(rec);
        return rc;
    }
    out->id = resp->slice_id;
    out->ptr = ptr;
    out->size = resp->size_bytes;
    out->device_id = resp->device_id;
    out->start_offset = resp->start_offset;
    return 0;
}

/* Forget slice rec locally (lock held). */
static void drop_slice(pinpool_ctx_t *ctx, slice_rec_t *rec)
{
    RB_REMOVE(slice_tree, &ctx->slices, rec);
    if (rec->map != NULL && --rec->map->refs == 0)
        unmap_run(ctx, rec->map);
    pinpool__devmap_close(rec->dev);
    free(rec);
}

/* ---- the calls --------------------------------------------------------------------------- */

/* Each method the library calls, with the type of its reply. */
#define REPLY(name) &pinpool__v1__##name##_response__descriptor
static const struct {
    const char *path;
    const ProtobufCMessageDescriptor *reply;
} methods[] = {
    [PINPOOL__M_ALLOCATE] = {METHOD("AllocatePoolMemory"), REPLY(allocate_pool_memory)},
    [PINPOOL__M_ATTACH] = {METHOD("AttachPoolMemory"), REPLY(allocate_pool_memory)},
    [PINPOOL__M_ACQUIRE] = {METHOD("AcquirePoolMemory"), REPLY(allocate_pool_memory)},
    [PINPOOL__M_FREE] = {METHOD("FreePoolMemory"), REPLY(free_pool_memory)},
    [PINPOOL__M_RELEASE] = {METHOD("ReleasePoolMemory"), REPLY(release_pool_memory)},
    [PINPOOL__M_PUT] = {METHOD("Put"), REPLY(put)},
    [PINPOOL__M_GET] = {METHOD("Get"), REPLY(get)},
    [PINPOOL__M_EXISTS] = {METHOD("Exists"), REPLY(exists)},
    [PINPOOL__M_REMOVE] = {METHOD("Remove"), REPLY(remove)},
    [PINPOOL__M_PING] = {METHOD("Ping"), REPLY(ping)},
    [PINPOOL__M_INFO] = {METHOD("GetPoolInfo"), REPLY(get_pool_info)},
};

int pinpool__check(const pinpool_ctx_t *ctx, bool session, bool args_ok, const char *args)
{
    if (ctx == NULL)
        return -EINVAL;
    if (ctx->err != 0)
        return pinpool__fail(ctx, PINPOOL_ECLOSED, "not connected: %s", ctx->errmsg);
    if (session && ctx->fd < 0)
        return pinpool__fail(ctx, PINPOOL_ECLOSED, "this context has no fd-socket session");
    if (!args_ok)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "%s must not be NULL", args);
    return 0;
}

int pinpool__call(pinpool_ctx_t *ctx, pinpool__method_t m, const ProtobufCMessage *req,
                  void *reply)
{
    ProtobufCMessage *r = NULL;
    char msg[MSG_LEN];
    int rc;

    rc = pinpool__rpc_call(ctx->rpc, methods[m].path, req, methods[m].reply, &r, NULL, msg,
                           sizeof(msg));
    if (rc != 0)
        return pinpool__fail(ctx, rc, "%s", msg);
    if (reply != NULL)
        *(ProtobufCMessage **)reply = r;
    else
        protobuf_c_message_free_unpacked(r, NULL);
    return 0;
}

static int rpc_free(pinpool_ctx_t *ctx, uint64_t id, uint64_t *freed)
{
    Pinpool__V1__FreePoolMemoryRequest req = PINPOOL__V1__FREE_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__FreePoolMemoryResponse *resp = NULL;
    int rc;

    req.client_id = ctx->client_id;
    req.slice_id = id;
    rc = pinpool__call(ctx, PINPOOL__M_FREE, &req.base, &resp);
    if (rc != 0)
        return rc;
    if (freed != NULL)
        *freed = resp->freed_bytes;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

static int rpc_release(pinpool_ctx_t *ctx, uint64_t id, const char *key, uint64_t ttl_ms)
{
    Pinpool__V1__ReleasePoolMemoryRequest req = PINPOOL__V1__RELEASE_POOL_MEMORY_REQUEST__INIT;

    req.client_id = ctx->client_id;
    req.slice_id = id;
    req.key = (char *)key;
    req.ttl_ms = ttl_ms;
    return pinpool__call(ctx, PINPOOL__M_RELEASE, &req.base, NULL);
}

/*
 * A call whose reply describes a slice (Allocate, Attach, Acquire): the slice
 * is mapped and recorded and *out filled.  When it cannot be mapped here, the
 * daemon gets it back unless it is a kept slice (attach): freed, or released
 * again under give_back_key (acquire, so that the object is not lost); the
 * mapping's message stays the one pinpool_errmsg says.
 */
static int slice_call(pinpool_ctx_t *ctx, pinpool__method_t m, const ProtobufCMessage *req,
                      uint32_t flags, pinpool_slice_t *out, const char *give_back_key)
{
    Pinpool__V1__AllocatePoolMemoryResponse *resp = NULL;
    int rc = pinpool__call(ctx, m, req, &resp);

    if (rc != 0)
        return rc;
    rc = take_slice(ctx, resp, flags, out);
    if (rc != 0 && m != PINPOOL__M_ATTACH) {
        char msg[MSG_LEN];

        memcpy(msg, tls_msg, sizeof(msg));
        if (give_back_key != NULL)
            rpc_release(ctx, resp->slice_id, give_back_key, 0);
        else
            rpc_free(ctx, resp->slice_id, NULL);
        pinpool__fail(ctx, rc, "%s", msg);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

/* PINPOOL_ENOENT unless slice id is one of this context's. */
static int own_slice(pinpool_ctx_t *ctx, uint64_t id)
{
    slice_rec_t key = {.id = id};
    bool found;

    pthread_mutex_lock(&ctx->lock);
    found = RB_FIND(slice_tree, &ctx->slices, &key) != NULL;
    pthread_mutex_unlock(&ctx->lock);
    if (!found)
        return pinpool__fail(ctx, PINPOOL_ENOENT, "slice %" PRIu64 " is not one of this context's",
                             id);
    return 0;
}

/* Forget slice id here (its run unmapped with its last slice); false when it
 * was not recorded (another thread may have forgotten it first). */
static bool forget_slice(pinpool_ctx_t *ctx, uint64_t id)
{
    slice_rec_t key = {.id = id}, *rec;

    pthread_mutex_lock(&ctx->lock);
    rec = RB_FIND(slice_tree, &ctx->slices, &key);
    if (rec != NULL)
        drop_slice(ctx, rec);
    pthread_mutex_unlock(&ctx->lock);
    return rec != NULL;
}

int pinpool_alloc(pinpool_ctx_t *ctx, uint64_t size, const pinpool_alloc_opts_t *opts,
                  pinpool_slice_t *out)
{
    Pinpool__V1__AllocatePoolMemoryRequest req = PINPOOL__V1__ALLOCATE_POOL_MEMORY_REQUEST__INIT;
    int rc = pinpool__check(ctx, true, out != NULL, "out");

    if (rc != 0)
        return rc;
    req.client_id = ctx->client_id;
    req.device_id = opts != NULL ? opts->device_id : PINPOOL_HOST;
    req.size_bytes = size;
    req.alignment = opts != NULL ? opts->alignment : 0;
    req.tag = opts != NULL && opts->tag != NULL ? (char *)opts->tag : (char *)"";
    req.keep = opts != NULL && (opts->flags & PINPOOL_ALLOC_KEEP) != 0;
    /* The maker of a slice writes it; attach reads unless asked. */
    return slice_call(ctx, PINPOOL__M_ALLOCATE, &req.base,
                      (opts != NULL ? opts->flags : 0) | PINPOOL_ATTACH_WRITABLE, out, NULL);
}

/* Attach (the slice kept under name) or acquire (the object under name). */
static int slice_by_name(pinpool_ctx_t *ctx, pinpool__method_t m, const char *name,
                         uint32_t flags, pinpool_slice_t *out)
{
    Pinpool__V1__AttachPoolMemoryRequest attach = PINPOOL__V1__ATTACH_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__AcquirePoolMemoryRequest acquire = PINPOOL__V1__ACQUIRE_POOL_MEMORY_REQUEST__INIT;
    int rc = pinpool__check(ctx, true, name != NULL && out != NULL,
                       m == PINPOOL__M_ATTACH ? "tag and out" : "key and out");

    if (rc != 0)
        return rc;
    attach.client_id = acquire.client_id = ctx->client_id;
    attach.tag = acquire.key = (char *)name;
    return slice_call(ctx, m, m == PINPOOL__M_ATTACH ? &attach.base : &acquire.base, flags, out,
                      m == PINPOOL__M_ACQUIRE ? name : NULL);
}

int pinpool_attach(pinpool_ctx_t *ctx, const char *tag, uint32_t flags, pinpool_slice_t *out)
{
    return slice_by_name(ctx, PINPOOL__M_ATTACH, tag, flags, out);
}

int pinpool_acquire(pinpool_ctx_t *ctx, const char *key, uint32_t flags, pinpool_slice_t *out)
{
    return slice_by_name(ctx, PINPOOL__M_ACQUIRE, key, flags, out);
}

int pinpool_free(pinpool_ctx_t *ctx, uint64_t slice_id, uint64_t *freed_bytes)
{
    int rc = pinpool__check(ctx, true, true, NULL);

    if (rc == 0)
        rc = own_slice(ctx, slice_id);
    if (rc != 0)
        return rc;
    rc = rpc_free(ctx, slice_id, freed_bytes);
    if (rc != 0 && rc != PINPOOL_ENOENT)
        return rc; /* the daemon still counts it: keep the mapping */
    forget_slice(ctx, slice_id);
    return rc;
}

int pinpool_release(pinpool_ctx_t *ctx, uint64_t slice_id, const char *key, uint64_t ttl_ms)
{
    int rc = pinpool__check(ctx, true, key != NULL, "key");

    if (rc == 0)
        rc = own_slice(ctx, slice_id);
    if (rc == 0)
        rc = rpc_release(ctx, slice_id, key, ttl_ms);
    if (rc == 0)
        forget_slice(ctx, slice_id);
    return rc;
}

int pinpool_detach(pinpool_ctx_t *ctx, uint64_t slice_id)
{
    int rc = pinpool__check(ctx, true, true, NULL);

    if (rc == 0 && !forget_slice(ctx, slice_id))
        rc = pinpool__fail(ctx, PINPOOL_ENOENT, "slice %" PRIu64 " is not mapped in this process",
                           slice_id);
    return rc;
}

/* pinpool_dev_unmap / pinpool_dev_remap: slice id's device mapping, under the lock. */
static int dev_op(pinpool_ctx_t *ctx, uint64_t id, bool remap)
{
    slice_rec_t key = {.id = id}, *rec;
    int rc = pinpool__check(ctx, true, true, NULL);

    if (rc != 0)
        return rc;
    pthread_mutex_lock(&ctx->lock);
    rec = RB_FIND(slice_tree, &ctx->slices, &key);
    if (rec == NULL)
        rc = pinpool__fail(ctx, PINPOOL_ENOENT, "slice %" PRIu64 " is not mapped in this process",
                           id);
    else if (rec->dev == NULL)
        rc = pinpool__fail(ctx, PINPOOL_EINVAL, "slice %" PRIu64 " is not a device slice of a "
                           "vmm device pool (host slices and --device-backend ipc pools stay "
                           "mapped)", id);
    else
        rc = remap ? pinpool__devmap_remap(ctx, rec->dev) : pinpool__devmap_unmap(ctx, rec->dev);
    pthread_mutex_unlock(&ctx->lock);
    return rc;
}

int pinpool_dev_unmap(pinpool_ctx_t *ctx, uint64_t slice_id)
{
    return dev_op(ctx, slice_id, false);
}

int pinpool_dev_remap(pinpool_ctx_t *ctx, uint64_t slice_id)
{
    return dev_op(ctx, slice_id, true);
}

int pinpool_free_all(pinpool_ctx_t *ctx, uint64_t *freed_bytes)
{
    slice_rec_t *rec, *next;
    int rc = pinpool__check(ctx, true, true, NULL);

    if (rc == 0)
        rc = rpc_free(ctx, 0, freed_bytes);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&ctx->lock);
    RB_FOREACH_SAFE(rec, slice_tree, &ctx->slices, next)
        drop_slice(ctx, rec);
    pthread_mutex_unlock(&ctx->lock);
    return 0;
}
