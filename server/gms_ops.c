/*
 * gms_ops.c - the requests of a locked GMS connection (gms_int.h): allocate,
 * export, get, list and free allocations, put, get, delete and list
 * metadata, commit, and the state queries, each answered with the response
 * messages.py defines (fields that a later GMS added, such as layout_slot,
 * are sent too: msgspec ignores a field its struct lacks).
 *
 * Owns: the store's two sorted arrays (allocations by id, metadata by key:
 * binary search, insertion by memmove) and the layout hash.
 * Never: lets a reader change the store (the RW-only requests are refused
 * with GMS's words), keeps more than GMS_MAX_ALLOCS allocations or
 * GMS_MAX_META keys (GMS_MAX_META_BYTES of keys and values) in a store.
 * Threads: the loop's only (gms.h); no locks.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "devmem.h"
#include "gms_int.h"
#include "log.h"

/* ---- the sorted arrays ------------------------------------------------------------------ */

/* Index of the first element whose name (at offset 0 of each) is >= key; *found. */
static size_t find(void *const *arr, size_t n, const char *key, bool *found)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp((const char *)arr[mid], key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < n && strcmp((const char *)arr[lo], key) == 0;
    return lo;
}

/* Insert e at i, growing the array: 0 or -ENOMEM. */
static int insert(void ***arr, size_t *n, size_t *cap, size_t i, void *e)
{
    if (*n == *cap) {
        size_t nc = *cap != 0 ? *cap * 2 : 16;
        void **p = realloc(*arr, nc * sizeof(*p));
        if (p == NULL)
            return -ENOMEM;
        *arr = p;
        *cap = nc;
    }
    memmove(*arr + i + 1, *arr + i, (*n - i) * sizeof(**arr));
    (*arr)[i] = e;
    (*n)++;
    return 0;
}

static void drop(void **arr, size_t *n, size_t i)
{
    memmove(arr + i, arr + i + 1, (*n - i - 1) * sizeof(*arr));
    (*n)--;
}

static gms_alloc_t *alloc_get(gms_store_t *st, const char *id)
{
    bool found;
    size_t i = find((void *const *)st->allocs, st->nallocs, id, &found);

    return found ? st->allocs[i] : NULL;
}

