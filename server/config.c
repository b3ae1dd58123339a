/*
 * config.c - the option table and everything driven by it (see config.h).
 * Never: reads files or the environment, except for the default socket path,
 * $XDG_STATE_HOME, and the user and group databases (--allow-uid/--allow-gid
 * names, looked up once at start).
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dirs.h"
#include "log.h"
#include "paths.h"
#include "pinpool.h"
#include "pool.h"

#define MiB (1024ull * 1024)
#define HELP_WIDTH 70 /* columns of help text, after the option's 29 */
#define GiB (1024ull * MiB)

/* OPT_FLAG: a yes|no choice that "--name" alone sets to yes. */
enum opt_type { OPT_SIZE, OPT_UINT, OPT_STRING, OPT_CHOICE, OPT_FLAG };

typedef struct srv_option {
    const char *name;
    enum opt_type type;
    const char *defval; /* NULL: computed (the socket path) */
    const char *metavar;
    const char *help;
    size_t offset;      /* into srv_config_t */
    size_t size;        /* of a string field */
    uint64_t min, max;  /* OPT_SIZE, OPT_UINT */
    uint64_t multiple;  /* OPT_SIZE: must be a multiple of this */
    const char *const *choices; /* OPT_CHOICE, NULL-terminated */
    const char *zero;   /* OPT_SIZE, OPT_UINT: what 0 means ("no limit"), shown instead of 0 */
} srv_option_t;

static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const log_formats[] = {"text", "json", NULL};
static const char *const yes_no[] = {"yes", "no", NULL};
static const char *const host_backends[] = {"auto", "hugetlb", "vmm", "register", "hugetlb-cpu",
                                            "memfd", NULL};
static const char *const huge_modes[] = {"auto", "reserve", "never", NULL};
static const char *const device_backends[] = {"auto", "vmm", "ipc", NULL};

#define STR_FIELD(f) offsetof(srv_config_t, f), sizeof(((srv_config_t *)0)->f)
#define NUM_FIELD(f) offsetof(srv_config_t, f), sizeof(uint64_t)

