/*
 * libcuda.c - a stand-in libcuda.so.1 over host memory, for tests only.
 *
 * `make test` builds it as build/mockcuda/libcuda.so.1 and puts it on
 * LD_LIBRARY_PATH for the processes of tests/test_swap.c's swap_mock suite, so
 * that the CUDA code paths (swap API, VMM host and device memory, the device
 * pool's IPC handles, bench/swap) run on machines without a GPU.
 * What it models: device memory is host memory at the same address; VMM
 * physical memory is a memfd (so exported handles are fds), an unmapped range
 * is PROT_NONE (a use after release faults); cuMemMap refuses a range that is
 * already mapped and cuMemUnmap one that is not, cuMemHostRegister a range
 * already registered and cuMemHostUnregister one that is not (as the driver
 * does); IPC handles name the owner's fd through /proc.  $PINPOOL_MOCK_FAIL
 * names one call (cuMemCreate, cuMemMap or cuMemHostRegister) whose next
 * call fails with CUDA_ERROR_OUT_OF_MEMORY (once: the variable is then
 * unset), for the tests of failure paths.  cuMemGetInfo's free bytes are
 * 80 GiB less the device memory this process holds (cuMemAlloc and device
 * cuMemCreate handles not yet released), so a test can see memory given back,
 * and less 512 MiB while the current GPU's primary context is retained (a
 * context's own memory).  $PINPOOL_MOCK_DEVICES=N shows N GPUs (default 1);
 * mock_cuda_contexts() is the mask of GPUs whose primary context is retained.
 * mock_cuda_calls(NAME) counts this process's calls of cuMemHostAlloc,
 * cuMemHostRegister, cuMemCreate (device memory) and cuMemcpyDtoHAsync;
 * mock_cuda_device_bytes() is the device memory held.  Device VMM memory
 * (cuMemCreate on a DEVICE location) has a minimum granularity of 2 MiB and
 * a recommended one of 4 MiB: its sizes, and the addresses and sizes it is
 * mapped at, must be multiples of 2 MiB (as the driver asks), and
 * cuMemAddressReserve aligns to 2 MiB.  cuMemSetAccess sets the protection
 * of the range: PROT_READ for CU_MEM_ACCESS_FLAGS_PROT_READ, so that a write
 * through a read-only mapping dies of SIGSEGV (the GPU's fault, seen by the
 * CPU).  $PINPOOL_MOCK_NO_VMM=1 makes the device say it supports neither
 * virtual memory management nor fd export (=fd: only no fd export).
 * What it does not:
 * copies are synchronous and streams and
 * events order nothing, so stream-ordering bugs stay invisible; timings mean
 * nothing.  The real test is tests/gpu/run on a GPU.
 * Test knobs: $PINPOOL_MOCK_CREATE_GATE holds cuMemCreate (slow pinning,
 * for tests/test_chaos.c and bench/ctl_latency.c), $PINPOOL_MOCK_REGISTER_GATE
 * cuMemHostRegister (tests/test_hugetlb.c).
 */
#include <cuda.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define OK CUDA_SUCCESS
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
typedef struct { void *p; size_t n; int fd; } dalloc_t;
static dalloc_t dal[4096];
/* Ranges mapped with cuMemMap and registered with cuMemHostRegister (under mu). */
typedef struct { uintptr_t p; size_t n; } range_t;
static range_t mapped[4096], registered[4096];

/* Does call fail this time?  Once: the variable is gone after. */
static int failing(const char *call)
{
    const char *f = getenv("PINPOOL_MOCK_FAIL");
    if (f == NULL || strcmp(f, call) != 0) return 0;
    unsetenv("PINPOOL_MOCK_FAIL");
    return 1;
}

/* Does [p, p + n) overlap a range of t? */
static int overlaps(const range_t *t, uintptr_t p, size_t n)
{
    for (int i = 0; i < 4096; i++)
        if (t[i].n != 0 && p < t[i].p + t[i].n && t[i].p < p + n) return 1;
    return 0;
}

