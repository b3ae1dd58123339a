/*
 * arena.c - the client-side arena of pinpool.h: blocks carved locally out of
 * slices leased from the daemon.
 *
 * Owns: its leases (daemon slices of this context, freed on destroy), a
 * pool_t (pool/) whose chunk i is lease i, so that blocks are placed by the
 * daemon's own allocator, and the table of leases sorted by address that
 * takes a pointer back to its lease.  A block larger than a lease is a lease
 * of its own ("large"), outside the pool_t.
 * Leases are slices of one session of the context (arena->gen).  When that
 * session ends (the daemon went: pinpool__session_check says so), every call
 * but stats and destroy says PINPOOL_ESESSION; once the context has a new
 * session (pinpool_reconnect), the arena starts over at its next call:
 * its leases and blocks are forgotten (their memory went with the session;
 * no call frees them) and it leases anew, so stats and blocks are the new
 * session's; freeing a block of the old leases is PINPOOL_ESESSION (the
 * context keeps their address ranges reserved, so they are told apart).
 * Never: makes an RPC or a system call while holding arena->lock; touches the
 * memory it hands out; frees a lease while blocks live in it (until destroy);
 * frees a lease of a session that ended (its id may name another slice now).
 * Locking: arena->lock guards everything below it in struct pinpool_arena;
 * arena->grow_lock serialises taking leases of lease_size (so that the pool's
 * chunks are added in order and one lease is taken for many waiting threads)
 * and is taken before arena->lock, never inside it.
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
#include "pool.h"

#define ARENA_OWNER 1        /* the pool_t's only owner */
#define ARENA_DEFAULT_LEASES 4096
#define ARENA_TAG_LEN 64

typedef struct lease {
    char *base;
    uint64_t size;
    uint64_t slice_id; /* the daemon's */
    uint32_t chunk;    /* its chunk in arena->pool; UINT32_MAX for a large lease */
    uint64_t asked;    /* a large lease: the size its block asked for */
    uint64_t gen;      /* the context's session it is a slice of */
} lease_t;

struct pinpool_arena {
    pinpool_ctx_t *ctx;
    uint64_t lease_size;
    uint64_t quantum;
    uint64_t max_bytes;   /* 0 = no cap */
    uint32_t max_leases;  /* leases of lease_size; the pool's max_chunks */
    char tag[ARENA_TAG_LEN];
    pool_params_t params;
    pthread_mutex_t grow_lock;
    pthread_mutex_t lock;
    /* under lock (written under grow_lock too): */
    uint64_t gen;         /* the session the leases are of */
    pool_t *pool;
    lease_t **by_chunk;   /* max_leases entries; the first nchunks used */
    uint32_t nchunks;
    lease_t **sorted;     /* every lease, by base address */
    uint32_t nsorted, cap_sorted;
    uint32_t nlarge;
    uint32_t pending;     /* leases being taken: room reserved in sorted */
    uint64_t pending_bytes; /* their bytes (counted in leased) */
    uint64_t leased;      /* bytes, large leases and those being taken included */
    uint64_t large_used, large_asked;
    uint64_t requested;   /* by live blocks in the pool */
    uint64_t allocs, frees;
};

static bool is_pow2(uint64_t x)
{
    return x != 0 && (x & (x - 1)) == 0;
}

/* ---- the lease table (lock held) --------------------------------------------------- */

