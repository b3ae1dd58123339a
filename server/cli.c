/*
 * cli.c - `pinpool info`: asks the daemon over gRPC only (no fd-socket
 * session, so that it does not count itself as a client) and prints a table.
 */
#include "cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "pinpool.h"

static const char *size(uint64_t n, char *buf)
{
    return pinpool_format_size(n, buf, 32);
}

int cli_info(int argc, char **argv)
{
    const char *socket = NULL;
    pinpool_pool_info_t info;
    pinpool_ctx_t *ctx;
    char a[32], b[32];
    int rc;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
            socket = argv[++i];
        } else if (strncmp(argv[i], "--socket=", 9) == 0) {
            socket = argv[i] + 9;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: pinpool info [--socket PATH]\n"
                   "Prints the pool's capacity, usage and clients.  The socket defaults to\n"
                   "$PINPOOL_SOCKET, else the daemon's default socket.\n");
            return 0;
        } else {
            fprintf(stderr, "pinpool info: unexpected argument '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    ctx = pinpool__connect_rpc_only(socket);
    if (ctx == NULL || pinpool_err(ctx) != 0) {
        fprintf(stderr, "pinpool info: %s\n", pinpool_errmsg(ctx));
        pinpool_close(ctx);
        return 1;
    }
    rc = pinpool_pool_info(ctx, &info);
    if (rc != 0) {
        fprintf(stderr, "pinpool info: %s\n", pinpool_errmsg(ctx));
        pinpool_close(ctx);
        return 1;
    }
    printf("%-22s %s\n", "mode", info.mode);
    printf("%-22s %s\n", "host backend", info.host_backend);
    printf("%-22s %s (%" PRIu32 " chunks of %s)\n", "capacity", size(info.capacity_bytes, a),
           info.num_chunks, size(info.chunk_size, b));
    printf("%-22s %s\n", "ready", size(info.ready_bytes, a));
    printf("%-22s %s (%.1f%%)\n", "used", size(info.used_bytes, a),
           info.capacity_bytes ? 100.0 * (double)info.used_bytes / (double)info.capacity_bytes : 0.0);
    printf("%-22s %s\n", "free", size(info.free_bytes, a));
    printf("%-22s %s\n", "largest free extent", size(info.largest_free_extent, a));
    printf("%-22s %.3f\n", "fragmentation", info.fragmentation);
    printf("%-22s %" PRIu32 "\n", "slices", info.num_slices);
    printf("%-22s %" PRIu32 "\n", "clients", info.num_clients);
    printf("%-22s %" PRIu32 "\n", "kept slices", info.num_kept);
    if (info.pin_seconds > 0)
        printf("%-22s %.2f s (%.2f GiB/s)\n", "pool pinned in", info.pin_seconds,
               (double)info.capacity_bytes / info.pin_seconds / (1 << 30));
    for (uint32_t i = 0; i < info.num_devices; i++) {
        const pinpool_device_info_t *d = &info.devices[i];
        char label[32], c[32];
        snprintf(label, sizeof(label), "GPU %d pool", (int)d->device_id);
        printf("%-22s %s used of %s, %" PRIu32 " slices, largest free %s (%s)\n", label,
               size(d->used_bytes, a), size(d->capacity_bytes, b), d->num_slices,
               size(d->largest_free_extent, c), d->name);
    }
    if (info.num_usage > 0) {
        printf("\n%-40s %8s %6s %12s %12s\n", "client", "pid", "slices", "host", "device");
        for (uint32_t i = 0; i < info.num_usage; i++) {
            const pinpool_client_usage_t *u = &info.usage[i];
            char pid[16];
            snprintf(pid, sizeof(pid), "%d", (int)u->pid);
            printf("%-40s %8s %6" PRIu32 " %12s %12s\n", u->client_id, u->pid ? pid : "-",
                   u->slices, size(u->bytes, a), size(u->device_bytes, b));
        }
    }
    pinpool_pool_info_free(&info);
    pinpool_close(ctx);
    return 0;
}
