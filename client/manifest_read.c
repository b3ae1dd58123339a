/*
 * manifest_read.c - reading a tensor manifest (pinpool.h, "Tensor
 * manifests"): open (the record, then the manifest's objects, checked by
 * manifest.c), attach (kept segments mapped through the registry, released
 * ones acquired and given back, a host manifest copied to a GPU), verify
 * (every tensor hashed again), close.
 * Owns: an opened manifest's hold on its segments (pinpool__mseg_t.held)
 * and its reader marker.
 * Never: hands out a pointer past a segment the daemon gave (sizes checked
 * against the manifest); keeps a released segment past close (it goes back
 * to the daemon under its key).
 * Locking: none; a manifest is used by one thread at a time.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cudaload.h"
#include "internal.h"
#include "manifest_int.h"

/* ---- readers -------------------------------------------------------------------------------- */

int pinpool_manifest_open(pinpool_ctx_t *ctx, const char *name, uint64_t version,
                          pinpool_manifest_t **out)
{
    pinpool_manifest_t *m = NULL;
    name_rec_t *r = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    char key[PINPOOL__KEY_MAX], msg[512];
    int rc = pinpool__check(ctx, false, name != NULL && out != NULL, "name and out");

    if (rc != 0)
        return rc;
    if (pinpool__manifest_check_name(name, msg, sizeof(msg)) != 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "%s", msg);
    r = malloc(sizeof(*r));
    if (r == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    rc = pinpool__rec_read(ctx, name, r);
    if (rc != 0)
        goto fail;
    if (!r->found || r->current == 0) {
        rc = pinpool__fail(ctx, PINPOOL_ENOKEY, "no manifest named '%s' is committed%s", name,
                           r->found ? " yet (one is being published)" : "");
        goto fail;
    }
    uint64_t v = version != 0 ? version : r->current;
    rec_entry_t *e = pinpool__rec_find(r, v);
    if (e == NULL || e->state != PINPOOL__REC_COMMITTED) {
        rc = pinpool__fail(ctx, PINPOOL_ENOKEY, "manifest '%s' has no committed version %" PRIu64
                           " (the current one is %" PRIu64 ")%s", name, v, r->current,
                           e != NULL ? ": it is being published" : "");
        goto fail;
    }
   pinpool__mkey(key, name, v, "");
    rc = pinpool__get_obj(ctx, key, PINPOOL__MAN_PART, &buf, &len);
    if (rc == PINPOOL_ENOKEY || rc == -EMSGSIZE)
        rc = pinpool__fail(ctx, -EBADMSG, "manifest '%s' version %" PRIu64 " is committed but its "
                           "object '%s' is %s", name, v, key, rc == PINPOOL_ENOKEY ? "gone" : "too large");
    if (rc != 0)
        goto fail;
    if (len >= 24 && memcmp(buf, PINPOOL__MAN_MAGIC, 8) == 0 && pinpool__rd64(buf + 16) > len &&
       pinpool__rd64(buf + 16) <= PINPOOL_MANIFEST_MAX_BYTES && len == PINPOOL__MAN_PART) {
        size_t total = (size_t)pinpool__rd64(buf + 16);
        uint8_t *all = realloc(buf, total);
        if (all == NULL) {
            rc = pinpool__fail(ctx, -ENOMEM, "out of memory for a %zu-byte manifest", total);
            goto fail;
        }
        buf = all;
        for (uint32_t k = 1; len < total; k++) {
            uint8_t *part = NULL;
            size_t plen = 0;
            char suffix[16];
            snprintf(suffix, sizeof(suffix), "+%" PRIu32, k);
           pinpool__mkey(key, name, v, suffix);
            rc = pinpool__get_obj(ctx, key, PINPOOL__MAN_PART, &part, &plen);
            if (rc == 0 && plen != (total - len < PINPOOL__MAN_PART ? total - len : PINPOOL__MAN_PART))
                rc = -EMSGSIZE;
            if (rc != 0) {
                free(part);
                rc = pinpool__fail(ctx, -EBADMSG, "manifest '%s' version %" PRIu64 ": its part '%s' "
                                   "is %s", name, v, key, rc == PINPOOL_ENOKEY ? "gone" : "not whole");
                goto fail;
            }
            memcpy(buf + len, part, plen);
            len += plen;
            free(part);
        }
    }
    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        rc = pinpool__fail(ctx, -ENOMEM, "out of memory");
        goto fail;
    }
    rc = pinpool__manifest_parse(buf, len, m, msg, sizeof(msg));
    if (rc != 0) {
        rc = pinpool__fail(ctx, rc, "manifest '%s' version %" PRIu64 ": %s", name, v, msg);
        goto fail;
    }
    if (strcmp(m->name, name) != 0 || m->version != v) {
        pinpool__manifest_clear(m);
        rc = pinpool__fail(ctx, -EBADMSG, "the object '" PINPOOL__PREFIX "%s@%" PRIu64 "' holds manifest "
                           "'%s' version %" PRIu64, name, v, m->name, m->version);
        goto fail;
    }
    m->buf = buf;
    m->len = len;
    m->ctx = ctx;
    free(r);
    *out = m;
    return 0;

fail:
    free(m);
    free(buf);
    free(r);
    return rc;
}

