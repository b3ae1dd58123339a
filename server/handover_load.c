/*
 * handover_load.c - the new daemon's half of handover.c: the state a takeover
 * received (srv_handover_save's blob, HO_VERSION) made again in this srv -
 * the spill tier opened under the old daemon's claim, the chunks mapped or
 * imported, the clients, the pools exactly (pool_restore_*), the objects
 * and the tier copies queued for removal - and the charges rebuilt from them and
 * compared with the old daemon's.
 *
 * Owns: reading the blob (its format is handover.c's).  Never: writes the
 * pool's memory (the cleaner starts only after GO, main.c).
 * Locking: srv_handover_load holds srv->lock throughout (no other thread uses
 * srv yet); srv_handover_session takes it.
 */
#include "srv_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host_memfd.h"
#include "log.h"
#include "pinpool.h"

typedef struct rbuf {
    const unsigned char *p;
    size_t len, at;
    bool bad;
} rbuf_t;

static void get(rbuf_t *r, void *out, size_t n)
{
    if (n == 0)
        return;
    if (r->bad || r->len - r->at < n) {
        r->bad = true;
        memset(out, 0, n);
        return;
    }
    memcpy(out, r->p + r->at, n);
    r->at += n;
}

static uint64_t get64(rbuf_t *r)
{
    uint64_t v;

    get(r, &v, sizeof(v));
    return v;
}

/* A string of at most max bytes into out[max + 1]. */
static void get_str(rbuf_t *r, char *out, size_t max)
{
    uint64_t n = get64(r);

    if (n > max) {
        r->bad = true;
        n = 0;
    }
    get(r, out, (size_t)n);
    out[r->bad ? 0 : n] = '\0';
}

/* ---- load (the new daemon) ------------------------------------------------------------ */

/* Chunk i's memory is the memfd fd (taken: closed on failure too). */
static int adopt_chunk(srv_t *srv, uint32_t i, int fd, char *msg, size_t msglen)
{
    uint64_t size = srv->cfg.chunk_size;
    void *addr = (char *)srv->base + (uint64_t)i * size;
    struct stat st;
    int rc;

    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != size) {
        snprintf(msg, msglen, "chunk %" PRIu32 ": the descriptor received is not a memfd of "
                 "%" PRIu64 " bytes", i, size);
        close(fd);
        return PINPOOL_EPROTO;
    }
    rc = ipc_memfd_map_over(addr, size, fd, -1);
    if (rc != 0) {
        snprintf(msg, msglen, "chunk %" PRIu32 ": cannot map it: %s", i, pinpool_strerror(rc));
        close(fd);
        return rc;
    }
    srv->chunks[i] = (ipc_chunk_t){.fd = fd, .addr = addr, .size = size, .handle = 0};
    srv->created[i] = true;
    return 0;
}

/* A charge the old daemon had that the rebuilt state does not: an error. */
static int charge_differs(const char *what, const char *name, uint64_t had, uint64_t now,
                          char *msg, size_t msglen)
{
    snprintf(msg, msglen, "the charges do not match: %s %s had %" PRIu64 " bytes charged in "
             "the old daemon, %" PRIu64 " rebuilt from its slices and objects", what, name, had,
             now);
    return PINPOOL_EPROTO;
}

/* The slices of pool (saved by pool_save_each), made again and charged to
 * their holders; where: "" or " of GPU N" for the messages.  Lock held. */
