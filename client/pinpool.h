/*
 * pinpool.h - the one public header of libpinpool.
 *
 * libpinpool talks to the node's `pinpool serve` daemon: it asks for slices of
 * the daemon's pinned host pool over gRPC, receives the file descriptors of the
 * chunks behind a slice over the daemon's fd socket, and maps them into the
 * calling process.  Every call is thread-safe; a context may be shared by any
 * number of threads.
 *
 * Errors are negative numbers: either one of PINPOOL_E* (pinpool_errors.h,
 * included here) or -errno from a system call.  pinpool_strerror() and
 * pinpool_err_name() know both kinds.  pinpool_errmsg() gives the full message
 * of the calling thread's last failure.
 */
#ifndef PINPOOL_H
#define PINPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h> /* ssize_t */

#include "pinpool_errors.h" /* the error codes, PINPOOL_EXPORT; installed next to this one */

#ifdef __cplusplus
extern "C" {
#endif

#define PINPOOL_VERSION_MAJOR 0
#define PINPOOL_VERSION_MINOR 1
#define PINPOOL_VERSION_PATCH 0
#define PINPOOL_VERSION_STRING "0.1.0"

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

/* pinpool_alloc_opts_t.flags */
#define PINPOOL_ALLOC_GPU_ONLY 0x1u /* host slice for CUDA copies only: no CPU access (the
                                     * vmm backend then maps it ~3x faster) */
#define PINPOOL_ALLOC_KEEP 0x2u     /* keep the slice after this process exits, under tag;
                                     * pinpool_attach finds it, anyone may free it */
/* pinpool_attach's flags: map a device slice of a vmm device pool read-write
 * (without it an attached device slice is read-only: a write faults).  Its
 * maker (pinpool_alloc) always maps it read-write. */
#define PINPOOL_ATTACH_WRITABLE 0x4u

typedef struct pinpool_alloc_opts {
    int32_t device_id;  /* PINPOOL_HOST (the default when opts is NULL) or a GPU */
    uint64_t alignment; /* 0: the pool's default (256 bytes) */
    const char *tag;    /* free-form label (the daemon logs it); the name with KEEP */
    uint32_t flags;     /* PINPOOL_ALLOC_* */
} pinpool_alloc_opts_t;

typedef struct pinpool_client_usage {
    char client_id[64];
    uint64_t bytes;
    uint32_t slices;
    uint64_t device_bytes; /* in the device pools; bytes is the host pool */
    int32_t pid; /* 0 for clients without an fd-socket session */
    uint32_t uid;
} pinpool_client_usage_t;

#define PINPOOL_MAX_DEVICES 16

typedef struct pinpool_device_info {
    int32_t device_id;
    char name[64];
    uint64_t capacity_bytes;
    uint64_t used_bytes;
    uint64_t free_bytes;
    uint64_t largest_free_extent;
    uint32_t num_slices;
} pinpool_device_info_t;

/* A GPU the daemon holds a CUDA context on (pinpool_pool_info_t.gpus). */
typedef struct pinpool_gpu_info {
    int32_t device_id;
    char role[32];              /* "device pool", "host pinning" or both */
    uint64_t device_pool_bytes; /* the daemon's device pool on it (0: none) */
    uint64_t gpu_used_bytes;    /* cuMemGetInfo: every process's use, the daemon's context
                                 * (~0.5 GiB on an H200) and pool included */
    uint64_t gpu_total_bytes;
} pinpool_gpu_info_t;

/* The spill tier and the named objects (pinpool_pool_info_t.spill). */
typedef struct pinpool_spill_info {
    char tier[16];             /* "file", "mooncake" or "none" */
    uint32_t objects;          /* named objects (released slices and puts), all states */
    uint32_t objects_resident; /* in the pool (being spilled included) */
    uint32_t objects_spilled;  /* only in the tier (being restored included) */
    uint64_t resident_bytes;   /* spillable bytes in the pool */
    uint64_t spilled_bytes_now;
    uint64_t spills, bytes_spilled, spill_failures;     /* since start */
    uint64_t restores, bytes_restored, restore_failures;
    double spill_gbps, restore_gbps;       /* GB/s (1e9) over the time in tier calls */
    double spill_avg_ms, restore_avg_ms;   /* per object */
    uint64_t expired;                      /* objects dropped by their TTL */
    uint64_t low_watermark_bytes;
    char last_error[256];                  /* the last tier failure, "" if none */
} pinpool_spill_info_t;

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
    char host_backend[16];  /* "vmm", "register" or "memfd" */
    char mode[16];          /* "cuda" or "cpu-only" */
    uint32_t num_kept;      /* slices kept past their client (PINPOOL_ALLOC_KEEP) */
    double pin_seconds;     /* how long the host pool took to make; 0 while it goes on */
    uint32_t num_devices;
    pinpool_device_info_t devices[PINPOOL_MAX_DEVICES];
    uint32_t num_usage;
    pinpool_client_usage_t *usage; /* num_usage entries; freed by pinpool_pool_info_free */
    pinpool_spill_info_t spill;    /* the fields above keep their offsets */
    uint64_t cleaning_bytes;       /* freed, being zeroed before reuse: in neither used nor free */
    uint64_t chunk_replacements;   /* chunks given fresh memory as they passed to another uid */
    char stopped_short[320];       /* why the host pool stopped growing short of its capacity
                                    * (ready_bytes is what it reached); "" if it did not */
    uint32_t num_gpus;             /* the GPUs the daemon holds a context on, and why */
    pinpool_gpu_info_t gpus[PINPOOL_MAX_DEVICES];
} pinpool_pool_info_t;

/*
 * Connect to the daemon at socket_path (the gRPC socket; the fd socket is the
 * same path with ".fd" appended).  NULL means $PINPOOL_SOCKET, else
 * $XDG_RUNTIME_DIR/pinpool.sock, else /tmp/pinpool-$UID/pinpool.sock.
 *
 * Always returns a context (NULL only when out of memory); check pinpool_err().
 * The fd-socket connection is this process's lease: when the context is closed
 * or the process dies, the daemon reclaims every slice the context holds.
 *
 * Trust: the socket's directory must belong to this process's uid, root or
 * $PINPOOL_DAEMON_UID (a uid or a user name) and be writable by nobody else,
 * and the process listening on the fd socket must run as one of those uids
 * (or as the directory's owner); otherwise PINPOOL_EPERM, saying why: another
 * user may be posing as the daemon (a /tmp/pinpool-$UID made by someone else
 * while no daemon runs).  A daemon run by a service user for several users
 * (--allow-gid) is trusted with PINPOOL_DAEMON_UID=that user.  Each wait on the
 * fd socket (the greeting, each answer) is bounded by $PINPOOL_FD_TIMEOUT_MS
 * (10000): a call past it fails with PINPOOL_ETIMEOUT and the session goes on
 * (a late answer is recognised by its sequence number and discarded).
 */
PINPOOL_EXPORT pinpool_ctx_t *pinpool_connect(const char *socket_path);
/* 0 when connected, else the error that pinpool_connect met, or
 * PINPOOL_ESESSION once the session has ended (see pinpool_reconnect). */
PINPOOL_EXPORT int pinpool_err(const pinpool_ctx_t *ctx);
/* Message of the calling thread's last failed call on ctx (or the connect error). */
PINPOOL_EXPORT const char *pinpool_errmsg(const pinpool_ctx_t *ctx);
/* The id the daemon gave this session ("" when not connected); the pointer
 * stays valid, its text changes with pinpool_reconnect. */
