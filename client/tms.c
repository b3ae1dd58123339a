/*
 * tms.c - torch_memory_saver's allocator in libpinpool (pinpool_tms_* in
 * pinpool.h): torch's CUDAPluggableAllocator entry points and the
 * pause/resume of tags over the swap API.
 *
 * Owns: the process-wide context it connects, the table of its allocations
 * (pointer -> swap tag) and of its swap tags (TAG, TAG~disk, TAG~none, "~dN"
 * on GPU N > 0), the retain and margin settings, and each thread's region.
 * Never: touches memory it did not allocate (torch's own allocations outside a
 * region, registered buffers); leaves the calling thread on another CUDA
 * context than it found; calls into torch.
 * Locking: `lock` serialises every call but the region ones (thread-local);
 * it is taken before the swap state's lock (swap.c).  torch calls malloc and
 * free with its allocator's lock held: nothing here calls back into torch.
 */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "pinpool.h"
#include "swap_int.h"

static __thread char msg[512];
static __thread pinpool_tms_region_t region = {.tag = "default"};

static int fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return err;
}

const char *pinpool_tms_errmsg(void)
{
    return msg;
}

static int check_tms_tag(const char *tag)
{
    size_t n;

    if (tag == NULL)
        return fail(PINPOOL_EINVAL, "a tag must not be NULL");
    n = strlen(tag);
    if (n == 0 || n > PINPOOL_TMS_TAG_MAX)
        return fail(PINPOOL_EINVAL, "a torch_memory_saver tag is 1 to %d characters with pinpool "
                    "(got %zu: '%.40s')", PINPOOL_TMS_TAG_MAX, n, tag);
    for (size_t i = 0; i < n; i++)
        if (tag[i] < 0x21 || tag[i] > 0x7e || tag[i] == '~')
            return fail(PINPOOL_EINVAL, "a torch_memory_saver tag is printable ASCII without "
                        "spaces or '~' with pinpool (got '%s')", tag);
    return 0;
}

int pinpool_tms_set_region(const pinpool_tms_region_t *r, pinpool_tms_region_t *old)
{
    int rc;

    if (r == NULL)
        return fail(PINPOOL_EINVAL, "region must not be NULL");
    if (r->backup < PINPOOL_TMS_NO_BACKUP || r->backup > PINPOOL_TMS_DISK_BACKUP)
        return fail(PINPOOL_EINVAL, "backup must be PINPOOL_TMS_NO_BACKUP, _CPU_BACKUP or "
                    "_DISK_BACKUP (got %d)", (int)r->backup);
    if ((rc = check_tms_tag(r->tag)) != 0)
        return rc;
    if (old != NULL)
        *old = region;
    region = *r;
    region.active = r->active != 0;
    return 0;
}

int pinpool_tms_get_region(pinpool_tms_region_t *out)
{
    if (out == NULL)
        return fail(PINPOOL_EINVAL, "out must not be NULL");
    *out = region;
    return 0;
}

#ifndef PINPOOL_HAVE_CUDA

static int no_cuda(void)
{
    return fail(PINPOOL_ECUDA, "torch_memory_saver needs CUDA, and this libpinpool was built "
                "without CUDA support");
}

int pinpool_tms_connect(const char *socket_path)
{
    (void)socket_path;
    return no_cuda();
}

pinpool_ctx_t *pinpool_tms_context(void)
{
    return NULL;
}

void *pinpool_tms_malloc(ssize_t size, int device, void *stream)
{
    (void)size, (void)device, (void)stream;
    no_cuda();
    fprintf(stderr, "pinpool_tms_malloc: %s\n", msg);
    return NULL;
}

void pinpool_tms_free(void *ptr, ssize_t size, int device, void *stream)
{
    (void)ptr, (void)size, (void)device, (void)stream;
}

int pinpool_tms_pause(const char *tag)
{
    (void)tag;
    return no_cuda();
}

int pinpool_tms_resume(const char *tag)
{
    (void)tag;
    return no_cuda();
}

void pinpool_tms_set_retain(int retain)
{
    (void)retain;
}

void pinpool_tms_detach(void)
{
}

