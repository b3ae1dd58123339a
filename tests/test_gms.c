/*
 * test_gms.c - --gms, the GPU Memory Service protocol (server/gms*.c): the
 * decoder's bounds and SHA-256 in this process, then the daemon on the
 * stand-in driver (tests/mock/libcuda.c, whose exported VMM memory is a
 * memfd this process can map) driven by a small msgpack-c client of this
 * file's own: a writer's layout seen by readers, descriptors that the daemon
 * does not leak, hostile frames, another user, a shutdown with connections
 * open.  tests/python/test_gms.py covers the rest of the protocol.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <msgpack.h>

#include "daemon.h"
#include "gms_wire.h"
#include "mockcuda.h"
#include "users.h"

#define MiB ((uint64_t)1 << 20)
/* The stand-in driver's UUID of GPU 0 (bytes 0x50.. with the ordinal last). */
#define UUID0 "GPU-50515253-5455-5657-5859-5a5b5c5d5e00"

/* ---- the decoder and the hash, in this process ------------------------------------------ */

static int decode(const void *msg, size_t len, gms_req_t *r, char *why)
{
    return gms_decode(msg, len, r, why, 256);
}

Test(gms_wire, refuses_what_is_not_a_flat_bounded_map)
{
    static const struct {
        const char *bytes;
        size_t len;
        const char *why;
    } bad[] = {
        {"\xc1", 1, "Expected a msgpack map"},
        {"\x91\xc0", 2, "Expected a msgpack map"},
        /* {"type": [4294967295 elements]} in a few bytes: refused before any unpacking */
        {"\x81\xa4type\xdd\xff\xff\xff\xff", 11, "truncated, nested"},
        {"\x81\xa4type\x81\xc0\xc0", 8, "truncated, nested"},
        {"\x81\xa4type\xc7\x01\x01\x00", 9, "truncated, nested"}, /* ext */
        {"\x81\xa4type\xdb\xff\xff\xff\xff", 11, "truncated, nested"}, /* str32 past the end */
        {"\x81\xa4type\xa5" "abc", 10, "truncated, nested"},
        {"\x81\x01\x02", 3, "not named by a str"},
        {"\x80\xc0", 2, "1 bytes after the map"},
        {"\xdf\x00\x01\x00\x00", 5, "65536 fields"},
        {"\x81\xa4type\xa3xyz", 10, "Invalid value 'xyz'"},
        {"\x81\xa4type\x07", 7, "missing required field `type`"},
        {"\x81\xa3tag\xa1x", 7, "missing required field `type`"},
    };
    gms_req_t r;
    char why[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        cr_expect_eq(decode(bad[i].bytes, bad[i].len, &r, why), -1, "case %zu decoded", i);
        cr_expect(strstr(why, bad[i].why) != NULL, "case %zu: '%s', not '%s'", i, why,
                  bad[i].why);
    }
}

/* A message packed by msgpack-c: type, then n (key, kind, value) with kind
 * 's' (a C string), 'u' (uint64_t), 'i' (int64_t), 'b' (bin: pointer, size_t)
 * or 'n' (nil).  The frame (header included) in *out; its length. */
static size_t pack(msgpack_sbuffer *out, bool frame, const char *type, int n, ...)
{
    msgpack_packer pk;
    va_list ap;

    msgpack_sbuffer_init(out);
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    if (frame)
        msgpack_sbuffer_write(out, "\0\0\0\0", 4);
    msgpack_pack_map(&pk, (size_t)n + 1);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, type, strlen(type));
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        const char *key = va_arg(ap, const char *);
        int kind = va_arg(ap, int);
        msgpack_pack_str_with_body(&pk, key, strlen(key));
        if (kind == 's') {
            const char *s = va_arg(ap, const char *);
            msgpack_pack_str_with_body(&pk, s, strlen(s));
        } else if (kind == 'u') {
            msgpack_pack_uint64(&pk, va_arg(ap, uint64_t));
        } else if (kind == 'i') {
            msgpack_pack_int64(&pk, va_arg(ap, int64_t));
        } else if (kind == 'b') {
            const void *p = va_arg(ap, const void *);
            size_t l = va_arg(ap, size_t);
            msgpack_pack_bin_with_body(&pk, p, l);
        } else {
            msgpack_pack_nil(&pk);
        }
    }
    va_end(ap);
    if (frame) {
        uint32_t body = (uint32_t)(out->size - 4);
        uint8_t *p = (uint8_t *)out->data;
        p[0] = (uint8_t)(body >> 24), p[1] = (uint8_t)(body >> 16);
        p[2] = (uint8_t)(body >> 8), p[3] = (uint8_t)body;
    }
    return out->size;
}