static int add_range(range_t *t, uintptr_t p, size_t n)
{
    for (int i = 0; i < 4096; i++)
        if (t[i].n == 0) { t[i].p = p; t[i].n = n; return 1; }
    return 0;
}

/* Remove the ranges inside [p, p + n); how many there were. */
static int drop_ranges(range_t *t, uintptr_t p, size_t n)
{
    int k = 0;
    for (int i = 0; i < 4096; i++)
        if (t[i].n != 0 && t[i].p >= p && t[i].p + t[i].n <= p + n) { t[i].n = 0; k++; }
    return k;
}

/* The accounting above (see the comment at the top). */
#define TOTAL (80ull << 30)
#define MAXFD 65536
static size_t dev_size[MAXFD];     /* device cuMemCreate handles by fd */
static unsigned long long held;    /* device bytes held */
enum { C_HOSTALLOC, C_HOSTREGISTER, C_CREATE, C_DTOH, NCOUNT };
static const char *const count_names[NCOUNT] = {"cuMemHostAlloc", "cuMemHostRegister", "cuMemCreate",
                                                "cuMemcpyDtoHAsync"};
static int counts[NCOUNT];
static void count(int c) { __atomic_add_fetch(&counts[c], 1, __ATOMIC_RELAXED); }
int mock_cuda_calls(const char *name);
int mock_cuda_calls(const char *name)
{
    for (int i = 0; i < NCOUNT; i++) if (strcmp(name, count_names[i]) == 0) return __atomic_load_n(&counts[i], __ATOMIC_RELAXED);
    return -1;
}
unsigned long long mock_cuda_device_bytes(void);
unsigned long long mock_cuda_device_bytes(void) { return __atomic_load_n(&held, __ATOMIC_RELAXED); }
static void hold(long long n) { __atomic_add_fetch(&held, (unsigned long long)n, __ATOMIC_RELAXED); }

CUresult cuInit(unsigned f) { (void)f; return OK; }
CUresult cuDriverGetVersion(int *v) { *v = 13000; return OK; }
CUresult cuGetErrorString(CUresult e, const char **s) { (void)e; *s = "mock error"; return OK; }
CUresult cuGetErrorName(CUresult e, const char **s) { static char b[32]; snprintf(b, 32, "MOCK_%d", (int)e); *s = b; return OK; }
/* $PINPOOL_MOCK_DEVICES: how many GPUs it shows (1 to 8; 1 when unset). */
static int ndev(void)
{
    const char *e = getenv("PINPOOL_MOCK_DEVICES");
    int n = e != NULL ? atoi(e) : 1;
    return n < 1 ? 1 : n > 8 ? 8 : n;
}
CUresult cuDeviceGetCount(int *n) { *n = ndev(); return OK; }
CUresult cuDeviceGet(CUdevice *d, int o) { *d = o; return o >= 0 && o < ndev() ? OK : CUDA_ERROR_INVALID_DEVICE; }
CUresult cuDeviceGetName(char *n, int len, CUdevice d) { (void)d; snprintf(n, (size_t)len, "Mock GPU"); return OK; }
CUresult cuDeviceGetPCIBusId(char *b, int len, CUdevice d) { snprintf(b, (size_t)len, "0000:%02x:00.0", d + 1); return OK; }
/* A fixed UUID per ordinal: bytes 0x50.. with the ordinal in the last. */
CUresult cuDeviceGetUuid(CUuuid *u, CUdevice d)
{
    if (d < 0 || d >= ndev()) return CUDA_ERROR_INVALID_DEVICE;
    for (int i = 0; i < 16; i++) u->bytes[i] = (char)(0x50 + i);
    u->bytes[15] = (char)d;
    return OK;
}
CUresult cuDeviceGetAttribute(int *v, CUdevice_attribute a, CUdevice d)
{
    const char *no = getenv("PINPOOL_MOCK_NO_VMM");
    (void)d;
    *v = 1;
    if (no != NULL && no[0] != '\0' &&
        (a == CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED ||
         (a == CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED && strcmp(no, "fd") != 0)))
        *v = 0;
    return OK;
}
/* Primary contexts: one object per device, retained or not.  Each retained
 * one holds CTX_BYTES of its GPU (cuMemGetInfo), as a real context's own
 * memory does; mock_cuda_contexts() is the bit mask of retained ones.  The
 * current context is per thread (GPU 0's until cuCtxSetCurrent). */