static const srv_option_t options[] = {
    {"mem-pool-size", OPT_SIZE, "1GiB", "SIZE",
     "size of the pinned host pool (140GB, 64GiB, 512MB or bytes); rounded up to whole chunks",
     NUM_FIELD(mem_pool_size), 2 * MiB, 1ull << 50, 0, NULL, NULL},
    {"chunk-size", OPT_SIZE, "auto", "SIZE",
     "the pool is made of chunks of this size (rounded up to a multiple of 2 MiB); a slice larger "
     "than a chunk covers a run of whole chunks; a chunk holds one user's slices at a time; auto: "
     "a sixteenth of the pool in a power of two, 2 MiB .. 1 GiB",
     NUM_FIELD(chunk_size), 2 * MiB, 64 * GiB, 2 * MiB, NULL, "auto"},
    {"pin-threads", OPT_UINT, "2", "N", "threads that create (and pin) the pool's chunks at start-up",
     NUM_FIELD(pin_threads), 1, 64, 0, NULL, NULL},
    {"pin-unit", OPT_SIZE, "chunk", "SIZE",
     "hugetlb backends: populate and pin each chunk in pieces of this size, yielding between "
     "pieces, so that no one call holds the kernel or the driver (and with it every other "
     "process's pinning on the node) for longer than a piece takes; chunk: a chunk in one call "
     "(vmm always pins a chunk in one cuMemCreate: --chunk-size bounds it)",
     NUM_FIELD(pin_unit), 0, 64 * GiB, 2 * MiB, NULL, "chunk"},
    {"socket", OPT_STRING, NULL, "PATH",
     "gRPC unix socket; the fd socket is PATH.fd "
     "(default $XDG_RUNTIME_DIR/pinpool.sock, else /tmp/pinpool-$UID/pinpool.sock; an absolute "
     "path); a missing directory is made 0700 (0750 with --allow-gid), one that another user "
     "could swap is refused; the sockets are 0660",
     STR_FIELD(socket), 0, 0, 0, NULL, NULL},
    {"allow-uid", OPT_STRING, "", "LIST",
     "only these users (comma-separated names or uids) may open a session; empty: any user "
     "who can reach the sockets (0660 in a 0700 directory)", STR_FIELD(allow_uid), 0, 0, 0,
     NULL, NULL},
    {"allow-gid", OPT_STRING, "", "LIST",
     "members of these groups (names or gids; primary or supplementary) may open a session too; "
     "the sockets and their directory get the first group (0660 in a 0750 directory), so its "
     "members can reach them; the daemon must be root or a member of it",
     STR_FIELD(allow_gid), 0, 0, 0, NULL, NULL},
    {"detached-clients", OPT_CHOICE, "yes", "yes|no",
     "accept gRPC callers without an fd-socket session (a stock gRPC client); they cannot "
     "be identified, so --allow-uid/--allow-gid turn them off", STR_FIELD(detached_clients), 0,
     0, 0, yes_no, NULL},
    {"client-quota", OPT_SIZE, "0", "SIZE",
     "most bytes one client may hold (0: no limit), like 16GiB: its slices, and for a session, "
     "while it lives, the kept slices and objects (released or put) it made",
     NUM_FIELD(client_quota), 0, 1ull << 50, 0, NULL, "no limit"},
    {"user-quota", OPT_SIZE, "0", "SIZE",
     "most bytes one uid may hold (0: no limit), like 64GiB: the slices and kept slices of all its clients "
     "and all its objects, spilled ones included; callers without a session count as the "
     "daemon's uid", NUM_FIELD(user_quota), 0, 1ull << 50, 0, NULL, "no limit"},
    {"max-clients", OPT_UINT, "auto", "N",
     "most clients at once (0: no limit); auto: what RLIMIT_NOFILE allows (the daemon raises "
     "its soft limit to the hard one) at 2 descriptors a client, after 96 and one per chunk "
     "for the daemon itself",
     NUM_FIELD(max_clients), 0, 1u << 20, 0, NULL, "no limit"},
    {"max-objects", OPT_UINT, "1048576", "N",
     "most named objects (released slices and Put objects, resident or spilled) at once; "
     "beyond it Put and Release fail with RESOURCE_EXHAUSTED. A record takes at most 0.7 KiB "
     "of the daemon's heap (keys are at most 512 bytes; ~0.2 KiB with short keys), so the "
     "default bounds the object table to 700 MiB", NUM_FIELD(max_objects), 1, 1u << 26, 0, NULL, NULL},
    {"metrics", OPT_STRING, "", "HOST:PORT",
     "serve Prometheus metrics at http://HOST:PORT/metrics (off by default; use a loopback "
     "address, e.g. 127.0.0.1:9464; port 0 picks one)", STR_FIELD(metrics), 0, 0, 0, NULL, NULL},
    {"listen", OPT_STRING, "", "HOST:PORT",
     "also serve gRPC over TCP on this address (off by default; e.g. 127.0.0.1:50051); every "
     "call over TCP must carry the bearer token of --listen-token-file",
     STR_FIELD(listen), 0, 0, 0, NULL, NULL},
    {"listen-token-file", OPT_STRING, "auto", "PATH",
     "with --listen: the file that holds the token TCP callers send as 'authorization: "
     "Bearer TOKEN' (made with 128 random bits if absent; refused unless mode 0600 and the "
     "daemon's own; clients read it from $PINPOOL_TOKEN_FILE); auto: STATE_DIR/listen-token",
     STR_FIELD(listen_token_file), 0, 0, 0, NULL, NULL},
    {"max-message-size", OPT_SIZE, "64MiB", "SIZE",
     "largest gRPC request and reply; a Put or Get of a larger object is refused (use "
     "AllocatePoolMemory + ReleasePoolMemory / AcquirePoolMemory to move it)",
     NUM_FIELD(max_message_size), 1 * MiB, 1 * GiB, 0, NULL, NULL},
    {"max-batch-keys", OPT_UINT, "4096", "N",
     "most keys (or items) in one request: a batch call with more is refused before it is "
     "decoded", NUM_FIELD(max_batch_keys), 1, 1u << 20, 0, NULL, NULL},
    {"rpc-workers", OPT_UINT, "16", "N",
     "threads that finish the calls that must wait (for pinning, room or the spill tier), so "
     "that the gRPC threads never wait", NUM_FIELD(rpc_workers), 1, 256, 0, NULL, NULL},
    {"rpc-queue", OPT_UINT, "256", "N",
     "calls that may wait for a free worker; beyond that a waiting call is refused with "
     "RESOURCE_EXHAUSTED", NUM_FIELD(rpc_queue), 0, 65536, 0, NULL, NULL},
    {"max-streams", OPT_UINT, "64", "N", "most gRPC calls at once on one connection",
     NUM_FIELD(max_streams), 1, 65536, 0, NULL, NULL},
    {"rpc-memory", OPT_SIZE, "1GiB", "SIZE",
     "memory gRPC may use for its buffers (its resource quota; at least 4 x "
     "--max-message-size is used)", NUM_FIELD(rpc_memory),
     16 * MiB, 1ull << 40, 0, NULL, NULL},
    {"memory-reserve", OPT_SIZE, "32MiB", "SIZE",
     "heap kept back for emergencies: under RLIMIT_DATA/RLIMIT_AS, calls that need memory are "
     "refused with RESOURCE_EXHAUSTED while less than this is left (0: off)",
     NUM_FIELD(memory_reserve), 0, 1 * GiB, 0, NULL, "off"},
    {"host-backend", OPT_CHOICE, "auto", "NAME",
     "how host chunks are made and pinned: hugetlb (huge-page memfds pinned by cuMemHostRegister "
     "in every process; needs --huge-pages), vmm (CUDA VMM host memory shared as fds; pinned "
     "once), register (memfds pinned by cuMemHostRegister in every process), hugetlb-cpu and "
     "memfd (the same memfds without CUDA), auto (the first of these that works here; the log "
     "says which and why)",
     STR_FIELD(host_backend), 0, 0, 0, host_backends, NULL},
    {"huge-pages", OPT_CHOICE, "auto", "MODE",
     "huge pages for the hugetlb backends: auto (use free ones when there are enough for the "
     "whole pool: HugePages_Free, 1 GiB pages where --chunk-size is a multiple of 1 GiB, else "
     "2 MiB), reserve (as root: raise vm.nr_hugepages for the pool and give the pages back at "
     "exit), never",
     STR_FIELD(huge_pages), 0, 0, 0, huge_modes, NULL},
    {"device-pool-size", OPT_SIZE, "0", "SIZE",
     "GPU memory per GPU kept by the daemon and shared with its clients (0: no device pool)",
     NUM_FIELD(device_pool_size), 0, 1ull << 50, 2 * MiB, NULL, "none"},
    {"device-backend", OPT_CHOICE, "auto", "NAME",
     "how device pools are shared: vmm (CUDA VMM chunks passed as fds on the fd socket; readers "
     "map read-only, unmap and remap at the same address), ipc (one legacy CUDA IPC handle per "
     "GPU), auto (vmm where the driver supports exporting GPU memory as fds, else ipc)",
     STR_FIELD(device_backend), 0, 0, 0, device_backends, NULL},
    {"device-pool-uid", OPT_STRING, "", "USER",
     "the one user (a name or uid) whose clients may use the ipc device pools: such a pool is "
     "one cudaMalloc shared by its CUDA IPC handle, so it cannot keep users apart (vmm device "
     "pools keep uids apart by chunk and ignore this); empty: the first uid that allocates in "
     "one, for the daemon's lifetime",
     STR_FIELD(device_pool_uid), 0, 0, 0, NULL, NULL},
    {"devices", OPT_STRING, "all", "LIST",
     "GPUs that get a device pool: all, or ordinals like 0,1", STR_FIELD(devices), 0, 0, 0, NULL,
     NULL},
    {"state-dir", OPT_STRING, "auto", "DIR",
     "where the daemon keeps its state (the default spill directory); auto: "
     "$XDG_STATE_HOME/pinpool, else /var/tmp/pinpool-$UID (made with mode 0700; refused if "
     "another user could swap it)",
     STR_FIELD(state_dir), 0, 0, 0, NULL, NULL},
    {"spill-tier", OPT_STRING, "auto", "URI",
     "where released objects go when the pool needs room: file:///DIR, "
     "mooncake://MASTER:PORT?metadata=...&..., none (never spill), or auto: "
     "file://STATE_DIR/spill/<socket path>",
     STR_FIELD(spill_tier), 0, 0, 0, NULL, NULL},
    {"cluster", OPT_STRING, "", "NAME",
     "share named objects with the other daemons of cluster NAME on the same Mooncake tier "
     "(off by default): what one releases or puts, the others acquire, get and see; needs a "
     "mooncake:// --spill-tier without prefix= (README \"Running several nodes\")",
     STR_FIELD(cluster), 0, 0, 0, NULL, NULL},
    {"cluster-node", OPT_STRING, "auto", "NAME",
     "this daemon's name in --cluster (its copies lie under CLUSTER/n/NAME/); auto: the host "
     "name and a hash of the socket path",
     STR_FIELD(cluster_node), 0, 0, 0, NULL, NULL},
    {"gms", OPT_STRING, "", "TAGS",
     "speak NVIDIA Dynamo's GPU Memory Service protocol for these tags (comma-separated, like "
     "weights,kv_cache; off by default): one socket gms_<GPU UUID>_<tag>.sock per GPU of "
     "--devices and tag in --gms-dir, for GMS clients and --load-format gms engines (README "
     "\"Sharing weights between engines\")",
     STR_FIELD(gms), 0, 0, 0, NULL, NULL},
    {"gms-dir", OPT_STRING, "", "DIR",
     "the directory of the --gms sockets (engines set GMS_SOCKET_DIR to it); empty: the "
     "directory of --socket",
     STR_FIELD(gms_dir), 0, 0, 0, NULL, NULL},
    {"spill-low-watermark", OPT_STRING, "0.05", "FRACTION|SIZE",
     "spill released objects in the background while free space is below this "
     "(a fraction of the pool like 0.05, or a size like 2GiB; 0: only when an allocation "
     "does not fit)",
     STR_FIELD(spill_low_watermark), 0, 0, 0, NULL, NULL},
    {"log-level", OPT_CHOICE, "info", "LEVEL", "error, warn, info or debug",
     STR_FIELD(log_level), 0, 0, 0, log_levels, NULL},
    {"log-format", OPT_CHOICE, "text", "FORMAT",
     "text, or json: one object per line with ts, pid, level and msg",
     STR_FIELD(log_format), 0, 0, 0, log_formats, NULL},
    {"log-file", OPT_STRING, "", "PATH",
     "append the log to this file (an absolute path; made 0600; a symbolic link or another "
     "user's file is refused) instead of stderr; SIGHUP reopens it (for logrotate)",
     STR_FIELD(log_file), 0, 0, 0, NULL, NULL},
    {"takeover", OPT_FLAG, "no", "",
     "upgrade without losing memory: take the pool, kept slices, objects, sessions and "
     "sockets over from the daemon serving --socket (same pool options), which then exits "
     "(README \"Upgrading pinpool\")",
     STR_FIELD(takeover), 0, 0, 0, yes_no, NULL},
    {"force", OPT_FLAG, "no", "",
     "start even when the pool is larger than the memory this daemon may use (its cgroup's "
     "limit, MemAvailable); the pool then stops growing where memory runs out",
     STR_FIELD(force), 0, 0, 0, yes_no, NULL},
};

