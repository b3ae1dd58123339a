/*
 * gms.c - the GMS sockets (see gms.h): connections, the writer/reader lock,
 * allocations and metadata of each store.
 *
 * The lock is GMS's (server/session.py and fsm.py of gpu_memory_service): a
 * connection's first frame is a HandshakeRequest for "rw", "ro" or
 * "rw_or_ro" with an optional timeout_ms; its lock is held until it hangs
 * up.  RW is granted when no writer and no reader holds the store, and
 * empties it (a writer replaces the layout); RO when the store is committed,
 * no writer holds it and no writer waits; rw_or_ro is RO where RO can be
 * granted, else RW if the store is not committed.  A request that cannot be
 * granted waits in a queue (its timer answers success=false at timeout_ms;
 * a waiter that hangs up leaves it: its socket is still watched).
 * The writer allocates, frees, puts and deletes metadata and commits:
 * CommitRequest computes the layout hash (sha256 as gms.py computes it),
 * marks the store committed, answers and ends the connection.  A writer that
 * hangs up without committing leaves the store empty.  Readers export
 * (the descriptor comes with the response), get and list.
 * Isolation: a store belongs to the uid of the writer that filled it (its
 * peer's SO_PEERCRED uid) until it is empty again; another uid's handshake
 * is answered with an ErrorResponse and the connection ends.  The daemon's
 * admission rules (--allow-uid, --allow-gid, --max-clients) apply first.
 * Hostile peers: a frame longer than GMS_MAX_FRAME, or one that does not
 * decode, is answered with an ErrorResponse and ends the connection; a
 * request that decodes but is refused (unknown allocation, not allowed in
 * this lock, a bound reached) is answered with an ErrorResponse and the
 * connection goes on, as in GMS.  A peer that stops mid-frame only holds its
 * own connection (and at most one frame's buffer); a reply the peer does not
 * read waits in its output buffer (reading stops until it is gone).
 * Threads: the loop's only; no locks.  srv is asked only srv_session_admit
 * (one short hold of srv->lock).
 */
#include "gms.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cudaload.h"
#include "devmem.h"
#include "dirs.h"
#include "gms_int.h"
#include "ipc.h"
#include "listener.h"
#include "log.h"
#include "pinpool.h"

#define GMS_KEEP_IN (64u << 10) /* a connection's input buffer past a frame larger than this shrinks */

static void conn_close(gms_conn_t *c);

/* ---- output -------------------------------------------------------------------------- */

/* Send what is buffered (and the pending descriptor with its first byte).
 * 0, or -1: the connection is broken. */
static int flush(gms_conn_t *c)
{
    while (c->out_off < c->out_len) {
        struct iovec iov = {c->out + c->out_off, c->out_len - c->out_off};
        char ctl[CMSG_SPACE(sizeof(int))];
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        ssize_t n;

        if (c->out_fd >= 0) {
            struct cmsghdr *cm;
            memset(ctl, 0, sizeof(ctl));
            mh.msg_control = ctl;
            mh.msg_controllen = sizeof(ctl);
            cm = CMSG_FIRSTHDR(&mh);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cm), &c->out_fd, sizeof(int));
        }
        n = sendmsg(c->io.fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0)
            return -1;
        if (c->out_fd >= 0) {
            close(c->out_fd);
            c->out_fd = -1;
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off < c->out_len) {
        ev_io_stop(c->g->loop, &c->io);
        ev_io_start(c->g->loop, &c->wio);
        return 0;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    ev_io_stop(c->g->loop, &c->wio);
    return 0;
}

/* Queue frame (ours now; NULL: out of memory) and a dup of fd (-1: none). */
static int send_frame(gms_conn_t *c, uint8_t *frame, size_t len, int fd)
{
    if (frame == NULL || c->out != NULL) { /* out: never, reading stops while output waits */
        free(frame);
        c->broken = true;
        return -1;
    }
    c->out = frame;
    c->out_len = len;
    c->out_off = 0;
    if (fd >= 0) {
        c->out_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (c->out_fd < 0) {
            c->broken = true;
            return -1;
        }
    }
    if (flush(c) != 0) {
        c->broken = true;
        return -1;
    }
    return 0;
}

