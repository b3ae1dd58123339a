/*
 * clients_scale.c - what the number of clients costs (issue 13.5): the same
 * calls with one client and with N (default 100,000), side by side in one
 * run, in two parts.
 *
 *   clients_scale BUILD_DIR [N] [ROUNDS]   (the daemon: $PINPOOL_BIN, else BUILD_DIR/pinpool)
 *
 * Part 1, the daemon's own work (an srv in this process, a 64 MiB memfd pool
 * of 16 MiB chunks, no gRPC): N-1 fd-socket sessions (srv_session_open: a
 * session needs no descriptor here, so N is not bound by RLIMIT_NOFILE),
 * each holding a 256-byte slice, then the probe session's calls:
 * alloc+free of 4 KiB (every call finds its session by token, its slice's
 * client by owner number), MAP_REQ's work (srv_session_chunk_fds), and
 * GetPoolInfo: the first page (1000 clients) as admin, the top 10 by bytes,
 * and the listing of a uid with one client.
 * Part 2, the real daemon over its unix socket: the same N as detached
 * clients (a stock gRPC caller's AllocatePoolMemory, 256 bytes each: they
 * need no descriptor either), then AllocatePoolMemory+FreePoolMemory and
 * GetPoolInfo (first page) latency over gRPC, and `pinpool info` (every
 * page, all N clients) end to end.
 * Each figure is measured with 1 client first, then with N, and printed as
 * p50/p99 with the ratio.  Target (issue 13.5): alloc+free within 1.2x.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "benchutil.h"
#include "config.h"
#include "internal.h"
#include "log.h"
#include "pinpool.pb-c.h"
#include "srv.h"

#define METHOD(name) "/pinpool.v1.PinPool/" name
#define KiB 1024ull

typedef struct row {
    double *t;
    int n;
} row_t;

static double pct(row_t *r, double p)
{
    qsort(r->t, (size_t)r->n, sizeof(double), cmp_double);
    return r->t[(int)(p * (r->n - 1))] * 1e6;
}

static void row_init(row_t *r, int rounds)
{
    r->t = calloc((size_t)rounds, sizeof(double));
    r->n = 0;
    if (r->t == NULL)
        exit(1);
}

static void print_pair(const char *what, row_t *one, row_t *many, unsigned n)
{
    double a50 = pct(one, 0.5), a99 = pct(one, 0.99), b50 = pct(many, 0.5), b99 = pct(many, 0.99);

    printf("%-44s %9.1f %9.1f   %9.1f %9.1f   %5.2fx %5.2fx\n", what, a50, a99, b50, b99,
           b50 / a50, b99 / a99);
    (void)n;
}

__attribute__((noreturn)) static void die(const char *what, const char *msg)
{
    fprintf(stderr, "clients_scale: %s: %s\n", what, msg);
    exit(1);
}

/* ---- part 1: the srv in this process ------------------------------------------------ */

typedef struct probe {
    srv_t *srv;
    srv_client_t *s;
    char id[SRV_CLIENT_ID_LEN];
    const char *token;
} probe_t;

static void probe_open(probe_t *p, srv_t *srv, uid_t uid, pid_t pid)
{
    ipc_cred_t cred = {.pid = pid, .uid = uid, .gid = uid};

    p->srv = srv;
    p->s = srv_session_open(srv, &cred, p->id, sizeof(p->id));
    if (p->s == NULL)
        die("session", "out of memory");
    p->token = srv_session_token(p->s);
}

static void count_usage(const srv_client_usage_t *u, void *arg)
{
    (void)u;
    ++*(uint32_t *)arg;
}

/* The rows of part 1: alloc+free, map, info page, info top 10, info of a small uid. */
enum { P_ALLOC, P_MAP, P_PAGE, P_TOP, P_UID, P_ROWS };
static const char *p_names[P_ROWS] = {
    "alloc+free 4 KiB (session)",     "MAP_REQ's work (chunk fds)",
    "GetPoolInfo, first page (admin)", "GetPoolInfo, top 10 by bytes",
    "GetPoolInfo, a uid with one client",
};

