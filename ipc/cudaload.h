/*
 * cudaload.h - the CUDA driver API, loaded at run time.
 *
 * Owns: dlopen("libcuda.so.1") and a table of the driver functions pinpool
 * uses, each resolved under the versioned name cuda.h gives it (so that its
 * ABI is the header's); the primary context of each device, and the "home"
 * device whose context a process's host-memory work (pinning, host VMM) uses.
 * Never: links libcuda or libcudart, so that a CPU-only daemon or client runs
 * on a machine without the NVIDIA driver.
 * Locking: ipc_cuda_load and ipc_cuda_use_device are thread-safe; the table is
 * read-only once loaded.  The table is process-wide by nature (it mirrors the
 * driver library, which is loaded once per process).
 *
 * Built only when the toolkit's cuda.h is found (PINPOOL_HAVE_CUDA); otherwise
 * ipc_cuda_load says so and everything runs CPU-only.
 */
#ifndef PINPOOL_IPC_CUDALOAD_H
#define PINPOOL_IPC_CUDALOAD_H

#include <stdbool.h>
#include <stddef.h>

#ifdef PINPOOL_HAVE_CUDA
#include <cuda.h>

#define IPC_CUDA_FUNCS(X)                                                                      \
    X(cuInit) X(cuDriverGetVersion) X(cuGetErrorString) X(cuGetErrorName)                      \
    X(cuDeviceGetCount) X(cuDeviceGet) X(cuDeviceGetName) X(cuDeviceGetAttribute)              \
    X(cuDevicePrimaryCtxRetain) X(cuDevicePrimaryCtxRelease) X(cuDevicePrimaryCtxGetState)        \
    X(cuCtxSetCurrent)                                                                         \
    X(cuCtxGetCurrent) X(cuCtxGetDevice) X(cuCtxSynchronize) X(cuCtxEnablePeerAccess)          \
    X(cuDeviceCanAccessPeer) X(cuMemGetAllocationGranularity) X(cuMemCreate) X(cuMemRelease)   \
    X(cuMemExportToShareableHandle) X(cuMemImportFromShareableHandle) X(cuMemAddressReserve)   \
    X(cuMemAddressFree) X(cuMemMap) X(cuMemUnmap) X(cuMemSetAccess) X(cuMemHostRegister)       \
    X(cuMemHostUnregister) X(cuMemHostAlloc) X(cuMemFreeHost) X(cuMemAlloc) X(cuMemFree)       \
    X(cuMemGetInfo) X(cuIpcGetMemHandle) X(cuIpcOpenMemHandle) X(cuIpcCloseMemHandle)          \
    X(cuMemcpyHtoD) X(cuMemcpyDtoH) X(cuMemcpyDtoD) X(cuMemcpyHtoDAsync) X(cuMemcpyDtoHAsync)  \
    X(cuMemcpyDtoDAsync) X(cuMemcpyPeerAsync) X(cuMemsetD8) X(cuMemsetD32) X(cuStreamCreate)   \
    X(cuStreamDestroy) X(cuStreamSynchronize) X(cuEventCreate) X(cuEventRecord)                \
    X(cuEventSynchronize) X(cuEventElapsedTime) X(cuEventDestroy) X(cuStreamWaitEvent)     \
    X(cuDeviceGetPCIBusId) X(cuDeviceGetUuid)

typedef struct ipc_cuda {
#define IPC_CUDA_FIELD(f) __typeof__(f) *f;
    IPC_CUDA_FUNCS(IPC_CUDA_FIELD)
#undef IPC_CUDA_FIELD
    int driver_version;
    int ndevices;
} ipc_cuda_t;

/* The loaded table; valid after ipc_cuda_load() returned 0. */
extern ipc_cuda_t ipc_cu;

/* A CUDA error as text: "cuMemCreate: CUDA_ERROR_OUT_OF_MEMORY (out of memory)". */
const char *ipc_cuda_strerror(CUresult r, const char *call, char *buf, size_t len);

/*
 * The check around a driver call, one definition for every file that makes
 * them: evaluate call; when it fails, run the statement on_fail with
 * ipc_cu_r (the CUresult) and ipc_cu_msg (ipc_cuda_strerror's text, naming
 * the call as written) in scope.  A file wraps it in its own one-line CU():
 *   #define CU(call) IPC_CU_CHECK(call, return my_fail(ctx, ipc_cu_msg))
 */
#define IPC_CU_CHECK(call, on_fail)                                                            \
    do {                                                                                       \
        CUresult ipc_cu_r = (call);                                                            \
        if (ipc_cu_r != CUDA_SUCCESS) {                                                        \
            char ipc_cu_msg[256];                                                              \
            ipc_cuda_strerror(ipc_cu_r, #call, ipc_cu_msg, sizeof(ipc_cu_msg));                \
            on_fail;                                                                           \
        }                                                                                      \
    } while (0)
#endif

/*
 * Load the driver and initialise it, once per process.  0 when at least one
 * GPU is usable; otherwise an error (PINPOOL_ECUDA) and a message for a person
 * ("no NVIDIA driver (libcuda.so.1 not found)", "no GPU visible", ...).
 * Later calls return the first result.
 */
int ipc_cuda_load(char *err, size_t errlen);
/* Devices visible (0 when not loaded). */
int ipc_cuda_device_count(void);
/* Make device dev's primary context current in the calling thread. */
int ipc_cuda_use_device(int dev);
/*
 * The home device: the GPU whose primary context host memory is made and
 * pinned in when no context is current (the host backends), 0 unless set.
 * The daemon sets it once at start, before any CUDA call, to a GPU it needs
 * anyway (its first device pool's), so that it holds no context on a GPU it
 * does not use (each costs ~0.5 GiB of that GPU's memory).  Clients never set it.
 */
void ipc_cuda_set_home_device(int dev);
int ipc_cuda_home_device(void);
/* Does this process hold device dev's primary context (retained, by anyone
 * in it)?  The driver's word (cuDevicePrimaryCtxGetState), not pinpool's
 * records; false when the driver is not loaded. */
bool ipc_cuda_context_active(int dev);
/* GPU dev's memory as the driver tells it (cuMemGetInfo): total less free
 * into *used (every process's use), and *total.  Only where this process
 * already holds dev's primary context (it never makes one for this): 0, or
 * PINPOOL_ENODEV. */
int ipc_cuda_gpu_memory(int dev, uint64_t *used, uint64_t *total);
/* Was this build made with CUDA support at all? */
bool ipc_cuda_built(void);

#endif
