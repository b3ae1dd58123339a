/*
 * test_devvmm.c - device pools on CUDA VMM descriptors (--device-backend),
 * on the stand-in driver (tests/mock/libcuda.c): its device memory is host
 * memory, cuMemSetAccess read-only maps PROT_READ (a write through it dies of
 * SIGSEGV) and an unmapped range is PROT_NONE, and it refuses device memory
 * or mappings off the 2 MiB granularity.  Other processes are gpu_client
 * (tests/gpu/gpu_client.c: what tests/gpu/run runs on a real GPU) and forked
 * children that only touch memory.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "devmem.h"
#include "mockcuda.h"
#include "paths.h"
#include "pinpool.h"
#include "users.h"

#define MiB ((uint64_t)1 << 20)

static test_daemon_t d;

static void stop(void)
{
    unsetenv("PINPOOL_MOCK_NO_VMM");
    test_daemon_finish(&d);
}

TestSuite(devvmm, .fini = stop, .timeout = 90);

/* The daemon's log so far into buf. */
static const char *daemon_log(char *buf, size_t len)
{
    FILE *f = fopen(d.log, "r");
    size_t n = 0;

    buf[0] = '\0';
    if (f != NULL) {
        n = fread(buf, 1, len - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

/* The mock on, a daemon with a 64 MiB device pool and extra arguments
 * (NULL-terminated). */
#define START(...)                                                                             \
    do {                                                                                       \
        test_use_mock_cuda();                                                                  \
        cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size",         \
                                       "16MiB", "--device-pool-size", "64MiB", __VA_ARGS__),   \
                     0);                                                                       \
    } while (0)

/* gpu_client SOCKET args...: its exit code, or 128 + the signal that killed it. */
static int client(char *out, size_t outlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int client(char *out, size_t outlen, const char *fmt, ...)
{
    char bin[512], args[512], cmd[1280], line[512];
    va_list ap;
    FILE *p;
    int st;

    test_build_path(bin, sizeof(bin), "tests/gpu_client");
    cr_assert_eq(access(bin, X_OK), 0, "%s is not built", bin);
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    /* exec: the shell's status is the client's own, a signal included */
    snprintf(cmd, sizeof(cmd), "exec %s %s %s 2>&1", bin, d.socket, args);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    out[0] = '\0';
    while (fgets(line, sizeof(line), p) != NULL) {
        fprintf(stderr, "  | %s", line);
        if (out[0] == '\0')
            snprintf(out, outlen, "%s", line);
    }
    st = pclose(p);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* How a forked child that reads (or writes) bytes at p ends: 0, or the signal. */
static int child_touch(volatile unsigned char *p, size_t n, bool write)
{
    pid_t pid = fork();
    int st;

    cr_assert_geq(pid, 0);
    if (pid == 0) {
        unsigned sum = 0;
        signal(SIGSEGV, SIG_DFL); /* a sanitizer's handler would turn the fault into an exit */
        for (size_t i = 0; i < n; i++) {
            if (write)
                p[i] = 0x5a;
            else
                sum += p[i];
        }
        _exit(sum == 0xffffffffu ? 3 : 0);
    }
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st) == 0 ? 0 : -1;
}

Test(devvmm, reader_maps_read_only_owner_writes)
{
    char log[8192], out[512];
    const uint64_t bytes = 5 * MiB + 8; /* three 2 MiB granules, two 4 MiB chunks */

    START(NULL);
    TEST_EXPECT_IN(daemon_log(log, sizeof(log)),
                   "device pool on CUDA VMM chunks shared as descriptors (auto: the driver "
                   "exports GPU memory as fds)");
    /* the owner (its maker) writes every byte in one process ... */
    cr_assert_eq(client(out, sizeof(out), "dev-write w 0 %" PRIu64 " 7", bytes), 0, "%s", out);
    /* ... a second process attaches read-only and reads every byte ... */
    cr_assert_eq(client(out, sizeof(out), "dev-ro w 0 %" PRIu64 " 7", bytes), 0, "%s", out);
    TEST_EXPECT_IN(out, "ok read-only attach");
    /* ... and a write through its mapping faults */
    int rc = client(out, sizeof(out), "dev-rowrite w 0 %" PRIu64, bytes);
    cr_expect_eq(rc, 128 + SIGSEGV, "a write through a read-only mapping: exit %d (%s)", rc, out);
    cr_assert_eq(client(out, sizeof(out), "dev-ro w 0 %" PRIu64 " 7", bytes), 0,
                 "the bytes changed: %s", out);

    /* in this process: an attach maps read-only (a child's write faults, its
     * reads do not), PINPOOL_ATTACH_WRITABLE read-write */
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_slice_t ro, rw;
    cr_assert_eq(pinpool_attach(ctx, "w", 0, &ro), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(child_touch(ro.ptr, bytes, false), 0, "reading a read-only mapping");
    cr_expect_eq(child_touch(ro.ptr, 1, true), SIGSEGV, "writing a read-only mapping");
    cr_assert_eq(pinpool_detach(ctx, ro.id), 0);
    cr_assert_eq(pinpool_attach(ctx, "w", PINPOOL_ATTACH_WRITABLE, &rw), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(child_touch(rw.ptr, bytes, true), 0, "writing a writable attach");
    cr_expect_eq(((unsigned char *)rw.ptr)[bytes - 1], 0x5a, "the child's write is in the slice");
    cr_assert_eq(pinpool_free(ctx, rw.id, NULL), 0, "%s", pinpool_errmsg(ctx));
    pinpool_close(ctx);
}

Test(devvmm, unmap_remap_same_address_same_bytes)
{
    char out[512];
    pinpool_ctx_t *ctx, *other;
    pinpool_slice_t s, h, k;
    pinpool_alloc_opts_t dev = {.device_id = 0};
    const uint64_t bytes = 9 * MiB;

    START(NULL);
    ctx = test_connect(&d);
    cr_assert_eq(pinpool_alloc(ctx, bytes, &dev, &s), 0, "%s", pinpool_errmsg(ctx));
    unsigned char *p = s.ptr;
    for (uint64_t i = 0; i < bytes; i++)
        p[i] = (unsigned char)(i * 131 + 7);
    cr_assert_eq(pinpool_dev_unmap(ctx, s.id), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(child_touch(p, 1, false), SIGSEGV, "an unmapped slice still reads");
    cr_expect_eq(pinpool_dev_unmap(ctx, s.id), PINPOOL_EINVAL, "unmapped twice");
    cr_assert_eq(pinpool_dev_remap(ctx, s.id), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_dev_remap(ctx, s.id), PINPOOL_EINVAL, "remapped twice");
    uint64_t bad = 0;
    for (uint64_t i = 0; i < bytes; i++)
        bad += p[i] != (unsigned char)(i * 131 + 7);
    cr_expect_eq(bad, 0, "%" PRIu64 " bytes differ after the remap at the same address", bad);
    cr_expect_eq(child_touch(p, bytes, true), 0, "the owner's remap is read-write");

    /* a host slice, an unknown one */
    cr_assert_eq(pinpool_alloc(ctx, 4096, NULL, &h), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_dev_unmap(ctx, h.id), PINPOOL_EINVAL);
    cr_expect(strstr(pinpool_errmsg(ctx), "not a device slice") != NULL, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_dev_remap(ctx, 12345), PINPOOL_ENOENT);
    cr_assert_eq(pinpool_free_all(ctx, NULL), 0);

    /* a reader's remap asks the daemon again: a slice freed meanwhile is gone */
    pinpool_alloc_opts_t keep = {.device_id = 0, .tag = "gone", .flags = PINPOOL_ALLOC_KEEP};
    other = test_connect(&d);
    cr_assert_eq(pinpool_alloc(other, MiB, &keep, &k), 0, "%s", pinpool_errmsg(other));
    cr_assert_eq(pinpool_attach(ctx, "gone", 0, &s), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_dev_unmap(ctx, s.id), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_free(other, k.id, NULL), 0, "%s", pinpool_errmsg(other));
    int rc = pinpool_dev_remap(ctx, s.id);
    cr_expect_eq(rc, PINPOOL_ENOENT, "remap of a freed slice: %s (%s)", pinpool_err_name(rc),
                 pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_detach(ctx, s.id), 0);
    pinpool_close(other);
    pinpool_close(ctx);

    /* across processes: gpu_client's reader unmaps and remaps */
    cr_assert_eq(client(out, sizeof(out), "dev-write r 0 %" PRIu64 " 3", 3 * MiB), 0, "%s", out);
    cr_assert_eq(client(out, sizeof(out), "dev-remap r 0 %" PRIu64 " 3", 3 * MiB), 0, "%s", out);
    TEST_EXPECT_IN(out, "at the same address");
    cr_assert_eq(client(out, sizeof(out), "dev-verify r 0 %" PRIu64 " 3", 3 * MiB), 0, "%s", out);
}

Test(devvmm, granularity)
{
    char log[8192];
    pinpool_ctx_t *ctx;
    pinpool_slice_t s[3];
    pinpool_alloc_opts_t dev = {.device_id = 0};
    pinpool_pool_info_t info;
    const uint64_t sizes[3] = {1, 3 * MiB, 256};

    /* 10 MiB: three chunks of the stand-in's recommended 4 MiB */
    test_use_mock_cuda();
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   "--device-pool-size", "10MiB", NULL), 0);
    TEST_EXPECT_IN(daemon_log(log, sizeof(log)),
                   "device pool of 12.00 MiB, vmm: 3 chunks of 4.00 MiB (the recommended "
                   "granularity's multiple), slices aligned to 2.00 MiB (the minimum granularity)");
    ctx = test_connect(&d);
    test_pool_info(ctx, &info);
    cr_assert_eq(info.num_devices, 1);
    cr_expect_eq(info.devices[0].capacity_bytes, 12 * MiB);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(pinpool_alloc(ctx, sizes[i], &dev, &s[i]), 0, "%s", pinpool_errmsg(ctx));
        cr_expect_eq((uintptr_t)s[i].ptr % (2 * MiB), 0, "slice %d at %p", i, s[i].ptr);
        cr_expect_eq(s[i].start_offset % (2 * MiB), 0, "slice %d at offset %" PRIu64, i,
                     s[i].start_offset);
        memset(s[i].ptr, i + 1, sizes[i]);
    }
    test_pool_info(ctx, &info);
    cr_expect_eq(info.devices[0].used_bytes, 8 * MiB, "extents are whole granules: %" PRIu64,
                 info.devices[0].used_bytes);
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            cr_expect(s[i].start_offset + sizes[i] <= s[j].start_offset ||
                      s[j].start_offset + sizes[j] <= s[i].start_offset, "slices %d, %d overlap", i, j);
    cr_expect_eq(((unsigned char *)s[1].ptr)[3 * MiB - 1], 2, "the 3 MiB slice kept its bytes");
    pinpool_slice_t more;
    cr_expect_eq(pinpool_alloc(ctx, 4 * MiB + 1, &dev, &more), PINPOOL_ENOSPC,
                 "4 MiB are left, and 4 MiB + 1 byte take 6");
    cr_assert_eq(pinpool_free_all(ctx, NULL), 0);
    pinpool_close(ctx);
}

Test(devvmm, fallback_to_ipc_when_the_driver_says_no)
{
    char log[8192], out[512];
    pinpool_ctx_t *ctx;
    pinpool_slice_t s;

    setenv("PINPOOL_MOCK_NO_VMM", "fd", 1); /* VMM, but no fd export */
    START(NULL);
    TEST_EXPECT_IN(daemon_log(log, sizeof(log)), "GPU 0: device pool on a legacy CUDA IPC handle "
                   "(auto: GPU 0 (driver 13.0) does not support exporting memory as file "
                   "descriptors (HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED is 0))");
    TEST_EXPECT_IN(log, "device pool of 64.00 MiB, ipc");
    cr_assert_eq(client(out, sizeof(out), "dev-write i 0 %" PRIu64 " 4", 3 * MiB), 0, "%s", out);
    cr_assert_eq(client(out, sizeof(out), "dev-verify i 0 %" PRIu64 " 4", 3 * MiB), 0, "%s", out);
    ctx = test_connect(&d);
    pinpool_alloc_opts_t dev = {.device_id = 0};
    cr_assert_eq(pinpool_alloc(ctx, 4096, &dev, &s), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_dev_unmap(ctx, s.id), PINPOOL_EINVAL, "an ipc pool's slice stays mapped");
    cr_assert_eq(pinpool_free(ctx, s.id, NULL), 0);
    pinpool_close(ctx);
    test_daemon_finish(&d);

    setenv("PINPOOL_MOCK_NO_VMM", "1", 1);
    START(NULL);
    TEST_EXPECT_IN(daemon_log(log, sizeof(log)), "does not support virtual memory management "
                   "(VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED is 0)");
}

Test(devvmm, asked_for_vmm_and_unsupported_is_a_clear_error)
{
    char out[4096], dir[] = "/tmp/pinpool-devvmm-XXXXXX";

    test_use_mock_cuda();
    setenv("PINPOOL_MOCK_NO_VMM", "1", 1);
    cr_assert_not_null(mkdtemp(dir));
    int rc = test_pinpool(out, sizeof(out), "serve --socket %s/p.sock --state-dir %s/state "
                          "--mem-pool-size 64MiB --chunk-size 16MiB --device-pool-size 64MiB "
                          "--device-backend vmm", dir, dir);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
    cr_expect_neq(rc, 0, "the daemon started: %s", out);
    TEST_EXPECT_IN(out, "--device-backend vmm cannot work here: GPU 0 (driver 13.0) does not "
                   "support virtual memory management");
    TEST_EXPECT_IN(out, "start with --device-backend ipc (or auto)");
}

Test(devvmm, ipc_when_asked)
{
    char log[8192], out[512];

    START("--device-backend", "ipc", NULL);
    TEST_EXPECT_IN(daemon_log(log, sizeof(log)),
                   "GPU 0: device pool on a legacy CUDA IPC handle (--device-backend ipc)");
    cr_assert_eq(client(out, sizeof(out), "dev-write i 0 %" PRIu64 " 6", 3 * MiB), 0, "%s", out);
    cr_assert_eq(client(out, sizeof(out), "dev-verify i 0 %" PRIu64 " 6", 3 * MiB), 0, "%s", out);
}

/* ---- a chunk's memory replaced for another uid ------------------------------------------ */

static bool all_bytes(const unsigned char *p, uint64_t n, unsigned char v)
{
    for (uint64_t i = 0; i < n; i++)
        if (p[i] != v)
            return false;
    return true;
}

Test(devvmm, a_replaced_chunk_leaves_the_old_memory_to_its_holders)
{
    ipc_devmem_t dm;
    char err[256];
    uint64_t va;
    int nfds, fd, kept, before;

    test_use_mock_cuda();
    nfds = test_nfds();
    cr_assert_eq(ipc_devmem_create_vmm(&dm, 0, 10 * MiB, err, sizeof(err)), 0, "%s", err);
    cr_expect(dm.nchunks == 3 && dm.chunk_size == 4 * MiB && dm.align == 2 * MiB &&
              dm.size == 12 * MiB, "%" PRIu32 " chunks of %" PRIu64 ", align %" PRIu64,
              dm.nchunks, dm.chunk_size, dm.align);
    cr_assert_eq(ipc_devmem_reserve(0, dm.chunk_size, &va, err, sizeof(err)), 0,
                 "%s", err);
    unsigned char *p = (unsigned char *)(uintptr_t)va;
    kept = dup(dm.chunks[1].fd); /* what the old uid's process kept */
    fd = dup(dm.chunks[1].fd);
    cr_assert_eq(ipc_devmem_map(0, va, dm.chunk_size, &fd, 1, true, err, sizeof(err)), 0, "%s", err);
    memset(p, 0xaa, dm.chunk_size);
    ipc_devmem_unmap(0, va, dm.chunk_size);

    /* a failed replacement leaves the chunk as it was */
    before = dm.chunks[1].fd;
    setenv("PINPOOL_MOCK_FAIL", "cuMemCreate", 1);
    cr_expect_neq(ipc_devmem_replace_chunk(&dm, 1, err, sizeof(err)), 0);
    TEST_EXPECT_IN(err, "cannot make fresh memory for chunk 1 of GPU 0 (4 MiB)");
    cr_expect_eq(dm.chunks[1].fd, before);
    fd = dup(dm.chunks[1].fd);
    cr_assert_eq(ipc_devmem_map(0, va, dm.chunk_size, &fd, 1, false, err, sizeof(err)), 0, "%s", err);
    cr_expect(all_bytes(p, dm.chunk_size, 0xaa), "a failed replacement lost the bytes");
    ipc_devmem_unmap(0, va, dm.chunk_size);

    cr_assert_eq(ipc_devmem_replace_chunk(&dm, 1, err, sizeof(err)), 0, "%s", err);
    fd = dup(dm.chunks[1].fd);
    cr_assert_eq(ipc_devmem_map(0, va, dm.chunk_size, &fd, 1, false, err, sizeof(err)), 0, "%s", err);
    cr_expect(all_bytes(p, dm.chunk_size, 0), "the new memory is not fresh");
    ipc_devmem_unmap(0, va, dm.chunk_size);
    cr_assert_eq(ipc_devmem_map(0, va, dm.chunk_size, &kept, 1, false, err, sizeof(err)), 0, "%s", err);
    cr_expect(all_bytes(p, dm.chunk_size, 0xaa), "the kept descriptor reaches the old memory only");
    ipc_devmem_unmap(0, va, dm.chunk_size);
    ipc_devmem_unreserve(va, dm.chunk_size);
    ipc_devmem_destroy(&dm);
    cr_expect_eq(test_nfds(), nfds, "descriptors left open");
    cr_expect_eq(test_mock_device_bytes(), 0, "device memory still held");
}

static uint64_t whole = 64 * MiB;

/* As another uid: a device slice of the whole pool; fill it with 0xaa (j = 1) or
 * check that it reads as zeros (j = 0), then free it.  0, or where it failed. */
static int whole_pool(void *arg)
{
    pinpool_ctx_t *ctx = pinpool_connect(d.socket);
    pinpool_alloc_opts_t dev = {.device_id = 0};
    pinpool_slice_t s;
    int rc = 0;

    if (pinpool_err(ctx) != 0)
        return 10;
    if (pinpool_alloc(ctx, whole, &dev, &s) != 0) {
        fprintf(stderr, "alloc: %s\n", pinpool_errmsg(ctx));
        return 11;
    }
    if (*(int *)arg)
        memset(s.ptr, 0xaa, whole);
    else if (!all_bytes(s.ptr, whole, 0))
        rc = 12; /* the other uid's bytes */
    if (pinpool_free(ctx, s.id, NULL) != 0)
        rc = 13;
    pinpool_close(ctx);
    return rc;
}

Test(devvmm, chunks_change_uid_with_new_memory)
{
    test_users_t users;
    char why[128], allow[64], fdsock[160];
    int fill = 1, check = 0;

    if (!test_users_get(&users, why, sizeof(why)))
        cr_skip_test("%s", why);
    test_use_mock_cuda();
    snprintf(allow, sizeof(allow), "0,%u,%u", (unsigned)users.a.uid, (unsigned)users.b.uid);
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   "--device-pool-size", "64MiB", "--allow-uid", allow, NULL), 0);
    ipc_fd_socket_path(d.socket, fdsock, sizeof(fdsock));
    cr_assert_eq(chmod(d.dir, 0711), 0);
    cr_assert_eq(chown(d.socket, 0, users.shared), 0);
    cr_assert_eq(chown(fdsock, 0, users.shared), 0);
    /* a's slice fills every chunk; once freed, the chunks are still a's: b's
     * allocation gets them only with new memory */
    cr_assert_eq(test_run_as(&users.a, true, users.shared, whole_pool, &fill), 0);
    cr_expect_eq(test_run_as(&users.b, true, users.shared, whole_pool, &check), 0,
                 "11: b found no room, 12: b saw a's bytes");
}

/* --client-quota counts a vmm device slice as what it takes: whole 2 MiB
 * granules, before the slice is made, so that no slice takes the client
 * past its quota (1 MiB slices take 2 MiB each: a third does not fit 5 MiB). */
Test(devvmm, client_quota_counts_granules)
{
    pinpool_ctx_t *ctx;
    pinpool_slice_t s[3];
    pinpool_alloc_opts_t dev = {.device_id = 0};
    pinpool_pool_info_t info;

    START("--client-quota", "5MiB", NULL);
    ctx = test_connect(&d);
    cr_assert_eq(pinpool_alloc(ctx, MiB, &dev, &s[0]), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_alloc(ctx, MiB, &dev, &s[1]), 0, "%s", pinpool_errmsg(ctx));
    int rc = pinpool_alloc(ctx, MiB, &dev, &s[2]);
    cr_expect_eq(rc, PINPOOL_ENOSPC, "a third 1 MiB device slice (2 MiB) past a 5 MiB quota with "
                 "4 MiB held: %s (%s)", pinpool_err_name(rc), pinpool_errmsg(ctx));
    cr_expect(strstr(pinpool_errmsg(ctx), "--client-quota") != NULL, "%s", pinpool_errmsg(ctx));
    test_pool_info(ctx, &info);
    cr_expect_eq(info.devices[0].used_bytes, 4 * MiB, "%" PRIu64, info.devices[0].used_bytes);
    pinpool_close(ctx);
}

/* pinpool_reconnect ends the session: its device slices go with it, unmapped
 * here too (a pointer into one faults), and their ids are unknown after. */
Test(devvmm, reconnect_drops_the_device_mappings)
{
    pinpool_ctx_t *ctx;
    pinpool_slice_t s;
    pinpool_alloc_opts_t dev = {.device_id = 0};

    START(NULL);
    ctx = test_connect(&d);
    cr_assert_eq(pinpool_alloc(ctx, 3 * MiB, &dev, &s), 0, "%s", pinpool_errmsg(ctx));
    memset(s.ptr, 7, 3 * MiB);
    cr_assert_eq(pinpool_reconnect(ctx), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(child_touch(s.ptr, 1, false), SIGSEGV, "the old session's device slice still reads");
    cr_expect_eq(pinpool_dev_unmap(ctx, s.id), PINPOOL_ENOENT, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_dev_remap(ctx, s.id), PINPOOL_ENOENT, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_alloc(ctx, 3 * MiB, &dev, &s), 0, "the new session: %s",
                 pinpool_errmsg(ctx));
    memset(s.ptr, 8, 3 * MiB);
    pinpool_close(ctx);
}
