/*
 * manifest.c - the tensor manifest format (pinpool.h, "Tensor manifests"):
 * encode, parse and check a manifest; the dtypes; the hashes (XXH3-64, on
 * several threads, device bytes read back through host staging buffers).
 * The calls that talk to the daemon are manifest_store.c's.
 *
 * Owns: the byte layout of a manifest and every check a reader makes of one.
 * Never: trusts a length, count or offset it reads before checking it against
 * the bytes it was given (every sum is overflow-checked); talks to the daemon
 * except to borrow a staging slice for hashing device memory.
 * Locking: none; a manifest is used by one thread at a time (the caller's),
 * hashing threads only read memory and write their own job's result.
 *
 * Why XXH3-64: it is the checksum the spill tier already uses (libxxhash from
 * Debian, here header-only with XXH_INLINE_ALL, so libpinpool links nothing
 * new); it runs near memory speed on one core (5.5-6.9 GB/s for XXH3_64bits
 * over 1 GiB on this machine's EPYC cores, SSE2 build; a whole commit of a
 * 2 GiB host manifest, bench/weights.py hash: 3.3 GB/s on one thread, 4.8 on
 * two, best of three runs on 2 shared cores), so 16 GiB hash in a few seconds
 * on one thread and about a second on 8 (not measured: the GPU machine's
 * CPUs); a cryptographic hash would be several times slower and buys nothing
 * against a local writer, who can rewrite the manifest too.  Hashes are made
 * once, at commit; attach never hashes (verify does, on demand).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "cudaload.h"
#include "internal.h"
#include "manifest_int.h"

/* ---- dtypes -------------------------------------------------------------------------- */

static const struct {
    const char *name;
    int size;
} dtypes[] = {
    [PINPOOL_DTYPE_BOOL] = {"BOOL", 1},       [PINPOOL_DTYPE_U8] = {"U8", 1},
    [PINPOOL_DTYPE_I8] = {"I8", 1},           [PINPOOL_DTYPE_I16] = {"I16", 2},
    [PINPOOL_DTYPE_U16] = {"U16", 2},         [PINPOOL_DTYPE_I32] = {"I32", 4},
    [PINPOOL_DTYPE_U32] = {"U32", 4},         [PINPOOL_DTYPE_I64] = {"I64", 8},
    [PINPOOL_DTYPE_U64] = {"U64", 8},         [PINPOOL_DTYPE_F16] = {"F16", 2},
    [PINPOOL_DTYPE_BF16] = {"BF16", 2},       [PINPOOL_DTYPE_F32] = {"F32", 4},
    [PINPOOL_DTYPE_F64] = {"F64", 8},         [PINPOOL_DTYPE_F8_E4M3] = {"F8_E4M3", 1},
    [PINPOOL_DTYPE_F8_E5M2] = {"F8_E5M2", 1},
};
#define NDTYPES ((int)(sizeof(dtypes) / sizeof(dtypes[0])))

const char *pinpool_dtype_name(int dtype)
{
    return dtype > 0 && dtype < NDTYPES ? dtypes[dtype].name : NULL;
}

int pinpool_dtype_from_name(const char *name)
{
    for (int i = 1; name != NULL && i < NDTYPES; i++)
        if (strcmp(dtypes[i].name, name) == 0)
            return i;
    return 0;
}

int pinpool_dtype_size(int dtype)
{
    return dtype > 0 && dtype < NDTYPES ? dtypes[dtype].size : 0;
}

/* ---- shapes ------------------------------------------------------------------------------- */

bool pinpool__tensor_span(int dtype, uint32_t ndim, const int64_t *shape, const int64_t *strides,
                          uint64_t *span)
{
    uint64_t last = 0, size = (uint64_t)pinpool_dtype_size(dtype);

    for (uint32_t i = 0; i < ndim; i++)
        if (shape[i] == 0) {
            *span = 0;
            return true;
        }
    for (uint32_t i = 0; i < ndim; i++) {
        uint64_t step;
        if (shape[i] < 0 || strides[i] < 0 ||
            __builtin_mul_overflow((uint64_t)(shape[i] - 1), (uint64_t)strides[i], &step) ||
            __builtin_add_overflow(last, step, &last))
            return false;
    }
    return !__builtin_add_overflow(last, 1, &last) && !__builtin_mul_overflow(last, size, span);
}

