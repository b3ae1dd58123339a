/*
 * client.c - libpinpool's context: connect, reconnect and close, the failure
 * messages, the calls to the daemon (one method table, pinpool__call), and
 * the slots where the library's other parts keep their state per context.
 * The slices and their mappings are slices.c's, a session (the fd socket,
 * the trust checks) is session.c's, the calls without a session objects.c's.
 *
 * Owns: the context and its current session (ctx->conn, reference counted:
 * each call holds the session it started on, so that pinpool_reconnect can
 * replace it while calls run; the old one is freed, its fd socket closed,
 * when the last of them lets go), and the extension slots
 * (pinpool__ext_get), which pinpool_close tears down first.
 *
 * Sessions end.  When the daemon exits or restarts, the fd socket closes and
 * the daemon (the new one knows nothing of it) has freed the session's slices.
 * From then on every call on the context returns PINPOOL_ESESSION, and
 * pinpool_err says so, until pinpool_reconnect makes a new session: the old
 * session's slices are forgotten and their mappings unmapped (their address
 * ranges stay reserved until pinpool_close, so that no new mapping lands
 * where an old pointer points), nothing of the old session survives.  A call
 * that fails while the daemon goes (unreachable, its session refused) looks
 * at the fd socket again, waiting up to 50 ms for the close to show, and
 * then says PINPOOL_ESESSION too; one that the daemon answered before it went
 * returns that answer.
 *
 * Never: calls into swap.c or fanout.c other than through their
 * pinpool__ext_t; holds conn_lock across anything but a pointer swap or a
 * count; unmaps a slice of the current session behind the caller's back.
 * Locking: see ctx.h for the order (ctx->reconnect_lock, then ctx->lock, then
 * a session's fd_lock; ctx->conn_lock is a leaf).  gRPC calls run without any.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctx.h"
#include "paths.h"
#include "pinpool.pb-c.h"

#define METHOD(name) "/pinpool.v1.PinPool/" name
#define MSG_LEN PINPOOL__MSG_LEN
#define LOST_WAIT_MS 50       /* how long a failed call waits for the fd socket's close */
#define UPGRADE_RETRY_MS 15000 /* how long a call is tried again through a takeover */
#define CHECK_EVERY_NS 1000000 /* pinpool__session_check looks at the fd socket this often */

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

const char *pinpool__last_msg(void)
{
    return tls_msg;
}

int pinpool__session_fail(const pinpool_ctx_t *ctx)
{
    return pinpool__fail(ctx, PINPOOL_ESESSION, "%s", ctx->lost_msg);
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
    __atomic_store_n(&ctx->err, err, __ATOMIC_RELEASE);
    return err;
}

/* conn_lock is a leaf mutex inside ctx: the const functions below lock it
 * too (ctx is never a const object: pinpool_connect allocates it). */
static pthread_mutex_t *conn_lock(const pinpool_ctx_t *ctx)
{
    return (pthread_mutex_t *)&ctx->conn_lock;
}

pinpool__conn_t *pinpool__conn_get(pinpool_ctx_t *ctx)
{
    pinpool__conn_t *c;

    pthread_mutex_lock(&ctx->conn_lock);
    c = ctx->conn;
    if (c != NULL)
        c->refs++;
    pthread_mutex_unlock(&ctx->conn_lock);
    return c;
}

void pinpool__conn_put(pinpool_ctx_t *ctx, pinpool__conn_t *c)
{
    bool last;

    if (c == NULL)
        return;
    pthread_mutex_lock(&ctx->conn_lock);
    last = --c->refs == 0;
    pthread_mutex_unlock(&ctx->conn_lock);
    if (last)
        pinpool__conn_free(c);
}

/* Whether session c (of ctx) has ended; records it for the context. */
static bool conn_lost(const pinpool_ctx_t *ctx, pinpool__conn_t *c, int wait_ms)
{
    if (!pinpool__conn_lost(c, wait_ms))
        return false;
    __atomic_store_n((uint64_t *)&ctx->lost_gen, c->gen, __ATOMIC_RELEASE);
    return true;
}

