/*
 * test_daemon.c - integration tests: the real daemon on a temp socket, real
 * client processes.  Every test ends with the pool back at zero bytes in use
 * and the daemon exiting 0 on SIGTERM (the suite's fini).
 *
 * gRPC must not be initialised in a process that then forks children which
 * use it, so tests fork their client processes before the parent connects.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <grpc/status.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cudaload.h"
#include "daemon.h"
#include "internal.h"
#include "ipc.h"
#include "paths.h"
#include "pinpool.h"
#include "util.h"
#include "pinpool.pb-c.h"

#define MiB (1024ull * 1024)
#define METHOD(name) "/pinpool.v1.PinPool/" name

TEST_DAEMON_SUITE(daemon);

/* ---- raw gRPC calls: the status codes on the wire ---------------------------------- */

typedef struct raw_result {
    int code;   /* pinpool code */
    int status; /* gRPC status */
    char msg[512];
    uint64_t slice_id;
} raw_result_t;

/* The token raw calls carry (a raw session's, from its HELLO), "" for none. */
static char raw_token[64];

/* One call of method on a connection of its own that carries raw_token; *resp
 * (NULL on failure) is the caller's to free. */
static raw_result_t raw_call(const char *method, const ProtobufCMessage *req,
                             const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp)
{
    pinpool__rpc_t *rpc;
    raw_result_t r = {0};

    cr_assert_eq(pinpool__rpc_open(&rpc, d.socket), 0);
    pinpool__rpc_set_token(rpc, raw_token);
    r.code = pinpool__rpc_call(rpc, method, req, resp_desc, resp, &r.status, r.msg, sizeof(r.msg));
    pinpool__rpc_close(rpc);
    return r;
}

static raw_result_t raw_alloc(const char *client, int32_t device, uint64_t size, uint64_t align)
{
    Pinpool__V1__AllocatePoolMemoryRequest req = PINPOOL__V1__ALLOCATE_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__AllocatePoolMemoryResponse *resp = NULL;

    req.client_id = (char *)client;
    req.device_id = device;
    req.size_bytes = size;
    req.alignment = align;
    raw_result_t r = raw_call(METHOD("AllocatePoolMemory"), &req.base,
                              &pinpool__v1__allocate_pool_memory_response__descriptor,
                              (ProtobufCMessage **)&resp);
    if (r.code == 0) {
        r.slice_id = resp->slice_id;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return r;
}

static raw_result_t raw_free(const char *client, uint64_t slice)
{
    Pinpool__V1__FreePoolMemoryRequest req = PINPOOL__V1__FREE_POOL_MEMORY_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;

    req.client_id = (char *)client;
    req.slice_id = slice;
    raw_result_t r = raw_call(METHOD("FreePoolMemory"), &req.base,
                              &pinpool__v1__free_pool_memory_response__descriptor, &resp);
    if (resp != NULL)
        protobuf_c_message_free_unpacked(resp, NULL);
    return r;
}

#define expect_error(r, st, c, text)                                                         \
    do {                                                                                     \
        cr_expect_eq((r).status, (st), "gRPC status %d, want %d (%s)", (r).status, (st),     \
                     (r).msg);                                                               \
        cr_expect_eq((r).code, (c), "pinpool code %s, want %s", pinpool_err_name((r).code),  \
                     pinpool_err_name(c));                                                   \
        cr_expect(strstr((r).msg, (text)) != NULL, "message '%s' lacks '%s'", (r).msg, text); \
    } while (0)

Test(daemon, bad_inputs_get_exact_status_codes)
{
    raw_result_t r;

    r = raw_alloc("job", -1, 0, 0);
    expect_error(r, GRPC_STATUS_INVALID_ARGUMENT, PINPOOL_EINVAL, "greater than 0");
    r = raw_alloc("job", -1, 65 * MiB, 0);
    expect_error(r, GRPC_STATUS_INVALID_ARGUMENT, PINPOOL_ETOOBIG, "the whole pool is 64.00 MiB");
    r = raw_alloc("job", -1, MiB, 3);
    expect_error(r, GRPC_STATUS_INVALID_ARGUMENT, PINPOOL_EALIGN, "power of two");
    r = raw_alloc("job", -1, MiB, 32 * MiB);
    expect_error(r, GRPC_STATUS_INVALID_ARGUMENT, PINPOOL_EALIGN, "chunk size (16.00 MiB)");
    r = raw_alloc("job", 7, MiB, 0);
    expect_error(r, GRPC_STATUS_INVALID_ARGUMENT, PINPOOL_ENODEV, "device 7");
    r = raw_alloc("", -1, MiB, 0);
    expect_error(r, GRPC_STATUS_INVALID_ARGUMENT, PINPOOL_EINVAL, "client_id");
    r = raw_alloc("s-1-0123abcd", -1, MiB, 0);
    expect_error(r, GRPC_STATUS_PERMISSION_DENIED, PINPOOL_EPERM, "session that has ended");

    /* Full pool: the message says how much is left. */
    raw_result_t filler = raw_alloc("filler", -1, 63 * MiB, 0);
    cr_assert_eq(filler.code, 0, "%s", filler.msg);
    r = raw_alloc("job", -1, 2 * MiB, 0);
    expect_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED, PINPOOL_ENOSPC,
                 "the largest free extent is 1.00 MiB (1.00 MiB free of 64.00 MiB)");

    r = raw_free("job", 999999);
    expect_error(r, GRPC_STATUS_NOT_FOUND, PINPOOL_ENOENT, "no slice 999999");
    r = raw_free("thief", filler.slice_id);
    expect_error(r, GRPC_STATUS_PERMISSION_DENIED, PINPOOL_EPERM, "another client");
    r = raw_free("filler", filler.slice_id);
    cr_expect_eq(r.code, 0, "%s", r.msg);
    cr_expect_eq(test_daemon_used(&d), 0);
}

