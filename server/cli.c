/*
 * cli.c - `pinpool info` and `pinpool status`: ask the daemon over gRPC only
 * (no fd-socket session, so that they do not count themselves as clients;
 * a daemon that answers only sessions, with an allow list or
 * --detached-clients no, gets one, and then lists it) and print tables for
 * a person.  --socket tcp:HOST:PORT asks over TCP, with the bearer token of
 * --token-file (else $PINPOOL_TOKEN_FILE), which the library reads
 * (client/call.c).  The clients come in pages (GetPoolInfo's page_token):
 * every page is asked for and printed as it comes, so that the listing works
 * at any number of clients; --top N asks for the N most charged only, --uid
 * U for one uid's.  The daemon shows a caller only its own uid's clients
 * unless it is root or the daemon's uid.
 * Never: holds more than two pages of clients (the first and the current) in
 * memory.
 */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "ipc.h"
#include "paths.h"
#include "pinpool.h"
#include "pinpool.pb-c.h"

static const char *size(uint64_t n, char *buf)
{
    return pinpool_format_size(n, buf, 32);
}

typedef struct cli_opts {
    const char *socket;
    uint32_t top;       /* --top N: the N most charged clients only (0: all, by uid) */
    bool one_uid;       /* --uid U */
    uint32_t uid;
    uint32_t page_size; /* --page-size N: clients a call asks for (0: the daemon's default) */
} cli_opts_t;

/* A number option's value (NAME VALUE or NAME=VALUE at argv[*i]): 0 and *out,
 * 1 when argv[*i] is not NAME, 2 (with the message) when the value is bad. */
static int number_opt(const char *cmd, const char *name, int argc, char **argv, int *i,
                      uint32_t *out)
{
    size_t n = strlen(name);
    const char *v;
    char *end;
    unsigned long x;

    if (strcmp(argv[*i], name) == 0)
        v = *i + 1 < argc ? argv[++*i] : "";
    else if (strncmp(argv[*i], name, n) == 0 && argv[*i][n] == '=')
        v = argv[*i] + n + 1;
    else
        return 1;
    errno = 0;
    x = strtoul(v, &end, 10);
    if (v[0] == '\0' || v[0] == '-' || *end != '\0' || errno != 0 || x > UINT32_MAX) {
        fprintf(stderr, "pinpool %s: %s needs a number, not '%s' (see --help)\n", cmd, name, v);
        return 2;
    }
    *out = (uint32_t)x;
    return 0;
}

/* --socket PATH / --token-file PATH / --top N / --uid U / --page-size N /
 * --help; returns 0 to go on, 1 for --help, 2 on a bad argument.
 * --token-file becomes $PINPOOL_TOKEN_FILE for the library (this process
 * only). */
static int parse(const char *cmd, const char *what, int argc, char **argv, cli_opts_t *o)
{
    const char **socket = &o->socket;

    for (int i = 0; i < argc; i++) {
        const char *token = NULL;
        int rc = number_opt(cmd, "--top", argc, argv, &i, &o->top);
        if (rc == 1)
            rc = number_opt(cmd, "--page-size", argc, argv, &i, &o->page_size);
        if (rc == 1 && (rc = number_opt(cmd, "--uid", argc, argv, &i, &o->uid)) == 0)
            o->one_uid = true;
        if (rc == 2)
            return 2;
        if (rc == 0)
            continue;
        if (strcmp(argv[i], "--token-file") == 0) {
            if (i + 1 >= argc || argv[i + 1][0] == '\0') {
                fprintf(stderr, "pinpool %s: --token-file needs a value: the daemon's "
                        "--listen-token-file (see --help)\n", cmd);
                return 2;
            }
            token = argv[++i];
        } else if (strncmp(argv[i], "--token-file=", 13) == 0) {
            token = argv[i] + 13;
        }
        if (token != NULL) {
            setenv("PINPOOL_TOKEN_FILE", token, 1);
            continue;
        }
        if (strcmp(argv[i], "--socket") == 0) {
            if (i + 1 >= argc || argv[i + 1][0] == '\0') {
                fprintf(stderr, "pinpool %s: --socket needs a value: the daemon's socket path "
                        "(see --help)\n", cmd);
                return 2;
            }
            *socket = argv[++i];
        } else if (strncmp(argv[i], "--socket=", 9) == 0) {
            *socket = argv[i] + 9;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: pinpool %s [--socket PATH|tcp:HOST:PORT] [--token-file PATH]\n"
                   "       [--top N] [--uid U] [--page-size N]\n"
                   "Prints %s.  The socket defaults to\n"
                   "$PINPOOL_SOCKET, else the daemon's default socket.  Over TCP (the daemon's\n"
                   "--listen) every call carries the bearer token in --token-file, else in\n"
                   "$PINPOOL_TOKEN_FILE (the daemon's --listen-token-file).\n"
                   "Every client is listed, by uid then id, a page at a time (--page-size: the\n"
                   "clients asked for in one call, at most 10000; default the daemon's, 1000);\n"
                   "--top N lists only the N that hold the most, --uid U only uid U's.  Root\n"
                   "and the daemon's uid see every uid's clients, any other user its own.\n",
                   cmd, what);
            return 1;
        } else {
            fprintf(stderr, "pinpool %s: unexpected argument '%s' (see --help)\n", cmd, argv[i]);
            return 2;
        }
    }
    return 0;
}

