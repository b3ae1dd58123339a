/*
 * test_cli.c - what a person sees from the `pinpool` command: --help with
 * bounds, argument errors, the ready line, `pinpool status`, the lock
 * message; and the build's one protoc run.
 *
 * Owns: the daemons it starts (one per test, on fresh temp sockets).
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "daemon.h"
#include "grpc_call.h"
#include "pinpool.h"


Test(cli, help_shows_every_option_with_its_default_and_bounds)
{
    static char out[16384];

    cr_assert_eq(test_pinpool(out, sizeof(out), "serve --help"), 0, "%s", out);
    cr_expect(strstr(out, "(default: auto; 2.00 MiB .. 64.00 GiB, a multiple of 2.00 MiB)") != NULL,
              "--chunk-size bounds: %s", out);
    cr_expect(strstr(out, "(default: 2; 1 .. 64)") != NULL, "--pin-threads bounds: %s", out);
    cr_expect(strstr(out, "(default: info; error, warn, info, debug)") != NULL, "%s", out);
    cr_expect(strstr(out, "(default: no limit; 0 B .. 1024.00 TiB)") != NULL,
              "--client-quota: 0 means no limit: %s", out);
    /* Every option line is followed by its default-and-bounds line. */
    int options = 0, bounds = 0;
    for (const char *p = out; (p = strstr(p, "\n  --")) != NULL; p++)
        options++;
    for (const char *p = out; (p = strstr(p, "(default: ")) != NULL; p++)
        bounds++;
    cr_expect_gt(options, 15);
    cr_expect_eq(options, bounds, "%d options, %d default lines", options, bounds);
}

Test(cli, info_socket_without_a_value_says_so)
{
    char out[4096];

    cr_expect_eq(test_pinpool(out, sizeof(out), "info --socket"), 2, "%s", out);
    cr_expect(strstr(out, "--socket needs a value") != NULL, "%s", out);
    cr_expect(strstr(out, "unexpected argument") == NULL, "%s", out);
    cr_expect_eq(test_pinpool(out, sizeof(out), "status --socket"), 2, "%s", out);
    cr_expect(strstr(out, "--socket needs a value") != NULL, "%s", out);
}

Test(cli, ready_line_and_status_say_what_the_daemon_has, .timeout = 60)
{
    test_daemon_t d;
    char out[8192], args[256];

    /* 40 MB is 38.15 MiB: rounded up to three 16 MiB chunks, 48 MiB. */
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "40MB", "--chunk-size", "16MiB", NULL), 0);
    cr_expect(strstr(d.ready, " pool=48.00 MiB ") != NULL, "%s", d.ready);
    snprintf(args, sizeof(args), "info --socket %s", d.socket);
    cr_expect_eq(test_pinpool(out, sizeof(out), "%s", args), 0, "%s", out);
    cr_expect(strstr(out, "capacity               48.00 MiB") != NULL, "%s", out);

    snprintf(args, sizeof(args), "status --socket %s", d.socket);
    cr_expect_eq(test_pinpool(out, sizeof(out), "%s", args), 0, "%s", out);
    cr_expect(strstr(out, "--client-quota         no limit\n") != NULL, "%s", out);
    /* --max-clients auto: a number that follows RLIMIT_NOFILE (test_host.c checks it). */
    const char *mc = strstr(out, "--max-clients          ");
    cr_expect(mc != NULL && isdigit((unsigned char)mc[23]), "%s", out);
    cr_expect(strstr(out, "0 B") == NULL || strstr(out, "--client-quota         0 B") == NULL, "%s",
              out);
    test_daemon_finish(&d);
}

Test(cli, second_daemon_names_the_first_ones_pid_on_one_line, .timeout = 60)
{
    test_daemon_t d;
    char out[4096], args[256];

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "16MiB", "--chunk-size", "16MiB", NULL), 0);
    snprintf(args, sizeof(args), "serve --socket %s --mem-pool-size 16MiB --chunk-size 16MiB",
             d.socket);
    cr_expect_eq(test_pinpool(out, sizeof(out), "%s", args), 1, "%s", out);
    char want[64];
    snprintf(want, sizeof(want), "another pinpool daemon (pid %d) is serving", (int)d.pid);
    cr_expect(strstr(out, want) != NULL, "wanted '%s' in: %s", want, out);
    test_daemon_finish(&d);
}

