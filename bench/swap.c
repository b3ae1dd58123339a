/*
 * swap.c - the model-swapping benchmark (bench/swap_run runs it on a GPU machine).
 *
 *   swap --socket PATH [--size 16GiB] [--models 2] [--reps 3] [--base-reps 1]
 *        [--streams 1,4] [--chunk 64MiB] [--dir /tmp] [--json FILE]
 *
 * K models made of device buffers with the tensor shapes of an 8B (Llama-3-8B)
 * and a 32B (Qwen2.5-32B) transformer in bf16, alternately, each scaled to
 * --size (whole layers; dimensions shrink only when one layer does not fit),
 * are swapped out and in by each strategy in the same run:
 *   1  pinpool_swap_pause/resume (RELEASE the device memory, keep the host copy;
 *      per --streams value); with the device memory kept (as the baselines);
 *      with the host copy freed on resume (each pause allocates and maps it)
 *   2  per pause cuMemHostAlloc per buffer + cuMemcpyDtoH, cuMemcpyHtoD +
 *      cuMemFreeHost on resume (torch_memory_saver's CPU backup)
 *   3  pageable malloc + cuMemcpy
 *   4  the weights read again from a file under --dir (page cache; after
 *      posix_fadvise DONTNEED; O_DIRECT), through two pinned staging buffers
 *   5  pinpool resume of a copy spilled to the daemon's tier (pause with
 *      PINPOOL_SWAP_SPILLABLE, then an allocation larger than the free pool makes
 *      the daemon spill the released copy; the resume restores it)
 *   6  a new process attaching a device slice the daemon keeps (no copy)
 * and the limit: copies between cuMemHostAlloc memory and the GPU.
 * Without CUDA (CI) the strategies that need it say "skipped: no GPU" and 3
 * and 4 run with memcpy into host memory standing in for the GPU.
 *
 * Baselines keep their device memory (the copy is what they are measured on);
 * the device bytes are overwritten after each swap-out and checked (first and
 * last word of every buffer) after each swap-in, for every strategy.
 *
 *   swap child-attach SOCKET TAG T0_NS   (strategy 6's new process)
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cudaload.h"
#include "benchutil.h"
#include "pinpool.h"

#define MiB (1024ull * 1024)
#define GiB (1024ull * MiB)
#define FILE_ALIGN 4096ull
#define STAGE (64 * MiB)
#define MAX_ROWS 32

typedef struct tensor {
    uint64_t bytes;
    uint64_t dptr;     /* device address (or host address standing in for it) */
    uint64_t file_off; /* strategy 4's file */
} tensor_t;

typedef struct model {
    const char *arch;
    char tag[32];
    int layers;
    uint64_t hidden, inter, vocab;
    tensor_t *t;
    int n;
    uint64_t bytes;
    char *emul; /* CPU-only: the "device" memory */
} model_t;

typedef struct row {
    char id[4];
    char name[96];
    char status[192]; /* "ok", "skipped: ...", "n/a ..." */
    double out_gbs, in_gbs, resume_ms, call_ms; /* < 0: not applicable */
    uint64_t hwm, rss, pool_used, dev_pool_used;
    int cycles;
    bool verified;
} row_t;

static struct {
    const char *socket, *dir, *json;
    uint64_t size, chunk;
    int models, reps, base_reps;
    int streams[8], nstreams;
} opt = {.size = 16 * GiB, .chunk = 64 * MiB, .models = 2, .reps = 3, .base_reps = 1,
         .dir = "/tmp", .streams = {1, 4}, .nstreams = 2};

static bool gpu;
static char nogpu_why[256];
static pinpool_ctx_t *ctx;
static row_t rows[MAX_ROWS];
static int nrows;
static double lim_h2d = -1, lim_d2h = -1;
static char devname[128] = "cpu-only";

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "swap: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static double median(double *v, int n)
{
    if (n == 0)
        return -1;
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static row_t *new_row(const char *id, const char *name)
{
    row_t *r = &rows[nrows++];
    memset(r, 0, sizeof(*r));
    snprintf(r->id, sizeof(r->id), "%s", id);
    snprintf(r->name, sizeof(r->name), "%s", name);
    snprintf(r->status, sizeof(r->status), "ok");
    r->out_gbs = r->in_gbs = r->resume_ms = r->call_ms = -1;
    return r;
}

/* ---- peak memory: VmHWM reset per strategy (clear_refs 5) ------------------------------- */

static void reset_hwm(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f != NULL) {
        fputs("5", f);
        fclose(f);
    }
}

static void read_mem(row_t *r)
{
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long long kb;
        if (sscanf(line, "VmHWM: %llu kB", &kb) == 1)
            r->hwm = kb * 1024;
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
            r->rss = kb * 1024;
    }
    fclose(f);
}

static void sample_pool(row_t *r)
{
    pinpool_pool_info_t info;
    if (pinpool_pool_info(ctx, &info) != 0)
        return;
    if (info.used_bytes > r->pool_used)
        r->pool_used = info.used_bytes;
    if (info.num_devices > 0 && info.devices[0].used_bytes > r->dev_pool_used)
        r->dev_pool_used = info.devices[0].used_bytes;
    pinpool_pool_info_free(&info);
}

/* ---- models ------------------------------------------------------------------------------ */

typedef struct shape {
    const char *arch;
    uint64_t hidden, inter, vocab, kv; /* kv: k/v projection rows */
} shape_t;

static const shape_t shapes[] = {
    {"llama-3-8b", 4096, 14336, 128256, 1024}, /* 32 layers, 8 kv heads x 128 */
    {"qwen2.5-32b", 5120, 27648, 152064, 1024}, /* 64 layers, 8 kv heads x 128 */
};

