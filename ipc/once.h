/*
 * once.h - a load done once per process that remembers how it went: the
 * CUDA driver (cudaload.c) and NCCL (ncclload.c) are each loaded by the
 * first caller, and every later caller gets the first result and its reason.
 *
 * Owns: ipc_once_t.  Never: retries a load that failed (a process sees one
 * driver).  Locking: pthread_once; rc and msg are written only by fn, inside it.
 */
#ifndef PINPOOL_IPC_ONCE_H
#define PINPOOL_IPC_ONCE_H

#include <pthread.h>
#include <stdio.h>

typedef struct ipc_once {
    pthread_once_t once;
    int rc;        /* fn's result: 0, or the error */
    char msg[1024]; /* why, when rc != 0 */
} ipc_once_t;

#define IPC_ONCE_INIT {PTHREAD_ONCE_INIT, 0, ""}

/* Run fn the first time (it sets o->rc and, on failure, o->msg); return
 * o->rc, with o->msg copied into err when it is an error. */
static inline int ipc_once(ipc_once_t *o, void (*fn)(void), char *err, size_t errlen)
{
    pthread_once(&o->once, fn);
    if (o->rc != 0)
        snprintf(err, errlen, "%s", o->msg);
    return o->rc;
}

#endif
