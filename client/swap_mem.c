/*
 * swap_mem.c - the memory behind a swap tag: its device buffers (CUDA VMM
 * allocations made here, and buffers the caller registered) and its host copy
 * (a pool slice).  The tags and their steps are swap.c's.
 *
 * Owns: the VMM allocations of every tag (reserved addresses, physical memory
 * in pieces while mapped) and where the host copy lives.
 * Never: frees a buffer it did not allocate; releases device memory or frees
 * a host copy itself while a copy may still use it (swap.c calls these
 * functions only once a step's events completed); links libcuda (ipc_cu).
 * Locking: none of its own; every function runs under the context's swap
 * lock (swap_int.h).
 *
 * Where the host copy lives is decided in the host functions only: a slice
 * kept under the key (PINPOOL_ALLOC_KEEP, found again by pinpool_attach; it
 * stays mapped here between steps, so a pause costs no RPC), or, with
 * PINPOOL_SWAP_SPILLABLE, a plain slice released under the key after the
 * pause (pinpool_release: the daemon may spill it to its tier) and acquired
 * again by the resume (pinpool_acquire restores it from the tier).  The copy
 * is mapped for CUDA only (PINPOOL_ALLOC_GPU_ONLY) until pinpool_swap_host_ptr
 * asks for a CPU view.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "swap_int.h"

#ifdef PINPOOL_HAVE_CUDA

typedef pinpool__tag_t tag_t;
typedef pinpool__vmm_t vmm_t;
typedef pinpool__unit_t unit_t;

int pinpool__swap_cu_fail(const pinpool_ctx_t *ctx, CUresult r, const char *call, const char *what)
{
    char b[160];
    return pinpool__fail(ctx, PINPOOL_ECUDA, "%s: %s", what, ipc_cuda_strerror(r, call, b, sizeof(b)));
}

int pinpool__swap_grow(void **arr, uint32_t *cap, uint32_t n, size_t elem)
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

/* ---- device memory -------------------------------------------------------------------- */

static CUmemAllocationProp dev_prop(int device)
{
    CUmemAllocationProp p;

    memset(&p, 0, sizeof(p));
    p.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    p.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    p.location.id = device;
    return p;
}

static uint64_t piece_len(const vmm_t *v, uint32_t i)
{
    uint64_t off = (uint64_t)i * v->piece;
    return v->size - off < v->piece ? v->size - off : v->piece;
}

int pinpool__vmm_plan(pinpool_ctx_t *ctx, vmm_t *v, uint64_t piece, uint64_t gran)
{
    if (piece == 0 || piece >= v->size)
        piece = v->size;
    piece = (piece + gran - 1) / gran * gran;
    uint32_t n = (uint32_t)((v->size + piece - 1) / piece);
    if (n != v->npieces || v->h == NULL) {
        CUmemGenericAllocationHandle *h = realloc(v->h, n * sizeof(*h));
        if (h == NULL)
            return pinpool__fail(ctx, -ENOMEM, "out of memory");
        v->h = h;
    }
    v->piece = piece;
    v->npieces = n;
    v->nmapped = 0;
    return 0;
}

int pinpool__vmm_map_piece(pinpool_ctx_t *ctx, int device, vmm_t *v, uint32_t i)
{
    CUmemAllocationProp p = dev_prop(device);
    CUdeviceptr at = v->va + (uint64_t)i * v->piece;
    uint64_t n = piece_len(v, i);
    CUmemAccessDesc a;
    CUresult r;

    r = ipc_cu.cuMemCreate(&v->h[i], n, &p, 0);
    if (r != CUDA_SUCCESS)
        return pinpool__swap_cu_fail(ctx, r, "cuMemCreate", "cannot get GPU memory for a swap buffer");
    r = ipc_cu.cuMemMap(at, n, 0, v->h[i], 0);
    if (r != CUDA_SUCCESS) {
        ipc_cu.cuMemRelease(v->h[i]);
        return pinpool__swap_cu_fail(ctx, r, "cuMemMap", "cannot map a swap buffer");
    }
    memset(&a, 0, sizeof(a));
    a.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    a.location.id = device;
    a.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    r = ipc_cu.cuMemSetAccess(at, n, &a, 1);
    if (r != CUDA_SUCCESS) {
        ipc_cu.cuMemUnmap(at, n);
        ipc_cu.cuMemRelease(v->h[i]);
        return pinpool__swap_cu_fail(ctx, r, "cuMemSetAccess", "cannot give the GPU access to a swap buffer");
    }
    v->nmapped = i + 1;
    return 0;
}

