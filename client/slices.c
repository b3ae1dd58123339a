/*
 * slices.c - the slices of a context (alloc, attach, acquire, release, free,
 * detach) and their mapping in this process.
 *
 * Owns: the slices this process holds (ctx->slices) and the mappings of the
 * chunk runs behind them (ctx->runs; a vmm device slice's mapping is
 * devmap.c's, which pinpool_dev_unmap/remap reach here), the ipc device pools
 * opened (ctx->devs) and
 * the address ranges of runs of sessions that ended (ctx->dead).  A run is
 * mapped once, on the first slice that needs it, and unmapped when its last
 * slice is freed.  Every call works on one session, which it holds for its
 * whole length (pinpool__conn_get): a slice is recorded only while the
 * session that made it is still the context's current one, so that nothing
 * of an ended session is mapped after pinpool_reconnect dropped it.
 * Never: frees a slice locally that the daemon still counts, or the reverse,
 * except when the daemon says the slice is gone or the session ended (then
 * everything of it is gone); asks an ended session's daemon to free or
 * release anything.
 * Locking: ctx->lock guards the slice, map, device and dead-range tables and
 * is held across a run's descriptor fetch and mapping (so that a run is
 * mapped once); the fd socket's lock (session.c) is taken inside it.  gRPC
 * calls run without either.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctx.h"
#include "pinpool.pb-c.h"
#include "rbtree.h"

static int run_cmp(const pinpool__run_t *a, const pinpool__run_t *b)
{
    if (a->first != b->first)
        return a->first < b->first ? -1 : 1;
    return a->n < b->n ? -1 : a->n > b->n;
}

static int slice_cmp(const pinpool__slice_t *a, const pinpool__slice_t *b)
{
    return a->id < b->id ? -1 : a->id > b->id;
}

RB_GENERATE_STATIC(pinpool__run_tree, pinpool__run, node, run_cmp)
RB_GENERATE_STATIC(pinpool__slice_tree, pinpool__slice, node, slice_cmp)
#include "rbtree_end.h"

typedef pinpool__run_t run_map_t;
typedef pinpool__slice_t slice_rec_t;

/* ---- mappings (lock held) ----------------------------------------------------------- */

static void unmap_run(pinpool_ctx_t *ctx, const pinpool__conn_t *c, run_map_t *m)
{
    RB_REMOVE(pinpool__run_tree, &ctx->runs, m);
    c->host->unmap(m->addr, c->chunk_size, m->n);
    c->host->release(m->addr, (uint64_t)m->n * c->chunk_size);
    free(m);
}

/* The mapping of run [first, first + n), made if needed. */
static int get_run(pinpool_ctx_t *ctx, pinpool__conn_t *c, uint64_t id, uint32_t first,
                   uint32_t n, unsigned access, run_map_t **out)
{
    run_map_t key = {.first = first, .n = n}, *m;
    uint64_t bytes = (uint64_t)n * c->chunk_size;
    int *fds = NULL;
    int rc;

    m = RB_FIND(pinpool__run_tree, &ctx->runs, &key);
    if (m != NULL) {
        if ((m->access & access) != access) { /* mapped GPU-only; now the CPU too */
            rc = c->host->access(m->addr, bytes, m->access | access);
            if (rc != 0)
                return pinpool__fail(ctx, rc,
                                     "cannot widen the access to slice %" PRIu64 ": %s", id,
                                     pinpool_strerror(rc));
            m->access |= access;
        }
        *out = m;
        return 0;
    }
    m = calloc(1, sizeof(*m));
    fds = calloc(n, sizeof(*fds));
    if (m == NULL || fds == NULL) {
        rc = pinpool__fail(ctx, -ENOMEM, "out of memory");
        goto fail;
    }
    m->first = first;
    m->n = n;
    rc = pinpool__conn_fetch_fds(ctx, c, id, first, n, fds);
    if (rc != 0)
        goto fail;
    rc = c->host->reserve(bytes, &m->addr);
    if (rc != 0) {
        for (uint32_t i = 0; i < n; i++)
            close(fds[i]);
        rc = pinpool__fail(ctx, rc, "cannot reserve address space for %" PRIu32 " chunks: %s", n,
                           pinpool_strerror(rc));
        goto fail;
    }
    /* Backends without an access() op map with every access at once. */
    m->access = c->host->access != NULL ? access : IPC_MAP_CPU | IPC_MAP_GPU;
    rc = c->host->map(m->addr, c->chunk_size, fds, n, access);
    if (rc != 0) {
        c->host->release(m->addr, bytes);
        rc = pinpool__fail(ctx, rc, "cannot map the chunks of slice %" PRIu64 ": %s", id,
                           pinpool_strerror(rc));
        goto fail;
    }
    free(fds);
    RB_INSERT(pinpool__run_tree, &ctx->runs, m);
    *out = m;
    return 0;

fail:
    free(fds);
    free(m);
    return rc;
}

