/*
 * test_pool_model.c - the allocator against a reference model, operation by
 * operation: random allocations of three tenants, frees, frees by owner,
 * claims (ended well or not), cleaning of dirty extents, growth.  The model
 * keeps the live slices and dirty extents in a sorted array and each chunk's
 * tenant, computes the free extents (cut where the tenant changes) and the
 * placement by brute force, and follows pool.h's rules for giving a tenant
 * chunks and for claims; every answer and every statistic must match.
 *
 * Owns: its pools and models.  Never: looks inside a pool_t.  Locking: none.
 * PINPOOL_TEST_SEED picks another random sequence.
 */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pinpool.h"
#include "poolcheck.h"

#define NOWNERS 8
#define MAX_CHUNKS 64
#define NONE POOL_TENANT_NONE

/* Owner o's slices are tenant o % 3's: three tenants, as three uids. */
static uint64_t tenant_of(uint64_t owner)
{
    static const uint64_t tenants[3] = {0, 1000, 1001};

    return tenants[owner % 3];
}

struct ref {
    uint64_t id, owner, tenant, off, extent, size;
    bool dirty, cleaning;
    bool unwritten; /* marked so: freed, it is free at once */
    uint64_t seq;   /* dirty: the order it became dirty */
};

struct gap {
    uint64_t off, extent, tenant;
};

struct model {
    uint64_t counts[11]; /* outcomes, for the log: see run_random */
    uint64_t chunk, quantum, capacity, ready;
    uint32_t max_chunks, ready_chunks;
    bool multi, dirty_on_free;
    struct ref *v; /* live slices and dirty extents, sorted by offset */
    size_t n, cap;
    uint64_t next_id, used, dirty, claimed, next_seq;
    uint32_t nlive, ndirty;
    uint64_t owner_bytes[NOWNERS + 1];
    uint32_t owner_slices[NOWNERS + 1];
    uint64_t tenant[MAX_CHUNKS];   /* of each chunk */
    bool claimed_chunk[MAX_CHUNKS];
    bool fresh[MAX_CHUNKS];
    bool claim_open;               /* at most one claim at a time here */
    pool_claim_t claim;
    struct gap *gaps; /* free space, scratch */
    size_t ngaps;
};

static uint64_t rng_state;

static uint64_t rnd(void) /* xorshift64* */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static uint64_t rnd_below(uint64_t n)
{
    return rnd() % n;
}

static uint64_t round_to(uint64_t x, uint64_t m)
{
    return (x + m - 1) / m * m;
}

/* busy[c]: is anything (live or dirty) in chunk c, or is it claimed?  O(n). */
static void model_busy(const struct model *m, bool *busy)
{
    for (uint32_t c = 0; c < m->max_chunks; c++)
        busy[c] = m->claimed_chunk[c];
    for (size_t i = 0; i < m->n; i++)
        for (uint64_t c = m->v[i].off / m->chunk; c <= (m->v[i].off + m->v[i].extent - 1) / m->chunk; c++)
            busy[c] = true;
}

static bool model_idle(const struct model *m, const bool *busy, uint32_t c)
{
    return c < m->ready_chunks && m->tenant[c] != NONE && !busy[c];
}

/* Free space: between the slices and dirty extents, outside claimed chunks,
 * cut where the tenant of the chunks changes, in offset order. */
static void model_gaps(struct model *m)
{
    uint64_t pos = 0;

    m->ngaps = 0;
    for (size_t i = 0; i <= m->n; i++) {
        uint64_t next = i < m->n ? m->v[i].off : m->ready;

        while (pos < next) {
            uint32_t c = (uint32_t)(pos / m->chunk);
            uint64_t end = pos;

            if (m->claimed_chunk[c]) {
                pos = (uint64_t)(c + 1) * m->chunk;
                continue;
            }
            /* extend over the chunks of the same tenant, not claimed */
            while (end < next) {
                uint32_t k = (uint32_t)(end / m->chunk);
                uint64_t kend = (uint64_t)(k + 1) * m->chunk;

                if (m->claimed_chunk[k] || m->tenant[k] != m->tenant[c])
                    break;
                end = kend < next ? kend : next;
            }
            m->gaps[m->ngaps++] = (struct gap){.off = pos, .extent = end - pos,
                                               .tenant = m->tenant[c]};
            pos = end;
        }
        if (i < m->n)
            pos = m->v[i].off + m->v[i].extent;
    }
}

