/*
 * host_hugetlb.c - the `hugetlb` and `hugetlb-cpu` host-memory backends:
 * pool chunks are sealed MFD_HUGETLB memfds (2 MiB or 1 GiB pages).
 *
 * Why huge pages (DESIGN.md, H200): a 32 GiB hugetlb memfd populated by 4
 * threads and registered is ready 3.2x faster than cuMemHostAlloc, and a
 * second process maps and registers it at 22-27 ms/GiB (146 with 4 KiB
 * pages).  Two names, one memory: `hugetlb` pins the chunks with
 * cuMemHostRegister in the daemon and again, on the range it maps, in each
 * client (as `register` does with 4 KiB memfds); `hugetlb-cpu` is the same
 * chunks with no CUDA anywhere (CPU-only nodes, CI).  Two tables rather than
 * one with a flavour, because a client goes by the backend name in the
 * daemon's HELLO alone (ipc_host_backend), and a table's `cuda` says whether
 * the client must load CUDA and register what it maps; a flavour would have
 * to travel in the HELLO, which every libpinpool already deployed refuses.
 *
 * Owns: ipc_host_hugetlb, ipc_host_hugetlb_cpu, and the daemon's two
 * settings for them (ipc_hugetlb_configure: the page size, the unit of
 * population and pinning), which are process-wide by nature: they describe
 * the one kernel huge page pool the daemon draws on, and are set once at
 * start before any chunk exists (no lock; the chunk threads start after).
 * Daemon side: each chunk is a hugetlb memfd whose pages are allocated up
 * front (fallocate, by the chunk threads, unit by unit with a yield between:
 * hugetlbfs has no overcommit, so running out is ENOSPC here, never SIGBUS
 * later), sealed against resizing, mapped MAP_SHARED at a fixed, page-aligned
 * place in a PROT_NONE reservation; `hugetlb` registers it in units too.  A
 * chunk that changes owner gets a new memfd mapped over the old one in one
 * MAP_FIXED mmap (chunk_replace); when no huge page is free for it, the new
 * memory is a 4 KiB memfd instead (the note says so): a client maps either.
 * Client side: received fds mapped contiguously into a reservation aligned
 * for the largest page (1 GiB when the range is a multiple of it, else
 * 2 MiB; MAP_FIXED of a hugetlb file needs that), and with `hugetlb`
 * registered in one call.
 * Never: leaves a range momentarily unmapped (every replacement is one
 * MAP_FIXED mmap); keeps a descriptor it was handed (map() closes them all);
 * lets a chunk be resized; maps a hugetlb chunk at an address not aligned to
 * its page size.
 * Locking: none.  Each call touches only the range and descriptors it is
 * given; callers must not create/destroy/map the same range from two threads
 * at once.  Different chunks may be created in parallel.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create, fallocate, MFD_HUGETLB */
#endif

#include "ipc.h"
#include "host_memfd.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cudaload.h"
#include "pinpool_errors.h"

#ifndef MFD_HUGETLB
#define MFD_HUGETLB 0x0004u
#endif
#ifndef MFD_HUGE_SHIFT
#define MFD_HUGE_SHIFT 26
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21u << MFD_HUGE_SHIFT)
#endif
#ifndef MFD_HUGE_1GB
#define MFD_HUGE_1GB (30u << MFD_HUGE_SHIFT)
#endif

#define SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/* The daemon's settings (ipc_hugetlb_configure); a client keeps the defaults. */
static uint64_t page_size = IPC_HUGE_2M;
static uint64_t unit_size; /* 0: a chunk in one call */

int ipc_hugetlb_configure(uint64_t page, uint64_t unit)
{
    if ((page != IPC_HUGE_2M && page != IPC_HUGE_1G) || unit % page != 0)
        return -EINVAL;
    page_size = page;
    unit_size = unit;
    return 0;
}

static const char *page_name(uint64_t page)
{
    return page == IPC_HUGE_1G ? "1 GiB" : "2 MiB";
}

/* Free pages of that size now (the kernel's count), or -1 when unknown. */
static long free_pages(uint64_t page)
{
    char path[96];
    long n = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/sys/kernel/mm/hugepages/hugepages-%" PRIu64 "kB/free_hugepages",
             page >> 10);
    f = fopen(path, "re");
    if (f != NULL) {
        if (fscanf(f, "%ld", &n) != 1)
            n = -1;
        fclose(f);
    }
    return n;
}

/* The bytes of one step of a chunk's population or pinning. */
static uint64_t step(uint64_t size)
{
    return unit_size == 0 || unit_size > size ? size : unit_size;
}

/*
 * A sealed hugetlb memfd of size bytes (a multiple of the page size) for
 * chunk index, every page allocated now, unit by unit.  0 and *out (the
 * caller's), or -errno with err set and nothing open: -ENOSPC when the
 * kernel has no free huge page left for it (the message says how many are).
 */
