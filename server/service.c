/*
 * service.c - the PinPool gRPC methods: protobuf in, srv_* calls, protobuf
 * out; the methods on slices and objects, and the table of every method
 * (GetPoolInfo and GetServerConfig are in service_info.c).
 *
 * Owns: turning requests into srv_* calls and their results into replies;
 * which of access.c's operations each method is (its check column: every
 * method is admitted by srv_access with the caller's session token and the
 * request's client_id, if it has one, before it is handled; the srv_* calls
 * then ask again for what they do, under the same hold of the lock); what
 * each method undoes when its caller never got the reply (an allocated or
 * acquired slice goes back); the bound on replies that carry object bytes
 * (Get, BatchGet: checked before any byte is copied).
 * Never: takes srv's lock directly, or waits on a gRPC queue thread: every
 * handler runs through srv_service_run (HANDLER), which makes srv's calls
 * answer SRV_EWOULDBLOCK there instead of waiting and turns that into
 * RPC_DEFER, so that rpc.c runs it again on a worker; a handler of many
 * items keeps its progress in its reply and goes on from there.
 * Each reply is built in one heap block (struct *_reply) freed by its done().
 * Locking: none of its own (srv's calls take srv's lock).
 */
#include "service_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pinpool.h"
#include "pinpool.pb-c.h"
#include "pool.h"
#include "srv.h"

#define METHOD(name) "/pinpool.v1.PinPool/" name
#define REPLY_SLACK 1024 /* bytes of a reply that are not items (headers, lengths) */
#define ITEM_OVERHEAD 24 /* bytes of each BatchGet item besides its data and message */

int srv_service_run(srv_body_fn body, void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    srv_t *srv = ((srv_service_t *)app)->srv;
    int rc;

    if (srv_gate_enter(srv) != 0) { /* a takeover: nothing done, the caller tries again */
        snprintf(reply->text, sizeof(reply->text), "the daemon is handing over to its successor "
                 "(pinpool serve --takeover); try again");
        return PINPOOL_EUPGRADE;
    }
    srv_set_nowait(!reply->may_block);
    rc = body(app, m, reply);
    srv_set_nowait(false);
    srv_gate_leave(srv);
    return rc == SRV_EWOULDBLOCK ? RPC_DEFER : rc;
}

/* handle_NAME: the row's handler, running the body NAME through srv_service_run. */
#define HANDLER(name)                                                                      \
    static int handle_##name(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)     \
    {                                                                                      \
        return srv_service_run(name, app, m, reply);                                       \
    }

/* The most bytes of objects one reply may carry. */
static uint64_t reply_budget(srv_t *srv)
{
    uint64_t max = srv_config(srv)->max_message_size;

    return max > REPLY_SLACK ? max - REPLY_SLACK : 0;
}

/*
 * The check column: may the caller make this call at all (access.c's policy
 * table, the row of op)?  The request's client_id, when it has one, is
 * found through the message's descriptor.
 */
static int authorize(void *app, srv_op_t op, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, "client_id");
    const char *id = NULL;

    if (f != NULL && (f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)) {
        snprintf(reply->text, sizeof(reply->text), "%s: client_id is not one string",
                 m->descriptor->name);
        return PINPOOL_EINTERNAL;
    }
    if (f != NULL) {
        id = *(char *const *)(const void *)((const char *)m + f->offset);
        if (id == NULL)
            id = "";
    }
    return srv_access(((srv_service_t *)app)->srv, op, reply->token, id, reply->text,
                      sizeof(reply->text));
}

/* check_OP: the check column of the methods that are op. */
#define CHECK(name, op)                                                                    \
    static int check_##name(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)      \
    {                                                                                      \
        return authorize(app, op, m, reply);                                               \
    }
