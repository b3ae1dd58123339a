/*
 * test_tms.c - torch_memory_saver's allocator in libpinpool (client/tms.c,
 * pinpool_tms_*) on the stand-in driver (tests/mock/libcuda.c): this process
 * calls pinpool_tms_malloc / pinpool_tms_free as torch's CUDAPluggableAllocator
 * would, and pauses and resumes tags.  Device memory is host memory there, so
 * the bytes are checked with the CPU; a released range is PROT_NONE.  The
 * stand-in's counters tell GPU memory given back (mock_cuda_device_bytes),
 * the pieces mapped (cuMemCreate) and that a pause pins nothing in the
 * process (cuMemHostAlloc, cuMemHostRegister).  Stream ordering and real
 * torch are tests/gpu's.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "mockcuda.h"
#include "pinpool.h"

static test_daemon_t d;
static pinpool_ctx_t *ctx; /* the tms context */

static void start(void)
{
    test_use_mock_cuda();
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "256MiB", "--chunk-size", "16MiB",
                                   "--host-backend", "vmm", "--spill-tier", "none", NULL), 0);
    cr_assert_eq(pinpool_tms_connect(d.socket), 0, "%s", pinpool_tms_errmsg());
    ctx = pinpool_tms_context();
    cr_assert_not_null(ctx);
}

static void stop(void)
{
    if (ctx != NULL)
        pinpool_close(ctx); /* the daemon must see the pool back to 0 */
    test_daemon_finish(&d);
}

TestSuite(tms, .init = start, .fini = stop, .timeout = 90);

#define MiB (1ull << 20)

static void region(const char *tag, int backup)
{
    pinpool_tms_region_t r = {.backup = backup, .active = 1};
    snprintf(r.tag, sizeof(r.tag), "%s", tag);
    cr_assert_eq(pinpool_tms_set_region(&r, NULL), 0, "%s", pinpool_tms_errmsg());
}

static void no_region(void)
{
    pinpool_tms_region_t r = {.tag = "default"};
    cr_assert_eq(pinpool_tms_set_region(&r, NULL), 0);
}

static unsigned char *tms_alloc(uint64_t n)
{
    void *p = pinpool_tms_malloc((ssize_t)n, 0, NULL);
    cr_assert_not_null(p, "pinpool_tms_malloc(%" PRIu64 "): %s", n, pinpool_tms_errmsg());
    return p;
}

static void fill(unsigned char *p, uint64_t n, unsigned seed)
{
    for (uint64_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 131 + seed);
}

static bool holds(const unsigned char *p, uint64_t n, unsigned seed)
{
    for (uint64_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 131 + seed))
            return false;
    return true;
}

static pinpool_tms_usage_t usage(const char *tag)
{
    pinpool_tms_usage_t u;
    cr_assert_eq(pinpool_tms_usage(tag, &u), 0, "%s", pinpool_tms_errmsg());
    return u;
}

#define EXPECT_TMS(call, want, needle)                                                         \
    do {                                                                                       \
        int rc_ = (call);                                                                      \
        cr_expect_eq(rc_, (want), "%s: %s, want %s (%s)", #call, pinpool_err_name(rc_),        \
                     pinpool_err_name(want), pinpool_tms_errmsg());                            \
        cr_expect(strstr(pinpool_tms_errmsg(), (needle)) != NULL, "%s: '%s' lacks '%s'", #call, \
                  pinpool_tms_errmsg(), (needle));                                            \
    } while (0)

