/*
 * service.c - the PinPool gRPC methods: protobuf in, srv_* calls, protobuf out.
 *
 * Owns: turning requests into srv_* calls and their results into replies, and
 * which methods act for a client: those whose row has authorize as its check
 * (every request with a client_id field).
 * Never: holds state of its own or takes srv's lock directly.
 * Each reply is built in one heap block (struct *_reply) freed by its done().
 */
#include "service.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pinpool.h"
#include "pinpool.pb-c.h"
#include "pool.h"
#include "srv.h"

#define METHOD(name) "/pinpool.v1.PinPool/" name

/*
 * The check of every method whose request names a client (its client_id
 * field, found through the message's descriptor): may the caller act for
 * it?  A session's id needs the session's token (srv_authorize).
 */
static int authorize(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, "client_id");
    const char *id;

    if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED) {
        snprintf(reply->text, sizeof(reply->text), "%s names no client to authorize",
                 m->descriptor->name);
        return PINPOOL_EINTERNAL;
    }
    id = *(char *const *)(const void *)((const char *)m + f->offset);
    return srv_authorize(app, id != NULL ? id : "", reply->token, reply->text,
                         sizeof(reply->text));
}

/* ---- AllocatePoolMemory ------------------------------------------------------ */

typedef struct alloc_reply {
    Pinpool__V1__AllocatePoolMemoryResponse msg;
    uint8_t handle[IPC_HANDLE_BYTES];
    Pinpool__V1__ChunkRef **refs;
    Pinpool__V1__ChunkRef chunks[];
} alloc_reply_t;

/* The reply describing slice s (for AllocatePoolMemory and AttachPoolMemory). */
static int build_slice_reply(srv_t *srv, const srv_slice_t *s, rpc_reply_t *reply)
{
    const pool_slice_info_t *si = &s->info;
    uint32_t nchunks = s->device_id < 0 ? si->nchunks : 0;
    uint64_t chunk = srv_config(srv)->chunk_size;
    alloc_reply_t *r;

    r = calloc(1, sizeof(*r) + nchunks * sizeof(r->chunks[0]));
    if (r != NULL && nchunks > 0 && (r->refs = calloc(nchunks, sizeof(*r->refs))) == NULL) {
        free(r);
        r = NULL;
    }
    if (r == NULL) {
        snprintf(reply->text, sizeof(reply->text), "out of memory building the reply");
        return -ENOMEM;
    }
    pinpool__v1__allocate_pool_memory_response__init(&r->msg);
    r->msg.slice_id = si->id;
    r->msg.start_offset = si->offset;
    r->msg.size_bytes = si->size;
    r->msg.extent_bytes = si->extent;
    r->msg.memory_ptr = s->memory_ptr;
    r->msg.chunk_size = chunk;
    r->msg.device_id = s->device_id;
    r->msg.host_backend = (char *)srv_host_backend(srv)->name;
    if (s->device_id >= 0) {
        memcpy(r->handle, s->ipc_handle, sizeof(r->handle));
        r->msg.cuda_ipc_handle.data = r->handle;
        r->msg.cuda_ipc_handle.len = sizeof(r->handle);
    }
    r->msg.n_chunks = nchunks;
    r->msg.chunks = r->refs;

    /* A host slice's bytes, chunk by chunk. */
    uint64_t at = si->offset, left = si->size;
    for (uint32_t i = 0; i < nchunks; i++) {
        Pinpool__V1__ChunkRef *c = &r->chunks[i];
        uint64_t in = at % chunk;

        pinpool__v1__chunk_ref__init(c);
        c->chunk_index = si->first_chunk + i;
        c->offset = in;
        c->length = left < chunk - in ? left : chunk - in;
        at += c->length;
        left -= c->length;
        r->refs[i] = c;
    }
    reply->msg = &r->msg.base;
    return 0;
}

/* The reply for a slice the caller now owns; if it cannot be built, the slice
 * goes back rather than stay allocated to a caller who never heard of it. */