static int huge_make(uint64_t size, uint32_t index, int *out, char *err, size_t errlen)
{
    unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB |
                     (page_size == IPC_HUGE_1G ? MFD_HUGE_1GB : MFD_HUGE_2MB);
    uint64_t mib = (size + (1u << 20) - 1) >> 20;
    char name[40], ebuf[128];
    const char *why = NULL;
    int fd, rc = 0;

    if (size == 0 || size % page_size != 0) {
        ipc_set_err(err, errlen, "chunk %" PRIu32 ": %" PRIu64 " bytes is not a multiple of the "
                "%s huge page", index, size, page_name(page_size));
        return -EINVAL;
    }
    (void)snprintf(name, sizeof(name), "pinpool-huge-chunk-%" PRIu32, index);
    fd = memfd_create(name, flags);
    if (fd < 0) {
        rc = -errno;
        why = "memfd_create(MFD_HUGETLB)";
        goto fail;
    }
    if (ftruncate(fd, (off_t)size) < 0) {
        rc = -errno;
        why = "ftruncate";
        goto fail;
    }
    for (uint64_t off = 0, n; off < size; off += n) {
        n = step(size - off);
        do
            rc = fallocate(fd, 0, (off_t)off, (off_t)n);
        while (rc < 0 && errno == EINTR); /* hugetlbfs stops at a signal; the pages stay */
        if (rc < 0) {
            rc = -errno;
            if (rc == -ENOSPC || rc == -ENOMEM) {
                long fp = free_pages(page_size);
                ipc_set_err(err, errlen, "no free %s huge page for chunk %" PRIu32 " (%" PRIu64
                        " MiB; %ld free now): raise vm.nr_hugepages or use --huge-pages "
                        "reserve", page_name(page_size), index, mib, fp);
                rc = -ENOSPC;
            } else {
                why = "fallocate";
            }
            goto fail;
        }
        if (off + n < size)
            sched_yield(); /* let others at the CPU and the kernel's locks */
    }
    if (fcntl(fd, F_ADD_SEALS, SEALS) < 0) {
        rc = -errno;
        why = "sealing";
        goto fail;
    }
    *out = fd;
    return 0;

fail:
    if (why != NULL)
        ipc_set_err(err, errlen, "cannot create %" PRIu64 " MiB hugetlb chunk %" PRIu32 " (%s pages):"
                " %s: %s", mib, index, page_name(page_size), why, strerror_r(-rc, ebuf, sizeof(ebuf)));
    if (fd >= 0)
        (void)close(fd);
    return rc;
}

static bool bad_chunk_args(const void *addr, uint64_t size)
{
    return addr == NULL || size == 0 || size % page_size != 0 ||
           (uintptr_t)addr % page_size != 0 || size > (uint64_t)SIZE_MAX ||
           size > (uint64_t)INT64_MAX;
}

static int cpu_chunk_create(ipc_chunk_t *c, void *addr, uint64_t size, uint32_t index, char *err,
                            size_t errlen)
{
    char ebuf[128];
    int fd = -1, rc;

    if (c == NULL || bad_chunk_args(addr, size)) {
        ipc_set_err(err, errlen, "chunk %" PRIu32 ": size %" PRIu64 " or address %p is not aligned to "
                "the %s huge page", index, size, addr, page_name(page_size));
        return -EINVAL;
    }
    rc = huge_make(size, index, &fd, err, errlen);
    if (rc != 0)
        return rc;
    if (mmap(addr, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) ==
        MAP_FAILED) {
        rc = -errno;
        ipc_set_err(err, errlen, "cannot map hugetlb chunk %" PRIu32 ": %s", index,
                strerror_r(-rc, ebuf, sizeof(ebuf)));
        ipc_memfd_reserve_again(addr, size);
        (void)close(fd);
        return rc;
    }
    c->fd = fd;
    c->addr = addr;
    c->size = size;
    c->handle = 0;
    return 0;
}

/*
 * Fresh memory for chunk c's range: a new hugetlb memfd, or when no huge
 * page is free a 4 KiB memfd (with a note in err), into *fd.  0, or the
 * error with err.
 */
static int fresh_memfd(const ipc_chunk_t *c, uint32_t index, int *fd, char *err, size_t errlen)
{
    char why[256] = "";
    int rc = huge_make(c->size, index, fd, why, sizeof(why));

    if (rc == -ENOSPC) {
        rc = ipc_memfd_make(c->size, index, fd, err, errlen);
        if (rc == 0)
            ipc_set_err(err, errlen, "chunk %" PRIu32 " got 4 KiB pages: %s", index, why);
        return rc;
    }
    if (rc != 0)
        ipc_set_err(err, errlen, "%s", why);
    return rc;
}