int pinpool_tms_get_retain(void)
{
    return 0;
}

void pinpool_tms_set_margin(uint64_t bytes)
{
    (void)bytes;
}

int pinpool_tms_cpu_backup(uint64_t dptr, uint64_t bytes, void **host)
{
    (void)dptr, (void)bytes, (void)host;
    return no_cuda();
}

int pinpool_tms_usage(const char *tag, pinpool_tms_usage_t *out)
{
    (void)tag, (void)out;
    return no_cuda();
}

#else

/* A swap tag of one torch_memory_saver tag, backup kind and GPU. */
typedef struct stag {
    char name[PINPOOL_SWAP_TAG_MAX + 1];
    char tag[PINPOOL_TMS_TAG_MAX + 1];
    int backup, device;
    uint32_t nalloc;
} stag_t;

typedef struct alloc {
    uint64_t ptr, bytes;
    uint32_t stag;
} alloc_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pinpool_ctx_t *ctx;
static bool detached; /* pinpool_tms_detach() was called */
static char ctx_socket[256];
static stag_t *stags;
static uint32_t nstags, capstags;
static alloc_t *allocs;
static uint32_t nallocs, capallocs;
static int retain = -1; /* -1: $TMS_RETAIN_CPU_BACKUP, read on first use */
static uint64_t margin;

/* ---- the context and the CUDA context of the caller ------------------------------- */

static int connect_locked(const char *socket_path)
{
    const char *want = socket_path != NULL ? socket_path : "";
    char why[256];

    if (ctx != NULL) {
        if (socket_path != NULL && strcmp(want, ctx_socket) != 0)
            return fail(PINPOOL_EINVAL, "torch_memory_saver is connected to %s already",
                        ctx_socket[0] ? ctx_socket : "the default socket");
        return 0;
    }
    if (ipc_cuda_load(why, sizeof(why)) != 0)
        return fail(PINPOOL_ECUDA, "torch_memory_saver needs CUDA in this process: %s", why);
    pinpool_ctx_t *c = pinpool_connect(socket_path);
    if (c == NULL)
        return fail(-ENOMEM, "out of memory");
    if (pinpool_err(c) != 0) {
        int rc = fail(pinpool_err(c), "cannot reach the pinpool daemon (start `pinpool serve`, "
                      "or set $PINPOOL_SOCKET): %s", pinpool_errmsg(c));
        pinpool_close(c);
        return rc;
    }
    ctx = c;
    snprintf(ctx_socket, sizeof(ctx_socket), "%s", want);
    return 0;
}

int pinpool_tms_connect(const char *socket_path)
{
    pthread_mutex_lock(&lock);
    int rc = connect_locked(socket_path);
    pthread_mutex_unlock(&lock);
    return rc;
}

pinpool_ctx_t *pinpool_tms_context(void)
{
    pthread_mutex_lock(&lock);
    pinpool_ctx_t *c = ctx;
    pthread_mutex_unlock(&lock);
    return c;
}

/* The swap call's failure as ours. */
static int from_ctx(int rc, const char *what)
{
    return fail(rc, "%s: %s", what, pinpool_errmsg(ctx));
}

/* The calling thread's CUDA context, put back by restore(). */
static CUcontext saved(void)
{
    CUcontext c = NULL;
    ipc_cu.cuCtxGetCurrent(&c);
    return c;
}

static void restore(CUcontext c)
{
    CUcontext now = NULL;
    ipc_cu.cuCtxGetCurrent(&now);
    if (now != c)
        ipc_cu.cuCtxSetCurrent(c);
}

/* Stream capture (a CUDA graph being captured in global mode) forbids some
 * calls in the capturing thread; mapping memory is safe: relaxed mode around
 * the allocator's calls.  The driver call is looked up here (ipc_cu does not
 * carry it); without it the mode stays as it is. */
typedef CUresult (*exchange_fn)(CUstreamCaptureMode *);
static exchange_fn exchange;
static pthread_once_t exchange_once = PTHREAD_ONCE_INIT;

static void find_exchange(void)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (h != NULL)
        *(void **)&exchange = dlsym(h, "cuThreadExchangeStreamCaptureMode");
}

