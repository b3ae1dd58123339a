/*
 * rpc.c - the unary gRPC server (see rpc.h); one call's work is rpc_work.c.
 *
 * Each registered method keeps RPC_PENDING requests outstanding on the
 * completion queue; when one arrives it is re-armed first, then handled, and
 * the whole reply goes out as one batch (initial metadata, message, status).
 * Calls to any other method are taken as generic calls and answered
 * UNIMPLEMENTED, so that no client waits for its deadline.
 *
 * A call, from its arrival:
 *   1. a batch of its own receives the close (RECV_CLOSE_ON_SERVER): it
 *      completes when the call is over, early if the caller cancelled, its
 *      deadline passed or the connection went ("closed"; "cancelled" says
 *      whether the reply may not have reached the caller);
 *   2. admission on the queue thread: not while stopping, not past its
 *      deadline, a TCP caller's bearer token (the peer of a unix-socket call
 *      is "unix:..." or, accepted by the daemon itself, "fd:N"; anything else
 *      must carry the token), and while the heap
 *      is short (reserve.h) only the methods that free memory or need little;
 *   3. the method runs on the queue thread where it must not wait; if it would
 *      (RPC_DEFER), the call goes to the worker pool (a full pool answers
 *      RESOURCE_EXHAUSTED at once), where it runs again unless the caller is
 *      gone or its deadline passed meanwhile, and its reply is sent from the
 *      worker (grpc_call_start_batch may be called from any thread);
 *   4. when both batches are back, a call that succeeded but whose caller
 *      never got the reply (cancelled, or the reply batch failed) is undone
 *      (rpc_method_t.undo: the slice made for it is freed), then freed.
 * Every call has a context that lives until both batches complete (refs):
 * they point into it (status details, trailing metadata, "cancelled").
 *
 * Threads and locks: rpc_server_start starts nthreads queue threads (the
 * daemon asks for two) and the worker pool (workers.c).  Queue threads never
 * wait for the pool, a chunk, the tier or a condition variable: they take
 * srv's lock (held briefly by every room) and nothing else that blocks.  The
 * observer (metrics.c) runs on the thread that finishes a call (queue thread
 * or worker), undo and the on_shutdown callback on a queue thread.
 * rpc_server_t is set up before start and only read afterwards, except
 * stopping and handoffs (atomics, used by every thread), and shutdown_done
 * and on_shutdown, under rs->lock (the thread that receives the shutdown tag
 * sets the one and reads the other; rpc_server_stop waits on rs->cv);
 * rs->lock is a leaf.  A call's context
 * belongs to one thread at a time (the queue thread, then maybe one worker),
 * except closed and refs (atomics) and cancelled (written by gRPC before the
 * close tag comes back, read after the last ref).  rpc_server_create,
 * _add_port, _start, _add_connection, _begin_shutdown, _cancel_all and _stop
 * are called from the daemon's main thread only.
 */
#include "rpc.h"

#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "pinpool.h"
#include "pool.h"
#include "reserve.h"
#include "status.h"
#include "workers.h"

#define RPC_PENDING 8   /* outstanding requests per method */
#define RPC_MAX_THREADS 16
#define RPC_TOKEN_MAX 256 /* a TCP bearer token */
#define AUTH_KEY "authorization"
#define BEARER "Bearer "

enum tag_kind { TAG_REQUEST, TAG_CLOSE, TAG_REPLY };

typedef struct rpc_call rpc_call_t;

/* What a completion-queue tag points to: which batch of which call. */
typedef struct rpc_tag {
    enum tag_kind kind;
    rpc_call_t *c;
} rpc_tag_t;

struct rpc_call {
    rpc_server_t *rs;
    int method; /* index into rs->methods, -1 for a generic call */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array request_md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* generic calls */
    rpc_tag_t request_tag, close_tag, reply_tag;
    atomic_int refs;     /* the close batch and the reply path (then its batch) */
    atomic_bool closed;  /* the close batch came back: the caller is done with the call */
    int cancelled;       /* RECV_CLOSE_ON_SERVER: the call did not end with our reply */
    bool reply_failed;   /* the reply batch came back unsuccessful */
    struct timespec t0;
    char token[72];      /* RPC_TOKEN_KEY */
    rpc_work_t work;
    bool begun;          /* work begun: rpc_work_end is due */
    bool unauthenticated;
    bool refused_short; /* admit found the heap short */
    int rc;
    /* What the reply batch points to. */
    grpc_byte_buffer *reply;
    grpc_slice status_text;
    grpc_metadata trailer;
    char code[16];
    bool replying;
    char text[512];
};

