/*
 * test_manifest.c - tensor manifests in the daemon (client/manifest_*.c; the
 * format alone: tests/test_manifest_format.c).
 *
 * manifest: against the real daemon (memfd host pool): publish, open, find,
 * attach and verify; versions, a reader of an old version, drop waiting for
 * its readers; the commit is atomic (a reader during a publish sees the old
 * version, a publisher killed before its commit leaves it current and its
 * slices to collect); a manifest of several parts; a spillable manifest
 * spilled and restored byte-exact, and whole after a daemon restart (a kept
 * one's attach then says its slices are gone); argument errors.
 * manifest_mock: device manifests on the stand-in driver (tests/mock/libcuda.c):
 * published by one process, attached without a copy by another, verified
 * through the host, a write through the reader's pointer found; a host
 * manifest copied to the device.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "mockcuda.h"
#include "pinpool.h"
#include "util.h"

#define MiB (1ull << 20)

/* ---- against the daemon ------------------------------------------------------------------ */

TEST_DAEMON_SUITE(manifest);

#define EXPECT_ERR(ctx, call, want, needle)                                                    \
    do {                                                                                       \
        int rc_ = (call);                                                                      \
        cr_expect_eq(rc_, (want), "%s: %s, want %s (%s)", #call, pinpool_err_name(rc_),        \
                     pinpool_err_name(want), pinpool_errmsg(ctx));                             \
        const char *nd_ = (needle);                                                            \
        if (nd_ != NULL)                                                                       \
            cr_expect(strstr(pinpool_errmsg(ctx), nd_) != NULL,                                \
                      "%s: message '%s' lacks '%s'", #call, pinpool_errmsg(ctx), nd_);         \
    } while (0)

static pinpool_tensor_desc_t desc(const char *name, int dtype, uint32_t ndim, const int64_t *shape)
{
    pinpool_tensor_desc_t td;
    memset(&td, 0, sizeof(td));
    td.name = name;
    td.dtype = dtype;
    td.ndim = ndim;
    for (uint32_t i = 0; i < ndim && i < PINPOOL_MANIFEST_MAX_DIMS; i++)
        td.shape[i] = shape[i];
    return td;
}

/* Publish name with n tensors "t<i>" of F32 [rows, 1000] filled with seed + i;
 * opts may be NULL.  Returns the version. */
static uint64_t publish(pinpool_ctx_t *ctx, const char *name, int n, int64_t rows, unsigned seed,
                        const pinpool_manifest_opts_t *opts)
{
    pinpool_publish_t *pub = NULL;
    uint64_t v = 0;
    char tn[32];

    cr_assert_eq(pinpool_manifest_begin(ctx, name, opts, &pub), 0, "%s", pinpool_errmsg(ctx));
    for (int i = 0; i < n; i++) {
        int64_t shape[2] = {rows + i, 1000};
        snprintf(tn, sizeof(tn), "t%d", i);
        pinpool_tensor_desc_t td = desc(tn, PINPOOL_DTYPE_F32, 2, shape);
        cr_assert_eq(pinpool_manifest_add(pub, &td, NULL), 0, "%s", pinpool_errmsg(ctx));
    }
    cr_assert_eq(pinpool_manifest_alloc(pub), 0, "%s", pinpool_errmsg(ctx));
    for (int i = 0; i < n; i++) {
        pinpool_tensor_t t;
        cr_assert_eq(pinpool_manifest_dest(pub, (uint32_t)i, &t), 0);
        void *src = malloc(t.nbytes);
        test_fill(src, t.nbytes, seed + (unsigned)i);
        cr_assert_eq(pinpool_manifest_write(pub, (uint32_t)i, src, t.nbytes), 0, "%s",
                     pinpool_errmsg(ctx));
        free(src);
    }
    cr_assert_eq(pinpool_manifest_commit(pub, &v), 0, "%s", pinpool_errmsg(ctx));
    return v;
}

/* Every tensor of the attached host manifest m holds seed + i's pattern. */
static void expect_bytes(pinpool_manifest_t *m, int n, unsigned seed)
{
    for (int i = 0; i < n; i++) {
        pinpool_tensor_t t;
        uint32_t k;
        char tn[32];
        snprintf(tn, sizeof(tn), "t%d", i);
        cr_assert_eq(pinpool_manifest_find(m, tn, &k), 0);
        cr_assert_eq(pinpool_manifest_tensor(m, k, &t), 0);
        cr_assert_not_null(t.ptr);
        cr_expect(test_same(t.ptr, t.nbytes, seed + (unsigned)i), "tensor %s: bytes differ", tn);
        cr_expect_eq((uintptr_t)t.ptr % 256, 0, "tensor %s is not 256-byte aligned", tn);
    }
}

Test(manifest, publish_open_attach_verify_and_versions)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_manifest_opts_t opts = {.device_id = PINPOOL_HOST, .metadata = "{\"model\":\"tiny\"}"};
    uint64_t v1 = publish(ctx, "tiny/llama", 5, 100, 10, &opts);
    pinpool_manifest_t *m = NULL;
    pinpool_manifest_info_t info;
    uint64_t vs[8], cur = 0;
    uint32_t n = 0, bad = 99;

    cr_expect_eq(v1, 1);
    cr_assert_eq(pinpool_manifest_open(ctx, "tiny/llama", 0, &m), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_manifest_info(m, &info), 0);
    cr_expect_eq(info.version, 1);
    cr_expect_eq(info.num_tensors, 5);
    cr_expect_eq(info.num_segments, 1);
    cr_expect_eq(info.hash_algo, 1);
    cr_expect(info.metadata_len == 16 && memcmp(info.metadata, "{\"model\":\"tiny\"}", 16) == 0);
    EXPECT_ERR(ctx, pinpool_manifest_verify(m, NULL), PINPOOL_EINVAL, "attach");
    EXPECT_ERR(ctx, pinpool_manifest_attach(m, 0), PINPOOL_ECUDA, NULL); /* a copy needs CUDA here */
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0, "%s", pinpool_errmsg(ctx));
    EXPECT_ERR(ctx, pinpool_manifest_attach(m, PINPOOL_HOST), PINPOOL_EINVAL, "attached already");
    expect_bytes(m, 5, 10);
    cr_expect_eq(pinpool_manifest_verify(m, &bad), 0, "%s", pinpool_errmsg(ctx));
    EXPECT_ERR(ctx, pinpool_manifest_find(m, "nope", NULL), PINPOOL_ENOENT, "has no tensor 'nope'");

    /* The same version opened twice in one context shares the mapping. */
    pinpool_manifest_t *m2 = NULL;
    cr_assert_eq(pinpool_manifest_open(ctx, "tiny/llama", 1, &m2), 0);
    cr_assert_eq(pinpool_manifest_attach(m2, PINPOOL_HOST), 0, "%s", pinpool_errmsg(ctx));
    pinpool_tensor_t a, b;
    pinpool_manifest_tensor(m, 0, &a);
    pinpool_manifest_tensor(m2, 0, &b);
    cr_expect_eq(a.ptr, b.ptr);
    pinpool_manifest_close(m2);
    expect_bytes(m, 5, 10); /* still mapped for m */

    /* A write through a reader's pointer is found by verify, naming the tensor. */
    uint32_t k;
    cr_assert_eq(pinpool_manifest_find(m, "t3", &k), 0);
    pinpool_tensor_t t3;
    pinpool_manifest_tensor(m, k, &t3);
    ((unsigned char *)t3.ptr)[7] ^= 1;
    EXPECT_ERR(ctx, pinpool_manifest_verify(m, &bad), -EBADMSG, "tensor 't3'");
    cr_expect_eq(bad, k);
    ((unsigned char *)t3.ptr)[7] ^= 1;
    pinpool_manifest_close(m);

    uint64_t v2 = publish(ctx, "tiny/llama", 3, 7, 50, NULL);
    cr_expect_eq(v2, 2);
    cr_assert_eq(pinpool_manifest_versions(ctx, "tiny/llama", vs, 8, &n, &cur), 0);
    cr_expect(n == 2 && vs[0] == 1 && vs[1] == 2 && cur == 2, "n %u cur %" PRIu64, n, cur);
    cr_assert_eq(pinpool_manifest_open(ctx, "tiny/llama", 0, &m), 0);
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0);
    expect_bytes(m, 3, 50);
    pinpool_manifest_close(m);
    cr_assert_eq(pinpool_manifest_open(ctx, "tiny/llama", 1, &m), 0, "the old version stays");
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0);
    expect_bytes(m, 5, 10);
    pinpool_manifest_close(m);
    EXPECT_ERR(ctx, pinpool_manifest_open(ctx, "tiny/llama", 9, &m), PINPOOL_ENOKEY,
               "no committed version 9");
    EXPECT_ERR(ctx, pinpool_manifest_open(ctx, "nobody", 0, &m), PINPOOL_ENOKEY, "no manifest named");

    EXPECT_ERR(ctx, pinpool_manifest_drop(ctx, "tiny/llama", 2, 0), PINPOOL_EINVAL, "current one");
    cr_assert_eq(pinpool_manifest_drop(ctx, "tiny/llama", 1, 0), 0, "%s", pinpool_errmsg(ctx));
    EXPECT_ERR(ctx, pinpool_manifest_open(ctx, "tiny/llama", 1, &m), PINPOOL_ENOKEY, NULL);
    cr_assert_eq(pinpool_manifest_versions(ctx, "tiny/llama", vs, 8, &n, &cur), 0);
    cr_expect(n == 1 && vs[0] == 2);
    cr_assert_eq(pinpool_manifest_drop(ctx, "tiny/llama", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    EXPECT_ERR(ctx, pinpool_manifest_versions(ctx, "tiny/llama", vs, 8, &n, &cur), PINPOOL_ENOKEY, NULL);
    pinpool_pool_info_t pi;
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.num_kept, 0, "drop frees every kept segment");
    cr_expect_eq(pi.spill.objects, 0, "drop removes the record, manifests and markers");
    pinpool_close(ctx);
}

