/*
 * test_takeover.c - `pinpool serve --takeover` against the real daemon
 * (memfd host pools, no spill tier): every kept slice's and object's bytes
 * the same after the takeover (byte by byte), a client's mapping and its
 * fd-socket session kept, a client looping calls through it without one
 * failure, the old daemon exiting 0 and the new one serving the same socket
 * paths; a new daemon killed mid-handover, another uid, and what cannot be
 * handed over leave the old daemon serving, each saying why.  The old
 * daemon's pause (pause to GO, from its log) is printed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "ipc.h"
#include "mockcuda.h"
#include "pinpool.h"
#include "pool.h"
#include "users.h"

#define MiB (1ull << 20)
#define POOL_ARGS "--mem-pool-size", "64MiB", "--chunk-size", "16MiB", "--spill-tier", "none"

static test_daemon_t d;

static void start(void)
{
    cr_assert_eq(test_daemon_start(&d, POOL_ARGS, NULL), 0);
}

static void stop(void)
{
    test_daemon_finish(&d);
}

TestSuite(takeover, .init = start, .fini = stop, .timeout = 90);
/* The tests that start a daemon of their own. */
TestSuite(takeover_own, .fini = stop, .timeout = 90);

static void fill(void *p, uint64_t n, uint32_t seed)
{
    uint32_t *w = p;

    for (uint64_t i = 0; i < n / 4; i++)
        w[i] = seed * 2654435761u + (uint32_t)i;
}

/* The first byte where p differs from fill(seed), or n. */
static uint64_t differs(const void *p, uint64_t n, uint32_t seed)
{
    const uint32_t *w = p;

    for (uint64_t i = 0; i < n / 4; i++)
        if (w[i] != seed * 2654435761u + (uint32_t)i)
            return i * 4;
    return n;
}

static bool log_has(const char *path, const char *needle)
{
    char buf[65536];
    int fd = open(path, O_RDONLY);
    ssize_t n;

    if (fd < 0)
        return false;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return strstr(buf, needle) != NULL;
}

static bool wait_log(const char *path, const char *needle, int ms)
{
    for (int t = 0; t < ms; t += 10) {
        if (log_has(path, needle))
            return true;
        usleep(10000);
    }
    return false;
}

/* A pool still being made refuses a takeover (saying so): wait until it is ready. */
static void wait_ready(void)
{
    cr_assert(wait_log(d.log, "pool ready", 10000), "the pool never got ready");
}

/* The old daemon's pause, in ms, from its log line; -1 if none. */
static double pause_ms(const char *path)
{
    char buf[65536];
    int fd = open(path, O_RDONLY);
    ssize_t n;
    const char *p;

    if (fd < 0)
        return -1;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    p = strstr(buf, "; paused ");
    return p != NULL ? atof(p + 9) : -1;
}

/* The old daemon's exit status, waiting up to 15 s; -1 if it did not exit. */
static int wait_exit(pid_t pid)
{
    int status;

    for (int t = 0; t < 15000; t += 10) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(10000);
    }
    return -1;
}

/* Take d over with a second daemon (its log daemon2.log) started with
 * POOL_ARGS, the extra arguments e (up to 4, NULL-terminated) and --takeover;
 * d becomes the new one once the old one exited 0.  Prints the pause. */
static void take_over_with(const char *const *e)
{
    test_daemon_t next = d;
    char old_log[sizeof(d.log)];
    pid_t old = d.pid;

    snprintf(old_log, sizeof(old_log), "%s", d.log);
    snprintf(next.log, sizeof(next.log), "%s/daemon2.log", d.dir);
    wait_ready();
    cr_assert_eq(test_daemon_restart(&next, POOL_ARGS, e[0] ? e[0] : "--takeover",
                                     e[0] && e[1] ? e[1] : "--takeover",
                                     e[0] && e[1] && e[2] ? e[2] : "--takeover",
                                     e[0] && e[1] && e[2] && e[3] ? e[3] : "--takeover",
                                     "--takeover", NULL),
                 0);
    int rc = wait_exit(old);
    if (rc != 0)
        test_daemon_dump_log(&d);
    cr_assert_eq(rc, 0, "the old daemon exited with %d after the takeover", rc);
    cr_expect(log_has(old_log, "takeover: handed over to pid"));
    fprintf(stderr, "takeover: the old daemon paused %.1f ms (pause to GO)\n", pause_ms(old_log));
    char want[300];
    snprintf(want, sizeof(want), "grpc=unix:%s fd=%s.fd ", d.socket, d.socket);
    cr_expect(strstr(next.ready, want) != NULL, "the new daemon serves elsewhere: %s", next.ready);
    /* The old log goes; a second daemon2.log (a second takeover) takes the name. */
    unlink(old_log);
    d = next;
    snprintf(d.log, sizeof(d.log), "%s/daemon.log", d.dir);
    rename(next.log, d.log);
}

