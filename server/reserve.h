/*
 * reserve.h - the daemon's last memory: an emergency reserve of heap and the
 * headroom check that keeps the daemon from running out.
 *
 * What it covers, exactly:
 *   - a process limit (RLIMIT_DATA or RLIMIT_AS, e.g. `prlimit --data=...`):
 *     srv_reserve_short() says the heap is short while less than the
 *     reserve's size is left under it; rpc.c then refuses every call that
 *     would grow the heap (Put, Release, Alloc, Get...) with
 *     RESOURCE_EXHAUSTED until enough is free again, and lets through the
 *     calls that free memory or cost little (Free, Remove, Exists, Ping,
 *     GetPoolInfo...), so gRPC's own allocations, which abort the process
 *     when they fail, keep that much room;
 *   - an allocation that fails anyway (in a handler, decoding a request,
 *     packing a reply): the caller answers RESOURCE_EXHAUSTED and calls
 *     srv_reserve_spend(), which frees the reserve block so that sending that
 *     answer (gRPC) finds memory, and marks the heap short until a block of
 *     twice the reserve can be allocated again;
 *   - libev: its allocator (srv_reserve_ev_realloc) spends the reserve and
 *     retries before libev would print "cannot allocate memory" and abort;
 *     it retries for about a second more, then libev aborts (nothing is left).
 * Not covered: the machine running out of memory without a limit (the kernel's
 * OOM killer chooses, not malloc; --mem-pool-size against MemAvailable/cgroup
 * limits is checked at start), a cgroup's memory.max (not read here), and
 * gRPC's own allocations once the reserve is gone (gpr_malloc aborts).
 * Threads: every function may be called from any thread at once (atomics and
 * one leaf mutex inside).  The process has one reserve (like malloc's heap,
 * it is process-wide state), set up by srv_reserve_start before any thread.
 */
#ifndef PINPOOL_SRV_RESERVE_H
#define PINPOOL_SRV_RESERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Allocate and touch a reserve of bytes (0: none, and no headroom check),
 * and make it libev's allocator.  Before ev_default_loop and every thread. */
void srv_reserve_start(uint64_t bytes);

/* Is the heap short (see above)?  Then a message for a person in msg. */
bool srv_reserve_short(char *msg, size_t msglen);

/* An allocation failed (what failed, for the log): free the reserve block. */
void srv_reserve_spend(const char *what);

/* libev's allocator (ev_set_allocator). */
void *srv_reserve_ev_realloc(void *ptr, long size);

#endif
