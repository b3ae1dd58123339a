/*
 * daemon.h - start the real `pinpool serve` on a fresh temp socket for a test,
 * wait for its "ready" line, and stop it (memcached's testapp.c, hiredis's
 * test.sh).  The binary is $PINPOOL_BIN (make test sets it).
 */
#ifndef PINPOOL_TEST_DAEMON_H
#define PINPOOL_TEST_DAEMON_H

#include <stdbool.h>
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
 * extra arguments); returns 0 once it printed its ready line, or -1 (the test
 * fails with its log). */
int test_daemon_start(test_daemon_t *d, ...);
/* Start again on the same directory and socket, after test_daemon_stop. */
int test_daemon_restart(test_daemon_t *d, ...);
/* SIGTERM, wait; returns the exit status (or -1 if it had to be killed). */
int test_daemon_stop(test_daemon_t *d);
/* Suite teardown: stop the daemon (if running) and expect the pool empty and
 * exit 0 on SIGTERM.  Uses Criterion's expectations. */
void test_daemon_finish(test_daemon_t *d);
/* A connected libpinpool context (the test fails otherwise). */
struct pinpool_ctx *test_connect(const test_daemon_t *d);
/* Used bytes according to GetPoolInfo (UINT64_MAX on error). */
uint64_t test_daemon_used(const test_daemon_t *d);
/* Number of open descriptors of the daemon (/proc/PID/fd). */
int test_daemon_nfds(const test_daemon_t *d);
/* Number of our own open descriptors. */
int test_nfds(void);
/* Print the daemon's log to stderr (on failure). */
void test_daemon_dump_log(const test_daemon_t *d);

#endif
