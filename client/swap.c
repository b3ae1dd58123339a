/*
 * swap.c - pause and resume the GPU memory of a model through the pool
 * (pinpool_swap_* in pinpool.h).
 *
 * Owns: per context, the swap tags: their device buffers (CUDA VMM
 * allocations this file made, and buffers the caller registered), the host
 * copy of each tag (a pool slice), the events of a step in flight and a few
 * helper streams per GPU.
 * Never: frees a buffer it did not allocate; releases device memory or frees a
 * host copy while a copy that uses it may still run (both happen in
 * finish(), after the step's events completed); links libcuda (ipc_cu).
 * Locking: sw->lock serialises every call on the context's tags, including a
 * wait; it is taken before the context's own locks (pinpool_alloc & co.).
 *
 * Where the host copy lives is decided in the host_* functions only: a slice
 * kept under the key (PINPOOL_ALLOC_KEEP, found again by pinpool_attach; it
 * stays mapped here between steps, so a pause costs no RPC), or, with
 * PINPOOL_SWAP_SPILLABLE, a plain slice released under the key after the
 * pause (pinpool_release: the daemon may spill it to its tier) and acquired
 * again by the resume (pinpool_acquire restores it from the tier).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cudaload.h"
#include "internal.h"
#include "pinpool.h"

#define MAX_STREAMS 16
#define HOST_ALIGN 4096u /* each buffer's place in the host copy */

static int check_tag(const pinpool_ctx_t *ctx, const char *tag)
{
    size_t n;

    if (ctx == NULL)
        return -EINVAL;
    if (tag == NULL)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "tag must not be NULL");
    n = strlen(tag);
    if (n == 0 || n > PINPOOL_SWAP_TAG_MAX)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "a swap tag is 1 to %d characters (got %zu)",
                             PINPOOL_SWAP_TAG_MAX, n);
    for (size_t i = 0; i < n; i++)
        if (tag[i] < 0x21 || tag[i] > 0x7e)
            return pinpool__fail(ctx, PINPOOL_EINVAL,
                                 "a swap tag is printable ASCII without spaces");
    if (pinpool_err(ctx) != 0)
        return pinpool__fail(ctx, PINPOOL_ECLOSED, "not connected: %s", pinpool_errmsg(ctx));
    return 0;
}

#ifndef PINPOOL_HAVE_CUDA

/* Built without cuda.h: the API exists and says why it cannot work. */
static int no_cuda(const pinpool_ctx_t *ctx, const char *tag)
{
    int rc = check_tag(ctx, tag);
    if (rc != 0)
        return rc;
    return pinpool__fail(ctx, PINPOOL_ECUDA,
                         "the swap API needs CUDA, and this libpinpool was built "
                         "without CUDA support");
}

int pinpool_swap_alloc(pinpool_ctx_t *ctx, const char *tag, int32_t device, uint64_t bytes,
                       uint64_t *dptr)
{
    (void)device, (void)bytes, (void)dptr;
    return no_cuda(ctx, tag);
}

int pinpool_swap_register(pinpool_ctx_t *ctx, const char *tag, int32_t device, uint64_t dptr,
                          uint64_t bytes)
{
    (void)device, (void)bytes, (void)dptr;
    return no_cuda(ctx, tag);
}

int pinpool_swap_pause(pinpool_ctx_t *ctx, const char *tag, void *stream, uint32_t flags)
{
    (void)stream, (void)flags;
    return no_cuda(ctx, tag);
}

int pinpool_swap_resume(pinpool_ctx_t *ctx, const char *tag, void *stream, uint32_t flags)
{
    (void)stream, (void)flags;
    return no_cuda(ctx, tag);
}

int pinpool_swap_wait(pinpool_ctx_t *ctx, const char *tag)
{
    return no_cuda(ctx, tag);
}

int pinpool_swap_drop(pinpool_ctx_t *ctx, const char *tag, uint32_t flags)
{
    (void)flags;
    return no_cuda(ctx, tag);
}

int pinpool_swap_info(pinpool_ctx_t *ctx, const char *tag, pinpool_swap_info_t *out)
{
    (void)out;
    return no_cuda(ctx, tag);
}

int pinpool_swap_config(pinpool_ctx_t *ctx, uint32_t streams, uint64_t chunk_bytes)
{
    (void)streams, (void)chunk_bytes;
    return no_cuda(ctx, "config");
}

#else

/* One VMM allocation: a reserved range and, while mapped, its physical memory. */
typedef struct vmm {
    CUdeviceptr va;
    uint64_t size; /* reserved = mapped bytes (granularity multiple) */
    uint64_t used; /* bytes handed out (a small block fills up) */
    CUmemGenericAllocationHandle h;
    bool mapped;
    bool small;    /* shared by buffers below half a granule */
    uint32_t unit; /* its copy unit */
} vmm_t;