Test(tms, cpu_backup_round_trip_same_addresses_no_pinning)
{
    region("weights", PINPOOL_TMS_CPU_BACKUP);
    unsigned char *a = tms_alloc(2 * MiB), *b = tms_alloc(20 * MiB + 4096);
    no_region();
    fill(a, 2 * MiB, 1);
    fill(b, 20 * MiB + 4096, 2);
    unsigned long long held = test_mock_device_bytes();
    cr_expect_geq(held, 22 * MiB + 4096, "the allocations hold GPU memory");
    int pins = test_mock_calls("cuMemHostAlloc") + test_mock_calls("cuMemHostRegister");

    cr_assert_eq(pinpool_tms_pause("weights"), 0, "%s", pinpool_tms_errmsg());
    cr_expect_eq(test_mock_device_bytes(), 0, "pause gives every byte of GPU memory back");
    cr_expect_eq(test_mock_calls("cuMemHostAlloc") + test_mock_calls("cuMemHostRegister"), pins,
                 "the first pause pinned host memory in the process");
    pinpool_tms_usage_t u = usage("weights");
    cr_expect(u.paused == 1 && u.device_bytes == 0 && u.allocations == 2 && u.host_bytes > 0);
    cr_expect_geq(test_daemon_used(&d), 22 * MiB, "the copy lives in the daemon's pool");
    void *h = NULL;
    cr_assert_eq(pinpool_tms_cpu_backup((uint64_t)(uintptr_t)b + 100, 4096, &h), 0, "%s",
                 pinpool_tms_errmsg());
    cr_assert_not_null(h, "a paused CPU backup can be read");
    cr_expect(memcmp(h, b + 0, 0) == 0 && holds((unsigned char *)h - 100, 4096 + 100, 2),
              "get_cpu_backup shows the paused bytes");

    cr_assert_eq(pinpool_tms_resume("weights"), 0, "%s", pinpool_tms_errmsg());
    cr_expect(holds(a, 2 * MiB, 1) && holds(b, 20 * MiB + 4096, 2),
              "resume: the bytes are back at the same addresses");
    cr_expect_eq(test_mock_device_bytes(), held, "resume maps the same amount of GPU memory again");
    cr_expect_eq(test_daemon_used(&d), 0, "without retain the copy is freed at resume");
    cr_assert_eq(pinpool_tms_cpu_backup((uint64_t)(uintptr_t)a, 16, &h), 0);
    cr_expect_null(h, "resident and not retained: no backup to read");
    pinpool_tms_free(a, 2 * MiB, 0, NULL);
    pinpool_tms_free(b, 20 * MiB + 4096, 0, NULL);
    cr_expect_eq(test_mock_device_bytes(), 0, "free gives the VMM allocations back");
    cr_expect_eq(usage(NULL).swap_tags, 0, "an empty swap tag is dropped");
}

Test(tms, no_backup_keeps_no_copy)
{
    region("kv", PINPOOL_TMS_NO_BACKUP);
    unsigned char *a = tms_alloc(6 * MiB);
    fill(a, 6 * MiB, 3);
    int dtoh = test_mock_calls("cuMemcpyDtoHAsync");
    cr_assert_eq(pinpool_tms_pause("kv"), 0, "%s", pinpool_tms_errmsg());
    cr_expect_eq(test_mock_device_bytes(), 0);
    cr_expect_eq(test_mock_calls("cuMemcpyDtoHAsync"), dtoh, "without backup nothing is copied");
    cr_expect_eq(test_daemon_used(&d), 0, "and nothing is kept in the pool");
    void *h;
    EXPECT_TMS(pinpool_tms_cpu_backup((uint64_t)(uintptr_t)a, 64, &h), PINPOOL_EINVAL,
               "enable_cpu_backup=False");
    cr_assert_eq(pinpool_tms_resume("kv"), 0, "%s", pinpool_tms_errmsg());
    a[0] = 7, a[6 * MiB - 1] = 8; /* mapped again, writable, at the same address */
    cr_expect_eq(test_mock_device_bytes(), 6 * MiB);
    pinpool_tms_free(a, 6 * MiB, 0, NULL);
}

Test(tms, several_tags_and_all)
{
    region("a", PINPOOL_TMS_CPU_BACKUP);
    unsigned char *a = tms_alloc(2 * MiB);
    region("b", PINPOOL_TMS_CPU_BACKUP);
    unsigned char *b = tms_alloc(4 * MiB);
    region("c", PINPOOL_TMS_NO_BACKUP);
    unsigned char *c = tms_alloc(2 * MiB);
    no_region();
    fill(a, 2 * MiB, 4);
    fill(b, 4 * MiB, 5);

    cr_assert_eq(pinpool_tms_pause("a"), 0, "%s", pinpool_tms_errmsg());
    cr_expect(usage("a").paused == 1 && usage("b").paused == 0 && usage("c").paused == 0,
              "pause(tag) pauses that tag only");
    b[0] = 5, c[0] = 1; /* the others stay mapped */
    fill(b, 4 * MiB, 5);
    EXPECT_TMS(pinpool_tms_pause(NULL), PINPOOL_EINVAL, "already paused");
    cr_expect_eq(usage("b").paused, 0, "a refused pause(None) pauses nothing");
    cr_assert_eq(pinpool_tms_resume("a"), 0, "%s", pinpool_tms_errmsg());
    cr_assert_eq(pinpool_tms_pause(NULL), 0, "%s", pinpool_tms_errmsg());
    cr_expect_eq(usage(NULL).paused, 3, "pause(None) pauses every tag");
    cr_expect_eq(test_mock_device_bytes(), 0);
    cr_assert_eq(pinpool_tms_resume(NULL), 0, "%s", pinpool_tms_errmsg());
    cr_expect(holds(a, 2 * MiB, 4) && holds(b, 4 * MiB, 5), "resume(None) brings every backup back");
    EXPECT_TMS(pinpool_tms_resume("b"), PINPOOL_EINVAL, "not paused");
    cr_assert_eq(pinpool_tms_pause("nothing-here"), 0, "an unknown tag pauses nothing, as the original");
    pinpool_tms_free(a, 0, 0, NULL);
    pinpool_tms_free(b, 0, 0, NULL);
    pinpool_tms_free(c, 0, 0, NULL);
}

