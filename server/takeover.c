/*
 * takeover.c - both sides of `pinpool serve --takeover` (the protocol is in
 * takeover.h; the state itself is handover.c's).
 *
 * Owns: the takeover socket's listener, the peer check (SO_PEERCRED: the
 * daemon's own uid or root; anyone else is refused and the refusal logged),
 * the messages and their timeouts, and the log lines that say how a
 * takeover went and, in the old daemon, how long it paused (from the pause
 * to GO).
 * Never: writes the pool's memory, or frees anything of srv's on the old
 * side: until GO the old daemon is whole and serves on if the takeover fails.
 * Locking: none of its own; the old side runs on the loop thread, the new
 * side on the main thread before the loop, and srv takes its own lock.
 */
#include "takeover.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "ipc.h"
#include "log.h"
#include "pinpool.h"

#define TO_DATA 32768

enum {
    TO_HELLO = 1, TO_REFUSE, TO_BEGIN, TO_CHUNKS, TO_BLOB, TO_SOCKS, TO_SESSIONS, TO_END,
    TO_GO, TO_FAIL, TO_BYE
};

typedef struct to_msg {
    uint32_t type;
    uint32_t len; /* bytes of data used */
    uint64_t a, b;
    char data[TO_DATA + 1]; /* a NUL after the longest payload */
} to_msg_t;

#define TO_HDR offsetof(to_msg_t, data)

struct srv_takeover {
    srv_listener_t *listener;
    srv_takeover_env_t env;
};

static uint64_t now_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Blocking, with send and receive timeouts of secs. */
static int set_blocking(int fd, int secs)
{
    struct timeval tv = {.tv_sec = secs};
    int flags = fcntl(fd, F_GETFL);

    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
        return -errno;
    return 0;
}

static int send_msg(int fd, uint32_t type, uint64_t a, uint64_t b, const void *data, size_t len,
                    const int *fds, size_t nfds)
{
    static to_msg_t m; /* one thread at a time uses either side */

    if (len > TO_DATA)
        return -EMSGSIZE;
    m.type = type;
    m.len = (uint32_t)len;
    m.a = a;
    m.b = b;
    if (len > 0)
        memcpy(m.data, data, len);
    return ipc_send_msg(fd, &m, TO_HDR + len, fds, nfds);
}

static int send_text(int fd, uint32_t type, const char *text)
{
    return send_msg(fd, type, 0, 0, text, strlen(text), NULL, 0);
}

/* One message into *m (fds: up to IPC_MAX_FDS, *nfds of them the caller's).
 * 0, or -errno (-ECONNRESET: the peer closed; -EAGAIN: the timeout). */
static int recv_msg(int fd, to_msg_t *m, int *fds, size_t *nfds)
{
    size_t got = 0;
    ssize_t n = ipc_recv_msg(fd, m, sizeof(*m), fds, fds != NULL ? IPC_MAX_FDS : 0, &got);

    if (nfds != NULL)
        *nfds = got;
    if (n == 0)
        return -ECONNRESET;
    if (n < 0)
        return (int)n;
    if ((size_t)n < TO_HDR || m->len != (size_t)n - TO_HDR || m->len > TO_DATA) {
        for (size_t i = 0; i < got; i++)
            close(fds[i]);
        if (nfds != NULL)
            *nfds = 0;
        return -EPROTO;
    }
    m->data[m->len] = '\0'; /* past the payload: texts end there, data is whole */
    return 0;
}

static const char *io_error(int rc)
{
    return rc == -EAGAIN || rc == -EWOULDBLOCK ? "timed out"
           : rc == -ECONNRESET || rc == -EPIPE ? "the connection closed"
                                               : pinpool_strerror(rc);
}

/* ---- the old daemon --------------------------------------------------------------- */

typedef struct sess_batch {
    int fd; /* the connection to the new daemon */
    int fds[IPC_MAX_FDS];
    char ids[IPC_MAX_FDS][SRV_CLIENT_ID_LEN];
    size_t n;
    uint32_t sent;
    int rc;
} sess_batch_t;

