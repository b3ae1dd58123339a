/*
 * backend.c - the registry of host-memory backends (--host-backend NAME).
 *
 * Owns: the table below and ipc_host_backend().  A new backend is one file,
 * ipc/host_<name>.c, defining a const ipc_host_ops_t ipc_host_<name> (declared
 * in ipc.h), plus one line in this table.
 * Never: creates, probes or initialises a backend (no CUDA call here; whether
 * a backend works on this machine is the backend's own business).
 * Locking: none; the table is constant.
 */
#include "ipc.h"

#include <string.h>

static const ipc_host_ops_t *const backends[] = {
    &ipc_host_memfd,
    /* &ipc_host_vmm, &ipc_host_register: added with their files */
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
