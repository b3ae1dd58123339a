/*
 * call.c - unary gRPC calls from libpinpool to the daemon (C core API).
 *
 * Owns: the channel (with a subchannel pool of its own), its message limits (CLIENT_MAX_MESSAGE both ways: the
 * daemon's own --max-message-size bounds what it takes and sends; a request
 * over it is refused here, before it is sent), the bearer token of a
 * "tcp:HOST:PORT" target (read once from $PINPOOL_TOKEN_FILE and sent as
 * "authorization: Bearer TOKEN" on every call), and a stack of pluck
 * completion queues, one per call in flight, so that any number of threads
 * can call at once.
 * Never: maps gRPC statuses to pinpool codes itself (proto/status.c does, from
 * the one list) or knows a context (its message goes to the caller's buffer);
 * keeps the token anywhere but rpc->bearer.
 * Locking: rpc->lock guards the stack only; a call runs without it.
 */
#include <errno.h>
#include <fcntl.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "status.h"

#define CALL_TIMEOUT_MS 120000 /* an allocation may wait for chunks being pinned */
#define MAX_IDLE_CQS 16
/* The largest message either way: the most any daemon's --max-message-size allows. */
#define CLIENT_MAX_MESSAGE (1u << 30)
#define TOKEN_MAX 256

struct pinpool__rpc {
    grpc_channel *channel;
    char token[64];
    bool tcp;
    char bearer[16 + TOKEN_MAX]; /* "Bearer TOKEN", tcp: only; "" if none */
    char token_error[320];      /* why $PINPOOL_TOKEN_FILE could not be read; "" if it could */
    pthread_mutex_t lock;
    grpc_completion_queue *idle[MAX_IDLE_CQS];
    int nidle;
};

/* The bearer token for a TCP target, from $PINPOOL_TOKEN_FILE (the daemon's
 * --listen-token-file).  Unset: no token (the daemon says what is missing). */
static void read_token(pinpool__rpc_t *rpc)
{
    const char *path = getenv("PINPOOL_TOKEN_FILE");
    char buf[TOKEN_MAX + 2];
    ssize_t n;
    int fd;

    if (path == NULL || path[0] == '\0')
        return;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(rpc->token_error, sizeof(rpc->token_error), "cannot read the token file "
                 "$PINPOOL_TOKEN_FILE=%s: %s", path, strerror(errno));
        return;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0)
        n = 0;
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    if (n == 0 || n > TOKEN_MAX) {
        snprintf(rpc->token_error, sizeof(rpc->token_error), "the token file "
                 "$PINPOOL_TOKEN_FILE=%s holds no token (one line of at most %d characters)",
                 path, TOKEN_MAX);
        return;
    }
    snprintf(rpc->bearer, sizeof(rpc->bearer), "Bearer %s", buf);
    memset(buf, 0, sizeof(buf));
}

int pinpool__rpc_open(pinpool__rpc_t **out, const char *socket_path)
{
    pinpool__rpc_t *rpc = calloc(1, sizeof(*rpc));
    grpc_channel_credentials *creds;
    char target[256];

    if (rpc == NULL)
        return -ENOMEM;
    rpc->tcp = strncmp(socket_path, "tcp:", 4) == 0;
    if (rpc->tcp) {
        snprintf(target, sizeof(target), "%s", socket_path + 4);
        read_token(rpc);
    } else {
        snprintf(target, sizeof(target), "unix:%s", socket_path);
    }
    grpc_init();
    grpc_arg args[] = {
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = (int)CLIENT_MAX_MESSAGE},
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
         .value.integer = (int)CLIENT_MAX_MESSAGE},
        /* A connection of this channel's own: the unix target names the checked
         * socket directory by a descriptor number (/proc/self/fd/N/...), which
         * means another directory once that descriptor is closed and reused. */
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
         .value.integer = 1},
        /* After a takeover the socket is served again at once: reconnect soon
         * (gRPC's first back-off is 1 s).  Not GRPC_ARG_MIN_RECONNECT_BACKOFF_MS:
         * gRPC also takes it as the least time a connection attempt gets (20 s
         * by default), and at 20 ms a busy or instrumented daemon that had not
         * sent its HTTP/2 SETTINGS by then failed the call ("connection
         * attempt timed out before receiving SETTINGS frame"). */
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
         .value.integer = 20},
    };
    grpc_channel_args ca = {sizeof(args) / sizeof(args[0]), args};
    creds = grpc_insecure_credentials_create();
    rpc->channel = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    pthread_mutex_init(&rpc->lock, NULL);
    *out = rpc;
    return 0;
}