static int reply_or_free(srv_t *srv, const char *client_id, const srv_slice_t *s,
                         rpc_reply_t *reply)
{
    int rc = build_slice_reply(srv, s, reply);

    if (rc != 0) {
        uint64_t freed;
        uint32_t n;
        char ignored[64];
        srv_free(srv, client_id, s->info.id, &freed, &n, ignored, sizeof(ignored));
    }
    return rc;
}

static int handle_alloc(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__AllocatePoolMemoryRequest *req = (const void *)m;
    srv_t *srv = app;
    srv_slice_t s;
    int rc;

    rc = srv_alloc(srv, req->client_id, req->device_id, req->size_bytes, req->alignment, req->tag,
                   req->keep, &s, reply->text, sizeof(reply->text));
    if (rc != 0)
        return rc;
    return reply_or_free(srv, req->client_id, &s, reply);
}

static int handle_attach(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__AttachPoolMemoryRequest *req = (const void *)m;
    srv_slice_t s;
    int rc;

    rc = srv_attach(app, req->client_id, req->tag, &s, reply->text, sizeof(reply->text));
    return rc != 0 ? rc : build_slice_reply(app, &s, reply);
}

static void done_alloc(rpc_reply_t *reply)
{
    if (reply->msg != NULL) {
        alloc_reply_t *r = (alloc_reply_t *)reply->msg;
        free(r->refs);
        free(r);
    }
}

/* ---- FreePoolMemory ---------------------------------------------------------- */

static int handle_free(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__FreePoolMemoryRequest *req = (const void *)m;
    Pinpool__V1__FreePoolMemoryResponse *r;
    uint64_t freed;
    uint32_t n;
    int rc;

    rc = srv_free(app, req->client_id, req->slice_id, &freed, &n, reply->text, sizeof(reply->text));
    if (rc != 0)
        return rc;
    r = malloc(sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    pinpool__v1__free_pool_memory_response__init(r);
    r->success = 1;
    r->freed_bytes = freed;
    r->freed_slices = n;
    reply->msg = &r->base;
    return 0;
}

static void done_free(rpc_reply_t *reply)
{
    free(reply->msg);
}

/* ---- GetPoolInfo --------------------------------------------------------------- */

typedef struct info_client {
    Pinpool__V1__ClientUsage msg;
    char id[SRV_CLIENT_ID_LEN];
} info_client_t;

#define MAX_TIER_STATS 48

typedef struct info_reply {
    Pinpool__V1__GetPoolInfoResponse msg;
    Pinpool__V1__SpillInfo spill;
    srv_spill_info_t sp;
    Pinpool__V1__TierStat stats[MAX_TIER_STATS];
    Pinpool__V1__TierStat *stat_refs[MAX_TIER_STATS];
    char stat_text[MAX_TIER_STATS][2][128];
    size_t nstats;
    srv_pool_info_t info;
    Pinpool__V1__DevicePoolInfo devices[SRV_MAX_DEVICES];
    Pinpool__V1__DevicePoolInfo *device_refs[SRV_MAX_DEVICES];
    info_client_t *clients;
    Pinpool__V1__ClientUsage **refs;
    size_t n, cap;
    bool failed;
} info_reply_t;

static void add_client(const srv_client_usage_t *u, void *arg)
{
    info_reply_t *r = arg;

    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 16;
        info_client_t *c = realloc(r->clients, cap * sizeof(*c));
        if (c == NULL) {
            r->failed = true;
            return;
        }
        r->clients = c;
        r->cap = cap;
    }
    info_client_t *c = &r->clients[r->n++];
    pinpool__v1__client_usage__init(&c->msg);
    snprintf(c->id, sizeof(c->id), "%s", u->client_id);
    c->msg.bytes = u->bytes;
    c->msg.device_bytes = u->device_bytes;
    c->msg.slices = u->slices;
    c->msg.pid = u->pid;
    c->msg.uid = u->uid;
}

