/*
 * main.c - the `pinpool` command: serve, info, status, version, help.
 *
 * `pinpool serve` wires the pieces together: srv (pool and chunks), the gRPC
 * server (rpc.c + service.c, on its own threads), and the libev loop on the
 * main thread (the unix listeners, fd socket, signals, the start-up progress
 * timer).  The only process-wide state of the daemon lives here.
 *
 * Before it makes anything it checks its host: the memory (a pool larger
 * than the cgroup limit or MemAvailable allow is refused unless --force;
 * memroom.c), the socket directory and the lock (dirs.h: no other user can
 * swap them or what is in them), the descriptors (the soft RLIMIT_NOFILE
 * raised to the hard one, --max-clients auto from it), and --allow-gid's
 * group for the sockets.
 *
 * Threads: the main thread parses the options, makes srv, waits for its first
 * chunk, starts the gRPC server and runs the libev loop: the two unix
 * listeners (listener.h: the gRPC socket's connections go to gRPC as
 * descriptors, rpc_server_add_connection; the fd socket's to fdsock.c),
 * SIGINT/SIGTERM/SIGHUP, the progress timer (srv_chunk_progress,
 * srv_wait_chunks without waiting) and the shutdown grace timer; after the
 * loop it stops the rest and frees everything.  SIGPIPE is ignored by every
 * thread (a disposition is the process's; it is set before any thread
 * starts), and SIGHUP until the loop's handler takes it.  Other
 * threads: the gRPC queue threads (rpc.c, two) and its workers (workers.c),
 * the tier statistics thread (service_info.c), the chunk threads and the
 * maintenance thread (srv), and the metrics HTTP thread (metrics.c).  The
 * daemon_t belongs to the main thread; the one call into it from another
 * thread is rpc_drained, which a gRPC queue thread runs when the last call
 * has finished and which only does ev_async_send to wake the loop.  The crash
 * handler (on_fatal) runs on whichever thread crashed and uses only
 * async-signal-safe calls.
 */
#include <errno.h>
#include <ev.h>
#include <execinfo.h>
#include <fcntl.h>
#include <inttypes.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "dirs.h"
#include "fdsock.h"
#include "gms.h"
#include "hugepages.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "paths.h"
#include "pinpool.h"
#include "rpc.h"
#include "reserve.h"
#include "service.h"
#include "srv.h"
#include "takeover.h"
#include "tcpauth.h"

/* After SIGTERM, calls in flight finish; connections still open after this
 * long (idle clients) are cut. */
#define SHUTDOWN_GRACE_S 1.0

typedef struct daemon {
    srv_config_t cfg;
    srv_t *srv;
    rpc_server_t *rpc;
    srv_service_t *service;
    srv_fdsock_t *fdsock;
    srv_gms_t *gms; /* --gms */
    srv_listener_t *grpc_unix; /* the gRPC socket's connections, handed to gRPC */
    srv_metrics_t *metrics;
    struct ev_loop *loop;
    ev_signal sigint, sigterm, sighup;
    ev_timer progress;
    ev_timer grace;   /* cuts connections that hold the shutdown */
    ev_async drained; /* the gRPC server has finished every call */
    bool stopping;
    int dir_fd;       /* the socket directory (dirs.h) */
    char dir[SRV_PATH_MAX];
    const char *name; /* the gRPC socket's name in it */
    gid_t group;      /* of the directory and sockets: --allow-gid's first, or SRV_NO_GROUP */
    int lock_fd;
    char lock_name[SRV_PATH_MAX + 8];
    char lock_path[SRV_PATH_MAX + 8];
    char fd_path[SRV_PATH_MAX + 8];
    int exit_code;
    bool tty;
    double next_report; /* seconds into start-up of the next progress line */
    srv_huge_t huge;    /* --huge-pages: what srv_huge_setup found or reserved */
    srv_takeover_t *takeover; /* PATH.takeover: a successor takes over (takeover.h) */
    bool handed_over;   /* it did: stop without touching the sockets, lock or sessions */
    bool keep_files;    /* --takeover before GO: the sockets and lock are the old daemon's */
} daemon_t;

