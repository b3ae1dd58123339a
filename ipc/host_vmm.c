/*
 * host_vmm.c - the `vmm` host-memory backend: each pool chunk is pinned host
 * memory made by the CUDA driver (cuMemCreate on the HOST_NUMA location) and
 * exported as a POSIX file descriptor.
 *
 * Owns: ipc_host_vmm.  Daemon side: create a chunk, map it into the daemon's
 * CUDA address reservation with CPU access, export its fd; replace it by a new
 * allocation at the same address (chunk_replace).  Client side: import
 * the fds it receives, map them contiguously into a reservation of its own and
 * grant access to its GPU (always) and to the CPU (when asked).  Memory made
 * this way is pinned once, by the daemon; a client pays only the mapping and
 * the access grant (DESIGN.md: ~8 ms/GiB GPU, ~21 ms/GiB CPU).
 * Never: touches memory it did not map; keeps an imported handle after mapping
 * it (the mapping holds the reference); keeps a descriptor it was handed.
 * Locking: none; calls make the device's primary context current in the
 * calling thread first (the home device's, ipc_cuda_home_device, in the daemon).
 */
#include "ipc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cudaload.h"
#include "pinpool_errors.h"
#include "vmm.h"

#ifndef PINPOOL_HAVE_CUDA

static int vmm_probe(char *err, size_t errlen)
{
    return ipc_cuda_load(err, errlen);
}

const ipc_host_ops_t ipc_host_vmm = {.name = "vmm", .cuda = true, .probe = vmm_probe};

#else

/* The GPU a client maps for: its thread's current device, else the home
 * device (0 in a client; the daemon's: ipc_cuda_set_home_device). */
static int current_device(void)
{
    CUcontext ctx = NULL;
    CUdevice dev = 0;

    if (ipc_cu.cuCtxGetCurrent(&ctx) == CUDA_SUCCESS && ctx != NULL &&
        ipc_cu.cuCtxGetDevice(&dev) == CUDA_SUCCESS)
        return (int)dev;
    ipc_cuda_use_device(ipc_cuda_home_device());
    return ipc_cuda_home_device();
}

static CUmemAllocationProp host_prop(void)
{
    return ipc_vmm_prop(CU_MEM_LOCATION_TYPE_HOST_NUMA, 0);
}

static int vmm_probe(char *err, size_t errlen)
{
    CUmemAllocationProp prop = host_prop();
    CUmemGenericAllocationHandle h;
    size_t gran = 0;
    char buf[160];
    CUresult r;
    int rc;

    rc = ipc_cuda_load(err, errlen);
    if (rc != 0)
        return rc;
    ipc_cuda_use_device(ipc_cuda_home_device());
    r = ipc_cu.cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
    if (r == CUDA_SUCCESS)
        r = ipc_cu.cuMemCreate(&h, gran, &prop, 0);
    if (r != CUDA_SUCCESS) {
        snprintf(err, errlen, "the driver cannot make host VMM memory shared by fd (%s)",
                 ipc_cuda_strerror(r, "cuMemCreate", buf, sizeof(buf)));
        return PINPOOL_ECUDA;
    }
    ipc_cu.cuMemRelease(h);
    return 0;
}

/*
 * Grant access to [addr, addr + bytes): the GPUs, and the CPU when asked.
 * device >= 0: every GPU visible in this process, so that any of them can
 * copy from the slice (pinpool_fanout, a process driving several GPUs), as a
 * portable cuMemHostAlloc would; each GPU adds ~8 ms/GiB to the mapping.
 * $PINPOOL_HOST_ACCESS=current grants only device (the calling thread's GPU).
 */
