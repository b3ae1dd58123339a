/*
 * tier_index.c - the index of a tier whose backend cannot list its objects
 * (Mooncake: MooncakeDistributedStore has no call that lists keys, and the
 * C API neither), so that the daemon can reconcile such a tier at start.
 *
 * Owns: an in-memory table of every object put through the tier (its key,
 * size, checksum (tier__checksum) of its bytes, the caller's metadata, and whether it is dead:
 * removed by the daemon but still in the backend), and its copy in the
 * backend: INDEX_SHARDS objects under the reserved keys ".pinpool.index.NN"
 * (under the Mooncake prefix, like every key), an entry in shard
 * tier__checksum(key) % INDEX_SHARDS, so that a change rewrites one shard, not all.
 *
 * The rules that make a restart safe:
 *   - put: the entry is recorded and its shard written *before* the object is
 *     put (a crash in between leaves an entry whose object is missing, which
 *     the next listing drops); a failed shard write fails the put.
 *   - remove: an object that is gone is forgotten with its shard's next write
 *     (until then the shard names a missing object: dropped when listed); one
 *     the backend would not remove (a reader's lease) is marked dead and its
 *     shard written at once, so that a restart removes it, never lists it.
 *   - get: the bytes must match the CRC recorded at put (-EBADMSG).
 *   - list: dead entries are removed from the backend, entries whose object
 *     is gone (evicted by Mooncake, or lost with its master) are dropped, both
 *     reported as damage; the rest are listed.  Then every changed shard is
 *     written.
 * Shard format (little endian): "PPIDX1\n\0", u32 entries, u32 checksum (tier__checksum) of
 * what follows; then per entry u32 keylen, u32 metalen, u64 size, u32 crc,
 * u32 flags (1: dead), the key, the metadata.
 * Never: calls the tier (tier.c) back, or the backend without x->lock.
 * Locking: x->lock guards the table and the shards, and is held across the
 * backend calls that write or read them (the Mooncake backend serialises its
 * calls anyway); it is taken before, never under, a lock of the backend's.
 */
#include "tier_index.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pinpool.h"
#include "rbtree.h"

#define INDEX_SHARDS 64
#define SHARD_MAGIC "PPIDX1\n"
#define SHARD_HDR 16
#define ENTRY_HDR 24
#define FLAG_DEAD 1u
#define LIST_BATCH 256 /* entries asked about in one exists batch */

struct entry {
    RB_ENTRY(entry) node;
    uint32_t shard;
    bool dead;
    uint32_t keylen, metalen, crc;
    uint64_t size;
    unsigned char meta[TIER_META_MAX];
    unsigned char key[];
};

static int entry_cmp(const struct entry *a, const struct entry *b)
{
    if (a->shard != b->shard)
        return a->shard < b->shard ? -1 : 1;
    if (a->keylen != b->keylen)
        return a->keylen < b->keylen ? -1 : 1;
    return memcmp(a->key, b->key, a->keylen);
}

RB_HEAD(entry_tree, entry);
RB_GENERATE_STATIC(entry_tree, entry, node, entry_cmp)
#include "rbtree_end.h"

struct tier_index {
    pthread_mutex_t lock;
    const tier_ops_t *ops;
    void *impl;
    struct entry_tree tree;
    int64_t live;
    uint64_t dirty; /* bit s: shard s changed since it was written */
    uint32_t lost_shards; /* shards that could not be read at open */
};

static uint32_t shard_of(const void *key, size_t keylen)
{
    return tier__checksum(key, keylen) % INDEX_SHARDS;
}

static void shard_key(uint32_t s, char *buf, size_t len)
{
    snprintf(buf, len, TIER_RESERVED "index.%02u", s);
}

static struct entry *find(tier_index_t *x, const void *key, size_t keylen)
{
    struct {
        struct entry e;
        unsigned char k[TIER_KEY_MAX];
    } probe;