void pinpool__vmm_unmap(vmm_t *v)
{
    for (uint32_t i = 0; i < v->nmapped; i++) {
        ipc_cu.cuMemUnmap(v->va + (uint64_t)i * v->piece, piece_len(v, i));
        ipc_cu.cuMemRelease(v->h[i]);
    }
    v->nmapped = 0;
}

uint64_t pinpool__vmm_mapped_bytes(const vmm_t *v)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < v->nmapped; i++)
        n += piece_len(v, i);
    return n;
}

void pinpool__vmm_destroy(vmm_t *v)
{
    pinpool__vmm_unmap(v);
    if (v->va != 0)
        ipc_cu.cuMemAddressFree(v->va, v->size);
    free(v->h);
    free(v->subs);
    memset(v, 0, sizeof(*v));
}

int pinpool__swap_add_unit(pinpool_ctx_t *ctx, tag_t *t, CUdeviceptr dptr, uint64_t bytes, uint32_t *idx)
{
    if (pinpool__swap_grow((void **)&t->units, &t->capunits, t->nunits, sizeof(unit_t)) != 0)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    t->units[t->nunits] = (unit_t){.dptr = dptr, .bytes = bytes, .vmm = -1};
    *idx = t->nunits++;
    return 0;
}

static int add_sub(pinpool_ctx_t *ctx, vmm_t *v, uint64_t off)
{
    if (pinpool__swap_grow((void **)&v->subs, &v->capsubs, v->nsubs, sizeof(*v->subs)) != 0)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    v->subs[v->nsubs++] = off;
    return 0;
}

int pinpool__swap_add_vmm(pinpool_ctx_t *ctx, pinpool__swap_t *sw, tag_t *t, uint64_t bytes, bool own,
                          uint64_t *dptr)
{
    int device = t->device, rc;

    if (sw->gran[device] == 0) {
        CUmemAllocationProp p = dev_prop(device);
        size_t g = 0;
        CUresult r = ipc_cu.cuMemGetAllocationGranularity(&g, &p, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
        if (r != CUDA_SUCCESS || g == 0)
            return pinpool__swap_cu_fail(ctx, r, "cuMemGetAllocationGranularity",
                                         "CUDA VMM is not usable on this GPU");
        sw->gran[device] = g;
    }
    uint64_t gran = sw->gran[device], need = (bytes + 255) / 256 * 256;
    bool small = !own && bytes < gran / 2;
    if (bytes > UINT64_MAX - gran)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "a swap buffer of %" PRIu64 " bytes is too large", bytes);
    if (small && t->nvmm > 0) { /* the last small block, if it has room */
        for (uint32_t i = t->nvmm; i-- > 0;) {
            vmm_t *v = &t->vmm[i];
            if (v->small && v->used + need <= v->size) {
                if ((rc = add_sub(ctx, v, v->used)) != 0)
                    return rc;
                *dptr = v->va + v->used;
                v->used += need;
                t->units[v->unit].bytes = v->used;
                return 0;
            }
            if (v->small)
                break;
        }
    }
    if (pinpool__swap_grow((void **)&t->vmm, &t->capvmm, t->nvmm, sizeof(vmm_t)) != 0)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    vmm_t *v = &t->vmm[t->nvmm];
    memset(v, 0, sizeof(*v));
    v->size = (bytes + gran - 1) / gran * gran;
    v->small = small;
    v->used = small ? need : bytes;
    CUresult r = ipc_cu.cuMemAddressReserve(&v->va, v->size, 0, 0, 0);
    if (r != CUDA_SUCCESS) {
        v->va = 0;
        return pinpool__swap_cu_fail(ctx, r, "cuMemAddressReserve",
                                     "cannot reserve addresses for a swap buffer");
    }
    rc = pinpool__vmm_plan(ctx, v, 0, gran); /* a fresh buffer: one piece */
    if (rc == 0)
        rc = pinpool__vmm_map_piece(ctx, device, v, 0);
    if (rc == 0 && small)
        rc = add_sub(ctx, v, 0);
    if (rc == 0)
        rc = pinpool__swap_add_unit(ctx, t, v->va, v->used, &v->unit);
    if (rc != 0) {
        pinpool__vmm_destroy(v);
        return rc;
    }
    t->units[v->unit].vmm = (int32_t)t->nvmm;
    t->nvmm++;
    *dptr = v->va;
    return 0;
}

