/*
 * swap.c - pause and resume the GPU memory of a model through the pool
 * (pinpool_swap_* in pinpool.h).
 *
 * Owns: per context, the swap tags (their list, states and layouts), the
 * events of a step in flight and a few helper streams per GPU.
 * Never: frees a buffer it did not allocate; releases device memory or frees a
 * host copy while a copy that uses it may still run (both happen in
 * finish(), after the step's events completed); links libcuda (ipc_cu).
 * Locking: sw->lock serialises every call on the context's tags, including a
 * wait; it is taken before the context's own locks (pinpool_alloc & co.).
 *
 * The memory itself (VMM allocations in pieces, where the host copy lives) is
 * swap_mem.c's; this file decides when it is mapped, copied and given back.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pinpool.h"
#include "swap_int.h"


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
    if (pinpool_err(ctx) == PINPOOL_ESESSION)
        return pinpool__fail(ctx, PINPOOL_ESESSION, "%s", pinpool_errmsg(ctx));
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

int pinpool_swap_free(pinpool_ctx_t *ctx, const char *tag, uint64_t dptr)
{
    (void)dptr;
    return no_cuda(ctx, tag);
}

int pinpool_swap_host_ptr(pinpool_ctx_t *ctx, const char *tag, uint64_t dptr, uint64_t bytes,
                          void **host)
{
    (void)dptr, (void)bytes, (void)host;
    return no_cuda(ctx, tag);
}

int pinpool__swap_alloc_own(pinpool_ctx_t *ctx, const char *tag, int32_t device, uint64_t bytes,
                            uint64_t *dptr)
{
    (void)device, (void)bytes, (void)dptr;
    return no_cuda(ctx, tag);
}

#else

typedef pinpool__tag_t tag_t;
typedef pinpool__vmm_t vmm_t;
typedef pinpool__unit_t unit_t;
typedef pinpool__swap_t swap_t;

#define MAX_STREAMS PINPOOL__SWAP_MAX_STREAMS

static int swap_make(pinpool_ctx_t *ctx, void **state);
static void swap_destroy(pinpool_ctx_t *ctx, void *state);
static void swap_reset(pinpool_ctx_t *ctx, void *state);
static const pinpool__ext_t swap_ext = {.name = "swap", .make = swap_make, .destroy = swap_destroy,
                                        .reset = swap_reset};

#define cu_fail pinpool__swap_cu_fail
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

#define DEFAULT_MAP_CHUNK (64ull << 20)

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
    sw->map_chunk = DEFAULT_MAP_CHUNK;
    e = getenv("PINPOOL_SWAP_MAP_CHUNK");
    if (e != NULL && pinpool_parse_size(e, &sw->map_chunk) != 0)
        sw->map_chunk = DEFAULT_MAP_CHUNK;
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

static void unmap_all(tag_t *t)
{
    for (uint32_t i = 0; i < t->nvmm; i++)
        pinpool__vmm_unmap(&t->vmm[i]);
}

/* ---- steps --------------------------------------------------------------------------- */

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
                pinpool__vmm_unmap(&t->vmm[t->units[u].vmm]);
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
            unmap_all(t);
            t->released = true;
        }
        t->state = PINPOOL_SWAP_PAUSED; /* the bytes are safe in the host copy */
        if (t->step_flags & PINPOOL_SWAP_DISCARD) {
            t->discarded = true;
            return 0;
        }
        return pinpool__host_after_pause(ctx, t, (t->step_flags & PINPOOL_SWAP_SPILLABLE) != 0);
    }
    if (!t->discarded)
        pinpool__host_after_resume(ctx, t, (t->step_flags & PINPOOL_SWAP_KEEP_HOST) != 0);
    t->discarded = false;
    t->state = PINPOOL_SWAP_RESIDENT;
    if (t->layout_stale) /* buffers went while paused: the copy's offsets are done with */
        pinpool__swap_layout(ctx, t);
    return 0;
}

