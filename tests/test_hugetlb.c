/*
 * test_hugetlb.c - the hugetlb host backends and --huge-pages: chunks that
 * are MFD_HUGETLB memfds (2 MiB and 1 GiB pages), mapped by clients through
 * the fds they receive; huge pages found free, reserved by root and given
 * back (at exit, and a killed daemon's at the next start); the refusals
 * (too few pages, reserve without root, --huge-pages never), and the
 * register path of `hugetlb` on the stand-in driver (tests/mock/libcuda.c).
 *
 * Owns: the kernel's count of 2 MiB and 1 GiB huge pages for the length of
 * each test: every test takes an exclusive flock on LOCK first (the tests of
 * this file run in parallel processes, and the count is the node's), sets
 * the count it needs and puts the one it found back in .fini.
 * Never: runs without root (it skips: only root may set nr_hugepages).
 * Locking: LOCK, above; nothing else is shared.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "ipc.h"
#include "mockcuda.h"
#include "pinpool.h"
#include "util.h"

#define MiB (1024ull * 1024)
#define GiB (1024 * MiB)
#define LOCK "/run/pinpool-test-hugepages.lock"

static test_daemon_t d;
static int lock_fd = -1;
static long saved_2m = -1, saved_1g = -1;

static const char *nr_path(uint64_t page)
{
    return page == GiB ? "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages"
                       : "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
}

static long read_long(const char *path)
{
    long v = -1;
    FILE *f = fopen(path, "re");

    if (f != NULL) {
        if (fscanf(f, "%ld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

static long nr_get(uint64_t page)
{
    return read_long(nr_path(page));
}

static long free_get(uint64_t page)
{
    return read_long(page == GiB ? "/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages"
                                 : "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
}

/* Set the kernel's pool of that size to n pages; what it holds after. */
static long nr_set(uint64_t page, long n)
{
    FILE *f = fopen(nr_path(page), "we");

    if (f != NULL) {
        fprintf(f, "%ld\n", n);
        fclose(f);
    }
    return nr_get(page);
}