static void print_info(const pinpool_pool_info_t *info)
{
    const pinpool_spill_info_t *sp = &info->spill;
    char a[32], b[32], c[32];

    printf("%-22s %s\n", "mode", info->mode);
    printf("%-22s %s\n", "host backend", info->host_backend);
    printf("%-22s %s (%" PRIu32 " chunk%s of %s)\n", "capacity", size(info->capacity_bytes, a),
           info->num_chunks, info->num_chunks == 1 ? "" : "s", size(info->chunk_size, b));
    printf("%-22s %s\n", "ready", size(info->ready_bytes, a));
    if (info->stopped_short[0] != '\0') /* the pool stopped growing: why */
        printf("%-22s %s\n", "stopped short", info->stopped_short);
    printf("%-22s %s (%.1f%%)\n", "used", size(info->used_bytes, a),
           info->capacity_bytes ? 100.0 * (double)info->used_bytes / (double)info->capacity_bytes
                                : 0.0);
    printf("%-22s %s\n", "being cleaned", size(info->cleaning_bytes, a));
    printf("%-22s %s\n", "free", size(info->free_bytes, a));
    printf("%-22s %s\n", "largest free extent", size(info->largest_free_extent, a));
    printf("%-22s %.3f\n", "fragmentation", info->fragmentation);
    printf("%-22s %" PRIu32 "\n", "slices", info->num_slices);
    printf("%-22s %" PRIu32 "\n", "clients", info->num_clients);
    printf("%-22s %" PRIu32 "\n", "kept slices", info->num_kept);
    printf("%-22s %" PRIu64 "\n", "chunks given fresh", info->chunk_replacements);
    if (info->pin_seconds > 0)
        printf("%-22s %.2f s (%.2f GiB/s)\n", "pool pinned in", info->pin_seconds,
               (double)info->capacity_bytes / info->pin_seconds / (1 << 30));
    for (uint32_t i = 0; i < info->num_devices; i++) {
        const pinpool_device_info_t *d = &info->devices[i];
        char label[32];
        snprintf(label, sizeof(label), "GPU %d pool", (int)d->device_id);
        printf("%-22s %s used of %s, %" PRIu32 " slices, largest free %s (%s)\n", label,
               size(d->used_bytes, a), size(d->capacity_bytes, b), d->num_slices,
               size(d->largest_free_extent, c), d->name);
    }
    for (uint32_t i = 0; i < info->num_gpus; i++) { /* the daemon's CUDA contexts */
        const pinpool_gpu_info_t *g = &info->gpus[i];
        char label[32];
        snprintf(label, sizeof(label), "GPU %d context", (int)g->device_id);
        printf("%-22s %s; GPU memory used %s of %s (every process's)\n", label, g->role,
               size(g->gpu_used_bytes, a), size(g->gpu_total_bytes, b));
    }
    printf("%-22s %s: %" PRIu32 " objects (%" PRIu32 " resident, %" PRIu32 " spilled, %s)\n",
           "spill tier", sp->tier, sp->objects, sp->objects_resident, sp->objects_spilled,
           size(sp->spilled_bytes_now, a));
    if (sp->spills + sp->restores > 0)
        printf("%-22s %" PRIu64 " spills (%s, %.2f GB/s), %" PRIu64 " restores (%s, %.2f GB/s)\n",
               "", sp->spills, size(sp->bytes_spilled, a), sp->spill_gbps, sp->restores,
               size(sp->bytes_restored, b), sp->restore_gbps);
    if (sp->last_error[0] != '\0')
        printf("%-22s %s\n", "last tier error", sp->last_error);
}