/* After c was answered outside its read callback: close it if it is done,
 * else read its next requests once nothing waits to be sent. */
static void settle(gms_conn_t *c)
{
    if (c->broken || (c->closing && c->out == NULL)) {
        conn_close(c);
        return;
    }
    if (c->out == NULL && !c->closing && c->mode != GMS_MODE_WAITING)
        ev_io_start(c->g->loop, &c->io);
}

int gms_send_error(gms_conn_t *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    size_t len = 0;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    srv_debug("gms %s: session %u: %s", c->st->name, c->session, msg);
    uint8_t *f = gms_error_frame(msg, &len); /* len is set here: not in the call's arguments */
    return send_frame(c, f, len, -1);
}

int gms_send(gms_conn_t *c, gms_out_t *o, int fd)
{
    size_t len;
    uint8_t *f = gms_out_frame(o, &len);

    return send_frame(c, f, len, fd);
}

/* ---- the store ------------------------------------------------------------------------ */

void gms_store_clear(gms_store_t *st)
{
    for (size_t i = 0; i < st->nallocs; i++) {
        ipc_devmem_vmm_free(st->device, st->allocs[i]->handle);
        free(st->allocs[i]);
    }
    st->nallocs = 0;
    st->bytes = 0;
    for (size_t i = 0; i < st->nmeta; i++) {
        free(st->meta[i]->value);
        free(st->meta[i]);
    }
    st->nmeta = 0;
    st->meta_bytes = 0;
    st->hash[0] = '\0';
    st->committed = false;
    st->next_slot = 0;
}

static bool store_empty(const gms_store_t *st)
{
    return st->nallocs == 0 && !st->committed && st->rw == NULL && st->ro == 0;
}

const char *gms_state_name(const gms_store_t *st)
{
    return st->rw != NULL ? "RW" : st->ro > 0 ? "RO" : st->committed ? "COMMITTED" : "EMPTY";
}

/* May conn's uid use st?  A store is its filler's until it is empty. */
static bool uid_may(const gms_store_t *st, const gms_conn_t *c)
{
    return !st->has_owner || st->owner == c->cred.uid;
}

static bool can_rw(const gms_store_t *st)
{
    return st->rw == NULL && st->ro == 0;
}

static bool can_ro(const gms_store_t *st)
{
    return st->committed && st->rw == NULL && st->waiting_writers == 0;
}

static void unqueue(gms_conn_t *c)
{
    gms_store_t *st = c->st;

    if (c->mode != GMS_MODE_WAITING)
        return;
    if (c->qprev != NULL)
        c->qprev->qnext = c->qnext;
    else
        st->qhead = c->qnext;
    if (c->qnext != NULL)
        c->qnext->qprev = c->qprev;
    else
        st->qtail = c->qprev;
    c->qprev = c->qnext = NULL;
    if (c->want == GMS_LOCK_RW)
        st->waiting_writers--;
    ev_timer_stop(c->g->loop, &c->timer);
    c->mode = GMS_MODE_NONE;
}

/* Answer a granted (or refused: mode NONE) handshake. */
static void answer_handshake(gms_conn_t *c, bool ok)
{
    gms_out_t o;

    gms_out_begin(&o, "handshake_response", 3);
    gms_out_bool(&o, "success", ok);
    gms_out_bool(&o, "committed", c->st->committed);
    if (ok)
        gms_out_str(&o, "granted_lock_type", c->mode == GMS_MODE_RW ? "rw" : "ro");
    else
        gms_out_nil(&o, "granted_lock_type");
    gms_send(c, &o, -1);
    if (!ok)
        c->closing = true;
}

