/*
 * mockcuda.h - tests that drive CUDA code paths with the stand-in driver
 * (tests/mock/libcuda.c, built as $PINPOOL_BUILD/mockcuda/libcuda.so.1).
 */
#ifndef PINPOOL_TESTS_MOCKCUDA_H
#define PINPOOL_TESTS_MOCKCUDA_H

#include <stddef.h>

/* Put the stand-in libcuda.so.1 on LD_LIBRARY_PATH for every process started
 * from here (the daemon, gpu_client, bench/swap) and load it in this one;
 * skip the test where it is not built. */
void test_use_mock_cuda(void);
/* The stand-in's counter of this process's calls of name (mock_cuda_calls),
 * and the device bytes it holds (mock_cuda_device_bytes). */
int test_mock_calls(const char *name);
unsigned long long test_mock_device_bytes(void);
/* Run a shell command; its output goes to stderr, its first line (or the first
 * "FAIL" line) into out.  Returns its exit code (-1 if it did not exit). */
int test_run_cmd(const char *cmd, char *out, size_t outlen);
/* $PINPOOL_BUILD/rel (build/rel by default) into buf. */
const char *test_build_path(char *buf, size_t len, const char *rel);

#endif
