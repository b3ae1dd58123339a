/*
 * session.c - one session of a context with the daemon (see ctx.h): making
 * it (the trust checks, the fd socket's greeting, the gRPC channel), the
 * fd-socket exchange, and whether the session still lives.
 *
 * Trust.  Before it connects, the library checks the directory that holds the
 * sockets: it must belong to this process's uid, root, or $PINPOOL_DAEMON_UID
 * (a uid or a user name), and be writable by nobody else (no group or other
 * write bit; the daemon makes it 0700, 0750 with --allow-gid), so that no
 * other user can have put a socket there.  Both sockets are then reached
 * through that very directory (the O_PATH descriptor of the checked
 * directory, as /proc/self/fd/N/NAME), so that nothing can be swapped in
 * between; once connected, the fd socket's peer (SO_PEERCRED: the process
 * listening) must be this uid, root, $PINPOOL_DAEMON_UID or the directory's
 * owner.  Anything else is PINPOOL_EPERM with the reason: another user may
 * be posing as the daemon (a squatted /tmp/pinpool-$UID when none runs).
 * tcp: targets are not checked here (the bearer token is their credential).
 *
 * The fd socket.  Every request carries a sequence number, which its answer
 * repeats; an answer that is not for the request being waited for (one whose
 * request gave up) is discarded, its descriptors closed, so a late answer
 * never shifts the later ones.  Every wait (the greeting, each answer) is
 * bounded by $PINPOOL_FD_TIMEOUT_MS (10 s): past it the request fails with
 * PINPOOL_ETIMEOUT and the session goes on - it is not ended, because the
 * daemon would then free slices this process still has mapped and may be
 * using, and hand their memory to others.  The socket is non-blocking; the
 * waits are poll()s.
 *
 * Liveness.  The daemon closes a session's fd socket only when the session
 * ends (its exit, crash or restart included), and it frees the session's
 * slices then; so a closed fd socket (POLLHUP, EOF, ECONNRESET) means the
 * session and everything of it is gone: PINPOOL_ESESSION from then on.
 *
 * Never: keeps a received descriptor it was not asked for, or one of a failed
 * request; trusts a field of a message before ipc_msg_check passed it;
 * blocks without a bound on the fd socket.
 * Locking: c->fd_lock serialises request/answer pairs; c->lost and
 * c->max_message are atomics; everything else of a session is set before it
 * is shared and read-only afterwards.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cudaload.h"
#include "ctx.h"
#include "paths.h"

#define FD_TIMEOUT_MS_DEFAULT 10000

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The bound on each wait on the fd socket, in ms ($PINPOOL_FD_TIMEOUT_MS). */
static int fd_timeout_ms(void)
{
    const char *e = getenv("PINPOOL_FD_TIMEOUT_MS");
    char *end;
    long v;

    if (e == NULL || e[0] == '\0')
        return FD_TIMEOUT_MS_DEFAULT;
    v = strtol(e, &end, 10);
    return *end == '\0' && v >= 1 && v <= 3600000 ? (int)v : FD_TIMEOUT_MS_DEFAULT;
}

/* ms left until deadline (ns), at least 0. */
static int ms_left(int64_t deadline)
{
    int64_t left = deadline - now_ns();

    return left <= 0 ? 0 : (int)((left + 999999) / 1000000);
}

/* ---- trust ---------------------------------------------------------------------------- */

/* "uid 1001 (pinpool-tb)" into buf. */
static const char *who(uid_t uid, char *buf, size_t len)
{
    struct passwd pw, *res = NULL;
    char tmp[1024];

    if (getpwuid_r(uid, &pw, tmp, sizeof(tmp), &res) == 0 && res != NULL)
        snprintf(buf, len, "uid %u (%s)", (unsigned)uid, res->pw_name);
    else
        snprintf(buf, len, "uid %u", (unsigned)uid);
    return buf;
}

/* $PINPOOL_DAEMON_UID: 0 and *set, *uid; PINPOOL_EINVAL (msg) when it is
 * neither a number nor a user's name. */
