/*
 * service_info.c - the service's GetPoolInfo and GetServerConfig, and the
 * snapshot of the tier's statistics that GetPoolInfo shows (see
 * service_int.h).
 *
 * Owns: svc's statistics snapshot and the thread that refreshes it
 * (stats_thread): tier_report_stats may wait for the tier (the Mooncake
 * adapter answers one command at a time, and a stalled segment holds it), so
 * it is never asked on a gRPC thread; GetPoolInfo shows the last snapshot
 * with its age ("stats_age_ms") and asks for a new one when it is older than
 * STATS_MAX_AGE_MS.
 * GetPoolInfo summarizes and pages: the pool's totals, one page of the
 * clients the caller may see (srv_pool_page: O(log n + page), so that it
 * answers at once and fits in a reply at 100 k clients) and its uids' totals.
 * Never: waits: GetPoolInfo takes srv's lock (srv_pool_page, srv_spill_info
 * without the tier) and svc->lock, nothing else.
 * Locking: svc->lock guards the snapshot, want and stop; a leaf, never held
 * while asking the tier.
 */
#include "service_int.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pinpool.h"
#include "pinpool.pb-c.h"
#include "pool.h"
#include "srv.h"

#define STATS_MAX_AGE_MS 1000

static uint64_t now_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* ---- GetPoolInfo --------------------------------------------------------------- */

typedef struct info_client {
    Pinpool__V1__ClientUsage msg;
    char id[SRV_CLIENT_ID_LEN];
} info_client_t;

typedef struct info_uid {
    Pinpool__V1__UidUsage msg;
} info_uid_t;

typedef struct info_reply {
    Pinpool__V1__GetPoolInfoResponse msg;
    Pinpool__V1__SpillInfo spill;
    srv_spill_info_t sp;
    Pinpool__V1__TierStat stats[MAX_TIER_STATS + 1];
    Pinpool__V1__TierStat *stat_refs[MAX_TIER_STATS + 1];
    tier_stat_text_t stat_text[MAX_TIER_STATS + 1];
    size_t nstats;
    srv_pool_info_t info;
    Pinpool__V1__DevicePoolInfo devices[SRV_MAX_DEVICES];
    Pinpool__V1__DevicePoolInfo *device_refs[SRV_MAX_DEVICES];
    srv_gpu_t gpu[SRV_MAX_DEVICES];
    Pinpool__V1__GpuFootprint gpus[SRV_MAX_DEVICES];
    Pinpool__V1__GpuFootprint *gpu_refs[SRV_MAX_DEVICES];
    info_client_t *clients;
    Pinpool__V1__ClientUsage **refs;
    size_t n, cap;
    info_uid_t uids[SRV_UIDS_MAX];
    Pinpool__V1__UidUsage *uid_refs[SRV_UIDS_MAX];
    size_t nuids;
    srv_info_page_t page;
    bool failed;
} info_reply_t;

static void add_client(const srv_client_usage_t *u, void *arg)
{
    info_reply_t *r = arg;

    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 16;
        info_client_t *c = realloc(r->clients, cap * sizeof(*c));
        if (c == NULL) {
            r->failed = true;
            return;
        }
        r->clients = c;
        r->cap = cap;
    }
    info_client_t *c = &r->clients[r->n++];
    pinpool__v1__client_usage__init(&c->msg);
    snprintf(c->id, sizeof(c->id), "%s", u->client_id);
    c->msg.bytes = u->bytes;
    c->msg.device_bytes = u->device_bytes;
    c->msg.slices = u->slices;
    c->msg.pid = u->pid;
    c->msg.uid = u->uid;
    c->msg.charged_bytes = u->charged;
    c->msg.session = u->session;
    c->msg.kept = u->kept;
}

static void add_uid(const srv_uid_usage_t *u, void *arg)
{
    info_reply_t *r = arg;
    info_uid_t *x;

    if (r->nuids == SRV_UIDS_MAX)
        return;
    x = &r->uids[r->nuids];
    pinpool__v1__uid_usage__init(&x->msg);
    x->msg.uid = u->uid;
    x->msg.clients = u->clients;
    x->msg.sessions = u->sessions;
    x->msg.charged_bytes = u->charged;
    r->uid_refs[r->nuids++] = &x->msg;
}