#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static const srv_option_t *find_option(const char *name)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strcmp(options[i].name, name) == 0)
            return &options[i];
    return NULL;
}

/* Append a line to cfg->notes (dropped when full: notes are for a person). */
__attribute__((format(printf, 2, 3))) static void add_note(srv_config_t *cfg, const char *fmt, ...)
{
    size_t n = strlen(cfg->notes);
    va_list ap;

    if (n + 2 >= sizeof(cfg->notes))
        return;
    if (n > 0)
        cfg->notes[n++] = '\n';
    va_start(ap, fmt);
    vsnprintf(cfg->notes + n, sizeof(cfg->notes) - n, fmt, ap);
    va_end(ap);
}

static int set_option(srv_config_t *cfg, const srv_option_t *o, const char *value,
                      char *err, size_t errlen)
{
    char *field = (char *)cfg + o->offset;
    char a[32], b[32], m[32];
    uint64_t n;

    switch (o->type) {
    case OPT_SIZE:
    case OPT_UINT:
        if (o->type == OPT_SIZE) {
            if (o->zero != NULL && strcmp(value, o->zero) == 0) {
                n = 0;
            } else if (pool_parse_size(value, &n) != 0) {
                snprintf(err, errlen, "--%s: '%s' is not a size (try 64GiB, 140GB, 512MB or bytes)",
                         o->name, value);
                return PINPOOL_EINVAL;
            }
        } else if (o->defval != NULL && strcmp(o->defval, "auto") == 0 &&
                   strcmp(value, "auto") == 0) {
            n = SRV_CONFIG_AUTO; /* resolved at start (srv_config_resolve_max_clients) */
            memcpy(field, &n, sizeof(n));
            return 0;
        } else {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(value, &end, 10);
            if (errno != 0 || end == value || *end != '\0' || value[0] == '-') {
                snprintf(err, errlen, "--%s: '%s' is not a whole number", o->name, value);
                return PINPOOL_EINVAL;
            }
            n = v;
        }
        if (n == 0 && o->zero != NULL && strcmp(o->zero, "auto") == 0) {
            memcpy(field, &n, sizeof(n)); /* resolved by srv_config_validate */
            return 0;
        }
        if (o->multiple != 0 && n % o->multiple != 0 && n <= o->max - o->multiple) {
            uint64_t up = (n / o->multiple + 1) * o->multiple;
            add_note(cfg, "--%s %s (%s) rounded up to %s, a multiple of %s", o->name, value,
                     pool_format_size(n, a, sizeof(a)), pool_format_size(up, b, sizeof(b)),
                     pool_format_size(o->multiple, m, sizeof(m)));
            n = up;
        }
        if (n < o->min || n > o->max) {
            if (o->type == OPT_SIZE)
                snprintf(err, errlen, "--%s: %s is outside %s .. %s", o->name, value,
                         pool_format_size(o->min, a, sizeof(a)),
                         pool_format_size(o->max, b, sizeof(b)));
            else
                snprintf(err, errlen, "--%s: %s is outside %" PRIu64 " .. %" PRIu64, o->name,
                         value, o->min, o->max);
            return PINPOOL_EINVAL;
        }
        if (o->multiple != 0 && n % o->multiple != 0) {
            snprintf(err, errlen, "--%s: %s is not a multiple of %s", o->name, value,
                     pool_format_size(o->multiple, a, sizeof(a)));
            return PINPOOL_EINVAL;
        }
        memcpy(field, &n, sizeof(n));
        return 0;
    case OPT_CHOICE:
    case OPT_FLAG:
        for (const char *const *c = o->choices; *c != NULL; c++)
            if (strcmp(*c, value) == 0)
                goto copy;
        snprintf(err, errlen, "--%s: '%s' is not one of the choices (see --help)", o->name, value);
        return PINPOOL_EINVAL;
    case OPT_STRING:
    copy:
        if (strlen(value) >= o->size) {
            snprintf(err, errlen, "--%s: '%s' is too long (at most %zu characters)", o->name,
                     value, o->size - 1);
            return PINPOOL_EINVAL;
        }
        strcpy(field, value);
        return 0;
    }
    return PINPOOL_EINVAL;
}