static void measure_srv(probe_t *p, probe_t *small, int rounds, row_t rows[P_ROWS])
{
    char msg[512];
    srv_slice_t s;
    srv_pool_info_t info;
    srv_info_page_t page;
    uint64_t freed;
    uint32_t n, listed;
    int fds[4];

    for (int r = 0; r < rounds; r++) {
        double t0 = now_s();
        if (srv_alloc(p->srv, p->token, p->id, -1, 4 * KiB, 0, "", false, &s, msg, sizeof(msg)) != 0)
            die("alloc", msg);
        if (srv_free(p->srv, p->token, p->id, s.info.id, &freed, &n, msg, sizeof(msg)) != 0)
            die("free", msg);
        rows[P_ALLOC].t[rows[P_ALLOC].n++] = now_s() - t0;
    }
    if (srv_alloc(p->srv, p->token, p->id, -1, 4 * KiB, 0, "", false, &s, msg, sizeof(msg)) != 0)
        die("alloc", msg);
    for (int r = 0; r < rounds; r++) {
        double t0 = now_s();
        int k = srv_session_chunk_fds(p->srv, p->s, s.info.id, s.info.first_chunk, 1, fds,
                                      msg, sizeof(msg));
        rows[P_MAP].t[rows[P_MAP].n++] = now_s() - t0;
        if (k < 0)
            die("chunk fds", msg);
        for (int i = 0; i < k; i++)
            close(fds[i]);
    }
    srv_free(p->srv, p->token, p->id, s.info.id, &freed, &n, msg, sizeof(msg));
    const srv_info_query_t qpage = {0}, qtop = {.page_size = 10, .by_bytes = true};
    const srv_info_query_t *qs[3] = {&qpage, &qtop, &qpage};
    probe_t *who[3] = {p, p, small};
    for (int q = 0; q < 3; q++)
        for (int r = 0; r < rounds / 10 + 1; r++) {
            listed = 0;
            double t0 = now_s();
            if (srv_pool_page(p->srv, who[q]->token, qs[q], &info, count_usage, NULL, &listed,
                              &page, msg, sizeof(msg)) != 0)
                die("pool page", msg);
            rows[P_PAGE + q].t[rows[P_PAGE + q].n++] = now_s() - t0;
        }
}

static void part1(unsigned nclients, int rounds)
{
    srv_config_t cfg;
    char err[256], msg[256];
    srv_t *srv;
    row_t one[P_ROWS], many[P_ROWS];
    probe_t p, small, *idle;
    srv_slice_t s;

    srv_log_level = 0; /* errors only */
    srv_config_defaults(&cfg);
    if (srv_config_set(&cfg, "mem-pool-size", "64MiB", err, sizeof(err)) != 0 ||
        srv_config_set(&cfg, "chunk-size", "16MiB", err, sizeof(err)) != 0 ||
        srv_config_set(&cfg, "host-backend", "memfd", err, sizeof(err)) != 0 ||
        srv_config_set(&cfg, "spill-tier", "none", err, sizeof(err)) != 0 ||
        srv_config_set(&cfg, "max-clients", "0", err, sizeof(err)) != 0 ||
        srv_create(&srv, &cfg, err, sizeof(err)) != 0 || srv_start_chunks(srv) != 0 ||
        srv_wait_chunks(srv, UINT32_MAX, err, sizeof(err)) != 0)
        die("srv", err);
    for (int i = 0; i < P_ROWS; i++) {
        row_init(&one[i], rounds);
        row_init(&many[i], rounds);
    }
    probe_open(&p, srv, geteuid(), 1);
    probe_open(&small, srv, 4242, 2);
    measure_srv(&p, &small, rounds, one);
    idle = calloc(nclients, sizeof(*idle));
    if (idle == NULL)
        die("idle", "out of memory");
    double t0 = now_s();
    for (unsigned i = 1; i < nclients; i++) {
        probe_open(&idle[i], srv, geteuid(), (pid_t)(10 + i));
        if (srv_alloc(srv, idle[i].token, idle[i].id, -1, 256, 0, "", false, &s, msg,
                      sizeof(msg)) != 0)
            die("idle alloc", msg);
    }
    printf("part 1: the daemon's work in this process (srv_* calls, no gRPC); %u sessions made "
           "in %.2f s\n\n", nclients, now_s() - t0);
    measure_srv(&p, &small, rounds, many);
    printf("%-44s %9s %9s   %9s %9s   %13s\n", "us", "1: p50", "p99", "N: p50", "p99",
           "ratio p50 p99");
    for (int i = 0; i < P_ROWS; i++)
        print_pair(p_names[i], &one[i], &many[i], nclients);
    for (unsigned i = 1; i < nclients; i++)
        srv_session_close(srv, idle[i].s);
    srv_session_close(srv, p.s);
    srv_session_close(srv, small.s);
    free(idle);
    srv_destroy(srv);
}

