/*
 * manifest_int.h - what the two halves of tensor manifests share: manifest.c
 * (the format: encode, parse, check; dtypes; hashing) and manifest_store.c
 * (publish, open, attach, versions: the calls to the daemon).  Not installed.
 */
#ifndef PINPOOL_CLIENT_MANIFEST_INT_H
#define PINPOOL_CLIENT_MANIFEST_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pinpool.h"

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

#endif
