/*
 * util.h - small helpers the test files share: a monotonic clock, rm -rf of a
 * temp directory, a seeded byte pattern to fill memory with and check it
 * against, and a check that works in a suite's teardown.  Owns no state;
 * never starts a process but rm.
 */
#ifndef PINPOOL_TEST_UTIL_H
#define PINPOOL_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Seconds on the monotonic clock. */
double test_now_s(void);
/* rm -rf path (a temp directory of the test; a failure is printed, not fatal). */
void test_rm_rf(const char *path);
/* Fill len bytes (any length) with the xorshift pattern of seed. */
void test_fill(void *buf, size_t len, unsigned seed);
/* Whether buf holds exactly test_fill's pattern of seed. */
bool test_same(const void *buf, size_t len, unsigned seed);

/* A child process that says when it is ready: test_fork_ready makes the pipe
 * and forks (0 in the child, the child's pid in the parent); the child calls
 * test_child_ready(p) when it is (it _exits 1 if it cannot say so), and the
 * parent's test_wait_ready(p) returns then, and closes the pipe. */
pid_t test_fork_ready(int p[2]);
void test_child_ready(const int p[2]);
void test_wait_ready(const int p[2]);

/* Run fn on n threads at once, thread i with arg + i * size (an array of n
 * argument structs), and join them all; the test fails if one cannot start. */
void test_threads(int n, void *(*fn)(void *), void *arg, size_t size);

/*
 * A check for a suite's .fini (or a test's end): Criterion 2.4 ignores
 * assertions in .fini (a failed cr_expect there is printed and the test still
 * passes), so when ok is false this prints the message, fails the expectation
 * (which counts inside a test body) and ends the process with status 1.
 * Criterion then says the test "exited during its setup or teardown" and exits
 * 1, and tests/run counts that test as failed.
 */
void test_fini_check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
