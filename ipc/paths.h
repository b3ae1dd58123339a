/*
 * paths.h - where the daemon's sockets live, and how their owners are named
 * in messages, shared by daemon and clients.
 */
#ifndef PINPOOL_IPC_PATHS_H
#define PINPOOL_IPC_PATHS_H

#include <stddef.h>
#include <sys/types.h>

/* $XDG_RUNTIME_DIR/pinpool.sock when that directory is set, else
 * /tmp/pinpool-$UID/pinpool.sock (the daemon makes the directory, 0700).
 * Returns 0, or -ENAMETOOLONG. */
int ipc_default_socket(char *buf, size_t len);

/* The fd socket that goes with a gRPC socket path: path + ".fd". */
int ipc_fd_socket_path(const char *grpc_path, char *buf, size_t len);

/* "uid 1001 (alice)", or "uid 1001" without a user of that uid, into buf;
 * returns buf. */
const char *ipc_uid_name(uid_t uid, char *buf, size_t len);

#endif
