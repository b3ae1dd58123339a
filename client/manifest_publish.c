/*
 * manifest_publish.c - publishing a version of a tensor manifest (pinpool.h,
 * "Tensor manifests"): begin (a new version recorded as being made, with the
 * publisher's marker), add (the tensors, names unique by a hash set), alloc
 * (the layout and the segments: kept slices, or plain host slices that the
 * commit releases), dest / write (where the caller puts the bytes), commit
 * (hashes, the manifest objects, then the record: the commit point), abort.
 * Owns: a publisher (pinpool_publish_t) and the slices it made until the
 * commit hands them to the daemon (kept: detached here; released: objects).
 * Never: makes a version current before its manifest and every segment are
 * in the daemon; leaves a failed version's slices or objects behind.
 * Locking: none; a publisher is used by one thread at a time.
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

/* ---- publishing ---------------------------------------------------------------------------- */

static uint64_t now_unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}


struct pinpool_publish {
    pinpool_ctx_t *ctx;
    char name[PINPOOL_MANIFEST_NAME_MAX + 1];
    uint64_t version;
    int32_t device;
    uint32_t flags, threads;
    uint64_t seg_bytes, align;
    char *meta;
    uint32_t meta_len;
    pinpool__mtensor_t *t;
    char **names;
    uint32_t *alias; /* UINT32_MAX: own bytes */
    uint32_t nt, cap;
    uint32_t *set; /* open-addressing set of tensor indices + 1, by name */
    uint32_t set_cap;
    bool allocated;
    pinpool__mseg_t *segs;
    uint32_t nseg;
};

uint64_t pinpool_manifest_pub_version(const pinpool_publish_t *pub)
{
    return pub != NULL ? pub->version : 0;
}

static void pub_free(pinpool_publish_t *pub)
{
    for (uint32_t i = 0; i < pub->nt; i++)
        free(pub->names[i]);
    free(pub->names);
    free(pub->t);
    free(pub->alias);
    free(pub->set);
    free(pub->segs);
    free(pub->meta);
    free(pub);
}

