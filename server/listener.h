/*
 * listener.h - the daemon's unix-socket listeners: the gRPC socket and the fd
 * socket, on the libev loop.
 *
 * The daemon accepts every unix connection itself (gRPC gets the gRPC
 * socket's connections as descriptors, rpc_server_add_connection), so that
 * running out of descriptors neither makes a listener spin (a failed accept
 * leaves it readable) nor kills it (gRPC 1.51's own listener stops for good
 * at its first EMFILE).  Out of descriptors, the listener closes a descriptor
 * it keeps in reserve, accepts the waiting connections through it and refuses
 * them (saying why where the protocol can), opens the reserve again and
 * rests SRV_LISTEN_REST_S before it looks again.  It refuses a connection the
 * same way when fewer than SRV_FD_SPARE descriptors would be left (spills,
 * the log and new chunks need some).  Refusals are logged at most once per
 * SRV_LISTEN_LOG_S, with their count.
 * Never: blocks (sockets are non-blocking), keeps a refused connection.
 * Threads: every function here runs on the loop's thread.
 */
#ifndef PINPOOL_SRV_LISTENER_H
#define PINPOOL_SRV_LISTENER_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define SRV_FD_SPARE 32        /* descriptors a listener leaves for the rest of the daemon */
#define SRV_LISTEN_REST_S 1.0  /* how long a refusing listener rests */
#define SRV_LISTEN_LOG_S 5.0   /* at most one refusal line per listener this often */

typedef struct srv_listener srv_listener_t;

/* A new connection (non-blocking, close-on-exec); the callee owns fd. */
typedef void (*srv_conn_fn)(void *arg, int fd);
/* Tell a connection about to be refused why (best effort, must not block);
 * the listener closes it afterwards. */
typedef void (*srv_refuse_fn)(void *arg, int fd, const char *why);

/*
 * Bind a unix socket of type (SOCK_STREAM, SOCK_SEQPACKET) called name in the
 * directory dirfd (whose path is dir; see dirs.h), replacing a stale socket
 * there (the caller holds the daemon's lock) but nothing else, mode 0660 and
 * of group (SRV_NO_GROUP: the daemon's), and listen on it; what names it in
 * the log ("fd socket").  refuse may be NULL.  0 and *out, or an error with err.
 */
int srv_listener_open(srv_listener_t **out, struct ev_loop *loop, int dirfd, const char *dir,
                      const char *name, int type, gid_t group, const char *what,
                      srv_conn_fn conn, srv_refuse_fn refuse, void *arg, char *err,
                      size_t errlen);
/*
 * Takeover (takeover.c): srv_listener_adopt serves fd, a listening unix
 * socket called name in dirfd that another daemon handed over (taken:
 * closed on failure too), as srv_listener_open would; srv_listener_fd is the
 * listening socket (to hand over; still the listener's); after
 * srv_listener_keep_file(l, true), close leaves the socket
 * file to the daemon that took it over (or is taking it over).
 */
int srv_listener_adopt(srv_listener_t **out, struct ev_loop *loop, int dirfd, const char *name,
                       int fd, const char *what, srv_conn_fn conn, srv_refuse_fn refuse,
                       void *arg, char *err, size_t errlen);
int srv_listener_fd(const srv_listener_t *l);
void srv_listener_keep_file(srv_listener_t *l, bool keep);
/* Stop accepting, close the socket and remove its file.  NULL is a no-op. */
void srv_listener_close(srv_listener_t *l);

#endif