CHECK(alloc, SRV_OP_ALLOC)
CHECK(free, SRV_OP_FREE)
CHECK(attach, SRV_OP_ATTACH)
CHECK(release, SRV_OP_RELEASE)
CHECK(acquire, SRV_OP_ACQUIRE)
CHECK(put, SRV_OP_PUT)
CHECK(get, SRV_OP_GET)
CHECK(exists, SRV_OP_EXISTS)
CHECK(remove, SRV_OP_REMOVE)
CHECK(info, SRV_OP_INFO)
CHECK(config, SRV_OP_CONFIG)
CHECK(ping, SRV_OP_PING)

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
    uint32_t nchunks = s->device_id < 0 || s->dev_vmm ? si->nchunks : 0;
    uint64_t chunk = s->chunk_size != 0 ? s->chunk_size : srv_config(srv)->chunk_size;
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
    if (s->device_id >= 0 && !s->dev_vmm) {
        memcpy(r->handle, s->ipc_handle, sizeof(r->handle));
        r->msg.cuda_ipc_handle.data = r->handle;
        r->msg.cuda_ipc_handle.len = sizeof(r->handle);
    }
    r->msg.n_chunks = nchunks;
    r->msg.chunks = r->refs;

    /* A host (or vmm device) slice's bytes, chunk by chunk. */
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
        srv_free(srv, reply->token, client_id, s->info.id, &freed, &n, ignored, sizeof(ignored));
    }
    return rc;
}

static int alloc(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__AllocatePoolMemoryRequest *req = (const void *)m;
    srv_slice_t s;
    int rc;

    rc = srv_alloc(svc->srv, reply->token, req->client_id, req->device_id, req->size_bytes,
                   req->alignment, req->tag, req->keep, &s, reply->text, sizeof(reply->text));
    if (rc != 0)
        return rc;
    return reply_or_free(svc->srv, req->client_id, &s, reply);
}
HANDLER(alloc)

/* The caller never got the slice (kept or not): it goes back to the pool. */
static void undo_alloc(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__AllocatePoolMemoryRequest *req = (const void *)m;
    const alloc_reply_t *r = (const alloc_reply_t *)reply->msg;
    srv_service_t *svc = app;
    uint64_t freed = 0;
    uint32_t n = 0;
    char msg[256] = "";
    int rc = srv_free(svc->srv, reply->token, req->client_id, r->msg.slice_id, &freed, &n, msg,
                      sizeof(msg));

    srv_info("AllocatePoolMemory for %s: the caller gave up before the reply; slice %" PRIu64
             " %s", req->client_id, r->msg.slice_id, rc == 0 ? "freed" : msg);
}

static int attach(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__AttachPoolMemoryRequest *req = (const void *)m;
    srv_slice_t s;
    int rc;

    rc = srv_attach(svc->srv, reply->token, req->client_id, req->tag, &s, reply->text,
                    sizeof(reply->text));
    return rc != 0 ? rc : build_slice_reply(svc->srv, &s, reply);
}
HANDLER(attach)

static void done_alloc(rpc_reply_t *reply)
{
    if (reply->msg != NULL) {
        alloc_reply_t *r = (alloc_reply_t *)reply->msg;
        free(r->refs);
        free(r);
    }
}

/* ---- FreePoolMemory ---------------------------------------------------------- */

