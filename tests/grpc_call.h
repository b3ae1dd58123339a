/*
 * grpc_call.h - raw gRPC calls to the daemon, as a stock client makes them:
 * our own request bytes (a NUL inside a string, a million keys), a deadline,
 * a cancel, an "authorization" header, and what came back (the status, the
 * pinpool-error trailer, the details, the reply bytes).  One channel per call.
 * Used by the chaos suite (tests/test_chaos.c).
 * Owns: the default target (the unix socket of test_call_default); no other
 * state.  gRPC must not be initialised in a process that then forks a child
 * which uses it (test_run_as): every call initialises and shuts it down.
 */
#ifndef PINPOOL_TEST_GRPC_CALL_H
#define PINPOOL_TEST_GRPC_CALL_H

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pinpool.pb-c.h"

typedef struct test_call_opts {
    const char *target;  /* "unix:PATH" or "HOST:PORT"; NULL: the daemon's unix socket */
    const char *bearer;  /* the "authorization" value to send, or NULL */
    int deadline_ms;     /* 0: 30 s */
    int cancel_after_ms; /* 0: never cancel */
} test_call_opts_t;

typedef struct test_call_result {
    grpc_status_code status;
    int code; /* the pinpool-error trailer, 0 without one */
    char details[1024];
    uint8_t *reply; /* the reply message (malloc'd) on OK */
    size_t reply_len;
    double secs;
} test_call_result_t;

/* Calls whose options name no target go to the unix socket at socket path. */
void test_call_default(const char *socket);
/* One unary call of method with the request bytes req (the test fails if it
 * cannot be made at all).  r.reply is the caller's to free. */
test_call_result_t test_call(const test_call_opts_t *o, const char *method, const uint8_t *req,
                             size_t len);
/* test_call with a protobuf-c request. */
test_call_result_t test_call_msg(const test_call_opts_t *o, const char *method,
                                 const ProtobufCMessage *m);
/* The calls the suite makes often (their reply freed; test_call_info's unpacked into *out
 * when out is not NULL, the caller frees it). */
test_call_result_t test_call_ping(const test_call_opts_t *o);
test_call_result_t test_call_info(const test_call_opts_t *o, Pinpool__V1__GetPoolInfoResponse **out);
test_call_result_t test_call_alloc(const test_call_opts_t *o, const char *client, uint64_t size,
                                   uint64_t *slice_id);
test_call_result_t test_call_free(const char *client, uint64_t slice);
/* Bytes in use and clients, from GetPoolInfo on the default target (the test fails if it fails). */
uint64_t test_call_used(uint32_t *clients);
/* A line of /proc/PID/status ("VmHWM:", "VmData:") in bytes. */
uint64_t test_proc_status(pid_t pid, const char *field);

/* Expect r to have failed with gRPC status st, pinpool code want_code, and text in its details. */
#define TEST_EXPECT_STATUS(r, st, want_code, text)                                                \
    do {                                                                                     \
        cr_expect_eq((r).status, (st), "gRPC status %d, want %d (%s)", (int)(r).status,      \
                     (int)(st), (r).details);                                                \
        cr_expect_eq((r).code, (want_code), "pinpool code %s, want %s (%s)",                 \
                     pinpool_err_name((r).code), pinpool_err_name(want_code), (r).details);  \
        cr_expect(strstr((r).details, (text)) != NULL, "'%s' lacks '%s'", (r).details, text); \
    } while (0)

#endif
