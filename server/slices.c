/*
 * slices.c - the pools and the slices clients hold in them.
 *
 * Owns: srv->pools and the device memory behind the device pools.  pools[0]
 * is the host pool, pools[k] the device pool of devs[k - 1].  A slice id
 * carries its pool's index in its top bits (SRV_POOL_SHIFT), so ids are
 * unique across the daemon.  AllocatePoolMemory, AttachPoolMemory and
 * FreePoolMemory (srv_alloc, srv_attach, srv_free), the descriptors of a host
 * slice's chunks (or a vmm device slice's) for the fd socket
 * (srv_session_chunk_fds), and the message
 * that says why an allocation failed.
 * Kept slices belong to a client named "kept:<tag>" of their uid (sessions.c;
 * a tag is a name in its uid's namespace).  The clients of that uid may
 * attach, map and free it; other uids never find it.  Who may do what is
 * access.c's (do_access, do_may_use_slice); this file asks it first.
 * Charges: every slice is charged to its holder and its uid, a kept slice
 * also to its maker while the maker lives (do_slice_charged); a quota is
 * checked before a slice is made (do_quota_check).
 * A vmm device pool (devmem.h) has uids for tenants too, and a chunk of it
 * that changes uid gets new device memory first (do_device_room).  An ipc
 * device pool is one cudaMalloc shared by its CUDA IPC handle, which any
 * client opens whole and cannot keep uids apart, so it belongs to one uid
 * (do_device_pool_access).
 * The uid is the boundary.  The host pool's tenants are uids (pool.h): a
 * host slice goes into chunks of its client's uid, or chunks never used, and
 * never into another uid's; when neither has room, do_make_room_for_uid waits
 * for the cleaner or takes an idle chunk of another uid, which gets fresh
 * memory first (chunks.c).  A session maps only chunks of its own uid.  The
 * host pool has dirty_on_free: what is freed is zeroed by the cleaner
 * (cleaner.c) before anyone can allocate it, except a slice of a client
 * without a session (it can map nothing, and nothing is copied into it until
 * it changes owner: pool_mark_unwritten), which is still clean; and a session
 * may get back, unzeroed, what it freed itself (pool_alloc_own).
 * Never: decides what is spilled (spill.c does; srv_alloc asks it for room),
 * or makes host chunks (chunks.c; srv_alloc waits for them).
 * Locking (see srv_int.h): every srv_* function here takes srv->lock.  Only
 * srv_alloc drops it in do_host_room (waiting for chunks still being made,
 * for the cleaner, replacing a chunk's memory, or a spill); it looks its
 * client up again after.  With do_nowait() it returns SRV_EWOULDBLOCK there
 * instead (a kept slice's new client dropped again first).
 */
#include "srv_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cudaload.h"
#include "log.h"
#include "pinpool.h"

/* ---- the pools (srv_create and srv_destroy) ----------------------------------------- */

int srv_slices_open_host(srv_t *srv, char *err, size_t errlen)
{
    pool_params_t params = {
        .chunk_size = srv->cfg.chunk_size,
        .max_chunks = srv->nchunks,
        .quantum = SRV_QUANTUM,
        .allow_multi_chunk = true,
        .dirty_on_free = true, /* cleaner.c zeroes what is freed */
    };
    int rc = pool_create(&srv->pools[HOST_POOL], &params);

    if (rc != 0)
        snprintf(err, errlen, "cannot create the pool: %s", pinpool_strerror(rc));
    return rc;
}

/*
 * --device-backend for GPU device: ipc when asked; vmm when asked or, for
 * auto, when the driver can export the GPU's memory as descriptors.  The log
 * says which and why; vmm asked for and unsupported is an error that says so.
 */
