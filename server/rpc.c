/*
 * rpc.c - the unary gRPC server (see rpc.h).
 *
 * Each registered method keeps RPC_PENDING requests outstanding on the
 * completion queue; when one arrives it is re-armed first, then handled, and
 * the whole reply goes out as one batch (initial metadata, message, status,
 * close).  Calls to any other method are taken as generic calls and answered
 * UNIMPLEMENTED, so that no client waits for its deadline.
 *
 * Every call has a context that lives until its reply batch completes: the
 * batch points into it (status details, trailing metadata, "cancelled").
 *
 * Threads and locks: rpc_server_start starts nthreads threads (the daemon asks
 * for two) that take events from the one completion queue; a request is
 * handled, and its handler (service.c, then srv_*) run, on the thread that
 * took it, so as many calls run at once as there are threads.  A handler that
 * waits (srv_alloc for chunks or a spill, a restore, the tier) holds its
 * thread meanwhile: with two threads, two waiting calls hold back every other
 * call until one returns.  The observer (metrics.c) and the on_shutdown
 * callback also run on a queue thread.  rpc_server_t is set up before start
 * and only read afterwards, except stopping (an atomic, read by every thread)
 * and shutdown_done, which the thread that receives the shutdown tag sets
 * under rs->lock and rpc_server_stop waits for on rs->cv; rs->lock is a leaf
 * (nothing else is called under it).  rpc_server_create, _add_port, _start,
 * _add_connection, _begin_shutdown, _cancel_all and _stop are called from the daemon's main
 * thread only.  rpc_dispatch holds no state and runs on any thread.
 */
#include "rpc.h"

#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "pinpool.h"
#include "status.h"

#define RPC_PENDING 8   /* outstanding requests per method */
#define RPC_MAX_THREADS 16

enum phase { PHASE_REQUEST, PHASE_REPLY };

typedef struct rpc_call {
    rpc_server_t *rs;
    int method; /* index into rs->methods, -1 for a generic call */
    enum phase phase;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array request_md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* generic calls */
    /* What the reply batch points to. */
    grpc_byte_buffer *reply;
    grpc_slice status_text;
    grpc_metadata trailer;
    char code[16];
    int cancelled;
} rpc_call_t;

struct rpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    const rpc_method_t *methods;
    void **handles; /* grpc_server_register_method results */
    size_t nmethods;
    void *app;
    bool started;
    atomic_bool stopping;
    pthread_t threads[RPC_MAX_THREADS];
    unsigned nthreads;
    /* The shutdown tag has come back. */
    pthread_mutex_t lock;
    pthread_cond_t cv;
    bool shutdown_begun;
    bool shutdown_done;
    void (*on_shutdown)(void *arg);
    void *on_shutdown_arg;
    rpc_observer_fn observer;
    void *observer_arg;
};

static int shutdown_tag;

static void call_free(rpc_call_t *c)
{
    if (c->call != NULL)
        grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->request_md);
    if (c->method < 0)
        grpc_call_details_destroy(&c->details);
    if (c->payload != NULL)
        grpc_byte_buffer_destroy(c->payload);
    if (c->reply != NULL)
        grpc_byte_buffer_destroy(c->reply);
    if (c->phase == PHASE_REPLY) {
        grpc_slice_unref(c->status_text);
        grpc_slice_unref(c->trailer.value);
    }
    free(c);
}

/* Put one request for method m (or a generic one, m = -1) on the queue. */
static int arm(rpc_server_t *rs, int m)
{
    rpc_call_t *c = calloc(1, sizeof(*c));
    grpc_call_error e;

    if (c == NULL)
        return -ENOMEM;
    c->rs = rs;
    c->method = m;
    c->phase = PHASE_REQUEST;
    grpc_metadata_array_init(&c->request_md);
    if (m >= 0) {
        e = grpc_server_request_registered_call(rs->server, rs->handles[m], &c->call, &c->deadline,
                                                &c->request_md, &c->payload, rs->cq, rs->cq, c);
    } else {
        grpc_call_details_init(&c->details);
        e = grpc_server_request_call(rs->server, &c->call, &c->details, &c->request_md, rs->cq,
                                     rs->cq, c);
    }
    if (e != GRPC_CALL_OK) {
        call_free(c);
        return PINPOOL_EINTERNAL;
    }
    return 0;
}

