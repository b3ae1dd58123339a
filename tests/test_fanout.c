/*
 * test_fanout.c - pinpool_fanout and the NCCL loader without a GPU: argument
 * errors, the CUDA-less error path, NCCL missing and NCCL found (when the
 * toolkit's libnccl.so.2 is here).  The copies themselves are tested on GPUs
 * by tests/gpu/run-multi.
 *
 * Owns: nothing but each test's context (no daemon: the fan-out makes no RPC).
 * Never: needs a GPU; tests that would behave otherwise where one is visible
 * skip there.
 * Locking: none; Criterion runs each test in its own process, so each sees a
 * fresh once-per-process NCCL load.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cudaload.h"
#include "ncclload.h"
#include "pinpool.h"

static char host[4096];
static int two[2] = {0, 1};
static void *dst[2] = {(void *)0x1000, (void *)0x2000};

/* A context that is not connected: enough, pinpool_fanout makes no RPC. */
static pinpool_ctx_t *offline_ctx(void)
{
    pinpool_ctx_t *ctx = pinpool_connect("/nonexistent-pinpool-dir/pinpool.sock");
    cr_assert_not_null(ctx);
    cr_assert_neq(pinpool_err(ctx), 0);
    return ctx;
}

Test(fanout, argument_errors, .timeout = 20)
{
    pinpool_ctx_t *ctx = offline_ctx();
    int dup[2] = {1, 1}, neg[2] = {0, -1}, many[17] = {0};
    void *nodst[2] = {(void *)0x1000, NULL};

    cr_assert_eq(pinpool_fanout(NULL, host, sizeof(host), 2, two, dst, 0), -EINVAL);
    cr_assert_eq(pinpool_fanout(ctx, NULL, sizeof(host), 2, two, dst, 0), PINPOOL_EINVAL);
    cr_assert(strstr(pinpool_errmsg(ctx), "must not be NULL") != NULL, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_fanout(ctx, host, sizeof(host), 2, NULL, dst, 0), PINPOOL_EINVAL);
    cr_assert_eq(pinpool_fanout(ctx, host, sizeof(host), 2, two, NULL, 0), PINPOOL_EINVAL);
    cr_assert_eq(pinpool_fanout(ctx, host, sizeof(host), 0, two, dst, 0), PINPOOL_EINVAL);
    cr_assert_eq(pinpool_fanout(ctx, host, sizeof(host), 17, many, dst, 0), PINPOOL_EINVAL);
    cr_assert_eq(pinpool_fanout(ctx, host, sizeof(host), 2, dup, dst, 0), PINPOOL_EINVAL);
    cr_assert(strstr(pinpool_errmsg(ctx), "GPU 1 is listed twice") != NULL, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_fanout(ctx, host, sizeof(host), 2, neg, dst, 0), PINPOOL_EINVAL);
    cr_assert_eq(pinpool_fanout(ctx, host, sizeof(host), 2, two, nodst, 0), PINPOOL_EINVAL);
    cr_assert(strstr(pinpool_errmsg(ctx), "dst_ptrs[1] is NULL") != NULL, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_fanout(ctx, host, sizeof(host), 2, two, dst, 4), PINPOOL_EINVAL);
    cr_assert(strstr(pinpool_errmsg(ctx), "unknown flags") != NULL, "%s", pinpool_errmsg(ctx));
    /* Nothing to copy is no error, and touches no GPU. */
    cr_assert_eq(pinpool_fanout(ctx, host, 0, 2, two, dst, PINPOOL_FANOUT_NCCL), 0);
    pinpool_close(ctx);
}

Test(fanout, choice_and_names, .timeout = 20)
{
    pinpool_ctx_t *ctx = offline_ctx();
    unsigned m = 99;
    double g[PINPOOL_FANOUT_NMETHODS];

    cr_assert_eq(pinpool_fanout_choice(ctx, 2, two, 1 << 20, &m, g), PINPOOL_ENOENT);
    cr_assert_eq(m, 99);
    cr_assert_eq(pinpool_fanout_choice(ctx, 0, two, 1 << 20, &m, g), PINPOOL_EINVAL);
    cr_assert_eq(pinpool_fanout_choice(ctx, 2, two, 1 << 20, NULL, g), PINPOOL_EINVAL);
    cr_assert_eq(pinpool_fanout_choice(NULL, 2, two, 1 << 20, &m, g), -EINVAL);
    cr_assert_str_eq(pinpool_fanout_method_name(PINPOOL_FANOUT_AUTO), "auto");
    cr_assert_str_eq(pinpool_fanout_method_name(PINPOOL_FANOUT_DIRECT), "direct");
    cr_assert_str_eq(pinpool_fanout_method_name(PINPOOL_FANOUT_NCCL), "nccl");
    cr_assert_str_eq(pinpool_fanout_method_name(PINPOOL_FANOUT_NCCL_PIPELINED), "nccl-pipelined");
    cr_assert_str_eq(pinpool_fanout_method_name(7), "?");
    pinpool_close(ctx);
}