static int pick_device_backend(const srv_t *srv, int device, ipc_dev_backend_t *out, char *err,
                               size_t errlen)
{
    const char *want = srv->cfg.device_backend;
    char why[256];
    int rc;

    *out = IPC_DEV_IPC;
    if (strcmp(want, "ipc") == 0) {
        srv_info("GPU %d: device pool on a legacy CUDA IPC handle (--device-backend ipc)", device);
        return 0;
    }
    rc = ipc_devmem_vmm_probe(device, why, sizeof(why));
    if (rc == 0) {
        *out = IPC_DEV_VMM;
        srv_info("GPU %d: device pool on CUDA VMM chunks shared as descriptors (%s)", device,
                 strcmp(want, "vmm") == 0 ? "--device-backend vmm"
                                          : "auto: the driver exports GPU memory as fds");
        return 0;
    }
    if (strcmp(want, "vmm") == 0) {
        snprintf(err, errlen, "--device-backend vmm cannot work here: %s; start with "
                 "--device-backend ipc (or auto)", why);
        return rc;
    }
    srv_info("GPU %d: device pool on a legacy CUDA IPC handle (auto: %s)", device, why);
    return 0;
}

/* The device pool of GPU device in devs[i] and pools[1 + i]. */
static int open_device(srv_t *srv, uint32_t i, int device, char *err, size_t errlen)
{
    ipc_devmem_t *dm = &srv->devs[i];
    ipc_dev_backend_t backend;
    char sz[32], cs[32], al[32];
    int rc = pick_device_backend(srv, device, &backend, err, errlen);

    if (rc != 0)
        return rc;
    bool takeover = strcmp(srv->cfg.takeover, "yes") == 0;
    if (takeover && backend != IPC_DEV_VMM) {
        snprintf(err, errlen, "--takeover: GPU %d's device pool would be on CUDA IPC handles, "
                 "which die with the daemon that made them: only vmm device pools are handed "
                 "over (--device-backend vmm)", device);
        return PINPOOL_EINVAL;
    }
    /* --takeover: the layout only; the memory comes from the running daemon
     * (handover.c, ipc_devmem_adopt_chunk). */
    rc = backend == IPC_DEV_VMM
             ? (takeover ? ipc_devmem_plan_vmm(dm, device, srv->cfg.device_pool_size, err, errlen)
                         : ipc_devmem_create_vmm(dm, device, srv->cfg.device_pool_size, err,
                                                 errlen))
             : ipc_devmem_create(dm, device, srv->cfg.device_pool_size, err, errlen);
    if (rc != 0)
        return rc;
    srv->ndevs++;
    /* vmm: chunks of one uid at a time (pool.h's tenants), slices on the
     * minimum granularity; ipc: one chunk that any client opens whole. */
    pool_params_t params = {
        .chunk_size = backend == IPC_DEV_VMM ? dm->chunk_size : dm->size,
        .max_chunks = backend == IPC_DEV_VMM ? dm->nchunks : 1,
        .quantum = backend == IPC_DEV_VMM ? dm->align : 256,
        .allow_multi_chunk = backend == IPC_DEV_VMM,
    };
    rc = pool_create(&srv->pools[1 + i], &params);
    if (rc == 0)
        rc = pool_add_chunks(srv->pools[1 + i], params.max_chunks);
    if (rc != 0) {
        snprintf(err, errlen, "cannot create the device pool of GPU %d: %s", device,
                 pinpool_strerror(rc));
        return rc;
    }
    pool_format_size(dm->size, sz, sizeof(sz));
    if (backend == IPC_DEV_VMM)
        srv_info("GPU %d (%s): device pool of %s, vmm: %" PRIu32 " chunks of %s (the recommended "
                 "granularity's multiple), slices aligned to %s (the minimum granularity)", device,
                 dm->name, sz, dm->nchunks, pool_format_size(dm->chunk_size, cs, sizeof(cs)),
                 pool_format_size(dm->align, al, sizeof(al)));
    else
        srv_info("GPU %d (%s): device pool of %s, ipc", device, dm->name, sz);
    return 0;
}