/* This process's address of the device pool of GPU device (opened once). */
static int device_base(pinpool_ctx_t *ctx, int32_t device, const ProtobufCBinaryData *handle,
                       uint64_t *base)
{
    pinpool__dev_pool_t *free_slot = NULL;
    char why[256];
    int rc;

    if (handle->len != IPC_HANDLE_BYTES)
        return pinpool__fail(ctx, PINPOOL_EPROTO,
                             "the daemon sent a %zu-byte CUDA IPC handle", handle->len);
    for (int i = 0; i < PINPOOL_MAX_DEVICES; i++) {
        pinpool__dev_pool_t *d = &ctx->devs[i];
        if (d->open && d->device == device && memcmp(d->handle, handle->data, IPC_HANDLE_BYTES) == 0) {
            *base = d->base;
            return 0;
        }
        if (!d->open && free_slot == NULL)
            free_slot = d;
    }
    if (free_slot == NULL)
        return pinpool__fail(ctx, PINPOOL_ENODEV, "too many device pools open");
    rc = ipc_devmem_open(device, handle->data, base, why, sizeof(why));
    if (rc != 0)
        return pinpool__fail(ctx, rc, "%s", why);
    free_slot->open = true;
    free_slot->device = device;
    memcpy(free_slot->handle, handle->data, IPC_HANDLE_BYTES);
    free_slot->base = *base;
    return 0;
}

/* Forget slice rec locally (lock held). */
static void drop_slice(pinpool_ctx_t *ctx, const pinpool__conn_t *c, slice_rec_t *rec)
{
    RB_REMOVE(pinpool__slice_tree, &ctx->slices, rec);
    if (rec->map != NULL && --rec->map->refs == 0)
        unmap_run(ctx, c, rec->map);
    pinpool__devmap_close(rec->dev);
    free(rec);
}

/* Map the slice resp describes and record it; fills *out.  On failure the
 * slice is not recorded (the caller decides whether to free it). */
