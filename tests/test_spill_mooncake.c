/*
 * test_spill_mooncake.c - the daemon spilling to a real Mooncake Store.
 *
 * Each test starts mooncake_master + a mooncake_client process contributing
 * the memory (tests/mooncake.c, from the PyPI wheel) on loopback, then
 * `pinpool serve --spill-tier mooncake://127.0.0.1:PORT?...`.  With the wheel
 * the tier reaches Mooncake through server/mooncake_adapter.py (the wheel has
 * no C API to dlopen; README "Which way to Mooncake").  Every wait is bounded;
 * the suite's .fini stops the daemon and kills both Mooncake processes.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "churn.h"
#include "daemon.h"
#include "mooncake.h"
#include "pinpool.h"
#include "util.h"

#define MiB (1024ull * 1024)
#define SLICE (12 * MiB) /* one per 16 MiB chunk: 4 fit in the 64 MiB pool */

static test_daemon_t d;

static void teardown(void)
{
    int rc = d.pid > 0 ? test_daemon_stop(&d) : 0;

    mc_teardown();
    test_fini_check(rc == 0, "the daemon exited with %d on SIGTERM, not 0", rc);
}

/* Mooncake on loopback, then the daemon spilling to it (64 MiB pool). */
static void start(const char *extra_params)
{
    mc_start_cluster("1000", extra_params);
    if (test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                          "--spill-low-watermark", "0", "--spill-tier", mc.uri, "--log-level",
                          "debug", NULL) != 0) {
        mc_dump_logs();
        cr_assert_fail("the daemon did not start with --spill-tier %s", mc.uri);
    }
}

/* alloc + fill with seed + release under "obj-SEED" */
static void put_released(pinpool_ctx_t *ctx, unsigned seed)
{
    pinpool_slice_t s;
    char key[16];
    int rc = pinpool_alloc(ctx, SLICE, NULL, &s);

    cr_assert_eq(rc, 0, "alloc for obj-%u: %s", seed, pinpool_errmsg(ctx));
    test_fill(s.ptr, SLICE, seed);
    snprintf(key, sizeof(key), "obj-%u", seed);
    cr_assert_eq(pinpool_release(ctx, s.id, key, 0), 0, "%s", pinpool_errmsg(ctx));
}

/* acquire "obj-SEED", check every byte, free it */
static void check_acquired(pinpool_ctx_t *ctx, unsigned seed)
{
    pinpool_slice_t r;
    char key[16];
    int rc;

    snprintf(key, sizeof(key), "obj-%u", seed);
    rc = pinpool_acquire(ctx, key, 0, &r);
    if (rc != 0) {
        test_daemon_dump_log(&d);
        cr_assert_fail("acquire %s: %s: %s", key, pinpool_err_name(rc), pinpool_errmsg(ctx));
    }
    cr_assert_eq(r.size, SLICE);
    cr_assert(test_same(r.ptr, SLICE, seed), "%s came back different", key);
    cr_assert_eq(pinpool_free(ctx, r.id, NULL), 0, "%s", pinpool_errmsg(ctx));
}

/* The Mooncake key the daemon spilled key to, from its debug log: the prefix
 * + "UID/GEN/KEY". */
static void spilled_name(const char *key, char *name, size_t len)
{
    char cmd[512];
    FILE *p;

    snprintf(cmd, sizeof(cmd), "sed -n \"s/.*spilled '%s' ([0-9]* bytes) as '\\([^']*\\)'.*/\\1/p\" "
             "'%s' | tail -n 1", key, d.log);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    name[0] = '\0';
    if (fgets(name, (int)len, p) == NULL)
        name[0] = '\0';
    pclose(p);
    name[strcspn(name, "\n")] = '\0';
    cr_assert_neq(name[0], '\0', "the daemon's log names no spill of %s", key);
    /* the tier's prefix (the URI's prefix=) comes first */
    memmove(name + 14, name, strlen(name) + 1);
    memcpy(name, "pinpool/spill/", 14);
}

TestSuite(spill_mooncake, .fini = teardown, .timeout = 150);

/* 8 released slices of 12 MiB into a 64 MiB pool: 4 spill to Mooncake; every
 * acquire brings its bytes back (spilling others to make room). */