/* ---- the clients, a page at a time ------------------------------------------------- */

/* One GetPoolInfo call for the page after token (""): 0 and *out (the
 * caller frees it), or the error (pinpool_errmsg(ctx) says why). */
static int ask_page(pinpool_ctx_t *ctx, const cli_opts_t *o, const char *token, uint32_t size,
                    Pinpool__V1__GetPoolInfoResponse **out)
{
    Pinpool__V1__GetPoolInfoRequest req = PINPOOL__V1__GET_POOL_INFO_REQUEST__INIT;

    req.page_size = size;
    req.page_token = (char *)token;
    req.by_bytes = o->top != 0;
    req.only_uid = o->one_uid;
    req.uid = o->uid;
    *out = NULL;
    return pinpool__call(ctx, PINPOOL__M_INFO, &req.base, out);
}

static void print_users(const Pinpool__V1__GetPoolInfoResponse *r)
{
    char a[32];

    printf("\n%-22s uid %" PRIu32 " (%s)\n", "you are", r->caller_uid,
           r->all_uids_visible ? "root or the daemon's uid: every uid's clients are shown"
                               : "only your uid's clients are shown");
    if (r->n_users == 0)
        return;
    printf("\n%-10s %8s %8s %12s\n", "uid", "clients", "sessions", "held");
    for (size_t i = 0; i < r->n_users; i++) {
        const Pinpool__V1__UidUsage *u = r->users[i];
        printf("%-10" PRIu32 " %8" PRIu32 " %8" PRIu32 " %12s\n", u->uid, u->clients, u->sessions,
               size(u->charged_bytes, a));
    }
}

/* The swap API's host copies (torch_memory_saver's backups) are slices kept
 * under "swap:TAG": a client named "kept:swap:TAG" each; printed by tag. */
static bool is_swap_copy(const char *id)
{
    const char *prefix = "kept:" PINPOOL_SWAP_KEY_PREFIX;

    return strncmp(id, prefix, strlen(prefix)) == 0;
}

static void print_page(const Pinpool__V1__GetPoolInfoResponse *r, bool *header)
{
    char a[32], b[32], c[32];

    for (size_t i = 0; i < r->n_clients; i++) {
        const Pinpool__V1__ClientUsage *u = r->clients[i];
        char pid[16];
        if (!*header)
            printf("\n%-40s %8s %8s %6s %12s %12s %12s\n", "client", "uid", "pid", "slices", "host",
                   "device", "held");
        *header = true;
        snprintf(pid, sizeof(pid), "%d", (int)u->pid);
        printf("%-40s", u->client_id);
        printf(" %8" PRIu32 " %8s %6" PRIu32 " %12s %12s %12s\n", u->uid, u->pid ? pid : "-",
               u->slices, size(u->bytes, a), size(u->device_bytes, b), size(u->charged_bytes, c));
    }
}

/* The swap copies among every client the caller may see, by tag: a pass of
 * their own over the pages (first is the first page).  0, or 1 when a page
 * fails. */
