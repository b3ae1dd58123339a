/*
 * manifest_int.h - what the files of tensor manifests share: manifest.c (the
 * format: encode, parse, check; dtypes; hashing), manifest_names.c (keys, the
 * name record, the registry), manifest_publish.c, manifest_read.c and
 * manifest_versions.c (the calls to the daemon).  Not installed.
 */
#ifndef PINPOOL_CLIENT_MANIFEST_INT_H
#define PINPOOL_CLIENT_MANIFEST_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pinpool.h"
#ifdef PINPOOL_HAVE_CUDA
#include <cuda.h>
#endif

#define PINPOOL__MAN_MAGIC "PPWMANIF"
#define PINPOOL__MAN_HDR 96u
#define PINPOOL__MAN_SEG 64u
#define PINPOOL__MAN_TENSOR 176u
#define PINPOOL__MAN_KEY 48u        /* a segment's key field, NUL-padded */
#define PINPOOL__MAN_PART (1u << 20) /* a manifest is written in objects of at most this */
#define PINPOOL__HASH_NONE 0u
#define PINPOOL__HASH_XXH3 1u

/* A tensor as the format holds it (names apart). */
typedef struct pinpool__mtensor {
    uint32_t name_off, name_len;
    uint32_t dtype, ndim, segment, flags;
    uint64_t offset, nbytes, hash;
    int64_t shape[PINPOOL_MANIFEST_MAX_DIMS];
    int64_t strides[PINPOOL_MANIFEST_MAX_DIMS];
} pinpool__mtensor_t;

/* How a reader holds a segment (manifest_store.c). */
enum { PINPOOL__SEG_NONE, PINPOOL__SEG_KEPT, PINPOOL__SEG_ACQUIRED, PINPOOL__SEG_COPY };

typedef struct pinpool__mseg {
    uint64_t size;
    char key[PINPOOL__MAN_KEY]; /* NUL-terminated */
    int held;                   /* PINPOOL__SEG_* */
    uint64_t slice_id;          /* KEPT, ACQUIRED */
    uint64_t addr;              /* where its bytes are here: CPU address or CUdeviceptr */
} pinpool__mseg_t;

struct pinpool_manifest {
    pinpool_ctx_t *ctx; /* NULL: parsed from bytes, not attachable */
    uint8_t *buf;       /* the bytes as read (owned) */
    size_t len;
    uint64_t version, created_ns, content_hash;
    uint32_t nseg, nt, hash_algo, placement;
    int32_t device;
    char name[PINPOOL_MANIFEST_NAME_MAX + 1];
    const char *meta; /* into buf */
    uint32_t meta_len;
    pinpool__mseg_t *segs;
    pinpool__mtensor_t *t;
    char *names;       /* every tensor name, NUL-terminated, at names + t[i].name_off */
    uint32_t *by_name; /* tensor indices sorted by name */
    int32_t attached;  /* -2: not attached; else the device the pointers are on */
    int32_t copy_device; /* a host manifest copied to this GPU; -1 none */
    bool marked;         /* a reader marker is put for this attach */
};

/* Parse len bytes at buf into m (zeroed by the caller); m->buf is not set.
 * 0, -EBADMSG with err, or -ENOMEM.  On failure m holds nothing to free. */
int pinpool__manifest_parse(const uint8_t *buf, size_t len, struct pinpool_manifest *m, char *err,
                            size_t errlen);
/* Free what parse made in m (not m itself, not m->buf). */
void pinpool__manifest_clear(struct pinpool_manifest *m);

/* What encode needs: names[i] for tensor i (name_off/name_len are filled in). */
typedef struct pinpool__menc {
    const char *name;
    const char *meta;
    uint32_t meta_len;
    uint64_t version, created_ns;
    int32_t device;
    uint32_t placement, hash_algo;
    uint32_t nseg, nt;
    const pinpool__mseg_t *segs;
    pinpool__mtensor_t *t;
    const char *const *names;
} pinpool__menc_t;
/* The manifest's bytes in *out (malloc'd; the caller frees) and their length.
 * 0 or -ENOMEM / PINPOOL_EINVAL (a string too long for the format). */
