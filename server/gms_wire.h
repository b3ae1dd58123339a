/*
 * gms_wire.h - the wire of NVIDIA Dynamo's GPU Memory Service (GMS) as its
 * gpu_memory_service package speaks it (common/protocol/wire.py and
 * messages.py): a frame is a 4-byte big-endian length and one msgpack
 * message of that length; a message is a map whose "type" names it
 * ("allocate_request") and whose other keys are its fields (msgspec's tagged
 * structs).  A descriptor rides on a response by SCM_RIGHTS (gms.c sends it).
 *
 * Owns: checking and decoding one request frame into a gms_req_t (every
 * length, count and type checked against the bounds below before msgpack-c
 * is asked to unpack anything), encoding responses (msgpack-c's packer) with
 * their length prefix, and the SHA-256 of the layout hash.
 * Never: reads or writes a socket, keeps state between frames, allocates
 * more than a constant times the frame's length for a frame.
 * Threads: none of its own; every call works on the caller's buffers only.
 */
#ifndef PINPOOL_SRV_GMS_WIRE_H
#define PINPOOL_SRV_GMS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#define GMS_HEADER 4                 /* the big-endian length in front of a message */
#define GMS_MAX_FRAME (1u << 20)     /* the longest request we read (metadata values included) */
#define GMS_MAX_FIELDS 32            /* keys in one request map */
#define GMS_MAX_TAG 64               /* an allocation's tag */
#define GMS_MAX_KEY 1024             /* a metadata key or list prefix */
#define GMS_ID_LEN 36                /* an allocation id: a UUID in its 8-4-4-4-12 form */
#define GMS_MAX_VALUE (256u << 10)   /* one metadata value */

/* The requests pinpool answers (messages.py's *Request classes by tag).  GMS
 * renamed some: export_request, free_request and clear_all_request of its
 * earlier messages.py are export_allocation_request and free_allocation_request
 * later (clear_all went); both names are understood. */
typedef enum gms_req_type {
    GMS_HANDSHAKE, GMS_COMMIT, GMS_GET_LOCK_STATE, GMS_GET_ALLOCATION_STATE, GMS_ALLOCATE,
    GMS_EXPORT, GMS_GET_ALLOCATION, GMS_LIST_ALLOCATIONS, GMS_FREE, GMS_META_PUT, GMS_META_GET,
    GMS_META_DELETE, GMS_META_LIST, GMS_GET_HASH, GMS_GET_RUNTIME_STATE, GMS_CLEAR_ALL,
    GMS_NREQ
} gms_req_type_t;

/* The lock a handshake asks for (RequestedLockType). */
typedef enum gms_lock { GMS_LOCK_RW, GMS_LOCK_RO, GMS_LOCK_RW_OR_RO } gms_lock_t;

/* One decoded request; only the fields of its type are set.  value points
 * into the frame that was decoded (valid while that frame is). */
typedef struct gms_req {
    gms_req_type_t type;
    gms_lock_t lock;
    bool has_timeout, has_tag;
    bool legacy; /* sent by its earlier name (export_request, free_request): answer in kind */
    int64_t timeout_ms;
    uint64_t size, offset;
    char tag[GMS_MAX_TAG + 1];
    char id[GMS_ID_LEN + 1];
    char key[GMS_MAX_KEY + 1]; /* metadata key, or the list's prefix */
    const uint8_t *value;
    size_t value_len;
} gms_req_t;

/* The request's class name in messages.py ("AllocateRequest"), for errors. */
const char *gms_req_name(gms_req_type_t t);

/* The length in a frame's header (4 bytes at p). */
uint32_t gms_frame_len(const uint8_t *p);

/*
 * Decode the message msg[0..len) (the frame less its header) into *out.
 * 0, or -1 with why (for an ErrorResponse): not msgpack, not a map, a nested
 * value, a key or field of the wrong type or too long, an unknown or missing
 * "type", a required field missing.  Unknown fields are ignored (as msgspec
 * does).  Bounded work: nothing is unpacked before the whole frame was
 * walked and every count fits in the bytes that are there.
 */
int gms_decode(const uint8_t *msg, size_t len, gms_req_t *out, char *why, size_t whylen);

/* A response being built: gms_out_begin (map of nfields + "type"), the
 * fields, gms_out_frame to get the frame (length prefix filled in). */
typedef struct gms_out {
    msgpack_sbuffer buf;
    msgpack_packer pk;
} gms_out_t;

void gms_out_begin(gms_out_t *o, const char *type, uint32_t nfields);
void gms_out_str(gms_out_t *o, const char *key, const char *val);
void gms_out_u64(gms_out_t *o, const char *key, uint64_t val);
void gms_out_bool(gms_out_t *o, const char *key, bool val);
void gms_out_nil(gms_out_t *o, const char *key);
void gms_out_bin(gms_out_t *o, const char *key, const uint8_t *val, size_t len);
/* A key whose value the caller packs next (an array, a map). */
void gms_out_key(gms_out_t *o, const char *key);
/* The frame: *len bytes at the returned pointer, which the caller frees. */
uint8_t *gms_out_frame(gms_out_t *o, size_t *len);
/* An ErrorResponse{error, code} frame in one call. */
uint8_t *gms_error_frame(const char *error, size_t *len);

/* SHA-256, streamed (the layout hash is hashlib.sha256's hexdigest), by
 * OpenSSL's libcrypto (which gRPC links already).  init: 0 or -ENOMEM;
 * hex: the digest as 64 lowercase hex digits and a NUL, and frees s's state
 * (0, or -EIO if libcrypto failed: hex is then ""). */
typedef struct gms_sha256 {
    struct evp_md_ctx_st *ctx;
    bool failed;
} gms_sha256_t;
int gms_sha256_init(gms_sha256_t *s);
void gms_sha256_update(gms_sha256_t *s, const void *p, size_t len);
int gms_sha256_hex(gms_sha256_t *s, char hex[65]);

#endif