static void add_tier_stat(const char *name, const char *value, void *arg)
{
    info_reply_t *r = arg;
    Pinpool__V1__TierStat *t;

    if (r->nstats == MAX_TIER_STATS)
        return;
    t = &r->stats[r->nstats];
    pinpool__v1__tier_stat__init(t);
    snprintf(r->stat_text[r->nstats][0], sizeof(r->stat_text[0][0]), "%s", name);
    snprintf(r->stat_text[r->nstats][1], sizeof(r->stat_text[0][1]), "%s", value);
    t->name = r->stat_text[r->nstats][0];
    t->value = r->stat_text[r->nstats][1];
    r->stat_refs[r->nstats++] = t;
}

static void fill_spill(info_reply_t *r, srv_t *srv)
{
    Pinpool__V1__SpillInfo *s = &r->spill;
    const srv_spill_info_t *p = &r->sp;

    srv_spill_info(srv, &r->sp, add_tier_stat, r);
    pinpool__v1__spill_info__init(s);
    s->tier = (char *)p->tier;
    s->objects = p->objects;
    s->objects_resident = p->resident + p->spilling;
    s->objects_spilled = p->spilled + p->restoring;
    s->resident_bytes = p->resident_bytes;
    s->spilled_bytes_now = p->spilled_bytes_now;
    s->spills = p->spills;
    s->bytes_spilled = p->spilled_bytes;
    s->spill_failures = p->spill_failures;
    s->restores = p->restores;
    s->bytes_restored = p->restored_bytes;
    s->restore_failures = p->restore_failures;
    s->spill_gbps = p->spill_ns ? (double)p->spilled_bytes / (double)p->spill_ns : 0;
    s->restore_gbps = p->restore_ns ? (double)p->restored_bytes / (double)p->restore_ns : 0;
    s->spill_avg_ms = p->spills ? (double)p->spill_ns / 1e6 / (double)p->spills : 0;
    s->restore_avg_ms = p->restores ? (double)p->restore_ns / 1e6 / (double)p->restores : 0;
    s->expired = p->expired;
    s->low_watermark_bytes = p->low_watermark;
    s->last_error = r->sp.last_error;
    s->n_tier_stats = r->nstats;
    s->tier_stats = r->stat_refs;
    r->msg.spill = s;
}

static int handle_info(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    info_reply_t *r = calloc(1, sizeof(*r));
    srv_pool_info_t *info;

    (void)m;
    if (r == NULL)
        return -ENOMEM;
    info = &r->info;
    reply->msg = &r->msg.base;
    srv_pool_info(app, info, add_client, r);
    if (r->failed || (r->n > 0 && (r->refs = calloc(r->n, sizeof(*r->refs))) == NULL))
        return -ENOMEM;
    pinpool__v1__get_pool_info_response__init(&r->msg);
    r->msg.capacity_bytes = info->stats.capacity;
    r->msg.ready_bytes = info->stats.ready;
    r->msg.used_bytes = info->stats.used;
    r->msg.free_bytes = info->stats.free;
    r->msg.largest_free_extent = info->stats.largest_free;
    r->msg.chunk_size = info->chunk_size;
    r->msg.num_chunks = info->num_chunks;
    r->msg.num_slices = info->stats.num_slices;
    r->msg.num_clients = info->num_clients;
    r->msg.fragmentation = info->stats.fragmentation;
    r->msg.host_backend = (char *)info->host_backend;
    r->msg.mode = (char *)info->mode;
    r->msg.num_kept = info->num_kept;
    r->msg.pin_seconds = info->pin_seconds;
    r->msg.stopped_short = info->stopped_short;
    r->msg.cleaning_bytes = info->stats.dirty;
    r->msg.chunk_replacements = info->chunk_replacements;
    for (uint32_t i = 0; i < info->ndevices; i++) {
        Pinpool__V1__DevicePoolInfo *d = &r->devices[i];
        const pool_stats_t *st = &info->devices[i].stats;
        pinpool__v1__device_pool_info__init(d);
        d->device_id = info->devices[i].device_id;
        d->name = info->devices[i].name;
        d->capacity_bytes = st->capacity;
        d->used_bytes = st->used;
        d->free_bytes = st->free;
        d->largest_free_extent = st->largest_free;
        d->num_slices = st->num_slices;
        r->device_refs[i] = d;
    }
    r->msg.n_devices = info->ndevices;
    r->msg.devices = r->device_refs;
    for (size_t i = 0; i < r->n; i++) {
        r->clients[i].msg.client_id = r->clients[i].id; /* after the last realloc */
        r->refs[i] = &r->clients[i].msg;
    }
    r->msg.n_clients = r->n;
    r->msg.clients = r->refs;
    fill_spill(r, app);
    return 0;
}