/* Read the whole payload into one contiguous slice. */
static grpc_slice read_payload(grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader reader;
    grpc_slice s;

    if (bb == NULL || !grpc_byte_buffer_reader_init(&reader, bb))
        return grpc_empty_slice();
    s = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    return s;
}

int rpc_dispatch(const rpc_method_t *m, void *app, const char *token, const uint8_t *data,
                 size_t len, grpc_slice *out, char *text, size_t textlen)
{
    ProtobufCMessage *req;
    rpc_reply_t reply = {.token = token != NULL ? token : "", .msg = NULL};
    int rc;

    req = protobuf_c_message_unpack(m->request, NULL, len, data);
    if (req == NULL) {
        snprintf(text, textlen, "cannot decode the %s request", m->request->name);
        return PINPOOL_EINVAL;
    }
    rc = m->check != NULL ? m->check(app, req, &reply) : 0;
    if (rc == 0)
        rc = m->handle(app, req, &reply);
    protobuf_c_message_free_unpacked(req, NULL);
    if (rc != 0) {
        snprintf(text, textlen, "%s", reply.text[0] != '\0' ? reply.text : pinpool_strerror(rc));
        if (m->done != NULL)
            m->done(&reply);
        return rc;
    }
    size_t n = protobuf_c_message_get_packed_size(reply.msg);
    *out = grpc_slice_malloc(n);
    protobuf_c_message_pack(reply.msg, GRPC_SLICE_START_PTR(*out));
    if (m->done != NULL)
        m->done(&reply);
    return 0;
}

/* Run the method and build the reply in c. Returns the pinpool error (0 = OK). */
static int run_method(rpc_call_t *c, char *text, size_t textlen)
{
    grpc_slice in = read_payload(c->payload), out;
    char token[64] = "";
    int rc;

    /* The session token, if the caller sent one (too long: ignored, so refused). */
    for (size_t i = 0; i < c->request_md.count; i++) {
        const grpc_metadata *md = &c->request_md.metadata[i];
        size_t n = GRPC_SLICE_LENGTH(md->value);
        if (grpc_slice_str_cmp(md->key, RPC_TOKEN_KEY) == 0 && n < sizeof(token)) {
            memcpy(token, GRPC_SLICE_START_PTR(md->value), n);
            token[n] = '\0';
        }
    }
    rc = rpc_dispatch(&c->rs->methods[c->method], c->rs->app, token, GRPC_SLICE_START_PTR(in),
                      GRPC_SLICE_LENGTH(in), &out, text, textlen);
    grpc_slice_unref(in);
    if (rc != 0)
        return rc;
    c->reply = grpc_raw_byte_buffer_create(&out, 1);
    grpc_slice_unref(out);
    return 0;
}