Test(daemon, unknown_method_is_unimplemented_at_once)
{
    Pinpool__V1__PingRequest req = PINPOOL__V1__PING_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    double t0 = test_now_s();

    raw_result_t r = raw_call("/pinpool.v1.PinPool/NoSuchMethod", &req.base,
                              &pinpool__v1__ping_response__descriptor, &resp);
    cr_expect_eq(r.status, GRPC_STATUS_UNIMPLEMENTED, "status %d: %s", r.status, r.msg);
    cr_expect_lt(test_now_s() - t0, 2.0);
}

Test(daemon, detached_client_frees_everything_with_slice_zero)
{
    raw_result_t a = raw_alloc("batch-job", -1, 3 * MiB, 0);
    raw_result_t b = raw_alloc("batch-job", -1, 5 * MiB, 0);

    cr_assert_eq(a.code, 0, "%s", a.msg);
    cr_assert_eq(b.code, 0, "%s", b.msg);
    cr_expect_eq(test_daemon_used(&d), 8 * MiB);
    raw_result_t f = raw_free("batch-job", 0);
    cr_expect_eq(f.code, 0, "%s", f.msg);
    cr_expect_eq(test_daemon_used(&d), 0);
}

/* ---- the client library ---------------------------------------------------------------- */

Test(daemon, alloc_write_free_through_the_library)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_slice_t s[3];
    uint64_t sizes[3] = {4096, 3 * MiB + 17, 16 * MiB};

    for (int i = 0; i < 3; i++) {
        cr_assert_eq(pinpool_alloc(ctx, sizes[i], NULL, &s[i]), 0, "%s", pinpool_errmsg(ctx));
        cr_expect_eq(s[i].size, sizes[i]);
        cr_expect_eq(s[i].device_id, PINPOOL_HOST);
        cr_expect_eq((uintptr_t)s[i].ptr % 256, 0);
        memset(s[i].ptr, 0x40 + i, sizes[i]);
    }
    for (int i = 0; i < 3; i++)
        for (uint64_t j = 0; j < sizes[i]; j += 4093)
            cr_assert_eq(((unsigned char *)s[i].ptr)[j], 0x40 + i);
    cr_expect_gt(test_daemon_used(&d), 0);
    for (int i = 0; i < 3; i++) {
        uint64_t freed = 0;
        cr_expect_eq(pinpool_free(ctx, s[i].id, &freed), 0, "%s", pinpool_errmsg(ctx));
        cr_expect_geq(freed, sizes[i]);
    }
    cr_expect_eq(pinpool_free(ctx, s[0].id, NULL), PINPOOL_ENOENT);
    cr_expect(strstr(pinpool_errmsg(ctx), "not one of this context's") != NULL);
    pinpool_close(ctx);
}

Test(daemon, library_reports_errors_with_messages)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_slice_t s;
    pinpool_alloc_opts_t opts = {.device_id = PINPOOL_HOST, .alignment = 5};

    cr_expect_eq(pinpool_alloc(ctx, 0, NULL, &s), PINPOOL_EINVAL);
    cr_expect(strstr(pinpool_errmsg(ctx), "greater than 0") != NULL, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_alloc(ctx, 1 << 20, &opts, &s), PINPOOL_EALIGN);
    cr_expect_eq(pinpool_alloc(ctx, 1ull << 40, NULL, &s), PINPOOL_ETOOBIG);
    cr_expect(strstr(pinpool_errmsg(ctx), "1.00 TiB") != NULL, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(test_daemon_used(&d), 0);
    pinpool_close(ctx);
}

Test(daemon, slice_larger_than_a_chunk_is_contiguous)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_slice_t s;
    uint64_t size = 40 * MiB;

    cr_assert_eq(pinpool_alloc(ctx, size, NULL, &s), 0, "%s", pinpool_errmsg(ctx));
    uint64_t *p = s.ptr;
    for (uint64_t i = 0; i < size / 8; i++)
        p[i] = i * 0x9e3779b97f4a7c15ull;
    for (uint64_t i = 0; i < size / 8; i++)
        if (p[i] != i * 0x9e3779b97f4a7c15ull)
            cr_assert_fail("word %" PRIu64 " differs", i);
    cr_expect_eq(s.start_offset % (16 * MiB), 0, "a multi-chunk slice starts on a chunk");
    cr_expect_eq(pinpool_free(ctx, s.id, NULL), 0);
    pinpool_close(ctx);
}

/* Lines of /proc/self/maps that map a pool chunk. */
static int chunk_mappings(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int n = 0;

    while (fgets(line, sizeof(line), f) != NULL)
        if (strstr(line, "pinpool-chunk") != NULL)
            n++;
    fclose(f);
    return n;
}

Test(daemon, chunk_mapping_is_shared_and_dropped_with_the_last_slice)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_slice_t a, b;

    cr_assert_eq(pinpool_alloc(ctx, MiB, NULL, &a), 0);
    cr_assert_eq(pinpool_alloc(ctx, MiB, NULL, &b), 0);
    cr_expect_eq(chunk_mappings(), 1, "two slices of one chunk share one mapping");
    cr_expect_eq(pinpool_free(ctx, a.id, NULL), 0);
    cr_expect_eq(chunk_mappings(), 1);
    cr_expect_eq(pinpool_free(ctx, b.id, NULL), 0);
    cr_expect_eq(chunk_mappings(), 0, "the mapping goes with the last slice");
    pinpool_close(ctx);
}

Test(daemon, free_all_and_close_give_everything_back)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_slice_t s;
    uint64_t freed = 0;

    for (int i = 0; i < 5; i++)
        cr_assert_eq(pinpool_alloc(ctx, 2 * MiB, NULL, &s), 0);
    cr_expect_eq(pinpool_free_all(ctx, &freed), 0);
    cr_expect_eq(freed, 10 * MiB);
    cr_expect_eq(test_daemon_used(&d), 0);
    cr_expect_eq(chunk_mappings(), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(pinpool_alloc(ctx, 2 * MiB, NULL, &s), 0);
    pinpool_close(ctx); /* the lease ends: the daemon frees them */
    for (int i = 0; i < 100 && test_daemon_used(&d) != 0; i++)
        usleep(10000);
    cr_expect_eq(test_daemon_used(&d), 0);
}