static void grant(gms_conn_t *c, gms_mode_t mode)
{
    gms_store_t *st = c->st;

    if (mode == GMS_MODE_RW) {
        gms_store_clear(st); /* RW replaces the layout */
        st->rw = c;
        st->owner = c->cred.uid;
        st->has_owner = true;
        srv_info("gms %s: writer session %u (pid %d, uid %u)", st->name, c->session,
                 (int)c->cred.pid, (unsigned)c->cred.uid);
    } else {
        st->ro++;
        srv_debug("gms %s: reader session %u (pid %d)", st->name, c->session, (int)c->cred.pid);
    }
    c->mode = mode;
    answer_handshake(c, true); /* the caller settles c */
}

/* The mode c's request can have now, or NONE. */
static gms_mode_t grantable(const gms_store_t *st, gms_lock_t want, bool waiting)
{
    if (want == GMS_LOCK_RW)
        /* a waiting writer counts itself among the waiting writers; can_rw ignores them */
        return can_rw(st) ? GMS_MODE_RW : GMS_MODE_NONE;
    if (want == GMS_LOCK_RO)
        return can_ro(st) ? GMS_MODE_RO : GMS_MODE_NONE;
    (void)waiting;
    if (can_ro(st))
        return GMS_MODE_RO;
    return can_rw(st) && !st->committed ? GMS_MODE_RW : GMS_MODE_NONE;
}

/* Grant what the queue's order allows; refuse waiters of another uid. */
void gms_try_grant(gms_store_t *st)
{
    bool again = true;

    while (again) {
        again = false;
        for (gms_conn_t *c = st->qhead; c != NULL; c = c->qnext) {
            gms_mode_t m = grantable(st, c->want, true);

            if (m == GMS_MODE_NONE)
                continue;
            unqueue(c);
            if (!uid_may(st, c) && !(m == GMS_MODE_RW && store_empty(st))) {
                gms_send_error(c, "%s is held by another user", st->name);
                c->closing = true;
            } else {
                grant(c, m);
            }
            settle(c);
            again = true; /* the queue changed under the walk */
            break;
        }
    }
    if (store_empty(st) && st->nallocs == 0)
        st->has_owner = false;
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    gms_conn_t *c = w->data;
    gms_store_t *st = c->st;

    (void)loop, (void)revents;
    srv_debug("gms %s: session %u: lock wait timed out", st->name, c->session);
    unqueue(c);
    answer_handshake(c, false);
    settle(c);     /* ends it (once the answer is sent) */
    gms_try_grant(st); /* a writer that stops waiting may let readers in */
}

static void handshake(gms_conn_t *c, const gms_req_t *r)
{
    gms_store_t *st = c->st;
    gms_mode_t m;

    if (!uid_may(st, c) && !store_empty(st)) {
        gms_send_error(c, "%s is held by another user (uid %u may not lock it)", st->name,
                       (unsigned)c->cred.uid);
        c->closing = true;
        return;
    }
    c->want = r->lock;
    m = grantable(st, r->lock, false);
    /* GMS: a writer queues behind nobody; readers and rw_or_ro behind waiting writers */
    if (m != GMS_MODE_NONE && (r->lock == GMS_LOCK_RW || st->qhead == NULL)) {
        grant(c, m);
        return;
    }
    if (r->has_timeout && r->timeout_ms == 0) {
        answer_handshake(c, false);
        return;
    }
    c->mode = GMS_MODE_WAITING;
    c->qprev = st->qtail;
    if (st->qtail != NULL)
        st->qtail->qnext = c;
    else
        st->qhead = c;
    st->qtail = c;
    if (r->lock == GMS_LOCK_RW)
        st->waiting_writers++;
    /* nothing more is read before the lock; its watcher stays, to see it hang up (on_read) */
    if (r->has_timeout) {
        ev_timer_init(&c->timer, on_timeout, (double)r->timeout_ms / 1000.0, 0.0);
        c->timer.data = c;
        ev_timer_start(c->g->loop, &c->timer);
    }
    srv_debug("gms %s: session %u waits for the %s lock (state %s)", st->name, c->session,
              r->lock == GMS_LOCK_RW ? "rw" : r->lock == GMS_LOCK_RO ? "ro" : "rw_or_ro",
              gms_state_name(st));
}