PINPOOL_EXPORT const char *pinpool_client_id(const pinpool_ctx_t *ctx);
/*
 * A session ends when its daemon goes: the daemon exits, is killed or
 * restarts (the fd socket closes; the daemon freed the session's slices, and
 * a new daemon knows none of them).  From then on every call on ctx returns
 * PINPOOL_ESESSION, and so does pinpool_err(ctx); a call in flight when the
 * daemon goes returns it too (or the daemon's answer, if it came first).
 *
 * pinpool_reconnect makes a new session on ctx with the daemon now at the
 * same socket (with the checks of pinpool_connect): nothing of the old
 * session survives.  Its slices are forgotten (their ids mean nothing to the
 * new daemon) and their mappings unmapped: every pointer into them becomes
 * invalid (the addresses stay reserved until pinpool_close, so touching one
 * faults rather than reaching new memory); arenas on ctx start over with new
 * leases at their next call, and say PINPOOL_ESESSION for blocks of the old
 * ones; swap tags forget their host copies (a paused tag resumes from a copy
 * kept in the daemon under its key, if there is one).  What the daemon keeps
 * past a session - slices kept with PINPOOL_ALLOC_KEEP, named objects - is
 * found again by tag (pinpool_attach) and key (pinpool_acquire, pinpool_get),
 * where the daemon still has it: a daemon that restarted keeps only the
 * named objects its tier recovers.  Reconnecting a context whose session
 * still lives ends that session (the daemon frees its slices).  0, or the
 * error of connecting (PINPOOL_ECONNECT while no daemon runs: try again
 * later); ctx is then as it was.  Calls on other threads may run meanwhile:
 * those that began on the old session fail with PINPOOL_ESESSION.  A context
 * whose pinpool_connect failed may be reconnected too.
 */
PINPOOL_EXPORT int pinpool_reconnect(pinpool_ctx_t *ctx);
/* Unmaps everything, drops the lease (the daemon frees the slices) and frees ctx. */
PINPOOL_EXPORT void pinpool_close(pinpool_ctx_t *ctx);

/*
 * Allocate size bytes from the pool and map them.  On success fills *out and
 * returns 0; out->ptr stays valid until pinpool_free(out->id) or pinpool_close.
 * On failure returns a negative error and leaves *out untouched.
 *
 * Host slices: out->ptr is usable by the CPU (unless PINPOOL_ALLOC_GPU_ONLY)
 * and, when the daemon runs in CUDA mode, is already pinned for CUDA copies in
 * this process, by every visible GPU (vmm backend: $PINPOOL_HOST_ACCESS=current
 * limits that to the calling thread's current GPU, else GPU 0).  Device
 * slices (opts->device_id >= 0): out->ptr is a CUdeviceptr on that GPU.  On a
 * vmm device pool (the daemon's --device-backend) the slice's chunks are
 * imported into an address range of the slice's own, read-write for the
 * caller, and its start is aligned to the GPU's allocation granularity; on
 * an ipc pool the whole pool is opened from its CUDA IPC handle (once per
 * GPU, then cached).
 */
PINPOOL_EXPORT int pinpool_alloc(pinpool_ctx_t *ctx, uint64_t size,
                                 const pinpool_alloc_opts_t *opts, pinpool_slice_t *out);
/*
 * Map the slice kept under tag (made with PINPOOL_ALLOC_KEEP, perhaps by a
 * process that has exited) into this process.  flags: PINPOOL_ALLOC_GPU_ONLY,
 * PINPOOL_ATTACH_WRITABLE.  A device slice of a vmm device pool is mapped
 * read-only unless PINPOOL_ATTACH_WRITABLE (the reader of weights another
 * process published cannot overwrite them by mistake).  The slice stays
 * kept: pinpool_detach unmaps it here, pinpool_free frees it.
 */
PINPOOL_EXPORT int pinpool_attach(pinpool_ctx_t *ctx, const char *tag, uint32_t flags,
                                  pinpool_slice_t *out);
/* Unmap a slice from this process without freeing it (kept slices). */
PINPOOL_EXPORT int pinpool_detach(pinpool_ctx_t *ctx, uint64_t slice_id);
/*
 * A device slice of a vmm device pool: pinpool_dev_unmap lets this process's
 * mapping of it go (the GPU memory is the daemon's; nothing of it stays
 * held here) but keeps its addresses reserved; pinpool_dev_remap maps it
 * again at the same address with the same access (asking the daemon for its
 * chunks again: PINPOOL_ENOENT if it was freed meanwhile).  Between the two a
 * use of the slice faults.  0, PINPOOL_ENOENT (not mapped in this process),
 * PINPOOL_EINVAL (a host slice, an ipc device pool's slice, already
 * unmapped / still mapped), PINPOOL_ECUDA.
 */
PINPOOL_EXPORT int pinpool_dev_unmap(pinpool_ctx_t *ctx, uint64_t slice_id);
PINPOOL_EXPORT int pinpool_dev_remap(pinpool_ctx_t *ctx, uint64_t slice_id);
/* Unmap and free one slice of this context.  freed_bytes may be NULL. */
PINPOOL_EXPORT int pinpool_free(pinpool_ctx_t *ctx, uint64_t slice_id, uint64_t *freed_bytes);
/* Free every slice this context holds. */
PINPOOL_EXPORT int pinpool_free_all(pinpool_ctx_t *ctx, uint64_t *freed_bytes);

/*
 * Named objects.  Keys are 1-512 printable ASCII characters without spaces.
 *
 * pinpool_release gives slice_id (a host slice of this context) to the daemon
 * under key: the slice is unmapped here (do not touch its pointer once you
 * call this) and becomes a released object that the daemon may spill to its
 * tier when the pool needs room.  ttl_ms 0: it stays until acquired or
 * removed.  PINPOOL_EEXIST when key is taken.  On failure the slice stays
 * mapped and this context's.
 *
 * pinpool_acquire makes the object under key a slice of this context again,
 * restored from the tier if it was spilled (perhaps at another offset), and
 * maps it like pinpool_alloc (flags: PINPOOL_ALLOC_GPU_ONLY).  The object
 * leaves the table: free the slice, or release it again.  PINPOOL_ENOKEY if
 * there is none; PINPOOL_ENOSPC if it does not fit even after spilling others.
 */
PINPOOL_EXPORT int pinpool_release(pinpool_ctx_t *ctx, uint64_t slice_id, const char *key,
                                   uint64_t ttl_ms);
PINPOOL_EXPORT int pinpool_acquire(pinpool_ctx_t *ctx, const char *key, uint32_t flags,
                                   pinpool_slice_t *out);
/*
 * The object API (Mooncake Store's): the bytes travel in the RPC, up to the
 * daemon's --max-message-size (64 MiB by default) a message.
 *
 * put stores len bytes under key, replacing an object there.  Up to the
 * message limit in one Put, which replaces at once.  A larger object goes
 * through a slice instead (pinpool_alloc, a copy, pinpool_release under key;
 * needs a context with a session, which pinpool_connect's has): not atomic -
 * an object under key is removed just before the release, so a reader may
 * find none for that moment, and when two such puts race the last release
 * wins; a failed one may have removed the old object (its message says so).
 *
 * get copies the object into buf when len is enough (*got = its size) and
 * returns -ENOBUFS with *got otherwise.  An object larger than a reply may
 * carry (the limit less 1 KiB) is -EMSGSIZE, naming its size, the limit and
 * the way: pinpool_acquire, copy from the slice, pinpool_release under the
 * same key (the object is out of the table meanwhile, so do it only where
 * no one else reads it) - a get is a read, an acquire is not.
 *
 * exists returns 1 or 0; remove returns 0 or PINPOOL_ENOKEY.  Objects made by
 * put can be acquired too, and released slices read with get.
 */