Test(daemon, connect_without_daemon_says_why)
{
    pinpool_ctx_t *ctx = pinpool_connect("/tmp/pinpool-no-such-dir/pinpool.sock");
    pinpool_slice_t s;

    cr_assert_not_null(ctx);
    cr_expect_eq(pinpool_err(ctx), PINPOOL_ECONNECT);
    cr_expect(strstr(pinpool_errmsg(ctx), "pinpool serve") != NULL, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_alloc(ctx, 1, NULL, &s), PINPOOL_ECLOSED);
    pinpool_close(ctx);
}

typedef struct hammer {
    pinpool_ctx_t *ctx;
    int id, rounds, failures;
} hammer_t;

static void *hammer_thread(void *arg)
{
    hammer_t *h = arg;

    for (int i = 0; i < h->rounds; i++) {
        pinpool_slice_t s;
        uint64_t size = 4096 + (uint64_t)((h->id * 7919 + i * 104729) % (512 * 1024));
        if (pinpool_alloc(h->ctx, size, NULL, &s) != 0) {
            h->failures++;
            continue;
        }
        memset(s.ptr, h->id, size);
        for (uint64_t j = 0; j < size; j += 511)
            if (((unsigned char *)s.ptr)[j] != h->id)
                h->failures++;
        if (pinpool_free(h->ctx, s.id, NULL) != 0)
            h->failures++;
    }
    return NULL;
}

Test(daemon, one_context_many_threads)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    hammer_t h[4];

    for (int i = 0; i < 4; i++)
        h[i] = (hammer_t){.ctx = ctx, .id = i + 1, .rounds = 300};
    test_threads(4, hammer_thread, h, sizeof(h[0]));
    for (int i = 0; i < 4; i++)
        cr_expect_eq(h[i].failures, 0, "thread %d: %d failures", i, h[i].failures);
    cr_expect_eq(chunk_mappings(), 0);
    pinpool_close(ctx);
}

/* ---- several processes ------------------------------------------------------------------ */

typedef struct slice_note {
    uint64_t offset, size;
} slice_note_t;

/* A client process: 3 slices filled with its own byte; reports them on wfd,
 * waits for a byte on rfd (the other process has written by then), checks its
 * bytes, frees, exits 0 if all was well. */
static void child_client(const char *socket, int me, int wfd, int rfd)
{
    uint64_t sizes[3] = {MiB, 5 * MiB + 123, 9 * MiB};
    pinpool_slice_t s[3];
    pinpool_ctx_t *ctx = pinpool_connect(socket);
    char go;
    int bad = 0;

    if (pinpool_err(ctx) != 0)
        _exit(10);
    for (int i = 0; i < 3; i++) {
        if (pinpool_alloc(ctx, sizes[i], NULL, &s[i]) != 0)
            _exit(11);
        memset(s[i].ptr, 0xA0 + me, s[i].size);
        slice_note_t note = {s[i].start_offset, s[i].size};
        if (write(wfd, &note, sizeof(note)) != sizeof(note))
            _exit(12);
    }
    if (read(rfd, &go, 1) != 1)
        _exit(13);
    for (int i = 0; i < 3; i++)
        for (uint64_t j = 0; j < s[i].size; j++)
            if (((unsigned char *)s[i].ptr)[j] != 0xA0 + me)
                bad++;
    for (int i = 0; i < 3; i++)
        if (pinpool_free(ctx, s[i].id, NULL) != 0)
            bad++;
    pinpool_close(ctx);
    _exit(bad == 0 ? 0 : 14);
}

Test(daemon, two_processes_get_disjoint_slices)
{
    int up[2], down[2][2];
    pid_t pid[2];
    slice_note_t notes[6];

    cr_assert_eq(pipe(up), 0);
    for (int c = 0; c < 2; c++) {
        cr_assert_eq(pipe(down[c]), 0);
        pid[c] = fork();
        if (pid[c] == 0)
            child_client(d.socket, c, up[1], down[c][0]);
    }
    for (int i = 0; i < 6; i++)
        cr_assert_eq(read(up[0], &notes[i], sizeof(notes[i])), (ssize_t)sizeof(notes[i]));
    for (int i = 0; i < 6; i++)
        for (int j = i + 1; j < 6; j++)
            cr_expect(notes[i].offset + notes[i].size <= notes[j].offset ||
                          notes[j].offset + notes[j].size <= notes[i].offset,
                      "slices %d and %d overlap", i, j);
    cr_expect_geq(test_daemon_used(&d), 2 * (15 * MiB + 123));
    for (int c = 0; c < 2; c++)
        cr_assert_eq(write(down[c][1], "g", 1), 1);
    for (int c = 0; c < 2; c++) {
        int status;
        waitpid(pid[c], &status, 0);
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "client %d saw someone else's bytes or failed (status %d)", c, status);
    }
}

Test(daemon, killed_client_memory_returns_within_a_second)
{
    int up[2];
    pid_t pid = test_fork_ready(up);

    if (pid == 0) {
        pinpool_ctx_t *ctx = pinpool_connect(d.socket);
        pinpool_slice_t s;
        for (int i = 0; i < 3; i++)
            if (pinpool_alloc(ctx, 8 * MiB, NULL, &s) == 0)
                memset(s.ptr, 1, s.size);
        test_child_ready(up);
        pause();
        _exit(0);
    }
    test_wait_ready(up);
    cr_assert_eq(test_daemon_used(&d), 24 * MiB);
    double t0 = test_now_s();
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    while (test_daemon_used(&d) != 0 && test_now_s() - t0 < 1.0)
        usleep(2000);
    cr_expect_eq(test_daemon_used(&d), 0, "memory of a killed client came back in %.3f s",
                 test_now_s() - t0);
    cr_expect_lt(test_now_s() - t0, 1.0);
}

