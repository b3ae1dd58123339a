/*
 * paths.c - socket path conventions (see paths.h).  Pure string work.
 */
#include "paths.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int ipc_default_socket(char *buf, size_t len)
{
    const char *dir = getenv("XDG_RUNTIME_DIR");
    int n;

    if (dir != NULL && dir[0] != '\0')
        n = snprintf(buf, len, "%s/pinpool.sock", dir);
    else
        n = snprintf(buf, len, "/tmp/pinpool-%u/pinpool.sock", (unsigned)getuid());
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int ipc_fd_socket_path(const char *grpc_path, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s.fd", grpc_path);

    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}
