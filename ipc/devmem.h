/*
 * devmem.h - GPU memory shared between processes: a device pool's memory in
 * the daemon and its mapping in a client, by one of two backends
 * (--device-backend):
 *   vmm  chunks made by cuMemCreate on the device, each exported as a POSIX
 *        file descriptor and passed on the fd socket as host chunks are; a
 *        client imports the chunks of a slice into an address range of its
 *        own, read-write (the owner) or read-only (a reader), and may unmap
 *        and map them again at the same address (dev_vmm.c);
 *   ipc  one cuMemAlloc per GPU and its 64-byte legacy IPC handle (the same
 *        bytes as a cudaIpcMemHandle_t), opened whole in a client (devmem.c).
 *
 * Owns: the device memory of a pool (its chunks' handles and descriptors),
 * the choice of the backend from what the driver supports, and the chunk
 * size and slice alignment the allocation granularity asks for.
 * Never: sub-allocates (pool/ does that), decides who may map what (the
 * daemon does), or caches mappings (the client library does).
 * Locking: none; each call makes the device's primary context current in the
 * calling thread.
 */
#ifndef PINPOOL_IPC_DEVMEM_H
#define PINPOOL_IPC_DEVMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ipc.h"

#define IPC_HANDLE_BYTES 64
/* Most chunks a vmm device pool is cut into: a slice of the whole pool is one
 * fd-socket message (IPC_MAX_FDS). */
#define IPC_DEV_MAX_CHUNKS IPC_MAX_FDS

typedef enum ipc_dev_backend {
    IPC_DEV_IPC = 0,
    IPC_DEV_VMM = 1,
} ipc_dev_backend_t;

typedef struct ipc_devmem {
    int device;
    ipc_dev_backend_t backend;
    uint64_t size; /* ipc: as asked; vmm: nchunks * chunk_size */
    uint64_t base; /* ipc: the CUdeviceptr in the daemon; vmm: 0 (the daemon maps nothing) */
    uint8_t handle[IPC_HANDLE_BYTES]; /* ipc */
    char name[64];                    /* "NVIDIA H100 80GB HBM3" */
    /* vmm */
    uint64_t chunk_size; /* a multiple of the recommended allocation granularity */
    uint64_t align;      /* the minimum granularity: every slice starts on it */
    uint32_t nchunks;
    ipc_chunk_t *chunks; /* fd (the exported descriptor) and handle of each; addr NULL */
} ipc_devmem_t;

/* "vmm" or "ipc". */
const char *ipc_dev_backend_name(ipc_dev_backend_t b);

/*
 * Can GPU device use the vmm backend?  0, or PINPOOL_ECUDA with why: the
 * driver or the GPU lacks virtual memory management
 * (CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED) or the export of
 * its memory as file descriptors
 * (CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED).
 */
int ipc_devmem_vmm_probe(int device, char *why, size_t whylen);

/* Daemon, ipc: allocate size bytes on device and export them.  0, or an
 * error with a message for a person in err. */
int ipc_devmem_create(ipc_devmem_t *dm, int device, uint64_t size, char *err, size_t errlen);
/*
 * Daemon, vmm: size bytes on device in at most IPC_DEV_MAX_CHUNKS chunks,
 * each a multiple of the recommended granularity (size is rounded up to
 * whole chunks: dm->size says how much), every one exported as a descriptor.
 * 0, or an error with err (nothing is left allocated).
 */
int ipc_devmem_create_vmm(ipc_devmem_t *dm, int device, uint64_t size, char *err, size_t errlen);
/*
 * Daemon, vmm, a takeover: ipc_devmem_plan_vmm lays out the pool as
 * ipc_devmem_create_vmm would (the same chunks for the same size on the same
 * GPU) but makes no memory: every chunk's fd is -1 until
 * ipc_devmem_adopt_chunk gives it fd, a descriptor the daemon before exported
 * (taken: closed on failure too), imported into a handle of this process -
 * which keeps the memory alive once the daemon before let go of its own.
 * 0, or an error with err.
 */
int ipc_devmem_plan_vmm(ipc_devmem_t *dm, int device, uint64_t size, char *err, size_t errlen);
int ipc_devmem_adopt_chunk(ipc_devmem_t *dm, uint32_t i, int fd, char *err, size_t errlen);
/*
 * Daemon, vmm: give chunk i new memory (for a new uid): the new allocation is
 * made and exported first, then the old handle and descriptor are let go, so
 * that whoever imported the old one keeps only the old memory, which the
 * driver frees with its last holder.  On failure chunk i is as before.
 */
int ipc_devmem_replace_chunk(ipc_devmem_t *dm, uint32_t i, char *err, size_t errlen);
/* Either backend; dm may be zeroed (a no-op). */
void ipc_devmem_destroy(ipc_devmem_t *dm);

/*
 * Daemon, vmm: one allocation of its own on device (the GMS socket's, gms.c):
 * size rounded up to the minimum granularity (*aligned), made by cuMemCreate
 * exportable as a POSIX descriptor (*handle).  0, or PINPOOL_ENOSPC (the GPU
 * is full) / PINPOOL_ECUDA with err; nothing is left made.
 * ipc_devmem_vmm_export: a new descriptor of it in *fd (the caller closes
 * it), 0 or PINPOOL_ECUDA with err (the daemon keeps no descriptor between
 * exports: they would compete with its clients for RLIMIT_NOFILE).
 * ipc_devmem_vmm_free lets the handle go (the memory lives on in whoever
 * imported it, until they let it go too).
 */
int ipc_devmem_vmm_alloc(int device, uint64_t size, uint64_t *aligned, uint64_t *handle,
                         char *err, size_t errlen);
int ipc_devmem_vmm_export(int device, uint64_t handle, int *fd, char *err, size_t errlen);
void ipc_devmem_vmm_free(int device, uint64_t handle);
/* GPU device's UUID as nvidia-smi and NVML write it ("GPU-" and 36 characters)
 * into out (at least 41 bytes).  0, or an error with err. */
int ipc_devmem_uuid(int device, char *out, size_t outlen, char *err, size_t errlen);

/* Client, ipc: open an exported handle on device; *base is this process's
 * address of the allocation's first byte.  0 or an error with err. */
int ipc_devmem_open(int device, const uint8_t handle[IPC_HANDLE_BYTES], uint64_t *base, char *err,
                    size_t errlen);
void ipc_devmem_close(int device, uint64_t base);

/*
 * Client, vmm: reserve bytes of address space on device's behalf (aligned to
 * the allocation granularity, as cuMemMap needs), and give it back.
 */
int ipc_devmem_reserve(int device, uint64_t bytes, uint64_t *va, char *err, size_t errlen);
void ipc_devmem_unreserve(uint64_t va, uint64_t bytes);
/*
 * Client, vmm: import n chunk descriptors, map them one after another at va
 * (reserved, unmapped) and let device reach them: read-write when writable,
 * else read-only (CU_MEM_ACCESS_FLAGS_PROT_READ: a write through the mapping
 * faults).  Takes the descriptors whatever happens (they are closed: the
 * mapping holds the memory).  0, or an error with err and nothing mapped.
 */
int ipc_devmem_map(int device, uint64_t va, uint64_t chunk_size, int *fds, uint32_t n,
                   bool writable, char *err, size_t errlen);
/* Client, vmm: undo ipc_devmem_map; the range stays reserved. */
void ipc_devmem_unmap(int device, uint64_t va, uint64_t bytes);

#endif
