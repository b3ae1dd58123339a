/*
 * srv.c - the daemon's state put together: srv_create and srv_destroy, the
 * start of its threads, shutdown, the config accessors and srv_pool_info.
 *
 * Owns: struct srv as a whole (its mutex and condition variables are made and
 * destroyed here) and shutting_down.  Every other part of it belongs to one
 * room, listed in srv_int.h: chunks.c, sessions.c, slices.c, objstore.c and
 * spill.c.  srv_create opens the rooms in the order (open_steps) that decides
 * which error a person sees first; srv_destroy stops the threads
 * (the maintenance thread before the chunks that a spill in flight reads)
 * and then closes the rooms.
 * Never: does a room's work itself.
 * Locking (see srv_int.h for the rules of every room): srv_begin_shutdown and
 * srv_pool_info take srv->lock and never drop it.  The wait policy
 * (srv_set_nowait) is a thread-local flag: no lock.  srv_create,
 * srv_start_chunks and srv_destroy run on one thread, srv_destroy only once
 * no call is in flight.
 */
#include "srv_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "pinpool.h"

/* ---- life cycle ----------------------------------------------------------- */

/*
 * The rooms open in this order, which decides the error a person sees first
 * when several options are wrong.  Each step leaves what it made for
 * srv_destroy to free.
 */
static int (*const open_steps[])(srv_t *srv, char *err, size_t errlen) = {
    srv_objects_open,        /* the object table */
    srv_spill_open,          /* --spill-tier (recovers the objects in the tier) */
    srv_objects_recount,     /* those objects charged to their uids */
    srv_chunks_open,         /* --host-backend, the number of chunks */
    srv_spill_watermark,     /* --spill-low-watermark, a share of that capacity */
    srv_slices_open_host,    /* the host pool, empty until chunks join it */
    srv_chunks_reserve,      /* the chunk records and the address space */
    srv_slices_open_devices, /* --devices, --device-pool-size */
};

int srv_create(srv_t **out, const srv_config_t *cfg, char *err, size_t errlen)
{
    srv_t *srv;

    srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return -ENOMEM;
    srv->cfg = *cfg;
    srv->uid = geteuid();
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->chunks_cv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&srv->obj_cv, &ca);
    pthread_cond_init(&srv->maint_cv, &ca);
    pthread_cond_init(&srv->clean_cv, &ca);
    pthread_cond_init(&srv->cleaned_cv, &ca);
    pthread_condattr_destroy(&ca);
    RB_INIT(&srv->heaviest);
    RB_INIT(&srv->uids);
    srv->next_owner = 1;
    for (size_t i = 0; i < sizeof(open_steps) / sizeof(open_steps[0]); i++) {
        int rc = open_steps[i](srv, err, errlen);
        if (rc != 0) {
            srv_destroy(srv);
            return rc;
        }
    }
    *out = srv;
    return 0;
}

void srv_destroy(srv_t *srv)
{
    if (srv == NULL)
        return;
    pthread_mutex_lock(&srv->lock);
    srv->stop_chunks = true;
    srv->stop_maint = true;
    pthread_cond_broadcast(&srv->maint_cv);
    pthread_mutex_unlock(&srv->lock);
    srv_maint_join(srv); /* first: a spill in flight reads chunk memory */
    srv_cleaner_stop(srv); /* and the cleaner writes it */
    srv_chunks_close(srv);
    srv_slices_close(srv);
    srv_clients_close(srv);
    objs_destroy(srv->objs);
    tier_close(srv->tier);
    srv_cluster_close(srv);
    pthread_cond_destroy(&srv->obj_cv);
    pthread_cond_destroy(&srv->maint_cv);
    pthread_cond_destroy(&srv->clean_cv);
    pthread_cond_destroy(&srv->cleaned_cv);
    pthread_cond_destroy(&srv->chunks_cv);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}

/*
 * Start the maintenance thread (spill.c), the cleaner (cleaner.c) and the
 * chunk threads (chunks.c): srv_create starts no thread, so that a failed
 * start-up has none to stop.
 */
