/*
 * host_memfd.h - the memfd backend's pieces that host_register.c builds on
 * (its chunks are memfds too).  Included by host_memfd.c and host_register.c
 * only.
 *
 * Owns: nothing; see host_memfd.c.  Never: used outside ipc/.
 * Locking: none.
 */
#ifndef PINPOOL_IPC_HOST_MEMFD_H
#define PINPOOL_IPC_HOST_MEMFD_H

#include <stddef.h>
#include <stdint.h>

/* A sealed memfd of size bytes for chunk index, every page committed: 0 and
 * *out (close-on-exec, the caller's), or -errno with err set and nothing open. */
int ipc_memfd_make(uint64_t size, uint32_t index, int *out, char *err, size_t errlen);

/* Map fd read-write over [addr, addr + size) in one MAP_FIXED mmap (the
 * range is never unmapped).  0, or -errno with the old mapping put back when
 * old_fd >= 0 (a failed MAP_FIXED may have removed it), else a reservation. */
int ipc_memfd_map_over(void *addr, uint64_t size, int fd, int old_fd);

#endif