static uint64_t round64(double x)
{
    uint64_t v = (uint64_t)(x / 64.0 + 0.5) * 64;
    return v < 64 ? 64 : v;
}

/* Tensors of one layer / of the rest, for dimensions h, i, v, kv; bf16. */
static void layer_sizes(uint64_t h, uint64_t i, uint64_t kv, uint64_t *out)
{
    uint64_t s[] = {h, h * h, kv * h, kv * h, h * h, h, i * h, i * h, h * i};
    for (int k = 0; k < 9; k++)
        out[k] = s[k] * 2;
}

static void build_model(model_t *m, const shape_t *sh, uint64_t size)
{
    double f = 1.0;
    uint64_t h, in, v, kv, ls[9], per, fixed;

    for (;;) { /* shrink the dimensions only when two layers do not fit */
        h = round64((double)sh->hidden * f), in = round64((double)sh->inter * f);
        v = round64((double)sh->vocab * f), kv = round64((double)sh->kv * f);
        layer_sizes(h, in, kv, ls);
        per = 0;
        for (int k = 0; k < 9; k++)
            per += ls[k];
        fixed = 2 * v * h * 2 + h * 2;
        if (fixed + 2 * per <= size || h == 64)
            break;
        f *= 0.9;
    }
    m->arch = sh->arch;
    m->hidden = h, m->inter = in, m->vocab = v;
    m->layers = size > fixed ? (int)((size - fixed) / per) : 1;
    if (m->layers < 1)
        m->layers = 1;
    m->n = 3 + 9 * m->layers;
    m->t = calloc((size_t)m->n, sizeof(tensor_t));
    int n = 0;
    m->t[n++].bytes = v * h * 2; /* embedding first: the first tensor a forward pass needs */
    for (int l = 0; l < m->layers; l++)
        for (int k = 0; k < 9; k++)
            m->t[n++].bytes = ls[k];
    m->t[n++].bytes = h * 2;     /* final norm */
    m->t[n++].bytes = v * h * 2; /* lm_head */
    m->bytes = 0;
    for (int k = 0; k < m->n; k++) {
        m->t[k].file_off = (m->bytes + FILE_ALIGN - 1) / FILE_ALIGN * FILE_ALIGN;
        m->bytes = m->t[k].file_off + m->t[k].bytes; /* file_off fixed below */
    }
    uint64_t sum = 0;
    for (int k = 0; k < m->n; k++)
        sum += m->t[k].bytes;
    m->bytes = sum;
}

static uint64_t file_size(const model_t *m)
{
    const tensor_t *t = &m->t[m->n - 1];
    return (t->file_off + t->bytes + FILE_ALIGN - 1) / FILE_ALIGN * FILE_ALIGN;
}

static uint32_t pattern(int k, int i)
{
    return 0x9e3779b9u * (uint32_t)(i + 1) ^ (uint32_t)k << 28 ^ 0x5a5a0000u;
}

#ifdef PINPOOL_HAVE_CUDA
#define CU_FAIL(msg) die("%s", msg)
static CUstream stream;
#endif

/* Copies between host memory and a "device" buffer (memcpy without a GPU). */
static void h2d(uint64_t d, const void *h, uint64_t n)
{
#ifdef PINPOOL_HAVE_CUDA
    if (gpu) {
        CU(ipc_cu.cuMemcpyHtoD(d, h, n));
        return;
    }
#endif
    memcpy((void *)(uintptr_t)d, h, n);
}

static void d2h(void *h, uint64_t d, uint64_t n)
{
#ifdef PINPOOL_HAVE_CUDA
    if (gpu) {
        CU(ipc_cu.cuMemcpyDtoH(h, d, n));
        return;
    }
#endif
    memcpy(h, (const void *)(uintptr_t)d, n);
}

static void fill(const model_t *m, int k)
{
    for (int i = 0; i < m->n; i++) {
        uint32_t p = pattern(k, i);
#ifdef PINPOOL_HAVE_CUDA
        if (gpu) {
            CU(ipc_cu.cuMemsetD32(m->t[i].dptr, p, m->t[i].bytes / 4));
            continue;
        }
#endif
        uint32_t *w = (uint32_t *)(uintptr_t)m->t[i].dptr;
        for (uint64_t j = 0; j < m->t[i].bytes / 4; j++)
            w[j] = p;
    }
#ifdef PINPOOL_HAVE_CUDA
    if (gpu)
        CU(ipc_cu.cuCtxSynchronize());
#endif
}

/* What the other model would do to the GPU memory meanwhile. */
static void clobber(const model_t *m)
{
    for (int i = 0; i < m->n; i++) {
#ifdef PINPOOL_HAVE_CUDA
        if (gpu) {
            CU(ipc_cu.cuMemsetD8(m->t[i].dptr, 0, m->t[i].bytes));
            continue;
        }
#endif
        memset((void *)(uintptr_t)m->t[i].dptr, 0, m->t[i].bytes);
    }
#ifdef PINPOOL_HAVE_CUDA
    if (gpu)
        CU(ipc_cu.cuCtxSynchronize());
#endif
}

static bool check(const model_t *m, int k)
{
    for (int i = 0; i < m->n; i++) {
        uint32_t a = 0, b = 0, p = pattern(k, i);
        d2h(&a, m->t[i].dptr, 4);
        d2h(&b, m->t[i].dptr + m->t[i].bytes - 4, 4);
        if (a != p || b != p) {
            fprintf(stderr, "swap: model %d tensor %d: %08x %08x, want %08x\n", k, i, a, b, p);
            return false;
        }
    }
    return true;
}