int pinpool_manifest_begin(pinpool_ctx_t *ctx, const char *name, const pinpool_manifest_opts_t *opts,
                           pinpool_publish_t **out)
{
    static const pinpool_manifest_opts_t defaults = {.device_id = PINPOOL_HOST};
    pinpool_publish_t *pub = NULL;
    name_rec_t *r = NULL;
    clients_t c = {.have = false};
    char msg[256], key[PINPOOL__KEY_MAX], who[64];
    int rc = pinpool__check(ctx, true, name != NULL && out != NULL, "name and out");

    if (rc != 0)
        return rc;
    if (opts == NULL)
        opts = &defaults;
    if (pinpool__manifest_check_name(name, msg, sizeof(msg)) != 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "%s", msg);
    if (opts->device_id < PINPOOL_HOST || opts->device_id >= PINPOOL_MAX_DEVICES)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "device_id %" PRId32 ": PINPOOL_HOST or a GPU "
                             "0..%d", opts->device_id, PINPOOL_MAX_DEVICES - 1);
    if ((opts->flags & ~(PINPOOL_MANIFEST_SPILLABLE | PINPOOL_MANIFEST_NO_HASH)) != 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "unknown flags 0x%" PRIx32, opts->flags);
    if ((opts->flags & PINPOOL_MANIFEST_SPILLABLE) && opts->device_id != PINPOOL_HOST)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "PINPOOL_MANIFEST_SPILLABLE is for host manifests "
                             "(the daemon spills host slices only)");
    if (opts->alignment != 0 && ((opts->alignment & (opts->alignment - 1)) != 0 ||
                                 opts->alignment > (2u << 20)))
        return pinpool__fail(ctx, PINPOOL_EINVAL, "alignment %" PRIu64 ": a power of two up to "
                             "2 MiB", opts->alignment);
    if (opts->metadata != NULL && strlen(opts->metadata) > PINPOOL_MANIFEST_META_MAX)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "metadata of %zu bytes (at most %u)",
                             strlen(opts->metadata), PINPOOL_MANIFEST_META_MAX);
    if (opts->hash_threads > 64)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "hash_threads %" PRIu32 " (at most 64)",
                             opts->hash_threads);

    pinpool_manifest_collect(ctx, name, NULL); /* best effort: what dead publishers left */
    pub = calloc(1, sizeof(*pub));
    r = malloc(sizeof(*r));
    if (pub == NULL || r == NULL ||
        (opts->metadata != NULL && (pub->meta = strdup(opts->metadata)) == NULL)) {
        rc = pinpool__fail(ctx, -ENOMEM, "out of memory");
        goto fail;
    }
    rc = pinpool__rec_read(ctx, name, r);
    if (rc == 0)
        rc = pinpool__clients_read(ctx, &c);
    if (rc != 0)
        goto fail;
    uint64_t top = r->top;
    for (uint32_t i = 0; i < r->n; i++) {
        if (r->e[i].state == PINPOOL__REC_PENDING &&
           pinpool__publisher_alive(ctx, name, r->e[i].version, &c, who, sizeof(who))) {
            rc = pinpool__fail(ctx, PINPOOL_EBUSY, "another process (client %s) is publishing "
                               "'%s' version %" PRIu64 " now; one publisher per name", who, name,
                               r->e[i].version);
            goto fail;
        }
        top = r->e[i].version > top ? r->e[i].version : top;
    }
    if (r->n == PINPOOL_MANIFEST_MAX_VERSIONS) {
        rc = pinpool__fail(ctx, PINPOOL_ENOSPC, "'%s' holds %u versions, the most a name can: drop "
                           "old ones (pinpool_manifest_drop)", name, PINPOOL_MANIFEST_MAX_VERSIONS);
        goto fail;
    }
    snprintf(pub->name, sizeof(pub->name), "%s", name);
    pub->ctx = ctx;
    pub->version = (top > r->current ? top : r->current) + 1;
    pub->device = opts->device_id;
    pub->flags = opts->flags;
    pub->threads = opts->hash_threads;
    pub->seg_bytes = opts->segment_bytes;
    pub->align = opts->alignment != 0 ? opts->alignment : 256;
    pub->meta_len = pub->meta != NULL ? (uint32_t)strlen(pub->meta) : 0;
    r->e[r->n++] = (rec_entry_t){.version = pub->version, .state = PINPOOL__REC_PENDING};
    r->top = pub->version;
    /* The marker first: a record naming a version without a live marker is
     * collectable by anyone. */
   pinpool__mkey(key, name, pub->version, "~pub");
    rc = pinpool_put(ctx, key, pinpool_client_id(ctx), strlen(pinpool_client_id(ctx)), 0);
    if (rc == 0)
        rc = pinpool__rec_write(ctx, name, r);
    if (rc != 0) {
       pinpool__remove_quiet(ctx, key);
        goto fail;
    }
   pinpool__clients_free(&c);
    free(r);
    *out = pub;
    return 0;

fail:
   pinpool__clients_free(&c);
    free(r);
    if (pub != NULL)
        pub_free(pub);
    return rc;
}

static uint32_t name_slot(const pinpool_publish_t *pub, const char *name, size_t n, bool *found)
{
    uint32_t mask = pub->set_cap - 1, i = (uint32_t)pinpool__xxh3(name, n) & mask;

    for (;; i = (i + 1) & mask) {
        uint32_t at = pub->set[i];
        if (at == 0) {
            *found = false;
            return i;
        }
        if (strcmp(pub->names[at - 1], name) == 0) {
            *found = true;
            return i;
        }
    }
}

static int set_grow(pinpool_publish_t *pub)
{
    uint32_t cap = pub->set_cap ? pub->set_cap * 2 : 64;
    uint32_t *old = pub->set, ocap = pub->set_cap;

    pub->set = calloc(cap, sizeof(*pub->set));
    if (pub->set == NULL) {
        pub->set = old;
        return -ENOMEM;
    }
    pub->set_cap = cap;
    for (uint32_t i = 0; i < ocap; i++)
        if (old[i] != 0) {
            bool f;
            const char *nm = pub->names[old[i] - 1];
            pub->set[name_slot(pub, nm, strlen(nm), &f)] = old[i];
        }
    free(old);
    return 0;
}

