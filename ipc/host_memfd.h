/*
 * host_memfd.h - the memfd backend's pieces that host_register.c and
 * host_hugetlb.c build on (their chunks are memfds too).  Included by those
 * three only.
 *
 * Owns: nothing; see host_memfd.c.  Never: used outside ipc/.
 * Locking: none.
 */
#ifndef PINPOOL_IPC_HOST_MEMFD_H
#define PINPOOL_IPC_HOST_MEMFD_H

#include <stddef.h>
#include <stdint.h>

/* err = the formatted message, when err is not NULL and errlen > 0. */
void ipc_set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A sealed memfd of size bytes for chunk index, every page committed: 0 and
 * *out (close-on-exec, the caller's), or -errno with err set and nothing open. */
int ipc_memfd_make(uint64_t size, uint32_t index, int *out, char *err, size_t errlen);

/* Map fd read-write over [addr, addr + size) in one MAP_FIXED mmap (the
 * range is never unmapped).  0, or -errno with the old mapping put back when
 * old_fd >= 0 (a failed MAP_FIXED may have removed it), else a reservation. */
int ipc_memfd_map_over(void *addr, uint64_t size, int fd, int old_fd);

/* Put a PROT_NONE reservation back over [addr, addr+bytes) in one step; if
 * even that fails the range is unmapped instead: at least no memory is kept. */
void ipc_memfd_reserve_again(void *addr, uint64_t bytes);

struct ipc_chunk;
/* Chunk c (of chunk index) takes the fresh memfd fd: mapped over its range,
 * its old descriptor closed.  0, or -errno with err set, fd closed and c
 * unchanged (still mapped as before). */
int ipc_memfd_chunk_take(struct ipc_chunk *c, int fd, uint32_t index, char *err, size_t errlen);

/* Unmap and close chunk c; its range becomes a PROT_NONE reservation again
 * (the backend's release() frees it).  *c is reset (fd -1, addr NULL). */
void ipc_memfd_chunk_destroy(struct ipc_chunk *c);

#endif
