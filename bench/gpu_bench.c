/*
 * gpu_bench.c - the GPU benchmarks of the CUDA data plane (bench/gpu_run runs them).
 *
 *   gpu_bench bandwidth SOCKET     H2D/D2H GB/s at 4 MiB, 64 MiB, 1 GiB through a
 *                                  pinpool host slice vs cuMemHostAlloc memory vs
 *                                  pageable malloc, interleaved in one run
 *   gpu_bench attach SOCKET GIB    ms/GiB to get a mapped slice of GIB GiB (CPU+GPU,
 *                                  GPU-only), a device slice, vs pinning in-process
 *   gpu_bench hostalloc GIB        seconds for cuMemHostAlloc of GIB GiB (the
 *                                  per-process pinning a pool replaces)
 *   gpu_bench first-alloc SOCKET T0_NS   connect (retrying) and allocate 1 MiB; print
 *                                  the seconds since T0_NS (CLOCK_REALTIME)
 *   gpu_bench attach-one SOCKET GIB cpu|gpu   one fresh process's attach: ms to
 *                                  allocate and map a GIB GiB host slice (CPU+GPU
 *                                  or GPU-only access), its context made before
 *   gpu_bench device-cached SOCKET median ms of a 2 MiB device slice once the
 *                                  IPC handle is open (20 calls), and the first
 *   gpu_bench probe STOPFILE       another process's pinning: cuMemHostAlloc and
 *                                  free of 2 MiB every 20 ms until STOPFILE
 *                                  exists (at most 60 s; STOPFILE.ready made at
 *                                  the first sample); prints samples, median,
 *                                  p90, max in ms
 *   gpu_bench gpu-used             GPU 0's used bytes (cuMemGetInfo), for the
 *                                  daemon's footprint: with it less without it
 * The lines bench/gpu_run parses start with "RESULT ".
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cudaload.h"
#include "benchutil.h"
#include "pinpool.h"

#define GiB (1024.0 * 1024 * 1024)

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "gpu_bench: %s: %s\n", what, msg);
    exit(1);
}

#ifdef PINPOOL_HAVE_CUDA

#define CU_FAIL(msg) die("CUDA", msg)

static pinpool_ctx_t *connect_or_die(const char *socket)
{
    pinpool_ctx_t *ctx = pinpool_connect(socket);
    if (pinpool_err(ctx) != 0)
        die("connect", pinpool_errmsg(ctx));
    return ctx;
}

/* One timed copy; returns milliseconds. */
static float timed_copy(CUstream st, CUevent e0, CUevent e1, CUdeviceptr dev, void *host, size_t n,
                        bool h2d)
{
    float ms;
    CU(cu_timed_copy(st, e0, e1, dev, host, n, h2d, &ms));
    return ms;
}

static int bandwidth(const char *socket)
{
    static const size_t sizes[] = {4u << 20, 64u << 20, 1u << 30};
    static const char *const kinds[] = {"pinpool slice", "cuMemHostAlloc", "pageable malloc"};
    const size_t max = 1u << 30;
    pinpool_ctx_t *ctx = connect_or_die(socket);
    pinpool_slice_t s;
    void *bufs[3];
    CUdeviceptr dev;
    CUstream st;
    CUevent e0, e1;

    if (pinpool_alloc(ctx, max, NULL, &s) != 0)
        die("pinpool_alloc", pinpool_errmsg(ctx));
    bufs[0] = s.ptr;
    CU(ipc_cu.cuMemHostAlloc(&bufs[1], max, 0));
    bufs[2] = malloc(max);
    for (int k = 0; k < 3; k++)
        memset(bufs[k], 1, max);
    CU(ipc_cu.cuMemAlloc(&dev, max));
    CU(ipc_cu.cuStreamCreate(&st, CU_STREAM_NON_BLOCKING));
    CU(ipc_cu.cuEventCreate(&e0, CU_EVENT_DEFAULT));
    CU(ipc_cu.cuEventCreate(&e1, CU_EVENT_DEFAULT));

    printf("%-9s %-4s %16s %16s %16s %10s\n", "size", "dir", "pinpool GB/s", "HostAlloc GB/s",
           "pageable GB/s", "pool/host");
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
        size_t n = sizes[si];
        int reps = n >= (1u << 30) ? 10 : n >= (64u << 20) ? 30 : 200;
        for (int dir = 0; dir < 2; dir++) {
            double *ms[3], med[3];
            for (int k = 0; k < 3; k++)
                ms[k] = calloc((size_t)reps, sizeof(double));
            for (int w = 0; w < 2; w++) /* warm-up */
                for (int k = 0; k < 3; k++)
                    timed_copy(st, e0, e1, dev, bufs[k], n, dir == 0);
            for (int r = 0; r < reps; r++) /* interleaved: drift hits all three alike */
                for (int k = 0; k < 3; k++)
                    ms[k][r] = timed_copy(st, e0, e1, dev, bufs[k], n, dir == 0);
            for (int k = 0; k < 3; k++) {
                qsort(ms[k], (size_t)reps, sizeof(double), cmp_double);
                med[k] = (double)n / (ms[k][reps / 2] / 1e3) / 1e9;
                free(ms[k]);
            }
            printf("%-9s %-4s %16.2f %16.2f %16.2f %9.1f%%\n",
                   n >= (1u << 30) ? "1 GiB" : n >= (64u << 20) ? "64 MiB" : "4 MiB",
                   dir == 0 ? "H2D" : "D2H", med[0], med[1], med[2], 100.0 * med[0] / med[1]);
        }
    }
    (void)kinds;
    ipc_cu.cuMemFree(dev);
    ipc_cu.cuMemFreeHost(bufs[1]);
    free(bufs[2]);
    pinpool_free(ctx, s.id, NULL);
    pinpool_close(ctx);
    return 0;
}