/* Lowest offset in the gap for x bytes aligned to a, by trying them in turn. */
static bool model_place(const struct model *m, const struct gap *g, uint64_t x, uint64_t a,
                        uint64_t *at)
{
    uint64_t end = g->off + g->extent;

    if (x > m->chunk) {
        uint64_t p = round_to(g->off, m->chunk);

        if (p + x > end)
            return false;
        *at = p;
        return true;
    }
    for (uint64_t p = round_to(g->off, a); p + x <= end; p += a) {
        if (p / m->chunk == (p + x - 1) / m->chunk) {
            *at = p;
            return true;
        }
    }
    return false;
}

/* Best fit among tenant t's gaps by brute force: the smallest that takes it,
 * ties lowest. */
static bool model_best(struct model *m, uint64_t t, uint64_t x, uint64_t a, uint64_t *at)
{
    const struct gap *best = NULL;
    uint64_t best_at = 0, p;

    model_gaps(m);
    for (size_t i = 0; i < m->ngaps; i++) {
        const struct gap *g = &m->gaps[i];

        if (g->tenant != t || g->extent < x || (best != NULL && g->extent >= best->extent))
            continue; /* gaps come in offset order: equal size keeps the lower */
        if (model_place(m, g, x, a, &p)) {
            best = g;
            best_at = p;
        }
    }
    *at = best_at;
    return best != NULL;
}

/* Where pool_alloc_as must put x bytes (aligned to a) of tenant t: its own
 * gaps; else chunks never used (given to t); else, for several chunks, the
 * lowest run of wholly free chunks of t's and none's (given to t). */
static bool model_alloc_at(struct model *m, uint64_t t, uint64_t x, uint64_t a, uint64_t *at)
{
    uint64_t p;

    if (model_best(m, t, x, a, at))
        return true;
    if (model_best(m, NONE, x, a, &p)) {
        for (uint64_t c = p / m->chunk; c <= (p + x - 1) / m->chunk; c++)
            m->tenant[c] = t;
        m->counts[7]++;
        cr_assert(model_best(m, t, x, a, at));
        return true;
    }
    if (x > m->chunk) {
        uint32_t k = (uint32_t)((x + m->chunk - 1) / m->chunk), run = 0;
        bool busy[MAX_CHUNKS];

        model_busy(m, busy);
        for (uint32_t c = 0; c < m->ready_chunks; c++) {
            run = !busy[c] && (m->tenant[c] == NONE || m->tenant[c] == t) ? run + 1 : 0;
            if (run == k) {
                for (uint32_t j = c + 1 - k; j <= c; j++)
                    m->tenant[j] = t;
                m->counts[7]++;
                cr_assert(model_best(m, t, x, a, at));
                return true;
            }
        }
    }
    return false;
}

static void model_insert(struct model *m, const struct ref *r)
{
    size_t lo = 0, hi = m->n;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;

        if (m->v[mid].off < r->off)
            lo = mid + 1;
        else
            hi = mid;
    }
    cr_assert(lo == 0 || m->v[lo - 1].off + m->v[lo - 1].extent <= r->off,
              "slice %" PRIu64 " overlaps slice %" PRIu64, r->id, m->v[lo - 1].id);
    cr_assert(lo == m->n || r->off + r->extent <= m->v[lo].off,
              "slice %" PRIu64 " overlaps slice %" PRIu64, r->id, m->v[lo].id);
    cr_assert_leq(r->off + r->extent, m->ready, "slice %" PRIu64 " past ready space", r->id);
    for (uint64_t c = r->off / m->chunk; c <= (r->off + r->extent - 1) / m->chunk; c++)
        cr_assert(m->tenant[c] == r->tenant && !m->claimed_chunk[c],
                  "slice %" PRIu64 " of tenant %" PRIu64 " in chunk %" PRIu64 " of %" PRIu64,
                  r->id, r->tenant, c, m->tenant[c]);
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 256;
        m->v = realloc(m->v, m->cap * sizeof(*m->v));
        m->gaps = realloc(m->gaps, (m->cap + 1 + MAX_CHUNKS) * sizeof(*m->gaps));
        cr_assert(m->v != NULL && m->gaps != NULL);
    }
    memmove(&m->v[lo + 1], &m->v[lo], (m->n - lo) * sizeof(*m->v));
    m->v[lo] = *r;
    m->n++;
    m->nlive++;
    m->used += r->extent;
    m->owner_bytes[r->owner] += r->extent;
    m->owner_slices[r->owner]++;
}

