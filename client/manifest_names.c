/*
 * manifest_names.c - where tensor manifests live in the daemon (pinpool.h,
 * "Tensor manifests"): the keys and kept tags of a name's objects, the name
 * record (written alternately under NAME!a and NAME!b with a generation,
 * because a Put that replaces an object drops the old one before the new
 * one is in: a reader between the two would find nothing, and a Put that
 * failed then would lose it; a reader takes the newer whole copy), the
 * sessions and kept tags GetPoolInfo lists, and the per-context registry of
 * kept segments mapped here (a kept slice can be mapped once per context, so
 * two manifests of one version share it) and of reader markers.
 * Publishing is manifest_publish.c's, reading manifest_read.c's, a name's
 * versions manifest_versions.c's, the format manifest.c's.
 * Owns: the record's layout, the registry (a pinpool__ext_t of the context).
 * Never: frees a kept slice that another manifest of this context still
 * uses (the registry counts them); leaves the caller's current CUDA context
 * changed (pinpool__cuda_enter / _leave).
 * Locking: the registry's mutex guards the registry only and is never held
 * across a call to the daemon.
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

#define TAG_FMT "wt:%016" PRIx64 ".%" PRIx64 ".%" PRIu32
#define REC_MAGIC "PPWNAME1"
#define REC_HDR 48u /* magic, format, n, current, generation, checksum, top */
#define REC_ENTRY 16u
#define REC_BYTES (REC_HDR + REC_ENTRY * PINPOOL_MANIFEST_MAX_VERSIONS)

/* ---- small helpers ------------------------------------------------------------------- */

/* "weights:NAME" + "@V" (v > 0) + suffix. */
void pinpool__mkey(char *buf, const char *name, uint64_t v, const char *suffix)
{
    if (v == 0)
        snprintf(buf, PINPOOL__KEY_MAX, PINPOOL__PREFIX "%s%s", name, suffix);
    else
        snprintf(buf, PINPOOL__KEY_MAX, PINPOOL__PREFIX "%s@%" PRIu64 "%s", name, v, suffix);
}

void pinpool__seg_tag(char *buf, const char *name, uint64_t v, uint32_t seg)
{
    snprintf(buf, PINPOOL__MAN_KEY, TAG_FMT, pinpool__xxh3(name, strlen(name)), v, seg);
}

/* The object key of a released (SPILLABLE) segment: "weights:" + its tag. */
void pinpool__released_key(char *buf, const char *tag)
{
    snprintf(buf, PINPOOL__KEY_MAX, PINPOOL__PREFIX "%s", tag);
}

/* Get key into a new buffer of at most max bytes: 0 and *out / *len, or the
 * error (PINPOOL_ENOKEY when absent; -EMSGSIZE when larger than max). */
int pinpool__get_obj(pinpool_ctx_t *ctx, const char *key, size_t max, uint8_t **out, size_t *len)
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
int pinpool__remove_quiet(pinpool_ctx_t *ctx, const char *key)
{
    int rc = pinpool_remove(ctx, key);
    return rc == PINPOOL_ENOKEY ? 0 : rc;
}

#ifdef PINPOOL_HAVE_CUDA
/* Make device's primary context current, saving the caller's in *saved. */
int pinpool__cuda_enter(pinpool_ctx_t *ctx, int32_t device, CUcontext *saved)
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

void pinpool__cuda_leave(CUcontext saved)
{
    ipc_cu.cuCtxSetCurrent(saved);
}
#endif

/* ---- live sessions and kept tags (GetPoolInfo) ---------------------------------------- */

int pinpool__clients_read(pinpool_ctx_t *ctx, clients_t *c)
{
    int rc = pinpool_pool_info(ctx, &c->info);

    c->have = rc == 0;
    return rc;
}

void pinpool__clients_free(clients_t *c)
{
    if (c->have)
        pinpool_pool_info_free(&c->info);
    c->have = false;
}

/* A client with a session (a live process), not a kept slice's holder. */
bool pinpool__is_session(const pinpool_client_usage_t *u)
{
    return u->pid != 0 && strncmp(u->client_id, "kept:", 5) != 0;
}

const pinpool_client_usage_t *pinpool__live(const clients_t *c, const char *client_id)
{
    for (uint32_t i = 0; i < c->info.num_usage; i++)
        if (pinpool__is_session(&c->info.usage[i]) && strcmp(c->info.usage[i].client_id, client_id) == 0)
            return &c->info.usage[i];
    return NULL;
}