    if (keylen > TIER_KEY_MAX)
        return NULL;
    probe.e.shard = shard_of(key, keylen);
    probe.e.keylen = (uint32_t)keylen;
    memcpy(probe.e.key, key, keylen);
    return RB_FIND(entry_tree, &x->tree, &probe.e);
}

static void drop(tier_index_t *x, struct entry *e)
{
    RB_REMOVE(entry_tree, &x->tree, e);
    x->dirty |= 1ull << e->shard;
    if (!e->dead)
        x->live--;
    free(e);
}

/* ---- shards ------------------------------------------------------------------------ */

/* Write shard s as the table has it (remove it when empty).  Lock held. */
static int write_shard(tier_index_t *x, uint32_t s)
{
    struct entry probe = {.shard = s}, *e;
    size_t len = SHARD_HDR, off = SHARD_HDR;
    uint32_t n = 0, crc;
    char key[32];
    unsigned char *buf;
    int rc;

    shard_key(s, key, sizeof(key));
    for (e = RB_NFIND(entry_tree, &x->tree, &probe); e != NULL && e->shard == s;
         e = RB_NEXT(entry_tree, &x->tree, e)) {
        len += ENTRY_HDR + e->keylen + e->metalen;
        n++;
    }
    if (n == 0) {
        rc = x->ops->remove(x->impl, key, strlen(key));
        rc = rc == PINPOOL_ENOKEY ? 0 : rc;
    } else {
        buf = malloc(len);
        if (buf == NULL)
            return tier__fail(-ENOMEM, "the tier's index: no memory for %zu bytes", len);
        for (e = RB_NFIND(entry_tree, &x->tree, &probe); e != NULL && e->shard == s;
             e = RB_NEXT(entry_tree, &x->tree, e)) {
            uint32_t flags = e->dead ? FLAG_DEAD : 0;

            memcpy(buf + off, &e->keylen, 4);
            memcpy(buf + off + 4, &e->metalen, 4);
            memcpy(buf + off + 8, &e->size, 8);
            memcpy(buf + off + 16, &e->crc, 4);
            memcpy(buf + off + 20, &flags, 4);
            memcpy(buf + off + ENTRY_HDR, e->key, e->keylen);
            memcpy(buf + off + ENTRY_HDR + e->keylen, e->meta, e->metalen);
            off += ENTRY_HDR + e->keylen + e->metalen;
        }
        memcpy(buf, SHARD_MAGIC, 8);
        memcpy(buf + 8, &n, 4);
        crc = tier__checksum(buf + SHARD_HDR, len - SHARD_HDR);
        memcpy(buf + 12, &crc, 4);
        rc = x->ops->put(x->impl, key, strlen(key), buf, len, NULL, 0);
        free(buf);
    }
    if (rc == 0)
        x->dirty &= ~(1ull << s);
    return rc;
}

static void write_dirty(tier_index_t *x)
{
    for (uint32_t s = 0; s < INDEX_SHARDS; s++)
        if ((x->dirty & (1ull << s)) != 0 && write_shard(x, s) != 0)
            break; /* the backend is down: the next change or close tries again */
}

