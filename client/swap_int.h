/*
 * swap_int.h - what the swap API's files share; not installed, not exported.
 *
 *   client/swap.c      the tags, their steps (pause/resume in flight) and the
 *                      pinpool_swap_* calls
 *   client/swap_mem.c  a tag's device memory (CUDA VMM allocations, mapped in
 *                      pieces) and its host copy (a pool slice)
 *   client/tms.c       torch_memory_saver's allocator over the swap tags
 *
 * Lock rule: every function here that takes a tag runs with its swap state's
 * lock (pinpool__swap_t.lock) held; none of them takes it.
 */
#ifndef PINPOOL_CLIENT_SWAP_INT_H
#define PINPOOL_CLIENT_SWAP_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "pinpool.h"

/* A buffer of its own VMM allocation, never sharing granules with others
 * (torch_memory_saver's allocations: each one is freed on its own). */
int pinpool__swap_alloc_own(pinpool_ctx_t *ctx, const char *tag, int32_t device, uint64_t bytes,
                            uint64_t *dptr);

#ifdef PINPOOL_HAVE_CUDA
#include <pthread.h>

#include "cudaload.h"

#define PINPOOL__SWAP_MAX_STREAMS 16
#define PINPOOL__SWAP_HOST_ALIGN 4096u /* each buffer's place in the host copy */

/*
 * One VMM allocation: a reserved range and, while mapped, its physical memory
 * in npieces pieces of piece bytes (the last one may be shorter), each its
 * own cuMemCreate handle, so that a resume can copy into the first pieces
 * while it maps the next ones.  nmapped pieces are mapped (0: released).
 */
typedef struct pinpool__vmm {
    CUdeviceptr va;
    uint64_t size; /* reserved bytes (a granularity multiple) */
    uint64_t used; /* bytes handed out (a small block fills up) */
    CUmemGenericAllocationHandle *h;
    uint64_t piece;
    uint32_t npieces, nmapped;
    bool small;    /* shared by buffers below half a granule */
    uint32_t unit; /* its copy unit */
    uint64_t *subs; /* small: the offsets of its live buffers */
    uint32_t nsubs, capsubs;
} pinpool__vmm_t;

/* What a pause copies: a whole allocation's used bytes, or a registered buffer. */
typedef struct pinpool__unit {
    CUdeviceptr dptr;
    uint64_t bytes;
    uint64_t host_off;
    int32_t vmm; /* its allocation in t->vmm, or -1 for a registered buffer */
} pinpool__unit_t;

typedef struct pinpool__tag {
    struct pinpool__tag *next;
    char name[PINPOOL_SWAP_TAG_MAX + 1];
    char key[PINPOOL_SWAP_TAG_MAX + sizeof(PINPOOL_SWAP_KEY_PREFIX)];
    int device;
    pinpool_swap_state_t state;
    bool released;
    bool discarded;      /* paused with PINPOOL_SWAP_DISCARD: no copy to bring back */
    bool layout_stale;   /* buffers were freed while paused: the host offsets are the
                          * copy's, recomputed once the copy is gone */
    uint32_t step_flags; /* of the step in flight */
    uint32_t nbuf;
    pinpool__vmm_t *vmm;
    uint32_t nvmm, capvmm;
    pinpool__unit_t *units;
    uint32_t nunits, capunits;
    uint64_t host_bytes; /* layout of the host copy */
    bool have_host;
    bool copy_lost; /* paused into a slice of a session that ended (pinpool_reconnect) */
    bool host_kept; /* the slice was made with PINPOOL_ALLOC_KEEP (not releasable) */
    bool host_cpu;  /* mapped for the CPU too (pinpool_swap_host_ptr asked) */
    pinpool_slice_t host;
    bool events;
    CUevent fork, done[PINPOOL__SWAP_MAX_STREAMS];
    uint32_t ndone;
    CUevent *uev; /* per unit: its copy is done (a released pause on one stream) */
    uint32_t nuev;
    bool tracked; /* the step in flight recorded uev */
} pinpool__tag_t;

