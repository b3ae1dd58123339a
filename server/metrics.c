/*
 * metrics.c - see metrics.h.
 *
 * The page is built per scrape into a growing buffer, then handed to
 * libmicrohttpd, which frees it.  Histogram counters are atomics written by
 * the gRPC threads and read here without a lock: a scrape may see one call in
 * a bucket before it sees it in the count, which Prometheus tolerates.
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pinpool.h"

/* Upper bounds of the latency buckets, seconds. */
static const double bucket_le[] = {50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3,
                                   0.25, 1.0};
#define NBUCKETS (sizeof(bucket_le) / sizeof(bucket_le[0]))
#define MAX_METHODS 16

typedef struct histogram {
    atomic_uint_fast64_t buckets[NBUCKETS]; /* non-cumulative */
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t errors;
    atomic_uint_fast64_t sum_ns;
} histogram_t;

struct srv_metrics {
    struct MHD_Daemon *http;
    srv_t *srv;
    const rpc_method_t *methods;
    size_t nmethods;
    histogram_t hist[MAX_METHODS];
};

void srv_metrics_observe(int method, int err, double seconds, void *arg)
{
    srv_metrics_t *m = arg;
    histogram_t *h;
    size_t b = 0;

    if (m == NULL || method < 0 || (size_t)method >= m->nmethods)
        return;
    h = &m->hist[method];
    while (b < NBUCKETS && seconds > bucket_le[b])
        b++;
    if (b < NBUCKETS)
        atomic_fetch_add(&h->buckets[b], 1);
    atomic_fetch_add(&h->count, 1);
    atomic_fetch_add(&h->sum_ns, (uint64_t)(seconds * 1e9));
    if (err != 0)
        atomic_fetch_add(&h->errors, 1);
}

typedef struct page {
    char *buf;
    size_t len, cap;
    bool failed;
} page_t;

__attribute__((format(printf, 2, 3))) static void put(page_t *p, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        if (p->failed)
            return;
        va_start(ap, fmt);
        n = vsnprintf(p->buf + p->len, p->cap - p->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < p->cap - p->len) {
            p->len += (size_t)n;
            return;
        }
        size_t cap = p->cap * 2 + (size_t)(n > 0 ? n : 0);
        char *b = realloc(p->buf, cap);
        if (b == NULL) {
            p->failed = true;
            return;
        }
        p->buf = b;
        p->cap = cap;
    }
}

/*
 * The uids' totals, copied out under srv->lock.  Per uid, not per client: the
 * page is open to every local user who can reach the port, and a client's id
 * and pid are shown only to its own uid (GetPoolInfo's rule); it also keeps
 * the page, and the time the scrape holds srv->lock, bounded by the users
 * (at most SRV_UIDS_MAX) rather than the clients.
 */
typedef struct uids {
    uint32_t n;
    srv_uid_usage_t u[SRV_UIDS_MAX];
} uids_t;

static void add_uid(const srv_uid_usage_t *u, void *arg)
{
    uids_t *t = arg;

    if (t->n < SRV_UIDS_MAX)
        t->u[t->n++] = *u;
}

