/*
 * test_swap.c - the swap API (client/swap.c) where there is no GPU: argument
 * errors come first and name the problem, every call says PINPOOL_ECUDA with
 * a reason when CUDA or a pinned daemon is missing, and nothing leaks into
 * the pool.  Then the model-swap benchmark's CPU-only smoke run (bench/swap
 * with tiny models: the strategies that need CUDA say so, the others run and
 * check their bytes, the JSON is written).  Then the CUDA paths against the
 * stand-in driver (tests/mock/libcuda.c; copies are synchronous there, so
 * stream ordering is for tests/gpu/run on a real GPU): states, layout,
 * addresses stable across release, the key taken, a resume in another
 * process, the benchmark with every strategy.
 */
#include <criterion/criterion.h>

#include <signal.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "mockcuda.h"
#include "pinpool.h"

TEST_DAEMON_SUITE(swap);

#define EXPECT_ERR(call, want, needle)                                                         \
    do {                                                                                       \
        int rc_ = (call);                                                                      \
        cr_expect_eq(rc_, (want), "%s: %s, want %s (%s)", #call, pinpool_err_name(rc_),        \
                     pinpool_err_name(want), pinpool_errmsg(ctx));                             \
        if ((needle) != NULL)                                                                  \
            cr_expect(strstr(pinpool_errmsg(ctx), (needle)) != NULL,                           \
                      "%s: message '%s' lacks '%s'", #call, pinpool_errmsg(ctx),               \
                      (const char *)(needle));                                                 \
    } while (0)

Test(swap, bad_arguments_come_first)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    uint64_t p = 0;
    char long_tag[PINPOOL_SWAP_TAG_MAX + 2];

    memset(long_tag, 'x', sizeof(long_tag) - 1);
    long_tag[sizeof(long_tag) - 1] = '\0';
    cr_expect_eq(pinpool_swap_pause(NULL, "m", NULL, 0), -EINVAL);
    cr_expect_eq(pinpool_swap_alloc(NULL, "m", 0, 1, &p), -EINVAL);
    EXPECT_ERR(pinpool_swap_alloc(ctx, NULL, 0, 4096, &p), PINPOOL_EINVAL, "NULL");
    EXPECT_ERR(pinpool_swap_register(ctx, "", 0, 0x1000, 4096), PINPOOL_EINVAL, "1 to 37");
    EXPECT_ERR(pinpool_swap_pause(ctx, long_tag, NULL, 0), PINPOOL_EINVAL, "got 38");
    EXPECT_ERR(pinpool_swap_resume(ctx, "has space", NULL, 0), PINPOOL_EINVAL, "printable");
    EXPECT_ERR(pinpool_swap_wait(ctx, "bad\ttag"), PINPOOL_EINVAL, "printable");
    EXPECT_ERR(pinpool_swap_config(ctx, 0, 0), PINPOOL_EINVAL, "streams");
    EXPECT_ERR(pinpool_swap_config(ctx, 17, 0), PINPOOL_EINVAL, "streams");
    EXPECT_ERR(pinpool_swap_config(ctx, 2, 4096), PINPOOL_EINVAL, "chunk_bytes");
    cr_expect_eq(p, 0, "a failed call wrote *dptr");
    pinpool_close(ctx);
}