static void usage(FILE *out)
{
    fprintf(out,
            "pinpool %s - node-local pinned memory pool\n"
            "\n"
            "usage: pinpool serve [OPTIONS]     run the daemon\n"
            "       pinpool info [--socket PATH] show the pool's capacity and usage\n"
            "       pinpool status [--socket PATH] the daemon's version and options, and info\n"
            "       pinpool version\n"
            "       pinpool help\n"
            "\n"
            "serve options:\n",
            PINPOOL_VERSION_STRING);
    srv_config_print_help(out);
    fprintf(out, "\nClients find the daemon through $PINPOOL_SOCKET or the default socket.\n");
}

/* A crash leaves a backtrace in the log (signal-safe: write and
 * backtrace_symbols_fd only), then dies of the same signal. */
static void on_fatal(int sig)
{
    void *frames[64];
    int n = backtrace(frames, 64);

    srv_log_signal_safe(sig == SIGSEGV ? "pinpool: fatal SIGSEGV; backtrace:\n"
                        : sig == SIGBUS ? "pinpool: fatal SIGBUS; backtrace:\n"
                                        : "pinpool: fatal signal; backtrace:\n");
    backtrace_symbols_fd(frames, n, STDERR_FILENO);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_crash_handlers(void)
{
    void *frames[1];

    backtrace(frames, 1); /* loads libgcc now, not inside the handler */
    signal(SIGSEGV, on_fatal);
    signal(SIGBUS, on_fatal);
    signal(SIGFPE, on_fatal);
    signal(SIGILL, on_fatal);
}

/* --allow-gid's first group gets the sockets: the daemon must be able to
 * give them to it (root, or a member), and they must be in a directory of
 * their own.  0, or -1 with the reason logged. */
static int pick_group(daemon_t *d)
{
    gid_t groups[256];
    struct group gr, *res = NULL;
    char buf[4096];
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    bool member;
    int n;

    d->group = SRV_NO_GROUP;
    if (d->cfg.nallow_gids == 0)
        return 0;
    d->group = (gid_t)d->cfg.allow_gids[0];
    n = getgroups(256, groups);
    member = getegid() == d->group;
    for (int i = 0; i < n; i++)
        member = member || groups[i] == d->group;
    if (geteuid() != 0 && !member) {
        srv_error("--allow-gid: the sockets must belong to group %u (the first of --allow-gid) "
                  "so that its members can reach them, and this daemon (uid %u) is neither root "
                  "nor a member of it: add uid %u to the group, or run the daemon as root",
                  (unsigned)d->group, (unsigned)geteuid(), (unsigned)geteuid());
        return -1;
    }
    if (xdg != NULL && xdg[0] != '\0' && strcmp(xdg, d->dir) == 0) {
        srv_error("--allow-gid: the sockets would be in $XDG_RUNTIME_DIR (%s), which the daemon "
                  "does not open to a group: pass --socket DIR/pinpool.sock with a directory of "
                  "their own (like the systemd unit's /run/pinpool)", xdg);
        return -1;
    }
    getgrgid_r(d->group, &gr, buf, sizeof(buf), &res);
    srv_info("sockets: group %u%s%s%s, mode 0660 in a 0750 directory%s", (unsigned)d->group,
             res != NULL ? " (" : "", res != NULL ? res->gr_name : "", res != NULL ? ")" : "",
             d->cfg.nallow_gids > 1 ? " (the first of --allow-gid: members of the other "
                                      "groups reach the sockets only if they are in it too)"
                                    : "");
    return 0;
}

/* The sockets' directory: made if missing, 0700 (0750 and --allow-gid's
 * group when a group may come in), refused when another user could swap it
 * or what is in it (dirs.h).  0, or -1 with the reason logged. */
static int open_socket_dir(daemon_t *d)
{
    char err[1024];
    char *slash;

    snprintf(d->dir, sizeof(d->dir), "%s", d->cfg.socket);
    slash = strrchr(d->dir, '/'); /* the path is absolute: srv_config_validate */
    d->name = d->cfg.socket + (slash - d->dir) + 1;
    slash[slash == d->dir ? 1 : 0] = '\0';
    if (pick_group(d) != 0)
        return -1;
    d->dir_fd = srv_dir_open(d->dir, "the socket directory", d->group, err, sizeof(err));
    if (d->dir_fd < 0) {
        srv_error("%s", err);
        return -1;
    }
    return 0;
}

/* Refuse a second daemon on the same socket: gRPC would silently share it.
 * The lock is a file of the daemon's own in its own directory, never opened
 * through a link nor truncated unless it is the daemon's (dirs.h), and flock
 * is the truth: a file left by a daemon that died is taken over; the pid in
 * it is only for the message. */
static int take_lock(daemon_t *d)
{
    char pid[32], err[512];
    struct stat st, now;
    int n;

    snprintf(d->lock_name, sizeof(d->lock_name), "%s.lock", d->name);
    snprintf(d->lock_path, sizeof(d->lock_path), "%s.lock", d->cfg.socket);
    for (int tries = 0; tries < 10 && d->lock_fd < 0; tries++) {
        d->lock_fd = srv_file_open_at(d->dir_fd, d->lock_name, O_RDWR | O_CREAT, 0600,
                                      d->lock_path, err, sizeof(err));
        if (d->lock_fd < 0) {
            srv_error("the lock file: %s", err);
            return -1;
        }
        n = (int)pread(d->lock_fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\r\n")] = '\0';
        if (flock(d->lock_fd, LOCK_EX | LOCK_NB) != 0) {
            srv_error("another pinpool daemon (pid %s) is serving %s; stop it or pass another "
                      "--socket", pid[0] != '\0' ? pid : "?", d->cfg.socket);
            close(d->lock_fd);
            d->lock_fd = -1;
            return -1;
        }
        /* A daemon that stopped just now removed the file after we opened it:
         * a lock on that file keeps no one out.  Then open the name again. */
        if (fstat(d->lock_fd, &st) != 0 ||
            fstatat(d->dir_fd, d->lock_name, &now, AT_SYMLINK_NOFOLLOW) != 0 ||
            st.st_ino != now.st_ino || st.st_dev != now.st_dev) {
            close(d->lock_fd);
            d->lock_fd = -1;
        }
    }
    if (d->lock_fd < 0) {
        srv_error("the lock file %s keeps changing under this daemon; is another one starting?",
                  d->lock_path);
        return -1;
    }
    if (pid[0] != '\0')
        srv_info("took over %s, left by pid %s, which no longer holds it", d->lock_path, pid);
    n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(d->lock_fd, 0) != 0 || pwrite(d->lock_fd, pid, (size_t)n, 0) != n)
        srv_warn("cannot write the pid into %s", d->lock_path);
    return 0;
}

/* The soft RLIMIT_NOFILE up to the hard one (sessions cost descriptors);
 * --max-clients auto follows it. */
static void raise_nofile(daemon_t *d)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        rl.rlim_cur = 1024;
    else if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            rl.rlim_cur = was;
    }
    srv_config_resolve_max_clients(&d->cfg, rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX
                                                                         : (uint64_t)rl.rlim_cur);
}