static CUstreamCaptureMode relaxed(void)
{
    CUstreamCaptureMode m = CU_STREAM_CAPTURE_MODE_RELAXED;
    pthread_once(&exchange_once, find_exchange);
    if (exchange != NULL)
        exchange(&m);
    return m;
}

static void unrelax(CUstreamCaptureMode m)
{
    if (exchange != NULL)
        exchange(&m);
}

/* ---- the tables ------------------------------------------------------------------ */

static int stag_for(const char *tag, int backup, int device, uint32_t *idx)
{
    static const char *const suffix[] = {"~none", "", "~disk"};
    char name[PINPOOL_SWAP_TAG_MAX + 16];

    snprintf(name, sizeof(name), "%s%s", tag, suffix[backup]);
    if (device > 0)
        snprintf(name + strlen(name), sizeof(name) - strlen(name), "~d%d", device);
    for (uint32_t i = 0; i < nstags; i++)
        if (strcmp(stags[i].name, name) == 0) {
            *idx = i;
            return 0;
        }
    if (strlen(name) > PINPOOL_SWAP_TAG_MAX)
        return fail(PINPOOL_EINVAL, "tag '%s' is too long for GPU %d (at most %d characters "
                    "with its suffix '%s')", tag, device, PINPOOL_SWAP_TAG_MAX,
                    name + strlen(tag));
    if (pinpool__swap_grow((void **)&stags, &capstags, nstags, sizeof(*stags)) != 0)
        return fail(-ENOMEM, "out of memory");
    stag_t *s = &stags[nstags];
    memset(s, 0, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "%s", name);
    snprintf(s->tag, sizeof(s->tag), "%s", tag);
    s->backup = backup;
    s->device = device;
    *idx = nstags++;
    return 0;
}

static alloc_t *find_alloc(uint64_t p, uint64_t bytes)
{
    for (uint32_t i = 0; i < nallocs; i++)
        if (allocs[i].ptr <= p && bytes <= allocs[i].bytes && p - allocs[i].ptr <= allocs[i].bytes - bytes)
            return &allocs[i];
    return NULL;
}

static bool selected(const stag_t *s, const char *tag)
{
    return s->nalloc > 0 && (tag == NULL || strcmp(s->tag, tag) == 0);
}

static bool retaining(void)
{
    if (retain < 0) {
        const char *e = getenv("TMS_RETAIN_CPU_BACKUP");
        retain = e != NULL && (strcmp(e, "1") == 0 || strcasecmp(e, "true") == 0);
    }
    return retain == 1;
}

/* ---- torch's allocator ------------------------------------------------------------- */

static int tms_malloc(uint64_t bytes, int device, uint64_t *out)
{
    uint32_t si = 0;
    int rc;

    if (!region.active)
        return fail(PINPOOL_EINVAL, "torch allocated into a torch_memory_saver pool outside a "
                    "region (or inside disable())");
    if ((rc = connect_locked(NULL)) != 0)
        return rc;
    if (pinpool__swap_grow((void **)&allocs, &capallocs, nallocs, sizeof(*allocs)) != 0)
        return fail(-ENOMEM, "out of memory");
    if ((rc = stag_for(region.tag, region.backup, device, &si)) != 0)
        return rc;
    if (ipc_cuda_use_device(device) != 0)
        return fail(PINPOOL_ENODEV, "GPU %d is not usable (%d visible)", device, ipc_cuda_device_count());
    if (margin > 0) {
        size_t free_b = 0, total = 0;
        ipc_cu.cuMemGetInfo(&free_b, &total);
        if (margin > free_b || bytes > free_b - margin) {
            char a[32], b[32], c[32];
            return fail(PINPOOL_ENOSPC, "out of memory on purpose: %s more would leave less than "
                        "memory_margin_bytes (%s) of the %s free on GPU %d",
                        pinpool_format_size(bytes, a, sizeof(a)), pinpool_format_size(margin, b, sizeof(b)),
                        pinpool_format_size(free_b, c, sizeof(c)), device);
        }
    }
    stag_t *s = &stags[si];
    rc = pinpool__swap_alloc_own(ctx, s->name, device, bytes, out);
    if (rc == PINPOOL_EINVAL && strstr(pinpool_errmsg(ctx), "paused") != NULL)
        return fail(rc, "cannot allocate in region(tag='%s') while tag '%s' is paused: resume it "
                    "first", region.tag, region.tag);
    if (rc != 0)
        return from_ctx(rc, "cannot allocate GPU memory for torch_memory_saver");
    s->nalloc++;
    allocs[nallocs++] = (alloc_t){.ptr = *out, .bytes = bytes, .stag = si};
    return 0;
}