static void put_buffers(model_t *m, bool *swap_api, char *why, size_t whylen)
{
    if (!gpu) {
        m->emul = malloc(m->bytes + (uint64_t)m->n * 256);
        if (m->emul == NULL)
            die("out of memory for %s", m->arch);
        uint64_t off = 0;
        for (int i = 0; i < m->n; i++) {
            m->t[i].dptr = (uint64_t)(uintptr_t)(m->emul + off);
            off += (m->t[i].bytes + 255) / 256 * 256;
        }
        /* the swap API must say why it cannot work here */
        uint64_t d;
        int rc = pinpool_swap_alloc(ctx, m->tag, 0, 1 << 20, &d);
        snprintf(why, whylen, "%s: %s", pinpool_err_name(rc), pinpool_errmsg(ctx));
        *swap_api = false;
        return;
    }
#ifdef PINPOOL_HAVE_CUDA
    for (int i = 0; i < m->n; i++) {
        if (*swap_api) {
            int rc = pinpool_swap_alloc(ctx, m->tag, 0, m->t[i].bytes, &m->t[i].dptr);
            if (rc == 0)
                continue;
            if (i > 0)
                die("pinpool_swap_alloc: %s", pinpool_errmsg(ctx));
            snprintf(why, whylen, "%s: %s", pinpool_err_name(rc), pinpool_errmsg(ctx));
            *swap_api = false;
        }
        CUdeviceptr d;
        CU(ipc_cu.cuMemAlloc(&d, m->t[i].bytes));
        m->t[i].dptr = d;
    }
#endif
}

/* ---- strategy 1: pinpool ------------------------------------------------------------------ */

static void run_pinpool(model_t *ms, int k, uint32_t streams, bool keep_host, bool release)
{
#ifdef PINPOOL_HAVE_CUDA
    char name[96];
    snprintf(name, sizeof(name), "pinpool pause/resume, %u stream%s%s%s", streams, streams > 1 ? "s" : "",
             keep_host ? "" : ", host copy freed on resume", release ? "" : ", device memory kept");
    row_t *r = new_row("1", name);
    int n = opt.reps * k, c = 0;
    double *out = calloc((size_t)n, sizeof(double)), *in = calloc((size_t)n, sizeof(double)),
           *call = calloc((size_t)n, sizeof(double));
    uint32_t rflags = keep_host ? PINPOOL_SWAP_KEEP_HOST : 0;

    if (pinpool_swap_config(ctx, streams, streams > 1 ? opt.chunk : 0) != 0)
        die("pinpool_swap_config: %s", pinpool_errmsg(ctx));
    r->verified = true;
    reset_hwm();
    for (int rep = -1; rep < opt.reps; rep++) /* rep -1: warm-up (allocates the host copies) */
        for (int m = 0; m < k; m++) {
            double t0 = now_s();
            if (pinpool_swap_pause(ctx, ms[m].tag, stream, release ? PINPOOL_SWAP_RELEASE : 0) != 0 ||
                pinpool_swap_wait(ctx, ms[m].tag) != 0)
                die("pause %s: %s", ms[m].tag, pinpool_errmsg(ctx));
            double t1 = now_s();
            sample_pool(r);
            if (!release)
                clobber(&ms[m]); /* as the baselines: the bytes must come back */
            double t2 = now_s();
            if (pinpool_swap_resume(ctx, ms[m].tag, stream, rflags) != 0)
                die("resume %s: %s", ms[m].tag, pinpool_errmsg(ctx));
            double t3 = now_s();
            if (pinpool_swap_wait(ctx, ms[m].tag) != 0)
                die("wait %s: %s", ms[m].tag, pinpool_errmsg(ctx));
            double t4 = now_s();
            r->verified &= check(&ms[m], m);
            if (rep < 0)
                continue;
            out[c] = (double)ms[m].bytes / (t1 - t0) / 1e9;
            in[c] = (double)ms[m].bytes / (t4 - t2) / 1e9;
            call[c] = (t3 - t2) * 1e3;
            r->resume_ms = r->resume_ms < 0 || (t4 - t2) * 1e3 > r->resume_ms ? (t4 - t2) * 1e3 : r->resume_ms;
            c++;
        }
    read_mem(r);
    r->out_gbs = median(out, c);
    r->in_gbs = median(in, c);
    r->call_ms = median(call, c);
    r->cycles = c;
    free(out), free(in), free(call);
#else
    (void)ms, (void)k, (void)streams, (void)keep_host, (void)release;
#endif
}

/* ---- strategies 2 and 3 ---------------------------------------------------------------------- */

static void run_copy(model_t *ms, int k, bool pinned)
{
    row_t *r = new_row(pinned ? "2" : "3", pinned ? "cuMemHostAlloc per pause + cuMemcpy (torch_memory_saver CPU backup)"
                                                  : "pageable malloc + cuMemcpy");
    if (pinned && !gpu) {
        snprintf(r->status, sizeof(r->status), "skipped: no GPU");
        return;
    }
    int n = opt.base_reps * k, c = 0;
    double *out = calloc((size_t)n, sizeof(double)), *in = calloc((size_t)n, sizeof(double));
    r->verified = true;
    reset_hwm();
    for (int rep = 0; rep < opt.base_reps; rep++)
        for (int m = 0; m < k; m++) {
            model_t *md = &ms[m];
            void **hb = calloc((size_t)md->n, sizeof(void *));
            char *flat = NULL;
            double t0 = now_s();
            if (!pinned && (flat = malloc(md->bytes)) == NULL)
                die("out of memory");
            uint64_t off = 0;
            for (int i = 0; i < md->n; i++) {
#ifdef PINPOOL_HAVE_CUDA
                if (pinned)
                    CU(ipc_cu.cuMemHostAlloc(&hb[i], md->t[i].bytes, 0));
#endif
                if (!pinned)
                    hb[i] = flat + off;
                off += md->t[i].bytes;
                d2h(hb[i], md->t[i].dptr, md->t[i].bytes);
            }
            double t1 = now_s();
            read_mem(r); /* the peak is now */
            clobber(md);
            double t2 = now_s();
            for (int i = 0; i < md->n; i++) {
                h2d(md->t[i].dptr, hb[i], md->t[i].bytes);
#ifdef PINPOOL_HAVE_CUDA
                if (pinned)
                    CU(ipc_cu.cuMemFreeHost(hb[i]));
#endif
            }
            free(flat);
            double t3 = now_s();
            r->verified &= check(md, m);
            free(hb);
            out[c] = (double)md->bytes / (t1 - t0) / 1e9;
            in[c] = (double)md->bytes / (t3 - t2) / 1e9;
            if ((t3 - t2) * 1e3 > r->resume_ms)
                r->resume_ms = (t3 - t2) * 1e3;
            c++;
        }
    uint64_t hwm = r->hwm;
    read_mem(r);
    if (hwm > r->hwm)
        r->hwm = hwm;
    r->out_gbs = median(out, c);
    r->in_gbs = median(in, c);
    r->cycles = c;
    free(out), free(in);
}

