/*
 * rpc.h - a unary gRPC server on the C core API (grpc/grpc.h).
 *
 * Owns: the grpc_server, its completion queue and the threads that poll it,
 * the worker pool (workers.h) that finishes the calls that must wait;
 * decoding requests (with the checks every request passes: no NUL byte in a
 * string field, no more items in a repeated field than the limit, the bearer
 * token of a TCP caller) and encoding replies and statuses; deadlines and
 * cancellation.
 * Never: knows what a method does; each method is a row of rpc_method_t.
 * Threads: a handler runs first on a queue thread with reply->may_block
 * false, where it must not wait; if it answers RPC_DEFER, it runs again on a
 * worker with may_block true and the same reply.  Both may run several at
 * once and must be thread-safe.  Errors become the gRPC status that
 * proto/status.c names, with the message as status details and the pinpool
 * code in the trailing metadata key "pinpool-error".
 */
#ifndef PINPOOL_SRV_RPC_H
#define PINPOOL_SRV_RPC_H

#include <grpc/slice.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RPC_ERROR_KEY "pinpool-error"

#define RPC_TOKEN_KEY "pinpool-token"

/* A handler's answer on a queue thread: "I would wait; run me on a worker".
 * Never sent to a client. */
#define RPC_DEFER (-1901)

typedef struct rpc_reply {
    const char *token;     /* in: the caller's RPC_TOKEN_KEY metadata, "" if none */
    bool may_block;        /* in: false on a queue thread, true on a worker */
    ProtobufCMessage *msg; /* the response to send, when the handler returns 0 */
    char text[512];        /* the status message, when it returns an error */
} rpc_reply_t;

/* rpc_method_t.flags */
#define RPC_LOW_MEMORY_OK 1u /* runs while the heap is short (srv_reserve_short): it
                              * frees memory, or needs little (Ping, Free, Remove...) */

typedef struct rpc_method {
    const char *path; /* "/pinpool.v1.PinPool/GetPoolInfo" */
    const ProtobufCMessageDescriptor *request;
    /* May this request run (who the caller may act for)?  Called after
     * decoding, before handle; a pinpool error with reply->text refuses the
     * call without running handle.  NULL: every request may.  Never waits. */
    int (*check)(void *app, const ProtobufCMessage *request, rpc_reply_t *reply);
    /*
     * Fill reply->msg (which the handler owns and frees in done), or return a
     * pinpool error with reply->text.  With reply->may_block false it must
     * not wait: it returns RPC_DEFER instead and is called again on a worker
     * with may_block true and the same reply (a handler of many items keeps
     * its progress in reply->msg and goes on from there).
     */
    int (*handle)(void *app, const ProtobufCMessage *request, rpc_reply_t *reply);
    /* Free what handle put in reply->msg (called last, after undo if any). */
    void (*done)(rpc_reply_t *reply);
    /*
     * The call succeeded but its caller never heard of it (it was cancelled,
     * its deadline passed, the connection went): undo what handle did, from
     * reply->msg (a slice made for it is freed, an acquired object released
     * again).  Never waits.  NULL: nothing to undo.
     */
    void (*undo)(void *app, const ProtobufCMessage *request, rpc_reply_t *reply);
    unsigned flags; /* RPC_LOW_MEMORY_OK */
} rpc_method_t;

/* The server's bounds (the daemon's options; main.c fills them). */
typedef struct rpc_limits {
    uint64_t max_message;  /* bytes of a request or a reply (gRPC's own limits too) */
    uint32_t max_items;    /* items in one repeated field of a request */
    uint32_t max_streams;  /* calls at once on one connection */
    uint64_t grpc_memory;  /* gRPC's resource quota (at least 4 * max_message is used) */
    unsigned workers;      /* threads of the worker pool */
    unsigned queue;        /* calls that may wait for a worker */
} rpc_limits_t;