Test(swap, without_cuda_every_call_says_why)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_swap_info_t info;
    uint64_t p = 0;

    /* No GPU here (or a CPU-only daemon): PINPOOL_ECUDA and a reason naming CUDA. */
    EXPECT_ERR(pinpool_swap_alloc(ctx, "model", 0, 1 << 20, &p), PINPOOL_ECUDA, "CUDA");
    EXPECT_ERR(pinpool_swap_register(ctx, "model", 0, 0x1000, 4096), PINPOOL_ECUDA, "CUDA");
    EXPECT_ERR(pinpool_swap_pause(ctx, "model", NULL, PINPOOL_SWAP_RELEASE), PINPOOL_ECUDA, "CUDA");
    EXPECT_ERR(pinpool_swap_resume(ctx, "model", NULL, 0), PINPOOL_ECUDA, "CUDA");
    EXPECT_ERR(pinpool_swap_wait(ctx, "model"), PINPOOL_ECUDA, "CUDA");
    EXPECT_ERR(pinpool_swap_drop(ctx, "model", PINPOOL_SWAP_FREE_HOST), PINPOOL_ECUDA, "CUDA");
    EXPECT_ERR(pinpool_swap_info(ctx, "model", &info), PINPOOL_ECUDA, "CUDA");
    EXPECT_ERR(pinpool_swap_config(ctx, 4, 64 << 20), PINPOOL_ECUDA, "CUDA");
    cr_expect_eq(p, 0);
    cr_expect_str_eq(pinpool_strerror(PINPOOL_ECUDA), "CUDA call failed");
    pinpool_pool_info_t pi;
    cr_assert_eq(pinpool_pool_info(ctx, &pi), 0);
    cr_expect_eq(pi.num_kept, 0, "a failed swap call left a kept slice");
    pinpool_pool_info_free(&pi);
    pinpool_close(ctx); /* with no swap state: nothing to tear down */
}

Test(swap, closed_context)
{
    pinpool_ctx_t *ctx = pinpool_connect("/nonexistent/pinpool.sock");
    cr_assert_not_null(ctx);
    cr_assert_neq(pinpool_err(ctx), 0);
    EXPECT_ERR(pinpool_swap_pause(ctx, "m", NULL, 0), PINPOOL_ECLOSED, "not connected");
    pinpool_close(ctx);
}

/* The lines of the file at path that hold needle; with echo, every line of it
 * goes to stderr too. */
static int count_lines(const char *path, const char *needle, bool echo)
{
    char line[1024];
    int n = 0;
    FILE *f = fopen(path, "r");

    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    while (fgets(line, sizeof(line), f) != NULL) {
        if (echo)
            fprintf(stderr, "  | %s", line);
        n += strstr(line, needle) != NULL;
    }
    fclose(f);
    return n;
}

/* The benchmark harness in CPU-only mode, tiny: must finish, skip what needs a
 * GPU with a reason, run and verify the rest, and write its JSON. */
Test(swap, bench_cpu_only_smoke, .timeout = 60)
{
    const char *build = getenv("PINPOOL_BUILD");
    char bin[512], json[256], cmd[2048], out[256];

    snprintf(bin, sizeof(bin), "%s/bench/swap", build != NULL ? build : "build");
    cr_assert_eq(access(bin, X_OK), 0, "%s is not built (make test builds it)", bin);
    snprintf(json, sizeof(json), "%s/swap.json", d.dir);
    snprintf(out, sizeof(out), "%s/swap.out", d.dir);
    snprintf(cmd, sizeof(cmd), "%s --socket %s --size 4MiB --models 2 --reps 1 --dir %s --json %s >%s 2>&1",
             bin, d.socket, d.dir, json, out);
    int rc = system(cmd);
    int saw_skip = count_lines(out, "skipped: no GPU", true), saw_ok = count_lines(out, " yes  ok", false);
    cr_assert_eq(rc, 0, "bench/swap exited with %d", rc);
    cr_expect_geq(saw_skip, 4, "the CUDA strategies (1, 2, 5, 6) must say 'skipped: no GPU'");
    cr_expect_geq(saw_ok, 4, "strategies 3 and 4 (three reads) must run and verify their bytes");
    FILE *f = fopen(json, "r");
    cr_assert_not_null(f, "no JSON at %s", json);
    size_t n = fread(cmd, 1, sizeof(cmd) - 1, f);
    cmd[n] = '\0';
    fclose(f);
    cr_expect(strstr(cmd, "\"rows\": [") != NULL && strstr(cmd, "\"gpu\": false") != NULL,
              "unexpected JSON: %.200s", cmd);
    unlink(json);
    unlink(out);
}

/* ---- the CUDA paths against the stand-in driver (tests/mock/libcuda.c) ----------------- */

#define use_mock test_use_mock_cuda
#define run_cmd test_run_cmd

TestSuite(swap_mock, .timeout = 90);