/* --devices / --device-pool-size: one pool per GPU. */
int srv_slices_open_devices(srv_t *srv, char *err, size_t errlen)
{
    int list[SRV_MAX_DEVICES], n = 0;
    char msg[256];
    int rc;

    if (srv->cfg.ndevice_uid != 0) {
        srv->dev_uid = (uid_t)srv->cfg.device_uid;
        srv->dev_uid_set = true;
    }
    if (srv->cfg.device_pool_size == 0)
        return 0;
    rc = ipc_cuda_load(msg, sizeof(msg));
    if (rc != 0) {
        snprintf(err, errlen, "--device-pool-size needs a GPU: %s", msg);
        return rc;
    }
    if (strcmp(srv->cfg.devices, "all") == 0) {
        for (n = 0; n < ipc_cuda_device_count() && n < SRV_MAX_DEVICES; n++)
            list[n] = n;
    } else {
        char copy[sizeof(srv->cfg.devices)], *save = NULL;
        snprintf(copy, sizeof(copy), "%s", srv->cfg.devices);
        for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
            char *end;
            long d = strtol(t, &end, 10);
            if (*end != '\0' || d < 0 || d >= ipc_cuda_device_count() || n == SRV_MAX_DEVICES) {
                snprintf(err, errlen, "--devices: '%s' is not a GPU here (%d visible: 0..%d)", t,
                         ipc_cuda_device_count(), ipc_cuda_device_count() - 1);
                return PINPOOL_ENODEV;
            }
            for (int i = 0; i < n; i++)
                if (list[i] == (int)d) {
                    snprintf(err, errlen, "--devices: GPU %ld is listed twice", d);
                    return PINPOOL_EINVAL;
                }
            list[n++] = (int)d;
        }
    }
    for (int i = 0; i < n; i++) {
        rc = open_device(srv, (uint32_t)i, list[i], err, errlen);
        if (rc != 0)
            return rc;
    }
    return 0;
}

void srv_slices_close(srv_t *srv)
{
    for (uint32_t i = 0; i < srv->ndevs; i++)
        ipc_devmem_destroy(&srv->devs[i]);
    for (uint32_t i = 0; i <= SRV_MAX_DEVICES; i++)
        pool_destroy(srv->pools[i]);
}

/* ---- slices across pools (lock held) ----------------------------------------------- */

/* Bytes and slices owner holds in every pool. */
uint64_t do_owner_bytes(srv_t *srv, uint64_t owner, uint32_t *slices, uint64_t *device_bytes)
{
    uint64_t host = 0, dev = 0;
    uint32_t n = 0;

    for (uint32_t i = 0; i <= srv->ndevs; i++) {
        uint32_t k = 0;
        uint64_t b = pool_owner_bytes(srv->pools[i], owner, &k);
        if (i == HOST_POOL)
            host = b;
        else
            dev += b;
        n += k;
    }
    if (slices != NULL)
        *slices = n;
    if (device_bytes != NULL)
        *device_bytes = dev;
    return host + dev;
}

void do_slice_charged(srv_t *srv, struct srv_client *c, int64_t delta)
{
    do_charge_client(srv, c, delta);
    if (c->kept)
        do_charge_client(srv, do_client_of_owner(srv, c->maker), delta);
    do_charge_uid(srv, c->uid, delta); /* c's uid has a record (c is in it): cannot fail */
}

uint32_t do_free_owner(srv_t *srv, struct srv_client *c, uint64_t *bytes)
{
    uint32_t n = 0;

    *bytes = 0;
    for (uint32_t i = 0; i <= srv->ndevs; i++) {
        uint64_t b = 0;
        int k = pool_free_owner(srv->pools[i], c->owner, &b);
        *bytes += b;
        n += k > 0 ? (uint32_t)k : 0;
    }
    do_slice_charged(srv, c, -(int64_t)*bytes);
    do_cleaner_kick(srv);
    return n;
}


static uint64_t global_id(uint32_t pool, uint64_t local)
{
    return ((uint64_t)pool << SRV_POOL_SHIFT) | local;
}

/* The pool index of a daemon-wide id, or -1 if it names no pool. */
static int pool_of(const srv_t *srv, uint64_t id)
{
    uint64_t p = id >> SRV_POOL_SHIFT;

    return p <= srv->ndevs ? (int)p : -1;
}

int do_lookup(srv_t *srv, uint64_t id, int *pool, pool_slice_info_t *info)
{
    *pool = pool_of(srv, id);
    if (*pool < 0)
        return PINPOOL_ENOENT;
    return pool_lookup(srv->pools[*pool], id & ((1ull << SRV_POOL_SHIFT) - 1), info);
}

/* The pool of device_id (-1: host), or -1 with msg. */
static int pool_for_device(const srv_t *srv, int32_t device_id, char *msg, size_t msglen)
{
    if (device_id == -1)
        return HOST_POOL;
    for (uint32_t i = 0; i < srv->ndevs; i++)
        if (srv->devs[i].device == device_id)
            return (int)i + 1;
    if (srv->ndevs == 0)
        snprintf(msg, msglen, "device %" PRId32 ": this daemon has no device pool (host slices "
                 "use device_id -1; start it with --device-pool-size)", device_id);
    else
        snprintf(msg, msglen, "device %" PRId32 ": no device pool on that GPU (see --devices)",
                 device_id);
    return -1;
}