/* The option's value as text, into buf. */
static const char *show_option(const srv_config_t *cfg, const srv_option_t *o, char *buf,
                               size_t len)
{
    const char *field = (const char *)cfg + o->offset;
    uint64_t n;

    switch (o->type) {
    case OPT_SIZE:
    case OPT_UINT:
        memcpy(&n, field, sizeof(n));
        if (n == 0 && o->zero != NULL)
            return o->zero;
        if (n == SRV_CONFIG_AUTO)
            return "auto";
        if (o->type == OPT_SIZE)
            return pool_format_size(n, buf, len);
        snprintf(buf, len, "%" PRIu64, n);
        return buf;
    default:
        return field;
    }
}

void srv_default_socket(char *buf, size_t len)
{
    if (ipc_default_socket(buf, len) != 0)
        snprintf(buf, len, "/tmp/pinpool.sock");
}

void srv_config_defaults(srv_config_t *cfg)
{
    char err[256];

    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NOPTIONS; i++)
        if (options[i].defval != NULL && set_option(cfg, &options[i], options[i].defval, err,
                                                    sizeof(err)) != 0)
            abort(); /* a bad default is a bug in the table above */
    srv_default_socket(cfg->socket, sizeof(cfg->socket));
}

int srv_config_set(srv_config_t *cfg, const char *name, const char *value, char *err,
                   size_t errlen)
{
    const srv_option_t *o = find_option(name);

    if (o == NULL) {
        snprintf(err, errlen, "unknown option --%s (see --help)", name);
        return PINPOOL_EINVAL;
    }
    return set_option(cfg, o, value, err, errlen);
}

