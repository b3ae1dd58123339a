/*
 * ctl_latency.c - the control plane under stalled pinning and a stalled tier:
 * Ping, FreePoolMemory and GetPoolInfo latency with nothing else going on
 * (quiet) and while 8 allocations wait for pinning and for a stalled spill
 * tier (loaded), on the same daemon, in the same run, side by side.
 *
 *   ctl_latency BUILD_DIR [ROUNDS]     (the daemon: $PINPOOL_BIN, else BUILD_DIR/pinpool)
 *
 * The daemon: a 256 MiB pool of 16 MiB chunks on the vmm backend over the
 * stand-in CUDA driver (BUILD_DIR/mockcuda), whose cuMemCreate waits while a
 * gate file exists: one chunk is made, the rest wait (slow pinning, held);
 * its spill tier is a real Mooncake Store (the PyPI wheel's mooncake_master
 * and mooncake_client) whose segment process is SIGSTOPped for the loaded
 * phase (a stalled tier).  Chunk 0 holds a 12 MiB released object and the
 * bystander slices the Free rows free.  Loaded: 8 threads each ask for
 * 24 MiB, which needs a spill (the tier is stopped) and then chunks (the gate
 * is shut).  Without Mooncake the loaded phase waits for pinning only (said
 * in the output).  Target (issue 13.4): Ping, Free and GetPoolInfo p99 <= 10 ms
 * loaded.  Each call has a 10 s deadline; a call that runs out is counted
 * ("late") and timed as 10 s, and a phase stops after MAX_LATE of them (a
 * daemon whose gRPC threads wait would take hours otherwise).
 */
#include <errno.h>
#include <fcntl.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "benchutil.h"
#include "pinpool.pb-c.h"

#define METHOD(name) "/pinpool.v1.PinPool/" name
#define MiB (1024ull * 1024)
#define DEADLINE_MS 10000
#define PARKED 8
#define MAX_LATE 6 /* calls past their deadline before a phase stops */

static char dir[64], sock[128], gate[160];
static pid_t daemon_pid, master_pid, segment_pid;

__attribute__((format(printf, 1, 2))) static void die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "ctl_latency: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    if (segment_pid > 0)
        kill(segment_pid, SIGKILL);
    if (master_pid > 0)
        kill(master_pid, SIGKILL);
    if (daemon_pid > 0)
        kill(daemon_pid, SIGKILL);
    unlink(gate);
    exit(1);
}

/* ---- unary calls on one channel, with a deadline ------------------------------------ */

typedef struct conn {
    grpc_channel *ch;
    grpc_completion_queue *cq;
} conn_t;

static void conn_open(conn_t *c)
{
    char target[160];

    snprintf(target, sizeof(target), "unix:%s", sock);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    c->ch = grpc_channel_create(target, creds, NULL);
    grpc_channel_credentials_release(creds);
    c->cq = grpc_completion_queue_create_for_pluck(NULL);
}

static void conn_close(conn_t *c)
{
    grpc_completion_queue_shutdown(c->cq);
    while (grpc_completion_queue_pluck(c->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
               .type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(c->cq);
    grpc_channel_destroy(c->ch);
}

/* One call: its status; *reply (may be NULL) the unpacked reply of type desc. */
static grpc_status_code call(conn_t *c, const char *method, const ProtobufCMessage *req,
                             const ProtobufCMessageDescriptor *desc, ProtobufCMessage **reply,
                             int deadline_ms)
{
    size_t len = protobuf_c_message_get_packed_size(req);
    grpc_slice s = grpc_slice_malloc(len);
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&s, 1), *recv = NULL;
    grpc_slice_unref(s);
    grpc_metadata_array initial, trailer;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailer);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                         gpr_time_from_millis(deadline_ms, GPR_TIMESPAN));
    grpc_call *cl = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                             grpc_slice_from_static_string(method), NULL,
                                             deadline, NULL);
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailer;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    if (grpc_call_start_batch(cl, ops, 6, cl, NULL) != GRPC_CALL_OK)
        die("%s: cannot start a call", method);
    grpc_completion_queue_pluck(c->cq, cl, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (reply != NULL)
        *reply = NULL;
    if (status == GRPC_STATUS_OK && reply != NULL && recv != NULL) {
        grpc_byte_buffer_reader rd;
        grpc_byte_buffer_reader_init(&rd, recv);
        grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
        *reply = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all),
                                           GRPC_SLICE_START_PTR(all));
        grpc_slice_unref(all);
    }
    if (recv != NULL)
        grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailer);
    grpc_call_unref(cl);
    return status;
}

