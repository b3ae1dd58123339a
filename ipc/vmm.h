/*
 * vmm.h - the CUDA VMM steps that the host backend (host_vmm.c) and the
 * device pool (dev_vmm.c) share: an allocation's properties, making and
 * exporting one, importing and mapping a run of received descriptors.
 *
 * Owns: nothing; helpers over the driver table (cudaload.h), in dev_vmm.c.
 * Never: closes a descriptor or keeps a handle it did not make; sets access
 * (each caller grants its own).
 * Locking: none; the caller made a context current.
 */
#ifndef PINPOOL_IPC_VMM_H
#define PINPOOL_IPC_VMM_H

#include <stdbool.h>
#include <stddef.h>

#include "devmem.h"

#ifdef PINPOOL_HAVE_CUDA
#include <stdint.h>

#include "cudaload.h"

/* Pinned memory at location (type, id), to be exported as a POSIX fd. */
CUmemAllocationProp ipc_vmm_prop(CUmemLocationType type, int id);

/* Make size bytes with prop and export them: CUDA_SUCCESS with *h and *fd,
 * or the failing call's result with *call naming it (nothing left made). */
CUresult ipc_vmm_create_export(const CUmemAllocationProp *prop, uint64_t size,
                               CUmemGenericAllocationHandle *h, int *fd, const char **call);

/* Import fds[0..n) and map them one after another from base, chunk_size
 * each (the mappings hold the memory; the handles are released): CUDA_SUCCESS,
 * or the failure, with *call naming it and every chunk mapped here unmapped
 * again.  The descriptors stay the caller's. */
CUresult ipc_vmm_import_map(CUdeviceptr base, uint64_t chunk_size, const int *fds, uint32_t n,
                            const char **call);
#endif

/* The driver loaded and GPU device current in this thread: 0, or the error
 * with why in err (in a client's words, who sees the GPUs that
 * CUDA_VISIBLE_DEVICES lets it; else the daemon's).  devmem.c. */
int ipc_dev_use(int device, bool client, char *err, size_t errlen);

/* A device pool's record begun: the driver loaded, device current, *dm
 * zeroed with device, backend and the GPU's name.  0, or an error with err.
 * devmem.c. */
int ipc_dev_begin(ipc_devmem_t *dm, int device, ipc_dev_backend_t backend, char *err,
                  size_t errlen);

/* The vmm half of ipc_devmem_destroy (devmem.c): every chunk let go. */
void ipc_devmem_destroy_vmm(ipc_devmem_t *dm);

#endif
