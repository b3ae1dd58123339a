/*
 * status.c - see status.h.
 */
#include "status.h"

#include <errno.h>
#include <stddef.h>

#include "pinpool_errors.h"

static const struct {
    int err;
    grpc_status_code status;
} map[] = {
#define XX(name, value, status, msg) {PINPOOL_E##name, GRPC_STATUS_##status},
    PINPOOL_ERRNO_MAP(XX)
#undef XX
};

#define NMAP (sizeof(map) / sizeof(map[0]))

/* The -errno values the daemon answers for its own bounds: out of memory,
 * every worker busy, a message or reply over --max-message-size, a batch over
 * --max-batch-keys.  Every other -errno is INTERNAL. */
static const int exhausted[] = {-ENOMEM, -EAGAIN, -EMSGSIZE, -E2BIG};

grpc_status_code proto_status_of(int err)
{
    if (err == 0)
        return GRPC_STATUS_OK;
    for (size_t i = 0; i < NMAP; i++)
        if (map[i].err == err)
            return map[i].status;
    for (size_t i = 0; i < sizeof(exhausted) / sizeof(exhausted[0]); i++)
        if (exhausted[i] == err)
            return GRPC_STATUS_RESOURCE_EXHAUSTED;
    return GRPC_STATUS_INTERNAL;
}

int proto_error_of(grpc_status_code status)
{
    if (status == GRPC_STATUS_OK)
        return 0;
    for (size_t i = 0; i < NMAP; i++)
        if (map[i].status == status)
            return map[i].err;
    return PINPOOL_EPROTO;
}
