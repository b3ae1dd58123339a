/*
 * listener.c - unix-socket listeners that survive running out of descriptors
 * (see listener.h).
 *
 * Owns: the listening socket and its file, the reserve descriptor (an open
 * /dev/null), the rest timer and the refusal count of each listener.
 * Never: loops on a failed accept; passes on a connection that would leave
 * fewer than SRV_FD_SPARE descriptors.
 * Threads: the libev loop's only; no lock.
 */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "dirs.h"
#include "log.h"

#define ACCEPT_BATCH 64 /* connections taken per wake-up before the loop runs others */

struct srv_listener {
    ev_io io;
    ev_timer rest;
    struct ev_loop *loop;
    int dirfd; /* a dup of the socket's directory, for the unlink */
    char name[108];
    char what[32];
    srv_conn_fn conn;
    srv_refuse_fn refuse;
    void *arg;
    int reserve;         /* -1 while spent (reopened at the next refusal) */
    bool keep_file;      /* close leaves the socket file (a takeover: it serves on) */
    uint64_t refused;    /* since the last log line */
    ev_tstamp next_log;
};

/* Would fd leave fewer than SRV_FD_SPARE descriptors?  (Descriptors are
 * handed out lowest first, so every one below fd is in use.)  Says why. */
static bool short_of_fds(int fd, char *why, size_t len)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        (rlim_t)fd + SRV_FD_SPARE < rl.rlim_cur)
        return false;
    snprintf(why, len, "the daemon is short of file descriptors (%d in use, RLIMIT_NOFILE %llu); "
             "try again later", fd + 1, (unsigned long long)rl.rlim_cur);
    return true;
}

static void on_rest_over(struct ev_loop *loop, ev_timer *w, int revents)
{
    srv_listener_t *l = w->data;

    (void)revents;
    ev_io_start(loop, &l->io);
}

/* Refuse fd (if >= 0) and every connection waiting now, through the reserve
 * descriptor when fd < 0 (out of descriptors), then rest. */
static void refuse_all(srv_listener_t *l, int fd, const char *why)
{
    ev_tstamp now = ev_now(l->loop);

    if (fd < 0 && l->reserve >= 0) {
        close(l->reserve);
        l->reserve = -1;
    }
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if (fd < 0)
            fd = accept4(l->io.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            break;
        if (l->refuse != NULL)
            l->refuse(l->arg, fd, why);
        close(fd);
        fd = -1;
        l->refused++;
    }
    if (l->reserve < 0)
        l->reserve = open("/dev/null", O_RDONLY | O_CLOEXEC); /* -1: again next time */
    if (now >= l->next_log) {
        srv_warn("%s: %s: %" PRIu64 " connection%s refused since the last such line; not "
                 "accepting for %.0f s at a time", l->what, why, l->refused,
                 l->refused == 1 ? "" : "s", SRV_LISTEN_REST_S);
        l->refused = 0;
        l->next_log = now + SRV_LISTEN_LOG_S;
    }
    ev_io_stop(l->loop, &l->io);
    ev_timer_set(&l->rest, SRV_LISTEN_REST_S, 0.0);
    ev_timer_start(l->loop, &l->rest);
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    srv_listener_t *l = (srv_listener_t *)w;
    char why[192];

    (void)loop;
    (void)revents;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EMFILE || errno == ENFILE) {
                struct rlimit rl = {0, 0};
                getrlimit(RLIMIT_NOFILE, &rl);
                snprintf(why, sizeof(why), "the daemon is out of file descriptors "
                         "(RLIMIT_NOFILE %llu%s); try again later",
                         (unsigned long long)rl.rlim_cur, errno == ENFILE ? ", and the system's" : "");
            } else {
                snprintf(why, sizeof(why), "accept failed: %s", strerror(errno));
            }
            refuse_all(l, -1, why);
            return;
        }
        if (short_of_fds(fd, why, sizeof(why))) {
            refuse_all(l, fd, why);
            return;
        }
        l->conn(l->arg, fd);
    }
}