/* Slice i is freed: gone, or dirty. */
static void model_release(struct model *m, size_t i)
{
    struct ref *r = &m->v[i];

    m->used -= r->extent;
    m->owner_bytes[r->owner] -= r->extent;
    m->owner_slices[r->owner]--;
    m->nlive--;
    if (m->dirty_on_free && !r->unwritten) {
        r->dirty = true;
        r->seq = m->next_seq++;
        m->dirty += r->extent;
        m->ndirty++;
        return;
    }
    memmove(&m->v[i], &m->v[i + 1], (m->n - i - 1) * sizeof(*m->v));
    m->n--;
}

/* pool_alloc_as's first choice: a dirty extent not yet taken for cleaning,
 * among the 16 most recently freed, that owner freed, of exactly x bytes,
 * aligned to a; its index, or m->n. */
static size_t model_own_dirty(const struct model *m, uint64_t owner, uint64_t x, uint64_t a)
{
    size_t best = m->n;
    unsigned newer;

    for (size_t i = 0; i < m->n; i++) {
        const struct ref *r = &m->v[i];

        if (!r->dirty || r->cleaning || r->owner != owner || r->extent != x || r->off % a != 0)
            continue;
        newer = 0; /* waiting dirty extents freed after it: it must be among the 16 newest */
        for (size_t k = 0; k < m->n; k++)
            newer += m->v[k].dirty && !m->v[k].cleaning && m->v[k].seq > r->seq;
        if (newer < 16 && (best == m->n || r->seq > m->v[best].seq))
            best = i;
    }
    return best;
}

/* A live slice, at random: its index, or m->n when there is none. */
static size_t model_pick_live(const struct model *m)
{
    size_t start, i;

    if (m->nlive == 0)
        return m->n;
    start = (size_t)rnd_below(m->n);
    for (i = 0; i < m->n; i++)
        if (!m->v[(start + i) % m->n].dirty)
            return (start + i) % m->n;
    return m->n;
}

