/*
 * cluster.c - the cluster namespace (--cluster NAME): the named objects of
 * several daemons ("nodes") shared through one Mooncake Store.
 *
 * Owns: srv->cluster (the cluster's own handle on Mooncake, the node's name,
 * the queue of objects to share, the counters) and the layout under NAME/:
 *   NAME/n/NODE/UID/GEN/KEY   a node's copies: its spill tier's prefix is
 *                             NAME/n/NODE/ (so copies of two nodes never collide)
 *   NAME/r/PRINCIPAL/KEY      the record of PRINCIPAL's object KEY: which copy
 *                             is the current version ("n/NODE/UID/GEN/KEY"), its
 *                             size, expiry (wall clock) and checksum
 * The principal is the owner's user name (getpwuid of the object's uid): a uid
 * is not the same person on two machines, a name is where the nodes share
 * their users (LDAP, or the same /etc/passwd).  A uid without a name is not
 * shared (its objects stay local).  A daemon looks records up under its
 * caller's principal only, so no node hands one user another's object.
 * Rules:
 *   - share: a released or put object is queued (srv_cluster_share); the
 *     maintenance thread writes its copy (the slice stays: the object is
 *     resident and in the tier) and then its record.  Until then it is local.
 *   - find (Acquire, Get): a local object with a copy is served only while the
 *     record names that copy; one whose record names another copy (a newer
 *     version elsewhere) or none (removed elsewhere) is dropped here; then a
 *     record elsewhere is fetched into a new local object (marked in the tier,
 *     so that the same check applies to it later).  A local object not yet
 *     shared is served as it is.
 *   - remove: the record goes, then the copy it names, before Remove answers;
 *     so no node reads a version after a Remove returned.  A node removing its
 *     own copy (Acquire on the node that shared it, expiry, a newer version)
 *     removes the record first when it still names that copy.
 *   - Mooncake has no compare-and-swap: two nodes writing one key's record at
 *     the same moment leave the last writer's (last writer wins).
 * Never: holds srv->lock across a Mooncake call; trusts a record's size beyond
 * what it fetches (size and checksum are checked).
 * Locking: do_* functions run with srv->lock held and drop it around Mooncake
 * calls (the object they work on is SPILLING meanwhile, or not yet in the
 * table); srv_* take no lock or take srv->lock briefly.  The queue is under
 * srv->lock; the counters under cl->lock (a leaf).
 */
#include "srv_int.h"

#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "pinpool.h"

#define REC_MAGIC "PPCLUS1\n"
#define REC_HDR 40
#define REC_MAX (REC_HDR + 2 + 64 + 1 + SRV_TKEY_MAX)
#define REC_CRC 1u /* flags: crc is set */
#define PRINCIPAL_MAX 64
#define QUEUE_MAX 65536

struct share {
    struct share *next;
    uint64_t gen;
    uint32_t uid; /* the object's owner: keys are per uid */
    bool busy; /* the maintenance thread works on it */
    char key[];
};

/* An object this node fetched: the copy it came from (its freshness test). */
struct fetched {
    struct fetched *next;
    uint64_t gen;
    size_t dkeylen;
    char dkey[];
};
#define FETCHED_MAX 1024

typedef struct rec {
    uint64_t size, expires_ms;
    uint32_t crc, flags;
    char dkey[2 + 64 + 1 + SRV_TKEY_MAX + 1]; /* "n/NODE/UID/GEN/KEY" */
    size_t dkeylen;
} rec_t;

struct srv_cluster {
    void *mc; /* tier_mooncake_ops' handle, prefix NAME/, no index */
    char name[64], node[64];
    struct share *queue;
    uint32_t nqueued;
    struct fetched *fetched; /* newest first, FETCHED_MAX at most */
    uint32_t nfetched;
    uint64_t retry_ns;
    pthread_mutex_t lock;
    uint64_t shared, share_failures, fetches, fetched_bytes, fetch_ns, stale, removed;
};

/* ---- names --------------------------------------------------------------------- */

static bool good_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 63)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return false;
    return true;
}

/* uid's principal (its user name) into out; false when it has none. */
static bool principal(uint32_t uid, char out[PRINCIPAL_MAX])
{
    struct passwd pw, *res = NULL;
    char buf[4096];

    if (getpwuid_r((uid_t)uid, &pw, buf, sizeof(buf), &res) != 0 || res == NULL ||
        strlen(pw.pw_name) >= PRINCIPAL_MAX || strchr(pw.pw_name, '/') != NULL ||
        pw.pw_name[0] == '\0')
        return false;
    snprintf(out, PRINCIPAL_MAX, "%s", pw.pw_name);
    return true;
}