void pinpool__rpc_close(pinpool__rpc_t *rpc)
{
    if (rpc == NULL)
        return;
    for (int i = 0; i < rpc->nidle; i++) {
        grpc_completion_queue_shutdown(rpc->idle[i]);
        grpc_completion_queue_destroy(rpc->idle[i]);
    }
    grpc_channel_destroy(rpc->channel);
    pthread_mutex_destroy(&rpc->lock);
    memset(rpc->bearer, 0, sizeof(rpc->bearer));
    free(rpc);
    grpc_shutdown();
}

void pinpool__rpc_set_token(pinpool__rpc_t *rpc, const char *token)
{
    snprintf(rpc->token, sizeof(rpc->token), "%s", token);
}

static grpc_completion_queue *cq_get(pinpool__rpc_t *rpc)
{
    grpc_completion_queue *cq = NULL;

    pthread_mutex_lock(&rpc->lock);
    if (rpc->nidle > 0)
        cq = rpc->idle[--rpc->nidle];
    pthread_mutex_unlock(&rpc->lock);
    return cq != NULL ? cq : grpc_completion_queue_create_for_pluck(NULL);
}

static void cq_put(pinpool__rpc_t *rpc, grpc_completion_queue *cq)
{
    pthread_mutex_lock(&rpc->lock);
    if (rpc->nidle < MAX_IDLE_CQS) {
        rpc->idle[rpc->nidle++] = cq;
        cq = NULL;
    }
    pthread_mutex_unlock(&rpc->lock);
    if (cq != NULL) {
        grpc_completion_queue_shutdown(cq);
        grpc_completion_queue_destroy(cq);
    }
}

/* The pinpool code a failed call carries, else one mapped back from its
 * status (proto/status.c: UNAVAILABLE is PINPOOL_ECONNECT, ...). */
static int call_error(grpc_status_code status, const grpc_metadata_array *trailer)
{
    for (size_t i = 0; i < trailer->count; i++) {
        const grpc_metadata *md = &trailer->metadata[i];
        if (grpc_slice_str_cmp(md->key, "pinpool-error") == 0) {
            char buf[16];
            size_t n = GRPC_SLICE_LENGTH(md->value);
            if (n < sizeof(buf)) {
                memcpy(buf, GRPC_SLICE_START_PTR(md->value), n);
                buf[n] = '\0';
                int code = atoi(buf);
                if (code < 0)
                    return code;
            }
        }
    }
    if (status == GRPC_STATUS_CANCELLED) /* we never cancel: the daemon went away mid-call */
        status = GRPC_STATUS_UNAVAILABLE;
    return proto_error_of(status);
}

