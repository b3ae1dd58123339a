/*
 * mooncake.h - a real Mooncake Store on loopback for the tests: mooncake_master
 * (with its HTTP metadata server) and a mooncake_client process that
 * contributes the memory segment objects live in, both from the PyPI wheel
 * (`make test` installs it), on free ports, logs in a temp directory.  One
 * cluster per test process (Criterion forks one per test): the global `mc`.
 * The helpers fail the test (cr_assert) or skip it when Mooncake is missing.
 */
#ifndef PINPOOL_TEST_MOONCAKE_H
#define PINPOOL_TEST_MOONCAKE_H

#include <stdbool.h>
#include <sys/types.h>

#define MC_MAX_SEGMENTS 4

typedef struct mc_cluster {
    char pkg[512]; /* the mooncake package directory (its binaries) */
    char dir[64];  /* logs: master.log, client.log, adapter.log, peer.log */
    int master_port, meta_port, metrics_port;
    pid_t master, client;
    char segname[64]; /* the client's segment (HOST:PORT of its transfer engine) */
    pid_t segments[MC_MAX_SEGMENTS]; /* more mooncake_clients a test started (mc_teardown kills them) */
    char uri[1024]; /* mooncake://... for the tier (mc_start_cluster) */
    char master_addr[64], metadata[128];
} mc_cluster_t;

extern mc_cluster_t mc;

/* $PINPOOL_PYTHON, else python3. */
const char *mc_python(void);
int mc_free_port(void);
bool mc_port_open(int port);
/* fork + execv argv with stdout and stderr appended to log, in its own group. */
pid_t mc_spawn(const char *log, char *const argv[]);
/* SIGKILL and reap *pid (if > 0); *pid = 0. */
void mc_stop(pid_t *pid);
/* The last lines of every log (on failure). */
void mc_dump_logs(void);
/* (Re)start mooncake_master on mc's ports (lease: --default_kv_lease_ttl in
 * ms); waits (20 s at most) until its RPC and metadata ports accept. */
void mc_start_master(const char *lease);
/* Ports, temp directory, master, and a mooncake_client contributing 512MB;
 * waits (20 s each) until both serve; sets mc.uri with buffer=4MiB,
 * timeout_ms=15000, log=DIR/adapter.log and extra_params ("k=v&..." or ""). */
void mc_start_cluster(const char *lease, const char *extra_params);
/* One more mooncake_client contributing size ("64MB") at host, on a free port,
 * its log DIR/LOGNAME.log; waits (20 s) until it serves; its segment's name
 * into name.  Returns its pid (the caller stops it, or keeps it in
 * mc.segments for mc_teardown). */
pid_t mc_start_segment(const char *host, const char *size, const char *logname, char *name,
                       size_t namelen);
/* Kill both (and mc.segments), remove the directory (a suite's .fini). */
void mc_teardown(void);
/* tests/mooncake_peer.py (the wheel's Python client, nothing of pinpool):
 * op "get" writes key's bytes to path, "put" stores path's bytes under key,
 * "replicas" writes the segment of each of key's replicas, one a line,
 * "remove" removes key (path unused);
 * its exit status (0 ok, 2 no such key), bounded by 60 s. */
int mc_run_peer(const char *op, const char *key, const char *path);

#endif