/* ---- strategy 4: read the weights again from a file ---------------------------------------- */

static double cached_fraction(const char *path, uint64_t size)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    void *p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return -1;
    long pg = sysconf(_SC_PAGESIZE);
    size_t np = (size + (uint64_t)pg - 1) / (uint64_t)pg, in = 0;
    unsigned char *vec = malloc(np);
    if (vec != NULL && mincore(p, size, vec) == 0)
        for (size_t i = 0; i < np; i++)
            in += vec[i] & 1;
    free(vec);
    munmap(p, size);
    return (double)in / (double)np;
}

static void *stage_alloc(void)
{
    void *p = NULL;
#ifdef PINPOOL_HAVE_CUDA
    if (gpu) {
        CU(ipc_cu.cuMemHostAlloc(&p, STAGE, 0));
        return p;
    }
#endif
    if (posix_memalign(&p, 4096, STAGE) != 0)
        die("out of memory");
    return p;
}

static void stage_free(void *p)
{
#ifdef PINPOOL_HAVE_CUDA
    if (gpu) {
        ipc_cu.cuMemFreeHost(p);
        return;
    }
#endif
    free(p);
}

static void write_file(const model_t *m, const char *path, void *stage)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        die("%s: %s", path, strerror(errno));
    if (ftruncate(fd, (off_t)file_size(m)) != 0)
        die("ftruncate %s: %s", path, strerror(errno));
    for (int i = 0; i < m->n; i++)
        for (uint64_t off = 0; off < m->t[i].bytes; off += STAGE) {
            uint64_t n = m->t[i].bytes - off < STAGE ? m->t[i].bytes - off : STAGE;
            d2h(stage, m->t[i].dptr + off, n);
            if (pwrite(fd, stage, n, (off_t)(m->t[i].file_off + off)) != (ssize_t)n)
                die("write %s: %s", path, strerror(errno));
        }
    if (fsync(fd) != 0)
        die("fsync %s: %s", path, strerror(errno));
    close(fd);
}

/* Read the file in STAGE pieces into two staging buffers, each piece's tensor
 * parts copied to the device while the next piece is read.  0, or -errno. */
static int read_file(const model_t *m, const char *path, bool direct, void *stage[2])
{
    int fd = open(path, O_RDONLY | (direct ? O_DIRECT : 0));
    if (fd < 0)
        return -errno;
    uint64_t size = file_size(m), off = 0;
    int j = 0, piece = 0;
#ifdef PINPOOL_HAVE_CUDA
    CUevent ev[2] = {NULL, NULL};
    if (gpu)
        for (int b = 0; b < 2; b++)
            CU(ipc_cu.cuEventCreate(&ev[b], CU_EVENT_DISABLE_TIMING));
#endif
    while (off < size) {
        int b = piece++ % 2;
        uint64_t n = size - off < STAGE ? size - off : STAGE, got = 0;
#ifdef PINPOOL_HAVE_CUDA
        if (gpu && piece > 2)
            CU(ipc_cu.cuEventSynchronize(ev[b]));
#endif
        while (got < n) {
            ssize_t k = pread(fd, (char *)stage[b] + got, n - got, (off_t)(off + got));
            if (k <= 0) {
                int e = k < 0 ? errno : EIO;
                close(fd);
                return -e;
            }
            got += (uint64_t)k;
        }
        for (; j < m->n && m->t[j].file_off < off + n; j++) {
            const tensor_t *t = &m->t[j];
            uint64_t lo = t->file_off > off ? t->file_off : off;
            uint64_t hi = t->file_off + t->bytes < off + n ? t->file_off + t->bytes : off + n;
            const char *src = (const char *)stage[b] + (lo - off);
            uint64_t dst = t->dptr + (lo - t->file_off);
#ifdef PINPOOL_HAVE_CUDA
            if (gpu)
                CU(ipc_cu.cuMemcpyHtoDAsync(dst, src, hi - lo, stream));
            else
#endif
                memcpy((void *)(uintptr_t)dst, src, hi - lo);
            if (t->file_off + t->bytes > off + n)
                break; /* continues in the next piece */
        }
#ifdef PINPOOL_HAVE_CUDA
        if (gpu)
            CU(ipc_cu.cuEventRecord(ev[b], stream));
#endif
        off += n;
    }
#ifdef PINPOOL_HAVE_CUDA
    if (gpu) {
        CU(ipc_cu.cuStreamSynchronize(stream));
        ipc_cu.cuEventDestroy(ev[0]);
        ipc_cu.cuEventDestroy(ev[1]);
    }
#endif
    close(fd);
    return 0;
}