static void flush_sessions(sess_batch_t *b)
{
    if (b->n == 0 || b->rc != 0)
        return;
    b->rc = send_msg(b->fd, TO_SESSIONS, b->n, 0, b->ids, b->n * SRV_CLIENT_ID_LEN, b->fds,
                     b->n);
    b->sent += (uint32_t)b->n;
    b->n = 0;
}

static void add_session(void *arg, int fd, const char *id)
{
    sess_batch_t *b = arg;

    b->fds[b->n] = fd;
    memset(b->ids[b->n], 0, SRV_CLIENT_ID_LEN);
    snprintf(b->ids[b->n], SRV_CLIENT_ID_LEN, "%s", id);
    if (++b->n == IPC_MAX_FDS)
        flush_sessions(b);
}

/* Send everything (after the pause).  0, or an error with why. */
static int send_state(srv_takeover_t *t, int fd, char *why, size_t whylen)
{
    void *blob = NULL;
    size_t len = 0;
    int *fds = NULL, tier_fd = -1;
    uint32_t nfds = 0;
    int rc;

    rc = srv_handover_save(t->env.srv, &blob, &len, &fds, &nfds, &tier_fd, why, whylen);
    if (rc != 0)
        return rc;
    rc = send_msg(fd, TO_BEGIN, len, nfds, NULL, 0, NULL, 0);
    for (uint32_t i = 0; rc == 0 && i < nfds; i += IPC_MAX_FDS) {
        uint32_t n = nfds - i < IPC_MAX_FDS ? nfds - i : IPC_MAX_FDS;
        rc = send_msg(fd, TO_CHUNKS, i, n, NULL, 0, fds + i, n);
    }
    for (size_t at = 0; rc == 0 && at < len; at += TO_DATA) {
        size_t n = len - at < TO_DATA ? len - at : TO_DATA;
        rc = send_msg(fd, TO_BLOB, at, 0, (char *)blob + at, n, NULL, 0);
    }
    if (rc == 0) {
        int socks[5] = {srv_listener_fd(*t->env.grpc), srv_fdsock_listen_fd(*t->env.fdsock),
                        srv_listener_fd(t->listener), t->env.lock_fd, tier_fd};
        rc = send_msg(fd, TO_SOCKS, tier_fd >= 0, 0, NULL, 0, socks, tier_fd >= 0 ? 5 : 4);
    }
    if (rc == 0) {
        sess_batch_t *b = calloc(1, sizeof(*b));
        if (b == NULL) {
            rc = -ENOMEM;
        } else {
            b->fd = fd;
            srv_fdsock_each_session(*t->env.fdsock, add_session, b);
            flush_sessions(b);
            rc = b->rc;
            if (rc == 0)
                rc = send_msg(fd, TO_END, b->sent, XXH64(blob, len, 0), NULL, 0, NULL, 0);
            free(b);
        }
    }
    if (rc != 0)
        snprintf(why, whylen, "sending the state: %s", io_error(rc));
    free(blob);
    free(fds);
    return rc;
}

/* A refused peer's greeting, read (200 ms at most) before the close: a unix
 * socket closed with a message unread resets the connection, and the peer
 * would then read ECONNRESET instead of the refusal. */
static void drain_greeting(int fd, to_msg_t *m)
{
    struct timeval tv = {.tv_usec = 200000};

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)recv_msg(fd, m, NULL, NULL);
}

