/*
 * ncclload.h - NCCL, loaded at run time.
 *
 * Owns: dlopen of libnccl.so.2 (searched in the places listed in ncclload.c)
 * and a table of the NCCL functions pinpool uses, typed by the toolkit's
 * nccl.h.  NCCL_NVLS_ENABLE=0 is put in the environment (unless the user set
 * it) before the library is loaded: pinpool never uses NVLink multicast.
 * Never: links libnccl, or creates communicators (the caller owns those).
 * Locking: ipc_nccl_load is thread-safe (pthread_once); the table is
 * read-only once loaded.
 *
 * Built only when nccl.h is found with the toolkit (PINPOOL_HAVE_NCCL).
 */
#ifndef PINPOOL_IPC_NCCLLOAD_H
#define PINPOOL_IPC_NCCLLOAD_H

#include <stddef.h>

#ifdef PINPOOL_HAVE_NCCL
#include <nccl.h>

#define IPC_NCCL_FUNCS(X)                                                                      \
    X(ncclGetVersion) X(ncclGetErrorString) X(ncclCommInitAll) X(ncclCommDestroy)              \
    X(ncclCommGetAsyncError) X(ncclBroadcast) X(ncclGroupStart) X(ncclGroupEnd)

typedef struct ipc_nccl {
#define IPC_NCCL_FIELD(f) __typeof__(f) *f;
    IPC_NCCL_FUNCS(IPC_NCCL_FIELD)
#undef IPC_NCCL_FIELD
    int version; /* ncclGetVersion: 22805 for 2.28.5 */
    char path[512];
} ipc_nccl_t;

/* Valid after ipc_nccl_load() returned 0. */
extern ipc_nccl_t ipc_nccl;
#endif

/*
 * Load NCCL once per process.  0, or -ELIBACC with a message for a person
 * ("NCCL not found (libnccl.so.2; tried ...); set PINPOOL_NCCL_LIB").
 * $PINPOOL_NCCL_LIB, when set, is the only file tried.  Later calls return
 * the first result.
 */
int ipc_nccl_load(char *err, size_t errlen);
/* "2.28.5 (/path/libnccl.so.2)" into buf once loaded, else "missing: why". */
const char *ipc_nccl_describe(char *buf, size_t len);

#endif