static void take_over(void)
{
    static const char *const none[] = {NULL};

    take_over_with(none);
}

Test(takeover, kept_slices_objects_and_mappings_survive_byte_by_byte)
{
    static const uint64_t kept_sizes[] = {1 * MiB + 4096, 20 * MiB, 4096};
    pinpool_ctx_t *a = test_connect(&d);
    pinpool_slice_t kept[3], held, rel;
    char tag[32], key[32];

    for (int i = 0; i < 3; i++) {
        pinpool_alloc_opts_t o = {.device_id = PINPOOL_HOST, .flags = PINPOOL_ALLOC_KEEP};
        snprintf(tag, sizeof(tag), "weights-%d", i);
        o.tag = tag;
        cr_assert_eq(pinpool_alloc(a, kept_sizes[i], &o, &kept[i]), 0, "%s", pinpool_errmsg(a));
        fill(kept[i].ptr, kept_sizes[i], 100 + (uint32_t)i);
    }
    pinpool_alloc_opts_t plain = {.device_id = PINPOOL_HOST};
    cr_assert_eq(pinpool_alloc(a, 3 * MiB, &plain, &held), 0, "%s", pinpool_errmsg(a));
    fill(held.ptr, 3 * MiB, 7);
    cr_assert_eq(pinpool_alloc(a, 2 * MiB, &plain, &rel), 0);
    fill(rel.ptr, 2 * MiB, 8);
    cr_assert_eq(pinpool_release(a, rel.id, "released", 0), 0, "%s", pinpool_errmsg(a));
    char *buf = malloc(5 * MiB);
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof(key), "obj-%d", i);
        fill(buf, (uint64_t)(i + 1) * MiB, 200 + (uint32_t)i);
        cr_assert_eq(pinpool_put(a, key, buf, (uint64_t)(i + 1) * MiB, 0), 0, "%s",
                     pinpool_errmsg(a));
    }
    /* Enough slices that the state takes several messages (32 KiB each). */
    enum { NSMALL = 2000 };
    pinpool_slice_t *small = calloc(NSMALL, sizeof(*small));
    for (int i = 0; i < NSMALL; i++) {
        cr_assert_eq(pinpool_alloc(a, 1024, &plain, &small[i]), 0, "%s", pinpool_errmsg(a));
        memset(small[i].ptr, i & 0xff, 1024);
    }
    uint64_t used = test_daemon_used(&d);

    take_over();

    for (int i = 0; i < NSMALL; i++) {
        const unsigned char *p = small[i].ptr;
        for (int k = 0; k < 1024; k++)
            if (p[k] != (i & 0xff))
                cr_assert_fail("small slice %d differs at byte %d", i, k);
        cr_assert_eq(pinpool_free(a, small[i].id, NULL), 0, "%s", pinpool_errmsg(a));
    }
    free(small);
    used -= NSMALL * 1024;

    /* The client's session and mapping: same bytes, still writable, calls work. */
    cr_expect_eq(differs(held.ptr, 3 * MiB, 7), 3 * MiB, "the held slice changed");
    fill(held.ptr, 3 * MiB, 9);
    cr_expect_eq(differs(held.ptr, 3 * MiB, 9), 3 * MiB);
    cr_expect_eq(test_daemon_used(&d), used, "the pool's use changed in the takeover");
    pinpool_slice_t more;
    cr_assert_eq(pinpool_alloc(a, 1 * MiB, &plain, &more), 0, "after: %s", pinpool_errmsg(a));
    fill(more.ptr, 1 * MiB, 10);
    cr_expect_eq(differs(more.ptr, 1 * MiB, 10), 1 * MiB);
    cr_assert_eq(pinpool_free(a, more.id, NULL), 0, "%s", pinpool_errmsg(a));

    /* A fresh client finds every kept slice and object, byte for byte. */
    pinpool_ctx_t *b = test_connect(&d);
    for (int i = 0; i < 3; i++) {
        pinpool_slice_t s;
        snprintf(tag, sizeof(tag), "weights-%d", i);
        cr_assert_eq(pinpool_attach(b, tag, 0, &s), 0, "%s: %s", tag, pinpool_errmsg(b));
        cr_expect_eq(differs(s.ptr, kept_sizes[i], 100 + (uint32_t)i), kept_sizes[i],
                     "%s differs at byte %" PRIu64, tag,
                     differs(s.ptr, kept_sizes[i], 100 + (uint32_t)i));
        cr_assert_eq(pinpool_free(b, s.id, NULL), 0, "%s", pinpool_errmsg(b));
    }
    for (int i = 0; i < 4; i++) {
        uint64_t got = 0;
        snprintf(key, sizeof(key), "obj-%d", i);
        memset(buf, 0, 5 * MiB);
        cr_assert_eq(pinpool_get(b, key, buf, 5 * MiB, &got), 0, "%s: %s", key, pinpool_errmsg(b));
        cr_expect_eq(got, (uint64_t)(i + 1) * MiB);
        cr_expect_eq(differs(buf, got, 200 + (uint32_t)i), got, "%s differs", key);
        cr_assert_eq(pinpool_remove(b, key), 0);
    }
    pinpool_slice_t back;
    cr_assert_eq(pinpool_acquire(b, "released", 0, &back), 0, "%s", pinpool_errmsg(b));
    cr_expect_eq(differs(back.ptr, 2 * MiB, 8), 2 * MiB, "the released object differs");
    cr_assert_eq(pinpool_free(b, back.id, NULL), 0);
    cr_assert_eq(pinpool_free(a, held.id, NULL), 0, "%s", pinpool_errmsg(a));
    free(buf);
    pinpool_close(b);
    pinpool_close(a);
}

