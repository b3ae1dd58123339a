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