/* Let segment s go (as attach held it). */
static void seg_release(pinpool_manifest_t *m, uint32_t s)
{
    pinpool__mseg_t *sg = &m->segs[s];
    char key[PINPOOL__KEY_MAX];

    switch (sg->held) {
    case PINPOOL__SEG_KEPT:
       pinpool__kept_put(m->ctx, sg->key, false);
        break;
    case PINPOOL__SEG_ACQUIRED:
        /* Back to the daemon under its key; if that fails the slice stays
         * this context's (freed with it) and the message says so. */
       pinpool__released_key(key, sg->key);
        if (pinpool_release(m->ctx, sg->slice_id, key, 0) != 0)
            pinpool__fail(m->ctx, PINPOOL_EINTERNAL, "segment '%s' could not be released again: %s",
                          sg->key, pinpool_errmsg(m->ctx));
        break;
    case PINPOOL__SEG_COPY:
#ifdef PINPOOL_HAVE_CUDA
        {
            CUcontext saved;
            if (pinpool__cuda_enter(m->ctx, m->copy_device, &saved) == 0) {
                ipc_cu.cuMemFree((CUdeviceptr)sg->addr);
               pinpool__cuda_leave(saved);
            }
        }
#endif
        break;
    default:
        break;
    }
    sg->held = PINPOOL__SEG_NONE;
    sg->addr = 0;
    sg->slice_id = 0;
}

/* Map segment s for the CPU (cpu) or CUDA copies only: kept (attach) or
 * released (acquire, waiting for another reader up to PINPOOL__ACQUIRE_WAIT_MS). */
static int seg_map(pinpool_manifest_t *m, uint32_t s, bool cpu)
{
    pinpool__mseg_t *sg = &m->segs[s];
    int rc;

    if (m->placement == PINPOOL_MANIFEST_KEPT) {
        uint64_t size = 0;
        int32_t dev = 0;
        rc = pinpool__kept_get(m->ctx, sg->key, cpu, &sg->addr, &size, &dev);
        if (rc == PINPOOL_ENOENT)
            return pinpool__fail(m->ctx, PINPOOL_ENOKEY, "segment %" PRIu32 " of manifest '%s' version "
                                 "%" PRIu64 " (kept slice '%s') is gone: the daemon restarted, or the "
                                 "version was dropped; publish it again", s, m->name, m->version,
                                 sg->key);
        if (rc != 0)
            return rc;
        sg->held = PINPOOL__SEG_KEPT;
        if ((size != 0 && size < sg->size) || dev != m->device) {
            seg_release(m, s);
            return pinpool__fail(m->ctx, -EBADMSG, "segment %" PRIu32 " of manifest '%s' version %"
                                 PRIu64 ": the slice kept under '%s' is %" PRIu64 " bytes on device %"
                                 PRId32 "; the manifest says %" PRIu64 " on %" PRId32, s, m->name,
                                 m->version, sg->key, size, dev, sg->size, m->device);
        }
        return 0;
    }
    pinpool_slice_t sl;
    char key[PINPOOL__KEY_MAX];
   pinpool__released_key(key, sg->key);
    for (int waited = 0;; waited += 50) {
        rc = pinpool_acquire(m->ctx, key, cpu ? 0 : PINPOOL_ALLOC_GPU_ONLY, &sl);
        if (rc != PINPOOL_ENOKEY || waited >= PINPOOL__ACQUIRE_WAIT_MS)
            break;
        usleep(50000);
    }
    if (rc == PINPOOL_ENOKEY)
        return pinpool__fail(m->ctx, PINPOOL_ENOKEY, "segment %" PRIu32 " of manifest '%s' version %"
                             PRIu64 " (object '%s') is not there: another reader holds it (a "
                             "released manifest has one reader at a time; waited %d s), or it is "
                             "gone", s, m->name, m->version, key, PINPOOL__ACQUIRE_WAIT_MS / 1000);
    if (rc != 0)
        return rc;
    sg->held = PINPOOL__SEG_ACQUIRED;
    sg->slice_id = sl.id;
    sg->addr = (uint64_t)(uintptr_t)sl.ptr;
    if (sl.size < sg->size) {
        seg_release(m, s);
        return pinpool__fail(m->ctx, -EBADMSG, "segment %" PRIu32 " of manifest '%s' version %" PRIu64
                             ": the object '%s' is %" PRIu64 " bytes; the manifest says %" PRIu64, s,
                             m->name, m->version, key, sl.size, sg->size);
    }
    return 0;
}