static uint64_t alloc(conn_t *c, const char *client, uint64_t size, int deadline_ms)
{
    Pinpool__V1__AllocatePoolMemoryRequest req = PINPOOL__V1__ALLOCATE_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__AllocatePoolMemoryResponse *r;
    uint64_t id = 0;

    req.client_id = (char *)client;
    req.device_id = -1;
    req.size_bytes = size;
    if (call(c, METHOD("AllocatePoolMemory"), &req.base,
             &pinpool__v1__allocate_pool_memory_response__descriptor, (ProtobufCMessage **)&r,
             deadline_ms) == GRPC_STATUS_OK && r != NULL) {
        id = r->slice_id;
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    return id;
}

/* ---- the daemon and the tier -------------------------------------------------------- */

static pid_t spawn(const char *log, char *const argv[], char *const *env_add)
{
    pid_t pid = fork();

    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(fd, 2);
        if (env_add == NULL)
            dup2(fd, 1);
        for (; env_add != NULL && *env_add != NULL; env_add++)
            putenv(*env_add);
        setpgid(0, 0);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int s = socket(AF_INET, SOCK_STREAM, 0), port;

    if (bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) != 0)
        die("no free port: %s", strerror(errno));
    port = ntohs(a.sin_port);
    close(s);
    return port;
}

static bool port_open(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = connect(s, (struct sockaddr *)&a, sizeof(a)) == 0;

    close(s);
    return ok;
}

/* A Mooncake master and segment process on free loopback ports; the tier URI
 * into uri, or false when the wheel is not installed. */
static bool start_mooncake(char *uri, size_t len)
{
    char pkg[512] = "", cmd[256], bin[600], log[128], a[8][160];
    const char *py = getenv("PYTHON") != NULL ? getenv("PYTHON") : "python3";
    FILE *p;

    snprintf(cmd, sizeof(cmd), "%s -c 'import mooncake.store, os; "
             "print(os.path.dirname(mooncake.__file__))' 2>/dev/null", py);
    p = popen(cmd, "r");
    if (p == NULL || fgets(pkg, sizeof(pkg), p) == NULL || pclose(p) != 0 || pkg[0] == '\0')
        return false;
    pkg[strcspn(pkg, "\n")] = '\0';
    int mport = free_port(), meta = free_port(), metrics = free_port(), cport = free_port();
    snprintf(bin, sizeof(bin), "%s/mooncake_master", pkg);
    snprintf(a[0], sizeof(a[0]), "--rpc_port=%d", mport);
    snprintf(a[1], sizeof(a[1]), "--http_metadata_server_port=%d", meta);
    snprintf(a[2], sizeof(a[2]), "--metrics_port=%d", metrics);
    char *margv[] = {bin, a[0], a[1], a[2], "--default_kv_lease_ttl=1000", "--client_ttl=4",
                     "--rpc_address=127.0.0.1", "--enable_http_metadata_server=true",
                     "--http_metadata_server_host=127.0.0.1", "--rpc_thread_num=2", NULL};
    snprintf(log, sizeof(log), "%s/master.log", dir);
    master_pid = spawn(log, margv, NULL);
    for (double t0 = now_s(); !port_open(mport) || !port_open(meta);) {
        if (now_s() - t0 > 20)
            die("mooncake_master did not listen within 20 s (%s)", log);
        usleep(50000);
    }
    char cbin[600];
    snprintf(cbin, sizeof(cbin), "%s/mooncake_client", pkg);
    snprintf(a[3], sizeof(a[3]), "--port=%d", cport);
    snprintf(a[4], sizeof(a[4]), "--master_server_address=127.0.0.1:%d", mport);
    snprintf(a[5], sizeof(a[5]), "--metadata_server=http://127.0.0.1:%d/metadata", meta);
    char *cargv[] = {cbin, a[3], a[4], a[5], "--global_segment_size=512MB", "--host=127.0.0.1",
                     "--protocol=tcp", NULL};
    snprintf(log, sizeof(log), "%s/segment.log", dir);
    segment_pid = spawn(log, cargv, NULL);
    for (double t0 = now_s();;) {
        snprintf(cmd, sizeof(cmd), "grep -qs 'Starting real client service' %s", log);
        if (system(cmd) == 0)
            break;
        if (now_s() - t0 > 20)
            die("mooncake_client did not start within 20 s (%s)", log);
        usleep(50000);
    }
    snprintf(uri, len, "mooncake://127.0.0.1:%d?metadata=http://127.0.0.1:%d/metadata&"
             "buffer=4MiB&timeout_ms=30000&log=%s/adapter.log", mport, meta, dir);
    return true;
}

