/*
 * test_spill.c - named objects, release/acquire and spilling, against the real
 * daemon with its default file tier (under the test's --state-dir).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "pinpool.h"
#include "util.h"

#define MiB (1024ull * 1024)
#define SLICE (12 * MiB) /* one per 16 MiB chunk */

static test_daemon_t d;

static void stop(void)
{
    int rc = d.pid > 0 ? test_daemon_stop(&d) : 0;

    test_fini_check(rc == 0, "the daemon exited with %d on SIGTERM, not 0", rc);
}

TestSuite(spill, .fini = stop, .timeout = 60);

/* Released slices spill when in-use ones need room, and come back byte-exact. */
Test(spill, release_spill_acquire_byte_exact)
{
    pinpool_slice_t s[4], a[4], r;
    pinpool_pool_info_t pi;
    char key[16];
    int rc;

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   "--spill-low-watermark", "0", NULL), 0);
    pinpool_ctx_t *ctx = test_connect(&d);
    for (unsigned i = 0; i < 4; i++) {
        cr_assert_eq(pinpool_alloc(ctx, SLICE, NULL, &s[i]), 0, "%s", pinpool_errmsg(ctx));
        test_fill(s[i].ptr, SLICE, i);
        snprintf(key, sizeof(key), "obj-%u", i);
        cr_assert_eq(pinpool_release(ctx, s[i].id, key, 0), 0, "%s", pinpool_errmsg(ctx));
    }
    cr_expect_eq(pinpool_release(ctx, s[0].id, "again", 0), PINPOOL_ENOENT,
                 "a released slice is no longer the client's");
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.spill.objects_resident, 4);
    cr_expect_str_eq(pi.spill.tier, "file");
    cr_expect_eq(pi.spill.spills, 0);

    /* The pool is full of released objects: in-use allocations spill them. */
    for (unsigned i = 0; i < 4; i++) {
        cr_assert_eq(pinpool_alloc(ctx, SLICE, NULL, &a[i]), 0, "%s", pinpool_errmsg(ctx));
        test_fill(a[i].ptr, SLICE, 100 + i);
    }
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.spill.spills, 4);
    cr_expect_eq(pi.spill.bytes_spilled, 4 * SLICE);
    cr_expect_eq(pi.spill.objects_spilled, 4);
    cr_expect_gt(pi.spill.spill_gbps, 0);

    /* Only in-use slices are left: they never spill; the error has numbers. */
    rc = pinpool_acquire(ctx, "obj-0", 0, &r);
    cr_assert_eq(rc, PINPOOL_ENOSPC, "%s", pinpool_errmsg(ctx));
    cr_expect(strstr(pinpool_errmsg(ctx), "largest free extent") != NULL, "%s", pinpool_errmsg(ctx));
    cr_expect(strstr(pinpool_errmsg(ctx), "spillable") != NULL, "%s", pinpool_errmsg(ctx));
    rc = pinpool_alloc(ctx, SLICE, NULL, &r);
    cr_assert_eq(rc, PINPOOL_ENOSPC, "%s", pinpool_errmsg(ctx));
    for (unsigned i = 0; i < 4; i++)
        cr_expect(test_same(a[i].ptr, SLICE, 100 + i), "in-use slice %u changed", i);

    /* Room again: acquire restores the bytes. */
    cr_assert_eq(pinpool_free(ctx, a[0].id, NULL), 0);
    cr_assert_eq(pinpool_acquire(ctx, "obj-0", 0, &r), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(r.size, SLICE);
    cr_expect(test_same(r.ptr, SLICE, 0), "obj-0 came back different");
    cr_expect_eq(pinpool_exists(ctx, "obj-0"), 0, "acquired: no longer an object");

    /* Release it again; acquiring obj-1 spills obj-0 (the only released one). */
    cr_assert_eq(pinpool_release(ctx, r.id, "obj-0", 0), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_acquire(ctx, "obj-1", 0, &r), 0, "%s", pinpool_errmsg(ctx));
    cr_expect(test_same(r.ptr, SLICE, 1), "obj-1 came back different");
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.spill.restores, 2);
    cr_expect_eq(pi.spill.bytes_restored, 2 * SLICE);
    cr_expect_eq(pi.spill.spills, 5);
    cr_assert_eq(pinpool_free(ctx, r.id, NULL), 0);
    for (unsigned i = 0; i < 4; i++) {
        snprintf(key, sizeof(key), "obj-%u", i);
        if (i == 1)
            continue;
        cr_assert_eq(pinpool_acquire(ctx, key, 0, &r), 0, "%s: %s", key, pinpool_errmsg(ctx));
        cr_expect(test_same(r.ptr, SLICE, i), "%s came back different", key);
        cr_assert_eq(pinpool_free(ctx, r.id, NULL), 0);
    }
    for (unsigned i = 1; i < 4; i++)
        cr_assert_eq(pinpool_free(ctx, a[i].id, NULL), 0);
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.used_bytes, 0);
    cr_expect_eq(pi.spill.objects, 0);
    cr_expect_eq(pi.spill.spill_failures, 0);
    pinpool_close(ctx);
}