/* ---- connections ----------------------------------------------------------------------- */

static void conn_close(gms_conn_t *c)
{
    srv_gms_t *g = c->g;
    gms_store_t *st = c->st;

    unqueue(c);
    if (c->mode == GMS_MODE_RW && st->rw == c) {
        st->rw = NULL;
        if (!st->committed) {
            srv_warn("gms %s: writer session %u ended without committing; its %zu allocations "
                     "are freed", st->name, c->session, st->nallocs);
            gms_store_clear(st);
        }
    } else if (c->mode == GMS_MODE_RO) {
        st->ro--;
    }
    c->mode = GMS_MODE_NONE;
    ev_io_stop(g->loop, &c->io);
    ev_io_stop(g->loop, &c->wio);
    close(c->io.fd);
    if (c->out_fd >= 0)
        close(c->out_fd);
    free(c->out);
    free(c->in);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        g->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    free(c);
    if (!g->closing)
        gms_try_grant(st);
}

/* One whole frame in c->in: decode and answer.  false: end the connection. */
static bool on_frame(gms_conn_t *c)
{
    char why[256];
    gms_req_t r;

    if (gms_decode(c->in + GMS_HEADER, c->in_len - GMS_HEADER, &r, why, sizeof(why)) != 0) {
        srv_warn("gms %s: session %u (pid %d) sent a malformed frame: %s; ending it",
                 c->st->name, c->session, (int)c->cred.pid, why);
        gms_send_error(c, "%s", why);
        c->closing = true;
        return true;
    }
    if (c->refused[0] != '\0') {
        gms_send_error(c, "%s", c->refused);
        c->closing = true;
        return true;
    }
    if (c->mode == GMS_MODE_NONE) {
        if (r.type == GMS_GET_RUNTIME_STATE) {
            gms_runtime_state(c);
            c->closing = true;
        } else if (r.type != GMS_HANDSHAKE) {
            gms_send_error(c, "Expected HandshakeRequest");
            c->closing = true;
        } else {
            handshake(c, &r);
        }
        return true;
    }
    if (r.type == GMS_HANDSHAKE || r.type == GMS_GET_RUNTIME_STATE) {
        gms_send_error(c, "%s not allowed for %s session in state %s", gms_req_name(r.type),
                       c->mode == GMS_MODE_RW ? "RW" : "RO", gms_state_name(c->st));
        return true;
    }
    gms_handle(c, &r);
    return true;
}

