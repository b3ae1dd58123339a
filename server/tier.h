/*
 * tier.h - the spill tier: where the daemon puts slices it evicts, as objects
 * under keys.  The operations are modelled on Mooncake Store's object API
 * (put from a buffer, get into a buffer, exists, remove, size, and batch forms).
 *
 * Owns: one open tier (a backend chosen by URI scheme) and its statistics.
 * Never: touches the pool, gRPC or libev; it moves bytes between caller
 * buffers and the backend and nothing else.
 * Locking: every call may come from any thread.  The generic layer (tier.c)
 * keeps the statistics under its own mutex, the index (if any) under its own
 * (held across the index's writes; tier_index.c); a backend serialises what it must
 * (the Mooncake adapter has one command in flight at a time).  Calls may block
 * (disk I/O, the network): never call them while holding srv->lock.
 *
 * URIs
 *   file:///ABS/DIR              one file per object in DIR (made if missing);
 *                                see tier_file.c.  "file:" + an absolute path
 *                                without "//" is accepted too.
 *   mooncake://HOST:PORT?k=v&... a real Mooncake Store whose master listens on
 *                                HOST:PORT; parameters and the two ways of
 *                                reaching it (adapter process or dlopen of
 *                                libmooncake_store.so) are in tier_mooncake.c.
 *
 * Keys are any byte string of 1..TIER_KEY_MAX bytes (NUL and '/' included)
 * except those that begin with TIER_RESERVED (".pinpool."), which the tier
 * keeps for itself (the index, below); each backend encodes them (file names,
 * Mooncake key strings) so that distinct keys never collide and no key can
 * name a path outside the tier.  What a key means is the caller's: the daemon
 * names a copy "UID/GENERATION/KEY" (server/spill.c).
 *
 * Every object carries up to TIER_META_MAX bytes of the caller's metadata
 * (put_meta; the daemon stores the object's expiry there) and a checksum of its
 * bytes, checked on every get: a copy whose bytes or header do not match
 * fails with -EBADMSG, and will never read back.
 *
 * Listing (tier_list) walks every object with its size and metadata, for the
 * daemon's reconcile at start.  A backend that can list its objects does so
 * (file: the directory, every file's header checked; damaged files are removed
 * and reported).  One that cannot (Mooncake: its client has no listing) gets
 * an index kept by the tier itself (tier_index.c): objects under the reserved
 * keys ".pinpool.index.NN", written before each put so that nothing stored is
 * ever unknown to it.
 *
 * The contract, identical for every backend:
 *   put     creates the object (1 byte or more) or replaces it whole.  A reader sees the old
 *           bytes or the new ones, never a mix.  When put fails, the old object
 *           (if any) is still there, unchanged.  Mooncake's own put is a no-op
 *           on an existing key; the Mooncake backend replaces with upsert (or
 *           remove + put through the C API), so callers never need to remove
 *           first.
 *   get     copies the whole object into buf when it fits (len >= its size)
 *           and sets *got to its size; -ENOBUFS with *got = its size when it
 *           does not (buf unchanged or partly written).  PINPOOL_ENOKEY if absent.
 *   exists  1 or 0.
 *   size    0 and *size, or PINPOOL_ENOKEY.
 *   list    calls fn for every object (see tier_entry_t), damaged ones
 *           included (the tier has removed those); fn returns 0 to go on.
 *   remove  0, or PINPOOL_ENOKEY if absent, or PINPOOL_EBUSY while a reader
 *           holds a lease on it (Mooncake grants one for ~10 s after every
 *           get/exists); retry later, the object is unchanged.
 * Errors are negative: PINPOOL_E* (INVAL for a bad key or URI, NOKEY, BUSY,
 * TIER for a backend failure with the backend's words in tier_errmsg) or
 * -errno (-ENOBUFS, -ETIMEDOUT when the backend did not answer in time,
 * -ENOSPC, -EIO, -EBADMSG for a damaged copy...).  A timeout never leaves a half-done call behind: the
 * backend is reset and the next call starts afresh.
 *
 * Batch forms take an array of items and fill each item's rc (and got); they
 * return 0 when every item succeeded, else the first item error.  exists_batch
 * sets rc to 1/0/-error per item and returns 0 unless one failed.
 */