int srv_start_chunks(srv_t *srv)
{
    srv_maint_start(srv);
    srv_cleaner_start(srv);
    return srv_chunks_start(srv);
}

void srv_begin_shutdown(srv_t *srv)
{
    pthread_mutex_lock(&srv->lock);
    srv->shutting_down = true;
    pthread_cond_broadcast(&srv->chunks_cv);
    pthread_cond_broadcast(&srv->obj_cv);
    pthread_mutex_unlock(&srv->lock);
}

/* The calling thread's wait policy (srv_set_nowait); every thread starts with false. */
static _Thread_local bool nowait_here;

void srv_set_nowait(bool nowait)
{
    nowait_here = nowait;
}

bool do_nowait(void)
{
    return nowait_here;
}

int do_shutdown_error(const srv_t *srv, char *msg, size_t msglen)
{
    if (!srv->shutting_down)
        return 0;
    snprintf(msg, msglen, "the daemon is shutting down");
    return PINPOOL_ESHUTDOWN;
}

const srv_config_t *srv_config(const srv_t *srv)
{
    return &srv->cfg;
}

const ipc_host_ops_t *srv_host_backend(const srv_t *srv)
{
    return srv->host;
}

/* The pool's numbers (lock held). */
static void do_pool_numbers(srv_t *srv, srv_pool_info_t *info);

void srv_pool_info(srv_t *srv, srv_pool_info_t *info,
                   void (*uidfn)(const srv_uid_usage_t *usage, void *arg), void *arg)
{
    const srv_principal_t daemon = {.admin = true};

    pthread_mutex_lock(&srv->lock);
    do_pool_numbers(srv, info);
    if (uidfn != NULL)
        do_foreach_uid(srv, &daemon, uidfn, arg);
    pthread_mutex_unlock(&srv->lock);
}

/* The pool's numbers (lock held). */
static void do_pool_numbers(srv_t *srv, srv_pool_info_t *info)
{
    memset(info, 0, sizeof(*info));
    pool_get_stats(srv->pools[HOST_POOL], &info->stats);
    info->chunk_size = srv->cfg.chunk_size;
    info->num_chunks = srv->nchunks;
    info->num_clients = srv->nclients - srv->nkept;
    info->num_kept = srv->nkept;
    info->host_backend = srv->host->name;
    info->mode = srv->host->cuda || srv->ndevs > 0 ? "cuda" : "cpu-only";
    info->pin_seconds = srv->ready == srv->nchunks ? srv->chunks_seconds : 0;
    snprintf(info->stopped_short, sizeof(info->stopped_short), "%s", srv->pool_short);
    info->chunk_replacements = srv->replacements;
    info->ndevices = srv->ndevs;
    for (uint32_t i = 0; i < srv->ndevs; i++) {
        info->devices[i].device_id = srv->devs[i].device;
        snprintf(info->devices[i].name, sizeof(info->devices[i].name), "%s", srv->devs[i].name);
        pool_get_stats(srv->pools[i + 1], &info->devices[i].stats);
    }
}

int srv_pool_page(srv_t *srv, const char *token, const srv_info_query_t *q,
                  srv_pool_info_t *info, void (*fn)(const srv_client_usage_t *usage, void *arg),
                  void (*uidfn)(const srv_uid_usage_t *usage, void *arg), void *arg,
                  srv_info_page_t *page, char *msg, size_t msglen)
{
    srv_principal_t p;
    int rc;

    pthread_mutex_lock(&srv->lock);
    rc = do_access(srv, SRV_OP_INFO, token, NULL, &p, msg, msglen);
    if (rc == 0) {
        do_pool_numbers(srv, info);
        rc = do_page_clients(srv, &p, q, fn, arg, page, msg, msglen);
    }
    if (rc == 0 && uidfn != NULL)
        do_foreach_uid(srv, &p, uidfn, arg);
    pthread_mutex_unlock(&srv->lock);
    return rc;
}