Test(tms, nested_regions_restore_the_outer_one)
{
    pinpool_tms_region_t outer = {.tag = "outer", .backup = PINPOOL_TMS_CPU_BACKUP, .active = 1};
    pinpool_tms_region_t inner = {.tag = "inner", .backup = PINPOOL_TMS_NO_BACKUP, .active = 1};
    pinpool_tms_region_t none, saved_outer, now;

    cr_assert_eq(pinpool_tms_set_region(&outer, &none), 0);
    cr_expect_eq(none.active, 0, "outside any region at first");
    unsigned char *o1 = tms_alloc(2 * MiB);
    cr_assert_eq(pinpool_tms_set_region(&inner, &saved_outer), 0);
    cr_expect_str_eq(saved_outer.tag, "outer");
    unsigned char *i1 = tms_alloc(2 * MiB);
    cr_assert_eq(pinpool_tms_set_region(&saved_outer, NULL), 0); /* leaving the inner region */
    unsigned char *o2 = tms_alloc(2 * MiB);
    cr_assert_eq(pinpool_tms_set_region(&none, NULL), 0);
    cr_assert_eq(pinpool_tms_get_region(&now), 0);
    cr_expect_eq(now.active, 0);
    cr_expect_null(pinpool_tms_malloc(2 * MiB, 0, NULL), "outside a region torch's pool must not allocate");
    cr_expect(strstr(pinpool_tms_errmsg(), "outside a region") != NULL, "%s", pinpool_tms_errmsg());
    cr_expect_eq(usage("outer").allocations, 2);
    cr_expect_eq(usage("inner").allocations, 1);
    fill(o1, 2 * MiB, 6);
    fill(o2, 2 * MiB, 7);
    cr_assert_eq(pinpool_tms_pause("outer"), 0, "%s", pinpool_tms_errmsg());
    i1[0] = 1; /* the inner tag stays mapped */
    cr_assert_eq(pinpool_tms_resume("outer"), 0, "%s", pinpool_tms_errmsg());
    cr_expect(holds(o1, 2 * MiB, 6) && holds(o2, 2 * MiB, 7));
    pinpool_tms_free(o1, 0, 0, NULL);
    pinpool_tms_free(o2, 0, 0, NULL);
    pinpool_tms_free(i1, 0, 0, NULL);
}

