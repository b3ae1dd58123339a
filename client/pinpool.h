/*
 * pinpool.h - the one public header of libpinpool.
 *
 * libpinpool talks to the node's `pinpool serve` daemon: it asks for slices of
 * the daemon's pinned host pool over gRPC, receives the file descriptors of the
 * chunks behind a slice over the daemon's fd socket, and maps them into the
 * calling process.  Every call is thread-safe; a context may be shared by any
 * number of threads.
 *
 * Errors are negative numbers: either one of PINPOOL_E* below or -errno from a
 * system call.  pinpool_strerror() and pinpool_err_name() know both kinds.
 * pinpool_errmsg() gives the full message of the calling thread's last failure.
 */
#ifndef PINPOOL_H
#define PINPOOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PINPOOL_VERSION_MAJOR 0
#define PINPOOL_VERSION_MINOR 1
#define PINPOOL_VERSION_PATCH 0
#define PINPOOL_VERSION_STRING "0.1.0"

#if defined(__GNUC__) && defined(PINPOOL_BUILDING)
#define PINPOOL_EXPORT __attribute__((visibility("default")))
#else
#define PINPOOL_EXPORT
#endif

/*
 * The error list.  XX(name, value, grpc_status, message): the server maps each
 * code to the named gRPC status (server/status.c, the only place that does);
 * the client maps it back from the call's trailing metadata.
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
    XX(SHUTDOWN, -1008, UNAVAILABLE, "the daemon is shutting down")                  \
    XX(CONNECT, -1009, UNAVAILABLE, "cannot reach the pinpool daemon")               \
    XX(PROTO, -1010, INTERNAL, "protocol error between client and daemon")           \
    XX(INTERNAL, -1011, INTERNAL, "internal error")                                  \
    XX(CUDA, -1012, FAILED_PRECONDITION, "CUDA call failed")                         \
    XX(CLOSED, -1013, FAILED_PRECONDITION, "the context is not connected")           \
    XX(TIMEOUT, -1014, DEADLINE_EXCEEDED, "the daemon did not answer in time")       \
    XX(NOKEY, -1015, NOT_FOUND, "no object under that key")                          \
    XX(TIER, -1016, UNAVAILABLE, "the spill tier failed")                            \
    XX(BUSY, -1017, UNAVAILABLE, "the object is leased by a reader; retry later")

enum {
#define PINPOOL_XX_(name, value, status, msg) PINPOOL_E##name = (value),
    PINPOOL_ERRNO_MAP(PINPOOL_XX_)
#undef PINPOOL_XX_
};

/* "no free extent is large enough", or strerror(-err) for -errno values. */
PINPOOL_EXPORT const char *pinpool_strerror(int err);
/* "PINPOOL_ENOSPC", "ENOMEM", ... ; "UNKNOWN" for anything else. */
PINPOOL_EXPORT const char *pinpool_err_name(int err);
PINPOOL_EXPORT const char *pinpool_version(void);

/* Where pinpool_alloc's memory lives.  Host slices are device_id -1. */
#define PINPOOL_HOST (-1)

typedef struct pinpool_ctx pinpool_ctx_t;

typedef struct pinpool_slice {
    uint64_t id;           /* the daemon's slice id, never 0 */
    void *ptr;             /* usable address in this process */
    uint64_t size;         /* bytes asked for (the extent may be larger) */
    int32_t device_id;     /* PINPOOL_HOST or a GPU index */
    uint64_t start_offset; /* offset of the slice in the daemon's pool */
} pinpool_slice_t;

typedef struct pinpool_alloc_opts {
    int32_t device_id;  /* PINPOOL_HOST (the default when opts is NULL) */
    uint64_t alignment; /* 0: the pool's default (256 bytes) */
    const char *tag;    /* free-form label shown by `pinpool info`; may be NULL */
} pinpool_alloc_opts_t;