static size_t rec_key(char *out, size_t len, const char *who, const char *key)
{
    int n = snprintf(out, len, "r/%s/%s", who, key);

    return n < 0 || (size_t)n >= len ? 0 : (size_t)n;
}

static uint64_t wall_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/* ---- records ---------------------------------------------------------------------- */

static int rec_write(struct srv_cluster *cl, const char *rk, size_t rklen, const rec_t *r)
{
    unsigned char b[REC_MAX];
    uint32_t dl = (uint32_t)r->dkeylen;

    memset(b, 0, REC_HDR);
    memcpy(b, REC_MAGIC, 8);
    memcpy(b + 8, &r->size, 8);
    memcpy(b + 16, &r->expires_ms, 8);
    memcpy(b + 24, &r->crc, 4);
    memcpy(b + 28, &r->flags, 4);
    memcpy(b + 32, &dl, 4);
    memcpy(b + REC_HDR, r->dkey, r->dkeylen);
    return tier_mooncake_ops.put(cl->mc, rk, rklen, b, REC_HDR + r->dkeylen, NULL, 0);
}

/* 0 and *r; PINPOOL_ENOKEY (none, or expired); another error (Mooncake). */
static int rec_read(struct srv_cluster *cl, const char *rk, size_t rklen, rec_t *r)
{
    unsigned char b[REC_MAX];
    uint64_t got = 0;
    uint32_t dl;
    int rc = tier_mooncake_ops.get(cl->mc, rk, rklen, b, sizeof(b), &got);

    if (rc == -ENOBUFS || (rc == 0 && (got < REC_HDR || memcmp(b, REC_MAGIC, 8) != 0)))
        return tier__fail(PINPOOL_ETIER, "the cluster record '%s' is not one pinpool wrote", rk);
    if (rc != 0)
        return rc;
    memcpy(&r->size, b + 8, 8);
    memcpy(&r->expires_ms, b + 16, 8);
    memcpy(&r->crc, b + 24, 4);
    memcpy(&r->flags, b + 28, 4);
    memcpy(&dl, b + 32, 4);
    if (dl == 0 || dl != got - REC_HDR || dl >= sizeof(r->dkey) || r->size == 0)
        return tier__fail(PINPOOL_ETIER, "the cluster record '%s' is damaged", rk);
    memcpy(r->dkey, b + REC_HDR, dl);
    r->dkey[dl] = '\0';
    r->dkeylen = dl;
    if (r->expires_ms != 0 && r->expires_ms != UINT64_MAX && r->expires_ms <= wall_ms())
        return PINPOOL_ENOKEY;
    return 0;
}

/* This node's name for its copy: "n/NODE/" + copy. */
static size_t own_dkey(const struct srv_cluster *cl, const srv_tkey_t *copy, char *out, size_t len)
{
    int n = snprintf(out, len, "n/%s/%.*s", cl->node, (int)copy->len, copy->s);

    return n < 0 || (size_t)n >= len ? 0 : (size_t)n;
}

/* ---- life cycle --------------------------------------------------------------------- */

/* uri's parameters without those named in drop (NULL-terminated), into out. */
static void filter_params(const char *uri, const char *const drop[], char *out, size_t len)
{
    const char *q = strchr(uri, '?');
    size_t n;

    n = (size_t)snprintf(out, len, "%.*s", (int)(q != NULL ? (size_t)(q - uri) : strlen(uri)), uri);
    char sep = '?';
    while (q != NULL && n < len) {
        const char *kv = q + 1, *end = strchr(kv, '&');
        size_t kvlen = end != NULL ? (size_t)(end - kv) : strlen(kv);
        bool keep = kvlen > 0;

        for (int i = 0; keep && drop[i] != NULL; i++) {
            size_t dl = strlen(drop[i]);
            if (kvlen > dl && strncmp(kv, drop[i], dl) == 0 && kv[dl] == '=')
                keep = false;
        }
        if (keep) {
            n += (size_t)snprintf(out + n, len - n, "%c%.*s", sep, (int)kvlen, kv);
            sep = '&';
        }
        q = end;
    }
}