void do_describe(const srv_t *srv, int pool, const pool_slice_info_t *info, srv_slice_t *out)
{
    memset(out, 0, sizeof(*out));
    out->info = *info;
    out->info.id = global_id((uint32_t)pool, info->id);
    if (pool == HOST_POOL) {
        out->device_id = -1;
        out->memory_ptr = (uint64_t)(uintptr_t)srv->base + info->offset;
        out->chunk_size = srv->cfg.chunk_size;
    } else {
        const ipc_devmem_t *dm = &srv->devs[pool - 1];
        out->device_id = dm->device;
        if (dm->backend == IPC_DEV_VMM) {
            out->dev_vmm = true;
            out->chunk_size = dm->chunk_size;
        } else {
            out->memory_ptr = dm->base + info->offset;
            memcpy(out->ipc_handle, dm->handle, IPC_HANDLE_BYTES);
        }
    }
}

/*
 * Slice slice_id, if principal p's client c (NULL: none yet) may use it for
 * op (access.c's rule: its own, or for FREE and MAP one its uid keeps).  0
 * with *pool, *info and *holder (the client that holds it), or
 * PINPOOL_ENOENT (no such slice; with host_only, no such host slice) or
 * PINPOOL_EPERM with msg.
 */
static int do_usable_slice(srv_t *srv, srv_op_t op, const srv_principal_t *p,
                           const struct srv_client *c, uint64_t slice_id, bool host_only,
                           int *pool, pool_slice_info_t *info, struct srv_client **holder,
                           char *msg, size_t msglen)
{
    if (do_lookup(srv, slice_id, pool, info) != 0 || (host_only && *pool != HOST_POOL)) {
        if (host_only)
            snprintf(msg, msglen, "no host slice %" PRIu64, slice_id);
        else
            snprintf(msg, msglen, "no slice %" PRIu64 " in the pool", slice_id);
        return PINPOOL_ENOENT;
    }
    *holder = do_client_of_owner(srv, info->owner);
    return do_may_use_slice(srv, op, p, c, *holder, slice_id, msg, msglen);
}

/* The one slice of a kept client, in *pool / *info. */
typedef struct find_one {
    pool_slice_info_t info;
    bool found;
} find_one_t;

static void take_first(const pool_slice_info_t *slice, void *arg)
{
    find_one_t *f = arg;
    if (!f->found) {
        f->info = *slice;
        f->found = true;
    }
}

static bool do_kept_slice(srv_t *srv, const struct srv_client *c, int *pool, pool_slice_info_t *info)
{
    for (uint32_t i = 0; i <= srv->ndevs; i++) {
        find_one_t f = {.found = false};
        pool_foreach_slice(srv->pools[i], c->owner, false, take_first, &f);
        if (f.found) {
            *pool = (int)i;
            *info = f.info;
            return true;
        }
    }
    return false;
}

/* ---- placement by uid (lock held; both may drop it) --------------------------------- */

bool do_make_room_for_uid(srv_t *srv, uid_t uid, uint64_t size, uint64_t align)
{
    pool_claim_t claim;

    if (srv->shutting_down)
        return false;
    if (pool_dirty_bytes(srv->pools[HOST_POOL]) > 0) {
        if (do_nowait())
            return false; /* do_host_room checked first: not reached */
        do_wait_clean(srv);
        return true;
    }
    if (pool_claim(srv->pools[HOST_POOL], uid, size, align, &claim) != 0)
        return false;
    return do_replace_chunks(srv, &claim) == 0;
}