int srv_config_parse_args(srv_config_t *cfg, int argc, char **argv, char *err, size_t errlen)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        char name[64];
        const char *value;

        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)
            return 1;
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (options start with --)", arg);
            return PINPOOL_EINVAL;
        }
        arg += 2;
        const char *eq = strchr(arg, '=');
        size_t nlen = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        if (nlen >= sizeof(name)) {
            snprintf(err, errlen, "unknown option --%s (see --help)", arg);
            return PINPOOL_EINVAL;
        }
        memcpy(name, arg, nlen);
        name[nlen] = '\0';
        if (eq != NULL) {
            value = eq + 1;
        } else if (find_option(name) == NULL) {
            snprintf(err, errlen, "unknown option --%s (see --help)", name);
            return PINPOOL_EINVAL;
        } else if (find_option(name)->type == OPT_FLAG) {
            value = "yes";
        } else if (i + 1 >= argc) {
            snprintf(err, errlen, "--%s needs a value", name);
            return PINPOOL_EINVAL;
        } else {
            value = argv[++i];
        }
        int rc = srv_config_set(cfg, name, value, err, errlen);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* --chunk-size auto: a sixteenth of the pool (so that up to 16 users can hold
 * slices at once, a chunk being one user's at a time), as a power of two in
 * 2 MiB .. 1 GiB (1 GiB chunks attach fastest; DESIGN.md). */
static uint64_t auto_chunk_size(uint64_t pool)
{
    uint64_t c = 2 * MiB;

    while (c < GiB && c * 16 < pool)
        c *= 2;
    return c;
}

/* One entry of --allow-uid (group false) or --allow-gid: a number, or a name
 * in the user or group database.  0 and *id, or PINPOOL_EINVAL with err. */
static int parse_id(const char *opt, const char *tok, bool group, uint32_t *id, char *err,
                    size_t errlen)
{
    char buf[16384];
    const char *what = group ? "group" : "user";
    int rc;

    if (tok[0] >= '0' && tok[0] <= '9' && tok[strspn(tok, "0123456789")] == '\0') {
        errno = 0;
        unsigned long long v = strtoull(tok, NULL, 10);
        if (errno != 0 || v >= UINT32_MAX) {
            snprintf(err, errlen, "--%s: %s is not a valid %sid", opt, tok, group ? "g" : "u");
            return PINPOOL_EINVAL;
        }
        *id = (uint32_t)v;
        return 0;
    }
    bool found = false;
    if (group) {
        struct group gr, *res = NULL;
        rc = getgrnam_r(tok, &gr, buf, sizeof(buf), &res);
        if (rc == 0 && res != NULL) {
            *id = (uint32_t)res->gr_gid;
            found = true;
        }
    } else {
        struct passwd pw, *res = NULL;
        rc = getpwnam_r(tok, &pw, buf, sizeof(buf), &res);
        if (rc == 0 && res != NULL) {
            *id = (uint32_t)res->pw_uid;
            found = true;
        }
    }
    if (!found) {
        snprintf(err, errlen, "--%s: '%s' is neither a number nor a %s name known here%s%s", opt,
                 tok, what, rc != 0 ? ": " : "", rc != 0 ? strerror(rc) : "");
        return PINPOOL_EINVAL;
    }
    return 0;
}

/* --allow-uid / --allow-gid into ids (*n of them).  0 or PINPOOL_EINVAL + err. */
static int parse_ids(const char *opt, const char *list, bool group, uint32_t *ids, uint32_t *n,
                     char *err, size_t errlen)
{
    char copy[128], *save = NULL;
    size_t len = strlen(list);

    *n = 0;
    if (len == 0)
        return 0;
    if (list[0] == ',' || list[len - 1] == ',' || strstr(list, ",,") != NULL) {
        snprintf(err, errlen, "--%s: '%s' has an empty entry", opt, list);
        return PINPOOL_EINVAL;
    }
    snprintf(copy, sizeof(copy), "%s", list);
    for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        if (*n >= SRV_ALLOW_MAX) {
            snprintf(err, errlen, "--%s: at most %d entries", opt, SRV_ALLOW_MAX);
            return PINPOOL_EINVAL;
        }
        int rc = parse_id(opt, t, group, &ids[*n], err, errlen);
        if (rc != 0)
            return rc;
        (*n)++;
    }
    return 0;
}