/* The current session has ended (it was found so; or now, by one look). */
static bool current_lost(const pinpool_ctx_t *ctx)
{
    pinpool__conn_t *c;
    bool lost;

    if (__atomic_load_n(&ctx->lost_gen, __ATOMIC_ACQUIRE) ==
        __atomic_load_n(&ctx->gen, __ATOMIC_ACQUIRE))
        return true;
    pthread_mutex_lock(conn_lock(ctx));
    c = ctx->conn;
    lost = c != NULL && conn_lost(ctx, c, 0); /* a poll: fine under a leaf lock */
    pthread_mutex_unlock(conn_lock(ctx));
    return lost;
}

int pinpool_err(const pinpool_ctx_t *ctx)
{
    int err;

    if (ctx == NULL)
        return -ENOMEM;
    err = __atomic_load_n(&ctx->err, __ATOMIC_ACQUIRE);
    if (err != 0)
        return err;
    return current_lost(ctx) ? PINPOOL_ESESSION : 0;
}

const char *pinpool_errmsg(const pinpool_ctx_t *ctx)
{
    if (ctx == NULL)
        return "out of memory";
    if (tls_ctx == ctx)
        return tls_msg;
    if (__atomic_load_n(&ctx->err, __ATOMIC_ACQUIRE) == 0 && current_lost(ctx))
        return ctx->lost_msg;
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
    int cuda;

    if (ctx == NULL)
        return 0;
    pthread_mutex_lock(conn_lock(ctx));
    cuda = ctx->conn != NULL && ctx->conn->host != NULL && ctx->conn->host->cuda;
    pthread_mutex_unlock(conn_lock(ctx));
    return cuda;
}

/* ---- connect / reconnect / close ------------------------------------------------- */

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

/* Make c the context's current session (ctx->lock held). */
static void set_conn(pinpool_ctx_t *ctx, pinpool__conn_t *c)
{
    pthread_mutex_lock(&ctx->conn_lock);
    ctx->conn = c;
    snprintf(ctx->client_id, sizeof(ctx->client_id), "%s", c->client_id);
    __atomic_store_n(&ctx->gen, c->gen, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&ctx->conn_lock);
}

