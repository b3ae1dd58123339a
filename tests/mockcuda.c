/*
 * mockcuda.c - helpers of the tests that run CUDA code paths on the stand-in
 * driver (mockcuda.h).  Owns nothing past a call but the loaded library.
 */
#include "mockcuda.h"

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *mock;

const char *test_build_path(char *buf, size_t len, const char *rel)
{
    const char *build = getenv("PINPOOL_BUILD");
    snprintf(buf, len, "%s/%s", build != NULL ? build : "build", rel);
    return buf;
}

void test_use_mock_cuda(void)
{
    char dir[512], lib[600];

    test_build_path(dir, sizeof(dir), "mockcuda");
    snprintf(lib, sizeof(lib), "%s/libcuda.so.1", dir);
    if (access(lib, R_OK) != 0)
        cr_skip_test("no stand-in driver at %s (built only where cuda.h is)", lib);
    char *abs = realpath(dir, NULL);
    cr_assert_not_null(abs);
    setenv("LD_LIBRARY_PATH", abs, 1);
    free(abs);
    /* This process too: the library's dlopen("libcuda.so.1") finds it by soname. */
    abs = realpath(lib, NULL);
    mock = dlopen(abs, RTLD_NOW | RTLD_GLOBAL);
    cr_assert_not_null(mock, "%s", dlerror());
    free(abs);
}

int test_mock_calls(const char *name)
{
    int (*fn)(const char *) = NULL;
    cr_assert_not_null(mock, "test_use_mock_cuda first");
    *(void **)&fn = dlsym(mock, "mock_cuda_calls");
    cr_assert_not_null(fn, "the stand-in driver has no mock_cuda_calls");
    return fn(name);
}

unsigned long long test_mock_device_bytes(void)
{
    unsigned long long (*fn)(void) = NULL;
    cr_assert_not_null(mock, "test_use_mock_cuda first");
    *(void **)&fn = dlsym(mock, "mock_cuda_device_bytes");
    cr_assert_not_null(fn, "the stand-in driver has no mock_cuda_device_bytes");
    return fn();
}

int test_run_cmd(const char *cmd, char *out, size_t outlen)
{
    char line[1024];
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    out[0] = '\0';
    while (fgets(line, sizeof(line), p) != NULL) {
        fprintf(stderr, "  | %s", line);
        if (out[0] == '\0' || strncmp(line, "FAIL", 4) == 0)
            snprintf(out, outlen, "%s", line);
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