/* Read what is there, answering whole frames; false: end the connection. */
static bool conn_read(gms_conn_t *c)
{
    for (;;) {
        size_t want = c->in_len < GMS_HEADER ? GMS_HEADER : GMS_HEADER + c->frame_len;
        ssize_t n;

        n = recv(c->io.fd, c->in + c->in_len, want - c->in_len, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (n <= 0)
            return false; /* hung up (mid-frame or not), or a socket error */
        c->in_len += (size_t)n;
        if (c->in_len == GMS_HEADER) {
            uint32_t len = gms_frame_len(c->in);
            uint8_t *p;

            if (len == 0 || len > GMS_MAX_FRAME) {
                srv_warn("gms %s: session %u (pid %d) announced a frame of %" PRIu32
                         " bytes (at most %u); ending it", c->st->name, c->session,
                         (int)c->cred.pid, len, GMS_MAX_FRAME);
                gms_send_error(c, "frame of %" PRIu32 " bytes (at most %u)", len, GMS_MAX_FRAME);
                c->closing = true;
                return true;
            }
            p = realloc(c->in, GMS_HEADER + (size_t)len);
            if (p == NULL)
                return false;
            c->in = p;
            c->in_cap = GMS_HEADER + len;
            c->frame_len = len;
            continue;
        }
        if (c->in_len < GMS_HEADER || c->in_len < GMS_HEADER + c->frame_len)
            continue;
        if (!on_frame(c) || c->broken)
            return false;
        c->in_len = 0;
        c->frame_len = 0;
        if (c->in_cap > GMS_KEEP_IN) { /* an idle connection keeps little */
            uint8_t *p = realloc(c->in, GMS_HEADER);
            if (p != NULL)
                c->in = p, c->in_cap = GMS_HEADER;
        }
        if (c->closing || c->out != NULL || c->mode == GMS_MODE_WAITING)
            return true; /* reading resumes once the output is gone (or never) */
    }
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    gms_conn_t *c = w->data;

    (void)loop, (void)revents;
    if (c->mode == GMS_MODE_WAITING) {
        /* a waiter that hangs up leaves the queue (a dead writer would keep readers out);
         * one that sends more is read once it has its lock */
        char b;
        ssize_t n = recv(c->io.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            srv_debug("gms %s: session %u hung up while it waited", c->st->name, c->session);
            conn_close(c);
        } else if (n > 0) {
            ev_io_stop(loop, &c->io);
        }
        return;
    }
    if (!conn_read(c))
        conn_close(c);
    else
        settle(c);
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    gms_conn_t *c = w->data;

    (void)loop, (void)revents;
    if (flush(c) != 0)
        c->broken = true;
    settle(c); /* frames that already wait in the socket: libev reports them */
}

static void on_conn(void *arg, int fd)
{
    uint32_t groups[IPC_MAX_PEER_GROUPS];
    gms_store_t *st = arg;
    srv_gms_t *g = st->g;
    ipc_cred_t cred;
    char reason[256];
    gms_conn_t *c;

    if (ipc_peer_cred(fd, &cred) != 0) {
        close(fd);
        return;
    }
    reason[0] = '\0';
    if (srv_session_admit(g->srv, &cred, groups, ipc_peer_groups(fd, groups, IPC_MAX_PEER_GROUPS),
                          reason, sizeof(reason)) != 0) {
        /* told in answer to its first frame: a GMS client sends before it reads, and a
         * close with its frame unread would reset the connection over our answer */
        srv_warn("gms %s: refused pid %d uid %u: %s", st->name, (int)cred.pid,
                 (unsigned)cred.uid, reason);
        if (reason[0] == '\0')
            snprintf(reason, sizeof(reason), "refused");
    } else {
        reason[0] = '\0';
    }
    c = calloc(1, sizeof(*c));
    if (c != NULL)
        c->in = malloc(GMS_HEADER);
    if (c == NULL || c->in == NULL) {
        if (c != NULL)
            free(c);
        close(fd);
        return;
    }
    c->in_cap = GMS_HEADER;
    snprintf(c->refused, sizeof(c->refused), "%s", reason);
    c->g = g;
    c->st = st;
    c->cred = cred;
    c->out_fd = -1;
    c->session = ++g->next_session;
    ev_io_init(&c->io, on_read, fd, EV_READ);
    ev_io_init(&c->wio, on_write, fd, EV_WRITE);
    c->io.data = c->wio.data = c;
    c->next = g->conns;
    if (g->conns != NULL)
        g->conns->prev = c;
    g->conns = c;
    ev_io_start(g->loop, &c->io);
}

/* ---- start and stop --------------------------------------------------------------------- */

/* The GPU ordinals of devices ("all" or "0,1") into devs; how many, or -1. */
static int parse_devices(const char *devices, int *devs, int max, char *err, size_t errlen)
{
    int n = 0;

    if (strcmp(devices, "all") == 0) {
        int count = ipc_cuda_device_count();
        for (int i = 0; i < count && n < max; i++)
            devs[n++] = i;
        return n;
    }
    for (const char *p = devices; *p != '\0';) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 1023 || n == max || (*end != ',' && *end != '\0')) {
            snprintf(err, errlen, "--devices %s: not a list of GPU ordinals", devices);
            return -1;
        }
        devs[n++] = (int)v;
        p = *end == ',' ? end + 1 : end;
    }
    return n;
}