/* Host segment s, mapped GPU-only, into cuMemAlloc memory on GPU device. */
static int seg_copy(pinpool_manifest_t *m, uint32_t s, int32_t device)
{
#ifdef PINPOOL_HAVE_CUDA
    pinpool__mseg_t *sg = &m->segs[s];
    CUdeviceptr d = 0;
    CUcontext saved;
    CUresult cr;
    char b[160];
    int rc = seg_map(m, s, false);

    if (rc != 0)
        return rc;
    const void *host = (const void *)(uintptr_t)sg->addr;
    rc = pinpool__cuda_enter(m->ctx, device, &saved);
    if (rc != 0) {
        seg_release(m, s);
        return rc;
    }
    cr = ipc_cu.cuMemAlloc(&d, sg->size);
    if (cr == CUDA_SUCCESS) {
        cr = ipc_cu.cuMemcpyHtoD(d, host, sg->size);
        if (cr != CUDA_SUCCESS) {
            ipc_cuda_strerror(cr, "cuMemcpyHtoD", b, sizeof(b));
            ipc_cu.cuMemFree(d);
        }
    } else {
        ipc_cuda_strerror(cr, "cuMemAlloc", b, sizeof(b));
    }
   pinpool__cuda_leave(saved);
    seg_release(m, s); /* the host copy goes back (kept: detached; released: released) */
    if (cr != CUDA_SUCCESS)
        return pinpool__fail(m->ctx, PINPOOL_ECUDA, "copying segment %" PRIu32 " of '%s' (%" PRIu64
                             " bytes) to GPU %" PRId32 ": %s", s, m->name, sg->size, device, b);
    sg->held = PINPOOL__SEG_COPY;
    sg->addr = d;
    return 0;
#else
    (void)s;
    (void)device;
    return pinpool__fail(m->ctx, PINPOOL_ECUDA, "this libpinpool was built without CUDA");
#endif
}

static void marker_key(const pinpool_manifest_t *m, char *key, const char *client_id)
{
    char suffix[64 + 4];
    snprintf(suffix, sizeof(suffix), "~r:%s", client_id);
   pinpool__mkey(key, m->name, m->version, suffix);
}

static void detach_all(pinpool_manifest_t *m)
{
    for (uint32_t s = 0; s < m->nseg; s++)
        seg_release(m, s);
    if (m->marked) {
        char key[PINPOOL__KEY_MAX];
        marker_key(m, key, pinpool_client_id(m->ctx));
       pinpool__marker_put(m->ctx, key);
        m->marked = false;
    }
    m->attached = -2;
    m->copy_device = -1;
}

