/*
 * devmem.h - GPU memory shared between processes by CUDA IPC handles.
 *
 * Owns: one cuMemAlloc per GPU in the daemon and its 64-byte IPC handle
 * (the same bytes as a cudaIpcMemHandle_t); opening such a handle in a client.
 * Never: sub-allocates (pool/ does that) or caches (the client library does).
 * Locking: none; each call makes the device's primary context current in the
 * calling thread.
 */
#ifndef PINPOOL_IPC_DEVMEM_H
#define PINPOOL_IPC_DEVMEM_H

#include <stddef.h>
#include <stdint.h>

#define IPC_HANDLE_BYTES 64

typedef struct ipc_devmem {
    int device;
    uint64_t size;
    uint64_t base; /* CUdeviceptr in the daemon */
    uint8_t handle[IPC_HANDLE_BYTES];
    char name[64]; /* "NVIDIA H100 80GB HBM3" */
} ipc_devmem_t;

/* Daemon: allocate size bytes on device and export them.  0, or an error with
 * a message for a person in err. */
int ipc_devmem_create(ipc_devmem_t *dm, int device, uint64_t size, char *err, size_t errlen);
void ipc_devmem_destroy(ipc_devmem_t *dm);

/* Client: open an exported handle on device; *base is this process's address
 * of the allocation's first byte.  0 or an error with err. */
int ipc_devmem_open(int device, const uint8_t handle[IPC_HANDLE_BYTES], uint64_t *base, char *err,
                    size_t errlen);
void ipc_devmem_close(int device, uint64_t base);

#endif