int pinpool_manifest_add(pinpool_publish_t *pub, const pinpool_tensor_desc_t *d, uint32_t *index)
{
    pinpool__mtensor_t t;
    uint64_t span;
    size_t n;
    bool found;

    if (pub == NULL)
        return -EINVAL;
    pinpool_ctx_t *ctx = pub->ctx;
    if (d == NULL || d->name == NULL)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "a tensor needs a name");
    if (pub->allocated)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': the segments are allocated "
                             "already (add every tensor before pinpool_manifest_alloc)", d->name);
    n = strlen(d->name);
    if (n == 0 || n > PINPOOL_MANIFEST_TENSOR_NAME_MAX)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "a tensor name is 1 to %d bytes (got %zu)",
                             PINPOOL_MANIFEST_TENSOR_NAME_MAX, n);
    if (pub->nt == PINPOOL_MANIFEST_MAX_TENSORS)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "a manifest holds at most %u tensors",
                             PINPOOL_MANIFEST_MAX_TENSORS);
    if (pinpool_dtype_size(d->dtype) == 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': unknown dtype %" PRId32,
                             d->name, d->dtype);
    if (d->ndim > PINPOOL_MANIFEST_MAX_DIMS)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': %" PRIu32 " dimensions (at "
                             "most %d)", d->name, d->ndim, PINPOOL_MANIFEST_MAX_DIMS);
    if ((d->flags & ~(PINPOOL_TENSOR_STRIDED | PINPOOL_TENSOR_ALIAS)) != 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': unknown flags 0x%" PRIx32,
                             d->name, d->flags);
    memset(&t, 0, sizeof(t));
    t.dtype = (uint32_t)d->dtype;
    t.ndim = d->ndim;
    for (uint32_t i = 0; i < d->ndim; i++) {
        if (d->shape[i] < 0 || ((d->flags & PINPOOL_TENSOR_STRIDED) && d->strides[i] < 0))
            return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': dimension %" PRIu32 " has "
                                 "a negative size or stride", d->name, i);
        t.shape[i] = d->shape[i];
        t.strides[i] = d->strides[i];
    }
    if (!(d->flags & PINPOOL_TENSOR_STRIDED))
        pinpool__contiguous_strides(t.ndim, t.shape, t.strides);
    if (!pinpool__tensor_span(d->dtype, t.ndim, t.shape, t.strides, &span))
        return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': its shape overflows 64 bits",
                             d->name);
    t.nbytes = d->nbytes != 0 ? d->nbytes : span;
    if (span > t.nbytes)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': its shape and strides reach %"
                             PRIu64 " bytes, more than the nbytes %" PRIu64 " given", d->name, span,
                             t.nbytes);
    uint32_t alias = UINT32_MAX;
    if (d->flags & PINPOOL_TENSOR_ALIAS) {
        if (d->alias_of >= pub->nt)
            return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': alias_of %" PRIu32 " is not "
                                 "an earlier tensor (%" PRIu32 " so far)", d->name, d->alias_of,
                                 pub->nt);
        alias = d->alias_of;
        while (pub->alias[alias] != UINT32_MAX)
            alias = pub->alias[alias];
        if (t.nbytes > pub->t[alias].nbytes)
            return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': %" PRIu64 " bytes do not fit "
                                 "in the %" PRIu64 " of '%.100s' it aliases", d->name, t.nbytes,
                                 pub->t[alias].nbytes, pub->names[alias]);
        if (pinpool_dtype_size(d->dtype) > 1 &&
            pub->align % (uint64_t)pinpool_dtype_size(d->dtype) != 0)
            return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s': alignment", d->name);
    }
    if (pub->set_cap == 0 || (pub->nt + 1) * 2 > pub->set_cap)
        if (set_grow(pub) != 0)
            return pinpool__fail(ctx, -ENOMEM, "out of memory");
    uint32_t slot = name_slot(pub, d->name, n, &found);
    if (found)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "tensor '%.100s' is added twice", d->name);
    if (pub->nt == pub->cap) {
        uint32_t cap = pub->cap ? 2 * pub->cap : 64;
        pinpool__mtensor_t *nt = realloc(pub->t, cap * sizeof(*nt));
        if (nt != NULL)
            pub->t = nt;
        char **nn = realloc(pub->names, cap * sizeof(*nn));
        if (nn != NULL)
            pub->names = nn;
        uint32_t *na = realloc(pub->alias, cap * sizeof(*na));
        if (na != NULL)
            pub->alias = na;
        if (nt == NULL || nn == NULL || na == NULL)
            return pinpool__fail(ctx, -ENOMEM, "out of memory");
        pub->cap = cap;
    }
    char *copy = strdup(d->name);
    if (copy == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    t.name_len = (uint32_t)n;
    pub->t[pub->nt] = t;
    pub->names[pub->nt] = copy;
    pub->alias[pub->nt] = alias;
    pub->set[slot] = pub->nt + 1;
    if (index != NULL)
        *index = pub->nt;
    pub->nt++;
    return 0;
}

