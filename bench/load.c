/*
 * load.c - the load test: many client processes, each doing a mix of
 * operations through libpinpool, with the daemon's byte accounting checked
 * throughout.
 *
 *   load SOCKET [PROCS (64)] [OPS per process (10000)] [CHECKPOINTS (10)]
 *
 * Each process connects (its own lease), then runs OPS operations drawn at
 * random: alloc (256 B .. 4 MiB, log-uniform; at most 16 slices held), write
 * (fill up to 1 MiB of a held slice with the process's pattern), free (after
 * checking the pattern is intact: no one else wrote there), info.
 *
 * Accounting is checked exactly:
 *  - at every GetPoolInfo a client makes, under load: its own row equals the
 *    bytes it holds (the rounded extents of its slices), the rows add up to
 *    used, and used + free = ready;
 *  - at CHECKPOINTS quiescent points (every process waits at a barrier): used
 *    equals the sum of what all processes believe they hold, and every
 *    process's row equals its own count.
 * Prints throughput and latency percentiles per operation; exits 1 on any
 * mismatch.
 *
 * The parent forks every client before it touches gRPC (gRPC does not survive
 * fork); shared state lives in one MAP_SHARED region.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "pinpool.h"

#define MAX_HELD 16
#define QUANTUM 256 /* the daemon's pool quantum: extents are sizes rounded up to it */
#define WRITE_MAX (1u << 20)

enum op { OP_ALLOC, OP_WRITE, OP_FREE, OP_INFO, NOPS };
static const char *const op_names[NOPS] = {"alloc (+ map)", "write", "free", "info"};

typedef struct client_state {
    char id[64];
    uint64_t held_bytes;       /* what this process believes it holds */
    long count[NOPS];
    long nospc;
    long errors;               /* accounting mismatches and failed calls */
    char first_error[256];
} client_state_t;

typedef struct shared {
    pthread_barrier_t barrier;
    int procs, ops, checkpoints;
    long parent_errors;
    client_state_t clients[];
    /* then float lat[procs][ops], then uint8_t type[procs][ops] */
} shared_t;

