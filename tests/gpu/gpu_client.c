/*
 * gpu_client.c - one client process for the GPU tests (tests/gpu/run).
 *
 *   gpu_client SOCKET host-write  TAG BYTES SEED [gpu-only]  keep a host slice, write it by DMA
 *   gpu_client SOCKET host-verify TAG BYTES SEED [gpu-only]  attach it, check with CPU and CUDA, free
 *   gpu_client SOCKET dev-write   TAG GPU BYTES SEED         keep a device slice, write it
 *   gpu_client SOCKET dev-verify  TAG GPU BYTES SEED         attach it, check, free
 *   gpu_client SOCKET dev-ro      TAG GPU BYTES SEED         attach it read-only, check every byte
 *   gpu_client SOCKET dev-rowrite TAG GPU BYTES              attach it read-only and write through
 *                                 the mapping: "ok" when CUDA refuses (the stand-in driver's
 *                                 process dies of SIGSEGV instead), FAIL when the write works
 *   gpu_client SOCKET dev-remap   TAG GPU BYTES SEED         attach read-only, check, unmap, remap
 *                                 (pinpool_dev_unmap/remap), check every byte at the same address
 *   gpu_client SOCKET hold BYTES                             allocate, print "held", sleep
 *   gpu_client SOCKET used                                   print the pool's used bytes
 *   gpu_client SOCKET devinfo                                print each GPU pool's use
 *   gpu_client SOCKET fanout METHOD BYTES GPUS [SEED]        host slice -> device slices on
 *                      GPUS (e.g. 0,1) with pinpool_fanout (auto|direct|nccl|pipelined),
 *                      then check every GPU byte for byte and free
 *   gpu_client SOCKET swap-pause  TAG BYTES SEED [spillable]   swap buffers (BYTES is the large
 *                                 one): fill, pause (release), resume here, check, pause again
 *                                 (spillable: the copy released to the daemon), exit
 *   gpu_client SOCKET swap-resume TAG BYTES SEED   the same buffers made anew: resume the copy the
 *                                 other process left (4 streams, 1 MiB pieces), check, drop it
 *   gpu_client SOCKET swap-none   TAG              resume of a tag nobody paused: PINPOOL_ENOKEY
 *   gpu_client SOCKET tms-pause   TAG BYTES SEED [cpu|disk]  torch_memory_saver's allocator
 *                                 (pinpool_tms_*): a region of TAG, three allocations as
 *                                 torch's would be (2 MiB, BYTES, 4 MiB + 4 KiB), filled, one
 *                                 more freed; pause (GPU memory given back), exit paused
 *   gpu_client SOCKET tms-resume  TAG BYTES SEED [cpu|disk] [other]  the same allocations in a
 *                                 new process, resume, check every byte and that the copy is
 *                                 gone; other: a different second size, the resume must refuse
 *   gpu_client SOCKET man-publish NAME GPU|host BYTES SEED  a tensor manifest (pinpool_manifest_*):
 *                                 "big" F32 of BYTES, "small" BF16 [3,1000], "tied" (an alias of
 *                                 big), "step" an I64 scalar, on GPU (its device pool) or the
 *                                 host pool, written with pinpool_manifest_write, committed
 *   gpu_client SOCKET man-verify  NAME GPU BYTES SEED [write]  open the current version, attach it
 *                                 on GPU (a device manifest where it is, a host one copied), read
 *                                 every tensor back (cuMemcpyDtoH) and compare, verify; write: a
 *                                 byte of "big" written through this reader's pointer: a vmm
 *                                 device pool's read-only mapping refuses it ("ok ... refused";
 *                                 the stand-in driver's SIGSEGV counts as the refusal, and the
 *                                 reader still closes); where it goes through (ipc), verify must
 *                                 name it, then put back
 *   gpu_client SOCKET man-drop    NAME             drop every version of NAME
 *
 * Each command is its own process (CUDA and gRPC are never forked).  Prints
 * one line "ok ..." and exits 0, or "FAIL ..." and exits 1.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchutil.h"
#include "cudaload.h"
#include "pinpool.h"

#define FAIL(...)                                                                              \
    do {                                                                                       \
        printf("FAIL ");                                                                       \
        printf(__VA_ARGS__);                                                                   \
        printf("\n");                                                                          \
        exit(1);                                                                               \
    } while (0)

#ifdef PINPOOL_HAVE_CUDA

#define CU_FAIL(msg) FAIL("%s", msg)

static void fill(uint64_t *p, uint64_t bytes, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (uint64_t i = 0; i < bytes / 8; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[i] = x;
    }
}

static uint64_t count_bad(const uint64_t *p, const uint64_t *want, uint64_t bytes)
{
    uint64_t bad = 0;
    for (uint64_t i = 0; i < bytes / 8; i++)
        bad += p[i] != want[i];
    return bad;
}

static pinpool_ctx_t *connect_or_die(const char *socket)
{
    pinpool_ctx_t *ctx = pinpool_connect(socket);
    if (pinpool_err(ctx) != 0)
        FAIL("connect: %s", pinpool_errmsg(ctx));
    return ctx;
}

/* The manifest test's tensors: sizes in bytes and seeds of their patterns. */
#define MAN_N 4
static void man_layout(pinpool_tensor_desc_t *d, uint64_t bytes)
{
    memset(d, 0, MAN_N * sizeof(*d));
    d[0] = (pinpool_tensor_desc_t){.name = "big", .dtype = PINPOOL_DTYPE_F32, .ndim = 1,
                                   .shape = {(int64_t)(bytes / 4)}};
    d[1] = (pinpool_tensor_desc_t){.name = "small", .dtype = PINPOOL_DTYPE_BF16, .ndim = 2,
                                   .shape = {3, 1000}};
    d[2] = (pinpool_tensor_desc_t){.name = "tied", .dtype = PINPOOL_DTYPE_F32, .ndim = 1,
                                   .shape = {(int64_t)(bytes / 4)}, .flags = PINPOOL_TENSOR_ALIAS,
                                   .alias_of = 0};
    d[3] = (pinpool_tensor_desc_t){.name = "step", .dtype = PINPOOL_DTYPE_I64, .ndim = 0};
}

