/*
 * test_limits.c - the daemon at the edges of its host (issue 13.6 and 13.7):
 * out of file descriptors, SIGHUP and SIGPIPE, and a pool larger than the
 * memory cgroup allows.
 *
 * Owns: the daemons it starts (hostd.h), the directories it makes in /tmp and
 * the memory cgroups it makes under its own (removed at the end).  The
 * cgroup test skips, saying why, where no memory cgroup can be made.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "hostd.h"
#include "internal.h"
#include "ipc.h"
#include "pinpool.h"
#include "pinpool.pb-c.h"
#include "users.h"
#include "util.h"

#define MiB (1024ull * 1024)

/* ---- file descriptors (issue 13.6) ------------------------------------------------------- */

static void low_nofile(void *arg)
{
    struct rlimit rl = {.rlim_cur = (rlim_t)(size_t)arg, .rlim_max = (rlim_t)(size_t)arg};

    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        _exit(126);
}

/* utime + stime of pid, in seconds. */
static double cpu_s(pid_t pid)
{
    char path[64], buf[2048];
    unsigned long ut = 0, st = 0;
    const char *p;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    slurp(path, buf, sizeof(buf));
    p = strrchr(buf, ')');
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                            &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

Test(host_fds, max_clients_follows_rlimit_nofile, .timeout = 90)
{
    char base[64], sock[128], fdsock[136], state[128], log[128], out[8192];
    int fds[64], n = 0;
    ipc_hello_t hello;
    hd_t h;

    make_base(base, sizeof(base), 0700);
    snprintf(log, sizeof(log), "%s/log", base);
    snprintf(sock, sizeof(sock), "%s/run/pinpool.sock", base);
    snprintf(fdsock, sizeof(fdsock), "%s.fd", sock);
    snprintf(state, sizeof(state), "%s/state", base);
    /* 200 descriptors, 4 chunks: (200 - 96 - 4) / 2 = 50 clients. */
    cr_assert_eq(hd_start(&h, log, low_nofile, (void *)(size_t)200, "--socket", sock,
                          "--state-dir", state, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                          NULL), 0, "%s", slurp(log, out, sizeof(out)));
    TEST_EXPECT_IN(slurp(log, out, sizeof(out)), "--max-clients auto: 50 (RLIMIT_NOFILE 200");
    for (; n < 51; n++) {
        fds[n] = raw_session(fdsock, &hello);
        if (fds[n] < 0 || hello.status != 0)
            break;
    }
    cr_expect_eq(n, 50, "%d sessions", n);
    cr_expect_eq(hello.status, PINPOOL_ENOSPC, "%d: %s", hello.status, hello.reason);
    TEST_EXPECT_IN(hello.reason, "--max-clients 50");
    if (n < 51 && fds[n] >= 0)
        close(fds[n]);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    usleep(200000);
    cr_expect_eq(use_daemon(sock), 0);
    cr_expect_eq(hd_stop(&h), 0);
    test_rm_rf(base);
}

/* A non-blocking connection to the unix socket at path (a full backlog must
 * not hang the test), or -1. */
static int nb_connect(const char *path, int type)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0 || snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path) >= (int)sizeof(sa.sun_path) ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* A client that keeps connecting to both sockets for 2 s while the daemon
 * has no descriptor; returns how many fd-socket connections were told why
 * (the listener answers within its rest, 1 s). */
static int knock(const char *sock, const char *fdsock, int *held, int *nheld, int max)
{
    double end = test_now_s() + 2.0;
    int first = *nheld, told = 0;

    while (test_now_s() < end && *nheld < max - 2) {
        int g = nb_connect(sock, SOCK_STREAM), f = nb_connect(fdsock, SOCK_SEQPACKET);

        if (g >= 0)
            held[(*nheld)++] = g;
        if (f >= 0)
            held[(*nheld)++] = f;
        usleep(50000);
    }
    usleep(1200 * 1000);
    for (int i = first; i < *nheld; i++) {
        ipc_hello_t hello;
        size_t nfds;
        if (ipc_recv_msg(held[i], &hello, sizeof(hello), NULL, 0, &nfds) == (ssize_t)sizeof(hello) &&
            hello.status != 0 && strstr(hello.reason, "file descriptors") != NULL)
            told++;
    }
    return told;
}

