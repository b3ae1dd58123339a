/*
 * backend.c - the registry of host-memory backends (--host-backend NAME).
 *
 * Owns: the table below and ipc_host_backend().  A new backend is one file,
 * ipc/host_<name>.c, defining a const ipc_host_ops_t ipc_host_<name> (declared
 * in ipc.h; IPC_HOST_OPS fills it from the file's <name>_* functions), plus
 * one line in this table.
 * Never: creates or initialises a backend; whether one works here is its own
 * probe()'s business.
 * Locking: none; the table is constant.
 */
#include "ipc.h"

#include <stdio.h>
#include <string.h>

static const ipc_host_ops_t *const backends[] = {
    &ipc_host_memfd,
    &ipc_host_vmm,
    &ipc_host_register,
};

const ipc_host_ops_t *ipc_host_backend(const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
        if (strcmp(backends[i]->name, name) == 0)
            return backends[i];
    }
    return NULL;
}

const ipc_host_ops_t *ipc_host_auto(char *why, size_t whylen)
{
    static const ipc_host_ops_t *const order[] = {&ipc_host_vmm, &ipc_host_register};
    char err[256];
    size_t n = 0;

    if (why != NULL && whylen > 0)
        why[0] = '\0';
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        if (order[i]->probe(err, sizeof(err)) == 0)
            return order[i];
        if (why != NULL && n < whylen)
            n += (size_t)snprintf(why + n, whylen - n, "%s%s: %s", n ? "; " : "", order[i]->name, err);
    }
    return &ipc_host_memfd;
}
