/*
 * hostd.h - what test_host.c and test_limits.c share: a daemon started the
 * way each of their tests needs (the socket path, the user, the descriptor
 * limit and the cgroup are the test's), and small file and session helpers.
 * Owns the daemon it starts until hd_stop; never starts anything else.
 */
#ifndef PINPOOL_TEST_HOSTD_H
#define PINPOOL_TEST_HOSTD_H

#include <stddef.h>
#include <sys/types.h>

#include "ipc.h"

typedef struct hd {
    pid_t pid;
    char ready[512];
    char log[256];
} hd_t;

/* Runs in the daemon's child before exec (drop to a user, lower a limit,
 * join a cgroup); it _exits 126 when it cannot. */
typedef void (*setup_fn)(void *arg);

/* `$PINPOOL_BIN serve ARGS...` (NULL-terminated) with stderr appended to
 * log; 0 once it printed its ready line (h->pid runs), else its exit status
 * (reaped), or -1 when it did neither in 30 s (killed). */
int hd_start(hd_t *h, const char *log, setup_fn setup, void *arg, ...);
/* SIGTERM and wait: the exit status (or -1 if it had to be killed). */
int hd_stop(hd_t *h);

/* path's text into buf ("" when it cannot be read); returns buf. */
char *slurp(const char *path, char *buf, size_t len);
long count_lines(const char *path);
void write_file(const char *path, const char *text);
/* A fresh directory /tmp/pinpool-host-XXXXXX of mode into dir. */
void make_base(char *dir, size_t len, mode_t mode);
/* An fd-socket session by hand: the socket (kept open) and its HELLO in *h;
 * -1 when it cannot connect or no HELLO came within 5 s. */
int raw_session(const char *fdpath, ipc_hello_t *h);
/* A session, a 1 MiB slice written and freed, GetPoolInfo: 0 when all of it
 * works (the error otherwise, printed). */
int use_daemon(const char *socket);

#endif