int srv_config_validate(srv_config_t *cfg, char *err, size_t errlen)
{
    uint32_t dev[SRV_ALLOW_MAX];
    char a[32], b[32];

    if (cfg->chunk_size == 0)
        cfg->chunk_size = auto_chunk_size(cfg->mem_pool_size);

    if (cfg->mem_pool_size < cfg->chunk_size) {
        snprintf(err, errlen, "--mem-pool-size %s is smaller than --chunk-size %s",
                 pool_format_size(cfg->mem_pool_size, a, sizeof(a)),
                 pool_format_size(cfg->chunk_size, b, sizeof(b)));
        return PINPOOL_EINVAL;
    }
    if ((cfg->mem_pool_size + cfg->chunk_size - 1) / cfg->chunk_size > UINT32_MAX) {
        snprintf(err, errlen, "--mem-pool-size / --chunk-size gives too many chunks");
        return PINPOOL_EINVAL;
    }
    if (cfg->socket[0] == '\0' || strlen(cfg->socket) + 3 >= SRV_PATH_MAX) {
        snprintf(err, errlen, "--socket: the path must be 1 to %d characters (PATH.fd must fit "
                 "a unix socket address)", SRV_PATH_MAX - 4);
        return PINPOOL_EINVAL;
    }
    uint64_t wm;
    if (srv_config_watermark(cfg, cfg->mem_pool_size, &wm, err, errlen) != 0)
        return PINPOOL_EINVAL;
    if (cfg->listen[0] != '\0' && strchr(cfg->listen, ':') == NULL) {
        snprintf(err, errlen, "--listen: '%s' is not HOST:PORT", cfg->listen);
        return PINPOOL_EINVAL;
    }
    if (cfg->socket[0] != '/') {
        snprintf(err, errlen, "--socket: '%s' must be an absolute path", cfg->socket);
        return PINPOOL_EINVAL;
    }
    if (cfg->log_file[0] != '\0' && cfg->log_file[0] != '/') {
        snprintf(err, errlen, "--log-file: '%s' must be an absolute path", cfg->log_file);
        return PINPOOL_EINVAL;
    }
    if (parse_ids("allow-uid", cfg->allow_uid, false, cfg->allow_uids, &cfg->nallow_uids, err,
                  errlen) != 0 ||
        parse_ids("allow-gid", cfg->allow_gid, true, cfg->allow_gids, &cfg->nallow_gids, err,
                  errlen) != 0 ||
        parse_ids("device-pool-uid", cfg->device_pool_uid, false, dev, &cfg->ndevice_uid, err,
                  errlen) != 0)
        return PINPOOL_EINVAL;
    if (cfg->ndevice_uid > 1) {
        snprintf(err, errlen, "--device-pool-uid: one user, not a list ('%s')",
                 cfg->device_pool_uid);
        return PINPOOL_EINVAL;
    }
    cfg->device_uid = cfg->ndevice_uid == 1 ? dev[0] : 0;
    return 0;
}