Test(gms_wire, decodes_fields_and_checks_them)
{
    msgpack_sbuffer b;
    gms_req_t r;
    char why[256], longkey[GMS_MAX_KEY + 2];

    pack(&b, false, "metadata_put_request", 5, "key", 's', "w.0", "allocation_id", 's', "abc",
         "offset_bytes", 'u', (uint64_t)4096, "value", 'b', "\0\1\2", (size_t)3, "unknown", 'n');
    cr_assert_eq(decode(b.data, b.size, &r, why), 0, "%s", why);
    cr_expect_eq(r.type, GMS_META_PUT);
    cr_expect_str_eq(r.key, "w.0");
    cr_expect_str_eq(r.id, "abc");
    cr_expect_eq(r.offset, 4096);
    cr_expect_eq(r.value_len, 3);
    cr_expect(memcmp(r.value, "\0\1\2", 3) == 0);
    cr_expect((const char *)r.value > b.data && (const char *)r.value < b.data + b.size,
              "the value points into the frame");
    msgpack_sbuffer_destroy(&b);

    pack(&b, false, "metadata_put_request", 3, "key", 's', "k", "allocation_id", 's', "a",
         "offset_bytes", 'u', (uint64_t)0);
    cr_expect_eq(decode(b.data, b.size, &r, why), -1);
    cr_expect(strstr(why, "missing required field `value`") != NULL, "%s", why);
    msgpack_sbuffer_destroy(&b);

    pack(&b, false, "allocate_request", 1, "size", 'i', (int64_t)-5);
    cr_expect_eq(decode(b.data, b.size, &r, why), -1);
    cr_expect(strstr(why, "size must be >= 0, got -5") != NULL, "%s", why);
    msgpack_sbuffer_destroy(&b);

    pack(&b, false, "allocate_request", 1, "size", 'u', (uint64_t)7);
    cr_assert_eq(decode(b.data, b.size, &r, why), 0, "%s", why);
    cr_expect_str_eq(r.tag, "default", "AllocateRequest's tag defaults to \"default\"");
    msgpack_sbuffer_destroy(&b);

    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    pack(&b, false, "metadata_get_request", 1, "key", 's', longkey);
    cr_expect_eq(decode(b.data, b.size, &r, why), -1);
    cr_expect(strstr(why, "key: longer than 1024 bytes") != NULL, "%s", why);
    msgpack_sbuffer_destroy(&b);

    pack(&b, false, "get_allocation_request", 1, "allocation_id", 's',
         "0123456789012345678901234567890123456");
    cr_expect_eq(decode(b.data, b.size, &r, why), -1);
    cr_expect(strstr(why, "allocation_id: longer than 36") != NULL, "%s", why);
    msgpack_sbuffer_destroy(&b);

    pack(&b, false, "handshake_request", 2, "lock_type", 's', "ro", "timeout_ms", 'n');
    cr_assert_eq(decode(b.data, b.size, &r, why), 0, "%s", why);
    cr_expect(r.lock == GMS_LOCK_RO && !r.has_timeout);
    msgpack_sbuffer_destroy(&b);

    static char big[GMS_MAX_VALUE + 1];
    pack(&b, false, "metadata_put_request", 4, "key", 's', "k", "allocation_id", 's', "a",
         "offset_bytes", 'u', (uint64_t)0, "value", 'b', big, sizeof(big));
    cr_expect_eq(decode(b.data, b.size, &r, why), -1);
    cr_expect(strstr(why, "value: longer than") != NULL, "%s", why);
    msgpack_sbuffer_destroy(&b);
}

static void sha(const void *p, size_t len, size_t reps, char hex[65])
{
    gms_sha256_t s;

    cr_assert_eq(gms_sha256_init(&s), 0);
    for (size_t i = 0; i < reps; i++)
        gms_sha256_update(&s, p, len);
    cr_assert_eq(gms_sha256_hex(&s, hex), 0);
}