int pinpool__manifest_encode(const pinpool__menc_t *in, uint8_t **out, size_t *len);

/* Elements' bytes and the span [0, *span) shape and strides reach (0 for an
 * empty tensor).  false when they overflow 64 bits. */
bool pinpool__tensor_span(int dtype, uint32_t ndim, const int64_t *shape, const int64_t *strides,
                          uint64_t *span);
/* Row-major strides of shape, in elements. */
void pinpool__contiguous_strides(uint32_t ndim, const int64_t *shape, int64_t *strides);
/* *out describes tensor t named name on device; its ptr is into segs (NULL:
 * not mapped here, ptr stays NULL).  The hash is left 0. */
void pinpool__tensor_desc(const pinpool__mtensor_t *t, const char *name, int32_t device,
                          const pinpool__mseg_t *segs, pinpool_tensor_t *out);

/* One job of pinpool__hash_many: nbytes at addr (a CPU address, or a
 * CUdeviceptr on device when device >= 0). */
typedef struct pinpool__hjob {
    uint64_t addr, nbytes;
    uint64_t hash; /* out */
} pinpool__hjob_t;
/*
 * XXH3-64 of every job on up to threads threads (0: the cores, at most 8),
 * largest first.  device >= 0: the bytes are on that GPU and are read back
 * through host staging buffers (a pinned pool slice of ctx when the daemon's
 * memory is pinned, else malloc) in pieces of 64 MiB.  0, or an error with
 * its message on ctx (PINPOOL_ECUDA, -ENOMEM).
 */
int pinpool__hash_many(pinpool_ctx_t *ctx, int32_t device, pinpool__hjob_t *jobs, uint32_t n,
                       uint32_t threads);
/* XXH3-64 of a byte string (name hashes for kept tags). */
uint64_t pinpool__xxh3(const void *p, size_t n);
/* The content hash of tensors t[0..nt) with names names[i]. */
uint64_t pinpool__content_hash(const pinpool__mtensor_t *t, uint32_t nt, const char *const *names);

/* 0 when name is a valid manifest name, else PINPOOL_EINVAL with why in msg. */
int pinpool__manifest_check_name(const char *name, char *msg, size_t msglen);

/* ---- where manifests live (manifest_names.c) ------------------------------------------- */

#define PINPOOL__KEY_MAX 512
#define PINPOOL__PREFIX "weights:"
#define PINPOOL__REC_COMMITTED 1u
#define PINPOOL__REC_PENDING 2u
#define PINPOOL__ACQUIRE_WAIT_MS 10000

static inline uint32_t pinpool__rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t pinpool__rd64(const uint8_t *p)
{
    return (uint64_t)pinpool__rd32(p) | (uint64_t)pinpool__rd32(p + 4) << 32;
}

static inline void pinpool__wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void pinpool__wr64(uint8_t *p, uint64_t v)
{
    pinpool__wr32(p, (uint32_t)v);
    pinpool__wr32(p + 4, (uint32_t)(v >> 32));
}

/* "weights:NAME" + "@V" (v > 0) + suffix, into buf (PINPOOL__KEY_MAX bytes). */
void pinpool__mkey(char *buf, const char *name, uint64_t v, const char *suffix);
/* The kept tag of segment seg of version v: "wt:<XXH3 of name>.<v hex>.<seg>". */
void pinpool__seg_tag(char *buf, const char *name, uint64_t v, uint32_t seg);
/* The object key of a released (SPILLABLE) segment: "weights:" + its tag. */
void pinpool__released_key(char *buf, const char *tag);
/* Get key into a new buffer of at most max bytes: 0 and *out / *len (the caller
 * frees *out), or the error (PINPOOL_ENOKEY: absent; -EMSGSIZE: larger than max). */