typedef struct pinpool_client_usage {
    char client_id[64];
    uint64_t bytes;
    uint32_t slices;
    int32_t pid; /* 0 for clients without an fd-socket session */
    uint32_t uid;
} pinpool_client_usage_t;

typedef struct pinpool_pool_info {
    uint64_t capacity_bytes; /* the whole pool, ready or not */
    uint64_t ready_bytes;    /* the part that can be handed out now */
    uint64_t used_bytes;
    uint64_t free_bytes;
    uint64_t largest_free_extent;
    uint64_t chunk_size;
    uint32_t num_chunks;
    uint32_t num_slices;
    uint32_t num_clients;
    double fragmentation; /* 1 - largest_free / free; 0 when free is 0 */
    char host_backend[16];
    char mode[16];
    uint32_t num_usage;
    pinpool_client_usage_t *usage; /* num_usage entries; freed by pinpool_pool_info_free */
} pinpool_pool_info_t;

/*
 * Connect to the daemon at socket_path (the gRPC socket; the fd socket is the
 * same path with ".fd" appended).  NULL means $PINPOOL_SOCKET, else
 * $XDG_RUNTIME_DIR/pinpool.sock, else /tmp/pinpool-$UID.sock.
 *
 * Always returns a context (NULL only when out of memory); check pinpool_err().
 * The fd-socket connection is this process's lease: when the context is closed
 * or the process dies, the daemon reclaims every slice the context holds.
 */
PINPOOL_EXPORT pinpool_ctx_t *pinpool_connect(const char *socket_path);
/* 0 when connected, else the error that pinpool_connect met. */
PINPOOL_EXPORT int pinpool_err(const pinpool_ctx_t *ctx);
/* Message of the calling thread's last failed call on ctx (or the connect error). */
PINPOOL_EXPORT const char *pinpool_errmsg(const pinpool_ctx_t *ctx);
/* The id the daemon gave this session; "" when not connected. */
PINPOOL_EXPORT const char *pinpool_client_id(const pinpool_ctx_t *ctx);
/* Unmaps everything, drops the lease (the daemon frees the slices) and frees ctx. */
PINPOOL_EXPORT void pinpool_close(pinpool_ctx_t *ctx);

/*
 * Allocate size bytes from the pool and map them.  On success fills *out and
 * returns 0; out->ptr stays valid until pinpool_free(out->id) or pinpool_close.
 * On failure returns a negative error and leaves *out untouched.
 */
PINPOOL_EXPORT int pinpool_alloc(pinpool_ctx_t *ctx, uint64_t size,
                                 const pinpool_alloc_opts_t *opts, pinpool_slice_t *out);
/* Unmap and free one slice of this context.  freed_bytes may be NULL. */
PINPOOL_EXPORT int pinpool_free(pinpool_ctx_t *ctx, uint64_t slice_id, uint64_t *freed_bytes);
/* Free every slice this context holds. */
PINPOOL_EXPORT int pinpool_free_all(pinpool_ctx_t *ctx, uint64_t *freed_bytes);

/* GetPoolInfo.  On success the caller frees out with pinpool_pool_info_free. */
PINPOOL_EXPORT int pinpool_pool_info(pinpool_ctx_t *ctx, pinpool_pool_info_t *out);
PINPOOL_EXPORT void pinpool_pool_info_free(pinpool_pool_info_t *info);

/* Round-trips an empty call to the daemon (used to measure the RPC floor). */
PINPOOL_EXPORT int pinpool_ping(pinpool_ctx_t *ctx);

/*
 * Sizes in human units: "140GB", "64GiB", "512MB", "4k", "1048576".
 * Decimal suffixes (kB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB,
 * GiB, TiB, and the bare K, M, G, T) powers of 1024.  Returns 0 or PINPOOL_EINVAL.
 */
PINPOOL_EXPORT int pinpool_parse_size(const char *text, uint64_t *out);
/* "1.50 GiB", "512.00 MiB", "100 B" into buf; returns buf. */
PINPOOL_EXPORT char *pinpool_format_size(uint64_t bytes, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* PINPOOL_H */