PINPOOL_EXPORT int pinpool_put(pinpool_ctx_t *ctx, const char *key, const void *data, uint64_t len,
                               uint64_t ttl_ms);
PINPOOL_EXPORT int pinpool_get(pinpool_ctx_t *ctx, const char *key, void *buf, uint64_t len,
                               uint64_t *got);
PINPOOL_EXPORT int pinpool_exists(pinpool_ctx_t *ctx, const char *key);
PINPOOL_EXPORT int pinpool_remove(pinpool_ctx_t *ctx, const char *key);

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

/* ==================================================================================
 * Fan-out: one host buffer onto several GPUs
 *
 * pinpool_fanout copies bytes from host_src (best a pinned pool slice) to
 * dst_ptrs[i] (a CUdeviceptr on GPU devices[i]: a device slice or the caller's
 * own cuMemAlloc) for every i, byte-exact, and returns when all copies are
 * done.  It runs in this process, on streams of its own, one per GPU; the
 * daemon is not involved.  Methods (flags):
 *   DIRECT          one H2D copy per GPU, all at once (K crossings of PCIe);
 *   NCCL            H2D to devices[0], then ncclBroadcast to the others over
 *                   the GPU-to-GPU links (one communicator per GPU set, made
 *                   once with ncclCommInitAll and kept in ctx);
 *   NCCL_PIPELINED  the same in chunks: the H2D of chunk i+1 overlaps the
 *                   broadcast of chunk i ($PINPOOL_FANOUT_CHUNK, 64 MiB);
 *   AUTO            the fastest of those as measured: the first call for a GPU
 *                   set and size class (<4 MiB, <64 MiB, <1 GiB, larger) times
 *                   each method on this call's own buffers (twice, best kept;
 *                   up to 1 GiB each), keeps the winner in ctx and then runs
 *                   it over the whole buffer.  $PINPOOL_FANOUT=direct|nccl|
 *                   pipelined forces the choice.  Without NCCL: DIRECT.
 * NCCL is loaded with dlopen (libnccl.so.2: $PINPOOL_NCCL_LIB, the loader's
 * path, the CUDA toolkit, a Python nvidia-nccl wheel); NCCL_NVLS_ENABLE=0 is
 * set unless already set.  With one GPU every method is one H2D copy.
 *
 * ctx need not be connected (no RPC is made).  Calls on one ctx run one at a
 * time.  The calling thread's current CUDA context is restored on return.
 * Returns 0; PINPOOL_EINVAL (NULL pointers, ndev outside 1..PINPOOL_MAX_DEVICES,
 * a GPU listed twice, unknown flags); PINPOOL_ECUDA (no driver or GPU, or a
 * copy failed); PINPOOL_ENODEV (a GPU that this process cannot see);
 * -ELIBACC (NCCL asked for but not found); PINPOOL_EINTERNAL (an NCCL call
 * failed).  pinpool_errmsg(ctx) says more.  After a failure the destinations
 * hold unspecified bytes.
 * ================================================================================== */

#define PINPOOL_FANOUT_AUTO 0u
#define PINPOOL_FANOUT_DIRECT 1u
#define PINPOOL_FANOUT_NCCL 2u
#define PINPOOL_FANOUT_NCCL_PIPELINED 3u
#define PINPOOL_FANOUT_NMETHODS 4

PINPOOL_EXPORT int pinpool_fanout(pinpool_ctx_t *ctx, const void *host_src, uint64_t bytes,
                                  int ndev, const int *devices, void *const *dst_ptrs,
                                  unsigned flags);
/*
 * What AUTO decided for this GPU set and the size class of bytes: 0 and
 * *method (and, when gbps is not NULL, gbps[m] = the GB/s measured for method
 * m, 0 where not measured), or PINPOOL_ENOENT when nothing was measured yet.
 */
PINPOOL_EXPORT int pinpool_fanout_choice(pinpool_ctx_t *ctx, int ndev, const int *devices,
                                         uint64_t bytes, unsigned *method,
                                         double gbps[PINPOOL_FANOUT_NMETHODS]);
/* "auto", "direct", "nccl", "nccl-pipelined"; "?" otherwise. */
PINPOOL_EXPORT const char *pinpool_fanout_method_name(unsigned method);
/* "2.28.5 (/usr/lib/x86_64-linux-gnu/libnccl.so.2)" or "missing: why", into buf. */
PINPOOL_EXPORT const char *pinpool_nccl_describe(char *buf, size_t len);

/* ==================================================================================
 * Arena
 *
 * A client-side allocator over leased slices: the arena leases one large host
 * slice from the daemon (pinpool_alloc) and hands out blocks of it locally,
 * with no RPC and no system call per block; when no lease has room it leases
 * another (one RPC).  A block larger than a lease gets a lease of its own.
 * The blocks are carved by the same allocator as the daemon's pool (best fit,
 * coalescing), one pool chunk per lease.  Every call is thread-safe (one
 * mutex; leasing runs outside it).
 *
 * Ownership: the arena borrows ctx, which must outlive it; destroy the arena
 * before pinpool_close(ctx).  Leases are freed by pinpool_arena_destroy (or by
 * the daemon when ctx's lease ends).  Leases stay with the arena when their
 * blocks are freed (ready for the next blocks), except that a lease of a
 * single large block goes back to the daemon when that block is freed.
 * ================================================================================== */

typedef struct pinpool_arena pinpool_arena_t;

/* The largest alignment a block can ask for (leases are page aligned). */
#define PINPOOL_ARENA_MAX_ALIGN 4096
/* Used when pinpool_arena_create is given lease_size 0. */
#define PINPOOL_ARENA_DEFAULT_LEASE (64ull << 20)

typedef struct pinpool_arena_opts {
    uint64_t max_bytes;  /* cap on the bytes leased in all; 0 = none (the daemon's) */
    uint64_t quantum;    /* block sizes round up to it: a power of two <= 4096; 0 = 256 */
    uint32_t max_leases; /* cap on the leases of lease_size; 0 = as max_bytes allows, or 4096 */
    const char *tag;     /* the leases' tag in `pinpool info`; NULL = "arena" */
} pinpool_arena_opts_t;

/* A block and the lease that holds it (pinpool_arena_alloc_block). */
typedef struct pinpool_arena_block {
    void *ptr;
    uint64_t size;       /* bytes asked for */
    void *lease_base;    /* the mapping of the lease that holds the block */
    uint64_t lease_size;
    uint64_t lease_id;   /* the daemon's slice id of that lease (never reused by that daemon) */
    int32_t large;       /* 1: the block has that lease to itself */
} pinpool_arena_block_t;

typedef struct pinpool_arena_stats {
    uint64_t lease_size;
    uint64_t max_bytes;       /* 0 = no cap */
    uint64_t leased_bytes;    /* held from the daemon (large leases and leases being
                                 taken included) */
    uint64_t used_bytes;      /* reserved by live blocks (rounded; large: whole lease) */
    uint64_t requested_bytes; /* asked for by live blocks */
    uint64_t free_bytes;      /* in the leases of lease_size, not reserved */
    uint64_t largest_free;    /* the largest block that fits without a new lease */
    uint32_t num_leases;      /* leases of lease_size */
    uint32_t num_large;       /* leases of one large block each */
    uint32_t num_blocks;      /* live blocks, large ones included */
    uint32_t num_free_extents;
    double fragmentation;     /* 1 - largest_free / free_bytes; 0 when nothing is free */
    uint64_t allocs, frees;   /* successful calls since create */
} pinpool_arena_stats_t;