static void setup(void)
{
    if (geteuid() != 0 || nr_get(2 * MiB) < 0)
        cr_skip_test("needs root and 2 MiB huge pages (/sys/kernel/mm/hugepages)");
    lock_fd = open(LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    cr_assert(lock_fd >= 0 && flock(lock_fd, LOCK_EX) == 0, "cannot lock %s", LOCK);
    saved_2m = nr_get(2 * MiB);
    saved_1g = nr_get(GiB);
    nr_set(2 * MiB, 0);
    if (saved_1g > 0)
        nr_set(GiB, 0);
    d.pid = 0;
}

static void teardown(void)
{
    if (d.pid > 0)
        test_daemon_stop(&d);
    if (saved_2m >= 0)
        nr_set(2 * MiB, saved_2m);
    if (saved_1g >= 0)
        nr_set(GiB, saved_1g);
    if (lock_fd >= 0)
        close(lock_fd);
}

TestSuite(hugetlb, .init = setup, .fini = teardown, .timeout = 90);

/* The daemon's log so far, into buf. */
static const char *daemon_log(char *buf, size_t len)
{
    FILE *f = fopen(d.log, "re");
    size_t n = 0;

    buf[0] = '\0';
    if (f != NULL) {
        n = fread(buf, 1, len - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

/* Allocate slices of several sizes (none a multiple of a huge page), fill
 * each with its own bytes, check them all: what a client maps is the pool. */
static void slices_round_trip(pinpool_ctx_t *ctx, uint64_t align_check)
{
    static const uint64_t sizes[] = {4096, 1 * MiB + 12345, 3 * MiB, 5 * MiB + 1};
    pinpool_slice_t s[4];

    for (int i = 0; i < 4; i++) {
        cr_assert_eq(pinpool_alloc(ctx, sizes[i], NULL, &s[i]), 0, "alloc %" PRIu64 ": %s",
                     sizes[i], pinpool_errmsg(ctx));
        test_fill(s[i].ptr, sizes[i], (unsigned)i + 7);
    }
    for (int i = 0; i < 4; i++) {
        cr_expect(test_same(s[i].ptr, sizes[i], (unsigned)i + 7), "slice %d reads other bytes", i);
        /* the client's mapping of the chunk starts on a huge page */
        cr_expect_eq(((uintptr_t)s[i].ptr - s[i].start_offset) % align_check, 0,
                     "slice %d at %p (offset %" PRIu64 ") is not in a mapping aligned to %" PRIu64,
                     i, s[i].ptr, s[i].start_offset, align_check);
        cr_expect_eq(pinpool_free(ctx, s[i].id, NULL), 0);
    }
}

Test(hugetlb, cpu_backend_serves_slices_from_free_huge_pages)
{
    char log[16384];

    cr_assert_eq(nr_set(2 * MiB, 40), 40);
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   "--host-backend", "hugetlb-cpu", NULL), 0);
    TEST_EXPECT_IN(d.ready, "backend=hugetlb-cpu");
    TEST_EXPECT_IN(daemon_log(log, sizeof(log)), "32 of 40 free 2 MiB huge pages");
    pinpool_ctx_t *ctx = test_connect(&d);
    slices_round_trip(ctx, 2 * MiB);
    /* the pool is in huge pages: 32 of the 40 taken once all 4 chunks are made */
    pinpool_pool_info_t info;
    for (int i = 0; i < 1000; i++) {
        test_pool_info(ctx, &info);
        if (info.ready_bytes == info.capacity_bytes)
            break;
        usleep(10000);
    }
    cr_expect_eq(info.ready_bytes, 64 * MiB);
    cr_expect_eq(free_get(2 * MiB), 8, "free 2 MiB pages with the pool up: %ld", free_get(2 * MiB));
    pinpool_close(ctx);
    cr_expect_eq(test_daemon_stop(&d), 0);
    d.pid = 0;
    cr_expect_eq(free_get(2 * MiB), 40, "the pool's huge pages are not back: %ld free",
                 free_get(2 * MiB));
}

Test(hugetlb, too_few_free_pages_is_refused_with_what_is_missing)
{
    char out[8192];

    cr_assert_eq(nr_set(2 * MiB, 10), 10);
    cr_expect_eq(test_pinpool(out, sizeof(out), "serve --socket /tmp/pinpool-hugetlb-t%d/p.sock "
                              "--mem-pool-size 64MiB --chunk-size 16MiB --host-backend hugetlb-cpu",
                              (int)getpid()), 1, "%s", out);
    TEST_EXPECT_IN(out, "--host-backend hugetlb-cpu needs huge pages for the pool and has none");
    TEST_EXPECT_IN(out, "32 2 MiB pages needed, 10 free for the 64.00 MiB pool");
    TEST_EXPECT_IN(out, "--huge-pages reserve as root");
    cr_expect_eq(nr_get(2 * MiB), 10, "a refused start changed nr_hugepages");
}

Test(hugetlb, never_is_refused_for_a_hugetlb_backend_and_auto_goes_without)
{
    char out[8192];

    cr_assert_eq(nr_set(2 * MiB, 40), 40);
    cr_expect_eq(test_pinpool(out, sizeof(out), "serve --socket /tmp/pinpool-hugetlb-t%d/p.sock "
                              "--mem-pool-size 64MiB --chunk-size 16MiB --host-backend hugetlb-cpu "
                              "--huge-pages never", (int)getpid()), 1, "%s", out);
    TEST_EXPECT_IN(out, "needs huge pages for the pool and has none: --huge-pages never");
    /* auto on this CPU-only build takes no huge pages even when they are free */
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB", NULL), 0);
    TEST_EXPECT_IN(d.ready, "backend=memfd");
    cr_expect_eq(free_get(2 * MiB), 40);
}

Test(hugetlb, reserve_raises_nr_hugepages_and_gives_them_back_at_exit)
{
    char log[16384];

    cr_assert_eq(nr_set(2 * MiB, 3), 3);
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   "--host-backend", "hugetlb-cpu", "--huge-pages", "reserve", NULL), 0);
    /* 32 for the pool and 8 for one chunk to spare (a replacement), less the 3 free */
    cr_expect_eq(nr_get(2 * MiB), 3 + 37, "nr_hugepages with the pool up: %ld", nr_get(2 * MiB));
    TEST_EXPECT_IN(daemon_log(log, sizeof(log)), "reserved 37 2 MiB huge pages");
    pinpool_ctx_t *ctx = test_connect(&d);
    slices_round_trip(ctx, 2 * MiB);
    pinpool_close(ctx);
    cr_expect_eq(test_daemon_stop(&d), 0);
    d.pid = 0;
    cr_expect_eq(nr_get(2 * MiB), 3, "nr_hugepages after exit: %ld", nr_get(2 * MiB));
}

