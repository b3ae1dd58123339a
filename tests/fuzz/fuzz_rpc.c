/*
 * fuzz_rpc.c - libFuzzer target over gRPC request decoding and dispatch.
 *
 * An input is a run of calls, each [method byte][length: 2 bytes LE][request
 * bytes]; every call goes through rpc_dispatch(), the function the server
 * runs for each call (protobuf unpack, the method's handler, reply packing),
 * against a real srv_t.  The reply of a call that succeeded must unpack as the
 * method's reply type.  After each input every client's slices are freed and
 * the pool must be back to zero bytes in use (pool invariants are checked
 * after every operation: this is a POOL_DEBUG build).
 */
#include <grpc/slice.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common.h"
#include "pinpool.pb-c.h"
#include "rpc.h"
#include "service.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static srv_t *srv;
static const rpc_method_t *methods;
static size_t nmethods;

#define MAX_METHODS 64
/* Each method's reply type, from the proto's own service descriptor. */
static const ProtobufCMessageDescriptor *replies[MAX_METHODS];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const ProtobufCServiceDescriptor *svc = &pinpool__v1__pin_pool__descriptor;

    (void)argc;
    (void)argv;
    srv = fuzz_srv_create();
    methods = srv_service_methods(&nmethods);
    fuzz_check(nmethods <= MAX_METHODS);
    for (size_t m = 0; m < nmethods; m++) {
        const char *name = strrchr(methods[m].path, '/') + 1;
        for (unsigned i = 0; i < svc->n_methods; i++)
            if (strcmp(svc->methods[i].name, name) == 0)
                replies[m] = svc->methods[i].output;
        fuzz_check(replies[m] != NULL); /* every served method is in the proto */
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t at = 0;

    while (at < size) {
        size_t m = data[at++] % nmethods, len = 0;
        char text[512] = "";
        grpc_slice out;

        if (at + 2 <= size) {
            len = (size_t)data[at] | (size_t)data[at + 1] << 8;
            at += 2;
        }
        if (len > size - at)
            len = size - at;
        int rc = rpc_dispatch(&methods[m], srv, "", data + at, len, &out, text, sizeof(text));
        at += len;
        if (rc != 0) {
            fuzz_check(rc < 0);
            fuzz_check(text[0] != '\0');
            continue;
        }
        ProtobufCMessage *r = protobuf_c_message_unpack(replies[m], NULL, GRPC_SLICE_LENGTH(out),
                                                        GRPC_SLICE_START_PTR(out));
        fuzz_check(r != NULL);
        protobuf_c_message_free_unpacked(r, NULL);
        grpc_slice_unref(out);
    }
    fuzz_reset(&srv);
    return 0;
}
