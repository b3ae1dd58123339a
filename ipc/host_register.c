/*
 * host_register.c - the `register` host-memory backend: chunks are the memfd
 * backend's sealed memfds, pinned with cuMemHostRegister in the daemon and
 * again, on the range it maps, in each client.  The fallback for drivers
 * without host VMM; a client pays the pinning of what it maps (DESIGN.md:
 * ~120 ms/GiB), so vmm is preferred wherever it works.
 *
 * Owns: ipc_host_register.  Never: makes or maps memory itself; it wraps
 * ipc_host_memfd and adds the registration (a chunk's replacement too:
 * unregister, the memfd backend's replace, register).
 * Locking: none (as host_memfd.c).
 */
#include "ipc.h"
#include "host_memfd.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cudaload.h"
#include "pinpool_errors.h"

#ifndef PINPOOL_HAVE_CUDA

static int register_probe(char *err, size_t errlen)
{
    return ipc_cuda_load(err, errlen);
}

const ipc_host_ops_t ipc_host_register = {.name = "register", .cuda = true, .probe = register_probe};

#else

#define REGISTER_FLAGS (CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP)

static int register_probe(char *err, size_t errlen)
{
    return ipc_cuda_load(err, errlen);
}

/* Pin [addr, addr + bytes) for every context of this process. */
static CUresult pin(void *addr, uint64_t bytes)
{
    CUcontext ctx = NULL;

    if (ipc_cu.cuCtxGetCurrent(&ctx) != CUDA_SUCCESS || ctx == NULL)
        ipc_cuda_use_device(ipc_cuda_home_device());
#ifdef MADV_POPULATE_WRITE
    /* Touching the pages first makes the registration ~10x faster (DESIGN.md). */
    (void)madvise(addr, bytes, MADV_POPULATE_WRITE);
#endif
    return ipc_cu.cuMemHostRegister(addr, bytes, REGISTER_FLAGS);
}

static int register_chunk_create(ipc_chunk_t *c, void *addr, uint64_t size, uint32_t index,
                                 char *err, size_t errlen)
{
    char buf[160];
    CUresult r;
    int rc;

    rc = ipc_host_memfd.chunk_create(c, addr, size, index, err, errlen);
    if (rc != 0)
        return rc;
    r = pin(addr, size);
    if (r != CUDA_SUCCESS) {
        snprintf(err, errlen, "cannot pin chunk %" PRIu32 ": %s; check `ulimit -l` (memlock) and "
                 "free host memory", index, ipc_cuda_strerror(r, "cuMemHostRegister", buf, sizeof(buf)));
        ipc_host_memfd.chunk_destroy(c);
        return PINPOOL_ECUDA;
    }
    return 0;
}

/*
 * Fresh memory for chunk c: a new memfd made first, then the old one unpinned,
 * the new mapped over it in one step (the range is never unmapped) and
 * pinned; the old descriptor is closed last.  If the new one cannot be
 * mapped or pinned the old memfd goes back (mapped and pinned again) and c
 * is as before.
 */
static int register_chunk_replace(ipc_chunk_t *c, uint32_t index, char *err, size_t errlen)
{
    char buf[160];
    CUresult r;
    int fd, rc;

    if (c == NULL || c->fd < 0 || c->addr == NULL)
        return -EINVAL;
    rc = ipc_memfd_make(c->size, index, &fd, err, errlen);
    if (rc != 0)
        return rc;
    ipc_cu.cuMemHostUnregister(c->addr);
    rc = ipc_memfd_map_over(c->addr, c->size, fd, c->fd);
    if (rc != 0) {
        snprintf(err, errlen, "cannot map fresh memory over chunk %" PRIu32 ": %s", index,
                 strerror(-rc));
    } else if ((r = pin(c->addr, c->size)) != CUDA_SUCCESS) {
        snprintf(err, errlen, "cannot pin fresh memory for chunk %" PRIu32 ": %s; check `ulimit -l`"
                 " (memlock) and free host memory", index,
                 ipc_cuda_strerror(r, "cuMemHostRegister", buf, sizeof(buf)));
        rc = PINPOOL_ECUDA;
        ipc_cu.cuMemHostUnregister(c->addr); /* a failed register holds nothing; to be sure */
        (void)ipc_memfd_map_over(c->addr, c->size, c->fd, fd); /* the old one back */
    } else {
        close(c->fd);
        c->fd = fd;
        return 0;
    }
    close(fd);
    (void)pin(c->addr, c->size); /* the old memory, pinned again */
    return rc;
}

static void register_chunk_destroy(ipc_chunk_t *c)
{
    if (c->addr != NULL)
        ipc_cu.cuMemHostUnregister(c->addr);
    ipc_host_memfd.chunk_destroy(c);
}

static int register_map(void *addr, uint64_t chunk_size, int *fds, uint32_t n, unsigned flags)
{
    int rc = ipc_host_memfd.map(addr, chunk_size, fds, n, flags);

    if (rc != 0)
        return rc;
    if (pin(addr, chunk_size * n) != CUDA_SUCCESS) {
        ipc_host_memfd.unmap(addr, chunk_size, n);
        return PINPOOL_ECUDA;
    }
    return 0;
}

static int register_reserve(uint64_t bytes, void **addr)
{
    return ipc_host_memfd.reserve(bytes, addr);
}

static void register_release(void *addr, uint64_t bytes)
{
    ipc_host_memfd.release(addr, bytes);
}

static void register_unmap(void *addr, uint64_t chunk_size, uint32_t n)
{
    ipc_cu.cuMemHostUnregister(addr);
    ipc_host_memfd.unmap(addr, chunk_size, n);
}

const ipc_host_ops_t ipc_host_register = {IPC_HOST_OPS(register, true)};

#endif