/* ---- part 2: the real daemon over gRPC ------------------------------------------------ */

static char dir[64], sock[128];
static pid_t daemon_pid;

static void stop_daemon(void)
{
    if (daemon_pid > 0) {
        kill(daemon_pid, SIGTERM);
        waitpid(daemon_pid, NULL, 0);
        daemon_pid = 0;
    }
}

static void start_daemon(const char *build)
{
    char bin[512], logpath[160];
    const char *env = getenv("PINPOOL_BIN");

    snprintf(bin, sizeof(bin), "%s", env != NULL ? env : "");
    if (bin[0] == '\0')
        snprintf(bin, sizeof(bin), "%s/pinpool", build);
    snprintf(dir, sizeof(dir), "/tmp/pinpool-scale-XXXXXX");
    if (mkdtemp(dir) == NULL)
        die("mkdtemp", strerror(errno));
    snprintf(sock, sizeof(sock), "%s/p.sock", dir);
    snprintf(logpath, sizeof(logpath), "%s/log", dir);
    daemon_pid = fork();
    if (daemon_pid == 0) {
        if (freopen(logpath, "w", stderr) == NULL)
            _exit(126);
        execl(bin, bin, "serve", "--socket", sock, "--mem-pool-size", "64MiB", "--chunk-size",
              "16MiB", "--max-clients", "0", "--spill-tier", "none", "--state-dir", dir,
              (char *)NULL);
        _exit(127);
    }
    atexit(stop_daemon);
    for (int i = 0; i < 200; i++) {
        pinpool_ctx_t *ctx = pinpool__connect_rpc_only(sock);
        int ok = pinpool_err(ctx) == 0 && pinpool_ping(ctx) == 0;
        pinpool_close(ctx);
        if (ok)
            return;
        usleep(50000);
    }
    die("daemon", "did not answer within 10 s (see its log)");
}

static uint64_t rpc_alloc(pinpool__rpc_t *rpc, const char *client, uint64_t size)
{
    Pinpool__V1__AllocatePoolMemoryRequest req = PINPOOL__V1__ALLOCATE_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__AllocatePoolMemoryResponse *r = NULL;
    char msg[512];
    uint64_t id;

    req.client_id = (char *)client;
    req.device_id = -1;
    req.size_bytes = size;
    if (pinpool__rpc_call(rpc, METHOD("AllocatePoolMemory"), &req.base,
                          &pinpool__v1__allocate_pool_memory_response__descriptor,
                          (ProtobufCMessage **)&r, NULL, msg, sizeof(msg)) != 0)
        die("AllocatePoolMemory", msg);
    id = r->slice_id;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return id;
}