/* Bind and listen (see srv_listener_open).  The descriptor, or an error with err. */
static int bind_unix(int dirfd, const char *dir, const char *name, int type, gid_t group,
                     char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    int fd, n;

    n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "%s/%s: too long for a unix socket (at most %zu characters)", dir,
                 name, sizeof(sa.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s exists and is not a socket: remove it", sa.sun_path);
            return -EEXIST;
        }
        if (unlinkat(dirfd, name, 0) != 0 && errno != ENOENT) {
            snprintf(err, errlen, "cannot remove the old socket %s: %s", sa.sun_path,
                     strerror(errno));
            return -errno;
        }
    }
    fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        n = -errno;
        snprintf(err, errlen, "cannot listen on %s: %s", sa.sun_path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return n;
    }
    /* The directory is the daemon's alone (dirs.h): nobody swaps the name meanwhile. */
    if (fchmodat(dirfd, name, 0660, 0) != 0 ||
        (group != SRV_NO_GROUP && fchownat(dirfd, name, (uid_t)-1, group, AT_SYMLINK_NOFOLLOW) != 0) ||
        listen(fd, 128) != 0) {
        n = -errno;
        snprintf(err, errlen, "cannot set up %s: %s", sa.sun_path, strerror(errno));
        close(fd);
        unlinkat(dirfd, name, 0);
        return n;
    }
    return fd;
}

/* srv_listener_open's work; adopt >= 0: that listening socket instead of a new one. */
static int listener_make(srv_listener_t **out, struct ev_loop *loop, int dirfd, const char *dir,
                         const char *name, int type, gid_t group, const char *what,
                         srv_conn_fn conn, srv_refuse_fn refuse, void *arg, int adopt,
                         char *err, size_t errlen)
{
    srv_listener_t *l = calloc(1, sizeof(*l));
    int fd;

    if (l == NULL)
        return -ENOMEM;
    l->reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
    l->dirfd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    if (l->reserve < 0 || l->dirfd < 0) {
        fd = -errno;
        snprintf(err, errlen, "%s: no descriptor to spare: %s", what, strerror(errno));
        goto fail;
    }
    fd = adopt >= 0 ? adopt : bind_unix(dirfd, dir, name, type, group, err, errlen);
    if (fd < 0)
        goto fail;
    l->loop = loop;
    snprintf(l->name, sizeof(l->name), "%s", name);
    snprintf(l->what, sizeof(l->what), "%s", what);
    l->conn = conn;
    l->refuse = refuse;
    l->arg = arg;
    ev_io_init(&l->io, on_readable, fd, EV_READ);
    ev_timer_init(&l->rest, on_rest_over, SRV_LISTEN_REST_S, 0.0);
    l->rest.data = l;
    ev_io_start(loop, &l->io);
    *out = l;
    return 0;

fail:
    if (adopt >= 0)
        close(adopt);
    if (l->reserve >= 0)
        close(l->reserve);
    if (l->dirfd >= 0)
        close(l->dirfd);
    free(l);
    return fd;
}

int srv_listener_open(srv_listener_t **out, struct ev_loop *loop, int dirfd, const char *dir,
                      const char *name, int type, gid_t group, const char *what,
                      srv_conn_fn conn, srv_refuse_fn refuse, void *arg, char *err,
                      size_t errlen)
{
    return listener_make(out, loop, dirfd, dir, name, type, group, what, conn, refuse, arg, -1,
                         err, errlen);
}

int srv_listener_adopt(srv_listener_t **out, struct ev_loop *loop, int dirfd, const char *name,
                       int fd, const char *what, srv_conn_fn conn, srv_refuse_fn refuse,
                       void *arg, char *err, size_t errlen)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        snprintf(err, errlen, "%s: the listening socket received: %s", what, strerror(errno));
        return -errno;
    }
    return listener_make(out, loop, dirfd, "", name, 0, SRV_NO_GROUP, what, conn, refuse, arg,
                         fd, err, errlen);
}

int srv_listener_fd(const srv_listener_t *l)
{
    return l->io.fd;
}

void srv_listener_keep_file(srv_listener_t *l, bool keep)
{
    if (l != NULL)
        l->keep_file = keep;
}

void srv_listener_close(srv_listener_t *l)
{
    if (l == NULL)
        return;
    ev_io_stop(l->loop, &l->io);
    ev_timer_stop(l->loop, &l->rest);
    close(l->io.fd);
    if (!l->keep_file)
        unlinkat(l->dirfd, l->name, 0);
    close(l->dirfd);
    if (l->reserve >= 0)
        close(l->reserve);
    free(l);
}
