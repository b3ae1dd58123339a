/*
 * status.h - the error side of the gRPC contract: pinpool codes <-> gRPC
 * status codes, both directions, from the grpc_status column of
 * PINPOOL_ERRNO_MAP (pool/pinpool_errors.h).  The only place that maps one to
 * the other; compiled into the daemon and into libpinpool.
 *
 * Owns: proto_status_of, proto_error_of.  Never: keeps a second table (the
 * X-macro list is the source of truth).  Locking: none; pure functions.
 */
#ifndef PINPOOL_PROTO_STATUS_H
#define PINPOOL_PROTO_STATUS_H

#include <grpc/status.h>

/* The status the daemon answers err with: 0 -> GRPC_STATUS_OK; PINPOOL_E* ->
 * its status; -ENOMEM, -EAGAIN, -EMSGSIZE, -E2BIG (the daemon's bounds) ->
 * RESOURCE_EXHAUSTED; other -errno and unknown codes -> INTERNAL. */
grpc_status_code proto_status_of(int err);
/* The pinpool code of a failure that carried none (gRPC's own: the daemon
 * unreachable, a deadline): the first code listed with that status;
 * PINPOOL_EPROTO for a status no code has; 0 for OK. */
int proto_error_of(grpc_status_code status);

#endif
