/*
 * rpc.h - a unary gRPC server on the C core API (grpc/grpc.h).
 *
 * Owns: the grpc_server, its completion queue and the threads that poll it;
 * decoding requests and encoding replies and statuses.
 * Never: knows what a method does; each method is a row of rpc_method_t.
 * Threads: handlers run on the queue's threads (several at once when
 * nthreads > 1) and must be thread-safe.  Errors become the gRPC status that
 * proto/status.c names, with the message as status details and the pinpool
 * code in the trailing metadata key "pinpool-error".
 */
#ifndef PINPOOL_SRV_RPC_H
#define PINPOOL_SRV_RPC_H

#include <grpc/slice.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#define RPC_ERROR_KEY "pinpool-error"

#define RPC_TOKEN_KEY "pinpool-token"

typedef struct rpc_reply {
    const char *token;     /* in: the caller's RPC_TOKEN_KEY metadata, "" if none */
    ProtobufCMessage *msg; /* the response to send, when the handler returns 0 */
    char text[512];        /* the status message, when it returns an error */
} rpc_reply_t;

typedef struct rpc_method {
    const char *path; /* "/pinpool.v1.PinPool/GetPoolInfo" */
    const ProtobufCMessageDescriptor *request;
    /* May this request run (who the caller may act for)?  Called after
     * decoding, before handle; a pinpool error with reply->text refuses the
     * call without running handle.  NULL: every request may. */
    int (*check)(void *app, const ProtobufCMessage *request, rpc_reply_t *reply);
    /* Fill reply->msg (which the handler owns and frees in done), or return a
     * pinpool error with reply->text. */
    int (*handle)(void *app, const ProtobufCMessage *request, rpc_reply_t *reply);
    /* Free what handle put in reply->msg (called after it was packed). */
    void (*done)(rpc_reply_t *reply);
} rpc_method_t;

typedef struct rpc_server rpc_server_t;

/*
 * One call of method m without the transport: unpack len bytes of data as
 * m's request, run its check and handler with app, pack the reply into *out (the
 * caller unrefs it).  Returns 0, or the pinpool error with a message in text
 * (*out untouched).  The server runs every call through here; so do the
 * fuzzers (tests/fuzz/fuzz_rpc.c).
 */
int rpc_dispatch(const rpc_method_t *m, void *app, const char *token, const uint8_t *data,
                 size_t len, grpc_slice *out, char *text, size_t textlen);

/* Called after each call of method index m with its pinpool error (0 = OK) and
 * the seconds spent handling it, from a queue thread.  Set before start. */
typedef void (*rpc_observer_fn)(int m, int err, double seconds, void *arg);
void rpc_server_set_observer(rpc_server_t *rs, rpc_observer_fn fn, void *arg);

/* methods must outlive the server.  Returns 0 or an error with err. */
int rpc_server_create(rpc_server_t **out, const rpc_method_t *methods, size_t nmethods,
                      void *app, char *err, size_t errlen);
/* "unix:/path" or "127.0.0.1:50051".  Before rpc_server_start. */
int rpc_server_add_port(rpc_server_t *rs, const char *addr, char *err, size_t errlen);
/* Start serving on nthreads threads. */
int rpc_server_start(rpc_server_t *rs, unsigned nthreads);
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
 * stops the threads and frees everything.  NULL is a no-op for all three.
 */
void rpc_server_begin_shutdown(rpc_server_t *rs, void (*done)(void *arg), void *arg);
void rpc_server_cancel_all(rpc_server_t *rs);
void rpc_server_stop(rpc_server_t *rs, double grace_s);

#endif
