/*
 * srv.c - the daemon's state (see srv.h for what it owns and its lock).
 *
 * Clients.  Every client has an owner number in the pool.  A session client is
 * made by srv_session_open for an fd-socket connection; its id is random and
 * starts with "s-", and it lives as long as the connection.  Any other id names
 * a detached client (a stock gRPC caller): it appears on its first allocation
 * and goes when it holds nothing.  An "s-" id whose session is gone is refused,
 * so that a call racing a dying client cannot leave memory without a lease.
 *
 * Chunks.  pin_threads threads take chunk numbers in order and create them
 * through the host backend; a chunk joins the pool once all chunks before it
 * exist, so the ready part of the pool is always a prefix.
 */
#include "srv.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "log.h"
#include "pinpool.h"
#include "rbtree.h"

#define SESSION_PREFIX "s-"

struct srv_client {
    RB_ENTRY(srv_client) node;
    char id[SRV_CLIENT_ID_LEN];
    uint64_t owner;
    bool session;
    ipc_cred_t cred;
};

static int client_cmp(const struct srv_client *a, const struct srv_client *b)
{
    return strcmp(a->id, b->id);
}

RB_HEAD(client_tree, srv_client);
RB_GENERATE_STATIC(client_tree, srv_client, node, client_cmp)
#include "rbtree_end.h"

struct srv {
    pthread_mutex_t lock;
    pthread_cond_t chunks_cv; /* signalled when chunks join or creation ends */
    srv_config_t cfg;
    const ipc_host_ops_t *host;
    pool_t *pool;

    /* Chunks: the daemon maps chunk i at base + i * chunk_size. */
    void *base;
    uint64_t capacity;
    uint32_t nchunks;
    ipc_chunk_t *chunks;
    bool *created;
    uint32_t ready;      /* chunks [0, ready) are in the pool */
    uint32_t next_chunk; /* the next one a thread takes */
    int chunk_err;       /* first creation error, 0 if none */
    char chunk_errmsg[256];
    bool stop_chunks;
    pthread_t *threads;
    uint32_t nthreads;
    struct timespec chunks_started;
    double chunks_seconds; /* time to create them all, once done */

    bool shutting_down;
    struct client_tree clients;
    uint32_t nclients;
    uint64_t next_owner;
};

static double elapsed_since(const struct timespec *t0)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* ---- life cycle ----------------------------------------------------------- */

int srv_create(srv_t **out, const srv_config_t *cfg, char *err, size_t errlen)
{
    srv_t *srv;
    const char *backend = strcmp(cfg->host_backend, "auto") == 0 ? "memfd" : cfg->host_backend;
    int rc;

    srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return -ENOMEM;
    srv->cfg = *cfg;
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->chunks_cv, NULL);
    RB_INIT(&srv->clients);
    srv->next_owner = 1;
    srv->host = ipc_host_backend(backend);
    if (srv->host == NULL) {
        snprintf(err, errlen, "--host-backend %s is not available in this build", backend);
        rc = PINPOOL_EINVAL;
        goto fail;
    }
    srv->nchunks = (uint32_t)((cfg->mem_pool_size + cfg->chunk_size - 1) / cfg->chunk_size);
    srv->capacity = (uint64_t)srv->nchunks * cfg->chunk_size;

    pool_params_t params = {
        .chunk_size = cfg->chunk_size,
        .max_chunks = srv->nchunks,
        .quantum = 256,
        .allow_multi_chunk = true,
    };
    rc = pool_create(&srv->pool, &params);
    if (rc != 0) {
        snprintf(err, errlen, "cannot create the pool: %s", pinpool_strerror(rc));
        goto fail;
    }
    srv->chunks = calloc(srv->nchunks, sizeof(*srv->chunks));
    srv->created = calloc(srv->nchunks, sizeof(*srv->created));
    if (srv->chunks == NULL || srv->created == NULL) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory for %" PRIu32 " chunk records", srv->nchunks);
        goto fail;
    }
    rc = srv->host->reserve(srv->capacity, &srv->base);
    if (rc != 0) {
        char sz[32];
        snprintf(err, errlen, "cannot reserve %s of address space: %s",
                 pool_format_size(srv->capacity, sz, sizeof(sz)), pinpool_strerror(rc));
        srv->base = NULL;
        goto fail;
    }
    *out = srv;
    return 0;

