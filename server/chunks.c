/*
 * chunks.c - the host backend and the host pool's chunks.
 *
 * Owns: the choice of host backend (--host-backend; auto takes the fastest
 * that works, saying in the log which and what it skipped and why; the
 * hugetlb ones get the page size srv_huge_setup found, hugepages.h), the
 * home GPU of the host backend (no context on a GPU the daemon does not
 * need), the pool's reserved address space, the chunk
 * records, and the pin_threads threads that make the chunks at start-up
 * (with hugetlb and register, one more that makes the home GPU's context
 * meanwhile).
 * Those threads take chunk numbers in order and create them through the host
 * backend; chunk 0 alone first (the first allocation waits for it only), then
 * the rest in parallel; a chunk joins the host pool once all chunks before it
 * exist, so the ready part of the pool is always a prefix.  Before it takes a number a
 * thread asks memroom.c whether one more chunk still fits in the memory the
 * daemon may use (do_chunk_fits): if not, the pool stops growing there; a
 * hugetlb chunk that finds no free huge page (-ENOSPC) stops it too.
 * A chunk whose last slice went stays its uid's; when another uid needs it,
 * the host pool claims it (pool_claim, slices.c) and do_replace_chunks gives
 * it fresh memory at the same address before the claim ends: every
 * descriptor of the old memory that anyone kept (a dup'ed fd of a session
 * long gone) reaches only that old memory, freed by the kernel or the driver
 * with its last holder.
 * Never: hands out slices or looks at clients; unmaps a chunk before
 * srv_destroy (a replacement maps the new memory over the old).
 * Locking (see srv_int.h): a chunk thread takes srv->lock to pick its chunk
 * number and again to record the result, and makes the chunk in between
 * without it (pinning a chunk takes long).  It broadcasts chunks_cv after
 * every result.  do_replace_chunks likewise drops the lock around each
 * chunk_replace (the chunk is claimed: no slice, no cleaning, no one else).
 * base, capacity, nchunks and the record arrays are fixed after
 * srv_create; the records' entries, ready, chunk_err and replacements change
 * under the lock.
 */
#include "srv_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cudaload.h"
#include "log.h"
#include "pinpool.h"

static double elapsed_since(const struct timespec *t0)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* The GPU whose context the host backend uses: the first of --devices when
 * there are device pools (a GPU the daemon holds a context on anyway), else
 * 0; so that the daemon makes no context on a GPU it does not need. */
static int home_device(const srv_config_t *cfg)
{
    char *end;
    long d;

    if (cfg->device_pool_size == 0 || strcmp(cfg->devices, "all") == 0)
        return 0;
    d = strtol(cfg->devices, &end, 10);
    return end != cfg->devices && d >= 0 && d < SRV_MAX_DEVICES ? (int)d : 0;
}

static bool is_hugetlb(const ipc_host_ops_t *host)
{
    return host == &ipc_host_hugetlb || host == &ipc_host_hugetlb_cpu;
}

/* The hugetlb backend's page size and --pin-unit (rounded up to whole pages). */
static int configure_hugetlb(srv_t *srv, char *err, size_t errlen)
{
    uint64_t page = srv->cfg.huge_page, unit = srv->cfg.pin_unit;
    char a[32], b[32];

    if (page == 0) {
        snprintf(err, errlen, "--host-backend %s needs huge pages for the pool and has none: %s",
                 srv->host->name, srv->cfg.huge_why[0] ? srv->cfg.huge_why : "none found");
        return PINPOOL_EINVAL;
    }
    if (unit % page != 0) {
        uint64_t up = (unit / page + 1) * page;
        srv_info("note: --pin-unit %s rounded up to %s, whole %s huge pages",
                 pool_format_size(unit, a, sizeof(a)), pool_format_size(up, b, sizeof(b)),
                 pool_format_size(page, a, sizeof(a)));
        unit = up;
    }
    if (ipc_hugetlb_configure(page, unit) != 0) {
        snprintf(err, errlen, "huge pages of %s are not supported", pool_format_size(page, a, sizeof(a)));
        return PINPOOL_EINVAL;
    }
    return 0;
}

/* --host-backend: the one asked for, or auto's pick; the log says which, and
 * for auto what it skipped and why. */
