/*
 * fanout.c - pinpool_fanout: one host buffer onto several GPUs (see pinpool.h).
 *
 * Why here, in the client library, and not in the daemon: the destination
 * pointers live in the caller's CUDA contexts and the copies must be ordered
 * with the caller's work; the daemon would have to open every destination by
 * IPC, and an NCCL communicator cannot cross a process boundary.  The daemon
 * stays out of the data path, as for every other copy (DESIGN.md, point 4).
 *
 * Owns: per context, one pair of streams and an event per GPU (made on first
 * use), the NCCL communicators (one per GPU set, ncclCommInitAll, kept until
 * pinpool_close) and AUTO's measurements per (GPU set, size class).
 * Never: talks to the daemon, allocates device memory, or leaves the calling
 * thread's CUDA context changed.
 * Locking: f->lock is held for a whole call (one fan-out per context at a
 * time: the streams and communicators are not shared between calls).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cudaload.h"
#include "internal.h"
#include "ncclload.h"

#define NCLASSES 4
#define MAX_SETS 16 /* GPU sets with a communicator or measurements */
#define PROBE_MAX (1ull << 30)
#define DEFAULT_CHUNK (64ull << 20)
#define NCCL_MAX_CALL (1ull << 30) /* bytes per ncclBroadcast */

const char *pinpool_fanout_method_name(unsigned method)
{
    static const char *const names[] = {"auto", "direct", "nccl", "nccl-pipelined"};
    return method < PINPOOL_FANOUT_NMETHODS ? names[method] : "?";
}

const char *pinpool_nccl_describe(char *buf, size_t len)
{
    return ipc_nccl_describe(buf, len);
}

#ifdef PINPOOL_HAVE_CUDA

/* Size classes of AUTO: <4 MiB, <64 MiB, <1 GiB, larger. */
static int size_class(uint64_t bytes)
{
    return bytes < (4ull << 20) ? 0 : bytes < (64ull << 20) ? 1 : bytes < (1ull << 30) ? 2 : 3;
}

/* A set of GPUs as a bit mask (ordinals < 64), whatever the order. */
static uint64_t set_mask(int ndev, const int *devices)
{
    uint64_t m = 0;
    for (int i = 0; i < ndev; i++)
        m |= 1ull << devices[i];
    return m;
}

typedef struct fo_dev {
    bool ready;
    CUstream main; /* H2D (DIRECT, NCCL) and the broadcasts */
    CUstream copy; /* H2D of the chunks when pipelined (root only) */
    CUevent ev;    /* a chunk has landed on the root */
} fo_dev_t;

typedef struct fo_set {
    uint64_t mask;
    int ndev;
    int devs[PINPOOL_MAX_DEVICES]; /* ascending: rank r is GPU devs[r] */
#ifdef PINPOOL_HAVE_NCCL
    ncclComm_t comms[PINPOOL_MAX_DEVICES];
#endif
    bool have_comm;
    bool measured[NCLASSES];
    unsigned choice[NCLASSES];
    double gbps[NCLASSES][PINPOOL_FANOUT_NMETHODS];
} fo_set_t;

/* A context's fan-out state (pinpool__ext_get makes it on the first call). */
typedef struct fanout {
    pthread_mutex_t lock;
    fo_dev_t dev[PINPOOL_MAX_DEVICES];
    fo_set_t sets[MAX_SETS];
    int nsets;
} fanout_t;

#endif