static void done_info(rpc_reply_t *reply)
{
    info_reply_t *r = (info_reply_t *)reply->msg;

    if (r != NULL) {
        free(r->clients);
        free(r->refs);
        free(r);
    }
}

/* ---- GetServerConfig ----------------------------------------------------------- */

typedef struct config_entry {
    Pinpool__V1__ConfigEntry msg;
    char value[SRV_PATH_MAX + 16];
    char defval[SRV_PATH_MAX + 16];
} config_entry_t;

typedef struct config_reply {
    Pinpool__V1__GetServerConfigResponse msg;
    config_entry_t entries[32];
    Pinpool__V1__ConfigEntry *refs[32];
} config_reply_t;

static void add_entry(const char *name, const char *value, const char *defval, const char *help,
                      void *arg)
{
    config_reply_t *r = arg;
    config_entry_t *e;

    if (r->msg.n_entries == sizeof(r->entries) / sizeof(r->entries[0]))
        return;
    e = &r->entries[r->msg.n_entries];
    pinpool__v1__config_entry__init(&e->msg);
    snprintf(e->value, sizeof(e->value), "%s", value);
    snprintf(e->defval, sizeof(e->defval), "%s", defval); /* may be a caller's temporary */
    e->msg.name = (char *)name;
    e->msg.value = e->value;
    e->msg.default_value = e->defval;
    e->msg.help = (char *)help;
    r->refs[r->msg.n_entries++] = &e->msg;
}

static int handle_config(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    config_reply_t *r = calloc(1, sizeof(*r));

    (void)m;
    if (r == NULL)
        return -ENOMEM;
    pinpool__v1__get_server_config_response__init(&r->msg);
    r->msg.entries = r->refs;
    r->msg.version = (char *)PINPOOL_VERSION_STRING;
    srv_config_foreach(srv_config(app), add_entry, r);
    reply->msg = &r->msg.base;
    return 0;
}

static void done_plain(rpc_reply_t *reply)
{
    free(reply->msg);
}

/* ---- named objects ---------------------------------------------------------------- */