/*
 * One call's work, without the transport, in steps: the server runs every
 * call through these (and so do the fuzzers, tests/fuzz/fuzz_rpc.c).
 *   rpc_work_begin  unpack len bytes of data as m's request (after the checks
 *                   of the wire bytes: a NUL in a string field is
 *                   PINPOOL_EINVAL, more than max_items in a repeated field
 *                   -E2BIG; out of memory -ENOMEM), run m's check.  0, or the
 *                   error with w->reply.text; rpc_work_end is needed either way.
 *   rpc_work_run    run the handler (may_block as above): 0, RPC_DEFER (only
 *                   when !may_block), or an error with w->reply.text.
 *   rpc_work_pack   the reply (after run returned 0) into *out, which the
 *                   caller unrefs: 0, or -ENOMEM / -EMSGSIZE (larger than
 *                   max_message) with w->reply.text.
 *   rpc_work_undo   the method's undo (after a successful run whose reply
 *                   did not reach the caller, or could not be packed).
 *   rpc_work_end    the method's done, and free the request.
 */
typedef struct rpc_work {
    const rpc_method_t *m;
    void *app;
    ProtobufCMessage *req;
    ProtobufCAllocator alloc; /* notes a failed allocation while decoding */
    bool alloc_failed;
    rpc_reply_t reply;
} rpc_work_t;

int rpc_work_begin(rpc_work_t *w, const rpc_method_t *m, void *app, const char *token,
                   uint32_t max_items, const uint8_t *data, size_t len);
int rpc_work_run(rpc_work_t *w, bool may_block);
int rpc_work_pack(rpc_work_t *w, uint64_t max_message, grpc_slice *out);
void rpc_work_undo(rpc_work_t *w);
void rpc_work_end(rpc_work_t *w);

/*
 * All the steps at once, a deferred handler run again right here: 0 and the
 * packed reply in *out (the caller unrefs it), or the pinpool error with a
 * message in text (*out untouched).
 */
int rpc_dispatch(const rpc_method_t *m, void *app, const char *token, const rpc_limits_t *lim,
                 const uint8_t *data, size_t len, grpc_slice *out, char *text, size_t textlen);

/* Called after each call of method index m with its pinpool error (0 = OK) and
 * the seconds from its arrival to its reply, from a queue thread or a worker.
 * Set before start. */
typedef void (*rpc_observer_fn)(int m, int err, double seconds, void *arg);

typedef struct rpc_server rpc_server_t;

void rpc_server_set_observer(rpc_server_t *rs, rpc_observer_fn fn, void *arg);

/* methods must outlive the server.  Returns 0 or an error with err. */
int rpc_server_create(rpc_server_t **out, const rpc_method_t *methods, size_t nmethods,
                      void *app, const rpc_limits_t *lim, char *err, size_t errlen);
/*
 * "unix:/path" or "127.0.0.1:50051".  Before rpc_server_start.  A call that
 * comes over TCP (its peer is neither "unix:..." nor "fd:...", the
 * connections the daemon accepted itself: rpc_server_add_connection) must
 * carry "authorization: Bearer TOKEN" with the token given for a TCP port
 * (token NULL for a unix socket); without one, or with another, it is
 * refused with UNAUTHENTICATED before it is decoded.
 */
int rpc_server_add_port(rpc_server_t *rs, const char *addr, const char *token, char *err,
                        size_t errlen);
/* Start serving on nthreads queue threads and the worker pool. */
int rpc_server_start(rpc_server_t *rs, unsigned nthreads, char *err, size_t errlen);
/* After start, before shutdown: serve a connection the daemon accepted
 * itself (a unix socket, see listener.h); gRPC owns fd from now on. */
void rpc_server_add_connection(rpc_server_t *rs, int fd);
/*
 * Shutting down, in steps so that the caller's event loop keeps running:
 * rpc_server_begin_shutdown stops accepting calls (new ones get UNAVAILABLE)
 * and returns at once; when every call in flight has finished, done(arg) is
 * called from a queue thread.  rpc_server_cancel_all cancels what is left
 * (clients that keep idle connections open hold the shutdown otherwise).
 * rpc_server_stop waits for that point (cancelling after grace_s seconds),
 * lets the workers finish, stops the threads and frees everything.  NULL is
 * a no-op for all three.
 */
void rpc_server_begin_shutdown(rpc_server_t *rs, void (*done)(void *arg), void *arg);
void rpc_server_cancel_all(rpc_server_t *rs);
void rpc_server_stop(rpc_server_t *rs, double grace_s);
/* After rpc_server_stop: gRPC's own clean-up did not finish in time and still
 * runs on a thread of its own; the process must leave by _exit. */
bool rpc_shutdown_pending(void);

#endif