static void model_compare(pool_t *pool, struct model *m, uint64_t op, bool full)
{
    pool_stats_t st;
    uint64_t largest = 0, seen[MAX_CHUNKS + 1];
    uint32_t owners = 0, n, idle = 0, ntenants = 0;
    bool busy[MAX_CHUNKS];

    model_busy(m, busy);
    tp_check(pool);
    pool_get_stats(pool, &st);
    model_gaps(m);
    for (size_t i = 0; i < m->ngaps; i++)
        largest = m->gaps[i].extent > largest ? m->gaps[i].extent : largest;
    cr_assert_eq(st.ready, m->ready, "op %" PRIu64 ": ready", op);
    cr_assert_eq(st.ready_chunks, m->ready_chunks, "op %" PRIu64 ": ready_chunks", op);
    cr_assert_eq(st.used, m->used, "op %" PRIu64 ": used", op);
    cr_assert_eq(st.dirty, m->dirty, "op %" PRIu64 ": dirty", op);
    cr_assert_eq(st.claimed, m->claimed, "op %" PRIu64 ": claimed", op);
    cr_assert_eq(st.free, m->ready - m->used - m->dirty - m->claimed, "op %" PRIu64 ": free", op);
    cr_assert_eq(st.num_slices, m->nlive, "op %" PRIu64 ": num_slices", op);
    cr_assert_eq(st.num_dirty, m->ndirty, "op %" PRIu64 ": num_dirty", op);
    cr_assert_eq(st.num_free_extents, m->ngaps, "op %" PRIu64 ": free extents", op);
    cr_assert_eq(st.largest_free, largest, "op %" PRIu64 ": largest free", op);
    for (uint64_t o = 1; o <= NOWNERS; o++) {
        cr_assert_eq(pool_owner_bytes(pool, o, &n), m->owner_bytes[o], "op %" PRIu64
                     ": owner %" PRIu64 " bytes", op, o);
        cr_assert_eq(n, m->owner_slices[o]);
        owners += m->owner_slices[o] > 0;
    }
    cr_assert_eq(st.num_owners, owners, "op %" PRIu64 ": owners", op);
    for (uint32_t c = 0; c < m->ready_chunks; c++) {
        pool_chunk_info_t ci;
        bool known = false;

        cr_assert_eq(pool_chunk_info(pool, c, &ci), 0);
        cr_assert(ci.tenant == m->tenant[c] && ci.claimed == m->claimed_chunk[c] &&
                  ci.fresh == (m->claimed_chunk[c] && m->fresh[c]) && ci.idle == model_idle(m, busy, c),
                  "op %" PRIu64 ": chunk %" PRIu32 " is tenant %" PRIu64 "'s (claimed %d fresh %d"
                  " idle %d), the model says %" PRIu64 " (%d %d %d)", op, c, ci.tenant,
                  ci.claimed, ci.fresh, ci.idle, m->tenant[c], m->claimed_chunk[c], m->fresh[c],
                  model_idle(m, busy, c));
        idle += ci.idle;
        for (uint32_t k = 0; k < ntenants; k++)
            known = known || seen[k] == m->tenant[c];
        if (!known && m->tenant[c] != NONE)
            seen[ntenants++] = m->tenant[c];
    }
    if (m->claim_open) {
        bool known = false;
        for (uint32_t k = 0; k < ntenants; k++)
            known = known || seen[k] == m->claim.tenant;
        ntenants += !known;
    }
    cr_assert_eq(st.idle_chunks, idle, "op %" PRIu64 ": idle chunks", op);
    cr_assert_eq(st.num_tenants, ntenants, "op %" PRIu64 ": tenants", op);
    if (!full)
        return;
    for (size_t i = 0; i < m->n; i++) {
        pool_slice_info_t s;

        if (m->v[i].dirty) {
            cr_assert_eq(pool_lookup(pool, m->v[i].id, &s), PINPOOL_ENOENT);
            cr_assert_eq(pool_lookup_offset(pool, m->v[i].off, &s), PINPOOL_ENOENT);
            continue;
        }
        cr_assert_eq(pool_lookup(pool, m->v[i].id, &s), 0);
        cr_assert(s.offset == m->v[i].off && s.extent == m->v[i].extent &&
                  s.size == m->v[i].size && s.owner == m->v[i].owner &&
                  s.tenant == m->v[i].tenant,
                  "op %" PRIu64 ": slice %" PRIu64 " differs from the model", op, s.id);
    }
}

/* A random request: size and alignment (see random_alloc). */
static void random_request(const struct model *m, uint64_t *size, uint64_t *align)
{
    unsigned kind = (unsigned)rnd_below(100);

    if (kind < 55)
        *size = 1 + rnd_below(m->chunk / 16);
    else if (kind < 70)
        *size = 1 + rnd_below(m->chunk / 4);
    else if (kind < 85)
        *size = m->chunk / 4 + rnd_below(m->chunk - m->chunk / 4) + 1;
    else if (kind < 93)
        *size = m->chunk + 1 + rnd_below(3 * m->chunk);
    else if (kind < 96)
        *size = m->chunk * (1 + rnd_below(3));
    else if (kind < 97)
        *size = 0;
    else if (kind < 98)
        *size = m->capacity + 1 + rnd_below(m->capacity);
    else
        *size = 1 + rnd_below(m->capacity);
    *align = 0;
    switch (rnd_below(8)) {
    case 0: case 1: case 2: case 3:
        break;
    case 7:
        if (rnd_below(4) == 0) {
            *align = rnd_below(2) ? 3 * m->quantum : 2 * m->chunk; /* invalid */
            break;
        }
        /* fall through */
    default:
        for (uint64_t a = m->chunk; ; a /= 2) {
            *align = a;
            if (a == 1 || rnd_below(3) == 0)
                break;
        }
    }
}

/* What the checks of a request say (0: it is valid). */
static int model_request_error(const struct model *m, uint64_t size, uint64_t align)
{
    uint64_t x = round_to(size, m->quantum);

    if (size == 0)
        return PINPOOL_EINVAL;
    if (align != 0 && ((align & (align - 1)) != 0 || m->chunk % align != 0))
        return PINPOOL_EALIGN;
    if (size > m->capacity || (x > m->chunk && !m->multi))
        return PINPOOL_ETOOBIG;
    return 0;
}

