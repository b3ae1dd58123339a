/*
 * test_spill_race.c - a daemon that spills all the time (--spill-low-watermark
 * 1: every released or Put object goes to its file tier as soon as it can)
 * never loses a value to the race between a call that drops an object's old
 * tier copy after unlocking and a spill of the new object under the same key:
 * tier copies are versioned (server/spill.c), so a late removal names an
 * older generation's copy only.  Before that, one client looping Put; Get lost
 * 4-5 % of its values, and mixed calls from 16 clients hundreds a minute.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "churn.h"
#include "daemon.h"
#include "pinpool.h"
#include "util.h"

static test_daemon_t d;
static char dir[64], uri[128];

/* fsync=0: spills take microseconds, as long as the window they race with. */
static void start(void)
{
    snprintf(dir, sizeof(dir), "/tmp/pinpool-race-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(uri, sizeof(uri), "file://%s/tier?fsync=0", dir);
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   "--spill-low-watermark", "1", "--spill-tier", uri, NULL), 0);
}

static void stop(void)
{
    test_daemon_finish(&d);
    test_rm_rf(dir);
}

TestSuite(spill_race, .init = start, .fini = stop, .timeout = 120);

static void report(const char *what, const churn_result_t *r)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_pool_info_t pi;

    test_pool_info(ctx, &pi);
    pinpool_close(ctx);
    cr_log_info("%s: %" PRIu64 " calls, %" PRIu64 " spills, %" PRIu64 " restores, %" PRIu64
                " lost, %" PRIu64 " wrong answers%s%s", what, r->ops, pi.spill.spills,
                pi.spill.restores, r->lost, r->unexpected, r->first[0] ? "; first: " : "",
                r->first);
    cr_expect_gt(pi.spill.spills, 100, "the daemon hardly spilled: the test proves nothing");
    cr_expect_eq(r->lost, 0, "%" PRIu64 " values lost; the first: %s", r->lost, r->first);
    cr_expect_eq(r->unexpected, 0, "%" PRIu64 " wrong answers; the first: %s", r->unexpected,
                 r->first);
}

Test(spill_race, put_get_loop_loses_no_value)
{
    churn_result_t r;

    churn_put_get(d.socket, 2000, &r);
    report("one client, 2000 x Put; Get", &r);
}

Test(spill_race, sixteen_clients_of_mixed_calls_lose_nothing)
{
    churn_result_t r;

    churn_mixed(d.socket, 16, 10.0, &r);
    report("16 clients, 10 s of put/get/release/acquire/remove/TTL", &r);
    cr_expect_gt(r.ops, 2000, "too few calls to prove anything");
}