struct rpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    grpc_resource_quota *quota;
    const rpc_method_t *methods;
    void **handles; /* grpc_server_register_method results */
    size_t nmethods;
    void *app;
    rpc_limits_t lim;
    char tcp_token[RPC_TOKEN_MAX + 1]; /* "" until a TCP port is added */
    srv_workers_t *workers;
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
    atomic_uint handoffs; /* hand_over() */
};

static int shutdown_tag;

/*
 * A call passes from thread to thread through gRPC (a batch started here
 * completes on another queue thread), whose synchronization a
 * ThreadSanitizer build cannot see (Debian's gRPC is not instrumented): an
 * acquire-release step on the server's counter before each batch, request or
 * shutdown and after each event says so (one counter for all: a call's own
 * memory was made on another thread, unseen).  It orders nothing that gRPC
 * does not order already, at the price of one atomic add.
 */
static void hand_over(rpc_server_t *rs)
{
    atomic_fetch_add_explicit(&rs->handoffs, 1, memory_order_acq_rel);
}

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
    if (c->replying) {
        grpc_slice_unref(c->status_text);
        grpc_slice_unref(c->trailer.value);
    }
    free(c);
}

/* The last reference: undo a success nobody heard of, then free the call. */
static void call_unref(rpc_call_t *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    if (c->begun) {
        if (c->rc == 0 && (c->cancelled || c->reply_failed)) {
            srv_debug("%s: the caller never got the reply (cancelled or past its deadline): "
                      "undoing it", c->rs->methods[c->method].path);
            rpc_work_undo(&c->work);
        }
        rpc_work_end(&c->work);
    }
    call_free(c);
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
    c->request_tag = (rpc_tag_t){TAG_REQUEST, c};
    c->close_tag = (rpc_tag_t){TAG_CLOSE, c};
    c->reply_tag = (rpc_tag_t){TAG_REPLY, c};
    grpc_metadata_array_init(&c->request_md);
    hand_over(rs);
    if (m >= 0) {
        e = grpc_server_request_registered_call(rs->server, rs->handles[m], &c->call, &c->deadline,
                                                &c->request_md, &c->payload, rs->cq, rs->cq,
                                                &c->request_tag);
    } else {
        grpc_call_details_init(&c->details);
        e = grpc_server_request_call(rs->server, &c->call, &c->details, &c->request_md, rs->cq,
                                     rs->cq, &c->request_tag);
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

/* Equal without a timing that tells how much of it matched. */
static bool same_secret(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    unsigned char diff = alen != blen;

    for (size_t i = 0; i < alen && i < blen; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

/*
 * Step 2 of a call: may it run?  Reads its session token on the way.  0, or
 * the error with text (an unauthenticated TCP caller: c->unauthenticated).
 */
static int admit(rpc_call_t *c, char *text, size_t textlen)
{
    rpc_server_t *rs = c->rs;
    const rpc_method_t *m = &rs->methods[c->method];
    bool bearer = false, bearer_ok = false;
    char *peer;

    if (atomic_load(&rs->stopping)) {
        snprintf(text, textlen, "the daemon is shutting down");
        return PINPOOL_ESHUTDOWN;
    }
    if (gpr_time_cmp(c->deadline, gpr_now(c->deadline.clock_type)) < 0) {
        snprintf(text, textlen, "the call's deadline had passed before it could start");
        return PINPOOL_ETIMEOUT;
    }
    for (size_t i = 0; i < c->request_md.count; i++) {
        const grpc_metadata *md = &c->request_md.metadata[i];
        const char *v = (const char *)GRPC_SLICE_START_PTR(md->value);
        size_t n = GRPC_SLICE_LENGTH(md->value);
        /* The session token, if the caller sent one (too long: ignored, so refused). */
        if (grpc_slice_str_cmp(md->key, RPC_TOKEN_KEY) == 0 && n < sizeof(c->token)) {
            memcpy(c->token, v, n);
            c->token[n] = '\0';
        }
        if (grpc_slice_str_cmp(md->key, AUTH_KEY) == 0 && n > strlen(BEARER) &&
            strncmp(v, BEARER, strlen(BEARER)) == 0) {
            bearer = true;
            bearer_ok = rs->tcp_token[0] != '\0' &&
                        same_secret(v + strlen(BEARER), n - strlen(BEARER), rs->tcp_token);
        }
    }
    peer = grpc_call_get_peer(c->call);
    /* Local: a unix socket gRPC accepted, or one the daemon accepted itself
     * and handed over (rpc_server_add_connection: gRPC names it "fd:N"). */
    bool local = peer != NULL && (strncmp(peer, "unix:", 5) == 0 || strncmp(peer, "fd:", 3) == 0);
    gpr_free(peer);
    if (!local && !bearer_ok) {
        c->unauthenticated = true;
        snprintf(text, textlen, "%s: calls over TCP must carry 'authorization: Bearer TOKEN' "
                 "with the token in the daemon's --listen-token-file (libpinpool and `pinpool "
                 "info` read it from $PINPOOL_TOKEN_FILE)",
                 bearer ? "wrong bearer token" : "no bearer token");
        return PINPOOL_EPERM;
    }
    if ((m->flags & RPC_LOW_MEMORY_OK) == 0 && srv_reserve_short(text, textlen)) {
        c->refused_short = true; /* refused before anything failed */
        return -ENOMEM;
    }
    return 0;
}

/* Step 4's start: the reply (or the error) as one batch; from any thread. */
static void finish(rpc_call_t *c, int rc, const char *why)
{
    rpc_server_t *rs = c->rs;
    grpc_status_code status;
    grpc_op ops[3];
    size_t n = 0;

    if (rc == 0 && c->begun) {
        grpc_slice out;
        rc = rpc_work_pack(&c->work, rs->lim.max_message, &out);
        if (rc == 0) {
            c->reply = grpc_raw_byte_buffer_create(&out, 1);
            grpc_slice_unref(out);
        } else { /* it succeeded, but the caller hears of a failure: undo it now */
            why = c->work.reply.text;
            rpc_work_undo(&c->work);
        }
    }
    if (rc != 0 || c->method < 0)
        snprintf(c->text, sizeof(c->text), "%s", why != NULL && why[0] != '\0' ? why
                                                                            : pinpool_strerror(rc));
    c->rc = rc;
    if (c->method >= 0) {
        struct timespec t1;
        if (rc == -ENOMEM && !c->refused_short) /* an allocation failed: gRPC needs room now */
            srv_reserve_spend(rs->methods[c->method].path);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (rs->observer != NULL)
            rs->observer(c->method, rc,
                         (double)(t1.tv_sec - c->t0.tv_sec) +
                             (double)(t1.tv_nsec - c->t0.tv_nsec) / 1e9,
                         rs->observer_arg);
        status = c->unauthenticated ? GRPC_STATUS_UNAUTHENTICATED : proto_status_of(rc);
        if (rc != 0)
            srv_debug("%s: %s (%s)", rs->methods[c->method].path, c->text, pinpool_err_name(rc));
    } else {
        status = GRPC_STATUS_UNIMPLEMENTED;
        rc = 0;
    }
    snprintf(c->code, sizeof(c->code), "%d", rc);
    c->status_text = grpc_slice_from_copied_string(c->text);
    c->trailer.key = grpc_slice_from_static_string(RPC_ERROR_KEY);
    c->trailer.value = grpc_slice_from_copied_string(c->code);
    c->replying = true;

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
    ops[n].data.send_status_from_server.status_details =
        status == GRPC_STATUS_OK ? NULL : &c->status_text;
    ops[n].data.send_status_from_server.trailing_metadata_count = status == GRPC_STATUS_OK ? 0 : 1;
    ops[n].data.send_status_from_server.trailing_metadata = &c->trailer;
    n++;
    grpc_call *call = c->call; /* c may be gone once the batch is started */
    hand_over(rs);
    if (grpc_call_start_batch(call, ops, n, &c->reply_tag, NULL) != GRPC_CALL_OK) {
        srv_error("cannot send a reply (grpc_call_start_batch failed)");
        c->reply_failed = true;
        call_unref(c);
    }
}

/* Step 3 on a worker: run the call that would have waited, unless its caller is gone. */
static void run_deferred(void *arg)
{
    rpc_call_t *c = arg;
    int rc;

    if (atomic_load(&c->rs->stopping)) {
        rc = PINPOOL_ESHUTDOWN;
        snprintf(c->work.reply.text, sizeof(c->work.reply.text), "the daemon is shutting down");
    } else if (atomic_load(&c->closed) ||
               gpr_time_cmp(c->deadline, gpr_now(c->deadline.clock_type)) < 0) {
        rc = PINPOOL_ETIMEOUT;
        snprintf(c->work.reply.text, sizeof(c->work.reply.text), "the caller gave up (cancelled, "
                 "or its deadline passed) before the call could run");
    } else {
        rc = rpc_work_run(&c->work, true);
    }
    finish(c, rc, c->work.reply.text);
}

/* A request came in: steps 1 to 3 on this queue thread. */
static void start(rpc_call_t *c)
{
    rpc_server_t *rs = c->rs;
    char text[512] = "";
    grpc_op close = {.op = GRPC_OP_RECV_CLOSE_ON_SERVER};
    int rc;

    clock_gettime(CLOCK_MONOTONIC, &c->t0);
    atomic_init(&c->refs, 2);
    close.data.recv_close_on_server.cancelled = &c->cancelled;
    hand_over(rs);
    if (grpc_call_start_batch(c->call, &close, 1, &c->close_tag, NULL) != GRPC_CALL_OK) {
        srv_error("cannot watch a call for its end (grpc_call_start_batch failed)");
        atomic_fetch_sub(&c->refs, 1);
    }
    if (c->method < 0) {
        char *method = grpc_slice_to_c_string(c->details.method);
        snprintf(text, sizeof(text), "pinpool does not serve the method %s", method);
        gpr_free(method);
        finish(c, 0, text);
        return;
    }
    rc = admit(c, text, sizeof(text));
    if (rc != 0) {
        finish(c, rc, text);
        return;
    }
    grpc_slice in = read_payload(c->payload);
    rc = rpc_work_begin(&c->work, &rs->methods[c->method], rs->app, c->token, rs->lim.max_items,
                        GRPC_SLICE_START_PTR(in), GRPC_SLICE_LENGTH(in));
    grpc_slice_unref(in);
    c->begun = true;
    if (rc == 0)
        rc = rpc_work_run(&c->work, false);
    if (rc == RPC_DEFER) {
        rc = srv_workers_submit(rs->workers, run_deferred, c);
        if (rc == 0)
            return;
        unsigned threads, busy, queued, qmax;
        srv_workers_load(rs->workers, &threads, &busy, &queued, &qmax);
        if (rc == -EAGAIN) {
            snprintf(c->work.reply.text, sizeof(c->work.reply.text), "the daemon's %u workers "
                     "are all busy with calls that wait (for pinning, room or the spill tier) "
                     "and %u more calls wait for one (--rpc-workers %u, --rpc-queue %u): retry "
                     "later", busy, queued, threads, qmax);
        } else {
            snprintf(c->work.reply.text, sizeof(c->work.reply.text), "the daemon is shutting "
                     "down");
            rc = PINPOOL_ESHUTDOWN;
        }
    }
    finish(c, rc, c->work.reply.text);
}

static void on_event(rpc_server_t *rs, grpc_event ev)
{
    hand_over(rs); /* before the first look at the call */
    rpc_tag_t *t = ev.tag;
    rpc_call_t *c = t->c;

    switch (t->kind) {
    case TAG_REQUEST:
        if (!ev.success) { /* a request given back at shutdown */
            call_free(c);
            return;
        }
        if (!atomic_load(&rs->stopping) && arm(rs, c->method) != 0)
            srv_error("cannot re-arm a gRPC request; serving with fewer");
        start(c);
        return;
    case TAG_CLOSE:
        atomic_store(&c->closed, true);
        call_unref(c);
        return;
    case TAG_REPLY:
        if (!ev.success)
            c->reply_failed = true;
        call_unref(c);
        return;
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
            void (*done)(void *done_arg);
            void *done_arg;
            pthread_mutex_lock(&rs->lock);
            rs->shutdown_done = true;
            done = rs->on_shutdown;
            done_arg = rs->on_shutdown_arg;
            pthread_cond_broadcast(&rs->cv);
            pthread_mutex_unlock(&rs->lock);
            if (done != NULL)
                done(done_arg);
            continue;
        }
        on_event(rs, ev);
    }
}

static grpc_arg int_arg(const char *key, uint64_t v)
{
    grpc_arg a = {.type = GRPC_ARG_INTEGER, .key = (char *)key};

    a.value.integer = v > INT_MAX ? INT_MAX : (int)v;
    return a;
}

int rpc_server_create(rpc_server_t **out, const rpc_method_t *methods, size_t nmethods,
                      void *app, const rpc_limits_t *lim, char *err, size_t errlen)
{
    rpc_server_t *rs = calloc(1, sizeof(*rs));
    uint64_t quota;

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
    rs->lim = *lim;
    pthread_mutex_init(&rs->lock, NULL);
    pthread_cond_init(&rs->cv, NULL);
    /* gRPC's buffers: at least room for a few messages of the largest size. */
    quota = lim->grpc_memory > 4 * lim->max_message ? lim->grpc_memory : 4 * lim->max_message;
    rs->quota = grpc_resource_quota_create("pinpool");
    grpc_resource_quota_resize(rs->quota, (size_t)quota);
    grpc_arg args[] = {
        int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, lim->max_message),
        int_arg(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, lim->max_message),
        int_arg(GRPC_ARG_MAX_CONCURRENT_STREAMS, lim->max_streams),
        int_arg(GRPC_ARG_ALLOW_REUSEPORT, 0), /* a second daemon cannot share the port */
        {.type = GRPC_ARG_POINTER, .key = (char *)GRPC_ARG_RESOURCE_QUOTA,
         .value.pointer = {rs->quota, grpc_resource_quota_arg_vtable()}},
    };
    grpc_channel_args ca = {sizeof(args) / sizeof(args[0]), args};
    rs->cq = grpc_completion_queue_create_for_next(NULL);
    rs->server = grpc_server_create(&ca, NULL);
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

int rpc_server_add_port(rpc_server_t *rs, const char *addr, const char *token, char *err,
                        size_t errlen)
{
    grpc_server_credentials *creds;
    int port;

    if (token != NULL) {
        if (strlen(token) > RPC_TOKEN_MAX || token[0] == '\0') {
            snprintf(err, errlen, "a bearer token is 1 to %d characters", RPC_TOKEN_MAX);
            return PINPOOL_EINVAL;
        }
        snprintf(rs->tcp_token, sizeof(rs->tcp_token), "%s", token);
    }
    creds = grpc_insecure_server_credentials_create();
    port = grpc_server_add_http2_port(rs->server, addr, creds);
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

int rpc_server_start(rpc_server_t *rs, unsigned nthreads, char *err, size_t errlen)
{
    int rc = srv_workers_start(&rs->workers, rs->lim.workers, rs->lim.queue, err, errlen);

    if (rc != 0)
        return rc;
    grpc_server_start(rs->server);
    rs->started = true;
    for (size_t m = 0; m < rs->nmethods; m++)
        for (int i = 0; i < RPC_PENDING; i++)
            if (arm(rs, (int)m) != 0)
                goto fail;
    for (int i = 0; i < 2; i++)
        if (arm(rs, -1) != 0)
            goto fail;
    if (nthreads < 1)
        nthreads = 1;
    if (nthreads > RPC_MAX_THREADS)
        nthreads = RPC_MAX_THREADS;
    for (unsigned i = 0; i < nthreads; i++) {
        rc = pthread_create(&rs->threads[i], NULL, cq_thread, rs);
        if (rc != 0) {
            snprintf(err, errlen, "cannot start a gRPC thread: %s", strerror(rc));
            return -rc;
        }
        rs->nthreads++;
    }
    return 0;
fail:
    snprintf(err, errlen, "cannot ask gRPC for calls");
    return PINPOOL_EINTERNAL;
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
    pthread_mutex_lock(&rs->lock);
    rs->on_shutdown = done;
    rs->on_shutdown_arg = arg;
    pthread_mutex_unlock(&rs->lock);
    atomic_store(&rs->stopping, true);
    hand_over(rs);
    if (!rs->started)
        grpc_server_start(rs->server); /* destroying a never-started server aborts */
    grpc_server_shutdown_and_notify(rs->server, rs->cq, &shutdown_tag);
}

void rpc_server_cancel_all(rpc_server_t *rs)
{
    if (rs != NULL && rs->shutdown_begun)
        grpc_server_cancel_all_calls(rs->server);
}

/* After the queue threads stopped: what is left on the queue. */
static void drain(rpc_server_t *rs)
{
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(rs->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE || ev.tag == &shutdown_tag)
            continue;
        rpc_tag_t *t = ev.tag;
        hand_over(rs);
        if (t->kind == TAG_REQUEST)
            call_free(t->c); /* never started: nothing points into it */
        else
            on_event(rs, ev);
    }
}

/*
 * grpc_shutdown joins gRPC's executor threads, and one of them may be a TCP
 * "backup poller" that a large reply's blocked write started: it polls with a
 * deadline of ~10 s and nothing wakes it, so grpc_shutdown took 10 s in 2 of
 * 5 stops after a client had read an 8 MiB object.  It runs on a thread of its
 * own here and the daemon waits for it at most GRPC_SHUTDOWN_WAIT_MS; past
 * that, rpc_shutdown_pending() says so and main leaves by _exit (gRPC's
 * threads still run: its static destructors must not).
 */
#define GRPC_SHUTDOWN_WAIT_MS 500

static pthread_mutex_t gs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gs_cv = PTHREAD_COND_INITIALIZER;
static bool gs_done, gs_pending;

static void *grpc_shutdown_thread(void *arg)
{
    (void)arg;
    grpc_shutdown();
    pthread_mutex_lock(&gs_lock);
    gs_done = true;
    pthread_cond_signal(&gs_cv);
    pthread_mutex_unlock(&gs_lock);
    return NULL;
}

static void shutdown_grpc_bounded(void)
{
    struct timespec ts;
    pthread_t t;

    if (pthread_create(&t, NULL, grpc_shutdown_thread, NULL) != 0) {
        grpc_shutdown();
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += GRPC_SHUTDOWN_WAIT_MS * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&gs_lock);
    while (!gs_done)
        if (pthread_cond_timedwait(&gs_cv, &gs_lock, &ts) == ETIMEDOUT)
            break;
    gs_pending = !gs_done;
    pthread_mutex_unlock(&gs_lock);
    if (gs_pending) {
        pthread_detach(t);
        srv_info("gRPC's clean-up waits for a background poller (up to 10 s after a large "
                 "reply): the daemon does not wait for it");
    } else {
        pthread_join(t, NULL);
    }
}

bool rpc_shutdown_pending(void)
{
    pthread_mutex_lock(&gs_lock);
    bool pending = gs_pending && !gs_done;
    pthread_mutex_unlock(&gs_lock);
    return pending;
}

void rpc_server_stop(rpc_server_t *rs, double grace_s)
{
    if (rs == NULL)
        return;
    rpc_server_begin_shutdown(rs, NULL, NULL);
    pthread_mutex_lock(&rs->lock);
    rs->on_shutdown = NULL;
    pthread_mutex_unlock(&rs->lock);
    if (rs->nthreads == 0) {
        /* Nobody polls the queue: drain it here until the shutdown tag. */
        grpc_server_cancel_all_calls(rs->server);
        for (;;) {
            grpc_event ev = grpc_completion_queue_next(rs->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.tag == &shutdown_tag)
                break;
            if (ev.type == GRPC_OP_COMPLETE) {
                hand_over(rs);
                call_free(((rpc_tag_t *)ev.tag)->c);
            }
        }
    } else {
        gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                             gpr_time_from_millis((int64_t)(grace_s * 1000), GPR_TIMESPAN));
        if (!wait_shutdown(rs, deadline)) {
            grpc_server_cancel_all_calls(rs->server);
            wait_shutdown(rs, gpr_inf_future(GPR_CLOCK_REALTIME));
        }
    }
    /* The calls on workers end (srv's waits end at shutdown) and send their
     * replies, whose batches the queue threads still take. */
    srv_workers_stop(rs->workers);
    rs->workers = NULL;
    grpc_completion_queue_shutdown(rs->cq);
    for (unsigned i = 0; i < rs->nthreads; i++)
        pthread_join(rs->threads[i], NULL);
    drain(rs);
    grpc_server_destroy(rs->server);
    grpc_completion_queue_destroy(rs->cq);
    if (rs->quota != NULL)
        grpc_resource_quota_unref(rs->quota);
    pthread_cond_destroy(&rs->cv);
    pthread_mutex_destroy(&rs->lock);
    free(rs->handles);
    free(rs);
    shutdown_grpc_bounded();
}