static void random_alloc(pool_t *pool, struct model *m, uint64_t op)
{
    uint64_t owner = 1 + rnd_below(NOWNERS), size, align, x, want_at = 0;
    uint64_t t = tenant_of(owner);
    pool_slice_info_t s;
    pool_stats_t before, after;
    size_t reuse = m->n;
    bool own;
    int rc, want;

    random_request(m, &size, &align);
    x = round_to(size, m->quantum);
    want = model_request_error(m, size, align);
    own = rnd_below(2) == 0; /* as the daemon for its clients: pool_alloc_own first */
    if (want == 0 && own &&
        (reuse = model_own_dirty(m, owner, x, align < m->quantum ? m->quantum : align)) != m->n) {
        want_at = m->v[reuse].off;
    } else if (want == 0) {
        uint64_t a = align < m->quantum ? m->quantum : align;

        reuse = m->n;
        want = model_alloc_at(m, t, x, a, &want_at) ? 0 : PINPOOL_ENOSPC;
    }

    pool_get_stats(pool, &before);
    rc = PINPOOL_ENOENT;
    if (own) {
        int want_own = want != 0 && want != PINPOOL_ENOSPC ? want
                       : reuse != m->n                     ? 0
                                                           : PINPOOL_ENOENT;

        rc = pool_alloc_own(pool, t, owner, size, align, &s);
        cr_assert_eq(rc, want_own, "op %" PRIu64 ": pool_alloc_own = %d, want %d", op, rc,
                     want_own);
    }
    if (rc == PINPOOL_ENOENT)
        rc = pool_alloc_as(pool, t, owner, size, align, &s);
    cr_assert_eq(rc, want, "op %" PRIu64 ": alloc(tenant %" PRIu64 ", size %" PRIu64 ", align %"
                 PRIu64 ") = %d, want %d", op, t, size, align, rc, want);
    m->counts[rc == 0 ? (x > m->chunk ? 1 : 0) : rc == PINPOOL_ENOSPC ? 2 : 3]++;
    if (rc != 0) {
        pool_get_stats(pool, &after);
        tp_expect_same_stats(&before, &after, "failed alloc");
        return;
    }
    cr_assert_eq(s.id, m->next_id, "op %" PRIu64 ": id", op);
    cr_assert_eq(s.offset, want_at, "op %" PRIu64 ": alloc(size %" PRIu64 ", align %" PRIu64
                 ") at %" PRIu64 ", best fit is %" PRIu64, op, size, align, s.offset, want_at);
    cr_assert(s.owner == owner && s.size == size && s.extent == x && s.tenant == t);
    cr_assert_eq(s.offset % (align > m->quantum ? align : m->quantum), 0);
    if (x <= m->chunk)
        cr_assert(!tp_crosses_chunk(&s, m->chunk), "op %" PRIu64 ": crosses a chunk", op);
    else
        cr_assert_eq(s.offset % m->chunk, 0, "op %" PRIu64 ": multi-chunk not on a boundary",
                     op);
    cr_assert_eq(s.first_chunk, s.offset / m->chunk);
    cr_assert_eq(s.nchunks, (s.offset + x - 1) / m->chunk - s.offset / m->chunk + 1);
    m->next_id++;
    bool unwritten = rnd_below(3) == 0;
    if (unwritten)
        cr_assert_eq(pool_mark_unwritten(pool, s.id), 0);
    if (reuse != m->n) { /* the owner's own dirty extent, live again */
        struct ref *r = &m->v[reuse];

        m->dirty -= r->extent;
        m->ndirty--;
        m->counts[10]++;
        *r = (struct ref){.id = s.id, .owner = owner, .tenant = t, .off = s.offset,
                          .extent = x, .size = size, .unwritten = unwritten};
        m->nlive++;
        m->used += x;
        m->owner_bytes[owner] += x;
        m->owner_slices[owner]++;
        return;
    }
    model_insert(m, &(struct ref){.id = s.id, .owner = owner, .tenant = t, .off = s.offset,
                                  .extent = x, .size = size, .unwritten = unwritten});
}