/* A pool larger than the memory the daemon may use would be OOM-killed while
 * it is pinned: refuse it, unless --force (then it stops growing where the
 * memory runs out, memroom.c).  0, or -1 with the reason logged. */
static int check_memory(const daemon_t *d)
{
    uint64_t nchunks = (d->cfg.mem_pool_size + d->cfg.chunk_size - 1) / d->cfg.chunk_size;
    uint64_t pool = nchunks * d->cfg.chunk_size;
    char why[512], a[32], b[32], k[32];
    uint64_t room = srv_mem_room(why, sizeof(why));

    if (pool <= room)
        return 0;
    pool_format_size(pool, a, sizeof(a));
    pool_format_size(room, b, sizeof(b));
    pool_format_size(SRV_MEM_KEEP, k, sizeof(k));
    if (strcmp(d->cfg.force, "yes") == 0) {
        srv_warn("--mem-pool-size %s is more than the %s this daemon may use (%s; %s kept for "
                 "the daemon itself); --force: starting anyway, the pool stops growing where "
                 "memory runs out", a, b, why, k);
        return 0;
    }
    srv_error("--mem-pool-size %s does not fit: %s, which leaves %s for the pool after %s for "
              "the daemon itself; pass a smaller --mem-pool-size, raise the limit, or --force "
              "(the pool then stops growing where memory runs out)", a, why, b, k);
    return -1;
}

