/*
 * test_replace.c - a chunk's memory replaced for a new owner (the host
 * backends' chunk_replace): the daemon's address keeps working and reads
 * zeros, a descriptor of the old memory kept by someone (a dup, as a process
 * of the old owner would keep) reaches only the old memory - reading it shows
 * none of the new bytes, writing and PUNCH_HOLE through it do not touch them
 * - and a replacement that fails leaves the chunk as it was.  The memfd
 * backend directly; vmm and register through the stand-in driver
 * (tests/mock/libcuda.c, which refuses to map over a mapped range, as the
 * driver does).
 *
 * Owns: each test's own ranges, chunks and descriptors; every test ends with
 * as many descriptors open as it began with.  Never: starts a daemon.
 * Locking: none; Criterion runs each test in its own process.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cudaload.h"
#include "daemon.h"
#include "ipc.h"
#include "pinpool.h"
#include "util.h"

#define MiB (1024u * 1024u)
#define CHUNK (2 * MiB) /* the stand-in driver's granularity */

static int base;

static void fds_before(void)
{
    base = test_nfds();
}

static void fds_after(void)
{
    int now = test_nfds();

    test_fini_check(now == base, "%d descriptors open at the end, %d at the start", now, base);
}

static bool all_zero(const void *p, size_t n)
{
    const unsigned char *b = p;

    for (size_t i = 0; i < n; i++)
        if (b[i] != 0)
            return false;
    return true;
}

static ino_t inode(int fd)
{
    struct stat st;

    cr_assert_eq(fstat(fd, &st), 0);
    return st.st_ino;
}

/*
 * The attack and what must hold, for any backend: chunk 0 of two holds the
 * old owner's bytes (seed 1) and a kept descriptor; after the replacement the
 * new owner writes its bytes (seed 2) through the daemon's mapping; the kept
 * descriptor sees the old bytes only, and its writes and hole punching do not
 * reach the new ones; chunk 1 is untouched.
 */
static void replace_and_attack(const ipc_host_ops_t *ops)
{
    ipc_chunk_t c[2], before;
    char err[256] = "";
    void *range, *old;
    int kept, nfds;

    cr_assert_eq(ops->reserve(2 * CHUNK, &range), 0);
    for (uint32_t i = 0; i < 2; i++)
        cr_assert_eq(ops->chunk_create(&c[i], (char *)range + i * CHUNK, CHUNK, i, err, sizeof(err)),
                     0, "%s", err);
    test_fill(range, CHUNK, 1);
    test_fill((char *)range + CHUNK, CHUNK, 3);
    kept = fcntl(c[0].fd, F_DUPFD_CLOEXEC, 0);
    cr_assert_geq(kept, 0);
    before = c[0];
    nfds = test_nfds();

    cr_assert_eq(ops->chunk_replace(&c[0], 0, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(c[0].addr, before.addr, "the daemon's address stays");
    cr_expect_eq(c[0].size, before.size);
    cr_expect_neq(inode(c[0].fd), inode(kept), "the chunk's descriptor names new memory");
    cr_expect_eq(test_nfds(), nfds, "the old descriptor (and handle) let go, the kept dup aside");
    cr_expect(all_zero(range, CHUNK), "fresh memory reads as zeros");
    test_fill(range, CHUNK, 2);

    /* The old owner's kept descriptor: its own old bytes, nothing else. */
    old = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_SHARED, kept, 0);
    cr_assert_neq(old, MAP_FAILED, "%s", strerror(errno));
    cr_expect(test_same(old, CHUNK, 1), "the kept descriptor reaches the old memory");
    cr_expect(!test_same(old, CHUNK, 2), "the kept descriptor shows the new owner's bytes");
    memset(old, 0xee, CHUNK);
    cr_expect_eq(fallocate(kept, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, CHUNK), 0, "%s",
                 strerror(errno));
    cr_expect(test_same(range, CHUNK, 2), "writes or PUNCH_HOLE through the kept descriptor "
              "reached the new owner's bytes");
    cr_expect(test_same((char *)range + CHUNK, CHUNK, 3), "chunk 1 changed");
    munmap(old, CHUNK);
    close(kept);

    for (int i = 0; i < 2; i++)
        ops->chunk_destroy(&c[i]);
    ops->release(range, 2 * CHUNK);
}

/* A replacement that fails (how: fail()) leaves the chunk as it was. */
static void replace_fails(const ipc_host_ops_t *ops, void (*fail)(bool on))
{
    ipc_chunk_t c, before;
    char err[256] = "";
    void *range;
    ino_t ino;
    int rc, nfds;

    cr_assert_eq(ops->reserve(CHUNK, &range), 0);
    cr_assert_eq(ops->chunk_create(&c, range, CHUNK, 4, err, sizeof(err)), 0, "%s", err);
    test_fill(range, CHUNK, 5);
    before = c;
    ino = inode(c.fd);
    nfds = test_nfds();
    fail(true);
    err[0] = '\0';
    rc = ops->chunk_replace(&c, 4, err, sizeof(err));
    fail(false);
    cr_expect_neq(rc, 0);
    cr_expect(strstr(err, "chunk 4") != NULL, "the message names the chunk: %s", err);
    cr_expect_eq(memcmp(&c, &before, sizeof(c)), 0, "a failed replace changed the chunk record");
    cr_expect_eq(inode(c.fd), ino);
    cr_expect(test_same(range, CHUNK, 5), "a failed replace lost the chunk's bytes");
    cr_expect_eq(test_nfds(), nfds, "a failed replace left a descriptor open");
    /* and it can still be replaced */
    cr_assert_eq(ops->chunk_replace(&c, 4, err, sizeof(err)), 0, "%s", err);
    cr_expect(all_zero(range, CHUNK));
    ops->chunk_destroy(&c);
    ops->release(range, CHUNK);
}

/* ---- memfd ---------------------------------------------------------------------- */

TestSuite(replace, .init = fds_before, .fini = fds_after, .timeout = 30);

Test(replace, memfd_kept_descriptor_reaches_only_the_old_memory)
{
    replace_and_attack(&ipc_host_memfd);
}

static struct rlimit fsize_was;

/* Files may not grow past 1 MiB: the new memfd's ftruncate fails. */
static void small_files(bool on)
{
    if (on) {
        struct rlimit lim;

        signal(SIGXFSZ, SIG_IGN);
        cr_assert_eq(getrlimit(RLIMIT_FSIZE, &fsize_was), 0);
        lim = fsize_was;
        lim.rlim_cur = MiB;
        cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    } else {
        cr_assert_eq(setrlimit(RLIMIT_FSIZE, &fsize_was), 0);
    }
}

Test(replace, memfd_failure_leaves_the_chunk)
{
    replace_fails(&ipc_host_memfd, small_files);
}

/* While one thread replaces a chunk again and again, another tries to map a
 * page at the chunk's address (MAP_FIXED_NOREPLACE: it succeeds only where
 * nothing is mapped): it never may (the range is never unmapped). */
static _Atomic int stop;
static uintptr_t lo, hi;
static _Atomic long landed, tries;

static void *mapper(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        void *p = mmap((void *)lo, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS |
                       MAP_FIXED_NOREPLACE, -1, 0);

        if (p != MAP_FAILED) {
            if ((uintptr_t)p >= lo && (uintptr_t)p < hi)
                atomic_fetch_add(&landed, 1);
            else
                munmap(p, 4096); /* an old kernel took it as a hint */
        }
        atomic_fetch_add(&tries, 1);
    }
    return NULL;
}

