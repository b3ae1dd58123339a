/*
 * fanout.c - restore of a replicated tensor set to 1..K GPUs (bench/fanout_run runs it).
 *
 *   fanout [SOCKET] [GIB] [REPS]
 *
 * The source is one pinned host slice of GIB GiB (from the daemon at SOCKET;
 * "-" or no daemon: cuMemHostAlloc), filled with a pattern.  The destinations
 * are device slices of the daemon's pools when it has them on every GPU, else
 * cuMemAlloc.  For the first GPU alone and for all visible GPUs, in one run,
 * interleaved REPS times: pinpool_fanout with DIRECT (K independent H2D
 * copies), NCCL (H2D + ncclBroadcast) and NCCL_PIPELINED (chunks of 16, 64
 * and 256 MiB); then AUTO (what it measured and chose).  Every method's
 * result is checked byte for byte on every GPU.  Also: the GPU-to-GPU link,
 * cuMemcpyPeerAsync DtoD GB/s each way (with and without peer access).
 *
 * GB/s is the restore rate: GIB GiB / time (the data every GPU needs, per
 * unit of time); "delivered" multiplies by the number of GPUs.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cudaload.h"
#include "benchutil.h"
#include "pinpool.h"

#define GiB (1024.0 * 1024 * 1024)
#define MAXD PINPOOL_MAX_DEVICES

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "fanout: %s: %s\n", what, msg);
    exit(1);
}

#ifdef PINPOOL_HAVE_CUDA

#define CU_FAIL(msg) die("CUDA", msg)

static void fill(uint64_t *p, uint64_t bytes)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (uint64_t i = 0; i < bytes / 8; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[i] = x + i;
    }
}

/* Bytes of GPU dev's dst that differ from src (read back in 256 MiB pieces). */
static uint64_t count_diff(int dev, CUdeviceptr dst, const char *src, uint64_t bytes, char *bounce,
                           uint64_t blen)
{
    uint64_t bad = 0;
    ipc_cuda_use_device(dev);
    for (uint64_t off = 0; off < bytes; off += blen) {
        uint64_t n = bytes - off < blen ? bytes - off : blen;
        CU(ipc_cu.cuMemcpyDtoH(bounce, dst + off, n));
        if (memcmp(bounce, src + off, n) != 0)
            for (uint64_t i = 0; i < n; i++)
                bad += bounce[i] != src[off + i];
    }
    return bad;
}

static void clear(int ndev, const int *devs, void *const *dst, uint64_t bytes)
{
    for (int i = 0; i < ndev; i++) {
        ipc_cuda_use_device(devs[i]);
        CU(ipc_cu.cuMemsetD8((CUdeviceptr)(uintptr_t)dst[i], 0, bytes));
        CU(ipc_cu.cuCtxSynchronize());
    }
}

static void p2p(int a, int b, uint64_t bytes, CUdeviceptr pa, CUdeviceptr pb)
{
    CUdevice da, db;
    int can = 0;
    CUcontext ca, cb;
    CUstream st;
    CUevent e0, e1;
    float ms, best = 1e9f;

    CU(ipc_cu.cuDeviceGet(&da, a));
    CU(ipc_cu.cuDeviceGet(&db, b));
    CU(ipc_cu.cuDeviceCanAccessPeer(&can, da, db));
    ipc_cuda_use_device(b);
    CU(ipc_cu.cuCtxGetCurrent(&cb));
    ipc_cuda_use_device(a);
    CU(ipc_cu.cuCtxGetCurrent(&ca));
    if (can) {
        CUresult r = ipc_cu.cuCtxEnablePeerAccess(cb, 0);
        if (r != CUDA_SUCCESS && r != CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED)
            can = 0;
    }
    CU(ipc_cu.cuStreamCreate(&st, CU_STREAM_NON_BLOCKING));
    CU(ipc_cu.cuEventCreate(&e0, 0));
    CU(ipc_cu.cuEventCreate(&e1, 0));
    for (int rep = 0; rep < 4; rep++) {
        CU(ipc_cu.cuEventRecord(e0, st));
        CU(ipc_cu.cuMemcpyPeerAsync(pb, cb, pa, ca, bytes, st));
        CU(ipc_cu.cuEventRecord(e1, st));
        CU(ipc_cu.cuEventSynchronize(e1));
        CU(ipc_cu.cuEventElapsedTime(&ms, e0, e1));
        if (rep > 0 && ms < best)
            best = ms;
    }
    printf("p2p GPU %d -> GPU %d: peer access %s, cuMemcpyPeerAsync %.0f MiB: %.1f GB/s\n", a, b,
           can ? "yes" : "no (staged through the host)", bytes / 1048576.0,
           (double)bytes / (best / 1e3) / 1e9);
    ipc_cu.cuEventDestroy(e0);
    ipc_cu.cuEventDestroy(e1);
    ipc_cu.cuStreamDestroy(st);
}