int pinpool_manifest_attach(pinpool_manifest_t *m, int32_t device)
{
    int rc = 0;

    if (m == NULL)
        return -EINVAL;
    if (m->ctx == NULL)
        return PINPOOL_EINVAL; /* no context to say more on: pinpool_manifest_parse's */
    pinpool_ctx_t *ctx = m->ctx;
    rc = pinpool__check(ctx, true, true, NULL);
    if (rc != 0)
        return rc;
    if (m->attached != -2)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "manifest '%s' version %" PRIu64 " is attached "
                             "already (close it, open it again)", m->name, m->version);
    bool copy = m->device == PINPOOL_HOST && device >= 0;
    if (copy) {
#ifdef PINPOOL_HAVE_CUDA
        char why[256];
        if (ipc_cuda_load(why, sizeof(why)) != 0)
            return pinpool__fail(ctx, PINPOOL_ECUDA, "copying manifest '%s' to GPU %" PRId32 ": %s",
                                 m->name, device, why);
#else
        return pinpool__fail(ctx, PINPOOL_ECUDA, "copying manifest '%s' to a GPU: this libpinpool "
                             "was built without CUDA", m->name);
#endif
    }
    if (device != m->device && !copy)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "manifest '%s' version %" PRIu64 " is kept on %s%.0"
                             PRId32 "; attach it %s%.0" PRId32 " (a host manifest can also be copied "
                             "to a GPU)", m->name, m->version, m->device < 0 ? "the host" : "GPU ",
                             m->device, m->device < 0 ? "with PINPOOL_HOST" : "on that GPU",
                             m->device);
    if (!copy && m->nseg > 0) {
        char key[PINPOOL__KEY_MAX];
        marker_key(m, key, pinpool_client_id(ctx));
        rc = pinpool__marker_get(ctx, key); /* before mapping: a drop that runs now sees us */
        if (rc != 0)
            return rc;
        m->marked = true;
    }
    if (copy)
        m->copy_device = device;
    for (uint32_t s = 0; s < m->nseg && rc == 0; s++)
        rc = copy ? seg_copy(m, s, device) : seg_map(m, s, true);
    if (rc != 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", pinpool_errmsg(ctx));
        detach_all(m);
        return pinpool__fail(ctx, rc, "%s", msg);
    }
    m->attached = device;
    return 0;
}

int pinpool_manifest_verify(pinpool_manifest_t *m, uint32_t *bad)
{
    pinpool__hjob_t *jobs;
    uint32_t *idx, n = 0;
    int rc;

    if (m == NULL || m->ctx == NULL)
        return PINPOOL_EINVAL;
    pinpool_ctx_t *ctx = m->ctx;
    if (m->attached == -2)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "attach manifest '%s' before verifying it", m->name);
    if (m->hash_algo == PINPOOL__HASH_NONE)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "manifest '%s' version %" PRIu64 " was published "
                             "without hashes", m->name, m->version);
    jobs = calloc(m->nt > 0 ? m->nt : 1, sizeof(*jobs));
    idx = calloc(m->nt > 0 ? m->nt : 1, sizeof(*idx));
    if (jobs == NULL || idx == NULL) {
        free(jobs);
        free(idx);
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < m->nt; i++)
        if (m->t[i].nbytes > 0) {
            jobs[n].addr = m->segs[m->t[i].segment].addr + m->t[i].offset;
            jobs[n].nbytes = m->t[i].nbytes;
            idx[n++] = i;
        }
    rc = pinpool__hash_many(ctx, m->attached, jobs, n, 0);
    for (uint32_t k = 0; rc == 0 && k < n; k++) {
        const pinpool__mtensor_t *t = &m->t[idx[k]];
        if (jobs[k].hash != t->hash) {
            if (bad != NULL)
                *bad = idx[k];
            rc = pinpool__fail(ctx, -EBADMSG, "tensor '%.200s' of manifest '%s' version %" PRIu64
                               ": its bytes hash to %016" PRIx64 ", the manifest says %016" PRIx64
                               " (written after publishing?)", m->names + t->name_off, m->name,
                               m->version, jobs[k].hash, t->hash);
        }
    }
    free(jobs);
    free(idx);
    return rc;
}

void pinpool_manifest_close(pinpool_manifest_t *m)
{
    if (m == NULL)
        return;
    if (m->ctx != NULL && m->attached != -2)
        detach_all(m);
    pinpool__manifest_clear(m);
    free(m->buf);
    free(m);
}
