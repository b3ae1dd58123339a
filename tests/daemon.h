/*
 * daemon.h - start the real `pinpool serve` on a fresh temp socket for a test,
 * wait for its "ready" line, and stop it (memcached's testapp.c, hiredis's
 * test.sh); the suite set-up most test files share (TEST_DAEMON_SUITE) and the
 * calls they make on it.  The binary is $PINPOOL_BIN (make test sets it).
 */
#ifndef PINPOOL_TEST_DAEMON_H
#define PINPOOL_TEST_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct test_daemon {
    pid_t pid;
    char dir[64];
    char socket[128];
    char ready[512]; /* the ready line */
    char log[160];   /* its stderr goes here */
    char state[96];  /* --state-dir: DIR/state (the default file spill tier) */
} test_daemon_t;

/* Start `pinpool serve --socket DIR/pinpool.sock ARGS...` (NULL-terminated
 * extra arguments) in a new temp DIR, or, with again, in d's directory and on
 * its socket after test_daemon_stop; returns 0 once it printed its ready line,
 * or -1 (the test fails with its log).  Called through the two macros.  With
 * again, d->log is kept (set it to give a second daemon in d's directory a
 * log of its own: tests/test_takeover.c). */
int test_daemon_spawn(test_daemon_t *d, bool again, ...);
#define test_daemon_start(d, ...) test_daemon_spawn((d), false, __VA_ARGS__)
#define test_daemon_restart(d, ...) test_daemon_spawn((d), true, __VA_ARGS__)
/* SIGTERM, wait; returns the exit status (or -1 if it had to be killed).  Its
 * log, state directory and temp directory are removed. */
int test_daemon_stop(test_daemon_t *d);
/* Send sig and wait for the daemon to end, keeping its log and state directory
 * (for test_daemon_restart on them: what a restart recovers).  Returns its exit
 * status, or 128 + the signal that ended it. */
int test_daemon_kill(test_daemon_t *d, int sig);
/* Suite teardown (or a test's end): stop the daemon (if running); the pool
 * must have been empty and SIGTERM must make it exit 0 (test_fini_check: a
 * failure fails the test even in .fini). */
void test_daemon_finish(test_daemon_t *d);
/* A connected libpinpool context (the test fails otherwise). */
struct pinpool_ctx *test_connect(const test_daemon_t *d);
/* GetPoolInfo into *out (the test fails otherwise); its per-client usage list
 * is freed at once, so out keeps the counters only. */
struct pinpool_pool_info;
void test_pool_info(struct pinpool_ctx *ctx, struct pinpool_pool_info *out);
/* Used bytes according to GetPoolInfo (UINT64_MAX on error). */
uint64_t test_daemon_used(const test_daemon_t *d);
/* Number of open descriptors of the daemon (/proc/PID/fd). */
int test_daemon_nfds(const test_daemon_t *d);
/* Number of our own open descriptors. */
int test_nfds(void);
/* Print the daemon's log to stderr (on failure). */
void test_daemon_dump_log(const test_daemon_t *d);

/*
 * TEST_DAEMON_SUITE(suite): the set-up most suites share, defined in the file
 * that uses it (after criterion.h): `d`, the daemon; start(), a fresh one for
 * each test with a 64 MiB pool of 16 MiB chunks; stop(), test_daemon_finish(&d)
 * (the pool must be empty and SIGTERM must make it exit 0); and the Criterion
 * suite with them, 60 s a test.
 */
#define TEST_DAEMON_SUITE(suite)                                                               \
    static test_daemon_t d;                                                                    \
    static void start(void)                                                                    \
    {                                                                                          \
        cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB", \
                                       NULL), 0);                                              \
    }                                                                                          \
    static void stop(void)                                                                     \
    {                                                                                          \
        test_daemon_finish(&d);                                                                \
    }                                                                                          \
    TestSuite(suite, .init = start, .fini = stop, .timeout = 60)

/* Run the pinpool binary ($PINPOOL_BIN) with the arguments fmt formats (split
 * by the shell); its stdout and stderr into out.  Returns its exit code. */
int test_pinpool(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Expect needle in text, showing text when it is not there. */
#define TEST_EXPECT_IN(text, needle)                                                           \
    cr_expect(strstr((text), (needle)) != NULL, "no '%s' in:\n%s", (const char *)(needle), (text))

#endif