static void remove_unit(tag_t *t, uint32_t u)
{
    memmove(&t->units[u], &t->units[u + 1], (t->nunits - u - 1) * sizeof(unit_t));
    t->nunits--;
    for (uint32_t i = 0; i < t->nvmm; i++)
        if (t->vmm[i].unit > u)
            t->vmm[i].unit--;
}

static void remove_vmm(tag_t *t, uint32_t k)
{
    pinpool__vmm_destroy(&t->vmm[k]);
    memmove(&t->vmm[k], &t->vmm[k + 1], (t->nvmm - k - 1) * sizeof(vmm_t));
    t->nvmm--;
    for (uint32_t i = 0; i < t->nunits; i++)
        if (t->units[i].vmm > (int32_t)k)
            t->units[i].vmm--;
}

int pinpool__swap_remove(pinpool_ctx_t *ctx, tag_t *t, uint64_t dptr)
{
    for (uint32_t k = 0; k < t->nvmm; k++) {
        vmm_t *v = &t->vmm[k];
        if (dptr < v->va || dptr >= v->va + v->size)
            continue;
        if (v->small) {
            uint32_t j = 0;
            while (j < v->nsubs && v->va + v->subs[j] != dptr)
                j++;
            if (j == v->nsubs)
                break;
            v->subs[j] = v->subs[--v->nsubs];
            if (v->nsubs > 0) /* the block stays while it has buffers */
                return 0;
        } else if (dptr != v->va) {
            break;
        }
        remove_unit(t, v->unit);
        remove_vmm(t, k);
        return 0;
    }
    for (uint32_t u = 0; u < t->nunits; u++)
        if (t->units[u].vmm < 0 && t->units[u].dptr == dptr) {
            remove_unit(t, u);
            return 0;
        }
    return pinpool__fail(ctx, PINPOOL_EINVAL, "0x%" PRIx64 " is not a buffer of swap tag '%s' "
                         "(already freed, or another tag's)", dptr, t->name);
}

void pinpool__swap_layout(pinpool_ctx_t *ctx, tag_t *t)
{
    uint64_t off = 0;

    if (t->have_host) {
        pinpool_free(ctx, t->host.id, NULL);
        t->have_host = false;
    }
    for (uint32_t i = 0; i < t->nunits; i++) {
        t->units[i].host_off = off;
        off += (t->units[i].bytes + PINPOOL__SWAP_HOST_ALIGN - 1) / PINPOOL__SWAP_HOST_ALIGN *
               PINPOOL__SWAP_HOST_ALIGN;
    }
    t->host_bytes = off;
    t->layout_stale = false;
}

/* ---- the host copy (see the file comment) ------------------------------------------- */

/* Free what another process left under t's key: a kept slice, a released object. */
static void drop_foreign(pinpool_ctx_t *ctx, tag_t *t)
{
    pinpool_slice_t s;

    if (pinpool_attach(ctx, t->key, PINPOOL_ALLOC_GPU_ONLY, &s) == 0)
        pinpool_free(ctx, s.id, NULL);
    pinpool_remove(ctx, t->key); /* PINPOOL_ENOKEY when there is none */
}

/* A host copy of t->host_bytes for a pause: the one this process holds, or a
 * new slice, kept under t->key or (spillable) plain, to be released under it.
 * replace: a copy another process left under the key is freed first. */