static const uint64_t man_seed_add[MAN_N] = {0, 1, 0, 2};

static sigjmp_buf segv_at;

static void on_segv(int sig)
{
    (void)sig;
    siglongjmp(segv_at, 1);
}

/* One byte written to device address at, and waited for: CUDA's answer, or
 * CUDA_ERROR_ILLEGAL_ADDRESS when the write faulted in this process (the
 * stand-in driver's device memory is host memory: a read-only mapping
 * raises SIGSEGV). */
static CUresult write_byte(CUdeviceptr at, unsigned char b)
{
    struct sigaction sa, old;
    volatile CUresult r = CUDA_ERROR_ILLEGAL_ADDRESS;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, &old);
    if (sigsetjmp(segv_at, 1) == 0) {
        r = ipc_cu.cuMemcpyHtoD(at, &b, 1);
        if (r == CUDA_SUCCESS)
            r = ipc_cu.cuCtxSynchronize();
    }
    sigaction(SIGSEGV, &old, NULL);
    return r;
}

static int man_cmd(const char *socket, const char *cmd, const char *name, const char *where,
                   uint64_t bytes, uint64_t seed, bool write)
{
    pinpool_tensor_desc_t d[MAN_N];
    pinpool_ctx_t *ctx = connect_or_die(socket);
    int gpu = strcmp(where, "host") == 0 ? PINPOOL_HOST : atoi(where);

    bytes &= ~7ull;
    man_layout(d, bytes);
    if (strcmp(cmd, "man-drop") == 0) {
        if (pinpool_manifest_drop(ctx, name, 0, 0) != 0)
            FAIL("drop: %s", pinpool_errmsg(ctx));
        printf("ok dropped %s\n", name);
        pinpool_close(ctx);
        return 0;
    }
    if (strcmp(cmd, "man-publish") == 0) {
        pinpool_manifest_opts_t o = {.device_id = gpu};
        pinpool_publish_t *pub;
        double t0 = now_s();
        if (pinpool_manifest_begin(ctx, name, &o, &pub) != 0)
            FAIL("begin: %s", pinpool_errmsg(ctx));
        for (int i = 0; i < MAN_N; i++)
            if (pinpool_manifest_add(pub, &d[i], NULL) != 0)
                FAIL("add %s: %s", d[i].name, pinpool_errmsg(ctx));
        if (pinpool_manifest_alloc(pub) != 0)
            FAIL("alloc: %s", pinpool_errmsg(ctx));
        for (uint32_t i = 0; i < MAN_N; i++) {
            pinpool_tensor_t t;
            pinpool_manifest_dest(pub, i, &t);
            if (d[i].flags & PINPOOL_TENSOR_ALIAS)
                continue;
            uint64_t *src = malloc(t.nbytes + 8);
            if (src == NULL)
                FAIL("out of memory");
            fill(src, (t.nbytes + 7) & ~7ull, seed + man_seed_add[i]);
            if (pinpool_manifest_write(pub, i, src, t.nbytes) != 0)
                FAIL("write %s: %s", t.name, pinpool_errmsg(ctx));
            free(src);
        }
        uint64_t v = 0;
        double t1 = now_s();
        if (pinpool_manifest_commit(pub, &v) != 0)
            FAIL("commit: %s", pinpool_errmsg(ctx));
        printf("ok published %s version %" PRIu64 " on %s: %" PRIu64 " bytes, write %.3f s, commit "
               "(hashes) %.3f s\n", name, v, where, bytes, t1 - t0, now_s() - t1);
        pinpool_close(ctx);
        return 0;
    }
    pinpool_manifest_t *m;
    pinpool_manifest_info_t info;
    double t0 = now_s();
    if (pinpool_manifest_open(ctx, name, 0, &m) != 0)
        FAIL("open: %s", pinpool_errmsg(ctx));
    if (pinpool_manifest_attach(m, gpu) != 0)
        FAIL("attach on GPU %d: %s", gpu, pinpool_errmsg(ctx));
    double t1 = now_s();
    pinpool_manifest_info(m, &info);
    for (uint32_t i = 0; i < MAN_N; i++) {
        pinpool_tensor_t t;
        uint32_t k;
        if (pinpool_manifest_find(m, d[i].name, &k) != 0 || pinpool_manifest_tensor(m, k, &t) != 0)
            FAIL("tensor %s: %s", d[i].name, pinpool_errmsg(ctx));
        uint64_t n = (t.nbytes + 7) & ~7ull;
        uint64_t *want = malloc(n), *back = calloc(1, n);
        if (want == NULL || back == NULL)
            FAIL("out of memory");
        fill(want, n, seed + man_seed_add[i]);
        CU(ipc_cu.cuMemcpyDtoH(back, (CUdeviceptr)(uintptr_t)t.ptr, t.nbytes));
        if (memcmp(back, want, t.nbytes) != 0)
            FAIL("tensor %s of %s: bytes differ", t.name, name);
        free(want);
        free(back);
    }
    if (pinpool_manifest_verify(m, NULL) != 0)
        FAIL("verify: %s", pinpool_errmsg(ctx));
    if (write) {
        pinpool_tensor_t t;
        unsigned char b, old;
        pinpool_manifest_tensor(m, 0, &t);
        CUdeviceptr at = (CUdeviceptr)(uintptr_t)t.ptr + t.nbytes / 2;
        CU(ipc_cu.cuMemcpyDtoH(&old, at, 1));
        b = (unsigned char)(old ^ 0x5a);
        CUresult r = write_byte(at, b); /* through this reader's pointer */
        if (r != CUDA_SUCCESS) {
            char buf[160];
            printf("ok a write through the reader's pointer to %s was refused (read-only "
                   "mapping): %s\n", name, ipc_cuda_strerror(r, "cuMemcpyHtoD", buf, sizeof(buf)));
            pinpool_manifest_close(m); /* the reader's marker goes; the CUDA context is broken */
            pinpool_close(ctx);
            return 0;
        }
        int rc = pinpool_manifest_verify(m, NULL);
        if (rc == 0 || strstr(pinpool_errmsg(ctx), "tensor 'big'") == NULL)
            FAIL("a write through the reader's pointer was not found (%d: %s)", rc, pinpool_errmsg(ctx));
        CU(ipc_cu.cuMemcpyHtoD(at, &old, 1));
        if (pinpool_manifest_verify(m, NULL) != 0)
            FAIL("verify after putting the byte back: %s", pinpool_errmsg(ctx));
    }
    printf("ok verified %s version %" PRIu64 " (%s manifest) on GPU %d%s: open+attach %.4f s for %"
           PRIu64 " bytes%s\n", name, info.version, info.device_id < 0 ? "host" : "device", gpu,
           info.device_id < 0 ? " (copied)" : " (no copy)", t1 - t0, info.data_bytes,
           write ? "; a write through the reader's pointer was found by verify, naming the tensor" : "");
    pinpool_manifest_close(m);
    pinpool_close(ctx);
    return 0;
}