static int handle_release(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__ReleasePoolMemoryRequest *req = (const void *)m;
    Pinpool__V1__ReleasePoolMemoryResponse *r;
    uint64_t size = 0;
    int rc;

    rc = srv_release(app, req->client_id, req->slice_id, req->key, req->ttl_ms, &size,
                     reply->text, sizeof(reply->text));
    if (rc != 0)
        return rc;
    r = malloc(sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    pinpool__v1__release_pool_memory_response__init(r);
    r->size_bytes = size;
    reply->msg = &r->base;
    return 0;
}

static int handle_acquire(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__AcquirePoolMemoryRequest *req = (const void *)m;
    srv_slice_t s;
    int rc;

    rc = srv_acquire(app, req->client_id, req->key, &s, reply->text, sizeof(reply->text));
    if (rc != 0)
        return rc;
    return reply_or_free(app, req->client_id, &s, reply);
}

static int handle_put(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    static const Pinpool__V1__PutResponse ok = PINPOOL__V1__PUT_RESPONSE__INIT;
    const Pinpool__V1__PutRequest *req = (const void *)m;
    int rc;

    rc = srv_obj_put(app, req->key, req->data.data, req->data.len, req->ttl_ms, reply->text,
                     sizeof(reply->text));
    if (rc == 0)
        reply->msg = (ProtobufCMessage *)&ok.base;
    return rc;
}

typedef struct get_reply {
    Pinpool__V1__GetResponse msg;
    void *data;
} get_reply_t;

static int handle_get(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__GetRequest *req = (const void *)m;
    get_reply_t *r = calloc(1, sizeof(*r));
    uint64_t len = 0;
    int rc;

    if (r == NULL)
        return -ENOMEM;
    rc = srv_obj_get(app, req->key, &r->data, &len, reply->text, sizeof(reply->text));
    if (rc != 0) {
        free(r);
        return rc;
    }
    pinpool__v1__get_response__init(&r->msg);
    r->msg.data.data = r->data;
    r->msg.data.len = len;
    reply->msg = &r->msg.base;
    return 0;
}

static void done_get(rpc_reply_t *reply)
{
    get_reply_t *r = (get_reply_t *)reply->msg;

    if (r != NULL) {
        free(r->data);
        free(r);
    }
}

static int handle_exists(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__ExistsRequest *req = (const void *)m;
    Pinpool__V1__ExistsResponse *r;
    int rc = srv_obj_exists(app, req->key, reply->text, sizeof(reply->text));

    if (rc < 0)
        return rc;
    r = malloc(sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    pinpool__v1__exists_response__init(r);
    r->exists = rc == 1;
    reply->msg = &r->base;
    return 0;
}

static int handle_remove(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    static const Pinpool__V1__RemoveResponse ok = PINPOOL__V1__REMOVE_RESPONSE__INIT;
    const Pinpool__V1__RemoveRequest *req = (const void *)m;
    int rc = srv_obj_remove(app, req->key, reply->text, sizeof(reply->text));

    if (rc == 0)
        reply->msg = (ProtobufCMessage *)&ok.base;
    return rc;
}

/* Batch replies: one heap block with n results (and data for BatchGet). */
typedef struct batch_reply {
    union {
        Pinpool__V1__BatchResponse batch;
        Pinpool__V1__BatchGetResponse get;
    } msg;
    size_t n;
    Pinpool__V1__ItemResult **refs;
    Pinpool__V1__ItemResult *items;
    ProtobufCBinaryData *data;
    char (*text)[256];
} batch_reply_t;

static batch_reply_t *batch_new(size_t n, bool get)
{
    batch_reply_t *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->n = n;
    r->refs = calloc(n + 1, sizeof(*r->refs));
    r->items = calloc(n + 1, sizeof(*r->items));
    r->text = calloc(n + 1, sizeof(*r->text));
    r->data = get ? calloc(n + 1, sizeof(*r->data)) : NULL;
    if (r->refs == NULL || r->items == NULL || r->text == NULL || (get && r->data == NULL)) {
        free(r->refs);
        free(r->items);
        free(r->text);
        free(r->data);
        free(r);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        pinpool__v1__item_result__init(&r->items[i]);
        r->items[i].message = r->text[i];
        r->refs[i] = &r->items[i];
    }
    if (get) {
        pinpool__v1__batch_get_response__init(&r->msg.get);
        r->msg.get.n_results = n;
        r->msg.get.results = r->refs;
        r->msg.get.n_data = n;
        r->msg.get.data = r->data;
    } else {
        pinpool__v1__batch_response__init(&r->msg.batch);
        r->msg.batch.n_results = n;
        r->msg.batch.results = r->refs;
    }
    return r;
}

static void done_batch(rpc_reply_t *reply)
{
    batch_reply_t *r = (batch_reply_t *)reply->msg;

    if (r == NULL)
        return;
    for (size_t i = 0; r->data != NULL && i < r->n; i++)
        free(r->data[i].data);
    free(r->refs);
    free(r->items);
    free(r->text);
    free(r->data);
    free(r);
}

static int handle_batch_put(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__BatchPutRequest *req = (const void *)m;
    batch_reply_t *r = batch_new(req->n_items, false);

    if (r == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < req->n_items; i++) {
        const Pinpool__V1__PutRequest *it = req->items[i];
        r->items[i].code = srv_obj_put(app, it->key, it->data.data, it->data.len, it->ttl_ms,
                                       r->text[i], sizeof(r->text[i]));
    }
    reply->msg = &r->msg.batch.base;
    return 0;
}

static int handle_batch_get(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__BatchKeysRequest *req = (const void *)m;
    batch_reply_t *r = batch_new(req->n_keys, true);

    if (r == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < req->n_keys; i++) {
        void *data = NULL;
        uint64_t len = 0;
        r->items[i].code = srv_obj_get(app, req->keys[i], &data, &len, r->text[i],
                                       sizeof(r->text[i]));
        r->data[i].data = data;
        r->data[i].len = r->items[i].code == 0 ? len : 0;
    }
    reply->msg = &r->msg.get.base;
    return 0;
}

static int handle_batch_keys(void *app, const ProtobufCMessage *m, rpc_reply_t *reply,
                             int (*op)(srv_t *, const char *, char *, size_t))
{
    const Pinpool__V1__BatchKeysRequest *req = (const void *)m;
    batch_reply_t *r = batch_new(req->n_keys, false);

    if (r == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < req->n_keys; i++)
        r->items[i].code = op(app, req->keys[i], r->text[i], sizeof(r->text[i]));
    reply->msg = &r->msg.batch.base;
    return 0;
}

static int handle_batch_exists(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    return handle_batch_keys(app, m, reply, srv_obj_exists);
}

static int handle_batch_remove(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    return handle_batch_keys(app, m, reply, srv_obj_remove);
}

/* ---- Ping ------------------------------------------------------------------------ */

static int handle_ping(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    static const Pinpool__V1__PingResponse pong = PINPOOL__V1__PING_RESPONSE__INIT;

    (void)app;
    (void)m;
    reply->msg = (ProtobufCMessage *)&pong.base;
    return 0;
}

/* path, request, check (authorize: the request names a client), handle, done */
static const rpc_method_t methods[] = {
    {METHOD("AllocatePoolMemory"), &pinpool__v1__allocate_pool_memory_request__descriptor,
     authorize, handle_alloc, done_alloc},
    {METHOD("FreePoolMemory"), &pinpool__v1__free_pool_memory_request__descriptor, authorize,
     handle_free, done_free},
    {METHOD("GetPoolInfo"), &pinpool__v1__get_pool_info_request__descriptor, NULL, handle_info,
     done_info},
    {METHOD("GetServerConfig"), &pinpool__v1__get_server_config_request__descriptor, NULL,
     handle_config, done_plain},
    {METHOD("Ping"), &pinpool__v1__ping_request__descriptor, NULL, handle_ping, NULL},
    {METHOD("AttachPoolMemory"), &pinpool__v1__attach_pool_memory_request__descriptor, authorize,
     handle_attach, done_alloc},
    {METHOD("ReleasePoolMemory"), &pinpool__v1__release_pool_memory_request__descriptor,
     authorize, handle_release, done_plain},
    {METHOD("AcquirePoolMemory"), &pinpool__v1__acquire_pool_memory_request__descriptor,
     authorize, handle_acquire, done_alloc},
    {METHOD("Put"), &pinpool__v1__put_request__descriptor, NULL, handle_put, NULL},
    {METHOD("Get"), &pinpool__v1__get_request__descriptor, NULL, handle_get, done_get},
    {METHOD("Exists"), &pinpool__v1__exists_request__descriptor, NULL, handle_exists, done_plain},
    {METHOD("Remove"), &pinpool__v1__remove_request__descriptor, NULL, handle_remove, NULL},
    {METHOD("BatchPut"), &pinpool__v1__batch_put_request__descriptor, NULL, handle_batch_put,
     done_batch},
    {METHOD("BatchGet"), &pinpool__v1__batch_keys_request__descriptor, NULL, handle_batch_get,
     done_batch},
    {METHOD("BatchExists"), &pinpool__v1__batch_keys_request__descriptor, NULL,
     handle_batch_exists, done_batch},
    {METHOD("BatchRemove"), &pinpool__v1__batch_keys_request__descriptor, NULL,
     handle_batch_remove, done_batch},
};

const rpc_method_t *srv_service_methods(size_t *n)
{
    *n = sizeof(methods) / sizeof(methods[0]);
    return methods;
}