static int print_swap_copies(pinpool_ctx_t *ctx, const cli_opts_t *o,
                             Pinpool__V1__GetPoolInfoResponse *first)
{
    const size_t skip = strlen("kept:" PINPOOL_SWAP_KEY_PREFIX);
    Pinpool__V1__GetPoolInfoResponse *r = first;
    bool header = false;
    char token[128], a[32];

    for (;;) {
        for (size_t i = 0; i < r->n_clients; i++) {
            const Pinpool__V1__ClientUsage *u = r->clients[i];
            if (!is_swap_copy(u->client_id))
                continue;
            if (!header)
                printf("\n%-40s %12s\n", "swap copy (tag)", "host");
            header = true;
            printf("%-40s %12s\n", u->client_id + skip, size(u->bytes, a));
        }
        snprintf(token, sizeof(token), "%s", r->next_page_token);
        if (r != first)
            protobuf_c_message_free_unpacked(&r->base, NULL);
        if (token[0] == '\0')
            return 0;
        if (ask_page(ctx, o, token, o->page_size, &r) != 0) {
            fprintf(stderr, "pinpool info: the swap copies: %s\n", pinpool_errmsg(ctx));
            return 1;
        }
    }
}

/* The listing: the first page (already asked for, in first), then every
 * page after it.  0, or 1 when a later page fails. */
static int print_clients(pinpool_ctx_t *ctx, const cli_opts_t *o,
                         Pinpool__V1__GetPoolInfoResponse *first)
{
    Pinpool__V1__GetPoolInfoResponse *r = first;
    bool header = false;
    char token[128];
    uint32_t shown = 0, listed = first->num_listed;

    for (;;) {
        print_page(r, &header);
        shown += (uint32_t)r->n_clients;
        snprintf(token, sizeof(token), "%s", r->next_page_token);
        if (r != first)
            protobuf_c_message_free_unpacked(&r->base, NULL);
        if (token[0] == '\0' || (o->top != 0 && shown >= o->top))
            break;
        uint32_t want = o->top != 0 ? o->top - shown : o->page_size;
        if (o->top != 0 && o->page_size != 0 && want > o->page_size)
            want = o->page_size;
        if (ask_page(ctx, o, token, want, &r) != 0) {
            fprintf(stderr, "pinpool info: the clients after %" PRIu32 ": %s\n", shown,
                    pinpool_errmsg(ctx));
            return 1;
        }
    }
    if (o->top != 0)
        printf("(the %" PRIu32 " that hold the most of %" PRIu32 " clients)\n", shown, listed);
    else if (shown != listed)
        printf("(%" PRIu32 " of %" PRIu32 " clients: some came or went while they were listed)\n",
               shown, listed);
    return 0;
}

/* "64.00 MiB" and "64MiB" are the same value. */
static bool same_value(const char *a, const char *b)
{
    uint64_t x, y;

    if (strcmp(a, b) == 0)
        return true;
    return pinpool_parse_size(a, &x) == 0 && pinpool_parse_size(b, &y) == 0 && x == y;
}

/* A session opened by hand on socket's fd socket, for a daemon that answers
 * only sessions: its token goes into rpc.  The session's descriptor (it
 * lives while that is open), or -1 (over TCP there is no fd socket). */
static int open_session(const char *socket, pinpool__rpc_t *rpc)
{
    char fdpath[256];
    ipc_hello_t hello;
    size_t nfds = 0;
    int s;

    if (strncmp(socket, "tcp:", 4) == 0 || ipc_fd_socket_path(socket, fdpath, sizeof(fdpath)) != 0)
        return -1;
    s = ipc_connect_seqpacket(fdpath);
    if (s < 0)
        return -1;
    if (ipc_recv_msg(s, &hello, sizeof(hello), NULL, 0, &nfds) != (ssize_t)sizeof(hello) ||
        hello.status != 0) {
        close(s);
        return -1;
    }
    pinpool__rpc_set_token(rpc, hello.token);
    return s;
}