/* The version and segment of a kept tag of name's hash, false for another tag. */
bool pinpool__tag_of(const char *client_id, uint64_t name_hash, uint64_t *v, uint32_t *seg)
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
    char key[PINPOOL__KEY_MAX]; /* a kept tag, or a reader marker's key */
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
int pinpool__kept_get(pinpool_ctx_t *ctx, const char *tag, bool cpu, uint64_t *addr, uint64_t *size,
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
void pinpool__kept_put(pinpool_ctx_t *ctx, const char *tag, bool free_it)
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
int pinpool__marker_get(pinpool_ctx_t *ctx, const char *key)
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

void pinpool__marker_put(pinpool_ctx_t *ctx, const char *key)
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

/* Decode one copy; false when it is not whole. */
static bool rec_decode(const uint8_t *b, size_t len, name_rec_t *r)
{
    if (len < REC_HDR || memcmp(b, REC_MAGIC, 8) != 0 || pinpool__rd32(b + 8) != 1)
        return false;
    uint32_t n = pinpool__rd32(b + 12);
    if (n > PINPOOL_MANIFEST_MAX_VERSIONS || len != REC_HDR + (size_t)REC_ENTRY * n)
        return false;
    uint8_t *copy = malloc(len);
    if (copy == NULL)
        return false;
    memcpy(copy, b, len);
    memset(copy + 32, 0, 8);
    bool ok = pinpool__xxh3(copy, len) == pinpool__rd64(b + 32);
    free(copy);
    if (!ok)
        return false;
    r->n = n;
    r->current = pinpool__rd64(b + 16);
    r->gen = pinpool__rd64(b + 24);
    r->top = pinpool__rd64(b + 40);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *p = b + REC_HDR + REC_ENTRY * i;
        r->e[i].version = pinpool__rd64(p);
        r->e[i].nseg = pinpool__rd32(p + 8);
        r->e[i].state = (uint16_t)(p[12] | p[13] << 8);
        r->e[i].parts = (uint16_t)(p[14] | p[15] << 8);
        if (r->e[i].version == 0 || (r->e[i].state != PINPOOL__REC_COMMITTED && r->e[i].state != PINPOOL__REC_PENDING))
            return false;
    }
    return true;
}

/* Read name's record: 0 (r->found false when there is none), or an error. */
int pinpool__rec_read(pinpool_ctx_t *ctx, const char *name, name_rec_t *r)
{
    static name_rec_t tmp_init;
    name_rec_t *tmp = malloc(sizeof(*tmp));
    char key[PINPOOL__KEY_MAX];
    bool damaged = false;
    int rc = 0;

    if (tmp == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    *r = tmp_init;
    for (char slot = 'a'; slot <= 'b'; slot++) {
        uint8_t *b = NULL;
        size_t len = 0;
        char suffix[3] = {'!', slot, '\0'};
       pinpool__mkey(key, name, 0, suffix);
        rc = pinpool__get_obj(ctx, key, REC_BYTES, &b, &len);
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
        rc = pinpool__fail(ctx, -EBADMSG, "the name record of manifest '%s' (" PINPOOL__PREFIX "%s!a/!b) is "
                           "damaged", name, name);
    return rc;
}

/* Write r as the next generation into the slot that does not hold the newest. */
int pinpool__rec_write(pinpool_ctx_t *ctx, const char *name, name_rec_t *r)
{
    size_t len = REC_HDR + (size_t)REC_ENTRY * r->n;
    uint8_t *b = calloc(1, len);
    char key[PINPOOL__KEY_MAX];
    char slot = r->found && r->slot == 'a' ? 'b' : 'a';
    char suffix[3] = {'!', slot, '\0'};
    int rc;

    if (b == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    memcpy(b, REC_MAGIC, 8);
   pinpool__wr32(b + 8, 1);
   pinpool__wr32(b + 12, r->n);
   pinpool__wr64(b + 16, r->current);
   pinpool__wr64(b + 24, r->gen + 1);
   pinpool__wr64(b + 40, r->top);
    for (uint32_t i = 0; i < r->n; i++) {
        uint8_t *p = b + REC_HDR + REC_ENTRY * i;
       pinpool__wr64(p, r->e[i].version);
       pinpool__wr32(p + 8, r->e[i].nseg);
       pinpool__wr32(p + 12, (uint32_t)r->e[i].state | (uint32_t)r->e[i].parts << 16);
    }
   pinpool__wr64(b + 32, pinpool__xxh3(b, len));
   pinpool__mkey(key, name, 0, suffix);
    rc = pinpool_put(ctx, key, b, len, 0);
    free(b);
    if (rc != 0)
        return rc;
    r->found = true;
    r->slot = slot;
    r->gen++;
    return 0;
}

rec_entry_t *pinpool__rec_find(name_rec_t *r, uint64_t v)
{
    for (uint32_t i = 0; i < r->n; i++)
        if (r->e[i].version == v)
            return &r->e[i];
    return NULL;
}

void pinpool__rec_del(name_rec_t *r, uint64_t v)
{
    rec_entry_t *e = pinpool__rec_find(r, v);
    if (e != NULL) {
        memmove(e, e + 1, (size_t)(&r->e[r->n] - (e + 1)) * sizeof(*e));
        r->n--;
    }
}

/* ---- kept slices by tag ------------------------------------------------------------- */

/* Free the slice kept under tag: through the registry when this context has
 * it mapped, else by attaching it here first. */
int pinpool__free_kept(pinpool_ctx_t *ctx, const char *tag)
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
       pinpool__kept_put(ctx, tag, true);
        return 0;
    }
    rc = pinpool_attach(ctx, tag, PINPOOL_ALLOC_GPU_ONLY, &s);
    if (rc == PINPOOL_ENOENT)
        return 0;
    if (rc != 0)
        return rc;
    return pinpool_free(ctx, s.id, NULL);
}