static void start_daemon(const char *build, const char *tier)
{
    char bin[512], mock[512], ready[512] = "", env_lib[600], env_gate[200];
    const char *b = getenv("PINPOOL_BIN");
    int out[2];

    snprintf(bin, sizeof(bin), "%s", b != NULL ? b : "");
    if (b == NULL)
        snprintf(bin, sizeof(bin), "%s/pinpool", build);
    snprintf(mock, sizeof(mock), "%s/mockcuda/libcuda.so.1", build);
    char *abs = realpath(mock, NULL);
    if (abs == NULL)
        die("no stand-in CUDA driver at %s (make test builds it where cuda.h is)", mock);
    *strrchr(abs, '/') = '\0';
    snprintf(env_lib, sizeof(env_lib), "LD_LIBRARY_PATH=%s", abs);
    free(abs);
    snprintf(env_gate, sizeof(env_gate), "PINPOOL_MOCK_CREATE_GATE=%s", gate);
    char state[100];
    snprintf(state, sizeof(state), "%s/state", dir);
    char *argv[] = {bin, "serve", "--socket", sock, "--state-dir", state, "--mem-pool-size",
                    "256MiB", "--chunk-size", "16MiB", "--host-backend", "vmm", "--pin-threads",
                    "1", "--spill-tier", (char *)tier, "--spill-low-watermark", "0", NULL};
    char *env[] = {env_lib, env_gate, "GRPC_VERBOSITY=NONE", NULL};
    char log[128];
    snprintf(log, sizeof(log), "%s/daemon.log", dir);
    if (pipe(out) != 0)
        die("pipe: %s", strerror(errno));
    daemon_pid = fork();
    if (daemon_pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(fd, 2);
        for (char **e = env; *e != NULL; e++)
            putenv(*e);
        execv(argv[0], argv);
        _exit(127);
    }
    close(out[1]);
    ssize_t n = read(out[0], ready, sizeof(ready) - 1);
    close(out[0]);
    if (n <= 0 || strncmp(ready, "pinpool ready", 13) != 0)
        die("the daemon did not get ready (its log: %s)", log);
}

/* ---- timing ---------------------------------------------------------------------------- */

typedef struct row {
    const char *name;
    double *ms;
    int n, late;
} row_t;

static double pct(row_t *r, double p)
{
    qsort(r->ms, (size_t)r->n, sizeof(double), cmp_double);
    return r->ms[(int)((r->n - 1) * p)];
}

/* ROUNDS of Ping, GetPoolInfo and Free, interleaved; frees slices[0..n). */
static void measure(conn_t *c, int rounds, const uint64_t *slices, row_t rows[3])
{
    Pinpool__V1__PingRequest ping = PINPOOL__V1__PING_REQUEST__INIT;
    Pinpool__V1__GetPoolInfoRequest info = PINPOOL__V1__GET_POOL_INFO_REQUEST__INIT;
    Pinpool__V1__FreePoolMemoryRequest fr = PINPOOL__V1__FREE_POOL_MEMORY_REQUEST__INIT;

    fr.client_id = "bystander";
    for (int k = 0; k < 3; k++) {
        rows[k].ms = calloc((size_t)rounds, sizeof(double));
        rows[k].n = rounds;
        rows[k].late = 0;
    }
    rows[0].name = "Ping";
    rows[1].name = "GetPoolInfo";
    rows[2].name = "FreePoolMemory";
    for (int i = 0; i < rounds; i++) {
        fr.slice_id = slices[i];
        const ProtobufCMessage *req[3] = {&ping.base, &info.base, &fr.base};
        const char *m[3] = {METHOD("Ping"), METHOD("GetPoolInfo"), METHOD("FreePoolMemory")};
        for (int k = 0; k < 3; k++) {
            double t0 = now_s();
            grpc_status_code st = call(c, m[k], req[k], NULL, NULL, DEADLINE_MS);
            rows[k].ms[i] = (now_s() - t0) * 1e3;
            if (st == GRPC_STATUS_DEADLINE_EXCEEDED)
                rows[k].late++;
            else if (st != GRPC_STATUS_OK)
                die("%s failed", m[k]);
        }
        if (rows[0].late + rows[1].late + rows[2].late >= MAX_LATE) { /* a daemon that waits */
            for (int k = 0; k < 3; k++)
                rows[k].n = i + 1;
            return;
        }
    }
}

typedef struct parked {
    int i;
    uint64_t slice;
} parked_t;

static int parked_done; /* allocations that returned (atomic) */

static void *park(void *arg)
{
    parked_t *p = arg;
    char client[32];
    conn_t c;

    snprintf(client, sizeof(client), "parked-%d", p->i);
    conn_open(&c);
    p->slice = alloc(&c, client, 24 * MiB, 120000);
    __atomic_add_fetch(&parked_done, 1, __ATOMIC_SEQ_CST);
    conn_close(&c);
    return NULL;
}

static void on_signal(int sig)
{
    (void)sig;
    die("interrupted");
}

