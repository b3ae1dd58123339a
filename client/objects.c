/*
 * objects.c - the calls of a context that need no fd-socket session: the
 * object API (pinpool_put/get/exists/remove; the bytes travel in the RPC),
 * GetPoolInfo and Ping.
 *
 * Owns: nothing but the translation between pinpool.h's types and the
 * daemon's messages, and the way a Put larger than a message goes: through a
 * slice (pinpool_alloc, a copy, pinpool_release under the key; an object
 * already there is removed first when the release finds the key taken).
 * Never: touches the context's slices or mappings (slices.c's), or records a
 * message other than through pinpool__fail.
 * Locking: none of its own; each call is one RPC (pinpool__call), a large Put
 * a few.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pinpool.pb-c.h"

/* Objects up to this size go in a Put without asking for the daemon's limit
 * (--max-message-size is at least 1 MiB). */
#define PUT_ALWAYS_FITS ((1u << 20) - 4096)
/* How often a large Put removes an object that another writer put under the
 * key between its removal and its release, before it gives up. */
#define PUT_RETRIES 3

/*
 * A Put of more than a message carries: a slice of len bytes, the bytes
 * copied in, the slice released under key.  Not atomic: a key that is taken
 * is removed first, so a reader may find no object for a moment between the
 * removal and the release (a Put that fits a message replaces at once); when
 * another writer's object lands there meanwhile, it is removed too (the last
 * release wins), at most PUT_RETRIES times.  On failure the slice is freed;
 * an old object under key may be gone by then (the message says so).
 */
static int put_by_slice(pinpool_ctx_t *ctx, const char *key, const void *data, uint64_t len,
                        uint64_t ttl_ms, uint64_t max)
{
    char a[32], b[32], msg[512];
    bool removed = false;
    pinpool_slice_t s;
    int rc;

    pinpool_format_size(len, a, sizeof(a));
    pinpool_format_size(max, b, sizeof(b));
    rc = pinpool_alloc(ctx, len, NULL, &s);
    if (rc != 0)
        return pinpool__fail(ctx, rc == PINPOOL_ECLOSED ? -EMSGSIZE : rc,
                             "put of '%s' (%s, more than the %s a message to the daemon may "
                             "carry, so through a slice): %s", key, a, b, pinpool__last_msg());
    memcpy(s.ptr, data, len);
    for (int attempt = 0;; attempt++) {
        rc = pinpool_release(ctx, s.id, key, ttl_ms);
        if (rc != PINPOOL_EEXIST || attempt == PUT_RETRIES)
            break;
        rc = pinpool_remove(ctx, key); /* the object it replaces */
        if (rc != 0 && rc != PINPOOL_ENOKEY)
            break;
        removed = removed || rc == 0;
    }
    if (rc == 0)
        return 0;
    snprintf(msg, sizeof(msg), "%s", pinpool__last_msg());
    pinpool_free(ctx, s.id, NULL);
    return pinpool__fail(ctx, rc, "put of '%s' (%s, through a slice: more than the %s a message "
                         "may carry): %s%s", key, a, b, msg,
                         removed ? "; the object that was under the key is removed" : "");
}

int pinpool_put(pinpool_ctx_t *ctx, const char *key, const void *data, uint64_t len,
                uint64_t ttl_ms)
{
    Pinpool__V1__PutRequest req = PINPOOL__V1__PUT_REQUEST__INIT;
    int rc = pinpool__check(ctx, false, key != NULL && (data != NULL || len == 0), "key and data");
    uint64_t max = 0;

    if (rc != 0)
        return rc;
    req.key = (char *)key;
    req.data.data = (uint8_t *)data;
    req.data.len = len;
    req.ttl_ms = ttl_ms;
    if (len > PUT_ALWAYS_FITS) {
        rc = pinpool__max_message(ctx, &max);
        if (rc != 0)
            return rc;
        if (protobuf_c_message_get_packed_size(&req.base) > max)
            return put_by_slice(ctx, key, data, len, ttl_ms, max);
    }
    return pinpool__call(ctx, PINPOOL__M_PUT, &req.base, NULL);
}

