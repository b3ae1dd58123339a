/*
 * devmem.c - the ipc device-pool backend (see devmem.h): one cuMemAlloc per
 * GPU and its legacy IPC handle; ipc_devmem_destroy for both backends.
 * Never: knows the vmm backend's chunks (dev_vmm.c does).
 * Locking: none.
 */
#include "devmem.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cudaload.h"
#include "pinpool_errors.h"
#include "vmm.h"

#ifndef PINPOOL_HAVE_CUDA

int ipc_devmem_create(ipc_devmem_t *dm, int device, uint64_t size, char *err, size_t errlen)
{
    (void)dm, (void)device, (void)size;
    return ipc_cuda_load(err, errlen);
}

void ipc_devmem_destroy(ipc_devmem_t *dm)
{
    (void)dm;
}

int ipc_devmem_open(int device, const uint8_t handle[IPC_HANDLE_BYTES], uint64_t *base, char *err,
                    size_t errlen)
{
    (void)device, (void)handle, (void)base;
    return ipc_cuda_load(err, errlen);
}

void ipc_devmem_close(int device, uint64_t base)
{
    (void)device, (void)base;
}

#else

int ipc_dev_use(int device, bool client, char *err, size_t errlen)
{
    int rc = ipc_cuda_load(err, errlen);

    if (rc != 0 || ipc_cuda_use_device(device) == 0)
        return rc;
    if (client)
        snprintf(err, errlen, "GPU %d is not visible in this process (CUDA_VISIBLE_DEVICES?)",
                 device);
    else
        snprintf(err, errlen, "GPU %d does not exist (%d visible)", device,
                 ipc_cuda_device_count());
    return PINPOOL_ENODEV;
}

int ipc_dev_begin(ipc_devmem_t *dm, int device, ipc_dev_backend_t backend, char *err,
                  size_t errlen)
{
    CUdevice d;
    int rc = ipc_dev_use(device, false, err, errlen);

    if (rc != 0)
        return rc;
    memset(dm, 0, sizeof(*dm));
    dm->device = device;
    dm->backend = backend;
    ipc_cu.cuDeviceGet(&d, device);
    ipc_cu.cuDeviceGetName(dm->name, sizeof(dm->name), d);
    return 0;
}

int ipc_devmem_create(ipc_devmem_t *dm, int device, uint64_t size, char *err, size_t errlen)
{
    CUdeviceptr p = 0;
    CUipcMemHandle h;
    size_t free_b = 0, total_b = 0;
    char buf[160];
    CUresult r;
    int rc = ipc_dev_begin(dm, device, IPC_DEV_IPC, err, errlen);

    if (rc != 0)
        return rc;
    r = ipc_cu.cuMemAlloc(&p, size);
    if (r != CUDA_SUCCESS) {
        ipc_cu.cuMemGetInfo(&free_b, &total_b);
        snprintf(err, errlen, "cannot allocate the device pool on GPU %d (%" PRIu64 " MiB; %zu MiB "
                 "free of %zu): %s; lower --device-pool-size", device, size >> 20, free_b >> 20,
                 total_b >> 20, ipc_cuda_strerror(r, "cuMemAlloc", buf, sizeof(buf)));
        return PINPOOL_ECUDA;
    }
    r = ipc_cu.cuIpcGetMemHandle(&h, p);
    if (r != CUDA_SUCCESS) {
        snprintf(err, errlen, "cannot export the device pool of GPU %d: %s", device,
                 ipc_cuda_strerror(r, "cuIpcGetMemHandle", buf, sizeof(buf)));
        ipc_cu.cuMemFree(p);
        return PINPOOL_ECUDA;
    }
    dm->size = size;
    dm->base = (uint64_t)p;
    memcpy(dm->handle, h.reserved, IPC_HANDLE_BYTES);
    return 0;
}

void ipc_devmem_destroy(ipc_devmem_t *dm)
{
    if (dm->backend == IPC_DEV_VMM) {
        ipc_devmem_destroy_vmm(dm);
        return;
    }
    if (dm->base != 0 && ipc_cuda_use_device(dm->device) == 0)
        ipc_cu.cuMemFree((CUdeviceptr)dm->base);
    dm->base = 0;
}

int ipc_devmem_open(int device, const uint8_t handle[IPC_HANDLE_BYTES], uint64_t *base, char *err,
                    size_t errlen)
{
    CUipcMemHandle h;
    CUdeviceptr p = 0;
    char buf[160];
    CUresult r;
    int rc = ipc_dev_use(device, true, err, errlen);

    if (rc != 0)
        return rc;
    memcpy(h.reserved, handle, IPC_HANDLE_BYTES);
    r = ipc_cu.cuIpcOpenMemHandle(&p, h, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS);
    if (r != CUDA_SUCCESS) {
        snprintf(err, errlen, "cannot open the device pool of GPU %d: %s", device,
                 ipc_cuda_strerror(r, "cuIpcOpenMemHandle", buf, sizeof(buf)));
        return PINPOOL_ECUDA;
    }
    *base = (uint64_t)p;
    return 0;
}

void ipc_devmem_close(int device, uint64_t base)
{
    if (ipc_cuda_use_device(device) == 0)
        ipc_cu.cuIpcCloseMemHandle((CUdeviceptr)base);
}

#endif