Test(hugetlb, pages_a_killed_daemon_reserved_are_given_back_at_the_next_start)
{
    char log[16384];

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                   "--host-backend", "hugetlb-cpu", "--huge-pages", "reserve", NULL), 0);
    cr_expect_eq(nr_get(2 * MiB), 24);
    cr_expect_eq(test_daemon_kill(&d, SIGKILL), 128 + SIGKILL);
    cr_expect_eq(nr_get(2 * MiB), 24, "SIGKILL gave the pages back?");
    /* any daemon run by root gives them back at its start, whatever its backend */
    cr_assert_eq(test_daemon_restart(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                     "--host-backend", "memfd", NULL), 0);
    cr_expect_eq(nr_get(2 * MiB), 0, "nr_hugepages after the next start: %ld", nr_get(2 * MiB));
    TEST_EXPECT_IN(daemon_log(log, sizeof(log)), "gave back 24 2 MiB huge pages that pinpool pid");
}

Test(hugetlb, reserve_without_root_is_refused)
{
    char dir[64], out[8192];

    snprintf(dir, sizeof(dir), "/tmp/pinpool-hugetlb-nobody-%d", (int)getpid());
    cr_assert_eq(mkdir(dir, 0700), 0);
    cr_assert_eq(chown(dir, 65534, 65534), 0);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "setpriv --reuid=65534 --regid=65534 --clear-groups %s serve "
             "--socket %s/p.sock --mem-pool-size 32MiB --chunk-size 16MiB --host-backend "
             "hugetlb-cpu --huge-pages reserve --state-dir %s/state 2>&1",
             getenv("PINPOOL_BIN") ? getenv("PINPOOL_BIN") : "build/pinpool", dir, dir);
    FILE *p = popen(cmd, "r");
    cr_assert(p != NULL);
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    test_rm_rf(dir);
    cr_expect(WIFEXITED(rc) && WEXITSTATUS(rc) == 1, "exit %d: %s", rc, out);
    TEST_EXPECT_IN(out, "--huge-pages reserve needs root to raise nr_hugepages (this daemon runs as "
                        "uid 65534)");
    cr_expect_eq(nr_get(2 * MiB), 0);
}

Test(hugetlb, one_gib_pages_when_the_chunk_is_a_multiple_of_them)
{
    char log[16384];

    if (nr_get(GiB) < 0)
        cr_skip_test("this kernel has no 1 GiB huge pages");
    if (nr_set(GiB, 1) != 1)
        cr_skip_test("the kernel cannot make a 1 GiB page here (memory too fragmented)");
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "1GiB", "--chunk-size", "1GiB",
                                   "--host-backend", "hugetlb-cpu", NULL), 0);
    TEST_EXPECT_IN(daemon_log(log, sizeof(log)), "1 of 1 free 1 GiB huge pages");
    pinpool_ctx_t *ctx = test_connect(&d);
    slices_round_trip(ctx, GiB);
    cr_expect_eq(free_get(GiB), 0);
    pinpool_close(ctx);
}

/* ---- the ipc layer directly ------------------------------------------------------ */

