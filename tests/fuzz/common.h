/*
 * common.h - what the two libFuzzer targets share: a small real srv_t (memfd
 * chunks, 8 MiB in 2 MiB chunks, every chunk made before the first input) and
 * checks of our own resources between inputs.
 *
 * Owns: the process-wide srv of a fuzzer (fuzzers are single processes; this
 * is the one place outside server/main.c with a global).
 * Never: prints for an input that is handled; a broken invariant aborts, so
 * that libFuzzer keeps the input as a crash.
 */
#ifndef PINPOOL_FUZZ_COMMON_H
#define PINPOOL_FUZZ_COMMON_H

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "srv.h"

#define FUZZ_CHUNK (2ull << 20)

#define fuzz_check(cond)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond);  \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

/* The spill tier of the fuzzers' srv: "none", or set once by a fuzzer
 * (fuzz_rpc.c: a file tier in a temp directory, so that calls that spill or
 * restore are put off to where they may wait, as on the daemon's workers). */
static char fuzz_tier[512] = "none";

/* The fuzzers' limits: small, so that inputs of 4 KiB reach them. */
#define FUZZ_MAX_MESSAGE "1MiB"
#define FUZZ_MAX_ITEMS "64"

static inline srv_t *fuzz_srv_create(void)
{
    srv_config_t cfg;
    char err[256];
    srv_t *srv;

    srv_log_level = -1; /* not even errors: malformed input is the point */
    srv_config_defaults(&cfg);
    if (srv_config_set(&cfg, "mem-pool-size", "8MiB", err, sizeof(err)) != 0 ||
        srv_config_set(&cfg, "chunk-size", "2MiB", err, sizeof(err)) != 0 ||
        srv_config_set(&cfg, "pin-threads", "1", err, sizeof(err)) != 0 ||
        srv_config_set(&cfg, "spill-tier", fuzz_tier, err, sizeof(err)) != 0 ||
        srv_config_set(&cfg, "spill-low-watermark", "0", err, sizeof(err)) != 0 ||
        srv_config_set(&cfg, "max-message-size", FUZZ_MAX_MESSAGE, err, sizeof(err)) != 0 ||
        srv_config_set(&cfg, "max-batch-keys", FUZZ_MAX_ITEMS, err, sizeof(err)) != 0 ||
        srv_create(&srv, &cfg, err, sizeof(err)) != 0 || srv_start_chunks(srv) != 0 ||
        srv_wait_chunks(srv, UINT32_MAX, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz: cannot make the srv: %s\n", err);
        exit(1);
    }
    return srv;
}

typedef struct fuzz_ids {
    char id[16][SRV_CLIENT_ID_LEN];
    size_t n;
} fuzz_ids_t;

static inline void fuzz_collect(const srv_client_usage_t *u, void *arg)
{
    fuzz_ids_t *ids = arg;

    if (ids->n < sizeof(ids->id) / sizeof(ids->id[0]))
        snprintf(ids->id[ids->n++], SRV_CLIENT_ID_LEN, "%s", u->client_id);
}

/*
 * Free every client's slices (a kept slice through its tag, as a caller of
 * the daemon's uid); then nothing may be left in use.  Named objects (Put,
 * Release) have no listing, and what is charged to a detached client keeps
 * it listed: when anything is left, the srv is made anew, so each input
 * starts from an empty pool.
 */
static inline void fuzz_reset(srv_t **srvp)
{
    srv_t *srv = *srvp;
    srv_pool_info_t info;
    fuzz_ids_t ids;
    char msg[256];
    bool left = false;

    do {
        /* The first page of every uid's clients, as a caller without a
         * session (the daemon's uid) sees them. */
        srv_info_query_t q = {.page_size = sizeof(ids.id) / sizeof(ids.id[0])};
        srv_info_page_t page;
        ids.n = 0;
        fuzz_check(srv_pool_page(srv, "", &q, &info, fuzz_collect, NULL, &ids, &page, msg,
                                 sizeof(msg)) == 0);
        for (size_t i = 0; i < ids.n; i++) {
            uint64_t freed;
            uint32_t n;
            if (strncmp(ids.id[i], "kept:", 5) == 0) {
                srv_slice_t s;
                if (srv_attach(srv, "", "fuzz-reset", ids.id[i] + 5, &s, msg, sizeof(msg)) != 0 ||
                    srv_free(srv, "", "fuzz-reset", s.info.id, &freed, &n, msg, sizeof(msg)) != 0)
                    left = true; /* another uid's */
            } else {
                fuzz_check(srv_free(srv, "", ids.id[i], 0, &freed, &n, msg, sizeof(msg)) == 0);
            }
        }
    } while (!left && ids.n == sizeof(ids.id) / sizeof(ids.id[0]));
    srv_pool_info(srv, &info, NULL, NULL);
    if (left || info.stats.used != 0 || info.num_clients != 0 || info.num_kept != 0) {
        srv_destroy(srv);
        *srvp = srv = fuzz_srv_create();
        srv_pool_info(srv, &info, NULL, NULL);
    }
    fuzz_check(info.num_clients == 0);
    fuzz_check(info.num_kept == 0);
    fuzz_check(info.stats.used == 0);
    fuzz_check(info.stats.num_slices == 0);
    fuzz_check(info.stats.free + info.stats.dirty == info.stats.ready); /* dirty: being cleaned */
}

/* Our open descriptors; list them on stderr when show is true. */
static inline int fuzz_nfds_show(int show)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        n++;
        if (show) {
            char path[300], target[256];
            ssize_t len;
            snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
            len = readlink(path, target, sizeof(target) - 1);
            target[len > 0 ? len : 0] = '\0';
            fprintf(stderr, "  fd %s -> %s\n", e->d_name, target);
        }
    }
    closedir(d);
    return n;
}

static inline int fuzz_nfds(void)
{
    return fuzz_nfds_show(0);
}

#endif