fail:
    pool_destroy(srv->pool);
    free(srv->chunks);
    free(srv->created);
    pthread_cond_destroy(&srv->chunks_cv);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
    return rc;
}

void srv_destroy(srv_t *srv)
{
    struct srv_client *c, *next;

    if (srv == NULL)
        return;
    pthread_mutex_lock(&srv->lock);
    srv->stop_chunks = true;
    pthread_mutex_unlock(&srv->lock);
    for (uint32_t i = 0; i < srv->nthreads; i++)
        pthread_join(srv->threads[i], NULL);
    free(srv->threads);
    for (uint32_t i = 0; i < srv->nchunks; i++)
        if (srv->created[i])
            srv->host->chunk_destroy(&srv->chunks[i]);
    if (srv->base != NULL)
        srv->host->release(srv->base, srv->capacity);
    RB_FOREACH_SAFE(c, client_tree, &srv->clients, next) {
        RB_REMOVE(client_tree, &srv->clients, c);
        free(c);
    }
    pool_destroy(srv->pool);
    free(srv->chunks);
    free(srv->created);
    pthread_cond_destroy(&srv->chunks_cv);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}

/* ---- chunk creation --------------------------------------------------------- */

static void *chunk_thread(void *arg)
{
    srv_t *srv = arg;
    uint64_t size = srv->cfg.chunk_size;

    for (;;) {
        ipc_chunk_t chunk;
        char msg[256] = "";
        uint32_t i, n;
        int rc;

        pthread_mutex_lock(&srv->lock);
        if (srv->stop_chunks || srv->chunk_err != 0 || srv->next_chunk >= srv->nchunks) {
            pthread_mutex_unlock(&srv->lock);
            return NULL;
        }
        i = srv->next_chunk++;
        pthread_mutex_unlock(&srv->lock);

        rc = srv->host->chunk_create(&chunk, (char *)srv->base + (uint64_t)i * size, size, i, msg,
                                     sizeof(msg));

        pthread_mutex_lock(&srv->lock);
        if (rc != 0) {
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
            if (n > 0 && pool_add_chunks(srv->pool, n) == 0)
                srv->ready += n;
            if (srv->ready == srv->nchunks)
                srv->chunks_seconds = elapsed_since(&srv->chunks_started);
        }
        pthread_cond_broadcast(&srv->chunks_cv);
        pthread_mutex_unlock(&srv->lock);
        if (rc != 0)
            return NULL;
    }
}

int srv_start_chunks(srv_t *srv)
{
    uint32_t want = (uint32_t)srv->cfg.pin_threads;

    if (want > srv->nchunks)
        want = srv->nchunks;
    srv->threads = calloc(want, sizeof(*srv->threads));
    if (srv->threads == NULL)
        return -ENOMEM;
    clock_gettime(CLOCK_MONOTONIC, &srv->chunks_started);
    for (uint32_t i = 0; i < want; i++) {
        int rc = pthread_create(&srv->threads[i], NULL, chunk_thread, srv);
        if (rc != 0) {
            if (srv->nthreads == 0)
                return -rc;
            break; /* fewer threads, same work */
        }
        srv->nthreads++;
    }
    return 0;
}