Test(spill_mooncake, beyond_capacity_spills_to_mooncake_and_acquire_restores)
{
    enum { N = 8 };
    pinpool_pool_info_t pi;

    start("");
    pinpool_ctx_t *ctx = test_connect(&d);
    for (unsigned i = 0; i < N; i++)
        put_released(ctx, i);
    test_pool_info(ctx, &pi);
    cr_expect_str_eq(pi.spill.tier, "mooncake");
    cr_expect_eq(pi.spill.objects, N);
    cr_expect_eq(pi.spill.objects_spilled, 4, "%u spilled", pi.spill.objects_spilled);
    cr_expect_eq(pi.spill.objects_resident, 4);
    cr_expect_eq(pi.spill.spills, 4);
    cr_expect_eq(pi.spill.bytes_spilled, 4 * SLICE);
    cr_expect_eq(pi.spill.spill_failures, 0, "%s", pi.spill.last_error);
    cr_expect_gt(pi.spill.spill_gbps, 0);
    cr_log_info("spill through Mooncake: %.3f GB/s, %.1f ms per 12 MiB object",
                pi.spill.spill_gbps, pi.spill.spill_avg_ms);

    for (unsigned i = 0; i < N; i++)
        check_acquired(ctx, i);
    test_pool_info(ctx, &pi);
    cr_expect_geq(pi.spill.restores, 4);
    cr_expect_eq(pi.spill.bytes_restored, pi.spill.restores * SLICE);
    cr_expect_eq(pi.spill.bytes_spilled, pi.spill.spills * SLICE);
    cr_expect_eq(pi.spill.spill_failures, 0, "%s", pi.spill.last_error);
    cr_expect_eq(pi.spill.restore_failures, 0, "%s", pi.spill.last_error);
    cr_expect_eq(pi.spill.objects, 0);
    cr_expect_eq(pi.used_bytes, 0);
    cr_log_info("restore from Mooncake: %.3f GB/s (%" PRIu64 " restores, %" PRIu64 " spills)",
                pi.spill.restore_gbps, pi.spill.restores, pi.spill.spills);
    pinpool_close(ctx);
}

/* The tier's key for object K is prefix + UID/GEN/K (the owner's uid, the
 * object's generation in 16 hex digits: server/spill.c; bytes outside
 * printable ASCII and '%' written %XX: server/tier_mooncake.c), which the
 * daemon's debug log names; Mooncake's own Python client reads a spilled
 * object there, byte for byte. */
Test(spill_mooncake, an_independent_client_reads_a_spilled_key)
{
    pinpool_pool_info_t pi;
    char path[128];
    void *got = malloc(SLICE + 1);
    FILE *f;

    start("prefix=pinpool%2Fspill%2F");
    pinpool_ctx_t *ctx = test_connect(&d);
    for (unsigned i = 0; i < 5; i++) /* the 5th spills obj-0, the least recently used */
        put_released(ctx, i);
    test_pool_info(ctx, &pi);
    cr_assert_eq(pi.spill.spills, 1, "%s", pi.spill.last_error);

    char name[256];
    spilled_name("obj-0", name, sizeof(name));
    cr_log_info("obj-0 is in Mooncake as %s", name);
    cr_assert(strncmp(name, "pinpool/spill/", 14) == 0, "%s", name);
    snprintf(path, sizeof(path), "%s/peer.bin", mc.dir);
    cr_assert_eq(mc_run_peer("get", name, path), 0,
                 "Mooncake's Python client could not read %s (see peer.log)", name);
    f = fopen(path, "rb");
    cr_assert_not_null(f);
    cr_assert_eq(fread(got, 1, SLICE + 1, f), SLICE, "the Python client read another size");
    fclose(f);
    cr_assert(test_same(got, SLICE, 0), "the Python client read other bytes");
    name[strlen(name) - 1] = '1'; /* obj-1 under obj-0's generation: no such key */
    cr_expect_eq(mc_run_peer("get", name, path), 2, "%s is not in Mooncake", name);
    free(got);
    /* and the daemon still restores it after the other client's read */
    check_acquired(ctx, 0);
    pinpool_close(ctx);
}