#ifndef PINPOOL_TIER_H
#define PINPOOL_TIER_H

#include <stddef.h>
#include <stdint.h>

#define TIER_KEY_MAX 640
#define TIER_META_MAX 64
#define TIER_ERRMSG_LEN 256
#define TIER_RESERVED ".pinpool."

typedef struct tier tier_t;

typedef struct tier_item {
    const void *key;
    size_t keylen;
    void *buf;    /* put: the bytes; get: where they go */
    uint64_t len; /* put: object size; get: room in buf */
    const void *meta; /* put: the caller's metadata (may be NULL) */
    uint32_t metalen; /* put: its length, 0..TIER_META_MAX */
    uint64_t got; /* get, size: the object's size */
    int rc;       /* per item: 0 / -error (exists: 1 / 0 / -error) */
} tier_item_t;

/* One object as tier_list reports it. */
typedef struct tier_entry {
    const void *key; /* NULL: a copy too damaged to name its key */
    size_t keylen;
    uint64_t size;
    const void *meta;
    uint32_t metalen;
    const char *where;  /* for a person: the file, or the Mooncake key */
    const char *damage; /* NULL: readable; else why not (the tier removed it) */
} tier_entry_t;

typedef int (*tier_list_fn)(const tier_entry_t *e, void *arg);

/*
 * A backend: what tier.c calls after validating arguments.  Batch functions
 * may be NULL (tier.c loops over the single ones).  Each returns as above.
 */
typedef struct tier_ops {
    const char *scheme; /* "file", "mooncake" */
    /* Parse uri, connect, set *impl.  On failure a message in err, nothing left open. */
    int (*open)(void **impl, const char *uri, char *err, size_t errlen);
    void (*close)(void *impl);
    int (*put)(void *impl, const void *key, size_t keylen, const void *buf, uint64_t len,
               const void *meta, uint32_t metalen);
    int (*get)(void *impl, const void *key, size_t keylen, void *buf, uint64_t len, uint64_t *got);
    int (*exists)(void *impl, const void *key, size_t keylen);
    int (*size)(void *impl, const void *key, size_t keylen, uint64_t *size);
    int (*remove)(void *impl, const void *key, size_t keylen);
    int (*put_batch)(void *impl, tier_item_t *items, size_t n);
    int (*get_batch)(void *impl, tier_item_t *items, size_t n);
    int (*exists_batch)(void *impl, tier_item_t *items, size_t n);
    int (*remove_batch)(void *impl, tier_item_t *items, size_t n);
    /* Every object (see tier_entry_t); NULL: the tier keeps an index. */
    int (*list)(void *impl, tier_list_fn fn, void *arg);
    /* Objects the backend holds for this tier (-1: unknown); may be NULL. */
    int64_t (*count)(void *impl);
    /* Extra "name value" facts for the stats callback (path, mode); may be NULL. */
    void (*describe)(void *impl, void (*add)(const char *name, const char *value, void *arg),
                     void *arg);
    /* A takeover (both may be NULL: the backend is not handed over): claim_fd
     * is the descriptor that holds the backend's claim on its store (file:
     * DIR/.lock, flock'ed; still impl's), open_claimed opens uri as open does
     * but under the claim fd that another process handed over (taken: closed
     * on failure too), instead of taking one of its own. */
    int (*claim_fd)(void *impl);
    int (*open_claimed)(void **impl, const char *uri, int fd, char *err, size_t errlen);
} tier_ops_t;

extern const tier_ops_t tier_file_ops;
extern const tier_ops_t tier_mooncake_ops;

/*
 * Open the tier that uri names.  Returns 0 and *out, or an error with a
 * message in err (PINPOOL_EINVAL for an unknown scheme or a bad parameter,
 * PINPOOL_ETIER / -errno when the backend cannot be reached).
 */