static int pick_backend(srv_t *srv, char *err, size_t errlen)
{
    const char *name = srv->cfg.host_backend;
    char why[1024], pg[32];
    int rc;

    ipc_cuda_set_home_device(home_device(&srv->cfg));
    if (strcmp(name, "auto") == 0) {
        srv->host = ipc_host_auto(srv->cfg.huge_page, srv->cfg.huge_why, why, sizeof(why));
        if (is_hugetlb(srv->host))
            srv_info("host backend auto: %s, the fastest here (%s pages: %s)%s%s", srv->host->name,
                     pool_format_size(srv->cfg.huge_page, pg, sizeof(pg)), srv->cfg.huge_why,
                     why[0] ? "; skipped " : "", why);
        else if (srv->host->cuda)
            srv_info("host backend auto: %s, the fastest that works here; skipped %s",
                     srv->host->name, why[0] ? why : "nothing");
        else
            srv_info("host backend auto: %s: no CUDA host backend here (%s): running CPU-only "
                     "(--host-backend hugetlb-cpu for huge pages without CUDA)", srv->host->name, why);
    } else {
        srv->host = ipc_host_backend(name);
        if (srv->host == NULL) {
            snprintf(err, errlen, "--host-backend %s is not known", name);
            return PINPOOL_EINVAL;
        }
        rc = srv->host->probe(why, sizeof(why));
        if (rc != 0) {
            snprintf(err, errlen, "--host-backend %s cannot work here: %s%s", name, why,
                     srv->host == &ipc_host_hugetlb ? " (--host-backend hugetlb-cpu makes the "
                                                      "same chunks without CUDA)" : "");
            return rc;
        }
        if (is_hugetlb(srv->host))
            srv_info("host backend %s: %s pages: %s", name,
                     pool_format_size(srv->cfg.huge_page, pg, sizeof(pg)), srv->cfg.huge_why);
    }
    return is_hugetlb(srv->host) ? configure_hugetlb(srv, err, errlen) : 0;
}

int srv_chunks_open(srv_t *srv, char *err, size_t errlen)
{
    const srv_config_t *cfg = &srv->cfg;
    int rc = pick_backend(srv, err, errlen);

    if (rc != 0)
        return rc;
    srv->nchunks = (uint32_t)((cfg->mem_pool_size + cfg->chunk_size - 1) / cfg->chunk_size);
    srv->capacity = (uint64_t)srv->nchunks * cfg->chunk_size;
    return 0;
}

int srv_chunks_reserve(srv_t *srv, char *err, size_t errlen)
{
    int rc;

    srv->chunks = calloc(srv->nchunks, sizeof(*srv->chunks));
    srv->created = calloc(srv->nchunks, sizeof(*srv->created));
    if (srv->chunks == NULL || srv->created == NULL) {
        snprintf(err, errlen, "out of memory for %" PRIu32 " chunk records", srv->nchunks);
        return -ENOMEM;
    }
    rc = srv->host->reserve(srv->capacity, &srv->base);
    if (rc != 0) {
        char sz[32];
        snprintf(err, errlen, "cannot reserve %s of address space: %s",
                 pool_format_size(srv->capacity, sz, sizeof(sz)), pinpool_strerror(rc));
        srv->base = NULL;
    }
    return rc;
}

void srv_chunks_close(srv_t *srv)
{
    pthread_mutex_lock(&srv->lock);
    pthread_cond_broadcast(&srv->chunks_cv); /* threads waiting for chunk 0 see stop_chunks */
    pthread_mutex_unlock(&srv->lock);
    for (uint32_t i = 0; i < srv->nthreads; i++)
        pthread_join(srv->threads[i], NULL);
    free(srv->threads);
    for (uint32_t i = 0; srv->created != NULL && i < srv->nchunks; i++)
        if (srv->created[i])
            srv->host->chunk_destroy(&srv->chunks[i]);
    if (srv->base != NULL)
        srv->host->release(srv->base, srv->capacity);
    free(srv->chunks);
    free(srv->created);
}

/*
 * Under srv->lock: hugetlb chunk i found no free huge page (msg says so:
 * another process took them after srv_huge_setup counted them).  The pool
 * stops growing before i, as when memory runs out (memroom.c's pool_short,
 * which do_chunk_fits then honours); only when not one chunk exists is it an
 * error.  Chunks past i that other threads make anyway never join (the ready
 * part is a prefix) and go at exit with the rest.
 */
static void hugetlb_stops(srv_t *srv, uint32_t i, const char *msg)
{
    char a[32], b[32];

    if (srv->pool_short[0] == '\0') {
        snprintf(srv->pool_short, sizeof(srv->pool_short), "%s", msg);
        srv_warn("the pool stops growing at %s of %s: %s (GetPoolInfo: stopped_short)",
                 pool_format_size((uint64_t)i * srv->cfg.chunk_size, a, sizeof(a)),
                 pool_format_size(srv->capacity, b, sizeof(b)), msg);
    }
    if (srv->next_chunk > i)
        srv->next_chunk = i;
    if (i == 0 && srv->chunk_err == 0) {
        srv->chunk_err = -ENOSPC;
        snprintf(srv->chunk_errmsg, sizeof(srv->chunk_errmsg), "%s", msg);
    }
}