/* ---- the tier's statistics: a snapshot, refreshed off the queue threads ---------- */

typedef struct stat_list {
    tier_stat_text_t *stats;
    size_t n;
} stat_list_t;

static void collect_stat(const char *name, const char *value, void *arg)
{
    stat_list_t *l = arg;

    if (l->n == MAX_TIER_STATS)
        return;
    snprintf(l->stats[l->n].name, sizeof(l->stats[0].name), "%s", name);
    snprintf(l->stats[l->n].value, sizeof(l->stats[0].value), "%s", value);
    l->n++;
}

/* tier_report_stats may wait for the tier (the Mooncake adapter answers one
 * command at a time): it runs here, never on a queue thread. */
static void *stats_thread(void *arg)
{
    srv_service_t *svc = arg;
    tier_stat_text_t fresh[MAX_TIER_STATS];
    srv_spill_info_t ignored;

    pthread_mutex_lock(&svc->lock);
    while (!svc->stop) {
        while (!svc->want && !svc->stop)
            pthread_cond_wait(&svc->cv, &svc->lock);
        if (svc->stop)
            break;
        svc->want = false;
        pthread_mutex_unlock(&svc->lock);
        stat_list_t l = {fresh, 0};
        srv_spill_info(svc->srv, &ignored, collect_stat, &l);
        srv_gpu_refresh(svc->srv); /* may wait for the driver: here, not on a gRPC thread */
        pthread_mutex_lock(&svc->lock);
        memcpy(svc->stats, fresh, l.n * sizeof(fresh[0]));
        svc->nstats = l.n;
        svc->stats_ns = now_ns();
    }
    pthread_mutex_unlock(&svc->lock);
    return NULL;
}

/* The snapshot into r (and its age as the stat "stats_age_ms"); a refresh is
 * asked for when it is older than STATS_MAX_AGE_MS.  Never waits. */
static void add_tier_stats(srv_service_t *svc, info_reply_t *r)
{
    uint64_t now = now_ns();

    pthread_mutex_lock(&svc->lock);
    memcpy(r->stat_text, svc->stats, svc->nstats * sizeof(svc->stats[0]));
    r->nstats = svc->nstats;
    if (svc->stats_ns == 0 || now - svc->stats_ns > STATS_MAX_AGE_MS * 1000000ull) {
        svc->want = true;
        pthread_cond_signal(&svc->cv);
    }
    if (r->nstats > 0) {
        snprintf(r->stat_text[r->nstats].name, sizeof(r->stat_text[0].name), "stats_age_ms");
        snprintf(r->stat_text[r->nstats].value, sizeof(r->stat_text[0].value), "%" PRIu64,
                 (now - svc->stats_ns) / 1000000u);
        r->nstats++;
    }
    pthread_mutex_unlock(&svc->lock);
    for (size_t i = 0; i < r->nstats; i++) {
        Pinpool__V1__TierStat *t = &r->stats[i];
        pinpool__v1__tier_stat__init(t);
        t->name = r->stat_text[i].name;
        t->value = r->stat_text[i].value;
        r->stat_refs[i] = t;
    }
}

int srv_service_create(srv_service_t **out, srv_t *srv, char *err, size_t errlen)
{
    srv_service_t *svc = calloc(1, sizeof(*svc));
    int rc;

    if (svc == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    svc->srv = srv;
    svc->want = true; /* a first snapshot right away */
    pthread_mutex_init(&svc->lock, NULL);
    pthread_cond_init(&svc->cv, NULL);
    rc = pthread_create(&svc->thread, NULL, stats_thread, svc);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the tier statistics thread: %s", strerror(rc));
        pthread_cond_destroy(&svc->cv);
        pthread_mutex_destroy(&svc->lock);
        free(svc);
        return -rc;
    }
    *out = svc;
    return 0;
}

