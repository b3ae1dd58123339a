/*
 * cli.c - `pinpool info` and `pinpool status`: ask the daemon over gRPC only
 * (no fd-socket session, so that they do not count themselves as clients) and
 * print tables for a person.  --socket tcp:HOST:PORT asks over TCP, with the
 * bearer token of --token-file (else $PINPOOL_TOKEN_FILE), which the library
 * reads (client/call.c).
 */
#include "cli.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "paths.h"
#include "pinpool.h"
#include "pinpool.pb-c.h"

static const char *size(uint64_t n, char *buf)
{
    return pinpool_format_size(n, buf, 32);
}

/* --socket PATH / --token-file PATH / --help; returns 0 to go on, 1 for
 * --help, 2 on a bad argument.  --token-file becomes $PINPOOL_TOKEN_FILE for
 * the library (this process only). */
static int parse(const char *cmd, const char *what, int argc, char **argv, const char **socket)
{
    for (int i = 0; i < argc; i++) {
        const char *token = NULL;
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
                   "Prints %s.  The socket defaults to\n"
                   "$PINPOOL_SOCKET, else the daemon's default socket.  Over TCP (the daemon's\n"
                   "--listen) every call carries the bearer token in --token-file, else in\n"
                   "$PINPOOL_TOKEN_FILE (the daemon's --listen-token-file).\n", cmd, what);
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
    printf("%-22s %s: %" PRIu32 " objects (%" PRIu32 " resident, %" PRIu32 " spilled, %s)\n",
           "spill tier", sp->tier, sp->objects, sp->objects_resident, sp->objects_spilled,
           size(sp->spilled_bytes_now, a));
    if (sp->spills + sp->restores > 0)
        printf("%-22s %" PRIu64 " spills (%s, %.2f GB/s), %" PRIu64 " restores (%s, %.2f GB/s)\n",
               "", sp->spills, size(sp->bytes_spilled, a), sp->spill_gbps, sp->restores,
               size(sp->bytes_restored, b), sp->restore_gbps);
    if (sp->last_error[0] != '\0')
        printf("%-22s %s\n", "last tier error", sp->last_error);
    /* The swap API's host copies (torch_memory_saver's backups) are slices kept
     * under "swap:TAG": a client named "kept:swap:TAG" each. */
    bool swap_header = false;
    for (uint32_t i = 0; i < info->num_usage; i++) {
        const char *id = info->usage[i].client_id, *prefix = "kept:" PINPOOL_SWAP_KEY_PREFIX;
        if (strncmp(id, prefix, strlen(prefix)) != 0)
            continue;
        if (!swap_header)
            printf("\n%-40s %12s\n", "swap copy (tag)", "host");
        swap_header = true;
        printf("%-40s %12s\n", id + strlen(prefix), size(info->usage[i].bytes, a));
    }
    if (info->num_usage > 0) {
        printf("\n%-40s %8s %6s %12s %12s\n", "client", "pid", "slices", "host", "device");
        for (uint32_t i = 0; i < info->num_usage; i++) {
            const pinpool_client_usage_t *u = &info->usage[i];
            char pid[16];
            snprintf(pid, sizeof(pid), "%d", (int)u->pid);
            printf("%-40s %8s %6" PRIu32 " %12s %12s\n", u->client_id, u->pid ? pid : "-",
                   u->slices, size(u->bytes, a), size(u->device_bytes, b));
        }
    }
}

/* "64.00 MiB" and "64MiB" are the same value. */
static bool same_value(const char *a, const char *b)
{
    uint64_t x, y;

    if (strcmp(a, b) == 0)
        return true;
    return pinpool_parse_size(a, &x) == 0 && pinpool_parse_size(b, &y) == 0 && x == y;
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
    rc = pinpool__rpc_call(rpc, "/pinpool.v1.PinPool/GetServerConfig", &req.base,
                           &pinpool__v1__get_server_config_response__descriptor,
                           (ProtobufCMessage **)&cfg, NULL, msg, sizeof(msg));
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
    const char *socket = NULL;
    pinpool_pool_info_t info;
    pinpool_ctx_t *ctx;
    int rc = parse(cmd, what, argc, argv, &socket);

    if (rc != 0)
        return rc == 1 ? 0 : 2;
    ctx = pinpool__connect_rpc_only(socket);
    if (ctx == NULL || pinpool_err(ctx) != 0 || pinpool_pool_info(ctx, &info) != 0) {
        fprintf(stderr, "pinpool %s: %s\n", cmd, pinpool_errmsg(ctx));
        pinpool_close(ctx);
        return 1;
    }
    if (config && print_config(socket) != 0) {
        pinpool_pool_info_free(&info);
        pinpool_close(ctx);
        return 1;
    }
    print_info(&info);
    pinpool_pool_info_free(&info);
    pinpool_close(ctx);
    return 0;
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