/* ms to allocate and map a slice of bytes with opts (the first use of its chunks). */
static double attach_ms(pinpool_ctx_t *ctx, uint64_t bytes, const pinpool_alloc_opts_t *o, bool keep)
{
    pinpool_slice_t s;
    double t0 = now_s();
    if (pinpool_alloc(ctx, bytes, o, &s) != 0)
        die("pinpool_alloc", pinpool_errmsg(ctx));
    double ms = (now_s() - t0) * 1e3;
    if (!keep)
        pinpool_free(ctx, s.id, NULL); /* unmaps: the next one maps afresh */
    return ms;
}

static int attach(const char *socket, double gib)
{
    uint64_t bytes = (uint64_t)(gib * GiB);
    pinpool_ctx_t *ctx = connect_or_die(socket);
    pinpool_alloc_opts_t cpu = {.device_id = PINPOOL_HOST};
    pinpool_alloc_opts_t gpu = {.device_id = PINPOOL_HOST, .flags = PINPOOL_ALLOC_GPU_ONLY};
    pinpool_alloc_opts_t dev = {.device_id = 0};
    pinpool_pool_info_t info;
    double t_cpu[3], t_gpu[3];

    if (pinpool_pool_info(ctx, &info) != 0)
        die("info", pinpool_errmsg(ctx));
    printf("host backend %s, %.1f GiB slices, median of 3\n", info.host_backend, gib);
    for (int i = 0; i < 3; i++) {
        t_cpu[i] = attach_ms(ctx, bytes, &cpu, false);
        t_gpu[i] = attach_ms(ctx, bytes, &gpu, false);
    }
    qsort(t_cpu, 3, sizeof(double), cmp_double);
    qsort(t_gpu, 3, sizeof(double), cmp_double);
    printf("%-44s %10.1f ms %10.2f ms/GiB\n", "host slice, CPU+GPU access", t_cpu[1], t_cpu[1] / gib);
    printf("%-44s %10.1f ms %10.2f ms/GiB\n", "host slice, GPU-only access", t_gpu[1], t_gpu[1] / gib);
    if (info.num_devices > 0) {
        double first = attach_ms(ctx, 64u << 20, &dev, false);
        double again = attach_ms(ctx, 64u << 20, &dev, true);
        printf("%-44s %10.3f ms\n", "device slice, first (opens the IPC handle)", first);
        printf("%-44s %10.3f ms\n", "device slice, next (handle cached)", again);
    }
    pinpool_pool_info_free(&info);

    /* What a process pays without the pool. */
    void *p;
    double t0 = now_s();
    CU(ipc_cu.cuMemHostAlloc(&p, bytes, 0));
    double t_alloc = (now_s() - t0) * 1e3;
    ipc_cu.cuMemFreeHost(p);
    char *m = malloc(bytes);
    memset(m, 1, bytes);
    t0 = now_s();
    CU(ipc_cu.cuMemHostRegister(m, bytes, 0));
    double t_reg = (now_s() - t0) * 1e3;
    ipc_cu.cuMemHostUnregister(m);
    free(m);
    printf("%-44s %10.1f ms %10.2f ms/GiB\n", "baseline: cuMemHostAlloc in the process", t_alloc, t_alloc / gib);
    printf("%-44s %10.1f ms %10.2f ms/GiB\n", "baseline: cuMemHostRegister of touched malloc", t_reg, t_reg / gib);
    pinpool_close(ctx);
    return 0;
}

static int hostalloc(double gib)
{
    void *p;
    double t0 = now_s();
    CU(ipc_cu.cuMemHostAlloc(&p, (size_t)(gib * GiB), 0));
    double t = now_s() - t0;
    printf("cuMemHostAlloc %.3g GiB: %.2f s (%.2f GiB/s)\n", gib, t, gib / t);
    printf("RESULT hostalloc %.4f s\n", t);
    ipc_cu.cuMemFreeHost(p);
    return 0;
}