/*
 * Create an arena on ctx that leases lease_size bytes at a time (0: the
 * default; rounded up to 4096) and take its first lease.  opts may be NULL.
 * Returns 0 and *out (free it with pinpool_arena_destroy), or a negative error
 * (bad options: PINPOOL_EINVAL; the lease: whatever pinpool_alloc met; see
 * pinpool_errmsg(ctx)) and leaves *out untouched.
 */
PINPOOL_EXPORT int pinpool_arena_create(pinpool_ctx_t *ctx, uint64_t lease_size,
                                        const pinpool_arena_opts_t *opts,
                                        pinpool_arena_t **out);
/*
 * A block of size bytes aligned to align (0 = the quantum; a power of two up to
 * PINPOOL_ARENA_MAX_ALIGN for blocks that fit a lease).  Returns 0 and *ptr,
 * or PINPOOL_EINVAL (size 0), PINPOOL_EALIGN, PINPOOL_ENOSPC (the caps are
 * reached, or the daemon has no room for another lease), or an RPC error;
 * *ptr untouched then.  The block stays valid until pinpool_arena_free or
 * pinpool_arena_destroy.
 */
PINPOOL_EXPORT int pinpool_arena_alloc(pinpool_arena_t *arena, uint64_t size, uint64_t align,
                                       void **ptr);
/* pinpool_arena_alloc, also saying which lease holds the block. */
PINPOOL_EXPORT int pinpool_arena_alloc_block(pinpool_arena_t *arena, uint64_t size,
                                             uint64_t align, pinpool_arena_block_t *out);
/*
 * Free the block that starts at ptr.  PINPOOL_ENOENT, and nothing changes,
 * when ptr is not the start of a live block of this arena (NULL included);
 * freeing a large block can also meet the RPC's errors.
 */
PINPOOL_EXPORT int pinpool_arena_free(pinpool_arena_t *arena, void *ptr);
/* A snapshot of the counters above; 0, or PINPOOL_EINVAL for NULL arguments. */
PINPOOL_EXPORT int pinpool_arena_stats(pinpool_arena_t *arena, pinpool_arena_stats_t *out);
/* Give every lease back to the daemon and free the arena: every block of it
 * becomes invalid.  NULL is a no-op. */
PINPOOL_EXPORT void pinpool_arena_destroy(pinpool_arena_t *arena);

/* ==================================================================================
 * Swap: pause and resume the GPU memory of a model (torch_memory_saver's
 * region/pause/resume, with the host copy in the daemon)
 *
 * Device buffers are grouped under a tag (a model).  pinpool_swap_pause copies
 * every buffer of the tag into one pool host slice on the caller's stream
 * (D2H) and, with PINPOOL_SWAP_RELEASE, gives their GPU memory back;
 * pinpool_swap_resume maps GPU memory again and copies the bytes back (H2D).
 * Both only enqueue work: later work on the same stream sees its result without
 * a host synchronisation; pinpool_swap_wait blocks until it is done and
 * finishes the step (releases device memory after a pause, frees the host copy
 * after a resume).  Any other call on a tag with a step in flight waits first.
 *
 * Device memory: buffers made by pinpool_swap_alloc are CUDA VMM memory: the
 * tag reserves their virtual addresses once; a release unmaps and frees the
 * physical memory, a resume maps fresh physical memory at the same addresses,
 * so pointers held by the caller (tensors, CUDA graphs) stay valid.  Buffers
 * the caller allocated itself (pinpool_swap_register) are copied but never
 * freed: pinpool does not own them.  pinpool_swap_free takes one buffer out.
 *
 * The host copy is a slice kept by the daemon under the key "swap:TAG" (the
 * tag is at most PINPOOL_SWAP_TAG_MAX printable ASCII characters), or with
 * PINPOOL_SWAP_SPILLABLE a released object under that key; either survives
 * this process: another process that registers the same buffers
 * (same sizes, same order) under the same tag and calls pinpool_swap_resume
 * gets the bytes back.  Large buffers are copied in pieces over several
 * streams when pinpool_swap_config (or $PINPOOL_SWAP_STREAMS and
 * $PINPOOL_SWAP_CHUNK) asks for it.
 *
 * Every call needs CUDA in this process and a daemon whose host memory is
 * pinned (vmm or register backend); otherwise it returns PINPOOL_ECUDA and
 * pinpool_errmsg says why.  Calls on one context's tags are serialised; the
 * device's primary context becomes current in the calling thread.
 * pinpool_close frees the device memory of pinpool_swap_alloc buffers; kept
 * host copies stay in the daemon until pinpool_swap_drop with
 * PINPOOL_SWAP_FREE_HOST (or pinpool_attach + pinpool_free of "swap:TAG").
 *
 * A resume of a released tag maps its memory piece by piece ($PINPOOL_SWAP_MAP_CHUNK,
 * default 64 MiB, rounded up to the allocation granularity; "0": each allocation in
 * one piece), each piece just before its copy is queued, so that the copies of the
 * first pieces run while the next ones are mapped.
 * ================================================================================== */

#define PINPOOL_SWAP_TAG_MAX 37       /* "swap:" + tag fits the daemon's names */
#define PINPOOL_SWAP_KEY_PREFIX "swap:"

/* flags of pinpool_swap_pause */
#define PINPOOL_SWAP_RELEASE 0x1u   /* give the GPU memory of pinpool_swap_alloc buffers back
                                     * (at pinpool_swap_wait, once the copies are done) */
#define PINPOOL_SWAP_SPILLABLE 0x8u /* the host copy is a plain slice released under the key
                                     * at pinpool_swap_wait (pinpool_release): the daemon may
                                     * spill it to its tier; resume acquires it (restored from
                                     * the tier if spilled), mapping it again */
#define PINPOOL_SWAP_DISCARD 0x10u /* keep no copy: the contents are lost (with RELEASE the
                                     * GPU memory is given back; a resume maps fresh memory
                                     * of undefined contents); not with SPILLABLE */
#define PINPOOL_SWAP_REPLACE 0x20u  /* a copy another process left under the key (kept or
                                     * released) is freed first instead of PINPOOL_EEXIST */
/* flags of pinpool_swap_resume */
#define PINPOOL_SWAP_KEEP_HOST 0x2u /* keep the host copy mapped after the resume: the next
                                     * pause reuses it with no RPC and no mapping (the pool
                                     * keeps those bytes in use); default: freed at wait */
/* flags of pinpool_swap_drop */
#define PINPOOL_SWAP_FREE_HOST 0x4u /* also free the host copy kept in the daemon */

typedef enum pinpool_swap_state {
    PINPOOL_SWAP_RESIDENT = 0, /* the device buffers hold the data */
    PINPOOL_SWAP_PAUSING = 1,  /* a pause is in flight (pinpool_swap_wait finishes it) */
    PINPOOL_SWAP_PAUSED = 2,   /* the host copy holds the data */
    PINPOOL_SWAP_RESUMING = 3, /* a resume is in flight */
} pinpool_swap_state_t;

typedef struct pinpool_swap_info {
    pinpool_swap_state_t state;
    int32_t device_id;
    uint32_t num_buffers;   /* registered + allocated */
    uint64_t bytes;         /* what a pause copies */
    uint64_t device_bytes;  /* GPU memory the tag's pinpool_swap_alloc buffers map now */
    uint64_t host_slice_id; /* the host copy mapped in this process; 0 if none */
    int32_t released;       /* 1: the device memory is given back (paused with RELEASE) */
} pinpool_swap_info_t;