struct allocator {
    const char *socket;
    int rc;
    char msg[512];
    double secs;
    volatile int done;
};

/* An allocation that needs a spill, on its own connection. */
static void *alloc_one(void *arg)
{
    struct allocator *a = arg;
    pinpool_ctx_t *ctx = pinpool_connect(a->socket);
    pinpool_slice_t s;
    double t0 = test_now_s();

    a->rc = pinpool_err(ctx);
    if (a->rc == 0)
        a->rc = pinpool_alloc(ctx, SLICE, NULL, &s);
    a->secs = test_now_s() - t0;
    snprintf(a->msg, sizeof(a->msg), "%s", pinpool_errmsg(ctx));
    if (a->rc == 0)
        pinpool_free(ctx, s.id, NULL);
    pinpool_close(ctx);
    __atomic_store_n(&a->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static bool log_has(const char *what)
{
    char cmd[512];

    snprintf(cmd, sizeof(cmd), "grep -qF '%s' '%s'", what, d.log);
    return system(cmd) == 0;
}

/*
 * mooncake_master SIGKILLed while the daemon spills: to hold the kill inside
 * a spill, the mooncake_client owning the segment is stopped (SIGSTOP) so the
 * put's transfer stalls after the master granted it; the master dies there.
 * No slice data is lost (the slice stays resident: it leaves the pool only
 * after the tier confirmed the put), the error shows in GetPoolInfo and the
 * log, and once a master listens on the same ports again spilling resumes and
 * every object comes back byte-exact.
 */
Test(spill_mooncake, master_killed_mid_spill_loses_nothing_and_spilling_resumes, .timeout = 200)
{
    pinpool_pool_info_t pi;
    pinpool_slice_t a[4], r;
    struct allocator al = {0};
    pthread_t th;
    int rc;

    start("timeout_ms=10000");
    pinpool_ctx_t *ctx = test_connect(&d);
    for (unsigned i = 0; i < 4; i++) /* the pool is full of released objects */
        put_released(ctx, i);
    test_pool_info(ctx, &pi);
    cr_assert_eq(pi.spill.spills, 0);

    cr_assert_eq(kill(mc.client, SIGSTOP), 0);
    al.socket = d.socket;
    cr_assert_eq(pthread_create(&th, NULL, alloc_one, &al), 0);
    usleep(1500000); /* an unstalled 12 MiB spill takes well under 0.2 s */
    bool in_flight = !__atomic_load_n(&al.done, __ATOMIC_ACQUIRE);
    test_pool_info(ctx, &pi);
    uint64_t spills_before_kill = pi.spill.spills;
    mc_stop(&mc.master); /* SIGKILL */
    kill(mc.client, SIGCONT);
    for (double t0 = test_now_s(); !__atomic_load_n(&al.done, __ATOMIC_ACQUIRE);) {
        if (test_now_s() - t0 > 40) {
            test_daemon_dump_log(&d);
            cr_assert_fail("the allocation waiting on the spill did not return within 40 s "
                           "(timeout_ms is 10 s)");
        }
        usleep(20000);
    }
    pthread_join(th, NULL);
    cr_assert(in_flight, "the spill ended (%s in %.2f s) before the master was killed: "
              "the kill did not land mid-spill", pinpool_err_name(al.rc), al.secs);
    cr_assert_eq(spills_before_kill, 0);
    cr_log_info("allocation during the kill: %s after %.1f s: %s", pinpool_err_name(al.rc),
                al.secs, al.msg);
    cr_assert_eq(al.rc, PINPOOL_ENOSPC, "%s: %s", pinpool_err_name(al.rc), al.msg);
    cr_expect(strstr(al.msg, "spill") != NULL, "%s", al.msg);

    test_pool_info(ctx, &pi);
    cr_assert_eq(pi.spill.spills, 0, "a spill was counted although the master died in it");
    cr_expect_geq(pi.spill.spill_failures, 1);
    cr_expect_neq(pi.spill.last_error[0], '\0');
    cr_expect_eq(pi.spill.objects_resident, 4, "the objects stay in the pool");
    cr_expect_eq(pi.spill.objects_spilled, 0);
    cr_expect(log_has("spill tier: put"), "the daemon's log names the failed put");
    cr_log_info("last spill error: %s", pi.spill.last_error);

    /* Without a master: every object is still whole (acquire, check, release
     * again), and an allocation that needs a spill fails in bounded time. */
    for (unsigned i = 0; i < 4; i++) {
        char key[16];
        snprintf(key, sizeof(key), "obj-%u", i);
        cr_assert_eq(pinpool_acquire(ctx, key, 0, &r), 0, "%s", pinpool_errmsg(ctx));
        cr_assert(test_same(r.ptr, SLICE, i), "%s changed while the master was down", key);
        cr_assert_eq(pinpool_release(ctx, r.id, key, 0), 0, "%s", pinpool_errmsg(ctx));
    }
    double t0 = test_now_s();
    rc = pinpool_alloc(ctx, SLICE, NULL, &r);
    cr_assert_eq(rc, PINPOOL_ENOSPC, "%s: %s", pinpool_err_name(rc), pinpool_errmsg(ctx));
    cr_assert_lt(test_now_s() - t0, 12.0, "an allocation without a master took %.1f s",
                 test_now_s() - t0);

    /* A master on the same ports: spilling resumes (bounded wait). */
    mc_start_master("1000");
    t0 = test_now_s();
    for (;;) {
        rc = pinpool_alloc(ctx, SLICE, NULL, &a[0]);
        if (rc == 0 || test_now_s() - t0 > 60)
            break;
        usleep(500000);
    }
    if (rc != 0) {
        mc_dump_logs();
        test_daemon_dump_log(&d);
    }
    cr_assert_eq(rc, 0, "spilling did not resume within 60 s of the master's restart: %s",
                 pinpool_errmsg(ctx));
    cr_log_info("spilling resumed %.1f s after the master's restart", test_now_s() - t0);
    for (unsigned i = 1; i < 4; i++)
        cr_assert_eq(pinpool_alloc(ctx, SLICE, NULL, &a[i]), 0, "%s", pinpool_errmsg(ctx));
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.spill.spills, 4);
    cr_expect_eq(pi.spill.objects_spilled, 4, "every object went to Mooncake");
    for (unsigned i = 0; i < 4; i++)
        cr_assert_eq(pinpool_free(ctx, a[i].id, NULL), 0);
    for (unsigned i = 0; i < 4; i++)
        check_acquired(ctx, i);
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.spill.restores, 4);
    cr_expect_eq(pi.used_bytes, 0);
    cr_expect_eq(pi.spill.objects, 0);
    pinpool_close(ctx);
}

