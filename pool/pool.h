/*
 * pool.h - the allocator and slice table.
 *
 * Owns: the free-extent index and the slice table of one pool of chunks.
 * Never: touches CUDA, gRPC, sockets or the memory itself; it only hands out
 * (offset, size) extents of an address space [0, chunk_size * max_chunks).
 * Locking: none.  A pool_t is used by one thread at a time; the caller (the
 * daemon's srv_t, the client's arena) holds its own lock around every call.
 *
 * Layout.  The pool is a run of equal chunks.  Chunks become usable in order
 * through pool_add_chunks() (the daemon pins them in the background).  A slice
 * of at most chunk_size bytes lives inside one chunk and never crosses a chunk
 * boundary; a larger slice (when the pool allows it) starts on a chunk boundary
 * and covers a run of whole chunks.  Free extents are coalesced across chunk
 * boundaries, so a run of free chunks is one extent.
 *
 * Allocation is best fit over free extents ordered by (size, offset), with the
 * boundary and alignment rules applied to each candidate: O(log n) per
 * operation, except that candidates rejected by those rules are skipped one by
 * one.  Slice extents are rounded up to the pool's quantum.  Looking a slice up
 * by id or by start offset is O(1).
 *
 * Invariants (pool_check, run after every operation when built with
 * POOL_DEBUG): free extents do not overlap slices or each other, no two free
 * extents touch (they are coalesced), free + used = ready bytes, both indexes
 * hold the same extents, per-owner byte counts add up to used bytes.
 */
#ifndef PINPOOL_POOL_H
#define PINPOOL_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pool pool_t;

typedef struct pool_params {
    uint64_t chunk_size;     /* > 0, a multiple of quantum */
    uint32_t max_chunks;     /* > 0 */
    uint64_t quantum;        /* power of two; sizes round up to it; 0 = 256 */
    bool allow_multi_chunk;  /* may a slice cover a run of chunks? */
} pool_params_t;

typedef struct pool_slice_info {
    uint64_t id;        /* > 0, unique for the pool's life */
    uint64_t owner;     /* opaque to the pool */
    uint64_t offset;    /* in the pool's address space */
    uint64_t size;      /* bytes asked for */
    uint64_t extent;    /* bytes reserved (size rounded up to the quantum) */
    uint32_t first_chunk;
    uint32_t nchunks;   /* chunks the slice touches */
} pool_slice_info_t;

typedef struct pool_stats {
    uint64_t capacity;      /* chunk_size * max_chunks */
    uint64_t ready;         /* chunk_size * chunks added */
    uint64_t used;          /* sum of slice extents */
    uint64_t free;          /* ready - used */
    uint64_t largest_free;  /* largest free extent */
    uint32_t ready_chunks;
    uint32_t num_slices;
    uint32_t num_free_extents;
    uint32_t num_owners;    /* owners holding at least one slice */
    double fragmentation;   /* 1 - largest_free / free, 0 when free == 0 */
} pool_stats_t;

/* Returns 0 and *out, or PINPOOL_EINVAL (bad params) / -ENOMEM.  The pool has
 * no usable chunk until pool_add_chunks. */
int pool_create(pool_t **out, const pool_params_t *params);
/* Frees the pool and its tables (slices included). NULL is a no-op. */
void pool_destroy(pool_t *pool);

/* Make the next n chunks usable.  PINPOOL_EINVAL when that passes max_chunks. */
int pool_add_chunks(pool_t *pool, uint32_t n);

/*
 * Reserve an extent of size bytes aligned to align (0 = quantum) for owner.
 * Errors, and the pool unchanged: PINPOOL_EINVAL (size 0), PINPOOL_EALIGN,
 * PINPOOL_ETOOBIG (larger than the pool's capacity, or than a chunk when
 * multi-chunk slices are off), PINPOOL_ENOSPC (no ready extent fits; see
 * pool_get_stats for the largest), -ENOMEM.
 */
int pool_alloc(pool_t *pool, uint64_t owner, uint64_t size, uint64_t align,
               pool_slice_info_t *out);

/* Free slice id held by owner.  PINPOOL_ENOENT, PINPOOL_EPERM (other owner),
 * pool unchanged on error.  *freed (may be NULL) gets the extent size. */
int pool_free(pool_t *pool, uint64_t id, uint64_t owner, uint64_t *freed);

/* Give slice id of owner to new_owner (same extent, same id).  PINPOOL_ENOENT,
 * PINPOOL_EPERM (other owner), -ENOMEM; the pool unchanged on error. */
int pool_set_owner(pool_t *pool, uint64_t id, uint64_t owner, uint64_t new_owner);

/* Free every slice of owner.  Returns the number of slices freed (>= 0). */
int pool_free_owner(pool_t *pool, uint64_t owner, uint64_t *freed);

/* 0 and *out, or PINPOOL_ENOENT. */
int pool_lookup(const pool_t *pool, uint64_t id, pool_slice_info_t *out);
/* The live slice that starts at offset: 0 and *out (may be NULL), or
 * PINPOOL_ENOENT (no slice starts there, even if one covers it).  O(1). */
int pool_lookup_offset(const pool_t *pool, uint64_t offset, pool_slice_info_t *out);

/* Bytes (extents) held by owner; *slices (may be NULL) gets their number. */
uint64_t pool_owner_bytes(const pool_t *pool, uint64_t owner, uint32_t *slices);

/* Calls fn once per owner holding slices, in owner order. */
void pool_foreach_owner(const pool_t *pool,
                        void (*fn)(uint64_t owner, uint64_t bytes, uint32_t slices, void *arg),
                        void *arg);

/* Calls fn once per slice of owner (every slice when all is true), in id order.
 * fn must not change the pool. */
void pool_foreach_slice(const pool_t *pool, uint64_t owner, bool all,
                        void (*fn)(const pool_slice_info_t *slice, void *arg), void *arg);

void pool_get_stats(const pool_t *pool, pool_stats_t *out);
uint64_t pool_chunk_size(const pool_t *pool);

/* Check every invariant above.  0, or PINPOOL_EINTERNAL with a description of
 * the first broken one in msg. */
int pool_check(const pool_t *pool, char *msg, size_t msglen);

/*
 * Units.  pool_parse_size: see pinpool_parse_size in client/pinpool.h.
 * pool_format_size: "1.50 GiB" style, returns buf.
 */
int pool_parse_size(const char *text, uint64_t *out);
char *pool_format_size(uint64_t bytes, char *buf, size_t len);

#endif /* PINPOOL_POOL_H */