static int by_slot(const void *a, const void *b)
{
    const gms_alloc_t *x = *(gms_alloc_t *const *)a, *y = *(gms_alloc_t *const *)b;

    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

/* The allocations in slot order (the caller frees the array), or NULL. */
static gms_alloc_t **in_slot_order(const gms_store_t *st)
{
    gms_alloc_t **v = malloc((st->nallocs + 1) * sizeof(*v));

    if (v == NULL)
        return NULL;
    if (st->nallocs > 0) /* allocs may be NULL then */
        memcpy(v, st->allocs, st->nallocs * sizeof(*v));
    if (st->nallocs > 1)
        qsort(v, st->nallocs, sizeof(*v), by_slot);
    return v;
}

/* A version 4 UUID in its 36-character form. */
static void new_id(char out[GMS_ID_LEN + 1])
{
    uint8_t b[16];
    size_t got = 0;

    while (got < sizeof(b)) {
        ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
        if (n > 0)
            got += (size_t)n;
        else if (n < 0 && errno != EINTR)
            break;
    }
    if (got < sizeof(b)) { /* never on Linux >= 3.17; still unique within the store */
        static uint64_t seq;
        seq++;
        memcpy(b, &seq, sizeof(seq));
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, GMS_ID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

/* ---- the layout hash (gms.py's _compute_memory_layout_hash) ----------------------------- */

static int layout_hash(gms_store_t *st)
{
    gms_alloc_t **v = in_slot_order(st);
    gms_sha256_t h;
    char line[GMS_MAX_KEY + 128];

    if (v == NULL || gms_sha256_init(&h) != 0) {
        free(v);
        return -ENOMEM;
    }
    for (size_t r = 0; r < st->nallocs; r++) {
        int n = snprintf(line, sizeof(line), "%zu:%" PRIu64 ":%" PRIu64 ":%s", r, v[r]->size,
                         v[r]->aligned, v[r]->tag);
        gms_sha256_update(&h, line, (size_t)n);
        v[r]->rank = r;
    }
    for (size_t i = 0; i < st->nmeta; i++) {
        const gms_meta_t *m = st->meta[i];
        const gms_alloc_t *a = alloc_get(st, m->id); /* free drops its metadata: it is there */
        int n = snprintf(line, sizeof(line), "%s:%zu:%" PRIu64 ":", m->key,
                         a != NULL ? a->rank : 0, m->offset);
        gms_sha256_update(&h, line, (size_t)n);
        gms_sha256_update(&h, m->value, m->len);
    }
    int rc = gms_sha256_hex(&h, st->hash);
    free(v);
    return rc;
}

/* ---- answers ---------------------------------------------------------------------------- */

static void out_alloc(gms_out_t *o, const gms_alloc_t *a, bool with_tag)
{
    gms_out_str(o, "allocation_id", a->id);
    gms_out_u64(o, "size", a->size);
    gms_out_u64(o, "aligned_size", a->aligned);
    if (with_tag)
        gms_out_str(o, "tag", a->tag);
    gms_out_u64(o, "layout_slot", a->slot);
}

static void do_allocate(gms_conn_t *c, gms_store_t *st, const gms_req_t *r)
{
    char err[256];
    gms_alloc_t *a;
    gms_out_t o;
    bool found;
    size_t i;
    int rc;

    if (r->size == 0) {
        gms_send_error(c, "size must be > 0, got 0");
        return;
    }
    if (st->nallocs >= GMS_MAX_ALLOCS) {
        gms_send_error(c, "%s holds %d allocations, the most pinpool keeps in one layout",
                       st->name, GMS_MAX_ALLOCS);
        return;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        gms_send_error(c, "out of memory");
        return;
    }
    rc = ipc_devmem_vmm_alloc(st->device, r->size, &a->aligned, &a->handle, err, sizeof(err));
    if (rc != 0) {
        free(a);
        srv_warn("gms %s: %s", st->name, err);
        gms_send_error(c, "%s", err);
        return;
    }
    do
        new_id(a->id);
    while (alloc_get(st, a->id) != NULL);
    a->size = r->size;
    a->slot = st->next_slot++;
    snprintf(a->tag, sizeof(a->tag), "%s", r->tag);
    i = find((void *const *)st->allocs, st->nallocs, a->id, &found);
    if (insert((void ***)&st->allocs, &st->nallocs, &st->cap_allocs, i, a) != 0) {
        ipc_devmem_vmm_free(st->device, a->handle);
        free(a);
        gms_send_error(c, "out of memory");
        return;
    }
    st->bytes += a->aligned;
    gms_out_begin(&o, "allocate_response", 4);
    out_alloc(&o, a, false);
    gms_send(c, &o, -1);
}

static void do_get(gms_conn_t *c, gms_store_t *st, const gms_req_t *r, bool export)
{
    gms_alloc_t *a = alloc_get(st, r->id);
    gms_out_t o;

    if (a == NULL) {
        gms_send_error(c, "Unknown allocation: %s", r->id);
        return;
    }
    /* the earlier export_request is answered with a GetAllocationResponse */
    gms_out_begin(&o, export && !r->legacy ? "export_allocation_response"
                                           : "get_allocation_response", 5);
    out_alloc(&o, a, true);
    if (export) {
        char err[256];
        int fd = -1;
        if (ipc_devmem_vmm_export(st->device, a->handle, &fd, err, sizeof(err)) != 0) {
            msgpack_sbuffer_destroy(&o.buf);
            srv_warn("gms %s: %s", st->name, err);
            gms_send_error(c, "%s", err);
            return;
        }
        gms_send(c, &o, fd); /* sends a duplicate */
        close(fd);
        return;
    }
    gms_send(c, &o, -1);
}

static void do_list(gms_conn_t *c, gms_store_t *st, const gms_req_t *r)
{
    gms_alloc_t **v = in_slot_order(st);
    uint32_t n = 0;
    gms_out_t o;

    if (v == NULL) {
        gms_send_error(c, "out of memory");
        return;
    }
    for (size_t i = 0; i < st->nallocs; i++)
        if (!r->has_tag || strcmp(v[i]->tag, r->tag) == 0)
            n++;
    gms_out_begin(&o, "list_allocations_response", 1);
    gms_out_key(&o, "allocations");
    msgpack_pack_array(&o.pk, n);
    for (size_t i = 0; i < st->nallocs; i++) {
        if (r->has_tag && strcmp(v[i]->tag, r->tag) != 0)
            continue;
        msgpack_pack_map(&o.pk, 6);
        gms_out_str(&o, "type", "get_allocation_response");
        out_alloc(&o, v[i], true);
    }
    free(v);
    gms_send(c, &o, -1);
}

static void meta_free(gms_store_t *st, size_t i)
{
    gms_meta_t *m = st->meta[i];

    st->meta_bytes -= strlen(m->key) + m->len;
    free(m->value);
    free(m);
    drop((void **)st->meta, &st->nmeta, i);
}

static void do_free(gms_conn_t *c, gms_store_t *st, const gms_req_t *r)
{
    bool found;
    size_t i = find((void *const *)st->allocs, st->nallocs, r->id, &found);
    gms_out_t o;

    if (found) {
        gms_alloc_t *a = st->allocs[i];
        for (size_t k = st->nmeta; k-- > 0;)
            if (strcmp(st->meta[k]->id, a->id) == 0)
                meta_free(st, k);
        st->bytes -= a->aligned;
        ipc_devmem_vmm_free(st->device, a->handle);
        free(a);
        drop((void **)st->allocs, &st->nallocs, i);
    }
    gms_out_begin(&o, r->legacy ? "free_response" : "free_allocation_response", 1);
    gms_out_bool(&o, "success", found);
    gms_send(c, &o, -1);
}

static void do_meta_put(gms_conn_t *c, gms_store_t *st, const gms_req_t *r)
{
    gms_alloc_t *a = alloc_get(st, r->id);
    size_t klen = strlen(r->key), i, old = 0;
    gms_meta_t *m;
    gms_out_t o;
    bool found;

    if (a == NULL) {
        gms_send_error(c, "Unknown allocation: %s", r->id);
        return;
    }
    if (r->offset >= a->aligned) {
        gms_send_error(c, "offset_bytes %" PRIu64 " out of range for allocation %s "
                       "(aligned_size=%" PRIu64 ")", r->offset, a->id, a->aligned);
        return;
    }
    i = find((void *const *)st->meta, st->nmeta, r->key, &found);
    if (found)
        old = klen + st->meta[i]->len;
    if ((!found && st->nmeta >= GMS_MAX_META) ||
        st->meta_bytes - old + klen + r->value_len > GMS_MAX_META_BYTES) {
        gms_send_error(c, "%s holds %zu metadata keys of %" PRIu64 " bytes, the most pinpool "
                       "keeps is %d keys of %u bytes", st->name, st->nmeta, st->meta_bytes,
                       GMS_MAX_META, GMS_MAX_META_BYTES);
        return;
    }
    m = calloc(1, sizeof(*m));
    if (m != NULL)
        m->value = malloc(r->value_len + 1);
    if (m == NULL || m->value == NULL ||
        (!found && insert((void ***)&st->meta, &st->nmeta, &st->cap_meta, i, m) != 0)) {
        if (m != NULL)
            free(m->value);
        free(m);
        gms_send_error(c, "out of memory");
        return;
    }
    memcpy(m->key, r->key, klen + 1);
    memcpy(m->id, a->id, sizeof(m->id));
    m->offset = r->offset;
    if (r->value_len > 0)
        memcpy(m->value, r->value, r->value_len);
    m->len = r->value_len;
    if (found) {
        free(st->meta[i]->value);
        free(st->meta[i]);
        st->meta[i] = m;
    }
    st->meta_bytes = st->meta_bytes - old + klen + m->len;
    gms_out_begin(&o, "metadata_put_response", 1);
    gms_out_bool(&o, "success", true);
    gms_send(c, &o, -1);
}

static void do_meta_get(gms_conn_t *c, gms_store_t *st, const gms_req_t *r)
{
    bool found;
    size_t i = find((void *const *)st->meta, st->nmeta, r->key, &found);
    gms_out_t o;

    gms_out_begin(&o, "metadata_get_response", 4);
    gms_out_bool(&o, "found", found);
    if (found) {
        gms_out_str(&o, "allocation_id", st->meta[i]->id);
        gms_out_u64(&o, "offset_bytes", st->meta[i]->offset);
        gms_out_bin(&o, "value", st->meta[i]->value, st->meta[i]->len);
    } else {
        gms_out_nil(&o, "allocation_id");
        gms_out_nil(&o, "offset_bytes");
        gms_out_nil(&o, "value");
    }
    gms_send(c, &o, -1);
}

static void do_meta_delete(gms_conn_t *c, gms_store_t *st, const gms_req_t *r)
{
    bool found;
    size_t i = find((void *const *)st->meta, st->nmeta, r->key, &found);
    gms_out_t o;

    if (found)
        meta_free(st, i);
    gms_out_begin(&o, "metadata_delete_response", 1);
    gms_out_bool(&o, "deleted", found);
    gms_send(c, &o, -1);
}

static void do_meta_list(gms_conn_t *c, gms_store_t *st, const gms_req_t *r)
{
    size_t plen = strlen(r->key), first, end;
    bool found;
    gms_out_t o;

    first = find((void *const *)st->meta, st->nmeta, r->key, &found);
    for (end = first; end < st->nmeta && strncmp(st->meta[end]->key, r->key, plen) == 0; end++)
        ;
    gms_out_begin(&o, "metadata_list_response", 1);
    gms_out_key(&o, "keys");
    msgpack_pack_array(&o.pk, (uint32_t)(end - first));
    for (size_t i = first; i < end; i++) {
        size_t l = strlen(st->meta[i]->key);
        msgpack_pack_str(&o.pk, l);
        msgpack_pack_str_body(&o.pk, st->meta[i]->key, l);
    }
    gms_send(c, &o, -1);
}

static void do_commit(gms_conn_t *c, gms_store_t *st)
{
    gms_out_t o;

    int rc = layout_hash(st);
    if (rc != 0) {
        gms_send_error(c, rc == -ENOMEM ? "out of memory" : "cannot compute the layout hash (libcrypto failed)");
        return;
    }
    st->committed = true;
    st->rw = NULL; /* the writer's lock ends with its commit */
    srv_info("gms %s: committed %zu allocations (%" PRIu64 " bytes), %zu metadata keys, "
             "layout hash %.16s...", st->name, st->nallocs, st->bytes, st->nmeta, st->hash);
    gms_out_begin(&o, "commit_response", 1);
    gms_out_bool(&o, "success", true);
    gms_send(c, &o, -1);
    c->closing = true;
    gms_try_grant(st);
}

static void lock_state(gms_out_t *o, const gms_store_t *st)
{
    gms_out_str(o, "state", gms_state_name(st));
    gms_out_bool(o, "has_rw_session", st->rw != NULL);
    gms_out_u64(o, "ro_session_count", st->ro);
    gms_out_u64(o, "waiting_writers", st->waiting_writers);
    gms_out_bool(o, "committed", st->committed);
    gms_out_bool(o, "is_ready", st->committed && st->rw == NULL);
    gms_out_bool(o, "layout_committed", st->committed);
}

void gms_runtime_state(gms_conn_t *c)
{
    gms_out_t o;

    gms_out_begin(&o, "get_runtime_state_response", 9);
    lock_state(&o, c->st);
    gms_out_u64(&o, "allocation_count", c->st->nallocs);
    gms_out_str(&o, "memory_layout_hash", c->st->hash);
    gms_send(c, &o, -1);
}

void gms_handle(gms_conn_t *c, const gms_req_t *r)
{
    gms_store_t *st = c->st;
    gms_out_t o;

    switch (r->type) {
    case GMS_ALLOCATE: case GMS_FREE: case GMS_META_PUT: case GMS_META_DELETE: case GMS_COMMIT:
    case GMS_CLEAR_ALL:
        if (c->mode != GMS_MODE_RW) {
            gms_send_error(c, "%s requires RW session, got ro", gms_req_name(r->type));
            return;
        }
        break;
    default:
        break;
    }
    switch (r->type) {
    case GMS_ALLOCATE: do_allocate(c, st, r); break;
    case GMS_EXPORT: do_get(c, st, r, true); break;
    case GMS_GET_ALLOCATION: do_get(c, st, r, false); break;
    case GMS_LIST_ALLOCATIONS: do_list(c, st, r); break;
    case GMS_FREE: do_free(c, st, r); break;
    case GMS_META_PUT: do_meta_put(c, st, r); break;
    case GMS_META_GET: do_meta_get(c, st, r); break;
    case GMS_META_DELETE: do_meta_delete(c, st, r); break;
    case GMS_META_LIST: do_meta_list(c, st, r); break;
    case GMS_COMMIT: do_commit(c, st); break;
    case GMS_CLEAR_ALL: {
        size_t n = st->nallocs;
        gms_store_clear(st); /* the writer keeps its lock */
        gms_out_begin(&o, "clear_all_response", 1);
        gms_out_u64(&o, "cleared_count", n);
        gms_send(c, &o, -1);
        break;
    }
    case GMS_GET_HASH:
        gms_out_begin(&o, "get_memory_layout_hash_response", 1);
        gms_out_str(&o, "memory_layout_hash", st->hash);
        gms_send(c, &o, -1);
        break;
    case GMS_GET_LOCK_STATE:
        gms_out_begin(&o, "get_lock_state_response", 7);
        lock_state(&o, st);
        gms_send(c, &o, -1);
        break;
    case GMS_GET_ALLOCATION_STATE:
        gms_out_begin(&o, "get_allocation_state_response", 2);
        gms_out_u64(&o, "allocation_count", st->nallocs);
        gms_out_u64(&o, "total_bytes", st->bytes); /* the earlier GMS's required field */
        gms_send(c, &o, -1);
        break;
    default:
        gms_send_error(c, "Unknown request: %s", gms_req_name(r->type));
        break;
    }
}