int main(int argc, char **argv)
{
    const char *build = argc > 1 ? argv[1] : "build";
    int rounds = argc > 2 ? atoi(argv[2]) : 2000;
    char uri[1024] = "none";
    conn_t c;

    if (rounds < 10)
        rounds = 10;
    signal(SIGTERM, on_signal); /* the daemon and Mooncake go too */
    signal(SIGINT, on_signal);
    snprintf(dir, sizeof(dir), "/tmp/pinpool-ctl-XXXXXX");
    if (mkdtemp(dir) == NULL)
        die("mkdtemp: %s", strerror(errno));
    snprintf(sock, sizeof(sock), "%s/pinpool.sock", dir);
    snprintf(gate, sizeof(gate), "%s/gate", dir);
    close(open(gate, O_CREAT | O_WRONLY, 0600)); /* pinning held from the second chunk on */
    bool tier = start_mooncake(uri, sizeof(uri));
    start_daemon(build, tier ? uri : "none");
    grpc_init();
    conn_open(&c);

    /* Chunk 0: bystander slices (freed by the Free rows) and a released object. */
    uint64_t *slices = calloc(2 * (size_t)rounds, sizeof(uint64_t));
    for (int i = 0; i < 2 * rounds; i++)
        if ((slices[i] = alloc(&c, "bystander", 256, DEADLINE_MS)) == 0)
            die("cannot allocate the bystander slices");
    if (tier) {
        Pinpool__V1__ReleasePoolMemoryRequest rel = PINPOOL__V1__RELEASE_POOL_MEMORY_REQUEST__INIT;
        rel.client_id = "holder";
        rel.slice_id = alloc(&c, "holder", 12 * MiB, DEADLINE_MS);
        rel.key = "cold";
        if (rel.slice_id == 0 || call(&c, METHOD("ReleasePoolMemory"), &rel.base, NULL, NULL,
                                      DEADLINE_MS) != GRPC_STATUS_OK)
            die("cannot release the object");
    }

    row_t quiet[3], loaded[3];
    measure(&c, rounds, slices, quiet);

    if (tier)
        kill(segment_pid, SIGSTOP); /* the tier stalls: a spill waits for its timeout (30 s) */
    parked_t p[PARKED];
    pthread_t th[PARKED];
    for (int i = 0; i < PARKED; i++) {
        p[i].i = i;
        pthread_create(&th[i], NULL, park, &p[i]);
    }
    usleep(1000000);
    int before = __atomic_load_n(&parked_done, __ATOMIC_SEQ_CST);
    measure(&c, rounds, slices + rounds, loaded);
    int after = __atomic_load_n(&parked_done, __ATOMIC_SEQ_CST);

    printf("daemon: 256 MiB pool of 16 MiB chunks, 1 made, the rest held (slow pinning); "
           "spill tier: %s\n", tier ? "Mooncake, its segment process SIGSTOPped (stalled)"
                                    : "none (Mooncake not installed: pinning only)");
    printf("loaded: %d allocations of 24 MiB waiting (for %s); %d still waiting when the "
           "loaded rounds began, %d when they ended; %d rounds each, 10 s deadline\n\n", PARKED,
           tier ? "a spill to the stalled tier, then for pinning" : "pinning", PARKED - before,
           PARKED - after, loaded[0].n);
    printf("%-16s %10s %10s %10s %10s %8s %8s %6s\n", "call", "quiet p50", "quiet p99",
           "loaded p50", "loaded p99", "p50 x", "p99 x", "late");
    for (int k = 0; k < 3; k++) {
        double q50 = pct(&quiet[k], 0.5), q99 = pct(&quiet[k], 0.99);
        double l50 = pct(&loaded[k], 0.5), l99 = pct(&loaded[k], 0.99);
        printf("%-16s %8.3f ms %7.3f ms %7.3f ms %7.3f ms %7.2fx %7.2fx %6d\n", quiet[k].name,
               q50, q99, l50, l99, l50 / q50, l99 / q99, loaded[k].late);
        free(quiet[k].ms);
        free(loaded[k].ms);
    }

    /* Let everything go, then stop. */
    if (tier)
        kill(segment_pid, SIGCONT);
    unlink(gate);
    for (int i = 0; i < PARKED; i++)
        pthread_join(th[i], NULL);
    conn_close(&c);
    grpc_shutdown();
    kill(daemon_pid, SIGTERM);
    waitpid(daemon_pid, NULL, 0);
    if (segment_pid > 0) {
        kill(segment_pid, SIGKILL);
        waitpid(segment_pid, NULL, 0);
    }
    if (master_pid > 0) {
        kill(master_pid, SIGKILL);
        waitpid(master_pid, NULL, 0);
    }
    free(slices);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "ctl_latency: cannot remove %s\n", dir);
    return 0;
}