static void reply(rpc_call_t *c)
{
    rpc_server_t *rs = c->rs;
    char text[512] = "";
    grpc_status_code status;
    grpc_op ops[4];
    size_t n = 0;
    int rc;

    if (c->method >= 0) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        rc = atomic_load(&rs->stopping) ? PINPOOL_ESHUTDOWN : run_method(c, text, sizeof(text));
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (rs->observer != NULL)
            rs->observer(c->method, rc,
                         (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
                         rs->observer_arg);
        if (rc == PINPOOL_ESHUTDOWN && text[0] == '\0')
            snprintf(text, sizeof(text), "the daemon is shutting down");
        status = proto_status_of(rc);
        if (rc != 0)
            srv_debug("%s: %s (%s)", rs->methods[c->method].path, text, pinpool_err_name(rc));
    } else {
        char *method = grpc_slice_to_c_string(c->details.method);
        snprintf(text, sizeof(text), "pinpool does not serve the method %s", method);
        gpr_free(method);
        rc = 0;
        status = GRPC_STATUS_UNIMPLEMENTED;
    }
    snprintf(c->code, sizeof(c->code), "%d", rc);
    c->status_text = grpc_slice_from_copied_string(text);
    c->trailer.key = grpc_slice_from_static_string(RPC_ERROR_KEY);
    c->trailer.value = grpc_slice_from_copied_string(c->code);
    c->phase = PHASE_REPLY;

    memset(ops, 0, sizeof(ops));
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    n++;
    if (c->reply != NULL) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->reply;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = status;
    ops[n].data.send_status_from_server.status_details = status == GRPC_STATUS_OK ? NULL : &c->status_text;
    ops[n].data.send_status_from_server.trailing_metadata_count = status == GRPC_STATUS_OK ? 0 : 1;
    ops[n].data.send_status_from_server.trailing_metadata = &c->trailer;
    n++;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
    n++;
    if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK) {
        srv_error("cannot send a reply (grpc_call_start_batch failed)");
        call_free(c);
    }
}

static void *cq_thread(void *arg)
{
    rpc_server_t *rs = arg;

    for (;;) {
        grpc_event ev = grpc_completion_queue_next(rs->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);

        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return NULL;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        if (ev.tag == &shutdown_tag) {
            pthread_mutex_lock(&rs->lock);
            rs->shutdown_done = true;
            pthread_cond_broadcast(&rs->cv);
            pthread_mutex_unlock(&rs->lock);
            if (rs->on_shutdown != NULL)
                rs->on_shutdown(rs->on_shutdown_arg);
            continue;
        }
        rpc_call_t *c = ev.tag;
        if (c->phase == PHASE_REPLY || !ev.success) {
            call_free(c); /* reply sent, or a request given back at shutdown */
            continue;
        }
        if (!atomic_load(&rs->stopping) && arm(rs, c->method) != 0)
            srv_error("cannot re-arm a gRPC request; serving with fewer");
        reply(c);
    }
}