Test(gms_wire, sha256_known_answers)
{
    char hex[65];

    sha("", 0, 1, hex);
    cr_expect_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha("abc", 3, 1, hex);
    cr_expect_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, 1, hex);
    cr_expect_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    sha("a", 1, 1000000, hex);
    cr_expect_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* ---- the daemon -------------------------------------------------------------------------- */

static test_daemon_t d;
static char gms_path[160];

static void stop(void)
{
    test_daemon_finish(&d);
}

TestSuite(gms, .fini = stop, .timeout = 60);

/* The mock on, a daemon with --gms weights on GPU 0 and extra arguments. */
#define START(...)                                                                             \
    do {                                                                                       \
        test_use_mock_cuda();                                                                  \
        cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size",         \
                                       "16MiB", "--host-backend", "memfd", "--gms", "weights", \
                                       "--devices", "0", __VA_ARGS__), 0);                     \
        snprintf(gms_path, sizeof(gms_path), "%s/gms_" UUID0 "_weights.sock", d.dir);        \
    } while (0)

static int gms_connect(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = 10};
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (strlen(gms_path) >= sizeof(sa.sun_path))
        cr_assert_fail("%s: too long for a unix socket", gms_path);
    memcpy(sa.sun_path, gms_path, strlen(gms_path) + 1);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (s >= 0)
            close(s);
        return -1;
    }
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return s;
}

static bool send_all(int s, const void *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(s, p, n, MSG_NOSIGNAL);
        if (k <= 0)
            return false;
        p = (const char *)p + k, n -= (size_t)k;
    }
    return true;
}

/* A response: the unpacked message over its frame's bytes (msgpack-c
 * references its strings in them). */
typedef struct resp {
    msgpack_unpacked u;
    char *body;
} resp_t;

static void resp_free(resp_t *r)
{
    msgpack_unpacked_destroy(&r->u);
    free(r->body);
}

/* Read a response into *r (the caller frees it) and its descriptor into
 * *fd (may be NULL: a descriptor is then closed).  false: the connection
 * ended (or timed out) first. */
static bool recv_msg(int s, resp_t *r, int *fd)
{
    char ctl[CMSG_SPACE(sizeof(int))];
    uint8_t hdr[4];
    struct iovec iov = {hdr, 4};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
                        .msg_controllen = sizeof(ctl)};
    ssize_t n = recvmsg(s, &mh, MSG_WAITALL | MSG_CMSG_CLOEXEC);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    int got = -1;
    size_t len, off = 0;

    if (n > 0 && cm != NULL && cm->cmsg_type == SCM_RIGHTS)
        memcpy(&got, CMSG_DATA(cm), sizeof(int));
    if (fd != NULL)
        *fd = got;
    else if (got >= 0)
        close(got);
    if (n != 4)
        return false;
    len = gms_frame_len(hdr);
    r->body = malloc(len + 1);
    cr_assert_not_null(r->body);
    if (len > 0 && recv(s, r->body, len, MSG_WAITALL) != (ssize_t)len) {
        free(r->body);
        return false;
    }
    msgpack_unpacked_init(&r->u);
    cr_assert_eq(msgpack_unpack_next(&r->u, r->body, len, &off), MSGPACK_UNPACK_SUCCESS);
    return true;
}

static const msgpack_object *field(const resp_t *r, const char *key)
{
    const msgpack_object_map *m = &r->u.data.via.map;

    cr_assert_eq(r->u.data.type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < m->size; i++)
        if (m->ptr[i].key.via.str.size == strlen(key) &&
            memcmp(m->ptr[i].key.via.str.ptr, key, strlen(key)) == 0)
            return &m->ptr[i].val;
    return NULL;
}

/* A string field into buf ("" if absent or not a string). */
static const char *fstr(const resp_t *u, const char *key, char *buf, size_t len)
{
    const msgpack_object *o = field(u, key);

    buf[0] = '\0';
    if (o != NULL && o->type == MSGPACK_OBJECT_STR)
        snprintf(buf, len, "%.*s", (int)o->via.str.size, o->via.str.ptr);
    return buf;
}

static uint64_t fu64(const resp_t *u, const char *key)
{
    const msgpack_object *o = field(u, key);

    cr_assert(o != NULL && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER, "no integer %s", key);
    return o->via.u64;
}

static bool fbool(const resp_t *u, const char *key)
{
    const msgpack_object *o = field(u, key);

    cr_assert(o != NULL && o->type == MSGPACK_OBJECT_BOOLEAN, "no bool %s", key);
    return o->via.boolean;
}