void pinpool__contiguous_strides(uint32_t ndim, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;

    for (uint32_t i = ndim; i-- > 0;) {
        strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

int pinpool__manifest_check_name(const char *name, char *msg, size_t msglen)
{
    size_t n = name != NULL ? strlen(name) : 0;

    if (n == 0 || n > PINPOOL_MANIFEST_NAME_MAX) {
        snprintf(msg, msglen, "a manifest name is 1 to %d characters (got %zu)",
                 PINPOOL_MANIFEST_NAME_MAX, n);
        return PINPOOL_EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        if (name[i] < 0x21 || name[i] > 0x7e || strchr("@!~#+", name[i]) != NULL) {
            snprintf(msg, msglen, "a manifest name is printable ASCII without spaces or any of "
                     "\"@!~#+\" (character %zu of '%.60s' is not)", i + 1, name);
            return PINPOOL_EINVAL;
        }
    return 0;
}

/* ---- hashes --------------------------------------------------------------------------------- */

uint64_t pinpool__xxh3(const void *p, size_t n)
{
    return XXH3_64bits(p, n);
}

uint64_t pinpool__content_hash(const pinpool__mtensor_t *t, uint32_t nt, const char *const *names)
{
    XXH3_state_t *st = XXH3_createState();
    uint64_t h;

    if (st == NULL)
        return 0; /* only without memory; the reader's check then fails loudly */
    XXH3_64bits_reset(st);
    for (uint32_t i = 0; i < nt; i++) {
        uint8_t rec[8 + 16 * PINPOOL_MANIFEST_MAX_DIMS + 8];
        size_t k = 0;
        pinpool__wr32(rec + k, t[i].dtype), k += 4;
        pinpool__wr32(rec + k, t[i].ndim), k += 4;
        for (uint32_t d = 0; d < t[i].ndim && d < PINPOOL_MANIFEST_MAX_DIMS; d++) {
            pinpool__wr64(rec + k, (uint64_t)t[i].shape[d]), k += 8;
            pinpool__wr64(rec + k, (uint64_t)t[i].strides[d]), k += 8;
        }
        pinpool__wr64(rec + k, t[i].hash), k += 8;
        uint8_t len[4];
        pinpool__wr32(len, t[i].name_len);
        XXH3_64bits_update(st, len, 4);
        XXH3_64bits_update(st, names[i], t[i].name_len);
        XXH3_64bits_update(st, rec, k);
    }
    h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

#define HASH_PIECE (64ull << 20)

typedef struct hash_run {
    pinpool__hjob_t *jobs;
    uint32_t *order; /* largest first */
    uint32_t n;
    uint32_t next;   /* atomic */
    int32_t device;
    uint64_t piece;   /* bytes read back at a time (device): HASH_PIECE or the largest job */
    uint8_t *staging; /* one piece per thread (device), or NULL */
    int rc;           /* the first failure (atomic) */
    char why[200];
} hash_run_t;

typedef struct hash_worker {
    hash_run_t *run;
    uint32_t slot;
} hash_worker_t;

static void hash_failed(hash_run_t *r, int rc, const char *why)
{
    int zero = 0;
    if (__atomic_compare_exchange_n(&r->rc, &zero, rc, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        snprintf(r->why, sizeof(r->why), "%s", why);
}

static void *hash_worker(void *arg)
{
    hash_worker_t *w = arg;
    hash_run_t *r = w->run;
    XXH3_state_t *st = NULL;
    uint8_t *buf = NULL;
    bool own_buf = false;

    if (r->device >= 0) {
#ifdef PINPOOL_HAVE_CUDA
        st = XXH3_createState();
        buf = r->staging != NULL ? r->staging + (size_t)w->slot * r->piece : NULL;
        if (buf == NULL) {
            buf = malloc(r->piece);
            own_buf = true;
        }
        if (st == NULL || buf == NULL) {
            hash_failed(r, -ENOMEM, "out of memory for a hashing buffer");
            goto out;
        }
        if (ipc_cuda_use_device(r->device) != 0) {
            hash_failed(r, PINPOOL_ECUDA, "cannot use the manifest's GPU in a hashing thread");
            goto out;
        }
#else
        hash_failed(r, PINPOOL_ECUDA, "this libpinpool was built without CUDA");
        goto out;
#endif
    }
    for (;;) {
        uint32_t i = __atomic_fetch_add(&r->next, 1, __ATOMIC_RELAXED);
        if (i >= r->n || __atomic_load_n(&r->rc, __ATOMIC_RELAXED) != 0)
            break;
        pinpool__hjob_t *j = &r->jobs[r->order[i]];
        if (r->device < 0) {
            j->hash = XXH3_64bits((const void *)(uintptr_t)j->addr, j->nbytes);
            continue;
        }
#ifdef PINPOOL_HAVE_CUDA
        XXH3_64bits_reset(st);
        for (uint64_t off = 0; off < j->nbytes; off += r->piece) {
            uint64_t len = j->nbytes - off < r->piece ? j->nbytes - off : r->piece;
            CUresult cr = ipc_cu.cuMemcpyDtoH(buf, (CUdeviceptr)(j->addr + off), len);
            if (cr != CUDA_SUCCESS) {
                char b[160];
                hash_failed(r, PINPOOL_ECUDA, ipc_cuda_strerror(cr, "cuMemcpyDtoH", b, sizeof(b)));
                goto out;
            }
            XXH3_64bits_update(st, buf, len);
        }
        j->hash = XXH3_64bits_digest(st);
#endif
    }
out:
    if (own_buf)
        free(buf);
    if (st != NULL)
        XXH3_freeState(st);
    return NULL;
}

static const pinpool__hjob_t *sort_jobs;
static int by_size_desc(const void *a, const void *b)
{
    uint64_t x = sort_jobs[*(const uint32_t *)a].nbytes, y = sort_jobs[*(const uint32_t *)b].nbytes;
    return x < y ? 1 : x > y ? -1 : 0;
}

int pinpool__hash_many(pinpool_ctx_t *ctx, int32_t device, pinpool__hjob_t *jobs, uint32_t n,
                       uint32_t threads)
{
    static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;
    hash_run_t r = {.jobs = jobs, .n = n, .device = device};
    hash_worker_t w[8];
    pthread_t th[8];
    pinpool_slice_t staging = {.id = 0};
    uint32_t started = 0;

    if (n == 0)
        return 0;
    if (threads == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        threads = c < 1 ? 1 : c > 8 ? 8 : (uint32_t)c;
    }
    if (threads > 8)
        threads = 8;
    if (threads > n)
        threads = n;
    r.order = malloc((size_t)n * sizeof(*r.order));
    if (r.order == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory for %" PRIu32 " hash jobs", n);
    for (uint32_t i = 0; i < n; i++)
        r.order[i] = i;
    pthread_mutex_lock(&sort_lock); /* qsort has no argument for the jobs */
    sort_jobs = jobs;
    qsort(r.order, n, sizeof(*r.order), by_size_desc);
    pthread_mutex_unlock(&sort_lock);
    r.piece = jobs[r.order[0]].nbytes < HASH_PIECE ? (jobs[r.order[0]].nbytes + 4095) & ~4095ull
                                                   : HASH_PIECE;
    if (r.piece == 0)
        r.piece = 4096;
    /* Device bytes come back through pinned memory where the daemon has some
     * (a pool slice, at full PCIe speed), else through malloc'd buffers. */
    if (device >= 0 && pinpool__ctx_cuda_host(ctx) &&
        pinpool_alloc(ctx, (uint64_t)threads * r.piece, NULL, &staging) == 0)
        r.staging = staging.ptr;
    for (uint32_t i = 0; i < threads; i++) {
        w[i] = (hash_worker_t){.run = &r, .slot = i};
        if (pthread_create(&th[i], NULL, hash_worker, &w[i]) != 0)
            break;
        started++;
    }
    if (started == 0 && device < 0) { /* no thread at all: hash here (host bytes only) */
        w[0] = (hash_worker_t){.run = &r, .slot = 0};
        hash_worker(&w[0]);
    } else if (started == 0) {
        hash_failed(&r, -EAGAIN, "cannot start a hashing thread");
    }
    for (uint32_t i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (staging.id != 0)
        pinpool_free(ctx, staging.id, NULL);
    free(r.order);
    if (r.rc != 0)
        return pinpool__fail(ctx, r.rc, "hashing the tensors: %s", r.why);
    return 0;
}

/* ---- encode ---------------------------------------------------------------------------------- */

int pinpool__manifest_encode(const pinpool__menc_t *in, uint8_t **out, size_t *len)
{
    size_t name_len = strlen(in->name);
    uint64_t strings = name_len + in->meta_len, total;
    uint8_t *b, *p;

    for (uint32_t i = 0; i < in->nt; i++)
        strings += in->t[i].name_len;
    if (strings > UINT32_MAX)
        return PINPOOL_EINVAL;
    total = PINPOOL__MAN_HDR + (uint64_t)PINPOOL__MAN_SEG * in->nseg +
            (uint64_t)PINPOOL__MAN_TENSOR * in->nt + strings;
    b = calloc(1, total);
    if (b == NULL)
        return -ENOMEM;
    memcpy(b, PINPOOL__MAN_MAGIC, 8);
    pinpool__wr32(b + 8, PINPOOL_MANIFEST_FORMAT);
    pinpool__wr32(b + 12, PINPOOL__MAN_HDR);
    pinpool__wr64(b + 16, total);
    pinpool__wr64(b + 24, in->version);
    pinpool__wr64(b + 32, in->created_ns);
    pinpool__wr32(b + 40, in->nseg);
    pinpool__wr32(b + 44, in->nt);
    pinpool__wr32(b + 48, (uint32_t)strings);
    pinpool__wr32(b + 52, (uint32_t)name_len);
    pinpool__wr32(b + 56, in->meta_len);
    pinpool__wr32(b + 60, (uint32_t)in->device);
    pinpool__wr32(b + 64, in->placement);
    pinpool__wr32(b + 68, in->hash_algo);
    pinpool__wr64(b + 72, pinpool__content_hash(in->t, in->nt, in->names));
    p = b + PINPOOL__MAN_HDR;
    for (uint32_t i = 0; i < in->nseg; i++, p += PINPOOL__MAN_SEG) {
        pinpool__wr64(p, in->segs[i].size);
        memcpy(p + 16, in->segs[i].key, strnlen(in->segs[i].key, PINPOOL__MAN_KEY - 1));
    }
    uint8_t *strs = b + PINPOOL__MAN_HDR + (size_t)PINPOOL__MAN_SEG * in->nseg +
                    (size_t)PINPOOL__MAN_TENSOR * in->nt;
    uint32_t at = (uint32_t)(name_len + in->meta_len);
    memcpy(strs, in->name, name_len);
    if (in->meta_len > 0)
        memcpy(strs + name_len, in->meta, in->meta_len);
    for (uint32_t i = 0; i < in->nt; i++, p += PINPOOL__MAN_TENSOR) {
        const pinpool__mtensor_t *t = &in->t[i];
        memcpy(strs + at, in->names[i], t->name_len);
        pinpool__wr32(p, at);
        pinpool__wr32(p + 4, t->name_len);
        at += t->name_len;
        pinpool__wr32(p + 8, t->dtype);
        pinpool__wr32(p + 12, t->ndim);
        pinpool__wr32(p + 16, t->segment);
        pinpool__wr32(p + 20, t->flags);
        pinpool__wr64(p + 24, t->offset);
        pinpool__wr64(p + 32, t->nbytes);
        for (uint32_t d = 0; d < t->ndim; d++) {
            pinpool__wr64(p + 40 + 8 * d, (uint64_t)t->shape[d]);
            pinpool__wr64(p + 104 + 8 * d, (uint64_t)t->strides[d]);
        }
        pinpool__wr64(p + 168, t->hash);
    }
    pinpool__wr64(b + 80, XXH3_64bits(b, total)); /* over the bytes with the checksum still 0 */
    *out = b;
    *len = total;
    return 0;
}

/* ---- parse ------------------------------------------------------------------------------------ */

#define BAD(...) (snprintf(err, errlen, __VA_ARGS__), -EBADMSG)

/* A tensor name for a message: at most 60 bytes, non-printable bytes as '?'. */
static const char *show(const char *s, size_t n, char *buf, size_t len)
{
    size_t k = n < 60 ? n : 60;

    if (k >= len)
        k = len - 1;
    for (size_t i = 0; i < k; i++)
        buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    buf[k] = '\0';
    if (n > k && k >= 3)
        memcpy(buf + k - 3, "...", 3);
    return buf;
}

static const struct pinpool_manifest *cmp_m;
static int by_name(const void *a, const void *b)
{
    const pinpool__mtensor_t *x = &cmp_m->t[*(const uint32_t *)a], *y = &cmp_m->t[*(const uint32_t *)b];
    int c = memcmp(cmp_m->names + x->name_off, cmp_m->names + y->name_off,
                   x->name_len < y->name_len ? x->name_len : y->name_len);
    return c != 0 ? c : x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

/* The checksum of buf with its checksum field taken as 0. */
static uint64_t checksum(const uint8_t *buf, size_t len)
{
    static const uint8_t zero[8];
    XXH3_state_t *st = XXH3_createState();
    uint64_t h;

    if (st == NULL)
        return ~pinpool__rd64(buf + 80); /* cannot check: reported as a mismatch */
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, buf, 80);
    XXH3_64bits_update(st, zero, 8);
    XXH3_64bits_update(st, buf + 88, len - 88);
    h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

static int parse_tensors(const uint8_t *buf, struct pinpool_manifest *m, const uint8_t *strs,
                         uint32_t nstr, uint32_t first_name, char *err, size_t errlen)
{
    const uint8_t *p = buf + PINPOOL__MAN_HDR + (size_t)PINPOOL__MAN_SEG * m->nseg;
    uint32_t at = 0;
    char nb[64];

    for (uint32_t i = 0; i < m->nt; i++, p += PINPOOL__MAN_TENSOR) {
        pinpool__mtensor_t *t = &m->t[i];
        uint32_t off = pinpool__rd32(p), len = pinpool__rd32(p + 4);
        uint64_t span;
        int size;

        if (len == 0 || len > PINPOOL_MANIFEST_TENSOR_NAME_MAX)
            return BAD("tensor %" PRIu32 ": its name is %" PRIu32 " bytes (1 to %d)", i, len,
                       PINPOOL_MANIFEST_TENSOR_NAME_MAX);
        if (off < first_name || off > nstr || len > nstr - off)
            return BAD("tensor %" PRIu32 ": its name (%" PRIu32 " bytes at %" PRIu32 ") lies outside "
                       "the %" PRIu32 " bytes of tensor names", i, len, off, nstr - first_name);
        if (memchr(strs + off, '\0', len) != NULL)
            return BAD("tensor %" PRIu32 ": its name holds a NUL byte", i);
        memcpy(m->names + at, strs + off, len);
        m->names[at + len] = '\0';
        const char *name = show(m->names + at, len, nb, sizeof(nb));
        t->name_off = at;
        t->name_len = len;
        at += len + 1;
        t->dtype = pinpool__rd32(p + 8);
        t->ndim = pinpool__rd32(p + 12);
        t->segment = pinpool__rd32(p + 16);
        t->flags = pinpool__rd32(p + 20);
        t->offset = pinpool__rd64(p + 24);
        t->nbytes = pinpool__rd64(p + 32);
        t->hash = pinpool__rd64(p + 168);
        size = pinpool_dtype_size((int)t->dtype);
        if (size == 0)
            return BAD("tensor '%s': unknown dtype %" PRIu32, name, t->dtype);
        if (t->ndim > PINPOOL_MANIFEST_MAX_DIMS)
            return BAD("tensor '%s': %" PRIu32 " dimensions (at most %d)", name, t->ndim,
                       PINPOOL_MANIFEST_MAX_DIMS);
        if (t->flags != 0)
            return BAD("tensor '%s': flags 0x%" PRIx32 " are not format 1's", name, t->flags);
        for (uint32_t d = 0; d < PINPOOL_MANIFEST_MAX_DIMS; d++) {
            int64_t sh = (int64_t)pinpool__rd64(p + 40 + 8 * d), st = (int64_t)pinpool__rd64(p + 104 + 8 * d);
            if (d >= t->ndim && (sh != 0 || st != 0))
                return BAD("tensor '%s': dimension %" PRIu32 " is past its %" PRIu32 " but not 0",
                           name, d, t->ndim);
            if (sh < 0 || st < 0)
                return BAD("tensor '%s': dimension %" PRIu32 " has shape %" PRId64 " stride %" PRId64
                           " (both must be >= 0)", name, d, sh, st);
            t->shape[d] = sh;
            t->strides[d] = st;
        }
        if (!pinpool__tensor_span((int)t->dtype, t->ndim, t->shape, t->strides, &span))
            return BAD("tensor '%s': its shape and strides overflow 64 bits", name);
        if (span > t->nbytes)
            return BAD("tensor '%s': its shape and strides reach %" PRIu64 " bytes, more than its %"
                       PRIu64, name, span, t->nbytes);
        if (t->nbytes == 0) {
            if (t->segment != 0 || t->offset != 0)
                return BAD("tensor '%s': 0 bytes, yet segment %" PRIu32 " offset %" PRIu64, name,
                           t->segment, t->offset);
        } else if (t->segment >= m->nseg) {
            return BAD("tensor '%s': segment %" PRIu32 " of %" PRIu32, name, t->segment, m->nseg);
        } else if (t->offset > m->segs[t->segment].size ||
                   t->nbytes > m->segs[t->segment].size - t->offset) {
            return BAD("tensor '%s': bytes [%" PRIu64 ", +%" PRIu64 ") lie outside segment %" PRIu32
                       " (%" PRIu64 " bytes)", name, t->offset, t->nbytes, t->segment,
                       m->segs[t->segment].size);
        } else if (t->offset % (uint64_t)size != 0) {
            return BAD("tensor '%s': offset %" PRIu64 " is not a multiple of its dtype's %d bytes",
                       name, t->offset, size);
        }
        if (m->hash_algo == PINPOOL__HASH_NONE && t->hash != 0)
            return BAD("tensor '%s': a hash in a manifest published without hashes", name);
    }
    return 0;
}

int pinpool__manifest_parse(const uint8_t *buf, size_t len, struct pinpool_manifest *m, char *err,
                            size_t errlen)
{
    uint64_t total, expect;
    uint32_t nstr, name_len, meta_len, hdr;
    int rc;

    if (errlen > 0)
        err[0] = '\0';
    if (buf == NULL || len < PINPOOL__MAN_HDR)
        return BAD("a manifest is at least %u bytes (its header); got %zu", PINPOOL__MAN_HDR, len);
    if (memcmp(buf, PINPOOL__MAN_MAGIC, 8) != 0)
        return BAD("not a pinpool manifest (its first 8 bytes are not \"" PINPOOL__MAN_MAGIC "\")");
    if (pinpool__rd32(buf + 8) != PINPOOL_MANIFEST_FORMAT)
        return BAD("manifest format %" PRIu32 " is not one this libpinpool %s reads (%d)%s",
                   pinpool__rd32(buf + 8), PINPOOL_VERSION_STRING, PINPOOL_MANIFEST_FORMAT,
                   pinpool__rd32(buf + 8) > PINPOOL_MANIFEST_FORMAT ? ": a newer pinpool wrote it" : "");
    hdr = pinpool__rd32(buf + 12);
    if (hdr != PINPOOL__MAN_HDR)
        return BAD("the header says it is %" PRIu32 " bytes; format 1's is %u", hdr, PINPOOL__MAN_HDR);
    total = pinpool__rd64(buf + 16);
    if (total != len)
        return BAD("the manifest says it is %" PRIu64 " bytes long, but %zu were read", total, len);
    if (len > PINPOOL_MANIFEST_MAX_BYTES)
        return BAD("the manifest is %zu bytes, more than the %llu read at most", len,
                   (unsigned long long)PINPOOL_MANIFEST_MAX_BYTES);
    m->version = pinpool__rd64(buf + 24);
    m->created_ns = pinpool__rd64(buf + 32);
    m->nseg = pinpool__rd32(buf + 40);
    m->nt = pinpool__rd32(buf + 44);
    nstr = pinpool__rd32(buf + 48);
    name_len = pinpool__rd32(buf + 52);
    meta_len = pinpool__rd32(buf + 56);
    m->device = (int32_t)pinpool__rd32(buf + 60);
    m->placement = pinpool__rd32(buf + 64);
    m->hash_algo = pinpool__rd32(buf + 68);
    m->content_hash = pinpool__rd64(buf + 72);
    if (m->nseg > PINPOOL_MANIFEST_MAX_SEGMENTS)
        return BAD("%" PRIu32 " segments (at most %u)", m->nseg, PINPOOL_MANIFEST_MAX_SEGMENTS);
    if (m->nt > PINPOOL_MANIFEST_MAX_TENSORS)
        return BAD("%" PRIu32 " tensors (at most %u)", m->nt, PINPOOL_MANIFEST_MAX_TENSORS);
    expect = PINPOOL__MAN_HDR + (uint64_t)PINPOOL__MAN_SEG * m->nseg +
             (uint64_t)PINPOOL__MAN_TENSOR * m->nt + nstr;
    if (expect != len)
        return BAD("%" PRIu32 " segments, %" PRIu32 " tensors and %" PRIu32 " bytes of strings make "
                   "%" PRIu64 " bytes, not the %zu read", m->nseg, m->nt, nstr, expect, len);
    if (checksum(buf, len) != pinpool__rd64(buf + 80))
        return BAD("the checksum does not match: the manifest is damaged");
    if (pinpool__rd64(buf + 88) != 0)
        return BAD("reserved header bytes are not 0");
    if (m->version == 0)
        return BAD("version 0 (versions start at 1)");
    if (name_len == 0 || name_len > PINPOOL_MANIFEST_NAME_MAX)
        return BAD("its name is %" PRIu32 " bytes (1 to %d)", name_len, PINPOOL_MANIFEST_NAME_MAX);
    if (meta_len > PINPOOL_MANIFEST_META_MAX || (uint64_t)name_len + meta_len > nstr)
        return BAD("its name and metadata (%" PRIu32 " + %" PRIu32 " bytes) do not fit its %" PRIu32
                   " bytes of strings", name_len, meta_len, nstr);
    if (m->device < PINPOOL_HOST || m->device >= 1024)
        return BAD("device %" PRId32 " (-1 for host, else a GPU index)", m->device);
    if (m->placement != PINPOOL_MANIFEST_KEPT && m->placement != PINPOOL_MANIFEST_RELEASED)
        return BAD("placement %" PRIu32 " (1 kept, 2 released)", m->placement);
    if (m->placement == PINPOOL_MANIFEST_RELEASED && m->device != PINPOOL_HOST)
        return BAD("released segments on GPU %" PRId32 " (only host segments are released)", m->device);
    if (m->hash_algo > PINPOOL__HASH_XXH3)
        return BAD("hash %" PRIu32 " (0 none, 1 XXH3-64)", m->hash_algo);

    const uint8_t *strs = buf + PINPOOL__MAN_HDR + (size_t)PINPOOL__MAN_SEG * m->nseg +
                          (size_t)PINPOOL__MAN_TENSOR * m->nt;
    char msg[256];
    memcpy(m->name, strs, name_len);
    m->name[name_len] = '\0';
    if (pinpool__manifest_check_name(m->name, msg, sizeof(msg)) != 0)
        return BAD("its name: %s", msg);
    m->meta = (const char *)strs + name_len;
    m->meta_len = meta_len;

    m->segs = calloc(m->nseg > 0 ? m->nseg : 1, sizeof(*m->segs));
    m->t = calloc(m->nt > 0 ? m->nt : 1, sizeof(*m->t));
    m->names = malloc((size_t)nstr + m->nt + 1);
    m->by_name = malloc((m->nt > 0 ? m->nt : 1) * sizeof(*m->by_name));
    if (m->segs == NULL || m->t == NULL || m->names == NULL || m->by_name == NULL) {
        pinpool__manifest_clear(m);
        snprintf(err, errlen, "out of memory for a manifest of %" PRIu32 " tensors", m->nt);
        return -ENOMEM;
    }
    const uint8_t *p = buf + PINPOOL__MAN_HDR;
    for (uint32_t i = 0; i < m->nseg; i++, p += PINPOOL__MAN_SEG) {
        pinpool__mseg_t *s = &m->segs[i];
        size_t k = strnlen((const char *)p + 16, PINPOOL__MAN_KEY);
        s->size = pinpool__rd64(p);
        rc = 0;
        if (s->size == 0)
            rc = BAD("segment %" PRIu32 " is 0 bytes", i);
        else if (pinpool__rd64(p + 8) != 0)
            rc = BAD("segment %" PRIu32 ": reserved bytes are not 0", i);
        else if (k == 0 || k == PINPOOL__MAN_KEY)
            rc = BAD("segment %" PRIu32 ": its key is %s", i, k == 0 ? "empty" : "not NUL-terminated");
        for (size_t j = k; rc == 0 && j < PINPOOL__MAN_KEY; j++)
            if (p[16 + j] != 0)
                rc = BAD("segment %" PRIu32 ": bytes after its key's NUL are not 0", i);
        for (size_t j = 0; rc == 0 && j < k; j++)
            if (p[16 + j] < 0x21 || p[16 + j] > 0x7e)
                rc = BAD("segment %" PRIu32 ": its key is not printable ASCII", i);
        if (rc != 0) {
            pinpool__manifest_clear(m);
            return rc;
        }
        memcpy(s->key, p + 16, k);
        s->key[k] = '\0';
    }
    rc = parse_tensors(buf, m, strs, nstr, name_len + meta_len, err, errlen);
    if (rc == 0) {
        static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
        for (uint32_t i = 0; i < m->nt; i++)
            m->by_name[i] = i;
        pthread_mutex_lock(&lock); /* qsort has no argument for the manifest */
        cmp_m = m;
        qsort(m->by_name, m->nt, sizeof(*m->by_name), by_name);
        pthread_mutex_unlock(&lock);
        for (uint32_t i = 1; i < m->nt && rc == 0; i++) {
            const pinpool__mtensor_t *a = &m->t[m->by_name[i - 1]], *b = &m->t[m->by_name[i]];
            char nb[64];
            if (a->name_len == b->name_len &&
                memcmp(m->names + a->name_off, m->names + b->name_off, a->name_len) == 0)
                rc = BAD("two tensors are named '%s'", show(m->names + a->name_off, a->name_len, nb,
                                                            sizeof(nb)));
        }
    }
    if (rc == 0) {
        const char **names = malloc((m->nt > 0 ? m->nt : 1) * sizeof(*names));
        if (names == NULL) {
            rc = -ENOMEM;
            snprintf(err, errlen, "out of memory");
        } else {
            for (uint32_t i = 0; i < m->nt; i++)
                names[i] = m->names + m->t[i].name_off;
            if (pinpool__content_hash(m->t, m->nt, names) != m->content_hash)
                rc = BAD("the content hash does not match the tensors it covers");
            free(names);
        }
    }
    if (rc != 0)
        pinpool__manifest_clear(m);
    m->attached = -2;
    m->copy_device = -1;
    return rc;
}

void pinpool__manifest_clear(struct pinpool_manifest *m)
{
    free(m->segs);
    free(m->t);
    free(m->names);
    free(m->by_name);
    m->segs = NULL;
    m->t = NULL;
    m->names = NULL;
    m->by_name = NULL;
}

/* ---- the reader's view of a manifest (no daemon needed) ---------------------------------- */

int pinpool_manifest_parse(const void *buf, size_t len, pinpool_manifest_t **out, char *err,
                           size_t errlen)
{
    pinpool_manifest_t *m;
    char dummy[8];
    int rc;

    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    if (out == NULL) {
        snprintf(err, errlen, "out must not be NULL");
        return PINPOOL_EINVAL;
    }
    m = calloc(1, sizeof(*m));
    if (m == NULL || (len > 0 && len <= PINPOOL_MANIFEST_MAX_BYTES && (m->buf = malloc(len)) == NULL)) {
        free(m);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (m->buf != NULL)
        memcpy(m->buf, buf, len);
    rc = pinpool__manifest_parse(m->buf != NULL ? m->buf : buf, len, m, err, errlen);
    if (rc != 0) {
        free(m->buf);
        free(m);
        return rc;
    }
    m->len = len;
    *out = m;
    return 0;
}

int pinpool_manifest_bytes(const pinpool_manifest_t *m, const void **buf, size_t *len)
{
    if (m == NULL || buf == NULL || len == NULL)
        return PINPOOL_EINVAL;
    *buf = m->buf;
    *len = m->len;
    return 0;
}

int pinpool_manifest_info(const pinpool_manifest_t *m, pinpool_manifest_info_t *out)
{
    if (m == NULL || out == NULL)
        return PINPOOL_EINVAL;
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "%s", m->name);
    out->version = m->version;
    out->device_id = m->device;
    out->placement = m->placement;
    out->num_tensors = m->nt;
    out->num_segments = m->nseg;
    for (uint32_t i = 0; i < m->nseg; i++)
        out->data_bytes += m->segs[i].size;
    out->manifest_bytes = m->len;
    out->hash_algo = m->hash_algo;
    out->content_hash = m->content_hash;
    out->created_unix_ns = m->created_ns;
    out->metadata = m->meta;
    out->metadata_len = m->meta_len;
    out->attached_device = m->attached;
    return 0;
}

int pinpool_manifest_tensor(const pinpool_manifest_t *m, uint32_t index, pinpool_tensor_t *out)
{
    if (m == NULL || out == NULL || index >= m->nt)
        return PINPOOL_EINVAL;
    const pinpool__mtensor_t *t = &m->t[index];
    pinpool__tensor_desc(t, m->names + t->name_off, m->attached >= -1 ? m->attached : m->device,
                         m->attached >= -1 ? m->segs : NULL, out);
    out->hash = t->hash;
    return 0;
}

void pinpool__tensor_desc(const pinpool__mtensor_t *t, const char *name, int32_t device,
                          const pinpool__mseg_t *segs, pinpool_tensor_t *out)
{
    memset(out, 0, sizeof(*out));
    out->name = name;
    out->dtype = (int32_t)t->dtype;
    out->ndim = t->ndim;
    memcpy(out->shape, t->shape, sizeof(out->shape));
    memcpy(out->strides, t->strides, sizeof(out->strides));
    out->segment = t->segment;
    out->offset = t->offset;
    out->nbytes = t->nbytes;
    out->device_id = device;
    if (segs != NULL && t->nbytes > 0)
        out->ptr = (void *)(uintptr_t)(segs[t->segment].addr + t->offset);
}

int pinpool_manifest_find(const pinpool_manifest_t *m, const char *name, uint32_t *index)
{
    size_t n;
    uint32_t lo = 0, hi;

    if (m == NULL || name == NULL)
        return PINPOOL_EINVAL;
    n = strlen(name);
    hi = m->nt;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const pinpool__mtensor_t *t = &m->t[m->by_name[mid]];
        int c = memcmp(m->names + t->name_off, name, t->name_len < n ? t->name_len : n);
        if (c == 0)
            c = t->name_len < n ? -1 : t->name_len > n;
        if (c == 0) {
            if (index != NULL)
                *index = m->by_name[mid];
            return 0;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (m->ctx != NULL)
        pinpool__fail(m->ctx, PINPOOL_ENOENT, "manifest '%s' version %" PRIu64 " has no tensor '%.200s'",
                      m->name, m->version, name);
    return PINPOOL_ENOENT;
}
