/*
 * gms_wire.c - GMS frames and messages (see gms_wire.h).
 *
 * A request is walked byte by byte first (walk_scalar): a map of at most
 * GMS_MAX_FIELDS keys whose keys are strings and whose values are scalars
 * (nil, bool, integer, float, str, bin), every length inside the frame.  No
 * GMS request carries a nested value, so an array, map or ext is refused
 * before msgpack-c unpacks anything: its unpacker sizes an array from the
 * count in the header, which a hostile frame could set to four billion.
 * Locking: none (no shared state).
 */
#include "gms_wire.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const req_tags[GMS_NREQ] = {
    [GMS_HANDSHAKE] = "handshake_request",
    [GMS_COMMIT] = "commit_request",
    [GMS_GET_LOCK_STATE] = "get_lock_state_request",
    [GMS_GET_ALLOCATION_STATE] = "get_allocation_state_request",
    [GMS_ALLOCATE] = "allocate_request",
    [GMS_EXPORT] = "export_allocation_request",
    [GMS_GET_ALLOCATION] = "get_allocation_request",
    [GMS_LIST_ALLOCATIONS] = "list_allocations_request",
    [GMS_FREE] = "free_allocation_request",
    [GMS_META_PUT] = "metadata_put_request",
    [GMS_META_GET] = "metadata_get_request",
    [GMS_META_DELETE] = "metadata_delete_request",
    [GMS_META_LIST] = "metadata_list_request",
    [GMS_GET_HASH] = "get_memory_layout_hash_request",
    [GMS_GET_RUNTIME_STATE] = "get_runtime_state_request",
    [GMS_CLEAR_ALL] = "clear_all_request",
};

/* The earlier names of renamed requests (gms_wire.h). */
static const struct {
    const char *tag;
    gms_req_type_t type;
} legacy_tags[] = {
    {"export_request", GMS_EXPORT},
    {"free_request", GMS_FREE},
};

static const char *const req_names[GMS_NREQ] = {
    [GMS_HANDSHAKE] = "HandshakeRequest",
    [GMS_COMMIT] = "CommitRequest",
    [GMS_GET_LOCK_STATE] = "GetLockStateRequest",
    [GMS_GET_ALLOCATION_STATE] = "GetAllocationStateRequest",
    [GMS_ALLOCATE] = "AllocateRequest",
    [GMS_EXPORT] = "ExportAllocationRequest",
    [GMS_GET_ALLOCATION] = "GetAllocationRequest",
    [GMS_LIST_ALLOCATIONS] = "ListAllocationsRequest",
    [GMS_FREE] = "FreeAllocationRequest",
    [GMS_META_PUT] = "MetadataPutRequest",
    [GMS_META_GET] = "MetadataGetRequest",
    [GMS_META_DELETE] = "MetadataDeleteRequest",
    [GMS_META_LIST] = "MetadataListRequest",
    [GMS_GET_HASH] = "GetStateHashRequest",
    [GMS_GET_RUNTIME_STATE] = "GetRuntimeStateRequest",
    [GMS_CLEAR_ALL] = "ClearAllRequest",
};

const char *gms_req_name(gms_req_type_t t)
{
    return (unsigned)t < GMS_NREQ ? req_names[t] : "?";
}

