/*
 * manifest_store.c - tensor manifests in the daemon (pinpool.h, "Tensor
 * manifests"): publish (begin, add, alloc, commit), open, attach, verify,
 * close, and a name's versions (list, drop, collect).  The format is
 * manifest.c's.
 *
 * Built on the daemon's primitives only: the name record and the manifests
 * are Put objects, the bytes kept slices (or released slices), the
 * publisher and each reader leave a small marker object.  The commit point
 * is the write of the name record; the record is written alternately under
 * two keys (NAME!a, NAME!b) with a generation, because a Put that replaces an
 * object drops the old one before the new one is in (a reader between the
 * two would find nothing, and a Put that then fails would lose it): a reader
 * takes the newer of the two that are whole.
 * Owns: the keys and tags named in pinpool.h, the name record's layout, the
 * per-context registry of kept segments attached here (a kept slice can be
 * mapped once per context, so two manifests of one version share it) and of
 * reader markers.
 * Never: frees a slice that a committed, undropped version names; removes a
 * version's bytes before the record has stopped naming it; leaves the
 * caller's current CUDA context changed.
 * Locking: the registry's mutex guards the registry only and is never held
 * across a call to the daemon; publishers and manifests are used by one
 * thread at a time (the caller's).  One publisher per name (pinpool.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cudaload.h"
#include "internal.h"
#include "manifest_int.h"

#define KEY_MAX 512
#define PREFIX "weights:"
#define TAG_FMT "wt:%016" PRIx64 ".%" PRIx64 ".%" PRIu32
#define REC_MAGIC "PPWNAME1"
#define REC_HDR 48u
#define REC_ENTRY 16u
#define REC_BYTES (REC_HDR + REC_ENTRY * PINPOOL_MANIFEST_MAX_VERSIONS)
#define REC_COMMITTED 1u
#define REC_PENDING 2u
#define ACQUIRE_WAIT_MS 10000

/* ---- small helpers ------------------------------------------------------------------- */

static void rw64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t rr64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t rr32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void rw32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* "weights:NAME" + "@V" (v > 0) + suffix. */
static void mkey(char *buf, const char *name, uint64_t v, const char *suffix)
{
    if (v == 0)
        snprintf(buf, KEY_MAX, PREFIX "%s%s", name, suffix);
    else
        snprintf(buf, KEY_MAX, PREFIX "%s@%" PRIu64 "%s", name, v, suffix);
}

static void seg_tag(char *buf, const char *name, uint64_t v, uint32_t seg)
{
    snprintf(buf, PINPOOL__MAN_KEY, TAG_FMT, pinpool__xxh3(name, strlen(name)), v, seg);
}

/* The object key of a released (SPILLABLE) segment: "weights:" + its tag. */
static void released_key(char *buf, const char *tag)
{
    snprintf(buf, KEY_MAX, PREFIX "%s", tag);
}

static uint64_t now_unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Get key into a new buffer of at most max bytes: 0 and *out / *len, or the
 * error (PINPOOL_ENOKEY when absent; -EMSGSIZE when larger than max). */