/*
 * Allocate bytes of device memory on GPU device under tag (CUDA VMM; buffers
 * smaller than half the allocation granularity share granules).  *dptr is a
 * CUdeviceptr, stable until pinpool_swap_drop or pinpool_close.  0, or
 * PINPOOL_EINVAL (bad tag, bytes 0, another device than the tag's, a step in
 * flight or the tag paused), PINPOOL_ECUDA, -ENOMEM; *dptr untouched then.
 * Changing a tag's buffers frees a host copy it still holds in this process.
 */
PINPOOL_EXPORT int pinpool_swap_alloc(pinpool_ctx_t *ctx, const char *tag, int32_t device,
                                      uint64_t bytes, uint64_t *dptr);
/* Add a buffer the caller owns (dptr, bytes on GPU device) to tag: it is
 * copied by pause/resume, never freed.  Errors as pinpool_swap_alloc. */
PINPOOL_EXPORT int pinpool_swap_register(pinpool_ctx_t *ctx, const char *tag, int32_t device,
                                         uint64_t dptr, uint64_t bytes);
/*
 * Enqueue the copy of every buffer of tag into its host copy (allocated on the
 * first pause: a slice kept as "swap:TAG") on stream (a CUstream; NULL: the
 * default stream).  flags: PINPOOL_SWAP_RELEASE, PINPOOL_SWAP_SPILLABLE.  (A
 * failed release at pinpool_swap_wait leaves the tag paused with the copy
 * mapped here.)  0, or an error and the tag
 * unchanged: PINPOOL_EINVAL (unknown tag, already paused), PINPOOL_EEXIST
 * (another process keeps a copy under the key: resume or drop it first),
 * PINPOOL_ENOSPC, PINPOOL_ECUDA.
 */
PINPOOL_EXPORT int pinpool_swap_pause(pinpool_ctx_t *ctx, const char *tag, void *stream,
                                      uint32_t flags);
/*
 * Map device memory again where it was released and enqueue the copy back on
 * stream.  The tag must be paused, or resident with no host copy in this
 * process (a copy another process paused: it is acquired or attached, and
 * must be exactly as large as the tag's buffers).  flags: PINPOOL_SWAP_KEEP_HOST.  0, or
 * PINPOOL_EINVAL (not paused, sizes differ), PINPOOL_ENOKEY (nothing kept under
 * the key), PINPOOL_ECUDA (out of GPU memory: the tag stays paused).
 */
PINPOOL_EXPORT int pinpool_swap_resume(pinpool_ctx_t *ctx, const char *tag, void *stream,
                                       uint32_t flags);
/* Block until tag's step in flight is done and finish it; 0 when none is. */
PINPOOL_EXPORT int pinpool_swap_wait(pinpool_ctx_t *ctx, const char *tag);
/* Forget tag: wait, free its pinpool_swap_alloc buffers, unregister the rest,
 * unmap its host copy (freed in the daemon with PINPOOL_SWAP_FREE_HOST, also
 * when only another process had it).  PINPOOL_EINVAL for an unknown tag. */
PINPOOL_EXPORT int pinpool_swap_drop(pinpool_ctx_t *ctx, const char *tag, uint32_t flags);
PINPOOL_EXPORT int pinpool_swap_info(pinpool_ctx_t *ctx, const char *tag, pinpool_swap_info_t *out);
/*
 * Take one buffer out of tag (dptr as pinpool_swap_alloc returned it, or as
 * registered): a pinpool_swap_alloc buffer's GPU memory and addresses are
 * freed (a granule shared by small buffers once its last one goes); a
 * registered buffer is only forgotten.  Later pauses do not copy it.  Waits
 * for the tag's step in flight.  Allowed while paused: the copy keeps the
 * other buffers' bytes.  0, or PINPOOL_EINVAL (unknown tag, dptr no buffer
 * of it), PINPOOL_ECUDA.
 */
PINPOOL_EXPORT int pinpool_swap_free(pinpool_ctx_t *ctx, const char *tag, uint64_t dptr);
/*
 * Where [dptr, dptr + bytes) of a buffer of tag lies in the host copy this
 * process holds (after a pause, or kept by PINPOOL_SWAP_KEEP_HOST): *host, a
 * CPU pointer (the copy is mapped for the CPU on the first call).  Valid until
 * the copy is freed (a resume without KEEP_HOST, drop, close).  0, or
 * PINPOOL_EINVAL (the range is not inside one buffer), PINPOOL_ENOENT (no copy
 * held here: resident, paused with DISCARD, or released to the daemon).
 */
PINPOOL_EXPORT int pinpool_swap_host_ptr(pinpool_ctx_t *ctx, const char *tag, uint64_t dptr,
                                         uint64_t bytes, void **host);
/*
 * How pause and resume copy: over streams helper streams (1..16; 1 = on the
 * caller's stream only), in pieces of chunk_bytes (0 = whole buffers),
 * dealt round robin.  Defaults: $PINPOOL_SWAP_STREAMS, $PINPOOL_SWAP_CHUNK
 * ("64MiB"), else 1 and 0.  Applies to the next pause or resume.
 */
PINPOOL_EXPORT int pinpool_swap_config(pinpool_ctx_t *ctx, uint32_t streams, uint64_t chunk_bytes);

/* ==================================================================================
 * torch_memory_saver: torch's allocator over the swap tags
 *
 * pinpool.torch_memory_saver (client/python) drives these calls; C and C++
 * programs may too.  torch calls pinpool_tms_malloc and pinpool_tms_free as a
 * CUDAPluggableAllocator (torch.cuda.memory.CUDAPluggableAllocator(path of
 * libpinpool.so, "pinpool_tms_malloc", "pinpool_tms_free")) behind a
 * torch.cuda.MemPool that a region uses.  Each allocation is a VMM allocation
 * of its own (pinpool_swap_alloc memory, no granule shared) in the swap tag of
 * the calling thread's region (pinpool_tms_set_region):
 *   TAG        CPU backup: the host copy is kept under "swap:TAG"
 *   TAG~disk   disk backup: the copy is released under "swap:TAG~disk" (the daemon
 *              may spill it to its tier)
 *   TAG~none   no backup: paused with PINPOOL_SWAP_DISCARD, contents not kept
 * with "~dN" appended on GPU N > 0.  pinpool_tms_pause(TAG) synchronises the
 * GPUs, pauses every swap tag of TAG (NULL: of every tag) releasing its GPU
 * memory, and returns when the copies are done; pinpool_tms_resume maps GPU
 * memory at the same addresses and copies the bytes back, returning when they
 * are there.  pinpool_tms_free (torch freeing a segment) frees the allocation
 * and its share of later copies.  Allocations outside a region never reach
 * these calls and are untouched by pause.
 *
 * A new process resumes a tag that another one paused (the copy is the
 * daemon's) when it has made the same allocations in the same order with the
 * same sizes under that tag (the same program reaching the same point does:
 * torch's allocator asks for the same segments), then calls
 * pinpool_tms_resume: the sizes are checked (PINPOOL_EINVAL when they differ).
 *
 * One process-wide context: pinpool_tms_connect, else $PINPOOL_SOCKET or the
 * default socket on first use.  Every call is thread-safe (one lock; the
 * region is per thread).  The calling thread's current CUDA context is the
 * same on return.  Errors: negative codes; pinpool_tms_errmsg() says why.
 * ================================================================================== */

#define PINPOOL_TMS_TAG_MAX 28 /* printable ASCII, no spaces, no '~' */
#define PINPOOL_TMS_NO_BACKUP 0
#define PINPOOL_TMS_CPU_BACKUP 1
#define PINPOOL_TMS_DISK_BACKUP 2