/* What a pause copies: a whole allocation's used bytes, or a registered buffer. */
typedef struct unit {
    CUdeviceptr dptr;
    uint64_t bytes;
    uint64_t host_off;
    int32_t vmm; /* its allocation in t->vmm, or -1 for a registered buffer */
} unit_t;

typedef struct tag {
    struct tag *next;
    char name[PINPOOL_SWAP_TAG_MAX + 1];
    char key[PINPOOL_SWAP_TAG_MAX + sizeof(PINPOOL_SWAP_KEY_PREFIX)];
    int device;
    pinpool_swap_state_t state;
    bool released;
    uint32_t step_flags; /* of the step in flight */
    uint32_t nbuf;
    vmm_t *vmm;
    uint32_t nvmm, capvmm;
    unit_t *units;
    uint32_t nunits, capunits;
    uint64_t host_bytes; /* layout of the host copy, valid while units do not change */
    bool have_host;
    bool host_kept; /* the slice was made with PINPOOL_ALLOC_KEEP (not releasable) */
    pinpool_slice_t host;
    bool events;
    CUevent fork, done[MAX_STREAMS];
    uint32_t ndone;
    CUevent *uev;   /* per unit: its copy is done (a released pause on one stream) */
    uint32_t nuev;
    bool tracked;   /* the step in flight recorded uev */
} tag_t;

/* A context's swap state (pinpool__ext_get makes it on the first swap call). */
typedef struct swap {
    pthread_mutex_t lock;
    tag_t *tags;
    uint32_t streams;
    uint64_t chunk;
    uint64_t gran[PINPOOL_MAX_DEVICES];
    CUstream helper[PINPOOL_MAX_DEVICES][MAX_STREAMS];
} swap_t;

static int swap_make(pinpool_ctx_t *ctx, void **state);
static void swap_destroy(pinpool_ctx_t *ctx, void *state);
static const pinpool__ext_t swap_ext = {.name = "swap", .make = swap_make, .destroy = swap_destroy};

static int cu_fail(const pinpool_ctx_t *ctx, CUresult r, const char *call, const char *what)
{
    char b[160];
    return pinpool__fail(ctx, PINPOOL_ECUDA,
                         "%s: %s", what, ipc_cuda_strerror(r, call, b, sizeof(b)));
}

#define CU_OR(ctx, call, what) IPC_CU_CHECK(call, return cu_fail((ctx), ipc_cu_r, #call, (what)))

/* The context's swap state, with CUDA and a pinned host pool checked. */
static int get_state(pinpool_ctx_t *ctx, swap_t **out)
{
    void *state = NULL;
    char why[256];
    int rc;

    if (ipc_cuda_load(why, sizeof(why)) != 0)
        return pinpool__fail(ctx, PINPOOL_ECUDA,
                             "the swap API needs CUDA in this process: %s", why);
    if (!pinpool__ctx_cuda_host(ctx))
        return pinpool__fail(ctx, PINPOOL_ECUDA,
                             "the daemon's host memory is not pinned for CUDA (it runs CPU-only, "
                             "memfd backend): start `pinpool serve` with --host-backend vmm for "
                             "the swap API");
    rc = pinpool__ext_get(ctx, &swap_ext, &state);
    *out = state;
    return rc;
}