static int expected_uid(bool *set, uid_t *uid, char *msg, size_t msglen)
{
    const char *e = getenv("PINPOOL_DAEMON_UID");
    struct passwd pw, *res = NULL;
    char tmp[1024], *end;
    unsigned long v;

    *set = false;
    if (e == NULL || e[0] == '\0')
        return 0;
    v = strtoul(e, &end, 10);
    if (*end == '\0' && v <= UINT32_MAX - 1) {
        *uid = (uid_t)v;
    } else if (getpwnam_r(e, &pw, tmp, sizeof(tmp), &res) == 0 && res != NULL) {
        *uid = res->pw_uid;
    } else {
        snprintf(msg, msglen, "$PINPOOL_DAEMON_UID='%s' is neither a uid nor a user's name", e);
        return PINPOOL_EINVAL;
    }
    *set = true;
    return 0;
}

/* The uid a daemon of this process may run as: its own, root, $PINPOOL_DAEMON_UID. */
static bool trusted(uid_t uid, bool set, uid_t expected)
{
    return uid == getuid() || uid == 0 || (set && uid == expected);
}

/*
 * Open the directory of socket path (O_PATH) and check it (see the file's
 * comment); *name is the socket's name in it.  0 and *dirfd and *owner;
 * PINPOOL_ECONNECT when the directory or the socket (name) is not there;
 * PINPOOL_EPERM when it is not to be trusted; msg says which.
 */
static int open_dir(const char *path, const char *name, int *dirfd, uid_t *owner, char *msg,
                    size_t msglen)
{
    char dir[PINPOOL__PATH_LEN], a[96], b[96];
    const char *slash = strrchr(path, '/');
    struct stat st, sock;
    uid_t exp = 0;
    bool set;
    int fd, rc;

    rc = expected_uid(&set, &exp, msg, msglen);
    if (rc != 0)
        return rc;
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        rc = errno;
        if (fd >= 0)
            close(fd);
        snprintf(msg, msglen, "cannot connect to the pinpool daemon at %s: its directory %s: %s "
                 "(is `pinpool serve` running? set PINPOOL_SOCKET or pass its --socket path)",
                 path, dir, strerror(rc));
        return PINPOOL_ECONNECT;
    }
    if (fstatat(fd, name, &sock, AT_SYMLINK_NOFOLLOW) != 0) {
        rc = errno;
        close(fd);
        snprintf(msg, msglen, "cannot connect to the pinpool daemon at %s: %s (is `pinpool "
                 "serve` running? set PINPOOL_SOCKET or pass its --socket path)", path,
                 strerror(rc));
        return PINPOOL_ECONNECT;
    }
    if (!trusted(st.st_uid, set, exp)) {
        snprintf(msg, msglen, "refusing the pinpool socket %s: its directory %s belongs to %s, "
                 "not to this process's %s, root or $PINPOOL_DAEMON_UID, so another user may "
                 "be posing as the daemon (a directory made where the daemon's would be, as "
                 "/tmp/pinpool-$UID is when no daemon runs); if that user runs your daemon, "
                 "set PINPOOL_DAEMON_UID=%u", path, dir, who(st.st_uid, a, sizeof(a)),
                 who(getuid(), b, sizeof(b)), (unsigned)st.st_uid);
        close(fd);
        return PINPOOL_EPERM;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(msg, msglen, "refusing the pinpool socket %s: its directory %s is writable by "
                 "%s (mode %04o), so anyone there could have put the socket in place of the "
                 "daemon's (the daemon makes it 0700, 0750 with --allow-gid, and refuses to "
                 "serve from such a directory)", path, dir,
                 (st.st_mode & S_IWOTH) ? "everyone" : "its group",
                 (unsigned)(st.st_mode & 07777));
        close(fd);
        return PINPOOL_EPERM;
    }
    *dirfd = fd;
    *owner = st.st_uid;
    return 0;
}

/* The path that reaches name inside the checked directory dirfd: through
 * /proc/self/fd when that is there and the path fits a socket address; else
 * fallback (the path as given: nothing then keeps the directory from being
 * swapped between the check and the connect). */
static void via_dir(int dirfd, const char *name, const char *fallback, char *out, size_t len)
{
    static const size_t sun_max = 107; /* sizeof(sockaddr_un.sun_path) - 1 */
    int n = snprintf(out, len, "/proc/self/fd/%d/%s", dirfd, name);

    if (n < 0 || (size_t)n >= len || (size_t)n > sun_max || access("/proc/self/fd", X_OK) != 0)
        snprintf(out, len, "%s", fallback);
}