/* GetServerConfig as "name value" lines, the non-default ones marked. */
static int print_config(const char *socket)
{
    Pinpool__V1__GetServerConfigRequest req = PINPOOL__V1__GET_SERVER_CONFIG_REQUEST__INIT;
    Pinpool__V1__GetServerConfigResponse *cfg = NULL;
    pinpool__rpc_t *rpc;
    char path[128], msg[512];
    const char *env = getenv("PINPOOL_SOCKET");
    int rc;

    if (socket == NULL && env != NULL && env[0] != '\0')
        socket = env;
    if (socket == NULL && ipc_default_socket(path, sizeof(path)) == 0)
        socket = path;
    if (socket == NULL || pinpool__rpc_open(&rpc, socket) != 0)
        return PINPOOL_ECONNECT;
    int session = -1;
    for (;;) {
        rc = pinpool__rpc_call(rpc, "/pinpool.v1.PinPool/GetServerConfig", &req.base,
                               &pinpool__v1__get_server_config_response__descriptor,
                               (ProtobufCMessage **)&cfg, NULL, msg, sizeof(msg));
        if (rc != PINPOOL_EPERM || session >= 0 || (session = open_session(socket, rpc)) < 0)
            break;
    }
    if (session >= 0)
        close(session);
    if (rc == 0) {
        printf("pinpool %s at %s\n\n", cfg->version, socket);
        for (size_t i = 0; i < cfg->n_entries; i++) {
            const Pinpool__V1__ConfigEntry *e = cfg->entries[i];
            if (!same_value(e->value, e->default_value) && strcmp(e->default_value, "auto") != 0)
                printf("  --%-20s %-28s (default: %s)\n", e->name, e->value[0] ? e->value : "off",
                       e->default_value[0] ? e->default_value : "off");
            else
                printf("  --%-20s %s\n", e->name, e->value[0] ? e->value : "off");
        }
        printf("\n");
        protobuf_c_message_free_unpacked(&cfg->base, NULL);
    } else {
        fprintf(stderr, "pinpool status: %s\n", msg);
    }
    pinpool__rpc_close(rpc);
    return rc;
}

static int run(const char *cmd, const char *what, int argc, char **argv, bool config)
{
    cli_opts_t o = {0};
    Pinpool__V1__GetPoolInfoResponse *first = NULL;
    pinpool_pool_info_t info;
    pinpool_ctx_t *ctx;
    int rc = parse(cmd, what, argc, argv, &o);

    if (rc != 0)
        return rc == 1 ? 0 : 2;
    /* Without a session first; a daemon that answers only sessions gets one. */
    const char *env = getenv("PINPOOL_SOCKET"), *target = o.socket != NULL ? o.socket : env;
    bool tcp = target != NULL && strncmp(target, "tcp:", 4) == 0; /* no fd socket there */
    for (int session = 0; session < 2; session++) {
        ctx = session ? pinpool_connect(o.socket) : pinpool__connect_rpc_only(o.socket);
        rc = ctx == NULL ? -ENOMEM : pinpool_err(ctx);
        if (rc == 0)
            rc = pinpool_pool_info(ctx, &info);
        if (rc != PINPOOL_EPERM || session || tcp)
            break;
        pinpool_close(ctx);
    }
    if (rc == 0) {
        pinpool_pool_info_free(&info); /* its clients are the first page's; asked for below */
        uint32_t want = o.page_size;
        if (o.top != 0 && (want == 0 || o.top < want))
            want = o.top;
        rc = ask_page(ctx, &o, "", want, &first);
    }
    if (rc != 0) {
        fprintf(stderr, "pinpool %s: %s\n", cmd,
                ctx != NULL ? pinpool_errmsg(ctx) : "out of memory");
        pinpool_close(ctx);
        return 1;
    }
    if (config && print_config(o.socket) != 0) {
        protobuf_c_message_free_unpacked(&first->base, NULL);
        pinpool_close(ctx);
        return 1;
    }
    print_info(&info);
    print_users(first);
    rc = o.top != 0 ? 0 : print_swap_copies(ctx, &o, first);
    if (rc == 0)
        rc = print_clients(ctx, &o, first);
    protobuf_c_message_free_unpacked(&first->base, NULL);
    pinpool_close(ctx);
    return rc;
}

int cli_info(int argc, char **argv)
{
    return run("info", "the pool's capacity, usage and clients", argc, argv, false);
}

int cli_status(int argc, char **argv)
{
    return run("status", "the daemon's version and options, then `pinpool info`", argc, argv,
               true);
}