Test(replace, memfd_range_is_never_a_hole)
{
    ipc_chunk_t c;
    char err[256] = "";
    void *range;
    pthread_t th;

    cr_assert_eq(ipc_host_memfd.reserve(CHUNK, &range), 0);
    cr_assert_eq(ipc_host_memfd.chunk_create(&c, range, CHUNK, 0, err, sizeof(err)), 0, "%s", err);
    lo = (uintptr_t)range;
    hi = lo + CHUNK;
    cr_assert_eq(pthread_create(&th, NULL, mapper, NULL), 0);
    for (int i = 0; i < 200; i++)
        cr_assert_eq(ipc_host_memfd.chunk_replace(&c, 0, err, sizeof(err)), 0, "%s", err);
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    cr_expect_eq(atomic_load(&landed), 0, "%ld of %ld mappings landed in the chunk's range",
                 atomic_load(&landed), atomic_load(&tries));
    ipc_host_memfd.chunk_destroy(&c);
    ipc_host_memfd.release(range, CHUNK);
}

/* ---- vmm and register, through the stand-in driver -------------------------------- */

/* Load the stand-in libcuda.so.1 into this process (ipc's dlopen finds it by
 * its soname); skip where it is not built. */
static void use_mock(void)
{
    const char *build = getenv("PINPOOL_BUILD");
    char lib[600], err[256];
    char *abs;

    snprintf(lib, sizeof(lib), "%s/mockcuda/libcuda.so.1", build != NULL ? build : "build");
    if (access(lib, R_OK) != 0)
        cr_skip_test("no stand-in driver at %s (built only where cuda.h is)", lib);
    abs = realpath(lib, NULL);
    cr_assert_not_null(abs);
    cr_assert_not_null(dlopen(abs, RTLD_NOW | RTLD_GLOBAL), "%s", dlerror());
    free(abs);
    cr_assert_eq(ipc_cuda_load(err, sizeof(err)), 0, "%s", err);
}

/* The stand-in driver fails the next call of that name, once. */
static void mock_fail(const char *call, bool on)
{
    if (on)
        setenv("PINPOOL_MOCK_FAIL", call, 1);
    else
        cr_expect_null(getenv("PINPOOL_MOCK_FAIL"), "%s was never called", call);
}

static void fail_create(bool on)
{
    mock_fail("cuMemCreate", on);
}

static void fail_map(bool on)
{
    mock_fail("cuMemMap", on);
}

static void fail_register(bool on)
{
    mock_fail("cuMemHostRegister", on);
}

/* The mock's descriptors are counted after it is loaded (it opens none). */
static void mock_before(void)
{
    use_mock();
    fds_before();
}

TestSuite(replace_mock, .init = mock_before, .fini = fds_after, .timeout = 30);

Test(replace_mock, vmm_kept_descriptor_reaches_only_the_old_memory)
{
    if (ipc_host_vmm.chunk_replace == NULL)
        cr_skip_test("built without cuda.h");
    replace_and_attack(&ipc_host_vmm);
}

Test(replace_mock, vmm_failure_leaves_the_chunk)
{
    if (ipc_host_vmm.chunk_replace == NULL)
        cr_skip_test("built without cuda.h");
    replace_fails(&ipc_host_vmm, fail_create);
    replace_fails(&ipc_host_vmm, fail_map); /* after the old one was unmapped: it goes back */
}

Test(replace_mock, register_kept_descriptor_reaches_only_the_old_memory)
{
    if (ipc_host_register.chunk_replace == NULL)
        cr_skip_test("built without cuda.h");
    replace_and_attack(&ipc_host_register);
}

Test(replace_mock, register_failure_leaves_the_chunk)
{
    if (ipc_host_register.chunk_replace == NULL)
        cr_skip_test("built without cuda.h");
    replace_fails(&ipc_host_register, small_files);
    replace_fails(&ipc_host_register, fail_register); /* the old memfd goes back, pinned */
}