/* Free (or, once released, remove) every segment made so far. */
static void free_segments(pinpool_publish_t *pub)
{
    for (uint32_t i = 0; i < pub->nseg; i++)
        if (pub->segs[i].slice_id != 0) {
            pinpool_free(pub->ctx, pub->segs[i].slice_id, NULL);
            pub->segs[i].slice_id = 0;
        }
}

int pinpool_manifest_alloc(pinpool_publish_t *pub)
{
    uint64_t at = 0;
    uint32_t seg = 0;
    int rc = 0;

    if (pub == NULL)
        return -EINVAL;
    pinpool_ctx_t *ctx = pub->ctx;
    if (pub->allocated)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "the segments of '%s' version %" PRIu64 " are "
                             "allocated already", pub->name, pub->version);
    /* Lay out: in order, aligned; a new segment when one would pass segment_bytes. */
    uint64_t *ends = calloc(PINPOOL_MANIFEST_MAX_SEGMENTS, sizeof(*ends));
    if (ends == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    for (uint32_t i = 0; i < pub->nt; i++) {
        pinpool__mtensor_t *t = &pub->t[i];
        if (t->nbytes == 0) {
            t->segment = 0;
            t->offset = 0;
            continue;
        }
        if (pub->alias[i] != UINT32_MAX) {
            t->segment = pub->t[pub->alias[i]].segment;
            t->offset = pub->t[pub->alias[i]].offset;
            continue;
        }
        uint64_t off = (at + pub->align - 1) & ~(pub->align - 1);
        if (pub->seg_bytes != 0 && off > 0 && off + t->nbytes > pub->seg_bytes) {
            if (seg + 1 == PINPOOL_MANIFEST_MAX_SEGMENTS) {
                free(ends);
                return pinpool__fail(ctx, PINPOOL_EINVAL, "more than %u segments: raise "
                                     "segment_bytes", PINPOOL_MANIFEST_MAX_SEGMENTS);
            }
            seg++;
            off = 0;
        }
        t->segment = seg;
        t->offset = off;
        at = off + t->nbytes;
        ends[seg] = at;
    }
    pub->nseg = at == 0 && seg == 0 ? 0 : seg + 1;
    pub->segs = calloc(pub->nseg > 0 ? pub->nseg : 1, sizeof(*pub->segs));
    if (pub->segs == NULL) {
        free(ends);
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    }
    for (uint32_t s = 0; s < pub->nseg && rc == 0; s++) {
        pinpool__mseg_t *sg = &pub->segs[s];
        bool spill = (pub->flags & PINPOOL_MANIFEST_SPILLABLE) != 0;
        pinpool_alloc_opts_t o = {.device_id = pub->device,
                                  .alignment = pub->align > 256 ? pub->align : 0,
                                  .tag = sg->key,
                                  .flags = spill ? 0 : PINPOOL_ALLOC_KEEP};
        pinpool_slice_t sl;
        sg->size = ends[s];
       pinpool__seg_tag(sg->key, pub->name, pub->version, s);
        if (spill)
            o.tag = "manifest"; /* a label only: the slice is released at commit */
        rc = pinpool_alloc(ctx, sg->size, &o, &sl);
        if (rc == PINPOOL_EEXIST)
            rc = pinpool__fail(ctx, PINPOOL_EBUSY, "segment %" PRIu32 " of '%s' version %" PRIu64
                               " (kept slice '%s') exists already: another publisher made it "
                               "(pinpool_manifest_collect frees a dead one's)", s, pub->name,
                               pub->version, sg->key);
        if (rc == 0) {
            sg->slice_id = sl.id;
            sg->addr = (uint64_t)(uintptr_t)sl.ptr;
        }
    }
    free(ends);
    if (rc != 0) {
        free_segments(pub);
        free(pub->segs);
        pub->segs = NULL;
        pub->nseg = 0;
        return rc;
    }
    pub->allocated = true;
    return 0;
}

int pinpool_manifest_dest(pinpool_publish_t *pub, uint32_t index, pinpool_tensor_t *out)
{
    if (pub == NULL)
        return -EINVAL;
    if (out == NULL || index >= pub->nt || !pub->allocated)
        return pinpool__fail(pub->ctx, PINPOOL_EINVAL, "%s", out == NULL ? "out must not be NULL"
                             : !pub->allocated ? "pinpool_manifest_alloc first"
                                               : "no such tensor index");
    pinpool__tensor_desc(&pub->t[index], pub->names[index], pub->device, pub->segs, out);
    return 0;
}