/* A few sessions: alloc, close. */
static void session_cycles(int n)
{
    for (int i = 0; i < n; i++) {
        pinpool_ctx_t *ctx = test_connect(&d);
        pinpool_slice_t s;
        cr_assert_eq(pinpool_alloc(ctx, MiB, NULL, &s), 0);
        pinpool_close(ctx);
    }
    for (int i = 0; i < 100 && test_daemon_used(&d) != 0; i++)
        usleep(10000);
}

/* The daemon's descriptors once they stop changing (gRPC closes its side of a
 * connection a little after the client, more slowly under a sanitizer). */
static int settled_nfds(int at_most)
{
    int n = test_daemon_nfds(&d);
    for (int i = 0; i < 500 && n > at_most; i++) {
        usleep(10000);
        n = test_daemon_nfds(&d);
    }
    return n;
}

Test(daemon, no_descriptor_leak_over_many_sessions)
{
    /* Warm up first: gRPC opens some descriptors (pollers, wakeup fds) for good
     * on its first connections; a leak is what grows after that. */
    session_cycles(5);
    int before = test_daemon_nfds(&d);
    for (int i = 0; i < 200; i++) /* let it settle: take the lowest count seen */
        if (usleep(5000) == 0 && test_daemon_nfds(&d) < before)
            before = test_daemon_nfds(&d);
    session_cycles(30);
    int after = settled_nfds(before);
    cr_expect_leq(after, before, "daemon descriptors %d -> %d after 30 sessions", before, after);
}

/* ---- the fd socket, spoken by hand --------------------------------------------------------- */

/* A session opened by hand; its token goes to *token (may be NULL). */
static int raw_session_tok(char *id, char *token)
{
    char path[160];
    ipc_hello_t hello;
    size_t nfds;

    ipc_fd_socket_path(d.socket, path, sizeof(path));
    int fd = ipc_connect_seqpacket(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ipc_recv_msg(fd, &hello, sizeof(hello), NULL, 0, &nfds), (ssize_t)sizeof(hello));
    cr_assert_eq(ipc_msg_check(&hello, sizeof(hello)), IPC_MSG_HELLO);
    cr_expect_str_eq(hello.backend, "memfd");
    cr_expect_eq(hello.chunk_size, 16 * MiB);
    strcpy(id, hello.client_id);
    if (token != NULL)
        strcpy(token, hello.token);
    return fd;
}

static int raw_session(char *id)
{
    return raw_session_tok(id, NULL);
}

static int32_t raw_map(int fd, uint64_t slice, uint32_t first, uint32_t count, size_t *nfds)
{
    ipc_map_req_t req = {0};
    ipc_map_resp_t resp;
    int fds[IPC_MAX_FDS];

    ipc_hdr_init(&req.hdr, IPC_MSG_MAP_REQ, 7, sizeof(req));
    req.slice_id = slice;
    req.first_chunk = first;
    req.count = count;
    cr_assert_eq(ipc_send_msg(fd, &req, sizeof(req), NULL, 0), 0);
    cr_assert_eq(ipc_recv_msg(fd, &resp, sizeof(resp), fds, IPC_MAX_FDS, nfds), (ssize_t)sizeof(resp));
    cr_expect_eq(resp.hdr.seq, 7);
    for (size_t i = 0; i < *nfds; i++)
        close(fds[i]);
    return resp.status;
}

Test(daemon, fd_socket_hands_out_only_your_own_chunks)
{
    char alice[64], bob[64];
    int fa = raw_session_tok(alice, raw_token), fb = raw_session(bob);
    size_t nfds;

    cr_expect_neq(strcmp(alice, bob), 0);
    raw_result_t a = raw_alloc(alice, -1, 20 * MiB, 0); /* chunks 0 and 1 */
    cr_assert_eq(a.code, 0, "%s", a.msg);
    raw_token[0] = '\0';
    cr_expect_eq(raw_map(fa, a.slice_id, 0, 2, &nfds), 0);
    cr_expect_eq(nfds, 2);
    cr_expect_eq(raw_map(fb, a.slice_id, 0, 2, &nfds), PINPOOL_EPERM);
    cr_expect_eq(nfds, 0);
    cr_expect_eq(raw_map(fa, a.slice_id, 0, 3, &nfds), PINPOOL_EINVAL, "chunk 2 is not the slice's");
    cr_expect_eq(raw_map(fa, a.slice_id + 100, 0, 1, &nfds), PINPOOL_ENOENT);
    close(fa); /* alice's lease ends: her slice goes */
    close(fb);
    for (int i = 0; i < 100 && test_daemon_used(&d) != 0; i++)
        usleep(10000);
}

Test(daemon, malformed_fd_message_ends_only_that_session)
{
    char id[64], junk[40] = "this is not a pinpool message";
    int fd = raw_session(id);
    size_t nfds;

    cr_assert_eq(ipc_send_msg(fd, junk, sizeof(junk), NULL, 0), 0);
    cr_expect_eq(ipc_recv_msg(fd, junk, sizeof(junk), NULL, 0, &nfds), 0, "the daemon hangs up");
    close(fd);
    pinpool_ctx_t *ctx = test_connect(&d);
    cr_expect_eq(pinpool_ping(ctx), 0, "and goes on serving others");
    pinpool_close(ctx);
}

/* ---- info, config, the command line -------------------------------------------------------- */