static void run_file(model_t *m)
{
    char path[512];
    void *stage[2] = {stage_alloc(), stage_alloc()};
    snprintf(path, sizeof(path), "%s/pinpool-swap-%d.bin", opt.dir, (int)getpid());
    double t0 = now_s();
    write_file(m, path, stage[0]);
    double wsec = now_s() - t0;
    printf("strategy 4: wrote %s (%.2f GiB, %s) in %.2f s\n", path, (double)file_size(m) / GiB, m->arch, wsec);

    static const char *const names[] = {"file read, page cache + H2D", "file read after fadvise DONTNEED + H2D",
                                        "file read O_DIRECT + H2D"};
    for (int v = 0; v < 3; v++) {
        row_t *r = new_row("4", names[v]);
        double in[16];
        int c = 0;
        r->verified = true;
        reset_hwm();
        for (int rep = 0; rep < opt.base_reps && rep < 16; rep++) {
            if (v == 1) {
                int fd = open(path, O_RDONLY);
                if (fd >= 0) {
                    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
                    close(fd);
                }
            }
            double frac = cached_fraction(path, file_size(m));
            clobber(m);
            double t1 = now_s();
            int rc = read_file(m, path, v == 2, stage);
            double t2 = now_s();
            if (rc != 0) {
                snprintf(r->status, sizeof(r->status), "skipped: %s%s", strerror(-rc),
                         v == 2 && rc == -EINVAL ? " (O_DIRECT unsupported on this filesystem, tmpfs?)" : "");
                break;
            }
            r->verified &= check(m, 0);
            in[c++] = (double)m->bytes / (t2 - t1) / 1e9;
            if ((t2 - t1) * 1e3 > r->resume_ms)
                r->resume_ms = (t2 - t1) * 1e3;
            if (rep == 0 && v < 2)
                snprintf(r->status, sizeof(r->status), "ok; %.0f%% of the file in the page cache at the start%s",
                         frac * 100, v == 0 && frac > 0.9 ? ": reads from memory, not the disk" : "");
        }
        read_mem(r);
        r->in_gbs = median(in, c);
        r->cycles = c;
    }
    unlink(path);
    stage_free(stage[0]);
    stage_free(stage[1]);
}

/* ---- strategy 5: resume of a copy the daemon spilled to its tier -------------------------- */

static void run_spilled(model_t *m, bool swap_api, const char *why)
{
    row_t *r = new_row("5", "pinpool resume of a copy spilled to the tier");
    if (!swap_api) {
        snprintf(r->status, sizeof(r->status), "skipped: %s%.160s", gpu ? "" : "no GPU: ", why);
        return;
    }
#ifdef PINPOOL_HAVE_CUDA
    double out[16], in[16];
    int c = 0;
    pinpool_pool_info_t pi;
    char tier[16] = "?";
    double restore_gbps = -1;
    if (pinpool_swap_config(ctx, 1, 0) != 0)
        die("pinpool_swap_config: %s", pinpool_errmsg(ctx));
    r->verified = true;
    reset_hwm();
    for (int rep = 0; rep < opt.base_reps && rep < 16; rep++) {
        double t0 = now_s();
        if (pinpool_swap_pause(ctx, m->tag, stream, PINPOOL_SWAP_RELEASE | PINPOOL_SWAP_SPILLABLE) != 0 ||
            pinpool_swap_wait(ctx, m->tag) != 0)
            die("spillable pause %s: %s", m->tag, pinpool_errmsg(ctx));
        double t1 = now_s();
        /* more than is free: the daemon must spill the released copy to make room */
        if (pinpool_pool_info(ctx, &pi) != 0)
            die("info: %s", pinpool_errmsg(ctx));
        uint64_t spills = pi.spill.spills,
                 filler = pi.free_bytes + (pi.chunk_size < pi.spill.resident_bytes ? pi.chunk_size
                                                                                   : pi.spill.resident_bytes);
        pinpool_pool_info_free(&pi);
        pinpool_alloc_opts_t o = {.device_id = PINPOOL_HOST, .tag = "swapbench-filler",
                                  .flags = PINPOOL_ALLOC_GPU_ONLY};
        pinpool_slice_t fs;
        int rc = pinpool_alloc(ctx, filler, &o, &fs);
        if (rc == 0) {
            sample_pool(r);
            pinpool_free(ctx, fs.id, NULL);
        }
        if (pinpool_pool_info(ctx, &pi) != 0)
            die("info: %s", pinpool_errmsg(ctx));
        bool spilled = pi.spill.spills > spills && pi.spill.objects_spilled > 0;
        snprintf(tier, sizeof(tier), "%s", pi.spill.tier);
        pinpool_pool_info_free(&pi);
        if (!spilled)
            snprintf(r->status, sizeof(r->status), "failed: the daemon did not spill the copy (%.140s)",
                     rc != 0 ? pinpool_errmsg(ctx) : "the filler fit");
        double t2 = now_s();
        if (pinpool_swap_resume(ctx, m->tag, stream, 0) != 0 || pinpool_swap_wait(ctx, m->tag) != 0)
            die("resume %s: %s", m->tag, pinpool_errmsg(ctx));
        double t3 = now_s();
        r->verified &= check(m, 0);
        if (!spilled)
            break;
        out[c] = (double)m->bytes / (t1 - t0) / 1e9;
        in[c++] = (double)m->bytes / (t3 - t2) / 1e9;
        if ((t3 - t2) * 1e3 > r->resume_ms)
            r->resume_ms = (t3 - t2) * 1e3;
    }
    if (pinpool_pool_info(ctx, &pi) == 0) {
        restore_gbps = pi.spill.restore_gbps;
        pinpool_pool_info_free(&pi);
    }
    read_mem(r);
    r->out_gbs = median(out, c);
    r->in_gbs = median(in, c);
    r->cycles = c;
    if (c > 0)
        snprintf(r->status, sizeof(r->status), "ok; restored from the %s tier (the daemon read it at "
                 "%.2f GB/s; a file tier just written reads from the page cache)", tier, restore_gbps);
#else
    (void)m, (void)why;
#endif
}