/* Copy [a, b) of unit un (d2h: into the host copy, else back) on st or the
 * helper streams (round robin from *k) in pieces of sw->chunk. */
static CUresult copy_range(const swap_t *sw, const tag_t *t, const unit_t *un, uint64_t a, uint64_t b,
                           bool d2h, CUstream st, uint32_t *k, const char **call)
{
    uint32_t ns = sw->streams;
    CUstream const *h = sw->helper[t->device];
    CUresult r = CUDA_SUCCESS;

    for (uint64_t off = a; off < b && r == CUDA_SUCCESS;) {
        uint64_t n = b - off;
        if (sw->chunk != 0 && n > sw->chunk)
            n = sw->chunk;
        CUstream s = ns > 1 ? h[(*k)++ % ns] : st;
        char *host = (char *)t->host.ptr + un->host_off + off;
        if (d2h) {
            *call = "cuMemcpyDtoHAsync";
            r = ipc_cu.cuMemcpyDtoHAsync(host, un->dptr + off, n, s);
        } else {
            *call = "cuMemcpyHtoDAsync";
            r = ipc_cu.cuMemcpyHtoDAsync(un->dptr + off, host, n, s);
        }
        off += n;
    }
    return r;
}

/* Enqueue every unit's copy (copy false: none, as for a DISCARD pause), after
 * the work already on st; later work on st waits for all of them.  A resume
 * of a released tag (map) maps each allocation piece by piece
 * (sw->map_chunk), each piece just before its copy, so that the GPU copies the
 * first pieces while the CPU maps the next ones.  On failure waits for what
 * was enqueued (and unmaps everything again when mapping). */