static CUresult set_access(CUdeviceptr addr, uint64_t bytes, int device, bool cpu)
{
    CUmemAccessDesc desc[1 + 64];
    const char *env = getenv("PINPOOL_HOST_ACCESS");
    int ngpus = ipc_cuda_device_count();
    size_t n = 0;

    memset(desc, 0, sizeof(desc));
    if (ngpus > 64)
        ngpus = 64;
    for (int d = 0; device >= 0 && d < ngpus; d++) {
        if (d != device && env != NULL && strcmp(env, "current") == 0)
            continue;
        desc[n].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        desc[n].location.id = d;
        desc[n].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        n++;
    }
    if (cpu) {
        desc[n].location.type = CU_MEM_LOCATION_TYPE_HOST_NUMA;
        desc[n].location.id = 0;
        desc[n].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        n++;
    }
    return ipc_cu.cuMemSetAccess(addr, bytes, desc, n);
}

/*
 * Daemon: make chunk index and map it at addr with CPU access (the daemon
 * reads and writes chunks only when spilling; GPUs get access in the clients).
 */
static int vmm_chunk_create(ipc_chunk_t *c, void *addr, uint64_t size, uint32_t index, char *err,
                            size_t errlen)
{
    CUmemAllocationProp prop = host_prop();
    CUmemGenericAllocationHandle h = 0;
    CUdeviceptr at = (CUdeviceptr)(uintptr_t)addr;
    const char *call = "cuMemCreate";
    char buf[160];
    bool mapped = false;
    int fd = -1;
    CUresult r;

    ipc_cuda_use_device(ipc_cuda_home_device());
    r = ipc_vmm_create_export(&prop, size, &h, &fd, &call);
    if (r != CUDA_SUCCESS) {
        h = 0;
        goto fail;
    }
    call = "cuMemMap";
    r = ipc_cu.cuMemMap(at, size, 0, h, 0);
    if (r != CUDA_SUCCESS)
        goto fail;
    mapped = true;
    call = "cuMemSetAccess";
    r = set_access(at, size, -1, true);
    if (r != CUDA_SUCCESS)
        goto fail;
    c->fd = fd;
    c->addr = addr;
    c->size = size;
    c->handle = h;
    return 0;

fail:
    snprintf(err, errlen, "cannot pin chunk %" PRIu32 " (%" PRIu64 " MiB): %s%s", index,
             size >> 20, ipc_cuda_strerror(r, call, buf, sizeof(buf)),
             r == CUDA_ERROR_OUT_OF_MEMORY
                 ? "; lower --mem-pool-size, or free host memory (check `ulimit -l` and "
                   "LimitMEMLOCK= for a service)"
                 : "");
    if (mapped)
        ipc_cu.cuMemUnmap(at, size);
    if (h != 0)
        ipc_cu.cuMemRelease(h);
    if (fd >= 0)
        close(fd);
    return PINPOOL_ECUDA;
}

/*
 * Fresh memory for chunk c at the same address: create and export the new
 * allocation first, then unmap the old (the range stays reserved by
 * cuMemAddressReserve: no mmap can land in it), map the new there with CPU
 * access, and only then release the old handle and its fd.  A process that
 * imported the old fd keeps the old allocation alive, and only that one.
 * On any failure the old allocation is mapped again and c is unchanged.
 */