Test(host_fds, out_of_descriptors_the_daemon_neither_spins_nor_floods_its_log, .timeout = 120)
{
    char base[64], sock[128], fdsock[136], state[128], log[128], out[8192];
    static int held[512];
    int nheld = 0, told, n;
    ipc_hello_t hello;
    hd_t h;

    make_base(base, sizeof(base), 0700);
    snprintf(log, sizeof(log), "%s/log", base);
    snprintf(sock, sizeof(sock), "%s/run/pinpool.sock", base);
    snprintf(fdsock, sizeof(fdsock), "%s.fd", sock);
    snprintf(state, sizeof(state), "%s/state", base);
    cr_assert_eq(hd_start(&h, log, low_nofile, (void *)(size_t)128, "--socket", sock,
                          "--state-dir", state, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                          "--max-clients", "0", NULL), 0, "%s", slurp(log, out, sizeof(out)));

    /* Sessions until the daemon says it is short of descriptors. */
    for (n = 0; n < 200; n++) {
        held[nheld] = raw_session(fdsock, &hello);
        if (held[nheld] < 0 || hello.status != 0)
            break;
        nheld++;
    }
    cr_expect_gt(n, 20, "%d sessions", n);
    cr_expect_eq(hello.status, PINPOOL_ENOSPC, "no refusal after %d sessions: %d %s", n,
                 hello.status, hello.reason);
    TEST_EXPECT_IN(hello.reason, "short of file descriptors");

    /* Now out of them for good: the soft limit below what the daemon holds. */
    struct rlimit low = {.rlim_cur = 40, .rlim_max = 128}, was;
    cr_assert_eq(prlimit(h.pid, RLIMIT_NOFILE, &low, &was), 0);
    long lines = count_lines(log);
    double cpu = cpu_s(h.pid), t0 = test_now_s();
    told = knock(sock, fdsock, held, &nheld, 512);
    cpu = cpu_s(h.pid) - cpu;
    lines = count_lines(log) - lines;
    cr_log_info("out of descriptors for %.1f s: %.2f s of CPU, %ld log lines, %d of %d refusals "
                "said why", test_now_s() - t0, cpu, lines, told, nheld / 2);
    cr_expect_lt(cpu, 0.5, "the daemon spent %.2f s of CPU in 3.2 s", cpu);
    cr_expect_lt(lines, 20, "%ld log lines in 3.2 s", lines);
    cr_expect_gt(told, 0, "no connection was told why");
    cr_expect_eq(kill(h.pid, 0), 0, "the daemon is gone");

    /* Others close: sessions work again, over both sockets. */
    cr_assert_eq(prlimit(h.pid, RLIMIT_NOFILE, &was, NULL), 0);
    for (int i = 0; i < nheld; i++)
        close(held[i]);
    usleep(1500 * 1000); /* the listeners rest 1 s at a time */
    cr_expect_eq(use_daemon(sock), 0, "%s", slurp(log, out, sizeof(out)));
    cr_expect_eq(hd_stop(&h), 0);
    test_rm_rf(base);
}

/* ---- signals (issue 13.7) ------------------------------------------------------------------ */

/* Wait up to 5 s for needle in the file at path. */
static bool wait_for(const char *path, const char *needle)
{
    static char buf[1 << 16];

    for (int i = 0; i < 500; i++) {
        if (strstr(slurp(path, buf, sizeof(buf)), needle) != NULL)
            return true;
        usleep(10000);
    }
    return false;
}