int srv_cluster_open(srv_t *srv, char *uri, size_t urilen, char *err, size_t errlen)
{
    const srv_config_t *cfg = &srv->cfg;
    struct srv_cluster *cl;
    char cu[1400];
    int n, rc;

    if (cfg->cluster[0] == '\0') {
        n = snprintf(uri, urilen, "%s", cfg->spill_tier);
        return n < 0 || (size_t)n >= urilen ? PINPOOL_EINVAL : 0;
    }
    if (!good_name(cfg->cluster)) {
        snprintf(err, errlen, "--cluster '%s': 1 to 63 letters, digits, '-', '_' or '.'",
                 cfg->cluster);
        return PINPOOL_EINVAL;
    }
    if (strncmp(cfg->spill_tier, "mooncake://", 11) != 0) {
        snprintf(err, errlen, "--cluster %s needs a mooncake:// --spill-tier (the nodes share "
                 "it), not '%s'", cfg->cluster, cfg->spill_tier);
        return PINPOOL_EINVAL;
    }
    if (strstr(cfg->spill_tier, "?prefix=") != NULL || strstr(cfg->spill_tier, "&prefix=") != NULL) {
        snprintf(err, errlen, "--cluster %s sets the tier's prefix itself (%s/n/NODE/): drop "
                 "prefix= from --spill-tier", cfg->cluster, cfg->cluster);
        return PINPOOL_EINVAL;
    }
    cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return -ENOMEM;
    pthread_mutex_init(&cl->lock, NULL);
    snprintf(cl->name, sizeof(cl->name), "%s", cfg->cluster);
    if (strcmp(cfg->cluster_node, "auto") == 0) {
        char host[64] = "node";
        uint32_t h = 2166136261u; /* FNV-1a of the socket path: two daemons on one host */

        if (gethostname(host, sizeof(host)) != 0)
            snprintf(host, sizeof(host), "node");
        host[sizeof(host) - 1] = '\0';
        for (char *p = host; *p; p++)
            if (!good_name((char[]){*p, 0}))
                *p = '_';
        for (const char *p = cfg->socket; *p; p++)
            h = (h ^ (unsigned char)*p) * 16777619u;
        snprintf(cl->node, sizeof(cl->node), "%.54s-%08x", host, h);
    } else if (!good_name(cfg->cluster_node)) {
        snprintf(err, errlen, "--cluster-node '%s': 1 to 63 letters, digits, '-', '_' or '.'",
                 cfg->cluster_node);
        free(cl);
        return PINPOOL_EINVAL;
    } else {
        snprintf(cl->node, sizeof(cl->node), "%s", cfg->cluster_node);
    }
    /* the node's tier: its copies under NAME/n/NODE/ */
    n = snprintf(uri, urilen, "%s%cprefix=%s%%2Fn%%2F%s%%2F", cfg->spill_tier,
                 strchr(cfg->spill_tier, '?') != NULL ? '&' : '?', cl->name, cl->node);
    if (n < 0 || (size_t)n >= urilen) {
        snprintf(err, errlen, "--spill-tier is too long for --cluster");
        free(cl);
        return PINPOOL_EINVAL;
    }
    /* the cluster's handle: records and other nodes' copies, under NAME/; no
     * segment of its own (the node's tier mounts it), removals past leases */
    static const char *const drop[] = {"segment", "prefer_local", "local_segment", "force_remove",
                                       NULL};
    filter_params(cfg->spill_tier, drop, cu, sizeof(cu) - 128);
    snprintf(cu + strlen(cu), 128, "%cprefix=%s%%2F&force_remove=1",
             strchr(cu, '?') != NULL ? '&' : '?', cl->name);
    rc = tier_mooncake_ops.open(&cl->mc, cu, err, errlen);
    if (rc != 0) {
        pthread_mutex_destroy(&cl->lock);
        free(cl);
        return rc;
    }
    srv->cluster = cl;
    srv_info("cluster %s: this node is %s (its copies under %s/n/%s/, records under %s/r/)",
             cl->name, cl->node, cl->name, cl->node, cl->name);
    return 0;
}

void srv_cluster_close(srv_t *srv)
{
    struct srv_cluster *cl = srv->cluster;

    if (cl == NULL)
        return;
    if (cl->nqueued > 0)
        srv_warn("cluster %s: %u objects were never shared (they stay local)", cl->name,
                 cl->nqueued);
    while (cl->queue != NULL) {
        struct share *s = cl->queue;
        cl->queue = s->next;
        free(s);
    }
    while (cl->fetched != NULL) {
        struct fetched *f = cl->fetched;
        cl->fetched = f->next;
        free(f);
    }
    tier_mooncake_ops.close(cl->mc);
    pthread_mutex_destroy(&cl->lock);
    free(cl);
    srv->cluster = NULL;
}