static int vmm_chunk_replace(ipc_chunk_t *c, uint32_t index, char *err, size_t errlen)
{
    CUmemAllocationProp prop = host_prop();
    CUmemGenericAllocationHandle h = 0;
    CUdeviceptr at;
    const char *call = "cuMemCreate";
    char buf[160];
    int fd = -1;
    CUresult r;

    if (c == NULL || c->addr == NULL || c->fd < 0)
        return -EINVAL;
    at = (CUdeviceptr)(uintptr_t)c->addr;
    ipc_cuda_use_device(ipc_cuda_home_device());
    r = ipc_vmm_create_export(&prop, c->size, &h, &fd, &call);
    if (r != CUDA_SUCCESS) {
        h = 0;
        goto fail;
    }
    call = "cuMemUnmap";
    r = ipc_cu.cuMemUnmap(at, c->size);
    if (r != CUDA_SUCCESS)
        goto fail;
    call = "cuMemMap";
    r = ipc_cu.cuMemMap(at, c->size, 0, h, 0);
    if (r == CUDA_SUCCESS) {
        call = "cuMemSetAccess";
        r = set_access(at, c->size, -1, true);
        if (r != CUDA_SUCCESS)
            ipc_cu.cuMemUnmap(at, c->size);
    }
    if (r != CUDA_SUCCESS) {
        /* The old allocation back in its place. */
        if (ipc_cu.cuMemMap(at, c->size, 0, (CUmemGenericAllocationHandle)c->handle, 0) ==
            CUDA_SUCCESS)
            set_access(at, c->size, -1, true);
        goto fail;
    }
    ipc_cu.cuMemRelease((CUmemGenericAllocationHandle)c->handle);
    close(c->fd);
    c->fd = fd;
    c->handle = h;
    return 0;

fail:
    snprintf(err, errlen, "cannot make fresh memory for chunk %" PRIu32 " (%" PRIu64 " MiB): %s%s",
             index, c->size >> 20, ipc_cuda_strerror(r, call, buf, sizeof(buf)),
             r == CUDA_ERROR_OUT_OF_MEMORY ? "; free host memory (check `ulimit -l`)" : "");
    if (fd >= 0)
        close(fd);
    if (h != 0)
        ipc_cu.cuMemRelease(h);
    return PINPOOL_ECUDA;
}

static void vmm_chunk_destroy(ipc_chunk_t *c)
{
    if (c->addr != NULL) {
        ipc_cuda_use_device(ipc_cuda_home_device());
        ipc_cu.cuMemUnmap((CUdeviceptr)(uintptr_t)c->addr, c->size);
        ipc_cu.cuMemRelease((CUmemGenericAllocationHandle)c->handle);
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->addr = NULL;
}

static int vmm_reserve(uint64_t bytes, void **addr)
{
    CUdeviceptr p = 0;

    current_device();
    if (ipc_cu.cuMemAddressReserve(&p, bytes, 0, 0, 0) != CUDA_SUCCESS)
        return -ENOMEM;
    *addr = (void *)(uintptr_t)p;
    return 0;
}

static void vmm_release(void *addr, uint64_t bytes)
{
    ipc_cu.cuMemAddressFree((CUdeviceptr)(uintptr_t)addr, bytes);
}

/* Client: import, map, grant access.  Closes every fd whatever happens. */
static int vmm_map(void *addr, uint64_t chunk_size, int *fds, uint32_t n, unsigned flags)
{
    CUdeviceptr base = (CUdeviceptr)(uintptr_t)addr;
    const char *call;
    int device = current_device();
    CUresult r = ipc_vmm_import_map(base, chunk_size, fds, n, &call);

    if (r == CUDA_SUCCESS) {
        r = set_access(base, n * chunk_size, (flags & IPC_MAP_GPU) ? device : -1,
                       (flags & IPC_MAP_CPU) != 0);
        if (r != CUDA_SUCCESS)
            ipc_cu.cuMemUnmap(base, n * chunk_size);
    }
    for (uint32_t k = 0; k < n; k++)
        close(fds[k]);
    return r == CUDA_SUCCESS ? 0 : PINPOOL_ECUDA;
}

static int vmm_access(void *addr, uint64_t bytes, unsigned flags)
{
    CUresult r = set_access((CUdeviceptr)(uintptr_t)addr, bytes,
                            (flags & IPC_MAP_GPU) ? current_device() : -1, (flags & IPC_MAP_CPU) != 0);
    return r == CUDA_SUCCESS ? 0 : PINPOOL_ECUDA;
}

static void vmm_unmap(void *addr, uint64_t chunk_size, uint32_t n)
{
    ipc_cu.cuMemUnmap((CUdeviceptr)(uintptr_t)addr, chunk_size * n);
}

const ipc_host_ops_t ipc_host_vmm = {IPC_HOST_OPS(vmm, true), .access = vmm_access};

#endif