static int get_obj(pinpool_ctx_t *ctx, const char *key, size_t max, uint8_t **out, size_t *len)
{
    uint8_t *buf = malloc(max > 0 ? max : 1);
    uint64_t got = 0;
    int rc;

    if (buf == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    rc = pinpool_get(ctx, key, buf, max, &got);
    if (rc == -ENOBUFS)
        rc = pinpool__fail(ctx, -EMSGSIZE, "the object '%.300s' is %" PRIu64 " bytes, more than the "
                           "%zu expected", key, got, max);
    if (rc != 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = got;
    return 0;
}

/* Remove key, quietly: absent is fine; any other error is passed up. */
static int remove_quiet(pinpool_ctx_t *ctx, const char *key)
{
    int rc = pinpool_remove(ctx, key);
    return rc == PINPOOL_ENOKEY ? 0 : rc;
}

#ifdef PINPOOL_HAVE_CUDA
/* Make device's primary context current, saving the caller's in *saved. */
static int cuda_enter(pinpool_ctx_t *ctx, int32_t device, CUcontext *saved)
{
    char why[256];

    if (ipc_cuda_load(why, sizeof(why)) != 0)
        return pinpool__fail(ctx, PINPOOL_ECUDA, "%s", why);
    *saved = NULL;
    ipc_cu.cuCtxGetCurrent(saved);
    if (ipc_cuda_use_device(device) != 0)
        return pinpool__fail(ctx, PINPOOL_ENODEV, "GPU %" PRId32 " is not visible in this process "
                             "(%d GPUs)", device, ipc_cuda_device_count());
    return 0;
}

static void cuda_leave(CUcontext saved)
{
    ipc_cu.cuCtxSetCurrent(saved);
}
#endif

/* ---- live sessions and kept tags (GetPoolInfo) ---------------------------------------- */

typedef struct clients {
    pinpool_pool_info_t info;
    bool have;
} clients_t;

static int clients_read(pinpool_ctx_t *ctx, clients_t *c)
{
    int rc = pinpool_pool_info(ctx, &c->info);

    c->have = rc == 0;
    return rc;
}

static void clients_free(clients_t *c)
{
    if (c->have)
        pinpool_pool_info_free(&c->info);
    c->have = false;
}

/* A client with a session (a live process), not a kept slice's holder. */
static bool is_session(const pinpool_client_usage_t *u)
{
    return u->pid != 0 && strncmp(u->client_id, "kept:", 5) != 0;
}

static const pinpool_client_usage_t *live(const clients_t *c, const char *client_id)
{
    for (uint32_t i = 0; i < c->info.num_usage; i++)
        if (is_session(&c->info.usage[i]) && strcmp(c->info.usage[i].client_id, client_id) == 0)
            return &c->info.usage[i];
    return NULL;
}

/* The version and segment of a kept tag of name's hash, false for another tag. */
static bool tag_of(const char *client_id, uint64_t name_hash, uint64_t *v, uint32_t *seg)
{
    char want[32];
    const char *p;
    char *end;

    snprintf(want, sizeof(want), "kept:wt:%016" PRIx64 ".", name_hash);
    if (strncmp(client_id, want, strlen(want)) != 0)
        return false;
    p = client_id + strlen(want);
    *v = strtoull(p, &end, 16);
    if (end == p || *end != '.')
        return false;
    p = end + 1;
    unsigned long s = strtoul(p, &end, 10);
    if (end == p || *end != '\0' || s >= PINPOOL_MANIFEST_MAX_SEGMENTS || *v == 0)
        return false;
    *seg = (uint32_t)s;
    return true;
}

/* ---- the per-context registry ----------------------------------------------------------- */

typedef struct reg_ent {
    char key[KEY_MAX]; /* a kept tag, or a reader marker's key */
    uint64_t slice_id; /* 0 for markers */
    uint64_t addr;
    int32_t device;
    bool cpu;          /* mapped for the CPU too */
    uint32_t refs;
} reg_ent_t;

typedef struct reg {
    pthread_mutex_t lock;
    reg_ent_t *e;
    uint32_t n, cap;
} reg_t;

static int reg_make(pinpool_ctx_t *ctx, void **state)
{
    reg_t *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    pthread_mutex_init(&r->lock, NULL);
    *state = r;
    return 0;
}

static void reg_destroy(pinpool_ctx_t *ctx, void *state)
{
    reg_t *r = state;

    /* Markers go; kept mappings are unmapped by pinpool_close itself. */
    for (uint32_t i = 0; i < r->n; i++)
        if (r->e[i].slice_id == 0)
            pinpool_remove(ctx, r->e[i].key);
    free(r->e);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static const pinpool__ext_t reg_ext = {.name = "manifest", .make = reg_make, .destroy = reg_destroy};

static reg_ent_t *reg_find(reg_t *r, const char *key)
{
    for (uint32_t i = 0; i < r->n; i++)
        if (strcmp(r->e[i].key, key) == 0)
            return &r->e[i];
    return NULL;
}

static int reg_add(reg_t *r, const reg_ent_t *e)
{
    if (r->n == r->cap) {
        uint32_t cap = r->cap ? 2 * r->cap : 16;
        reg_ent_t *ne = realloc(r->e, cap * sizeof(*ne));
        if (ne == NULL)
            return -ENOMEM;
        r->e = ne;
        r->cap = cap;
    }
    r->e[r->n++] = *e;
    return 0;
}

static void reg_del(reg_t *r, reg_ent_t *e)
{
    *e = r->e[--r->n];
}

/*
 * Map the slice kept under tag here (once per context: later callers share
 * it), for the CPU too when cpu.  0 with *addr and *slice_id, or the error.
 */
static int kept_get(pinpool_ctx_t *ctx, const char *tag, bool cpu, uint64_t *addr, uint64_t *size,
                    int32_t *device)
{
    reg_t *r;
    reg_ent_t *e, ne;
    pinpool_slice_t s;
    int rc = pinpool__ext_get(ctx, &reg_ext, (void **)&r);

    if (rc != 0)
        return rc;
    pthread_mutex_lock(&r->lock);
    e = reg_find(r, tag);
    if (e != NULL) {
        if (cpu && !e->cpu && e->device < 0) {
            pthread_mutex_unlock(&r->lock);
            return pinpool__fail(ctx, PINPOOL_EBUSY, "the kept slice '%s' is mapped here for CUDA "
                                 "copies only (another attach copying it to a GPU); retry", tag);
        }
        e->refs++;
        *addr = e->addr;
        pthread_mutex_unlock(&r->lock);
        *size = 0; /* the caller checked the size at the first attach */
        *device = e->device;
        return 0;
    }
    pthread_mutex_unlock(&r->lock);
    rc = pinpool_attach(ctx, tag, cpu ? 0 : PINPOOL_ALLOC_GPU_ONLY, &s);
    if (rc != 0)
        return rc;
    memset(&ne, 0, sizeof(ne));
    snprintf(ne.key, sizeof(ne.key), "%s", tag);
    ne.slice_id = s.id;
    ne.addr = (uint64_t)(uintptr_t)s.ptr;
    ne.device = s.device_id;
    ne.cpu = cpu || s.device_id >= 0;
    ne.refs = 1;
    pthread_mutex_lock(&r->lock);
    rc = reg_add(r, &ne);
    pthread_mutex_unlock(&r->lock);
    if (rc != 0) {
        pinpool_detach(ctx, s.id);
        return pinpool__fail(ctx, rc, "out of memory");
    }
    *addr = ne.addr;
    *size = s.size;
    *device = s.device_id;
    return 0;
}

/* One user of the kept slice under tag is done; the last one detaches it.
 * With free_it the slice is freed instead (drop, collect). */
static void kept_put(pinpool_ctx_t *ctx, const char *tag, bool free_it)
{
    reg_t *r = pinpool__ext_find(ctx, &reg_ext);
    uint64_t id = 0;

    if (r == NULL)
        return;
    pthread_mutex_lock(&r->lock);
    reg_ent_t *e = reg_find(r, tag);
    if (e != NULL && (free_it || --e->refs == 0)) {
        id = e->slice_id;
        reg_del(r, e);
    }
    pthread_mutex_unlock(&r->lock);
    if (id != 0) {
        if (free_it)
            pinpool_free(ctx, id, NULL);
        else
            pinpool_detach(ctx, id);
    }
}

/* A reader marker under key, counted per context (put by the first user). */
static int marker_get(pinpool_ctx_t *ctx, const char *key)
{
    reg_t *r;
    reg_ent_t ne;
    char pid[24];
    int rc = pinpool__ext_get(ctx, &reg_ext, (void **)&r);

    if (rc != 0)
        return rc;
    pthread_mutex_lock(&r->lock);
    reg_ent_t *e = reg_find(r, key);
    if (e != NULL)
        e->refs++;
    pthread_mutex_unlock(&r->lock);
    if (e != NULL)
        return 0;
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    rc = pinpool_put(ctx, key, pid, strlen(pid), 0);
    if (rc != 0)
        return rc;
    memset(&ne, 0, sizeof(ne));
    snprintf(ne.key, sizeof(ne.key), "%s", key);
    ne.refs = 1;
    pthread_mutex_lock(&r->lock);
    rc = reg_add(r, &ne);
    pthread_mutex_unlock(&r->lock);
    if (rc != 0) {
        pinpool_remove(ctx, key);
        return pinpool__fail(ctx, rc, "out of memory");
    }
    return 0;
}

static void marker_put(pinpool_ctx_t *ctx, const char *key)
{
    reg_t *r = pinpool__ext_find(ctx, &reg_ext);
    bool last = false;

    if (r == NULL)
        return;
    pthread_mutex_lock(&r->lock);
    reg_ent_t *e = reg_find(r, key);
    if (e != NULL && --e->refs == 0) {
        reg_del(r, e);
        last = true;
    }
    pthread_mutex_unlock(&r->lock);
    if (last)
        pinpool_remove(ctx, key);
}

/* ---- the name record ---------------------------------------------------------------------- */

typedef struct rec_entry {
    uint64_t version;
    uint32_t nseg;  /* segments (known at commit; 0 before) */
    uint16_t state; /* REC_* */
    uint16_t parts; /* objects the manifest is written in (known at commit; 0 before) */
} rec_entry_t;

typedef struct name_rec {
    bool found;
    char slot;    /* 'a' or 'b': where the newest whole copy is */
    uint64_t gen; /* its generation */
    uint64_t current;
    uint64_t top; /* the highest version ever begun: versions are never reused */
    uint32_t n;
    rec_entry_t e[PINPOOL_MANIFEST_MAX_VERSIONS];
} name_rec_t;

/* Decode one copy; false when it is not whole. */
static bool rec_decode(const uint8_t *b, size_t len, name_rec_t *r)
{
    if (len < REC_HDR || memcmp(b, REC_MAGIC, 8) != 0 || rr32(b + 8) != 1)
        return false;
    uint32_t n = rr32(b + 12);
    if (n > PINPOOL_MANIFEST_MAX_VERSIONS || len != REC_HDR + (size_t)REC_ENTRY * n)
        return false;
    uint8_t *copy = malloc(len);
    if (copy == NULL)
        return false;
    memcpy(copy, b, len);
    memset(copy + 32, 0, 8);
    bool ok = pinpool__xxh3(copy, len) == rr64(b + 32);
    free(copy);
    if (!ok)
        return false;
    r->n = n;
    r->current = rr64(b + 16);
    r->gen = rr64(b + 24);
    r->top = rr64(b + 40);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *p = b + REC_HDR + REC_ENTRY * i;
        r->e[i].version = rr64(p);
        r->e[i].nseg = rr32(p + 8);
        r->e[i].state = (uint16_t)(p[12] | p[13] << 8);
        r->e[i].parts = (uint16_t)(p[14] | p[15] << 8);
        if (r->e[i].version == 0 || (r->e[i].state != REC_COMMITTED && r->e[i].state != REC_PENDING))
            return false;
    }
    return true;
}

/* Read name's record: 0 (r->found false when there is none), or an error. */
static int rec_read(pinpool_ctx_t *ctx, const char *name, name_rec_t *r)
{
    static name_rec_t tmp_init;
    name_rec_t *tmp = malloc(sizeof(*tmp));
    char key[KEY_MAX];
    bool damaged = false;
    int rc = 0;

    if (tmp == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    *r = tmp_init;
    for (char slot = 'a'; slot <= 'b'; slot++) {
        uint8_t *b = NULL;
        size_t len = 0;
        char suffix[3] = {'!', slot, '\0'};
        mkey(key, name, 0, suffix);
        rc = get_obj(ctx, key, REC_BYTES, &b, &len);
        if (rc == PINPOOL_ENOKEY) {
            rc = 0;
            continue;
        }
        if (rc == -EMSGSIZE) {
            damaged = true;
            rc = 0;
            continue;
        }
        if (rc != 0)
            break;
        *tmp = tmp_init;
        if (!rec_decode(b, len, tmp))
            damaged = true;
        else if (!r->found || tmp->gen > r->gen) {
            *r = *tmp;
            r->found = true;
            r->slot = slot;
        }
        free(b);
    }
    free(tmp);
    if (rc == 0 && !r->found && damaged)
        rc = pinpool__fail(ctx, -EBADMSG, "the name record of manifest '%s' (" PREFIX "%s!a/!b) is "
                           "damaged", name, name);
    return rc;
}

/* Write r as the next generation into the slot that does not hold the newest. */
static int rec_write(pinpool_ctx_t *ctx, const char *name, name_rec_t *r)
{
    size_t len = REC_HDR + (size_t)REC_ENTRY * r->n;
    uint8_t *b = calloc(1, len);
    char key[KEY_MAX];
    char slot = r->found && r->slot == 'a' ? 'b' : 'a';
    char suffix[3] = {'!', slot, '\0'};
    int rc;

    if (b == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    memcpy(b, REC_MAGIC, 8);
    rw32(b + 8, 1);
    rw32(b + 12, r->n);
    rw64(b + 16, r->current);
    rw64(b + 24, r->gen + 1);
    rw64(b + 40, r->top);
    for (uint32_t i = 0; i < r->n; i++) {
        uint8_t *p = b + REC_HDR + REC_ENTRY * i;
        rw64(p, r->e[i].version);
        rw32(p + 8, r->e[i].nseg);
        rw32(p + 12, (uint32_t)r->e[i].state | (uint32_t)r->e[i].parts << 16);
    }
    rw64(b + 32, pinpool__xxh3(b, len));
    mkey(key, name, 0, suffix);
    rc = pinpool_put(ctx, key, b, len, 0);
    free(b);
    if (rc != 0)
        return rc;
    r->found = true;
    r->slot = slot;
    r->gen++;
    return 0;
}

static rec_entry_t *rec_find(name_rec_t *r, uint64_t v)
{
    for (uint32_t i = 0; i < r->n; i++)
        if (r->e[i].version == v)
            return &r->e[i];
    return NULL;
}

static void rec_del(name_rec_t *r, uint64_t v)
{
    rec_entry_t *e = rec_find(r, v);
    if (e != NULL) {
        memmove(e, e + 1, (size_t)(&r->e[r->n] - (e + 1)) * sizeof(*e));
        r->n--;
    }
}

/* ---- a version's objects ------------------------------------------------------------------ */

/* Remove the manifest objects of version v ("@V", "@V+K"): parts of them
 * when known (a committed version), else up to the first one missing (the
 * parts are written in order, so a publisher that died left a prefix). */
static void remove_manifest_parts(pinpool_ctx_t *ctx, const char *name, uint64_t v, uint32_t parts)
{
    char key[KEY_MAX];

    for (uint32_t k = 0; k < PINPOOL_MANIFEST_MAX_BYTES / PINPOOL__MAN_PART; k++) {
        char suffix[16] = "";
        if (k > 0)
            snprintf(suffix, sizeof(suffix), "+%" PRIu32, k);
        mkey(key, name, v, suffix);
        int rc = pinpool_remove(ctx, key);
        if (parts > 0 ? k + 1 >= parts : rc != 0)
            break;
    }
}

/* Free the slice kept under tag: through the registry when this context has
 * it mapped, else by attaching it here first. */
static int free_kept(pinpool_ctx_t *ctx, const char *tag)
{
    reg_t *r = pinpool__ext_find(ctx, &reg_ext);
    pinpool_slice_t s;
    bool mine = false;
    int rc;

    if (r != NULL) {
        pthread_mutex_lock(&r->lock);
        mine = reg_find(r, tag) != NULL;
        pthread_mutex_unlock(&r->lock);
    }
    if (mine) {
        kept_put(ctx, tag, true);
        return 0;
    }
    rc = pinpool_attach(ctx, tag, PINPOOL_ALLOC_GPU_ONLY, &s);
    if (rc == PINPOOL_ENOENT)
        return 0;
    if (rc != 0)
        return rc;
    return pinpool_free(ctx, s.id, NULL);
}

/* Free everything version v of name holds: its kept segments (the tags in
 * clients, plus nseg by number), released segments 0..nseg-1, its manifest,
 * its publisher marker.  The first error is returned; the rest go on. */
static int free_version(pinpool_ctx_t *ctx, const char *name, uint64_t v, uint32_t nseg,
                        uint32_t parts, const clients_t *c)
{
    uint64_t h = pinpool__xxh3(name, strlen(name));
    char key[KEY_MAX], tag[PINPOOL__MAN_KEY];
    int first = 0, rc;

    for (uint32_t i = 0; c != NULL && c->have && i < c->info.num_usage; i++) {
        uint64_t tv;
        uint32_t seg;
        if (tag_of(c->info.usage[i].client_id, h, &tv, &seg) && tv == v && seg >= nseg) {
            seg_tag(tag, name, v, seg);
            rc = free_kept(ctx, tag);
            first = first != 0 ? first : rc;
        }
    }
    for (uint32_t s = 0; s < nseg; s++) {
        seg_tag(tag, name, v, s);
        rc = free_kept(ctx, tag);
        first = first != 0 ? first : rc;
        released_key(key, tag);
        rc = remove_quiet(ctx, key);
        first = first != 0 ? first : rc;
    }
    remove_manifest_parts(ctx, name, v, parts);
    mkey(key, name, v, "~pub");
    remove_quiet(ctx, key);
    return first;
}

/* Is version v being published by a live session?  *who gets its client id. */
static bool publisher_alive(pinpool_ctx_t *ctx, const char *name, uint64_t v, const clients_t *c,
                            char *who, size_t wholen)
{
    char key[KEY_MAX];
    uint8_t *b = NULL;
    size_t len = 0;
    bool alive = false;

    mkey(key, name, v, "~pub");
    if (get_obj(ctx, key, 64, &b, &len) != 0)
        return false;
    if (len > 0 && len < 64) {
        char id[64];
        memcpy(id, b, len);
        id[len] = '\0';
        alive = live(c, id) != NULL;
        snprintf(who, wholen, "%s", id);
    }
    free(b);
    return alive;
}

int pinpool_manifest_collect(pinpool_ctx_t *ctx, const char *name, uint32_t *collected)
{
    char msg[256], who[64];
    clients_t c = {.have = false};
    name_rec_t *r = NULL;
    uint64_t *cand = NULL, h;
    uint32_t ncand = 0, done = 0, cap = 0;
    bool changed = false;
    int rc = pinpool__check(ctx, true, true, NULL);

    if (rc == 0 && pinpool__manifest_check_name(name, msg, sizeof(msg)) != 0)
        rc = pinpool__fail(ctx, PINPOOL_EINVAL, "%s", msg);
    if (rc == 0 && (r = malloc(sizeof(*r))) == NULL)
        rc = pinpool__fail(ctx, -ENOMEM, "out of memory");
    /* The record before the sessions: a publisher that began before the record
     * was read had its session before the snapshot, so it is seen alive. */
    if (rc == 0)
        rc = rec_read(ctx, name, r);
    if (rc == 0)
        rc = clients_read(ctx, &c);
    if (rc != 0)
        goto out;
    h = pinpool__xxh3(name, strlen(name));
    /* Candidates: versions being made, and versions whose kept slices exist
     * but that the record does not name as committed. */
    for (uint32_t i = 0; i < r->n + c.info.num_usage; i++) {
        uint64_t v = 0;
        uint32_t seg;
        if (i < r->n) {
            if (r->e[i].state == REC_PENDING)
                v = r->e[i].version;
        } else if (tag_of(c.info.usage[i - r->n].client_id, h, &v, &seg)) {
            rec_entry_t *e = rec_find(r, v);
            if (e != NULL && e->state == REC_COMMITTED)
                v = 0;
        }
        bool seen = v == 0;
        for (uint32_t k = 0; k < ncand && !seen; k++)
            seen = cand[k] == v;
        if (seen)
            continue;
        if (ncand == cap) {
            uint32_t ncap = cap ? 2 * cap : 16;
            uint64_t *nc = realloc(cand, ncap * sizeof(*nc));
            if (nc == NULL) {
                rc = pinpool__fail(ctx, -ENOMEM, "out of memory");
                goto out;
            }
            cand = nc;
            cap = ncap;
        }
        cand[ncand++] = v;
    }
    for (uint32_t k = 0; k < ncand; k++) {
        uint64_t v = cand[k];
        if (publisher_alive(ctx, name, v, &c, who, sizeof(who)))
            continue;
        rec_entry_t *e = rec_find(r, v);
        int frc = free_version(ctx, name, v, e != NULL ? e->nseg : 0, 0, &c);
        if (frc != 0 && rc == 0)
            rc = frc;
        if (frc == 0) {
            if (e != NULL) {
                rec_del(r, v);
                changed = true;
            }
            done++;
        }
    }
    if (changed) {
        int wrc = rec_write(ctx, name, r);
        rc = rc != 0 ? rc : wrc;
    }
out:
    if (collected != NULL)
        *collected = done;
    clients_free(&c);
    free(cand);
    free(r);
    return rc;
}

/* ---- publishing ---------------------------------------------------------------------------- */

struct pinpool_publish {
    pinpool_ctx_t *ctx;
    char name[PINPOOL_MANIFEST_NAME_MAX + 1];
    uint64_t version;
    int32_t device;
    uint32_t flags, threads;
    uint64_t seg_bytes, align;
    char *meta;
    uint32_t meta_len;
    pinpool__mtensor_t *t;
    char **names;
    uint32_t *alias; /* UINT32_MAX: own bytes */
    uint32_t nt, cap;
    uint32_t *set; /* open-addressing set of tensor indices + 1, by name */
    uint32_t set_cap;
    bool allocated;
    pinpool__mseg_t *segs;
    uint32_t nseg;
};

uint64_t pinpool_manifest_pub_version(const pinpool_publish_t *pub)
{
    return pub != NULL ? pub->version : 0;
}

/* Forget version v in name's record (re-read first: the record may have moved on). */
static void unrecord(pinpool_ctx_t *ctx, const char *name, uint64_t v)
{
    name_rec_t *r = malloc(sizeof(*r));

    if (r != NULL && rec_read(ctx, name, r) == 0 && rec_find(r, v) != NULL) {
        rec_del(r, v);
        rec_write(ctx, name, r);
    }
    free(r);
}

static void pub_free(pinpool_publish_t *pub)
{
    for (uint32_t i = 0; i < pub->nt; i++)
        free(pub->names[i]);
    free(pub->names);
    free(pub->t);
    free(pub->alias);
    free(pub->set);
    free(pub->segs);
    free(pub->meta);
    free(pub);
}

int pinpool_manifest_begin(pinpool_ctx_t *ctx, const char *name, const pinpool_manifest_opts_t *opts,
                           pinpool_publish_t **out)
{
    static const pinpool_manifest_opts_t defaults = {.device_id = PINPOOL_HOST};
    pinpool_publish_t *pub = NULL;
    name_rec_t *r = NULL;
    clients_t c = {.have = false};
    char msg[256], key[KEY_MAX], who[64];
    int rc = pinpool__check(ctx, true, name != NULL && out != NULL, "name and out");

    if (rc != 0)
        return rc;
    if (opts == NULL)
        opts = &defaults;
    if (pinpool__manifest_check_name(name, msg, sizeof(msg)) != 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "%s", msg);
    if (opts->device_id < PINPOOL_HOST || opts->device_id >= PINPOOL_MAX_DEVICES)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "device_id %" PRId32 ": PINPOOL_HOST or a GPU "
                             "0..%d", opts->device_id, PINPOOL_MAX_DEVICES - 1);
    if ((opts->flags & ~(PINPOOL_MANIFEST_SPILLABLE | PINPOOL_MANIFEST_NO_HASH)) != 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "unknown flags 0x%" PRIx32, opts->flags);
    if ((opts->flags & PINPOOL_MANIFEST_SPILLABLE) && opts->device_id != PINPOOL_HOST)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "PINPOOL_MANIFEST_SPILLABLE is for host manifests "
                             "(the daemon spills host slices only)");
    if (opts->alignment != 0 && ((opts->alignment & (opts->alignment - 1)) != 0 ||
                                 opts->alignment > (2u << 20)))
        return pinpool__fail(ctx, PINPOOL_EINVAL, "alignment %" PRIu64 ": a power of two up to "
                             "2 MiB", opts->alignment);
    if (opts->metadata != NULL && strlen(opts->metadata) > PINPOOL_MANIFEST_META_MAX)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "metadata of %zu bytes (at most %u)",
                             strlen(opts->metadata), PINPOOL_MANIFEST_META_MAX);
    if (opts->hash_threads > 64)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "hash_threads %" PRIu32 " (at most 64)",
                             opts->hash_threads);

    pinpool_manifest_collect(ctx, name, NULL); /* best effort: what dead publishers left */
    pub = calloc(1, sizeof(*pub));
    r = malloc(sizeof(*r));
    if (pub == NULL || r == NULL ||
        (opts->metadata != NULL && (pub->meta = strdup(opts->metadata)) == NULL)) {
        rc = pinpool__fail(ctx, -ENOMEM, "out of memory");
        goto fail;
    }
    rc = rec_read(ctx, name, r);
    if (rc == 0)
        rc = clients_read(ctx, &c);
    if (rc != 0)
        goto fail;
    uint64_t top = r->top;
    for (uint32_t i = 0; i < r->n; i++) {
        if (r->e[i].state == REC_PENDING &&
            publisher_alive(ctx, name, r->e[i].version, &c, who, sizeof(who))) {
            rc = pinpool__fail(ctx, PINPOOL_EBUSY, "another process (client %s) is publishing "
                               "'%s' version %" PRIu64 " now; one publisher per name", who, name,
                               r->e[i].version);
            goto fail;
        }
        top = r->e[i].version > top ? r->e[i].version : top;
    }
    if (r->n == PINPOOL_MANIFEST_MAX_VERSIONS) {
        rc = pinpool__fail(ctx, PINPOOL_ENOSPC, "'%s' holds %u versions, the most a name can: drop "
                           "old ones (pinpool_manifest_drop)", name, PINPOOL_MANIFEST_MAX_VERSIONS);
        goto fail;
    }
    snprintf(pub->name, sizeof(pub->name), "%s", name);
    pub->ctx = ctx;
    pub->version = (top > r->current ? top : r->current) + 1;
    pub->device = opts->device_id;
    pub->flags = opts->flags;
    pub->threads = opts->hash_threads;
    pub->seg_bytes = opts->segment_bytes;
    pub->align = opts->alignment != 0 ? opts->alignment : 256;
    pub->meta_len = pub->meta != NULL ? (uint32_t)strlen(pub->meta) : 0;
    r->e[r->n++] = (rec_entry_t){.version = pub->version, .state = REC_PENDING};
    r->top = pub->version;
    /* The marker first: a record naming a version without a live marker is
     * collectable by anyone. */
    mkey(key, name, pub->version, "~pub");
    rc = pinpool_put(ctx, key, pinpool_client_id(ctx), strlen(pinpool_client_id(ctx)), 0);
    if (rc == 0)
        rc = rec_write(ctx, name, r);
    if (rc != 0) {
        remove_quiet(ctx, key);
        goto fail;
    }
    clients_free(&c);
    free(r);
    *out = pub;
    return 0;

fail:
    clients_free(&c);
    free(r);
    if (pub != NULL)
        pub_free(pub);
    return rc;
}