static int swap_make(pinpool_ctx_t *ctx, void **state)
{
    swap_t *sw = calloc(1, sizeof(*sw));
    const char *e;

    if (sw == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    pthread_mutex_init(&sw->lock, NULL);
    sw->streams = 1;
    e = getenv("PINPOOL_SWAP_STREAMS");
    if (e != NULL && atoi(e) >= 1 && atoi(e) <= MAX_STREAMS)
        sw->streams = (uint32_t)atoi(e);
    e = getenv("PINPOOL_SWAP_CHUNK");
    if (e != NULL)
        pinpool_parse_size(e, &sw->chunk);
    *state = sw;
    return 0;
}

static tag_t *find_tag(swap_t *sw, const char *name)
{
    for (tag_t *t = sw->tags; t != NULL; t = t->next)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

static int use_device(pinpool_ctx_t *ctx, int device)
{
    if (ipc_cuda_use_device(device) != 0)
        return pinpool__fail(ctx, PINPOOL_ENODEV, "GPU %d is not usable (%d visible)", device,
                             ipc_cuda_device_count());
    return 0;
}

static CUmemAllocationProp dev_prop(int device)
{
    CUmemAllocationProp p;

    memset(&p, 0, sizeof(p));
    p.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    p.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    p.location.id = device;
    return p;
}

/* Back v with fresh physical memory, readable and writable by its GPU. */
static int vmm_map(pinpool_ctx_t *ctx, int device, vmm_t *v)
{
    CUmemAllocationProp p = dev_prop(device);
    CUmemAccessDesc a;
    CUresult r;

    r = ipc_cu.cuMemCreate(&v->h, v->size, &p, 0);
    if (r != CUDA_SUCCESS)
        return cu_fail(ctx, r, "cuMemCreate", "cannot get GPU memory for a swap buffer");
    r = ipc_cu.cuMemMap(v->va, v->size, 0, v->h, 0);
    if (r != CUDA_SUCCESS) {
        ipc_cu.cuMemRelease(v->h);
        return cu_fail(ctx, r, "cuMemMap", "cannot map a swap buffer");
    }
    memset(&a, 0, sizeof(a));
    a.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    a.location.id = device;
    a.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    r = ipc_cu.cuMemSetAccess(v->va, v->size, &a, 1);
    if (r != CUDA_SUCCESS) {
        ipc_cu.cuMemUnmap(v->va, v->size);
        ipc_cu.cuMemRelease(v->h);
        return cu_fail(ctx, r, "cuMemSetAccess", "cannot give the GPU access to a swap buffer");
    }
    v->mapped = true;
    return 0;
}

static void vmm_unmap(vmm_t *v)
{
    if (!v->mapped)
        return;
    ipc_cu.cuMemUnmap(v->va, v->size);
    ipc_cu.cuMemRelease(v->h);
    v->mapped = false;
}

static int grow(void **arr, uint32_t *cap, uint32_t n, size_t elem)
{
    if (n < *cap)
        return 0;
    uint32_t ncap = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, (size_t)ncap * elem);
    if (p == NULL)
        return -ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* ---- the host copy (see the file comment) ------------------------------------------ */

/* A host copy of t->host_bytes for a pause: the one this process holds, or a
 * new slice, kept under t->key or (spillable) plain, to be released under it. */
static int host_for_pause(pinpool_ctx_t *ctx, tag_t *t, bool spillable)
{
    pinpool_alloc_opts_t o = {.device_id = PINPOOL_HOST, .tag = t->key,
                              .flags = PINPOOL_ALLOC_GPU_ONLY | (spillable ? 0 : PINPOOL_ALLOC_KEEP)};
    int rc;

    if (t->have_host && t->host_kept == !spillable)
        return 0;
    if (spillable && pinpool_exists(ctx, t->key) == 1)
        return pinpool__fail(ctx, PINPOOL_EEXIST, "a released copy is already under '%s' (another "
                             "process paused tag '%s' spillable): resume it, or drop it with "
                             "PINPOOL_SWAP_FREE_HOST", t->key, t->name);
    if (t->have_host) { /* the other kind: a kept slice cannot be released */
        pinpool_free(ctx, t->host.id, NULL);
        t->have_host = false;
    }
    rc = pinpool_alloc(ctx, t->host_bytes, &o, &t->host);
    if (rc == PINPOOL_EEXIST)
        return pinpool__fail(ctx, rc,
                             "a host copy is already kept under '%s' (another process paused "
                             "tag '%s'): resume it, or drop it with PINPOOL_SWAP_FREE_HOST", t->key,
                             t->name);
    if (rc != 0)
        return rc; /* pinpool_alloc's message */
    t->have_host = true;
    t->host_kept = !spillable;
    return 0;
}

/* After a pause's copies completed: a kept slice stays mapped here; a
 * spillable one is released under the key (the daemon may spill it).  On
 * failure the copy stays mapped here, whole. */
static int host_after_pause(pinpool_ctx_t *ctx, tag_t *t, bool spillable)
{
    int rc;

    if (!spillable || !t->have_host)
        return 0;
    rc = pinpool_release(ctx, t->host.id, t->key, 0);
    if (rc != 0)
        return rc;
    t->have_host = false;
    return 0;
}

/* The host copy for a resume: the one this process holds, or the one kept
 * under t->key by another process (attached; it must have the tag's size). */
static int host_for_resume(pinpool_ctx_t *ctx, tag_t *t)
{
    int rc;

    if (t->have_host)
        return 0;
    /* A released copy first (restored from the tier if it was spilled), else a kept one. */
    rc = pinpool_acquire(ctx, t->key, PINPOOL_ALLOC_GPU_ONLY, &t->host);
    t->host_kept = false;
    if (rc == PINPOOL_ENOKEY || rc == PINPOOL_ENOENT) {
        rc = pinpool_attach(ctx, t->key, PINPOOL_ALLOC_GPU_ONLY, &t->host);
        t->host_kept = true;
    }
    if (rc == PINPOOL_ENOENT || rc == PINPOOL_ENOKEY)
        return pinpool__fail(ctx, PINPOOL_ENOKEY,
                             "tag '%s' is not paused: nothing is kept or released "
                             "under '%s'", t->name, t->key);
    if (rc != 0)
        return rc;
    if (t->host.size != t->host_bytes) {
        uint64_t got = t->host.size;
        if (t->host_kept)
            pinpool_detach(ctx, t->host.id);
        else /* give it back as it was */
            pinpool_release(ctx, t->host.id, t->key, 0);
        return pinpool__fail(ctx, PINPOOL_EINVAL,
                             "the copy kept under '%s' holds %" PRIu64 " bytes but the %" PRIu32
                             " buffers of tag '%s' need %" PRIu64 ": register the same buffers in "
                             "the same order as the process that paused it", t->key, got,
                             t->nbuf, t->name, t->host_bytes);
    }
    t->have_host = true;
    return 0;
}

/* After a resume's copies completed: free the copy unless asked to keep it. */
static void host_after_resume(pinpool_ctx_t *ctx, tag_t *t, bool keep)
{
    if (keep || !t->have_host)
        return;
    pinpool_free(ctx, t->host.id, NULL);
    t->have_host = false;
}

/* Free the copy in the daemon, whoever made it, kept or released. */
static void host_free_key(pinpool_ctx_t *ctx, tag_t *t)
{
    if (t->have_host)
        pinpool_free(ctx, t->host.id, NULL);
    t->have_host = false;
    if (pinpool_attach(ctx, t->key, PINPOOL_ALLOC_GPU_ONLY, &t->host) == 0)
        pinpool_free(ctx, t->host.id, NULL);
    pinpool_remove(ctx, t->key); /* PINPOOL_ENOKEY when there is none */
}

/* ---- steps --------------------------------------------------------------------------- */

/* The buffers changed: a host copy held for the old layout is stale. */
static void layout_changed(pinpool_ctx_t *ctx, tag_t *t)
{
    uint64_t off = 0;

    if (t->have_host) {
        pinpool_free(ctx, t->host.id, NULL);
        t->have_host = false;
    }
    for (uint32_t i = 0; i < t->nunits; i++) {
        t->units[i].host_off = off;
        off += (t->units[i].bytes + HOST_ALIGN - 1) / HOST_ALIGN * HOST_ALIGN;
    }
    t->host_bytes = off;
}

/* Block until t's step in flight is done and finish it (lock held). */
static int finish(pinpool_ctx_t *ctx, tag_t *t)
{
    CUresult r = CUDA_SUCCESS, r1;

    if (t->state != PINPOOL_SWAP_PAUSING && t->state != PINPOOL_SWAP_RESUMING)
        return 0;
    if (t->tracked) { /* give each allocation back as soon as its copy is done,
                       * while the later copies run on */
        for (uint32_t u = 0; u < t->nunits && r == CUDA_SUCCESS; u++)
            if (t->units[u].vmm >= 0 && (r = ipc_cu.cuEventSynchronize(t->uev[u])) == CUDA_SUCCESS)
                vmm_unmap(&t->vmm[t->units[u].vmm]);
        t->tracked = false;
    }
    for (uint32_t i = 0; i < t->ndone; i++) {
        r1 = ipc_cu.cuEventSynchronize(t->done[i]);
        if (r1 != CUDA_SUCCESS && r == CUDA_SUCCESS)
            r = r1;
    }
    if (r != CUDA_SUCCESS)
        return cu_fail(ctx, r, "cuEventSynchronize", "a swap copy failed");
    if (t->state == PINPOOL_SWAP_PAUSING) {
        if (t->step_flags & PINPOOL_SWAP_RELEASE) {
            for (uint32_t i = 0; i < t->nvmm; i++)
                vmm_unmap(&t->vmm[i]);
            t->released = true;
        }
        t->state = PINPOOL_SWAP_PAUSED; /* the bytes are safe in the host copy */
        return host_after_pause(ctx, t, (t->step_flags & PINPOOL_SWAP_SPILLABLE) != 0);
    } else {
        host_after_resume(ctx, t, (t->step_flags & PINPOOL_SWAP_KEEP_HOST) != 0);
        t->state = PINPOOL_SWAP_RESIDENT;
    }
    return 0;
}

/* Enqueue every unit's copy, after the work already on st; later work on st
 * waits for all of them.  A resume of a released tag (map) maps each
 * allocation just before its copy, so that the GPU copies the first buffers
 * while the CPU maps the next ones.  On failure waits for what was enqueued
 * (and unmaps everything again when mapping). */
static int enqueue(pinpool_ctx_t *ctx, swap_t *sw, tag_t *t, CUstream st, bool d2h,
                   bool map, bool track)
{
    uint32_t ns = sw->streams, k = 0;
    CUstream *h = sw->helper[t->device];
    CUresult r = CUDA_SUCCESS;
    const char *call = "";

    if (!t->events) {
        CU_OR(ctx, ipc_cu.cuEventCreate(&t->fork, CU_EVENT_DISABLE_TIMING), "swap events");
        for (uint32_t i = 0; i < MAX_STREAMS; i++)
            if ((r = ipc_cu.cuEventCreate(&t->done[i], CU_EVENT_DISABLE_TIMING)) != CUDA_SUCCESS) {
                while (i-- > 0)
                    ipc_cu.cuEventDestroy(t->done[i]);
                ipc_cu.cuEventDestroy(t->fork);
                return cu_fail(ctx, r, "cuEventCreate", "swap events");
            }
        t->events = true;
    }
    track = track && ns == 1; /* with pieces over several streams, only the join tells */
    if (track && t->nuev < t->nunits) {
        CUevent *e = realloc(t->uev, t->nunits * sizeof(*e));
        if (e == NULL)
            return pinpool__fail(ctx, -ENOMEM, "out of memory");
        t->uev = e;
        for (; t->nuev < t->nunits; t->nuev++)
            CU_OR(ctx, ipc_cu.cuEventCreate(&t->uev[t->nuev], CU_EVENT_DISABLE_TIMING), "swap events");
    }
    if (ns > 1) {
        for (uint32_t i = 0; i < ns; i++)
            if (h[i] == NULL)
                CU_OR(ctx, ipc_cu.cuStreamCreate(&h[i], CU_STREAM_NON_BLOCKING), "swap streams");
        CU_OR(ctx, ipc_cu.cuEventRecord(t->fork, st), "swap fork");
        for (uint32_t i = 0; i < ns; i++)
            CU_OR(ctx, ipc_cu.cuStreamWaitEvent(h[i], t->fork, 0), "swap fork");
    }
    for (uint32_t u = 0; u < t->nunits && r == CUDA_SUCCESS; u++) {
        const unit_t *un = &t->units[u];
        if (map && un->vmm >= 0 && !t->vmm[un->vmm].mapped) {
            int rc = vmm_map(ctx, t->device, &t->vmm[un->vmm]);
            if (rc != 0) { /* out of GPU memory, say: stays paused and released */
                ipc_cu.cuCtxSynchronize();
                for (uint32_t i = 0; i < t->nvmm; i++)
                    vmm_unmap(&t->vmm[i]);
                return rc;
            }
        }
        for (uint64_t off = 0; off < un->bytes && r == CUDA_SUCCESS;) {
            uint64_t n = un->bytes - off;
            if (sw->chunk != 0 && n > sw->chunk)
                n = sw->chunk;
            CUstream s = ns > 1 ? h[k++ % ns] : st;
            char *host = (char *)t->host.ptr + un->host_off + off;
            if (d2h) {
                call = "cuMemcpyDtoHAsync";
                r = ipc_cu.cuMemcpyDtoHAsync(host, un->dptr + off, n, s);
            } else {
                call = "cuMemcpyHtoDAsync";
                r = ipc_cu.cuMemcpyHtoDAsync(un->dptr + off, host, n, s);
            }
            off += n;
        }
        if (track && un->vmm >= 0 && r == CUDA_SUCCESS)
            r = ipc_cu.cuEventRecord(t->uev[u], st), call = "cuEventRecord";
    }
    if (r != CUDA_SUCCESS) {
        ipc_cu.cuCtxSynchronize();
        if (map)
            for (uint32_t i = 0; i < t->nvmm; i++)
                vmm_unmap(&t->vmm[i]);
        return cu_fail(ctx, r, call, d2h ? "cannot enqueue a pause's copy" : "cannot enqueue a resume's copy");
    }
    if (ns > 1) {
        for (uint32_t i = 0; i < ns; i++) {
            CU_OR(ctx, ipc_cu.cuEventRecord(t->done[i], h[i]), "swap join");
            CU_OR(ctx, ipc_cu.cuStreamWaitEvent(st, t->done[i], 0), "swap join");
        }
        t->ndone = ns;
    } else {
        CU_OR(ctx, ipc_cu.cuEventRecord(t->done[0], st), "swap done");
        t->ndone = 1;
    }
    return 0;
}

/* ---- the calls ----------------------------------------------------------------------- */

/* What a call accepts besides the tag's name: the tag must exist (or is made
 * by the call); flags within allowed (else "<flag_names> (got 0x..)"); its
 * pointer argument (args_ok, else the message args_wrong).  finish: the
 * tag's step in flight is finished first (its failure ends the call). */
typedef struct want {
    bool tag_exists, finish;
    uint32_t allowed;
    const char *flag_names;
    bool args_ok;
    const char *args_wrong;
} want_t;

/* Common start of a call: the name, state, lock, tag, device, then flags and
 * arguments as w says.  On 0 the lock is held: the call ends with end(). */
static int begin(pinpool_ctx_t *ctx, const char *name, uint32_t flags, const want_t *w,
                 swap_t **swp, tag_t **tp)
{
    swap_t *sw;
    tag_t *t;
    int rc;

    rc = check_tag(ctx, name);
    if (rc == 0)
        rc = get_state(ctx, &sw);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&sw->lock);
    t = find_tag(sw, name);
    if (t == NULL && w->tag_exists)
        rc = pinpool__fail(ctx, PINPOOL_EINVAL,
                           "no swap tag '%s' in this context (pinpool_swap_alloc "
                           "or pinpool_swap_register makes one)", name);
    else if (t != NULL)
        rc = use_device(ctx, t->device);
    if (rc == 0 && (flags & ~w->allowed) != 0)
        rc = pinpool__fail(ctx, PINPOOL_EINVAL, "%s (got 0x%x)", w->flag_names, flags);
    else if (rc == 0 && !w->args_ok)
        rc = pinpool__fail(ctx, PINPOOL_EINVAL, "%s", w->args_wrong);
    if (rc == 0 && w->finish)
        rc = finish(ctx, t);
    if (rc != 0) {
        pthread_mutex_unlock(&sw->lock);
        return rc;
    }
    *swp = sw;
    *tp = t;
    return 0;
}

static int end(swap_t *sw, int rc)
{
    pthread_mutex_unlock(&sw->lock);
    return rc;
}


/* The tag to add a buffer to (made if new); lock held. */
static int tag_for_add(pinpool_ctx_t *ctx, swap_t *sw, tag_t **tp, const char *name,
                       int32_t device, uint64_t bytes)
{
    tag_t *t = *tp;
    int rc;

    if (bytes == 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "a swap buffer of 0 bytes");
    if (device < 0 || device >= ipc_cuda_device_count() || device >= PINPOOL_MAX_DEVICES)
        return pinpool__fail(ctx, PINPOOL_ENODEV, "GPU %d does not exist (%d visible)", device,
                             ipc_cuda_device_count());
    if (t != NULL) {
        if (t->device != device)
            return pinpool__fail(ctx, PINPOOL_EINVAL,
                                 "tag '%s' is on GPU %d, not %d", name, t->device, device);
        rc = finish(ctx, t);
        if (rc != 0)
            return rc;
        if (t->state != PINPOOL_SWAP_RESIDENT)
            return pinpool__fail(ctx, PINPOOL_EINVAL,
                                 "tag '%s' is paused: resume it before adding buffers",
                                 name);
        return 0;
    }
    rc = use_device(ctx, device);
    if (rc != 0)
        return rc;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    snprintf(t->name, sizeof(t->name), "%s", name);
    snprintf(t->key, sizeof(t->key), PINPOOL_SWAP_KEY_PREFIX "%s", name);
    t->device = device;
    t->next = sw->tags;
    sw->tags = t;
    *tp = t;
    return 0;
}

static int add_unit(pinpool_ctx_t *ctx, tag_t *t, CUdeviceptr dptr, uint64_t bytes, uint32_t *idx)
{
    if (grow((void **)&t->units, &t->capunits, t->nunits, sizeof(unit_t)) != 0)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    t->units[t->nunits] = (unit_t){.dptr = dptr, .bytes = bytes, .vmm = -1};
    *idx = t->nunits++;
    return 0;
}

/* A new buffer of t on device: in the last small block when it has room,
 * else a VMM allocation of its own.  Lock held; t resident (tag_for_add). */
static int add_vmm(pinpool_ctx_t *ctx, swap_t *sw, tag_t *t, int32_t device, uint64_t bytes,
                   uint64_t *dptr)
{
    int rc;

    if (sw->gran[device] == 0) {
        CUmemAllocationProp p = dev_prop(device);
        size_t g = 0;
        CUresult r = ipc_cu.cuMemGetAllocationGranularity(&g, &p, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
        if (r != CUDA_SUCCESS)
            return cu_fail(ctx, r, "cuMemGetAllocationGranularity",
                           "CUDA VMM is not usable on this GPU");
        sw->gran[device] = g;
    }
    uint64_t gran = sw->gran[device], need = (bytes + 255) / 256 * 256;
    if (bytes < gran / 2 && t->nvmm > 0) { /* the last small block, if it has room */
        for (uint32_t i = t->nvmm; i-- > 0;) {
            vmm_t *v = &t->vmm[i];
            if (v->small && v->used + need <= v->size) {
                *dptr = v->va + v->used;
                v->used += need;
                t->units[v->unit].bytes = v->used;
                return 0;
            }
            if (v->small)
                break;
        }
    }
    if (grow((void **)&t->vmm, &t->capvmm, t->nvmm, sizeof(vmm_t)) != 0)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    vmm_t *v = &t->vmm[t->nvmm];
    memset(v, 0, sizeof(*v));
    v->size = (bytes + gran - 1) / gran * gran;
    v->small = bytes < gran / 2;
    v->used = v->small ? need : bytes;
    CUresult r = ipc_cu.cuMemAddressReserve(&v->va, v->size, 0, 0, 0);
    if (r != CUDA_SUCCESS)
        return cu_fail(ctx, r, "cuMemAddressReserve", "cannot reserve addresses for a swap buffer");
    rc = vmm_map(ctx, device, v);
    if (rc == 0)
        rc = add_unit(ctx, t, v->va, v->used, &v->unit);
    if (rc != 0) {
        vmm_unmap(v);
        ipc_cu.cuMemAddressFree(v->va, v->size);
        return rc;
    }
    t->units[v->unit].vmm = (int32_t)t->nvmm;
    t->nvmm++;
    *dptr = v->va;
    return 0;
}

/* Add a buffer to tag (made if new): a VMM allocation of ours (allocate:
 * *dptr gets its address) or the caller's buffer at *dptr (register). */
static int add_buffer(pinpool_ctx_t *ctx, const char *tag, int32_t device, uint64_t bytes,
                      uint64_t *dptr, bool allocate)
{
    const want_t w = {.args_ok = dptr != NULL && (allocate || *dptr != 0),
                      .args_wrong = allocate ? "dptr must not be NULL" : "dptr must not be 0"};
    swap_t *sw;
    uint32_t idx;
    tag_t *t;
    int rc = begin(ctx, tag, 0, &w, &sw, &t);

    if (rc != 0)
        return rc;
    rc = tag_for_add(ctx, sw, &t, tag, device, bytes);
    if (rc == 0)
        rc = allocate ? add_vmm(ctx, sw, t, device, bytes, dptr)
                      : add_unit(ctx, t, (CUdeviceptr)*dptr, bytes, &idx);
    if (rc == 0) {
        t->nbuf++;
        layout_changed(ctx, t);
    }
    return end(sw, rc);
}

int pinpool_swap_alloc(pinpool_ctx_t *ctx, const char *tag, int32_t device, uint64_t bytes,
                       uint64_t *dptr)
{
    return add_buffer(ctx, tag, device, bytes, dptr, true);
}

int pinpool_swap_register(pinpool_ctx_t *ctx, const char *tag, int32_t device, uint64_t dptr,
                          uint64_t bytes)
{
    return add_buffer(ctx, tag, device, bytes, &dptr, false);
}

int pinpool_swap_pause(pinpool_ctx_t *ctx, const char *tag, void *stream, uint32_t flags)
{
    static const want_t w = {
        .tag_exists = true, .finish = true, .args_ok = true,
        .allowed = PINPOOL_SWAP_RELEASE | PINPOOL_SWAP_SPILLABLE,
        .flag_names = "pause flags: PINPOOL_SWAP_RELEASE, PINPOOL_SWAP_SPILLABLE"};
    bool release = (flags & PINPOOL_SWAP_RELEASE) != 0;
    swap_t *sw;
    tag_t *t;
    int rc = begin(ctx, tag, flags, &w, &sw, &t);

    if (rc != 0)
        return rc;
    if (t->state != PINPOOL_SWAP_RESIDENT)
        rc = pinpool__fail(ctx, PINPOOL_EINVAL, "tag '%s' is already paused", tag);
    if (rc == 0)
        rc = host_for_pause(ctx, t, (flags & PINPOOL_SWAP_SPILLABLE) != 0);
    if (rc == 0)
        rc = enqueue(ctx, sw, t, (CUstream)stream, true, false, release);
    if (rc == 0) {
        t->tracked = release && sw->streams == 1;
        t->step_flags = flags;
        t->state = PINPOOL_SWAP_PAUSING;
    }
    return end(sw, rc);
}

int pinpool_swap_resume(pinpool_ctx_t *ctx, const char *tag, void *stream, uint32_t flags)
{
    static const want_t w = {.tag_exists = true, .finish = true, .args_ok = true,
                             .allowed = PINPOOL_SWAP_KEEP_HOST,
                             .flag_names = "resume flags: PINPOOL_SWAP_KEEP_HOST only"};
    swap_t *sw;
    tag_t *t;
    int rc = begin(ctx, tag, flags, &w, &sw, &t);

    if (rc != 0)
        return rc;
    if (t->state != PINPOOL_SWAP_PAUSED && (t->state != PINPOOL_SWAP_RESIDENT || t->have_host))
        rc = pinpool__fail(ctx, PINPOOL_EINVAL, "tag '%s' is not paused", tag);
    if (rc == 0)
        rc = host_for_resume(ctx, t);
    /* When the enqueue fails, a released tag stays so; else the device holds
     * partial data and the host copy is intact: resume again. */
    if (rc == 0)
        rc = enqueue(ctx, sw, t, (CUstream)stream, false, t->released, false);
    if (rc == 0) {
        t->released = false;
        t->step_flags = flags;
        t->state = PINPOOL_SWAP_RESUMING;
    }
    return end(sw, rc);
}

int pinpool_swap_wait(pinpool_ctx_t *ctx, const char *tag)
{
    static const want_t w = {.tag_exists = true, .finish = true, .args_ok = true};
    swap_t *sw;
    tag_t *t;
    int rc = begin(ctx, tag, 0, &w, &sw, &t);

    return rc != 0 ? rc : end(sw, 0);
}

static void free_tag(tag_t *t)
{
    for (uint32_t i = 0; i < t->nvmm; i++) {
        vmm_unmap(&t->vmm[i]);
        ipc_cu.cuMemAddressFree(t->vmm[i].va, t->vmm[i].size);
    }
    if (t->events) {
        ipc_cu.cuEventDestroy(t->fork);
        for (uint32_t i = 0; i < MAX_STREAMS; i++)
            ipc_cu.cuEventDestroy(t->done[i]);
    }
    for (uint32_t i = 0; i < t->nuev; i++)
        ipc_cu.cuEventDestroy(t->uev[i]);
    free(t->uev);
    free(t->vmm);
    free(t->units);
    free(t);
}

int pinpool_swap_drop(pinpool_ctx_t *ctx, const char *tag, uint32_t flags)
{
    static const want_t w = {.tag_exists = true, .args_ok = true,
                             .allowed = PINPOOL_SWAP_FREE_HOST,
                             .flag_names = "drop flags: PINPOOL_SWAP_FREE_HOST only"};
    swap_t *sw;
    tag_t *t, **pp;
    int rc = begin(ctx, tag, flags, &w, &sw, &t);

    if (rc != 0)
        return rc;
    rc = finish(ctx, t);
    if (rc != 0)
        ipc_cu.cuCtxSynchronize(); /* nothing may still use the memory freed below */
    if (flags & PINPOOL_SWAP_FREE_HOST)
        host_free_key(ctx, t);
    else if (t->have_host)
        pinpool_detach(ctx, t->host.id);
    for (pp = &sw->tags; *pp != t; pp = &(*pp)->next)
        ;
    *pp = t->next;
    free_tag(t);
    return end(sw, rc);
}

int pinpool_swap_info(pinpool_ctx_t *ctx, const char *tag, pinpool_swap_info_t *out)
{
    const want_t w = {.tag_exists = true, .args_ok = out != NULL,
                      .args_wrong = "out must not be NULL"};
    swap_t *sw;
    tag_t *t;
    int rc = begin(ctx, tag, 0, &w, &sw, &t);

    if (rc != 0)
        return rc;
    memset(out, 0, sizeof(*out));
    out->state = t->state;
    out->device_id = t->device;
    out->num_buffers = t->nbuf;
    out->bytes = t->host_bytes;
    for (uint32_t i = 0; i < t->nvmm; i++)
        out->device_bytes += t->vmm[i].mapped ? t->vmm[i].size : 0;
    out->host_slice_id = t->have_host ? t->host.id : 0;
    out->released = t->released;
    return end(sw, 0);
}

int pinpool_swap_config(pinpool_ctx_t *ctx, uint32_t streams, uint64_t chunk_bytes)
{
    swap_t *sw;
    int rc;

    rc = check_tag(ctx, "config");
    if (rc != 0)
        return rc;
    if (streams < 1 || streams > MAX_STREAMS)
        return pinpool__fail(ctx, PINPOOL_EINVAL,
                             "streams must be 1 to %d (got %" PRIu32 ")", MAX_STREAMS,
                             streams);
    if (chunk_bytes != 0 && chunk_bytes < (1u << 20))
        return pinpool__fail(ctx, PINPOOL_EINVAL, "chunk_bytes must be 0 or at least 1 MiB");
    rc = get_state(ctx, &sw);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&sw->lock);
    sw->streams = streams;
    sw->chunk = chunk_bytes;
    pthread_mutex_unlock(&sw->lock);
    return 0;
}

/* pinpool_close: the tags' device memory goes; their host copies stay kept. */
static void swap_destroy(pinpool_ctx_t *ctx, void *state)
{
    swap_t *sw = state;

    pthread_mutex_lock(&sw->lock);
    while (sw->tags != NULL) {
        tag_t *t = sw->tags;
        ipc_cuda_use_device(t->device);
        if (finish(ctx, t) != 0)
            ipc_cu.cuCtxSynchronize();
        sw->tags = t->next;
        free_tag(t); /* the host copy stays kept in the daemon */
    }
    for (int d = 0; d < PINPOOL_MAX_DEVICES; d++)
        for (int i = 0; i < MAX_STREAMS; i++)
            if (sw->helper[d][i] != NULL) {
                ipc_cuda_use_device(d);
                ipc_cu.cuStreamDestroy(sw->helper[d][i]);
            }
    pthread_mutex_unlock(&sw->lock);
    pthread_mutex_destroy(&sw->lock);
    free(sw);
}

#endif
