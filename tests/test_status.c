/*
 * test_status.c - proto/status.c: pinpool codes <-> gRPC statuses, both ways,
 * from the one list (PINPOOL_ERRNO_MAP), and the client's reading of a call
 * that failed without a pinpool code.
 *
 * Owns: nothing beyond its tables.  Never: starts a daemon.  Locking: none.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <grpc/status.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"
#include "pinpool.h"
#include "status.h"

static const struct {
    int err;
    grpc_status_code status;
    const char *name;
} listed[] = {
#define XX(name, value, status, msg) {PINPOOL_E##name, GRPC_STATUS_##status, "PINPOOL_E" #name},
    PINPOOL_ERRNO_MAP(XX)
#undef XX
};

Test(status, every_code_goes_out_with_its_listed_status, .timeout = 10)
{
    for (size_t i = 0; i < sizeof(listed) / sizeof(listed[0]); i++) {
        cr_expect_eq(proto_status_of(listed[i].err), listed[i].status, "%s", listed[i].name);
        /* the way back lands on a code of the same status */
        cr_expect_eq(proto_status_of(proto_error_of(listed[i].status)), listed[i].status, "%s",
                     listed[i].name);
    }
    cr_expect_eq(proto_status_of(0), GRPC_STATUS_OK);
    cr_expect_eq(proto_status_of(-ENOMEM), GRPC_STATUS_RESOURCE_EXHAUSTED);
    cr_expect_eq(proto_status_of(-EMSGSIZE), GRPC_STATUS_RESOURCE_EXHAUSTED);
    cr_expect_eq(proto_status_of(-E2BIG), GRPC_STATUS_RESOURCE_EXHAUSTED);
    cr_expect_eq(proto_status_of(-EAGAIN), GRPC_STATUS_RESOURCE_EXHAUSTED);
    cr_expect_eq(proto_status_of(-EIO), GRPC_STATUS_INTERNAL);
    cr_expect_eq(proto_status_of(-99999), GRPC_STATUS_INTERNAL);
}

/* What a call that failed in gRPC itself (no pinpool code) reads as. */
Test(status, a_status_without_a_code_maps_back_as_before, .timeout = 10)
{
    cr_expect_eq(proto_error_of(GRPC_STATUS_OK), 0);
    cr_expect_eq(proto_error_of(GRPC_STATUS_UNAVAILABLE), PINPOOL_ECONNECT);
    cr_expect_eq(proto_error_of(GRPC_STATUS_DEADLINE_EXCEEDED), PINPOOL_ETIMEOUT);
    cr_expect_eq(proto_error_of(GRPC_STATUS_INVALID_ARGUMENT), PINPOOL_EINVAL);
    cr_expect_eq(proto_error_of(GRPC_STATUS_NOT_FOUND), PINPOOL_ENOENT);
    cr_expect_eq(proto_error_of(GRPC_STATUS_PERMISSION_DENIED), PINPOOL_EPERM);
    cr_expect_eq(proto_error_of(GRPC_STATUS_RESOURCE_EXHAUSTED), PINPOOL_ENOSPC);
    cr_expect_eq(proto_error_of(GRPC_STATUS_INTERNAL), PINPOOL_EPROTO);
    cr_expect_eq(proto_error_of(GRPC_STATUS_UNIMPLEMENTED), PINPOOL_EPROTO);
    cr_expect_eq(proto_error_of(GRPC_STATUS_UNKNOWN), PINPOOL_EPROTO);
    cr_expect_eq(proto_error_of(GRPC_STATUS_DATA_LOSS), PINPOOL_EPROTO);
}

/* No daemon behind the socket (a stale socket file: the directory checks
 * pass, nobody listens): gRPC says UNAVAILABLE and the call says why; no
 * directory at all is refused at connect, with the same hint. */
Test(status, a_call_to_no_daemon_is_connect_with_a_hint, .timeout = 30)
{
    char dir[] = "/tmp/pinpool-status-XXXXXX", path[64];
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    pinpool_ctx_t *ctx;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/pinpool.sock", dir);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd); /* the file stays, nobody listens */
    ctx = pinpool__connect_rpc_only(path);
    cr_assert_not_null(ctx);
    cr_assert_eq(pinpool_err(ctx), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_ping(ctx), PINPOOL_ECONNECT);
    cr_expect(strstr(pinpool_errmsg(ctx), "is `pinpool serve` running?") != NULL, "%s",
              pinpool_errmsg(ctx));
    pinpool_close(ctx);
    unlink(path);
    rmdir(dir);

    ctx = pinpool__connect_rpc_only("/tmp/pinpool-no-such-dir/pinpool.sock");
    cr_assert_not_null(ctx);
    cr_expect_eq(pinpool_err(ctx), PINPOOL_ECONNECT);
    cr_expect(strstr(pinpool_errmsg(ctx), "is `pinpool serve` running?") != NULL, "%s",
              pinpool_errmsg(ctx));
    pinpool_close(ctx);
}
