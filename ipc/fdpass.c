/*
 * fdpass.c - unix SOCK_SEQPACKET sockets: one message at a time, with file
 * descriptors attached (SCM_RIGHTS), and the peer's credentials.
 *
 * Owns: ipc_send_msg, ipc_recv_msg, ipc_peer_cred, ipc_peer_groups, ipc_listen_seqpacket,
 * ipc_connect_seqpacket.
 * Never: leaks a received descriptor (every error path closes all of them),
 * receives one without close-on-exec, raises SIGPIPE, knows what a message
 * means (fdproto.c does).
 * Locking: none; each call works only on its arguments.  Two threads may use
 * one socket, one message per call, as the kernel keeps messages whole.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* struct ucred, MSG_CMSG_CLOEXEC */
#endif

#include "ipc.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

/* Room for IPC_MAX_FDS descriptors; the union aligns it for struct cmsghdr. */
typedef union ipc_cmsg_buf {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * IPC_MAX_FDS)];
} ipc_cmsg_buf_t;

static void close_fds(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        (void)close(fds[i]);
}

int ipc_send_msg(int sock, const void *buf, size_t len, const int *fds, size_t nfds)
{
    ipc_cmsg_buf_t cbuf;
    struct iovec iov;
    struct msghdr msg;
    ssize_t n;

    if (nfds > IPC_MAX_FDS || (nfds > 0 && fds == NULL) || (len > 0 && buf == NULL))
        return -EINVAL;
    /* A zero-length message reads as "peer closed" at the other end, which
     * would then have to drop the descriptors: refuse it here instead. */
    if (len == 0 && nfds > 0)
        return -EINVAL;

    memset(&msg, 0, sizeof(msg));
    iov.iov_base = (void *)buf; /* sendmsg does not write through it */
    iov.iov_len = len;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        struct cmsghdr *cmsg;

        memset(&cbuf, 0, sizeof(cbuf));
        msg.msg_control = cbuf.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
    }

    do
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    /* SOCK_SEQPACKET sends all or nothing; anything else is not a message. */
    if ((size_t)n != len)
        return -EMSGSIZE;
    return 0;
}

ssize_t ipc_recv_msg(int sock, void *buf, size_t len, int *fds, size_t maxfds, size_t *nfds)
{
    ipc_cmsg_buf_t cbuf;
    int got[IPC_MAX_FDS];
    size_t ngot = 0;
    struct iovec iov;
    struct msghdr msg;
    struct cmsghdr *cmsg;
    ssize_t n;
    int err = 0;

    if (nfds != NULL)
        *nfds = 0;
    if (nfds == NULL || (maxfds > 0 && fds == NULL) || (len > 0 && buf == NULL))
        return -EINVAL;

    memset(&msg, 0, sizeof(msg));
    iov.iov_base = buf;
    iov.iov_len = len;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.buf;
    msg.msg_controllen = sizeof(cbuf.buf);

    do
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;

    /* Collect every descriptor that arrived before judging the message, so
     * that each error path below can close them all. */
    for (cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        size_t count;

        if (cmsg->cmsg_len < CMSG_LEN(0) ||
            cmsg->cmsg_len > (size_t)(cbuf.buf + msg.msg_controllen - (char *)cmsg)) {
            err = -EMSGSIZE;
            break;
        }
        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
            continue; /* e.g. SCM_CREDENTIALS: nothing to close */
        count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        if (count > IPC_MAX_FDS - ngot) { /* cannot happen: the buffer is that big */
            err = -EMSGSIZE;
            break;
        }
        memcpy(&got[ngot], CMSG_DATA(cmsg), count * sizeof(int));
        ngot += count;
    }

    if (err == 0 && (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
        err = -EMSGSIZE; /* payload over len, or descriptors the kernel dropped */
    if (err == 0 && ngot > maxfds)
        err = -EMSGSIZE;
    if (err != 0)
        goto fail;
    if (n == 0) {
        /* End of stream (or an empty message, which ipc_send_msg never sends
         * with descriptors): nothing may be handed to the caller. */
        close_fds(got, ngot);
        return 0;
    }

    if (ngot > 0)
        memcpy(fds, got, ngot * sizeof(int));
    *nfds = ngot;
    return n;

fail:
    close_fds(got, ngot);
    return err;
}

int ipc_peer_cred(int sock, ipc_cred_t *out)
{
    struct ucred uc;
    socklen_t len = sizeof(uc);

    if (out == NULL)
        return -EINVAL;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
        return -errno;
    if (len != sizeof(uc))
        return -EPROTO;
    out->pid = uc.pid;
    out->uid = uc.uid;
    out->gid = uc.gid;
    return 0;
}

size_t ipc_peer_groups(int sock, uint32_t *groups, size_t max)
{
    gid_t g[IPC_MAX_PEER_GROUPS];
    socklen_t len = sizeof(g);
    size_t n;

    if (getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, g, &len) != 0)
        return 0;
    n = len / sizeof(gid_t);
    for (size_t i = 0; i < n && i < max; i++)
        groups[i] = (uint32_t)g[i];
    return n < max ? n : max;
}

/* Fill *sa for path; -ENAMETOOLONG when it does not fit sun_path with its NUL. */
static int fill_sockaddr(struct sockaddr_un *sa, const char *path)
{
    size_t len;

    if (path == NULL || path[0] == '\0')
        return -EINVAL;
    len = strlen(path);
    if (len >= sizeof(sa->sun_path))
        return -ENAMETOOLONG;
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, path, len + 1);
    return 0;
}

/*
 * Replaces a socket file left at path (a stale daemon's; refusing a second live
 * daemon is the caller's job, e.g. with a lock file) but never anything else:
 * -EEXIST when a regular file, directory, ... sits there.
 */
int ipc_listen_seqpacket(const char *path, int backlog)
{
    struct sockaddr_un sa;
    struct stat st;
    int fd = -1;
    int bound = 0;
    int err;

    err = fill_sockaddr(&sa, path);
    if (err < 0)
        return err;

    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return -EEXIST;
        if (unlink(path) < 0 && errno != ENOENT)
            return -errno;
    } else if (errno != ENOENT) {
        return -errno;
    }

    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (const struct sockaddr *)&sa, sizeof(sa)) < 0)
        goto fail;
    bound = 1;
    if (chmod(path, 0660) < 0)
        goto fail;
    if (listen(fd, backlog) < 0)
        goto fail;
    return fd;

fail:
    err = -errno;
    (void)close(fd);
    if (bound)
        (void)unlink(path);
    return err;
}

int ipc_connect_seqpacket(const char *path)
{
    struct sockaddr_un sa;
    int fd;
    int err;
    int rc;

    err = fill_sockaddr(&sa, path);
    if (err < 0)
        return err;
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* A unix connect interrupted while waiting for backlog room leaves the
     * socket unconnected, so it is simply tried again. */
    do
        rc = connect(fd, (const struct sockaddr *)&sa, sizeof(sa));
    while (rc < 0 && errno == EINTR);
    if (rc < 0)
        goto fail;
    return fd;

fail:
    err = -errno;
    (void)close(fd);
    return err;
}
