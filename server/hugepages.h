/*
 * hugepages.h - the huge pages a hugetlb pool uses (--huge-pages), found or
 * reserved at start and given back at exit.
 *
 * Owns: the plan (which page size, how many pages, found free or to be
 * reserved), the reservation (raising the kernel's pool of huge pages of one
 * size, /sys/kernel/mm/hugepages/hugepages-<kB>kB/nr_hugepages, as root),
 * giving it back, and the ledger of reservations in SRV_HUGE_LEDGER: one
 * file per daemon holding reserved pages, locked (flock) while the daemon
 * lives, so that a daemon killed with SIGKILL (which gives nothing back)
 * leaves a file whose lock anyone can take - and the next daemon that runs
 * as root gives those pages back at its start, saying so.
 * Never: raises the kernel's pool past what MemAvailable holds (less
 * SRV_MEM_KEEP: the node must not run short of ordinary memory for it);
 * lowers it by more than this daemon, or a dead one, raised it; keeps a
 * reservation the kernel granted only in part.
 * Locking: one process-wide lock file (SRV_HUGE_LEDGER/.lock, flock) around
 * every read-modify-write of nr_hugepages, so that daemons starting and
 * stopping at once do not lose each other's changes.  The functions run on
 * the main thread, at start and at exit.
 */
#ifndef PINPOOL_SRV_HUGEPAGES_H
#define PINPOOL_SRV_HUGEPAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define SRV_HUGE_LEDGER "/run/pinpool-hugetlb"

typedef struct srv_huge {
    uint64_t page;  /* the page size the pool uses (IPC_HUGE_2M or IPC_HUGE_1G); 0: none */
    uint64_t need;  /* pages of that size the pool takes */
    uint64_t added; /* pages this daemon added to the kernel's pool, to give back */
    int ledger_fd;  /* this daemon's ledger file, locked; -1 */
    char ledger[128];
    char why[320];  /* how the pages were had, or why there are none */
} srv_huge_t;

/*
 * Decide and, with --huge-pages reserve, reserve: the huge pages for a pool
 * of cfg's size with cfg's host backend.  Gives back first what dead
 * daemons left reserved (when root).  Fills *h and sets cfg->huge_page and
 * cfg->huge_why (0 and why not: the backend makes no hugetlb chunks,
 * --huge-pages never, too few free, not root, a partial grant...).  Returns
 * 0; -1 (logged) only when the huge pages are required (--host-backend
 * hugetlb or hugetlb-cpu) and cannot be had.  h->ledger_fd is -1 on entry.
 */
int srv_huge_setup(srv_config_t *cfg, srv_huge_t *h);

/* Give back what srv_huge_setup reserved (logged) and drop the ledger file;
 * nothing when it reserved nothing.  Call it once the pool is gone. */
void srv_huge_release(srv_huge_t *h);

/* Huge pages of size page that a new mapping can have now (free less
 * reserved, from sysfs), or -1 when the kernel has no such size. */
int64_t srv_huge_available(uint64_t page);

#endif
