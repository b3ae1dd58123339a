/*
 * cudaload.c - see cudaload.h.
 */
#include "cudaload.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>

#include "once.h"
#include "pinpool_errors.h"

#ifndef PINPOOL_HAVE_CUDA

int ipc_cuda_load(char *err, size_t errlen)
{
    snprintf(err, errlen, "this pinpool was built without CUDA support");
    return PINPOOL_ECUDA;
}

int ipc_cuda_device_count(void)
{
    return 0;
}

int ipc_cuda_use_device(int dev)
{
    (void)dev;
    return PINPOOL_ECUDA;
}

bool ipc_cuda_built(void)
{
    return false;
}

void ipc_cuda_set_home_device(int dev)
{
    (void)dev;
}

int ipc_cuda_home_device(void)
{
    return 0;
}

bool ipc_cuda_context_active(int dev)
{
    (void)dev;
    return false;
}

int ipc_cuda_gpu_memory(int dev, uint64_t *used, uint64_t *total)
{
    (void)dev, (void)used, (void)total;
    return PINPOOL_ENODEV;
}

#else

#include <dlfcn.h>
#include <string.h>

#define MAX_DEVICES 64

ipc_cuda_t ipc_cu;

static ipc_once_t loaded = IPC_ONCE_INIT;
/* Set (release) once load() succeeded: ipc_cuda_device_count may run in another
 * thread while the first ipc_cuda_load is still inside load(). */
static int loaded_ok;
static pthread_mutex_t ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static CUcontext primary[MAX_DEVICES];
static int home; /* set once at start (the daemon), before threads */

bool ipc_cuda_built(void)
{
    return true;
}

const char *ipc_cuda_strerror(CUresult r, const char *call, char *buf, size_t len)
{
    const char *name = NULL, *text = NULL;

    if (ipc_cu.cuGetErrorName != NULL)
        ipc_cu.cuGetErrorName(r, &name);
    if (ipc_cu.cuGetErrorString != NULL)
        ipc_cu.cuGetErrorString(r, &text);
    snprintf(buf, len, "%s: %s (%s)", call, name != NULL ? name : "CUDA error",
             text != NULL ? text : "?");
    return buf;
}

#define XSTR(x) STR(x)
#define STR(x) #x

/*
 * Each function is looked up under the exact name that cuda.h maps it to
 * (cuMemAlloc -> "cuMemAlloc_v2", cuCtxGetDevice -> "cuCtxGetDevice"), so its
 * ABI is the one the header declared.  cuGetProcAddress would hand out the
 * newest ABI of the toolkit version instead: CUDA 13's cuCtxGetDevice is
 * cuCtxGetDevice_v2, which takes one more argument than cuda.h's prototype.
 */
static void load(void)
{
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    CUresult r;
    char buf[160];

    loaded.rc = PINPOOL_ECUDA;
    if (lib == NULL) {
        snprintf(loaded.msg, sizeof(loaded.msg), "no NVIDIA driver (libcuda.so.1 not found)");
        return;
    }
#define RESOLVE(f)                                                                             \
    ipc_cu.f = (__typeof__(ipc_cu.f))dlsym(lib, XSTR(f));                                      \
    if (ipc_cu.f == NULL) {                                                                    \
        snprintf(loaded.msg, sizeof(loaded.msg),                                               \
                 "the NVIDIA driver lacks %s (too old for CUDA %d)", XSTR(f),                  \
                 CUDA_VERSION / 1000);                                                         \
        return;                                                                                \
    }
    IPC_CUDA_FUNCS(RESOLVE)
#undef RESOLVE
    r = ipc_cu.cuInit(0);
    if (r != CUDA_SUCCESS) {
        snprintf(loaded.msg, sizeof(loaded.msg), "no usable GPU: %s",
                 ipc_cuda_strerror(r, "cuInit", buf, sizeof(buf)));
        return;
    }
    ipc_cu.cuDriverGetVersion(&ipc_cu.driver_version);
    if (ipc_cu.cuDeviceGetCount(&ipc_cu.ndevices) != CUDA_SUCCESS || ipc_cu.ndevices == 0) {
        ipc_cu.ndevices = 0;
        snprintf(loaded.msg, sizeof(loaded.msg), "no GPU visible (check CUDA_VISIBLE_DEVICES)");
        return;
    }
    if (ipc_cu.ndevices > MAX_DEVICES)
        ipc_cu.ndevices = MAX_DEVICES;
    loaded.rc = 0;
    __atomic_store_n(&loaded_ok, 1, __ATOMIC_RELEASE);
}

int ipc_cuda_load(char *err, size_t errlen)
{
    return ipc_once(&loaded, load, err, errlen);
}

int ipc_cuda_device_count(void)
{
    return __atomic_load_n(&loaded_ok, __ATOMIC_ACQUIRE) ? ipc_cu.ndevices : 0;
}

int ipc_cuda_use_device(int dev)
{
    CUcontext ctx;

    if (!__atomic_load_n(&loaded_ok, __ATOMIC_ACQUIRE) || dev < 0 || dev >= ipc_cu.ndevices)
        return PINPOOL_ENODEV;
    pthread_mutex_lock(&ctx_lock);
    if (primary[dev] == NULL) {
        CUdevice d;
        if (ipc_cu.cuDeviceGet(&d, dev) != CUDA_SUCCESS ||
            ipc_cu.cuDevicePrimaryCtxRetain(&primary[dev], d) != CUDA_SUCCESS)
            primary[dev] = NULL;
    }
    ctx = primary[dev];
    pthread_mutex_unlock(&ctx_lock);
    if (ctx == NULL)
        return PINPOOL_ECUDA;
    return ipc_cu.cuCtxSetCurrent(ctx) == CUDA_SUCCESS ? 0 : PINPOOL_ECUDA;
}

void ipc_cuda_set_home_device(int dev)
{
    home = dev >= 0 ? dev : 0;
}

int ipc_cuda_home_device(void)
{
    return home;
}

bool ipc_cuda_context_active(int dev)
{
    unsigned flags = 0;
    int active = 0;
    CUdevice d;

    if (!__atomic_load_n(&loaded_ok, __ATOMIC_ACQUIRE) || dev < 0 || dev >= ipc_cu.ndevices || ipc_cu.cuDeviceGet(&d, dev) != CUDA_SUCCESS)
        return false;
    return ipc_cu.cuDevicePrimaryCtxGetState(d, &flags, &active) == CUDA_SUCCESS && active != 0;
}

int ipc_cuda_gpu_memory(int dev, uint64_t *used, uint64_t *total)
{
    size_t f = 0, t = 0;

    /* the driver's word: a context retained by anyone in this process; then
     * making it current here creates nothing */
    if (!ipc_cuda_context_active(dev) || ipc_cuda_use_device(dev) != 0 ||
        ipc_cu.cuMemGetInfo(&f, &t) != CUDA_SUCCESS)
        return PINPOOL_ENODEV;
    *used = t > f ? (uint64_t)(t - f) : 0;
    *total = (uint64_t)t;
    return 0;
}

#endif
