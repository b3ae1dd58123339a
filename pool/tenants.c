/*
 * tenants.c - chunks and their tenants: who a chunk's memory belongs to,
 * which chunks a tenant may be given, and claims (a chunk changing hands).
 *
 * Owns: pool->chunks (one record per chunk), the tenant records and their
 * tree, pool->none (the tenant of chunks never used), the bitmap of idle
 * chunks, and claims.
 * The rules.  A chunk holds slices of one tenant at a time (the daemon's
 * tenants are uids).  A chunk starts as none's; the first slice placed in it
 * makes it its tenant's (tenancy_assign), and it stays that tenant's when its
 * last slice goes (it is then idle), so that the tenant's next slices reuse
 * it.  It passes to another tenant only through a claim: pool_claim takes
 * wholly free chunks out of every index for tenant T, the caller replaces the
 * memory of those that were another tenant's (pool_claim_fresh), and
 * pool_claim_end gives them to T (or back, when the replacement failed).
 * Never: decides by itself that a chunk changes tenant without a claim,
 * except none -> T; touches memory.
 * Locking: none (see pool.h).
 *
 * Invariants (pool_check): a chunk's tenant counts it in nchunks; a chunk
 * with slices is not none's and not claimed; a claimed chunk's whole range is
 * its claimed node and lies in no index; the idle bit of chunk i is set iff i
 * is ready, not none's, not claimed and holds nothing.
 */
#include "pool_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pinpool_errors.h"
#include "rbtree.h"

#define CMP(a, b) (((a) > (b)) - ((a) < (b)))

static int tenant_cmp(const struct tenant *a, const struct tenant *b)
{
    return CMP(a->id, b->id);
}

RB_GENERATE(tenant_by_id, tenant, by_id, tenant_cmp)

#include "rbtree_end.h"

/* ---- records ---------------------------------------------------------------------- */

int tenancy_init(pool_t *pool)
{
    size_t words = ((size_t)pool->max_chunks + 63) / 64;

    pool->chunks = calloc(pool->max_chunks, sizeof(*pool->chunks));
    pool->idle_map = calloc(words, sizeof(*pool->idle_map));
    if (pool->chunks == NULL || pool->idle_map == NULL) {
        free(pool->chunks);
        free(pool->idle_map);
        return -ENOMEM;
    }
    memset(&pool->none, 0, sizeof(pool->none));
    pool->none.id = POOL_TENANT_NONE;
    ext_index_init(&pool->none.free);
    RB_INIT(&pool->tenant_by_id);
    for (uint32_t i = 0; i < pool->max_chunks; i++)
        pool->chunks[i].tenant = &pool->none;
    return 0;
}

/* Each record leaves the tree before it is freed (see pool_destroy). */
void tenancy_destroy(pool_t *pool)
{
    struct tenant *t;

    while ((t = RB_MIN(tenant_by_id, &pool->tenant_by_id)) != NULL) {
        RB_REMOVE(tenant_by_id, &pool->tenant_by_id, t);
        free(t);
    }
    for (uint32_t i = 0; pool->chunks != NULL && i < pool->max_chunks; i++)
        free(pool->chunks[i].claimed);
    free(pool->chunks);
    free(pool->idle_map);
}

struct tenant *tenant_find(pool_t *pool, uint64_t id)
{
    struct tenant key, *t;

    if (pool->last_tenant != NULL && pool->last_tenant->id == id)
        return pool->last_tenant;
    key.id = id;
    t = RB_FIND(tenant_by_id, &pool->tenant_by_id, &key);
    if (t != NULL)
        pool->last_tenant = t;
    return t;
}

void tenant_add(pool_t *pool, struct tenant *t, uint64_t id)
{
    memset(t, 0, sizeof(*t));
    t->id = id;
    ext_index_init(&t->free);
    RB_INSERT(tenant_by_id, &pool->tenant_by_id, t);
    pool->ntenants++;
}

void tenant_maybe_free(pool_t *pool, struct tenant *t)
{
    if (t == &pool->none || t->nchunks != 0 || t->nclaims != 0)
        return;
    RB_REMOVE(tenant_by_id, &pool->tenant_by_id, t);
    if (pool->last_tenant == t)
        pool->last_tenant = NULL;
    pool->ntenants--;
    free(t);
}

/* ---- chunk states ------------------------------------------------------------------ */

static bool is_idle(const pool_t *pool, uint32_t i)
{
    const struct chunk *c = &pool->chunks[i];

    return i < pool->ready_chunks && c->tenant != &pool->none && c->claim_for == NULL &&
           c->nslices == 0;
}