/* The peer of the fd socket: one this process may trust as its daemon?
 * 0 or PINPOOL_EPERM (msg). */
static int check_peer(int fd, const char *fdpath, uid_t dir_owner, uint32_t *peer_uid, char *msg,
                      size_t msglen)
{
    char a[96], b[96];
    ipc_cred_t cred;
    uid_t exp = 0;
    bool set;
    int rc;

    rc = ipc_peer_cred(fd, &cred);
    if (rc != 0) {
        snprintf(msg, msglen, "cannot read who listens on %s (SO_PEERCRED): %s", fdpath,
                 pinpool_strerror(rc));
        return PINPOOL_EPROTO;
    }
    rc = expected_uid(&set, &exp, msg, msglen);
    if (rc != 0)
        return rc;
    if (!trusted(cred.uid, set, exp) && cred.uid != dir_owner) {
        snprintf(msg, msglen, "refusing the pinpool daemon at %s: the process listening there "
                 "(pid %d) runs as %s, not as this process's %s, root, the owner of the "
                 "socket's directory or $PINPOOL_DAEMON_UID: another user may be posing as the "
                 "daemon; if that user runs your daemon, set PINPOOL_DAEMON_UID=%u", fdpath,
                 (int)cred.pid, who(cred.uid, a, sizeof(a)), who(getuid(), b, sizeof(b)),
                 (unsigned)cred.uid);
        return PINPOOL_EPERM;
    }
    *peer_uid = (uint32_t)cred.uid;
    return 0;
}

/* ---- the fd socket ------------------------------------------------------------------- */

/* One message from fd into buf, its descriptors (up to IPC_MAX_FDS) into fds,
 * waiting until deadline.  As ipc_recv_msg; -ETIMEDOUT past the deadline;
 * -ECONNRESET when the socket is closed without a message. */
