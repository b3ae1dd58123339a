/*
 * internal.h - what libpinpool's files share; not installed, not exported.
 * Internal non-static functions are prefixed pinpool__.
 */
#ifndef PINPOOL_CLIENT_INTERNAL_H
#define PINPOOL_CLIENT_INTERNAL_H

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#include "pinpool.h"

typedef struct pinpool__rpc pinpool__rpc_t;

/* A gRPC channel to the daemon at socket_path (a unix socket path, or
 * "tcp:HOST:PORT"), with a stack of completion queues for concurrent calls. */
int pinpool__rpc_open(pinpool__rpc_t **out, const char *socket_path);
void pinpool__rpc_close(pinpool__rpc_t *rpc);
/* Every later call carries token as "pinpool-token" metadata (the session's secret). */
void pinpool__rpc_set_token(pinpool__rpc_t *rpc, const char *token);

/*
 * One unary call of method ("/pinpool.v1.PinPool/Ping").  On success *resp is
 * the unpacked reply (free it with protobuf_c_message_free_unpacked) and 0 is
 * returned; otherwise the pinpool error (from the "pinpool-error" trailer, or
 * mapped from the gRPC status) with the daemon's message in msg.  *grpc_status
 * (may be NULL) gets the call's gRPC status code.  The channel has no context,
 * hence the buffer: for tools that hold no context (server/cli.c, bench/,
 * tests/); inside the library, client.c's call() is the one caller and turns
 * msg into pinpool__fail.
 */
int pinpool__rpc_call(pinpool__rpc_t *rpc, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                      int *grpc_status, char *msg, size_t msglen);

/* The daemon's methods the library calls (client.c's table knows each one's
 * path and reply type). */
typedef enum {
    PINPOOL__M_ALLOCATE, PINPOOL__M_ATTACH, PINPOOL__M_ACQUIRE, PINPOOL__M_FREE,
    PINPOOL__M_RELEASE, PINPOOL__M_PUT, PINPOOL__M_GET, PINPOOL__M_EXISTS, PINPOOL__M_REMOVE,
    PINPOOL__M_PING, PINPOOL__M_INFO, PINPOOL__M_CONFIG
} pinpool__method_t;

/*
 * The start of every call on a context: ctx usable (connected; with an
 * fd-socket session when session is true; that session not ended, else
 * PINPOOL_ESESSION) and the caller's pointers there (args_ok, else
 * PINPOOL_EINVAL: "<args> must not be NULL").  0 or the error, with its
 * message.
 */
int pinpool__check(pinpool_ctx_t *ctx, bool session, bool args_ok, const char *args);
/*
 * One call of method m on ctx's channel: 0 and the reply in *(T **)reply,
 * which the caller frees with protobuf_c_message_free_unpacked (reply NULL:
 * freed here); or the error, with the daemon's message recorded
 * (PINPOOL_ESESSION when the call failed because the session ended).
 */
int pinpool__call(pinpool_ctx_t *ctx, pinpool__method_t m, const ProtobufCMessage *req,
                  void *reply);
/* The daemon's --max-message-size (GetServerConfig, asked once per session):
 * 0 and *out, or the call's error. */
int pinpool__max_message(pinpool_ctx_t *ctx, uint64_t *out);

/*
 * Sessions, for the parts that keep state in a session's slices (arena.c):
 * pinpool__session_gen is the number of the context's current session (1
 * after pinpool_connect, +1 per pinpool_reconnect); pinpool__session_check
 * is 0, or PINPOOL_ESESSION (message recorded) once the current session has
 * ended - cheap: it looks at the fd socket at most once a millisecond, so
 * that an arena may ask on every block; pinpool__dead_gen is the session
 * whose mapping held ptr when that session ended and ptr is in no live one
 * (0 otherwise).
 */
uint64_t pinpool__session_gen(const pinpool_ctx_t *ctx);
/* pinpool_alloc, also saying which session the slice is of (*gen). */
int pinpool__alloc_gen(pinpool_ctx_t *ctx, uint64_t size, const pinpool_alloc_opts_t *opts,
                       pinpool_slice_t *out, uint64_t *gen);
/* pinpool_free of a slice of session gen: PINPOOL_ESESSION, and nothing
 * freed, once the context has another session (the id may name a new slice). */
int pinpool__free_gen(pinpool_ctx_t *ctx, uint64_t slice_id, uint64_t gen);
int pinpool__session_check(pinpool_ctx_t *ctx);
uint64_t pinpool__dead_gen(pinpool_ctx_t *ctx, const void *ptr);

/* A context with only the gRPC channel: no fd-socket session, no lease
 * (`pinpool info` uses it, so that it does not show up as a client). */
pinpool_ctx_t *pinpool__connect_rpc_only(const char *socket_path);

/*
 * The one way a failure carries its message in libpinpool: where it is found,
 * pinpool__fail(ctx, err, "printf format", ...) records the message as the
 * calling thread's last failure on ctx (what pinpool_errmsg says) and returns
 * err, so that `return pinpool__fail(...)` ends the call.  A caller that only
 * passes an error up leaves the message as it is.
 */
int pinpool__fail(const pinpool_ctx_t *ctx, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The message of the calling thread's last failure (to keep it across a
 * cleanup call, or to add to it: pinpool__fail copies its arguments first). */
const char *pinpool__last_msg(void);

/*
 * Per-context state of the library's other parts (swap.c's tags, fanout.c's
 * streams and communicators), without the core knowing them: each part
 * describes its state with a static pinpool__ext_t and asks for it with
 * pinpool__ext_get, which makes it on first use.  pinpool_close destroys
 * every state made, in the reverse order of making, before anything else of
 * the context is torn down (the mappings, the device pools, the session);
 * pinpool_reconnect calls each state's reset first.
 */
typedef struct pinpool__ext {
    const char *name;
    /* Make the state; 0, or an error with its message (pinpool__fail).  Runs
     * under the context's lock: it must not call the context. */
    int (*make)(pinpool_ctx_t *ctx, void **state);
    /* Tear it down; the context still works (it may call pinpool_free & co.). */
    void (*destroy)(pinpool_ctx_t *ctx, void *state);
    /* May be NULL.  pinpool_reconnect: the old session is over, and every slice
     * of it is about to be forgotten and unmapped (no call frees them: they are
     * gone, or go with the session): let nothing of the state use them again.
     * Runs before the unmapping, without the context's locks; it must not make
     * calls that need the session. */
    void (*reset)(pinpool_ctx_t *ctx, void *state);
} pinpool__ext_t;
#define PINPOOL__MAX_EXT 4
/* ext's state in ctx, made if needed: 0 and *state, or make's error. */
int pinpool__ext_get(pinpool_ctx_t *ctx, const pinpool__ext_t *ext, void **state);
/* ext's state in ctx if it was made, else NULL. */
void *pinpool__ext_find(pinpool_ctx_t *ctx, const pinpool__ext_t *ext);

/* 1 when the daemon's host memory is pinned for CUDA (vmm, register), 0 when
 * it is plain memfd (CPU-only daemon) or ctx has no session. */
int pinpool__ctx_cuda_host(const pinpool_ctx_t *ctx);

#endif
