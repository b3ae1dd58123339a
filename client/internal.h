/*
 * internal.h - what libpinpool's files share; not installed, not exported.
 * Internal non-static functions are prefixed pinpool__.
 */
#ifndef PINPOOL_CLIENT_INTERNAL_H
#define PINPOOL_CLIENT_INTERNAL_H

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
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
 * (may be NULL) gets the call's gRPC status code.
 */
int pinpool__rpc_call(pinpool__rpc_t *rpc, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                      int *grpc_status, char *msg, size_t msglen);

/* A context with only the gRPC channel: no fd-socket session, no lease
 * (`pinpool info` uses it, so that it does not show up as a client). */
pinpool_ctx_t *pinpool__connect_rpc_only(const char *socket_path);

/* Record msg as the calling thread's last failure on ctx (what pinpool_errmsg
 * says) and return err: for the library's other files (arena.c). */
int pinpool__fail(const pinpool_ctx_t *ctx, int err, const char *msg);

/* fanout.c's per-context state (streams, NCCL communicators, AUTO's
 * measurements): made with the context, freed by pinpool_close. */
typedef struct pinpool__fanout pinpool__fanout_t;
pinpool__fanout_t *pinpool__fanout_new(void);
void pinpool__fanout_free(pinpool__fanout_t *f);
/* ctx's fan-out state; NULL if it could not be allocated. */
pinpool__fanout_t *pinpool__ctx_fanout(pinpool_ctx_t *ctx);

/* swap.c's per-context state: the slot in the context that holds it, and its
 * teardown (pinpool_close calls it before anything else is torn down). */
struct pinpool__swap;
struct pinpool__swap **pinpool__swap_slot(pinpool_ctx_t *ctx);
void pinpool__swap_close(pinpool_ctx_t *ctx);
/* 1 when the daemon's host memory is pinned for CUDA (vmm, register), 0 when
 * it is plain memfd (CPU-only daemon) or ctx has no session. */
int pinpool__ctx_cuda_host(const pinpool_ctx_t *ctx);

#endif