Test(hugetlb, a_replacement_without_a_free_huge_page_gets_4k_pages_and_says_so)
{
    const ipc_host_ops_t *h = &ipc_host_hugetlb_cpu;
    ipc_chunk_t c;
    char err[512] = "";
    void *base;

    cr_assert_eq(nr_set(2 * MiB, 2), 2);
    cr_assert_eq(ipc_hugetlb_configure(2 * MiB, 2 * MiB), 0);
    cr_assert_eq(h->reserve(4 * MiB, &base), 0);
    cr_expect_eq((uintptr_t)base % (2 * MiB), 0);
    cr_assert_eq(h->chunk_create(&c, base, 4 * MiB, 0, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(free_get(2 * MiB), 0);
    memset(c.addr, 0xab, 4 * MiB);
    cr_expect_eq(h->chunk_replace(&c, 0, err, sizeof(err)), 0, "%s", err);
    TEST_EXPECT_IN(err, "chunk 0 got 4 KiB pages: no free 2 MiB huge page for chunk 0");
    cr_expect_eq(((unsigned char *)c.addr)[4 * MiB - 1], 0, "fresh memory is not zero");
    ((unsigned char *)c.addr)[12345] = 1;
    h->chunk_destroy(&c);
    cr_expect_eq(free_get(2 * MiB), 2, "the huge pages are not back after destroy");
    /* and a chunk that finds no page at all: -ENOSPC, saying what to do */
    cr_assert_eq(nr_set(2 * MiB, 1), 1);
    cr_expect_eq(h->chunk_create(&c, base, 4 * MiB, 3, err, sizeof(err)), -ENOSPC);
    TEST_EXPECT_IN(err, "no free 2 MiB huge page for chunk 3");
    TEST_EXPECT_IN(err, "raise vm.nr_hugepages");
    cr_expect_eq(free_get(2 * MiB), 1, "a failed chunk kept its pages");
    cr_expect_eq(h->chunk_create(&c, (char *)base + 4096, 2 * MiB, 4, err, sizeof(err)), -EINVAL,
                 "a chunk off the huge page boundary was made");
    h->release(base, 4 * MiB);
}

/* ---- hugetlb: pinned with cuMemHostRegister (the stand-in driver) ---------------- */

Test(hugetlb, auto_picks_hugetlb_where_cuda_works_and_pages_are_free)
{
    char log[16384];

    test_use_mock_cuda();
    cr_assert_eq(nr_set(2 * MiB, 32), 32);
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   "--pin-unit", "4MiB", NULL), 0);
    TEST_EXPECT_IN(d.ready, "backend=hugetlb");
    TEST_EXPECT_IN(d.ready, "mode=cuda");
    TEST_EXPECT_IN(daemon_log(log, sizeof(log)), "host backend auto: hugetlb, the fastest here");
    pinpool_ctx_t *ctx = test_connect(&d);
    int before = test_mock_calls("cuMemHostRegister");
    slices_round_trip(ctx, 2 * MiB);
    /* the client registered what it mapped (the stand-in refuses a second
     * registration of a range, so unmapping unregistered it too) */
    cr_expect_gt(test_mock_calls("cuMemHostRegister"), before);
    pinpool_close(ctx);
}

Test(hugetlb, auto_without_free_pages_says_why_it_skipped_hugetlb)
{
    char log[16384];

    test_use_mock_cuda();
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB", NULL), 0);
    TEST_EXPECT_IN(d.ready, "backend=vmm");
    TEST_EXPECT_IN(daemon_log(log, sizeof(log)), "skipped hugetlb: 32 2 MiB pages needed, 0 free");
}

Test(hugetlb, a_chunk_the_driver_cannot_pin_fails_the_start_with_the_reason)
{
    char out[8192];

    test_use_mock_cuda();
    cr_assert_eq(nr_set(2 * MiB, 16), 16);
    setenv("PINPOOL_MOCK_FAIL", "cuMemHostRegister", 1);
    int rc = test_pinpool(out, sizeof(out), "serve --socket /tmp/pinpool-hugetlb-t%d/p.sock "
                          "--mem-pool-size 32MiB --chunk-size 16MiB --host-backend hugetlb "
                          "--pin-threads 1", (int)getpid());
    unsetenv("PINPOOL_MOCK_FAIL");
    cr_expect_eq(rc, 1, "%s", out);
    TEST_EXPECT_IN(out, "cannot pin hugetlb chunk 0");
    TEST_EXPECT_IN(out, "ulimit -l");
    cr_expect_eq(free_get(2 * MiB), 16, "the failed chunk kept its huge pages");
}