int srv_gms_start(srv_gms_t **out, struct ev_loop *loop, srv_t *srv, const char *tags,
                  const char *devices, const char *dir, gid_t group, char *err, size_t errlen)
{
    int devs[SRV_MAX_DEVICES], ndev;
    srv_gms_t *g = calloc(1, sizeof(*g));
    int rc = 0;

    if (g == NULL)
        return -ENOMEM;
    g->loop = loop;
    g->srv = srv;
    g->dirfd = srv_dir_open(dir, "--gms-dir", group, err, errlen);
    if (g->dirfd < 0) {
        rc = g->dirfd;
        free(g);
        return rc;
    }
    rc = ipc_cuda_load(err, errlen);
    ndev = rc == 0 ? parse_devices(devices, devs, SRV_MAX_DEVICES, err, errlen) : -1;
    if (ndev == 0) {
        snprintf(err, errlen, "--gms: no GPU to serve (--devices %s)", devices);
        ndev = -1;
    }
    for (int i = 0; i < ndev && rc == 0; i++) {
        char uuid[48];
        const char *p = tags;

        rc = ipc_devmem_vmm_probe(devs[i], err, errlen);
        if (rc == 0)
            rc = ipc_devmem_uuid(devs[i], uuid, sizeof(uuid), err, errlen);
        while (rc == 0 && *p != '\0') {
            size_t l = strcspn(p, ",");
            gms_store_t *st;
            char name[128];

            if (l == 0 || l > GMS_MAX_TAG || strspn(p, "abcdefghijklmnopqrstuvwxyz"
                                                       "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") < l) {
                snprintf(err, errlen, "--gms %s: tags are names of letters, digits, _ and -, "
                         "separated by commas", tags);
                rc = PINPOOL_EINVAL;
                break;
            }
            st = calloc(1, sizeof(*st));
            if (st == NULL) {
                rc = -ENOMEM;
                break;
            }
            st->g = g;
            st->device = devs[i];
            snprintf(name, sizeof(name), "gms_%s_%.*s.sock", uuid, (int)l, p);
            snprintf(st->name, sizeof(st->name), "GPU %d tag %.*s", devs[i], (int)l, p);
            st->next = g->stores;
            g->stores = st;
            rc = srv_listener_open(&st->listener, loop, g->dirfd, dir, name, SOCK_STREAM, group,
                                   "GMS socket", on_conn, NULL, st, err, errlen);
            if (rc == 0)
                srv_info("GMS protocol on %s/%s (%s)", dir, name, st->name);
            p += l;
            if (*p == ',')
                p++;
        }
    }
    if (rc == 0 && ndev < 0)
        rc = PINPOOL_EINVAL;
    if (rc != 0) {
        srv_gms_close(g);
        return rc;
    }
    *out = g;
    return 0;
}

void srv_gms_stop_accepting(srv_gms_t *g)
{
    if (g == NULL)
        return;
    for (gms_store_t *st = g->stores; st != NULL; st = st->next) {
        srv_listener_close(st->listener);
        st->listener = NULL;
    }
}

void srv_gms_close(srv_gms_t *g)
{
    if (g == NULL)
        return;
    srv_gms_stop_accepting(g);
    g->closing = true;
    while (g->conns != NULL)
        conn_close(g->conns);
    while (g->stores != NULL) {
        gms_store_t *st = g->stores;
        g->stores = st->next;
        gms_store_clear(st);
        free(st->allocs);
        free(st->meta);
        free(st);
    }
    if (g->dirfd >= 0)
        close(g->dirfd);
    free(g);
}