/* Checks that need no GPU; 0 or PINPOOL_EINVAL with the message. */
static int check_args(pinpool_ctx_t *ctx, const void *host_src, int ndev, const int *devices,
                      void *const *dst_ptrs, unsigned flags)
{
    if (host_src == NULL || devices == NULL || dst_ptrs == NULL)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "pinpool_fanout: host_src, devices and "
                             "dst_ptrs must not be NULL");
    if (ndev < 1 || ndev > PINPOOL_MAX_DEVICES)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "pinpool_fanout: ndev must be 1..16");
    if (flags >= PINPOOL_FANOUT_NMETHODS)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "pinpool_fanout: unknown flags");
    for (int i = 0; i < ndev; i++) {
        if (devices[i] < 0 || devices[i] >= 64)
            return pinpool__fail(ctx, PINPOOL_EINVAL,
                                 "pinpool_fanout: device %d is not a GPU ordinal", devices[i]);
        if (dst_ptrs[i] == NULL)
            return pinpool__fail(ctx, PINPOOL_EINVAL, "pinpool_fanout: dst_ptrs[%d] is NULL", i);
        for (int k = 0; k < i; k++)
            if (devices[k] == devices[i])
                return pinpool__fail(ctx, PINPOOL_EINVAL, "pinpool_fanout: GPU %d is listed twice",
                                     devices[i]);
    }
    return 0;
}

/* The start of pinpool_fanout: the arguments, then the driver.  0: go on;
 * 1: nothing to copy (bytes 0); else the error, with its message. */
static int fanout_begin(pinpool_ctx_t *ctx, const void *host_src, uint64_t bytes, int ndev,
                        const int *devices, void *const *dst_ptrs, unsigned flags)
{
    char why[256];
    int rc;

    if (ctx == NULL)
        return -EINVAL;
    rc = check_args(ctx, host_src, ndev, devices, dst_ptrs, flags);
    if (rc != 0)
        return rc;
    if (bytes == 0)
        return 1;
    rc = ipc_cuda_load(why, sizeof(why));
    return rc != 0 ? pinpool__fail(ctx, rc, "%s", why) : 0;
}

#ifndef PINPOOL_HAVE_CUDA

int pinpool_fanout(pinpool_ctx_t *ctx, const void *host_src, uint64_t bytes, int ndev,
                   const int *devices, void *const *dst_ptrs, unsigned flags)
{
    int rc = fanout_begin(ctx, host_src, bytes, ndev, devices, dst_ptrs, flags);

    return rc == 1 ? 0 : rc; /* the driver cannot load in this build */
}

int pinpool_fanout_choice(pinpool_ctx_t *ctx, int ndev, const int *devices, uint64_t bytes,
                          unsigned *method, double gbps[PINPOOL_FANOUT_NMETHODS])
{
    (void)ndev, (void)devices, (void)bytes, (void)method, (void)gbps;
    if (ctx == NULL)
        return -EINVAL;
    return pinpool__fail(ctx, PINPOOL_ENOENT, "nothing measured (built without CUDA)");
}

#else

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A failed CUDA call: PINPOOL_ECUDA with the message in ctx. */
static int cu_fail(pinpool_ctx_t *ctx, CUresult r, const char *call, int dev)
{
    char buf[200];
    return pinpool__fail(ctx, PINPOOL_ECUDA, "pinpool_fanout: GPU %d: %s", dev,
                         ipc_cuda_strerror(r, call, buf, sizeof(buf)));
}

#define CU(dev, call) IPC_CU_CHECK(call, return cu_fail(ctx, ipc_cu_r, #call, (dev)))

static int use(pinpool_ctx_t *ctx, int dev)
{
    if (ipc_cuda_use_device(dev) == 0)
        return 0;
    return pinpool__fail(ctx, PINPOOL_ENODEV,
                         "pinpool_fanout: GPU %d is not usable in this process "
                         "(%d visible; CUDA_VISIBLE_DEVICES?)", dev, ipc_cuda_device_count());
}

/* The streams and event of GPU dev, made once.  Lock held. */
static int dev_ready(pinpool_ctx_t *ctx, fanout_t *f, int dev)
{
    fo_dev_t *d = &f->dev[dev];
    int rc;

    if (d->ready)
        return 0;
    rc = use(ctx, dev);
    if (rc != 0)
        return rc;
    CU(dev, ipc_cu.cuStreamCreate(&d->main, CU_STREAM_NON_BLOCKING));
    CU(dev, ipc_cu.cuStreamCreate(&d->copy, CU_STREAM_NON_BLOCKING));
    CU(dev, ipc_cu.cuEventCreate(&d->ev, CU_EVENT_DISABLE_TIMING));
    d->ready = true;
    return 0;
}