#define COUNT(cl, field, n)              \
    do {                                 \
        pthread_mutex_lock(&(cl)->lock); \
        (cl)->field += (n);              \
        pthread_mutex_unlock(&(cl)->lock); \
    } while (0)

/* ---- sharing ----------------------------------------------------------------------- */

static struct share *queued(struct srv_cluster *cl, const char *key, uint64_t gen)
{
    for (struct share *s = cl->queue; s != NULL; s = s->next)
        if (s->gen == gen && strcmp(s->key, key) == 0)
            return s;
    return NULL;
}

/* Queue o to be shared (lock held). */
static void do_queue(srv_t *srv, struct srv_cluster *cl, obj_t *o)
{
    struct share *s, **tail;

    if (queued(cl, o->key, o->gen) != NULL)
        return;
    if (cl->nqueued >= QUEUE_MAX || (s = malloc(sizeof(*s) + o->keylen + 1)) == NULL) {
        srv_warn("cluster %s: %u objects wait to be shared already: '%s' stays local", cl->name,
                 cl->nqueued, o->key);
        return;
    }
    s->next = NULL;
    s->gen = o->gen;
    s->uid = o->uid;
    s->busy = false;
    memcpy(s->key, o->key, o->keylen + 1);
    for (tail = &cl->queue; *tail != NULL; tail = &(*tail)->next)
        ;
    *tail = s;
    cl->nqueued++;
    pthread_cond_signal(&srv->maint_cv);
}

void srv_cluster_share(srv_t *srv, uint32_t uid, const char *key, int rc)
{
    struct srv_cluster *cl = srv->cluster;
    obj_t *o;

    if (cl == NULL || rc != 0)
        return;
    pthread_mutex_lock(&srv->lock);
    o = objs_find(srv->objs, uid, key);
    if (o != NULL && !o->in_tier)
        do_queue(srv, cl, o);
    pthread_mutex_unlock(&srv->lock);
}

/* Share o (lock held, dropped meanwhile): its copy (unless it has one), then
 * its record.  0, or the error (o is as it was, still to be shared). */
static int do_share_one(srv_t *srv, struct srv_cluster *cl, obj_t *o)
{
    uint64_t slice = o->slice, off = o->offset, extent = o->extent, size = o->size;
    unsigned char meta[SRV_TMETA_LEN];
    char who[PRINCIPAL_MAX], rk[16 + PRINCIPAL_MAX + OBJ_KEY_MAX];
    bool data = !o->in_tier; /* RESIDENT without a copy: write one */
    size_t rklen;
    srv_tkey_t copy;
    rec_t r = {0};
    int rc = 0;

    if (!principal(o->uid, who)) {
        srv_warn("cluster %s: uid %" PRIu32 " has no user name here: '%s' is not shared",
                 cl->name, o->uid, o->key);
        return 0; /* nothing to retry */
    }
    do_tier_key(o, &copy);
    do_tier_meta(o, meta);
    rklen = rec_key(rk, sizeof(rk), who, o->key);
    r.size = size;
    memcpy(&r.expires_ms, meta + 8, 8);
    r.dkeylen = own_dkey(cl, &copy, r.dkey, sizeof(r.dkey));
    if (data)
        objs_set_state(srv->objs, o, OBJ_SPILLING, 0, 0, 0);
    pthread_mutex_unlock(&srv->lock);
    if (data) {
        r.crc = tier__checksum(host_addr(srv, off), size);
        r.flags = REC_CRC;
        rc = tier_put_meta(srv->tier, copy.s, copy.len, host_addr(srv, off), size, meta,
                           sizeof(meta));
    }
    if (rc == 0)
        rc = rec_write(cl, rk, rklen, &r);
    pthread_mutex_lock(&srv->lock);
    if (data) {
        objs_set_state(srv->objs, o, OBJ_RESIDENT, slice, off, extent);
        o->in_tier = rc == 0;
        pthread_cond_broadcast(&srv->obj_cv);
    }
    if (rc == 0) {
        COUNT(cl, shared, 1);
        srv_debug("cluster %s: shared '%s' of %s as '%s'", cl->name, o->key, who, r.dkey);
    } else {
        COUNT(cl, share_failures, 1);
        srv_warn("cluster %s: cannot share '%s' (retried): %s%s%s", cl->name, o->key,
                 pinpool_strerror(rc), tier_errmsg()[0] ? ": " : "", tier_errmsg());
    }
    return rc;
}

