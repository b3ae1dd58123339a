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
    &ipc_host_hugetlb,
    &ipc_host_hugetlb_cpu,
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

/* Append "name: reason" to the list of skipped backends. */
static size_t skipped(char *why, size_t whylen, size_t n, const char *name, const char *reason)
{
    int k;

    if (why == NULL || n >= whylen)
        return n;
    k = snprintf(why + n, whylen - n, "%s%s: %s", n ? "; " : "", name, reason);
    return k < 0 ? n : n + (size_t)k;
}

const ipc_host_ops_t *ipc_host_auto(uint64_t huge_page, const char *no_huge, char *why,
                                    size_t whylen)
{
    /* Fastest first (DESIGN.md, a 32 GiB pool on an H200: hugetlb ready 3.2x
     * faster than cuMemHostAlloc, vmm 1.7-1.9x, register ~1x).  hugetlb-cpu
     * is never picked: a CPU-only daemon takes no huge pages, a node-wide
     * resource, unless told to (--host-backend hugetlb-cpu). */
    static const ipc_host_ops_t *const order[] = {&ipc_host_hugetlb, &ipc_host_vmm,
                                                  &ipc_host_register};
    char err[256];
    size_t n = 0;

    if (why != NULL && whylen > 0)
        why[0] = '\0';
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        if (order[i] == &ipc_host_hugetlb && huge_page == 0) {
            n = skipped(why, whylen, n, "hugetlb",
                        no_huge != NULL && no_huge[0] != '\0' ? no_huge : "no huge pages");
            continue;
        }
        if (order[i]->probe(err, sizeof(err)) == 0)
            return order[i];
        n = skipped(why, whylen, n, order[i]->name, err);
    }
    return &ipc_host_memfd;
}