static uint32_t name_slot(const pinpool_publish_t *pub, const char *name, size_t n, bool *found)
{
    uint32_t mask = pub->set_cap - 1, i = (uint32_t)pinpool__xxh3(name, n) & mask;

    for (;; i = (i + 1) & mask) {
        uint32_t at = pub->set[i];
        if (at == 0) {
            *found = false;
            return i;
        }
        if (strcmp(pub->names[at - 1], name) == 0) {
            *found = true;
            return i;
        }
    }
}

static int set_grow(pinpool_publish_t *pub)
{
    uint32_t cap = pub->set_cap ? pub->set_cap * 2 : 64;
    uint32_t *old = pub->set, ocap = pub->set_cap;

    pub->set = calloc(cap, sizeof(*pub->set));
    if (pub->set == NULL) {
        pub->set = old;
        return -ENOMEM;
    }
    pub->set_cap = cap;
    for (uint32_t i = 0; i < ocap; i++)
        if (old[i] != 0) {
            bool f;
            const char *nm = pub->names[old[i] - 1];
            pub->set[name_slot(pub, nm, strlen(nm), &f)] = old[i];
        }
    free(old);
    return 0;
}

int pinpool_manifest_add(pinpool_publish_t *pub, const pinpool_tensor_desc_t *d, uint32_t *index)
{
    pinpool__mtensor_t t;
    uint64_t span;
    size_t n;
    bool found;

    if (pub == NULL)
        return -EINVAL;
    pinpool_ctx_t *ctx = pub->ctx;
    if (d == NULL || d->name == NULL)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "a tensor needs a name");
    if (pub->allocated)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': the segments are allocated "
                             "already (add every tensor before pinpool_manifest_alloc)", d->name);
    n = strlen(d->name);
    if (n == 0 || n > PINPOOL_MANIFEST_TENSOR_NAME_MAX)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "a tensor name is 1 to %d bytes (got %zu)",
                             PINPOOL_MANIFEST_TENSOR_NAME_MAX, n);
    if (pub->nt == PINPOOL_MANIFEST_MAX_TENSORS)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "a manifest holds at most %u tensors",
                             PINPOOL_MANIFEST_MAX_TENSORS);
    if (pinpool_dtype_size(d->dtype) == 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': unknown dtype %" PRId32,
                             d->name, d->dtype);
    if (d->ndim > PINPOOL_MANIFEST_MAX_DIMS)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': %" PRIu32 " dimensions (at "
                             "most %d)", d->name, d->ndim, PINPOOL_MANIFEST_MAX_DIMS);
    if ((d->flags & ~(PINPOOL_TENSOR_STRIDED | PINPOOL_TENSOR_ALIAS)) != 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': unknown flags 0x%" PRIx32,
                             d->name, d->flags);
    memset(&t, 0, sizeof(t));
    t.dtype = (uint32_t)d->dtype;
    t.ndim = d->ndim;
    for (uint32_t i = 0; i < d->ndim; i++) {
        if (d->shape[i] < 0 || ((d->flags & PINPOOL_TENSOR_STRIDED) && d->strides[i] < 0))
            return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': dimension %" PRIu32 " has "
                                 "a negative size or stride", d->name, i);
        t.shape[i] = d->shape[i];
        t.strides[i] = d->strides[i];
    }
    if (!(d->flags & PINPOOL_TENSOR_STRIDED))
        pinpool__contiguous_strides(t.ndim, t.shape, t.strides);
    if (!pinpool__tensor_span(d->dtype, t.ndim, t.shape, t.strides, &span))
        return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': its shape overflows 64 bits",
                             d->name);
    t.nbytes = d->nbytes != 0 ? d->nbytes : span;
    if (span > t.nbytes)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': its shape and strides reach %"
                             PRIu64 " bytes, more than the nbytes %" PRIu64 " given", d->name, span,
                             t.nbytes);
    uint32_t alias = UINT32_MAX;
    if (d->flags & PINPOOL_TENSOR_ALIAS) {
        if (d->alias_of >= pub->nt)
            return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': alias_of %" PRIu32 " is not "
                                 "an earlier tensor (%" PRIu32 " so far)", d->name, d->alias_of,
                                 pub->nt);
        alias = d->alias_of;
        while (pub->alias[alias] != UINT32_MAX)
            alias = pub->alias[alias];
        if (t.nbytes > pub->t[alias].nbytes)
            return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': %" PRIu64 " bytes do not fit "
                                 "in the %" PRIu64 " of '%.100s' it aliases", d->name, t.nbytes,
                                 pub->t[alias].nbytes, pub->names[alias]);
        if (pinpool_dtype_size(d->dtype) > 1 &&
            pub->align % (uint64_t)pinpool_dtype_size(d->dtype) != 0)
            return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': alignment", d->name);
    }
    if (pub->set_cap == 0 || (pub->nt + 1) * 2 > pub->set_cap)
        if (set_grow(pub) != 0)
            return pinpool__fail(ctx, -ENOMEM, "out of memory");
    uint32_t slot = name_slot(pub, d->name, n, &found);
    if (found)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s' is added twice", d->name);
    if (pub->nt == pub->cap) {
        uint32_t cap = pub->cap ? 2 * pub->cap : 64;
        pinpool__mtensor_t *nt = realloc(pub->t, cap * sizeof(*nt));
        if (nt != NULL)
            pub->t = nt;
        char **nn = realloc(pub->names, cap * sizeof(*nn));
        if (nn != NULL)
            pub->names = nn;
        uint32_t *na = realloc(pub->alias, cap * sizeof(*na));
        if (na != NULL)
            pub->alias = na;
        if (nt == NULL || nn == NULL || na == NULL)
            return pinpool__fail(ctx, -ENOMEM, "out of memory");
        pub->cap = cap;
    }
    char *copy = strdup(d->name);
    if (copy == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    t.name_len = (uint32_t)n;
    pub->t[pub->nt] = t;
    pub->names[pub->nt] = copy;
    pub->alias[pub->nt] = alias;
    pub->set[slot] = pub->nt + 1;
    if (index != NULL)
        *index = pub->nt;
    pub->nt++;
    return 0;
}

