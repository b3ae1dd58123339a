/*
 * host_memfd.c - the `memfd` host-memory backend: pool chunks are sealed
 * memfds (CPU-only nodes and CI; no CUDA anywhere in this file).
 *
 * Owns: ipc_host_memfd and the memfds/mappings it creates.  Daemon side: each
 * chunk is a memfd with its pages committed up front (fallocate) and sealed
 * against resizing, mapped MAP_SHARED at a fixed place in a PROT_NONE
 * reservation; a chunk that changes owner gets a new memfd mapped over the
 * old one (chunk_replace).  Client side: received chunk fds mapped
 * contiguously into a reservation of the client's own.
 * Never: unmaps a reservation except in release(); leaves an address range
 * momentarily unmapped (every replacement is one MAP_FIXED mmap, so another
 * thread's mmap can never land inside a pool range); keeps a descriptor that
 * it was handed (map() closes all of them, whatever happens); lets a chunk be
 * resized (a client that shrank it would make the daemon fault with SIGBUS).
 * Locking: none.  Each call touches only the range and descriptors it is
 * given; callers must not create/destroy/map the same range from two threads
 * at once.  Different chunks may be created in parallel.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create, fallocate, F_ADD_SEALS, strerror_r */
#endif

#include "ipc.h"
#include "host_memfd.h"

#include "pinpool_errors.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MEMFD_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

static uint64_t page_size(void)
{
    long ps = sysconf(_SC_PAGESIZE);

    return ps > 0 ? (uint64_t)ps : 4096u;
}

void ipc_memfd_reserve_again(void *addr, uint64_t bytes)
{
    void *p = mmap(addr, bytes, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);

    if (p == MAP_FAILED)
        (void)munmap(addr, bytes);
}

void ipc_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    (void)vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int ipc_memfd_make(uint64_t size, uint32_t index, int *out, char *err, size_t errlen)
{
    char name[32];
    char ebuf[128];
    const char *why;
    int fd, rc;

    (void)snprintf(name, sizeof(name), "pinpool-chunk-%" PRIu32, index);
    fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        rc = -errno;
        why = "memfd_create";
        goto fail;
    }
    if (ftruncate(fd, (off_t)size) < 0) {
        rc = -errno;
        why = "ftruncate";
        goto fail;
    }
    /* Commit every page now, so that running out of memory is an error here
     * rather than SIGBUS in whoever touches the page first.  shmem stops a
     * long fallocate when a signal arrives; the pages it got are kept. */
    do
        rc = fallocate(fd, 0, 0, (off_t)size);
    while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        rc = -errno;
        if (rc == -ENOSPC || rc == -ENOMEM) {
            ipc_set_err(err, errlen, "cannot commit %" PRIu64 " MiB for chunk %" PRIu32
                    ": %s; lower --mem-pool-size",
                    (size + (1u << 20) - 1) >> 20, index, strerror_r(-rc, ebuf, sizeof(ebuf)));
            rc = -ENOMEM;
            why = NULL;
        } else {
            why = "fallocate";
        }
        goto fail;
    }
    if (fcntl(fd, F_ADD_SEALS, MEMFD_SEALS) < 0) {
        rc = -errno;
        why = "sealing";
        goto fail;
    }
    *out = fd;
    return 0;

fail:
    if (why != NULL)
        ipc_set_err(err, errlen, "cannot create %" PRIu64 " MiB memfd chunk %" PRIu32 ": %s: %s",
                (size + (1u << 20) - 1) >> 20, index, why, strerror_r(-rc, ebuf, sizeof(ebuf)));
    if (fd >= 0)
        (void)close(fd);
    return rc;
}

static bool bad_chunk_args(const void *addr, uint64_t size)
{
    return addr == NULL || size == 0 || size % page_size() != 0 ||
           (uintptr_t)addr % page_size() != 0 || size > (uint64_t)SIZE_MAX ||
           size > (uint64_t)INT64_MAX;
}

/*
 * Make chunk index: a sealed memfd of size bytes, all pages committed, mapped
 * read-write at addr (page-aligned, inside a reservation).  Returns 0 and fills
 * *c (the chunk owns c->fd and the mapping; handle is 0), or -errno with *c
 * untouched, nothing left open and the range still reserved.
 */
