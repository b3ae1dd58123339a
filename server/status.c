/*
 * status.c - see status.h.
 */
#include "status.h"

#include "pinpool.h"

grpc_status_code srv_grpc_status(int err)
{
    switch (err) {
    case 0:
        return GRPC_STATUS_OK;
#define XX(name, value, status, msg)                                           \
    case PINPOOL_E##name:                                                      \
        return GRPC_STATUS_##status;
        PINPOOL_ERRNO_MAP(XX)
#undef XX
    default:
        return GRPC_STATUS_INTERNAL;
    }
}
