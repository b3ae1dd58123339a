/*
 * test_recover.c - named objects survive a restart of the daemon on the same
 * state directory (its default file tier): after kill -9 the spilled ones
 * come back with their key, bytes and TTL, and damaged copies are removed and
 * logged; after a clean SIGTERM the resident ones too (persisted at exit).
 * Before this, the files stayed, counted and unreadable.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "daemon.h"
#include "pinpool.h"
#include "util.h"

#define MiB (1024ull * 1024)

static test_daemon_t d;

static void stop(void)
{
    int rc = d.pid > 0 ? test_daemon_stop(&d) : 0;

    test_fini_check(rc == 0, "the daemon exited with %d on SIGTERM, not 0", rc);
}

TestSuite(recover, .fini = stop, .timeout = 90);

/* The daemon's default spill directory (config.c: STATE/spill/<socket, '/' as '_'>). */
static void spill_dir(char *buf, size_t len)
{
    char sock[128];

    snprintf(sock, sizeof(sock), "%s", d.socket);
    for (char *p = sock; *p != '\0'; p++)
        if (*p == '/')
            *p = '_';
    snprintf(buf, len, "%s/spill/%s", d.state, sock);
}

/* The file of the copy of key ("o." + escaped "UID/GEN/KEY"), or "" if none. */
static void copy_file(const char *key, char *buf, size_t len)
{
    char dir[256], suffix[64];
    DIR *dp;
    struct dirent *e;

    spill_dir(dir, sizeof(dir));
    snprintf(suffix, sizeof(suffix), "%%2F%s", key);
    buf[0] = '\0';
    dp = opendir(dir);
    cr_assert_not_null(dp, "%s", dir);
    while ((e = readdir(dp)) != NULL) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, "o.", 2) == 0 && n > strlen(suffix) &&
            strcmp(e->d_name + n - strlen(suffix), suffix) == 0)
            snprintf(buf, len, "%s/%s", dir, e->d_name);
    }
    closedir(dp);
}

static int count_copies(void)
{
    char dir[256];
    DIR *dp;
    struct dirent *e;
    int n = 0;

    spill_dir(dir, sizeof(dir));
    dp = opendir(dir);
    cr_assert_not_null(dp, "%s", dir);
    while ((e = readdir(dp)) != NULL)
        n += strncmp(e->d_name, "o.", 2) == 0 || strncmp(e->d_name, "h.", 2) == 0;
    closedir(dp);
    return n;
}

static bool log_has(const char *what)
{
    char cmd[512];

    snprintf(cmd, sizeof(cmd), "grep -qF -- '%s' '%s'", what, d.log);
    return system(cmd) == 0;
}


static void put_value(pinpool_ctx_t *ctx, const char *key, unsigned seed, uint64_t ttl_ms)
{
    char buf[5000];

    test_fill(buf, sizeof(buf), seed);
    cr_assert_eq(pinpool_put(ctx, key, buf, sizeof(buf), ttl_ms), 0, "%s", pinpool_errmsg(ctx));
}

static void expect_value(pinpool_ctx_t *ctx, const char *key, unsigned seed)
{
    char buf[6000];
    uint64_t got = 0;
    int rc = pinpool_get(ctx, key, buf, sizeof(buf), &got);

    cr_expect_eq(rc, 0, "get %s after the restart: %s: %s", key, pinpool_err_name(rc),
                 pinpool_errmsg(ctx));
    cr_expect(rc != 0 || (got == 5000 && test_same(buf, 5000, seed)), "%s came back different",
              key);
}

static void release_slice(pinpool_ctx_t *ctx, const char *key, unsigned seed)
{
    pinpool_slice_t s;

    cr_assert_eq(pinpool_alloc(ctx, MiB, NULL, &s), 0, "%s", pinpool_errmsg(ctx));
    test_fill(s.ptr, MiB, seed);
    cr_assert_eq(pinpool_release(ctx, s.id, key, 0), 0, "%s", pinpool_errmsg(ctx));
}