/* Free (or, once released, remove) every segment made so far. */
static void free_segments(pinpool_publish_t *pub)
{
    for (uint32_t i = 0; i < pub->nseg; i++)
        if (pub->segs[i].slice_id != 0) {
            pinpool_free(pub->ctx, pub->segs[i].slice_id, NULL);
            pub->segs[i].slice_id = 0;
        }
}

int pinpool_manifest_alloc(pinpool_publish_t *pub)
{
    uint64_t at = 0;
    uint32_t seg = 0;
    int rc = 0;

    if (pub == NULL)
        return -EINVAL;
    pinpool_ctx_t *ctx = pub->ctx;
    if (pub->allocated)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "the segments of '%s' version %" PRIu64 " are "
                             "allocated already", pub->name, pub->version);
    /* Lay out: in order, aligned; a new segment when one would pass segment_bytes. */
    uint64_t *ends = calloc(PINPOOL_MANIFEST_MAX_SEGMENTS, sizeof(*ends));
    if (ends == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    for (uint32_t i = 0; i < pub->nt; i++) {
        pinpool__mtensor_t *t = &pub->t[i];
        if (t->nbytes == 0) {
            t->segment = 0;
            t->offset = 0;
            continue;
        }
        if (pub->alias[i] != UINT32_MAX) {
            t->segment = pub->t[pub->alias[i]].segment;
            t->offset = pub->t[pub->alias[i]].offset;
            continue;
        }
        uint64_t off = (at + pub->align - 1) & ~(pub->align - 1);
        if (pub->seg_bytes != 0 && off > 0 && off + t->nbytes > pub->seg_bytes) {
            if (seg + 1 == PINPOOL_MANIFEST_MAX_SEGMENTS) {
                free(ends);
                return pinpool__fail(ctx, PINPOOL_EINVAL, "more than %u segments: raise "
                                     "segment_bytes", PINPOOL_MANIFEST_MAX_SEGMENTS);
            }
            seg++;
            off = 0;
        }
        t->segment = seg;
        t->offset = off;
        at = off + t->nbytes;
        ends[seg] = at;
    }
    pub->nseg = at == 0 && seg == 0 ? 0 : seg + 1;
    pub->segs = calloc(pub->nseg > 0 ? pub->nseg : 1, sizeof(*pub->segs));
    if (pub->segs == NULL) {
        free(ends);
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    }
    for (uint32_t s = 0; s < pub->nseg && rc == 0; s++) {
        pinpool__mseg_t *sg = &pub->segs[s];
        bool spill = (pub->flags & PINPOOL_MANIFEST_SPILLABLE) != 0;
        pinpool_alloc_opts_t o = {.device_id = pub->device,
                                  .alignment = pub->align > 256 ? pub->align : 0,
                                  .tag = sg->key,
                                  .flags = spill ? 0 : PINPOOL_ALLOC_KEEP};
        pinpool_slice_t sl;
        sg->size = ends[s];
        seg_tag(sg->key, pub->name, pub->version, s);
        if (spill)
            o.tag = "manifest"; /* a label only: the slice is released at commit */
        rc = pinpool_alloc(ctx, sg->size, &o, &sl);
        if (rc == PINPOOL_EEXIST)
            rc = pinpool__fail(ctx, PINPOOL_EBUSY, "segment %" PRIu32 " of '%s' version %" PRIu64
                               " (kept slice '%s') exists already: another publisher made it "
                               "(pinpool_manifest_collect frees a dead one's)", s, pub->name,
                               pub->version, sg->key);
        if (rc == 0) {
            sg->slice_id = sl.id;
            sg->addr = (uint64_t)(uintptr_t)sl.ptr;
        }
    }
    free(ends);
    if (rc != 0) {
        free_segments(pub);
        free(pub->segs);
        pub->segs = NULL;
        pub->nseg = 0;
        return rc;
    }
    pub->allocated = true;
    return 0;
}

