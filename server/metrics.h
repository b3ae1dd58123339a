/*
 * metrics.h - Prometheus text metrics on an opt-in loopback HTTP port
 * (--metrics HOST:PORT), served by libmicrohttpd on its own thread.
 *
 * Owns: the HTTP listener and the RPC latency histograms (one per method,
 * fed by rpc.c's observer hook; lock-free atomic counters).
 * Never: changes the pool; it reads srv_pool_info() per scrape.
 */
#ifndef PINPOOL_SRV_METRICS_H
#define PINPOOL_SRV_METRICS_H

#include <stddef.h>

#include "rpc.h"
#include "srv.h"

typedef struct srv_metrics srv_metrics_t;

/* Listen on addr ("127.0.0.1:9464"; port 0 picks one).  0 and *out, or an
 * error with err.  *port gets the port bound. */
int srv_metrics_start(srv_metrics_t **out, srv_t *srv, const rpc_method_t *methods,
                      size_t nmethods, const char *addr, unsigned *port, char *err, size_t errlen);
/* The observer to give rpc_server_set_observer (arg: the srv_metrics_t). */
void srv_metrics_observe(int method, int err, double seconds, void *arg);
/* Stop the listener and free m.  NULL is a no-op. */
void srv_metrics_stop(srv_metrics_t *m);

#endif
