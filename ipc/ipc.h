/*
 * ipc.h - everything that crosses a process boundary, except gRPC.
 *
 * Owns: passing file descriptors over unix sockets (SCM_RIGHTS), peer
 * credentials, the fd-socket wire protocol, and the host-memory backends that
 * make pool chunks in the daemon and map them in clients.
 * Never: knows about slices' owners, the allocator, gRPC or libev.
 * Locking: none; every function works on the arguments it is given.
 */
#ifndef PINPOOL_IPC_H
#define PINPOOL_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- file descriptor passing --------------------------------------------- */

/* Most descriptors one message carries (the kernel allows 253). */
#define IPC_MAX_FDS 64

/*
 * Send len bytes of buf as one message with nfds descriptors attached
 * (nfds <= IPC_MAX_FDS; the caller keeps its own descriptors).  Retries on
 * EINTR.  Returns 0 or -errno.
 */
int ipc_send_msg(int sock, const void *buf, size_t len, const int *fds, size_t nfds);

/*
 * Receive one message into buf (at most len bytes) and up to maxfds
 * descriptors, received close-on-exec.  Returns the message length (0 means the
 * peer closed), or -errno: -EMSGSIZE when the message or its descriptors were
 * truncated.  On any error every descriptor that arrived is closed and *nfds
 * is 0; on success the caller owns fds[0..*nfds).
 */
ssize_t ipc_recv_msg(int sock, void *buf, size_t len, int *fds, size_t maxfds, size_t *nfds);

typedef struct ipc_cred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
} ipc_cred_t;

/* The peer's credentials as the kernel saw them at connect (SO_PEERCRED). */
int ipc_peer_cred(int sock, ipc_cred_t *out);
/* The peer's supplementary groups (SO_PEERGROUPS) into groups, at most max
 * (IPC_MAX_PEER_GROUPS are read); how many.  0 when they cannot be read (more
 * than IPC_MAX_PEER_GROUPS: the primary group in ipc_cred_t still counts). */
#define IPC_MAX_PEER_GROUPS 256
size_t ipc_peer_groups(int sock, uint32_t *groups, size_t max);

/* ---- unix sockets ---------------------------------------------------------- */

/* A listening SOCK_SEQPACKET socket at path (non-blocking, close-on-exec);
 * an existing socket file is replaced.  Returns the fd or -errno. */
int ipc_listen_seqpacket(const char *path, int backlog);
/* A blocking, close-on-exec SOCK_SEQPACKET connection to path, or -errno. */
int ipc_connect_seqpacket(const char *path);

/* ---- the fd-socket protocol (fdproto.c) ---------------------------------- */
/*
 * One SOCK_SEQPACKET connection per client process; the connection is the
 * client's lease.  The daemon speaks first:
 *   daemon -> client  HELLO     client id, backend, chunk geometry
 *   client -> daemon  MAP_REQ   fds of chunks [first, first+count) of a slice
 *   daemon -> client  MAP_RESP  status, then the fds (count <= IPC_MAX_FDS)
 * Every message starts with ipc_hdr_t; integers are in host order (both ends
 * are on one machine).
 */
#define IPC_MAGIC 0x44465050u /* "PPFD" */
#define IPC_VERSION 2u
#define IPC_CLIENT_ID_LEN 48
#define IPC_TOKEN_LEN 48
#define IPC_NAME_LEN 16

enum ipc_msg_type {
    IPC_MSG_HELLO = 1,
    IPC_MSG_MAP_REQ = 2,
    IPC_MSG_MAP_RESP = 3,
};

typedef struct ipc_hdr {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t seq;
    uint32_t len; /* of the whole message */
} ipc_hdr_t;

typedef struct ipc_hello {
    ipc_hdr_t hdr;
    char client_id[IPC_CLIENT_ID_LEN]; /* NUL-terminated; public (GetPoolInfo lists it) */
    char token[IPC_TOKEN_LEN];         /* NUL-terminated; secret: gRPC calls carry it */
    char backend[IPC_NAME_LEN];        /* host backend name, NUL-terminated */
    uint64_t chunk_size;
    uint32_t num_chunks;
    int32_t status;   /* 0, or why the daemon refuses the session (then it hangs up) */
    char reason[128]; /* NUL-terminated; for a refusal */
} ipc_hello_t;

typedef struct ipc_map_req {
    ipc_hdr_t hdr;
    uint64_t slice_id;
    uint32_t first_chunk;
    uint32_t count;
} ipc_map_req_t;

typedef struct ipc_map_resp {
    ipc_hdr_t hdr;
    int32_t status; /* 0 or a PINPOOL_E* / -errno code */
    uint32_t first_chunk;
    uint32_t count; /* descriptors attached, in chunk order */
    uint32_t pad;
} ipc_map_resp_t;

/* Fill in a header for a message of the given type and size. */
void ipc_hdr_init(ipc_hdr_t *hdr, enum ipc_msg_type type, uint32_t seq, uint32_t len);

/* Validate a received message of n bytes: magic, version, type known, length
 * exactly that type's size.  Returns the type, or PINPOOL_EPROTO. */
int ipc_msg_check(const void *buf, size_t n);

/* ---- host-memory backends ------------------------------------------------ */

/* A chunk of host memory in the daemon. */
typedef struct ipc_chunk {
    int fd;          /* the descriptor clients receive; owned by the chunk */
    void *addr;      /* the daemon's own mapping */
    uint64_t size;
    uint64_t handle; /* backend-specific (a CUmemGenericAllocationHandle for vmm) */
} ipc_chunk_t;