int pinpool_manifest_dest(pinpool_publish_t *pub, uint32_t index, pinpool_tensor_t *out)
{
    if (pub == NULL)
        return -EINVAL;
    if (out == NULL || index >= pub->nt || !pub->allocated)
        return pinpool__fail(pub->ctx, PINPOOL_EINVAL, "%s", out == NULL ? "out must not be NULL"
                             : !pub->allocated ? "pinpool_manifest_alloc first"
                                               : "no such tensor index");
    const pinpool__mtensor_t *t = &pub->t[index];
    memset(out, 0, sizeof(*out));
    out->name = pub->names[index];
    out->dtype = (int32_t)t->dtype;
    out->ndim = t->ndim;
    memcpy(out->shape, t->shape, sizeof(out->shape));
    memcpy(out->strides, t->strides, sizeof(out->strides));
    out->segment = t->segment;
    out->offset = t->offset;
    out->nbytes = t->nbytes;
    out->device_id = pub->device;
    if (t->nbytes > 0)
        out->ptr = (void *)(uintptr_t)(pub->segs[t->segment].addr + t->offset);
    return 0;
}

int pinpool_manifest_write(pinpool_publish_t *pub, uint32_t index, const void *src, uint64_t bytes)
{
    pinpool_tensor_t t;
    int rc;

    if (pub == NULL)
        return -EINVAL;
    rc = pinpool_manifest_dest(pub, index, &t);
    if (rc != 0)
        return rc;
    if (bytes > t.nbytes || (src == NULL && bytes > 0))
        return pinpool__fail(pub->ctx, PINPOOL_EINVAL, "tensor '%.100s' holds %" PRIu64 " bytes; "
                             "%" PRIu64 " given", t.name, t.nbytes, bytes);
    if (bytes == 0)
        return 0;
    if (pub->device < 0) {
        memcpy(t.ptr, src, bytes);
        return 0;
    }
#ifdef PINPOOL_HAVE_CUDA
    CUcontext saved;
    rc = cuda_enter(pub->ctx, pub->device, &saved);
    if (rc != 0)
        return rc;
    CUresult cr = ipc_cu.cuMemcpyHtoD((CUdeviceptr)(uintptr_t)t.ptr, src, bytes);
    cuda_leave(saved);
    if (cr != CUDA_SUCCESS) {
        char b[160];
        return pinpool__fail(pub->ctx, PINPOOL_ECUDA, "tensor '%.100s': %s", t.name,
                             ipc_cuda_strerror(cr, "cuMemcpyHtoD", b, sizeof(b)));
    }
    return 0;
#else
    return pinpool__fail(pub->ctx, PINPOOL_ECUDA, "this libpinpool was built without CUDA");
#endif
}

void pinpool_manifest_abort(pinpool_publish_t *pub)
{
    char key[KEY_MAX];

    if (pub == NULL)
        return;
    free_segments(pub);
    unrecord(pub->ctx, pub->name, pub->version);
    mkey(key, pub->name, pub->version, "~pub");
    remove_quiet(pub->ctx, key);
    pub_free(pub);
}