static void *chunk_thread(void *arg)
{
    srv_t *srv = arg;
    uint64_t size = srv->cfg.chunk_size;
    bool huge = is_hugetlb(srv->host);

    for (;;) {
        ipc_chunk_t chunk;
        char msg[256] = "", why[256];
        /* memroom.c; no lock.  Huge pages are not in MemAvailable nor charged to
         * the memory cgroup: a hugetlb chunk that finds none free fails with
         * -ENOSPC instead (below), and the kernel never OOM-kills for it. */
        uint64_t room = huge ? UINT64_MAX : srv_mem_room(why, sizeof(why));
        uint32_t i, n;
        bool all_made = false;
        int rc;

        pthread_mutex_lock(&srv->lock);
        /* Chunk 0 is made alone: the first allocation waits for it only, not
         * for a share of the CPU, the kernel and the driver with the others */
        while (srv->next_chunk > 0 && srv->ready == 0 && !srv->stop_chunks &&
               srv->chunk_err == 0 && srv->pool_short[0] == '\0')
            pthread_cond_wait(&srv->chunks_cv, &srv->lock);
        if (srv->stop_chunks || srv->chunk_err != 0 || srv->next_chunk >= srv->nchunks ||
            !do_chunk_fits(srv, room, why)) {
            pthread_mutex_unlock(&srv->lock);
            return NULL;
        }
        i = srv->next_chunk++;
        pthread_mutex_unlock(&srv->lock);

        rc = srv->host->chunk_create(&chunk, (char *)srv->base + (uint64_t)i * size, size, i, msg,
                                     sizeof(msg));

        pthread_mutex_lock(&srv->lock);
        if (rc == -ENOSPC && huge) {
            hugetlb_stops(srv, i, msg);
        } else if (rc != 0) {
            if (srv->chunk_err == 0) {
                srv->chunk_err = rc;
                snprintf(srv->chunk_errmsg, sizeof(srv->chunk_errmsg), "%s",
                         msg[0] != '\0' ? msg : pinpool_strerror(rc));
            }
        } else {
            srv->chunks[i] = chunk;
            srv->created[i] = true;
            for (n = 0; srv->ready + n < srv->nchunks && srv->created[srv->ready + n]; n++)
                ;
            if (n > 0 && pool_add_chunks(srv->pools[HOST_POOL], n) == 0)
                srv->ready += n;
            if (srv->ready == srv->nchunks) {
                srv->chunks_seconds = elapsed_since(&srv->chunks_started);
                all_made = true;
            }
        }
        pthread_cond_broadcast(&srv->chunks_cv);
        pthread_mutex_unlock(&srv->lock);
        if (all_made)
            srv_gpu_refresh(srv); /* the GPUs' use with the whole pool pinned */
        if (rc != 0)
            return NULL;
    }
}

/* The home GPU's context made (~0.2-0.3 s on an H200) while chunk 0 is being
 * populated: hugetlb and register fill their memfds before they need CUDA. */
static void *context_thread(void *arg)
{
    (void)arg;
    ipc_cuda_use_device(ipc_cuda_home_device()); /* the chunk threads wait for it there */
    return NULL;
}

int srv_chunks_start(srv_t *srv)
{
    uint32_t want = (uint32_t)srv->cfg.pin_threads;
    bool early_ctx = srv->host->cuda && srv->host != &ipc_host_vmm;

    if (want > srv->nchunks)
        want = srv->nchunks;
    srv->threads = calloc(want + 1, sizeof(*srv->threads));
    if (srv->threads == NULL)
        return -ENOMEM;
    clock_gettime(CLOCK_MONOTONIC, &srv->chunks_started);
    if (early_ctx && pthread_create(&srv->threads[0], NULL, context_thread, NULL) == 0)
        srv->nthreads++; /* else the first chunk makes it, later */
    for (uint32_t i = 0; i < want; i++) {
        int rc = pthread_create(&srv->threads[srv->nthreads], NULL, chunk_thread, srv);
        if (rc != 0) {
            if (i == 0)
                return -rc; /* srv_chunks_close joins the context thread */
            break; /* fewer threads, same work */
        }
        srv->nthreads++;
    }
    return 0;
}

