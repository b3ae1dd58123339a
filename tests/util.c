/*
 * util.c - see util.h.
 */
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

double test_now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void test_rm_rf(const char *path)
{
    char cmd[600];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", path);
}

void test_fill(void *buf, size_t len, unsigned seed)
{
    uint64_t x = 0x9E3779B97F4A7C15ull * (seed + 1ull);
    unsigned char *p = buf;

    for (size_t i = 0; i < len; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (len - i >= 8)
            memcpy(p + i, &x, 8);
        else
            memcpy(p + i, &x, len - i);
    }
}

bool test_same(const void *buf, size_t len, unsigned seed)
{
    void *want = malloc(len);
    bool ok;

    if (want == NULL)
        return false;
    test_fill(want, len, seed);
    ok = memcmp(buf, want, len) == 0;
    free(want);
    return ok;
}

pid_t test_fork_ready(int p[2])
{
    cr_assert_eq(pipe(p), 0, "pipe: %s", strerror(errno));
    pid_t pid = fork();

    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    return pid;
}

void test_child_ready(const int p[2])
{
    if (write(p[1], "r", 1) != 1)
        _exit(1);
}

void test_wait_ready(const int p[2])
{
    char ready;

    cr_assert_eq(read(p[0], &ready, 1), 1, "the child died before it was ready");
    close(p[0]);
    close(p[1]);
}

void test_threads(int n, void *(*fn)(void *), void *arg, size_t size)
{
    pthread_t th[64];

    cr_assert(n > 0 && n <= 64, "test_threads: %d threads", n);
    for (int i = 0; i < n; i++) {
        int rc = pthread_create(&th[i], NULL, fn, (char *)arg + (size_t)i * size);

        cr_assert_eq(rc, 0, "pthread_create: %s", strerror(rc));
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
}

void test_fini_check(bool ok, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (ok)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "teardown check failed: %s\n", msg);
    cr_expect(false, "%s", msg);
    fflush(NULL);
    _exit(1);
}