typedef struct looper {
    const char *socket;
    volatile int stop;
    uint64_t calls, failed;
    double max_ms;
    char first_error[512];
} looper_t;

static double ms_since(const struct timespec *t0)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

static void *loop_calls(void *arg)
{
    looper_t *l = arg;
    pinpool_ctx_t *ctx = pinpool_connect(l->socket);
    pinpool_alloc_opts_t o = {.device_id = PINPOOL_HOST};

    while (!__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
        struct timespec t0;
        pinpool_slice_t s;
        uint64_t got;
        char v[64];
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = pinpool_alloc(ctx, 64 * 1024, &o, &s);
        if (rc == 0) {
            ((volatile char *)s.ptr)[0] = 1;
            rc = pinpool_free(ctx, s.id, NULL);
        }
        if (rc == 0)
            rc = pinpool_put(ctx, "loop", "value", 5, 0);
        if (rc == 0)
            rc = pinpool_get(ctx, "loop", v, sizeof(v), &got);
        double ms = ms_since(&t0);
        if (ms > l->max_ms)
            l->max_ms = ms;
        l->calls += 4;
        if (rc != 0 && l->failed++ == 0)
            snprintf(l->first_error, sizeof(l->first_error), "%s", pinpool_errmsg(ctx));
    }
    pinpool_remove(ctx, "loop");
    pinpool_close(ctx);
    return NULL;
}