static void on_drained(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void rpc_drained(void *arg)
{
    daemon_t *d = arg;
    ev_async_send(d->loop, &d->drained); /* from a gRPC thread */
}

static void on_grace(struct ev_loop *loop, ev_timer *w, int revents)
{
    daemon_t *d = w->data;
    (void)loop;
    (void)revents;
    rpc_server_cancel_all(d->rpc);
}

/* Stop taking work; the fd socket keeps answering the sessions (a client in
 * the middle of an allocation needs its descriptors) until every gRPC call
 * has finished, then the loop ends. */
static void begin_shutdown(daemon_t *d)
{
    if (d->stopping) {
        ev_break(d->loop, EVBREAK_ALL); /* asked twice: stop now */
        return;
    }
    d->stopping = true;
    srv_begin_shutdown(d->srv);
    srv_listener_close(d->grpc_unix);
    d->grpc_unix = NULL;
    srv_fdsock_stop_accepting(d->fdsock);
    srv_gms_stop_accepting(d->gms);
    rpc_server_begin_shutdown(d->rpc, rpc_drained, d);
    ev_timer_init(&d->grace, on_grace, SHUTDOWN_GRACE_S, 0.0);
    d->grace.data = d;
    ev_timer_start(d->loop, &d->grace);
}

/* GO from the new daemon (takeover.c, on the loop): it serves the sockets
 * and sessions from now on; stop reading them, leave their files, and go. */
static void on_handed_over(void *arg)
{
    daemon_t *d = arg;

    d->handed_over = true;
    srv_listener_keep_file(d->grpc_unix, true);
    srv_listener_close(d->grpc_unix);
    d->grpc_unix = NULL;
    srv_fdsock_handed_over(d->fdsock);
    begin_shutdown(d);
}

static void on_grpc_conn(void *arg, int fd)
{
    daemon_t *d = arg;

    rpc_server_add_connection(d->rpc, fd);
}

/* SIGHUP: reopen --log-file (logrotate moved it), else say so and go on. */
static void on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
    char err[512];
    bool reopened;

    (void)loop;
    (void)w;
    (void)revents;
    if (srv_log_reopen(&reopened, err, sizeof(err)) != 0)
        srv_error("SIGHUP: cannot reopen the log: %s; still writing to the old file", err);
    else if (reopened)
        srv_info("SIGHUP: log reopened");
    else
        srv_info("SIGHUP: ignored (no --log-file to reopen)");
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    srv_info("%s: shutting down", w->signum == SIGINT ? "SIGINT" : "SIGTERM");
    begin_shutdown(w->data);
}

/* While chunks are still being made: a bar on a terminal, a line every few
 * seconds otherwise; the error and a clean exit if making one fails. */