static int load_slices(srv_t *srv, rbuf_t *r, pool_t *pool, const char *where, char *msg,
                       size_t msglen)
{
    uint64_t nslices = get64(r), v;
    int rc;

    for (uint64_t i = 0; !r->bad && i < nslices; i++) {
        pool_saved_t s = {0};
        s.info.id = get64(r);
        s.info.owner = get64(r);
        s.info.tenant = get64(r);
        s.info.offset = get64(r);
        s.info.size = get64(r);
        s.info.extent = get64(r);
        v = get64(r);
        s.unwritten = v & 1;
        s.dirty = v & 2;
        if (r->bad)
            break;
        const char *why = "";
        rc = pool_restore_slice(pool, &s, &why);
        if (rc != 0) {
            snprintf(msg, msglen, "%s %" PRIu64 "%s (offset %" PRIu64 ", %" PRIu64 " bytes, "
                     "tenant %" PRIu64 ") does not fit the rebuilt pool: %s", s.dirty ?
                     "dirty extent" : "slice", s.info.id, where, s.info.offset, s.info.size,
                     s.info.tenant, why[0] != '\0' ? why : pinpool_strerror(rc));
            return rc;
        }
        if (s.dirty || (pool == srv->pools[HOST_POOL] && s.info.owner == srv->obj_owner))
            continue;
        struct srv_client *c = do_client_of_owner(srv, s.info.owner);
        if (c == NULL || (uint64_t)c->uid != s.info.tenant) {
            snprintf(msg, msglen, "slice %" PRIu64 "%s belongs to owner %" PRIu64 ", which is "
                     "no client of its uid", s.info.id, where, s.info.owner);
            return PINPOOL_EPROTO;
        }
        do_slice_charged(srv, c, (int64_t)s.info.extent);
    }
    return r->bad ? PINPOOL_EPROTO : 0;
}

/* The vmm device pools (save_devices): the same layout as this daemon planned
 * (ipc_devmem_plan_vmm), each chunk's descriptor imported (fds: taken, every
 * one closed on failure too), tenants and slices.  Lock held. */
static int load_devices(srv_t *srv, rbuf_t *r, int *fds, uint32_t nfds, char *msg,
                        size_t msglen)
{
    uint64_t ndevs = get64(r);
    uint32_t at = 0;
    int rc = 0;

    srv->dev_uid_set = get64(r) != 0;
    srv->dev_uid = (uid_t)get64(r);
    if (r->bad || ndevs != srv->ndevs) {
        snprintf(msg, msglen, "the running daemon has %" PRIu64 " device pool%s, this one %"
                 PRIu32 ": start it with the same --devices and --device-pool-size", ndevs,
                 ndevs == 1 ? "" : "s", srv->ndevs);
        rc = PINPOOL_EINVAL;
    }
    for (uint32_t d = 0; rc == 0 && d < srv->ndevs; d++) {
        ipc_devmem_t *dm = &srv->devs[d];
        pool_t *pool = srv->pools[1 + d];
        uint64_t dev = get64(r), cs = get64(r), al = get64(r), n = get64(r), next = get64(r);
        char where[32];
        snprintf(where, sizeof(where), " of GPU %d", dm->device);
        if (r->bad || dev != (uint64_t)dm->device || cs != dm->chunk_size || al != dm->align ||
            n != dm->nchunks || at + n > nfds) {
            snprintf(msg, msglen, "the device pools differ: GPU %" PRIu64 " with %" PRIu64
                     " chunks of %" PRIu64 " bytes in the running daemon, GPU %d with %" PRIu32
                     " of %" PRIu64 " here: start it with the same --devices and "
                     "--device-pool-size", dev, n, cs, dm->device, dm->nchunks, dm->chunk_size);
            rc = PINPOOL_EINVAL;
            break;
        }
        for (uint32_t i = 0; i < dm->nchunks && rc == 0; i++) {
            rc = ipc_devmem_adopt_chunk(dm, i, fds[at], msg, msglen);
            fds[at++] = -1;
        }
        for (uint32_t i = 0; i < dm->nchunks && rc == 0; i++) {
            uint64_t t = get64(r);
            if (t != POOL_TENANT_NONE && pool_restore_tenant(pool, i, t) != 0) {
                snprintf(msg, msglen, "chunk %" PRIu32 "%s: cannot give it to uid %" PRIu64, i,
                         where, t);
                rc = PINPOOL_EPROTO;
            }
        }
        if (rc == 0)
            rc = load_slices(srv, r, pool, where, msg, msglen);
        if (rc == 0 && pool_restore_next_id(pool, next) != 0)
            rc = PINPOOL_EPROTO;
        if (rc == 0) {
            char pmsg[256];
            if (pool_check(pool, pmsg, sizeof(pmsg)) != 0) {
                snprintf(msg, msglen, "the rebuilt pool%s fails its checks: %s", where, pmsg);
                rc = PINPOOL_EINTERNAL;
            }
        }
    }
    if (rc == 0 && at != nfds) {
        snprintf(msg, msglen, "%" PRIu32 " chunk descriptors too many", nfds - at);
        rc = PINPOOL_EPROTO;
    }
    for (; at < nfds; at++)
        if (fds[at] >= 0) {
            close(fds[at]);
            fds[at] = -1;
        }
    return rc;
}