static shared_t *sh;
static float *lat;
static uint8_t *types;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void note_error(client_state_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_error(client_state_t *c, const char *fmt, ...)
{
    char buf[sizeof(c->first_error)];
    va_list ap;

    if (c->errors++ > 0)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    memcpy(c->first_error, buf, sizeof(buf));
}

static uint64_t extent_of(uint64_t size)
{
    return (size + QUANTUM - 1) / QUANTUM * QUANTUM;
}

/* One client's GetPoolInfo under load: what must hold at any moment. */
static void check_info(client_state_t *c, const pinpool_pool_info_t *info)
{
    uint64_t sum = 0;
    bool found = false;

    for (uint32_t i = 0; i < info->num_usage; i++) {
        sum += info->usage[i].bytes;
        if (strcmp(info->usage[i].client_id, c->id) == 0) {
            found = true;
            if (info->usage[i].bytes != c->held_bytes)
                note_error(c, "%s: the daemon counts %" PRIu64 " bytes, the client %" PRIu64,
                           c->id, info->usage[i].bytes, c->held_bytes);
        }
    }
    if (!found)
        note_error(c, "%s: not in GetPoolInfo", c->id);
    if (sum != info->used_bytes)
        note_error(c, "%s: rows add up to %" PRIu64 ", used is %" PRIu64, c->id, sum,
                   info->used_bytes);
    if (info->used_bytes + info->free_bytes != info->ready_bytes)
        note_error(c, "%s: used + free = %" PRIu64 ", ready = %" PRIu64, c->id,
                   info->used_bytes + info->free_bytes, info->ready_bytes);
}

static void __attribute__((noreturn)) client(const char *sock, int me)
{
    client_state_t *c = &sh->clients[me];
    pinpool_ctx_t *ctx = pinpool_connect(sock);
    pinpool_slice_t held[MAX_HELD];
    unsigned seed = 0x9e3779b9u * (unsigned)(me + 1);
    int n = 0, per = sh->ops / sh->checkpoints;
    float *mylat = lat + (size_t)me * (size_t)sh->ops;
    uint8_t *mytype = types + (size_t)me * (size_t)sh->ops;
    uint8_t pattern = (uint8_t)(me * 37 + 11);

    if (pinpool_err(ctx) != 0) {
        note_error(c, "connect: %s", pinpool_errmsg(ctx));
        snprintf(c->id, sizeof(c->id), "?");
    } else {
        snprintf(c->id, sizeof(c->id), "%s", pinpool_client_id(ctx));
    }
    pthread_barrier_wait(&sh->barrier); /* start */
    for (int i = 0; i < sh->ops; i++) {
        int r = rand_r(&seed) % 100;
        enum op op = r < 35 ? OP_ALLOC : r < 55 ? OP_WRITE : r < 85 ? OP_FREE : OP_INFO;
        if (op == OP_ALLOC && n == MAX_HELD)
            op = OP_FREE;
        if ((op == OP_WRITE || op == OP_FREE) && n == 0)
            op = OP_ALLOC;
        double t0 = now();
        int rc = 0;

        switch (op) {
        case OP_ALLOC: {
            int shift = 8 + rand_r(&seed) % 15; /* 256 B .. 4 MiB */
            uint64_t size = (1ull << shift) + (uint64_t)rand_r(&seed) % (1ull << shift);
            pinpool_slice_t s;
            rc = pinpool_alloc(ctx, size, NULL, &s);
            if (rc == 0) {
                held[n++] = s;
                c->held_bytes += extent_of(s.size);
                memset(s.ptr, pattern, s.size < 64 ? s.size : 64);
            } else if (rc == PINPOOL_ENOSPC) {
                c->nospc++;
                rc = 0;
            }
            break;
        }
        case OP_WRITE: {
            pinpool_slice_t *s = &held[rand_r(&seed) % n];
            memset(s->ptr, pattern, s->size < WRITE_MAX ? s->size : WRITE_MAX);
            break;
        }
        case OP_FREE: {
            int k = rand_r(&seed) % n;
            uint64_t freed = 0;
            const uint8_t *p = held[k].ptr;
            if (p[0] != pattern)
                note_error(c, "%s: slice %" PRIu64 " was overwritten (%u)", c->id, held[k].id,
                           p[0]);
            rc = pinpool_free(ctx, held[k].id, &freed);
            if (rc == 0) {
                if (freed != extent_of(held[k].size))
                    note_error(c, "%s: free gave back %" PRIu64 " bytes, expected %" PRIu64,
                               c->id, freed, extent_of(held[k].size));
                c->held_bytes -= extent_of(held[k].size);
                held[k] = held[--n];
            }
            break;
        }
        case OP_INFO: {
            pinpool_pool_info_t info;
            rc = pinpool_pool_info(ctx, &info);
            if (rc == 0) {
                check_info(c, &info);
                pinpool_pool_info_free(&info);
            }
            break;
        }
        default:
            break;
        }
        mylat[i] = (float)((now() - t0) * 1e6);
        mytype[i] = (uint8_t)op;
        c->count[op]++;
        if (rc != 0)
            note_error(c, "%s: %s failed: %s (%s)", c->id, op_names[op], pinpool_err_name(rc),
                       pinpool_errmsg(ctx));
        if ((i + 1) % per == 0 && (i + 1) / per <= sh->checkpoints) {
            pthread_barrier_wait(&sh->barrier); /* quiescent: the parent checks */
            pthread_barrier_wait(&sh->barrier);
        }
    }
    pinpool_close(ctx);
    pthread_barrier_wait(&sh->barrier); /* done */
    _exit(0);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static void row(const char *name, float *v, size_t n, double secs)
{
    if (n == 0)
        return;
    qsort(v, n, sizeof(float), cmp_float);
    printf("| %s | %zu | %.0f | %.1f | %.1f | %.1f |\n", name, n, (double)n / secs, v[n / 2],
           v[(size_t)((double)n * 0.99)], v[n - 1]);
}

/* At a quiescent point: the daemon's books against the clients' beliefs. */
static void checkpoint(pinpool_ctx_t *ctx, int k)
{
    pinpool_pool_info_t info;
    uint64_t believed = 0;

    if (pinpool_pool_info(ctx, &info) != 0) {
        fprintf(stderr, "checkpoint %d: GetPoolInfo failed: %s\n", k, pinpool_errmsg(ctx));
        sh->parent_errors++;
        return;
    }
    for (int i = 0; i < sh->procs; i++) {
        believed += sh->clients[i].held_bytes;
        for (uint32_t j = 0; j < info.num_usage; j++)
            if (strcmp(info.usage[j].client_id, sh->clients[i].id) == 0 &&
                info.usage[j].bytes != sh->clients[i].held_bytes) {
                fprintf(stderr, "checkpoint %d: %s holds %" PRIu64 " bytes, believes %" PRIu64 "\n",
                        k, sh->clients[i].id, info.usage[j].bytes, sh->clients[i].held_bytes);
                sh->parent_errors++;
            }
    }
    if (info.used_bytes != believed) {
        fprintf(stderr, "checkpoint %d: used %" PRIu64 " bytes, the clients believe %" PRIu64 "\n",
                k, info.used_bytes, believed);
        sh->parent_errors++;
    }
    printf("checkpoint %2d: used %" PRIu64 " bytes = sum held by %d clients (%u slices) %s\n", k,
           info.used_bytes, sh->procs, info.num_slices, info.used_bytes == believed ? "ok" : "MISMATCH");
    pinpool_pool_info_free(&info);
}

int main(int argc, char **argv)
{
    const char *sock = argc > 1 ? argv[1] : NULL;
    int procs = argc > 2 ? atoi(argv[2]) : 64;
    int ops = argc > 3 ? atoi(argv[3]) : 10000;
    int checkpoints = argc > 4 ? atoi(argv[4]) : 10;
    size_t size;
    pthread_barrierattr_t ba;

    if (sock == NULL || procs < 1 || ops < 1 || checkpoints < 1 || checkpoints > ops) {
        fprintf(stderr, "usage: load SOCKET [PROCS] [OPS] [CHECKPOINTS]\n");
        return 2;
    }
    size = sizeof(shared_t) + (size_t)procs * sizeof(client_state_t);
    size = (size + 63) & ~(size_t)63;
    size_t lat_off = size;
    size += (size_t)procs * (size_t)ops * (sizeof(float) + 1);
    sh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    lat = (float *)((char *)sh + lat_off);
    types = (uint8_t *)(lat + (size_t)procs * (size_t)ops);
    sh->procs = procs;
    sh->ops = ops;
    sh->checkpoints = checkpoints;
    pthread_barrierattr_init(&ba);
    pthread_barrierattr_setpshared(&ba, PTHREAD_PROCESS_SHARED);
    pthread_barrier_init(&sh->barrier, &ba, (unsigned)procs + 1);

    for (int i = 0; i < procs; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0)
            client(sock, i);
    }
    /* Every client is forked: gRPC may start in this process now. */
    pinpool_ctx_t *ctx = pinpool__connect_rpc_only(sock);
    if (pinpool_err(ctx) != 0) {
        fprintf(stderr, "load: %s\n", pinpool_errmsg(ctx));
        return 1;
    }
    pthread_barrier_wait(&sh->barrier);
    double t0 = now(), paused = 0;
    int per = ops / checkpoints;
    for (int k = 1; k <= checkpoints && k * per <= ops; k++) {
        pthread_barrier_wait(&sh->barrier);
        double p0 = now();
        checkpoint(ctx, k);
        paused += now() - p0;
        pthread_barrier_wait(&sh->barrier);
    }
    pthread_barrier_wait(&sh->barrier);
    double secs = now() - t0 - paused;
    for (int i = 0; i < procs; i++)
        waitpid(-1, NULL, 0);

    /* Every lease has ended: the pool must be empty. */
    pinpool_pool_info_t info;
    uint64_t used = UINT64_MAX;
    for (int i = 0; i < 200; i++, usleep(10000))
        if (pinpool_pool_info(ctx, &info) == 0) {
            used = info.used_bytes;
            pinpool_pool_info_free(&info);
            if (used == 0)
                break;
        }
    pinpool_close(ctx);

    long errors = sh->parent_errors, nospc = 0, total = (long)procs * ops;
    for (int i = 0; i < procs; i++) {
        errors += sh->clients[i].errors;
        nospc += sh->clients[i].nospc;
        if (sh->clients[i].errors > 0)
            fprintf(stderr, "client %d: %ld errors; first: %s\n", i, sh->clients[i].errors,
                    sh->clients[i].first_error);
    }
    if (used != 0) {
        fprintf(stderr, "after every client closed: used %" PRIu64 " bytes\n", used);
        errors++;
    }

    printf("\n%d processes x %d operations = %ld in %.2f s: %.0f operations/s "
           "(checkpoint pauses excluded); %ld allocations met a full pool; %ld errors\n\n",
           procs, ops, total, secs, (double)total / secs, nospc, errors);
    printf("| operation | count | per s | p50 us | p99 us | max us |\n|---|---|---|---|---|---|\n");
    size_t n = (size_t)total;
    float *all = malloc(n * sizeof(float)), *one = malloc(n * sizeof(float));
    if (all == NULL || one == NULL)
        return 1;
    for (int op = 0; op < NOPS; op++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (types[i] == op)
                one[m++] = lat[i];
        row(op_names[op], one, m, secs);
    }
    memcpy(all, lat, n * sizeof(float));
    row("all", all, n, secs);
    free(all);
    free(one);
    return errors == 0 ? 0 : 1;
}
