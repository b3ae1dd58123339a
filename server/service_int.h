/*
 * service_int.h - what the service's two files share (service.c: the
 * methods on slices and objects, and the table; service_info.c: GetPoolInfo,
 * GetServerConfig and the tier statistics snapshot).  Not for other files.
 */
#ifndef PINPOOL_SRV_SERVICE_INT_H
#define PINPOOL_SRV_SERVICE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "service.h"

#define MAX_TIER_STATS 48

typedef struct tier_stat_text {
    char name[128], value[128];
} tier_stat_text_t;

struct srv_service {
    srv_t *srv; /* (fixed) */
    /* service_info.c, under lock: the tier's statistics snapshot */
    pthread_mutex_t lock;
    pthread_cond_t cv;
    tier_stat_text_t stats[MAX_TIER_STATS];
    size_t nstats;
    uint64_t stats_ns; /* when it was taken; 0: never */
    bool want, stop;
    pthread_t thread;
};

/*
 * Every handler's body runs through srv_service_run: on a queue thread
 * (!reply->may_block) srv's calls must not wait (srv_set_nowait), so they
 * answer SRV_EWOULDBLOCK, which becomes RPC_DEFER and rpc.c runs the
 * handler again on a worker, where they may.
 */
typedef int (*srv_body_fn)(srv_service_t *svc, const ProtobufCMessage *m, rpc_reply_t *reply);
int srv_service_run(srv_body_fn body, void *app, const ProtobufCMessage *m, rpc_reply_t *reply);

/* service_info.c: the rows of GetPoolInfo and GetServerConfig. */
int srv_service_handle_info(void *app, const ProtobufCMessage *m, rpc_reply_t *reply);
void srv_service_done_info(rpc_reply_t *reply);
int srv_service_handle_config(void *app, const ProtobufCMessage *m, rpc_reply_t *reply);

#endif