/*
 * Start-up that does not wait for the pool (issue 16.2): chunk 0 is made
 * alone and served at once, in units (--pin-unit) of cuMemHostRegister.  The
 * stand-in driver lets the daemon's first 4 registrations through (chunk 0:
 * 16 MiB in 4 MiB units) and holds every later one while the gate exists: the
 * daemon must be ready, and a client served, with chunks 1-3 still held.
 */
Test(hugetlb, the_first_allocation_is_served_while_later_chunks_are_still_pinning)
{
    char gate[64];
    pinpool_pool_info_t info;
    pinpool_slice_t s;

    test_use_mock_cuda();
    cr_assert_eq(nr_set(2 * MiB, 40), 40);
    snprintf(gate, sizeof(gate), "/tmp/pinpool-hugetlb-gate-%d", (int)getpid());
    int fd = open(gate, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    char env[96];
    snprintf(env, sizeof(env), "%s:4", gate);
    setenv("PINPOOL_MOCK_REGISTER_GATE", env, 1);
    int rc = test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                               "--host-backend", "hugetlb", "--pin-unit", "4MiB",
                               "--pin-threads", "2", NULL);
    unsetenv("PINPOOL_MOCK_REGISTER_GATE"); /* this process (the client) is not held */
    if (rc != 0)
        unlink(gate);
    cr_assert_eq(rc, 0);
    pinpool_ctx_t *ctx = test_connect(&d);
    test_pool_info(ctx, &info);
    cr_expect_eq(info.ready_bytes, 16 * MiB, "ready with the gate shut: %llu",
                 (unsigned long long)info.ready_bytes);
    cr_expect_eq(pinpool_alloc(ctx, 8 * MiB, NULL, &s), 0, "%s", pinpool_errmsg(ctx));
    test_fill(s.ptr, 8 * MiB, 3);
    cr_expect(test_same(s.ptr, 8 * MiB, 3));
    test_pool_info(ctx, &info);
    cr_expect_eq(info.ready_bytes, 16 * MiB, "the later chunks were not held: the test proves nothing");
    unlink(gate);
    for (int i = 0; i < 2000 && info.ready_bytes < 64 * MiB; i++) {
        usleep(10000);
        test_pool_info(ctx, &info);
    }
    cr_expect_eq(info.ready_bytes, 64 * MiB, "the pool did not complete once the gate opened");
    cr_expect_eq(pinpool_free(ctx, s.id, NULL), 0);
    pinpool_close(ctx);
}

/* bench/gpu_run end to end on the stand-in driver with tiny sizes: every
 * step runs (none "NOT RUN") and the summary has each backend's numbers.
 * What the numbers say means nothing here (tests/mock/libcuda.c). */
Test(hugetlb, bench_gpu_run_runs_end_to_end_on_the_stand_in_driver, .timeout = 240)
{
    const char *build = getenv("PINPOOL_BUILD");
    char cmd[1024], out[2048], dir[64];

    test_use_mock_cuda();
    snprintf(dir, sizeof(dir), "/tmp/pinpool-gpurun-test-%d", (int)getpid());
    snprintf(cmd, sizeof(cmd), "PINPOOL_BENCH_POOL=64MiB PINPOOL_BENCH_ATTACH=16MiB "
             "PINPOOL_BENCH_ATTACH_POOL=64MiB PINPOOL_BENCH_PROBE_ATTACH=8MiB "
             "PINPOOL_BENCH_FOOT_POOL=32MiB PINPOOL_BENCH_BANDWIDTH=0 PINPOOL_BENCH_ATTACH_RUNS=2 "
             "PINPOOL_BENCH_ROUNDS=1 PINPOOL_BENCH_PIN_THREADS=2 bench/gpu_run %s %s 2>&1",
             build != NULL ? build : "build", dir);
    int rc = test_run_cmd(cmd, out, sizeof(out));
    char log[65536], path[128];
    snprintf(path, sizeof(path), "%s/gpu_run.log", dir);
    FILE *f = fopen(path, "re");
    size_t n = f != NULL ? fread(log, 1, sizeof(log) - 1, f) : 0;
    log[n] = '\0';
    if (f != NULL)
        fclose(f);
    test_rm_rf(dir);
    cr_expect_eq(rc, 0, "gpu_run failed: %s\n%s", out, log);
    TEST_EXPECT_IN(log, "gpu_run: done in");
    cr_expect(strstr(log, "NOT RUN") == NULL, "a step did not run:\n%s", log);
    for (const char *const *b = (const char *const[]){"hugetlb ", "vmm ", "register ", NULL}; *b; b++) {
        char want[64];
        snprintf(want, sizeof(want), "round 1: %s", *b);
        want[strlen(want) - 1] = ':';
        TEST_EXPECT_IN(log, want);
    }
    TEST_EXPECT_IN(log, "while hugetlb64 pins: probe ");
    TEST_EXPECT_IN(log, "hugetlb gpu: median ");
    TEST_EXPECT_IN(log, "vmm: device-cached ");
    cr_expect_eq(nr_get(2 * MiB), 0, "gpu_run left huge pages reserved");
}