static pinpool_ctx_t *connect_ctx(const char *socket_path, bool session)
{
    pinpool_ctx_t *ctx = calloc(1, sizeof(*ctx));
    pinpool__conn_t *c = NULL;
    char msg[MSG_LEN];
    int rc;

    if (ctx == NULL)
        return NULL;
    pthread_mutex_init(&ctx->reconnect_lock, NULL);
    pthread_mutex_init(&ctx->conn_lock, NULL);
    pthread_mutex_init(&ctx->lock, NULL);
    RB_INIT(&ctx->runs);
    RB_INIT(&ctx->slices);
    ctx->want_session = session;
    rc = resolve_path(socket_path, ctx->path, sizeof(ctx->path));
    if (rc != 0) {
        connect_fail(ctx, rc, "socket path too long");
        return ctx;
    }
    snprintf(ctx->lost_msg, sizeof(ctx->lost_msg),
             "the pinpool daemon at %s ended this context's session: its fd socket closed (the "
             "daemon exited or restarted), so the session's slices are gone, and nothing else of "
             "it survives; pinpool_reconnect(ctx) makes a new session (slices kept with "
             "PINPOOL_ALLOC_KEEP and named objects are found again by tag and key, where the "
             "daemon still has them)", ctx->path);
    rc = pinpool__conn_open(&c, ctx->path, session, 1, msg, sizeof(msg));
    if (rc != 0) {
        connect_fail(ctx, rc, "%s", msg);
        return ctx;
    }
    pthread_mutex_lock(&ctx->lock);
    set_conn(ctx, c);
    pthread_mutex_unlock(&ctx->lock);
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

int pinpool_reconnect(pinpool_ctx_t *ctx)
{
    pinpool__conn_t *c = NULL, *old;
    struct {
        const pinpool__ext_t *ext;
        void *state;
    } ext[PINPOOL__MAX_EXT];
    char msg[MSG_LEN];
    int next, rc;

    if (ctx == NULL)
        return -EINVAL;
    if (ctx->path[0] == '\0')
        return pinpool__fail(ctx, PINPOOL_EINVAL, "not connected: %s", ctx->errmsg);
    pthread_mutex_lock(&ctx->reconnect_lock);
    rc = pinpool__conn_open(&c, ctx->path, ctx->want_session,
                            __atomic_load_n(&ctx->gen, __ATOMIC_ACQUIRE) + 1, msg, sizeof(msg));
    if (rc != 0) {
        pthread_mutex_unlock(&ctx->reconnect_lock);
        return pinpool__fail(ctx, rc, "%s", msg); /* the context is as it was */
    }
    /* The other parts forget what lived in the old session (without our locks). */
    pthread_mutex_lock(&ctx->lock);
    next = ctx->next;
    memcpy(ext, ctx->ext, sizeof(ext));
    pthread_mutex_unlock(&ctx->lock);
    for (int i = next - 1; i >= 0; i--)
        if (ext[i].ext->reset != NULL)
            ext[i].ext->reset(ctx, ext[i].state);
    pthread_mutex_lock(&ctx->lock);
    old = ctx->conn;
    if (old != NULL)
        pinpool__drop_mappings(ctx, old, true);
    set_conn(ctx, c);
    __atomic_store_n(&ctx->err, 0, __ATOMIC_RELEASE); /* a context that never connected */
    pthread_mutex_unlock(&ctx->lock);
    pthread_mutex_unlock(&ctx->reconnect_lock);
    pinpool__conn_put(ctx, old); /* its fd socket closes with its last call */
    return 0;
}

void pinpool_close(pinpool_ctx_t *ctx)
{
    if (ctx == NULL)
        return;
    /* First the other parts' states (swap tags: their device memory and their
     * host copies' mappings; fan-out streams, before the device pools close). */
    while (ctx->next > 0) {
        ctx->next--;
        ctx->ext[ctx->next].ext->destroy(ctx, ctx->ext[ctx->next].state);
    }
    pthread_mutex_lock(&ctx->lock);
    if (ctx->conn != NULL)
        pinpool__drop_mappings(ctx, ctx->conn, false);
    pthread_mutex_unlock(&ctx->lock);
    pinpool__conn_put(ctx, ctx->conn); /* the daemon frees our slices */
    pthread_mutex_destroy(&ctx->lock);
    pthread_mutex_destroy(&ctx->conn_lock);
    pthread_mutex_destroy(&ctx->reconnect_lock);
    if (tls_ctx == ctx)
        tls_ctx = NULL;
    free(ctx);
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
    [PINPOOL__M_CONFIG] = {METHOD("GetServerConfig"), REPLY(get_server_config)},
};

int pinpool__check_on(pinpool_ctx_t *ctx, pinpool__conn_t *c, bool session, bool args_ok,
                      const char *args)
{
    if (ctx == NULL)
        return -EINVAL;
    if (c == NULL)
        return pinpool__fail(ctx, PINPOOL_ECLOSED, "not connected: %s", ctx->errmsg);
    if (session && c->fd < 0)
        return pinpool__fail(ctx, PINPOOL_ECLOSED, "this context has no fd-socket session");
    if (conn_lost(ctx, c, 0))
        return pinpool__session_fail(ctx);
    if (!args_ok)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "%s must not be NULL", args);
    return 0;
}