Test(swap_mock, pause_release_resume_in_another_process)
{
    const char *build = getenv("PINPOOL_BUILD");
    char client[512], cmd[1536], out[1024];

    use_mock();
    snprintf(client, sizeof(client), "%s/tests/gpu_client", build != NULL ? build : "build");
    cr_assert_eq(access(client, X_OK), 0, "%s is not built", client);
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "256MiB", "--chunk-size", "16MiB", "--host-backend",
                                   "vmm", "--device-pool-size", "64MiB", NULL), 0);
    cr_expect(strstr(d.ready, "mode=cuda") != NULL, "ready line: %s", d.ready);
    /* a 40 MiB + 4 buffer spans chunks; pause releases the device memory; the
     * second process resumes over 4 streams in 1 MiB pieces */
    snprintf(cmd, sizeof(cmd), "%s %s swap-pause m1 41943044 5 2>&1", client, d.socket);
    cr_expect_eq(run_cmd(cmd, out, sizeof(out)), 0, "swap-pause: %s", out);
    cr_expect(test_daemon_used(&d) > 41943040, "the paused copy is not kept in the daemon");
    snprintf(cmd, sizeof(cmd), "%s %s swap-resume m1 41943044 5 2>&1", client, d.socket);
    cr_expect_eq(run_cmd(cmd, out, sizeof(out)), 0, "swap-resume: %s", out);
    snprintf(cmd, sizeof(cmd), "%s %s swap-none m2 2>&1", client, d.socket);
    cr_expect_eq(run_cmd(cmd, out, sizeof(out)), 0, "swap-none: %s", out);
    stop();
}

