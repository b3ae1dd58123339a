/*
 * tier.c - the generic spill-tier layer (see tier.h for the contract).
 *
 * Owns: choosing the backend by URI scheme, checking arguments before a
 * backend sees them, timing every call, the statistics, the calling
 * thread's last error message, and, for a backend that cannot list its
 * objects, the index (t->index, tier_index.c) that every put, get and remove
 * goes through.
 * Never: knows how a backend stores bytes.
 * Locking: t->lock guards only the counters; it is never held across a
 * backend call, so calls on one tier from many threads run concurrently as
 * far as the backend allows.  The index has its own lock (tier_index.c),
 * taken before any lock of the backend's.
 */
#include "tier.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <xxhash.h>

#include "pinpool.h"
#include "tier_index.h"

static const tier_ops_t *const backends[] = {&tier_file_ops, &tier_mooncake_ops};

struct tier {
    const tier_ops_t *ops;
    void *impl;
    pthread_mutex_t lock;
    tier_stats_t st;
    tier_index_t *index; /* NULL: the backend lists its objects */
};

static __thread char last_err[TIER_ERRMSG_LEN];

int tier__fail(int rc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(last_err, sizeof(last_err), fmt, ap);
    va_end(ap);
    return rc;
}

const char *tier_errmsg(void)
{
    return last_err;
}

uint32_t tier__checksum(const void *buf, uint64_t len)
{
    return (uint32_t)XXH3_64bits(buf, (size_t)len);
}

int tier__escape_key(const void *key, size_t keylen, char *dst, size_t dstlen, const char *keep)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *k = key;
    size_t n = 0;

    for (size_t i = 0; i < keylen; i++) {
        unsigned char c = k[i];
        bool plain;

        if (keep != NULL)
            plain = c != '%' && c != 0 && strchr(keep, c) != NULL;
        else
            plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || (c == '.' && i > 0);
        if (n + (plain ? 1 : 3) >= dstlen)
            return -1;
        if (plain) {
            dst[n++] = (char)c;
        } else {
            dst[n++] = '%';
            dst[n++] = hex[c >> 4];
            dst[n++] = hex[c & 15];
        }
    }
    dst[n] = '\0';
    return (int)n;
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- life cycle ------------------------------------------------------------- */

/* tier_open, or with fd >= 0 tier_open_claimed. */
static int open_tier(tier_t **out, const char *uri, int fd, char *err, size_t errlen);

int tier_open(tier_t **out, const char *uri, char *err, size_t errlen)
{
    return open_tier(out, uri, -1, err, errlen);
}

int tier_open_claimed(tier_t **out, const char *uri, int fd, char *err, size_t errlen)
{
    if (fd < 0) {
        snprintf(err, errlen, "spill tier '%s': no claim handed over", uri);
        return PINPOOL_EINVAL;
    }
    return open_tier(out, uri, fd, err, errlen);
}

int tier_claim_fd(const tier_t *t)
{
    return t->ops->claim_fd != NULL ? t->ops->claim_fd(t->impl) : -1;
}