typedef struct pinpool_tms_region {
    char tag[PINPOOL_TMS_TAG_MAX + 1];
    int32_t backup; /* PINPOOL_TMS_*_BACKUP */
    int32_t active; /* 1: allocations come from tag; 0: outside a region (or in disable()) */
} pinpool_tms_region_t;

typedef struct pinpool_tms_usage {
    uint32_t allocations;  /* live allocations (every backup kind and GPU) */
    uint32_t swap_tags;    /* swap tags holding them */
    uint32_t paused;       /* of those, paused */
    uint64_t bytes;        /* the allocations' sizes, as torch asked */
    uint64_t device_bytes; /* GPU memory they map now */
    uint64_t host_bytes;   /* host copies held by this process now */
} pinpool_tms_usage_t;

/* Connect the process's context (NULL: $PINPOOL_SOCKET, else the default);
 * 0 when already connected to the same socket, PINPOOL_EINVAL to another. */
PINPOOL_EXPORT int pinpool_tms_connect(const char *socket_path);
/* The process's context (NULL before the first connect); do not close it. */
PINPOOL_EXPORT pinpool_ctx_t *pinpool_tms_context(void);
/* Why the calling thread's last failed pinpool_tms_* call failed. */
PINPOOL_EXPORT const char *pinpool_tms_errmsg(void);
/* Set the calling thread's region to *region (the tag checked; active 0: none),
 * the one before in *old when old is not NULL.  0 or PINPOOL_EINVAL. */
PINPOOL_EXPORT int pinpool_tms_set_region(const pinpool_tms_region_t *region,
                                          pinpool_tms_region_t *old);
PINPOOL_EXPORT int pinpool_tms_get_region(pinpool_tms_region_t *out);
/* torch's allocator calls (the stream is not used).  malloc returns NULL on
 * failure (outside a region, a paused tag, out of GPU memory, the margin,
 * no daemon), the reason on stderr and in pinpool_tms_errmsg(); free of a
 * pointer it did not allocate says so on stderr and does nothing. */
PINPOOL_EXPORT void *pinpool_tms_malloc(ssize_t size, int device, void *stream);
PINPOOL_EXPORT void pinpool_tms_free(void *ptr, ssize_t size, int device, void *stream);
/* 0, or PINPOOL_EINVAL (a tag already paused: nothing is paused then; a bad
 * tag) or the swap call's error. */
PINPOOL_EXPORT int pinpool_tms_pause(const char *tag);
/* 0, or PINPOOL_EINVAL (a tag neither paused here nor kept by another
 * process; sizes that differ from the copy's) or the swap call's error. */
PINPOOL_EXPORT int pinpool_tms_resume(const char *tag);
/* Keep CPU backups mapped after a resume (PINPOOL_SWAP_KEEP_HOST): the next
 * pause reuses them; read at each resume.  Initially $TMS_RETAIN_CPU_BACKUP. */
PINPOOL_EXPORT void pinpool_tms_set_retain(int retain);
PINPOOL_EXPORT int pinpool_tms_get_retain(void);
/* The process is ending: later frees leave paused tags' copies in the daemon
 * (torch frees its pools at interpreter exit; pinpool.torch_memory_saver
 * calls this from atexit), so that another process can resume them. */
PINPOOL_EXPORT void pinpool_tms_detach(void);
/* pinpool_tms_malloc fails when the GPU would have less than bytes free after it. */
PINPOOL_EXPORT void pinpool_tms_set_margin(uint64_t bytes);
/* The CPU backup of [dptr, dptr + bytes) (inside one allocation): *host, or
 * NULL when there is none to read (resident and not retained, or a disk
 * backup).  PINPOOL_EINVAL: not an allocation of these calls, or paused
 * without a backup. */
PINPOOL_EXPORT int pinpool_tms_cpu_backup(uint64_t dptr, uint64_t bytes, void **host);
/* What tag (NULL: every tag) holds now. */
PINPOOL_EXPORT int pinpool_tms_usage(const char *tag, pinpool_tms_usage_t *out);

/* ==================================================================================
 * Tensor manifests: weights published once, attached by any number of engines
 *
 * A manifest is a named, versioned description of a set of tensors (names,
 * dtypes, shapes, strides, where each lies) whose bytes live in slices of the
 * daemon: kept device slices on one GPU, kept host slices, or released host
 * slices that the daemon may spill to its tier (PINPOOL_MANIFEST_SPILLABLE).
 * A publisher makes a version in three steps: begin (a new version number),
 * add the tensors and allocate (the slices; the caller writes the bytes in
 * place, or with pinpool_manifest_write), commit.  Until the commit returns,
 * readers see the previous version; a publisher that dies first leaves the
 * previous version current and its half-made slices to
 * pinpool_manifest_collect (which begin also runs).  A reader opens the
 * current version (or a given one), looks tensors up by name and attaches:
 * a manifest on the reader's GPU is mapped where it is (no copy: the device
 * pool's CUDA IPC handle), a host manifest is mapped for the CPU, or copied
 * to a GPU (into cuMemAlloc memory of the reader) when the reader asks for a
 * device.  A reader keeps its mapping until it closes the manifest, also
 * when newer versions are committed; pinpool_manifest_drop refuses a version
 * that a live reader has attached (PINPOOL_EBUSY) unless forced.
 *
 * Where it is kept (what other tools see), for a name NAME and version V:
 *   object  "weights:NAME!a", "weights:NAME!b"   the name record: the current
 *           version, the highest one ever begun (versions are never reused) and
 *           every version's state; written alternately with a generation, so
 *           one of the two is whole while the other is being replaced
 *   object  "weights:NAME@V" (+ "weights:NAME@V+K" past 1 MiB)   the manifest
 *   kept    "wt:HHHHHHHHHHHHHHHH.V.S" (hex XXH3 of the name, hex version, segment
 *           number), or with SPILLABLE the object "weights:wt:H.V.S"   segment S
 *   object  "weights:NAME@V~pub", "weights:NAME@V~r:CLIENT"   the publisher
 *           while it publishes, each reader while it has V attached
 * Names are 1..PINPOOL_MANIFEST_NAME_MAX printable ASCII characters without
 * spaces or any of "@!~#+".  Ownership is the daemon's: objects and kept
 * slices are per uid from the Trust work on, so a reader of another uid
 * cannot open or attach another uid's manifests.
 *
 * The format (version 1; little-endian; every field checked when read):
 *   header, 96 bytes
 *     0  magic "PPWMANIF"        8  u32 format (1)          12 u32 header bytes (96)
 *     16 u64 total bytes         24 u64 version             32 u64 created (Unix ns)
 *     40 u32 segments (1..4096)  44 u32 tensors (..2^20)    48 u32 string bytes
 *     52 u32 name length         56 u32 metadata length     60 i32 device (-1 host)
 *     64 u32 placement (1 kept, 2 released)                 68 u32 hash (0 none, 1 XXH3-64)
 *     72 u64 content hash        80 u64 checksum (XXH3-64 of the manifest, these 8
 *                                       bytes taken as 0)   88 u64 reserved (0)
 *   segments, 64 bytes each: u64 size, u64 reserved (0), char key[48] (the kept tag or
 *     the object key, NUL-padded)
 *   tensors, 176 bytes each: u32 name offset, u32 name length (into the strings),
 *     u32 dtype (PINPOOL_DTYPE_*), u32 ndim (0..8), u32 segment, u32 flags (0),
 *     u64 offset (in the segment, a multiple of the dtype's size), u64 bytes,
 *     i64 shape[8], i64 strides[8] (elements, >= 0; unused dimensions 0), u64 hash
 *   strings: the name, the metadata (caller's text, e.g. JSON), the tensor names
 *   total = 96 + 64 * segments + 176 * tensors + string bytes, exactly.
 * A tensor covers bytes [offset, offset + bytes) of its segment, and its shape
 * and strides reach no byte past them.  Names are unique; two tensors may
 * share bytes (tied weights: PINPOOL_TENSOR_ALIAS).  The hash of a tensor is
 * XXH3-64 of those bytes; the content hash is XXH3-64 over each tensor's
 * name, dtype, shape, strides and hash in order (so the same weights
 * published twice have the same content hash, wherever they were placed).
 * ================================================================================== */

