/*
 * paths.c - socket path conventions and owners' names (see paths.h).  String
 * work and a user lookup; no locks.
 */
#include "paths.h"

#include <errno.h>
#include <pwd.h>
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

const char *ipc_uid_name(uid_t uid, char *buf, size_t len)
{
    struct passwd pw, *res = NULL;
    char tmp[1024];

    if (getpwuid_r(uid, &pw, tmp, sizeof(tmp), &res) == 0 && res != NULL)
        snprintf(buf, len, "uid %u (%s)", (unsigned)uid, res->pw_name);
    else
        snprintf(buf, len, "uid %u", (unsigned)uid);
    return buf;
}