int do_host_room(srv_t *srv, uid_t uid, uint64_t size, uint64_t align)
{
    pool_t *host = srv->pools[HOST_POOL];

    /* 1. Chunks still being made: the room is coming anyway. */
    if (do_chunks_coming(srv)) {
        if (do_nowait())
            return SRV_EWOULDBLOCK;
        pthread_cond_wait(&srv->chunks_cv, &srv->lock);
        return 0;
    }
    /* 2. Memory of this uid (or never used) being zeroed, or 3. another uid's
     * idle chunk given fresh memory: both block (cleaning, pinning). */
    if (!srv->shutting_down && pool_dirty_bytes(host) > 0) {
        if (do_nowait())
            return SRV_EWOULDBLOCK;
        do_wait_clean(srv);
        return 0;
    }
    if (!srv->shutting_down) {
        pool_claim_t claim;
        if (pool_claim(host, uid, size, align, &claim) == 0) {
            if (do_nowait()) { /* a worker will claim it again */
                pool_claim_end(host, &claim, false);
                return SRV_EWOULDBLOCK;
            }
            if (do_replace_chunks(srv, &claim) == 0)
                return 0;
        }
    }
    /* 4. A spill of a released object (tier I/O), or waiting for one. */
    if (do_make_room_waits(srv)) {
        if (do_nowait())
            return SRV_EWOULDBLOCK;
        if (do_make_room(srv))
            return 0;
    }
    return 1;
}

int do_take_object_slice(srv_t *srv, uint64_t slice, struct srv_client *c,
                         pool_slice_info_t *info, char *msg, size_t msglen)
{
    pool_t *host = srv->pools[HOST_POOL];
    pool_slice_info_t old;
    int rc;

    if (pool_lookup(host, slice, &old) != 0) {
        snprintf(msg, msglen, "the object's slice %" PRIu64 " is gone", slice);
        return PINPOOL_EINTERNAL;
    }
    if (old.tenant != (uint64_t)c->uid) { /* objects live in their uid's memory */
        snprintf(msg, msglen, "the object's slice %" PRIu64 " lies in the memory of uid %" PRIu64
                 ", not of uid %u", slice, old.tenant, (unsigned)c->uid);
        return PINPOOL_EINTERNAL;
    }
    rc = pool_set_owner(host, slice, srv->obj_owner, c->owner);
    if (rc != 0) {
        snprintf(msg, msglen, "cannot hand the object over: %s", pinpool_strerror(rc));
        return rc;
    }
    do_slice_charged(srv, c, (int64_t)old.extent);
    *info = old;
    info->owner = c->owner;
    return 0;
}

/* ---- the calls ------------------------------------------------------------------ */

static bool is_vmm_pool(const srv_t *srv, int pool)
{
    return pool != HOST_POOL && srv->devs[pool - 1].backend == IPC_DEV_VMM;
}

/*
 * A vmm device pool without room for uid: claim another uid's idle chunks
 * (pool_claim) and give each new device memory before it changes hands, as
 * the host pool does (chunks.c), so that descriptors the old uid kept reach
 * only the old memory.  The lock stays held (making device memory takes
 * milliseconds, not the host pool's seconds of pinning).  0: try again; 1:
 * no room; SRV_EWOULDBLOCK under do_nowait().
 */
static int do_device_room(srv_t *srv, int pool, uid_t uid, uint64_t size, uint64_t align)
{
    ipc_devmem_t *dm = &srv->devs[pool - 1];
    pool_claim_t claim;
    bool ok = true;

    if (!is_vmm_pool(srv, pool) || srv->shutting_down ||
        pool_claim(srv->pools[pool], uid, size, align, &claim) != 0)
        return 1;
    if (do_nowait()) {
        pool_claim_end(srv->pools[pool], &claim, false);
        return SRV_EWOULDBLOCK;
    }
    for (uint32_t i = claim.first; ok && i < claim.first + claim.n; i++) {
        char msg[256];
        if (pool_claim_fresh(srv->pools[pool], i) &&
            ipc_devmem_replace_chunk(dm, i, msg, sizeof(msg)) != 0) {
            srv_warn("%s", msg);
            ok = false;
        }
    }
    pool_claim_end(srv->pools[pool], &claim, ok);
    return ok ? 0 : 1;
}