#define PINPOOL_MANIFEST_FORMAT 1
#define PINPOOL_MANIFEST_NAME_MAX 200
#define PINPOOL_MANIFEST_TENSOR_NAME_MAX 1024
#define PINPOOL_MANIFEST_MAX_DIMS 8
#define PINPOOL_MANIFEST_MAX_TENSORS (1u << 20)
#define PINPOOL_MANIFEST_MAX_SEGMENTS 4096u
#define PINPOOL_MANIFEST_META_MAX (1u << 20)
#define PINPOOL_MANIFEST_MAX_BYTES (256ull << 20) /* the largest manifest read */
#define PINPOOL_MANIFEST_MAX_VERSIONS 4096u      /* versions (committed + in the making) a name holds */

/* Element types, with safetensors' names (pinpool_dtype_name). */
typedef enum pinpool_dtype {
    PINPOOL_DTYPE_BOOL = 1, PINPOOL_DTYPE_U8, PINPOOL_DTYPE_I8, PINPOOL_DTYPE_I16,
    PINPOOL_DTYPE_U16, PINPOOL_DTYPE_I32, PINPOOL_DTYPE_U32, PINPOOL_DTYPE_I64,
    PINPOOL_DTYPE_U64, PINPOOL_DTYPE_F16, PINPOOL_DTYPE_BF16, PINPOOL_DTYPE_F32,
    PINPOOL_DTYPE_F64, PINPOOL_DTYPE_F8_E4M3, PINPOOL_DTYPE_F8_E5M2,
} pinpool_dtype_t;
/* "BF16", ...; NULL for an unknown code. */
PINPOOL_EXPORT const char *pinpool_dtype_name(int dtype);
/* The code of "BF16" (case as written), or 0. */
PINPOOL_EXPORT int pinpool_dtype_from_name(const char *name);
/* Bytes per element, or 0 for an unknown code. */
PINPOOL_EXPORT int pinpool_dtype_size(int dtype);

/* pinpool_manifest_info_t.placement */
#define PINPOOL_MANIFEST_KEPT 1     /* kept slices: never spilled, mapped by every reader */
#define PINPOOL_MANIFEST_RELEASED 2 /* released host slices: spillable, one reader at a time */

/* flags of pinpool_manifest_opts_t */
#define PINPOOL_MANIFEST_SPILLABLE 0x1u /* host only: the segments are released objects */
#define PINPOOL_MANIFEST_NO_HASH 0x2u   /* commit computes no tensor hashes (hash 0 = none) */
/* flags of pinpool_manifest_drop */
#define PINPOOL_MANIFEST_FORCE 0x4u /* drop even what a live reader has attached: its
                                     * mapping then reaches freed memory */

typedef struct pinpool_manifest_opts {
    int32_t device_id;      /* PINPOOL_HOST, or a GPU with a device pool in the daemon */
    uint32_t flags;         /* PINPOOL_MANIFEST_SPILLABLE, PINPOOL_MANIFEST_NO_HASH */
    uint64_t segment_bytes; /* the most bytes one segment (slice) holds; 0: one segment
                             * (a tensor larger than this gets a segment of its own) */
    uint64_t alignment;     /* of every tensor's offset: a power of two, 0: 256 */
    const char *metadata;   /* NULL or up to PINPOOL_MANIFEST_META_MAX bytes of text */
    uint32_t hash_threads;  /* threads that hash at commit; 0: the cores, at most 8 */
} pinpool_manifest_opts_t;

/* pinpool_tensor_desc_t.flags */
#define PINPOOL_TENSOR_STRIDED 0x1u /* strides[] are given (else contiguous, row-major) */
#define PINPOOL_TENSOR_ALIAS 0x2u   /* shares the bytes of tensor alias_of (same offset) */

typedef struct pinpool_tensor_desc {
    const char *name; /* 1..PINPOOL_MANIFEST_TENSOR_NAME_MAX bytes, no NUL; unique */
    int32_t dtype;    /* PINPOOL_DTYPE_* */
    uint32_t ndim;    /* 0 (a scalar) .. PINPOOL_MANIFEST_MAX_DIMS */
    int64_t shape[PINPOOL_MANIFEST_MAX_DIMS];
    int64_t strides[PINPOOL_MANIFEST_MAX_DIMS]; /* in elements, with PINPOOL_TENSOR_STRIDED */
    uint32_t flags;    /* PINPOOL_TENSOR_* */
    uint32_t alias_of; /* with PINPOOL_TENSOR_ALIAS: the index of an earlier tensor */
    uint64_t nbytes;   /* bytes of storage; 0: what shape and strides reach */
} pinpool_tensor_desc_t;

typedef struct pinpool_tensor {
    const char *name; /* NUL-terminated; valid until the manifest is freed */
    int32_t dtype;
    uint32_t ndim;
    int64_t shape[PINPOOL_MANIFEST_MAX_DIMS];
    int64_t strides[PINPOOL_MANIFEST_MAX_DIMS];
    uint32_t segment;
    uint64_t offset;  /* in its segment */
    uint64_t nbytes;
    uint64_t hash;    /* XXH3-64 of its bytes; 0 when published without hashes */
    void *ptr;        /* attached: a CPU address (host) or a CUdeviceptr (GPU); else NULL */
    int32_t device_id; /* where ptr points: PINPOOL_HOST or a GPU */
} pinpool_tensor_t;

typedef struct pinpool_manifest_info {
    char name[PINPOOL_MANIFEST_NAME_MAX + 1];
    uint64_t version;
    int32_t device_id;       /* where the bytes are kept: PINPOOL_HOST or a GPU */
    uint32_t placement;      /* PINPOOL_MANIFEST_KEPT or _RELEASED */
    uint32_t num_tensors;
    uint32_t num_segments;
    uint64_t data_bytes;     /* the segments' sizes together */
    uint64_t manifest_bytes; /* the manifest itself */
    uint32_t hash_algo;      /* 0 none, 1 XXH3-64 */
    uint64_t content_hash;
    uint64_t created_unix_ns;
    const char *metadata;    /* metadata_len bytes (not NUL-terminated); valid as name */
    uint32_t metadata_len;
    int32_t attached_device; /* after pinpool_manifest_attach: where the tensors' ptr point;
                              * -2 when not attached */
} pinpool_manifest_info_t;

typedef struct pinpool_publish pinpool_publish_t;
typedef struct pinpool_manifest pinpool_manifest_t;

/*
 * Start a new version of name (the daemon's dead publishers' leftovers of name
 * are collected first).  opts may be NULL (host, one segment, hashed).  The
 * version is recorded as being made (other readers still see the current
 * one).  0 and *out, or PINPOOL_EINVAL (a bad name or option), PINPOOL_EBUSY
 * (another process publishes name now), or a call's error.  One publisher
 * per name at a time: the name record is read, changed and written again
 * without a lock in the daemon (a second publisher is refused as long as the
 * first one's marker lives; two that begin at once are not always told apart).
 */
