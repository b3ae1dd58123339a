/*
 * churn.h - object traffic that checks every answer, for the tests of the
 * spill tier's races (test_spill_race.c, test_spill_mooncake.c): a daemon
 * that spills all the time (--spill-low-watermark 1) must never lose a value.
 * Owns no state between calls; every client is its own connection.
 */
#ifndef PINPOOL_TEST_CHURN_H
#define PINPOOL_TEST_CHURN_H

#include <stddef.h>
#include <stdint.h>

typedef struct churn_result {
    uint64_t ops;        /* calls made */
    uint64_t lost;       /* a value that should be there answered NOT_FOUND or other bytes */
    uint64_t unexpected; /* any other wrong answer */
    char first[512];     /* the first failure, for a person */
} churn_result_t;

/* One client on socket: n rounds of Put(key, v_i); Get(key) (v_i of 1 B..8 KiB,
 * seeded by i), on one key. */
void churn_put_get(const char *socket, int n, churn_result_t *out);

/* threads clients for secs seconds, each on its own 8 keys: put, get,
 * release (a fresh 64 KiB slice), acquire, remove and puts with a TTL of a
 * few ms, every answer checked against what the client did.  The sums of
 * every client in *out. */
void churn_mixed(const char *socket, int threads, double secs, churn_result_t *out);

#endif