/* Parse shard s (len bytes) into the table.  0, or -EBADMSG. */
static int parse_shard(tier_index_t *x, uint32_t s, const unsigned char *buf, uint64_t len)
{
    uint32_t n, crc;
    uint64_t off = SHARD_HDR;

    if (len < SHARD_HDR || memcmp(buf, SHARD_MAGIC, 8) != 0)
        return -EBADMSG;
    memcpy(&n, buf + 8, 4);
    memcpy(&crc, buf + 12, 4);
    if (crc != tier__checksum(buf + SHARD_HDR, len - SHARD_HDR))
        return -EBADMSG;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t keylen, metalen, flags;
        struct entry *e;

        if (len - off < ENTRY_HDR)
            return -EBADMSG;
        memcpy(&keylen, buf + off, 4);
        memcpy(&metalen, buf + off + 4, 4);
        if (keylen == 0 || keylen > TIER_KEY_MAX || metalen > TIER_META_MAX ||
            len - off - ENTRY_HDR < (uint64_t)keylen + metalen ||
            shard_of(buf + off + ENTRY_HDR, keylen) != s)
            return -EBADMSG;
        e = calloc(1, sizeof(*e) + keylen);
        if (e == NULL)
            return -ENOMEM;
        e->shard = s;
        e->keylen = keylen;
        e->metalen = metalen;
        memcpy(&e->size, buf + off + 8, 8);
        memcpy(&e->crc, buf + off + 16, 4);
        memcpy(&flags, buf + off + 20, 4);
        e->dead = (flags & FLAG_DEAD) != 0;
        memcpy(e->key, buf + off + ENTRY_HDR, keylen);
        memcpy(e->meta, buf + off + ENTRY_HDR + keylen, metalen);
        off += ENTRY_HDR + keylen + metalen;
        if (RB_INSERT(entry_tree, &x->tree, e) != NULL) {
            free(e);
            return -EBADMSG;
        }
        if (!e->dead)
            x->live++;
    }
    return off == len ? 0 : -EBADMSG;
}

/* Read shard s: 0 (also when there is none), or an error (the backend's). */
static int read_shard(tier_index_t *x, uint32_t s)
{
    char key[32];
    uint64_t size = 0, got = 0;
    unsigned char *buf;
    int rc;

    shard_key(s, key, sizeof(key));
    rc = x->ops->size(x->impl, key, strlen(key), &size);
    if (rc == PINPOOL_ENOKEY)
        return 0;
    if (rc != 0)
        return rc;
    buf = size > 0 && size < (1ull << 32) ? malloc(size) : NULL;
    if (buf == NULL)
        return -EBADMSG;
    rc = x->ops->get(x->impl, key, strlen(key), buf, size, &got);
    if (rc == 0 && got != size)
        rc = -EBADMSG;
    if (rc == 0)
        rc = parse_shard(x, s, buf, size);
    free(buf);
    return rc;
}

/* ---- the calls -------------------------------------------------------------------- */

int tier_index_open(tier_index_t **out, const tier_ops_t *ops, void *impl, char *err,
                    size_t errlen)
{
    tier_index_t *x = calloc(1, sizeof(*x));

    if (x == NULL)
        return -ENOMEM;
    pthread_mutex_init(&x->lock, NULL);
    RB_INIT(&x->tree);
    x->ops = ops;
    x->impl = impl;
    for (uint32_t s = 0; s < INDEX_SHARDS; s++) {
        int rc = read_shard(x, s);

        if (rc == -EBADMSG) {
            /* Its objects are unknown: they stay in the backend, unlisted. */
            struct entry probe = {.shard = s}, *e, *next;

            for (e = RB_NFIND(entry_tree, &x->tree, &probe); e != NULL && e->shard == s;
                 e = next) {
                next = RB_NEXT(entry_tree, &x->tree, e);
                drop(x, e);
            }
            x->lost_shards++;
            x->dirty |= 1ull << s;
        } else if (rc != 0) {
            snprintf(err, errlen, "spill tier: cannot read its index (%s" "index.%02u): %s%s%s",
                     TIER_RESERVED, s, pinpool_strerror(rc), tier_errmsg()[0] ? ": " : "",
                     tier_errmsg());
            tier_index_close(x);
            return rc;
        }
    }
    *out = x;
    return 0;
}

void tier_index_close(tier_index_t *x)
{
    struct entry *e, *next;

    if (x == NULL)
        return;
    pthread_mutex_lock(&x->lock);
    write_dirty(x);
    RB_FOREACH_SAFE(e, entry_tree, &x->tree, next) {
        RB_REMOVE(entry_tree, &x->tree, e);
        free(e);
    }
    pthread_mutex_unlock(&x->lock);
    pthread_mutex_destroy(&x->lock);
    free(x);
}