static void expect_acquired(pinpool_ctx_t *ctx, const char *key, unsigned seed)
{
    pinpool_slice_t r;
    int rc = pinpool_acquire(ctx, key, 0, &r);

    cr_assert_eq(rc, 0, "acquire %s after the restart: %s: %s", key, pinpool_err_name(rc),
                 pinpool_errmsg(ctx));
    cr_expect_eq(r.size, MiB);
    cr_expect(test_same(r.ptr, MiB, seed), "%s came back different", key);
    cr_assert_eq(pinpool_free(ctx, r.id, NULL), 0);
}

/*
 * kill -9 with every object spilled (--spill-low-watermark 1); two copies are
 * damaged while the daemon is down (one truncated, one with a torn header)
 * and an older pinpool's file is there too: the restart recovers the rest
 * with their bytes and TTLs, and removes and logs the three.
 */
Test(recover, after_kill_9_spilled_objects_are_back_and_damaged_copies_removed)
{
    pinpool_pool_info_t pi;
    char path[512];
    int fd, i;

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                   "--spill-low-watermark", "1", "--log-level", "debug", NULL), 0);
    pinpool_ctx_t *ctx = test_connect(&d);
    put_value(ctx, "a", 1, 0);
    put_value(ctx, "b", 2, 3600 * 1000);
    double c_put = test_now_s();
    put_value(ctx, "c", 3, 6000); /* expires 6 s after its put, restart or not */
    put_value(ctx, "d", 4, 0);
    put_value(ctx, "e", 5, 0);
    release_slice(ctx, "r", 6);
    for (i = 0; i < 500; i++) {
        test_pool_info(ctx, &pi);
        if (pi.spill.objects_spilled == 6)
            break;
        usleep(10000);
    }
    cr_assert_eq(pi.spill.objects_spilled, 6, "not all spilled in 5 s: %s", pi.spill.last_error);
    pinpool_close(ctx);
    cr_assert_eq(test_daemon_kill(&d, SIGKILL), 128 + SIGKILL);
    cr_assert_eq(count_copies(), 6);

    copy_file("d", path, sizeof(path));
    cr_assert_neq(path[0], '\0', "no copy of d");
    cr_assert_eq(truncate(path, 4096 + 100), 0, "%s", path);
    copy_file("e", path, sizeof(path));
    cr_assert_neq(path[0], '\0', "no copy of e");
    fd = open(path, O_WRONLY);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pwrite(fd, "\x7f", 1, 9), 1); /* the size field: the header's CRC breaks */
    close(fd);
    spill_dir(path, sizeof(path));
    strcat(path, "/o.legacy");
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "PPTIER1\n0123456789abcdef", 24), 24);
    close(fd);

    cr_assert_eq(test_daemon_restart(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                     "--spill-low-watermark", "1", "--log-level", "debug",
                                     NULL), 0);
    ctx = test_connect(&d);
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.spill.objects, 4, "a, b, c and r are back: %u objects", pi.spill.objects);
    cr_expect(log_has("4 objects recovered"), "the log has the summary");
    cr_expect(log_has("3 copies removed (3 damaged"), "the log counts the damaged copies");
    cr_expect(log_has("truncated"), "a debug line names the truncated copy");
    cr_expect(log_has("CRC does not match"), "a debug line names the torn header");
    cr_expect(log_has("o.legacy"), "a debug line names the old format's file");
    cr_expect_eq(count_copies(), 4, "the damaged copies are gone from the directory");
    expect_value(ctx, "a", 1);
    expect_value(ctx, "b", 2);
    expect_value(ctx, "c", 3);
    expect_acquired(ctx, "r", 6);
    cr_expect_eq(pinpool_exists(ctx, "d"), 0);
    cr_expect_eq(pinpool_exists(ctx, "e"), 0);
    /* c's TTL came back as an absolute expiry: it goes 6 s after its put, b stays. */
    while (pinpool_exists(ctx, "c") == 1 && test_now_s() - c_put < 12)
        usleep(50000);
    double gone = test_now_s() - c_put;
    cr_expect(gone >= 5.9 && gone < 7.5, "c went %.2f s after its put, not 6 s", gone);
    cr_expect_eq(pinpool_exists(ctx, "b"), 1, "b's TTL is an hour");
    cr_expect_eq(pinpool_remove(ctx, "a"), 0);
    cr_expect_eq(pinpool_remove(ctx, "b"), 0);
    usleep(300000); /* the maintenance thread drops c's copy too */
    cr_expect_eq(count_copies(), 0, "every copy went with its object");
    pinpool_close(ctx);
}

