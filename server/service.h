/*
 * service.h - the PinPool gRPC service: its methods as rpc_method_t rows,
 * and the little state they share (srv_service_t: the srv, and a snapshot
 * of the spill tier's statistics for GetPoolInfo, refreshed by a thread of
 * its own because asking the tier may wait).
 * The app pointer rpc.c passes to each handler is the srv_service_t.
 */
#ifndef PINPOOL_SRV_SERVICE_H
#define PINPOOL_SRV_SERVICE_H

#include <stddef.h>

#include "rpc.h"
#include "srv.h"

typedef struct srv_service srv_service_t;

/* The service over srv (which must outlive it); starts its statistics
 * thread.  0 and *out, or an error with err. */
int srv_service_create(srv_service_t **out, srv_t *srv, char *err, size_t errlen);
/* Stops the thread and frees svc (after the rpc server stopped).  NULL ok. */
void srv_service_destroy(srv_service_t *svc);

const rpc_method_t *srv_service_methods(size_t *n);

/* The gRPC server's bounds from the daemon's options. */
void srv_service_limits(const srv_config_t *cfg, rpc_limits_t *lim);

#endif