Test(swap_mock, api_states_and_errors)
{
    use_mock();
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB", "--host-backend",
                                   "vmm", NULL), 0);
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_swap_info_t info;
    uint64_t a = 0, b = 0, c = 0;

    cr_assert_eq(pinpool_swap_alloc(ctx, "t", 0, 1000, &a), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_swap_alloc(ctx, "t", 0, 3000, &b), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_swap_alloc(ctx, "t", 0, 3u << 20, &c), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(b, a + 1024, "small buffers share a granule, 256-byte aligned");
    EXPECT_ERR(pinpool_swap_alloc(ctx, "t", 1, 4096, &a), PINPOOL_ENODEV, "GPU 1");
    EXPECT_ERR(pinpool_swap_alloc(ctx, "t", 0, 0, &a), PINPOOL_EINVAL, "0 bytes");
    EXPECT_ERR(pinpool_swap_pause(ctx, "unknown", NULL, 0), PINPOOL_EINVAL, "no swap tag");
    EXPECT_ERR(pinpool_swap_pause(ctx, "t", NULL, 0x80), PINPOOL_EINVAL, "flags");
    EXPECT_ERR(pinpool_swap_resume(ctx, "t", NULL, 0), PINPOOL_ENOKEY, "not paused");
    memset((void *)(uintptr_t)a, 0xab, 1000); /* the stand-in's device memory is host memory */
    memset((void *)(uintptr_t)c, 0xcd, 3u << 20);

    cr_assert_eq(pinpool_swap_pause(ctx, "t", NULL, PINPOOL_SWAP_RELEASE), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_swap_info(ctx, "t", &info), 0);
    cr_expect_eq(info.state, PINPOOL_SWAP_PAUSING);
    cr_expect_eq(info.num_buffers, 3);
    cr_expect_eq(info.bytes, 4096 + (3u << 20), "layout: one granule of small buffers, one large");
    EXPECT_ERR(pinpool_swap_alloc(ctx, "t", 0, 4096, &a), PINPOOL_EINVAL, "paused"); /* waits first */
    cr_assert_eq(pinpool_swap_info(ctx, "t", &info), 0);
    cr_expect_eq(info.state, PINPOOL_SWAP_PAUSED);
    cr_expect_eq(info.released, 1);
    cr_expect_eq(info.device_bytes, 0);
    EXPECT_ERR(pinpool_swap_pause(ctx, "t", NULL, 0), PINPOOL_EINVAL, "already paused");

    pinpool_ctx_t *other = test_connect(&d); /* the key is taken while the copy is kept */
    uint64_t o;
    cr_assert_eq(pinpool_swap_alloc(other, "t", 0, 4096, &o), 0, "%s", pinpool_errmsg(other));
    int rc = pinpool_swap_pause(other, "t", NULL, 0);
    cr_expect_eq(rc, PINPOOL_EEXIST, "%s: %s", pinpool_err_name(rc), pinpool_errmsg(other));
    rc = pinpool_swap_resume(other, "t", NULL, 0); /* sizes differ */
    cr_expect_eq(rc, PINPOOL_EINVAL, "%s: %s", pinpool_err_name(rc), pinpool_errmsg(other));
    cr_expect(strstr(pinpool_errmsg(other), "same order") != NULL, "%s", pinpool_errmsg(other));
    pinpool_close(other); /* frees its VMM buffer; the kept copy stays */

    cr_assert_eq(pinpool_swap_resume(ctx, "t", NULL, PINPOOL_SWAP_KEEP_HOST), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_swap_wait(ctx, "t"), 0);
    cr_assert_eq(pinpool_swap_wait(ctx, "t"), 0, "a second wait is a no-op");
    cr_assert_eq(pinpool_swap_info(ctx, "t", &info), 0);
    cr_expect_eq(info.state, PINPOOL_SWAP_RESIDENT);
    cr_expect_neq(info.host_slice_id, 0, "KEEP_HOST keeps the copy mapped");
    cr_expect_eq(info.device_bytes, 3 * (2u << 20), "a granule of small buffers, 3 MiB in two granules");
    const unsigned char *pa = (const void *)(uintptr_t)a, *pc = (const void *)(uintptr_t)c;
    cr_expect(pa[0] == 0xab && pa[999] == 0xab && pc[0] == 0xcd && pc[(3u << 20) - 1] == 0xcd,
              "bytes back at the same addresses");

    cr_assert_eq(pinpool_swap_config(ctx, 3, 1u << 20), 0);
    cr_assert_eq(pinpool_swap_pause(ctx, "t", NULL, 0), 0, "%s", pinpool_errmsg(ctx)); /* reuses the copy */
    cr_assert_eq(pinpool_swap_resume(ctx, "t", NULL, 0), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_swap_wait(ctx, "t"), 0);
    cr_assert_eq(pinpool_swap_info(ctx, "t", &info), 0);
    cr_expect_eq(info.host_slice_id, 0, "without KEEP_HOST the copy is freed at wait");
    cr_expect_eq(test_daemon_used(&d), 0);

    /* spillable: the copy is released under the key at wait, acquired again by resume */
    cr_assert_eq(pinpool_swap_pause(ctx, "t", NULL, PINPOOL_SWAP_RELEASE | PINPOOL_SWAP_SPILLABLE), 0,
                 "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_swap_wait(ctx, "t"), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_swap_info(ctx, "t", &info), 0);
    cr_expect(info.state == PINPOOL_SWAP_PAUSED && info.host_slice_id == 0 && info.released);
    cr_expect_eq(pinpool_exists(ctx, "swap:t"), 1, "the copy is a released object");
    cr_assert_eq(pinpool_swap_resume(ctx, "t", NULL, 0), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_swap_wait(ctx, "t"), 0, "%s", pinpool_errmsg(ctx));
    cr_expect(pa[0] == 0xab && pa[999] == 0xab && pc[(3u << 20) - 1] == 0xcd, "bytes back after acquire");
    cr_expect_eq(pinpool_exists(ctx, "swap:t"), 0, "acquired: the object left the table");
    cr_expect_eq(test_daemon_used(&d), 0);

    cr_assert_eq(pinpool_swap_pause(ctx, "t", NULL, PINPOOL_SWAP_RELEASE), 0);
    cr_assert_eq(pinpool_swap_drop(ctx, "t", PINPOOL_SWAP_FREE_HOST), 0, "%s", pinpool_errmsg(ctx));
    EXPECT_ERR(pinpool_swap_info(ctx, "t", &info), PINPOOL_EINVAL, "no swap tag");
    cr_assert_eq(pinpool_swap_register(ctx, "r", 0, 0x1000, 64), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_swap_drop(ctx, "r", 0), 0);
    pinpool_close(ctx);
    stop();
}

/*
 * The daemon restarts under a context with swap tags: swap calls say
 * PINPOOL_ESESSION; after pinpool_reconnect a resident tag (its host copy
 * kept mapped: KEEP_HOST) forgets the copy of the old session and pauses and
 * resumes with a new one, bytes intact; a tag paused into the old session's
 * memory cannot resume (its copy is gone: the error says there is none) and
 * can be dropped.
 */
Test(swap_mock, a_daemon_restart_and_reconnect_under_swap_tags)
{
    use_mock();
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB", "--host-backend",
                                   "vmm", NULL), 0);
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_swap_info_t info;
    uint64_t a = 0, p = 0;
    int rc;

    cr_assert_eq(pinpool_swap_alloc(ctx, "res", 0, 1u << 20, &a), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_swap_alloc(ctx, "gone", 0, 1u << 20, &p), 0, "%s", pinpool_errmsg(ctx));
    memset((void *)(uintptr_t)a, 0x3c, 1u << 20);
    cr_assert_eq(pinpool_swap_pause(ctx, "res", NULL, PINPOOL_SWAP_RELEASE), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_swap_resume(ctx, "res", NULL, PINPOOL_SWAP_KEEP_HOST), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_swap_wait(ctx, "res"), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_swap_pause(ctx, "gone", NULL, PINPOOL_SWAP_RELEASE), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_swap_wait(ctx, "gone"), 0, "%s", pinpool_errmsg(ctx));

    cr_assert_eq(test_daemon_kill(&d, SIGKILL), 128 + SIGKILL);
    cr_assert_eq(test_daemon_restart(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                     "--host-backend", "vmm", NULL), 0);
    rc = pinpool_swap_pause(ctx, "res", NULL, 0);
    cr_expect_eq(rc, PINPOOL_ESESSION, "%s: %s", pinpool_err_name(rc), pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_reconnect(ctx), 0, "%s", pinpool_errmsg(ctx));

    cr_assert_eq(pinpool_swap_info(ctx, "res", &info), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(info.state, PINPOOL_SWAP_RESIDENT);
    cr_expect_eq(info.host_slice_id, 0, "the old session's copy is forgotten");
    cr_assert_eq(pinpool_swap_pause(ctx, "res", NULL, PINPOOL_SWAP_RELEASE), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_swap_resume(ctx, "res", NULL, 0), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_swap_wait(ctx, "res"), 0, "%s", pinpool_errmsg(ctx));
    const unsigned char *pa = (const void *)(uintptr_t)a;
    cr_expect(pa[0] == 0x3c && pa[(1u << 20) - 1] == 0x3c, "bytes back through the new session's copy");

    rc = pinpool_swap_resume(ctx, "gone", NULL, 0);
    cr_expect_eq(rc, PINPOOL_ENOKEY, "%s: %s", pinpool_err_name(rc), pinpool_errmsg(ctx));
    cr_expect(strstr(pinpool_errmsg(ctx), "session that ended") != NULL, "%s",
              pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_swap_drop(ctx, "gone", PINPOOL_SWAP_FREE_HOST), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_swap_drop(ctx, "res", 0), 0, "%s", pinpool_errmsg(ctx));
    pinpool_close(ctx);
    stop();
}

Test(swap_mock, bench_smoke)
{
    const char *build = getenv("PINPOOL_BUILD");
    char cmd[2048], out[256];

    use_mock();
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "128MiB", "--chunk-size", "16MiB", "--host-backend",
                                   "vmm", "--device-pool-size", "32MiB", NULL), 0);
    snprintf(out, sizeof(out), "%s/swap.out", d.dir);
    snprintf(cmd, sizeof(cmd), "%s/bench/swap --socket %s --size 8MiB --models 2 --reps 1 --streams 1,2 "
             "--chunk 1MiB --dir %s >%s 2>&1", build != NULL ? build : "build", d.socket, d.dir, out);
    int rc = system(cmd);
    int rows = count_lines(out, " yes  ok", false);
    if (rc != 0 || rows != 11)
        count_lines(out, "", true); /* the table, to see which strategy failed */
    cr_expect_eq(rc, 0, "bench/swap exited with %d", rc);
    cr_expect_eq(rows, 11, "every strategy runs and verifies its bytes (%d rows)", rows);
    unlink(out);
    stop();
}