Test(daemon, pool_info_and_server_config)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_pool_info_t info;
    pinpool_slice_t s;

    for (int i = 0; i < 500; i++) { /* chunks are made in the background */
        cr_assert_eq(pinpool_pool_info(ctx, &info), 0);
        pinpool_pool_info_free(&info);
        if (info.ready_bytes == info.capacity_bytes)
            break;
        usleep(10000);
    }
    cr_assert_eq(pinpool_alloc(ctx, 3 * MiB, NULL, &s), 0);
    cr_assert_eq(pinpool_pool_info(ctx, &info), 0);
    cr_expect_eq(info.capacity_bytes, 64 * MiB);
    cr_expect_eq(info.ready_bytes, 64 * MiB);
    cr_expect_eq(info.used_bytes, 3 * MiB);
    cr_expect_eq(info.free_bytes, 61 * MiB);
    /* chunk 0 is the caller's uid's now: its 13 MiB are apart from the 48 MiB
     * of chunks never used */
    cr_expect_eq(info.largest_free_extent, 48 * MiB);
    cr_expect_eq(info.chunk_size, 16 * MiB);
    cr_expect_eq(info.num_chunks, 4);
    cr_expect_eq(info.num_slices, 1);
    cr_expect_eq(info.num_clients, 1);
    cr_expect_str_eq(info.host_backend, "memfd");
    cr_expect_str_eq(info.mode, "cpu-only");
    cr_assert_eq(info.num_usage, 1);
    cr_expect_str_eq(info.usage[0].client_id, pinpool_client_id(ctx));
    cr_expect_eq(info.usage[0].pid, getpid());
    cr_expect_eq(info.usage[0].uid, getuid());
    cr_expect_eq(info.usage[0].bytes, 3 * MiB);
    pinpool_pool_info_free(&info);

    Pinpool__V1__GetServerConfigRequest req = PINPOOL__V1__GET_SERVER_CONFIG_REQUEST__INIT;
    Pinpool__V1__GetServerConfigResponse *cfg = NULL;
    pinpool__rpc_t *rpc;
    char msg[256];
    cr_assert_eq(pinpool__rpc_open(&rpc, d.socket), 0);
    cr_assert_eq(pinpool__rpc_call(rpc, METHOD("GetServerConfig"), &req.base,
                                   &pinpool__v1__get_server_config_response__descriptor,
                                   (ProtobufCMessage **)&cfg, NULL, msg, sizeof(msg)), 0, "%s", msg);
    int found = 0;
    for (size_t i = 0; i < cfg->n_entries; i++) {
        if (strcmp(cfg->entries[i]->name, "mem-pool-size") == 0) {
            cr_expect_str_eq(cfg->entries[i]->value, "64.00 MiB");
            cr_expect_str_eq(cfg->entries[i]->default_value, "1GiB");
            found++;
        }
        if (strcmp(cfg->entries[i]->name, "socket") == 0) {
            cr_expect_str_eq(cfg->entries[i]->value, d.socket);
            found++;
        }
    }
    cr_expect_eq(found, 2);
    cr_expect_str_eq(cfg->version, PINPOOL_VERSION_STRING);
    protobuf_c_message_free_unpacked(&cfg->base, NULL);
    pinpool__rpc_close(rpc);
    cr_expect_eq(pinpool_free(ctx, s.id, NULL), 0);
    pinpool_close(ctx);
}


Test(daemon, info_command_prints_a_table)
{
    char out[4096];

    cr_expect_eq(test_pinpool(out, sizeof(out), "info --socket %s", d.socket), 0, "%s", out);
    TEST_EXPECT_IN(out, "capacity               64.00 MiB (4 chunks of 16.00 MiB)");
    TEST_EXPECT_IN(out, "used                   0 B");
    TEST_EXPECT_IN(out, "cpu-only");
}

Test(daemon, status_command_prints_options_and_the_pool)
{
    char out[8192];

    cr_expect_eq(test_pinpool(out, sizeof(out), "status --socket %s", d.socket), 0, "%s", out);
    TEST_EXPECT_IN(out, "pinpool " PINPOOL_VERSION_STRING " at ");
    TEST_EXPECT_IN(out, "--mem-pool-size        64.00 MiB");
    TEST_EXPECT_IN(out, "(default: 1GiB)");
    TEST_EXPECT_IN(out, "--pin-threads          2\n"); /* a default is not marked */
    TEST_EXPECT_IN(out, "capacity               64.00 MiB");
    TEST_EXPECT_IN(out, "spill tier");
}

Test(daemon, second_daemon_on_the_same_socket_is_refused)
{
    char out[4096];

    cr_expect_eq(test_pinpool(out, sizeof(out), "serve --socket %s --mem-pool-size 16MiB --chunk-size 16MiB", d.socket), 1, "%s", out);
    TEST_EXPECT_IN(out, "another pinpool daemon");
    pinpool_ctx_t *ctx = test_connect(&d); /* the first one still serves */
    cr_expect_eq(pinpool_ping(ctx), 0);
    pinpool_close(ctx);
}

Test(cli, bad_options_and_help)
{
    char out[8192];

    cr_expect_eq(test_pinpool(out, sizeof(out), "serve --mem-pool-size 12XB"), 2);
    TEST_EXPECT_IN(out, "--mem-pool-size: '12XB' is not a size");
    cr_expect_eq(test_pinpool(out, sizeof(out), "serve --chunk-size 128GiB"), 2);
    TEST_EXPECT_IN(out, "--chunk-size: 128GiB is outside 2.00 MiB .. 64.00 GiB");
    cr_expect_eq(test_pinpool(out, sizeof(out), "serve --mem-pool-size 4MiB --chunk-size 8MiB"), 2);
    TEST_EXPECT_IN(out, "smaller than --chunk-size");
    cr_expect_eq(test_pinpool(out, sizeof(out), "serve --bogus 1"), 2);
    TEST_EXPECT_IN(out, "unknown option --bogus");
    cr_expect_eq(test_pinpool(out, sizeof(out), "serve --log-level loud"), 2);
    cr_expect_eq(test_pinpool(out, sizeof(out), "serve --help"), 0);
    TEST_EXPECT_IN(out, "--mem-pool-size SIZE");
    TEST_EXPECT_IN(out, "(default: 1GiB;");
    cr_expect_eq(test_pinpool(out, sizeof(out), "frobnicate"), 2);
    cr_expect_eq(test_pinpool(out, sizeof(out), "info --socket /tmp/pinpool-nowhere.sock"), 1);
    TEST_EXPECT_IN(out, "pinpool serve");
}

