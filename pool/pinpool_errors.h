/*
 * pinpool_errors.h - pinpool's error codes: the one list, at the bottom of the
 * house so that every layer (pool/, ipc/, server/, client/) may use it.
 *
 * Owns: PINPOOL_ERRNO_MAP, the enum of PINPOOL_E* it makes, and the
 * declarations of pinpool_strerror and pinpool_err_name (pool/errors.c).
 * Installed next to pinpool.h, which includes it: part of libpinpool's public
 * API, so it names nothing but PINPOOL_* / pinpool_* and needs only the C
 * standard headers.
 * Never: includes another pinpool header; gives a code a new value (the
 * values are ABI).
 *
 * Errors are negative numbers: either one of PINPOOL_E* below or -errno from a
 * system call.  pinpool_strerror() and pinpool_err_name() know both kinds.
 */
#ifndef PINPOOL_ERRORS_H
#define PINPOOL_ERRORS_H

#ifdef __cplusplus
extern "C" {
#endif

/* libpinpool is built with -fvisibility=hidden; these symbols are its API. */
#ifndef PINPOOL_EXPORT
#if defined(__GNUC__) && defined(PINPOOL_BUILDING)
#define PINPOOL_EXPORT __attribute__((visibility("default")))
#else
#define PINPOOL_EXPORT
#endif
#endif

/*
 * The error list.  XX(name, value, grpc_status, message): the daemon answers
 * each code with the named gRPC status and the code itself in the trailing
 * metadata, which a client reads back.  A failure that carries no code (gRPC's
 * own: the daemon unreachable, a deadline) is mapped back from its status to
 * the FIRST code listed with it (proto/status.c does both directions), so
 * the order matters: CONNECT before SHUTDOWN, INVAL first of INVALID_ARGUMENT.
 * UPGRADE: a call that arrived while the daemon was paused for a takeover; it
 * did nothing, and libpinpool tries it again (bounded).
 * SESSION is the library's own (the daemon never answers it): a context whose
 * session ended with its daemon (pinpool_reconnect, pinpool.h).
 */
#define PINPOOL_ERRNO_MAP(XX)                                                        \
    XX(INVAL, -1001, INVALID_ARGUMENT, "invalid argument")                           \
    XX(TOOBIG, -1002, INVALID_ARGUMENT, "size is larger than the pool")              \
    XX(ALIGN, -1003, INVALID_ARGUMENT,                                               \
       "alignment must be a power of two that divides the chunk size")               \
    XX(NODEV, -1004, INVALID_ARGUMENT, "no such device in the pool")                 \
    XX(NOSPC, -1005, RESOURCE_EXHAUSTED, "no free extent is large enough")           \
    XX(NOENT, -1006, NOT_FOUND, "no such slice")                                     \
    XX(PERM, -1007, PERMISSION_DENIED, "the slice belongs to another client")        \
    XX(CONNECT, -1009, UNAVAILABLE, "cannot reach the pinpool daemon")               \
    XX(SHUTDOWN, -1008, UNAVAILABLE, "the daemon is shutting down")                  \
    XX(PROTO, -1010, INTERNAL, "protocol error between client and daemon")           \
    XX(INTERNAL, -1011, INTERNAL, "internal error")                                  \
    XX(CUDA, -1012, FAILED_PRECONDITION, "CUDA call failed")                         \
    XX(CLOSED, -1013, FAILED_PRECONDITION, "the context is not connected")           \
    XX(TIMEOUT, -1014, DEADLINE_EXCEEDED, "the daemon did not answer in time")       \
    XX(EXIST, -1015, ALREADY_EXISTS, "a slice is already kept under that tag")      \
    XX(NOKEY, -1016, NOT_FOUND, "no object under that key")                          \
    XX(TIER, -1017, UNAVAILABLE, "the spill tier failed")                            \
    XX(BUSY, -1018, UNAVAILABLE, "the object is leased by a reader; retry later")    \
    XX(SESSION, -1019, FAILED_PRECONDITION,                                          \
       "the daemon restarted: this context's session and its slices are gone; "      \
       "pinpool_reconnect makes a new one")                                          \
    XX(UPGRADE, -1020, UNAVAILABLE,                                                  \
       "the daemon is handing over to its successor (serve --takeover); try again")

enum {
#define PINPOOL_XX_(name, value, status, msg) PINPOOL_E##name = (value),
    PINPOOL_ERRNO_MAP(PINPOOL_XX_)
#undef PINPOOL_XX_
};

/* "no free extent is large enough", or strerror(-err) for -errno values. */
PINPOOL_EXPORT const char *pinpool_strerror(int err);
/* "PINPOOL_ENOSPC", "ENOMEM", ... ; "UNKNOWN" for anything else. */
PINPOOL_EXPORT const char *pinpool_err_name(int err);

#ifdef __cplusplus
}
#endif
#endif /* PINPOOL_ERRORS_H */