/* Every byte of the device slice at p against want (through a device copy). */
static uint64_t dev_bad(CUdeviceptr p, CUdeviceptr scratch, uint64_t *back, const uint64_t *want,
                        uint64_t bytes)
{
    memset(back, 0, bytes);
    CU(ipc_cu.cuMemcpyDtoD(scratch, p, bytes));
    CU(ipc_cu.cuMemcpyDtoH(back, scratch, bytes));
    return count_bad(back, want, bytes);
}

/* dev-ro, dev-rowrite, dev-remap: a reader of a kept device slice (vmm pool). */
static int dev_reader(const char *socket, const char *cmd, const char *tag, int gpu,
                      uint64_t bytes, uint64_t seed)
{
    uint64_t *want = malloc(bytes), *back = malloc(bytes);
    pinpool_ctx_t *ctx;
    pinpool_slice_t s;
    CUdeviceptr scratch, p;
    uint64_t bad;

    ipc_cuda_use_device(gpu);
    if (want == NULL || back == NULL)
        FAIL("out of memory");
    fill(want, bytes, seed);
    CU(ipc_cu.cuMemAlloc(&scratch, bytes));
    ctx = connect_or_die(socket);
    if (pinpool_attach(ctx, tag, 0, &s) != 0)
        FAIL("attach: %s", pinpool_errmsg(ctx));
    p = (CUdeviceptr)(uintptr_t)s.ptr;
    if (strcmp(cmd, "dev-rowrite") == 0) {
        signal(SIGSEGV, SIG_DFL); /* the stand-in's fault kills, under a sanitizer too */
        CUresult r = ipc_cu.cuMemsetD8(p, 0xee, bytes);
        if (r == CUDA_SUCCESS)
            r = ipc_cu.cuCtxSynchronize();
        if (r == CUDA_SUCCESS)
            FAIL("a write through the read-only mapping of slice %" PRIx64 " succeeded", s.id);
        char buf[160];
        printf("ok write through the read-only mapping refused: %s\n",
               ipc_cuda_strerror(r, "cuMemsetD8", buf, sizeof(buf)));
        fflush(stdout);
        _exit(0); /* the context is broken now: nothing more of it */
    }
    bad = dev_bad(p, scratch, back, want, bytes);
    if (bad != 0)
        FAIL("read-only slice %" PRIx64 ": %" PRIu64 " words of %" PRIu64 " differ", s.id, bad,
             bytes / 8);
    if (strcmp(cmd, "dev-remap") == 0) {
        if (pinpool_dev_unmap(ctx, s.id) != 0)
            FAIL("unmap: %s", pinpool_errmsg(ctx));
        if (pinpool_dev_remap(ctx, s.id) != 0)
            FAIL("remap: %s", pinpool_errmsg(ctx));
        bad = dev_bad(p, scratch, back, want, bytes);
        if (bad != 0)
            FAIL("slice %" PRIx64 " after unmap/remap at 0x%llx: %" PRIu64 " words differ", s.id,
                 (unsigned long long)p, bad);
        printf("ok unmapped and remapped slice %" PRIx64 " at the same address 0x%llx, %" PRIu64
               " bytes intact\n", s.id, (unsigned long long)p, bytes);
    } else {
        printf("ok read-only attach of slice %" PRIx64 " at 0x%llx: %" PRIu64 " bytes checked\n",
               s.id, (unsigned long long)p, bytes);
    }
    pinpool_detach(ctx, s.id);
    pinpool_close(ctx);
    ipc_cu.cuMemFree(scratch);
    free(want);
    free(back);
    return 0;
}