static void rpc_free(pinpool__rpc_t *rpc, const char *client, uint64_t slice)
{
    Pinpool__V1__FreePoolMemoryRequest req = PINPOOL__V1__FREE_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__FreePoolMemoryResponse *r = NULL;
    char msg[512];

    req.client_id = (char *)client;
    req.slice_id = slice;
    if (pinpool__rpc_call(rpc, METHOD("FreePoolMemory"), &req.base,
                          &pinpool__v1__free_pool_memory_response__descriptor,
                          (ProtobufCMessage **)&r, NULL, msg, sizeof(msg)) != 0)
        die("FreePoolMemory", msg);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static size_t rpc_info(pinpool__rpc_t *rpc)
{
    Pinpool__V1__GetPoolInfoRequest req = PINPOOL__V1__GET_POOL_INFO_REQUEST__INIT;
    Pinpool__V1__GetPoolInfoResponse *r = NULL;
    char msg[512];
    size_t n;

    if (pinpool__rpc_call(rpc, METHOD("GetPoolInfo"), &req.base,
                          &pinpool__v1__get_pool_info_response__descriptor,
                          (ProtobufCMessage **)&r, NULL, msg, sizeof(msg)) != 0)
        die("GetPoolInfo", msg);
    n = r->n_clients;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return n;
}

/* `pinpool info` end to end: seconds, and its lines. */
static double cli_info(const char *build, long *lines)
{
    char cmd[1024], bin[400], line[512];
    const char *env = getenv("PINPOOL_BIN");
    FILE *f;

    snprintf(bin, sizeof(bin), "%s", env != NULL ? env : "");
    if (bin[0] == '\0')
        snprintf(bin, sizeof(bin), "%s/pinpool", build);
    snprintf(cmd, sizeof(cmd), "%s info --socket %s", bin, sock);
    double t0 = now_s();
    f = popen(cmd, "r");
    if (f == NULL)
        die("popen", strerror(errno));
    *lines = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        ++*lines;
    if (pclose(f) != 0)
        die("pinpool info", "failed");
    return now_s() - t0;
}

enum { G_ALLOC, G_INFO, G_ROWS };

static void measure_rpc(pinpool__rpc_t *rpc, int rounds, row_t rows[G_ROWS])
{
    for (int r = 0; r < rounds; r++) {
        double t0 = now_s();
        uint64_t s = rpc_alloc(rpc, "probe", 4 * KiB);
        rpc_free(rpc, "probe", s);
        rows[G_ALLOC].t[rows[G_ALLOC].n++] = now_s() - t0;
    }
    for (int r = 0; r < rounds / 10 + 1; r++) {
        double t0 = now_s();
        rpc_info(rpc);
        rows[G_INFO].t[rows[G_INFO].n++] = now_s() - t0;
    }
}

static void part2(const char *build, unsigned nclients, int rounds)
{
    pinpool__rpc_t *rpc;
    row_t one[G_ROWS], many[G_ROWS];
    char id[48];
    long lines1, linesn;

    start_daemon(build);
    if (pinpool__rpc_open(&rpc, sock) != 0)
        die("rpc", sock);
    for (int i = 0; i < G_ROWS; i++) {
        row_init(&one[i], rounds);
        row_init(&many[i], rounds);
    }
    measure_rpc(rpc, rounds, one);
    double cli1 = cli_info(build, &lines1);
    double t0 = now_s();
    for (unsigned i = 1; i < nclients; i++) {
        snprintf(id, sizeof(id), "idle-%u", i);
        rpc_alloc(rpc, id, 256);
    }
    printf("\npart 2: the daemon over its unix socket (gRPC); %u detached clients made in "
           "%.2f s\n\n", nclients, now_s() - t0);
    measure_rpc(rpc, rounds, many);
    double clin = cli_info(build, &linesn);
    printf("%-44s %9s %9s   %9s %9s   %13s\n", "us", "1: p50", "p99", "N: p50", "p99",
           "ratio p50 p99");
    print_pair("AllocatePoolMemory+FreePoolMemory 4 KiB", &one[G_ALLOC], &many[G_ALLOC], nclients);
    print_pair("GetPoolInfo (first page: 1000 clients)", &one[G_INFO], &many[G_INFO], nclients);
    printf("%-44s %9.3f s (%ld lines)   %9.3f s (%ld lines)\n", "pinpool info (every page)", cli1,
           lines1, clin, linesn);
    for (unsigned i = 1; i < nclients; i++) {
        snprintf(id, sizeof(id), "idle-%u", i);
        rpc_free(rpc, id, 0);
    }
    pinpool__rpc_close(rpc);
    stop_daemon();
    char rm[128];
    snprintf(rm, sizeof(rm), "rm -rf %s", dir);
    if (system(rm) != 0)
        fprintf(stderr, "clients_scale: could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
    const char *build = argc > 1 ? argv[1] : "build";
    unsigned n = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 100000;
    int rounds = argc > 3 ? atoi(argv[3]) : 2000;

    if (n < 2 || rounds < 10) {
        fprintf(stderr, "usage: clients_scale BUILD_DIR [N >= 2] [ROUNDS >= 10]\n");
        return 2;
    }
    printf("clients_scale: 1 client vs %u clients, %d rounds (GetPoolInfo: %d)\n\n", n, rounds,
           rounds / 10 + 1);
    part1(n, rounds);
    part2(build, n, rounds);
    return 0;
}