int rpc_server_create(rpc_server_t **out, const rpc_method_t *methods, size_t nmethods,
                      void *app, char *err, size_t errlen)
{
    rpc_server_t *rs = calloc(1, sizeof(*rs));

    if (rs == NULL)
        return -ENOMEM;
    rs->handles = calloc(nmethods, sizeof(*rs->handles));
    if (rs->handles == NULL) {
        free(rs);
        return -ENOMEM;
    }
    grpc_init();
    rs->methods = methods;
    rs->nmethods = nmethods;
    rs->app = app;
    pthread_mutex_init(&rs->lock, NULL);
    pthread_cond_init(&rs->cv, NULL);
    rs->cq = grpc_completion_queue_create_for_next(NULL);
    rs->server = grpc_server_create(NULL, NULL);
    grpc_server_register_completion_queue(rs->server, rs->cq, NULL);
    for (size_t i = 0; i < nmethods; i++) {
        rs->handles[i] = grpc_server_register_method(rs->server, methods[i].path, NULL,
                                                     GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (rs->handles[i] == NULL) {
            snprintf(err, errlen, "cannot register gRPC method %s", methods[i].path);
            rpc_server_stop(rs, 0);
            return PINPOOL_EINTERNAL;
        }
    }
    *out = rs;
    return 0;
}

void rpc_server_set_observer(rpc_server_t *rs, rpc_observer_fn fn, void *arg)
{
    rs->observer = fn;
    rs->observer_arg = arg;
}

int rpc_server_add_port(rpc_server_t *rs, const char *addr, char *err, size_t errlen)
{
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(rs->server, addr, creds);

    grpc_server_credentials_release(creds);
    if (port == 0) {
        snprintf(err, errlen, "cannot listen on %s (in use, bad address, or no permission)", addr);
        return -EADDRNOTAVAIL;
    }
    return 0;
}

void rpc_server_add_connection(rpc_server_t *rs, int fd)
{
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();

    grpc_server_add_channel_from_fd(rs->server, fd, creds);
    grpc_server_credentials_release(creds);
}

int rpc_server_start(rpc_server_t *rs, unsigned nthreads)
{
    grpc_server_start(rs->server);
    rs->started = true;
    for (size_t m = 0; m < rs->nmethods; m++)
        for (int i = 0; i < RPC_PENDING; i++)
            if (arm(rs, (int)m) != 0)
                return PINPOOL_EINTERNAL;
    for (int i = 0; i < 2; i++)
        if (arm(rs, -1) != 0)
            return PINPOOL_EINTERNAL;
    if (nthreads < 1)
        nthreads = 1;
    if (nthreads > RPC_MAX_THREADS)
        nthreads = RPC_MAX_THREADS;
    for (unsigned i = 0; i < nthreads; i++) {
        int rc = pthread_create(&rs->threads[i], NULL, cq_thread, rs);
        if (rc != 0)
            return -rc;
        rs->nthreads++;
    }
    return 0;
}

/* Wait for the shutdown tag until deadline; true if it came. */
static bool wait_shutdown(rpc_server_t *rs, gpr_timespec deadline)
{
    struct timespec ts = {.tv_sec = deadline.tv_sec, .tv_nsec = deadline.tv_nsec};
    bool done;

    pthread_mutex_lock(&rs->lock);
    while (!rs->shutdown_done)
        if (pthread_cond_timedwait(&rs->cv, &rs->lock, &ts) == ETIMEDOUT)
            break;
    done = rs->shutdown_done;
    pthread_mutex_unlock(&rs->lock);
    return done;
}

void rpc_server_begin_shutdown(rpc_server_t *rs, void (*done)(void *arg), void *arg)
{
    if (rs == NULL || rs->shutdown_begun)
        return;
    rs->shutdown_begun = true;
    rs->on_shutdown = done;
    rs->on_shutdown_arg = arg;
    atomic_store(&rs->stopping, true);
    if (!rs->started)
        grpc_server_start(rs->server); /* destroying a never-started server aborts */
    grpc_server_shutdown_and_notify(rs->server, rs->cq, &shutdown_tag);
}

void rpc_server_cancel_all(rpc_server_t *rs)
{
    if (rs != NULL && rs->shutdown_begun)
        grpc_server_cancel_all_calls(rs->server);
}

void rpc_server_stop(rpc_server_t *rs, double grace_s)
{
    if (rs == NULL)
        return;
    rpc_server_begin_shutdown(rs, NULL, NULL);
    rs->on_shutdown = NULL;
    if (rs->nthreads == 0) {
        /* Nobody polls the queue: drain it here. */
        grpc_server_cancel_all_calls(rs->server);
        for (;;) {
            grpc_event ev = grpc_completion_queue_next(rs->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.tag == &shutdown_tag)
                break;
            if (ev.type == GRPC_OP_COMPLETE)
                call_free(ev.tag);
        }
    } else {
        gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                             gpr_time_from_millis((int64_t)(grace_s * 1000), GPR_TIMESPAN));
        if (!wait_shutdown(rs, deadline)) {
            grpc_server_cancel_all_calls(rs->server);
            wait_shutdown(rs, gpr_inf_future(GPR_CLOCK_REALTIME));
        }
    }
    grpc_completion_queue_shutdown(rs->cq);
    for (unsigned i = 0; i < rs->nthreads; i++)
        pthread_join(rs->threads[i], NULL);
    for (;;) { /* whatever is left: requests given back after the shutdown tag */
        grpc_event ev = grpc_completion_queue_next(rs->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE && ev.tag != &shutdown_tag)
            call_free(ev.tag);
    }
    grpc_server_destroy(rs->server);
    grpc_completion_queue_destroy(rs->cq);
    pthread_cond_destroy(&rs->cv);
    pthread_mutex_destroy(&rs->lock);
    free(rs->handles);
    free(rs);
    grpc_shutdown();
}