static fo_set_t *find_set(fanout_t *f, uint64_t mask, int ndev, const int *devices)
{
    fo_set_t *s;

    for (int i = 0; i < f->nsets; i++)
        if (f->sets[i].mask == mask)
            return &f->sets[i];
    if (f->nsets == MAX_SETS)
        return NULL;
    s = &f->sets[f->nsets++];
    memset(s, 0, sizeof(*s));
    s->mask = mask;
    s->ndev = ndev;
    for (int d = 0, n = 0; d < 64 && n < ndev; d++)
        if (mask & (1ull << d))
            s->devs[n++] = d;
    (void)devices;
    return s;
}

static int rank_of(const fo_set_t *s, int dev)
{
    for (int r = 0; r < s->ndev; r++)
        if (s->devs[r] == dev)
            return r;
    return -1;
}

static int sync_all(pinpool_ctx_t *ctx, fanout_t *f, int ndev, const int *devices)
{
    int rc = 0;

    /* Wait for every stream even after a failure, so that nothing is in
     * flight when the call returns. */
    for (int i = 0; i < ndev; i++) {
        fo_dev_t *d = &f->dev[devices[i]];
        CUresult r;
        if (!d->ready || ipc_cuda_use_device(devices[i]) != 0)
            continue;
        r = ipc_cu.cuStreamSynchronize(d->main);
        if (r == CUDA_SUCCESS)
            r = ipc_cu.cuStreamSynchronize(d->copy);
        if (r != CUDA_SUCCESS && rc == 0)
            rc = cu_fail(ctx, r, "cuStreamSynchronize", devices[i]);
    }
    return rc;
}

/* K independent H2D copies, one per GPU on its own stream, all in flight at once. */
static int run_direct(pinpool_ctx_t *ctx, fanout_t *f, const void *src, uint64_t bytes,
                      int ndev, const int *devices, void *const *dst)
{
    for (int i = 0; i < ndev; i++) {
        int rc = use(ctx, devices[i]);
        if (rc != 0)
            return rc;
        CU(devices[i], ipc_cu.cuMemcpyHtoDAsync((CUdeviceptr)(uintptr_t)dst[i], src, bytes,
                                                f->dev[devices[i]].main));
    }
    return sync_all(ctx, f, ndev, devices);
}

#ifdef PINPOOL_HAVE_NCCL

static int nccl_fail(pinpool_ctx_t *ctx, ncclResult_t r, const char *call)
{
    return pinpool__fail(ctx, PINPOOL_EINTERNAL, "pinpool_fanout: %s: %s", call,
                         ipc_nccl.ncclGetErrorString(r));
}

/* The communicator of set s, made once (ncclCommInitAll over its GPUs). */
static int comm_ready(pinpool_ctx_t *ctx, fo_set_t *s)
{
    char why[1024];
    ncclResult_t r;
    int rc;

    if (s->have_comm)
        return 0;
    rc = ipc_nccl_load(why, sizeof(why));
    if (rc != 0)
        return pinpool__fail(ctx, rc, "%s", why);
    r = ipc_nccl.ncclCommInitAll(s->comms, s->ndev, s->devs);
    if (r != ncclSuccess)
        return nccl_fail(ctx, r, "ncclCommInitAll");
    s->have_comm = true;
    return 0;
}

/* Broadcast [off, off + len) of the root's buffer to every GPU of the set,
 * each on its main stream.  The caller has ordered the root's stream after
 * the bytes landed. */
static int bcast(pinpool_ctx_t *ctx, fanout_t *f, fo_set_t *s, int root_rank, int ndev,
                 const int *devices, void *const *dst, uint64_t off, uint64_t len)
{
    ncclResult_t r, r2;

    r = ipc_nccl.ncclGroupStart();
    if (r != ncclSuccess)
        return nccl_fail(ctx, r, "ncclGroupStart");
    for (int i = 0; i < ndev && r == ncclSuccess; i++) {
        int rank = rank_of(s, devices[i]);
        void *p = (char *)dst[i] + off;
        r = ipc_nccl.ncclBroadcast(p, p, len, ncclUint8, root_rank, s->comms[rank],
                                   (cudaStream_t)f->dev[devices[i]].main);
    }
    r2 = ipc_nccl.ncclGroupEnd();
    if (r != ncclSuccess)
        return nccl_fail(ctx, r, "ncclBroadcast");
    if (r2 != ncclSuccess)
        return nccl_fail(ctx, r2, "ncclGroupEnd");
    return 0;
}