void chunk_idle_update(pool_t *pool, uint32_t i)
{
    uint64_t bit = 1ull << (i % 64), *w = &pool->idle_map[i / 64];
    bool now = is_idle(pool, i), was = (*w & bit) != 0;

    if (now && !was) {
        *w |= bit;
        pool->nidle++;
    } else if (!now && was) {
        *w &= ~bit;
        pool->nidle--;
    }
}

void chunks_added(pool_t *pool, uint32_t first, uint32_t n)
{
    pool->none.nchunks += n; /* each record is none's since pool_create */
    (void)first;
}

/* Could chunk i be claimed, or given to tenant at once (wholly free)? */
static bool wholly_free(const pool_t *pool, uint32_t i)
{
    const struct chunk *c = &pool->chunks[i];

    return c->nslices == 0 && c->claim_for == NULL;
}

/* ---- room without new memory --------------------------------------------------------- */

int tenancy_find_room(pool_t *pool, uint64_t extent, uint64_t align, uint64_t tenant,
                      uint32_t *first, uint32_t *n)
{
    uint64_t cs = pool->chunk_size, at;
    uint32_t k, run = 0;

    if (ext_best_fit(pool, &pool->none, extent, align, &at) != NULL) {
        *first = (uint32_t)(at / cs);
        *n = (uint32_t)((at + extent - 1) / cs) - *first + 1;
        return 0;
    }
    if (extent <= cs)
        return PINPOOL_ENOSPC; /* a wholly free chunk of tenant's would have held it */
    /* A run of wholly free chunks, each tenant's or none's, the lowest first. */
    k = (uint32_t)((extent + cs - 1) / cs);
    for (uint32_t i = 0; i < pool->ready_chunks; i++) {
        const struct chunk *c = &pool->chunks[i];

        if (wholly_free(pool, i) && (c->tenant == &pool->none || c->tenant->id == tenant))
            run++;
        else
            run = 0;
        if (run == k) {
            *first = i + 1 - k;
            *n = k;
            return 0;
        }
    }
    return PINPOOL_ENOSPC;
}

/* Cut chunk i's whole range out of the free extent that holds it; the node
 * of that range is returned (in no index).  Takes up to 2 stash nodes. */
static struct extent *cut_chunk(pool_t *pool, uint32_t i, struct stash *st)
{
    uint64_t cs = pool->chunk_size, off = (uint64_t)i * cs;
    struct extent *e = ext_at(pool, off);
    bool exact = e->off == off && e->len == cs;
    bool split = off > e->off && off + cs < e->off + e->len;

    ext_take(pool, e, off, cs, split ? stash_take(st) : NULL);
    if (!exact)
        e = stash_take(st);
    e->off = off;
    e->len = cs;
    return e;
}

void tenancy_assign(pool_t *pool, struct tenant *t, uint32_t first, uint32_t n, struct stash *st)
{
    for (uint32_t i = first; i < first + n; i++) {
        struct chunk *c = &pool->chunks[i];
        struct extent *e;

        if (c->tenant == t)
            continue;
        e = cut_chunk(pool, i, st);
        c->tenant->nchunks--;
        c->tenant = t;
        t->nchunks++;
        ext_free_range(pool, e, e->off, e->len, t);
        chunk_idle_update(pool, i);
    }
}

/* ---- claims ------------------------------------------------------------------------ */

/* The lowest idle chunk that is not tenant's, or max_chunks. */
static uint32_t idle_not_of(const pool_t *pool, uint64_t tenant)
{
    for (uint32_t w = 0; w < (pool->ready_chunks + 63) / 64; w++) {
        for (uint64_t bits = pool->idle_map[w]; bits != 0; bits &= bits - 1) {
            uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(bits);

            if (pool->chunks[i].tenant->id != tenant)
                return i;
        }
    }
    return pool->max_chunks;
}

/* Where would a claim of k chunks for tenant go: the run of wholly free
 * chunks that needs the fewest new ones (ties: the lowest).  false if none. */
static bool claim_window(const pool_t *pool, uint64_t tenant, uint32_t k, uint32_t *first)
{
    uint32_t best = UINT32_MAX, run = 0, cost = 0;

    for (uint32_t i = 0; i < pool->ready_chunks; i++) {
        const struct tenant *t = pool->chunks[i].tenant;

        if (!wholly_free(pool, i)) {
            run = cost = 0;
            continue;
        }
        run++;
        cost += t != &pool->none && t->id != tenant;
        if (run > k) {
            const struct tenant *out = pool->chunks[i - k].tenant;
            cost -= out != &pool->none && out->id != tenant;
            run = k;
        }
        if (run == k && cost < best) {
            best = cost;
            *first = i + 1 - k;
        }
    }
    return best != UINT32_MAX;
}