/* ---- shutdown -------------------------------------------------------------------------------- */

Test(shutdown, sigterm_during_calls_exits_cleanly, .timeout = 60)
{
    int up[2];

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB", NULL), 0);
    pid_t pid = test_fork_ready(up);
    if (pid == 0) {
        /* Keep calling until the daemon is gone; every failure must be a clean error. */
        pinpool_ctx_t *ctx = pinpool_connect(d.socket);
        int ok = 0, rc = 0;
        test_child_ready(up);
        for (;;) {
            pinpool_slice_t s;
            rc = pinpool_alloc(ctx, 64 * 1024, NULL, &s);
            if (rc != 0)
                break;
            ok++;
            rc = pinpool_free(ctx, s.id, NULL);
            if (rc != 0)
                break;
        }
        /* ESESSION: the fd socket closed first (the daemon went with the session). */
        int clean = rc == PINPOOL_ECONNECT || rc == PINPOOL_ESHUTDOWN || rc == PINPOOL_ESESSION;
        pinpool_close(ctx);
        _exit(clean && ok > 0 ? 0 : 2);
    }
    test_wait_ready(up);
    usleep(300000);
    double t0 = test_now_s();
    int rc = test_daemon_stop(&d);
    cr_expect_eq(rc, 0, "exit status %d", rc);
    cr_expect_lt(test_now_s() - t0, 6.0);
    int status;
    waitpid(pid, &status, 0);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "client status %d", status);

    /* A restart on the same socket works. */
    cr_assert_eq(test_daemon_restart(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB", NULL), 0);
    cr_expect_eq(test_daemon_used(&d), 0);
    rc = test_daemon_stop(&d);
    cr_expect_eq(rc, 0, "exit status %d", rc);
}

/* ---- kept slices --------------------------------------------------------------------------- */

Test(daemon, kept_slice_outlives_its_client_and_is_attached_by_another)
{
    pid_t pid = fork();

    cr_assert_geq(pid, 0);
    if (pid == 0) {
        pinpool_ctx_t *ctx = pinpool_connect(d.socket);
        pinpool_alloc_opts_t keep = {.device_id = PINPOOL_HOST, .tag = "weights", .flags = PINPOOL_ALLOC_KEEP};
        pinpool_slice_t s;
        if (pinpool_alloc(ctx, 5 * MiB, &keep, &s) != 0)
            _exit(1);
        for (uint64_t i = 0; i < s.size; i++)
            ((unsigned char *)s.ptr)[i] = (unsigned char)(i * 31);
        /* The same tag twice is refused. */
        int again = pinpool_alloc(ctx, MiB, &keep, &s);
        pinpool_close(ctx); /* our lease ends; the kept slice stays */
        _exit(again == PINPOOL_EEXIST ? 0 : 2);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer status %d", status);
    cr_expect_eq(test_daemon_used(&d), 5 * MiB, "the kept slice survives its writer");

    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_pool_info_t info;
    cr_assert_eq(pinpool_pool_info(ctx, &info), 0);
    cr_expect_eq(info.num_kept, 1);
    cr_expect_eq(info.num_clients, 1, "kept slices are not counted as clients");
    pinpool_pool_info_free(&info);

    pinpool_slice_t s;
    cr_assert_eq(pinpool_attach(ctx, "weights", 0, &s), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(s.size, 5 * MiB);
    int bad = 0;
    for (uint64_t i = 0; i < s.size; i++)
        bad += ((unsigned char *)s.ptr)[i] != (unsigned char)(i * 31);
    cr_expect_eq(bad, 0, "%d bytes differ", bad);
    cr_expect_eq(pinpool_attach(ctx, "weights", 0, &s), PINPOOL_EEXIST, "attached once per process");
    cr_expect_eq(pinpool_attach(ctx, "no-such-tag", 0, &s), PINPOOL_ENOENT);
    cr_expect(strstr(pinpool_errmsg(ctx), "no slice is kept under tag 'no-such-tag'") != NULL);
    cr_expect_eq(pinpool_detach(ctx, s.id), 0);
    cr_expect_eq(test_daemon_used(&d), 5 * MiB, "detach does not free");
    cr_assert_eq(pinpool_attach(ctx, "weights", 0, &s), 0);
    cr_expect_eq(pinpool_free(ctx, s.id, NULL), 0, "anyone may free a kept slice");
    cr_expect_eq(pinpool_attach(ctx, "weights", 0, &s), PINPOOL_ENOENT);
    pinpool_close(ctx);
}

Test(daemon, kept_and_reserved_names_are_checked)
{
    raw_result_t r = raw_alloc("kept:weights", -1, MiB, 0);
    expect_error(r, GRPC_STATUS_INVALID_ARGUMENT, PINPOOL_EINVAL, "reserved for kept slices");
}

/* ---- CUDA options on a machine without a GPU ------------------------------------------------ */

Test(cli, cuda_options_without_a_gpu_fail_cleanly)
{
    char out[4096], why[256];

    char dir[] = "/tmp/pinpool-cli-XXXXXX"; /* the sockets' directory: /tmp itself is refused */

    if (ipc_cuda_load(why, sizeof(why)) == 0)
        cr_skip_test("a GPU is visible here");
    cr_assert_not_null(mkdtemp(dir));
    cr_expect_eq(test_pinpool(out, sizeof(out), "serve --socket %s/p.sock --host-backend vmm", dir),
                 1, "%s", out);
    TEST_EXPECT_IN(out, "--host-backend vmm cannot work here");
    cr_expect_eq(test_pinpool(out, sizeof(out), "serve --socket %s/p.sock --device-pool-size 1GiB",
                              dir), 1, "%s", out);
    TEST_EXPECT_IN(out, "--device-pool-size needs a GPU");
    cr_expect_eq(rmdir(dir), 0, "the daemons left files in %s", dir);
}

Test(daemon, cpu_only_daemon_says_so)
{
    cr_expect(strstr(d.ready, "backend=memfd mode=cpu-only") != NULL || strstr(d.ready, "mode=cuda") != NULL,
              "%s", d.ready);
    raw_result_t r = raw_alloc("job", 0, MiB, 0);
    if (strstr(d.ready, "mode=cpu-only") != NULL)
        expect_error(r, GRPC_STATUS_INVALID_ARGUMENT, PINPOOL_ENODEV, "no device pool");
}

/* ---- identity and access ------------------------------------------------------------------ */

Test(daemon, a_session_id_without_its_token_is_refused)
{
    char alice[64], token[64];
    int fa = raw_session_tok(alice, token);

    cr_expect_gt(strlen(token), 16);
    raw_result_t r = raw_alloc(alice, -1, MiB, 0);
    expect_error(r, GRPC_STATUS_PERMISSION_DENIED, PINPOOL_EPERM, "must carry its token");
    snprintf(raw_token, sizeof(raw_token), "%s", "0123456789abcdef0123456789abcdef");
    r = raw_alloc(alice, -1, MiB, 0);
    expect_error(r, GRPC_STATUS_PERMISSION_DENIED, PINPOOL_EPERM, "must carry its token");
    snprintf(raw_token, sizeof(raw_token), "%s", token);
    r = raw_alloc(alice, -1, MiB, 0);
    cr_expect_eq(r.code, 0, "with the token: %s", r.msg);
    raw_token[0] = '\0';
    r = raw_free(alice, r.slice_id);
    expect_error(r, GRPC_STATUS_PERMISSION_DENIED, PINPOOL_EPERM, "must carry its token");
    close(fa); /* the lease frees it */
    for (int i = 0; i < 100 && test_daemon_used(&d) != 0; i++)
        usleep(10000);
}

/* A connection to d is refused with code, and the reason says text. */
static void expect_connect_refused(int code, const char *text)
{
    pinpool_ctx_t *c = pinpool_connect(d.socket);

    cr_expect_eq(pinpool_err(c), code, "%s: %s", pinpool_err_name(pinpool_err(c)), pinpool_errmsg(c));
    TEST_EXPECT_IN(pinpool_errmsg(c), text);
    pinpool_close(c);
}

Test(access, client_quota_and_max_clients, .timeout = 60)
{
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   "--client-quota", "8MiB", "--max-clients", "2", NULL), 0);
    pinpool_ctx_t *a = pinpool_connect(d.socket), *b = pinpool_connect(d.socket);
    cr_assert_eq(pinpool_err(a), 0, "%s", pinpool_errmsg(a));
    cr_assert_eq(pinpool_err(b), 0, "%s", pinpool_errmsg(b));
    pinpool_slice_t s;
    cr_expect_eq(pinpool_alloc(a, 6 * MiB, NULL, &s), 0);
    cr_expect_eq(pinpool_alloc(a, 4 * MiB, NULL, &s), PINPOOL_ENOSPC);
    cr_expect(strstr(pinpool_errmsg(a), "--client-quota is 8.00 MiB") != NULL, "%s", pinpool_errmsg(a));
    cr_expect_eq(pinpool_alloc(b, 8 * MiB, NULL, &s), 0, "the quota is per client");

    expect_connect_refused(PINPOOL_ENOSPC, "--max-clients 2");
    raw_result_t r = raw_alloc("batch-job", -1, MiB, 0);
    expect_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED, PINPOOL_ENOSPC, "--max-clients 2");
    pinpool_close(a);
    pinpool_close(b);
    for (int i = 0; i < 100 && test_daemon_used(&d) != 0; i++)
        usleep(10000);
    cr_expect_eq(test_daemon_used(&d), 0);
    cr_expect_eq(test_daemon_stop(&d), 0);
}