/* A clean SIGTERM spills the resident objects first: a restart has them all. */
Test(recover, after_sigterm_resident_objects_are_back)
{
    pinpool_pool_info_t pi;

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                   "--spill-low-watermark", "0", NULL), 0);
    pinpool_ctx_t *ctx = test_connect(&d);
    release_slice(ctx, "r1", 11);
    release_slice(ctx, "r2", 12);
    put_value(ctx, "p", 13, 0);
    test_pool_info(ctx, &pi);
    cr_assert_eq(pi.spill.objects_resident, 3);
    cr_assert_eq(pi.spill.spills, 0);
    pinpool_close(ctx);
    cr_assert_eq(test_daemon_kill(&d, SIGTERM), 0);
    cr_expect(log_has("persisting 3 resident objects"), "the log says what it persists");
    cr_expect(log_has("persisted 3 objects"), "the log says it persisted them");
    cr_assert_eq(count_copies(), 3);

    cr_assert_eq(test_daemon_restart(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                     "--spill-low-watermark", "0", NULL), 0);
    ctx = test_connect(&d);
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.spill.objects_spilled, 3, "%u spilled", pi.spill.objects_spilled);
    expect_acquired(ctx, "r1", 11);
    expect_acquired(ctx, "r2", 12);
    expect_value(ctx, "p", 13);
    cr_expect_eq(pinpool_remove(ctx, "p"), 0);
    /* The acquired objects' copies go soon after (the maintenance thread
     * removes them); the removed object's before Remove returned. */
    for (int i = 0; i < 500 && count_copies() > 0; i++)
        usleep(10000);
    cr_expect_eq(count_copies(), 0);
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.spill.objects, 0);
    pinpool_close(ctx);
}

/* A copy of key as the file tier writes it (server/tier_file.c's PPTIER2
 * format, named by the daemon's "UID/GEN/KEY"), with no TTL. */