Test(takeover, a_client_looping_calls_sees_no_failure)
{
    looper_t l = {.socket = d.socket};
    pthread_t t;

    cr_assert_eq(pthread_create(&t, NULL, loop_calls, &l), 0);
    while (__atomic_load_n(&l.calls, __ATOMIC_RELAXED) < 200)
        usleep(1000);
    take_over();
    uint64_t at = __atomic_load_n(&l.calls, __ATOMIC_RELAXED);
    while (__atomic_load_n(&l.calls, __ATOMIC_RELAXED) < at + 200)
        usleep(1000);
    __atomic_store_n(&l.stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    fprintf(stderr, "takeover: %" PRIu64 " calls looped, %" PRIu64 " failed, the longest round "
            "(4 calls) %.1f ms\n", l.calls, l.failed, l.max_ms);
    cr_expect_eq(l.failed, 0, "%" PRIu64 " calls failed; the first: %s", l.failed,
                 l.first_error);
}

/* Start `pinpool serve --takeover` on d's socket without waiting for it. */
static pid_t spawn_takeover(const char *log, const char *delay_ms, const char *extra)
{
    wait_ready();
    const char *bin = getenv("PINPOOL_BIN") != NULL ? getenv("PINPOOL_BIN") : "build/pinpool";
    pid_t pid = fork();

    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        if (delay_ms != NULL)
            setenv("PINPOOL_TAKEOVER_TEST_DELAY_MS", delay_ms, 1);
        execl(bin, bin, "serve", "--socket", d.socket, "--state-dir", d.state, POOL_ARGS,
              "--takeover", extra, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* The old daemon serves as before: its client's mapping, its calls, its kept slice. */
static void still_serves(pinpool_ctx_t *a, const pinpool_slice_t *held)
{
    pinpool_alloc_opts_t plain = {.device_id = PINPOOL_HOST};
    pinpool_slice_t s;

    cr_expect_eq(differs(held->ptr, held->size, 31), held->size);
    cr_assert_eq(pinpool_alloc(a, 1 * MiB, &plain, &s), 0, "%s", pinpool_errmsg(a));
    fill(s.ptr, 1 * MiB, 32);
    cr_assert_eq(pinpool_free(a, s.id, NULL), 0);
    pinpool_ctx_t *b = test_connect(&d);
    cr_assert_eq(pinpool_attach(b, "kept", 0, &s), 0, "%s", pinpool_errmsg(b));
    cr_expect_eq(differs(s.ptr, s.size, 33), s.size);
    pinpool_close(b);
}

static void kept_and_held(pinpool_ctx_t *a, pinpool_slice_t *held, pinpool_slice_t *kept)
{
    pinpool_alloc_opts_t o = {.device_id = PINPOOL_HOST, .flags = PINPOOL_ALLOC_KEEP,
                              .tag = "kept"};
    pinpool_alloc_opts_t plain = {.device_id = PINPOOL_HOST};

    cr_assert_eq(pinpool_alloc(a, 2 * MiB, &plain, held), 0, "%s", pinpool_errmsg(a));
    fill(held->ptr, held->size, 31);
    cr_assert_eq(pinpool_alloc(a, 4 * MiB, &o, kept), 0, "%s", pinpool_errmsg(a));
    fill(kept->ptr, kept->size, 33);
}

Test(takeover, a_new_daemon_killed_mid_handover_leaves_the_old_one_serving)
{
    pinpool_ctx_t *a = test_connect(&d);
    pinpool_slice_t held, kept;
    char log[200];

    kept_and_held(a, &held, &kept);
    snprintf(log, sizeof(log), "%s/killed.log", d.dir);
    pid_t pid = spawn_takeover(log, "3000", NULL);
    /* It has every descriptor and the state, and sleeps before its GO. */
    cr_assert(wait_log(d.log, "asks to take over", 10000), "no takeover started");
    usleep(300000);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    cr_assert(wait_log(d.log, "failed before GO", 10000), "the old daemon did not say why");
    still_serves(a, &held);
    cr_assert_eq(pinpool_free(a, kept.id, NULL), 0, "%s", pinpool_errmsg(a));
    cr_assert_eq(pinpool_free(a, held.id, NULL), 0, "%s", pinpool_errmsg(a));
    pinpool_close(a);
    unlink(log);
}

Test(takeover, what_cannot_be_handed_over_is_refused_saying_why)
{
    pinpool_ctx_t *a = test_connect(&d);
    pinpool_slice_t held, kept;
    char out[8192];

    kept_and_held(a, &held, &kept);
    /* Another pool size: the pools must be the same. */
    wait_ready();
    int rc = test_pinpool(out, sizeof(out), "serve --socket %s --state-dir %s --mem-pool-size "
                          "32MiB --chunk-size 16MiB --spill-tier none --takeover", d.socket,
                          d.state);
    cr_expect_neq(rc, 0);
    TEST_EXPECT_IN(out, "the pools differ");
    cr_assert(wait_log(d.log, "failed before GO: it failed: the pools differ", 5000));
    /* A spill tier in the new daemon, none in the running one. */
    rc = test_pinpool(out, sizeof(out), "serve --socket %s --state-dir %s --mem-pool-size "
                      "64MiB --chunk-size 16MiB --takeover", d.socket, d.state);
    cr_expect_neq(rc, 0);
    TEST_EXPECT_IN(out, "the running daemon has no spill tier and this one has one");
    still_serves(a, &held);
    cr_assert_eq(pinpool_free(a, kept.id, NULL), 0, "%s", pinpool_errmsg(a));
    cr_assert_eq(pinpool_free(a, held.id, NULL), 0, "%s", pinpool_errmsg(a));
    pinpool_close(a);
}

/* A file spill tier: its directory's lock goes to the new daemon with the
 * objects, spilled ones included; each reads back byte for byte (restored
 * from the tier by the new daemon).  A new daemon without the tier is
 * refused first, the old one serving on. */
Test(takeover_own, a_file_spill_tier_and_its_spilled_objects_are_handed_over)
{
    static const char *const tier[] = {"--spill-tier", "auto", "--spill-low-watermark", "60MiB",
                                       NULL};
    pinpool_pool_info_t info;
    char out[8192], key[32];
    char *buf = malloc(8 * MiB);

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   "--spill-low-watermark", "60MiB", NULL), 0);
    pinpool_ctx_t *a = test_connect(&d);
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof(key), "spill-%d", i);
        fill(buf, 6 * MiB, 300 + (uint32_t)i);
        cr_assert_eq(pinpool_put(a, key, buf, 6 * MiB, 0), 0, "%s", pinpool_errmsg(a));
    }
    /* The watermark spills them in the background. */
    for (int t = 0; t < 1000; t++) {
        test_pool_info(a, &info);
        if (info.spill.objects_spilled >= 3)
            break;
        usleep(10000);
    }
    cr_assert_geq(info.spill.objects_spilled, 3, "only %u objects spilled", info.spill.objects_spilled);
    wait_ready();
    int rc = test_pinpool(out, sizeof(out), "serve --socket %s --state-dir %s --mem-pool-size "
                          "64MiB --chunk-size 16MiB --spill-tier none --takeover", d.socket,
                          d.state);
    cr_expect_neq(rc, 0);
    TEST_EXPECT_IN(out, "the running daemon has a spill tier and this one has none");

    take_over_with(tier);

    test_pool_info(a, &info);
    cr_expect_geq(info.spill.objects_spilled, 3, "the new daemon knows %u spilled objects",
                  info.spill.objects_spilled);
    for (int i = 0; i < 4; i++) {
        uint64_t got = 0;
        snprintf(key, sizeof(key), "spill-%d", i);
        memset(buf, 0, 8 * MiB);
        cr_assert_eq(pinpool_get(a, key, buf, 8 * MiB, &got), 0, "%s: %s", key,
                     pinpool_errmsg(a));
        cr_expect_eq(got, 6 * MiB);
        cr_expect_eq(differs(buf, got, 300 + (uint32_t)i), got, "%s differs", key);
        cr_assert_eq(pinpool_remove(a, key), 0, "%s", pinpool_errmsg(a));
    }
    pinpool_close(a);
    free(buf);
}

