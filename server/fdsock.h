/*
 * fdsock.h - the fd socket: where clients open their lease and fetch the
 * descriptors of their slices' chunks (protocol in ipc/ipc.h).
 *
 * Runs on the daemon's libev loop, and only there: every function below must
 * be called from the loop's thread.
 */
#ifndef PINPOOL_SRV_FDSOCK_H
#define PINPOOL_SRV_FDSOCK_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "srv.h"

typedef struct srv_fdsock srv_fdsock_t;

/* Listen on name in the socket directory dirfd (at dir; dirs.h), mode 0660
 * and of group (SRV_NO_GROUP: the daemon's), and serve it on loop.  0, or an
 * error with err. */
int srv_fdsock_start(srv_fdsock_t **out, struct ev_loop *loop, srv_t *srv, int dirfd,
                     const char *dir, const char *name, gid_t group, char *err, size_t errlen);
/* Stop accepting; existing sessions go on. */
void srv_fdsock_stop_accepting(srv_fdsock_t *fs);
/*
 * Takeover (takeover.c).  srv_fdsock_adopt serves the listening socket
 * listen_fd (name in dirfd) handed over by the daemon before (taken, closed
 * on failure too), and srv_fdsock_add_session a live session's connection fd
 * (taken) for client, whose HELLO the old daemon sent.  srv_fdsock_listen_fd and srv_fdsock_each_session name the descriptors to
 * hand over (still fs's).  srv_fdsock_handed_over: the new daemon serves on:
 * the listener's socket file stays, each session's descriptor is closed here
 * (the connection lives on in the new daemon) and its client is left alone.
 */
int srv_fdsock_adopt(srv_fdsock_t **out, struct ev_loop *loop, srv_t *srv, int dirfd,
                     const char *name, int listen_fd, char *err, size_t errlen);
int srv_fdsock_add_session(srv_fdsock_t *fs, int fd, srv_client_t *client, const char *id);
int srv_fdsock_listen_fd(const srv_fdsock_t *fs);
/* Whether srv_fdsock_close leaves the socket file (a takeover before GO). */
void srv_fdsock_keep_file(srv_fdsock_t *fs, bool keep);
void srv_fdsock_each_session(srv_fdsock_t *fs, void (*fn)(void *arg, int fd, const char *id),
                             void *arg);
void srv_fdsock_handed_over(srv_fdsock_t *fs);
/* Close every session (their slices return to the pool), the listener, and
 * remove the socket file.  NULL is a no-op. */
void srv_fdsock_close(srv_fdsock_t *fs);

/*
 * The loop-free core of a session: read one message from fd (non-blocking)
 * and answer it for client (called id in the log).  Returns false when the
 * session must end (the peer left, a malformed message, a reply that cannot
 * be sent); the caller then closes fd and calls srv_session_close.  Any
 * thread; the fuzzer (tests/fuzz/fuzz_fdsock.c) drives it over a socketpair.
 */
bool srv_fdsock_session_read(srv_t *srv, srv_client_t *client, const char *id, int fd);

#endif