/* Send a packed frame, read the answer; its "type" into type. */
static void call(int s, msgpack_sbuffer *req, resp_t *u, int *fd, char *type,
                 size_t typelen)
{
    cr_assert(send_all(s, req->data, req->size));
    msgpack_sbuffer_destroy(req);
    cr_assert(recv_msg(s, u, fd), "no answer");
    fstr(u, "type", type, typelen);
}

static int handshake(int s, const char *lock, char *granted)
{
    msgpack_sbuffer b;
    resp_t u;
    char type[64];
    bool ok;

    pack(&b, true, "handshake_request", 2, "lock_type", 's', lock, "timeout_ms", 'u',
         (uint64_t)2000);
    call(s, &b, &u, NULL, type, sizeof(type));
    if (strcmp(type, "handshake_response") != 0) {
        fstr(&u, "error", granted, 256);
        resp_free(&u);
        return -1;
    }
    ok = fbool(&u, "success");
    fstr(&u, "granted_lock_type", granted, 16);
    resp_free(&u);
    return ok ? 0 : 1;
}

/* Allocate size as the writer on s: the allocation id into id. */
static void allocate(int s, uint64_t size, char id[64])
{
    msgpack_sbuffer b;
    resp_t u;
    char type[64];

    pack(&b, true, "allocate_request", 1, "size", 'u', size);
    call(s, &b, &u, NULL, type, sizeof(type));
    cr_assert_str_eq(type, "allocate_response");
    fstr(&u, "allocation_id", id, 64);
    resp_free(&u);
}

/* Export id on s: the descriptor (the caller closes it). */
static int export_fd(int s, const char *id)
{
    msgpack_sbuffer b;
    resp_t u;
    char type[64];
    int fd = -1;

    pack(&b, true, "export_allocation_request", 1, "allocation_id", 's', id);
    call(s, &b, &u, &fd, type, sizeof(type));
    cr_assert_str_eq(type, "export_allocation_response");
    resp_free(&u);
    cr_assert_geq(fd, 0, "no descriptor with the export");
    return fd;
}

static void commit(int s)
{
    msgpack_sbuffer b;
    resp_t u;
    char type[64];

    pack(&b, true, "commit_request", 0);
    call(s, &b, &u, NULL, type, sizeof(type));
    cr_assert_str_eq(type, "commit_response");
    cr_assert(fbool(&u, "success"));
    resp_free(&u);
}

/* The daemon's descriptors once they stop changing (its host chunks are
 * made in the background after it is ready): the same count for 300 ms. */
static int settled_nfds(void)
{
    int n = test_daemon_nfds(&d), same = 0;

    for (int i = 0; i < 500 && same < 30; i++) {
        usleep(10000);
        int m = test_daemon_nfds(&d);
        same = m == n ? same + 1 : 0;
        n = m;
    }
    return n;
}

static bool hung_up(int s)
{
    char c;

    return recv(s, &c, 1, 0) == 0;
}