void srv_service_destroy(srv_service_t *svc)
{
    if (svc == NULL)
        return;
    pthread_mutex_lock(&svc->lock);
    svc->stop = true;
    pthread_cond_signal(&svc->cv);
    pthread_mutex_unlock(&svc->lock);
    pthread_join(svc->thread, NULL);
    pthread_cond_destroy(&svc->cv);
    pthread_mutex_destroy(&svc->lock);
    free(svc);
}

static void fill_spill(info_reply_t *r, srv_service_t *svc)
{
    Pinpool__V1__SpillInfo *s = &r->spill;
    const srv_spill_info_t *p = &r->sp;

    srv_spill_info(svc->srv, &r->sp, NULL, NULL); /* no tier call: the snapshot instead */
    add_tier_stats(svc, r);
    pinpool__v1__spill_info__init(s);
    s->tier = (char *)p->tier;
    s->objects = p->objects;
    s->objects_resident = p->resident + p->spilling;
    s->objects_spilled = p->spilled + p->restoring;
    s->resident_bytes = p->resident_bytes;
    s->spilled_bytes_now = p->spilled_bytes_now;
    s->spills = p->spills;
    s->bytes_spilled = p->spilled_bytes;
    s->spill_failures = p->spill_failures;
    s->restores = p->restores;
    s->bytes_restored = p->restored_bytes;
    s->restore_failures = p->restore_failures;
    s->spill_gbps = p->spill_ns ? (double)p->spilled_bytes / (double)p->spill_ns : 0;
    s->restore_gbps = p->restore_ns ? (double)p->restored_bytes / (double)p->restore_ns : 0;
    s->spill_avg_ms = p->spills ? (double)p->spill_ns / 1e6 / (double)p->spills : 0;
    s->restore_avg_ms = p->restores ? (double)p->restore_ns / 1e6 / (double)p->restores : 0;
    s->expired = p->expired;
    s->low_watermark_bytes = p->low_watermark;
    s->last_error = r->sp.last_error;
    s->n_tier_stats = r->nstats;
    s->tier_stats = r->stat_refs;
    r->msg.spill = s;
}