/* One metric family over every uid (Prometheus wants a family's lines together). */
static void put_uids(page_t *p, const uids_t *t, const char *name, const char *help, int field)
{
    put(p, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
    for (uint32_t i = 0; i < t->n; i++) {
        const srv_uid_usage_t *u = &t->u[i];
        uint64_t v = field == 0 ? u->charged : field == 1 ? u->clients : u->sessions;
        put(p, "%s{uid=\"%" PRIu32 "\"} %" PRIu64 "\n", name, u->uid, v);
    }
}

static void build_page(srv_metrics_t *m, page_t *p)
{
    srv_pool_info_t *info = calloc(1, sizeof(*info));
    uids_t *uids = calloc(1, sizeof(*uids));

    if (info == NULL || uids == NULL) {
        free(info);
        free(uids);
        p->failed = true;
        return;
    }
    srv_pool_info(m->srv, info, add_uid, uids);
    put_uids(p, uids, "pinpool_user_bytes",
             "Bytes each uid holds (what --user-quota counts: slices, kept slices, objects).", 0);
    put_uids(p, uids, "pinpool_user_clients", "Clients of each uid (kept slices included).", 1);
    put_uids(p, uids, "pinpool_user_sessions", "Sessions of each uid.", 2);
    free(uids);
    put(p, "# HELP pinpool_capacity_bytes Size of the pool.\n# TYPE pinpool_capacity_bytes gauge\n");
    put(p, "pinpool_capacity_bytes{pool=\"host\"} %" PRIu64 "\n", info->stats.capacity);
    put(p, "# TYPE pinpool_ready_bytes gauge\npinpool_ready_bytes{pool=\"host\"} %" PRIu64 "\n",
        info->stats.ready);
    put(p, "# TYPE pinpool_used_bytes gauge\npinpool_used_bytes{pool=\"host\"} %" PRIu64 "\n",
        info->stats.used);
    put(p, "# HELP pinpool_cleaning_bytes Freed bytes being zeroed before reuse.\n"
           "# TYPE pinpool_cleaning_bytes gauge\npinpool_cleaning_bytes{pool=\"host\"} %" PRIu64
           "\n", info->stats.dirty);
    put(p, "# HELP pinpool_chunk_replacements_total Chunks given fresh memory for another uid.\n"
           "# TYPE pinpool_chunk_replacements_total counter\npinpool_chunk_replacements_total %"
           PRIu64 "\n", info->chunk_replacements);
    put(p, "# TYPE pinpool_largest_free_extent_bytes gauge\n"
           "pinpool_largest_free_extent_bytes{pool=\"host\"} %" PRIu64 "\n", info->stats.largest_free);
    for (uint32_t i = 0; i < info->ndevices; i++) {
        const srv_device_info_t *d = &info->devices[i];
        put(p, "pinpool_capacity_bytes{pool=\"gpu%d\"} %" PRIu64 "\n", (int)d->device_id,
            d->stats.capacity);
        put(p, "pinpool_used_bytes{pool=\"gpu%d\"} %" PRIu64 "\n", (int)d->device_id, d->stats.used);
    }
    srv_gpu_t gpu[SRV_MAX_DEVICES];
    uint32_t ngpu = srv_gpu_footprint(m->srv, gpu);
    put(p, "# HELP pinpool_gpu_context GPUs the daemon holds a CUDA context on (none on others).\n"
           "# TYPE pinpool_gpu_context gauge\n");
    for (uint32_t i = 0; i < ngpu; i++)
        put(p, "pinpool_gpu_context{gpu=\"%d\",role=\"%s\"} 1\n", (int)gpu[i].device_id,
            gpu[i].role);
    put(p, "# HELP pinpool_gpu_used_bytes GPU memory in use by all processes, seen through the "
           "daemon's context (its ~0.5 GiB included).\n# TYPE pinpool_gpu_used_bytes gauge\n");
    for (uint32_t i = 0; i < ngpu; i++)
        put(p, "pinpool_gpu_used_bytes{gpu=\"%d\"} %" PRIu64 "\n", (int)gpu[i].device_id,
            gpu[i].used);
    put(p, "# TYPE pinpool_slices gauge\npinpool_slices %" PRIu32 "\n", info->stats.num_slices);
    put(p, "# TYPE pinpool_clients gauge\npinpool_clients %" PRIu32 "\n", info->num_clients);
    put(p, "# TYPE pinpool_kept_slices gauge\npinpool_kept_slices %" PRIu32 "\n", info->num_kept);
    put(p, "# TYPE pinpool_fragmentation gauge\npinpool_fragmentation %.6f\n",
        info->stats.fragmentation);
    put(p, "# HELP pinpool_rpc_seconds Time to handle each gRPC method (server side).\n"
           "# TYPE pinpool_rpc_seconds histogram\n");
    for (size_t i = 0; i < m->nmethods; i++) {
        const char *name = strrchr(m->methods[i].path, '/') + 1;
        histogram_t *h = &m->hist[i];
        uint64_t cum = 0;
        for (size_t b = 0; b < NBUCKETS; b++) {
            cum += atomic_load(&h->buckets[b]);
            put(p, "pinpool_rpc_seconds_bucket{method=\"%s\",le=\"%g\"} %" PRIu64 "\n", name,
                bucket_le[b], cum);
        }
        uint64_t count = atomic_load(&h->count);
        put(p, "pinpool_rpc_seconds_bucket{method=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", name, count);
        put(p, "pinpool_rpc_seconds_sum{method=\"%s\"} %.9f\n", name,
            (double)atomic_load(&h->sum_ns) / 1e9);
        put(p, "pinpool_rpc_seconds_count{method=\"%s\"} %" PRIu64 "\n", name, count);
        put(p, "pinpool_rpc_errors_total{method=\"%s\"} %" PRIu64 "\n", name,
            (uint64_t)atomic_load(&h->errors));
    }
    free(info);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **state)
{
    srv_metrics_t *m = cls;
    struct MHD_Response *resp;
    page_t p = {.buf = NULL};
    enum MHD_Result rc;
    unsigned status = MHD_HTTP_OK;

    (void)version, (void)upload, (void)upload_size, (void)state;
    if (strcmp(method, "GET") != 0 || strcmp(url, "/metrics") != 0) {
        static const char nf[] = "pinpool serves /metrics only\n";
        resp = MHD_create_response_from_buffer(sizeof(nf) - 1, (void *)nf, MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_NOT_FOUND;
    } else {
        p.cap = 4096;
        p.buf = malloc(p.cap);
        p.failed = p.buf == NULL;
        build_page(m, &p);
        if (p.failed) {
            free(p.buf);
            return MHD_NO;
        }
        resp = MHD_create_response_from_buffer(p.len, p.buf, MHD_RESPMEM_MUST_FREE);
        MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4");
    }
    if (resp == NULL)
        return MHD_NO;
    rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

int srv_metrics_start(srv_metrics_t **out, srv_t *srv, const rpc_method_t *methods,
                      size_t nmethods, const char *addr, unsigned *port, char *err, size_t errlen)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    char host[64];
    const char *colon = strrchr(addr, ':');
    srv_metrics_t *m;
    char *end;

    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host)) {
        snprintf(err, errlen, "--metrics: '%s' is not HOST:PORT", addr);
        return PINPOOL_EINVAL;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || p > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "--metrics: '%s' is not an IPv4 HOST:PORT (e.g. 127.0.0.1:9464)", addr);
        return PINPOOL_EINVAL;
    }
    sa.sin_port = htons((uint16_t)p);
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    m->srv = srv;
    m->methods = methods;
    m->nmethods = nmethods < MAX_METHODS ? nmethods : MAX_METHODS;
    m->http = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                               on_request, m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                               MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT,
                               10u, MHD_OPTION_END);
    if (m->http == NULL) {
        snprintf(err, errlen, "--metrics: cannot listen on %s (in use, or not an address here)", addr);
        free(m);
        return -EADDRNOTAVAIL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(m->http, MHD_DAEMON_INFO_BIND_PORT);
    *port = di != NULL ? di->port : (unsigned)p;
    *out = m;
    return 0;
}

void srv_metrics_stop(srv_metrics_t *m)
{
    if (m == NULL)
        return;
    MHD_stop_daemon(m->http);
    free(m);
}