static void on_progress(struct ev_loop *loop, ev_timer *w, int revents)
{
    daemon_t *d = w->data;
    uint32_t ready, total;
    double secs;
    char err[256];
    char a[32], b[32];

    (void)revents;
    srv_chunk_progress(d->srv, &ready, &total, &secs);
    if (srv_wait_chunks(d->srv, 0, err, sizeof(err)) != 0) {
        srv_error("cannot create the pool: %s", err);
        d->exit_code = 1;
        ev_timer_stop(loop, w);
        begin_shutdown(d);
        return;
    }
    uint64_t bytes = (uint64_t)ready * d->cfg.chunk_size;
    char why[320];
    if (ready < total && srv_pool_short_of(d->srv, why, sizeof(why))) {
        if (d->tty)
            fputc('\n', stderr);
        srv_warn("pool ready short of its size: %s of %s in %.2f s; it stopped growing: %s",
                 pool_format_size(bytes, a, sizeof(a)),
                 pool_format_size((uint64_t)total * d->cfg.chunk_size, b, sizeof(b)), secs, why);
        ev_timer_stop(loop, w);
        return;
    }
    double rate = secs > 0 ? (double)bytes / secs / (1 << 30) : 0;
    pool_format_size(bytes, a, sizeof(a));
    pool_format_size((uint64_t)total * d->cfg.chunk_size, b, sizeof(b));
    if (d->tty) {
        int width = 30, fill = total ? (int)((uint64_t)width * ready / total) : width;
        fprintf(stderr, "\rpinning [%.*s%*s] %s / %s  %.2f GiB/s ", fill,
                "##############################", width - fill, "", a, b, rate);
        if (ready == total)
            fputc('\n', stderr);
    } else if (ready < total && secs >= d->next_report) {
        srv_info("pinning: %s of %s ready (%.2f GiB/s)", a, b, rate);
        d->next_report = secs + 5;
    }
    if (ready == total) {
        srv_info("pool ready: %s in %.2f s (%.2f GiB/s)", b, secs, rate);
        ev_timer_stop(loop, w);
    }
}