int pinpool__get_obj(pinpool_ctx_t *ctx, const char *key, size_t max, uint8_t **out, size_t *len);
/* Remove key; absent is fine (0); another error is returned. */
int pinpool__remove_quiet(pinpool_ctx_t *ctx, const char *key);
#ifdef PINPOOL_HAVE_CUDA
/* Make device's primary context current, the caller's saved in *saved. */
int pinpool__cuda_enter(pinpool_ctx_t *ctx, int32_t device, CUcontext *saved);
void pinpool__cuda_leave(CUcontext saved);
#endif

/* The clients GetPoolInfo lists (sessions and kept slices' holders). */
typedef struct clients {
    pinpool_pool_info_t info;
    bool have;
} clients_t;

typedef struct rec_entry {
    uint64_t version;
    uint32_t nseg;  /* segments (known at commit; 0 before) */
    uint16_t state; /* REC_* */
    uint16_t parts; /* objects the manifest is written in (known at commit; 0 before) */
} rec_entry_t;

typedef struct name_rec {
    bool found;
    char slot;    /* 'a' or 'b': where the newest whole copy is */
    uint64_t gen; /* its generation */
    uint64_t current;
    uint64_t top; /* the highest version ever begun: versions are never reused */
    uint32_t n;
    rec_entry_t e[PINPOOL_MANIFEST_MAX_VERSIONS];
} name_rec_t;

int pinpool__clients_read(pinpool_ctx_t *ctx, clients_t *c);
void pinpool__clients_free(clients_t *c);
/* A client with a session (a live process), not a kept slice's holder. */
bool pinpool__is_session(const pinpool_client_usage_t *u);
/* The session client_id in c, or NULL. */
const pinpool_client_usage_t *pinpool__live(const clients_t *c, const char *client_id);
/* The version and segment of kept tag client_id ("kept:wt:...") of name_hash;
 * false for another tag. */
bool pinpool__tag_of(const char *client_id, uint64_t name_hash, uint64_t *v, uint32_t *seg);

/* Map the slice kept under tag here, once per context (later users share it;
 * cpu: for the CPU too).  0 with *addr, *size (0 when shared: checked at the
 * first) and *device, or the error. */
int pinpool__kept_get(pinpool_ctx_t *ctx, const char *tag, bool cpu, uint64_t *addr,
                      uint64_t *size, int32_t *device);
/* One user is done (the last one detaches); free_it: free the slice now. */
void pinpool__kept_put(pinpool_ctx_t *ctx, const char *tag, bool free_it);
/* Free the slice kept under tag (through the registry when mapped here, else
 * attached first); 0 also when there is none. */
int pinpool__free_kept(pinpool_ctx_t *ctx, const char *tag);
/* A reader marker object under key, counted per context; put by the first
 * user, removed by the last (and at pinpool_close). */
int pinpool__marker_get(pinpool_ctx_t *ctx, const char *key);
void pinpool__marker_put(pinpool_ctx_t *ctx, const char *key);

/* Read name's record: 0 (r->found false when there is none), or an error. */
int pinpool__rec_read(pinpool_ctx_t *ctx, const char *name, name_rec_t *r);
/* Write r as the next generation, into the slot that does not hold the newest. */
int pinpool__rec_write(pinpool_ctx_t *ctx, const char *name, name_rec_t *r);
rec_entry_t *pinpool__rec_find(name_rec_t *r, uint64_t v);
void pinpool__rec_del(name_rec_t *r, uint64_t v);

/* ---- versions (manifest_versions.c) ------------------------------------------------------- */

/* Remove the manifest objects of version v: parts of them when known, else up
 * to the first one missing (a dead publisher wrote a prefix). */
void pinpool__remove_parts(pinpool_ctx_t *ctx, const char *name, uint64_t v, uint32_t parts);
/* Is version v being published by a session in c?  *who: its client id. */
bool pinpool__publisher_alive(pinpool_ctx_t *ctx, const char *name, uint64_t v,
                              const clients_t *c, char *who, size_t wholen);
/* Forget version v in name's record (read again first). */
void pinpool__unrecord(pinpool_ctx_t *ctx, const char *name, uint64_t v);

#endif
