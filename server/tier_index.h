/*
 * tier_index.h - the index that tier.c keeps for a backend that cannot list
 * its objects (Mooncake's client has no listing): see tier_index.c.  Used by
 * tier.c only.  Every function takes a NULL index as "no index" and then does
 * nothing (returns 0).
 */
#ifndef PINPOOL_TIER_INDEX_H
#define PINPOOL_TIER_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "tier.h"

typedef struct tier_index tier_index_t;

/* Read the index from the backend (ops, impl).  0, or an error with err. */
int tier_index_open(tier_index_t **out, const tier_ops_t *ops, void *impl, char *err,
                    size_t errlen);
/* Write what is not written yet, and free x. */
void tier_index_close(tier_index_t *x);
/* Before a put of key: record it (size, CRC, meta) and write its shard.  An
 * error (the shard could not be written) means: do not put. */
int tier_index_put(tier_index_t *x, const void *key, size_t keylen, const void *buf,
                   uint64_t len, const void *meta, uint32_t metalen);
/* tier_index_put for every item whose rc is 0, each shard written once; an
 * item whose shard could not be written gets the error in rc. */
void tier_index_put_many(tier_index_t *x, tier_item_t *items, size_t n);
/* The put of key failed: forget it (written with the shard's next change). */
void tier_index_put_failed(tier_index_t *x, const void *key, size_t keylen);
/* The remove of key returned rc: gone (0, PINPOOL_ENOKEY) is forgotten;
 * still there (any error) is marked dead, at once, so that a restart
 * removes it instead of listing it. */
void tier_index_removed(tier_index_t *x, const void *key, size_t keylen, int rc);
/* A get of key read got bytes into buf: 0, or -EBADMSG when they are not
 * the bytes that were put. */
int tier_index_check(tier_index_t *x, const void *key, size_t keylen, const void *buf,
                     uint64_t got);
/* tier_list over the index: dead entries are removed, entries whose object is
 * gone are dropped (both reported as damage), the rest go to fn. */
int tier_index_list(tier_index_t *x, tier_list_fn fn, void *arg);
/* Objects it knows of (live ones). */
int64_t tier_index_count(tier_index_t *x);

#endif