Test(host_signals, sighup_reopens_the_log_file, .timeout = 90)
{
    char base[64], sock[128], state[128], log[128], file[128], moved[136], out[8192];
    hd_t h;

    make_base(base, sizeof(base), 0700);
    snprintf(log, sizeof(log), "%s/stderr", base);
    snprintf(file, sizeof(file), "%s/pinpool.log", base);
    snprintf(moved, sizeof(moved), "%s.1", file);
    snprintf(sock, sizeof(sock), "%s/run/pinpool.sock", base);
    snprintf(state, sizeof(state), "%s/state", base);
    cr_assert_eq(hd_start(&h, log, NULL, NULL, "--socket", sock, "--state-dir", state,
                          "--mem-pool-size", "32MiB", "--log-file", file, NULL), 0, "%s",
                 slurp(log, out, sizeof(out)));
    cr_expect(wait_for(file, "pool ready"), "%s", slurp(file, out, sizeof(out)));
    cr_assert_eq(rename(file, moved), 0); /* what logrotate does */
    cr_assert_eq(kill(h.pid, SIGHUP), 0);
    cr_expect(wait_for(file, "SIGHUP: log reopened"), "no new log file");
    cr_expect_eq(use_daemon(sock), 0);
    cr_expect_eq(kill(h.pid, 0), 0);
    cr_expect_eq(hd_stop(&h), 0);
    TEST_EXPECT_IN(slurp(file, out, sizeof(out)), "stopped");
    TEST_EXPECT_IN(slurp(moved, out, sizeof(out)), "pool ready");
    cr_expect(strstr(slurp(moved, out, sizeof(out)), "stopped") == NULL,
              "the old file got lines after SIGHUP");
    test_rm_rf(base);
}

Test(host_signals, sighup_without_a_log_file_changes_nothing, .timeout = 90)
{
    test_daemon_t d;
    char out[8192];

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB", NULL), 0);
    cr_assert_eq(kill(d.pid, SIGHUP), 0);
    cr_expect(wait_for(d.log, "SIGHUP: ignored"), "%s", slurp(d.log, out, sizeof(out)));
    cr_expect_eq(kill(d.pid, 0), 0, "SIGHUP killed the daemon");
    cr_expect_eq(access(d.socket, F_OK), 0);
    cr_expect_eq(use_daemon(d.socket), 0);
    test_daemon_finish(&d);
}