static int free_slice(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__FreePoolMemoryRequest *req = (const void *)m;
    Pinpool__V1__FreePoolMemoryResponse *r;
    uint64_t freed;
    uint32_t n;
    int rc;

    rc = srv_free(svc->srv, reply->token, req->client_id, req->slice_id, &freed, &n, reply->text,
                  sizeof(reply->text));
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
HANDLER(free_slice)

static void done_free(rpc_reply_t *reply)
{
    free(reply->msg);
}

static void done_plain(rpc_reply_t *reply)
{
    free(reply->msg);
}

/* ---- named objects ---------------------------------------------------------------- */

static int release(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__ReleasePoolMemoryRequest *req = (const void *)m;
    Pinpool__V1__ReleasePoolMemoryResponse *r;
    uint64_t size = 0;
    int rc;

    rc = srv_release(svc->srv, reply->token, req->client_id, req->slice_id, req->key, req->ttl_ms,
                     &size, reply->text, sizeof(reply->text));
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
HANDLER(release)

static int acquire(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__AcquirePoolMemoryRequest *req = (const void *)m;
    srv_slice_t s;
    int rc;

    rc = srv_acquire(svc->srv, reply->token, req->client_id, req->key, &s, reply->text,
                     sizeof(reply->text));
    if (rc != 0)
        return rc;
    return reply_or_free(svc->srv, req->client_id, &s, reply);
}
HANDLER(acquire)

/* The caller never got the acquired slice: it becomes the object again (without
 * the TTL it had: acquiring ended that). */
static void undo_acquire(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__AcquirePoolMemoryRequest *req = (const void *)m;
    const alloc_reply_t *r = (const alloc_reply_t *)reply->msg;
    srv_service_t *svc = app;
    uint64_t size;
    char msg[256] = "";
    int rc = srv_release(svc->srv, reply->token, req->client_id, r->msg.slice_id, req->key, 0,
                         &size, msg, sizeof(msg));

    if (rc == 0)
        srv_info("AcquirePoolMemory of '%s' for %s: the caller gave up before the reply; the "
                 "object is released again", req->key, req->client_id);
    else
        srv_warn("AcquirePoolMemory of '%s' for %s: the caller gave up before the reply and the "
                 "object cannot be released again (%s); slice %" PRIu64 " stays the client's",
                 req->key, req->client_id, msg, r->msg.slice_id);
}

static int put(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    static const Pinpool__V1__PutResponse ok = PINPOOL__V1__PUT_RESPONSE__INIT;
    const Pinpool__V1__PutRequest *req = (const void *)m;
    int rc;

    rc = srv_obj_put(svc->srv, reply->token, req->key, req->data.data, req->data.len, req->ttl_ms,
                     reply->text, sizeof(reply->text));
    if (rc == 0)
        reply->msg = (ProtobufCMessage *)&ok.base;
    return rc;
}
HANDLER(put)

/* A Get of more than a reply may carry: what to do instead. */
static void explain_too_big(srv_t *srv, const char *key, uint64_t size, char *msg, size_t msglen)
{
    char a[32], b[32];

    snprintf(msg, msglen, "object '%s' is %s; a reply carries at most %s (the daemon's "
             "--max-message-size): acquire it (AcquirePoolMemory, pinpool_acquire) and map its "
             "slice instead", key, pool_format_size(size, a, sizeof(a)),
             pool_format_size(reply_budget(srv), b, sizeof(b)));
}

typedef struct get_reply {
    Pinpool__V1__GetResponse msg;
    void *data;
} get_reply_t;

static int get(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__GetRequest *req = (const void *)m;
    get_reply_t *r = calloc(1, sizeof(*r));
    uint64_t len = 0;
    int rc;

    if (r == NULL)
        return -ENOMEM;
    rc = srv_obj_get(svc->srv, reply->token, req->key, reply_budget(svc->srv), &r->data, &len,
                     reply->text, sizeof(reply->text));
    if (rc == -EMSGSIZE)
        explain_too_big(svc->srv, req->key, len, reply->text, sizeof(reply->text));
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
HANDLER(get)

static void done_get(rpc_reply_t *reply)
{
    get_reply_t *r = (get_reply_t *)reply->msg;

    if (r != NULL) {
        free(r->data);
        free(r);
    }
}

static int exists(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__ExistsRequest *req = (const void *)m;
    Pinpool__V1__ExistsResponse *r;
    int rc = srv_obj_exists(svc->srv, reply->token, req->key, reply->text, sizeof(reply->text));

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
HANDLER(exists)

static int remove_obj(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    static const Pinpool__V1__RemoveResponse ok = PINPOOL__V1__REMOVE_RESPONSE__INIT;
    const Pinpool__V1__RemoveRequest *req = (const void *)m;
    int rc = srv_obj_remove(svc->srv, reply->token, req->key, reply->text, sizeof(reply->text));

    if (rc == 0)
        reply->msg = (ProtobufCMessage *)&ok.base;
    return rc;
}
HANDLER(remove_obj)

/*
 * Batch replies: one heap block with n results (and data for BatchGet), and
 * the progress of the handler: items [0, next) are done (a handler put off to
 * a worker goes on from next).  The number of items is bounded before the
 * request is decoded (rpc.c: --max-batch-keys).
 */
typedef struct batch_reply {
    union {
        Pinpool__V1__BatchResponse batch;
        Pinpool__V1__BatchGetResponse get;
    } msg;
    size_t n, next;
    bool sized;        /* BatchGet: the sizes were checked against the budget */
    uint64_t budget;   /* BatchGet: reply bytes left for the items from next on */
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

/* The batch reply of this call: the one a first run began, or a new one. */
static batch_reply_t *batch_of(rpc_reply_t *reply, size_t n, bool get)
{
    batch_reply_t *r = (batch_reply_t *)reply->msg;

    if (r == NULL && (r = batch_new(n, get)) != NULL)
        reply->msg = get ? &r->msg.get.base : &r->msg.batch.base;
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

static int batch_put(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__BatchPutRequest *req = (const void *)m;
    batch_reply_t *r = batch_of(reply, req->n_items, false);

    if (r == NULL)
        return -ENOMEM;
    for (; r->next < req->n_items; r->next++) {
        const Pinpool__V1__PutRequest *it = req->items[r->next];
        int rc = srv_obj_put(svc->srv, reply->token, it->key, it->data.data, it->data.len,
                             it->ttl_ms, r->text[r->next], sizeof(r->text[0]));
        if (rc == SRV_EWOULDBLOCK)
            return rc; /* items from next on, on a worker */
        r->items[r->next].code = rc;
    }
    return 0;
}
HANDLER(batch_put)

/*
 * BatchGet: first every object's size (srv_obj_get with room for nothing
 * copies nothing and says the size), so that a reply larger than the budget
 * is refused before a single byte is copied (64 keys naming one 64 MiB object
 * cost 4 GiB); then the copies, each bounded by what is left (an object
 * replaced by a larger one meanwhile refuses the call too).
 */
static int batch_get(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__BatchKeysRequest *req = (const void *)m;
    batch_reply_t *r = batch_of(reply, req->n_keys, true);
    char a[32], b[32];
    int rc;

    if (r == NULL)
        return -ENOMEM;
    if (!r->sized) {
        uint64_t need = 0, max = reply_budget(svc->srv);
        char ignored[256];
        for (size_t i = 0; i < req->n_keys && need <= max; i++) {
            void *none = NULL;
            uint64_t len = 0;
            rc = srv_obj_get(svc->srv, reply->token, req->keys[i], 0, &none, &len, ignored,
                             sizeof(ignored));
            if (rc == SRV_EWOULDBLOCK)
                return rc;
            need += ITEM_OVERHEAD + (rc == -EMSGSIZE ? len : 0);
        }
        if (need > max) {
            snprintf(reply->text, sizeof(reply->text), "BatchGet of %zu keys: the objects come "
                     "to more than %s, and a reply carries at most %s (the daemon's "
                     "--max-message-size): get fewer keys at a time, or acquire large objects "
                     "(AcquirePoolMemory) and map them", req->n_keys,
                     pool_format_size(need, a, sizeof(a)), pool_format_size(max, b, sizeof(b)));
            return -EMSGSIZE;
        }
        r->sized = true;
        r->budget = max;
    }
    for (; r->next < req->n_keys; r->next++) {
        size_t i = r->next;
        void *data = NULL;
        uint64_t len = 0, room = r->budget > ITEM_OVERHEAD ? r->budget - ITEM_OVERHEAD : 0;
        rc = srv_obj_get(svc->srv, reply->token, req->keys[i], room, &data, &len, r->text[i],
                         sizeof(r->text[0]));
        if (rc == SRV_EWOULDBLOCK)
            return rc;
        if (rc == -EMSGSIZE) { /* grown since the sizes were taken */
            snprintf(reply->text, sizeof(reply->text), "BatchGet of %zu keys: '%s' (%s) does "
                     "not fit in what is left of a reply (the daemon's --max-message-size): "
                     "get fewer keys at a time", req->n_keys, req->keys[i],
                     pool_format_size(len, a, sizeof(a)));
            return rc;
        }
        r->items[i].code = rc;
        r->data[i].data = data;
        r->data[i].len = rc == 0 ? len : 0;
        uint64_t used = ITEM_OVERHEAD + r->data[i].len + strlen(r->text[i]);
        r->budget = r->budget > used ? r->budget - used : 0;
    }
    return 0;
}
HANDLER(batch_get)

static int batch_keys(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply,
                      int (*op)(srv_t *, const char *, const char *, char *, size_t))
{
    const Pinpool__V1__BatchKeysRequest *req = (const void *)m;
    batch_reply_t *r = batch_of(reply, req->n_keys, false);

    if (r == NULL)
        return -ENOMEM;
    for (; r->next < req->n_keys; r->next++) {
        int rc = op(svc->srv, reply->token, req->keys[r->next], r->text[r->next],
                    sizeof(r->text[0]));
        if (rc == SRV_EWOULDBLOCK)
            return rc;
        r->items[r->next].code = rc;
    }
    return 0;
}

static int batch_exists(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    return batch_keys(svc, m, reply, srv_obj_exists);
}
HANDLER(batch_exists)

static int batch_remove(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    return batch_keys(svc, m, reply, srv_obj_remove);
}
HANDLER(batch_remove)

/* ---- Ping ------------------------------------------------------------------------ */

static int handle_ping(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    static const Pinpool__V1__PingResponse pong = PINPOOL__V1__PING_RESPONSE__INIT;

    (void)app;
    (void)m;
    reply->msg = (ProtobufCMessage *)&pong.base;
    return 0;
}

#define LOW RPC_LOW_MEMORY_OK
/* path, request, check (access.c's row of the method, through srv_access), handle, done,
 * undo, flags (LOW: runs while the heap is short: it frees memory or needs little) */
static const rpc_method_t methods[] = {
    {METHOD("AllocatePoolMemory"), &pinpool__v1__allocate_pool_memory_request__descriptor,
     check_alloc, handle_alloc, done_alloc, undo_alloc, 0},
    {METHOD("FreePoolMemory"), &pinpool__v1__free_pool_memory_request__descriptor, check_free,
     handle_free_slice, done_free, NULL, LOW},
    {METHOD("GetPoolInfo"), &pinpool__v1__get_pool_info_request__descriptor, check_info,
     srv_service_handle_info, srv_service_done_info, NULL, LOW},
    {METHOD("GetServerConfig"), &pinpool__v1__get_server_config_request__descriptor, check_config,
     srv_service_handle_config, done_plain, NULL, LOW},
    {METHOD("Ping"), &pinpool__v1__ping_request__descriptor, check_ping, handle_ping, NULL, NULL,
     LOW},
    {METHOD("AttachPoolMemory"), &pinpool__v1__attach_pool_memory_request__descriptor,
     check_attach, handle_attach, done_alloc, NULL, LOW},
    {METHOD("ReleasePoolMemory"), &pinpool__v1__release_pool_memory_request__descriptor,
     check_release, handle_release, done_plain, NULL, 0},
    {METHOD("AcquirePoolMemory"), &pinpool__v1__acquire_pool_memory_request__descriptor,
     check_acquire, handle_acquire, done_alloc, undo_acquire, LOW},
    {METHOD("Put"), &pinpool__v1__put_request__descriptor, check_put, handle_put, NULL, NULL, 0},
    {METHOD("Get"), &pinpool__v1__get_request__descriptor, check_get, handle_get, done_get, NULL,
     0},
    {METHOD("Exists"), &pinpool__v1__exists_request__descriptor, check_exists, handle_exists,
     done_plain, NULL, LOW},
    {METHOD("Remove"), &pinpool__v1__remove_request__descriptor, check_remove, handle_remove_obj,
     NULL, NULL, LOW},
    {METHOD("BatchPut"), &pinpool__v1__batch_put_request__descriptor, check_put, handle_batch_put,
     done_batch, NULL, 0},
    {METHOD("BatchGet"), &pinpool__v1__batch_keys_request__descriptor, check_get,
     handle_batch_get, done_batch, NULL, 0},
    {METHOD("BatchExists"), &pinpool__v1__batch_keys_request__descriptor, check_exists,
     handle_batch_exists, done_batch, NULL, LOW},
    {METHOD("BatchRemove"), &pinpool__v1__batch_keys_request__descriptor, check_remove,
     handle_batch_remove, done_batch, NULL, LOW},
};
#undef LOW

const rpc_method_t *srv_service_methods(size_t *n)
{
    *n = sizeof(methods) / sizeof(methods[0]);
    return methods;
}

void srv_service_limits(const srv_config_t *cfg, rpc_limits_t *lim)
{
    lim->max_message = cfg->max_message_size;
    lim->max_items = (uint32_t)cfg->max_batch_keys;
    lim->max_streams = (uint32_t)cfg->max_streams;
    lim->grpc_memory = cfg->rpc_memory;
    lim->workers = (unsigned)cfg->rpc_workers;
    lim->queue = (unsigned)cfg->rpc_queue;
}