int pinpool_get(pinpool_ctx_t *ctx, const char *key, void *buf, uint64_t len, uint64_t *got)
{
    Pinpool__V1__GetRequest req = PINPOOL__V1__GET_REQUEST__INIT;
    Pinpool__V1__GetResponse *resp = NULL;
    int rc = pinpool__check(ctx, false, key != NULL && (buf != NULL || len == 0), "key and buf");

    req.key = (char *)key;
    if (rc == 0)
        rc = pinpool__call(ctx, PINPOOL__M_GET, &req.base, &resp);
    if (rc == -EMSGSIZE) /* the daemon's message names the size and the limit */
        return pinpool__fail(ctx, rc, "%s, copy it and pinpool_release it under the same key "
                             "(until then others find no object there: a Get is a read, an "
                             "acquire is not)", pinpool__last_msg());
    if (rc != 0)
        return rc;
    if (got != NULL)
        *got = resp->data.len;
    if (resp->data.len > len)
        rc = pinpool__fail(ctx, -ENOBUFS, "the object is %zu bytes; the buffer %" PRIu64,
                           resp->data.len, len);
    else if (resp->data.len > 0)
        memcpy(buf, resp->data.data, resp->data.len);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

int pinpool_exists(pinpool_ctx_t *ctx, const char *key)
{
    Pinpool__V1__ExistsRequest req = PINPOOL__V1__EXISTS_REQUEST__INIT;
    Pinpool__V1__ExistsResponse *resp = NULL;
    int rc = pinpool__check(ctx, false, key != NULL, "key");

    req.key = (char *)key;
    if (rc == 0)
        rc = pinpool__call(ctx, PINPOOL__M_EXISTS, &req.base, &resp);
    if (rc != 0)
        return rc;
    rc = resp->exists ? 1 : 0;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

int pinpool_remove(pinpool_ctx_t *ctx, const char *key)
{
    Pinpool__V1__RemoveRequest req = PINPOOL__V1__REMOVE_REQUEST__INIT;
    int rc = pinpool__check(ctx, false, key != NULL, "key");

    req.key = (char *)key;
    return rc != 0 ? rc : pinpool__call(ctx, PINPOOL__M_REMOVE, &req.base, NULL);
}

int pinpool_ping(pinpool_ctx_t *ctx)
{
    Pinpool__V1__PingRequest req = PINPOOL__V1__PING_REQUEST__INIT;
    int rc = pinpool__check(ctx, false, true, NULL);

    return rc != 0 ? rc : pinpool__call(ctx, PINPOOL__M_PING, &req.base, NULL);
}

/* The fields of GetPoolInfo's reply that pinpool.h mirrors one to one, by
 * name: N(field) a number, S(field) a string (a char array in pinpool.h). */
#define INFO_FIELDS(N, S)                                                                      \
    N(capacity_bytes) N(ready_bytes) N(used_bytes) N(free_bytes) N(largest_free_extent)        \
    N(chunk_size) N(num_chunks) N(num_slices) N(num_clients) N(fragmentation) S(host_backend)  \
    S(mode) N(num_kept) N(pin_seconds) N(cleaning_bytes) N(chunk_replacements) S(stopped_short)
#define DEVICE_FIELDS(N, S)                                                                    \
    N(device_id) S(name) N(capacity_bytes) N(used_bytes) N(free_bytes) N(largest_free_extent)  \
    N(num_slices)
#define GPU_FIELDS(N, S)                                                                       \
    N(device_id) S(role) N(device_pool_bytes) N(gpu_used_bytes) N(gpu_total_bytes)
#define USAGE_FIELDS(N, S) S(client_id) N(bytes) N(device_bytes) N(slices) N(pid) N(uid)
#define SPILL_FIELDS(N, S)                                                                     \
    S(tier) N(objects) N(objects_resident) N(objects_spilled) N(resident_bytes)                \
    N(spilled_bytes_now) N(spills) N(bytes_spilled) N(spill_failures) N(restores)              \
    N(bytes_restored) N(restore_failures) N(spill_gbps) N(restore_gbps) N(spill_avg_ms)        \
    N(restore_avg_ms) N(expired) N(low_watermark_bytes) S(last_error)
#define COPY_NUMBER(f) dst->f = src->f;
#define COPY_STRING(f) snprintf(dst->f, sizeof(dst->f), "%s", src->f);

int pinpool_pool_info(pinpool_ctx_t *ctx, pinpool_pool_info_t *out)
{
    Pinpool__V1__GetPoolInfoRequest req = PINPOOL__V1__GET_POOL_INFO_REQUEST__INIT;
    Pinpool__V1__GetPoolInfoResponse *r = NULL;
    int rc = pinpool__check(ctx, false, true, NULL);

    if (rc == 0)
        rc = pinpool__call(ctx, PINPOOL__M_INFO, &req.base, &r);
    if (rc != 0)
        return rc;
    memset(out, 0, sizeof(*out));
    if (r->n_clients > 0) {
        out->usage = calloc(r->n_clients, sizeof(*out->usage));
        if (out->usage == NULL) {
            protobuf_c_message_free_unpacked(&r->base, NULL);
            return pinpool__fail(ctx, -ENOMEM, "out of memory");
        }
    }
    {
        const Pinpool__V1__GetPoolInfoResponse *src = r;
        pinpool_pool_info_t *dst = out;
        INFO_FIELDS(COPY_NUMBER, COPY_STRING)
    }
    out->num_devices = (uint32_t)(r->n_devices < PINPOOL_MAX_DEVICES ? r->n_devices : PINPOOL_MAX_DEVICES);
    for (uint32_t i = 0; i < out->num_devices; i++) {
        const Pinpool__V1__DevicePoolInfo *src = r->devices[i];
        pinpool_device_info_t *dst = &out->devices[i];
        DEVICE_FIELDS(COPY_NUMBER, COPY_STRING)
    }
    out->num_gpus = (uint32_t)(r->n_gpus < PINPOOL_MAX_DEVICES ? r->n_gpus : PINPOOL_MAX_DEVICES);
    for (uint32_t i = 0; i < out->num_gpus; i++) {
        const Pinpool__V1__GpuFootprint *src = r->gpus[i];
        pinpool_gpu_info_t *dst = &out->gpus[i];
        GPU_FIELDS(COPY_NUMBER, COPY_STRING)
    }
    out->num_usage = (uint32_t)r->n_clients;
    for (size_t i = 0; i < r->n_clients; i++) {
        const Pinpool__V1__ClientUsage *src = r->clients[i];
        pinpool_client_usage_t *dst = &out->usage[i];
        USAGE_FIELDS(COPY_NUMBER, COPY_STRING)
    }
    if (r->spill != NULL) {
        const Pinpool__V1__SpillInfo *src = r->spill;
        pinpool_spill_info_t *dst = &out->spill;
        SPILL_FIELDS(COPY_NUMBER, COPY_STRING)
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

void pinpool_pool_info_free(pinpool_pool_info_t *info)
{
    if (info != NULL) {
        free(info->usage);
        info->usage = NULL;
        info->num_usage = 0;
    }
}