void *pinpool_tms_malloc(ssize_t size, int device, void *stream)
{
    uint64_t p = 0;
    int rc;

    (void)stream;
    if (size <= 0)
        return NULL;
    pthread_mutex_lock(&lock);
    CUcontext c = ipc_cuda_load(msg, sizeof(msg)) == 0 ? saved() : NULL;
    CUstreamCaptureMode m = c != NULL ? relaxed() : CU_STREAM_CAPTURE_MODE_RELAXED;
    rc = c != NULL ? tms_malloc((uint64_t)size, device, &p) : fail(PINPOOL_ECUDA, "%s", msg);
    if (c != NULL) {
        unrelax(m);
        restore(c);
    }
    pthread_mutex_unlock(&lock);
    if (rc != 0) {
        fprintf(stderr, "pinpool.torch_memory_saver: cannot allocate %zd bytes on GPU %d: %s\n",
                size, device, msg);
        return NULL;
    }
    return (void *)(uintptr_t)p;
}

/* Forget a swap tag whose last allocation went, with the host copy it holds
 * (resident: a retained copy; paused: its copy, of nothing now).  A copy
 * another process left under its key stays while it is resident. */
static void drop_empty(stag_t *s)
{
    pinpool_swap_info_t info;

    if (pinpool_swap_info(ctx, s->name, &info) != 0)
        return;
    if (info.state != PINPOOL_SWAP_RESIDENT) {
        pinpool_swap_drop(ctx, s->name, PINPOOL_SWAP_FREE_HOST);
        return;
    }
    if (info.host_slice_id != 0)
        pinpool_free(ctx, info.host_slice_id, NULL);
    pinpool_swap_drop(ctx, s->name, 0);
}

/* The process is ending (Python's atexit): the frees that follow (torch's
 * pools torn down with the interpreter) leave the swap state alone, so that
 * the copies of paused tags stay in the daemon for another process. */
void pinpool_tms_detach(void)
{
    pthread_mutex_lock(&lock);
    detached = true;
    pthread_mutex_unlock(&lock);
}

void pinpool_tms_free(void *ptr, ssize_t size, int device, void *stream)
{
    uint64_t p = (uint64_t)(uintptr_t)ptr;
    int rc = 0;

    (void)size, (void)device, (void)stream;
    if (ptr == NULL)
        return;
    pthread_mutex_lock(&lock);
    uint32_t i = 0;
    while (i < nallocs && allocs[i].ptr != p)
        i++;
    if (i == nallocs) {
        rc = fail(PINPOOL_EINVAL, "%p is not an allocation of pinpool_tms_malloc (left alone)", ptr);
    } else if (detached) {
        allocs[i] = allocs[--nallocs]; /* the process exit takes its memory */
    } else {
        stag_t *s = &stags[allocs[i].stag];
        CUcontext c = saved();
        CUstreamCaptureMode m = relaxed();
        rc = pinpool_swap_free(ctx, s->name, p);
        if (rc != 0)
            rc = from_ctx(rc, "cannot free a torch_memory_saver allocation");
        else if (--s->nalloc == 0)
            drop_empty(s);
        unrelax(m);
        restore(c);
        allocs[i] = allocs[--nallocs];
    }
    pthread_mutex_unlock(&lock);
    if (rc != 0)
        fprintf(stderr, "pinpool.torch_memory_saver: free: %s\n", msg);
}

/* ---- pause and resume ---------------------------------------------------------------- */