/* A context's swap state (pinpool__ext_get makes it on the first swap call). */
typedef struct pinpool__swap {
    pthread_mutex_t lock;
    pinpool__tag_t *tags;
    uint32_t streams;
    uint64_t chunk;     /* copy pieces (0: whole buffers) */
    uint64_t map_chunk; /* mapping pieces (0: whole allocations) */
    uint64_t gran[PINPOOL_MAX_DEVICES];
    CUstream helper[PINPOOL_MAX_DEVICES][PINPOOL__SWAP_MAX_STREAMS];
} pinpool__swap_t;

/* ---- swap_mem.c: device memory ------------------------------------------------------- */

/* PINPOOL_ECUDA with the CUDA error as text. */
int pinpool__swap_cu_fail(const pinpool_ctx_t *ctx, CUresult r, const char *call, const char *what);
/* Grow *arr (elements of elem bytes, *cap of them) to hold n + 1; -ENOMEM. */
int pinpool__swap_grow(void **arr, uint32_t *cap, uint32_t n, size_t elem);
/* Choose v's pieces for its next mapping: piece bytes (0: one piece),
 * rounded up to gran.  Not mapped.  -ENOMEM (message set). */
int pinpool__vmm_plan(pinpool_ctx_t *ctx, pinpool__vmm_t *v, uint64_t piece, uint64_t gran);
/* Map v's piece i (fresh physical memory, readable and writable by device). */
int pinpool__vmm_map_piece(pinpool_ctx_t *ctx, int device, pinpool__vmm_t *v, uint32_t i);
/* Give v's physical memory back (every mapped piece); its addresses stay reserved. */
void pinpool__vmm_unmap(pinpool__vmm_t *v);
/* Bytes of GPU memory v maps now. */
uint64_t pinpool__vmm_mapped_bytes(const pinpool__vmm_t *v);
/* v's addresses too; v is zeroed. */
void pinpool__vmm_destroy(pinpool__vmm_t *v);

/* A new unit of t for [dptr, dptr + bytes): *idx. */
int pinpool__swap_add_unit(pinpool_ctx_t *ctx, pinpool__tag_t *t, CUdeviceptr dptr, uint64_t bytes,
                           uint32_t *idx);
/* A new buffer of t on its device: in the last small block when it has room
 * (unless own), else a VMM allocation of its own; *dptr.  t is resident. */
int pinpool__swap_add_vmm(pinpool_ctx_t *ctx, pinpool__swap_t *sw, pinpool__tag_t *t,
                          uint64_t bytes, bool own, uint64_t *dptr);
/* Take the buffer at dptr out of t: a pinpool_swap_alloc buffer's memory is
 * freed (a small block's once its last buffer goes), a registered one is
 * forgotten.  No step in flight.  PINPOOL_EINVAL when dptr is no buffer of t. */
int pinpool__swap_remove(pinpool_ctx_t *ctx, pinpool__tag_t *t, uint64_t dptr);
/* The buffers changed: a host copy held for the old layout is freed and the
 * offsets recomputed. */
void pinpool__swap_layout(pinpool_ctx_t *ctx, pinpool__tag_t *t);

/* ---- swap_mem.c: the host copy (see swap_mem.c's comment) ---------------------------- */

int pinpool__host_for_pause(pinpool_ctx_t *ctx, pinpool__tag_t *t, bool spillable, bool replace);
int pinpool__host_after_pause(pinpool_ctx_t *ctx, pinpool__tag_t *t, bool spillable);
int pinpool__host_for_resume(pinpool_ctx_t *ctx, pinpool__tag_t *t);
void pinpool__host_after_resume(pinpool_ctx_t *ctx, pinpool__tag_t *t, bool keep);
void pinpool__host_free_key(pinpool_ctx_t *ctx, pinpool__tag_t *t);
/* Map the copy this process holds for the CPU too (once). */
int pinpool__host_cpu_view(pinpool_ctx_t *ctx, pinpool__tag_t *t);

#endif /* PINPOOL_HAVE_CUDA */
#endif