static uint64_t chunk_bytes(void)
{
    const char *e = getenv("PINPOOL_FANOUT_CHUNK");
    uint64_t c = 0;

    if (e != NULL && pinpool_parse_size(e, &c) == 0 && c >= (1u << 20))
        return c;
    return DEFAULT_CHUNK;
}

/*
 * H2D of the whole buffer to devices[0], then the broadcast (pipelined: in
 * chunks, the H2D of chunk i+1 on the root's copy stream overlapping the
 * broadcast of chunk i on the main streams; an event orders each broadcast
 * after its chunk's copy).
 */
static int run_nccl(pinpool_ctx_t *ctx, fanout_t *f, fo_set_t *s, bool pipelined,
                    const void *src, uint64_t bytes, int ndev, const int *devices,
                    void *const *dst)
{
    int root = devices[0], root_rank = rank_of(s, root), rc;
    fo_dev_t *rd = &f->dev[root];
    uint64_t step = pipelined ? chunk_bytes() : NCCL_MAX_CALL;

    rc = comm_ready(ctx, s);
    if (rc != 0)
        return rc;
    if (!pipelined) {
        rc = use(ctx, root);
        if (rc != 0)
            return rc;
        CU(root, ipc_cu.cuMemcpyHtoDAsync((CUdeviceptr)(uintptr_t)dst[0], src, bytes, rd->main));
    }
    for (uint64_t off = 0; off < bytes; off += step) {
        uint64_t len = bytes - off < step ? bytes - off : step;
        if (pipelined) {
            rc = use(ctx, root);
            if (rc != 0)
                break;
            CUresult r = ipc_cu.cuMemcpyHtoDAsync((CUdeviceptr)(uintptr_t)dst[0] + off,
                                                  (const char *)src + off, len, rd->copy);
            if (r == CUDA_SUCCESS)
                r = ipc_cu.cuEventRecord(rd->ev, rd->copy);
            /* Waits for this record only: a later record does not move it. */
            if (r == CUDA_SUCCESS)
                r = ipc_cu.cuStreamWaitEvent(rd->main, rd->ev, 0);
            if (r != CUDA_SUCCESS) {
                rc = cu_fail(ctx, r, "cuMemcpyHtoDAsync/cuEventRecord/cuStreamWaitEvent", root);
                break;
            }
        }
        rc = bcast(ctx, f, s, root_rank, ndev, devices, dst, off, len);
        if (rc != 0)
            break;
    }
    if (rc != 0) {
        sync_all(ctx, f, ndev, devices);
        return rc;
    }
    return sync_all(ctx, f, ndev, devices);
}

#else

static int run_nccl(pinpool_ctx_t *ctx, fanout_t *f, fo_set_t *s, bool pipelined,
                    const void *src, uint64_t bytes, int ndev, const int *devices,
                    void *const *dst)
{
    char why[256];
    (void)f, (void)s, (void)pipelined, (void)src, (void)bytes, (void)ndev, (void)devices, (void)dst;
    return pinpool__fail(ctx, ipc_nccl_load(why, sizeof(why)), "%s", why);
}

#endif

static int run_method(pinpool_ctx_t *ctx, fanout_t *f, fo_set_t *s, unsigned m,
                      const void *src, uint64_t bytes, int ndev, const int *devices,
                      void *const *dst)
{
    if (m == PINPOOL_FANOUT_DIRECT || ndev == 1)
        return run_direct(ctx, f, src, bytes, ndev, devices, dst);
    return run_nccl(ctx, f, s, m == PINPOOL_FANOUT_NCCL_PIPELINED, src, bytes, ndev, devices, dst);
}