static int info(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    const Pinpool__V1__GetPoolInfoRequest *req = (const void *)m;
    info_reply_t *r = calloc(1, sizeof(*r));
    srv_info_query_t q = {
        .page_size = req->page_size,
        .page_token = req->page_token,
        .by_bytes = req->by_bytes,
        .one_uid = req->only_uid,
        .uid = req->uid,
    };
    srv_pool_info_t *info;
    int rc;

    if (r == NULL)
        return -ENOMEM;
    info = &r->info;
    reply->msg = &r->msg.base;
    rc = srv_pool_page(svc->srv, reply->token, &q, info, add_client, add_uid, r, &r->page,
                       reply->text, sizeof(reply->text));
    if (rc != 0)
        return rc;
    if (r->failed || (r->n > 0 && (r->refs = calloc(r->n, sizeof(*r->refs))) == NULL))
        return -ENOMEM;
    pinpool__v1__get_pool_info_response__init(&r->msg);
    r->msg.capacity_bytes = info->stats.capacity;
    r->msg.ready_bytes = info->stats.ready;
    r->msg.used_bytes = info->stats.used;
    r->msg.free_bytes = info->stats.free;
    r->msg.largest_free_extent = info->stats.largest_free;
    r->msg.chunk_size = info->chunk_size;
    r->msg.num_chunks = info->num_chunks;
    r->msg.num_slices = info->stats.num_slices;
    r->msg.num_clients = info->num_clients;
    r->msg.fragmentation = info->stats.fragmentation;
    r->msg.host_backend = (char *)info->host_backend;
    r->msg.mode = (char *)info->mode;
    r->msg.num_kept = info->num_kept;
    r->msg.pin_seconds = info->pin_seconds;
    r->msg.stopped_short = info->stopped_short;
    r->msg.cleaning_bytes = info->stats.dirty;
    r->msg.chunk_replacements = info->chunk_replacements;
    for (uint32_t i = 0; i < info->ndevices; i++) {
        Pinpool__V1__DevicePoolInfo *d = &r->devices[i];
        const pool_stats_t *st = &info->devices[i].stats;
        pinpool__v1__device_pool_info__init(d);
        d->device_id = info->devices[i].device_id;
        d->name = info->devices[i].name;
        d->capacity_bytes = st->capacity;
        d->used_bytes = st->used;
        d->free_bytes = st->free;
        d->largest_free_extent = st->largest_free;
        d->num_slices = st->num_slices;
        r->device_refs[i] = d;
    }
    r->msg.n_devices = info->ndevices;
    r->msg.devices = r->device_refs;
    r->msg.n_gpus = srv_gpu_footprint(svc->srv, r->gpu);
    for (size_t i = 0; i < r->msg.n_gpus; i++) {
        pinpool__v1__gpu_footprint__init(&r->gpus[i]);
        r->gpus[i].device_id = r->gpu[i].device_id;
        r->gpus[i].role = (char *)r->gpu[i].role;
        r->gpus[i].device_pool_bytes = r->gpu[i].device_pool_bytes;
        r->gpus[i].gpu_used_bytes = r->gpu[i].used;
        r->gpus[i].gpu_total_bytes = r->gpu[i].total;
        r->gpu_refs[i] = &r->gpus[i];
    }
    r->msg.gpus = r->gpu_refs;
    for (size_t i = 0; i < r->n; i++) {
        r->clients[i].msg.client_id = r->clients[i].id; /* after the last realloc */
        r->refs[i] = &r->clients[i].msg;
    }
    r->msg.n_clients = r->n;
    r->msg.clients = r->refs;
    r->msg.num_listed = r->page.matching;
    r->msg.next_page_token = r->page.next_token;
    r->msg.n_users = r->nuids;
    r->msg.users = r->uid_refs;
    r->msg.all_uids_visible = r->page.all_visible;
    r->msg.caller_uid = r->page.caller_uid;
    fill_spill(r, svc);
    return 0;
}
int srv_service_handle_info(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    return srv_service_run(info, app, m, reply);
}

void srv_service_done_info(rpc_reply_t *reply)
{
    info_reply_t *r = (info_reply_t *)reply->msg;

    if (r != NULL) {
        free(r->clients);
        free(r->refs);
        free(r);
    }
}

/* ---- GetServerConfig ----------------------------------------------------------- */

typedef struct config_entry {
    Pinpool__V1__ConfigEntry msg;
    char value[SRV_PATH_MAX + 16];
    char defval[SRV_PATH_MAX + 16];
} config_entry_t;

typedef struct config_reply {
    Pinpool__V1__GetServerConfigResponse msg;
    config_entry_t entries[64];
    Pinpool__V1__ConfigEntry *refs[64];
} config_reply_t;

static void add_entry(const char *name, const char *value, const char *defval, const char *help,
                      void *arg)
{
    config_reply_t *r = arg;
    config_entry_t *e;

    if (r->msg.n_entries == sizeof(r->entries) / sizeof(r->entries[0]))
        return;
    e = &r->entries[r->msg.n_entries];
    pinpool__v1__config_entry__init(&e->msg);
    snprintf(e->value, sizeof(e->value), "%s", value);
    snprintf(e->defval, sizeof(e->defval), "%s", defval); /* may be a caller's temporary */
    e->msg.name = (char *)name;
    e->msg.value = e->value;
    e->msg.default_value = e->defval;
    e->msg.help = (char *)help;
    r->refs[r->msg.n_entries++] = &e->msg;
}

static int config(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    config_reply_t *r = calloc(1, sizeof(*r));

    (void)m;
    if (r == NULL)
        return -ENOMEM;
    pinpool__v1__get_server_config_response__init(&r->msg);
    r->msg.entries = r->refs;
    r->msg.version = (char *)PINPOOL_VERSION_STRING;
    srv_config_foreach(srv_config(svc->srv), add_entry, r);
    reply->msg = &r->msg.base;
    return 0;
}
int srv_service_handle_config(void *app, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    return srv_service_run(config, app, m, reply);
}