/* ---- strategy 6: a new process attaches the daemon's device slice ------------------------- */

static int child_attach(const char *socket, const char *tag, long long t0_ns)
{
    struct timespec ts;
    double t_start, t_cuda, t_conn, t_att, t_use;
    char why[256];
    clock_gettime(CLOCK_REALTIME, &ts);
    t_start = ((double)ts.tv_sec * 1e9 + (double)ts.tv_nsec - (double)t0_ns) / 1e6;
    double a = now_s();
    if (ipc_cuda_load(why, sizeof(why)) != 0 || ipc_cuda_use_device(0) != 0)
        die("child: no GPU: %s", why);
    gpu = true;
    t_cuda = (now_s() - a) * 1e3;
    a = now_s();
    pinpool_ctx_t *c = pinpool_connect(socket);
    if (pinpool_err(c) != 0)
        die("child: connect: %s", pinpool_errmsg(c));
    t_conn = (now_s() - a) * 1e3;
    a = now_s();
    pinpool_slice_t s;
    if (pinpool_attach(c, tag, 0, &s) != 0)
        die("child: attach: %s", pinpool_errmsg(c));
    t_att = (now_s() - a) * 1e3;
    uint32_t w = 0;
    d2h(&w, (uint64_t)(uintptr_t)s.ptr, 4); /* the first tensor is usable */
    clock_gettime(CLOCK_REALTIME, &ts);
    t_use = ((double)ts.tv_sec * 1e9 + (double)ts.tv_nsec - (double)t0_ns) / 1e6;
    printf("ok start_ms=%.3f cuda_ms=%.3f connect_ms=%.3f attach_ms=%.3f total_ms=%.3f word=%08x\n", t_start,
           t_cuda, t_conn, t_att, t_use, w);
    pinpool_detach(c, s.id);
    pinpool_close(c);
    return 0;
}

static void run_attach(const model_t *m, const char *self)
{
    row_t *r = new_row("6", "new process attaches the kept device slice (no copy)");
    if (!gpu) {
        snprintf(r->status, sizeof(r->status), "skipped: no GPU");
        return;
    }
    pinpool_alloc_opts_t o = {.device_id = 0, .tag = "swapbench-dev", .flags = PINPOOL_ALLOC_KEEP};
    pinpool_slice_t s;
    if (pinpool_alloc(ctx, m->bytes, &o, &s) != 0) {
        snprintf(r->status, sizeof(r->status), "skipped: %s (start the daemon with --device-pool-size >= %.1f GiB)",
                 pinpool_errmsg(ctx), (double)m->bytes / GiB);
        return;
    }
#ifdef PINPOOL_HAVE_CUDA
    CU(ipc_cu.cuMemsetD32((CUdeviceptr)(uintptr_t)s.ptr, pattern(0, 0), m->bytes / 4));
    CU(ipc_cu.cuCtxSynchronize());
#endif
    sample_pool(r);
    reset_hwm();
    double tot[8], att[8];
    int c = 0;
    r->verified = true;
    for (int rep = 0; rep < 3; rep++) {
        int pfd[2];
        struct timespec ts;
        char t0[32], out[512] = "";
        if (pipe(pfd) != 0)
            die("pipe");
        fflush(stdout);
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(t0, sizeof(t0), "%lld", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
        pid_t pid = fork();
        if (pid == 0) {
            dup2(pfd[1], 1);
            close(pfd[0]);
            execl(self, self, "child-attach", opt.socket, "swapbench-dev", t0, (char *)NULL);
            _exit(127);
        }
        close(pfd[1]);
        ssize_t k, got = 0;
        while ((k = read(pfd[0], out + got, sizeof(out) - 1 - (size_t)got)) > 0)
            got += k;
        out[got > 0 ? got : 0] = '\0';
        close(pfd[0]);
        int st;
        waitpid(pid, &st, 0);
        double total, attach;
        unsigned w;
        char *p = strstr(out, "attach_ms=");
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || p == NULL || sscanf(p, "attach_ms=%lf total_ms=%lf word=%x", &attach, &total, &w) != 3) {
            snprintf(r->status, sizeof(r->status), "failed: child said: %.150s", out);
            break;
        }
        printf("strategy 6: child %s", out);
        r->verified &= w == pattern(0, 0);
        tot[c] = total, att[c] = attach, c++;
    }
    read_mem(r);
    r->resume_ms = median(tot, c);
    r->call_ms = median(att, c);
    r->cycles = c;
    pinpool_free(ctx, s.id, NULL);
}

/* ---- the limit ------------------------------------------------------------------------------ */

static void run_limit(void)
{
#ifdef PINPOOL_HAVE_CUDA
    uint64_t n = opt.size < GiB ? opt.size : GiB;
    void *h;
    CUdeviceptr d;
    CUevent e0, e1;
    double v[2][7];
    CU(ipc_cu.cuMemHostAlloc(&h, n, 0));
    memset(h, 1, n);
    CU(ipc_cu.cuMemAlloc(&d, n));
    CU(ipc_cu.cuEventCreate(&e0, 0));
    CU(ipc_cu.cuEventCreate(&e1, 0));
    for (int dir = 0; dir < 2; dir++)
        for (int i = -2; i < 7; i++) {
            float ms;
            CU(cu_timed_copy(stream, e0, e1, d, h, n, dir == 0, &ms));
            if (i >= 0)
                v[dir][i] = (double)n / (ms / 1e3) / 1e9;
        }
    lim_h2d = median(v[0], 7);
    lim_d2h = median(v[1], 7);
    ipc_cu.cuEventDestroy(e0);
    ipc_cu.cuEventDestroy(e1);
    ipc_cu.cuMemFree(d);
    ipc_cu.cuMemFreeHost(h);
#endif
}