int pool_claim(pool_t *pool, uint64_t tenant, uint64_t size, uint64_t align, pool_claim_t *out)
{
    struct stash st = {NULL};
    struct tenant *t, *fresh_t = NULL;
    uint64_t extent;
    uint32_t first, k;
    int rc;

    if (pool == NULL || out == NULL || tenant == POOL_TENANT_NONE)
        return PINPOOL_EINVAL;
    rc = pool_request_check(pool, size, &align, &extent);
    if (rc != 0)
        return rc;
    k = extent <= pool->chunk_size ? 1 : (uint32_t)((extent + pool->chunk_size - 1) / pool->chunk_size);
    if (k == 1) {
        first = idle_not_of(pool, tenant);
        if (first == pool->max_chunks)
            return PINPOOL_ENOSPC;
    } else if (!claim_window(pool, tenant, k, &first)) {
        return PINPOOL_ENOSPC;
    }
    t = tenant_find(pool, tenant);
    if (t == NULL && (fresh_t = t = malloc(sizeof(*t))) == NULL)
        return -ENOMEM;
    if (!stash_fill(&st, 2 * k)) {
        free(fresh_t);
        return -ENOMEM;
    }
    if (fresh_t != NULL)
        tenant_add(pool, t, tenant);

    out->tenant = tenant;
    out->first = first;
    out->n = k;
    out->fresh = 0;
    for (uint32_t i = first; i < first + k; i++) {
        struct chunk *c = &pool->chunks[i];

        c->claimed = cut_chunk(pool, i, &st);
        c->claim_for = t;
        c->fresh = c->tenant != &pool->none && c->tenant != t;
        out->fresh += c->fresh;
        t->nclaims++;
        pool->claimed += pool->chunk_size;
        chunk_idle_update(pool, i);
    }
    stash_free(&st);
    POOL_DEBUG_CHECK(pool, "pool_claim");
    return 0;
}

bool pool_claim_fresh(const pool_t *pool, uint32_t chunk)
{
    return pool != NULL && chunk < pool->max_chunks && pool->chunks[chunk].claim_for != NULL &&
           pool->chunks[chunk].fresh;
}

void pool_claim_end(pool_t *pool, const pool_claim_t *claim, bool ok)
{
    struct tenant *t;

    if (pool == NULL || claim == NULL || claim->first >= pool->max_chunks ||
        claim->n > pool->max_chunks - claim->first)
        return;
    t = pool->chunks[claim->first].claim_for;
    for (uint32_t i = claim->first; i < claim->first + claim->n; i++) {
        struct chunk *c = &pool->chunks[i];
        struct tenant *was = c->tenant, *to = ok ? c->claim_for : was;
        struct extent *e = c->claimed;

        if (e == NULL || c->claim_for != t)
            continue; /* not this claim's: the caller's mistake, nothing to undo */
        if (to != was) {
            was->nchunks--;
            to->nchunks++;
            c->tenant = to;
        }
        c->claimed = NULL;
        c->claim_for = NULL;
        c->fresh = false;
        t->nclaims--;
        pool->claimed -= pool->chunk_size;
        ext_free_range(pool, e, e->off, e->len, to);
        chunk_idle_update(pool, i);
        if (to != was)
            tenant_maybe_free(pool, was);
    }
    if (t != NULL)
        tenant_maybe_free(pool, t);
    POOL_DEBUG_CHECK(pool, "pool_claim_end");
}

int pool_chunk_info(const pool_t *pool, uint32_t chunk, pool_chunk_info_t *out)
{
    const struct chunk *c;

    if (pool == NULL || out == NULL || chunk >= pool->ready_chunks)
        return PINPOOL_EINVAL;
    c = &pool->chunks[chunk];
    memset(out, 0, sizeof(*out));
    out->tenant = c->tenant->id;
    out->nslices = c->nslices;
    out->idle = is_idle(pool, chunk);
    out->claimed = c->claim_for != NULL;
    out->claim_for = c->claim_for != NULL ? c->claim_for->id : POOL_TENANT_NONE;
    out->fresh = c->claim_for != NULL && c->fresh;
    return 0;
}
