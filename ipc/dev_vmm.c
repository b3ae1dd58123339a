/*
 * dev_vmm.c - the vmm device-pool backend (see devmem.h), and the VMM steps
 * it shares with the host backend (vmm.h).
 *
 * Owns: a device pool's chunks in the daemon (cuMemCreate on the device,
 * exported as POSIX descriptors: the daemon never maps them), the chunk size
 * from the allocation granularity, the probe of what the driver supports;
 * in a client, the import of a slice's chunks into its own reservation with
 * read-write or read-only access.
 * Never: keeps an imported handle after mapping it (the mapping holds the
 * memory, so an unmap really lets it go); keeps a descriptor it was handed;
 * grants a GPU other than the one asked for.
 * Locking: none; each call makes the device's primary context current first.
 */
#include "devmem.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cudaload.h"
#include "pinpool_errors.h"
#include "vmm.h"

const char *ipc_dev_backend_name(ipc_dev_backend_t b)
{
    return b == IPC_DEV_VMM ? "vmm" : "ipc";
}

#ifndef PINPOOL_HAVE_CUDA

int ipc_devmem_vmm_probe(int device, char *why, size_t whylen)
{
    (void)device;
    return ipc_cuda_load(why, whylen);
}

int ipc_devmem_create_vmm(ipc_devmem_t *dm, int device, uint64_t size, char *err, size_t errlen)
{
    (void)dm, (void)device, (void)size;
    return ipc_cuda_load(err, errlen);
}

int ipc_devmem_replace_chunk(ipc_devmem_t *dm, uint32_t i, char *err, size_t errlen)
{
    (void)dm, (void)i;
    return ipc_cuda_load(err, errlen);
}

int ipc_devmem_plan_vmm(ipc_devmem_t *dm, int device, uint64_t size, char *err, size_t errlen)
{
    (void)dm, (void)device, (void)size;
    return ipc_cuda_load(err, errlen);
}

int ipc_devmem_adopt_chunk(ipc_devmem_t *dm, uint32_t i, int fd, char *err, size_t errlen)
{
    (void)dm, (void)i;
    close(fd);
    return ipc_cuda_load(err, errlen);
}

int ipc_devmem_reserve(int device, uint64_t bytes, uint64_t *va, char *err, size_t errlen)
{
    (void)device, (void)bytes, (void)va;
    return ipc_cuda_load(err, errlen);
}

void ipc_devmem_unreserve(uint64_t va, uint64_t bytes)
{
    (void)va, (void)bytes;
}

int ipc_devmem_map(int device, uint64_t va, uint64_t chunk_size, int *fds, uint32_t n,
                   bool writable, char *err, size_t errlen)
{
    (void)device, (void)va, (void)chunk_size, (void)writable;
    for (uint32_t i = 0; i < n; i++)
        close(fds[i]);
    return ipc_cuda_load(err, errlen);
}

void ipc_devmem_unmap(int device, uint64_t va, uint64_t bytes)
{
    (void)device, (void)va, (void)bytes;
}

int ipc_devmem_vmm_alloc(int device, uint64_t size, uint64_t *aligned, uint64_t *handle,
                         char *err, size_t errlen)
{
    (void)device, (void)size, (void)aligned, (void)handle;
    return ipc_cuda_load(err, errlen);
}

int ipc_devmem_vmm_export(int device, uint64_t handle, int *fd, char *err, size_t errlen)
{
    (void)device, (void)handle, (void)fd;
    return ipc_cuda_load(err, errlen);
}

void ipc_devmem_vmm_free(int device, uint64_t handle)
{
    (void)device, (void)handle;
}

int ipc_devmem_uuid(int device, char *out, size_t outlen, char *err, size_t errlen)
{
    (void)device, (void)out, (void)outlen;
    return ipc_cuda_load(err, errlen);
}

#else

/* ---- shared with host_vmm.c (vmm.h) ------------------------------------------------ */

CUmemAllocationProp ipc_vmm_prop(CUmemLocationType type, int id)
{
    CUmemAllocationProp prop;

    memset(&prop, 0, sizeof(prop));
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = type;
    prop.location.id = id;
    prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    return prop;
}

