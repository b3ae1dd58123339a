/*
 * tier_mooncake.h - what the three files of the Mooncake spill tier share:
 * the tier's state (mc_t), one item of a batch as the drivers see it, and
 * the two drivers' entry points.
 *
 *   tier_mooncake.c          the URI and its options, key encoding, Mooncake's
 *                            error codes, the staging buffer, the batch engine
 *                            and the tier_ops_t table (start reading here)
 *   tier_mooncake_adapter.c  driver 1: the mooncake_adapter.py child process
 *   tier_mooncake_dlopen.c   driver 2: Mooncake's C API, bound with dlopen
 *
 * A driver runs one command (an op over up to BATCH_MAX items whose bytes lie
 * in the staging buffer m->stage) and fills each item's rc and aux.
 * Locking: m->lock serialises every call of the tier: the batch engine holds
 * it around everything it asks a driver, so a driver function runs with
 * m->lock held (or inside mc_open/mc_close, before or after any call) and
 * never takes it.  Nothing else is shared.
 */
#ifndef PINPOOL_TIER_MOONCAKE_H
#define PINPOOL_TIER_MOONCAKE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "tier.h"

enum { OP_HELLO = 1, OP_SETBUF, OP_PUT, OP_GET, OP_EXISTS, OP_SIZE, OP_REMOVE };
#define FLAG_FORCE 1u  /* REMOVE: ignore readers' leases */

/* Mooncake's error codes (mooncake-store/include/types.h) that we act on. */
#define MC_INVALID_PARAMS (-600)
#define MC_NO_AVAILABLE_HANDLE (-200)
#define MC_OBJECT_NOT_FOUND (-704)
#define MC_OBJECT_HAS_LEASE (-706)

#define REQ_MAX (64 * 1024)  /* one command message */
#define BATCH_MAX 512        /* items per command */
#define REQ_HDR 16
#define ITEM_HDR 20
#define REP_HDR 16
#define KEYBUF (3 * TIER_KEY_MAX + 256 + 1)

typedef struct mc_item {
    char key[KEYBUF]; /* encoded: prefix + escaped key */
    uint32_t keylen;
    uint64_t off, len;  /* in the staging buffer */
    int64_t rc, aux;
} mc_item_t;

/* The C API of store_c.h, bound with dlsym. */
typedef struct mc_capi {
    void *(*create)(void);
    void (*destroy)(void *);
    int (*setup)(void *, const char *, const char *, uint64_t, uint64_t, const char *,
                 const char *, const char *);
    int (*put_from)(void *, const char *, void *, size_t, const void *);
    int64_t (*get_into)(void *, const char *, void *, size_t);
    int (*is_exist)(void *, const char *);
    int64_t (*get_size)(void *, const char *);
    int (*remove)(void *, const char *, int);
    int (*register_buffer)(void *, void *, size_t);
    int (*unregister_buffer)(void *, void *);
    int (*batch_put_from)(void *, const char **, void **, const size_t *, size_t, const void *,
                          int *);
    int (*batch_get_into)(void *, const char **, void **, const size_t *, size_t, int64_t *);
    int (*batch_is_exist)(void *, const char **, size_t, int *);
} mc_capi_t;

typedef struct mc {
    pthread_mutex_t lock;
    /* configuration */
    char master[256], metadata[512], protocol[16], device[128], hostname[256], prefix[256];
    char lib[1024], python[1024], adapter[4096], log[1024];
    uint64_t segment, local_buffer, buffer;
    int timeout_ms, lease_wait_ms;
    bool force_remove, use_dlopen;
    /* placement of every put (Mooncake's ReplicateConfig) and the master entry */
    uint32_t replicas;          /* replica_num */
    bool soft_pin, hard_pin;    /* soft_pin_action ENABLE (with_soft_pin), with_hard_pin */
    bool prefer_local;          /* preferred_segment: this node's segment */
    char local_segment[256];    /* that segment's name when the daemon contributes none */
    char master_entry[512];     /* what setup gets as the master: HOST:PORT, or etcd://... */
    char preferred[256];        /* the segment the adapter prefers (its HELLO reply) */
    /* staging buffer, mapped here */
    void *stage;
    uint64_t stage_len;
    /* adapter */
    pid_t pid;
    int sock, memfd;
    uint64_t seq;
    bool dead; /* start a new adapter before the next call */
    char replace[32];
    uint32_t restarts;
    /* dlopen */
    void *dl;
    mc_capi_t c;
    void *store;
    /* one command and its reply (under lock) */
    char req[REQ_MAX];
    char rep[REP_HDR + BATCH_MAX * 16 + 4096 + 64];
} mc_t;

static inline uint64_t tier_mc_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Mooncake's name for one of its error codes ("OBJECT_NOT_FOUND"), or "error". */
const char *tier_mc_code_name(int64_t rc);
/* A staging buffer of len bytes: a memfd (adapter: *fdout is its fd) or
 * anonymous memory (dlopen: *fdout is -1).  0, or -errno. */
int tier_mc_stage_map(mc_t *m, uint64_t len, int *fdout, void **mapout);

/* ---- tier_mooncake_adapter.c -------------------------------------------------------- */

/* Find mooncake_adapter.py (adapter=, $PINPOOL_MOONCAKE_ADAPTER, or next to
 * the binary) into m->adapter.  0 or -errno. */
int tier_mc_adapter_find(mc_t *m);
/* Start the adapter, greet it with the options and give it a staging buffer
 * (of m->stage_len after a restart, else of m->buffer).  0, or an error with err. */
int tier_mc_adapter_start(mc_t *m, char *err, size_t errlen);
/* Stop the adapter: EOF asks it to go (gently: after 2 s it is killed), or
 * SIGKILL at once.  m->dead: the next call starts a new one. */
void tier_mc_adapter_stop(mc_t *m, bool gently);
/* Give the adapter a staging buffer of len bytes (replacing the old one). */
int tier_mc_adapter_setbuf(mc_t *m, uint64_t len);
/* Run op over items through the adapter, at most until deadline (ms); a
 * dead adapter is started again first. */
int tier_mc_adapter_run(mc_t *m, uint16_t op, uint16_t flags, mc_item_t *items, uint32_t n,
                        uint64_t deadline);

/* ---- tier_mooncake_dlopen.c --------------------------------------------------------- */

/* dlopen m->lib, bind the C API, create and set up the client.  0 or an error with err. */
int tier_mc_dlopen_open(mc_t *m, char *err, size_t errlen);
/* A registered staging buffer of len bytes (replacing the old one). */
int tier_mc_dlopen_setbuf(mc_t *m, uint64_t len);
/* Run op over items through the C API (not interruptible: Mooncake's own
 * RPC timeouts bound it). */
int tier_mc_dlopen_run(mc_t *m, uint16_t op, uint16_t flags, mc_item_t *items, uint32_t n);

#endif
