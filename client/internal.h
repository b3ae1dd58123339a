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
    PINPOOL__M_PING, PINPOOL__M_INFO
} pinpool__method_t;

/*
 * The start of every call on a context: ctx usable (connected; with an
 * fd-socket session when session is true) and the caller's pointers there
 * (args_ok, else PINPOOL_EINVAL: "<args> must not be NULL").  0 or the error,
 * with its message.
 */
int pinpool__check(const pinpool_ctx_t *ctx, bool session, bool args_ok, const char *args);
/*
 * One call of method m on ctx's channel: 0 and the reply in *(T **)reply,
 * which the caller frees with protobuf_c_message_free_unpacked (reply NULL:
 * freed here); or the error, with the daemon's message recorded.
 */
int pinpool__call(pinpool_ctx_t *ctx, pinpool__method_t m, const ProtobufCMessage *req,
                  void *reply);

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

/*
 * Per-context state of the library's other parts (swap.c's tags, fanout.c's
 * streams and communicators), without the core knowing them: each part
 * describes its state with a static pinpool__ext_t and asks for it with
 * pinpool__ext_get, which makes it on first use.  pinpool_close destroys
 * every state made, in the reverse order of making, before anything else of
 * the context is torn down (the mappings, the device pools, the session).
 */
typedef struct pinpool__ext {
    const char *name;
    /* Make the state; 0, or an error with its message (pinpool__fail).  Runs
     * under the context's lock: it must not call the context. */
    int (*make)(pinpool_ctx_t *ctx, void **state);
    /* Tear it down; the context still works (it may call pinpool_free & co.). */
    void (*destroy)(pinpool_ctx_t *ctx, void *state);
} pinpool__ext_t;
#define PINPOOL__MAX_EXT 4
/* ext's state in ctx, made if needed: 0 and *state, or make's error. */
int pinpool__ext_get(pinpool_ctx_t *ctx, const pinpool__ext_t *ext, void **state);
/* ext's state in ctx if it was made, else NULL. */
void *pinpool__ext_find(pinpool_ctx_t *ctx, const pinpool__ext_t *ext);

/* Ask the daemon on the fd socket for the descriptors of chunks [first,
 * first + n) of slice id (several messages when n > IPC_MAX_FDS): 0 with
 * fds[0..n) the caller's, or an error (pinpool__fail) and none. */
int pinpool__fetch_fds(pinpool_ctx_t *ctx, uint64_t id, uint32_t first, uint32_t n, int *fds);

/*
 * A device slice of a vmm device pool mapped in this process (devmap.c): its
 * chunks imported into an address range of its own, read-write or
 * read-only.  Open maps it (ptr: the slice's first byte); unmap lets the
 * memory go but keeps the range; remap fetches the descriptors again and
 * maps them at the same address with the same access; close undoes it all.
 * The caller holds the context's lock around each (unmap/remap/close may
 * run on any thread, one at a time per mapping).
 */
typedef struct pinpool__devmap pinpool__devmap_t;
int pinpool__devmap_open(pinpool_ctx_t *ctx, uint64_t slice_id, int32_t device,
                         uint32_t first_chunk, uint32_t nchunks, uint64_t chunk_size,
                         uint64_t offset, bool writable, pinpool__devmap_t **out, void **ptr);
int pinpool__devmap_unmap(pinpool_ctx_t *ctx, pinpool__devmap_t *m);
int pinpool__devmap_remap(pinpool_ctx_t *ctx, pinpool__devmap_t *m);
void pinpool__devmap_close(pinpool__devmap_t *m);

/* 1 when the daemon's host memory is pinned for CUDA (vmm, register), 0 when
 * it is plain memfd (CPU-only daemon) or ctx has no session. */
int pinpool__ctx_cuda_host(const pinpool_ctx_t *ctx);

#endif
