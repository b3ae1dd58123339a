/*
 * gms.h - --gms: the daemon speaks NVIDIA Dynamo's GPU Memory Service
 * protocol (gms_wire.h) on one unix socket per GPU and tag, named as GMS
 * names them (gms_<GPU UUID>_<tag>.sock, in --gms-dir), so that GMS's own
 * client and the engines that load with --load-format gms use pinpool.
 *
 * Owns: those sockets' listeners and connections, and per GPU and tag a
 * store: its allocations (each one cuMemCreate, exported as a POSIX
 * descriptor: ipc_devmem_vmm_alloc), its metadata, its layout hash and the
 * writer/reader lock (gms.c says how it works).
 * Never: touches the pools, slices or objects of the rest of the daemon;
 * blocks the loop on a peer (sockets are non-blocking, a lock wait is a
 * queue and a timer).
 * Threads: every function here runs on the libev loop's thread.
 */
#ifndef PINPOOL_SRV_GMS_H
#define PINPOOL_SRV_GMS_H

#include <ev.h>
#include <stddef.h>
#include <sys/types.h>

#include "srv.h"

typedef struct srv_gms srv_gms_t;

/*
 * Open a socket for each tag of the comma-separated list tags on each GPU
 * of devices ("all", or ordinals "0,1"), in the directory dir (its path;
 * made mode 0700 if missing), mode 0660 and of group.  Every GPU must
 * support VMM memory exported as descriptors.  0 and *out, or an error
 * with err (nothing is left open).
 */
int srv_gms_start(srv_gms_t **out, struct ev_loop *loop, srv_t *srv, const char *tags,
                  const char *devices, const char *dir, gid_t group, char *err, size_t errlen);
/* Stop accepting (shutdown begins); connections stay until srv_gms_close. */
void srv_gms_stop_accepting(srv_gms_t *g);
/* End every connection, free every allocation, close.  NULL is a no-op. */
void srv_gms_close(srv_gms_t *g);

#endif