static int info_of(const stag_t *s, pinpool_swap_info_t *info)
{
    int rc = pinpool_swap_info(ctx, s->name, info);
    return rc != 0 ? from_ctx(rc, "swap info") : 0;
}

/* Wait for the steps queued on the selected tags; the first failure is kept. */
static int wait_all(const char *tag, bool *queued, int rc)
{
    for (uint32_t i = 0; i < nstags; i++)
        if (queued[i]) {
            int r = pinpool_swap_wait(ctx, stags[i].name);
            if (r != 0 && rc == 0)
                rc = from_ctx(r, tag != NULL ? tag : "wait");
        }
    return rc;
}

/* Check the tags of a pause, synchronise their GPUs, queue their pauses. */
static int pause_steps(const char *tag, bool *queued)
{
    bool synced[PINPOOL_MAX_DEVICES] = {false};
    pinpool_swap_info_t info;
    int rc = 0;

    for (uint32_t i = 0; i < nstags && rc == 0; i++)
        if (selected(&stags[i], tag) && (rc = info_of(&stags[i], &info)) == 0 &&
            info.state != PINPOOL_SWAP_RESIDENT)
            rc = fail(PINPOOL_EINVAL, "cannot pause tag '%s': it is already paused (resume it "
                      "first)", stags[i].tag);
    for (uint32_t i = 0; i < nstags && rc == 0; i++) { /* in-flight work may use the memory */
        const stag_t *s = &stags[i];
        if (selected(s, tag) && !synced[s->device] && ipc_cuda_use_device(s->device) == 0) {
            CUresult r = ipc_cu.cuCtxSynchronize();
            if (r != CUDA_SUCCESS)
                rc = from_ctx(pinpool__swap_cu_fail(ctx, r, "cuCtxSynchronize",
                                                    "GPU work before a pause failed"), "pause");
            synced[s->device] = true;
        }
    }
    for (uint32_t i = 0; i < nstags && rc == 0; i++) {
        const stag_t *s = &stags[i];
        uint32_t flags = PINPOOL_SWAP_RELEASE | PINPOOL_SWAP_REPLACE;
        if (!selected(s, tag))
            continue;
        flags |= s->backup == PINPOOL_TMS_NO_BACKUP ? PINPOOL_SWAP_DISCARD
               : s->backup == PINPOOL_TMS_DISK_BACKUP ? PINPOOL_SWAP_SPILLABLE : 0;
        int r = pinpool_swap_pause(ctx, s->name, NULL, flags);
        if (r != 0)
            rc = from_ctx(r, "pause");
        else
            queued[i] = true;
    }
    return rc;
}

/* Check the tags of a resume and queue their resumes. */
static int resume_steps(const char *tag, bool *queued)
{
    bool keep = retaining();
    pinpool_swap_info_t info;
    int rc = 0;

    for (uint32_t i = 0; i < nstags && rc == 0; i++) {
        const stag_t *s = &stags[i];
        if (selected(s, tag) && (rc = info_of(s, &info)) == 0 && info.state == PINPOOL_SWAP_RESIDENT &&
            (s->backup == PINPOOL_TMS_NO_BACKUP || info.host_slice_id != 0))
            rc = fail(PINPOOL_EINVAL, "cannot resume tag '%s': it is not paused", s->tag);
    }
    for (uint32_t i = 0; i < nstags && rc == 0; i++) {
        const stag_t *s = &stags[i];
        if (!selected(s, tag))
            continue;
        /* Paused here, or (resident, no copy here) paused by another process. */
        int r = pinpool_swap_resume(ctx, s->name, NULL,
                                    keep && s->backup == PINPOOL_TMS_CPU_BACKUP ? PINPOOL_SWAP_KEEP_HOST : 0);
        if (r == PINPOOL_ENOKEY)
            rc = fail(PINPOOL_EINVAL, "cannot resume tag '%s': it is not paused, and no process "
                      "left a copy of it in the daemon", s->tag);
        else if (r != 0)
            rc = from_ctx(r, "resume");
        else
            queued[i] = true;
    }
    return rc;
}

/* A pause or a resume: the tag checked, the lock held, the steps that fn
 * queued (a flag per swap tag) waited for, the caller's CUDA context kept. */
