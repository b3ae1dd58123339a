/*
 * fdsock.c - the fd socket on the libev loop (see fdsock.h).
 *
 * One session per accepted connection: HELLO on accept, then MAP_REQ ->
 * MAP_RESP (+ descriptors) until the peer goes.  Whatever ends a session - the
 * peer's exit or crash, a protocol error, a reply the peer does not read -
 * frees every slice of its client.  A session never blocks the loop: its
 * socket is non-blocking, and a reply that does not fit the socket buffer
 * ends the session.
 *
 * Connections come through a listener (listener.h) that survives running
 * out of descriptors: a connection it refuses is told why in a HELLO.
 *
 * Threads and locks: everything here runs on the libev loop's thread (the
 * daemon's main thread, see main.c), one callback at a time, so the listener
 * and the session list need no lock of their own.  It calls into srv only
 * through srv_session_admit, srv_session_open, srv_session_token,
 * srv_session_chunk_fds and srv_session_close: each takes srv->lock for a
 * short hold and none of them waits (for chunks, a spill or the tier), so a
 * slow gRPC call never stalls the loop.  srv_fdsock_session_read, the loop-free
 * core, may run on any thread (the fuzzer's) as long as one thread at a time
 * uses a given session's fd and client.
 */
#include "fdsock.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc.h"
#include "listener.h"
#include "log.h"
#include "pinpool.h"


typedef struct session {
    ev_io io;
    struct session *prev, *next;
    srv_fdsock_t *fs;
    srv_client_t *client;
    char id[SRV_CLIENT_ID_LEN];
} session_t;

struct srv_fdsock {
    srv_listener_t *listener; /* NULL once it stopped accepting */
    struct ev_loop *loop;
    srv_t *srv;
    session_t *sessions;
    unsigned nsessions;
};

static void session_close(session_t *s)
{
    srv_fdsock_t *fs = s->fs;

    ev_io_stop(fs->loop, &s->io);
    close(s->io.fd);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        fs->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    fs->nsessions--;
    srv_session_close(fs->srv, s->client);
    free(s);
}

static int answer_map(srv_t *srv, srv_client_t *client, const char *id, int fd,
                      const ipc_map_req_t *req)
{
    ipc_map_resp_t resp;
    int fds[IPC_MAX_FDS];
    char msg[256] = "";
    int rc;

    rc = srv_session_chunk_fds(srv, client, req->slice_id, req->first_chunk, req->count, fds, msg,
                               sizeof(msg));
    if (rc != 0)
        srv_debug("client %s: map of slice %" PRIu64 " refused: %s", id, req->slice_id, msg);
    memset(&resp, 0, sizeof(resp));
    ipc_hdr_init(&resp.hdr, IPC_MSG_MAP_RESP, req->hdr.seq, sizeof(resp));
    resp.status = rc;
    resp.first_chunk = req->first_chunk;
    resp.count = rc == 0 ? req->count : 0;
    return ipc_send_msg(fd, &resp, sizeof(resp), fds, resp.count);
}

bool srv_fdsock_session_read(srv_t *srv, srv_client_t *client, const char *id, int fd)
{
    union {
        ipc_hdr_t hdr;
        ipc_map_req_t map;
        char raw[256];
    } m;
    size_t nfds = 0;
    ssize_t n;
    int rc;

    n = ipc_recv_msg(fd, &m, sizeof(m), NULL, 0, &nfds);
    if (n == -EAGAIN || n == -EWOULDBLOCK)
        return true;
    if (n <= 0) {
        if (n < 0 && n != -ECONNRESET)
            srv_warn("client %s: %s; ending its session", id, pinpool_strerror((int)n));
        return false;
    }
    rc = ipc_msg_check(&m, (size_t)n);
    if (rc != IPC_MSG_MAP_REQ) {
        srv_warn("client %s sent a malformed message (%zd bytes); ending its session", id, n);
        return false;
    }
    rc = answer_map(srv, client, id, fd, &m.map);
    if (rc != 0) {
        srv_warn("client %s: cannot send descriptors (%s); ending its session", id,
                 pinpool_strerror(rc));
        return false;
    }
    return true;
}

static void on_session(struct ev_loop *loop, ev_io *w, int revents)
{
    session_t *s = (session_t *)w;

    (void)loop;
    (void)revents;
    if (!srv_fdsock_session_read(s->fs->srv, s->client, s->id, w->fd))
        session_close(s);
}

/* A refused connection learns why in its HELLO (the socket is fresh: the send fits). */
static void say_no(int fd, int status, const char *why)
{
    ipc_hello_t hello;

    memset(&hello, 0, sizeof(hello));
    ipc_hdr_init(&hello.hdr, IPC_MSG_HELLO, 0, sizeof(hello));
    hello.status = status;
    snprintf(hello.reason, sizeof(hello.reason), "%s", why);
    ipc_send_msg(fd, &hello, sizeof(hello), NULL, 0);
}

static void on_refuse(void *arg, int fd, const char *why)
{
    (void)arg;
    say_no(fd, PINPOOL_ENOSPC, why);
}

/* s (its client open, on connection fd) joins the sessions and is read. */
static void session_serve(srv_fdsock_t *fs, session_t *s, int fd)
{
    s->next = fs->sessions;
    if (fs->sessions != NULL)
        fs->sessions->prev = s;
    fs->sessions = s;
    fs->nsessions++;
    ev_io_init(&s->io, on_session, fd, EV_READ);
    ev_io_start(fs->loop, &s->io);
}