/* Every method, AUTO included, fails with a reason when CUDA cannot load. */
Test(fanout, without_cuda, .timeout = 20)
{
    char why[256];
    pinpool_ctx_t *ctx;

    if (ipc_cuda_load(why, sizeof(why)) == 0)
        cr_skip_test("a GPU is visible here");
    ctx = offline_ctx();
    for (unsigned m = 0; m < PINPOOL_FANOUT_NMETHODS; m++) {
        cr_assert_eq(pinpool_fanout(ctx, host, sizeof(host), 2, two, dst, m), PINPOOL_ECUDA);
        cr_assert_str_eq(pinpool_errmsg(ctx), why);
    }
    cr_assert(strstr(why, "libcuda.so.1") != NULL || strstr(why, "without CUDA") != NULL ||
              strstr(why, "GPU") != NULL, "%s", why);
    pinpool_close(ctx);
}

Test(fanout, nccl_missing, .timeout = 20)
{
    char why[1024], desc[1200];

    unsetenv("NCCL_NVLS_ENABLE");
    setenv("PINPOOL_NCCL_LIB", "/nonexistent-pinpool-dir/libnccl.so.2", 1);
    cr_assert_eq(ipc_nccl_load(why, sizeof(why)), -ELIBACC);
#ifdef PINPOOL_HAVE_NCCL
    cr_assert(strstr(why, "NCCL not found") != NULL, "%s", why);
    cr_assert(strstr(why, "/nonexistent-pinpool-dir/libnccl.so.2") != NULL, "%s", why);
    cr_assert(strstr(why, "PINPOOL_NCCL_LIB") != NULL, "%s", why);
    /* The environment is set before any NCCL could read it. */
    cr_assert_str_eq(getenv("NCCL_NVLS_ENABLE"), "0");
#endif
    /* The first result stays. */
    unsetenv("PINPOOL_NCCL_LIB");
    cr_assert_eq(ipc_nccl_load(why, sizeof(why)), -ELIBACC);
    pinpool_nccl_describe(desc, sizeof(desc));
    cr_assert(strncmp(desc, "missing: ", 9) == 0, "%s", desc);
    cr_assert_str_eq(pinpool_strerror(-ELIBACC), strerror(ELIBACC));
}

/* The user's NCCL_NVLS_ENABLE is left alone. */
Test(fanout, nvls_env_kept, .timeout = 20)
{
    char why[1024];

    setenv("NCCL_NVLS_ENABLE", "1", 1);
    setenv("PINPOOL_NCCL_LIB", "/nonexistent-pinpool-dir/libnccl.so.2", 1);
    ipc_nccl_load(why, sizeof(why));
    cr_assert_str_eq(getenv("NCCL_NVLS_ENABLE"), "1");
}

/* The toolkit's libnccl.so.2 (present on the CI image) is found by the search. */
Test(fanout, nccl_found, .timeout = 60)
{
    char why[1024], desc[1200];
    const char *cuda = getenv("CUDA_HOME");
    char path[512];

#ifndef PINPOOL_HAVE_NCCL
    cr_skip_test("built without nccl.h");
#endif
    snprintf(path, sizeof(path), "%s/lib64/libnccl.so.2", cuda ? cuda : "/usr/local/cuda");
    if (access(path, R_OK) != 0)
        cr_skip_test("no %s here", path);
    unsetenv("PINPOOL_NCCL_LIB");
    cr_assert_eq(ipc_nccl_load(why, sizeof(why)), 0, "%s", why);
    pinpool_nccl_describe(desc, sizeof(desc));
    cr_assert(strncmp(desc, "2.", 2) == 0, "%s", desc);
    cr_assert(strstr(desc, "libnccl.so.2") != NULL, "%s", desc);
}