void do_cluster_share_queued(srv_t *srv)
{
    struct srv_cluster *cl = srv->cluster;

    if (cl == NULL || cl->queue == NULL || mono_ns() < cl->retry_ns)
        return;
    for (struct share *s = cl->queue, *next; s != NULL; s = next) {
        obj_t *o = objs_find(srv->objs, s->uid, s->key);
        int rc = 0;

        if (o != NULL && o->gen == s->gen && (o->state == OBJ_SPILLING || o->state == OBJ_RESTORING)) {
            next = s->next; /* another thread's: next time */
            continue;
        }
        if (o != NULL && o->gen == s->gen) {
            s->busy = true;
            rc = do_share_one(srv, cl, o); /* drops the lock: s stays (busy) */
            s->busy = false;
        }
        next = s->next;
        if (rc != 0) {
            cl->retry_ns = mono_ns() + TIER_BACKOFF_MS * 1000000ull;
            return;
        }
        for (struct share **p = &cl->queue; *p != NULL; p = &(*p)->next)
            if (*p == s) {
                *p = s->next;
                break;
            }
        free(s);
        cl->nqueued--;
    }
}

void srv_cluster_unshare(srv_t *srv, const srv_tkey_t *copy)
{
    struct srv_cluster *cl = srv->cluster;
    char who[PRINCIPAL_MAX], key[OBJ_KEY_MAX + 1], rk[16 + PRINCIPAL_MAX + OBJ_KEY_MAX];
    char mine[sizeof(((rec_t *)0)->dkey)];
    uint32_t uid;
    uint64_t gen;
    size_t rklen, ml;
    rec_t r;

    if (cl == NULL || copy->len == 0 ||
        srv_tier_key_parse(copy->s, copy->len, &uid, &gen, key) != 0 || !principal(uid, who))
        return;
    rklen = rec_key(rk, sizeof(rk), who, key);
    ml = own_dkey(cl, copy, mine, sizeof(mine));
    if (rec_read(cl, rk, rklen, &r) == 0 && r.dkeylen == ml && memcmp(r.dkey, mine, ml) == 0 &&
        tier_mooncake_ops.remove(cl->mc, rk, rklen) == 0)
        srv_debug("cluster %s: '%s' of %s is no longer shared", cl->name, key, who);
}

/* ---- finding ----------------------------------------------------------------------- */

/* uid's key's object once settled (lock held; waits, bounded); NULL with *rc. */
static obj_t *do_resettle(srv_t *srv, uint32_t uid, const char *key, int *rc, char *msg,
                          size_t msglen)
{
    uint64_t deadline = mono_ns() + OBJ_WAIT_MAX_S * 1000000000ull;

    for (;;) {
        obj_t *o = objs_find(srv->objs, uid, key);

        if (o != NULL && (o->state == OBJ_SPILLING || o->state == OBJ_RESTORING)) {
            o->waiters++;
            bool more = do_wait_obj(srv, deadline);
            o = objs_find(srv->objs, uid, key);
            if (o != NULL)
                o->waiters--;
            if (!more) {
                *rc = PINPOOL_ETIMEOUT;
                snprintf(msg, msglen, "object '%s' is still being spilled or restored; retry", key);
                return NULL;
            }
            continue;
        }
        if (o != NULL && o->expires_ns != 0 && o->expires_ns <= mono_ns())
            o = NULL;
        if (o == NULL) {
            *rc = PINPOOL_ENOKEY;
            snprintf(msg, msglen, "no object under key '%s' here or in cluster", key);
        }
        return o;
    }
}

/* The copy the object of generation gen was fetched from (lock held); NULL:
 * not fetched (or forgotten: then it is fetched again). */
static const struct fetched *fetched_from(struct srv_cluster *cl, uint64_t gen)
{
    for (struct fetched *f = cl->fetched; f != NULL; f = f->next)
        if (f->gen == gen)
            return f;
    return NULL;
}