/* The fan-out test: a host slice onto device slices of GPUS, checked on each. */
static int fanout(const char *socket, const char *method, uint64_t bytes, const char *gpus,
                  uint64_t seed)
{
    int devs[PINPOOL_MAX_DEVICES], n = 0;
    void *dst[PINPOOL_MAX_DEVICES];
    pinpool_slice_t hs, ds[PINPOOL_MAX_DEVICES];
    unsigned flags = PINPOOL_FANOUT_AUTO;
    char list[64], *save = NULL;

    for (unsigned m = 0; m < PINPOOL_FANOUT_NMETHODS; m++)
        if (strcmp(method, pinpool_fanout_method_name(m)) == 0 ||
            (m == PINPOOL_FANOUT_NCCL_PIPELINED && strcmp(method, "pipelined") == 0))
            flags = m;
    snprintf(list, sizeof(list), "%s", gpus);
    for (char *t = strtok_r(list, ",", &save); t != NULL && n < PINPOOL_MAX_DEVICES;
         t = strtok_r(NULL, ",", &save))
        devs[n++] = atoi(t);
    pinpool_ctx_t *ctx = connect_or_die(socket);
    if (pinpool_alloc(ctx, bytes, NULL, &hs) != 0)
        FAIL("host alloc: %s", pinpool_errmsg(ctx));
    fill(hs.ptr, bytes, seed);
    for (int i = 0; i < n; i++) {
        pinpool_alloc_opts_t o = {.device_id = devs[i], .tag = "fanout-test"};
        if (pinpool_alloc(ctx, bytes, &o, &ds[i]) != 0)
            FAIL("device alloc on GPU %d: %s", devs[i], pinpool_errmsg(ctx));
        dst[i] = ds[i].ptr;
        ipc_cuda_use_device(devs[i]);
        CU(ipc_cu.cuMemsetD8((CUdeviceptr)(uintptr_t)dst[i], 0xa5, bytes));
        CU(ipc_cu.cuCtxSynchronize());
    }
    if (pinpool_fanout(ctx, hs.ptr, bytes, n, devs, dst, flags) != 0)
        FAIL("fanout %s: %s", method, pinpool_errmsg(ctx));
    /* Twice: the second call reuses the streams, communicator and AUTO's choice. */
    if (pinpool_fanout(ctx, hs.ptr, bytes, n, devs, dst, flags) != 0)
        FAIL("fanout %s (again): %s", method, pinpool_errmsg(ctx));
    uint64_t *back = malloc(bytes);
    if (back == NULL)
        FAIL("out of memory");
    unsigned chosen = flags;
    pinpool_fanout_choice(ctx, n, devs, bytes, &chosen, NULL);
    for (int i = 0; i < n; i++) {
        memset(back, 0, bytes);
        ipc_cuda_use_device(devs[i]);
        CU(ipc_cu.cuMemcpyDtoH(back, (CUdeviceptr)(uintptr_t)dst[i], bytes));
        uint64_t bad = count_bad(back, hs.ptr, bytes);
        if (bad != 0)
            FAIL("fanout %s: GPU %d: %" PRIu64 " words differ", method, devs[i], bad);
    }
    for (int i = 0; i < n; i++)
        if (pinpool_free(ctx, ds[i].id, NULL) != 0)
            FAIL("free: %s", pinpool_errmsg(ctx));
    pinpool_free(ctx, hs.id, NULL);
    printf("ok fanout %s (ran %s) of %" PRIu64 " bytes to GPUs %s: byte-exact on each\n", method,
           pinpool_fanout_method_name(chosen), bytes, gpus);
    free(back);
    pinpool_close(ctx);
    return 0;
}

/* The swap test's buffers: two small ones (sharing a granule), a large one of
 * BYTES, and one the process allocates itself (registered, never released). */
#define SWAP_NBUF 4
static const uint64_t swap_small[2] = {4096, 100004};
#define SWAP_EXT_BYTES (8u << 20)

