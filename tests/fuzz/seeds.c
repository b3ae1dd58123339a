/*
 * seeds.c - writes the fuzzers' seed corpora: seeds DIR makes DIR/rpc/ and
 * DIR/fdsock/ with one small well-formed input per interesting case, in the
 * input formats that fuzz_rpc.c and fuzz_fdsock.c describe.
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
    char rpc[400], fds[400];
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