/* The wire of takeover.h, enough for a greeting. */
typedef struct to_msg {
    uint32_t type, len;
    uint64_t a, b;
    char data[32768];
} to_msg_t;

static int other_uid_asks(void *arg)
{
    const char *path = arg;
    static to_msg_t m;
    size_t nfds = 0;
    int fd = ipc_connect_seqpacket(path);

    if (fd < 0) {
        fprintf(stderr, "cannot connect to %s: %s\n", path, strerror(-fd));
        return 2;
    }
    m.type = 1; /* HELLO (the daemon may refuse before it reads it: EPIPE then) */
    (void)ipc_send_msg(fd, &m, offsetof(to_msg_t, data), NULL, 0);
    ssize_t n = ipc_recv_msg(fd, &m, sizeof(m), NULL, 0, &nfds);
    close(fd);
    if (n < (ssize_t)offsetof(to_msg_t, data) || m.type != 2 /* REFUSE */) {
        fprintf(stderr, "no refusal (%zd bytes, type %u)\n", n, m.type);
        return 4;
    }
    m.data[m.len < sizeof(m.data) ? m.len : sizeof(m.data) - 1] = '\0';
    return strstr(m.data, "neither the daemon's uid") != NULL ? 0 : 5;
}

/* Another uid that reaches the takeover socket (a group may) is refused and
 * logged; the daemon serves on.  The other uid is a child that speaks the
 * greeting itself: no gRPC in it. */
Test(takeover_own, another_uid_is_refused)
{
    test_users_t users;
    char why[256], gid[16], path[200];

    if (!test_users_get(&users, why, sizeof(why)))
        cr_skip_test("%s", why);
    snprintf(gid, sizeof(gid), "%u", (unsigned)users.shared);
    cr_assert_eq(test_daemon_start(&d, POOL_ARGS, "--allow-gid", gid, "--allow-uid", "0", NULL), 0);
    snprintf(path, sizeof(path), "%s.takeover", d.socket);
    int rc = test_run_as(&users.a, true, users.shared, other_uid_asks, path);
    cr_expect_eq(rc, 0, "the other uid was not refused as it should be (%d)", rc);
    cr_expect(wait_log(d.log, "takeover: refused pid", 5000), "the refusal is not logged");
    pinpool_ctx_t *c = test_connect(&d);
    cr_expect_eq(pinpool_ping(c), 0);
    pinpool_close(c);
}