int pinpool__check(pinpool_ctx_t *ctx, bool session, bool args_ok, const char *args)
{
    pinpool__conn_t *c;
    int rc;

    if (ctx == NULL)
        return -EINVAL;
    c = pinpool__conn_get(ctx);
    rc = pinpool__check_on(ctx, c, session, args_ok, args);
    pinpool__conn_put(ctx, c);
    return rc;
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int pinpool__call_on(pinpool_ctx_t *ctx, pinpool__conn_t *c, pinpool__method_t m,
                     const ProtobufCMessage *req, void *reply)
{
    ProtobufCMessage *r = NULL;
    char msg[MSG_LEN];
    struct timespec pause = {0, 1000000};
    int64_t give_up = 0;
    int rc;

    /* A daemon handing over to its successor (serve --takeover) answers
     * PINPOOL_EUPGRADE, having done nothing; then, for a moment, its gRPC
     * socket has no one behind it while this session's fd socket lives on (the
     * new daemon holds it).  Both are tried again, for UPGRADE_RETRY_MS at
     * most, pausing 1 ms and doubling up to 50 ms. */
    for (;;) {
        rc = pinpool__rpc_call(c->rpc, methods[m].path, req, methods[m].reply, &r, NULL, msg,
                               sizeof(msg));
        if (rc != PINPOOL_EUPGRADE &&
            (rc != PINPOOL_ECONNECT || c->fd < 0 || conn_lost(ctx, c, LOST_WAIT_MS)))
            break;
        int64_t now = mono_ms();
        if (give_up == 0)
            give_up = now + UPGRADE_RETRY_MS;
        else if (now >= give_up)
            break;
        nanosleep(&pause, NULL);
        pause.tv_nsec = pause.tv_nsec * 2 > 50000000 ? 50000000 : pause.tv_nsec * 2;
    }
    if (rc != 0) {
        /* The daemon went (unreachable, or a new one that knows no such
         * session): the fd socket says so, a moment later at most. */
        if (conn_lost(ctx, c, rc == PINPOOL_ECONNECT ? LOST_WAIT_MS : 0))
            return pinpool__session_fail(ctx);
        return pinpool__fail(ctx, rc, "%s", msg);
    }
    if (reply != NULL)
        *(ProtobufCMessage **)reply = r;
    else
        protobuf_c_message_free_unpacked(r, NULL);
    return 0;
}

int pinpool__call(pinpool_ctx_t *ctx, pinpool__method_t m, const ProtobufCMessage *req,
                  void *reply)
{
    pinpool__conn_t *c = pinpool__conn_get(ctx);
    int rc = pinpool__check_on(ctx, c, false, true, NULL);

    if (rc == 0)
        rc = pinpool__call_on(ctx, c, m, req, reply);
    pinpool__conn_put(ctx, c);
    return rc;
}

int pinpool__max_message(pinpool_ctx_t *ctx, uint64_t *out)
{
    Pinpool__V1__GetServerConfigRequest req = PINPOOL__V1__GET_SERVER_CONFIG_REQUEST__INIT;
    Pinpool__V1__GetServerConfigResponse *r = NULL;
    pinpool__conn_t *c = pinpool__conn_get(ctx);
    uint64_t max = c != NULL ? __atomic_load_n(&c->max_message, __ATOMIC_ACQUIRE) : 0;
    int rc = 0;

    if (max == 0) {
        rc = pinpool__check_on(ctx, c, false, true, NULL);
        if (rc == 0)
            rc = pinpool__call_on(ctx, c, PINPOOL__M_CONFIG, &req.base, &r);
        for (size_t i = 0; rc == 0 && i < r->n_entries; i++)
            if (strcmp(r->entries[i]->name, "max-message-size") == 0)
                pinpool_parse_size(r->entries[i]->value, &max);
        if (r != NULL)
            protobuf_c_message_free_unpacked(&r->base, NULL);
        if (rc == 0 && max == 0)
            rc = pinpool__fail(ctx, PINPOOL_EPROTO, "the daemon's GetServerConfig names no "
                               "max-message-size");
        if (rc == 0)
            __atomic_store_n(&c->max_message, max, __ATOMIC_RELEASE);
    }
    pinpool__conn_put(ctx, c);
    *out = max;
    return rc;
}

/* ---- sessions, for the arena ------------------------------------------------------ */

uint64_t pinpool__session_gen(const pinpool_ctx_t *ctx)
{
    return __atomic_load_n(&ctx->gen, __ATOMIC_ACQUIRE);
}

static int64_t coarse_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int pinpool__session_check(pinpool_ctx_t *ctx)
{
    int64_t now, last;
    uint64_t gen = __atomic_load_n(&ctx->gen, __ATOMIC_ACQUIRE);

    if (__atomic_load_n(&ctx->err, __ATOMIC_ACQUIRE) != 0)
        return pinpool__fail(ctx, PINPOOL_ECLOSED, "not connected: %s", ctx->errmsg);
    if (__atomic_load_n(&ctx->lost_gen, __ATOMIC_ACQUIRE) == gen)
        return pinpool__session_fail(ctx);
    now = coarse_ns();
    last = __atomic_load_n(&ctx->checked_ns, __ATOMIC_RELAXED);
    if (now - last < CHECK_EVERY_NS && now >= last)
        return 0;
    __atomic_store_n(&ctx->checked_ns, now, __ATOMIC_RELAXED);
    return current_lost(ctx) ? pinpool__session_fail(ctx) : 0;
}