int do_replace_chunks(srv_t *srv, const pool_claim_t *claim)
{
    pool_t *host = srv->pools[HOST_POOL];
    int rc = 0;

    for (uint32_t i = claim->first; i < claim->first + claim->n && rc == 0; i++) {
        pool_chunk_info_t ci;
        ipc_chunk_t chunk;
        char msg[256] = "", sz[32];
        uint64_t t0;

        if (!pool_claim_fresh(host, i) || pool_chunk_info(host, i, &ci) != 0)
            continue;
        chunk = srv->chunks[i];
        pthread_mutex_unlock(&srv->lock);
        t0 = mono_ns();
        rc = srv->host->chunk_replace(&chunk, i, msg, sizeof(msg));
        t0 = mono_ns() - t0;
        pthread_mutex_lock(&srv->lock);
        pool_format_size(chunk.size, sz, sizeof(sz));
        if (rc == 0) {
            srv->chunks[i] = chunk;
            srv->replacements++;
            srv_info("chunk %" PRIu32 " (%s) passes from uid %" PRIu64 " to uid %" PRIu64
                     " with fresh memory (%.1f ms; %" PRIu64 " such so far)%s%s", i, sz, ci.tenant,
                     claim->tenant, (double)t0 / 1e6, srv->replacements, msg[0] ? ": " : "", msg);
        } else {
            srv_warn("chunk %" PRIu32 " (%s) cannot pass from uid %" PRIu64 " to uid %" PRIu64
                     ": %s", i, sz, ci.tenant, claim->tenant,
                     msg[0] != '\0' ? msg : pinpool_strerror(rc));
        }
    }
    pool_claim_end(host, claim, rc == 0);
    return rc;
}

bool do_chunks_coming(const srv_t *srv)
{
    return srv->chunk_err == 0 && (srv->ready < srv->next_chunk ||
                                   (srv->ready < srv->nchunks && srv->pool_short[0] == '\0'));
}

int srv_wait_chunks(srv_t *srv, uint32_t n, char *err, size_t errlen)
{
    int rc;

    pthread_mutex_lock(&srv->lock);
    if (n > srv->nchunks)
        n = srv->nchunks;
    while (srv->ready < n && do_chunks_coming(srv))
        pthread_cond_wait(&srv->chunks_cv, &srv->lock);
    rc = srv->chunk_err;
    if (rc != 0)
        snprintf(err, errlen, "%s", srv->chunk_errmsg);
    pthread_mutex_unlock(&srv->lock);
    return rc;
}

void srv_chunk_progress(srv_t *srv, uint32_t *ready, uint32_t *total, double *seconds)
{
    pthread_mutex_lock(&srv->lock);
    *ready = srv->ready;
    *total = srv->nchunks;
    *seconds = srv->ready == srv->nchunks ? srv->chunks_seconds
                                          : elapsed_since(&srv->chunks_started);
    pthread_mutex_unlock(&srv->lock);
}

/* ---- the GPUs the daemon holds a context on ------------------------------------- */

void srv_gpu_refresh(srv_t *srv)
{
    srv_gpu_t g[SRV_MAX_DEVICES];
    uint64_t pool[SRV_MAX_DEVICES] = {0};
    bool cuda_host = srv->host->cuda;
    int home = ipc_cuda_home_device();
    uint32_t n = 0;

    for (uint32_t i = 0; i < srv->ndevs; i++)
        if (srv->devs[i].device >= 0 && srv->devs[i].device < SRV_MAX_DEVICES)
            pool[srv->devs[i].device] = srv->devs[i].size;
    for (int dev = 0; dev < ipc_cuda_device_count() && dev < SRV_MAX_DEVICES; dev++) {
        uint64_t used, total;
        if (ipc_cuda_gpu_memory(dev, &used, &total) != 0) /* no context of ours there */
            continue;
        bool pinning = cuda_host && dev == home;
        g[n] = (srv_gpu_t){
            .device_id = dev,
            .role = pool[dev] && pinning ? "device pool, host pinning"
                    : pool[dev]          ? "device pool"
                                         : "host pinning",
            .device_pool_bytes = pool[dev],
            .used = used,
            .total = total,
        };
        n++;
    }
    pthread_mutex_lock(&srv->lock);
    memcpy(srv->gpus, g, n * sizeof(g[0]));
    srv->ngpus = n;
    pthread_mutex_unlock(&srv->lock);
}

uint32_t srv_gpu_footprint(srv_t *srv, srv_gpu_t *out)
{
    uint32_t n;

    pthread_mutex_lock(&srv->lock);
    n = srv->ngpus;
    memcpy(out, srv->gpus, n * sizeof(out[0]));
    pthread_mutex_unlock(&srv->lock);
    return n;
}
