/*
 * churn.c - see churn.h.
 */
#include "churn.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pinpool.h"
#include "util.h"

#define CHURN_KEYS 8
#define SLICE_BYTES (64u << 10)
#define VALUE_MAX (8u << 10)

__attribute__((format(printf, 3, 4))) static void fail(churn_result_t *r, bool lost,
                                                       const char *fmt, ...)
{
    va_list ap;

    if (lost)
        r->lost++;
    else
        r->unexpected++;
    if (r->first[0] != '\0')
        return;
    va_start(ap, fmt);
    vsnprintf(r->first, sizeof(r->first), fmt, ap);
    va_end(ap);
}

static uint64_t value_len(unsigned seed)
{
    return 1 + (seed * 2654435761u) % VALUE_MAX;
}

void churn_put_get(const char *socket, int n, churn_result_t *out)
{
    pinpool_ctx_t *ctx = pinpool_connect(socket);
    char *buf = malloc(VALUE_MAX), *back = malloc(VALUE_MAX);

    memset(out, 0, sizeof(*out));
    if (pinpool_err(ctx) != 0 || buf == NULL || back == NULL) {
        fail(out, false, "connect: %s", pinpool_errmsg(ctx));
        goto done;
    }
    for (int i = 0; i < n; i++) {
        uint64_t len = value_len((unsigned)i), got = 0;
        int rc;

        test_fill(buf, len, (unsigned)i);
        rc = pinpool_put(ctx, "loop", buf, len, 0);
        out->ops++;
        if (rc != 0) {
            fail(out, false, "put %d: %s: %s", i, pinpool_err_name(rc), pinpool_errmsg(ctx));
            continue;
        }
        rc = pinpool_get(ctx, "loop", back, VALUE_MAX, &got);
        out->ops++;
        if (rc != 0 || got != len || !test_same(back, len, (unsigned)i))
            fail(out, true, "get %d after its put: %s (%" PRIu64 " bytes of %" PRIu64 "): %s", i,
                 pinpool_err_name(rc), got, len, rc != 0 ? pinpool_errmsg(ctx) : "other bytes");
    }
done:
    free(buf);
    free(back);
    pinpool_close(ctx);
}

enum kstate { ABSENT, PRESENT, MAYBE }; /* MAYBE: a short TTL may have passed */

struct key {
    enum kstate st;
    unsigned seed;
    uint64_t len;
    bool ttl; /* the last object under it had a TTL (it may expire mid-spill) */
};

struct client {
    const char *socket;
    int id;
    double secs;
    churn_result_t r;
};

/* Does an answer (rc, bytes) fit what the key holds? */
static void check_read(churn_result_t *r, const char *what, const char *key, const struct key *k,
                       int rc, const void *bytes, uint64_t got, const char *errmsg)
{
    if (k->st == ABSENT) {
        if (rc != PINPOOL_ENOKEY)
            fail(r, false, "%s %s (absent): %s", what, key, pinpool_err_name(rc));
        return;
    }
    if (rc == PINPOOL_ENOKEY && k->st == MAYBE)
        return;
    if (rc != 0) {
        fail(r, rc == PINPOOL_ENOKEY, "%s %s: %s: %s", what, key, pinpool_err_name(rc), errmsg);
        return;
    }
    if (got < k->len || !test_same(bytes, k->len, k->seed))
        fail(r, true, "%s %s: other bytes (%" PRIu64 " of %" PRIu64 ")", what, key, got, k->len);
}

