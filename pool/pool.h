/*
 * pool.h - the allocator and slice table.
 *
 * Owns: the free-extent index, the slice table and the chunk tenancy of one
 * pool of chunks.
 * Never: touches CUDA, gRPC, sockets or the memory itself; it only hands out
 * (offset, size) extents of an address space [0, chunk_size * max_chunks).
 * Locking: none.  A pool_t is used by one thread at a time; the caller (the
 * daemon's srv_t, the client's arena) holds its own lock around every call.
 *
 * Layout.  The pool is a run of equal chunks.  Chunks become usable in order
 * through pool_add_chunks() (the daemon pins them in the background).  A slice
 * of at most chunk_size bytes lives inside one chunk and never crosses a chunk
 * boundary; a larger slice (when the pool allows it) starts on a chunk boundary
 * and covers a run of whole chunks.
 *
 * Tenants.  Every slice is made for a tenant (an opaque number: the daemon
 * uses uids; pool_alloc uses tenant 0) and a chunk holds slices of one tenant
 * at a time.  A chunk never used belongs to no tenant; the first slice placed
 * in it makes it that slice's tenant's, and it stays so when its last slice
 * goes (idle), so that the tenant's next slices reuse it.  A slice goes into
 * its tenant's chunks first (best fit among them), else into chunks never
 * used; it never goes into another tenant's chunk.  An idle chunk passes to
 * another tenant only through a claim (pool_claim, pool_claim_end), between
 * which the caller gives the chunk fresh memory: what the old tenant could
 * reach stays the old tenant's.  Free extents are coalesced across chunk
 * boundaries between chunks of one tenant, never across tenants.
 *
 * Dirty memory.  With dirty_on_free, a freed slice does not become free space
 * at once: it is dirty, owned by the pool's cleaner (nobody can allocate it,
 * no lookup finds it) until the caller took it (pool_clean_take), cleared its
 * bytes and said so (pool_clean_done).  So an allocation only ever gets
 * memory that was never used or was cleaned (a slice marked unwritten,
 * pool_mark_unwritten, is still clean when it is freed), except that
 * pool_alloc_own gives an owner back a dirty extent it freed itself.
 *
 * Allocation is best fit over the tenant's free extents ordered by (size,
 * offset), with the boundary and alignment rules applied to each candidate:
 * O(log n) per operation, except that candidates rejected by those rules are
 * skipped one by one.  Giving a tenant chunks that were never used costs
 * O(log n) per chunk, and a slice of several chunks that finds no run in its
 * tenant's extents scans the chunks, O(chunks).  Slice extents are rounded up
 * to the pool's quantum.  Looking a slice up by id or by start offset is O(1).
 *
 * Invariants (pool_check, run after every operation when built with
 * POOL_DEBUG): free extents do not overlap slices, dirty extents or each
 * other; touching free extents belong to different tenants; a free extent lies
 * in chunks of its tenant; a slice lies in chunks of its tenant; chunks never
 * used hold nothing; a claimed chunk is in no index; free + used + dirty +
 * claimed = ready bytes; both indexes hold the same extents; per-owner and
 * per-tenant byte counts add up.
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
    bool dirty_on_free;      /* freed slices are dirty until cleaned (see above) */
} pool_params_t;

/* The tenant of chunks never used; not a valid tenant for a slice. */
#define POOL_TENANT_NONE UINT64_MAX

typedef struct pool_slice_info {
    uint64_t id;        /* > 0, unique for the pool's life */
    uint64_t owner;     /* opaque to the pool */
    uint64_t tenant;    /* opaque to the pool; whose chunks hold it */
    uint64_t offset;    /* in the pool's address space */
    uint64_t size;      /* bytes asked for */
    uint64_t extent;    /* bytes reserved (size rounded up to the quantum) */
    uint32_t first_chunk;
    uint32_t nchunks;   /* chunks the slice touches */
} pool_slice_info_t;