static int serve(int argc, char **argv)
{
    daemon_t d = {.lock_fd = -1, .dir_fd = -1, .huge.ledger_fd = -1};
    char err[512];
    char size[32], chunk[32];
    size_t nmethods;
    const rpc_method_t *methods;
    unsigned metrics_port = 0;
    char metrics_at[128] = "";
    int rc;

    srv_config_defaults(&d.cfg);
    rc = srv_config_parse_args(&d.cfg, argc, argv, err, sizeof(err));
    if (rc == 1) {
        usage(stdout);
        return 0;
    }
    if (rc == 0)
        rc = srv_config_validate(&d.cfg, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "pinpool serve: %s\n", err);
        return 2;
    }
    srv_log_level = srv_log_parse_level(d.cfg.log_level);
    srv_log_format = strcmp(d.cfg.log_format, "json") == 0 ? SRV_LOG_JSON : SRV_LOG_TEXT;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN); /* until the loop's handler takes it: pinning may take minutes */
    if (d.cfg.log_file[0] != '\0' && srv_log_open(d.cfg.log_file, err, sizeof(err)) != 0) {
        fprintf(stderr, "pinpool serve: --log-file: %s\n", err);
        return 2;
    }
    raise_nofile(&d);
    for (char *note = d.cfg.notes, *end; note[0] != '\0'; note = end + (*end != '\0')) {
        end = note + strcspn(note, "\n");
        srv_info("note: %.*s", (int)(end - note), note);
    }
    install_crash_handlers();
    d.tty = isatty(STDERR_FILENO);
    d.exit_code = 1;

    bool takeover = strcmp(d.cfg.takeover, "yes") == 0;
    srv_takeover_got_t got = {.conn = -1, .grpc_listen = -1, .fd_listen = -1,
                              .takeover_listen = -1, .lock_fd = -1, .tier_fd = -1};
    char tname[SRV_PATH_MAX + 16];
    if (open_socket_dir(&d) != 0 || (!takeover && take_lock(&d) != 0))
        goto out;
    snprintf(tname, sizeof(tname), "%s" SRV_TAKEOVER_SUFFIX, d.name);
    d.keep_files = takeover;
    if (srv_huge_setup(&d.cfg, &d.huge) != 0) /* before the pool: --huge-pages */
        goto out;
    /* A pool in huge pages is not in MemAvailable nor in the cgroup's count
     * (srv_huge_setup found or reserved them): nothing more to check. */
    /* --takeover: the pool is the running daemon's memory, already there. */
    if (d.cfg.huge_page == 0 && !takeover && check_memory(&d) != 0)
        goto out;
    rc = srv_create(&d.srv, &d.cfg, err, sizeof(err));
    if (rc != 0) {
        srv_error("%s", err);
        goto out;
    }
    if (takeover) {
        /* The running daemon's pool, state, sockets and lock (takeover.h);
         * nothing of ours writes the pool's memory before GO. */
        char tpath[SRV_PATH_MAX + 16], pid[32];
        snprintf(tpath, sizeof(tpath), "%s" SRV_TAKEOVER_SUFFIX, d.cfg.socket);
        rc = srv_takeover_receive(tpath, d.srv, &got, err, sizeof(err));
        if (rc != 0) {
            srv_error("%s", err);
            goto out;
        }
        d.lock_fd = got.lock_fd;
        got.lock_fd = -1;
        snprintf(d.lock_name, sizeof(d.lock_name), "%s.lock", d.name);
        snprintf(d.lock_path, sizeof(d.lock_path), "%s.lock", d.cfg.socket);
        int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
        if (ftruncate(d.lock_fd, 0) != 0 || pwrite(d.lock_fd, pid, (size_t)n, 0) != n)
            srv_warn("cannot write the pid into %s", d.lock_path);
    } else {
        rc = srv_start_chunks(d.srv);
        if (rc == 0)
            rc = srv_wait_chunks(d.srv, 1, err, sizeof(err)); /* serve from the first chunk on */
        if (rc != 0) {
            srv_error("cannot create the pool: %s", rc == 0 ? "" : err);
            goto out;
        }
    }
    srv_gpu_refresh(d.srv); /* GetPoolInfo's gpus until the pool is pinned */

    /* The control plane: the heap's reserve (libev's allocator too), the
     * service, the gRPC server with its limits; TCP only with its token. */
    methods = srv_service_methods(&nmethods);
    srv_reserve_start(d.cfg.memory_reserve);
    rc = srv_service_create(&d.service, d.srv, err, sizeof(err));
    if (rc == 0) {
        rpc_limits_t lim;
        srv_service_limits(&d.cfg, &lim);
        rc = rpc_server_create(&d.rpc, methods, nmethods, d.service, &lim, err, sizeof(err));
    }
    /* The unix socket is the daemon's own listener (below), not a gRPC port. */
    if (rc == 0 && d.cfg.listen[0] != '\0') {
        char token[SRV_TOKEN_MAX + 1], path[SRV_PATH_MAX + 272];
        rc = srv_tcp_token_load(&d.cfg, token, sizeof(token), path, sizeof(path), err,
                                sizeof(err));
        if (rc == 0)
            rc = rpc_server_add_port(d.rpc, d.cfg.listen, token, err, sizeof(err));
        if (rc == 0)
            srv_info("gRPC over TCP on %s: calls must carry the bearer token in %s",
                     d.cfg.listen, path);
        memset(token, 0, sizeof(token));
    }
    if (rc == 0 && d.cfg.metrics[0] != '\0') {
        rc = srv_metrics_start(&d.metrics, d.srv, methods, nmethods, d.cfg.metrics, &metrics_port,
                               err, sizeof(err));
        if (rc == 0)
            rpc_server_set_observer(d.rpc, srv_metrics_observe, d.metrics);
    }
    if (rc == 0)
        rc = rpc_server_start(d.rpc, 2, err, sizeof(err));
    if (rc != 0) {
        srv_error("%s", err);
        goto out;
    }
    d.loop = ev_default_loop(EVFLAG_AUTO);
    ipc_fd_socket_path(d.cfg.socket, d.fd_path, sizeof(d.fd_path));
    if (takeover) {
        rc = srv_listener_adopt(&d.grpc_unix, d.loop, d.dir_fd, d.name, got.grpc_listen,
                                "gRPC socket", on_grpc_conn, NULL, &d, err, sizeof(err));
        got.grpc_listen = -1;
        srv_listener_keep_file(d.grpc_unix, true);
        if (rc == 0)
            rc = srv_fdsock_adopt(&d.fdsock, d.loop, d.srv, d.dir_fd,
                                  d.fd_path + (d.name - d.cfg.socket), got.fd_listen, err,
                                  sizeof(err));
        got.fd_listen = -1;
        if (rc == 0)
            srv_fdsock_keep_file(d.fdsock, true);
        for (uint32_t i = 0; rc == 0 && i < got.nsessions; i++) {
            srv_client_t *c = srv_handover_session(d.srv, got.session_ids[i]);
            if (c == NULL || srv_fdsock_add_session(d.fdsock, got.session_fds[i], c,
                                                    got.session_ids[i]) != 0) {
                snprintf(err, sizeof(err), "session %s: cannot take it over", got.session_ids[i]);
                rc = PINPOOL_EPROTO;
                break;
            }
            got.session_fds[i] = -1;
        }
    } else {
        rc = srv_listener_open(&d.grpc_unix, d.loop, d.dir_fd, d.dir, d.name, SOCK_STREAM,
                               d.group, "gRPC socket", on_grpc_conn, NULL, &d, err, sizeof(err));
        if (rc == 0)
            rc = srv_fdsock_start(&d.fdsock, d.loop, d.srv, d.dir_fd, d.dir,
                                  d.fd_path + (d.name - d.cfg.socket), d.group, err, sizeof(err));
    }
    srv_takeover_env_t env = {.srv = d.srv, .grpc = &d.grpc_unix, .fdsock = &d.fdsock,
                              .lock_fd = d.lock_fd, .handed_over = on_handed_over, .arg = &d};
    if (rc == 0)
        rc = srv_takeover_listen(&d.takeover, d.loop, d.dir_fd, d.dir, tname, d.group,
                                 got.takeover_listen, &env, err, sizeof(err));
    got.takeover_listen = -1;
    if (rc == 0 && d.cfg.gms[0] != '\0')
        rc = srv_gms_start(&d.gms, d.loop, d.srv, d.cfg.gms, d.cfg.devices,
                           d.cfg.gms_dir[0] != '\0' ? d.cfg.gms_dir : d.dir, d.group, err,
                           sizeof(err));
    if (rc == 0 && takeover) {
        rc = srv_takeover_go(&got, err, sizeof(err));
        if (rc == 0) {
            d.keep_files = false;
            srv_listener_keep_file(d.grpc_unix, false);
            srv_fdsock_keep_file(d.fdsock, false);
            srv_info("takeover: serving the pool, %" PRIu32 " session%s and the sockets of "
                     "pid %d", got.nsessions, got.nsessions == 1 ? "" : "s", (int)got.old_pid);
            srv_takeover_abort(&got, ""); /* frees what is left of it (nothing open) */
            rc = srv_start_chunks(d.srv); /* the cleaner and the maintenance thread */
            if (rc != 0)
                snprintf(err, sizeof(err), "cannot start the cleaner: %s", pinpool_strerror(rc));
        }
    }
    if (rc != 0) {
        srv_error("%s", err);
        goto out;
    }
    ev_signal_init(&d.sigint, on_signal, SIGINT);
    ev_signal_init(&d.sigterm, on_signal, SIGTERM);
    ev_signal_init(&d.sighup, on_sighup, SIGHUP);
    d.sigint.data = d.sigterm.data = d.sighup.data = &d;
    ev_signal_start(d.loop, &d.sigint);
    ev_signal_start(d.loop, &d.sigterm);
    ev_signal_start(d.loop, &d.sighup);
    ev_async_init(&d.drained, on_drained);
    ev_async_start(d.loop, &d.drained);
    ev_timer_init(&d.progress, on_progress, 0.0, 0.2);
    d.progress.data = &d;
    ev_timer_start(d.loop, &d.progress);

    srv_pool_info_t info;
    char devs[128] = "";
    srv_pool_info(d.srv, &info, NULL, NULL);
    for (uint32_t i = 0, n = 0; i < info.ndevices && n < sizeof(devs); i++)
        n += (size_t)snprintf(devs + n, sizeof(devs) - n, "%s%d", i ? "," : " gpus=",
                              (int)info.devices[i].device_id);
    if (d.metrics != NULL) {
        char host[64];
        snprintf(host, sizeof(host), "%s", d.cfg.metrics);
        *strrchr(host, ':') = '\0';
        snprintf(metrics_at, sizeof(metrics_at), " metrics=http://%s:%u/metrics", host, metrics_port);
    }
    printf("pinpool ready: grpc=unix:%s fd=%s%s%s%s pool=%s chunk=%s backend=%s mode=%s%s pid=%d\n",
           d.cfg.socket, d.fd_path, d.cfg.listen[0] ? " tcp=" : "", d.cfg.listen, metrics_at,
           pool_format_size(info.stats.capacity, size, sizeof(size)),
           pool_format_size(d.cfg.chunk_size, chunk, sizeof(chunk)), info.host_backend, info.mode,
           devs, (int)getpid());
    fflush(stdout);
    d.exit_code = 0;
    ev_run(d.loop, 0);

