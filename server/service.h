/*
 * service.h - the PinPool gRPC service: its methods as rpc_method_t rows.
 * The app pointer rpc.c passes to each handler is the srv_t.
 */
#ifndef PINPOOL_SRV_SERVICE_H
#define PINPOOL_SRV_SERVICE_H

#include <stddef.h>

#include "rpc.h"

const rpc_method_t *srv_service_methods(size_t *n);

#endif