/* A memory cgroup of limit bytes under this process's own (v1 or v2): its
 * directory into dir, or false with why. */
static bool memory_cgroup(uint64_t limit, char *dir, size_t len, char *why, size_t whylen)
{
    char line[512], v1[300] = "", v2[300] = "", f[700], val[32];
    FILE *c = fopen("/proc/self/cgroup", "re");

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
            snprintf(v1, sizeof(v1), "/sys/fs/cgroup/memory%s", c2 + 1);
        else if (strcmp(line, "0") == 0 && c1[1] == '\0')
            snprintf(v2, sizeof(v2), "/sys/fs/cgroup%s", c2 + 1);
    }
    fclose(c);
    bool is_v1 = v1[0] != '\0' && access(v1, W_OK) == 0;
    snprintf(dir, len, "%s/pinpool-hugetest-%d", is_v1 ? v1 : v2, (int)getpid());
    snprintf(f, sizeof(f), "%s/%s", dir, is_v1 ? "memory.limit_in_bytes" : "memory.max");
    snprintf(val, sizeof(val), "%llu\n", (unsigned long long)limit);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(why, whylen, "cannot make %s: %s", dir, strerror(errno));
        return false;
    }
    int fd = open(f, O_WRONLY | O_CLOEXEC);
    bool ok = fd >= 0 && write(fd, val, strlen(val)) == (ssize_t)strlen(val);
    if (fd >= 0)
        close(fd);
    if (!ok) {
        snprintf(why, whylen, "cannot set %s", f);
        rmdir(dir);
    }
    return ok;
}

/* The pool's huge pages are neither in MemAvailable nor charged to the
 * memory cgroup: a hugetlb pool larger than the cgroup's room starts (a
 * 4 KiB pool of that size is refused: "does not fit"). */
Test(hugetlb, a_pool_in_huge_pages_is_not_held_to_the_cgroup_limit)
{
    char cg[400], why[1024], cmd[2048], out[8192], dir[64];

    if (!memory_cgroup(96 * MiB, cg, sizeof(cg), why, sizeof(why)))
        cr_skip_test("%s", why);
    cr_assert_eq(nr_set(2 * MiB, 64), 64);
    snprintf(dir, sizeof(dir), "/tmp/pinpool-hugetlb-cg-%d", (int)getpid());
    const char *bin = getenv("PINPOOL_BIN") ? getenv("PINPOOL_BIN") : "build/pinpool";
    for (int huge = 0; huge <= 1; huge++) {
        snprintf(cmd, sizeof(cmd), "timeout -s TERM 3 sh -c 'echo $$ > %s/cgroup.procs && exec %s "
                 "serve --socket %s/p.sock --state-dir %s/state --mem-pool-size 128MiB "
                 "--chunk-size 16MiB --host-backend %s' 2>&1", cg, bin, dir, dir,
                 huge ? "hugetlb-cpu" : "memfd");
        FILE *p = popen(cmd, "r");
        cr_assert(p != NULL);
        size_t n = fread(out, 1, sizeof(out) - 1, p);
        out[n] = '\0';
        pclose(p);
        if (huge) {
            TEST_EXPECT_IN(out, "pinpool ready:");
            TEST_EXPECT_IN(out, "backend=hugetlb-cpu");
        } else {
            TEST_EXPECT_IN(out, "--mem-pool-size 128.00 MiB does not fit");
        }
    }
    test_rm_rf(dir);
    rmdir(cg);
}