int pinpool__host_for_pause(pinpool_ctx_t *ctx, tag_t *t, bool spillable, bool replace)
{
    pinpool_alloc_opts_t o = {.device_id = PINPOOL_HOST, .tag = t->key,
                              .flags = PINPOOL_ALLOC_GPU_ONLY | (spillable ? 0 : PINPOOL_ALLOC_KEEP)};
    int rc;

    if (t->have_host && t->host_kept == !spillable)
        return 0;
    if (t->have_host) { /* the other kind: a kept slice cannot be released */
        pinpool_free(ctx, t->host.id, NULL);
        t->have_host = false;
    }
    if (replace)
        drop_foreign(ctx, t);
    if (spillable && pinpool_exists(ctx, t->key) == 1)
        return pinpool__fail(ctx, PINPOOL_EEXIST, "a released copy is already under '%s' (another "
                             "process paused tag '%s' spillable): resume it, or drop it with "
                             "PINPOOL_SWAP_FREE_HOST", t->key, t->name);
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
    t->host_cpu = false;
    return 0;
}

/* After a pause's copies completed: a kept slice stays mapped here; a
 * spillable one is released under the key (the daemon may spill it).  On
 * failure the copy stays mapped here, whole. */
int pinpool__host_after_pause(pinpool_ctx_t *ctx, tag_t *t, bool spillable)
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
int pinpool__host_for_resume(pinpool_ctx_t *ctx, tag_t *t)
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
    if ((rc == PINPOOL_ENOENT || rc == PINPOOL_ENOKEY) && t->copy_lost)
        return pinpool__fail(ctx, PINPOOL_ENOKEY,
                             "tag '%s' was paused into host memory of a session that ended "
                             "(the daemon went): its paused bytes went with it, and the daemon "
                             "has nothing under '%s'; pinpool_swap_drop the tag", t->name,
                             t->key);
    if (rc == PINPOOL_ENOENT || rc == PINPOOL_ENOKEY)
        return pinpool__fail(ctx, PINPOOL_ENOKEY,
                             "tag '%s' is not paused: nothing is kept or released "
                             "under '%s'", t->name, t->key);
    if (rc != 0)
        return rc;
    t->copy_lost = false;
    if (t->host.size != t->host_bytes) {
        uint64_t got = t->host.size;
        if (t->host_kept)
            pinpool_detach(ctx, t->host.id);
        else /* give it back as it was */
            pinpool_release(ctx, t->host.id, t->key, 0);
        return pinpool__fail(ctx, PINPOOL_EINVAL,
                             "the copy kept under '%s' holds %" PRIu64 " bytes but the %" PRIu32
                             " buffers of tag '%s' need %" PRIu64 ": make the same buffers in "
                             "the same order as the process that paused it", t->key, got,
                             t->nbuf, t->name, t->host_bytes);
    }
    t->have_host = true;
    t->host_cpu = false;
    return 0;
}

/* After a resume's copies completed: free the copy unless asked to keep it. */
void pinpool__host_after_resume(pinpool_ctx_t *ctx, tag_t *t, bool keep)
{
    if (keep || !t->have_host)
        return;
    pinpool_free(ctx, t->host.id, NULL);
    t->have_host = false;
}

/* Free the copy in the daemon, whoever made it, kept or released. */
void pinpool__host_free_key(pinpool_ctx_t *ctx, tag_t *t)
{
    if (t->have_host)
        pinpool_free(ctx, t->host.id, NULL);
    t->have_host = false;
    drop_foreign(ctx, t);
}

int pinpool__host_cpu_view(pinpool_ctx_t *ctx, tag_t *t)
{
    int rc;

    if (t->host_cpu)
        return 0;
    if (t->host_kept) { /* a kept slice: map it again, for the CPU too */
        rc = pinpool_detach(ctx, t->host.id);
        if (rc == 0)
            rc = pinpool_attach(ctx, t->key, 0, &t->host);
    } else { /* a plain slice: through the object table */
        rc = pinpool_release(ctx, t->host.id, t->key, 0);
        if (rc == 0)
            rc = pinpool_acquire(ctx, t->key, 0, &t->host);
    }
    if (rc != 0) {
        t->have_host = false; /* the copy stays in the daemon under the key */
        return rc;
    }
    t->host_cpu = true;
    return 0;
}

#endif /* PINPOOL_HAVE_CUDA */