static int memfd_chunk_create(ipc_chunk_t *c, void *addr, uint64_t size, uint32_t index,
                              char *err, size_t errlen)
{
    char ebuf[128];
    void *p;
    int fd = -1;
    int rc;

    if (c == NULL || bad_chunk_args(addr, size)) {
        ipc_set_err(err, errlen, "chunk %" PRIu32 ": size %" PRIu64 " or address %p is not page-aligned",
                index, size, addr);
        return -EINVAL;
    }
    rc = ipc_memfd_make(size, index, &fd, err, errlen);
    if (rc != 0)
        return rc;
    p = mmap(addr, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    if (p == MAP_FAILED) {
        rc = -errno;
        ipc_set_err(err, errlen, "cannot create %" PRIu64 " MiB memfd chunk %" PRIu32 ": mmap: %s",
                (size + (1u << 20) - 1) >> 20, index, strerror_r(-rc, ebuf, sizeof(ebuf)));
        ipc_memfd_reserve_again(addr, size); /* a failed MAP_FIXED may have unmapped the reservation */
        (void)close(fd);
        return rc;
    }

    c->fd = fd;
    c->addr = addr;
    c->size = size;
    c->handle = 0;
    return 0;
}

int ipc_memfd_map_over(void *addr, uint64_t size, int fd, int old_fd)
{
    int rc;

    if (mmap(addr, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) !=
        MAP_FAILED)
        return 0;
    rc = -errno;
    if (old_fd < 0 || mmap(addr, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                           old_fd, 0) == MAP_FAILED)
        ipc_memfd_reserve_again(addr, size);
    return rc;
}

/*
 * A fresh memfd for chunk c: made and committed first, then mapped over the
 * old one with one MAP_FIXED mmap (the range is never unmapped), then the old
 * descriptor closed.  What other processes hold of the old memfd stays theirs
 * alone.  On failure c is unchanged and still mapped as before.
 */
static int memfd_chunk_replace(ipc_chunk_t *c, uint32_t index, char *err, size_t errlen)
{
    int fd, rc;

    if (c == NULL || c->fd < 0 || bad_chunk_args(c->addr, c->size)) {
        ipc_set_err(err, errlen, "chunk %" PRIu32 " is not a chunk of this backend", index);
        return -EINVAL;
    }
    rc = ipc_memfd_make(c->size, index, &fd, err, errlen);
    if (rc != 0)
        return rc;
    return ipc_memfd_chunk_take(c, fd, index, err, errlen);
}

int ipc_memfd_chunk_take(ipc_chunk_t *c, int fd, uint32_t index, char *err, size_t errlen)
{
    char ebuf[128];
    int rc = ipc_memfd_map_over(c->addr, c->size, fd, c->fd);

    if (rc != 0) {
        ipc_set_err(err, errlen, "cannot map fresh memory over chunk %" PRIu32 ": %s", index,
                strerror_r(-rc, ebuf, sizeof(ebuf)));
        (void)close(fd);
        return rc;
    }
    (void)close(c->fd);
    c->fd = fd;
    return 0;
}

void ipc_memfd_chunk_destroy(ipc_chunk_t *c)
{
    if (c == NULL)
        return;
    /* One MAP_FIXED mmap both drops the chunk's pages from this process and
     * keeps the reservation; munmap first would open a window in which the
     * range is free for any other mmap. */
    if (c->addr != NULL && c->size > 0)
        ipc_memfd_reserve_again(c->addr, c->size);
    if (c->fd >= 0)
        (void)close(c->fd);
    c->fd = -1;
    c->addr = NULL;
    c->size = 0;
    c->handle = 0;
}

/* Reserve bytes of address space (no memory, no swap accounting). */
static int memfd_reserve(uint64_t bytes, void **addr)
{
    void *p;

    if (addr == NULL || bytes == 0 || bytes > (uint64_t)SIZE_MAX)
        return -EINVAL;
    p = mmap(NULL, (size_t)bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    *addr = p;
    return 0;
}

/* Give back a range from reserve(), with whatever is still mapped in it. */
static void memfd_release(void *addr, uint64_t bytes)
{
    if (addr != NULL && bytes > 0)
        (void)munmap(addr, (size_t)bytes);
}

/*
 * Map fds[0..n) read-write at addr + i * chunk_size (flags are ignored: memfd
 * memory is CPU memory).  Takes ownership of all n fds: they are closed on
 * return, success or not (the mappings keep the memfds alive).  A descriptor
 * smaller than chunk_size is refused with PINPOOL_EPROTO (touching past its end
 * would SIGBUS).  On failure every chunk mapped so far is a PROT_NONE
 * reservation again.
 */
static int memfd_map(void *addr, uint64_t chunk_size, int *fds, uint32_t n, unsigned flags)
{
    char *base = addr;
    uint32_t i = 0;
    int rc = 0;

    (void)flags;
    if (n > 0 && fds == NULL)
        return -EINVAL; /* nothing we could close */
    if (addr == NULL || chunk_size == 0 || chunk_size % page_size() != 0 ||
        (uintptr_t)addr % page_size() != 0 || chunk_size > SIZE_MAX / (n > 0 ? n : 1)) {
        rc = -EINVAL;
        goto out;
    }

    for (i = 0; i < n; i++) {
        char *at = base + (size_t)i * (size_t)chunk_size;
        struct stat st;
        void *p;

        if (fstat(fds[i], &st) < 0) {
            rc = -errno;
            goto fail;
        }
        if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < chunk_size) {
            rc = PINPOOL_EPROTO;
            goto fail;
        }
        p = mmap(at, (size_t)chunk_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fds[i], 0);
        if (p == MAP_FAILED) {
            rc = -errno;
            ipc_memfd_reserve_again(at, chunk_size); /* a failed MAP_FIXED may have unmapped it */
            goto fail;
        }
    }
    goto out;

fail:
    if (i > 0)
        ipc_memfd_reserve_again(addr, (uint64_t)i * chunk_size);
out:
    for (uint32_t k = 0; k < n; k++)
        (void)close(fds[k]);
    return rc;
}

/* Undo map(): the n chunks become a PROT_NONE reservation again, which the
 * caller then gives back with release(). */
static void memfd_unmap(void *addr, uint64_t chunk_size, uint32_t n)
{
    if (addr != NULL && chunk_size > 0 && n > 0)
        ipc_memfd_reserve_again(addr, chunk_size * n);
}

static int memfd_probe(char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    return 0;
}

#define memfd_chunk_destroy ipc_memfd_chunk_destroy /* shared with host_hugetlb.c */
const ipc_host_ops_t ipc_host_memfd = {IPC_HOST_OPS(memfd, false)};