Test(spill, put_get_exists_remove_ttl)
{
    char data[5000], back[5000];
    uint64_t got = 0;
    pinpool_pool_info_t pi;

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB", NULL), 0);
    pinpool_ctx_t *ctx = test_connect(&d);
    test_fill(data, sizeof(data), 7);
    cr_assert_eq(pinpool_put(ctx, "k", data, sizeof(data), 0), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_exists(ctx, "k"), 1);
    cr_expect_eq(pinpool_exists(ctx, "nope"), 0);
    cr_expect_eq(pinpool_get(ctx, "k", back, 10, &got), -ENOBUFS);
    cr_expect_eq(got, sizeof(data));
    cr_assert_eq(pinpool_get(ctx, "k", back, sizeof(back), &got), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(memcmp(data, back, sizeof(data)), 0);
    /* put replaces */
    cr_assert_eq(pinpool_put(ctx, "k", "xyz", 3, 0), 0);
    cr_assert_eq(pinpool_get(ctx, "k", back, sizeof(back), &got), 0);
    cr_expect_eq(got, 3);
    cr_expect_eq(pinpool_remove(ctx, "k"), 0);
    cr_expect_eq(pinpool_remove(ctx, "k"), PINPOOL_ENOKEY);
    cr_expect_eq(pinpool_get(ctx, "k", back, sizeof(back), &got), PINPOOL_ENOKEY);
    cr_expect_eq(pinpool_put(ctx, "bad key", "x", 1, 0), PINPOOL_EINVAL);
    /* TTL: gone within a bound after it passes */
    cr_assert_eq(pinpool_put(ctx, "t", "abc", 3, 200), 0);
    cr_expect_eq(pinpool_exists(ctx, "t"), 1);
    int i;
    for (i = 0; i < 100 && pinpool_exists(ctx, "t") == 1; i++)
        usleep(20000);
    cr_expect_lt(i, 100, "the TTL object did not expire in 2 s");
    usleep(300000); /* the maintenance thread drops it from the pool too */
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.spill.expired, 1);
    cr_expect_eq(pi.used_bytes, 0);
    pinpool_close(ctx);
}

/* The background watermark spills released objects without any allocation. */
Test(spill, low_watermark_spills_in_background)
{
    pinpool_slice_t s;
    pinpool_pool_info_t pi;

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                   "--spill-low-watermark", "24MiB", NULL), 0);
    pinpool_ctx_t *ctx = test_connect(&d);
    cr_assert_eq(pinpool_alloc(ctx, SLICE, NULL, &s), 0);
    test_fill(s.ptr, SLICE, 3);
    cr_assert_eq(pinpool_release(ctx, s.id, "wm", 0), 0);
    int i;
    for (i = 0; i < 200; i++) {
        test_pool_info(ctx, &pi);
        if (pi.spill.objects_spilled == 1)
            break;
        usleep(10000);
    }
    cr_expect_lt(i, 200, "not spilled within 2 s of dropping below the watermark");
    cr_expect_eq(pi.used_bytes, 0);
    cr_expect_eq(pi.spill.low_watermark_bytes, 24 * MiB);
    cr_assert_eq(pinpool_acquire(ctx, "wm", 0, &s), 0, "%s", pinpool_errmsg(ctx));
    cr_expect(test_same(s.ptr, SLICE, 3));
    cr_assert_eq(pinpool_free(ctx, s.id, NULL), 0);
    pinpool_close(ctx);
}