static int open_tier(tier_t **out, const char *uri, int fd, char *err, size_t errlen)
{
    const tier_ops_t *ops = NULL;
    const char *colon;
    tier_t *t;
    int rc;

    if (uri == NULL || (colon = strchr(uri, ':')) == NULL) {
        snprintf(err, errlen, "spill tier '%s': expected file:///DIR or mooncake://HOST:PORT",
                 uri != NULL ? uri : "(null)");
        return PINPOOL_EINVAL;
    }
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
        if (strlen(backends[i]->scheme) == (size_t)(colon - uri) &&
            strncmp(uri, backends[i]->scheme, (size_t)(colon - uri)) == 0)
            ops = backends[i];
    if (ops == NULL || (fd >= 0 && ops->open_claimed == NULL)) {
        if (ops == NULL)
            snprintf(err, errlen, "spill tier '%s': unknown scheme '%.*s' (file or mooncake)",
                     uri, (int)(colon - uri), uri);
        else
            snprintf(err, errlen, "spill tier '%s': a %s tier is not handed over", uri,
                     ops->scheme);
        if (fd >= 0)
            close(fd);
        return PINPOOL_EINVAL;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        if (fd >= 0)
            close(fd);
        return -ENOMEM;
    }
    t->ops = ops;
    pthread_mutex_init(&t->lock, NULL);
    err[0] = '\0';
    rc = fd >= 0 ? ops->open_claimed(&t->impl, uri, fd, err, errlen)
                 : ops->open(&t->impl, uri, err, errlen);
    if (rc != 0) {
        if (err[0] == '\0')
            snprintf(err, errlen, "spill tier '%s': %s", uri, pinpool_strerror(rc));
        pthread_mutex_destroy(&t->lock);
        free(t);
        return rc;
    }
    if (ops->list == NULL && (rc = tier_index_open(&t->index, ops, t->impl, err, errlen)) != 0) {
        ops->close(t->impl);
        pthread_mutex_destroy(&t->lock);
        free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void tier_close(tier_t *t)
{
    if (t == NULL)
        return;
    tier_index_close(t->index); /* writes what it has not yet */
    t->ops->close(t->impl);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

const char *tier_scheme(const tier_t *t)
{
    return t->ops->scheme;
}

/* ---- accounting --------------------------------------------------------------- */

enum op { OP_PUT, OP_GET, OP_EXISTS, OP_SIZE, OP_REMOVE };

static void account(tier_t *t, enum op op, const int *rcs, size_t rcstride, size_t n,
                    uint64_t bytes, uint64_t ns)
{
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < n; i++) {
        int rc = *(const int *)((const char *)rcs + i * rcstride);

        if (rc == PINPOOL_ENOKEY)
            t->st.not_found++;
        else if (rc == PINPOOL_EBUSY)
            t->st.busy++;
        else if (rc < 0)
            t->st.errors++;
    }
    switch (op) {
    case OP_PUT:
        t->st.puts += n;
        t->st.put_bytes += bytes;
        t->st.put_ns += ns;
        if (ns > t->st.put_ns_max)
            t->st.put_ns_max = ns;
        break;
    case OP_GET:
        t->st.gets += n;
        t->st.get_bytes += bytes;
        t->st.get_ns += ns;
        if (ns > t->st.get_ns_max)
            t->st.get_ns_max = ns;
        break;
    case OP_EXISTS:
        t->st.exists += n;
        break;
    case OP_SIZE:
        t->st.sizes += n;
        break;
    case OP_REMOVE:
        t->st.removes += n;
        break;
    }
    pthread_mutex_unlock(&t->lock);
}

static int check_key(const void *key, size_t keylen)
{
    if (key == NULL || keylen == 0 || keylen > TIER_KEY_MAX)
        return tier__fail(PINPOOL_EINVAL, "a key is 1 to %d bytes (got %zu)", TIER_KEY_MAX,
                          key == NULL ? (size_t)0 : keylen);
    if (keylen >= strlen(TIER_RESERVED) && memcmp(key, TIER_RESERVED, strlen(TIER_RESERVED)) == 0)
        return tier__fail(PINPOOL_EINVAL, "keys that begin with '%s' are the tier's own",
                          TIER_RESERVED);
    return 0;
}

/* Every call starts with an empty message: a failure without words of its own
 * (PINPOOL_ENOKEY) must not show an earlier call's. */
static int begin_call(const void *key, size_t keylen)
{
    last_err[0] = '\0';
    return check_key(key, keylen);
}

/* ---- single calls --------------------------------------------------------------- */

/* A put through the index, if there is one: recorded before it is stored. */
static int put_one(tier_t *t, const void *key, size_t keylen, const void *buf, uint64_t len,
                   const void *meta, uint32_t metalen)
{
    int rc = tier_index_put(t->index, key, keylen, buf, len, meta, metalen);

    if (rc == 0)
        rc = t->ops->put(t->impl, key, keylen, buf, len, meta, metalen);
    if (rc != 0)
        tier_index_put_failed(t->index, key, keylen);
    return rc;
}

int tier_put(tier_t *t, const void *key, size_t keylen, const void *buf, uint64_t len)
{
    return tier_put_meta(t, key, keylen, buf, len, NULL, 0);
}

int tier_put_meta(tier_t *t, const void *key, size_t keylen, const void *buf, uint64_t len,
                  const void *meta, uint32_t metalen)
{
    uint64_t t0 = now_ns();
    int rc = begin_call(key, keylen);

    if (rc == 0 && (buf == NULL || len == 0))
        rc = tier__fail(PINPOOL_EINVAL, "put of %" PRIu64 " bytes from %p: an object has at "
                        "least one byte", len, buf);
    if (rc == 0 && (metalen > TIER_META_MAX || (metalen > 0 && meta == NULL)))
        rc = tier__fail(PINPOOL_EINVAL, "metadata of %u bytes: at most %d", metalen,
                        TIER_META_MAX);
    if (rc == 0)
        rc = put_one(t, key, keylen, buf, len, meta, metalen);
    account(t, OP_PUT, &rc, 0, 1, rc == 0 ? len : 0, now_ns() - t0);
    return rc;
}

int tier_list(tier_t *t, tier_list_fn fn, void *arg)
{
    last_err[0] = '\0';
    if (t->index != NULL)
        return tier_index_list(t->index, fn, arg);
    return t->ops->list(t->impl, fn, arg);
}

int tier_get(tier_t *t, const void *key, size_t keylen, void *buf, uint64_t len, uint64_t *got)
{
    uint64_t t0 = now_ns(), g = 0;
    int rc = begin_call(key, keylen);

    if (rc == 0 && (buf == NULL || len == 0))
        rc = tier__fail(PINPOOL_EINVAL, "get into a NULL or empty buffer");
    if (rc == 0)
        rc = t->ops->get(t->impl, key, keylen, buf, len, &g);
    if (rc == 0)
        rc = tier_index_check(t->index, key, keylen, buf, g);
    if (got != NULL)
        *got = g;
    account(t, OP_GET, &rc, 0, 1, rc == 0 ? g : 0, now_ns() - t0);
    return rc;
}

/* A call that names a key and moves no bytes (exists, remove). */
static int key_call(tier_t *t, enum op op, int (*fn)(void *impl, const void *key, size_t keylen),
                    const void *key, size_t keylen)
{
    int rc = begin_call(key, keylen);

    if (rc == 0)
        rc = fn(t->impl, key, keylen);
    account(t, op, &rc, 0, 1, 0, 0);
    return rc;
}

int tier_exists(tier_t *t, const void *key, size_t keylen)
{
    return key_call(t, OP_EXISTS, t->ops->exists, key, keylen);
}

int tier_size(tier_t *t, const void *key, size_t keylen, uint64_t *size)
{
    uint64_t s = 0;
    int rc = begin_call(key, keylen);

    if (rc == 0)
        rc = t->ops->size(t->impl, key, keylen, &s);
    if (size != NULL)
        *size = s;
    account(t, OP_SIZE, &rc, 0, 1, 0, 0);
    return rc;
}

int tier_remove(tier_t *t, const void *key, size_t keylen)
{
    int rc = key_call(t, OP_REMOVE, t->ops->remove, key, keylen);

    if (rc != PINPOOL_EINVAL)
        tier_index_removed(t->index, key, keylen, rc);
    return rc;
}

/* ---- batches -------------------------------------------------------------------- */

/* Validate every item; a bad one gets its rc and is left out (rc stays set).
 * Returns how many are good. */
static size_t check_items(tier_item_t *items, size_t n, bool need_buf)
{
    size_t good = 0;

    for (size_t i = 0; i < n; i++) {
        items[i].got = 0;
        items[i].rc = check_key(items[i].key, items[i].keylen);
        if (items[i].rc == 0 && need_buf && (items[i].buf == NULL || items[i].len == 0))
            items[i].rc = tier__fail(PINPOOL_EINVAL, "batch item %zu: NULL buffer or 0 bytes", i);
        if (items[i].rc == 0 && (items[i].metalen > TIER_META_MAX ||
                                 (items[i].metalen > 0 && items[i].meta == NULL)))
            items[i].rc = tier__fail(PINPOOL_EINVAL, "batch item %zu: metadata of %u bytes "
                                     "(at most %d)", i, items[i].metalen, TIER_META_MAX);
        if (items[i].rc == 0)
            good++;
    }
    return good;
}

static int first_error(const tier_item_t *items, size_t n, bool exists)
{
    for (size_t i = 0; i < n; i++)
        if (items[i].rc < 0 || (!exists && items[i].rc != 0))
            return items[i].rc;
    return 0;
}

/*
 * Run op over the good items: the backend's batch call on a compacted copy,
 * or one call per item.  Bad items keep their rc.
 */
typedef int (*batch_fn)(void *impl, tier_item_t *items, size_t n);

static int run_batch(tier_t *t, enum op op, batch_fn fn, tier_item_t *items, size_t n)
{
    uint64_t t0 = now_ns(), bytes = 0;
    size_t good = (last_err[0] = '\0', check_items(items, n, op == OP_PUT || op == OP_GET));
    tier_item_t *sub = NULL;
    size_t *where = NULL;

    if (op == OP_PUT && t->index != NULL) { /* recorded before stored */
        tier_index_put_many(t->index, items, n);
        good = 0;
        for (size_t i = 0; i < n; i++)
            good += items[i].rc == 0;
    }
    if (good > 0 && fn != NULL) {
        sub = malloc(good * sizeof(*sub));
        where = malloc(good * sizeof(*where));
        if (sub == NULL || where == NULL) {
            free(sub);
            free(where);
            return -ENOMEM;
        }
        for (size_t i = 0, j = 0; i < n; i++)
            if (items[i].rc == 0) {
                where[j] = i;
                sub[j++] = items[i];
            }
        fn(t->impl, sub, good);
        for (size_t j = 0; j < good; j++) {
            items[where[j]].rc = sub[j].rc;
            items[where[j]].got = sub[j].got;
        }
        free(sub);
        free(where);
    } else if (good > 0) {
        for (size_t i = 0; i < n; i++) {
            tier_item_t *it = &items[i];

            if (it->rc != 0)
                continue;
            switch (op) {
            case OP_PUT:
                it->rc = t->ops->put(t->impl, it->key, it->keylen, it->buf, it->len, it->meta,
                                     it->metalen);
                break;
            case OP_GET:
                it->rc = t->ops->get(t->impl, it->key, it->keylen, it->buf, it->len, &it->got);
                break;
            case OP_EXISTS:
                it->rc = t->ops->exists(t->impl, it->key, it->keylen);
                break;
            case OP_REMOVE:
                it->rc = t->ops->remove(t->impl, it->key, it->keylen);
                break;
            case OP_SIZE:
                break;
            }
        }
    }
    for (size_t i = 0; i < n && t->index != NULL; i++) {
        tier_item_t *it = &items[i];

        if (op == OP_PUT && it->rc != 0)
            tier_index_put_failed(t->index, it->key, it->keylen);
        else if (op == OP_GET && it->rc == 0)
            it->rc = tier_index_check(t->index, it->key, it->keylen, it->buf, it->got);
        else if (op == OP_REMOVE && it->rc != PINPOOL_EINVAL)
            tier_index_removed(t->index, it->key, it->keylen, it->rc);
    }
    for (size_t i = 0; i < n; i++)
        if (items[i].rc == 0)
            bytes += op == OP_PUT ? items[i].len : op == OP_GET ? items[i].got : 0;
    account(t, op, &items[0].rc, sizeof(tier_item_t), n, bytes, now_ns() - t0);
    return first_error(items, n, op == OP_EXISTS);
}

int tier_put_batch(tier_t *t, tier_item_t *items, size_t n)
{
    return n == 0 ? 0 : run_batch(t, OP_PUT, t->ops->put_batch, items, n);
}

int tier_get_batch(tier_t *t, tier_item_t *items, size_t n)
{
    return n == 0 ? 0 : run_batch(t, OP_GET, t->ops->get_batch, items, n);
}

int tier_exists_batch(tier_t *t, tier_item_t *items, size_t n)
{
    return n == 0 ? 0 : run_batch(t, OP_EXISTS, t->ops->exists_batch, items, n);
}

int tier_remove_batch(tier_t *t, tier_item_t *items, size_t n)
{
    return n == 0 ? 0 : run_batch(t, OP_REMOVE, t->ops->remove_batch, items, n);
}

/* ---- statistics ------------------------------------------------------------------- */

void tier_get_stats(tier_t *t, tier_stats_t *out)
{
    pthread_mutex_lock(&t->lock);
    *out = t->st;
    pthread_mutex_unlock(&t->lock);
    out->objects = t->index != NULL ? tier_index_count(t->index)
                   : t->ops->count != NULL ? t->ops->count(t->impl) : -1;
}

void tier_report_stats(tier_t *t, void (*add)(const char *name, const char *value, void *arg),
                       void *arg)
{
    tier_stats_t st;
    char v[64];

    tier_get_stats(t, &st);
    add("scheme", t->ops->scheme, arg);
#define U64(name, val)                                  \
    do {                                                \
        snprintf(v, sizeof(v), "%" PRIu64, (uint64_t)(val)); \
        add(name, v, arg);                              \
    } while (0)
#define DBL(name, val)                        \
    do {                                      \
        snprintf(v, sizeof(v), "%.3f", (double)(val)); \
        add(name, v, arg);                    \
    } while (0)
    U64("puts", st.puts);
    U64("gets", st.gets);
    U64("exists", st.exists);
    U64("sizes", st.sizes);
    U64("removes", st.removes);
    U64("put_bytes", st.put_bytes);
    U64("get_bytes", st.get_bytes);
    U64("errors", st.errors);
    U64("not_found", st.not_found);
    U64("busy", st.busy);
    snprintf(v, sizeof(v), "%" PRId64, st.objects);
    add("objects", v, arg);
    DBL("put_gbps", st.put_ns ? (double)st.put_bytes / (double)st.put_ns : 0.0);
    DBL("get_gbps", st.get_ns ? (double)st.get_bytes / (double)st.get_ns : 0.0);
    DBL("put_avg_us", st.puts ? (double)st.put_ns / 1e3 / (double)st.puts : 0.0);
    DBL("get_avg_us", st.gets ? (double)st.get_ns / 1e3 / (double)st.gets : 0.0);
    DBL("put_max_us", (double)st.put_ns_max / 1e3);
    DBL("get_max_us", (double)st.get_ns_max / 1e3);
#undef U64
#undef DBL
    if (t->ops->describe != NULL)
        t->ops->describe(t->impl, add, arg);
}