static void random_free(pool_t *pool, struct model *m, uint64_t op)
{
    unsigned kind = (unsigned)rnd_below(100);
    size_t i = model_pick_live(m);
    uint64_t freed = 0, id;
    pool_stats_t before, after;

    if (i == m->n || kind < 3) { /* no such slice (or a dirty one) */
        id = i < m->n && rnd_below(2) ? m->v[rnd_below(m->n)].id
                                      : rnd_below(2) ? m->next_id + rnd_below(10) : 0;
        for (size_t k = 0; k < m->n; k++)
            if (m->v[k].id == id && !m->v[k].dirty)
                return; /* a live one after all: nothing to check */
        pool_get_stats(pool, &before);
        cr_assert_eq(pool_free(pool, id, 1, &freed), PINPOOL_ENOENT,
                     "op %" PRIu64, op);
        cr_assert_eq(pool_mark_unwritten(pool, id), PINPOOL_ENOENT, "op %" PRIu64, op);
        pool_get_stats(pool, &after);
        tp_expect_same_stats(&before, &after, "ENOENT");
        return;
    }
    if (kind < 8) { /* somebody else's */
        uint64_t other = m->v[i].owner % NOWNERS + 1;

        pool_get_stats(pool, &before);
        cr_assert_eq(pool_free(pool, m->v[i].id, other, &freed), PINPOOL_EPERM,
                     "op %" PRIu64, op);
        pool_get_stats(pool, &after);
        tp_expect_same_stats(&before, &after, "EPERM");
        return;
    }
    cr_assert_eq(pool_free(pool, m->v[i].id, m->v[i].owner, &freed), 0, "op %" PRIu64, op);
    m->counts[4]++;
    cr_assert_eq(freed, m->v[i].extent);
    model_release(m, i);
}

static void random_free_owner(pool_t *pool, struct model *m, uint64_t op)
{
    uint64_t owner = 1 + rnd_below(NOWNERS), freed = 0, want = m->owner_bytes[owner];
    uint32_t count = m->owner_slices[owner];
    uint64_t ids[4096];
    size_t k = 0;

    cr_assert_eq(pool_free_owner(pool, owner, &freed), (int)count, "op %" PRIu64, op);
    cr_assert_eq(freed, want);
    m->counts[5] += count;
    /* in id order, as the pool releases them (and so they become dirty) */
    for (size_t i = 0; i < m->n; i++)
        if (!m->v[i].dirty && m->v[i].owner == owner && k < 4096)
            ids[k++] = m->v[i].id;
    for (size_t a = 1; a < k; a++)
        for (size_t b = a; b > 0 && ids[b - 1] > ids[b]; b--) {
            uint64_t tmp = ids[b];
            ids[b] = ids[b - 1];
            ids[b - 1] = tmp;
        }
    for (size_t j = 0; j < k; j++)
        for (size_t i = 0; i < m->n; i++)
            if (m->v[i].id == ids[j] && !m->v[i].dirty) {
                model_release(m, i);
                break;
            }
}

/* Take the oldest dirty extent for cleaning, or finish one being cleaned. */
static void random_clean_one(pool_t *pool, struct model *m, uint64_t op, bool finish_one)
{
    pool_dirty_t d;
    size_t oldest = m->n, busy[64], nbusy = 0;

    for (size_t i = 0; i < m->n; i++) {
        if (m->v[i].dirty && !m->v[i].cleaning && (oldest == m->n || m->v[i].seq < m->v[oldest].seq))
            oldest = i;
        if (m->v[i].cleaning && nbusy < 64)
            busy[nbusy++] = i;
    }
    if (nbusy > 0 && (finish_one || oldest == m->n)) {
        size_t i = busy[rnd_below(nbusy)];

        cr_assert_eq(pool_clean_done(pool, m->v[i].id), 0, "op %" PRIu64, op);
        cr_assert_eq(pool_clean_done(pool, m->v[i].id), PINPOOL_ENOENT);
        m->dirty -= m->v[i].extent;
        m->ndirty--;
        memmove(&m->v[i], &m->v[i + 1], (m->n - i - 1) * sizeof(*m->v));
        m->n--;
        m->counts[6]++;
        return;
    }
    if (oldest == m->n) {
        cr_assert_eq(pool_clean_take(pool, &d), PINPOOL_ENOENT, "op %" PRIu64, op);
        return;
    }
    cr_assert_eq(pool_clean_take(pool, &d), 0, "op %" PRIu64, op);
    cr_assert(d.id == m->v[oldest].id && d.offset == m->v[oldest].off &&
              d.len == m->v[oldest].extent, "op %" PRIu64 ": took dirty %" PRIu64 ", want %"
              PRIu64, op, d.id, m->v[oldest].id);
    m->v[oldest].cleaning = true;
}