Test(access, allow_uid_refuses_other_users_and_detached_callers, .timeout = 60)
{
    char other[16];

    snprintf(other, sizeof(other), "%u", (unsigned)getuid() + 4242);
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                   "--allow-uid", other, NULL), 0);
    expect_connect_refused(PINPOOL_EPERM, "is not in --allow-uid");
    raw_result_t r = raw_alloc("batch-job", -1, MiB, 0);
    expect_error(r, GRPC_STATUS_PERMISSION_DENIED, PINPOOL_EPERM, "only clients with an fd-socket session");
    cr_expect_eq(test_daemon_stop(&d), 0);

    snprintf(other, sizeof(other), "%u", (unsigned)getuid());
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                   "--allow-uid", other, NULL), 0);
    pinpool_ctx_t *ctx = pinpool_connect(d.socket);
    cr_expect_eq(pinpool_err(ctx), 0, "our own uid is allowed: %s", pinpool_errmsg(ctx));
    pinpool_close(ctx);
    cr_expect_eq(test_daemon_stop(&d), 0);
}

Test(access, sockets_are_0660, .timeout = 60)
{
    struct stat st;
    char fdpath[160];

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                   "--detached-clients", "no", NULL), 0);
    ipc_fd_socket_path(d.socket, fdpath, sizeof(fdpath));
    cr_assert_eq(stat(d.socket, &st), 0);
    cr_expect_eq(st.st_mode & 0777, 0660, "gRPC socket mode %o", st.st_mode & 0777);
    cr_assert_eq(stat(fdpath, &st), 0);
    cr_expect_eq(st.st_mode & 0777, 0660, "fd socket mode %o", st.st_mode & 0777);
    raw_result_t r = raw_alloc("batch-job", -1, MiB, 0);
    expect_error(r, GRPC_STATUS_PERMISSION_DENIED, PINPOOL_EPERM, "only clients with an fd-socket session");
    cr_expect_eq(test_daemon_stop(&d), 0);
}