void do_explain_alloc_error(srv_t *srv, int pool, int rc, uint64_t size, uint64_t alignment,
                                char *msg, size_t msglen)
{
    pool_stats_t st;
    char a[32], b[32], c[32], d[32], where[32] = "";

    pool_get_stats(srv->pools[pool], &st);
    pool_format_size(size, a, sizeof(a));
    if (pool != HOST_POOL)
        snprintf(where, sizeof(where), " on GPU %d", srv->devs[pool - 1].device);
    switch (rc) {
    case PINPOOL_EINVAL:
        snprintf(msg, msglen, "size_bytes must be greater than 0");
        break;
    case PINPOOL_ETOOBIG:
        snprintf(msg, msglen, "cannot allocate %s%s: the whole pool is %s", a, where,
                 pool_format_size(st.capacity, b, sizeof(b)));
        break;
    case PINPOOL_EALIGN:
        snprintf(msg, msglen, "alignment %" PRIu64 " must be a power of two that divides the "
                 "chunk size (%s)", alignment,
                 pool_format_size(pool_chunk_size(srv->pools[pool]), b, sizeof(b)));
        break;
    case PINPOOL_ENOSPC: {
        int n = snprintf(msg, msglen, "cannot allocate %s%s: the largest free extent is %s (%s "
                         "free of %s)", a, where, pool_format_size(st.largest_free, b, sizeof(b)),
                         pool_format_size(st.free, c, sizeof(c)),
                         pool_format_size(st.capacity, d, sizeof(d)));
        if (pool == HOST_POOL && n > 0 && (size_t)n < msglen) {
            objs_stats_t os;
            objs_get_stats(srv->objs, &os);
            n += snprintf(msg + n, msglen - (size_t)n, "; spillable (released, resident): %s in "
                          "%" PRIu32 " object%s; spill tier: %s", pool_format_size(
                              os.bytes[OBJ_RESIDENT], b, sizeof(b)), os.count[OBJ_RESIDENT],
                          os.count[OBJ_RESIDENT] == 1 ? "" : "s",
                          srv->tier != NULL ? tier_scheme(srv->tier) : "none");
            if (srv->sp.last_error[0] != '\0' && n > 0 && (size_t)n < msglen)
                n += snprintf(msg + n, msglen - (size_t)n, "; last spill error: %s",
                              srv->sp.last_error);
            if (st.num_tenants > 1 && n > 0 && (size_t)n < msglen)
                snprintf(msg + n, msglen - (size_t)n, "; free space in chunks that hold "
                         "slices of another uid is that uid's");
        }
        break;
    }
    default:
        snprintf(msg, msglen, "cannot allocate %s%s: %s", a, where, pinpool_strerror(rc));
        break;
    }
}

/* The extent a slice of size bytes takes in pool (what is charged for it):
 * size rounded up to the pool's quantum (a vmm device pool's is its minimum
 * granularity, SRV_QUANTUM elsewhere). */
static uint64_t extent_of(const srv_t *srv, int pool, uint64_t size)
{
    uint64_t q = is_vmm_pool(srv, pool) ? srv->devs[pool - 1].align : SRV_QUANTUM;

    return size > UINT64_MAX - q ? UINT64_MAX : (size + q - 1) & ~(q - 1);
}