/* Index of the last lease whose base is <= p, or -1. */
static long find_le(const pinpool_arena_t *arena, const char *p)
{
    long lo = 0, hi = (long)arena->nsorted - 1, at = -1;

    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;

        if (arena->sorted[mid]->base <= p) {
            at = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return at;
}

/* The lease that holds p, or NULL. */
static lease_t *find_lease(const pinpool_arena_t *arena, const void *p)
{
    long i = find_le(arena, p);
    lease_t *l;

    if (i < 0)
        return NULL;
    l = arena->sorted[i];
    return (const char *)p < l->base + l->size ? l : NULL;
}

/* Room for n more entries in sorted; 0 or -ENOMEM. */
static int reserve_sorted(pinpool_arena_t *arena, uint32_t n)
{
    uint32_t need = arena->nsorted + arena->pending + n, cap;
    lease_t **v;

    if (need <= arena->cap_sorted)
        return 0;
    cap = arena->cap_sorted != 0 ? arena->cap_sorted * 2 : 16;
    while (cap < need)
        cap *= 2;
    v = realloc(arena->sorted, cap * sizeof(*v));
    if (v == NULL)
        return -ENOMEM;
    arena->sorted = v;
    arena->cap_sorted = cap;
    return 0;
}

/* Insert l (room reserved). */
static void insert_sorted(pinpool_arena_t *arena, lease_t *l)
{
    long at = find_le(arena, l->base) + 1;

    memmove(&arena->sorted[at + 1], &arena->sorted[at],
            (arena->nsorted - (size_t)at) * sizeof(*arena->sorted));
    arena->sorted[at] = l;
    arena->nsorted++;
}

static void remove_sorted(pinpool_arena_t *arena, const lease_t *l)
{
    long at = find_le(arena, l->base);

    memmove(&arena->sorted[at], &arena->sorted[at + 1],
            (arena->nsorted - (size_t)at - 1) * sizeof(*arena->sorted));
    arena->nsorted--;
}

/* ---- leases (RPCs: no lock held) --------------------------------------------------- */

/* Lease size bytes aligned to align from the daemon into a new lease_t. */
static int take_lease(pinpool_arena_t *arena, uint64_t size, uint64_t align, lease_t **out)
{
    pinpool_alloc_opts_t opts = {.device_id = PINPOOL_HOST, .alignment = align,
                                 .tag = arena->tag};
    pinpool_slice_t s;
    lease_t *l = calloc(1, sizeof(*l));
    uint64_t gen = __atomic_load_n(&arena->gen, __ATOMIC_ACQUIRE);
    int rc;

    if (l == NULL)
        return pinpool__fail(arena->ctx, -ENOMEM, "out of memory");
    rc = pinpool__alloc_gen(arena->ctx, size, &opts, &s, &l->gen);
    if (rc == 0 && l->gen != gen) { /* the context reconnected meanwhile */
        pinpool__free_gen(arena->ctx, s.id, l->gen);
        rc = pinpool__fail(arena->ctx, PINPOOL_ESESSION, "arena: the context reconnected while "
                           "it took a lease; try again");
    }
    if (rc != 0) {
        free(l); /* pinpool_alloc said why */
        return rc;
    }
    l->base = s.ptr;
    l->size = size;
    l->slice_id = s.id;
    l->chunk = UINT32_MAX;
    *out = l;
    return 0;
}

static void give_back(pinpool_arena_t *arena, lease_t *l)
{
    /* On error the daemon keeps it until close; a lease of an ended session is gone. */
    pinpool__free_gen(arena->ctx, l->slice_id, l->gen);
    free(l);
}

/*
 * The context has a session other than the leases' (pinpool_reconnect): start
 * over on it - forget every lease (no call: they went with their session)
 * and every block, with a new pool_t.  0, or -ENOMEM (the arena as it was).
 */
static int sync_session(pinpool_arena_t *arena)
{
    uint64_t gen = pinpool__session_gen(arena->ctx);
    pool_t *fresh = NULL;
    int rc = 0;

    if (__atomic_load_n(&arena->gen, __ATOMIC_ACQUIRE) == gen)
        return 0;
    pthread_mutex_lock(&arena->grow_lock);
    pthread_mutex_lock(&arena->lock);
    if (arena->gen != gen && (rc = pool_create(&fresh, &arena->params)) == 0) {
        for (uint32_t i = 0; i < arena->nsorted; i++)
            free(arena->sorted[i]);
        pool_destroy(arena->pool);
        arena->pool = fresh;
        memset(arena->by_chunk, 0, arena->max_leases * sizeof(*arena->by_chunk));
        arena->nchunks = arena->nsorted = arena->nlarge = 0;
        arena->leased = arena->pending_bytes; /* leases being taken: judged when they come */
        arena->large_used = arena->large_asked = arena->requested = 0;
        __atomic_store_n(&arena->gen, gen, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&arena->lock);
    pthread_mutex_unlock(&arena->grow_lock);
    return rc == 0 ? 0 : pinpool__fail(arena->ctx, rc, "out of memory");
}

/* A lease taken in a session other than the arena's: forgotten (*l NULL);
 * PINPOOL_ESESSION.  Lock held. */
static int stale_lease(pinpool_arena_t *arena, lease_t **l)
{
    free(*l);
    *l = NULL;
    return pinpool__fail(arena->ctx, PINPOOL_ESESSION, "arena: the context reconnected while it "
                         "took a lease; try again");
}

/* The start of alloc and free: the leases' session lives, or the arena is on
 * the context's new one. */
static int check_session(pinpool_arena_t *arena)
{
    int rc = pinpool__session_check(arena->ctx);

    if (rc == 0)
        rc = sync_session(arena);
    return rc;
}

/* ---- create / destroy ---------------------------------------------------------------- */

int pinpool_arena_create(pinpool_ctx_t *ctx, uint64_t lease_size,
                         const pinpool_arena_opts_t *opts, pinpool_arena_t **out)
{
    pinpool_arena_opts_t o = {0};
    pinpool_arena_t *arena;
    pool_params_t params;
    lease_t *first = NULL;
    int rc;

    if (ctx == NULL || out == NULL)
        return -EINVAL;
    if (opts != NULL)
        o = *opts;
    if (lease_size == 0)
        lease_size = PINPOOL_ARENA_DEFAULT_LEASE;
    if (lease_size > UINT64_MAX / 2)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "arena: lease size too large");
    lease_size = (lease_size + PINPOOL_ARENA_MAX_ALIGN - 1) & ~(uint64_t)(PINPOOL_ARENA_MAX_ALIGN - 1);
    if (o.quantum == 0)
        o.quantum = 256;
    if (!is_pow2(o.quantum) || o.quantum > PINPOOL_ARENA_MAX_ALIGN)
        return pinpool__fail(ctx, PINPOOL_EINVAL,
                             "arena: the quantum must be a power of two up to 4096");
    if (o.max_bytes != 0 && o.max_bytes < lease_size)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "arena: max_bytes is smaller than one lease");
    if (o.max_leases == 0) {
        uint64_t n = o.max_bytes != 0 ? o.max_bytes / lease_size : ARENA_DEFAULT_LEASES;
        o.max_leases = n > ARENA_DEFAULT_LEASES ? ARENA_DEFAULT_LEASES : (uint32_t)n;
    }

    arena = calloc(1, sizeof(*arena));
    if (arena == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    arena->ctx = ctx;
    arena->lease_size = lease_size;
    arena->quantum = o.quantum;
    arena->max_bytes = o.max_bytes;
    arena->max_leases = o.max_leases;
    snprintf(arena->tag, sizeof(arena->tag), "%s", o.tag != NULL ? o.tag : "arena");
    arena->gen = pinpool__session_gen(ctx);
    pthread_mutex_init(&arena->grow_lock, NULL);
    pthread_mutex_init(&arena->lock, NULL);
    params = (pool_params_t){.chunk_size = lease_size, .max_chunks = o.max_leases,
                             .quantum = o.quantum, .allow_multi_chunk = false};
    arena->params = params;
    rc = pool_create(&arena->pool, &params);
    if (rc != 0) {
        rc = pinpool__fail(ctx, rc, "arena: bad lease size or cap");
        goto fail;
    }
    arena->by_chunk = calloc(o.max_leases, sizeof(*arena->by_chunk));
    if (arena->by_chunk == NULL || reserve_sorted(arena, 1) != 0) {
        rc = pinpool__fail(ctx, -ENOMEM, "out of memory");
        goto fail;
    }
    rc = take_lease(arena, lease_size, PINPOOL_ARENA_MAX_ALIGN, &first);
    if (rc != 0)
        goto fail;
    rc = pool_add_chunks(arena->pool, 1);
    if (rc != 0) {
        give_back(arena, first);
        rc = pinpool__fail(ctx, rc, "out of memory");
        goto fail;
    }
    first->chunk = 0;
    arena->by_chunk[0] = first;
    arena->nchunks = 1;
    arena->leased = lease_size;
    insert_sorted(arena, first);
    *out = arena;
    return 0;

fail:
    pinpool_arena_destroy(arena); /* no lease in it: the first went back above */
    return rc;
}

void pinpool_arena_destroy(pinpool_arena_t *arena)
{
    if (arena == NULL)
        return;
    for (uint32_t i = 0; i < arena->nsorted; i++) /* leases of an ended session: not freed */
        give_back(arena, arena->sorted[i]);
    pool_destroy(arena->pool);
    free(arena->by_chunk);
    free(arena->sorted);
    pthread_mutex_destroy(&arena->grow_lock);
    pthread_mutex_destroy(&arena->lock);
    free(arena);
}

/* ---- alloc ---------------------------------------------------------------------------- */

/* Would leasing more bytes pass max_bytes?  Lock held. */
static bool over_cap(const pinpool_arena_t *arena, uint64_t more)
{
    return arena->max_bytes != 0 &&
           (arena->leased > arena->max_bytes || more > arena->max_bytes - arena->leased);
}

/* Fill *out from pool slice s.  Lock held. */
static void block_from_slice(const pinpool_arena_t *arena, const pool_slice_info_t *s,
                             pinpool_arena_block_t *out)
{
    const lease_t *l = arena->by_chunk[s->first_chunk];

    out->ptr = l->base + (s->offset - (uint64_t)s->first_chunk * arena->lease_size);
    out->size = s->size;
    out->lease_base = l->base;
    out->lease_size = l->size;
    out->lease_id = l->slice_id;
    out->large = 0;
}

/* A block with a lease of its own. */
static int alloc_large(pinpool_arena_t *arena, uint64_t size, uint64_t align,
                       pinpool_arena_block_t *out)
{
    uint64_t bytes = (size + PINPOOL_ARENA_MAX_ALIGN - 1) & ~(uint64_t)(PINPOOL_ARENA_MAX_ALIGN - 1);
    lease_t *l = NULL;
    int rc;

    if (bytes < size)
        return pinpool__fail(arena->ctx, PINPOOL_ETOOBIG,
                             "arena: %" PRIu64 " bytes is too large", size);
    pthread_mutex_lock(&arena->lock);
    if (over_cap(arena, bytes)) {
        uint64_t leased = arena->leased;

        pthread_mutex_unlock(&arena->lock);
        return pinpool__fail(arena->ctx, PINPOOL_ENOSPC, "arena: a block of %" PRIu64 " bytes would"
                             " pass max_bytes %" PRIu64 " (%" PRIu64 " bytes leased)", size,
                             arena->max_bytes, leased);
    }
    rc = reserve_sorted(arena, 1);
    if (rc == 0) {
        arena->pending++;
        arena->pending_bytes += bytes;
        arena->leased += bytes;
    }
    pthread_mutex_unlock(&arena->lock);
    if (rc != 0)
        return pinpool__fail(arena->ctx, rc, "out of memory");

    rc = take_lease(arena, bytes, align > arena->quantum ? align : arena->quantum, &l);

    pthread_mutex_lock(&arena->lock);
    arena->pending--;
    arena->pending_bytes -= bytes;
    if (rc == 0 && l->gen != arena->gen) /* the arena started over meanwhile */
        rc = stale_lease(arena, &l);
    if (rc == 0) {
        l->asked = size;
        insert_sorted(arena, l);
        arena->nlarge++;
        arena->large_used += bytes;
        arena->large_asked += size;
        arena->allocs++;
        out->ptr = l->base;
        out->size = size;
        out->lease_base = l->base;
        out->lease_size = l->size;
        out->lease_id = l->slice_id;
        out->large = 1;
    } else {
        arena->leased -= bytes;
    }
    pthread_mutex_unlock(&arena->lock);
    return rc;
}

/*
 * Take one more lease of lease_size into the pool, unless another thread did
 * since the caller saw the pool full at nchunks_seen; then try the block
 * (*rc).  Returns true when *rc is final, false to retry from the start.
 */
static bool grow(pinpool_arena_t *arena, uint32_t nchunks_seen, uint64_t size, uint64_t align,
                 pinpool_arena_block_t *out, int *rc)
{
    pool_slice_info_t s;
    lease_t *l = NULL;
    bool final = true;

    pthread_mutex_lock(&arena->grow_lock);
    pthread_mutex_lock(&arena->lock);
    if (arena->nchunks != nchunks_seen) {
        final = false; /* another thread took a lease: retry */
    } else if (arena->nchunks >= arena->max_leases || over_cap(arena, arena->lease_size)) {
        uint64_t leased = arena->leased;

        pthread_mutex_unlock(&arena->lock);
        *rc = pinpool__fail(arena->ctx, PINPOOL_ENOSPC, "arena: no room for %" PRIu64 " bytes and"
                            " at its cap (%" PRIu32 " leases of %" PRIu64 " bytes, %" PRIu64
                            " bytes leased)", size, arena->nchunks, arena->lease_size, leased);
        pthread_mutex_unlock(&arena->grow_lock);
        return true;
    } else if ((*rc = reserve_sorted(arena, 1)) != 0) {
        pthread_mutex_unlock(&arena->lock);
        *rc = pinpool__fail(arena->ctx, *rc, "out of memory");
        pthread_mutex_unlock(&arena->grow_lock);
        return true;
    } else {
        arena->pending++;
        arena->pending_bytes += arena->lease_size;
        arena->leased += arena->lease_size;
    }
    pthread_mutex_unlock(&arena->lock);
    if (!final) {
        pthread_mutex_unlock(&arena->grow_lock);
        return false;
    }

    *rc = take_lease(arena, arena->lease_size, PINPOOL_ARENA_MAX_ALIGN, &l);

    pthread_mutex_lock(&arena->lock);
    arena->pending--;
    arena->pending_bytes -= arena->lease_size;
    if (*rc == 0 && l->gen != arena->gen)
        *rc = stale_lease(arena, &l);
    if (*rc == 0 && (*rc = pool_add_chunks(arena->pool, 1)) == 0) {
        l->chunk = arena->nchunks;
        arena->by_chunk[arena->nchunks++] = l;
        insert_sorted(arena, l);
        /* first come: this thread gets the first block of the new lease */
        *rc = pool_alloc(arena->pool, ARENA_OWNER, size, align, &s);
        if (*rc == 0) {
            block_from_slice(arena, &s, out);
            arena->requested += size;
            arena->allocs++;
        }
    } else {
        arena->leased -= arena->lease_size;
        if (l != NULL) {
            pthread_mutex_unlock(&arena->lock);
            give_back(arena, l);
            pthread_mutex_lock(&arena->lock);
            *rc = pinpool__fail(arena->ctx, *rc, "out of memory");
        }
    }
    pthread_mutex_unlock(&arena->lock);
    pthread_mutex_unlock(&arena->grow_lock);
    return true;
}

int pinpool_arena_alloc_block(pinpool_arena_t *arena, uint64_t size, uint64_t align,
                              pinpool_arena_block_t *out)
{
    pool_slice_info_t s;
    uint32_t nchunks;
    int rc;

    if (arena == NULL || out == NULL)
        return -EINVAL;
    if (size == 0)
        return pinpool__fail(arena->ctx, PINPOOL_EINVAL, "arena: the size must be greater than 0");
    if (align != 0 && !is_pow2(align))
        return pinpool__fail(arena->ctx, PINPOOL_EALIGN, "arena: alignment %" PRIu64
                             " is not a power of two", align);
    rc = check_session(arena);
    if (rc != 0)
        return rc;
    if (size > arena->lease_size) /* lease_size is a multiple of the quantum */
        return alloc_large(arena, size, align, out);
    if (align > PINPOOL_ARENA_MAX_ALIGN)
        return pinpool__fail(arena->ctx, PINPOOL_EALIGN, "arena: alignment %" PRIu64
                             " is more than %d", align, PINPOOL_ARENA_MAX_ALIGN);
    for (;;) {
        pthread_mutex_lock(&arena->lock);
        rc = pool_alloc(arena->pool, ARENA_OWNER, size, align, &s);
        if (rc == 0) {
            block_from_slice(arena, &s, out);
            arena->requested += size;
            arena->allocs++;
        }
        nchunks = arena->nchunks;
        pthread_mutex_unlock(&arena->lock);
        if (rc != PINPOOL_ENOSPC)
            return rc == 0 ? 0 : pinpool__fail(arena->ctx, rc, "arena: %s", pinpool_strerror(rc));
        if (grow(arena, nchunks, size, align, out, &rc))
            return rc;
    }
}

int pinpool_arena_alloc(pinpool_arena_t *arena, uint64_t size, uint64_t align, void **ptr)
{
    pinpool_arena_block_t b;
    int rc;

    if (ptr == NULL)
        return -EINVAL;
    rc = pinpool_arena_alloc_block(arena, size, align, &b);
    if (rc == 0)
        *ptr = b.ptr;
    return rc;
}

/* ---- free ----------------------------------------------------------------------------- */

int pinpool_arena_free(pinpool_arena_t *arena, void *ptr)
{
    pool_slice_info_t s;
    lease_t *l;
    int rc;

    if (arena == NULL)
        return -EINVAL;
    rc = check_session(arena);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&arena->lock);
    l = ptr != NULL ? find_lease(arena, ptr) : NULL;
    if (l != NULL && l->chunk != UINT32_MAX) {
        uint64_t off = (uint64_t)l->chunk * arena->lease_size + (uint64_t)((char *)ptr - l->base);

        rc = pool_lookup_offset(arena->pool, off, &s);
        if (rc == 0)
            rc = pool_free(arena->pool, s.id, ARENA_OWNER, NULL);
        if (rc == 0) {
            arena->requested -= s.size;
            arena->frees++;
        }
        pthread_mutex_unlock(&arena->lock);
        if (rc != 0)
            return pinpool__fail(arena->ctx, PINPOOL_ENOENT, "arena: %p is not a live block of this"
                                 " arena (it lies inside lease %" PRIu64 ")", ptr, l->slice_id);
        return 0;
    }
    if (l == NULL || (char *)ptr != l->base) {
        uint64_t gen = arena->gen, old;

        pthread_mutex_unlock(&arena->lock);
        old = l == NULL && ptr != NULL ? pinpool__dead_gen(arena->ctx, ptr) : 0;
        if (old != 0)
            return pinpool__fail(arena->ctx, PINPOOL_ESESSION, "arena: %p was a block of a "
                                 "lease of session %" PRIu64 " of this context, which ended "
                                 "(the daemon went): its memory is gone with it, and there is "
                                 "nothing to free (the arena is on session %" PRIu64 " now)",
                                 ptr, old, gen);
        return pinpool__fail(arena->ctx, PINPOOL_ENOENT,
                             "arena: %p is not a block of this arena", ptr);
    }
    /* A large block: its lease goes back to the daemon. */
    remove_sorted(arena, l);
    arena->nlarge--;
    arena->large_used -= l->size;
    arena->large_asked -= l->asked;
    arena->leased -= l->size;
    arena->frees++;
    pthread_mutex_unlock(&arena->lock);
    rc = pinpool__free_gen(arena->ctx, l->slice_id, l->gen);
    free(l);
    return rc == PINPOOL_ENOENT ? 0 : rc; /* ENOENT: the daemon has it back already */
}

/* ---- stats ---------------------------------------------------------------------------- */

int pinpool_arena_stats(pinpool_arena_t *arena, pinpool_arena_stats_t *out)
{
    pool_stats_t ps;

    if (arena == NULL || out == NULL)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    sync_session(arena); /* the new session's numbers, once there is one */
    pthread_mutex_lock(&arena->lock);
    pool_get_stats(arena->pool, &ps);
    out->lease_size = arena->lease_size;
    out->max_bytes = arena->max_bytes;
    out->leased_bytes = arena->leased;
    out->used_bytes = ps.used + arena->large_used;
    out->requested_bytes = arena->requested + arena->large_asked;
    out->free_bytes = ps.free;
    out->largest_free = ps.largest_free;
    out->num_leases = arena->nchunks;
    out->num_large = arena->nlarge;
    out->num_blocks = ps.num_slices + arena->nlarge;
    out->num_free_extents = ps.num_free_extents;
    out->fragmentation = ps.fragmentation;
    out->allocs = arena->allocs;
    out->frees = arena->frees;
    pthread_mutex_unlock(&arena->lock);
    return 0;
}