Test(tms, freed_blocks_are_not_copied)
{
    pinpool_swap_info_t info;

    region("f", PINPOOL_TMS_CPU_BACKUP);
    unsigned char *a = tms_alloc(8 * MiB), *b = tms_alloc(2 * MiB);
    fill(b, 2 * MiB, 8);
    unsigned long long before = test_mock_device_bytes();
    pinpool_tms_free(a, 8 * MiB, 0, NULL);
    cr_expect_eq(test_mock_device_bytes(), before - 8 * MiB, "free gives that allocation's memory back");
    cr_assert_eq(pinpool_swap_info(ctx, "f", &info), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(info.bytes, 2 * MiB, "the copy's layout no longer holds the freed block");
    cr_assert_eq(pinpool_tms_pause("f"), 0, "%s", pinpool_tms_errmsg());
    cr_expect_eq(test_daemon_used(&d), 2 * MiB, "the pause copied the live block only");
    /* freed while paused: the copy keeps the others' bytes */
    unsigned char *c = NULL;
    pinpool_tms_free(b, 2 * MiB, 0, NULL);
    cr_assert_eq(pinpool_tms_resume("f"), 0, "resume of a tag whose every block went: %s",
                 pinpool_tms_errmsg());
    cr_expect_eq(usage("f").allocations, 0);
    c = tms_alloc(4 * MiB); /* the tag is usable again */
    fill(c, 4 * MiB, 9);
    cr_assert_eq(pinpool_tms_pause("f"), 0, "%s", pinpool_tms_errmsg());
    cr_assert_eq(pinpool_tms_resume("f"), 0, "%s", pinpool_tms_errmsg());
    cr_expect(holds(c, 4 * MiB, 9));
    pinpool_tms_free(c, 4 * MiB, 0, NULL);
    pinpool_tms_free((void *)0x1234, 16, 0, NULL); /* not ours: said on stderr, nothing done */
    cr_expect_eq(test_daemon_used(&d), 0);
}

Test(tms, freeing_one_of_two_while_paused)
{
    region("g", PINPOOL_TMS_CPU_BACKUP);
    unsigned char *a = tms_alloc(2 * MiB), *b = tms_alloc(4 * MiB);
    fill(a, 2 * MiB, 10);
    fill(b, 4 * MiB, 11);
    cr_assert_eq(pinpool_tms_pause("g"), 0, "%s", pinpool_tms_errmsg());
    pinpool_tms_free(a, 2 * MiB, 0, NULL);
    cr_assert_eq(pinpool_tms_resume("g"), 0, "%s", pinpool_tms_errmsg());
    cr_expect(holds(b, 4 * MiB, 11), "the block after a freed one comes back from its own offset");
    cr_assert_eq(pinpool_tms_pause("g"), 0, "%s", pinpool_tms_errmsg());
    cr_expect_eq(test_daemon_used(&d), 4 * MiB, "the next pause copies the live block only");
    cr_assert_eq(pinpool_tms_resume("g"), 0, "%s", pinpool_tms_errmsg());
    cr_expect(holds(b, 4 * MiB, 11));
    pinpool_tms_free(b, 4 * MiB, 0, NULL);
}

Test(tms, frees_after_detach_leave_a_paused_copy_in_the_daemon)
{
    region("x", PINPOOL_TMS_CPU_BACKUP);
    unsigned char *a = tms_alloc(4 * MiB);
    fill(a, 4 * MiB, 16);
    cr_assert_eq(pinpool_tms_pause("x"), 0, "%s", pinpool_tms_errmsg());
    pinpool_tms_detach(); /* the process is ending: torch frees its pools now */
    pinpool_tms_free(a, 4 * MiB, 0, NULL);
    cr_expect_geq(test_daemon_used(&d), 4 * MiB, "the paused copy stays for another process");
    pinpool_ctx_t *other = test_connect(&d);
    pinpool_slice_t kept;
    cr_assert_eq(pinpool_attach(other, "swap:x", 0, &kept), 0, "kept under its tag: %s",
                 pinpool_errmsg(other));
    cr_expect(holds(kept.ptr, 4 * MiB, 16), "with its bytes");
    cr_expect_eq(pinpool_free(other, kept.id, NULL), 0, "%s", pinpool_errmsg(other));
    pinpool_close(other);
}

Test(tms, disk_backup_goes_to_the_daemon_as_a_released_object)
{
    region("d", PINPOOL_TMS_DISK_BACKUP);
    unsigned char *a = tms_alloc(4 * MiB);
    fill(a, 4 * MiB, 12);
    cr_assert_eq(pinpool_tms_pause("d"), 0, "%s", pinpool_tms_errmsg());
    cr_expect_eq(pinpool_exists(ctx, "swap:d~disk"), 1, "the copy is released: the daemon may spill it");
    cr_expect_eq(usage("d").host_bytes, 0, "no mapping of it is held in the process");
    void *h = (void *)1;
    cr_assert_eq(pinpool_tms_cpu_backup((uint64_t)(uintptr_t)a, 16, &h), 0);
    cr_expect_null(h, "a disk backup has no CPU copy to show, as the original");
    cr_assert_eq(pinpool_tms_resume("d"), 0, "%s", pinpool_tms_errmsg());
    cr_expect(holds(a, 4 * MiB, 12));
    cr_expect_eq(pinpool_exists(ctx, "swap:d~disk"), 0);
    pinpool_tms_free(a, 4 * MiB, 0, NULL);
}

Test(tms, retain_keeps_the_backup)
{
    cr_expect_eq(pinpool_tms_get_retain(), 0, "off unless $TMS_RETAIN_CPU_BACKUP");
    pinpool_tms_set_retain(1);
    region("r", PINPOOL_TMS_CPU_BACKUP);
    unsigned char *a = tms_alloc(2 * MiB);
    fill(a, 2 * MiB, 13);
    cr_assert_eq(pinpool_tms_pause("r"), 0, "%s", pinpool_tms_errmsg());
    cr_assert_eq(pinpool_tms_resume("r"), 0, "%s", pinpool_tms_errmsg());
    cr_expect_gt(usage("r").host_bytes, 0, "retain: the copy stays mapped after resume");
    void *h = NULL;
    cr_assert_eq(pinpool_tms_cpu_backup((uint64_t)(uintptr_t)a, 2 * MiB, &h), 0, "%s", pinpool_tms_errmsg());
    cr_expect(h != NULL && holds(h, 2 * MiB, 13), "the retained backup is readable while resident");
    fill(a, 2 * MiB, 14);
    cr_assert_eq(pinpool_tms_pause("r"), 0, "%s", pinpool_tms_errmsg());
    pinpool_tms_set_retain(0);
    cr_assert_eq(pinpool_tms_resume("r"), 0, "%s", pinpool_tms_errmsg());
    cr_expect(holds(a, 2 * MiB, 14), "the second pause copied the new bytes into the retained copy");
    cr_expect_eq(usage("r").host_bytes, 0, "a resume without retain frees it");
    pinpool_tms_free(a, 2 * MiB, 0, NULL);
}

Test(tms, errors_name_the_problem)
{
    pinpool_tms_region_t r = {.tag = "has space", .active = 1};
    void *h;

    EXPECT_TMS(pinpool_tms_set_region(&r, NULL), PINPOOL_EINVAL, "printable");
    snprintf(r.tag, sizeof(r.tag), "a~b");
    EXPECT_TMS(pinpool_tms_set_region(&r, NULL), PINPOOL_EINVAL, "'~'");
    snprintf(r.tag, sizeof(r.tag), "ok");
    r.backup = 7;
    EXPECT_TMS(pinpool_tms_set_region(&r, NULL), PINPOOL_EINVAL, "backup");
    EXPECT_TMS(pinpool_tms_pause(""), PINPOOL_EINVAL, "1 to 28");
    EXPECT_TMS(pinpool_tms_cpu_backup(0x1000, 16, &h), PINPOOL_EINVAL, "not inside a tensor");
    region("e", PINPOOL_TMS_CPU_BACKUP);
    unsigned char *a = tms_alloc(2 * MiB);
    cr_expect_null(pinpool_tms_malloc(-1, 0, NULL));
    cr_expect_null(pinpool_tms_malloc(2 * MiB, 3, NULL), "a GPU that does not exist");
    cr_assert_eq(pinpool_tms_pause("e"), 0, "%s", pinpool_tms_errmsg());
    EXPECT_TMS(pinpool_tms_pause("e"), PINPOOL_EINVAL, "already paused");
    cr_expect_null(pinpool_tms_malloc(2 * MiB, 0, NULL), "allocating in a paused tag");
    cr_expect(strstr(pinpool_tms_errmsg(), "is paused: resume it first") != NULL, "%s", pinpool_tms_errmsg());
    cr_assert_eq(pinpool_tms_resume("e"), 0, "%s", pinpool_tms_errmsg());
    EXPECT_TMS(pinpool_tms_resume("e"), PINPOOL_EINVAL, "not paused");
    pinpool_tms_set_margin(80ull << 30);
    cr_expect_null(pinpool_tms_malloc(2 * MiB, 0, NULL));
    cr_expect(strstr(pinpool_tms_errmsg(), "memory_margin_bytes") != NULL, "%s", pinpool_tms_errmsg());
    pinpool_tms_set_margin(0);
    EXPECT_TMS(pinpool_tms_connect("/elsewhere.sock"), PINPOOL_EINVAL, "connected to");
    pinpool_tms_free(a, 2 * MiB, 0, NULL);
}

Test(tms, resume_maps_piece_by_piece)
{
    /* a fresh process state: the swap state reads $PINPOOL_SWAP_MAP_CHUNK when it is made */
    setenv("PINPOOL_SWAP_MAP_CHUNK", "4MiB", 1);
    region("p", PINPOOL_TMS_CPU_BACKUP);
    unsigned char *a = tms_alloc(40 * MiB + 4096);
    fill(a, 40 * MiB + 4096, 15);
    cr_assert_eq(pinpool_tms_pause("p"), 0, "%s", pinpool_tms_errmsg());
    int creates = test_mock_calls("cuMemCreate");
    cr_assert_eq(pinpool_tms_resume("p"), 0, "%s", pinpool_tms_errmsg());
    cr_expect_eq(test_mock_calls("cuMemCreate") - creates, 11,
                 "42 MiB mapped in 4 MiB pieces (the last one 2 MiB)");
    cr_expect(holds(a, 40 * MiB + 4096, 15), "every piece holds its bytes");
    cr_expect_eq(test_mock_device_bytes(), 42 * MiB);
    cr_assert_eq(pinpool_tms_pause("p"), 0, "%s", pinpool_tms_errmsg());
    cr_expect_eq(test_mock_device_bytes(), 0, "every piece is given back");
    cr_assert_eq(pinpool_tms_resume("p"), 0, "%s", pinpool_tms_errmsg());
    pinpool_tms_free(a, 0, 0, NULL);
    cr_expect_eq(test_mock_device_bytes(), 0);
}

/* Another process pauses, exits; a new one makes the same allocations and resumes. */
static void across_processes(const char *tag, const char *backup)
{
    char client[512], cmd[1536], out[1024];

    test_build_path(client, sizeof(client), "tests/gpu_client");
    cr_assert_eq(access(client, X_OK), 0, "%s is not built", client);
    snprintf(cmd, sizeof(cmd), "%s %s tms-pause %s 12582916 21 %s 2>&1", client, d.socket, tag, backup);
    cr_assert_eq(test_run_cmd(cmd, out, sizeof(out)), 0, "tms-pause: %s", out);
    cr_expect_gt(test_daemon_used(&d), 12 * MiB, "the paused copy outlives its process");
    if (strcmp(backup, "cpu") == 0) { /* `pinpool info` shows it under its tag */
        char info[8192];
        cr_expect_eq(test_pinpool(info, sizeof(info), "info --socket %s", d.socket), 0, "%s", info);
        TEST_EXPECT_IN(info, "swap copy (tag)");
        char row[128];
        snprintf(row, sizeof(row), "\n%-40s %12s\n", tag, "18.01 MiB"); /* 2 MiB + 12 MiB + 4 KiB + 4 MiB + 4 KiB */
        TEST_EXPECT_IN(info, row);
    }
    snprintf(cmd, sizeof(cmd), "%s %s tms-resume %s 12582916 21 %s other 2>&1", client, d.socket, tag,
             backup);
    cr_expect_eq(test_run_cmd(cmd, out, sizeof(out)), 0, "tms-resume with other sizes: %s", out);
    snprintf(cmd, sizeof(cmd), "%s %s tms-resume %s 12582916 21 %s 2>&1", client, d.socket, tag, backup);
    cr_expect_eq(test_run_cmd(cmd, out, sizeof(out)), 0, "tms-resume: %s", out);
    cr_expect_eq(test_daemon_used(&d), 0, "the copy is freed by the resume");
}

Test(tms, a_new_process_resumes_a_paused_tag)
{
    across_processes("worker", "cpu");
}

Test(tms, a_new_process_resumes_a_disk_backup)
{
    across_processes("worker", "disk");
}

Test(tms, a_stale_copy_is_replaced_by_a_new_pause)
{
    char client[512], cmd[1536], out[1024];

    test_build_path(client, sizeof(client), "tests/gpu_client");
    snprintf(cmd, sizeof(cmd), "%s %s tms-pause old 4194304 1 2>&1", client, d.socket);
    cr_assert_eq(test_run_cmd(cmd, out, sizeof(out)), 0, "tms-pause: %s", out);
    region("old", PINPOOL_TMS_CPU_BACKUP); /* this process pauses the tag anew */
    unsigned char *a = tms_alloc(2 * MiB);
    fill(a, 2 * MiB, 16);
    cr_assert_eq(pinpool_tms_pause("old"), 0, "a copy left by an exited process must not block a "
                 "pause: %s", pinpool_tms_errmsg());
    cr_expect_eq(test_daemon_used(&d), 2 * MiB, "the stale copy was freed");
    cr_assert_eq(pinpool_tms_resume("old"), 0, "%s", pinpool_tms_errmsg());
    cr_expect(holds(a, 2 * MiB, 16));
    pinpool_tms_free(a, 0, 0, NULL);
}