static int step(const char *tag, int (*fn)(const char *tag, bool *queued))
{
    int rc;

    if (tag != NULL && (rc = check_tms_tag(tag)) != 0)
        return rc;
    pthread_mutex_lock(&lock);
    if (ctx == NULL) { /* nothing was ever allocated */
        pthread_mutex_unlock(&lock);
        return 0;
    }
    bool *queued = calloc(nstags + 1, sizeof(bool));
    CUcontext c = saved();
    rc = queued == NULL ? fail(-ENOMEM, "out of memory") : wait_all(tag, queued, fn(tag, queued));
    restore(c);
    free(queued);
    pthread_mutex_unlock(&lock);
    return rc;
}

int pinpool_tms_pause(const char *tag)
{
    return step(tag, pause_steps);
}

int pinpool_tms_resume(const char *tag)
{
    return step(tag, resume_steps);
}

/* ---- settings and views --------------------------------------------------------------- */

void pinpool_tms_set_retain(int on)
{
    pthread_mutex_lock(&lock);
    retain = on != 0;
    pthread_mutex_unlock(&lock);
}

int pinpool_tms_get_retain(void)
{
    pthread_mutex_lock(&lock);
    int r = retaining();
    pthread_mutex_unlock(&lock);
    return r;
}

void pinpool_tms_set_margin(uint64_t bytes)
{
    pthread_mutex_lock(&lock);
    margin = bytes;
    pthread_mutex_unlock(&lock);
}

int pinpool_tms_cpu_backup(uint64_t dptr, uint64_t bytes, void **host)
{
    pinpool_swap_info_t info;
    int rc = 0;

    if (host == NULL)
        return fail(PINPOOL_EINVAL, "host must not be NULL");
    *host = NULL;
    pthread_mutex_lock(&lock);
    alloc_t *a = ctx != NULL ? find_alloc(dptr, bytes) : NULL;
    if (a == NULL) {
        rc = fail(PINPOOL_EINVAL, "[0x%" PRIx64 ", +%" PRIu64 ") is not inside a tensor allocated "
                  "in a torch_memory_saver region", dptr, bytes);
    } else {
        const stag_t *s = &stags[a->stag];
        CUcontext c = saved();
        if (s->backup == PINPOOL_TMS_NO_BACKUP) {
            if ((rc = info_of(s, &info)) == 0 && info.state != PINPOOL_SWAP_RESIDENT)
                rc = fail(PINPOOL_EINVAL, "tag '%s' is paused without a CPU backup (its region had "
                          "enable_cpu_backup=False): its contents are gone", s->tag);
        } else if (s->backup == PINPOOL_TMS_CPU_BACKUP) {
            int r = pinpool_swap_host_ptr(ctx, s->name, dptr, bytes, host);
            if (r != 0 && r != PINPOOL_ENOENT)
                rc = from_ctx(r, "cpu backup");
        } /* a disk backup has no CPU copy to show */
        restore(c);
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

int pinpool_tms_usage(const char *tag, pinpool_tms_usage_t *out)
{
    pinpool_swap_info_t info;
    int rc = 0;

    if (out == NULL)
        return fail(PINPOOL_EINVAL, "out must not be NULL");
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&lock);
    CUcontext c = ctx != NULL ? saved() : NULL;
    for (uint32_t i = 0; i < nstags && rc == 0; i++) {
        const stag_t *s = &stags[i];
        if (!selected(s, tag) || (rc = info_of(s, &info)) != 0)
            continue;
        out->swap_tags++;
        out->paused += info.state != PINPOOL_SWAP_RESIDENT;
        out->device_bytes += info.device_bytes;
        if (info.host_slice_id != 0)
            out->host_bytes += info.bytes;
    }
    for (uint32_t i = 0; i < nallocs; i++)
        if (selected(&stags[allocs[i].stag], tag)) {
            out->allocations++;
            out->bytes += allocs[i].bytes;
        }
    if (c != NULL)
        restore(c);
    pthread_mutex_unlock(&lock);
    return rc;
}

#endif /* PINPOOL_HAVE_CUDA */