uint32_t gms_frame_len(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;

    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Bytes of the scalar at p (n left), or 0: truncated, a container or ext. */
static size_t walk_scalar(const uint8_t *p, size_t n)
{
    uint8_t b;
    uint64_t len;
    size_t hdr;

    if (n == 0)
        return 0;
    b = p[0];
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return 1;
    if (b >= 0xa0 && b <= 0xbf) {
        hdr = 1;
        len = b & 0x1f;
    } else {
        switch (b) {
        case 0xcc: case 0xd0: return n >= 2 ? 2 : 0;
        case 0xcd: case 0xd1: return n >= 3 ? 3 : 0;
        case 0xce: case 0xd2: case 0xca: return n >= 5 ? 5 : 0;
        case 0xcf: case 0xd3: case 0xcb: return n >= 9 ? 9 : 0;
        case 0xc4: case 0xd9: hdr = 2; break;
        case 0xc5: case 0xda: hdr = 3; break;
        case 0xc6: case 0xdb: hdr = 5; break;
        default: return 0; /* 0x80-0x9f, 0xdc-0xdf: containers; 0xc7-0xc9, 0xd4-0xd8: ext */
        }
        if (n < hdr)
            return 0;
        len = be(p + 1, hdr - 1);
    }
    if (len > n - hdr)
        return 0;
    return hdr + (size_t)len;
}

/* The map header at p: its count into *count and its length, or 0. */
static size_t walk_map(const uint8_t *p, size_t n, uint32_t *count)
{
    if (n >= 1 && p[0] >= 0x80 && p[0] <= 0x8f) {
        *count = p[0] & 0x0f;
        return 1;
    }
    if (n >= 3 && p[0] == 0xde) {
        *count = (uint32_t)be(p + 1, 2);
        return 3;
    }
    if (n >= 5 && p[0] == 0xdf) {
        *count = (uint32_t)be(p + 1, 4);
        return 5;
    }
    return 0;
}

static bool key_is(const msgpack_object *k, const char *name)
{
    size_t l = strlen(name);

    return k->via.str.size == l && memcmp(k->via.str.ptr, name, l) == 0;
}

/* A string field into dst (max bytes at most): 0, or -1 with why. */
static int get_str(const msgpack_object *v, const char *field, char *dst, size_t max, char *why,
                   size_t whylen)
{
    if (v->type != MSGPACK_OBJECT_STR) {
        snprintf(why, whylen, "%s: expected `str`", field);
        return -1;
    }
    if (v->via.str.size > max) {
        snprintf(why, whylen, "%s: longer than %zu bytes", field, max);
        return -1;
    }
    if (memchr(v->via.str.ptr, '\0', v->via.str.size) != NULL) {
        snprintf(why, whylen, "%s: contains a NUL byte", field);
        return -1;
    }
    memcpy(dst, v->via.str.ptr, v->via.str.size);
    dst[v->via.str.size] = '\0';
    return 0;
}

/* A non-negative integer field: 0, or -1 with why. */
static int get_uint(const msgpack_object *v, const char *field, uint64_t *dst, char *why,
                    size_t whylen)
{
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *dst = v->via.u64;
        return 0;
    }
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        snprintf(why, whylen, "%s must be >= 0, got %" PRId64, field, v->via.i64);
    else
        snprintf(why, whylen, "%s: expected `int`", field);
    return -1;
}

enum { F_LOCK = 1, F_SIZE = 2, F_ID = 4, F_KEY = 8, F_OFFSET = 16, F_VALUE = 32 };