int pinpool__rpc_call(pinpool__rpc_t *rpc, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                      int *grpc_status, char *msg, size_t msglen)
{
    grpc_completion_queue *cq = cq_get(rpc);
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                         gpr_time_from_millis(CALL_TIMEOUT_MS, GPR_TIMESPAN));
    grpc_metadata_array initial_md, trailer;
    grpc_byte_buffer *send = NULL, *recv = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    const char *error_string = NULL;
    grpc_call *call;
    grpc_op ops[6];
    grpc_event ev;
    int rc = 0;

    if (grpc_status != NULL)
        *grpc_status = GRPC_STATUS_UNKNOWN;
    if (rpc->token_error[0] != '\0') {
        snprintf(msg, msglen, "%s", rpc->token_error);
        cq_put(rpc, cq);
        return PINPOOL_EPERM;
    }
    size_t len = protobuf_c_message_get_packed_size(req);
    if (len > CLIENT_MAX_MESSAGE) {
        char a[32], b[32];
        snprintf(msg, msglen, "the %s is %s, more than any gRPC message to the daemon may be "
                 "(%s): for objects that large use pinpool_alloc + pinpool_release (and "
                 "pinpool_acquire to read them)", req->descriptor->name,
                 pinpool_format_size(len, a, sizeof(a)),
                 pinpool_format_size(CLIENT_MAX_MESSAGE, b, sizeof(b)));
        cq_put(rpc, cq);
        return -EMSGSIZE;
    }
    grpc_slice out = grpc_slice_malloc(len);
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(out));
    send = grpc_raw_byte_buffer_create(&out, 1);
    grpc_slice_unref(out);

    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailer);
    call = grpc_channel_create_call(rpc->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                    grpc_slice_from_static_string(method), NULL, deadline, NULL);
    memset(ops, 0, sizeof(ops));
    grpc_metadata md[2];
    size_t nmd = 0;
    if (rpc->token[0] != '\0')
        md[nmd++] = (grpc_metadata){.key = grpc_slice_from_static_string("pinpool-token"),
                                    .value = grpc_slice_from_static_string(rpc->token)};
    if (rpc->bearer[0] != '\0')
        md[nmd++] = (grpc_metadata){.key = grpc_slice_from_static_string("authorization"),
                                    .value = grpc_slice_from_static_string(rpc->bearer)};
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = nmd;
    ops[0].data.send_initial_metadata.metadata = md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailer;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.error_string = &error_string;

    if (grpc_call_start_batch(call, ops, 6, call, NULL) != GRPC_CALL_OK) {
        snprintf(msg, msglen, "cannot start a gRPC call");
        rc = PINPOOL_EINTERNAL;
        grpc_call_unref(call);
        goto out;
    }
    ev = grpc_completion_queue_pluck(cq, call, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_call_unref(call);
    if (grpc_status != NULL)
        *grpc_status = (int)status;
    if (ev.type != GRPC_OP_COMPLETE || !ev.success) {
        snprintf(msg, msglen, "the gRPC call did not complete");
        rc = PINPOOL_EPROTO;
        goto out;
    }
    if (status != GRPC_STATUS_OK) {
        char *text = grpc_slice_to_c_string(details);
        rc = call_error(status, &trailer);
        if (rc == PINPOOL_ECONNECT)
            snprintf(msg, msglen, "the pinpool daemon is not reachable (%s)%s", text,
                     status == GRPC_STATUS_UNAVAILABLE ? "; is `pinpool serve` running?" : "");
        else if (status == GRPC_STATUS_RESOURCE_EXHAUSTED &&
                 strstr(text, "larger than max") != NULL) {
            /* gRPC's own limit, before the daemon saw the call: its --max-message-size */
            char a[32];
            rc = -EMSGSIZE;
            snprintf(msg, msglen, "the %s is %s, larger than the daemon takes (its "
                     "--max-message-size; gRPC says: %s): for objects that large use "
                     "pinpool_alloc + pinpool_release (and pinpool_acquire to read them)",
                     req->descriptor->name, pinpool_format_size(len, a, sizeof(a)), text);
        } else
            snprintf(msg, msglen, "%s", text[0] != '\0' ? text : pinpool_strerror(rc));
        gpr_free(text);
        goto out;
    }
    grpc_byte_buffer_reader reader;
    if (recv == NULL || !grpc_byte_buffer_reader_init(&reader, recv)) {
        snprintf(msg, msglen, "the daemon sent no reply message");
        rc = PINPOOL_EPROTO;
        goto out;
    }
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    *resp = protobuf_c_message_unpack(resp_desc, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (*resp == NULL) {
        snprintf(msg, msglen, "cannot decode the daemon's %s", resp_desc->name);
        rc = PINPOOL_EPROTO;
    }

out:
    if (error_string != NULL)
        gpr_free((void *)error_string);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailer);
    grpc_byte_buffer_destroy(send);
    if (recv != NULL)
        grpc_byte_buffer_destroy(recv);
    cq_put(rpc, cq);
    return rc;
}