static uint64_t swap_size(int i, uint64_t bytes)
{
    return i < 2 ? swap_small[i] : i == 2 ? bytes : SWAP_EXT_BYTES;
}

static void swap_make(pinpool_ctx_t *ctx, const char *tag, uint64_t bytes, uint64_t *d)
{
    for (int i = 0; i < SWAP_NBUF - 1; i++)
        if (pinpool_swap_alloc(ctx, tag, 0, swap_size(i, bytes), &d[i]) != 0)
            FAIL("pinpool_swap_alloc: %s", pinpool_errmsg(ctx));
    CUdeviceptr ext;
    CU(ipc_cu.cuMemAlloc(&ext, SWAP_EXT_BYTES));
    d[SWAP_NBUF - 1] = ext;
    if (pinpool_swap_register(ctx, tag, 0, d[SWAP_NBUF - 1], SWAP_EXT_BYTES) != 0)
        FAIL("pinpool_swap_register: %s", pinpool_errmsg(ctx));
}

/* Words of the buffers that differ from the pattern of seed. */
static uint64_t swap_check(const uint64_t *d, uint64_t bytes, uint64_t seed)
{
    uint64_t bad = 0;
    for (int i = 0; i < SWAP_NBUF; i++) {
        uint64_t n = swap_size(i, bytes);
        uint64_t *want = calloc(1, n + 8), *back = calloc(1, n + 8);
        if (want == NULL || back == NULL)
            FAIL("out of memory");
        fill(want, n, seed + (uint64_t)i);
        CU(ipc_cu.cuMemcpyDtoH(back, d[i], n));
        bad += count_bad(back, want, n);
        bad += memcmp((char *)back + n / 8 * 8, (char *)want + n / 8 * 8, n % 8) != 0;
        free(want);
        free(back);
    }
    return bad;
}

static int swap_cmd(const char *socket, const char *cmd, const char *tag, uint64_t bytes, uint64_t seed,
                    bool spillable)
{
    pinpool_ctx_t *ctx = connect_or_die(socket);
    uint64_t d[SWAP_NBUF];
    pinpool_swap_info_t info;
    CUstream st;
    uint64_t bad;

    CU(ipc_cu.cuStreamCreate(&st, CU_STREAM_NON_BLOCKING));
    if (strcmp(cmd, "swap-none") == 0) {
        uint64_t p;
        if (pinpool_swap_alloc(ctx, tag, 0, 4096, &p) != 0)
            FAIL("pinpool_swap_alloc: %s", pinpool_errmsg(ctx));
        int rc = pinpool_swap_resume(ctx, tag, st, 0);
        if (rc != PINPOOL_ENOKEY)
            FAIL("resume of a tag nobody paused: %s, want PINPOOL_ENOKEY", pinpool_err_name(rc));
        printf("ok resume of an unknown tag: %s (%s)\n", pinpool_err_name(rc), pinpool_errmsg(ctx));
        pinpool_swap_drop(ctx, tag, 0);
        pinpool_close(ctx);
        ipc_cu.cuStreamDestroy(st);
        return 0;
    }
    swap_make(ctx, tag, bytes, d);
    if (strcmp(cmd, "swap-pause") == 0) {
        for (int i = 0; i < SWAP_NBUF; i++) {
            uint64_t n = swap_size(i, bytes);
            uint64_t *w = calloc(1, n + 8);
            fill(w, n, seed + (uint64_t)i);
            CU(ipc_cu.cuMemcpyHtoD(d[i], w, n));
            free(w);
        }
        if (pinpool_swap_pause(ctx, tag, st, PINPOOL_SWAP_RELEASE) != 0 || pinpool_swap_wait(ctx, tag) != 0)
            FAIL("pause: %s", pinpool_errmsg(ctx));
        if (pinpool_swap_info(ctx, tag, &info) != 0 || info.state != PINPOOL_SWAP_PAUSED ||
            !info.released || info.device_bytes != 0 || info.host_slice_id == 0)
            FAIL("after pause: state %d released %d device_bytes %" PRIu64, info.state, info.released,
                 info.device_bytes);
        CU(ipc_cu.cuMemsetD8(d[SWAP_NBUF - 1], 0, SWAP_EXT_BYTES)); /* ours: clobber it */
        if (pinpool_swap_pause(ctx, tag, st, 0) != PINPOOL_EINVAL)
            FAIL("a second pause was not refused");
        if (pinpool_swap_resume(ctx, tag, st, PINPOOL_SWAP_KEEP_HOST) != 0 || pinpool_swap_wait(ctx, tag) != 0)
            FAIL("resume: %s", pinpool_errmsg(ctx));
        bad = swap_check(d, bytes, seed); /* same addresses, fresh device memory */
        if (bad != 0)
            FAIL("%" PRIu64 " words differ after pause/resume in one process", bad);
        uint32_t last = PINPOOL_SWAP_RELEASE | (spillable ? PINPOOL_SWAP_SPILLABLE : 0);
        if (pinpool_swap_pause(ctx, tag, st, last) != 0 || pinpool_swap_wait(ctx, tag) != 0)
            FAIL("pause again: %s", pinpool_errmsg(ctx));
        char key[64];
        snprintf(key, sizeof(key), PINPOOL_SWAP_KEY_PREFIX "%s", tag);
        if (spillable && pinpool_exists(ctx, key) != 1)
            FAIL("the spillable copy is not a released object under %s", key);
        printf("ok paused tag %s: %" PRIu64 " bytes in %d buffers, round trip in-process intact%s\n", tag,
               info.bytes, SWAP_NBUF, spillable ? ", copy released to the daemon" : "");
        pinpool_close(ctx); /* exits with the copy kept (or released) in the daemon */
        ipc_cu.cuMemFree(d[SWAP_NBUF - 1]);
        ipc_cu.cuStreamDestroy(st);
        return 0;
    }
    CU(ipc_cu.cuMemsetD8(d[2], 0xee, bytes));
    if (pinpool_swap_config(ctx, 4, 1u << 20) != 0)
        FAIL("config: %s", pinpool_errmsg(ctx));
    if (pinpool_swap_resume(ctx, tag, st, 0) != 0)
        FAIL("resume across processes: %s", pinpool_errmsg(ctx));
    if (pinpool_swap_wait(ctx, tag) != 0)
        FAIL("wait: %s", pinpool_errmsg(ctx));
    bad = swap_check(d, bytes, seed);
    if (bad != 0)
        FAIL("%" PRIu64 " words differ after a resume in another process", bad);
    if (pinpool_swap_info(ctx, tag, &info) != 0 || info.state != PINPOOL_SWAP_RESIDENT || info.host_slice_id != 0)
        FAIL("after resume: state %d host slice %" PRIu64, info.state, info.host_slice_id);
    if (pinpool_swap_drop(ctx, tag, PINPOOL_SWAP_FREE_HOST) != 0)
        FAIL("drop: %s", pinpool_errmsg(ctx));
    ipc_cu.cuMemFree(d[SWAP_NBUF - 1]);
    printf("ok resumed tag %s in a new process over 4 streams, %d buffers intact\n", tag, SWAP_NBUF);
    pinpool_close(ctx);
    ipc_cu.cuStreamDestroy(st);
    return 0;
}