static void *mixed_client(void *arg)
{
    struct client *c = arg;
    pinpool_ctx_t *ctx = pinpool_connect(c->socket);
    struct key keys[CHURN_KEYS] = {{0}};
    char *buf = malloc(SLICE_BYTES), name[32];
    unsigned seed = (unsigned)c->id * 1000003u, rnd = (unsigned)c->id * 7919u + 1;
    double t0 = test_now_s();
    churn_result_t *r = &c->r;

    if (pinpool_err(ctx) != 0 || buf == NULL) {
        fail(r, false, "connect: %s", pinpool_errmsg(ctx));
        goto done;
    }
    while (test_now_s() - t0 < c->secs) {
        rnd = rnd * 1103515245u + 12345u;
        unsigned j = (rnd >> 8) % CHURN_KEYS, op = (rnd >> 16) % 6;
        struct key *k = &keys[j];
        pinpool_slice_t s;
        uint64_t got = 0;
        int rc;

        snprintf(name, sizeof(name), "c%d-k%u", c->id, j);
        r->ops++;
        switch (op) {
        case 0: /* put */
        case 5: /* put with a TTL of 1..20 ms */
            seed++;
            k->len = value_len(seed);
            test_fill(buf, k->len, seed);
            rc = pinpool_put(ctx, name, buf, k->len, op == 5 ? 1 + rnd % 20 : 0);
            if (rc != 0) {
                fail(r, false, "put %s: %s: %s", name, pinpool_err_name(rc), pinpool_errmsg(ctx));
                k->st = MAYBE;
            } else {
                k->st = op == 5 ? MAYBE : PRESENT;
                k->seed = seed;
                k->ttl = op == 5;
            }
            break;
        case 1: /* get */
            rc = pinpool_get(ctx, name, buf, SLICE_BYTES, &got);
            check_read(r, "get", name, k, rc, buf, got, pinpool_errmsg(ctx));
            break;
        case 2: /* release a fresh slice under the key */
            rc = pinpool_alloc(ctx, SLICE_BYTES, NULL, &s);
            if (rc != 0) {
                fail(r, false, "alloc: %s: %s", pinpool_err_name(rc), pinpool_errmsg(ctx));
                break;
            }
            seed++;
            test_fill(s.ptr, SLICE_BYTES, seed);
            rc = pinpool_release(ctx, s.id, name, 0);
            if (rc == 0) {
                if (k->st == PRESENT)
                    fail(r, false, "release %s over a present object: OK", name);
                k->st = PRESENT;
                k->seed = seed;
                k->len = SLICE_BYTES;
                k->ttl = false;
            } else {
                /* EBUSY: the last object expired while a spill wrote it; retry */
                if (!(rc == PINPOOL_EBUSY && k->ttl) && (rc != PINPOOL_EEXIST || k->st == ABSENT))
                    fail(r, false, "release %s: %s: %s", name, pinpool_err_name(rc),
                         pinpool_errmsg(ctx));
                pinpool_free(ctx, s.id, NULL);
            }
            break;
        case 3: /* acquire, check, free */
            rc = pinpool_acquire(ctx, name, 0, &s);
            check_read(r, "acquire", name, k, rc, rc == 0 ? s.ptr : NULL, rc == 0 ? s.size : 0,
                       pinpool_errmsg(ctx));
            if (rc == 0)
                pinpool_free(ctx, s.id, NULL);
            k->st = ABSENT;
            break;
        case 4: /* remove */
            rc = pinpool_remove(ctx, name);
            if (!(rc == 0 && k->st != ABSENT) && !(rc == PINPOOL_ENOKEY && k->st != PRESENT))
                fail(r, rc == PINPOOL_ENOKEY, "remove %s: %s: %s", name, pinpool_err_name(rc),
                     pinpool_errmsg(ctx));
            k->st = ABSENT;
            break;
        }
    }
    for (unsigned j = 0; j < CHURN_KEYS; j++) { /* leave nothing behind */
        snprintf(name, sizeof(name), "c%d-k%u", c->id, j);
        pinpool_remove(ctx, name);
    }
done:
    free(buf);
    pinpool_close(ctx);
    return NULL;
}

void churn_mixed(const char *socket, int threads, double secs, churn_result_t *out)
{
    struct client *c = calloc((size_t)threads, sizeof(*c));

    memset(out, 0, sizeof(*out));
    for (int i = 0; i < threads; i++) {
        c[i].socket = socket;
        c[i].id = i;
        c[i].secs = secs;
    }
    test_threads(threads, mixed_client, c, sizeof(*c));
    for (int i = 0; i < threads; i++) {
        out->ops += c[i].r.ops;
        out->lost += c[i].r.lost;
        out->unexpected += c[i].r.unexpected;
        if (out->first[0] == '\0')
            memcpy(out->first, c[i].r.first, sizeof(out->first));
    }
    free(c);
}
