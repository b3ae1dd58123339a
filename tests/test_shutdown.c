/*
 * test_shutdown.c - how long SIGTERM takes.  gRPC starts a "backup poller"
 * thread when a large reply's write blocks, which polls with a ~10 s deadline
 * and holds grpc_shutdown until it ends: the daemon used to take 10 s to exit
 * in 2 of 5 stops after a client had read an 8 MiB object (and the suites'
 * 10 s stop limit then failed their teardown).
 *
 * Owns: its daemons.  Never: a GPU.  Locking: none.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "pinpool.h"
#include "util.h"

#define MiB (1024ull * 1024)
#define ROUNDS 6

static test_daemon_t d;

static void teardown(void)
{
    if (d.pid > 0)
        test_daemon_finish(&d);
}

TestSuite(shutdown_time, .fini = teardown, .timeout = 120);

Test(shutdown_time, sigterm_after_a_large_get_exits_within_the_grace)
{
    uint64_t n = 8 * MiB, got = 0;
    unsigned char *v = malloc(n), *back = malloc(n);
    double worst = 0;

    cr_assert(v != NULL && back != NULL);
    memset(v, 0x5a, n);
    for (int i = 0; i < ROUNDS; i++) {
        cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "128MiB", "--chunk-size", "16MiB",
                                       NULL), 0);
        pinpool_ctx_t *ctx = test_connect(&d);
        cr_assert_eq(pinpool_put(ctx, "big", v, n, 0), 0, "%s", pinpool_errmsg(ctx));
        cr_assert_eq(pinpool_get(ctx, "big", back, n, &got), 0, "%s", pinpool_errmsg(ctx));
        cr_assert(got == n && memcmp(v, back, n) == 0);
        double t0 = test_now_s();
        int rc = test_daemon_stop(&d); /* the client is still connected, as a server's are */
        double dt = test_now_s() - t0;
        pinpool_close(ctx);
        cr_assert_eq(rc, 0, "round %d: exit status %d after %.2f s", i, rc, dt);
        worst = dt > worst ? dt : worst;
    }
    cr_expect_lt(worst, 5.0, "SIGTERM took %.2f s at worst (the grace is 1 s)", worst);
    free(v);
    free(back);
}