/* The torch_memory_saver allocator's test (tms-pause, tms-resume): what torch
 * would ask for in a region, in the same order in both processes. */
#define TMS_NBUF 3

static uint64_t tms_size(int i, uint64_t bytes)
{
    return i == 0 ? 2u << 20 : i == 1 ? bytes : (4u << 20) + 4096;
}

static int tms_cmd(const char *socket, const char *cmd, const char *tag, uint64_t bytes, uint64_t seed,
                   int backup, bool other)
{
    pinpool_tms_region_t r = {.backup = backup, .active = 1};
    pinpool_tms_usage_t u;
    uint64_t d[TMS_NBUF];
    bool pause_cmd = strcmp(cmd, "tms-pause") == 0;

    snprintf(r.tag, sizeof(r.tag), "%s", tag);
    if (pinpool_tms_connect(socket) != 0 || pinpool_tms_set_region(&r, NULL) != 0)
        FAIL("tms: %s", pinpool_tms_errmsg());
    if (pause_cmd) { /* a block torch frees again before the pause: never copied */
        void *gone = pinpool_tms_malloc(8u << 20, 0, NULL);
        if (gone == NULL)
            FAIL("pinpool_tms_malloc: %s", pinpool_tms_errmsg());
        pinpool_tms_free(gone, 8u << 20, 0, NULL);
    }
    for (int i = 0; i < TMS_NBUF; i++) {
        uint64_t n = tms_size(i, bytes) + (other && i == 1 ? 2u << 20 : 0);
        void *p = pinpool_tms_malloc((ssize_t)n, 0, NULL);
        if (p == NULL)
            FAIL("pinpool_tms_malloc(%" PRIu64 "): %s", n, pinpool_tms_errmsg());
        d[i] = (uint64_t)(uintptr_t)p;
    }
    if (pause_cmd) {
        for (int i = 0; i < TMS_NBUF; i++) {
            uint64_t n = tms_size(i, bytes);
            uint64_t *w = calloc(1, n + 8);
            fill(w, n, seed + (uint64_t)i);
            CU(ipc_cu.cuMemcpyHtoD(d[i], w, n));
            free(w);
        }
        if (pinpool_tms_pause(tag) != 0)
            FAIL("pause: %s", pinpool_tms_errmsg());
        if (pinpool_tms_usage(tag, &u) != 0 || u.paused != 1 || u.device_bytes != 0 || u.allocations != 3)
            FAIL("after pause: %u paused, %" PRIu64 " device bytes, %u allocations", u.paused,
                 u.device_bytes, u.allocations);
        printf("ok tms paused %s: %u allocations, %" PRIu64 " bytes, GPU memory given back\n", tag,
               u.allocations, u.bytes);
        return 0; /* exits paused: the copy stays in the daemon */
    }
    for (int i = 0; i < TMS_NBUF; i++)
        CU(ipc_cu.cuMemsetD8(d[i], 0xee, tms_size(i, bytes)));
    int rc = pinpool_tms_resume(tag);
    if (other) {
        if (rc != PINPOOL_EINVAL || strstr(pinpool_tms_errmsg(), "same order") == NULL)
            FAIL("a resume with other sizes: %s (%s), want PINPOOL_EINVAL", pinpool_err_name(rc),
                 pinpool_tms_errmsg());
        printf("ok tms resume with other sizes refused: %s\n", pinpool_tms_errmsg());
        return 0;
    }
    if (rc != 0)
        FAIL("resume in a new process: %s", pinpool_tms_errmsg());
    uint64_t bad = 0;
    for (int i = 0; i < TMS_NBUF; i++) {
        uint64_t n = tms_size(i, bytes);
        uint64_t *want = calloc(1, n + 8), *back = calloc(1, n + 8);
        fill(want, n, seed + (uint64_t)i);
        CU(ipc_cu.cuMemcpyDtoH(back, d[i], n));
        bad += count_bad(back, want, n) + (memcmp(back, want, n) != 0);
        free(want);
        free(back);
    }
    if (bad != 0)
        FAIL("%" PRIu64 " words differ after a resume in a new process", bad);
    char key[64];
    pinpool_slice_t s;
    snprintf(key, sizeof(key), PINPOOL_SWAP_KEY_PREFIX "%s%s", tag, backup == PINPOOL_TMS_DISK_BACKUP ? "~disk" : "");
    pinpool_ctx_t *ctx = pinpool_tms_context();
    if (pinpool_exists(ctx, key) == 1 || pinpool_attach(ctx, key, PINPOOL_ALLOC_GPU_ONLY, &s) == 0)
        FAIL("the copy under %s is still in the daemon after the resume", key);
    for (int i = TMS_NBUF; i-- > 0;)
        pinpool_tms_free((void *)(uintptr_t)d[i], (ssize_t)tms_size(i, bytes), 0, NULL);
    if (pinpool_tms_usage(NULL, &u) != 0 || u.allocations != 0 || u.swap_tags != 0)
        FAIL("after freeing everything: %u allocations in %u swap tags", u.allocations, u.swap_tags);
    printf("ok tms resumed %s in a new process: %d allocations at new addresses hold the paused bytes, "
           "copy freed\n", tag, TMS_NBUF);
    return 0;
}