static void on_conn(void *arg, int fd)
{
    srv_fdsock_t *fs = arg;
    const ipc_host_ops_t *host = srv_host_backend(fs->srv);
    const srv_config_t *cfg = srv_config(fs->srv);
    uint32_t groups[IPC_MAX_PEER_GROUPS];
    size_t ngroups;
    ipc_cred_t cred;
    ipc_hello_t hello;
    char reason[sizeof(hello.reason)];
    session_t *s;
    int rc;

    s = calloc(1, sizeof(*s));
    if (s == NULL || ipc_peer_cred(fd, &cred) != 0)
        goto fail;
    ngroups = ipc_peer_groups(fd, groups, IPC_MAX_PEER_GROUPS);
    rc = srv_session_admit(fs->srv, &cred, groups, ngroups, reason, sizeof(reason));
    if (rc != 0) {
        /* Say why, then hang up. */
        srv_warn("fd socket: refused pid %d uid %u: %s", (int)cred.pid, (unsigned)cred.uid,
                 reason);
        say_no(fd, rc, reason);
        free(s);
        close(fd);
        return;
    }
    s->client = srv_session_open(fs->srv, &cred, s->id, sizeof(s->id));
    if (s->client == NULL)
        goto fail;
    s->fs = fs;

    memset(&hello, 0, sizeof(hello));
    ipc_hdr_init(&hello.hdr, IPC_MSG_HELLO, 0, sizeof(hello));
    snprintf(hello.client_id, sizeof(hello.client_id), "%s", s->id);
    snprintf(hello.token, sizeof(hello.token), "%s", srv_session_token(s->client));
    snprintf(hello.backend, sizeof(hello.backend), "%s", host->name);
    hello.chunk_size = cfg->chunk_size;
    hello.num_chunks = (uint32_t)((cfg->mem_pool_size + cfg->chunk_size - 1) / cfg->chunk_size);
    rc = ipc_send_msg(fd, &hello, sizeof(hello), NULL, 0);
    if (rc != 0) {
        srv_session_close(fs->srv, s->client);
        goto fail;
    }
    session_serve(fs, s, fd);
    srv_info("client %s connected (pid %d, uid %u)", s->id, (int)cred.pid, (unsigned)cred.uid);
    return;

fail:
    srv_warn("fd socket: cannot open a session for a new client");
    free(s);
    close(fd);
}

int srv_fdsock_start(srv_fdsock_t **out, struct ev_loop *loop, srv_t *srv, int dirfd,
                     const char *dir, const char *name, gid_t group, char *err, size_t errlen)
{
    srv_fdsock_t *fs = calloc(1, sizeof(*fs));
    int rc;

    if (fs == NULL)
        return -ENOMEM;
    fs->loop = loop;
    fs->srv = srv;
    rc = srv_listener_open(&fs->listener, loop, dirfd, dir, name, SOCK_SEQPACKET, group,
                           "fd socket", on_conn, on_refuse, fs, err, errlen);
    if (rc != 0) {
        free(fs);
        return rc;
    }
    *out = fs;
    return 0;
}

int srv_fdsock_adopt(srv_fdsock_t **out, struct ev_loop *loop, srv_t *srv, int dirfd,
                     const char *name, int listen_fd, char *err, size_t errlen)
{
    srv_fdsock_t *fs = calloc(1, sizeof(*fs));
    int rc;

    if (fs == NULL) {
        close(listen_fd);
        return -ENOMEM;
    }
    fs->loop = loop;
    fs->srv = srv;
    rc = srv_listener_adopt(&fs->listener, loop, dirfd, name, listen_fd, "fd socket", on_conn,
                            on_refuse, fs, err, errlen);
    if (rc != 0) {
        free(fs);
        return rc;
    }
    *out = fs;
    return 0;
}

int srv_fdsock_add_session(srv_fdsock_t *fs, int fd, srv_client_t *client, const char *id)
{
    session_t *s = calloc(1, sizeof(*s));
    int flags = fcntl(fd, F_GETFL);

    if (s == NULL || flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
        free(s);
        return -ENOMEM;
    }
    s->fs = fs;
    s->client = client;
    snprintf(s->id, sizeof(s->id), "%s", id);
    session_serve(fs, s, fd);
    return 0;
}

void srv_fdsock_keep_file(srv_fdsock_t *fs, bool keep)
{
    srv_listener_keep_file(fs->listener, keep);
}

int srv_fdsock_listen_fd(const srv_fdsock_t *fs)
{
    return fs->listener != NULL ? srv_listener_fd(fs->listener) : -1;
}

void srv_fdsock_each_session(srv_fdsock_t *fs, void (*fn)(void *arg, int fd, const char *id),
                             void *arg)
{
    for (session_t *s = fs->sessions; s != NULL; s = s->next)
        fn(arg, s->io.fd, s->id);
}

void srv_fdsock_handed_over(srv_fdsock_t *fs)
{
    srv_listener_keep_file(fs->listener, true);
    srv_fdsock_stop_accepting(fs);
    while (fs->sessions != NULL) {
        session_t *s = fs->sessions;
        ev_io_stop(fs->loop, &s->io);
        close(s->io.fd); /* the new daemon holds the connection: no shutdown, no close of the session */
        fs->sessions = s->next;
        fs->nsessions--;
        free(s);
    }
    fs->sessions = NULL;
}

void srv_fdsock_stop_accepting(srv_fdsock_t *fs)
{
    if (fs != NULL) {
        srv_listener_close(fs->listener);
        fs->listener = NULL;
    }
}

void srv_fdsock_close(srv_fdsock_t *fs)
{
    if (fs == NULL)
        return;
    srv_fdsock_stop_accepting(fs);
    while (fs->sessions != NULL)
        session_close(fs->sessions);
    free(fs);
}
