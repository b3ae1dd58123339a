/*
 * rpc_work.c - one call's work without the transport (rpc.h: rpc_work_* and
 * rpc_dispatch): the checks of the wire bytes, decoding, the method's check
 * and handler, packing the reply.
 *
 * Owns: the rules every request passes before any method sees it, so that no
 * method can forget one:
 *   - no string field (at any depth) holds a NUL byte: protobuf-c would cut
 *     the string there ("vic\0tim" would be client "vic"), so two different
 *     names on the wire would be one name in the daemon;
 *   - no repeated field holds more than max_items items (a batch of 1.9 M
 *     empty keys costs ~4 MB on the wire but ~100 bytes per item once
 *     decoded and answered), and no message more than max_items + 64 fields
 *     on the wire (unknown or repeated singular ones cost memory to decode
 *     too): refused before decoding;
 *   - decoding out of memory is -ENOMEM (RESOURCE_EXHAUSTED), not "cannot
 *     decode": the allocator notes the failure.
 * and the reply's bound (no reply larger than max_message is built into a
 * message).
 * Never: keeps state between calls or knows the transport; every function
 * may run on any thread (a call's steps may run on different threads, one
 * at a time).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pinpool.h"
#include "pool.h"
#include "rpc.h"

#define WIRE_MAX_DEPTH 16  /* nested messages followed by the checks */
#define WIRE_MAX_FIELDS 64 /* fields per message counted for max_items */

/* A varint at p[*at], len bytes in all: true and *v, or false (malformed). */
static bool varint(const uint8_t *p, size_t len, size_t *at, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64 && *at < len; shift += 7) {
        uint8_t b = p[(*at)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0)
            return true;
    }
    return false;
}

/*
 * The checks above over one message of type d in p[0, len).  0, or the
 * error with text.  Malformed bytes end the walk with 0: unpacking them fails
 * with its own message.
 */
static int check_wire(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len,
                      uint32_t max_items, int depth, char *text, size_t textlen)
{
    uint32_t counts[WIRE_MAX_FIELDS] = {0};
    uint64_t fields = 0;
    size_t at = 0;

    while (at < len) {
        uint64_t tag, n = 0;
        if (!varint(p, len, &at, &tag) || tag >> 3 == 0 || tag >> 3 > UINT32_MAX)
            return 0;
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3));
        switch (tag & 7) {
        case 0: /* varint */
            if (!varint(p, len, &at, &n))
                return 0;
            break;
        case 1: /* 64 bits */
            if (len - at < 8)
                return 0;
            at += 8;
            break;
        case 5: /* 32 bits */
            if (len - at < 4)
                return 0;
            at += 4;
            break;
        case 2: /* length-delimited: strings, bytes, messages, packed numbers */
            if (!varint(p, len, &at, &n) || n > len - at)
                return 0;
            if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING && memchr(p + at, 0, n) != NULL) {
                snprintf(text, textlen, "%s.%s holds a NUL byte: a name is printable ASCII, "
                         "and a NUL would cut it short", d->name, f->name);
                return PINPOOL_EINVAL;
            }
            if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE && depth >= WIRE_MAX_DEPTH) {
                snprintf(text, textlen, "%s nests messages more than %d deep", d->name,
                         WIRE_MAX_DEPTH);
                return PINPOOL_EINVAL;
            }
            if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE) {
                int rc = check_wire(f->descriptor, p + at, n, max_items, depth + 1, text,
                                    textlen);
                if (rc != 0)
                    return rc;
            }
            at += n;
            break;
        default: /* groups (not in proto3) or garbage */
            return 0;
        }
        if (f != NULL && f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t i = (size_t)(f - d->fields);
            if (i < WIRE_MAX_FIELDS && ++counts[i] > max_items) {
                snprintf(text, textlen, "%s carries more than %u %s: the daemon takes at most "
                         "that many in one request (its --max-batch-keys); send them in "
                         "several calls", d->name, max_items, f->name);
                return -E2BIG;
            }
        }
        /* Every field on the wire costs memory while decoding (and an unknown
         * one is kept): no more of them than a full batch has. */
        if (++fields > (uint64_t)max_items + WIRE_MAX_FIELDS) {
            snprintf(text, textlen, "%s carries more than %u fields: the daemon takes at most "
                     "%u items in one request (its --max-batch-keys)", d->name,
                     max_items + WIRE_MAX_FIELDS, max_items);
            return -E2BIG;
        }
    }
    return 0;
}

static void *noting_alloc(void *data, size_t size)
{
    void *p = malloc(size);

    if (p == NULL)
        *(bool *)data = true;
    return p;
}

static void noting_free(void *data, void *p)
{
    (void)data;
    free(p);
}