static void remember_fetch(struct srv_cluster *cl, uint64_t gen, const rec_t *r)
{
    struct fetched *f = malloc(sizeof(*f) + r->dkeylen + 1), **p;
    uint32_t n = 0;

    if (f == NULL)
        return;
    f->gen = gen;
    f->dkeylen = r->dkeylen;
    memcpy(f->dkey, r->dkey, r->dkeylen + 1);
    f->next = cl->fetched;
    cl->fetched = f;
    cl->nfetched++;
    for (p = &cl->fetched; *p != NULL && n < FETCHED_MAX; p = &(*p)->next)
        n++;
    while (*p != NULL) { /* the oldest go */
        struct fetched *old = *p;
        *p = old->next;
        free(old);
        cl->nfetched--;
    }
}

/* Fetch the version r names into a new local object (lock held, dropped). */
static obj_t *do_fetch(srv_t *srv, struct srv_cluster *cl, uint32_t uid, const char *key,
                       const rec_t *r, int *rc, char *msg, size_t msglen)
{
    pool_slice_info_t info;
    uint64_t got = 0, t0, exp = 0;
    obj_t *o;

    *rc = do_alloc_obj(srv, (uid_t)uid, r->size, &info, msg, msglen);
    if (*rc != 0)
        return NULL;
    pthread_mutex_unlock(&srv->lock);
    t0 = mono_ns();
    *rc = tier_mooncake_ops.get(cl->mc, r->dkey, r->dkeylen, host_addr(srv, info.offset), r->size,
                                &got);
    if (*rc == 0 && got != r->size)
        *rc = tier__fail(PINPOOL_ETIER, "%" PRIu64 " bytes, not the %" PRIu64 " its record says",
                         got, r->size);
    if (*rc == 0 && (r->flags & REC_CRC) != 0 &&
        tier__checksum(host_addr(srv, info.offset), r->size) != r->crc)
        *rc = tier__fail(PINPOOL_ETIER, "its bytes do not match their record's checksum");
    t0 = mono_ns() - t0;
    pthread_mutex_lock(&srv->lock);
    if (*rc != 0) {
        pool_free(srv->pools[HOST_POOL], info.id, srv->obj_owner, NULL);
        if (*rc == PINPOOL_ENOKEY) /* removed meanwhile */
            snprintf(msg, msglen, "no object under key '%s' here or in cluster %s", key, cl->name);
        else
            snprintf(msg, msglen, "cannot fetch '%s' from cluster %s ('%s'): %s%s%s", key, cl->name,
                     r->dkey, pinpool_strerror(*rc), tier_errmsg()[0] ? ": " : "", tier_errmsg());
        *rc = *rc == PINPOOL_ENOKEY ? *rc : PINPOOL_ETIER;
        return NULL;
    }
    if (objs_find(srv->objs, uid, key) != NULL) { /* one came here meanwhile: that one */
        pool_free(srv->pools[HOST_POOL], info.id, srv->obj_owner, NULL);
        return do_resettle(srv, uid, key, rc, msg, msglen);
    }
    if (r->expires_ms == UINT64_MAX)
        exp = UINT64_MAX;
    else if (r->expires_ms != 0) {
        uint64_t w = wall_ms();
        exp = mono_ns() + (r->expires_ms > w ? r->expires_ms - w : 1) * 1000000ull;
    }
    *rc = objs_insert(srv->objs, key, uid, r->size, info.id, info.offset, info.extent, exp, &o);
    if (*rc == 0 && (*rc = do_charge_uid(srv, (uid_t)uid, (int64_t)obj_charge(o))) != 0)
        objs_remove(srv->objs, o); /* charged to its uid, as every object (-ENOMEM) */
    if (*rc != 0) {
        pool_free(srv->pools[HOST_POOL], info.id, srv->obj_owner, NULL);
        snprintf(msg, msglen, "cannot record object '%s' fetched from cluster %s: %s", key,
                 cl->name, pinpool_strerror(*rc));
        return NULL;
    }
    /* Marked in the tier (this node has no copy of it yet: a spill writes
     * one) so that it is checked against its record like any shared object. */
    o->in_tier = true;
    remember_fetch(cl, o->gen, r);
    pthread_mutex_lock(&cl->lock);
    cl->fetches++;
    cl->fetched_bytes += r->size;
    cl->fetch_ns += t0;
    pthread_mutex_unlock(&cl->lock);
    srv_debug("cluster %s: fetched '%s' (%" PRIu64 " bytes) from '%s' in %.3f ms", cl->name, key,
              r->size, r->dkey, (double)t0 / 1e6);
    return o;
}