/* Record key (lock held); the shard to write is e->shard.  NULL: no memory. */
static struct entry *record(tier_index_t *x, const void *key, size_t keylen, uint64_t len,
                            uint32_t crc, const void *meta, uint32_t metalen)
{
    struct entry *e = find(x, key, keylen);

    if (e == NULL) {
        e = calloc(1, sizeof(*e) + keylen);
        if (e == NULL)
            return NULL;
        e->shard = shard_of(key, keylen);
        e->keylen = (uint32_t)keylen;
        memcpy(e->key, key, keylen);
        RB_INSERT(entry_tree, &x->tree, e);
        x->live++;
    } else if (e->dead) {
        e->dead = false;
        x->live++;
    }
    e->size = len;
    e->crc = crc;
    e->metalen = metalen;
    if (metalen > 0)
        memcpy(e->meta, meta, metalen);
    x->dirty |= 1ull << e->shard;
    return e;
}

int tier_index_put(tier_index_t *x, const void *key, size_t keylen, const void *buf,
                   uint64_t len, const void *meta, uint32_t metalen)
{
    tier_item_t it = {.key = key, .keylen = keylen, .buf = (void *)(uintptr_t)buf, .len = len,
                      .meta = meta, .metalen = metalen};

    tier_index_put_many(x, &it, 1);
    return it.rc;
}

void tier_index_put_many(tier_index_t *x, tier_item_t *items, size_t n)
{
    uint64_t shards = 0;
    int failed = 0;

    if (x == NULL)
        return;
    for (size_t i = 0; i < n; i++) /* before the lock: the bytes are the caller's */
        if (items[i].rc == 0)
            items[i].got = tier__checksum(items[i].buf, items[i].len);
    pthread_mutex_lock(&x->lock);
    for (size_t i = 0; i < n; i++) {
        tier_item_t *it = &items[i];
        struct entry *e;

        if (it->rc != 0)
            continue;
        e = it->metalen <= TIER_META_MAX
                ? record(x, it->key, it->keylen, it->len, (uint32_t)it->got, it->meta,
                         it->metalen)
                : NULL;
        it->got = 0;
        if (e == NULL)
            it->rc = it->metalen > TIER_META_MAX ? PINPOOL_EINVAL : -ENOMEM;
        else
            shards |= 1ull << e->shard;
    }
    /* Each shard once; after one failed (the backend is down) the rest fail too. */
    for (uint32_t s = 0; s < INDEX_SHARDS; s++) {
        if ((shards & (1ull << s)) == 0)
            continue;
        int rc = failed != 0 ? failed : write_shard(x, s);

        if (rc == 0)
            continue;
        failed = rc;
        for (size_t i = 0; i < n; i++)
            if (items[i].rc == 0 && shard_of(items[i].key, items[i].keylen) == s)
                items[i].rc = rc;
    }
    pthread_mutex_unlock(&x->lock);
}

void tier_index_put_failed(tier_index_t *x, const void *key, size_t keylen)
{
    struct entry *e;

    if (x == NULL)
        return;
    pthread_mutex_lock(&x->lock);
    e = find(x, key, keylen);
    if (e != NULL && !e->dead)
        drop(x, e);
    pthread_mutex_unlock(&x->lock);
}

void tier_index_removed(tier_index_t *x, const void *key, size_t keylen, int rc)
{
    struct entry *e;

    if (x == NULL)
        return;
    pthread_mutex_lock(&x->lock);
    e = find(x, key, keylen);
    if (e != NULL && (rc == 0 || rc == PINPOOL_ENOKEY)) {
        drop(x, e);
    } else if (e != NULL && !e->dead) {
        e->dead = true;
        x->live--;
        x->dirty |= 1ull << e->shard;
        write_shard(x, e->shard); /* a failure: the next change writes it */
    }
    pthread_mutex_unlock(&x->lock);
}