/* ---- output --------------------------------------------------------------------------------- */

static void jnum(FILE *f, const char *k, double v, bool comma)
{
    if (v < 0)
        fprintf(f, "\"%s\": null%s", k, comma ? ", " : "");
    else
        fprintf(f, "\"%s\": %.4f%s", k, v, comma ? ", " : "");
}

static void jstr(FILE *f, const char *k, const char *s)
{
    fprintf(f, "\"%s\": \"", k);
    for (; *s; s++)
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s >= 0x20)
            fputc(*s, f);
    fprintf(f, "\", ");
}

static void output(const model_t *ms, int k)
{
    char date[32];
    time_t now = time(NULL);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%MZ", gmtime(&now));

    printf("\n%s, %s; %d models of %.2f GiB:", devname, date, k, (double)opt.size / GiB);
    for (int m = 0; m < k; m++)
        printf(" %s-shaped (%d layers, %d buffers, %.2f GiB)%s", ms[m].arch, ms[m].layers, ms[m].n,
               (double)ms[m].bytes / GiB, m + 1 < k ? "," : "\n");
    if (lim_h2d > 0)
        printf("limit (cuMemHostAlloc memory): H2D %.2f GB/s, D2H %.2f GB/s\n\n", lim_h2d, lim_d2h);
    else
        printf("limit (cuMemHostAlloc memory): n/a without a GPU\n\n");
    printf("%-2s %-66s %8s %8s %6s %6s %10s %8s %9s %9s %9s %4s  %s\n", "#", "strategy", "out GB/s", "in GB/s",
           "out/lim", "in/lim", "resume ms", "call ms", "HWM GiB", "RSS GiB", "pool GiB", "ok", "status");
    for (int i = 0; i < nrows; i++) {
        const row_t *r = &rows[i];
        char o[16] = "-", in[16] = "-", orat[16] = "-", irat[16] = "-", res[16] = "-", call[16] = "-";
        if (r->call_ms >= 0)
            snprintf(call, sizeof(call), "%.2f", r->call_ms);
        if (r->out_gbs >= 0)
            snprintf(o, sizeof(o), "%.2f", r->out_gbs);
        if (r->in_gbs >= 0)
            snprintf(in, sizeof(in), "%.2f", r->in_gbs);
        if (r->out_gbs >= 0 && lim_d2h > 0)
            snprintf(orat, sizeof(orat), "%.0f%%", 100 * r->out_gbs / lim_d2h);
        if (r->in_gbs >= 0 && lim_h2d > 0)
            snprintf(irat, sizeof(irat), "%.0f%%", 100 * r->in_gbs / lim_h2d);
        if (r->resume_ms >= 0)
            snprintf(res, sizeof(res), "%.1f", r->resume_ms);
        bool ran = strncmp(r->status, "ok", 2) == 0;
        printf("%-2s %-66s %8s %8s %6s %6s %10s %8s %9.2f %9.2f %9.2f %4s  %s\n", r->id, r->name, o, in, orat,
               irat, res, call, (double)r->hwm / GiB, (double)r->rss / GiB,
               (double)(r->id[0] == '6' ? r->dev_pool_used : r->pool_used) / GiB,
               ran ? (r->verified ? "yes" : "NO") : "-", r->status);
    }
    printf("\nout: pause until the bytes are safe on the host (1, 5: pause + wait, device memory released;\n"
           "5: the copy released to the daemon, its spill to the tier not counted);\n"
           "in: until every tensor is usable on the GPU (strategy 1: resume + wait; the first tensor is usable no\n"
           "sooner on the caller's stream); resume ms: the slowest swap-in; 6: exec to first tensor usable.\n"
           "call ms: until pinpool_swap_resume returned (the copies run on; work queued on the stream after\n"
           "it waits for them); 6: pinpool_attach in the new process.\n"
           "HWM/RSS: this process's peak and current resident memory for the strategy; pool: daemon's host\n"
           "pool bytes in use (strategy 6: the device pool's).  Medians over the cycles.\n");

    if (opt.json == NULL)
        return;
    FILE *f = fopen(opt.json, "w");
    if (f == NULL)
        die("%s: %s", opt.json, strerror(errno));
    fprintf(f, "{");
    jstr(f, "device", devname);
    jstr(f, "date", date);
    fprintf(f, "\"gpu\": %s, \"size_bytes\": %" PRIu64 ", ", gpu ? "true" : "false", opt.size);
    jnum(f, "limit_h2d_gbs", lim_h2d, true);
    jnum(f, "limit_d2h_gbs", lim_d2h, true);
    fprintf(f, "\"models\": [");
    for (int m = 0; m < k; m++) {
        fprintf(f, "{");
        jstr(f, "arch", ms[m].arch);
        fprintf(f, "\"layers\": %d, \"buffers\": %d, \"bytes\": %" PRIu64 ", \"hidden\": %" PRIu64 "}%s",
                ms[m].layers, ms[m].n, ms[m].bytes, ms[m].hidden, m + 1 < k ? ", " : "");
    }
    fprintf(f, "], \"rows\": [\n");
    for (int i = 0; i < nrows; i++) {
        const row_t *r = &rows[i];
        fprintf(f, "  {");
        jstr(f, "id", r->id);
        jstr(f, "strategy", r->name);
        jstr(f, "status", r->status);
        jnum(f, "out_gbs", r->out_gbs, true);
        jnum(f, "in_gbs", r->in_gbs, true);
        jnum(f, "out_ratio", r->out_gbs >= 0 && lim_d2h > 0 ? r->out_gbs / lim_d2h : -1, true);
        jnum(f, "in_ratio", r->in_gbs >= 0 && lim_h2d > 0 ? r->in_gbs / lim_h2d : -1, true);
        jnum(f, "resume_ms", r->resume_ms, true);
        jnum(f, "call_ms", r->call_ms, true);
        fprintf(f, "\"hwm_bytes\": %" PRIu64 ", \"rss_bytes\": %" PRIu64 ", \"pool_used_bytes\": %" PRIu64
                ", \"device_pool_used_bytes\": %" PRIu64 ", \"cycles\": %d, \"verified\": %s}%s\n",
                r->hwm, r->rss, r->pool_used, r->dev_pool_used, r->cycles, r->verified ? "true" : "false",
                i + 1 < nrows ? "," : "");
    }
    fprintf(f, "]}\n");
    fclose(f);
    printf("wrote %s\n", opt.json);
}