obj_t *do_cluster_find(srv_t *srv, uint32_t uid, const char *key, obj_t *o, int *rc, char *msg,
                       size_t msglen)
{
    struct srv_cluster *cl = srv->cluster;
    char who[PRINCIPAL_MAX], rk[16 + PRINCIPAL_MAX + OBJ_KEY_MAX];
    char mine[sizeof(((rec_t *)0)->dkey)];
    size_t rklen, ml = 0;
    uint64_t gen = 0;
    srv_tkey_t own = {.len = 0}; /* this node's copy (not for a fetched object) */
    rec_t r;
    int rrc;

    if (cl == NULL || (o == NULL && *rc != PINPOOL_ENOKEY))
        return o;
    if (o != NULL && (!o->in_tier || queued(cl, key, o->gen) != NULL))
        return o; /* not shared (yet): this node's own */
    if (!principal(uid, who))
        return o;
    if (do_nowait()) { /* a Mooncake call */
        *rc = SRV_EWOULDBLOCK;
        return NULL;
    }
    if (o != NULL) { /* the copy it is: this node's, or the one it came from */
        const struct fetched *f = fetched_from(cl, o->gen);
        srv_tkey_t copy;

        do_tier_key(o, &copy);
        ml = f != NULL ? (size_t)snprintf(mine, sizeof(mine), "%s", f->dkey)
                       : own_dkey(cl, &copy, mine, sizeof(mine));
        if (f == NULL)
            own = copy;
        gen = o->gen;
    }
    rklen = rec_key(rk, sizeof(rk), who, key);
    pthread_mutex_unlock(&srv->lock);
    rrc = rec_read(cl, rk, rklen, &r);
    /* no record but this node's copy is there: the record was lost (its
     * segment died), not removed (a Remove takes the copy first) */
    bool lost = rrc == PINPOOL_ENOKEY && own.len != 0 && tier_exists(srv->tier, own.s, own.len) == 1;
    pthread_mutex_lock(&srv->lock);
    if (rrc != 0 && rrc != PINPOOL_ENOKEY) { /* Mooncake failed: what is here, if anything */
        srv_warn("cluster %s: cannot read the record of '%s': %s%s%s", cl->name, key,
                 pinpool_strerror(rrc), tier_errmsg()[0] ? ": " : "", tier_errmsg());
        o = do_resettle(srv, uid, key, rc, msg, msglen);
        if (o == NULL && *rc == PINPOOL_ENOKEY) {
            snprintf(msg, msglen, "no object under key '%s' here, and cluster %s cannot be "
                     "asked: %s", key, cl->name, pinpool_strerror(rrc));
            *rc = PINPOOL_ETIER;
        }
        return o;
    }
    o = do_resettle(srv, uid, key, rc, msg, msglen);
    if (o != NULL && o->gen != gen)
        return o; /* a new one came while the lock was down: this node's */
    if (o != NULL && lost) {
        srv_warn("cluster %s: the record of '%s' is gone but its copy here is not: shared again",
                 cl->name, key);
        do_queue(srv, cl, o);
        return o;
    }
    if (o != NULL && rrc == 0 && r.dkeylen == ml && memcmp(r.dkey, mine, ml) == 0)
        return o; /* the current version */
    if (o != NULL) { /* stale: removed, or a newer version elsewhere */
        srv_tkey_t copy;

        srv_debug("cluster %s: '%s' here is stale (%s): dropped", cl->name, key,
                  rrc == 0 ? r.dkey : "removed");
        COUNT(cl, stale, 1);
        do_drop_obj(srv, o, &copy);
        do_tier_forget(srv, &copy);
        o = NULL;
    }
    if (rrc != 0) {
        *rc = PINPOOL_ENOKEY;
        snprintf(msg, msglen, "no object under key '%s' here or in cluster %s", key, cl->name);
        return NULL;
    }
    return do_fetch(srv, cl, uid, key, &r, rc, msg, msglen);
}