void srv_config_resolve_max_clients(srv_config_t *cfg, uint64_t nofile)
{
    uint64_t nchunks = (cfg->mem_pool_size + cfg->chunk_size - 1) / cfg->chunk_size;
    /* A vmm device pool holds up to 64 chunk descriptors per GPU (devmem.h). */
    uint64_t ndev = cfg->device_pool_size == 0 ? 0 : strcmp(cfg->devices, "all") == 0 ? 8 : 1;
    for (const char *p = cfg->devices; ndev > 0 && *p != '\0'; p++)
        ndev += *p == ',';
    uint64_t keep = SRV_FD_BASE + nchunks + 64 * ndev;
    uint64_t fit = nofile > keep ? (nofile - keep) / SRV_FDS_PER_CLIENT : 0;

    if (fit > 1u << 20)
        fit = 1u << 20;
    if (cfg->max_clients == SRV_CONFIG_AUTO) {
        cfg->max_clients = fit > 0 ? fit : 1;
        add_note(cfg, "--max-clients auto: %" PRIu64 " (RLIMIT_NOFILE %" PRIu64 ": %d descriptors "
                 "a client, %" PRIu64 " kept for the daemon: %d, one per chunk and 64 per GPU of a "
                 "device pool)",
                 cfg->max_clients, nofile, SRV_FDS_PER_CLIENT, keep, SRV_FD_BASE);
    } else if (cfg->max_clients == 0 || cfg->max_clients > fit) {
        add_note(cfg, "--max-clients %s: RLIMIT_NOFILE %" PRIu64 " carries about %" PRIu64
                 " clients; connections past that are refused while descriptors are short",
                 cfg->max_clients == 0 ? "0 (no limit)" : "given", nofile, fit);
    }
}

int srv_config_watermark(const srv_config_t *cfg, uint64_t capacity, uint64_t *bytes, char *err,
                         size_t errlen)
{
    const char *v = cfg->spill_low_watermark;
    char *end;
    double f;

    if (strchr(v, '.') != NULL || strcmp(v, "0") == 0 || strcmp(v, "1") == 0) {
        errno = 0;
        f = strtod(v, &end);
        if (errno != 0 || end == v || *end != '\0' || !(f >= 0 && f <= 1)) {
            snprintf(err, errlen, "--spill-low-watermark: '%s' is not a fraction in 0..1", v);
            return PINPOOL_EINVAL;
        }
        *bytes = (uint64_t)(f * (double)capacity);
        return 0;
    }
    if (pool_parse_size(v, bytes) != 0) {
        snprintf(err, errlen, "--spill-low-watermark: '%s' is neither a fraction (0.05) nor a "
                 "size (2GiB)", v);
        return PINPOOL_EINVAL;
    }
    if (*bytes > capacity)
        *bytes = capacity;
    return 0;
}

int srv_config_resolve(srv_config_t *cfg, char *err, size_t errlen)
{
    int rc;

    if (strcmp(cfg->state_dir, "auto") == 0) {
        const char *xdg = getenv("XDG_STATE_HOME");
        int n;
        if (xdg != NULL && xdg[0] == '/')
            n = snprintf(cfg->state_dir, sizeof(cfg->state_dir), "%s/pinpool", xdg);
        else
            n = snprintf(cfg->state_dir, sizeof(cfg->state_dir), "/var/tmp/pinpool-%u",
                         (unsigned)getuid());
        if (n < 0 || (size_t)n >= sizeof(cfg->state_dir)) {
            snprintf(err, errlen, "--state-dir: $XDG_STATE_HOME is too long; pass --state-dir");
            return PINPOOL_EINVAL;
        }
    }
    if (cfg->state_dir[0] != '/') {
        snprintf(err, errlen, "--state-dir: '%s' must be an absolute path", cfg->state_dir);
        return PINPOOL_EINVAL;
    }
    rc = srv_dir_open(cfg->state_dir, "--state-dir", SRV_NO_GROUP, err, errlen);
    if (rc < 0)
        return rc;
    close(rc);
    if (strcmp(cfg->spill_tier, "auto") == 0) {
        char sock[SRV_PATH_MAX];
        snprintf(sock, sizeof(sock), "%s", cfg->socket);
        for (char *p = sock; *p != '\0'; p++)
            if (*p == '/')
                *p = '_';
        snprintf(cfg->spill_tier, sizeof(cfg->spill_tier), "file://%s/spill/%s", cfg->state_dir,
                 sock);
    }
    return 0;
}