static int take_slice(pinpool_ctx_t *ctx, pinpool__conn_t *c,
                      const Pinpool__V1__AllocatePoolMemoryResponse *resp, uint32_t flags,
                      pinpool_slice_t *out)
{
    slice_rec_t *rec;
    run_map_t *m = NULL;
    uint64_t base = 0;
    void *ptr = NULL;
    /* a vmm device slice comes as chunks, an ipc one by its CUDA IPC handle */
    bool vmm = resp->device_id >= 0 && resp->cuda_ipc_handle.len == 0;
    int rc = 0;

    if (resp->device_id < 0 && (resp->n_chunks == 0 || resp->chunk_size != c->chunk_size))
        return pinpool__fail(ctx, PINPOOL_EPROTO,
                             "the daemon's reply for slice %" PRIu64 " has no chunks",
                             resp->slice_id);
    if (vmm && (resp->n_chunks == 0 ||
                resp->chunks[0]->chunk_index > UINT32_MAX - resp->n_chunks))
        return pinpool__fail(ctx, PINPOOL_EPROTO, "the daemon's reply for device slice %"
                             PRIu64 " has no chunks", resp->slice_id);
    rec = calloc(1, sizeof(*rec));
    if (rec == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    rec->id = resp->slice_id;
    pthread_mutex_lock(&ctx->lock);
    if (ctx->conn != c) { /* read under ctx->lock too: pinpool_reconnect swaps it so */
        rc = pinpool__fail(ctx, PINPOOL_ESESSION, "%s (the context reconnected during this "
                           "call: its slice was the old session's)", ctx->lost_msg);
    } else if (RB_FIND(pinpool__slice_tree, &ctx->slices, rec) != NULL) {
        rc = pinpool__fail(ctx, PINPOOL_EEXIST,
                           "slice %" PRIu64 " is already mapped in this process", resp->slice_id);
    } else if (vmm) {
        rc = pinpool__devmap_open(ctx, c, resp->slice_id, resp->device_id,
                                  resp->chunks[0]->chunk_index, (uint32_t)resp->n_chunks,
                                  resp->chunk_size, resp->chunks[0]->offset,
                                  (flags & PINPOOL_ATTACH_WRITABLE) != 0, &rec->dev, &ptr);
    } else if (resp->device_id >= 0) {
        rc = device_base(ctx, resp->device_id, &resp->cuda_ipc_handle, &base);
        ptr = (void *)(uintptr_t)(base + resp->start_offset);
    } else {
        unsigned access = IPC_MAP_GPU | ((flags & PINPOOL_ALLOC_GPU_ONLY) ? 0 : IPC_MAP_CPU);
        rc = get_run(ctx, c, resp->slice_id, resp->chunks[0]->chunk_index,
                     (uint32_t)resp->n_chunks, access, &m);
        if (rc == 0) {
            m->refs++;
            ptr = (char *)m->addr + resp->chunks[0]->offset;
        }
    }
    if (rc == 0) {
        rec->map = m;
        RB_INSERT(pinpool__slice_tree, &ctx->slices, rec);
    }
    pthread_mutex_unlock(&ctx->lock);
    if (rc != 0) {
        free(rec);
        return rc;
    }
    out->id = resp->slice_id;
    out->ptr = ptr;
    out->size = resp->size_bytes;
    out->device_id = resp->device_id;
    out->start_offset = resp->start_offset;
    return 0;
}

void pinpool__drop_mappings(pinpool_ctx_t *ctx, const pinpool__conn_t *c, bool keep_reserved)
{
    slice_rec_t *s, *snext;
    run_map_t *m, *mnext;

    RB_FOREACH_SAFE(s, pinpool__slice_tree, &ctx->slices, snext) {
        RB_REMOVE(pinpool__slice_tree, &ctx->slices, s);
        pinpool__devmap_close(s->dev); /* its range too: nothing of it is kept */
        free(s);
    }
    RB_FOREACH_SAFE(m, pinpool__run_tree, &ctx->runs, mnext) {
        uint64_t bytes = (uint64_t)m->n * c->chunk_size;
        if (keep_reserved && ctx->ndead == ctx->capdead) {
            uint32_t cap = ctx->capdead != 0 ? ctx->capdead * 2 : 16;
            pinpool__dead_range_t *v = realloc(ctx->dead, cap * sizeof(*v));
            if (v != NULL) {
                ctx->dead = v;
                ctx->capdead = cap;
            }
        }
        if (keep_reserved && ctx->ndead < ctx->capdead) {
            RB_REMOVE(pinpool__run_tree, &ctx->runs, m);
            c->host->unmap(m->addr, c->chunk_size, m->n); /* still reserved: PROT_NONE */
            ctx->dead[ctx->ndead++] = (pinpool__dead_range_t){
                .addr = m->addr, .bytes = bytes, .host = c->host, .gen = c->gen};
            free(m);
        } else {
            unmap_run(ctx, c, m);
        }
    }
    for (int i = 0; i < PINPOOL_MAX_DEVICES; i++)
        if (ctx->devs[i].open) {
            ipc_devmem_close(ctx->devs[i].device, ctx->devs[i].base);
            ctx->devs[i].open = false;
        }
    if (!keep_reserved) {
        for (uint32_t i = 0; i < ctx->ndead; i++)
            ctx->dead[i].host->release(ctx->dead[i].addr, ctx->dead[i].bytes);
        free(ctx->dead);
        ctx->dead = NULL;
        ctx->ndead = ctx->capdead = 0;
    }
}

uint64_t pinpool__dead_gen(pinpool_ctx_t *ctx, const void *ptr)
{
    const char *p = ptr;
    uint64_t gen = 0;

    pthread_mutex_lock(&ctx->lock);
    for (uint32_t i = 0; i < ctx->ndead && gen == 0; i++)
        if (p >= (const char *)ctx->dead[i].addr &&
            p < (const char *)ctx->dead[i].addr + ctx->dead[i].bytes)
            gen = ctx->dead[i].gen;
    pthread_mutex_unlock(&ctx->lock);
    return gen;
}

/* ---- the calls ---------------------------------------------------------------------- */

static int rpc_free(pinpool_ctx_t *ctx, pinpool__conn_t *c, uint64_t id, uint64_t *freed)
{
    Pinpool__V1__FreePoolMemoryRequest req = PINPOOL__V1__FREE_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__FreePoolMemoryResponse *resp = NULL;
    int rc;

    req.client_id = c->client_id;
    req.slice_id = id;
    rc = pinpool__call_on(ctx, c, PINPOOL__M_FREE, &req.base, &resp);
    if (rc != 0)
        return rc;
    if (freed != NULL)
        *freed = resp->freed_bytes;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

static int rpc_release(pinpool_ctx_t *ctx, pinpool__conn_t *c, uint64_t id, const char *key,
                       uint64_t ttl_ms)
{
    Pinpool__V1__ReleasePoolMemoryRequest req = PINPOOL__V1__RELEASE_POOL_MEMORY_REQUEST__INIT;

    req.client_id = c->client_id;
    req.slice_id = id;
    req.key = (char *)key;
    req.ttl_ms = ttl_ms;
    return pinpool__call_on(ctx, c, PINPOOL__M_RELEASE, &req.base, NULL);
}

/*
 * A call whose reply describes a slice (Allocate, Attach, Acquire): the slice
 * is mapped and recorded and *out filled.  When it cannot be mapped here, the
 * daemon gets it back unless it is a kept slice (attach) or the session
 * ended (then the daemon freed it already): freed, or released again under
 * give_back_key (acquire, so that the object is not lost); the mapping's
 * message stays the one pinpool_errmsg says.
 */
static int slice_call(pinpool_ctx_t *ctx, pinpool__conn_t *c, pinpool__method_t m,
                      const ProtobufCMessage *req, uint32_t flags, pinpool_slice_t *out,
                      const char *give_back_key)
{
    Pinpool__V1__AllocatePoolMemoryResponse *resp = NULL;
    int rc = pinpool__call_on(ctx, c, m, req, &resp);

    if (rc != 0)
        return rc;
    rc = take_slice(ctx, c, resp, flags, out);
    if (rc != 0 && m != PINPOOL__M_ATTACH && rc != PINPOOL_ESESSION) {
        char msg[PINPOOL__MSG_LEN];

        snprintf(msg, sizeof(msg), "%s", pinpool__last_msg());
        if (give_back_key != NULL)
            rpc_release(ctx, c, resp->slice_id, give_back_key, 0);
        else
            rpc_free(ctx, c, resp->slice_id, NULL);
        pinpool__fail(ctx, rc, "%s", msg);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

/* PINPOOL_ENOENT unless slice id is one of this context's. */
static int own_slice(pinpool_ctx_t *ctx, uint64_t id)
{
    slice_rec_t key = {.id = id};
    bool found;

    pthread_mutex_lock(&ctx->lock);
    found = RB_FIND(pinpool__slice_tree, &ctx->slices, &key) != NULL;
    pthread_mutex_unlock(&ctx->lock);
    if (!found)
        return pinpool__fail(ctx, PINPOOL_ENOENT, "slice %" PRIu64 " is not one of this context's",
                             id);
    return 0;
}

/* Forget slice id here (its run unmapped with its last slice); false when it
 * was not recorded (another thread may have forgotten it first, or the
 * context reconnected: then it is gone with its session). */
static bool forget_slice(pinpool_ctx_t *ctx, pinpool__conn_t *c, uint64_t id)
{
    slice_rec_t key = {.id = id}, *rec = NULL;

    pthread_mutex_lock(&ctx->lock);
    if (ctx->conn == c)
        rec = RB_FIND(pinpool__slice_tree, &ctx->slices, &key);
    if (rec != NULL)
        drop_slice(ctx, c, rec);
    pthread_mutex_unlock(&ctx->lock);
    return rec != NULL;
}

/* The start of each call below: a reference to the session, and the checks. */
#define BEGIN(ctx, c, rc, args_ok, args)                                                     \
    pinpool__conn_t *c = (ctx) != NULL ? pinpool__conn_get(ctx) : NULL;                       \
    int rc = pinpool__check_on((ctx), c, true, (args_ok), (args))

static int end(pinpool_ctx_t *ctx, pinpool__conn_t *c, int rc)
{
    pinpool__conn_put(ctx, c);
    return rc;
}

int pinpool__alloc_gen(pinpool_ctx_t *ctx, uint64_t size, const pinpool_alloc_opts_t *opts,
                       pinpool_slice_t *out, uint64_t *gen)
{
    Pinpool__V1__AllocatePoolMemoryRequest req = PINPOOL__V1__ALLOCATE_POOL_MEMORY_REQUEST__INIT;
    BEGIN(ctx, c, rc, out != NULL, "out");

    if (rc != 0)
        return end(ctx, c, rc);
    if (gen != NULL)
        *gen = c->gen;
    req.client_id = c->client_id;
    req.device_id = opts != NULL ? opts->device_id : PINPOOL_HOST;
    req.size_bytes = size;
    req.alignment = opts != NULL ? opts->alignment : 0;
    req.tag = opts != NULL && opts->tag != NULL ? (char *)opts->tag : (char *)"";
    req.keep = opts != NULL && (opts->flags & PINPOOL_ALLOC_KEEP) != 0;
    /* The maker of a slice writes it; attach reads unless asked. */
    rc = slice_call(ctx, c, PINPOOL__M_ALLOCATE, &req.base,
                    (opts != NULL ? opts->flags : 0) | PINPOOL_ATTACH_WRITABLE, out, NULL);
    return end(ctx, c, rc);
}

int pinpool_alloc(pinpool_ctx_t *ctx, uint64_t size, const pinpool_alloc_opts_t *opts,
                  pinpool_slice_t *out)
{
    return pinpool__alloc_gen(ctx, size, opts, out, NULL);
}

/* Attach (the slice kept under name) or acquire (the object under name). */
static int slice_by_name(pinpool_ctx_t *ctx, pinpool__method_t m, const char *name,
                         uint32_t flags, pinpool_slice_t *out)
{
    Pinpool__V1__AttachPoolMemoryRequest attach = PINPOOL__V1__ATTACH_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__AcquirePoolMemoryRequest acquire = PINPOOL__V1__ACQUIRE_POOL_MEMORY_REQUEST__INIT;
    BEGIN(ctx, c, rc, name != NULL && out != NULL,
          m == PINPOOL__M_ATTACH ? "tag and out" : "key and out");

    if (rc != 0)
        return end(ctx, c, rc);
    attach.client_id = acquire.client_id = c->client_id;
    attach.tag = acquire.key = (char *)name;
    rc = slice_call(ctx, c, m, m == PINPOOL__M_ATTACH ? &attach.base : &acquire.base, flags, out,
                    m == PINPOOL__M_ACQUIRE ? name : NULL);
    return end(ctx, c, rc);
}

int pinpool_attach(pinpool_ctx_t *ctx, const char *tag, uint32_t flags, pinpool_slice_t *out)
{
    return slice_by_name(ctx, PINPOOL__M_ATTACH, tag, flags, out);
}

int pinpool_acquire(pinpool_ctx_t *ctx, const char *key, uint32_t flags, pinpool_slice_t *out)
{
    return slice_by_name(ctx, PINPOOL__M_ACQUIRE, key, flags, out);
}

/* pinpool_free; with gen (not 0), only a slice of that session: an older
 * session's is gone with it (its id may name another slice now). */
static int free_slice(pinpool_ctx_t *ctx, uint64_t slice_id, uint64_t *freed_bytes, uint64_t gen)
{
    BEGIN(ctx, c, rc, true, NULL);

    if (rc == 0 && gen != 0 && c->gen != gen)
        rc = pinpool__fail(ctx, PINPOOL_ESESSION, "slice %" PRIu64 " was of an earlier session "
                           "of this context (%" PRIu64 "; now %" PRIu64 "): it is gone with it",
                           slice_id, gen, c->gen);
    if (rc == 0)
        rc = own_slice(ctx, slice_id);
    if (rc == 0)
        rc = rpc_free(ctx, c, slice_id, freed_bytes);
    if (rc == 0 || rc == PINPOOL_ENOENT) /* else the daemon still counts it: keep the mapping */
        forget_slice(ctx, c, slice_id);
    return end(ctx, c, rc);
}

int pinpool_free(pinpool_ctx_t *ctx, uint64_t slice_id, uint64_t *freed_bytes)
{
    return free_slice(ctx, slice_id, freed_bytes, 0);
}

int pinpool__free_gen(pinpool_ctx_t *ctx, uint64_t slice_id, uint64_t gen)
{
    return free_slice(ctx, slice_id, NULL, gen);
}

int pinpool_release(pinpool_ctx_t *ctx, uint64_t slice_id, const char *key, uint64_t ttl_ms)
{
    BEGIN(ctx, c, rc, key != NULL, "key");

    if (rc == 0)
        rc = own_slice(ctx, slice_id);
    if (rc == 0)
        rc = rpc_release(ctx, c, slice_id, key, ttl_ms);
    if (rc == 0)
        forget_slice(ctx, c, slice_id);
    return end(ctx, c, rc);
}

int pinpool_detach(pinpool_ctx_t *ctx, uint64_t slice_id)
{
    BEGIN(ctx, c, rc, true, NULL);

    if (rc == 0 && !forget_slice(ctx, c, slice_id))
        rc = pinpool__fail(ctx, PINPOOL_ENOENT, "slice %" PRIu64 " is not mapped in this process",
                           slice_id);
    return end(ctx, c, rc);
}

/* pinpool_dev_unmap / pinpool_dev_remap: slice id's device mapping, under the lock. */
static int dev_op(pinpool_ctx_t *ctx, uint64_t id, bool remap)
{
    slice_rec_t key = {.id = id}, *rec = NULL;
    BEGIN(ctx, c, rc, true, NULL);

    if (rc != 0)
        return end(ctx, c, rc);
    pthread_mutex_lock(&ctx->lock);
    if (ctx->conn == c) /* else the slice went with its session */
        rec = RB_FIND(pinpool__slice_tree, &ctx->slices, &key);
    if (rec == NULL)
        rc = pinpool__fail(ctx, PINPOOL_ENOENT, "slice %" PRIu64 " is not mapped in this process",
                           id);
    else if (rec->dev == NULL)
        rc = pinpool__fail(ctx, PINPOOL_EINVAL, "slice %" PRIu64 " is not a device slice of a "
                           "vmm device pool (host slices and --device-backend ipc pools stay "
                           "mapped)", id);
    else
        rc = remap ? pinpool__devmap_remap(ctx, c, rec->dev)
                   : pinpool__devmap_unmap(ctx, rec->dev);
    pthread_mutex_unlock(&ctx->lock);
    return end(ctx, c, rc);
}

int pinpool_dev_unmap(pinpool_ctx_t *ctx, uint64_t slice_id)
{
    return dev_op(ctx, slice_id, false);
}

int pinpool_dev_remap(pinpool_ctx_t *ctx, uint64_t slice_id)
{
    return dev_op(ctx, slice_id, true);
}

int pinpool_free_all(pinpool_ctx_t *ctx, uint64_t *freed_bytes)
{
    slice_rec_t *rec, *next;
    BEGIN(ctx, c, rc, true, NULL);

    if (rc == 0)
        rc = rpc_free(ctx, c, 0, freed_bytes);
    if (rc != 0)
        return end(ctx, c, rc);
    pthread_mutex_lock(&ctx->lock);
    if (ctx->conn == c)
        RB_FOREACH_SAFE(rec, pinpool__slice_tree, &ctx->slices, next)
            drop_slice(ctx, c, rec);
    pthread_mutex_unlock(&ctx->lock);
    return end(ctx, c, 0);
}