/* A tier that cannot be opened stops the daemon at start with the reason. */
Test(spill, bad_tier_exits_1)
{
    char cmd[512], out[1024] = "", dir[] = "/tmp/pinpool-spill-bad-XXXXXX";
    const char *bin = getenv("PINPOOL_BIN");
    FILE *p;
    int status;

    cr_assert_not_null(mkdtemp(dir)); /* the sockets' directory: /tmp itself is refused */
    snprintf(cmd, sizeof(cmd), "%s serve --socket %s/p.sock "
             "--spill-tier file:///proc/pinpool-cannot 2>&1", bin != NULL ? bin : "build/pinpool",
             dir);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    status = pclose(p);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %d: %s", status, out);
    cr_expect(strstr(out, "spill tier") != NULL, "%s", out);
    cr_expect_eq(rmdir(dir), 0, "the daemon left files in %s", dir);
}

/* TTLs saturate: 2^64-1 ms (and anything from 18446744073710 ms up, where
 * ttl * 10^6 ns used to wrap) means "as long as the clock counts", not 0.3 s. */
Test(spill, huge_ttl_saturates_and_the_object_stays)
{
    static const uint64_t ttls[] = {UINT64_MAX, 18446744073710ull, 18446744073709551ull};
    pinpool_slice_t s;
    char key[32];

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB", NULL), 0);
    pinpool_ctx_t *ctx = test_connect(&d);
    for (size_t i = 0; i < sizeof(ttls) / sizeof(ttls[0]); i++) {
        snprintf(key, sizeof(key), "forever-%zu", i);
        cr_assert_eq(pinpool_put(ctx, key, "abc", 3, ttls[i]), 0, "%s", pinpool_errmsg(ctx));
    }
    cr_assert_eq(pinpool_alloc(ctx, 4096, NULL, &s), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_release(ctx, s.id, "released-forever", UINT64_MAX), 0, "%s",
                 pinpool_errmsg(ctx));
    usleep(1000000);
    for (size_t i = 0; i < sizeof(ttls) / sizeof(ttls[0]); i++) {
        snprintf(key, sizeof(key), "forever-%zu", i);
        cr_expect_eq(pinpool_exists(ctx, key), 1, "ttl %" PRIu64 " ms: gone after 1 s", ttls[i]);
        cr_expect_eq(pinpool_remove(ctx, key), 0);
    }
    cr_expect_eq(pinpool_exists(ctx, "released-forever"), 1, "released with ttl 2^64-1: gone");
    cr_assert_eq(pinpool_acquire(ctx, "released-forever", 0, &s), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_free(ctx, s.id, NULL), 0);
    pinpool_close(ctx);
}

/* --max-objects bounds the table: beyond it Put and Release fail with
 * RESOURCE_EXHAUSTED naming the limit, before any byte is copied; replacing
 * an object, or a Put after a Remove, still works. */
Test(spill, max_objects_refuses_beyond_the_limit)
{
    pinpool_slice_t s;
    char key[32];
    int rc;

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                   "--max-objects", "10", NULL), 0);
    pinpool_ctx_t *ctx = test_connect(&d);
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        cr_assert_eq(pinpool_put(ctx, key, "x", 1, 0), 0, "%s", pinpool_errmsg(ctx));
    }
    rc = pinpool_put(ctx, "k10", "x", 1, 0);
    cr_assert_eq(rc, PINPOOL_ENOSPC, "%s: %s", pinpool_err_name(rc), pinpool_errmsg(ctx));
    TEST_EXPECT_IN(pinpool_errmsg(ctx), "--max-objects 10");
    cr_assert_eq(pinpool_alloc(ctx, 4096, NULL, &s), 0, "%s", pinpool_errmsg(ctx));
    rc = pinpool_release(ctx, s.id, "k10", 0);
    cr_assert_eq(rc, PINPOOL_ENOSPC, "%s: %s", pinpool_err_name(rc), pinpool_errmsg(ctx));
    TEST_EXPECT_IN(pinpool_errmsg(ctx), "--max-objects 10");
    cr_assert_eq(pinpool_free(ctx, s.id, NULL), 0, "the slice stays the client's");
    cr_expect_eq(pinpool_put(ctx, "k3", "yy", 2, 0), 0, "replacing: %s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_remove(ctx, "k0"), 0);
    cr_expect_eq(pinpool_put(ctx, "k10", "x", 1, 0), 0, "%s", pinpool_errmsg(ctx));
    for (int i = 1; i <= 10; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        cr_expect_eq(pinpool_remove(ctx, key), 0, "%s", key);
    }
    pinpool_close(ctx);
}
