/*
 * devmap.c - device slices of a vmm device pool in this process (see
 * ctx.h, pinpool__devmap_*): the slice's chunk descriptors fetched on
 * the fd socket, imported and mapped into an address range reserved for the
 * slice alone, with the access its caller is given (the owner read-write, a
 * reader read-only); pinpool_dev_unmap / pinpool_dev_remap in between.
 *
 * Owns: the reservation and the mapping of each such slice.
 * Never: keeps a chunk's descriptor or handle (the mapping holds the memory,
 * so unmapping really lets it go, and a remap asks the daemon again: a slice
 * freed meanwhile cannot be mapped back); moves a reservation.
 * Locking: none of its own; the caller holds the context's lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ctx.h" /* devmem.h too */

struct pinpool__devmap {
    uint64_t slice_id;
    int32_t device;
    uint32_t first, n;   /* chunks of the device pool */
    uint64_t chunk_size;
    uint64_t va;         /* the reservation: n * chunk_size bytes */
    bool writable;
    bool mapped;
};

/* Fetch the chunks' descriptors and map them at m->va. */
static int map_in(pinpool_ctx_t *ctx, pinpool__conn_t *c, pinpool__devmap_t *m)
{
    int fds[IPC_DEV_MAX_CHUNKS];
    char why[256];
    int rc;

    if (m->n > IPC_DEV_MAX_CHUNKS)
        return pinpool__fail(ctx, PINPOOL_EPROTO, "device slice %" PRIu64 " spans %" PRIu32
                             " chunks (at most %d)", m->slice_id, m->n, IPC_DEV_MAX_CHUNKS);
    rc = pinpool__conn_fetch_fds(ctx, c, m->slice_id, m->first, m->n, fds);
    if (rc != 0)
        return rc;
    rc = ipc_devmem_map(m->device, m->va, m->chunk_size, fds, m->n, m->writable, why, sizeof(why));
    if (rc != 0)
        return pinpool__fail(ctx, rc, "device slice %" PRIu64 ": %s", m->slice_id, why);
    m->mapped = true;
    return 0;
}

int pinpool__devmap_open(pinpool_ctx_t *ctx, pinpool__conn_t *c, uint64_t slice_id,
                         int32_t device, uint32_t first_chunk, uint32_t nchunks,
                         uint64_t chunk_size, uint64_t offset, bool writable,
                         pinpool__devmap_t **out, void **ptr)
{
    pinpool__devmap_t *m;
    char why[256];
    int rc;

    if (nchunks == 0 || chunk_size == 0 || offset >= chunk_size)
        return pinpool__fail(ctx, PINPOOL_EPROTO, "the daemon's reply for device slice %" PRIu64
                             " has no chunks", slice_id);
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    m->slice_id = slice_id;
    m->device = device;
    m->first = first_chunk;
    m->n = nchunks;
    m->chunk_size = chunk_size;
    m->writable = writable;
    rc = ipc_devmem_reserve(device, (uint64_t)nchunks * chunk_size, &m->va, why, sizeof(why));
    if (rc != 0) {
        free(m);
        return pinpool__fail(ctx, rc, "device slice %" PRIu64 ": %s", slice_id, why);
    }
    rc = map_in(ctx, c, m);
    if (rc != 0) {
        ipc_devmem_unreserve(m->va, (uint64_t)m->n * m->chunk_size);
        free(m);
        return rc;
    }
    *out = m;
    *ptr = (void *)(uintptr_t)(m->va + offset);
    return 0;
}

int pinpool__devmap_unmap(pinpool_ctx_t *ctx, pinpool__devmap_t *m)
{
    if (!m->mapped)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "device slice %" PRIu64 " is already unmapped",
                             m->slice_id);
    ipc_devmem_unmap(m->device, m->va, (uint64_t)m->n * m->chunk_size);
    m->mapped = false;
    return 0;
}

int pinpool__devmap_remap(pinpool_ctx_t *ctx, pinpool__conn_t *c, pinpool__devmap_t *m)
{
    if (m->mapped)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "device slice %" PRIu64 " is mapped already",
                             m->slice_id);
    return map_in(ctx, c, m);
}

void pinpool__devmap_close(pinpool__devmap_t *m)
{
    if (m == NULL)
        return;
    if (m->mapped)
        ipc_devmem_unmap(m->device, m->va, (uint64_t)m->n * m->chunk_size);
    ipc_devmem_unreserve(m->va, (uint64_t)m->n * m->chunk_size);
    free(m);
}