static unsigned forced_method(void)
{
    const char *e = getenv("PINPOOL_FANOUT");

    if (e == NULL)
        return PINPOOL_FANOUT_AUTO;
    if (strcmp(e, "direct") == 0)
        return PINPOOL_FANOUT_DIRECT;
    if (strcmp(e, "nccl") == 0)
        return PINPOOL_FANOUT_NCCL;
    if (strcmp(e, "pipelined") == 0 || strcmp(e, "nccl-pipelined") == 0)
        return PINPOOL_FANOUT_NCCL_PIPELINED;
    return PINPOOL_FANOUT_AUTO;
}

/*
 * AUTO's measurement for s and class cls, on this call's buffers: each method
 * twice over the first min(bytes, 1 GiB), the best time kept.  The NCCL
 * methods are warmed up first (communicator, connections) so that set-up is
 * not counted.  Without NCCL only DIRECT is measured.  Lock held.
 */
static int calibrate(pinpool_ctx_t *ctx, fanout_t *f, fo_set_t *s, int cls,
                     const void *src, uint64_t bytes, int ndev, const int *devices,
                     void *const *dst)
{
    uint64_t probe = bytes < PROBE_MAX ? bytes : PROBE_MAX;
    char why[1024];
    bool nccl = ipc_nccl_load(why, sizeof(why)) == 0;
    double best[PINPOOL_FANOUT_NMETHODS] = {0};
    int rc;

    if (nccl) {
        rc = run_method(ctx, f, s, PINPOOL_FANOUT_NCCL, src, probe < (1u << 20) ? probe : 1u << 20,
                        ndev, devices, dst);
        if (rc != 0)
            nccl = false; /* measured as unusable: DIRECT it is */
    }
    for (int rep = 0; rep < 2; rep++)
        for (unsigned m = PINPOOL_FANOUT_DIRECT; m < PINPOOL_FANOUT_NMETHODS; m++) {
            if (m != PINPOOL_FANOUT_DIRECT && !nccl)
                continue;
            double t0 = now_s();
            rc = run_method(ctx, f, s, m, src, probe, ndev, devices, dst);
            double t = now_s() - t0;
            if (rc != 0) {
                if (m == PINPOOL_FANOUT_DIRECT)
                    return rc;
                continue;
            }
            if (best[m] == 0 || t < best[m])
                best[m] = t;
        }
    s->choice[cls] = PINPOOL_FANOUT_DIRECT;
    for (unsigned m = PINPOOL_FANOUT_DIRECT; m < PINPOOL_FANOUT_NMETHODS; m++) {
        s->gbps[cls][m] = best[m] > 0 ? (double)probe * ndev / best[m] / 1e9 : 0;
        if (best[m] > 0 && best[m] < best[s->choice[cls]])
            s->choice[cls] = m;
    }
    s->measured[cls] = true;
    return 0;
}

static int fanout_make(pinpool_ctx_t *ctx, void **state)
{
    fanout_t *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    pthread_mutex_init(&f->lock, NULL);
    *state = f;
    return 0;
}

/* pinpool_close, before the context's device pools close. */
static void fanout_destroy(pinpool_ctx_t *ctx, void *state)
{
    fanout_t *f = state;

    (void)ctx;
#ifdef PINPOOL_HAVE_NCCL
    for (int i = 0; i < f->nsets; i++)
        if (f->sets[i].have_comm)
            for (int r = 0; r < f->sets[i].ndev; r++)
                ipc_nccl.ncclCommDestroy(f->sets[i].comms[r]);
#endif
    for (int d = 0; d < PINPOOL_MAX_DEVICES; d++) {
        fo_dev_t *dv = &f->dev[d];
        if (!dv->ready || ipc_cuda_use_device(d) != 0)
            continue;
        ipc_cu.cuStreamSynchronize(dv->main);
        ipc_cu.cuStreamSynchronize(dv->copy);
        ipc_cu.cuEventDestroy(dv->ev);
        ipc_cu.cuStreamDestroy(dv->copy);
        ipc_cu.cuStreamDestroy(dv->main);
    }
    pthread_mutex_destroy(&f->lock);
    free(f);
}