static void on_takeover_conn(void *arg, int fd)
{
    srv_takeover_t *t = arg;
    to_msg_t *m = malloc(sizeof(*m));
    char why[768] = "";
    ipc_cred_t cred;
    uint64_t t0;
    int rc;

    if (m == NULL || set_blocking(fd, SRV_TAKEOVER_IO_S) != 0 || ipc_peer_cred(fd, &cred) != 0) {
        srv_warn("takeover: cannot take a connection (%s)", m == NULL ? "no memory"
                 : strerror(errno));
        goto out;
    }
    if (cred.uid != geteuid() && cred.uid != 0) {
        srv_warn("takeover: refused pid %d uid %u: only the daemon's uid (%u) or root may take "
                 "it over", (int)cred.pid, (unsigned)cred.uid, (unsigned)geteuid());
        snprintf(why, sizeof(why), "refused: uid %u is neither the daemon's uid (%u) nor root",
                 (unsigned)cred.uid, (unsigned)geteuid());
        send_text(fd, TO_REFUSE, why);
        drain_greeting(fd, m);
        goto out;
    }
    rc = recv_msg(fd, m, NULL, NULL);
    if (rc != 0 || m->type != TO_HELLO) {
        srv_warn("takeover: pid %d sent no greeting (%s); serving on", (int)cred.pid,
                 rc != 0 ? io_error(rc) : "another message");
        goto out;
    }
    srv_info("takeover: pid %d (uid %u, pinpool %s) asks to take over", (int)cred.pid,
             (unsigned)cred.uid, m->data);
    if (srv_handover_check(t->env.srv, why, sizeof(why)) != 0) {
        srv_warn("takeover by pid %d refused: %s; serving on", (int)cred.pid, why);
        send_text(fd, TO_REFUSE, why);
        goto out;
    }
    t0 = now_ns();
    rc = srv_handover_pause(t->env.srv, SRV_TAKEOVER_WAIT_MS, why, sizeof(why));
    if (rc != 0) {
        srv_warn("takeover by pid %d refused: %s; serving on", (int)cred.pid, why);
        send_text(fd, TO_REFUSE, why);
        goto out;
    }
    rc = send_state(t, fd, why, sizeof(why));
    if (rc == 0) {
        struct timeval tv = {.tv_sec = SRV_TAKEOVER_GO_S};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        rc = recv_msg(fd, m, NULL, NULL);
        if (rc != 0)
            snprintf(why, sizeof(why), "waiting for its GO: %s", io_error(rc));
        else if (m->type == TO_FAIL)
            snprintf(why, sizeof(why), "it failed: %.700s", m->data), rc = PINPOOL_EPROTO;
        else if (m->type != TO_GO)
            snprintf(why, sizeof(why), "it sent message %u instead of GO", m->type),
                rc = PINPOOL_EPROTO;
    }
    if (rc != 0) {
        srv_handover_resume(t->env.srv);
        srv_warn("takeover by pid %d failed before GO: %s; serving on as before", (int)cred.pid,
                 why);
        goto out;
    }
    double ms = (double)(now_ns() - t0) / 1e6;
    srv_info("takeover: handed over to pid %d; paused %.1f ms (pause to GO); stopping",
             (int)cred.pid, ms);
    t->env.handed_over(t->env.arg); /* stops reading every socket */
    send_msg(fd, TO_BYE, 0, 0, NULL, 0, NULL, 0);

out:
    free(m);
    close(fd);
}