Test(gms, writer_publishes_readers_map_the_same_bytes_and_no_descriptor_leaks)
{
    char granted[256], id[64], hash[80], type[64];
    msgpack_sbuffer b;
    resp_t u;
    int w, fd, base;

    START(NULL);
    w = gms_connect();
    cr_assert_geq(w, 0);
    cr_assert_eq(handshake(w, "rw", granted), 0, "%s", granted);
    cr_assert_str_eq(granted, "rw");
    allocate(w, 3 * MiB, id);
    fd = export_fd(w, id);
    unsigned char *p = mmap(NULL, 4 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    cr_assert_neq(p, MAP_FAILED, "the stand-in's export is a memfd");
    for (uint64_t i = 0; i < 4 * MiB; i++)
        p[i] = (unsigned char)(i * 13 + 1);
    munmap(p, 4 * MiB);
    close(fd);
    pack(&b, true, "metadata_put_request", 4, "key", 's', "t0", "allocation_id", 's', id,
         "offset_bytes", 'u', (uint64_t)512, "value", 'b', "meta", (size_t)4);
    call(w, &b, &u, NULL, type, sizeof(type));
    cr_assert_str_eq(type, "metadata_put_response");
    resp_free(&u);
    commit(w);
    cr_expect(hung_up(w), "the writer's connection ends at its commit");
    close(w);
    base = settled_nfds(); /* the stand-in's handle is a memfd: one for the allocation */

    for (int k = 0; k < 20; k++) {
        int r = gms_connect();
        cr_assert_eq(handshake(r, "ro", granted), 0, "%s", granted);
        cr_assert_str_eq(granted, "ro");
        fd = export_fd(r, id);
        p = mmap(NULL, 4 * MiB, PROT_READ, MAP_SHARED, fd, 0);
        cr_assert_neq(p, MAP_FAILED);
        for (uint64_t i = 0; i < 4 * MiB; i += 4093)
            cr_assert_eq(p[i], (unsigned char)(i * 13 + 1), "byte %" PRIu64, i);
        munmap(p, 4 * MiB);
        close(fd);
        pack(&b, true, "get_memory_layout_hash_request", 0);
        call(r, &b, &u, NULL, type, sizeof(type));
        fstr(&u, "memory_layout_hash", hash, sizeof(hash));
        cr_assert_eq(strlen(hash), 64, "hash '%s'", hash);
        resp_free(&u);
        close(r);
    }
    /* the 20 exports left no descriptor behind in the daemon */
    for (int i = 0; i < 100 && test_daemon_nfds(&d) != base; i++)
        usleep(10000);
    cr_expect_eq(test_daemon_nfds(&d), base, "the daemon has %d descriptors, %d before",
                 test_daemon_nfds(&d), base);

    /* a new writer replaces the layout: the allocation's memory goes */
    w = gms_connect();
    cr_assert_eq(handshake(w, "rw", granted), 0, "%s", granted);
    pack(&b, true, "get_allocation_state_request", 0);
    call(w, &b, &u, NULL, type, sizeof(type));
    cr_expect_eq(fu64(&u, "allocation_count"), 0);
    resp_free(&u);
    int empty = settled_nfds(); /* the writer's connection, no allocation */
    cr_expect_lt(empty, base + 1, "the replaced allocation's descriptors stay open");
    /* ... and one that hangs up without committing leaves nothing */
    allocate(w, 2 * MiB, id);
    allocate(w, 2 * MiB, id);
    cr_expect_gt(test_daemon_nfds(&d), empty);
    close(w);
    for (int i = 0; i < 100 && test_daemon_nfds(&d) != empty - 1; i++)
        usleep(10000);
    cr_expect_eq(test_daemon_nfds(&d), empty - 1, "an aborted writer's allocations stay open");
}

Test(gms, hostile_frames_end_only_their_connection)
{
    static const struct {
        const char *bytes;
        size_t len;
    } bad[] = {
        {"\xff\xff\xff\xff", 4},                          /* 4 GiB announced */
        {"\x00\x10\x00\x01", 4},                          /* 1 MiB + 1 */
        {"\x00\x00\x00\x00", 4},                          /* empty */
        {"\x00\x00\x00\x0b\x81\xa4type\xdd\xff\xff\xff\xff", 15}, /* a 4-billion array */
        {"\x00\x00\x00\x03\xc1\xc1\xc1", 7},              /* not msgpack */
    };
    char granted[256], id[64];
    int w, stuck, n;
    resp_t u;

    START(NULL);
    /* one peer stops mid-frame and stays; it stalls nobody */
    stuck = gms_connect();
    cr_assert(send_all(stuck, "\x00\x00\x01\x00\x81", 5));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int s = gms_connect();
        cr_assert(send_all(s, bad[i].bytes, bad[i].len));
        cr_assert(recv_msg(s, &u, NULL), "case %zu: no answer", i);
        char type[64];
        cr_expect_str_eq(fstr(&u, "type", type, sizeof(type)), "error_response", "case %zu", i);
        resp_free(&u);
        cr_expect(hung_up(s), "case %zu: the connection stays", i);
        close(s);
    }
    w = gms_connect();
    cr_assert_eq(handshake(w, "rw", granted), 0, "%s", granted);
    allocate(w, MiB, id);
    commit(w);
    close(w);
    n = settled_nfds();
    close(stuck); /* hanging up mid-frame ends its connection */
    for (int i = 0; i < 100 && test_daemon_nfds(&d) != n - 1; i++)
        usleep(10000);
    cr_expect_eq(test_daemon_nfds(&d), n - 1);
}