/* Hash every tensor (aliases of the same length share their base's hash). */
static int pub_hash(pinpool_publish_t *pub)
{
    pinpool__hjob_t *jobs = calloc(pub->nt > 0 ? pub->nt : 1, sizeof(*jobs));
    uint32_t *job_of = calloc(pub->nt > 0 ? pub->nt : 1, sizeof(*job_of));
    uint32_t n = 0;
    int rc;

    if (jobs == NULL || job_of == NULL) {
        free(jobs);
        free(job_of);
        return pinpool__fail(pub->ctx, -ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < pub->nt; i++) {
        const pinpool__mtensor_t *t = &pub->t[i];
        uint32_t a = pub->alias[i];
        job_of[i] = UINT32_MAX;
        if (t->nbytes == 0)
            continue;
        if (a != UINT32_MAX && pub->t[a].nbytes == t->nbytes && job_of[a] != UINT32_MAX) {
            job_of[i] = job_of[a];
            continue;
        }
        jobs[n].addr = pub->segs[t->segment].addr + t->offset;
        jobs[n].nbytes = t->nbytes;
        job_of[i] = n++;
    }
    rc = pinpool__hash_many(pub->ctx, pub->device, jobs, n, pub->threads);
    for (uint32_t i = 0; rc == 0 && i < pub->nt; i++)
        pub->t[i].hash = job_of[i] != UINT32_MAX ? jobs[job_of[i]].hash : 0;
    free(jobs);
    free(job_of);
    return rc;
}

int pinpool_manifest_commit(pinpool_publish_t *pub, uint64_t *version)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    name_rec_t *r = NULL;
    char key[KEY_MAX];
    uint32_t parts = 0;
    int rc;

    if (pub == NULL)
        return -EINVAL;
    pinpool_ctx_t *ctx = pub->ctx;
    bool spill = (pub->flags & PINPOOL_MANIFEST_SPILLABLE) != 0;
    if (!pub->allocated) {
        rc = pinpool__fail(ctx, PINPOOL_EINVAL, "pinpool_manifest_alloc before the commit");
        goto fail;
    }
    if (!(pub->flags & PINPOOL_MANIFEST_NO_HASH)) {
        rc = pub_hash(pub);
        if (rc != 0)
            goto fail;
    }
    pinpool__menc_t enc = {
        .name = pub->name, .meta = pub->meta, .meta_len = pub->meta_len,
        .version = pub->version, .created_ns = now_unix_ns(), .device = pub->device,
        .placement = spill ? PINPOOL_MANIFEST_RELEASED : PINPOOL_MANIFEST_KEPT,
        .hash_algo = (pub->flags & PINPOOL_MANIFEST_NO_HASH) ? PINPOOL__HASH_NONE : PINPOOL__HASH_XXH3,
        .nseg = pub->nseg, .nt = pub->nt, .segs = pub->segs, .t = pub->t,
        .names = (const char *const *)pub->names,
    };
    rc = pinpool__manifest_encode(&enc, &bytes, &len);
    if (rc == 0 && len > PINPOOL_MANIFEST_MAX_BYTES)
        rc = PINPOOL_EINVAL;
    if (rc != 0) {
        rc = pinpool__fail(ctx, rc, "'%s': the manifest does not fit the format (%zu bytes; at "
                           "most %llu)", pub->name, len, (unsigned long long)PINPOOL_MANIFEST_MAX_BYTES);
        goto fail;
    }
    r = malloc(sizeof(*r));
    if (r == NULL) {
        rc = pinpool__fail(ctx, -ENOMEM, "out of memory");
        goto fail;
    }
    rc = rec_read(ctx, pub->name, r);
    if (rc != 0)
        goto fail;
    rec_entry_t *e = rec_find(r, pub->version);
    if (e == NULL || e->state != REC_PENDING) {
        rc = pinpool__fail(ctx, PINPOOL_EBUSY, "'%s' version %" PRIu64 " is no longer recorded as "
                           "being published (another process collected or rewrote the name)",
                           pub->name, pub->version);
        goto fail;
    }
    if (spill) {
        /* The record first learns how many released segments to clean up. */
        e->nseg = pub->nseg;
        rc = rec_write(ctx, pub->name, r);
        for (uint32_t s = 0; rc == 0 && s < pub->nseg; s++) {
            released_key(key, pub->segs[s].key);
            rc = pinpool_release(ctx, pub->segs[s].slice_id, key, 0);
            if (rc == 0)
                pub->segs[s].slice_id = 0;
        }
        if (rc != 0)
            goto fail;
    }
    for (size_t off = 0; off < len; off += PINPOOL__MAN_PART, parts++) {
        char suffix[16] = "";
        if (parts > 0)
            snprintf(suffix, sizeof(suffix), "+%" PRIu32, parts);
        mkey(key, pub->name, pub->version, suffix);
        rc = pinpool_put(ctx, key, bytes + off, len - off < PINPOOL__MAN_PART ? len - off
                                                                             : PINPOOL__MAN_PART, 0);
        if (rc != 0)
            goto fail;
    }
    /* The commit point. */
    e = rec_find(r, pub->version);
    e->state = REC_COMMITTED;
    e->nseg = pub->nseg;
    e->parts = (uint16_t)parts;
    r->current = pub->version > r->current ? pub->version : r->current;
    rc = rec_write(ctx, pub->name, r);
    if (rc != 0)
        goto fail;
    for (uint32_t s = 0; s < pub->nseg; s++)
        if (pub->segs[s].slice_id != 0)
            pinpool_detach(ctx, pub->segs[s].slice_id); /* kept: stays in the daemon */
    mkey(key, pub->name, pub->version, "~pub");
    remove_quiet(ctx, key);
    if (version != NULL)
        *version = pub->version;
    free(bytes);
    free(r);
    pub_free(pub);
    return 0;

fail: {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", pinpool_errmsg(ctx));
        for (uint32_t s = 0; s < pub->nseg; s++) /* released ones: remove the objects */
            if (pub->segs[s].slice_id == 0 && spill) {
                released_key(key, pub->segs[s].key);
                remove_quiet(ctx, key);
            }
        if (parts > 0)
            remove_manifest_parts(ctx, pub->name, pub->version, parts);
        free(bytes);
        free(r);
        pinpool_manifest_abort(pub);
        return pinpool__fail(ctx, rc, "%s", msg);
    }
}

/* ---- readers -------------------------------------------------------------------------------- */

int pinpool_manifest_open(pinpool_ctx_t *ctx, const char *name, uint64_t version,
                          pinpool_manifest_t **out)
{
    pinpool_manifest_t *m = NULL;
    name_rec_t *r = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    char key[KEY_MAX], msg[512];
    int rc = pinpool__check(ctx, false, name != NULL && out != NULL, "name and out");

    if (rc != 0)
        return rc;
    if (pinpool__manifest_check_name(name, msg, sizeof(msg)) != 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "%s", msg);
    r = malloc(sizeof(*r));
    if (r == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    rc = rec_read(ctx, name, r);
    if (rc != 0)
        goto fail;
    if (!r->found || r->current == 0) {
        rc = pinpool__fail(ctx, PINPOOL_ENOKEY, "no manifest named '%s' is committed%s", name,
                           r->found ? " yet (one is being published)" : "");
        goto fail;
    }
    uint64_t v = version != 0 ? version : r->current;
    rec_entry_t *e = rec_find(r, v);
    if (e == NULL || e->state != REC_COMMITTED) {
        rc = pinpool__fail(ctx, PINPOOL_ENOKEY, "manifest '%s' has no committed version %" PRIu64
                           " (the current one is %" PRIu64 ")%s", name, v, r->current,
                           e != NULL ? ": it is being published" : "");
        goto fail;
    }
    mkey(key, name, v, "");
    rc = get_obj(ctx, key, PINPOOL__MAN_PART, &buf, &len);
    if (rc == PINPOOL_ENOKEY || rc == -EMSGSIZE)
        rc = pinpool__fail(ctx, -EBADMSG, "manifest '%s' version %" PRIu64 " is committed but its "
                           "object '%s' is %s", name, v, key, rc == PINPOOL_ENOKEY ? "gone" : "too large");
    if (rc != 0)
        goto fail;
    if (len >= 24 && memcmp(buf, PINPOOL__MAN_MAGIC, 8) == 0 && rr64(buf + 16) > len &&
        rr64(buf + 16) <= PINPOOL_MANIFEST_MAX_BYTES && len == PINPOOL__MAN_PART) {
        size_t total = (size_t)rr64(buf + 16);
        uint8_t *all = realloc(buf, total);
        if (all == NULL) {
            rc = pinpool__fail(ctx, -ENOMEM, "out of memory for a %zu-byte manifest", total);
            goto fail;
        }
        buf = all;
        for (uint32_t k = 1; len < total; k++) {
            uint8_t *part = NULL;
            size_t plen = 0;
            char suffix[16];
            snprintf(suffix, sizeof(suffix), "+%" PRIu32, k);
            mkey(key, name, v, suffix);
            rc = get_obj(ctx, key, PINPOOL__MAN_PART, &part, &plen);
            if (rc == 0 && plen != (total - len < PINPOOL__MAN_PART ? total - len : PINPOOL__MAN_PART))
                rc = -EMSGSIZE;
            if (rc != 0) {
                free(part);
                rc = pinpool__fail(ctx, -EBADMSG, "manifest '%s' version %" PRIu64 ": its part '%s' "
                                   "is %s", name, v, key, rc == PINPOOL_ENOKEY ? "gone" : "not whole");
                goto fail;
            }
            memcpy(buf + len, part, plen);
            len += plen;
            free(part);
        }
    }
    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        rc = pinpool__fail(ctx, -ENOMEM, "out of memory");
        goto fail;
    }
    rc = pinpool__manifest_parse(buf, len, m, msg, sizeof(msg));
    if (rc != 0) {
        rc = pinpool__fail(ctx, rc, "manifest '%s' version %" PRIu64 ": %s", name, v, msg);
        goto fail;
    }
    if (strcmp(m->name, name) != 0 || m->version != v) {
        pinpool__manifest_clear(m);
        rc = pinpool__fail(ctx, -EBADMSG, "the object '" PREFIX "%s@%" PRIu64 "' holds manifest "
                           "'%s' version %" PRIu64, name, v, m->name, m->version);
        goto fail;
    }
    m->buf = buf;
    m->len = len;
    m->ctx = ctx;
    free(r);
    *out = m;
    return 0;

fail:
    free(m);
    free(buf);
    free(r);
    return rc;
}