static const pinpool__ext_t fanout_ext = {.name = "fanout", .make = fanout_make,
                                          .destroy = fanout_destroy};

int pinpool_fanout(pinpool_ctx_t *ctx, const void *host_src, uint64_t bytes, int ndev,
                   const int *devices, void *const *dst_ptrs, unsigned flags)
{
    fanout_t *f;
    void *state;
    CUcontext saved = NULL;
    fo_set_t *s;
    unsigned m = flags;
    int rc = fanout_begin(ctx, host_src, bytes, ndev, devices, dst_ptrs, flags);

    if (rc != 0)
        return rc == 1 ? 0 : rc;
    rc = pinpool__ext_get(ctx, &fanout_ext, &state);
    if (rc != 0)
        return rc;
    f = state;
    for (int i = 0; i < ndev; i++)
        if (devices[i] >= ipc_cuda_device_count() || devices[i] >= PINPOOL_MAX_DEVICES)
            return pinpool__fail(ctx, PINPOOL_ENODEV, "pinpool_fanout: GPU %d is not visible in "
                                 "this process (%d visible; CUDA_VISIBLE_DEVICES?)", devices[i],
                                 ipc_cuda_device_count());
    ipc_cu.cuCtxGetCurrent(&saved);
    pthread_mutex_lock(&f->lock);
    for (int i = 0; i < ndev && rc == 0; i++)
        rc = dev_ready(ctx, f, devices[i]);
    if (rc != 0)
        goto out;
    s = find_set(f, set_mask(ndev, devices), ndev, devices);
    if (s == NULL) {
        rc = pinpool__fail(ctx, PINPOOL_EINVAL, "pinpool_fanout: more than 16 GPU sets used "
                           "on one context");
        goto out;
    }
    if (ndev == 1) {
        m = PINPOOL_FANOUT_DIRECT;
    } else if (m == PINPOOL_FANOUT_AUTO) {
        int cls = size_class(bytes);
        m = forced_method();
        if (m == PINPOOL_FANOUT_AUTO) {
            if (!s->measured[cls]) {
                rc = calibrate(ctx, f, s, cls, host_src, bytes, ndev, devices, dst_ptrs);
                if (rc != 0)
                    goto out;
            }
            m = s->choice[cls];
        }
    }
    rc = run_method(ctx, f, s, m, host_src, bytes, ndev, devices, dst_ptrs);
out:
    pthread_mutex_unlock(&f->lock);
    ipc_cu.cuCtxSetCurrent(saved);
    return rc;
}

int pinpool_fanout_choice(pinpool_ctx_t *ctx, int ndev, const int *devices, uint64_t bytes,
                          unsigned *method, double gbps[PINPOOL_FANOUT_NMETHODS])
{
    fanout_t *f;
    int rc = PINPOOL_ENOENT, cls = size_class(bytes);

    if (ctx == NULL)
        return -EINVAL;
    if (devices == NULL || method == NULL || ndev < 1 || ndev > PINPOOL_MAX_DEVICES)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "pinpool_fanout_choice: bad arguments");
    for (int i = 0; i < ndev; i++)
        if (devices[i] < 0 || devices[i] >= 64)
            return pinpool__fail(ctx, PINPOOL_EINVAL, "pinpool_fanout_choice: bad device");
    f = pinpool__ext_find(ctx, &fanout_ext); /* NULL: no fan-out on ctx yet */
    uint64_t mask = set_mask(ndev, devices);
    if (f != NULL) {
        pthread_mutex_lock(&f->lock);
        for (int i = 0; i < f->nsets; i++)
            if (f->sets[i].mask == mask && f->sets[i].measured[cls]) {
                *method = f->sets[i].choice[cls];
                if (gbps != NULL)
                    memcpy(gbps, f->sets[i].gbps[cls], sizeof(f->sets[i].gbps[cls]));
                rc = 0;
            }
        pthread_mutex_unlock(&f->lock);
    }
    if (rc != 0)
        return pinpool__fail(ctx, rc, "nothing measured yet for that GPU set and size class");
    return 0;
}

#endif