/* A vmm device pool on the stand-in driver: the chunks' descriptors imported
 * by the new daemon keep the memory after the old one exits; a kept device
 * slice and a client's mapped one have the same bytes, and the client's
 * unmap and remap asks the new daemon for the chunks. */
Test(takeover_own, a_vmm_device_pool_is_handed_over)
{
    static const char *const dev[] = {"--host-backend", "memfd", "--device-pool-size", "64MiB"};
    static const char *const args[] = {"--host-backend", "memfd", "--device-pool-size", "64MiB",
                                       NULL};
    pinpool_alloc_opts_t keep = {.device_id = 0, .tag = "dev-weights",
                                 .flags = PINPOOL_ALLOC_KEEP};
    pinpool_alloc_opts_t plain = {.device_id = 0};
    pinpool_slice_t kept, held, s;

    test_use_mock_cuda();
    cr_assert_eq(test_daemon_start(&d, POOL_ARGS, dev[0], dev[1], dev[2], dev[3],
                                   "--device-backend", "vmm", NULL), 0);
    pinpool_ctx_t *a = test_connect(&d);
    cr_assert_eq(pinpool_alloc(a, 9 * MiB, &keep, &kept), 0, "%s", pinpool_errmsg(a));
    fill(kept.ptr, 9 * MiB, 41);
    cr_assert_eq(pinpool_alloc(a, 5 * MiB, &plain, &held), 0, "%s", pinpool_errmsg(a));
    fill(held.ptr, 5 * MiB, 42);
    uint64_t used = test_daemon_used(&d);

    take_over_with(args);

    cr_expect_eq(differs(held.ptr, 5 * MiB, 42), 5 * MiB, "the held device slice changed");
    cr_expect_eq(test_daemon_used(&d), used);
    cr_assert_eq(pinpool_dev_unmap(a, held.id), 0, "%s", pinpool_errmsg(a));
    cr_assert_eq(pinpool_dev_remap(a, held.id), 0, "remap from the new daemon: %s",
                 pinpool_errmsg(a));
    cr_expect_eq(differs(held.ptr, 5 * MiB, 42), 5 * MiB, "the remapped slice differs");
    pinpool_ctx_t *b = test_connect(&d);
    cr_assert_eq(pinpool_attach(b, "dev-weights", 0, &s), 0, "%s", pinpool_errmsg(b));
    cr_expect_eq(differs(s.ptr, 9 * MiB, 41), 9 * MiB, "the kept device slice differs at %"
                 PRIu64, differs(s.ptr, 9 * MiB, 41));
    cr_assert_eq(pinpool_free(b, s.id, NULL), 0, "%s", pinpool_errmsg(b));
    cr_assert_eq(pinpool_alloc(a, 3 * MiB, &plain, &s), 0, "%s", pinpool_errmsg(a));
    fill(s.ptr, 3 * MiB, 43);
    cr_expect_eq(differs(s.ptr, 3 * MiB, 43), 3 * MiB);
    cr_assert_eq(pinpool_free_all(a, NULL), 0, "%s", pinpool_errmsg(a));
    pinpool_close(b);
    pinpool_close(a);
}

/* A legacy ipc device pool is refused, naming why. */
Test(takeover_own, an_ipc_device_pool_is_refused)
{
    char out[8192];

    test_use_mock_cuda();
    cr_assert_eq(test_daemon_start(&d, POOL_ARGS, "--host-backend", "memfd",
                                   "--device-pool-size", "64MiB", "--device-backend", "ipc",
                                   NULL), 0);
    wait_ready();
    int rc = test_pinpool(out, sizeof(out), "serve --socket %s --state-dir %s --mem-pool-size "
                          "64MiB --chunk-size 16MiB --spill-tier none --host-backend memfd "
                          "--device-pool-size 64MiB --device-backend ipc --takeover", d.socket,
                          d.state);
    cr_expect_neq(rc, 0);
    TEST_EXPECT_IN(out, "only vmm device pools are handed over");
    rc = test_pinpool(out, sizeof(out), "serve --socket %s --state-dir %s --mem-pool-size "
                      "64MiB --chunk-size 16MiB --spill-tier none --host-backend memfd "
                      "--device-pool-size 64MiB --takeover", d.socket, d.state);
    cr_expect_neq(rc, 0);
    TEST_EXPECT_IN(out, "legacy CUDA IPC handles");
    pinpool_ctx_t *c = test_connect(&d);
    cr_expect_eq(pinpool_ping(c), 0);
    pinpool_close(c);
}