int srv_cluster_exists(srv_t *srv, uint32_t uid, const char *key, int rc)
{
    struct srv_cluster *cl = srv->cluster;
    char who[PRINCIPAL_MAX], rk[16 + PRINCIPAL_MAX + OBJ_KEY_MAX];
    bool local;
    obj_t *o;
    rec_t r;
    int rrc;

    if (cl == NULL || rc < 0 || !principal(uid, who))
        return rc;
    pthread_mutex_lock(&srv->lock);
    o = objs_find(srv->objs, uid, key);
    local = rc == 1 && o != NULL && (!o->in_tier || queued(cl, key, o->gen) != NULL);
    pthread_mutex_unlock(&srv->lock);
    if (local)
        return 1;
    if (do_nowait())
        return SRV_EWOULDBLOCK;
    rrc = rec_read(cl, rk, rec_key(rk, sizeof(rk), who, key), &r);
    return rrc == 0 ? 1 : rrc == PINPOOL_ENOKEY ? 0 : rc; /* Mooncake down: the local answer */
}

int srv_cluster_nowait(srv_t *srv)
{
    return srv->cluster != NULL && do_nowait() ? SRV_EWOULDBLOCK : 0;
}

int srv_cluster_remove(srv_t *srv, uint32_t uid, const char *key, int rc, char *msg, size_t msglen)
{
    struct srv_cluster *cl = srv->cluster;
    char who[PRINCIPAL_MAX], rk[16 + PRINCIPAL_MAX + OBJ_KEY_MAX];
    size_t rklen;
    rec_t r;
    int rrc;

    if (cl == NULL || (rc != 0 && rc != PINPOOL_ENOKEY) || !principal(uid, who))
        return rc;
    if (do_nowait())
        return SRV_EWOULDBLOCK; /* the worker's try finds nothing here, then does this */
    rklen = rec_key(rk, sizeof(rk), who, key);
    rrc = rec_read(cl, rk, rklen, &r);
    if (rrc == PINPOOL_ENOKEY)
        return rc;
    /* The copy first, then the record: the node holding the object tells a
     * removal (record and copy gone) from a lost record (its copy still
     * there: shared again) by its copy, so it must never see the record gone
     * while the copy stays. */
    if (rrc == 0 && (rrc = tier_mooncake_ops.remove(cl->mc, r.dkey, r.dkeylen)) == PINPOOL_ENOKEY)
        rrc = 0;
    if (rrc == 0)
        rrc = tier_mooncake_ops.remove(cl->mc, rk, rklen);
    if (rrc != 0 && rrc != PINPOOL_ENOKEY) {
        snprintf(msg, msglen, "cannot remove '%s' from cluster %s (other nodes may still see "
                 "it; retry): %s%s%s", key, cl->name, pinpool_strerror(rrc),
                 tier_errmsg()[0] ? ": " : "", tier_errmsg());
        return PINPOOL_ETIER;
    }
    COUNT(cl, removed, 1);
    srv_debug("cluster %s: removed '%s' of %s ('%s')", cl->name, key, who, r.dkey);
    return 0;
}

void srv_cluster_report(srv_t *srv, void (*add)(const char *name, const char *value, void *arg),
                        void *arg)
{
    struct srv_cluster *cl = srv->cluster;
    uint64_t v[7];
    char b[32];
    uint32_t q;

    if (cl == NULL)
        return;
    pthread_mutex_lock(&srv->lock);
    q = cl->nqueued;
    pthread_mutex_unlock(&srv->lock);
    pthread_mutex_lock(&cl->lock);
    v[0] = cl->shared;
    v[1] = cl->share_failures;
    v[2] = cl->fetches;
    v[3] = cl->fetched_bytes;
    v[4] = cl->fetch_ns;
    v[5] = cl->stale;
    v[6] = cl->removed;
    pthread_mutex_unlock(&cl->lock);
    add("cluster", cl->name, arg);
    add("cluster_node", cl->node, arg);
    static const char *const names[] = {"cluster_shared", "cluster_share_failures",
                                        "cluster_fetches", "cluster_fetched_bytes"};
    for (int i = 0; i < 4; i++) {
        snprintf(b, sizeof(b), "%" PRIu64, v[i]);
        add(names[i], b, arg);
    }
    snprintf(b, sizeof(b), "%.3f", v[2] ? (double)v[4] / 1e6 / (double)v[2] : 0.0);
    add("cluster_fetch_avg_ms", b, arg);
    snprintf(b, sizeof(b), "%" PRIu64, v[5]);
    add("cluster_stale_dropped", b, arg);
    snprintf(b, sizeof(b), "%" PRIu64, v[6]);
    add("cluster_removed", b, arg);
    snprintf(b, sizeof(b), "%u", q);
    add("cluster_to_share", b, arg);
}
