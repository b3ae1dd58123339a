/*
 * fuzz_fdsock.c - libFuzzer target over the fd-socket protocol.
 *
 * Each input is one session: a real srv_t, a session client opened with our
 * own credentials, a SOCK_SEQPACKET socketpair standing in for the accepted
 * connection, and srv_fdsock_session_read() - the daemon's own per-message
 * code (receive, ipc_msg_check, answer) - without libev.
 *
 * Input: [slices byte][3 size bytes per slice...] then messages, each
 * [flags][length][bytes].  flags: bit 0 puts the id of one of our slices
 * (bits 4-5 pick it) into a message long enough to hold a MAP_REQ; bit 1
 * attaches a descriptor (the daemon takes none); bit 2 writes a valid MAP_REQ
 * header; bit 3 uses the victim's slice id instead (must be refused).
 *
 * Checked: every descriptor received belongs to one of our own slices (never
 * the victim's, a detached client holding a slice at the same time), a reply
 * is a well-formed MAP_RESP with as many descriptors as it says, and after the
 * session ends the pool is empty and no descriptor of ours is left open.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "fdsock.h"
#include "ipc.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static srv_t *srv;
static long granted, refused; /* MAP_RESPs seen, for FUZZ_STATS=1 */

static void print_stats(void)
{
    fprintf(stderr, "fuzz_fdsock: %ld maps granted, %ld refused\n", granted, refused);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    srv = fuzz_srv_create();
    if (getenv("FUZZ_STATS") != NULL)
        atexit(print_stats);
    return 0;
}

/* Read every reply waiting on fd; check each one. */
static void drain(int fd, const uint64_t *ours, size_t nours, uint64_t victim_slice,
                  uint64_t asked, bool expect_reply)
{
    int got = 0;

    for (;;) {
        ipc_map_resp_t resp;
        int fds[IPC_MAX_FDS];
        size_t nfds = 0;
        ssize_t n = ipc_recv_msg(fd, &resp, sizeof(resp), fds, IPC_MAX_FDS, &nfds);

        if (n == -EAGAIN || n == -EWOULDBLOCK || n == 0)
            break;
        fuzz_check(n == (ssize_t)sizeof(resp));
        fuzz_check(ipc_msg_check(&resp, (size_t)n) == IPC_MSG_MAP_RESP);
        fuzz_check(resp.count == nfds);
        if (resp.status == 0) {
            bool mine = false;
            for (size_t i = 0; i < nours; i++)
                mine |= ours[i] == asked;
            fuzz_check(mine);
            fuzz_check(asked != victim_slice);
            fuzz_check(nfds > 0);
            granted++;
        } else {
            refused++;
            fuzz_check(nfds == 0);
        }
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        got++;
    }
    fuzz_check(got <= 1);
    if (expect_reply)
        fuzz_check(got == 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ipc_cred_t cred = {.pid = getpid(), .uid = getuid(), .gid = getgid()};
    char id[SRV_CLIENT_ID_LEN], msg[256];
    uint64_t ours[4], victim = 0;
    size_t nours = 0, at = 0;
    srv_slice_t slice;
    srv_client_t *client;
    int sv[2];

    int start_fds = fuzz_nfds();

    fuzz_check(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    client = srv_session_open(srv, &cred, id, sizeof(id));
    fuzz_check(client != NULL);
    if (srv_alloc(srv, "", "victim", -1, 300 << 10, 0, "", false, &slice, msg, sizeof(msg)) == 0)
        victim = slice.info.id;

    /* Our slices: up to 3 bytes each, 1 byte .. 16 MiB (larger than the pool fails). */
    if (at < size) {
        size_t want = data[at++] % 4;
        for (size_t i = 0; i < want && at + 3 <= size; i++, at += 3) {
            uint64_t bytes = 1 + ((uint64_t)data[at] | (uint64_t)data[at + 1] << 8 |
                                  (uint64_t)data[at + 2] << 16);
            if (srv_alloc(srv, srv_session_token(client), id, -1, bytes, 0, "", false, &slice, msg, sizeof(msg)) == 0)
                ours[nours++] = slice.info.id;
        }
    }

    bool alive = true;
    while (alive && at < size) {
        uint8_t flags = data[at++], buf[320];
        size_t len = at < size ? data[at++] : 0;
        int extra = -1;
        uint64_t asked = UINT64_MAX;

        if (len > size - at)
            len = size - at;
        memcpy(buf, data + at, len);
        at += len;
        if ((flags & 4) && len >= sizeof(ipc_hdr_t))
            ipc_hdr_init((ipc_hdr_t *)buf, IPC_MSG_MAP_REQ, flags, (uint32_t)sizeof(ipc_map_req_t));
        if (len >= sizeof(ipc_map_req_t)) {
            ipc_map_req_t req;
            memcpy(&req, buf, sizeof(req));
            if ((flags & 8) && victim != 0)
                req.slice_id = victim;
            else if ((flags & 1) && nours > 0)
                req.slice_id = ours[(flags >> 4) % nours];
            memcpy(buf, &req, sizeof(req));
            asked = req.slice_id;
        }
        if (flags & 2)
            extra = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int rc = ipc_send_msg(sv[1], buf, len, &extra, extra >= 0 ? 1 : 0);
        if (extra >= 0)
            close(extra);
        if (rc != 0)
            break;
        bool valid = len == sizeof(ipc_map_req_t) && ipc_msg_check(buf, len) == IPC_MSG_MAP_REQ &&
                     extra < 0;
        alive = srv_fdsock_session_read(srv, client, id, sv[0]);
        if (valid)
            fuzz_check(alive); /* a well-formed request never ends the session */
        drain(sv[1], ours, nours, victim, asked, valid);
    }

    close(sv[0]);
    close(sv[1]);
    srv_session_close(srv, client);
    fuzz_reset(&srv);
    if (fuzz_nfds() != start_fds)
        fuzz_nfds_show(1);
    fuzz_check(fuzz_nfds() == start_fds);
    return 0;
}