/* ---- main ------------------------------------------------------------------------------------ */

static void parse(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            die("%s needs a value", a);
        i++;
        if (strcmp(a, "--socket") == 0)
            opt.socket = v;
        else if (strcmp(a, "--size") == 0 && pinpool_parse_size(v, &opt.size) == 0 && opt.size >= 64 * 1024)
            ;
        else if (strcmp(a, "--chunk") == 0 && pinpool_parse_size(v, &opt.chunk) == 0)
            ;
        else if (strcmp(a, "--models") == 0 && (opt.models = atoi(v)) >= 1 && opt.models <= 8)
            ;
        else if (strcmp(a, "--reps") == 0 && (opt.reps = atoi(v)) >= 1)
            ;
        else if (strcmp(a, "--base-reps") == 0 && (opt.base_reps = atoi(v)) >= 1)
            ;
        else if (strcmp(a, "--dir") == 0)
            opt.dir = v;
        else if (strcmp(a, "--json") == 0)
            opt.json = v;
        else if (strcmp(a, "--streams") == 0) {
            char *s = strdup(v), *save = NULL;
            opt.nstreams = 0;
            for (char *tok = strtok_r(s, ",", &save); tok != NULL && opt.nstreams < 8; tok = strtok_r(NULL, ",", &save))
                opt.streams[opt.nstreams++] = atoi(tok);
            free(s);
        } else
            die("bad option %s %s (see the comment at the top of bench/swap.c)", a, v);
    }
    if (opt.socket == NULL)
        die("--socket PATH is required");
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "child-attach") == 0)
        return child_attach(argv[2], argv[3], atoll(argv[4]));
    parse(argc, argv);
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (ipc_cuda_load(nogpu_why, sizeof(nogpu_why)) == 0 && ipc_cuda_use_device(0) == 0) {
        gpu = true;
#ifdef PINPOOL_HAVE_CUDA
        CUdevice d;
        ipc_cu.cuDeviceGet(&d, 0);
        ipc_cu.cuDeviceGetName(devname, sizeof(devname), d);
        CU(ipc_cu.cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
#endif
    } else {
        printf("CPU-only: %s; strategies that need CUDA are skipped, 3 and 4 copy with memcpy\n", nogpu_why);
    }
    ctx = pinpool_connect(opt.socket);
    if (pinpool_err(ctx) != 0)
        die("connect: %s", pinpool_errmsg(ctx));

    int k = opt.models;
    model_t *ms = calloc((size_t)k, sizeof(model_t));
    bool swap_api = true;
    char why[384] = "";
    for (int m = 0; m < k; m++) {
        build_model(&ms[m], &shapes[m % 2], opt.size);
        snprintf(ms[m].tag, sizeof(ms[m].tag), "swapbench-%d-%d", (int)getpid(), m);
        put_buffers(&ms[m], &swap_api, why, sizeof(why));
        fill(&ms[m], m);
        printf("model %d: %s-shaped, hidden %" PRIu64 ", %d layers, %d buffers, %.3f GiB\n", m, ms[m].arch,
               ms[m].hidden, ms[m].layers, ms[m].n, (double)ms[m].bytes / GiB);
    }

    if (gpu)
        run_limit();
    if (swap_api) {
        for (int i = 0; i < opt.nstreams; i++)
            run_pinpool(ms, k, (uint32_t)opt.streams[i], true, true);
        run_pinpool(ms, k, 1, true, false);
        run_pinpool(ms, k, 1, false, true);
    } else {
        row_t *r = new_row("1", "pinpool pause/resume");
        snprintf(r->status, sizeof(r->status), "skipped: %s%.170s", gpu ? "" : "no GPU: ", why);
        printf("strategy 1: pinpool_swap_alloc said %s\n", why);
    }
    run_copy(ms, k, true);
    run_copy(ms, k, false);
    run_file(&ms[0]);
    run_spilled(&ms[0], swap_api, why);
    char *self = realpath("/proc/self/exe", NULL);
    run_attach(&ms[0], self != NULL ? self : argv[0]);
    free(self);

    output(ms, k);
    for (int m = 0; m < k; m++) {
        if (swap_api)
            pinpool_swap_drop(ctx, ms[m].tag, PINPOOL_SWAP_FREE_HOST);
#ifdef PINPOOL_HAVE_CUDA
        else if (gpu)
            for (int i = 0; i < ms[m].n; i++)
                ipc_cu.cuMemFree(ms[m].t[i].dptr);
#endif
        free(ms[m].emul);
        free(ms[m].t);
    }
    free(ms);
    pinpool_close(ctx);
#ifdef PINPOOL_HAVE_CUDA
    if (gpu)
        ipc_cu.cuStreamDestroy(stream);
#endif
    for (int i = 0; i < nrows; i++)
        if (strncmp(rows[i].status, "ok", 2) == 0 && !rows[i].verified)
            return 2;
    return 0;
}