int srv_alloc(srv_t *srv, const char *token, const char *client_id, int32_t device_id,
              uint64_t size, uint64_t alignment, const char *tag, bool keep, srv_slice_t *out,
              char *msg, size_t msglen)
{
    struct srv_client *c, *holder;
    char kept_name[SRV_CLIENT_ID_LEN];
    srv_principal_t p;
    pool_slice_info_t info;
    uint64_t extent;
    uid_t uid;
    int pool, rc;

    rc = srv_check_client_id(client_id, msg, msglen);
    if (rc != 0)
        return rc;
    pool = pool_for_device(srv, device_id, msg, msglen);
    if (pool < 0)
        return PINPOOL_ENODEV;
    extent = extent_of(srv, pool, size);
    if (keep) {
        rc = srv_check_name("tag", tag != NULL ? tag : "",
                        SRV_CLIENT_ID_LEN - 1 - strlen(KEPT_PREFIX), msg, msglen);
        if (rc != 0)
            return rc;
        snprintf(kept_name, sizeof(kept_name), KEPT_PREFIX "%s", tag);
    }
    pthread_mutex_lock(&srv->lock);
    for (;;) {
        rc = do_shutdown_error(srv, msg, msglen);
        if (rc == 0)
            rc = do_access(srv, SRV_OP_ALLOC, token, client_id, &p, msg, msglen);
        if (rc == 0 && pool != HOST_POOL && !is_vmm_pool(srv, pool))
            rc = do_device_pool_access(srv, p.uid, msg, msglen); /* ipc: one uid's */
        if (rc != 0)
            break;
        rc = do_get_client(srv, client_id, &c, msg, msglen); /* the caller (the maker) */
        if (rc != 0)
            break;
        uid = c->uid;
        if (keep && do_find_kept(srv, uid, kept_name) != NULL) {
            snprintf(msg, msglen, "a slice is already kept under tag '%s'", tag);
            do_drop_if_idle(srv, c);
            rc = PINPOOL_EEXIST;
            break;
        }
        rc = do_quota_check(srv, c, extent, uid, extent,
                            keep ? "kept slice" : "slice", msg, msglen);
        if (rc != 0) {
            do_drop_if_idle(srv, c);
            break;
        }
        /* a kept slice is charged to its maker too while it lives, if a session
         * (a client without a session goes when it holds no slice) */
        holder = keep ? do_add_kept(srv, kept_name, uid, c->session ? c->owner : 0) : c;
        if (holder == NULL) {
            snprintf(msg, msglen, "out of memory");
            do_drop_if_idle(srv, c);
            rc = -ENOMEM;
            break;
        }
        /* A session first gets back what it freed itself a moment ago (its
         * own bytes: no zeroing, and still mapped in it). */
        rc = pool == HOST_POOL && holder->session
                 ? pool_alloc_own(srv->pools[pool], uid, holder->owner, size, alignment, &info)
                 : PINPOOL_ENOENT;
        if (rc == PINPOOL_ENOENT)
            rc = pool == HOST_POOL || is_vmm_pool(srv, pool)
                     ? pool_alloc_as(srv->pools[pool], uid, holder->owner, size, alignment, &info)
                     : pool_alloc(srv->pools[pool], holder->owner, size, alignment, &info);
        if (rc == 0) {
            /* A client without a session cannot map it, and nothing is copied
             * into it: freed, it needs no zeroing (kept slices may be mapped). */
            if (pool == HOST_POOL && !holder->session && !holder->kept)
                pool_mark_unwritten(srv->pools[pool], info.id);
            do_slice_charged(srv, holder, (int64_t)info.extent);
            do_describe(srv, pool, &info, out);
            srv_debug("client %s: slice %" PRIx64 " of %" PRIu64 " bytes at %" PRIu64 " tag '%s'",
                      holder->id, out->info.id, size, info.offset, tag != NULL ? tag : "");
            break;
        }
        if (holder != c)
            do_drop_if_idle(srv, holder); /* the kept client made for it */
        do_drop_if_idle(srv, c); /* c may be gone now */
        if (rc == PINPOOL_ENOSPC && pool == HOST_POOL) {
            int room = do_host_room(srv, uid, size, alignment);
            if (room == 0)
                continue; /* the lock dropped: everything is looked up again */
            if (room == SRV_EWOULDBLOCK) {
                rc = room;
                break;
            }
        }
        if (rc == PINPOOL_ENOSPC && pool != HOST_POOL) {
            int room = do_device_room(srv, pool, uid, size, alignment);
            if (room == 0)
                continue;
            if (room == SRV_EWOULDBLOCK) {
                rc = room;
                break;
            }
        }
        do_explain_alloc_error(srv, pool, rc, size, alignment, msg, msglen);
        break;
    }
    pthread_mutex_unlock(&srv->lock);
    return rc;
}

int srv_attach(srv_t *srv, const char *token, const char *client_id, const char *tag,
               srv_slice_t *out, char *msg, size_t msglen)
{
    char kept_name[SRV_CLIENT_ID_LEN];
    struct srv_client *c;
    srv_principal_t p;
    pool_slice_info_t info;
    int pool, rc;

    rc = srv_check_client_id(client_id, msg, msglen);
    if (rc == 0)
        rc = srv_check_name("tag", tag, SRV_CLIENT_ID_LEN - 1 - strlen(KEPT_PREFIX), msg, msglen);
    if (rc != 0)
        return rc;
    snprintf(kept_name, sizeof(kept_name), KEPT_PREFIX "%s", tag);
    pthread_mutex_lock(&srv->lock);
    rc = do_access(srv, SRV_OP_ATTACH, token, client_id, &p, msg, msglen);
    if (rc == 0) {
        /* the tag in the caller's uid's namespace: another uid's is never found */
        c = do_find_kept(srv, p.uid, kept_name);
        if (c == NULL || !do_kept_slice(srv, c, &pool, &info)) {
            snprintf(msg, msglen, "no slice is kept under tag '%s' (by uid %u)", tag,
                     (unsigned)p.uid);
            rc = PINPOOL_ENOENT;
        } else {
            do_describe(srv, pool, &info, out);
        }
    }
    pthread_mutex_unlock(&srv->lock);
    return rc;
}