/* Wait (up to 2 s) until the daemon counts n sessions: it sees a process's
 * end when its fd socket closes. */
static void wait_sessions(pinpool_ctx_t *ctx, uint32_t n)
{
    for (int i = 0; i < 200; i++) {
        pinpool_pool_info_t pi;
        uint32_t k = 0;
        cr_assert_eq(pinpool_pool_info(ctx, &pi), 0);
        for (uint32_t j = 0; j < pi.num_usage; j++)
            k += pi.usage[j].pid != 0 && strncmp(pi.usage[j].client_id, "kept:", 5) != 0;
        pinpool_pool_info_free(&pi);
        if (k == n)
            return;
        usleep(10000);
    }
    cr_assert_fail("the daemon still counts other sessions than %u", n);
}

static int go_fd = -1; /* in a child: where later bytes from the parent come */

/* A child process for the tests below, forked before this process holds any
 * gRPC state (a forked gRPC client cannot be used): it waits for a byte on
 * cmd, then runs body; it dies by itself after 60 s. */
static pid_t child(int cmd[2], int up[2], void (*body)(int up_fd))
{
    cr_assert_eq(pipe(cmd), 0);
    cr_assert_eq(pipe(up), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        char c;
        alarm(60);
        if (read(cmd[0], &c, 1) != 1)
            _exit(1);
        go_fd = cmd[0];
        body(up[1]);
        _exit(0);
    }
    return pid;
}