int tier_index_check(tier_index_t *x, const void *key, size_t keylen, const void *buf,
                     uint64_t got)
{
    struct entry *e;
    uint64_t size = 0;
    uint32_t crc = 0;
    bool known;

    if (x == NULL)
        return 0;
    pthread_mutex_lock(&x->lock);
    e = find(x, key, keylen);
    known = e != NULL && !e->dead;
    if (known) {
        size = e->size;
        crc = e->crc;
    }
    pthread_mutex_unlock(&x->lock);
    if (known && (size != got || tier__checksum(buf, got) != crc))
        return tier__fail(-EBADMSG, "the tier's copy of %.*s is not what was put (%" PRIu64
                          " bytes read, %" PRIu64 " put, or another checksum (tier__checksum))",
                          (int)(keylen > 200 ? 200 : keylen), (const char *)key, got, size);
    return 0;
}

int64_t tier_index_count(tier_index_t *x)
{
    int64_t n;

    if (x == NULL)
        return -1;
    pthread_mutex_lock(&x->lock);
    n = x->live;
    pthread_mutex_unlock(&x->lock);
    return n;
}

/* Report e to fn as damage (why), with its key shown as where. */
static int report(const struct entry *e, const char *why, tier_list_fn fn, void *arg)
{
    char where[TIER_KEY_MAX + 1];
    tier_entry_t te = {.key = e->key, .keylen = e->keylen, .size = e->size, .meta = e->meta,
                       .metalen = e->metalen, .where = where, .damage = why};

    snprintf(where, sizeof(where), "%.*s", (int)e->keylen, (const char *)e->key);
    return fn(&te, arg);
}

int tier_index_list(tier_index_t *x, tier_list_fn fn, void *arg)
{
    struct entry *e, *next;
    int rc = 0;

    if (x == NULL)
        return 0;
    pthread_mutex_lock(&x->lock);
    if (x->lost_shards > 0) {
        char why[160];
        tier_entry_t te = {.where = TIER_RESERVED "index", .damage = why};

        snprintf(why, sizeof(why), "%u of its %d shards were unreadable: the objects they "
                 "named stay in the tier, unknown to the daemon", x->lost_shards, INDEX_SHARDS);
        x->lost_shards = 0;
        rc = fn(&te, arg);
    }
    /* In groups, each asked about in one exists batch. */
    for (e = RB_MIN(entry_tree, &x->tree); e != NULL && rc == 0;) {
        struct entry *group[LIST_BATCH];
        tier_item_t items[LIST_BATCH];
        size_t n = 0;

        for (; e != NULL && n < LIST_BATCH && rc == 0; e = next) {
            next = RB_NEXT(entry_tree, &x->tree, e);
            if (e->dead) {
                int r = x->ops->remove(x->impl, e->key, e->keylen);

                if (r == 0 || r == PINPOOL_ENOKEY) {
                    rc = report(e, "removed before the restart, its copy left behind then "
                                   "(a reader's lease): deleted now", fn, arg);
                    drop(x, e);
                }
                continue;
            }
            items[n] = (tier_item_t){.key = e->key, .keylen = e->keylen};
            group[n++] = e;
        }
        if (x->ops->exists_batch != NULL && n > 0)
            x->ops->exists_batch(x->impl, items, n);
        else
            for (size_t i = 0; i < n; i++)
                items[i].rc = x->ops->exists(x->impl, items[i].key, items[i].keylen);
        for (size_t i = 0; i < n && rc == 0; i++) {
            struct entry *g = group[i];

            if (items[i].rc == 0) {
                rc = report(g, "gone from the tier (evicted, or lost with the tier's master)",
                            fn, arg);
                drop(x, g);
            } else if (items[i].rc == 1) {
                char where[TIER_KEY_MAX + 1];
                tier_entry_t te = {.key = g->key, .keylen = g->keylen, .size = g->size,
                                   .meta = g->meta, .metalen = g->metalen, .where = where};

                snprintf(where, sizeof(where), "%.*s", (int)g->keylen, (const char *)g->key);
                rc = fn(&te, arg);
            } else {
                rc = items[i].rc; /* the backend failed: stop, say why */
            }
        }
    }
    write_dirty(x);
    pthread_mutex_unlock(&x->lock);
    return rc;
}