int pinpool_manifest_write(pinpool_publish_t *pub, uint32_t index, const void *src, uint64_t bytes)
{
    pinpool_tensor_t t;
    int rc;

    if (pub == NULL)
        return -EINVAL;
    rc = pinpool_manifest_dest(pub, index, &t);
    if (rc != 0)
        return rc;
    if (bytes > t.nbytes || (src == NULL && bytes > 0))
        return pinpool__fail(pub->ctx, PINPOOL_EINVAL, "tensor '%.100s' holds %" PRIu64 " bytes; "
                             "%" PRIu64 " given", t.name, t.nbytes, bytes);
    if (bytes == 0)
        return 0;
    if (pub->device < 0) {
        memcpy(t.ptr, src, bytes);
        return 0;
    }
#ifdef PINPOOL_HAVE_CUDA
    CUcontext saved;
    rc = pinpool__cuda_enter(pub->ctx, pub->device, &saved);
    if (rc != 0)
        return rc;
    CUresult cr = ipc_cu.cuMemcpyHtoD((CUdeviceptr)(uintptr_t)t.ptr, src, bytes);
   pinpool__cuda_leave(saved);
    if (cr != CUDA_SUCCESS) {
        char b[160];
        return pinpool__fail(pub->ctx, PINPOOL_ECUDA, "tensor '%.100s': %s", t.name,
                             ipc_cuda_strerror(cr, "cuMemcpyHtoD", b, sizeof(b)));
    }
    return 0;
#else
    return pinpool__fail(pub->ctx, PINPOOL_ECUDA, "this libpinpool was built without CUDA");
#endif
}

void pinpool_manifest_abort(pinpool_publish_t *pub)
{
    char key[PINPOOL__KEY_MAX];

    if (pub == NULL)
        return;
    free_segments(pub);
   pinpool__unrecord(pub->ctx, pub->name, pub->version);
   pinpool__mkey(key, pub->name, pub->version, "~pub");
   pinpool__remove_quiet(pub->ctx, key);
    pub_free(pub);
}