/* A host manifest (kept slices and its record, an object): a reader attached
 * before the takeover verifies its tensors after it, and a reader that opens
 * it afterwards finds every tensor's bytes (hashes) as published. */
Test(takeover, a_manifest_and_its_reader_survive)
{
    pinpool_ctx_t *w = test_connect(&d), *r = test_connect(&d);
    pinpool_manifest_opts_t opts = {.device_id = PINPOOL_HOST};
    pinpool_publish_t *pub = NULL;
    pinpool_manifest_t *m = NULL, *m2 = NULL;
    uint64_t v = 0;

    cr_assert_eq(pinpool_manifest_begin(w, "model", &opts, &pub), 0, "%s", pinpool_errmsg(w));
    for (int i = 0; i < 3; i++) {
        pinpool_tensor_desc_t td = {.dtype = PINPOOL_DTYPE_F32, .ndim = 2,
                                    .shape = {300 + i, 1000}};
        char name[16];
        snprintf(name, sizeof(name), "t%d", i);
        td.name = name;
        cr_assert_eq(pinpool_manifest_add(pub, &td, NULL), 0, "%s", pinpool_errmsg(w));
    }
    cr_assert_eq(pinpool_manifest_alloc(pub), 0, "%s", pinpool_errmsg(w));
    for (uint32_t i = 0; i < 3; i++) {
        pinpool_tensor_t t;
        cr_assert_eq(pinpool_manifest_dest(pub, i, &t), 0);
        void *src = malloc(t.nbytes);
        fill(src, t.nbytes, 50 + i);
        cr_assert_eq(pinpool_manifest_write(pub, i, src, t.nbytes), 0, "%s", pinpool_errmsg(w));
        free(src);
    }
    cr_assert_eq(pinpool_manifest_commit(pub, &v), 0, "%s", pinpool_errmsg(w));
    cr_assert_eq(pinpool_manifest_open(r, "model", 0, &m), 0, "%s", pinpool_errmsg(r));
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0, "%s", pinpool_errmsg(r));

    take_over();

    cr_expect_eq(pinpool_manifest_verify(m, NULL), 0, "the attached reader: %s",
                 pinpool_errmsg(r));
    pinpool_ctx_t *r2 = test_connect(&d);
    cr_assert_eq(pinpool_manifest_open(r2, "model", v, &m2), 0, "%s", pinpool_errmsg(r2));
    cr_assert_eq(pinpool_manifest_attach(m2, PINPOOL_HOST), 0, "%s", pinpool_errmsg(r2));
    cr_expect_eq(pinpool_manifest_verify(m2, NULL), 0, "a new reader: %s", pinpool_errmsg(r2));
    for (uint32_t i = 0; i < 3; i++) {
        pinpool_tensor_t t;
        cr_assert_eq(pinpool_manifest_tensor(m2, i, &t), 0);
        cr_expect_eq(differs(t.ptr, t.nbytes, 50 + i), t.nbytes, "tensor %u differs", i);
    }
    pinpool_manifest_close(m2);
    pinpool_manifest_close(m);
    cr_assert_eq(pinpool_manifest_drop(w, "model", 0, 0), 0, "%s", pinpool_errmsg(w));
    pinpool_close(r2);
    pinpool_close(r);
    pinpool_close(w);
}

/* ---- pool/restore.c: a pool saved and made again is the same pool ------------------- */

#define R_SLICES 512

typedef struct rpool {
    pool_saved_t saved[2 * R_SLICES];
    size_t n;
} rpool_t;

static void collect(const pool_saved_t *p, void *arg)
{
    rpool_t *r = arg;

    if (r->n < 2 * R_SLICES)
        r->saved[r->n++] = *p;
}

/* One random operation on pool with rng state *x: an alloc (of tenants 1-3,
 * owners 1-6, up to 1.5 chunks), a free, an unwritten mark or a cleaning;
 * what it did goes into out (the same on two equal pools). */