/* ---- metrics ----------------------------------------------------------------------------------- */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* GET path from 127.0.0.1:port into buf; returns the HTTP status. */
static int http_get(unsigned port, const char *path, char *buf, size_t len)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    char req[256];
    size_t n = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s", strerror(errno));
    snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    for (ssize_t r; n < len - 1 && (r = read(fd, buf + n, len - 1 - n)) > 0;)
        n += (size_t)r;
    buf[n] = '\0';
    close(fd);
    int status = 0;
    sscanf(buf, "HTTP/1.%*d %d", &status);
    return status;
}

Test(access, prometheus_metrics_on_loopback, .timeout = 60)
{
    static char page[1 << 16];
    unsigned port = 0;

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                   "--metrics", "127.0.0.1:0", NULL), 0);
    const char *at = strstr(d.ready, "metrics=http://127.0.0.1:");
    cr_assert_not_null(at, "%s", d.ready);
    cr_assert_eq(sscanf(at, "metrics=http://127.0.0.1:%u/metrics", &port), 1);

    pinpool_ctx_t *ctx = pinpool_connect(d.socket);
    pinpool_slice_t s;
    cr_assert_eq(pinpool_alloc(ctx, 3 * MiB, NULL, &s), 0);
    cr_expect_eq(pinpool_alloc(ctx, 0, NULL, &s), PINPOOL_EINVAL);
    cr_expect_eq(http_get(port, "/metrics", page, sizeof(page)), 200, "%s", page);
    cr_expect(strstr(page, "pinpool_capacity_bytes{pool=\"host\"} 33554432\n") != NULL, "%s", page);
    cr_expect(strstr(page, "pinpool_used_bytes{pool=\"host\"} 3145728\n") != NULL, "%s", page);
    char want[160];
    snprintf(want, sizeof(want), "pinpool_user_bytes{uid=\"%u\"} 3145728\n", (unsigned)getuid());
    cr_expect(strstr(page, want) != NULL, "%s", page);
    snprintf(want, sizeof(want), "pinpool_user_sessions{uid=\"%u\"} 1\n", (unsigned)getuid());
    cr_expect(strstr(page, want) != NULL, "%s", page);
    /* The page is open to every local user: no client's id or pid on it. */
    cr_expect(strstr(page, pinpool_client_id(ctx)) == NULL, "%s", page);
    snprintf(want, sizeof(want), "pid=\"%d\"", (int)getpid());
    cr_expect(strstr(page, want) == NULL, "%s", page);
    cr_expect(strstr(page, "pinpool_rpc_seconds_count{method=\"AllocatePoolMemory\"} 2\n") != NULL, "%s", page);
    cr_expect(strstr(page, "pinpool_rpc_errors_total{method=\"AllocatePoolMemory\"} 1\n") != NULL, "%s", page);
    cr_expect(strstr(page, "pinpool_rpc_seconds_bucket{method=\"AllocatePoolMemory\",le=\"+Inf\"} 2\n") != NULL, "%s", page);
    cr_expect_eq(http_get(port, "/other", page, sizeof(page)), 404);
    pinpool_close(ctx);
    for (int i = 0; i < 100 && test_daemon_used(&d) != 0; i++)
        usleep(10000);
    cr_expect_eq(test_daemon_stop(&d), 0);
}

/* Every method that names a client refuses a session's id without its token
 * (the method table's authorize column): one request of each, naming alice. */
Test(daemon, every_method_naming_a_session_needs_its_token)
{
    char alice[64], token[64];
    int fa = raw_session_tok(alice, token);
    Pinpool__V1__AllocatePoolMemoryRequest alloc = PINPOOL__V1__ALLOCATE_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__FreePoolMemoryRequest free_ = PINPOOL__V1__FREE_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__AttachPoolMemoryRequest attach = PINPOOL__V1__ATTACH_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__ReleasePoolMemoryRequest release = PINPOOL__V1__RELEASE_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__AcquirePoolMemoryRequest acquire = PINPOOL__V1__ACQUIRE_POOL_MEMORY_REQUEST__INIT;
    const struct {
        const char *method;
        ProtobufCMessage *req;
        const ProtobufCMessageDescriptor *resp;
    } calls[] = {
        {"AllocatePoolMemory", &alloc.base, &pinpool__v1__allocate_pool_memory_response__descriptor},
        {"FreePoolMemory", &free_.base, &pinpool__v1__free_pool_memory_response__descriptor},
        {"AttachPoolMemory", &attach.base, &pinpool__v1__allocate_pool_memory_response__descriptor},
        {"ReleasePoolMemory", &release.base, &pinpool__v1__release_pool_memory_response__descriptor},
        {"AcquirePoolMemory", &acquire.base, &pinpool__v1__allocate_pool_memory_response__descriptor},
    };

    alloc.client_id = free_.client_id = attach.client_id = release.client_id = acquire.client_id =
        alice;
    alloc.size_bytes = 4096;
    alloc.device_id = -1;
    free_.slice_id = 0;
    attach.tag = (char *)"weights";
    release.slice_id = 1;
    release.key = acquire.key = (char *)"weights";
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        char path[96];
        ProtobufCMessage *resp = NULL;
        snprintf(path, sizeof(path), METHOD("%s"), calls[i].method);
        raw_token[0] = '\0';
        raw_result_t r = raw_call(path, calls[i].req, calls[i].resp, &resp);
        cr_expect_eq(r.code, PINPOOL_EPERM, "%s without a token: %s", calls[i].method, r.msg);
        cr_expect(strstr(r.msg, "must carry its token") != NULL, "%s: %s", calls[i].method, r.msg);
        snprintf(raw_token, sizeof(raw_token), "%s", "0123456789abcdef0123456789abcdef");
        r = raw_call(path, calls[i].req, calls[i].resp, &resp);
        cr_expect_eq(r.code, PINPOOL_EPERM, "%s with a wrong token: %s", calls[i].method, r.msg);
    }
    raw_token[0] = '\0';
    close(fa);
}