typedef struct pool_stats {
    uint64_t capacity;      /* chunk_size * max_chunks */
    uint64_t ready;         /* chunk_size * chunks added */
    uint64_t used;          /* sum of live slice extents */
    uint64_t dirty;         /* freed, waiting for or in cleaning */
    uint64_t claimed;       /* chunks claimed (their memory being replaced) */
    uint64_t free;          /* ready - used - dirty - claimed */
    uint64_t largest_free;  /* largest free extent (of any tenant) */
    uint32_t ready_chunks;
    uint32_t idle_chunks;   /* a tenant's, holding nothing */
    uint32_t num_slices;
    uint32_t num_dirty;
    uint32_t num_free_extents;
    uint32_t num_owners;    /* owners holding at least one slice */
    uint32_t num_tenants;   /* tenants with chunks */
    double fragmentation;   /* 1 - largest_free / free, 0 when free == 0 */
} pool_stats_t;

/* A claim: chunks [first, first + n) taken for tenant (see pool_claim). */
typedef struct pool_claim {
    uint64_t tenant;
    uint32_t first, n;
    uint32_t fresh; /* how many need fresh memory (pool_claim_fresh) */
} pool_claim_t;

typedef struct pool_chunk_info {
    uint64_t tenant;    /* POOL_TENANT_NONE: never used */
    uint32_t nslices;   /* live slices and dirty extents that touch it */
    bool idle;          /* a tenant's, holding nothing, not claimed */
    bool claimed;
    bool fresh;         /* claimed, and its memory must be replaced */
    uint64_t claim_for; /* the tenant it is claimed for */
} pool_chunk_info_t;

/* An extent to clean (pool_clean_take). */
typedef struct pool_dirty {
    uint64_t id;     /* for pool_clean_done */
    uint64_t offset;
    uint64_t len;    /* the whole extent */
} pool_dirty_t;

/* Returns 0 and *out, or PINPOOL_EINVAL (bad params) / -ENOMEM.  The pool has
 * no usable chunk until pool_add_chunks. */
int pool_create(pool_t **out, const pool_params_t *params);
/* Frees the pool and its tables (slices included). NULL is a no-op. */
void pool_destroy(pool_t *pool);

/* Make the next n chunks usable.  PINPOOL_EINVAL when that passes max_chunks. */
int pool_add_chunks(pool_t *pool, uint32_t n);

/*
 * Reserve an extent of size bytes aligned to align (0 = quantum) for owner, in
 * chunks of tenant (never POOL_TENANT_NONE).  Errors, and the pool unchanged:
 * PINPOOL_EINVAL (size 0, bad tenant), PINPOOL_EALIGN, PINPOOL_ETOOBIG (larger
 * than the pool's capacity, or than a chunk when multi-chunk slices are off),
 * PINPOOL_ENOSPC (no free extent of tenant's or never used fits: see
 * pool_claim for taking another tenant's idle chunks, and pool_get_stats for
 * dirty bytes), -ENOMEM.
 */
int pool_alloc_as(pool_t *pool, uint64_t tenant, uint64_t owner, uint64_t size, uint64_t align,
                  pool_slice_info_t *out);
/*
 * With dirty_on_free: a dirty extent that owner itself freed, of exactly the
 * request's (rounded) size and alignment, in chunks of tenant, among the 16
 * freed most recently and not yet taken for cleaning, becomes a slice of
 * owner again (a new id; its bytes are what owner left there: use it only
 * for an owner whose bytes those are).  0 and *out, PINPOOL_ENOENT (none: the
 * pool unchanged), or pool_alloc_as's argument errors, -ENOMEM.
 */
int pool_alloc_own(pool_t *pool, uint64_t tenant, uint64_t owner, uint64_t size, uint64_t align,
                   pool_slice_info_t *out);
/* pool_alloc_as for tenant 0 (a pool with one tenant). */
int pool_alloc(pool_t *pool, uint64_t owner, uint64_t size, uint64_t align,
               pool_slice_info_t *out);

/* Free slice id held by owner (with dirty_on_free: it becomes dirty).
 * PINPOOL_ENOENT, PINPOOL_EPERM (other owner), pool unchanged on error.
 * *freed (may be NULL) gets the extent size. */
int pool_free(pool_t *pool, uint64_t id, uint64_t owner, uint64_t *freed);

/* Nobody can write slice id (its owner cannot map it, and nothing is copied
 * into it): with dirty_on_free its release makes it free space at once, as
 * it is still clean.  pool_set_owner ends that.  0 or PINPOOL_ENOENT. */