int main(int argc, char **argv)
{
    char why[256];

    if (argc < 3)
        FAIL("usage: see the comment at the top of tests/gpu/gpu_client.c");
    const char *socket = argv[1], *cmd = argv[2];
    if (ipc_cuda_load(why, sizeof(why)) != 0)
        FAIL("no GPU: %s", why);
    ipc_cuda_use_device(0);

    if (strcmp(cmd, "used") == 0) {
        pinpool_ctx_t *ctx = connect_or_die(socket);
        pinpool_pool_info_t info;
        if (pinpool_pool_info(ctx, &info) != 0)
            FAIL("info: %s", pinpool_errmsg(ctx));
        printf("ok used=%" PRIu64 " backend=%s mode=%s\n", info.used_bytes, info.host_backend, info.mode);
        pinpool_pool_info_free(&info);
        pinpool_close(ctx);
        return 0;
    }
    if (strcmp(cmd, "devinfo") == 0) {
        pinpool_ctx_t *ctx = connect_or_die(socket);
        pinpool_pool_info_t info;
        if (pinpool_pool_info(ctx, &info) != 0)
            FAIL("info: %s", pinpool_errmsg(ctx));
        printf("ok gpus=%" PRIu32, info.num_devices);
        for (uint32_t i = 0; i < info.num_devices; i++)
            printf(" gpu%d_used=%" PRIu64 " gpu%d_slices=%" PRIu32 " gpu%d_cap=%" PRIu64,
                   (int)info.devices[i].device_id, info.devices[i].used_bytes,
                   (int)info.devices[i].device_id, info.devices[i].num_slices,
                   (int)info.devices[i].device_id, info.devices[i].capacity_bytes);
        printf("\n");
        pinpool_pool_info_free(&info);
        pinpool_close(ctx);
        return 0;
    }
    if (strcmp(cmd, "fanout") == 0 && argc >= 6)
        return fanout(socket, argv[3], strtoull(argv[4], NULL, 0), argv[5],
                      argc > 6 ? strtoull(argv[6], NULL, 0) : 9);
    if (strcmp(cmd, "hold") == 0 && argc >= 4) {
        pinpool_ctx_t *ctx = connect_or_die(socket);
        pinpool_slice_t s;
        uint64_t bytes = strtoull(argv[3], NULL, 0);
        if (pinpool_alloc(ctx, bytes, NULL, &s) != 0)
            FAIL("alloc: %s", pinpool_errmsg(ctx));
        memset(s.ptr, 7, s.size);
        printf("held\n");
        fflush(stdout);
        for (;;)
            pause();
    }
    if (strncmp(cmd, "tms-", 4) == 0 && argc >= 6) {
        int backup = PINPOOL_TMS_CPU_BACKUP;
        bool other = false;
        for (int i = 6; i < argc; i++) {
            backup = strcmp(argv[i], "disk") == 0 ? PINPOOL_TMS_DISK_BACKUP : backup;
            other = other || strcmp(argv[i], "other") == 0;
        }
        return tms_cmd(socket, cmd, argv[3], strtoull(argv[4], NULL, 0), strtoull(argv[5], NULL, 0),
                       backup, other);
    }
    if (strncmp(cmd, "man-", 4) == 0 && argc >= 4)
        return man_cmd(socket, cmd, argv[3], argc > 4 ? argv[4] : "0",
                       argc > 5 ? strtoull(argv[5], NULL, 0) : 0, argc > 6 ? strtoull(argv[6], NULL, 0) : 0,
                       argc > 7 && strcmp(argv[7], "write") == 0);
    if (strncmp(cmd, "swap-", 5) == 0 && argc >= 4)
        return swap_cmd(socket, cmd, argv[3], argc > 4 ? strtoull(argv[4], NULL, 0) : 0,
                        argc > 5 ? strtoull(argv[5], NULL, 0) : 0,
                        argc > 6 && strcmp(argv[6], "spillable") == 0);
    if ((strcmp(cmd, "dev-ro") == 0 || strcmp(cmd, "dev-remap") == 0 ||
         strcmp(cmd, "dev-rowrite") == 0) && argc >= 6)
        return dev_reader(socket, cmd, argv[3], atoi(argv[4]), strtoull(argv[5], NULL, 0),
                          argc > 6 ? strtoull(argv[6], NULL, 0) : 0);
    bool host = strncmp(cmd, "host-", 5) == 0, dev = strncmp(cmd, "dev-", 4) == 0;
    if ((!host && !dev) || argc < (host ? 6 : 7))
        FAIL("unknown command or missing arguments: %s", cmd);
    const char *tag = argv[3];
    int gpu = dev ? atoi(argv[4]) : 0;
    uint64_t bytes = strtoull(argv[dev ? 5 : 4], NULL, 0);
    uint64_t seed = strtoull(argv[dev ? 6 : 5], NULL, 0);
    uint32_t flags = host && argc > 6 && strcmp(argv[6], "gpu-only") == 0 ? PINPOOL_ALLOC_GPU_ONLY : 0;
    bool writing = strstr(cmd, "-write") != NULL;

    ipc_cuda_use_device(gpu);
    uint64_t *want = malloc(bytes), *back = malloc(bytes);
    CUdeviceptr scratch;
    if (want == NULL || back == NULL)
        FAIL("out of memory");
    fill(want, bytes, seed);
    CU(ipc_cu.cuMemAlloc(&scratch, bytes));

    pinpool_ctx_t *ctx = connect_or_die(socket);
    pinpool_slice_t s;
    if (writing) {
        pinpool_alloc_opts_t o = {.device_id = host ? PINPOOL_HOST : gpu, .tag = tag,
                                  .flags = PINPOOL_ALLOC_KEEP | flags};
        if (pinpool_alloc(ctx, bytes, &o, &s) != 0)
            FAIL("alloc: %s", pinpool_errmsg(ctx));
        CU(ipc_cu.cuMemcpyHtoD(scratch, want, bytes));
        if (host) /* the GPU writes into the pinned slice by DMA */
            CU(ipc_cu.cuMemcpyDtoH(s.ptr, scratch, bytes));
        else
            CU(ipc_cu.cuMemcpyDtoD((CUdeviceptr)(uintptr_t)s.ptr, scratch, bytes));
        CU(ipc_cu.cuCtxSynchronize());
        printf("ok wrote %s slice %" PRIx64 " offset=%" PRIu64 " size=%" PRIu64 "\n", host ? "host" : "device",
               s.id, s.start_offset, s.size);
    } else {
        if (pinpool_attach(ctx, tag, flags, &s) != 0)
            FAIL("attach: %s", pinpool_errmsg(ctx));
        uint64_t cpu_bad = 0;
        if (host && !(flags & PINPOOL_ALLOC_GPU_ONLY))
            cpu_bad = count_bad(s.ptr, want, bytes);
        memset(back, 0, bytes);
        if (host)
            CU(ipc_cu.cuMemcpyHtoD(scratch, s.ptr, bytes)); /* the GPU reads the slice by DMA */
        else
            CU(ipc_cu.cuMemcpyDtoD(scratch, (CUdeviceptr)(uintptr_t)s.ptr, bytes));
        CU(ipc_cu.cuMemcpyDtoH(back, scratch, bytes));
        uint64_t cuda_bad = count_bad(back, want, bytes);
        if (cpu_bad != 0 || cuda_bad != 0)
            FAIL("slice %" PRIx64 ": %" PRIu64 " words differ by CPU, %" PRIu64 " by CUDA", s.id,
                 cpu_bad, cuda_bad);
        if (pinpool_free(ctx, s.id, NULL) != 0)
            FAIL("free: %s", pinpool_errmsg(ctx));
        printf("ok verified %s slice offset=%" PRIu64 " size=%" PRIu64 " by %s\n", host ? "host" : "device",
               s.start_offset, s.size, host && !(flags & PINPOOL_ALLOC_GPU_ONLY) ? "CPU and CUDA" : "CUDA");
    }
    pinpool_close(ctx);
    ipc_cu.cuMemFree(scratch);
    free(want);
    free(back);
    return 0;
}

#else

int main(void)
{
    FAIL("this pinpool was built without CUDA support");
}

#endif
