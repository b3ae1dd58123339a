/*
 * takeover.h - `pinpool serve --takeover`: a new daemon takes the running
 * one's pool, state, sessions and sockets over a unix socket beside the
 * daemon's (--socket PATH: PATH.takeover, in the daemon's own directory),
 * and the old one exits (README "Upgrading pinpool").
 *
 * The protocol (SOCK_SEQPACKET; every message a to_msg_t, descriptors by
 * SCM_RIGHTS, at most IPC_MAX_FDS a message):
 *   new -> old  HELLO     the blob version it reads
 *   old -> new  REFUSE    why (the peer is not the daemon's uid nor root,
 *                         or the daemon has what cannot be handed over)
 *               or BEGIN, CHUNKS... (the host chunks' memfds, in order),
 *               BLOB... (srv_handover_save's state), SOCKS (the gRPC, fd
 *               and takeover listening sockets, the lock file and, with a
 *               file spill tier, its directory's lock),
 *               SESSIONS... (each live fd-socket session's connection and
 *               client id), END
 *   new -> old  GO        it rebuilt everything (srv_handover_load) and will
 *                         serve; or FAIL with why
 *   old -> new  BYE       the old daemon stopped reading every socket
 * Between the pause (before BEGIN) and GO the old daemon answers gRPC calls
 * on slices and objects PINPOOL_EUPGRADE (libpinpool tries again) and reads
 * no session; anything but GO (FAIL, the new daemon gone, a timeout) ends
 * the pause and it serves on as before, saying why in its log.
 * Threads: the old side runs on the old daemon's libev loop (its callback
 * blocks the loop for the hand-over, bounded by the timeouts below); the new
 * side on the new daemon's main thread before its loop runs.
 */
#ifndef PINPOOL_SRV_TAKEOVER_H
#define PINPOOL_SRV_TAKEOVER_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fdsock.h"
#include "listener.h"
#include "srv.h"

#define SRV_TAKEOVER_SUFFIX ".takeover"
#define SRV_TAKEOVER_WAIT_MS 5000u  /* calls in flight to finish at the pause */
#define SRV_TAKEOVER_GO_S 30        /* the new daemon's rebuild, until GO */
#define SRV_TAKEOVER_IO_S 10        /* any other message */

/* What the old daemon hands over besides srv's state, and what it does
 * once it did (handed_over: stop serving without touching the sockets'
 * files or the sessions, then exit 0).  The listener and fdsock pointers are
 * read when a takeover starts. */
typedef struct srv_takeover_env {
    srv_t *srv;
    srv_listener_t **grpc;  /* the gRPC socket's listener */
    srv_fdsock_t **fdsock;
    int lock_fd;
    void (*handed_over)(void *arg);
    void *arg;
} srv_takeover_env_t;

typedef struct srv_takeover srv_takeover_t;

/* Old side: listen on name (PATH.takeover's name) in dirfd, or serve fd when
 * adopt >= 0 (taken from the daemon before).  0, or an error with err. */
int srv_takeover_listen(srv_takeover_t **out, struct ev_loop *loop, int dirfd, const char *dir,
                        const char *name, gid_t group, int adopt, const srv_takeover_env_t *env,
                        char *err, size_t errlen);
/* Stop listening; keep_file: leave the socket file (handed over). */
void srv_takeover_close(srv_takeover_t *t, bool keep_file);

/* New side: what it received. */
typedef struct srv_takeover_got {
    int conn;                 /* to the old daemon, for GO */
    int grpc_listen, fd_listen, takeover_listen, lock_fd;
    int tier_fd;              /* the spill tier's claim (a file tier's lock), -1: none */
    uint32_t nsessions;
    int *session_fds;
    char (*session_ids)[SRV_CLIENT_ID_LEN];
    pid_t old_pid;
} srv_takeover_got_t;

/*
 * New side: connect to path (PATH.takeover), receive everything and rebuild
 * srv from it (srv_handover_load).  0 and *got, or an error with err (and
 * the old daemon told why, so that it serves on).
 */
int srv_takeover_receive(const char *path, srv_t *srv, srv_takeover_got_t *got, char *err,
                         size_t errlen);
/* GO, then wait for BYE.  0, or an error with err (GO could not be sent:
 * the old daemon serves on). */
int srv_takeover_go(srv_takeover_got_t *got, char *err, size_t errlen);
/* FAIL with why (if the connection is still open), and close whatever of got
 * is left (fields set to -1 once taken elsewhere are skipped). */
void srv_takeover_abort(srv_takeover_got_t *got, const char *why);

#endif