/* Attach version 2 of "w", say the client id, and wait to be killed. */
static void reader_body(int up_fd)
{
    pinpool_ctx_t *c = pinpool_connect(d.socket);
    pinpool_manifest_t *mm = NULL;
    char id[64] = "";

    if (pinpool_manifest_open(c, "w", 2, &mm) != 0 || pinpool_manifest_attach(mm, PINPOOL_HOST) != 0)
        _exit(2);
    snprintf(id, sizeof(id), "%s", pinpool_client_id(c));
    if (write(up_fd, id, sizeof(id)) != (ssize_t)sizeof(id))
        _exit(3);
    pause();
}

Test(manifest, a_reader_keeps_its_version_and_drop_waits_for_it)
{
    int cmd[2], up[2];
    pid_t pid = child(cmd, up, reader_body);
    pinpool_ctx_t *pubctx = test_connect(&d), *reader = test_connect(&d);
    pinpool_manifest_t *m = NULL;

    publish(pubctx, "w", 2, 300, 1, NULL);
    cr_assert_eq(pinpool_manifest_open(reader, "w", 0, &m), 0);
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0, "%s", pinpool_errmsg(reader));
    uint64_t v2 = publish(pubctx, "w", 2, 200, 9, NULL);
    cr_expect_eq(v2, 2);
    expect_bytes(m, 2, 1); /* version 1's bytes, still mapped, untouched */
    EXPECT_ERR(pubctx, pinpool_manifest_drop(pubctx, "w", 1, 0), PINPOOL_EBUSY,
               pinpool_client_id(reader));
    EXPECT_ERR(pubctx, pinpool_manifest_drop(pubctx, "w", 0, 0), PINPOOL_EBUSY, "close it first");
    pinpool_manifest_close(m);
    cr_expect_eq(pinpool_manifest_drop(pubctx, "w", 1, 0), 0, "%s", pinpool_errmsg(pubctx));

    /* A reader that dies holds nothing up: its marker names a dead session
     * (and stays behind: the daemon lists no keys, so drop cannot find it). */
    publish(pubctx, "w", 1, 10, 2, NULL); /* v3: v2 can be dropped alone */
    char id[64] = "";
    cr_assert_eq(write(cmd[1], "g", 1), 1);
    close(up[1]);
    cr_assert_eq(read(up[0], id, sizeof(id)), (ssize_t)sizeof(id), "the reader died");
    close(up[0]);
    close(cmd[0]);
    close(cmd[1]);
    EXPECT_ERR(pubctx, pinpool_manifest_drop(pubctx, "w", 2, 0), PINPOOL_EBUSY, id);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    cr_expect(test_daemon_used(&d) > 0);
    wait_sessions(pubctx, 2);
    cr_expect_eq(pinpool_manifest_drop(pubctx, "w", 2, 0), 0, "%s", pinpool_errmsg(pubctx));
    cr_expect_eq(pinpool_manifest_versions(pubctx, "w", NULL, 0, NULL, NULL), 0);
    char key[160];
    snprintf(key, sizeof(key), "weights:w@2~r:%s", id);
    cr_expect_eq(pinpool_exists(pubctx, key), 1, "the dead reader's marker (documented leftover)");
    pinpool_remove(pubctx, key);
    cr_expect_eq(pinpool_manifest_drop(pubctx, "w", 0, 0), 0, "%s", pinpool_errmsg(pubctx));
    cr_expect_eq(test_daemon_used(&d), 0);
    pinpool_close(reader);
    pinpool_close(pubctx);
}

/* A second publisher of "atomic": everything but the commit, then a byte on
 * up, then it waits on go_fd (for a commit that never comes: it is killed). */
