/*
 * seeds.c - writes the fuzzers' seed corpora: seeds DIR makes DIR/rpc/,
 * DIR/fdsock/ and DIR/gms/ with one small well-formed input per interesting
 * case, in the input formats that fuzz_rpc.c, fuzz_fdsock.c and fuzz_gms.c
 * describe.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ipc.h"
#include "pinpool.pb-c.h"

static void put(const char *dir, const char *name, const uint8_t *buf, size_t len)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(buf, 1, len, f) != len) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

/* Append one [method][len16][bytes] call to buf at *n. */
static void call(uint8_t *buf, size_t *n, uint8_t method, const ProtobufCMessage *m)
{
    size_t len = m != NULL ? protobuf_c_message_get_packed_size(m) : 0;

    buf[(*n)++] = method;
    buf[(*n)++] = (uint8_t)len;
    buf[(*n)++] = (uint8_t)(len >> 8);
    if (m != NULL)
        protobuf_c_message_pack(m, buf + *n);
    *n += len;
}

/* Append one fd-socket message [flags][length][MAP_REQ] (fuzz_fdsock.c) to buf at *n. */
static void add_step(uint8_t *buf, size_t *n, uint8_t flags, const ipc_map_req_t *req)
{
    buf[(*n)++] = flags;
    buf[(*n)++] = sizeof(*req);
    memcpy(buf + *n, req, sizeof(*req));
    *n += sizeof(*req);
}

