/*
 * test_footprint.c - the daemon's GPU footprint (issue 16.4): a CUDA context
 * only on the GPUs it needs - those of its device pools, and one "home" GPU
 * for pinning host memory, the first device pool's when there is one - and
 * GetPoolInfo's gpus saying which and what it keeps there.  On the stand-in
 * driver with three GPUs (PINPOOL_MOCK_DEVICES=3), whose primary contexts
 * are retained or not (cuDevicePrimaryCtxGetState: the driver's word, which
 * the daemon reports) and cost 512 MiB each in cuMemGetInfo.
 *
 * Owns: its daemon.  Never: a real GPU.  Locking: none.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "grpc_call.h"
#include "mockcuda.h"

#define MiB (1024ull * 1024)

static test_daemon_t d;

static void setup(void)
{
    test_use_mock_cuda();
    setenv("PINPOOL_MOCK_DEVICES", "3", 1);
    d.pid = 0;
}

static void teardown(void)
{
    if (d.pid > 0)
        test_daemon_finish(&d);
}

TestSuite(footprint, .init = setup, .fini = teardown, .timeout = 60);

/* GetPoolInfo's gpus, as "dev:role:pool_mib;..." for one comparison. */
static void gpus(char *buf, size_t len, Pinpool__V1__GetPoolInfoResponse **keep)
{
    Pinpool__V1__GetPoolInfoResponse *info = NULL;
    size_t n = 0;

    test_call_default(d.socket);
    test_call_result_t r = test_call_info(NULL, &info);
    cr_assert_eq(r.status, GRPC_STATUS_OK, "GetPoolInfo: %s", r.details);
    buf[0] = '\0';
    for (size_t i = 0; i < info->n_gpus && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%d:%s:%llu;", (int)info->gpus[i]->device_id,
                              info->gpus[i]->role,
                              (unsigned long long)(info->gpus[i]->device_pool_bytes / MiB));
    *keep = info;
}

Test(footprint, host_pinning_only_holds_one_context_on_gpu_0)
{
    Pinpool__V1__GetPoolInfoResponse *info;
    char g[256];

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   "--host-backend", "vmm", NULL), 0);
    gpus(g, sizeof(g), &info);
    cr_expect_str_eq(g, "0:host pinning:0;");
    cr_expect_eq(info->gpus[0]->gpu_total_bytes, 80ull << 30);
    cr_expect_geq(info->gpus[0]->gpu_used_bytes, 512 * MiB, "the context's memory is not seen");
    pinpool__v1__get_pool_info_response__free_unpacked(info, NULL);
}

Test(footprint, a_device_pool_on_gpu_2_pins_host_memory_there_and_leaves_gpu_0_alone)
{
    Pinpool__V1__GetPoolInfoResponse *info;
    char g[256];

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   "--host-backend", "vmm", "--devices", "2",
                                   "--device-pool-size", "64MiB", NULL), 0);
    gpus(g, sizeof(g), &info);
    cr_expect_str_eq(g, "2:device pool, host pinning:64;");
    cr_expect_geq(info->gpus[0]->gpu_used_bytes, 512 * MiB + 64 * MiB);
    pinpool__v1__get_pool_info_response__free_unpacked(info, NULL);
}

Test(footprint, device_pools_on_two_gpus_and_register_pinning_on_the_first)
{
    Pinpool__V1__GetPoolInfoResponse *info;
    char g[256];

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   "--host-backend", "register", "--devices", "1,2",
                                   "--device-pool-size", "32MiB", NULL), 0);
    gpus(g, sizeof(g), &info);
    cr_expect_str_eq(g, "1:device pool, host pinning:32;2:device pool:32;");
    pinpool__v1__get_pool_info_response__free_unpacked(info, NULL);

    char out[8192]; /* libpinpool and `pinpool info` show them too */
    cr_expect_eq(test_pinpool(out, sizeof(out), "info --socket %s", d.socket), 0, "%s", out);
    TEST_EXPECT_IN(out, "GPU 1 context          device pool, host pinning; GPU memory used ");
    TEST_EXPECT_IN(out, "GPU 2 context          device pool; GPU memory used ");
    TEST_EXPECT_IN(out, " of 80.00 GiB (every process's)");
    cr_expect_null(strstr(out, "GPU 0 context"), "no context on GPU 0: %s", out);
}

Test(footprint, a_cpu_only_daemon_holds_no_context)
{
    Pinpool__V1__GetPoolInfoResponse *info;
    char g[256];

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   "--host-backend", "memfd", NULL), 0);
    gpus(g, sizeof(g), &info);
    cr_expect_str_eq(g, "");
    pinpool__v1__get_pool_info_response__free_unpacked(info, NULL);
}
