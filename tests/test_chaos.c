/*
 * test_chaos.c - the chaos suite (issue 13.9) for the control plane: what a
 * hostile or careless caller, a slow pinning or a stalled tier does to the
 * daemon's gRPC side.  Each test starts the real daemon (tests/daemon.h) and
 * attacks it as the issues found: a BatchGet of one big key many times, a
 * BatchExists of a million keys, a Put over the message limit, NUL bytes in
 * names, TCP without the token (also as another user), calls that wait for
 * pinning or a stalled tier while Ping/Free/GetPoolInfo must still answer, a
 * caller that gives up on an allocation or an acquire, a full worker pool,
 * and a daemon whose heap runs out (RLIMIT_DATA).
 *
 * Raw calls go through tests/grpc_call.h (gRPC core, our own bytes, a
 * deadline, a cancel, metadata): the daemon is judged by what a stock client
 * sees.
 * Slow pinning comes from the stand-in CUDA driver (tests/mock/libcuda.c,
 * the vmm backend) whose cuMemCreate waits while a gate file exists; the
 * stalled tier from a real Mooncake whose segment process is SIGSTOPped.
 * gRPC must not be initialised before a test forks a child that uses it
 * (test_run_as): those tests fork first.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <grpc/status.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "grpc_call.h"
#include "mooncake.h"
#include "pinpool.h"
#include "pinpool.pb-c.h"
#include "users.h"
#include "util.h"

#define MiB (1024ull * 1024)
#define METHOD(name) "/pinpool.v1.PinPool/" name

static test_daemon_t d;

static char gate[160];

static void stop(void)
{
    if (gate[0] != '\0')
        unlink(gate);
    if (d.pid > 0)
        test_daemon_finish(&d);
    mc_teardown();
}

TestSuite(chaos, .fini = stop, .timeout = 120);

/* Start `d` with these options (NULL-terminated); raw calls go to its socket. */
#define start_daemon(...)                                                                    \
    do {                                                                                     \
        cr_assert_eq(test_daemon_start(&d, __VA_ARGS__), 0);                                 \
        test_call_default(d.socket);                                                         \
    } while (0)

/* ---- bounds before work ------------------------------------------------------------ */

/* A 16 MiB released object named 64 times in one BatchGet: 1 GiB of copies and
 * a 1 GiB reply before (on the main this suite started from, the daemon made
 * them); now refused before a byte is copied, naming the limit. */