typedef struct method {
    const char *name;
    unsigned flags;
    const char *chunk; /* PINPOOL_FANOUT_CHUNK for it, or NULL */
} method_t;

static const method_t methods[] = {
    {"direct (K x H2D)", PINPOOL_FANOUT_DIRECT, NULL},
    {"nccl (H2D+bcast)", PINPOOL_FANOUT_NCCL, NULL},
    {"pipelined 16MiB", PINPOOL_FANOUT_NCCL_PIPELINED, "16MiB"},
    {"pipelined 64MiB", PINPOOL_FANOUT_NCCL_PIPELINED, "64MiB"},
    {"pipelined 256MiB", PINPOOL_FANOUT_NCCL_PIPELINED, "256MiB"},
};
#define NMETHODS (sizeof(methods) / sizeof(methods[0]))

int main(int argc, char **argv)
{
    const char *socket = argc > 1 ? argv[1] : "-";
    uint64_t gib = argc > 2 ? strtoull(argv[2], NULL, 0) : 8;
    int reps = argc > 3 ? atoi(argv[3]) : 3;
    uint64_t bytes = gib << 30;
    char why[1024], nccl[1024];
    int ndev, devs[MAXD];
    void *dst[MAXD];
    char *src, *bounce;
    pinpool_ctx_t *ctx = NULL;
    bool dev_slices = false;
    int bad_total = 0;

    if (ipc_cuda_load(why, sizeof(why)) != 0)
        die("no GPU", why);
    ndev = ipc_cuda_device_count();
    if (ndev > MAXD)
        ndev = MAXD;
    if (reps < 1)
        reps = 1;
    printf("pinpool %s, CUDA driver %d, %d GPU(s); NCCL %s\n", pinpool_version(),
           ipc_cu.driver_version, ndev, pinpool_nccl_describe(nccl, sizeof(nccl)));
    for (int d = 0; d < ndev; d++) {
        CUdevice cd;
        char name[128], bus[32];
        CU(ipc_cu.cuDeviceGet(&cd, d));
        CU(ipc_cu.cuDeviceGetName(name, sizeof(name), cd));
        CU(ipc_cu.cuDeviceGetPCIBusId(bus, sizeof(bus), cd));
        printf("GPU %d: %s, PCI %s\n", d, name, bus);
        devs[d] = d;
    }

    /* Source: a pinned host slice of the pool, else cuMemHostAlloc. */
    pinpool_slice_t hs, ds[MAXD];
    if (strcmp(socket, "-") != 0) {
        ctx = pinpool_connect(socket);
        if (pinpool_err(ctx) != 0)
            die("connect", pinpool_errmsg(ctx));
        if (pinpool_alloc(ctx, bytes, NULL, &hs) != 0)
            die("host slice", pinpool_errmsg(ctx));
        src = hs.ptr;
        dev_slices = true;
        for (int d = 0; d < ndev && dev_slices; d++) {
            pinpool_alloc_opts_t o = {.device_id = d, .tag = "fanout"};
            if (pinpool_alloc(ctx, bytes, &o, &ds[d]) != 0) {
                printf("(no device slice on GPU %d: %s; using cuMemAlloc)\n", d, pinpool_errmsg(ctx));
                for (int k = 0; k < d; k++)
                    pinpool_free(ctx, ds[k].id, NULL);
                dev_slices = false;
            } else {
                dst[d] = ds[d].ptr;
            }
        }
        printf("source: pinpool host slice of %" PRIu64 " GiB; destinations: %s\n", gib,
               dev_slices ? "pinpool device slices (CUDA IPC)" : "cuMemAlloc");
    } else {
        ipc_cuda_use_device(0);
        CU(ipc_cu.cuMemHostAlloc((void **)&src, bytes, CU_MEMHOSTALLOC_PORTABLE));
        printf("source: cuMemHostAlloc of %" PRIu64 " GiB (portable); destinations: cuMemAlloc\n",
               gib);
    }
    if (!dev_slices)
        for (int d = 0; d < ndev; d++) {
            CUdeviceptr p;
            ipc_cuda_use_device(d);
            CU(ipc_cu.cuMemAlloc(&p, bytes));
            dst[d] = (void *)(uintptr_t)p;
        }
    ipc_cuda_use_device(0);
    uint64_t blen = 256ull << 20;
    CU(ipc_cu.cuMemHostAlloc((void **)&bounce, blen, CU_MEMHOSTALLOC_PORTABLE));
    fill((uint64_t *)src, bytes);
    if (ctx == NULL) {
        ctx = pinpool_connect("/nonexistent/pinpool.sock"); /* fan-out needs no daemon */
    }

    if (ndev >= 2) {
        CUdeviceptr a = (CUdeviceptr)(uintptr_t)dst[0], b = (CUdeviceptr)(uintptr_t)dst[1];
        uint64_t n = bytes < (1ull << 30) ? bytes : 1ull << 30;
        p2p(0, 1, n, a, b);
        p2p(1, 0, n, b, a);
    }

    /* 1 GPU, then all of them. */
    int sets[2] = {1, ndev};
    for (int si = 0; si < (ndev >= 2 ? 2 : 1); si++) {
        int k = sets[si];
        double t[NMETHODS][16];
        printf("\n== restore of %" PRIu64 " GiB to %d GPU(s) (%d reps, interleaved)\n", gib, k, reps);
        for (int rep = 0; rep < reps && rep < 16; rep++)
            for (size_t m = 0; m < NMETHODS; m++) {
                if (k == 1 && m > 0)
                    continue;
                if (methods[m].chunk != NULL)
                    setenv("PINPOOL_FANOUT_CHUNK", methods[m].chunk, 1);
                if (rep == reps - 1)
                    clear(k, devs, dst, bytes);
                double t0 = now_s();
                int rc = pinpool_fanout(ctx, src, bytes, k, devs, dst, methods[m].flags);
                t[m][rep] = now_s() - t0;
                unsetenv("PINPOOL_FANOUT_CHUNK");
                if (rc != 0) {
                    printf("  %-18s failed: %s\n", methods[m].name, pinpool_errmsg(ctx));
                    t[m][rep] = -1;
                    continue;
                }
                if (rep == reps - 1) {
                    uint64_t bad = 0;
                    for (int i = 0; i < k; i++)
                        bad += count_diff(devs[i], (CUdeviceptr)(uintptr_t)dst[i], src, bytes,
                                          bounce, blen);
                    if (bad != 0) {
                        printf("  %-18s BYTES DIFFER: %" PRIu64 "\n", methods[m].name, bad);
                        bad_total++;
                    }
                }
            }
        printf("  %-18s %10s %10s %12s %14s  %s\n", "method", "best s", "median s", "GB/s (best)",
               "delivered GB/s", "check");
        for (size_t m = 0; m < NMETHODS; m++) {
            if (k == 1 && m > 0)
                continue;
            int n = reps < 16 ? reps : 16;
            qsort(t[m], (size_t)n, sizeof(double), cmp_double);
            if (t[m][0] < 0 || t[m][n - 1] < 0) {
                printf("  %-18s failed\n", methods[m].name);
                continue;
            }
            printf("  %-18s %10.3f %10.3f %12.1f %14.1f  byte-exact on %d GPU(s)\n",
                   methods[m].name, t[m][0], t[m][n / 2], (double)bytes / t[m][0] / 1e9,
                   (double)bytes * k / t[m][0] / 1e9, k);
        }
        if (k >= 2) {
            unsigned choice;
            double g[PINPOOL_FANOUT_NMETHODS];
            clear(k, devs, dst, bytes);
            double t0 = now_s();
            int rc = pinpool_fanout(ctx, src, bytes, k, devs, dst, PINPOOL_FANOUT_AUTO);
            double t1 = now_s();
            rc = rc ? rc : pinpool_fanout(ctx, src, bytes, k, devs, dst, PINPOOL_FANOUT_AUTO);
            double t2 = now_s();
            if (rc != 0) {
                printf("  auto failed: %s\n", pinpool_errmsg(ctx));
                bad_total++;
            } else if (pinpool_fanout_choice(ctx, k, devs, bytes, &choice, g) == 0) {
                uint64_t bad = 0;
                for (int i = 0; i < k; i++)
                    bad += count_diff(devs[i], (CUdeviceptr)(uintptr_t)dst[i], src, bytes, bounce,
                                      blen);
                printf("  auto: measured direct %.1f, nccl %.1f, pipelined %.1f delivered GB/s "
                       "(on up to 1 GiB) -> %s; first call (calibration) %.3f s, next %.3f s "
                       "(%.1f GB/s)%s\n", g[1], g[2], g[3], pinpool_fanout_method_name(choice),
                       t1 - t0, t2 - t1, (double)bytes / (t2 - t1) / 1e9,
                       bad ? "; BYTES DIFFER" : ", byte-exact");
                bad_total += bad != 0;
            }
        }
    }
    if (dev_slices)
        for (int d = 0; d < ndev; d++)
            pinpool_free(ctx, ds[d].id, NULL);
    pinpool_close(ctx);
    printf("\n%s\n", bad_total ? "FAIL: some restores were not byte-exact" : "all restores byte-exact");
    return bad_total ? 1 : 0;
}

#else

int main(void)
{
    die("build", "this pinpool was built without CUDA support");
}

#endif