static int enqueue(pinpool_ctx_t *ctx, swap_t *sw, tag_t *t, CUstream st, bool d2h, bool map, bool track,
                   bool copy)
{
    uint32_t ns = sw->streams, k = 0;
    CUstream *h = sw->helper[t->device];
    CUresult r = CUDA_SUCCESS;
    const char *call = "";
    int rc = 0;

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
    if (!copy)
        ns = 1;
    track = track && ns == 1 && copy; /* with pieces over several streams, only the join tells */
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
    for (uint32_t u = 0; u < t->nunits && r == CUDA_SUCCESS && rc == 0; u++) {
        const unit_t *un = &t->units[u];
        vmm_t *v = un->vmm >= 0 ? &t->vmm[un->vmm] : NULL;
        bool mapping = map && v != NULL && v->nmapped == 0;
        uint32_t nseg = 1;
        uint64_t seg = un->bytes;
        if (mapping && (rc = pinpool__vmm_plan(ctx, v, sw->map_chunk, sw->gran[t->device])) == 0) {
            nseg = v->npieces;
            seg = v->piece;
        }
        for (uint32_t i = 0; i < nseg && r == CUDA_SUCCESS && rc == 0; i++) {
            uint64_t a = (uint64_t)i * seg, b = a + seg < un->bytes ? a + seg : un->bytes;
            if (mapping)
                rc = pinpool__vmm_map_piece(ctx, t->device, v, i);
            if (rc == 0 && copy && a < b)
                r = copy_range(sw, t, un, a, b, d2h, st, &k, &call);
        }
        if (track && v != NULL && r == CUDA_SUCCESS && rc == 0)
            r = ipc_cu.cuEventRecord(t->uev[u], st), call = "cuEventRecord";
    }
    if (r != CUDA_SUCCESS || rc != 0) {
        ipc_cu.cuCtxSynchronize();
        if (map) /* out of GPU memory, say: stays paused and released */
            unmap_all(t);
        if (rc != 0)
            return rc;
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

/* Add a buffer to tag (made if new): a VMM allocation of ours (allocate:
 * *dptr gets its address; own: not sharing granules) or the caller's buffer
 * at *dptr (register). */
static int add_buffer(pinpool_ctx_t *ctx, const char *tag, int32_t device, uint64_t bytes,
                      uint64_t *dptr, bool allocate, bool own)
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
        rc = allocate ? pinpool__swap_add_vmm(ctx, sw, t, bytes, own, dptr)
                      : pinpool__swap_add_unit(ctx, t, (CUdeviceptr)*dptr, bytes, &idx);
    if (rc == 0) {
        t->nbuf++;
        pinpool__swap_layout(ctx, t);
    }
    return end(sw, rc);
}

int pinpool_swap_alloc(pinpool_ctx_t *ctx, const char *tag, int32_t device, uint64_t bytes,
                       uint64_t *dptr)
{
    return add_buffer(ctx, tag, device, bytes, dptr, true, false);
}

int pinpool__swap_alloc_own(pinpool_ctx_t *ctx, const char *tag, int32_t device, uint64_t bytes,
                            uint64_t *dptr)
{
    return add_buffer(ctx, tag, device, bytes, dptr, true, true);
}

int pinpool_swap_register(pinpool_ctx_t *ctx, const char *tag, int32_t device, uint64_t dptr,
                          uint64_t bytes)
{
    return add_buffer(ctx, tag, device, bytes, &dptr, false, false);
}

int pinpool_swap_free(pinpool_ctx_t *ctx, const char *tag, uint64_t dptr)
{
    static const want_t w = {.tag_exists = true, .finish = true, .args_ok = true};
    swap_t *sw;
    tag_t *t;
    int rc = begin(ctx, tag, 0, &w, &sw, &t);

    if (rc != 0)
        return rc;
    if (t->state == PINPOOL_SWAP_RESIDENT)
        ipc_cu.cuCtxSynchronize(); /* no work in flight may still use the memory */
    rc = pinpool__swap_remove(ctx, t, dptr);
    if (rc == 0) {
        t->nbuf--;
        if (t->state == PINPOOL_SWAP_RESIDENT)
            pinpool__swap_layout(ctx, t);
        else /* the copy keeps its offsets until it is done with */
            t->layout_stale = true;
    }
    return end(sw, rc);
}

int pinpool_swap_pause(pinpool_ctx_t *ctx, const char *tag, void *stream, uint32_t flags)
{
    static const want_t w = {
        .tag_exists = true, .finish = true, .args_ok = true,
        .allowed = PINPOOL_SWAP_RELEASE | PINPOOL_SWAP_SPILLABLE | PINPOOL_SWAP_DISCARD |
                   PINPOOL_SWAP_REPLACE,
        .flag_names = "pause flags: PINPOOL_SWAP_RELEASE, PINPOOL_SWAP_SPILLABLE, "
                      "PINPOOL_SWAP_DISCARD, PINPOOL_SWAP_REPLACE"};
    bool release = (flags & PINPOOL_SWAP_RELEASE) != 0, discard = (flags & PINPOOL_SWAP_DISCARD) != 0;
    swap_t *sw;
    tag_t *t;
    int rc = begin(ctx, tag, flags, &w, &sw, &t);

    if (rc != 0)
        return rc;
    if (t->state != PINPOOL_SWAP_RESIDENT)
        rc = pinpool__fail(ctx, PINPOOL_EINVAL, "tag '%s' is already paused", tag);
    else if (t->nunits == 0)
        rc = pinpool__fail(ctx, PINPOOL_EINVAL, "tag '%s' has no buffers to pause", tag);
    else if (discard && (flags & PINPOOL_SWAP_SPILLABLE))
        rc = pinpool__fail(ctx, PINPOOL_EINVAL, "PINPOOL_SWAP_DISCARD keeps no copy: it does not "
                           "go with PINPOOL_SWAP_SPILLABLE");
    if (rc == 0 && !discard)
        rc = pinpool__host_for_pause(ctx, t, (flags & PINPOOL_SWAP_SPILLABLE) != 0,
                                     (flags & PINPOOL_SWAP_REPLACE) != 0);
    if (rc == 0)
        rc = enqueue(ctx, sw, t, (CUstream)stream, true, false, release, !discard);
    if (rc == 0) {
        t->tracked = release && sw->streams == 1 && !discard;
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
    if (rc == 0 && !t->discarded)
        rc = pinpool__host_for_resume(ctx, t);
    /* When the enqueue fails, a released tag stays so; else the device holds
     * partial data and the host copy is intact: resume again. */
    if (rc == 0)
        rc = enqueue(ctx, sw, t, (CUstream)stream, false, t->released, false, !t->discarded);
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
    for (uint32_t i = 0; i < t->nvmm; i++)
        pinpool__vmm_destroy(&t->vmm[i]);
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
    ipc_cu.cuCtxSynchronize(); /* nothing may still use the memory freed below */
    if (flags & PINPOOL_SWAP_FREE_HOST)
        pinpool__host_free_key(ctx, t);
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
        out->device_bytes += pinpool__vmm_mapped_bytes(&t->vmm[i]);
    out->host_slice_id = t->have_host ? t->host.id : 0;
    out->released = t->released;
    return end(sw, 0);
}

int pinpool_swap_host_ptr(pinpool_ctx_t *ctx, const char *tag, uint64_t dptr, uint64_t bytes,
                          void **host)
{
    const want_t w = {.tag_exists = true, .finish = true, .args_ok = host != NULL,
                      .args_wrong = "host must not be NULL"};
    swap_t *sw;
    tag_t *t;
    int rc = begin(ctx, tag, 0, &w, &sw, &t);

    if (rc != 0)
        return rc;
    const unit_t *un = NULL;
    for (uint32_t u = 0; u < t->nunits && un == NULL; u++)
        if (t->units[u].dptr <= dptr && bytes <= t->units[u].bytes &&
            dptr - t->units[u].dptr <= t->units[u].bytes - bytes)
            un = &t->units[u];
    if (un == NULL)
        rc = pinpool__fail(ctx, PINPOOL_EINVAL, "[0x%" PRIx64 ", +%" PRIu64 ") is not inside one "
                           "buffer of swap tag '%s'", dptr, bytes, tag);
    else if (!t->have_host)
        rc = pinpool__fail(ctx, PINPOOL_ENOENT, "tag '%s' holds no host copy in this process (%s)",
                           tag, t->state == PINPOOL_SWAP_RESIDENT ? "it is resident"
                           : t->discarded ? "it was paused with PINPOOL_SWAP_DISCARD"
                                          : "its copy was released to the daemon");
    if (rc == 0)
        rc = pinpool__host_cpu_view(ctx, t);
    if (rc == 0)
        *host = (char *)t->host.ptr + un->host_off + (dptr - un->dptr);
    return end(sw, rc);
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

/*
 * pinpool_reconnect: the host copies this process holds were slices of the
 * session that ended, and their mappings are about to go.  A step in flight
 * is let finish on the GPU first (nothing may copy to or from them after),
 * and ends where its device memory is: resident (a pause had not given it
 * back yet, a resume has mapped and filled it).  Then each tag forgets its
 * copy: a paused tag resumes from one the daemon keeps under its key, if any.
 */
static void swap_reset(pinpool_ctx_t *ctx, void *state)
{
    swap_t *sw = state;

    (void)ctx;
    pthread_mutex_lock(&sw->lock);
    for (tag_t *t = sw->tags; t != NULL; t = t->next) {
        if (t->state == PINPOOL_SWAP_PAUSING || t->state == PINPOOL_SWAP_RESUMING) {
            ipc_cuda_use_device(t->device);
            ipc_cu.cuCtxSynchronize();
            t->state = PINPOOL_SWAP_RESIDENT;
            t->tracked = false;
            t->discarded = false;
        }
        if (t->have_host && t->state == PINPOOL_SWAP_PAUSED)
            t->copy_lost = true; /* resume says so, unless the daemon kept one under the key */
        t->have_host = false;
        memset(&t->host, 0, sizeof(t->host));
        if (t->layout_stale && t->state == PINPOOL_SWAP_RESIDENT)
            pinpool__swap_layout(ctx, t); /* no copy: only the offsets */
    }
    pthread_mutex_unlock(&sw->lock);
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