/* A disposition is the process's, so every thread ignores SIGPIPE: check them all. */
Test(host_signals, sigpipe_is_ignored_in_every_thread, .timeout = 90)
{
    test_daemon_t d;
    char dir[64], path[512], buf[4096];
    struct dirent *e;
    int threads = 0;
    DIR *t;

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB", NULL), 0);
    snprintf(dir, sizeof(dir), "/proc/%d/task", (int)d.pid);
    t = opendir(dir);
    cr_assert_not_null(t);
    while ((e = readdir(t)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s/status", dir, e->d_name);
        const char *ign = strstr(slurp(path, buf, sizeof(buf)), "SigIgn:");
        unsigned long long mask = 0;
        cr_assert_not_null(ign);
        sscanf(ign + 7, "%llx", &mask);
        cr_expect(mask & (1ull << (SIGPIPE - 1)), "thread %s does not ignore SIGPIPE", e->d_name);
        threads++;
    }
    closedir(t);
    cr_expect_gt(threads, 3, "%d threads", threads);
    test_daemon_finish(&d);
}

/* ---- memory at start (issue 13.7) ---------------------------------------------------------- */

/* A memory cgroup under this process's own, limited to limit bytes: its
 * directory into dir (true), or false with why. */
static bool make_cgroup(uint64_t limit, char *dir, size_t len, char *why, size_t whylen)
{
    char line[512], own[300] = "", v2own[300] = "", f[700], val[32];
    FILE *c = fopen("/proc/self/cgroup", "re");

    if (geteuid() != 0) {
        snprintf(why, whylen, "not root: cannot make a cgroup");
        return false;
    }
    if (c == NULL) {
        snprintf(why, whylen, "no /proc/self/cgroup");
        return false;
    }
    while (fgets(line, sizeof(line), c) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        *c2 = '\0';
        if (strstr(c1 + 1, "memory") != NULL)
            snprintf(own, sizeof(own), "/sys/fs/cgroup/memory%s", c2 + 1);
        else if (strcmp(line, "0") == 0 && c1[1] == '\0')
            snprintf(v2own, sizeof(v2own), "%s", c2 + 1);
    }
    fclose(c);
    snprintf(val, sizeof(val), "%llu\n", (unsigned long long)limit);
    if (own[0] != '\0' && access(own, W_OK) == 0) { /* v1 */
        snprintf(dir, len, "%s/pinpool-test-%d", own, (int)getpid());
        snprintf(f, sizeof(f), "%s/memory.limit_in_bytes", dir);
        if (mkdir(dir, 0755) == 0 || errno == EEXIST) {
            int fd = open(f, O_WRONLY | O_CLOEXEC);
            if (fd >= 0 && write(fd, val, strlen(val)) == (ssize_t)strlen(val)) {
                close(fd);
                return true;
            }
            if (fd >= 0)
                close(fd);
            rmdir(dir);
        }
        snprintf(why, whylen, "cgroup v1: cannot limit %s: %s", dir, strerror(errno));
        return false;
    }
    static const char *const mounts[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
    for (size_t i = 0; i < 2 && v2own[0] != '\0'; i++) {
        char parent[340], ctl[400];
        snprintf(parent, sizeof(parent), "%s%s", mounts[i], strcmp(v2own, "/") ? v2own : "");
        snprintf(ctl, sizeof(ctl), "%s/cgroup.controllers", parent);
        if (strstr(slurp(ctl, line, sizeof(line)), "memory") == NULL)
            continue;
        snprintf(ctl, sizeof(ctl), "%s/cgroup.subtree_control", parent);
        int fd = open(ctl, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (write(fd, "+memory", 7) < 0) { /* EBUSY: processes in it; then the child has none */
            }
            close(fd);
        }
        snprintf(dir, len, "%s/pinpool-test-%d", parent, (int)getpid());
        snprintf(f, sizeof(f), "%s/memory.max", dir);
        if ((mkdir(dir, 0755) == 0 || errno == EEXIST) && (fd = open(f, O_WRONLY | O_CLOEXEC)) >= 0) {
            bool ok = write(fd, val, strlen(val)) == (ssize_t)strlen(val);
            close(fd);
            if (ok)
                return true;
        }
        rmdir(dir);
        snprintf(why, whylen, "cgroup v2: no memory controller for a child of %s", parent);
        return false;
    }
    snprintf(why, whylen, "neither a writable cgroup v1 memory hierarchy nor a cgroup v2 one "
             "with the memory controller");
    return false;
}

static void join_cgroup(void *arg)
{
    char f[700], pid[32];
    int fd;

    snprintf(f, sizeof(f), "%s/cgroup.procs", (const char *)arg);
    snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    fd = open(f, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, pid, strlen(pid)) != (ssize_t)strlen(pid))
        _exit(126);
    close(fd);
}

/* GetPoolInfo's reply, raw (to compare libpinpool's struct and `pinpool info` with). */
static Pinpool__V1__GetPoolInfoResponse *raw_info(const char *sock)
{
    Pinpool__V1__GetPoolInfoRequest req = PINPOOL__V1__GET_POOL_INFO_REQUEST__INIT;
    Pinpool__V1__GetPoolInfoResponse *r = NULL;
    pinpool_ctx_t *ctx = pinpool__connect_rpc_only(sock);

    if (ctx != NULL && pinpool__call(ctx, PINPOOL__M_INFO, &req.base, (ProtobufCMessage **)&r) != 0)
        r = NULL;
    pinpool_close(ctx);
    return r;
}

Test(host_memory, a_pool_larger_than_the_cgroup_is_refused_or_stops_short_with_force,
     .timeout = 120)
{
    char base[64], cg[400], why[1024], sock[128], state[128], log[128], out[8192], f[700];
    Pinpool__V1__GetPoolInfoResponse *r = NULL;
    hd_t h;

    if (!make_cgroup(512 * MiB, cg, sizeof(cg), why, sizeof(why)))
        cr_skip_test("%s", why);
    make_base(base, sizeof(base), 0700);
    snprintf(log, sizeof(log), "%s/log", base);
    snprintf(sock, sizeof(sock), "%s/run/pinpool.sock", base);
    snprintf(state, sizeof(state), "%s/state", base);

    cr_expect_eq(hd_start(&h, log, join_cgroup, cg, "--socket", sock, "--state-dir", state,
                          "--mem-pool-size", "2GiB", "--chunk-size", "64MiB", NULL), 1, "%s",
                 slurp(log, out, sizeof(out)));
    hd_stop(&h);
    slurp(log, out, sizeof(out));
    TEST_EXPECT_IN(out, "--mem-pool-size 2.00 GiB does not fit: the cgroup ");
    TEST_EXPECT_IN(out, "allows 512.00 MiB");
    TEST_EXPECT_IN(out, "or --force");

    unlink(log);
    cr_assert_eq(hd_start(&h, log, join_cgroup, cg, "--socket", sock, "--state-dir", state,
                          "--mem-pool-size", "2GiB", "--chunk-size", "64MiB", "--force", NULL), 0,
                 "%s", slurp(log, out, sizeof(out)));
    for (int i = 0; i < 200; i++) {
        r = raw_info(sock);
        if (r != NULL && r->stopped_short[0] != '\0' && strstr(slurp(log, out, sizeof(out)),
                                                              "pool ready short") != NULL)
            break;
        if (r != NULL)
            protobuf_c_message_free_unpacked(&r->base, NULL);
        r = NULL;
        usleep(50000);
    }
    cr_assert_not_null(r, "the pool never said it stopped short: %s", slurp(log, out, sizeof(out)));
    cr_log_info("2 GiB pool in a 512 MiB cgroup, --force: %llu MiB made; %s",
                (unsigned long long)(r->ready_bytes / MiB), r->stopped_short);
    cr_expect_eq(r->capacity_bytes, 2048 * MiB);
    cr_expect_gt(r->ready_bytes, 0);
    cr_expect_leq(r->ready_bytes, 512 * MiB - 64 * MiB, "ready %llu",
                  (unsigned long long)r->ready_bytes);
    TEST_EXPECT_IN(r->stopped_short, "the cgroup ");
    { /* libpinpool and `pinpool info` say it too */
        pinpool_ctx_t *ctx = pinpool__connect_rpc_only(sock);
        pinpool_pool_info_t pi;
        char cli[8192];
        cr_assert_eq(pinpool_pool_info(ctx, &pi), 0, "%s", pinpool_errmsg(ctx));
        cr_expect_str_eq(pi.stopped_short, r->stopped_short);
        pinpool_pool_info_free(&pi);
        pinpool_close(ctx);
        cr_expect_eq(test_pinpool(cli, sizeof(cli), "info --socket %s", sock), 0, "%s", cli);
        TEST_EXPECT_IN(cli, "stopped short");
        TEST_EXPECT_IN(cli, r->stopped_short);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    slurp(log, out, sizeof(out));
    TEST_EXPECT_IN(out, "--force: starting anyway");
    TEST_EXPECT_IN(out, "the pool stops growing at ");
    cr_expect_eq(use_daemon(sock), 0, "the short pool does not serve");
    cr_expect_eq(kill(h.pid, 0), 0, "the daemon is gone");
    cr_expect_eq(hd_stop(&h), 0);
    snprintf(f, sizeof(f), "%s/memory.oom_control", cg);
    if (access(f, F_OK) != 0)
        snprintf(f, sizeof(f), "%s/memory.events", cg);
    const char *oom = strstr(slurp(f, out, sizeof(out)), "oom_kill ");
    cr_expect(oom == NULL || strncmp(oom, "oom_kill 0", 10) == 0, "%s: %s", f, out);
    for (int i = 0; i < 100 && rmdir(cg) != 0; i++)
        usleep(20000);
    test_rm_rf(base);
}