static void random_op(pool_t *pool, uint64_t *x, uint64_t *ids, size_t *nids, char *out,
                      size_t outlen)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t r = *x >> 33;
    pool_slice_info_t info;
    pool_dirty_t dirty;
    int rc;

    switch (r % 8) {
    case 0: case 1: case 2: case 3: {
        uint64_t size = 1 + (r >> 4) % (3u << 19);
        memset(&info, 0, sizeof(info));
        rc = pool_alloc_as(pool, 1 + (r >> 3) % 3, 1 + (r >> 6) % 6, size, 0, &info);
        if (rc == 0 && *nids < R_SLICES)
            ids[(*nids)++] = info.id;
        snprintf(out, outlen, "alloc %d %" PRIu64 " %" PRIu64, rc, info.id, info.offset);
        break;
    }
    case 4: case 5:
        if (*nids == 0) {
            snprintf(out, outlen, "none");
            break;
        }
        size_t k = (r >> 4) % *nids;
        pool_lookup(pool, ids[k], &info);
        rc = pool_free(pool, ids[k], info.owner, NULL);
        ids[k] = ids[--*nids];
        snprintf(out, outlen, "free %d", rc);
        break;
    case 6:
        rc = *nids > 0 ? pool_mark_unwritten(pool, ids[(r >> 4) % *nids]) : 0;
        snprintf(out, outlen, "unwritten %d", rc);
        break;
    default:
        rc = pool_clean_take(pool, &dirty);
        if (rc == 0)
            rc = pool_clean_done(pool, dirty.id);
        snprintf(out, outlen, "clean %d", rc);
    }
}

Test(restore, a_pool_saved_and_restored_is_the_same_pool, .timeout = 60)
{
    pool_params_t pp = {.chunk_size = 1u << 20, .max_chunks = 8, .quantum = 256,
                        .allow_multi_chunk = true, .dirty_on_free = true};
    static rpool_t saved;
    static uint64_t ids_a[R_SLICES], ids_b[R_SLICES];
    size_t na = 0, nb;
    pool_t *a, *b;
    uint64_t x = 12345, y;
    char ra[128], rb[128], msg[256];

    cr_assert_eq(pool_create(&a, &pp), 0);
    cr_assert_eq(pool_add_chunks(a, 8), 0);
    for (int i = 0; i < 600; i++)
        random_op(a, &x, ids_a, &na, ra, sizeof(ra));
    saved.n = 0;
    cr_assert_eq(pool_save_each(a, collect, &saved), 0);

    cr_assert_eq(pool_create(&b, &pp), 0);
    cr_assert_eq(pool_add_chunks(b, 8), 0);
    for (uint32_t i = 0; i < 8; i++) {
        pool_chunk_info_t ci;
        cr_assert_eq(pool_chunk_info(a, i, &ci), 0);
        if (ci.tenant != POOL_TENANT_NONE)
            cr_assert_eq(pool_restore_tenant(b, i, ci.tenant), 0, "chunk %u", i);
    }
    for (size_t i = 0; i < saved.n; i++) {
        const char *why = "";
        cr_assert_eq(pool_restore_slice(b, &saved.saved[i], &why), 0, "piece %zu (slice %"
                     PRIu64 "): %s", i, saved.saved[i].info.id, why);
    }
    cr_assert_eq(pool_restore_next_id(b, pool_next_id(a)), 0);
    cr_assert_eq(pool_check(b, msg, sizeof(msg)), 0, "%s", msg);

    pool_stats_t sa, sb;
    pool_get_stats(a, &sa);
    pool_get_stats(b, &sb);
    cr_expect_eq(sa.used, sb.used);
    cr_expect_eq(sa.dirty, sb.dirty);
    cr_expect_eq(sa.free, sb.free);
    cr_expect_eq(sa.largest_free, sb.largest_free);
    cr_expect_eq(sa.num_slices, sb.num_slices);
    cr_expect_eq(sa.num_dirty, sb.num_dirty);
    cr_expect_eq(sa.num_free_extents, sb.num_free_extents);
    cr_expect_eq(sa.num_owners, sb.num_owners);
    cr_expect_eq(sa.num_tenants, sb.num_tenants);
    cr_expect_eq(sa.idle_chunks, sb.idle_chunks);
    /* A piece that does not fit is refused, the pool unchanged. */
    if (saved.n > 0)
        cr_expect_eq(pool_restore_slice(b, &saved.saved[0], &(const char *){""}),
                     PINPOOL_EINVAL);
    /* The same operations from here do the same on both. */
    memcpy(ids_b, ids_a, sizeof(ids_a));
    nb = na;
    y = x;
    for (int i = 0; i < 400; i++) {
        random_op(a, &x, ids_a, &na, ra, sizeof(ra));
        random_op(b, &y, ids_b, &nb, rb, sizeof(rb));
        cr_assert_str_eq(ra, rb, "operation %d after the restore differs", i);
    }
    cr_expect_eq(pool_check(b, msg, sizeof(msg)), 0, "%s", msg);
    pool_destroy(a);
    pool_destroy(b);
}