static int first_alloc(const char *socket, long long t0_ns)
{
    pinpool_slice_t s;
    struct timespec t;

    for (int i = 0; i < 2000; i++) {
        pinpool_ctx_t *ctx = pinpool_connect(socket);
        if (pinpool_err(ctx) == 0 && pinpool_alloc(ctx, 1 << 20, NULL, &s) == 0) {
            clock_gettime(CLOCK_REALTIME, &t);
            double secs = ((double)t.tv_sec * 1e9 + (double)t.tv_nsec - (double)t0_ns) / 1e9;
            printf("first allocation served %.3f s after the daemon started\n", secs);
            printf("RESULT first-alloc %.3f s\n", secs);
            pinpool_free(ctx, s.id, NULL);
            pinpool_close(ctx);
            return 0;
        }
        pinpool_close(ctx);
        usleep(5000);
    }
    die("first-alloc", "the daemon never served");
    return 1;
}

static int attach_one(const char *socket, double gib, bool gpu_only)
{
    pinpool_ctx_t *ctx = connect_or_die(socket);
    pinpool_alloc_opts_t o = {.device_id = PINPOOL_HOST,
                              .flags = gpu_only ? PINPOOL_ALLOC_GPU_ONLY : 0};
    double ms = attach_ms(ctx, (uint64_t)(gib * GiB), &o, false);

    printf("RESULT attach %s %.3f ms %.3f ms/GiB\n", gpu_only ? "gpu" : "cpu", ms, ms / gib);
    pinpool_close(ctx);
    return 0;
}

static int device_cached(const char *socket)
{
    pinpool_ctx_t *ctx = connect_or_die(socket);
    pinpool_alloc_opts_t dev = {.device_id = 0};
    double t[20];
    double first = attach_ms(ctx, 2u << 20, &dev, false);

    for (int i = 0; i < 20; i++)
        t[i] = attach_ms(ctx, 2u << 20, &dev, false);
    qsort(t, 20, sizeof(double), cmp_double);
    printf("RESULT device-cached %.3f ms (first %.3f ms, max %.3f ms)\n", t[10], first, t[19]);
    pinpool_close(ctx);
    return 0;
}

static int probe(const char *stop)
{
    static double ms[3000];
    int n = 0;
    double t0 = now_s();

    while (n < 3000 && access(stop, F_OK) != 0 && now_s() - t0 < 60) {
        void *p;
        double a = now_s();
        CU(ipc_cu.cuMemHostAlloc(&p, 2u << 20, 0));
        ms[n++] = (now_s() - a) * 1e3;
        ipc_cu.cuMemFreeHost(p);
        if (n == 1) { /* STOPFILE.ready: sampling has begun (its context is made) */
            char ready[512];
            snprintf(ready, sizeof(ready), "%s.ready", stop);
            FILE *f = fopen(ready, "w");
            if (f != NULL)
                fclose(f);
        }
        usleep(20000);
    }
    if (n == 0)
        die("probe", "no sample");
    qsort(ms, (size_t)n, sizeof(double), cmp_double);
    printf("RESULT probe %d samples median %.3f ms p90 %.3f ms max %.3f ms\n", n, ms[n / 2],
           ms[n * 9 / 10], ms[n - 1]);
    return 0;
}

static int gpu_used(void)
{
    size_t f = 0, t = 0;

    CU(ipc_cu.cuMemGetInfo(&f, &t));
    printf("RESULT gpu-used %zu bytes of %zu\n", t - f, t);
    return 0;
}

int main(int argc, char **argv)
{
    char why[256];

    if (argc < 2 || (argc < 3 && strcmp(argv[1], "gpu-used") != 0))
        die("usage", "see the comment at the top of bench/gpu_bench.c");
    if (ipc_cuda_load(why, sizeof(why)) != 0)
        die("no GPU", why);
    ipc_cuda_use_device(0);
    if (strcmp(argv[1], "attach-one") == 0 && argc > 4)
        return attach_one(argv[2], atof(argv[3]), strcmp(argv[4], "gpu") == 0);
    if (strcmp(argv[1], "device-cached") == 0)
        return device_cached(argv[2]);
    if (strcmp(argv[1], "probe") == 0)
        return probe(argv[2]);
    if (strcmp(argv[1], "gpu-used") == 0)
        return gpu_used();
    if (strcmp(argv[1], "bandwidth") == 0)
        return bandwidth(argv[2]);
    if (strcmp(argv[1], "attach") == 0 && argc > 3)
        return attach(argv[2], atof(argv[3]));
    if (strcmp(argv[1], "hostalloc") == 0)
        return hostalloc(atof(argv[2]));
    if (strcmp(argv[1], "first-alloc") == 0 && argc > 3)
        return first_alloc(argv[2], atoll(argv[3]));
    die("usage", "unknown command");
    return 1;
}

#else

int main(void)
{
    die("gpu_bench", "this pinpool was built without CUDA support");
    return 1;
}

#endif