out:
    if (got.conn >= 0 || got.nsessions > 0) /* --takeover failed before GO: the old one serves on */
        srv_takeover_abort(&got, err);
    if (d.keep_files && d.fdsock != NULL)
        srv_fdsock_handed_over(d.fdsock); /* the sessions are still the old daemon's */
    srv_takeover_close(d.takeover, d.keep_files || d.handed_over);
    /* Stop taking work, let calls in flight finish, then end the sessions. */
    if (d.srv != NULL)
        srv_begin_shutdown(d.srv);
    srv_listener_close(d.grpc_unix); /* removes the socket file */
    srv_fdsock_stop_accepting(d.fdsock);
    srv_gms_stop_accepting(d.gms);
    rpc_server_stop(d.rpc, SHUTDOWN_GRACE_S);
    srv_service_destroy(d.service);
    srv_metrics_stop(d.metrics);
    srv_fdsock_close(d.fdsock);
    srv_gms_close(d.gms);
    if (!d.handed_over && !d.keep_files)
        srv_persist_objects(d.srv); /* resident objects to the tier, for the next start */
    srv_destroy(d.srv);
    srv_huge_release(&d.huge); /* the pool is gone: its reserved huge pages back */
    if (d.loop != NULL)
        ev_loop_destroy(d.loop);
    if (d.lock_fd >= 0) {
        if (!d.handed_over && !d.keep_files)
            unlinkat(d.dir_fd, d.lock_name, 0); /* still ours: we hold the lock */
        close(d.lock_fd);
    }
    if (d.dir_fd >= 0)
        close(d.dir_fd);
    srv_info("stopped");
    if (rpc_shutdown_pending()) { /* gRPC's threads still run: no static destructors */
        fflush(NULL);
        _exit(d.exit_code);
    }
    return d.exit_code;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "help";

    if (strcmp(cmd, "serve") == 0)
        return serve(argc - 2, argv + 2);
    if (strcmp(cmd, "info") == 0)
        return cli_info(argc - 2, argv + 2);
    if (strcmp(cmd, "status") == 0)
        return cli_status(argc - 2, argv + 2);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("pinpool %s\n", PINPOOL_VERSION_STRING);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "pinpool: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