/*
 * A Mooncake fact the daemon cannot hide: mooncake_master keeps the object
 * metadata in its memory (without its HA mode), so objects that were spilled
 * *before* the master died are gone from the store after a restart, although
 * their bytes were in mooncake_client's segment.  The daemon says so: acquire
 * fails with PINPOOL_ENOKEY naming the tier ("cannot restore"), never hands
 * out other bytes, and the object can be removed.
 */
Test(spill_mooncake, objects_spilled_before_a_master_restart_are_gone_and_acquire_says_so,
     .timeout = 200)
{
    pinpool_pool_info_t pi;
    pinpool_slice_t r;
    int rc;

    start("timeout_ms=10000");
    pinpool_ctx_t *ctx = test_connect(&d);
    for (unsigned i = 0; i < 5; i++) /* obj-0 spills */
        put_released(ctx, i);
    test_pool_info(ctx, &pi);
    cr_assert_eq(pi.spill.spills, 1, "%s", pi.spill.last_error);
    mc_stop(&mc.master);
    mc_start_master("1000");
    /* the restarted master does not know obj-0 (bounded: the first calls may
     * still fail while the clients reconnect) */
    double t0 = test_now_s();
    do {
        rc = pinpool_acquire(ctx, "obj-0", 0, &r);
        if (rc != PINPOOL_ENOKEY)
            usleep(500000);
    } while (rc != 0 && rc != PINPOOL_ENOKEY && test_now_s() - t0 < 60);
    cr_log_info("acquire of an object spilled before the restart: %s: %s", pinpool_err_name(rc),
                pinpool_errmsg(ctx));
    cr_assert_eq(rc, PINPOOL_ENOKEY, "%s: %s", pinpool_err_name(rc), pinpool_errmsg(ctx));
    cr_expect(strstr(pinpool_errmsg(ctx), "cannot restore") != NULL, "%s", pinpool_errmsg(ctx));
    cr_expect(strstr(pinpool_errmsg(ctx), "RPC_FAIL") == NULL,
              "no words of an earlier tier call: %s", pinpool_errmsg(ctx));
    test_pool_info(ctx, &pi);
    cr_expect_geq(pi.spill.restore_failures, 1);
    cr_expect_eq(pinpool_remove(ctx, "obj-0"), 0, "the lost object can be removed");
    for (unsigned i = 1; i < 5; i++) /* the resident ones are whole */
        check_acquired(ctx, i);
    pinpool_close(ctx);
}

