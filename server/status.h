/*
 * status.h - pinpool error codes -> gRPC status codes.  The only place that
 * maps one to the other (the list itself is PINPOOL_ERRNO_MAP in pinpool.h).
 */
#ifndef PINPOOL_SRV_STATUS_H
#define PINPOOL_SRV_STATUS_H

#include <grpc/status.h>

/* 0 -> GRPC_STATUS_OK; PINPOOL_E* -> its status; -errno -> INTERNAL. */
grpc_status_code srv_grpc_status(int err);

#endif