/* Client-side mapping flags. */
#define IPC_MAP_CPU 0x1u /* CPU loads and stores */
#define IPC_MAP_GPU 0x2u /* CUDA copies and kernels */

/*
 * A host-memory backend: a small table chosen at run time (--host-backend).
 * Each backend is its own file, ipc/host_<name>.c.
 */
typedef struct ipc_host_ops {
    const char *name;
    bool cuda; /* needs the CUDA driver (the daemon runs in "cuda" mode) */
    /* Can this backend work in this process?  0, or an error with a reason. */
    int (*probe)(char *err, size_t errlen);
    /* Daemon: make chunk number index of size bytes and map it at addr, which
     * lies inside a range from reserve(); on failure leave *c untouched and
     * write a message a person can act on into err. */
    int (*chunk_create)(ipc_chunk_t *c, void *addr, uint64_t size, uint32_t index,
                        char *err, size_t errlen);
    void (*chunk_destroy)(ipc_chunk_t *c);
    /*
     * Daemon: give chunk c (from chunk_create, number index) fresh memory at
     * the same address, for a new owner.  The new memory is made first and
     * then takes the old one's place in the daemon's range without a moment
     * in which the range is unmapped (another mmap could land there); then
     * the old descriptor and handle are let go, so that whoever still holds
     * one (a dup'ed fd in another process) reaches only the old memory, which
     * the kernel or the driver frees with its last holder.  The new memory
     * reads as zeros.  0 with c's fd and handle new (addr and size the same),
     * and err either "" or a note for the log (hugetlb: no huge page was
     * free, so the fresh memory has 4 KiB pages); on failure c and its memory
     * are as before and err says why.  Blocking: it commits or pins a chunk's
     * worth of memory.
     */
    int (*chunk_replace)(ipc_chunk_t *c, uint32_t index, char *err, size_t errlen);
    /* Both ends: reserve / release an address range for n chunks. */
    int (*reserve)(uint64_t bytes, void **addr);
    void (*release)(void *addr, uint64_t bytes);
    /* Client: map n received chunk fds contiguously at addr (from reserve).
     * Takes ownership of the fds whatever happens. */
    int (*map)(void *addr, uint64_t chunk_size, int *fds, uint32_t n, unsigned flags);
    /* Client: widen the access of a mapped range to flags (NULL when a
     * mapping always allows everything). */
    int (*access)(void *addr, uint64_t bytes, unsigned flags);
    /* Client: undo map (the range stays reserved). */
    void (*unmap)(void *addr, uint64_t chunk_size, uint32_t n);
} ipc_host_ops_t;

/*
 * The table of backend NAME, whose file (host_NAME.c) names its functions
 * NAME_probe, NAME_chunk_create, NAME_chunk_destroy, NAME_chunk_replace,
 * NAME_reserve, NAME_release, NAME_map and NAME_unmap, as every ae_*.c of redis defines the
 * same aeApi* functions.  A backend with an access() op adds it after:
 *   const ipc_host_ops_t ipc_host_vmm = {IPC_HOST_OPS(vmm, true), .access = vmm_access};
 */
#define IPC_HOST_OPS(NAME, needs_cuda)                                                         \
    .name = #NAME, .cuda = (needs_cuda), .probe = NAME##_probe,                                \
    .chunk_create = NAME##_chunk_create, .chunk_destroy = NAME##_chunk_destroy,                \
    .chunk_replace = NAME##_chunk_replace,                                                     \
    .reserve = NAME##_reserve, .release = NAME##_release, .map = NAME##_map,                   \
    .unmap = NAME##_unmap

extern const ipc_host_ops_t ipc_host_memfd;    /* sealed memfds, no CUDA */
extern const ipc_host_ops_t ipc_host_vmm;      /* CUDA VMM host memory exported as fds */
extern const ipc_host_ops_t ipc_host_register; /* memfds + cuMemHostRegister in each process */
/* Sealed MFD_HUGETLB memfds (2 MiB or 1 GiB pages): "hugetlb" pins them with
 * cuMemHostRegister in the daemon and in each client (as register does),
 * "hugetlb-cpu" is the same memory without CUDA (host_hugetlb.c). */
extern const ipc_host_ops_t ipc_host_hugetlb;
extern const ipc_host_ops_t ipc_host_hugetlb_cpu;

#define IPC_HUGE_2M (2ull << 20)
#define IPC_HUGE_1G (1ull << 30)
/*
 * The daemon's side of the hugetlb backends, set once before its first
 * chunk_create (no chunk may be in the making): the page size of the chunks
 * it makes (IPC_HUGE_2M or IPC_HUGE_1G; 2 MiB until set) and the unit in
 * which each chunk is populated and pinned (0: the whole chunk in one call),
 * yielding the CPU between units.  Clients never call it (a client maps what
 * it is given, whatever its page size).  0, or -EINVAL for another page size
 * or a unit that is not a multiple of it.
 */
int ipc_hugetlb_configure(uint64_t page, uint64_t unit);

/*
 * The backend that --host-backend auto picks here, the fastest that works:
 * hugetlb when huge_page is not 0 (the server found or reserved huge pages
 * of that size for the whole pool) and CUDA works, then vmm where the
 * driver supports host VMM, register where CUDA works, else memfd (never
 * hugetlb-cpu: only when asked for).  no_huge says why huge_page is 0 (may
 * be NULL).  why gets a line saying what was skipped and why (may be NULL).
 */
const ipc_host_ops_t *ipc_host_auto(uint64_t huge_page, const char *no_huge, char *why,
                                    size_t whylen);

/* The backend called name ("memfd", ...), or NULL. */
const ipc_host_ops_t *ipc_host_backend(const char *name);

#endif /* PINPOOL_IPC_H */