#define CTX_BYTES (512ull << 20)
static int ctxobj[8], retained[8];
static __thread CUcontext current;
CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d)
{
    if (d < 0 || d >= ndev()) return CUDA_ERROR_INVALID_DEVICE;
    __atomic_add_fetch(&retained[d], 1, __ATOMIC_SEQ_CST);
    *c = (CUcontext)&ctxobj[d];
    return OK;
}
CUresult cuDevicePrimaryCtxRelease(CUdevice d)
{
    if (d < 0 || d >= ndev()) return CUDA_ERROR_INVALID_DEVICE;
    __atomic_sub_fetch(&retained[d], 1, __ATOMIC_SEQ_CST);
    return OK;
}
CUresult cuDevicePrimaryCtxGetState(CUdevice d, unsigned *flags, int *active)
{
    if (d < 0 || d >= ndev()) return CUDA_ERROR_INVALID_DEVICE;
    *flags = 0;
    *active = __atomic_load_n(&retained[d], __ATOMIC_SEQ_CST) > 0;
    return OK;
}
unsigned mock_cuda_contexts(void);
unsigned mock_cuda_contexts(void)
{
    unsigned m = 0;
    for (int i = 0; i < 8; i++) if (__atomic_load_n(&retained[i], __ATOMIC_SEQ_CST) > 0) m |= 1u << i;
    return m;
}
CUresult cuCtxSetCurrent(CUcontext c) { current = c; return OK; }
/* As before there were several: GPU 0's context is current where none was set. */
CUresult cuCtxGetCurrent(CUcontext *c) { *c = current != NULL ? current : (CUcontext)&ctxobj[0]; return OK; }
CUresult cuCtxGetDevice(CUdevice *d) { *d = current != NULL ? (CUdevice)((int *)current - ctxobj) : 0; return OK; }
CUresult cuCtxSynchronize(void) { return OK; }
CUresult cuCtxEnablePeerAccess(CUcontext c, unsigned f) { (void)c, (void)f; return OK; }
CUresult cuDeviceCanAccessPeer(int *v, CUdevice a, CUdevice b) { (void)a, (void)b; *v = 0; return OK; }
#define DEV_GRAN (2ul << 20) /* device VMM: minimum; the recommended one is twice that */
CUresult cuMemGetAllocationGranularity(size_t *g, const CUmemAllocationProp *p, CUmemAllocationGranularity_flags f)
{
    *g = p->location.type == CU_MEM_LOCATION_TYPE_DEVICE && f == CU_MEM_ALLOC_GRANULARITY_RECOMMENDED
             ? 2 * DEV_GRAN : DEV_GRAN;
    return OK;
}
/* Is VMM handle (or descriptor) fd device memory?  Its memfd's name says. */
static int is_dev_fd(int fd)
{
    char path[64], name[128];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, name, sizeof(name) - 1);
    if (n <= 0) return 0;
    name[n] = '\0';
    return strstr(name, "mockvmm-dev") != NULL;
}
/* A test knob for slow pinning: $PINPOOL_MOCK_CREATE_GATE=PATH[:N] makes every
 * cuMemCreate after the first N (default 2: a daemon's probe and its first
 * chunk) wait while PATH exists, so that a test decides when chunks get made. */
static void create_gate(void)
{
    static int calls;
    const char *g = getenv("PINPOOL_MOCK_CREATE_GATE");
    char path[512];
    int pass = 2;

    if (g == NULL || g[0] == '\0')
        return;
    snprintf(path, sizeof(path), "%s", g);
    char *colon = strrchr(path, ':');
    if (colon != NULL) {
        *colon = '\0';
        pass = atoi(colon + 1);
    }
    if (__atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST) <= pass)
        return;
    while (access(path, F_OK) == 0)
        usleep(10000);
}

CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t n, const CUmemAllocationProp *p, unsigned long long f)
{
    (void)f;
    if (failing("cuMemCreate")) return CUDA_ERROR_OUT_OF_MEMORY;
    create_gate();
    int dev = p->location.type == CU_MEM_LOCATION_TYPE_DEVICE;
    if (dev && (n == 0 || n % DEV_GRAN != 0)) return CUDA_ERROR_INVALID_VALUE;
    int fd = memfd_create(dev ? "mockvmm-dev" : "mockvmm", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)n) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
    if (p->location.type == CU_MEM_LOCATION_TYPE_DEVICE && fd < MAXFD) {
        count(C_CREATE);
        dev_size[fd] = n;
        hold((long long)n);
    }
    *h = (CUmemGenericAllocationHandle)fd;
    return OK;
}
CUresult cuMemRelease(CUmemGenericAllocationHandle h)
{
    int fd = (int)h;
    if (fd >= 0 && fd < MAXFD && dev_size[fd] != 0) {
        hold(-(long long)dev_size[fd]);
        dev_size[fd] = 0;
    }
    close(fd);
    return OK;
}
CUresult cuMemExportToShareableHandle(void *out, CUmemGenericAllocationHandle h, CUmemAllocationHandleType t, unsigned long long f)
{ (void)t, (void)f; *(int *)out = dup((int)h); return OK; }
CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *h, void *os, CUmemAllocationHandleType t)
{ (void)t; *h = (CUmemGenericAllocationHandle)dup((int)(intptr_t)os); return OK; }
CUresult cuMemAddressReserve(CUdeviceptr *p, size_t n, size_t a, CUdeviceptr addr, unsigned long long f)
{
    (void)a, (void)addr, (void)f;
    void *m = mmap(NULL, n + DEV_GRAN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    uintptr_t at = ((uintptr_t)m + DEV_GRAN - 1) / DEV_GRAN * DEV_GRAN;
    if (at > (uintptr_t)m) munmap(m, at - (uintptr_t)m);
    munmap((void *)(at + n), (uintptr_t)m + n + DEV_GRAN - (at + n));
    *p = (CUdeviceptr)at;
    return OK;
}
CUresult cuMemAddressFree(CUdeviceptr p, size_t n)
{
    pthread_mutex_lock(&mu);
    drop_ranges(mapped, (uintptr_t)p, n);
    pthread_mutex_unlock(&mu);
    munmap((void *)(uintptr_t)p, n);
    return OK;
}
CUresult cuMemMap(CUdeviceptr p, size_t n, size_t off, CUmemGenericAllocationHandle h, unsigned long long f)
{
    (void)f;
    if (failing("cuMemMap")) return CUDA_ERROR_OUT_OF_MEMORY;
    if (is_dev_fd((int)h) && (p % DEV_GRAN != 0 || n % DEV_GRAN != 0 || off != 0))
        return CUDA_ERROR_INVALID_VALUE; /* device memory maps on its granularity, whole */
    pthread_mutex_lock(&mu);
    if (overlaps(mapped, (uintptr_t)p, n) || !add_range(mapped, (uintptr_t)p, n)) {
        pthread_mutex_unlock(&mu);
        return CUDA_ERROR_INVALID_VALUE; /* the driver maps only into unmapped reserved VA */
    }
    pthread_mutex_unlock(&mu);
    void *m = mmap((void *)(uintptr_t)p, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, (int)h, (off_t)off);
    if (m == MAP_FAILED) {
        pthread_mutex_lock(&mu);
        drop_ranges(mapped, (uintptr_t)p, n);
        pthread_mutex_unlock(&mu);
        return CUDA_ERROR_INVALID_VALUE;
    }
    return OK;
}
CUresult cuMemUnmap(CUdeviceptr p, size_t n)
{
    pthread_mutex_lock(&mu);
    int k = drop_ranges(mapped, (uintptr_t)p, n);
    pthread_mutex_unlock(&mu);
    if (k == 0) return CUDA_ERROR_INVALID_VALUE;
    /* The range stays reserved: PROT_NONE, never a hole. */
    mmap((void *)(uintptr_t)p, n, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    return OK;
}
/* The range's protection: read-write if any location may write, read-only if
 * they may only read (a write faults), none if nobody may. */
CUresult cuMemSetAccess(CUdeviceptr p, size_t n, const CUmemAccessDesc *d, size_t c)
{
    int prot = PROT_NONE;
    pthread_mutex_lock(&mu);
    int ok = overlaps(mapped, (uintptr_t)p, n);
    pthread_mutex_unlock(&mu);
    if (!ok || c == 0) return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < c; i++)
        prot |= d[i].flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE ? PROT_READ | PROT_WRITE
                : d[i].flags == CU_MEM_ACCESS_FLAGS_PROT_READ ? PROT_READ : PROT_NONE;
    return mprotect((void *)(uintptr_t)p, n, prot) == 0 ? OK : CUDA_ERROR_INVALID_VALUE;
}
/* $PINPOOL_MOCK_REGISTER_GATE=PATH:N: every cuMemHostRegister after this
 * process's first N waits while PATH exists (the register path's create_gate). */
static void register_gate(void)
{
    static int calls;
    const char *g = getenv("PINPOOL_MOCK_REGISTER_GATE");
    char path[512];
    int pass = 0;

    if (g == NULL || g[0] == '\0')
        return;
    snprintf(path, sizeof(path), "%s", g);
    char *colon = strrchr(path, ':');
    if (colon != NULL) {
        *colon = '\0';
        pass = atoi(colon + 1);
    }
    if (__atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST) <= pass)
        return;
    while (access(path, F_OK) == 0)
        usleep(10000);
}