static ssize_t recv_until(int fd, void *buf, size_t len, int *fds, size_t *nfds, int64_t deadline)
{
    for (;;) {
        ssize_t n = ipc_recv_msg(fd, buf, len, fds, IPC_MAX_FDS, nfds);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r;

        if (n != -EAGAIN && n != -EWOULDBLOCK)
            return n;
        r = poll(&p, 1, ms_left(deadline));
        if (r == 0)
            return -ETIMEDOUT;
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

/* Send one message, waiting for room until deadline; 0 or -errno (-ETIMEDOUT). */
static int send_until(int fd, const void *buf, size_t len, int64_t deadline)
{
    for (;;) {
        int rc = ipc_send_msg(fd, buf, len, NULL, 0);
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int r;

        if (rc != -EAGAIN && rc != -EWOULDBLOCK)
            return rc;
        r = poll(&p, 1, ms_left(deadline));
        if (r == 0)
            return -ETIMEDOUT;
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

static void close_fds(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

/* Connect the fd socket at fdpath (shown as shown), check its peer and read
 * the greeting into c.  0, or the error (msg). */
static int greet(pinpool__conn_t *c, const char *fdpath, const char *shown, uid_t dir_owner,
                 char *msg, size_t msglen)
{
    int fds[IPC_MAX_FDS], timeout = fd_timeout_ms(), fd, rc;
    char why[256];
    ipc_hello_t hello;
    size_t nfds = 0;
    ssize_t n;

    fd = ipc_connect_seqpacket(fdpath);
    if (fd < 0) {
        snprintf(msg, msglen, "cannot connect to the pinpool daemon at %s: %s (is `pinpool "
                 "serve` running? set PINPOOL_SOCKET or pass its --socket path)", shown,
                 strerror(-fd));
        return PINPOOL_ECONNECT;
    }
    rc = check_peer(fd, shown, dir_owner, &c->peer_uid, msg, msglen);
    if (rc == 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
        rc = -errno;
    if (rc != 0) {
        close(fd);
        return rc;
    }
    n = recv_until(fd, &hello, sizeof(hello), fds, &nfds, now_ns() + (int64_t)timeout * 1000000);
    close_fds(fds, nfds); /* a greeting carries none */
    if (n > 0 && ipc_msg_check(&hello, (size_t)n) == IPC_MSG_HELLO && hello.status != 0) {
        rc = hello.status;
        snprintf(msg, msglen, "the pinpool daemon refused this process: %s", hello.reason);
    } else if (n <= 0 || ipc_msg_check(&hello, (size_t)n) != IPC_MSG_HELLO) {
        rc = n == -ETIMEDOUT ? PINPOOL_ETIMEOUT : PINPOOL_EPROTO;
        snprintf(msg, msglen, "%s did not greet us as a pinpool daemon does (%s)", shown,
                 n == -ETIMEDOUT ? "no greeting within $PINPOOL_FD_TIMEOUT_MS"
                 : n < 0         ? strerror((int)-n)
                 : n == 0        ? "it closed the connection"
                                 : "bad message");
    } else if ((c->host = ipc_host_backend(hello.backend)) == NULL) {
        rc = PINPOOL_EPROTO;
        snprintf(msg, msglen, "the daemon's host backend '%s' is not supported by this "
                 "libpinpool %s", hello.backend, PINPOOL_VERSION_STRING);
    } else if (c->host->cuda && ipc_cuda_load(why, sizeof(why)) != 0) {
        rc = PINPOOL_ECUDA;
        snprintf(msg, msglen, "the daemon's host memory is CUDA memory (%s) but this process "
                 "cannot use CUDA: %s", hello.backend, why);
    }
    if (rc != 0) {
        close(fd);
        return rc;
    }
    c->fd = fd;
    c->chunk_size = hello.chunk_size;
    snprintf(c->client_id, sizeof(c->client_id), "%s", hello.client_id);
    snprintf(c->token, sizeof(c->token), "%s", hello.token);
    return 0;
}

int pinpool__conn_open(pinpool__conn_t **out, const char *path, bool session, uint64_t gen,
                       char *msg, size_t msglen)
{
    char fdpath[PINPOOL__PATH_LEN + 8], fdname[PINPOOL__PATH_LEN + 8], via[PINPOOL__PATH_LEN + 40];
    const char *name = strrchr(path, '/') != NULL ? strrchr(path, '/') + 1 : path;
    pinpool__conn_t *c = calloc(1, sizeof(*c));
    uid_t owner = 0;
    int rc;

    if (c == NULL) {
        snprintf(msg, msglen, "out of memory");
        return -ENOMEM;
    }
    c->refs = 1;
    c->fd = c->dirfd = -1;
    c->gen = gen;
    pthread_mutex_init(&c->fd_lock, NULL);
    if (strncmp(path, "tcp:", 4) == 0) {
        if (session) {
            rc = PINPOOL_EINVAL;
            snprintf(msg, msglen, "%s: a session needs the daemon's unix socket (its fd socket "
                     "passes descriptors); tcp: serves calls without one", path);
            goto fail;
        }
        snprintf(via, sizeof(via), "%s", path);
    } else {
        if (ipc_fd_socket_path(path, fdpath, sizeof(fdpath)) != 0 ||
            ipc_fd_socket_path(name, fdname, sizeof(fdname)) != 0) {
            rc = -ENAMETOOLONG;
            snprintf(msg, msglen, "socket path too long: %s", path);
            goto fail;
        }
        rc = open_dir(session ? fdpath : path, session ? fdname : name, &c->dirfd, &owner, msg,
                      msglen);
        if (rc != 0)
            goto fail;
        if (session) {
            via_dir(c->dirfd, fdname, fdpath, via, sizeof(via));
            rc = greet(c, via, fdpath, owner, msg, msglen);
            if (rc != 0)
                goto fail;
        }
        via_dir(c->dirfd, name, path, via, sizeof(via));
    }
    rc = pinpool__rpc_open(&c->rpc, via);
    if (rc != 0) {
        snprintf(msg, msglen, "cannot open a gRPC channel: %s", pinpool_strerror(rc));
        goto fail;
    }
    pinpool__rpc_set_token(c->rpc, c->token);
    *out = c;
    return 0;

fail:
    pinpool__conn_free(c);
    return rc;
}

void pinpool__conn_free(pinpool__conn_t *c)
{
    if (c == NULL)
        return;
    pinpool__rpc_close(c->rpc);
    if (c->fd >= 0)
        close(c->fd); /* the daemon frees the session's slices, if it still lives */
    if (c->dirfd >= 0)
        close(c->dirfd);
    pthread_mutex_destroy(&c->fd_lock);
    memset(c->token, 0, sizeof(c->token));
    free(c);
}

bool pinpool__conn_lost(pinpool__conn_t *c, int wait_ms)
{
    struct pollfd p;

    if (c == NULL || c->fd < 0)
        return false;
    if (__atomic_load_n(&c->lost, __ATOMIC_ACQUIRE))
        return true;
    /* Not POLLIN: an answer waiting there (a late one) is no sign of a close. */
    p = (struct pollfd){.fd = c->fd, .events = POLLRDHUP};
    while (poll(&p, 1, wait_ms) < 0 && errno == EINTR)
        ;
    if ((p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)) == 0)
        return false;
    __atomic_store_n(&c->lost, 1, __ATOMIC_RELEASE);
    return true;
}

/* The answer to request seq: 0 with resp and its descriptors (fds, *nfds),
 * earlier answers discarded; or -errno (-ETIMEDOUT, -ECONNRESET: closed). */
static int answer_for(pinpool__conn_t *c, uint32_t seq, ipc_map_resp_t *resp, int *fds,
                      size_t *nfds, int64_t deadline)
{
    for (;;) {
        ssize_t len = recv_until(c->fd, resp, sizeof(*resp), fds, nfds, deadline);

        if (len == 0 || len == -ECONNRESET || len == -EPIPE)
            return -ECONNRESET;
        if (len < 0)
            return (int)len;
        if (ipc_msg_check(resp, (size_t)len) != IPC_MSG_MAP_RESP) {
            close_fds(fds, *nfds);
            return -EBADMSG;
        }
        if (resp->hdr.seq == seq)
            return 0;
        /* An answer to a request that gave up (its seq is older): drop it. */
        close_fds(fds, *nfds);
        if ((int32_t)(resp->hdr.seq - seq) > 0)
            return -EBADMSG; /* an answer to a request not made yet */
    }
}

int pinpool__conn_fetch_fds(pinpool_ctx_t *ctx, pinpool__conn_t *c, uint64_t id, uint32_t first,
                            uint32_t n, int *fds)
{
    int timeout = fd_timeout_ms(), rc = 0;
    uint32_t got = 0;

    pthread_mutex_lock(&c->fd_lock);
    while (got < n) {
        uint32_t count = n - got < IPC_MAX_FDS ? n - got : IPC_MAX_FDS;
        int64_t deadline = now_ns() + (int64_t)timeout * 1000000;
        int tmp[IPC_MAX_FDS];
        ipc_map_req_t req;
        ipc_map_resp_t resp;
        size_t nfds = 0;

        memset(&req, 0, sizeof(req));
        ipc_hdr_init(&req.hdr, IPC_MSG_MAP_REQ, ++c->seq, sizeof(req));
        req.slice_id = id;
        req.first_chunk = first + got;
        req.count = count;
        rc = send_until(c->fd, &req, sizeof(req), deadline);
        if (rc == 0)
            rc = answer_for(c, req.hdr.seq, &resp, tmp, &nfds, deadline);
        if (rc == -ECONNRESET || rc == -EPIPE || (rc != 0 && pinpool__conn_lost(c, 0))) {
            __atomic_store_n(&c->lost, 1, __ATOMIC_RELEASE);
            rc = pinpool__session_fail(ctx);
            break;
        }
        if (rc == -ETIMEDOUT) {
            rc = pinpool__fail(ctx, PINPOOL_ETIMEOUT, "the daemon did not answer on the fd "
                               "socket within %d ms ($PINPOOL_FD_TIMEOUT_MS) for the chunks of "
                               "slice %" PRIu64 "; the session goes on (a late answer is "
                               "discarded)", timeout, id);
            break;
        }
        if (rc != 0) {
            rc = pinpool__fail(ctx, PINPOOL_EPROTO, "bad answer on the fd socket (%s)",
                               rc == -EBADMSG ? "malformed" : strerror(-rc));
            break;
        }
        if (resp.status != 0 || nfds != count || resp.count != count) {
            close_fds(tmp, nfds);
            rc = resp.status != 0 ? resp.status : PINPOOL_EPROTO;
            rc = pinpool__fail(ctx, rc, "the daemon refused the chunks of slice %" PRIu64 ": %s",
                               id, pinpool_strerror(rc));
            break;
        }
        memcpy(fds + got, tmp, count * sizeof(int));
        got += count;
    }
    pthread_mutex_unlock(&c->fd_lock);
    if (rc != 0)
        close_fds(fds, got);
    return rc;
}