Test(gms, shutdown_with_a_writer_a_waiter_and_a_reader_open)
{
    char granted[256], id[64];
    int w, r, waiter;
    msgpack_sbuffer b;

    START(NULL);
    w = gms_connect();
    cr_assert_eq(handshake(w, "rw", granted), 0, "%s", granted);
    allocate(w, 4 * MiB, id);
    commit(w);
    close(w);
    r = gms_connect();
    cr_assert_eq(handshake(r, "ro", granted), 0, "%s", granted);
    waiter = gms_connect(); /* a writer that waits for the reader, without a timeout */
    pack(&b, true, "handshake_request", 1, "lock_type", 's', "rw");
    cr_assert(send_all(waiter, b.data, b.size));
    msgpack_sbuffer_destroy(&b);
    w = gms_connect();
    cr_assert(send_all(w, "\x00\x00", 2));
    /* test_daemon_finish: SIGTERM must end it with 0 (and ASan finds no leak) */
    test_daemon_finish(&d);
    close(r);
    close(waiter);
    close(w);
}

/* ---- another user ------------------------------------------------------------------------ */

static test_users_t users;

static int as_user_handshake(void *arg)
{
    const char *lock = arg;
    char granted[256];
    int s = gms_connect();

    if (s < 0)
        return 10;
    int rc = handshake(s, lock, granted);
    fprintf(stderr, "  %s: %d %s\n", lock, rc, granted);
    if (rc == -1 && strstr(granted, "held by another user") != NULL)
        return 2;
    return rc == 0 ? 0 : 3;
}

/* Fill and commit the store as a user: 0 on success. */
static int as_user_fill(void *arg)
{
    char granted[256], id[64];
    int s = gms_connect();

    (void)arg;
    if (s < 0 || handshake(s, "rw", granted) != 0)
        return 10;
    allocate(s, 2 * MiB, id);
    commit(s);
    close(s);
    return 0;
}

Test(gms, another_user_may_neither_read_nor_replace_a_layout)
{
    char allow[64], why[256];

    if (!test_users_get(&users, why, sizeof(why)))
        cr_skip_test("%s", why);
    snprintf(allow, sizeof(allow), "0,%u,%u", (unsigned)users.a.uid, (unsigned)users.b.uid);
    START("--allow-uid", allow, NULL);
    cr_assert_eq(chmod(d.dir, 0711), 0);
    cr_assert_eq(chown(gms_path, 0, users.shared), 0);
    cr_assert_eq(chmod(gms_path, 0660), 0);
    cr_assert_eq(test_run_as(&users.a, true, users.shared, as_user_fill, NULL), 0);
    /* b: every lock refused by uid; a: reads its own */
    cr_expect_eq(test_run_as(&users.b, true, users.shared, as_user_handshake, "ro"), 2);
    cr_expect_eq(test_run_as(&users.b, true, users.shared, as_user_handshake, "rw"), 2);
    cr_expect_eq(test_run_as(&users.b, true, users.shared, as_user_handshake, "rw_or_ro"), 2);
    cr_expect_eq(test_run_as(&users.a, true, users.shared, as_user_handshake, "ro"), 0);
}

/* ---- start-up ----------------------------------------------------------------------------- */

Test(gms_start, refuses_bad_tags_and_a_gpu_without_descriptor_export, .timeout = 60)
{
    char dir[] = "/tmp/pinpool-gms-XXXXXX", out[4096];
    int rc;

    test_use_mock_cuda();
    cr_assert_not_null(mkdtemp(dir));
    rc = test_pinpool(out, sizeof(out), "serve --socket %s/p.sock --state-dir %s/state "
                      "--mem-pool-size 32MiB --chunk-size 16MiB --host-backend memfd --devices 0 "
                      "--gms 'weights,bad tag'", dir, dir);
    cr_expect_neq(rc, 0, "a tag with a space: %s", out);
    cr_expect(strstr(out, "tags are names of letters, digits, _ and -") != NULL, "%s", out);
    setenv("PINPOOL_MOCK_NO_VMM", "fd", 1); /* VMM without export as descriptors */
    rc = test_pinpool(out, sizeof(out), "serve --socket %s/p.sock --state-dir %s/state "
                      "--mem-pool-size 32MiB --chunk-size 16MiB --host-backend memfd --devices 0 "
                      "--gms weights", dir, dir);
    unsetenv("PINPOOL_MOCK_NO_VMM");
    cr_expect_neq(rc, 0, "no descriptor export: %s", out);
    cr_expect(strstr(out, "does not support exporting memory as file descriptors") != NULL, "%s",
              out);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}