/* "1 .. 64", "2.00 MiB .. 64.00 GiB, a multiple of 2.00 MiB", or the choices, into buf. */
static const char *describe_bounds(const srv_option_t *o, char *buf, size_t len)
{
    char a[32], b[32], m[32];

    switch (o->type) {
    case OPT_SIZE:
        snprintf(buf, len, "%s .. %s%s%s", pool_format_size(o->min, a, sizeof(a)),
                 pool_format_size(o->max, b, sizeof(b)), o->multiple ? ", a multiple of " : "",
                 o->multiple ? pool_format_size(o->multiple, m, sizeof(m)) : "");
        return buf;
    case OPT_UINT:
        snprintf(buf, len, "%" PRIu64 " .. %" PRIu64, o->min, o->max);
        return buf;
    case OPT_CHOICE:
    case OPT_FLAG: {
        size_t n = 0;
        buf[0] = '\0';
        for (const char *const *c = o->choices; *c != NULL && n < len; c++)
            n += (size_t)snprintf(buf + n, len - n, "%s%s", c == o->choices ? "" : ", ", *c);
        return buf;
    }
    case OPT_STRING:
        snprintf(buf, len, "at most %zu characters", o->size - 1);
        return buf;
    }
    return "";
}

/* The default as the table has it ("1GiB"), or as shown where it is computed
 * (the socket) or where 0 has a meaning ("no limit"). */
static const char *default_text(const srv_config_t *defaults, const srv_option_t *o, char *buf,
                                size_t len)
{
    if (o->defval != NULL && o->zero == NULL)
        return o->defval;
    return show_option(defaults, o, buf, len);
}

/* text word-wrapped to width columns, each line after the first indented by indent. */
static void print_wrapped(FILE *out, const char *text, int indent, int width)
{
    const char *p = text;

    while (*p != '\0') {
        int n = (int)strlen(p);
        if (n > width) {
            n = width;
            while (n > 0 && p[n] != ' ')
                n--;
            if (n == 0) /* one long word: break it where it ends */
                n = (int)strcspn(p, " ");
        }
        fprintf(out, "%.*s\n", n, p);
        p += n;
        while (*p == ' ')
            p++;
        if (*p != '\0')
            fprintf(out, "%*s", indent, "");
    }
}

void srv_config_print_help(FILE *out)
{
    srv_config_t defaults;

    srv_config_defaults(&defaults);
    for (size_t i = 0; i < NOPTIONS; i++) {
        const srv_option_t *o = &options[i];
        char left[64], val[SRV_PATH_MAX + 16], bounds[160];
        const char *dv = default_text(&defaults, o, val, sizeof(val));

        char line[SRV_PATH_MAX + 256];

        snprintf(left, sizeof(left), "--%s%s%s", o->name, o->metavar[0] ? " " : "", o->metavar);
        fprintf(out, "  %-26s ", left);
        print_wrapped(out, o->help, 29, HELP_WIDTH);
        snprintf(line, sizeof(line), "(default: %s; %s)", dv[0] == '\0' ? "off" : dv,
                 describe_bounds(o, bounds, sizeof(bounds)));
        fprintf(out, "%29s", "");
        print_wrapped(out, line, 29, HELP_WIDTH);
    }
}

void srv_config_foreach(const srv_config_t *cfg,
                        void (*fn)(const char *name, const char *value, const char *defval,
                                   const char *help, void *arg),
                        void *arg)
{
    srv_config_t defaults;

    srv_config_defaults(&defaults);
    for (size_t i = 0; i < NOPTIONS; i++) {
        char buf[SRV_PATH_MAX + 16], dbuf[SRV_PATH_MAX + 16];
        fn(options[i].name, show_option(cfg, &options[i], buf, sizeof(buf)),
           default_text(&defaults, &options[i], dbuf, sizeof(dbuf)), options[i].help, arg);
    }
}
