/*
 * tier_bench.c - put/get throughput through the spill tier.
 *
 *   tier_bench URI SIZE COUNT   e.g. tier_bench mooncake://127.0.0.1:50051 16MiB 16
 *
 * Puts COUNT objects of SIZE bytes one by one, gets them back (checking the
 * bytes), removes them; then the same with one batch call each way.  Prints
 * one line per mode: "tier MODE SIZE COUNT put_GBps get_GBps".
 * bench/tier_bench.py starts a Mooncake on loopback and compares with the
 * wheel's own Python client.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"
#include "pinpool.h"
#include "pool.h"
#include "tier.h"

static int die(const char *what, int rc)
{
    fprintf(stderr, "tier_bench: %s: %s: %s\n", what, pinpool_err_name(rc), tier_errmsg());
    return 1;
}

/* Put (or get) count objects of size bytes, object i at buf + i * size under
 * keys[i]: one call each, or one batch call (items is count long). */
static int transfer(tier_t *t, bool put, bool batch, char **keys, tier_item_t *items,
                    unsigned char *buf, uint64_t size, int count)
{
    uint64_t got;
    int rc = 0;

    for (int i = 0; i < count && rc == 0; i++) {
        items[i] = (tier_item_t){.key = keys[i], .keylen = strlen(keys[i]),
                                 .buf = buf + (uint64_t)i * size, .len = size};
        if (!batch)
            rc = put ? tier_put(t, keys[i], items[i].keylen, items[i].buf, size)
                     : tier_get(t, keys[i], items[i].keylen, items[i].buf, size, &got);
    }
    if (batch && rc == 0)
        rc = put ? tier_put_batch(t, items, (size_t)count) : tier_get_batch(t, items, (size_t)count);
    return rc;
}

int main(int argc, char **argv)
{
    tier_t *t;
    char err[512], **keys;
    uint64_t size, got;
    int count, rc;
    unsigned char *in, *out;
    tier_item_t *items;

    if (argc != 4 || pool_parse_size(argv[2], &size) != 0 || (count = atoi(argv[3])) <= 0) {
        fprintf(stderr, "usage: tier_bench URI SIZE COUNT\n");
        return 2;
    }
    rc = tier_open(&t, argv[1], err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "tier_bench: %s\n", err);
        return 1;
    }
    in = malloc(size * (uint64_t)count);
    out = malloc(size * (uint64_t)count);
    keys = calloc((size_t)count, sizeof(*keys));
    items = calloc((size_t)count, sizeof(*items));
    if (in == NULL || out == NULL || keys == NULL || items == NULL)
        return die("malloc", -12);
    for (uint64_t i = 0; i < size * (uint64_t)count; i++)
        in[i] = (unsigned char)(i * 131 + (i >> 12));
    for (int i = 0; i < count; i++) {
        keys[i] = malloc(64);
        snprintf(keys[i], 64, "bench-%d-%" PRIu64, i, size);
    }
    /* warm-up: one put/get/remove (adapter, buffer growth) */
    if ((rc = tier_put(t, "warm", 4, in, size)) != 0 ||
        (rc = tier_get(t, "warm", 4, out, size, &got)) != 0)
        return die("warm-up", rc);
    usleep(1100000); /* Mooncake's read lease */
    tier_remove(t, "warm", 4);

    for (int mode = 0; mode < 2; mode++) {
        double t0, tput, tget;

        t0 = now_s();
        if ((rc = transfer(t, true, mode == 1, keys, items, in, size, count)) != 0)
            return die(mode == 0 ? "put" : "put_batch", rc);
        tput = now_s() - t0;
        memset(out, 0, size * (uint64_t)count);
        t0 = now_s();
        if ((rc = transfer(t, false, mode == 1, keys, items, out, size, count)) != 0)
            return die(mode == 0 ? "get" : "get_batch", rc);
        tget = now_s() - t0;
        if (memcmp(in, out, size * (uint64_t)count) != 0)
            return die("verify", -5);
        printf("tier %s %s %" PRIu64 " %d %.3f %.3f\n", tier_scheme(t),
               mode == 0 ? "single" : "batch", size, count,
               (double)size * count / tput / 1e9, (double)size * count / tget / 1e9);
        fflush(stdout);
        usleep(1100000); /* let the read leases end */
        for (int i = 0; i < count; i++)
            items[i] = (tier_item_t){.key = keys[i], .keylen = strlen(keys[i])};
        tier_remove_batch(t, items, (size_t)count);
    }
    for (int i = 0; i < count; i++)
        free(keys[i]);
    free(keys);
    free(items);
    free(in);
    free(out);
    tier_close(t);
    return 0;
}
