/*
 * fdproto.c - the fd-socket wire protocol: message headers and their checks.
 *
 * Owns: ipc_hdr_init, ipc_msg_check.
 * Never: does I/O, touches descriptors, or trusts a field of a received
 * message before ipc_msg_check has passed it.
 * Locking: none; pure functions.
 */
#include "ipc.h"

#include "pinpool_errors.h"

#include <string.h>

void ipc_hdr_init(ipc_hdr_t *hdr, enum ipc_msg_type type, uint32_t seq, uint32_t len)
{
    memset(hdr, 0, sizeof(*hdr));
    hdr->magic = IPC_MAGIC;
    hdr->version = IPC_VERSION;
    hdr->type = (uint16_t)type;
    hdr->seq = seq;
    hdr->len = len;
}

/* The size of each message type, or 0 for a type this version does not know. */
static size_t msg_size(uint16_t type)
{
    switch (type) {
    case IPC_MSG_HELLO:
        return sizeof(ipc_hello_t);
    case IPC_MSG_MAP_REQ:
        return sizeof(ipc_map_req_t);
    case IPC_MSG_MAP_RESP:
        return sizeof(ipc_map_resp_t);
    default:
        return 0;
    }
}

/*
 * Beyond the header, HELLO's two strings must be NUL-terminated inside their
 * arrays (ipc.h promises so), so that a receiver may use them as C strings.
 * buf need not be aligned: everything is read through memcpy.
 */
int ipc_msg_check(const void *buf, size_t n)
{
    ipc_hdr_t hdr;
    size_t want;

    if (buf == NULL || n < sizeof(hdr))
        return PINPOOL_EPROTO;
    memcpy(&hdr, buf, sizeof(hdr));
    if (hdr.magic != IPC_MAGIC || hdr.version != IPC_VERSION)
        return PINPOOL_EPROTO;
    want = msg_size(hdr.type);
    if (want == 0 || hdr.len != want || n != want)
        return PINPOOL_EPROTO;

    if (hdr.type == IPC_MSG_HELLO) {
        ipc_hello_t hello;

        memcpy(&hello, buf, sizeof(hello));
        if (memchr(hello.client_id, '\0', sizeof(hello.client_id)) == NULL ||
            memchr(hello.token, '\0', sizeof(hello.token)) == NULL ||
            memchr(hello.reason, '\0', sizeof(hello.reason)) == NULL ||
            memchr(hello.backend, '\0', sizeof(hello.backend)) == NULL)
            return PINPOOL_EPROTO;
    }
    return hdr.type;
}
