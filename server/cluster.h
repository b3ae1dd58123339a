/*
 * cluster.h - the cluster namespace (--cluster NAME): named objects shared by
 * the daemons of one cluster through their common Mooncake tier.  See
 * cluster.c for the layout in Mooncake, the rules and the locking.
 *
 * The hooks are what objstore.c, spill.c and srv.c call: one line each where
 * a call made locally must also answer for the cluster.  Each is a no-op
 * (returns what it was given) when --cluster is off.
 */
#ifndef PINPOOL_CLUSTER_H
#define PINPOOL_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

struct srv;
struct obj;
struct srv_tkey;

/* Before the tier opens (srv_spill_open): with --cluster, checks the tier URI,
 * opens the cluster's own handle on Mooncake and writes into uri the node's
 * tier URI (its prefix CLUSTER/n/NODE/).  Without, copies the spill tier URI. */
int srv_cluster_open(struct srv *srv, char *uri, size_t urilen, char *err, size_t errlen);
void srv_cluster_close(struct srv *srv);

/* objstore.c, srv->lock NOT held: uid's key was released or put (rc 0): share
 * it (queued; the maintenance thread writes its copy and record). */
void srv_cluster_share(struct srv *srv, uint32_t uid, const char *key, int rc);
/* objstore.c, srv->lock held (dropped meanwhile): o and *rc are what
 * do_settled found for key.  Returns the object to use: o when it is the
 * cluster's current version (or not shared), an object fetched from the
 * cluster into this daemon when the key's current version lies elsewhere, or
 * NULL with *rc and msg (PINPOOL_ENOKEY: the cluster has none either). */
struct obj *do_cluster_find(struct srv *srv, uint32_t uid, const char *key, struct obj *o, int *rc,
                            char *msg, size_t msglen);
/* objstore.c, no lock: Exists answered rc locally; the cluster's answer. */
int srv_cluster_exists(struct srv *srv, uint32_t uid, const char *key, int rc);
/* objstore.c, no lock: SRV_EWOULDBLOCK on a do_nowait() thread with
 * --cluster (Remove calls Mooncake: it runs on a worker), else 0. */
int srv_cluster_nowait(struct srv *srv);
/* objstore.c, no lock: Remove answered rc locally; the cluster's record and
 * copy of key go too (0 if there was one), before Remove answers. */
int srv_cluster_remove(struct srv *srv, uint32_t uid, const char *key, int rc, char *msg,
                       size_t msglen);

/* spill.c, no lock: this node's copy is about to be removed: its record goes
 * first when it still names that copy. */
void srv_cluster_unshare(struct srv *srv, const struct srv_tkey *copy);
/* spill.c, the maintenance thread, srv->lock held (dropped meanwhile): share
 * what srv_cluster_share queued. */
void do_cluster_share_queued(struct srv *srv);
/* spill.c: the cluster's facts for the stats callback (no lock). */
void srv_cluster_report(struct srv *srv, void (*add)(const char *name, const char *value, void *arg),
                        void *arg);

#endif