static void publisher_body(int up_fd)
{
    pinpool_ctx_t *c = pinpool_connect(d.socket);
    pinpool_publish_t *pub = NULL;
    int64_t shape[1] = {3 << 20};
    pinpool_tensor_desc_t dd = desc("big", PINPOOL_DTYPE_U8, 1, shape);
    char c1;

    if (pinpool_manifest_begin(c, "atomic", NULL, &pub) != 0 || pinpool_manifest_add(pub, &dd, NULL) != 0 ||
        pinpool_manifest_alloc(pub) != 0)
        _exit(3);
    pinpool_tensor_t t;
    pinpool_manifest_dest(pub, 0, &t);
    memset(t.ptr, 0x77, t.nbytes);
    if (write(up_fd, "r", 1) != 1 || read(go_fd, &c1, 1) != 1)
        _exit(4);
    _exit(pinpool_manifest_commit(pub, NULL) == 0 ? 0 : 5);
}

Test(manifest, the_commit_is_atomic_and_a_killed_publisher_is_collected, .timeout = 60)
{
    int cmd[2], up[2];
    pid_t pid = child(cmd, up, publisher_body);
    pinpool_ctx_t *ctx = test_connect(&d);
    uint64_t base_used;

    uint64_t v1 = publish(ctx, "atomic", 3, 400, 3, NULL);
    base_used = test_daemon_used(&d);
    char r1;
    cr_assert_eq(write(cmd[1], "g", 1), 1);
    cr_assert_eq(read(up[0], &r1, 1), 1, "the second publisher died");
    /* Mid-publish: readers see version 1, whole. */
    pinpool_manifest_t *m = NULL;
    uint64_t cur = 0;
    uint32_t n = 0;
    cr_assert_eq(pinpool_manifest_open(ctx, "atomic", 0, &m), 0, "%s", pinpool_errmsg(ctx));
    pinpool_manifest_info_t info;
    pinpool_manifest_info(m, &info);
    cr_expect_eq(info.version, v1, "a reader during a publish sees the old version");
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0);
    expect_bytes(m, 3, 3);
    pinpool_manifest_close(m);
    cr_assert_eq(pinpool_manifest_versions(ctx, "atomic", NULL, 0, &n, &cur), 0);
    cr_expect(n == 1 && cur == v1);
    EXPECT_ERR(ctx, pinpool_manifest_open(ctx, "atomic", 2, &m), PINPOOL_ENOKEY, "being published");
    pinpool_publish_t *pub2 = NULL;
    EXPECT_ERR(ctx, pinpool_manifest_begin(ctx, "atomic", NULL, &pub2), PINPOOL_EBUSY,
               "is publishing 'atomic' version 2");
    cr_expect_gt(test_daemon_used(&d), base_used + (3u << 20) - 1, "the half-made version's slice");
    uint32_t collected = 99;
    cr_assert_eq(pinpool_manifest_collect(ctx, "atomic", &collected), 0);
    cr_expect_eq(collected, 0, "a live publisher's version is not collected");

    kill(pid, SIGKILL); /* before its commit */
    int status;
    waitpid(pid, &status, 0);
    close(cmd[0]);
    close(cmd[1]);
    close(up[0]);
    close(up[1]);
    wait_sessions(ctx, 1);
    cr_assert_eq(pinpool_manifest_open(ctx, "atomic", 0, &m), 0);
    pinpool_manifest_info(m, &info);
    cr_expect_eq(info.version, v1, "a publisher killed before its commit leaves the old version");
    pinpool_manifest_close(m);
    cr_assert_eq(pinpool_manifest_collect(ctx, "atomic", &collected), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(collected, 1);
    cr_expect_eq(test_daemon_used(&d), base_used, "its slice is freed");

    /* The next version skips the dead one's number; the commit flips it. */
    uint64_t v3 = publish(ctx, "atomic", 1, 10, 40, NULL);
    cr_expect_eq(v3, 3, "versions are never reused");
    cr_assert_eq(pinpool_manifest_open(ctx, "atomic", 0, &m), 0);
    pinpool_manifest_info(m, &info);
    cr_expect_eq(info.version, 3);
    pinpool_manifest_close(m);
    cr_assert_eq(pinpool_manifest_drop(ctx, "atomic", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    pinpool_close(ctx);
}

Test(manifest, a_publisher_that_exits_without_commit_is_collected_by_the_next_one)
{
    pid_t pid = fork(); /* before this process holds any gRPC state */

    cr_assert_geq(pid, 0);
    if (pid == 0) {
        pinpool_ctx_t *c = pinpool_connect(d.socket);
        pinpool_publish_t *pub = NULL;
        int64_t shape[1] = {1 << 20};
        pinpool_tensor_desc_t dd = desc("x", PINPOOL_DTYPE_U8, 1, shape);
        if (pinpool_manifest_begin(c, "left", NULL, &pub) != 0 || pinpool_manifest_add(pub, &dd, NULL) != 0 ||
            pinpool_manifest_alloc(pub) != 0)
            _exit(3);
        _exit(0); /* no commit, no abort, no close */
    }
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    pinpool_ctx_t *ctx = test_connect(&d);
    wait_sessions(ctx, 1);
    pinpool_manifest_t *m = NULL;
    EXPECT_ERR(ctx, pinpool_manifest_open(ctx, "left", 0, &m), PINPOOL_ENOKEY, "being published");
    cr_expect_gt(test_daemon_used(&d), (1u << 20) - 1);
    /* begin collects it (its session is gone) and takes the next version */
    uint64_t v = publish(ctx, "left", 1, 1, 5, NULL);
    cr_expect_eq(v, 2);
    cr_assert_eq(pinpool_manifest_drop(ctx, "left", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(test_daemon_used(&d), 0);
    pinpool_close(ctx);
}

Test(manifest, abort_and_argument_errors)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_publish_t *pub = NULL;
    pinpool_manifest_opts_t o = {.device_id = 0, .flags = PINPOOL_MANIFEST_SPILLABLE};
    int64_t sh[2] = {4, 4};
    char longname[PINPOOL_MANIFEST_NAME_MAX + 2];

    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    EXPECT_ERR(ctx, pinpool_manifest_begin(ctx, "a@b", NULL, &pub), PINPOOL_EINVAL, "@!~#+");
    EXPECT_ERR(ctx, pinpool_manifest_begin(ctx, "has space", NULL, &pub), PINPOOL_EINVAL, "character 4");
    EXPECT_ERR(ctx, pinpool_manifest_begin(ctx, longname, NULL, &pub), PINPOOL_EINVAL, "1 to 200");
    EXPECT_ERR(ctx, pinpool_manifest_begin(ctx, "m", &o, &pub), PINPOOL_EINVAL, "host manifests");
    o = (pinpool_manifest_opts_t){.device_id = PINPOOL_HOST, .alignment = 48};
    EXPECT_ERR(ctx, pinpool_manifest_begin(ctx, "m", &o, &pub), PINPOOL_EINVAL, "power of two");
    o = (pinpool_manifest_opts_t){.device_id = PINPOOL_HOST, .flags = 0x80};
    EXPECT_ERR(ctx, pinpool_manifest_begin(ctx, "m", &o, &pub), PINPOOL_EINVAL, "unknown flags");
    cr_expect_null(pub);

    cr_assert_eq(pinpool_manifest_begin(ctx, "m", NULL, &pub), 0, "%s", pinpool_errmsg(ctx));
    pinpool_tensor_desc_t t = desc("w", PINPOOL_DTYPE_F16, 2, sh);
    cr_assert_eq(pinpool_manifest_add(pub, &t, NULL), 0);
    EXPECT_ERR(ctx, pinpool_manifest_add(pub, &t, NULL), PINPOOL_EINVAL, "added twice");
    t = desc("bad", 77, 2, sh);
    EXPECT_ERR(ctx, pinpool_manifest_add(pub, &t, NULL), PINPOOL_EINVAL, "unknown dtype 77");
    t = desc("deep", PINPOOL_DTYPE_F16, 2, sh);
    t.ndim = 9;
    EXPECT_ERR(ctx, pinpool_manifest_add(pub, &t, NULL), PINPOOL_EINVAL, "9 dimensions");
    t = desc("neg", PINPOOL_DTYPE_F16, 2, (int64_t[2]){3, -1});
    EXPECT_ERR(ctx, pinpool_manifest_add(pub, &t, NULL), PINPOOL_EINVAL, "negative");
    t = desc("short", PINPOOL_DTYPE_F32, 2, sh);
    t.nbytes = 63;
    EXPECT_ERR(ctx, pinpool_manifest_add(pub, &t, NULL), PINPOOL_EINVAL, "reach 64 bytes");
    t = desc("strided", PINPOOL_DTYPE_F32, 2, sh);
    t.flags = PINPOOL_TENSOR_STRIDED;
    t.strides[0] = 1;
    t.strides[1] = 4; /* a transposed 4x4: 64 bytes */
    cr_expect_eq(pinpool_manifest_add(pub, &t, NULL), 0, "%s", pinpool_errmsg(ctx));
    t = desc("tied", PINPOOL_DTYPE_F16, 2, sh);
    t.flags = PINPOOL_TENSOR_ALIAS;
    t.alias_of = 0;
    uint32_t tied;
    cr_expect_eq(pinpool_manifest_add(pub, &t, &tied), 0, "%s", pinpool_errmsg(ctx));
    t = desc("toobig", PINPOOL_DTYPE_F32, 2, sh);
    t.flags = PINPOOL_TENSOR_ALIAS;
    t.alias_of = 0;
    EXPECT_ERR(ctx, pinpool_manifest_add(pub, &t, NULL), PINPOOL_EINVAL, "do not fit");
    t.alias_of = 9;
    EXPECT_ERR(ctx, pinpool_manifest_add(pub, &t, NULL), PINPOOL_EINVAL, "not an earlier tensor");
    t = desc("empty", PINPOOL_DTYPE_F32, 2, (int64_t[2]){0, 5});
    cr_expect_eq(pinpool_manifest_add(pub, &t, NULL), 0);
    pinpool_tensor_t dst;
    EXPECT_ERR(ctx, pinpool_manifest_dest(pub, 0, &dst), PINPOOL_EINVAL, "alloc first");
    EXPECT_ERR(ctx, pinpool_manifest_commit(pub, NULL), PINPOOL_EINVAL, "alloc"); /* frees pub */
    cr_expect_eq(test_daemon_used(&d) > 0, 1, "(only the record and objects remain)");

    /* A second attempt: alloc, then abort frees the slices and the record entry. */
    cr_assert_eq(pinpool_manifest_begin(ctx, "m", NULL, &pub), 0);
    t = desc("w", PINPOOL_DTYPE_F16, 2, sh);
    pinpool_manifest_add(pub, &t, NULL);
    t = desc("tied", PINPOOL_DTYPE_F16, 2, sh);
    t.flags = PINPOOL_TENSOR_ALIAS;
    t.alias_of = 0;
    pinpool_manifest_add(pub, &t, &tied);
    cr_assert_eq(pinpool_manifest_alloc(pub), 0);
    pinpool_tensor_t t0, t1;
    pinpool_manifest_dest(pub, 0, &t0);
    pinpool_manifest_dest(pub, tied, &t1);
    cr_expect_eq(t0.ptr, t1.ptr, "an alias shares its base's bytes");
    t = desc("late", PINPOOL_DTYPE_F16, 2, sh);
    EXPECT_ERR(ctx, pinpool_manifest_add(pub, &t, NULL), PINPOOL_EINVAL, "allocated already");
    EXPECT_ERR(ctx, pinpool_manifest_write(pub, 0, t0.ptr, 33), PINPOOL_EINVAL, "holds 32 bytes");
    pinpool_manifest_abort(pub);
    pinpool_pool_info_t pi;
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.num_kept, 0, "abort frees the kept segments");
    pinpool_manifest_t *m = NULL;
    EXPECT_ERR(ctx, pinpool_manifest_open(ctx, "m", 0, &m), PINPOOL_ENOKEY, NULL);
    cr_expect_eq(pinpool_manifest_drop(ctx, "m", 0, 0), 0, "the record of a name with no version "
                 "goes too: %s", pinpool_errmsg(ctx));
    EXPECT_ERR(ctx, pinpool_manifest_drop(ctx, "m", 0, 0), PINPOOL_ENOKEY, "no manifest named 'm'");
    cr_expect_eq(test_daemon_used(&d), 0);
    pinpool_close(ctx);
}

Test(manifest, a_manifest_of_many_tensors_is_written_in_parts, .timeout = 90)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_publish_t *pub = NULL;
    const int n = 9000;
    char tn[160];
    int64_t sh[1] = {3};

    cr_assert_eq(pinpool_manifest_begin(ctx, "many", NULL, &pub), 0);
    for (int i = 0; i < n; i++) {
        snprintf(tn, sizeof(tn), "model.layers.%d.a_rather_long_parameter_name_to_make_the_manifest_"
                 "larger_than_one_part.weight", i);
        pinpool_tensor_desc_t t = desc(tn, PINPOOL_DTYPE_I32, 1, sh);
        cr_assert_eq(pinpool_manifest_add(pub, &t, NULL), 0, "%s", pinpool_errmsg(ctx));
    }
    cr_assert_eq(pinpool_manifest_alloc(pub), 0, "%s", pinpool_errmsg(ctx));
    for (int i = 0; i < n; i++) {
        int32_t v[3] = {i, -i, 7};
        cr_assert_eq(pinpool_manifest_write(pub, (uint32_t)i, v, sizeof(v)), 0);
    }
    cr_assert_eq(pinpool_manifest_commit(pub, NULL), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_exists(ctx, "weights:many@1+2"), 1, "three parts of 1 MiB");
    pinpool_manifest_t *m = NULL;
    cr_assert_eq(pinpool_manifest_open(ctx, "many", 0, &m), 0, "%s", pinpool_errmsg(ctx));
    pinpool_manifest_info_t info;
    pinpool_manifest_info(m, &info);
    cr_expect_gt(info.manifest_bytes, 2 * MiB);
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0);
    for (int i = 0; i < n; i += 997) {
        uint32_t k;
        pinpool_tensor_t t;
        snprintf(tn, sizeof(tn), "model.layers.%d.a_rather_long_parameter_name_to_make_the_manifest_"
                 "larger_than_one_part.weight", i);
        cr_assert_eq(pinpool_manifest_find(m, tn, &k), 0);
        pinpool_manifest_tensor(m, k, &t);
        const int32_t *v = t.ptr;
        cr_expect(v[0] == i && v[1] == -i && v[2] == 7);
    }
    cr_expect_eq(pinpool_manifest_verify(m, NULL), 0, "%s", pinpool_errmsg(ctx));
    pinpool_manifest_close(m);
    /* a missing part is a damaged manifest, said so */
    cr_assert_eq(pinpool_remove(ctx, "weights:many@1+1"), 0);
    EXPECT_ERR(ctx, pinpool_manifest_open(ctx, "many", 0, &m), -EBADMSG, "'weights:many@1+1' is gone");
    cr_assert_eq(pinpool_manifest_drop(ctx, "many", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    pinpool_close(ctx);
}

Test(manifest, a_spillable_manifest_survives_a_spill_and_restore, .timeout = 90)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_manifest_opts_t o = {.device_id = PINPOOL_HOST, .flags = PINPOOL_MANIFEST_SPILLABLE,
                                 .segment_bytes = 10 * MiB};
    /* 4 tensors of ~4.4-5.6 MiB: 3 segments, about 20 MiB of a 64 MiB pool */
    uint64_t v = publish(ctx, "cold", 4, 1150, 70, &o);
    pinpool_manifest_t *m = NULL;
    pinpool_pool_info_t pi;
    pinpool_slice_t fill[4];

    cr_assert_eq(pinpool_manifest_open(ctx, "cold", v, &m), 0);
    pinpool_manifest_info_t info;
    pinpool_manifest_info(m, &info);
    cr_expect_eq(info.placement, PINPOOL_MANIFEST_RELEASED);
    cr_expect_geq(info.num_segments, 2);
    pinpool_manifest_close(m);
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.num_kept, 0, "spillable segments are released objects, not kept slices");
    /* Fill the pool: the daemon must spill the released segments to make room. */
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pinpool_alloc(ctx, 14 * MiB, NULL, &fill[i]), 0, "%s", pinpool_errmsg(ctx));
    test_pool_info(ctx, &pi);
    cr_expect_geq(pi.spill.spills, 1, "nothing was spilled");
    cr_expect_geq(pi.spill.objects_spilled, 1);
    for (int i = 0; i < 4; i++)
        pinpool_free(ctx, fill[i].id, NULL);
    cr_assert_eq(pinpool_manifest_open(ctx, "cold", 0, &m), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0, "%s", pinpool_errmsg(ctx));
    test_pool_info(ctx, &pi);
    cr_expect_geq(pi.spill.restores, 1, "attach restored the spilled segments");
    expect_bytes(m, 4, 70);
    cr_expect_eq(pinpool_manifest_verify(m, NULL), 0, "%s", pinpool_errmsg(ctx));
    /* While this reader holds them, another waits and then is told why. */
    pinpool_manifest_close(m);
    cr_assert_eq(pinpool_manifest_open(ctx, "cold", 0, &m), 0);
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0, "released again at close: %s",
                 pinpool_errmsg(ctx));
    expect_bytes(m, 4, 70);
    pinpool_manifest_close(m);
    cr_assert_eq(pinpool_manifest_drop(ctx, "cold", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(test_daemon_used(&d), 0);
    pinpool_close(ctx);
}

Test(manifest, across_a_daemon_restart_a_spillable_manifest_stays_and_a_kept_one_says_why, .timeout = 90)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_manifest_opts_t spill = {.device_id = PINPOOL_HOST, .flags = PINPOOL_MANIFEST_SPILLABLE};
    pinpool_manifest_t *m = NULL;

    publish(ctx, "persist", 3, 500, 80, &spill);
    publish(ctx, "kept", 1, 100, 90, NULL);
    pinpool_close(ctx);
    /* SIGTERM: the daemon writes every named object to its tier; kept slices die with it
     * (test_daemon_stop would remove the state directory: stop it by hand) */
    int status = 0;
    cr_assert_eq(kill(d.pid, SIGTERM), 0);
    cr_assert_eq(waitpid(d.pid, &status, 0), d.pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
    d.pid = 0;
    cr_assert_eq(test_daemon_restart(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB", NULL), 0);
    ctx = test_connect(&d);
    cr_assert_eq(pinpool_manifest_open(ctx, "persist", 0, &m), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0, "%s", pinpool_errmsg(ctx));
    expect_bytes(m, 3, 80);
    cr_expect_eq(pinpool_manifest_verify(m, NULL), 0, "%s", pinpool_errmsg(ctx));
    pinpool_manifest_close(m);
    cr_assert_eq(pinpool_manifest_open(ctx, "kept", 0, &m), 0, "the record and manifest persist: %s",
                 pinpool_errmsg(ctx));
    EXPECT_ERR(ctx, pinpool_manifest_attach(m, PINPOOL_HOST), PINPOOL_ENOKEY, "the daemon restarted");
    pinpool_manifest_close(m);
    cr_expect_eq(pinpool_manifest_drop(ctx, "persist", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_manifest_drop(ctx, "kept", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(test_daemon_used(&d), 0);
    pinpool_close(ctx);
}

/* ---- device manifests on the stand-in driver ------------------------------------------ */

TestSuite(manifest_mock, .timeout = 90);

Test(manifest_mock, a_device_manifest_is_attached_by_another_process_without_a_copy)
{
    test_use_mock_cuda();
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "128MiB", "--chunk-size", "16MiB", "--host-backend",
                                   "vmm", "--device-pool-size", "64MiB", NULL), 0);
    pid_t pid = fork(); /* the publisher: before this process holds any gRPC state */
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        pinpool_ctx_t *c = pinpool_connect(d.socket);
        pinpool_manifest_opts_t o = {.device_id = 0, .segment_bytes = 4 * MiB, .hash_threads = 2};
        pinpool_publish_t *pub = NULL;
        if (pinpool_manifest_begin(c, "gpu", &o, &pub) != 0)
            _exit(2);
        for (int i = 0; i < 3; i++) {
            int64_t sh[2] = {1000 + 500 * i, 1024};
            char tn[8];
            snprintf(tn, sizeof(tn), "t%d", i);
            pinpool_tensor_desc_t t = desc(tn, PINPOOL_DTYPE_BF16, 2, sh);
            if (pinpool_manifest_add(pub, &t, NULL) != 0)
                _exit(3);
        }
        if (pinpool_manifest_alloc(pub) != 0)
            _exit(4);
        for (uint32_t i = 0; i < 3; i++) {
            pinpool_tensor_t t;
            pinpool_manifest_dest(pub, i, &t);
            void *src = malloc(t.nbytes);
            test_fill(src, t.nbytes, 100 + i);
            if (t.device_id != 0 || pinpool_manifest_write(pub, i, src, t.nbytes) != 0)
                _exit(5);
            free(src);
        }
        int rc = pinpool_manifest_commit(pub, NULL);
        if (rc != 0)
            fprintf(stderr, "commit: %s\n", pinpool_errmsg(c));
        pinpool_close(c);
        _exit(rc == 0 ? 0 : 6);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "publisher status %d", status);

    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_manifest_t *m = NULL;
    pinpool_manifest_info_t info;
    cr_assert_eq(pinpool_manifest_open(ctx, "gpu", 0, &m), 0, "%s", pinpool_errmsg(ctx));
    pinpool_manifest_info(m, &info);
    cr_expect_eq(info.device_id, 0);
    cr_expect_eq(info.num_segments, 3, "4 MiB segments: one tensor each");
    EXPECT_ERR(ctx, pinpool_manifest_attach(m, PINPOOL_HOST), PINPOOL_EINVAL, "on that GPU");
    unsigned long long before = test_mock_device_bytes();
    cr_assert_eq(pinpool_manifest_attach(m, 0), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(test_mock_device_bytes(), before, "no device memory allocated: no copy");
    for (int i = 0; i < 3; i++) {
        pinpool_tensor_t t;
        pinpool_manifest_tensor(m, (uint32_t)i, &t);
        cr_expect_eq(t.device_id, 0);
        cr_expect(test_same(t.ptr, t.nbytes, 100 + (unsigned)i), "t%d: bytes differ", i);
    }
    cr_expect_eq(pinpool_manifest_verify(m, NULL), 0, "%s", pinpool_errmsg(ctx));
    pinpool_tensor_t t1;
    pinpool_manifest_tensor(m, 1, &t1);
    /* The reader's mapping is read-only (vmm device pool): a write dies of SIGSEGV (the
     * stand-in's device memory is host memory), and the bytes stay as published. */
    pid_t w = fork();
    cr_assert_geq(w, 0);
    if (w == 0) {
        signal(SIGSEGV, SIG_DFL); /* a sanitizer's handler would turn the fault into an exit */
        ((volatile unsigned char *)t1.ptr)[12345] ^= 0x40;
        _exit(0);
    }
    cr_assert_eq(waitpid(w, &status, 0), w);
    cr_expect(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
              "a write through a reader's device pointer: status %d", status);
    cr_expect_eq(pinpool_manifest_verify(m, NULL), 0, "%s", pinpool_errmsg(ctx));
    pinpool_manifest_close(m);

    /* A host manifest copied to the device at attach. */
    pinpool_manifest_opts_t o = {.device_id = PINPOOL_HOST};
    publish(ctx, "hostcopy", 2, 600, 30, &o);
    cr_assert_eq(pinpool_manifest_open(ctx, "hostcopy", 0, &m), 0);
    before = test_mock_device_bytes();
    cr_assert_eq(pinpool_manifest_attach(m, 0), 0, "%s", pinpool_errmsg(ctx));
    pinpool_manifest_info(m, &info);
    cr_expect_eq(info.attached_device, 0);
    cr_expect_eq(test_mock_device_bytes(), before + info.data_bytes, "one device copy");
    for (int i = 0; i < 2; i++) {
        pinpool_tensor_t t;
        pinpool_manifest_tensor(m, (uint32_t)i, &t);
        cr_expect_eq(t.device_id, 0);
        cr_expect(test_same(t.ptr, t.nbytes, 30 + (unsigned)i), "copy of t%d: bytes differ", i);
    }
    cr_expect_eq(pinpool_manifest_verify(m, NULL), 0, "%s", pinpool_errmsg(ctx));
    pinpool_manifest_close(m);
    cr_expect_eq(test_mock_device_bytes(), before, "the copy is freed at close");
    cr_expect_eq(pinpool_manifest_drop(ctx, "gpu", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_manifest_drop(ctx, "hostcopy", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    pinpool_close(ctx);
    test_daemon_finish(&d);
}