int srv_wait_chunks(srv_t *srv, uint32_t n, char *err, size_t errlen)
{
    int rc;

    pthread_mutex_lock(&srv->lock);
    if (n > srv->nchunks)
        n = srv->nchunks;
    while (srv->ready < n && srv->chunk_err == 0)
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

void srv_begin_shutdown(srv_t *srv)
{
    pthread_mutex_lock(&srv->lock);
    srv->shutting_down = true;
    pthread_cond_broadcast(&srv->chunks_cv);
    pthread_mutex_unlock(&srv->lock);
}

const srv_config_t *srv_config(const srv_t *srv)
{
    return &srv->cfg;
}

const ipc_host_ops_t *srv_host_backend(const srv_t *srv)
{
    return srv->host;
}

/* ---- clients (lock held) ----------------------------------------------------- */

static struct srv_client *do_find_client(srv_t *srv, const char *id)
{
    struct srv_client key;

    if (strlen(id) >= sizeof(key.id))
        return NULL;
    strcpy(key.id, id);
    return RB_FIND(client_tree, &srv->clients, &key);
}

static struct srv_client *do_add_client(srv_t *srv, const char *id, bool session)
{
    struct srv_client *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    snprintf(c->id, sizeof(c->id), "%s", id);
    c->owner = srv->next_owner++;
    c->session = session;
    RB_INSERT(client_tree, &srv->clients, c);
    srv->nclients++;
    return c;
}

static void do_remove_client(srv_t *srv, struct srv_client *c)
{
    RB_REMOVE(client_tree, &srv->clients, c);
    srv->nclients--;
    free(c);
}

/* A detached client goes when it holds nothing. */
static void do_drop_if_idle(srv_t *srv, struct srv_client *c)
{
    if (!c->session && pool_owner_bytes(srv->pool, c->owner, NULL) == 0)
        do_remove_client(srv, c);
}

static int check_client_id(const char *id, char *msg, size_t msglen)
{
    size_t n = strlen(id);

    if (n == 0 || n >= SRV_CLIENT_ID_LEN) {
        snprintf(msg, msglen, "client_id must be 1 to %d characters (got %zu)",
                 SRV_CLIENT_ID_LEN - 1, n);
        return PINPOOL_EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        if (id[i] < 0x21 || id[i] > 0x7e) {
            snprintf(msg, msglen, "client_id must be printable ASCII without spaces");
            return PINPOOL_EINVAL;
        }
    return 0;
}

/* The client called id, made if it is a new detached one.  Errors: a closed
 * session's id (PINPOOL_EPERM), -ENOMEM. */
static int do_get_client(srv_t *srv, const char *id, struct srv_client **out, char *msg,
                         size_t msglen)
{
    struct srv_client *c = do_find_client(srv, id);

    if (c == NULL) {
        if (strncmp(id, SESSION_PREFIX, strlen(SESSION_PREFIX)) == 0) {
            snprintf(msg, msglen, "client_id '%s' names an fd-socket session that has ended; "
                     "reconnect to get a new one", id);
            return PINPOOL_EPERM;
        }
        c = do_add_client(srv, id, false);
        if (c == NULL) {
            snprintf(msg, msglen, "out of memory");
            return -ENOMEM;
        }
    }
    *out = c;
    return 0;
}

/* ---- the calls ------------------------------------------------------------------ */

static void explain_alloc_error(srv_t *srv, int rc, uint64_t size, uint64_t alignment, char *msg,
                                size_t msglen)
{
    pool_stats_t st;
    char a[32], b[32], c[32], d[32];

    pool_get_stats(srv->pool, &st);
    pool_format_size(size, a, sizeof(a));
    switch (rc) {
    case PINPOOL_EINVAL:
        snprintf(msg, msglen, "size_bytes must be greater than 0");
        break;
    case PINPOOL_ETOOBIG:
        snprintf(msg, msglen, "cannot allocate %s: the whole pool is %s", a,
                 pool_format_size(st.capacity, b, sizeof(b)));
        break;
    case PINPOOL_EALIGN:
        snprintf(msg, msglen, "alignment %" PRIu64 " must be a power of two that divides the "
                 "chunk size (%s)", alignment, pool_format_size(srv->cfg.chunk_size, b, sizeof(b)));
        break;
    case PINPOOL_ENOSPC:
        snprintf(msg, msglen, "cannot allocate %s: the largest free extent is %s (%s free of %s)",
                 a, pool_format_size(st.largest_free, b, sizeof(b)),
                 pool_format_size(st.free, c, sizeof(c)),
                 pool_format_size(st.capacity, d, sizeof(d)));
        break;
    default:
        snprintf(msg, msglen, "cannot allocate %s: %s", a, pinpool_strerror(rc));
        break;
    }
}

int srv_alloc(srv_t *srv, const char *client_id, int32_t device_id, uint64_t size,
              uint64_t alignment, const char *tag, pool_slice_info_t *slice,
              uint64_t *memory_ptr, char *msg, size_t msglen)
{
    struct srv_client *c;
    int rc;

    rc = check_client_id(client_id, msg, msglen);
    if (rc != 0)
        return rc;
    if (device_id != -1) {
        snprintf(msg, msglen, "device %" PRId32 ": this daemon has no device pool (host slices "
                 "use device_id -1)", device_id);
        return PINPOOL_ENODEV;
    }
    pthread_mutex_lock(&srv->lock);
    for (;;) {
        if (srv->shutting_down) {
            snprintf(msg, msglen, "the daemon is shutting down");
            rc = PINPOOL_ESHUTDOWN;
            break;
        }
        rc = do_get_client(srv, client_id, &c, msg, msglen);
        if (rc != 0)
            break;
        rc = pool_alloc(srv->pool, c->owner, size, alignment, slice);
        if (rc == 0) {
            *memory_ptr = (uint64_t)(uintptr_t)srv->base + slice->offset;
            srv_debug("client %s: slice %" PRIu64 " of %" PRIu64 " bytes at %" PRIu64 " tag '%s'",
                      c->id, slice->id, slice->size, slice->offset, tag != NULL ? tag : "");
            break;
        }
        do_drop_if_idle(srv, c); /* c may be gone now */
        /* Not enough room yet: wait for chunks that are still being made. */
        if (rc != PINPOOL_ENOSPC || srv->ready == srv->nchunks || srv->chunk_err != 0) {
            explain_alloc_error(srv, rc, size, alignment, msg, msglen);
            break;
        }
        pthread_cond_wait(&srv->chunks_cv, &srv->lock);
    }
    pthread_mutex_unlock(&srv->lock);
    return rc;
}

int srv_free(srv_t *srv, const char *client_id, uint64_t slice_id, uint64_t *freed_bytes,
             uint32_t *freed_slices, char *msg, size_t msglen)
{
    struct srv_client *c;
    pool_slice_info_t info;
    int rc;

    *freed_bytes = 0;
    *freed_slices = 0;
    rc = check_client_id(client_id, msg, msglen);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&srv->lock);
    c = do_find_client(srv, client_id);
    if (slice_id == 0) {
        if (c != NULL) {
            rc = pool_free_owner(srv->pool, c->owner, freed_bytes);
            *freed_slices = rc > 0 ? (uint32_t)rc : 0;
            rc = rc < 0 ? rc : 0;
            do_drop_if_idle(srv, c);
        }
    } else if (pool_lookup(srv->pool, slice_id, &info) != 0) {
        snprintf(msg, msglen, "no slice %" PRIu64 " in the pool", slice_id);
        rc = PINPOOL_ENOENT;
    } else if (c == NULL || info.owner != c->owner) {
        snprintf(msg, msglen, "slice %" PRIu64 " belongs to another client", slice_id);
        rc = PINPOOL_EPERM;
    } else {
        rc = pool_free(srv->pool, slice_id, c->owner, freed_bytes);
        if (rc == 0)
            *freed_slices = 1;
        do_drop_if_idle(srv, c);
    }
    if (rc != 0 && msg[0] == '\0')
        snprintf(msg, msglen, "%s", pinpool_strerror(rc));
    pthread_mutex_unlock(&srv->lock);
    return rc;
}

void srv_pool_info(srv_t *srv, srv_pool_info_t *info,
                   void (*fn)(const srv_client_usage_t *usage, void *arg), void *arg)
{
    struct srv_client *c;

    pthread_mutex_lock(&srv->lock);
    pool_get_stats(srv->pool, &info->stats);
    info->chunk_size = srv->cfg.chunk_size;
    info->num_chunks = srv->nchunks;
    info->num_clients = srv->nclients;
    info->host_backend = srv->host->name;
    info->mode = "cpu-only";
    if (fn != NULL) {
        RB_FOREACH(c, client_tree, &srv->clients) {
            srv_client_usage_t u = {.client_id = c->id};
            u.bytes = pool_owner_bytes(srv->pool, c->owner, &u.slices);
            u.pid = c->session ? (int32_t)c->cred.pid : 0;
            u.uid = c->session ? (uint32_t)c->cred.uid : 0;
            fn(&u, arg);
        }
    }
    pthread_mutex_unlock(&srv->lock);
}

/* ---- sessions ------------------------------------------------------------------- */

srv_client_t *srv_session_open(srv_t *srv, const ipc_cred_t *cred, char *id, size_t idlen)
{
    uint8_t rnd[12];
    char name[SRV_CLIENT_ID_LEN];
    int n;
    struct srv_client *c;

    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return NULL;
    n = snprintf(name, sizeof(name), SESSION_PREFIX "%d-", (int)cred->pid);
    for (size_t i = 0; i < sizeof(rnd) && n + 2 < (int)sizeof(name); i++)
        n += snprintf(name + n, sizeof(name) - (size_t)n, "%02x", rnd[i]);

    pthread_mutex_lock(&srv->lock);
    c = do_add_client(srv, name, true);
    if (c != NULL)
        c->cred = *cred;
    pthread_mutex_unlock(&srv->lock);
    if (c != NULL)
        snprintf(id, idlen, "%s", c->id);
    return c;
}

void srv_session_close(srv_t *srv, srv_client_t *c)
{
    uint64_t freed = 0;
    int n;
    char sz[32];

    pthread_mutex_lock(&srv->lock);
    n = pool_free_owner(srv->pool, c->owner, &freed);
    srv_info("client %s (pid %d) left; %d slice%s (%s) back to the pool", c->id, (int)c->cred.pid,
             n, n == 1 ? "" : "s", pool_format_size(freed, sz, sizeof(sz)));
    do_remove_client(srv, c);
    pthread_mutex_unlock(&srv->lock);
}

int srv_session_chunk_fds(srv_t *srv, srv_client_t *c, uint64_t slice_id, uint32_t first,
                          uint32_t count, int *fds, char *msg, size_t msglen)
{
    pool_slice_info_t info;
    int rc = 0;

    pthread_mutex_lock(&srv->lock);
    if (pool_lookup(srv->pool, slice_id, &info) != 0) {
        snprintf(msg, msglen, "no slice %" PRIu64, slice_id);
        rc = PINPOOL_ENOENT;
    } else if (info.owner != c->owner) {
        snprintf(msg, msglen, "slice %" PRIu64 " belongs to another client", slice_id);
        rc = PINPOOL_EPERM;
    } else if (count == 0 || count > IPC_MAX_FDS || first < info.first_chunk ||
               (uint64_t)first + count > (uint64_t)info.first_chunk + info.nchunks) {
        snprintf(msg, msglen, "chunks %" PRIu32 "+%" PRIu32 " are not those of slice %" PRIu64,
                 first, count, slice_id);
        rc = PINPOOL_EINVAL;
    } else {
        for (uint32_t i = 0; i < count; i++)
            fds[i] = srv->chunks[first + i].fd;
    }
    pthread_mutex_unlock(&srv->lock);
    return rc;
}