CUresult cuMemHostRegister(void *p, size_t n, unsigned f)
{
    (void)f;
    if (failing("cuMemHostRegister")) return CUDA_ERROR_OUT_OF_MEMORY;
    register_gate();
    count(C_HOSTREGISTER);
    pthread_mutex_lock(&mu);
    CUresult r = overlaps(registered, (uintptr_t)p, n) ? CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED
                 : add_range(registered, (uintptr_t)p, n) ? OK : CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_unlock(&mu);
    return r;
}
CUresult cuMemHostUnregister(void *p)
{
    CUresult r = CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < 4096; i++)
        if (registered[i].n != 0 && registered[i].p == (uintptr_t)p) { registered[i].n = 0; r = OK; break; }
    pthread_mutex_unlock(&mu);
    return r;
}
CUresult cuMemHostAlloc(void **p, size_t n, unsigned f) { (void)f; count(C_HOSTALLOC); return posix_memalign(p, 4096, n) ? CUDA_ERROR_OUT_OF_MEMORY : OK; }
CUresult cuMemFreeHost(void *p) { free(p); return OK; }
/* Device memory: shared memfd mappings, so that IPC handles can name them. */
CUresult cuMemAlloc(CUdeviceptr *p, size_t n)
{
    int fd = memfd_create("mockdev", 0);
    if (fd < 0 || ftruncate(fd, (off_t)n) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
    void *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < 4096; i++) if (dal[i].p == NULL) { dal[i] = (dalloc_t){m, n, fd}; break; }
    pthread_mutex_unlock(&mu);
    hold((long long)n);
    *p = (CUdeviceptr)(uintptr_t)m;
    return OK;
}
CUresult cuMemFree(CUdeviceptr p)
{
    pthread_mutex_lock(&mu);
    for (int i = 0; i < 4096; i++) if (dal[i].p == (void *)(uintptr_t)p) { munmap(dal[i].p, dal[i].n); close(dal[i].fd); hold(-(long long)dal[i].n); dal[i].p = NULL; break; }
    pthread_mutex_unlock(&mu);
    return OK;
}
CUresult cuMemGetInfo(size_t *f, size_t *t)
{
    CUdevice d;
    cuCtxGetDevice(&d);
    *t = TOTAL;
    *f = TOTAL - mock_cuda_device_bytes() - (__atomic_load_n(&retained[d], __ATOMIC_SEQ_CST) > 0 ? CTX_BYTES : 0);
    return OK;
}
CUresult cuIpcGetMemHandle(CUipcMemHandle *h, CUdeviceptr p)
{
    memset(h, 0, sizeof(*h));
    for (int i = 0; i < 4096; i++) if (dal[i].p == (void *)(uintptr_t)p) {
        long v[3] = {getpid(), dal[i].fd, (long)dal[i].n};
        memcpy(h->reserved, v, sizeof(v));
        return OK;
    }
    return CUDA_ERROR_INVALID_VALUE;
}
CUresult cuIpcOpenMemHandle(CUdeviceptr *p, CUipcMemHandle h, unsigned f)
{
    (void)f;
    long v[3];
    char path[64];
    memcpy(v, h.reserved, sizeof(v));
    snprintf(path, sizeof(path), "/proc/%ld/fd/%ld", v[0], v[1]);
    int fd = open(path, O_RDWR);
    if (fd < 0) return CUDA_ERROR_INVALID_HANDLE;
    void *m = mmap(NULL, (size_t)v[2], PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return CUDA_ERROR_INVALID_HANDLE;
    *p = (CUdeviceptr)(uintptr_t)m;
    return OK;
}
CUresult cuIpcCloseMemHandle(CUdeviceptr p) { (void)p; return OK; }
#define PTR(x) ((void *)(uintptr_t)(x))
CUresult cuMemcpyHtoD(CUdeviceptr d, const void *s, size_t n) { memcpy(PTR(d), s, n); return OK; }
CUresult cuMemcpyDtoH(void *d, CUdeviceptr s, size_t n) { memcpy(d, PTR(s), n); return OK; }
CUresult cuMemcpyDtoD(CUdeviceptr d, CUdeviceptr s, size_t n) { memcpy(PTR(d), PTR(s), n); return OK; }
CUresult cuMemcpyHtoDAsync(CUdeviceptr d, const void *s, size_t n, CUstream st) { (void)st; memcpy(PTR(d), s, n); return OK; }
CUresult cuMemcpyDtoHAsync(void *d, CUdeviceptr s, size_t n, CUstream st) { (void)st; count(C_DTOH); memcpy(d, PTR(s), n); return OK; }
CUresult cuMemcpyDtoDAsync(CUdeviceptr d, CUdeviceptr s, size_t n, CUstream st) { (void)st; memcpy(PTR(d), PTR(s), n); return OK; }
CUresult cuMemcpyPeerAsync(CUdeviceptr d, CUcontext dc, CUdeviceptr s, CUcontext sc, size_t n, CUstream st)
{ (void)dc, (void)sc, (void)st; memcpy(PTR(d), PTR(s), n); return OK; }
CUresult cuMemsetD8(CUdeviceptr d, unsigned char v, size_t n) { memset(PTR(d), v, n); return OK; }
CUresult cuMemsetD32(CUdeviceptr d, unsigned v, size_t n) { unsigned *w = PTR(d); for (size_t i = 0; i < n; i++) w[i] = v; return OK; }
CUresult cuStreamCreate(CUstream *s, unsigned f) { (void)f; *s = malloc(8); return OK; }
CUresult cuStreamDestroy(CUstream s) { free(s); return OK; }
CUresult cuStreamSynchronize(CUstream s) { (void)s; return OK; }
CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned f) { (void)s, (void)e, (void)f; return OK; }
CUresult cuEventCreate(CUevent *e, unsigned f) { (void)f; *e = calloc(1, sizeof(double)); return OK; }
CUresult cuEventRecord(CUevent e, CUstream s)
{ (void)s; struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); *(double *)e = t.tv_sec * 1e3 + t.tv_nsec / 1e6; return OK; }
CUresult cuEventSynchronize(CUevent e) { (void)e; return OK; }
CUresult cuEventQuery(CUevent e) { (void)e; return OK; }
CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b) { *ms = (float)(*(double *)b - *(double *)a); if (*ms <= 0) *ms = 1e-3f; return OK; }
CUresult cuEventDestroy(CUevent e) { free(e); return OK; }
CUresult cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode *m) { static __thread CUstreamCaptureMode cur; CUstreamCaptureMode o = cur; cur = *m; *m = o; return OK; }