/* Let segment s go (as attach held it). */
static void seg_release(pinpool_manifest_t *m, uint32_t s)
{
    pinpool__mseg_t *sg = &m->segs[s];
    char key[KEY_MAX];

    switch (sg->held) {
    case PINPOOL__SEG_KEPT:
        kept_put(m->ctx, sg->key, false);
        break;
    case PINPOOL__SEG_ACQUIRED:
        /* Back to the daemon under its key; if that fails the slice stays
         * this context's (freed with it) and the message says so. */
        released_key(key, sg->key);
        if (pinpool_release(m->ctx, sg->slice_id, key, 0) != 0)
            pinpool__fail(m->ctx, PINPOOL_EINTERNAL, "segment '%s' could not be released again: %s",
                          sg->key, pinpool_errmsg(m->ctx));
        break;
    case PINPOOL__SEG_COPY:
#ifdef PINPOOL_HAVE_CUDA
        {
            CUcontext saved;
            if (cuda_enter(m->ctx, m->copy_device, &saved) == 0) {
                ipc_cu.cuMemFree((CUdeviceptr)sg->addr);
                cuda_leave(saved);
            }
        }
#endif
        break;
    default:
        break;
    }
    sg->held = PINPOOL__SEG_NONE;
    sg->addr = 0;
    sg->slice_id = 0;
}

/* Map segment s for the CPU (cpu) or CUDA copies only: kept (attach) or
 * released (acquire, waiting for another reader up to ACQUIRE_WAIT_MS). */
static int seg_map(pinpool_manifest_t *m, uint32_t s, bool cpu)
{
    pinpool__mseg_t *sg = &m->segs[s];
    int rc;

    if (m->placement == PINPOOL_MANIFEST_KEPT) {
        uint64_t size = 0;
        int32_t dev = 0;
        rc = kept_get(m->ctx, sg->key, cpu, &sg->addr, &size, &dev);
        if (rc == PINPOOL_ENOENT)
            return pinpool__fail(m->ctx, PINPOOL_ENOKEY, "segment %" PRIu32 " of manifest '%s' version "
                                 "%" PRIu64 " (kept slice '%s') is gone: the daemon restarted, or the "
                                 "version was dropped; publish it again", s, m->name, m->version,
                                 sg->key);
        if (rc != 0)
            return rc;
        sg->held = PINPOOL__SEG_KEPT;
        if ((size != 0 && size < sg->size) || dev != m->device) {
            seg_release(m, s);
            return pinpool__fail(m->ctx, -EBADMSG, "segment %" PRIu32 " of manifest '%s' version %"
                                 PRIu64 ": the slice kept under '%s' is %" PRIu64 " bytes on device %"
                                 PRId32 "; the manifest says %" PRIu64 " on %" PRId32, s, m->name,
                                 m->version, sg->key, size, dev, sg->size, m->device);
        }
        return 0;
    }
    pinpool_slice_t sl;
    char key[KEY_MAX];
    released_key(key, sg->key);
    for (int waited = 0;; waited += 50) {
        rc = pinpool_acquire(m->ctx, key, cpu ? 0 : PINPOOL_ALLOC_GPU_ONLY, &sl);
        if (rc != PINPOOL_ENOKEY || waited >= ACQUIRE_WAIT_MS)
            break;
        usleep(50000);
    }
    if (rc == PINPOOL_ENOKEY)
        return pinpool__fail(m->ctx, PINPOOL_ENOKEY, "segment %" PRIu32 " of manifest '%s' version %"
                             PRIu64 " (object '%s') is not there: another reader holds it (a "
                             "released manifest has one reader at a time; waited %d s), or it is "
                             "gone", s, m->name, m->version, key, ACQUIRE_WAIT_MS / 1000);
    if (rc != 0)
        return rc;
    sg->held = PINPOOL__SEG_ACQUIRED;
    sg->slice_id = sl.id;
    sg->addr = (uint64_t)(uintptr_t)sl.ptr;
    if (sl.size < sg->size) {
        seg_release(m, s);
        return pinpool__fail(m->ctx, -EBADMSG, "segment %" PRIu32 " of manifest '%s' version %" PRIu64
                             ": the object '%s' is %" PRIu64 " bytes; the manifest says %" PRIu64, s,
                             m->name, m->version, key, sl.size, sg->size);
    }
    return 0;
}

/* Host segment s, mapped GPU-only, into cuMemAlloc memory on GPU device. */
static int seg_copy(pinpool_manifest_t *m, uint32_t s, int32_t device)
{
#ifdef PINPOOL_HAVE_CUDA
    pinpool__mseg_t *sg = &m->segs[s];
    CUdeviceptr d = 0;
    CUcontext saved;
    CUresult cr;
    char b[160];
    int rc = seg_map(m, s, false);

    if (rc != 0)
        return rc;
    const void *host = (const void *)(uintptr_t)sg->addr;
    rc = cuda_enter(m->ctx, device, &saved);
    if (rc != 0) {
        seg_release(m, s);
        return rc;
    }
    cr = ipc_cu.cuMemAlloc(&d, sg->size);
    if (cr == CUDA_SUCCESS) {
        cr = ipc_cu.cuMemcpyHtoD(d, host, sg->size);
        if (cr != CUDA_SUCCESS) {
            ipc_cuda_strerror(cr, "cuMemcpyHtoD", b, sizeof(b));
            ipc_cu.cuMemFree(d);
        }
    } else {
        ipc_cuda_strerror(cr, "cuMemAlloc", b, sizeof(b));
    }
    cuda_leave(saved);
    seg_release(m, s); /* the host copy goes back (kept: detached; released: released) */
    if (cr != CUDA_SUCCESS)
        return pinpool__fail(m->ctx, PINPOOL_ECUDA, "copying segment %" PRIu32 " of '%s' (%" PRIu64
                             " bytes) to GPU %" PRId32 ": %s", s, m->name, sg->size, device, b);
    sg->held = PINPOOL__SEG_COPY;
    sg->addr = d;
    return 0;
#else
    (void)s;
    (void)device;
    return pinpool__fail(m->ctx, PINPOOL_ECUDA, "this libpinpool was built without CUDA");
#endif
}

static void marker_key(const pinpool_manifest_t *m, char *key, const char *client_id)
{
    char suffix[64 + 4];
    snprintf(suffix, sizeof(suffix), "~r:%s", client_id);
    mkey(key, m->name, m->version, suffix);
}

static void detach_all(pinpool_manifest_t *m)
{
    for (uint32_t s = 0; s < m->nseg; s++)
        seg_release(m, s);
    if (m->marked) {
        char key[KEY_MAX];
        marker_key(m, key, pinpool_client_id(m->ctx));
        marker_put(m->ctx, key);
        m->marked = false;
    }
    m->attached = -2;
    m->copy_device = -1;
}

int pinpool_manifest_attach(pinpool_manifest_t *m, int32_t device)
{
    int rc = 0;

    if (m == NULL)
        return -EINVAL;
    if (m->ctx == NULL)
        return PINPOOL_EINVAL; /* no context to say more on: pinpool_manifest_parse's */
    pinpool_ctx_t *ctx = m->ctx;
    rc = pinpool__check(ctx, true, true, NULL);
    if (rc != 0)
        return rc;
    if (m->attached != -2)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "manifest '%s' version %" PRIu64 " is attached "
                             "already (close it, open it again)", m->name, m->version);
    bool copy = m->device == PINPOOL_HOST && device >= 0;
    if (copy) {
#ifdef PINPOOL_HAVE_CUDA
        char why[256];
        if (ipc_cuda_load(why, sizeof(why)) != 0)
            return pinpool__fail(ctx, PINPOOL_ECUDA, "copying manifest '%s' to GPU %" PRId32 ": %s",
                                 m->name, device, why);
#else
        return pinpool__fail(ctx, PINPOOL_ECUDA, "copying manifest '%s' to a GPU: this libpinpool "
                             "was built without CUDA", m->name);
#endif
    }
    if (device != m->device && !copy)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "manifest '%s' version %" PRIu64 " is kept on %s%.0"
                             PRId32 "; attach it %s%.0" PRId32 " (a host manifest can also be copied "
                             "to a GPU)", m->name, m->version, m->device < 0 ? "the host" : "GPU ",
                             m->device, m->device < 0 ? "with PINPOOL_HOST" : "on that GPU",
                             m->device);
    if (!copy && m->nseg > 0) {
        char key[KEY_MAX];
        marker_key(m, key, pinpool_client_id(ctx));
        rc = marker_get(ctx, key); /* before mapping: a drop that runs now sees us */
        if (rc != 0)
            return rc;
        m->marked = true;
    }
    if (copy)
        m->copy_device = device;
    for (uint32_t s = 0; s < m->nseg && rc == 0; s++)
        rc = copy ? seg_copy(m, s, device) : seg_map(m, s, true);
    if (rc != 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", pinpool_errmsg(ctx));
        detach_all(m);
        return pinpool__fail(ctx, rc, "%s", msg);
    }
    m->attached = device;
    return 0;
}

