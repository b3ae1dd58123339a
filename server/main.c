/*
 * main.c - the `pinpool` command: serve, info, status, version, help.
 *
 * `pinpool serve` wires the pieces together: srv (pool and chunks), the gRPC
 * server (rpc.c + service.c, on its own threads), and the libev loop on the
 * main thread (fd socket, signals, the start-up progress timer).  The only
 * process-wide state of the daemon lives here.
 *
 * Threads: the main thread parses the options, makes srv, waits for its first
 * chunk, starts the gRPC server and runs the libev loop: the fd socket
 * (fdsock.c), SIGINT/SIGTERM, the progress timer (srv_chunk_progress,
 * srv_wait_chunks without waiting) and the shutdown grace timer; after the
 * loop it stops the rest and frees everything.  Other
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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "fdsock.h"
#include "log.h"
#include "metrics.h"
#include "paths.h"
#include "pinpool.h"
#include "rpc.h"
#include "reserve.h"
#include "service.h"
#include "srv.h"
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
    srv_metrics_t *metrics;
    struct ev_loop *loop;
    ev_signal sigint, sigterm;
    ev_timer progress;
    ev_timer grace;   /* cuts connections that hold the shutdown */
    ev_async drained; /* the gRPC server has finished every call */
    bool stopping;
    int lock_fd;
    char lock_path[SRV_PATH_MAX + 8];
    char fd_path[SRV_PATH_MAX + 8];
    int exit_code;
    bool tty;
    double next_report; /* seconds into start-up of the next progress line */
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

/* The sockets' directory: made if missing, 0700 (0750 when a group may come in). */
static int make_socket_dir(const daemon_t *d)
{
    char dir[SRV_PATH_MAX];
    char *slash;

    snprintf(dir, sizeof(dir), "%s", d->cfg.socket);
    slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir)
        return 0;
    *slash = '\0';
    if (mkdir(dir, d->cfg.allow_gid[0] != '\0' ? 0750 : 0700) != 0 && errno != EEXIST) {
        srv_error("cannot make the socket directory %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* Refuse a second daemon on the same socket: gRPC would silently take it over. */
static int take_lock(daemon_t *d)
{
    char pid[32];
    int n;

    snprintf(d->lock_path, sizeof(d->lock_path), "%s.lock", d->cfg.socket);
    d->lock_fd = open(d->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (d->lock_fd < 0) {
        srv_error("cannot open %s: %s", d->lock_path, strerror(errno));
        return -1;
    }
    if (flock(d->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        n = (int)read(d->lock_fd, pid, sizeof(pid) - 1);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\r\n")] = '\0';
        n = (int)strlen(pid);
        srv_error("another pinpool daemon (pid %s) is serving %s; stop it or pass another --socket",
                  n > 0 ? pid : "?", d->cfg.socket);
        close(d->lock_fd);
        d->lock_fd = -1;
        return -1;
    }
    n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(d->lock_fd, 0) != 0 || pwrite(d->lock_fd, pid, (size_t)n, 0) != n)
        srv_warn("cannot write the pid into %s", d->lock_path);
    return 0;
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
    srv_fdsock_stop_accepting(d->fdsock);
    rpc_server_begin_shutdown(d->rpc, rpc_drained, d);
    ev_timer_init(&d->grace, on_grace, SHUTDOWN_GRACE_S, 0.0);
    d->grace.data = d;
    ev_timer_start(d->loop, &d->grace);
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
    daemon_t d = {.lock_fd = -1};
    char err[512];
    char addr[SRV_PATH_MAX + 16];
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
    for (char *note = d.cfg.notes, *end; note[0] != '\0'; note = end + (*end != '\0')) {
        end = note + strcspn(note, "\n");
        srv_info("note: %.*s", (int)(end - note), note);
    }
    signal(SIGPIPE, SIG_IGN);
    install_crash_handlers();
    d.tty = isatty(STDERR_FILENO);
    d.exit_code = 1;

    if (make_socket_dir(&d) != 0 || take_lock(&d) != 0)
        return 1;
    rc = srv_create(&d.srv, &d.cfg, err, sizeof(err));
    if (rc != 0) {
        srv_error("%s", err);
        goto out;
    }
    rc = srv_start_chunks(d.srv);
    if (rc == 0)
        rc = srv_wait_chunks(d.srv, 1, err, sizeof(err)); /* serve from the first chunk on */
    if (rc != 0) {
        srv_error("cannot create the pool: %s", rc == 0 ? "" : err);
        goto out;
    }

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
    if (rc == 0) {
        snprintf(addr, sizeof(addr), "unix:%s", d.cfg.socket);
        rc = rpc_server_add_port(d.rpc, addr, NULL, err, sizeof(err));
    }
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
    if (chmod(d.cfg.socket, 0660) != 0)
        srv_warn("cannot make %s 0660: %s", d.cfg.socket, strerror(errno));
    d.loop = ev_default_loop(EVFLAG_AUTO);
    ipc_fd_socket_path(d.cfg.socket, d.fd_path, sizeof(d.fd_path));
    rc = srv_fdsock_start(&d.fdsock, d.loop, d.srv, d.fd_path, err, sizeof(err));
    if (rc != 0) {
        srv_error("%s", err);
        goto out;
    }
    ev_signal_init(&d.sigint, on_signal, SIGINT);
    ev_signal_init(&d.sigterm, on_signal, SIGTERM);
    d.sigint.data = d.sigterm.data = &d;
    ev_signal_start(d.loop, &d.sigint);
    ev_signal_start(d.loop, &d.sigterm);
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
    /* Stop taking work, let calls in flight finish, then end the sessions. */
    if (d.srv != NULL)
        srv_begin_shutdown(d.srv);
    srv_fdsock_stop_accepting(d.fdsock);
    rpc_server_stop(d.rpc, SHUTDOWN_GRACE_S);
    srv_service_destroy(d.service);
    srv_metrics_stop(d.metrics);
    srv_fdsock_close(d.fdsock);
    srv_destroy(d.srv);
    if (d.loop != NULL)
        ev_loop_destroy(d.loop);
    if (d.exit_code == 0 || d.rpc != NULL)
        unlink(d.cfg.socket);
    if (d.lock_fd >= 0) {
        unlink(d.lock_path);
        close(d.lock_fd);
    }
    srv_info("stopped");
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