/* A cleaner's step: take a few, or finish a few (in any order). */
static void random_clean(pool_t *pool, struct model *m, uint64_t op)
{
    bool finish_some = rnd_below(2) == 0;

    for (unsigned i = 1 + (unsigned)rnd_below(6); i > 0; i--)
        random_clean_one(pool, m, op, finish_some);
}

/* Claim room for a random request of a random tenant, or end the claim open. */
static void random_claim(pool_t *pool, struct model *m, uint64_t op)
{
    uint64_t size, align, x, t = tenant_of(1 + rnd_below(NOWNERS));
    uint32_t k, first = 0, best = UINT32_MAX;
    bool busy[MAX_CHUNKS];
    pool_claim_t c;
    int rc, want;

    if (m->claim_open) {
        bool ok = rnd_below(4) != 0;

        for (uint32_t i = m->claim.first; i < m->claim.first + m->claim.n; i++) {
            cr_assert_eq(pool_claim_fresh(pool, i), m->fresh[i]);
            if (ok)
                m->tenant[i] = m->claim.tenant;
            m->claimed_chunk[i] = m->fresh[i] = false;
            m->claimed -= m->chunk;
        }
        pool_claim_end(pool, &m->claim, ok);
        m->claim_open = false;
        return;
    }
    random_request(m, &size, &align);
    x = round_to(size, m->quantum);
    want = model_request_error(m, size, align);
    k = x <= m->chunk ? 1 : (uint32_t)((x + m->chunk - 1) / m->chunk);
    model_busy(m, busy);
    if (want == 0 && k == 1) {
        for (first = 0; first < m->ready_chunks; first++)
            if (model_idle(m, busy, first) && m->tenant[first] != t)
                break;
        want = first < m->ready_chunks ? 0 : PINPOOL_ENOSPC;
    } else if (want == 0) {
        for (uint32_t w = 0; w + k <= m->ready_chunks; w++) {
            uint32_t cost = 0, j;

            for (j = w; j < w + k && !busy[j]; j++)
                cost += m->tenant[j] != NONE && m->tenant[j] != t;
            if (j == w + k && cost < best) {
                best = cost;
                first = w;
            }
        }
        want = best != UINT32_MAX ? 0 : PINPOOL_ENOSPC;
    }
    rc = pool_claim(pool, t, size, align, &c);
    cr_assert_eq(rc, want, "op %" PRIu64 ": claim(tenant %" PRIu64 ", size %" PRIu64 ") = %d,"
                 " want %d", op, t, size, rc, want);
    if (rc != 0)
        return;
    cr_assert(c.tenant == t && c.first == first && c.n == k, "op %" PRIu64 ": claimed %" PRIu32
              "+%" PRIu32 ", want %" PRIu32 "+%" PRIu32, op, c.first, c.n, first, k);
    k = 0;
    for (uint32_t i = c.first; i < c.first + c.n; i++) {
        m->claimed_chunk[i] = true;
        m->fresh[i] = m->tenant[i] != NONE && m->tenant[i] != t;
        k += m->fresh[i];
        m->claimed += m->chunk;
    }
    cr_assert_eq(c.fresh, k);
    m->claim = c;
    m->claim_open = true;
    m->counts[8]++;
    m->counts[9] += k;
}

static void random_add_chunks(pool_t *pool, struct model *m, uint64_t op)
{
    uint32_t n = 1 + (uint32_t)rnd_below(3);

    if (n > m->max_chunks - m->ready_chunks) {
        pool_stats_t before, after;

        pool_get_stats(pool, &before);
        cr_assert_eq(pool_add_chunks(pool, n), PINPOOL_EINVAL, "op %" PRIu64, op);
        pool_get_stats(pool, &after);
        tp_expect_same_stats(&before, &after, "add_chunks past max");
        return;
    }
    cr_assert_eq(pool_add_chunks(pool, n), 0, "op %" PRIu64, op);
    m->ready_chunks += n;
    m->ready += n * m->chunk;
}