int pinpool_manifest_verify(pinpool_manifest_t *m, uint32_t *bad)
{
    pinpool__hjob_t *jobs;
    uint32_t *idx, n = 0;
    int rc;

    if (m == NULL || m->ctx == NULL)
        return PINPOOL_EINVAL;
    pinpool_ctx_t *ctx = m->ctx;
    if (m->attached == -2)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "attach manifest '%s' before verifying it", m->name);
    if (m->hash_algo == PINPOOL__HASH_NONE)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "manifest '%s' version %" PRIu64 " was published "
                             "without hashes", m->name, m->version);
    jobs = calloc(m->nt > 0 ? m->nt : 1, sizeof(*jobs));
    idx = calloc(m->nt > 0 ? m->nt : 1, sizeof(*idx));
    if (jobs == NULL || idx == NULL) {
        free(jobs);
        free(idx);
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < m->nt; i++)
        if (m->t[i].nbytes > 0) {
            jobs[n].addr = m->segs[m->t[i].segment].addr + m->t[i].offset;
            jobs[n].nbytes = m->t[i].nbytes;
            idx[n++] = i;
        }
    rc = pinpool__hash_many(ctx, m->attached, jobs, n, 0);
    for (uint32_t k = 0; rc == 0 && k < n; k++) {
        const pinpool__mtensor_t *t = &m->t[idx[k]];
        if (jobs[k].hash != t->hash) {
            if (bad != NULL)
                *bad = idx[k];
            rc = pinpool__fail(ctx, -EBADMSG, "tensor '%.200s' of manifest '%s' version %" PRIu64
                               ": its bytes hash to %016" PRIx64 ", the manifest says %016" PRIx64
                               " (written after publishing?)", m->names + t->name_off, m->name,
                               m->version, jobs[k].hash, t->hash);
        }
    }
    free(jobs);
    free(idx);
    return rc;
}

void pinpool_manifest_close(pinpool_manifest_t *m)
{
    if (m == NULL)
        return;
    if (m->ctx != NULL && m->attached != -2)
        detach_all(m);
    pinpool__manifest_clear(m);
    free(m->buf);
    free(m);
}

/* ---- versions ------------------------------------------------------------------------------- */

int pinpool_manifest_versions(pinpool_ctx_t *ctx, const char *name, uint64_t *versions, uint32_t cap,
                              uint32_t *n, uint64_t *current)
{
    name_rec_t *r;
    char msg[256];
    uint32_t k = 0;
    int rc = pinpool__check(ctx, false, name != NULL && (versions != NULL || cap == 0),
                            "name and versions");

    if (rc != 0)
        return rc;
    if (pinpool__manifest_check_name(name, msg, sizeof(msg)) != 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "%s", msg);
    r = malloc(sizeof(*r));
    if (r == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    rc = rec_read(ctx, name, r);
    if (rc == 0 && (!r->found || r->current == 0))
        rc = pinpool__fail(ctx, PINPOOL_ENOKEY, "no manifest named '%s' is committed", name);
    if (rc == 0) {
        /* entries are kept in the order they were begun: versions ascend */
        for (uint32_t i = 0; i < r->n; i++)
            if (r->e[i].state == REC_COMMITTED) {
                if (k < cap)
                    versions[k] = r->e[i].version;
                k++;
            }
        if (n != NULL)
            *n = k;
        if (current != NULL)
            *current = r->current;
    }
    free(r);
    return rc;
}

/* PINPOOL_EBUSY naming the first live session with a marker on version v. */
static int busy_check(pinpool_ctx_t *ctx, const char *name, uint64_t v, const clients_t *c)
{
    char key[KEY_MAX], suffix[80];

    for (uint32_t i = 0; i < c->info.num_usage; i++) {
        const pinpool_client_usage_t *u = &c->info.usage[i];
        if (!is_session(u))
            continue;
        snprintf(suffix, sizeof(suffix), "~r:%s", u->client_id);
        mkey(key, name, v, suffix);
        int rc = pinpool_exists(ctx, key);
        if (rc < 0)
            return rc;
        if (rc == 1)
            return pinpool__fail(ctx, PINPOOL_EBUSY, "manifest '%s' version %" PRIu64 " is attached "
                                 "by client %s (pid %" PRId32 "%s): it must close it first (or drop "
                                 "with PINPOOL_MANIFEST_FORCE)", name, v, u->client_id, u->pid,
                                 strcmp(u->client_id, pinpool_client_id(ctx)) == 0 ? ", this one" : "");
    }
    return 0;
}

/* Remove the reader markers of live sessions on version v (a forced drop). */
static void remove_markers(pinpool_ctx_t *ctx, const char *name, uint64_t v, const clients_t *c)
{
    char key[KEY_MAX], suffix[80];

    for (uint32_t i = 0; i < c->info.num_usage; i++)
        if (is_session(&c->info.usage[i])) {
            snprintf(suffix, sizeof(suffix), "~r:%s", c->info.usage[i].client_id);
            mkey(key, name, v, suffix);
            remove_quiet(ctx, key);
        }
}

int pinpool_manifest_drop(pinpool_ctx_t *ctx, const char *name, uint64_t version, uint32_t flags)
{
    name_rec_t *r = NULL;
    clients_t c = {.have = false};
    char msg[256], who[64];
    uint64_t *drop = NULL;
    uint32_t *nsegs = NULL, *nparts = NULL, ndrop = 0;
    int rc = pinpool__check(ctx, true, name != NULL, "name");

    if (rc != 0)
        return rc;
    if (pinpool__manifest_check_name(name, msg, sizeof(msg)) != 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "%s", msg);
    if ((flags & ~PINPOOL_MANIFEST_FORCE) != 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "unknown flags 0x%" PRIx32, flags);
    r = malloc(sizeof(*r));
    drop = malloc(PINPOOL_MANIFEST_MAX_VERSIONS * sizeof(*drop));
    nsegs = malloc(PINPOOL_MANIFEST_MAX_VERSIONS * sizeof(*nsegs));
    nparts = malloc(PINPOOL_MANIFEST_MAX_VERSIONS * sizeof(*nparts));
    if (r == NULL || drop == NULL || nsegs == NULL || nparts == NULL) {
        rc = pinpool__fail(ctx, -ENOMEM, "out of memory");
        goto out;
    }
    rc = rec_read(ctx, name, r);
    if (rc == 0)
        rc = clients_read(ctx, &c);
    if (rc != 0)
        goto out;
    if (!r->found) {
        rc = pinpool__fail(ctx, PINPOOL_ENOKEY, "no manifest named '%s'", name);
        goto out;
    }
    for (uint32_t i = 0; i < r->n; i++) {
        rec_entry_t *e = &r->e[i];
        if (version != 0 && e->version != version)
            continue;
        if (e->state == REC_PENDING) {
            if (version != 0) {
                rc = pinpool__fail(ctx, PINPOOL_ENOKEY, "'%s' version %" PRIu64 " is not committed "
                                   "(pinpool_manifest_collect frees a dead publisher's)", name, version);
                goto out;
            }
            if (!(flags & PINPOOL_MANIFEST_FORCE) &&
                publisher_alive(ctx, name, e->version, &c, who, sizeof(who))) {
                rc = pinpool__fail(ctx, PINPOOL_EBUSY, "'%s' version %" PRIu64 " is being published "
                                   "by client %s", name, e->version, who);
                goto out;
            }
        } else {
            if (version != 0 && e->version == r->current) {
                rc = pinpool__fail(ctx, PINPOOL_EINVAL, "version %" PRIu64 " is the current one of "
                                   "'%s': publish a newer one first, or drop the whole name (version 0)",
                                   version, name);
                goto out;
            }
            if (!(flags & PINPOOL_MANIFEST_FORCE)) {
                rc = busy_check(ctx, name, e->version, &c);
                if (rc != 0)
                    goto out;
            }
        }
        drop[ndrop] = e->version;
        nparts[ndrop] = e->parts;
        nsegs[ndrop++] = e->nseg;
    }
    if (ndrop == 0 && version != 0) {
        rc = pinpool__fail(ctx, PINPOOL_ENOKEY, "manifest '%s' has no version %" PRIu64, name, version);
        goto out;
    }
    /* The record stops naming them first; then their bytes go. */
    for (uint32_t k = 0; k < ndrop; k++)
        rec_del(r, drop[k]);
    if (version == 0)
        r->current = 0; /* readers see no manifest from here on */
    rc = rec_write(ctx, name, r);
    if (rc != 0)
        goto out;
    for (uint32_t k = 0; k < ndrop; k++) {
        remove_markers(ctx, name, drop[k], &c);
        int frc = free_version(ctx, name, drop[k], nsegs[k], nparts[k], &c);
        rc = rc != 0 ? rc : frc;
    }
    if (version == 0) {
        char key[KEY_MAX];
        mkey(key, name, 0, "!a");
        remove_quiet(ctx, key);
        mkey(key, name, 0, "!b");
        remove_quiet(ctx, key);
    }
out:
    clients_free(&c);
    free(r);
    free(drop);
    free(nsegs);
    free(nparts);
    return rc;
}