int srv_takeover_listen(srv_takeover_t **out, struct ev_loop *loop, int dirfd, const char *dir,
                        const char *name, gid_t group, int adopt, const srv_takeover_env_t *env,
                        char *err, size_t errlen)
{
    srv_takeover_t *t = calloc(1, sizeof(*t));
    int rc;

    if (t == NULL) {
        if (adopt >= 0)
            close(adopt);
        return -ENOMEM;
    }
    t->env = *env;
    if (adopt >= 0)
        rc = srv_listener_adopt(&t->listener, loop, dirfd, name, adopt, "takeover socket",
                                on_takeover_conn, NULL, t, err, errlen);
    else
        rc = srv_listener_open(&t->listener, loop, dirfd, dir, name, SOCK_SEQPACKET, group,
                               "takeover socket", on_takeover_conn, NULL, t, err, errlen);
    if (rc != 0) {
        free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void srv_takeover_close(srv_takeover_t *t, bool keep_file)
{
    if (t == NULL)
        return;
    srv_listener_keep_file(t->listener, keep_file);
    srv_listener_close(t->listener);
    free(t);
}

/* ---- the new daemon ------------------------------------------------------------------- */

static void close_fds(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

void srv_takeover_abort(srv_takeover_got_t *got, const char *why)
{
    if (got->conn >= 0) {
        send_text(got->conn, TO_FAIL, why);
        close(got->conn);
    }
    int socks[5] = {got->grpc_listen, got->fd_listen, got->takeover_listen, got->lock_fd,
                    got->tier_fd};
    close_fds(socks, 5);
    if (got->session_fds != NULL)
        close_fds(got->session_fds, got->nsessions);
    free(got->session_fds);
    free(got->session_ids);
    memset(got, 0, sizeof(*got));
    got->conn = got->grpc_listen = got->fd_listen = got->takeover_listen = got->lock_fd = -1;
    got->tier_fd = -1;
}

/* The rest of the exchange, after the greeting.  0, or an error with err. */
static int receive_all(srv_takeover_got_t *got, srv_t *srv, to_msg_t *m, char *err,
                       size_t errlen)
{
    int fds[IPC_MAX_FDS];
    uint64_t bloblen = 0, nchunks = 0, have = 0;
    uint32_t nchunk_fds = 0;
    int *chunk_fds = NULL;
    char *blob = NULL;
    size_t nfds, cap = 0;
    int rc;

    rc = recv_msg(got->conn, m, fds, &nfds);
    if (rc != 0) {
        snprintf(err, errlen, "the running daemon did not answer: %s", io_error(rc));
        return rc;
    }
    if (m->type == TO_REFUSE) {
        close_fds(fds, nfds);
        snprintf(err, errlen, "the running daemon refused the takeover: %s", m->data);
        return PINPOOL_EPERM;
    }
    if (m->type != TO_BEGIN || nfds != 0 || m->a > (1ull << 34) || m->b > (1u << 24)) {
        close_fds(fds, nfds);
        snprintf(err, errlen, "the running daemon sent message %u, not the state", m->type);
        return PINPOOL_EPROTO;
    }
    bloblen = m->a;
    nchunks = m->b;
    blob = malloc(bloblen + 1);
    chunk_fds = malloc((nchunks + 1) * sizeof(*chunk_fds));
    if (blob == NULL || chunk_fds == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (;;) {
        rc = recv_msg(got->conn, m, fds, &nfds);
        if (rc != 0) {
            snprintf(err, errlen, "receiving the state: %s", io_error(rc));
            goto out;
        }
        if (m->type == TO_END)
            break;
        switch (m->type) {
        case TO_CHUNKS:
            if (m->a != nchunk_fds || nfds != m->b || nchunk_fds + nfds > nchunks)
                goto bad;
            memcpy(chunk_fds + nchunk_fds, fds, nfds * sizeof(int));
            nchunk_fds += (uint32_t)nfds;
            nfds = 0;
            break;
        case TO_BLOB:
            if (nfds != 0 || m->a != have || have + m->len > bloblen)
                goto bad;
            memcpy(blob + have, m->data, m->len);
            have += m->len;
            break;
        case TO_SOCKS:
            if (nfds != 4 + (m->a != 0) || got->grpc_listen >= 0)
                goto bad;
            got->grpc_listen = fds[0];
            got->fd_listen = fds[1];
            got->takeover_listen = fds[2];
            got->lock_fd = fds[3];
            got->tier_fd = m->a != 0 ? fds[4] : -1;
            nfds = 0;
            break;
        case TO_SESSIONS:
            if (nfds != m->a || m->len != nfds * SRV_CLIENT_ID_LEN)
                goto bad;
            if (got->nsessions + nfds > cap) {
                size_t ncap = cap ? 2 * cap : 64;
                while (ncap < got->nsessions + nfds)
                    ncap *= 2;
                int *nf = realloc(got->session_fds, ncap * sizeof(*nf));
                if (nf != NULL)
                    got->session_fds = nf;
                char(*ni)[SRV_CLIENT_ID_LEN] = nf == NULL ? NULL
                    : realloc(got->session_ids, ncap * SRV_CLIENT_ID_LEN);
                if (ni == NULL) {
                    rc = -ENOMEM;
                    close_fds(fds, nfds);
                    goto out;
                }
                got->session_ids = ni;
                cap = ncap;
            }
            for (size_t i = 0; i < nfds; i++) {
                got->session_fds[got->nsessions] = fds[i];
                memcpy(got->session_ids[got->nsessions], m->data + i * SRV_CLIENT_ID_LEN,
                       SRV_CLIENT_ID_LEN);
                got->session_ids[got->nsessions][SRV_CLIENT_ID_LEN - 1] = '\0';
                got->nsessions++;
            }
            nfds = 0;
            break;
        default:
            goto bad;
        }
    }
    if (XXH64(blob, bloblen, 0) != m->b) {
        snprintf(err, errlen, "the state arrived damaged (its checksum differs)");
        rc = PINPOOL_EPROTO;
        goto out;
    }
    if (nchunk_fds != nchunks || have != bloblen || got->grpc_listen < 0 ||
        m->a != got->nsessions) {
        snprintf(err, errlen, "the state arrived incomplete (%" PRIu32 " of %" PRIu64
                 " chunks, %" PRIu64 " of %" PRIu64 " bytes)", nchunk_fds, nchunks, have,
                 bloblen);
        rc = PINPOOL_EPROTO;
        goto out;
    }
    rc = srv_handover_load(srv, blob, bloblen, chunk_fds, nchunk_fds, got->tier_fd, err, errlen);
    nchunk_fds = 0; /* taken */
    got->tier_fd = -1;
    goto out;

bad:
    close_fds(fds, nfds);
    snprintf(err, errlen, "the running daemon sent a malformed message (%u)", m->type);
    rc = PINPOOL_EPROTO;
out:
    if (chunk_fds != NULL)
        close_fds(chunk_fds, nchunk_fds);
    free(chunk_fds);
    free(blob);
    return rc;
}

int srv_takeover_receive(const char *path, srv_t *srv, srv_takeover_got_t *got, char *err,
                         size_t errlen)
{
    to_msg_t *m = malloc(sizeof(*m));
    const char *delay = getenv("PINPOOL_TAKEOVER_TEST_DELAY_MS");
    ipc_cred_t cred;
    int rc;

    memset(got, 0, sizeof(*got));
    got->conn = got->grpc_listen = got->fd_listen = got->takeover_listen = got->lock_fd = -1;
    got->tier_fd = -1;
    if (m == NULL)
        return -ENOMEM;
    got->conn = ipc_connect_seqpacket(path);
    if (got->conn < 0) {
        rc = got->conn;
        got->conn = -1;
        snprintf(err, errlen, "--takeover: no daemon to take over at %s: %s", path,
                 pinpool_strerror(rc));
        free(m);
        return rc;
    }
    rc = set_blocking(got->conn, SRV_TAKEOVER_GO_S);
    if (rc == 0 && ipc_peer_cred(got->conn, &cred) == 0) {
        got->old_pid = cred.pid;
        if (cred.uid != geteuid() && cred.uid != 0) {
            snprintf(err, errlen, "--takeover: the daemon at %s runs as uid %u, neither this "
                     "uid (%u) nor root", path, (unsigned)cred.uid, (unsigned)geteuid());
            rc = PINPOOL_EPERM;
        }
    }
    if (rc == 0)
        rc = send_msg(got->conn, TO_HELLO, 1, 0, PINPOOL_VERSION_STRING,
                      strlen(PINPOOL_VERSION_STRING), NULL, 0);
    if (rc == 0)
        rc = receive_all(got, srv, m, err, errlen);
    else if (err[0] == '\0')
        snprintf(err, errlen, "--takeover: %s", io_error(rc));
    free(m);
    if (rc == 0 && delay != NULL && atoi(delay) > 0) { /* tests: a window to kill us in */
        struct timespec ts = {atoi(delay) / 1000, (long)(atoi(delay) % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
    return rc;
}

int srv_takeover_go(srv_takeover_got_t *got, char *err, size_t errlen)
{
    to_msg_t *m = malloc(sizeof(*m));
    int rc = send_msg(got->conn, TO_GO, 0, 0, NULL, 0, NULL, 0);

    if (rc != 0) {
        snprintf(err, errlen, "cannot send GO: %s", io_error(rc));
        free(m);
        return rc;
    }
    /* The old daemon stops reading every socket, then says BYE; without it
     * (it died meanwhile) the sockets are ours all the same. */
    if (m != NULL && (rc = recv_msg(got->conn, m, NULL, NULL)) == 0 && m->type == TO_BYE)
        srv_info("takeover: pid %d stopped serving", (int)got->old_pid);
    else
        srv_warn("takeover: pid %d sent no BYE after GO (%s); serving anyway",
                 (int)got->old_pid, rc != 0 ? io_error(rc) : "another message");
    free(m);
    close(got->conn);
    got->conn = -1;
    return 0;
}