Test(chaos, batch_get_of_one_big_key_many_times_is_refused_before_a_copy)
{
    pinpool_slice_t s;
    char *keys[64];
    char a[32];

    start_daemon("--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   NULL);
    pinpool_ctx_t *ctx = test_connect(&d);
    cr_assert_eq(pinpool_alloc(ctx, 16 * MiB, NULL, &s), 0, "%s", pinpool_errmsg(ctx));
    test_fill(s.ptr, 16 * MiB, 7);
    cr_assert_eq(pinpool_release(ctx, s.id, "big", 0), 0, "%s", pinpool_errmsg(ctx));
    uint64_t hwm = test_proc_status(d.pid, "VmHWM:");

    Pinpool__V1__BatchKeysRequest req = PINPOOL__V1__BATCH_KEYS_REQUEST__INIT;
    for (int i = 0; i < 64; i++)
        keys[i] = "big";
    req.keys = keys;
    req.n_keys = 64;
    test_call_result_t r = test_call_msg(NULL, METHOD("BatchGet"), &req.base);
    TEST_EXPECT_STATUS(r, GRPC_STATUS_RESOURCE_EXHAUSTED, -EMSGSIZE, "--max-message-size");
    free(r.reply);
    uint64_t grew = test_proc_status(d.pid, "VmHWM:") - hwm;
    cr_expect_lt(grew, 8 * MiB, "the daemon's peak memory grew by %s: it copied the object",
                 pinpool_format_size(grew, a, sizeof(a)));

    /* One Get of it fits a reply, and still reads the released bytes. */
    void *buf = malloc(16 * MiB);
    uint64_t got = 0;
    cr_expect_eq(pinpool_get(ctx, "big", buf, 16 * MiB, &got), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(got, 16 * MiB);
    cr_expect(test_same(buf, 16 * MiB, 7));
    free(buf);
    cr_expect_eq(pinpool_remove(ctx, "big"), 0);
    pinpool_close(ctx);
}

/* 1 M empty keys are 2 MB on the wire; decoding and answering them cost the
 * daemon ~450 MB before (855 MiB for 1.9 M).  Now refused before decoding. */
Test(chaos, batch_exists_of_a_huge_key_list_costs_nothing)
{
    size_t n = 1000000;
    uint8_t *wire = malloc(2 * n);
    char a[32];

    start_daemon("--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                   NULL);
    for (size_t i = 0; i < n; i++) { /* field 1 (keys), length 0 */
        wire[2 * i] = 0x0a;
        wire[2 * i + 1] = 0;
    }
    uint64_t hwm = test_proc_status(d.pid, "VmHWM:");
    test_call_result_t r = test_call(NULL, METHOD("BatchExists"), wire, 2 * n);
    TEST_EXPECT_STATUS(r, GRPC_STATUS_RESOURCE_EXHAUSTED, -E2BIG, "--max-batch-keys");
    free(r.reply);
    uint64_t grew = test_proc_status(d.pid, "VmHWM:") - hwm;
    cr_expect_lt(grew, 32 * MiB, "the daemon's peak memory grew by %s for a 2 MB request",
                 pinpool_format_size(grew, a, sizeof(a)));
    /* Under the limit a batch is answered, item by item. */
    test_call_result_t ok = test_call(NULL, METHOD("BatchExists"), wire, 2 * 100);
    cr_expect_eq(ok.status, GRPC_STATUS_OK, "%s", ok.details);
    free(ok.reply);
    free(wire);
}

/* A Put larger than a message goes through a slice (test_session.c checks
 * its bytes): one larger than the pool fails as that slice's allocation,
 * saying the limit and the way it took; one of 5 MiB (over gRPC's 4 MiB
 * default, which the daemon had) goes in one message. */
Test(chaos, put_over_the_message_limit_says_the_limit_and_what_to_use)
{
    uint64_t big = 65 * MiB, got = 0;
    char *buf = calloc(1, big);

    start_daemon("--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   NULL);
    pinpool_ctx_t *ctx = test_connect(&d);
    int rc = pinpool_put(ctx, "huge", buf, big, 0);
    cr_expect_eq(rc, PINPOOL_ETOOBIG, "%s: %s", pinpool_err_name(rc), pinpool_errmsg(ctx));
    TEST_EXPECT_IN(pinpool_errmsg(ctx), "more than the 64.00 MiB a message to the daemon may carry");
    TEST_EXPECT_IN(pinpool_errmsg(ctx), "through a slice");
    test_fill(buf, 5 * MiB, 3);
    cr_expect_eq(pinpool_put(ctx, "five", buf, 5 * MiB, 0), 0, "%s", pinpool_errmsg(ctx));
    memset(buf, 0, 5 * MiB);
    cr_expect_eq(pinpool_get(ctx, "five", buf, 5 * MiB, &got), 0, "%s", pinpool_errmsg(ctx));
    cr_expect(test_same(buf, 5 * MiB, 3));
    cr_expect_eq(pinpool_remove(ctx, "five"), 0);
    pinpool_close(ctx);
    free(buf);
}

/* ---- names --------------------------------------------------------------------------- */

/* protobuf-c cuts a string at a NUL: client "vic\0tim" was client "vic", and
 * keys "abc\0one" and "abc\0two" were one object.  Now INVALID_ARGUMENT, and
 * nothing is made. */
Test(chaos, nul_in_a_client_id_or_a_key_is_invalid_argument)
{
    /* AllocatePoolMemory{client_id "vic\0tim", device_id -1, size_bytes 4096} */
    static const uint8_t alloc[] = {0x0a, 7, 'v', 'i', 'c', 0, 't', 'i', 'm', 0x10, 0xff, 0xff,
                                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x18, 0x80,
                                    0x20};
    /* Put{key "abc\0one", data "x"} and Put{key "abc\0two", data "y"} */
    static const uint8_t put1[] = {0x0a, 7, 'a', 'b', 'c', 0, 'o', 'n', 'e', 0x12, 1, 'x'};
    static const uint8_t put2[] = {0x0a, 7, 'a', 'b', 'c', 0, 't', 'w', 'o', 0x12, 1, 'y'};
    /* BatchPut{items [Put{key "abc\0one"}]}: the check goes into nested messages */
    uint8_t batch[2 + sizeof(put1)] = {0x0a, sizeof(put1)};
    memcpy(batch + 2, put1, sizeof(put1));
    uint32_t clients = 1;

    start_daemon("--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                   NULL);
    test_call_result_t r = test_call(NULL, METHOD("AllocatePoolMemory"), alloc, sizeof(alloc));
    TEST_EXPECT_STATUS(r, GRPC_STATUS_INVALID_ARGUMENT, PINPOOL_EINVAL, "client_id holds a NUL");
    r = test_call(NULL, METHOD("Put"), put1, sizeof(put1));
    TEST_EXPECT_STATUS(r, GRPC_STATUS_INVALID_ARGUMENT, PINPOOL_EINVAL, "key holds a NUL");
    r = test_call(NULL, METHOD("Put"), put2, sizeof(put2));
    TEST_EXPECT_STATUS(r, GRPC_STATUS_INVALID_ARGUMENT, PINPOOL_EINVAL, "key holds a NUL");
    r = test_call(NULL, METHOD("BatchPut"), batch, sizeof(batch));
    TEST_EXPECT_STATUS(r, GRPC_STATUS_INVALID_ARGUMENT, PINPOOL_EINVAL, "key holds a NUL");
    cr_expect_eq(test_call_used(&clients), 0, "something was stored");
    cr_expect_eq(clients, 0, "a client was made");

    pinpool_ctx_t *ctx = test_connect(&d);
    cr_expect_eq(pinpool_exists(ctx, "abc"), 0, "the key was cut at its NUL");
    /* Over the length limits: INVALID_ARGUMENT as well. */
    char key[600], id[300];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    memset(id, 'c', sizeof(id) - 1);
    id[sizeof(id) - 1] = '\0';
    int rc = pinpool_put(ctx, key, "x", 1, 0);
    cr_expect_eq(rc, PINPOOL_EINVAL, "%s: %s", pinpool_err_name(rc), pinpool_errmsg(ctx));
    r = test_call_alloc(NULL, id, 4096, NULL);
    TEST_EXPECT_STATUS(r, GRPC_STATUS_INVALID_ARGUMENT, PINPOOL_EINVAL, "client_id");
    pinpool_close(ctx);
}

/* ---- TCP ---------------------------------------------------------------------------- */

static char tcp_target[64], token_path[200];

/* A daemon on a unix socket and on TCP (a free loopback port). */
static void start_tcp(void)
{
    char listen[64];

    snprintf(listen, sizeof(listen), "127.0.0.1:%d", mc_free_port());
    snprintf(tcp_target, sizeof(tcp_target), "%s", listen);
    start_daemon("--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                   "--listen", listen, NULL);
    snprintf(token_path, sizeof(token_path), "%s/listen-token", d.state);
}

/* "Bearer <the token in path>" into out. */
static void bearer_of(const char *path, char *out, size_t len)
{
    char tok[300] = "";
    FILE *f = fopen(path, "r");

    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_not_null(fgets(tok, sizeof(tok), f));
    fclose(f);
    tok[strcspn(tok, "\n")] = '\0';
    snprintf(out, len, "Bearer %s", tok);
}

/* With --listen every call over TCP needs the token; the unix socket does not. */
Test(chaos, tcp_calls_need_the_bearer_token)
{
    char right[320];
    struct stat st;

    start_tcp();
    cr_assert_eq(stat(token_path, &st), 0, "no token file at %s", token_path);
    cr_expect_eq(st.st_mode & 0777, 0600, "token file mode %o", st.st_mode & 0777);
    cr_expect_eq(st.st_uid, geteuid());
    bearer_of(token_path, right, sizeof(right));
    cr_expect_geq(strlen(right), strlen("Bearer ") + 32, "128 random bits are 32 hex digits");

    test_call_opts_t none = {.target = tcp_target};
    test_call_opts_t wrong = {.target = tcp_target, .bearer = "Bearer 0123456789abcdef0123456789abcdef"};
    test_call_opts_t ok = {.target = tcp_target, .bearer = right};
    uint64_t slice;
    test_call_result_t r = test_call_ping(&none);
    TEST_EXPECT_STATUS(r, GRPC_STATUS_UNAUTHENTICATED, PINPOOL_EPERM, "no bearer token");
    r = test_call_ping(&wrong);
    TEST_EXPECT_STATUS(r, GRPC_STATUS_UNAUTHENTICATED, PINPOOL_EPERM, "wrong bearer token");
    r = test_call_alloc(&none, "tcp-thief", MiB, &slice);
    TEST_EXPECT_STATUS(r, GRPC_STATUS_UNAUTHENTICATED, PINPOOL_EPERM, "bearer token");
    r = test_call_info(&wrong, NULL);
    TEST_EXPECT_STATUS(r, GRPC_STATUS_UNAUTHENTICATED, PINPOOL_EPERM, "bearer token");
    cr_expect_eq(test_call_used(NULL), 0);

    r = test_call_ping(&ok);
    cr_expect_eq(r.status, GRPC_STATUS_OK, "%s", r.details);
    r = test_call_alloc(&ok, "tcp-job", MiB, &slice);
    cr_expect_eq(r.status, GRPC_STATUS_OK, "%s", r.details);
    r = test_call_ping(NULL); /* the unix socket: no token */
    cr_expect_eq(r.status, GRPC_STATUS_OK, "%s", r.details);
    r = test_call_free("tcp-job", 0);
    cr_expect_eq(r.status, GRPC_STATUS_OK, "%s", r.details);

    /* `pinpool info` over TCP: refused without the token, shown with it. */
    char out[8192];
    int rc = test_pinpool(out, sizeof(out), "info --socket tcp:%s", tcp_target);
    cr_expect_neq(rc, 0, "%s", out);
    TEST_EXPECT_IN(out, "bearer token");
    rc = test_pinpool(out, sizeof(out), "info --socket tcp:%s --token-file %s", tcp_target,
                      token_path);
    cr_expect_eq(rc, 0, "%s", out);
    TEST_EXPECT_IN(out, "capacity");
}

/* Another local user reaches the port but not the token file: nothing. */
static int other_user_calls_tcp(void *arg)
{
    (void)arg;
    int bad = 0;
    if (open(token_path, O_RDONLY) >= 0 || errno != EACCES) {
        fprintf(stderr, "another user could open %s\n", token_path);
        bad |= 1;
    }
    test_call_opts_t none = {.target = tcp_target};
    uint64_t slice;
    if (test_call_ping(&none).status != GRPC_STATUS_UNAUTHENTICATED)
        bad |= 2;
    if (test_call_info(&none, NULL).status != GRPC_STATUS_UNAUTHENTICATED)
        bad |= 4;
    if (test_call_alloc(&none, "neighbour", 8 * MiB, &slice).status != GRPC_STATUS_UNAUTHENTICATED)
        bad |= 8;
    if (test_call_free("tcp-victim", 0).status == GRPC_STATUS_OK) /* the unix socket: not reachable */
        bad |= 16;
    return bad;
}

Test(chaos, another_user_over_tcp_without_the_token_file_gets_nothing)
{
    test_users_t u;
    char why[256];

    if (!test_users_get(&u, why, sizeof(why)))
        cr_skip_test("%s", why);
    start_tcp(); /* before any gRPC here: the child must not inherit it */
    int rc = test_run_as(&u.a, false, u.shared, other_user_calls_tcp, NULL);
    cr_expect_eq(rc, 0, "as %s: %s%s%s%s%s", u.a.name, rc & 1 ? "read the token file; " : "",
                 rc & 2 ? "Ping answered; " : "", rc & 4 ? "GetPoolInfo answered; " : "",
                 rc & 8 ? "allocated; " : "", rc & 16 ? "freed over the unix socket" : "");
    cr_expect_eq(test_call_used(NULL), 0);
}

/* The daemon refuses a token file that others may read or that is not its own. */
Test(chaos, a_token_file_others_could_read_or_change_is_refused)
{
    char dir[] = "/tmp/pinpool-tok-XXXXXX", path[128], listen[64], out[4096];
    test_users_t u;
    char why[256];

    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/token", dir);
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", mc_free_port());
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "0123456789abcdef0123456789abcdef\n");
    fclose(f);
    chmod(path, 0644);
    int rc = test_pinpool(out, sizeof(out), "serve --socket %s/s.sock --state-dir %s/st "
                          "--mem-pool-size 16MiB --listen %s --listen-token-file %s", dir, dir,
                          listen, path);
    cr_expect_neq(rc, 0);
    TEST_EXPECT_IN(out, "0644");
    TEST_EXPECT_IN(out, "chmod 600");
    if (test_users_get(&u, why, sizeof(why))) {
        chmod(path, 0600);
        cr_assert_eq(chown(path, u.a.uid, u.a.gid), 0);
        rc = test_pinpool(out, sizeof(out), "serve --socket %s/s.sock --state-dir %s/st "
                          "--mem-pool-size 16MiB --listen %s --listen-token-file %s", dir, dir,
                          listen, path);
        cr_expect_neq(rc, 0);
        TEST_EXPECT_IN(out, "belongs to uid");
    }
    unlink(path);
    char link[160];
    snprintf(link, sizeof(link), "%s/link", dir);
    cr_assert_eq(symlink("/etc/hostname", link), 0);
    rc = test_pinpool(out, sizeof(out), "serve --socket %s/s.sock --state-dir %s/st "
                      "--mem-pool-size 16MiB --listen %s --listen-token-file %s", dir, dir,
                      listen, link);
    cr_expect_neq(rc, 0);
    TEST_EXPECT_IN(out, "symbolic link");
    test_rm_rf(dir);
}

/* ---- a control plane that never waits -------------------------------------------------- */

/* The stand-in driver (vmm backend) whose cuMemCreate waits while the gate
 * file exists: the daemon's first chunk is made, the others wait. */
static void use_gate(void)
{
    const char *build = getenv("PINPOOL_BUILD");
    char dir[512], lib[600];

    snprintf(dir, sizeof(dir), "%s/mockcuda", build != NULL ? build : "build");
    snprintf(lib, sizeof(lib), "%s/libcuda.so.1", dir);
    if (access(lib, R_OK) != 0)
        cr_skip_test("no stand-in driver at %s (built only where cuda.h is)", lib);
    char *abs = realpath(dir, NULL);
    cr_assert_not_null(abs);
    setenv("LD_LIBRARY_PATH", abs, 1);
    free(abs);
    snprintf(gate, sizeof(gate), "/tmp/pinpool-gate-%d", (int)getpid());
    int fd = open(gate, O_CREAT | O_WRONLY, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    setenv("PINPOOL_MOCK_CREATE_GATE", gate, 1);
}

static void open_gate(void)
{
    unlink(gate);
}

/* Start a daemon whose pinning is held: 256 MiB of 16 MiB chunks, one made. */
static void start_pinning(const char *extra1, const char *extra2)
{
    use_gate();
    start_daemon("--mem-pool-size", "256MiB", "--chunk-size", "16MiB",
                                   "--host-backend", "vmm", "--pin-threads", "1",
                                   extra1, extra2, NULL);
}

/* After open_gate: until every chunk is made (20 s at most). */
static void wait_pool_ready(void)
{
    for (double t0 = test_now_s(); test_now_s() - t0 < 20; usleep(50000)) {
        Pinpool__V1__GetPoolInfoResponse *pi;
        test_call_info(NULL, &pi);
        cr_assert_not_null(pi);
        bool ready = pi->ready_bytes == pi->capacity_bytes;
        pinpool__v1__get_pool_info_response__free_unpacked(pi, NULL);
        if (ready)
            return;
    }
    cr_assert_fail("the pool was not made within 20 s of opening the gate");
}

typedef struct parked {
    char client[32];
    uint64_t size;
    test_call_result_t r;
    uint64_t slice;
} parked_t;

static void *park(void *arg)
{
    parked_t *p = arg;

    p->r = test_call_alloc(NULL, p->client, p->size, &p->slice);
    return NULL;
}

/* Ping, Free and GetPoolInfo of others within a second or two, n times. */
static void expect_control_plane_answers(int n, const char *while_what)
{
    test_call_opts_t quick = {.deadline_ms = 5000};
    uint64_t slice;

    for (int i = 0; i < n; i++) {
        test_call_result_t r = test_call_ping(&quick);
        cr_expect_eq(r.status, GRPC_STATUS_OK, "Ping while %s: %s", while_what, r.details);
        cr_expect_lt(r.secs, 2.0, "Ping took %.2f s while %s", r.secs, while_what);
        r = test_call_info(&quick, NULL);
        cr_expect_eq(r.status, GRPC_STATUS_OK, "GetPoolInfo while %s: %s", while_what, r.details);
        cr_expect_lt(r.secs, 2.0, "GetPoolInfo took %.2f s while %s", r.secs, while_what);
        r = test_call_alloc(&quick, "bystander", 4096, &slice); /* fits in the ready chunk */
        cr_expect_eq(r.status, GRPC_STATUS_OK, "a small alloc while %s: %s", while_what,
                     r.details);
        r = test_call_free("bystander", slice);
        cr_expect_eq(r.status, GRPC_STATUS_OK, "Free while %s: %s", while_what, r.details);
        cr_expect_lt(r.secs, 2.0, "Free took %.2f s while %s", r.secs, while_what);
    }
}

/* Two gRPC threads used to wait inside 2 allocations for pinning: Ping then
 * waited as long (1.84 s; here forever, the pinning being held). */
Test(chaos, ping_free_and_info_answer_while_allocations_wait_for_pinning)
{
    parked_t p[8];
    pthread_t th[8];

    start_pinning(NULL, NULL);
    for (int i = 0; i < 8; i++) {
        snprintf(p[i].client, sizeof(p[i].client), "parked-%d", i);
        p[i].size = 24 * MiB; /* more than the one chunk made */
        cr_assert_eq(pthread_create(&th[i], NULL, park, &p[i]), 0);
    }
    usleep(500000);
    expect_control_plane_answers(10, "8 allocations wait for pinning");
    Pinpool__V1__GetPoolInfoResponse *pi;
    test_call_info(NULL, &pi);
    cr_assert_not_null(pi);
    cr_expect_eq(pi->ready_bytes, 16 * MiB, "pinning went on: the test proves nothing");
    pinpool__v1__get_pool_info_response__free_unpacked(pi, NULL);
    open_gate();
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        cr_expect_eq(p[i].r.status, GRPC_STATUS_OK, "allocation %d: %s", i, p[i].r.details);
        test_call_free(p[i].client, 0);
    }
}

/* An allocation whose caller gives up (deadline, cancel) while it waits for
 * pinning: once it is made, it is freed; nothing is left allocated. */
Test(chaos, an_allocation_whose_caller_gave_up_leaves_nothing_behind)
{
    uint32_t clients = 0;

    start_pinning(NULL, NULL);
    test_call_opts_t late = {.deadline_ms = 1000};
    test_call_result_t r = test_call_alloc(&late, "gave-up", 32 * MiB, NULL);
    cr_expect_eq(r.status, GRPC_STATUS_DEADLINE_EXCEEDED, "%s", r.details);
    test_call_opts_t cancel = {.cancel_after_ms = 500};
    r = test_call_alloc(&cancel, "cancelled", 48 * MiB, NULL);
    cr_expect_eq(r.status, GRPC_STATUS_CANCELLED, "%s", r.details);
    open_gate();
    wait_pool_ready();
    usleep(300000); /* the workers' allocations, then their undo */
    uint64_t used = test_call_used(&clients);
    cr_expect_eq(used, 0, "%" PRIu64 " bytes are still allocated for callers that gave up",
                 used);
    cr_expect_eq(clients, 0, "a client is left");
    if (used != 0) { /* let the teardown's check pass once this test failed */
        test_call_free("gave-up", 0);
        test_call_free("cancelled", 0);
    }
}

/* While the pool is still being made, an allocation that does not fit waits
 * for the chunks on their way rather than spill a released object to make
 * room that is coming anyway (a spill writes data out and must be read back). */
Test(chaos, an_allocation_waits_for_chunks_being_made_before_it_spills, .timeout = 60)
{
    uint64_t holder;
    parked_t p = {.client = "later", .size = 12 * MiB};
    pthread_t th;

    start_pinning("--spill-low-watermark", "0"); /* chunk 0 (16 MiB) made, a file tier */
    test_call_result_t r = test_call_alloc(NULL, "holder", 12 * MiB, &holder);
    cr_assert_eq(r.status, GRPC_STATUS_OK, "%s", r.details);
    Pinpool__V1__ReleasePoolMemoryRequest rel = PINPOOL__V1__RELEASE_POOL_MEMORY_REQUEST__INIT;
    rel.client_id = "holder";
    rel.slice_id = holder;
    rel.key = "cold";
    r = test_call_msg(NULL, METHOD("ReleasePoolMemory"), &rel.base);
    cr_assert_eq(r.status, GRPC_STATUS_OK, "%s", r.details);
    free(r.reply);
    cr_assert_eq(pthread_create(&th, NULL, park, &p), 0); /* 12 MiB: 4 MiB are free */
    usleep(1000000);
    Pinpool__V1__GetPoolInfoResponse *pi;
    test_call_info(NULL, &pi);
    cr_assert_not_null(pi);
    cr_expect_eq(pi->spill->spills, 0, "a released object was spilled while chunks were coming");
    cr_expect_eq(pi->spill->objects_resident, 1);
    pinpool__v1__get_pool_info_response__free_unpacked(pi, NULL);
    open_gate();
    pthread_join(th, NULL);
    cr_expect_eq(p.r.status, GRPC_STATUS_OK, "%s", p.r.details);
    test_call_info(NULL, &pi);
    cr_assert_not_null(pi);
    cr_expect_eq(pi->spill->spills, 0, "the allocation got a new chunk, not a spill");
    pinpool__v1__get_pool_info_response__free_unpacked(pi, NULL);
    Pinpool__V1__RemoveRequest rm = PINPOOL__V1__REMOVE_REQUEST__INIT;
    rm.key = "cold";
    free(test_call_msg(NULL, METHOD("Remove"), &rm.base).reply);
    test_call_free("later", 0);
}

/* An acquire whose restore waits for room (a 20 MiB object spilled by the
 * daemon before this one; this one's pinning is held after its first 16 MiB
 * chunk) and whose caller gives up: once the room is made, the worker restores
 * it and hands it over, the reply cannot be delivered, and the undo releases
 * the object again under its key, whole; nobody holds a slice it never heard of. */
Test(chaos, an_acquire_whose_caller_gave_up_releases_the_object_again, .timeout = 120)
{
    uint64_t holder;

    start_daemon("--mem-pool-size", "64MiB", "--chunk-size", "16MiB", NULL); /* a file tier */
    test_call_result_t r = test_call_alloc(NULL, "holder", 20 * MiB, &holder);
    cr_assert_eq(r.status, GRPC_STATUS_OK, "%s", r.details);
    Pinpool__V1__ReleasePoolMemoryRequest rel = PINPOOL__V1__RELEASE_POOL_MEMORY_REQUEST__INIT;
    rel.client_id = "holder";
    rel.slice_id = holder;
    rel.key = "obj";
    r = test_call_msg(NULL, METHOD("ReleasePoolMemory"), &rel.base);
    cr_assert_eq(r.status, GRPC_STATUS_OK, "%s", r.details);
    free(r.reply);
    cr_assert_eq(test_daemon_kill(&d, SIGTERM), 0); /* "obj" is persisted to the tier */
    use_gate();
    cr_assert_eq(test_daemon_restart(&d, "--mem-pool-size", "256MiB", "--chunk-size", "16MiB",
                                     "--host-backend", "vmm", "--pin-threads", "1", NULL), 0);

    Pinpool__V1__AcquirePoolMemoryRequest acq = PINPOOL__V1__ACQUIRE_POOL_MEMORY_REQUEST__INIT;
    acq.client_id = "impatient";
    acq.key = "obj";
    test_call_opts_t late = {.deadline_ms = 1000};
    r = test_call_msg(&late, METHOD("AcquirePoolMemory"), &acq.base);
    cr_expect_eq(r.status, GRPC_STATUS_DEADLINE_EXCEEDED, "%s", r.details);
    free(r.reply);
    open_gate();
    wait_pool_ready();
    /* Back: restored once, resident again under its key, and held by nobody. */
    bool back = false;
    uint32_t clients = 0;
    uint64_t restores = 0, objects = 0, resident = 0;
    for (double t0 = test_now_s(); !back && test_now_s() - t0 < 30; usleep(100000)) {
        Pinpool__V1__GetPoolInfoResponse *pi;
        test_call_info(NULL, &pi);
        cr_assert_not_null(pi);
        test_call_used(&clients);
        restores = pi->spill->restores;
        objects = pi->spill->objects;
        resident = pi->spill->objects_resident;
        back = restores == 1 && objects == 1 && resident == 1 && clients == 0;
        pinpool__v1__get_pool_info_response__free_unpacked(pi, NULL);
    }
    if (!back)
        test_daemon_dump_log(&d);
    cr_expect(back, "the acquired object did not come back: %" PRIu64 " restores, %" PRIu64
              " objects (%" PRIu64 " resident), %u clients", restores, objects, resident, clients);
    Pinpool__V1__GetRequest g = PINPOOL__V1__GET_REQUEST__INIT;
    g.key = "obj";
    r = test_call_msg(NULL, METHOD("Get"), &g.base);
    cr_expect_eq(r.status, GRPC_STATUS_OK, "%s", r.details);
    Pinpool__V1__GetResponse *gr = pinpool__v1__get_response__unpack(NULL, r.reply_len, r.reply);
    cr_expect(gr != NULL && gr->data.len == 20 * MiB);
    if (gr != NULL)
        pinpool__v1__get_response__free_unpacked(gr, NULL);
    free(r.reply);
    Pinpool__V1__RemoveRequest rm = PINPOOL__V1__REMOVE_REQUEST__INIT;
    rm.key = "obj";
    free(test_call_msg(NULL, METHOD("Remove"), &rm.base).reply);
    test_call_free("impatient", 0);
}

/* More waiting calls than workers and queue: the next one is refused at once
 * with the numbers; every other call still answers. */
Test(chaos, a_full_worker_pool_refuses_with_the_numbers)
{
    parked_t p[3];
    pthread_t th[3];

    start_pinning("--rpc-workers=2", "--rpc-queue=1");
    for (int i = 0; i < 3; i++) {
        snprintf(p[i].client, sizeof(p[i].client), "parked-%d", i);
        p[i].size = 32 * MiB;
        cr_assert_eq(pthread_create(&th[i], NULL, park, &p[i]), 0);
    }
    usleep(700000);
    test_call_result_t r = test_call_alloc(NULL, "one-too-many", 32 * MiB, NULL);
    TEST_EXPECT_STATUS(r, GRPC_STATUS_RESOURCE_EXHAUSTED, -EAGAIN, "--rpc-workers 2, --rpc-queue 1");
    cr_expect_lt(r.secs, 2.0);
    expect_control_plane_answers(2, "the worker pool is full");
    open_gate();
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        cr_expect_eq(p[i].r.status, GRPC_STATUS_OK, "allocation %d: %s", i, p[i].r.details);
        test_call_free(p[i].client, 0);
    }
}

/* A Mooncake tier whose segment process is stopped: allocations that need
 * room wait in spills (up to the tier's timeout); Ping, another client's Free
 * and GetPoolInfo (the tier's statistics come from a snapshot) do not. */
Test(chaos, ping_free_and_info_answer_while_allocations_wait_for_a_stalled_tier, .timeout = 200)
{
    parked_t p[8];
    pthread_t th[8];
    pinpool_slice_t s;

    mc_start_cluster("1000", "");
    start_daemon("--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   "--spill-tier", mc.uri, "--spill-low-watermark", "0", NULL);
    pinpool_ctx_t *ctx = test_connect(&d);
    for (int i = 0; i < 3; i++) { /* 48 of 64 MiB released: allocations must spill */
        char key[16];
        snprintf(key, sizeof(key), "cold-%d", i);
        cr_assert_eq(pinpool_alloc(ctx, 16 * MiB, NULL, &s), 0, "%s", pinpool_errmsg(ctx));
        cr_assert_eq(pinpool_release(ctx, s.id, key, 0), 0, "%s", pinpool_errmsg(ctx));
    }
    cr_assert_eq(kill(mc.client, SIGSTOP), 0);
    for (int i = 0; i < 8; i++) {
        snprintf(p[i].client, sizeof(p[i].client), "needs-room-%d", i);
        p[i].size = 20 * MiB; /* more than the 16 MiB left: each needs a spill */
        cr_assert_eq(pthread_create(&th[i], NULL, park, &p[i]), 0);
    }
    usleep(1500000);
    expect_control_plane_answers(5, "8 allocations wait for a stalled tier");
    kill(mc.client, SIGCONT);
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        test_call_free(p[i].client, 0);
    }
    for (int i = 0; i < 3; i++) {
        char key[16];
        snprintf(key, sizeof(key), "cold-%d", i);
        pinpool_remove(ctx, key);
    }
    pinpool_close(ctx);
}

/* ---- heap exhaustion ------------------------------------------------------------------ */

/* Small Puts until the daemon's heap nears RLIMIT_DATA: they are refused with
 * RESOURCE_EXHAUSTED naming the limit (before: INTERNAL, "cannot decode", or
 * an abort in libev or gRPC), everything else keeps serving, and once objects
 * are removed Puts work again. */
Test(chaos, heap_exhaustion_answers_resource_exhausted_and_keeps_serving, .timeout = 180)
{
    enum { BATCH = 256, MAX_BATCHES = 2000 };
    Pinpool__V1__PutRequest items[BATCH], *refs[BATCH];
    char keys[BATCH][16];
    uint8_t byte = 'x';
    int batches = 0;
    test_call_result_t r = {0};
    const char *san = getenv("PINPOOL_TEST_SANITIZE");

    if (san != NULL && san[0] != '\0') /* their shadow memory counts against RLIMIT_DATA */
        cr_skip_test("a %s build's allocator maps its own memory: no RLIMIT_DATA test", san);
    start_daemon("--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   "--spill-tier", "none", NULL);
    struct rlimit rl;
    rl.rlim_cur = rl.rlim_max = test_proc_status(d.pid, "VmData:") + 64 * MiB;
    cr_assert_eq(prlimit(d.pid, RLIMIT_DATA, &rl, NULL), 0, "%s", strerror(errno));

    for (; batches < MAX_BATCHES; batches++) {
        Pinpool__V1__BatchPutRequest req = PINPOOL__V1__BATCH_PUT_REQUEST__INIT;
        for (int i = 0; i < BATCH; i++) {
            pinpool__v1__put_request__init(&items[i]);
            snprintf(keys[i], sizeof(keys[i]), "h%d.%d", batches, i);
            items[i].key = keys[i];
            items[i].data.data = &byte;
            items[i].data.len = 1;
            refs[i] = &items[i];
        }
        req.items = refs;
        req.n_items = BATCH;
        r = test_call_msg(NULL, METHOD("BatchPut"), &req.base);
        if (r.status != GRPC_STATUS_OK)
            break;
        Pinpool__V1__BatchResponse *b = pinpool__v1__batch_response__unpack(NULL, r.reply_len,
                                                                           r.reply);
        free(r.reply);
        cr_assert_not_null(b);
        int failed = 0;
        for (size_t i = 0; i < b->n_results; i++)
            if (b->results[i]->code != 0) {
                cr_expect_eq(b->results[i]->code, -ENOMEM, "item %zu: %s: %s", i,
                             pinpool_err_name(b->results[i]->code), b->results[i]->message);
                failed++;
            }
        pinpool__v1__batch_response__free_unpacked(b, NULL);
        if (failed)
            break;
    }
    cr_assert_lt(batches, MAX_BATCHES, "%d x %d Puts and the heap did not run short", batches,
                 BATCH);
    if (r.status != GRPC_STATUS_OK)
        TEST_EXPECT_STATUS(r, GRPC_STATUS_RESOURCE_EXHAUSTED, -ENOMEM, "RLIMIT_DATA");
    cr_log_info("refused after %d x %d Puts: %s", batches, BATCH, r.details);

    /* Still serving: Ping, GetPoolInfo, and the calls that free memory. */
    cr_expect_eq(kill(d.pid, 0), 0, "the daemon died");
    r = test_call_ping(NULL);
    cr_expect_eq(r.status, GRPC_STATUS_OK, "Ping: %s", r.details);
    r = test_call_info(NULL, NULL);
    cr_expect_eq(r.status, GRPC_STATUS_OK, "GetPoolInfo: %s", r.details);
    for (int k = 0; k <= batches && k < MAX_BATCHES; k++) {
        Pinpool__V1__BatchKeysRequest rm = PINPOOL__V1__BATCH_KEYS_REQUEST__INIT;
        char *kp[BATCH];
        for (int i = 0; i < BATCH; i++) {
            snprintf(keys[i], sizeof(keys[i]), "h%d.%d", k, i);
            kp[i] = keys[i];
        }
        rm.keys = kp;
        rm.n_keys = BATCH;
        r = test_call_msg(NULL, METHOD("BatchRemove"), &rm.base);
        cr_assert_eq(r.status, GRPC_STATUS_OK, "BatchRemove %d: %s", k, r.details);
        free(r.reply);
    }
    cr_expect_eq(test_call_used(NULL), 0);
    /* Memory is back: a Put works again. */
    Pinpool__V1__PutRequest p = PINPOOL__V1__PUT_REQUEST__INIT;
    p.key = "after";
    p.data.data = &byte;
    p.data.len = 1;
    bool stored = false;
    for (int i = 0; i < 50 && !stored; i++) { /* the reserve comes back within 50 ms */
        r = test_call_msg(NULL, METHOD("Put"), &p.base);
        stored = r.status == GRPC_STATUS_OK;
        free(r.reply);
        if (!stored)
            usleep(100000);
    }
    cr_expect(stored, "a Put after removing everything: %s", r.details);
    Pinpool__V1__RemoveRequest rm1 = PINPOOL__V1__REMOVE_REQUEST__INIT;
    rm1.key = "after";
    free(test_call_msg(NULL, METHOD("Remove"), &rm1.base).reply);
}