CUresult ipc_vmm_create_export(const CUmemAllocationProp *prop, uint64_t size,
                               CUmemGenericAllocationHandle *h, int *fd, const char **call)
{
    CUresult r;

    *call = "cuMemCreate";
    r = ipc_cu.cuMemCreate(h, size, prop, 0);
    if (r != CUDA_SUCCESS)
        return r;
    *call = "cuMemExportToShareableHandle";
    r = ipc_cu.cuMemExportToShareableHandle(fd, *h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
    if (r != CUDA_SUCCESS)
        ipc_cu.cuMemRelease(*h);
    return r;
}

CUresult ipc_vmm_import_map(CUdeviceptr base, uint64_t chunk_size, const int *fds, uint32_t n,
                            const char **call)
{
    CUresult r = CUDA_SUCCESS;
    uint32_t i;

    for (i = 0; i < n; i++) {
        CUmemGenericAllocationHandle h;
        *call = "cuMemImportFromShareableHandle";
        r = ipc_cu.cuMemImportFromShareableHandle(&h, (void *)(uintptr_t)fds[i],
                                                  CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
        if (r != CUDA_SUCCESS)
            break;
        *call = "cuMemMap";
        r = ipc_cu.cuMemMap(base + i * chunk_size, chunk_size, 0, h, 0);
        ipc_cu.cuMemRelease(h); /* the mapping keeps it */
        if (r != CUDA_SUCCESS)
            break;
    }
    if (r != CUDA_SUCCESS)
        for (uint32_t k = 0; k < i; k++)
            ipc_cu.cuMemUnmap(base + k * chunk_size, chunk_size);
    return r;
}

/* ---- the daemon's device pool ------------------------------------------------------- */

int ipc_devmem_vmm_probe(int device, char *why, size_t whylen)
{
    int vmm = 0, fd = 0;
    CUdevice d;
    int rc = ipc_dev_use(device, false, why, whylen);

    if (rc != 0)
        return rc;
    if (ipc_cu.cuDeviceGet(&d, device) != CUDA_SUCCESS ||
        ipc_cu.cuDeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
                                    d) != CUDA_SUCCESS)
        vmm = 0;
    if (vmm && ipc_cu.cuDeviceGetAttribute(
                   &fd, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED, d) !=
                   CUDA_SUCCESS)
        fd = 0;
    if (!vmm || !fd) {
        snprintf(why, whylen, "GPU %d (driver %d.%d) does not support %s", device,
                 ipc_cu.driver_version / 1000, ipc_cu.driver_version % 1000 / 10,
                 !vmm ? "virtual memory management (VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED is 0)"
                      : "exporting memory as file descriptors "
                        "(HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED is 0)");
        return PINPOOL_ECUDA;
    }
    return 0;
}

static uint64_t round_up(uint64_t x, uint64_t m)
{
    return (x + m - 1) / m * m;
}

int ipc_devmem_plan_vmm(ipc_devmem_t *dm, int device, uint64_t size, char *err, size_t errlen)
{
    CUmemAllocationProp prop = ipc_vmm_prop(CU_MEM_LOCATION_TYPE_DEVICE, device);
    size_t gmin = 0, grec = 0;
    const char *call = "cuMemGetAllocationGranularity";
    char buf[160];
    CUresult r;
    int rc = ipc_dev_begin(dm, device, IPC_DEV_VMM, err, errlen);

    if (rc != 0)
        return rc;
    r = ipc_cu.cuMemGetAllocationGranularity(&gmin, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
    if (r == CUDA_SUCCESS)
        r = ipc_cu.cuMemGetAllocationGranularity(&grec, &prop,
                                                 CU_MEM_ALLOC_GRANULARITY_RECOMMENDED);
    if (r != CUDA_SUCCESS || gmin == 0 || grec == 0) {
        snprintf(err, errlen, "cannot read the allocation granularity of GPU %d: %s", device,
                 r != CUDA_SUCCESS ? ipc_cuda_strerror(r, call, buf, sizeof(buf)) : "0 bytes");
        return PINPOOL_ECUDA;
    }
    /* A chunk: whole recommended granules (each a whole minimum one), and no
     * more chunks than one fd-socket message carries. */
    dm->align = gmin;
    uint64_t unit = round_up(grec, gmin), per = (size + IPC_DEV_MAX_CHUNKS - 1) / IPC_DEV_MAX_CHUNKS;
    dm->chunk_size = round_up(per != 0 ? per : 1, unit);
    dm->nchunks = (uint32_t)((size + dm->chunk_size - 1) / dm->chunk_size);
    dm->size = (uint64_t)dm->nchunks * dm->chunk_size;
    dm->chunks = calloc(dm->nchunks, sizeof(*dm->chunks));
    if (dm->chunks == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < dm->nchunks; i++) {
        dm->chunks[i].fd = -1;
        dm->chunks[i].size = dm->chunk_size;
    }
    return 0;
}

int ipc_devmem_adopt_chunk(ipc_devmem_t *dm, uint32_t i, int fd, char *err, size_t errlen)
{
    CUmemGenericAllocationHandle h = 0;
    char buf[160];
    CUresult r;

    if (dm->backend != IPC_DEV_VMM || i >= dm->nchunks || dm->chunks[i].fd >= 0) {
        close(fd);
        snprintf(err, errlen, "GPU %d: chunk %" PRIu32 " is not one to adopt", dm->device, i);
        return -EINVAL;
    }
    if (ipc_cuda_use_device(dm->device) != 0) {
        close(fd);
        snprintf(err, errlen, "GPU %d: cannot use it", dm->device);
        return PINPOOL_ENODEV;
    }
    r = ipc_cu.cuMemImportFromShareableHandle(&h, (void *)(uintptr_t)fd,
                                              CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
    if (r != CUDA_SUCCESS) {
        close(fd);
        snprintf(err, errlen, "GPU %d: cannot import chunk %" PRIu32 ": %s", dm->device, i,
                 ipc_cuda_strerror(r, "cuMemImportFromShareableHandle", buf, sizeof(buf)));
        return PINPOOL_ECUDA;
    }
    dm->chunks[i].fd = fd;
    dm->chunks[i].handle = h;
    return 0;
}

int ipc_devmem_create_vmm(ipc_devmem_t *dm, int device, uint64_t size, char *err, size_t errlen)
{
    CUmemAllocationProp prop = ipc_vmm_prop(CU_MEM_LOCATION_TYPE_DEVICE, device);
    size_t free_b = 0, total_b = 0;
    const char *call = "";
    char buf[160];
    CUresult r;
    int rc = ipc_devmem_plan_vmm(dm, device, size, err, errlen);

    if (rc != 0)
        return rc;
    for (uint32_t i = 0; i < dm->nchunks; i++) {
        CUmemGenericAllocationHandle h = 0;
        int fd = -1;

        r = ipc_vmm_create_export(&prop, dm->chunk_size, &h, &fd, &call);
        if (r != CUDA_SUCCESS) {
            ipc_cu.cuMemGetInfo(&free_b, &total_b);
            snprintf(err, errlen, "cannot make the device pool of GPU %d (chunk %" PRIu32 " of %"
                     PRIu32 ", %" PRIu64 " MiB each; %zu MiB free of %zu): %s; lower "
                     "--device-pool-size, or use --device-backend ipc", device, i, dm->nchunks,
                     dm->chunk_size >> 20, free_b >> 20, total_b >> 20,
                     ipc_cuda_strerror(r, call, buf, sizeof(buf)));
            ipc_devmem_destroy(dm);
            return PINPOOL_ECUDA;
        }
        dm->chunks[i].fd = fd;
        dm->chunks[i].handle = h;
        dm->chunks[i].size = dm->chunk_size;
    }
    return 0;
}

int ipc_devmem_replace_chunk(ipc_devmem_t *dm, uint32_t i, char *err, size_t errlen)
{
    CUmemAllocationProp prop = ipc_vmm_prop(CU_MEM_LOCATION_TYPE_DEVICE, dm->device);
    CUmemGenericAllocationHandle h = 0;
    const char *call = "";
    char buf[160];
    int fd = -1;
    CUresult r;

    if (dm->backend != IPC_DEV_VMM || i >= dm->nchunks)
        return -EINVAL;
    if (ipc_cuda_use_device(dm->device) != 0)
        return PINPOOL_ENODEV;
    r = ipc_vmm_create_export(&prop, dm->chunk_size, &h, &fd, &call);
    if (r != CUDA_SUCCESS) {
        snprintf(err, errlen, "cannot make fresh memory for chunk %" PRIu32 " of GPU %d (%"
                 PRIu64 " MiB): %s", i, dm->device, dm->chunk_size >> 20,
                 ipc_cuda_strerror(r, call, buf, sizeof(buf)));
        return PINPOOL_ECUDA;
    }
    ipc_cu.cuMemRelease((CUmemGenericAllocationHandle)dm->chunks[i].handle);
    close(dm->chunks[i].fd);
    dm->chunks[i].fd = fd;
    dm->chunks[i].handle = h;
    return 0;
}

void ipc_devmem_destroy_vmm(ipc_devmem_t *dm)
{
    if (dm->chunks == NULL)
        return;
    ipc_cuda_use_device(dm->device);
    for (uint32_t i = 0; i < dm->nchunks; i++) {
        if (dm->chunks[i].fd >= 0) {
            ipc_cu.cuMemRelease((CUmemGenericAllocationHandle)dm->chunks[i].handle);
            close(dm->chunks[i].fd);
        }
    }
    free(dm->chunks);
    dm->chunks = NULL;
    dm->nchunks = 0;
}

/* ---- one allocation of its own (gms.c) ---------------------------------------------- */

int ipc_devmem_vmm_alloc(int device, uint64_t size, uint64_t *aligned, uint64_t *handle,
                         char *err, size_t errlen)
{
    CUmemAllocationProp prop = ipc_vmm_prop(CU_MEM_LOCATION_TYPE_DEVICE, device);
    CUmemGenericAllocationHandle h = 0;
    const char *call = "cuMemGetAllocationGranularity";
    size_t gmin = 0;
    char buf[160];
    CUresult r;
    int rc = ipc_dev_use(device, false, err, errlen);

    if (rc != 0)
        return rc;
    r = ipc_cu.cuMemGetAllocationGranularity(&gmin, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
    if (r == CUDA_SUCCESS && gmin == 0)
        r = CUDA_ERROR_INVALID_VALUE;
    if (r == CUDA_SUCCESS && size > UINT64_MAX - gmin)
        r = CUDA_ERROR_OUT_OF_MEMORY;
    if (r == CUDA_SUCCESS) {
        *aligned = round_up(size, gmin);
        call = "cuMemCreate";
        r = ipc_cu.cuMemCreate(&h, *aligned, &prop, 0);
    }
    if (r != CUDA_SUCCESS) {
        snprintf(err, errlen, "cannot make %" PRIu64 " bytes on GPU %d: %s", size, device,
                 ipc_cuda_strerror(r, call, buf, sizeof(buf)));
        return r == CUDA_ERROR_OUT_OF_MEMORY ? PINPOOL_ENOSPC : PINPOOL_ECUDA;
    }
    *handle = (uint64_t)h;
    return 0;
}

int ipc_devmem_vmm_export(int device, uint64_t handle, int *fd, char *err, size_t errlen)
{
    char buf[160];
    CUresult r;
    int rc = ipc_dev_use(device, false, err, errlen);

    if (rc != 0)
        return rc;
    r = ipc_cu.cuMemExportToShareableHandle(fd, (CUmemGenericAllocationHandle)handle,
                                            CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
    if (r != CUDA_SUCCESS) {
        snprintf(err, errlen, "cannot export an allocation of GPU %d: %s", device,
                 ipc_cuda_strerror(r, "cuMemExportToShareableHandle", buf, sizeof(buf)));
        return PINPOOL_ECUDA;
    }
    return 0;
}

void ipc_devmem_vmm_free(int device, uint64_t handle)
{
    if (ipc_cuda_use_device(device) == 0)
        ipc_cu.cuMemRelease((CUmemGenericAllocationHandle)handle);
}

int ipc_devmem_uuid(int device, char *out, size_t outlen, char *err, size_t errlen)
{
    const unsigned char *b;
    CUuuid u;
    CUdevice d;
    CUresult r;
    char buf[160];
    int rc = ipc_dev_use(device, false, err, errlen);

    if (rc != 0)
        return rc;
    r = ipc_cu.cuDeviceGet(&d, device);
    if (r == CUDA_SUCCESS)
        r = ipc_cu.cuDeviceGetUuid(&u, d);
    if (r != CUDA_SUCCESS) {
        snprintf(err, errlen, "cannot read the UUID of GPU %d: %s", device,
                 ipc_cuda_strerror(r, "cuDeviceGetUuid", buf, sizeof(buf)));
        return PINPOOL_ECUDA;
    }
    b = (const unsigned char *)u.bytes;
    snprintf(out, outlen,
             "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return 0;
}

/* ---- a client's mapping -------------------------------------------------------------- */

int ipc_devmem_reserve(int device, uint64_t bytes, uint64_t *va, char *err, size_t errlen)
{
    CUdeviceptr p = 0;
    char buf[160];
    CUresult r;
    int rc = ipc_dev_use(device, true, err, errlen);

    if (rc != 0)
        return rc;
    r = ipc_cu.cuMemAddressReserve(&p, bytes, 0, 0, 0); /* 0: the granularity */
    if (r != CUDA_SUCCESS) {
        snprintf(err, errlen, "cannot reserve %" PRIu64 " MiB of GPU address space: %s",
                 bytes >> 20, ipc_cuda_strerror(r, "cuMemAddressReserve", buf, sizeof(buf)));
        return PINPOOL_ECUDA;
    }
    *va = (uint64_t)p;
    return 0;
}

void ipc_devmem_unreserve(uint64_t va, uint64_t bytes)
{
    if (va != 0)
        ipc_cu.cuMemAddressFree((CUdeviceptr)va, bytes);
}

int ipc_devmem_map(int device, uint64_t va, uint64_t chunk_size, int *fds, uint32_t n,
                   bool writable, char *err, size_t errlen)
{
    CUmemAccessDesc desc;
    const char *call = "";
    char buf[160];
    CUresult r;
    int rc = ipc_dev_use(device, true, err, errlen);

    if (rc == 0) {
        r = ipc_vmm_import_map((CUdeviceptr)va, chunk_size, fds, n, &call);
        if (r == CUDA_SUCCESS) {
            memset(&desc, 0, sizeof(desc));
            desc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
            desc.location.id = device;
            desc.flags = writable ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE : CU_MEM_ACCESS_FLAGS_PROT_READ;
            call = "cuMemSetAccess";
            r = ipc_cu.cuMemSetAccess((CUdeviceptr)va, (size_t)n * chunk_size, &desc, 1);
            if (r != CUDA_SUCCESS)
                ipc_cu.cuMemUnmap((CUdeviceptr)va, (size_t)n * chunk_size);
        }
        if (r != CUDA_SUCCESS) {
            snprintf(err, errlen, "cannot map %" PRIu32 " chunk%s of GPU %d %s: %s", n,
                     n == 1 ? "" : "s", device, writable ? "read-write" : "read-only",
                     ipc_cuda_strerror(r, call, buf, sizeof(buf)));
            rc = PINPOOL_ECUDA;
        }
    }
    for (uint32_t i = 0; i < n; i++)
        close(fds[i]);
    return rc;
}

void ipc_devmem_unmap(int device, uint64_t va, uint64_t bytes)
{
    if (ipc_cuda_use_device(device) == 0)
        ipc_cu.cuMemUnmap((CUdeviceptr)va, bytes);
}

#endif