static void write_copy(uint64_t gen, const char *key, const void *data, uint32_t len)
{
    char name[128], path[512];
    unsigned char hdr[4096] = {0}, meta[16] = {1};
    uint64_t size = len;
    uint32_t keylen, hlen = 4096, metalen = 16, crc, zero = 0;
    int n, fd;

    n = snprintf(name, sizeof(name), "%u/%016" PRIx64 "/%s", (unsigned)geteuid(), gen, key);
    keylen = (uint32_t)n;
    memcpy(hdr, "PPTIER2\n", 8);
    memcpy(hdr + 8, &size, 8);
    memcpy(hdr + 16, &keylen, 4);
    memcpy(hdr + 20, &hlen, 4);
    memcpy(hdr + 24, &metalen, 4);
    crc = (uint32_t)XXH3_64bits(data, len);
    memcpy(hdr + 28, &crc, 4);
    memcpy(hdr + 32, &zero, 4);
    memcpy(hdr + 40, name, keylen);
    memcpy(hdr + 40 + keylen, meta, metalen);
    crc = (uint32_t)XXH3_64bits(hdr, 40 + keylen + metalen);
    memcpy(hdr + 32, &crc, 4);
    spill_dir(path, sizeof(path));
    n = (int)strlen(path);
    snprintf(path + n, sizeof(path) - (size_t)n, "/o.%u%%2F%016" PRIx64 "%%2F%s",
             (unsigned)geteuid(), gen, key);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    cr_assert_geq(fd, 0, "%s", path);
    cr_assert_eq(write(fd, hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
    cr_assert_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
}

/* Two generations of one key in the tier (a removal of the old one did not
 * happen before a crash): the newer is the object, the older is removed.  A
 * copy of an older daemon's run (a lower generation, no newer one) comes back. */
Test(recover, the_newer_generation_wins_and_the_older_copy_goes)
{
    char old[5000], other[5000];

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                   "--spill-low-watermark", "1", "--log-level", "debug", NULL), 0);
    pinpool_ctx_t *ctx = test_connect(&d);
    put_value(ctx, "k", 21, 0);
    for (int i = 0; i < 500 && count_copies() < 1; i++)
        usleep(10000);
    pinpool_close(ctx);
    cr_assert_eq(test_daemon_kill(&d, SIGKILL), 128 + SIGKILL);
    cr_assert_eq(count_copies(), 1);
    test_fill(old, sizeof(old), 22);
    write_copy(1, "k", old, sizeof(old));   /* k's older generation */
    test_fill(other, sizeof(other), 23);
    write_copy(2, "k2", other, sizeof(other)); /* another key, from long ago */
    cr_assert_eq(count_copies(), 3);

    cr_assert_eq(test_daemon_restart(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                     "--spill-low-watermark", "1", "--log-level", "debug",
                                     NULL), 0);
    ctx = test_connect(&d);
    expect_value(ctx, "k", 21);
    expect_value(ctx, "k2", 23);
    cr_expect(log_has("2 objects recovered"), "the summary counts k and k2");
    cr_expect(log_has("1 older generations"), "the summary counts k's older copy");
    cr_expect_eq(count_copies(), 2, "k's older copy is gone");
    cr_expect_eq(pinpool_remove(ctx, "k"), 0);
    cr_expect_eq(pinpool_remove(ctx, "k2"), 0);
    cr_expect_eq(count_copies(), 0);
    /* new objects get generations past every one found */
    put_value(ctx, "k", 24, 0);
    for (int i = 0; i < 500 && count_copies() < 1; i++)
        usleep(10000);
    char path[512];
    copy_file("k", path, sizeof(path));
    const char *g = strstr(path, "%2F");
    cr_assert_not_null(g, "%s", path);
    cr_expect_gt(strtoull(g + 3, NULL, 16), 2, "%s", path);
    cr_expect_eq(pinpool_remove(ctx, "k"), 0);
    pinpool_close(ctx);
}

/* A copy whose bytes were damaged while the daemon was down passes the
 * header checks at start; its first read finds the CRC wrong: Get answers
 * NOT_FOUND saying so, and the object and its copy are gone (never other
 * bytes). */
Test(recover, a_damaged_payload_is_caught_at_its_first_read)
{
    char path[512];
    char buf[6000];
    uint64_t got = 0;
    int fd, rc;

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                   "--spill-low-watermark", "1", NULL), 0);
    pinpool_ctx_t *ctx = test_connect(&d);
    put_value(ctx, "bad", 31, 0);
    for (int i = 0; i < 500 && count_copies() < 1; i++)
        usleep(10000);
    pinpool_close(ctx);
    cr_assert_eq(test_daemon_kill(&d, SIGKILL), 128 + SIGKILL);
    copy_file("bad", path, sizeof(path));
    cr_assert_neq(path[0], '\0');
    fd = open(path, O_WRONLY);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pwrite(fd, "??", 2, 4096 + 1000), 2);
    close(fd);

    cr_assert_eq(test_daemon_restart(&d, "--mem-pool-size", "32MiB", "--chunk-size", "16MiB",
                                     "--spill-low-watermark", "1", NULL), 0);
    ctx = test_connect(&d);
    cr_assert_eq(pinpool_exists(ctx, "bad"), 1, "its header is whole: it is listed");
    rc = pinpool_get(ctx, "bad", buf, sizeof(buf), &got);
    cr_expect_eq(rc, PINPOOL_ENOKEY, "%s: %s", pinpool_err_name(rc), pinpool_errmsg(ctx));
    TEST_EXPECT_IN(pinpool_errmsg(ctx), "damaged");
    cr_expect_eq(pinpool_exists(ctx, "bad"), 0, "the object is gone");
    for (int i = 0; i < 500 && count_copies() > 0; i++)
        usleep(10000); /* the maintenance thread removes the damaged copy */
    cr_expect_eq(count_copies(), 0, "and its copy");
    cr_expect(log_has("is damaged"), "the log says so");
    pinpool_close(ctx);
}