int rpc_work_begin(rpc_work_t *w, const rpc_method_t *m, void *app, const char *token,
                   uint32_t max_items, const uint8_t *data, size_t len)
{
    rpc_reply_t *r = &w->reply;
    int rc;

    memset(w, 0, sizeof(*w));
    w->m = m;
    w->app = app;
    w->alloc = (ProtobufCAllocator){noting_alloc, noting_free, &w->alloc_failed};
    r->token = token != NULL ? token : "";
    rc = check_wire(m->request, data, len, max_items, 0, r->text, sizeof(r->text));
    if (rc != 0)
        return rc;
    w->req = protobuf_c_message_unpack(m->request, &w->alloc, len, data);
    if (w->req == NULL && w->alloc_failed) {
        char sz[32];
        snprintf(r->text, sizeof(r->text), "out of memory decoding the %s request (%s)",
                 m->request->name, pool_format_size(len, sz, sizeof(sz)));
        return -ENOMEM;
    }
    if (w->req == NULL) {
        snprintf(r->text, sizeof(r->text), "cannot decode the %s request", m->request->name);
        return PINPOOL_EINVAL;
    }
    rc = m->check != NULL ? m->check(app, w->req, r) : 0;
    if (rc != 0 && r->text[0] == '\0')
        snprintf(r->text, sizeof(r->text), "%s", pinpool_strerror(rc));
    return rc;
}

int rpc_work_run(rpc_work_t *w, bool may_block)
{
    rpc_reply_t *r = &w->reply;
    int rc;

    r->may_block = may_block;
    r->text[0] = '\0';
    rc = w->m->handle(w->app, w->req, r);
    if (rc == RPC_DEFER && may_block) { /* a handler that cannot finish where it may wait */
        snprintf(r->text, sizeof(r->text), "%s put its call off on a worker thread",
                 w->m->path);
        rc = PINPOOL_EINTERNAL;
    }
    if (rc == 0 && r->msg == NULL) {
        snprintf(r->text, sizeof(r->text), "%s built no reply", w->m->path);
        rc = PINPOOL_EINTERNAL;
    }
    if (rc != 0 && rc != RPC_DEFER && r->text[0] == '\0')
        snprintf(r->text, sizeof(r->text), "%s", pinpool_strerror(rc));
    return rc;
}

int rpc_work_pack(rpc_work_t *w, uint64_t max_message, grpc_slice *out)
{
    rpc_reply_t *r = &w->reply;
    size_t n = protobuf_c_message_get_packed_size(r->msg);
    char a[32], b[32];
    uint8_t *buf;

    if (n > max_message) {
        snprintf(r->text, sizeof(r->text), "the %s would be %s, more than the %s a reply may "
                 "carry (the daemon's --max-message-size)", r->msg->descriptor->name,
                 pool_format_size(n, a, sizeof(a)), pool_format_size(max_message, b, sizeof(b)));
        return -EMSGSIZE;
    }
    if (n == 0) {
        *out = grpc_empty_slice();
        return 0;
    }
    buf = malloc(n);
    if (buf == NULL) {
        snprintf(r->text, sizeof(r->text), "out of memory for the %s reply (%s)",
                 r->msg->descriptor->name, pool_format_size(n, a, sizeof(a)));
        return -ENOMEM;
    }
    protobuf_c_message_pack(r->msg, buf);
    *out = grpc_slice_new(buf, n, free);
    return 0;
}

void rpc_work_undo(rpc_work_t *w)
{
    if (w->m->undo != NULL && w->reply.msg != NULL)
        w->m->undo(w->app, w->req, &w->reply);
}

void rpc_work_end(rpc_work_t *w)
{
    if (w->m == NULL)
        return;
    if (w->m->done != NULL)
        w->m->done(&w->reply);
    w->reply.msg = NULL;
    if (w->req != NULL)
        protobuf_c_message_free_unpacked(w->req, &w->alloc);
    w->req = NULL;
}

int rpc_dispatch(const rpc_method_t *m, void *app, const char *token, const rpc_limits_t *lim,
                 const uint8_t *data, size_t len, grpc_slice *out, char *text, size_t textlen)
{
    rpc_work_t w;
    int rc = rpc_work_begin(&w, m, app, token, lim->max_items, data, len);

    if (rc == 0)
        rc = rpc_work_run(&w, false);
    if (rc == RPC_DEFER)
        rc = rpc_work_run(&w, true);
    if (rc == 0 && (rc = rpc_work_pack(&w, lim->max_message, out)) != 0)
        rpc_work_undo(&w); /* the caller hears of a failure */
    if (rc != 0)
        snprintf(text, textlen, "%s", w.reply.text);
    rpc_work_end(&w);
    return rc;
}