int pool_mark_unwritten(pool_t *pool, uint64_t id);

/* Give slice id of owner to new_owner (same extent, same id, same tenant).  PINPOOL_ENOENT,
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
/* Bytes of dirty extents (pool_get_stats' dirty, in O(1)). */
uint64_t pool_dirty_bytes(const pool_t *pool);
/* Chunk's tenancy: 0 and *out, or PINPOOL_EINVAL (not a ready chunk). */
int pool_chunk_info(const pool_t *pool, uint32_t chunk, pool_chunk_info_t *out);

/*
 * Cleaning (dirty_on_free).  pool_clean_take hands out the oldest dirty extent
 * not yet handed out: 0 and *out, or PINPOOL_ENOENT.  Once its bytes are
 * cleared, pool_clean_done(id) makes it free space (PINPOOL_ENOENT if id is
 * not an extent handed out).  Dirty extents keep their chunks busy: a chunk
 * with one is neither idle nor claimable.
 */
int pool_clean_take(pool_t *pool, pool_dirty_t *out);
int pool_clean_done(pool_t *pool, uint64_t id);

/*
 * Claims: tenant needs room for size bytes (aligned to align) that
 * pool_alloc_as cannot give it.  pool_claim picks wholly free chunks for it
 * (one idle chunk of another tenant, the lowest; for a slice of several
 * chunks the run of wholly free chunks that needs the fewest new ones) and
 * takes them out of every index: 0 and *out, PINPOOL_ENOSPC (no such chunks),
 * or an error of pool_alloc_as's; the pool unchanged on error.  The caller
 * then gives every chunk of the claim for which pool_claim_fresh is true new
 * memory (the old tenant may still reach the old), and calls pool_claim_end:
 * ok, the chunks become tenant's (free, idle); not ok, each goes back to whom
 * it was.  Either way the claim is over.
 */
int pool_claim(pool_t *pool, uint64_t tenant, uint64_t size, uint64_t align, pool_claim_t *out);
bool pool_claim_fresh(const pool_t *pool, uint32_t chunk);
void pool_claim_end(pool_t *pool, const pool_claim_t *claim, bool ok);
uint64_t pool_chunk_size(const pool_t *pool);

/* Check every invariant above.  0, or PINPOOL_EINTERNAL with a description of
 * the first broken one in msg. */
int pool_check(const pool_t *pool, char *msg, size_t msglen);

/*
 * Takeover (restore.c): a pool read out and made again, exactly, in another
 * process.  pool_save_each calls fn for every live slice (in id order) and
 * then every dirty extent (oldest first); PINPOOL_EBUSY while a claim or a
 * cleaning is in flight (nothing called).  A fresh pool of the same
 * parameters with every chunk added takes them back: first each chunk's
 * tenant (pool_restore_tenant, chunks that were never used stay so), then
 * each saved piece in the order pool_save_each gave it, then the next id.
 * Each returns 0, or PINPOOL_EINVAL (a piece that does not fit: the pool is
 * unchanged; pool_restore_slice's *why says how) or -ENOMEM.
 */
typedef struct pool_saved {
    pool_slice_info_t info;
    bool unwritten; /* nobody can have written it */
    bool dirty;     /* a dirty extent (freed, not yet cleaned); else a live slice */
} pool_saved_t;
int pool_save_each(const pool_t *pool, void (*fn)(const pool_saved_t *s, void *arg), void *arg);
uint64_t pool_next_id(const pool_t *pool);
int pool_restore_tenant(pool_t *pool, uint32_t chunk, uint64_t tenant);
int pool_restore_slice(pool_t *pool, const pool_saved_t *saved, const char **why);
int pool_restore_next_id(pool_t *pool, uint64_t next_id);

/*
 * Units.  pool_parse_size: see pinpool_parse_size in client/pinpool.h.
 * pool_format_size: "1.50 GiB" style, returns buf.
 */
int pool_parse_size(const char *text, uint64_t *out);
char *pool_format_size(uint64_t bytes, char *buf, size_t len);

#endif /* PINPOOL_POOL_H */
