/*
 * config.h - the daemon's options.
 *
 * Every option is defined once, in the table in config.c (name, default,
 * bounds, help); that table drives the command line, `pinpool serve --help`
 * and the GetServerConfig reply.  A srv_config_t is filled once at start-up
 * and read-only afterwards.
 */
#ifndef PINPOOL_SRV_CONFIG_H
#define PINPOOL_SRV_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SRV_PATH_MAX 108 /* sun_path */
#define SRV_ALLOW_MAX 32 /* entries of --allow-uid, of --allow-gid */
#define SRV_CONFIG_AUTO UINT64_MAX /* a number option left to "auto" until resolved */
/* Descriptors the daemon keeps for itself when it derives --max-clients auto
 * from RLIMIT_NOFILE: listeners, epoll, gRPC's own, the log, the lock, the
 * tier, metrics, the listeners' spare (listener.h), plus one per chunk. */
#define SRV_FD_BASE 96
#define SRV_FDS_PER_CLIENT 2 /* its fd-socket session and its gRPC connection */

typedef struct srv_config {
    uint64_t mem_pool_size;
    uint64_t chunk_size;
    uint64_t pin_threads;
    uint64_t pin_unit; /* 0: a chunk in one call */
    uint64_t device_pool_size;
    uint64_t client_quota;
    uint64_t user_quota;
    uint64_t max_clients;
    uint64_t max_objects;
    char allow_uid[128];
    char allow_gid[128];
    char log_file[256];
    char force[4];
    char takeover[4]; /* yes: serve --takeover (takeover.c) */
    char detached_clients[4];
    char devices[128];
    char device_pool_uid[64];
    char socket[SRV_PATH_MAX];
    char listen[256];
    char listen_token_file[256];
    /* the control plane's limits (rpc.c, service.c) */
    uint64_t max_message_size;
    uint64_t max_batch_keys;
    uint64_t rpc_workers;
    uint64_t rpc_queue;
    uint64_t max_streams;
    uint64_t rpc_memory;
    uint64_t memory_reserve;
    char metrics[64];
    char host_backend[16];
    char device_backend[8];
    char huge_pages[8];
    char log_level[8];
    char log_format[8];
    char state_dir[256];
    char spill_tier[1024];
    char spill_low_watermark[32];
    char cluster[64];      /* --cluster: "" off (server/cluster.c) */
    char cluster_node[64]; /* --cluster-node */
    char gms[256];         /* --gms: "" off (server/gms.c) */
    char gms_dir[256];     /* --gms-dir */
    /* Not options: --allow-uid / --allow-gid as numbers (names looked up by
     * srv_config_validate); the first gid is the group of the sockets. */
    uint32_t allow_uids[SRV_ALLOW_MAX], nallow_uids;
    uint32_t allow_gids[SRV_ALLOW_MAX], nallow_gids;
    /* Not an option: --device-pool-uid as a number (ndevice_uid 0: not given). */
    uint32_t device_uid, ndevice_uid;
    /* Not options: the huge pages the pool may use, found or reserved at start
     * (hugepages.h): their size (IPC_HUGE_2M or IPC_HUGE_1G; 0: none, and
     * huge_why says why), for --host-backend hugetlb, hugetlb-cpu and auto. */
    uint64_t huge_page;
    char huge_why[320];
    /* Not options: what parsing changed and a person should hear about ("--chunk-size
     * 64MB rounded up to 62.00 MiB"), one per line; main.c logs them at start. */
    char notes[512];
} srv_config_t;

/* Fill cfg with the embedded defaults. */
void srv_config_defaults(srv_config_t *cfg);

/* Set one option by its long name from text.  0, or PINPOOL_EINVAL with a
 * message for a person in err ("--chunk-size: '3MB' is not a multiple of 2 MiB"). */
int srv_config_set(srv_config_t *cfg, const char *name, const char *value,
                   char *err, size_t errlen);

/* Parse "--name value" / "--name=value" arguments.  Returns 0, 1 when --help
 * was asked for, or PINPOOL_EINVAL with a message in err. */
int srv_config_parse_args(srv_config_t *cfg, int argc, char **argv, char *err, size_t errlen);

/* Checks between options (pool vs chunk size); --chunk-size auto (0) becomes
 * the size that follows the pool's (see config.c); --allow-uid/--allow-gid
 * names become numbers (the user and group databases: getpwnam_r,
 * getgrnam_r), anything that is neither a number nor a name is refused.
 * 0 or PINPOOL_EINVAL + err. */
int srv_config_validate(srv_config_t *cfg, char *err, size_t errlen);

/* --max-clients auto: what nofile descriptors (RLIMIT_NOFILE) allow, after
 * SRV_FD_BASE and one per chunk, at SRV_FDS_PER_CLIENT a client (at least
 * 1); a number given that the descriptors cannot carry gets a note.  After
 * srv_config_validate. */
void srv_config_resolve_max_clients(srv_config_t *cfg, uint64_t nofile);

/*
 * Resolve the "auto" values: --state-dir becomes $XDG_STATE_HOME/pinpool, else
 * /var/tmp/pinpool-$UID (made 0700 if missing, refused if it or a directory
 * above it lets another user in: dirs.h); --spill-tier becomes
 * file://STATE_DIR/spill/<the socket path, '/' as '_'> (one directory per
 * daemon, since a file tier is locked by one).  0 or an error with err.
 */
int srv_config_resolve(srv_config_t *cfg, char *err, size_t errlen);

/* --spill-low-watermark in bytes for a pool of capacity bytes (a fraction
 * like 0.05, or a size like 2GiB).  0 or PINPOOL_EINVAL with err. */
int srv_config_watermark(const srv_config_t *cfg, uint64_t capacity, uint64_t *bytes, char *err,
                         size_t errlen);

/* The options with their help and defaults, for `pinpool serve --help`. */
void srv_config_print_help(FILE *out);

/* Calls fn for every option with its effective value, in table order. */
void srv_config_foreach(const srv_config_t *cfg,
                        void (*fn)(const char *name, const char *value, const char *defval,
                                   const char *help, void *arg),
                        void *arg);

/* The default socket: $XDG_RUNTIME_DIR/pinpool.sock, else /tmp/pinpool-$UID/pinpool.sock. */
void srv_default_socket(char *buf, size_t len);

#endif