/* Hash every tensor (aliases of the same length share their base's hash). */
static int pub_hash(pinpool_publish_t *pub)
{
    pinpool__hjob_t *jobs = calloc(pub->nt > 0 ? pub->nt : 1, sizeof(*jobs));
    uint32_t *job_of = calloc(pub->nt > 0 ? pub->nt : 1, sizeof(*job_of));
    uint32_t n = 0;
    int rc;

    if (jobs == NULL || job_of == NULL) {
        free(jobs);
        free(job_of);
        return pinpool__fail(pub->ctx, -ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < pub->nt; i++) {
        const pinpool__mtensor_t *t = &pub->t[i];
        uint32_t a = pub->alias[i];
        job_of[i] = UINT32_MAX;
        if (t->nbytes == 0)
            continue;
        if (a != UINT32_MAX && pub->t[a].nbytes == t->nbytes && job_of[a] != UINT32_MAX) {
            job_of[i] = job_of[a];
            continue;
        }
        jobs[n].addr = pub->segs[t->segment].addr + t->offset;
        jobs[n].nbytes = t->nbytes;
        job_of[i] = n++;
    }
    rc = pinpool__hash_many(pub->ctx, pub->device, jobs, n, pub->threads);
    for (uint32_t i = 0; rc == 0 && i < pub->nt; i++)
        pub->t[i].hash = job_of[i] != UINT32_MAX ? jobs[job_of[i]].hash : 0;
    free(jobs);
    free(job_of);
    return rc;
}

int pinpool_manifest_commit(pinpool_publish_t *pub, uint64_t *version)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    name_rec_t *r = NULL;
    char key[PINPOOL__KEY_MAX];
    uint32_t parts = 0;
    int rc;

    if (pub == NULL)
        return -EINVAL;
    pinpool_ctx_t *ctx = pub->ctx;
    bool spill = (pub->flags & PINPOOL_MANIFEST_SPILLABLE) != 0;
    if (!pub->allocated) {
        rc = pinpool__fail(ctx, PINPOOL_EINVAL, "pinpool_manifest_alloc before the commit");
        goto fail;
    }
    if (!(pub->flags & PINPOOL_MANIFEST_NO_HASH)) {
        rc = pub_hash(pub);
        if (rc != 0)
            goto fail;
    }
    pinpool__menc_t enc = {
        .name = pub->name, .meta = pub->meta, .meta_len = pub->meta_len,
        .version = pub->version, .created_ns = now_unix_ns(), .device = pub->device,
        .placement = spill ? PINPOOL_MANIFEST_RELEASED : PINPOOL_MANIFEST_KEPT,
        .hash_algo = (pub->flags & PINPOOL_MANIFEST_NO_HASH) ? PINPOOL__HASH_NONE : PINPOOL__HASH_XXH3,
        .nseg = pub->nseg, .nt = pub->nt, .segs = pub->segs, .t = pub->t,
        .names = (const char *const *)pub->names,
    };
    rc = pinpool__manifest_encode(&enc, &bytes, &len);
    if (rc == 0 && len > PINPOOL_MANIFEST_MAX_BYTES)
        rc = PINPOOL_EINVAL;
    if (rc != 0) {
        rc = pinpool__fail(ctx, rc, "'%s': the manifest does not fit the format (%zu bytes; at "
                           "most %llu)", pub->name, len, (unsigned long long)PINPOOL_MANIFEST_MAX_BYTES);
        goto fail;
    }
    r = malloc(sizeof(*r));
    if (r == NULL) {
        rc = pinpool__fail(ctx, -ENOMEM, "out of memory");
        goto fail;
    }
    rc = pinpool__rec_read(ctx, pub->name, r);
    if (rc != 0)
        goto fail;
    rec_entry_t *e = pinpool__rec_find(r, pub->version);
    if (e == NULL || e->state != PINPOOL__REC_PENDING) {
        rc = pinpool__fail(ctx, PINPOOL_EBUSY, "'%s' version %" PRIu64 " is no longer recorded as "
                           "being published (another process collected or rewrote the name)",
                           pub->name, pub->version);
        goto fail;
    }
    if (spill) {
        /* The record first learns how many released segments to clean up. */
        e->nseg = pub->nseg;
        rc = pinpool__rec_write(ctx, pub->name, r);
        for (uint32_t s = 0; rc == 0 && s < pub->nseg; s++) {
           pinpool__released_key(key, pub->segs[s].key);
            rc = pinpool_release(ctx, pub->segs[s].slice_id, key, 0);
            if (rc == 0)
                pub->segs[s].slice_id = 0;
        }
        if (rc != 0)
            goto fail;
    }
    for (size_t off = 0; off < len; off += PINPOOL__MAN_PART, parts++) {
        char suffix[16] = "";
        if (parts > 0)
            snprintf(suffix, sizeof(suffix), "+%" PRIu32, parts);
       pinpool__mkey(key, pub->name, pub->version, suffix);
        rc = pinpool_put(ctx, key, bytes + off, len - off < PINPOOL__MAN_PART ? len - off
                                                                             : PINPOOL__MAN_PART, 0);
        if (rc != 0)
            goto fail;
    }
    /* The commit point. */
    e = pinpool__rec_find(r, pub->version);
    e->state = PINPOOL__REC_COMMITTED;
    e->nseg = pub->nseg;
    e->parts = (uint16_t)parts;
    r->current = pub->version > r->current ? pub->version : r->current;
    rc = pinpool__rec_write(ctx, pub->name, r);
    if (rc != 0)
        goto fail;
    for (uint32_t s = 0; s < pub->nseg; s++)
        if (pub->segs[s].slice_id != 0)
            pinpool_detach(ctx, pub->segs[s].slice_id); /* kept: stays in the daemon */
   pinpool__mkey(key, pub->name, pub->version, "~pub");
   pinpool__remove_quiet(ctx, key);
    if (version != NULL)
        *version = pub->version;
    free(bytes);
    free(r);
    pub_free(pub);
    return 0;

fail: {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", pinpool_errmsg(ctx));
        for (uint32_t s = 0; s < pub->nseg; s++) /* released ones: remove the objects */
            if (pub->segs[s].slice_id == 0 && spill) {
               pinpool__released_key(key, pub->segs[s].key);
               pinpool__remove_quiet(ctx, key);
            }
        if (parts > 0)
           pinpool__remove_parts(ctx, pub->name, pub->version, parts);
        free(bytes);
        free(r);
        pinpool_manifest_abort(pub);
        return pinpool__fail(ctx, rc, "%s", msg);
    }
}