typedef struct saved_charge {
    uint64_t owner, charge;
} saved_charge_t;

int srv_handover_load(srv_t *srv, const void *blob, size_t len, int *fds, uint32_t nfds,
                      int tier_fd, char *msg, size_t msglen)
{
    rbuf_t r = {.p = blob, .len = len};
    pool_t *host = srv->pools[HOST_POOL];
    saved_charge_t *charges = NULL;
    uint64_t nclients = 0, nuids, nobjs, next_id, gen, obj_owner, next_owner;
    uint64_t capacity, chunk_size, nchunks, v;
    char backend[32], key[OBJ_KEY_MAX + 1];
    uint32_t taken = 0;
    int rc = PINPOOL_EPROTO;

    msg[0] = '\0';
    /* The spill tier, under the running daemon's claim (before the lock: it
     * reads the directory). */
    bool wants_tier = strcmp(srv->cfg.spill_tier, "none") != 0;
    if (wants_tier != (tier_fd >= 0)) {
        snprintf(msg, msglen, "the running daemon has %s spill tier and this one %s: start it "
                 "with the running daemon's --spill-tier", tier_fd >= 0 ? "a" : "no",
                 wants_tier ? "has one" : "has none");
        if (tier_fd >= 0)
            close(tier_fd);
        tier_fd = -1;
        rc = PINPOOL_EINVAL;
    } else if (wants_tier) {
        rc = tier_open_claimed(&srv->tier, srv->cfg.spill_tier, tier_fd, msg, msglen);
        tier_fd = -1;
        if (rc == 0)
            srv_info("spill tier: %s (taken over with its objects)", srv->cfg.spill_tier);
    } else {
        rc = 0;
    }
    pthread_mutex_lock(&srv->lock);
    if (rc != 0)
        goto out;
    rc = PINPOOL_EPROTO;
    if (srv->host != &ipc_host_memfd) {
        snprintf(msg, msglen, "this daemon's host backend is %s: a takeover hands over memfd "
                 "host pools only (pass the running daemon's --host-backend)", srv->host->name);
        rc = PINPOOL_EINVAL;
        goto out;
    }
    if (get64(&r) != HO_MAGIC || get64(&r) != HO_VERSION) {
        snprintf(msg, msglen, "the state is not of this version of pinpool (%s)",
                 PINPOOL_VERSION_STRING);
        goto out;
    }
    capacity = get64(&r);
    chunk_size = get64(&r);
    nchunks = get64(&r);
    get_str(&r, backend, sizeof(backend) - 1);
    if (r.bad || capacity != srv->capacity || chunk_size != srv->cfg.chunk_size ||
        nchunks != srv->nchunks || nfds < nchunks || strcmp(backend, srv->host->name) != 0) {
        snprintf(msg, msglen, "the pools differ: the running daemon has %" PRIu64 " chunks of "
                 "%" PRIu64 " bytes on %s, this one %" PRIu32 " of %" PRIu64 " on %s: start it "
                 "with the same --mem-pool-size, --chunk-size and --host-backend", nchunks,
                 chunk_size, backend, srv->nchunks, srv->cfg.chunk_size, srv->host->name);
        goto out;
    }
    obj_owner = get64(&r);
    next_owner = get64(&r);
    next_id = get64(&r);
    gen = get64(&r);
    srv->replacements = get64(&r);
    srv->chunks_seconds = (double)get64(&r) / 1e9;
    if (obj_owner != srv->obj_owner) {
        snprintf(msg, msglen, "the objects' owner number differs (%" PRIu64 " vs %" PRIu64 ")",
                 obj_owner, srv->obj_owner);
        goto out;
    }
    /* The chunks: every one mapped, in the pool, with its tenant. */
    for (; taken < nchunks; taken++) {
        rc = adopt_chunk(srv, taken, fds[taken], msg, msglen);
        fds[taken] = -1;
        if (rc != 0)
            goto out;
    }
    rc = pool_add_chunks(host, srv->nchunks);
    if (rc != 0)
        goto out;
    srv->ready = srv->next_chunk = srv->nchunks;
    for (uint32_t i = 0; i < srv->nchunks; i++) {
        v = get64(&r);
        if (v != POOL_TENANT_NONE && (rc = pool_restore_tenant(host, i, v)) != 0) {
            snprintf(msg, msglen, "chunk %" PRIu32 ": cannot give it to uid %" PRIu64, i, v);
            goto out;
        }
    }
    /* The clients, with nothing charged yet. */
    nclients = get64(&r);
    if (r.bad || nclients > (len / 64)) {
        rc = PINPOOL_EPROTO;
        goto out;
    }
    charges = calloc(nclients + 1, sizeof(*charges));
    if (charges == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint64_t i = 0; i < nclients; i++) {
        struct srv_client c = {0};
        uint64_t flags;
        get_str(&r, c.id, sizeof(c.id) - 1);
        c.owner = get64(&r);
        c.uid = (uid_t)get64(&r);
        flags = get64(&r);
        c.session = flags & 1;
        c.kept = flags & 2;
        c.maker = get64(&r);
        charges[i].owner = c.owner;
        charges[i].charge = get64(&r);
        c.cred.pid = (pid_t)get64(&r);
        c.cred.uid = (uid_t)get64(&r);
        c.cred.gid = (gid_t)get64(&r);
        get(&r, c.token, sizeof(c.token));
        c.token[sizeof(c.token) - 1] = '\0';
        if (r.bad || do_restore_client(srv, &c) == NULL) {
            snprintf(msg, msglen, "client %s (owner %" PRIu64 "): cannot make it again", c.id,
                     c.owner);
            rc = PINPOOL_EPROTO;
            goto out;
        }
    }
    if (next_owner > srv->next_owner)
        srv->next_owner = next_owner;
    /* The uids' charges, read now, compared at the end. */
    nuids = get64(&r);
    if (r.bad || nuids > len / 16) {
        rc = PINPOOL_EPROTO;
        goto out;
    }
    uint64_t *uids = calloc(2 * nuids + 1, sizeof(*uids));
    if (uids == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint64_t i = 0; i < nuids; i++) {
        uids[2 * i] = get64(&r);
        uids[2 * i + 1] = get64(&r);
    }
    /* The host pool, exactly, and its slices charged to their holders. */
    rc = load_slices(srv, &r, host, "", msg, msglen);
    if (rc == 0 && (r.bad || pool_restore_next_id(host, next_id) != 0))
        rc = PINPOOL_EPROTO;
    if (rc == 0)
        rc = load_devices(srv, &r, fds + nchunks, nfds - (uint32_t)nchunks, msg, msglen);
    taken = nfds; /* load_devices took the device chunks' fds */
    if (rc != 0) {
        free(uids);
        goto out;
    }
    /* The objects, least recently used first, charged to their uid and maker. */
    nobjs = get64(&r);
    for (uint64_t i = 0; !r.bad && i < nobjs; i++) {
        uint64_t uid, ogen, size, slice, expires, maker;
        pool_slice_info_t si;
        obj_t *o;
        get_str(&r, key, OBJ_KEY_MAX);
        uid = get64(&r);
        ogen = get64(&r);
        size = get64(&r);
        slice = get64(&r);
        expires = get64(&r);
        maker = get64(&r);
        v = get64(&r);
        bool spilled = (v & 0xff) == OBJ_SPILLED, in_tier = (v >> 8) & 1;
        if (r.bad || ((v & 0xff) != OBJ_RESIDENT && !spilled) || (spilled && srv->tier == NULL)) {
            r.bad = true;
            break;
        }
        if (spilled) {
            rc = objs_insert_spilled(srv->objs, key, (uint32_t)uid, ogen, size, expires, &o);
        } else if (pool_lookup(host, slice, &si) != 0 || si.owner != srv->obj_owner ||
                   si.tenant != uid) {
            snprintf(msg, msglen, "object '%s': its slice %" PRIu64 " is not an object's slice "
                     "of uid %" PRIu64, key, slice, uid);
            rc = PINPOOL_EPROTO;
            free(uids);
            goto out;
        } else {
            rc = objs_restore(srv->objs, key, (uint32_t)uid, ogen, size, slice, si.offset,
                              si.extent, expires, &o);
            if (rc == 0)
                o->in_tier = in_tier; /* a restored object whose copy is still there */
        }
        if (rc != 0) {
            snprintf(msg, msglen, "object '%s': %s", key, pinpool_strerror(rc));
            free(uids);
            goto out;
        }
        struct srv_client *m = maker != 0 ? do_client_of_owner(srv, maker) : NULL;
        if (maker != 0 && m == NULL) {
            snprintf(msg, msglen, "object '%s' is charged to owner %" PRIu64 ", no client",
                     key, maker);
            rc = PINPOOL_EPROTO;
            free(uids);
            goto out;
        }
        o->charged_to = maker;
        do_charge_client(srv, m, (int64_t)obj_charge(o));
        do_charge_uid(srv, (uid_t)uid, (int64_t)obj_charge(o));
    }
    objs_seed_gen(srv->objs, gen);
    /* The tier copies the old daemon still had to remove. */
    uint64_t nstale = get64(&r);
    for (uint64_t i = 0; !r.bad && i < nstale; i++) {
        srv_tkey_t copy;
        get_str(&r, copy.s, SRV_TKEY_MAX);
        copy.len = strlen(copy.s);
        do_tier_forget(srv, &copy);
    }
    if (r.bad || get64(&r) != HO_MAGIC || r.at != r.len) {
        snprintf(msg, msglen, "the state is truncated or malformed");
        free(uids);
        rc = PINPOOL_EPROTO;
        goto out;
    }
    /* The charges rebuilt must be the old daemon's, client by client and uid by uid. */
    rc = 0;
    for (uint64_t i = 0; i < nclients && rc == 0; i++) {
        struct srv_client *c = do_client_of_owner(srv, charges[i].owner);
        if (c->charge != charges[i].charge)
            rc = charge_differs("client", c->id, charges[i].charge, c->charge, msg, msglen);
    }
    for (uint64_t i = 0; i < nuids && rc == 0; i++) {
        char name[24];
        snprintf(name, sizeof(name), "%" PRIu64, uids[2 * i]);
        if (do_uid_charge(srv, (uid_t)uids[2 * i]) != uids[2 * i + 1])
            rc = charge_differs("uid", name, uids[2 * i + 1],
                                do_uid_charge(srv, (uid_t)uids[2 * i]), msg, msglen);
    }
    free(uids);
    if (rc == 0) {
        char pmsg[256];
        if (pool_check(host, pmsg, sizeof(pmsg)) != 0) {
            snprintf(msg, msglen, "the rebuilt pool fails its checks: %s", pmsg);
            rc = PINPOOL_EINTERNAL;
        }
    }

out:
    for (uint32_t i = taken; i < nfds; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
    if (rc != 0 && msg[0] == '\0')
        snprintf(msg, msglen, "the state is malformed (%s)", pinpool_strerror(rc));
    pthread_mutex_unlock(&srv->lock);
    free(charges);
    return rc;
}

srv_client_t *srv_handover_session(srv_t *srv, const char *id)
{
    struct srv_client *c;

    pthread_mutex_lock(&srv->lock);
    c = do_find_client(srv, id);
    if (c != NULL && !c->session)
        c = NULL;
    pthread_mutex_unlock(&srv->lock);
    return c;
}