int tier_open(tier_t **out, const char *uri, char *err, size_t errlen);
/* Close the backend (stopping any process it started) and free t.  NULL ok. */
void tier_close(tier_t *t);
/* A takeover (tier_ops_t's claim_fd, open_claimed): the claim to hand over
 * (-1: this backend cannot be), and tier_open under a claim handed over
 * (fd taken; PINPOOL_EINVAL with err for a backend that takes none). */
int tier_claim_fd(const tier_t *t);
int tier_open_claimed(tier_t **out, const char *uri, int fd, char *err, size_t errlen);

const char *tier_scheme(const tier_t *t);
/* The explanation of the calling thread's last failed tier call ("" if none). */
const char *tier_errmsg(void);

int tier_put(tier_t *t, const void *key, size_t keylen, const void *buf, uint64_t len);
/* put with up to TIER_META_MAX bytes of metadata, which tier_list returns. */
int tier_put_meta(tier_t *t, const void *key, size_t keylen, const void *buf, uint64_t len,
                  const void *meta, uint32_t metalen);
/* Every object in the tier, to fn (see tier_entry_t); stops at fn's first
 * non-zero return and returns it; else 0 or the tier's error. */
int tier_list(tier_t *t, tier_list_fn fn, void *arg);
int tier_get(tier_t *t, const void *key, size_t keylen, void *buf, uint64_t len, uint64_t *got);
int tier_exists(tier_t *t, const void *key, size_t keylen);
int tier_size(tier_t *t, const void *key, size_t keylen, uint64_t *size);
int tier_remove(tier_t *t, const void *key, size_t keylen);

int tier_put_batch(tier_t *t, tier_item_t *items, size_t n);
int tier_get_batch(tier_t *t, tier_item_t *items, size_t n);
int tier_exists_batch(tier_t *t, tier_item_t *items, size_t n);
int tier_remove_batch(tier_t *t, tier_item_t *items, size_t n);

/* Counters since open. */
typedef struct tier_stats {
    uint64_t puts, gets, exists, removes, sizes; /* calls (one per batch item) */
    uint64_t put_bytes, get_bytes;               /* bytes written / read back */
    uint64_t errors;                             /* items that failed (NOKEY/BUSY excluded) */
    uint64_t not_found, busy;                    /* NOKEY, BUSY results */
    uint64_t put_ns, get_ns;                     /* wall time in put / get calls */
    uint64_t put_ns_max, get_ns_max;             /* slowest single call (a batch is one) */
    int64_t objects;                             /* in the tier, -1 if the backend cannot say */
} tier_stats_t;

void tier_get_stats(tier_t *t, tier_stats_t *out);

/*
 * The statistics as named values (memcached's ADD_STAT): add is called once
 * per counter ("puts", "put_bytes", "put_gbps", "put_avg_us", ...) and once per
 * fact the backend describes ("scheme", "path", "mode"...).  Only server/ turns
 * them into protobuf or text.
 */
void tier_report_stats(tier_t *t, void (*add)(const char *name, const char *value, void *arg),
                       void *arg);

/* Helpers shared by the backends (tier.c). */
/* The checksum of len bytes: the low 32 bits of XXH3-64 (libxxhash), for
 * torn or damaged data, not against an attacker; it runs at memory speed
 * (4.9-7.0 GB/s here, where zlib's CRC-32 ran at 1.3-2.0 GB/s), so checking
 * every spill and restore costs little next to the tier's own I/O. */
uint32_t tier__checksum(const void *buf, uint64_t len);
/* Set the calling thread's tier message (what tier_errmsg returns); returns rc. */
int tier__fail(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "%XX" escapes for every byte outside [A-Za-z0-9_.-] (and a leading '.');
 * returns the length written (dst needs 3 * keylen + 1), or -1 if dstlen is short. */
int tier__escape_key(const void *key, size_t keylen, char *dst, size_t dstlen, const char *keep);

#endif /* PINPOOL_TIER_H */