/* ops random operations; allocations outnumber frees while less than fill
 * percent of the ready space is used. */
static void run_random(uint64_t chunk, uint64_t quantum, uint32_t max_chunks, bool multi,
                       bool dirty_on_free, unsigned fill, uint64_t ops)
{
    pool_params_t params = {.chunk_size = chunk, .max_chunks = max_chunks, .quantum = quantum,
                            .allow_multi_chunk = multi, .dirty_on_free = dirty_on_free};
    pool_t *pool = NULL;
    struct model m = {.chunk = chunk, .quantum = quantum, .capacity = chunk * max_chunks,
                      .ready = 2 * chunk, .max_chunks = max_chunks, .ready_chunks = 2,
                      .multi = multi, .dirty_on_free = dirty_on_free, .next_id = 1};

    cr_assert_leq(max_chunks, MAX_CHUNKS);
    cr_assert_eq(pool_create(&pool, &params), 0);
    cr_assert_eq(pool_add_chunks(pool, 2), 0);
    for (uint32_t c = 0; c < MAX_CHUNKS; c++)
        m.tenant[c] = NONE;
    m.cap = 256;
    m.v = malloc(m.cap * sizeof(*m.v));
    m.gaps = malloc((m.cap + 1 + MAX_CHUNKS) * sizeof(*m.gaps));
    cr_assert(m.v != NULL && m.gaps != NULL);
    for (uint64_t op = 0; op < ops; op++) {
        unsigned r = (unsigned)rnd_below(1000);
        unsigned alloc_share = m.used * 100 < m.ready * fill ? 600 : 300;

        if (r < 4)
            random_add_chunks(pool, &m, op);
        else if (r < 14)
            random_free_owner(pool, &m, op);
        else if (r < 40)
            random_claim(pool, &m, op);
        else if (r < 40 + (dirty_on_free ? 120 : 0))
            random_clean(pool, &m, op);
        else if (r < 160 + alloc_share)
            random_alloc(pool, &m, op);
        else
            random_free(pool, &m, op);
        model_compare(pool, &m, op, op % 1024 == 0);
    }
    cr_log_info("random: chunk %" PRIu64 ", quantum %" PRIu64 ", multi %d, dirty %d: %" PRIu64
                " ops: %" PRIu64 " allocs (%" PRIu64 " multi-chunk), %" PRIu64 " ENOSPC, %"
                PRIu64 " other errors, %" PRIu64 " frees, %" PRIu64 " by owner, %" PRIu64
                " cleaned, %" PRIu64 " own dirty extents taken back; %" PRIu64 " chunk runs given, %"
                PRIu64 " claims (%" PRIu64 " chunks fresh); %" PRIu32 " chunks ready", chunk,
                quantum, (int)multi,
                (int)dirty_on_free, ops, m.counts[0] + m.counts[1], m.counts[1], m.counts[2],
                m.counts[3], m.counts[4], m.counts[5], m.counts[6], m.counts[10], m.counts[7],
                m.counts[8], m.counts[9], m.ready_chunks);
    if (m.claim_open)
        pool_claim_end(pool, &m.claim, true);
    for (size_t i = 0; i < m.n; i++)
        if (m.v[i].cleaning)
            cr_assert_eq(pool_clean_done(pool, m.v[i].id), 0);
    free(m.v);
    free(m.gaps);
    tp_finish(pool);
}

static void seed_rng(void)
{
    const char *env = getenv("PINPOOL_TEST_SEED");

    rng_state = env != NULL ? strtoull(env, NULL, 0) : 0x5eed5eed1234ull;
    if (rng_state == 0)
        rng_state = 1;
    cr_log_info("seed 0x%" PRIx64 " (set PINPOOL_TEST_SEED to change)", rng_state);
}

Test(pool_model, randomized_vs_model, .timeout = 60)
{
    seed_rng();
    run_random(16 * KiB, 64, 32, true, false, 50, 25000);
    run_random(16 * KiB, 64, 32, true, true, 50, 25000);
    run_random(16 * KiB, 256, 32, false, true, 80, 15000);
    run_random(4 * KiB, 256, 64, true, true, 60, 15000);
    run_random(64 * KiB, 64, 16, true, false, 40, 10000);
}