/* A fresh build runs protoc-c once for the .c and the .h it makes together. */
Test(build, protoc_runs_once_for_both_generated_files)
{
    char out[8192];
    FILE *p = popen("make --no-print-directory -n -j2 BUILD=/tmp/pinpool-test-nobuild "
                    "/tmp/pinpool-test-nobuild/gen/pinpool.pb-c.c "
                    "/tmp/pinpool-test-nobuild/gen/pinpool.pb-c.h 2>&1", "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    cr_expect_eq(pclose(p), 0, "%s", out);
    int runs = 0;
    for (const char *s = out; (s = strstr(s, "protoc-c ")) != NULL; s++)
        runs++;
    cr_expect_eq(runs, 1, "protoc-c ran %d times: %s", runs, out);
}

/* Read the daemon's log into buf. */
static void read_log(const test_daemon_t *d, char *buf, size_t len)
{
    FILE *f = fopen(d->log, "r");
    size_t n = f != NULL ? fread(buf, 1, len - 1, f) : 0;

    buf[n] = '\0';
    if (f != NULL)
        fclose(f);
}

Test(cli, a_small_pool_just_works_its_chunks_follow_its_size, .timeout = 60)
{
    test_daemon_t d;

    /* No --chunk-size: a sixteenth of the pool, in a power of two. */
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MB", NULL), 0);
    cr_expect(strstr(d.ready, " pool=64.00 MiB chunk=4.00 MiB ") != NULL, "%s", d.ready);
    test_daemon_finish(&d);
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "4GiB", NULL), 0);
    cr_expect(strstr(d.ready, " pool=4.00 GiB chunk=256.00 MiB ") != NULL, "%s", d.ready);
    test_daemon_finish(&d);
}

Test(cli, sizes_off_the_2mib_grid_round_up_with_a_note, .timeout = 60)
{
    test_daemon_t d;
    char log[8192];

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MB", "--chunk-size", "3MB", NULL), 0);
    cr_expect(strstr(d.ready, " chunk=4.00 MiB ") != NULL, "%s", d.ready);
    read_log(&d, log, sizeof(log));
    cr_expect(strstr(log, "note: --chunk-size 3MB (2.86 MiB) rounded up to 4.00 MiB, a multiple of "
                          "2.00 MiB") != NULL, "%s", log);
    test_daemon_finish(&d);
}

/* `pinpool info` pages through every client (a page of 2 here: the listing
 * must not stop after the first), and --top N shows the N that hold most. */
Test(cli, info_pages_through_every_client_and_top_shows_the_heaviest, .timeout = 60)
{
    test_daemon_t d;
    static char out[16384];
    char args[256], id[32];
    uint64_t slice;

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB", NULL), 0);
    test_call_default(d.socket);
    for (int i = 1; i <= 5; i++) {
        snprintf(id, sizeof(id), "pager-%d", i);
        test_call_result_t r = test_call_alloc(NULL, id, (uint64_t)i << 20, &slice);
        cr_assert_eq(r.status, GRPC_STATUS_OK, "%s", r.details);
    }
    snprintf(args, sizeof(args), "info --socket %s --page-size 2", d.socket);
    cr_expect_eq(test_pinpool(out, sizeof(out), "%s", args), 0, "%s", out);
    for (int i = 1; i <= 5; i++) {
        snprintf(id, sizeof(id), "pager-%d ", i);
        TEST_EXPECT_IN(out, id);
    }
    TEST_EXPECT_IN(out, "every uid's clients are shown");
    snprintf(args, sizeof(args), "info --socket %s --top 2 --page-size 1", d.socket);
    cr_expect_eq(test_pinpool(out, sizeof(out), "%s", args), 0, "%s", out);
    TEST_EXPECT_IN(out, "pager-5 ");
    TEST_EXPECT_IN(out, "pager-4 ");
    cr_expect(strstr(out, "pager-3 ") == NULL, "%s", out);
    TEST_EXPECT_IN(out, "(the 2 that hold the most of 5 clients)");
    snprintf(args, sizeof(args), "info --socket %s --top two", d.socket);
    cr_expect_eq(test_pinpool(out, sizeof(out), "%s", args), 2, "%s", out);
    TEST_EXPECT_IN(out, "--top needs a number, not 'two'");
    for (int i = 1; i <= 5; i++) {
        snprintf(id, sizeof(id), "pager-%d", i);
        test_call_free(id, 0);
    }
    test_daemon_finish(&d);
}

/* A daemon with an allow list answers only sessions: `pinpool info` and
 * `pinpool status` ask through one of their own (a stock caller without one
 * is refused). */
Test(cli, info_and_status_work_where_only_sessions_are_answered, .timeout = 60)
{
    test_daemon_t d;
    static char out[16384];
    char args[256];

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "16MiB", "--chunk-size", "16MiB",
                                   "--allow-uid", "0", NULL), 0);
    test_call_default(d.socket);
    test_call_result_t r = test_call_ping(NULL);
    cr_expect_eq(r.status, GRPC_STATUS_PERMISSION_DENIED, "a caller without a session: %s",
                 r.details);
    snprintf(args, sizeof(args), "status --socket %s", d.socket);
    cr_expect_eq(test_pinpool(out, sizeof(out), "%s", args), 0, "%s", out);
    TEST_EXPECT_IN(out, "--allow-uid            0");
    TEST_EXPECT_IN(out, "capacity               16.00 MiB");
    TEST_EXPECT_IN(out, "you are                uid 0");
    test_daemon_finish(&d);
}
