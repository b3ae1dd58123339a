/*
 * fuzz_rpc.c - libFuzzer target over gRPC request decoding and dispatch.
 *
 * An input is a run of calls, each [method byte][length: 2 bytes LE][request
 * bytes]; the method byte's low 7 bits pick the method, its top bit says that
 * the caller gives up on the call (cancelled, or past its deadline) before
 * the reply reaches it.  Every call goes through the steps the server runs
 * (rpc.h: rpc_work_begin, _run, _pack, _undo, _end) against a real srv_t with
 * a file spill tier (in a temp directory) and small limits (1 MiB messages,
 * 64 items a batch): a call put off to a worker (RPC_DEFER) runs again right
 * here with may_block, as a worker would; a call whose caller gave up is
 * undone after it succeeded, as when its reply batch fails.
 * Checked: a failure is a negative code with a message; a call that succeeded
 * has a reply that unpacks as the method's reply type and is within the
 * message limit; no handler defers where it may wait.  After each input every
 * client's slices are freed and the pool must be back to zero bytes in use
 * (pool invariants are checked after every operation: this is a POOL_DEBUG
 * build), so that an undo that forgot a slice shows.
 */
#include <grpc/slice.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "pinpool.pb-c.h"
#include "rpc.h"
#include "service.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static srv_t *srv;
static srv_service_t *svc;
static const rpc_method_t *methods;
static size_t nmethods;
static rpc_limits_t lim;
static char tier_dir[64];
static long deferred, undone; /* for FUZZ_STATS=1 */

#define MAX_METHODS 64
/* Each method's reply type, from the proto's own service descriptor. */
static const ProtobufCMessageDescriptor *replies[MAX_METHODS];

static void print_stats(void)
{
    fprintf(stderr, "fuzz_rpc: %ld calls put off to a worker, %ld undone\n", deferred, undone);
}

static void at_exit(void)
{
    srv_service_destroy(svc);
    srv_destroy(srv);
    if (tier_dir[0] != '\0') {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tier_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "fuzz_rpc: cannot remove %s\n", tier_dir);
    }
}

static void make_service(void)
{
    char err[256];

    fuzz_check(srv_service_create(&svc, srv, err, sizeof(err)) == 0);
    srv_service_limits(srv_config(srv), &lim);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const ProtobufCServiceDescriptor *svd = &pinpool__v1__pin_pool__descriptor;

    (void)argc;
    (void)argv;
    snprintf(tier_dir, sizeof(tier_dir), "/tmp/pinpool-fuzz-XXXXXX");
    fuzz_check(mkdtemp(tier_dir) != NULL);
    snprintf(fuzz_tier, sizeof(fuzz_tier), "file://%s", tier_dir);
    srv = fuzz_srv_create();
    make_service();
    atexit(at_exit);
    if (getenv("FUZZ_STATS") != NULL)
        atexit(print_stats);
    methods = srv_service_methods(&nmethods);
    fuzz_check(nmethods <= MAX_METHODS && nmethods <= 0x80);
    for (size_t m = 0; m < nmethods; m++) {
        const char *name = strrchr(methods[m].path, '/') + 1;
        for (unsigned i = 0; i < svd->n_methods; i++)
            if (strcmp(svd->methods[i].name, name) == 0)
                replies[m] = svd->methods[i].output;
        fuzz_check(replies[m] != NULL); /* every served method is in the proto */
    }
    return 0;
}

/* One call, as the server runs it; gives_up: the caller never hears back. */
static void one_call(size_t m, bool gives_up, const uint8_t *req, size_t len)
{
    rpc_work_t w;
    grpc_slice out;
    int rc = rpc_work_begin(&w, &methods[m], svc, "", lim.max_items, req, len);

    if (rc == 0)
        rc = rpc_work_run(&w, false);
    if (rc == RPC_DEFER) {
        deferred++;
        rc = rpc_work_run(&w, true);
        fuzz_check(rc != RPC_DEFER);
    }
    if (rc == 0) {
        rc = rpc_work_pack(&w, lim.max_message, &out);
        if (rc != 0) /* as the server does: the caller hears of a failure */
            rpc_work_undo(&w);
    }
    if (rc != 0) {
        fuzz_check(rc < 0);
        fuzz_check(w.reply.text[0] != '\0');
        rpc_work_end(&w);
        return;
    }
    fuzz_check(GRPC_SLICE_LENGTH(out) <= lim.max_message);
    ProtobufCMessage *r = protobuf_c_message_unpack(replies[m], NULL, GRPC_SLICE_LENGTH(out),
                                                    GRPC_SLICE_START_PTR(out));
    fuzz_check(r != NULL);
    protobuf_c_message_free_unpacked(r, NULL);
    grpc_slice_unref(out);
    if (gives_up) {
        undone++;
        rpc_work_undo(&w);
    }
    rpc_work_end(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t at = 0;

    while (at < size) {
        uint8_t b = data[at++];
        size_t m = (b & 0x7f) % nmethods, len = 0;

        if (at + 2 <= size) {
            len = (size_t)data[at] | (size_t)data[at + 1] << 8;
            at += 2;
        }
        if (len > size - at)
            len = size - at;
        one_call(m, (b & 0x80) != 0, data + at, len);
        at += len;
    }
    srv_service_destroy(svc); /* it holds srv, which fuzz_reset may make anew */
    svc = NULL;
    fuzz_reset(&srv);
    make_service();
    return 0;
}