/* The race of test_spill_race.c against the real Mooncake tier, shorter:
 * every object spills as soon as it can, no value is lost. */
Test(spill_mooncake, put_get_and_mixed_calls_lose_nothing_while_everything_spills,
     .timeout = 150)
{
    pinpool_pool_info_t pi;
    churn_result_t r;

    mc_start_cluster("1000", "");
    if (test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                          "--spill-low-watermark", "1", "--spill-tier", mc.uri, NULL) != 0) {
        mc_dump_logs();
        cr_assert_fail("the daemon did not start with --spill-tier %s", mc.uri);
    }
    churn_put_get(d.socket, 300, &r);
    cr_log_info("one client, 300 x Put; Get through Mooncake: %" PRIu64 " lost, %" PRIu64
                " wrong%s%s", r.lost, r.unexpected, r.first[0] ? ": " : "", r.first);
    cr_expect_eq(r.lost + r.unexpected, 0, "%s", r.first);
    churn_mixed(d.socket, 8, 5.0, &r);
    cr_log_info("8 clients, 5 s of mixed calls through Mooncake: %" PRIu64 " calls, %" PRIu64
                " lost, %" PRIu64 " wrong%s%s", r.ops, r.lost, r.unexpected,
                r.first[0] ? ": " : "", r.first);
    cr_expect_eq(r.lost + r.unexpected, 0, "%s", r.first);
    pinpool_ctx_t *ctx = test_connect(&d);
    test_pool_info(ctx, &pi);
    cr_expect_gt(pi.spill.spills, 50, "hardly spilled (%" PRIu64 "): proves nothing",
                 pi.spill.spills);
    pinpool_close(ctx);
}

/*
 * The daemon killed (-9) with objects spilled to Mooncake, restarted on the
 * same tier: the tier's index (".pinpool.index.NN" under the prefix: the
 * wheel's client cannot list keys) names them, and they come back byte-exact.
 */
Test(spill_mooncake, after_kill_9_the_index_brings_spilled_objects_back, .timeout = 150)
{
    pinpool_pool_info_t pi;
    int status;

    start("prefix=pinpool%2Fspill%2F");
    pinpool_ctx_t *ctx = test_connect(&d);
    for (unsigned i = 0; i < 6; i++) /* obj-0 and obj-1 spill */
        put_released(ctx, i);
    test_pool_info(ctx, &pi);
    cr_assert_eq(pi.spill.spills, 2, "%s", pi.spill.last_error);
    pinpool_close(ctx);
    kill(d.pid, SIGKILL);
    waitpid(d.pid, &status, 0);
    d.pid = 0;
    if (test_daemon_restart(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                            "--spill-low-watermark", "0", "--spill-tier", mc.uri, "--log-level",
                            "debug", NULL) != 0) {
        mc_dump_logs();
        cr_assert_fail("the daemon did not restart");
    }
    ctx = test_connect(&d);
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.spill.objects_spilled, 2, "obj-0 and obj-1 are back: %u",
                 pi.spill.objects_spilled);
    cr_expect(log_has("2 objects recovered"), "the log has the summary");
    check_acquired(ctx, 0);
    check_acquired(ctx, 1);
    cr_expect_eq(pinpool_exists(ctx, "obj-2"), 0, "resident at the kill: lost");
    pinpool_close(ctx);
}
