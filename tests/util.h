/*
 * util.h - small helpers the test files share: a monotonic clock, rm -rf of a
 * temp directory, and a seeded byte pattern to fill memory with and check it
 * against.  Owns no state; never starts a process but rm.
 */
#ifndef PINPOOL_TEST_UTIL_H
#define PINPOOL_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>

/* Seconds on the monotonic clock. */
double test_now_s(void);
/* rm -rf path (a temp directory of the test; a failure is printed, not fatal). */
void test_rm_rf(const char *path);
/* Fill len bytes (any length) with the xorshift pattern of seed. */
void test_fill(void *buf, size_t len, unsigned seed);
/* Whether buf holds exactly test_fill's pattern of seed. */
bool test_same(const void *buf, size_t len, unsigned seed);

#endif