PINPOOL_EXPORT int pinpool_manifest_begin(pinpool_ctx_t *ctx, const char *name,
                                          const pinpool_manifest_opts_t *opts,
                                          pinpool_publish_t **out);
/* Add one tensor (before pinpool_manifest_alloc); *index (may be NULL) is its
 * index.  PINPOOL_EINVAL naming the problem (a name taken, a dtype, a shape or
 * strides that need more bytes than nbytes, an alias that does not fit). */
PINPOOL_EXPORT int pinpool_manifest_add(pinpool_publish_t *pub, const pinpool_tensor_desc_t *t,
                                        uint32_t *index);
/* Lay the tensors out and allocate the segments (kept slices, or plain host
 * slices with SPILLABLE), mapped here.  After it no tensor can be added. */
PINPOOL_EXPORT int pinpool_manifest_alloc(pinpool_publish_t *pub);
/* Where tensor index is to be written (after alloc): *out with ptr (a CPU
 * address, or a CUdeviceptr for a device manifest). */
PINPOOL_EXPORT int pinpool_manifest_dest(pinpool_publish_t *pub, uint32_t index,
                                         pinpool_tensor_t *out);
/* Copy bytes (host memory; bytes <= the tensor's nbytes) into tensor index:
 * memcpy, or cuMemcpyHtoD for a device manifest. */
PINPOOL_EXPORT int pinpool_manifest_write(pinpool_publish_t *pub, uint32_t index,
                                          const void *src, uint64_t bytes);
/*
 * Hash the tensors (unless NO_HASH; a device manifest is read back through the
 * host in 64 MiB pieces: work the caller queued on its own streams must be
 * done first, e.g. cudaDeviceSynchronize), write the manifest, and make this version the
 * current one: the last step is the write of the name record, so that a
 * reader sees either the old version or the new one, whole.  pub is freed in
 * every case; on failure the version is undone (its slices freed) and the
 * previous one stays current.  *version (may be NULL) gets the version.
 */
PINPOOL_EXPORT int pinpool_manifest_commit(pinpool_publish_t *pub, uint64_t *version);
/* Give the version up: its slices are freed, the name record forgets it. */
PINPOOL_EXPORT void pinpool_manifest_abort(pinpool_publish_t *pub);
/* The version this publisher makes. */
PINPOOL_EXPORT uint64_t pinpool_manifest_pub_version(const pinpool_publish_t *pub);

/*
 * Open version (0: the current one) of name: the manifest is read and checked
 * (not yet attached).  0 and *out (free it with pinpool_manifest_close), or
 * PINPOOL_ENOKEY (no such name, or that version is not committed), -EBADMSG
 * (a damaged record or manifest: the message says what is wrong), PINPOOL_EINVAL.
 */
PINPOOL_EXPORT int pinpool_manifest_open(pinpool_ctx_t *ctx, const char *name, uint64_t version,
                                         pinpool_manifest_t **out);
/*
 * Check and read a manifest from len bytes at buf (no daemon: tools, tests).
 * 0 and *out (pinpool_manifest_close frees it; it cannot be attached), or
 * -EBADMSG with what is wrong in err (always NUL-terminated when errlen > 0),
 * -ENOMEM.  Lengths and offsets in buf are never trusted.
 */
PINPOOL_EXPORT int pinpool_manifest_parse(const void *buf, size_t len, pinpool_manifest_t **out,
                                          char *err, size_t errlen);
/* The manifest's bytes as read (valid until close). */
PINPOOL_EXPORT int pinpool_manifest_bytes(const pinpool_manifest_t *m, const void **buf,
                                          size_t *len);
PINPOOL_EXPORT int pinpool_manifest_info(const pinpool_manifest_t *m, pinpool_manifest_info_t *out);
/* Tensor index (0..num_tensors-1).  PINPOOL_EINVAL when out of range. */
PINPOOL_EXPORT int pinpool_manifest_tensor(const pinpool_manifest_t *m, uint32_t index,
                                           pinpool_tensor_t *out);
/* The index of the tensor named name (O(log n)); PINPOOL_ENOENT if none. */
PINPOOL_EXPORT int pinpool_manifest_find(const pinpool_manifest_t *m, const char *name,
                                         uint32_t *index);
/*
 * Map the tensors' bytes into this process; then pinpool_manifest_tensor
 * gives each one's ptr.  device: PINPOOL_HOST for a host manifest (CPU
 * pointers), the manifest's GPU for a device manifest (no copy), or a GPU for
 * a host manifest (each segment is copied into cuMemAlloc memory of this
 * process at PCIe speed; the host slices are let go once copied).  A
 * released (SPILLABLE) manifest's segments are acquired (restored from the
 * tier if spilled) and, after a copy to a GPU, released again at once; while
 * one reader holds them others wait (up to 10 s) - a released manifest has
 * one reader at a time, and a reader that dies while it holds a segment takes
 * that segment's bytes with it (the daemon's acquire hands an object over).
 * A device reader's mapping of a vmm device pool is read-only (pinpool_attach:
 * a write through it faults in that process); on an ipc device pool it is
 * the pool's CUDA IPC mapping, and a host reader's is the chunks' mapping,
 * both writable: pinpool_manifest_verify finds a write.
 * 0, or PINPOOL_EINVAL (already attached, a parsed manifest, a device that does
 * not fit the manifest), PINPOOL_ENOKEY (a segment is gone: the daemon
 * restarted or the version was dropped), PINPOOL_ECUDA, or a call's error.
 */
PINPOOL_EXPORT int pinpool_manifest_attach(pinpool_manifest_t *m, int32_t device);
/* Hash every attached tensor again and compare with the manifest: 0, or
 * -EBADMSG naming the first tensor whose bytes differ (its index in *bad when
 * bad is not NULL), PINPOOL_EINVAL (not attached, or published without hashes). */
PINPOOL_EXPORT int pinpool_manifest_verify(pinpool_manifest_t *m, uint32_t *bad);
/* Detach (unmap, free copies, give acquired segments back) and free m.  NULL: no-op. */
PINPOOL_EXPORT void pinpool_manifest_close(pinpool_manifest_t *m);

/*
 * The committed versions of name, oldest first: up to cap of them into
 * versions (may be NULL with cap 0), their number in *n, the current one in
 * *current (either may be NULL).  PINPOOL_ENOKEY when name has none.
 */
PINPOOL_EXPORT int pinpool_manifest_versions(pinpool_ctx_t *ctx, const char *name,
                                             uint64_t *versions, uint32_t cap, uint32_t *n,
                                             uint64_t *current);
/*
 * Drop version of name (its slices freed, its manifest removed), or with
 * version 0 every version and the name itself (also a name with no committed
 * version: what aborted publishers left).  The current version can only go
 * with the name.  PINPOOL_EBUSY, naming the reader, when a live session
 * has the version attached (FORCE drops it all the same); PINPOOL_ENOKEY
 * when there is no such committed version.
 */
PINPOOL_EXPORT int pinpool_manifest_drop(pinpool_ctx_t *ctx, const char *name, uint64_t version,
                                         uint32_t flags);
/* Free what publishers of name that died before their commit left behind
 * (their slices, objects and record entries); *collected (may be NULL): how
 * many versions.  Versions whose publisher still has a session are left. */
PINPOOL_EXPORT int pinpool_manifest_collect(pinpool_ctx_t *ctx, const char *name,
                                            uint32_t *collected);

#ifdef __cplusplus
}
#endif
#endif /* PINPOOL_H */
