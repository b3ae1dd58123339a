/*
 * rpc_latency.c - AllocatePoolMemory / FreePoolMemory against an empty unary
 * call (Ping) to the same daemon, in the same run, over its unix socket; and,
 * given a baseline daemon binary, the same calls against it side by side.
 *
 *   rpc_latency SOCKET [ROUNDS] [--baseline BIN]     (or $PINPOOL_BASELINE_BIN)
 *
 * Rounds interleave the three calls (ping, alloc, free) so that drift in the
 * machine's state hits all of them alike; these raw calls act as a client
 * without a session (whose slices nobody can map or write: freed, they need
 * no zeroing).  Then the library path (pinpool_alloc + pinpool_free, the
 * mapping cached by a slice kept alive).  Then a churn phase, as a session
 * (its fd-socket connection opened by hand, its token on the calls): 64
 * slices of 64 KiB - 4 MiB live (less in a pool under 1 GiB: a quarter of it
 * at most), a random one replaced each round, so that every free gives the
 * daemon bytes to zero.
 * With a baseline (a daemon binary built from another commit, e.g.
 *   git worktree add /tmp/base COMMIT && make -C /tmp/base
 * ) this program starts it on a temp socket with the options bench/run gives
 * the daemon under test (1 GiB pool), runs every round against both, taking
 * turns in alternating order, and prints each call's p50 against the
 * baseline's.  Owns: the baseline daemon it starts (stopped at exit) and its
 * temp directory.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "ipc.h"
#include "paths.h"
#include "benchutil.h"
#include "pinpool.h"
#include "pinpool.pb-c.h"

#define METHOD(name) "/pinpool.v1.PinPool/" name
#define CHURN_LIVE 64

static double now_us(void)
{
    return now_s() * 1e6;
}

typedef struct series {
    const char *name;
    double *us;
    int n;
    double p50, p99, total;
} series_t;

enum { S_PING, S_ALLOC, S_FREE, S_CHURN_ALLOC, S_CHURN_FREE, S_LIB, NSERIES };

static const char *const series_names[NSERIES] = {
    "Ping (empty unary call)", "AllocatePoolMemory", "FreePoolMemory",
    "AllocatePoolMemory, churn", "FreePoolMemory, churn", "pinpool_alloc + pinpool_free pair",
};

/* One daemon under measurement. */
typedef struct target {
    const char *label;
    const char *socket;
    pinpool__rpc_t *rpc;
    pinpool__rpc_t *srpc;  /* the session's calls, with its token */
    int fdsock;            /* the session (-1: none) */
    char session[IPC_CLIENT_ID_LEN];
    series_t s[NSERIES];
    uint64_t live[CHURN_LIVE];
} target_t;

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "rpc_latency: %s: %s\n", what, msg);
    exit(1);
}

static void summarize(series_t *s)
{
    s->total = 0;
    for (int i = 0; i < s->n; i++)
        s->total += s->us[i];
    qsort(s->us, (size_t)s->n, sizeof(double), cmp_double);
    s->p50 = s->us[s->n / 2];
    s->p99 = s->us[(int)(s->n * 0.99)];
}

static void print_row(const series_t *s, const series_t *ping)
{
    printf("%-36s %9.1f %9.1f %10.0f", s->name, s->p50, s->p99, s->n / (s->total / 1e6));
    if (ping != NULL)
        printf("   %5.2fx   %5.2fx", s->p50 / ping->p50, s->p99 / ping->p99);
    printf("\n");
}

/* ---- the baseline daemon ------------------------------------------------------------ */

static pid_t base_pid;
static char base_dir[64], base_sock[128];

static void stop_baseline(void)
{
    char cmd[128];

    if (base_pid > 0) {
        kill(base_pid, SIGTERM);
        waitpid(base_pid, NULL, 0);
        base_pid = 0;
    }
    if (base_dir[0] != '\0') {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "rpc_latency: cannot remove %s\n", base_dir);
    }
}

/* Start bin serve on a temp socket (bench/run's options) and wait for its
 * ready line; the socket path, or exit. */
