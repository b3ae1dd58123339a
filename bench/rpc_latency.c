/*
 * rpc_latency.c - AllocatePoolMemory / FreePoolMemory against an empty unary
 * call (Ping) to the same daemon, in the same run, over its unix socket.
 *
 *   rpc_latency SOCKET [ROUNDS]
 *
 * Rounds interleave the three calls (ping, alloc, free) so that drift in the
 * machine's state hits all of them alike.  A second table times the library
 * path (pinpool_alloc + pinpool_free, mapping cached by a slice kept alive).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "benchutil.h"
#include "pinpool.h"
#include "pinpool.pb-c.h"

#define METHOD(name) "/pinpool.v1.PinPool/" name

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

typedef struct series {
    const char *name;
    double *us;
    int n;
    double p50, p99, total;
} series_t;

static void summarize(series_t *s)
{
    s->total = 0;
    for (int i = 0; i < s->n; i++)
        s->total += s->us[i];
    qsort(s->us, (size_t)s->n, sizeof(double), cmp_double);
    s->p50 = s->us[s->n / 2];
    s->p99 = s->us[(int)(s->n * 0.99)];
}

static void print_row(const series_t *s, const series_t *base)
{
    printf("%-34s %9.1f %9.1f %10.0f", s->name, s->p50, s->p99, s->n / (s->total / 1e6));
    if (base != NULL)
        printf("   %5.2fx   %5.2fx", s->p50 / base->p50, s->p99 / base->p99);
    printf("\n");
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "rpc_latency: %s: %s\n", what, msg);
    exit(1);
}

int main(int argc, char **argv)
{
    const char *socket = argc > 1 ? argv[1] : NULL;
    int rounds = argc > 2 ? atoi(argv[2]) : 20000, warm = rounds / 10;
    pinpool_ctx_t *ctx = pinpool_connect(socket);
    series_t ping = {.name = "Ping (empty unary call)"}, alloc = {.name = "AllocatePoolMemory"},
             freed = {.name = "FreePoolMemory"}, lib = {.name = "pinpool_alloc + pinpool_free pair"};
    char msg[512];

    if (pinpool_err(ctx) != 0)
        die("connect", pinpool_errmsg(ctx));
    pinpool__rpc_t *rpc;
    if (pinpool__rpc_open(&rpc, socket != NULL ? socket : getenv("PINPOOL_SOCKET")) != 0)
        die("channel", "cannot open");
    ping.us = calloc((size_t)rounds, sizeof(double));
    alloc.us = calloc((size_t)rounds, sizeof(double));
    freed.us = calloc((size_t)rounds, sizeof(double));
    lib.us = calloc((size_t)rounds, sizeof(double));

    Pinpool__V1__PingRequest preq = PINPOOL__V1__PING_REQUEST__INIT;
    Pinpool__V1__AllocatePoolMemoryRequest areq = PINPOOL__V1__ALLOCATE_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__FreePoolMemoryRequest freq = PINPOOL__V1__FREE_POOL_MEMORY_REQUEST__INIT;
    /* Raw calls act as a detached client (a session's id would need the session's
     * token, which the public API keeps to itself); the server path is the same. */
    areq.client_id = freq.client_id = (char *)"rpc-latency-bench";
    areq.device_id = -1;
    areq.size_bytes = 1 << 20;

    for (int i = -warm; i < rounds; i++) {
        ProtobufCMessage *r = NULL;
        Pinpool__V1__AllocatePoolMemoryResponse *ar = NULL;
        double t0 = now_us();
        if (pinpool__rpc_call(rpc, METHOD("Ping"), &preq.base, &pinpool__v1__ping_response__descriptor,
                              &r, NULL, msg, sizeof(msg)) != 0)
            die("Ping", msg);
        double t1 = now_us();
        if (pinpool__rpc_call(rpc, METHOD("AllocatePoolMemory"), &areq.base,
                              &pinpool__v1__allocate_pool_memory_response__descriptor,
                              (ProtobufCMessage **)&ar, NULL, msg, sizeof(msg)) != 0)
            die("AllocatePoolMemory", msg);
        double t2 = now_us();
        freq.slice_id = ar->slice_id;
        protobuf_c_message_free_unpacked(&ar->base, NULL);
        protobuf_c_message_free_unpacked(r, NULL);
        r = NULL;
        if (pinpool__rpc_call(rpc, METHOD("FreePoolMemory"), &freq.base,
                              &pinpool__v1__free_pool_memory_response__descriptor, &r, NULL, msg,
                              sizeof(msg)) != 0)
            die("FreePoolMemory", msg);
        double t3 = now_us();
        protobuf_c_message_free_unpacked(r, NULL);
        if (i >= 0) {
            ping.us[i] = t1 - t0;
            alloc.us[i] = t2 - t1;
            freed.us[i] = t3 - t2;
        }
    }
    ping.n = alloc.n = freed.n = rounds;

    /* The library path; a kept slice holds the chunk's mapping in the cache. */
    pinpool_slice_t keep, s;
    if (pinpool_alloc(ctx, 4096, NULL, &keep) != 0)
        die("pinpool_alloc", pinpool_errmsg(ctx));
    for (int i = -warm; i < rounds; i++) {
        double t0 = now_us();
        if (pinpool_alloc(ctx, 1 << 20, NULL, &s) != 0)
            die("pinpool_alloc", pinpool_errmsg(ctx));
        if (pinpool_free(ctx, s.id, NULL) != 0)
            die("pinpool_free", pinpool_errmsg(ctx));
        if (i >= 0)
            lib.us[i] = now_us() - t0;
    }
    lib.n = rounds;
    pinpool_free(ctx, keep.id, NULL);

    summarize(&ping);
    summarize(&alloc);
    summarize(&freed);
    summarize(&lib);
    printf("%d rounds after %d warm-up, one thread, unix socket\n", rounds, warm);
    printf("%-34s %9s %9s %10s   %6s   %6s\n", "call", "p50 us", "p99 us", "calls/s", "p50/ping",
           "p99/ping");
    print_row(&ping, NULL);
    print_row(&alloc, &ping);
    print_row(&freed, &ping);
    print_row(&lib, &ping);
    printf("ratio AllocatePoolMemory/Ping p50 %.2f, FreePoolMemory/Ping p50 %.2f (target <= 1.10); "
           "p99 %.0f / %.0f us (target <= 250)\n",
           alloc.p50 / ping.p50, freed.p50 / ping.p50, alloc.p99, freed.p99);

    pinpool__rpc_close(rpc);
    pinpool_close(ctx);
    free(ping.us);
    free(alloc.us);
    free(freed.us);
    free(lib.us);
    return 0;
}