int srv_free(srv_t *srv, const char *token, const char *client_id, uint64_t slice_id,
             uint64_t *freed_bytes, uint32_t *freed_slices, char *msg, size_t msglen)
{
    struct srv_client *c, *holder, *maker;
    srv_principal_t p;
    pool_slice_info_t info;
    int pool, rc = 0;

    *freed_bytes = 0;
    *freed_slices = 0;
    rc = srv_check_client_id(client_id, msg, msglen);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&srv->lock);
    rc = do_access(srv, SRV_OP_FREE, token, client_id, &p, msg, msglen);
    if (rc != 0)
        goto out;
    c = do_find_client(srv, client_id);
    if (slice_id == 0) {
        if (c != NULL) {
            *freed_slices = do_free_owner(srv, c, freed_bytes);
            do_drop_if_idle(srv, c);
        }
        goto out;
    }
    rc = do_usable_slice(srv, SRV_OP_FREE, &p, c, slice_id, false, &pool, &info, &holder, msg,
                         msglen);
    if (rc == 0) {
        rc = pool_free(srv->pools[pool], info.id, info.owner, freed_bytes);
        if (rc == 0) {
            *freed_slices = 1;
            maker = holder->kept ? do_client_of_owner(srv, holder->maker) : NULL;
            do_slice_charged(srv, holder, -(int64_t)info.extent);
            do_drop_if_idle(srv, holder);
            if (maker != NULL && maker != holder)
                do_drop_if_idle(srv, maker);
        }
        do_cleaner_kick(srv);
    }
    if (rc != 0 && msg[0] == '\0')
        snprintf(msg, msglen, "%s", pinpool_strerror(rc));
out:
    pthread_mutex_unlock(&srv->lock);
    return rc;
}

int srv_session_chunk_fds(srv_t *srv, srv_client_t *c, uint64_t slice_id, uint32_t first,
                          uint32_t count, int *fds, char *msg, size_t msglen)
{
    struct srv_client *owner;
    srv_principal_t p;
    pool_slice_info_t info;
    int pool, rc;

    pthread_mutex_lock(&srv->lock);
    do_principal_of(srv, c, &p);
    rc = do_usable_slice(srv, SRV_OP_MAP, &p, c, slice_id, false, &pool, &info, &owner, msg,
                         msglen);
    if (rc == 0 && pool != HOST_POOL && !is_vmm_pool(srv, pool)) {
        /* an ipc device pool's slices go by their CUDA IPC handle */
        snprintf(msg, msglen, "no host slice %" PRIu64, slice_id);
        rc = PINPOOL_ENOENT;
    } else if (rc == 0 && info.tenant != (uint64_t)c->uid) {
        /* cannot happen (a uid's kept slices lie in its chunks): say so anyway */
        snprintf(msg, msglen, "slice %" PRIu64 " lies in the memory of uid %" PRIu64 "; uid %u "
                 "may not map it", slice_id, info.tenant, (unsigned)c->uid);
        rc = PINPOOL_EPERM;
    } else if (rc == 0 && (count == 0 || count > IPC_MAX_FDS || first < info.first_chunk ||
                    (uint64_t)first + count > (uint64_t)info.first_chunk + info.nchunks)) {
        snprintf(msg, msglen, "chunks %" PRIu32 "+%" PRIu32 " are not those of slice %" PRIu64,
                 first, count, slice_id);
        rc = PINPOOL_EINVAL;
    } else if (rc == 0) {
        const ipc_chunk_t *chunks = pool == HOST_POOL ? srv->chunks : srv->devs[pool - 1].chunks;
        for (uint32_t i = 0; i < count; i++)
            fds[i] = chunks[first + i].fd;
    }
    pthread_mutex_unlock(&srv->lock);
    return rc;
}