static const char *start_baseline(const char *bin)
{
    char state[128], ready[512] = "";
    int out[2];
    size_t n = 0;

    snprintf(base_dir, sizeof(base_dir), "/tmp/pinpool-bench-base-XXXXXX");
    if (mkdtemp(base_dir) == NULL)
        die("baseline", "mkdtemp failed");
    snprintf(base_sock, sizeof(base_sock), "%s/pinpool.sock", base_dir);
    snprintf(state, sizeof(state), "%s/state", base_dir);
    if (pipe(out) != 0)
        die("baseline", "pipe failed");
    base_pid = fork();
    if (base_pid < 0)
        die("baseline", "fork failed");
    if (base_pid == 0) {
        char log[160];
        snprintf(log, sizeof(log), "%s/daemon.log", base_dir);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(out[1], STDOUT_FILENO);
        if (fd >= 0)
            dup2(fd, STDERR_FILENO);
        close(out[0]);
        setenv("GRPC_VERBOSITY", "NONE", 1);
        execl(bin, bin, "serve", "--socket", base_sock, "--state-dir", state, "--mem-pool-size",
              "1GiB", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    atexit(stop_baseline);
    while (n < sizeof(ready) - 1 && strchr(ready, '\n') == NULL) {
        struct pollfd p = {.fd = out[0], .events = POLLIN};
        ssize_t r;
        if (poll(&p, 1, 20000) <= 0 || (r = read(out[0], ready + n, sizeof(ready) - 1 - n)) <= 0)
            break;
        n += (size_t)r;
    }
    close(out[0]);
    if (strncmp(ready, "pinpool ready", 13) != 0)
        die("baseline", "the baseline daemon did not say it is ready");
    return base_sock;
}

/* ---- the calls ------------------------------------------------------------------------ */

static Pinpool__V1__PingRequest preq = PINPOOL__V1__PING_REQUEST__INIT;

static double time_ping(target_t *t)
{
    ProtobufCMessage *r = NULL;
    char msg[512];
    double t0 = now_us();

    if (pinpool__rpc_call(t->rpc, METHOD("Ping"), &preq.base, &pinpool__v1__ping_response__descriptor,
                          &r, NULL, msg, sizeof(msg)) != 0)
        die("Ping", msg);
    t0 = now_us() - t0;
    protobuf_c_message_free_unpacked(r, NULL);
    return t0;
}

/* Raw calls, as the client without a session "rpc-latency-bench" or, with
 * session, as t's session (on its channel, which carries its token). */
static double time_alloc(target_t *t, bool session, uint64_t size, uint64_t *id)
{
    Pinpool__V1__AllocatePoolMemoryRequest req = PINPOOL__V1__ALLOCATE_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__AllocatePoolMemoryResponse *ar = NULL;
    char msg[512];
    double t0;

    req.client_id = session ? t->session : (char *)"rpc-latency-bench";
    req.device_id = -1;
    req.size_bytes = size;
    t0 = now_us();
    if (pinpool__rpc_call(session ? t->srpc : t->rpc, METHOD("AllocatePoolMemory"), &req.base,
                          &pinpool__v1__allocate_pool_memory_response__descriptor,
                          (ProtobufCMessage **)&ar, NULL, msg, sizeof(msg)) != 0)
        die("AllocatePoolMemory", msg);
    t0 = now_us() - t0;
    *id = ar->slice_id;
    protobuf_c_message_free_unpacked(&ar->base, NULL);
    return t0;
}

static double time_free(target_t *t, bool session, uint64_t id)
{
    Pinpool__V1__FreePoolMemoryRequest req = PINPOOL__V1__FREE_POOL_MEMORY_REQUEST__INIT;
    ProtobufCMessage *r = NULL;
    char msg[512];
    double t0;

    req.client_id = session ? t->session : (char *)"rpc-latency-bench";
    req.slice_id = id;
    t0 = now_us();
    if (pinpool__rpc_call(session ? t->srpc : t->rpc, METHOD("FreePoolMemory"), &req.base,
                          &pinpool__v1__free_pool_memory_response__descriptor, &r, NULL, msg,
                          sizeof(msg)) != 0)
        die("FreePoolMemory", msg);
    t0 = now_us() - t0;
    protobuf_c_message_free_unpacked(r, NULL);
    return t0;
}

/* The largest churn slice: 4 MiB, or less so that CHURN_LIVE of them take a
 * quarter of the pool at most. */
static uint64_t churn_max = 4 << 20;

/* 1/64 of churn_max up to churn_max, in steps of that. */
static uint64_t churn_size(unsigned *seed)
{
    return (1 + (uint64_t)(rand_r(seed) % 64)) * (churn_max / 64);
}

static void fit_churn(const char *socket)
{
    pinpool_ctx_t *ctx = pinpool__connect_rpc_only(socket);
    pinpool_pool_info_t info;

    if (pinpool_err(ctx) != 0 || pinpool_pool_info(ctx, &info) != 0)
        die("GetPoolInfo", pinpool_errmsg(ctx));
    pinpool_pool_info_free(&info);
    pinpool_close(ctx);
    while (churn_max > 4096 && churn_max * CHURN_LIVE > info.capacity_bytes / 4)
        churn_max /= 2;
}

/* One round against t: ping, alloc, free; then a churn step. */
static void round_plain(target_t *t, int i)
{
    uint64_t id;
    double p = time_ping(t), a = time_alloc(t, false, 1 << 20, &id), f = time_free(t, false, id);

    if (i >= 0) {
        t->s[S_PING].us[i] = p;
        t->s[S_ALLOC].us[i] = a;
        t->s[S_FREE].us[i] = f;
    }
}

static void round_churn(target_t *t, int i, unsigned *seed)
{
    int k = rand_r(seed) % CHURN_LIVE;
    double f = time_free(t, true, t->live[k]), a = time_alloc(t, true, churn_size(seed), &t->live[k]);

    if (i >= 0) {
        t->s[S_CHURN_FREE].us[i] = f;
        t->s[S_CHURN_ALLOC].us[i] = a;
    }
}

/* The library path; a kept slice holds the chunk's mapping in the cache. */
static void run_library(target_t *t, int rounds, int warm)
{
    pinpool_ctx_t *ctx = pinpool_connect(t->socket);
    pinpool_slice_t keep, s;

    if (pinpool_err(ctx) != 0)
        die("connect", pinpool_errmsg(ctx));
    if (pinpool_alloc(ctx, 4096, NULL, &keep) != 0)
        die("pinpool_alloc", pinpool_errmsg(ctx));
    for (int i = -warm; i < rounds; i++) {
        double t0 = now_us();
        if (pinpool_alloc(ctx, 1 << 20, NULL, &s) != 0)
            die("pinpool_alloc", pinpool_errmsg(ctx));
        if (pinpool_free(ctx, s.id, NULL) != 0)
            die("pinpool_free", pinpool_errmsg(ctx));
        if (i >= 0)
            t->s[S_LIB].us[i] = now_us() - t0;
    }
    pinpool_free(ctx, keep.id, NULL);
    pinpool_close(ctx);
}

/* A session opened by hand: its id, and a channel that carries its token. */
static void open_session(target_t *t)
{
    char path[256];
    ipc_hello_t hello;
    size_t nfds = 0;

    if (ipc_fd_socket_path(t->socket, path, sizeof(path)) != 0)
        die("session", "socket path too long");
    t->fdsock = ipc_connect_seqpacket(path);
    if (t->fdsock < 0 ||
        ipc_recv_msg(t->fdsock, &hello, sizeof(hello), NULL, 0, &nfds) != (ssize_t)sizeof(hello) ||
        ipc_msg_check(&hello, sizeof(hello)) != IPC_MSG_HELLO || hello.status != 0)
        die("session", "no greeting on the fd socket");
    snprintf(t->session, sizeof(t->session), "%s", hello.client_id);
    if (pinpool__rpc_open(&t->srpc, t->socket) != 0)
        die("channel", "cannot open");
    pinpool__rpc_set_token(t->srpc, hello.token);
}

static void target_open(target_t *t, const char *label, const char *socket, int rounds)
{
    t->label = label;
    t->socket = socket;
    if (pinpool__rpc_open(&t->rpc, socket) != 0)
        die("channel", "cannot open");
    open_session(t);
    for (int k = 0; k < NSERIES; k++) {
        t->s[k].name = series_names[k];
        t->s[k].n = rounds;
        t->s[k].us = calloc((size_t)rounds, sizeof(double));
        if (t->s[k].us == NULL)
            die("memory", "out of memory");
    }
}

static void target_close(target_t *t)
{
    pinpool__rpc_close(t->srpc);
    close(t->fdsock); /* the session's slices go with it */
    pinpool__rpc_close(t->rpc);
    for (int k = 0; k < NSERIES; k++)
        free(t->s[k].us);
}

int main(int argc, char **argv)
{
    const char *socket = NULL, *baseline = getenv("PINPOOL_BASELINE_BIN");
    int rounds = 20000, warm, nt;
    target_t t[2];
    unsigned seed = 1;

    memset(t, 0, sizeof(t));
    for (int i = 1, pos = 0; i < argc; i++) {
        if (strcmp(argv[i], "--baseline") == 0 && i + 1 < argc)
            baseline = argv[++i];
        else if (pos++ == 0)
            socket = argv[i];
        else
            rounds = atoi(argv[i]);
    }
    if (rounds < 100)
        die("ROUNDS", "at least 100");
    warm = rounds / 10;
    if (socket == NULL)
        socket = getenv("PINPOOL_SOCKET");
    target_open(&t[0], "this build", socket, rounds);
    fit_churn(socket);
    nt = 1;
    if (baseline != NULL && baseline[0] != '\0') {
        target_open(&t[1], "baseline", start_baseline(baseline), rounds);
        nt = 2;
    }

    /* Plain rounds, the library path, then churn rounds (last: the layout it
     * leaves behind is its own); with a baseline, the two daemons take turns,
     * in alternating order, so drift hits both alike. */
    for (int i = -warm; i < rounds; i++)
        for (int k = 0; k < nt; k++)
            round_plain(&t[(k + (i & 1)) % nt], i);
    for (int k = 0; k < nt; k++)
        run_library(&t[k], rounds / 4 > 100 ? rounds / 4 : 100, warm / 4);
    for (int k = 0; k < nt; k++)
        for (int j = 0; j < CHURN_LIVE; j++)
            time_alloc(&t[k], true, churn_size(&seed), &t[k].live[j]);
    for (int i = -warm; i < rounds; i++)
        for (int k = 0; k < nt; k++)
            round_churn(&t[(k + (i & 1)) % nt], i, &seed);

    printf("%d rounds after %d warm-up, one thread, unix socket; churn (a session's): %d live "
           "slices of %" PRIu64 " KiB-%" PRIu64 " KiB, one replaced a round\n", rounds, warm,
           CHURN_LIVE, churn_max / 64 >> 10, churn_max >> 10);
    for (int k = 0; k < nt; k++) {
        t[k].s[S_LIB].n = rounds / 4 > 100 ? rounds / 4 : 100;
        for (int j = 0; j < NSERIES; j++)
            summarize(&t[k].s[j]);
        printf("-- %s (%s)\n", t[k].label, k == 0 ? t[k].socket : baseline);
        printf("%-36s %9s %9s %10s   %6s   %6s\n", "call", "p50 us", "p99 us", "calls/s",
               "p50/ping", "p99/ping");
        print_row(&t[k].s[S_PING], NULL);
        for (int j = S_ALLOC; j < NSERIES; j++)
            print_row(&t[k].s[j], &t[k].s[S_PING]);
    }
    printf("ratio AllocatePoolMemory/Ping p50 %.2f, FreePoolMemory/Ping p50 %.2f (target <= 1.10); "
           "p99 %.0f / %.0f us (target <= 250)\n", t[0].s[S_ALLOC].p50 / t[0].s[S_PING].p50,
           t[0].s[S_FREE].p50 / t[0].s[S_PING].p50, t[0].s[S_ALLOC].p99, t[0].s[S_FREE].p99);
    if (nt == 2)
        printf("this build / baseline, p50: AllocatePoolMemory %.2fx, churn %.2fx; FreePoolMemory "
               "%.2fx, churn %.2fx; Ping %.2fx (target: alloc <= 1.10x)\n",
               t[0].s[S_ALLOC].p50 / t[1].s[S_ALLOC].p50,
               t[0].s[S_CHURN_ALLOC].p50 / t[1].s[S_CHURN_ALLOC].p50,
               t[0].s[S_FREE].p50 / t[1].s[S_FREE].p50,
               t[0].s[S_CHURN_FREE].p50 / t[1].s[S_CHURN_FREE].p50,
               t[0].s[S_PING].p50 / t[1].s[S_PING].p50);
    for (int k = 0; k < nt; k++)
        target_close(&t[k]);
    return 0;
}