static int fields(const msgpack_object_map *m, gms_req_t *r, unsigned *seen, char *why,
                  size_t whylen)
{
    char lock[16];

    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key, *v = &m->ptr[i].val;
        int rc = 0;

        if (key_is(k, "lock_type")) {
            rc = get_str(v, "lock_type", lock, sizeof(lock) - 1, why, whylen);
            if (rc == 0 && strcmp(lock, "rw") == 0)
                r->lock = GMS_LOCK_RW;
            else if (rc == 0 && strcmp(lock, "ro") == 0)
                r->lock = GMS_LOCK_RO;
            else if (rc == 0 && strcmp(lock, "rw_or_ro") == 0)
                r->lock = GMS_LOCK_RW_OR_RO;
            else if (rc == 0) {
                snprintf(why, whylen, "lock_type: expected one of 'rw', 'ro', 'rw_or_ro'");
                rc = -1;
            }
            *seen |= F_LOCK;
        } else if (key_is(k, "timeout_ms")) {
            uint64_t t = 0;
            if (v->type != MSGPACK_OBJECT_NIL) {
                rc = get_uint(v, "timeout_ms", &t, why, whylen);
                r->has_timeout = rc == 0;
                r->timeout_ms = t > INT64_MAX ? INT64_MAX : (int64_t)t;
            }
        } else if (key_is(k, "size")) {
            rc = get_uint(v, "size", &r->size, why, whylen);
            *seen |= F_SIZE;
        } else if (key_is(k, "tag")) {
            if (v->type != MSGPACK_OBJECT_NIL) {
                rc = get_str(v, "tag", r->tag, GMS_MAX_TAG, why, whylen);
                r->has_tag = true;
            }
        } else if (key_is(k, "allocation_id")) {
            rc = get_str(v, "allocation_id", r->id, GMS_ID_LEN, why, whylen);
            *seen |= F_ID;
        } else if (key_is(k, "key") || key_is(k, "prefix")) {
            rc = get_str(v, key_is(k, "key") ? "key" : "prefix", r->key, GMS_MAX_KEY, why,
                         whylen);
            *seen |= F_KEY;
        } else if (key_is(k, "offset_bytes")) {
            rc = get_uint(v, "offset_bytes", &r->offset, why, whylen);
            *seen |= F_OFFSET;
        } else if (key_is(k, "value")) {
            if (v->type == MSGPACK_OBJECT_BIN) {
                r->value = (const uint8_t *)v->via.bin.ptr;
                r->value_len = v->via.bin.size;
            } else if (v->type == MSGPACK_OBJECT_STR) {
                r->value = (const uint8_t *)v->via.str.ptr;
                r->value_len = v->via.str.size;
            } else {
                snprintf(why, whylen, "value: expected `bytes`");
                rc = -1;
            }
            if (rc == 0 && r->value_len > GMS_MAX_VALUE) {
                snprintf(why, whylen, "value: longer than %u bytes", GMS_MAX_VALUE);
                rc = -1;
            }
            *seen |= F_VALUE;
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

int gms_decode(const uint8_t *msg, size_t len, gms_req_t *out, char *why, size_t whylen)
{
    static const unsigned need[GMS_NREQ] = {
        [GMS_HANDSHAKE] = F_LOCK, [GMS_ALLOCATE] = F_SIZE, [GMS_EXPORT] = F_ID,
        [GMS_GET_ALLOCATION] = F_ID, [GMS_FREE] = F_ID,
        [GMS_META_PUT] = F_KEY | F_ID | F_OFFSET | F_VALUE, [GMS_META_GET] = F_KEY,
        [GMS_META_DELETE] = F_KEY,
    };
    static const char *const need_names[] = {"lock_type", "size", "allocation_id", "key",
                                             "offset_bytes", "value"};
    msgpack_unpacked u;
    const msgpack_object_map *m;
    size_t off, step;
    uint32_t count;
    unsigned seen = 0;
    int rc = -1, type = -1;

    memset(out, 0, sizeof(*out));
    off = walk_map(msg, len, &count);
    if (off == 0) {
        snprintf(why, whylen, "Expected a msgpack map");
        return -1;
    }
    if (count > GMS_MAX_FIELDS) {
        snprintf(why, whylen, "a message of %" PRIu32 " fields (at most %d)", count,
                 GMS_MAX_FIELDS);
        return -1;
    }
    for (uint32_t i = 0; i < 2 * count; i++, off += step) {
        step = walk_scalar(msg + off, len - off);
        if (step == 0 || (i % 2 == 0 && !((msg[off] >= 0xa0 && msg[off] <= 0xbf) ||
                                          (msg[off] >= 0xd9 && msg[off] <= 0xdb)))) {
            snprintf(why, whylen, "malformed message: field %u is %s", i / 2,
                     step == 0 ? "truncated, nested or an extension type" : "not named by a str");
            return -1;
        }
    }
    if (off != len) {
        snprintf(why, whylen, "malformed message: %zu bytes after the map", len - off);
        return -1;
    }
    msgpack_unpacked_init(&u);
    off = 0;
    if (msgpack_unpack_next(&u, (const char *)msg, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        snprintf(why, whylen, "malformed message: msgpack-c cannot unpack it");
        goto out;
    }
    m = &u.data.via.map;
    for (uint32_t i = 0; i < m->size && type < 0; i++) {
        if (!key_is(&m->ptr[i].key, "type"))
            continue;
        if (m->ptr[i].val.type != MSGPACK_OBJECT_STR)
            break;
        for (int t = 0; t < GMS_NREQ; t++)
            if (key_is(&m->ptr[i].val, req_tags[t]))
                type = t;
        for (size_t t = 0; t < sizeof(legacy_tags) / sizeof(legacy_tags[0]); t++)
            if (key_is(&m->ptr[i].val, legacy_tags[t].tag)) {
                type = (int)legacy_tags[t].type;
                out->legacy = true;
            }
        if (type < 0) {
            snprintf(why, whylen, "Invalid value '%.*s' - at `$.type`",
                     (int)(m->ptr[i].val.via.str.size > 64 ? 64 : m->ptr[i].val.via.str.size),
                     m->ptr[i].val.via.str.ptr);
            goto out;
        }
    }
    if (type < 0) {
        snprintf(why, whylen, "Object missing required field `type`");
        goto out;
    }
    out->type = (gms_req_type_t)type; /* out->legacy is set above */
    if (fields(m, out, &seen, why, whylen) != 0)
        goto out;
    for (unsigned b = 0; b < 6; b++)
        if ((need[type] & (1u << b)) && !(seen & (1u << b))) {
            snprintf(why, whylen, "%s missing required field `%s`", req_names[type],
                     need_names[b]);
            goto out;
        }
    if (!out->has_tag && type == GMS_ALLOCATE)
        snprintf(out->tag, sizeof(out->tag), "default");
    rc = 0;
out:
    if (rc == 0 && out->value != NULL) {
        /* value points into msg (msgpack-c references, not copies, str and bin) */
        if (out->value < msg || out->value + out->value_len > msg + len)
            rc = -1, snprintf(why, whylen, "internal: value outside the frame");
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* ---- responses ----------------------------------------------------------------------- */

static void pk_str(msgpack_packer *pk, const char *s)
{
    size_t l = strlen(s);

    msgpack_pack_str(pk, l);
    msgpack_pack_str_body(pk, s, l);
}

void gms_out_begin(gms_out_t *o, const char *type, uint32_t nfields)
{
    static const char zero[GMS_HEADER];

    msgpack_sbuffer_init(&o->buf);
    msgpack_packer_init(&o->pk, &o->buf, msgpack_sbuffer_write);
    msgpack_sbuffer_write(&o->buf, zero, sizeof(zero));
    msgpack_pack_map(&o->pk, nfields + 1);
    pk_str(&o->pk, "type");
    pk_str(&o->pk, type);
}

void gms_out_key(gms_out_t *o, const char *key)
{
    pk_str(&o->pk, key);
}

void gms_out_str(gms_out_t *o, const char *key, const char *val)
{
    pk_str(&o->pk, key);
    pk_str(&o->pk, val);
}

void gms_out_u64(gms_out_t *o, const char *key, uint64_t val)
{
    pk_str(&o->pk, key);
    msgpack_pack_uint64(&o->pk, val);
}

void gms_out_bool(gms_out_t *o, const char *key, bool val)
{
    pk_str(&o->pk, key);
    if (val)
        msgpack_pack_true(&o->pk);
    else
        msgpack_pack_false(&o->pk);
}

void gms_out_nil(gms_out_t *o, const char *key)
{
    pk_str(&o->pk, key);
    msgpack_pack_nil(&o->pk);
}

void gms_out_bin(gms_out_t *o, const char *key, const uint8_t *val, size_t len)
{
    pk_str(&o->pk, key);
    msgpack_pack_bin(&o->pk, len);
    msgpack_pack_bin_body(&o->pk, val, len);
}

uint8_t *gms_out_frame(gms_out_t *o, size_t *len)
{
    uint8_t *p = (uint8_t *)o->buf.data;
    size_t body;

    if (p == NULL) { /* msgpack_sbuffer_write failed to allocate */
        *len = 0;
        return NULL;
    }
    body = o->buf.size - GMS_HEADER;
    p[0] = (uint8_t)(body >> 24);
    p[1] = (uint8_t)(body >> 16);
    p[2] = (uint8_t)(body >> 8);
    p[3] = (uint8_t)body;
    *len = o->buf.size;
    return (uint8_t *)msgpack_sbuffer_release(&o->buf);
}

uint8_t *gms_error_frame(const char *error, size_t *len)
{
    gms_out_t o;

    gms_out_begin(&o, "error_response", 2);
    gms_out_str(&o, "error", error);
    gms_out_u64(&o, "code", 0);
    return gms_out_frame(&o, len);
}

/* ---- SHA-256 (libcrypto) ---------------------------------------------------------------- */

int gms_sha256_init(gms_sha256_t *s)
{
    s->ctx = EVP_MD_CTX_new();
    s->failed = s->ctx == NULL || EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) != 1;
    if (s->ctx == NULL)
        return -ENOMEM;
    return 0;
}

void gms_sha256_update(gms_sha256_t *s, const void *p, size_t len)
{
    if (!s->failed && EVP_DigestUpdate(s->ctx, p, len) != 1)
        s->failed = true;
}

int gms_sha256_hex(gms_sha256_t *s, char hex[65])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    if (!s->failed && (EVP_DigestFinal_ex(s->ctx, d, &n) != 1 || n != 32))
        s->failed = true;
    EVP_MD_CTX_free(s->ctx);
    s->ctx = NULL;
    hex[0] = '\0';
    if (s->failed)
        return -EIO;
    for (unsigned i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return 0;
}