int main(int argc, char **argv)
{
    char rpc[400], fds[400], gms[400];
    uint8_t buf[4096];
    size_t n;

    if (argc != 2) {
        fprintf(stderr, "usage: seeds DIR\n");
        return 2;
    }
    snprintf(rpc, sizeof(rpc), "%s/rpc", argv[1]);
    snprintf(fds, sizeof(fds), "%s/fdsock", argv[1]);
    mkdir(argv[1], 0755);
    mkdir(rpc, 0755);
    mkdir(fds, 0755);
    snprintf(gms, sizeof(gms), "%s/gms", argv[1]);
    mkdir(gms, 0755);
    /* GMS messages (msgpack maps, as msgspec encodes them) */
    static const char hs[] = "\x83\xa4type\xb1handshake_request\xa9lock_type\xa2rw"
                             "\xaatimeout_ms\xc0";
    static const char al[] = "\x83\xa4type\xb0" "allocate_request\xa4size\xce\x00\x20\x00\x00"
                             "\xa3tag\xa7weights";
    static const char mp[] = "\x85\xa4type\xb4metadata_put_request\xa3key\xa2k0"
                             "\xad" "allocation_id\xa1x\xacoffset_bytes\x00\xa5value\xc4\x02" "ab";
    put(gms, "handshake", (const uint8_t *)hs, sizeof(hs) - 1);
    put(gms, "allocate", (const uint8_t *)al, sizeof(al) - 1);
    put(gms, "metadata_put", (const uint8_t *)mp, sizeof(mp) - 1);

    Pinpool__V1__AllocatePoolMemoryRequest a = PINPOOL__V1__ALLOCATE_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__FreePoolMemoryRequest f = PINPOOL__V1__FREE_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__GetPoolInfoRequest i = PINPOOL__V1__GET_POOL_INFO_REQUEST__INIT;

    a.client_id = "fuzz";
    a.device_id = -1;
    a.size_bytes = 4096;
    a.tag = "seed";
    n = 0;
    call(buf, &n, 0, &a.base);
    put(rpc, "alloc", buf, n);
    f.client_id = "fuzz";
    f.slice_id = 1;
    call(buf, &n, 1, &f.base);
    call(buf, &n, 2, &i.base);
    put(rpc, "alloc_free_info", buf, n);

    n = 0;
    a.size_bytes = 5u << 20; /* several chunks */
    a.alignment = 1u << 20;
    call(buf, &n, 0, &a.base);
    a.size_bytes = 3000;
    a.alignment = 0;
    a.client_id = "other";
    call(buf, &n, 0, &a.base);
    call(buf, &n, 2, &i.base);
    f.slice_id = 0;
    call(buf, &n, 1, &f.base);
    put(rpc, "multi_chunk_and_free_all", buf, n);

    n = 0;
    call(buf, &n, 3, NULL);
    call(buf, &n, 4, NULL);
    put(rpc, "config_ping", buf, n);

    /* The object API; the method numbers are service.c's rows, and a method
     * byte with the top bit set is a call whose caller gives up (fuzz_rpc.c). */
    enum { ALLOC, FREE, INFO, CONFIG, PING, ATTACH, RELEASE, ACQUIRE, PUT, GET, EXISTS, REMOVE,
           BATCH_PUT, BATCH_GET, BATCH_EXISTS, BATCH_REMOVE, GIVES_UP = 0x80 };
    Pinpool__V1__PutRequest p = PINPOOL__V1__PUT_REQUEST__INIT;
    Pinpool__V1__GetRequest g = PINPOOL__V1__GET_REQUEST__INIT;
    Pinpool__V1__ExistsRequest e = PINPOOL__V1__EXISTS_REQUEST__INIT;
    Pinpool__V1__RemoveRequest rm = PINPOOL__V1__REMOVE_REQUEST__INIT;
    Pinpool__V1__ReleasePoolMemoryRequest rel = PINPOOL__V1__RELEASE_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__AcquirePoolMemoryRequest acq = PINPOOL__V1__ACQUIRE_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__BatchKeysRequest bk = PINPOOL__V1__BATCH_KEYS_REQUEST__INIT;
    Pinpool__V1__BatchPutRequest bp = PINPOOL__V1__BATCH_PUT_REQUEST__INIT;
    uint8_t bytes[64] = "some bytes";
    char *keys[80];
    n = 0;
    p.key = g.key = e.key = rm.key = "k";
    p.data.data = bytes;
    p.data.len = sizeof(bytes);
    call(buf, &n, PUT, &p.base);
    call(buf, &n, GET, &g.base);
    call(buf, &n, EXISTS, &e.base);
    p.ttl_ms = 18446744073709551615ull; /* "forever" */
    call(buf, &n, PUT, &p.base);
    call(buf, &n, REMOVE, &rm.base);
    call(buf, &n, GET, &g.base);
    put(rpc, "put_get_remove", buf, n);

    /* One key many times: a BatchPut of duplicates, a BatchGet of 60 copies,
     * 65 keys (over the fuzzers' 64), removing one twice. */
    Pinpool__V1__PutRequest *items[3] = {&p, &p, &p};
    p.ttl_ms = 0;
    bp.n_items = 3;
    bp.items = items;
    for (int k = 0; k < 80; k++)
        keys[k] = "k";
    n = 0;
    call(buf, &n, BATCH_PUT, &bp.base);
    bk.keys = keys;
    bk.n_keys = 60;
    call(buf, &n, BATCH_GET, &bk.base);
    bk.n_keys = 65;
    call(buf, &n, BATCH_EXISTS, &bk.base);
    bk.n_keys = 2;
    call(buf, &n, BATCH_REMOVE, &bk.base);
    put(rpc, "batch_duplicate_keys", buf, n);

    /* A 3 MiB released object, larger than a fuzzer's 1 MiB reply: Get and a
     * BatchGet of it are refused before a copy; then acquired by a caller who
     * gives up (it must be released again), and acquired for good. */
    a.client_id = "fuzz";
    a.size_bytes = 3u << 20;
    a.alignment = 0;
    n = 0;
    call(buf, &n, ALLOC, &a.base);
    rel.client_id = acq.client_id = "fuzz";
    rel.slice_id = 1;
    rel.key = acq.key = g.key = "big";
    call(buf, &n, RELEASE, &rel.base);
    call(buf, &n, GET, &g.base);
    for (int k = 0; k < 8; k++)
        keys[k] = "big";
    bk.n_keys = 8;
    call(buf, &n, BATCH_GET, &bk.base);
    call(buf, &n, ACQUIRE | GIVES_UP, &acq.base);
    call(buf, &n, ACQUIRE, &acq.base);
    f.client_id = "fuzz";
    f.slice_id = 0;
    call(buf, &n, FREE, &f.base);
    put(rpc, "big_object_get_acquire", buf, n);

    /* The pool full of released objects, then a slice that needs room: a
     * spill to the file tier (put off to a worker), and acquiring a spilled
     * object (a restore, put off too); an allocation whose caller gives up. */
    n = 0;
    a.size_bytes = 2u << 20;
    static char key_names[4][8];
    for (int k = 0; k < 4; k++) {
        call(buf, &n, ALLOC, &a.base);
        snprintf(key_names[k], sizeof(key_names[k]), "o%d", k);
        rel.slice_id = (uint64_t)k + 1;
        rel.key = key_names[k];
        call(buf, &n, RELEASE, &rel.base);
    }
    a.size_bytes = 4u << 20;
    call(buf, &n, ALLOC | GIVES_UP, &a.base);
    call(buf, &n, ALLOC, &a.base);
    acq.key = key_names[0];
    call(buf, &n, ACQUIRE, &acq.base);
    call(buf, &n, INFO, &i.base);
    call(buf, &n, FREE, &f.base);
    put(rpc, "spill_and_restore", buf, n);

    /* NUL inside names (protobuf-c would cut them): client_id "vic\0tim",
     * key "abc\0one", by hand since the packer stops at a NUL. */
    static const uint8_t nul_alloc[] = {0x0a, 7, 'v', 'i', 'c', 0, 't', 'i', 'm', 0x10, 0xff, 0xff,
                                        0xff, 0xff, 0x0f, 0x18, 0x80, 0x20};
    static const uint8_t nul_put[] = {0x0a, 7, 'a', 'b', 'c', 0, 'o', 'n', 'e', 0x12, 1, 'x'};
    n = 0;
    buf[n++] = ALLOC, buf[n++] = sizeof(nul_alloc), buf[n++] = 0;
    memcpy(buf + n, nul_alloc, sizeof(nul_alloc));
    n += sizeof(nul_alloc);
    buf[n++] = PUT, buf[n++] = sizeof(nul_put), buf[n++] = 0;
    memcpy(buf + n, nul_put, sizeof(nul_put));
    n += sizeof(nul_put);
    put(rpc, "nul_in_names", buf, n);

    /* fd socket: two slices (4 KiB, 3 MiB), then MAP_REQs for each and a bad one. */
    ipc_map_req_t req = {0};
    n = 0;
    buf[n++] = 2;
    buf[n++] = 0x00, buf[n++] = 0x10, buf[n++] = 0x00;
    buf[n++] = 0x00, buf[n++] = 0x00, buf[n++] = 0x30;
    ipc_hdr_init(&req.hdr, IPC_MSG_MAP_REQ, 1, sizeof(req));
    req.first_chunk = 0;
    req.count = 1;
    add_step(buf, &n, 0x01, &req);
    req.first_chunk = 1;
    req.count = 2;
    add_step(buf, &n, 0x11, &req);
    add_step(buf, &n, 0x09, &req);
    put(fds, "maps", buf, n);
    add_step(buf, &n, 0x02, &req);
    put(fds, "maps_then_fd", buf, n);
    return 0;
}