static int cpu_chunk_replace(ipc_chunk_t *c, uint32_t index, char *err, size_t errlen)
{
    char note[320] = "";
    int fd, rc;

    if (c == NULL || c->fd < 0 || bad_chunk_args(c->addr, c->size)) {
        ipc_set_err(err, errlen, "chunk %" PRIu32 " is not a chunk of this backend", index);
        return -EINVAL;
    }
    rc = fresh_memfd(c, index, &fd, note, sizeof(note));
    if (rc != 0) {
        ipc_set_err(err, errlen, "%s", note);
        return rc;
    }
    rc = ipc_memfd_chunk_take(c, fd, index, err, errlen);
    if (rc == 0)
        ipc_set_err(err, errlen, "%s", note);
    return rc;
}

/* Address space for bytes, aligned to 1 GiB when bytes is a multiple of it
 * (so that 1 GiB pages can be mapped at any chunk), else to 2 MiB. */
static int huge_reserve(uint64_t bytes, void **addr)
{
    uint64_t align = bytes % IPC_HUGE_1G == 0 ? IPC_HUGE_1G : IPC_HUGE_2M;
    uintptr_t p, at;

    if (addr == NULL || bytes == 0 || bytes > (uint64_t)SIZE_MAX - align)
        return -EINVAL;
    void *m = mmap(NULL, (size_t)(bytes + align), PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return -errno;
    p = (uintptr_t)m;
    at = (p + align - 1) & ~(uintptr_t)(align - 1);
    if (at > p)
        (void)munmap(m, at - p);
    if (p + align > at)
        (void)munmap((void *)(at + bytes), p + align - at);
    *addr = (void *)at;
    return 0;
}

static void huge_release(void *addr, uint64_t bytes)
{
    if (addr != NULL && bytes > 0)
        (void)munmap(addr, (size_t)bytes);
}

/* Client: the memfd backend's map (it checks each fd's size and closes all
 * of them); the reservation came from huge_reserve, so it is aligned. */
static int cpu_map(void *addr, uint64_t chunk_size, int *fds, uint32_t n, unsigned flags)
{
    return ipc_host_memfd.map(addr, chunk_size, fds, n, flags);
}

static void cpu_unmap(void *addr, uint64_t chunk_size, uint32_t n)
{
    ipc_host_memfd.unmap(addr, chunk_size, n);
}

/* A kernel with hugetlbfs makes a hugetlb memfd (without any page: size 0). */
static int cpu_probe(char *err, size_t errlen)
{
    int fd = memfd_create("pinpool-probe", MFD_CLOEXEC | MFD_HUGETLB);

    if (fd < 0) {
        int e = errno;
        ipc_set_err(err, errlen, "this kernel makes no hugetlb memfd (memfd_create(MFD_HUGETLB): %s)",
                strerror(e));
        return -e;
    }
    (void)close(fd);
    return 0;
}

const ipc_host_ops_t ipc_host_hugetlb_cpu = {
    .name = "hugetlb-cpu",
    .cuda = false,
    .probe = cpu_probe,
    .chunk_create = cpu_chunk_create,
    .chunk_destroy = ipc_memfd_chunk_destroy,
    .chunk_replace = cpu_chunk_replace,
    .reserve = huge_reserve,
    .release = huge_release,
    .map = cpu_map,
    .unmap = cpu_unmap,
};

/* ---- hugetlb: the same chunks, pinned with cuMemHostRegister ---------------------- */

#ifndef PINPOOL_HAVE_CUDA

static int hugetlb_probe(char *err, size_t errlen)
{
    return ipc_cuda_load(err, errlen);
}

const ipc_host_ops_t ipc_host_hugetlb = {.name = "hugetlb", .cuda = true, .probe = hugetlb_probe};

#else

#define REGISTER_FLAGS (CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP)

static int hugetlb_probe(char *err, size_t errlen)
{
    int rc = cpu_probe(err, errlen);

    return rc != 0 ? rc : ipc_cuda_load(err, errlen);
}

static void use_context(void)
{
    CUcontext ctx = NULL;

    if (ipc_cu.cuCtxGetCurrent(&ctx) != CUDA_SUCCESS || ctx == NULL)
        ipc_cuda_use_device(ipc_cuda_home_device());
}

/* Undo pin() of [addr, addr + bytes) registered in steps of by. */
static void unpin(void *addr, uint64_t bytes, uint64_t by)
{
    for (uint64_t off = 0; off < bytes; off += by)
        ipc_cu.cuMemHostUnregister((char *)addr + off);
}

/*
 * Register [addr, addr + bytes) for every context of this process, in steps
 * of by bytes with a yield between (each call holds the driver for the time
 * one step takes; other processes pin between them).  On failure nothing of
 * the range stays registered.
 */
static CUresult pin(void *addr, uint64_t bytes, uint64_t by)
{
    use_context();
    for (uint64_t off = 0; off < bytes; off += by) {
        uint64_t n = bytes - off < by ? bytes - off : by;
        char *at = (char *)addr + off;
#ifdef MADV_POPULATE_WRITE
        (void)madvise(at, n, MADV_POPULATE_WRITE); /* the page tables first: faster to register */
#endif
        CUresult r = ipc_cu.cuMemHostRegister(at, n, REGISTER_FLAGS);
        if (r != CUDA_SUCCESS) {
            unpin(addr, off, by);
            return r;
        }
        if (off + n < bytes)
            sched_yield();
    }
    return CUDA_SUCCESS;
}

static int hugetlb_chunk_create(ipc_chunk_t *c, void *addr, uint64_t size, uint32_t index,
                                char *err, size_t errlen)
{
    char buf[160];
    CUresult r;
    int rc = cpu_chunk_create(c, addr, size, index, err, errlen);

    if (rc != 0)
        return rc;
    r = pin(addr, size, step(size));
    if (r != CUDA_SUCCESS) {
        ipc_set_err(err, errlen, "cannot pin hugetlb chunk %" PRIu32 ": %s; check `ulimit -l` "
                "(memlock)", index, ipc_cuda_strerror(r, "cuMemHostRegister", buf, sizeof(buf)));
        ipc_memfd_chunk_destroy(c);
        return PINPOOL_ECUDA;
    }
    return 0;
}

/*
 * Fresh memory for chunk c: the new memfd made first (hugetlb, else 4 KiB),
 * the old one unpinned, the new mapped over it in one step and pinned; the
 * old descriptor closed last.  If the new one cannot be mapped or pinned,
 * the old memfd goes back, mapped and pinned, and c is as before.
 */
static int hugetlb_chunk_replace(ipc_chunk_t *c, uint32_t index, char *err, size_t errlen)
{
    char note[320] = "", buf[160];
    uint64_t by;
    CUresult r;
    int fd, rc;

    if (c == NULL || c->fd < 0 || bad_chunk_args(c->addr, c->size)) {
        ipc_set_err(err, errlen, "chunk %" PRIu32 " is not a chunk of this backend", index);
        return -EINVAL;
    }
    by = step(c->size);
    rc = fresh_memfd(c, index, &fd, note, sizeof(note));
    if (rc != 0) {
        ipc_set_err(err, errlen, "%s", note);
        return rc;
    }
    unpin(c->addr, c->size, by);
    rc = ipc_memfd_map_over(c->addr, c->size, fd, c->fd);
    if (rc != 0) {
        ipc_set_err(err, errlen, "cannot map fresh memory over chunk %" PRIu32 ": %s", index,
                strerror(-rc));
    } else if ((r = pin(c->addr, c->size, by)) != CUDA_SUCCESS) {
        ipc_set_err(err, errlen, "cannot pin fresh memory for chunk %" PRIu32 ": %s; check `ulimit "
                "-l` (memlock)", index, ipc_cuda_strerror(r, "cuMemHostRegister", buf, sizeof(buf)));
        rc = PINPOOL_ECUDA;
        (void)ipc_memfd_map_over(c->addr, c->size, c->fd, fd); /* the old one back */
    } else {
        close(c->fd);
        c->fd = fd;
        ipc_set_err(err, errlen, "%s", note);
        return 0;
    }
    close(fd);
    (void)pin(c->addr, c->size, by); /* the old memory, pinned again */
    return rc;
}

static void hugetlb_chunk_destroy(ipc_chunk_t *c)
{
    if (c != NULL && c->addr != NULL)
        unpin(c->addr, c->size, step(c->size));
    ipc_memfd_chunk_destroy(c);
}

/* Client: map, then pin the whole range in one call (a client never set a unit). */
static int hugetlb_map(void *addr, uint64_t chunk_size, int *fds, uint32_t n, unsigned flags)
{
    int rc = cpu_map(addr, chunk_size, fds, n, flags);

    if (rc != 0)
        return rc;
    if (pin(addr, chunk_size * n, chunk_size * n) != CUDA_SUCCESS) {
        cpu_unmap(addr, chunk_size, n);
        return PINPOOL_ECUDA;
    }
    return 0;
}

static void hugetlb_unmap(void *addr, uint64_t chunk_size, uint32_t n)
{
    ipc_cu.cuMemHostUnregister(addr);
    cpu_unmap(addr, chunk_size, n);
}

static int hugetlb_reserve(uint64_t bytes, void **addr)
{
    return huge_reserve(bytes, addr);
}

static void hugetlb_release(void *addr, uint64_t bytes)
{
    huge_release(addr, bytes);
}

const ipc_host_ops_t ipc_host_hugetlb = {IPC_HOST_OPS(hugetlb, true)};

#endif
