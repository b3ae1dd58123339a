/*
 * grpc_call.c - see grpc_call.h.
 */
#include "grpc_call.h"

#include <criterion/criterion.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define METHOD(name) "/pinpool.v1.PinPool/" name

static char default_socket[160];

void test_call_default(const char *socket)
{
    snprintf(default_socket, sizeof(default_socket), "%s", socket);
}

/* One unary call of method with the request bytes req, on a channel of its own. */
test_call_result_t test_call(const test_call_opts_t *o, const char *method, const uint8_t *req,
                                size_t len)
{
    test_call_result_t r = {.status = GRPC_STATUS_UNKNOWN};
    char target[256];
    double t0 = test_now_s();

    if (o == NULL || o->target == NULL)
        snprintf(target, sizeof(target), "unix:%s", default_socket);
    else
        snprintf(target, sizeof(target), "%s", o->target);
    grpc_init();
    grpc_arg args[] = {{.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                        .value.integer = 1 << 30}};
    grpc_channel_args ca = {1, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    int ms = o != NULL && o->deadline_ms > 0 ? o->deadline_ms : 30000;
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                         gpr_time_from_millis(ms, GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               grpc_slice_from_static_string(method), NULL,
                                               deadline, NULL);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)req, len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&s, 1), *recv = NULL;
    grpc_slice_unref(s);
    grpc_metadata_array initial, trailer;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailer);
    grpc_slice details = grpc_empty_slice();
    grpc_metadata md = {.key = grpc_slice_from_static_string("authorization"),
                        .value = grpc_slice_from_copied_string(o != NULL && o->bearer ? o->bearer
                                                                                     : "")};
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = o != NULL && o->bearer != NULL ? 1 : 0;
    ops[0].data.send_initial_metadata.metadata = &md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailer;
    ops[5].data.recv_status_on_client.status = &r.status;
    ops[5].data.recv_status_on_client.status_details = &details;
    cr_assert_eq(grpc_call_start_batch(call, ops, 6, call, NULL), GRPC_CALL_OK);
    grpc_event ev;
    if (o != NULL && o->cancel_after_ms > 0) {
        ev = grpc_completion_queue_pluck(cq, call,
                                         gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                                      gpr_time_from_millis(o->cancel_after_ms,
                                                                           GPR_TIMESPAN)),
                                         NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT)
            grpc_call_cancel(call, NULL);
    }
    ev = grpc_completion_queue_pluck(cq, call, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    cr_assert_eq(ev.type, GRPC_OP_COMPLETE);
    r.secs = test_now_s() - t0;
    char *text = grpc_slice_to_c_string(details);
    snprintf(r.details, sizeof(r.details), "%s", text);
    gpr_free(text);
    for (size_t i = 0; i < trailer.count; i++)
        if (grpc_slice_str_cmp(trailer.metadata[i].key, "pinpool-error") == 0) {
            char *v = grpc_slice_to_c_string(trailer.metadata[i].value);
            r.code = atoi(v);
            gpr_free(v);
        }
    if (recv != NULL) {
        grpc_byte_buffer_reader rd;
        cr_assert(grpc_byte_buffer_reader_init(&rd, recv));
        grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
        r.reply_len = GRPC_SLICE_LENGTH(all);
        r.reply = malloc(r.reply_len + 1);
        memcpy(r.reply, GRPC_SLICE_START_PTR(all), r.reply_len);
        grpc_slice_unref(all);
        grpc_byte_buffer_destroy(recv);
    }
    grpc_slice_unref(md.value);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailer);
    grpc_byte_buffer_destroy(send);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    grpc_shutdown();
    return r;
}

/* chaos_call with a protobuf-c request. */
test_call_result_t test_call_msg(const test_call_opts_t *o, const char *method, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len + 1);

    protobuf_c_message_pack(m, buf);
    test_call_result_t r = test_call(o, method, buf, len);
    free(buf);
    return r;
}


test_call_result_t test_call_ping(const test_call_opts_t *o)
{
    Pinpool__V1__PingRequest req = PINPOOL__V1__PING_REQUEST__INIT;
    return test_call_msg(o, METHOD("Ping"), &req.base);
}

test_call_result_t test_call_info(const test_call_opts_t *o, Pinpool__V1__GetPoolInfoResponse **out)
{
    Pinpool__V1__GetPoolInfoRequest req = PINPOOL__V1__GET_POOL_INFO_REQUEST__INIT;
    test_call_result_t r = test_call_msg(o, METHOD("GetPoolInfo"), &req.base);

    if (out != NULL)
        *out = r.status == GRPC_STATUS_OK
                   ? pinpool__v1__get_pool_info_response__unpack(NULL, r.reply_len, r.reply)
                   : NULL;
    free(r.reply);
    r.reply = NULL;
    return r;
}

/* Bytes in use and clients, from GetPoolInfo (the test fails if it fails). */
uint64_t test_call_used(uint32_t *clients)
{
    Pinpool__V1__GetPoolInfoResponse *pi;
    test_call_result_t r = test_call_info(NULL, &pi);

    cr_assert_eq(r.status, GRPC_STATUS_OK, "GetPoolInfo: %s", r.details);
    cr_assert_not_null(pi);
    uint64_t used = pi->used_bytes;
    if (clients != NULL)
        *clients = pi->num_clients;
    pinpool__v1__get_pool_info_response__free_unpacked(pi, NULL);
    return used;
}

test_call_result_t test_call_alloc(const test_call_opts_t *o, const char *client, uint64_t size,
                                uint64_t *slice_id)
{
    Pinpool__V1__AllocatePoolMemoryRequest req = PINPOOL__V1__ALLOCATE_POOL_MEMORY_REQUEST__INIT;
    req.client_id = (char *)client;
    req.device_id = -1;
    req.size_bytes = size;
    test_call_result_t r = test_call_msg(o, METHOD("AllocatePoolMemory"), &req.base);

    if (slice_id != NULL)
        *slice_id = 0;
    if (r.status == GRPC_STATUS_OK && slice_id != NULL) {
        Pinpool__V1__AllocatePoolMemoryResponse *a =
            pinpool__v1__allocate_pool_memory_response__unpack(NULL, r.reply_len, r.reply);
        cr_assert_not_null(a);
        *slice_id = a->slice_id;
        pinpool__v1__allocate_pool_memory_response__free_unpacked(a, NULL);
    }
    free(r.reply);
    r.reply = NULL;
    return r;
}

test_call_result_t test_call_free(const char *client, uint64_t slice)
{
    Pinpool__V1__FreePoolMemoryRequest req = PINPOOL__V1__FREE_POOL_MEMORY_REQUEST__INIT;
    req.client_id = (char *)client;
    req.slice_id = slice;
    test_call_result_t r = test_call_msg(NULL, METHOD("FreePoolMemory"), &req.base);
    free(r.reply);
    r.reply = NULL;
    return r;
}

/* A line of the daemon's /proc/PID/status ("VmHWM:", "VmData:") in bytes. */
uint64_t test_proc_status(pid_t pid, const char *field)
{
    char path[64], line[256];
    unsigned long long kb = 0;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, field, strlen(field)) == 0)
            sscanf(line + strlen(field), "%llu", &kb);
    fclose(f);
    return (uint64_t)kb * 1024;
}